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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "err.h"

/* How long cnats waits for a publish's ack before reporting it failed
 * (then it is published again, the same Nats-Msg-Id): long enough for a
 * loaded server, short enough that an ack lost with a connection is
 * noticed soon after reconnecting. */
#define PUBLISH_MAX_WAIT_MS 5000
/* Pause between set-up attempts and before re-publishing failed messages. */
#define RETRY_MS 500
/* The consumer's ack wait: a message handed to the loop and not acked in
 * time is delivered again (and deduplicated by stream sequence). */
#define ACK_WAIT_S 30

struct ring {
	natsMsg **items;
	size_t cap, head, len;
};

struct jsw {
	natsConnection *nc;
	jsCtx *js;
	natsSubscription *sub;
	struct jsw_config cfg;
	char *stream, *consumer, *subjects;
	struct inbox *acks, *msgs;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	struct ring out;     /* to publish (loop) */
	struct ring retry;   /* failed publishes (cnats threads) */
	struct ring ack;     /* consumer acks (loop) */
};

static int ring_init(struct ring *r, size_t cap)
{
	r->items = wisp_calloc(cap, sizeof *r->items);
	r->cap = cap;
	r->head = r->len = 0;
	return r->items ? 0 : WISP_ENOMEM;
}

/* Under mu. The callers bound what they push by cap, so it never fails;
 * should it, the message is destroyed rather than the bound broken. */
static void ring_push(struct ring *r, natsMsg *m)
{
	if (r->len == r->cap) {
		natsMsg_Destroy(m);
		return;
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
	while ((m = ring_pop(r)))
		natsMsg_Destroy(m);
	wisp_free(r->items);
}

static uint64_t ticket_of(natsMsg *m)
{
	const char *id = NULL;
	if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id) != NATS_OK || !id)
		return 0;
	const char *dash = strrchr(id, '-');
	return dash ? strtoull(dash + 1, NULL, 10) : 0;
}

/* ---- cnats threads ---- */

static void on_pub_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	(void)js;
	struct jsw *w = closure;
	if (pa && !pae) {
		uint64_t t = ticket_of(m);
		if (t)
			inbox_push(w->acks, (void *)(uintptr_t)t);
		natsMsg_Destroy(m);
		return;
	}
	/* Not stored (yet): publish it again from the worker, after a pause. */
	pthread_mutex_lock(&w->mu);
	ring_push(&w->retry, m);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void on_js_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	(void)nc;
	(void)sub;
	struct jsw *w = closure;
	if (!inbox_push(w->msgs, m))
		natsMsg_Destroy(m); /* unacked: JetStream delivers it again */
}

/* ---- the worker thread ---- */

static natsStatus ensure_stream(struct jsw *w)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus st = js_GetStreamInfo(&si, w->js, w->stream, NULL, &jerr);
	if (st == NATS_OK) {
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
	st = js_AddStream(&si, w->js, &sc, NULL, &jerr);
	if (st == NATS_OK)
		jsStreamInfo_Destroy(si);
	else if (jerr == JSStreamNameExistErr)
		st = NATS_OK; /* another node made it meanwhile */
	return st;
}

static natsStatus ensure_consumer(struct jsw *w)
{
	jsSubOptions so;
	jsSubOptions_Init(&so);
	so.Stream = w->stream;
	so.ManualAck = true;
	so.Config.Durable = w->consumer;
	so.Config.DeliverPolicy = js_DeliverNew;
	so.Config.AckPolicy = js_AckExplicit;
	so.Config.AckWait = (int64_t)ACK_WAIT_S * 1000000000LL;
	so.Config.MaxAckPending = (int64_t)w->cfg.ack_cap;
	jsErrCode jerr = 0;
	return js_Subscribe(&w->sub, w->js, w->subjects, on_js_msg, w, NULL, &so, &jerr);
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

static void *run(void *arg)
{
	struct jsw *w = arg;
	bool ready = false, failed_said = false;
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MaxWait = PUBLISH_MAX_WAIT_MS;
	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		if (!ready) {
			pthread_mutex_unlock(&w->mu);
			natsStatus st = NATS_NOT_YET_CONNECTED;
			if (natsConnection_Status(w->nc) == NATS_CONN_STATUS_CONNECTED) {
				st = ensure_stream(w);
				if (st == NATS_OK)
					st = ensure_consumer(w);
			}
			pthread_mutex_lock(&w->mu);
			if (st == NATS_OK) {
				ready = true;
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
		natsMsg *ack = ring_pop(&w->ack);
		natsMsg *pub = ack ? NULL : ring_pop(&w->out);
		if (!ack && !pub && w->retry.len) {
			/* Failures come in bursts (a lost connection): pause once,
			 * then publish the whole burst again. out and retry hold
			 * at most out_cap together (the loop's bound). */
			wait_ms(w, RETRY_MS);
			natsMsg *m;
			while ((m = ring_pop(&w->retry)))
				ring_push(&w->out, m);
			continue;
		}
		if (!ack && !pub) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		pthread_mutex_unlock(&w->mu);
		if (ack) {
			/* A lost ack only means a redelivery, deduplicated. */
			natsMsg_Ack(ack, NULL);
			natsMsg_Destroy(ack);
		} else if (js_PublishMsgAsync(w->js, &pub, &po) != NATS_OK && pub) {
			pthread_mutex_lock(&w->mu);
			ring_push(&w->retry, pub);
			pthread_mutex_unlock(&w->mu);
			pub = NULL;
		}
		natsMsg_Destroy(pub); /* NULL once cnats took it */
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int jsw_start(struct jsw **out, natsConnection *nc, const struct jsw_config *cfg, struct inbox *acks,
	      struct inbox *msgs)
{
	*out = NULL;
	struct jsw *w = wisp_calloc(1, sizeof *w);
	if (!w)
		return WISP_ENOMEM;
	w->nc = nc;
	w->cfg = *cfg;
	w->acks = acks;
	w->msgs = msgs;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	size_t slen = strlen(cfg->stream);
	w->stream = wisp_strndup(cfg->stream, slen);
	w->consumer = wisp_strndup(cfg->consumer, strlen(cfg->consumer));
	w->subjects = wisp_malloc(slen + 3);
	if (!w->stream || !w->consumer || !w->subjects || ring_init(&w->out, cfg->out_cap) != 0 ||
	    ring_init(&w->retry, cfg->out_cap) != 0 || ring_init(&w->ack, cfg->ack_cap * 2) != 0)
		goto fail;
	snprintf(w->subjects, slen + 3, "%s.>", cfg->stream);
	jsOptions jo;
	jsOptions_Init(&jo);
	/* The loop bounds what is outstanding; cnats's own bound must not
	 * stall the worker before it. */
	jo.PublishAsync.MaxPending = (int64_t)cfg->out_cap + 1;
	jo.PublishAsync.AckHandler = on_pub_ack;
	jo.PublishAsync.AckHandlerClosure = w;
	if (natsConnection_JetStream(&w->js, nc, &jo) != NATS_OK)
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

void jsw_stop(struct jsw *w)
{
	if (!w || !w->started)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	w->started = false;
	/* Before the connection closes: a subscription still open then
	 * leaves cnats's close notice undelivered (leaked). Destroy without
	 * Unsubscribe keeps the durable consumer (cnats 3.4), so a stopping
	 * node resumes where it was. */
	natsSubscription_Destroy(w->sub);
	w->sub = NULL;
}

void jsw_free(struct jsw *w)
{
	if (!w)
		return;
	jsw_stop(w);
	jsCtx_Destroy(w->js);
	/* What is left was never acknowledged to a client (publishes) or is
	 * delivered again by JetStream (consumer acks). */
	ring_free(&w->ack);
	ring_free(&w->out);
	ring_free(&w->retry);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	wisp_free(w->stream);
	wisp_free(w->consumer);
	wisp_free(w->subjects);
	wisp_free(w);
}

void jsw_publish(struct jsw *w, natsMsg *m, uint64_t ticket)
{
	(void)ticket; /* carried in m's Nats-Msg-Id */
	pthread_mutex_lock(&w->mu);
	ring_push(&w->out, m);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void jsw_ack(struct jsw *w, natsMsg *m)
{
	pthread_mutex_lock(&w->mu);
	ring_push(&w->ack, m);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}
