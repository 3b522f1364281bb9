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
 *    the timeout; A's store still has the session, which A's restart
 *    brings back and then ends as soon as B's answer to its directory
 *    request shows B's later claim (presence.h).
 *  - B dies before its records are written: A never gets "done", keeps its
 *    copy; nothing is lost; the client reconnects somewhere and the session
 *    is fetched again from A.
 *  - B dies after writing, before "done" reached A: both stores hold the
 *    session; the node the client connects to next keeps its copy and its
 *    claim ends the other's. Each copy is the state at the handover, so no
 *    message acknowledged to a publisher is lost either way.
 *  - A dies after sending, before "done": B has the session; A restarts
 *    with its copy, and B's answer to A's start-up directory request says
 *    B holds the id from a later connect (B claimed it after A's claim):
 *    A ends its copy (presence.h). One made while A had only lost NATS
 *    ends too: presence.h's recheck.
 *  - With the cut: A dies before the tail: B goes on without it (logged);
 *    the window's messages stay in A's stored copy. B dies before it wrote
 *    the tail: no final "done", A keeps its copy (tail included), as in
 *    the case "B dies after writing" above.
 *
 * The cut (with cluster.durable; docs/cluster.md "The cut"): both nodes
 * route the stream's QoS 1/2 messages, each deduplicating by stream
 * sequence (durable.h), so the set of sequences each has routed is a cut.
 * A's last chunk carries R_A, the set A routed at the export, and E_A,
 * the Wisp-Seq number of A's own last message on the stream. A keeps
 * routing into its copy and records what reaches it from then on (A's
 * own QoS 1/2 messages, with their stream sequence once its consumer
 * sees them come back; others' stream messages with theirs). B, once it
 * imported and the other nodes acknowledged the session's filters
 * (interest.h's gate: A's own later messages then go to the stream),
 * sends "done" with R_B, the set B routed at the import. A waits until it
 * routed all of R_B, then answers with the tail: the recorded messages
 * whose sequence is in R_B (B passed them before it had the session)
 * and its own ones that went to no stream (B never sees them). B
 * delivers the tail to the session, writes it and says "done" again
 * (Wisp-Tail); only then does A end its copy. From the import on, B
 * keeps off the session a stream message in R_A, or A's own numbered up
 * to E_A (both in the export), until it routed all of R_A and at least
 * cluster.handover_timeout passed. So each stream message reaches the
 * session once: in the export (R_A), in the tail (R_B minus R_A) or
 * routed by B after the import (neither).
 *
 * The directory of who claimed an id last: cluster.handover_directory
 * slots of 24 bytes (the id's digest, the node's, the claim time), indexed
 * by a 64-bit digest of the id; a newer id in the same slot evicts an
 * older one (that client then starts fresh at its next move). A node that
 * starts asks every other node for the digests of the persistent
 * sessions it holds and their claim times, which fill the slots no claim
 * filled, so a restarted node still finds the sessions held elsewhere, and
 * tell it which of its restored sessions another node holds from a later
 * connect (presence.h ends those). A node that restored such sessions
 * asks twice, the second time 1 to 2 s after its claim connection is up: a node starting at the same
 * moment may have missed the first request (at another server of a NATS
 * cluster its subscription arrives late), and this node its one.
 *
 * Until the answers are in (the settling interval, interest_interval + 1
 * s and at least 3 s, at most cluster.handover_timeout, after the claim
 * connection is up),
 * a Clean Start 0 CONNECT of a session restored from the store with a
 * claim time, not connected or claimed since, waits as a fetch's does
 * (handover_session_missing: WISP_EAGAIN), each at most
 * cluster.handover_timeout: resumed before, the stale copy's claim would
 * end the later copy elsewhere. It goes on at once when an answer ends the
 * copy here (it then fetches the later one). Loop thread only.
 */
#ifndef WISP_CLUSTER_HANDOVER_H
#define WISP_CLUSTER_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "sender.h"

struct broker;
struct conn;
struct handover;

/* Bytes of session records per NATS message: well under nats-server's
 * default max_payload (1 MiB), small enough that one chunk never holds the
 * inbox long. */
#define HANDOVER_CHUNK (64u * 1024u)

/* Subscribes to this node's handover subjects on nc (borrowed until
 * handover_stop) and publishes on it, both through `sender` (sender.h).
 * 0, or WISP_ENOMEM / WISP_EIO. */
struct nats_link;
int handover_start(struct handover **out, struct broker *b, natsConnection *nc, struct sender *sender,
		   const struct nats_link *link, const char *node,
		   const char *prefix, sender_msg_fn on_msg, void *on_msg_closure);
/* Ends the subscriptions (their UNSUBs queued on the sender, before it
 * stops). */
void handover_stop(struct handover *h);
/* Loop thread: moves to nc, the connection made anew after cnats closed
 * the old one for good (its subscriptions ended, queued again on nc).
 * NULL: no-op. 0 or WISP_ENOMEM. */
int handover_rebind(struct handover *h, natsConnection *nc);
/* What cnats dropped of its two subscriptions so far (sender_sub_dropped).
 * NULL: 0. */
uint64_t handover_pending_dropped(const struct handover *h);
/* Frees it and whatever waits, once cnats's threads are gone. NULL: no-op. */
void handover_free(struct handover *h);

/* Whether nm is on this node's handover subjects; if so, acts on it. */
bool handover_message(struct handover *h, natsMsg *nm);
/* Loop thread: the connection is back (link.h): the requests of CONNECTs
 * made while it was down go out now. NULL: no-op. */
void handover_link_up(struct handover *h);

/* A claim of `id` by `node` (this node's own too) made at `at` (0: not
 * known): the directory. */
void handover_claimed(struct handover *h, const char *id, size_t len, const char *node, uint64_t at);
/* The time of the last claim of `id` this node heard; 0: none known. */
uint64_t handover_last_claim_ns(const struct handover *h, const char *id, size_t len);
/* Whether the last claim of `id` this node heard was its own. */
bool handover_claimed_here(const struct handover *h, const char *id, size_t len);
/* Whether it was another node's. */
bool handover_claimed_elsewhere(const struct handover *h, const char *id, size_t len);
/* Called for each persistent session held here that a node's answer to
 * this node's start-up "dir" request says it holds too, with its claim
 * time there (0: not known): presence.c ends the older copy. */
struct session;
void handover_on_held_elsewhere(struct handover *h,
				void (*fn)(void *ctx, struct session *s, const char *node, uint64_t at), void *ctx);
/* Whether this node is handing the session of `id` over: a claim of it
 * must not end it before the new node confirmed it. */
bool handover_is_leaving(const struct handover *h, const char *id, size_t len);

/* The durable stream (NULL: cluster.durable off, no cut), this run's id
 * and the number of this node's last message on NATS (cluster.c's,
 * borrowed for the handover's life). */
struct durable;
struct msg;
struct session;
void handover_set_stream(struct handover *h, struct durable *d, const char *run, const uint64_t *wseq);
/* Whether a session is leaving (the hooks below have work). */
bool handover_recording(const struct handover *h);
/* The holder's records: a stream message (sequence seq, from another
 * node) routed here; this node's own QoS 1/2 message routed here when
 * published (wseq: its number on the stream; 0: it went to no stream);
 * this node's own message back from the stream at sequence seq. */
void handover_routed(struct handover *h, struct msg *m, uint64_t seq);
void handover_published(struct handover *h, struct msg *m, uint64_t wseq);
void handover_own_routed(struct handover *h, natsMsg *nm, uint64_t seq);
/* The new node's side of the cut: the sessions a stream message nm
 * (sequence seq) must not reach, as many as there are (a node drained
 * hands many over at once, a message in flight then in all their cuts):
 * *out points into the handover's own array, valid until the next call. */
size_t handover_except(struct handover *h, natsMsg *nm, uint64_t seq, struct session *const **out);

/* broker.h's on_resume_session (a Clean Start 0 CONNECT, whether or not
 * its session is here) and on_conn_gone. */
int handover_session_missing(struct handover *h, struct conn *c, const char *id, size_t len, const char *username);
void handover_conn_gone(struct handover *h, struct conn *c);

#endif
