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

int seq_window_init(struct seq_window *w, size_t span, size_t max_span)
{
	*w = (struct seq_window){.span = span, .max_span = max_span};
	w->bits = wisp_calloc(span / 8 + 1, 1);
	return w->bits ? 0 : WISP_ENOMEM;
}

void seq_window_free(struct seq_window *w)
{
	wisp_free(w->bits);
	w->bits = NULL;
}

/* The bitmap doubled (at most to max_span) until seq fits above the
 * floor; false: it cannot (past max_span, or out of memory). */
static bool fit(struct seq_window *w, uint64_t seq)
{
	uint64_t need = seq - w->floor;
	if (need <= w->span)
		return true;
	if (need > w->max_span)
		return false;
	size_t span = w->span;
	while (span < need)
		span = span * 2 < w->max_span ? span * 2 : w->max_span;
	uint8_t *bits = wisp_calloc(span / 8 + 1, 1);
	if (!bits)
		return false;
	for (uint64_t s = w->floor + 1; s <= w->top; s++)
		if (bit_get(w, s)) {
			size_t bit = (size_t)(s % span);
			bits[bit / 8] |= (uint8_t)(1u << (bit % 8));
		}
	wisp_free(w->bits);
	w->bits = bits;
	w->span = span;
	return true;
}

/* The floor over what is marked contiguous above it. */
static void advance(struct seq_window *w)
{
	while (w->floor < w->top && bit_get(w, w->floor + 1))
		bit_clear(w, ++w->floor);
}

void seq_window_restore(struct seq_window *w, uint64_t floor, const uint64_t *marked, size_t n)
{
	w->floor = w->top = floor;
	w->init = floor > 0 || n > 0;
	for (size_t i = 0; i < n; i++)
		if (marked[i] > floor)
			seq_window_mark(w, marked[i]);
}

enum seq_mark seq_window_mark(struct seq_window *w, uint64_t seq)
{
	if (!w->init) {
		w->floor = w->top = seq > w->span ? seq - w->span : 0;
		w->init = true;
	}
	if (seq <= w->floor)
		return SEQ_WINDOW_MARKED;
	if (!fit(w, seq))
		return SEQ_WINDOW_FAR;
	if (seq <= w->top && bit_get(w, seq))
		return SEQ_WINDOW_MARKED;
	bit_set(w, seq);
	if (seq > w->top)
		w->top = seq;
	advance(w);
	return SEQ_WINDOW_NEW;
}

void seq_window_raise(struct seq_window *w, uint64_t floor)
{
	if (!w->init) {
		w->floor = w->top = floor;
		w->init = true;
		return;
	}
	if (floor <= w->floor)
		return;
	if (floor >= w->top)
		memset(w->bits, 0, w->span / 8 + 1);
	else
		for (uint64_t s = w->floor + 1; s <= floor; s++)
			bit_clear(w, s);
	w->floor = floor;
	if (w->top < floor)
		w->top = floor;
	advance(w);
}

bool seq_window_has(const struct seq_window *w, uint64_t seq)
{
	if (!w->init)
		return false;
	if (seq <= w->floor)
		return true;
	return seq <= w->top && bit_get(w, seq);
}

size_t seq_window_encode(const struct seq_window *w, char *out, size_t cap)
{
	uint64_t floor = w->init ? w->floor : 0;
	int n = snprintf(out, cap, "%llu", (unsigned long long)floor);
	if (n < 0 || (size_t)n >= cap)
		return 0;
	size_t len = (size_t)n;
	uint64_t top = w->init ? w->top : 0;
	if (top <= floor)
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
