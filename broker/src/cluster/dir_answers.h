/*
 * Answers to the other nodes' start-up directory requests (handover.c's
 * "dir"): which persistent sessions this node holds, each as the 64-bit
 * digest of its client id, little-endian, and with times its claim time
 * after it (16 bytes an entry; 8 without), in messages of about
 * HANDOVER_CHUNK bytes.
 *
 * Bounded, as anything a message from NATS starts must be: at most
 * DIR_ANSWERS_MAX answers are under way, one per asking node (a node asking
 * again has its answer started over, with the new reply subject); past that
 * a request from another node is refused, counted by the caller and logged
 * once an episode (until no answer is under way). Each answer walks the
 * session table DIR_STEP sessions (empty buckets counted too) a step
 * (sess_table_scan, so the walk survives the table growing) into one
 * chunk, handed to the emitter once full; a chunk the emitter refuses (its
 * queue is full) is kept and offered again at the next step. So however
 * many sessions are held and however many requests come, a step costs at
 * most DIR_STEP sessions' work and the answers at most DIR_ANSWERS_MAX
 * chunks (and the emitter's own bound). (Before, each request was
 * answered whole in the turn it came, a walk of every session, and its
 * messages queued on the sender without a bound.)
 *
 * Sessions made or ended during a walk may be told or not; one there for
 * the whole walk is told once (twice only after an allocation failed).
 * Loop thread only.
 */
#ifndef WISP_CLUSTER_DIR_ANSWERS_H
#define WISP_CLUSTER_DIR_ANSWERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct session_table;
struct dir_answers;

#define DIR_ANSWERS_MAX 8
#define DIR_STEP 512u

/* Hands one message of the answer to `reply` (len bytes, a multiple of the
 * entry size; `times`: 16-byte entries) to NATS: false when it cannot take
 * it now (offered again at a later step), true when it took it or dropped
 * it for good (the link is down: the asker falls back at its timeout). */
typedef bool (*dir_emit_fn)(void *ctx, const char *reply, const uint8_t *chunk, size_t len, bool times);

/* NULL when out of memory. `t` is borrowed for the answers' life. */
struct dir_answers *dir_answers_new(const struct session_table *t, dir_emit_fn emit, void *ctx);
void dir_answers_free(struct dir_answers *a);

enum dir_request {
	DIR_TAKEN,      /* a new answer is under way */
	DIR_RESTARTED,  /* that node's answer was under way: started over */
	DIR_REFUSED,    /* DIR_ANSWERS_MAX answers are under way already */
	DIR_NO_MEMORY   /* nothing under way for it */
};
/* A request from node `asker`, to answer on `reply` (SUBJECT_MAX bytes at
 * most; a longer one is refused as DIR_NO_MEMORY would be: nothing starts). */
enum dir_request dir_answers_request(struct dir_answers *a, const char *asker, const char *reply, bool times);

enum dir_progress {
	DIR_IDLE, /* nothing under way */
	DIR_MORE, /* step again in the next turn */
	DIR_WAIT  /* the emitter refused a chunk: step again later */
};
/* Walks one answer DIR_STEP sessions on (answers take turns), sending what
 * fills a chunk and, at the walk's end, the rest; an answer is then done
 * (logged). */
enum dir_progress dir_answers_step(struct dir_answers *a);
/* Ends every answer under way (the NATS connection is lost: their askers'
 * replies are lost with it). */
void dir_answers_drop(struct dir_answers *a);
/* Answers under way. */
size_t dir_answers_pending(const struct dir_answers *a);

#endif
