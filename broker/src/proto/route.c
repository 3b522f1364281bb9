/*
 * Routing a PUBLISH: one walk of the subscription tree, one delivery per
 * matching session. A session with several matching filters gets the
 * message once, at the highest QoS its matching subscriptions granted (the
 * choice MQTT-3.3.5 allows; Mosquitto sends one copy per filter). A
 * generation counter marks sessions already seen during this publish, so
 * deduplication costs O(1) per match and no per-publish allocation once the
 * route array has grown to the largest fan-out seen.
 */
#include "broker.h"

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
			b->stats.publish_dropped++;
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

void broker_retain(struct broker *b, struct msg *m)
{
	/* Kept alive across the set, so the store can let go of it after. */
	struct msg *old = retained_get(b->retained, msg_topic(m), m->topic_len);
	if (old)
		msg_ref(old);
	int rc;
	if (m->payload_len == 0) {
		rc = retained_set(b->retained, msg_topic(m), m->topic_len, NULL, 0);
	} else {
		rc = retained_set(b->retained, msg_topic(m), m->topic_len, msg_ref(m), msg_size(m));
		if (rc != 0) {
			msg_unref(m);
			log_msg(LOG_WARNING, "retain", "retained message on '%.*s' not stored: retained limit reached",
				(int)m->topic_len, msg_topic(m));
		}
	}
	if (rc == 0) {
		persist_retain(b, m);
		if (old)
			persist_retain_released(b, old);
	}
	msg_unref(old);
}

void broker_deliver(struct broker *b, struct session *s, struct msg *m, uint8_t qos, bool retain)
{
	switch (delivery_offer(s, &b->dlim, m, qos, retain)) {
	case DELIVERY_SENT:
		b->stats.msgs_sent++;
		break;
	case DELIVERY_QUEUED:
		break;
	case DELIVERY_DROPPED:
		b->stats.publish_dropped++;
		break;
	}
}
