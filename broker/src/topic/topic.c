/*
 * Topic names and filters as strings: validation [MQTT-4.7], splitting into
 * levels, and the reference matcher.
 *
 * topic_matches() is deliberately the obvious level-by-level walk: it is
 * the oracle the subscription tree, the retained store and the ACLs are
 * tested against, so it must be easy to check by reading. It costs
 * O(flen + nlen) and never allocates. Nothing here keeps state.
 */
#include "topic.h"

#include <stdint.h>
#include <string.h>

/* [MQTT-4.7.3-3] topic names and filters are UTF-8 strings, so at most 65535 bytes. */
#define TOPIC_MAX_LEN 65535u

/* A cursor over the '/'-separated levels of a string. `done` is needed
 * because an empty level ("a//b", "/") is not the same as no level. */
struct level_iter {
	const char *p;
	const char *end;
	bool done;
};

static void iter_init(struct level_iter *it, const char *s, size_t len)
{
	it->p = s;
	it->end = s + len;
	it->done = false;
}

/* Stores the next level in `out`; false once every level was returned. */
static bool iter_next(struct level_iter *it, struct topic_level *out)
{
	if (it->done)
		return false;
	size_t left = (size_t)(it->end - it->p);
	const char *slash = left ? memchr(it->p, '/', left) : NULL;
	const char *stop = slash ? slash : it->end;
	out->ptr = it->p;
	out->len = (size_t)(stop - it->p);
	if (slash)
		it->p = slash + 1;
	else
		it->done = true;
	return true;
}

static bool level_is(const struct topic_level *l, char c)
{
	return l->len == 1 && l->ptr[0] == c;
}

bool topic_name_valid(const char *name, size_t len)
{
	/* [MQTT-4.7.3-1] at least one byte */
	if (!name || len == 0 || len > TOPIC_MAX_LEN)
		return false;
	/* [MQTT-4.7.3-2] no wildcard in a topic name */
	return !memchr(name, '+', len) && !memchr(name, '#', len);
}

bool topic_filter_valid(const char *filter, size_t len)
{
	if (!filter || len == 0 || len > TOPIC_MAX_LEN)
		return false;
	struct level_iter it;
	struct topic_level l;
	iter_init(&it, filter, len);
	while (iter_next(&it, &l)) {
		bool has_plus = memchr(l.ptr, '+', l.len) != NULL;
		bool has_hash = memchr(l.ptr, '#', l.len) != NULL;
		/* [MQTT-4.7.1-3] '+' occupies an entire level */
		if (has_plus && !level_is(&l, '+'))
			return false;
		/* [MQTT-4.7.1-2] '#' is a whole level and the last one */
		if (has_hash && (!level_is(&l, '#') || !it.done))
			return false;
	}
	return true;
}

size_t topic_level_count(const char *topic, size_t len)
{
	size_t levels = 1;
	const char *p = topic, *end = topic + len;
	while (p < end && (p = memchr(p, '/', (size_t)(end - p))) != NULL) {
		levels++;
		p++;
	}
	return levels;
}

int topic_split(const char *topic, size_t len, struct topic_level *out, size_t max)
{
	struct level_iter it;
	struct topic_level l;
	size_t n = 0;
	iter_init(&it, topic, len);
	while (iter_next(&it, &l)) {
		if (n == max)
			return -1;
		out[n++] = l;
	}
	return (int)n;
}

#define ONES 0x0101010101010101ull
#define LOWS 0x7F7F7F7F7F7F7F7Full

/* The bytes of x equal to c, as the high bit of each (exact: no borrow
 * runs from one byte into the next, unlike the shorter zero-byte test). */
static inline uint64_t bytes_equal(uint64_t x, char c)
{
	uint64_t y = x ^ (ONES * (uint8_t)c);
	return ~(((y & LOWS) + LOWS) | y | LOWS);
}

/* Appends the level ending at `end` (a '/' or the name's end). */
static inline void split_at(const char *name, size_t end, size_t *start, struct topic_level *out, size_t max,
			    size_t *n, bool *deep)
{
	if (*n == max) {
		*deep = true;
	} else {
		out[*n] = (struct topic_level){name + *start, end - *start};
		(*n)++;
	}
	*start = end + 1;
}

int topic_split_name(const char *name, size_t len, struct topic_level *out, size_t max)
{
	/* [MQTT-4.7.3-1] at least one byte */
	if (!name || len == 0 || len > TOPIC_MAX_LEN)
		return TOPIC_NAME_INVALID;
	size_t n = 0, start = 0, i = 0;
	bool deep = false;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	/* Whole words; then the last eight bytes, overlapping the words before
	 * them, with the bytes already seen masked off (so no byte loop). */
	while (i < len && len >= 8) {
		size_t at = i + 8 <= len ? i : len - 8;
		uint64_t x;
		memcpy(&x, name + at, sizeof x);
		uint64_t fresh = ~0ull << ((i - at) * 8);
		/* [MQTT-4.7.3-2] no wildcard in a topic name */
		if ((bytes_equal(x, '+') | bytes_equal(x, '#')) & fresh)
			return TOPIC_NAME_INVALID;
		for (uint64_t slashes = bytes_equal(x, '/') & fresh; slashes; slashes &= slashes - 1)
			split_at(name, at + (size_t)__builtin_ctzll(slashes) / 8, &start, out, max, &n, &deep);
		i = at + 8;
	}
#endif
	for (; i < len; i++) {
		if (name[i] == '+' || name[i] == '#')
			return TOPIC_NAME_INVALID;
		if (name[i] == '/')
			split_at(name, i, &start, out, max, &n, &deep);
	}
	split_at(name, len, &start, out, max, &n, &deep);
	return deep ? TOPIC_NAME_TOO_DEEP : (int)n;
}

bool topic_matches(const char *filter, size_t flen, const char *name, size_t nlen)
{
	if (flen == 0 || nlen == 0)
		return false;
	/* [MQTT-4.7.2-1] a filter starting with a wildcard does not match '$' names */
	if (name[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
		return false;

	struct level_iter fi, ni;
	struct topic_level fl, nl;
	iter_init(&fi, filter, flen);
	iter_init(&ni, name, nlen);
	while (iter_next(&fi, &fl)) {
		/* '#' matches the remaining levels, including none: "a/#"
		 * matches "a", the parent level [MQTT-4.7.1-2]. */
		if (level_is(&fl, '#'))
			return true;
		if (!iter_next(&ni, &nl))
			return false;
		if (level_is(&fl, '+'))
			continue;
		if (fl.len != nl.len || memcmp(fl.ptr, nl.ptr, fl.len) != 0)
			return false;
	}
	/* Every filter level used: a match only if the name has no level left. */
	return !iter_next(&ni, &nl);
}
