/*
 * Listener handshake caps: the listener-wide and per-address counts, IPv6
 * sources keyed by /64, and the open-addressing table of addresses (growth
 * and deletion without tombstones) checked against a plain array model
 * over a long random sequence of begins and ends.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "unit_main.h"
#include "alloc.h"
#include "listener.h"

static void fresh(struct listener *ls, uint32_t max, uint32_t per_address)
{
	memset(ls, 0, sizeof *ls);
	ls->io.fd = -1; /* never opened: listener_close only frees the table */
	listener_set_handshake_caps(ls, max, per_address);
}

static void v4(uint8_t out[16], uint32_t host)
{
	memset(out, 0, 16);
	uint32_t be = htonl(host);
	memcpy(out, &be, 4);
}

static void test_listener_cap(void)
{
	struct listener ls;
	uint8_t a[16];
	fresh(&ls, 3, 0);
	for (uint32_t i = 0; i < 3; i++) {
		v4(a, 0x7f000001u + i);
		CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET, a), LISTENER_HS_OK);
	}
	v4(a, 0x7f000009u);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET, a), LISTENER_HS_LISTENER_FULL);
	/* Unix sockets and other families count for the listener only. */
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_UNIX, NULL), LISTENER_HS_LISTENER_FULL);
	v4(a, 0x7f000001u);
	listener_handshake_end(&ls, AF_INET, a);
	CU_ASSERT_EQUAL(ls.hs.count, 2);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_UNIX, NULL), LISTENER_HS_OK);
	listener_close(&ls, NULL);
}

static void test_per_address_cap(void)
{
	struct listener ls;
	uint8_t a[16], b[16];
	fresh(&ls, 0, 2);
	v4(a, 0x0a000001u);
	v4(b, 0x0a000002u);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET, a), LISTENER_HS_OK);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET, a), LISTENER_HS_OK);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET, a), LISTENER_HS_ADDRESS_FULL);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET, b), LISTENER_HS_OK);
	CU_ASSERT_EQUAL(ls.hs.count, 3);
	listener_handshake_end(&ls, AF_INET, a);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET, a), LISTENER_HS_OK);
	listener_handshake_end(&ls, AF_INET, a);
	listener_handshake_end(&ls, AF_INET, a);
	listener_handshake_end(&ls, AF_INET, b);
	CU_ASSERT_EQUAL(ls.hs.count, 0);
	CU_ASSERT_EQUAL(ls.hs.used, 0);
	listener_close(&ls, NULL);
}

static void test_ipv6_keyed_by_64(void)
{
	struct listener ls;
	uint8_t x[16], y[16], z[16];
	fresh(&ls, 0, 2);
	inet_pton(AF_INET6, "2001:db8:1:2::1", x);
	inet_pton(AF_INET6, "2001:db8:1:2:ffff::9", y); /* same /64 */
	inet_pton(AF_INET6, "2001:db8:1:3::1", z);      /* next /64 */
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET6, x), LISTENER_HS_OK);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET6, y), LISTENER_HS_OK);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET6, x), LISTENER_HS_ADDRESS_FULL);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET6, z), LISTENER_HS_OK);
	/* IPv4 and IPv6 keys never collide, even with equal leading bytes. */
	uint8_t four[16];
	memcpy(four, x, 16);
	CU_ASSERT_EQUAL(listener_handshake_begin(&ls, AF_INET, four), LISTENER_HS_OK);
	listener_close(&ls, NULL);
}

/* 20,000 random begins and ends over 700 addresses, against a model. */
static void test_table_matches_model(void)
{
	enum { ADDRS = 700, STEPS = 20000, PER = 5 };
	static uint32_t model[ADDRS];
	memset(model, 0, sizeof model);
	struct listener ls;
	fresh(&ls, 0, PER);
	uint32_t seed = 12345;
	uint32_t total = 0, live = 0;
	for (int step = 0; step < STEPS; step++) {
		seed = seed * 1103515245u + 12345u;
		uint32_t i = (seed >> 8) % ADDRS;
		uint8_t a[16];
		v4(a, 0xc0a80000u + i * 7919u);
		/* Begins win early so the table grows, ends win later so it empties. */
		bool begin = ((seed >> 20) % 100) < (step < STEPS / 2 ? 60u : 35u);
		if (begin) {
			enum listener_hs_verdict v = listener_handshake_begin(&ls, AF_INET, a);
			if (model[i] < PER) {
				CU_ASSERT_EQUAL_FATAL(v, LISTENER_HS_OK);
				live += model[i]++ == 0;
				total++;
			} else {
				CU_ASSERT_EQUAL_FATAL(v, LISTENER_HS_ADDRESS_FULL);
			}
		} else if (model[i]) {
			listener_handshake_end(&ls, AF_INET, a);
			live -= --model[i] == 0;
			total--;
		}
		CU_ASSERT_EQUAL_FATAL(ls.hs.count, total);
		CU_ASSERT_EQUAL_FATAL(ls.hs.used, live);
	}
	for (uint32_t i = 0; i < ADDRS; i++) {
		uint8_t a[16];
		v4(a, 0xc0a80000u + i * 7919u);
		while (model[i]) {
			listener_handshake_end(&ls, AF_INET, a);
			model[i]--;
		}
	}
	CU_ASSERT_EQUAL(ls.hs.count, 0);
	CU_ASSERT_EQUAL(ls.hs.used, 0);
	size_t before = wisp_mem_used();
	listener_close(&ls, NULL);
	CU_ASSERT(wisp_mem_used() < before);
	CU_ASSERT_PTR_NULL(ls.hs.slots);
}

static CU_TestInfo listener_tests[] = {
	{"max_handshakes refuses past the listener cap", test_listener_cap},
	{"max_handshakes_per_address refuses past the address cap", test_per_address_cap},
	{"IPv6 sources are keyed by their /64", test_ipv6_keyed_by_64},
	{"address table matches a model over random begins and ends", test_table_matches_model},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"listener handshake caps", NULL, NULL, NULL, NULL, listener_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
