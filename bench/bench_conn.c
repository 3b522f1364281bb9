/*
 * wisp_bench connections: TCP connect, optional TLS, and the MQTT 3.1.1 or
 * MQTT 5 flows a benchmark client needs (CONNECT, SUBSCRIBE, PUBLISH at QoS
 * 0/1/2 in both directions, DISCONNECT). The 3.1.1 path writes the same
 * bytes as before v5 was added; v5 adds, on request, the PUBLISH properties
 * of a realistic message (--props) and topic aliases (--topic-alias).
 *
 * I/O model: level-triggered epoll. Reads go into a per-connection buffer
 * that starts small (idle connections must stay cheap for the conns
 * scenario) and doubles while reads fill it. Everything a connection sends
 * is appended to its output buffer and written once per loop turn by
 * bconn_flush_all(), so acks and publishes coalesce into few syscalls and
 * the generator spends its CPU on the broker, not on itself. EPOLLOUT is
 * armed only while output is left over.
 *
 * Integrity: each subscriber keeps the next expected sequence number per
 * publisher. Higher means a gap (counted as lost), lower means a duplicate
 * (or reordering, which MQTT forbids for one publisher and topic
 * [MQTT-4.6.0-6]). A QoS 2 PUBLISH whose packet id is still awaiting PUBREL
 * is a protocol resend and is not delivered twice [MQTT-4.3.3-2].
 * In v5 every delivery's properties are checked against what was published
 * (bad_props): the same content type, user property and payload format, a
 * remaining expiry not above the one sent [MQTT-3.3.2-6], nothing else; and
 * a topic alias must stand for the topic the message was published on.
 *
 * Any packet the run did not ask for, a refused CONNACK or SUBACK, or a
 * connection closed by the broker is fatal: r->error is set and the run
 * stops. Single-threaded.
 */
#include "bench.h"

#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "err.h"
#include "tls.h"
#include "transport.h"
#include "ws.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define RBUF_INITIAL 512u
#define RBUF_MAX (64u * 1024u * 1024u)
#define RBUF_GROW_LIMIT (256u * 1024u)
/* Publishers stop filling a connection whose socket is this far behind. */
#define WBUF_PUBLISH_LIMIT (256u * 1024u)

/* --props: what every PUBLISH carries, and every delivery must carry back
 * (user properties unchanged and in order [MQTT-3.3.2-17][MQTT-3.3.2-18],
 * content type and payload format unaltered [MQTT-3.3.2-20][MQTT-3.3.2-4]). */
#define PROP_CONTENT_TYPE "text/plain; charset=utf-8"
#define PROP_USER_KEY "source"
#define PROP_USER_VALUE "wisp_bench"
#define PROP_EXPIRY_S 3600u
#define PROP_BLOCK_MAX 96u
/* Text header (--props): 6 bits per printable character from '0'. */
#define TEXT_BASE 0x30u
#define TEXT_IDX_CHARS 3
#define TEXT_SEQ_CHARS 6
#define TEXT_TIME_CHARS 7

/* --ws: the subprotocol offered, as MQTT clients do [MQTT-6.0.0-4]. */
static const char *const ws_subprotocols[] = {"mqtt", NULL};

/* Packet id states of a publisher. */
enum { PID_FREE = 0, PID_AWAIT_ACK = 1, PID_AWAIT_COMP = 2 };

__attribute__((format(printf, 2, 3)))
static void fail(struct bench_run *r, const char *fmt, ...)
{
	if (r->error[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof r->error, fmt, ap);
	va_end(ap);
}

static void set_interest(struct bench_run *r, struct bconn *c)
{
	uint32_t ev;
	if (c->fd < 0)
		return;
	if (c->state == BC_CONNECTING)
		ev = EPOLLOUT;
	else {
		ev = EPOLLIN;
		if (c->wlen > c->woff || (c->t && (c->t->want & TRANSPORT_WANT_WRITE)))
			ev |= EPOLLOUT;
	}
	if (ev == c->events)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = c};
	int op = c->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	if (epoll_ctl(r->epfd, op, c->fd, &e) == -1) {
		fail(r, "epoll_ctl: %s", strerror(errno));
		return;
	}
	c->events = ev;
}

static void mark_dirty(struct bench_run *r, struct bconn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->next_dirty = r->dirty;
	r->dirty = c;
}

/* Room for `need` more output bytes; false only when out of memory. */
static bool wbuf_reserve(struct bench_run *r, struct bconn *c, size_t need)
{
	if (c->wcap - c->wlen >= need)
		return true;
	if (c->woff > 0) {
		memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
		c->wlen -= c->woff;
		c->woff = 0;
		if (c->wcap - c->wlen >= need)
			return true;
	}
	size_t cap = c->wcap ? c->wcap : 256;
	while (cap - c->wlen < need)
		cap *= 2;
	uint8_t *p = wisp_realloc(c->wbuf, cap);
	if (!p) {
		fail(r, "out of memory");
		return false;
	}
	c->wbuf = p;
	c->wcap = cap;
	return true;
}

size_t bconn_pending_out(const struct bconn *c)
{
	return c->wlen - c->woff;
}

/* Appends an encoded packet: `enc` returns the length or a negative MQTT_E*. */
#define APPEND(r, c, maxlen, call)                                                                  \
	do {                                                                                         \
		if (!wbuf_reserve((r), (c), (maxlen)))                                               \
			return;                                                                      \
		uint8_t *buf = (c)->wbuf + (c)->wlen;                                                \
		size_t cap = (c)->wcap - (c)->wlen;                                                  \
		ssize_t n_ = (call);                                                                 \
		if (n_ < 0) {                                                                        \
			fail((r), "encode: %s", mqtt_strerror((int)n_));                             \
			return;                                                                      \
		}                                                                                    \
		(c)->wlen += (size_t)n_;                                                             \
		mark_dirty((r), (c));                                                                \
	} while (0)

static void send_ack(struct bench_run *r, struct bconn *c, uint8_t type, uint16_t pid)
{
	struct mqtt_ack a = {.packet_id = pid};
	APPEND(r, c, 4, mqtt_encode_ack(buf, cap, r->o->version, type, &a));
}

static void send_connect(struct bench_run *r, struct bconn *c)
{
	char id[48];
	int n = snprintf(id, sizeof id, "wb%ld-%u", (long)getpid(), c->index);
	struct mqtt_connect m = {
		.version = r->o->version,
		/* Persistent subscribers make a durable broker write every QoS 1/2
		 * delivery to its store before acknowledging the publisher. */
		.clean_start = !(r->o->persistent && c->sub),
		.keepalive = r->o->keepalive,
		.client_id = {(const uint8_t *)id, (size_t)n},
	};
	uint8_t props[16];
	size_t plen = 0;
	if (r->o->version == MQTT_PROTO_V5) {
		/* v5 ends a session at disconnect unless asked [MQTT-3.1.2-23];
		 * persistent subscribers keep theirs as in 3.1.1. */
		if (!m.clean_start)
			(void)mqtt_props_put_u32(props, sizeof props, &plen, MQTT_PROP_SESSION_EXPIRY, UINT32_MAX);
		if (r->o->topic_alias && c->sub)
			(void)mqtt_props_put_u16(props, sizeof props, &plen, MQTT_PROP_TOPIC_ALIAS_MAXIMUM,
						 BENCH_TOPIC_ALIAS_MAX);
		m.props.raw = (struct mqtt_str){props, plen};
	}
	APPEND(r, c, 128, mqtt_encode_connect(buf, cap, &m));
	c->state = BC_AWAIT_CONNACK;
}

static void send_subscribe(struct bench_run *r, struct bconn *c)
{
	struct mqtt_str f = {(const uint8_t *)c->sub->filter, strlen(c->sub->filter)};
	uint8_t opt = r->o->qos;
	APPEND(r, c, 16 + f.len, mqtt_encode_subscribe(buf, cap, r->o->version, 1, NULL, &f, &opt, 1));
	c->state = BC_AWAIT_SUBACK;
}

void bconn_ping(struct bench_run *r, struct bconn *c)
{
	APPEND(r, c, 2, mqtt_encode_empty(buf, cap, MQTT_PKT_PINGREQ));
	r->ping_sent_ns = bench_now_ns();
}

void bconn_disconnect(struct bench_run *r, struct bconn *c)
{
	if (c->state != BC_READY && c->state != BC_AWAIT_CONNACK && c->state != BC_AWAIT_SUBACK)
		return;
	APPEND(r, c, 2, mqtt_encode_empty(buf, cap, MQTT_PKT_DISCONNECT));
}

static void become_ready(struct bench_run *r, struct bconn *c)
{
	c->state = BC_READY;
	r->not_ready--;
	r->connecting--;
}

void bconn_close(struct bench_run *r, struct bconn *c)
{
	if (c->t)
		transport_close(c->t);
	else if (c->fd >= 0)
		close(c->fd);
	if (c->state == BC_CONNECTING || c->state == BC_HANDSHAKE || c->state == BC_AWAIT_CONNACK ||
	    c->state == BC_AWAIT_SUBACK)
		r->connecting--;
	c->t = NULL;
	c->fd = -1;
	c->events = 0;
	wisp_free(c->rbuf);
	wisp_free(c->wbuf);
	c->rbuf = c->wbuf = NULL;
	c->rlen = c->rcap = c->wlen = c->woff = c->wcap = 0;
	c->state = BC_CLOSED;
}

int bconn_start(struct bench_run *r, struct bconn *c)
{
	const struct sockaddr_storage *dst = c->on_port2 && r->dst2 ? r->dst2 : r->dst;
	int fd = socket(dst->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		fail(r, "socket: %s%s", strerror(errno),
		     errno == EMFILE ? " (raise the open-file limit: ulimit -n)" : "");
		return -1;
	}
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (r->o->src_addrs > 1 && dst->ss_family == AF_INET) {
		/* Spread source addresses so ports are picked per 4-tuple at
		 * connect() time, not reserved per address by bind(). */
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_addr.s_addr = htonl(0x7f000001u + c->index % r->o->src_addrs);
		(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(fd, (struct sockaddr *)&src, sizeof src) == -1) {
			fail(r, "bind 127.0.0.%u: %s", 1 + c->index % r->o->src_addrs, strerror(errno));
			close(fd);
			return -1;
		}
	}
	c->fd = fd;
	c->events = 0;
	c->started_ns = bench_now_ns();
	r->connecting++;
	c->state = BC_CONNECTING;
	int rc;
	do
		rc = connect(fd, (const struct sockaddr *)dst, (socklen_t)r->dst_len);
	while (rc == -1 && errno == EINTR);
	if (rc == -1 && errno != EINPROGRESS) {
		if (errno == ECONNREFUSED)
			r->refused = true;
		fail(r, "connect: %s", strerror(errno));
		bconn_close(r, c);
		return -1;
	}
	set_interest(r, c);
	return 0;
}

static void handshake(struct bench_run *r, struct bconn *c)
{
	int rc = transport_handshake(c->t);
	if (rc == WISP_EAGAIN) {
		set_interest(r, c);
		return;
	}
	if (rc != 0) {
		char why[160];
		transport_last_error(c->t, why, sizeof why);
		fail(r, "%s handshake failed: %s%s%s", r->o->ws ? "WebSocket" : "TLS", wisp_strerror(rc),
		     why[0] ? ": " : "", why);
		return;
	}
	c->t->want = 0;
	if (r->o->resume) {
		if (tls_transport_resumed(ws_transport_inner(c->t)))
			r->c.resumed++;
		else if (!c->session && tls_transport_save_session(ws_transport_inner(c->t), &c->session) != 0)
			fail(r, "connection %u: cannot save the TLS session", c->index);
	}
	send_connect(r, c);
	set_interest(r, c);
}

static void connected(struct bench_run *r, struct bconn *c)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		if (err == ECONNREFUSED)
			r->refused = true;
		fail(r, "connect: %s", strerror(err));
		r->c.connect_failures++;
		bconn_close(r, c);
		return;
	}
	c->rcap = RBUF_INITIAL;
	c->rbuf = wisp_malloc(c->rcap);
	if (!c->rbuf) {
		fail(r, "out of memory");
		return;
	}
	int fd = c->fd;
	if (r->tls_ctx) {
		c->t = tls_transport_new(r->tls_ctx, fd);
		c->state = BC_HANDSHAKE;
	} else {
		c->t = tcp_transport_new(fd);
	}
	if (c->t && r->o->ws) {
		struct ws_opts wo = {
			.http = {.max_head_bytes = 4096, .max_headers = 100},
			.max_frame_size = UINT64_MAX,
			.path = r->o->ws_path ? r->o->ws_path : "/mqtt",
			.subprotocols = ws_subprotocols,
			.host = r->o->host,
		};
		c->t = ws_client_transport_new(c->t, &wo);
		c->state = BC_HANDSHAKE;
	}
	if (!c->t) {
		c->fd = -1;
		fail(r, "out of memory");
		return;
	}
	if (r->o->ws) {
		handshake(r, c);
		return;
	}
	if (r->tls_ctx) {
		if (c->session && tls_transport_set_session(c->t, c->session) != 0) {
			fail(r, "connection %u: cannot offer the TLS session", c->index);
			return;
		}
		handshake(r, c);
		return;
	}
	send_connect(r, c);
	set_interest(r, c);
}

static uint64_t text_get(const uint8_t *s, int chars, bool *bad)
{
	uint64_t v = 0;
	for (int i = 0; i < chars; i++) {
		if (s[i] < TEXT_BASE || s[i] >= TEXT_BASE + 64u)
			*bad = true;
		v = v << 6 | ((s[i] - TEXT_BASE) & 63u);
	}
	return v;
}

static void text_put(uint8_t *s, int chars, uint64_t v)
{
	for (int i = chars - 1; i >= 0; i--, v >>= 6)
		s[i] = (uint8_t)(TEXT_BASE + (v & 63u));
}

/* The v5 checks of one delivery (see the file header); false counts it in
 * bad_props. `idx` is the publisher the payload names. */
static bool v5_delivery_ok(struct bench_run *r, struct bconn *c, const struct mqtt_publish *p, uint32_t idx)
{
	const struct mqtt_props *pp = &p->props;
	uint64_t present = pp->present;
	if (present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)) {
		uint32_t *map = c->sub->alias_pub;
		uint16_t alias = pp->topic_alias;
		/* Never above what we announced [MQTT-3.3.2-9]. */
		if (!map || alias == 0 || alias > BENCH_TOPIC_ALIAS_MAX)
			return false;
		if (p->topic.len)
			map[alias] = idx;
		else if (map[alias] != idx)
			return false;
		present &= ~MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS);
	}
	if (c->sub->alias_pub && p->topic.len &&
	    (p->topic.len != r->pubs[idx].topic_len || memcmp(p->topic.ptr, r->pubs[idx].topic, p->topic.len) != 0))
		return false;
	if (!r->o->props)
		return present == 0 && pp->user_property_count == 0;
	static const uint64_t want = MQTT_PROP_BIT(MQTT_PROP_PAYLOAD_FORMAT) |
				     MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY) |
				     MQTT_PROP_BIT(MQTT_PROP_CONTENT_TYPE) |
				     MQTT_PROP_BIT(MQTT_PROP_USER_PROPERTY);
	struct mqtt_prop up;
	return present == want && pp->payload_format == 1 && pp->message_expiry >= 1 &&
	       pp->message_expiry <= PROP_EXPIRY_S && pp->content_type.len == sizeof PROP_CONTENT_TYPE - 1 &&
	       memcmp(pp->content_type.ptr, PROP_CONTENT_TYPE, sizeof PROP_CONTENT_TYPE - 1) == 0 &&
	       pp->user_property_count == 1 && mqtt_props_find(pp, MQTT_PROP_USER_PROPERTY, &up) &&
	       up.str.len == sizeof PROP_USER_KEY - 1 &&
	       memcmp(up.str.ptr, PROP_USER_KEY, sizeof PROP_USER_KEY - 1) == 0 &&
	       up.value_str.len == sizeof PROP_USER_VALUE - 1 &&
	       memcmp(up.value_str.ptr, PROP_USER_VALUE, sizeof PROP_USER_VALUE - 1) == 0;
}

static void on_delivery(struct bench_run *r, struct bconn *c, const struct mqtt_publish *p)
{
	if (p->payload.len < BENCH_MSG_HEADER) {
		r->c.foreign++;
		return;
	}
	const uint8_t *h = p->payload.ptr;
	uint32_t idx, seq;
	uint64_t sched = 0;
	if (r->o->props) {
		bool bad = false;
		idx = (uint32_t)text_get(h, TEXT_IDX_CHARS, &bad);
		seq = (uint32_t)text_get(h + TEXT_IDX_CHARS, TEXT_SEQ_CHARS, &bad);
		sched = r->epoch_ns + text_get(h + TEXT_IDX_CHARS + TEXT_SEQ_CHARS, TEXT_TIME_CHARS, &bad);
		if (bad)
			idx = UINT32_MAX;
	} else {
		idx = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
		seq = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
		for (int i = 8; i < 16; i++)
			sched = sched << 8 | h[i];
	}
	if (idx >= r->npubs) {
		r->c.foreign++;
		return;
	}
	if (r->o->version == MQTT_PROTO_V5 && !v5_delivery_ok(r, c, p, idx))
		r->c.bad_props++;
	r->c.delivered++;
	r->pubs[idx].delivered++;
	uint32_t *exp = &c->sub->expect[idx];
	if (seq == *exp) {
		(*exp)++;
	} else if (seq > *exp) {
		r->c.lost += seq - *exp;
		r->c.gaps++;
		*exp = seq + 1;
	} else {
		r->c.dups++;
	}
	if (r->measuring) {
		uint64_t now = bench_now_ns();
		bench_hist_add(r->lat, now > sched ? now - sched : 0);
	}
}

static void on_publish(struct bench_run *r, struct bconn *c, const struct mqtt_publish *p)
{
	if (!c->sub) {
		fail(r, "connection %u: PUBLISH on a connection with no subscription", c->index);
		return;
	}
	switch (p->qos) {
	case 0:
		on_delivery(r, c, p);
		break;
	case 1:
		on_delivery(r, c, p);
		send_ack(r, c, MQTT_PKT_PUBACK, p->packet_id);
		break;
	default:
		if (c->sub->pid_rx[p->packet_id]) {
			r->c.qos2_redelivered++;
		} else {
			c->sub->pid_rx[p->packet_id] = 1;
			on_delivery(r, c, p);
		}
		send_ack(r, c, MQTT_PKT_PUBREC, p->packet_id);
		break;
	}
}

static void on_pub_ack(struct bench_run *r, struct bconn *c, uint8_t type, uint16_t pid)
{
	struct bench_pub *pub = c->pub;
	uint8_t want = type == MQTT_PKT_PUBCOMP ? PID_AWAIT_COMP : PID_AWAIT_ACK;
	if (!pub || !pub->pid_state || pub->pid_state[pid] != want ||
	    (type == MQTT_PKT_PUBACK && r->o->qos != 1) || (type != MQTT_PKT_PUBACK && r->o->qos != 2)) {
		r->c.unexpected_acks++;
		return;
	}
	if (type == MQTT_PKT_PUBREC) {
		pub->pid_state[pid] = PID_AWAIT_COMP;
		send_ack(r, c, MQTT_PKT_PUBREL, pid);
		return;
	}
	pub->pid_state[pid] = PID_FREE;
	pub->inflight--;
	pub->completed++;
	r->c.completed++;
}

static void on_packet(struct bench_run *r, struct bconn *c, const struct mqtt_pkt *pkt)
{
	switch (pkt->type) {
	case MQTT_PKT_CONNACK:
		if (c->state != BC_AWAIT_CONNACK) {
			fail(r, "connection %u: unexpected CONNACK", c->index);
			return;
		}
		if (pkt->u.connack.code != MQTT_CONNACK_ACCEPTED) {
			fail(r, "connection %u: CONNACK refused with code %u", c->index, pkt->u.connack.code);
			return;
		}
		r->c.connects++;
		if (c->pub) {
			/* v5: never more unacknowledged QoS 1/2 PUBLISHes than the
			 * broker's Receive Maximum [MQTT-3.3.4-7]. */
			const struct mqtt_props *cp = &pkt->u.connack.props;
			c->pub->window = r->o->inflight;
			if ((cp->present & MQTT_PROP_BIT(MQTT_PROP_RECEIVE_MAXIMUM)) &&
			    cp->receive_maximum < c->pub->window)
				c->pub->window = cp->receive_maximum;
		}
		if (c->pub && r->o->topic_alias) {
			c->pub->alias_max = pkt->u.connack.props.topic_alias_maximum;
			if (c->pub->alias_max == 0) {
				fail(r, "--topic-alias: the broker's CONNACK allows no topic alias");
				return;
			}
		}
		if (r->o->scenario == SCEN_TLS) {
			/* One cycle done: DISCONNECT, then the driver reconnects. */
			r->c.handshakes++;
			c->state = BC_READY;
			bconn_disconnect(r, c);
			while (c->wlen > c->woff) {
				ssize_t n = transport_writev(c->t, &(struct iovec){c->wbuf + c->woff, c->wlen - c->woff}, 1);
				if (n <= 0)
					break;
				c->woff += (size_t)n;
			}
			c->state = BC_CLOSED;
			r->connecting--;
			bconn_close(r, c);
			c->state = BC_IDLE;
			return;
		}
		if (c->sub)
			send_subscribe(r, c);
		else
			become_ready(r, c);
		break;
	case MQTT_PKT_SUBACK:
		if (c->state != BC_AWAIT_SUBACK || pkt->u.suback.codes.len != 1) {
			fail(r, "connection %u: unexpected SUBACK", c->index);
			return;
		}
		if (pkt->u.suback.codes.ptr[0] == MQTT_SUBACK_FAILURE) {
			fail(r, "connection %u: subscription to %s refused", c->index, c->sub->filter);
			return;
		}
		if (pkt->u.suback.codes.ptr[0] != r->o->qos) {
			fail(r, "connection %u: broker granted QoS %u, asked for %u", c->index,
			     pkt->u.suback.codes.ptr[0], r->o->qos);
			return;
		}
		become_ready(r, c);
		break;
	case MQTT_PKT_PUBLISH:
		on_publish(r, c, &pkt->u.publish);
		break;
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBCOMP:
		if (pkt->u.ack.reason >= MQTT_RC_UNSPECIFIED) { /* a v5 refusal */
			r->c.unexpected_acks++;
			return;
		}
		on_pub_ack(r, c, pkt->type, pkt->u.ack.packet_id);
		break;
	case MQTT_PKT_PUBREL:
		if (c->sub && c->sub->pid_rx)
			c->sub->pid_rx[pkt->u.ack.packet_id] = 0;
		else
			r->c.unexpected_acks++;
		send_ack(r, c, MQTT_PKT_PUBCOMP, pkt->u.ack.packet_id);
		break;
	case MQTT_PKT_PINGRESP:
		if (c->probe && r->ping_sent_ns) {
			bench_hist_add(r->ping, bench_now_ns() - r->ping_sent_ns);
			r->ping_sent_ns = 0;
			r->c.pings++;
		}
		break;
	case MQTT_PKT_DISCONNECT: /* v5: the broker says why it closes */
		fail(r, "connection %u: DISCONNECT from the broker, reason 0x%02x", c->index, pkt->u.reason.reason);
		break;
	default:
		fail(r, "connection %u: unexpected packet type %u", c->index, pkt->type);
		break;
	}
}

static void parse(struct bench_run *r, struct bconn *c)
{
	const struct mqtt_codec_opts opts = {.max_packet_size = 0, .version = r->o->version};
	size_t off = 0;
	while (off < c->rlen && !r->error[0] && c->state != BC_IDLE && c->state != BC_CLOSED) {
		struct mqtt_pkt pkt;
		ssize_t n = mqtt_decode(c->rbuf + off, c->rlen - off, &opts, &pkt);
		if (n == 0)
			break;
		if (n < 0) {
			fail(r, "connection %u: bad packet from the broker: %s", c->index, mqtt_strerror((int)n));
			return;
		}
		on_packet(r, c, &pkt);
		off += (size_t)n;
	}
	if (c->rbuf == NULL)
		return; /* closed while handling */
	if (off > 0) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	/* A partial packet bigger than the buffer: make room for all of it. */
	if (c->rlen == c->rcap) {
		ssize_t need = mqtt_frame_size(c->rbuf, c->rlen, &opts);
		size_t cap = c->rcap;
		while (need > 0 && (size_t)need > cap && cap < RBUF_MAX)
			cap *= 2;
		if (cap == c->rcap && cap < RBUF_MAX)
			cap *= 2;
		uint8_t *p = wisp_realloc(c->rbuf, cap);
		if (!p) {
			fail(r, "out of memory");
			return;
		}
		c->rbuf = p;
		c->rcap = cap;
	}
}

static void do_read(struct bench_run *r, struct bconn *c)
{
	for (int round = 0; round < 16 && c->t && !r->error[0]; round++) {
		size_t room = c->rcap - c->rlen;
		ssize_t n = transport_read(c->t, c->rbuf + c->rlen, room);
		if (n == WISP_EAGAIN)
			break;
		if (n < 0) {
			if (r->publishing || c->state != BC_READY)
				fail(r, "connection %u closed by the broker (%s)", c->index, wisp_strerror((int)n));
			bconn_close(r, c);
			return;
		}
		c->rlen += (size_t)n;
		bool filled = (size_t)n == room;
		if (filled && c->rcap < RBUF_GROW_LIMIT) {
			uint8_t *p = wisp_realloc(c->rbuf, c->rcap * 2);
			if (p) {
				c->rbuf = p;
				c->rcap *= 2;
			}
		}
		parse(r, c);
		/* Short is not drained over TLS (one read returns what its
		 * records hold): only would-block is (transport.h). */
		if (!c->t || (!filled && c->t->want))
			break;
	}
}

static void flush(struct bench_run *r, struct bconn *c)
{
	while (c->t && c->wlen > c->woff) {
		struct iovec iov = {c->wbuf + c->woff, c->wlen - c->woff};
		ssize_t n = transport_writev(c->t, &iov, 1);
		if (n == WISP_EAGAIN)
			break;
		if (n < 0) {
			fail(r, "connection %u: write failed (%s)", c->index, wisp_strerror((int)n));
			bconn_close(r, c);
			return;
		}
		c->woff += (size_t)n;
		if (c->wlen > c->woff && c->t->want)
			break; /* short and full: no call just to hear EAGAIN */
	}
	if (c->woff == c->wlen)
		c->woff = c->wlen = 0;
	set_interest(r, c);
}

void bconn_flush_all(struct bench_run *r)
{
	struct bconn *c = r->dirty;
	r->dirty = NULL;
	while (c) {
		struct bconn *next = c->next_dirty;
		c->dirty = false;
		c->next_dirty = NULL;
		if (c->t)
			flush(r, c);
		c = next;
	}
}

void bconn_on_event(struct bench_run *r, struct bconn *c, uint32_t events)
{
	if (c->state == BC_CONNECTING) {
		connected(r, c);
		return;
	}
	if (!c->t)
		return;
	if (c->state == BC_HANDSHAKE) {
		handshake(r, c);
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		do_read(r, c);
	if (c->t && (events & EPOLLOUT))
		flush(r, c);
}

bool bconn_publish(struct bench_run *r, struct bconn *c, uint64_t sched_ns)
{
	struct bench_pub *pub = c->pub;
	const struct bench_opts *o = r->o;
	if (c->state != BC_READY || bconn_pending_out(c) > WBUF_PUBLISH_LIMIT)
		return false;
	uint16_t pid = 0;
	if (o->qos > 0) {
		if (pub->inflight >= pub->window)
			return false;
		for (uint32_t tries = 0; tries < BENCH_PID_SPACE; tries++) {
			pub->next_pid = (uint16_t)(pub->next_pid == UINT16_MAX ? 1 : pub->next_pid + 1);
			if (pub->pid_state[pub->next_pid] == PID_FREE)
				break;
		}
		pid = pub->next_pid;
		pub->pid_state[pid] = PID_AWAIT_ACK;
		pub->inflight++;
	}
	uint8_t *h = r->payload;
	uint32_t seq = (uint32_t)pub->sent;
	if (o->props) {
		/* Payload Format 1 declares UTF-8 [MQTT-3.3.2-4]: printable characters. */
		text_put(h, TEXT_IDX_CHARS, pub->index);
		text_put(h + TEXT_IDX_CHARS, TEXT_SEQ_CHARS, seq);
		text_put(h + TEXT_IDX_CHARS + TEXT_SEQ_CHARS, TEXT_TIME_CHARS,
			 sched_ns > r->epoch_ns ? sched_ns - r->epoch_ns : 0);
	} else {
		for (int i = 0; i < 4; i++) {
			h[i] = (uint8_t)(pub->index >> (24 - 8 * i));
			h[4 + i] = (uint8_t)(seq >> (24 - 8 * i));
		}
		for (int i = 0; i < 8; i++)
			h[8 + i] = (uint8_t)(sched_ns >> (56 - 8 * i));
	}
	struct mqtt_publish p = {
		.qos = o->qos,
		.topic = {(const uint8_t *)pub->topic, pub->topic_len},
		.packet_id = pid,
		.payload = {r->payload, o->payload_size},
	};
	uint8_t props[PROP_BLOCK_MAX];
	if (o->version == MQTT_PROTO_V5) {
		size_t plen = 0;
		if (o->props) {
			(void)mqtt_props_put_u8(props, sizeof props, &plen, MQTT_PROP_PAYLOAD_FORMAT, 1);
			(void)mqtt_props_put_u32(props, sizeof props, &plen, MQTT_PROP_MESSAGE_EXPIRY, PROP_EXPIRY_S);
			(void)mqtt_props_put_str(props, sizeof props, &plen, MQTT_PROP_CONTENT_TYPE,
						 (struct mqtt_str){(const uint8_t *)PROP_CONTENT_TYPE,
								   sizeof PROP_CONTENT_TYPE - 1});
			(void)mqtt_props_put_pair(props, sizeof props, &plen,
						  (struct mqtt_str){(const uint8_t *)PROP_USER_KEY, sizeof PROP_USER_KEY - 1},
						  (struct mqtt_str){(const uint8_t *)PROP_USER_VALUE,
								    sizeof PROP_USER_VALUE - 1});
		}
		if (o->topic_alias) {
			/* The first PUBLISH sets alias 1, the rest send only the alias [MQTT-3.3.2-12]. */
			(void)mqtt_props_put_u16(props, sizeof props, &plen, MQTT_PROP_TOPIC_ALIAS, 1);
			if (pub->alias_set)
				p.topic.len = 0;
			pub->alias_set = true;
		}
		p.props.raw = (struct mqtt_str){props, plen};
	}
	size_t need = 16 + PROP_BLOCK_MAX + pub->topic_len + o->payload_size;
	if (!wbuf_reserve(r, c, need))
		return false;
	ssize_t n = mqtt_encode_publish(c->wbuf + c->wlen, c->wcap - c->wlen, o->version, &p);
	if (n < 0) {
		fail(r, "encode PUBLISH: %s", mqtt_strerror((int)n));
		return false;
	}
	c->wlen += (size_t)n;
	mark_dirty(r, c);
	pub->sent++;
	r->c.published++;
	return true;
}
