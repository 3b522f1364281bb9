/*
 * The router seam: where a PUBLISH goes once its handler accepted it, and
 * where subscriptions register their interest. proto/ calls only these
 * three operations, so the local subscription tree (proto/route.c, today)
 * and a router spanning cluster nodes (later) are interchangeable.
 *
 *  - publish: delivers the message to every matching subscriber, once per
 *    session however many of its subscriptions match (and once more to
 *    one member of each matching shared group, share.h), applying No Local
 *    per subscription [MQTT-3.8.3-3] and carrying Retain As Published
 *    [MQTT-3.3.1-12] and every matching Subscription Identifier
 *    [MQTT-3.3.4-3] [MQTT-3.3.4-4] into the delivery. Borrows `m` (takes
 *    its own references for what it keeps). Returns how many sessions
 *    matched (for v5's 0x10 No matching subscribers); a publish that had
 *    to wait (routing was busy) counts as matched.
 *  - interest_add: subscribes a session to a valid filter with the
 *    SUBSCRIBE options byte and a v5 Subscription Identifier (0: none).
 *    1 when new, 0 when it replaced the session's subscription to the same
 *    filter [MQTT-3.8.4-3], WISP_ELIMIT over max_subs (0: no bound), or
 *    WISP_ENOMEM (nothing changed).
 *  - interest_remove: 0, or WISP_ENOENT when the session had no such filter.
 *
 * Routing is never re-entered: what a delivery causes (a connection to
 * drop, hence a will to publish) is queued and done after the delivery
 * loop (route.c). Single threaded: loop thread only.
 */
#ifndef WISP_PROTO_ROUTER_H
#define WISP_PROTO_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "delivery.h"
#include "msg.h"
#include "reason.h"
#include "share.h"

struct router;
struct session;
struct topic_level;

struct router_ops {
	size_t (*publish)(struct router *r, struct msg *m, const struct topic_level *levels, size_t nlevels);
	int (*interest_add)(struct router *r, struct session *s, const char *filter, size_t len, uint8_t options,
			    uint32_t subscription_id, size_t max_subs);
	int (*interest_remove)(struct router *r, struct session *s, const char *filter, size_t len);
};

struct router {
	const struct router_ops *ops;
};

static inline size_t router_publish(struct router *r, struct msg *m, const struct topic_level *levels,
				    size_t nlevels)
{
	return r->ops->publish(r, m, levels, nlevels);
}

static inline int router_interest_add(struct router *r, struct session *s, const char *filter, size_t len,
				      uint8_t options, uint32_t subscription_id, size_t max_subs)
{
	return r->ops->interest_add(r, s, filter, len, options, subscription_id, max_subs);
}

static inline int router_interest_remove(struct router *r, struct session *s, const char *filter, size_t len)
{
	return r->ops->interest_remove(r, s, filter, len);
}

/* A matched session, while one publish is routed. */
struct route_entry {
	struct session *s;
	uint32_t sub_id_first;  /* index into route_ctx.sub_ids, or ROUTE_NO_ID */
	uint16_t sub_id_count;
	uint8_t qos;            /* best granted QoS among its matching subscriptions */
	bool retain_as_published;
};

#define ROUTE_NO_ID UINT32_MAX

/* Work a delivery caused, done after the delivery loop (never inside it). */
struct route_later {
	struct msg *m;          /* publish this (a reference), or NULL: */
	struct conn *c;         /* drop this connection (broker_drop) */
	enum reason reason;
	const char *detail;     /* static text, or NULL */
	bool shares_elsewhere;  /* m's shared_elsewhere, kept while it waits */
};

/*
 * The local router and everything routing one publish needs, instead of
 * broker fields: the tree, the match scratch (grown to the largest fan-out
 * seen, then reused: no allocation per publish), the deferred work, and
 * the queue totals of every session (session/delivery.c updates them).
 */
struct route_ctx {
	struct router router;      /* ops: the local tree */
	struct tree *subs;
	const struct msg *msg;     /* being routed: its topic for the read ACL, its origin for No Local */
	struct route_entry *entries;
	size_t cap, count;
	/* Subscription identifiers of this publish's matches, in match order,
	 * entries chained through next (a session's overlapping matches
	 * arrive interleaved with other sessions'). */
	struct route_sub_id {
		uint32_t id;
		uint32_t next;
	} *sub_ids;
	size_t sub_ids_cap, sub_ids_count;
	uint32_t *sub_id_scratch;  /* one delivery's identifiers, contiguous */
	size_t sub_id_scratch_cap;
	bool busy;                 /* delivering: new routing and drops wait */
	bool draining;             /* doing the work that waited (run_later) */
	struct route_later *later;
	size_t later_len, later_cap;
	struct delivery_totals totals;
	struct share_table shares;        /* shared subscription groups (share.h) */
	struct share_group *shared_matched; /* groups this publish matched, through match_next */
	/* Set by a cluster router for the next publish only: the message's
	 * shared groups are served cluster-wide (cluster/groups.h picks the
	 * node, route_share_deliver the member), so this walk skips them. */
	bool shares_elsewhere;
	/* Set by a cluster router for the next publish only: sessions that
	 * must not get it (a session handed over from another node, which
	 * brought it along: cluster/handover.h). NULL: none (one test per
	 * publish, never per subscriber). */
	struct session *const *except;
	size_t nexcept;
};

/* Sets up the local router over the tree `subs` (borrowed: the broker
 * frees it after the sessions that hold handles in it). */
void route_init(struct route_ctx *rc, struct tree *subs);
void route_free(struct route_ctx *rc);

struct broker;
/* Whether a drop of `c` now would re-enter routing; if so it is queued
 * and done when the current delivery loop ends (true returned). */
bool route_defer_drop(struct broker *b, struct conn *c, enum reason r, const char *detail);

/* A member of shared subscriptions leaving: its queued and unacknowledged
 * QoS 1/2 messages that one of its groups matches (and no ordinary
 * subscription of it does) go to another connected member of that group,
 * if there is one; the others stay. `only`: that subscription's group
 * (an UNSUBSCRIBE), or NULL for all of them (disconnect, session end).
 * Returns how many moved. */
size_t route_share_hand_over(struct broker *b, struct session *s, const struct sess_sub *only);
/* `s` is connected again (a resumed session: `only` NULL, all its groups)
 * or joined the group of its subscription `only`: what those groups'
 * offline members hold and a connected member could take is handed over
 * as route_share_hand_over does it, so a member that left while alone in
 * its group, or every member after a restart, does not keep the group's
 * messages until it comes back itself. */
void route_share_member_online(struct broker *b, struct session *s, const struct sess_sub *only);
/* A cluster router: one copy of m to one member of the local group `key`
 * ("$share/g/f"), which NATS picked this node for. Not while routing.
 * Returns 1 when a member took it, 0 when the group is gone. */
size_t route_share_deliver(struct broker *b, const char *key, size_t len, struct msg *m);
/* A cluster router: m to the ordinary subscriptions of exactly `filter`
 * (valid, matching m's topic), as the tree's walk would deliver to them
 * (a session once, the highest granted QoS, identifiers, Retain As
 * Published, No Local, the read ACL); shared groups take nothing (NATS
 * gave them their own copies). For a message NATS sent once per matching
 * subscription of the node, each copy through its own filter. Not while
 * routing. Returns the sessions delivered to. */
size_t route_publish_filter(struct broker *b, const char *filter, size_t len, struct msg *m);
/* A cluster router: m to session s only, as the tree would deliver it to s
 * (its ordinary subscriptions that match, the highest granted QoS, their
 * identifiers, Retain As Published, the read ACL; shared ones take
 * nothing: their group picks elsewhere). Not while routing. Returns 1
 * when a subscription of s matched. */
size_t route_to_session(struct broker *b, struct session *s, struct msg *m);
/* session_table.on_end: hands over, then leaves every group. */
void route_share_session_end(struct session_table *tab, struct session *s);

#endif
