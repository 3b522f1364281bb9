/*
 * The server: listeners, accepted connections and their lifecycle up to
 * the protocol. It accepts (with the connection and TLS handshake caps),
 * wraps ws/wss connections in the WebSocket transport (net/ws.h), steps
 * TLS handshakes under a per-turn budget (WebSocket upgrades without one), watches each connection's
 * socket and hands readable ones to session/input.c, runs the connect
 * timeout / keepalive / output-stall timer, flushes coalesced output once
 * per turn, and frees connections closed during the turn. It knows nothing
 * of MQTT packets: what a packet means, and how a connection ends, is the
 * layer above's, reached through conn_set.in (on_packet, on_close) and the
 * two turn hooks below.
 *
 * Single threaded, on the loop thread. Cost: nothing per message beyond
 * the flush's writev; one struct server_listener per listener.
 */
#ifndef WISP_SERVER_SERVER_H
#define WISP_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "conn.h"
#include "delivery.h"
#include "listener.h"
#include "loop.h"
#include "tls.h"
#include "ws.h"

struct server;

struct server_listener {
	struct conn_origin origin; /* what its connections point to */
	struct listener net;
	struct server *srv;
	const struct config_listener *cfg;
	struct tls_ctx *tls;          /* NULL for plain MQTT */
	bool ws;                      /* ws, wss: a WebSocket transport over tcp or tls */
	struct ws_opts ws_opts;
	size_t conn_count;
	uint64_t conns_refused;       /* closed at accept by a connection limit (also in stats.conns_refused) */
	/* Copies of cfg's auth switches: cfg is the start-up configuration,
	 * and these two change on SIGHUP (proto/reload.c). */
	bool allow_anonymous;
	bool use_identity_as_username;
};

struct server_stats {
	uint64_t bytes_sent;
	uint64_t conns_accepted;     /* sockets accepted on the MQTT listeners, refused ones included */
	uint64_t conns_refused;      /* connections closed at accept: max_connections or memory_limit */
	uint64_t handshakes_refused; /* TLS connections refused by a handshake cap */
	uint64_t handshakes_failed;  /* TLS handshakes that failed or timed out */
	uint64_t handshakes_resumed; /* TLS handshakes that resumed a session (ticket or cache) */
};

/* Work the layer above does each turn, called from the loop's before-sleep
 * phase: `turn` before the read_more pass, `before_flush` before each
 * round of flushes (records reach the OS before the acks that vouch for
 * them). Either may be NULL. */
typedef void server_turn_fn(void *ctx);

struct server {
	struct loop *loop;
	const struct config *cfg;
	struct conn_set conns;        /* conns.in is set by the layer above */
	struct server_listener *listeners;
	size_t listener_count;
	const struct delivery_limits *dlim; /* for moving queued messages on when output drains */
	server_turn_fn *turn;
	server_turn_fn *before_flush;
	void *hook_ctx;
	struct server_stats stats;
	size_t other_conns;           /* connections served elsewhere (http/): they count in limits.max_connections */
	uint32_t handshake_budget;    /* TLS handshake steps left this turn */
	struct loop_timer housekeeping; /* log summaries and heap trims, while due */
};

/* Sets up the connection set (its input buffer and bounds from cfg) and
 * the listener table, without opening anything. 0, or WISP_ENOMEM. */
int server_init(struct server *srv, struct loop *l, const struct config *cfg);
/* Builds every listener's TLS context and opens every listener. 0, or a
 * negative WISP_E* with the reason in err (server_free cleans up). */
int server_listen(struct server *srv, char *err, size_t errlen);
/* Ends every connection for REASON_SHUTDOWN (through on_close), flushes
 * what they have queued and frees them. */
void server_shutdown(struct server *srv);
/* Closes the listeners and frees the server's memory (after server_shutdown). */
void server_free(struct server *srv);

/* Serves a connection the layer above opened itself (a bridge's, to
 * another broker; its origin is its stand-in listener): watches its
 * socket and starts its timer at `timeout` seconds (then the keepalive).
 * 0, or WISP_EIO (the caller frees it). */
int server_adopt(struct server *srv, struct conn *c, uint32_t timeout);

/* The connection's I/O callback: TLS handshake steps, then input. */
void server_on_conn_io(struct loop *l, struct loop_io *io, uint32_t events);
/* A connection leaves CONN_HANDSHAKE (done or closing): its listener's
 * handshake caps count it no more. */
void server_handshake_end(struct conn *c);
/* The listener a connection came in on. */
static inline struct server_listener *server_listener_of(const struct conn *c)
{
	return container_of(c->origin, struct server_listener, origin);
}

/* Formats a TLS context error as "<file>: listeners[i].tls.<key>: <reason>". */
void server_tls_error(const char *file, size_t listener, const char *why, char *err, size_t errlen);
/* Builds the TLS context of an mqtts listener from its configuration. */
int server_tls_context(const struct config_listener *lc, struct tls_ctx **out, char *err, size_t errlen);
/* For --check-config: builds and frees every mqtts listener's TLS context
 * the way server_listen does (certificate and key content, CA, cipher
 * suites, min_version against what the TLS library supports), so the check
 * reports exactly the error start-up would. 0, or WISP_ECONFIG with it in err. */
int server_check_tls(const struct config *cfg, char *err, size_t errlen);
/* For start-up and --check-config: every listener's bind resolves, and no
 * two would bind the same address and port (127.0.0.1 and localhost, or
 * an address and the wildcard), the way server_listen would find it but
 * without binding (a running broker holds the ports). 0, or WISP_ECONFIG
 * with "<file>: listeners[i].<key>: reason" in err. */
int server_check_listeners(const struct config *cfg, char *err, size_t errlen);

#endif
