/*
 * Acknowledgements from the client. PUBREL completes an inbound QoS 2
 * flow; PUBCOMP is sent even for an unknown id, so a client that lost
 * state can finish the exchange [MQTT-4.3.3]. Outbound flows (PUBACK,
 * PUBREC, PUBCOMP from subscribers) are tracked by the session.
 */
#include "broker.h"

#include "err.h"

int handle_ack(struct broker *b, struct conn *c, uint8_t type, const struct mqtt_ack *p, enum reason *why)
{
	/* The answer must fit the QoS the message was sent at (sections 4.3.2
	 * and 4.3.3): PUBREC to a QoS 1 PUBLISH, or PUBACK to a QoS 2 one, is a
	 * protocol violation (closed, as Mosquitto does). The session checks
	 * it in the same index probe that completes the flow. */
	int rc = 0;
	switch (type) {
	case MQTT_PKT_PUBREL:
		if (sess_qos2_in_release(c->sess, p->packet_id))
			SESS_OBSERVE(&b->observer, qos2_in, c->sess, p->packet_id, false);
		return broker_send_ack(b, c, MQTT_PKT_PUBCOMP, p->packet_id);
	case MQTT_PKT_PUBACK:
		rc = delivery_on_puback(c->sess, &b->dlim, p->packet_id);
		break;
	case MQTT_PKT_PUBREC:
		rc = delivery_on_pubrec(c->sess, &b->dlim, p->packet_id, p->reason);
		break;
	case MQTT_PKT_PUBCOMP:
		delivery_on_pubcomp(c->sess, &b->dlim, p->packet_id);
		break;
	default:
		break;
	}
	if (rc == WISP_EPROTO) {
		*why = REASON_WRONG_ACK;
		return WISP_EPROTO;
	}
	return 0; /* an unknown id is ignored (PUBREC: answered with PUBREL unless it is an error) */
}
