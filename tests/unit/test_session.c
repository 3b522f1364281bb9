/*
 * Unit tests for a session's subscriptions (session.c): replacing a
 * subscription to the same filter [MQTT-3.8.4-3], unsubscribing, the
 * per-session filter index (lookups stay O(1): counted in filter
 * comparisons, never timed), limits.max_subscriptions, a seeded random
 * sequence against a naive model, the index giving memory back, and an
 * out-of-memory loop. No sockets: sessions and the tree only.
 */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit_main.h"
#include "alloc.h"
#include "err.h"
#include "session.h"
#include "topic.h"
#include "tree.h"
#include "trie.h"

static struct session_table tab;
static struct tree *tree;
static struct session *s;

static void set_up(void)
{
	CU_ASSERT_EQUAL_FATAL(sess_table_init(&tab), 0);
	tree = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(tree);
	s = sess_create(&tab, "subs", 4, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
}

static void tear_down(void)
{
	sess_table_free(&tab, tree);
	tree_free(tree);
}

static int sub(const char *f, uint8_t options, size_t max)
{
	return sess_subscribe(s, tree, f, strlen(f), options, 0, max);
}

struct seen {
	size_t calls;
	uint8_t options;
};

static void on_match(void *subscriber, uint8_t options, uint32_t subscription_id, void *ctx)
{
	struct seen *seen = ctx;
	(void)subscription_id;
	CU_ASSERT_PTR_EQUAL(subscriber, s);
	seen->calls++;
	seen->options = options;
}

static struct seen match(const char *name)
{
	struct topic_level levels[TOPIC_MAX_LEVELS_DEFAULT];
	int n = topic_split(name, strlen(name), levels, TOPIC_MAX_LEVELS_DEFAULT);
	CU_ASSERT_FATAL(n > 0);
	struct seen seen = {0};
	tree_match(tree, levels, (size_t)n, on_match, &seen);
	return seen;
}

static void filter_name(char *buf, size_t len, size_t i)
{
	snprintf(buf, len, "site/%zu/+/temp", i);
}

/* [MQTT-3.8.4-3] the same filter again replaces the subscription: one
 * subscription, one delivery, the new options. Below and above the size
 * from which the session indexes its filters. */
static void test_resubscribe_replaces(void)
{
	for (size_t extra = 0; extra < 2 * SESS_SUB_INDEX_MIN; extra += SESS_SUB_INDEX_MIN) {
		set_up();
		char f[64];
		for (size_t i = 0; i < extra; i++) {
			filter_name(f, sizeof f, i + 1000);
			CU_ASSERT_EQUAL(sub(f, 0, 0), 1);
		}
		CU_ASSERT_EQUAL(sub("a/+/c", 0, 0), 1);
		CU_ASSERT_EQUAL(sub("a/+/c", 2, 0), 0);
		CU_ASSERT_EQUAL(sub("a/+/c", 1, 0), 0);
		CU_ASSERT_EQUAL(sess_sub_count(s), extra + 1);
		CU_ASSERT_EQUAL(tree_count(tree), extra + 1);
		struct seen seen = match("a/b/c");
		CU_ASSERT_EQUAL(seen.calls, 1);
		CU_ASSERT_EQUAL(seen.options, 1);
		CU_ASSERT_PTR_NOT_NULL(sess_find_sub(s, "a/+/c", 5));
		CU_ASSERT_PTR_NULL(sess_find_sub(s, "a/+/", 4));
		CU_ASSERT_PTR_NULL(sess_find_sub(s, "a/+/d", 5));
		tear_down();
	}
}

static void test_unsubscribe(void)
{
	set_up();
	CU_ASSERT_EQUAL(sub("a/b", 1, 0), 1);
	CU_ASSERT_EQUAL(sub("a/#", 0, 0), 1);
	CU_ASSERT_EQUAL(sess_unsubscribe(s, tree, "a/c", 3), WISP_ENOENT);
	CU_ASSERT_EQUAL(sess_unsubscribe(s, tree, "a/b", 3), 0);
	CU_ASSERT_EQUAL(sess_unsubscribe(s, tree, "a/b", 3), WISP_ENOENT);
	CU_ASSERT_EQUAL(sess_sub_count(s), 1);
	CU_ASSERT_EQUAL(tree_count(tree), 1);
	CU_ASSERT_EQUAL(match("a/b").calls, 1); /* through a/# only */
	CU_ASSERT_EQUAL(sess_unsubscribe(s, tree, "a/#", 3), 0);
	CU_ASSERT_EQUAL(match("a/b").calls, 0);
	CU_ASSERT_EQUAL(tree_count(tree), 0);
	CU_ASSERT_EQUAL(tree_debug_nodes(tree), 0);
	tear_down();
}

/* Lookups compare at most a few filters however many the session holds.
 * With the former list walk, subscribing N filters made N^2/2 comparisons. */
static void test_lookup_is_constant(void)
{
	enum { N = 20000 };
	set_up();
	char f[64];
	uint64_t before = sess_debug_compares();
	for (size_t i = 0; i < N; i++) {
		filter_name(f, sizeof f, i);
		CU_ASSERT_EQUAL_FATAL(sub(f, 0, 0), 1);
	}
	/* New filters: a comparison only on a full 32-bit hash match. */
	CU_ASSERT(sess_debug_compares() - before < SESS_SUB_INDEX_MIN * SESS_SUB_INDEX_MIN + N / 100);
	before = sess_debug_compares();
	for (size_t i = 0; i < N; i++) {
		filter_name(f, sizeof f, i);
		CU_ASSERT_EQUAL_FATAL(sub(f, 1, 0), 0); /* replaced */
	}
	CU_ASSERT(sess_debug_compares() - before < N + N / 100);
	CU_ASSERT_EQUAL(sess_sub_count(s), N);
	CU_ASSERT_EQUAL(tree_count(tree), N);
	before = sess_debug_compares();
	for (size_t i = 0; i < N; i += 2) {
		filter_name(f, sizeof f, i);
		CU_ASSERT_EQUAL_FATAL(sess_unsubscribe(s, tree, f, strlen(f)), 0);
	}
	CU_ASSERT(sess_debug_compares() - before < N / 2 + N / 100);
	CU_ASSERT_EQUAL(sess_sub_count(s), N / 2);
	CU_ASSERT_EQUAL(match("site/1/x/temp").calls, 1);
	CU_ASSERT_EQUAL(match("site/2/x/temp").calls, 0);
	tear_down();
}

/* limits.max_subscriptions: a new filter past it is refused, a repeated
 * one is still replaced (it adds nothing). */
static void test_max_subscriptions(void)
{
	set_up();
	CU_ASSERT_EQUAL(sub("a", 0, 2), 1);
	CU_ASSERT_EQUAL(sub("b", 0, 2), 1);
	CU_ASSERT_EQUAL(sub("c", 0, 2), WISP_ELIMIT);
	CU_ASSERT_EQUAL(sub("b", 1, 2), 0);
	CU_ASSERT_EQUAL(sess_sub_count(s), 2);
	CU_ASSERT_EQUAL(sess_unsubscribe(s, tree, "a", 1), 0);
	CU_ASSERT_EQUAL(sub("c", 0, 2), 1);
	tear_down();
}

/* A seeded random mix of subscribes and unsubscribes over a small filter
 * space, so the index grows, shrinks, is dropped and rebuilt, and its
 * deletions shift probe chains; every answer is checked against a plain
 * array. */
static void test_random_against_model(void)
{
	enum { SPACE = 300, STEPS = 60000 };
	set_up();
	static bool model[SPACE];
	memset(model, 0, sizeof model);
	size_t count = 0;
	uint32_t rnd = 12345;
	char f[64];
	for (size_t step = 0; step < STEPS; step++) {
		rnd = rnd * 1103515245u + 12345u;
		/* Phases favour growth, then shrinking, so the size swings. */
		bool grow = (step / 5000) % 2 == 0;
		size_t i = (rnd >> 8) % SPACE;
		filter_name(f, sizeof f, i);
		bool add = ((rnd >> 20) % 4) != 0 ? grow : !grow;
		if (add) {
			CU_ASSERT_EQUAL_FATAL(sub(f, (uint8_t)(step % 3), 0), model[i] ? 0 : 1);
			if (!model[i])
				count++;
			model[i] = true;
		} else {
			CU_ASSERT_EQUAL_FATAL(sess_unsubscribe(s, tree, f, strlen(f)), model[i] ? 0 : WISP_ENOENT);
			if (model[i])
				count--;
			model[i] = false;
		}
		CU_ASSERT_EQUAL_FATAL(sess_sub_count(s), count);
		if (step % 997 == 0) {
			for (size_t k = 0; k < SPACE; k++) {
				filter_name(f, sizeof f, k);
				CU_ASSERT_EQUAL_FATAL(sess_find_sub(s, f, strlen(f)) != NULL, model[k]);
			}
			CU_ASSERT_EQUAL(tree_count(tree), count);
		}
	}
	tear_down();
}

/* The index costs nothing until SESS_SUB_INDEX_MIN subscriptions and is
 * freed again once the session shrinks to half that. */
static void test_index_memory(void)
{
	set_up();
	char f[64];
	for (size_t i = 0; i + 1 < SESS_SUB_INDEX_MIN; i++) {
		filter_name(f, sizeof f, i);
		CU_ASSERT_EQUAL(sub(f, 0, 0), 1);
	}
	CU_ASSERT_PTR_NULL(sess_sub_index(s));
	CU_ASSERT_PTR_NULL(s->rare); /* nothing else holds it */
	filter_name(f, sizeof f, 99);
	CU_ASSERT_EQUAL(sub(f, 0, 0), 1);
	CU_ASSERT_PTR_NOT_NULL(sess_sub_index(s));
	CU_ASSERT_EQUAL(sess_unsubscribe(s, tree, f, strlen(f)), 0);
	for (size_t i = 0; i < SESS_SUB_INDEX_MIN / 2; i++) {
		filter_name(f, sizeof f, i);
		CU_ASSERT_EQUAL(sess_unsubscribe(s, tree, f, strlen(f)), 0);
	}
	CU_ASSERT_PTR_NULL(sess_sub_index(s));
	CU_ASSERT_PTR_NULL(s->rare); /* nothing else holds it */
	for (size_t i = SESS_SUB_INDEX_MIN / 2; i + 1 < SESS_SUB_INDEX_MIN; i++) {
		filter_name(f, sizeof f, i);
		CU_ASSERT_PTR_NOT_NULL(sess_find_sub(s, f, strlen(f)));
	}
	tear_down();
}

/* Failing any allocation of a subscribe (the one that builds or grows the
 * index included) changes nothing and leaks nothing; destroying a session
 * gives back everything its subscriptions took. */
static void test_oom_and_destroy(void)
{
	set_up();
	sess_destroy(&tab, tree, s);
	size_t base = wisp_mem_used();
	s = sess_create(&tab, "subs", 4, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	char f[64];
	size_t failures = 0;
	for (size_t i = 0; i < 40; i++) {
		filter_name(f, sizeof f, i);
		size_t count = sess_sub_count(s), subs = tree_count(tree), nodes = tree_debug_nodes(tree);
		int rc = WISP_ENOMEM;
		for (uint64_t n = 1; n <= 16 && rc == WISP_ENOMEM; n++) {
			wisp_mem_fail_after(n, 0);
			rc = sub(f, 0, 0);
			wisp_mem_fail_after(0, 0);
			if (rc == WISP_ENOMEM) {
				failures++;
				CU_ASSERT_EQUAL_FATAL(sess_sub_count(s), count);
				CU_ASSERT_EQUAL_FATAL(tree_count(tree), subs);
				CU_ASSERT_EQUAL_FATAL(tree_debug_nodes(tree), nodes);
				CU_ASSERT_PTR_NULL_FATAL(sess_find_sub(s, f, strlen(f)));
			}
		}
		CU_ASSERT_EQUAL_FATAL(rc, 1);
	}
	CU_ASSERT(failures >= 40);
	for (size_t i = 0; i < 40; i++) {
		filter_name(f, sizeof f, i);
		CU_ASSERT_PTR_NOT_NULL(sess_find_sub(s, f, strlen(f)));
	}
	sess_destroy(&tab, tree, s);
	s = NULL;
	CU_ASSERT_EQUAL(tree_count(tree), 0);
	CU_ASSERT_EQUAL(tree_debug_nodes(tree), 0);
	CU_ASSERT_EQUAL(wisp_mem_used(), base);
	tear_down();
}

/* Subscriptions are counted against limits.memory_limit (wisp_malloc's
 * ceiling): past it a subscribe fails cleanly and the broker goes on. */
static void test_memory_limit(void)
{
	set_up();
	char f[256];
	wisp_mem_set_limit(wisp_mem_used() + 64 * 1024);
	size_t granted = 0;
	int rc = 0;
	for (size_t i = 0; i < 10000 && rc >= 0; i++) {
		/* Deep filters of their own: 64 trie nodes each. */
		int n = snprintf(f, sizeof f, "%zu", i);
		for (int l = 0; l < 63; l++)
			n += snprintf(f + n, sizeof f - (size_t)n, "/x");
		rc = sub(f, 0, 0);
		if (rc == 1)
			granted++;
	}
	wisp_mem_set_limit(0);
	CU_ASSERT_EQUAL(rc, WISP_ENOMEM);
	CU_ASSERT(granted > 0 && granted < 100);
	CU_ASSERT_EQUAL(sess_sub_count(s), granted);
	CU_ASSERT_EQUAL(tree_count(tree), granted);
	CU_ASSERT_EQUAL(sub("after/limit", 0, 0), 1);
	tear_down();
}

/* A session holds its rare parts (filter index, inbound QoS 2 ids, drop
 * count) in one block that an idle session never has (issue 18); a
 * session that needs one part keeps the others where they were. */
static void test_rare_parts_in_one_block(void)
{
	set_up();
	CU_ASSERT_PTR_NULL(s->rare);
	CU_ASSERT_EQUAL(sub("a/b", 0, 0), 1);
	CU_ASSERT_PTR_NULL(s->rare);
	CU_ASSERT_EQUAL(sess_qos2_in_count(s), 0);
	CU_ASSERT_EQUAL(sess_qos2_in_add(s, 5), 1);
	CU_ASSERT_PTR_NOT_NULL(s->rare);
	CU_ASSERT_EQUAL(sess_qos2_in_count(s), 1);
	CU_ASSERT_EQUAL(sess_qos2_in_id(s, 0), 5);
	CU_ASSERT_EQUAL(sess_qos2_in_release(s, 5), 1);
	CU_ASSERT_EQUAL(sess_dropped(s), 0);
	sess_count_dropped(s, 0);
	sess_count_dropped(s, 2);
	CU_ASSERT_EQUAL(sess_dropped(s), 2);
	CU_ASSERT(sess_set_drop_episodes(s, 0x4));
	CU_ASSERT_EQUAL(sess_drop_episodes(s), 0x4);
	CU_ASSERT(sess_set_drop_episodes(s, 0));
	CU_ASSERT_EQUAL(sess_dropped(s), 2);
	tear_down(); /* frees the block and its parts (ASan checks) */
	/* Episodes alone: the block goes when they end. */
	set_up();
	CU_ASSERT(sess_set_drop_episodes(s, 0x1));
	CU_ASSERT_PTR_NOT_NULL(s->rare);
	CU_ASSERT(sess_set_drop_episodes(s, 0));
	CU_ASSERT_PTR_NULL(s->rare);
	/* Out of memory for the block: nothing is recorded, nothing breaks. */
	wisp_mem_fail_after(1, 1);
	CU_ASSERT_FALSE(sess_set_drop_episodes(s, 0x1));
	sess_count_dropped(s, 1);
	CU_ASSERT_EQUAL(sess_qos2_in_add(s, 9), WISP_ENOMEM);
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_PTR_NULL(s->rare);
	CU_ASSERT_EQUAL(sess_dropped(s), 0);
	tear_down();
}

/* Scan visits counted per session by the number in its id ("s<i>"). */
struct scan_count {
	unsigned visits[4096];
	size_t calls;
	size_t stop_at; /* fn returns false at this call (1-based); 0: never */
};

static bool count_visit(void *ctx, const struct session *ses)
{
	struct scan_count *c = ctx;
	if (++c->calls == c->stop_at)
		return false;
	if (ses->client_id[0] == 's' && ses->client_id[1] != 'u')
		c->visits[strtoul(ses->client_id + 1, NULL, 10)]++;
	return true;
}

static void add_sessions(size_t from, size_t to)
{
	char id[16];
	for (size_t i = from; i < to; i++) {
		int n = snprintf(id, sizeof id, "s%zu", i);
		CU_ASSERT_PTR_NOT_NULL_FATAL(sess_create(&tab, id, (size_t)n, false));
	}
}

/* A scan spread over calls visits every session there for its whole
 * length once, while the table doubles four times between two of its calls
 * (64 to 1,024 buckets), and a stop makes the next call visit that bucket again. */
static void test_scan_across_growth(void)
{
	set_up();
	add_sessions(0, 200);
	CU_ASSERT_EQUAL(tab.nbuckets, 64);
	struct scan_count *c = calloc(1, sizeof *c);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	size_t cursor = 0, steps = 0;
	do {
		CU_ASSERT_TRUE(sess_table_scan(&tab, &cursor, count_visit, c));
		if (++steps == 20)
			add_sessions(200, 2100);
		CU_ASSERT_FATAL(steps < 10000);
	} while (cursor != 0);
	CU_ASSERT_EQUAL(tab.nbuckets, 1024);
	for (size_t i = 0; i < 200; i++)
		CU_ASSERT_EQUAL(c->visits[i], 1); /* there throughout: once, none twice */
	for (size_t i = 200; i < 2100; i++)
		CU_ASSERT(c->visits[i] <= 1);

	/* Stopped at the third session of the scan: its bucket again. */
	memset(c, 0, sizeof *c);
	c->stop_at = 3;
	cursor = 0;
	size_t stops = 0;
	for (;;) {
		if (!sess_table_scan(&tab, &cursor, count_visit, c))
			stops++;
		else if (cursor == 0)
			break;
	}
	CU_ASSERT_EQUAL(stops, 1);
	for (size_t i = 0; i < 2100; i++)
		CU_ASSERT(c->visits[i] >= 1);
	free(c);
	tear_down();
}

static CU_TestInfo tests[] = {
	{"[MQTT-3.8.4-3] subscribing again replaces, below and above the index size", test_resubscribe_replaces},
	{"unsubscribe removes one filter; unknown filters are ENOENT", test_unsubscribe},
	{"lookups make O(1) filter comparisons with 20,000 subscriptions", test_lookup_is_constant},
	{"max_subscriptions refuses new filters, not replacements", test_max_subscriptions},
	{"seeded random subscribe/unsubscribe agree with a model", test_random_against_model},
	{"the index is built at SESS_SUB_INDEX_MIN and freed below half", test_index_memory},
	{"filter index, inbound QoS 2 ids and drop count share one block, held only while used", test_rare_parts_in_one_block},
	{"OOM at every allocation of a subscribe changes nothing; destroy frees all", test_oom_and_destroy},
	{"subscriptions count against memory_limit", test_memory_limit},
	{"a table scan over several calls visits each session once across growth, and again after a stop",
	 test_scan_across_growth},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"session_subscriptions", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
