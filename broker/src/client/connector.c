/*
 * The connector of connector.h: IDLE -> RESOLVING (inline, or a bg job)
 * -> DIALING (net/dial walks the name's addresses) -> HANDSHAKE (only with
 * a transport) -> handed to the owner, IDLE again. A failure at any step
 * ends the attempt and is reported; WAITING is the backoff before the
 * next one.
 */
#include "connector.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "bg.h"
#include "err.h"
#include "tls.h"
#include "transport.h"

enum connector_state {
	CN_IDLE = 0,
	CN_WAITING,   /* the backoff */
	CN_RESOLVING, /* a lookup under way */
	CN_DIALING,   /* TCP connect under way */
	CN_HANDSHAKE, /* transport handshake under way */
};

/* One lookup. Owned by its connector until abandoned (deadline passed or
 * connector gone while the helper thread runs it); then by itself, and
 * done() frees it. work() touches nothing else. */
struct resolve_job {
	struct bg_job job;
	struct connector *cn; /* NULL: the connector is gone */
	bool abandoned;
	bool finished; /* done() ran: the dial borrows res and bind_res */
	char *host, *bind;
	uint16_t port;
	struct addrinfo *res, *bind_res;
	int gai;
	bool bind_failed;
};

const char *mqtt_client_strerror(int err)
{
	switch (err) {
	case MQTT_CLIENT_OK: return "success";
	case MQTT_CLIENT_ERESOLVE: return "lookup error";
	case MQTT_CLIENT_ECONNECT: return "connect failed";
	case MQTT_CLIENT_ETLS: return "TLS handshake failed";
	case MQTT_CLIENT_EREFUSED: return "connection refused by broker";
	case MQTT_CLIENT_ELOST: return "connection lost";
	case MQTT_CLIENT_EPROTOCOL: return "protocol error";
	case MQTT_CLIENT_EKEEPALIVE: return "keepalive timeout";
	case MQTT_CLIENT_ENOMEM: return "out of memory";
	case MQTT_CLIENT_ESERVER: return "disconnected by broker";
	case MQTT_CLIENT_ETIMEOUT: return "timed out";
	/* libmosquitto's words, which mosquitto_pub prints */
	case MQTT_CLIENT_EQOS: return "Requested QoS not supported by server.";
	case MQTT_CLIENT_ETOOLARGE: return "Packet larger than supported by the server.";
	}
	return "unknown error";
}

static void set_why(struct connector *cn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_why(struct connector *cn, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cn->why, sizeof cn->why, fmt, ap);
	va_end(ap);
}

/* xorshift64*: the backoff's jitter; nothing depends on its quality. */
static uint32_t next_rand(struct connector *cn)
{
	uint64_t x = cn->rand_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	cn->rand_state = x;
	return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

static void job_free(struct resolve_job *j)
{
	dial_free_addrs(j->res);
	dial_free_addrs(j->bind_res);
	wisp_free(j->host);
	wisp_free(j->bind);
	wisp_free(j);
}

/* Helper thread (or inline): the blocking part. */
static void resolve_work(struct bg_job *job)
{
	struct resolve_job *j = container_of(job, struct resolve_job, job);
	if (dial_resolve(j->host, j->port, &j->res, &j->gai) == 0 && j->bind &&
	    dial_resolve(j->bind, 0, &j->bind_res, &j->gai) != 0)
		j->bind_failed = true;
}

static void on_io(struct loop *l, struct loop_io *io, uint32_t events);

/* Ends the attempt under way, quietly. */
static void stop_attempt(struct connector *cn)
{
	if (!cn->loop) /* never initialised (its owner failed earlier) */
		return;
	if (cn->io.fd >= 0)
		loop_io_stop(cn->loop, &cn->io);
	cn->io.fd = -1;
	if (cn->t) {
		transport_close(cn->t); /* closes the fd the dial handed over */
		cn->t = NULL;
	}
	dial_cleanup(&cn->dial);
	struct resolve_job *j = cn->job;
	if (j) {
		/* Finished, or taken out of the queue before it started: ours
		 * to free. Running: done() frees it. */
		if (j->finished || (cn->o.bg && bg_cancel(cn->o.bg, &j->job))) {
			job_free(j);
			cn->job = NULL;
		} else {
			j->abandoned = true;
		}
	}
	mtimer_stop(cn->timers, &cn->timer);
	cn->state = CN_IDLE;
}

static void fail(struct connector *cn, int err)
{
	stop_attempt(cn);
	if (cn->o.on_failed)
		cn->o.on_failed(cn, cn->cur, err, cn->why, cn->o.ud);
}

static void hand_over(struct connector *cn, struct transport *t, int fd)
{
	if (cn->io.fd >= 0)
		loop_io_stop(cn->loop, &cn->io);
	cn->io.fd = -1;
	cn->t = NULL; /* the owner's now */
	stop_attempt(cn); /* frees the lookup's lists the dial walked */
	cn->o.on_ready(cn, t, fd, cn->o.ud);
}

static void handshake_step(struct connector *cn)
{
	int rc = transport_handshake(cn->t);
	if (rc == 0) {
		hand_over(cn, cn->t, cn->t->fd);
		return;
	}
	if (rc == WISP_EAGAIN) {
		uint32_t ev = (cn->t->want & TRANSPORT_WANT_WRITE) ? LOOP_WRITE : 0;
		if (cn->t->want & TRANSPORT_WANT_READ)
			ev |= LOOP_READ;
		loop_io_set(cn->loop, &cn->io, ev ? ev : LOOP_READ);
		return;
	}
	char why[128];
	transport_last_error(cn->t, why, sizeof why);
	set_why(cn, "TLS handshake failed: %s", why[0] ? why : wisp_strerror(rc));
	cn->cert_rejected = tls_transport_cert_rejected(cn->t);
	fail(cn, MQTT_CLIENT_ETLS);
}

static void dial_step(struct connector *cn)
{
	const struct addrinfo *tried = cn->dial.cur;
	int rc = dial_finish(&cn->dial);
	if (rc == WISP_EAGAIN) {
		/* Moving to the name's next address (::1 refused, 127.0.0.1
		 * next) made a new socket. It usually gets the closed one's
		 * descriptor number, so compare addresses, not numbers: closing
		 * removed the old socket from epoll, and the new one must be
		 * added. */
		if (cn->dial.cur != tried) {
			loop_io_stop(cn->loop, &cn->io);
			cn->io.fd = -1;
			if (loop_io_start(cn->loop, &cn->io, cn->dial.fd, LOOP_WRITE, on_io) != 0) {
				set_why(cn, "cannot watch the socket");
				fail(cn, MQTT_CLIENT_ENOMEM);
			}
		}
		return;
	}
	if (rc != 0) {
		cn->last_errno = cn->dial.last_errno;
		set_why(cn, "connect: %s", strerror(cn->last_errno));
		fail(cn, MQTT_CLIENT_ECONNECT);
		return;
	}
	int fd = cn->io.fd; /* dial_finish handed it over */
	if (!cn->o.transport_new) {
		hand_over(cn, NULL, fd);
		return;
	}
	loop_io_stop(cn->loop, &cn->io);
	cn->io.fd = -1;
	cn->t = cn->o.transport_new(cn->o.transport_ctx, cn->cur, fd);
	if (!cn->t) {
		set_why(cn, "cannot set up TLS (out of memory?)");
		fail(cn, MQTT_CLIENT_ETLS);
		return;
	}
	if (loop_io_start(cn->loop, &cn->io, fd, LOOP_READ | LOOP_WRITE, on_io) != 0) {
		set_why(cn, "cannot watch the socket");
		fail(cn, MQTT_CLIENT_ENOMEM);
		return;
	}
	cn->state = CN_HANDSHAKE;
	handshake_step(cn);
}

static void on_io(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct connector *cn = container_of(io, struct connector, io);
	(void)l;
	(void)events;
	if (cn->state == CN_DIALING)
		dial_step(cn);
	else if (cn->state == CN_HANDSHAKE)
		handshake_step(cn);
}

/* Connects to what the lookup found (borrowed: owned by the job or by
 * the caller of connector_init). 0, or an MQTT_CLIENT_E* with why set. */
static int start_dial(struct connector *cn, struct addrinfo *addrs, struct addrinfo *bind_addrs)
{
	if (dial_start_resolved(&cn->dial, addrs, bind_addrs, cn->o.nodelay) != 0) {
		cn->last_errno = cn->dial.last_errno;
		set_why(cn, "connect: %s", strerror(cn->last_errno));
		return MQTT_CLIENT_ECONNECT;
	}
	if (loop_io_start(cn->loop, &cn->io, cn->dial.fd, LOOP_WRITE, on_io) != 0) {
		set_why(cn, "cannot watch the socket");
		return MQTT_CLIENT_ENOMEM;
	}
	cn->state = CN_DIALING;
	return 0;
}

/* The lookup's outcome, on the loop thread. 0 or an MQTT_CLIENT_E*. */
static int resolved(struct connector *cn, struct resolve_job *j)
{
	const struct connector_addr *a = &cn->addrs[cn->cur];
	if (!j->res) {
		set_why(cn, "cannot resolve %s: %s", a->host, gai_strerror(j->gai));
		return MQTT_CLIENT_ERESOLVE;
	}
	if (j->bind_failed) {
		set_why(cn, "cannot resolve %s: %s", cn->bind_address, gai_strerror(j->gai));
		return MQTT_CLIENT_ERESOLVE;
	}
	/* The dial walks the lists; they live in the job until the attempt
	 * ends (stop_attempt frees it). */
	return start_dial(cn, j->res, j->bind_res);
}

static void resolve_done(struct bg_job *job)
{
	struct resolve_job *j = container_of(job, struct resolve_job, job);
	struct connector *cn = j->cn;
	if (!cn || j->abandoned) {
		if (cn)
			cn->job = NULL;
		job_free(j);
		return;
	}
	j->finished = true;
	int rc = resolved(cn, j);
	if (rc != 0)
		fail(cn, rc);
}

static void on_timer(struct mtimer *t, void *ud)
{
	struct connector *cn = ud;
	(void)t;
	switch (cn->state) {
	case CN_WAITING: {
		cn->state = CN_IDLE;
		int rc = connector_dial(cn);
		if (rc != 0 && cn->o.on_failed)
			cn->o.on_failed(cn, cn->cur, rc, cn->why, cn->o.ud);
		return;
	}
	case CN_RESOLVING:
		set_why(cn, "resolving %s timed out after %u ms", cn->addrs[cn->cur].host, cn->o.timeout_ms);
		fail(cn, MQTT_CLIENT_ETIMEOUT);
		return;
	case CN_DIALING:
	case CN_HANDSHAKE:
		set_why(cn, "%s timed out after %u ms", cn->state == CN_DIALING ? "connect" : "TLS handshake",
			cn->o.timeout_ms);
		fail(cn, MQTT_CLIENT_ETIMEOUT);
		return;
	default:
		return;
	}
}

int connector_init(struct connector *cn, struct loop *l, struct mtimers *timers, const struct connector_opts *o)
{
	memset(cn, 0, sizeof *cn);
	cn->loop = l;
	cn->timers = timers;
	cn->o = *o;
	cn->io.fd = -1;
	cn->dial.fd = -1;
	mtimer_init(&cn->timer, on_timer, cn);
	cn->rand_state = ((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)cn) |
			 1u; /* xorshift needs a non-zero state */
	cn->addrs = wisp_calloc(o->addr_count ? o->addr_count : 1, sizeof *cn->addrs);
	if (!cn->addrs)
		return MQTT_CLIENT_ENOMEM;
	cn->o.addrs = cn->addrs;
	for (size_t i = 0; i < o->addr_count; i++) {
		cn->addrs[i].port = o->addrs[i].port;
		cn->addrs[i].host = wisp_strndup(o->addrs[i].host, strlen(o->addrs[i].host));
		if (!cn->addrs[i].host) {
			connector_free(cn);
			return MQTT_CLIENT_ENOMEM;
		}
	}
	if (o->bind_address && !(cn->bind_address = wisp_strndup(o->bind_address, strlen(o->bind_address)))) {
		connector_free(cn);
		return MQTT_CLIENT_ENOMEM;
	}
	cn->o.bind_address = cn->bind_address;
	return 0;
}

void connector_free(struct connector *cn)
{
	if (!cn->loop)
		return;
	connector_cancel(cn);
	if (cn->job) /* abandoned and still running: done() frees it */
		cn->job->cn = NULL;
	cn->job = NULL;
	for (size_t i = 0; cn->addrs && i < cn->o.addr_count; i++)
		wisp_free((char *)cn->addrs[i].host);
	wisp_free(cn->addrs);
	wisp_free(cn->bind_address);
	cn->addrs = NULL;
	cn->bind_address = NULL;
}

int connector_dial(struct connector *cn)
{
	if (cn->state != CN_IDLE && cn->state != CN_WAITING)
		return 0;
	mtimer_stop(cn->timers, &cn->timer);
	cn->state = CN_IDLE;
	cn->cert_rejected = false;
	const struct connector_addr *a = &cn->addrs[cn->cur];
	if (cn->job) {
		set_why(cn, "the last lookup of %s has not returned yet", a->host);
		return MQTT_CLIENT_ERESOLVE;
	}
	if (cn->timers && cn->o.timeout_ms)
		mtimer_start(cn->timers, &cn->timer, cn->o.timeout_ms);
	if (cn->cur == 0 && cn->o.resolved) {
		int rc = start_dial(cn, cn->o.resolved, NULL);
		if (rc != 0)
			stop_attempt(cn);
		return rc;
	}
	struct resolve_job *j = wisp_calloc(1, sizeof *j);
	if (!j || !(j->host = wisp_strndup(a->host, strlen(a->host))) ||
	    (cn->bind_address && !(j->bind = wisp_strndup(cn->bind_address, strlen(cn->bind_address))))) {
		if (j)
			job_free(j);
		stop_attempt(cn);
		set_why(cn, "out of memory");
		return MQTT_CLIENT_ENOMEM;
	}
	j->port = a->port;
	j->cn = cn;
	j->job.work = resolve_work;
	j->job.done = resolve_done;
	cn->job = j;
	cn->state = CN_RESOLVING;
	if (!cn->o.bg) {
		resolve_work(&j->job);
		j->finished = true;
		int rc = resolved(cn, j);
		if (rc != 0)
			stop_attempt(cn);
		return rc;
	}
	if (bg_submit(cn->o.bg, &j->job) != 0) {
		cn->job = NULL;
		job_free(j);
		stop_attempt(cn);
		set_why(cn, "cannot resolve %s: the background threads are busy", a->host);
		return MQTT_CLIENT_ERESOLVE;
	}
	return 0;
}

void connector_retry(struct connector *cn, bool next)
{
	stop_attempt(cn);
	if (next && cn->o.addr_count)
		cn->cur = (cn->cur + 1) % cn->o.addr_count;
	uint64_t lo = cn->o.backoff_min_ms ? cn->o.backoff_min_ms : 1000u;
	uint64_t hi = cn->o.backoff_max_ms ? cn->o.backoff_max_ms : 30000u;
	if (hi < lo)
		hi = lo;
	uint64_t d = lo;
	for (uint32_t i = 0; i < cn->attempt && d < hi; i++)
		d *= 2;
	if (d > hi)
		d = hi;
	cn->attempt++;
	/* "Equal jitter": half fixed, half random, so a fleet that lost its
	 * broker together does not come back in lockstep. */
	uint64_t wait = d / 2 + next_rand(cn) % (d - d / 2 + 1);
	cn->state = CN_WAITING;
	mtimer_start(cn->timers, &cn->timer, wait ? wait : 1);
}

void connector_backoff_max(struct connector *cn, uint32_t ms) { cn->o.backoff_max_ms = ms; }

void connector_connected(struct connector *cn)
{
	cn->attempt = 0;
}

void connector_cancel(struct connector *cn)
{
	stop_attempt(cn);
}

bool connector_busy(const struct connector *cn)
{
	return cn->state != CN_IDLE;
}

size_t connector_current(const struct connector *cn)
{
	return cn->cur;
}

const struct connector_addr *connector_addr(const struct connector *cn, size_t i)
{
	return &cn->addrs[i];
}

int connector_errno(const struct connector *cn)
{
	return cn->last_errno;
}

bool connector_cert_rejected(const struct connector *cn)
{
	return cn->cert_rejected;
}

const char *connector_why(const struct connector *cn)
{
	return cn->why;
}

/* ---- CONNECT and CONNACK ---- */

size_t connector_connect_size(const struct mqtt_connect *m)
{
	/* Fixed header, protocol name and level, flags, keep alive and the
	 * property lengths fit in 64 bytes; each string adds its length. */
	return 64 + m->client_id.len + m->will_topic.len + m->will_payload.len + m->username.len + m->password.len +
	       m->props.raw.len + m->will_props.raw.len;
}

ssize_t connector_encode_connect(uint8_t *buf, size_t cap, const struct mqtt_connect *m, bool bridge)
{
	ssize_t n = mqtt_encode_connect(buf, cap, m);
	if (n > 0 && bridge && m->version != MQTT_PROTO_V5) {
		/* The protocol level follows the remaining length and the
		 * 6-byte protocol name ("MQTT" or "MQIsdp" are 6 and 8). */
		size_t head = 2;
		while (buf[head - 1] & 0x80)
			head++;
		size_t name = (size_t)buf[head] << 8 | buf[head + 1];
		buf[head + 2 + name] |= 0x80;
	}
	return n;
}

void connector_limits(const struct mqtt_connack *a, struct connector_limits *out)
{
	out->receive_max =
		(a->props.present & MQTT_PROP_BIT(MQTT_PROP_RECEIVE_MAXIMUM)) ? a->props.receive_maximum : 0;
	out->packet_max =
		(a->props.present & MQTT_PROP_BIT(MQTT_PROP_MAXIMUM_PACKET_SIZE)) ? a->props.maximum_packet_size : 0;
	out->max_qos = (a->props.present & MQTT_PROP_BIT(MQTT_PROP_MAXIMUM_QOS)) ? a->props.maximum_qos : 2;
}
