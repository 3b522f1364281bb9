/*
 * The node's data connection (nats_writer.h): DOWN (the connector dials,
 * or waits its backoff) -> INFO (the server's first line) -> TLS (the
 * handshake, when TLS is on) -> HELLO (CONNECT and PING sent, waiting for
 * the PONG that says the server took them, or the -ERR that says why not)
 * -> UP. Any failure closes the socket and goes back to DOWN, the next
 * URL after the backoff.
 */
#include "nats_writer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "bg.h"
#include "connector.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "mtimer.h"
#include "nats_auth.h"
#include "nats_proto.h"
#include "sbuf.h"
#include "tls.h"
#include "transport.h"

enum writer_state { W_DOWN = 0, W_INFO, W_TLS, W_HELLO, W_UP };

/* The reconnect backoff's cap: a lost link or a server away is retried
 * within 2 s; a CONNECT the server refuses (its credentials) costs a TLS
 * handshake per try, so those wait up to 30 s, as cnats's do. */
#define BACKOFF_MAX_MS 2000u
#define BACKOFF_REFUSED_MAX_MS 30000u

/* Room kept past the data bound for the connection's own lines (PING,
 * PONG): a full buffer refuses messages, never a PONG. */
#define CONTROL_ROOM 4096u
#define BUF_FIRST (64u * 1024u)
/* The input buffer's first size. It holds what the filters bring, so it
 * starts as large as the output's: grown from 4 KiB and given back past 64
 * KiB, a backlog of a few hundred messages cost a chain of reallocs (and
 * past 128 KiB an mmap and munmap) each time: the cross-node p99 at 10k
 * msg/s had a median of 5.3 ms against 3.0 over 8 alternating pairs of
 * runs (docs/bench/results-2026-12-03-issue16-loop-reader.md). */
#define IN_FIRST (64u * 1024u)
/* Messages read per loop turn, at most (cluster.c's inbox took as many). */
#define READ_BUDGET 256u
/* The SUBs a connection just up sends at once, one per filter of the
 * node's, may take the buffer past its messages' bound by this much: 100,000
 * filters' SUBs are about 4 MiB. */
#define SUBS_ROOM (64u * 1024u * 1024u)

/* One URL of cluster.nats. */
struct writer_url {
	char *host;
	uint16_t port;
	bool tls_scheme;
	char *user, *pass, *token; /* from its userinfo; NULL: the configuration's */
	struct tls_ctx *tls;       /* TLS on: this URL's context (its host is the name checked) */
};

struct nats_writer {
	struct loop *loop;
	struct mtimers *timers;
	const struct config_cluster *cfg;
	const struct nats_signer *signer;
	char *name;
	struct writer_url *urls;
	size_t nurls;
	bool tls;                   /* config_cluster_tls */
	struct connector cn;
	/* The connector's name lookups: a thread of its own, so one that hangs
	 * (a name server that does not answer) holds neither the broker's
	 * password checks, whose helpers it used to take, nor its exit
	 * (nats_writer_stop abandons it). */
	struct bg *lookups;
	struct mtimer hello_timer;  /* INFO, TLS and CONNECT within connect_timeout */
	struct loop_timer tick;     /* each second while UP: PINGs, the write deadline */
	struct loop_timer flush;    /* the end of the turn's writes */
	struct loop_timer more;     /* the next turn's share of what was read (read_in) */
	struct loop_io io;
	int fd;                     /* the socket, or -1 */
	struct transport *t;        /* over fd, once INFO is read */
	uint8_t state;
	bool cn_ready;              /* connector_init done */
	bool io_on;
	bool said_down;             /* this outage is logged: one line per episode */
	bool refused;               /* the CONNECT was refused: the longer backoff */
	bool paused;                /* nats_writer_pause: nothing read until resumed */
	uint32_t io_events;
	/* What goes out: [head, len) of out. Messages' ends (in bytes ever
	 * queued) in a ring, to tell written from lost. */
	char *out;
	size_t head, len, cap, max;
	uint64_t queued_total, written_total;
	uint64_t *ends;
	size_t ends_cap, ends_head, ends_n;
	/* What comes in: a control line, or a message's line and body, at a
	 * time. in_need: the bytes the message at the start needs (0: none
	 * pending). */
	char *in;
	size_t in_len, in_cap, in_need;
	struct nats_info info;      /* the server's first INFO, until CONNECT is sent */
	int64_t max_payload;
	bool refusal_said;          /* a publish refused on this connection is logged */
	unsigned pings_out;
	uint64_t ping_due_ms, moved_ms;
	uint64_t sent, lost;
	uint64_t *lost_to; /* nats_writer_count_lost_in's counter (NULL: none) */
	struct nats_writer_hooks hooks;
	/* PINGs sent and PONGs heard on this connection since it came up:
	 * the n-th PONG answers the n-th PING (nats_writer_mark). */
	uint64_t pings_sent, pongs_heard;
	/* Debug builds: WISP_DEBUG_DELAY_WRITER_SUB holds what is queued
	 * after a SUB until the next whole second (hold_timer), as a slow
	 * server would: the SUBACK's wait for the mark must cover it
	 * (tests/e2e/28_cluster_interest.py). */
	bool hold_subs;
	uint64_t hold_until_ms;
	struct mtimer hold_timer;
};

/* ---- the buffer ---- */

static bool room(struct nats_writer *w, size_t n, size_t bound)
{
	if (w->len - w->head + n > bound)
		return false;
	if (w->len + n <= w->cap)
		return true;
	if (w->head) {
		memmove(w->out, w->out + w->head, w->len - w->head);
		w->len -= w->head;
		w->head = 0;
		if (w->len + n <= w->cap)
			return true;
	}
	size_t cap = w->cap ? w->cap : BUF_FIRST;
	while (cap < w->len + n)
		cap *= 2;
	if (cap > bound + w->head)
		cap = bound + w->head;
	if (cap < w->len + n)
		return false;
	char *p = wisp_realloc(w->out, cap);
	if (!p)
		return false;
	w->out = p;
	w->cap = cap;
	return true;
}

static void put(struct nats_writer *w, const void *p, size_t n)
{
	if (w->head == w->len)
		w->moved_ms = loop_now_ms(w->loop); /* the write deadline counts from here */
	memcpy(w->out + w->len, p, n);
	w->len += n;
	w->queued_total += n;
}

static void on_flush(struct loop *l, struct loop_timer *t);
static void on_io(struct loop *l, struct loop_io *io, uint32_t events);
static void on_tick(struct loop *l, struct loop_timer *t);

static void schedule_flush(struct nats_writer *w)
{
	if (!loop_timer_armed(&w->flush) && !(w->io_events & LOOP_WRITE))
		loop_timer_soon(w->loop, &w->flush, on_flush);
}

/* ---- the connection ---- */

static void lose(struct nats_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void watch(struct nats_writer *w, uint32_t events)
{
	if (w->paused)
		events &= ~(uint32_t)LOOP_READ;
	if (w->io_on && events == w->io_events)
		return;
	int rc = w->io_on ? loop_io_set(w->loop, &w->io, events) : loop_io_start(w->loop, &w->io, w->fd, events, on_io);
	if (rc != 0) {
		lose(w, "cannot watch the socket");
		return;
	}
	w->io_on = true;
	w->io_events = events;
}

static void close_socket(struct nats_writer *w)
{
	if (w->io_on)
		loop_io_stop(w->loop, &w->io);
	w->io_on = false;
	w->io_events = 0;
	if (w->t)
		transport_close(w->t);
	else if (w->fd >= 0)
		close(w->fd);
	w->t = NULL;
	w->fd = -1;
	w->paused = false;
	if (w->timers) {
		mtimer_stop(w->timers, &w->hello_timer);
		mtimer_stop(w->timers, &w->hold_timer);
	}
	w->hold_until_ms = 0;
	loop_timer_stop(w->loop, &w->tick);
	loop_timer_stop(w->loop, &w->flush);
	loop_timer_stop(w->loop, &w->more);
}

static const struct writer_url *cur_url(const struct nats_writer *w) { return &w->urls[connector_current(&w->cn)]; }

static void add_lost(struct nats_writer *w, uint64_t n)
{
	w->lost += n;
	if (w->lost_to)
		*w->lost_to += n;
}

/* The connection or the attempt ends: what the buffer holds is lost. */
static void lose(struct nats_writer *w, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	bool was_up = w->state == W_UP;
	if (w->state == W_HELLO && w->out)
		explicit_bzero(w->out, w->cap); /* the CONNECT's secrets */
	close_socket(w);
	add_lost(w, w->ends_n);
	if (w->ends_n && !w->said_down)
		log_msg(LOG_WARNING, "cluster", "NATS data connection: %zu message%s in its buffer lost with the "
			"connection (counted in $SYS/broker/cluster/messages/send_failed)", w->ends_n,
			w->ends_n == 1 ? "" : "s");
	w->ends_n = w->ends_head = 0;
	w->head = w->len = 0;
	w->written_total = w->queued_total;
	w->in_len = w->in_need = 0;
	w->max_payload = 0;
	w->state = W_DOWN;
	if (!w->said_down) {
		const struct writer_url *u = cur_url(w);
		log_msg(was_up ? LOG_WARNING : LOG_NOTICE, "cluster", "NATS data connection %s %s:%u: %s; its "
			"messages go through cnats until it is back", was_up ? "lost at" : "not made to", u->host,
			(unsigned)u->port, why);
		w->said_down = true;
	}
	if (w->cn_ready) {
		connector_backoff_max(&w->cn, w->refused ? BACKOFF_REFUSED_MAX_MS : BACKOFF_MAX_MS);
		connector_retry(&w->cn, true);
	}
	w->refused = false;
	if (was_up && w->hooks.on_down)
		w->hooks.on_down(w->hooks.ud);
}

/* Messages whose bytes all left: written. */
static void count_written(struct nats_writer *w)
{
	while (w->ends_n && w->ends[w->ends_head] <= w->written_total) {
		w->ends_head = (w->ends_head + 1) % w->ends_cap;
		w->ends_n--;
		w->sent++;
	}
}

/* Writes until the socket would block. 0, or -1 when the connection was
 * lost. */
static int write_out(struct nats_writer *w)
{
	while (w->head < w->len) {
		struct iovec iov = {w->out + w->head, w->len - w->head};
		ssize_t n = transport_writev(w->t, &iov, 1);
		if (n == WISP_EAGAIN)
			break;
		if (n < 0) {
			char why[160];
			transport_last_error(w->t, why, sizeof why);
			lose(w, "write: %s", *why ? why : wisp_strerror((int)n));
			return -1;
		}
		w->head += (size_t)n;
		w->written_total += (uint64_t)n;
		w->moved_ms = loop_now_ms(w->loop);
		if (w->t->want)
			break;
	}
	count_written(w);
	if (w->head == w->len) {
		w->head = w->len = 0;
		/* A buffer a burst grew past 1 MiB (up to send_queue_bytes)
		 * is given back once it drained. */
		if (w->cap > 16 * BUF_FIRST) {
			wisp_free(w->out);
			w->out = NULL;
			w->cap = 0;
		}
	}
	uint32_t events = LOOP_READ | (w->head < w->len ? LOOP_WRITE : 0);
	if (w->t && w->state >= W_HELLO)
		watch(w, events);
	return 0;
}

/* Debug builds: whether a held SUB keeps the buffer back now (its timer
 * writes it then). */
static bool held(struct nats_writer *w)
{
	if (!w->hold_subs)
		return false;
	uint64_t now = mtimer_now_ms();
	if (w->hold_until_ms <= now)
		return false;
	if (!mtimer_is_armed(&w->hold_timer))
		mtimer_start(w->timers, &w->hold_timer, w->hold_until_ms - now);
	return true;
}

static void on_flush(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct nats_writer *w = container_of(t, struct nats_writer, flush);
	if (w->t && w->state >= W_HELLO && !held(w))
		write_out(w);
}

static void on_hold_over(struct mtimer *t, void *ud)
{
	(void)t;
	struct nats_writer *w = ud;
	if (w->t && w->state >= W_HELLO)
		write_out(w);
}

/* A control line of ours (CONNECT, PING, PONG): always queued, or the
 * connection is lost. */
static int say(struct nats_writer *w, const char *s, size_t n)
{
	if (!room(w, n, w->max + CONTROL_ROOM)) {
		lose(w, "its buffer is full and the server is not reading");
		return -1;
	}
	put(w, s, n);
	schedule_flush(w);
	return 0;
}

static void send_connect(struct nats_writer *w, const struct nats_info *info)
{
	const struct config_cluster *cfg = w->cfg;
	const struct writer_url *u = cur_url(w);
	struct nats_connect c = {
		.name = w->name,
		.tls_required = w->tls,
		.user = u->user ? u->user : (u->token ? NULL : cfg->username),
		.pass = u->user ? u->pass : (u->token ? NULL : cfg->password),
		.token = u->token ? u->token : (u->user ? NULL : cfg->token),
	};
	char sig[90] = "";
	if (w->signer) {
		unsigned char raw[64];
		if (!info->nonce[0]) {
			lose(w, "the server sent no nonce to sign (cluster.%s is set)",
			     cfg->credentials ? "credentials" : "nkey_seed");
			return;
		}
		if (nats_signer_sign(w->signer, info->nonce, raw) != 0) {
			lose(w, "signing the server's nonce failed");
			return;
		}
		nats_proto_base64url(raw, sizeof raw, sig);
		c.sig = sig;
		c.jwt = nats_signer_jwt(w->signer);
		c.nkey = c.jwt ? NULL : cfg->nkey;
	}
	/* A credentials file's JWT can take a few KiB. */
	struct sbuf b = {.max = NATS_PROTO_LINE_MAX};
	nats_proto_connect(&b, &c);
	if (b.failed) {
		sbuf_free(&b);
		lose(w, "its CONNECT is over %u bytes (or out of memory)", NATS_PROTO_LINE_MAX);
		return;
	}
	/* This copy of the secrets is wiped; the buffer's once the server
	 * answered (the PONG). */
	int rc = say(w, b.data, b.len);
	explicit_bzero(b.data, b.len);
	sbuf_free(&b);
	if (rc == 0) {
		w->state = W_HELLO;
		w->max_payload = info->max_payload;
		write_out(w);
	}
}

static void handshake(struct nats_writer *w)
{
	int rc = transport_handshake(w->t);
	if (rc == WISP_EAGAIN) {
		watch(w, (w->t->want & TRANSPORT_WANT_WRITE ? LOOP_WRITE : 0) |
			 (w->t->want & TRANSPORT_WANT_READ ? LOOP_READ : 0));
		return;
	}
	if (rc != 0) {
		char why[200];
		transport_last_error(w->t, why, sizeof why);
		lose(w, "TLS handshake: %s", *why ? why : wisp_strerror(rc));
		return;
	}
	send_connect(w, &w->info);
}

/* The server's first line: its INFO, read before anything is sent. */
static void on_info(struct nats_writer *w, const char *arg, size_t len)
{
	struct nats_info info;
	if (nats_proto_info(arg, len, &info) != 0) {
		lose(w, "a malformed INFO");
		return;
	}
	w->info = info;
	if (!info.headers) {
		lose(w, "the server takes no headers (nats-server 2.2 or later does)");
		return;
	}
	if (info.tls_required && !w->tls) {
		lose(w, "the server requires TLS (set cluster.cafile, or use tls:// URLs)");
		return;
	}
	if (w->tls && !info.tls_required && !info.tls_available) {
		lose(w, "the server offers no TLS, which the configuration requires");
		return;
	}
	/* TLS starts on the same socket, after the plain INFO; either
	 * transport takes fd, and closes it when it cannot be made. */
	w->t = w->tls ? tls_transport_new(cur_url(w)->tls, w->fd) : tcp_transport_new(w->fd);
	if (!w->t) {
		w->fd = -1;
		lose(w, "out of memory");
		return;
	}
	if (!w->tls) {
		send_connect(w, &w->info);
		return;
	}
	w->state = W_TLS;
	handshake(w);
}

static void on_err(struct nats_writer *w, const char *arg, size_t len)
{
	/* A publish the server's permissions refuse: that message only,
	 * lost (one -ERR each); said once per connection. */
	if (memmem(arg, len, "Permissions Violation", 21)) {
		add_lost(w, 1);
		if (!w->refusal_said)
			log_msg(LOG_WARNING, "cluster", "NATS data connection: the server refused a publish: %.*s (said "
				"once per connection; each counted in $SYS/broker/cluster/messages/send_failed)",
				(int)(len > 300 ? 300 : len), arg);
		w->refusal_said = true;
		return;
	}
	w->refused = w->state == W_HELLO;
	lose(w, "the server said -ERR %.*s", (int)(len > 200 ? 200 : len), arg);
}

/* One control line. 0, or -1 when the connection was lost. */
static int on_line(struct nats_writer *w, const char *line, size_t len)
{
	const char *arg;
	size_t alen;
	enum nats_op op = nats_proto_op(line, len, &arg, &alen);
	if (w->state == W_INFO) {
		if (op != NATS_OP_INFO) {
			lose(w, "not a NATS server (its first line is not INFO)");
			return -1;
		}
		/* The server says nothing more before our CONNECT (or the TLS
		 * handshake): the line is read, arg stays readable meanwhile. */
		w->in_len = 0;
		on_info(w, arg, alen);
		return w->state == W_DOWN ? -1 : 1;
	}
	switch (op) {
	case NATS_OP_PING:
		return say(w, "PONG\r\n", 6);
	case NATS_OP_PONG:
		w->pings_out = 0;
		if (w->state == W_UP) {
			w->pongs_heard++;
			if (w->hooks.on_mark)
				w->hooks.on_mark(w->hooks.ud, w->pongs_heard);
			return w->state == W_UP ? 0 : -1;
		}
		if (w->state == W_HELLO) {
			const struct writer_url *u = cur_url(w);
			/* The ring of message ends is made when first needed:
			 * send_queue x 8 bytes, not for a server never reached. */
			if (!w->ends && !(w->ends = wisp_calloc(w->ends_cap, sizeof *w->ends))) {
				lose(w, "out of memory");
				return -1;
			}
			/* The CONNECT (its secrets) was read: the bytes written
			 * so far, and the stale ones past the end, are wiped. */
			if (w->out) {
				explicit_bzero(w->out, w->head);
				explicit_bzero(w->out + w->len, w->cap - w->len);
			}
			w->state = W_UP;
			w->said_down = false;
			mtimer_stop(w->timers, &w->hello_timer);
			connector_connected(&w->cn);
			w->ping_due_ms = loop_now_ms(w->loop) + w->cfg->ping_interval * 1000ull;
			w->moved_ms = loop_now_ms(w->loop);
			loop_timer_start(w->loop, &w->tick, 1, on_tick);
			log_msg(LOG_NOTICE, "cluster", "NATS data connection up at %s:%u%s (max_payload %lld)", u->host,
				(unsigned)u->port, w->tls ? " over TLS" : "", (long long)w->max_payload);
			w->pings_sent = w->pongs_heard = 0;
			if (w->hooks.on_up)
				w->hooks.on_up(w->hooks.ud);
			return w->state == W_UP ? 0 : -1;
		}
		return 0;
	case NATS_OP_INFO: {
		struct nats_info info;
		if (nats_proto_info(arg, alen, &info) == 0 && info.max_payload > 0)
			w->max_payload = info.max_payload;
		return 0;
	}
	case NATS_OP_OK:
		return 0;
	case NATS_OP_ERR:
		on_err(w, arg, alen);
		return w->state == W_DOWN ? -1 : 0;
	default:
		lose(w, "an unexpected line from the server: %.*s", (int)(len > 40 ? 40 : len), line);
		return -1;
	}
}

/* The largest message body taken: the server's max_payload (nats-server
 * refuses larger publishes, so a larger MSG is not one of its). */
static size_t body_max(const struct nats_writer *w)
{
	return w->max_payload > 0 ? (size_t)w->max_payload : 1024u * 1024u;
}

/* A MSG or HMSG line at [start, start + len) of the input, its body from
 * body_at. 0 with *used the offset past the body's CR LF when it is all
 * here (handed to on_msg), 0 with *used 0 when more must be read
 * (w->in_need set), -1 when the connection was lost (a malformed one). */
static int on_msg(struct nats_writer *w, size_t start, size_t len, size_t body_at, size_t *used)
{
	const char *line = w->in + start, *arg;
	size_t alen;
	(void)nats_proto_op(line, len, &arg, &alen);
	bool hmsg = line[0] == 'H' || line[0] == 'h';
	struct nats_msg_head h;
	if (nats_proto_msg(arg, alen, hmsg, body_max(w), &h) != 0) {
		lose(w, "a malformed message line from the server: %.*s", (int)(len > 60 ? 60 : len), line);
		return -1;
	}
	size_t need = body_at + h.total_len + 2;
	if (w->in_len < need) {
		w->in_need = need;
		return 0;
	}
	const char *body = w->in + body_at;
	if (body[h.total_len] != '\r' || body[h.total_len + 1] != '\n') {
		lose(w, "a message from the server not ended by CR LF (%zu bytes said)", h.total_len);
		return -1;
	}
	struct nats_writer_msg m = {
		.subject = h.subject,
		.subject_len = h.subject_len,
		.reply = h.reply,
		.reply_len = h.reply_len,
		.sid = h.sid,
		.hdr = body,
		.hdr_len = h.hdr_len,
		.payload = body + h.hdr_len,
		.payload_len = h.total_len - h.hdr_len,
	};
	if (w->hooks.on_msg)
		w->hooks.on_msg(w->hooks.ud, &m);
	if (w->state != W_UP)
		return -1; /* its owner's call lost the connection */
	*used = need;
	return 0;
}

/* A buffer a large message or a burst grew past 1 MiB is given back once
 * nothing waits in it. */
static void give_back_in(struct nats_writer *w)
{
	if (w->in_len == 0 && w->in_cap > 16 * IN_FIRST) {
		wisp_free(w->in);
		w->in = NULL;
		w->in_cap = 0;
	}
}

/* Before INFO is read there is no transport yet: plain bytes. */
static ssize_t receive(struct nats_writer *w, char *buf, size_t n)
{
	if (w->t)
		return transport_read(w->t, buf, n);
	ssize_t got = recv(w->fd, buf, n, 0);
	if (got > 0)
		return got;
	if (got == 0)
		return WISP_ECLOSED;
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? WISP_EAGAIN : WISP_EIO;
}

/* Reads and handles whole lines until the socket would block. */
/* Handles the whole lines and messages the input holds, at most *budget
 * messages (each taken off it). -1: the connection was lost; 1: stop
 * reading (the INFO: what follows is TLS, or CONNECT's answer); 0. */
static int consume(struct nats_writer *w, unsigned *budget)
{
	size_t start = 0;
	w->in_need = 0;
	if (!w->in_len)
		return 0;
	while (*budget && !w->paused) {
		char *nl = memchr(w->in + start, '\n', w->in_len - start);
		if (!nl)
			break;
		size_t end = (size_t)(nl - w->in);
		size_t len = end - start - (end > start && w->in[end - 1] == '\r');
		const char *arg;
		size_t alen;
		int rc;
		if (w->state == W_UP && nats_proto_op(w->in + start, len, &arg, &alen) == NATS_OP_MSG) {
			size_t used = 0;
			rc = on_msg(w, start, len, end + 1, &used);
			if (rc == 0 && !used)
				break; /* its body is not all here yet */
			if (rc == 0) {
				end = used - 1;
				(*budget)--;
			}
		} else {
			rc = on_line(w, w->in + start, len);
		}
		if (rc != 0)
			return rc;
		start = end + 1;
	}
	memmove(w->in, w->in + start, w->in_len - start);
	w->in_len -= start;
	if (w->in_need)
		w->in_need -= start;
	give_back_in(w);
	return 0;
}

static void on_more(struct loop *l, struct loop_timer *t);

/* Reads and handles whole lines and messages until the socket would
 * block, READ_BUDGET messages at most: then the rest waits for the next
 * loop turn, so a burst from NATS cannot hold the node's clients up. */
static void read_in(struct nats_writer *w)
{
	unsigned budget = READ_BUDGET;
	bool got = false;
	for (;;) {
		if (consume(w, &budget) != 0 || w->paused)
			return;
		if (!budget) {
			if (!loop_timer_armed(&w->more))
				loop_timer_soon(w->loop, &w->more, on_more);
			return;
		}
		if (got && w->t && w->t->want && !transport_pending(w->t))
			return;
		if (w->in_len == w->in_cap || w->in_need > w->in_cap) {
			/* A control line, or a message's line and body. */
			size_t bound = w->in_need > NATS_PROTO_LINE_MAX + 2 ? w->in_need : NATS_PROTO_LINE_MAX + 2;
			if (w->in_cap >= bound) {
				lose(w, "a line over %u bytes from the server", NATS_PROTO_LINE_MAX);
				return;
			}
			size_t cap = w->in_cap ? w->in_cap * 2 : IN_FIRST;
			if (cap < w->in_need)
				cap = w->in_need;
			if (cap > bound)
				cap = bound;
			char *p = wisp_realloc(w->in, cap);
			if (!p) {
				lose(w, "out of memory");
				return;
			}
			w->in = p;
			w->in_cap = cap;
		}
		ssize_t n = receive(w, w->in + w->in_len, w->in_cap - w->in_len);
		if (n == WISP_EAGAIN)
			return;
		if (n < 0) {
			char why[160];
			if (w->t)
				transport_last_error(w->t, why, sizeof why);
			else
				why[0] = '\0';
			lose(w, "%s", n == WISP_ECLOSED ? "the server closed it" : *why ? why : wisp_strerror((int)n));
			return;
		}
		w->in_len += (size_t)n;
		got = true;
	}
}

static void on_more(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct nats_writer *w = container_of(t, struct nats_writer, more);
	if (w->state == W_UP)
		read_in(w);
}

static void on_io(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	struct nats_writer *w = container_of(io, struct nats_writer, io);
	if (w->state == W_TLS) {
		handshake(w);
		return;
	}
	if (events != LOOP_WRITE) {
		/* Paused, reading is not watched: readability is the server's
		 * FIN or an error (loop.c's EPOLLRDHUP), which would wake the
		 * loop again and again until the resume. */
		if (w->paused) {
			lose(w, "the server closed it");
			return;
		}
		read_in(w); /* readable, or an error that the read reports */
	}
	if (w->t && w->state >= W_HELLO && (events & LOOP_WRITE))
		write_out(w);
}

static void on_tick(struct loop *l, struct loop_timer *t)
{
	struct nats_writer *w = container_of(t, struct nats_writer, tick);
	uint64_t now = loop_now_ms(l);
	if (w->head < w->len && now - w->moved_ms > w->cfg->write_deadline) {
		lose(w, "the server has not read for %u ms (cluster.write_deadline)", w->cfg->write_deadline);
		return;
	}
	/* Paused, a PONG would wait unread: the owner bounds the pause. */
	if (now >= w->ping_due_ms && !w->paused) {
		if (w->pings_out >= 2) {
			lose(w, "two PINGs unanswered (cluster.ping_interval %u s)", w->cfg->ping_interval);
			return;
		}
		w->pings_out++;
		w->ping_due_ms = now + w->cfg->ping_interval * 1000ull;
		if (say(w, "PING\r\n", 6) != 0)
			return;
		w->pings_sent++;
	}
	loop_timer_start(l, t, 1, on_tick);
}

/* ---- the connector's outcomes ---- */

static void on_ready(struct connector *cn, struct transport *t, int fd, void *ud)
{
	struct nats_writer *w = ud;
	(void)cn;
	(void)t; /* no transport_new: TLS comes after INFO */
	w->fd = fd;
	w->state = W_INFO;
	w->in_len = 0;
	w->pings_out = 0;
	w->refusal_said = false;
	mtimer_start(w->timers, &w->hello_timer, w->cfg->connect_timeout * 1000ull);
	watch(w, LOOP_READ);
}

static void on_failed(struct connector *cn, size_t addr, int err, const char *why, void *ud)
{
	struct nats_writer *w = ud;
	(void)cn;
	(void)addr;
	(void)err;
	lose(w, "%s", why);
}

static void on_hello_late(struct mtimer *t, void *ud)
{
	struct nats_writer *w = ud;
	(void)t;
	if (w->state != W_UP && w->state != W_DOWN)
		lose(w, "no answer within cluster.connect_timeout (%u s)", w->cfg->connect_timeout);
}

/* ---- the URLs ---- */

static char *dup_n(const char *s, size_t n)
{
	char *p = wisp_malloc(n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

static int add_url(struct nats_writer *w, const char *url, size_t len, char *err, size_t errlen)
{
	struct config_nats_url parts;
	config_nats_url_split(url, len, &parts);
	struct writer_url *u = &w->urls[w->nurls];
	const char *port = NULL;
	size_t hlen = parts.host_len;
	/* The port follows the host (an IPv6 literal's brackets aside). */
	const char *after = parts.host + parts.host_len;
	if (after < url + len && *after == ']')
		after++;
	if (after < url + len && *after == ':')
		port = after + 1;
	u->host = dup_n(parts.host, hlen);
	u->port = port ? (uint16_t)strtoul(port, NULL, 10) : 4222;
	u->tls_scheme = parts.scheme_len == 3 && memcmp(parts.scheme, "tls", 3) == 0;
	if (!u->host)
		return WISP_ENOMEM;
	if (parts.userinfo_len) {
		const char *colon = memchr(parts.userinfo, ':', parts.userinfo_len);
		if (colon) {
			u->user = dup_n(parts.userinfo, (size_t)(colon - parts.userinfo));
			u->pass = dup_n(colon + 1, parts.userinfo_len - (size_t)(colon - parts.userinfo) - 1);
			if (!u->user || !u->pass)
				return WISP_ENOMEM;
		} else if (!(u->token = dup_n(parts.userinfo, parts.userinfo_len))) {
			return WISP_ENOMEM;
		}
	}
	w->nurls++;
	if (!w->tls)
		return 0;
	const struct config_cluster *cfg = w->cfg;
	struct tls_opts o;
	tls_opts_init(&o);
	o.ca_file = cfg->cafile;
	o.ca_path = cfg->cafile ? NULL : "/etc/ssl/certs";
	o.cert_file = cfg->certfile;
	o.key_file = cfg->keyfile;
	o.verify_peer = !cfg->tls_skip_verify;
	o.hostname = cfg->tls_server_name ? cfg->tls_server_name : u->host;
	char why[256];
	if (tls_ctx_new_client(&o, &u->tls, why, sizeof why) != 0) {
		snprintf(err, errlen, "cluster.%s: %s", cfg->cafile ? "cafile" : "nats", why);
		return WISP_ECONFIG;
	}
	return 0;
}

/* ---- the caller's ---- */

int nats_writer_start(struct nats_writer **out, struct loop *l, const struct config_cluster *cfg,
		      const struct nats_signer *signer, const char *name, char *err, size_t errlen)
{
	*out = NULL;
	struct nats_writer *w = wisp_calloc(1, sizeof *w);
	if (!w)
		return WISP_ENOMEM;
	w->loop = l;
	w->fd = -1;
	mtimer_init(&w->hello_timer, on_hello_late, w);
	mtimer_init(&w->hold_timer, on_hold_over, w);
#ifndef NDEBUG
	w->hold_subs = getenv("WISP_DEBUG_DELAY_WRITER_SUB") != NULL;
#endif
	w->cfg = cfg;
	w->signer = signer;
	w->tls = config_cluster_tls(cfg);
	w->max = cfg->send_queue_bytes;
	w->ends_cap = cfg->send_queue;
	size_t n = 1;
	for (const char *p = cfg->nats; *p; p++)
		n += *p == ',';
	w->name = dup_n(name, strlen(name));
	w->urls = wisp_calloc(n, sizeof *w->urls);
	w->timers = mtimers_new(l);
	w->lookups = bg_new(l, 1, 1); /* the connector has one lookup out at a time */
	int rc = !w->name || !w->urls || !w->timers || !w->lookups ? WISP_ENOMEM : 0;
	for (const char *p = cfg->nats; rc == 0 && *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		rc = add_url(w, p, len, err, errlen);
		p += len + (end != NULL);
	}
	struct connector_addr *addrs = rc == 0 ? wisp_calloc(w->nurls, sizeof *addrs) : NULL;
	if (rc == 0 && !addrs)
		rc = WISP_ENOMEM;
	if (rc == 0) {
		for (size_t i = 0; i < w->nurls; i++)
			addrs[i] = (struct connector_addr){w->urls[i].host, w->urls[i].port};
		struct connector_opts o = {
			.addrs = addrs,
			.addr_count = w->nurls,
			.nodelay = true,
			.bg = w->lookups,
			.timeout_ms = cfg->connect_timeout * 1000u,
			.backoff_min_ms = 250,
			.backoff_max_ms = BACKOFF_MAX_MS,
			.on_ready = on_ready,
			.on_failed = on_failed,
			.ud = w,
		};
		rc = connector_init(&w->cn, l, w->timers, &o) == 0 ? 0 : WISP_ENOMEM;
		w->cn_ready = rc == 0;
	}
	wisp_free(addrs);
	if (rc != 0) {
		nats_writer_stop(w);
		return rc;
	}
	if (connector_dial(&w->cn) != 0)
		lose(w, "%s", connector_why(&w->cn));
	*out = w;
	return 0;
}

void nats_writer_stop(struct nats_writer *w)
{
	if (!w)
		return;
	if (w->t && w->state == W_UP && w->head < w->len) {
		struct iovec iov = {w->out + w->head, w->len - w->head};
		(void)transport_writev(w->t, &iov, 1);
	}
	close_socket(w);
	if (w->cn_ready)
		connector_free(&w->cn); /* a lookup still running is told its connector is gone */
	if (w->lookups)
		bg_abandon(w->lookups);
	for (size_t i = 0; i < w->nurls; i++) {
		struct writer_url *u = &w->urls[i];
		wisp_free(u->host);
		wisp_free(u->user);
		if (u->pass)
			explicit_bzero(u->pass, strlen(u->pass));
		wisp_free(u->pass);
		if (u->token)
			explicit_bzero(u->token, strlen(u->token));
		wisp_free(u->token);
		tls_ctx_unref(u->tls);
	}
	mtimers_free(w->timers);
	wisp_free(w->urls);
	wisp_free(w->ends);
	wisp_free(w->out);
	wisp_free(w->in);
	wisp_free(w->name);
	wisp_free(w);
}

bool nats_writer_up(const struct nats_writer *w) { return w && w->state == W_UP; }
int64_t nats_writer_max_payload(const struct nats_writer *w) { return w->state == W_UP ? w->max_payload : 0; }
uint64_t nats_writer_lost(const struct nats_writer *w) { return w->lost; }

void nats_writer_count_lost_in(struct nats_writer *w, uint64_t *counter) { w->lost_to = counter; }
uint64_t nats_writer_sent(const struct nats_writer *w) { return w->sent; }
size_t nats_writer_buffered(const struct nats_writer *w) { return w->len - w->head; }

int nats_writer_publish(struct nats_writer *w, const char *subject, size_t subject_len, const char *hdr,
			size_t hdr_len, const void *payload, size_t payload_len)
{
	if (w->state != W_UP)
		return WISP_EAGAIN;
	if (w->max_payload > 0 && hdr_len + payload_len > (uint64_t)w->max_payload)
		return WISP_ELIMIT;
	/* The HPUB line is formatted in place: its bound is reserved. */
	size_t head_max = NATS_PROTO_HPUB_HEAD_MAX + subject_len + 1;
	if (w->ends_n == w->ends_cap || !room(w, head_max + hdr_len + payload_len + 2, w->max))
		return WISP_EAGAIN;
	if (w->head == w->len)
		w->moved_ms = loop_now_ms(w->loop);
	size_t hn = nats_proto_hpub_head(w->out + w->len, head_max, subject, subject_len, hdr_len, payload_len);
	if (!hn)
		return WISP_ELIMIT;
	w->len += hn;
	w->queued_total += hn;
	put(w, hdr, hdr_len);
	put(w, payload, payload_len);
	put(w, "\r\n", 2);
	w->ends[(w->ends_head + w->ends_n) % w->ends_cap] = w->queued_total;
	w->ends_n++;
	schedule_flush(w);
	return 0;
}

void nats_writer_set_hooks(struct nats_writer *w, const struct nats_writer_hooks *h) { w->hooks = *h; }

void nats_writer_pause(struct nats_writer *w)
{
	if (w->state != W_UP || w->paused)
		return;
	w->paused = true;
	watch(w, w->io_events);
}

void nats_writer_resume(struct nats_writer *w)
{
	if (!w->paused)
		return;
	w->paused = false;
	if (w->state != W_UP)
		return;
	watch(w, LOOP_READ | (w->head < w->len ? LOOP_WRITE : 0));
	/* What the input already holds: no readiness says so. */
	if (!loop_timer_armed(&w->more))
		loop_timer_soon(w->loop, &w->more, on_more);
}

int nats_writer_subscribe(struct nats_writer *w, uint64_t sid, const char *subject, size_t subject_len)
{
	if (w->state != W_UP)
		return WISP_EAGAIN;
	char tail[24];
	int n = snprintf(tail, sizeof tail, " %" PRIu64 "\r\n", sid);
	if (!room(w, 4 + subject_len + (size_t)n, w->max + CONTROL_ROOM + SUBS_ROOM)) {
		lose(w, "its buffer is full and the server is not reading");
		return WISP_ECLOSED;
	}
	put(w, "SUB ", 4);
	put(w, subject, subject_len);
	put(w, tail, (size_t)n);
	if (w->hold_subs && w->hold_until_ms <= mtimer_now_ms())
		w->hold_until_ms = (mtimer_now_ms() / 1000 + 1) * 1000;
	schedule_flush(w);
	return 0;
}

int nats_writer_unsubscribe(struct nats_writer *w, uint64_t sid)
{
	if (w->state != W_UP)
		return WISP_EAGAIN;
	char line[32];
	int n = snprintf(line, sizeof line, "UNSUB %" PRIu64 "\r\n", sid);
	return say(w, line, (size_t)n) == 0 ? 0 : WISP_ECLOSED;
}

uint64_t nats_writer_mark(struct nats_writer *w)
{
	if (w->state != W_UP || say(w, "PING\r\n", 6) != 0)
		return 0;
	return ++w->pings_sent;
}
