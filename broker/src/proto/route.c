/*
 * Routing a PUBLISH: one walk of the subscription tree, one delivery per
 * matching session. A session with several matching filters gets the
 * message once, at the highest QoS its matching subscriptions granted (the
 * choice MQTT-3.3.5 allows; Mosquitto sends one copy per filter). A
 * generation counter marks sessions already seen during this publish, so
 * deduplication costs O(1) per match and no per-publish allocation once the
 * route array has grown to the largest fan-out seen.
 *
 * A delivery dropped by a bound is counted per reason (drop.h) and logged
 * once per episode per client: the first drop logs, the episode ends when
 * the bound is at most half used again. The check costs one test of a
 * byte of the session on the delivery path while no episode is open.
 */
#include "broker.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "err.h"
#include "log.h"

static void collect(void *subscriber, uint8_t options, uint32_t subscription_id, void *ctx)
{
	struct broker *b = ctx;
	struct session *s = subscriber;
	uint8_t qos = options & MQTT_SUBOPT_QOS_MASK;
	(void)subscription_id;
	if ((options & SESS_SUBOPT_ACL_CHECK) &&
	    !acl_client_check(s->acl, b->route_topic, b->route_topic_len, ACL_READ))
		return;
	if (s->match_gen == b->route_gen && s->match_slot < b->route_gen_count && b->route[s->match_slot].s == s) {
		struct route_entry *e = &b->route[s->match_slot];
		if (qos > e->qos)
			e->qos = qos;
		return;
	}
	size_t n = b->route_gen_count;
	if (n == b->route_cap) {
		size_t cap = b->route_cap ? b->route_cap * 2 : 64;
		struct route_entry *r = wisp_realloc(b->route, cap * sizeof *r);
		if (!r) {
			broker_count_drop(b, DROP_NO_MEMORY);
			return;
		}
		b->route = r;
		b->route_cap = cap;
	}
	s->match_gen = b->route_gen;
	s->match_slot = (uint32_t)n;
	b->route[n] = (struct route_entry){s, qos};
	b->route_gen_count = n + 1;
}

void broker_route(struct broker *b, struct msg *m, const struct topic_level *levels, size_t nlevels)
{
	if (b->activity) /* a dashboard is served: one branch otherwise */
		activity_note(b->activity, msg_topic(m), m->topic_len, msg_payload(m), m->payload_len,
			      loop_now_ms(b->loop));
	b->route_gen++;
	b->route_gen_count = 0;
	b->route_topic = msg_topic(m);
	b->route_topic_len = m->topic_len;
	tree_match(b->subs, levels, nlevels, collect, b);
	for (size_t i = 0; i < b->route_gen_count; i++) {
		struct route_entry *e = &b->route[i];
		uint8_t qos = e->qos < m->qos ? e->qos : m->qos;
		broker_deliver(b, e->s, m, qos, false);
	}
}

#define SYS_BROKER_PREFIX "$SYS/broker/"
#define SYS_BROKER_PREFIX_LEN (sizeof SYS_BROKER_PREFIX - 1)

/* A retained message over a bound is still delivered (the caller routes
 * it) but not stored, and the topic keeps its previous value. Counted
 * always; logged once per episode, which ends when a retained message is
 * stored again, so a client that keeps publishing into a full store cannot
 * flood the log. */
static void retained_refused(struct broker *b, const struct msg *m, int rc)
{
	b->stats.retained_refused++;
	if (b->retained_full)
		return;
	b->retained_full = true;
	const struct config_limits *lim = &b->cfg->limits;
	if (rc == RETAINED_OVER_COUNT)
		log_msg(LOG_WARNING, "retain", "retained message on '%.*s' not stored: limits.max_retained reached (%u); "
			"further ones are counted in $SYS/broker/retained messages/refused",
			(int)m->topic_len, msg_topic(m), lim->max_retained);
	else if (rc == RETAINED_OVER_BYTES)
		log_msg(LOG_WARNING, "retain", "retained message on '%.*s' not stored: limits.max_retained_bytes "
			"reached (%llu); further ones are counted in $SYS/broker/retained messages/refused",
			(int)m->topic_len, msg_topic(m), (unsigned long long)lim->max_retained_bytes);
	else
		log_msg(LOG_WARNING, "retain", "retained message on '%.*s' not stored: out of memory (limits.memory_limit)",
			(int)m->topic_len, msg_topic(m));
}

void broker_retain(struct broker *b, struct msg *m)
{
	/* Kept alive across the set, so the store can let go of it after. */
	struct msg *old = retained_get(b->retained, msg_topic(m), m->topic_len);
	if (old)
		msg_ref(old);
	/* The broker's own figures (no client may write under $SYS/broker/)
	 * are charged 0, so they use neither retained bound: a small
	 * max_retained must not refuse $SYS, nor $SYS fill it. */
	bool own = m->topic_len >= SYS_BROKER_PREFIX_LEN &&
		   memcmp(msg_topic(m), SYS_BROKER_PREFIX, SYS_BROKER_PREFIX_LEN) == 0;
	int rc;
	if (m->payload_len == 0) {
		rc = retained_set(b->retained, msg_topic(m), m->topic_len, NULL, 0);
	} else {
		rc = retained_set(b->retained, msg_topic(m), m->topic_len, msg_ref(m), own ? 0 : msg_size(m));
		if (rc != 0) {
			msg_unref(m);
			retained_refused(b, m, rc);
		}
	}
	if (rc == 0 && m->payload_len && !own && b->retained_full) {
		b->retained_full = false;
		log_msg(LOG_NOTICE, "retain", "retained messages are stored again");
	}
	if (rc == 0) {
		persist_retain(b, m);
		if (old)
			persist_retain_released(b, old);
	}
	msg_unref(old);
}

_Static_assert(DROP_REASON_COUNT <= 16, "session.drop_episodes has a bit per drop reason");

#define EPISODE(why) ((uint16_t)(1u << (why)))

static uint64_t bound_value(const struct broker *b, enum drop_reason why)
{
	switch (why) {
	case DROP_QUEUE_FULL:
		return b->dlim.max_queued;
	case DROP_QUEUE_BYTES:
		return b->dlim.max_queued_bytes;
	case DROP_OUTPUT_FULL:
		return b->dlim.max_output;
	case DROP_NO_MEMORY:
		return b->cfg->limits.memory_limit;
	default:
		return 0;
	}
}

/* Counts the drop, and logs it when it starts an episode for this client:
 * a subscriber stuck at its bound loses every further message, and one line
 * per message would flood the log (mosquitto's is_dropping). */
static void note_drop(struct broker *b, struct session *s, enum drop_reason why)
{
	broker_count_drop(b, why);
	const char *key = drop_reason_key(why);
	if (!key || (s->drop_episodes & EPISODE(why)))
		return;
	s->drop_episodes |= EPISODE(why);
	uint64_t bound = bound_value(b, why);
	char hit[96];
	if (why == DROP_NO_MEMORY && !bound)
		snprintf(hit, sizeof hit, "out of memory");
	else
		snprintf(hit, sizeof hit, "%s reached (%llu)", key, (unsigned long long)bound);
	log_msg(LOG_WARNING, "queue", "client %s: dropping messages for it: %s; counted in $SYS/broker/messages/dropped/%s",
		s->client_id, hit, drop_reason_name(why));
}

/* Whether the bound behind an episode has room again. Half the bound, not
 * one free slot: a subscriber reading at the rate messages arrive frees one
 * slot per ack, and ending the episode then would log at that rate. */
static bool has_room_again(const struct broker *b, const struct session *s, enum drop_reason why)
{
	switch (why) {
	case DROP_QUEUE_FULL:
		return s->queued_count <= b->dlim.max_queued / 2;
	case DROP_QUEUE_BYTES:
		return s->queued_bytes <= b->dlim.max_queued_bytes / 2;
	case DROP_OUTPUT_FULL:
		return !s->conn || s->conn->out.bytes <= b->dlim.max_output / 2;
	default:
		return false; /* no_memory: ends when a delivery succeeds */
	}
}

static void end_episode(struct session *s, enum drop_reason why)
{
	s->drop_episodes &= (uint16_t)~EPISODE(why);
	log_msg(LOG_NOTICE, "queue", "client %s: room again under %s (%llu messages dropped for it so far)",
		s->client_id, drop_reason_key(why), (unsigned long long)s->dropped);
}

void broker_deliver(struct broker *b, struct session *s, struct msg *m, uint8_t qos, bool retain)
{
	if (s->drop_episodes)
		for (int r = 0; r < DROP_REASON_COUNT; r++)
			if ((s->drop_episodes & EPISODE(r)) && has_room_again(b, s, (enum drop_reason)r))
				end_episode(s, (enum drop_reason)r);
	enum drop_reason why = DROP_NO_MEMORY;
	switch (delivery_offer(s, &b->dlim, m, qos, retain, &why)) {
	case DELIVERY_SENT:
		b->stats.msgs_sent++;
		break;
	case DELIVERY_QUEUED:
		break;
	case DELIVERY_DROPPED:
		note_drop(b, s, why);
		return;
	}
	if (s->drop_episodes & EPISODE(DROP_NO_MEMORY))
		end_episode(s, DROP_NO_MEMORY);
}
