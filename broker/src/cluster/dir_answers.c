/*
 * Start-up directory answers, in bounded steps (dir_answers.h).
 */
#include "dir_answers.h"

#include <string.h>

#include "alloc.h"
#include "handover_impl.h"
#include "log.h"
#include "session.h"

struct answer {
	uint64_t asker;          /* digest of the asking node's name; 0: a free slot */
	char name[64];           /* that name, for the log (cut) */
	char reply[SUBJECT_MAX];
	bool times;
	size_t cursor;           /* sess_table_scan's */
	size_t told;             /* sessions put in a chunk so far */
	size_t looked;           /* sessions and buckets looked at in this step */
	uint8_t *chunk;
	size_t len, cap;
	bool walked;             /* the walk ended: only the last chunk is left */
};

struct dir_answers {
	const struct session_table *t;
	dir_emit_fn emit;
	void *ctx;
	size_t pending;
	size_t next;             /* the slot whose turn it is */
	bool refusing;           /* an episode of refusals is under way (logged once) */
	struct answer slot[DIR_ANSWERS_MAX];
};

struct dir_answers *dir_answers_new(const struct session_table *t, dir_emit_fn emit, void *ctx)
{
	struct dir_answers *a = wisp_calloc(1, sizeof *a);
	if (a) {
		a->t = t;
		a->emit = emit;
		a->ctx = ctx;
	}
	return a;
}

static void answer_end(struct dir_answers *a, struct answer *w)
{
	wisp_free(w->chunk);
	*w = (struct answer){0};
	if (--a->pending == 0)
		a->refusing = false;
}

void dir_answers_drop(struct dir_answers *a)
{
	for (size_t i = 0; a && i < DIR_ANSWERS_MAX; i++)
		if (a->slot[i].asker)
			answer_end(a, &a->slot[i]);
}

void dir_answers_free(struct dir_answers *a)
{
	dir_answers_drop(a);
	wisp_free(a);
}

size_t dir_answers_pending(const struct dir_answers *a)
{
	return a ? a->pending : 0;
}

enum dir_request dir_answers_request(struct dir_answers *a, const char *asker, const char *reply, bool times)
{
	size_t reply_len = strlen(reply);
	if (reply_len >= SUBJECT_MAX)
		return DIR_NO_MEMORY;
	uint64_t d = ho_digest(asker, strlen(asker));
	struct answer *w = NULL, *free_slot = NULL;
	for (size_t i = 0; i < DIR_ANSWERS_MAX && !w; i++) {
		if (a->slot[i].asker == d)
			w = &a->slot[i];
		else if (!a->slot[i].asker && !free_slot)
			free_slot = &a->slot[i];
	}
	enum dir_request r = w ? DIR_RESTARTED : DIR_TAKEN;
	if (!w) {
		if (!free_slot) {
			if (!a->refusing)
				log_msg(LOG_WARNING, "cluster",
					"%d start-up requests from other nodes are being answered already: the one from "
					"node '%.63s' refused; further refusals until those are answered are counted in "
					"$SYS/broker/cluster/sessions/directory_refused", DIR_ANSWERS_MAX, asker);
			a->refusing = true;
			return DIR_REFUSED;
		}
		w = free_slot;
		w->cap = HANDOVER_CHUNK;
		w->chunk = wisp_malloc(w->cap);
		if (!w->chunk)
			return DIR_NO_MEMORY;
		w->asker = d;
		a->pending++;
	}
	size_t n = strlen(asker);
	n = n < sizeof w->name ? n : sizeof w->name - 1;
	memcpy(w->name, asker, n);
	w->name[n] = '\0';
	memcpy(w->reply, reply, reply_len + 1);
	w->times = times;
	w->cursor = 0;
	w->told = 0;
	w->len = 0;
	w->walked = false;
	return r;
}

/* sess_table_scan's: a persistent session's entry into the chunk, which
 * grows past HANDOVER_CHUNK for a long bucket (the chunk goes out after
 * each bucket, so one bucket at most). false: out of memory, that bucket
 * again at the next step. */
static bool tell(void *ctx, const struct session *s)
{
	struct answer *w = ctx;
	w->looked++;
	if (s->clean)
		return true;
	size_t entry = w->times ? 16 : 8;
	if (w->len + entry > w->cap) {
		uint8_t *bigger = wisp_realloc(w->chunk, w->cap * 2);
		if (!bigger)
			return false;
		w->chunk = bigger;
		w->cap *= 2;
	}
	uint64_t v[2] = {ho_digest(s->client_id, s->id_len), sess_claim_ns(s)};
	for (size_t k = 0; k < entry; k++)
		w->chunk[w->len++] = (uint8_t)(v[k / 8] >> (8 * (k % 8)));
	w->told++;
	return true;
}

/* The chunk out: false when the emitter refused it (kept). */
static bool send_chunk(struct dir_answers *a, struct answer *w)
{
	if (!w->len)
		return true;
	if (!a->emit(a->ctx, w->reply, w->chunk, w->len, w->times))
		return false;
	w->len = 0;
	return true;
}

enum dir_progress dir_answers_step(struct dir_answers *a)
{
	if (!a || !a->pending)
		return DIR_IDLE;
	struct answer *w = NULL;
	for (size_t i = 0; i < DIR_ANSWERS_MAX && !w; i++) {
		struct answer *s = &a->slot[(a->next + i) % DIR_ANSWERS_MAX];
		if (s->asker) {
			w = s;
			a->next = (a->next + i + 1) % DIR_ANSWERS_MAX;
		}
	}
	/* A chunk left by a refusal goes first, so the entries keep their
	 * order and the chunk its bound. */
	if (w->len >= HANDOVER_CHUNK && !send_chunk(a, w))
		return DIR_WAIT;
	w->looked = 0;
	while (!w->walked && w->looked < DIR_STEP) {
		w->looked++; /* the bucket, empty or not */
		if (!sess_table_scan(a->t, &w->cursor, tell, w))
			break; /* out of memory: that bucket again at the next step (its first sessions told twice) */
		w->walked = w->cursor == 0;
		if (w->len >= HANDOVER_CHUNK && !send_chunk(a, w))
			return DIR_WAIT;
	}
	if (w->walked) {
		if (!send_chunk(a, w))
			return DIR_WAIT;
		log_msg(LOG_INFO, "cluster", "node '%s' started: told it of the %zu persistent sessions here", w->name,
			w->told);
		answer_end(a, w);
	}
	return a->pending ? DIR_MORE : DIR_IDLE;
}
