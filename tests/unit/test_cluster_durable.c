/*
 * The durable cluster path's ack gate (cluster/durable.c) under memory
 * faults: a PUBREC that must wait for JetStream is never sent early, not
 * even when holding it cannot allocate (issue 16: "a node answers
 * PUBACK/PUBREC ... only when the message is safe"). The broker runs in
 * the scripted harness; the durable side is started on it with a NATS URL
 * nobody listens on, so no ticket is ever acked by JetStream: with
 * cluster.outbound_queue full, publishers wait unacknowledged. Also the
 * store's side of store and forward (proto/persist.c's forwarding queue):
 * what it keeps comes back in order after a restart and a compaction.
 */
#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "broker_harness.h"
#include "cluster.h"
#include "cluster_harness.h"
#include "durable.h"
#include "err.h"
#include "msg.h"
#include "persist.h"
#include "unit_main.h"

static const char config[] =
	"{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
	" \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"},"
	" \"cluster\": {\"nats\": [\"nats://127.0.0.1:1\"], \"node\": \"t\"}}";

static const char *route_none(void *ctx, natsMsg *nm, uint64_t seq, bool own)
{
	(void)ctx;
	(void)nm;
	(void)seq;
	(void)own;
	return NULL;
}

static int make_none(void *ctx, const struct msg *m, const char *reply, natsMsg **out)
{
	(void)ctx;
	(void)m;
	(void)reply;
	*out = NULL;
	return WISP_ENOMEM;
}

/* Whether out[0..len) holds a packet of type `type` (whole packets). */
static bool has_packet(const uint8_t *out, size_t len, uint8_t type)
{
	size_t off = 0;
	while (off < len) {
		size_t n = harness_frame_len(out + off, len - off);
		if (n == 0 || n == SIZE_MAX || n > len - off)
			return false;
		if (out[off] >> 4 == type)
			return true;
		off += n;
	}
	return false;
}

/*
 * While a message handed to JetStream is unacked, a new QoS 2 PUBLISH that
 * did not cross gets its PUBREC at once, and the same PUBLISH sent again
 * (DUP) gets none: its first copy could be the one still on its way
 * [MQTT-4.3.3-2 resend rule in durable.c's gate_hold]. Allocation n of the
 * re-sent PUBLISH's handling fails, for every n: whatever fails, no PUBREC
 * goes out (the connection may close instead).
 */
static void test_pubrec_never_sent_early_whatever_allocation_fails(void)
{
	bool exercised_close = false;
	for (uint64_t n = 0; n <= 40; n++) {
		struct harness *h = harness_new(config);
		CU_ASSERT_FATAL(h != NULL);
		struct broker *b = harness_broker(h);
		struct durable *d = NULL;
		CU_ASSERT_EQUAL_FATAL(durable_start(b, "t", "0123456789abcdef", NULL, route_none, make_none, NULL, &d), 0);
		char reply[128];
		uint64_t ticket = durable_reserve(d, reply, sizeof reply);
		CU_ASSERT_FATAL(ticket != 0);
		struct hclient *c = harness_connect(h);
		client_send_hex(c, "10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'pub'");
		CU_ASSERT(client_expect_hex(c, "20 02 00 00", "CONNACK"));
		client_send_hex(c, "34 08 00 01 't' 00 07 'hi' 'x'");
		CU_ASSERT(client_expect_hex(c, "50 02 00 07", "PUBREC of a message that did not cross"));
		wisp_mem_fail_after(n, 0);
		client_send_hex(c, "3c 08 00 01 't' 00 07 'hi' 'x'");
		wisp_mem_fail_after(0, 0);
		size_t len = 0;
		const uint8_t *out = client_output(c, &len);
		CU_ASSERT_FALSE(has_packet(out, len, 5 /* PUBREC */));
		if (has_packet(out, len, 5))
			fprintf(stderr, "PUBREC sent with allocation %llu failing\n", (unsigned long long)n);
		if (client_closed(c))
			exercised_close = true;
		durable_stop(d, NULL);
		durable_free(d);
		harness_free(h);
	}
	/* Some allocation of the hold itself failed: the publish was refused. */
	CU_ASSERT(exercised_close);
}

static size_t count_packets(const uint8_t *out, size_t len, uint8_t type)
{
	size_t off = 0, n = 0;
	while (off < len) {
		size_t k = harness_frame_len(out + off, len - off);
		if (k == 0 || k == SIZE_MAX || k > len - off)
			break;
		n += out[off] >> 4 == type;
		off += k;
	}
	return n;
}

/*
 * Acks the gate holds count against limits.max_output_buffer, as acks
 * waiting for an fsync do: a PUBREC held for JetStream holds every later
 * ack of its connection behind it (their order), so a client that
 * publishes past any window of its own (3.1.1 has none) while JetStream
 * does not answer would grow the held queue without bound. At the bound
 * (1,024 bytes: 256 acks of 4) the broker stops reading it: a PINGREQ
 * after 300 QoS 1 messages is not answered, and the connection stays
 * open (before: every message handled and held, and the PINGRESP sent).
 */
static void test_held_acks_count_against_the_output_bound(void)
{
	static const char bounded[] =
		"{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
		" \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"},"
		" \"limits\": {\"max_output_buffer\": 1024},"
		" \"cluster\": {\"nats\": [\"nats://127.0.0.1:1\"], \"node\": \"t\"}}";
	struct harness *h = harness_new(bounded);
	CU_ASSERT_FATAL(h != NULL);
	struct broker *b = harness_broker(h);
	struct durable *d = NULL;
	CU_ASSERT_EQUAL_FATAL(durable_start(b, "t", "0123456789abcdef", NULL, route_none, make_none, NULL, &d), 0);
	char reply[128];
	CU_ASSERT_FATAL(durable_reserve(d, reply, sizeof reply) != 0); /* never acked */
	struct hclient *pub = harness_connect(h);
	client_send_hex(pub, "10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'pub'");
	CU_ASSERT(client_expect_hex(pub, "20 02 00 00", "CONNACK"));
	client_send_hex(pub, "34 08 00 01 't' 00 01 'hi' 'x'");
	CU_ASSERT(client_expect_hex(pub, "50 02 00 01", "PUBREC"));
	client_send_hex(pub, "3c 08 00 01 't' 00 01 'hi' 'x'"); /* re-sent: its PUBREC waits for the ticket */
	enum { SENT = 300 };
	static uint8_t burst[SENT * 8 + 2];
	for (size_t i = 0; i < SENT; i++) {
		uint8_t *q = burst + i * 8;
		uint16_t pid = (uint16_t)(i + 2);
		q[0] = 0x32, q[1] = 6, q[2] = 0, q[3] = 1, q[4] = 't', q[5] = (uint8_t)(pid >> 8), q[6] = (uint8_t)pid;
		q[7] = 'y';
	}
	burst[SENT * 8] = 0xc0; /* PINGREQ */
	burst[SENT * 8 + 1] = 0;
	client_send(pub, burst, sizeof burst);
	size_t len = 0;
	const uint8_t *out = client_output(pub, &len);
	CU_ASSERT_EQUAL(count_packets(out, len, 5 /* PUBREC */) + count_packets(out, len, 4 /* PUBACK */), 0);
	CU_ASSERT_EQUAL(count_packets(out, len, 13 /* PINGRESP */), 0);
	CU_ASSERT_FALSE(client_closed(pub));
	durable_stop(d, NULL);
	durable_free(d);
	harness_free(h);
}

/* A temporary data directory and a configuration that persists there,
 * compacting from 4 KiB of log. */
static void store_config(char *dir, size_t dir_cap, char *cfg, size_t cfg_cap, const char *prefix)
{
	CU_ASSERT_EQUAL_FATAL(harness_temp_dir(dir, dir_cap, prefix), 0);
	snprintf(cfg, cfg_cap,
		 "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}], \"log\": {\"level\": \"error\"},"
		 " \"persistence\": {\"dir\": \"%s\", \"compact_min_size\": 4096}}", dir);
}

/* Ten messages kept for JetStream, the first and the sixth then in it:
 * the other eight come back in their order, with their ids and bytes,
 * after the log was compacted into a snapshot and the broker restarted. */
static void test_forward_queue_survives_restart_and_compaction(void)
{
	char dir[256], cfg[512];
	store_config(dir, sizeof dir, cfg, sizeof cfg, "wisp-fwd");
	struct harness *h = harness_new(cfg);
	CU_ASSERT_FATAL(h != NULL);
	struct broker *b = harness_broker(h);
	static uint8_t payload[2000];
	struct msg *kept[10];
	for (int i = 0; i < 10; i++) {
		char topic[16], id[32];
		snprintf(topic, sizeof topic, "f/%d", i);
		snprintf(id, sizeof id, "t-0123-f%d", i);
		memset(payload, 'a' + i, sizeof payload);
		struct msg_spec spec = {.topic = topic, .topic_len = strlen(topic), .payload = payload,
					.payload_len = sizeof payload, .qos = (uint8_t)(1 + i % 2)};
		kept[i] = msg_create(&spec);
		CU_ASSERT_FATAL(kept[i] != NULL);
		CU_ASSERT_EQUAL(persist_forward_add(b, kept[i], id, strlen(id)), 0);
	}
	persist_forward_del(b, kept[5]); /* out of order */
	persist_forward_del(b, kept[0]);
	for (int i = 0; i < 10; i++)
		msg_unref(kept[i]);
	harness_run(h);
	harness_run(h);
	CU_ASSERT(harness_has_snapshot(dir)); /* compacted: the entries went through emit_state */
	harness_free(h);

	h = harness_new(cfg);
	CU_ASSERT_FATAL(h != NULL);
	b = harness_broker(h);
	static const int want[] = {1, 2, 3, 4, 6, 7, 8, 9};
	size_t n = 0;
	struct msg *m;
	const char *id;
	for (; persist_forward_get(b, n, &m, &id); n++) {
		CU_ASSERT_FATAL(n < sizeof want / sizeof want[0]);
		char topic[16], want_id[32];
		snprintf(topic, sizeof topic, "f/%d", want[n]);
		snprintf(want_id, sizeof want_id, "t-0123-f%d", want[n]);
		CU_ASSERT_STRING_EQUAL(id, want_id);
		CU_ASSERT(m->topic_len == strlen(topic) && memcmp(msg_topic(m), topic, m->topic_len) == 0);
		CU_ASSERT_EQUAL(m->qos, 1 + want[n] % 2);
		CU_ASSERT(m->payload_len == sizeof payload && msg_payload(m)[0] == 'a' + want[n]);
	}
	CU_ASSERT_EQUAL(n, sizeof want / sizeof want[0]);
	harness_free(h);
	harness_remove_dir(dir);
}

/* The set of sequences above the floor the store restored, as a bitmap of
 * (floor, floor + 64], and the time stamp; false if one lies outside. */
static bool restored_window(struct broker *b, uint64_t *floor, uint64_t *bits, uint64_t *stamp)
{
	const uint64_t *seqs;
	size_t n = persist_stream_window(b, floor, stamp, &seqs);
	*bits = 0;
	for (size_t i = 0; i < n; i++) {
		if (seqs[i] <= *floor || seqs[i] - *floor > 64)
			return false;
		*bits |= UINT64_C(1) << (seqs[i] - *floor - 1);
	}
	return true;
}

/* The receiving side's dedupe window (STREAM_TAKEN): the last floor, the
 * sequences above it and the newest time stamp come back after a
 * compaction and a restart; a lower floor (the stream made anew) starts a
 * new window. */
static void test_stream_window_survives_restart_and_compaction(void)
{
	char dir[256], cfg[512];
	store_config(dir, sizeof dir, cfg, sizeof cfg, "wisp-taken");
	struct harness *h = harness_new(cfg);
	CU_ASSERT_FATAL(h != NULL);
	struct broker *b = harness_broker(h);
	/* 1..400 in order, the floor 8 behind, except 396 (still unrouted,
	 * it holds the floor at 395): 397..400 stay above it. */
	for (uint64_t i = 1; i <= 400; i++)
		if (i != 396)
			CU_ASSERT_EQUAL(persist_stream_taken(b, i > 395 ? 395 : (i > 8 ? i - 8 : 0), i, 1000 + i), 0);
	harness_run(h);
	harness_run(h);
	CU_ASSERT(harness_has_snapshot(dir));
	harness_free(h);

	h = harness_new(cfg);
	CU_ASSERT_FATAL(h != NULL);
	b = harness_broker(h);
	uint64_t floor = 0, bits = 0, stamp = 0;
	CU_ASSERT(restored_window(b, &floor, &bits, &stamp));
	CU_ASSERT_EQUAL(floor, 395);
	CU_ASSERT_EQUAL(bits, 0x1eu); /* 397..400 */
	CU_ASSERT_EQUAL(stamp, 1400);
	CU_ASSERT_EQUAL(persist_stream_taken(b, 5, 7, 2000), 0);
	harness_run(h);
	harness_free(h);

	h = harness_new(cfg);
	CU_ASSERT_FATAL(h != NULL);
	b = harness_broker(h);
	CU_ASSERT(restored_window(b, &floor, &bits, &stamp));
	CU_ASSERT_EQUAL(floor, 5);
	CU_ASSERT_EQUAL(bits, 0x2u); /* 7 */
	CU_ASSERT_EQUAL(stamp, 2000);
	harness_free(h);
	harness_remove_dir(dir);
}

/*
 * cluster.c's send_to_nats: a QoS 1 PUBLISH whose NATS message for the
 * stream cannot be made (its v5 properties' encoding fails to allocate) was
 * counted in send_failed and still acknowledged: a PUBACK for a message
 * that never left the node. Allocation n of the PUBLISH's handling fails,
 * for every n: no PUBACK ever goes (NATS is unreachable, so none may).
 */
static void test_puback_never_sent_when_the_stream_message_cannot_be_made(void)
{
	struct cluster *cl = NULL;
	struct harness *h = cluster_harness(", \"interest\": false", &cl);
	CU_ASSERT_FATAL(h != NULL && cl != NULL);
	struct broker *b = harness_broker(h);
	bool exercised = false;
	for (uint64_t n = 0; n <= 40; n++) {
		struct hclient *c = harness_connect(h);
		client_send_hex(c, "10 10 00 04 'MQTT' 05 02 00 3c 00 00 03 'pub'");
		size_t len = 0;
		const uint8_t *out = client_output(c, &len);
		CU_ASSERT_FATAL(has_packet(out, len, 2 /* CONNACK */));
		uint64_t failed = b->stats.cluster.send_failed;
		wisp_mem_fail_after(n, 0);
		/* QoS 1, packet id 7, a user property k=v: the stream message
		 * carries the properties, encoded with an allocation. */
		client_send_hex(c, "32 0f 00 01 't' 00 07 07 26 00 01 'k' 00 01 'v' 'hi'");
		wisp_mem_fail_after(0, 0);
		out = client_output(c, &len);
		CU_ASSERT_FALSE(has_packet(out, len, 4 /* PUBACK */));
		if (has_packet(out, len, 4))
			fprintf(stderr, "PUBACK sent with allocation %llu failing\n", (unsigned long long)n);
		if (b->stats.cluster.send_failed != failed)
			exercised = true;
		client_close(c);
		harness_run(h);
	}
	CU_ASSERT(exercised); /* some n failed making the stream message */
	cluster_stop(cl);
	harness_free(h);
}

/* A v3.1.1 CONNECT of client id "pNN" and a QoS 1 PUBLISH of "x" to "t". */
static void connect_client(struct hclient *c, unsigned id)
{
	char hex[96];
	snprintf(hex, sizeof hex, "10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'p%02u'", id % 100);
	client_send_hex(c, hex);
	client_take(c);
}

static void publish_qos1(struct hclient *c, unsigned packet_id)
{
	char hex[64];
	snprintf(hex, sizeof hex, "32 06 00 01 't' %02x %02x 'x'", packet_id >> 8, packet_id & 0xff);
	client_send_hex(c, hex);
}

/*
 * cluster.outbound_queue full (16 tickets, never acked: no NATS listens):
 * the 17th QoS 1 PUBLISH is not handled (no PUBACK, not counted received)
 * and its connection waits, unread (cluster/messages/waited); other
 * connections' PUBLISHes wait behind it; one that closes while waiting is
 * forgotten (the cluster stops cleanly under ASan); and when the waiting
 * list cannot grow (out of memory) the publish fails, its connection
 * closes, unacknowledged: never an ack for a message not safe. The list
 * does not grow with connections that waited and closed.
 */
static void test_publishers_wait_when_the_outbound_queue_is_full(void)
{
	struct cluster *cl = NULL;
	struct harness *h = cluster_harness(", \"interest\": false, \"outbound_queue\": 16", &cl);
	CU_ASSERT_FATAL(h != NULL && cl != NULL);
	struct broker *b = harness_broker(h);
	struct hclient *pub = harness_connect(h);
	connect_client(pub, 0);
	uint64_t received = b->stats.msgs_received;
	for (unsigned i = 1; i <= 20; i++)
		publish_qos1(pub, i);
	size_t len = 0;
	CU_ASSERT_FALSE(has_packet(client_output(pub, &len), len, 4 /* PUBACK */));
	CU_ASSERT_EQUAL(b->stats.cluster.pending, 16);
	CU_ASSERT_EQUAL(b->stats.msgs_received - received, 16);
	CU_ASSERT_EQUAL(b->stats.cluster.waited, 1);
	CU_ASSERT_EQUAL(b->stats.cluster.overflow, 0);
	CU_ASSERT_FALSE(client_closed(pub));
	/* Other publishers queue behind it: 63 more fill the list's first 64
	 * slots, one closes while it waits. */
	struct hclient *others[63];
	for (unsigned i = 0; i < 63; i++) {
		others[i] = harness_connect(h);
		connect_client(others[i], i + 1);
		publish_qos1(others[i], 1);
	}
	CU_ASSERT_EQUAL(b->stats.cluster.waited, 64);
	client_close(others[5]);
	harness_run(h);
	/* The 65th must grow the list: that allocation fails. */
	struct hclient *late = harness_connect(h);
	connect_client(late, 99);
	wisp_mem_fail_after(1, 0);
	publish_qos1(late, 1);
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_FALSE(has_packet(client_output(late, &len), len, 4 /* PUBACK */));
	CU_ASSERT(client_closed(late));
	CU_ASSERT_EQUAL(b->stats.cluster.pending, 16);
	for (unsigned i = 0; i < 63; i++)
		CU_ASSERT_FALSE(has_packet(client_output(others[i], &len), len, 4 /* PUBACK */));
	/* Clients that give up waiting and connect again, over and over (a
	 * long outage): the list keeps a closed one's place only until it is
	 * compacted, not one per attempt (before: 5,000 attempts grew it to
	 * 8,192 places, 64 KiB). */
	size_t before = wisp_mem_used();
	uint64_t waited = b->stats.cluster.waited;
	for (unsigned i = 0; i < 5000; i++) {
		struct hclient *c = harness_connect(h);
		client_send_hex(c, "10 0e 00 04 'MQTT' 04 02 00 3c 00 02 'zz'");
		publish_qos1(c, 1);
		client_close(c);
		harness_run(h);
	}
	CU_ASSERT_EQUAL(b->stats.cluster.waited - waited, 5000);
	CU_ASSERT(wisp_mem_used() < before + 16384);
	if (wisp_mem_used() >= before + 16384)
		fprintf(stderr, "memory grew by %zu bytes\n", wisp_mem_used() - before);
	cluster_stop(cl);
	harness_free(h);
}

static CU_TestInfo tests[] = {
	{"the receiving side's dedupe window survives a restart and a compaction",
	 test_stream_window_survives_restart_and_compaction},
	{"the store's forwarding queue survives a restart and a compaction, in order",
	 test_forward_queue_survives_restart_and_compaction},
	{"PUBREC waiting for JetStream never goes early under memory faults",
	 test_pubrec_never_sent_early_whatever_allocation_fails},
	{"acks held by the gate count against the output bound", test_held_acks_count_against_the_output_bound},
	/* Last: cluster_stop ends cnats's library. */
	{"QoS 1 publishers wait, unacknowledged, while cluster.outbound_queue is full",
	 test_publishers_wait_when_the_outbound_queue_is_full},
	{"a PUBACK never goes for a QoS 1 message whose stream message could not be made",
	 test_puback_never_sent_when_the_stream_message_cannot_be_made},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_durable", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
