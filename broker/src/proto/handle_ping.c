#include "broker.h"

#include "err.h"

/* PINGREQ: answered at once [MQTT-3.12.4-1]; the keepalive was refreshed by dispatch. */
int handle_ping(struct broker *b, struct conn *c, enum reason *why)
{
	uint8_t buf[2];
	(void)b;
	(void)why;
	ssize_t n = mqtt_encode_empty(buf, sizeof buf, MQTT_PKT_PINGRESP);
	return n < 0 ? WISP_EINVAL : conn_send_bytes(c, buf, (size_t)n);
}
