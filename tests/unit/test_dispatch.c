/*
 * session/input.c, through the server's I/O callback, against the
 * transport contract (transport.h): a short read is "call again", only
 * would-block ends a readiness event. A
 * real broker (no listener traffic) runs one connection over the fake
 * transport; the "peer" has sent CONNECT and a burst of PUBLISHes, and one
 * readable event must handle all of it up to the read budget, whether the
 * transport hands it out a record at a time (TLS) or all at once (TCP,
 * which must cost no read beyond the one that came back short, and none
 * when the socket turns writable for queued output).
 */
#include <CUnit/Basic.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "unit_main.h"
#include "broker.h"
#include "codec.h"
#include "err.h"
#include "fake_transport.h"
#include "log.h"
#include "loop.h"

#define PUBLISHES 200
#define PAYLOAD 1000
#define RECORD 16384 /* a TLS record's plaintext */

static const char config_json[] = "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
				  " \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}}";

/* CONNECT, then PUBLISHES QoS 0 PUBLISHes of PAYLOAD bytes. */
static size_t make_input(uint8_t *buf, size_t cap)
{
	struct mqtt_connect con = {.version = MQTT_PROTO_V311, .clean_start = true, .keepalive = 60,
				   .client_id = {(const uint8_t *)"burst", 5}};
	ssize_t n = mqtt_encode_connect(buf, cap, &con);
	CU_ASSERT_FATAL(n > 0);
	size_t off = (size_t)n;
	static uint8_t payload[PAYLOAD];
	memset(payload, 'x', sizeof payload);
	for (int i = 0; i < PUBLISHES; i++) {
		struct mqtt_publish p = {.topic = {(const uint8_t *)"t/x", 3}, .payload = {payload, sizeof payload}};
		n = mqtt_encode_publish(buf + off, cap - off, MQTT_PROTO_V311, &p);
		CU_ASSERT_FATAL(n > 0);
		off += (size_t)n;
	}
	return off;
}

struct run {
	uint64_t received;
	size_t reads;
	size_t reads_on_writable;
	bool all_read;
};

static struct run one_event(size_t read_per_call)
{
	struct run r = {0};
	static uint8_t input[PUBLISHES * (PAYLOAD + 16) + 64];
	size_t len = make_input(input, sizeof input);
	CU_ASSERT_FATAL(len < 256u * 1024u); /* inside one turn's READ_BUDGET */
	struct config *cfg = NULL;
	char err[256];
	CU_ASSERT_FATAL(config_parse(config_json, strlen(config_json), "test", &cfg, err, sizeof err) == 0);
	log_set_level(LOG_ERROR); /* main.c applies cfg->log; here the notices are noise */
	struct loop *l = loop_new();
	CU_ASSERT_FATAL(l != NULL);
	struct broker b;
	CU_ASSERT_FATAL(broker_init(&b, l, cfg, err, sizeof err) == 0);
	int fds[2]; /* something for epoll to watch; the bytes come from the fake */
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
	struct fake_transport *ft = fake_transport_new();
	ft->base.fd = fds[0];
	ft->input = input;
	ft->input_len = len;
	ft->read_per_call = read_per_call;
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct conn *c = conn_new(&b.srv.listeners[0].origin, &ft->base, fds[0], (const struct sockaddr *)&peer);
	CU_ASSERT_FATAL(c != NULL);
	CU_ASSERT_FATAL(loop_io_start(l, &c->io, fds[0], LOOP_READ, server_on_conn_io) == 0);
	b.srv.listeners[0].conn_count++;
	c->state = CONN_AWAIT_CONNECT;

	server_on_conn_io(l, &c->io, LOOP_READ); /* one readable event */
	r.received = b.stats.msgs_received;
	r.reads = ft->read_calls;
	r.all_read = ft->input_off == ft->input_len;
	CU_ASSERT_EQUAL(c->state, CONN_ACTIVE);

	/* Writable, with output queued (the CONNACK: nothing flushed yet) and
	 * want left at WRITE by a short writev: the flush's event, no read. */
	CU_ASSERT_FALSE(outq_empty(&c->out));
	ft->base.want = TRANSPORT_WANT_WRITE;
	size_t before = ft->read_calls;
	server_on_conn_io(l, &c->io, LOOP_WRITE);
	r.reads_on_writable = ft->read_calls - before;

	broker_free(&b); /* closes the connection and its transport */
	loop_free(l);
	config_free(cfg);
	close(fds[0]);
	close(fds[1]);
	return r;
}

/* TLS hands out a record per read: one event reads record after record. */
static void test_record_reads_are_drained_in_one_event(void)
{
	struct run r = one_event(RECORD);
	CU_ASSERT_TRUE(r.all_read);
	CU_ASSERT_EQUAL(r.received, PUBLISHES);
	/* Every record, then the read that says would-block. */
	size_t len = PUBLISHES * (PAYLOAD + 7) + 19;
	CU_ASSERT(r.reads <= len / RECORD + 2);
}

/* TCP: the one short read ends the event; no read just to hear EAGAIN. */
static void test_tcp_short_read_ends_the_event(void)
{
	struct run r = one_event(0);
	CU_ASSERT_TRUE(r.all_read);
	CU_ASSERT_EQUAL(r.received, PUBLISHES);
	/* 200 KiB through the 64 KiB scratch buffer: 3 full reads, 1 short. */
	CU_ASSERT(r.reads <= 4);
	CU_ASSERT_EQUAL(r.reads_on_writable, 0);
}

static CU_TestInfo dispatch_tests[] = {
	{"record-sized reads are drained in one readable event", test_record_reads_are_drained_in_one_event},
	{"a TCP short read ends the event without another read", test_tcp_short_read_ends_the_event},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"dispatch read_input", NULL, NULL, NULL, NULL, dispatch_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
