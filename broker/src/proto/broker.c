/*
 * Broker lifecycle: builds the state the protocol joins (subscription
 * tree, retained store, sessions, auth, store) around a server
 * (server/server.h: listeners, connections, flush), and ends connections in
 * one place (broker_drop).
 */
#include "broker.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "input.h"
#include "session_v5.h"
#include "sys.h"
#include "err.h"
#include "flight.h"
#include "log.h"

/* The server's turn hooks: SUBSCRIBE work left from earlier turns, and the
 * turn's records written before the flush that sends their acks. */
static void on_turn(void *ctx) { broker_sub_turn(ctx); }
static void before_flush(void *ctx) { persist_flush(ctx); }

/* on_close of session/input.h. */
static void on_close(void *ctx, struct conn *c, enum reason r, const char *detail)
{
	broker_drop(ctx, c, r, detail);
}

const char *broker_conn_name(const struct conn *c)
{
	return c->sess ? c->sess->client_id : conn_peer(c);
}

static void release_retained(void *value) { msg_unref(value); }

static void release_session(struct session *s)
{
	session_v5_free(s);
	acl_client_free(s->acl);
	s->acl = NULL;
}

int broker_init(struct broker *b, struct loop *l, const struct config *cfg, char *err, size_t errlen)
{
	memset(b, 0, sizeof *b);
	b->loop = l;
	b->cfg = cfg;
	log_set_rate_limit(cfg->log.rate_limit, cfg->log.rate_burst);
	list_init(&b->sub_work.waiting);
	b->dlim = (struct delivery_limits){
		.max_inflight = cfg->limits.max_inflight ? cfg->limits.max_inflight : 1,
		.max_queued = cfg->limits.max_queued_messages,
		.max_queued_bytes = cfg->limits.max_queued_bytes,
		.max_output = cfg->limits.max_output_buffer,
		.max_queued_bytes_total = cfg->limits.max_queued_bytes_total,
		.totals = &b->route.totals,
		.observer = &b->observer,
		.clock = l,
		.on_drop = broker_delivery_dropped,
		.drop_ctx = b,
		.send_pubrel = persist_send_pubrel,
		.pubrel_ctx = b,
	};
	b->subs = tree_new();
	route_init(&b->route, b->subs);
	b->router = &b->route.router;
	b->retained = retained_new(release_retained, cfg->limits.max_retained, cfg->limits.max_retained_bytes);
	int srv_rc = server_init(&b->srv, l, cfg);
	b->srv.conns.in.on_packet = broker_on_packet;
	b->srv.conns.in.on_close = on_close;
	b->srv.conns.in.ctx = b;
	b->srv.dlim = &b->dlim;
	b->srv.turn = on_turn;
	b->srv.before_flush = before_flush;
	b->srv.hook_ctx = b;
	if (!b->subs || !b->retained || srv_rc != 0 || sess_table_init(&b->sessions) != 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	b->sessions.on_free = release_session;
	b->sessions.on_end = route_share_session_end;
	b->sessions.dlim = &b->dlim;
	if (auth_load(cfg, &b->auth, err, errlen) != 0)
		goto fail;
	b->bg = bg_new(l, AUTH_MAX_PENDING, AUTH_VERIFY_THREADS);
	if (!b->bg) {
		snprintf(err, errlen, "cannot start the background thread");
		goto fail;
	}
	if (persist_open(b, err, errlen) != 0)
		goto fail;
	/* An http listener serving a dashboard (opened by http/, which main.c
	 * wires) needs the table of recently published topics. */
	for (size_t i = 0; i < cfg->listener_count && !b->activity; i++) {
		const struct config_listener *lc = &cfg->listeners[i];
		if (lc->protocol == CONFIG_PROTO_HTTP && lc->http.dashboard &&
		    !(b->activity = activity_new(cfg->dashboard.max_topics, cfg->dashboard.max_value_bytes))) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	if (server_listen(&b->srv, err, errlen) != 0)
		goto fail;
	sys_start(b);
	return 0;
fail:
	broker_free(b);
	return WISP_EINVAL;
}

void broker_free(struct broker *b)
{
	if (b->loop)
		sys_stop(b);
	/* Shutting down is not the clients' fault: wills stay unsent, as after
	 * a DISCONNECT (REASON_SHUTDOWN keeps them). */
	server_shutdown(&b->srv);
	bg_free(b->bg); /* after the drops: finished jobs find no connection */
	persist_close(b); /* before the sessions go: their end is not a change to record */
	auth_release(&b->auth);
	if (b->sessions.buckets)
		sess_table_free(&b->sessions, b->subs);
	share_table_free(&b->route.shares, b->subs); /* before the tree its groups are filed in */
	retained_free(b->retained);
	activity_free(b->activity);
	tree_free(b->subs);
	server_free(&b->srv);
	route_free(&b->route);
	outq_release_cache();
	flight_release_cache();
	sess_qos_release_cache();
	msg_release_cache();
	memset(b, 0, sizeof *b);
}

void broker_drop(struct broker *b, struct conn *c, enum reason r, const char *detail)
{
	if (c->state == CONN_CLOSING)
		return;
	/* A drop during a delivery (it may free a session routing still
	 * holds, and publish a will) waits until the delivery loop is over. */
	if (route_defer_drop(b, c, r, detail))
		return;
	if (c->outbound)
		b->outbound->on_drop(b->outbound_ctx, c, r, detail);
	struct session *s = c->sess;
	const struct reason_info *ri = reason_info(r);
	bool graceful = r == REASON_CLIENT_DISCONNECT || r == REASON_CLIENT_DISCONNECT_WILL || r == REASON_SHUTDOWN;
	const char *reason = detail ? detail : ri->text;
	b->stats.reasons[r]++;
	broker_answer_reason(b, c, r);
	/* Each of these a client can cause at will: rate limited per kind. */
	if (c->state == CONN_ACTIVE)
		log_limited(graceful ? "client disconnected" : "client disconnected abnormally",
			    graceful ? LOG_INFO : LOG_NOTICE, "conn", "client %s (%s) disconnected: %s",
			    broker_conn_name(c), conn_peer(c), reason);
	else
		log_limited(c->state != CONN_HANDSHAKE	       ? "closed before CONNECT"
			    : ws_transport_inner_ready(conn_t(c)) ? "closed during the WebSocket handshake"
							      : "closed during the TLS handshake",
			    LOG_NOTICE, "conn", "connection from %s closed: %s", conn_peer(c), reason);
	if (c->state == CONN_HANDSHAKE) {
		/* The TLS part of a wss handshake counts as TLS; the
		 * WebSocket part is counted by ws.c ($SYS/broker/ws/). */
		if (server_listener_of(c)->tls && !ws_transport_inner_ready(conn_t(c)))
			b->srv.stats.handshakes_failed++;
		server_handshake_end(c);
	}
	struct msg *will = conn_will(c);
	if (will) {
		c->rare->will = NULL;
		conn_rare_trim(c);
	}
	if (will && (ri->flags & REASON_F_KEEP_WILL)) {
		msg_unref(will); /* [MQTT-3.1.2-10] */
		will = NULL;
		/* A stored will is discarded with it; one kept through a shutdown
		 * goes out after the restart unless its client comes back. */
		if (s && r == REASON_CLIENT_DISCONNECT)
			SESS_OBSERVE(&b->observer, will_del, s);
	}
	auth_forget_conn(c);
	persist_forget_conn(b, c);
	if (b->on_conn_gone)
		b->on_conn_gone(b->client_connected_ctx, c);
	broker_sub_forget_conn(b, c);
	bool offline = false;
	if (s) {
		s->conn = NULL;
		c->sess = NULL;
		if (s->clean)
			sess_destroy(&b->sessions, b->subs, s);
		else
			offline = true;
		/* Its unacknowledged shared-subscription messages go to a member
		 * still connected (a shutdown leaves them: nobody is). */
		if (offline && r != REASON_SHUTDOWN)
			route_share_hand_over(b, s, NULL);
	}
	conn_close(b->loop, c);
	if (offline) {
		/* The will waits for its delay, or the session's end, whichever
		 * is first [MQTT-3.1.3-9] (no delay: now). */
		session_v5_offline(b, s, will);
	} else if (will) {
		broker_publish_will(b, will);
		msg_unref(will);
	}
}

/* The will as it is published: a Message Expiry Interval it carries
 * starts now (section 3.1.3.2.4) and is forwarded as the time
 * left, like a PUBLISH's. The will itself when it has none (no copy);
 * NULL when out of memory. */
static struct msg *will_message(struct broker *b, struct msg *will)
{
	struct mqtt_prop expiry;
	struct mqtt_props props = {.raw = {msg_props(will), will->props_len}};
	if (!will->props_len || !mqtt_props_find(&props, MQTT_PROP_MESSAGE_EXPIRY, &expiry))
		return will;
	props.present = MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY);
	struct msg_spec spec = {
		.topic = msg_topic(will),
		.topic_len = will->topic_len,
		.props_len = mqtt_props_filter(&props, BROKER_PROPS_NOT_FORWARDED, NULL),
		.payload = msg_payload(will),
		.payload_len = will->payload_len,
		.qos = will->qos,
		.retain = will->retain,
		.expires_at = loop_now_s(b->loop) + expiry.value,
		.origin = will->origin,
	};
	struct msg *m = msg_create(&spec);
	if (m && spec.props_len)
		mqtt_props_filter(&props, BROKER_PROPS_NOT_FORWARDED, msg_props_mut(m));
	return m;
}

void broker_publish_will(struct broker *b, struct msg *given)
{
	struct msg *will = will_message(b, given);
	if (!will) {
		broker_count_drop(b, DROP_NO_MEMORY);
		return;
	}
	struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
	int n = topic_split(msg_topic(will), will->topic_len, levels, TOPIC_MAX_LEVELS_HARD);
	if (will->retain)
		broker_retain(b, will);
	if (n > 0)
		broker_route(b, will, levels, (size_t)n);
	if (will != given)
		msg_unref(will);
}
