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
#include "session_v5.h"

#include <string.h>

#include "alloc.h"
#include "err.h"
#include "input.h"
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

/* Writes the ack into buf (8 bytes): its length, or WISP_EINVAL. `reason`
 * is a v5 reason code (ignored below 5); 0 gives the two-byte short form
 * [MQTT-3.4.2.1]. */
static ssize_t encode_ack(const struct conn *c, uint8_t type, uint16_t packet_id, uint8_t reason, uint8_t buf[8])
{
	if (reason == MQTT_RC_SUCCESS || c->version != MQTT_PROTO_V5) {
		/* The two-byte form, every successful PUBACK/PUBREC: written here
		 * rather than through a zeroed struct mqtt_ack and its property
		 * block (a quarter of the publisher's ack cost in callgrind). */
		if (packet_id == 0)
			return WISP_EINVAL;
		buf[0] = (uint8_t)(type << 4 | (type == MQTT_PKT_PUBREL ? 0x2 : 0)); /* [MQTT-3.6.1-1] */
		buf[1] = 2;
		buf[2] = (uint8_t)(packet_id >> 8);
		buf[3] = (uint8_t)packet_id;
		return 4;
	}
	struct mqtt_ack ack = {.packet_id = packet_id, .reason = reason};
	ssize_t n = mqtt_encode_ack(buf, 8, c->version, type, &ack);
	return n < 0 ? WISP_EINVAL : n;
}

/* An ack that vouches for the records appended after seq `since` (see
 * persist_send_ack_since). */
static int send_ack_reason(struct broker *b, struct conn *c, uint8_t type, uint16_t packet_id, uint64_t since,
			   uint8_t reason)
{
	uint8_t buf[8];
	ssize_t n = encode_ack(c, type, packet_id, reason, buf);
	return n < 0 ? (int)n : persist_send_ack_since(b, c, buf, (size_t)n, since);
}

static int send_ack(struct broker *b, struct conn *c, uint8_t type, uint16_t packet_id, uint64_t since)
{
	return send_ack_reason(b, c, type, packet_id, since, MQTT_RC_SUCCESS);
}

int broker_send_ack(struct broker *b, struct conn *c, uint8_t type, uint16_t packet_id)
{
	uint8_t buf[8];
	ssize_t n = encode_ack(c, type, packet_id, MQTT_RC_SUCCESS, buf);
	return n < 0 ? (int)n : persist_send_ack(b, c, buf, (size_t)n);
}

/* A PUBLISH that is not routed is still acknowledged per its QoS, as
 * Mosquitto does: 3.1.1 has no negative acknowledgement [MQTT-4.3.2-2]
 * [MQTT-4.3.3-2], and a publisher that got none would retry forever. A v5
 * publisher is told why (`reason`, 0x80 or more); a PUBREC with such a
 * reason ends the QoS 2 flow [MQTT-4.3.3-8], so no packet id is held. */
static int ack_unrouted(struct broker *b, struct conn *c, const struct mqtt_publish *p, uint64_t seq_before,
			uint8_t reason)
{
	if (p->qos == 1)
		return send_ack_reason(b, c, MQTT_PKT_PUBACK, p->packet_id, seq_before, reason);
	if (p->qos == 2 && c->version == MQTT_PROTO_V5)
		return send_ack_reason(b, c, MQTT_PKT_PUBREC, p->packet_id, seq_before, reason);
	if (p->qos == 2 && sess_qos2_in_add(c->sess, p->packet_id) >= 0) {
		SESS_OBSERVE(&b->observer, qos2_in, c->sess, p->packet_id, true);
		return send_ack(b, c, MQTT_PKT_PUBREC, p->packet_id, seq_before);
	}
	return 0;
}


/*
 * The message for a PUBLISH. A large one was read into the connection's
 * carried buffer, which becomes the message where it lies (msg_adopt): its
 * payload is not copied again. The forwarded properties are filtered
 * first, out of the bytes the move may cover. Otherwise (and when the
 * packet's own bytes cannot hold the header, as with a long topic alias)
 * topic, properties and payload are copied into a new message, whose
 * properties the caller writes (spec->props NULL).
 */
static struct msg *make_msg(struct conn *c, const struct mqtt_publish *p, struct msg_spec *spec)
{
	uint8_t *block = conn_input_take_block(c);
	if (!block)
		return msg_create(spec);
	uint8_t *props = NULL;
	if (spec->props_len) {
		props = wisp_malloc(spec->props_len);
		if (!props) {
			wisp_free(block);
			return NULL;
		}
		mqtt_props_filter(&p->props, BROKER_PROPS_NOT_FORWARDED, props);
		spec->props = props;
	}
	struct msg *m = msg_adopt(block, spec);
	if (!m) {
		m = msg_create(spec);
		wisp_free(block);
	}
	wisp_free(props);
	return m;
}

/* A Payload Format Indicator of 1 promises UTF-8 [MQTT-3.3.2-4]: a payload
 * that breaks it is answered 0x99 and not routed. */
static bool payload_format_broken(const struct mqtt_publish *p)
{
	return (p->props.present & MQTT_PROP_BIT(MQTT_PROP_PAYLOAD_FORMAT)) && p->props.payload_format == 1 &&
	       !mqtt_utf8_valid(p->payload.ptr, p->payload.len);
}

int handle_publish(struct broker *b, struct conn *c, const struct mqtt_publish *p, enum reason *why)
{
	const char *topic = (const char *)p->topic.ptr;
	size_t topic_len = p->topic.len;
	b->stats.msgs_received++;
	if (p->qos > b->cfg->limits.max_qos) {
		*why = REASON_QOS_NOT_SUPPORTED; /* [MQTT-3.2.2-11] */
		return WISP_EPROTO;
	}
	if (p->retain && !b->cfg->limits.retain_available) {
		*why = REASON_RETAIN_NOT_SUPPORTED; /* [MQTT-3.2.2-14] */
		return WISP_EPROTO;
	}
	if (p->topic_control) { /* found by the decoder's UTF-8 pass */
		*why = REASON_CONTROL_CHARACTER;
		return WISP_EPROTO;
	}
	if (p->props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)) {
		/* An alias stands for a topic checked when it was set. */
		int rc = session_v5_alias(b, c->sess, p->props.topic_alias, &topic, &topic_len, why);
		if (rc != 0)
			return rc;
	}
	/* Checked and split in one pass; refused in the order: wildcard, length, depth. */
	struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
	size_t max_levels = b->cfg->limits.max_topic_levels;
	if (max_levels == 0 || max_levels > TOPIC_MAX_LEVELS_HARD)
		max_levels = TOPIC_MAX_LEVELS_HARD;
	int nlevels = topic_split_name(topic, topic_len, levels, max_levels);
	if (nlevels == TOPIC_NAME_INVALID) {
		*why = REASON_TOPIC_INVALID; /* [MQTT-3.3.2-2] no wildcards */
		return WISP_EPROTO;
	}
	if (b->cfg->limits.max_topic_length && topic_len > b->cfg->limits.max_topic_length) {
		b->stats.topics_refused++;
		*why = REASON_TOPIC_TOO_LONG;
		return WISP_ELIMIT;
	}
	if (nlevels < 0) {
		b->stats.topics_refused++;
		*why = REASON_TOPIC_TOO_DEEP;
		return WISP_ELIMIT;
	}
	uint64_t seq_before = persist_seq(b);
	if (topic[0] == '$' && !broker_sys_write_allowed(c->sess->acl, topic, topic_len)) {
		b->stats.sys_publish_dropped++;
		if (!c->sess->sys_write_logged) {
			c->sess->sys_write_logged = true;
			log_limited("$SYS publish dropped", LOG_NOTICE, "acl",
				    "%s: publish to '%.*s' dropped: $SYS is the broker's (logged once per client)",
				    c->sess->client_id, (int)topic_len, topic);
		}
		return ack_unrouted(b, c, p, seq_before, MQTT_RC_NOT_AUTHORIZED);
	}
	if (!acl_client_check(c->sess->acl, topic, topic_len, ACL_WRITE)) {
		log_msg(LOG_DEBUG, "acl", "%s: publish to '%.*s' denied", c->sess->client_id, (int)topic_len, topic);
		return ack_unrouted(b, c, p, seq_before, MQTT_RC_NOT_AUTHORIZED);
	}
	if (p->props.present && payload_format_broken(p)) {
		broker_count_drop(b, DROP_PAYLOAD_INVALID);
		log_limited("payload format invalid", LOG_NOTICE, "publish",
			    "%s: publish to '%.*s' dropped: Payload Format Indicator 1 with a payload that is not UTF-8",
			    c->sess->client_id, (int)topic_len, topic);
		return ack_unrouted(b, c, p, seq_before, MQTT_RC_PAYLOAD_FORMAT_INVALID);
	}
	if (p->qos && b->publish_gate.wait) {
		/* Before anything the packet changes (its QoS 2 id, the message),
		 * so that waiting and handling it again later is as if it were
		 * read then: a cluster out of room to make it safe for the other
		 * nodes makes it wait rather than acknowledge it unsafe. */
		int rc = b->publish_gate.wait(b->publish_gate.ctx, c, levels, (size_t)nlevels);
		if (rc == WISP_EAGAIN) {
			b->stats.msgs_received--; /* counted when it is handled */
			return rc;
		}
		if (rc != 0) {
			*why = REASON_NO_MEMORY;
			return rc;
		}
	}
	if (p->qos == 2) {
		int rc = sess_qos2_in_add(c->sess, p->packet_id);
		if (rc == 0) { /* a retransmission: acknowledge, do not route twice */
			uint8_t buf[8];
			ssize_t n = encode_ack(c, MQTT_PKT_PUBREC, p->packet_id, MQTT_RC_SUCCESS, buf);
			return n < 0 ? (int)n : persist_send_resent_ack(b, c, buf, (size_t)n);
		}
		if (rc < 0) {
			*why = rc == WISP_ELIMIT ? REASON_QOS2_TOO_MANY : REASON_NO_MEMORY;
			return rc;
		}
		/* More unacknowledged QoS 2 than the Receive Maximum the CONNACK
		 * announced (limits.max_inflight): DISCONNECT 0x93 (section 3.3.4). */
		if (c->version == MQTT_PROTO_V5 && sess_qos2_in_count(c->sess) > b->dlim.max_inflight) {
			sess_qos2_in_release(c->sess, p->packet_id);
			*why = REASON_QOS2_TOO_MANY;
			return WISP_ELIMIT;
		}
		if (persist_refuses_durable(b)) {
			/* Refused before routing: routed and then refused, a clean
			 * publisher's resend would be routed again, and exactly
			 * once would be lost [MQTT-4.3.3-2]. */
			sess_qos2_in_release(c->sess, p->packet_id);
			b->persist.refused++;
			*why = REASON_STORE_REFUSED_PUBLISH;
			return WISP_EIO;
		}
	}
	struct msg_spec spec = {
		.topic = topic,
		.topic_len = topic_len,
		.props_len = p->props.present ? mqtt_props_filter(&p->props, BROKER_PROPS_NOT_FORWARDED, NULL) : 0,
		.payload = p->payload.ptr,
		.payload_len = p->payload.len,
		.qos = p->qos,
		.retain = p->retain,
		.origin = c->sess,
	};
	/* [MQTT-3.3.2-5] delivered only while its Message Expiry Interval lasts */
	if (p->props.present & MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY))
		spec.expires_at = loop_now_s(b->loop) + p->props.message_expiry;
	struct msg *m = make_msg(c, p, &spec);
	if (!m) {
		/* Not acknowledged, so the publisher will send it again, and
		 * that copy must be routed, not taken for a retransmission. */
		if (p->qos == 2)
			sess_qos2_in_release(c->sess, p->packet_id);
		*why = REASON_NO_MEMORY;
		return WISP_ENOMEM;
	}
	if (spec.props_len && !spec.props)
		mqtt_props_filter(&p->props, BROKER_PROPS_NOT_FORWARDED, msg_props_mut(m));
	if (msg_topic(m) != topic) {
		/* The levels pointed into the packet, whose bytes the message
		 * now holds elsewhere (copied, or moved when adopted): the same
		 * levels at the same offsets, without splitting the topic again. */
		const char *moved = msg_topic(m);
		for (int i = 0; i < nlevels; i++)
			levels[i].ptr = moved + (levels[i].ptr - topic);
	}
	if (p->retain)
		broker_retain(b, m);
	size_t matched = broker_route(b, m, levels, (size_t)nlevels);
	conn_set_of(c)->in.fanout += matched; /* input.c's fan-out budget */
	msg_unref(m);
	/* The id is recorded after the message's records: kill -9 can tear
	 * the turn's write anywhere, and a stored id whose message was torn
	 * off would make the broker take the publisher's re-send for a
	 * duplicate and drop an acknowledged message. Torn the other way,
	 * the re-send is routed again (a copy may arrive twice). */
	if (p->qos == 2)
		SESS_OBSERVE(&b->observer, qos2_in, c->sess, p->packet_id, true);
	/* 3.1.1 has no negative PUBACK: while the store cannot write, a
	 * publish whose ack would wait for it is refused by closing the
	 * connection, unacknowledged, so the publisher keeps it and sends it
	 * again later (a QoS 1 message already routed may then arrive twice;
	 * QoS 2 was refused before routing). The records appended stay
	 * buffered and are written when the disk is back; nothing
	 * acknowledged depends on them. */
	if (p->qos > 0 && persist_refuses_durable(b) && persist_ack_must_wait(b, c, seq_before)) {
		b->persist.refused++;
		*why = REASON_STORE_REFUSED_PUBLISH;
		return WISP_EIO;
	}
	/* The ack vouches for what this publish appended (queued copies for
	 * persistent sessions, the QoS 2 id): nothing appended, nothing to wait for. */
	/* v5: 0x10, accepted but nobody subscribed (a retained message is still stored). */
	uint8_t reason = matched ? MQTT_RC_SUCCESS : MQTT_RC_NO_MATCHING_SUBSCRIBERS;
	int rc = 0;
	if (p->qos == 1)
		rc = send_ack_reason(b, c, MQTT_PKT_PUBACK, p->packet_id, seq_before, reason);
	else if (p->qos == 2)
		rc = send_ack_reason(b, c, MQTT_PKT_PUBREC, p->packet_id, seq_before, reason);
	/* No memory to hold the ack until its message is safe: it does not
	 * go, and the connection closes (the client sends it again). */
	if (rc == WISP_ENOMEM)
		*why = REASON_NO_MEMORY;
	return rc;
}
