/*
 * The client engine's way to a broker, shared by the client tools'
 * connections (mqtt_client.h) and the broker's bridges (bridge/): a list
 * of addresses tried in turn (failover), name resolution, the
 * non-blocking TCP connect (net/dial), the transport handshake (TLS), a
 * deadline over all three, and the reconnect backoff with jitter. It ends
 * with a ready socket (and transport) handed to its owner, which speaks
 * MQTT over it: mqtt_client with its own packet I/O, a bridge as a
 * connection of the broker's own server (so its messages are the
 * broker's shared ones).
 *
 * What both say in CONNECT and take from CONNACK is here too: the CONNECT
 * encoder (with Mosquitto's bridge flag) and the remote's limits from an
 * MQTT 5 CONNACK (Receive Maximum, Maximum Packet Size, Maximum QoS).
 *
 * Name resolution (getaddrinfo) blocks. Given a struct bg (core/bg.h), a
 * connector resolves on a helper thread, so a slow or dead name server
 * delays only this connection; the deadline covers the lookup, and a
 * lookup that outlives it is abandoned (its result freed when it returns;
 * no new one starts for this connector until then). Without one it
 * resolves on the caller's thread (the command-line tools, which have
 * nothing else to do meanwhile).
 *
 * Single-threaded: everything but the lookup runs on the loop thread.
 */
#ifndef WISP_CLIENT_CONNECTOR_H
#define WISP_CLIENT_CONNECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"
#include "dial.h"
#include "loop.h"
#include "mtimer.h"

struct bg;
struct connector;
struct resolve_job;
struct transport;

/* Why a connection (or an attempt at one) ended. */
enum mqtt_client_err {
	MQTT_CLIENT_OK = 0,          /* we disconnected on request */
	MQTT_CLIENT_ERESOLVE = -1,   /* host name did not resolve */
	MQTT_CLIENT_ECONNECT = -2,   /* TCP connect failed (errno in connector_errno) */
	MQTT_CLIENT_ETLS = -3,       /* transport handshake failed */
	MQTT_CLIENT_EREFUSED = -4,   /* CONNACK with a non-zero code */
	MQTT_CLIENT_ELOST = -5,      /* peer closed or I/O error */
	MQTT_CLIENT_EPROTOCOL = -6,  /* malformed or unexpected packet */
	MQTT_CLIENT_EKEEPALIVE = -7, /* no PINGRESP in time */
	MQTT_CLIENT_ENOMEM = -8,
	MQTT_CLIENT_ESERVER = -9,    /* v5 DISCONNECT from the server */
	MQTT_CLIENT_ETIMEOUT = -10,  /* the attempt outlived its deadline */
	MQTT_CLIENT_EQOS = -11,      /* QoS above the v5 server's Maximum QoS [MQTT-3.2.2-11] */
	MQTT_CLIENT_ETOOLARGE = -12, /* over the v5 server's Maximum Packet Size [MQTT-3.2.2-15] */
};

const char *mqtt_client_strerror(int err);

struct connector_addr {
	const char *host;
	uint16_t port;
};

struct connector_opts {
	const struct connector_addr *addrs; /* copied */
	size_t addr_count;
	struct addrinfo *resolved;  /* addrs[0] resolved already (borrowed), or NULL */
	const char *bind_address;   /* NULL: let the kernel choose */
	bool nodelay;
	struct bg *bg;              /* resolve off the loop; NULL: inline */
	uint32_t timeout_ms;        /* resolve + connect + handshake; 0: none */
	uint32_t backoff_min_ms;    /* the first wait; 0 means 1000 */
	uint32_t backoff_max_ms;    /* the doubling's cap; 0 means 30000 */
	/* Wraps the connected socket of address `addr` in a transport (TLS);
	 * takes the fd. NULL: plain TCP, the owner gets a NULL transport. */
	struct transport *(*transport_new)(void *ctx, size_t addr, int fd);
	void *transport_ctx;
	/* The socket is connected and the handshake done: the owner now owns
	 * fd and t (NULL for plain TCP). */
	void (*on_ready)(struct connector *cn, struct transport *t, int fd, void *ud);
	/* The attempt at address `addr` failed (err an MQTT_CLIENT_E*, `why`
	 * in words). Nothing is scheduled: the owner calls connector_retry or
	 * gives up. */
	void (*on_failed)(struct connector *cn, size_t addr, int err, const char *why, void *ud);
	void *ud;
};

struct connector {
	struct loop *loop;
	struct mtimers *timers;
	struct connector_opts o;    /* addrs and bind_address point at copies */
	struct connector_addr *addrs;
	char *bind_address;
	size_t cur;                 /* the address being tried or next */
	struct dial dial;
	struct transport *t;        /* during the handshake */
	struct loop_io io;
	struct mtimer timer;        /* the attempt's deadline, or the backoff */
	struct resolve_job *job;    /* a lookup under way (abandoned: owned by itself) */
	uint8_t state;
	uint32_t attempt;           /* failures since the last success, for the backoff */
	uint64_t rand_state;
	int last_errno;
	bool cert_rejected;         /* the last MQTT_CLIENT_ETLS was the peer's certificate */
	char why[160];
};

/* Copies what it needs from `o`. 0 or MQTT_CLIENT_ENOMEM. */
int connector_init(struct connector *cn, struct loop *l, struct mtimers *timers, const struct connector_opts *o);
/* Stops any attempt (connector_cancel) and frees the copies. */
void connector_free(struct connector *cn);

/* Starts an attempt at the current address now. 0 (the outcome arrives
 * through on_ready or on_failed), or an MQTT_CLIENT_E* when it failed at
 * once (no callback then; connector_why says why). */
int connector_dial(struct connector *cn);
/* After a failure: with `next`, the following address is the current one;
 * the next attempt starts after the backoff (half to all of a wait that
 * doubles from backoff_min_ms to backoff_max_ms). */
void connector_retry(struct connector *cn, bool next);
/* From the next retry on, the doubling's cap is ms (0: 30000): a refusal
 * that will not change soon (credentials) waits longer than a lost link. */
void connector_backoff_max(struct connector *cn, uint32_t ms);
/* Connected for good (CONNACK accepted): the backoff starts over. */
void connector_connected(struct connector *cn);
/* Ends an attempt or a wait under way; nothing is called back. */
void connector_cancel(struct connector *cn);
bool connector_busy(const struct connector *cn);

size_t connector_current(const struct connector *cn);
const struct connector_addr *connector_addr(const struct connector *cn, size_t i);
/* errno of the last failed TCP connect; the last failure in words. */
int connector_errno(const struct connector *cn);
const char *connector_why(const struct connector *cn);
/* Whether the last attempt's MQTT_CLIENT_ETLS was a certificate the
 * verification refused (tls_transport_cert_rejected), not another
 * handshake failure. */
bool connector_cert_rejected(const struct connector *cn);

/* ---- CONNECT and CONNACK, as both owners speak them ---- */

/* mqtt_encode_connect, and for a 3.1.x `bridge` Mosquitto's bridge flag
 * (try_private: the protocol level with its top bit set), with which
 * Mosquitto does not send a bridge its own messages back. */
ssize_t connector_encode_connect(uint8_t *buf, size_t cap, const struct mqtt_connect *m, bool bridge);
/* An upper bound of the encoded CONNECT's size. */
size_t connector_connect_size(const struct mqtt_connect *m);

/* What an MQTT 5 CONNACK says the remote takes (3.1.1: nothing said). */
struct connector_limits {
	uint16_t receive_max; /* 0: not said (65535) [MQTT-3.3.4-9] */
	uint32_t packet_max;  /* 0: not said [MQTT-3.1.2-25] */
	uint8_t max_qos;      /* 2 unless said less [MQTT-3.2.2-11] */
};
void connector_limits(const struct mqtt_connack *a, struct connector_limits *out);

#endif
