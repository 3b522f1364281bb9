/*
 * Connection input (input.h): the read loop, framing against the bounds
 * that apply before CONNECT, the carried partial packet, and the read
 * budget. Packets go up through conn_set.in.on_packet; an end caused by
 * input through conn_set.in.on_close.
 */
#include "input.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "err.h"
#include "log.h"

/* Per connection and turn: enough for a burst, bounded so one fast
 * publisher cannot starve the others (level-triggered epoll calls again).
 * Reads repeat until the transport would block or this is spent. */
#define READ_BUDGET (256u * 1024u)
/* Per connection and read: copies its packets may route (offline sessions'
 * drops included) before the rest waits for the other connections. The byte budget
 * alone does not bound the work, a small PUBLISH fanning out to every
 * session: 256 KiB of them to 5,000 sessions held the loop for seconds. */
#define FANOUT_BUDGET 65536u
#define RBUF_MIN 256u
/* A carried tail up to this size continues in the scratch buffer (a copy);
 * a bigger one, a big packet arriving, is read into its own buffer. */
#define SCRATCH_TAIL_MAX (16u * 1024u)



static uint8_t conn_version(const struct conn *c) { return c->version ? c->version : MQTT_PROTO_V311; }

/* The carried buffer lives CONN_RBUF_HEADROOM bytes into its block, whose
 * head keeps its lengths (conn.h). Moves c->rbuf to a block with room for
 * `cap` bytes; the head still says the old capacity, which the caller
 * accounts for (conn_account_rbuf) before setting the new one. 0 or
 * WISP_ENOMEM (nothing changed). */
static int rbuf_resize(struct conn *c, size_t cap)
{
	bool fresh = !c->rbuf;
	uint8_t *block = wisp_realloc(fresh ? NULL : c->rbuf - CONN_RBUF_HEADROOM, CONN_RBUF_HEADROOM + cap);
	if (!block)
		return WISP_ENOMEM;
	c->rbuf = block + CONN_RBUF_HEADROOM;
	if (fresh)
		*conn_rbuf_head(c) = (struct conn_rbuf_head){0, 0};
	return 0;
}

static void rbuf_free(struct conn *c)
{
	if (c->rbuf)
		wisp_free(c->rbuf - CONN_RBUF_HEADROOM);
	c->rbuf = NULL;
}

uint8_t *conn_input_take_block(struct conn *c)
{
	if (!c->rbuf || conn_set_of(c)->in.offered != c->rbuf)
		return NULL;
	uint8_t *block = c->rbuf - CONN_RBUF_HEADROOM;
	conn_account_rbuf(c, 0);
	c->rbuf = NULL;
	conn_set_of(c)->in.offered = NULL;
	return block;
}

static void close_conn(struct conn *c, enum reason r, const char *detail)
{
	conn_set_of(c)->in.on_close(conn_set_of(c)->in.ctx, c, r, detail);
}

/* A failed read, in the transport's own words when it has some (a
 * WebSocket close code, a frame that broke the protocol). A clean EOF's
 * words come only from the WebSocket transport, which knows the close
 * code; TLS keeps its last failure there, which an EOF is not. */
static void close_for_read(struct conn *c, int rc)
{
	enum reason r = rc == WISP_ECLOSED ? REASON_PEER_CLOSED : REASON_READ_ERROR;
	char why[160], detail[220];
	why[0] = '\0';
	if (rc != WISP_ECLOSED || strcmp(conn_t(c)->ops->name, "ws") == 0)
		transport_last_error(conn_t(c), why, sizeof why);
	if (!why[0]) {
		close_conn(c, r, NULL);
		return;
	}
	snprintf(detail, sizeof detail, "%s: %s", reason_info(r)->text, why);
	close_conn(c, r, detail);
}

/* Keepalive: 1.5 times the interval after the last packet [MQTT-3.1.2-24]. */
static void refresh_keepalive(struct conn *c)
{
	if (c->state == CONN_ACTIVE && conn_keepalive(c))
		loop_timer_set_deadline(conn_set_of(c)->in.loop, &c->timer,
					(loop_now_ms(conn_set_of(c)->in.loop) + (uint64_t)conn_keepalive(c) * 1500u + 999u) / 1000u);
}


static void pause_input(struct conn *c)
{
	c->read_paused = true;
	loop_io_set(conn_set_of(c)->in.loop, &c->io, (c->io.events & LOOP_WRITE));
}

static void pause_for_output(struct conn *c)
{
	c->output_state = CONN_OUT_PAUSED;
	loop_io_set(conn_set_of(c)->in.loop, &c->io, (c->io.events & LOOP_WRITE));
}

/* Bounds that apply before CONNECT, judged from the first bytes of the
 * first packet so nothing is buffered for a client that breaks them. */
static bool refuse_before_connect(const struct conn *c, const uint8_t *buf, size_t len, enum reason *why,
				  char *detail, size_t detail_len)
{
	const struct conn_input *in = &conn_set_of(c)->in;
	/* After a v5 CONNECT (c->version set) AUTH and DISCONNECT may follow it
	 * before the CONNACK (MQTT 5, 4.12; [MQTT-3.1.2-30]), under the same
	 * size bound; the protocol layer judges them. */
	uint8_t type = buf[0] >> 4;
	if (type != MQTT_PKT_CONNECT &&
	    !((type == MQTT_PKT_AUTH || type == MQTT_PKT_DISCONNECT) && c->version == MQTT_PROTO_V5)) {
		*why = REASON_NOT_CONNECT; /* [MQTT-3.1.0-1] */
		return true;
	}
	struct mqtt_codec_opts unlimited = {.max_packet_size = 0};
	ssize_t frame = mqtt_frame_size(buf, len, &unlimited);
	uint32_t cap = in->max_connect_size;
	if (frame > 0 && (uint64_t)frame > cap && cap < in->max_packet_size) {
		*why = REASON_CONNECT_TOO_LARGE;
		snprintf(detail, detail_len, "CONNECT of %zd bytes exceeds limits.max_connect_size (%u)", frame, cap);
		return true;
	}
	return false; /* the decoder judges the rest, max_packet_size included */
}

/* Handles every whole packet at the start of buf. Returns the bytes
 * consumed, or -1 once the connection was dropped. */
static ssize_t process(struct conn *c, const uint8_t *buf, size_t len)
{
	size_t off = 0;
	struct mqtt_codec_opts opts = {
		.max_packet_size = conn_set_of(c)->in.max_packet_size,
	};
	while (off < len && c->state != CONN_CLOSING) {
		enum reason why = REASON_PROTOCOL_ERROR;
		if (c->state == CONN_AWAIT_CONNECT) {
			char detail[96];
			detail[0] = '\0';
			if (refuse_before_connect(c, buf + off, len - off, &why, detail, sizeof detail)) {
				close_conn(c, why, detail[0] ? detail : NULL);
				return -1;
			}
		}
		opts.version = conn_version(c);
		struct mqtt_pkt p;
		ssize_t n = mqtt_decode(buf + off, len - off, &opts, &p);
		if (n == 0)
			break;
		if (n < 0) {
			close_conn(c, reason_from_decode((int)n), mqtt_strerror((int)n));
			return -1;
		}
		/* A packet that alone fills the carried buffer may become its
		 * message where it lies (conn_input_take_block). */
		conn_set_of(c)->in.offered = buf == c->rbuf && off == 0 && (size_t)n == len ? buf : NULL;
		int rc = conn_set_of(c)->in.on_packet(conn_set_of(c)->in.ctx, c, &p, &why);
		conn_set_of(c)->in.offered = NULL;
		if (c->input_counted && c->state != CONN_AWAIT_CONNECT)
			conn_unauth_release(c); /* accepted (or closed): no longer a stranger's bytes */
		if (rc == WISP_EAGAIN) {
			/* A CONNECT waiting for its password check: keep it and
			 * everything after it unread until the answer comes. */
			pause_input(c);
			break;
		}
		off += (size_t)n;
		if (rc != 0) {
			close_conn(c, why, NULL);
			return -1;
		}
		refresh_keepalive(c);
		if (conn_set_of(c)->in.fanout >= FANOUT_BUDGET) {
			conn_set_of(c)->in.fanout_over = true;
			break;
		}
		if (conn_output_bytes(c) >= conn_set_of(c)->in.max_output && c->state != CONN_CLOSING) {
			/* Every queued byte counts, answers to control packets too:
			 * read no more until the client takes its output. */
			pause_for_output(c);
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
static int unauth_budget(struct conn *c, size_t cap)
{
	uint64_t budget = conn_set_of(c)->in.max_unauth_bytes;
	if (budget == 0 || (c->state != CONN_AWAIT_CONNECT && c->state != CONN_HANDSHAKE) || cap <= conn_rcap(c))
		return 0;
	size_t total = conn_set_of(c)->unauth_bytes - (c->input_counted ? conn_rcap(c) : 0) + cap;
	if (total <= budget) {
		if (conn_set_of(c)->in.unauth_over && total <= budget / 2) {
			conn_set_of(c)->in.unauth_over = false;
			log_msg(LOG_NOTICE, "conn", "unauthenticated connections are under max_unauthenticated_bytes again");
		}
		return 0;
	}
	if (!conn_set_of(c)->in.unauth_over) {
		conn_set_of(c)->in.unauth_over = true;
		log_msg(LOG_WARNING, "conn",
			"unauthenticated connections hold %zu bytes of input, limits.max_unauthenticated_bytes is %llu: "
			"closing those that ask for more",
			conn_set_of(c)->unauth_bytes, (unsigned long long)budget);
	}
	return WISP_ELIMIT;
}

/*
 * limits.max_input_bytes: the same rule for the carried input of every
 * connection together, authenticated ones included (a client with
 * keepalive 0 may hold an unfinished packet as long as it likes). The
 * connection asking for more is refused unless it would hold all of it
 * alone, so one packet of max_packet_size always fits. Logged once per
 * episode, each refusal counted (clients/disconnects/input_bytes).
 */
static int input_budget(struct conn *c, size_t cap)
{
	struct conn_set *set = conn_set_of(c);
	uint64_t budget = set->in.max_input_bytes;
	if (budget == 0 || cap <= conn_rcap(c))
		return 0;
	size_t others = set->input_bytes - conn_rcap(c);
	if (others + cap <= budget || others == 0) {
		if (set->in.input_over && others + cap <= budget / 2) {
			set->in.input_over = false;
			log_msg(LOG_NOTICE, "conn", "unfinished packets are under limits.max_input_bytes again");
		}
		return 0;
	}
	if (!set->in.input_over) {
		set->in.input_over = true;
		log_msg(LOG_WARNING, "conn",
			"connections hold %zu bytes of unfinished packets, limits.max_input_bytes is %llu: closing those "
			"that ask for more",
			set->input_bytes, (unsigned long long)budget);
	}
	return WISP_ELIMIT;
}

/* May `c` (re)size its input buffer to `cap` bytes? 0, or WISP_ELIMIT with
 * the bound that refused it in *why. */
static int may_grow(struct conn *c, size_t cap, enum reason *why)
{
	if (unauth_budget(c, cap) != 0) {
		*why = REASON_UNAUTH_BYTES;
		return WISP_ELIMIT;
	}
	if (input_budget(c, cap) != 0) {
		*why = REASON_INPUT_BYTES;
		return WISP_ELIMIT;
	}
	return 0;
}

static void drop_for_input(struct conn *c, int rc, enum reason why)
{
	if (rc == WISP_ELIMIT)
		close_conn(c, why, NULL);
	else
		close_conn(c, REASON_NO_MEMORY, "out of memory for input");
}

/* Keeps `len` bytes of an incomplete packet for the next read. */
static int keep_tail(struct conn *c, const uint8_t *tail, size_t len, enum reason *why)
{
	if (len == 0) {
		/* Idle connections hold no input buffer. */
		conn_account_rbuf(c, 0);
		rbuf_free(c);
		return 0;
	}
	if (len > conn_rcap(c)) {
		/* Only when the tail is in the scratch buffer: a tail inside
		 * rbuf is never longer than rbuf. */
		size_t cap = len < RBUF_MIN ? RBUF_MIN : len;
		int rc = may_grow(c, cap, why);
		if (rc != 0)
			return rc;
		if (rbuf_resize(c, cap) != 0)
			return WISP_ENOMEM;
		conn_account_rbuf(c, cap);
		conn_rbuf_head(c)->cap = (uint32_t)cap;
	}
	memmove(c->rbuf, tail, len);
	conn_rbuf_head(c)->len = (uint32_t)len;
	return 0;
}

/* Room for the next read into the carried buffer: up to the packet's
 * size when the header says it, growing by doubling as bytes arrive. */
static int grow_rbuf(struct conn *c, enum reason *why)
{
	uint32_t rlen = conn_rlen(c), rcap = conn_rcap(c);
	if (rlen < rcap)
		return 0;
	struct mqtt_codec_opts opts = {.max_packet_size = conn_set_of(c)->in.max_packet_size};
	ssize_t frame = mqtt_frame_size(c->rbuf, rlen, &opts);
	/* Twice what arrived, or the whole packet once that is at most an
	 * eighth more: a packet just over a power of two is not copied again
	 * for its last few bytes. */
	size_t want = (size_t)rcap * 2;
	if (frame > 0 && (size_t)frame <= want + want / 8)
		want = (size_t)frame;
	if (want <= rlen)
		want = (size_t)rlen + RBUF_MIN;
	int rc = may_grow(c, want, why);
	if (rc != 0)
		return rc;
	if (rbuf_resize(c, want) != 0)
		return WISP_ENOMEM;
	conn_account_rbuf(c, want);
	conn_rbuf_head(c)->cap = (uint32_t)want;
	return 0;
}

/* A read that stopped at the fan-out budget: its whole packets are carried,
 * handled once the turn's I/O is done (server.c's before_sleep, after every
 * other connection's read), whether or not the socket brings more; what
 * runs out again there waits for the next turn's. */
static void read_next_turn(struct conn *c)
{
	struct conn_set *set = conn_set_of(c);
	set->in.fanout_over = false;
	if (c->state == CONN_CLOSING || list_linked(&c->read_link))
		return;
	set->in.fanout_waits++;
	list_push_back(&set->read_later, &c->read_link);
	loop_request_turn(set->in.loop);
}

void conn_input_read(struct conn *c)
{
	size_t budget = READ_BUDGET;
	conn_set_of(c)->in.fanout = 0;
	conn_set_of(c)->in.fanout_over = false;
	while (budget && c->state != CONN_CLOSING && conn_input_is_reading(c)) {
		uint8_t *data; /* the carried tail, then what this read adds */
		size_t have = conn_rlen(c), room;
		if (have && have <= SCRATCH_TAIL_MAX) {
			/* A packet cut by the last read: continue it in the scratch
			 * buffer rather than read just its rest into rbuf, a read
			 * (a syscall on TCP) per cut packet. rbuf stays, for the
			 * next tail. */
			memcpy(conn_set_of(c)->in.scratch, c->rbuf, have);
			data = conn_set_of(c)->in.scratch;
			room = conn_set_of(c)->in.scratch_cap - have;
		} else if (have) {
			enum reason why = REASON_NO_MEMORY;
			int rc = grow_rbuf(c, &why);
			if (rc != 0) {
				drop_for_input(c, rc, why);
				return;
			}
			data = c->rbuf;
			room = conn_rcap(c) - have;
		} else {
			data = conn_set_of(c)->in.scratch;
			room = conn_set_of(c)->in.scratch_cap;
		}
		ssize_t n = transport_read(conn_t(c), data + have, room);
		if (n == WISP_EAGAIN)
			return;
		if (n < 0) {
			close_for_read(c, (int)n);
			return;
		}
		conn_set_of(c)->in.bytes_received += (uint64_t)n;
		budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
		size_t len = have + (size_t)n;
		bool in_rbuf = data == c->rbuf;
		ssize_t used = process(c, data, len);
		if (used < 0)
			return;
		if (c->state == CONN_CLOSING)
			return;
		if (in_rbuf && c->rbuf != data) {
			/* The packet filling it took the buffer (it became a
			 * message, maybe freed already): nothing is carried. */
			if (conn_set_of(c)->in.fanout_over) {
				read_next_turn(c);
				return;
			}
			if ((size_t)n < room && conn_t(c)->want)
				return;
			continue;
		}
		enum reason why = REASON_NO_MEMORY;
		int rc = keep_tail(c, data + used, len - (size_t)used, &why);
		if (rc != 0) {
			drop_for_input(c, rc, why);
			return;
		}
		if (conn_set_of(c)->in.fanout_over) {
			read_next_turn(c);
			return;
		}
		/* A short read is not "drained" (a TLS read stops at its records):
		 * only would-block is, which the transport reports in `want` with
		 * the bytes, or as WISP_EAGAIN on the next call (transport.h). */
		if ((size_t)n < room && conn_t(c)->want)
			return;
	}
	/* Out of budget with decrypted bytes still inside the transport: epoll
	 * will not report them, so come back next turn. */
	if (c->state != CONN_CLOSING && transport_pending(conn_t(c)) && !list_linked(&c->read_link)) {
		list_push_back(&conn_set_of(c)->read_more, &c->read_link);
		loop_request_turn(conn_set_of(c)->in.loop);
	}
}

/* Handles the whole packets left in the carried buffer (input paused in
 * the middle of a read). False once the connection was dropped, or when
 * the rest waits for the next turn (the fan-out budget). */
static bool process_carried(struct conn *c)
{
	const uint8_t *carried = c->rbuf;
	conn_set_of(c)->in.fanout = 0;
	conn_set_of(c)->in.fanout_over = false;
	ssize_t used = process(c, c->rbuf, conn_rlen(c));
	if (used < 0 || c->state == CONN_CLOSING)
		return false;
	if (c->rbuf != carried) {
		/* Taken by the packet that filled it: nothing left. */
		conn_set_of(c)->in.fanout_over = false;
		return true;
	}
	enum reason why = REASON_NO_MEMORY;
	int rc = keep_tail(c, c->rbuf + used, conn_rlen(c) - (size_t)used, &why);
	if (rc != 0) {
		drop_for_input(c, rc, why);
		return false;
	}
	if (conn_set_of(c)->in.fanout_over) {
		read_next_turn(c);
		return false;
	}
	return true;
}

void conn_input_resume(struct conn *c)
{
	if (c->state == CONN_CLOSING)
		return;
	c->read_paused = false;
	if (conn_input_is_reading(c))
		loop_io_set(conn_set_of(c)->in.loop, &c->io, LOOP_READ | (c->io.events & LOOP_WRITE));
	process_carried(c);
}

void conn_input_output_drained(struct conn *c)
{
	if (c->state == CONN_CLOSING || c->output_state == CONN_OUT_OK)
		return;
	c->output_state = CONN_OUT_OK;
	if (!conn_input_is_reading(c))
		return;
	loop_io_set(conn_set_of(c)->in.loop, &c->io, LOOP_READ | (c->io.events & LOOP_WRITE));
	/* Whole packets may wait in the carried buffer, or decrypted ones in
	 * the transport, which epoll will not report: read them next turn,
	 * before that turn's records are flushed (never from the flush). */
	if ((conn_rlen(c) || transport_pending(conn_t(c))) && !list_linked(&c->read_link)) {
		list_push_back(&conn_set_of(c)->read_more, &c->read_link);
		loop_request_turn(conn_set_of(c)->in.loop);
	}
}

void conn_input_read_more(struct conn *c)
{
	if (c->state == CONN_CLOSING || !conn_input_is_reading(c))
		return;
	if (conn_rlen(c) && !process_carried(c))
		return;
	conn_input_read(c);
}

