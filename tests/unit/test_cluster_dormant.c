/*
 * The dormant nodes' rule (broker/src/cluster/dormant.h): a node whose
 * consumer is on the stream and which is not heard is dormant (QoS 1/2
 * then all go to the stream); a node forgotten is dormant at once, until a
 * list asked after its forgetting shows its consumer gone; before the
 * first list everything QoS 1/2 is in doubt; the shared groups' consumers
 * and the node's own never count. Each change is said once. Memory:
 * nothing leaked, the set unchanged when an allocation fails.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "dormant.h"
#include "err.h"
#include "unit_main.h"

struct world {
	const char *live[4]; /* consumer names heard now */
	int said_dormant, said_back, said_gone;
	char last[64];
};

static bool live(void *ctx, const char *consumer)
{
	struct world *w = ctx;
	for (size_t i = 0; i < 4; i++)
		if (w->live[i] && strcmp(w->live[i], consumer) == 0)
			return true;
	return false;
}

static void said(void *ctx, const char *consumer, bool dormant, bool gone)
{
	struct world *w = ctx;
	snprintf(w->last, sizeof w->last, "%s", consumer);
	if (dormant)
		w->said_dormant++;
	else if (gone)
		w->said_gone++;
	else
		w->said_back++;
}

static const char *const stream_list[] = {"a", "b", "wisp-share-0123abcd", "wisp-share-0123abcd-p"};

static void test_no_list_is_doubt(void)
{
	struct dormant d = {0};
	struct world w = {0};
	CU_ASSERT_TRUE(dormant_doubt(&d));
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 0);
	CU_ASSERT_TRUE(dormant_doubt(&d)); /* at start, until the consumers are known */
	CU_ASSERT_EQUAL(dormant_list(&d, stream_list, 4, "a", 1), 0);
	w.live[0] = "b";
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 0);
	CU_ASSERT_FALSE(dormant_doubt(&d)); /* every node consumer's node is heard */
	CU_ASSERT_EQUAL(w.said_dormant, 0);
	dormant_free(&d);
}

static void test_listed_unheard_is_dormant_until_heard(void)
{
	struct dormant d = {0};
	struct world w = {0};
	CU_ASSERT_EQUAL(dormant_list(&d, stream_list, 4, "a", 1), 0);
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 1); /* b; not a (own), not the group's */
	CU_ASSERT_STRING_EQUAL(w.last, "b");
	CU_ASSERT_TRUE(dormant_doubt(&d));
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 1);
	CU_ASSERT_EQUAL(w.said_dormant, 1); /* said once */
	w.live[0] = "b";
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 0);
	CU_ASSERT_EQUAL(w.said_back, 1);
	CU_ASSERT_FALSE(dormant_doubt(&d));
	dormant_free(&d);
}

static void test_forgotten_held_until_a_later_list(void)
{
	struct dormant d = {0};
	struct world w = {.live = {"b"}};
	static const char *const without_b[] = {"a"};
	CU_ASSERT_EQUAL(dormant_list(&d, without_b, 1, "a", 1), 0); /* b's consumer made after this list */
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 0);
	w.live[0] = NULL; /* b says bye */
	CU_ASSERT_EQUAL(dormant_forgotten(&d, "b", 3), 0);
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 1); /* at once: no window */
	CU_ASSERT_EQUAL(dormant_list(&d, without_b, 1, "a", 2), 0); /* asked before the bye */
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 1);
	CU_ASSERT_EQUAL(dormant_list(&d, stream_list, 4, "a", 3), 0); /* its consumer is there */
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 1);
	CU_ASSERT_EQUAL(dormant_list(&d, without_b, 1, "a", 4), 0); /* an operator deleted it */
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 0);
	CU_ASSERT_EQUAL(w.said_dormant, 1);
	CU_ASSERT_EQUAL(w.said_gone, 1);
	CU_ASSERT_EQUAL(d.n, 0);
	CU_ASSERT_FALSE(dormant_doubt(&d));
	dormant_free(&d);
}

static void test_forgotten_before_any_list(void)
{
	struct dormant d = {0};
	struct world w = {0};
	CU_ASSERT_EQUAL(dormant_forgotten(&d, "b", 1), 0);
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 1);
	static const char *const only_a[] = {"a"};
	CU_ASSERT_EQUAL(dormant_list(&d, only_a, 1, "a", 1), 0); /* b had no consumer (durable off there) */
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 0);
	CU_ASSERT_FALSE(dormant_doubt(&d));
	dormant_free(&d);
}

static void test_names_mapped_as_durable_does(void)
{
	CU_ASSERT_TRUE(dormant_is_node("host.b", "host_b"));
	CU_ASSERT_TRUE(dormant_is_node("x y*z>/\\", "x_y_z___"));
	CU_ASSERT_FALSE(dormant_is_node("host.b", "host_bb"));
	CU_ASSERT_FALSE(dormant_is_node("host.bb", "host_b"));
	struct dormant d = {0};
	struct world w = {.live = {"host_b"}};
	CU_ASSERT_EQUAL(dormant_forgotten(&d, "host.b", 1), 0);
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 0); /* heard under its consumer name */
	dormant_free(&d);
}

/* A stream with thousands of group consumers: only node consumers kept. */
static void test_many_group_consumers(void)
{
	enum { N = 3000 };
	static char buf[N][40];
	static const char *names[N];
	for (size_t i = 0; i < N; i++) {
		if (i % 1000 == 7)
			snprintf(buf[i], sizeof buf[i], "node%zu", i);
		else
			snprintf(buf[i], sizeof buf[i], "wisp-share-%08zx%s", i, i % 2 ? "-p" : "");
		names[i] = buf[i];
	}
	struct dormant d = {0};
	struct world w = {0};
	CU_ASSERT_EQUAL(dormant_list(&d, names, N, "a", 1), 0);
	CU_ASSERT_EQUAL(d.n, 3);
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 3);
	dormant_free(&d);
}

/* Whoever may make consumers on the stream cannot grow the set without
 * limit: past DORMANT_MAX_NODES node consumers it is full, and QoS 1/2
 * messages are in doubt (all to the stream: none lost for a node left out)
 * until a list fits again. */
static void test_set_bounded(void)
{
	enum { N = DORMANT_MAX_NODES + 50 };
	static char buf[N][24];
	static const char *names[N];
	for (size_t i = 0; i < N; i++) {
		snprintf(buf[i], sizeof buf[i], "node%zu", i);
		names[i] = buf[i];
	}
	struct dormant d = {0};
	struct world w = {0};
	CU_ASSERT_EQUAL(dormant_list(&d, names, N, "a", 1), 0);
	CU_ASSERT_EQUAL(d.n, DORMANT_MAX_NODES);
	CU_ASSERT(dormant_doubt(&d));
	CU_ASSERT_EQUAL(dormant_forgotten(&d, "another", 2), 0);
	CU_ASSERT_EQUAL(d.n, DORMANT_MAX_NODES);
	CU_ASSERT_EQUAL(dormant_list(&d, names, 3, "a", 3), 0);
	CU_ASSERT_FALSE(d.full);
	CU_ASSERT_EQUAL(dormant_update(&d, live, said, &w), 3); /* the rest left the list */
	CU_ASSERT_EQUAL(d.n, 3);
	dormant_free(&d);
}

static void test_oom_leaves_set(void)
{
	size_t mem0 = wisp_mem_used();
	for (uint64_t n = 1; n <= 12; n++) {
		struct dormant d = {0};
		struct world w = {0};
		static const char *const one[] = {"c"};
		CU_ASSERT_EQUAL(dormant_list(&d, one, 1, "a", 1), 0);
		wisp_mem_fail_after(n, 0);
		int rc = dormant_list(&d, stream_list, 4, "a", 2);
		int rc2 = dormant_forgotten(&d, "e", 3);
		wisp_mem_fail_after(0, 0);
		CU_ASSERT_TRUE(rc == 0 || rc == WISP_ENOMEM);
		CU_ASSERT_TRUE(rc2 == 0 || rc2 == WISP_ENOMEM);
		if (rc != 0) { /* unchanged: c still listed, b not added */
			CU_ASSERT_TRUE(d.n >= 1);
			CU_ASSERT_STRING_EQUAL(d.nodes[0].name, "c");
			CU_ASSERT_TRUE(d.nodes[0].listed);
		}
		dormant_update(&d, live, said, &w);
		CU_ASSERT_TRUE(dormant_doubt(&d));
		dormant_free(&d);
		CU_ASSERT_EQUAL(wisp_mem_used(), mem0);
	}
}

static CU_TestInfo tests[] = {
	{"no list yet: QoS 1/2 in doubt; all heard: not", test_no_list_is_doubt},
	{"a listed node consumer whose node is unheard is dormant until heard", test_listed_unheard_is_dormant_until_heard},
	{"a forgotten node is dormant at once, until a list asked later lacks it", test_forgotten_held_until_a_later_list},
	{"forgotten before the first list: dormant until the list", test_forgotten_before_any_list},
	{"node names map to consumer names as durable.c's", test_names_mapped_as_durable_does},
	{"thousands of group consumers: only node consumers kept", test_many_group_consumers},
	{"bounded: past DORMANT_MAX_NODES node consumers the set is full and in doubt", test_set_bounded},
	{"allocation failures leave the set as it was, leak nothing", test_oom_leaves_set},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_dormant", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
