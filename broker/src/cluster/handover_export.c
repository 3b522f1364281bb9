/*
 * The holding node of a handover (handover.h; the subjects and headers:
 * handover.c's top comment): a session's export to the node that asks for
 * it; its copy, kept as a leaving session until that node says "done"; the
 * messages that reach the copy meanwhile, recorded; and the tail sent from
 * them.
 */
#include "handover_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "delivery.h"
#include "durable.h"
#include "err.h"
#include "log.h"
#include "persist.h"
#include "record.h"
#include "session_v5.h"
#include "topic.h"
#include "tree.h"
#include "wire.h"

static struct leaving *leaving_find(const struct handover *h, const char *id, size_t len)
{
	struct list_node *n;
	for (n = h->leavings.next; n != &h->leavings; n = n->next) {
		struct leaving *l = container_of(n, struct leaving, link);
		if (l->id_len == len && memcmp(l->id, id, len) == 0)
			return l;
	}
	return NULL;
}

bool handover_is_leaving(const struct handover *h, const char *id, size_t len)
{
	return h && leaving_find(h, id, len) != NULL;
}

static void leaving_drop_recs(struct leaving *l)
{
	for (size_t i = 0; i < l->nrecs; i++)
		msg_unref(l->recs[i].m);
	wisp_free(l->recs);
	l->recs = NULL;
	l->nrecs = l->cap = l->bytes = l->overflow = 0;
	wisp_free(l->own);
	l->own = NULL;
	l->nown = l->own_cap = 0;
}

static void leaving_unwatch(struct leaving *l)
{
	struct handover *h = l->h;
	for (size_t i = 0; i < l->nwatch; i++)
		tree_unsubscribe(h->leaving_filters, l->watch[i]);
	wisp_free(l->watch);
	l->watch = NULL;
	l->nwatch = 0;
	if (l->watch_failed)
		h->nwatch_failed--;
	l->watch_failed = false;
}

/* Puts the session's ordinary filters (a shared group picks its member
 * elsewhere) in leaving_filters, as they are at the export: its client is
 * at the other node, and while it is back here (s->conn) nothing is
 * recorded. (A filter it subscribed to while back here is not watched
 * should it leave again before this copy ends; the copy it would record
 * for has been claimed back by then.) */
static void leaving_watch(struct leaving *l)
{
	struct handover *h = l->h;
	leaving_unwatch(l);
	const struct session *s = sess_find(&h->b->sessions, l->id, l->id_len);
	if (!s)
		return;
	size_t n = 0;
	const struct list_node *ln;
	for (ln = s->subs.next; ln != &s->subs; ln = ln->next)
		n++;
	if (!h->leaving_filters)
		h->leaving_filters = tree_new();
	l->watch = n ? wisp_malloc(n * sizeof *l->watch) : NULL;
	bool failed = !h->leaving_filters || (n && !l->watch);
	for (ln = s->subs.next; !failed && ln != &s->subs; ln = ln->next) {
		const struct sess_sub *sub = container_of(ln, struct sess_sub, link);
		if (tree_sub_options(&sub->handle) & SESS_SUBOPT_SHARED)
			continue;
		struct tree_sub *ts = tree_subscribe(h->leaving_filters, sess_sub_filter(sub), sess_sub_filter_len(sub),
						     l, 0, 0);
		if (!ts)
			failed = true;
		else
			l->watch[l->nwatch++] = ts;
	}
	if (failed) {
		leaving_unwatch(l);
		l->watch_failed = true;
		h->nwatch_failed++;
	}
}

void ho_leaving_free(struct leaving *l)
{
	loop_timer_stop(l->h->b->loop, &l->timer);
	list_remove(&l->link);
	leaving_unwatch(l);
	leaving_drop_recs(l);
	wisp_free(l->asker_set);
	wisp_free(l->reply);
	wisp_free(l);
}

static void on_leaving_timeout(struct loop *lp, struct loop_timer *t)
{
	(void)lp;
	struct leaving *l = container_of(t, struct leaving, timer);
	log_limited("cluster handover unconfirmed", LOG_WARNING, "cluster",
		    "client %.*s: the node that fetched its session did not confirm it: the session stays here too",
		    (int)l->id_len, l->id);
	ho_leaving_free(l);
}

/* The records, gathered whole before the first chunk leaves: a session
 * over the cap is refused before anything was sent. */
struct export_buf {
	uint8_t *p;
	size_t len, cap, max;
};

static int put_record(void *ctx, const struct store_rec *r)
{
	struct export_buf *x = ctx;
	ssize_t n = store_rec_size(r);
	if (n < 0)
		return (int)n;
	if (x->len + (size_t)n > x->max)
		return WISP_ELIMIT;
	if (x->len + (size_t)n > x->cap) {
		size_t cap = x->cap ? x->cap : HANDOVER_CHUNK;
		while (cap < x->len + (size_t)n)
			cap *= 2;
		uint8_t *nb = wisp_realloc(x->p, cap);
		if (!nb)
			return WISP_ENOMEM;
		x->p = nb;
		x->cap = cap;
	}
	n = store_rec_encode(r, 0, x->p + x->len, x->cap - x->len);
	if (n < 0)
		return (int)n;
	x->len += (size_t)n;
	return 0;
}

/* x in chunks to `reply`, of Wisp-Kind `kind`; the last one with the extra
 * headers `last_hdrs` (name, value pairs, NULL-ended; NULL: none). */
static void send_chunks(struct handover *h, const char *reply, const struct export_buf *x, const char *kind,
			const char *const *last_hdrs)
{
	uint32_t seq = 0;
	size_t off = 0;
	do {
		size_t n = x->len - off < HANDOVER_CHUNK ? x->len - off : HANDOVER_CHUNK;
		natsMsg *nm = NULL;
		char seqs[16];
		snprintf(seqs, sizeof seqs, "%" PRIu32, seq++);
		natsStatus st = ho_publish(h, reply, NULL, kind, x->p + off, n, &nm);
		if (st == NATS_OK)
			st = natsMsgHeader_Set(nm, "Wisp-Seq", seqs);
		if (st == NATS_OK)
			st = natsMsgHeader_Set(nm, "Wisp-Last", off + n == x->len ? "1" : "0");
		for (size_t i = 0; st == NATS_OK && off + n == x->len && last_hdrs && last_hdrs[i]; i += 2)
			st = natsMsgHeader_Set(nm, last_hdrs[i], last_hdrs[i + 1]);
		if (st == NATS_OK)
			st = ho_publish_msg(h, &nm);
		natsMsg_Destroy(nm);
		if (st != NATS_OK) {
			h->b->stats.cluster.send_failed++;
			return; /* the asker falls back at its timeout; the session stays here */
		}
		off += n;
	} while (off < x->len);
}

void ho_on_request(struct handover *h, natsMsg *nm)
{
	struct broker *b = h->b;
	const char *reply = natsMsg_GetReply(nm);
	const char *asker = wire_header(nm, "Wisp-Node");
	int len = natsMsg_GetDataLength(nm);
	if (!reply || !asker || len <= 0)
		return;
	const char *id = natsMsg_GetData(nm);
	const char *user = wire_header(nm, "Wisp-User");
	struct session *s = sess_find(&b->sessions, id, (size_t)len);
	if (s && s->owned && !((!user && !s->username) || (user && s->username && strcmp(user, s->username) == 0))) {
		log_limited("cluster handover refused", LOG_NOTICE, "cluster",
			    "client %s: node '%s' asked for its session for another user: refused", s->client_id, asker);
		ho_publish(h, reply, NULL, "refused", NULL, 0, NULL);
		return;
	}
	if (s && s->conn) {
		log_limited("cluster_takeover", LOG_NOTICE, "cluster", "client %s: taken over by a connection at node '%s'",
			    s->client_id, asker);
		/* [MQTT-3.1.4-3] as on one node: 0x8E for v5, a close for 3.1.1. */
		broker_drop(b, s->conn, REASON_SESSION_TAKEN_OVER, "session taken over at another node");
		b->stats.cluster.taken_over++;
		s = sess_find(&b->sessions, id, (size_t)len); /* a clean one is gone now */
	}
	if (!s || s->clean) {
		ho_publish(h, reply, NULL, "none", NULL, 0, NULL);
		return;
	}
	struct export_buf x = {.max = b->cfg->cluster.handover_max_bytes};
	int rc = persist_session_export(b, s, put_record, &x);
	if (rc != 0) {
		log_limited("cluster handover refused", LOG_WARNING, "cluster",
			    "client %s: its session cannot move to node '%s': %s", s->client_id, asker,
			    rc == WISP_ELIMIT ? "over cluster.handover_max_bytes" : wisp_strerror(rc));
		ho_publish(h, reply, NULL, rc == WISP_ELIMIT ? "too-big" : "none", NULL, 0, NULL);
		wisp_free(x.p);
		return;
	}
	struct leaving *l = leaving_find(h, id, (size_t)len);
	if (!l) {
		l = wisp_calloc(1, sizeof *l + (size_t)len);
		if (l) {
			l->h = h;
			l->id_len = (size_t)len;
			memcpy(l->id, id, (size_t)len);
			list_push_back(&h->leavings, &l->link);
		}
	}
	if (l) {
		loop_timer_stop(b->loop, &l->timer);
		/* What reaches the copy from now on is recorded for the tail. */
		leaving_drop_recs(l);
		leaving_watch(l);
		l->state = LEAVING_SENT;
		/* The asker's timeout, plus its store's time to sync and its wait
		 * for the other nodes to know the session's filters (a node just
		 * back on NATS first settles for an interval). */
		const struct config_cluster *cc = &b->cfg->cluster;
		loop_timer_start(b->loop, &l->timer,
				 (uint64_t)cc->handover_timeout + cc->interest_ack_timeout + cc->interest_interval + 3u,
				 on_leaving_timeout);
	}
	/* The cut: what this node routed from the stream so far, and the
	 * number of its own last message on NATS (handover.h). Out of memory,
	 * or no stream: no cut (the asker then skips nothing). */
	char *set = l ? ho_routed_set(h) : NULL;
	char wseq[24];
	snprintf(wseq, sizeof wseq, "%" PRIu64, h->wseq ? *h->wseq : 0);
	const char *cut[] = {"Wisp-Cut", set, "Wisp-Run", h->run ? h->run : "", "Wisp-Cut-Seq", wseq, NULL};
	send_chunks(h, reply, &x, "chunk", set ? cut : NULL);
	wisp_free(set);
	wisp_free(x.p);
}

/* Ends this node's copy of a session now at another node. */
static void end_copy(struct handover *h, const char *id, size_t len, const char *to)
{
	struct broker *b = h->b;
	struct leaving *l = leaving_find(h, id, len);
	if (l)
		ho_leaving_free(l);
	struct session *s = sess_find(&b->sessions, id, len);
	if (!s || s->conn)
		return; /* already ended by a claim, or its client came back here meanwhile */
	/* The client reconnected (elsewhere), so a delayed will is not due
	 * [MQTT-3.1.3-9]; the session goes on at the other node. */
	if (s->v5 && s->v5->will) {
		SESS_OBSERVE(&b->observer, will_del, s);
		msg_unref(s->v5->will);
		s->v5->will = NULL;
	}
	session_v5_end(b, s);
	SESS_OBSERVE(&b->observer, session_del, s);
	/* Its messages went with it: none is handed to another member of a
	 * shared group here (the session's end would do that), which would
	 * deliver it a second time. */
	delivery_clear(s, &b->dlim);
	sess_destroy(&b->sessions, b->subs, s);
	b->stats.cluster.sessions_out++;
	log_msg(LOG_INFO, "cluster", "client %.*s: its session moved to node '%s'", (int)len, id, to);
}

/* Whether m reached the leaving session's copy: the session is here, its
 * client is not (back here, nothing is recorded), and one of its ordinary
 * subscriptions matches (a shared group picks its member elsewhere; QoS 0
 * is at most once and never recorded). Asked of the leavings the tree
 * matched (their filters at the export: one may be gone since), or of
 * each leaving whose filters are not in the tree. */
static bool copy_wants(const struct leaving *l, const struct msg *m)
{
	if (l->state == LEAVING_TAIL_SENT)
		return false;
	const struct session *s = sess_find(&l->h->b->sessions, l->id, l->id_len);
	if (!s || s->conn)
		return false;
	const struct list_node *n;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		const struct sess_sub *sub = container_of(n, struct sess_sub, link);
		if (!(tree_sub_options(&sub->handle) & SESS_SUBOPT_SHARED) &&
		    topic_matches(sess_sub_filter(sub), sess_sub_filter_len(sub), msg_topic(m), m->topic_len))
			return true;
	}
	return false;
}

static void record(struct leaving *l, struct msg *m, uint64_t seq, uint64_t wseq, bool own)
{
	struct broker *b = l->h->b;
	size_t size = m->topic_len + m->payload_len + m->props_len + 64;
	if (l->bytes + size > b->cfg->cluster.handover_max_bytes || (l->nrecs == l->cap && l->cap >= SIZE_MAX / 2)) {
		l->overflow++;
		return;
	}
	if (l->nrecs == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct tail_rec *v = wisp_realloc(l->recs, cap * sizeof *v);
		if (!v) {
			l->overflow++;
			return;
		}
		l->recs = v;
		l->cap = cap;
	}
	if (own && wseq) {
		if (l->nrecs >= UINT32_MAX) {
			l->overflow++;
			return;
		}
		if (l->nown == l->own_cap) {
			size_t cap = l->own_cap ? l->own_cap * 2 : 16;
			uint32_t *v = wisp_realloc(l->own, cap * sizeof *v);
			if (!v) {
				l->overflow++;
				return;
			}
			l->own = v;
			l->own_cap = cap;
		}
		l->own[l->nown++] = (uint32_t)l->nrecs;
	}
	l->recs[l->nrecs++] = (struct tail_rec){msg_ref(m), seq, wseq, own};
	l->bytes += size;
}

bool handover_recording(const struct handover *h) { return h && !list_empty(&h->leavings); }

static void catch_up(struct leaving *l);

/* After the stream messages routed here in a turn: a leaving session
 * waiting for this node to have routed the asker's set may be ready.
 * Once a turn, not once a message: each look checks the whole set. */
static void catch_up_all(struct handover *h)
{
	struct list_node *n, *next;
	for (n = h->leavings.next; n != &h->leavings; n = next) {
		next = n->next;
		struct leaving *l = container_of(n, struct leaving, link);
		if (l->state == LEAVING_CATCHING_UP)
			catch_up(l);
	}
}

struct record_pass {
	struct handover *h;
	struct msg *m;
	uint64_t seq, wseq, gen;
	bool own;
};

static void record_matched(void *subscriber, uint8_t options, uint32_t subscription_id, void *ctx)
{
	(void)options;
	(void)subscription_id;
	struct leaving *l = subscriber;
	struct record_pass *p = ctx;
	if (l->matched_gen == p->gen)
		return; /* two of its filters match */
	l->matched_gen = p->gen;
	if (copy_wants(l, p->m))
		record(l, p->m, p->seq, p->wseq, p->own);
}

/* Records m for every leaving session whose copy it reached: one match in
 * the leaving sessions' filters, whatever their number (a node being
 * drained hands over thousands at once). */
static void record_all(struct handover *h, struct msg *m, uint64_t seq, uint64_t wseq, bool own)
{
	if (!m->qos)
		return;
	struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
	int nl = h->leaving_filters ? topic_split(msg_topic(m), m->topic_len, levels, TOPIC_MAX_LEVELS_HARD) : 0;
	struct record_pass p = {h, m, seq, wseq, ++h->match_gen, own};
	if (nl > 0)
		tree_match(h->leaving_filters, levels, (size_t)nl, record_matched, &p);
	if (!h->nwatch_failed)
		return;
	struct list_node *n;
	for (n = h->leavings.next; n != &h->leavings; n = n->next) {
		struct leaving *l = container_of(n, struct leaving, link);
		if (l->watch_failed && copy_wants(l, m))
			record(l, m, seq, wseq, own);
	}
}

static void on_catch_up_due(struct loop *lp, struct loop_timer *t)
{
	(void)lp;
	catch_up_all(container_of(t, struct handover, catch_up_timer));
}

static void catch_up_soon(struct handover *h)
{
	if (!loop_timer_armed(&h->catch_up_timer))
		loop_timer_soon(h->b->loop, &h->catch_up_timer, on_catch_up_due);
}

void handover_routed(struct handover *h, struct msg *m, uint64_t seq)
{
	if (!handover_recording(h))
		return;
	record_all(h, m, seq, 0, false);
	catch_up_soon(h);
}

void handover_published(struct handover *h, struct msg *m, uint64_t wseq)
{
	if (handover_recording(h))
		record_all(h, m, 0, wseq, true);
}

/* The record of its own message numbered wseq, or NULL. */
static struct tail_rec *own_rec(struct leaving *l, uint64_t wseq)
{
	size_t lo = 0, hi = l->nown;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct tail_rec *r = &l->recs[l->own[mid]];
		if (r->wseq == wseq)
			return r;
		if (r->wseq < wseq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

void handover_own_routed(struct handover *h, natsMsg *nm, uint64_t seq)
{
	if (!handover_recording(h) || !h->run)
		return;
	const char *node = NULL, *run = NULL;
	size_t run_len = 0;
	uint64_t num = 0;
	if (ho_origin_of(nm, &node, &run, &run_len, &num) && strlen(h->run) == run_len && memcmp(h->run, run, run_len) == 0) {
		struct list_node *n;
		for (n = h->leavings.next; n != &h->leavings; n = n->next) {
			struct tail_rec *r = own_rec(container_of(n, struct leaving, link), num);
			if (r)
				r->seq = seq;
		}
	}
	catch_up_soon(h);
}

/*
 * The tail: of what reached the copy since the export, the stream messages
 * the asker passed before it had the session (their sequence in its set),
 * and this node's own messages that went to no stream. A stream message
 * not in the asker's set is routed there itself; this node's own message
 * whose sequence it never saw come back is not in that set either (this
 * node routed all of the set first).
 */
static void send_tail(struct leaving *l, bool caught_up)
{
	struct handover *h = l->h;
	struct broker *b = h->b;
	struct export_buf x = {.max = b->cfg->cluster.handover_max_bytes};
	size_t sent = 0, lost = l->overflow;
	struct seq_set asker; /* parsed once: a malformed set holds nothing, as seq_text_has says */
	bool parsed = seq_set_parse(l->asker_set, &asker);
	for (size_t i = 0; i < l->nrecs; i++) {
		const struct tail_rec *r = &l->recs[i];
		bool wanted = r->own && !r->wseq ? true : r->seq && parsed && seq_set_has(&asker, r->seq);
		if (!wanted)
			continue;
		if (persist_msg_export(b, r->m, ++sent, put_record, &x) != 0) {
			lost++;
			sent--;
		}
	}
	if (lost || !caught_up) {
		b->stats.cluster.handover_tail_lost += lost;
		log_limited("cluster handover tail", LOG_WARNING, "cluster",
			    "client %.*s: %zu messages of the handover window not passed on to node '%s'%s (counted in "
			    "$SYS/broker/cluster/sessions/tail_lost)", (int)l->id_len, l->id, lost, l->asker,
			    caught_up ? "" : ", and this node's stream consumer did not catch up within "
			    "cluster.handover_timeout: more may be missing");
	}
	send_chunks(h, l->reply, &x, "tail", NULL);
	wisp_free(x.p);
	log_msg(LOG_INFO, "cluster", "client %.*s: %zu messages of the handover window passed on to node '%s'",
		(int)l->id_len, l->id, sent, l->asker);
	leaving_drop_recs(l);
	l->state = LEAVING_TAIL_SENT;
	loop_timer_stop(b->loop, &l->timer);
	loop_timer_start(b->loop, &l->timer, (uint64_t)b->cfg->cluster.handover_timeout + 2u, on_leaving_timeout);
}

static void on_catch_up_timer(struct loop *lp, struct loop_timer *t)
{
	(void)lp;
	catch_up(container_of(t, struct leaving, timer));
}

/* The tail goes once this node routed every stream message the asker had
 * routed at its import (looked at in the turn after each that routed stream
 * messages, and every second), or, past cluster.handover_timeout, with what
 * it has. */
static void catch_up(struct leaving *l)
{
	struct handover *h = l->h;
	struct broker *b = h->b;
	bool caught_up = !h->durable || durable_routed_all(h->durable, l->asker_set);
	bool late = loop_now_ms(b->loop) - l->catch_since_ms >= (uint64_t)b->cfg->cluster.handover_timeout * 1000;
	if (caught_up || late) {
		send_tail(l, caught_up);
		return;
	}
	if (!loop_timer_armed(&l->timer))
		loop_timer_start(b->loop, &l->timer, 1, on_catch_up_timer);
}

void ho_on_done(struct handover *h, natsMsg *nm)
{
	struct broker *b = h->b;
	int len = natsMsg_GetDataLength(nm);
	if (len <= 0)
		return;
	const char *id = natsMsg_GetData(nm);
	const char *asker = wire_header(nm, "Wisp-Node");
	const char *cut = wire_header(nm, "Wisp-Cut");
	const char *reply = natsMsg_GetReply(nm);
	if (!cut || !reply) {
		/* The tail is stored there (Wisp-Tail), or there is no cut. */
		end_copy(h, id, (size_t)len, asker ? asker : "?");
		return;
	}
	struct leaving *l = leaving_find(h, id, (size_t)len);
	if (!l) {
		/* Not recorded (out of memory at the export, or its timer ran
		 * out): an empty tail, so that the asker goes on. */
		log_limited("cluster handover tail", LOG_WARNING, "cluster",
			    "client %.*s: node '%s' asks for the handover window's messages, which were not recorded "
			    "(its confirmation came late): some may be missing there", len, id, asker ? asker : "?");
		l = wisp_calloc(1, sizeof *l + (size_t)len);
		if (!l)
			return; /* the asker logs a missing tail; this copy stays */
		l->h = h;
		l->id_len = (size_t)len;
		memcpy(l->id, id, (size_t)len);
		list_push_back(&h->leavings, &l->link);
		leaving_watch(l);
	}
	wisp_free(l->asker_set);
	wisp_free(l->reply);
	l->asker_set = wisp_strndup(cut, strlen(cut));
	l->reply = wisp_strndup(reply, strlen(reply));
	snprintf(l->asker, sizeof l->asker, "%s", asker ? asker : "?");
	if (!l->asker_set || !l->reply) {
		ho_leaving_free(l);
		return;
	}
	l->state = LEAVING_CATCHING_UP;
	l->catch_since_ms = loop_now_ms(b->loop);
	loop_timer_stop(b->loop, &l->timer);
	catch_up(l);
}
