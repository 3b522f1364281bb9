/*
 * The asking node of a handover (handover.h; the subjects and headers:
 * handover.c's top comment): a CONNECT's fetch of its session from the node
 * that holds it, from the request to the chunks, the import and "done" once
 * this node's store holds it; the holder's tail; and the cut, which keeps
 * off the session the stream messages the export brought (handover_except).
 */
#include "handover_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "broker.h"
#include "durable.h"
#include "err.h"
#include "input.h"
#include "link.h"
#include "log.h"
#include "persist.h"
#include "record.h"
#include "wire.h"

/* From here on, stream messages the export brought stay off the session
 * (handover_except). */
static void cut_start(struct fetch *f)
{
	struct handover *h = f->h;
	f->cut_active = true;
	list_push_back(&h->cuts, &f->cut_link);
	h->ncuts++;
	f->cut_max = seq_set_parse(f->cut, &f->cut_set) ? seq_set_max(&f->cut_set) : 0;
	if (f->cut_max > h->cuts_seq_max)
		h->cuts_seq_max = f->cut_max;
	for (size_t i = 0; i < h->ncut_holders; i++) {
		struct cut_holder *ch = &h->cut_holders[i];
		if (strcmp(ch->node, f->holder) == 0 && strcmp(ch->run, f->run) == 0) {
			if (f->cut_wseq > ch->wseq)
				ch->wseq = f->cut_wseq;
			return;
		}
	}
	if (h->ncut_holders == h->cut_holders_cap) {
		size_t cap = h->cut_holders_cap ? h->cut_holders_cap * 2 : 4;
		struct cut_holder *v = wisp_realloc(h->cut_holders, cap * sizeof *v);
		if (!v) {
			h->cut_holders_lost = true;
			return;
		}
		h->cut_holders = v;
		h->cut_holders_cap = cap;
	}
	struct cut_holder *ch = &h->cut_holders[h->ncut_holders++];
	snprintf(ch->node, sizeof ch->node, "%s", f->holder);
	snprintf(ch->run, sizeof ch->run, "%s", f->run);
	ch->wseq = f->cut_wseq;
}

static void cut_end(struct fetch *f)
{
	struct handover *h = f->h;
	list_remove(&f->cut_link);
	f->cut_active = false;
	if (--h->ncuts == 0) {
		h->cuts_seq_max = 0;
		h->ncut_holders = 0;
		h->cut_holders_lost = false;
	}
}

static size_t token_chain(const struct handover *h, uint64_t token) { return (size_t)token & (h->index_cap - 1); }

static size_t conn_chain(const struct handover *h, const struct conn *c)
{
	return (size_t)(((uint64_t)(uintptr_t)c * UINT64_C(0x9e3779b97f4a7c15)) >> 32) & (h->index_cap - 1);
}

/* Appends f to its chain (at the end: the first fetch of a connection is
 * found first, as in the list). */
static void chain_append(struct fetch **pp, struct fetch *f, bool by_conn)
{
	while (*pp)
		pp = by_conn ? &(*pp)->by_conn_next : &(*pp)->by_token_next;
	*pp = f;
}

static void chain_remove(struct fetch **pp, struct fetch *f, bool by_conn)
{
	while (*pp && *pp != f)
		pp = by_conn ? &(*pp)->by_conn_next : &(*pp)->by_token_next;
	if (*pp)
		*pp = by_conn ? f->by_conn_next : f->by_token_next;
	if (by_conn)
		f->by_conn_next = NULL;
	else
		f->by_token_next = NULL;
}

/* Makes both tables (16 chains, at the handover's start) or doubles them,
 * moving the fetches from the old ones (not from the list: ho_release_holds
 * keeps some on a list of its own meanwhile). Out of memory, the tables
 * stay as they are (longer chains): -1 only when there were none. */
int ho_index_grow(struct handover *h)
{
	size_t cap = h->index_cap ? h->index_cap * 2 : 16;
	struct fetch **bt = wisp_calloc(cap, sizeof *bt), **bc = wisp_calloc(cap, sizeof *bc);
	if (!bt || !bc) {
		wisp_free(bt);
		wisp_free(bc);
		return h->index_cap ? 0 : -1;
	}
	struct fetch **ot = h->by_token, **oc = h->by_conn;
	size_t ocap = h->index_cap;
	h->by_token = bt;
	h->by_conn = bc;
	h->index_cap = cap;
	for (size_t i = 0; i < ocap; i++) {
		for (struct fetch *f = ot[i], *next; f; f = next) {
			next = f->by_token_next;
			f->by_token_next = NULL;
			chain_append(&bt[token_chain(h, f->token)], f, false);
		}
		for (struct fetch *f = oc[i], *next; f; f = next) {
			next = f->by_conn_next;
			f->by_conn_next = NULL;
			chain_append(&bc[conn_chain(h, f->c)], f, true);
		}
	}
	wisp_free(ot);
	wisp_free(oc);
	return 0;
}

/* f joins the fetches (its list link is the caller's). */
void ho_index_add(struct handover *h, struct fetch *f)
{
	if (h->nfetches + 1 > h->index_cap)
		ho_index_grow(h);
	h->nfetches++;
	if (f->token) /* a held CONNECT's has none: never answered */
		chain_append(&h->by_token[token_chain(h, f->token)], f, false);
	if (f->c)
		chain_append(&h->by_conn[conn_chain(h, f->c)], f, true);
}

static void index_del(struct handover *h, struct fetch *f)
{
	if (f->token)
		chain_remove(&h->by_token[token_chain(h, f->token)], f, false);
	if (f->c)
		chain_remove(&h->by_conn[conn_chain(h, f->c)], f, true);
	h->nfetches--;
}

static void fetch_set_conn(struct fetch *f, struct conn *c)
{
	struct handover *h = f->h;
	if (f->c)
		chain_remove(&h->by_conn[conn_chain(h, f->c)], f, true);
	f->c = c;
	if (c)
		chain_append(&h->by_conn[conn_chain(h, c)], f, true);
}

void ho_fetch_free(struct fetch *f)
{
	struct broker *b = f->h->b;
	loop_timer_stop(b->loop, &f->timer);
	list_remove(&f->link);
	index_del(f->h, f);
	if (f->cut_active)
		cut_end(f);
	natsMsg_Destroy(f->request);
	wisp_free(f->cut);
	wisp_free(f->buf);
	wisp_free(f);
}

/* The CONNECT goes on: with the session now here, with a fresh one, or
 * refused. Its fetch stays (but for an import) until the CONNECT has seen
 * it (handover_session_missing). */
void ho_fetch_resume(struct fetch *f)
{
	struct conn *c = f->c;
	wisp_free(f->buf);
	f->buf = NULL;
	f->len = f->cap = 0;
	if (f->state == FETCH_CONFIRMING) {
		fetch_set_conn(f, NULL); /* the session is here: the CONNECT will not ask again */
		if (c)
			conn_input_resume(c);
		return;
	}
	if (!c) {
		ho_fetch_free(f); /* nobody waits for it */
		return;
	}
	conn_input_resume(c); /* may free f (handover_session_missing): not touched after */
}

static void fall_back(struct fetch *f, const char *why)
{
	struct broker *b = f->h->b;
	loop_timer_stop(b->loop, &f->timer);
	f->state = FETCH_FELL_BACK;
	b->stats.cluster.handover_failed++;
	char digest_hex[24];
	snprintf(digest_hex, sizeof digest_hex, "%016" PRIx64, f->node);
	log_limited("cluster handover failed", LOG_WARNING, "cluster",
		    "client %.*s: its session at node '%s' could not be fetched (%s): it starts a new one here "
		    "(Session Present 0)", (int)f->id_len, f->id, f->holder[0] ? f->holder : digest_hex, why);
	ho_fetch_resume(f);
}

/* "done" to the holder, with extra headers (name, value pairs, NULL-ended)
 * and a reply subject; false when NATS refused it. */
static bool send_done(struct fetch *f, const char *const *hdrs, const char *reply)
{
	struct handover *h = f->h;
	char subject[SUBJECT_MAX];
	ho_subject_of(h, f->node, ".done", subject);
	natsMsg *nm = NULL;
	natsStatus st = ho_publish(h, subject, reply, "done", f->id, f->id_len, &nm);
	for (size_t i = 0; st == NATS_OK && hdrs && hdrs[i]; i += 2)
		st = natsMsgHeader_Set(nm, hdrs[i], hdrs[i + 1]);
	if (st == NATS_OK)
		st = ho_publish_msg(h, &nm);
	natsMsg_Destroy(nm);
	if (st != NATS_OK)
		h->b->stats.cluster.send_failed++;
	return st == NATS_OK;
}

/* Whether the filters the import announced are known to every node
 * (interest.h's gate, as a SUBACK waits): from then on the holder's own
 * clients' messages for them go to the stream, not only to its copy. */
static bool filters_known(struct fetch *f)
{
	struct broker *b = f->h->b;
	if (!f->gate_ticket || !b->sub_gate.settled)
		return true;
	return b->sub_gate.settled(b->sub_gate.ctx, f->gate_ticket, f->gate_since);
}

/* Tells the old node to let go, once this node's store holds the session
 * (written; with fsync "always", synced): a kill -9 of this node before
 * that leaves the old node's copy in place. With a cut, "done" carries
 * this node's routed set and asks for the tail first. */
static void confirm(struct fetch *f)
{
	struct handover *h = f->h;
	struct broker *b = h->b;
	if (persist_safe_seq(b) < f->store_seq || !filters_known(f)) {
		loop_timer_start(b->loop, &f->timer, 1, ho_on_fetch_timer);
		return;
	}
	char *set = f->cut ? ho_routed_set(h) : NULL;
	if (!set) {
		/* No cut (no stream here or there): the old node lets go at once. */
		send_done(f, NULL, NULL);
		if (f->cut_active) {
			f->state = FETCH_CUT;
			loop_timer_start(b->loop, &f->timer, 1, ho_on_fetch_timer);
		} else {
			ho_fetch_free(f);
		}
		return;
	}
	char reply[SUBJECT_MAX], suffix[32];
	snprintf(suffix, sizeof suffix, ".r%" PRIu64, f->token);
	ho_subject_of(h, h->self, suffix, reply);
	const char *hdrs[] = {"Wisp-Cut", set, NULL};
	send_done(f, hdrs, reply);
	wisp_free(set);
	f->state = FETCH_TAILING;
	f->next_seq = 0;
	/* The holder waits up to cluster.handover_timeout for its consumer
	 * before it sends what it has: longer here, so that such a tail is
	 * still taken. */
	loop_timer_start(b->loop, &f->timer, (uint64_t)b->cfg->cluster.handover_timeout + 2u, ho_on_fetch_timer);
}

/* The tail is in this node's store: the old node may end its copy. */
static void confirm_tail(struct fetch *f)
{
	struct broker *b = f->h->b;
	if (persist_safe_seq(b) < f->store_seq) {
		loop_timer_start(b->loop, &f->timer, 1, ho_on_fetch_timer);
		return;
	}
	const char *hdrs[] = {"Wisp-Tail", "1", NULL};
	send_done(f, hdrs, NULL);
	f->state = FETCH_CUT;
	loop_timer_start(b->loop, &f->timer, 1, ho_on_fetch_timer);
}

/* The cut ends once this node routed all that the holder had at the
 * export (nothing of it can come again) and cluster.handover_timeout
 * passed (the holder's own messages numbered up to the export that were
 * still on their way to the stream). */
static void cut_check(struct fetch *f)
{
	struct handover *h = f->h;
	struct broker *b = h->b;
	if (loop_now_s(b->loop) >= f->cut_until_s && (!h->durable || durable_routed_all(h->durable, f->cut))) {
		ho_fetch_free(f);
		return;
	}
	loop_timer_start(b->loop, &f->timer, 1, ho_on_fetch_timer);
}

void ho_on_fetch_timer(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct fetch *f = container_of(t, struct fetch, timer);
	switch (f->state) {
	case FETCH_WAITING:
		fall_back(f, "no answer within cluster.handover_timeout");
		break;
	case FETCH_CONFIRMING:
		confirm(f);
		break;
	case FETCH_TAILING:
		log_limited("cluster handover tail", LOG_WARNING, "cluster",
			    "client %.*s: node '%s' sent no tail within cluster.handover_timeout + 2 s: messages routed "
			    "there after it sent the session may be missing", (int)f->id_len, f->id, f->holder);
		f->state = FETCH_CUT;
		cut_check(f);
		break;
	case FETCH_TAIL_CONFIRMING:
		confirm_tail(f);
		break;
	case FETCH_HOLDING:
		log_limited("cluster start-up hold", LOG_WARNING, "cluster",
			    "client %.*s: the other nodes' answers at start did not come within cluster.handover_timeout: "
			    "it resumes the session restored here", (int)f->id_len, f->id);
		f->state = FETCH_RELEASED;
		ho_fetch_resume(f);
		break;
	default:
		cut_check(f);
		break;
	}
}

struct import_ctx {
	struct broker *b;
	struct persist_import x;
	size_t msgs;
};

/* Rebuilds the session from the gathered records. 0, or why not. */
static const char *import(struct fetch *f, struct import_ctx *ic)
{
	struct broker *b = f->h->b;
	size_t off = 0;
	int rc = 0;
	while (rc == 0 && off < f->len) {
		size_t total;
		if (store_frame_check(f->buf + off, f->len - off, 0, &total) != STORE_FRAME_OK)
			return "a damaged record";
		const uint8_t *fr = f->buf + off;
		struct store_rec r;
		if (store_rec_decode(fr[4], fr[5], fr + STORE_FRAME_HDR, total - STORE_FRAME_HDR, &r) != 0)
			return "an unknown record";
		rc = persist_import_rec(b, &ic->x, &r);
		if (r.type == STORE_REC_QUEUE_ADD || r.type == STORE_REC_FLIGHT_SET)
			ic->msgs++;
		off += total;
	}
	if (rc == WISP_EEXIST)
		return "a session of this id was created here meanwhile";
	if (rc != 0)
		return rc == WISP_ENOMEM ? "out of memory" : "records out of order";
	if (!ic->x.s)
		return "no session record";
	return NULL;
}

static void fetch_complete(struct fetch *f)
{
	struct broker *b = f->h->b;
	if (!f->c) {
		/* The client hung up meanwhile: the old node keeps its copy
		 * (no "done"), as if nothing had been asked. */
		ho_fetch_free(f);
		return;
	}
	struct import_ctx ic = {.b = b};
	const char *why = import(f, &ic);
	if (why) {
		persist_import_end(b, &ic.x, false);
		fall_back(f, why);
		return;
	}
	struct session *s = ic.x.s;
	uint32_t subs = (uint32_t)sess_sub_count(s);
	persist_import_end(b, &ic.x, true);
	/* Written now rather than at the end of the turn: the CONNACK and the
	 * claim that follows must not outrun the records. */
	persist_flush(b);
	f->store_seq = persist_seq(b);
	f->state = FETCH_CONFIRMING;
	loop_timer_stop(b->loop, &f->timer);
	if (b->sub_gate.ticket) {
		f->gate_ticket = b->sub_gate.ticket(b->sub_gate.ctx);
		f->gate_since = loop_now_ms(b->loop);
	}
	if (f->cut && f->h->durable) {
		cut_start(f);
		f->cut_until_s = loop_now_s(b->loop) + b->cfg->cluster.handover_timeout;
	}
	b->stats.cluster.sessions_in++;
	log_msg(LOG_NOTICE, "cluster",
		"client %.*s: session fetched from node '%s' in %" PRIu64 " ms (%u subscriptions, %zu "
		"messages, %zu bytes%s)", (int)f->id_len, f->id, f->holder, (ho_now_us() - f->started_us + 500) / 1000,
		(unsigned)subs, ic.msgs, f->len, ic.x.subs_skipped ? ", some subscriptions over this node's limits skipped" : "");
	ho_fetch_resume(f); /* the CONNECT now finds the session: Session Present 1 */
	confirm(f);
}

#ifndef NDEBUG
static void import_when_released(struct fetch *f, bool first);

static void on_import_hold(struct loop *l, struct loop_timer *t)
{
	(void)l;
	import_when_released(container_of(t, struct fetch, timer), false);
}

/* Debug builds: WISP_DEBUG_HOLD_HANDOVER_IMPORT=<path> holds a fetched
 * session's import until <path> exists (looked at every second, in place
 * of the fetch's timeout), so that a test can publish while the holder has
 * cut its copy and this node has no subscription of it yet (e2e 29). */
static void import_when_released(struct fetch *f, bool first)
{
	const char *path = getenv("WISP_DEBUG_HOLD_HANDOVER_IMPORT");
	if (f->c && path && access(path, F_OK) != 0) {
		if (first)
			log_msg(LOG_NOTICE, "cluster", "client %.*s: import held (WISP_DEBUG_HOLD_HANDOVER_IMPORT)",
				(int)f->id_len, f->id);
		loop_timer_start(f->h->b->loop, &f->timer, 1, on_import_hold);
		return;
	}
	fetch_complete(f);
}
#endif

static struct fetch *fetch_by_token(struct handover *h, uint64_t token)
{
	struct fetch *f = token ? h->by_token[token_chain(h, token)] : NULL;
	while (f && f->token != token)
		f = f->by_token_next;
	return f;
}

/* The first fetch whose CONNECT is c's, or NULL. */
static struct fetch *fetch_by_conn(struct handover *h, const struct conn *c)
{
	struct fetch *f = h->by_conn[conn_chain(h, c)];
	while (f && f->c != c)
		f = f->by_conn_next;
	return f;
}

/* Appends a chunk (or a tail's part) to f->buf: 1 when it was the last,
 * 0 when more follow, or why it cannot go on. */
static int append_chunk(struct fetch *f, natsMsg *nm, const char **why)
{
	const char *seq = wire_header(nm, "Wisp-Seq");
	const char *last = wire_header(nm, "Wisp-Last");
	int len = natsMsg_GetDataLength(nm);
	if (!seq || strtoul(seq, NULL, 10) != f->next_seq || len < 0) {
		*why = "a chunk is missing";
		return -1;
	}
	f->next_seq++;
	size_t add = (size_t)len;
	if (f->len + add > f->h->b->cfg->cluster.handover_max_bytes) {
		*why = "over cluster.handover_max_bytes";
		return -1;
	}
	if (f->len + add > f->cap) {
		size_t cap = f->cap ? f->cap : HANDOVER_CHUNK;
		while (cap < f->len + add)
			cap *= 2;
		uint8_t *nb = wisp_realloc(f->buf, cap);
		if (!nb) {
			*why = "out of memory";
			return -1;
		}
		f->buf = nb;
		f->cap = cap;
	}
	if (add)
		memcpy(f->buf + f->len, natsMsg_GetData(nm), add);
	f->len += add;
	return last && strcmp(last, "1") == 0;
}

/* The holder's tail: the messages that reached its copy after the export
 * and that this node passed before it had the session. Delivered to the
 * session as the tree would, after what this node routed to it since the
 * import (so within the window a publisher's order may not hold). */
static void apply_tail(struct fetch *f)
{
	struct broker *b = f->h->b;
	struct session *s = sess_find(&b->sessions, f->id, f->id_len);
	size_t off = 0, msgs = 0;
	while (off < f->len) {
		size_t total;
		if (store_frame_check(f->buf + off, f->len - off, 0, &total) != STORE_FRAME_OK)
			break;
		const uint8_t *fr = f->buf + off;
		struct store_rec r;
		off += total;
		if (store_rec_decode(fr[4], fr[5], fr + STORE_FRAME_HDR, total - STORE_FRAME_HDR, &r) != 0)
			continue;
		struct msg *m = persist_msg_import(b, &r);
		if (!m)
			continue;
		if (s)
			msgs += route_to_session(b, s, m);
		msg_unref(m);
	}
	wisp_free(f->buf);
	f->buf = NULL;
	f->len = f->cap = 0;
	persist_flush(b);
	f->store_seq = persist_seq(b);
	f->state = FETCH_TAIL_CONFIRMING;
	loop_timer_stop(b->loop, &f->timer);
	log_msg(msgs ? LOG_NOTICE : LOG_INFO, "cluster", "client %.*s: %zu messages of the handover window from node '%s'",
		(int)f->id_len, f->id, msgs, f->holder);
	confirm_tail(f);
}

static void on_tail(struct fetch *f, natsMsg *nm)
{
	const char *kind = wire_header(nm, "Wisp-Kind");
	const char *why = NULL;
	int rc = kind && strcmp(kind, "tail") == 0 ? append_chunk(f, nm, &why) : -1;
	if (rc == 0)
		return;
	if (rc < 0) {
		log_limited("cluster handover tail", LOG_WARNING, "cluster",
			    "client %.*s: the tail from node '%s' is unusable (%s): messages routed there after it "
			    "sent the session may be missing", (int)f->id_len, f->id, f->holder, why ? why : "no tail");
		wisp_free(f->buf);
		f->buf = NULL;
		f->len = f->cap = 0;
		f->state = FETCH_CUT;
		loop_timer_stop(f->h->b->loop, &f->timer);
		cut_check(f);
		return;
	}
	apply_tail(f);
}

void ho_on_answer(struct handover *h, natsMsg *nm, uint64_t token)
{
	struct fetch *f = fetch_by_token(h, token);
	if (f && f->state == FETCH_TAILING) {
		on_tail(f, nm);
		return;
	}
	if (!f || f->state != FETCH_WAITING)
		return; /* late: it fell back already */
	const char *kind = wire_header(nm, "Wisp-Kind");
	const char *holder = wire_header(nm, "Wisp-Node");
	if (holder && !f->holder[0])
		snprintf(f->holder, sizeof f->holder, "%s", holder);
	if (!kind) {
		/* NATS's no-responders status: nobody listens on the holder's subject. */
		fall_back(f, "the node is gone");
		return;
	}
	if (strcmp(kind, "none") == 0) {
		f->state = FETCH_FELL_BACK; /* nothing to move: a fresh session, as on one node */
		loop_timer_stop(h->b->loop, &f->timer);
		ho_fetch_resume(f);
		return;
	}
	if (strcmp(kind, "refused") == 0) {
		f->state = FETCH_REFUSED;
		loop_timer_stop(h->b->loop, &f->timer);
		ho_fetch_resume(f);
		return;
	}
	if (strcmp(kind, "chunk") != 0) {
		fall_back(f, strcmp(kind, "too-big") == 0 ? "over cluster.handover_max_bytes" : "an unknown answer");
		return;
	}
	const char *why = NULL;
	int rc = append_chunk(f, nm, &why);
	if (rc < 0) {
		fall_back(f, why);
		return;
	}
	if (rc == 0)
		return;
	const char *cut = wire_header(nm, "Wisp-Cut");
	const char *run = wire_header(nm, "Wisp-Run");
	const char *cut_seq = wire_header(nm, "Wisp-Cut-Seq");
	if (cut && run && cut_seq && !f->cut) {
		f->cut = wisp_strndup(cut, strlen(cut)); /* out of memory: no cut, as without a stream */
		snprintf(f->run, sizeof f->run, "%s", run);
		f->cut_wseq = strtoull(cut_seq, NULL, 10);
	}
#ifndef NDEBUG
	loop_timer_stop(f->h->b->loop, &f->timer);
	import_when_released(f, true);
#else
	fetch_complete(f);
#endif
}

int handover_session_missing(struct handover *h, struct conn *c, const char *id, size_t len, const char *username)
{
	bool released = false;
	struct fetch *seen = fetch_by_conn(h, c);
	if (seen) {
		if (seen->state == FETCH_WAITING || seen->state == FETCH_HOLDING)
			return WISP_EAGAIN; /* read again before the answer: keep waiting */
		if (seen->state == FETCH_RELEASED) {
			ho_fetch_free(seen); /* held at start: decided below, as any CONNECT */
			released = true;
		} else {
			bool refused = seen->state == FETCH_REFUSED;
			ho_fetch_free(seen);
			return refused ? WISP_EEXIST : 0;
		}
	}
	if (sess_find(&h->b->sessions, id, len))
		return released || !ho_must_hold(h, id, len) ? 0 : ho_hold_connect(h, c, id, len);
	uint64_t node = ho_holder_of(h, id, len);
	if (!node)
		return 0; /* no other node had it last: a fresh session at once */
	struct fetch *f = wisp_calloc(1, sizeof *f + len + 1);
	if (!f)
		return 0;
	f->h = h;
	f->c = c;
	f->token = ++h->next_token;
	f->node = node;
	f->started_us = ho_now_us();
	f->id_len = len;
	memcpy(f->id, id, len);
	char subject[SUBJECT_MAX], reply[SUBJECT_MAX], suffix[32];
	ho_subject_of(h, node, ".req", subject);
	snprintf(suffix, sizeof suffix, ".r%" PRIu64, f->token);
	ho_subject_of(h, h->self, suffix, reply);
	natsMsg *nm = NULL;
	natsStatus st = ho_publish(h, subject, reply, "req", id, len, &nm);
	if (st == NATS_OK && username)
		st = natsMsgHeader_Set(nm, "Wisp-User", username);
	bool later = st == NATS_OK && !nats_link_up(h->link);
	if (later) {
		/* Asked once the connection is back, within the same timeout: a
		 * NATS restart shorter than it still moves the session. */
		f->request = nm;
		nm = NULL;
	} else if (st == NATS_OK) {
		st = ho_publish_msg(h, &nm);
	}
	natsMsg_Destroy(nm);
	if (st != NATS_OK) {
		h->b->stats.cluster.handover_failed++;
		log_limited("cluster handover failed", LOG_WARNING, "cluster",
			    "client %.*s: its session could not be asked for (NATS: %s): it starts a new one here",
			    (int)len, id, natsStatus_GetText(st));
		wisp_free(f);
		return 0;
	}
	list_push_back(&h->fetches, &f->link);
	ho_index_add(h, f);
	loop_timer_start(h->b->loop, &f->timer, h->b->cfg->cluster.handover_timeout, ho_on_fetch_timer);
	log_msg(LOG_INFO, "cluster", "client %.*s: asking node %016" PRIx64 " for its session%s", (int)len, id, node,
		later ? " once the NATS connection is back" : "");
	return WISP_EAGAIN;
}

void handover_link_up(struct handover *h)
{
	if (!h)
		return;
	struct list_node *n, *next;
	for (n = h->fetches.next; n != &h->fetches; n = next) {
		next = n->next;
		struct fetch *f = container_of(n, struct fetch, link);
		if (!f->request || !nats_link_up(h->link))
			continue;
		natsStatus st = ho_publish_msg(h, &f->request);
		natsMsg_Destroy(f->request);
		f->request = NULL;
		if (st != NATS_OK)
			fall_back(f, natsStatus_GetText(st)); /* may free f */
	}
}

/* A stream message's origin: its node, and its Wisp-Seq's run and number. */
bool ho_origin_of(natsMsg *nm, const char **node, const char **run, size_t *run_len, uint64_t *n)
{
	*node = wire_header(nm, "Wisp-Node");
	const char *seq = wire_header(nm, "Wisp-Seq");
	const char *dash = seq ? strrchr(seq, '-') : NULL;
	if (!*node || !dash)
		return false;
	*run = seq;
	*run_len = (size_t)(dash - seq);
	*n = strtoull(dash + 1, NULL, 10);
	return true;
}

/* Whether a holder's cut may cover its own message numbered num in run. */
static bool holder_may_cover(const struct handover *h, const char *node, const char *run, size_t run_len,
			     uint64_t num)
{
	if (h->cut_holders_lost)
		return true;
	for (size_t i = 0; i < h->ncut_holders; i++) {
		const struct cut_holder *ch = &h->cut_holders[i];
		if (strcmp(ch->node, node) == 0 && strlen(ch->run) == run_len && memcmp(ch->run, run, run_len) == 0)
			return num <= ch->wseq;
	}
	return false;
}

size_t handover_except(struct handover *h, natsMsg *nm, uint64_t seq, struct session *const **out)
{
	if (!h || !h->ncuts)
		return 0;
	*out = h->except;
	const char *node = NULL, *run = NULL;
	size_t run_len = 0, n = 0;
	uint64_t num = 0;
	bool numbered = ho_origin_of(nm, &node, &run, &run_len, &num);
	/* A message newer than every cut (the usual case once the cuts are
	 * made) is in none: no fetch is looked at, however many sessions
	 * arrive at once (a node being drained). */
	bool by_seq = seq && seq <= h->cuts_seq_max;
	bool by_num = numbered && holder_may_cover(h, node, run, run_len, num);
	if (!by_seq && !by_num)
		return 0;
	struct list_node *ln;
	for (ln = h->cuts.next; ln != &h->cuts; ln = ln->next) {
		struct fetch *f = container_of(ln, struct fetch, cut_link);
		/* In the export: routed there before it, or the holder's own
		 * message published before it. */
		bool exported = (by_seq && seq <= f->cut_max && seq_set_has(&f->cut_set, seq)) ||
				(by_num && strcmp(node, f->holder) == 0 && strlen(f->run) == run_len &&
				 memcmp(f->run, run, run_len) == 0 && num <= f->cut_wseq);
		struct session *s = exported ? sess_find(&h->b->sessions, f->id, f->id_len) : NULL;
		if (!s)
			continue;
		if (n == h->except_cap) {
			size_t cap = h->except_cap ? h->except_cap * 2 : 8;
			struct session **v = wisp_realloc(h->except, cap * sizeof *v);
			if (!v) {
				/* The ones left out get the message a second time. */
				log_limited("cluster handover except", LOG_WARNING, "cluster",
					    "out of memory: a message a moved session brought along may reach it twice");
				break;
			}
			h->except = v;
			h->except_cap = cap;
			*out = v;
		}
		h->except[n++] = s;
	}
	return n;
}

void handover_conn_gone(struct handover *h, struct conn *c)
{
	struct fetch *f;
	while ((f = fetch_by_conn(h, c)) != NULL) {
		fetch_set_conn(f, NULL);
		if (f->state != FETCH_WAITING)
			ho_fetch_free(f); /* a waiting one is dropped when its answer comes, or at its timeout */
	}
}
