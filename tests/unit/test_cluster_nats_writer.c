/*
 * The node's data connection (broker/src/cluster/nats_writer.h) against a
 * scripted NATS server on loopback, one step at a time: the loop runs
 * until what the step waits for happened (or a bound passed), then the
 * test plays the server. What it checks: the handshake (INFO, CONNECT with
 * its flags and PING, the PONG that makes it up), the exact HPUB bytes,
 * max_payload, PING answered, a refused publish counted and not fatal; the
 * buffer's bounds (messages and bytes) refusing, never growing, and every
 * message accepted either written or counted lost when the connection
 * goes; a refused CONNECT, a server that is not NATS and unanswered PINGs
 * each end the connection, and it is made again; a burst of messages from
 * the server is handed over READ_BUDGET at a time, other connections served
 * in between; a pause from on_msg holds the rest, and a resume hands it
 * over; a name lookup that hangs holds neither the loop nor the stop.
 */
#include <CUnit/CUnit.h>
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "loop.h"
#include "mtimer.h"
#include "nats_writer.h"
#include "unit_main.h"

#define STEP_MS 5000 /* the bound on any one step (a hang fails, not a slow machine) */

static struct loop *L;
static struct mtimers *T;
static struct mtimer tick;
static struct nats_writer *W;
static int lfd = -1, cfd = -1;
static uint16_t port;
static char url[64];
static struct config_cluster cfg;
static bool (*want)(void);
static uint64_t until;

static void on_tick(struct mtimer *t, void *ud)
{
	(void)ud;
	if (want() || mtimer_now_ms() > until)
		loop_stop(L);
	else
		mtimer_start(T, t, 2);
}

/* Runs the loop until pred() holds, STEP_MS at most: whether it held. */
static bool run_until(bool (*pred)(void))
{
	want = pred;
	until = mtimer_now_ms() + STEP_MS;
	mtimer_start(T, &tick, 0);
	loop_run(L);
	mtimer_stop(T, &tick);
	return pred();
}

static bool never(void) { return false; }
static void run_ms(unsigned ms)
{
	want = never;
	until = mtimer_now_ms() + ms;
	mtimer_start(T, &tick, 0);
	loop_run(L);
	mtimer_stop(T, &tick);
}

static bool readable(void)
{
	struct pollfd p = {cfd, POLLIN, 0};
	return poll(&p, 1, 0) == 1;
}
static bool up(void) { return nats_writer_up(W); }
static bool down(void) { return !nats_writer_up(W); }
static bool pending_accept(void)
{
	struct pollfd p = {lfd, POLLIN, 0};
	return poll(&p, 1, 0) == 1;
}

static void serve(void)
{
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof a;
	CU_ASSERT_FATAL(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 8) == 0 &&
			getsockname(lfd, (struct sockaddr *)&a, &alen) == 0);
	port = ntohs(a.sin_port);
	snprintf(url, sizeof url, "nats://127.0.0.1:%u", (unsigned)port);
	memset(&cfg, 0, sizeof cfg);
	cfg.nats = url;
	cfg.send_queue = 16;
	cfg.send_queue_bytes = 65536;
	cfg.write_deadline = 2000;
	cfg.ping_interval = 5;
	cfg.connect_timeout = 2;
	L = loop_new();
	T = mtimers_new(L);
	CU_ASSERT_FATAL(L && T);
	mtimer_init(&tick, on_tick, NULL);
}

static void unserve(void)
{
	nats_writer_stop(W);
	W = NULL;
	if (cfd >= 0)
		close(cfd);
	close(lfd);
	cfd = lfd = -1;
	mtimers_free(T);
	loop_free(L);
}

/* The node's $SYS figure, which each loss reaches as it happens. */
static uint64_t counted_lost;

static void start_writer(void)
{
	char err[256];
	CU_ASSERT_EQUAL_FATAL(nats_writer_start(&W, L, &cfg, NULL, "t-pub", err, sizeof err), 0);
	counted_lost = 0;
	nats_writer_count_lost_in(W, &counted_lost);
}

/* The writer's next connection, accepted. */
static void accept_next(void)
{
	if (cfd >= 0)
		close(cfd);
	CU_ASSERT_FATAL(run_until(pending_accept));
	cfd = accept(lfd, NULL, NULL);
	CU_ASSERT_FATAL(cfd >= 0);
	/* Each line the test writes goes at once (Nagle would hold one
	 * behind the writer's delayed ACK, past a step's few milliseconds). */
	int one = 1;
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void say(const char *s) { CU_ASSERT_EQUAL_FATAL(write(cfd, s, strlen(s)), (ssize_t)strlen(s)); }

/* What the writer wrote by now, after the loop ran until it wrote. */
static size_t hear(char *buf, size_t cap)
{
	CU_ASSERT_FATAL(run_until(readable));
	run_ms(20); /* the rest of what it writes in one go */
	ssize_t n = recv(cfd, buf, cap - 1, MSG_DONTWAIT);
	CU_ASSERT_FATAL(n > 0);
	buf[n] = '\0';
	return (size_t)n;
}

/*
 * Names ending in ".hang.invalid" hang in getaddrinfo, as with a name
 * server that does not answer, until `released` (then they fail as a dead
 * name does); every other name goes to the real one (under ASan, its
 * interceptor, then libc's).
 */
static atomic_bool released;
static atomic_int hanging;

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
	static const char HANG[] = ".hang.invalid";
	size_t n = node ? strlen(node) : 0;
	if (n >= sizeof HANG - 1 && strcmp(node + n - (sizeof HANG - 1), HANG) == 0) {
		atomic_fetch_add(&hanging, 1);
		while (!atomic_load(&released))
			nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
		atomic_fetch_sub(&hanging, 1);
		return EAI_NONAME;
	}
	int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
	*(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
	return real(node, service, hints, res);
}

static const char INFO[] = "INFO {\"server_id\":\"X\",\"version\":\"2.9.10\",\"proto\":1,\"headers\":true,"
			   "\"max_payload\":100} \r\n";

/* Accepts the writer's connection and answers its CONNECT: it is up. */
static void handshake(void)
{
	accept_next();
	say(INFO);
	char buf[2048];
	hear(buf, sizeof buf);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\r\nPING\r\n"));
	say("PONG\r\n");
	CU_ASSERT_FATAL(run_until(up));
}

static void test_handshake_and_hpub(void)
{
	serve();
	start_writer();
	CU_ASSERT_FALSE(nats_writer_up(W));
	CU_ASSERT_EQUAL(nats_writer_publish(W, "a", 1, "NATS/1.0\r\n\r\n", 12, "x", 1), WISP_EAGAIN); /* not up */
	accept_next();
	say(INFO);
	char buf[4096];
	hear(buf, sizeof buf);
	CU_ASSERT_EQUAL(strncmp(buf, "CONNECT {", 9), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"verbose\":false"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"headers\":true"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"echo\":false"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"name\":\"t-pub\""));
	CU_ASSERT_PTR_NULL(strstr(buf, "\"user\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "}\r\nPING\r\n"));
	CU_ASSERT_FALSE(nats_writer_up(W)); /* until the PONG */
	say("PONG\r\n");
	CU_ASSERT_FATAL(run_until(up));
	CU_ASSERT_EQUAL(nats_writer_max_payload(W), 100);

	static const char hdr[] = "NATS/1.0\r\nWisp-Node: a\r\n\r\n";
	CU_ASSERT_EQUAL(nats_writer_publish(W, "wisp.t", 6, hdr, sizeof hdr - 1, "hi", 2), 0);
	size_t n = hear(buf, sizeof buf);
	static const char want_bytes[] = "HPUB wisp.t 26 28\r\nNATS/1.0\r\nWisp-Node: a\r\n\r\nhi\r\n";
	CU_ASSERT_EQUAL(n, sizeof want_bytes - 1);
	CU_ASSERT_STRING_EQUAL(buf, want_bytes);
	CU_ASSERT_EQUAL(nats_writer_sent(W), 1);

	/* max_payload counts the headers and the payload. */
	char big[80] = {0};
	CU_ASSERT_EQUAL(nats_writer_publish(W, "wisp.t", 6, hdr, sizeof hdr - 1, big, sizeof big), WISP_ELIMIT);
	CU_ASSERT_EQUAL(nats_writer_publish(W, "wisp.t", 6, hdr, sizeof hdr - 1, big, 100 - (sizeof hdr - 1)), 0);
	hear(buf, sizeof buf);
	/* A larger max_payload in a later INFO is taken. */
	say("INFO {\"max_payload\":1000}\r\nPING\r\n");
	n = hear(buf, sizeof buf);
	CU_ASSERT_STRING_EQUAL(buf, "PONG\r\n");
	CU_ASSERT_EQUAL(nats_writer_max_payload(W), 1000);

	/* A refused publish: counted lost, the connection stays. */
	say("-ERR 'Permissions Violation for Publish to \"wisp.t\"'\r\n");
	run_ms(50);
	CU_ASSERT_TRUE(nats_writer_up(W));
	CU_ASSERT_EQUAL(nats_writer_lost(W), 1);
	CU_ASSERT_EQUAL(counted_lost, 1);
	CU_ASSERT_EQUAL(nats_writer_sent(W), 2);
	unserve();
}

static void test_bounds_and_loss(void)
{
	serve();
	/* The server reads nothing from here on: the kernel's buffers fill,
	 * then the writer's, which refuses past send_queue_bytes. */
	int small = 4096;
	setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
	start_writer();
	handshake();
	say("INFO {\"max_payload\":8000}\r\n");
	run_ms(20);
	static const char hdr[] = "NATS/1.0\r\n\r\n";
	static char payload[4000];
	uint64_t accepted = 0;
	bool full = false;
	/* At most 40 MB offered: far past what loopback's buffers hold. */
	for (int round = 0; round < 10000 && !full; round++) {
		int rc = nats_writer_publish(W, "s", 1, hdr, sizeof hdr - 1, payload, sizeof payload);
		if (rc == 0) {
			accepted++;
			continue;
		}
		CU_ASSERT_EQUAL_FATAL(rc, WISP_EAGAIN);
		CU_ASSERT(nats_writer_buffered(W) <= 65536 + 4096);
		size_t before = nats_writer_buffered(W);
		run_ms(10);
		full = nats_writer_buffered(W) == before; /* nothing moved: the socket is full */
	}
	CU_ASSERT_FATAL(full);
	CU_ASSERT(nats_writer_buffered(W) > 0);
	/* 16 messages at most wait in the buffer (send_queue). */
	CU_ASSERT(nats_writer_buffered(W) <= 16 * (sizeof payload + 40));
	/* The server goes: what was not wholly written is lost, counted;
	 * everything else was written. */
	close(cfd);
	cfd = -1;
	CU_ASSERT_FATAL(run_until(down));
	CU_ASSERT(nats_writer_lost(W) > 0);
	CU_ASSERT_EQUAL(counted_lost, nats_writer_lost(W));
	CU_ASSERT_EQUAL(nats_writer_sent(W) + nats_writer_lost(W), accepted);
	CU_ASSERT_EQUAL(nats_writer_buffered(W), 0);
	/* It is made again on its own. */
	handshake();
	unserve();
}

/* The writer closed the connection (what it wrote before is read and
 * dropped on the way). */
static bool eof(void)
{
	char buf[4096];
	ssize_t n;
	while ((n = recv(cfd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
		;
	return n == 0 || (n < 0 && errno == ECONNRESET);
}

static void test_refusals_end_it_and_it_is_made_again(void)
{
	serve();
	start_writer();
	/* Credentials refused: the server's -ERR after CONNECT. */
	accept_next();
	say(INFO);
	char buf[2048];
	hear(buf, sizeof buf);
	say("-ERR 'Authorization Violation'\r\nPONG\r\n");
	CU_ASSERT(run_until(eof));
	CU_ASSERT_FALSE(nats_writer_up(W));
	/* Not a NATS server. */
	accept_next();
	say("HTTP/1.1 400 Bad Request\r\n\r\n");
	CU_ASSERT(run_until(eof));
	/* A malformed INFO. */
	accept_next();
	say("INFO {\"max_payload\":\"many\"}\r\n");
	CU_ASSERT(run_until(eof));
	/* No headers (a server older than 2.2). */
	accept_next();
	say("INFO {\"max_payload\":100}\r\n");
	CU_ASSERT(run_until(eof));
	CU_ASSERT_FALSE(nats_writer_up(W));
	/* A line that never ends is not kept past its bound. */
	accept_next();
	static char junk[70000];
	memset(junk, 'A', sizeof junk);
	CU_ASSERT_EQUAL(send(cfd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
	CU_ASSERT(run_until(eof));
	handshake();
	unserve();
}

static void test_unanswered_pings_end_it(void)
{
	serve();
	cfg.ping_interval = 1;
	start_writer();
	handshake();
	char buf[256];
	hear(buf, sizeof buf);
	CU_ASSERT_STRING_EQUAL(buf, "PING\r\n");
	/* Unanswered: a second PING, then the connection is given up. */
	CU_ASSERT(run_until(eof));
	CU_ASSERT_FALSE(nats_writer_up(W));
	unserve();
}

/* What the hooks saw. */
static struct {
	unsigned ups, downs, msgs;
	uint64_t mark;
	uint64_t sid;
	char subject[64], reply[64], hdr[128];
	size_t hdr_len, payload_len;
	char *payload;
	unsigned in_order; /* payloads that were the count before them, in decimal */
	unsigned pause_at; /* the message after which on_msg pauses the reading (0: none) */
} seen;

static void on_msg(void *ud, const struct nats_writer_msg *m)
{
	(void)ud;
	seen.msgs++;
	seen.sid = m->sid;
	snprintf(seen.subject, sizeof seen.subject, "%.*s", (int)m->subject_len, m->subject);
	snprintf(seen.reply, sizeof seen.reply, "%.*s", (int)m->reply_len, m->reply);
	snprintf(seen.hdr, sizeof seen.hdr, "%.*s", (int)m->hdr_len, m->hdr);
	seen.hdr_len = m->hdr_len;
	seen.payload_len = m->payload_len;
	free(seen.payload);
	seen.payload = malloc(m->payload_len + 1);
	memcpy(seen.payload, m->payload, m->payload_len);
	seen.payload[m->payload_len] = '\0';
	if (m->payload_len && strtoul(seen.payload, NULL, 10) == seen.msgs - 1)
		seen.in_order++;
	if (seen.msgs == seen.pause_at)
		nats_writer_pause(W);
}
static void on_up(void *ud) { (void)ud; seen.ups++; }
static void on_down(void *ud) { (void)ud; seen.downs++; }
static void on_mark(void *ud, uint64_t n) { (void)ud; seen.mark = n; }
static unsigned msgs_want;
static bool got_msgs(void) { return seen.msgs >= msgs_want; }
static bool marked_2(void) { return seen.mark >= 2; }
static bool went_down(void) { return seen.downs > 0 && !nats_writer_up(W); }

static void start_with_hooks(void)
{
	free(seen.payload);
	memset(&seen, 0, sizeof seen);
	start_writer();
	struct nats_writer_hooks h = {on_msg, on_up, on_down, on_mark, NULL};
	nats_writer_set_hooks(W, &h);
}

/* The connection's own subscriptions: SUB and UNSUB lines, marks answered
 * in order (the keepalive's PINGs share the numbering), MSG and HMSG read
 * whole however the bytes arrive, and a malformed or oversized one ends
 * the connection, which comes up again asking to be subscribed anew. */
static void test_subscriptions_and_messages(void)
{
	serve();
	start_with_hooks();
	CU_ASSERT_EQUAL(nats_writer_subscribe(W, 7, "wisp.a", 6), WISP_EAGAIN); /* not up yet */
	CU_ASSERT_EQUAL(nats_writer_mark(W), 0);
	handshake();
	CU_ASSERT_EQUAL(seen.ups, 1);

	CU_ASSERT_EQUAL(nats_writer_subscribe(W, 7, "wisp.a", 6), 0);
	CU_ASSERT_EQUAL(nats_writer_subscribe(W, 8, "wisp.b.>", 8), 0);
	CU_ASSERT_EQUAL(nats_writer_mark(W), 1);
	CU_ASSERT_EQUAL(nats_writer_unsubscribe(W, 8), 0);
	CU_ASSERT_EQUAL(nats_writer_mark(W), 2);
	char buf[4096];
	hear(buf, sizeof buf);
	CU_ASSERT_STRING_EQUAL(buf, "SUB wisp.a 7\r\nSUB wisp.b.> 8\r\nPING\r\nUNSUB 8\r\nPING\r\n");
	say("PONG\r\n");
	run_ms(20);
	CU_ASSERT_EQUAL(seen.mark, 1);
	say("PONG\r\n");
	CU_ASSERT_FATAL(run_until(marked_2));

	/* A MSG in three pieces: handed over once, whole. */
	say("MSG wisp.a 7 5\r");
	run_ms(10);
	say("\nhel");
	run_ms(10);
	CU_ASSERT_EQUAL(seen.msgs, 0);
	say("lo\r\n");
	msgs_want = 1;
	CU_ASSERT_FATAL(run_until(got_msgs));
	CU_ASSERT_STRING_EQUAL(seen.subject, "wisp.a");
	CU_ASSERT_EQUAL(seen.sid, 7);
	CU_ASSERT_STRING_EQUAL(seen.reply, "");
	CU_ASSERT_EQUAL(seen.hdr_len, 0);
	CU_ASSERT_STRING_EQUAL(seen.payload, "hello");

	/* An HMSG with a reply, a PING and an empty MSG in one write. */
	say("HMSG wisp.a 7 r.1 18 21\r\nNATS/1.0\r\nK: v\r\n\r\nabc\r\nPING\r\nMSG wisp.a 7 0\r\n\r\n");
	msgs_want = 3;
	CU_ASSERT_FATAL(run_until(got_msgs));
	hear(buf, sizeof buf);
	CU_ASSERT_STRING_EQUAL(buf, "PONG\r\n");
	CU_ASSERT_EQUAL(seen.payload_len, 0); /* the last one */

	/* A later INFO's larger max_payload lets a larger message in: 150,000
	 * bytes in pieces, past a control line's bound. */
	say("INFO {\"max_payload\":200000}\r\n");
	run_ms(10);
	CU_ASSERT_EQUAL(nats_writer_max_payload(W), 200000);
	say("MSG wisp.big 7 150000\r\n");
	static char chunk[10000];
	memset(chunk, 'z', sizeof chunk);
	for (int i = 0; i < 15; i++) {
		CU_ASSERT_EQUAL_FATAL(write(cfd, chunk, sizeof chunk), (ssize_t)sizeof chunk);
		run_ms(2);
	}
	say("\r\n");
	msgs_want = 4;
	CU_ASSERT_FATAL(run_until(got_msgs));
	CU_ASSERT_STRING_EQUAL(seen.subject, "wisp.big");
	CU_ASSERT_EQUAL(seen.payload_len, 150000);
	CU_ASSERT_EQUAL(seen.payload[149999], 'z');
	CU_ASSERT_EQUAL(seen.downs, 0);

	/* Over max_payload: the connection ends, and is made again. */
	say("MSG wisp.a 7 200001\r\n");
	CU_ASSERT_FATAL(run_until(went_down));
	CU_ASSERT_EQUAL(nats_writer_subscribe(W, 7, "wisp.a", 6), WISP_EAGAIN);
	handshake();
	CU_ASSERT_EQUAL(seen.ups, 2);
	CU_ASSERT_EQUAL(nats_writer_mark(W), 1); /* numbered afresh */

	/* A body not ended by CR LF. */
	seen.downs = 0;
	say("MSG wisp.a 7 3\r\nabcXY");
	CU_ASSERT_FATAL(run_until(went_down));
	CU_ASSERT_EQUAL(seen.msgs, 4);
	handshake();
	/* A malformed MSG line. */
	seen.downs = 0;
	say("MSG wisp.a seven 3\r\nabc\r\n");
	CU_ASSERT_FATAL(run_until(went_down));
	CU_ASSERT_EQUAL(seen.msgs, 4);
	unserve();
	free(seen.payload);
	seen.payload = NULL;
}

/* Whether a connection that became readable behind a burst from NATS was
 * served, and how many of the burst's messages had been handed over then. */
static unsigned probe_saw;
static bool probe_ran;
static struct loop_io probe_io;

static void on_probe(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)events;
	probe_saw = seen.msgs;
	probe_ran = true;
	loop_io_stop(l, io);
}

/* A burst from the server shares the loop: 1,000 messages in one write,
 * then another connection becomes readable; that one is served after at
 * most READ_BUDGET (256) of them were handed over, not after all 1,000,
 * and the rest follow in order. */
static void test_a_burst_shares_the_loop(void)
{
	enum { BURST = 1000 };
	serve();
	start_with_hooks();
	handshake();
	static char burst[BURST * 24];
	size_t len = 0;
	for (unsigned i = 0; i < BURST; i++)
		len += (size_t)snprintf(burst + len, sizeof burst - len, "MSG wisp.a 7 4\r\n%04u\r\n", i);
	CU_ASSERT_EQUAL_FATAL(write(cfd, burst, len), (ssize_t)len);
	/* Readable after the writer's socket (epoll hands ready sockets over
	 * in the order they became ready). */
	int sp[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	CU_ASSERT_FATAL(write(sp[1], "x", 1) == 1);
	probe_ran = false;
	CU_ASSERT_FATAL(loop_io_start(L, &probe_io, sp[0], LOOP_READ, on_probe) == 0);
	msgs_want = BURST;
	CU_ASSERT_FATAL(run_until(got_msgs));
	CU_ASSERT_FATAL(probe_ran);
	CU_ASSERT(probe_saw > 0);
	CU_ASSERT(probe_saw <= 256);
	CU_ASSERT_EQUAL(seen.msgs, BURST);
	CU_ASSERT_EQUAL(seen.in_order, BURST);
	CU_ASSERT_EQUAL(seen.downs, 0);
	close(sp[0]);
	close(sp[1]);
	unserve();
	free(seen.payload);
	seen.payload = NULL;
}

/* Paused from on_msg, nothing more is handed over or read (a PING waits
 * unanswered); resumed, the rest comes in order, what the input already
 * held included, and the PING is answered. Paused, a server that closes
 * ends the connection at once. */
static void test_pause_and_resume(void)
{
	serve();
	start_with_hooks();
	handshake();
	seen.pause_at = 3;
	char burst[512];
	size_t len = 0;
	for (unsigned i = 0; i < 10; i++)
		len += (size_t)snprintf(burst + len, sizeof burst - len, "MSG wisp.a 7 4\r\n%04u\r\n", i);
	CU_ASSERT_EQUAL_FATAL(write(cfd, burst, len), (ssize_t)len);
	msgs_want = 3;
	CU_ASSERT_FATAL(run_until(got_msgs));
	say("PING\r\n");
	run_ms(100);
	CU_ASSERT_EQUAL(seen.msgs, 3);
	CU_ASSERT_FALSE(readable()); /* no PONG */
	nats_writer_resume(W);
	msgs_want = 10;
	CU_ASSERT_FATAL(run_until(got_msgs));
	CU_ASSERT_EQUAL(seen.in_order, 10);
	char buf[256];
	hear(buf, sizeof buf);
	CU_ASSERT_STRING_EQUAL(buf, "PONG\r\n");
	CU_ASSERT_EQUAL(seen.downs, 0);

	/* Paused again, the server closes: the connection is lost at once
	 * (the FIN is all that can wake a paused one), not at the resume. */
	say("MSG wisp.a 7 4\r\n0010\r\nMSG wisp.a 7 4\r\n0011\r\n");
	seen.pause_at = 11;
	msgs_want = 11;
	CU_ASSERT_FATAL(run_until(got_msgs));
	close(cfd);
	cfd = -1;
	CU_ASSERT(run_until(went_down));
	CU_ASSERT_EQUAL(seen.msgs, 11);
	seen.pause_at = 0;
	unserve();
	free(seen.payload);
	seen.payload = NULL;
}

static bool lookup_hangs(void) { return atomic_load(&hanging) == 1; }

/* A watchdog for a stop that waits for the hung lookup: it releases the
 * lookup after 30 s (the test then fails, rather than hanging for good). */
static atomic_bool stop_returned, watchdog_fired;
static void *watchdog(void *arg)
{
	(void)arg;
	for (int i = 0; i < 3000 && !atomic_load(&stop_returned); i++)
		nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	if (!atomic_load(&stop_returned)) {
		atomic_store(&watchdog_fired, true);
		atomic_store(&released, true);
	}
	return NULL;
}

/* A name whose lookup hangs holds neither the loop (it runs its timers)
 * nor the stop, which leaves the lookup to its thread. */
static void test_a_hung_lookup_holds_nothing(void)
{
	serve();
	cfg.nats = "nats://nats.hang.invalid:4222";
	start_writer();
	CU_ASSERT_FATAL(run_until(lookup_hangs));
	run_ms(50); /* the loop goes on turning */
	CU_ASSERT_FALSE(nats_writer_up(W));
	pthread_t dog;
	CU_ASSERT_FATAL(pthread_create(&dog, NULL, watchdog, NULL) == 0);
	nats_writer_stop(W);
	W = NULL;
	atomic_store(&stop_returned, true);
	pthread_join(dog, NULL);
	CU_ASSERT_FALSE(atomic_load(&watchdog_fired));
	CU_ASSERT_EQUAL(atomic_load(&hanging), 1); /* still in getaddrinfo: left, not waited for */
	atomic_store(&released, true);
	unserve();
}

static CU_TestInfo tests[] = {
	{"handshake, HPUB bytes, max_payload, PING, a refused publish", test_handshake_and_hpub},
	{"bounded buffer; written or counted lost", test_bounds_and_loss},
	{"its own subscriptions: SUB, marks, MSG and HMSG read whole", test_subscriptions_and_messages},
	{"a burst from the server shares the loop", test_a_burst_shares_the_loop},
	{"paused from on_msg, resumed", test_pause_and_resume},
	{"a hung name lookup holds neither the loop nor the stop", test_a_hung_lookup_holds_nothing},
	{"refused CONNECT, not NATS, bad INFO, endless line: made again", test_refusals_end_it_and_it_is_made_again},
	{"unanswered PINGs end it", test_unanswered_pings_end_it},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_nats_writer", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
