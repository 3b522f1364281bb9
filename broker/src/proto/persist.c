#include "persist.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "delivery.h"
#include "err.h"
#include "log.h"
#include "store.h"

/* An acknowledgement waiting for the fsync of the records it vouches for. */
struct held_ack {
	struct list_node link;
	struct conn *c;
	uint64_t seq;
	uint8_t len;
	uint8_t bytes[7]; /* PUBACK, PUBREC, PUBCOMP: 4 bytes in 3.1.1 */
};

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

/* Takes a durable reference on m, writing the message itself on first use. */
static void durable_ref(struct broker *b, struct msg *m)
{
	struct store *st = b->persist.store;
	if (!m->store_id) {
		struct store_msg rec = {
			.id = store_next_msg_id(st),
			.qos = m->qos,
			.flags = m->retain ? STORE_MSG_RETAIN : 0,
			.topic = str_of(msg_topic(m), m->topic_len),
			.payload = {msg_payload(m), m->payload_len},
		};
		int rc = store_append_msg_put(st, &rec);
		if (rc != 0) {
			append_failed(b, rc);
			return;
		}
		m->store_id = rec.id;
		m->durable_refs = 0;
	}
	m->durable_refs++;
}

static void durable_unref(struct broker *b, struct msg *m)
{
	if (!m || !m->store_id || m->durable_refs == 0)
		return;
	if (b->persist.loading) {
		m->durable_refs--; /* replay: the log already says what it says */
		return;
	}
	if (--m->durable_refs == 0) {
		int rc = store_append_msg_del(b->persist.store, m->store_id);
		if (rc != 0)
			append_failed(b, rc);
		m->store_id = 0;
	}
}

/* ---- delivery hooks: outbound QoS 1/2 state of persistent sessions ---- */

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

static void on_queued(void *ctx, struct session *s, struct sess_msg *e)
{
	struct broker *b = ctx;
	if (!is_persistent(s) || b->persist.loading)
		return;
	durable_ref(b, e->msg);
	e->durable = true;
	int rc = store_append_queue_add(b->persist.store, s->client_id, s->id_len, e->msg->store_id, e->qos,
					e->retain ? STORE_MSG_RETAIN : 0);
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
	struct store_flight f = {
		.client = str_of(s->client_id, s->id_len),
		.msg_id = pubcomp_wait ? 0 : e->msg->store_id,
		.packet_id = e->packet_id,
		.state = flight_state(e),
		.qos = e->qos,
		.flags = e->retain ? STORE_MSG_RETAIN : 0,
	};
	int rc = store_append_flight_set(b->persist.store, &f);
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
	int rc = store_append_queue_del(b->persist.store, s->client_id, s->id_len, e->msg->store_id);
	if (rc != 0)
		append_failed(b, rc);
	durable_unref(b, e->msg);
}

static const struct delivery_hooks hooks = {
	.queued = on_queued,
	.flight = on_flight,
	.done = on_done,
	.cleared = on_cleared,
	.unqueued = on_unqueued,
};

/* ---- state changes from the handlers ---- */

void persist_session_put(struct broker *b, struct session *s)
{
	if (!b->persist.store || !is_persistent(s))
		return;
	struct store_session rec = {
		.client = str_of(s->client_id, s->id_len),
		.proto = s->conn ? s->conn->version : MQTT_PROTO_V311,
		.next_packet_id = s->next_packet_id,
	};
	int rc = store_append_session_put(b->persist.store, &rec);
	if (rc != 0)
		append_failed(b, rc);
}

void persist_session_del(struct broker *b, struct session *s)
{
	if (!b->persist.store || !is_persistent(s) || b->persist.loading)
		return;
	int rc = store_append_session_del(b->persist.store, s->client_id, s->id_len);
	if (rc != 0)
		append_failed(b, rc);
}

void persist_sub_add(struct broker *b, struct session *s, const char *filter, size_t len, uint8_t options)
{
	if (!b->persist.store || !is_persistent(s))
		return;
	struct store_sub rec = {
		.client = str_of(s->client_id, s->id_len),
		.filter = str_of(filter, len),
		/* The ACL bit is ours and is recomputed at every login. */
		.options = options & (uint8_t)~SESS_SUBOPT_ACL_CHECK,
	};
	int rc = store_append_sub_add(b->persist.store, &rec);
	if (rc != 0)
		append_failed(b, rc);
}

void persist_sub_del(struct broker *b, struct session *s, const char *filter, size_t len)
{
	if (!b->persist.store || !is_persistent(s))
		return;
	int rc = store_append_sub_del(b->persist.store, s->client_id, s->id_len, filter, len);
	if (rc != 0)
		append_failed(b, rc);
}

void persist_qos2_in(struct broker *b, struct session *s, uint16_t packet_id, bool add)
{
	if (!b->persist.store || !is_persistent(s))
		return;
	int rc = add ? store_append_qos2_in_add(b->persist.store, s->client_id, s->id_len, packet_id)
		     : store_append_qos2_in_del(b->persist.store, s->client_id, s->id_len, packet_id);
	if (rc != 0)
		append_failed(b, rc);
}

void persist_retain(struct broker *b, struct msg *m)
{
	if (!b->persist.store || is_sys(m) || b->persist.loading)
		return;
	int rc;
	if (m->payload_len == 0) {
		rc = store_append_retain_del(b->persist.store, msg_topic(m), m->topic_len);
	} else {
		durable_ref(b, m);
		rc = store_append_retain_set(b->persist.store, msg_topic(m), m->topic_len, m->store_id);
	}
	if (rc != 0)
		append_failed(b, rc);
}

void persist_retain_released(struct broker *b, struct msg *m)
{
	if (!b->persist.store || b->persist.loading || is_sys(m))
		return;
	durable_unref(b, m);
}

/* ---- acknowledgements ---- */

static void release_held(struct broker *b, uint64_t durable)
{
	struct list_node *n;
	while ((n = list_first(&b->persist.held)) != NULL) {
		struct held_ack *h = container_of(n, struct held_ack, link);
		if (h->seq > durable)
			break;
		list_remove(n);
		h->c->held_acks--;
		conn_send_bytes(h->c, h->bytes, h->len);
		wisp_free(h);
	}
}

int persist_send_ack(struct broker *b, struct conn *c, const uint8_t *bytes, size_t len)
{
	struct store *st = b->persist.store;
	if (!st || store_fsync_mode(st) != STORE_FSYNC_ALWAYS || len > sizeof ((struct held_ack *)0)->bytes)
		return conn_send_bytes(c, bytes, len);
	uint64_t seq = store_seq(st);
	/* Acks leave in the order their PUBLISHes came [MQTT-4.6.0-2], so once
	 * one waits, the ones after it wait too. */
	if (seq <= b->persist.durable && c->held_acks == 0)
		return conn_send_bytes(c, bytes, len);
	struct held_ack *h = wisp_malloc(sizeof *h);
	if (!h)
		return WISP_ENOMEM;
	h->c = c;
	h->seq = seq;
	h->len = (uint8_t)len;
	memcpy(h->bytes, bytes, len);
	list_push_back(&b->persist.held, &h->link);
	c->held_acks++;
	return 0;
}

void persist_forget_conn(struct broker *b, struct conn *c)
{
	if (!c->held_acks)
		return;
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &b->persist.held) {
		struct held_ack *h = container_of(n, struct held_ack, link);
		if (h->c == c) {
			list_remove(n);
			wisp_free(h);
		}
	}
	c->held_acks = 0;
}

static void on_durable(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct broker *b = container_of(io, struct broker, persist.io);
	(void)l;
	(void)events;
	b->persist.durable = store_durable_seq(b->persist.store);
	release_held(b, b->persist.durable);
}

/* ---- compaction: the whole live state, each message written once ---- */

struct emit_ctx {
	struct broker *b;
	struct store *st;
	int rc;
};

static int emit_msg(struct emit_ctx *x, struct msg *m)
{
	if (m->emit_gen == x->b->persist.emit_gen)
		return 0;
	m->emit_gen = x->b->persist.emit_gen;
	struct store_msg rec = {
		.id = m->store_id,
		.qos = m->qos,
		.flags = m->retain ? STORE_MSG_RETAIN : 0,
		.topic = str_of(msg_topic(m), m->topic_len),
		.payload = {msg_payload(m), m->payload_len},
	};
	return store_append_msg_put(x->st, &rec);
}

static void emit_retained(const char *topic, size_t len, void *value, void *ctx)
{
	struct emit_ctx *x = ctx;
	struct msg *m = value;
	if (x->rc || !m->store_id)
		return;
	x->rc = emit_msg(x, m);
	if (!x->rc)
		x->rc = store_append_retain_set(x->st, topic, len, m->store_id);
}

static int emit_session(struct emit_ctx *x, struct session *s)
{
	struct store *st = x->st;
	struct store_session rec = {.client = str_of(s->client_id, s->id_len), .next_packet_id = s->next_packet_id,
				    .proto = MQTT_PROTO_V311};
	int rc = store_append_session_put(st, &rec);
	struct list_node *n;
	for (n = s->subs.next; !rc && n != &s->subs; n = n->next) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		struct store_sub r = {.client = rec.client, .filter = str_of(sub->filter, sub->filter_len),
				      .options = tree_sub_options(&sub->handle) & (uint8_t)~SESS_SUBOPT_ACL_CHECK};
		rc = store_append_sub_add(st, &r);
	}
	for (n = s->inflight.next; !rc && n != &s->inflight; n = n->next) {
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (e->msg && e->msg->store_id)
			rc = emit_msg(x, e->msg);
		struct store_flight f = {.client = rec.client,
					 .msg_id = e->msg ? e->msg->store_id : 0,
					 .packet_id = e->packet_id,
					 .state = flight_state(e),
					 .qos = e->qos,
					 .flags = e->retain ? STORE_MSG_RETAIN : 0};
		if (!rc)
			rc = store_append_flight_set(st, &f);
	}
	for (n = s->queue.next; !rc && n != &s->queue; n = n->next) {
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (!e->msg->store_id)
			continue;
		rc = emit_msg(x, e->msg);
		if (!rc)
			rc = store_append_queue_add(st, s->client_id, s->id_len, e->msg->store_id, e->qos,
						    e->retain ? STORE_MSG_RETAIN : 0);
	}
	for (uint16_t i = 0; !rc && i < s->qos2_in_count; i++)
		rc = store_append_qos2_in_add(st, s->client_id, s->id_len, s->qos2_in[i]);
	return rc;
}

static int emit_state(void *ctx, struct store *st)
{
	struct broker *b = ctx;
	struct emit_ctx x = {b, st, 0};
	b->persist.emit_gen++;
	retained_match(b->retained, "#", 1, emit_retained, &x);
	for (size_t i = 0; !x.rc && i < b->sessions.nbuckets; i++)
		for (struct session *s = b->sessions.buckets[i]; !x.rc && s; s = s->hash_next)
			if (is_persistent(s))
				x.rc = emit_session(&x, s);
	return x.rc;
}

bool persist_flush(struct broker *b)
{
	struct store *st = b->persist.store;
	if (!st)
		return true;
	if (store_flush(st) != 0) {
		if (!b->persist.flush_failing)
			log_msg(LOG_ERROR, "store", "cannot write the log: acknowledgements wait until it can");
		b->persist.flush_failing = true;
		return false;
	}
	if (b->persist.flush_failing)
		log_msg(LOG_NOTICE, "store", "the log is writable again");
	b->persist.flush_failing = false;
	if (store_fsync_mode(st) != STORE_FSYNC_ALWAYS)
		release_held(b, UINT64_MAX);
	if (store_compact_due(st)) {
		int rc = store_compact(st, emit_state, b);
		if (rc != 0 && rc != WISP_EAGAIN)
			log_msg(LOG_WARNING, "store", "compaction failed (%s); the log keeps growing",
				wisp_strerror(rc));
	}
	return true;
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

static int v_msg_put(void *ctx, const struct store_msg *r, void **handle)
{
	(void)ctx;
	struct msg *m = msg_new(r->topic.ptr, r->topic.len, r->payload.ptr, r->payload.len, r->qos,
				(r->flags & STORE_MSG_RETAIN) != 0);
	if (!m)
		return WISP_ENOMEM;
	m->store_id = r->id;
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
		old->durable_refs--;
	if (retained_set(b->retained, r->topic.ptr, r->topic.len, msg_ref(m), msg_size(m)) != 0) {
		msg_unref(m);
		log_msg(LOG_WARNING, "store", "retained message on '%.*s' not restored: retained limit reached",
			(int)r->topic.len, r->topic.ptr);
		return 0;
	}
	m->durable_refs++;
	return 0;
}

static int v_retain_del(void *ctx, const struct store_retain *r)
{
	struct broker *b = ctx;
	struct msg *old = retained_get(b->retained, r->topic.ptr, r->topic.len);
	if (old)
		old->durable_refs--;
	retained_set(b->retained, r->topic.ptr, r->topic.len, NULL, 0);
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

static int v_sub_add(void *ctx, const struct store_sub *r)
{
	struct broker *b = ctx;
	struct session *s = get_session(b, r->client);
	if (!s)
		return WISP_ENOMEM;
	if (!topic_filter_valid(r->filter.ptr, r->filter.len))
		return 0;
	/* ACL classification happens when the client logs in again; until
	 * then, deliveries to the offline session are checked per topic. */
	uint8_t opts = (uint8_t)(r->options | (b->auth.acl ? SESS_SUBOPT_ACL_CHECK : 0));
	int rc = sess_subscribe(s, b->subs, r->filter.ptr, r->filter.len, opts, 0);
	return rc < 0 ? rc : 0;
}

static int v_sub_del(void *ctx, const struct store_sub *r)
{
	struct broker *b = ctx;
	struct session *s = find_session(b, r->client);
	if (s)
		sess_unsubscribe(s, b->subs, r->filter.ptr, r->filter.len);
	return 0;
}

static int v_queue_add(void *ctx, const struct store_queue *r, void *value)
{
	struct broker *b = ctx;
	struct session *s = get_session(b, r->client);
	if (!s)
		return WISP_ENOMEM;
	return delivery_restore_queued(s, value, r->qos, (r->flags & STORE_MSG_RETAIN) != 0);
}

static int v_queue_del(void *ctx, const struct store_queue *r)
{
	struct broker *b = ctx;
	struct session *s = find_session(b, r->client);
	if (!s)
		return 0;
	struct list_node *n;
	for (n = s->queue.next; n != &s->queue; n = n->next) {
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (e->msg->store_id == r->msg_id) {
			delivery_restore_unqueue(s, e->msg);
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
	return delivery_restore_flight(s, state == SESS_MSG_WAIT_PUBCOMP ? NULL : value, r->packet_id, r->qos,
				       state, (r->flags & STORE_MSG_RETAIN) != 0);
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
};

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
	list_init(&b->persist.held);
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
	if (rc != 0) {
		store_close(st);
		return rc;
	}
	b->persist.store = st;
	if (loop_io_start(b->loop, &b->persist.io, store_durable_fd(st), LOOP_READ, on_durable) != 0) {
		snprintf(err, errlen, "%s: cannot watch the store's sync events", pc->dir);
		b->persist.store = NULL;
		store_close(st);
		return WISP_EIO;
	}
	delivery_set_hooks(&hooks, b);
	size_t sessions = b->sessions.count, queued = 0;
	for (size_t i = 0; i < b->sessions.nbuckets; i++)
		for (struct session *s = b->sessions.buckets[i]; s; s = s->hash_next)
			queued += s->queued_count + s->inflight_count;
	log_msg(LOG_NOTICE, "store", "%s: restored %zu sessions, %zu queued messages, %zu retained messages "
		"(%llu records, %llu bytes; fsync %s)", pc->dir, sessions, queued, retained_count(b->retained),
		(unsigned long long)stats.records, (unsigned long long)stats.bytes,
		pc->fsync == CONFIG_FSYNC_ALWAYS ? "always" : pc->fsync == CONFIG_FSYNC_NO ? "no" : "everysec");
	return 0;
}

void persist_close(struct broker *b)
{
	if (!b->persist.store)
		return;
	delivery_set_hooks(NULL, NULL);
	loop_io_stop(b->loop, &b->persist.io);
	store_close(b->persist.store);
	b->persist.store = NULL;
	struct list_node *n;
	while ((n = list_first(&b->persist.held)) != NULL) {
		list_remove(n);
		wisp_free(container_of(n, struct held_ack, link));
	}
}
