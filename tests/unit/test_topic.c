/*
 * Unit tests for topic.c: name and filter validity [MQTT-4.7], splitting
 * into levels, and the reference matcher against the spec's examples.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "unit_main.h"
#include "topic.h"
#include "topic_cases.h"

struct valid_case {
	const char *s;
	bool name_ok;
	bool filter_ok;
	const char *why;
};

static const struct valid_case VALID_CASES[] = {
	{"sport/tennis/player1", true, true, "plain levels"},
	{"sport/tennis/player1/#", false, true, "4.7.1.2 example; [MQTT-4.7.3-2] no wildcard in names"},
	{"sport/tennis/#", false, true, "4.7.1.2 example"},
	{"sport/tennis#", false, false, "[MQTT-4.7.1-2] # must be a whole level"},
	{"sport/tennis/#/ranking", false, false, "[MQTT-4.7.1-2] # must be the last level"},
	{"#", false, true, "4.7.1.2 # alone"},
	{"+", false, true, "4.7.1.3 + alone"},
	{"+/tennis/#", false, true, "4.7.1.3 example"},
	{"sport+", false, false, "[MQTT-4.7.1-3] + must fill a level"},
	{"sport/+/player1", false, true, "4.7.1.3 example"},
	{"/finance", true, true, "4.7.1.3 leading empty level"},
	{"+/+", false, true, "4.7.1.3 example"},
	{"/+", false, true, "4.7.1.3 example"},
	{"", false, false, "[MQTT-4.7.3-1] at least one character"},
	{"/", true, true, "4.7.3 a lone / is two empty levels"},
	{"//", true, true, "three empty levels"},
	{"a//b", true, true, "empty middle level"},
	{"a/b+", false, false, "[MQTT-4.7.1-3] + after text"},
	{"+a", false, false, "[MQTT-4.7.1-3] text after +"},
	{"++", false, false, "[MQTT-4.7.1-3] ++ is not a level wildcard"},
	{"#a", false, false, "[MQTT-4.7.1-2] text after #"},
	{"##", false, false, "[MQTT-4.7.1-2] ## is not a wildcard"},
	{"a/#/", false, false, "[MQTT-4.7.1-2] # followed by an empty level"},
	{"#/a", false, false, "[MQTT-4.7.1-2] # first but not last"},
	{"+/+/+", false, true, "several +"},
	{"+/#", false, true, "+ then #"},
	{"$SYS/#", false, true, "4.7.2 $SYS filter"},
	{"$SYS/monitor/Clients", true, true, "4.7.2 $ names are valid names"},
	{"sport tennis", true, true, "4.7.3 spaces are allowed"},
};

static void test_validity_table(void)
{
	for (size_t i = 0; i < sizeof VALID_CASES / sizeof VALID_CASES[0]; i++) {
		const struct valid_case *c = &VALID_CASES[i];
		size_t len = strlen(c->s);
		bool name_ok = topic_name_valid(c->s, len);
		bool filter_ok = topic_filter_valid(c->s, len);
		if (name_ok != c->name_ok || filter_ok != c->filter_ok)
			fprintf(stderr, "\n  \"%s\" (%s): name %d filter %d\n", c->s, c->why, name_ok, filter_ok);
		CU_ASSERT_EQUAL(name_ok, c->name_ok);
		CU_ASSERT_EQUAL(filter_ok, c->filter_ok);
	}
}

/* [MQTT-4.7.3-3] UTF-8 strings, so at most 65535 bytes. */
static void test_length_limit_65535(void)
{
	size_t max = 65535;
	char *s = malloc(max + 2);
	CU_ASSERT_FATAL(s != NULL);
	memset(s, 'a', max + 1);
	s[max + 1] = '\0';
	CU_ASSERT_TRUE(topic_name_valid(s, max));
	CU_ASSERT_TRUE(topic_filter_valid(s, max));
	CU_ASSERT_FALSE(topic_name_valid(s, max + 1));
	CU_ASSERT_FALSE(topic_filter_valid(s, max + 1));
	s[max - 1] = '#';
	s[max - 2] = '/';
	CU_ASSERT_TRUE(topic_filter_valid(s, max));
	CU_ASSERT_FALSE(topic_name_valid(s, max));
	free(s);
}

/* The length is what counts, not a NUL: validation must not read past it. */
static void test_validity_uses_length(void)
{
	CU_ASSERT_TRUE(topic_name_valid("a/b#", 3));
	CU_ASSERT_FALSE(topic_name_valid("a/b#", 4));
	CU_ASSERT_TRUE(topic_filter_valid("a/#/b", 3));
	CU_ASSERT_FALSE(topic_filter_valid("a/#/b", 5));
	CU_ASSERT_FALSE(topic_name_valid(NULL, 0));
	CU_ASSERT_FALSE(topic_filter_valid(NULL, 0));
}

struct split_case {
	const char *s;
	size_t max;
	int want; /* levels, or -1 */
	const char *levels[5];
};

static const struct split_case SPLIT_CASES[] = {
	{"a/b/c", 8, 3, {"a", "b", "c"}},
	{"a", 8, 1, {"a"}},
	{"/", 8, 2, {"", ""}},
	{"a//b", 8, 3, {"a", "", "b"}},
	{"/a/", 8, 3, {"", "a", ""}},
	{"a/b/c", 3, 3, {"a", "b", "c"}}, /* exactly at the limit */
	{"a/b/c", 2, -1, {NULL}},         /* one over */
	{"a", 0, -1, {NULL}},             /* no room at all */
	{"$SYS/x", 2, 2, {"$SYS", "x"}},
	{"+/#", 2, 2, {"+", "#"}}, /* filters split the same way */
};

static void test_split_table(void)
{
	for (size_t i = 0; i < sizeof SPLIT_CASES / sizeof SPLIT_CASES[0]; i++) {
		const struct split_case *c = &SPLIT_CASES[i];
		struct topic_level out[8];
		int n = topic_split(c->s, strlen(c->s), out, c->max);
		CU_ASSERT_EQUAL(n, c->want);
		for (int l = 0; n == c->want && l < n; l++) {
			CU_ASSERT_EQUAL(out[l].len, strlen(c->levels[l]));
			CU_ASSERT_EQUAL(memcmp(out[l].ptr, c->levels[l], out[l].len), 0);
			/* Views into the original: no copy. */
			CU_ASSERT_TRUE(out[l].ptr >= c->s && out[l].ptr <= c->s + strlen(c->s));
		}
	}
}

/* The broker bounds its stack array by TOPIC_MAX_LEVELS_HARD. */
static void test_split_hard_limit(void)
{
	static struct topic_level out[TOPIC_MAX_LEVELS_HARD];
	size_t len = TOPIC_MAX_LEVELS_HARD; /* that many '/' make one level more */
	char *s = malloc(len);
	CU_ASSERT_FATAL(s != NULL);
	memset(s, '/', len);
	CU_ASSERT_EQUAL(topic_split(s, len - 1, out, TOPIC_MAX_LEVELS_HARD), TOPIC_MAX_LEVELS_HARD);
	CU_ASSERT_EQUAL(out[TOPIC_MAX_LEVELS_HARD - 1].len, 0);
	CU_ASSERT_EQUAL(topic_split(s, len, out, TOPIC_MAX_LEVELS_HARD), -1);
	free(s);
}

/* topic_split_name is topic_name_valid then topic_split, in one pass. */
static int split_name_reference(const char *s, size_t len, struct topic_level *out, size_t max)
{
	if (!topic_name_valid(s, len))
		return TOPIC_NAME_INVALID;
	return topic_split(s, len, out, max) < 0 ? TOPIC_NAME_TOO_DEEP : topic_split(s, len, out, max);
}

static void check_split_name(const char *s, size_t len, size_t max)
{
	struct topic_level want[64], got[64];
	int w = split_name_reference(s, len, want, max);
	int g = topic_split_name(s, len, got, max);
	if (w != g)
		fprintf(stderr, "\n  \"%.*s\" max %zu: want %d got %d\n", (int)len, s, max, w, g);
	CU_ASSERT_EQUAL(g, w);
	for (int l = 0; g == w && l < g; l++) {
		CU_ASSERT_EQUAL(got[l].ptr, want[l].ptr);
		CU_ASSERT_EQUAL(got[l].len, want[l].len);
	}
}

/*
 * Every table case, then 200,000 pseudo-random names of up to 40 bytes
 * over '/', the wildcards, their neighbours in one bit ('.', '*', '"',
 * which a borrow in a word-wide compare could mistake for them), a
 * high-bit byte and a letter, with bounds from 0 to 9 levels; a wildcard
 * beyond the depth bound is still INVALID [MQTT-4.7.3-2].
 */
static void test_split_name_agrees(void)
{
	for (size_t i = 0; i < sizeof VALID_CASES / sizeof VALID_CASES[0]; i++)
		for (size_t max = 0; max < 10; max++)
			check_split_name(VALID_CASES[i].s, strlen(VALID_CASES[i].s), max);
	for (size_t i = 0; i < sizeof SPLIT_CASES / sizeof SPLIT_CASES[0]; i++)
		check_split_name(SPLIT_CASES[i].s, strlen(SPLIT_CASES[i].s), SPLIT_CASES[i].max);
	static const char alphabet[] = {'/', '+', '#', '.', '*', '"', 'a', (char)0xC3, '/', 'b'};
	uint32_t seed = 12345;
	char s[40];
	for (int round = 0; round < 200000; round++) {
		seed = seed * 1103515245u + 12345u;
		size_t len = (seed >> 8) % (sizeof s + 1);
		size_t max = (seed >> 20) % 10;
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			/* Mostly plain bytes, so that long valid names occur. */
			size_t k = (seed >> 16) % 40;
			s[i] = k < sizeof alphabet ? alphabet[k] : (char)('c' + k % 20);
		}
		check_split_name(s, len, max);
	}
	CU_ASSERT_EQUAL(topic_split_name("a/b/c/#", 7, NULL, 0), TOPIC_NAME_INVALID);
	CU_ASSERT_EQUAL(topic_split_name(NULL, 0, NULL, 8), TOPIC_NAME_INVALID);
	char *big = malloc(65536);
	CU_ASSERT_FATAL(big != NULL);
	memset(big, 'a', 65536);
	struct topic_level one[1];
	CU_ASSERT_EQUAL(topic_split_name(big, 65535, one, 1), 1);
	CU_ASSERT_EQUAL(topic_split_name(big, 65536, one, 1), TOPIC_NAME_INVALID);
	free(big);
}

/* Agrees with topic_split on every table case, and counts 32,760 levels
 * of a 32,759-byte filter without a bound (what max_topic_levels checks). */
static void test_level_count(void)
{
	for (size_t i = 0; i < sizeof SPLIT_CASES / sizeof SPLIT_CASES[0]; i++) {
		const struct split_case *c = &SPLIT_CASES[i];
		struct topic_level out[8];
		int n = topic_split(c->s, strlen(c->s), out, 8);
		CU_ASSERT_EQUAL(topic_level_count(c->s, strlen(c->s)), (size_t)n);
	}
	size_t len = 32759;
	char *s = malloc(len);
	CU_ASSERT_FATAL(s != NULL);
	memset(s, '/', len);
	CU_ASSERT_EQUAL(topic_level_count(s, len), 32760);
	CU_ASSERT_EQUAL(topic_level_count(s, 0), 1);
	free(s);
}

static void test_matches_table(void)
{
	for (size_t i = 0; i < MATCH_CASES_N; i++) {
		const struct match_case *c = &MATCH_CASES[i];
		bool got = topic_matches(c->filter, strlen(c->filter), c->name, strlen(c->name));
		if (got != c->match)
			fprintf(stderr, "\n  \"%s\" vs \"%s\" (%s): got %d\n", c->filter, c->name, c->why, got);
		CU_ASSERT_EQUAL(got, c->match);
	}
}

/* Every case's operands must be valid, or the table tests nothing. */
static void test_match_cases_are_valid(void)
{
	for (size_t i = 0; i < MATCH_CASES_N; i++) {
		CU_ASSERT_TRUE(topic_filter_valid(MATCH_CASES[i].filter, strlen(MATCH_CASES[i].filter)));
		CU_ASSERT_TRUE(topic_name_valid(MATCH_CASES[i].name, strlen(MATCH_CASES[i].name)));
	}
}

/* A filter without wildcards matches exactly the equal name. */
static void test_matches_literal_is_equality(void)
{
	const char *names[] = {"a", "a/b", "/", "$SYS", "a//", "b/a"};
	size_t n = sizeof names / sizeof names[0];
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			CU_ASSERT_EQUAL(topic_matches(names[i], strlen(names[i]), names[j], strlen(names[j])), i == j);
}

static CU_TestInfo validity_tests[] = {
	{"validity table [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.3-1] [MQTT-4.7.3-2]", test_validity_table},
	{"length limit 65535 [MQTT-4.7.3-3]", test_length_limit_65535},
	{"validation honours the length", test_validity_uses_length},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo split_tests[] = {
	{"split table, empty levels and limits", test_split_table},
	{"split at TOPIC_MAX_LEVELS_HARD", test_split_hard_limit},
	{"level count agrees with split, unbounded", test_level_count},
	{"split_name is name_valid then split, one pass", test_split_name_agrees},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo match_tests[] = {
	{"spec examples 4.7.1.2 4.7.1.3 and $ rules [MQTT-4.7.2-1]", test_matches_table},
	{"match cases are valid operands", test_match_cases_are_valid},
	{"literal filter is equality [MQTT-4.7.3-4]", test_matches_literal_is_equality},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"topic_valid", NULL, NULL, NULL, NULL, validity_tests},
	{"topic_split", NULL, NULL, NULL, NULL, split_tests},
	{"topic_matches", NULL, NULL, NULL, NULL, match_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
