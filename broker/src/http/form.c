/* Decoding what HTTP requests carry: form fields, query strings, Basic
 * credentials. Pure functions, no allocation (form.h). */
#include "form.h"

#include <stdint.h>
#include <string.h>

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes src (n bytes) into out, at most cap bytes; the length, or -1
 * when it does not fit. out may be src (decoding never lengthens). */
static ssize_t decode(const char *src, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char ch = src[i];
		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%' && i + 2 < n && hexval(src[i + 1]) >= 0 && hexval(src[i + 2]) >= 0) {
			ch = (char)(hexval(src[i + 1]) * 16 + hexval(src[i + 2]));
			i += 2;
		}
		if (o == cap)
			return -1;
		out[o++] = ch;
	}
	return (ssize_t)o;
}

size_t http_url_decode(char *s, size_t n)
{
	return (size_t)decode(s, n, s, n);
}

ssize_t http_form_get(const char *s, size_t n, const char *key, char *out, size_t cap)
{
	size_t klen = strlen(key);
	size_t i = 0;
	if (cap == 0)
		return -1;
	while (i < n) {
		const char *amp = memchr(s + i, '&', n - i);
		size_t end = amp ? (size_t)(amp - s) : n;
		if (end - i > klen && memcmp(s + i, key, klen) == 0 && s[i + klen] == '=') {
			ssize_t vlen = decode(s + i + klen + 1, end - i - klen - 1, out, cap - 1);
			if (vlen < 0)
				return -1;
			out[vlen] = '\0';
			return vlen;
		}
		i = end + 1;
	}
	return -1;
}

static int b64val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

ssize_t http_base64_decode(const char *s, size_t n, char *out, size_t cap)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	while (n && s[n - 1] == '=')
		n--;
	for (size_t i = 0; i < n; i++) {
		int v = b64val((unsigned char)s[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == cap)
				return -1;
			out[o++] = (char)((acc >> bits) & 0xffu);
		}
	}
	return (ssize_t)o;
}
