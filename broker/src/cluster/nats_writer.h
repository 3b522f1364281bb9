/*
 * The node's data connection: a NATS connection of its own ('<node>-pub')
 * that the loop thread writes and reads, for the messages that cross the
 * cluster at most once: QoS 0, and QoS 1/2 without a JetStream ticket
 * (cluster.c's core publishes), out; and in, what the node's filters'
 * subscriptions bring (cluster.c subscribes them here while it is up).
 *
 * Through cnats, each message out was a natsMsg with a header map, handed
 * to the sender thread (sender.h), written there under the connection's
 * lock and freed by cnats's garbage collector thread; each message in was
 * read by cnats's reader thread, handed to its delivery thread, then
 * through the inbox (inbox.h) to the loop: thread hand-offs and
 * allocations per message, most of a cross-node message's broker CPU. Here
 * the loop formats the HPUB straight into one buffer and writes it once
 * per loop turn, and parses each MSG/HMSG where it lies in the input
 * buffer, as it does for its clients
 * (docs/bench/results-2026-12-02-issue16-data-connection.md and
 * results-2026-12-03-issue16-loop-reader.md measure it). cnats keeps
 * everything else: JetStream, the shared groups, the control messages.
 *
 * What cnats did for the connection is done here, non-blocking on the loop:
 * the URL list tried in turn with a backoff (client/connector.h, names
 * resolved off the loop), TLS after the server's plain INFO (net/tls.h),
 * the credentials (user and password or token, in the configuration or
 * the URL; an NKey or a credentials file, signing the server's nonce with
 * nats_auth.h's signer), the server's max_payload, PINGs every
 * cluster.ping_interval (two unanswered: lost), and
 * cluster.write_deadline (a buffer that has not moved for that long: lost).
 *
 * Bounded: the buffer holds at most cluster.send_queue messages and
 * cluster.send_queue_bytes bytes; past either a publish is refused (the
 * caller drops and counts it, as it did for the sender's full ring); the
 * SUBs of a connection just up may take it up to 64 MiB further. A
 * connection lost with messages in the buffer loses them (at most once,
 * counted: nats_writer_lost), as does a publish the server's permissions
 * refuse (its -ERR; the connection stays). While the connection is not
 * up, nats_writer_up is false and the caller publishes through cnats as
 * before, so a server that refuses this connection (or a proxy that
 * cannot carry it) costs speed, not messages. In: a message is read whole
 * into the input buffer (at most the server's max_payload), at most 256
 * a loop turn; a loop slower than NATS leaves the rest in the socket, and
 * nats-server, past its own limit for a slow consumer, closes the
 * connection (logged; the filters go back to cnats meanwhile).
 *
 * Single-threaded: the loop thread only.
 */
#ifndef WISP_CLUSTER_NATS_WRITER_H
#define WISP_CLUSTER_NATS_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct loop;
struct nats_signer;
struct nats_writer;

/* Starts connecting (the outcome is logged; names are looked up on a
 * thread of the writer's own). cfg and signer (NULL: none) are borrowed
 * until nats_writer_stop. name: the connection's name for the server's
 * monitoring (copied). 0, or WISP_ENOMEM (also: no thread), or
 * WISP_ECONFIG with "cluster.<key>: <reason>" in err (a TLS file it
 * cannot read). */
int nats_writer_start(struct nats_writer **out, struct loop *l, const struct config_cluster *cfg,
		      const struct nats_signer *signer, const char *name, char *err, size_t errlen);
/* Writes what the buffer holds if the socket takes it now (never waits),
 * and closes; a name lookup still running is left to its thread, not
 * waited for. NULL: no-op. */
void nats_writer_stop(struct nats_writer *w);

/* Connected, the CONNECT answered: publishes are taken. */
bool nats_writer_up(const struct nats_writer *w);
/* The server's max_payload (0 while not up). */
int64_t nats_writer_max_payload(const struct nats_writer *w);

/* Queues HPUB subject with hdr (the whole header block, "NATS/1.0\r\n"
 * to its closing "\r\n") and payload, written by the end of the loop
 * turn. 0; WISP_EAGAIN: the buffer is full (or the connection is not up),
 * nothing queued; WISP_ELIMIT: over the server's max_payload, nothing
 * queued. */
int nats_writer_publish(struct nats_writer *w, const char *subject, size_t subject_len, const char *hdr,
			size_t hdr_len, const void *payload, size_t payload_len);

/* ---- reading: the connection's own subscriptions ---- */

/* A message of one of the connection's subscriptions; every pointer is
 * valid during the call only. hdr_len 0: no header block (MSG). */
struct nats_writer_msg {
	const char *subject, *reply;
	size_t subject_len, reply_len;
	uint64_t sid;
	const char *hdr;
	size_t hdr_len;
	const char *payload;
	size_t payload_len;
};

/* Called on the loop thread, each of them optional. on_up: the connection
 * is up (again): nothing it subscribed before is in place any more, so
 * the owner subscribes anew. on_down: it is lost (the marks not answered
 * never will be). on_mark: the server answered mark n (nats_writer_mark):
 * it has handled every line queued before it. */
struct nats_writer_hooks {
	void (*on_msg)(void *ud, const struct nats_writer_msg *m);
	void (*on_up)(void *ud);
	void (*on_down)(void *ud);
	void (*on_mark)(void *ud, uint64_t n);
	void *ud;
};
void nats_writer_set_hooks(struct nats_writer *w, const struct nats_writer_hooks *h);
/* From on_msg: no message after this one is handed over, nor anything
 * read (the server's lines wait in the input and the socket, its PINGs
 * unanswered, the keepalive's own not sent), until nats_writer_resume.
 * The owner bounds the pause: the server closes a connection that reads
 * nothing for long. A lost connection ends it (the server's FIN, or an
 * error, is noticed while paused; what was unread goes with it). */
void nats_writer_pause(struct nats_writer *w);
void nats_writer_resume(struct nats_writer *w);

/* "SUB <subject> <sid>" / "UNSUB <sid>", queued behind what is queued
 * (never refused for a full buffer of messages: a control line). 0;
 * WISP_EAGAIN: the connection is not up (on_up says when to subscribe);
 * WISP_ECLOSED: the connection was lost queueing it. */
int nats_writer_subscribe(struct nats_writer *w, uint64_t sid, const char *subject, size_t subject_len);
int nats_writer_unsubscribe(struct nats_writer *w, uint64_t sid);
/* Queues a PING whose PONG is mark n (returned; 0: not up), handed to
 * on_mark: NATS handles one connection's lines in order, so every SUB
 * queued before it is then in place. The connection's own keepalive
 * PINGs take numbers too; marks count from 1 on each connection. */
uint64_t nats_writer_mark(struct nats_writer *w);

/* Messages queued and lost, so far: with a connection (their bytes were
 * in the buffer, not wholly written, when it was lost), or refused by the
 * server's permissions. */
uint64_t nats_writer_lost(const struct nats_writer *w);
/* Each later loss is also added to *counter as it happens (the node's
 * $SYS figure: a lost connection is counted at once, not at the next
 * publish). */
void nats_writer_count_lost_in(struct nats_writer *w, uint64_t *counter);
/* Messages written, so far; bytes now in the buffer. */
uint64_t nats_writer_sent(const struct nats_writer *w);
size_t nats_writer_buffered(const struct nats_writer *w);

#endif
