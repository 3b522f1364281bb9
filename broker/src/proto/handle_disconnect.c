/*
 * DISCONNECT from the client: the will is discarded [MQTT-3.1.2-10], or
 * published for v5 reason 0x04 [MQTT-3.14.4-3]; a v5 DISCONNECT may change
 * the Session Expiry Interval, but not from 0 [MQTT-3.14.2-2].
 */
#include "broker.h"

#include "err.h"
#include "session_v5.h"

int handle_disconnect(struct broker *b, struct conn *c, const struct mqtt_reason_pkt *p, enum reason *why)
{
	struct session *s = c->sess;
	if (c->version == MQTT_PROTO_V5 && (p->props.present & MQTT_PROP_BIT(MQTT_PROP_SESSION_EXPIRY))) {
		struct sess_v5 *v = s->v5;
		uint32_t asked = p->props.session_expiry;
		if ((!v || v->expiry == 0) && asked != 0) {
			*why = REASON_SESSION_EXPIRY_AT_DISCONNECT; /* [MQTT-3.14.2-2] */
			return WISP_EPROTO;
		}
		if (v) {
			uint32_t bound = b->cfg->limits.max_session_expiry;
			v->expiry = bound && asked > bound ? bound : asked;
			if (v->expiry == 0 && !s->clean) {
				SESS_OBSERVE(&b->observer, session_del, s); /* ends with this connection now */
				s->clean = true;
			} else {
				SESS_OBSERVE(&b->observer, session_put, s); /* the new expiry survives a restart */
			}
		}
	}
	broker_drop(b, c, p->reason == MQTT_RC_DISCONNECT_WITH_WILL ? REASON_CLIENT_DISCONNECT_WILL
								    : REASON_CLIENT_DISCONNECT,
		    NULL);
	return 0;
}
