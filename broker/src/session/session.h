/*
 * MQTT sessions: the state that belongs to a client id rather than to a
 * network connection: its subscriptions, and its in-flight and queued QoS 1/2
 * messages (struct sess_qos, only while it has some). A clean session lives as long as its connection; a
 * persistent one (clean session 0) stays in the table while offline.
 *
 * Sessions are found by client id through a hash table that grows by
 * doubling. Each session keeps its subscriptions in a list of filters with
 * their tree handles, so unsubscribing or ending a session touches only that
 * session's entries. Changes of durable state are reported by whoever
 * makes them to the session observer (observer.h), which the durable
 * store implements.
 *
 * Finding a session's subscription by filter (a repeated SUBSCRIBE replaces
 * it [MQTT-3.8.4-3], UNSUBSCRIBE removes it) is O(1): a session with fewer
 * than SESS_SUB_INDEX_MIN subscriptions scans its short list; from that
 * many on it builds a hash index of its filters (12 bytes a slot with its
 * hash, at most 3/4 full), dropped again when it shrinks to half that. An
 * idle session with one subscription pays the index's NULL pointer alone.
 * Single threaded.
 */
#ifndef WISP_SESSION_SESSION_H
#define WISP_SESSION_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"
#include "loop.h"
#include "tree.h"

struct conn;
struct acl_client;
struct delivery_limits;
struct msg;
struct session;

/* Session Expiry Interval meaning "never" [MQTT-3.1.2-11]. */
#define SESS_EXPIRY_NEVER UINT32_MAX

/* An inbound topic alias of the current connection (v5). */
struct sess_alias {
	char *topic;   /* NULL: not set */
	uint16_t len;
};

/*
 * The MQTT 5 state of a session, allocated apart and only for sessions
 * that need it (a v5 client's, or a 3.1.1 persistent session while
 * limits.max_session_expiry bounds it): an idle 3.1.1 connection costs
 * one NULL pointer, in what was padding. Owned by proto/ (session_v5.c),
 * which arms the timers and frees it with the session.
 */
struct sess_v5 {
	struct session *s;
	void *ctx;                      /* the broker, for the timers */
	struct loop_timer expiry_timer; /* offline, with a finite expiry */
	struct loop_timer will_timer;   /* a will waiting for its delay */
	struct msg *will;               /* the delayed will (a reference), or NULL */
	uint32_t expiry;                /* Session Expiry Interval, s; SESS_EXPIRY_NEVER */
	uint32_t will_delay;            /* of the current connection's will */
	bool will_stored;               /* a WILL_SET for this session is in the store */
	/* The current connection's inbound topic aliases [MQTT-3.3.2-12]:
	 * `alias_max` entries, allocated at the first alias used. */
	struct sess_alias *aliases;
	uint16_t alias_max;
	/* What the current connection's CONNECT asked of what Wisp sends
	 * (session/delivery.c): its Receive Maximum bounds the in-flight
	 * window [MQTT-3.3.4-9], and nothing over its Maximum Packet Size is
	 * sent [MQTT-3.1.2-25]. 0: not given (65535, no limit). */
	uint16_t send_max;
	uint32_t packet_max;
	/* Outbound topic aliases of the current connection: up to the
	 * client's Topic Alias Maximum (capped by limits.max_topic_alias),
	 * allocated at the first one, reused round robin (session/delivery.c). */
	struct sess_alias *out_aliases;
	uint16_t out_alias_max;
	uint16_t out_alias_next;
};

/* Set in a subscription's options byte (a bit MQTT 5 reserves, so never
 * set by a client) when the ACL must be asked for every delivered topic. */
#define SESS_SUBOPT_ACL_CHECK 0x40
/* Set on a member of a shared subscription (proto/share.h): its handle is
 * filed under the literal "$share/..." filter, and routing skips it. */
#define SESS_SUBOPT_SHARED 0x80

struct sess_sub {
	struct list_node link;
	struct tree_sub handle;   /* embedded: one allocation per subscription */
	/* Nothing more: the filter is the path of the handle's tree leaf
	 * (sess_sub_filter, sess_sub_filter_len) and the index keeps the
	 * hashes, which holds an idle subscription to 56 bytes (a small object,
	 * core/alloc.h; issue 18). */
};

/* Subscriptions from which a session indexes its filters. */
#define SESS_SUB_INDEX_MIN 8

/* sess_flags bits, kept for proto/handle_subscribe.c. */
#define SESS_FLAG_SUB_JOB 0x01       /* a (UN)SUBSCRIBE is being handled over several loop turns */
#define SESS_FLAG_SUB_REFUSED 0x02   /* a filter was refused by a limit and that was logged */
#define SESS_FLAG_BRIDGE 0x04        /* a bridge's local session: deliveries go through broker.outbound */

struct sess_sub_index; /* session.c */
struct flight_index;   /* flight.c */

/* An outbound QoS 1/2 message of a session, queued or in flight. */
enum sess_msg_state {
	SESS_MSG_QUEUED = 0,
	SESS_MSG_WAIT_PUBACK = 1,  /* QoS 1 sent */
	SESS_MSG_WAIT_PUBREC = 2,  /* QoS 2 sent */
	SESS_MSG_WAIT_PUBCOMP = 3, /* QoS 2, PUBREL sent */
};

struct sess_msg {
	struct list_node link;
	struct msg *msg;
	struct sess_msg *id_next; /* in flight: next in its flight_index bucket (flight.c) */
	uint16_t packet_id;
	uint8_t qos;
	uint8_t state;  /* enum sess_msg_state */
	bool retain;    /* as it goes on the wire */
	bool durable;   /* is one of the store's references to msg (proto/persist.c) */
	uint16_t sub_id_count;
	uint32_t sub_ids[]; /* v5 Subscription Identifiers of this delivery [MQTT-3.3.4-3]: none for 3.1.1 */
};

/* Inbound QoS 2 packet ids between PUBREC and PUBREL: a PUBLISH repeating
 * one of them is not routed again [MQTT-4.3.3-2]. Allocated at the first. */
struct sess_qos2_in {
	uint16_t count;
	uint16_t cap;
	uint16_t ids[];
};

/*
 * A session's outbound QoS 1/2 state: the window and the queue behind it
 * (session/delivery.c). Allocated when the first QoS 1/2 message is queued
 * or sent, freed once both are empty (a free list keeps a few blocks, so a
 * subscriber that drains its window between messages does not call
 * malloc per message), so an idle QoS 0 subscriber pays one NULL pointer
 * instead of 56 bytes (issue 18, docs/cost-connection.md).
 */
struct sess_qos {
	struct list_node inflight;  /* struct sess_msg, in send order */
	struct list_node queue;     /* struct sess_msg, waiting for the window */
	struct flight_index *flight; /* packet id -> in-flight entry (flight.h); NULL: none in flight */
	uint64_t queued_bytes;
	uint32_t queued_count;
	uint16_t inflight_count;
};

struct session {
	struct session *hash_next;
	struct conn *conn;        /* NULL while offline */
	char *username;           /* who last connected with this id; NULL: anonymous */
	struct acl_client *acl;   /* that user's rules (owned by proto/), or NULL */
	struct list_node subs;    /* struct sess_sub */
	struct sess_rare *rare;   /* the filter index and inbound QoS 2 ids; NULL without either */
	struct sess_qos *qos;     /* NULL while nothing is queued or in flight (sess_qos_get) */
	struct sess_v5 *v5;         /* MQTT 5 state, or NULL (see struct sess_v5) */
	/* Scratch used while routing one publish, to deliver once per session
	 * when several of its filters match: its entry if the entry at this
	 * slot, among those the publish made so far, is this session's
	 * (proto/route.c). No generation beside it (issue 18): the slot check
	 * alone decides. */
	uint32_t match_slot;
	uint16_t id_len;
	uint16_t next_packet_id;
	bool clean : 1;
	bool sys_write_logged : 1; /* a dropped $SYS publish was logged (once per client) */
	/* username is the owner's, set by the CONNECT that created the
	 * session; another user cannot take it over (proto/handle_connect.c).
	 * The store keeps the owner (SESSION_PUT version 2); false only for a
	 * session restored from a store written before that, until its next
	 * login. */
	bool owned : 1;
	uint8_t sess_flags;         /* SESS_FLAG_* */
	char client_id[];         /* NUL-terminated; allocated from its offset, not from sizeof */
};
/* The client id starts at byte 82: with an id of up to 13 bytes the
 * session is a 96-byte small object (core/alloc.h, docs/cost-connection.md);
 * each 8 bytes more of struct session cost every session 8. The count of
 * subscriptions is sess_sub_count's (the index's, or the short list's). */
_Static_assert(offsetof(struct session, client_id) <= 82, "struct session's client id stays at byte 82");

/* What few sessions need: a filter index (SESS_SUB_INDEX_MIN subscriptions
 * or more), the ids of inbound QoS 2 messages, the count and log state
 * of messages lost to limits, and (a persistent session at a cluster node)
 * the claim time of its last connect there. Allocated with the first of them and freed
 * once the first two are gone and nothing was ever dropped, so a session
 * with none of them pays one NULL pointer (issue 18). */
struct sess_rare {
	struct sess_sub_index *sub_index; /* NULL below SESS_SUB_INDEX_MIN subscriptions */
	struct sess_qos2_in *qos2_in;     /* NULL until the first inbound QoS 2 publish */
	uint32_t dropped;                 /* messages this session lost to limits (for logs: wraps) */
	uint16_t drop_episodes;           /* a bit per enum drop_reason already logged (proto/route.c) */
	/* Its client's last connect at this cluster node: that connect's claim
	 * time (cluster/presence.h), kept in the store (SESSION_PUT version 3)
	 * so that a restarted node can tell whether another node holds the
	 * session from a later connect. 0: not known (no cluster, a clean
	 * session, or a store written before it was recorded). */
	uint64_t claim_ns;
};
static inline uint32_t sess_dropped(const struct session *s) { return s->rare ? s->rare->dropped : 0; }
static inline uint16_t sess_drop_episodes(const struct session *s) { return s->rare ? s->rare->drop_episodes : 0; }
/* Counts `n` messages lost to limits; out of memory for the block, the
 * count is lost (the broker's own counters still have them). */
void sess_count_dropped(struct session *s, uint32_t n);
/* Sets the logged episodes; false when out of memory for the block. */
bool sess_set_drop_episodes(struct session *s, uint16_t episodes);
static inline uint64_t sess_claim_ns(const struct session *s) { return s->rare ? s->rare->claim_ns : 0; }
/* Sets it (0: forgets it); false when out of memory for the block. */
bool sess_set_claim_ns(struct session *s, uint64_t ns);
static inline struct sess_sub_index *sess_sub_index(const struct session *s)
{
	return s->rare ? s->rare->sub_index : NULL;
}
/* How many subscriptions the session has: its index's count, or (under
 * SESS_SUB_INDEX_MIN, without an index) its short list's length. */
size_t sess_sub_count(const struct session *s);

/* The outbound QoS 1/2 state of `s`, allocated if need be; NULL when out of memory. */
struct sess_qos *sess_qos_get(struct session *s);
/* Frees s->qos once nothing is queued or in flight. */
void sess_qos_trim(struct session *s);
/* Releases the free list of QoS blocks (at shutdown, so leak checkers stay quiet). */
void sess_qos_release_cache(void);
static inline uint32_t sess_queued_count(const struct session *s) { return s->qos ? s->qos->queued_count : 0; }
static inline uint16_t sess_inflight_count(const struct session *s) { return s->qos ? s->qos->inflight_count : 0; }
static inline uint64_t sess_queued_bytes(const struct session *s) { return s->qos ? s->qos->queued_bytes : 0; }

struct session_table {
	struct session **buckets;
	size_t nbuckets; /* power of two */
	size_t count;
	/* Called before a session is freed, for what upper layers hung on it
	 * (its ACL client). */
	void (*on_free)(struct session *s);
	/* Called first, while the session still has its subscriptions and
	 * messages (proto/ hands over what its shared subscriptions hold). */
	void (*on_end)(struct session_table *tab, struct session *s);
	/* What a freed session's queues are cleared with (delivery_clear);
	 * NULL: no totals to update. */
	const struct delivery_limits *dlim;
	/* Called for each subscription a freed session still holds, before it
	 * leaves the tree (a router counting interest per filter: the
	 * cluster's); NULL: nobody counts. */
	void (*on_sub_gone)(void *ctx, const char *filter, size_t len);
	void *sub_gone_ctx;
};

int sess_table_init(struct session_table *tab);
/* Frees every session (their subscriptions are removed from `tree`). */
void sess_table_free(struct session_table *tab, struct tree *tree);

struct session *sess_find(const struct session_table *tab, const char *id, size_t len);
/* A new, empty session under `id` (which must not exist). NULL when out of memory. */
struct session *sess_create(struct session_table *tab, const char *id, size_t len, bool clean);
/* Removes the session from the table and the tree, and frees it. */
void sess_destroy(struct session_table *tab, struct tree *tree, struct session *s);

/* Visits every session over several calls, a bucket a call, for a walk
 * spread over loop turns: *cursor 0 the first, each call visits the
 * sessions of one bucket and moves *cursor on, back to 0 once the scan is
 * complete. The cursor counts in reversed bits (redis's dictScan), so a
 * session in the table for the whole scan is visited once whatever the
 * table grew in between (a cursor counting up would visit again the
 * sessions a doubling moved up). `fn` returning false stops at that
 * session: false is returned and *cursor left, so the next call visits
 * that bucket again from its first session. */
bool sess_table_scan(const struct session_table *tab, size_t *cursor,
		     bool (*fn)(void *ctx, const struct session *s), void *ctx);

/*
 * Subscribes the session to the valid `filter` with the SUBSCRIBE options
 * byte and a v5 Subscription Identifier (0: none); an existing subscription to the same filter is replaced
 * [MQTT-3.8.4-3] (found in O(1), see above). Returns 1 when it was new, 0
 * when replaced, or WISP_ENOMEM (nothing changed) / WISP_ELIMIT (over
 * max_subs, if non-zero; a replacement is never over it). `filter` is
 * copied.
 */
int sess_subscribe(struct session *s, struct tree *tree, const char *filter, size_t len,
		   uint8_t options, uint32_t subscription_id, size_t max_subs);
/* 0, or WISP_ENOENT when the session had no such filter. O(1) plus the
 * tree's pruning. */
int sess_unsubscribe(struct session *s, struct tree *tree, const char *filter, size_t len);
/* The session's subscription to exactly `filter`, or NULL. O(1). */
struct sess_sub *sess_find_sub(const struct session *s, const char *filter, size_t len);
/* The filter of `sub` (sess_sub_filter_len bytes, not NUL-terminated), rebuilt
 * from the tree into one static buffer: valid until the next call. Loop thread only. */
const char *sess_sub_filter(const struct sess_sub *sub);
/* Its length, from the tree leaf's path (a walk up, no copy). */
size_t sess_sub_filter_len(const struct sess_sub *sub);

/* Test hook: filter comparisons made by lookups since the start. */
uint64_t sess_debug_compares(void);

/* Inbound QoS 2 bookkeeping. sess_qos2_in_add returns 1 if the id was
 * added, 0 if it was already there, WISP_ELIMIT past SESS_QOS2_IN_MAX, or
 * WISP_ENOMEM. */
#define SESS_QOS2_IN_MAX 1024
int sess_qos2_in_add(struct session *s, uint16_t packet_id);
static inline uint16_t sess_qos2_in_count(const struct session *s)
{
	return s->rare && s->rare->qos2_in ? s->rare->qos2_in->count : 0;
}
/* The inbound QoS 2 id at `i` (below sess_qos2_in_count). */
static inline uint16_t sess_qos2_in_id(const struct session *s, uint16_t i) { return s->rare->qos2_in->ids[i]; }
/* 1 if the id was pending (and is now released), 0 if it was not. */
int sess_qos2_in_release(struct session *s, uint16_t packet_id);

#endif
