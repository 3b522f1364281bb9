/*
 * QoS 1/2 across nodes without losing anything acknowledged (issue 16):
 * the loop thread's side of the JetStream path (jetstream.h is the
 * worker thread's).
 *
 *  - Out: a client's QoS 1/2 message goes to the stream `<stream>.<mapped
 *    topic>` (not the core subject, so it is not delivered twice), with a
 *    Nats-Msg-Id `<node>-<run>-<ticket>`. Its PUBACK/PUBREC is held until
 *    JetStream acknowledged the ticket (an ack gate in front of the
 *    store's own, broker.h's ack_gate: the ack then still waits for the
 *    store, as session/observer.h's "acks held until durable" rule says),
 *    in order per connection [MQTT-4.6.0-2]. At most
 *    cluster.outbound_queue tickets are outstanding (NATS down, or slow):
 *    past it a client's QoS 1/2 PUBLISH waits, unread, its connection's
 *    input paused, until a ticket is free (durable_wait: back-pressure
 *    through the client's own inflight window, counted in
 *    $SYS/broker/cluster/messages/waited and logged once per episode); a
 *    message no publisher waits on (a will, an HTTP API publish) then
 *    crosses at most once ($SYS/broker/cluster/messages/overflow).
 *  - While JetStream is out of reach, with persistence on: the message is
 *    kept in the store's forwarding queue and acknowledged once written
 *    there, then published in order when JetStream is back (durable.c).
 *  - In: every node has one durable consumer on the whole stream (nats-
 *    server 2.9 has one filter per consumer; see docs/cluster.md for the
 *    cost), so it sees every QoS 1/2 message, routes it to its local
 *    subscribers, and acks it to JetStream once the copies it made for
 *    persistent sessions are in its store (store_progress), so kill -9 of
 *    a receiving node loses nothing either: JetStream delivers it again.
 *    A message is routed once whatever JetStream redelivers (dedupe by
 *    stream sequence; the store records the ones that made copies, in
 *    the same write, so this holds across a kill -9 and restart too),
 *    so QoS 2 stays exactly once.
 *  - Shared groups: each group has its own consumers on the stream
 *    (groups.h, jetstream.h), which every node with members binds; a
 *    message from one goes to one local member of its group and is acked
 *    as the node consumer's are (once the store holds what it made). A
 *    redelivery of one already given to a member here this run is acked,
 *    not delivered again.
 *
 * Loop thread only (the worker and cnats reach it through two inboxes).
 */
#ifndef WISP_CLUSTER_DURABLE_H
#define WISP_CLUSTER_DURABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

struct broker;
struct conn;
struct durable;
struct msg;
struct nats_signer;

/* Routes one stream message (sequence seq) to the local subscribers
 * (cluster.c): NULL or "" when routed or skipped, else why it was dropped
 * (durable.c counts and logs it). `own`: this node's own message, routed
 * here when it was published: only told, for a session being handed over
 * (handover.h). Borrows nm. */
typedef const char *(*durable_route_fn)(void *ctx, natsMsg *nm, uint64_t seq, bool own);

/* The stream's NATS message for m (cluster.c's, as a client's publish
 * makes it), with reply subject `reply`: 0 and *out (the caller's), or an
 * error. Borrows m. */
typedef int (*durable_make_fn)(void *ctx, const struct msg *m, const char *reply, natsMsg **out);

/* A message of a shared group's consumer (named `consumer`) to one local
 * member of its group: NULL or "" when delivered or skipped, else why it
 * was dropped (counted, logged, acked); *gone: the group left this node,
 * so the message is not acked (JetStream gives it to another node's
 * member after the ack wait). Borrows nm. */
typedef const char *(*durable_route_group_fn)(void *ctx, natsMsg *nm, const char *consumer, bool *gone);

/* Starts the worker (its own NATS connection, to cluster.nats) for node
 * `node` whose run is `run` (both, and signer (nats_auth.h, NULL: none),
 * borrowed for the durable's life), and
 * takes over the forwarding queue the store kept from the last run
 * (persist_forward_get). route and make get route_ctx. 0, or
 * WISP_ENOMEM / WISP_EIO. */
int durable_start(struct broker *b, const char *node, const char *run, const struct nats_signer *signer,
		  durable_route_fn route,
		  durable_make_fn make, void *route_ctx, struct durable **out);
/* Stops the worker thread: before the NATS connection closes. Its NATS
 * subscriptions go to `retired` (retire.h). NULL: no-op. */
struct nats_retire;
void durable_stop(struct durable *d, struct nats_retire *retired);
/* After the NATS connection closed and cnats's threads ended. NULL: no-op. */
void durable_free(struct durable *d);

/* The node's main NATS connection was lost (up false) or is back: while
 * it is lost JetStream counts as out of reach too (store and forward), as
 * when the worker's own connection is. Loop thread. NULL: no-op. */
void durable_core_connected(struct durable *d, bool up);
/* The groups' side (groups.h): their messages go to route (route_ctx),
 * and ready(ctx, id) says a joined group is bound. */
void durable_set_groups(struct durable *d, durable_route_group_fn route, void (*ready)(void *ctx, uint64_t id),
			void *ctx);
/* groups_stream_ops (groups.h) over the worker. join returns whether
 * ready will follow (JetStream is up; otherwise the group is bound when
 * it is, before the forwarding queue drains). */
bool durable_group_join(struct durable *d, uint64_t id, const char *name, const char *subject, const char *parent);
void durable_group_leave(struct durable *d, uint64_t id);

/* The names of the stream's consumers, as JetStream listed them for ask
 * number `ask` (dormant.h). Borrowed for the call. */
typedef void (*durable_consumers_fn)(void *ctx, const char *const *names, size_t n, uint64_t ask);
void durable_set_consumers(struct durable *d, durable_consumers_fn fn, void *ctx);
/* Asks for that list (d: the struct durable); returns the ask's number. */
uint64_t durable_list_consumers(void *d);

/* The stream's name, the first token of its subjects. */
const char *durable_stream(const struct durable *d);
/* Loop thread: the max_payload of the worker's NATS connection as of its
 * last (re)connect (0: not connected yet), what a QoS 1/2 message's NATS
 * form must fit in to reach the stream. A few loads, no lock. */
int64_t durable_max_payload(const struct durable *d);
/*
 * Whether a QoS 1/2 PUBLISH of connection c that another node wants must
 * wait before it is handled: no ticket is free, or other connections wait
 * for one already (the oldest goes first). A few comparisons.
 */
bool durable_must_wait(const struct durable *d, const struct conn *c);
/*
 * c waits for a ticket (after durable_must_wait): WISP_EAGAIN, and c's
 * input is resumed (conn_input_resume: its PUBLISH is handled again) once
 * one is free, oldest first, a bounded number a turn; its keepalive does
 * not run meanwhile. Counted and logged once per episode. WISP_ENOMEM: no
 * room to wait (the publish fails). A closed connection is forgotten
 * (broker.h's ack_gate.forget).
 */
int durable_wait(struct durable *d, struct conn *c);
/*
 * A ticket for a QoS 1/2 message to go through the stream, with the reply
 * subject its NATS message must carry written to reply; 0 when too many
 * wait already (counted, logged once per episode): only for a message no
 * publisher waits on (a client's PUBLISH waited, durable_wait), which then
 * crosses at most once. While JetStream is out of reach (or what was kept
 * then still drains) the ticket stands for the forwarding queue
 * (durable.c): durable_publish then keeps m instead of nm.
 */
uint64_t durable_reserve(struct durable *d, char *reply, size_t cap);
/* Gives back a reserved ticket unused: m's message for the stream could
 * not be made, so the ack of m's publisher fails as with durable_publish's
 * WISP_ENOMEM (acknowledging it would promise a message that never left
 * the node). */
void durable_cancel(struct durable *d, uint64_t ticket, const struct msg *m);
/*
 * Takes nm (m's message on the stream's subject, made with the ticket's
 * reply subject): 0, and the ack of m's publisher waits for it (or, in
 * the forwarding queue, for the store). WISP_ENOMEM: the ticket is given
 * back, the caller keeps nm, and the ack of m's publisher fails (the
 * message is not safe: it must not be acknowledged). A queued m gets a
 * reference (the router's publish borrows its messages as const; a
 * reference count is not part of the message's value).
 */
int durable_publish(struct durable *d, natsMsg *nm, const struct msg *m, uint64_t ticket);

/*
 * The stream sequences this node routed (its dedupe window), as text for
 * a handover (handover.h's cut; the form and its readers: seq_window.h).
 * Nothing routed yet: "0". Returns the length written (NUL-terminated), 0
 * when cap is too small.
 */
size_t durable_routed_encode(const struct durable *d, char *out, size_t cap);
/* Whether every sequence of the encoded set was routed here too. */
bool durable_routed_all(struct durable *d, const char *set);
/* The stream sequence of a message from the consumer, 0 if none. */
uint64_t durable_msg_seq(natsMsg *nm);

#endif
