/*
 * The loop thread's side of durable.h.
 *
 * Tickets: each message handed to JetStream gets the next ticket; `afloor`
 * is the highest ticket such that it and every one before it were acked
 * by JetStream (a ring of out_cap flags marks the ones above it: a worker
 * slot is reused only below it), `floor` the highest such that each was
 * acked or is kept in the store (T_STORED: a message handed over just
 * before JetStream went out of reach, stored when that was noticed, with
 * the Nats-Msg-Id it was sent with, so its publisher's ack need not wait
 * for the outage's end). A held
 * PUBACK/PUBREC names its ticket and leaves, in FIFO order, once its
 * ticket is at or below the floor; an ack of a connection that already
 * has held acks queues behind them with ticket 0 (order per connection).
 * A ticket the worker gave up (its message over NATS's max_payload, which
 * would be refused at every try) comes back as acked: its ack goes and
 * the forwarding queue moves on; JSW_EV_TOO_LARGE has it counted.
 *
 * The forwarding queue (store-and-forward): while JetStream is out of
 * reach (the worker's connection down, or the stream not set up yet) and
 * persistence is on, a QoS 1/2 message goes to `fq` instead, in order, and
 * into the store's forwarding queue (persist_forward_add: FWD_ADD with its
 * Nats-Msg-Id "<node>-<run>-f<n>"), and its PUBACK/PUBREC waits only for
 * the store's write, as a local persistent session's does. While fq holds
 * anything every new QoS 1/2 message joins its tail (stored too, while
 * there is room), so a publisher's later message never overtakes an
 * earlier queued one. Once
 * JetStream is back, fq's entries are handed to the worker in order (only
 * after the tickets handed before the queue began are acked, for the same
 * reason), with their own ids, and each leaves the store (FWD_DEL) when
 * JetStream acked it. Past cluster.forward_queue / forward_queue_bytes an
 * entry is kept in memory unstored and its ack is held (key FWD_KEY |
 * its fq sequence) until it is stored or in JetStream: back-pressure on
 * its publisher, counted in $SYS/broker/cluster/forward/overflow and
 * logged once per episode. Unstored entries are bounded by
 * outbound_queue, past which a message crosses at most once, as before.
 * Without persistence there is no fq: acks wait for JetStream as before.
 * Crash cases: docs/cluster.md "While NATS is down: store and forward".
 *
 * Received: `seen` marks the stream sequences routed (seq_window.h: a
 * floor, raised to the consumer's ack floor at JetStream whenever the
 * worker has looked it up, and a bitmap above it of 4 x inbound_queue
 * sequences, growing to SEEN_MAX_SEQS), so a redelivery (ack wait over,
 * the ack lost, or the node killed before its ack left) is acked again,
 * not routed again, no sooner than its first delivery (ack_again), and a
 * message delivered before and never routed (a full inbox, a node killed
 * first) is routed at its redelivery however far newer ones passed it. A
 * message further above the floor than the bitmap can grow is left
 * unacked for a later redelivery, and the ack floor is looked up again
 * (at most once a second) while the marks reach past the first span. A
 * message whose routing made copies for persistent sessions is recorded
 * in the store after them (STREAM_TAKEN with the floor, in the same
 * write: no fsync of its own), and the window is restored from the store
 * at start-up, so a kill -9 between the store's write and the JetStream
 * ack does not give a persistent session a QoS 2 message twice. A
 * sequence is not all of a message's identity: a stream made anew, or a
 * NATS server killed before it wrote its last messages, gives sequences
 * again to new messages. Those are stored after every
 * message routed here, so a marked sequence whose JetStream time stamp is
 * newer than the newest routed (routed_stamp, in the store's records too)
 * is a new message, and is routed. (Not NumDelivered 1: taking that for a
 * first delivery gave e2e 25's killed nats-server test QoS 2 duplicates,
 * as a killed server forgets delivery counts.) The JetStream ack of a routed
 * message waits in a FIFO until the store's safe seq reaches what routing
 * appended. Crash cases: docs/cluster.md "QoS 1 and 2".
 *
 * Shared groups' consumers (groups.h): their messages come through the
 * same inbox, told apart by the consumer name JetStream puts in each
 * message's ack subject (which no publisher sets). One goes to one local
 * member and is acked like the node consumer's; `gseen`, a direct-mapped
 * table of inbound_queue (group, stream sequence, time stamp) keys (8 bytes each,
 * made at the first group message: a node without groups has none; up to
 * MaxAckPending of a group's messages can be unacked here), catches a
 * redelivery (NumDelivered > 1) of one given to a member here this run.
 * A collision only forgets an older entry (a possible duplicate, never a
 * loss); a restart forgets them all (docs/cluster.md says what that
 * costs).
 *
 * Memory: out_cap bytes of ticket flags and 16 x out_cap of ticket to fq
 * entry and message (with persistence, each outstanding ticket holds a
 * reference on its message until JetStream acks it, so it can be stored
 * should JetStream go away: the message stays in memory that long), an fq
 * entry per queued message (~40 bytes, its id, a reference on the
 * message),  pointers for 2 x inbound_queue
 * received messages and their acks, inbound_queue / 2 bytes of dedupe
 * bitmap, and the held acks (20 bytes each, grown by doubling).
 */
#include "durable.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "broker.h"
#include "dormant.h"
#include "err.h"
#include "hash.h"
#include "inbox.h"
#include "input.h"
#include "jetstream.h"
#include "keycount.h"
#include "log.h"
#include "nats_auth.h"
#include "persist.h"
#include "seq_window.h"

/* Received messages taken per wake-up, as cluster.c's TAKE_BATCH. */
#define TAKE_BATCH 256
/* The received window's bound (seq_window.h): a million sequences above
 * its floor, a 122 KiB bitmap whose text (a quarter byte a sequence) still
 * fits a handover's cut (handover.c, ho_routed_set: 256 KiB); an ack wait (30
 * s by default) of 33,000 stream messages a second behind one left
 * unacked. A first span above it (inbound_queue past 250,000) is kept. */
#define SEEN_MAX_SEQS 1000000u
/* Waiting publishers handed back their PUBLISH per turn (on_resume). */
#define RESUME_BATCH 64

/* An ack-gate key naming an fq entry (by its fq sequence), not a ticket;
 * also the "ticket" durable_reserve gives for a message that joins fq. */
#define FWD_KEY (UINT64_C(1) << 63)

/* A ticket's flags (done[]). */
#define T_ACKED 1u  /* JetStream has it (or it was given back unused) */
#define T_STORED 2u /* kept in the store's forwarding queue meanwhile */

/* A message in the forwarding queue. */
struct fwd {
	struct msg *m;      /* a reference */
	uint64_t ticket;    /* 0: not handed to the worker yet */
	size_t bytes;
	bool stored;        /* in the store's forwarding queue */
	bool acked;         /* JetStream has it */
	uint8_t id_len;
	char id[];          /* its Nats-Msg-Id */
};

struct held {
	struct ack_owner *o; /* its connection; o->c NULL once that closed */
	uint64_t ticket; /* 0: waits only for the acks before it */
	uint64_t since;
	uint8_t len;
	uint8_t bytes[7];
};

struct pending_ack {
	natsMsg *m;
	uint64_t seq;    /* store seq its records need */
	uint64_t key;    /* the message: its stream sequence, or its gseen key (a group's) */
};

struct durable {
	struct broker *b;
	struct jsw *w;
	const char *node;
	const char *run;
	char *stream;
	char *consumer;          /* the node's name, made a valid consumer name */
	durable_route_fn route;
	durable_make_fn make;
	void *route_ctx;
	struct inbox acks;       /* tickets and worker events */
	struct inbox msgs;       /* received stream messages */
	struct loop_io acks_io, msgs_io;
	bool ready;
	bool setup_failed_said;
	bool closed_said;        /* NATS closed the worker's connection for good: said once per episode */
	bool overflow_logged;
	/* Connections whose QoS 1/2 PUBLISH waits for a free ticket (their
	 * input paused, the packet unread), oldest first, named by their ack
	 * owner (conn.h): a close clears the owner, and its entry is skipped
	 * when it comes up or compacted away, so a close never scans this. */
	struct ack_owner **waiting;
	size_t wait_head, wait_len, wait_cap;
	struct conn *resuming;   /* the one on_resume hands its packet back to */
	struct loop_timer resume;
	bool wait_logged;        /* this episode of waiting is logged */
	uint64_t too_large_seen; /* jsw_too_large's count already in the stats */
	bool too_large_said;     /* said once per set-up of the stream */
	uint64_t too_large_at_down; /* too_large_seen when the forwarding queue began */
	/* tickets */
	uint64_t last_ticket, floor, afloor;
	uint8_t *done;           /* T_ACKED | T_STORED, by ticket % out_cap */
	struct msg **ticket_msg; /* with persistence: the message a ticket carries, a reference */
	size_t out_cap;
	/* the ticket (or FWD_KEY key) the next ack of ack_origin's connection
	 * waits for; ack_fail: that ack must not go (its message is not safe
	 * and could not be kept: out of memory) */
	uint64_t ack_ticket;
	const void *ack_origin;
	bool ack_fail;
	/* store and forward */
	bool connected;          /* the worker's connection is up */
	bool core_down;          /* the node's main connection is lost (durable_core_connected) */
	bool can_store;          /* persistence is on */
	bool buffering_said, fwd_full_said;
	uint64_t direct_last;    /* the last ticket handed outside fq */
	uint64_t *ticket_fwd;    /* out_cap: the fq sequence a ticket carries, 0: none */
	struct fwd **fq;
	size_t fq_head, fq_len, fq_cap;
	uint64_t fq_base;        /* fq sequence of fq's first entry (the next one's when empty) */
	size_t fq_handed;        /* the first ones, handed to the worker */
	size_t fq_safe;          /* the first ones, each stored or acked */
	size_t fq_stored, fq_unsafe;
	uint64_t fq_bytes;       /* of the stored ones */
	uint64_t fwd_n;          /* ids made this run */
	size_t fwd_max;
	uint64_t fwd_max_bytes;
	struct loop_timer retry; /* a hand-over that failed for memory */
	/* held acks */
	struct held *held;
	size_t held_head, held_len, held_cap;
	/* received */
	struct seq_window seen;  /* the stream sequences routed (seq_window.h) */
	struct pending_ack *pend;
	size_t pend_head, pend_len, pend_cap;
	struct keycount pend_keys; /* the keys in pend, for ack_again */
	uint64_t dropped_seen;
	uint64_t setups_seen;    /* jsw_stream_state's set-ups looked at */
	uint64_t routed_stamp;   /* the newest JetStream time stamp marked in seen (ns) */
	uint64_t seen_span;      /* seen's first span: past it the ack floor is looked up again */
	uint64_t floor_asked_s;  /* when it was last asked for (loop seconds) */
	uint64_t far;            /* stream messages left for a redelivery: past seen's bound */
	uint64_t far_seen;       /* of far, what was logged */
	bool stamp_unknown;      /* restored from records without one: sequences alone tell, this run */
	uint64_t remade_seen;    /* jsw_remade's counts already logged */
	uint64_t groups_remade_seen;
	bool hold_stream_acks;   /* debug builds: WISP_DEBUG_HOLD_STREAM_ACKS (tests) */
	bool routing_held;       /* debug builds: WISP_DEBUG_HOLD_STREAM_ROUTING said so */
	/* Sequences this run's consumer never delivers are at or below
	 * max(first set-up's last sequence, first delivered - 1) (durable_routed_all). */
	uint64_t run_first_seq;
	uint64_t setup_last_seq;
	bool setup_known;
	struct loop_timer hold_timer;
	/* shared groups */
	durable_route_group_fn route_group;
	void (*group_ready)(void *ctx, uint64_t id);
	void *group_ctx;
	durable_consumers_fn consumers; /* the stream's consumer names (dormant.h) */
	void *consumers_ctx;
	uint64_t *gseen;         /* gseen_cap keys, 0: empty; NULL until the first group message */
	size_t gseen_cap;
};

const char *durable_stream(const struct durable *d) { return d->stream; }

int64_t durable_max_payload(const struct durable *d) { return jsw_max_payload(d->w); }

/* ---- the ack gate (broker.h) ---- */

/* JetStream counts as out of reach while the node's main connection is
 * lost too: both go to the same servers, and a frozen server is noticed
 * on the busier connection first (a write past cluster.write_deadline),
 * seconds before the worker's PINGs go unanswered, which acks should not
 * wait for. */
static bool is_up(const struct durable *d) { return d->ready && d->connected && !d->core_down; }

/* Whether what a held ack's key waits for is safe: its ticket acked by
 * JetStream (with all before it), or its fq entry stored or acked. */
static bool key_safe(const struct durable *d, uint64_t key)
{
	if (key & FWD_KEY)
		return (key & ~FWD_KEY) < d->fq_base + d->fq_safe;
	return key <= d->floor;
}

static void release(struct durable *d)
{
	while (d->held_len) {
		struct held *h = &d->held[d->held_head];
		if (!key_safe(d, h->ticket))
			break;
		struct conn *c = h->o->c;
		if (c) {
			c->rare->gate_held_acks--;
			persist_send_ack_ungated(d->b, c, h->bytes, h->len, h->since);
		}
		ack_owner_unref(h->o);
		if (c)
			conn_rare_trim(c);
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

static int gate_hold(void *ctx, struct conn *c, const uint8_t *bytes, size_t len, uint64_t since, bool resent)
{
	struct durable *d = ctx;
	uint64_t ticket = 0;
	if (d->ack_origin && c->sess && c->sess == d->ack_origin) {
		ticket = d->ack_ticket;
		d->ack_ticket = 0;
		d->ack_origin = NULL;
		if (d->ack_fail) {
			/* Its message is neither in JetStream nor kept here: no ack. */
			d->ack_fail = false;
			return WISP_ENOMEM;
		}
	} else if (resent) {
		/* A PUBREC for a re-sent QoS 2 PUBLISH, not routed again
		 * [MQTT-4.3.3-2]: the first copy may still be on its way to
		 * JetStream (its held PUBREC forgotten with an old connection),
		 * so this one waits for everything handed over so far. A new
		 * message that did not cross (no other node wants it) waits
		 * for nothing of JetStream's. */
		if (d->last_ticket > d->floor)
			ticket = d->last_ticket;
		else if (d->fq_safe < d->fq_len)
			ticket = FWD_KEY | (d->fq_base + d->fq_len - 1);
	}
	if ((ticket == 0 || key_safe(d, ticket)) && conn_gate_held_acks(c) == 0)
		return 0;
	/* The count lives in the connection's rare block: an idle connection
	 * does not pay for a cluster's ack gate (docs/cost-connection.md). */
	struct ack_owner *o = NULL;
	if (len > sizeof d->held[0].bytes || (d->held_len == d->held_cap && held_grow(d) != 0) ||
	    !(o = conn_ack_owner_ref(c))) {
		/* Out of memory: the message is not safe yet, so its ack must
		 * not go now; the publish fails instead (its connection closes
		 * unacknowledged, and the client sends it again). */
		return WISP_ENOMEM;
	}
	struct held *h = &d->held[(d->held_head + d->held_len++) & (d->held_cap - 1)];
	h->o = o;
	h->ticket = ticket;
	h->since = since;
	h->len = (uint8_t)len;
	memcpy(h->bytes, bytes, len);
	c->rare->gate_held_acks++;
	return 1;
}

static void gate_forget(void *ctx, struct conn *c)
{
	(void)ctx;
	/* Its held acks and its place among the waiting are dropped when they
	 * come up: persist_forget_conn detaches the connection from them
	 * (conn.h's ack_owner). */
	if (conn_gate_held_acks(c))
		c->rare->gate_held_acks = 0;
}

/* Acks a received message to JetStream. A debug build run with
 * WISP_DEBUG_HOLD_STREAM_ACKS never does, so that a test can kill the node
 * between the store's write and the ack deterministically. */
static void stream_ack(struct durable *d, natsMsg *nm)
{
	if (d->hold_stream_acks) {
		natsMsg_Destroy(nm);
		return;
	}
	jsw_ack(d->w, nm);
}

/* pend's oldest entry leaves it. */
static natsMsg *pend_pop(struct durable *d)
{
	struct pending_ack *p = &d->pend[d->pend_head];
	keycount_del(&d->pend_keys, p->key);
	d->pend_head = (d->pend_head + 1) % d->pend_cap;
	d->pend_len--;
	return p->m;
}

/* JetStream acks of received messages whose records are now safe. */
static void store_progress(void *ctx)
{
	struct durable *d = ctx;
	uint64_t safe = persist_safe_seq(d->b);
	while (d->pend_len && d->pend[d->pend_head].seq <= safe)
		stream_ack(d, pend_pop(d));
}

/* ---- out ---- */

/* No ticket for a message no publisher waits on (a will, an HTTP API
 * publish: a client's PUBLISH waited for one, durable_wait): it crosses at
 * most once. */
static void overflow(struct durable *d)
{
	d->b->stats.cluster.overflow++;
	if (!d->overflow_logged)
		log_msg(LOG_WARNING, "cluster",
			"%zu QoS 1/2 messages wait for JetStream (cluster.outbound_queue): a will or HTTP API publish "
			"crosses nodes at most once until it drains; counted in $SYS/broker/cluster/messages/overflow",
			d->out_cap);
	d->overflow_logged = true;
}

/* Whether a new message joins fq rather than going to the worker now. */
static bool queues(const struct durable *d) { return d->can_store && (!is_up(d) || d->fq_len); }

/* Whether durable_reserve has no ticket for a new message. */
static bool full(const struct durable *d)
{
	return queues(d) ? d->fq_unsafe >= d->out_cap : d->last_ticket - d->afloor >= d->out_cap;
}

static void on_resume(struct loop *l, struct loop_timer *t);

/* Waiting connections are handed back from the next turn, not from here:
 * tickets free up inside another connection's publish too. */
static void kick(struct durable *d)
{
	if (d->wait_len && !full(d) && !loop_timer_armed(&d->resume))
		loop_timer_soon(d->b->loop, &d->resume, on_resume);
}

bool durable_must_wait(const struct durable *d, const struct conn *c)
{
	/* Behind the ones waiting already (but the one handed back now): the
	 * oldest goes first. */
	return full(d) || (d->wait_len && d->resuming != c);
}

/* Drops the closed connections' entries, keeping the others' order:
 * rather than growing a queue that closed connections fill (clients that
 * give up and connect again, each waiting anew, through a long outage).
 * Run when the queue is full; it grows only when half of it or more is
 * still waiting: amortised O(1) a wait, and its size at most four times
 * the connections waiting when it last grew. */
static void wait_compact(struct durable *d)
{
	size_t k = 0;
	for (size_t i = 0; i < d->wait_len; i++) {
		struct ack_owner *o = d->waiting[(d->wait_head + i) & (d->wait_cap - 1)];
		if (o->c)
			d->waiting[(d->wait_head + k++) & (d->wait_cap - 1)] = o;
		else
			ack_owner_unref(o);
	}
	d->wait_len = k;
}

static int wait_grow(struct durable *d)
{
	size_t cap = d->wait_cap ? d->wait_cap * 2 : 64;
	struct ack_owner **v = wisp_malloc(cap * sizeof *v);
	if (!v)
		return WISP_ENOMEM;
	for (size_t i = 0; i < d->wait_len; i++)
		v[i] = d->waiting[(d->wait_head + i) & (d->wait_cap - 1)];
	wisp_free(d->waiting);
	d->waiting = v;
	d->wait_head = 0;
	d->wait_cap = cap;
	return 0;
}

int durable_wait(struct durable *d, struct conn *c)
{
	if (d->wait_len == d->wait_cap) {
		if (d->wait_cap)
			wait_compact(d);
		if ((d->wait_cap == 0 || d->wait_len >= d->wait_cap / 2) && wait_grow(d) != 0)
			return WISP_ENOMEM;
	}
	struct ack_owner *o = conn_ack_owner_ref(c);
	if (!o)
		return WISP_ENOMEM;
	d->waiting[(d->wait_head + d->wait_len++) & (d->wait_cap - 1)] = o;
	d->b->stats.cluster.waited++;
	if (!d->wait_logged)
		log_msg(LOG_WARNING, "cluster", "cluster.outbound_queue full: QoS 1/2 publishers wait for JetStream "
			"(%zu messages unacknowledged; each publisher's input paused until a slot is free; counted in "
			"$SYS/broker/cluster/messages/waited)", d->out_cap);
	d->wait_logged = true;
	/* The wait is the broker's, not the client's silence: its keepalive
	 * does not run meanwhile (as a CONNECT waiting for its session has
	 * none yet), and starts afresh when its packets are read again. */
	if (conn_keepalive(c) && c->output_state == CONN_OUT_OK)
		loop_timer_set_deadline(d->b->loop, &c->timer, UINT32_MAX);
	kick(d);
	return WISP_EAGAIN;
}

/* Hands waiting connections their PUBLISH back, oldest first, while
 * tickets are free: at most RESUME_BATCH a turn, so a burst of freed
 * tickets is not taken all at once by the first ones. */
static void on_resume(struct loop *l, struct loop_timer *t)
{
	struct durable *d = container_of(t, struct durable, resume);
	for (size_t n = 0; n < RESUME_BATCH && d->wait_len && !full(d);) {
		struct ack_owner *o = d->waiting[d->wait_head];
		d->wait_head = (d->wait_head + 1) & (d->wait_cap - 1);
		d->wait_len--;
		struct conn *c = o->c;
		ack_owner_unref(o);
		if (!c || c->state == CONN_CLOSING)
			continue;
		n++;
		if (conn_keepalive(c) && c->output_state != CONN_OUT_STALLED)
			loop_timer_set_deadline(l, &c->timer,
						(loop_now_ms(l) + (uint64_t)conn_keepalive(c) * 1500u + 999u) / 1000u);
		d->resuming = c;
		conn_input_resume(c);
		d->resuming = NULL;
		/* Decrypted input inside TLS is not reported by epoll. */
		if (c->state != CONN_CLOSING && !c->read_paused && transport_pending(conn_t(c)) &&
		    !list_linked(&c->read_link)) {
			list_push_back(&conn_set_of(c)->read_more, &c->read_link);
			loop_request_turn(l);
		}
	}
	kick(d);
}

uint64_t durable_reserve(struct durable *d, char *reply, size_t cap)
{
	struct broker *b = d->b;
	if (queues(d)) {
		if (d->fq_unsafe >= d->out_cap) {
			overflow(d);
			return 0;
		}
		/* Its reply subject is made when it is handed over. */
		snprintf(reply, cap, "%s0", jsw_reply_prefix(d->w));
		return FWD_KEY;
	}
	if (d->last_ticket - d->afloor >= d->out_cap) {
		overflow(d);
		return 0;
	}
	uint64_t ticket = ++d->last_ticket;
	d->done[ticket % d->out_cap] = 0;
	d->ticket_fwd[ticket % d->out_cap] = 0;
	d->direct_last = ticket;
	b->stats.cluster.pending = d->last_ticket - d->afloor;
	snprintf(reply, cap, "%s%llu", jsw_reply_prefix(d->w), (unsigned long long)ticket);
	return ticket;
}

static struct fwd *fq_at(const struct durable *d, size_t i) { return d->fq[(d->fq_head + i) & (d->fq_cap - 1)]; }

static void fq_stats(struct durable *d)
{
	d->b->stats.cluster.forward_queued = d->fq_stored;
	d->b->stats.cluster.forward_bytes = d->fq_bytes;
	d->b->stats.cluster.pending = d->last_ticket - d->afloor;
}

/* Puts f in the store's forwarding queue if the bounds let it. */
static bool fq_store(struct durable *d, struct fwd *f)
{
	if (d->fq_stored >= d->fwd_max || d->fq_bytes + f->bytes > d->fwd_max_bytes)
		return false;
	if (persist_forward_add(d->b, f->m, f->id, f->id_len) != 0)
		return false; /* the store logs why; its ack waits for JetStream */
	f->stored = true;
	d->fq_stored++;
	d->fq_bytes += f->bytes;
	return true;
}

/* A new message that the store's forwarding queue had no room for. */
static void fq_full(struct durable *d)
{
	d->b->stats.cluster.forward_overflow++;
	if (!d->fwd_full_said)
		log_msg(LOG_WARNING, "cluster",
			"the store's forwarding queue is full (%zu messages, %llu bytes: cluster.forward_queue, "
			"forward_queue_bytes): new QoS 1/2 messages for other nodes wait for JetStream, their "
			"acks held; counted in $SYS/broker/cluster/forward/overflow", d->fq_stored,
			(unsigned long long)d->fq_bytes);
	d->fwd_full_said = true;
}

/* Stores, in order, what waits unstored (after the bounds refused it). */
static void fq_store_waiting(struct durable *d)
{
	for (size_t i = d->fq_safe; i < d->fq_len && d->can_store; i++) {
		struct fwd *f = fq_at(d, i);
		if (f->stored || f->acked)
			continue;
		if (!fq_store(d, f))
			break; /* in order: a later one must not be acked first */
		d->fq_unsafe--;
	}
}

static void on_retry(struct loop *l, struct loop_timer *t);

/* Hands fq's entries to the worker, in order, once JetStream is back and
 * every ticket handed before them is acked (so none overtakes them). */
static void fq_pump(struct durable *d)
{
	while (is_up(d) && d->afloor >= d->direct_last && d->fq_handed < d->fq_len &&
	       d->last_ticket - d->afloor < d->out_cap) {
		struct fwd *f = fq_at(d, d->fq_handed);
		uint64_t ticket = d->last_ticket + 1;
		char reply[128];
		snprintf(reply, sizeof reply, "%s%llu", jsw_reply_prefix(d->w), (unsigned long long)ticket);
		natsMsg *nm = NULL;
		if (d->make(d->route_ctx, f->m, reply, &nm) != 0 ||
		    natsMsgHeader_Set(nm, "Nats-Msg-Id", f->id) != NATS_OK) {
			natsMsg_Destroy(nm);
			log_limited("cluster_forward_nomem", LOG_WARNING, "cluster",
				    "out of memory handing queued messages to JetStream: retrying in a second");
			if (!loop_timer_armed(&d->retry))
				loop_timer_start(d->b->loop, &d->retry, 1, on_retry);
			break;
		}
		d->last_ticket = ticket;
		d->done[ticket % d->out_cap] = 0;
		d->ticket_fwd[ticket % d->out_cap] = d->fq_base + d->fq_handed;
		f->ticket = ticket;
		d->fq_handed++;
		jsw_publish(d->w, nm, ticket);
	}
	fq_stats(d);
}

static void advance(struct durable *d);

/* After a change: the safe prefix grows, what JetStream has leaves (and
 * the store), more is stored or handed over, and held acks go. */
static void floors(struct durable *d)
{
	while (d->afloor < d->last_ticket && d->done[(d->afloor + 1) % d->out_cap] & T_ACKED)
		d->afloor++;
	while (d->floor < d->last_ticket && d->done[(d->floor + 1) % d->out_cap])
		d->floor++;
}

static void fq_settle(struct durable *d)
{
	floors(d);
	while (d->fq_len) {
		struct fwd *f = fq_at(d, 0);
		if (!f->acked)
			break;
		if (f->stored) {
			persist_forward_del(d->b, f->m);
			d->fq_stored--;
			d->fq_bytes -= f->bytes;
		}
		msg_unref(f->m);
		wisp_free(f);
		d->fq_head = (d->fq_head + 1) & (d->fq_cap - 1);
		d->fq_len--;
		d->fq_base++;
		d->fq_handed--;
		if (d->fq_safe)
			d->fq_safe--;
	}
	if (d->fq_stored < d->fwd_max / 2 && d->fq_bytes < d->fwd_max_bytes / 2)
		d->fwd_full_said = false; /* the episode ends once it has drained */
	fq_store_waiting(d);
	while (d->fq_safe < d->fq_len && (fq_at(d, d->fq_safe)->stored || fq_at(d, d->fq_safe)->acked))
		d->fq_safe++;
	fq_pump(d);
	advance(d);
	if (d->buffering_said && is_up(d) && !d->fq_len && !d->fq_stored) {
		char but[96] = "";
		if (d->too_large_seen != d->too_large_at_down)
			snprintf(but, sizeof but, ", but %llu given up as over NATS's max_payload",
				 (unsigned long long)(d->too_large_seen - d->too_large_at_down));
		log_msg(LOG_NOTICE, "cluster", "forwarding queue drained: every QoS 1/2 message kept while "
			"JetStream was out of reach is in stream '%s'%s", d->stream, but);
		d->buffering_said = false;
	}
}

static void on_retry(struct loop *l, struct loop_timer *t)
{
	(void)l;
	fq_settle(container_of(t, struct durable, retry));
}

static int fq_grow(struct durable *d)
{
	size_t cap = d->fq_cap ? d->fq_cap * 2 : 64;
	struct fwd **v = wisp_malloc(cap * sizeof *v);
	if (!v)
		return WISP_ENOMEM;
	for (size_t i = 0; i < d->fq_len; i++)
		v[i] = fq_at(d, i);
	wisp_free(d->fq);
	d->fq = v;
	d->fq_head = 0;
	d->fq_cap = cap;
	return 0;
}

/* Appends m to fq with its Nats-Msg-Id (a new one when id is NULL); a
 * restored one is in the store already. The new entry, or NULL. */
static struct fwd *fq_add(struct durable *d, struct msg *m, const char *id, bool restored)
{
	char made[256];
	if (!id) {
		snprintf(made, sizeof made, "%s-%s-f%llu", d->node, d->run, (unsigned long long)++d->fwd_n);
		id = made;
	}
	size_t id_len = strlen(id);
	if (id_len > 255 || (d->fq_len == d->fq_cap && fq_grow(d) != 0))
		return NULL;
	struct fwd *f = wisp_malloc(sizeof *f + id_len + 1);
	if (!f)
		return NULL;
	*f = (struct fwd){.m = msg_ref(m), .bytes = msg_size(m), .stored = restored, .id_len = (uint8_t)id_len};
	memcpy(f->id, id, id_len + 1);
	d->fq[(d->fq_head + d->fq_len++) & (d->fq_cap - 1)] = f;
	if (restored) {
		d->fq_stored++;
		d->fq_bytes += f->bytes;
	} else if (d->fq_safe + 1 < d->fq_len || !fq_store(d, f)) {
		/* No room, or an earlier one waits unstored: this one waits for
		 * JetStream (or room) too, in order. New ones are stored while
		 * fq drains as well, so a long drain does not hold acks. */
		fq_full(d);
		d->fq_unsafe++;
	}
	if (!restored && !is_up(d) && !d->buffering_said) {
		log_msg(LOG_WARNING, "cluster", "JetStream out of reach: QoS 1/2 messages for other nodes are kept in "
			"the store (cluster.forward_queue) and acknowledged; they go to stream '%s' when it is back",
			d->stream);
		d->buffering_said = true;
	}
	return f;
}

static void advance(struct durable *d)
{
	floors(d);
	fq_stats(d);
	if (d->last_ticket - d->afloor < d->out_cap / 2 && d->fq_unsafe < d->out_cap / 2) {
		d->overflow_logged = false; /* the episode ends once it has drained */
		d->wait_logged = d->wait_len != 0;
	}
	release(d);
	kick(d);
}

void durable_cancel(struct durable *d, uint64_t ticket, const struct msg *m)
{
	/* Neither in JetStream nor kept here: no ack (gate_hold). */
	d->ack_fail = true;
	d->ack_origin = m->origin;
	if (ticket & FWD_KEY)
		return;
	d->done[ticket % d->out_cap] = T_ACKED;
	advance(d);
}

int durable_publish(struct durable *d, natsMsg *nm, const struct msg *m, uint64_t ticket)
{
	if (ticket & FWD_KEY) {
		struct fwd *f = fq_add(d, (struct msg *)m, NULL, false);
		if (!f) {
			/* Not kept, and crossing at most once would ack it
			 * unsafe: its ack fails instead (gate_hold). */
			d->ack_fail = true;
			d->ack_origin = m->origin;
			return WISP_ENOMEM;
		}
		natsMsg_Destroy(nm);
		uint64_t fseq = d->fq_base + d->fq_len - 1;
		d->ack_ticket = f->stored ? 0 : FWD_KEY | fseq;
		d->ack_origin = m->origin;
		d->ack_fail = false;
		fq_settle(d);
		return 0;
	}
	char id[160];
	snprintf(id, sizeof id, "%s-%s-%llu", d->node, d->run, (unsigned long long)ticket);
	if (natsMsgHeader_Set(nm, "Nats-Msg-Id", id) != NATS_OK) {
		durable_cancel(d, ticket, m);
		return WISP_ENOMEM;
	}
	d->ack_ticket = ticket;
	d->ack_origin = m->origin;
	d->ack_fail = false;
	if (d->can_store) /* kept, should JetStream go away before it acks */
		d->ticket_msg[ticket % d->out_cap] = msg_ref((struct msg *)m);
	jsw_publish(d->w, nm, ticket);
	return 0;
}

/* JetStream just went out of reach: what was handed to it and is not
 * acked yet goes to the store's forwarding queue too, oldest first, with
 * the Nats-Msg-Id it was sent with, so that its publisher's ack need not
 * wait for the outage's end (the worker still re-sends it; a restart
 * publishes it from the store). */
static void store_outstanding(struct durable *d)
{
	for (uint64_t t = d->floor + 1; t <= d->last_ticket && d->can_store; t++) {
		size_t i = (size_t)(t % d->out_cap);
		struct msg *m = d->ticket_msg[i];
		if (d->done[i] || !m)
			continue;
		char id[160];
		snprintf(id, sizeof id, "%s-%s-%llu", d->node, d->run, (unsigned long long)t);
		size_t bytes = msg_size(m);
		if (d->fq_stored >= d->fwd_max || d->fq_bytes + bytes > d->fwd_max_bytes) {
			fq_full(d); /* the rest keep their acks waiting for JetStream */
			break;
		}
		if (persist_forward_add(d->b, m, id, strlen(id)) != 0)
			break; /* in order: a later one must not be acked first */
		d->done[i] = T_STORED;
		d->fq_stored++;
		d->fq_bytes += bytes;
	}
}

static void went_down(struct durable *d)
{
	store_outstanding(d);
	if (d->can_store && !d->buffering_said) {
		log_msg(LOG_WARNING, "cluster", "JetStream out of reach: QoS 1/2 messages for other nodes are kept in "
			"the store (cluster.forward_queue) and acknowledged; they go to stream '%s' when it is back",
			d->stream);
		d->buffering_said = true;
		d->too_large_at_down = d->too_large_seen;
	}
}

/* The worker made the node consumer again: the NATS server lost messages
 * it had acknowledged (jetstream.c's remake_if_ahead). Not this node's
 * loss to count, but an operator's to know of: logged each time. */
static void remade(struct durable *d)
{
	uint64_t delivered, last, from, groups;
	uint64_t n = jsw_remade(d->w, &delivered, &last, &from, &groups);
	if (groups != d->groups_remade_seen) {
		log_msg(LOG_WARNING, "cluster", "%llu shared groups' consumers on stream '%s' were ahead of it (the NATS "
			"server lost its last writes?) and were made again from their ack floor, so that new messages "
			"with those sequences reach the groups", (unsigned long long)(groups - d->groups_remade_seen),
			d->stream);
		d->groups_remade_seen = groups;
	}
	if (n == d->remade_seen)
		return;
	d->remade_seen = n;
	log_msg(LOG_WARNING, "cluster", "stream '%s' ends at sequence %llu, below the %llu its consumer '%s' was "
		"given: the NATS server lost its last writes (killed before it wrote them?), and messages it had "
		"acknowledged may be gone. Consumer '%s' made again from sequence %llu, so that new messages with "
		"those sequences reach this node; what was routed here before is acked, not routed again",
		d->stream, (unsigned long long)last, (unsigned long long)delivered, d->consumer, d->consumer,
		(unsigned long long)from);
}

/* Messages the worker gave up as over NATS's max_payload (their tickets
 * come back as done: their acks go, the forwarding queue moves on):
 * counted, and logged once per set-up of the stream. cluster.c checks
 * each message first, so these are the ones that passed that check: kept
 * in the store while NATS was down, or a server with a smaller limit
 * since. */
static void too_large(struct durable *d)
{
	uint64_t count;
	int64_t bytes, limit;
	jsw_too_large(d->w, &count, &bytes, &limit);
	if (count == d->too_large_seen)
		return; /* counted at an earlier event */
	d->b->stats.cluster.too_large += count - d->too_large_seen;
	d->too_large_seen = count;
	if (d->too_large_said)
		return;
	d->too_large_said = true;
	log_msg(LOG_WARNING, "cluster", "a QoS 1/2 message for other nodes (payload %lld bytes, plus its NATS "
		"headers) is over NATS's max_payload (%lld bytes): dropped from the stream (kept here while NATS was "
		"down, or NATS's limit shrank), it reached this node's subscribers only and its publisher was "
		"acknowledged; counted in $SYS/broker/cluster/messages/too_large. Raise nats-server's max_payload, or "
		"lower limits.max_packet_size", (long long)bytes, (long long)limit);
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
	bool was_up = is_up(d);
	if (ev & (JSW_EV_READY | JSW_EV_DOWN | JSW_EV_UP | JSW_EV_CLOSED))
		d->connected = jsw_connected(d->w);
	if (ev & JSW_EV_CLOSED && !d->closed_said) {
		char why[160];
		jsw_closed_reason(d->w, why, sizeof why);
		d->closed_said = true;
		log_msg(LOG_ERROR, "cluster", "NATS closed the JetStream connection '%s-js' for good (%s): QoS 1/2 "
			"messages for other nodes %s; connecting again on its own (every %d s doubling to %d s)",
			d->consumer, why, d->can_store ? "are kept in the store" : "wait for it, their acks held",
			NATS_REJOIN_FIRST_MS / 1000, NATS_REJOIN_MAX_MS / 1000);
	}
	if (ev & JSW_EV_READY && d->closed_said) {
		d->closed_said = false;
		log_msg(LOG_NOTICE, "cluster", "the JetStream connection '%s-js' is back: stream '%s' set up again",
			d->consumer, d->stream);
	}
	if (ev & JSW_EV_READY)
		d->too_large_said = false; /* perhaps another server, another max_payload */
	if (ev & JSW_EV_TOO_LARGE)
		too_large(d);
	if (ev & JSW_EV_REMADE)
		remade(d);
	if (ev & JSW_EV_LIMITS_SET)
		log_msg(LOG_NOTICE, "cluster", "consumer '%s' on stream '%s' now has cluster.ack_wait %u s and "
			"MaxAckPending %u (cluster.inbound_queue)", d->consumer, d->stream, d->b->cfg->cluster.ack_wait,
			d->b->cfg->cluster.inbound_queue);
	if (ev & JSW_EV_LIMITS_KEPT)
		log_msg(LOG_WARNING, "cluster", "JetStream refused to give consumer '%s' cluster.ack_wait %u s and "
			"MaxAckPending %u: it keeps the ones it was made with", d->consumer,
			d->b->cfg->cluster.ack_wait, d->b->cfg->cluster.inbound_queue);
	if (ev & JSW_EV_READY && !d->ready) {
		d->ready = true;
		d->b->stats.cluster.durable_ready = 1;
		d->setup_failed_said = false;
		log_msg(LOG_NOTICE, "cluster", "JetStream ready: QoS 1/2 cross nodes through stream '%s' (consumer '%s')",
			d->stream, d->consumer);
	}
	uint64_t gid;
	while (ev & JSW_EV_GROUP && jsw_group_ready(d->w, &gid))
		if (d->group_ready)
			d->group_ready(d->group_ctx, gid);
	jsConsumerNamesList *names;
	uint64_t ask;
	if (ev & JSW_EV_CONSUMERS && jsw_consumers_take(d->w, &names, &ask)) {
		if (d->consumers)
			d->consumers(d->consumers_ctx, names ? (const char *const *)names->List : NULL,
				     names && names->Count > 0 ? (size_t)names->Count : 0, ask);
		jsConsumerNamesList_Destroy(names);
	}
	if (ev & JSW_EV_GROUP_FAILED)
		log_msg(LOG_WARNING, "cluster", "cannot make or bind a shared group's consumer on stream '%s': retrying "
			"every half second; until then its members here get none of its QoS 1/2 messages from the "
			"stream, and a new member's SUBACK waits up to cluster.interest_ack_timeout", d->stream);
	if (ev & JSW_EV_SETUP_FAILED && !d->setup_failed_said) {
		d->setup_failed_said = true;
		log_msg(LOG_WARNING, "cluster", "cannot set up JetStream stream '%s' (is nats-server running with -js?): "
			"retrying; QoS 1/2 acks for messages to other nodes wait until it is there", d->stream);
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t t = (uint64_t)(uintptr_t)batch[i];
		if (t <= d->afloor || t > d->last_ticket)
			continue;
		uint8_t *flags = &d->done[t % d->out_cap];
		if (*flags & T_ACKED)
			continue;
		if (*flags & T_STORED) {
			struct msg *m = d->ticket_msg[t % d->out_cap];
			persist_forward_del(d->b, m);
			d->fq_stored--;
			d->fq_bytes -= msg_size(m);
		}
		*flags |= T_ACKED;
		msg_unref(d->ticket_msg[t % d->out_cap]);
		d->ticket_msg[t % d->out_cap] = NULL;
		uint64_t fseq = d->ticket_fwd[t % d->out_cap];
		d->ticket_fwd[t % d->out_cap] = 0;
		if (fseq >= d->fq_base && fseq - d->fq_base < d->fq_len) {
			struct fwd *f = fq_at(d, (size_t)(fseq - d->fq_base));
			if (!f->acked && !f->stored)
				d->fq_unsafe--;
			f->acked = true;
		}
	}
	if (was_up && !is_up(d))
		went_down(d);
	fq_settle(d);
}

void durable_core_connected(struct durable *d, bool up)
{
	if (!d || d->core_down == !up)
		return;
	bool was_up = is_up(d);
	d->core_down = !up;
	if (was_up && !is_up(d))
		went_down(d);
	fq_settle(d);
}

/* ---- in ---- */

/* After each set-up of the stream: one that ends below the window's floor
 * was made anew (deleted, or a NATS server without its store). Its
 * sequences come again, told apart by their time stamps: the operator is
 * told. */
static void check_stream_setup(struct durable *d)
{
	uint64_t setups, last_seq;
	jsw_stream_state(d->w, &setups, &last_seq);
	if (setups == d->setups_seen)
		return;
	d->setups_seen = setups;
	if (d->seen.init && last_seq < d->seen.floor)
		log_msg(LOG_WARNING, "cluster", "stream '%s' ends at sequence %llu, below the %llu this node routed: it "
			"was made anew (or its NATS server lost its store); its messages are told from redeliveries of "
			"what was routed before by their time stamps", d->stream, (unsigned long long)last_seq,
			(unsigned long long)d->seen.floor);
}

/* Whether a message whose sequence is marked was stored after every one
 * routed here: a new message that got a sequence again. */
static bool newer_than_routed(const struct durable *d, uint64_t stamp)
{
	return !d->stamp_unknown && stamp > d->routed_stamp;
}

uint64_t durable_msg_seq(natsMsg *nm)
{
	jsMsgMetaData *meta = NULL;
	uint64_t seq = 0;
	if (natsMsg_GetMetaData(&meta, nm) == NATS_OK) {
		seq = meta->Sequence.Stream;
		jsMsgMetaData_Destroy(meta);
	}
	return seq;
}

size_t durable_routed_encode(const struct durable *d, char *out, size_t cap)
{
	return seq_window_encode(&d->seen, out, cap);
}

/*
 * A sequence this run's consumer will not deliver cannot reach a session
 * here, so it is not waited for: one stored before the first set-up of the
 * stream this run (the consumer, new, starts at the node's start; or, as
 * it was, it delivered them to an earlier run), or below the first one
 * delivered. (A message left unacked by an earlier run and delivered again
 * after its ack wait is not waited for either.)
 */
bool durable_routed_all(struct durable *d, const char *set)
{
	struct seq_set ss;
	if (!seq_set_parse(set, &ss))
		return true;
	if (!d->setup_known) {
		uint64_t setups = 0, last = 0;
		jsw_stream_state(d->w, &setups, &last);
		if (!setups)
			return false; /* the stream is not set up yet: nothing can be told */
		d->setup_known = true;
		d->setup_last_seq = last;
	}
	uint64_t gone = d->setup_last_seq;
	if (d->run_first_seq && d->run_first_seq - 1 > gone)
		gone = d->run_first_seq - 1;
	uint64_t top = seq_set_max(&ss);
	uint64_t from = d->seen.init ? d->seen.floor + 1 : 1;
	if (from <= gone)
		from = gone + 1;
	for (uint64_t s = from; s <= top; s++)
		if (seq_set_has(&ss, s) && !seq_window_has(&d->seen, s))
			return false;
	return true;
}

/* After a batch: a window stretched past its first span (a message left
 * unacked holds its floor) asks for the consumer's ack floor again, at
 * most once a second; messages past its bound are logged once an episode. */
static void check_window(struct durable *d)
{
	if (d->seen.top - d->seen.floor > d->seen_span || d->far != d->far_seen) {
		uint64_t now = loop_now_s(d->b->loop);
		if (now != d->floor_asked_s) {
			d->floor_asked_s = now;
			jsw_ask_ack_floor(d->w);
		}
	}
	if (d->far != d->far_seen) {
		log_limited("cluster_stream_far", LOG_INFO, "cluster",
			    "%llu stream messages wait for a later redelivery: more than %zu sequences above the "
			    "oldest one not yet acked at JetStream (sequence %llu)",
			    (unsigned long long)(d->far - d->far_seen), d->seen.max_span,
			    (unsigned long long)d->seen.floor + 1);
		d->far_seen = d->far;
	}
}

/* pend grows: every group's consumer adds its MaxAckPending. */
static int pend_grow(struct durable *d)
{
	size_t cap = d->pend_cap * 2;
	struct pending_ack *v = wisp_malloc(cap * sizeof *v);
	if (!v)
		return WISP_ENOMEM;
	for (size_t i = 0; i < d->pend_len; i++)
		v[i] = d->pend[(d->pend_head + i) % d->pend_cap];
	wisp_free(d->pend);
	d->pend = v;
	d->pend_head = 0;
	d->pend_cap = cap;
	return 0;
}

static void ack_when_safe(struct durable *d, natsMsg *nm, uint64_t key)
{
	uint64_t need = persist_seq(d->b);
	if (need <= persist_safe_seq(d->b) || (d->pend_len == d->pend_cap && pend_grow(d) != 0) ||
	    keycount_add(&d->pend_keys, key) != 0) {
		/* Out of memory only: acked before the store's write (a kill
		 * -9 just then loses the stored copy, as a full store would). */
		stream_ack(d, nm);
		return;
	}
	d->pend[(d->pend_head + d->pend_len++) % d->pend_cap] = (struct pending_ack){nm, need, key};
}

/*
 * A redelivery of a message routed (or given to a group's member) before:
 * acked, not routed again, but no sooner than a first delivery is. Its
 * first delivery's ack may still wait here for the store (one that could
 * not write for a whole cluster.ack_wait): acked at once, JetStream
 * would take it for safe, and a kill -9 before the store wrote lost the
 * copies made for persistent sessions. While an ack of the same message waits,
 * the redelivery is dropped unacked (JetStream delivers it again each ack
 * wait while the store is stuck; held, they would pile up), so the queue
 * holds at most two per message JetStream has pending here.
 */
static void ack_again(struct durable *d, natsMsg *nm, uint64_t key)
{
	if (persist_seq(d->b) > persist_safe_seq(d->b) && keycount_get(&d->pend_keys, key)) {
		natsMsg_Destroy(nm);
		return;
	}
	ack_when_safe(d, nm, key);
}

/* A group message's key in gseen: the consumer's name, the stream
 * sequence and the time stamp (a sequence given again to a new message
 * has a newer one), never 0. */
static uint64_t gseen_key(const char *consumer, uint64_t seq, uint64_t stamp)
{
	uint64_t h = hash_bytes(0, consumer, strlen(consumer));
	uint64_t k = (h << 32 ^ seq * UINT64_C(0x9e3779b97f4a7c15)) ^ seq ^ stamp * UINT64_C(0xc2b2ae3d27d4eb4f);
	return k ? k : 1;
}

/* Whether the group message (consumer, seq, stamp) was given to a member
 * here this run; marks it. NumDelivered does not tell: a NATS server
 * killed before it wrote the consumer's state delivers acked messages
 * again as first deliveries (e2e 31's NATS restart got QoS 2 duplicates
 * so). */
static bool gseen(struct durable *d, uint64_t k)
{
	if (!d->gseen) {
		d->gseen = wisp_calloc(d->gseen_cap, sizeof *d->gseen);
		if (!d->gseen)
			return false; /* out of memory: a redelivery may go twice */
	}
	uint64_t *slot = &d->gseen[k % d->gseen_cap];
	if (*slot == k)
		return true;
	*slot = k;
	return false;
}

/* A message of a group's consumer (not the node's): to one member. */
static void group_msg(struct durable *d, natsMsg *nm, const char *consumer, uint64_t seq, uint64_t stamp)
{
	struct broker *b = d->b;
	if (!d->route_group || !seq) {
		natsMsg_Destroy(nm); /* unacked: another node's member gets it */
		return;
	}
	uint64_t key = gseen_key(consumer, seq, stamp);
	if (gseen(d, key)) {
		log_limited("cluster_group_again", LOG_INFO, "cluster",
			    "a shared group's message delivered again was given to a member here before: acked, "
			    "not delivered again");
		ack_again(d, nm, key);
		return;
	}
	bool gone = false;
	const char *why = d->route_group(d->group_ctx, nm, consumer, &gone);
	if (gone) {
		/* Not this node's any more: unacked, so the group's members
		 * elsewhere get it after the ack wait; forgotten here, so it is
		 * delivered should the group come back. */
		if (d->gseen)
			d->gseen[key % d->gseen_cap] = 0;
		natsMsg_Destroy(nm);
		return;
	}
	if (why && *why) {
		b->stats.cluster.dropped++;
		log_limited("cluster_dropped", LOG_INFO, "cluster", "message from stream on '%s' dropped: %s",
			    natsMsg_GetSubject(nm), why);
	}
	ack_when_safe(d, nm, key);
}

void durable_set_consumers(struct durable *d, durable_consumers_fn fn, void *ctx)
{
	d->consumers = fn;
	d->consumers_ctx = ctx;
}

uint64_t durable_list_consumers(void *d) { return jsw_list_consumers(((struct durable *)d)->w); }

void durable_set_groups(struct durable *d, durable_route_group_fn route, void (*ready)(void *ctx, uint64_t id),
			void *ctx)
{
	d->route_group = route;
	d->group_ready = ready;
	d->group_ctx = ctx;
}

bool durable_group_join(struct durable *d, uint64_t id, const char *name, const char *subject, const char *parent)
{
	if (jsw_group_join(d->w, id, name, subject, parent) != 0) {
		log_msg(LOG_WARNING, "cluster", "out of memory: shared group consumer '%s' not bound: the group gets "
			"QoS 1/2 messages through the stream only on other nodes", name);
		return false;
	}
	return is_up(d);
}

void durable_group_leave(struct durable *d, uint64_t id) { jsw_group_leave(d->w, id); }

#ifndef NDEBUG
static void on_hold_timer(struct loop *l, struct loop_timer *t)
{
	struct durable *d = container_of(t, struct durable, hold_timer);
	loop_io_set(l, &d->msgs_io, LOOP_READ); /* on_msgs looks again */
}

/* Debug builds: WISP_DEBUG_HOLD_STREAM_ROUTING=<path> leaves received
 * stream messages in the inbox until <path> exists (looked at every
 * second), so that a test can have this node's consumer behind another
 * node's during a handover (e2e 29). */
static bool routing_held(struct durable *d)
{
	const char *path = getenv("WISP_DEBUG_HOLD_STREAM_ROUTING");
	if (!path || access(path, F_OK) == 0)
		return false;
	if (!d->routing_held)
		log_msg(LOG_NOTICE, "cluster", "stream routing held (WISP_DEBUG_HOLD_STREAM_ROUTING)");
	d->routing_held = true;
	loop_io_set(d->b->loop, &d->msgs_io, 0);
	loop_timer_start(d->b->loop, &d->hold_timer, 1, on_hold_timer);
	return true;
}
#endif

static void on_msgs(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	(void)events;
	struct durable *d = container_of(io, struct durable, msgs_io);
	struct broker *b = d->b;
#ifndef NDEBUG
	if (routing_held(d))
		return;
#endif
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
	if (n) {
		check_stream_setup(d);
		uint64_t acked;
		if (jsw_ack_floor(d->w, &acked))
			seq_window_raise(&d->seen, acked);
	}
	size_t again = 0;
	for (size_t i = 0; i < n; i++) {
		natsMsg *nm = batch[i];
		jsMsgMetaData *meta = NULL;
		uint64_t seq = 0, stamp = 0;
		if (natsMsg_GetMetaData(&meta, nm) == NATS_OK) {
			seq = meta->Sequence.Stream;
			stamp = meta->Timestamp > 0 ? (uint64_t)meta->Timestamp : 0;
			if (meta->Consumer && strcmp(meta->Consumer, d->consumer) != 0) {
				group_msg(d, nm, meta->Consumer, seq, stamp);
				jsMsgMetaData_Destroy(meta);
				continue;
			}
			jsMsgMetaData_Destroy(meta);
		}
		if (!d->run_first_seq)
			d->run_first_seq = seq;
		enum seq_mark mark = seq ? seq_window_mark(&d->seen, seq) : SEQ_WINDOW_NEW;
		if (mark == SEQ_WINDOW_FAR) {
			d->far++;
			natsMsg_Destroy(nm); /* unacked: JetStream delivers it again after its ack wait */
			continue;
		}
		const char *node = NULL;
		natsMsgHeader_Get(nm, "Wisp-Node", &node);
		bool routed_before = mark == SEQ_WINDOW_MARKED && !newer_than_routed(d, stamp);
		if (stamp > d->routed_stamp)
			d->routed_stamp = stamp;
		bool own = node && strcmp(node, d->node) == 0;
		if (seq == 0 || routed_before || own) {
			again += routed_before && !own;
			if (seq && !routed_before)
				d->route(d->route_ctx, nm, seq, true); /* its stream sequence, for a handover's cut */
			if (routed_before && !own)
				ack_again(d, nm, seq);
			else
				stream_ack(d, nm); /* own (its publisher's ack waited for the store), or no metadata */
			continue;
		}
		uint64_t before = persist_seq(b);
		const char *why = d->route(d->route_ctx, nm, seq, false);
		/* Copies for persistent sessions were appended: the record that
		 * it was routed follows them into the same write. */
		if (persist_seq(b) != before)
			persist_stream_taken(b, d->seen.floor, seq, d->routed_stamp);
		if (why && *why) {
			b->stats.cluster.dropped++;
			log_limited("cluster_dropped", LOG_INFO, "cluster", "message from stream on '%s' dropped: %s",
				    natsMsg_GetSubject(nm), why);
		}
		ack_when_safe(d, nm, seq);
	}
	if (n)
		check_window(d);
	if (again)
		log_limited("cluster_stream_again", LOG_INFO, "cluster",
			    "%zu stream messages delivered again were routed before (here or before a restart): "
			    "acked once the store holds what they made, not routed again", again);
}

/* ---- start and stop ---- */

int durable_start(struct broker *b, const char *node, const char *run, const struct nats_signer *signer,
		  durable_route_fn route,
		  durable_make_fn make, void *route_ctx, struct durable **out)
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
	d->make = make;
	d->route_ctx = route_ctx;
	d->can_store = b->persist.store != NULL && cfg->forward_queue > 0;
	d->fwd_max = cfg->forward_queue;
	d->fwd_max_bytes = cfg->forward_queue_bytes;
	d->fq_base = 1;
	d->acks.efd = d->msgs.efd = -1;
	d->acks_io.fd = d->msgs_io.fd = -1;
	d->out_cap = cfg->outbound_queue;
	size_t in_cap = cfg->inbound_queue;
	d->pend_cap = 2 * in_cap;
	d->stream = wisp_strndup(cfg->stream, strlen(cfg->stream));
	/* The consumer is named after the node; a host name may hold what a
	 * consumer name may not ('.', wildcards, spaces). */
	d->consumer = wisp_strndup(node, strlen(node));
	for (char *p = d->consumer; p && *p; p++)
		*p = dormant_consumer_char(*p);
	d->done = wisp_calloc(d->out_cap, 1);
	d->ticket_fwd = wisp_calloc(d->out_cap, sizeof *d->ticket_fwd);
	d->ticket_msg = wisp_calloc(d->out_cap, sizeof *d->ticket_msg);
	/* Its first span: four times what the consumer may have unacked;
	 * more while a message left unacked holds the floor (for an ack wait
	 * at least), bounded. */
	d->seen_span = 4 * (uint64_t)in_cap;
	int wrc = seq_window_init(&d->seen, 4 * in_cap, 4 * in_cap > SEEN_MAX_SEQS ? 4 * in_cap : SEEN_MAX_SEQS);
	d->gseen_cap = in_cap;
	d->pend = wisp_calloc(d->pend_cap, sizeof *d->pend);
	int rc = WISP_ENOMEM;
	if (!d->stream || !d->consumer || !d->done || !d->ticket_fwd || !d->ticket_msg || wrc != 0 || !d->pend)
		goto fail;
	/* What the store says was routed before a restart. */
	const uint64_t *taken;
	uint64_t floor = 0;
	size_t ntaken = persist_stream_window(b, &floor, &d->routed_stamp, &taken);
	seq_window_restore(&d->seen, floor, taken, ntaken);
	d->stamp_unknown = d->seen.init && d->routed_stamp == 0;
#ifndef NDEBUG
	d->hold_stream_acks = getenv("WISP_DEBUG_HOLD_STREAM_ACKS") != NULL;
#endif
	/* What the store kept from the last run goes first, in its order. */
	struct msg *m;
	const char *id;
	for (size_t i = 0; persist_forward_get(b, i, &m, &id); i++)
		if (!fq_add(d, m, id, true))
			goto fail;
	d->buffering_said = d->fq_len > 0; /* says when they are all there */
	if (d->fq_len)
		log_msg(LOG_NOTICE, "cluster", "%zu QoS 1/2 messages kept in the store go to stream '%s' once "
			"JetStream is reachable", d->fq_len, cfg->stream);
	d->fq_safe = d->fq_len;
	/* acks: every outstanding ticket fits, so a ticket is never refused. */
	if (inbox_init(&d->acks, d->out_cap + 1) != 0 ||
	    inbox_init_bytes(&d->msgs, 2 * in_cap, cfg->inbound_queue_bytes) != 0)
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
		.duplicate_window_s = (int64_t)cfg->duplicate_window,
		.out_cap = d->out_cap,
		.ack_cap = in_cap,
		.start_ns = (int64_t)time(NULL) * 1000000000LL,
		.ack_wait_s = (int64_t)cfg->ack_wait,
		.group_ack_wait_s = (int64_t)cfg->group_ack_wait,
		.group_inactive_s = (int64_t)cfg->group_inactive,
		.auth = cfg,
		.signer = signer,
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
	durable_stop(d, NULL); /* its own connection closed first: nothing else looks its subscriptions up */
	durable_free(d);
	return rc;
}

static void free_msg(void *m) { natsMsg_Destroy(m); }

void durable_stop(struct durable *d, struct nats_retire *retired)
{
	if (!d)
		return;
	jsw_stop(d->w, retired); /* no stream message arrives after it */
	/* Received messages go unacked (JetStream delivers them again), and
	 * before the connection closes: cnats's shutdown frees what
	 * destroying one needs. */
	while (d->pend_len)
		natsMsg_Destroy(pend_pop(d));
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
		if (h->o->c)
			h->o->c->rare->gate_held_acks = 0;
		ack_owner_unref(h->o);
	}
	jsw_free(d->w);
	if (d->acks_io.fd >= 0)
		loop_io_stop(b->loop, &d->acks_io);
	if (d->msgs_io.fd >= 0)
		loop_io_stop(b->loop, &d->msgs_io);
	if (loop_timer_armed(&d->hold_timer))
		loop_timer_stop(b->loop, &d->hold_timer);
	inbox_free(&d->acks, NULL);
	inbox_free(&d->msgs, NULL); /* emptied and closed by durable_stop */
	if (loop_timer_armed(&d->retry))
		loop_timer_stop(b->loop, &d->retry);
	if (loop_timer_armed(&d->resume))
		loop_timer_stop(b->loop, &d->resume);
	for (size_t i = 0; i < d->wait_len; i++)
		ack_owner_unref(d->waiting[(d->wait_head + i) & (d->wait_cap - 1)]);
	wisp_free(d->waiting);
	/* Entries stay in the store (persist.c frees its own list). */
	for (size_t i = 0; i < d->fq_len; i++) {
		msg_unref(fq_at(d, i)->m);
		wisp_free(fq_at(d, i));
	}
	wisp_free(d->fq);
	for (size_t i = 0; d->ticket_msg && i < d->out_cap; i++)
		msg_unref(d->ticket_msg[i]);
	wisp_free(d->ticket_msg);
	wisp_free(d->ticket_fwd);
	wisp_free(d->held);
	wisp_free(d->pend);
	keycount_free(&d->pend_keys);
	seq_window_free(&d->seen);
	wisp_free(d->gseen);
	wisp_free(d->done);
	wisp_free(d->stream);
	wisp_free(d->consumer);
	wisp_free(d);
}
