/*
 * The topic <-> subject mapping of subject.h. One pass over the input,
 * bounded by `cap`; no allocation. Single threaded callers only in the
 * sense that it has no state at all.
 */
#include "subject.h"

#include <string.h>

#include "err.h"

struct out {
	char *p;
	size_t cap, len;
	bool full;
};

static void put(struct out *o, char c)
{
	if (o->len + 1 >= o->cap) { /* keep room for the NUL */
		o->full = true;
		return;
	}
	o->p[o->len++] = c;
}

static void put_escaped(struct out *o, unsigned char c)
{
	static const char hex[] = "0123456789ABCDEF";
	put(o, '%');
	put(o, hex[c >> 4]);
	put(o, hex[c & 0xf]);
}

static bool needs_escape(unsigned char c)
{
	return c < 0x20 || c == ' ' || c == 0x7f || c == '%';
}

/* One MQTT level as one NATS token. */
static void put_level(struct out *o, const char *lvl, size_t n, bool filter)
{
	if (n == 0) {
		put(o, '/');
		return;
	}
	if (n == 1 && filter && lvl[0] == '+') {
		put(o, '*');
		return;
	}
	if (n == 1 && filter && lvl[0] == '#') {
		put(o, '>');
		return;
	}
	if (n == 1 && (lvl[0] == '*' || lvl[0] == '>')) {
		put_escaped(o, (unsigned char)lvl[0]);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)lvl[i];
		if (c == '.') {
			put(o, '/');
			put(o, '/');
		} else if (needs_escape(c)) {
			put_escaped(o, c);
		} else {
			put(o, (char)c);
		}
	}
}

static ssize_t map(const char *prefix, const char *s, size_t len, char *buf, size_t cap, bool filter)
{
	if (len == 0)
		return WISP_EINVAL;
	struct out o = {buf, cap, 0, false};
	if (prefix && *prefix) {
		for (const char *c = prefix; *c; c++)
			put(&o, *c);
		put(&o, '.');
	}
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != '/')
			continue;
		if (!filter && memchr(s + start, '+', i - start))
			return WISP_EINVAL;
		if (!filter && memchr(s + start, '#', i - start))
			return WISP_EINVAL;
		put_level(&o, s + start, i - start, filter);
		if (i < len)
			put(&o, '.');
		start = i + 1;
	}
	if (o.full)
		return WISP_ELIMIT;
	buf[o.len] = '\0';
	return (ssize_t)o.len;
}

ssize_t subject_from_topic(const char *prefix, const char *topic, size_t len, char *out, size_t cap)
{
	return map(prefix, topic, len, out, cap, false);
}

ssize_t subject_from_filter(const char *prefix, const char *filter, size_t len, char *out, size_t cap,
			    bool *parent_too)
{
	*parent_too = len >= 2 && filter[len - 1] == '#' && filter[len - 2] == '/';
	return map(prefix, filter, len, out, cap, true);
}

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One NATS token back into one MQTT level; false for what map() never writes. */
static bool get_level(struct out *o, const char *t, size_t n)
{
	if (n == 0)
		return false;
	if (n == 1 && t[0] == '/')
		return true; /* the empty level */
	if (n == 1 && (t[0] == '*' || t[0] == '>'))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		if (c == '/') {
			if (i + 1 >= n || t[i + 1] != '/')
				return false;
			put(o, '.');
			i++;
		} else if (c == '%') {
			int hi = i + 2 < n ? unhex(t[i + 1]) : -1;
			int lo = hi >= 0 ? unhex(t[i + 2]) : -1;
			if (lo < 0)
				return false;
			unsigned char v = (unsigned char)(hi << 4 | lo);
			/* Only the canonical escapes: anything else would map
			 * two subjects to one topic. */
			bool whole = n == 3 && (v == '*' || v == '>');
			if (!needs_escape(v) && !whole)
				return false;
			put(o, (char)v);
			i += 2;
		} else if (c == '+' || c == '#' || needs_escape((unsigned char)c)) {
			return false;
		} else {
			put(o, c);
		}
	}
	return true;
}

ssize_t subject_to_topic(const char *prefix, const char *subject, size_t len, char *out, size_t cap)
{
	size_t plen = prefix ? strlen(prefix) : 0;
	if (plen) {
		if (len <= plen + 1 || memcmp(subject, prefix, plen) != 0 || subject[plen] != '.')
			return WISP_EINVAL;
		subject += plen + 1;
		len -= plen + 1;
	}
	if (len == 0)
		return WISP_EINVAL;
	struct out o = {out, cap, 0, false};
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && subject[i] != '.')
			continue;
		if (!get_level(&o, subject + start, i - start))
			return WISP_EINVAL;
		if (i < len)
			put(&o, '/');
		start = i + 1;
	}
	if (o.full)
		return WISP_ELIMIT;
	if (cap)
		out[o.len] = '\0';
	return (ssize_t)o.len;
}
