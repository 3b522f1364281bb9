/*
 * topic/activity: the dashboard's table of recently published topics.
 * Listing is one level at a time and bounded by offset + limit; the table
 * holds at most max_topics topics, evicting the least recently published;
 * values are cut to max_value bytes; rates decay; nothing leaks under
 * allocation failures.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit_main.h"
#include "activity.h"
#include "alloc.h"

struct seen {
	char names[64][32];
	char values[64][64];
	double rates[64];
	bool kids[64];
	size_t n;
};

static void collect(const struct activity_item *it, void *ctx)
{
	struct seen *s = ctx;
	if (s->n >= 64)
		return;
	snprintf(s->names[s->n], sizeof s->names[0], "%.*s", (int)it->level_len, it->level);
	snprintf(s->values[s->n], sizeof s->values[0], "%.*s", (int)it->value_len, it->has_value ? it->value : "");
	s->rates[s->n] = it->rate;
	s->kids[s->n] = it->has_children;
	s->n++;
}

static size_t list(struct activity *a, const char *prefix, size_t offset, size_t limit, struct seen *s)
{
	memset(s, 0, sizeof *s);
	return activity_children(a, prefix, prefix ? strlen(prefix) : 0, offset, limit, 1000, collect, s);
}

static int find(const struct seen *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->names[i], name) == 0)
			return (int)i;
	return -1;
}

static void note(struct activity *a, const char *topic, const char *value, uint64_t now)
{
	CU_ASSERT_EQUAL(activity_note(a, topic, strlen(topic), value, strlen(value), now), 0);
}

static void test_levels_listed_one_at_a_time(void)
{
	struct activity *a = activity_new(100, 16);
	note(a, "site/a/temp", "21.5", 0);
	note(a, "site/a/hum", "40", 0);
	note(a, "site/b/temp", "19", 0);
	note(a, "$SYS/broker/uptime", "5 seconds", 0);
	note(a, "site", "parent value", 0);
	struct seen s;
	CU_ASSERT_EQUAL(list(a, NULL, 0, 10, &s), 2); /* "site" and "$SYS": $ topics listed at the top too */
	CU_ASSERT(find(&s, "site") >= 0 && find(&s, "$SYS") >= 0);
	int i = find(&s, "site");
	CU_ASSERT_STRING_EQUAL(s.values[i], "parent value");
	CU_ASSERT_TRUE(s.kids[i]);
	CU_ASSERT_EQUAL(list(a, "site", 0, 10, &s), 2);
	CU_ASSERT_EQUAL(list(a, "site/a", 0, 10, &s), 2);
	i = find(&s, "temp");
	CU_ASSERT(i >= 0);
	CU_ASSERT_STRING_EQUAL(s.values[i], "21.5");
	CU_ASSERT_FALSE(s.kids[i]);
	CU_ASSERT_EQUAL(list(a, "nowhere", 0, 10, &s), 0);
	CU_ASSERT_EQUAL(s.n, 0);
	CU_ASSERT_EQUAL(activity_count(a), 5);
	activity_free(a);
}

/* A level with many children is listed a page at a time; the pages
 * together hold every child once. */
static void test_pages_are_bounded(void)
{
	struct activity *a = activity_new(1000, 8);
	char topic[32];
	for (int i = 0; i < 200; i++) {
		snprintf(topic, sizeof topic, "big/%d", i);
		note(a, topic, "v", 0);
	}
	struct seen s;
	bool got[200] = {0};
	size_t pages = 0;
	for (size_t off = 0; off < 200; off += 50, pages++) {
		CU_ASSERT_EQUAL(list(a, "big", off, 50, &s), 200);
		CU_ASSERT_EQUAL(s.n, 50);
		for (size_t k = 0; k < s.n; k++) {
			int idx = atoi(s.names[k]);
			CU_ASSERT_FALSE(got[idx]);
			got[idx] = true;
		}
	}
	for (int i = 0; i < 200; i++)
		CU_ASSERT_TRUE(got[i]);
	CU_ASSERT_EQUAL(list(a, "big", 190, 50, &s), 200);
	CU_ASSERT_EQUAL(s.n, 10);
	activity_free(a);
}

/* Past max_topics the least recently published topic goes. */
static void test_lru_eviction(void)
{
	struct activity *a = activity_new(3, 8);
	note(a, "a/1", "x", 0);
	note(a, "a/2", "x", 1);
	note(a, "a/3", "x", 2);
	note(a, "a/1", "y", 3); /* a/1 is recent again: a/2 is now the oldest */
	note(a, "b/4", "x", 4);
	CU_ASSERT_EQUAL(activity_count(a), 3);
	CU_ASSERT_EQUAL(activity_evicted(a), 1);
	struct seen s;
	list(a, "a", 0, 10, &s);
	CU_ASSERT(find(&s, "1") >= 0);
	CU_ASSERT(find(&s, "2") < 0);
	CU_ASSERT(find(&s, "3") >= 0);
	for (int i = 0; i < 100; i++) {
		char t[16];
		snprintf(t, sizeof t, "c/%d/x", i);
		note(a, t, "z", (uint64_t)(10 + i));
	}
	CU_ASSERT_EQUAL(activity_count(a), 3);
	CU_ASSERT_EQUAL(list(a, "a", 0, 10, &s), 0); /* emptied levels are pruned */
	CU_ASSERT_EQUAL(list(a, "c", 0, 10, &s), 3);
	activity_free(a);
}

/* Values are cut to max_value; a longer one later grows the slot up to it. */
static void test_value_bound(void)
{
	struct activity *a = activity_new(10, 6);
	note(a, "t", "ab", 0);
	note(a, "t", "0123456789", 0);
	struct seen s;
	list(a, NULL, 0, 10, &s);
	CU_ASSERT_STRING_EQUAL(s.values[0], "012345");
	activity_free(a);
	a = activity_new(10, 0);
	note(a, "t", "anything", 0);
	list(a, NULL, 0, 10, &s);
	CU_ASSERT_STRING_EQUAL(s.values[0], "");
	activity_free(a);
}

/* "/a/b" has an empty first level: a child of the top, distinct from it
 * ([MQTT-4.7.1-3]: a zero-length level is a level like any other). */
static void test_empty_first_level(void)
{
	struct activity *a = activity_new(100, 16);
	note(a, "/a/b", "lead", 0);
	note(a, "a/c", "plain", 0);
	struct seen s;
	CU_ASSERT_EQUAL(list(a, NULL, 0, 10, &s), 2);
	CU_ASSERT(find(&s, "") >= 0 && find(&s, "a") >= 0);
	CU_ASSERT_EQUAL(list(a, "", 0, 10, &s), 1);
	CU_ASSERT_STRING_EQUAL(s.names[0], "a");
	CU_ASSERT_EQUAL(list(a, "/a", 0, 10, &s), 1);
	CU_ASSERT_STRING_EQUAL(s.names[0], "b");
	CU_ASSERT_STRING_EQUAL(s.values[0], "lead");
	CU_ASSERT_EQUAL(list(a, "a", 0, 10, &s), 1);
	CU_ASSERT_STRING_EQUAL(s.names[0], "c");
	activity_free(a);
}

/* About one message a second reads about 1/s; silence decays it. */
static void test_rate(void)
{
	struct activity *a = activity_new(10, 4);
	for (uint64_t t = 0; t <= 60000; t += 1000)
		note(a, "r", "x", t);
	struct seen s;
	memset(&s, 0, sizeof s);
	activity_children(a, NULL, 0, 0, 10, 60000, collect, &s);
	CU_ASSERT(s.rates[0] > 0.9 && s.rates[0] < 1.2);
	memset(&s, 0, sizeof s);
	activity_children(a, NULL, 0, 0, 10, 120000, collect, &s);
	CU_ASSERT(s.rates[0] < 0.01);
	activity_free(a);
}

/* Allocation failure N: the note fails, the table stays consistent and
 * nothing leaks (ASan checks at exit). */
static void test_out_of_memory(void)
{
	for (uint64_t n = 1; n <= 8; n++) {
		struct activity *a = activity_new(2, 8);
		CU_ASSERT_PTR_NOT_NULL_FATAL(a);
		note(a, "x/y", "1", 0);
		wisp_mem_fail_after(n, 1);
		int rc1 = activity_note(a, "p/q/r", 5, "v", 1, 1);
		int rc2 = activity_note(a, "x/y", 3, "longer value", 12, 2);
		wisp_mem_fail_after(0, 0);
		(void)rc2;
		struct seen s;
		CU_ASSERT_EQUAL(list(a, "x", 0, 10, &s), 1);
		if (rc1 != 0)
			CU_ASSERT_EQUAL(list(a, "p", 0, 10, &s), 0);
		note(a, "p/q/r", "ok", 3);
		CU_ASSERT_EQUAL(list(a, "p/q", 0, 10, &s), 1);
		activity_free(a);
	}
}

static CU_TestInfo activity_tests[] = {
	{"levels are listed one at a time, $ topics at the top", test_levels_listed_one_at_a_time},
	{"a level is listed in bounded pages", test_pages_are_bounded},
	{"past max_topics the least recently published goes", test_lru_eviction},
	{"values are cut to max_value", test_value_bound},
	{"the rate follows the traffic and decays", test_rate},
	{"an empty first level is not the top", test_empty_first_level},
	{"out of memory: consistent, no leak", test_out_of_memory},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"activity", NULL, NULL, NULL, NULL, activity_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
