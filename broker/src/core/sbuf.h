/*
 * A growable text buffer for responses built in memory (Prometheus text,
 * JSON). Allocates through wisp_malloc; an allocation failure or passing
 * `max` sets `failed` once and every later append is a no-op, so a
 * caller appends freely and checks once at the end. Single-threaded.
 */
#ifndef WISP_CORE_SBUF_H
#define WISP_CORE_SBUF_H

#include <stdbool.h>
#include <stddef.h>

struct sbuf {
	char *data;   /* NUL-terminated while len > 0 */
	size_t len;
	size_t cap;
	size_t max;   /* 0 = no bound beyond memory */
	bool failed;
};

void sbuf_add(struct sbuf *b, const char *s, size_t n);
void sbuf_adds(struct sbuf *b, const char *s);
void sbuf_addf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `s` (n bytes) as the inside of a JSON string: quotes, backslash
 * and control bytes escaped; well-formed UTF-8 copied, and each maximal
 * ill-formed subpart (binary data, a sequence cut short) replaced by
 * U+FFFD, so the JSON is valid UTF-8 whatever the bytes (RFC 8259 8.1). */
void sbuf_add_json(struct sbuf *b, const char *s, size_t n);
/* Empties the buffer and clears `failed`, keeping its memory. */
void sbuf_clear(struct sbuf *b);
/* Frees the data; the buffer may be used again. */
void sbuf_free(struct sbuf *b);

#endif
