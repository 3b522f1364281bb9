/*
 * Outbound delivery to one session: QoS 0 best effort, QoS 1 and 2 with
 * their acknowledgement flows, a bounded in-flight window and a bounded
 * queue behind it [MQTT-4.3][MQTT-4.6.0].
 *
 * A message for a session is, in order: sent at once (QoS 0, or QoS 1/2
 * with room in the window and room in the connection's output), queued
 * (QoS 1/2 while offline, while the window is full or the output is over
 * its cap), or dropped and counted (QoS 0 that does not fit; anything past
 * the queue limits, per session or max_queued_bytes_total for all of them;
 * the latter is logged once per episode). Messages restored from the store
 * count towards the total but are never refused by it: they were
 * acknowledged. The queue drains in order as acknowledgements free the
 * window and the output drains [MQTT-4.6.0-6].
 *
 * In-flight entries keep their state (awaiting PUBACK, PUBREC or PUBCOMP)
 * so a resumed session re-sends them first: PUBLISH with DUP set, or PUBREL
 * [MQTT-4.4.0-1]. Every change of outbound state happens here and is
 * reported to the session observer (observer.h). Single threaded.
 */
#ifndef WISP_SESSION_DELIVERY_H
#define WISP_SESSION_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drop.h"
#include "msg.h"
#include "observer.h"
#include "session.h"

/* The queues of all sessions together. Owned by the routing context
 * (proto/route.c), not a process global: two brokers in one process (the
 * unit tests) keep apart. Drops by max_queued_bytes_total are counted by
 * the caller (DROP_QUEUE_TOTAL), like every other drop. */
struct delivery_totals {
	uint64_t queued_bytes;  /* sum of every session's queued_bytes */
	uint64_t episode_dropped; /* refused by max_queued_bytes_total since the bound was last reached */
	bool full;              /* the bound was reached; logged once per episode */
};

/* The Subscription Identifiers of one delivery, in match order (the
 * matching subscriptions' that have one) [MQTT-3.3.4-3]. */
struct delivery_sub_ids {
	const uint32_t *ids;
	uint16_t count;
};

struct loop;

/* What every delivery function is given: the bounds, the totals they are
 * checked against (NULL: max_queued_bytes_total is not enforced), and the
 * observer told of every change of outbound state (NULL: none). */
struct delivery_limits {
	uint16_t max_inflight;        /* >= 1 */
	uint32_t max_queued;          /* messages; 0 = no message limit */
	uint64_t max_queued_bytes;    /* 0 = no byte limit */
	uint64_t max_output;          /* bytes of unsent output on the connection */
	uint64_t max_queued_bytes_total; /* queued bytes of all sessions together; 0 = no bound */
	struct delivery_totals *totals;
	const struct sess_observer *observer;
	const struct loop *clock;     /* loop_now_s for Message Expiry; NULL: no message expires */
	/* Told of a message delivery drops on its own (DROP_EXPIRED: its
	 * Message Expiry Interval ran out in the queue [MQTT-3.3.2-5]), for
	 * counting; NULL: only the session's dropped count has it. */
	void (*on_drop)(void *ctx, struct session *s, enum drop_reason why);
	void *drop_ctx;
	/* Sends the broker's PUBREL. Once it has left, the message is never
	 * sent again [MQTT-4.3.3-1], so it vouches for the state the observer
	 * was just told of (waiting for PUBCOMP) and must not leave before that
	 * state is as safe as the store promises, or a crash would send the
	 * PUBLISH again to a client that has finished with it. NULL: sent at
	 * once (no store). */
	int (*send_pubrel)(void *ctx, struct conn *c, const uint8_t *bytes, size_t len);
	void *pubrel_ctx;
};

enum delivery_result {
	DELIVERY_SENT = 0,
	DELIVERY_QUEUED = 1,
	DELIVERY_DROPPED = 2,
};

/* Sends, queues or drops `m` for `s` at `qos` (the granted one), with the
 * retain flag as it must appear on the wire and the subscription
 * identifiers `ids` (NULL: none; copied into a queued entry). Takes its own
 * reference. On DELIVERY_DROPPED `*why` says which bound dropped it
 * (untouched otherwise); counting and logging the drop is the caller's. */
enum delivery_result delivery_offer(struct session *s, const struct delivery_limits *lim, struct msg *m,
				    uint8_t qos, bool retain, const struct delivery_sub_ids *ids,
				    enum drop_reason *why);

/* Moves queued messages into the window while it and the output have room.
 * Returns how many were sent. */
size_t delivery_pump(struct session *s, const struct delivery_limits *lim);

/* Acknowledgements from the subscriber. Each returns 0 when the id matched
 * an entry in the right state, WISP_EPROTO (and changes nothing) for a
 * PUBACK to a QoS 2 message or a PUBREC to a QoS 1 one, WISP_ENOENT
 * otherwise (answered anyway where the protocol asks: PUBREC gets PUBREL).
 * A PUBREC's v5 reason of 0x80 or more ends its flow, without PUBREL. */
int delivery_on_puback(struct session *s, const struct delivery_limits *lim, uint16_t packet_id);
int delivery_on_pubrec(struct session *s, const struct delivery_limits *lim, uint16_t packet_id, uint8_t reason);
int delivery_on_pubcomp(struct session *s, const struct delivery_limits *lim, uint16_t packet_id);

/* The state (enum sess_msg_state) of the message in flight under
 * `packet_id`, or -1: one index probe. */
int delivery_inflight_state(const struct session *s, uint16_t packet_id);

/* After a reconnect with a kept session: re-sends the window, then pumps. */
void delivery_resume(struct session *s, const struct delivery_limits *lim);

/* Releases every in-flight and queued message (session ends). `lim` may
 * be NULL (no totals to update). */
void delivery_clear(struct session *s, const struct delivery_limits *lim);

/* Whether a session may still have message `m` (an access re-check). */
typedef bool (*delivery_keep_fn)(void *ctx, const struct session *s, const struct msg *m);
/*
 * Removes the queued and in-flight messages `keep` refuses, as if they had
 * been dropped by a limit (counted in the session's dropped count). A QoS 2 message past
 * PUBREC stays: it has been delivered, only its PUBREL is left. Returns
 * how many were removed. The caller pumps the queue afterwards if the
 * session is online. O(queued + in flight).
 */
size_t delivery_filter(struct session *s, const struct delivery_limits *lim, delivery_keep_fn keep, void *ctx);

/* Rebuilding a session from the store (the observer is not told). */
int delivery_restore_queued(struct session *s, const struct delivery_limits *lim, struct msg *m, uint8_t qos,
			    bool retain, const struct delivery_sub_ids *ids);
int delivery_restore_flight(struct session *s, const struct delivery_limits *lim, struct msg *m,
			    uint16_t packet_id, uint8_t qos, uint8_t state, bool retain,
			    const struct delivery_sub_ids *ids);
/* Removes a restored queue entry of message `m` / in-flight entry `packet_id`. */
void delivery_restore_unqueue(struct session *s, const struct delivery_limits *lim, const struct msg *m);
void delivery_restore_unflight(struct session *s, uint16_t packet_id);

#endif
