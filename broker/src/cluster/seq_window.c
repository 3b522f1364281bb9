/*
 * The routed-sequence window of seq_window.h.
 */
#include "seq_window.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "err.h"

static size_t bit_of(const struct seq_window *w, uint64_t seq) { return (size_t)(seq % w->span); }

static void bit_set(struct seq_window *w, uint64_t seq)
{
	size_t bit = bit_of(w, seq);
	w->bits[bit / 8] |= (uint8_t)(1u << (bit % 8));
}

static void bit_clear(struct seq_window *w, uint64_t seq)
{
	size_t bit = bit_of(w, seq);
	w->bits[bit / 8] &= (uint8_t)~(1u << (bit % 8));
}

static bool bit_get(const struct seq_window *w, uint64_t seq)
{
	size_t bit = bit_of(w, seq);
	return w->bits[bit / 8] & (1u << (bit % 8));
}

int seq_window_init(struct seq_window *w, size_t span)
{
	*w = (struct seq_window){.span = span};
	w->bits = wisp_calloc(span / 8 + 1, 1);
	return w->bits ? 0 : WISP_ENOMEM;
}

void seq_window_free(struct seq_window *w)
{
	wisp_free(w->bits);
	w->bits = NULL;
}

void seq_window_restore(struct seq_window *w, uint64_t floor, const uint64_t *marked, size_t n)
{
	w->floor = floor;
	w->init = floor > 0 || n > 0;
	for (size_t i = 0; i < n; i++)
		if (marked[i] > floor && marked[i] - floor <= w->span)
			bit_set(w, marked[i]);
}

bool seq_window_mark(struct seq_window *w, uint64_t seq)
{
	if (!w->init) {
		w->floor = seq > w->span ? seq - w->span : 0;
		w->init = true;
	}
	if (seq <= w->floor)
		return true;
	if (seq - w->floor > w->span) {
		uint64_t to = seq - w->span;
		for (uint64_t s = w->floor + 1; s <= to && s <= w->floor + w->span; s++)
			bit_clear(w, s);
		w->floor = to;
	}
	if (bit_get(w, seq))
		return true;
	bit_set(w, seq);
	while (bit_get(w, w->floor + 1))
		bit_clear(w, ++w->floor);
	return false;
}

bool seq_window_has(const struct seq_window *w, uint64_t seq)
{
	if (!w->init)
		return false;
	if (seq <= w->floor)
		return true;
	return seq - w->floor <= w->span && bit_get(w, seq);
}

size_t seq_window_encode(const struct seq_window *w, char *out, size_t cap)
{
	uint64_t floor = w->init ? w->floor : 0;
	int n = snprintf(out, cap, "%llu", (unsigned long long)floor);
	if (n < 0 || (size_t)n >= cap)
		return 0;
	size_t len = (size_t)n;
	uint64_t top = 0;
	for (uint64_t s = floor + 1; w->init && s <= floor + w->span; s++)
		if (bit_get(w, s))
			top = s;
	if (!top)
		return len;
	size_t digits = (size_t)((top - floor + 3) / 4);
	if (len + 1 + digits + 1 > cap)
		return 0;
	out[len++] = ':';
	for (size_t i = 0; i < digits; i++) {
		unsigned v = 0;
		for (unsigned k = 0; k < 4; k++) {
			uint64_t s = floor + 1 + 4 * i + k;
			if (s <= top && bit_get(w, s))
				v |= 1u << k;
		}
		out[len++] = "0123456789abcdef"[v];
	}
	out[len] = '\0';
	return len;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

bool seq_set_parse(const char *text, struct seq_set *out)
{
	char *end = NULL;
	if (!text || !*text)
		return false;
	out->floor = strtoull(text, &end, 10);
	if (end == text || (*end && *end != ':'))
		return false;
	out->hex = *end ? end + 1 : end;
	out->digits = strlen(out->hex);
	return true;
}

bool seq_set_has(const struct seq_set *s, uint64_t seq)
{
	if (!seq)
		return false;
	if (seq <= s->floor)
		return true;
	uint64_t i = (seq - s->floor - 1) / 4;
	if (i >= s->digits)
		return false;
	int v = hex_value(s->hex[i]);
	return v > 0 && (v >> ((seq - s->floor - 1) % 4) & 1);
}

uint64_t seq_set_max(const struct seq_set *s)
{
	for (size_t i = s->digits; i > 0; i--) {
		int v = hex_value(s->hex[i - 1]);
		for (int k = 3; v > 0 && k >= 0; k--)
			if (v >> k & 1)
				return s->floor + 1 + 4 * (uint64_t)(i - 1) + (uint64_t)k;
	}
	return s->floor;
}

bool seq_text_has(const char *text, uint64_t seq)
{
	struct seq_set s;
	return seq_set_parse(text, &s) && seq_set_has(&s, seq);
}

uint64_t seq_text_max(const char *text)
{
	struct seq_set s;
	return seq_set_parse(text, &s) ? seq_set_max(&s) : 0;
}
