/*
 * The other cluster nodes' filters (broker/src/cluster/interest.h): the
 * trie a node asks before publishing to NATS is held to the same match
 * table as the reference matcher and the subscription tree
 * (topic_cases.h), counts overlapping holders, forgets a filter with its
 * last holder, and matches a shared subscription by its inner filter. A
 * random run compares it with topic_matches() over a changing set.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "announce.h"
#include "interest.h"
#include "topic.h"
#include "topic_cases.h"
#include "trie.h"
#include "unit_main.h"

static bool wanted(const struct trie *t, const char *topic)
{
	struct topic_level lv[TOPIC_MAX_LEVELS_DEFAULT];
	int n = topic_split(topic, strlen(topic), lv, TOPIC_MAX_LEVELS_DEFAULT);
	CU_ASSERT_FATAL(n > 0);
	return interest_trie_match(t, lv, (size_t)n);
}

static void test_match_table(void)
{
	for (size_t i = 0; i < MATCH_CASES_N; i++) {
		const struct match_case *mc = &MATCH_CASES[i];
		struct trie t;
		CU_ASSERT_EQUAL_FATAL(interest_trie_init(&t), 0);
		CU_ASSERT_EQUAL(interest_trie_count(&t, mc->filter, strlen(mc->filter), true), 0);
		if (wanted(&t, mc->name) != mc->match)
			fprintf(stderr, "\n'%s' vs '%s': want %d (%s)\n", mc->filter, mc->name, mc->match, mc->why);
		CU_ASSERT_EQUAL(wanted(&t, mc->name), mc->match);
		trie_destroy(&t, NULL, NULL);
	}
}

static void test_counts_shared_and_removal(void)
{
	struct trie t;
	CU_ASSERT_EQUAL_FATAL(interest_trie_init(&t), 0);
	/* Two nodes hold a/+; a third holds it through a shared group. */
	CU_ASSERT_EQUAL(interest_trie_count(&t, "a/+", 3, true), 0);
	CU_ASSERT_EQUAL(interest_trie_count(&t, "a/+", 3, true), 0);
	CU_ASSERT_EQUAL(interest_trie_count(&t, "$share/g/a/+", 12, true), 0);
	CU_ASSERT_TRUE(wanted(&t, "a/x"));
	CU_ASSERT_EQUAL(interest_trie_count(&t, "a/+", 3, false), 0);
	CU_ASSERT_EQUAL(interest_trie_count(&t, "a/+", 3, false), 0);
	CU_ASSERT_TRUE(wanted(&t, "a/x")); /* the group still wants it */
	CU_ASSERT_EQUAL(interest_trie_count(&t, "$share/g/a/+", 12, false), 0);
	CU_ASSERT_FALSE(wanted(&t, "a/x"));
	CU_ASSERT_EQUAL(t.nodes, 0); /* nothing left behind */
	/* Malformed or invalid filters match nothing, and removing what is not
	 * there changes nothing. */
	CU_ASSERT_EQUAL(interest_trie_count(&t, "$share/g", 8, true), 0);
	CU_ASSERT_EQUAL(interest_trie_count(&t, "a/#/b", 5, true), 0);
	CU_ASSERT_EQUAL(interest_trie_count(&t, "x", 1, false), 0);
	CU_ASSERT_EQUAL(t.nodes, 0);
	CU_ASSERT_FALSE(wanted(&t, "$share/g"));
	trie_destroy(&t, NULL, NULL);
}

/* Filters and topics of up to 3 levels over a small alphabet, wildcards
 * and '$' included. */
static const char *const LEVELS[] = {"a", "b", "", "$x"};
static const char *const WILD[] = {"a", "b", "", "$x", "+", "#"};

static void random_name(char *out, size_t cap, bool filter)
{
	size_t n = 1 + (size_t)rand() % 3, at = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		const char *lv = filter ? WILD[rand() % 6] : LEVELS[rand() % 4];
		at += (size_t)snprintf(out + at, cap - at, "%s%s", i ? "/" : "", lv);
		if (filter && strcmp(lv, "#") == 0)
			break;
	}
}

#define RANDOM_FILTERS 12
#define RANDOM_ROUNDS 4000

static void test_random_against_reference(void)
{
	srand(16);
	struct trie t;
	CU_ASSERT_EQUAL_FATAL(interest_trie_init(&t), 0);
	char held[RANDOM_FILTERS][32];
	bool in[RANDOM_FILTERS] = {false};
	for (size_t i = 0; i < RANDOM_FILTERS; i++) {
		do
			random_name(held[i], sizeof held[i], true);
		while (!topic_filter_valid(held[i], strlen(held[i])));
	}
	size_t mismatches = 0;
	for (int round = 0; round < RANDOM_ROUNDS; round++) {
		size_t k = (size_t)rand() % RANDOM_FILTERS;
		CU_ASSERT_EQUAL(interest_trie_count(&t, held[k], strlen(held[k]), !in[k]), 0);
		in[k] = !in[k];
		char topic[32];
		do /* a name is at least one byte [MQTT-4.7.3-1] */
			random_name(topic, sizeof topic, false);
		while (!topic[0]);
		bool want = false;
		for (size_t i = 0; i < RANDOM_FILTERS; i++)
			want = want || (in[i] && topic_matches(held[i], strlen(held[i]), topic, strlen(topic)));
		if (wanted(&t, topic) != want && mismatches++ < 5)
			fprintf(stderr, "\ntopic '%s': trie %d, reference %d\n", topic, !want, want);
	}
	CU_ASSERT_EQUAL(mismatches, 0);
	trie_destroy(&t, NULL, NULL);
}

static struct trie *cost_trie;

static void cost_changed(void *ctx, const char *f, size_t len, bool add)
{
	(void)ctx;
	CU_ASSERT_EQUAL(interest_trie_count(cost_trie, f, len, add), 0);
}

/* What one kept filter of another node costs, set and trie together, for
 * per-device filters (each its own trie leaf: the worst common case). The
 * defaults of cluster.max_remote_filters(_bytes) are sized by it
 * (config.c): it must stay near the ~160 bytes plus the filter said there. */
#define COST_FILTERS 100000

static void test_memory_per_filter(void)
{
	size_t mem_empty = wisp_mem_used();
	struct trie t;
	CU_ASSERT_EQUAL_FATAL(interest_trie_init(&t), 0);
	cost_trie = &t;
	const struct ann_limits lim = {COST_FILTERS, 1u << 30};
	struct ann_filters s = {.changed = cost_changed};
	size_t mem0 = wisp_mem_used(), bytes = 0;
	for (int i = 0; i < COST_FILTERS; i++) {
		char f[64];
		int n = snprintf(f, sizeof f, "fleet/dev-%08d/cmd", i);
		bytes += (size_t)n;
		CU_ASSERT_EQUAL(ann_filters_add(&s, &lim, f, (size_t)n), ANN_NONE);
	}
	double per = (double)(wisp_mem_used() - mem0 - bytes) / COST_FILTERS;
	fprintf(stderr, "\n%d filters of %zu bytes: %.0f bytes each besides the filter\n", COST_FILTERS,
		bytes / COST_FILTERS, per);
	CU_ASSERT_TRUE(per < 200);
	ann_filters_free(&s);
	CU_ASSERT_EQUAL(t.nodes, 0);
	trie_destroy(&t, NULL, NULL);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem_empty);
}

static CU_TestInfo tests[] = {
	{"the match table of topic_cases.h", test_match_table},
	{"counted holders, shared groups, removal", test_counts_shared_and_removal},
	{"random sets against topic_matches", test_random_against_reference},
	{"memory per kept filter of another node", test_memory_per_filter},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_interest", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
