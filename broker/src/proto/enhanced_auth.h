/*
 * MQTT 5 enhanced authentication (4.12) on the protocol side: a CONNECT
 * naming an Authentication Method starts an exchange with the provider of
 * auth/method.h; AUTH packets (reason 0x18) carry it on; the CONNECT is
 * answered when the provider is done. The connection stays in
 * CONN_AWAIT_CONNECT meanwhile, so limits.connect_timeout bounds the whole
 * exchange in time, limits.max_connect_size each AUTH packet and
 * limits.max_unauthenticated_bytes the input held; AUTH_EXCHANGE_MAX_STEPS
 * bounds the steps.
 *
 * State: only a connection that names a method has any (struct
 * enhanced_auth, in the union with the password job in struct conn, so a
 * 3.1.1 connection does not grow): the method's state and a copy of the
 * CONNECT, both freed when the CONNACK is sent.
 *
 * Re-authentication (AUTH 0x19 after CONNACK, 4.12.1) is not offered: it
 * is treated as a failed re-authentication, DISCONNECT 0x87 [MQTT-4.12.1-2].
 * An exchange on a live connection would have no deadline (connect_timeout
 * ends with the CONNACK) and could hold its state and an auth.max_exchanges
 * slot for the connection's life; the client reconnects instead.
 */
#ifndef WISP_PROTO_ENHANCED_AUTH_H
#define WISP_PROTO_ENHANCED_AUTH_H

#include <stdbool.h>

#include "codec.h"
#include "reason.h"

struct broker;
struct conn;

/*
 * The CONNECT's authentication when it carries an Authentication Method.
 * 0 with *username (the proven user, the caller owns it) and *final (the
 * Authentication Data for the CONNACK, valid until the CONNACK is sent)
 * when done; 0 with *pending when the exchange goes on (the CONNECT is
 * kept and answered later); WISP_EPROTO with *why when refused.
 */
int enhanced_auth_connect(struct broker *b, struct conn *c, const struct mqtt_connect *p, char **username,
			  struct mqtt_str *final, bool *pending, enum reason *why);

/* An AUTH packet from the client. */
int handle_auth(struct broker *b, struct conn *c, const struct mqtt_reason_pkt *p, enum reason *why);

/* Frees the connection's exchange (the CONNACK went out, or it closes). */
void enhanced_auth_forget(struct conn *c);

#endif
