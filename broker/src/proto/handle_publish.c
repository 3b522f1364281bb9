/*
 * Inbound PUBLISH: topic checks, retained store, routing, and the
 * acknowledgement its QoS asks for. QoS 2 is exactly-once on the way in:
 * the packet id is held from PUBLISH to PUBREL and a repeated PUBLISH with
 * that id is acknowledged again but not routed again [MQTT-4.3.3-2].
 *
 * $SYS/ is the broker's: a client publish there is dropped unless an ACL
 * rule grants it by name (no ACL at all grants nothing there, and a leading
 * wildcard never reaches '$' topics [MQTT-4.7.2-1]), and $SYS/broker/,
 * where the broker's own statistics live, is never client-writable, so a
 * retained value there is always the broker's.
 */
#include "broker.h"

#include <string.h>

#include "err.h"
#include "log.h"

static bool has_prefix_level(const char *topic, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && memcmp(topic, prefix, n) == 0 && (len == n || topic[n] == '/');
}

bool broker_sys_write_allowed(const struct acl_client *acl, const char *topic, size_t len)
{
	if (!has_prefix_level(topic, len, "$SYS"))
		return true;
	if (!acl || has_prefix_level(topic, len, "$SYS/broker"))
		return false;
	return acl_client_check(acl, topic, len, ACL_WRITE);
}

/* A PUBLISH that is not routed is still acknowledged per its QoS, as
 * Mosquitto does: 3.1.1 has no negative acknowledgement [MQTT-4.3.2-2]
 * [MQTT-4.3.3-2], and a publisher that got none would retry forever. */
static int ack_unrouted(struct broker *b, struct conn *c, const struct mqtt_publish *p)
{
	if (p->qos == 1)
		return broker_send_ack(b, c, MQTT_PKT_PUBACK, p->packet_id);
	if (p->qos == 2 && sess_qos2_in_add(c->sess, p->packet_id) >= 0) {
		persist_qos2_in(b, c->sess, p->packet_id, true);
		return broker_send_ack(b, c, MQTT_PKT_PUBREC, p->packet_id);
	}
	return 0;
}

int broker_send_ack(struct broker *b, struct conn *c, uint8_t type, uint16_t packet_id)
{
	uint8_t buf[8];
	struct mqtt_ack ack = {.packet_id = packet_id};
	ssize_t n = mqtt_encode_ack(buf, sizeof buf, c->version, type, &ack);
	if (n < 0)
		return WISP_EINVAL;
	return persist_send_ack(b, c, buf, (size_t)n);
}

int handle_publish(struct broker *b, struct conn *c, const struct mqtt_publish *p, const char **why)
{
	const char *topic = (const char *)p->topic.ptr;
	size_t topic_len = p->topic.len;
	b->stats.msgs_received++;
	if (!topic_name_valid(topic, topic_len)) {
		*why = "invalid topic name in PUBLISH"; /* [MQTT-3.3.2-2] no wildcards */
		return WISP_EPROTO;
	}
	struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
	size_t max_levels = b->cfg->limits.max_topic_levels;
	if (max_levels == 0 || max_levels > TOPIC_MAX_LEVELS_HARD)
		max_levels = TOPIC_MAX_LEVELS_HARD;
	int nlevels = topic_split(topic, topic_len, levels, max_levels);
	if (nlevels < 0) {
		*why = "topic has more levels than max_topic_levels";
		return WISP_ELIMIT;
	}
	if (topic[0] == '$' && !broker_sys_write_allowed(c->sess->acl, topic, topic_len)) {
		b->stats.sys_publish_dropped++;
		if (!c->sess->sys_write_logged) {
			c->sess->sys_write_logged = true;
			log_msg(LOG_NOTICE, "acl", "%s: publish to '%.*s' dropped: $SYS is the broker's (logged once per client)",
				c->sess->client_id, (int)topic_len, topic);
		}
		return ack_unrouted(b, c, p);
	}
	if (!acl_client_check(c->sess->acl, topic, topic_len, ACL_WRITE)) {
		log_msg(LOG_DEBUG, "acl", "%s: publish to '%.*s' denied", c->sess->client_id, (int)topic_len, topic);
		return ack_unrouted(b, c, p);
	}
	if (p->qos == 2) {
		int rc = sess_qos2_in_add(c->sess, p->packet_id);
		if (rc == 0) /* a retransmission: acknowledge, do not route twice */
			return broker_send_ack(b, c, MQTT_PKT_PUBREC, p->packet_id);
		if (rc < 0) {
			*why = rc == WISP_ELIMIT ? "too many QoS 2 messages awaiting PUBREL" : "out of memory";
			return rc;
		}
		persist_qos2_in(b, c->sess, p->packet_id, true);
	}
	struct msg *m = msg_new(topic, topic_len, p->payload.ptr, p->payload.len, p->qos, p->retain);
	if (!m) {
		/* Not acknowledged, so the publisher will send it again. */
		*why = "out of memory for a message";
		return WISP_ENOMEM;
	}
	if (p->retain)
		broker_retain(b, m);
	broker_route(b, m, levels, (size_t)nlevels);
	msg_unref(m);
	if (p->qos == 1)
		return broker_send_ack(b, c, MQTT_PKT_PUBACK, p->packet_id);
	if (p->qos == 2)
		return broker_send_ack(b, c, MQTT_PKT_PUBREC, p->packet_id);
	return 0;
}
