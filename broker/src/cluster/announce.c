/*
 * Interest announcements as data (announce.h): the strict parse and the
 * bounded filter set kept per node.
 *
 * The set is a hash table of entries chained per bucket, the buckets
 * doubled as it grows (a failed doubling only lengthens the chains). The
 * limits are checked before an entry is allocated, so a node's set never
 * holds more than max_filters entries or max_bytes of filter bytes.
 */
#include "announce.h"

#include <string.h>

#include "alloc.h"
#include "err.h"
#include "hash.h"
#include "topic.h"

struct ann_fentry {
	struct ann_fentry *next;
	uint32_t hash;
	uint32_t count;
	uint16_t len;
	char f[];
};

/* ---- parsing ---- */

bool ann_number(const char *s, uint64_t max, uint64_t *out)
{
	if (!s || !*s)
		return false;
	uint64_t v = 0;
	size_t i = 0;
	for (; s[i]; i++) {
		if (s[i] < '0' || s[i] > '9' || i == 20)
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* 1 to max bytes, none a control byte (the value goes into log lines). */
static bool printable(const char *s, size_t max)
{
	if (!s)
		return false;
	size_t n = 0;
	for (; s[n]; n++)
		if (n == max || (unsigned char)s[n] < 0x20 || s[n] == 0x7f)
			return false;
	return n > 0;
}

bool ann_node_valid(const char *s) { return printable(s, ANN_NODE_MAX); }

bool ann_filter_valid(const char *f, size_t len)
{
	return len > 0 && len <= ANN_FILTER_MAX && !memchr(f, '\0', len) && topic_filter_valid(f, len);
}

static const char *const KINDS[] = {
	[ANN_ADD] = "add", [ANN_DEL] = "del", [ANN_SNAP] = "snap", [ANN_HELLO] = "hello",
	[ANN_SYNC] = "sync", [ANN_BEAT] = "beat", [ANN_BYE] = "bye",
};

static const char *parse_snap(const struct ann_headers *h, struct ann *a)
{
	uint64_t part;
	if (!ann_number(h->part, UINT32_MAX, &part))
		return "snap without a Wisp-Part number";
	if (h->last && strcmp(h->last, "1") != 0)
		return "Wisp-Last other than 1";
	if (a->len > ANN_SNAP_PART_MAX)
		return "snapshot part larger than a node writes";
	if (a->len && a->data[a->len - 1] != '\0')
		return "snapshot part not ended by a NUL";
	for (size_t at = 0; at < a->len;) {
		const char *end = memchr(a->data + at, '\0', a->len - at);
		size_t flen = (size_t)(end - (a->data + at));
		if (!ann_filter_valid(a->data + at, flen))
			return "invalid filter in a snapshot part";
		at += flen + 1;
	}
	a->part = (uint32_t)part;
	a->last = h->last != NULL;
	return NULL;
}

const char *ann_parse(const struct ann_headers *h, const void *data, size_t len, struct ann *out)
{
	*out = (struct ann){.data = data, .len = data ? len : 0};
	size_t k = 0;
	while (k < sizeof KINDS / sizeof KINDS[0] && (!h->kind || strcmp(h->kind, KINDS[k]) != 0))
		k++;
	if (k == sizeof KINDS / sizeof KINDS[0])
		return "unknown or missing Wisp-Interest";
	out->kind = (enum ann_kind)k;
	if (!ann_node_valid(h->node))
		return "missing or malformed Wisp-Node";
	if (!printable(h->run, ANN_RUN_MAX))
		return "missing or malformed Wisp-Run";
	if (!ann_number(h->seq, UINT64_MAX, &out->seq))
		return "missing or malformed Wisp-ISeq";
	out->node = h->node;
	out->run = h->run;
	switch (out->kind) {
	case ANN_ADD:
	case ANN_DEL:
		return ann_filter_valid(out->data, out->len) ? NULL : "invalid filter";
	case ANN_SNAP:
		return parse_snap(h, out);
	case ANN_SYNC:
		if (!ann_node_valid(h->to))
			return "sync without a valid Wisp-To";
		out->to = h->to;
		break;
	case ANN_BEAT: {
		uint64_t every = 0;
		if (h->every && (!ann_number(h->every, ANN_EVERY_MAX, &every) || every == 0))
			return "malformed Wisp-Every";
		out->every = (uint32_t)every;
		break;
	}
	case ANN_HELLO:
	case ANN_BYE:
		break;
	}
	return out->len ? "payload where none belongs" : NULL;
}

bool ann_snap_next(const struct ann *a, size_t *at, const char **f, size_t *len)
{
	if (*at >= a->len)
		return false;
	*f = a->data + *at;
	*len = strlen(*f); /* ann_parse checked a NUL ends every filter */
	*at += *len + 1;
	return true;
}

/* ---- the set ---- */

static struct ann_fentry **slot(const struct ann_filters *s, const char *f, size_t len, uint32_t h)
{
	struct ann_fentry **pp = &s->b[h & (s->nb - 1)];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->f, f, len) == 0)
			break;
	return pp;
}

static int grow(struct ann_filters *s)
{
	size_t nb = s->nb ? s->nb * 2 : 16;
	struct ann_fentry **b = wisp_calloc(nb, sizeof *b);
	if (!b)
		return WISP_ENOMEM;
	for (size_t i = 0; i < s->nb; i++)
		while (s->b[i]) {
			struct ann_fentry *e = s->b[i];
			s->b[i] = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	wisp_free(s->b);
	s->b = b;
	s->nb = nb;
	return 0;
}

static bool holds(const struct ann_filters *s, const char *f, size_t len)
{
	return s->nb && *slot(s, f, len, hash_bytes(0, f, len));
}

int ann_set_add(struct ann_filters *s, const char *f, size_t len, bool *fresh)
{
	*fresh = false;
	if (len > UINT16_MAX || (s->kept >= s->nb && grow(s) != 0 && !s->nb))
		return WISP_ENOMEM;
	uint32_t h = hash_bytes(0, f, len);
	struct ann_fentry **pp = slot(s, f, len, h);
	if (*pp) {
		(*pp)->count++;
		return 0;
	}
	struct ann_fentry *e = wisp_malloc(sizeof *e + len);
	if (!e)
		return WISP_ENOMEM;
	*e = (struct ann_fentry){.hash = h, .count = 1, .len = (uint16_t)len};
	memcpy(e->f, f, len);
	*pp = e;
	s->kept++;
	s->kept_bytes += len;
	*fresh = true;
	return 0;
}

bool ann_set_remove(struct ann_filters *s, const char *f, size_t len)
{
	if (!s->nb)
		return false;
	struct ann_fentry **pp = slot(s, f, len, hash_bytes(0, f, len));
	struct ann_fentry *e = *pp;
	if (!e || --e->count > 0)
		return false;
	*pp = e->next;
	s->kept--;
	s->kept_bytes -= e->len;
	wisp_free(e);
	return true;
}

void ann_set_each(const struct ann_filters *s, bool (*each)(void *ctx, const char *f, size_t len), void *ctx)
{
	for (size_t i = 0; i < s->nb; i++)
		for (const struct ann_fentry *e = s->b[i]; e; e = e->next)
			if (!each(ctx, e->f, e->len))
				return;
}

/* Every kept filter dropped; the announced counts stay. */
static void drop_kept(struct ann_filters *s)
{
	for (size_t i = 0; i < s->nb; i++)
		while (s->b[i]) {
			struct ann_fentry *e = s->b[i];
			s->b[i] = e->next;
			if (s->changed)
				s->changed(s->ctx, e->f, e->len, false);
			wisp_free(e);
		}
	s->kept = s->kept_bytes = 0;
}

void ann_filters_clear(struct ann_filters *s)
{
	drop_kept(s);
	s->n = s->bytes = 0;
}

void ann_filters_free(struct ann_filters *s)
{
	ann_filters_clear(s);
	wisp_free(s->b);
	s->b = NULL;
	s->nb = 0;
}

/* ---- the bound ---- */

static enum ann_effect go_over(struct ann_filters *s)
{
	drop_kept(s);
	s->over = true;
	if (s->episode)
		return ANN_NONE;
	s->episode = true;
	return ANN_OVER_BEGIN;
}

enum ann_effect ann_filters_add(struct ann_filters *s, const struct ann_limits *lim, const char *f, size_t len)
{
	if (s->over) {
		s->n++;
		s->bytes += len;
		return ANN_NONE;
	}
	if (holds(s, f, len))
		return ANN_NONE; /* a set: a node adds a filter once */
	s->n++;
	s->bytes += len;
	bool fresh;
	if (s->kept + 1 > lim->max_filters || s->kept_bytes + len > lim->max_bytes ||
	    ann_set_add(s, f, len, &fresh) != 0)
		return go_over(s);
	if (s->changed)
		s->changed(s->ctx, f, len, true);
	return ANN_NONE;
}

enum ann_effect ann_filters_del(struct ann_filters *s, const struct ann_limits *lim, const char *f, size_t len)
{
	if (!s->over) {
		if (ann_set_remove(s, f, len)) {
			s->n--;
			s->bytes -= len;
			if (s->changed)
				s->changed(s->ctx, f, len, false);
		}
		return ANN_NONE;
	}
	s->n -= s->n > 0;
	s->bytes -= s->bytes >= len ? len : s->bytes;
	if (s->may_fit_said || s->n > lim->max_filters - lim->max_filters / 8 ||
	    s->bytes > lim->max_bytes - lim->max_bytes / 8)
		return ANN_NONE;
	s->may_fit_said = true;
	return ANN_MAY_FIT;
}

void ann_filters_snap_begin(struct ann_filters *s)
{
	ann_filters_clear(s);
	s->over = false;
	s->may_fit_said = false;
}

enum ann_effect ann_filters_snap_end(struct ann_filters *s)
{
	if (s->over || !s->episode)
		return ANN_NONE;
	s->episode = false;
	return ANN_OVER_END;
}
