/*
 * Unit tests for the subscription tree (tree.c over trie.c): the spec's
 * match table, subscribe/unsubscribe/prune, several subscribers per
 * filter, a seeded random comparison with topic_matches(), 100k siblings
 * at one level, and an out-of-memory loop.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit_main.h"
#include "alloc.h"
#include "topic.h"
#include "topic_cases.h"
#include "tree.h"
#include "trie.h"

/* Subscribers are small integers disguised as pointers: index + 1. */
#define SUBSCRIBER(i) ((void *)(uintptr_t)((i) + 1))
#define INDEX_OF(p) ((size_t)(uintptr_t)(p) - 1)

struct hits {
	unsigned *count; /* per subscriber index */
	size_t n;
	size_t calls;
	uint8_t last_options;
	uint32_t last_id;
};

static void on_match(void *subscriber, uint8_t options, uint32_t subscription_id, void *ctx)
{
	struct hits *h = ctx;
	size_t i = INDEX_OF(subscriber);
	CU_ASSERT_FATAL(i < h->n);
	h->count[i]++;
	h->calls++;
	h->last_options = options;
	h->last_id = subscription_id;
}

static void hits_reset(struct hits *h)
{
	memset(h->count, 0, h->n * sizeof *h->count);
	h->calls = 0;
}

/* Splits the name and matches it, as the broker does per PUBLISH. */
static size_t match_name(const struct tree *t, const char *name, struct hits *h)
{
	struct topic_level levels[TOPIC_MAX_LEVELS_DEFAULT];
	int n = topic_split(name, strlen(name), levels, TOPIC_MAX_LEVELS_DEFAULT);
	CU_ASSERT_FATAL(n > 0);
	hits_reset(h);
	size_t calls = tree_match(t, levels, (size_t)n, on_match, h);
	CU_ASSERT_EQUAL(calls, h->calls);
	return calls;
}

static struct tree_sub *sub_str(struct tree *t, const char *filter, size_t i)
{
	struct tree_sub *s = tree_subscribe(t, filter, strlen(filter), SUBSCRIBER(i), 1, (uint32_t)i);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	return s;
}

/* Each case alone in a fresh tree. */
static void test_match_table_one_by_one(void)
{
	unsigned count[1];
	struct hits h = {count, 1, 0, 0, 0};
	for (size_t i = 0; i < MATCH_CASES_N; i++) {
		const struct match_case *c = &MATCH_CASES[i];
		struct tree *t = tree_new();
		CU_ASSERT_PTR_NOT_NULL_FATAL(t);
		sub_str(t, c->filter, 0);
		size_t got = match_name(t, c->name, &h);
		if (got != (c->match ? 1u : 0u))
			fprintf(stderr, "\n  \"%s\" vs \"%s\" (%s): %zu calls\n", c->filter, c->name, c->why, got);
		CU_ASSERT_EQUAL(got, c->match ? 1u : 0u);
		tree_free(t);
	}
}

/* All filters of the table in one tree: every name must report exactly the
 * filters topic_matches() accepts, each once. */
static void test_match_table_together(void)
{
	unsigned count[MATCH_CASES_N];
	struct hits h = {count, MATCH_CASES_N, 0, 0, 0};
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	for (size_t i = 0; i < MATCH_CASES_N; i++)
		sub_str(t, MATCH_CASES[i].filter, i);
	CU_ASSERT_EQUAL(tree_count(t), MATCH_CASES_N);
	for (size_t j = 0; j < MATCH_CASES_N; j++) {
		const char *name = MATCH_CASES[j].name;
		match_name(t, name, &h);
		for (size_t i = 0; i < MATCH_CASES_N; i++) {
			const char *f = MATCH_CASES[i].filter;
			unsigned want = topic_matches(f, strlen(f), name, strlen(name)) ? 1 : 0;
			if (count[i] != want)
				fprintf(stderr, "\n  \"%s\" vs \"%s\": %u calls\n", f, name, count[i]);
			CU_ASSERT_EQUAL(count[i], want);
		}
	}
	tree_free(t);
}

static void test_subscribe_unsubscribe_prunes(void)
{
	static const struct {
		const char *filter;
		size_t nodes_after; /* non-root nodes once it is subscribed */
	} steps[] = {
		{"a/b/c", 3}, {"a/b/+", 4}, {"a/#", 5}, {"+/b/c", 8}, {"$SYS/x", 10}, {"a/b/c/d/e", 12}, {"#", 13},
	};
	size_t n = sizeof steps / sizeof steps[0];
	struct tree_sub *subs[sizeof steps / sizeof steps[0]];
	unsigned count[sizeof steps / sizeof steps[0]];
	struct hits h = {count, n, 0, 0, 0};
	size_t mem0 = wisp_mem_used();
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	size_t mem_empty = wisp_mem_used();
	for (size_t i = 0; i < n; i++) {
		subs[i] = sub_str(t, steps[i].filter, i);
		CU_ASSERT_EQUAL(tree_debug_nodes(t), steps[i].nodes_after);
		CU_ASSERT_EQUAL(tree_count(t), i + 1);
	}
	CU_ASSERT_EQUAL(match_name(t, "a/b/c", &h), 5); /* a/b/c a/b/+ a/# +/b/c and # */
	/* Removing the deepest filter prunes exactly its own two levels. */
	tree_unsubscribe(t, subs[5]);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 11);
	/* a/b/c: node c has no child left and no subscription: pruned; b stays for a/b/+. */
	tree_unsubscribe(t, subs[0]);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 10);
	CU_ASSERT_EQUAL(match_name(t, "a/b/c", &h), 4);
	CU_ASSERT_EQUAL(count[0], 0);
	CU_ASSERT_EQUAL(count[1] + count[2] + count[3] + count[6], 4);
	tree_unsubscribe(t, subs[3]);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 7);
	tree_unsubscribe(t, subs[4]);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 5);
	tree_unsubscribe(t, subs[1]);
	tree_unsubscribe(t, subs[6]);
	tree_unsubscribe(t, subs[2]);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 0);
	CU_ASSERT_EQUAL(tree_count(t), 0);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem_empty);
	const char *names[] = {"a/b/c", "a", "$SYS/x", "a/b/c/d/e", "x"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		CU_ASSERT_EQUAL(match_name(t, names[i], &h), 0);
	tree_free(t);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem0);
}

static void test_several_subscribers_per_filter(void)
{
	unsigned count[3];
	struct hits h = {count, 3, 0, 0, 0};
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	struct tree_sub *s[3];
	for (size_t i = 0; i < 3; i++) {
		s[i] = tree_subscribe(t, "a/+", 3, SUBSCRIBER(i), (uint8_t)i, (uint32_t)(100 + i));
		CU_ASSERT_PTR_NOT_NULL_FATAL(s[i]);
		CU_ASSERT_PTR_EQUAL(tree_sub_subscriber(s[i]), SUBSCRIBER(i));
		CU_ASSERT_EQUAL(tree_sub_options(s[i]), i);
		CU_ASSERT_EQUAL(tree_sub_id(s[i]), 100 + i);
	}
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 2);
	CU_ASSERT_EQUAL(match_name(t, "a/x", &h), 3);
	CU_ASSERT(count[0] == 1 && count[1] == 1 && count[2] == 1);

	/* O(1) removal from the middle of the leaf's list. */
	tree_unsubscribe(t, s[1]);
	CU_ASSERT_EQUAL(tree_count(t), 2);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 2);
	CU_ASSERT_EQUAL(match_name(t, "a/x", &h), 2);
	CU_ASSERT(count[0] == 1 && count[1] == 0 && count[2] == 1);

	/* Updated options are what matching reports (a re-SUBSCRIBE). */
	tree_sub_set_options(s[2], 2 | 0x04, 7);
	tree_unsubscribe(t, s[0]);
	CU_ASSERT_EQUAL(match_name(t, "a/x", &h), 1);
	CU_ASSERT_EQUAL(h.last_options, 2 | 0x04);
	CU_ASSERT_EQUAL(h.last_id, 7);
	tree_unsubscribe(t, s[2]);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 0);
	tree_free(t);
}

/* The same subscriber on overlapping filters is reported once per filter. */
static void test_overlapping_filters_reported_per_filter(void)
{
	unsigned count[1];
	struct hits h = {count, 1, 0, 0, 0};
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	sub_str(t, "a/b", 0);
	sub_str(t, "a/+", 0);
	sub_str(t, "#", 0);
	sub_str(t, "a/#", 0);
	CU_ASSERT_EQUAL(match_name(t, "a/b", &h), 4);
	CU_ASSERT_EQUAL(count[0], 4);
	tree_free(t); /* frees the handles we still hold */
}

/* tree_match_filter: the subscriptions filed under exactly one filter,
 * not those of the other filters that match the same names, nor of a
 * filter only a prefix of it. */
static void test_match_filter_one_leaf(void)
{
	unsigned count[4];
	struct hits h = {count, 4, 0, 0, 0};
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	sub_str(t, "a/+", 0);
	sub_str(t, "a/#", 1);
	sub_str(t, "a/+", 2);
	sub_str(t, "a", 3);
	hits_reset(&h);
	CU_ASSERT_EQUAL(tree_match_filter(t, "a/+", 3, on_match, &h), 2);
	CU_ASSERT_EQUAL(count[0], 1);
	CU_ASSERT_EQUAL(count[2], 1);
	CU_ASSERT_EQUAL(count[1] + count[3], 0);
	hits_reset(&h);
	CU_ASSERT_EQUAL(tree_match_filter(t, "a/#", 3, on_match, &h), 1);
	CU_ASSERT_EQUAL(count[1], 1);
	hits_reset(&h);
	CU_ASSERT_EQUAL(tree_match_filter(t, "a", 1, on_match, &h), 1);
	CU_ASSERT_EQUAL(count[3], 1);
	CU_ASSERT_EQUAL(tree_match_filter(t, "a/b", 3, on_match, &h), 0); /* no such filter */
	CU_ASSERT_EQUAL(tree_match_filter(t, "b/+", 3, on_match, &h), 0);
	CU_ASSERT_EQUAL(tree_match_filter(t, "", 0, on_match, &h), 0);
	tree_free(t);
}

/* xorshift64*: deterministic across runs and platforms. */
static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 2685821657736338717ull) >> 33) % n;
}

static const char *const WORDS[] = {"a", "b", "c", "", "$a", "sport"};
#define NWORDS (sizeof WORDS / sizeof WORDS[0])
#define RND_LEN 64

static void random_name(char *out)
{
	size_t levels = 1 + rnd(4), pos = 0;
	for (size_t l = 0; l < levels; l++) {
		const char *w = l == 0 && rnd(6) == 0 ? "$SYS" : WORDS[rnd(NWORDS)];
		pos += (size_t)snprintf(out + pos, RND_LEN - pos, "%s%s", l ? "/" : "", w);
	}
	if (pos == 0) /* a lone empty level is the empty string: invalid */
		snprintf(out, RND_LEN, "x");
}

static void random_filter(char *out)
{
	size_t levels = 1 + rnd(4), pos = 0;
	for (size_t l = 0; l < levels; l++) {
		uint32_t r = rnd(20);
		const char *w = r < 5 ? "+" : (r < 8 && l == levels - 1) ? "#" : (l == 0 && r == 19) ? "$SYS" : WORDS[rnd(NWORDS)];
		pos += (size_t)snprintf(out + pos, RND_LEN - pos, "%s%s", l ? "/" : "", w);
	}
	if (pos == 0) /* a lone empty level is the empty string: invalid */
		snprintf(out, RND_LEN, "x");
}

#define RND_SUBS 1500
#define RND_NAMES 600

static void check_random(const struct tree *t, char (*filters)[RND_LEN], struct tree_sub **subs,
			 char (*names)[RND_LEN], struct hits *h)
{
	for (size_t j = 0; j < RND_NAMES; j++) {
		size_t nlen = strlen(names[j]);
		match_name(t, names[j], h);
		size_t bad = 0;
		for (size_t i = 0; i < RND_SUBS; i++) {
			unsigned want = subs[i] && topic_matches(filters[i], strlen(filters[i]), names[j], nlen);
			if (h->count[i] != want && bad++ < 3)
				fprintf(stderr, "\n  \"%s\" vs \"%s\": %u calls\n", filters[i], names[j], h->count[i]);
		}
		CU_ASSERT_EQUAL(bad, 0);
	}
}

static void test_random_against_topic_matches(void)
{
	static char filters[RND_SUBS][RND_LEN], names[RND_NAMES][RND_LEN];
	static struct tree_sub *subs[RND_SUBS];
	static unsigned count[RND_SUBS];
	struct hits h = {count, RND_SUBS, 0, 0, 0};
	rng_state = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < RND_SUBS; i++) {
		random_filter(filters[i]);
		if (!topic_filter_valid(filters[i], strlen(filters[i])))
			fprintf(stderr, "\n  invalid filter \"%s\"\n", filters[i]);
		CU_ASSERT_FATAL(topic_filter_valid(filters[i], strlen(filters[i])));
	}
	for (size_t j = 0; j < RND_NAMES; j++) {
		random_name(names[j]);
		CU_ASSERT_FATAL(topic_name_valid(names[j], strlen(names[j])));
	}
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	for (size_t i = 0; i < RND_SUBS; i++)
		subs[i] = sub_str(t, filters[i], i);
	check_random(t, filters, subs, names, &h);

	/* Remove a random half, check, put some back, check again. */
	for (size_t i = 0; i < RND_SUBS; i++)
		if (rnd(2)) {
			tree_unsubscribe(t, subs[i]);
			subs[i] = NULL;
		}
	check_random(t, filters, subs, names, &h);
	for (size_t i = 0; i < RND_SUBS; i++)
		if (!subs[i] && rnd(2))
			subs[i] = sub_str(t, filters[i], i);
	check_random(t, filters, subs, names, &h);

	for (size_t i = 0; i < RND_SUBS; i++)
		if (subs[i])
			tree_unsubscribe(t, subs[i]);
	CU_ASSERT_EQUAL(tree_count(t), 0);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 0);
	tree_free(t);
}

/* 100k distinct filters under one node: the child table grows, stays
 * correct through backward-shift deletions, and shrinks back. */
#define BIG 100000

/* Records up to two subscriber indexes per match, without touching a
 * 100k-entry array each time. */
struct few {
	size_t calls;
	size_t idx[2];
};

static void on_match_few(void *subscriber, uint8_t options, uint32_t subscription_id, void *ctx)
{
	struct few *f = ctx;
	if (f->calls < 2)
		f->idx[f->calls] = INDEX_OF(subscriber);
	f->calls++;
}

/* True when matching `name` reports exactly subscriber `i` (unless i is
 * BIG + 1, meaning none) and, if `plus`, the "big/+" subscriber BIG. */
static bool big_match_ok(const struct tree *t, const char *name, size_t i, bool plus)
{
	struct topic_level levels[4];
	int n = topic_split(name, strlen(name), levels, 4);
	struct few f = {0, {0, 0}};
	size_t calls = tree_match(t, levels, (size_t)n, on_match_few, &f);
	size_t want = (i <= BIG ? 1u : 0u) + (plus ? 1u : 0u);
	if (calls != want || f.calls != want)
		return false;
	bool saw_i = i > BIG, saw_plus = !plus;
	for (size_t k = 0; k < want; k++) {
		saw_i |= f.idx[k] == i;
		saw_plus |= f.idx[k] == BIG;
	}
	return saw_i && saw_plus;
}

static void test_100k_siblings(void)
{
	static struct tree_sub *subs[BIG];
	char buf[32];
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	size_t mem_empty = wisp_mem_used();
	for (size_t i = 0; i < BIG; i++) {
		snprintf(buf, sizeof buf, "big/%zu", i);
		subs[i] = tree_subscribe(t, buf, strlen(buf), SUBSCRIBER(i), 0, 0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(subs[i]);
	}
	struct tree_sub *plus = tree_subscribe(t, "big/+", 5, SUBSCRIBER(BIG), 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(plus);
	CU_ASSERT_EQUAL(tree_count(t), BIG + 1);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), BIG + 2);

	size_t bad = 0;
	for (size_t i = 0; i < BIG; i++) {
		snprintf(buf, sizeof buf, "big/%zu", i);
		bad += !big_match_ok(t, buf, i, true);
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_TRUE(big_match_ok(t, "big/x", BIG + 1, true));
	CU_ASSERT_TRUE(big_match_ok(t, "big/100000", BIG + 1, true));

	/* Remove the even ones: the odd ones must all still be found. */
	for (size_t i = 0; i < BIG; i += 2)
		tree_unsubscribe(t, subs[i]);
	bad = 0;
	for (size_t i = 0; i < BIG; i++) {
		snprintf(buf, sizeof buf, "big/%zu", i);
		bad += !big_match_ok(t, buf, i % 2 ? i : BIG + 1, true);
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), BIG / 2 + 2);
	tree_unsubscribe(t, plus);
	for (size_t i = 1; i < BIG; i += 2)
		tree_unsubscribe(t, subs[i]);
	CU_ASSERT_EQUAL(tree_count(t), 0);
	CU_ASSERT_EQUAL(tree_debug_nodes(t), 0);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem_empty);
	CU_ASSERT_TRUE(big_match_ok(t, "big/1", BIG + 1, false));
	tree_free(t);
}

/* tree_free releases what is still subscribed, however deep (no recursion). */
static void test_free_deep_and_wide(void)
{
	size_t mem0 = wisp_mem_used();
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	size_t len = 60001; /* "+/+/.../+": 30001 levels */
	char *deep = malloc(len);
	CU_ASSERT_FATAL(deep != NULL);
	for (size_t i = 0; i < len; i++)
		deep[i] = i % 2 ? '/' : '+';
	CU_ASSERT_PTR_NOT_NULL(tree_subscribe(t, deep, len, SUBSCRIBER(0), 0, 0));
	deep[len - 1] = '#';
	CU_ASSERT_PTR_NOT_NULL(tree_subscribe(t, deep, len, SUBSCRIBER(0), 0, 0));
	free(deep);
	char buf[32];
	for (size_t i = 0; i < 1000; i++) {
		snprintf(buf, sizeof buf, "w/%zu/x", i);
		CU_ASSERT_PTR_NOT_NULL(tree_subscribe(t, buf, strlen(buf), SUBSCRIBER(0), 0, 0));
	}
	tree_free(t);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem0);
}

/* Fail allocation N for N = 1.. until the operation succeeds; every failed
 * run must leave the tree as it was, to the byte. */
static void test_oom_subscribe_leaves_tree_unchanged(void)
{
	static const char *const existing[] = {"a/b", "a/c", "a/d", "$SYS/x"};
	static const char *const fresh[] = {"a/e/+/f/#", "$SYS/y/z", "n/e/w", "a/b", "#"};
	unsigned count[8];
	struct hits h = {count, 8, 0, 0, 0};
	for (size_t f = 0; f < sizeof fresh / sizeof fresh[0]; f++) {
		struct tree *t = tree_new();
		CU_ASSERT_PTR_NOT_NULL_FATAL(t);
		for (size_t i = 0; i < 4; i++)
			sub_str(t, existing[i], i);
		size_t mem = wisp_mem_used(), nodes = tree_debug_nodes(t);
		struct tree_sub *s = NULL;
		size_t failures = 0;
		for (uint64_t n = 1; n <= 32 && !s; n++) {
			wisp_mem_fail_after(n, 0);
			s = tree_subscribe(t, fresh[f], strlen(fresh[f]), SUBSCRIBER(4), 0, 0);
			wisp_mem_fail_after(0, 0);
			if (s)
				break;
			failures++;
			CU_ASSERT_EQUAL(wisp_mem_used(), mem);
			CU_ASSERT_EQUAL(tree_debug_nodes(t), nodes);
			CU_ASSERT_EQUAL(tree_count(t), 4);
			CU_ASSERT_EQUAL(match_name(t, "a/b", &h), 1);
		}
		CU_ASSERT_PTR_NOT_NULL(s);
		CU_ASSERT(failures >= 1);
		CU_ASSERT_EQUAL(tree_count(t), 5);
		CU_ASSERT_EQUAL(match_name(t, "a/e/q/f/g", &h), f == 0 ? 1 : f == 4 ? 1 : 0);
		tree_free(t);
	}
}

static void test_oom_tree_new(void)
{
	size_t mem = wisp_mem_used();
	struct tree *t = NULL;
	uint64_t n;
	for (n = 1; n <= 8 && !t; n++) {
		wisp_mem_fail_after(n, 1);
		t = tree_new();
		wisp_mem_fail_after(0, 0);
		if (!t)
			CU_ASSERT_EQUAL(wisp_mem_used(), mem);
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	CU_ASSERT(n > 2);
	tree_free(t);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem);
}

/* '+' and '#' children hang from a pair allocated with the first of them
 * and freed with the last, so a literal level (every leaf, most nodes)
 * stays at 51 bytes plus its level: with a level of up to 5 bytes a
 * 64-byte heap block, not 80 (issue 18). */
static void test_wildcard_pair_only_while_needed(void)
{
	unsigned count[4];
	struct hits h = {count, 4, 0, 0, 0};
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	struct tree_sub *leaf = tree_subscribe(t, "a/b", 3, SUBSCRIBER(0), 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(leaf);
	struct trie_node *a = leaf->node->parent;
	CU_ASSERT_PTR_NULL(a->wild);
	CU_ASSERT_PTR_NULL(leaf->node->wild);
	size_t mem = wisp_mem_used();
	struct tree_sub *plus = tree_subscribe(t, "a/+", 3, SUBSCRIBER(1), 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(plus);
	CU_ASSERT_PTR_NOT_NULL(a->wild);
	struct tree_sub *hash = tree_subscribe(t, "a/#", 3, SUBSCRIBER(2), 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(hash);
	CU_ASSERT_EQUAL(match_name(t, "a/b", &h), 3);
	CU_ASSERT_EQUAL(match_name(t, "a", &h), 1); /* "a/#" matches its parent [MQTT-4.7.1-2] */
	tree_unsubscribe(t, plus);
	CU_ASSERT_PTR_NOT_NULL(a->wild);
	CU_ASSERT_EQUAL(match_name(t, "a/b", &h), 2);
	tree_unsubscribe(t, hash);
	CU_ASSERT_PTR_NULL(a->wild);
	CU_ASSERT_EQUAL(match_name(t, "a/b", &h), 1);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem);
	CU_ASSERT(offsetof(struct trie_node, level) + 5 <= 56);
	tree_free(t);
}

/* A handle keeps no copy of its filter: the tree rebuilds it from the
 * leaf's path, empty levels, wildcards and the '$' root included. */
static void test_filter_from_leaf(void)
{
	static const char *const filters[] = {
		"a", "a/b/c", "/", "/a", "a/", "a//b", "+/+", "a/#", "#", "+", "$SYS/x", "$share/g/a/+", "a/b/c/d/e/f",
	};
	size_t n = sizeof filters / sizeof filters[0];
	struct tree_sub *subs[sizeof filters / sizeof filters[0]];
	struct tree *t = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	for (size_t i = 0; i < n; i++)
		subs[i] = sub_str(t, filters[i], i);
	char buf[64];
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(filters[i]);
		CU_ASSERT_EQUAL(tree_sub_filter(subs[i], buf, sizeof buf), len);
		CU_ASSERT_EQUAL(memcmp(buf, filters[i], len), 0);
		/* Too small a buffer: the length, nothing written. */
		buf[0] = '!';
		CU_ASSERT_EQUAL(tree_sub_filter(subs[i], buf, len - 1), len);
		CU_ASSERT_EQUAL(buf[0], '!');
		for (size_t j = 0; j < n; j++)
			CU_ASSERT_EQUAL(tree_sub_filter_is(subs[i], filters[j], strlen(filters[j])), i == j);
	}
	/* Prefixes and suffixes of a filter are not it. */
	CU_ASSERT_FALSE(tree_sub_filter_is(subs[1], "b/c", 3));
	CU_ASSERT_FALSE(tree_sub_filter_is(subs[1], "x/a/b/c", 7));
	CU_ASSERT_FALSE(tree_sub_filter_is(subs[1], "/a/b/c", 6));
	CU_ASSERT_FALSE(tree_sub_filter_is(subs[1], "a/b", 3));
	CU_ASSERT_FALSE(tree_sub_filter_is(subs[1], "a/bxc", 5));
	CU_ASSERT_FALSE(tree_sub_filter_is(subs[0], "", 0));
	tree_free(t);
}

static CU_TestInfo match_tests[] = {
	{"spec match table, one filter per tree [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.2-1]", test_match_table_one_by_one},
	{"spec match table, all filters in one tree", test_match_table_together},
	{"seeded random filters and names agree with topic_matches", test_random_against_topic_matches},
	{"100k distinct filters at one level", test_100k_siblings},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo sub_tests[] = {
	{"unsubscribe prunes empty nodes up to the root", test_subscribe_unsubscribe_prunes},
	{"several subscribers per filter, O(1) removal, options update", test_several_subscribers_per_filter},
	{"overlapping filters are reported once per filter", test_overlapping_filters_reported_per_filter},
	{"tree_match_filter reports one filter's subscriptions only", test_match_filter_one_leaf},
	{"tree_free of a 30001-level filter and wide nodes", test_free_deep_and_wide},
	{"a handle's filter is rebuilt from its leaf", test_filter_from_leaf},
	{"wildcard children's pair exists only while one does", test_wildcard_pair_only_while_needed},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo oom_tests[] = {
	{"OOM at every allocation of subscribe leaves the tree unchanged", test_oom_subscribe_leaves_tree_unchanged},
	{"OOM in tree_new leaks nothing", test_oom_tree_new},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"tree_match", NULL, NULL, NULL, NULL, match_tests},
	{"tree_subscribe", NULL, NULL, NULL, NULL, sub_tests},
	{"tree_oom", NULL, NULL, NULL, NULL, oom_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
