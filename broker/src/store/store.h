/*
 * The durable store: an append-only log of small records plus a snapshot
 * written at compaction, in one data directory. The broker keeps its state
 * in memory as before; the store only records every change of the durable
 * part (retained messages, persistent sessions and their messages) and
 * replays it at start-up. docs/persistence.md describes the format, the
 * guarantees of each fsync mode and the recovery rules.
 *
 * What it does not do: it knows no MQTT rules, keeps no index of the state
 * (replay is the broker's job, through struct store_visitor) and never
 * blocks the loop on the disk: write() happens on the loop thread at
 * store_flush(), every fsync on a helper thread (sync.c).
 *
 * Life cycle, on the loop thread:
 *   store_open -> store_load (once) -> { store_append_* ... store_flush }*
 *   (+ store_compact when store_compact_due) -> store_close.
 *
 * Sequence numbers: every appended record gets the next seq (1, 2, ...;
 * store_seq() is the last one). With fsync "always" an acknowledgement that
 * depends on records up to seq S may be sent once store_durable_seq() >= S;
 * the helper signals progress on store_durable_fd() (an eventfd).
 *
 * Threading: every function here is for the loop thread only. Cost model:
 * an append is one encode (memcpy of the fields) into a per-turn buffer;
 * store_flush is one write() per loop turn; compaction writes the whole live
 * state once (synchronously, about the cost of a memcpy to the page cache).
 */
#ifndef WISP_STORE_STORE_H
#define WISP_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"

enum store_fsync {
	STORE_FSYNC_NO = 0,       /* never fsync: survives kill -9, not power loss */
	STORE_FSYNC_EVERYSEC = 1, /* fsync once a second: power loss costs <= ~1-2 s */
	STORE_FSYNC_ALWAYS = 2,   /* acks wait for the group commit: power-loss safe */
};

/* "no", "everysec", "always" -> 0 and *out; WISP_EINVAL otherwise. */
int store_fsync_parse(const char *name, enum store_fsync *out);

struct store_options {
	const char *dir;            /* created (with parents) if missing */
	enum store_fsync fsync;
	/* Compaction starts when the active log is >= compact_min_bytes and
	 * >= compact_ratio x the last snapshot. 0 picks the defaults below. */
	uint32_t compact_ratio;
	uint64_t compact_min_bytes;
};

#define STORE_DEFAULT_COMPACT_RATIO 2u
#define STORE_DEFAULT_COMPACT_MIN (16u << 20)

struct store;

/*
 * Creates the directory if needed and takes an exclusive flock on
 * <dir>/LOCK, so a second broker on the same directory fails here with
 * WISP_EEXIST. Reads nothing yet. 0 and *out, or a negative WISP_E* with a
 * message naming the path in err (err may be NULL).
 */
int store_open(const struct store_options *opt, struct store **out, char *err, size_t errlen);

/*
 * Replay callbacks. Each gets the broker's ctx and the decoded record, whose
 * strings and bytes are views valid only during the call (copy what you
 * keep). Any callback may be NULL (record ignored). A non-zero return stops
 * the load, which then fails with that value.
 *
 * Messages: msg_put returns in *handle the broker's object for the message
 * (e.g. a struct msg * holding one reference on behalf of the loader). The
 * engine maps message ids to handles during the load and passes the handle
 * to retain_set, queue_add and flight_set (NULL for a flight with msg_id 0);
 * a record naming an unknown message id is skipped and counted. msg_release
 * is called once per handle, at MSG_DEL or at the end of the load: a message
 * nobody took a reference to is then freed by the broker's refcount, which
 * is how messages orphaned by a crash disappear.
 *
 * Order: records come in the order they were appended (snapshot first).
 * Semantics the broker applies (documented in docs/persistence.md):
 *  SESSION_PUT upserts metadata; SESSION_DEL drops the session and all it
 *  owns; SUB_ADD upserts by filter; QUEUE_ADD appends; FLIGHT_SET upserts by
 *  packet id and removes msg_id from the queue if present; records for a
 *  session never put may be ignored or create it implicitly.
 */
struct store_visitor {
	int (*msg_put)(void *ctx, const struct store_msg *m, void **handle);
	void (*msg_release)(void *ctx, void *handle);
	int (*retain_set)(void *ctx, const struct store_retain *r, void *msg);
	int (*retain_del)(void *ctx, const struct store_retain *r);
	int (*session_put)(void *ctx, const struct store_session *s);
	int (*session_del)(void *ctx, const struct store_session *s);
	int (*sub_add)(void *ctx, const struct store_sub *sub);
	int (*sub_del)(void *ctx, const struct store_sub *sub);
	int (*queue_add)(void *ctx, const struct store_queue *q, void *msg);
	int (*queue_del)(void *ctx, const struct store_queue *q);
	int (*flight_set)(void *ctx, const struct store_flight *f, void *msg);
	int (*flight_del)(void *ctx, const struct store_flight *f);
	int (*qos2_in_add)(void *ctx, const struct store_qos2 *q);
	int (*qos2_in_del)(void *ctx, const struct store_qos2 *q);
	int (*will_set)(void *ctx, const struct store_will *w); /* NULL: skipped */
	int (*will_del)(void *ctx, const struct store_will *w);
	int (*fwd_add)(void *ctx, const struct store_fwd *f, void *msg);
	int (*fwd_del)(void *ctx, const struct store_fwd *f);
	int (*stream_taken)(void *ctx, const struct store_stream_taken *t);
	int (*retain_unsent)(void *ctx, const struct store_retain_mark *m);
	int (*retain_sent)(void *ctx, const struct store_retain_mark *m);
};

struct store_load_stats {
	uint64_t records;         /* records replayed */
	uint64_t damaged;         /* damaged regions skipped in the middle */
	uint64_t damaged_bytes;
	uint64_t truncated_bytes; /* torn tail cut from the active log */
	uint64_t dangling;        /* records naming an unknown message id */
	uint64_t bytes;           /* snapshot + log bytes read */
};

/*
 * Replays the newest snapshot and the logs after it through v, repairs the
 * active log (torn tail truncated, logged with the byte count; middle damage
 * skipped and logged with offsets), removes files made obsolete by a
 * finished compaction, and starts the helper thread. Call exactly once,
 * before any append. stats may be NULL.
 * Fails (the broker must not start) only when a file is unusable as a whole
 * (bad header magic, checksum or version; generation mismatch), on I/O
 * errors, or when a callback fails; err then names the file and offset.
 */
int store_load(struct store *s, const struct store_visitor *v, void *ctx,
	       struct store_load_stats *stats, char *err, size_t errlen);

/* A fresh message id (never 0, larger than every id in the files). */
uint64_t store_next_msg_id(struct store *s);

/*
 * Appends: encode one record into the turn's buffer (nothing reaches the
 * OS before store_flush). 0, WISP_EINVAL (field out of range, or store not
 * loaded), or WISP_ENOMEM (nothing appended). Everything is borrowed.
 * Strings are (pointer, length) with length <= 65535.
 */
int store_append(struct store *s, const struct store_rec *r);
int store_append_msg_put(struct store *s, const struct store_msg *m);
int store_append_msg_del(struct store *s, uint64_t msg_id);
int store_append_retain_set(struct store *s, const char *topic, size_t topic_len, uint64_t msg_id);
int store_append_retain_del(struct store *s, const char *topic, size_t topic_len);
int store_append_session_put(struct store *s, const struct store_session *ss);
int store_append_session_del(struct store *s, const char *client, size_t client_len);
int store_append_sub_add(struct store *s, const struct store_sub *sub);
int store_append_sub_del(struct store *s, const char *client, size_t client_len,
			 const char *filter, size_t filter_len);
int store_append_queue_add(struct store *s, const char *client, size_t client_len,
			   uint64_t msg_id, uint8_t qos, uint8_t flags);
/* QUEUE_ADD with everything struct store_queue holds (the delivery's
 * Subscription Identifiers too). */
int store_append_queue(struct store *s, const struct store_queue *q);
int store_append_queue_del(struct store *s, const char *client, size_t client_len,
			   uint64_t msg_id);
int store_append_flight_set(struct store *s, const struct store_flight *f);
int store_append_flight_del(struct store *s, const char *client, size_t client_len,
			    uint16_t packet_id);
int store_append_qos2_in_add(struct store *s, const char *client, size_t client_len,
			     uint16_t packet_id);
int store_append_will_set(struct store *s, const struct store_will *w);
int store_append_will_del(struct store *s, const char *client, size_t client_len);
int store_append_qos2_in_del(struct store *s, const char *client, size_t client_len,
			     uint16_t packet_id);

/* FWD_ADD of message msg_id (its MSG_PUT first) with its NATS message id
 * (1..255 bytes), and FWD_DEL. */
int store_append_fwd_add(struct store *s, uint64_t msg_id, const char *id, size_t id_len);
int store_append_fwd_del(struct store *s, uint64_t msg_id);
/* STREAM_TAKEN: stream sequence seq routed (seq > 0), and all up to floor;
 * stamp, the newest JetStream time stamp routed (0: not known). */
int store_append_stream_taken(struct store *s, uint64_t floor, uint64_t seq, uint64_t stamp);
/* RETAIN_UNSENT of topic (after its RETAIN_SET or RETAIN_DEL) with its
 * NATS message id (1..255 bytes), and RETAIN_SENT. */
int store_append_retain_unsent(struct store *s, const char *topic, size_t len, const char *id, size_t id_len);
int store_append_retain_sent(struct store *s, const char *topic, size_t len);

/* Seq of the last appended record (0 before the first). */
uint64_t store_seq(const struct store *s);

/*
 * Writes the buffered records with one write() (loop thread; no fsync) and
 * wakes the helper. Call once per loop turn, before sending that turn's
 * acks: afterwards the records are in the OS and survive kill -9.
 * 0; or WISP_EIO if the write failed: the log is cut back to its last whole
 * record, the records stay buffered (and are retried at the next call: the
 * caller paces the calls), store_write_failing() is true until a flush
 * succeeds, and the broker must not ack them. One error line per episode.
 */
int store_flush(struct store *s);

/* The eventfd the loop polls for reading: it becomes readable when the
 * durable seq advanced, an fsync failed or a compaction finished. */
int store_durable_fd(const struct store *s);
/* Drains the eventfd, completes a finished compaction (removes old files,
 * logs), learns about failed fsyncs and returns the highest seq known to be
 * fsynced. Call from the eventfd's read callback. */
uint64_t store_durable_seq(struct store *s);
/* Seq of the last record write() accepted: what survives kill -9. */
uint64_t store_written_seq(const struct store *s);
/* The last flush failed and its records wait in memory. */
bool store_write_failing(const struct store *s);
/*
 * An fsync of the log failed. After that Linux may have dropped the dirty
 * pages, so a later fsync of the same file would not prove anything: the
 * durable seq stops advancing until a compaction has rewritten the whole
 * state into fresh files (store_compact_due() is true meanwhile). Not
 * sticky: the successful compaction clears it.
 */
bool store_needs_rewrite(const struct store *s);
/* WISP_EIO while store_write_failing() or store_needs_rewrite(), else 0. */
int store_error(const struct store *s);
/* errno of the last failed write or fsync (0 if none), for messages. */
int store_last_errno(const struct store *s);
enum store_fsync store_fsync_mode(const struct store *s);

/* Broker callback that re-emits its whole live state with store_append_*
 * (which write into the snapshot while it runs): every MSG_PUT of a live
 * message before any record naming it. Non-zero aborts the compaction. */
typedef int (*store_emit_fn)(void *ctx, struct store *s);

/* True when the active log is large enough to compact (see options), or
 * when store_needs_rewrite(). */
bool store_compact_due(const struct store *s);
/*
 * Writes a snapshot of the live state through emit and starts a new log;
 * the helper thread then fsyncs and renames the snapshot and the old files
 * are removed at a later store_durable_seq/store_flush. Flushes pending
 * records first. 0; WISP_EAGAIN if the previous compaction is still
 * finishing; or an error (nothing is lost: the old log stays in use).
 */
int store_compact(struct store *s, store_emit_fn emit, void *ctx);

struct store_stats {
	uint64_t log_bytes;      /* active log size */
	uint64_t snap_bytes;     /* last snapshot size */
	uint64_t generation;
	uint64_t compactions;
	uint64_t flushes;
	uint64_t write_errors;   /* failed log writes (flush attempts) */
	uint64_t fsync_errors;   /* failed log fsyncs */
	uint64_t compact_errors; /* failed compactions */
};
void store_get_stats(const struct store *s, struct store_stats *out);

/* Flushes, lets the helper do a final fsync (unless "no"), unlocks, frees. */
void store_close(struct store *s);

#endif
