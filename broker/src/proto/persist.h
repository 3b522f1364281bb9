/*
 * The broker's side of durability: which state change becomes which store
 * record, rebuilding the state at start-up, holding acknowledgements until
 * their records are safe, and re-emitting the live state at compaction.
 * docs/persistence.md describes the store itself.
 *
 * What is stored: retained messages (but not the broker's own $SYS ones),
 * persistent sessions (clean session 0) with their owner, subscriptions, queued
 * and in-flight QoS 1/2 messages and inbound QoS 2 packet ids. Clean
 * sessions and QoS 0 traffic never touch the disk.
 *
 * The promise: an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP) leaves
 * only after the records of what it acknowledges were written to the OS
 * (every mode: they survive kill -9) and, with fsync "always", fsynced (they
 * survive power loss): such acks wait, in order per connection, for the
 * write and the group commit. Everything else (CONNACK, SUBACK, PINGRESP,
 * QoS 0, acks that vouch for no unwritten record) never waits, so a failing
 * disk delays only what depends on it. While the store cannot write (or,
 * with "always", cannot sync), new durable work is refused: see
 * persist_refuses_durable and docs/persistence.md "When the disk fails".
 *
 * With persistence disabled every function is a cheap no-op.
 */
#ifndef WISP_PROTO_PERSIST_H
#define WISP_PROTO_PERSIST_H

#include <stdbool.h>
#include <stdint.h>

#include "msg.h"

struct broker;
struct conn;
struct session;

/* Opens the data directory and replays it into the broker. 0, or an error
 * with "file, offset, reason" in err; the broker must not start then. */
int persist_open(struct broker *b, char *err, size_t errlen);
/* Flushes, syncs (per mode) and closes. */
void persist_close(struct broker *b);

/* Once per loop turn, before any output is flushed: writes the turn's
 * records (a failed write is retried with backoff, not every turn),
 * releases the held acks they vouch for and compacts when due. */
void persist_flush(struct broker *b);

/* Queues an ack, holding it back until its records are written (and, with
 * fsync "always", fsynced). Same contract as conn_send_bytes. An ack of a
 * persistent session vouches for every record appended so far; one of a
 * clean session for none (it waits only behind c's held acks). */
int persist_send_ack(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len);
/* The same for an ack that vouches for the records appended after seq
 * `since` (and everything before them); none appended: it vouches for
 * nothing. handle_publish uses it, since routing appends for others. */
int persist_send_ack_since(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len, uint64_t since);
/* persist_send_ack for the PUBREC of a re-sent QoS 2 PUBLISH, not routed
 * again [MQTT-4.3.3-2]: the ack gate may hold it for the first copy, which
 * can still be on its way to the other nodes. */
int persist_send_resent_ack(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len);
/* The broker's PUBREL to a subscriber (delivery_limits.send_pubrel): held,
 * with the connection's acks, until the store has the state it ends. */
int persist_send_pubrel(void *broker, struct conn *c, const uint8_t *bytes, size_t len);

/* persist_send_ack_since past broker.h's ack_gate: how the gate gives back
 * an ack it held. */
int persist_send_ack_ungated(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len, uint64_t since);
/* The highest seq whose records are safe (written, and with fsync "always"
 * synced); UINT64_MAX without persistence. */
uint64_t persist_safe_seq(const struct broker *b);

/* True while new durable work must be refused: the log cannot be written,
 * or (fsync "always") it cannot be synced. */
bool persist_refuses_durable(const struct broker *b);
/* The store's last appended seq (0 without persistence). */
uint64_t persist_seq(const struct broker *b);
/* Whether an ack queued on c now would wait for records appended after
 * seq `since` (or behind an earlier held ack of c). */
bool persist_ack_must_wait(const struct broker *b, const struct conn *c, uint64_t since);

struct persist_status {
	bool enabled;
	bool degraded;          /* writes, fsyncs or compactions are failing */
	uint64_t write_errors;
	uint64_t fsync_errors;
	uint64_t compact_errors;
	uint64_t refused;       /* CONNECTs and PUBLISHes refused while degraded */
	uint64_t held_acks;     /* acks waiting for their records now */
};
void persist_status(const struct broker *b, struct persist_status *out);
/* Forgets a closing connection's held acks. */
void persist_forget_conn(struct broker *b, struct conn *c);

/*
 * The cluster's forwarding queue (cluster/durable.c): a QoS 1/2 message
 * acknowledged to its publisher while JetStream was out of reach waits in
 * the store (FWD_ADD, with the NATS message id it must be published with,
 * 1..255 bytes) until JetStream has it (persist_forward_del: FWD_DEL). Kept
 * in order; restored at start-up, before the cluster starts, which then
 * reads them with persist_forward_get.
 *
 * persist_forward_add takes a reference on m: 0, WISP_EINVAL without
 * persistence, WISP_EIO while the store refuses durable work, or
 * WISP_ENOMEM (nothing recorded). The ack that vouches for it is the one
 * queued after it with persist_send_ack_since.
 */
int persist_forward_add(struct broker *b, struct msg *m, const char *id, size_t id_len);
/* m is in JetStream: its entry goes (the first entry holding m). */
void persist_forward_del(struct broker *b, const struct msg *m);
/* The i-th entry of the queue (0: the oldest): false past its end. For
 * the cluster's start (entries deleted since may end the walk early).
 * Borrowed until the entry is deleted. */
bool persist_forward_get(const struct broker *b, size_t i, struct msg **m, const char **id);

/*
 * The cluster's receiving side (cluster/durable.c): stream message `seq`
 * was routed here, after the records of the copies it made for persistent
 * sessions, and every stream sequence up to `floor` was routed too
 * (STREAM_TAKEN, in the same write as those copies: no fsync of its own).
 * Restored at start-up, so a message JetStream delivers again after a
 * kill -9 (its ack never left) is not routed twice. A floor below the last
 * one (from an earlier build's records) starts a new window. stamp: the newest JetStream time stamp routed so
 * far (0: not known). 0, WISP_EINVAL without persistence, or WISP_ENOMEM
 * (nothing recorded: a redelivery after a crash may be routed again).
 */
int persist_stream_taken(struct broker *b, uint64_t floor, uint64_t seq, uint64_t stamp);
/* What the store restored: the floor (0: nothing), the last stamp (0: not
 * known) and the sequences above the floor (*seqs borrowed until the next
 * persist_stream_taken), their count. */
size_t persist_stream_window(const struct broker *b, uint64_t *floor, uint64_t *stamp, const uint64_t **seqs);

struct store;
/*
 * The cluster's retained bucket (cluster/retained_kv.c): this node's
 * retained write to topic, just stored (RETAIN_SET or RETAIN_DEL appended
 * before), is not in the bucket yet: RETAIN_UNSENT with the NATS message id
 * it goes with; id NULL: the topic's last write is in the bucket now
 * (RETAIN_SENT). 0, WISP_EINVAL without persistence, or the store's error
 * (counted in the store's figures).
 */
int persist_retain_mark(struct broker *b, const char *topic, size_t len, const char *id, size_t id_len);
/* The i-th topic the store restored as not yet in the bucket (0: the
 * oldest write), with its message id: false past the end. Borrowed until
 * persist_retain_unsent_forget. */
bool persist_retain_unsent_get(const struct broker *b, size_t i, const char **topic, size_t *len, const char **id);
void persist_retain_unsent_forget(struct broker *b);
/* From now on, compaction writes the marks through emit(ctx, st) (with
 * store_append_retain_unsent) instead of the restored ones. */
void persist_retain_marks_by(struct broker *b, int (*emit)(void *ctx, struct store *st), void *ctx);

/* State changes reach the store as events of the session observer
 * (session/observer.h): persist_open registers the store's implementation
 * in b->observer once the replay is over, persist_close removes it. */

/* ---- a session handed to another node (cluster/handover.c) ---- */

struct store_rec;
/* Receives one record; 0 to go on, or a negative WISP_E* to stop. */
typedef int persist_rec_fn(void *ctx, const struct store_rec *r);

/*
 * The records of session `s` in the store's own vocabulary (store/record.h),
 * in an order persist_import_rec rebuilds it from: SESSION_PUT, then a
 * SUB_ADD per subscription (every option), then per in-flight message its
 * MSG_PUT (none past PUBREC: only the PUBREL is left) and FLIGHT_SET with
 * its packet id and state, then per queued message its MSG_PUT and
 * QUEUE_ADD, then a QOS2_IN_ADD per inbound QoS 2 id awaiting its PUBREL.
 * Message ids are 1, 2, ... in that order: the transfer's own, not this
 * node's store ids (which need not exist). Works with persistence off.
 * Borrows s until return; each record is valid only during its call.
 */
int persist_session_export(struct broker *b, struct session *s, persist_rec_fn *fn, void *ctx);

/* Message m as a MSG_PUT record with the transfer's id `id`, given to fn
 * (a handover's tail, cluster/handover_export.c); fn's result. */
int persist_msg_export(struct broker *b, const struct msg *m, uint64_t id, persist_rec_fn *fn, void *ctx);
/* The message of a MSG_PUT record: a new reference; NULL when out of
 * memory or another record. */
struct msg *persist_msg_import(struct broker *b, const struct store_rec *r);

/* Rebuilding a session handed over from another node, record by record. */
struct persist_import {
	struct session *s;  /* created by the SESSION_PUT; NULL before */
	struct msg *m;      /* the last MSG_PUT, a reference; NULL before */
	uint64_t msg_id;
	uint32_t subs_skipped; /* over this node's bounds: counted and logged as a replay's are */
};
/*
 * Applies one record of persist_session_export's sequence to this node as
 * live changes: the session, its subscriptions (through the router, so
 * other nodes see the interest), queue and flight entries and QoS 2 ids,
 * each reported to the session observer, so this node's store records the
 * session as if it had been built here. WISP_EEXIST when the SESSION_PUT
 * names a session this node already has; WISP_EPROTO for records out of
 * that order or of another client; WISP_ENOMEM.
 */
int persist_import_rec(struct broker *b, struct persist_import *x, const struct store_rec *r);
/* Ends an import: drops the last message reference; with `keep` false the
 * half-built session goes too (its records with a SESSION_DEL). */
void persist_import_end(struct broker *b, struct persist_import *x, bool keep);

#endif
