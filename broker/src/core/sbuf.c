#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

static bool reserve(struct sbuf *b, size_t n)
{
	if (b->failed)
		return false;
	if (b->max && b->len + n > b->max) {
		b->failed = true;
		return false;
	}
	if (b->len + n + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 1024;
	while (cap < b->len + n + 1)
		cap *= 2;
	char *d = wisp_realloc(b->data, cap);
	if (!d) {
		b->failed = true;
		return false;
	}
	b->data = d;
	b->cap = cap;
	return true;
}

void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
	if (!reserve(b, n))
		return;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void sbuf_clear(struct sbuf *b)
{
	b->len = 0;
	b->failed = false;
	if (b->data)
		b->data[0] = '\0';
}

void sbuf_adds(struct sbuf *b, const char *s) { sbuf_add(b, s, strlen(s)); }

void sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = true;
		return;
	}
	if ((size_t)n < sizeof small) {
		sbuf_add(b, small, (size_t)n);
		return;
	}
	if (!reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* The length of the well-formed UTF-8 sequence at s (n bytes left, s[0] >=
 * 0x80), or 0 when none starts there; *bad is then the length of its
 * maximal ill-formed subpart, replaced by one U+FFFD as Unicode 15 section
 * 3.9 ("U+FFFD Substitution of Maximal Subparts") recommends. Bounds per
 * its Table 3-7: no overlong forms, surrogates or code points past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t len;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
	else
		len = 0;
	size_t i = 1;
	for (; len && i < len && i < n; i++) {
		if (s[i] < lo || s[i] > hi)
			break;
		lo = 0x80, hi = 0xbf;
	}
	if (len && i == len)
		return len;
	*bad = i;
	return 0;
}

void sbuf_add_json(struct sbuf *b, const char *s, size_t n)
{
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x80) {
			size_t bad = 0, len = utf8_seq((const unsigned char *)s + i, n - i, &bad);
			if (len) {
				i += len - 1;
				continue;
			}
			/* RFC 8259 8.1: JSON text is UTF-8. */
			sbuf_add(b, s + run, i - run);
			sbuf_adds(b, "\\ufffd");
			i += bad - 1;
			run = i + 1;
			continue;
		}
		if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
			continue;
		sbuf_add(b, s + run, i - run);
		run = i + 1;
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			sbuf_add(b, esc, 2);
		} else {
			sbuf_addf(b, "\\u%04x", c);
		}
	}
	sbuf_add(b, s + run, n - run);
}

void sbuf_free(struct sbuf *b)
{
	wisp_free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->failed = false;
}
