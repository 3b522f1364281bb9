/*
 * The JetStream worker: the one thread that talks to JetStream for the
 * durable half of the cluster (durable.h), so the loop thread never waits
 * on NATS.
 *
 *  - It makes sure the stream exists (file storage, interest retention:
 *    a message is kept until every node's consumer acknowledged it, and
 *    at most max_age seconds; Nats-Msg-Id dedupe for duplicate_window_s) and binds this node's durable push consumer
 *    to it (made with js_AddConsumer, so unsubscribing keeps it; explicit
 *    acks; when created, it starts at the node's start time, so a new node
 *    does not replay the stream's history but misses nothing published
 *    after it started, however long JetStream took to answer; delivered to _WISP_DELIVER.<stream>.<consumer>). It retries every half second until
 *    both are there, then raises JSW_EV_READY on `events`. At each set-up
 *    and reconnect it checks that the consumer is not ahead of the stream
 *    (a NATS server that lost its last writes) and makes it again when it
 *    is (JSW_EV_REMADE); so for each shared group's consumer when it binds
 *    it and after each reconnect.
 *  - A connection cnats closed for good (the server refused it: credentials
 *    revoked or not yet known) is made anew on the worker's thread, from the
 *    same options, NATS_REJOIN_FIRST_MS after the close, doubling up to
 *    NATS_REJOIN_MAX_MS while refused (JSW_EV_CLOSED, jsw_closed_reason);
 *    the reply prefix, the tickets and the pending publishes stay, the
 *    stream and consumer are set up again, then JSW_EV_READY.
 *  - Publishes: the loop hands it a natsMsg whose reply subject is
 *    <reply prefix><ticket> and which carries a Nats-Msg-Id (the stream
 *    drops a re-send of the same id within its duplicate window); the
 *    worker publishes it on the core connection (JetStream's publish is a
 *    request) and keeps it until the reply: a pub ack frees it and hands
 *    the ticket back on `acks`; an error, a 503 (no stream), or no reply
 *    within 5 s publishes it again, every half second, never giving up: its
 *    client's ack waits for it, and the loop bounds how many may be
 *    outstanding (cluster.outbound_queue). The one exception is a message
 *    cnats refuses as over the server's max_payload (a server restarted
 *    with a smaller one, a message stored while NATS was down): it would
 *    be refused at every try, so it is dropped and its ticket handed back
 *    as done (JSW_EV_TOO_LARGE), freeing its slot and its client's ack. cnats's own async publish is
 *    not used: 3.4 cannot give back the messages still pending at
 *    shutdown (they stay marked as its own), and this keeps every message
 *    in one place.
 *  - Consumer acks: the loop hands it the received natsMsg to acknowledge
 *    once the message is safe on this node; it acks and destroys it.
 *  - Received messages go to `msgs` unacknowledged; a full inbox drops
 *    one (JetStream delivers it again after the ack wait).
 *  - Shared subscription groups (groups.h): the loop names a group's
 *    consumers (jsw_group_join); the worker makes each (or binds to it,
 *    when another node made it: the same name and configuration on every
 *    node), a durable push consumer filtered to the group's subject, with
 *    a deliver group, and queue-subscribes to its deliver subject, so
 *    JetStream gives each of the group's messages to one bound node; its
 *    messages reach `msgs` as the node consumer's do. It says when a
 *    group is bound (JSW_EV_GROUP, jsw_group_ready), and binds them all
 *    again after each set-up of the stream and each reconnect (a consumer
 *    idle past its inactive threshold is gone by then).
 *  - The stream's consumer names, when the loop asks (dormant.h): listed
 *    at the next half-second sweep, handed over with JSW_EV_CONSUMERS.
 *
 * Memory: `out_cap` slots of pending publishes (the loop never has more
 * outstanding) with their ticket rings, and a ring of consumer acks,
 * `2 x ack_cap` at first, grown by doubling (each consumer's
 * MaxAckPending bounds what it can have waiting: the node's and each
 * group's); per group, its consumers' names and subjects (~200 bytes).
 * Locking: one mutex and a condition variable around the rings; cnats
 * calls happen outside it.
 */
#ifndef WISP_CLUSTER_JETSTREAM_H
#define WISP_CLUSTER_JETSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "inbox.h"

#define JSW_EV_READY 0x10u
#define JSW_EV_SETUP_FAILED 0x20u /* logged by the worker's caller once per episode */
/* The worker's connection went down or came back: ask jsw_connected. */
#define JSW_EV_DOWN 0x40u
#define JSW_EV_UP 0x80u
/* A group's consumers are bound: ask jsw_group_ready. */
#define JSW_EV_GROUP 0x100u
/* A group's consumer could not be made or bound (retried every half
 * second; raised once per episode, for the caller to log). */
#define JSW_EV_GROUP_FAILED 0x200u

/* The stream's consumer names asked for are there: jsw_consumers_take. */
#define JSW_EV_CONSUMERS 0x800u

/* NATS closed the worker's connection for good (jsw_closed_reason says
 * why); the worker makes a new one on its own, NATS_REJOIN_FIRST_MS
 * doubling to NATS_REJOIN_MAX_MS, and raises JSW_EV_READY once set up. */
#define JSW_EV_CLOSED 0x400u
/* A publish was given up: over the NATS server's max_payload (ask
 * jsw_too_large); its ticket came back as done. */
#define JSW_EV_TOO_LARGE 0x1000u
/* The node consumer was made again (jsw_remade). */
#define JSW_EV_REMADE 0x2000u
/* The existing node consumer was given this run's ack wait and
 * MaxAckPending (cluster.ack_wait, inbound_queue changed), or JetStream
 * refused that (it keeps the ones it was made with). */
#define JSW_EV_LIMITS_SET 0x4000u
#define JSW_EV_LIMITS_KEPT 0x8000u

struct jsw_config {
	const char *stream;        /* the stream's name, and its subjects' first token */
	const char *consumer;      /* this node's durable consumer name */
	int replicas;
	int64_t max_age_s;
	int64_t duplicate_window_s; /* when this node creates the stream */
	size_t out_cap;            /* publishes outstanding at most */
	size_t ack_cap;            /* consumer MaxAckPending */
	int64_t start_ns;          /* a new consumer starts at this node's start (Unix ns) */
	int64_t ack_wait_s;        /* the node consumer's ack wait (cluster.ack_wait) */
	int64_t group_ack_wait_s;  /* a group's consumers' ack wait (cluster.group_ack_wait) */
	int64_t group_inactive_s;  /* and inactive threshold (cluster.group_inactive) */
	const struct config_cluster *auth; /* TLS, credentials (nats_auth.h), send_asap; read by jsw_start only */
	const struct nats_signer *signer;  /* their NKey; borrowed until jsw_free */
};

struct jsw;
struct config_cluster;
struct nats_signer;

/* Starts the worker thread, with its own connection to `urls` (named
 * "<consumer>-js"). acks receive
 * tickets (as uintptr_t) and the JSW_EV_* events, msgs the received
 * natsMsgs; both are the caller's, sized as jetstream.c's comment says.
 * 0 or WISP_ENOMEM / WISP_EIO. */
int jsw_start(struct jsw **out, const char *urls, const struct jsw_config *cfg, struct inbox *acks,
	      struct inbox *msgs);
/* Joins the thread, destroys what was not published or acked (a publish
 * JetStream did not ack was never acknowledged to its client either; an
 * unacked received message is delivered again), unsubscribes and closes
 * its connection; before the core NATS connection closes. jsw_free after cnats's threads ended. NULL:
 * no-op. Its subscriptions go to `retired`, destroyed once every
 * connection is closed (retire.h; NULL: at once, jsw_free's call). */
struct nats_retire;
void jsw_stop(struct jsw *w, struct nats_retire *retired);
void jsw_free(struct jsw *w);

/* The reply subject prefix ("<inbox>.") a publish's reply subject is
 * made of, followed by its ticket. */
const char *jsw_reply_prefix(const struct jsw *w);
/* Loop thread. Takes m (its reply subject and Nats-Msg-Id made for
 * `ticket`). The caller keeps at most out_cap outstanding, and reuses a
 * ticket's slot only after the ticket came back. */
void jsw_publish(struct jsw *w, natsMsg *m, uint64_t ticket);
/* Any thread: whether the worker's own NATS connection is up now, as its
 * callbacks last said (link.h: without cnats's lock). */
bool jsw_connected(struct jsw *w);
/* Any thread: why NATS closed the worker's connection for good, the last
 * time it did ("" if never). */
void jsw_closed_reason(struct jsw *w, char *out, size_t cap);
/* Any thread: the worker connection's max_payload as of its last
 * (re)connect, 0 before the first: a few loads, no lock. */
int64_t jsw_max_payload(struct jsw *w);
/* Any thread: publishes given up so far as over the server's max_payload,
 * and the last one's payload bytes and the limit then. */
void jsw_too_large(struct jsw *w, uint64_t *count, int64_t *bytes, int64_t *limit);
/* Loop thread. Takes m, a message from msgs, to acknowledge to JetStream. */
void jsw_ack(struct jsw *w, natsMsg *m);
/*
 * Loop thread. The group `id` (this run's number for it) reads the stream
 * through the consumer `name` on subject `subject` and, when parent is
 * not NULL, through `name`-p on `parent` (a filter ending in "/#" also
 * matches its parent level: one filter per consumer in nats-server 2.9).
 * name is a valid consumer and queue name. WISP_ENOMEM: not joined.
 */
int jsw_group_join(struct jsw *w, uint64_t id, const char *name, const char *subject, const char *parent);
/* Loop thread: unbinds the group (its consumers stay for the other nodes;
 * JetStream deletes them once no node bound them for the inactive
 * threshold). Its messages still in `msgs` are the caller's to drop. */
void jsw_group_leave(struct jsw *w, uint64_t id);
/* Loop thread: a group bound since the last call (its id in *id), or
 * false when there is none. */
bool jsw_group_ready(struct jsw *w, uint64_t *id);

/* Loop thread: asks for the names of the stream's consumers (listed at the
 * worker's next sweep, once the stream is set up; JSW_EV_CONSUMERS then).
 * Returns the ask's number, rising. */
uint64_t jsw_list_consumers(struct jsw *w);
/* Loop thread: the last answer, if one came since the last call: *list
 * (the caller's, for jsConsumerNamesList_Destroy; NULL: no consumer) and
 * the number of the ask it answers. */
bool jsw_consumers_take(struct jsw *w, jsConsumerNamesList **list, uint64_t *ask);

/* Any thread: how many times the stream was set up (found or made), and
 * its last sequence then (0: made then), known before its consumer
 * delivers anything. */
void jsw_stream_state(struct jsw *w, uint64_t *setups, uint64_t *last_seq);
/* Loop thread: asks the worker to look up the node consumer's ack floor
 * again (one request, soon). */
void jsw_ask_ack_floor(struct jsw *w);
/* Any thread: the node consumer's ack floor at JetStream at the last look
 * (a stream sequence: every message at or below it was acked, and
 * JetStream does not deliver it again), or, if higher, the sequence below
 * the stream's first message: at its bind (known before it delivers
 * anything), the check after a reconnect, an ask. False: not looked yet. */
bool jsw_ack_floor(struct jsw *w, uint64_t *floor);
/* Any thread: how many times the node consumer was made again because the
 * stream ended below what it had delivered (a NATS server that lost its
 * last writes), and the last time's figures: what it had delivered, the
 * stream's last sequence, and where the new one starts; *groups: how many
 * shared groups' consumers this node made again so. */
uint64_t jsw_remade(struct jsw *w, uint64_t *delivered, uint64_t *last_seq, uint64_t *from, uint64_t *groups);

#endif
