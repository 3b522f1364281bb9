#include "persist.h"
#include "session_v5.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "broker.h"
#include "delivery.h"
#include "flight.h"
#include "hash.h"
#include "err.h"
#include "log.h"
#include "store.h"

/* An acknowledgement waiting for the records it vouches for: written to the
 * OS in every mode, and fsynced with fsync "always". They wait in a FIFO
 * ring (b->persist.held*) in seq order: in every mode the acks of a turn
 * that appended records pass through it until the turn's write, so it is
 * reused rather than allocated per ack. */
struct held_ack {
	struct ack_owner *o; /* its connection; o->c NULL once that closed */
	uint64_t seq;
	uint8_t len;
	uint8_t bytes[7]; /* PUBACK, PUBREC, PUBREL, PUBCOMP: 4 bytes in 3.1.1 */
};

/* An entry of the cluster's forwarding queue (persist.h): m NULL once
 * deleted out of order, until it reaches the head. */
struct persist_fwd {
	struct msg *m;
	char *id;
};

/* A retained mark as replayed: id NULL for RETAIN_SENT (until the load's
 * end, when only the topics whose last mark is RETAIN_UNSENT stay). */
struct persist_unsent {
	char *topic;
	size_t len;
	char *id;
};

/* Retrying a failed write or compaction: exponential backoff, in seconds
 * (the loop's timers tick in seconds). A disk that is full for an hour
 * costs one write attempt every WRITE_RETRY_MAX_S seconds, not one per
 * loop turn, and the log says so once per episode (store.c). */
#define WRITE_RETRY_MIN_S 1u
#define WRITE_RETRY_MAX_S 8u
#define COMPACT_RETRY_MIN_S 1u
#define COMPACT_RETRY_MAX_S 64u

static bool is_persistent(const struct session *s) { return s && !s->clean; }

/* The broker's own statistics are re-published every interval: not worth a
 * disk write, and stale after a restart anyway. */
static bool is_sys(const struct msg *m)
{
	return m->topic_len >= 5 && memcmp(msg_topic(m), "$SYS/", 5) == 0;
}

static void append_failed(struct broker *b, int rc)
{
	if (!b->persist.append_errors++)
		log_msg(LOG_ERROR, "store", "cannot record a change: %s", wisp_strerror(rc));
}

static struct store_str str_of(const char *p, size_t len) { return (struct store_str){p, len}; }

/*
 * The store's bookkeeping for a message it holds a record of, hung on
 * msg->stored: the record's id, how many stored records (retained entry,
 * queue and flight entries) still need it, and the compaction that last
 * wrote it. Allocated when the first record needs the message and freed
 * when the last one lets go (a MSG_DEL record says so); a plain block, so
 * msg_unref can free what a closed store left behind.
 */
struct persist_msg {
	uint64_t id;
	uint32_t refs;
	uint32_t emit_gen;
};

static uint64_t stored_id(const struct msg *m) { return m && m->stored ? m->stored->id : 0; }

static int attach_stored(struct msg *m, uint64_t id)
{
	struct persist_msg *pm = wisp_malloc(sizeof *pm);
	if (!pm)
		return WISP_ENOMEM;
	*pm = (struct persist_msg){.id = id};
	m->stored = pm;
	return 0;
}

/* The store keeps a Message Expiry deadline in Unix seconds (the loop's
 * clock starts afresh with every process). */
static uint64_t expiry_to_unix(const struct broker *b, const struct msg *m)
{
	if (!m->expires_at)
		return 0;
	uint64_t now = loop_now_s(b->loop);
	uint64_t left = m->expires_at > now ? m->expires_at - now : 0;
	return (uint64_t)time(NULL) + left;
}

static uint64_t expiry_from_unix(const struct broker *b, uint64_t unix_s)
{
	if (!unix_s)
		return 0;
	uint64_t wall = (uint64_t)time(NULL);
	uint64_t at = loop_now_s(b->loop) + (unix_s > wall ? unix_s - wall : 0);
	return at ? at : 1; /* 0 would mean "never" */
}

/* A message as the store keeps it: the one place that says which of its
 * fields are durable (the forwarded v5 properties and the expiry too). */
static struct store_msg msg_record(const struct broker *b, const struct msg *m, uint64_t id)
{
	return (struct store_msg){
		.id = id,
		.expiry = expiry_to_unix(b, m),
		.qos = m->qos,
		.flags = m->retain ? STORE_MSG_RETAIN : 0,
		.topic = {msg_topic(m), m->topic_len},
		.props = {msg_props(m), m->props_len},
		.payload = {msg_payload(m), m->payload_len},
	};
}

/* Takes a durable reference on m, writing the message itself on first use. */
static void durable_ref(struct broker *b, struct msg *m)
{
	struct store *st = b->persist.store;
	if (!m->stored) {
		struct store_msg rec = msg_record(b, m, store_next_msg_id(st));
		int rc = attach_stored(m, rec.id);
		if (rc == 0)
			rc = store_append_msg_put(st, &rec);
		if (rc != 0) {
			wisp_free(m->stored);
			m->stored = NULL;
			append_failed(b, rc);
			return;
		}
	}
	m->stored->refs++;
}

static void durable_unref(struct broker *b, struct msg *m)
{
	if (!m || !m->stored || m->stored->refs == 0)
		return;
	if (b->persist.loading) {
		/* Replay: the log already says what it says, and queue entries
		 * are counted once it is over (count_entry_refs). */
		m->stored->refs--;
		return;
	}
	if (--m->stored->refs == 0) {
		int rc = store_append_msg_del(b->persist.store, m->stored->id);
		if (rc != 0)
			append_failed(b, rc);
		wisp_free(m->stored);
		m->stored = NULL;
	}
}

/* ---- observer events: outbound QoS 1/2 state of persistent sessions ---- */

static uint8_t flight_state(const struct sess_msg *e)
{
	switch (e->state) {
	case SESS_MSG_WAIT_PUBACK:
		return STORE_FLIGHT_WAIT_PUBACK;
	case SESS_MSG_WAIT_PUBREC:
		return STORE_FLIGHT_WAIT_PUBREC;
	default:
		return STORE_FLIGHT_WAIT_PUBCOMP;
	}
}

/* A delivery's Subscription Identifiers as the store keeps them: a u32
 * little-endian each. Built on the stack for the usual few. */
struct ids_bytes {
	uint8_t stack[16 * 4];
	uint8_t *heap;
	struct store_bytes b;
};

static void ids_encode(const struct sess_msg *e, struct ids_bytes *x)
{
	x->heap = NULL;
	x->b = (struct store_bytes){NULL, 0};
	size_t need = (size_t)e->sub_id_count * 4;
	if (!need)
		return;
	uint8_t *p = need <= sizeof x->stack ? x->stack : (x->heap = wisp_malloc(need));
	if (!p)
		return; /* out of memory: the delivery is kept without its identifiers */
	for (uint16_t i = 0; i < e->sub_id_count; i++) {
		uint32_t id = e->sub_ids[i];
		p[4 * i] = (uint8_t)id;
		p[4 * i + 1] = (uint8_t)(id >> 8);
		p[4 * i + 2] = (uint8_t)(id >> 16);
		p[4 * i + 3] = (uint8_t)(id >> 24);
	}
	x->b = (struct store_bytes){p, need};
}

/* Queue and flight entries as the store keeps them: the one place that
 * says which fields of a delivery are durable. */
static struct store_queue queue_record(const struct session *s, const struct sess_msg *e, struct store_bytes ids)
{
	return (struct store_queue){
		.client = str_of(s->client_id, s->id_len),
		.msg_id = stored_id(e->msg),
		.qos = e->qos,
		.flags = e->retain ? STORE_MSG_RETAIN : 0,
		.sub_ids = ids,
	};
}

static struct store_flight flight_record(const struct session *s, const struct sess_msg *e, struct store_bytes ids)
{
	bool pubcomp_wait = e->state == SESS_MSG_WAIT_PUBCOMP;
	return (struct store_flight){
		.client = str_of(s->client_id, s->id_len),
		.msg_id = pubcomp_wait ? 0 : stored_id(e->msg),
		.packet_id = e->packet_id,
		.state = flight_state(e),
		.qos = e->qos,
		.flags = e->retain ? STORE_MSG_RETAIN : 0,
		.sub_ids = pubcomp_wait ? (struct store_bytes){NULL, 0} : ids,
	};
}

static int append_queue(struct store *st, const struct session *s, const struct sess_msg *e)
{
	struct ids_bytes ids;
	ids_encode(e, &ids);
	struct store_queue q = queue_record(s, e, ids.b);
	int rc = store_append_queue(st, &q);
	wisp_free(ids.heap);
	return rc;
}

static int append_flight(struct store *st, const struct session *s, const struct sess_msg *e)
{
	struct ids_bytes ids;
	ids_encode(e, &ids);
	struct store_flight f = flight_record(s, e, ids.b);
	int rc = store_append_flight_set(st, &f);
	wisp_free(ids.heap);
	return rc;
}

static void on_queued(void *ctx, struct session *s, struct sess_msg *e)
{
	struct broker *b = ctx;
	if (!is_persistent(s) || b->persist.loading)
		return;
	durable_ref(b, e->msg);
	e->durable = true;
	int rc = append_queue(b->persist.store, s, e);
	if (rc != 0)
		append_failed(b, rc);
}

static void on_flight(void *ctx, struct session *s, struct sess_msg *e)
{
	struct broker *b = ctx;
	if (!is_persistent(s) || b->persist.loading)
		return;
	bool pubcomp_wait = e->state == SESS_MSG_WAIT_PUBCOMP;
	if (!pubcomp_wait && !e->durable) {
		durable_ref(b, e->msg); /* sent at once, never queued */
		e->durable = true;
	}
	int rc = append_flight(b->persist.store, s, e);
	if (rc != 0)
		append_failed(b, rc);
	if (pubcomp_wait && e->durable) {
		durable_unref(b, e->msg); /* past PUBREC the message is never sent again */
		e->durable = false;
	}
}

static void on_done(void *ctx, struct session *s, struct sess_msg *e)
{
	struct broker *b = ctx;
	if (!is_persistent(s) || b->persist.loading)
		return;
	int rc = store_append_flight_del(b->persist.store, s->client_id, s->id_len, e->packet_id);
	if (rc != 0)
		append_failed(b, rc);
	if (e->durable)
		durable_unref(b, e->msg);
}

/* The session's own SESSION_DEL covers its entries; only the messages'
 * durable references need letting go. */
static void on_cleared(void *ctx, struct session *s, struct sess_msg *e)
{
	struct broker *b = ctx;
	if (!is_persistent(s) || !e->durable)
		return;
	durable_unref(b, e->msg);
}

/* A queued message dropped unsent (an access re-check): QUEUE_DEL, so a
 * restart does not bring it back. */
static void on_unqueued(void *ctx, struct session *s, struct sess_msg *e)
{
	struct broker *b = ctx;
	if (!is_persistent(s) || !e->durable)
		return;
	int rc = store_append_queue_del(b->persist.store, s->client_id, s->id_len, stored_id(e->msg));
	if (rc != 0)
		append_failed(b, rc);
	durable_unref(b, e->msg);
}

/* ---- observer events: sessions, subscriptions, QoS 2 ids, retained ---- */

/* The owner goes with every SESSION_PUT, so that after a restart a CONNECT
 * by another user is refused as it was before (proto/handle_connect.c). A
 * session restored without one (written by an older Wisp) is written
 * without one until its first login binds it; that login's SESSION_PUT
 * records the owner. */
/* A session's expiry in SESSION_PUT: its v5 Session Expiry Interval, or 0
 * for a session without one (3.1.1: kept until it connects with clean
 * session 1), as every record before v5 sessions were kept said. A v5
 * session with interval 0 is never stored, so 0 is not ambiguous. */
static uint32_t persist_expiry(const struct session *s)
{
	return s->v5 ? s->v5->expiry : 0;
}

static void set_owner(struct store_session *rec, const struct session *s)
{
	if (!s->owned)
		return;
	if (!s->username) {
		rec->owner = STORE_OWNER_ANONYMOUS;
		return;
	}
	/* A CONNECT's user name fits a record's u16 length; a TLS identity
	 * longer than that would fail every SESSION_PUT and every compaction,
	 * so it is stored as unknown (bound again at the next login) instead. */
	size_t len = strlen(s->username);
	if (len > 0xffffu)
		return;
	rec->owner = STORE_OWNER_USER;
	rec->owner_name = str_of(s->username, len);
}

static void on_session_put(void *ctx, struct session *s)
{
	struct broker *b = ctx;
	if (!b->persist.store || !is_persistent(s))
		return;
	struct store_session rec = {
		.client = str_of(s->client_id, s->id_len),
		.proto = s->conn ? s->conn->version : MQTT_PROTO_V311,
		.next_packet_id = s->next_packet_id,
		.expiry_s = persist_expiry(s),
		.claim_ns = sess_claim_ns(s),
	};
	set_owner(&rec, s);
	int rc = store_append_session_put(b->persist.store, &rec);
	if (rc != 0)
		append_failed(b, rc);
}

static void on_session_del(void *ctx, struct session *s)
{
	struct broker *b = ctx;
	if (!b->persist.store || !is_persistent(s) || b->persist.loading)
		return;
	int rc = store_append_session_del(b->persist.store, s->client_id, s->id_len);
	if (rc != 0)
		append_failed(b, rc);
}

/* A subscription as the store keeps it: the one place that says which of
 * its fields are durable. */
static struct store_sub sub_record(const struct session *s, const struct sess_sub *sub)
{
	return (struct store_sub){
		.client = str_of(s->client_id, s->id_len),
		.filter = str_of(sess_sub_filter(sub), sess_sub_filter_len(sub)),
		/* The ACL bit is ours and is recomputed at every login. */
		.options = tree_sub_options(&sub->handle) & (uint8_t)~(SESS_SUBOPT_ACL_CHECK | SESS_SUBOPT_SHARED),
		.sub_id = tree_sub_id(&sub->handle),
	};
}

static void on_sub_add(void *ctx, struct session *s, const struct sess_sub *sub)
{
	struct broker *b = ctx;
	if (!b->persist.store || !is_persistent(s) || b->persist.loading)
		return;
	struct store_sub rec = sub_record(s, sub);
	int rc = store_append_sub_add(b->persist.store, &rec);
	if (rc != 0)
		append_failed(b, rc);
}

static void on_sub_del(void *ctx, struct session *s, const char *filter, size_t len)
{
	struct broker *b = ctx;
	if (!b->persist.store || !is_persistent(s) || b->persist.loading)
		return;
	int rc = store_append_sub_del(b->persist.store, s->client_id, s->id_len, filter, len);
	if (rc != 0)
		append_failed(b, rc);
}

static void on_qos2_in(void *ctx, struct session *s, uint16_t packet_id, bool add)
{
	struct broker *b = ctx;
	if (!b->persist.store || !is_persistent(s))
		return;
	int rc = add ? store_append_qos2_in_add(b->persist.store, s->client_id, s->id_len, packet_id)
		     : store_append_qos2_in_del(b->persist.store, s->client_id, s->id_len, packet_id);
	if (rc != 0)
		append_failed(b, rc);
}

static void on_retain_set(void *ctx, struct msg *m)
{
	struct broker *b = ctx;
	if (!b->persist.store || is_sys(m) || b->persist.loading)
		return;
	int rc;
	if (m->payload_len == 0) {
		rc = store_append_retain_del(b->persist.store, msg_topic(m), m->topic_len);
	} else {
		durable_ref(b, m);
		rc = store_append_retain_set(b->persist.store, msg_topic(m), m->topic_len, stored_id(m));
	}
	if (rc != 0)
		append_failed(b, rc);
}

static void on_retain_released(void *ctx, struct msg *m)
{
	struct broker *b = ctx;
	if (!b->persist.store || b->persist.loading || is_sys(m))
		return;
	durable_unref(b, m);
}

/* A v5 persistent session's will: WILL_SET, self-contained (docs/
 * persistence.md). Its properties are the CONNECT's but the Will Delay
 * Interval, a Message Expiry Interval among them (it starts when the will
 * is published: broker_publish_will). */
static void on_will_set(void *ctx, struct session *s, struct msg *will)
{
	struct broker *b = ctx;
	if (!b->persist.store || !is_persistent(s) || !s->v5)
		return;
	struct store_will rec = {
		.client = str_of(s->client_id, s->id_len),
		.delay_s = s->v5->will_delay,
		.qos = will->qos,
		.flags = will->retain ? STORE_MSG_RETAIN : 0,
		.topic = str_of(msg_topic(will), will->topic_len),
		.props = {msg_props(will), will->props_len},
		.payload = {msg_payload(will), will->payload_len},
	};
	int rc = store_append_will_set(b->persist.store, &rec);
	if (rc != 0)
		append_failed(b, rc);
	else
		s->v5->will_stored = true;
}

static void on_will_del(void *ctx, struct session *s)
{
	struct broker *b = ctx;
	if (!b->persist.store || !s->v5 || !s->v5->will_stored)
		return;
	s->v5->will_stored = false;
	int rc = store_append_will_del(b->persist.store, s->client_id, s->id_len);
	if (rc != 0)
		append_failed(b, rc);
}

/* The store's implementation of the session observer (observer.h),
 * registered once the replay is over. */
static const struct sess_observer_ops observer_ops = {
	.session_put = on_session_put,
	.session_del = on_session_del,
	.sub_add = on_sub_add,
	.sub_del = on_sub_del,
	.qos2_in = on_qos2_in,
	.queued = on_queued,
	.flight = on_flight,
	.done = on_done,
	.cleared = on_cleared,
	.unqueued = on_unqueued,
	.retain_set = on_retain_set,
	.retain_released = on_retain_released,
	.will_set = on_will_set,
	.will_del = on_will_del,
};

/* ---- acknowledgements ---- */

uint64_t persist_seq(const struct broker *b) { return b->persist.store ? store_seq(b->persist.store) : 0; }

/* Records up to this seq are as safe as the mode promises. */
static uint64_t safe_seq(const struct broker *b)
{
	struct store *st = b->persist.store;
	uint64_t written = store_written_seq(st);
	if (store_fsync_mode(st) == STORE_FSYNC_ALWAYS && b->persist.durable < written)
		return b->persist.durable;
	return written;
}

static void release_held(struct broker *b)
{
	uint64_t safe = safe_seq(b);
	while (b->persist.held_len > 0) {
		struct held_ack *h = &b->persist.held[b->persist.held_head];
		if (h->seq > safe)
			break;
		struct conn *c = h->o->c;
		if (c) {
			c->rare->held_acks--;
			conn_send_bytes(c, h->bytes, h->len);
		}
		ack_owner_unref(h->o);
		b->persist.held_head = (b->persist.held_head + 1) & (b->persist.held_cap - 1);
		b->persist.held_len--;
	}
	if (b->ack_gate.store_progress)
		b->ack_gate.store_progress(b->ack_gate.ctx);
}

static int held_grow(struct broker *b)
{
	size_t cap = b->persist.held_cap ? b->persist.held_cap * 2 : 64;
	struct held_ack *v = wisp_malloc(cap * sizeof *v);
	if (!v)
		return WISP_ENOMEM;
	for (size_t i = 0; i < b->persist.held_len; i++)
		v[i] = b->persist.held[(b->persist.held_head + i) & (b->persist.held_cap - 1)];
	wisp_free(b->persist.held);
	b->persist.held = v;
	b->persist.held_head = 0;
	b->persist.held_cap = cap;
	return 0;
}

static int send_ack_gated(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len, uint64_t since,
			  bool resent)
{
	if (b->ack_gate.hold) {
		int held = b->ack_gate.hold(b->ack_gate.ctx, c, bytes, len, since, resent);
		if (held != 0)
			return held < 0 ? held : 0;
	}
	return persist_send_ack_ungated(b, c, bytes, len, since);
}

int persist_send_ack_since(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len, uint64_t since)
{
	return send_ack_gated(b, c, bytes, len, since, false);
}

uint64_t persist_safe_seq(const struct broker *b)
{
	return b->persist.store ? safe_seq(b) : UINT64_MAX;
}

int persist_send_ack_ungated(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len, uint64_t since)
{
	struct store *st = b->persist.store;
	if (!st || len > sizeof ((struct held_ack *)0)->bytes)
		return conn_send_bytes(c, bytes, len);
	uint64_t seq = store_seq(st);
	/* Conservative: it waits for everything appended so far, not only for
	 * its own records (they are the last ones anyway). */
	uint64_t dep = seq > since ? seq : 0;
	/* Acks leave in the order their PUBLISHes came [MQTT-4.6.0-2], so once
	 * one waits, the ones after it wait too. */
	if (dep <= safe_seq(b) && conn_held_acks(c) == 0)
		return conn_send_bytes(c, bytes, len);
	if (b->persist.held_len == b->persist.held_cap && held_grow(b) != 0)
		return WISP_ENOMEM;
	struct ack_owner *o = conn_ack_owner_ref(c);
	if (!o)
		return WISP_ENOMEM;
	struct held_ack *h = &b->persist.held[(b->persist.held_head + b->persist.held_len) & (b->persist.held_cap - 1)];
	h->o = o;
	h->seq = dep;
	h->len = (uint8_t)len;
	memcpy(h->bytes, bytes, len);
	b->persist.held_len++;
	c->rare->held_acks++;
	return 0;
}

/* A clean session's acks vouch for no record: its QoS 2 state and its
 * outbound messages never touch the store. */
static uint64_t session_ack_since(struct broker *b, const struct conn *c)
{
	return is_persistent(c->sess) ? 0 : persist_seq(b);
}

int persist_send_ack(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len)
{
	return send_ack_gated(b, c, bytes, len, session_ack_since(b, c), false);
}

int persist_send_resent_ack(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len)
{
	return send_ack_gated(b, c, bytes, len, session_ack_since(b, c), true);
}

/* Past the ack gate: a PUBREL ends a flow of the broker's own, which owes
 * nothing to the other nodes, and MQTT orders PUBRELs only among
 * themselves [MQTT-4.6.0-4], which this queue keeps. */
int persist_send_pubrel(void *broker, struct conn *c, const uint8_t *bytes, size_t len)
{
	struct broker *b = broker;
	return persist_send_ack_ungated(b, c, bytes, len, session_ack_since(b, c));
}

void persist_forget_conn(struct broker *b, struct conn *c)
{
	if (b->ack_gate.forget)
		b->ack_gate.forget(b->ack_gate.ctx, c);
	if (conn_held_acks(c))
		c->rare->held_acks = 0;
	conn_ack_owner_detach(c); /* its held acks, in either queue, are dropped when they come up */
}

bool persist_refuses_durable(const struct broker *b)
{
	struct store *st = b->persist.store;
	if (!st)
		return false;
	/* everysec/no: a failed fsync does not delay acks (they never waited
	 * for one), so new work is still accepted while the log is rewritten. */
	return store_write_failing(st) ||
	       (store_fsync_mode(st) == STORE_FSYNC_ALWAYS && store_needs_rewrite(st));
}

bool persist_ack_must_wait(const struct broker *b, const struct conn *c, uint64_t since)
{
	if (!b->persist.store)
		return false;
	return conn_held_acks(c) > 0 || store_seq(b->persist.store) > since;
}

void persist_status(const struct broker *b, struct persist_status *out)
{
	struct store_stats ss = {0};
	memset(out, 0, sizeof *out);
	if (!b->persist.store)
		return;
	store_get_stats(b->persist.store, &ss);
	out->enabled = true;
	out->degraded = store_error(b->persist.store) != 0 || b->persist.compact_backoff_s > 0;
	out->write_errors = ss.write_errors;
	out->fsync_errors = ss.fsync_errors;
	out->compact_errors = ss.compact_errors;
	out->refused = b->persist.refused;
	out->held_acks = b->persist.held_len;
}

static void on_durable(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct broker *b = container_of(io, struct broker, persist.io);
	(void)l;
	(void)events;
	b->persist.durable = store_durable_seq(b->persist.store);
	release_held(b);
}

/* ---- the cluster's retained bucket: writes not in it yet ---- */

int persist_retain_mark(struct broker *b, const char *topic, size_t len, const char *id, size_t id_len)
{
	struct store *st = b->persist.store;
	if (!st || b->persist.loading)
		return WISP_EINVAL;
	int rc = id ? store_append_retain_unsent(st, topic, len, id, id_len) : store_append_retain_sent(st, topic, len);
	if (rc != 0)
		append_failed(b, rc);
	return rc;
}

static int unsent_push(struct broker *b, const char *topic, size_t len, const char *id, size_t id_len)
{
	if (b->persist.unsent_len == b->persist.unsent_cap) {
		size_t cap = b->persist.unsent_cap ? b->persist.unsent_cap * 2 : 16;
		struct persist_unsent *v = wisp_realloc(b->persist.unsent, cap * sizeof *v);
		if (!v)
			return WISP_ENOMEM;
		b->persist.unsent = v;
		b->persist.unsent_cap = cap;
	}
	char *t = wisp_strndup(topic, len);
	char *i = id ? wisp_strndup(id, id_len) : NULL;
	if (!t || (id && !i)) {
		wisp_free(t);
		wisp_free(i);
		return WISP_ENOMEM;
	}
	b->persist.unsent[b->persist.unsent_len++] = (struct persist_unsent){t, len, i};
	return 0;
}

static int v_retain_unsent(void *ctx, const struct store_retain_mark *r)
{
	return unsent_push(ctx, r->topic.ptr, r->topic.len, r->id.ptr, r->id.len);
}

static int v_retain_sent(void *ctx, const struct store_retain_mark *r)
{
	return unsent_push(ctx, r->topic.ptr, r->topic.len, NULL, 0);
}

/* After the replay: a topic's last mark decides (RETAIN_UNSENT: its write
 * waits, in that mark's place; RETAIN_SENT: none). One pass from the end
 * with a scratch set of the topics seen. */
static int unsent_reduce(struct broker *b)
{
	size_t n = b->persist.unsent_len;
	if (!n)
		return 0;
	size_t cap = 16;
	while (cap < 2 * n)
		cap *= 2;
	size_t *seen = wisp_calloc(cap, sizeof *seen); /* index + 1; 0 empty */
	if (!seen)
		return WISP_ENOMEM;
	for (size_t k = n; k-- > 0;) {
		struct persist_unsent *u = &b->persist.unsent[k];
		size_t h = hash_bytes(0, u->topic, u->len) & (cap - 1);
		bool later = false;
		for (; seen[h]; h = (h + 1) & (cap - 1)) {
			const struct persist_unsent *o = &b->persist.unsent[seen[h] - 1];
			if (o->len == u->len && memcmp(o->topic, u->topic, u->len) == 0) {
				later = true;
				break;
			}
		}
		if (!later)
			seen[h] = k + 1;
		if (later || !u->id) { /* superseded, or sent */
			wisp_free(u->topic);
			wisp_free(u->id);
			u->topic = NULL;
		}
	}
	wisp_free(seen);
	size_t live = 0;
	for (size_t k = 0; k < n; k++)
		if (b->persist.unsent[k].topic)
			b->persist.unsent[live++] = b->persist.unsent[k];
	b->persist.unsent_len = live;
	return 0;
}

bool persist_retain_unsent_get(const struct broker *b, size_t i, const char **topic, size_t *len, const char **id)
{
	if (i >= b->persist.unsent_len)
		return false;
	*topic = b->persist.unsent[i].topic;
	*len = b->persist.unsent[i].len;
	*id = b->persist.unsent[i].id;
	return true;
}

void persist_retain_unsent_forget(struct broker *b)
{
	for (size_t i = 0; i < b->persist.unsent_len; i++) {
		wisp_free(b->persist.unsent[i].topic);
		wisp_free(b->persist.unsent[i].id);
	}
	wisp_free(b->persist.unsent);
	b->persist.unsent = NULL;
	b->persist.unsent_len = b->persist.unsent_cap = 0;
}

void persist_retain_marks_by(struct broker *b, int (*emit)(void *ctx, struct store *st), void *ctx)
{
	b->persist.emit_marks = emit;
	b->persist.emit_marks_ctx = ctx;
}

static int emit_marks(struct broker *b, struct store *st)
{
	if (b->persist.emit_marks)
		return b->persist.emit_marks(b->persist.emit_marks_ctx, st);
	int rc = 0;
	for (size_t i = 0; !rc && i < b->persist.unsent_len; i++) {
		const struct persist_unsent *u = &b->persist.unsent[i];
		rc = store_append_retain_unsent(st, u->topic, u->len, u->id, strlen(u->id));
	}
	return rc;
}

/* ---- the cluster's forwarding queue ---- */

static struct persist_fwd *fwd_at(const struct broker *b, size_t i)
{
	return &b->persist.fwd[(b->persist.fwd_head + i) % b->persist.fwd_cap];
}

static int fwd_push(struct broker *b, struct msg *m, const char *id, size_t id_len)
{
	if (b->persist.fwd_len == b->persist.fwd_cap) {
		size_t cap = b->persist.fwd_cap ? b->persist.fwd_cap * 2 : 64;
		struct persist_fwd *v = wisp_malloc(cap * sizeof *v);
		if (!v)
			return WISP_ENOMEM;
		for (size_t i = 0; i < b->persist.fwd_len; i++)
			v[i] = *fwd_at(b, i);
		wisp_free(b->persist.fwd);
		b->persist.fwd = v;
		b->persist.fwd_head = 0;
		b->persist.fwd_cap = cap;
	}
	char *copy = wisp_strndup(id, id_len);
	if (!copy)
		return WISP_ENOMEM;
	b->persist.fwd_len++;
	*fwd_at(b, b->persist.fwd_len - 1) = (struct persist_fwd){msg_ref(m), copy};
	return 0;
}

/* Drops the first entry holding m (or stored id `id` when m is NULL);
 * deleted entries leave the ring once they reach its head. */
static struct msg *fwd_drop(struct broker *b, const struct msg *m, uint64_t id)
{
	struct msg *found = NULL;
	for (size_t i = 0; i < b->persist.fwd_len; i++) {
		struct persist_fwd *f = fwd_at(b, i);
		if (f->m && (m ? f->m == m : stored_id(f->m) == id)) {
			found = f->m;
			f->m = NULL;
			wisp_free(f->id);
			f->id = NULL;
			break;
		}
	}
	while (b->persist.fwd_len && !fwd_at(b, 0)->m) {
		b->persist.fwd_head = (b->persist.fwd_head + 1) % b->persist.fwd_cap;
		b->persist.fwd_len--;
	}
	return found;
}

int persist_forward_add(struct broker *b, struct msg *m, const char *id, size_t id_len)
{
	struct store *st = b->persist.store;
	if (!st)
		return WISP_EINVAL;
	if (persist_refuses_durable(b))
		return WISP_EIO;
	int rc = fwd_push(b, m, id, id_len);
	if (rc != 0)
		return rc;
	durable_ref(b, m);
	rc = m->stored ? store_append_fwd_add(st, m->stored->id, id, id_len) : WISP_ENOMEM;
	if (rc != 0) {
		append_failed(b, rc);
		durable_unref(b, m);
		msg_unref(fwd_drop(b, m, 0));
	}
	return rc;
}

void persist_forward_del(struct broker *b, const struct msg *m)
{
	struct msg *found = fwd_drop(b, m, 0);
	if (!found)
		return;
	if (b->persist.store && found->stored) {
		int rc = store_append_fwd_del(b->persist.store, found->stored->id);
		if (rc != 0)
			append_failed(b, rc);
	}
	durable_unref(b, found);
	msg_unref(found);
}

bool persist_forward_get(const struct broker *b, size_t i, struct msg **m, const char **id)
{
	if (i >= b->persist.fwd_len || !fwd_at(b, i)->m)
		return false;
	*m = fwd_at(b, i)->m;
	*id = fwd_at(b, i)->id;
	return true;
}

/* After the replay: entries deleted out of order leave the ring, so that
 * persist_forward_get counts live ones only. */
static void fwd_compact(struct broker *b)
{
	size_t live = 0;
	for (size_t i = 0; i < b->persist.fwd_len; i++)
		if (fwd_at(b, i)->m)
			*fwd_at(b, live++) = *fwd_at(b, i);
	b->persist.fwd_len = live;
}

static void fwd_free(struct broker *b)
{
	for (size_t i = 0; i < b->persist.fwd_len; i++) {
		struct persist_fwd *f = fwd_at(b, i);
		msg_unref(f->m);
		wisp_free(f->id);
	}
	wisp_free(b->persist.fwd);
	b->persist.fwd = NULL;
	b->persist.fwd_head = b->persist.fwd_len = b->persist.fwd_cap = 0;
}

/* ---- the cluster's stream sequences routed here ---- */

/* Notes seq taken with the window's floor; what fell to or below the
 * floor leaves when the array is full, before it grows. The sequences
 * above the floor are bounded by durable.c's dedupe window. */
static int taken_note(struct broker *b, uint64_t floor, uint64_t seq, uint64_t stamp)
{
	if (floor < b->persist.stream_floor)
		b->persist.taken_len = 0; /* a new window (an earlier build's: the stream was made anew) */
	b->persist.stream_floor = floor;
	b->persist.stream_stamp = stamp; /* each record has the newest so far */
	if (seq <= floor)
		return 0;
	if (b->persist.taken_len == b->persist.taken_cap) {
		size_t live = 0;
		for (size_t i = 0; i < b->persist.taken_len; i++)
			if (b->persist.taken[i] > floor)
				b->persist.taken[live++] = b->persist.taken[i];
		b->persist.taken_len = live;
	}
	if (b->persist.taken_len == b->persist.taken_cap) {
		size_t cap = b->persist.taken_cap ? b->persist.taken_cap * 2 : 64;
		uint64_t *v = wisp_malloc(cap * sizeof *v);
		if (!v)
			return WISP_ENOMEM;
		if (b->persist.taken_len)
			memcpy(v, b->persist.taken, b->persist.taken_len * sizeof *v);
		wisp_free(b->persist.taken);
		b->persist.taken = v;
		b->persist.taken_cap = cap;
	}
	b->persist.taken[b->persist.taken_len++] = seq;
	return 0;
}

int persist_stream_taken(struct broker *b, uint64_t floor, uint64_t seq, uint64_t stamp)
{
	struct store *st = b->persist.store;
	if (!st)
		return WISP_EINVAL;
	int rc = taken_note(b, floor, seq, stamp);
	if (rc == 0)
		rc = store_append_stream_taken(st, floor, seq, stamp);
	if (rc != 0)
		append_failed(b, rc);
	return rc;
}

size_t persist_stream_window(const struct broker *b, uint64_t *floor, uint64_t *stamp, const uint64_t **seqs)
{
	*floor = b->persist.stream_floor;
	*stamp = b->persist.stream_stamp;
	*seqs = b->persist.taken;
	return b->persist.taken_len;
}

static int emit_taken(const struct broker *b, struct store *st)
{
	int rc = 0;
	bool any = false;
	for (size_t i = 0; !rc && i < b->persist.taken_len; i++)
		if (b->persist.taken[i] > b->persist.stream_floor) {
			rc = store_append_stream_taken(st, b->persist.stream_floor, b->persist.taken[i],
						       b->persist.stream_stamp);
			any = true;
		}
	if (!rc && !any && b->persist.stream_floor)
		rc = store_append_stream_taken(st, b->persist.stream_floor, b->persist.stream_floor,
					       b->persist.stream_stamp);
	return rc;
}

static void taken_free(struct broker *b)
{
	wisp_free(b->persist.taken);
	b->persist.taken = NULL;
	b->persist.taken_len = b->persist.taken_cap = 0;
	b->persist.stream_floor = 0;
	b->persist.stream_stamp = 0;
}

static int v_stream_taken(void *ctx, const struct store_stream_taken *t)
{
	return taken_note(ctx, t->floor, t->seq, t->stamp);
}

/* ---- compaction: the whole live state, each message written once ---- */

struct emit_ctx {
	struct broker *b;
	struct store *st;
	int rc;
};

static int emit_msg(struct emit_ctx *x, struct msg *m)
{
	if (m->stored->emit_gen == x->b->persist.emit_gen)
		return 0;
	m->stored->emit_gen = x->b->persist.emit_gen;
	struct store_msg rec = msg_record(x->b, m, m->stored->id);
	return store_append_msg_put(x->st, &rec);
}

static void emit_retained(const char *topic, size_t len, void *value, void *ctx)
{
	struct emit_ctx *x = ctx;
	struct msg *m = value;
	if (x->rc || !m->stored)
		return;
	x->rc = emit_msg(x, m);
	if (!x->rc)
		x->rc = store_append_retain_set(x->st, topic, len, m->stored->id);
}

static int emit_session(struct emit_ctx *x, struct session *s)
{
	struct store *st = x->st;
	struct store_session rec = {.client = str_of(s->client_id, s->id_len), .next_packet_id = s->next_packet_id,
				    .proto = MQTT_PROTO_V311, .expiry_s = persist_expiry(s),
				    .claim_ns = sess_claim_ns(s)};
	set_owner(&rec, s);
	int rc = store_append_session_put(st, &rec);
	/* The will: offline, the delayed one; online, the connection's. */
	struct msg *will = s->v5 && s->v5->will_stored ? (s->v5->will ? s->v5->will : s->conn ? conn_will(s->conn) : NULL)
						       : NULL;
	if (!rc && will) {
		struct store_will w = {
			.client = rec.client,
			.delay_s = s->v5->will_delay,
				.qos = will->qos,
			.flags = will->retain ? STORE_MSG_RETAIN : 0,
			.topic = str_of(msg_topic(will), will->topic_len),
			.props = {msg_props(will), will->props_len},
			.payload = {msg_payload(will), will->payload_len},
		};
		rc = store_append_will_set(st, &w);
	}
	struct list_node *n;
	for (n = s->subs.next; !rc && n != &s->subs; n = n->next) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		struct store_sub r = sub_record(s, sub);
		rc = store_append_sub_add(st, &r);
	}
	for (n = s->qos ? s->qos->inflight.next : NULL; !rc && n && n != &s->qos->inflight; n = n->next) {
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (stored_id(e->msg))
			rc = emit_msg(x, e->msg);
		if (!rc)
			rc = append_flight(st, s, e);
	}
	for (n = s->qos ? s->qos->queue.next : NULL; !rc && n && n != &s->qos->queue; n = n->next) {
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (!stored_id(e->msg))
			continue;
		rc = emit_msg(x, e->msg);
		if (!rc)
			rc = append_queue(st, s, e);
	}
	for (uint16_t i = 0; !rc && i < sess_qos2_in_count(s); i++)
		rc = store_append_qos2_in_add(st, s->client_id, s->id_len, sess_qos2_in_id(s, i));
	return rc;
}

static int emit_state(void *ctx, struct store *st)
{
	struct broker *b = ctx;
	struct emit_ctx x = {b, st, 0};
	b->persist.emit_gen++;
	retained_each(b->retained, emit_retained, &x);
	for (size_t i = 0; !x.rc && i < b->sessions.nbuckets; i++)
		for (struct session *s = b->sessions.buckets[i]; !x.rc && s; s = s->hash_next)
			if (is_persistent(s))
				x.rc = emit_session(&x, s);
	for (size_t i = 0; !x.rc && i < b->persist.fwd_len; i++) {
		const struct persist_fwd *f = fwd_at(b, i);
		if (!f->m || !f->m->stored)
			continue;
		x.rc = emit_msg(&x, f->m);
		if (!x.rc)
			x.rc = store_append_fwd_add(st, f->m->stored->id, f->id, strlen(f->id));
	}
	if (!x.rc)
		x.rc = emit_taken(b, st);
	/* After the retained values they mark. */
	if (!x.rc)
		x.rc = emit_marks(b, st);
	return x.rc;
}

/* Nothing to do: the timer only makes the loop turn, and before_sleep retries. */
static void on_retry(struct loop *l, struct loop_timer *t)
{
	(void)l;
	(void)t;
}

static uint32_t next_backoff(uint32_t cur, uint32_t min, uint32_t max)
{
	return cur == 0 ? min : cur >= max / 2 ? max : cur * 2;
}

/* Wakes the loop at loop time `at_ms` (or a little later: timers tick in
 * seconds), unless it is already due to wake earlier. */
static void wake_at(struct broker *b, uint64_t at_ms, uint64_t now_ms)
{
	struct loop_timer *t = &b->persist.retry_timer;
	uint64_t seconds = at_ms > now_ms ? (at_ms - now_ms + 999u) / 1000u : 1u;
	if (loop_timer_armed(t)) {
		if (t->deadline <= loop_now_s(b->loop) + seconds)
			return;
		loop_timer_stop(b->loop, t);
	}
	loop_timer_start(b->loop, t, seconds, on_retry);
}

/* A compaction failed (now, or on the helper since the last turn): wait
 * before the next one; one that succeeded resets the wait. */
static void note_compactions(struct broker *b, uint64_t now)
{
	struct store_stats ss;
	store_get_stats(b->persist.store, &ss);
	if (ss.compact_errors != b->persist.compact_errors_seen) {
		b->persist.compact_errors_seen = ss.compact_errors;
		b->persist.compact_backoff_s = next_backoff(b->persist.compact_backoff_s, COMPACT_RETRY_MIN_S,
							    COMPACT_RETRY_MAX_S);
		b->persist.compact_retry_at = now + b->persist.compact_backoff_s * 1000u;
	} else if (ss.compactions != b->persist.compactions_seen) {
		b->persist.compactions_seen = ss.compactions;
		b->persist.compact_backoff_s = 0;
	}
}

#ifndef NDEBUG
/* Debug builds: WISP_DEBUG_HOLD_STORE_WRITES=<path> writes nothing while
 * <path> exists (looked at each loop turn), as a store whose disk stalls:
 * what a kill -9 meanwhile loses (tests/e2e/47_cluster_store_stall.py). */
static bool writes_held(void)
{
	const char *path = getenv("WISP_DEBUG_HOLD_STORE_WRITES");
	return path && access(path, F_OK) == 0;
}
#else
static bool writes_held(void) { return false; }
#endif

void persist_flush(struct broker *b)
{
	struct store *st = b->persist.store;
	if (!st)
		return;
	uint64_t now = loop_now_ms(b->loop);
	if (!writes_held() && (!store_write_failing(st) || now >= b->persist.write_retry_at)) {
		if (store_flush(st) != 0) {
			b->persist.write_backoff_s = next_backoff(b->persist.write_backoff_s, WRITE_RETRY_MIN_S,
								  WRITE_RETRY_MAX_S);
			b->persist.write_retry_at = now + b->persist.write_backoff_s * 1000u;
		} else {
			b->persist.write_backoff_s = 0;
		}
	}
	release_held(b);
	note_compactions(b, now);
	if (!writes_held() && !store_write_failing(st) && now >= b->persist.compact_retry_at &&
	    store_compact_due(st)) {
		store_compact(st, emit_state, b); /* failures: logged by the store, paced here */
		note_compactions(b, now);
	}
	/* Nothing else may wake an idle loop for the next attempt. */
	if (store_write_failing(st))
		wake_at(b, b->persist.write_retry_at, now);
	else if (b->persist.compact_retry_at > now && store_compact_due(st))
		wake_at(b, b->persist.compact_retry_at, now);
}

/* ---- start-up: replaying the store into the broker ---- */

static struct session *find_session(struct broker *b, struct store_str client)
{
	return sess_find(&b->sessions, client.ptr, client.len);
}

/* Records for a session that was never put create it: a torn snapshot
 * boundary must not lose the messages. */
static struct session *get_session(struct broker *b, struct store_str client)
{
	struct session *s = find_session(b, client);
	if (!s)
		s = sess_create(&b->sessions, client.ptr, client.len, false);
	return s;
}

/* A message back from its record (msg_record's inverse); NULL when out of memory. */
static struct msg *msg_of_record(const struct broker *b, const struct store_msg *r)
{
	struct msg_spec spec = {
		.topic = r->topic.ptr,
		.topic_len = r->topic.len,
		.props = r->props.ptr,
		.props_len = r->props.len,
		.payload = r->payload.ptr,
		.payload_len = r->payload.len,
		.qos = r->qos,
		.retain = (r->flags & STORE_MSG_RETAIN) != 0,
		.expires_at = expiry_from_unix(b, r->expiry),
	};
	return msg_create(&spec);
}

static int v_msg_put(void *ctx, const struct store_msg *r, void **handle)
{
	struct broker *b = ctx;
	struct msg *m = msg_of_record(b, r);
	if (!m)
		return WISP_ENOMEM;
	if (attach_stored(m, r->id) != 0) {
		msg_unref(m);
		return WISP_ENOMEM;
	}
	*handle = m;
	return 0;
}

static void v_msg_release(void *ctx, void *handle)
{
	(void)ctx;
	msg_unref(handle);
}

static int v_retain_set(void *ctx, const struct store_retain *r, void *value)
{
	struct broker *b = ctx;
	struct msg *m = value;
	struct msg *old = retained_get(b->retained, r->topic.ptr, r->topic.len);
	if (old)
		durable_unref(b, old);
	if (retained_set(b->retained, r->topic.ptr, r->topic.len, msg_ref(m), msg_size(m)) != 0) {
		msg_unref(m);
		log_msg(LOG_WARNING, "store", "retained message on '%.*s' not restored: retained limit reached",
			(int)r->topic.len, r->topic.ptr);
		return 0;
	}
	m->stored->refs++;
	return 0;
}

static int v_retain_del(void *ctx, const struct store_retain *r)
{
	struct broker *b = ctx;
	struct msg *old = retained_get(b->retained, r->topic.ptr, r->topic.len);
	if (old)
		durable_unref(b, old);
	retained_set(b->retained, r->topic.ptr, r->topic.len, NULL, 0);
	return 0;
}

/* A SESSION_PUT's Session Expiry Interval (0: none recorded, nothing to set). */
static int set_expiry(struct broker *b, struct session *s, uint32_t expiry_s)
{
	if (!expiry_s)
		return 0;
	struct sess_v5 *v = session_v5_get(b, s);
	if (!v)
		return WISP_ENOMEM;
	v->expiry = expiry_s;
	return 0;
}

static int v_session_put(void *ctx, const struct store_session *r)
{
	struct broker *b = ctx;
	struct session *s = get_session(b, r->client);
	if (!s)
		return WISP_ENOMEM;
	if (r->next_packet_id > s->next_packet_id)
		s->next_packet_id = r->next_packet_id;
	/* Its expiry runs again from the restart (persist_open): how long it
	 * was offline before is not recorded, so it may live longer, never
	 * shorter, than asked. */
	if (set_expiry(b, s, r->expiry_s) != 0)
		return WISP_ENOMEM;
	/* The cluster's claim time (cluster/presence.h); a record without one
	 * (an older Wisp's, or written before its connect was claimed) keeps
	 * what an earlier record said. */
	if (r->claim_ns && !sess_set_claim_ns(s, r->claim_ns))
		return WISP_ENOMEM;
	/* A record without an owner (an older Wisp's) says nothing about it:
	 * it does not unbind an owner an earlier record named. */
	if (r->owner == STORE_OWNER_NONE)
		return 0;
	char *name = NULL;
	if (r->owner == STORE_OWNER_USER) {
		name = wisp_strndup(r->owner_name.ptr ? r->owner_name.ptr : "", r->owner_name.len);
		if (!name)
			return WISP_ENOMEM;
	}
	/* The owner's rules, so that what reaches the session while it is
	 * offline is checked against them, as before the restart. */
	struct acl_client *acl = NULL;
	if (b->auth.acl && acl_client_new(b->auth.acl, name, s->client_id, &acl) != 0) {
		wisp_free(name);
		return WISP_ENOMEM;
	}
	wisp_free(s->username);
	s->username = name;
	acl_client_free(s->acl);
	s->acl = acl;
	s->owned = true;
	return 0;
}

static int v_session_del(void *ctx, const struct store_session *r)
{
	struct broker *b = ctx;
	struct session *s = find_session(b, r->client);
	if (s)
		sess_destroy(&b->sessions, b->subs, s);
	return 0;
}

/*
 * A stored subscription goes through the bounds a SUBSCRIBE would meet
 * today (max_topic_length, max_topic_levels, max_subscriptions, memory):
 * one granted under looser limits, or one that no longer fits in memory,
 * is skipped, counted and logged (the first at WARNING, the rest at
 * DEBUG), never a reason to refuse to start, which would only restart
 * into the same store. The session stays, without it. With a memory_limit,
 * replayed subscriptions stop at 7/8 of it, so the broker that started can
 * still accept connections (one filter overshoots by at most its bounded
 * cost: 2 x max_topic_length plus a node per level).
 */
static int v_sub_add(void *ctx, const struct store_sub *r)
{
	struct broker *b = ctx;
	struct session *s = get_session(b, r->client);
	if (!s)
		return WISP_ENOMEM;
	const char *skip = NULL;
	enum topic_bound bound = broker_topic_bound(b, r->filter.ptr, r->filter.len);
	if (bound != TOPIC_WITHIN_LIMITS) {
		skip = bound == TOPIC_TOO_LONG ? "longer than limits.max_topic_length"
					       : "more levels than limits.max_topic_levels";
	} else if (!topic_filter_valid(r->filter.ptr, r->filter.len)) {
		return 0;
	} else if (b->cfg->limits.memory_limit &&
		   wisp_mem_used() > b->cfg->limits.memory_limit - b->cfg->limits.memory_limit / 8) {
		skip = "over 7/8 of limits.memory_limit, the rest is kept for running";
	} else {
		/* ACL classification happens when the client logs in again; until
		 * then, deliveries to the offline session are checked per topic. */
		uint8_t opts = (uint8_t)(r->options | (b->auth.acl ? SESS_SUBOPT_ACL_CHECK : 0));
		int rc = router_interest_add(b->router, s, r->filter.ptr, r->filter.len, opts, r->sub_id,
					     b->cfg->limits.max_subscriptions);
		if (rc >= 0)
			return 0;
		skip = rc == WISP_ELIMIT ? "over limits.max_subscriptions" : "out of memory (limits.memory_limit)";
	}
	b->stats.subs_refused++;
	size_t shown = r->filter.len < 80 ? r->filter.len : 80;
	log_msg(b->sub_work.replay_logged ? LOG_DEBUG : LOG_WARNING, "store",
		"session %.*s: stored subscription to '%.*s'%s (%zu bytes) skipped: %s%s", (int)r->client.len,
		r->client.ptr, (int)shown, r->filter.ptr, shown < r->filter.len ? "..." : "", r->filter.len, skip,
		b->sub_work.replay_logged ? "" : " (further ones are logged at debug level and counted in "
						 "$SYS/broker/subscriptions/refused)");
	b->sub_work.replay_logged = true;
	return 0;
}

static int v_sub_del(void *ctx, const struct store_sub *r)
{
	struct broker *b = ctx;
	struct session *s = find_session(b, r->client);
	if (s)
		router_interest_remove(b->router, s, r->filter.ptr, r->filter.len);
	return 0;
}

/* A stored delivery's identifiers back as numbers (a u32 LE each). */
struct ids_nums {
	uint32_t stack[16];
	uint32_t *heap;
	struct delivery_sub_ids ids;
};

static int ids_decode(struct store_bytes b, struct ids_nums *x)
{
	size_t n = b.len / 4;
	x->heap = NULL;
	x->ids = (struct delivery_sub_ids){NULL, 0};
	if (!n)
		return 0;
	uint32_t *v = n <= sizeof x->stack / sizeof x->stack[0] ? x->stack : (x->heap = wisp_malloc(n * 4));
	if (!v)
		return WISP_ENOMEM;
	for (size_t i = 0; i < n; i++)
		v[i] = (uint32_t)b.ptr[4 * i] | (uint32_t)b.ptr[4 * i + 1] << 8 | (uint32_t)b.ptr[4 * i + 2] << 16 |
		       (uint32_t)b.ptr[4 * i + 3] << 24;
	x->ids = (struct delivery_sub_ids){v, (uint16_t)n};
	return 0;
}

static int v_queue_add(void *ctx, const struct store_queue *r, void *value)
{
	struct broker *b = ctx;
	struct session *s = get_session(b, r->client);
	if (!s)
		return WISP_ENOMEM;
	struct ids_nums x;
	int rc = ids_decode(r->sub_ids, &x);
	if (rc == 0)
		rc = delivery_restore_queued(s, &b->dlim, value, r->qos, (r->flags & STORE_MSG_RETAIN) != 0,
					     x.ids.count ? &x.ids : NULL);
	wisp_free(x.heap);
	return rc;
}

static int v_queue_del(void *ctx, const struct store_queue *r)
{
	struct broker *b = ctx;
	struct session *s = find_session(b, r->client);
	if (!s || !s->qos)
		return 0;
	struct list_node *n;
	for (n = s->qos->queue.next; n != &s->qos->queue; n = n->next) {
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (stored_id(e->msg) == r->msg_id) {
			delivery_restore_unqueue(s, &b->dlim, e->msg);
			break;
		}
	}
	return 0;
}

static uint8_t sess_state(uint8_t store_state)
{
	switch (store_state) {
	case STORE_FLIGHT_WAIT_PUBACK:
		return SESS_MSG_WAIT_PUBACK;
	case STORE_FLIGHT_WAIT_PUBREC:
		return SESS_MSG_WAIT_PUBREC;
	default:
		return SESS_MSG_WAIT_PUBCOMP;
	}
}

static int v_flight_set(void *ctx, const struct store_flight *r, void *value)
{
	struct broker *b = ctx;
	struct session *s = get_session(b, r->client);
	if (!s)
		return WISP_ENOMEM;
	uint8_t state = sess_state(r->state);
	if (state != SESS_MSG_WAIT_PUBCOMP && !value)
		return 0; /* a message that was lost: nothing to resend */
	struct ids_nums x;
	int rc = ids_decode(r->sub_ids, &x);
	if (rc == 0)
		rc = delivery_restore_flight(s, &b->dlim, state == SESS_MSG_WAIT_PUBCOMP ? NULL : value, r->packet_id,
					     r->qos, state, (r->flags & STORE_MSG_RETAIN) != 0,
					     x.ids.count ? &x.ids : NULL);
	wisp_free(x.heap);
	return rc;
}

static int v_flight_del(void *ctx, const struct store_flight *r)
{
	struct broker *b = ctx;
	struct session *s = find_session(b, r->client);
	if (s)
		delivery_restore_unflight(s, r->packet_id);
	return 0;
}

static int v_qos2_add(void *ctx, const struct store_qos2 *r)
{
	struct broker *b = ctx;
	struct session *s = get_session(b, r->client);
	if (!s)
		return WISP_ENOMEM;
	int rc = sess_qos2_in_add(s, r->packet_id);
	return rc < 0 && rc != WISP_ELIMIT ? rc : 0;
}

static int v_qos2_del(void *ctx, const struct store_qos2 *r)
{
	struct broker *b = ctx;
	struct session *s = find_session(b, r->client);
	if (s)
		sess_qos2_in_release(s, r->packet_id);
	return 0;
}

/* A stored will: held by the session's v5 state, to go out after its delay
 * or at the session's end, counted from the restart (session_v5_restored),
 * unless the client reconnects first. */
static int v_will_set(void *ctx, const struct store_will *r)
{
	struct broker *b = ctx;
	struct session *s = get_session(b, r->client);
	struct sess_v5 *v = s ? session_v5_get(b, s) : NULL;
	if (!v)
		return WISP_ENOMEM;
	struct msg_spec spec = {
		.topic = r->topic.ptr,
		.topic_len = r->topic.len,
		.props = r->props.ptr,
		.props_len = r->props.len,
		.payload = r->payload.ptr,
		.payload_len = r->payload.len,
		.qos = r->qos,
		.retain = (r->flags & STORE_MSG_RETAIN) != 0,
	};
	struct msg *m = msg_create(&spec);
	if (!m)
		return WISP_ENOMEM;
	msg_unref(v->will);
	v->will = m;
	v->will_delay = r->delay_s;
	v->will_stored = true;
	return 0;
}

static int v_will_del(void *ctx, const struct store_will *r)
{
	struct broker *b = ctx;
	struct session *s = find_session(b, r->client);
	if (s && s->v5) {
		msg_unref(s->v5->will);
		s->v5->will = NULL;
		s->v5->will_stored = false;
	}
	return 0;
}

/* A message still to be forwarded to the cluster: back in the queue, in
 * the order it was written, for cluster/durable.c to publish. */
static int v_fwd_add(void *ctx, const struct store_fwd *r, void *value)
{
	struct broker *b = ctx;
	struct msg *m = value;
	int rc = fwd_push(b, m, r->id.ptr, r->id.len);
	if (rc == 0)
		m->stored->refs++;
	return rc;
}

static int v_fwd_del(void *ctx, const struct store_fwd *r)
{
	struct broker *b = ctx;
	struct msg *m = fwd_drop(b, NULL, r->msg_id);
	if (m) {
		durable_unref(b, m);
		msg_unref(m);
	}
	return 0;
}

static const struct store_visitor visitor = {
	.msg_put = v_msg_put,
	.msg_release = v_msg_release,
	.retain_set = v_retain_set,
	.retain_del = v_retain_del,
	.session_put = v_session_put,
	.session_del = v_session_del,
	.sub_add = v_sub_add,
	.sub_del = v_sub_del,
	.queue_add = v_queue_add,
	.queue_del = v_queue_del,
	.flight_set = v_flight_set,
	.flight_del = v_flight_del,
	.qos2_in_add = v_qos2_add,
	.qos2_in_del = v_qos2_del,
	.will_set = v_will_set,
	.will_del = v_will_del,
	.fwd_add = v_fwd_add,
	.fwd_del = v_fwd_del,
	.stream_taken = v_stream_taken,
	.retain_unsent = v_retain_unsent,
	.retain_sent = v_retain_sent,
};

/* After the replay: the restored queue and flight entries are the store's
 * references to their messages. Counted here, from the state the replay
 * ended with, rather than record by record, so that session/delivery.c
 * knows nothing of the store's bookkeeping. */
static void count_entry_refs(struct broker *b)
{
	for (size_t i = 0; i < b->sessions.nbuckets; i++)
		for (struct session *s = b->sessions.buckets[i]; s; s = s->hash_next) {
			if (!s->qos)
				continue;
			struct list_node *lists[2] = {&s->qos->inflight, &s->qos->queue};
			for (int k = 0; k < 2; k++)
				for (struct list_node *n = lists[k]->next; n != lists[k]; n = n->next) {
					struct sess_msg *e = container_of(n, struct sess_msg, link);
					if (e->durable && e->msg && e->msg->stored)
						e->msg->stored->refs++;
				}
		}
}

static enum store_fsync fsync_mode(enum config_fsync f)
{
	switch (f) {
	case CONFIG_FSYNC_ALWAYS:
		return STORE_FSYNC_ALWAYS;
	case CONFIG_FSYNC_NO:
		return STORE_FSYNC_NO;
	case CONFIG_FSYNC_EVERYSEC:
		break;
	}
	return STORE_FSYNC_EVERYSEC;
}

int persist_open(struct broker *b, char *err, size_t errlen)
{
	const struct config_persistence *pc = &b->cfg->persistence;
	b->persist.io.fd = -1;
	if (!pc->enabled)
		return 0;
	struct store_options opt = {.dir = pc->dir, .fsync = fsync_mode(pc->fsync),
				    .compact_min_bytes = pc->compact_min_size};
	struct store *st;
	int rc = store_open(&opt, &st, err, errlen);
	if (rc != 0)
		return rc;
	struct store_load_stats stats;
	b->persist.loading = true;
	rc = store_load(st, &visitor, b, &stats, err, errlen);
	b->persist.loading = false;
	if (rc == 0)
		rc = unsent_reduce(b);
	if (rc != 0) {
		fwd_free(b);
		taken_free(b);
		persist_retain_unsent_forget(b);
		store_close(st);
		return rc;
	}
	count_entry_refs(b);
	fwd_compact(b);
	session_v5_restored(b);
	b->persist.store = st;
	if (loop_io_start(b->loop, &b->persist.io, store_durable_fd(st), LOOP_READ, on_durable) != 0) {
		snprintf(err, errlen, "%s: cannot watch the store's sync events", pc->dir);
		b->persist.store = NULL;
		taken_free(b);
		store_close(st);
		return WISP_EIO;
	}
	b->observer = (struct sess_observer){&observer_ops, b};
	size_t sessions = b->sessions.count, queued = 0;
	for (size_t i = 0; i < b->sessions.nbuckets; i++)
		for (struct session *s = b->sessions.buckets[i]; s; s = s->hash_next)
			queued += sess_queued_count(s) + sess_inflight_count(s);
	log_msg(LOG_NOTICE, "store", "%s: restored %zu sessions, %zu queued messages, %zu retained messages "
		"(%llu records, %llu bytes; fsync %s)", pc->dir, sessions, queued, retained_count(b->retained),
		(unsigned long long)stats.records, (unsigned long long)stats.bytes,
		pc->fsync == CONFIG_FSYNC_ALWAYS ? "always" : pc->fsync == CONFIG_FSYNC_NO ? "no" : "everysec");
	if (b->persist.unsent_len)
		log_msg(LOG_NOTICE, "store", "%s: restored %zu retained writes still to be published to the cluster's "
			"retained bucket", pc->dir, b->persist.unsent_len);
	if (b->persist.fwd_len)
		log_msg(LOG_NOTICE, "store", "%s: restored %zu QoS 1/2 messages still to be forwarded to the cluster's "
			"JetStream stream", pc->dir, b->persist.fwd_len);
	return 0;
}

void persist_close(struct broker *b)
{
	if (!b->persist.store)
		return;
	b->observer = (struct sess_observer){0};
	loop_io_stop(b->loop, &b->persist.io);
	loop_timer_stop(b->loop, &b->persist.retry_timer);
	store_close(b->persist.store);
	b->persist.store = NULL;
	fwd_free(b);
	taken_free(b);
	persist_retain_unsent_forget(b);
	for (size_t i = 0; i < b->persist.held_len; i++)
		ack_owner_unref(b->persist.held[(b->persist.held_head + i) & (b->persist.held_cap - 1)].o);
	wisp_free(b->persist.held);
	b->persist.held = NULL;
	b->persist.held_len = b->persist.held_cap = 0;
}

/* ---- a session handed to another node (cluster/handover.c) ---- */

int persist_session_export(struct broker *b, struct session *s, persist_rec_fn *fn, void *ctx)
{
	struct store_rec r = {.type = STORE_REC_SESSION_PUT};
	r.u.session = (struct store_session){
		.client = str_of(s->client_id, s->id_len),
		.proto = s->conn ? s->conn->version : MQTT_PROTO_V311,
		.next_packet_id = s->next_packet_id,
		.expiry_s = persist_expiry(s),
	};
	set_owner(&r.u.session, s);
	int rc = fn(ctx, &r);
	struct list_node *n;
	for (n = s->subs.next; !rc && n != &s->subs; n = n->next) {
		r = (struct store_rec){.type = STORE_REC_SUB_ADD};
		r.u.sub = sub_record(s, container_of(n, struct sess_sub, link));
		rc = fn(ctx, &r);
	}
	uint64_t id = 0;
	struct list_node *lists[2] = {s->qos ? &s->qos->inflight : NULL, s->qos ? &s->qos->queue : NULL};
	for (int k = 0; k < 2 && lists[k]; k++)
		for (n = lists[k]->next; !rc && n != lists[k]; n = n->next) {
			struct sess_msg *e = container_of(n, struct sess_msg, link);
			bool flight = k == 0, with_msg = e->msg && !(flight && e->state == SESS_MSG_WAIT_PUBCOMP);
			if (with_msg) {
				r = (struct store_rec){.type = STORE_REC_MSG_PUT};
				r.u.msg = msg_record(b, e->msg, ++id);
				rc = fn(ctx, &r);
			} else if (!flight) {
				continue; /* a queued entry always has its message */
			}
			struct ids_bytes ids;
			ids_encode(e, &ids);
			if (!rc && flight) {
				r = (struct store_rec){.type = STORE_REC_FLIGHT_SET};
				r.u.flight = flight_record(s, e, ids.b);
				r.u.flight.msg_id = with_msg ? id : 0;
				rc = fn(ctx, &r);
			} else if (!rc) {
				r = (struct store_rec){.type = STORE_REC_QUEUE_ADD};
				r.u.queue = queue_record(s, e, ids.b);
				r.u.queue.msg_id = id;
				rc = fn(ctx, &r);
			}
			wisp_free(ids.heap);
		}
	for (uint16_t i = 0; !rc && i < sess_qos2_in_count(s); i++) {
		r = (struct store_rec){.type = STORE_REC_QOS2_IN_ADD};
		r.u.qos2 = (struct store_qos2){str_of(s->client_id, s->id_len), sess_qos2_in_id(s, i)};
		rc = fn(ctx, &r);
	}
	return rc;
}

static bool is_client(const struct session *s, struct store_str client)
{
	return s && client.len == s->id_len && memcmp(client.ptr, s->client_id, client.len) == 0;
}

/* The client a record names (every record of a session's sequence names
 * one but MSG_PUT). */
static struct store_str rec_client(const struct store_rec *r)
{
	switch (r->type) {
	case STORE_REC_SUB_ADD:
		return r->u.sub.client;
	case STORE_REC_QUEUE_ADD:
		return r->u.queue.client;
	case STORE_REC_FLIGHT_SET:
		return r->u.flight.client;
	case STORE_REC_QOS2_IN_ADD:
		return r->u.qos2.client;
	default:
		return r->u.session.client;
	}
}

/* A handed-over entry is a live change here: the store is told as if the
 * delivery had been queued or sent on this node (observer events), which
 * writes the message itself with this node's id (durable_ref). */
static void import_observe(struct broker *b, struct session *s, struct sess_msg *e, bool flight)
{
	e->durable = false; /* restored entries claim a store reference the observer takes now */
	if (flight)
		SESS_OBSERVE(&b->observer, flight, s, e);
	else
		SESS_OBSERVE(&b->observer, queued, s, e);
}

static int import_delivery(struct broker *b, struct persist_import *x, const struct store_rec *r)
{
	bool flight = r->type == STORE_REC_FLIGHT_SET;
	uint64_t msg_id = flight ? r->u.flight.msg_id : r->u.queue.msg_id;
	uint8_t state = flight ? sess_state(r->u.flight.state) : SESS_MSG_QUEUED;
	bool needs_msg = state != SESS_MSG_WAIT_PUBCOMP;
	if (needs_msg && (!x->m || msg_id != x->msg_id))
		return WISP_EPROTO; /* its MSG_PUT comes right before it */
	struct ids_nums ids;
	int rc = ids_decode(flight ? r->u.flight.sub_ids : r->u.queue.sub_ids, &ids);
	if (rc != 0)
		return rc;
	struct session *s = x->s;
	const struct delivery_sub_ids *idp = ids.ids.count ? &ids.ids : NULL;
	if (flight) {
		rc = delivery_restore_flight(s, &b->dlim, needs_msg ? x->m : NULL, r->u.flight.packet_id,
					     r->u.flight.qos, state, (r->u.flight.flags & STORE_MSG_RETAIN) != 0, idp);
		struct sess_msg *e = rc == 0 && s->qos ? flight_index_get(s->qos->flight, r->u.flight.packet_id) : NULL;
		if (e)
			import_observe(b, s, e, true);
	} else {
		rc = delivery_restore_queued(s, &b->dlim, x->m, r->u.queue.qos, (r->u.queue.flags & STORE_MSG_RETAIN) != 0,
					     idp);
		if (rc == 0 && s->qos)
			import_observe(b, s, container_of(s->qos->queue.prev, struct sess_msg, link), false);
	}
	wisp_free(ids.heap);
	return rc;
}

static int import_session(struct broker *b, struct persist_import *x, const struct store_session *r)
{
	if (x->s)
		return WISP_EPROTO;
	if (find_session(b, r->client))
		return WISP_EEXIST;
	struct session *s = sess_create(&b->sessions, r->client.ptr, r->client.len, false);
	if (!s)
		return WISP_ENOMEM;
	x->s = s;
	s->next_packet_id = r->next_packet_id;
	if (set_expiry(b, s, r->expiry_s) != 0)
		return WISP_ENOMEM;
	/* The owner is bound by the CONNECT this session is fetched for
	 * (handle_connect), which the holder checked against it. */
	SESS_OBSERVE(&b->observer, session_put, s);
	return 0;
}

int persist_import_rec(struct broker *b, struct persist_import *x, const struct store_rec *r)
{
	if (r->type == STORE_REC_SESSION_PUT)
		return import_session(b, x, &r->u.session);
	if (r->type == STORE_REC_MSG_PUT) {
		if (!x->s)
			return WISP_EPROTO;
		struct msg *m = msg_of_record(b, &r->u.msg);
		if (!m)
			return WISP_ENOMEM;
		msg_unref(x->m);
		x->m = m;
		x->msg_id = r->u.msg.id;
		return 0;
	}
	if (!is_client(x->s, rec_client(r)))
		return WISP_EPROTO;
	switch (r->type) {
	case STORE_REC_SUB_ADD: {
		const struct store_sub *sub = &r->u.sub;
		if (broker_topic_bound(b, sub->filter.ptr, sub->filter.len) != TOPIC_WITHIN_LIMITS ||
		    !topic_filter_valid(sub->filter.ptr, sub->filter.len)) {
			x->subs_skipped++;
			return 0;
		}
		uint8_t opts = (uint8_t)(sub->options | (b->auth.acl ? SESS_SUBOPT_ACL_CHECK : 0));
		int rc = router_interest_add(b->router, x->s, sub->filter.ptr, sub->filter.len, opts, sub->sub_id,
					     b->cfg->limits.max_subscriptions);
		if (rc == WISP_ELIMIT) {
			x->subs_skipped++;
			b->stats.subs_refused++;
			return 0;
		}
		return rc < 0 ? rc : 0;
	}
	case STORE_REC_QUEUE_ADD:
	case STORE_REC_FLIGHT_SET:
		return import_delivery(b, x, r);
	case STORE_REC_QOS2_IN_ADD: {
		int rc = sess_qos2_in_add(x->s, r->u.qos2.packet_id);
		if (rc == 1)
			SESS_OBSERVE(&b->observer, qos2_in, x->s, r->u.qos2.packet_id, true);
		return rc < 0 && rc != WISP_ELIMIT ? rc : 0;
	}
	default:
		return WISP_EPROTO;
	}
}

int persist_msg_export(struct broker *b, const struct msg *m, uint64_t id, persist_rec_fn *fn, void *ctx)
{
	struct store_rec r = {.type = STORE_REC_MSG_PUT};
	r.u.msg = msg_record(b, m, id);
	return fn(ctx, &r);
}

struct msg *persist_msg_import(struct broker *b, const struct store_rec *r)
{
	return r->type == STORE_REC_MSG_PUT ? msg_of_record(b, &r->u.msg) : NULL;
}

void persist_import_end(struct broker *b, struct persist_import *x, bool keep)
{
	msg_unref(x->m);
	x->m = NULL;
	if (x->s && !keep) {
		SESS_OBSERVE(&b->observer, session_del, x->s);
		sess_destroy(&b->sessions, b->subs, x->s);
	}
	x->s = NULL;
}
