/*
 * Broker lifecycle: listeners and accepted connections (with the TLS
 * handshake caps), the per-turn flush of coalesced output, the per-turn
 * budget of TLS handshake steps, deferred freeing of closed connections,
 * the connect-timeout / keepalive timer, and a housekeeping timer that runs
 * only while log summaries or a heap trim are due.
 */
#include "broker.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "sys.h"
#include "err.h"
#include "log.h"

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

const char *broker_conn_name(const struct conn *c)
{
	return c->sess ? c->sess->client_id : conn_peer(c);
}

/* Connect timeout before CONNECT, keepalive after: both end the connection. */
static void on_timer(struct loop *l, struct loop_timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);
	struct broker *b = ((struct broker_listener *)c->listener)->b;
	(void)l;
	if (c->state == CONN_ACTIVE && c->output_state == CONN_OUT_STALLED) {
		char reason[128];
		snprintf(reason, sizeof reason, "output over limits.max_output_buffer for %u s (%zu bytes unsent)",
			 b->cfg->limits.output_buffer_timeout, c->out.bytes);
		b->stats.output_stalled++;
		broker_drop(b, c, false, reason);
	} else if (c->state == CONN_ACTIVE) {
		b->stats.keepalive_expired++;
		broker_drop(b, c, false, "keepalive expired");
	} else {
		broker_drop(b, c, false,
			    c->state == CONN_HANDSHAKE ? "TLS handshake timed out" : "no CONNECT within the connect timeout");
	}
}

void broker_handshake_end(struct conn *c)
{
	struct broker_listener *bl = c->listener;
	listener_handshake_end(&bl->net, c->peer.family, c->peer.addr);
}

/* A TLS connection takes a handshake slot of its listener and source
 * address; false (counted, logged within the rate limit) when a cap is full. */
static bool handshake_admitted(struct broker_listener *bl, const struct conn_addr *addr, const char *peer)
{
	enum listener_hs_verdict v = listener_handshake_begin(&bl->net, addr->family, addr->addr);
	if (v == LISTENER_HS_OK)
		return true;
	bl->b->stats.handshakes_refused++;
	if (v == LISTENER_HS_LISTENER_FULL)
		log_limited("refused: TLS handshake limit", LOG_WARNING, "conn",
			    "%s: refusing %s: %u TLS handshakes under way (max_handshakes)", bl->net.name, peer,
			    bl->net.hs.count);
	else if (v == LISTENER_HS_ADDRESS_FULL)
		log_limited("refused: TLS handshakes per address", LOG_WARNING, "conn",
			    "%s: refusing %s: %u TLS handshakes under way from that address "
			    "(max_handshakes_per_address)", bl->net.name, peer, bl->net.hs.max_per_address);
	else
		log_limited("refused: out of memory", LOG_WARNING, "conn", "%s: refusing %s: out of memory",
			    bl->net.name, peer);
	return false;
}

static void on_accept(struct listener *ls, int fd, const struct sockaddr *sa, void *ctx)
{
	struct conn_addr addr;
	conn_addr_set(&addr, sa);
	const char *peer = conn_format_addr(&addr);
	struct broker_listener *bl = ctx;
	struct broker *b = bl->b;
	const struct config_limits *lim = &b->cfg->limits;
	(void)ls;
	if ((lim->max_connections && b->conns.count >= lim->max_connections) ||
	    (bl->cfg->max_connections && bl->conn_count >= bl->cfg->max_connections)) {
		b->stats.conns_refused++;
		log_limited("refused: connection limit", LOG_WARNING, "conn",
			    "%s: refusing %s: connection limit reached (%s)", bl->net.name, peer,
			    lim->max_connections && b->conns.count >= lim->max_connections
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
		b->stats.conns_refused++;
		log_limited("refused: memory_limit", LOG_WARNING, "conn",
			    "%s: refusing %s: heap over 15/16 of limits.memory_limit (%zu of %llu bytes)", bl->net.name,
			    peer, wisp_mem_used(), (unsigned long long)lim->memory_limit);
		close(fd);
		return;
	}
	if (bl->tls && !handshake_admitted(bl, &addr, peer)) {
		close(fd);
		return;
	}
	struct transport *t = NULL; /* plain TCP: embedded in the connection */
	if (bl->tls && !(t = tls_transport_new(bl->tls, fd))) {
		listener_handshake_end(&bl->net, addr.family, addr.addr);
		log_limited("refused: out of memory", LOG_WARNING, "conn", "%s: refusing %s: out of memory",
			    bl->net.name, peer);
		return;
	}
	struct conn *c = conn_new(&b->conns, t, fd, bl, sa);
	if (!c) {
		if (bl->tls)
			listener_handshake_end(&bl->net, addr.family, addr.addr);
		log_limited("refused: out of memory", LOG_WARNING, "conn", "%s: refusing %s: out of memory",
			    bl->net.name, peer);
		return;
	}
	if (loop_io_start(b->loop, &c->io, fd, LOOP_READ, broker_on_conn_io) != 0) {
		if (bl->tls)
			broker_handshake_end(c);
		log_limited("refused: cannot watch socket", LOG_WARNING, "conn",
			    "%s: refusing %s: cannot watch socket", bl->net.name, peer);
		c->state = CONN_CLOSING;
		conn_free(c);
		return;
	}
	bl->conn_count++;
	c->state = bl->tls ? CONN_HANDSHAKE : CONN_AWAIT_CONNECT;
	/* One deadline covers the TLS handshake and the CONNECT after it, so a
	 * client that stalls anywhere before CONNACK is dropped in time. */
	loop_timer_start(b->loop, &c->timer, lim->connect_timeout, on_timer);
	log_msg(LOG_DEBUG, "conn", "new connection from %s on %s", peer, bl->net.name);
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
static void check_output_bound(struct broker *b, struct conn *c)
{
	bool over = conn_output_bytes(c) >= b->dlim.max_output;
	if (!over) {
		if (c->output_state == CONN_OUT_STALLED) {
			if (c->keepalive)
				loop_timer_start(b->loop, &c->timer, ((uint64_t)c->keepalive * 3u + 1u) / 2u, on_timer);
			else
				loop_timer_stop(b->loop, &c->timer);
		}
		broker_resume_output_paused(b, c);
		return;
	}
	if (c->output_state == CONN_OUT_STALLED || c->state != CONN_ACTIVE)
		return;
	c->output_state = CONN_OUT_STALLED;
	loop_io_set(b->loop, &c->io, c->io.events & LOOP_WRITE);
	loop_timer_start(b->loop, &c->timer, b->cfg->limits.output_buffer_timeout, on_timer);
	log_msg(LOG_DEBUG, "conn", "client %s: %zu bytes unsent, over max_output_buffer: not reading it",
		broker_conn_name(c), c->out.bytes);
}

/* Flush once per turn: every delivery queued during the turn goes out in as
 * few writev calls as the socket allows. EPOLLOUT is armed only for
 * connections that could not write everything. */
static void flush_conn(struct broker *b, struct conn *c)
{
	size_t before = c->out.bytes;
	int rc = outq_flush(&c->out, c->t);
	b->stats.bytes_sent += before - c->out.bytes;
	if (rc != 0 && rc != WISP_EAGAIN) {
		broker_drop(b, c, false, "write error");
		return;
	}
	/* Room again in the output: queued QoS 1/2 messages move on. Pumping
	 * marks the connection dirty, so the loop in before_sleep flushes it
	 * again this turn. */
	if (c->sess && c->sess->queued_count && c->out.bytes < b->dlim.max_output &&
	    delivery_pump(c->sess, &b->dlim))
		return;
	check_output_bound(b, c);
	bool reading = !c->read_paused && c->output_state == CONN_OUT_OK;
	uint32_t ev = reading ? LOOP_READ : 0;
	if (rc == WISP_EAGAIN) {
		ev |= LOOP_WRITE;
		if (c->t->want & TRANSPORT_WANT_READ)
			ev |= LOOP_READ;
	}
	if (ev != c->io.events)
		loop_io_set(b->loop, &c->io, ev);
}

/* Runs while something is due: suppressed log lines to report, or TLS
 * memory freed that the heap should give back. Once a second at most, so a
 * trim (a walk of the heap) never runs per connection. */
static void housekeeping(struct loop *l, struct loop_timer *t)
{
	struct broker *b = container_of(t, struct broker, housekeeping);
	log_limit_flush();
	wisp_mem_trim(TRIM_AFTER_BYTES);
	if (log_limit_pending() || wisp_mem_untrimmed() >= TRIM_AFTER_BYTES)
		loop_timer_start(l, &b->housekeeping, 1, housekeeping);
}

/* Moves every node of `from` to the empty list `to`, in O(1). */
static void take_all(struct list_node *from, struct list_node *to)
{
	if (list_empty(from)) {
		list_init(to);
		return;
	}
	to->next = from->next;
	to->prev = from->prev;
	to->next->prev = to;
	to->prev->next = to;
	list_init(from);
}

static void before_sleep(struct loop *l, void *ctx)
{
	struct broker *b = ctx;
	(void)l;
	struct list_node *n;
	/* What the I/O phase left of the turn's handshake budget goes to the
	 * oldest deferred handshakes; the budget is renewed for the next turn. */
	while (b->handshake_budget && (n = list_first(&b->conns.handshake_wait)) != NULL) {
		struct conn *c = container_of(n, struct conn, read_link);
		list_remove(n);
		b->handshake_budget--;
		broker_handshake_step(b, c);
	}
	if (!list_empty(&b->conns.handshake_wait))
		loop_request_turn(b->loop);
	b->handshake_budget = HANDSHAKE_STEPS_PER_TURN;
	broker_sub_turn(b);
	while ((n = list_first(&b->conns.read_more)) != NULL) {
		struct conn *c = container_of(n, struct conn, read_link);
		list_remove(n);
		broker_read_more(b, c);
	}
	/* The turn's records reach the OS before the acks that vouch for them
	 * are queued (persist.c holds those until then); everything else
	 * flows even while the disk fails. A flush that makes room moves
	 * queued QoS 1/2 messages into flight, appending their records: they
	 * are written before the next round sends those PUBLISHes, so after
	 * kill -9 a message on the wire is re-sent as a re-delivery, with DUP
	 * and its packet id [MQTT-4.4.0-1], not as a new one. */
	do {
		persist_flush(b);
		struct list_node round;
		take_all(&b->conns.dirty, &round);
		while ((n = list_first(&round)) != NULL) {
			struct conn *c = container_of(n, struct conn, work_link);
			list_remove(n);
			flush_conn(b, c);
		}
	} while (!list_empty(&b->conns.dirty));
	while ((n = list_first(&b->conns.closing)) != NULL) {
		struct conn *c = container_of(n, struct conn, work_link);
		/* Best effort: a refusing CONNACK or the last acks may still fit. */
		if (!outq_empty(&c->out))
			outq_flush(&c->out, c->t);
		((struct broker_listener *)c->listener)->conn_count--;
		conn_free(c);
	}
	if (!loop_timer_armed(&b->housekeeping) &&
	    (log_limit_pending() || wisp_mem_untrimmed() >= TRIM_AFTER_BYTES))
		loop_timer_start(b->loop, &b->housekeeping, 1, housekeeping);
}

static void release_retained(void *value) { msg_unref(value); }

static void release_session(struct session *s)
{
	acl_client_free(s->acl);
	s->acl = NULL;
}

void broker_tls_error(const char *file, size_t listener, const char *why, char *err, size_t errlen)
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

int broker_tls_context(const struct config_listener *lc, struct tls_ctx **out, char *err, size_t errlen)
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

int broker_check_tls(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *lc = &cfg->listeners[i];
		if (lc->protocol != CONFIG_PROTO_MQTTS)
			continue;
		struct tls_ctx *ctx = NULL;
		char why[384];
		if (broker_tls_context(lc, &ctx, why, sizeof why) != 0) {
			broker_tls_error(cfg->path, i, why, err, errlen);
			return WISP_ECONFIG;
		}
		tls_ctx_unref(ctx);
	}
	return 0;
}

int broker_init(struct broker *b, struct loop *l, const struct config *cfg, char *err, size_t errlen)
{
	memset(b, 0, sizeof *b);
	b->loop = l;
	b->cfg = cfg;
	list_init(&b->conns.all);
	list_init(&b->conns.dirty);
	list_init(&b->conns.closing);
	list_init(&b->conns.read_more);
	list_init(&b->conns.handshake_wait);
	list_init(&b->housekeeping.link);
	b->handshake_budget = HANDSHAKE_STEPS_PER_TURN;
	log_set_rate_limit(cfg->log.rate_limit, cfg->log.rate_burst);
	list_init(&b->sub_work.waiting);
	b->dlim = (struct delivery_limits){
		.max_inflight = cfg->limits.max_inflight ? cfg->limits.max_inflight : 1,
		.max_queued = cfg->limits.max_queued_messages,
		.max_queued_bytes = cfg->limits.max_queued_bytes,
		.max_output = cfg->limits.max_output_buffer,
		.max_queued_bytes_total = cfg->limits.max_queued_bytes_total,
	};
	b->subs = tree_new();
	b->retained = retained_new(release_retained, cfg->limits.max_retained, cfg->limits.max_retained_bytes);
	b->scratch_cap = SCRATCH_SIZE;
	b->scratch = wisp_malloc(b->scratch_cap);
	b->listeners = wisp_calloc(cfg->listener_count, sizeof *b->listeners);
	if (!b->subs || !b->retained || !b->scratch || !b->listeners || sess_table_init(&b->sessions) != 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	b->sessions.on_free = release_session;
	if (auth_load(cfg, &b->auth, err, errlen) != 0)
		goto fail;
	b->bg = bg_new(l, AUTH_MAX_PENDING, AUTH_VERIFY_THREADS);
	if (!b->bg) {
		snprintf(err, errlen, "cannot start the background thread");
		goto fail;
	}
	if (persist_open(b, err, errlen) != 0)
		goto fail;
	tls_hibernation_attach(l);
	for (size_t i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *lc = &cfg->listeners[i];
		struct broker_listener *bl = &b->listeners[i];
		bl->b = b;
		bl->cfg = lc;
		bl->allow_anonymous = lc->allow_anonymous;
		bl->use_identity_as_username = lc->tls.use_identity_as_username;
		bl->net.io.fd = -1;
		if (lc->protocol == CONFIG_PROTO_MQTTS) {
			char why[384];
			if (broker_tls_context(lc, &bl->tls, why, sizeof why) != 0) {
				broker_tls_error(cfg->path, i, why, err, errlen);
				goto fail;
			}
		}
		b->listener_count = i + 1;
		int rc = listener_open(&bl->net, l, lc->bind, lc->port, on_accept, bl, err, errlen);
		if (rc != 0)
			goto fail;
		listener_set_handshake_caps(&bl->net, lc->max_handshakes, lc->max_handshakes_per_address);
		log_msg(LOG_NOTICE, "main", "listening on %s (%s)", bl->net.name, bl->tls ? "mqtts" : "mqtt");
	}
	loop_set_before_sleep(l, before_sleep, b);
	sys_start(b);
	return 0;
fail:
	broker_free(b);
	return WISP_EINVAL;
}

void broker_free(struct broker *b)
{
	struct list_node *n, *tmp;
	if (b->loop)
		sys_stop(b);
	list_for_each_safe(n, tmp, &b->conns.all) {
		struct conn *c = container_of(n, struct conn, all_link);
		if (c->state != CONN_CLOSING) {
			/* Shutting down is not the clients' fault: wills stay unsent,
			 * as after a DISCONNECT. */
			broker_drop(b, c, true, "broker shutting down");
		}
	}
	if (b->loop) {
		before_sleep(b->loop, b);
		loop_timer_stop(b->loop, &b->housekeeping);
	}
	bg_free(b->bg); /* after the drops: finished jobs find no connection */
	persist_close(b); /* before the sessions go: their end is not a change to record */
	auth_release(&b->auth);
	for (size_t i = 0; i < b->listener_count; i++) {
		listener_close(&b->listeners[i].net, b->loop);
		if (b->listeners[i].tls)
			tls_ctx_unref(b->listeners[i].tls);
	}
	if (b->sessions.buckets)
		sess_table_free(&b->sessions, b->subs);
	retained_free(b->retained);
	tree_free(b->subs);
	wisp_free(b->listeners);
	wisp_free(b->scratch);
	wisp_free(b->route);
	outq_release_cache();
	memset(b, 0, sizeof *b);
}

void broker_drop(struct broker *b, struct conn *c, bool graceful, const char *reason)
{
	if (c->state == CONN_CLOSING)
		return;
	struct session *s = c->sess;
	/* Each of these a client can cause at will: rate limited per kind. */
	if (c->state == CONN_ACTIVE)
		log_limited(graceful ? "client disconnected" : "client disconnected abnormally",
			    graceful ? LOG_INFO : LOG_NOTICE, "conn", "client %s (%s) disconnected: %s",
			    broker_conn_name(c), conn_peer(c), reason);
	else
		log_limited(c->state == CONN_HANDSHAKE ? "closed during the TLS handshake"
						       : "closed before CONNECT",
			    LOG_NOTICE, "conn", "connection from %s closed: %s", conn_peer(c), reason);
	if (c->state == CONN_HANDSHAKE) {
		b->stats.handshakes_failed++;
		broker_handshake_end(c);
	}
	struct msg *will = c->will;
	c->will = NULL;
	auth_forget_conn(c);
	persist_forget_conn(b, c);
	broker_sub_forget_conn(b, c);
	if (s) {
		s->conn = NULL;
		c->sess = NULL;
		if (s->clean)
			sess_destroy(&b->sessions, b->subs, s);
	}
	conn_close(b->loop, c);
	if (will) {
		if (!graceful) {
			struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
			int n = topic_split(msg_topic(will), will->topic_len, levels, TOPIC_MAX_LEVELS_HARD);
			if (will->retain)
				broker_retain(b, will);
			if (n > 0)
				broker_route(b, will, levels, (size_t)n);
		}
		msg_unref(will);
	}
}
