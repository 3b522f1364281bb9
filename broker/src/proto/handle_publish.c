/*
 * Inbound PUBLISH: topic checks, retained store, routing, and the
 * acknowledgement its QoS asks for. QoS 2 is exactly-once on the way in:
 * the packet id is held from PUBLISH to PUBREL and a repeated PUBLISH with
 * that id is acknowledged again but not routed again [MQTT-4.3.3-2].
 */
#include "broker.h"

#include "err.h"
#include "log.h"

/* An ack that vouches for the records appended after seq `since` (see
 * persist_send_ack_since); UINT64_MAX: decided by the session (persist_send_ack). */
static int send_ack(struct broker *b, struct conn *c, uint8_t type, uint16_t packet_id, uint64_t since)
{
	uint8_t buf[8];
	struct mqtt_ack ack = {.packet_id = packet_id};
	ssize_t n = mqtt_encode_ack(buf, sizeof buf, c->version, type, &ack);
	if (n < 0)
		return WISP_EINVAL;
	if (since == UINT64_MAX)
		return persist_send_ack(b, c, buf, (size_t)n);
	return persist_send_ack_since(b, c, buf, (size_t)n, since);
}

int broker_send_ack(struct broker *b, struct conn *c, uint8_t type, uint16_t packet_id)
{
	return send_ack(b, c, type, packet_id, UINT64_MAX);
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
	uint64_t seq_before = persist_seq(b);
	if (!acl_client_check(c->sess->acl, topic, topic_len, ACL_WRITE)) {
		/* Acknowledged per its QoS but not routed, as Mosquitto does: the
		 * publisher cannot tell, and must not retry forever. */
		log_msg(LOG_DEBUG, "acl", "%s: publish to '%.*s' denied", c->sess->client_id, (int)topic_len, topic);
		if (p->qos == 1)
			return send_ack(b, c, MQTT_PKT_PUBACK, p->packet_id, seq_before);
		if (p->qos == 2 && sess_qos2_in_add(c->sess, p->packet_id) >= 0) {
			persist_qos2_in(b, c->sess, p->packet_id, true);
			return send_ack(b, c, MQTT_PKT_PUBREC, p->packet_id, seq_before);
		}
		return 0;
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
	/* 3.1.1 has no negative PUBACK: while the store cannot write, a
	 * publish whose ack would wait for it is refused by closing the
	 * connection, unacknowledged, so the publisher keeps it and sends it
	 * again later (what was already routed may then arrive twice). The
	 * records appended stay buffered and are written when the disk is
	 * back; nothing acknowledged depends on them. */
	if (p->qos > 0 && persist_refuses_durable(b) && persist_ack_must_wait(b, c, seq_before)) {
		b->persist.refused++;
		*why = "QoS 1/2 publish refused: the store cannot write (see $SYS/broker/store/state)";
		return WISP_EIO;
	}
	/* The ack vouches for what this publish appended (queued copies for
	 * persistent sessions, the QoS 2 id): nothing appended, nothing to wait for. */
	if (p->qos == 1)
		return send_ack(b, c, MQTT_PKT_PUBACK, p->packet_id, seq_before);
	if (p->qos == 2)
		return send_ack(b, c, MQTT_PKT_PUBREC, p->packet_id, seq_before);
	return 0;
}
