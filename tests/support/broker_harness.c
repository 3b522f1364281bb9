#include "broker_harness.h"

#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker.h"
#include "config.h"
#include "err.h"
#include "fake_transport.h"
#include "log.h"
#include "loop.h"

/* Turns harness_run allows before it gives up on quiet: far more than any
 * script needs, so a broker that keeps writing cannot hang a test. */
#define MAX_TURNS 64
/* Waits for a helper thread (group commit, password check), bounded:
 * 500 x 10 ms. */
#define HELPER_WAITS 500
#define HELPER_WAIT_MS 10

struct harness {
	struct loop *loop;
	struct config *cfg;
	struct broker b;
	struct loop_io kick;     /* always readable: stops loop_run after one turn */
	int kick_fds[2];
	bool activity;           /* this turn read or wrote something */
	struct hclient *clients; /* every client made, closed ones too */
	uint16_t next_port;
	harness_write_fn on_write;
	void *on_write_ctx;
	harness_read_fn on_read;
	void *on_read_ctx;
	bool packet_reads;
};

struct hclient {
	struct harness *h;
	struct hclient *next;
	struct fake_transport *f; /* NULL once the broker closed it */
	int fds[2];               /* a socket for epoll to watch; kept readable */
	uint8_t *in;              /* everything the script sent */
	size_t in_len, in_cap;
	uint8_t *out;             /* everything the broker wrote */
	size_t out_len, out_cap, out_taken;
	bool peer_closed;
	size_t pkt_start, pkt_end; /* the packet being read (packet_reads); end 0: not known yet */
};

/* The fake transport's own operations, and ours around them: the harness
 * needs to see writes as they happen, keep output after the broker closes
 * the transport (fake_close frees it), and play a peer that closes. */
static const struct transport_ops *fake_ops;
static struct transport_ops harness_ops;
/* Every live client of every harness: the operations find theirs by transport. */
static struct hclient *live[256];

static struct hclient *client_of(struct transport *t)
{
	for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
		if (live[i] && live[i]->f && &live[i]->f->base == t)
			return live[i];
	abort(); /* a transport the harness did not make */
}

static void append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *bytes, size_t n)
{
	if (*len + n > *cap) {
		size_t nc = *cap ? *cap : 256;
		while (nc < *len + n)
			nc *= 2;
		uint8_t *nb = realloc(*buf, nc);
		if (!nb)
			abort();
		*buf = nb;
		*cap = nc;
	}
	if (n)
		memcpy(*buf + *len, bytes, n);
	*len += n;
}

size_t harness_frame_len(const uint8_t *p, size_t n)
{
	size_t len = 0;
	for (size_t i = 1; i < 5; i++) {
		if (i >= n)
			return 0;
		len |= (size_t)(p[i] & 0x7f) << (7 * (i - 1));
		if (!(p[i] & 0x80))
			return 1 + i + len;
	}
	return SIZE_MAX;
}

/* packet_reads: how much the next read may hand out, up to the end of the
 * packet it is in (all that is there while its header is incomplete). */
static size_t packet_read_limit(struct hclient *c)
{
	size_t off = c->f->input_off;
	if (c->pkt_end && c->pkt_end != SIZE_MAX && off >= c->pkt_end) {
		c->pkt_start = c->pkt_end;
		c->pkt_end = 0;
	}
	if (!c->pkt_end && c->in_len > c->pkt_start) {
		size_t n = harness_frame_len(c->in + c->pkt_start, c->in_len - c->pkt_start);
		if (n)
			c->pkt_end = n == SIZE_MAX ? SIZE_MAX : c->pkt_start + n;
	}
	size_t left = c->in_len - off;
	if (!c->pkt_end || c->pkt_end == SIZE_MAX || c->pkt_end - off > left)
		return left;
	return c->pkt_end - off;
}

static ssize_t harness_read(struct transport *t, void *buf, size_t len)
{
	struct hclient *c = client_of(t);
	struct harness *h = c->h;
	c->f->input = c->in; /* in may have moved since the last read */
	c->f->input_len = c->in_len;
	if (h->packet_reads) {
		size_t limit = packet_read_limit(c);
		c->f->read_per_call = limit ? limit : 1;
	}
	ssize_t n = fake_ops->read(t, buf, len);
	if (h->on_read)
		h->on_read(h->on_read_ctx, c, n > 0 ? (size_t)n : 0);
	if (n == WISP_EAGAIN && c->peer_closed) {
		t->want = 0;
		h->activity = true;
		return WISP_ECLOSED;
	}
	if (n > 0)
		h->activity = true;
	return n;
}

static ssize_t harness_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
	struct hclient *c = client_of(t);
	ssize_t n = fake_ops->writev(t, iov, iovcnt);
	if (c->f->written_len) {
		size_t at = c->out_len;
		append(&c->out, &c->out_len, &c->out_cap, c->f->written, c->f->written_len);
		fake_transport_reset(c->f);
		c->h->activity = true;
		if (c->h->on_write)
			c->h->on_write(c->h->on_write_ctx, c, c->out + at, c->out_len - at);
	}
	return n;
}

static void harness_close(struct transport *t)
{
	struct hclient *c = client_of(t);
	for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
		if (live[i] == c)
			live[i] = NULL;
	c->f = NULL;
	c->h->activity = true;
	fake_ops->close(t);
}

static void on_kick(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)io;
	(void)events;
	loop_stop(l); /* the turn still finishes: timers, then the broker's flush */
}

struct harness *harness_new(const char *config_json)
{
	struct harness *h = calloc(1, sizeof *h);
	if (!h)
		abort();
	h->kick_fds[0] = h->kick_fds[1] = -1;
	h->next_port = 40000;
	char err[512];
	log_set_level(LOG_ERROR); /* main.c applies cfg->log; here the notices are noise */
	if (config_parse(config_json, strlen(config_json), "harness", &h->cfg, err, sizeof err) != 0) {
		fprintf(stderr, "harness: config: %s\n", err);
		free(h);
		return NULL;
	}
	h->loop = loop_new();
	if (!h->loop || broker_init(&h->b, h->loop, h->cfg, err, sizeof err) != 0) {
		fprintf(stderr, "harness: broker_init: %s\n", h->loop ? err : "loop_new failed");
		if (h->loop)
			loop_free(h->loop);
		config_free(h->cfg);
		free(h);
		return NULL;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, h->kick_fds) != 0 ||
	    write(h->kick_fds[1], "k", 1) != 1 ||
	    loop_io_start(h->loop, &h->kick, h->kick_fds[0], LOOP_READ, on_kick) != 0)
		abort();
	return h;
}

void harness_free(struct harness *h)
{
	if (!h)
		return;
	loop_io_stop(h->loop, &h->kick);
	broker_free(&h->b); /* drops and frees every connection: their output lands in out */
	loop_free(h->loop);
	config_free(h->cfg);
	struct hclient *c = h->clients;
	while (c) {
		struct hclient *next = c->next;
		close(c->fds[0]);
		close(c->fds[1]);
		free(c->in);
		free(c->out);
		free(c);
		c = next;
	}
	close(h->kick_fds[0]);
	close(h->kick_fds[1]);
	free(h);
}

struct broker *harness_broker(struct harness *h) { return &h->b; }

void harness_on_write(struct harness *h, harness_write_fn fn, void *ctx)
{
	h->on_write = fn;
	h->on_write_ctx = ctx;
}

void harness_on_read(struct harness *h, harness_read_fn fn, void *ctx)
{
	h->on_read = fn;
	h->on_read_ctx = ctx;
}

void harness_packet_reads(struct harness *h, bool on) { h->packet_reads = on; }

/* What broker.c's on_accept does for a plain TCP connection, minus the
 * connection caps and the connect timeout (a timer scripts never reach). */
struct hclient *harness_connect(struct harness *h)
{
	struct hclient *c = calloc(1, sizeof *c);
	if (!c)
		abort();
	size_t slot = 0;
	while (slot < sizeof live / sizeof live[0] && live[slot])
		slot++;
	if (slot == sizeof live / sizeof live[0])
		abort();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, c->fds) != 0 || write(c->fds[1], "r", 1) != 1)
		abort();
	c->h = h;
	c->next = h->clients;
	h->clients = c;
	c->f = fake_transport_new();
	if (!fake_ops) {
		fake_ops = c->f->base.ops;
		harness_ops = *fake_ops;
		harness_ops.read = harness_read;
		harness_ops.writev = harness_writev;
		harness_ops.close = harness_close;
	}
	c->f->base.ops = &harness_ops;
	c->f->base.fd = c->fds[0];
	live[slot] = c;

	struct broker *b = &h->b;
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(h->next_port++),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct conn *cn = conn_new(&b->srv.listeners[0].origin, &c->f->base, c->fds[0], (const struct sockaddr *)&peer);
	if (!cn)
		abort(); /* conn_new closed the transport: the harness cannot go on */
	if (loop_io_start(h->loop, &cn->io, c->fds[0], LOOP_READ, server_on_conn_io) != 0)
		abort();
	b->srv.listeners[0].conn_count++;
	cn->state = CONN_AWAIT_CONNECT;
	return c;
}

void harness_run(struct harness *h)
{
	int waits = 0;
	for (int turn = 0; turn < MAX_TURNS; turn++) {
		h->activity = false;
		if (loop_run(h->loop) != 0)
			abort();
		if (h->activity)
			continue;
		/* Quiet, but helper threads may still owe an answer: the store's
		 * group commit (fsync "always" acks wait for its eventfd) or a
		 * password check (a CONNECT waits). Wait, so scripts see it. */
		bool verifying = false;
		struct list_node *n, *tmp;
		list_for_each_safe(n, tmp, &h->b.srv.conns.all)
			verifying |= conn_auth_job(container_of(n, struct conn, all_link)) != NULL;
		if ((!h->b.persist.held_len && !verifying) || waits++ == HELPER_WAITS)
			return;
		struct pollfd p = {.fd = h->b.persist.io.fd, .events = POLLIN};
		poll(&p, h->b.persist.held_len ? 1 : 0, HELPER_WAIT_MS);
		turn--;
	}
}

void client_send(struct hclient *c, const uint8_t *bytes, size_t len)
{
	append(&c->in, &c->in_len, &c->in_cap, bytes, len);
	harness_run(c->h);
}

size_t harness_unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;
	int hi = -1;
	for (const char *p = hex; *p; p++) {
		int v;
		if (*p == ' ' || *p == '\n')
			continue;
		if (*p == '\'' && hi < 0) {
			/* 'text': its bytes as they are (topics, client ids, payloads) */
			const char *end = strchr(p + 1, '\'');
			if (!end)
				return SIZE_MAX;
			for (p++; p < end; p++, n++)
				if (n < cap)
					out[n] = (uint8_t)*p;
			continue;
		}
		if (*p >= '0' && *p <= '9')
			v = *p - '0';
		else if (*p >= 'a' && *p <= 'f')
			v = *p - 'a' + 10;
		else if (*p >= 'A' && *p <= 'F')
			v = *p - 'A' + 10;
		else
			return SIZE_MAX;
		if (hi < 0) {
			hi = v;
			continue;
		}
		if (n < cap)
			out[n] = (uint8_t)(hi << 4 | v);
		n++;
		hi = -1;
	}
	return hi < 0 ? n : SIZE_MAX;
}

void harness_turns(struct harness *h, int turns)
{
	for (int turn = 0; turn < turns; turn++)
		if (loop_run(h->loop) != 0)
			abort();
}

void client_feed_hex(struct hclient *c, const char *hex)
{
	uint8_t buf[4096];
	size_t n = harness_unhex(hex, buf, sizeof buf);
	if (n == SIZE_MAX || n > sizeof buf)
		abort(); /* a broken script, not a broker failure */
	append(&c->in, &c->in_len, &c->in_cap, buf, n);
}

void client_send_hex(struct hclient *c, const char *hex)
{
	client_feed_hex(c, hex);
	harness_run(c->h);
}

void client_feed_close(struct hclient *c) { c->peer_closed = true; }

void client_close(struct hclient *c)
{
	client_feed_close(c);
	harness_run(c->h);
}

bool client_closed(const struct hclient *c) { return c->f == NULL; }

const uint8_t *client_output(const struct hclient *c, size_t *len)
{
	*len = c->out_len - c->out_taken;
	return c->out ? c->out + c->out_taken : NULL;
}

void client_take(struct hclient *c) { c->out_taken = c->out_len; }

static void print_hex(const char *label, const uint8_t *p, size_t n)
{
	fprintf(stderr, "  %s (%zu):", label, n);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, " %02x", p[i]);
	fputc('\n', stderr);
}

bool client_expect_hex(struct hclient *c, const char *hex, const char *where)
{
	uint8_t want[4096];
	size_t wn = harness_unhex(hex, want, sizeof want);
	if (wn == SIZE_MAX || wn > sizeof want)
		abort();
	size_t gn;
	const uint8_t *got = client_output(c, &gn);
	bool same = gn == wn && (wn == 0 || memcmp(got, want, wn) == 0);
	if (!same) {
		fprintf(stderr, "%s: the broker wrote other bytes\n", where);
		print_hex("expected", want, wn);
		print_hex("written ", got, gn);
	}
	client_take(c);
	return same;
}

int harness_temp_dir(char *buf, size_t len, const char *prefix)
{
	if (snprintf(buf, len, "/tmp/%s-XXXXXX", prefix) >= (int)len)
		return -1;
	return mkdtemp(buf) ? 0 : -1;
}

void harness_remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];
	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

bool harness_has_snapshot(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool found = false;
	while (d && (e = readdir(d)) != NULL)
		if (strncmp(e->d_name, "snap.", 5) == 0)
			found = true;
	if (d)
		closedir(d);
	return found;
}
