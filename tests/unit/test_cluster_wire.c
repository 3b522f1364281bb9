/*
 * The cluster's Wisp-Props header (cluster/wire.h): the base64 that
 * cnats's messages carry and the data connection's HPUB carries are one
 * encoding, whatever the block's length (wire_add_props encodes in
 * pieces), and what a node reads back is the block it sent; a block with
 * a property a broker never forwards is refused.
 */
#include <CUnit/CUnit.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <nats/nats.h>

#include "alloc.h"
#include "codec.h"
#include "sbuf.h"
#include "unit_main.h"
#include "wire.h"

/* A v5 property block of user properties ("k" = "v..."), len bytes. */
static size_t user_props(uint8_t *p, size_t len)
{
	size_t n = 0;
	while (len - n >= 7) {
		size_t v = len - n - 7 < 200 ? len - n - 7 : 200;
		p[n++] = MQTT_PROP_USER_PROPERTY;
		p[n++] = 0;
		p[n++] = 1;
		p[n++] = 'k';
		p[n++] = (uint8_t)(v >> 8);
		p[n++] = (uint8_t)v;
		memset(p + n, 'a' + (int)(n % 26), v);
		n += v;
	}
	return n;
}

static void test_pieces_make_one_encoding(void)
{
	static uint8_t props[3000];
	for (size_t i = 0; i < sizeof props; i++)
		props[i] = (uint8_t)(i * 7 + 3);
	static const size_t lens[] = {1, 2, 3, 767, 768, 769, 770, 1536, 2305, 3000};
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		static unsigned char want[4100];
		size_t wlen = 0;
		CU_ASSERT_EQUAL_FATAL(mbedtls_base64_encode(want, sizeof want, &wlen, props, lens[i]), 0);
		struct sbuf b = {0};
		sbuf_adds(&b, "Wisp-Props: ");
		wire_add_props(&b, props, lens[i]);
		CU_ASSERT_FALSE(b.failed);
		CU_ASSERT_EQUAL(b.len, 12 + wlen);
		CU_ASSERT_EQUAL(memcmp(b.data + 12, want, wlen), 0);
		sbuf_free(&b);
	}
	/* Past the buffer's bound: failed, not cut short silently. */
	struct sbuf small = {.max = 100};
	wire_add_props(&small, props, 1000);
	CU_ASSERT_TRUE(small.failed);
	sbuf_free(&small);
}

static void test_what_is_sent_is_read(void)
{
	static const size_t lens[] = {7, 700, 769, 2100};
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		static uint8_t props[2200];
		size_t len = user_props(props, lens[i]);
		natsMsg *nm = NULL;
		CU_ASSERT_EQUAL_FATAL(natsMsg_Create(&nm, "wisp.t", NULL, "x", 1), NATS_OK);
		CU_ASSERT_EQUAL(wire_set_props(nm, props, len), NATS_OK);
		uint8_t *got = NULL;
		size_t got_len = 0;
		CU_ASSERT_PTR_NULL(wire_get_props(nm, &got, &got_len));
		CU_ASSERT_EQUAL(got_len, len);
		CU_ASSERT(got && memcmp(got, props, len) == 0);
		wisp_free(got);
		natsMsg_Destroy(nm);
	}
	/* A topic alias is the publisher's connection's own: never forwarded,
	 * so never taken from NATS [MQTT-3.3.2-12]. */
	const uint8_t alias[] = {MQTT_PROP_TOPIC_ALIAS, 0, 1};
	natsMsg *nm = NULL;
	CU_ASSERT_EQUAL_FATAL(natsMsg_Create(&nm, "wisp.t", NULL, "x", 1), NATS_OK);
	CU_ASSERT_EQUAL(wire_set_props(nm, alias, sizeof alias), NATS_OK);
	uint8_t *got = NULL;
	size_t got_len = 0;
	CU_ASSERT_PTR_NOT_NULL(wire_get_props(nm, &got, &got_len));
	CU_ASSERT_PTR_NULL(got);
	natsMsg_Destroy(nm);
}

static int suite_init(void) { return nats_Open(-1) == NATS_OK ? 0 : -1; }
static int suite_cleanup(void) { return nats_CloseAndWait(5000) == NATS_OK ? 0 : -1; }

static CU_TestInfo tests[] = {
	{"Wisp-Props in pieces is one base64 encoding", test_pieces_make_one_encoding},
	{"Wisp-Props read back is the block sent; a topic alias refused", test_what_is_sent_is_read},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_wire", suite_init, suite_cleanup, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
