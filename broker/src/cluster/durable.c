/*
 * The loop thread's side of durable.h.
 *
 * Tickets: each message handed to JetStream gets the next ticket; `floor`
 * is the highest ticket such that it and every one before it were acked
 * by JetStream (a ring of out_cap flags marks the ones above it). A held
 * PUBACK/PUBREC names its ticket and leaves, in FIFO order, once its
 * ticket is at or below the floor; an ack of a connection that already
 * has held acks queues behind them with ticket 0 (order per connection).
 *
 * Received: `seen` marks the stream sequences routed this run (a floor and
 * a bitmap of DEDUPE_SPAN(ack_cap) above it), so a redelivery (ack wait
 * over, the ack lost) is acked again, not routed again. The JetStream
 * ack of a routed message waits in a FIFO until the store's safe seq
 * reaches what routing appended.
 *
 * Memory: out_cap bytes of ticket flags, pointers for 2 x inbound_queue
 * received messages and their acks, inbound_queue / 2 bytes of dedupe
 * bitmap, and the held acks (20 bytes each, grown by doubling).
 */
#include "durable.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "broker.h"
#include "err.h"
#include "inbox.h"
#include "jetstream.h"
#include "log.h"

/* Received messages taken per wake-up, as cluster.c's TAKE_BATCH. */
#define TAKE_BATCH 256

struct held {
	struct conn *c;  /* NULL: its connection closed */
	uint64_t ticket; /* 0: waits only for the acks before it */
	uint64_t since;
	uint8_t len;
	uint8_t bytes[7];
};

struct pending_ack {
	natsMsg *m;
	uint64_t seq;    /* store seq its records need */
};

struct durable {
	struct broker *b;
	struct jsw *w;
	const char *node;
	const char *run;
	char *stream;
	char *consumer;          /* the node's name, made a valid consumer name */
	durable_route_fn route;
	void *route_ctx;
	struct inbox acks;       /* tickets and worker events */
	struct inbox msgs;       /* received stream messages */
	struct loop_io acks_io, msgs_io;
	bool ready;
	bool setup_failed_said;
	bool overflow_logged;
	/* tickets */
	uint64_t last_ticket, floor;
	uint8_t *done;
	size_t out_cap;
	/* the ticket the next ack of ack_origin's connection waits for */
	uint64_t ack_ticket;
	const void *ack_origin;
	/* held acks */
	struct held *held;
	size_t held_head, held_len, held_cap;
	/* received */
	uint64_t seen_floor;     /* 0: nothing seen yet */
	uint8_t *seen_bits;
	size_t seen_span;
	struct pending_ack *pend;
	size_t pend_head, pend_len, pend_cap;
	uint64_t dropped_seen;
};

const char *durable_stream(const struct durable *d) { return d->stream; }

/* ---- the ack gate (broker.h) ---- */

static void release(struct durable *d)
{
	while (d->held_len) {
		struct held *h = &d->held[d->held_head];
		if (h->ticket > d->floor)
			break;
		if (h->c) {
			h->c->rare->gate_held_acks--;
			conn_rare_trim(h->c);
			persist_send_ack_ungated(d->b, h->c, h->bytes, h->len, h->since);
		}
		d->held_head = (d->held_head + 1) & (d->held_cap - 1);
		d->held_len--;
	}
}

static int held_grow(struct durable *d)
{
	size_t cap = d->held_cap ? d->held_cap * 2 : 64;
	struct held *v = wisp_malloc(cap * sizeof *v);
	if (!v)
		return WISP_ENOMEM;
	for (size_t i = 0; i < d->held_len; i++)
		v[i] = d->held[(d->held_head + i) & (d->held_cap - 1)];
	wisp_free(d->held);
	d->held = v;
	d->held_head = 0;
	d->held_cap = cap;
	return 0;
}

static bool gate_hold(void *ctx, struct conn *c, const uint8_t *bytes, size_t len, uint64_t since)
{
	struct durable *d = ctx;
	uint64_t ticket = 0;
	if (d->ack_ticket && c->sess && c->sess == d->ack_origin) {
		ticket = d->ack_ticket;
		d->ack_ticket = 0;
	} else if (len && bytes[0] >> 4 == MQTT_PKT_PUBREC && d->last_ticket > d->floor) {
		/* A PUBREC for a re-sent QoS 2 PUBLISH, not routed again
		 * [MQTT-4.3.3-2]: the first copy may still be on its way to
		 * JetStream (its held PUBREC forgotten with an old connection),
		 * so this one waits for everything handed over so far. */
		ticket = d->last_ticket;
	}
	if ((ticket == 0 || ticket <= d->floor) && conn_gate_held_acks(c) == 0)
		return false;
	/* The count lives in the connection's rare block: an idle connection
	 * does not pay for a cluster's ack gate (docs/cost-connection.md). */
	struct conn_rare *rare = len > sizeof d->held[0].bytes ? NULL : conn_rare(c);
	if (!rare || (d->held_len == d->held_cap && held_grow(d) != 0)) {
		/* Out of memory: the ack goes now, as without a cluster; the
		 * message is in JetStream's hands already. */
		return false;
	}
	struct held *h = &d->held[(d->held_head + d->held_len++) & (d->held_cap - 1)];
	h->c = c;
	h->ticket = ticket;
	h->since = since;
	h->len = (uint8_t)len;
	memcpy(h->bytes, bytes, len);
	rare->gate_held_acks++;
	return true;
}

static void gate_forget(void *ctx, struct conn *c)
{
	struct durable *d = ctx;
	if (!conn_gate_held_acks(c))
		return;
	for (size_t i = 0; i < d->held_len; i++) {
		struct held *h = &d->held[(d->held_head + i) & (d->held_cap - 1)];
		if (h->c == c)
			h->c = NULL;
	}
	c->rare->gate_held_acks = 0;
	conn_rare_trim(c);
}

/* JetStream acks of received messages whose records are now safe. */
static void store_progress(void *ctx)
{
	struct durable *d = ctx;
	uint64_t safe = persist_safe_seq(d->b);
	while (d->pend_len && d->pend[d->pend_head].seq <= safe) {
		jsw_ack(d->w, d->pend[d->pend_head].m);
		d->pend_head = (d->pend_head + 1) % d->pend_cap;
		d->pend_len--;
	}
}

/* ---- out ---- */

uint64_t durable_reserve(struct durable *d, char *reply, size_t cap)
{
	struct broker *b = d->b;
	if (d->last_ticket - d->floor >= d->out_cap) {
		b->stats.cluster.overflow++;
		if (!d->overflow_logged)
			log_msg(LOG_WARNING, "cluster",
				"%zu QoS 1/2 messages wait for JetStream (cluster.outbound_queue): new ones cross nodes "
				"at most once until it drains; counted in $SYS/broker/cluster/messages/overflow",
				d->out_cap);
		d->overflow_logged = true;
		return 0;
	}
	uint64_t ticket = ++d->last_ticket;
	d->done[ticket % d->out_cap] = 0;
	b->stats.cluster.pending = d->last_ticket - d->floor;
	snprintf(reply, cap, "%s%llu", jsw_reply_prefix(d->w), (unsigned long long)ticket);
	return ticket;
}

static void advance(struct durable *d)
{
	while (d->floor < d->last_ticket && d->done[(d->floor + 1) % d->out_cap])
		d->floor++;
	d->b->stats.cluster.pending = d->last_ticket - d->floor;
	if (d->last_ticket - d->floor < d->out_cap / 2)
		d->overflow_logged = false; /* the episode ends once it has drained */
	release(d);
}

void durable_cancel(struct durable *d, uint64_t ticket)
{
	d->done[ticket % d->out_cap] = 1;
	advance(d);
}

int durable_publish(struct durable *d, natsMsg *nm, const struct msg *m, uint64_t ticket)
{
	char id[160];
	snprintf(id, sizeof id, "%s-%s-%llu", d->node, d->run, (unsigned long long)ticket);
	if (natsMsgHeader_Set(nm, "Nats-Msg-Id", id) != NATS_OK) {
		durable_cancel(d, ticket);
		return WISP_ENOMEM;
	}
	d->ack_ticket = ticket;
	d->ack_origin = m->origin;
	jsw_publish(d->w, nm, ticket);
	return 0;
}

static void on_acks(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	(void)events;
	struct durable *d = container_of(io, struct durable, acks_io);
	void *batch[TAKE_BATCH];
	unsigned ev = 0;
	uint64_t dropped = 0;
	size_t n = inbox_take(&d->acks, batch, TAKE_BATCH, &ev, &dropped);
	if (ev & JSW_EV_READY && !d->ready) {
		d->ready = true;
		d->b->stats.cluster.durable_ready = 1;
		d->setup_failed_said = false;
		log_msg(LOG_NOTICE, "cluster", "JetStream ready: QoS 1/2 cross nodes through stream '%s' (consumer '%s')",
			d->stream, d->consumer);
	}
	if (ev & JSW_EV_SETUP_FAILED && !d->setup_failed_said) {
		d->setup_failed_said = true;
		log_msg(LOG_WARNING, "cluster", "cannot set up JetStream stream '%s' (is nats-server running with -js?): "
			"retrying; QoS 1/2 acks for messages to other nodes wait until it is there", d->stream);
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t t = (uint64_t)(uintptr_t)batch[i];
		if (t > d->floor && t <= d->last_ticket)
			d->done[t % d->out_cap] = 1;
	}
	advance(d);
}

/* ---- in ---- */

/* Whether stream sequence seq was routed this run; marks it. */
static bool seen(struct durable *d, uint64_t seq)
{
	if (d->seen_floor == 0)
		d->seen_floor = seq - 1; /* the first one: from the start time, or resuming */
	if (seq <= d->seen_floor)
		return true;
	if (seq - d->seen_floor > d->seen_span) {
		/* A gap wider than what can be unacked (messages aged out):
		 * forget the oldest part of the window. */
		uint64_t to = seq - d->seen_span;
		for (uint64_t s = d->seen_floor + 1; s <= to && s <= d->seen_floor + d->seen_span; s++)
			d->seen_bits[(s % d->seen_span) / 8] &= (uint8_t)~(1u << (s % 8));
		d->seen_floor = to;
	}
	size_t bit = (size_t)(seq % d->seen_span);
	if (d->seen_bits[bit / 8] & (1u << (bit % 8)))
		return true;
	d->seen_bits[bit / 8] |= (uint8_t)(1u << (bit % 8));
	while (d->seen_bits[((d->seen_floor + 1) % d->seen_span) / 8] & (1u << ((d->seen_floor + 1) % 8))) {
		d->seen_floor++;
		size_t b = (size_t)(d->seen_floor % d->seen_span);
		d->seen_bits[b / 8] &= (uint8_t)~(1u << (b % 8));
	}
	return false;
}

static void ack_when_safe(struct durable *d, natsMsg *nm)
{
	uint64_t need = persist_seq(d->b);
	if (need <= persist_safe_seq(d->b) || d->pend_len == d->pend_cap) {
		/* pend is as large as the inbox that fed it: full only if the
		 * consumer's MaxAckPending was changed behind our back. */
		jsw_ack(d->w, nm);
		return;
	}
	d->pend[(d->pend_head + d->pend_len++) % d->pend_cap] = (struct pending_ack){nm, need};
}

static void on_msgs(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	(void)events;
	struct durable *d = container_of(io, struct durable, msgs_io);
	struct broker *b = d->b;
	void *batch[TAKE_BATCH];
	unsigned ev = 0;
	uint64_t dropped = 0;
	size_t n = inbox_take(&d->msgs, batch, TAKE_BATCH, &ev, &dropped);
	if (dropped != d->dropped_seen) {
		/* Not lost: JetStream delivers them again after its ack wait. */
		log_limited("cluster_stream_full", LOG_INFO, "cluster",
			    "%llu stream messages waited for a later redelivery: inbox full",
			    (unsigned long long)(dropped - d->dropped_seen));
		d->dropped_seen = dropped;
	}
	for (size_t i = 0; i < n; i++) {
		natsMsg *nm = batch[i];
		jsMsgMetaData *meta = NULL;
		uint64_t seq = 0;
		if (natsMsg_GetMetaData(&meta, nm) == NATS_OK) {
			seq = meta->Sequence.Stream;
			jsMsgMetaData_Destroy(meta);
		}
		const char *node = NULL;
		natsMsgHeader_Get(nm, "Wisp-Node", &node);
		if (seq == 0 || seen(d, seq) || (node && strcmp(node, d->node) == 0)) {
			jsw_ack(d->w, nm); /* a redelivery, or this node's own message */
			continue;
		}
		const char *why = d->route(d->route_ctx, nm);
		if (why && *why) {
			b->stats.cluster.dropped++;
			log_limited("cluster_dropped", LOG_INFO, "cluster", "message from stream on '%s' dropped: %s",
				    natsMsg_GetSubject(nm), why);
		}
		ack_when_safe(d, nm);
	}
}

/* ---- start and stop ---- */

int durable_start(struct broker *b, const char *node, const char *run, durable_route_fn route,
		  void *route_ctx, struct durable **out)
{
	const struct config_cluster *cfg = &b->cfg->cluster;
	*out = NULL;
	struct durable *d = wisp_calloc(1, sizeof *d);
	if (!d)
		return WISP_ENOMEM;
	d->b = b;
	d->node = node;
	d->run = run;
	d->route = route;
	d->route_ctx = route_ctx;
	d->acks.efd = d->msgs.efd = -1;
	d->acks_io.fd = d->msgs_io.fd = -1;
	d->out_cap = cfg->outbound_queue;
	size_t in_cap = cfg->inbound_queue;
	d->seen_span = 4 * in_cap;
	d->pend_cap = 2 * in_cap;
	d->stream = wisp_strndup(cfg->stream, strlen(cfg->stream));
	/* The consumer is named after the node; a host name may hold what a
	 * consumer name may not ('.', wildcards, spaces). */
	d->consumer = wisp_strndup(node, strlen(node));
	for (char *p = d->consumer; p && *p; p++)
		if ((unsigned char)*p <= ' ' || *p == '.' || *p == '*' || *p == '>' || *p == '/' || *p == '\\')
			*p = '_';
	d->done = wisp_calloc(d->out_cap, 1);
	d->seen_bits = wisp_calloc(d->seen_span / 8 + 1, 1);
	d->pend = wisp_calloc(d->pend_cap, sizeof *d->pend);
	int rc = WISP_ENOMEM;
	if (!d->stream || !d->consumer || !d->done || !d->seen_bits || !d->pend)
		goto fail;
	/* acks: every outstanding ticket fits, so a ticket is never refused. */
	if (inbox_init(&d->acks, d->out_cap + 1) != 0 || inbox_init(&d->msgs, 2 * in_cap) != 0)
		goto fail;
	rc = WISP_EIO;
	if (loop_io_start(b->loop, &d->acks_io, d->acks.efd, LOOP_READ, on_acks) != 0 ||
	    loop_io_start(b->loop, &d->msgs_io, d->msgs.efd, LOOP_READ, on_msgs) != 0)
		goto fail;
	struct jsw_config wc = {
		.stream = cfg->stream,
		.consumer = d->consumer,
		.replicas = (int)cfg->replicas,
		.max_age_s = (int64_t)cfg->stream_max_age,
		.out_cap = d->out_cap,
		.ack_cap = in_cap,
		.start_ns = (int64_t)time(NULL) * 1000000000LL,
	};
	rc = jsw_start(&d->w, cfg->nats, &wc, &d->acks, &d->msgs);
	if (rc != 0)
		goto fail;
	b->ack_gate.hold = gate_hold;
	b->ack_gate.forget = gate_forget;
	b->ack_gate.store_progress = store_progress;
	b->ack_gate.ctx = d;
	*out = d;
	return 0;
fail:
	durable_stop(d);
	durable_free(d);
	return rc;
}

static void free_msg(void *m) { natsMsg_Destroy(m); }

void durable_stop(struct durable *d)
{
	if (!d)
		return;
	jsw_stop(d->w); /* no stream message arrives after it */
	/* Received messages go unacked (JetStream delivers them again), and
	 * before the connection closes: cnats's shutdown frees what
	 * destroying one needs. */
	while (d->pend_len) {
		natsMsg_Destroy(d->pend[d->pend_head].m);
		d->pend_head = (d->pend_head + 1) % d->pend_cap;
		d->pend_len--;
	}
	/* Closed, not only emptied: a consumer callback still running after
	 * the close refuses its message and destroys it itself. */
	inbox_close(&d->msgs, free_msg);
}

void durable_free(struct durable *d)
{
	if (!d)
		return;
	struct broker *b = d->b;
	if (b->ack_gate.ctx == d)
		memset(&b->ack_gate, 0, sizeof b->ack_gate);
	/* Held acks are not sent: their messages may not be in JetStream. */
	for (size_t i = 0; i < d->held_len; i++) {
		struct held *h = &d->held[(d->held_head + i) & (d->held_cap - 1)];
		if (h->c && h->c->rare)
			h->c->rare->gate_held_acks = 0;
	}
	jsw_free(d->w);
	if (d->acks_io.fd >= 0)
		loop_io_stop(b->loop, &d->acks_io);
	if (d->msgs_io.fd >= 0)
		loop_io_stop(b->loop, &d->msgs_io);
	inbox_free(&d->acks, NULL);
	inbox_free(&d->msgs, NULL); /* emptied and closed by durable_stop */
	wisp_free(d->held);
	wisp_free(d->pend);
	wisp_free(d->seen_bits);
	wisp_free(d->done);
	wisp_free(d->stream);
	wisp_free(d->consumer);
	wisp_free(d);
}
