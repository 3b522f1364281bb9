/*
 * The JetStream worker of jetstream.h. Runs on its own thread plus cnats's
 * callbacks; touches the loop's state only through the two inboxes.
 *
 * The acks inbox must hold every ticket that can be outstanding at once
 * plus the events (the loop sizes it out_cap), so a ticket push never
 * fails; the msgs inbox may refuse (JetStream redelivers what it refused).
 */
#include "jetstream.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "dormant.h"
#include "err.h"
#include "groups.h"
#include "link.h"
#include "nats_auth.h"
#include "retire.h"
#include "wire.h"

/* How long cnats waits for a publish's ack before reporting it failed
 * (then it is published again, the same Nats-Msg-Id): long enough for a
 * loaded server, short enough that an ack lost with a connection is
 * noticed soon after reconnecting. */
#define PUBLISH_MAX_WAIT_MS 5000
/* How long the worker waits for the stream's consumer names (dormant.h). */
#define CONSUMER_LIST_WAIT_MS 1000
/* Pause between set-up attempts and before re-publishing failed messages. */
#define RETRY_MS 500
/* A holder consumer left by a node that died while making its consumer
 * again expires after this (remake_if_ahead). */
#define HOLDER_INACTIVE_S 60

/* A shared subscription group's one or two consumers (jsw_group_join). */
struct jgroup {
	struct jgroup *next;
	uint64_t id;
	char *name[2];             /* consumer (and queue) names; [1] NULL: no parent consumer */
	char *subject[2];          /* their filter subjects */
	natsSubscription *sub[2];
	bool bound;                /* both consumers made or found, and subscribed */
	bool told;                 /* jsw_group_ready said so */
	bool leaving;              /* the loop left it: the worker unbinds and frees it */
};

/* How long jsw_stop waits for the closed callbacks of its connections. */
#define CLOSED_CB_WAIT_S 2

struct ring {
	natsMsg **items;
	size_t cap, head, len;
};

/* A ring of tickets (new publishes, and replies: ticket << 1 | ok). */
struct tring {
	uint64_t *items;
	size_t cap, head, len;
};

enum slot_state { SLOT_EMPTY, SLOT_QUEUED, SLOT_SENT, SLOT_FAILED };

/* A publish waiting for JetStream's reply: the worker's (only the worker
 * destroys one, so a reply racing with a re-send never frees it early). */
struct slot {
	natsMsg *m;
	uint64_t ticket;
	int64_t sent_ms;
	uint8_t state;
};

struct jsw {
	natsOptions *opts;
	natsConnection *nc;          /* the worker's own connection */
	jsCtx *js;
	natsSubscription *sub;       /* the durable consumer's */
	natsSubscription *reply_sub; /* <inbox>.*: JetStream's publish replies */
	natsInbox *inbox;
	char *reply_prefix;          /* "<inbox>." */
	struct jsw_config cfg;
	char *stream, *consumer, *subjects;
	struct inbox *acks, *msgs;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	bool resetup;        /* the stream seems gone (a NATS server without its store): set up again */
	bool conn_closed;    /* cnats's closed callback ran: the worker looks at the connection */
	char closed_why[160]; /* why NATS closed it for good, for jsw_closed_reason */
	/* Connections made whose closed callback has not run yet (below 0 for
	 * a moment when it runs before the count is raised): jsw_stop waits
	 * for it, since the callback touches w. */
	int closed_cbs_due;
	uint64_t setups;     /* stream set-ups done, and the stream's last sequence at the latest */
	uint64_t stream_last_seq;
	bool recheck;        /* reconnected: is the node consumer ahead of the stream? */
	/* The node consumer made again (remake_if_ahead), and the last time's
	 * figures, for jsw_remade. */
	uint64_t remade;
	uint64_t remade_delivered, remade_last, remade_from;
	uint64_t groups_remade; /* shared groups' consumers made again so */
	/* The node consumer's ack floor (a stream sequence) at the last look:
	 * its bind, the check after a reconnect, or the loop's ask
	 * (jsw_ask_ack_floor), answered at once. */
	uint64_t ack_floor;
	bool ack_floor_known;
	bool ack_floor_asked;
	/* Publishes given up as over the server's max_payload, and the last
	 * one's payload and the limit then (jsw_too_large). */
	uint64_t too_large;
	int64_t too_large_bytes, too_large_limit;
	_Atomic int64_t max_payload; /* the connection's, at its last (re)connect; 0: not known yet */
	struct nats_link link;       /* nc up, for jsw_connected (link.h); down only by nc's own callbacks (under mu) */
	struct slot *slots;  /* out_cap, by ticket % out_cap */
	struct tring out;    /* tickets to publish (loop) */
	struct tring replies; /* JetStream's replies (cnats thread) */
	struct ring ack;     /* consumer acks (loop) */
	struct jgroup *groups; /* added by the loop, freed by the worker (under mu) */
	bool regroup;        /* reconnected: check that the groups' consumers still exist */
	bool groups_changed; /* the loop joined or left one */
	bool group_failed_said; /* JSW_EV_GROUP_FAILED raised, no bind has worked since */
	uint64_t list_asked;   /* the loop's last ask for the consumers' names (jsw_list_consumers) */
	uint64_t list_started; /* the last ask the worker began to answer */
	bool list_ready;       /* an answer waits for jsw_consumers_take */
	jsConsumerNamesList *list; /* its names (NULL: none) */
	uint64_t list_ask;     /* the ask it answers */
	/* The worker's subscriptions unsubscribed, destroyed NATS_RETIRE_MS
	 * later on its own wake-ups (it wakes every RETRY_MS at the latest),
	 * or handed to the cluster's list by jsw_stop (retire.h). The
	 * worker's only; jsw_stop's after the join. */
	struct nats_retire retired;
};

static int tring_init(struct tring *r, size_t cap)
{
	r->items = wisp_calloc(cap, sizeof *r->items);
	r->cap = cap;
	r->head = r->len = 0;
	return r->items ? 0 : WISP_ENOMEM;
}

/* Under mu. false: full (the caller says what that costs). */
static bool tring_push(struct tring *r, uint64_t v)
{
	if (r->len == r->cap)
		return false;
	r->items[(r->head + r->len++) % r->cap] = v;
	return true;
}

static bool tring_pop(struct tring *r, uint64_t *out)
{
	if (!r->len)
		return false;
	*out = r->items[r->head];
	r->head = (r->head + 1) % r->cap;
	r->len--;
	return true;
}

static int ring_init(struct ring *r, size_t cap)
{
	r->items = wisp_calloc(cap, sizeof *r->items);
	r->cap = cap;
	r->head = r->len = 0;
	return r->items ? 0 : WISP_ENOMEM;
}

/* Under mu. Grows: each group's consumer adds its MaxAckPending to what
 * may wait; out of memory, the message is destroyed unacked (JetStream
 * delivers it again, and the loop takes that for a redelivery). */
static void ring_push(struct ring *r, natsMsg *m)
{
	if (r->len == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		natsMsg **v = wisp_malloc(cap * sizeof *v);
		if (!v) {
			natsMsg_Destroy(m);
			return;
		}
		for (size_t i = 0; i < r->len; i++)
			v[i] = r->items[(r->head + i) % r->cap];
		wisp_free(r->items);
		r->items = v;
		r->cap = cap;
		r->head = 0;
	}
	r->items[(r->head + r->len++) % r->cap] = m;
}

static natsMsg *ring_pop(struct ring *r)
{
	if (!r->len)
		return NULL;
	natsMsg *m = r->items[r->head];
	r->head = (r->head + 1) % r->cap;
	r->len--;
	return m;
}

static void ring_free(struct ring *r)
{
	natsMsg *m;
	while (r->items && (m = ring_pop(r)))
		natsMsg_Destroy(m);
	wisp_free(r->items);
	r->items = NULL;
	r->cap = 0;
}

/* ---- cnats threads ---- */

static bool has_error(const char *data, size_t len)
{
	static const char key[] = "\"error\"";
	for (size_t i = 0; i + sizeof key - 1 <= len; i++)
		if (memcmp(data + i, key, sizeof key - 1) == 0)
			return true;
	return false;
}

/* JetStream's reply to a publish, on <inbox>.<ticket>: a pub ack
 * ({"stream":..,"seq":..}, also for a duplicate of an id already stored),
 * an error ({"error":..}), or an empty 503 status when no stream listens. */
static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	(void)nc;
	(void)sub;
	struct jsw *w = closure;
	const char *subj = natsMsg_GetSubject(m);
	const char *dot = strrchr(subj, '.');
	uint64_t ticket = dot ? strtoull(dot + 1, NULL, 10) : 0;
	const char *data = natsMsg_GetData(m);
	int len = natsMsg_GetDataLength(m);
	bool ok = len > 0 && data && !has_error(data, (size_t)len);
	natsMsg_Destroy(m);
	if (!ticket)
		return;
	pthread_mutex_lock(&w->mu);
	if (!ok && len <= 0)
		w->resetup = true;
	/* Full: the reply is lost, the publish times out and goes again. */
	if (tring_push(&w->replies, ticket << 1 | (ok ? 1u : 0u)))
		pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void on_js_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	(void)nc;
	(void)sub;
	struct jsw *w = closure;
	if (!inbox_push_sized(w->msgs, m, wire_msg_bytes(m)))
		natsMsg_Destroy(m); /* unacked: JetStream delivers it again */
}

/* ---- the worker thread ---- */

static natsStatus ensure_stream(struct jsw *w, uint64_t *last_seq)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	*last_seq = 0;
	natsStatus st = js_GetStreamInfo(&si, w->js, w->stream, NULL, &jerr);
	if (st == NATS_OK) {
		*last_seq = si->State.LastSeq;
		jsStreamInfo_Destroy(si);
		return NATS_OK;
	}
	jsStreamConfig sc;
	jsStreamConfig_Init(&sc);
	const char *subjects[1] = {w->subjects};
	sc.Name = w->stream;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Retention = js_InterestPolicy;
	sc.Storage = js_FileStorage;
	sc.Replicas = w->cfg.replicas;
	sc.MaxAge = w->cfg.max_age_s * 1000000000LL;
	/* JetStream refuses a duplicate window longer than the max age. */
	sc.Duplicates = (w->cfg.duplicate_window_s < w->cfg.max_age_s ? w->cfg.duplicate_window_s
								       : w->cfg.max_age_s) * 1000000000LL;
	st = js_AddStream(&si, w->js, &sc, NULL, &jerr);
	if (st == NATS_OK)
		jsStreamInfo_Destroy(si);
	else if (jerr == JSStreamNameExistErr)
		st = NATS_OK; /* another node made it meanwhile */
	return st;
}

/* Subscribes to the existing push consumer `name` (its messages to
 * on_js_msg, acked by the loop), as a member of `queue` when not NULL. */
static natsStatus bind_consumer(struct jsw *w, const char *name, const char *queue, const char *subject,
				natsSubscription **sub)
{
	jsErrCode jerr = 0;
	jsSubOptions so;
	jsSubOptions_Init(&so);
	so.Stream = w->stream;
	so.Consumer = name;
	so.Queue = queue;
	so.ManualAck = true;
	return js_Subscribe(sub, w->js, subject, on_js_msg, w, NULL, &so, &jerr);
}

/*
 * The node's durable push consumer, made here (js_AddConsumer) and bound
 * to, not made by js_Subscribe: a consumer js_Subscribe made is deleted by
 * natsSubscription_Unsubscribe, which a stopping node must call (a
 * subscription left open at close leaks cnats's close notice). Its
 * delivery subject is fixed, so a restarted node binds to it again.
 */
/* The node consumer's configuration; from = 0: from this node's start,
 * not from now (its clients may have subscribed, and other nodes
 * published, while the consumer was being made). deliver: 256 bytes. */
static void node_consumer_config(struct jsw *w, jsConsumerConfig *cc, char *deliver, uint64_t from)
{
	snprintf(deliver, 256, "_WISP_DELIVER.%s.%s", w->stream, w->consumer);
	jsConsumerConfig_Init(cc);
	cc->Durable = w->consumer;
	cc->DeliverSubject = deliver;
	if (from) {
		cc->DeliverPolicy = js_DeliverByStartSequence;
		cc->OptStartSeq = from;
	} else {
		cc->DeliverPolicy = js_DeliverByStartTime;
		cc->OptStartTime = w->cfg.start_ns;
	}
	cc->AckPolicy = js_AckExplicit;
	cc->AckWait = w->cfg.ack_wait_s * 1000000000LL;
	cc->MaxAckPending = (int64_t)w->cfg.ack_cap;
}

/* Where a consumer ahead of its stream (remake_if_ahead) starts again:
 * after its ack floor, at most after the stream's end; 0: not ahead. */
static uint64_t ahead_from(const jsConsumerInfo *ci, uint64_t last_seq)
{
	if (ci->Delivered.Stream <= last_seq)
		return 0;
	return (ci->AckFloor.Stream < last_seq ? ci->AckFloor.Stream : last_seq) + 1;
}

/* Without mu: a floor for the loop's window (jsw_ack_floor). Only ever
 * raised (a consumer made again has a lower one: what it delivers again
 * is deduplicated by time stamp, durable.c). */
static void note_floor(struct jsw *w, uint64_t floor)
{
	pthread_mutex_lock(&w->mu);
	if (!w->ack_floor_known || floor > w->ack_floor)
		w->ack_floor = floor;
	w->ack_floor_known = true;
	pthread_mutex_unlock(&w->mu);
}

/* What the node consumer has as acked, at or below the stream's end when
 * that is known (`last_seq`; UINT64_MAX: not): a consumer ahead of its
 * stream is made again from there (remake_if_ahead). */
static void note_ack_floor(struct jsw *w, const jsConsumerInfo *ci, uint64_t last_seq)
{
	uint64_t floor = ci->AckFloor.Stream < last_seq ? ci->AckFloor.Stream : last_seq;
	note_floor(w, floor);
}

/* Without mu: the loop's ask. Below the stream's first message nothing
 * comes again either, acked or not: a message left pending that aged out
 * of the stream (cluster.stream_max_age) would otherwise hold the floor
 * for good if JetStream kept it in the ack floor's way. Failed or
 * unanswered: the loop asks again. */
static void look_ack_floor(struct jsw *w)
{
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = CONSUMER_LIST_WAIT_MS; /* short: jsw_stop joins this thread */
	jsConsumerInfo *ci = NULL;
	jsStreamInfo *si = NULL;
	if (js_GetConsumerInfo(&ci, w->js, w->stream, w->consumer, &jo, NULL) == NATS_OK)
		note_ack_floor(w, ci, UINT64_MAX);
	if (js_GetStreamInfo(&si, w->js, w->stream, &jo, NULL) == NATS_OK && si->State.FirstSeq > 1)
		note_floor(w, si->State.FirstSeq - 1);
	jsConsumerInfo_Destroy(ci);
	jsStreamInfo_Destroy(si);
}

/* Makes consumer cc->Durable again, to start at `from` (remake_if_ahead,
 * and a shared group's). The holder keeps the messages from `from` on
 * meanwhile; it is this node's own (named after the node and the
 * consumer), so another node making the same group's consumer again at
 * the same time cannot delete it under this one. False: not done, try
 * again. */
static bool remake(struct jsw *w, jsConsumerConfig *cc, uint64_t from)
{
	char holder[512];
	snprintf(holder, sizeof holder, "%s%s-%s", DORMANT_HOLD_PREFIX, w->consumer, cc->Durable);
	jsConsumerConfig hc;
	jsConsumerConfig_Init(&hc);
	hc.Durable = holder;
	hc.DeliverPolicy = js_DeliverByStartSequence;
	hc.OptStartSeq = from;
	hc.AckPolicy = js_AckExplicit;
	hc.InactiveThreshold = (int64_t)HOLDER_INACTIVE_S * 1000000000LL;
	jsConsumerInfo *info = NULL;
	jsErrCode jerr = 0;
	natsStatus st = js_AddConsumer(&info, w->js, w->stream, &hc, NULL, &jerr);
	jsConsumerInfo_Destroy(info);
	info = NULL;
	if (st == NATS_OK)
		st = js_DeleteConsumer(w->js, w->stream, cc->Durable, NULL, &jerr);
	if (st == NATS_OK) {
		st = js_AddConsumer(&info, w->js, w->stream, cc, NULL, &jerr);
		jsConsumerInfo_Destroy(info);
	}
	if (st != NATS_OK)
		return false; /* the holder stays until its inactive threshold: time to try again */
	js_DeleteConsumer(w->js, w->stream, holder, NULL, &jerr);
	return true;
}

/*
 * Without mu. nats-server acknowledges a publish before its file store
 * wrote it (it writes a few milliseconds later), so one killed meanwhile
 * comes back with a stream that ends below what its consumers were given,
 * and gives those sequences to new messages. Its consumers' state
 * survives: the node consumer would count the new messages as delivered
 * and never send them. Made again from its ack floor, it sends them; a
 * holder consumer keeps the stream's messages while the node consumer is
 * gone (interest retention deletes what no consumer wants), and expires
 * on its own should this node die before it deletes it. What comes a
 * second time is deduplicated by the loop (durable.c). The consumer's
 * deliver subject is the same, so its subscription stays. False: try
 * again (when, its caller says: a set-up again, or the next sweep).
 */
static bool remake_if_ahead(struct jsw *w, const jsConsumerInfo *ci, uint64_t last_seq)
{
	uint64_t from = ahead_from(ci, last_seq);
	if (!from)
		return true;
	char deliver[256];
	jsConsumerConfig cc;
	node_consumer_config(w, &cc, deliver, from);
	if (!remake(w, &cc, from))
		return false;
	uint64_t delivered = ci->Delivered.Stream;
	pthread_mutex_lock(&w->mu);
	w->remade++;
	w->remade_delivered = delivered;
	w->remade_last = last_seq;
	w->remade_from = from;
	pthread_mutex_unlock(&w->mu);
	inbox_raise(w->acks, JSW_EV_REMADE);
	return true;
}

/* Without mu: after a reconnect, whether the server lost the stream's
 * last messages (remake_if_ahead). False: try again. */
static bool check_ahead(struct jsw *w)
{
	jsStreamInfo *si = NULL;
	jsConsumerInfo *ci = NULL;
	natsStatus st = js_GetStreamInfo(&si, w->js, w->stream, NULL, NULL);
	if (st == NATS_OK)
		st = js_GetConsumerInfo(&ci, w->js, w->stream, w->consumer, NULL, NULL);
	bool done = st == NATS_OK && remake_if_ahead(w, ci, si->State.LastSeq);
	if (done)
		note_ack_floor(w, ci, si->State.LastSeq);
	jsConsumerInfo_Destroy(ci);
	jsStreamInfo_Destroy(si);
	return done;
}

/* Without mu: an existing node consumer made with another ack wait or
 * MaxAckPending (cluster.ack_wait or inbound_queue changed since) is given
 * this run's. JetStream lets both change on a live consumer, but
 * nats-server 2.9 refuses any update of one made from a start time (as
 * the node consumer is: "start time can not be updated", it compares the
 * two times' addresses), so then it is made again from its ack floor, as
 * remake_if_ahead does: what it had delivered and this node had not acked
 * comes again, deduplicated (durable.c). Neither worked: it keeps its
 * own (the loop warns); the set-up goes on. */
static void update_limits(struct jsw *w, jsConsumerInfo *ci)
{
	jsConsumerConfig *cc = ci->Config;
	int64_t wait = w->cfg.ack_wait_s * 1000000000LL;
	int64_t cap = (int64_t)w->cfg.ack_cap;
	if (!cc || (cc->AckWait == wait && cc->MaxAckPending == cap))
		return;
	cc->AckWait = wait;
	cc->MaxAckPending = cap;
	jsConsumerInfo *up = NULL;
	jsErrCode jerr = 0;
	bool done = js_UpdateConsumer(&up, w->js, w->stream, cc, NULL, &jerr) == NATS_OK;
	jsConsumerInfo_Destroy(up);
	if (!done) {
		char deliver[256];
		jsConsumerConfig again;
		uint64_t from = ci->AckFloor.Stream + 1;
		node_consumer_config(w, &again, deliver, from);
		done = remake(w, &again, from);
	}
	inbox_raise(w->acks, done ? JSW_EV_LIMITS_SET : JSW_EV_LIMITS_KEPT);
}

static natsStatus ensure_consumer(struct jsw *w, uint64_t last_seq)
{
	if (w->sub) {
		/* Set up again (JetStream answered 503): bind afresh, to a new
		 * consumer if the old one went with its stream. */
		natsSubscription_Unsubscribe(w->sub);
		nats_retire_sub(&w->retired, &w->sub);
	}
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	natsStatus st = js_GetConsumerInfo(&ci, w->js, w->stream, w->consumer, NULL, &jerr);
	if (st == NATS_OK && !ahead_from(ci, last_seq))
		update_limits(w, ci); /* one made again below has them already */
	if (st == NATS_OK && !remake_if_ahead(w, ci, last_seq))
		st = NATS_ERR;
	else if (st != NATS_OK) {
		char deliver[256];
		jsConsumerConfig cc;
		node_consumer_config(w, &cc, deliver, 0);
		st = js_AddConsumer(&ci, w->js, w->stream, &cc, NULL, &jerr);
	}
	/* Known before the consumer delivers anything (durable.c raises its
	 * window to it first). */
	if (st == NATS_OK)
		note_ack_floor(w, ci, last_seq);
	jsConsumerInfo_Destroy(ci);
	if (st != NATS_OK)
		return st;
	return bind_consumer(w, w->consumer, NULL, w->subjects, &w->sub);
}

static void group_free(struct jgroup *g)
{
	for (int i = 0; i < 2; i++) {
		wisp_free(g->name[i]);
		wisp_free(g->subject[i]);
	}
	wisp_free(g);
}

/* Without mu (the worker's own fields). Unsubscribing a bound
 * subscription keeps its consumer (js_AddConsumer made it); it is
 * destroyed later (retire.h). */
static void group_unbind(struct jsw *w, struct jgroup *g)
{
	for (int i = 0; i < 2; i++)
		if (g->sub[i]) {
			natsSubscription_Unsubscribe(g->sub[i]);
			nats_retire_sub(&w->retired, &g->sub[i]);
		}
	g->bound = false;
}

static void group_consumer_config(struct jsw *w, struct jgroup *g, int i, jsConsumerConfig *cc, char *deliver,
				  uint64_t from)
{
	snprintf(deliver, 256, "_WISP_SHARE.%s.%s", w->stream, g->name[i]);
	jsConsumerConfig_Init(cc);
	cc->Durable = g->name[i];
	cc->DeliverSubject = deliver;
	cc->DeliverGroup = g->name[i];
	cc->FilterSubject = g->subject[i];
	if (from) {
		cc->DeliverPolicy = js_DeliverByStartSequence;
		cc->OptStartSeq = from;
	} else {
		cc->DeliverPolicy = js_DeliverNew;
	}
	cc->AckPolicy = js_AckExplicit;
	cc->AckWait = (int64_t)w->cfg.group_ack_wait_s * 1000000000LL;
	cc->MaxAckPending = (int64_t)w->cfg.ack_cap;
	cc->InactiveThreshold = (int64_t)w->cfg.group_inactive_s * 1000000000LL;
}

/* Without mu: a group's consumer ahead of the stream (remake_if_ahead's
 * case) is made again. Every bound node may find it so at once: one of
 * them makes it, the others find it made (not ahead any more), or make it
 * again in turn, which can give the group a message twice but loses none
 * (each node's holder keeps them). False: try again. */
static bool group_remake_if_ahead(struct jsw *w, struct jgroup *g, int i, const jsConsumerInfo *ci,
				  uint64_t last_seq)
{
	uint64_t from = ahead_from(ci, last_seq);
	if (!from)
		return true;
	char deliver[256];
	jsConsumerConfig cc;
	group_consumer_config(w, g, i, &cc, deliver, from);
	if (!remake(w, &cc, from))
		return false;
	pthread_mutex_lock(&w->mu);
	w->groups_remade++;
	pthread_mutex_unlock(&w->mu);
	inbox_raise(w->acks, JSW_EV_REMADE);
	return true;
}

/* Without mu: consumer i of g, found with ci, checked against the stream
 * (group_remake_if_ahead). False: JetStream did not answer, or the
 * consumer could not be made again: try again. */
static bool group_check_ahead(struct jsw *w, struct jgroup *g, int i, const jsConsumerInfo *ci)
{
	if (!ci->Delivered.Stream)
		return true; /* delivered nothing: cannot be ahead */
	jsStreamInfo *si = NULL;
	if (js_GetStreamInfo(&si, w->js, w->stream, NULL, NULL) != NATS_OK)
		return false;
	uint64_t last = si->State.LastSeq;
	jsStreamInfo_Destroy(si);
	return group_remake_if_ahead(w, g, i, ci, last);
}

/*
 * Without mu. Makes the group's consumer i, or finds it (another node
 * made it: every node asks for the same configuration, so JetStream takes
 * a second identical create as a find too), and queue-subscribes to its
 * deliver subject. New consumers deliver what is stored from now on: the
 * member's SUBACK waits for this (groups.h), so whatever is published
 * after it is the group's.
 */
static natsStatus group_bind_one(struct jsw *w, struct jgroup *g, int i)
{
	char deliver[256];
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	natsStatus st = js_GetConsumerInfo(&ci, w->js, w->stream, g->name[i], NULL, &jerr);
	if (st == NATS_OK && !group_check_ahead(w, g, i, ci))
		st = NATS_ERR;
	else if (st != NATS_OK) {
		jsConsumerConfig cc;
		group_consumer_config(w, g, i, &cc, deliver, 0);
		st = js_AddConsumer(&ci, w->js, w->stream, &cc, NULL, &jerr);
		if (st != NATS_OK) /* another node made it between the two calls */
			st = js_GetConsumerInfo(&ci, w->js, w->stream, g->name[i], NULL, &jerr);
	}
	jsConsumerInfo_Destroy(ci);
	if (st != NATS_OK)
		return st;
	return bind_consumer(w, g->name[i], g->name[i], g->subject[i], &g->sub[i]);
}

/* Under mu (dropped for cnats's calls): unbinds and frees the groups the
 * loop left, binds the new ones (and, after a reconnect, the ones whose
 * consumer went). Returns false when one could not be bound (retried). */
static bool groups_work(struct jsw *w)
{
	bool all = true;
	bool check = w->regroup;
	w->regroup = false;
	for (struct jgroup **pp = &w->groups; *pp && !w->stop;) {
		struct jgroup *g = *pp;
		if (g->leaving) {
			*pp = g->next;
			pthread_mutex_unlock(&w->mu);
			group_unbind(w, g);
			group_free(g);
			pthread_mutex_lock(&w->mu);
			continue;
		}
		if (g->bound && !check) {
			pp = &g->next;
			continue;
		}
		pthread_mutex_unlock(&w->mu);
		if (g->bound) {
			for (int i = 0; i < 2 && g->name[i]; i++) {
				jsConsumerInfo *ci = NULL;
				natsStatus got = js_GetConsumerInfo(&ci, w->js, w->stream, g->name[i], NULL, NULL);
				/* Deleted while this node was away, or ahead of the
				 * stream and not made again yet: bound (and
				 * checked) again below, or at the next sweep. */
				if (got == NATS_NOT_FOUND || (got == NATS_OK && !group_check_ahead(w, g, i, ci)))
					group_unbind(w, g);
				jsConsumerInfo_Destroy(ci);
			}
		}
		natsStatus st = NATS_OK;
#ifndef NDEBUG
		/* Debug builds: WISP_DEBUG_DELAY_GROUP_BIND binds a new group half
		 * a second late (under the default interest_ack_timeout), so that
		 * a test sees whether its member's SUBACK waits for it (e2e 31). */
		if (!g->bound && !g->told && getenv("WISP_DEBUG_DELAY_GROUP_BIND"))
			nanosleep(&(struct timespec){.tv_nsec = 500000000L}, NULL);
#endif
		if (!g->bound) {
			group_unbind(w, g);
			for (int i = 0; i < 2 && g->name[i] && st == NATS_OK; i++)
				st = group_bind_one(w, g, i);
			if (st != NATS_OK)
				group_unbind(w, g);
		}
		pthread_mutex_lock(&w->mu);
		if (st == NATS_OK && !g->bound) {
			g->bound = true;
			if (!g->told)
				inbox_raise(w->acks, JSW_EV_GROUP);
		}
		all = all && st == NATS_OK;
		pp = &g->next; /* the loop only adds at the head and never frees */
	}
	return all;
}

static void wait_ms(struct jsw *w, long ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (ms % 1000) * 1000000L;
	ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_cond_timedwait(&w->cv, &w->mu, &ts);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Under mu: slot `sl`'s message can never be published (over the
 * server's max_payload): it is destroyed and its ticket handed back as
 * done, so its publisher's ack, the forwarding queue behind it and the
 * slot are not held for ever; the loop counts and logs it
 * (JSW_EV_TOO_LARGE). */
static void give_up_too_large(struct jsw *w, struct slot *sl, int64_t limit)
{
	w->too_large++;
	w->too_large_bytes = natsMsg_GetDataLength(sl->m);
	w->too_large_limit = limit;
	natsMsg_Destroy(sl->m);
	sl->m = NULL;
	sl->state = SLOT_EMPTY;
	inbox_raise(w->acks, JSW_EV_TOO_LARGE);
	inbox_push(w->acks, (void *)(uintptr_t)sl->ticket);
}

/* Under mu; drops it to publish slot `sl`'s message (only the worker
 * frees one, so it stays valid). */
static void send_slot(struct jsw *w, struct slot *sl)
{
	sl->state = SLOT_SENT;
	sl->sent_ms = now_ms();
	natsMsg *m = sl->m;
	pthread_mutex_unlock(&w->mu);
	/* Disconnected: cnats buffers it (8 MiB) or refuses; refused or lost,
	 * it times out below and goes again. Over max_payload, cnats refuses
	 * it at once, and would at every try. */
	natsStatus st = natsConnection_PublishMsg(w->nc, m);
	int64_t limit = st == NATS_MAX_PAYLOAD ? natsConnection_GetMaxPayload(w->nc) : 0;
	pthread_mutex_lock(&w->mu);
	if (st == NATS_MAX_PAYLOAD)
		give_up_too_large(w, sl, limit);
}

/* Under mu: a reply came for a ticket. */
static void settle(struct jsw *w, uint64_t reply)
{
	uint64_t ticket = reply >> 1;
	struct slot *sl = &w->slots[ticket % w->cfg.out_cap];
	if (sl->state == SLOT_EMPTY || sl->ticket != ticket)
		return; /* a second reply (a re-send's) */
	if (!(reply & 1)) {
		sl->state = SLOT_FAILED;
		return;
	}
	natsMsg_Destroy(sl->m);
	sl->m = NULL;
	sl->state = SLOT_EMPTY;
	/* After the slot is free: the loop may reuse it once it has the ticket. */
	inbox_push(w->acks, (void *)(uintptr_t)ticket);
}

/* Under mu: publishes again what failed or had no reply in time (the
 * same Nats-Msg-Id: the stream keeps one copy). */
static void resend_due(struct jsw *w)
{
	int64_t now = now_ms();
	/* Oldest ticket first: the stream keeps what it stores in the order
	 * it stored it, and a publisher's messages should stay in theirs. */
	uint64_t first = UINT64_MAX;
	for (size_t i = 0; i < w->cfg.out_cap; i++)
		if (w->slots[i].state != SLOT_EMPTY && w->slots[i].ticket < first)
			first = w->slots[i].ticket;
	for (uint64_t t = first; first != UINT64_MAX && t - first < w->cfg.out_cap && !w->stop; t++) {
		struct slot *sl = &w->slots[t % w->cfg.out_cap];
		if (sl->ticket != t)
			continue;
		if (sl->state == SLOT_FAILED || (sl->state == SLOT_SENT && now - sl->sent_ms > PUBLISH_MAX_WAIT_MS))
			send_slot(w, sl);
	}
}

/* Under mu: a group bind failing starts an episode (said once), all
 * bound ends it. */
static void group_episode(struct jsw *w, bool failing)
{
	if (failing && !w->group_failed_said)
		inbox_raise(w->acks, JSW_EV_GROUP_FAILED);
	w->group_failed_said = failing;
}

/* Under mu, at the sweep: the stream's consumer names, when asked (at most
 * one request per sweep, so publishes and acks wait at most one round
 * trip for it). js_ConsumerNames pages past JetStream's 1,024 names per
 * answer. Failed: nothing is told; the loop asks again next interval. */
static void list_consumers(struct jsw *w)
{
	if (w->list_asked == w->list_started || w->stop)
		return;
	uint64_t ask = w->list_asked;
	w->list_started = ask;
	pthread_mutex_unlock(&w->mu);
	jsConsumerNamesList *list = NULL;
	jsErrCode jerr = 0;
	/* A short wait: jsw_stop joins this thread, and a request JetStream
	 * leaves unanswered (seen over TLS as a node stops) held a node's
	 * SIGTERM for the context's default 5 s. The loop asks again. */
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = CONSUMER_LIST_WAIT_MS;
	natsStatus st = js_ConsumerNames(&list, w->js, w->stream, &jo, &jerr);
	if (st == NATS_NOT_FOUND) /* no consumer at all */
		st = NATS_OK;
	pthread_mutex_lock(&w->mu);
	if (st != NATS_OK) {
		jsConsumerNamesList_Destroy(list);
		return;
	}
	jsConsumerNamesList_Destroy(w->list); /* an answer the loop did not take: this one is newer */
	w->list = list;
	w->list_ask = ask;
	w->list_ready = true;
	inbox_raise(w->acks, JSW_EV_CONSUMERS);
}

static void rejoin(struct jsw *w);

static void *run(void *arg)
{
	struct jsw *w = arg;
	bool ready = false, failed_said = false, groups_pending = false;
	bool recheck_pending = false; /* a check after a reconnect went unanswered: again at the next sweep */
	int64_t last_sweep = now_ms();
	int64_t rejoin_at = 0;                 /* 0: no rejoin due */
	int64_t rejoin_wait = NATS_REJOIN_FIRST_MS;
	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		uint64_t retire_at = nats_retire_next(&w->retired);
		if (retire_at && retire_at <= (uint64_t)now_ms()) {
			pthread_mutex_unlock(&w->mu); /* a destroy may wait for a callback that takes mu */
			nats_retire_due(&w->retired);
			pthread_mutex_lock(&w->mu);
		}
		if (w->resetup) {
			w->resetup = false;
			ready = false;
		}
		if (w->conn_closed) {
			w->conn_closed = false;
			pthread_mutex_unlock(&w->mu);
			const char *why = NULL;
			bool closed = natsConnection_Status(w->nc) == NATS_CONN_STATUS_CLOSED;
			if (closed && !rejoin_at) {
				natsStatus st = natsConnection_GetLastError(w->nc, &why);
				rejoin_at = now_ms() + rejoin_wait;
				pthread_mutex_lock(&w->mu);
				snprintf(w->closed_why, sizeof w->closed_why, "%s",
					 why && *why ? why : natsStatus_GetText(st));
				pthread_mutex_unlock(&w->mu);
				inbox_raise(w->acks, JSW_EV_CLOSED);
			}
			pthread_mutex_lock(&w->mu);
			if (closed)
				ready = false;
			continue;
		}
		if (rejoin_at) {
			/* Bounded backoff: a server that keeps refusing costs a
			 * connect every NATS_REJOIN_MAX_MS at most. */
			if (now_ms() < rejoin_at) {
				wait_ms(w, RETRY_MS);
				continue;
			}
			pthread_mutex_unlock(&w->mu);
			rejoin(w);
			pthread_mutex_lock(&w->mu);
			rejoin_at = 0;
			rejoin_wait = rejoin_wait * 2 < NATS_REJOIN_MAX_MS ? rejoin_wait * 2 : NATS_REJOIN_MAX_MS;
			/* Refused again: cnats closes it again (on_closed). */
			continue;
		}
		if (!ready) {
			pthread_mutex_unlock(&w->mu);
			natsStatus st = NATS_NOT_YET_CONNECTED;
			natsConnStatus cs = natsConnection_Status(w->nc);
			if (cs == NATS_CONN_STATUS_CLOSED) {
				/* Closed with no rejoin due (the close came before this
				 * thread looked, or a new one could not be made): one is. */
				pthread_mutex_lock(&w->mu);
				w->conn_closed = true;
				continue;
			}
			if (cs == NATS_CONN_STATUS_CONNECTED) {
				uint64_t last_seq;
				st = ensure_stream(w, &last_seq);
				if (st == NATS_OK) {
					/* Known before the consumer can deliver anything. */
					atomic_store_explicit(&w->max_payload, natsConnection_GetMaxPayload(w->nc),
							      memory_order_relaxed);
					pthread_mutex_lock(&w->mu);
					w->setups++;
					w->stream_last_seq = last_seq;
					pthread_mutex_unlock(&w->mu);
					st = ensure_consumer(w, last_seq);
				}
			}
			pthread_mutex_lock(&w->mu);
			if (st == NATS_OK) {
				w->recheck = false; /* ensure_consumer looked */
				recheck_pending = false;
				/* Bound again before READY: the forwarding queue drains
				 * after it, into the groups' consumers too. */
				for (struct jgroup *g = w->groups; g; g = g->next)
					g->bound = false;
				groups_pending = !groups_work(w);
				ready = true;
				rejoin_wait = NATS_REJOIN_FIRST_MS;
				inbox_raise(w->acks, JSW_EV_READY);
			} else {
				if (st != NATS_NOT_YET_CONNECTED && !failed_said) {
					failed_said = true;
					inbox_raise(w->acks, JSW_EV_SETUP_FAILED);
				}
				wait_ms(w, RETRY_MS);
				continue;
			}
		}
		uint64_t v;
		while (tring_pop(&w->replies, &v))
			settle(w, v);
		if (now_ms() - last_sweep >= RETRY_MS) {
			resend_due(w);
			if (groups_pending)
				groups_pending = !groups_work(w); /* a bind failed: again */
			group_episode(w, groups_pending);
			list_consumers(w);
			if (recheck_pending)
				w->recheck = true;
			last_sweep = now_ms();
			continue;
		}
		if (w->recheck) {
			/* At once after a reconnect, before new messages pass the
			 * consumer's old position; unanswered, at each sweep. Not a
			 * set-up again: that would bind the consumer afresh and
			 * leave what it delivered meanwhile to its ack wait. */
			w->recheck = false;
			pthread_mutex_unlock(&w->mu);
			recheck_pending = !check_ahead(w);
			pthread_mutex_lock(&w->mu);
			continue;
		}
		if (w->ack_floor_asked) {
			w->ack_floor_asked = false;
			pthread_mutex_unlock(&w->mu);
			look_ack_floor(w);
			pthread_mutex_lock(&w->mu);
			continue;
		}
		if (w->groups_changed || w->regroup) {
			w->groups_changed = false;
			groups_pending = !groups_work(w);
			group_episode(w, groups_pending);
			continue;
		}
		natsMsg *ack = ring_pop(&w->ack);
		if (ack) {
			pthread_mutex_unlock(&w->mu);
			/* A lost ack only means a redelivery, deduplicated. */
			natsMsg_Ack(ack, NULL);
			natsMsg_Destroy(ack);
			pthread_mutex_lock(&w->mu);
			continue;
		}
		if (tring_pop(&w->out, &v)) {
			struct slot *sl = &w->slots[v % w->cfg.out_cap];
			if (sl->state == SLOT_QUEUED && sl->ticket == v)
				send_slot(w, sl);
			continue;
		}
		wait_ms(w, RETRY_MS);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/*
 * The worker's own NATS connection, apart from the core one: JetStream's
 * API requests make cnats open an internal reply subscription that only
 * closing the connection ends, and with the core connection's global
 * delivery pool that close leaked cnats's close notice. Its own
 * connection, closed first, uses per-subscription delivery. It also keeps
 * JetStream traffic out of the core connection's figures (nats-server's
 * /connz shows it as "<node>-js").
 */
/* Only there to make a failed first connect retry in the background (as
 * groups.c's): with no callback cnats retries inside natsConnection_Connect,
 * on the loop's thread, for ever. run() notices the connection itself. */
static void on_connected(natsConnection *nc, void *closure)
{
	struct jsw *w = closure;
	atomic_store_explicit(&w->max_payload, natsConnection_GetMaxPayload(nc), memory_order_relaxed);
	pthread_mutex_lock(&w->mu);
	nats_link_set(&w->link, true); /* never of a replaced one: it was closed for good */
	w->regroup = true;
	w->recheck = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	inbox_raise(w->acks, JSW_EV_UP);
}

/* The loop keeps a node's QoS 1/2 messages in its store while this
 * connection is down (durable.c), so it hears of both changes. */
static void on_disconnected(natsConnection *nc, void *closure)
{
	struct jsw *w = closure;
	pthread_mutex_lock(&w->mu);
	if (nc == w->nc)
		nats_link_set(&w->link, false);
	pthread_mutex_unlock(&w->mu);
	inbox_raise(w->acks, JSW_EV_DOWN);
}

/* cnats gave the connection up (a server that refused it twice in a row:
 * credentials revoked, say): run() makes a new one. Also called late for
 * a connection already replaced: run() looks at the current one. */
static void on_closed(natsConnection *nc, void *closure)
{
	struct jsw *w = closure;
	pthread_mutex_lock(&w->mu);
	if (nc == w->nc)
		nats_link_set(&w->link, false);
	pthread_mutex_unlock(&w->mu);
	inbox_raise(w->acks, JSW_EV_DOWN);
	/* Last: once the count is down, jsw_stop may return and w go. */
	pthread_mutex_lock(&w->mu);
	w->conn_closed = true;
	w->closed_cbs_due--;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* A connection object now exists: its closed callback will run once. */
static void closed_cb_due(struct jsw *w)
{
	pthread_mutex_lock(&w->mu);
	w->closed_cbs_due++;
	pthread_mutex_unlock(&w->mu);
}

bool jsw_connected(struct jsw *w)
{
	return w && nats_link_up(&w->link);
}

void jsw_closed_reason(struct jsw *w, char *out, size_t cap)
{
	pthread_mutex_lock(&w->mu);
	snprintf(out, cap, "%s", w->closed_why);
	pthread_mutex_unlock(&w->mu);
}

static natsStatus connect_own(struct jsw *w, const char *urls, const char *name)
{
	natsStatus st = natsOptions_Create(&w->opts);
	if (st == NATS_OK)
		st = natsOptions_SetURL(w->opts, urls);
	if (st == NATS_OK)
		st = natsOptions_SetName(w->opts, name);
	char err[300];
	/* The core connection applied the same options first: a refusal here
	 * would have stopped the start there. */
	if (st == NATS_OK && w->cfg.auth && nats_auth_apply(w->opts, w->cfg.auth, w->cfg.signer, err, sizeof err) != 0)
		st = NATS_INVALID_ARG;
	/* As the core connection's (cluster.send_asap): publishes and acks
	 * written at once, on this worker's thread, not after cnats's
	 * flusher's 1 ms wait. */
	if (st == NATS_OK && w->cfg.auth)
		st = natsOptions_SetSendAsap(w->opts, w->cfg.auth->send_asap);
	/* cnats's shared delivery thread (the core connection's too), not one
	 * thread per subscription: each shared group's consumer is one, so a
	 * node holding cluster.max_groups groups had as many threads again
	 * (twice for "/#" filters). The callbacks only hand messages over. */
	if (st == NATS_OK)
		st = natsOptions_UseGlobalMessageDelivery(w->opts, true);
	if (st == NATS_OK)
		st = natsOptions_SetMaxReconnect(w->opts, -1);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectWait(w->opts, 500);
	if (st == NATS_OK)
		st = natsOptions_SetRetryOnFailedConnect(w->opts, true, on_connected, w);
	if (st == NATS_OK)
		st = natsOptions_SetDisconnectedCB(w->opts, on_disconnected, w);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectedCB(w->opts, on_connected, w);
	if (st == NATS_OK)
		st = natsOptions_SetClosedCB(w->opts, on_closed, w);
	if (st == NATS_OK) {
		natsConnection *nc = NULL;
		st = natsConnection_Connect(&nc, w->opts);
		pthread_mutex_lock(&w->mu);
		w->nc = nc;
		if (st == NATS_OK)
			nats_link_set(&w->link, true); /* at the first try: cnats calls no callback */
		pthread_mutex_unlock(&w->mu);
		if (st == NATS_NOT_YET_CONNECTED)
			st = NATS_OK; /* retried in the background; run() waits for it */
		if (st == NATS_OK)
			closed_cb_due(w);
	}
	return st;
}

/* The publish replies' subscription ("<inbox>.*") and the JetStream
 * context, on nc. A connection cnats already closed (a server that
 * refused its first connect) gets no subscription: run() makes it anew. */
static natsStatus bind_conn(struct jsw *w, natsConnection *nc, natsSubscription **reply_sub, jsCtx **js)
{
	char subject[160];
	snprintf(subject, sizeof subject, "%s*", w->reply_prefix);
	*reply_sub = NULL;
	natsStatus st = natsConnection_Subscribe(reply_sub, nc, subject, on_reply, w);
	if (st != NATS_OK && natsConnection_Status(nc) == NATS_CONN_STATUS_CLOSED) {
		*reply_sub = NULL;
		st = NATS_OK;
	}
	if (st == NATS_OK)
		st = natsConnection_JetStream(js, nc, NULL);
	return st;
}

/*
 * Worker thread, mu not held: replaces the connection cnats closed for
 * good with a new one made from the same options (retried in the
 * background as at start). The old one's subscriptions deliver nothing
 * more once it is closed; a callback of it still running only touches w,
 * which outlives it, and the messages it handed over keep their own
 * references. Publishes waiting in the slots go on the new one. On
 * failure (out of memory) the closed one stays, for the next try.
 */
static void rejoin(struct jsw *w)
{
	natsConnection *nc = NULL;
	natsSubscription *reply_sub = NULL;
	jsCtx *js = NULL;
	natsStatus st = natsConnection_Connect(&nc, w->opts);
	bool connected = st == NATS_OK;
	if (st == NATS_NOT_YET_CONNECTED)
		st = NATS_OK;
	if (st == NATS_OK)
		closed_cb_due(w);
	if (st == NATS_OK)
		st = bind_conn(w, nc, &reply_sub, &js);
	if (st != NATS_OK) {
		natsSubscription_Destroy(reply_sub);
		jsCtx_Destroy(js);
		if (nc) {
			natsConnection_Close(nc);
			natsConnection_Destroy(nc);
		}
		return;
	}
	/* Closed with their connection (cnats removed them from its map);
	 * destroyed later all the same, as any other (retire.h). */
	nats_retire_sub(&w->retired, &w->sub);
	nats_retire_sub(&w->retired, &w->reply_sub);
	jsCtx_Destroy(w->js);
	natsConnection *old = w->nc;
	pthread_mutex_lock(&w->mu);
	w->nc = nc;
	if (connected)
		nats_link_set(&w->link, true); /* at the first try: cnats calls no callback */
	w->sub = NULL;
	w->reply_sub = reply_sub;
	w->js = js;
	pthread_mutex_unlock(&w->mu);
	natsConnection_Destroy(old);
}

int jsw_start(struct jsw **out, const char *urls, const struct jsw_config *cfg, struct inbox *acks,
	      struct inbox *msgs)
{
	*out = NULL;
	struct jsw *w = wisp_calloc(1, sizeof *w);
	if (!w)
		return WISP_ENOMEM;
	w->cfg = *cfg;
	w->acks = acks;
	w->msgs = msgs;
	pthread_mutex_init(&w->mu, NULL);
	atomic_init(&w->max_payload, 0);
	pthread_cond_init(&w->cv, NULL);
	nats_retire_init(&w->retired, nats_retire_monotonic_ms, NULL, NULL);
	w->retired.off_loop = true; /* the worker thread's (retire.h) */
	size_t slen = strlen(cfg->stream);
	w->stream = wisp_strndup(cfg->stream, slen);
	w->consumer = wisp_strndup(cfg->consumer, strlen(cfg->consumer));
	w->subjects = wisp_malloc(slen + 3);
	w->slots = wisp_calloc(cfg->out_cap, sizeof *w->slots);
	if (!w->stream || !w->consumer || !w->subjects || !w->slots || tring_init(&w->out, cfg->out_cap) != 0 ||
	    tring_init(&w->replies, 2 * cfg->out_cap) != 0 || ring_init(&w->ack, cfg->ack_cap * 2) != 0)
		goto fail;
	snprintf(w->subjects, slen + 3, "%s.>", cfg->stream);
	char name[192];
	snprintf(name, sizeof name, "%s-js", cfg->consumer);
	if (connect_own(w, urls, name) != NATS_OK || natsInbox_Create(&w->inbox) != NATS_OK)
		goto fail;
	size_t ilen = strlen(w->inbox);
	w->reply_prefix = wisp_malloc(ilen + 3);
	if (!w->reply_prefix)
		goto fail;
	snprintf(w->reply_prefix, ilen + 3, "%s.", w->inbox);
	if (bind_conn(w, w->nc, &w->reply_sub, &w->js) != NATS_OK)
		goto fail;
	if (pthread_create(&w->thread, NULL, run, w) != 0)
		goto fail;
	w->started = true;
	*out = w;
	return 0;
fail:
	jsw_free(w);
	return WISP_EIO;
}

const char *jsw_reply_prefix(const struct jsw *w) { return w->reply_prefix; }

void jsw_stop(struct jsw *w, struct nats_retire *retired)
{
	if (!w)
		return;
	if (w->started) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
		w->started = false;
	}
	/* Messages are destroyed before the connection closes: after cnats's
	 * library is shut down, destroying one touches freed state. Acks
	 * first, while their subscription exists. */
	ring_free(&w->ack);
	while (w->groups) {
		struct jgroup *g = w->groups;
		w->groups = g->next;
		group_unbind(w, g);
		group_free(g);
	}
	for (size_t i = 0; w->slots && i < w->cfg.out_cap; i++) {
		natsMsg_Destroy(w->slots[i].m);
		w->slots[i] = (struct slot){0};
	}
	/* Unsubscribed before the connection closes (a subscription still
	 * open then leaks cnats's close notice); the consumer stays (it was
	 * not made by js_Subscribe), so a restarted node resumes from it. */
	natsSubscription **subs[2] = {&w->sub, &w->reply_sub};
	for (int i = 0; i < 2; i++)
		if (*subs[i]) {
			natsSubscription_Unsubscribe(*subs[i]);
			nats_retire_sub(&w->retired, subs[i]);
		}
	/* Released here, not in jsw_free: cluster_stop's nats_CloseAndWait
	 * waits (5 s) for every cnats object, and jsw_free runs after it.
	 * The struct stays until jsw_free, for a callback still running. */
	jsCtx_Destroy(w->js);
	w->js = NULL;
	/* Cleared under mu first: the connection's callbacks compare with it. */
	pthread_mutex_lock(&w->mu);
	natsConnection *nc = w->nc;
	w->nc = NULL;
	pthread_mutex_unlock(&w->mu);
	if (nc) {
		natsConnection_Close(nc);
		natsConnection_Destroy(nc);
	}
	/* The worker is joined: its subscriptions, due or not, join the
	 * caller's list, destroyed once every connection is closed (NULL:
	 * jsw_free's call, after that). */
	if (retired)
		nats_retire_move(retired, &w->retired);
	else
		nats_retire_all(&w->retired);
	/* The closed callbacks (cnats's thread posts them) touch w: bounded,
	 * as cnats's own close wait is. */
	pthread_mutex_lock(&w->mu);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += CLOSED_CB_WAIT_S;
	while (w->closed_cbs_due > 0 && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
		;
	pthread_mutex_unlock(&w->mu);
}

void jsw_free(struct jsw *w)
{
	if (!w)
		return;
	jsw_stop(w, NULL);
	natsOptions_Destroy(w->opts);
	jsConsumerNamesList_Destroy(w->list);
	wisp_free(w->slots);
	wisp_free(w->out.items);
	wisp_free(w->replies.items);
	natsInbox_Destroy(w->inbox);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	wisp_free(w->reply_prefix);
	wisp_free(w->stream);
	wisp_free(w->consumer);
	wisp_free(w->subjects);
	wisp_free(w);
}

void jsw_publish(struct jsw *w, natsMsg *m, uint64_t ticket)
{
	pthread_mutex_lock(&w->mu);
	struct slot *sl = &w->slots[ticket % w->cfg.out_cap];
	/* The loop keeps at most out_cap outstanding and learns a ticket is
	 * done only after its slot was emptied, so the slot is free. */
	if (sl->state != SLOT_EMPTY || !tring_push(&w->out, ticket)) {
		pthread_mutex_unlock(&w->mu);
		natsMsg_Destroy(m);
		return;
	}
	*sl = (struct slot){.m = m, .ticket = ticket, .state = SLOT_QUEUED};
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

int64_t jsw_max_payload(struct jsw *w) { return atomic_load_explicit(&w->max_payload, memory_order_relaxed); }

void jsw_too_large(struct jsw *w, uint64_t *count, int64_t *bytes, int64_t *limit)
{
	pthread_mutex_lock(&w->mu);
	*count = w->too_large;
	*bytes = w->too_large_bytes;
	*limit = w->too_large_limit;
	pthread_mutex_unlock(&w->mu);
}

void jsw_ack(struct jsw *w, natsMsg *m)
{
	pthread_mutex_lock(&w->mu);
	ring_push(&w->ack, m);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

int jsw_group_join(struct jsw *w, uint64_t id, const char *name, const char *subject, const char *parent)
{
	struct jgroup *g = wisp_calloc(1, sizeof *g);
	if (!g)
		return WISP_ENOMEM;
	size_t nlen = strlen(name);
	g->id = id;
	g->name[0] = wisp_strndup(name, nlen);
	g->subject[0] = wisp_strndup(subject, strlen(subject));
	if (parent) {
		g->name[1] = wisp_malloc(nlen + 3);
		if (g->name[1])
			snprintf(g->name[1], nlen + 3, "%s-p", name);
		g->subject[1] = wisp_strndup(parent, strlen(parent));
	}
	if (!g->name[0] || !g->subject[0] || (parent && (!g->name[1] || !g->subject[1]))) {
		group_free(g);
		return WISP_ENOMEM;
	}
	pthread_mutex_lock(&w->mu);
	g->next = w->groups;
	w->groups = g;
	w->groups_changed = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

void jsw_group_leave(struct jsw *w, uint64_t id)
{
	pthread_mutex_lock(&w->mu);
	for (struct jgroup *g = w->groups; g; g = g->next)
		if (g->id == id && !g->leaving) {
			g->leaving = true;
			w->groups_changed = true;
			pthread_cond_signal(&w->cv);
			break;
		}
	pthread_mutex_unlock(&w->mu);
}

bool jsw_group_ready(struct jsw *w, uint64_t *id)
{
	bool found = false;
	pthread_mutex_lock(&w->mu);
	for (struct jgroup *g = w->groups; g && !found; g = g->next)
		if (g->bound && !g->told && !g->leaving) {
			g->told = true;
			*id = g->id;
			found = true;
		}
	pthread_mutex_unlock(&w->mu);
	return found;
}

uint64_t jsw_list_consumers(struct jsw *w)
{
	pthread_mutex_lock(&w->mu);
	uint64_t ask = ++w->list_asked;
	pthread_mutex_unlock(&w->mu);
	return ask;
}

bool jsw_consumers_take(struct jsw *w, jsConsumerNamesList **list, uint64_t *ask)
{
	pthread_mutex_lock(&w->mu);
	bool ready = w->list_ready;
	*list = w->list;
	*ask = w->list_ask;
	w->list = NULL;
	w->list_ready = false;
	pthread_mutex_unlock(&w->mu);
	return ready;
}

void jsw_stream_state(struct jsw *w, uint64_t *setups, uint64_t *last_seq)
{
	pthread_mutex_lock(&w->mu);
	*setups = w->setups;
	*last_seq = w->stream_last_seq;
	pthread_mutex_unlock(&w->mu);
}

void jsw_ask_ack_floor(struct jsw *w)
{
	pthread_mutex_lock(&w->mu);
	w->ack_floor_asked = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

bool jsw_ack_floor(struct jsw *w, uint64_t *floor)
{
	pthread_mutex_lock(&w->mu);
	bool known = w->ack_floor_known;
	*floor = w->ack_floor;
	pthread_mutex_unlock(&w->mu);
	return known;
}

uint64_t jsw_remade(struct jsw *w, uint64_t *delivered, uint64_t *last_seq, uint64_t *from, uint64_t *groups)
{
	pthread_mutex_lock(&w->mu);
	uint64_t n = w->remade;
	*groups = w->groups_remade;
	*delivered = w->remade_delivered;
	*last_seq = w->remade_last;
	*from = w->remade_from;
	pthread_mutex_unlock(&w->mu);
	return n;
}
