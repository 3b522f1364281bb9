/*
 * The protocol's side of a connection: the one switch into the packet
 * handlers (on_packet of session/input.h, which reads and frames) and the
 * one mapping of a reason to the wire (broker_answer_reason).
 */
#include "broker.h"
#include "enhanced_auth.h"
#include "input.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "err.h"
#include "log.h"

/*
 * The one mapping of a reason (session/reason.h) to the wire. While the
 * CONNECT is being answered: a refusing CONNACK, with the v5 reason code
 * for a v5 CONNECT [MQTT-3.2.2-6], the 3.1/3.1.1 return code otherwise, or
 * none where 3.1.1 has no code for it (the connection just closes). Before
 * the CONNECT was read (c->version 0) the answer has the 3.1.1 shape: a
 * client of an unknown level cannot be assumed to read v5, so an
 * unsupported level gets return code 1 [MQTT-3.1.2-2] (as Mosquitto's).
 * Once active, a v5 client gets a DISCONNECT with the reason code before
 * the close [MQTT-3.14.2.1]; a 3.1.1 client is just closed.
 */
void broker_answer_reason(struct broker *b, struct conn *c, enum reason r)
{
	const struct reason_info *ri = reason_info(r);
	uint8_t buf[8];
	ssize_t n = 0;
	if (ri->flags & REASON_F_SILENT)
		return;
	if (c->state == CONN_AWAIT_CONNECT) {
		struct mqtt_connack ack = {.code = ri->v311};
		uint8_t version = c->version ? c->version : MQTT_PROTO_V311;
		if (version == MQTT_PROTO_V5)
			ack.code = reason_v5_connack_allowed(ri->v5) && ri->v5 ? ri->v5 : MQTT_RC_UNSPECIFIED;
		else if (ri->v311 == REASON_CLOSE)
			return;
		n = mqtt_encode_connack(buf, sizeof buf, version, &ack);
		if (n > 0)
			b->stats.refused++;
	} else if (c->state == CONN_ACTIVE && c->version == MQTT_PROTO_V5) {
		if (!reason_v5_disconnect_allowed(ri->v5))
			return;
		struct mqtt_reason_pkt d = {.reason = ri->v5};
		n = mqtt_encode_reason(buf, sizeof buf, MQTT_PROTO_V5, MQTT_PKT_DISCONNECT, &d);
	}
	if (n > 0)
		conn_send_bytes(c, buf, (size_t)n);
}

/* on_packet (session/input.h): the one switch into the packet handlers. */
int broker_on_packet(void *ctx, struct conn *c, const struct mqtt_pkt *p, enum reason *why)
{
	struct broker *b = ctx;
	if (c->outbound)
		return b->outbound->on_packet(b->outbound_ctx, c, p, why);
	/* Between a CONNECT naming an Authentication Method and its CONNACK the
	 * client sends only AUTH (handle_auth judges it) or DISCONNECT (it
	 * leaves) [MQTT-3.1.2-30]. */
	if (c->state == CONN_AWAIT_CONNECT && p->type != MQTT_PKT_CONNECT && p->type != MQTT_PKT_AUTH) {
		if (c->auth_method)
			*why = p->type == MQTT_PKT_DISCONNECT ? REASON_CLIENT_DISCONNECT : REASON_AUTH_UNEXPECTED;
		else
			*why = REASON_NOT_CONNECT; /* [MQTT-3.1.0-1] */
		return WISP_EPROTO;
	}
	switch (p->type) {
	case MQTT_PKT_CONNECT:
		return handle_connect(b, c, &p->u.connect, why);
	case MQTT_PKT_PUBLISH:
		return handle_publish(b, c, &p->u.publish, why);
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBREL:
	case MQTT_PKT_PUBCOMP:
		return handle_ack(b, c, p->type, &p->u.ack, why);
	case MQTT_PKT_SUBSCRIBE:
		return handle_subscribe(b, c, &p->u.subscribe, why);
	case MQTT_PKT_UNSUBSCRIBE:
		return handle_unsubscribe(b, c, &p->u.subscribe, why);
	case MQTT_PKT_PINGREQ:
		return handle_ping(b, c, why);
	case MQTT_PKT_DISCONNECT:
		return handle_disconnect(b, c, &p->u.reason, why);
	case MQTT_PKT_AUTH:
		return handle_auth(b, c, &p->u.reason, why);
	default:
		/* CONNACK, SUBACK, UNSUBACK, PINGRESP, AUTH: server-to-client only. */
		*why = REASON_PACKET_NOT_ACCEPTED;
		return WISP_EPROTO;
	}
}
