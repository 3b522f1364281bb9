/*
 * A persistent session follows its client to another node: the handover
 * (docs/cluster.md "Client ids and sessions" says why this and not session
 * state in JetStream KV).
 *
 * When a CONNECT with Clean Start 0 reaches node B for a client id B holds
 * no session of, and the last claim of that id B heard (presence.h) came
 * from node A, B holds the CONNECT (its input paused, as for a password
 * check) and asks A for the session over NATS request/reply:
 *  1. B -> A "req" (payload the client id; the user B authenticated).
 *  2. A closes the client's connection there if it has one, as a takeover
 *     [MQTT-3.1.4-3] (v5: DISCONNECT 0x8E Session taken over), and answers
 *     with the session in the store's own record encoding (store/record.h,
 *     proto/persist.h persist_session_export: SESSION_PUT, SUB_ADD with
 *     every option, MSG_PUT + FLIGHT_SET / QUEUE_ADD with packet ids, QoS,
 *     RETAIN, v5 properties and Subscription Identifiers, QOS2_IN_ADD),
 *     cut into chunks of HANDOVER_CHUNK bytes; or with "none" (no session:
 *     B starts a fresh one), "refused" (another user's: B refuses the
 *     CONNECT as one node would) or "too big" (over
 *     cluster.handover_max_bytes). A keeps its copy, offline.
 *  3. B rebuilds the session as live changes (its store records them),
 *     writes them out (persist_flush), answers the CONNECT (Session Present
 *     1; the queue is delivered) and, once its store holds the records
 *     (written; with fsync "always" synced), sends A "done".
 *  4. A ends its copy (without publishing a delayed will: the client came
 *     back, [MQTT-3.1.3-9]).
 * B falls back to a fresh session (Session Present 0), logged and counted,
 * when A answers nothing within cluster.handover_timeout, NATS reports no
 * responder on A's subject (A is gone), or a chunk is missing or damaged.
 *
 * Crash cases (kill -9), as store/ writes them down for itself:
 *  - A dies before answering: B falls back at once (no responder) or at
 *    the timeout; A's store still has the session, which A keeps after its
 *    restart until a claim of the id ends it.
 *  - B dies before its records are written: A never gets "done", keeps its
 *    copy; nothing is lost; the client reconnects somewhere and the session
 *    is fetched again from A.
 *  - B dies after writing, before "done" reached A: both stores hold the
 *    session; the node the client connects to next keeps its copy and its
 *    claim ends the other's. Each copy is the state at the handover, so no
 *    message acknowledged to a publisher is lost either way.
 *  - A dies after sending, before "done": B has the session; A restarts
 *    with its copy, which B's next claim of the id ends (a claim made while
 *    A was down is not heard again: that copy stays until the id connects
 *    at A or with Clean Start 1 somewhere).
 * Not covered: a message that reaches A's copy after A cut it and before
 * B's subscriptions are in place (about one NATS round trip) stays in A's
 * copy and goes with it.
 *
 * The directory of who claimed an id last: cluster.handover_directory
 * slots of 16 bytes, indexed by a 64-bit digest of the id; a newer id in
 * the same slot evicts an older one (that client then starts fresh at its
 * next move). A node that starts asks every other node once for the
 * digests of the persistent sessions it holds, which fill the slots no
 * claim filled, so a restarted node still finds the sessions held
 * elsewhere. Loop thread only.
 */
#ifndef WISP_CLUSTER_HANDOVER_H
#define WISP_CLUSTER_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

struct broker;
struct conn;
struct handover;

/* Bytes of session records per NATS message: well under nats-server's
 * default max_payload (1 MiB), small enough that one chunk never holds the
 * inbox long. */
#define HANDOVER_CHUNK (64u * 1024u)

/* Subscribes to this node's handover subjects on nc (borrowed until
 * handover_stop). 0, or WISP_ENOMEM / WISP_EIO. */
int handover_start(struct handover **out, struct broker *b, natsConnection *nc, const char *node,
		   const char *prefix, natsMsgHandler on_msg, void *on_msg_closure);
/* Ends the subscription (drained), before the connection closes. */
void handover_stop(struct handover *h);
/* Frees it and whatever waits, once cnats's threads are gone. NULL: no-op. */
void handover_free(struct handover *h);

/* Whether nm is on this node's handover subjects; if so, acts on it. */
bool handover_message(struct handover *h, natsMsg *nm);

/* A claim of `id` by `node` (this node's own too): the directory. */
void handover_claimed(struct handover *h, const char *id, size_t len, const char *node);
/* Whether this node is handing the session of `id` over: a claim of it
 * must not end it before the new node confirmed it. */
bool handover_is_leaving(const struct handover *h, const char *id, size_t len);

/* broker.h's on_session_missing and on_conn_gone. */
int handover_session_missing(struct handover *h, struct conn *c, const char *id, size_t len, const char *username);
void handover_conn_gone(struct handover *h, struct conn *c);

#endif
