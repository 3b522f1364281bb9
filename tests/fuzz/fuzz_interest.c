/*
 * fuzz_interest: the other nodes' interest announcements
 * (broker/src/cluster/announce.h), parsed and applied to one node's
 * bounded filter set as interest.c does.
 *
 * Input: one byte choosing the limits (max_filters 1..16, max_bytes
 * 16 B..2 KiB), then records until the input ends. A record: a byte whose
 * bits say which of the eight headers are present, each present one as a
 * length byte and that many bytes (cut at a NUL, as a header value is),
 * then a little-endian 16-bit payload length and the payload (cut at the
 * input's end).
 *
 * Checked after every record:
 *  - what ann_parse accepts is what a Wisp node writes: the node a valid
 *    name, an add's or del's filter valid, a snapshot part no longer than
 *    ANN_SNAP_PART_MAX whose filters, each valid, cover it exactly;
 *  - the set never keeps more than the limits, keeps nothing while over,
 *    reports every filter it keeps and drops (their net count is what it
 *    keeps), says ANN_OVER_BEGIN only going over, ANN_OVER_END and
 *    ANN_MAY_FIT only when they are true;
 *  - at the end, freeing it drops every filter and leaks nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "announce.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct model {
	long reported; /* filters reported kept, minus those reported dropped */
};

static void changed(void *ctx, const char *f, size_t len, bool add)
{
	if (!ann_filter_valid(f, len))
		abort();
	((struct model *)ctx)->reported += add ? 1 : -1;
}

static void check_set(const struct ann_filters *s, const struct ann_limits *lim, const struct model *m)
{
	if (s->kept > lim->max_filters || s->kept_bytes > lim->max_bytes)
		abort();
	if (s->over && (s->kept || !s->episode))
		abort();
	if (m->reported < 0 || (uint64_t)m->reported != s->kept)
		abort();
	if (!s->over && (s->n != s->kept || s->bytes != s->kept_bytes))
		abort();
}

static void check_effect(const struct ann_filters *s, const struct ann_limits *lim, enum ann_effect e)
{
	if (e == ANN_OVER_BEGIN && !s->over)
		abort();
	if (e == ANN_OVER_END && (s->over || s->episode))
		abort();
	if (e == ANN_MAY_FIT && (!s->over || s->n > lim->max_filters || s->bytes > lim->max_bytes))
		abort();
}

static void check_parsed(const struct ann *a)
{
	if (!ann_node_valid(a->node))
		abort();
	if ((a->kind == ANN_ADD || a->kind == ANN_DEL) && !ann_filter_valid(a->data, a->len))
		abort();
	if (a->kind == ANN_SYNC && !ann_node_valid(a->to))
		abort();
	if (a->kind != ANN_ADD && a->kind != ANN_DEL && a->kind != ANN_SNAP && a->len)
		abort();
	if (a->kind == ANN_SNAP) {
		if (a->len > ANN_SNAP_PART_MAX)
			abort();
		size_t at = 0, len, covered = 0;
		const char *f;
		while (ann_snap_next(a, &at, &f, &len)) {
			if (!ann_filter_valid(f, len))
				abort();
			covered += len + 1;
		}
		if (covered != a->len)
			abort();
	}
}

/* A header value of the record at *at: NULL when its bit is clear. */
static const char *take_header(const uint8_t *d, size_t size, size_t *at, bool present, char *buf)
{
	if (!present)
		return NULL;
	size_t n = *at < size ? d[(*at)++] : 0;
	if (n > size - *at)
		n = size - *at;
	memcpy(buf, d + *at, n);
	buf[n] = '\0';
	*at += n;
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const struct ann_limits lim = {.max_filters = 1 + (data[0] & 15u), .max_bytes = 16u << ((data[0] >> 4) & 7u)};
	size_t mem0 = wisp_mem_used();
	struct model m = {0};
	struct ann_filters s = {.changed = changed, .ctx = &m};
	static char vals[8][256];
	bool building = false;
	for (size_t at = 1; at < size;) {
		uint8_t mask = data[at++];
		const char *v[8];
		for (int i = 0; i < 8; i++)
			v[i] = take_header(data, size, &at, mask & (1u << i), vals[i]);
		struct ann_headers h = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
		size_t plen = 0;
		if (at + 2 <= size) {
			plen = (size_t)data[at] | (size_t)data[at + 1] << 8;
			at += 2;
		}
		if (plen > size - at)
			plen = size - at;
		const char *payload = (const char *)data + at;
		at += plen;
		struct ann a;
		if (ann_parse(&h, plen ? payload : NULL, plen, &a))
			continue;
		check_parsed(&a);
		enum ann_effect e = ANN_NONE;
		if (a.kind == ANN_ADD) {
			e = ann_filters_add(&s, &lim, a.data, a.len);
		} else if (a.kind == ANN_DEL) {
			e = ann_filters_del(&s, &lim, a.data, a.len);
		} else if (a.kind == ANN_SNAP) {
			if (a.part == 0) {
				ann_filters_snap_begin(&s);
				building = true;
			}
			const char *f;
			size_t fat = 0, flen;
			while (building && ann_snap_next(&a, &fat, &f, &flen)) {
				check_effect(&s, &lim, ann_filters_add(&s, &lim, f, flen));
				check_set(&s, &lim, &m);
			}
			if (building && a.last) {
				e = ann_filters_snap_end(&s);
				building = false;
			}
		} else if (a.kind == ANN_HELLO) {
			ann_filters_snap_begin(&s);
			building = false;
		}
		check_effect(&s, &lim, e);
		check_set(&s, &lim, &m);
	}
	ann_filters_free(&s);
	if (m.reported != 0 || wisp_mem_used() != mem0)
		abort();
	return 0;
}
