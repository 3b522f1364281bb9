/*
 * The cluster's pure decisions (cluster/rules.h): which of two connects of
 * one client id stays, whether a retained record is applied while an own
 * write is on its way, and the figures message of $SYS/cluster/.
 */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rules.h"
#include "unit_main.h"

static void test_later_connect_stays(void)
{
	static const struct {
		uint64_t mine;
		const char *my_node;
		uint64_t claim;
		const char *claim_node;
		bool keep_local;
		const char *why;
	} cases[] = {
		{200, "a", 100, "b", true, "ours is later: the claim loses"},
		{100, "a", 200, "b", false, "the claim is later: ours goes [MQTT-3.1.4-3]"},
		{0, "a", 1, "b", false, "ours is not among the recent connects: older than any claim"},
		{150, "b", 150, "a", true, "same instant: the greater node name stays"},
		{150, "a", 150, "b", false, "same instant, seen from the other node: exactly one stays"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		bool got = claim_loses_to_local(cases[i].mine, cases[i].my_node, cases[i].claim, cases[i].claim_node);
		if (got != cases[i].keep_local)
			fprintf(stderr, "\ncase %zu: %s\n", i, cases[i].why);
		CU_ASSERT_EQUAL(got, cases[i].keep_local);
	}
	/* Symmetry: for any two connects, exactly one side keeps its own. */
	for (uint64_t x = 0; x < 4; x++)
		for (uint64_t y = 0; y < 4; y++)
			CU_ASSERT_NOT_EQUAL(claim_loses_to_local(x, "a", y, "b"), claim_loses_to_local(y, "b", x, "a"));
}

/* A claim's time: the clock, unless the clock is not past the last claim
 * of the id known here (another node's clock ahead, or this one set back):
 * then just after it, so the new connect is still the later one. */
static void test_claim_time_is_after_the_last_known_claim(void)
{
	CU_ASSERT_EQUAL(claim_time(1000, 0), 1000);   /* first claim known: the clock */
	CU_ASSERT_EQUAL(claim_time(1000, 999), 1000); /* clock ahead of the last claim */
	CU_ASSERT_EQUAL(claim_time(1000, 1000), 1001); /* same instant: still after it */
	CU_ASSERT_EQUAL(claim_time(1000, 5000), 5001); /* the other node's clock ahead by 4 us */
	CU_ASSERT_EQUAL(claim_time(0, UINT64_MAX), UINT64_MAX); /* saturates, never wraps */
	/* Whatever the clock says, the new claim beats the one it heard, as the
	 * node that made that one sees it. */
	for (uint64_t now = 0; now < 4; now++)
		for (uint64_t heard = 1; heard < 4; heard++)
			CU_ASSERT_TRUE(claim_loses_to_local(claim_time(now, heard), "a", heard, "b") &&
				       !claim_loses_to_local(heard, "b", claim_time(now, heard), "a"));
}

static void test_retained_record_verdict(void)
{
	CU_ASSERT_EQUAL(retained_record_verdict(false, false, 0, 3), RECORD_APPLY);
	CU_ASSERT_EQUAL(retained_record_verdict(true, true, 0, 3), RECORD_SKIP);   /* ours not in the stream yet */
	CU_ASSERT_EQUAL(retained_record_verdict(true, true, 0, 900), RECORD_SKIP); /* however late it is */
	CU_ASSERT_EQUAL(retained_record_verdict(true, false, 5, 4), RECORD_SKIP);  /* before ours in the stream */
	CU_ASSERT_EQUAL(retained_record_verdict(true, false, 5, 5), RECORD_SKIP_ARRIVED); /* ours (or its duplicate) */
	CU_ASSERT_EQUAL(retained_record_verdict(true, false, 5, 6), RECORD_APPLY); /* after ours: another write won */
}

static const char *const names[] = {"clients_connected", "messages_received_total", "heap_bytes"};

static void test_figures_parse(void)
{
	uint64_t v[3] = {9, 9, 9};
	static const char full[] = "clients_connected=3 messages_received_total=18446744073709551615 heap_bytes=0";
	CU_ASSERT_EQUAL(figures_parse(full, sizeof full - 1, names, 3, v), 3);
	CU_ASSERT_EQUAL(v[0], 3);
	CU_ASSERT_EQUAL(v[1], UINT64_MAX);
	CU_ASSERT_EQUAL(v[2], 0);
	/* Unknown names (a newer node), malformed items: skipped, the rest kept. */
	uint64_t w[3] = {9, 9, 9};
	static const char odd[] = "future_figure=5 clients_connected= =4 heap_bytes=12x messages_received_total=7";
	CU_ASSERT_EQUAL(figures_parse(odd, sizeof odd - 1, names, 3, w), 1);
	CU_ASSERT_EQUAL(w[0], 9);
	CU_ASSERT_EQUAL(w[1], 7);
	CU_ASSERT_EQUAL(w[2], 9);
	/* Not NUL-terminated: a value running to the end of the buffer stops there. */
	char buf[] = {'h', 'e', 'a', 'p', '_', 'b', 'y', 't', 'e', 's', '=', '4', '2', '9'};
	uint64_t x[3] = {0, 0, 0};
	CU_ASSERT_EQUAL(figures_parse(buf, sizeof buf - 1, names, 3, x), 1);
	CU_ASSERT_EQUAL(x[2], 42);
	CU_ASSERT_EQUAL(figures_parse("", 0, names, 3, x), 0);
	/* 21 digits: over UINT64_MAX's 20, refused rather than wrapped. */
	static const char big[] = "heap_bytes=123456789012345678901";
	CU_ASSERT_EQUAL(figures_parse(big, sizeof big - 1, names, 3, x), 0);
}

static CU_TestInfo tests[] = {
	{"two connects of one id: the later stays, exactly one", test_later_connect_stays},
	{"a claim's time is after the last claim of the id known", test_claim_time_is_after_the_last_known_claim},
	{"retained record while an own write is unsent or unechoed", test_retained_record_verdict},
	{"figures message: names, malformed items, bounds", test_figures_parse},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_rules", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
