/*
 * A non-blocking MQTT client for the client tools (clients/), driven by
 * core/loop. (The broker's bridges, bridge/, connect through the same
 * connector, but then deliver through the broker's own sessions and store
 * instead of this packet engine: see bridge.h.)
 *
 * One struct mqtt_client is one connection (with its session state); many
 * of them share one loop and one millisecond timer heap, so wisp_sensor can
 * run ten thousand devices in a single thread. It speaks MQTT 3.1, 3.1.1 and
 * 5 through the shared codec (v5 properties: caller-built blocks on
 * CONNECT, will, PUBLISH, SUBSCRIBE, UNSUBSCRIBE and DISCONNECT; received
 * properties reach the callbacks), over plain TCP or any transport a
 * caller-supplied factory wraps around the connected socket (TLS).
 *
 * What it does: connect (resolve, TCP, optional transport handshake:
 * client/connector.h, which the bridges use too; CONNECT/CONNACK, honouring
 * an MQTT 5 server's Receive Maximum), QoS 0/1/2 in both directions with in-flight tracking and
 * a max-inflight window (excess publishes queue in order), keepalive
 * (PINGREQ; a missing PINGRESP is a lost connection), will, clean or
 * persistent sessions (in-flight messages are resent with DUP after a
 * reconnect), automatic reconnect with exponential backoff and jitter, and
 * a graceful disconnect that flushes what was queued before DISCONNECT.
 * v5 topic aliases the server sends are resolved (up to the Topic Alias
 * Maximum our CONNECT declared); outgoing ones are the caller's business.
 * What it does not: persist anything to disk, AUTH.
 *
 * Callbacks run on the loop thread from inside the library. They may call
 * any mqtt_client_* function on any client except mqtt_client_free(); free
 * clients after loop_run() returns or from a loop before-sleep hook.
 *
 * Memory: wisp_malloc only. Per client: the struct, a read buffer that
 * grows to the largest packet seen (starts at 0, 256 bytes once connected),
 * an output buffer released when it drains above 64 KiB, one copy of
 * each unacknowledged QoS 1/2 message, one of each received QoS 2 message
 * until its PUBREL, and (v5, when the CONNECT allowed topic aliases) one
 * copy of each topic the server gave an alias.
 */
#ifndef WISP_CLIENT_MQTT_CLIENT_H
#define WISP_CLIENT_MQTT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "connector.h"
#include "loop.h"
#include "mtimer.h"

struct mqtt_client;
struct transport;

/* Wraps a connected socket in a transport (TLS); takes ownership of fd.
 * NULL on failure (fd closed). */
typedef struct transport *(*mqtt_transport_fn)(void *ctx, int fd);

struct mqtt_client_cbs {
	/* CONNACK received; code 0 is success. On refusal the connection is
	 * then closed and on_disconnect follows with MQTT_CLIENT_EREFUSED. */
	void (*on_connect)(struct mqtt_client *c, uint8_t code, bool session_present, void *ud);
	/* The connection ended (err is an enum mqtt_client_err). If reconnect
	 * is enabled and err != MQTT_CLIENT_OK, a reconnect is already scheduled. */
	void (*on_disconnect)(struct mqtt_client *c, int err, void *ud);
	/* A PUBLISH arrived; `p` borrows the read buffer until return. QoS 2
	 * duplicates are suppressed. */
	void (*on_message)(struct mqtt_client *c, const struct mqtt_publish *p, void *ud);
	/* QoS 0: the packet was queued; QoS 1: PUBACK; QoS 2: PUBCOMP.
	 * `reason` is the v5 reason code (0 for v3). */
	void (*on_publish)(struct mqtt_client *c, uint16_t mid, uint8_t reason, void *ud);
	void (*on_subscribe)(struct mqtt_client *c, uint16_t mid, const uint8_t *codes, size_t count,
			     void *ud);
	void (*on_unsubscribe)(struct mqtt_client *c, uint16_t mid, void *ud);
	/* Debug trace, one line without newline ("sending PUBLISH ..."), in the
	 * wording of libmosquitto's log so -d output matches mosquitto_pub. */
	void (*on_log)(struct mqtt_client *c, const char *line, void *ud);
};

struct mqtt_client_opts {
	const char *host;
	uint16_t port;
	const char *bind_address; /* NULL: any */
	bool nodelay;
	uint8_t version;          /* MQTT_PROTO_V31, _V311 (default if 0) or _V5 */
	const char *client_id;    /* NULL or "": empty id */
	const char *log_name;     /* name in on_log lines; NULL: the client id */
	bool clean_session;
	uint16_t keepalive;       /* seconds; 0 disables PINGREQ */
	const char *username;     /* NULL: none */
	const char *password;     /* NULL: none */
	const char *will_topic;   /* NULL: no will */
	const void *will_payload;
	size_t will_len;
	uint8_t will_qos;
	bool will_retain;
	/* v5 CONNECT property block (without its length), e.g. session expiry. */
	const uint8_t *connect_props;
	size_t connect_props_len;
	/* v5 will properties, e.g. will delay interval. */
	const uint8_t *will_props;
	size_t will_props_len;
	uint16_t max_inflight;    /* QoS>0 publishes in flight; 0 means 20 */
	uint32_t max_packet_size; /* largest packet accepted; 0: protocol maximum */
	bool reconnect;           /* reconnect after a lost connection */
	uint32_t reconnect_min_ms; /* first delay; 0 means 1000 */
	uint32_t reconnect_max_ms; /* cap of the doubling; 0 means 30000 */
	mqtt_transport_fn transport_new; /* NULL: plain TCP */
	void *transport_ctx;
	struct addrinfo *addrs;   /* pre-resolved host addresses (borrowed), or NULL */
	const struct mqtt_client_cbs *cbs;
	void *ud;
};

/* Copies everything it needs from `o`. NULL when out of memory. */
struct mqtt_client *mqtt_client_new(struct loop *l, struct mtimers *timers,
				    const struct mqtt_client_opts *o);
/* Closes the connection without DISCONNECT (the broker sends the will) and
 * frees everything. Not from inside a callback of this client. */
void mqtt_client_free(struct mqtt_client *c);

/* Starts connecting; progress arrives through the callbacks. 0, or
 * MQTT_CLIENT_ERESOLVE / MQTT_CLIENT_ECONNECT when it fails at once (no
 * callback then, and no reconnect is scheduled). */
int mqtt_client_connect(struct mqtt_client *c);

/*
 * Queues a PUBLISH. Copies topic and payload. `*mid_out` (may be NULL)
 * receives the message id, also assigned for QoS 0 like libmosquitto does.
 * QoS 1/2 publishes may be queued before the connection is up and wait for
 * it; QoS 0 needs a connection (MQTT_CLIENT_ELOST otherwise). Returns 0 or
 * a negative MQTT_CLIENT_E*.
 */
int mqtt_client_publish(struct mqtt_client *c, const char *topic, const void *payload, size_t len,
			uint8_t qos, bool retain, uint16_t *mid_out);
/* The same with a v5 property block (copied; ignored for v3). An empty
 * topic needs a Topic Alias in `props` [MQTT-3.3.2-8]. */
int mqtt_client_publish_props(struct mqtt_client *c, const char *topic, const void *payload, size_t len,
			      uint8_t qos, bool retain, const uint8_t *props, size_t props_len,
			      uint16_t *mid_out);
/* SUBSCRIBE with `count` filters, each at options[i] (QoS in the low bits),
 * and a v5 property block (NULL/0: none; ignored for v3). */
int mqtt_client_subscribe(struct mqtt_client *c, const char *const *filters, const uint8_t *options,
			  size_t count, const uint8_t *props, size_t props_len, uint16_t *mid_out);
int mqtt_client_unsubscribe(struct mqtt_client *c, const char *const *filters, size_t count,
			    const uint8_t *props, size_t props_len, uint16_t *mid_out);
/*
 * Sends DISCONNECT (v5: with `reason`) after everything queued so far and
 * closes once it is written; on_disconnect(MQTT_CLIENT_OK) follows. Stops
 * reconnecting. If not connected, closes at once.
 */
void mqtt_client_disconnect(struct mqtt_client *c, uint8_t reason);
/* The same with a v5 property block (copied into the packet at once). */
void mqtt_client_disconnect_props(struct mqtt_client *c, uint8_t reason, const uint8_t *props,
				  size_t props_len);

void mqtt_client_set_reconnect(struct mqtt_client *c, bool on);
bool mqtt_client_is_connected(const struct mqtt_client *c);
/* QoS 1/2 publishes not yet completed (in flight plus queued). */
size_t mqtt_client_pending(const struct mqtt_client *c);
/* Bytes queued for the socket and not yet written. */
size_t mqtt_client_out_pending(const struct mqtt_client *c);
/* errno of the last failed TCP connect (for "Error: Connection refused"). */
int mqtt_client_errno(const struct mqtt_client *c);
/* After MQTT_CLIENT_ETLS: whether the server's certificate was refused
 * (chain, validity, name), rather than the handshake failing otherwise. */
bool mqtt_client_cert_rejected(const struct mqtt_client *c);
/* The last CONNACK code (0 until one arrives). */
uint8_t mqtt_client_connack_code(const struct mqtt_client *c);
/* The reason code of the server's last v5 DISCONNECT (MQTT_CLIENT_ESERVER). */
uint8_t mqtt_client_disconnect_reason(const struct mqtt_client *c);
const char *mqtt_client_id(const struct mqtt_client *c);
void *mqtt_client_ud(const struct mqtt_client *c);

#endif
