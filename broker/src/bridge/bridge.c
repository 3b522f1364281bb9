/*
 * The bridges of bridge.h: the CONNECT and CONNACK of a bridge, SUBSCRIBE,
 * PINGREQ and the topic mapping. Reaching the remote (addresses, name
 * resolution off the loop, dial, TLS, the reconnect backoff) is the client
 * engine's connector (client/connector.h); everything a message needs
 * once the connection is up (delivery, acknowledgements, the store) is
 * the broker's own machinery, reached through the session.
 */
#include "bridge.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acl.h"
#include "alloc.h"
#include "auth.h"
#include "bg.h"
#include "broker.h"
#include "connector.h"
#include "err.h"
#include "log.h"
#include "mtimer.h"
#include "session_v5.h"
#include "tls.h"
#include "topic.h"

/* What one topic rule needs at run time: its filters on either side. */
struct bridge_rule {
	const struct config_bridge_topic *cfg;
	char *local_filter;  /* local_prefix + pattern */
	char *remote_filter; /* remote_prefix + pattern */
	size_t local_prefix_len, remote_prefix_len;
	bool out, in;
};

enum bridge_state {
	BRIDGE_WAITING = 0,    /* the connector at work, or its backoff */
	BRIDGE_CONNECTING = 1, /* CONNECT sent, no CONNACK yet */
	BRIDGE_UP = 2,
};

/* A QoS 0 message waiting for the remote (queue_qos0). */
struct qos0_item {
	struct list_node link;
	struct msg *msg; /* our reference; under its remote topic */
};

struct bridge {
	struct bridges *set;
	const struct config_bridge *cfg;
	struct broker_bridge_stat *stat;
	struct server_listener listener; /* the stand-in its connection names */
	struct session *s;
	struct conn *conn;       /* from BRIDGE_CONNECTING on; NULL otherwise */
	struct bridge_rule *rules;
	size_t rule_count;
	struct connector cn;     /* the way to the remote's addresses */
	struct tls_ctx **tls;    /* per address (its name in the certificate); NULL: plain TCP */
	size_t addr_count;
	struct loop_timer timer; /* the PINGREQ interval */
	struct list_node qos0;   /* queue_qos0: QoS 0 waiting for the remote, oldest first */
	uint32_t qos0_count;
	uint64_t qos0_bytes;
	struct loop_timer qos0_timer; /* the next turn's share of qos0 once up */
	uint8_t state;           /* enum bridge_state */
	uint8_t remote_max_qos;  /* from the last v5 CONNACK; 2 until one says less */
	uint16_t next_packet_id; /* for SUBSCRIBE (publishes use the session's) */
	char *topic_buf;         /* an inbound topic under its local name */
	size_t topic_cap;
	char last_error[160];
};

struct bridges {
	struct broker *b;
	struct bridge *v;
	struct broker_bridge_stat *stats; /* the broker's bridge_stats */
	size_t n;
	struct mtimers *timers;           /* the connectors' deadlines and backoffs */
	struct bg *bg;                    /* the connectors' name lookups */
};

/* Lookups run on the bridges' own helper threads, not the broker's
 * password-hashing ones: a name server that does not answer holds a
 * thread until getaddrinfo gives up, and must not delay logins. Each
 * connector has at most one lookup out, so one thread per bridge (up to
 * this many) keeps one bridge's dead name from delaying another's. */
#define BRIDGE_RESOLVE_THREADS 4u

static void set_error(struct bridge *br, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct bridge *br, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(br->last_error, sizeof br->last_error, fmt, ap);
	va_end(ap);
}

static struct bridge *bridge_of_conn(struct bridges *bs, const struct conn *c)
{
	for (size_t i = 0; i < bs->n; i++)
		if (bs->v[i].conn == c)
			return &bs->v[i];
	return NULL;
}

static struct bridge *bridge_of_session(struct bridges *bs, const struct session *s)
{
	for (size_t i = 0; i < bs->n; i++)
		if (bs->v[i].s == s)
			return &bs->v[i];
	return NULL;
}

/* ---- the connection ---- */

static const struct connector_addr *remote(const struct bridge *br)
{
	return connector_addr(&br->cn, connector_current(&br->cn));
}

/* connector_opts.on_failed: this address is done, the next waits for the
 * backoff. */
static void attempt_failed(struct connector *cn, size_t addr, int err, const char *why, void *ud)
{
	struct bridge *br = ud;
	const struct connector_addr *a = connector_addr(cn, addr);
	(void)err;
	set_error(br, "%s", why);
	log_msg(LOG_NOTICE, "bridge", "bridge %s: %s:%u: %s", br->cfg->name, a->host, (unsigned)a->port,
		br->last_error);
	br->state = BRIDGE_WAITING;
	br->stat->connected = 0;
	connector_retry(cn, true);
}

static void connect_now(struct bridge *br)
{
	br->state = BRIDGE_WAITING;
	int rc = connector_dial(&br->cn);
	if (rc != 0)
		attempt_failed(&br->cn, connector_current(&br->cn), rc, connector_why(&br->cn), br);
}

static void send_connect(struct bridge *br, struct conn *c)
{
	const struct config_bridge *cfg = br->cfg;
	uint8_t props[16];
	size_t poff = 0;
	bool v5 = cfg->protocol_version == MQTT_PROTO_V5;
	const char *id = cfg->client_id ? cfg->client_id : cfg->name;
	struct mqtt_connect cp = {
		.version = v5 ? MQTT_PROTO_V5 : MQTT_PROTO_V311,
		.clean_start = cfg->clean_start,
		.keepalive = (uint16_t)cfg->keepalive,
		.client_id = {(const uint8_t *)id, strlen(id)},
		.has_username = cfg->username != NULL,
		.username = {(const uint8_t *)cfg->username, cfg->username ? strlen(cfg->username) : 0},
		.has_password = cfg->password != NULL,
		.password = {(const uint8_t *)cfg->password, cfg->password ? strlen(cfg->password) : 0},
	};
	if (v5) {
		/* A kept session at the remote outlives the connection: for
		 * session_expiry seconds, or (0 with clean_start false) for
		 * good, as a 3.1.1 clean session 0 does. */
		uint32_t expiry = cfg->session_expiry ? cfg->session_expiry : (cfg->clean_start ? 0 : UINT32_MAX);
		if (expiry)
			mqtt_props_put_u32(props, sizeof props, &poff, MQTT_PROP_SESSION_EXPIRY, expiry);
		cp.props.raw = (struct mqtt_str){props, poff};
	}
	size_t cap = connector_connect_size(&cp);
	uint8_t *buf = wisp_malloc(cap);
	ssize_t n = buf ? connector_encode_connect(buf, cap, &cp, !v5 && cfg->try_private) : 0;
	if (n <= 0) {
		bool nomem = !buf;
		wisp_free(buf);
		set_error(br, "%s", nomem ? "out of memory" : "CONNECT does not encode (a string over 65535 bytes?)");
		broker_drop(br->set->b, c, nomem ? REASON_NO_MEMORY : REASON_PROTOCOL_ERROR, br->last_error);
		return;
	}
	if (conn_send_bytes(c, buf, (size_t)n) != 0) {
		set_error(br, "out of memory");
		broker_drop(br->set->b, c, REASON_NO_MEMORY, br->last_error);
	}
	wisp_free(buf);
}

/* connector_opts.on_ready: TCP (and TLS) is up; the connection joins the
 * server's set, CONNECT goes. */
static void start_mqtt(struct connector *cn, struct transport *t, int fd, void *ud)
{
	struct bridge *br = ud;
	struct broker *b = br->set->b;
	struct sockaddr_storage peer;
	socklen_t plen = sizeof peer;
	memset(&peer, 0, sizeof peer);
	getpeername(fd, (struct sockaddr *)&peer, &plen);
	struct conn *c = conn_new(&br->listener.origin, t, fd, (const struct sockaddr *)&peer);
	if (!c) {
		if (t)
			transport_close(t);
		else
			close(fd);
		attempt_failed(cn, connector_current(cn), MQTT_CLIENT_ENOMEM, "out of memory", br);
		return;
	}
	c->outbound = true;
	/* Active from the start: what the remote sends is answers, judged
	 * here (the accept side's before-CONNECT rules do not apply). */
	c->state = CONN_ACTIVE;
	c->version = br->cfg->protocol_version == 5 ? MQTT_PROTO_V5 : MQTT_PROTO_V311;
	if (server_adopt(&b->srv, c, br->cfg->connect_timeout) != 0) {
		c->state = CONN_CLOSING;
		conn_free(c);
		attempt_failed(cn, connector_current(cn), MQTT_CLIENT_ENOMEM, "cannot watch the socket", br);
		return;
	}
	br->conn = c;
	br->state = BRIDGE_CONNECTING;
	send_connect(br, c);
}

/* The PINGREQ interval: the remote drops us after 1.5 keepalives of
 * silence; the PINGRESP refreshes our own deadline on it (server.c). */
static void on_timer(struct loop *l, struct loop_timer *t)
{
	struct bridge *br = container_of(t, struct bridge, timer);
	if (br->state != BRIDGE_UP)
		return;
	uint8_t ping[2];
	if (mqtt_encode_empty(ping, sizeof ping, MQTT_PKT_PINGREQ) == 2)
		conn_send_bytes(br->conn, ping, 2);
	loop_timer_start(l, t, br->cfg->keepalive, on_timer);
}

/* ---- what the remote sends (broker_outbound_ops.on_packet) ---- */

static int subscribe_in_rules(struct bridge *br, struct conn *c)
{
	struct mqtt_str filters[64];
	uint8_t options[64];
	size_t n = 0;
	for (size_t i = 0; i < br->rule_count && n < 64; i++) {
		const struct bridge_rule *r = &br->rules[i];
		if (!r->in)
			continue;
		filters[n] = (struct mqtt_str){(const uint8_t *)r->remote_filter, strlen(r->remote_filter)};
		options[n] = (uint8_t)r->cfg->qos;
		if (c->version == MQTT_PROTO_V5) /* what we sent must not come back [MQTT-3.8.3-3] */
			options[n] |= MQTT_SUBOPT_NO_LOCAL | MQTT_SUBOPT_RETAIN_AS_PUBLISHED;
		n++;
	}
	if (n == 0)
		return 0;
	size_t cap = 16;
	for (size_t i = 0; i < n; i++)
		cap += filters[i].len + 3;
	uint8_t *buf = wisp_malloc(cap);
	if (!buf)
		return WISP_ENOMEM;
	if (++br->next_packet_id == 0)
		br->next_packet_id = 1;
	struct mqtt_props none = {0};
	ssize_t len = mqtt_encode_subscribe(buf, cap, c->version, br->next_packet_id, &none, filters, options, n);
	int rc = len > 0 ? conn_send_bytes(c, buf, (size_t)len) : WISP_EINVAL;
	wisp_free(buf);
	return rc;
}

static void drain_qos0(struct loop *l, struct loop_timer *t);

/* The bridge's own bounds, as delivery sees them. */
static void bridge_limits(const struct bridge *br, struct delivery_limits *lim)
{
	*lim = br->set->b->dlim;
	lim->max_queued = br->cfg->max_queued_messages;
	lim->max_queued_bytes = br->cfg->max_queued_bytes;
}

/* Sends waiting QoS 0 messages, oldest first, while the connection's
 * output has room (its bound would drop the rest); what is left goes on
 * the next turn, or in a second when nothing went (the remote reads
 * slowly). */
static void send_qos0(struct bridge *br)
{
	struct broker *b = br->set->b;
	struct delivery_limits lim;
	bridge_limits(br, &lim);
	size_t sent = 0;
	struct list_node *n;
	while (br->state == BRIDGE_UP && br->conn->out.bytes < lim.max_output && (n = list_first(&br->qos0))) {
		struct qos0_item *q = container_of(n, struct qos0_item, link);
		list_remove(n);
		br->stat->queued_qos0 = --br->qos0_count;
		br->qos0_bytes -= msg_size(q->msg);
		enum drop_reason why = DROP_NO_MEMORY;
		if (delivery_offer(br->s, &lim, q->msg, 0, q->msg->retain, NULL, &why) == DELIVERY_SENT) {
			b->stats.msgs_sent++;
			sent++;
		} else {
			broker_count_drop(b, why); /* too large for the remote, or out of memory */
		}
		msg_unref(q->msg);
		wisp_free(q);
	}
	if (br->state == BRIDGE_UP && !list_empty(&br->qos0))
		loop_timer_start(b->loop, &br->qos0_timer, sent ? 0 : 1, drain_qos0);
}

static void drain_qos0(struct loop *l, struct loop_timer *t)
{
	(void)l;
	send_qos0(container_of(t, struct bridge, qos0_timer));
}

/* on_offer with queue_qos0: a QoS 0 message (`out`, our reference) waits
 * while the remote is away, and behind those already waiting, so they
 * leave in order; within the bridge's bounds (QoS 1/2 waiting count too),
 * or dropped as a full queue would drop it. */
static void take_qos0(struct bridge *br, struct msg *out, struct outbound_verdict *v)
{
	const struct session *s = br->s;
	if ((uint64_t)br->qos0_count + sess_queued_count(s) + sess_inflight_count(s) >= br->cfg->max_queued_messages) {
		v->dropped = true;
		v->why = DROP_QUEUE_FULL;
	} else if (br->qos0_bytes + sess_queued_bytes(s) + msg_size(out) > br->cfg->max_queued_bytes) {
		v->dropped = true;
		v->why = DROP_QUEUE_BYTES;
	} else {
		struct qos0_item *q = wisp_malloc(sizeof *q);
		if (!q) {
			v->dropped = true;
			v->why = DROP_NO_MEMORY;
		} else {
			q->msg = out;
			list_push_back(&br->qos0, &q->link);
			br->stat->queued_qos0 = ++br->qos0_count;
			br->qos0_bytes += msg_size(out);
			v->taken = true;
			return;
		}
	}
	msg_unref(out);
}

static int on_connack(struct bridge *br, struct conn *c, const struct mqtt_connack *a, enum reason *why)
{
	struct broker *b = br->set->b;
	if (br->state != BRIDGE_CONNECTING) {
		*why = REASON_PROTOCOL_ERROR;
		return WISP_EPROTO;
	}
	if (a->code != 0) {
		set_error(br, "CONNACK refused: code 0x%02x", a->code);
		broker_drop(b, c, REASON_NOT_AUTHORIZED, br->last_error);
		return 0;
	}
	if (br->s->conn) {
		/* Held by someone else: cannot happen while local clients
		 * cannot name "$bridge/..." (handle_connect.c); refuse anyway. */
		set_error(br, "local session busy");
		broker_drop(b, c, REASON_PROTOCOL_ERROR, br->last_error);
		return 0;
	}
	br->state = BRIDGE_UP;
	connector_connected(&br->cn);
	br->last_error[0] = '\0';
	br->stat->connected = 1;
	br->stat->connects++;
	c->sess = br->s;
	br->s->conn = c;
	conn_set_keepalive(c, (uint16_t)br->cfg->keepalive);
	/* What the remote takes: no more unacknowledged QoS 1/2 than its
	 * Receive Maximum [MQTT-3.3.4-9], nothing over its Maximum Packet
	 * Size [MQTT-3.1.2-25] (3.1.1: neither is said). */
	struct connector_limits lim;
	connector_limits(a, &lim);
	struct sess_v5 *v = br->s->v5;
	v->send_max = lim.receive_max;
	v->packet_max = lim.packet_max;
	br->remote_max_qos = lim.max_qos;
	log_msg(LOG_NOTICE, "bridge", "bridge %s: connected to %s:%u (MQTT %s%s), %u queued", br->cfg->name,
		remote(br)->host, (unsigned)remote(br)->port,
		c->version == MQTT_PROTO_V5 ? "5" : "3.1.1", a->session_present ? ", session present" : "",
		sess_queued_count(br->s) + sess_inflight_count(br->s));
	int rc = subscribe_in_rules(br, c);
	if (rc != 0) {
		*why = REASON_NO_MEMORY;
		return rc;
	}
	/* The unacknowledged window again (DUP), then the queue, in order
	 * [MQTT-4.4.0-1] [MQTT-4.6.0-6]. */
	delivery_resume(br->s, &b->dlim);
	send_qos0(br); /* [MQTT-4.6.0-6] per QoS: QoS 0 kept its order among itself */
	loop_timer_start(b->loop, &br->timer, br->cfg->keepalive, on_timer);
	return 0;
}

/* An inbound topic under its local name: the first in rule whose remote
 * filter matches gives the prefixes. *out points at the topic itself when
 * nothing changes. */
static int map_inbound(struct bridge *br, struct mqtt_str *topic)
{
	for (size_t i = 0; i < br->rule_count; i++) {
		const struct bridge_rule *r = &br->rules[i];
		if (!r->in || !topic_matches(r->remote_filter, strlen(r->remote_filter), (const char *)topic->ptr,
					     topic->len))
			continue;
		if (!r->local_prefix_len && !r->remote_prefix_len)
			return 0;
		size_t tail = topic->len - r->remote_prefix_len;
		size_t need = r->local_prefix_len + tail;
		if (need > 65535)
			return WISP_ELIMIT;
		if (need + 1 > br->topic_cap) {
			char *nb = wisp_realloc(br->topic_buf, need + 1);
			if (!nb)
				return WISP_ENOMEM;
			br->topic_buf = nb;
			br->topic_cap = need + 1;
		}
		memcpy(br->topic_buf, r->cfg->local_prefix, r->local_prefix_len);
		memcpy(br->topic_buf + r->local_prefix_len, topic->ptr + r->remote_prefix_len, tail);
		*topic = (struct mqtt_str){(const uint8_t *)br->topic_buf, need};
		return 0;
	}
	return 0;
}

static int on_packet(void *ctx, struct conn *c, const struct mqtt_pkt *p, enum reason *why)
{
	struct bridges *bs = ctx;
	struct broker *b = bs->b;
	struct bridge *br = bridge_of_conn(bs, c);
	if (!br) {
		*why = REASON_PROTOCOL_ERROR;
		return WISP_EPROTO;
	}
	if (p->type == MQTT_PKT_CONNACK)
		return on_connack(br, c, &p->u.connack, why);
	if (br->state != BRIDGE_UP) { /* the first packet is CONNACK [MQTT-3.2.0-1] */
		set_error(br, "packet type %u before CONNACK", (unsigned)p->type);
		*why = REASON_PROTOCOL_ERROR;
		return WISP_EPROTO;
	}
	switch (p->type) {
	case MQTT_PKT_PUBLISH: {
		struct mqtt_publish q = p->u.publish;
		int rc = map_inbound(br, &q.topic);
		if (rc != 0) {
			*why = rc == WISP_ENOMEM ? REASON_NO_MEMORY : REASON_TOPIC_TOO_LONG;
			return rc;
		}
		return handle_publish(b, c, &q, why);
	}
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBREL:
	case MQTT_PKT_PUBCOMP:
		return handle_ack(b, c, p->type, &p->u.ack, why);
	case MQTT_PKT_SUBACK:
		for (size_t i = 0; i < p->u.suback.codes.len; i++)
			if (p->u.suback.codes.ptr[i] >= 0x80) {
				set_error(br, "the remote refused subscription %zu (code 0x%02x)", i,
					  p->u.suback.codes.ptr[i]);
				log_msg(LOG_WARNING, "bridge", "bridge %s: %s", br->cfg->name, br->last_error);
			}
		return 0;
	case MQTT_PKT_UNSUBACK:
	case MQTT_PKT_PINGRESP:
		return 0;
	case MQTT_PKT_DISCONNECT:
		set_error(br, "the remote disconnected (reason 0x%02x)", p->u.reason.reason);
		broker_drop(b, c, REASON_PEER_CLOSED, br->last_error);
		return 0;
	default:
		*why = REASON_PACKET_NOT_ACCEPTED;
		return WISP_EPROTO;
	}
}

/* broker_outbound_ops.on_drop: the connection ends (the broker detaches
 * the session, which keeps its messages); a reconnect is due. */
static void on_drop(void *ctx, struct conn *c, enum reason r, const char *detail)
{
	struct bridges *bs = ctx;
	struct bridge *br = bridge_of_conn(bs, c);
	if (!br)
		return;
	br->conn = NULL;
	loop_timer_stop(bs->b->loop, &br->timer);
	loop_timer_stop(bs->b->loop, &br->qos0_timer);
	if (br->state == BRIDGE_CONNECTING && r == REASON_KEEPALIVE_TIMEOUT) /* server_adopt's timer */
		set_error(br, "no CONNACK within %u s", br->cfg->connect_timeout);
	else if (detail != br->last_error) /* the callers below pass last_error itself */
		set_error(br, "%s", detail ? detail : reason_info(r)->text);
	br->stat->connected = 0;
	if (r == REASON_SHUTDOWN)
		return;
	log_msg(LOG_NOTICE, "bridge", "bridge %s: disconnected from %s:%u: %s (%u queued)", br->cfg->name,
		remote(br)->host, (unsigned)remote(br)->port, br->last_error,
		sess_queued_count(br->s) + sess_inflight_count(br->s));
	/* A remote that never said CONNACK is a failed address: the next. */
	bool next = br->state != BRIDGE_UP;
	br->state = BRIDGE_WAITING;
	connector_retry(&br->cn, next);
}

/* broker_outbound_ops.offer: the bridge's queue bounds, the remote's
 * Maximum QoS (the last one it said; messages queued before it said less
 * keep theirs), and the message under its remote topic when the rule's
 * prefixes say so. */
static struct msg *remote_msg(struct bridge *br, struct msg *m);

static struct msg *on_offer(void *ctx, struct session *s, struct msg *m, uint8_t *qos, struct delivery_limits *lim,
			    struct outbound_verdict *v)
{
	struct bridge *br = bridge_of_session(ctx, s);
	if (!br)
		return NULL;
	if (*qos > br->remote_max_qos) /* [MQTT-3.2.2-11]: the remote refuses more */
		*qos = br->remote_max_qos;
	lim->max_queued = br->cfg->max_queued_messages;
	lim->max_queued_bytes = br->cfg->max_queued_bytes;
	struct msg *mapped = remote_msg(br, m);
	if (*qos == 0 && br->cfg->queue_qos0 && (br->state != BRIDGE_UP || !list_empty(&br->qos0))) {
		take_qos0(br, mapped ? mapped : msg_ref(m), v);
		return NULL;
	}
	return mapped;
}

/* The message under its remote topic: a new one when the rule's prefixes
 * differ, NULL when the shared message goes as it is. */
static struct msg *remote_msg(struct bridge *br, struct msg *m)
{
	const char *topic = msg_topic(m);
	for (size_t i = 0; i < br->rule_count; i++) {
		const struct bridge_rule *r = &br->rules[i];
		if (!r->out || !topic_matches(r->local_filter, strlen(r->local_filter), topic, m->topic_len))
			continue;
		if (r->local_prefix_len == r->remote_prefix_len &&
		    memcmp(r->cfg->local_prefix, r->cfg->remote_prefix, r->local_prefix_len) == 0)
			return NULL; /* the same topic on both sides: the shared message goes */
		size_t tail = m->topic_len - r->local_prefix_len;
		size_t len = r->remote_prefix_len + tail;
		char stack[512];
		char *t = len <= sizeof stack ? stack : wisp_malloc(len);
		if (!t)
			return NULL;
		memcpy(t, r->cfg->remote_prefix, r->remote_prefix_len);
		memcpy(t + r->remote_prefix_len, topic + r->local_prefix_len, tail);
		struct msg_spec spec = {
			.topic = t,
			.topic_len = len,
			.props_len = m->props_len,
			.payload = msg_payload(m),
			.payload_len = m->payload_len,
			.qos = m->qos,
			.retain = m->retain,
			.expires_at = m->expires_at,
			.origin = m->origin,
		};
		struct msg *mapped = len <= 65535 ? msg_create(&spec) : NULL;
		if (mapped && m->props_len)
			memcpy(msg_props_mut(mapped), msg_props(m), m->props_len);
		if (t != stack)
			wisp_free(t);
		return mapped;
	}
	return NULL;
}

static const struct broker_outbound_ops outbound_ops = {
	.on_packet = on_packet,
	.on_drop = on_drop,
	.offer = on_offer,
};

/* ---- start and stop ---- */

static char *concat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = wisp_malloc(la + lb + 1);
	if (s) {
		memcpy(s, a, la);
		memcpy(s + la, b, lb + 1);
	}
	return s;
}

/* The client TLS context for one address of bridge `i` (its host is the
 * name the remote's certificate must carry). 0, or a negative WISP_E* with
 * "<file>: bridges[i]: <what>: <file>: <reason>" in err. */
static int tls_context(const struct config *cfg, size_t i, const char *host, struct tls_ctx **out, char *err,
		       size_t errlen)
{
	const struct config_bridge *bc = &cfg->bridges[i];
	struct tls_opts o;
	tls_opts_init(&o);
	o.ca_file = bc->cafile;
	o.cert_file = bc->certfile;
	o.key_file = bc->keyfile;
	o.verify_peer = true;
	o.hostname = host;
	o.insecure = bc->tls_insecure;
	char why[256];
	int rc = tls_ctx_new_client(&o, out, why, sizeof why);
	if (rc != 0)
		snprintf(err, errlen, "%s: bridges[%zu]: %s", cfg->path, i, why);
	return rc;
}

int bridges_check_tls(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->bridge_count; i++) {
		struct tls_ctx *ctx = NULL;
		if (!cfg->bridges[i].cafile)
			continue;
		int rc = tls_context(cfg, i, "localhost", &ctx, err, errlen);
		tls_ctx_unref(ctx);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static struct transport *tls_for(void *ctx, size_t addr, int fd)
{
	struct bridge *br = ctx;
	return tls_transport_new(br->tls[addr], fd);
}

/* The connector over the `addresses` list ("host:port,[v6]:port"), with a
 * TLS context per address when the bridge has a cafile. */
static int start_connector(struct bridge *br, char *err, size_t errlen)
{
	const struct config_bridge *bc = br->cfg;
	const char *list = bc->addresses;
	size_t n = 1;
	for (const char *p = list; *p; p++)
		n += *p == ',';
	struct connector_addr *addrs = wisp_calloc(n, sizeof *addrs);
	char *hosts = wisp_malloc(strlen(list) + 1);
	br->tls = bc->cafile ? wisp_calloc(n, sizeof *br->tls) : NULL;
	int rc = !addrs || !hosts || (bc->cafile && !br->tls) ? WISP_ENOMEM : 0;
	const char *p = list;
	char *h = hosts;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *colon = p + len;
		while (colon > p && *colon != ':')
			colon--;
		const char *host = p;
		size_t hlen = (size_t)(colon - p);
		if (hlen >= 2 && host[0] == '[') {
			host++;
			hlen -= 2;
		}
		memcpy(h, host, hlen);
		h[hlen] = '\0';
		addrs[i] = (struct connector_addr){h, (uint16_t)strtoul(colon + 1, NULL, 10)};
		h += hlen + 1;
		br->addr_count++;
		if (bc->cafile) {
			const struct config *cfg = br->set->b->cfg;
			rc = tls_context(cfg, (size_t)(bc - cfg->bridges), addrs[i].host, &br->tls[i], err, errlen);
		}
		p = end ? end + 1 : p + len;
	}
	if (rc == 0) {
		struct connector_opts o = {
			.addrs = addrs,
			.addr_count = n,
			.nodelay = true,
			.bg = br->set->bg, /* a slow name server must not stall the loop */
			.timeout_ms = bc->connect_timeout * 1000u,
			.backoff_min_ms = bc->reconnect_min * 1000u,
			.backoff_max_ms = bc->reconnect_max * 1000u,
			.transport_new = bc->cafile ? tls_for : NULL,
			.transport_ctx = br,
			.on_ready = start_mqtt,
			.on_failed = attempt_failed,
			.ud = br,
		};
		rc = connector_init(&br->cn, br->set->b->loop, br->set->timers, &o) == 0 ? 0 : WISP_ENOMEM;
	}
	wisp_free(addrs);
	wisp_free(hosts);
	return rc;
}

static int build_rules(struct bridge *br)
{
	const struct config_bridge *cfg = br->cfg;
	br->rules = wisp_calloc(cfg->topic_count, sizeof *br->rules);
	if (!br->rules)
		return WISP_ENOMEM;
	br->rule_count = cfg->topic_count;
	for (size_t i = 0; i < cfg->topic_count; i++) {
		const struct config_bridge_topic *t = &cfg->topics[i];
		struct bridge_rule *r = &br->rules[i];
		r->cfg = t;
		r->out = t->direction != CONFIG_BRIDGE_IN;
		r->in = t->direction != CONFIG_BRIDGE_OUT;
		r->local_prefix_len = strlen(t->local_prefix);
		r->remote_prefix_len = strlen(t->remote_prefix);
		r->local_filter = concat(t->local_prefix, t->pattern);
		r->remote_filter = concat(t->remote_prefix, t->pattern);
		if (!r->local_filter || !r->remote_filter)
			return WISP_ENOMEM;
	}
	return 0;
}

struct retained_walk {
	struct bridge *br;
	uint8_t qos;
};

static void send_retained(const char *topic, size_t len, void *value, void *ctx)
{
	struct retained_walk *w = ctx;
	struct msg *m = value;
	(void)topic;
	(void)len;
	if (w->br->s->acl && !acl_client_check(w->br->s->acl, msg_topic(m), m->topic_len, ACL_READ))
		return; /* local_username may not read it */
	broker_deliver(w->br->set->b, w->br->s, m, m->qos < w->qos ? m->qos : w->qos, true, NULL);
}

/* local_username: the session is that user's (its ACL rules: write for
 * what comes in, read for what goes out, as a client logged in as that
 * user); unset, it has no rules and everything crosses, whatever the ACL.
 * The user is the session's owner, so a reload rebuilds the same rules. */
static int bind_acl(struct bridge *br, struct session *s)
{
	struct broker *b = br->set->b;
	const char *user = br->cfg->local_username;
	acl_client_free(s->acl);
	s->acl = NULL;
	wisp_free(s->username);
	s->username = NULL;
	if (!user)
		return 0;
	if (!(s->username = wisp_strndup(user, strlen(user))))
		return WISP_ENOMEM;
	if (b->auth.acl && acl_client_new(b->auth.acl, user, s->client_id, &s->acl) != 0)
		return WISP_ENOMEM;
	return 0;
}

/* The local session "$bridge/<name>": found (restored from the store, with
 * what waited in it) or made, and subscribed to exactly the out rules. */
static int bind_session(struct bridge *br, char *err, size_t errlen)
{
	struct broker *b = br->set->b;
	char id[80];
	int idlen = snprintf(id, sizeof id, "$bridge/%s", br->cfg->name);
	struct session *s = sess_find(&b->sessions, id, (size_t)idlen);
	if (!s && !(s = sess_create(&b->sessions, id, (size_t)idlen, false))) {
		snprintf(err, errlen, "bridges: %s: out of memory", br->cfg->name);
		return WISP_ENOMEM;
	}
	/* The queue must outlive any outage: the session never expires, even
	 * where limits.max_session_expiry bounds the others (a restored one
	 * has its expiry timer running already). Its v5 state also carries the
	 * remote's Receive Maximum and Maximum Packet Size (on_connack). */
	struct sess_v5 *v = session_v5_get(b, s);
	if (!v) {
		snprintf(err, errlen, "bridges: %s: out of memory", br->cfg->name);
		return WISP_ENOMEM;
	}
	session_v5_online(b, s);
	v->expiry = SESS_EXPIRY_NEVER;
	br->s = s;
	s->sess_flags |= SESS_FLAG_BRIDGE;
	s->owned = true;
	int rc = bind_acl(br, s);
	if (rc != 0) {
		snprintf(err, errlen, "bridges: %s: out of memory", br->cfg->name);
		return rc;
	}
	SESS_OBSERVE(&b->observer, session_put, s);
	/* Stored subscriptions no rule asks for any more go. */
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &s->subs) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		bool wanted = false;
		for (size_t i = 0; i < br->rule_count && !wanted; i++)
			wanted = br->rules[i].out && strlen(br->rules[i].local_filter) == sess_sub_filter_len(sub) &&
				 memcmp(br->rules[i].local_filter, sess_sub_filter(sub), sess_sub_filter_len(sub)) == 0;
		if (wanted)
			continue;
		/* Its own copy: sess_sub_filter's buffer is reused while the
		 * removal runs (a shared subscription's hand-over reads others). */
		size_t len = sess_sub_filter_len(sub);
		char *filter = wisp_malloc(len ? len : 1);
		if (!filter)
			continue; /* out of memory: the stale subscription stays until the next start */
		memcpy(filter, sess_sub_filter(sub), len);
		router_interest_remove(b->router, s, filter, len);
		wisp_free(filter);
	}
	for (size_t i = 0; i < br->rule_count; i++) {
		const struct bridge_rule *r = &br->rules[i];
		if (!r->out)
			continue;
		/* No Local: what came in over this bridge does not go back
		 * out [MQTT-3.8.3-3]; Retain As Published [MQTT-3.3.1-12]. */
		uint8_t options = (uint8_t)(r->cfg->qos | MQTT_SUBOPT_NO_LOCAL | MQTT_SUBOPT_RETAIN_AS_PUBLISHED);
		size_t flen = strlen(r->local_filter);
		rc = router_interest_add(b->router, s, r->local_filter, flen, options, 0, 0);
		if (rc < 0) {
			snprintf(err, errlen, "bridges: %s: cannot subscribe to %s: %s", br->cfg->name, r->local_filter,
				 wisp_strerror(rc));
			return rc;
		}
		/* A new rule sends what is retained under it once, like any new
		 * subscription [MQTT-3.8.4-4] (a rule restored from the store
		 * sent it when it was new). The expired are skipped by delivery. */
		if (rc == 1) {
			struct retained_walk w = {.br = br, .qos = (uint8_t)r->cfg->qos};
			retained_match(b->retained, r->local_filter, flen, send_retained, &w);
		}
	}
	/* With local_username, each out rule delivers only what that user may
	 * read (the subscriptions checked per topic), and what waited in the
	 * stored queue under other rules is checked again. */
	if (s->acl) {
		broker_reclassify_subs(b, s);
		auth_recheck_messages(b, s);
	}
	return 0;
}

static bool configured(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->bridge_count; i++)
		if (!strcmp(cfg->bridges[i].name, name))
			return true;
	return false;
}

/* Stored "$bridge/<name>" sessions whose bridge is no longer configured:
 * their queue has nowhere to go and no client may take the id, so they
 * end (logged, with what they held). The table never shrinks, so the walk
 * survives the removals. */
static void forget_removed(struct broker *b)
{
	for (size_t i = 0; i < b->sessions.nbuckets; i++) {
		struct session *s = b->sessions.buckets[i];
		while (s) {
			struct session *next = s->hash_next;
			if (s->id_len > 8 && !memcmp(s->client_id, "$bridge/", 8) && !configured(b->cfg, s->client_id + 8)) {
				log_msg(LOG_NOTICE, "bridge", "%s: no such bridge in the configuration any more: its session "
					"ends, with %u messages that were waiting for it", s->client_id,
					sess_queued_count(s) + sess_inflight_count(s));
				session_v5_end(b, s);
				SESS_OBSERVE(&b->observer, session_del, s);
				sess_destroy(&b->sessions, b->subs, s);
			}
			s = next;
		}
	}
}

int bridges_start(struct broker *b, struct bridges **out, char *err, size_t errlen)
{
	const struct config *cfg = b->cfg;
	*out = NULL;
	forget_removed(b);
	if (!cfg->bridge_count)
		return 0;
	struct bridges *bs = wisp_calloc(1, sizeof *bs);
	if (!bs)
		goto nomem;
	bs->b = b;
	bs->v = wisp_calloc(cfg->bridge_count, sizeof *bs->v);
	b->bridge_stats = wisp_calloc(cfg->bridge_count, sizeof *b->bridge_stats);
	bs->stats = b->bridge_stats;
	bs->timers = mtimers_new(b->loop);
	unsigned threads = cfg->bridge_count < BRIDGE_RESOLVE_THREADS ? (unsigned)cfg->bridge_count
								      : BRIDGE_RESOLVE_THREADS;
	bs->bg = bg_new(b->loop, cfg->bridge_count, threads);
	if (!bs->v || !b->bridge_stats || !bs->timers || !bs->bg)
		goto nomem;
	bs->n = cfg->bridge_count;
	b->outbound = &outbound_ops;
	b->outbound_ctx = bs;
	for (size_t i = 0; i < bs->n; i++) {
		struct bridge *br = &bs->v[i];
		list_init(&br->qos0);
		list_init(&br->qos0_timer.link);
		br->set = bs;
		br->cfg = &cfg->bridges[i];
		br->stat = &b->bridge_stats[i];
		list_init(&br->timer.link);
		br->remote_max_qos = 2;
		snprintf(br->listener.net.name, sizeof br->listener.net.name, "bridge %s", br->cfg->name);
		br->listener.allow_anonymous = true; /* a reload's re-check keeps it */
		br->listener.origin.set = &b->srv.conns;
	}
	b->bridge_count = bs->n;
	for (size_t i = 0; i < bs->n; i++) {
		struct bridge *br = &bs->v[i];
		int rc = build_rules(br);
		if (rc == 0)
			rc = start_connector(br, err, errlen);
		if (rc == WISP_ENOMEM)
			snprintf(err, errlen, "bridges: %s: out of memory", br->cfg->name);
		if (rc == 0)
			rc = bind_session(br, err, errlen);
		if (rc != 0) {
			bridges_stop(bs);
			b->outbound = NULL;
			b->bridge_stats = NULL;
			b->bridge_count = 0;
			bridges_free(bs);
			return rc;
		}
		br->stat->name = br->cfg->name;
		br->stat->session = br->s;
		br->stat->last_error = br->last_error;
		set_error(br, "not connected yet");
		connect_now(br);
	}
	*out = bs;
	return 0;
nomem:
	snprintf(err, errlen, "bridges: out of memory");
	if (bs) {
		wisp_free(bs->v);
		mtimers_free(bs->timers);
		bg_free(bs->bg);
	}
	wisp_free(bs);
	wisp_free(b->bridge_stats);
	b->bridge_stats = NULL;
	return WISP_ENOMEM;
}

void bridges_stop(struct bridges *bs)
{
	if (!bs)
		return;
	struct broker *b = bs->b;
	for (size_t i = 0; i < bs->n; i++) {
		struct bridge *br = &bs->v[i];
		if (br->conn)
			broker_drop(b, br->conn, REASON_SHUTDOWN, NULL);
		br->conn = NULL;
		connector_cancel(&br->cn);
		loop_timer_stop(b->loop, &br->timer);
		loop_timer_stop(b->loop, &br->qos0_timer);
		/* In memory only (QoS 0 promises nothing); before broker_free,
		 * which empties the message cache these would go back to. */
		while (!list_empty(&br->qos0)) {
			struct qos0_item *q = container_of(list_first(&br->qos0), struct qos0_item, link);
			list_remove(&q->link);
			msg_unref(q->msg);
			wisp_free(q);
		}
		br->stat->queued_qos0 = br->qos0_count = 0;
		br->qos0_bytes = 0;
	}
}

void bridges_free(struct bridges *bs)
{
	if (!bs)
		return;
	for (size_t i = 0; i < bs->n; i++)
		connector_free(&bs->v[i].cn); /* a lookup still running is told its connector is gone */
	/* A lookup still running is not waited for: a name server that does
	 * not answer would hold the exit (SIGTERM) until getaddrinfo gives up.
	 * Its helper thread keeps it, detached, until the process ends; the
	 * finished ones free themselves here. */
	bg_abandon(bs->bg);
	for (size_t i = 0; i < bs->n; i++) {
		struct bridge *br = &bs->v[i];
		for (size_t r = 0; r < br->rule_count; r++) {
			wisp_free(br->rules[r].local_filter);
			wisp_free(br->rules[r].remote_filter);
		}
		wisp_free(br->rules);
		for (size_t a = 0; br->tls && a < br->addr_count; a++)
			tls_ctx_unref(br->tls[a]);
		wisp_free(br->tls);
		wisp_free(br->topic_buf);
	}
	mtimers_free(bs->timers);
	wisp_free(bs->stats);
	wisp_free(bs->v);
	wisp_free(bs);
}
