#include "delivery.h"

#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "conn.h"
#include "err.h"
#include "flight.h"
#include "log.h"

/* The QoS 1/2 state (struct sess_qos) exists while anything is queued or
 * in flight: whatever adds an entry has it from sess_qos_get, and every
 * public function that may remove one ends with sess_qos_trim. */

static void queue_add(struct session *s, const struct delivery_limits *lim, uint64_t bytes)
{
	s->qos->queued_bytes += bytes;
	if (lim && lim->totals)
		lim->totals->queued_bytes += bytes;
}

static void queue_sub(struct session *s, const struct delivery_limits *lim, uint64_t bytes)
{
	s->qos->queued_bytes -= bytes;
	if (lim && lim->totals)
		lim->totals->queued_bytes -= bytes;
}

/* max_queued_bytes_total: may `bytes` more be queued? An episode starts at
 * the first refusal (one warning) and ends once the total is back under
 * three quarters of the bound (one notice with the count), so a queue
 * hovering at the bound does not log per message. */
static bool total_has_room(const struct delivery_limits *lim, uint64_t bytes)
{
	uint64_t bound = lim->max_queued_bytes_total;
	struct delivery_totals *t = lim->totals;
	if (bound == 0 || !t)
		return true;
	if (t->queued_bytes + bytes <= bound) {
		if (t->full && t->queued_bytes + bytes <= bound - bound / 4) {
			log_msg(LOG_NOTICE, "queue", "queued messages under max_queued_bytes_total again; %llu dropped meanwhile",
				(unsigned long long)t->episode_dropped);
			t->full = false;
		}
		return true;
	}
	t->episode_dropped++;
	if (!t->full) {
		t->full = true;
		t->episode_dropped = 1;
		log_msg(LOG_WARNING, "queue",
			"queued messages of all sessions reached limits.max_queued_bytes_total (%llu bytes): "
			"dropping QoS 1/2 messages for offline and slow clients",
			(unsigned long long)bound);
	}
	return false;
}

/* A 3.1.1 delivery's entry (no identifiers) is 40 bytes: the identifier
 * count sits in what was padding, and the id index's chain pointer takes
 * what malloc's 48-byte chunk for 32 bytes left unused, so a queued
 * message costs the heap what it did before the index. */
_Static_assert(sizeof(struct sess_msg) == 40, "struct sess_msg grew");

/* Reports a change of outbound state to the observer (observer.h). */
#define HOOK(lim, event, s, e) SESS_OBSERVE((lim) ? (lim)->observer : NULL, event, (s), (e))

static bool online(const struct session *s)
{
	return s->conn && s->conn->state == CONN_ACTIVE;
}

static bool output_has_room(const struct session *s, const struct delivery_limits *lim)
{
	return s->conn->out.bytes < lim->max_output;
}

/* The next id not used by an in-flight message [MQTT-2.3.1-2], one index
 * probe per candidate: ids are taken in sequence, so the candidate is
 * taken only when a message sent 65,535 ids ago is still unacknowledged.
 * The window (at most 65,535) never holds every id, so this ends. */
static uint16_t next_packet_id(struct session *s)
{
	for (;;) {
		s->next_packet_id = (uint16_t)(s->next_packet_id == UINT16_MAX ? 1 : s->next_packet_id + 1);
		if (!flight_index_get(s->qos->flight, s->next_packet_id))
			return s->next_packet_id;
	}
}

/* The remaining Message Expiry Interval forwarded with m [MQTT-3.3.2-6]. */
static uint32_t expiry_left(const struct delivery_limits *lim, const struct msg *m)
{
	if (!m->expires_at || !lim || !lim->clock)
		return 0;
	return msg_expiry_left(m, loop_now_s(lim->clock));
}

static struct outq_delivery entry_delivery(const struct delivery_limits *lim, const struct sess_msg *e, bool dup)
{
	return (struct outq_delivery){
		.qos = e->qos,
		.retain = e->retain,
		.dup = dup,
		.packet_id = e->packet_id ? e->packet_id : 1, /* its size, before an id is taken */
		.expiry_left = expiry_left(lim, e->msg),
		.sub_ids = e->sub_ids,
		.sub_id_count = e->sub_id_count,
	};
}

/*
 * Outbound Topic Alias [MQTT-3.3.2-9..11]: a topic sent before on this
 * connection goes as its alias alone; a new one takes the next slot
 * (round robin) and goes with its name and the alias. alias_prepare fills
 * `d` and returns the slot to remember once the packet is queued
 * (alias_commit), or -1: a slot is only taken by a packet that is sent.
 * A linear scan of at most limits.max_topic_alias entries (default 10),
 * for v5 clients that accept aliases only.
 */
static int alias_prepare(const struct session *s, const struct msg *m, struct outq_delivery *d)
{
	const struct sess_v5 *v = s->v5;
	if (!v || !v->out_alias_max || s->conn->version != MQTT_PROTO_V5)
		return -1;
	if (v->out_aliases)
		for (uint16_t i = 0; i < v->out_alias_max; i++)
			if (v->out_aliases[i].topic && v->out_aliases[i].len == m->topic_len &&
			    memcmp(v->out_aliases[i].topic, msg_topic(m), m->topic_len) == 0) {
				d->topic_alias = (uint16_t)(i + 1);
				d->topic_omitted = true;
				return -1;
			}
	d->topic_alias = (uint16_t)(v->out_alias_next + 1);
	return v->out_alias_next;
}

static void alias_commit(struct session *s, const struct msg *m, int slot)
{
	struct sess_v5 *v = s->v5;
	if (slot < 0)
		return;
	if (!v->out_aliases)
		v->out_aliases = wisp_calloc(v->out_alias_max, sizeof *v->out_aliases);
	char *copy = v->out_aliases ? wisp_malloc((size_t)m->topic_len + 1) : NULL;
	if (!copy) {
		/* The packet carries the alias with its name: the client maps it;
		 * we just do not reuse it. Nothing is wrong on the wire. */
		return;
	}
	memcpy(copy, msg_topic(m), m->topic_len);
	copy[m->topic_len] = '\0';
	struct sess_alias *a = &v->out_aliases[slot];
	wisp_free(a->topic);
	a->topic = copy;
	a->len = m->topic_len;
	v->out_alias_next = (uint16_t)((slot + 1) % v->out_alias_max);
}

#define TOO_LARGE (-2)

/* Takes the outbound alias for `d` and checks the packet, measured as it
 * will be sent, against the client's Maximum Packet Size [MQTT-3.1.2-25].
 * A new alias adds its 3 bytes to a packet that still carries the name:
 * when only those are over, the packet goes without an alias rather than
 * not at all. Returns the slot for alias_commit (-1: none), or TOO_LARGE:
 * the client cannot take this message in any form. */
static int prepare(const struct session *s, const struct msg *m, struct outq_delivery *d)
{
	int slot = alias_prepare(s, m, d);
	uint32_t max = s->v5->packet_max;
	if (!max)
		return slot;
	size_t size = outq_publish_size(m, s->conn->version, d);
	if (size && size <= max)
		return slot;
	if (slot >= 0) {
		d->topic_alias = 0;
		size = outq_publish_size(m, s->conn->version, d);
		if (size && size <= max)
			return -1;
	}
	return TOO_LARGE;
}

/* Sends as `d` describes it, prepared (prepare) with `slot`. */
static int send_prepared(struct session *s, struct msg *m, struct outq_delivery *d, int slot)
{
	int rc = conn_send_publish(s->conn, m, d);
	if (rc == 0)
		alias_commit(s, m, slot);
	return rc;
}

/* The in-flight window: max_inflight, or less if the client's Receive
 * Maximum says so [MQTT-3.3.4-9]. */
static uint16_t window(const struct session *s, const struct delivery_limits *lim)
{
	uint16_t w = lim->max_inflight;
	if (s->v5 && s->v5->send_max && s->v5->send_max < w)
		w = s->v5->send_max;
	return w;
}

static int send_pubrel(struct session *s, const struct delivery_limits *lim, uint16_t packet_id)
{
	uint8_t buf[8];
	struct mqtt_ack ack = {.packet_id = packet_id};
	ssize_t n = mqtt_encode_ack(buf, sizeof buf, s->conn->version, MQTT_PKT_PUBREL, &ack);
	if (n < 0)
		return WISP_EINVAL;
	if (lim && lim->send_pubrel)
		return lim->send_pubrel(lim->pubrel_ctx, s->conn, buf, (size_t)n);
	return conn_send_bytes(s->conn, buf, (size_t)n);
}

/* Puts a queued entry on the wire and into the window; WISP_ELIMIT
 * (nothing done) when it is over the client's Maximum Packet Size,
 * WISP_ENOMEM (nothing done) when the id index cannot grow. */
static int start_flight(struct session *s, const struct delivery_limits *lim, struct sess_msg *e)
{
	struct outq_delivery d = entry_delivery(lim, e, false);
	/* A session without v5 state has no alias and no size to check:
	 * tested here, so that a 3.1.1 delivery pays no call for them. */
	int slot = s->v5 ? prepare(s, e->msg, &d) : -1;
	if (slot == TOO_LARGE)
		return WISP_ELIMIT; /* dropped for this client alone, and counted */
	if (flight_index_reserve(&s->qos->flight) != 0)
		return WISP_ENOMEM;
	e->packet_id = next_packet_id(s);
	e->state = e->qos == 1 ? SESS_MSG_WAIT_PUBACK : SESS_MSG_WAIT_PUBREC;
	flight_index_put(s->qos->flight, e);
	list_push_back(&s->qos->inflight, &e->link);
	s->qos->inflight_count++;
	HOOK(lim, flight, s, e);
	/* If the send fails (out of memory) the entry stays in flight and is
	 * re-sent when the session resumes, like any unacknowledged message.
	 * The description checked against the Maximum Packet Size is the one
	 * sent: built once per delivery. */
	d.packet_id = e->packet_id;
	send_prepared(s, e->msg, &d, slot);
	return 0;
}

static void free_entry(struct sess_msg *e)
{
	msg_unref(e->msg);
	flight_entry_free(e);
}

/* Takes an in-flight entry out of the window (the caller frees it). */
static void unflight(struct session *s, struct sess_msg *e)
{
	list_remove(&e->link);
	flight_index_del(&s->qos->flight, e->packet_id);
	s->qos->inflight_count--;
}

/* QoS 1 and 2: sent at once into the window, queued, or dropped. Out of
 * line, so that the QoS 0 path of delivery_offer stays short. */
__attribute__((noinline)) static enum delivery_result offer_acked(struct session *s,
								   const struct delivery_limits *lim,
								   struct msg *m, uint8_t qos, bool retain,
								   const struct delivery_sub_ids *ids,
								   enum drop_reason *why)
{
	bool direct = online(s) && sess_queued_count(s) == 0 && sess_inflight_count(s) < window(s, lim) &&
		      output_has_room(s, lim);
	if (!direct) {
		/* 0 means unlimited for either bound, as config/README.md says. */
		if (lim->max_queued && sess_queued_count(s) >= lim->max_queued) {
			*why = DROP_QUEUE_FULL;
			goto drop;
		}
		if (lim->max_queued_bytes && sess_queued_bytes(s) + msg_size(m) > lim->max_queued_bytes) {
			*why = DROP_QUEUE_BYTES;
			goto drop;
		}
		if (!total_has_room(lim, msg_size(m))) {
			*why = DROP_QUEUE_TOTAL;
			goto drop;
		}
	}
	uint16_t nids = ids ? ids->count : 0;
	if (!sess_qos_get(s)) {
		*why = DROP_NO_MEMORY;
		goto drop;
	}
	struct sess_msg *e = flight_entry_new(nids);
	if (!e) {
		sess_qos_trim(s);
		*why = DROP_NO_MEMORY;
		goto drop;
	}
	e->msg = msg_ref(m);
	e->qos = qos;
	e->retain = retain;
	e->durable = false;
	e->packet_id = 0;
	if (nids)
		memcpy(e->sub_ids, ids->ids, nids * sizeof e->sub_ids[0]);
	if (direct) {
		int rc = start_flight(s, lim, e);
		if (rc == 0)
			return DELIVERY_SENT;
		free_entry(e);
		sess_qos_trim(s);
		*why = rc == WISP_ELIMIT ? DROP_TOO_LARGE : DROP_NO_MEMORY;
		goto drop;
	}
	e->state = SESS_MSG_QUEUED;
	list_push_back(&s->qos->queue, &e->link);
	s->qos->queued_count++;
	queue_add(s, lim, msg_size(m));
	HOOK(lim, queued, s, e);
	return DELIVERY_QUEUED;
drop:
	sess_count_dropped(s, 1);
	return DELIVERY_DROPPED;
}

/* QoS 0 to a v5 connection (or a session with v5 state): identifiers, outbound Topic Alias,
 * the client's Maximum Packet Size. Out of line, so that a 3.1.1 QoS 0
 * delivery costs what it did. */
__attribute__((noinline)) static enum delivery_result offer_v5_qos0(struct session *s,
								   const struct delivery_limits *lim,
								   struct msg *m, bool retain,
								   const struct delivery_sub_ids *ids,
								   enum drop_reason *why)
{
	struct outq_delivery d = {.retain = retain, .expiry_left = expiry_left(lim, m)};
	if (ids) {
		d.sub_ids = ids->ids;
		d.sub_id_count = ids->count;
	}
	int slot = s->v5 ? prepare(s, m, &d) : -1;
	if (slot == TOO_LARGE) {
		*why = DROP_TOO_LARGE;
	} else if (send_prepared(s, m, &d, slot) == 0) {
		return DELIVERY_SENT;
	} else {
		*why = DROP_NO_MEMORY;
	}
	sess_count_dropped(s, 1);
	return DELIVERY_DROPPED;
}

enum delivery_result delivery_offer(struct session *s, const struct delivery_limits *lim, struct msg *m,
				    uint8_t qos, bool retain, const struct delivery_sub_ids *ids,
				    enum drop_reason *why)
{
	if (qos != 0)
		return offer_acked(s, lim, m, qos, retain, ids, why);
	/* QoS 0 is never queued: a subscriber that is offline or does not
	 * read loses it rather than growing the broker's memory. */
	if (!online(s)) {
		*why = DROP_OFFLINE_QOS0;
	} else if (!output_has_room(s, lim)) {
		*why = DROP_OUTPUT_FULL;
	} else if (s->v5 || s->conn->version == MQTT_PROTO_V5) {
		return offer_v5_qos0(s, lim, m, retain, ids, why);
	} else {
		/* 3.1.1: no property is written, so neither identifiers nor
		 * expiry matter here. */
		struct outq_delivery d = {.retain = retain};
		if (conn_send_publish(s->conn, m, &d) == 0)
			return DELIVERY_SENT;
		*why = DROP_NO_MEMORY;
	}
	sess_count_dropped(s, 1);
	return DELIVERY_DROPPED;
}

size_t delivery_pump(struct session *s, const struct delivery_limits *lim)
{
	size_t sent = 0;
	struct sess_qos *q = s->qos;
	if (!q)
		return 0;
	while (online(s) && q->inflight_count < window(s, lim) && output_has_room(s, lim)) {
		struct list_node *n = list_first(&q->queue);
		if (!n)
			break;
		/* Out of memory for the id index: the entry stays queued, and the
		 * next acknowledgement or resume tries again. */
		if (flight_index_reserve(&q->flight) != 0)
			break;
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		list_remove(n);
		q->queued_count--;
		queue_sub(s, lim, msg_size(e->msg));
		enum drop_reason why = DROP_EXPIRED;
		/* [MQTT-3.3.2-5] not delivered once its interval has passed */
		bool expired = e->msg->expires_at && lim->clock && msg_expired(e->msg, loop_now_s(lim->clock));
		if (!expired && start_flight(s, lim, e) == 0) {
			sent++;
			continue;
		}
		if (!expired)
			why = DROP_TOO_LARGE;
		HOOK(lim, unqueued, s, e);
		free_entry(e);
		sess_count_dropped(s, 1);
		if (lim->on_drop)
			lim->on_drop(lim->drop_ctx, s, why);
	}
	sess_qos_trim(s);
	return sent;
}

/* The entry in flight under `packet_id`, or NULL: one index probe. */
static struct sess_msg *find_by_id(const struct session *s, uint16_t packet_id)
{
	return s->qos ? flight_index_get(s->qos->flight, packet_id) : NULL;
}

static struct sess_msg *find_inflight(struct session *s, uint16_t packet_id, uint8_t state)
{
	struct sess_msg *e = find_by_id(s, packet_id);
	return e && e->state == state ? e : NULL;
}

int delivery_inflight_state(const struct session *s, uint16_t packet_id)
{
	const struct sess_msg *e = find_by_id(s, packet_id);
	return e ? e->state : -1;
}

static void complete(struct session *s, const struct delivery_limits *lim, struct sess_msg *e)
{
	unflight(s, e);
	HOOK(lim, done, s, e);
	free_entry(e);
	if (!list_empty(&s->qos->queue))
		delivery_pump(s, lim); /* trims */
	else
		sess_qos_trim(s);
}

/* One index probe serves both the wrong-kind check and the completion. */
int delivery_on_puback(struct session *s, const struct delivery_limits *lim, uint16_t packet_id)
{
	struct sess_msg *e = find_by_id(s, packet_id);
	if (!e)
		return WISP_ENOENT;
	if (e->state != SESS_MSG_WAIT_PUBACK)
		return WISP_EPROTO; /* sent at QoS 2 (4.3.3) */
	complete(s, lim, e);
	return 0;
}

int delivery_on_pubrec(struct session *s, const struct delivery_limits *lim, uint16_t packet_id, uint8_t reason)
{
	struct sess_msg *e = find_by_id(s, packet_id);
	if (e && e->state == SESS_MSG_WAIT_PUBACK)
		return WISP_EPROTO; /* sent at QoS 1 (4.3.2) */
	if (reason >= 0x80) {
		/* v5: the receiver refused the message. No PUBREL follows
		 * [MQTT-4.3.3-4]; the id is free again (4.3.3) and the send
		 * quota returns (4.9), so the flow ends as a PUBCOMP ends it. */
		if (!e)
			return WISP_ENOENT;
		complete(s, lim, e);
		return 0;
	}
	if (e && e->state == SESS_MSG_WAIT_PUBREC) {
		/* [MQTT-4.3.3-1] from here on the message is never sent again;
		 * only the PUBREL is. The payload is no longer needed. */
		e->state = SESS_MSG_WAIT_PUBCOMP;
		HOOK(lim, flight, s, e);
		msg_unref(e->msg);
		e->msg = NULL;
	} else if (!e) {
		send_pubrel(s, lim, packet_id); /* let a confused client finish anyway */
		return WISP_ENOENT;
	}
	send_pubrel(s, lim, packet_id);
	return 0;
}

int delivery_on_pubcomp(struct session *s, const struct delivery_limits *lim, uint16_t packet_id)
{
	struct sess_msg *e = find_inflight(s, packet_id, SESS_MSG_WAIT_PUBCOMP);
	if (!e)
		return WISP_ENOENT;
	complete(s, lim, e);
	return 0;
}

void delivery_resume(struct session *s, const struct delivery_limits *lim)
{
	if (!s->qos)
		return;
	struct list_node *n, *next;
	for (n = s->qos->inflight.next; n != &s->qos->inflight; n = next) {
		next = n->next;
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (e->state == SESS_MSG_WAIT_PUBCOMP) {
			send_pubrel(s, lim, e->packet_id);
			continue;
		}
		struct outq_delivery d = entry_delivery(lim, e, true); /* [MQTT-3.3.1-1] DUP on re-delivery */
		int slot = s->v5 ? prepare(s, e->msg, &d) : -1;
		if (slot == TOO_LARGE) {
			/* The client came back with a smaller Maximum Packet Size:
			 * discarded as if its delivery had completed
			 * [MQTT-3.1.2-25], or it would get it at every resume. */
			unflight(s, e);
			HOOK(lim, done, s, e);
			free_entry(e);
			sess_count_dropped(s, 1);
			if (lim->on_drop)
				lim->on_drop(lim->drop_ctx, s, DROP_TOO_LARGE);
			continue;
		}
		send_prepared(s, e->msg, &d, slot);
	}
	delivery_pump(s, lim);
}

void delivery_clear(struct session *s, const struct delivery_limits *lim)
{
	struct sess_qos *q = s->qos;
	if (!q)
		return;
	struct list_node *n;
	while ((n = list_first(&q->inflight)) != NULL) {
		list_remove(n);
		HOOK(lim, cleared, s, container_of(n, struct sess_msg, link));
		free_entry(container_of(n, struct sess_msg, link));
	}
	while ((n = list_first(&q->queue)) != NULL) {
		list_remove(n);
		HOOK(lim, cleared, s, container_of(n, struct sess_msg, link));
		free_entry(container_of(n, struct sess_msg, link));
	}
	queue_sub(s, lim, q->queued_bytes);
	sess_qos_trim(s); /* frees the id index too */
}

size_t delivery_filter(struct session *s, const struct delivery_limits *lim, delivery_keep_fn keep, void *ctx)
{
	size_t removed = 0;
	struct sess_qos *q = s->qos;
	if (!q)
		return 0;
	struct list_node *n, *next;
	for (n = q->inflight.next; n != &q->inflight; n = next) {
		next = n->next;
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (e->state == SESS_MSG_WAIT_PUBCOMP || keep(ctx, s, e->msg))
			continue;
		/* Never re-sent now; a late PUBACK/PUBREC for its id finds
		 * nothing and is ignored. */
		unflight(s, e);
		HOOK(lim, done, s, e);
		free_entry(e);
		removed++;
	}
	for (n = q->queue.next; n != &q->queue; n = next) {
		next = n->next;
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (keep(ctx, s, e->msg))
			continue;
		list_remove(n);
		q->queued_count--;
		queue_sub(s, lim, msg_size(e->msg));
		HOOK(lim, unqueued, s, e);
		free_entry(e);
		removed++;
	}
	sess_count_dropped(s, (uint32_t)removed);
	sess_qos_trim(s);
	return removed;
}

static struct sess_msg *new_entry(struct msg *m, uint8_t qos, bool retain, const struct delivery_sub_ids *ids)
{
	uint16_t nids = ids ? ids->count : 0;
	struct sess_msg *e = flight_entry_new(nids);
	if (!e)
		return NULL;
	e->msg = m ? msg_ref(m) : NULL;
	e->qos = qos;
	e->retain = retain;
	e->packet_id = 0;
	if (nids)
		memcpy(e->sub_ids, ids->ids, nids * sizeof e->sub_ids[0]);
	e->state = SESS_MSG_QUEUED;
	/* Restored entries are the store's references to their message
	 * (counted by the store once its replay is over). */
	e->durable = m != NULL;
	return e;
}

int delivery_restore_queued(struct session *s, const struct delivery_limits *lim, struct msg *m, uint8_t qos,
			    bool retain, const struct delivery_sub_ids *ids)
{
	if (!sess_qos_get(s))
		return WISP_ENOMEM;
	struct sess_msg *e = new_entry(m, qos, retain, ids);
	if (!e) {
		sess_qos_trim(s);
		return WISP_ENOMEM;
	}
	list_push_back(&s->qos->queue, &e->link);
	s->qos->queued_count++;
	queue_add(s, lim, msg_size(m));
	return 0;
}

void delivery_restore_unqueue(struct session *s, const struct delivery_limits *lim, const struct msg *m)
{
	struct sess_qos *q = s->qos;
	if (!q)
		return;
	struct list_node *n;
	for (n = q->queue.next; n != &q->queue; n = n->next) {
		struct sess_msg *e = container_of(n, struct sess_msg, link);
		if (e->msg == m) {
			list_remove(n);
			q->queued_count--;
			queue_sub(s, lim, msg_size(e->msg));
			free_entry(e);
			sess_qos_trim(s);
			return;
		}
	}
}

int delivery_restore_flight(struct session *s, const struct delivery_limits *lim, struct msg *m,
			    uint16_t packet_id, uint8_t qos, uint8_t state, bool retain,
			    const struct delivery_sub_ids *ids)
{
	if (m)
		delivery_restore_unqueue(s, lim, m);
	struct sess_msg *e = find_by_id(s, packet_id);
	if (e) {
		/* An update (PUBREC seen): keep the entry and its place in the window. */
		if (!m && e->msg) {
			e->durable = false;
			msg_unref(e->msg);
			e->msg = NULL;
		}
		e->state = state;
		return 0;
	}
	struct sess_qos *q = sess_qos_get(s);
	if (!q)
		return WISP_ENOMEM;
	if (flight_index_reserve(&q->flight) != 0 || !(e = new_entry(m, qos, retain, m ? ids : NULL))) {
		sess_qos_trim(s);
		return WISP_ENOMEM;
	}
	e->packet_id = packet_id;
	e->state = state;
	flight_index_put(q->flight, e);
	list_push_back(&q->inflight, &e->link);
	q->inflight_count++;
	if (packet_id > s->next_packet_id)
		s->next_packet_id = packet_id;
	return 0;
}

void delivery_restore_unflight(struct session *s, uint16_t packet_id)
{
	struct sess_msg *e = find_by_id(s, packet_id);
	if (!e)
		return;
	unflight(s, e);
	free_entry(e);
	sess_qos_trim(s);
}
