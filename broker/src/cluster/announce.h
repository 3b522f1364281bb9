/*
 * Interest announcements as data, apart from NATS and the loop so that the
 * unit tests and fuzz_interest drive them directly (interest.c is the
 * glue: it reads the headers off a natsMsg, keeps the trie and talks).
 *
 *  - ann_parse: the strict reading of one announcement (interest.c's
 *    file header has the wire). Anything a Wisp node does not send is
 *    refused whole: an unknown kind, a header too long or not a number, a
 *    payload where none belongs, a filter that is empty, holds a NUL or
 *    breaks [MQTT-4.7.1-2]/[MQTT-4.7.1-3], a snapshot part longer than a
 *    node ever writes or not ended by a NUL.
 *  - struct ann_filters: the filters kept for one other node, bounded by
 *    struct ann_limits (cluster.max_remote_filters and
 *    max_remote_filter_bytes). Past either, the node's set is dropped and
 *    it is "over": it gets every message until a snapshot of it fits again
 *    (asked for once its announced set shrank under 7/8 of the limits).
 *    While over, its adds and dels are only counted.
 *
 * Allocation: wisp_malloc, one entry per kept filter plus the bucket
 * array. Not thread-safe; no globals.
 */
#ifndef WISP_CLUSTER_ANNOUNCE_H
#define WISP_CLUSTER_ANNOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest node name and run id read (a run is 16 hex digits today). */
#define ANN_NODE_MAX 255
#define ANN_RUN_MAX 23
/* Bytes of filters a node puts in one snapshot part before closing it;
 * the last filter may pass it by up to a filter's length. */
#define ANN_SNAP_PART_BYTES 65536
#define ANN_FILTER_MAX 65535
#define ANN_SNAP_PART_MAX (ANN_SNAP_PART_BYTES + ANN_FILTER_MAX + 1)
/* The largest Wisp-Every read: cluster.interest_interval's range. */
#define ANN_EVERY_MAX 3600

enum ann_kind { ANN_ADD, ANN_DEL, ANN_SNAP, ANN_HELLO, ANN_SYNC, ANN_BEAT, ANN_BYE };

/* The headers as read (NULL: absent), NUL-terminated. */
struct ann_headers {
	const char *node, *run, *seq, *kind, *part, *last, *to, *every;
};

/* One announcement; the pointers borrow the headers and the payload. */
struct ann {
	enum ann_kind kind;
	const char *node, *run, *to; /* to: sync only */
	uint64_t seq;
	uint32_t part;  /* snap: Wisp-Part */
	bool last;      /* snap: Wisp-Last */
	uint32_t every; /* beat: Wisp-Every, 0 when absent */
	const char *data; /* add, del: the filter; snap: filters each ended by a NUL */
	size_t len;
};

/* NULL with *out filled, or why it is refused (a static string). */
const char *ann_parse(const struct ann_headers *h, const void *data, size_t len, struct ann *out);

/* An answer's Wisp-ISeq or any announcement number: 1 to 20 decimal
 * digits, no sign, no overflow. */
bool ann_number(const char *s, uint64_t max, uint64_t *out);
/* A node name as read: 1 to ANN_NODE_MAX bytes, no control byte. */
bool ann_node_valid(const char *s);
/* A filter as announced: 1 to ANN_FILTER_MAX bytes, no NUL
 * [MQTT-1.5.4-2], wildcards whole levels [MQTT-4.7.1-2] [MQTT-4.7.1-3]. */
bool ann_filter_valid(const char *f, size_t len);

/* The next filter of a parsed snap part at *at: true with it, false at
 * the end (ann_parse has checked each one). */
bool ann_snap_next(const struct ann *a, size_t *at, const char **f, size_t *len);

struct ann_limits {
	uint64_t max_filters; /* distinct filters kept per node */
	uint64_t max_bytes;   /* their bytes (the filters' lengths) per node */
};

struct ann_fentry;

/* The filters kept for one node. `changed` hears every filter kept or
 * dropped (interest.c counts them in its trie). Zero it, then set
 * changed and ctx; ann_filters_free releases it. */
struct ann_filters {
	struct ann_fentry **b;
	size_t nb;
	uint64_t kept, kept_bytes; /* in b */
	uint64_t n, bytes;         /* its set as announced (counted, not kept, while over) */
	bool over;                 /* past a limit: nothing kept, everything sent to it */
	bool episode;              /* over since its last snapshot that fitted */
	bool may_fit_said;         /* ANN_MAY_FIT reported since the last snapshot began */
	void (*changed)(void *ctx, const char *f, size_t len, bool add);
	void *ctx;
};

enum ann_effect {
	ANN_NONE = 0,
	ANN_OVER_BEGIN, /* it went past a limit (first time since its last fitting snapshot) */
	ANN_OVER_END,   /* a whole snapshot fitted: its set is kept again */
	ANN_MAY_FIT,    /* over, and its set shrank under 7/8 of the limits: ask its snapshot */
};

/* An add, a del (of a filter ann_filter_valid), a snapshot (begin: part
 * 0, the set starts over; its filters are adds; end: its last part). A
 * filter that cannot be kept for want of memory puts the node over too.
 * While over, the set is counted as announced: a repeated add (which no
 * Wisp node sends) only counts more, which keeps the node over longer,
 * never shorter. */
enum ann_effect ann_filters_add(struct ann_filters *s, const struct ann_limits *lim, const char *f, size_t len);
enum ann_effect ann_filters_del(struct ann_filters *s, const struct ann_limits *lim, const char *f, size_t len);
void ann_filters_snap_begin(struct ann_filters *s);
enum ann_effect ann_filters_snap_end(struct ann_filters *s);
/* Drops every kept filter (reported through changed); counts zeroed. */
void ann_filters_clear(struct ann_filters *s);
/* ann_filters_clear, and the buckets freed. */
void ann_filters_free(struct ann_filters *s);

/* A set of filters counted per holder, unbounded: this node's own
 * (interest.c's local set, bounded by the local subscription caps).
 * *fresh: it was not there. 0 or WISP_ENOMEM. */
int ann_set_add(struct ann_filters *s, const char *f, size_t len, bool *fresh);
/* True when that was its last count (it is gone). */
bool ann_set_remove(struct ann_filters *s, const char *f, size_t len);
/* Calls each(f, len) for every filter kept; stops when it returns false. */
void ann_set_each(const struct ann_filters *s, bool (*each)(void *ctx, const char *f, size_t len), void *ctx);

#endif
