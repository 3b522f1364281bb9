/*
 * The durable cluster path's ack gate (cluster/durable.c) under memory
 * faults: a PUBREC that must wait for JetStream is never sent early, not
 * even when holding it cannot allocate (issue 16: "a node answers
 * PUBACK/PUBREC ... only when the message is safe"). The broker runs in
 * the scripted harness; the durable side is started on it with a NATS URL
 * nobody listens on, so no ticket is ever acked by JetStream.
 */
#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "broker_harness.h"
#include "durable.h"
#include "err.h"
#include "unit_main.h"

static const char config[] =
	"{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
	" \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"},"
	" \"cluster\": {\"nats\": [\"nats://127.0.0.1:1\"], \"node\": \"t\"}}";

static const char *route_none(void *ctx, natsMsg *nm)
{
	(void)ctx;
	(void)nm;
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
 * A QoS 2 PUBLISH while a message handed to JetStream is unacked: its
 * PUBREC must wait [MQTT-4.3.3-2 resend rule in durable.c's gate_hold].
 * Allocation n of the PUBLISH's handling fails, for every n: whatever
 * fails, no PUBREC goes out (the connection may close instead).
 */
static void test_pubrec_never_sent_early_whatever_allocation_fails(void)
{
	bool exercised_close = false;
	for (uint64_t n = 0; n <= 40; n++) {
		struct harness *h = harness_new(config);
		CU_ASSERT_FATAL(h != NULL);
		struct broker *b = harness_broker(h);
		struct durable *d = NULL;
		CU_ASSERT_EQUAL_FATAL(durable_start(b, "t", "0123456789abcdef", route_none, make_none, NULL, &d), 0);
		char reply[128];
		uint64_t ticket = durable_reserve(d, reply, sizeof reply);
		CU_ASSERT_FATAL(ticket != 0);
		struct hclient *c = harness_connect(h);
		client_send_hex(c, "10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'pub'");
		CU_ASSERT(client_expect_hex(c, "20 02 00 00", "CONNACK"));
		wisp_mem_fail_after(n, 0);
		client_send_hex(c, "34 08 00 01 't' 00 07 'hi' 'x'");
		wisp_mem_fail_after(0, 0);
		size_t len = 0;
		const uint8_t *out = client_output(c, &len);
		CU_ASSERT_FALSE(has_packet(out, len, 5 /* PUBREC */));
		if (has_packet(out, len, 5))
			fprintf(stderr, "PUBREC sent with allocation %llu failing\n", (unsigned long long)n);
		if (client_closed(c))
			exercised_close = true;
		durable_stop(d);
		durable_free(d);
		harness_free(h);
	}
	/* Some allocation of the hold itself failed: the publish was refused. */
	CU_ASSERT(exercised_close);
}

static CU_TestInfo tests[] = {
	{"PUBREC waiting for JetStream never goes early under memory faults",
	 test_pubrec_never_sent_early_whatever_allocation_fails},
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
