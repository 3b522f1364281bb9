/*
 * SUBSCRIBE and UNSUBSCRIBE. A packet with several filters is handled as a
 * sequence of one-filter packets answered by one SUBACK [MQTT-3.8.4-4]
 * [MQTT-3.10.4-6], with one code per filter in order [MQTT-3.8.4-5]
 * [MQTT-3.9.3-1]: a filter that is invalid, over limits.max_topic_length,
 * max_topic_levels or max_subscriptions (or a cluster node's max_groups),
 * past memory_limit, or denied by the ACL gets 0x80 while the others are granted. Refusals by a limit are
 * counted ($SYS/broker/subscriptions/refused) and logged once per session.
 * Retained messages matching a new or replaced subscription follow the
 * SUBACK [MQTT-3.3.1-6][MQTT-3.8.4-3], with the retain flag set; none on a
 * shared subscription, `$share/{group}/{filter}` (share.h), whose share
 * name is checked here [MQTT-4.8.2-1] [MQTT-4.8.2-2] and whose inner
 * filter is what the ACL judges.
 *
 * Work per loop turn is bounded. A connection handles at most
 * SUB_TURN_FILTERS filters per turn (over all its packets), each retained
 * message a filter matches counting as one more (so a turn walks the
 * retained store for one filter at most once it holds that many), and a packet
 * is cut into at most SUB_SLICES_MAX slices per phase (filters, then
 * retained messages) so that a big one is not decoded again too often: a
 * handler that runs out returns WISP_EAGAIN, dispatch.c keeps the packet
 * unread with the connection's input paused, and broker_sub_turn() hands
 * it back at the next turn, where a struct sub_job says how far it got.
 * Other clients are served in between; this client's later packets wait,
 * so its packets stay in order.
 *
 * In a cluster the SUBACK of a SUBSCRIBE may also wait for the other nodes
 * to learn of its new filters (gate_open, cluster/interest.h), the same
 * way: the job waits, the connection's input paused.
 *
 * Cost: a packet handled within one turn allocates nothing (up to
 * CODES_ON_STACK filters); a longer one (or one whose SUBACK a cluster
 * holds) keeps a job of about 80 bytes plus a byte per filter until its
 * SUBACK. Single threaded: loop thread only.
 */
#include "broker.h"
#include "input.h"

#include <string.h>

#include "alloc.h"
#include "err.h"
#include "log.h"

/* SUBACK codes stay on the stack for ordinary requests. */
#define CODES_ON_STACK 64
/* Filters (subscribed, refused, unsubscribed or matched against the
 * retained store) plus the retained messages they matched, per
 * connection and loop turn: a fairness quantum, like dispatch.c's read
 * budget, not a limit on what a client may ask. */
#define SUB_TURN_FILTERS 1024u
/* Each turn re-decodes the packet, so a packet of more than
 * SUB_SLICES_MAX * SUB_TURN_FILTERS filters takes bigger slices. */
#define SUB_SLICES_MAX 16u
/* Bytes of a refused filter quoted in the log. */
#define LOG_FILTER_MAX 80

enum job_phase {
	PHASE_FILTERS = 0,
	PHASE_RETAINED = 1,
};

/* How far a SUBSCRIBE or UNSUBSCRIBE got. On the stack while the packet is
 * handled within one turn; on the heap (codes after it) once it waits. */
struct sub_job {
	struct list_node link; /* on sub_work.waiting while it waits */
	struct conn *c;
	uint8_t *codes;        /* one per filter */
	size_t pos;            /* offset in the packet's entries of the next one */
	uint32_t turn;         /* sub_work.turn when it was put on the list */
	uint16_t packet_id;
	uint16_t count;
	uint16_t done;         /* entries handled in this phase */
	uint8_t type;          /* MQTT_PKT_SUBSCRIBE or MQTT_PKT_UNSUBSCRIBE */
	uint8_t phase;         /* enum job_phase */
	bool on_heap;          /* one allocation with its codes */
	uint64_t gate_ticket;  /* b->sub_gate's, once the filters are done; 0: none taken */
	uint64_t gate_since;   /* loop ms when the SUBACK was first held */
};

/* Set in a granted SUBACK code between the subscribe and retained phases:
 * Retain Handling says to send no retained messages for this filter
 * (2, or 1 for a subscription that existed) [MQTT-3.3.1-10, -11]. Masked
 * off the SUBACK on the wire (send_codes). */
#define CODE_NO_RETAINED 0x40

/* Expired retained messages found while sending, deleted after the walk
 * (the retained store must not change during it); a few per SUBSCRIBE. */
#define EXPIRED_PER_WALK 8

struct retained_ctx {
	struct broker *b;
	struct session *s;
	uint8_t qos;
	bool acl_check;
	const struct delivery_sub_ids *ids;
	struct msg *expired[EXPIRED_PER_WALK];
	size_t expired_count;
};

static void send_retained(const char *topic, size_t len, void *value, void *ctx)
{
	struct retained_ctx *r = ctx;
	struct msg *m = value;
	if (m->expires_at && msg_expired(m, loop_now_s(r->b->loop))) {
		/* [MQTT-3.3.2-5] an expired retained message is not sent */
		if (r->expired_count < EXPIRED_PER_WALK)
			r->expired[r->expired_count++] = msg_ref(m);
		return;
	}
	if (r->acl_check && !acl_client_check(r->s->acl, topic, len, ACL_READ))
		return;
	/* [MQTT-3.3.1-8] RETAIN set (in v5 too, whatever Retain As Published
	 * says: section 3.3.1.3), with the subscription's identifier [MQTT-3.3.4-3] */
	broker_deliver(r->b, r->s, m, m->qos < r->qos ? m->qos : r->qos, true, r->ids);
}

/* The options bit that makes routing ask the ACL per delivered topic, or
 * -1 when the subscription is denied outright. */
static int acl_bits(const struct session *s, const char *filter, size_t len)
{
	if (!s->acl)
		return 0;
	switch (acl_client_subscribe(s->acl, filter, len)) {
	case ACL_SUB_DENY:
		return -1;
	case ACL_SUB_ALL:
		return 0;
	case ACL_SUB_FILTERED:
	case ACL_SUB_NEVER:
		break;
	}
	return SESS_SUBOPT_ACL_CHECK;
}

void broker_reclassify_subs(struct broker *b, struct session *s)
{
	(void)b;
	struct list_node *n;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		size_t at = 0; /* a shared subscription is judged by its inner filter */
		const char *filter = sess_sub_filter(sub);
		if (share_parse(filter, sess_sub_filter_len(sub), &at) != SHARE_OK)
			at = 0;
		int bits = acl_bits(s, filter + at, sess_sub_filter_len(sub) - at);
		/* A subscription the new rules deny stays (MQTT has no way to tell
		 * the client) but receives nothing: every topic is checked and refused. */
		uint8_t opts = (uint8_t)((tree_sub_options(&sub->handle) & ~SESS_SUBOPT_ACL_CHECK) |
					 (bits != 0 ? SESS_SUBOPT_ACL_CHECK : 0));
		tree_sub_set_options(&sub->handle, opts, tree_sub_id(&sub->handle));
	}
}

enum topic_bound broker_topic_bound(const struct broker *b, const char *topic, size_t len)
{
	const struct config_limits *lim = &b->cfg->limits;
	/* Length first: it costs nothing, and bounds the level count's scan. */
	if (lim->max_topic_length && len > lim->max_topic_length)
		return TOPIC_TOO_LONG;
	if (lim->max_topic_levels && topic_level_count(topic, len) > lim->max_topic_levels)
		return TOPIC_TOO_DEEP;
	return TOPIC_WITHIN_LIMITS;
}

static const char *bound_text(enum topic_bound bound)
{
	return bound == TOPIC_TOO_LONG ? "longer than limits.max_topic_length"
	       : bound == TOPIC_TOO_DEEP ? "more levels than limits.max_topic_levels"
					 : NULL;
}

/* Counted always, logged once per session: a client retrying a refused
 * filter in a loop must not be able to fill the log. */
static void note_refusal(struct broker *b, struct session *s, const char *filter, size_t len, const char *why)
{
	b->stats.subs_refused++;
	if (s->sess_flags & SESS_FLAG_SUB_REFUSED)
		return;
	s->sess_flags |= SESS_FLAG_SUB_REFUSED;
	log_limited("subscription refused", LOG_NOTICE, "sub",
		"client %s: subscription to '%.*s'%s (%zu bytes) refused: %s; further refusals for this session are "
		"only counted ($SYS/broker/subscriptions/refused)",
		s->client_id, (int)(len < LOG_FILTER_MAX ? len : LOG_FILTER_MAX), filter,
		len > LOG_FILTER_MAX ? "..." : "", len, why);
}

/* A refused filter's SUBACK code: v5 says why [MQTT-3.9.3], 3.1.1 has only 0x80. */
static uint8_t suback_refusal(const struct session *s, uint8_t v5_code)
{
	return s->conn && s->conn->version == MQTT_PROTO_V5 ? v5_code : MQTT_SUBACK_FAILURE;
}

/* Subscribes one filter with the packet's Subscription Identifier (0:
 * none); its SUBACK code, with CODE_NO_RETAINED when Retain Handling
 * says so. */
static uint8_t subscribe_one(struct broker *b, struct session *s, const char *f, size_t len, uint8_t options,
			     uint32_t sub_id)
{
	uint8_t qos = options & MQTT_SUBOPT_QOS_MASK;
	if (qos > b->cfg->limits.max_qos) {
		/* Granted at the broker's Maximum QoS [MQTT-3.2.2-10] (as Mosquitto
		 * grants max_qos), and stored so. */
		qos = (uint8_t)b->cfg->limits.max_qos;
		options = (uint8_t)((options & ~MQTT_SUBOPT_QOS_MASK) | qos);
	}
	const char *over = bound_text(broker_topic_bound(b, f, len));
	const char *verdict = over;
	uint8_t code = MQTT_SUBACK_FAILURE;
	int rc = WISP_EINVAL;
	size_t inner_at = 0; /* where a shared subscription's filter starts */
	if (over) {
		code = suback_refusal(s, MQTT_RC_QUOTA_EXCEEDED);
		note_refusal(b, s, f, len, over);
	} else if (!topic_filter_valid(f, len)) {
		code = suback_refusal(s, MQTT_RC_TOPIC_FILTER_INVALID);
		verdict = "invalid filter";
	} else if (share_parse(f, len, &inner_at) == SHARE_MALFORMED) {
		/* [MQTT-4.8.2-1] [MQTT-4.8.2-2] (3.1.1 knows no $share/: 0x80,
		 * as Mosquitto answers) */
		code = suback_refusal(s, MQTT_RC_TOPIC_FILTER_INVALID);
		verdict = "malformed shared subscription";
	} else {
		/* A shared subscription reads the topics its inner filter matches:
		 * the ACL is asked about that filter. */
		int bits = acl_bits(s, f + inner_at, len - inner_at);
		if (bits < 0) {
			code = suback_refusal(s, MQTT_RC_NOT_AUTHORIZED);
			verdict = "denied by the ACL";
		} else {
			rc = router_interest_add(b->router, s, f, len, (uint8_t)(options | bits), sub_id,
						 b->cfg->limits.max_subscriptions);
			if (rc >= 0) {
				verdict = "granted";
			} else {
				/* WISP_ELIMIT is the session's max_subscriptions, or
				 * a cluster node's max_groups (a shared filter's new
				 * group): the session's count tells them apart. */
				size_t max_subs = b->cfg->limits.max_subscriptions;
				bool over_subs = max_subs && sess_sub_count(s) >= max_subs;
				verdict = rc == WISP_ELIMIT ? (over_subs || !inner_at ? "over limits.max_subscriptions"
										       : "over cluster.max_groups")
				        : rc == WISP_ENOMEM ? "out of memory (limits.memory_limit)"
							    : wisp_strerror(rc);
				code = suback_refusal(s, rc == WISP_ELIMIT ? MQTT_RC_QUOTA_EXCEEDED : MQTT_RC_UNSPECIFIED);
				note_refusal(b, s, f, len, verdict);
			}
		}
	}
	log_msg(LOG_DEBUG, "sub", "%s subscribe '%.*s' qos %u: %s", s->client_id,
		(int)(len < LOG_FILTER_MAX ? len : LOG_FILTER_MAX), f, qos, verdict);
	if (rc < 0)
		return code;
	uint8_t handling = (uint8_t)((options & MQTT_SUBOPT_RETAIN_HANDLING_MASK) >> MQTT_SUBOPT_RETAIN_HANDLING_SHIFT);
	if (handling == 2 || (handling == 1 && rc == 0))
		return qos | CODE_NO_RETAINED;
	return qos;
}

static uint8_t unsubscribe_one(struct broker *b, struct session *s, const char *f, size_t len)
{
	int rc = router_interest_remove(b->router, s, f, len);
	return rc == 0 ? MQTT_RC_SUCCESS : MQTT_RC_NO_SUBSCRIPTION_EXISTED;
}

/* The retained messages matching a new subscription; returns how many
 * the walk met (its cost). */
static size_t retained_one(struct broker *b, struct session *s, const char *f, size_t len, uint8_t code,
			   uint32_t sub_id)
{
	/* MQTT 5 section 3.3.1.3 sends retained messages when a new
	 * Non-shared Subscription is made (3.1.1's [MQTT-3.3.1-6] said any
	 * new subscription): never on a shared one. */
	if (code >= MQTT_SUBACK_FAILURE || (code & CODE_NO_RETAINED) || share_is_shared(f, len))
		return 0;
	const struct delivery_sub_ids ids = {&sub_id, 1};
	struct retained_ctx ctx = {.b = b, .s = s, .qos = code & MQTT_SUBOPT_QOS_MASK,
				   .acl_check = acl_bits(s, f, len) != 0, .ids = sub_id ? &ids : NULL};
	size_t met = retained_match(b->retained, f, len, send_retained, &ctx);
	for (size_t i = 0; i < ctx.expired_count; i++) {
		broker_retain_expired(b, ctx.expired[i]);
		msg_unref(ctx.expired[i]);
	}
	return met;
}

/* Handles entries of the job's phase from where it stopped until their
 * cost reaches `max` (an entry costs one, plus the retained messages it
 * met); returns the cost. Stops early if the connection was dropped
 * meanwhile (its session may be gone then). */
static size_t advance(struct broker *b, struct conn *c, const struct mqtt_subscribe *p, struct sub_job *job,
		      size_t max)
{
	struct session *s = c->sess;
	bool is_sub = job->type == MQTT_PKT_SUBSCRIBE;
	struct mqtt_sub_iter it;
	struct mqtt_str filter;
	uint8_t options = 0;
	size_t cost = 0;
	bool ended = false;
	uint32_t sub_id = (p->props.present & MQTT_PROP_BIT(MQTT_PROP_SUBSCRIPTION_ID)) ? p->props.subscription_id : 0;
	mqtt_sub_iter_init(p, is_sub, &it);
	it.pos += job->pos;
	while (cost < max && job->done < job->count) {
		if (!mqtt_sub_next(&it, &filter, is_sub ? &options : NULL)) {
			ended = true;
			break;
		}
		const char *f = (const char *)filter.ptr;
		uint8_t *code = &job->codes[job->done];
		if (job->phase == PHASE_RETAINED)
			cost += retained_one(b, s, f, filter.len, *code, sub_id);
		else if (is_sub)
			*code = subscribe_one(b, s, f, filter.len, options, sub_id);
		else
			*code = unsubscribe_one(b, s, f, filter.len);
		job->done++;
		cost++;
		if (c->state == CONN_CLOSING)
			return cost;
	}
	job->pos = (size_t)(it.pos - p->entries.ptr);
	if (ended) {
		/* Unreachable on a decoded packet, whose count says how many. */
		memset(job->codes + job->done, MQTT_SUBACK_FAILURE, (size_t)(job->count - job->done));
		job->done = job->count;
	}
	return cost;
}

static int send_codes(struct conn *c, uint8_t type, uint16_t packet_id, const uint8_t *codes, size_t count)
{
	uint8_t stack[CODES_ON_STACK + 16];
	size_t cap = count + 16;
	uint8_t *buf = cap <= sizeof stack ? stack : wisp_malloc(cap);
	if (!buf)
		return WISP_ENOMEM;
	struct mqtt_suback ack = {.packet_id = packet_id, .codes = {codes, count}};
	ssize_t n = mqtt_encode_suback(buf, cap, c->version, type, &ack);
	/* The codes end the packet: CODE_NO_RETAINED stays ours. */
	if (n > 0 && type == MQTT_PKT_SUBACK)
		for (size_t i = (size_t)n - count; i < (size_t)n; i++)
			if (buf[i] < MQTT_SUBACK_FAILURE)
				buf[i] &= MQTT_SUBOPT_QOS_MASK;
	int rc = n < 0 ? WISP_EINVAL : conn_send_bytes(c, buf, (size_t)n);
	if (buf != stack)
		wisp_free(buf);
	return rc;
}

/* Filters the connection may still handle this turn for a packet of
 * `count`; 0 when it must wait for the next turn. */
static size_t budget(struct sub_work *w, const struct conn *c, uint16_t count)
{
	if (w->owner != c || w->owner_turn != w->turn) {
		w->owner = c;
		w->owner_turn = w->turn;
		w->left = SUB_TURN_FILTERS;
	}
	if (w->left == 0)
		return 0;
	size_t slice = ((size_t)count + SUB_SLICES_MAX - 1) / SUB_SLICES_MAX;
	return slice > w->left ? slice : w->left;
}

static void spend(struct sub_work *w, size_t n)
{
	w->left = n >= w->left ? 0 : w->left - (uint32_t)n;
}

static void job_free(struct sub_job *job)
{
	if (job->on_heap)
		wisp_free(job);
	else if (job->count > CODES_ON_STACK)
		wisp_free(job->codes);
}

/* The job `c` left waiting, unlinked and now the caller's, or NULL. */
static struct sub_job *take_job(struct broker *b, const struct conn *c)
{
	struct sub_work *w = &b->sub_work;
	struct session *s = c->sess;
	if (!s || !(s->sess_flags & SESS_FLAG_SUB_JOB))
		return NULL;
	s->sess_flags &= (uint8_t)~SESS_FLAG_SUB_JOB;
	struct sub_job *job = w->resuming && w->resuming->c == c ? w->resuming : NULL;
	struct list_node *n;
	for (n = w->waiting.next; !job && n != &w->waiting; n = n->next)
		if (container_of(n, struct sub_job, link)->c == c)
			job = container_of(n, struct sub_job, link);
	if (!job)
		return NULL;
	if (w->resuming == job)
		w->resuming = NULL;
	if (list_linked(&job->link))
		list_remove(&job->link);
	return job;
}

/* Puts the job (moved to the heap if it was on the stack) on the waiting
 * list, asking for the next turn unless the sub_gate will (`held`).
 * WISP_EAGAIN, or WISP_ENOMEM with the job freed. */
static int defer(struct broker *b, struct conn *c, struct sub_job *job, bool held)
{
	struct sub_work *w = &b->sub_work;
	struct sub_job *heap = job;
	if (!job->on_heap) {
		log_msg(LOG_DEBUG, "sub", "client %s: %s of %u filters (packet id %u) goes on at the next loop turn",
			c->sess->client_id, job->type == MQTT_PKT_SUBSCRIBE ? "SUBSCRIBE" : "UNSUBSCRIBE",
			(unsigned)job->count, (unsigned)job->packet_id);
		heap = wisp_malloc(sizeof *heap + job->count);
		if (!heap) {
			job_free(job);
			return WISP_ENOMEM;
		}
		*heap = *job;
		heap->codes = (uint8_t *)(heap + 1);
		heap->on_heap = true;
		memcpy(heap->codes, job->codes, job->count);
		job_free(job);
		list_init(&heap->link);
	}
	heap->turn = w->turn;
	list_push_back(&w->waiting, &heap->link);
	c->sess->sess_flags |= SESS_FLAG_SUB_JOB;
	if (!held)
		loop_request_turn(b->loop);
	return WISP_EAGAIN;
}

/* Filters that end the connection rather than earn a refusal code: a
 * zero-length one [MQTT-4.7.3-1], one with a control character (as
 * Mosquitto), or a shared one with No Local [MQTT-3.8.3-4]. Checked over the whole packet before any filter is used. */
static bool filters_acceptable(const struct mqtt_subscribe *p, uint8_t type, enum reason *why)
{
	struct mqtt_sub_iter it;
	struct mqtt_str f;
	uint8_t opts;
	mqtt_sub_iter_init(p, type == MQTT_PKT_SUBSCRIBE, &it);
	while (mqtt_sub_next(&it, &f, &opts) == 1) {
		if (f.len == 0) {
			*why = REASON_EMPTY_FILTER;
			return false;
		}
		if (mqtt_utf8_has_control(f.ptr, f.len)) {
			*why = REASON_CONTROL_CHARACTER;
			return false;
		}
		size_t inner_at;
		if (type == MQTT_PKT_SUBSCRIBE && (opts & MQTT_SUBOPT_NO_LOCAL) &&
		    share_parse((const char *)f.ptr, f.len, &inner_at) == SHARE_OK) {
			*why = REASON_PROTOCOL_ERROR; /* [MQTT-3.8.3-4] */
			return false;
		}
	}
	return true;
}

/* Whether the SUBACK may go: a cluster holds it until the other nodes know
 * of the filters just subscribed (b->sub_gate), so that a message published
 * on any node after the SUBACK reaches the new subscription. A held job
 * waits without asking for turns; the gate's owner asks when it opens. */
static bool gate_open(struct broker *b, struct sub_job *job)
{
	if (!b->sub_gate.ticket)
		return true;
	if (!job->gate_ticket) {
		job->gate_ticket = b->sub_gate.ticket(b->sub_gate.ctx);
		job->gate_since = loop_now_ms(b->loop);
		if (!job->gate_ticket)
			return true;
	}
	if (!b->sub_gate.settled(b->sub_gate.ctx, job->gate_ticket, job->gate_since))
		return false;
	job->gate_ticket = 0;
	return true;
}

/* SUBSCRIBE and UNSUBSCRIBE, first seen or handed back by broker_sub_turn(). */
static int handle(struct broker *b, struct conn *c, const struct mqtt_subscribe *p, uint8_t type, enum reason *why)
{
	struct sub_work *w = &b->sub_work;
	uint8_t stack[CODES_ON_STACK];
	struct sub_job local;
	struct sub_job *job = take_job(b, c);
	if (job && (job->type != type || job->packet_id != p->packet_id || job->count != p->count)) {
		/* Not the packet it was made for (cannot happen: the same bytes
		 * come back): start afresh rather than mix them. */
		job_free(job);
		job = NULL;
	}
	if (!job) {
		if (!filters_acceptable(p, type, why))
			return WISP_EPROTO;
		local = (struct sub_job){.c = c, .packet_id = p->packet_id, .count = p->count, .type = type};
		list_init(&local.link);
		local.codes = p->count <= CODES_ON_STACK ? stack : wisp_malloc(p->count);
		if (!local.codes) {
			*why = REASON_NO_MEMORY;
			return WISP_ENOMEM;
		}
		job = &local;
	}
	size_t allowed = budget(w, c, p->count), used = 0;
	int rc = 0;
	if (job->phase == PHASE_FILTERS) {
		used += advance(b, c, p, job, allowed);
		if (c->state == CONN_CLOSING)
			goto done;
		if (job->done < job->count)
			goto wait;
		if (type == MQTT_PKT_SUBSCRIBE && !gate_open(b, job))
			goto hold;
		rc = send_codes(c, type == MQTT_PKT_SUBSCRIBE ? MQTT_PKT_SUBACK : MQTT_PKT_UNSUBACK, job->packet_id,
				job->codes, job->count);
		if (rc != 0 || type != MQTT_PKT_SUBSCRIBE || retained_count(b->retained) == 0)
			goto done;
		job->phase = PHASE_RETAINED;
		job->done = 0;
		job->pos = 0;
	}
	used += advance(b, c, p, job, allowed > used ? allowed - used : 0);
	if (job->done < job->count && c->state != CONN_CLOSING)
		goto wait;
done:
	spend(w, used);
	job_free(job);
	if (rc != 0)
		*why = REASON_NO_MEMORY;
	return rc;
wait:
hold:
	spend(w, used);
	rc = defer(b, c, job, job->gate_ticket != 0);
	if (rc == WISP_ENOMEM)
		*why = REASON_NO_MEMORY;
	return rc;
}

int handle_subscribe(struct broker *b, struct conn *c, const struct mqtt_subscribe *p, enum reason *why)
{
	return handle(b, c, p, MQTT_PKT_SUBSCRIBE, why);
}

int handle_unsubscribe(struct broker *b, struct conn *c, const struct mqtt_subscribe *p, enum reason *why)
{
	return handle(b, c, p, MQTT_PKT_UNSUBSCRIBE, why);
}

void broker_sub_forget_conn(struct broker *b, struct conn *c)
{
	struct sub_job *job = take_job(b, c);
	if (job)
		job_free(job);
}

void broker_sub_turn(struct broker *b)
{
	struct sub_work *w = &b->sub_work;
	w->turn++;
	struct list_node *n;
	/* Jobs put back during this pass carry the new turn: they wait. */
	while ((n = list_first(&w->waiting)) != NULL) {
		struct sub_job *job = container_of(n, struct sub_job, link);
		if (job->turn == w->turn)
			break;
		struct conn *c = job->c;
		w->resuming = job;
		conn_input_resume(c);
		if (w->resuming == job) {
			/* Its packet did not come back (cannot happen while the
			 * input is paused): forget it rather than spin. */
			w->resuming = NULL;
			if (c->sess)
				c->sess->sess_flags &= (uint8_t)~SESS_FLAG_SUB_JOB;
			list_remove(&job->link);
			job_free(job);
			log_msg(LOG_WARNING, "sub", "client %s: a pending SUBSCRIBE was lost", broker_conn_name(c));
		}
		/* Decrypted input inside TLS is not reported by epoll. */
		if (c->state != CONN_CLOSING && !c->read_paused && transport_pending(conn_t(c)) &&
		    !list_linked(&c->read_link)) {
			list_push_back(&conn_set_of(c)->read_more, &c->read_link);
			loop_request_turn(b->loop);
		}
	}
}
