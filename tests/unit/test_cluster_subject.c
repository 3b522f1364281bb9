/*
 * The MQTT topic <-> NATS subject mapping (broker/src/cluster/subject.h):
 * the table of subject.h both ways, nats-server's own MQTT mapping where
 * it has one, the escapes for what it refuses, every short topic over a
 * small alphabet round-tripping, and every matching pair of the shared
 * match table still matching after the mapping (a node must never miss a
 * message its subscribers want; over-matching is filtered by the local
 * tree).
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "subject.h"
#include "topic.h"
#include "topic_cases.h"
#include "unit_main.h"

struct map_case {
	const char *topic;
	const char *subject; /* with prefix "" */
	const char *why;
};

static const struct map_case TOPICS[] = {
	{"a", "a", "one level"},
	{"a/b/c", "a.b.c", "'/' -> '.' (nats-server)"},
	{"a.b/c", "a//b.c", "'.' -> '//' (nats-server)"},
	{"/a", "/.a", "leading '/' (nats-server: '/.')"},
	{"a/", "a./", "trailing '/' (nats-server: './')"},
	{"a//b", "a./.b", "repeated '/' (nats-server: './.')"},
	{"/", "/./", "two empty levels"},
	{"//", "/././", "three empty levels"},
	{".", "//", "a level that is a dot"},
	{"a b", "a%20b", "space: NATS refuses it, escaped"},
	{"a\tb/c\nd", "a%09b.c%0Ad", "tab and newline escaped"},
	{"100%", "100%25", "the escape character itself"},
	{"a/*/b", "a.%2A.b", "a whole level '*' would be a NATS wildcard"},
	{"a/>", "a.%3E", "a whole level '>' would be a NATS wildcard"},
	{"a*b/c>", "a*b.c>", "'*' and '>' inside a level stay (NATS literal)"},
	{"$SYS/x", "$SYS.x", "'$' topics map like any other"},
	{"caf\xc3\xa9", "caf\xc3\xa9", "UTF-8 passes unchanged"},
	{"\x7f", "%7F", "DEL escaped"},
};

static void test_topics_both_ways(void)
{
	char buf[256];
	for (size_t i = 0; i < sizeof TOPICS / sizeof TOPICS[0]; i++) {
		const struct map_case *c = &TOPICS[i];
		ssize_t n = subject_from_topic("", c->topic, strlen(c->topic), buf, sizeof buf);
		if (n < 0 || strcmp(buf, c->subject) != 0)
			fprintf(stderr, "\n%s: '%s' -> '%s', want '%s'\n", c->why, c->topic, n < 0 ? "(error)" : buf,
				c->subject);
		CU_ASSERT_EQUAL(n, (ssize_t)strlen(c->subject));
		CU_ASSERT_STRING_EQUAL(buf, c->subject);
		n = subject_to_topic("", c->subject, strlen(c->subject), buf, sizeof buf);
		CU_ASSERT_EQUAL(n, (ssize_t)strlen(c->topic));
		CU_ASSERT_STRING_EQUAL(buf, c->topic);
	}
}

static void test_prefix(void)
{
	char buf[64];
	CU_ASSERT_EQUAL(subject_from_topic("wisp", "a/b", 3, buf, sizeof buf), 8);
	CU_ASSERT_STRING_EQUAL(buf, "wisp.a.b");
	CU_ASSERT_EQUAL(subject_to_topic("wisp", "wisp.a.b", 8, buf, sizeof buf), 3);
	CU_ASSERT_STRING_EQUAL(buf, "a/b");
	CU_ASSERT_EQUAL(subject_from_topic("x.y", "/", 1, buf, sizeof buf), 7);
	CU_ASSERT_STRING_EQUAL(buf, "x.y././");
	CU_ASSERT_EQUAL(subject_to_topic("wisp", "wispy.a", 7, buf, sizeof buf), WISP_EINVAL);
	CU_ASSERT_EQUAL(subject_to_topic("wisp", "other.a", 7, buf, sizeof buf), WISP_EINVAL);
	CU_ASSERT_EQUAL(subject_to_topic("wisp", "wisp", 4, buf, sizeof buf), WISP_EINVAL);
	CU_ASSERT_EQUAL(subject_to_topic("wisp", "wisp.", 5, buf, sizeof buf), WISP_EINVAL);
}

static void test_filters(void)
{
	static const struct {
		const char *filter, *subject;
		bool parent_too;
	} cases[] = {
		{"a/+/c", "a.*.c", false},
		{"#", ">", false},
		{"a/#", "a.>", true},   /* [MQTT-4.7.1-2] "a/#" matches "a" too */
		{"+", "*", false},
		{"+/#", "*.>", true},
		{"/#", "/.>", true},
		{"a.b/+", "a//b.*", false},
		{"a b/#", "a%20b.>", true},
	};
	char buf[64];
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		bool parent = !cases[i].parent_too;
		ssize_t n = subject_from_filter("", cases[i].filter, strlen(cases[i].filter), buf, sizeof buf, &parent);
		CU_ASSERT_EQUAL(n, (ssize_t)strlen(cases[i].subject));
		CU_ASSERT_STRING_EQUAL(buf, cases[i].subject);
		CU_ASSERT_EQUAL(parent, cases[i].parent_too);
	}
	/* A topic name never holds a wildcard. */
	CU_ASSERT_EQUAL(subject_from_topic("", "a/+", 3, buf, sizeof buf), WISP_EINVAL);
	CU_ASSERT_EQUAL(subject_from_topic("", "#", 1, buf, sizeof buf), WISP_EINVAL);
	CU_ASSERT_EQUAL(subject_from_topic("", "", 0, buf, sizeof buf), WISP_EINVAL);
}

/* Subjects this mapping never writes: each would either be a wildcard or
 * make two subjects decode to one topic. */
static void test_foreign_subjects_refused(void)
{
	static const char *const bad[] = {
		"a..b", ".a", "a.", "a.*", ">", "a///b", "a/b", "%", "%2", "%zz", "%41", "a%2Ab",
		"%2a", "a+b", "a#", "a b",
	};
	char buf[64];
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ssize_t n = subject_to_topic("", bad[i], strlen(bad[i]), buf, sizeof buf);
		if (n != WISP_EINVAL)
			fprintf(stderr, "\n'%s' decoded to '%s'\n", bad[i], buf);
		CU_ASSERT_EQUAL(n, WISP_EINVAL);
	}
}

static void test_small_buffers(void)
{
	char buf[8];
	for (size_t cap = 0; cap <= 6; cap++)
		CU_ASSERT_EQUAL(subject_from_topic("", "a b/c", 5, buf, cap), WISP_ELIMIT);
	CU_ASSERT_EQUAL(subject_from_topic("", "a b/c", 5, buf, 8), 7);
	CU_ASSERT_EQUAL(subject_to_topic("", "a%20b.c", 7, buf, 5), WISP_ELIMIT);
	CU_ASSERT_EQUAL(subject_to_topic("", "a%20b.c", 7, buf, 6), 5);
	/* SUBJECT_MAX is enough for the worst case. */
	char worst[4] = {' ', ' ', ' ', ' '};
	char out[SUBJECT_MAX(4, 4)];
	CU_ASSERT_EQUAL(subject_from_topic("wisp", worst, 4, out, sizeof out), 5 + 12);
}

/* Every topic of up to 4 bytes over an alphabet of every character class
 * the mapping treats apart: it is valid as a subject and comes back. */
static void test_every_short_topic_round_trips(void)
{
	static const char alpha[] = {'a', '/', '.', ' ', '%', '*', '>', '\n', '$'};
	enum { K = sizeof alpha };
	char topic[4], subj[SUBJECT_MAX(4, 4)], back[8];
	size_t checked = 0;
	for (size_t len = 1; len <= 4; len++) {
		size_t total = 1;
		for (size_t i = 0; i < len; i++)
			total *= K;
		for (size_t v = 0; v < total; v++) {
			size_t x = v;
			for (size_t i = 0; i < len; i++, x /= K)
				topic[i] = alpha[x % K];
			ssize_t n = subject_from_topic("p", topic, len, subj, sizeof subj);
			CU_ASSERT_FATAL(n > 0);
			for (ssize_t i = 0; i < n; i++) /* a NATS literal subject */
				CU_ASSERT(subj[i] > ' ' && subj[i] != 0x7f);
			CU_ASSERT(strstr(subj, "..") == NULL);
			CU_ASSERT(subj[n - 1] != '.');
			ssize_t m = subject_to_topic("p", subj, (size_t)n, back, sizeof back);
			CU_ASSERT_EQUAL_FATAL(m, (ssize_t)len);
			CU_ASSERT_FATAL(memcmp(back, topic, len) == 0);
			checked++;
		}
	}
	CU_ASSERT(checked > 7000);
}

/* NATS's own matching of a literal subject against a subscription. */
static bool nats_matches(const char *sub, const char *subj)
{
	for (;;) {
		const char *se = strchr(sub, '.'), *te = strchr(subj, '.');
		size_t sl = se ? (size_t)(se - sub) : strlen(sub), tl = te ? (size_t)(te - subj) : strlen(subj);
		if (sl == 1 && sub[0] == '>')
			return true;
		if (!(sl == 1 && sub[0] == '*') && (sl != tl || memcmp(sub, subj, sl) != 0))
			return false;
		if (!se || !te)
			return !se && !te;
		sub = se + 1;
		subj = te + 1;
	}
}

static void test_matches_survive_mapping(void)
{
	for (size_t i = 0; i < sizeof MATCH_CASES / sizeof MATCH_CASES[0]; i++) {
		const struct match_case *c = &MATCH_CASES[i];
		if (!c->match)
			continue;
		char fs[128], ts[128];
		bool parent = false;
		CU_ASSERT_FATAL(subject_from_filter("w", c->filter, strlen(c->filter), fs, sizeof fs, &parent) > 0);
		CU_ASSERT_FATAL(subject_from_topic("w", c->name, strlen(c->name), ts, sizeof ts) > 0);
		bool hit = nats_matches(fs, ts);
		if (!hit && parent) {
			fs[strlen(fs) - 2] = '\0';
			hit = nats_matches(fs, ts);
		}
		if (!hit)
			fprintf(stderr, "\n%s: '%s' ('%s') misses '%s' ('%s')\n", c->why, c->filter, fs, c->name, ts);
		CU_ASSERT(hit);
	}
}

static CU_TestInfo tests[] = {
	{"topic table both ways (nats-server rules, escapes)", test_topics_both_ways},
	{"subject prefix", test_prefix},
	{"filters: + -> *, # -> > and its parent [MQTT-4.7.1-2]", test_filters},
	{"subjects the mapping never writes are refused", test_foreign_subjects_refused},
	{"bounded output", test_small_buffers},
	{"every short topic round-trips as a literal subject", test_every_short_topic_round_trips},
	{"every MQTT match still matches on NATS", test_matches_survive_mapping},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_subject", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
