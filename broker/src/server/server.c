/*
 * The server (server.h): listeners and accept, TLS handshake steps, the
 * per-connection timer, the per-turn flush and the freeing of closed
 * connections. Connections end through conn_set.in.on_close, so the layer
 * above answers, counts and logs every end in one place.
 */
#include "server.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "input.h"
#include "log.h"
#include "session.h"

#define SCRATCH_SIZE (64u * 1024u)

/* TLS handshake steps (one mbedtls_ssl_handshake call, i.e. one flight:
 * ~4 ms of ECDHE and ECDSA for a ClientHello) per loop turn; the rest wait
 * in conns.handshake_wait for the next turns. A ClientHello flood then
 * delays other clients by about one step, not by the whole flood, and
 * handshakes go no slower (a turn costs microseconds). Measured, release
 * build, a replayed-ClientHello flood at ~260/s: another client's PINGREQ
 * round trip p50/p99 6/9-13 ms with 1 step per turn, 25/37 ms with 4,
 * 86/183 ms unbounded (0.2 ms idle); handshake rate the same. */
#define HANDSHAKE_STEPS_PER_TURN 1

/* TLS memory given back to the C heap (~200 sessions) after which the heap
 * is trimmed, at most once a second, from the housekeeping timer: a trim
 * walks the whole heap, so steady TLS churn must not cause one a second,
 * while a burst's memory goes back within a second or two of its end. */
#define TRIM_AFTER_BYTES (8u << 20)

static struct server *server_of(const struct conn *c)
{
	return container_of(conn_set_of(c), struct server, conns);
}

static void drop(struct conn *c, enum reason r, const char *detail)
{
	conn_set_of(c)->in.on_close(conn_set_of(c)->in.ctx, c, r, detail);
}

/* The name logs use for a connection: its client id once known, else its address. */
static const char *conn_name(const struct conn *c)
{
	return c->sess ? c->sess->client_id : conn_peer(c);
}

static void handshake_step(struct server *srv, struct conn *c);

/* The handshake a CONN_HANDSHAKE connection is in, for logs and reasons. */
static bool in_ws_upgrade(const struct conn *c) { return ws_transport_inner_ready(conn_t(c)); }

/* ws_opts.frame_per_message: the MQTT packet at the front of a stream. */
static size_t mqtt_message_size(const uint8_t *head, size_t len)
{
	struct mqtt_codec_opts opts = {.max_packet_size = 0};
	ssize_t n = mqtt_frame_size(head, len, &opts);
	return n > 0 ? (size_t)n : 0;
}

/* ws_opts.subprotocols: "mqtt" for MQTT 3.1.1 and 5.0 [MQTT-6.0.0-4],
 * then "mqttv3.1", which MQTT 3.1 clients offer. */
static const char *const mqtt_ws_subprotocols[] = {"mqtt", "mqttv3.1", NULL};

/* Connect timeout before CONNECT, keepalive after: both end the connection. */
static void on_timer(struct loop *l, struct loop_timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);
	struct server *srv = server_of(c);
	(void)l;
	if (c->state == CONN_ACTIVE && c->output_state == CONN_OUT_STALLED) {
		char reason[128];
		snprintf(reason, sizeof reason, "output over limits.max_output_buffer for %u s (%zu bytes unsent)",
			 srv->cfg->limits.output_buffer_timeout, c->out.bytes);
		drop(c, REASON_OUTPUT_STALLED, reason);
	} else if (c->state == CONN_ACTIVE) {
		drop(c, REASON_KEEPALIVE_TIMEOUT, NULL);
	} else if (c->state == CONN_HANDSHAKE && in_ws_upgrade(c)) {
		drop(c, REASON_WS_HANDSHAKE_FAILED, "WebSocket handshake timed out");
	} else if (c->state == CONN_HANDSHAKE) {
		drop(c, REASON_HANDSHAKE_FAILED, "TLS handshake timed out");
	} else {
		drop(c, REASON_CONNECT_TIMEOUT, NULL);
	}
}

int server_adopt(struct server *srv, struct conn *c, uint32_t timeout)
{
	if (loop_io_start(srv->loop, &c->io, conn_t(c)->fd, LOOP_READ, server_on_conn_io) != 0)
		return WISP_EIO;
	server_listener_of(c)->conn_count++;
	loop_timer_start(srv->loop, &c->timer, timeout, on_timer);
	return 0;
}

void server_handshake_end(struct conn *c)
{
	struct server_listener *sl = server_listener_of(c);
	if (sl->tls)
		listener_handshake_end(&sl->net, c->peer.family, c->peer.addr);
}

/* A TLS connection (mqtts, wss) takes a handshake slot of its listener and
 * source address; false (counted, logged within the rate limit) when a cap
 * is full. A plain WebSocket upgrade takes none: it costs one round trip and
 * max_header_bytes, bounded by connect_timeout and max_connections, and a
 * proxy in front of a ws listener brings every client from one address. */
static bool handshake_admitted(struct server_listener *bl, const struct conn_addr *addr)
{
	enum listener_hs_verdict v = listener_handshake_begin(&bl->net, addr->family, addr->addr);
	if (v == LISTENER_HS_OK)
		return true;
	bl->srv->stats.handshakes_refused++;
	if (v == LISTENER_HS_LISTENER_FULL)
		log_limited("refused: TLS handshake limit", LOG_WARNING, "conn",
			    "%s: refusing %s: %u TLS handshakes under way (max_handshakes)", bl->net.name, conn_format_addr(addr),
			    bl->net.hs.count);
	else if (v == LISTENER_HS_ADDRESS_FULL)
		log_limited("refused: TLS handshakes per address", LOG_WARNING, "conn",
			    "%s: refusing %s: %u TLS handshakes under way from that address "
			    "(max_handshakes_per_address)", bl->net.name, conn_format_addr(addr), bl->net.hs.max_per_address);
	else
		log_limited("refused: out of memory", LOG_WARNING, "conn", "%s: refusing %s: out of memory",
			    bl->net.name, conn_format_addr(addr));
	return false;
}

static void on_accept(struct listener *ls, int fd, const struct sockaddr *sa, void *ctx)
{
	struct conn_addr addr;
	conn_addr_set(&addr, sa);
	/* The peer's text only for a log line: formatting it costs an
	 * snprintf per accept, most of which log nothing. */
	struct server_listener *bl = ctx;
	struct server *srv = bl->srv;
	const struct config_limits *lim = &srv->cfg->limits;
	(void)ls;
	srv->stats.conns_accepted++; /* before the limits, as Mosquitto's load/sockets counts */
	if ((lim->max_connections && srv->conns.count + srv->other_conns >= lim->max_connections) ||
	    (bl->cfg->max_connections && bl->conn_count >= bl->cfg->max_connections)) {
		srv->stats.conns_refused++;
		bl->conns_refused++;
		log_limited("refused: connection limit", LOG_WARNING, "conn",
			    "%s: refusing %s: connection limit reached (%s)", bl->net.name, conn_format_addr(&addr),
			    lim->max_connections && srv->conns.count + srv->other_conns >= lim->max_connections
				    ? "limits.max_connections" : "the listener's max_connections");
		close(fd);
		return;
	}
	/* The last sixteenth of memory_limit is kept for the clients already
	 * connected: newcomers would otherwise take the heap to the limit,
	 * after which their next PUBLISH fails and they are dropped. So near
	 * the limit new connections are refused, and those the broker has are
	 * served. The store's restore stops at 7/8, below this, so the sessions
	 * it restored can still reconnect. */
	if (lim->memory_limit && wisp_mem_used() >= lim->memory_limit - lim->memory_limit / 16) {
		srv->stats.conns_refused++;
		bl->conns_refused++;
		log_limited("refused: memory_limit", LOG_WARNING, "conn",
			    "%s: refusing %s: heap over 15/16 of limits.memory_limit (%zu of %llu bytes)", bl->net.name,
			    conn_format_addr(&addr), wisp_mem_used(), (unsigned long long)lim->memory_limit);
		close(fd);
		return;
	}
	if (bl->tls && !handshake_admitted(bl, &addr)) {
		close(fd);
		return;
	}
	struct transport *t = NULL; /* plain TCP: embedded in the connection */
	if (bl->tls)
		t = tls_transport_new(bl->tls, fd);
	else if (bl->ws)
		t = tcp_transport_new(fd);
	if (t && bl->ws)
		t = ws_transport_new(t, &bl->ws_opts);
	if ((bl->tls || bl->ws) && !t) {
		if (bl->tls)
			listener_handshake_end(&bl->net, addr.family, addr.addr);
		log_limited("refused: out of memory", LOG_WARNING, "conn", "%s: refusing %s: out of memory",
			    bl->net.name, conn_format_addr(&addr));
		return;
	}
	struct conn *c = conn_new(&bl->origin, t, fd, sa);
	if (!c) {
		if (bl->tls)
			listener_handshake_end(&bl->net, addr.family, addr.addr);
		log_limited("refused: out of memory", LOG_WARNING, "conn", "%s: refusing %s: out of memory",
			    bl->net.name, conn_format_addr(&addr));
		return;
	}
	if (loop_io_start(srv->loop, &c->io, fd, LOOP_READ, server_on_conn_io) != 0) {
		if (bl->tls)
			server_handshake_end(c);
		log_limited("refused: cannot watch socket", LOG_WARNING, "conn",
			    "%s: refusing %s: cannot watch socket", bl->net.name, conn_format_addr(&addr));
		c->state = CONN_CLOSING;
		conn_free(c);
		return;
	}
	bl->conn_count++;
	c->state = bl->tls || bl->ws ? CONN_HANDSHAKE : CONN_AWAIT_CONNECT;
	/* One deadline covers the TLS handshake, the WebSocket upgrade and the
	 * CONNECT after them, so a client that stalls anywhere before CONNACK
	 * is dropped in time. */
	loop_timer_start(srv->loop, &c->timer, lim->connect_timeout, on_timer);
	if (log_enabled(LOG_DEBUG))
		log_msg(LOG_DEBUG, "conn", "new connection from %s on %s", conn_format_addr(&addr), bl->net.name);
}

/*
 * limits.max_output_buffer after a flush. Input was paused by dispatch.c
 * when a packet's answers took the output over the bound; still over after
 * the socket took what it could, the connection starts its
 * output_buffer_timeout (the keepalive timer stands in for it: nothing is
 * read meanwhile, so no packet can refresh the keepalive). Under the bound
 * it reads again, and its keepalive starts afresh, since packets it sent
 * while paused were not read.
 */
static void check_output_bound(struct server *srv, struct conn *c)
{
	bool over = conn_output_bytes(c) >= srv->conns.in.max_output;
	if (!over) {
		if (c->output_state == CONN_OUT_STALLED) {
			if (conn_keepalive(c))
				loop_timer_start(srv->loop, &c->timer, ((uint64_t)conn_keepalive(c) * 3u + 1u) / 2u, on_timer);
			else
				loop_timer_stop(srv->loop, &c->timer);
		}
		conn_input_output_drained(c);
		return;
	}
	if (c->output_state == CONN_OUT_STALLED || c->state != CONN_ACTIVE)
		return;
	c->output_state = CONN_OUT_STALLED;
	loop_io_set(srv->loop, &c->io, c->io.events & LOOP_WRITE);
	loop_timer_start(srv->loop, &c->timer, srv->cfg->limits.output_buffer_timeout, on_timer);
	log_msg(LOG_DEBUG, "conn", "client %s: %zu bytes unsent, over max_output_buffer: not reading it",
		conn_name(c), c->out.bytes);
}

/* Flush once per turn: every delivery queued during the turn goes out in as
 * few writev calls as the socket allows. EPOLLOUT is armed only for
 * connections that could not write everything. */
static void flush_conn(struct server *srv, struct conn *c)
{
	size_t before = c->out.bytes;
	int rc = outq_flush(&c->out, conn_t(c));
	srv->stats.bytes_sent += before - c->out.bytes;
	if (rc != 0 && rc != WISP_EAGAIN) {
		drop(c, REASON_WRITE_ERROR, NULL);
		return;
	}
	/* Room again in the output: queued QoS 1/2 messages move on. Pumping
	 * marks the connection dirty, so the loop in before_sleep flushes it
	 * again this turn. */
	if (c->sess && sess_queued_count(c->sess) && c->out.bytes < srv->conns.in.max_output &&
	    delivery_pump(c->sess, srv->dlim))
		return;
	check_output_bound(srv, c);
	bool reading = !c->read_paused && c->output_state == CONN_OUT_OK;
	uint32_t ev = reading ? LOOP_READ : 0;
	if (rc == WISP_EAGAIN) {
		ev |= LOOP_WRITE;
		if (conn_t(c)->want & TRANSPORT_WANT_READ)
			ev |= LOOP_READ;
	}
	if (ev != c->io.events)
		loop_io_set(srv->loop, &c->io, ev);
}

/* Runs while something is due: suppressed log lines to report, or TLS
 * memory freed that the heap should give back. Once a second at most, so a
 * trim (a walk of the heap) never runs per connection. */
static void housekeeping(struct loop *l, struct loop_timer *t)
{
	struct server *srv = container_of(t, struct server, housekeeping);
	log_limit_flush();
	wisp_mem_trim(TRIM_AFTER_BYTES);
	if (log_limit_pending() || wisp_mem_untrimmed() >= TRIM_AFTER_BYTES)
		loop_timer_start(l, &srv->housekeeping, 1, housekeeping);
}

static void before_sleep(struct loop *l, void *ctx)
{
	struct server *srv = ctx;
	(void)l;
	struct list_node *n;
	/* What the I/O phase left of the turn's handshake budget goes to the
	 * oldest deferred handshakes; the budget is renewed for the next turn. */
	while (srv->handshake_budget && (n = list_first(&srv->conns.handshake_wait)) != NULL) {
		struct conn *c = container_of(n, struct conn, read_link);
		list_remove(n);
		srv->handshake_budget--;
		handshake_step(srv, c);
	}
	if (!list_empty(&srv->conns.handshake_wait))
		loop_request_turn(srv->loop);
	srv->handshake_budget = HANDSHAKE_STEPS_PER_TURN;
	if (srv->turn)
		srv->turn(srv->hook_ctx);
	/* Input a connection's fan-out budget left for this turn; one that
	 * runs out again waits for the next. */
	struct list_node later;
	list_take_all(&srv->conns.read_later, &later);
	while ((n = list_first(&later)) != NULL) {
		struct conn *c = container_of(n, struct conn, read_link);
		list_remove(n);
		conn_input_read_more(c);
	}
	while ((n = list_first(&srv->conns.read_more)) != NULL) {
		struct conn *c = container_of(n, struct conn, read_link);
		list_remove(n);
		conn_input_read_more(c);
	}
	/* The turn's records reach the OS before the acks that vouch for them
	 * are queued (persist.c holds those until then); everything else
	 * flows even while the disk fails. A flush that makes room moves
	 * queued QoS 1/2 messages into flight, appending their records: they
	 * are written before the next round sends those PUBLISHes, so after
	 * kill -9 a message on the wire is re-sent as a re-delivery, with DUP
	 * and its packet id [MQTT-4.4.0-1], not as a new one. */
	do {
		if (srv->before_flush)
			srv->before_flush(srv->hook_ctx);
		struct list_node round;
		list_take_all(&srv->conns.dirty, &round);
		while ((n = list_first(&round)) != NULL) {
			struct conn *c = container_of(n, struct conn, work_link);
			list_remove(n);
			flush_conn(srv, c);
		}
	} while (!list_empty(&srv->conns.dirty));
	while ((n = list_first(&srv->conns.closing)) != NULL) {
		struct conn *c = container_of(n, struct conn, work_link);
		/* Best effort: a refusing CONNACK or the last acks may still fit. */
		if (!outq_empty(&c->out))
			outq_flush(&c->out, conn_t(c));
		server_listener_of(c)->conn_count--;
		conn_free(c);
	}
	if (!loop_timer_armed(&srv->housekeeping) &&
	    (log_limit_pending() || wisp_mem_untrimmed() >= TRIM_AFTER_BYTES))
		loop_timer_start(srv->loop, &srv->housekeeping, 1, housekeeping);
}

/* Behind a trusted proxy the client is who it says (X-Forwarded-For): logs
 * and per-address bounds see it from now on. Called after the handshake
 * slot was released under the socket's address. */
static void take_forwarded_address(struct conn *c)
{
	struct transport_peer_info info;
	transport_peer_info(conn_t(c), &info);
	if (info.forwarded.ss_family == AF_UNSPEC)
		return;
	char was[64];
	snprintf(was, sizeof was, "%s", conn_peer(c));
	conn_addr_set(&c->peer, (const struct sockaddr *)&info.forwarded);
	log_msg(LOG_DEBUG, "conn", "%s: forwarded for %s", was, conn_peer(c));
}

/* Drives a TLS handshake and/or a WebSocket upgrade; true once it is done
 * and MQTT may start. */
static bool handshake(struct server *srv, struct conn *c)
{
	int rc = transport_handshake(conn_t(c));
	if (rc == 0) {
		server_handshake_end(c);
		c->state = CONN_AWAIT_CONNECT;
		loop_io_set(srv->loop, &c->io, LOOP_READ);
		bool resumed = tls_transport_resumed(ws_transport_inner(conn_t(c)));
		if (resumed)
			srv->stats.handshakes_resumed++;
		log_msg(LOG_DEBUG, "conn", "%s: %s handshake done%s", conn_peer(c),
			ws_transport_is(conn_t(c)) ? "WebSocket" : "TLS", resumed ? " (resumed)" : "");
		if (ws_transport_is(conn_t(c)))
			take_forwarded_address(c);
		return true;
	}
	if (rc == WISP_EAGAIN) {
		uint32_t ev = 0;
		if (conn_t(c)->want & TRANSPORT_WANT_READ)
			ev |= LOOP_READ;
		if (conn_t(c)->want & TRANSPORT_WANT_WRITE)
			ev |= LOOP_WRITE;
		loop_io_set(srv->loop, &c->io, ev ? ev : LOOP_READ);
		return false;
	}
	char why[160], reason[200];
	bool ws = in_ws_upgrade(c);
	transport_last_error(conn_t(c), why, sizeof why);
	snprintf(reason, sizeof reason, "%s handshake failed: %s", ws ? "WebSocket" : "TLS", why);
	drop(c, ws ? REASON_WS_HANDSHAKE_FAILED : REASON_HANDSHAKE_FAILED, reason);
	return false;
}

/* Takes one of the turn's handshake steps, or queues the connection behind
 * those already waiting (not watched meanwhile: level-triggered epoll would
 * report it every turn). False when deferred. */
static bool handshake_step_admitted(struct server *srv, struct conn *c)
{
	if (list_linked(&c->read_link))
		return false; /* already waiting (an EPOLLHUP cannot be masked) */
	/* A plain WebSocket upgrade is a parse and a write: no budget. */
	if (!server_listener_of(c)->tls)
		return true;
	if (srv->handshake_budget && list_empty(&conn_set_of(c)->handshake_wait)) {
		srv->handshake_budget--;
		return true;
	}
	loop_io_set(srv->loop, &c->io, 0);
	list_push_back(&conn_set_of(c)->handshake_wait, &c->read_link);
	loop_request_turn(srv->loop);
	return false;
}

static void handshake_step(struct server *srv, struct conn *c)
{
	if (c->state == CONN_HANDSHAKE && handshake(srv, c))
		conn_input_read(c); /* the client's CONNECT may already be decrypted */
}

void server_on_conn_io(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct conn *c = container_of(io, struct conn, io);
	struct server *srv = server_of(c);
	(void)l;
	if (c->state == CONN_CLOSING)
		return;
	if (c->state == CONN_HANDSHAKE) {
		if (!handshake_step_admitted(srv, c) || !handshake(srv, c))
			return;
		events |= LOOP_READ; /* the client's CONNECT may already be decrypted */
	}
	if (!conn_input_is_reading(c) && (events & LOOP_READ) && !(c->io.events & LOOP_READ)) {
		/* Readability that was not asked for is EPOLLHUP or EPOLLERR,
		 * which epoll reports whatever the mask: the peer is gone. Left
		 * alone it would be reported again at once, every turn. */
		drop(c, REASON_PEER_CLOSED, "peer closed the connection while its input was paused");
		return;
	}
	if ((events & LOOP_WRITE) && !outq_empty(&c->out))
		conn_mark_dirty(c);
	/* A TLS read can wait for writability (the transport says so in want).
	 * With output queued, want is the last writev's (TCP sets it after a
	 * short one): that EPOLLOUT is the flush's, and a read now would only
	 * hear EAGAIN. After the handshake mbed TLS 2.28 reads never wait for
	 * writability anyway (no renegotiation). */
	if ((events & LOOP_READ) ||
	    ((events & LOOP_WRITE) && (conn_t(c)->want & TRANSPORT_WANT_WRITE) && outq_empty(&c->out)))
		conn_input_read(c);
}

void server_tls_error(const char *file, size_t listener, const char *why, char *err, size_t errlen)
{
	/* tls.c says "<option>: <file>: <reason>"; the operator wants the key
	 * path of the configuration, like every other configuration error. */
	static const char *const keys[] = {"cert", "key", "ca", "ciphersuites", "min_version",
	                                   "session_ticket_lifetime", "session_cache_size", "hibernate_after"};
	for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
		size_t n = strlen(keys[k]);
		if (strncmp(why, keys[k], n) == 0 && why[n] == ':') {
			snprintf(err, errlen, "%s: listeners[%zu].tls.%s%s", file, listener, keys[k], why + n);
			return;
		}
	}
	snprintf(err, errlen, "%s: listeners[%zu].tls: %s", file, listener, why);
}

int server_tls_context(const struct config_listener *lc, struct tls_ctx **out, char *err, size_t errlen)
{
	struct tls_opts o;
	tls_opts_init(&o);
	o.cert_file = lc->tls.cert;
	o.key_file = lc->tls.key;
	o.ca_file = lc->tls.ca;
	o.require_peer_cert = lc->tls.require_certificate;
	o.ciphersuites = lc->tls.ciphersuites;
	if (lc->tls.min_version)
		o.min_version = lc->tls.min_version;
	o.session_tickets = lc->tls.session_tickets;
	o.session_lifetime = lc->tls.session_ticket_lifetime;
	o.session_cache_size = lc->tls.session_cache_size;
	o.hibernate_after = lc->tls.hibernate_after;
	return tls_ctx_new_server(&o, out, err, errlen);
}

int server_check_tls(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *lc = &cfg->listeners[i];
		if (!config_proto_is_tls(lc->protocol))
			continue;
		struct tls_ctx *ctx = NULL;
		char why[384];
		if (server_tls_context(lc, &ctx, why, sizeof why) != 0) {
			server_tls_error(cfg->path, i, why, err, errlen);
			return WISP_ECONFIG;
		}
		tls_ctx_unref(ctx);
	}
	return 0;
}


int server_check_listeners(const struct config *cfg, char *err, size_t errlen)
{
	/* The address each listener will bind, found as listener_open finds
	 * it: the first of its addresses no earlier listener holds. */
	struct sockaddr_storage *held = wisp_calloc(cfg->listener_count ? cfg->listener_count : 1, sizeof *held);
	size_t *holder = wisp_calloc(cfg->listener_count ? cfg->listener_count : 1, sizeof *holder);
	size_t nheld = 0;
	int rc = 0;
	if (!held || !holder) {
		snprintf(err, errlen, "out of memory");
		rc = WISP_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < cfg->listener_count && !rc; i++) {
		const struct config_listener *lc = &cfg->listeners[i];
		struct sockaddr_storage addrs[LISTENER_MAX_ADDRS];
		size_t n = 0;
		char why[384];
		if (listener_resolve(lc->bind, lc->port, addrs, LISTENER_MAX_ADDRS, &n, why, sizeof why) != 0) {
			snprintf(err, errlen, "%s: listeners[%zu].bind: %s", cfg->path, i, why);
			rc = WISP_ECONFIG;
			break;
		}
		if (lc->port == 0)
			continue; /* each gets its own port */
		size_t first_clash = SIZE_MAX;
		bool bound = false;
		for (size_t a = 0; a < n && !bound; a++) {
			size_t clash = SIZE_MAX;
			for (size_t h = 0; h < nheld && clash == SIZE_MAX; h++)
				if (listener_addrs_clash(&held[h], &addrs[a]))
					clash = h;
			if (clash == SIZE_MAX) {
				held[nheld] = addrs[a];
				holder[nheld++] = i;
				bound = true;
			} else if (first_clash == SIZE_MAX) {
				first_clash = clash;
			}
		}
		if (!bound && first_clash != SIZE_MAX) {
			char name[64];
			net_format_addr(&held[first_clash], name, sizeof name);
			snprintf(err, errlen, "%s: listeners[%zu].port: %s port %u: listeners[%zu] listens there (%s)",
				 cfg->path, i, lc->bind, (unsigned)lc->port, holder[first_clash], name);
			rc = WISP_ECONFIG;
		}
	}
out:
	wisp_free(held);
	wisp_free(holder);
	return rc;
}

int server_init(struct server *srv, struct loop *l, const struct config *cfg)
{
	memset(srv, 0, sizeof *srv);
	srv->loop = l;
	srv->cfg = cfg;
	list_init(&srv->conns.all);
	list_init(&srv->conns.dirty);
	list_init(&srv->conns.closing);
	list_init(&srv->conns.read_more);
	list_init(&srv->conns.read_later);
	list_init(&srv->conns.handshake_wait);
	list_init(&srv->housekeeping.link);
	srv->handshake_budget = HANDSHAKE_STEPS_PER_TURN;
	/* Large messages' blocks are reused, not faulted in afresh each time. */
	wisp_mem_tune_large_blocks();
	tls_hibernation_attach(l); /* idle TLS connections sleep on this loop's timers */
	srv->conns.in = (struct conn_input){
		.loop = l,
		.scratch = wisp_malloc(SCRATCH_SIZE),
		.scratch_cap = SCRATCH_SIZE,
		.max_packet_size = cfg->limits.max_packet_size,
		.max_connect_size = cfg->limits.max_connect_size,
		.max_unauth_bytes = cfg->limits.max_unauthenticated_bytes,
		.max_input_bytes = cfg->limits.max_input_bytes,
		.max_output = cfg->limits.max_output_buffer,
	};
	srv->listeners = wisp_calloc(cfg->listener_count ? cfg->listener_count : 1, sizeof *srv->listeners);
	if (!srv->conns.in.scratch || !srv->listeners)
		return WISP_ENOMEM;
	return 0;
}

int server_listen(struct server *srv, char *err, size_t errlen)
{
	const struct config *cfg = srv->cfg;
	for (size_t i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *lc = &cfg->listeners[i];
		struct server_listener *bl = &srv->listeners[i];
		bl->srv = srv;
		bl->origin.set = &srv->conns;
		bl->cfg = lc;
		bl->allow_anonymous = lc->allow_anonymous;
		bl->use_identity_as_username = lc->tls.use_identity_as_username;
		bl->net.io.fd = -1;
		if (lc->protocol == CONFIG_PROTO_HTTP) {
			/* Opened and served by http/ (main.c wires it). */
			srv->listener_count = i + 1;
			continue;
		}
		if (config_proto_is_ws(lc->protocol)) {
			bl->ws = true;
			bl->ws_opts = (struct ws_opts){
				.http = {.max_head_bytes = lc->max_header_bytes, .max_headers = lc->max_headers},
				.max_frame_size = lc->max_frame_size ? lc->max_frame_size : cfg->limits.max_packet_size,
				.path = lc->path,
				.subprotocols = mqtt_ws_subprotocols,
				.trust_proxy = lc->trust_proxy,
				.frame_per_message = lc->frame_per_packet ? mqtt_message_size : NULL,
			};
		}
		if (config_proto_is_tls(lc->protocol)) {
			char why[384];
			if (server_tls_context(lc, &bl->tls, why, sizeof why) != 0) {
				server_tls_error(cfg->path, i, why, err, errlen);
				return WISP_ECONFIG;
			}
		}
		srv->listener_count = i + 1;
		char why[384];
		int rc = listener_open(&bl->net, srv->loop, lc->bind, lc->port, on_accept, bl, why, sizeof why);
		if (rc != 0) {
			snprintf(err, errlen, "%s: listeners[%zu].%s: %s", cfg->path, i,
				 rc == WISP_EINVAL ? "bind" : "port", why);
			return rc;
		}
		listener_set_handshake_caps(&bl->net, lc->max_handshakes, lc->max_handshakes_per_address);
		static const char *const proto_names[] = {"mqtt", "mqtts", "ws", "wss"};
		log_msg(LOG_NOTICE, "main", "listening on %s (%s)", bl->net.name,
			(size_t)lc->protocol < sizeof proto_names / sizeof proto_names[0] ? proto_names[lc->protocol] : "?");
	}
	loop_set_before_sleep(srv->loop, before_sleep, srv);
	return 0;
}

void server_shutdown(struct server *srv)
{
	struct list_node *n, *tmp;
	if (!srv->loop)
		return;
	list_for_each_safe(n, tmp, &srv->conns.all) {
		struct conn *c = container_of(n, struct conn, all_link);
		if (c->state != CONN_CLOSING)
			drop(c, REASON_SHUTDOWN, NULL);
	}
	before_sleep(srv->loop, srv);
	loop_timer_stop(srv->loop, &srv->housekeeping);
}

void server_free(struct server *srv)
{
	for (size_t i = 0; i < srv->listener_count; i++) {
		listener_close(&srv->listeners[i].net, srv->loop);
		if (srv->listeners[i].tls)
			tls_ctx_unref(srv->listeners[i].tls);
	}
	wisp_free(srv->listeners);
	wisp_free(srv->conns.in.scratch);
	memset(srv, 0, sizeof *srv);
}
