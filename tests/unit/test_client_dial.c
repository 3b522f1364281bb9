/*
 * The client library moving on to the next address when one is refused.
 * A host name often resolves to ::1 and 127.0.0.1; a broker listening on
 * one of them only must still be reached. The refusal arrives after the
 * non-blocking connect, and the next socket usually reuses the closed
 * one's descriptor number: the client must watch the new socket anyway.
 * A regression here shows as a hang, which the loop's own deadline turns
 * into a failure. And the window: no more QoS 1 publishes unacknowledged
 * than an MQTT 5 server's Receive Maximum; nothing above its Maximum QoS
 * or over its Maximum Packet Size. A socket that connected to itself (its
 * own port as the peer's) counts as refused.
 */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dial.h"
#include "err.h"
#include "loop.h"
#include "mqtt_client.h"
#include "mtimer.h"
#include "unit_main.h"

/* Just enough broker: accept, read the CONNECT, answer CONNACK 0. */
struct fake_broker {
	struct loop_io listen_io;
	struct loop_io conn_io;
	loop_io_fn on_conn; /* answers the CONNECT */
	bool accepted;
};

struct run {
	struct loop *loop;
	struct fake_broker fb;
	struct loop_timer deadline;
	bool connected;
};

static void on_connect(struct mqtt_client *c, uint8_t code, bool session_present, void *ud)
{
	struct run *r = ud;
	(void)c;
	(void)session_present;
	r->connected = code == 0;
	loop_stop(r->loop);
}

static const struct mqtt_client_cbs cbs = {.on_connect = on_connect};

static void on_conn(struct loop *l, struct loop_io *io, uint32_t events)
{
	static const unsigned char connack[] = {0x20, 0x02, 0x00, 0x00};
	unsigned char buf[256];
	(void)l;
	(void)events;
	if (read(io->fd, buf, sizeof buf) > 0 && write(io->fd, connack, sizeof connack) != 4)
		CU_FAIL("could not answer CONNECT");
}

static void on_listener(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct fake_broker *fb = container_of(io, struct fake_broker, listen_io);
	(void)events;
	int fd = accept(io->fd, NULL, NULL);
	if (fd < 0 || fb->accepted)
		return;
	fb->accepted = true;
	loop_io_start(l, &fb->conn_io, fd, LOOP_READ, fb->on_conn);
}

/* The bound on a regression that hangs. */
static void on_deadline(struct loop *l, struct loop_timer *t)
{
	(void)t;
	loop_stop(l);
}

static int listen_on(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	socklen_t len = sizeof *addr;
	memset(addr, 0, sizeof *addr);
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof *addr) != 0 || listen(fd, 4) != 0 ||
	    getsockname(fd, (struct sockaddr *)addr, &len) != 0)
		return -1;
	return fd;
}

/* A loopback port every connect to is refused while fd is open: bound,
 * never listening, so no other test running beside this one can take it
 * (a port merely closed again could be). */
static int refusing_port(uint16_t *port)
{
	struct sockaddr_in a;
	socklen_t len = sizeof a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

/* A loop with the fake broker on `lfd` (answering with `answer`) and
 * the deadline armed; the client's timers. */
static struct mtimers *run_start(struct run *r, int lfd, loop_io_fn answer)
{
	r->loop = loop_new();
	CU_ASSERT_FATAL(r->loop != NULL);
	struct mtimers *timers = mtimers_new(r->loop);
	CU_ASSERT_FATAL(timers != NULL);
	r->fb.conn_io.fd = -1;
	r->fb.on_conn = answer;
	CU_ASSERT_EQUAL_FATAL(loop_io_start(r->loop, &r->fb.listen_io, lfd, LOOP_READ, on_listener), 0);
	list_init(&r->deadline.link);
	loop_timer_start(r->loop, &r->deadline, 5, on_deadline);
	return timers;
}

static void run_end(struct run *r, struct mtimers *timers, int lfd)
{
	loop_timer_stop(r->loop, &r->deadline);
	loop_io_stop(r->loop, &r->fb.listen_io);
	close(lfd);
	if (r->fb.conn_io.fd >= 0) {
		loop_io_stop(r->loop, &r->fb.conn_io);
		close(r->fb.conn_io.fd);
	}
	mtimers_free(timers);
	loop_free(r->loop);
}

static void test_refused_first_address_falls_back_to_the_next(void)
{
	struct run r = {0};
	struct sockaddr_in good;
	int lfd = listen_on(&good);
	CU_ASSERT_FATAL(lfd >= 0);
	struct sockaddr_in bad = good;
	uint16_t refused = 0;
	int rfd = refusing_port(&refused);
	CU_ASSERT_FATAL(rfd >= 0);
	bad.sin_port = htons(refused);

	/* addrinfo as getaddrinfo would give it: the refused address first. */
	struct addrinfo second = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP,
				  .ai_addrlen = sizeof good, .ai_addr = (struct sockaddr *)&good};
	struct addrinfo first = second;
	first.ai_addr = (struct sockaddr *)&bad;
	first.ai_next = &second;

	struct mtimers *timers = run_start(&r, lfd, on_conn);

	struct mqtt_client_opts o = {.host = "127.0.0.1", .port = ntohs(good.sin_port), .client_id = "dial-test",
				     .clean_session = true, .addrs = &first, .cbs = &cbs, .ud = &r};
	struct mqtt_client *c = mqtt_client_new(r.loop, timers, &o);
	CU_ASSERT_FATAL(c != NULL);
	CU_ASSERT_EQUAL(mqtt_client_connect(c), 0);
	loop_run(r.loop);
	CU_ASSERT_TRUE(r.fb.accepted);
	CU_ASSERT_TRUE(r.connected);

	mqtt_client_free(c);
	run_end(&r, timers, lfd);
	close(rfd);
}

/* An MQTT 5 server whose CONNACK says Receive Maximum 2. */
static void on_conn_v5(struct loop *l, struct loop_io *io, uint32_t events)
{
	static const unsigned char connack[] = {0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x02};
	unsigned char buf[256];
	(void)l;
	(void)events;
	loop_io_stop(l, io); /* one read: the CONNECT; the rest is counted after the run */
	if (read(io->fd, buf, sizeof buf) > 0 && write(io->fd, connack, sizeof connack) != sizeof connack)
		CU_FAIL("could not answer CONNECT");
}

static void on_connect_publish(struct mqtt_client *c, uint8_t code, bool session_present, void *ud)
{
	struct run *r = ud;
	(void)session_present;
	r->connected = code == 0;
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(mqtt_client_publish(c, "rm/t", "x", 1, 1, false, NULL), 0);
	loop_stop(r->loop);
}

static const struct mqtt_client_cbs publish_cbs = {.on_connect = on_connect_publish};

/* PUBLISH packets in what the server has received so far. */
static int count_publishes(int fd)
{
	unsigned char buf[4096];
	ssize_t n = 0, got;
	while (n < (ssize_t)sizeof buf && (got = recv(fd, buf + n, sizeof buf - (size_t)n, MSG_DONTWAIT)) > 0)
		n += got;
	int count = 0;
	for (size_t off = 0; n > 0 && off + 2 <= (size_t)n;) {
		size_t len = 0, shift = 0, i = off + 1;
		while (i < (size_t)n && (buf[i] & 0x80)) {
			len |= (size_t)(buf[i++] & 0x7f) << shift;
			shift += 7;
		}
		if (i >= (size_t)n)
			break;
		len |= (size_t)(buf[i++] & 0x7f) << shift;
		count += (buf[off] >> 4) == 3;
		off = i + len;
	}
	return count;
}

/* The client's window is the server's Receive Maximum when that is
 * smaller than its own [MQTT-3.3.4-9]: five QoS 1 publishes, two sent. */
static void test_receive_maximum_bounds_the_window(void)
{
	struct run r = {0};
	struct sockaddr_in addr;
	int lfd = listen_on(&addr);
	CU_ASSERT_FATAL(lfd >= 0);
	struct mtimers *timers = run_start(&r, lfd, on_conn_v5);

	struct mqtt_client_opts o = {.host = "127.0.0.1", .port = ntohs(addr.sin_port), .client_id = "rm-test",
				     .version = MQTT_PROTO_V5, .clean_session = true, .nodelay = true, /* no Nagle wait */
				     .cbs = &publish_cbs, .ud = &r};
	struct mqtt_client *c = mqtt_client_new(r.loop, timers, &o);
	CU_ASSERT_FATAL(c != NULL);
	CU_ASSERT_EQUAL(mqtt_client_connect(c), 0);
	loop_run(r.loop);
	CU_ASSERT_TRUE_FATAL(r.connected);
	CU_ASSERT_EQUAL(mqtt_client_pending(c), 5);
	CU_ASSERT_EQUAL(mqtt_client_out_pending(c), 0);
	CU_ASSERT_EQUAL(count_publishes(r.fb.conn_io.fd), 2);

	mqtt_client_free(c);
	run_end(&r, timers, lfd);
}

/* An MQTT 5 server whose CONNACK says Maximum QoS 1 and Maximum Packet
 * Size 64. */
static void on_conn_limits(struct loop *l, struct loop_io *io, uint32_t events)
{
	static const unsigned char connack[] = {0x20, 0x0A, 0x00, 0x00, 0x07, 0x24, 0x01,
						0x27, 0x00, 0x00, 0x00, 0x40};
	unsigned char buf[256];
	(void)events;
	loop_io_stop(l, io); /* one read: the CONNECT; the rest is counted after the run */
	if (read(io->fd, buf, sizeof buf) > 0 && write(io->fd, connack, sizeof connack) != sizeof connack)
		CU_FAIL("could not answer CONNECT");
}

struct limits_run {
	struct run r;
	uint16_t queued_mid;
	int refused_reason; /* on_publish's reason for queued_mid; -1: none */
};

static void on_publish_limits(struct mqtt_client *c, uint16_t mid, uint8_t reason, void *ud)
{
	struct limits_run *lr = ud;
	(void)c;
	if (mid == lr->queued_mid)
		lr->refused_reason = reason;
}

static void on_connect_limits(struct mqtt_client *c, uint8_t code, bool session_present, void *ud)
{
	struct limits_run *lr = ud;
	static const char big[100] = {0};
	(void)session_present;
	lr->r.connected = code == 0;
	CU_ASSERT_EQUAL(mqtt_client_publish(c, "lim/t", "x", 1, 2, false, NULL), MQTT_CLIENT_EQOS);
	CU_ASSERT_EQUAL(mqtt_client_publish(c, "lim/t", big, sizeof big, 1, false, NULL), MQTT_CLIENT_ETOOLARGE);
	CU_ASSERT_EQUAL(mqtt_client_publish(c, "lim/t", big, sizeof big, 0, false, NULL), MQTT_CLIENT_ETOOLARGE);
	/* 2 + 7 + 2 + 1 + 52 bytes of header, topic, id, properties, payload: 64 exactly. */
	CU_ASSERT_EQUAL(mqtt_client_publish(c, "lim/t", big, 52, 1, false, NULL), 0);
	CU_ASSERT_EQUAL(mqtt_client_publish(c, "lim/t", big, 53, 1, false, NULL), MQTT_CLIENT_ETOOLARGE);
	loop_stop(lr->r.loop);
}

static const struct mqtt_client_cbs limits_cbs = {.on_connect = on_connect_limits,
						  .on_publish = on_publish_limits};

/* The client sends no PUBLISH above an MQTT 5 server's Maximum QoS
 * [MQTT-3.2.2-11] nor over its Maximum Packet Size [MQTT-3.2.2-15]: once
 * connected publish() says so; a QoS 2 publish queued before the CONNACK
 * is completed with 0x9B (QoS not supported) instead of sent. */
static void test_server_maximum_qos_and_packet_size(void)
{
	struct limits_run lr = {.refused_reason = -1};
	struct sockaddr_in addr;
	int lfd = listen_on(&addr);
	CU_ASSERT_FATAL(lfd >= 0);
	struct mtimers *timers = run_start(&lr.r, lfd, on_conn_limits);

	struct mqtt_client_opts o = {.host = "127.0.0.1", .port = ntohs(addr.sin_port), .client_id = "lim-test",
				     .version = MQTT_PROTO_V5, .clean_session = true, .nodelay = true,
				     .cbs = &limits_cbs, .ud = &lr};
	struct mqtt_client *c = mqtt_client_new(lr.r.loop, timers, &o);
	CU_ASSERT_FATAL(c != NULL);
	CU_ASSERT_EQUAL(mqtt_client_connect(c), 0);
	CU_ASSERT_EQUAL(mqtt_client_publish(c, "lim/q", "x", 1, 2, false, &lr.queued_mid), 0);
	loop_run(lr.r.loop);
	CU_ASSERT_TRUE_FATAL(lr.r.connected);
	CU_ASSERT_EQUAL(lr.refused_reason, 0x9B);
	CU_ASSERT_EQUAL(mqtt_client_pending(c), 1);
	CU_ASSERT_EQUAL(mqtt_client_out_pending(c), 0);
	CU_ASSERT_EQUAL(count_publishes(lr.r.fb.conn_io.fd), 1);

	mqtt_client_free(c);
	run_end(&lr.r, timers, lfd);
}

/* A dial whose socket has the port it connects to meets itself (TCP
 * simultaneous open) and must count as refused, not connected. Bound to
 * that port here, so it happens every time; a client retrying a stopped
 * local server's port in the kernel's outgoing range is given it by chance
 * (2 in 60,000 tries here), and the connection to nobody then holds the
 * port the server would come back on. */
static void test_a_connection_to_itself_is_refused(void)
{
	int probe = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	CU_ASSERT_FATAL(probe >= 0 && bind(probe, (struct sockaddr *)&sa, sizeof sa) == 0 &&
			getsockname(probe, (struct sockaddr *)&sa, &len) == 0);
	close(probe); /* never connected: the port is free again at once */
	uint16_t port = ntohs(sa.sin_port);
	struct addrinfo *to = NULL, *from = NULL;
	CU_ASSERT_FATAL(dial_resolve("127.0.0.1", port, &to, NULL) == 0);
	CU_ASSERT_FATAL(dial_resolve("127.0.0.1", port, &from, NULL) == 0);
	struct dial d;
	CU_ASSERT_FATAL(dial_start_resolved(&d, to, from, false) == 0);
	struct pollfd p = {.fd = d.fd, .events = POLLOUT};
	CU_ASSERT_EQUAL(poll(&p, 1, 5000), 1);
	CU_ASSERT_EQUAL(dial_finish(&d), WISP_EIO);
	CU_ASSERT_EQUAL(d.last_errno, ECONNREFUSED);
	CU_ASSERT_EQUAL(d.fd, -1);
	dial_free_addrs(to);
	dial_free_addrs(from);
}

static CU_TestInfo tests[] = {
	{"a connection that meets itself counts as refused", test_a_connection_to_itself_is_refused},
	{"a refused first address falls back to the next", test_refused_first_address_falls_back_to_the_next},
	{"an MQTT 5 server's Receive Maximum bounds the window", test_receive_maximum_bounds_the_window},
	{"MQTT-3.2.2-11 Maximum QoS, MQTT-3.2.2-15 Maximum Packet Size", test_server_maximum_qos_and_packet_size},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"client dial", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
