/*
 * Non-blocking MQTT client: connection state machine, packet I/O and QoS
 * flows. See mqtt_client.h for what it does and does not do.
 *
 * States: IDLE -> CONNECTING (the connector resolves, dials and does the
 * transport handshake, e.g. TLS) -> AWAIT_CONNACK -> CONNECTED -> CLOSING
 * (DISCONNECT queued, waiting for the output to drain) -> IDLE. A lost
 * connection goes to IDLE and, when reconnecting, the connector's backoff
 * runs; the attempt after it starts from IDLE.
 *
 * Output is one contiguous byte buffer: packets are encoded straight into
 * its tail and written from its head, so a publish costs one copy of the
 * payload into the buffer (plus one into the in-flight record for QoS > 0,
 * which a reconnect needs to resend).
 *
 * Single-threaded: runs on the loop thread.
 */
#include "mqtt_client.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "list.h"
#include "transport.h"

#define READ_BUF_INITIAL 256u
#define OUT_BUF_KEEP 65536u  /* drained output buffers above this are freed */
#define READS_PER_EVENT 64   /* fairness between connections */
#define DEFAULT_INFLIGHT 20

enum client_state {
	ST_IDLE,
	ST_CONNECTING,
	ST_AWAIT_CONNACK,
	ST_CONNECTED,
	ST_CLOSING,
};

/* Message flow states of an outgoing QoS 1/2 publish. */
enum out_state {
	OUT_QUEUED,    /* waiting for an in-flight slot or for the connection */
	OUT_WAIT_ACK,  /* PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2) */
	OUT_WAIT_COMP, /* PUBREL sent; waiting for PUBCOMP */
};

struct out_msg {
	struct list_node link;
	uint16_t mid;
	uint8_t qos;
	bool retain;
	uint8_t state;
	bool sent; /* went out at least once: a resend carries DUP [MQTT-3.3.1-1] */
	size_t topic_len;
	size_t props_len; /* v5 property block */
	size_t payload_len;
	uint8_t data[]; /* topic, properties, payload */
};

/* An incoming QoS 2 message held until PUBREL, when it is delivered: as
 * libmosquitto does, so -C counts and -d traces match mosquitto_sub. Kept
 * as the PUBLISH packet itself (with an aliased topic filled in), decoded
 * again on PUBREL so the callback sees its v5 properties. */
struct in_msg {
	struct list_node link;
	uint16_t mid;
	size_t len;
	uint8_t packet[];
};

struct mqtt_client {
	struct loop *loop;
	struct mtimers *timers;
	struct loop_io io;
	struct transport *t;
	struct connector cn;
	enum client_state state;

	/* Copied options. */
	char *client_id, *log_name, *username, *password, *will_topic;
	uint8_t *will_payload, *connect_props, *will_props;
	size_t will_len, connect_props_len, will_props_len;
	struct mqtt_client_opts o; /* pointers above replace its strings */

	uint8_t *rbuf;
	size_t rlen, rcap;
	uint8_t *obuf;
	size_t ooff, olen, ocap; /* unsent bytes are obuf[ooff, olen) */

	uint16_t next_mid;
	struct list_node inflight; /* out_msg, in send order */
	struct list_node queued;
	size_t inflight_count;
	uint16_t remote_receive_max; /* from a v5 CONNACK; 0: not said */
	uint32_t remote_packet_max;  /* from a v5 CONNACK; 0: not said */
	uint8_t remote_max_qos;      /* from a v5 CONNACK; 2 until one says less */
	struct list_node rx_qos2; /* struct in_msg: incoming QoS 2 awaiting PUBREL */
	/* v5 topic aliases from the server [MQTT-3.3.2.3.4]: aliases[n - 1] is
	 * alias n's topic; allocated at the first alias. */
	char **aliases;
	uint16_t alias_max; /* the Topic Alias Maximum our CONNECT sent */

	struct mtimer ka_timer;
	uint64_t last_in_ms, last_out_ms;
	bool ping_outstanding;
	bool want_reconnect;
	bool user_disconnect;
	uint8_t connack_code;
	bool in_refusal; /* inside on_connect for a refused CONNACK */
	uint8_t disconnect_reason; /* of the server's last v5 DISCONNECT */
};

static void close_connection(struct mqtt_client *c, int err);
static void update_interest(struct mqtt_client *c);
static void flush_out(struct mqtt_client *c);
static void send_queued(struct mqtt_client *c);
static void free_aliases(struct mqtt_client *c);

__attribute__((format(printf, 3, 0))) static void vtrace(struct mqtt_client *c, bool with_name, const char *fmt,
							   va_list ap)
{
	if (!c->o.cbs || !c->o.cbs->on_log)
		return;
	char line[512];
	int n = 0;
	if (with_name) {
		const char *name = c->log_name ? c->log_name : c->client_id;
		n = snprintf(line, sizeof line, "Client %s ", name && name[0] ? name : "(null)");
		if (n < 0 || (size_t)n >= sizeof line)
			return;
	}
	vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	c->o.cbs->on_log(c, line, c->o.ud);
}

__attribute__((format(printf, 2, 3))) static void trace(struct mqtt_client *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vtrace(c, true, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 2, 3))) static void trace_bare(struct mqtt_client *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vtrace(c, false, fmt, ap);
	va_end(ap);
}

static char *dup_str(const char *s)
{
	return s ? wisp_strndup(s, strlen(s)) : NULL;
}

static uint8_t *dup_bytes(const void *p, size_t len)
{
	uint8_t *d = wisp_malloc(len ? len : 1);
	if (d && len)
		memcpy(d, p, len);
	return d;
}

/* ---- output buffer ---------------------------------------------------- */

static int out_reserve(struct mqtt_client *c, size_t need)
{
	if (c->ooff && c->ooff == c->olen)
		c->ooff = c->olen = 0;
	if (c->ocap - c->olen >= need)
		return 0;
	if (c->ooff) { /* compact before growing */
		memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
		c->olen -= c->ooff;
		c->ooff = 0;
		if (c->ocap - c->olen >= need)
			return 0;
	}
	size_t ncap = c->ocap ? c->ocap : 256;
	while (ncap - c->olen < need)
		ncap *= 2;
	uint8_t *b = wisp_realloc(c->obuf, ncap);
	if (!b)
		return MQTT_CLIENT_ENOMEM;
	c->obuf = b;
	c->ocap = ncap;
	return 0;
}

/*
 * Encoding goes straight into the output tail: out_tail() reserves `hint`
 * bytes (callers pass an upper bound of the packet size) and out_commit()
 * keeps what the encoder wrote. An encoder error leaves the buffer as it was.
 */
static uint8_t *out_tail(struct mqtt_client *c, size_t hint, size_t *cap)
{
	if (out_reserve(c, hint) != 0)
		return NULL;
	*cap = c->ocap - c->olen;
	return c->obuf + c->olen;
}

static int out_commit(struct mqtt_client *c, ssize_t n)
{
	if (n <= 0)
		return n == MQTT_ENOSPC ? MQTT_CLIENT_ENOMEM : MQTT_CLIENT_EPROTOCOL;
	c->olen += (size_t)n;
	return 0;
}

#define OUT_ENCODE(c, hint, call)                                             \
	do {                                                                  \
		size_t cap;                                                   \
		uint8_t *buf = out_tail((c), (hint), &cap);                   \
		rc = buf ? out_commit((c), (call)) : MQTT_CLIENT_ENOMEM;      \
	} while (0)

static bool is_up(const struct mqtt_client *c)
{
	return c->state == ST_CONNECTED || c->state == ST_CLOSING;
}

/* Whether the server takes this PUBLISH: no QoS above its Maximum QoS
 * [MQTT-3.2.2-11], no packet over its Maximum Packet Size [MQTT-3.2.2-15]
 * (both from its v5 CONNACK). 0, MQTT_CLIENT_EQOS or MQTT_CLIENT_ETOOLARGE. */
static int server_takes(const struct mqtt_client *c, size_t tlen, size_t props_len, size_t plen, uint8_t qos)
{
	if (qos > c->remote_max_qos)
		return MQTT_CLIENT_EQOS;
	if (!c->remote_packet_max)
		return 0;
	uint64_t rem = 2u + (uint64_t)tlen + (qos ? 2u : 0u) + plen;
	if (c->o.version == MQTT_PROTO_V5)
		rem += mqtt_varint_size((uint32_t)props_len) + props_len;
	uint64_t total = 1u + (rem < (1u << 28) ? mqtt_varint_size((uint32_t)rem) : 5u) + rem;
	return total > c->remote_packet_max ? MQTT_CLIENT_ETOOLARGE : 0;
}

static int encode_publish(struct mqtt_client *c, const struct out_msg *m, const uint8_t *topic,
			  size_t tlen, const uint8_t *props, size_t props_len, const uint8_t *payload,
			  size_t plen, uint8_t qos, bool retain, bool dup)
{
	struct mqtt_publish p = {0};
	p.props.raw.ptr = props;
	p.props.raw.len = props_len;
	p.qos = qos;
	p.dup = dup;
	p.retain = retain;
	p.topic.ptr = topic;
	p.topic.len = tlen;
	p.packet_id = m ? m->mid : 0;
	p.payload.ptr = payload;
	p.payload.len = plen;
	int rc = server_takes(c, tlen, props_len, plen, qos);
	if (rc != 0)
		return rc;
	OUT_ENCODE(c, tlen + props_len + plen + 16, mqtt_encode_publish(buf, cap, c->o.version, &p));
	return rc;
}

static int send_out_msg(struct mqtt_client *c, struct out_msg *m)
{
	bool dup = m->sent;
	m->sent = true;
	const uint8_t *topic = m->data, *props = m->data + m->topic_len, *payload = props + m->props_len;
	if (m->state == OUT_WAIT_COMP) {
		struct mqtt_ack a = {.packet_id = m->mid};
		trace(c, "sending PUBREL (m%u)", (unsigned)m->mid);
		int rc;
		OUT_ENCODE(c, 8, mqtt_encode_ack(buf, cap, c->o.version, MQTT_PKT_PUBREL, &a));
		return rc;
	}
	/* libmosquitto prints a topic left out for its alias as (null). */
	trace(c, "sending PUBLISH (d%d, q%u, r%d, m%u, '%.*s', ... (%zu bytes))", dup ? 1 : 0,
	      (unsigned)m->qos, m->retain ? 1 : 0, (unsigned)m->mid, m->topic_len ? (int)m->topic_len : 6,
	      m->topic_len ? (const char *)topic : "(null)", m->payload_len);
	return encode_publish(c, m, topic, m->topic_len, props, m->props_len, payload, m->payload_len, m->qos,
			      m->retain, dup);
}

/* ---- timers ------------------------------------------------------------ */

static void arm_keepalive(struct mqtt_client *c)
{
	if (!c->o.keepalive)
		return;
	uint64_t ka = (uint64_t)c->o.keepalive * 1000u;
	uint64_t last = c->last_out_ms < c->last_in_ms ? c->last_out_ms : c->last_in_ms;
	uint64_t now = mtimer_now_ms();
	uint64_t due = last + ka;
	mtimer_start(c->timers, &c->ka_timer, due > now ? due - now : 0);
}

static void on_keepalive(struct mtimer *t, void *ud)
{
	struct mqtt_client *c = ud;
	(void)t;
	if (!is_up(c))
		return;
	uint64_t now = mtimer_now_ms(), ka = (uint64_t)c->o.keepalive * 1000u;
	if (now - c->last_out_ms >= ka || now - c->last_in_ms >= ka) {
		if (c->ping_outstanding) {
			/* No answer for a whole keepalive period after PINGREQ. */
			close_connection(c, MQTT_CLIENT_EKEEPALIVE);
			return;
		}
		trace(c, "sending PINGREQ");
		int rc;
		OUT_ENCODE(c, 2, mqtt_encode_empty(buf, cap, MQTT_PKT_PINGREQ));
		if (rc == 0) {
			c->ping_outstanding = true;
			c->last_out_ms = c->last_in_ms = now; /* next check one period on */
			flush_out(c);
		}
	}
	if (is_up(c))
		arm_keepalive(c);
}

/* ---- connection lifecycle ------------------------------------------------ */

static void reset_buffers(struct mqtt_client *c)
{
	c->rlen = 0;
	c->ooff = c->olen = 0;
	if (c->ocap > OUT_BUF_KEEP) {
		wisp_free(c->obuf);
		c->obuf = NULL;
		c->ocap = 0;
	}
}

/* Ends the current connection; err as for on_disconnect. Safe to call from
 * any callback and in any state. */
static void close_connection(struct mqtt_client *c, int err)
{
	enum client_state was = c->state;
	connector_cancel(&c->cn);
	if (c->t) {
		loop_io_stop(c->loop, &c->io);
		transport_close(c->t);
		c->t = NULL;
	}
	c->io.fd = -1;
	c->state = ST_IDLE;
	mtimer_stop(c->timers, &c->ka_timer);
	reset_buffers(c);
	free_aliases(c); /* they live as long as the connection [MQTT-3.3.2-7] */
	c->ping_outstanding = false;
	/* Everything sent but unacknowledged goes back to the resend path:
	 * PUBLISH again with DUP, or PUBREL again. */
	bool retry = c->want_reconnect && err != MQTT_CLIENT_OK && err != MQTT_CLIENT_EREFUSED;
	if (retry)
		connector_retry(&c->cn, false);
	if (was != ST_IDLE || err != MQTT_CLIENT_OK) {
		if (c->o.cbs && c->o.cbs->on_disconnect)
			c->o.cbs->on_disconnect(c, err, c->o.ud);
	}
}

static void send_connect(struct mqtt_client *c)
{
	struct mqtt_connect m = {0};
	m.version = c->o.version;
	m.clean_start = c->o.clean_session;
	m.keepalive = c->o.keepalive;
	m.client_id.ptr = (const uint8_t *)(c->client_id ? c->client_id : "");
	m.client_id.len = c->client_id ? strlen(c->client_id) : 0;
	if (c->will_topic) {
		m.has_will = true;
		m.will_qos = c->o.will_qos;
		m.will_retain = c->o.will_retain;
		m.will_topic.ptr = (const uint8_t *)c->will_topic;
		m.will_topic.len = strlen(c->will_topic);
		m.will_payload.ptr = c->will_payload;
		m.will_payload.len = c->will_len;
		m.will_props.raw.ptr = c->will_props;
		m.will_props.raw.len = c->will_props_len;
	}
	if (c->username) {
		m.has_username = true;
		m.username.ptr = (const uint8_t *)c->username;
		m.username.len = strlen(c->username);
	}
	if (c->password) {
		m.has_password = true;
		m.password.ptr = (const uint8_t *)c->password;
		m.password.len = strlen(c->password);
	}
	if (c->connect_props) {
		m.props.raw.ptr = c->connect_props;
		m.props.raw.len = c->connect_props_len;
	}
	trace(c, "sending CONNECT");
	int rc;
	OUT_ENCODE(c, connector_connect_size(&m), connector_encode_connect(buf, cap, &m, false));
	if (rc != 0) {
		close_connection(c, MQTT_CLIENT_ENOMEM);
		return;
	}
	c->state = ST_AWAIT_CONNACK;
	c->last_in_ms = c->last_out_ms = mtimer_now_ms();
	flush_out(c);
}

static void on_io(struct loop *l, struct loop_io *io, uint32_t events);

/* The connector's end: connected (and through the handshake). */
static void on_ready(struct connector *cn, struct transport *t, int fd, void *ud)
{
	struct mqtt_client *c = ud;
	(void)cn;
	c->state = ST_CONNECTING;
	if (!t && !(t = tcp_transport_new(fd))) {
		close_connection(c, MQTT_CLIENT_ENOMEM);
		return;
	}
	c->t = t;
	if (loop_io_start(c->loop, &c->io, fd, LOOP_READ, on_io) != 0) {
		close_connection(c, MQTT_CLIENT_ENOMEM);
		return;
	}
	send_connect(c);
}

static void on_failed(struct connector *cn, size_t addr, int err, const char *why, void *ud)
{
	(void)cn;
	(void)addr;
	(void)why;
	close_connection(ud, err);
}

static struct transport *wrap_transport(void *ctx, size_t addr, int fd)
{
	struct mqtt_client *c = ctx;
	(void)addr;
	return c->o.transport_new(c->o.transport_ctx, fd);
}

int mqtt_client_connect(struct mqtt_client *c)
{
	if (c->state != ST_IDLE)
		return 0;
	c->user_disconnect = false;
	c->state = ST_CONNECTING;
	int rc = connector_dial(&c->cn);
	if (rc != 0)
		c->state = ST_IDLE;
	return rc;
}

/* ---- input --------------------------------------------------------------- */

static struct out_msg *find_inflight(struct mqtt_client *c, uint16_t mid)
{
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &c->inflight)
	{
		struct out_msg *m = container_of(n, struct out_msg, link);
		if (m->mid == mid)
			return m;
	}
	return NULL;
}

static void complete_out(struct mqtt_client *c, struct out_msg *m, uint8_t reason)
{
	uint16_t mid = m->mid;
	list_remove(&m->link);
	c->inflight_count--;
	wisp_free(m);
	if (c->o.cbs && c->o.cbs->on_publish)
		c->o.cbs->on_publish(c, mid, reason, c->o.ud);
	send_queued(c);
}

/* A publish the server does not take (a limit its CONNACK said after the
 * publish was queued, or a reconnect said less): completed here, with the
 * v5 reason code the server would have used, instead of sent. */
static void refuse_out(struct mqtt_client *c, struct out_msg *m, int err)
{
	uint16_t mid = m->mid;
	trace(c, "not sending PUBLISH (m%u): %s", (unsigned)mid, mqtt_client_strerror(err));
	list_remove(&m->link);
	c->inflight_count--;
	wisp_free(m);
	if (c->o.cbs && c->o.cbs->on_publish)
		c->o.cbs->on_publish(c, mid, err == MQTT_CLIENT_EQOS ? 0x9B : 0x95, c->o.ud);
}

static bool refused(int rc) { return rc == MQTT_CLIENT_EQOS || rc == MQTT_CLIENT_ETOOLARGE; }

static struct in_msg *find_rx(struct mqtt_client *c, uint16_t mid)
{
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &c->rx_qos2)
	{
		struct in_msg *m = container_of(n, struct in_msg, link);
		if (m->mid == mid)
			return m;
	}
	return NULL;
}

static int send_ack(struct mqtt_client *c, uint8_t type, uint16_t mid)
{
	struct mqtt_ack a = {.packet_id = mid};
	int rc;
	OUT_ENCODE(c, 8, mqtt_encode_ack(buf, cap, c->o.version, type, &a));
	return rc;
}

static int handle_connack(struct mqtt_client *c, const struct mqtt_connack *ca)
{
	if (c->state != ST_AWAIT_CONNACK)
		return MQTT_CLIENT_EPROTOCOL; /* [MQTT-3.2.0-1] only one CONNACK */
	/* The id the server assigned [MQTT-3.2.2.3.7] names us from here on,
	 * in this trace already (libmosquitto takes it before its log line). */
	if (c->o.version == MQTT_PROTO_V5 && ca->props.present & MQTT_PROP_BIT(MQTT_PROP_ASSIGNED_CLIENT_ID)) {
		char *id = wisp_strndup((const char *)ca->props.assigned_client_id.ptr,
					ca->props.assigned_client_id.len);
		if (id) {
			wisp_free(c->client_id);
			c->client_id = id;
			wisp_free(c->log_name);
			c->log_name = NULL;
		}
	}
	trace(c, "received CONNACK (%u)", (unsigned)ca->code);
	c->connack_code = ca->code;
	if (ca->code != 0) {
		c->in_refusal = true;
		if (c->o.cbs && c->o.cbs->on_connect)
			c->o.cbs->on_connect(c, ca->code, false, c->o.ud);
		c->in_refusal = false;
		return MQTT_CLIENT_EREFUSED;
	}
	c->state = ST_CONNECTED;
	connector_connected(&c->cn);
	/* No more unacknowledged QoS 1/2 than the server's Receive Maximum
	 * [MQTT-3.3.4-9]. */
	struct connector_limits lim;
	connector_limits(ca, &lim);
	c->remote_receive_max = lim.receive_max;
	c->remote_packet_max = lim.packet_max;
	c->remote_max_qos = lim.max_qos;
	/* Resend what the previous connection left unacknowledged, in order
	 * ([MQTT-4.4.0-1]), then fill the window from the queue. */
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &c->inflight)
	{
		struct out_msg *m = container_of(n, struct out_msg, link);
		int rc = send_out_msg(c, m);
		if (refused(rc))
			refuse_out(c, m, rc);
		else if (rc != 0)
			return MQTT_CLIENT_ENOMEM;
	}
	send_queued(c);
	arm_keepalive(c);
	if (c->o.cbs && c->o.cbs->on_connect)
		c->o.cbs->on_connect(c, 0, ca->session_present, c->o.ud);
	return 0;
}

static void free_aliases(struct mqtt_client *c)
{
	if (!c->aliases)
		return;
	for (size_t i = 0; i < c->alias_max; i++)
		wisp_free(c->aliases[i]);
	wisp_free(c->aliases);
	c->aliases = NULL;
}

/* A v5 Topic Alias from the server [MQTT-3.3.2.3.4]: with a topic it sets
 * the alias, without one it stands for the topic set before. A PUBLISH
 * with a topic is taken whatever its alias, as libmosquitto takes it, but
 * only aliases up to the maximum we declared are remembered
 * [MQTT-3.3.2-8]; a topic-less one whose alias is unknown is a protocol
 * error. */
static int resolve_alias(struct mqtt_client *c, struct mqtt_publish *p)
{
	if (c->o.version != MQTT_PROTO_V5 || !(p->props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)))
		return 0;
	uint16_t a = p->props.topic_alias;
	if (a == 0 || a > c->alias_max)
		return p->topic.len ? 0 : MQTT_CLIENT_EPROTOCOL;
	if (!c->aliases && !(c->aliases = wisp_calloc(c->alias_max, sizeof *c->aliases)))
		return MQTT_CLIENT_ENOMEM;
	if (p->topic.len) {
		char *t = wisp_strndup((const char *)p->topic.ptr, p->topic.len);
		if (!t)
			return MQTT_CLIENT_ENOMEM;
		wisp_free(c->aliases[a - 1]);
		c->aliases[a - 1] = t;
		return 0;
	}
	if (!c->aliases[a - 1])
		return MQTT_CLIENT_EPROTOCOL;
	p->topic.ptr = (const uint8_t *)c->aliases[a - 1];
	p->topic.len = strlen(c->aliases[a - 1]);
	return 0;
}

/* Keeps an incoming QoS 2 PUBLISH until its PUBREL. */
static int hold_qos2(struct mqtt_client *c, const struct mqtt_publish *p)
{
	size_t cap = p->topic.len + p->props.raw.len + p->payload.len + 16;
	struct in_msg *m = wisp_malloc(sizeof *m + cap);
	if (!m)
		return MQTT_CLIENT_ENOMEM;
	ssize_t n = mqtt_encode_publish(m->packet, cap, c->o.version, p);
	if (n <= 0) {
		wisp_free(m);
		return MQTT_CLIENT_EPROTOCOL;
	}
	m->mid = p->packet_id;
	m->len = (size_t)n;
	list_push_back(&c->rx_qos2, &m->link);
	return 0;
}

static int handle_publish(struct mqtt_client *c, const struct mqtt_publish *in)
{
	struct mqtt_publish resolved = *in, *p = &resolved;
	int rc = resolve_alias(c, p);
	if (rc != 0)
		return rc;
	trace(c, "received PUBLISH (d%d, q%u, r%d, m%u, '%.*s', ... (%zu bytes))", p->dup ? 1 : 0,
	      (unsigned)p->qos, p->retain ? 1 : 0, (unsigned)p->packet_id, (int)p->topic.len,
	      (const char *)p->topic.ptr, p->payload.len);
	if (p->qos == 2) {
		/* Held until PUBREL; a DUP resend of a held id is not stored
		 * twice ([MQTT-4.3.3-2], method A). */
		if (!find_rx(c, p->packet_id) && (rc = hold_qos2(c, p)) != 0)
			return rc;
		trace(c, "sending PUBREC (m%u, rc0)", (unsigned)p->packet_id);
		return send_ack(c, MQTT_PKT_PUBREC, p->packet_id);
	}
	if (p->qos == 1) {
		/* Ack before delivery, like libmosquitto: the callback may
		 * disconnect, and the ack must still go out first. */
		trace(c, "sending PUBACK (m%u, rc0)", (unsigned)p->packet_id);
		rc = send_ack(c, MQTT_PKT_PUBACK, p->packet_id);
	}
	if (rc == 0 && c->o.cbs && c->o.cbs->on_message)
		c->o.cbs->on_message(c, p, c->o.ud);
	return rc;
}

static int handle_pubrel(struct mqtt_client *c, uint16_t mid)
{
	trace(c, "received PUBREL (Mid: %u)", (unsigned)mid);
	trace(c, "sending PUBCOMP (m%u)", (unsigned)mid);
	int rc = send_ack(c, MQTT_PKT_PUBCOMP, mid);
	struct in_msg *m = find_rx(c, mid);
	if (!m)
		return rc;
	list_remove(&m->link);
	if (rc == 0 && c->o.cbs && c->o.cbs->on_message) {
		struct mqtt_codec_opts copts = {.version = c->o.version};
		struct mqtt_pkt pkt;
		if (mqtt_decode(m->packet, m->len, &copts, &pkt) == (ssize_t)m->len)
			c->o.cbs->on_message(c, &pkt.u.publish, c->o.ud);
		else
			rc = MQTT_CLIENT_EPROTOCOL; /* we encoded it: cannot happen */
	}
	wisp_free(m);
	return rc;
}

static int handle_ack(struct mqtt_client *c, uint8_t type, const struct mqtt_ack *a)
{
	struct out_msg *m;
	switch (type) {
	case MQTT_PKT_PUBACK:
		trace(c, "received PUBACK (Mid: %u, RC:%u)", (unsigned)a->packet_id, (unsigned)a->reason);
		m = find_inflight(c, a->packet_id);
		if (m && m->qos == 1 && m->state == OUT_WAIT_ACK)
			complete_out(c, m, a->reason);
		return 0;
	case MQTT_PKT_PUBREC:
		trace(c, "received PUBREC (Mid: %u)", (unsigned)a->packet_id);
		m = find_inflight(c, a->packet_id);
		if (m && m->qos == 2 && m->state == OUT_WAIT_ACK) {
			if (a->reason >= 0x80) { /* v5: the flow ends here */
				complete_out(c, m, a->reason);
				return 0;
			}
			m->state = OUT_WAIT_COMP;
			return send_out_msg(c, m);
		}
		if (!m) { /* unknown id: answer so the broker can finish */
			trace(c, "sending PUBREL (m%u)", (unsigned)a->packet_id);
			return send_ack(c, MQTT_PKT_PUBREL, a->packet_id);
		}
		return 0;
	case MQTT_PKT_PUBCOMP:
		trace(c, "received PUBCOMP (Mid: %u, RC:%u)", (unsigned)a->packet_id, (unsigned)a->reason);
		m = find_inflight(c, a->packet_id);
		if (m && m->state == OUT_WAIT_COMP)
			complete_out(c, m, a->reason);
		return 0;
	case MQTT_PKT_PUBREL:
		return handle_pubrel(c, a->packet_id);
	}
	return 0;
}

static int handle_packet(struct mqtt_client *c, const struct mqtt_pkt *pkt)
{
	if (c->state == ST_AWAIT_CONNACK && pkt->type != MQTT_PKT_CONNACK)
		return MQTT_CLIENT_EPROTOCOL; /* [MQTT-3.2.0-1] CONNACK comes first */
	switch (pkt->type) {
	case MQTT_PKT_CONNACK:
		return handle_connack(c, &pkt->u.connack);
	case MQTT_PKT_PUBLISH:
		return handle_publish(c, &pkt->u.publish);
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBREL:
	case MQTT_PKT_PUBCOMP:
		return handle_ack(c, pkt->type, &pkt->u.ack);
	case MQTT_PKT_SUBACK:
		trace(c, "received SUBACK");
		if (c->o.cbs && c->o.cbs->on_subscribe)
			c->o.cbs->on_subscribe(c, pkt->u.suback.packet_id, pkt->u.suback.codes.ptr,
					       pkt->u.suback.codes.len, c->o.ud);
		return 0;
	case MQTT_PKT_UNSUBACK:
		trace(c, "received UNSUBACK");
		if (c->o.cbs && c->o.cbs->on_unsubscribe)
			c->o.cbs->on_unsubscribe(c, pkt->u.suback.packet_id, c->o.ud);
		return 0;
	case MQTT_PKT_PINGRESP:
		trace(c, "received PINGRESP");
		c->ping_outstanding = false;
		return 0;
	case MQTT_PKT_DISCONNECT:
		if (c->o.version == MQTT_PROTO_V5) {
			/* libmosquitto's line has no "Client <id>" in front. */
			trace_bare(c, "Received DISCONNECT (%u)", (unsigned)pkt->u.reason.reason);
			c->disconnect_reason = pkt->u.reason.reason;
			return MQTT_CLIENT_ESERVER;
		}
		return MQTT_CLIENT_EPROTOCOL;
	}
	return MQTT_CLIENT_EPROTOCOL; /* server-bound packet types */
}

/* Decodes and handles every whole packet in the read buffer. */
static int process_input(struct mqtt_client *c)
{
	struct mqtt_codec_opts copts = {.max_packet_size = c->o.max_packet_size, .version = c->o.version};
	size_t off = 0;
	int rc = 0;
	/* Nothing may follow our DISCONNECT, so input stops with CLOSING. */
	while (off < c->rlen && (c->state == ST_AWAIT_CONNACK || c->state == ST_CONNECTED)) {
		struct mqtt_pkt pkt;
		ssize_t n = mqtt_decode(c->rbuf + off, c->rlen - off, &copts, &pkt);
		if (n == 0) {
			ssize_t need = mqtt_frame_size(c->rbuf + off, c->rlen - off, &copts);
			if (need > 0 && (size_t)need > c->rcap) {
				/* Grow so the whole packet fits once compacted. */
				uint8_t *b = wisp_realloc(c->rbuf, (size_t)need);
				if (!b) {
					rc = MQTT_CLIENT_ENOMEM;
					break;
				}
				c->rbuf = b;
				c->rcap = (size_t)need;
			} else if (need < 0) {
				rc = MQTT_CLIENT_EPROTOCOL;
			}
			break;
		}
		if (n < 0) {
			rc = MQTT_CLIENT_EPROTOCOL;
			break;
		}
		off += (size_t)n;
		c->last_in_ms = mtimer_now_ms();
		rc = handle_packet(c, &pkt);
		if (rc != 0)
			break;
	}
	if (c->rlen && off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	return rc;
}

static int read_input(struct mqtt_client *c)
{
	for (int i = 0; i < READS_PER_EVENT && c->t; i++) {
		if (c->rcap - c->rlen < 64) {
			size_t ncap = c->rcap ? c->rcap * 2 : READ_BUF_INITIAL;
			uint8_t *b = wisp_realloc(c->rbuf, ncap);
			if (!b)
				return MQTT_CLIENT_ENOMEM;
			c->rbuf = b;
			c->rcap = ncap;
		}
		ssize_t n = transport_read(c->t, c->rbuf + c->rlen, c->rcap - c->rlen);
		if (n == WISP_EAGAIN)
			return 0;
		if (n < 0)
			return MQTT_CLIENT_ELOST;
		c->rlen += (size_t)n;
		int rc = process_input(c);
		if (rc != 0)
			return rc;
		if (c->state != ST_CONNECTED && c->state != ST_AWAIT_CONNACK)
			return 0;
	}
	return 0;
}

/* ---- output ---------------------------------------------------------------- */

static void update_interest(struct mqtt_client *c)
{
	if (!c->t)
		return;
	uint32_t ev = LOOP_READ;
	if (c->olen > c->ooff || (c->t->want & TRANSPORT_WANT_WRITE))
		ev |= LOOP_WRITE;
	loop_io_set(c->loop, &c->io, ev);
}

/* Writes what it can; closes the connection after a queued DISCONNECT has
 * gone out. */
static void flush_out(struct mqtt_client *c)
{
	if (!c->t)
		return;
	c->t->want = 0;
	for (int i = 0; i < READS_PER_EVENT && c->olen > c->ooff; i++) {
		struct iovec iov = {.iov_base = c->obuf + c->ooff, .iov_len = c->olen - c->ooff};
		ssize_t n = transport_writev(c->t, &iov, 1);
		if (n == WISP_EAGAIN)
			break;
		if (n < 0) {
			close_connection(c, c->state == ST_CLOSING ? MQTT_CLIENT_OK : MQTT_CLIENT_ELOST);
			return;
		}
		c->ooff += (size_t)n;
		c->last_out_ms = mtimer_now_ms();
	}
	if (c->olen == c->ooff) {
		c->ooff = c->olen = 0;
		if (c->ocap > OUT_BUF_KEEP) {
			wisp_free(c->obuf);
			c->obuf = NULL;
			c->ocap = 0;
		}
		if (c->state == ST_CLOSING) {
			close_connection(c, MQTT_CLIENT_OK);
			return;
		}
	}
	update_interest(c);
}

static void on_io(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	struct mqtt_client *c = container_of(io, struct mqtt_client, io);
	switch (c->state) {
	case ST_IDLE:
		return; /* stale event for a socket closed earlier this turn */
	default:
		break;
	}
	if (c->olen > c->ooff)
		flush_out(c);
	if (c->state == ST_IDLE)
		return;
	int rc = read_input(c);
	if (rc != 0) {
		/* Peer closing after our DISCONNECT is the normal end. */
		close_connection(c, c->state == ST_CLOSING && rc == MQTT_CLIENT_ELOST ? MQTT_CLIENT_OK : rc);
		return;
	}
	if (c->state != ST_IDLE)
		flush_out(c);
}

/* Moves queued QoS>0 publishes into the window while it has room. */
static void send_queued(struct mqtt_client *c)
{
	size_t max = c->o.max_inflight ? c->o.max_inflight : DEFAULT_INFLIGHT;
	if (c->remote_receive_max && c->remote_receive_max < max)
		max = c->remote_receive_max;
	while (c->inflight_count < max && !list_empty(&c->queued)) {
		struct out_msg *m = container_of(list_first(&c->queued), struct out_msg, link);
		list_remove(&m->link);
		list_push_back(&c->inflight, &m->link);
		c->inflight_count++;
		m->state = OUT_WAIT_ACK;
		int rc = c->state == ST_CONNECTED ? send_out_msg(c, m) : 0;
		if (refused(rc)) {
			refuse_out(c, m, rc);
		} else if (rc != 0) {
			close_connection(c, MQTT_CLIENT_ENOMEM);
			return;
		}
	}
}

/* ---- public API --------------------------------------------------------- */

static uint16_t alloc_mid(struct mqtt_client *c)
{
	/* Skips 0 [MQTT-2.3.1-1]; a wrapped id still in flight is rare with a
	 * window of at most 65535, and skipped. */
	for (int i = 0; i < 65535; i++) {
		uint16_t mid = ++c->next_mid;
		if (mid == 0)
			mid = c->next_mid = 1;
		if (!find_inflight(c, mid))
			return mid;
	}
	return c->next_mid;
}

int mqtt_client_publish(struct mqtt_client *c, const char *topic, const void *payload, size_t len,
			uint8_t qos, bool retain, uint16_t *mid_out)
{
	return mqtt_client_publish_props(c, topic, payload, len, qos, retain, NULL, 0, mid_out);
}

int mqtt_client_publish_props(struct mqtt_client *c, const char *topic, const void *payload, size_t len,
			      uint8_t qos, bool retain, const uint8_t *props, size_t props_len,
			      uint16_t *mid_out)
{
	size_t tlen = strlen(topic);
	if (c->o.version != MQTT_PROTO_V5)
		props_len = 0;
	if (c->state == ST_CONNECTED) { /* the server's limits are known: said now, not on_publish later */
		int rc = server_takes(c, tlen, props_len, len, qos);
		if (rc != 0)
			return rc;
	}
	uint16_t mid = alloc_mid(c);
	if (mid_out)
		*mid_out = mid;
	if (qos == 0) {
		if (c->state != ST_CONNECTED)
			return MQTT_CLIENT_ELOST; /* QoS 0 is not queued offline */
		trace(c, "sending PUBLISH (d0, q0, r%d, m%u, '%s', ... (%zu bytes))", retain ? 1 : 0,
		      (unsigned)mid, tlen ? topic : "(null)", len);
		int rc = encode_publish(c, NULL, (const uint8_t *)topic, tlen, props, props_len, payload, len, 0,
					retain, false);
		if (rc != 0)
			return rc;
		flush_out(c);
		if (c->o.cbs && c->o.cbs->on_publish)
			c->o.cbs->on_publish(c, mid, 0, c->o.ud);
		return 0;
	}
	struct out_msg *m = wisp_malloc(sizeof *m + tlen + props_len + len);
	if (!m)
		return MQTT_CLIENT_ENOMEM;
	m->props_len = props_len;
	if (props_len)
		memcpy(m->data + tlen, props, props_len);
	m->mid = mid;
	m->qos = qos;
	m->retain = retain;
	m->state = OUT_QUEUED;
	m->sent = false;
	m->topic_len = tlen;
	m->payload_len = len;
	memcpy(m->data, topic, tlen);
	if (len)
		memcpy(m->data + tlen + props_len, payload, len);
	list_push_back(&c->queued, &m->link);
	send_queued(c);
	if (c->state == ST_CONNECTED)
		flush_out(c);
	return 0;
}

int mqtt_client_subscribe(struct mqtt_client *c, const char *const *filters, const uint8_t *options,
			  size_t count, const uint8_t *props, size_t props_len, uint16_t *mid_out)
{
	if (c->state != ST_CONNECTED)
		return MQTT_CLIENT_ELOST;
	struct mqtt_str *f = wisp_calloc(count ? count : 1, sizeof *f);
	if (!f)
		return MQTT_CLIENT_ENOMEM;
	size_t hint = 16 + props_len;
	for (size_t i = 0; i < count; i++) {
		f[i].ptr = (const uint8_t *)filters[i];
		f[i].len = strlen(filters[i]);
		hint += f[i].len + 3;
	}
	uint16_t mid = alloc_mid(c);
	for (size_t i = 0; i < count; i++)
		trace(c, "sending SUBSCRIBE (Mid: %u, Topic: %s, QoS: %u, Options: 0x%02x)", (unsigned)mid,
		      filters[i], (unsigned)(options[i] & MQTT_SUBOPT_QOS_MASK),
		      (unsigned)(options[i] & ~MQTT_SUBOPT_QOS_MASK));
	struct mqtt_props pr = {.raw = {props, props_len}};
	int rc;
	OUT_ENCODE(c, hint, mqtt_encode_subscribe(buf, cap, c->o.version, mid, &pr, f, options, count));
	wisp_free(f);
	if (rc == 0) {
		if (mid_out)
			*mid_out = mid;
		flush_out(c);
	}
	return rc;
}

int mqtt_client_unsubscribe(struct mqtt_client *c, const char *const *filters, size_t count,
			    const uint8_t *props, size_t props_len, uint16_t *mid_out)
{
	if (c->state != ST_CONNECTED)
		return MQTT_CLIENT_ELOST;
	struct mqtt_str *f = wisp_calloc(count ? count : 1, sizeof *f);
	if (!f)
		return MQTT_CLIENT_ENOMEM;
	size_t hint = 16 + props_len;
	for (size_t i = 0; i < count; i++) {
		f[i].ptr = (const uint8_t *)filters[i];
		f[i].len = strlen(filters[i]);
		hint += f[i].len + 2;
	}
	uint16_t mid = alloc_mid(c);
	for (size_t i = 0; i < count; i++)
		trace(c, "sending UNSUBSCRIBE (Mid: %u, Topic: %s)", (unsigned)mid, filters[i]);
	struct mqtt_props pr = {.raw = {props, props_len}};
	int rc;
	OUT_ENCODE(c, hint, mqtt_encode_unsubscribe(buf, cap, c->o.version, mid, &pr, f, count));
	wisp_free(f);
	if (rc == 0) {
		if (mid_out)
			*mid_out = mid;
		flush_out(c);
	}
	return rc;
}

void mqtt_client_disconnect(struct mqtt_client *c, uint8_t reason)
{
	mqtt_client_disconnect_props(c, reason, NULL, 0);
}

void mqtt_client_disconnect_props(struct mqtt_client *c, uint8_t reason, const uint8_t *props,
				  size_t props_len)
{
	if (c->in_refusal) {
		/* mosquitto_sub disconnects from inside its CONNACK callback;
		 * libmosquitto writes that DISCONNECT and traces it. The refused
		 * connection closes when the callback returns. */
		trace(c, "sending DISCONNECT");
		c->want_reconnect = false;
		c->user_disconnect = true;
		return;
	}
	if (c->user_disconnect && (c->state == ST_CLOSING || c->state == ST_IDLE)) {
		/* Asked twice (mosquitto_sub -E after all subscriptions were
		 * denied): libmosquitto writes a second DISCONNECT on the
		 * closing socket and traces it; the trace is what shows. */
		trace(c, "sending DISCONNECT");
		return;
	}
	c->want_reconnect = false;
	c->user_disconnect = true;
	if (c->state != ST_CONNECTED) {
		if (c->state != ST_CLOSING)
			close_connection(c, MQTT_CLIENT_OK);
		return;
	}
	trace(c, "sending DISCONNECT");
	struct mqtt_reason_pkt r = {.reason = reason, .props.raw = {props, props_len}};
	int rc;
	OUT_ENCODE(c, 8 + props_len, mqtt_encode_reason(buf, cap, c->o.version, MQTT_PKT_DISCONNECT, &r));
	if (rc != 0) {
		close_connection(c, MQTT_CLIENT_OK);
		return;
	}
	c->state = ST_CLOSING;
	flush_out(c);
}

struct mqtt_client *mqtt_client_new(struct loop *l, struct mtimers *timers, const struct mqtt_client_opts *o)
{
	struct mqtt_client *c = wisp_calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->loop = l;
	c->timers = timers;
	c->o = *o;
	if (!c->o.version)
		c->o.version = MQTT_PROTO_V311;
	c->io.fd = -1;
	c->remote_max_qos = 2; /* until a v5 CONNACK says less */
	list_init(&c->inflight);
	list_init(&c->queued);
	list_init(&c->rx_qos2);
	mtimer_init(&c->ka_timer, on_keepalive, c);
	c->want_reconnect = o->reconnect;
	struct connector_addr addr = {.host = o->host ? o->host : "localhost", .port = o->port};
	struct connector_opts co = {
		.addrs = &addr,
		.addr_count = 1,
		.resolved = o->addrs,
		.bind_address = o->bind_address,
		.nodelay = o->nodelay,
		.backoff_min_ms = o->reconnect_min_ms,
		.backoff_max_ms = o->reconnect_max_ms,
		.transport_new = o->transport_new ? wrap_transport : NULL,
		.transport_ctx = c,
		.on_ready = on_ready,
		.on_failed = on_failed,
		.ud = c,
	};
	if (connector_init(&c->cn, l, timers, &co) != 0) {
		wisp_free(c);
		return NULL;
	}
	if (o->client_id && !(c->client_id = dup_str(o->client_id)))
		goto fail;
	if (o->log_name && !(c->log_name = dup_str(o->log_name)))
		goto fail;
	if (o->username && !(c->username = dup_str(o->username)))
		goto fail;
	if (o->password && !(c->password = dup_str(o->password)))
		goto fail;
	if (o->will_topic) {
		if (!(c->will_topic = dup_str(o->will_topic)))
			goto fail;
		if (!(c->will_payload = dup_bytes(o->will_payload, o->will_len)))
			goto fail;
		c->will_len = o->will_len;
	}
	if (o->connect_props && o->connect_props_len) {
		if (!(c->connect_props = dup_bytes(o->connect_props, o->connect_props_len)))
			goto fail;
		c->connect_props_len = o->connect_props_len;
		struct mqtt_props view = {.raw = {c->connect_props, c->connect_props_len}};
		struct mqtt_prop_iter it;
		struct mqtt_prop p;
		mqtt_props_iter_init(&view, &it);
		while (mqtt_props_next(&it, &p))
			if (p.id == MQTT_PROP_TOPIC_ALIAS_MAXIMUM)
				c->alias_max = (uint16_t)p.value;
	}
	if (o->will_topic && o->will_props && o->will_props_len) {
		if (!(c->will_props = dup_bytes(o->will_props, o->will_props_len)))
			goto fail;
		c->will_props_len = o->will_props_len;
	}
	return c;
fail:
	mqtt_client_free(c);
	return NULL;
}

/* Frees every record of a list whose node sits `off` bytes into it. */
static void free_msgs(struct list_node *head, size_t off)
{
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, head)
	{
		list_remove(n);
		wisp_free((char *)n - off);
	}
}

void mqtt_client_free(struct mqtt_client *c)
{
	if (!c)
		return;
	c->want_reconnect = false;
	if (c->t) {
		loop_io_stop(c->loop, &c->io);
		transport_close(c->t);
		c->t = NULL;
	}
	connector_free(&c->cn);
	mtimer_stop(c->timers, &c->ka_timer);
	free_msgs(&c->inflight, offsetof(struct out_msg, link));
	free_msgs(&c->queued, offsetof(struct out_msg, link));
	wisp_free(c->rbuf);
	wisp_free(c->obuf);
	free_msgs(&c->rx_qos2, offsetof(struct in_msg, link));
	wisp_free(c->client_id);
	wisp_free(c->log_name);
	wisp_free(c->username);
	wisp_free(c->password);
	wisp_free(c->will_topic);
	wisp_free(c->will_payload);
	wisp_free(c->connect_props);
	wisp_free(c->will_props);
	free_aliases(c);
	wisp_free(c);
}

void mqtt_client_set_reconnect(struct mqtt_client *c, bool on)
{
	c->want_reconnect = on;
	if (!on && c->state == ST_IDLE)
		connector_cancel(&c->cn); /* a backoff, or the attempt after it, ends */
}
bool mqtt_client_is_connected(const struct mqtt_client *c) { return c->state == ST_CONNECTED; }
size_t mqtt_client_pending(const struct mqtt_client *c)
{
	size_t n = c->inflight_count;
	const struct list_node *p;
	for (p = c->queued.next; p != &c->queued; p = p->next)
		n++;
	return n;
}
size_t mqtt_client_out_pending(const struct mqtt_client *c) { return c->olen - c->ooff; }
int mqtt_client_errno(const struct mqtt_client *c) { return connector_errno(&c->cn); }
bool mqtt_client_cert_rejected(const struct mqtt_client *c) { return connector_cert_rejected(&c->cn); }
uint8_t mqtt_client_connack_code(const struct mqtt_client *c) { return c->connack_code; }
uint8_t mqtt_client_disconnect_reason(const struct mqtt_client *c) { return c->disconnect_reason; }
const char *mqtt_client_id(const struct mqtt_client *c) { return c->client_id; }
void *mqtt_client_ud(const struct mqtt_client *c) { return c->o.ud; }
