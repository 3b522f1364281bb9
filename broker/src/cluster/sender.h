/*
 * The NATS writes of the node, off the loop thread: one sender per
 * connection (a stalled write holds only its own connection's lock).
 *
 * cnats writes a publish to its socket under the connection's lock, in the
 * publishing thread once its 32 KiB buffer is full (or at once with
 * cluster.send_asap), and its flusher thread holds the same lock while it
 * writes. A NATS server that stops reading (frozen, or slower than the
 * node) fills the socket, and every publish then waits for it: made on the
 * loop thread, that wait stopped every client of the node, also those
 * whose messages never need NATS (tests/e2e/35_cluster_nats_stall.py).
 *
 * So the loop hands each message to a bounded ring and one thread
 * publishes them, in the order given (one connection's messages keep their
 * order, which the receivers' duplicate check relies on: cluster.c's
 * seen_before). A full ring refuses the message, never blocks and never
 * grows: the caller drops it (these are at-most-once messages) and counts
 * it. A message cnats refuses is destroyed and counted, never tried
 * again. The thread may wait in cnats as long as NATS makes it; cnats's write
 * deadline (cluster.write_deadline) and ping interval bound that, and end
 * in cnats's own "connection lost" path.
 *
 * The loop's other writes to the main connection go through the same
 * thread, for the same reason: a filter's SUB and UNSUB, and the interest
 * announcements (control operations). Made on the loop, each waited for
 * that lock, up to cluster.write_deadline behind a stalled QoS 0 write,
 * before the connection counted as lost. They are never dropped: they
 * run in the order given, each after the data batch in progress, and
 * before the next one. A SUB not made yet when its UNSUB comes is simply
 * forgotten (nothing goes to NATS), so the control queue holds at most a
 * SUB per filter the node holds, an UNSUB per filter it held when the
 * thread last went past its queue, bounded control publishes up to
 * SENDER_CONTROL_BYTES (past it sender_publish_control refuses, and the
 * interest machinery says everything again once there is room: interest.c),
 * and the unbounded ones their callers bound (that resending: a snapshot
 * of the node's own filters, queued again only after a refusal drained or
 * at a reconnect). '<node>-share' has a sender of its own with control
 * operations only: the shared groups' queue SUBs and UNSUBs, the claims,
 * the handovers' messages, the interest answers and the $SYS figures, and
 * the subscriptions those modules listen on, made at start and again on a
 * connection made anew (cluster.c).
 *
 * Memory: cap entries (a connection and a message pointer each), fixed at
 * start; the messages themselves are cnats's, max_bytes of them at most.
 * A control operation is one allocation (the subject or the message with
 * it); a subscription's lives until cnats can no longer call its
 * callback (sender_msg_fn). Locking: one mutex, held only to move
 * pointers in and out.
 */
#ifndef WISP_CLUSTER_SENDER_H
#define WISP_CLUSTER_SENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

struct nats_retire;
struct sender;

/* What control publishes may queue, in bytes (sender_publish_control). */
#define SENDER_CONTROL_BYTES (4u << 20)

/* Starts the thread. cap >= 1 messages, max_bytes >= 1. 0, or
 * WISP_ENOMEM / WISP_EIO (no thread). */
int sender_start(struct sender **out, size_t cap, uint64_t max_bytes);
/* Joins the thread (after the message or operation in progress, if any)
 * and destroys what is still queued: at most once; the UNSUBs queued are
 * still made. Every sender_sub must have been unsubscribed; the
 * subscriptions not ended yet, and those
 * ended in the last NATS_RETIRE_MS, go to `retired` (retire.h: destroyed
 * once the connections are closed). Before the connections close. NULL:
 * no-op. */
void sender_stop(struct sender *s, struct nats_retire *retired);

/* Loop thread. Queues nm (about `bytes` long) for natsConnection_PublishMsg
 * on nc: true, and the sender owns nm; false when the ring is full (cap or
 * max_bytes), and the caller still owns nm. *fill: the ring's messages
 * after the call, so the caller can tell when an overflow episode ended. */
bool sender_push(struct sender *s, natsConnection *nc, natsMsg *nm, size_t bytes, size_t *fill);
/* Loop thread, before nc is destroyed (a connection replaced): drops the
 * messages and the SUBs queued for it (the data messages counted as
 * failed; a dropped SUB's handle stays the caller's, to unsubscribe as
 * any) and waits for the batch or operation in progress, if any, to end.
 * Its subscriptions' UNSUBs stay queued (cnats's subscription holds a
 * reference to its connection). */
void sender_forget(struct sender *s, natsConnection *nc);
/* A subscription the thread makes and ends (control operations). */
struct sender_sub;
/* A subscription's messages, on cnats's delivery thread, with the closure
 * and tag given to sender_subscribe. The tag is the caller's name for the
 * subscription: cnats's own (its sid) exists only once the thread made the
 * SUB, possibly after its first message reached the loop. Called until the
 * subscription is destroyed, NATS_RETIRE_MS after its UNSUB (retire.h),
 * or at sender_stop's `retired`: the closure must live that long. */
typedef void (*sender_msg_fn)(natsMsg *msg, void *closure, uint64_t tag);

/* Loop thread. Queues natsConnection_Subscribe(subject) on nc, or
 * natsConnection_QueueSubscribe in `queue` when not NULL, handing its
 * messages to cb. The handle is the caller's until sender_unsubscribe. NULL: out
 * of memory (nothing queued). A SUB cnats refuses is counted
 * (sender_sub_failed); one on a connection cnats closed for good is no
 * failure (the caller subscribes again on the connection that replaces
 * it). */
struct sender_sub *sender_subscribe(struct sender *s, natsConnection *nc, const char *subject, const char *queue,
				    sender_msg_fn cb, void *closure, uint64_t tag);
/* Loop thread. Ends ss, which the caller no longer uses: a SUB not made
 * yet is forgotten, a made one unsubscribed in order and destroyed
 * NATS_RETIRE_MS later. Never fails, never waits for cnats. */
void sender_unsubscribe(struct sender *s, struct sender_sub *ss);
/* Loop thread, ss not unsubscribed: what cnats dropped of ss's messages
 * so far (its pending limit); 0 before the SUB is made. */
uint64_t sender_sub_dropped(const struct sender_sub *ss);
/* What cnats had dropped of the subscriptions the thread ended. Any
 * thread. */
uint64_t sender_dropped_gone(const struct sender *s);
/* Subscriptions the thread destroyed before their NATS_RETIRE_MS, its
 * retire list being full (retire.h; an off-loop list only counts them:
 * the loop logs). Any thread. */
uint64_t sender_retired_early(const struct sender *s);
/* SUBs cnats refused so far. Any thread. */
uint64_t sender_sub_failed(const struct sender *s);

/* Loop thread. Queues nm (about `bytes` long) for natsConnection_PublishMsg
 * on nc, in order with the SUBs and UNSUBs: true, and the sender owns nm
 * (a refusal by cnats is not counted: a connection lost meanwhile, which
 * the caller hears of). false, and the caller still owns nm: out of
 * memory, or, bounded, SENDER_CONTROL_BYTES of bounded ones are queued
 * already (NATS is not taking them). Unbounded: not counted, never
 * refused but out of memory, for a burst the caller bounds itself (the
 * resending after a refusal, which is larger than the bound may be). */
bool sender_publish_control(struct sender *s, natsConnection *nc, natsMsg *nm, size_t bytes, bool bounded);
/* Loop thread. Whether bounded control publishes are taken again after a
 * refusal: once they are below half the bound. */
bool sender_control_room(const struct sender *s);

/* Publishes cnats refused so far (disconnected with its reconnect buffer
 * full, a write past its deadline, ...). Any thread. */
uint64_t sender_failed(const struct sender *s);
/* Publishes cnats refused as over the NATS server's max_payload (not in
 * sender_failed): the loop checks first (cluster.c), so only a server
 * whose max_payload shrank since the check. Any thread. */
uint64_t sender_too_large(const struct sender *s);
/* The data messages in the ring now. Any thread. */
size_t sender_queued(struct sender *s);
/* The ring's capacity in messages and bytes, for logs. */
size_t sender_cap(const struct sender *s);
uint64_t sender_max_bytes(const struct sender *s);

#endif
