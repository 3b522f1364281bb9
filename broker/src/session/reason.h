/*
 * Why a connection ends or a CONNECT is refused: one list, so every reason
 * is answered, counted and logged the same way. Each line gives
 *   - the MQTT 5 reason code: the CONNACK code while the CONNECT is being
 *     answered, the DISCONNECT code once the connection is active (a code
 *     is listed only where v5 allows it in the packet the reason can end
 *     with: 0x8E, 0x8D, 0x93 exist only in DISCONNECT, 0x88 only in CONNACK);
 *   - the 3.1/3.1.1 CONNACK return code, or REASON_CLOSE for "close
 *     without an answer" (3.1.1 has no server DISCONNECT);
 *   - the $SYS name: $SYS/broker/clients/disconnects/<name> counts it;
 *   - the group of an older aggregate $SYS topic it also counts in
 *     (clients/malformed, clients/keepalive_expired...), kept by name;
 *   - flags: REASON_F_SILENT when nothing may be sent (the peer is gone or
 *     left on its own), REASON_F_KEEP_WILL when the will is discarded
 *     rather than published [MQTT-3.1.2-10];
 *   - the log text (a caller with figures may log a more precise one).
 *
 * proto/dispatch.c maps a reason to the packet in one place
 * (broker_answer_reason); handlers only return a reason. Pure data: no
 * state, usable from every layer above session/.
 */
#ifndef WISP_SESSION_REASON_H
#define WISP_SESSION_REASON_H

#include <stdbool.h>
#include <stdint.h>

#define REASON_CLOSE 0xFFu /* 3.1.1: close the connection, no CONNACK */

/* Older aggregate $SYS topics a reason also counts in (sys.c names them). */
enum reason_group {
	REASON_G_NONE = 0,
	REASON_G_MALFORMED,       /* clients/malformed */
	REASON_G_KEEPALIVE,       /* clients/keepalive_expired */
	REASON_G_TAKEOVER,        /* clients/takeover_refused */
	REASON_G_OUTPUT_STALLED,  /* limits/output_stalled */
	REASON_G_UNAUTH,          /* limits/unauthenticated_refused */
	REASON_G_COUNT
};

#define REASON_F_SILENT 0x01u
#define REASON_F_KEEP_WILL 0x02u

/* X(id, v5 code, 3.1.1 code, $SYS name, group, flags, log text) */
#define REASONS(X)                                                                                         \
	/* the client ends it */                                                                         \
	X(CLIENT_DISCONNECT, 0x00, REASON_CLOSE, "client_disconnect", NONE, REASON_F_SILENT | REASON_F_KEEP_WILL,          \
	  "client sent DISCONNECT")                                                                      \
	X(CLIENT_DISCONNECT_WILL, 0x04, REASON_CLOSE, "client_disconnect_with_will", NONE, REASON_F_SILENT,       \
	  "client sent DISCONNECT with will message")                                                    \
	X(PEER_CLOSED, 0x00, REASON_CLOSE, "peer_closed", NONE, REASON_F_SILENT, "connection closed by peer")     \
	X(READ_ERROR, 0x00, REASON_CLOSE, "read_error", NONE, REASON_F_SILENT, "read error")                      \
	X(WRITE_ERROR, 0x00, REASON_CLOSE, "write_error", NONE, REASON_F_SILENT, "write error")                   \
	X(HANDSHAKE_FAILED, 0x00, REASON_CLOSE, "tls_handshake_failed", NONE, REASON_F_SILENT,                    \
	  "TLS handshake failed")                                                                        \
	X(WS_HANDSHAKE_FAILED, 0x00, REASON_CLOSE, "ws_handshake_failed", NONE, REASON_F_SILENT,                  \
	  "WebSocket handshake failed")                                                                  \
	/* input that breaks the protocol */                                                             \
	X(NOT_CONNECT, 0x82, REASON_CLOSE, "first_packet_not_connect", MALFORMED, 0,                     \
	  "first packet is not CONNECT")                                                                 \
	X(MALFORMED_PACKET, 0x81, REASON_CLOSE, "malformed_packet", MALFORMED, 0, "malformed packet")    \
	X(PROTOCOL_ERROR, 0x82, REASON_CLOSE, "protocol_error", MALFORMED, 0, "protocol error")          \
	X(PACKET_TOO_LARGE, 0x95, REASON_CLOSE, "packet_too_large", MALFORMED, 0,                        \
	  "packet exceeds the maximum packet size")                                                      \
	X(BAD_PROTOCOL_VERSION, 0x84, 1, "unsupported_protocol_version", MALFORMED, 0,                   \
	  "unsupported protocol name or level")                                                          \
	X(BAD_PROTOCOL_NAME, 0x82, REASON_CLOSE, "unknown_protocol_name", MALFORMED, 0,                  \
	  "unknown protocol name")                                                                       \
	X(CONTROL_CHARACTER, 0x81, REASON_CLOSE, "control_character", MALFORMED, 0,                      \
	  "control character in a client id, user name, topic or filter")                                \
	X(EMPTY_FILTER, 0x82, REASON_CLOSE, "empty_filter", MALFORMED, 0,                                \
	  "zero-length topic filter")                                                                    \
	X(WRONG_ACK, 0x82, REASON_CLOSE, "wrong_ack", NONE, 0,                                           \
	  "PUBREC for a QoS 1 message, or PUBACK for a QoS 2 one")                                       \
	X(SECOND_CONNECT, 0x82, REASON_CLOSE, "second_connect", NONE, 0, "second CONNECT")               \
	X(PACKET_NOT_ACCEPTED, 0x82, REASON_CLOSE, "packet_not_accepted", NONE, 0,                       \
	  "packet type not accepted from a client")                                                      \
	X(TOPIC_INVALID, 0x90, REASON_CLOSE, "topic_invalid", NONE, 0, "invalid topic name in PUBLISH")  \
	X(TOPIC_TOO_LONG, 0x90, REASON_CLOSE, "topic_too_long", NONE, 0,                                 \
	  "topic longer than max_topic_length")                                                          \
	X(TOPIC_TOO_DEEP, 0x90, REASON_CLOSE, "topic_too_deep", NONE, 0,                                 \
	  "topic has more levels than max_topic_levels")                                                 \
	X(QOS2_TOO_MANY, 0x93, REASON_CLOSE, "qos2_receive_maximum", NONE, 0,                            \
	  "too many QoS 2 messages awaiting PUBREL")                                                     \
	X(TOPIC_ALIAS_INVALID, 0x94, REASON_CLOSE, "topic_alias_invalid", NONE, 0,                       \
	  "topic alias 0 or over the maximum announced")                                                 \
	X(TOPIC_ALIAS_UNKNOWN, 0x82, REASON_CLOSE, "topic_alias_unknown", NONE, 0,                       \
	  "PUBLISH with an empty topic and a topic alias not set on this connection")                    \
	X(QOS_NOT_SUPPORTED, 0x9B, REASON_CLOSE, "qos_not_supported", NONE, 0,                           \
	  "PUBLISH QoS over limits.max_qos")                                                             \
	X(RETAIN_NOT_SUPPORTED, 0x9A, REASON_CLOSE, "retain_not_supported", NONE, 0,                     \
	  "retained PUBLISH while limits.retain_available is false")                                     \
	X(SESSION_EXPIRY_AT_DISCONNECT, 0x82, REASON_CLOSE, "session_expiry_at_disconnect", NONE, 0,     \
	  "DISCONNECT sets a Session Expiry Interval after CONNECT had 0")                               \
	/* CONNECT refused */                                                                            \
	X(WILL_TOPIC_INVALID, 0x90, REASON_CLOSE, "will_topic_invalid", NONE, 0, "invalid will topic")   \
	X(WILL_TOPIC_TOO_LONG, 0x90, 5, "will_topic_too_long", NONE, 0,                                  \
	  "will topic longer than limits.max_topic_length")                                              \
	X(WILL_TOPIC_TOO_DEEP, 0x90, 5, "will_topic_too_deep", NONE, 0,                                  \
	  "will topic has more levels than limits.max_topic_levels")                                     \
	X(WILL_NOT_AUTHORIZED, 0x87, 5, "will_not_authorised", NONE, 0,                                  \
	  "will topic not authorised by the ACL")                                                        \
	X(WILL_SYS, 0x87, 5, "will_sys", NONE, 0, "will topic under $SYS/")                              \
	X(WILL_PAYLOAD_FORMAT_INVALID, 0x99, REASON_CLOSE, "will_payload_format_invalid", NONE, 0,       \
	  "will with Payload Format Indicator 1 and a payload that is not UTF-8")                        \
	X(WILL_QOS_NOT_SUPPORTED, 0x9B, REASON_CLOSE, "will_qos_not_supported", NONE, 0,                 \
	  "will QoS over limits.max_qos")                                                                \
	X(WILL_RETAIN_NOT_SUPPORTED, 0x9A, REASON_CLOSE, "will_retain_not_supported", NONE, 0,           \
	  "retained will while limits.retain_available is false")                                        \
	X(CLIENT_ID_REJECTED, 0x85, 2, "client_id_rejected", NONE, 0,                                    \
	  "client id refused (empty, over 23 characters in 3.1, or a bridge's)")                         \
	X(BAD_AUTH_METHOD, 0x8C, REASON_CLOSE, "bad_authentication_method", NONE, 0,                     \
	  "authentication method not supported")                                                         \
	X(AUTH_UNEXPECTED, 0x82, REASON_CLOSE, "auth_unexpected", NONE, 0,                                \
	  "AUTH out of turn or naming another method, or another packet during an authentication exchange") \
	X(REAUTH_REFUSED, 0x87, REASON_CLOSE, "reauthentication_refused", NONE, 0,                     \
	  "re-authentication is not offered")                                                            \
	X(KEEPALIVE_TOO_LONG, 0x85, 2, "keepalive_too_long", NONE, 0, "keepalive above max_keepalive")   \
	X(BAD_CREDENTIALS, 0x86, 4, "bad_credentials", NONE, 0, "bad user name or password")             \
	X(NOT_AUTHORIZED, 0x87, 5, "not_authorised", NONE, 0, "not authorised")                          \
	X(AUTH_BUSY, 0x89, 3, "login_checks_busy", NONE, 0, "server busy verifying other logins")        \
	X(TAKEOVER_REFUSED, 0x87, 5, "takeover_refused", TAKEOVER, 0,                                    \
	  "client id belongs to another user's session")                                                 \
	X(STORE_REFUSED_SESSION, 0x88, 3, "store_refused_session", NONE, 0,                              \
	  "persistent session refused: the store cannot write (see $SYS/broker/store/state)")            \
	/* the broker ends it */                                                                         \
	X(STORE_REFUSED_PUBLISH, 0x89, REASON_CLOSE, "store_refused_publish", NONE, 0,                   \
	  "QoS 1/2 publish refused: the store cannot write (see $SYS/broker/store/state)")               \
	X(NO_MEMORY, 0x89, 3, "no_memory", NONE, 0, "out of memory")                                     \
	X(CONNECT_TOO_LARGE, 0x95, REASON_CLOSE, "connect_too_large", UNAUTH, 0,                         \
	  "CONNECT over limits.max_connect_size")                                                        \
	X(UNAUTH_BYTES, 0x89, REASON_CLOSE, "unauthenticated_bytes", UNAUTH, 0,                          \
	  "input buffer over limits.max_unauthenticated_bytes before CONNECT")                           \
	X(INPUT_BYTES, 0x97, REASON_CLOSE, "input_bytes", NONE, 0,                                       \
	  "unfinished packets of all clients over limits.max_input_bytes")                               \
	X(CONNECT_TIMEOUT, 0x8D, REASON_CLOSE, "connect_timeout", NONE, REASON_F_SILENT,                          \
	  "no CONNECT within the connect timeout")                                                       \
	X(KEEPALIVE_TIMEOUT, 0x8D, REASON_CLOSE, "keepalive_timeout", KEEPALIVE, 0, "keepalive expired") \
	X(OUTPUT_STALLED, 0x97, REASON_CLOSE, "output_stalled", OUTPUT_STALLED, 0,                       \
	  "output over limits.max_output_buffer for output_buffer_timeout")                              \
	X(SESSION_TAKEN_OVER, 0x8E, REASON_CLOSE, "session_taken_over", NONE, 0,                         \
	  "session taken over by a new connection")                                                      \
	X(USER_REMOVED, 0x87, REASON_CLOSE, "user_removed", NONE, 0,                                     \
	  "user no longer in the password file after reload")                                            \
	X(ANONYMOUS_REVOKED, 0x87, REASON_CLOSE, "anonymous_revoked", NONE, 0,                           \
	  "anonymous clients no longer allowed after reload")                                            \
	X(SHUTDOWN, 0x8B, REASON_CLOSE, "shutdown", NONE, REASON_F_KEEP_WILL, "broker shutting down")

enum reason {
#define REASON_ENUM(id, v5, v3, name, group, flags, text) REASON_##id,
	REASONS(REASON_ENUM)
#undef REASON_ENUM
	REASON_COUNT
};

struct reason_info {
	uint8_t v5;    /* MQTT 5 reason code */
	uint8_t v311;  /* 3.1/3.1.1 CONNACK return code, or REASON_CLOSE */
	uint8_t group; /* enum reason_group */
	uint8_t flags; /* REASON_F_* */
	const char *name; /* $SYS/broker/clients/disconnects/<name> */
	const char *text; /* for the log */
};

/* The row of `r` (r < REASON_COUNT). */
const struct reason_info *reason_info(enum reason r);

/* The reason a decoder error (a negative MQTT_E*) ends a connection for. */
enum reason reason_from_decode(int err);

/* Whether `code` may stand in a v5 CONNACK / DISCONNECT [MQTT-3.2.2.2],
 * [MQTT-3.14.2.1]: a reason whose code the packet cannot carry is closed
 * without it. */
bool reason_v5_connack_allowed(uint8_t code);
bool reason_v5_disconnect_allowed(uint8_t code);

#endif
