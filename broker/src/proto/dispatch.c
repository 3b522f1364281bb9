/*
 * Input: read, frame, decode, and one switch into the packet handlers.
 * Decoder errors and handler refusals become a reason (session/reason.h),
 * which broker_answer_reason maps to the wire in this one place: a refusing
 * CONNACK, a v5 DISCONNECT, or a plain close.
 *
 * Reads go into the broker's shared scratch buffer; only the tail of a
 * packet that has not fully arrived is copied into a per-connection buffer,
 * grown as its bytes arrive (never to the announced size up front), so a
 * bogus huge Remaining Length costs nothing until the bytes are really
 * sent, and idle connections hold no buffer at all. A small carried tail
 * continues in the scratch buffer at the next read, so a packet cut by a
 * read costs a copy, not a read of its own.
 *
 * Reads repeat until the transport would block or the turn's budget is
 * spent: a short read alone is not "drained" (net/transport.h).
 *
 * Before CONNECT less is accepted: a first byte that is not CONNECT closes
 * the connection at once [MQTT-3.1.0-1], a CONNECT longer than
 * limits.max_connect_size is refused from its fixed header, and the partial
 * buffers of all unauthenticated connections together stay under
 * limits.max_unauthenticated_bytes (the connection that would pass it is
 * closed).
 *
 * Input stops while the connection's output is at or over
 * limits.max_output_buffer (after the packet that put it there), so a
 * client that does not read its answers cannot make the broker queue them
 * without bound; the flush resumes it (proto/broker.c).
 */
#include "broker.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "err.h"
#include "log.h"

/* Per connection and turn: enough for a burst, bounded so one fast
 * publisher cannot starve the others (level-triggered epoll calls again).
 * Reads repeat until the transport would block or this is spent. */
#define READ_BUDGET (256u * 1024u)
#define RBUF_MIN 256u
/* A carried tail up to this size continues in the scratch buffer (a copy);
 * a bigger one, a big packet arriving, is read into its own buffer. */
#define SCRATCH_TAIL_MAX (16u * 1024u)

static uint8_t conn_version(const struct conn *c) { return c->version ? c->version : MQTT_PROTO_V311; }

/*
 * The one mapping of a reason (session/reason.h) to the wire. While the
 * CONNECT is being answered: a refusing CONNACK, with the v5 reason code
 * for a v5 CONNECT [MQTT-3.2.2-6], the 3.1/3.1.1 return code otherwise, or
 * none where 3.1.1 has no code for it (the connection just closes). Before
 * the CONNECT was read (c->version 0) the answer has the 3.1.1 shape: a
 * client of an unknown level cannot be assumed to read v5, so an
 * unsupported level gets return code 1 [MQTT-3.1.2-2] (as Mosquitto's).
 * Once active, a v5 client gets a DISCONNECT with the reason code before
 * the close [MQTT-3.14.2.1]; a 3.1.1 client is just closed.
 */
void broker_answer_reason(struct broker *b, struct conn *c, enum reason r)
{
	const struct reason_info *ri = reason_info(r);
	uint8_t buf[8];
	ssize_t n = 0;
	if (ri->flags & REASON_F_SILENT)
		return;
	if (c->state == CONN_AWAIT_CONNECT) {
		struct mqtt_connack ack = {.code = ri->v311};
		uint8_t version = c->version ? c->version : MQTT_PROTO_V311;
		if (version == MQTT_PROTO_V5)
			ack.code = reason_v5_connack_allowed(ri->v5) && ri->v5 ? ri->v5 : MQTT_RC_UNSPECIFIED;
		else if (ri->v311 == REASON_CLOSE)
			return;
		n = mqtt_encode_connack(buf, sizeof buf, version, &ack);
		if (n > 0)
			b->stats.refused++;
	} else if (c->state == CONN_ACTIVE && c->version == MQTT_PROTO_V5) {
		if (!reason_v5_disconnect_allowed(ri->v5))
			return;
		struct mqtt_reason_pkt d = {.reason = ri->v5};
		n = mqtt_encode_reason(buf, sizeof buf, MQTT_PROTO_V5, MQTT_PKT_DISCONNECT, &d);
	}
	if (n > 0)
		conn_send_bytes(c, buf, (size_t)n);
}

/* The reason a decoder error ends the connection for. */
static enum reason decode_reason(ssize_t err)
{
	switch (err) {
	case MQTT_ETOOBIG:
		return REASON_PACKET_TOO_LARGE;
	case MQTT_EVERSION:
		return REASON_BAD_PROTOCOL_VERSION;
	case MQTT_EPROTOCOL:
	case MQTT_EPROPS:
		return REASON_PROTOCOL_ERROR;
	default:
		return REASON_MALFORMED_PACKET;
	}
}

static int dispatch(struct broker *b, struct conn *c, const struct mqtt_pkt *p, enum reason *why)
{
	if (c->state == CONN_AWAIT_CONNECT && p->type != MQTT_PKT_CONNECT) {
		*why = REASON_NOT_CONNECT; /* [MQTT-3.1.0-1] */
		return WISP_EPROTO;
	}
	switch (p->type) {
	case MQTT_PKT_CONNECT:
		return handle_connect(b, c, &p->u.connect, why);
	case MQTT_PKT_PUBLISH:
		return handle_publish(b, c, &p->u.publish, why);
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBREL:
	case MQTT_PKT_PUBCOMP:
		return handle_ack(b, c, p->type, &p->u.ack, why);
	case MQTT_PKT_SUBSCRIBE:
		return handle_subscribe(b, c, &p->u.subscribe, why);
	case MQTT_PKT_UNSUBSCRIBE:
		return handle_unsubscribe(b, c, &p->u.subscribe, why);
	case MQTT_PKT_PINGREQ:
		return handle_ping(b, c, why);
	case MQTT_PKT_DISCONNECT:
		/* v5: 0x04 asks for the will to be published [MQTT-3.14.4-3]. */
		broker_drop(b, c,
			    p->u.reason.reason == MQTT_RC_DISCONNECT_WITH_WILL ? REASON_CLIENT_DISCONNECT_WILL
									     : REASON_CLIENT_DISCONNECT,
			    NULL);
		return 0;
	default:
		/* CONNACK, SUBACK, UNSUBACK, PINGRESP, AUTH: server-to-client only. */
		*why = REASON_PACKET_NOT_ACCEPTED;
		return WISP_EPROTO;
	}
}

/* Keepalive: 1.5 times the interval after the last packet [MQTT-3.1.2-24]. */
static void refresh_keepalive(struct broker *b, struct conn *c)
{
	if (c->state == CONN_ACTIVE && c->keepalive)
		loop_timer_set_deadline(b->loop, &c->timer,
					(loop_now_ms(b->loop) + (uint64_t)c->keepalive * 1500u + 999u) / 1000u);
}

static bool is_reading(const struct conn *c)
{
	return !c->read_paused && c->output_state == CONN_OUT_OK;
}

static void pause_input(struct broker *b, struct conn *c)
{
	c->read_paused = true;
	loop_io_set(b->loop, &c->io, (c->io.events & LOOP_WRITE));
}

static void pause_for_output(struct broker *b, struct conn *c)
{
	c->output_state = CONN_OUT_PAUSED;
	loop_io_set(b->loop, &c->io, (c->io.events & LOOP_WRITE));
}

/* Bounds that apply before CONNECT, judged from the first bytes of the
 * first packet so nothing is buffered for a client that breaks them. */
static bool refuse_before_connect(struct broker *b, const uint8_t *buf, size_t len, enum reason *why,
				  char *detail, size_t detail_len)
{
	if ((buf[0] >> 4) != MQTT_PKT_CONNECT) {
		*why = REASON_NOT_CONNECT; /* [MQTT-3.1.0-1] */
		return true;
	}
	struct mqtt_codec_opts unlimited = {.max_packet_size = 0};
	ssize_t frame = mqtt_frame_size(buf, len, &unlimited);
	uint32_t cap = b->cfg->limits.max_connect_size;
	if (frame > 0 && (uint64_t)frame > cap && cap < b->cfg->limits.max_packet_size) {
		*why = REASON_CONNECT_TOO_LARGE;
		snprintf(detail, detail_len, "CONNECT of %zd bytes exceeds limits.max_connect_size (%u)", frame, cap);
		return true;
	}
	return false; /* the decoder judges the rest, max_packet_size included */
}

/* Handles every whole packet at the start of buf. Returns the bytes
 * consumed, or -1 once the connection was dropped. */
static ssize_t process(struct broker *b, struct conn *c, const uint8_t *buf, size_t len)
{
	size_t off = 0;
	struct mqtt_codec_opts opts = {
		.max_packet_size = b->cfg->limits.max_packet_size,
	};
	while (off < len && c->state != CONN_CLOSING) {
		enum reason why = REASON_PROTOCOL_ERROR;
		if (c->state == CONN_AWAIT_CONNECT) {
			char detail[96];
			detail[0] = '\0';
			if (refuse_before_connect(b, buf + off, len - off, &why, detail, sizeof detail)) {
				broker_drop(b, c, why, detail[0] ? detail : NULL);
				return -1;
			}
		}
		opts.version = conn_version(c);
		struct mqtt_pkt p;
		ssize_t n = mqtt_decode(buf + off, len - off, &opts, &p);
		if (n == 0)
			break;
		if (n < 0) {
			broker_drop(b, c, decode_reason(n), mqtt_strerror((int)n));
			return -1;
		}
		int rc = dispatch(b, c, &p, &why);
		if (c->input_counted && c->state != CONN_AWAIT_CONNECT)
			conn_unauth_release(c); /* accepted (or closed): no longer a stranger's bytes */
		if (rc == WISP_EAGAIN) {
			/* A CONNECT waiting for its password check: keep it and
			 * everything after it unread until the answer comes. */
			pause_input(b, c);
			break;
		}
		off += (size_t)n;
		if (rc != 0) {
			broker_drop(b, c, why, NULL);
			return -1;
		}
		refresh_keepalive(b, c);
		if (conn_output_bytes(c) >= b->dlim.max_output && c->state != CONN_CLOSING) {
			/* Every queued byte counts, answers to control packets too:
			 * read no more until the client takes its output. */
			pause_for_output(b, c);
			break;
		}
	}
	return (ssize_t)off;
}

/*
 * limits.max_unauthenticated_bytes: may `c` (re)size its input buffer to
 * `cap` bytes? Always, once it is authenticated. Past the budget the
 * connection asking is refused: it is the newest growth, and closing it
 * gives its bytes back. Logged once per episode (until the total falls to
 * half the budget), each refusal counted.
 */
static int unauth_budget(struct broker *b, struct conn *c, size_t cap)
{
	uint64_t budget = b->cfg->limits.max_unauthenticated_bytes;
	if (budget == 0 || (c->state != CONN_AWAIT_CONNECT && c->state != CONN_HANDSHAKE) || cap <= c->rcap)
		return 0;
	size_t total = c->set->unauth_bytes - (c->input_counted ? c->rcap : 0) + cap;
	if (total <= budget) {
		if (b->unauth_over && total <= budget / 2) {
			b->unauth_over = false;
			log_msg(LOG_NOTICE, "conn", "unauthenticated connections are under max_unauthenticated_bytes again");
		}
		return 0;
	}
	if (!b->unauth_over) {
		b->unauth_over = true;
		log_msg(LOG_WARNING, "conn",
			"unauthenticated connections hold %zu bytes of input, limits.max_unauthenticated_bytes is %llu: "
			"closing those that ask for more",
			c->set->unauth_bytes, (unsigned long long)budget);
	}
	return WISP_ELIMIT;
}

static void drop_for_input(struct broker *b, struct conn *c, int rc)
{
	if (rc == WISP_ELIMIT)
		broker_drop(b, c, REASON_UNAUTH_BYTES, NULL);
	else
		broker_drop(b, c, REASON_NO_MEMORY, "out of memory for input");
}

/* Keeps `len` bytes of an incomplete packet for the next read. */
static int keep_tail(struct broker *b, struct conn *c, const uint8_t *tail, size_t len)
{
	if (len == 0) {
		/* Idle connections hold no input buffer. */
		conn_account_rbuf(c, 0);
		wisp_free(c->rbuf);
		c->rbuf = NULL;
		c->rlen = c->rcap = 0;
		return 0;
	}
	if (len > c->rcap) {
		/* Only when the tail is in the scratch buffer: a tail inside
		 * rbuf is never longer than rbuf. */
		size_t cap = len < RBUF_MIN ? RBUF_MIN : len;
		int rc = unauth_budget(b, c, cap);
		if (rc != 0)
			return rc;
		uint8_t *nb = wisp_realloc(c->rbuf, cap);
		if (!nb)
			return WISP_ENOMEM;
		conn_account_rbuf(c, cap);
		c->rbuf = nb;
		c->rcap = (uint32_t)cap;
	}
	memmove(c->rbuf, tail, len);
	c->rlen = (uint32_t)len;
	return 0;
}

/* Room for the next read into the carried buffer: up to the packet's
 * size when the header says it, growing by doubling as bytes arrive. */
static int grow_rbuf(struct broker *b, struct conn *c)
{
	if (c->rlen < c->rcap)
		return 0;
	struct mqtt_codec_opts opts = {.max_packet_size = b->cfg->limits.max_packet_size};
	ssize_t frame = mqtt_frame_size(c->rbuf, c->rlen, &opts);
	size_t want = (size_t)c->rcap * 2;
	if (frame > 0 && (size_t)frame < want)
		want = (size_t)frame;
	if (want <= c->rlen)
		want = (size_t)c->rlen + RBUF_MIN;
	int rc = unauth_budget(b, c, want);
	if (rc != 0)
		return rc;
	uint8_t *nb = wisp_realloc(c->rbuf, want);
	if (!nb)
		return WISP_ENOMEM;
	conn_account_rbuf(c, want);
	c->rbuf = nb;
	c->rcap = (uint32_t)want;
	return 0;
}

static void read_input(struct broker *b, struct conn *c)
{
	size_t budget = READ_BUDGET;
	while (budget && c->state != CONN_CLOSING && is_reading(c)) {
		uint8_t *data; /* the carried tail, then what this read adds */
		size_t have = c->rlen, room;
		if (have && have <= SCRATCH_TAIL_MAX) {
			/* A packet cut by the last read: continue it in the scratch
			 * buffer rather than read just its rest into rbuf, a read
			 * (a syscall on TCP) per cut packet. rbuf stays, for the
			 * next tail. */
			memcpy(b->scratch, c->rbuf, have);
			data = b->scratch;
			room = b->scratch_cap - have;
		} else if (have) {
			int rc = grow_rbuf(b, c);
			if (rc != 0) {
				drop_for_input(b, c, rc);
				return;
			}
			data = c->rbuf;
			room = c->rcap - have;
		} else {
			data = b->scratch;
			room = b->scratch_cap;
		}
		ssize_t n = transport_read(c->t, data + have, room);
		if (n == WISP_EAGAIN)
			return;
		if (n < 0) {
			broker_drop(b, c, n == WISP_ECLOSED ? REASON_PEER_CLOSED : REASON_READ_ERROR, NULL);
			return;
		}
		b->stats.bytes_received += (uint64_t)n;
		budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
		size_t len = have + (size_t)n;
		ssize_t used = process(b, c, data, len);
		if (used < 0)
			return;
		if (c->state == CONN_CLOSING)
			return;
		int rc = keep_tail(b, c, data + used, len - (size_t)used);
		if (rc != 0) {
			drop_for_input(b, c, rc);
			return;
		}
		/* A short read is not "drained" (a TLS read stops at its records):
		 * only would-block is, which the transport reports in `want` with
		 * the bytes, or as WISP_EAGAIN on the next call (transport.h). */
		if ((size_t)n < room && c->t->want)
			return;
	}
	/* Out of budget with decrypted bytes still inside the transport: epoll
	 * will not report them, so come back next turn. */
	if (c->state != CONN_CLOSING && transport_pending(c->t) && !list_linked(&c->read_link)) {
		list_push_back(&c->set->read_more, &c->read_link);
		loop_request_turn(b->loop);
	}
}

/* Handles the whole packets left in the carried buffer (input paused in
 * the middle of a read). False once the connection was dropped. */
static bool process_carried(struct broker *b, struct conn *c)
{
	ssize_t used = process(b, c, c->rbuf, c->rlen);
	if (used < 0 || c->state == CONN_CLOSING)
		return false;
	int rc = keep_tail(b, c, c->rbuf + used, c->rlen - (size_t)used);
	if (rc != 0) {
		drop_for_input(b, c, rc);
		return false;
	}
	return true;
}

void broker_resume_input(struct broker *b, struct conn *c)
{
	if (c->state == CONN_CLOSING)
		return;
	c->read_paused = false;
	if (is_reading(c))
		loop_io_set(b->loop, &c->io, LOOP_READ | (c->io.events & LOOP_WRITE));
	process_carried(b, c);
}

void broker_resume_output_paused(struct broker *b, struct conn *c)
{
	if (c->state == CONN_CLOSING || c->output_state == CONN_OUT_OK)
		return;
	c->output_state = CONN_OUT_OK;
	if (!is_reading(c))
		return;
	loop_io_set(b->loop, &c->io, LOOP_READ | (c->io.events & LOOP_WRITE));
	/* Whole packets may wait in the carried buffer, or decrypted ones in
	 * the transport, which epoll will not report: read them next turn,
	 * before that turn's records are flushed (never from the flush). */
	if ((c->rlen || transport_pending(c->t)) && !list_linked(&c->read_link)) {
		list_push_back(&c->set->read_more, &c->read_link);
		loop_request_turn(b->loop);
	}
}

void broker_read_more(struct broker *b, struct conn *c)
{
	if (c->state == CONN_CLOSING || !is_reading(c))
		return;
	if (c->rlen && !process_carried(b, c))
		return;
	read_input(b, c);
}

/* Drives a TLS handshake; true once it is done and MQTT may start. */
static bool handshake(struct broker *b, struct conn *c)
{
	int rc = transport_handshake(c->t);
	if (rc == 0) {
		broker_handshake_end(c);
		c->state = CONN_AWAIT_CONNECT;
		loop_io_set(b->loop, &c->io, LOOP_READ);
		bool resumed = tls_transport_resumed(c->t);
		if (resumed)
			b->stats.handshakes_resumed++;
		log_msg(LOG_DEBUG, "conn", "%s: TLS handshake done%s", conn_peer(c), resumed ? " (resumed)" : "");
		return true;
	}
	if (rc == WISP_EAGAIN) {
		uint32_t ev = 0;
		if (c->t->want & TRANSPORT_WANT_READ)
			ev |= LOOP_READ;
		if (c->t->want & TRANSPORT_WANT_WRITE)
			ev |= LOOP_WRITE;
		loop_io_set(b->loop, &c->io, ev ? ev : LOOP_READ);
		return false;
	}
	char why[160], reason[200];
	transport_last_error(c->t, why, sizeof why);
	snprintf(reason, sizeof reason, "TLS handshake failed: %s", why);
	broker_drop(b, c, REASON_HANDSHAKE_FAILED, reason);
	return false;
}

/* Takes one of the turn's handshake steps, or queues the connection behind
 * those already waiting (not watched meanwhile: level-triggered epoll would
 * report it every turn). False when deferred. */
static bool handshake_step_admitted(struct broker *b, struct conn *c)
{
	if (list_linked(&c->read_link))
		return false; /* already waiting (an EPOLLHUP cannot be masked) */
	if (b->handshake_budget && list_empty(&c->set->handshake_wait)) {
		b->handshake_budget--;
		return true;
	}
	loop_io_set(b->loop, &c->io, 0);
	list_push_back(&c->set->handshake_wait, &c->read_link);
	loop_request_turn(b->loop);
	return false;
}

void broker_handshake_step(struct broker *b, struct conn *c)
{
	if (c->state == CONN_HANDSHAKE && handshake(b, c))
		read_input(b, c); /* the client's CONNECT may already be decrypted */
}

void broker_on_conn_io(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct conn *c = container_of(io, struct conn, io);
	struct broker *b = ((struct broker_listener *)c->listener)->b;
	(void)l;
	if (c->state == CONN_CLOSING)
		return;
	if (c->state == CONN_HANDSHAKE) {
		if (!handshake_step_admitted(b, c) || !handshake(b, c))
			return;
		events |= LOOP_READ; /* the client's CONNECT may already be decrypted */
	}
	if (!is_reading(c) && (events & LOOP_READ) && !(c->io.events & LOOP_READ)) {
		/* Readability that was not asked for is EPOLLHUP or EPOLLERR,
		 * which epoll reports whatever the mask: the peer is gone. Left
		 * alone it would be reported again at once, every turn. */
		broker_drop(b, c, REASON_PEER_CLOSED, "peer closed the connection while its input was paused");
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
	    ((events & LOOP_WRITE) && (c->t->want & TRANSPORT_WANT_WRITE) && outq_empty(&c->out)))
		read_input(b, c);
}
