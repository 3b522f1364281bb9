/*
 * Unit tests for the retained store (retained.c over trie.c): set, replace
 * and delete with release accounting, matching with '+', '#' and the '$'
 * rule against topic_matches(), caps, and an out-of-memory loop.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit_main.h"
#include "alloc.h"
#include "retained.h"
#include "topic.h"
#include "topic_cases.h"
#include "trie.h"

/* A stand-in for the broker's refcounted message. */
struct fake_msg {
	int refs;
	size_t id;
};

static size_t releases;

static void on_release(void *value)
{
	struct fake_msg *m = value;
	CU_ASSERT(m->refs > 0);
	m->refs--;
	releases++;
}

/* Collects what retained_match() reports; checks the rebuilt names. */
#define MAX_SEEN 2048
struct seen {
	size_t n;
	char names[MAX_SEEN][64];
	void *values[MAX_SEEN];
};

static void on_visit(const char *topic, size_t len, void *value, void *ctx)
{
	struct seen *s = ctx;
	CU_ASSERT_FATAL(s->n < MAX_SEEN && len < sizeof s->names[0]);
	memcpy(s->names[s->n], topic, len);
	s->names[s->n][len] = '\0';
	s->values[s->n] = value;
	s->n++;
}

static size_t match(const struct retained *r, const char *filter, struct seen *s)
{
	s->n = 0;
	size_t calls = retained_match(r, filter, strlen(filter), on_visit, s);
	CU_ASSERT_EQUAL(calls, s->n);
	return calls;
}

static int set(struct retained *r, const char *topic, struct fake_msg *m, size_t bytes)
{
	if (m)
		m->refs++; /* the caller's reference, handed over on success */
	int rc = retained_set(r, topic, strlen(topic), m, bytes);
	if (rc < 0 && m)
		m->refs--; /* not taken: still ours */
	return rc;
}

static void test_set_get_replace_delete(void)
{
	struct fake_msg a = {0, 1}, b = {0, 2};
	size_t mem0 = wisp_mem_used();
	releases = 0;
	struct retained *r = retained_new(on_release, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	size_t mem_empty = wisp_mem_used();

	CU_ASSERT_EQUAL(set(r, "s/t/p", &a, 10), 0);
	CU_ASSERT_PTR_EQUAL(retained_get(r, "s/t/p", 5), &a);
	CU_ASSERT_PTR_NULL(retained_get(r, "s/t", 3));
	CU_ASSERT_PTR_NULL(retained_get(r, "s/t/p/q", 7));
	CU_ASSERT_EQUAL(retained_count(r), 1);
	CU_ASSERT_EQUAL(retained_bytes(r), 10);
	CU_ASSERT_EQUAL(retained_debug_nodes(r), 3);

	/* Replacing releases the old value once and takes the new one. */
	CU_ASSERT_EQUAL(set(r, "s/t/p", &b, 25), 0);
	CU_ASSERT_EQUAL(releases, 1);
	CU_ASSERT_EQUAL(a.refs, 0);
	CU_ASSERT_EQUAL(b.refs, 1);
	CU_ASSERT_PTR_EQUAL(retained_get(r, "s/t/p", 5), &b);
	CU_ASSERT_EQUAL(retained_count(r), 1);
	CU_ASSERT_EQUAL(retained_bytes(r), 25);

	/* The same value again: the store now got a second reference and
	 * gives back the first. */
	CU_ASSERT_EQUAL(set(r, "s/t/p", &b, 25), 0);
	CU_ASSERT_EQUAL(b.refs, 1);
	CU_ASSERT_EQUAL(releases, 2);

	/* An intermediate level holding a value of its own. */
	CU_ASSERT_EQUAL(set(r, "s", &a, 1), 0);
	CU_ASSERT_EQUAL(retained_count(r), 2);
	CU_ASSERT_EQUAL(retained_debug_nodes(r), 3);

	/* [MQTT-3.3.1-10] a zero-length payload deletes; nodes are pruned
	 * only where nothing else needs them. */
	CU_ASSERT_EQUAL(set(r, "s/t/p", NULL, 0), 0);
	CU_ASSERT_EQUAL(b.refs, 0);
	CU_ASSERT_EQUAL(releases, 3);
	CU_ASSERT_PTR_NULL(retained_get(r, "s/t/p", 5));
	CU_ASSERT_EQUAL(retained_debug_nodes(r), 1);
	CU_ASSERT_EQUAL(retained_count(r), 1);
	CU_ASSERT_EQUAL(retained_bytes(r), 1);

	/* Deleting what is not there is fine and releases nothing. */
	CU_ASSERT_EQUAL(set(r, "s/t/p", NULL, 0), 0);
	CU_ASSERT_EQUAL(set(r, "nothing/here", NULL, 0), 0);
	CU_ASSERT_EQUAL(releases, 3);

	CU_ASSERT_EQUAL(set(r, "s", NULL, 0), 0);
	CU_ASSERT_EQUAL(retained_count(r), 0);
	CU_ASSERT_EQUAL(retained_bytes(r), 0);
	CU_ASSERT_EQUAL(retained_debug_nodes(r), 0);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem_empty);
	CU_ASSERT_EQUAL(a.refs, 0);
	retained_free(r);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem0);
}

static void test_free_releases_everything(void)
{
	struct fake_msg m[5] = {{0, 0}};
	const char *topics[] = {"a", "a/b", "$SYS/x", "/", "a/b/c/d"};
	size_t mem0 = wisp_mem_used();
	releases = 0;
	struct retained *r = retained_new(on_release, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	for (size_t i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(set(r, topics[i], &m[i], 1), 0);
	retained_free(r);
	CU_ASSERT_EQUAL(releases, 5);
	for (size_t i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(m[i].refs, 0);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem0);
}

/* A snapshot walks every topic: '#' skips '$' names [MQTT-4.7.2-1], so a
 * compaction that walked with '#' lost clients' retained '$' topics. */
static void test_each_visits_dollar_topics(void)
{
	struct fake_msg m[5] = {{0, 0}};
	const char *topics[] = {"a", "a/b", "$SYS/x", "$app/state", "/"};
	struct retained *r = retained_new(on_release, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	for (size_t i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(set(r, topics[i], &m[i], 1), 0);
	static struct seen s;
	s.n = 0;
	CU_ASSERT_EQUAL(retained_each(r, on_visit, &s), 5);
	CU_ASSERT_EQUAL_FATAL(s.n, 5);
	for (size_t i = 0; i < 5; i++) {
		size_t found = 0;
		for (size_t j = 0; j < s.n; j++)
			if (strcmp(s.names[j], topics[i]) == 0 && s.values[j] == &m[i])
				found++;
		CU_ASSERT_EQUAL(found, 1);
	}
	CU_ASSERT_EQUAL(match(r, "#", &s), 3);
	retained_free(r);
}

/* The spec's match table: each case's name stored alone, matched by its filter. */
static void test_match_table(void)
{
	static struct seen s;
	struct fake_msg m = {0, 0};
	for (size_t i = 0; i < MATCH_CASES_N; i++) {
		const struct match_case *c = &MATCH_CASES[i];
		struct retained *r = retained_new(on_release, 0, 0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(r);
		CU_ASSERT_EQUAL(set(r, c->name, &m, 1), 0);
		size_t got = match(r, c->filter, &s);
		if (got != (c->match ? 1u : 0u))
			fprintf(stderr, "\n  \"%s\" vs \"%s\" (%s): %zu calls\n", c->filter, c->name, c->why, got);
		CU_ASSERT_EQUAL(got, c->match ? 1u : 0u);
		if (got == 1)
			CU_ASSERT_STRING_EQUAL(s.names[0], c->name);
		retained_free(r);
	}
	CU_ASSERT_EQUAL(m.refs, 0);
}

/* Compares one filter's report with topic_matches() over all stored names:
 * each matching name exactly once, with its own value, nothing else. */
static void check_filter(const struct retained *r, const char *filter, const char *const *names, size_t n,
			 struct fake_msg *msgs, struct seen *s)
{
	match(r, filter, s);
	size_t want = 0;
	for (size_t i = 0; i < n; i++) {
		if (!msgs[i].refs)
			continue;
		bool m = topic_matches(filter, strlen(filter), names[i], strlen(names[i]));
		size_t found = 0;
		for (size_t k = 0; k < s->n; k++)
			if (strcmp(s->names[k], names[i]) == 0) {
				found++;
				CU_ASSERT_PTR_EQUAL(s->values[k], &msgs[i]);
			}
		if (found != (m ? 1u : 0u))
			fprintf(stderr, "\n  \"%s\" vs \"%s\": seen %zu times\n", filter, names[i], found);
		CU_ASSERT_EQUAL(found, m ? 1u : 0u);
		want += m;
	}
	CU_ASSERT_EQUAL(s->n, want);
}

/* All names of the table stored together, every filter of the table. */
static void test_match_table_together(void)
{
	static struct seen s;
	static const char *names[MATCH_CASES_N];
	static struct fake_msg msgs[MATCH_CASES_N];
	size_t n = 0;
	struct retained *r = retained_new(on_release, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	for (size_t i = 0; i < MATCH_CASES_N; i++) {
		if (retained_get(r, MATCH_CASES[i].name, strlen(MATCH_CASES[i].name)))
			continue; /* the table repeats names */
		names[n] = MATCH_CASES[i].name;
		CU_ASSERT_EQUAL(set(r, names[n], &msgs[n], 1), 0);
		n++;
	}
	for (size_t i = 0; i < MATCH_CASES_N; i++)
		check_filter(r, MATCH_CASES[i].filter, names, n, msgs, &s);
	check_filter(r, "#", names, n, msgs, &s);
	check_filter(r, "+", names, n, msgs, &s);
	check_filter(r, "$SYS/#", names, n, msgs, &s);
	retained_free(r);
}

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
#define RND_LEN 48

static void random_topic(char *out, bool filter)
{
	size_t levels = 1 + rnd(4), pos = 0;
	for (size_t l = 0; l < levels; l++) {
		uint32_t r = rnd(20);
		const char *w = WORDS[rnd(NWORDS)];
		if (filter && r < 5)
			w = "+";
		else if (filter && r < 8 && l == levels - 1)
			w = "#";
		else if (l == 0 && r == 19)
			w = "$SYS";
		pos += (size_t)snprintf(out + pos, RND_LEN - pos, "%s%s", l ? "/" : "", w);
	}
	if (pos == 0)
		snprintf(out, RND_LEN, "x");
}

#define RND_NAMES 700
#define RND_FILTERS 700

static void test_random_against_topic_matches(void)
{
	static char names[RND_NAMES][RND_LEN], filter[RND_LEN];
	static const char *name_ptrs[RND_NAMES];
	static struct fake_msg msgs[RND_NAMES];
	static struct seen s;
	rng_state = 0x2545f4914f6cdd1dull;
	releases = 0;
	struct retained *r = retained_new(on_release, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	for (size_t i = 0; i < RND_NAMES; i++) {
		random_topic(names[i], false);
		name_ptrs[i] = names[i];
		CU_ASSERT_FATAL(topic_name_valid(names[i], strlen(names[i])));
		/* A repeated name replaces: only the last one keeps a reference. */
		CU_ASSERT_EQUAL(set(r, names[i], &msgs[i], 1), 0);
	}
	for (int round = 0; round < 2; round++) {
		for (size_t f = 0; f < RND_FILTERS; f++) {
			random_topic(filter, true);
			CU_ASSERT_FATAL(topic_filter_valid(filter, strlen(filter)));
			check_filter(r, filter, name_ptrs, RND_NAMES, msgs, &s);
		}
		/* Delete about half, then compare again. */
		for (size_t i = 0; i < RND_NAMES && round == 0; i++)
			if (msgs[i].refs && rnd(2))
				CU_ASSERT_EQUAL(set(r, names[i], NULL, 0), 0);
	}
	retained_free(r);
	for (size_t i = 0; i < RND_NAMES; i++)
		CU_ASSERT_EQUAL(msgs[i].refs, 0);
}

static void count_visit(const char *topic, size_t len, void *value, void *ctx)
{
	(*(size_t *)ctx)++;
}

/* 10k retained names under one level: '+' visits them all, a literal one. */
static void test_wide_level(void)
{
	enum { WIDE = 10000 };
	static struct fake_msg msgs[WIDE];
	static struct seen s;
	char buf[32];
	struct retained *r = retained_new(on_release, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	for (size_t i = 0; i < WIDE; i++) {
		snprintf(buf, sizeof buf, "w/%zu", i);
		CU_ASSERT_EQUAL(set(r, buf, &msgs[i], 1), 0);
	}
	size_t visits = 0;
	CU_ASSERT_EQUAL(retained_match(r, "w/+", 3, count_visit, &visits), WIDE);
	CU_ASSERT_EQUAL(visits, WIDE);
	visits = 0;
	CU_ASSERT_EQUAL(retained_match(r, "#", 1, count_visit, &visits), WIDE);
	CU_ASSERT_EQUAL(match(r, "w/1234", &s), 1);
	CU_ASSERT_PTR_EQUAL(s.values[0], &msgs[1234]);
	CU_ASSERT_EQUAL(match(r, "+/9999", &s), 1);
	retained_free(r);
}

static void test_caps_count_and_bytes(void)
{
	struct fake_msg m[4] = {{0, 0}};
	releases = 0;
	struct retained *r = retained_new(on_release, 2, 100);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(set(r, "a", &m[0], 40), 0);
	CU_ASSERT_EQUAL(set(r, "b", &m[1], 40), 0);
	size_t mem = wisp_mem_used();
	/* Over the count: refused, value not taken, nothing allocated. */
	CU_ASSERT_EQUAL(set(r, "c/d", &m[2], 1), RETAINED_OVER_COUNT);
	CU_ASSERT_EQUAL(m[2].refs, 0);
	CU_ASSERT_PTR_NULL(retained_get(r, "c/d", 3));
	CU_ASSERT_EQUAL(wisp_mem_used(), mem);
	/* Replacing does not add to the count; bytes are re-counted. */
	CU_ASSERT_EQUAL(set(r, "a", &m[2], 60), 0);
	CU_ASSERT_EQUAL(m[0].refs, 0);
	CU_ASSERT_EQUAL(retained_bytes(r), 100);
	/* Over the bytes by one: refused, the old value stays. */
	CU_ASSERT_EQUAL(set(r, "b", &m[3], 41), RETAINED_OVER_BYTES);
	CU_ASSERT_EQUAL(m[3].refs, 0);
	CU_ASSERT_PTR_EQUAL(retained_get(r, "b", 1), &m[1]);
	CU_ASSERT_EQUAL(retained_bytes(r), 100);
	CU_ASSERT_EQUAL(retained_count(r), 2);
	/* Deleting frees room. */
	CU_ASSERT_EQUAL(set(r, "b", NULL, 0), 0);
	CU_ASSERT_EQUAL(set(r, "c/d", &m[3], 40), 0);
	CU_ASSERT_EQUAL(retained_count(r), 2);
	CU_ASSERT_EQUAL(retained_bytes(r), 100);
	/* A size that would overflow the total is refused, not wrapped. */
	CU_ASSERT_EQUAL(set(r, "c/d", &m[1], SIZE_MAX), RETAINED_OVER_BYTES);
	retained_free(r);
	for (size_t i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(m[i].refs, 0);
}

/* Values set with bytes 0 (the broker's own $SYS figures) use neither cap:
 * they are stored on a full store, and a full store of them leaves the caps
 * to charged values; they still count in retained_count(). */
static void test_exempt_values_use_no_cap(void)
{
	struct fake_msg m[5] = {{0, 0}};
	struct retained *r = retained_new(on_release, 1, 50);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(set(r, "$SYS/a", &m[0], 0), 0);
	CU_ASSERT_EQUAL(set(r, "$SYS/b", &m[1], 0), 0);
	CU_ASSERT_EQUAL(set(r, "x", &m[2], 50), 0);
	CU_ASSERT_EQUAL(set(r, "y", &m[3], 1), RETAINED_OVER_COUNT);
	CU_ASSERT_EQUAL(set(r, "$SYS/a", &m[3], 0), 0); /* replacing an exempt value */
	CU_ASSERT_EQUAL(set(r, "$SYS/c", &m[4], 0), 0);
	CU_ASSERT_EQUAL(retained_count(r), 4);
	CU_ASSERT_EQUAL(retained_bytes(r), 50);
	/* Deleting exempt values frees no room for charged ones... */
	CU_ASSERT_EQUAL(set(r, "$SYS/b", NULL, 0), 0);
	CU_ASSERT_EQUAL(set(r, "y", &m[1], 1), RETAINED_OVER_COUNT);
	/* ...deleting a charged one does. */
	CU_ASSERT_EQUAL(set(r, "x", NULL, 0), 0);
	CU_ASSERT_EQUAL(set(r, "y", &m[1], 1), 0);
	CU_ASSERT_EQUAL(retained_count(r), 3);
	retained_free(r);
	for (size_t i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(m[i].refs, 0);
}

static void test_unlimited_bytes_overflow_refused(void)
{
	struct fake_msg m[2] = {{0, 0}};
	struct retained *r = retained_new(on_release, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(set(r, "a", &m[0], SIZE_MAX - 1), 0);
	CU_ASSERT_EQUAL(set(r, "b", &m[1], 2), RETAINED_OVER_BYTES);
	CU_ASSERT_EQUAL(m[1].refs, 0);
	CU_ASSERT_EQUAL(retained_bytes(r), SIZE_MAX - 1);
	retained_free(r);
}

/* Names of more than TOPIC_MAX_LEVELS_HARD levels are refused (they bound
 * the recursion of retained_match()); exactly that many are fine, and a
 * '#' walk over them works. */
static void test_level_cap(void)
{
	struct fake_msg m = {0, 0};
	size_t levels = TOPIC_MAX_LEVELS_HARD, len = 2 * levels - 1;
	char *s = malloc(len + 3);
	CU_ASSERT_FATAL(s != NULL);
	for (size_t i = 0; i < len; i++)
		s[i] = i % 2 ? '/' : 'x';
	s[len] = '\0';
	struct retained *r = retained_new(on_release, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(set(r, s, &m, 1), 0);
	size_t visits = 0;
	CU_ASSERT_EQUAL(retained_match(r, "#", 1, count_visit, &visits), 1);
	CU_ASSERT_EQUAL(retained_match(r, s, len, count_visit, &visits), 1);
	s[len] = '/';
	s[len + 1] = 'x';
	s[len + 2] = '\0';
	CU_ASSERT_EQUAL(set(r, s, &m, 1), -1);
	CU_ASSERT_EQUAL(m.refs, 1);
	retained_free(r);
	CU_ASSERT_EQUAL(m.refs, 0);
	free(s);
}

/* Empty or over-long topics are never stored and match nothing. */
static void test_bad_lengths(void)
{
	struct fake_msg m = {0, 0};
	struct retained *r = retained_new(on_release, 0, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL(retained_set(r, "", 0, &m, 1), -1);
	CU_ASSERT_EQUAL(retained_set(r, "a", 65536, &m, 1), -1);
	CU_ASSERT_PTR_NULL(retained_get(r, "", 0));
	size_t visits = 0;
	CU_ASSERT_EQUAL(retained_match(r, "", 0, count_visit, &visits), 0);
	CU_ASSERT_EQUAL(retained_count(r), 0);
	retained_free(r);
}

/* Fail allocation N for N = 1.. until the set succeeds: every failed run
 * returns -1, keeps the caller's reference and leaves the store as it was. */
static void test_oom_set_leaves_store_unchanged(void)
{
	static const char *const existing[] = {"a/b", "a/c", "a/d", "$SYS/x"};
	static const char *const fresh[] = {"a/e/f/g", "$SYS/y/z", "n", "a/b/c", "a/b"};
	struct fake_msg old[4] = {{0, 0}}, m = {0, 0};
	for (size_t f = 0; f < sizeof fresh / sizeof fresh[0]; f++) {
		releases = 0;
		struct retained *r = retained_new(on_release, 0, 0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(r);
		for (size_t i = 0; i < 4; i++)
			CU_ASSERT_EQUAL(set(r, existing[i], &old[i], 1), 0);
		size_t mem = wisp_mem_used(), nodes = retained_debug_nodes(r);
		int rc = -1;
		size_t failures = 0;
		for (uint64_t n = 1; n <= 32; n++) {
			wisp_mem_fail_after(n, 0);
			rc = set(r, fresh[f], &m, 7);
			wisp_mem_fail_after(0, 0);
			if (rc == 0)
				break;
			failures++;
			CU_ASSERT_EQUAL(m.refs, 0);
			CU_ASSERT_EQUAL(wisp_mem_used(), mem);
			CU_ASSERT_EQUAL(retained_debug_nodes(r), nodes);
			CU_ASSERT_EQUAL(retained_count(r), 4);
			CU_ASSERT_EQUAL(retained_bytes(r), 4);
		}
		CU_ASSERT_EQUAL(rc, 0);
		/* Replacing an existing name needs no memory at all. */
		CU_ASSERT(failures >= (f == 4 ? 0u : 1u));
		CU_ASSERT_PTR_EQUAL(retained_get(r, fresh[f], strlen(fresh[f])), &m);
		retained_free(r);
		CU_ASSERT_EQUAL(m.refs, 0);
	}
}

static void test_oom_retained_new(void)
{
	size_t mem = wisp_mem_used();
	struct retained *r = NULL;
	uint64_t n;
	for (n = 1; n <= 8 && !r; n++) {
		wisp_mem_fail_after(n, 1);
		r = retained_new(on_release, 0, 0);
		wisp_mem_fail_after(0, 0);
		if (!r)
			CU_ASSERT_EQUAL(wisp_mem_used(), mem);
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT(n > 2);
	retained_free(r);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem);
}

static CU_TestInfo store_tests[] = {
	{"set, get, replace, delete [MQTT-3.3.1-10] with release accounting", test_set_get_replace_delete},
	{"retained_free releases every value", test_free_releases_everything},
	{"retained_each visits '$' topics too, '#' does not [MQTT-4.7.2-1]", test_each_visits_dollar_topics},
	{"empty and over-long topics", test_bad_lengths},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo match_tests[] = {
	{"spec match table [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.2-1]", test_match_table},
	{"all table names in one store, every filter", test_match_table_together},
	{"seeded random names and filters agree with topic_matches", test_random_against_topic_matches},
	{"10k names at one level", test_wide_level},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo cap_tests[] = {
	{"count and byte caps refuse without taking the value", test_caps_count_and_bytes},
	{"values set with bytes 0 use neither cap", test_exempt_values_use_no_cap},
	{"byte total never wraps", test_unlimited_bytes_overflow_refused},
	{"names over TOPIC_MAX_LEVELS_HARD levels are refused", test_level_cap},
	{"OOM at every allocation of set leaves the store unchanged", test_oom_set_leaves_store_unchanged},
	{"OOM in retained_new leaks nothing", test_oom_retained_new},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"retained_store", NULL, NULL, NULL, NULL, store_tests},
	{"retained_match", NULL, NULL, NULL, NULL, match_tests},
	{"retained_limits", NULL, NULL, NULL, NULL, cap_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
