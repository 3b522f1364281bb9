/*
 * Decoding what HTTP requests carry: application/x-www-form-urlencoded
 * fields (the dashboard's publish form, query strings) and the base64 of
 * HTTP Basic credentials. Pure functions on the caller's buffers: no
 * allocation, no state, any input accepted (a fuzz-friendly surface).
 */
#ifndef WISP_HTTP_FORM_H
#define WISP_HTTP_FORM_H

#include <stddef.h>
#include <sys/types.h>

/* Percent-decodes `s` in place ('+' is a space; a '%' not followed by two
 * hex digits stays as it is). The new length (<= n). */
size_t http_url_decode(char *s, size_t n);

/*
 * Finds the first field `key` in the form string s (n bytes, '&'-separated
 * "key=value" pairs) and decodes its value into out (cap bytes,
 * NUL-terminated). Its decoded length, or -1 when absent or when the
 * decoded value is longer than cap - 1.
 */
ssize_t http_form_get(const char *s, size_t n, const char *key, char *out, size_t cap);

/* Standard base64 (padding optional, no whitespace) into out (cap bytes):
 * its length, or -1 on a byte outside the alphabet or a full buffer. */
ssize_t http_base64_decode(const char *s, size_t n, char *out, size_t cap);

#endif
