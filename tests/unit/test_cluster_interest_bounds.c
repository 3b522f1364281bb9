/*
 * What a node accepts from the other nodes' interest announcements
 * (broker/src/cluster/announce.h): the parse refuses whatever a Wisp node
 * does not send (a table, plus every truncation of a snapshot part), and
 * the filters kept for one node stay within cluster.max_remote_filters and
 * max_remote_filter_bytes: past either the node is "over" (its set dropped,
 * the caller sends it everything), once per episode, until a snapshot of
 * it fits again, asked for once its set shrank under 7/8 of the limits.
 * Memory: nothing kept while over, nothing leaked when allocations fail.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "announce.h"
#include "unit_main.h"

/* ---- parse ---- */

/* 256 bytes, one past ANN_NODE_MAX; filled by test_parse_table. */
static char long_node[ANN_NODE_MAX + 2];
#define LONG_NODE long_node

struct parse_case {
	const char *why;
	struct ann_headers h;
	const char *data;
	size_t len;
	bool ok;
};

/* A case names what differs from a good announcement of node "b": node,
 * run and seq left NULL get their good value, ABSENT stands for a missing
 * header. */
static const char absent_mark;
#define ABSENT (&absent_mark)
#define H(kind_, ...) {.kind = kind_, __VA_ARGS__}

static struct ann_headers headers(struct ann_headers h)
{
	h.node = h.node ? h.node : "b";
	h.run = h.run ? h.run : "00000000000000ab";
	h.seq = h.seq ? h.seq : "7";
	const char **f[] = {&h.node, &h.run, &h.seq, &h.kind, &h.part, &h.last, &h.to, &h.every};
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
		if (*f[i] == ABSENT)
			*f[i] = NULL;
	return h;
}

static const struct parse_case PARSE_CASES[] = {
	{"add of a filter", H("add"), "a/+/c", 5, true},
	{"add of a shared filter", H("add"), "$share/g/a/#", 12, true},
	{"del of a filter", H("del"), "a/#", 3, true},
	{"snap, one part, last", H("snap", .part = "0", .last = "1"), "a\0b/#\0", 6, true},
	{"snap, empty set", H("snap", .part = "0", .last = "1"), "", 0, true},
	{"snap, a middle part", H("snap", .part = "4294967295"), "x\0", 2, true},
	{"hello", H("hello"), NULL, 0, true},
	{"sync", H("sync", .to = "a"), NULL, 0, true},
	{"beat with its interval", H("beat", .every = "3600"), NULL, 0, true},
	{"beat without", H("beat"), NULL, 0, true},
	{"bye", H("bye"), NULL, 0, true},
	{"seq at its maximum", H("beat", .seq = "18446744073709551615"), NULL, 0, true},
	{"node at its longest", H("bye", .node = LONG_NODE + 1), NULL, 0, true},

	{"kind unknown", H("flood"), NULL, 0, false},
	{"kind missing", H(ABSENT), NULL, 0, false},
	{"node missing", H("bye", .node = ABSENT), NULL, 0, false},
	{"node empty", H("bye", .node = ""), NULL, 0, false},
	{"node too long", H("bye", .node = LONG_NODE), NULL, 0, false},
	{"node with a control byte", H("bye", .node = "b\nFAKE"), NULL, 0, false},
	{"run missing", H("bye", .run = ABSENT), NULL, 0, false},
	{"run too long", H("bye", .run = "000000000000000000000000"), NULL, 0, false},
	{"seq missing", H("bye", .seq = ABSENT), NULL, 0, false},
	{"seq signed", H("bye", .seq = "-1"), NULL, 0, false},
	{"seq with junk", H("bye", .seq = "1a"), NULL, 0, false},
	{"seq overflowing", H("bye", .seq = "18446744073709551616"), NULL, 0, false},
	{"seq of 21 digits", H("bye", .seq = "000000000000000000001"), NULL, 0, false},
	{"add without a filter", H("add"), NULL, 0, false},
	{"add of a NUL", H("add"), "a\0b", 3, false},
	{"add of # not last [MQTT-4.7.1-2]", H("add"), "a/#/b", 5, false},
	{"add of + in a level [MQTT-4.7.1-3]", H("add"), "a+/b", 4, false},
	{"del of an invalid filter", H("del"), "#/", 2, false},
	{"snap without a part", H("snap", .last = "1"), "a\0", 2, false},
	{"snap with a junk part", H("snap", .part = "x"), "a\0", 2, false},
	{"snap part past 32 bits", H("snap", .part = "4294967296"), "a\0", 2, false},
	{"snap Last other than 1", H("snap", .part = "0", .last = "yes"), "a\0", 2, false},
	{"snap not ended by a NUL", H("snap", .part = "0"), "a\0b", 3, false},
	{"snap with an empty filter", H("snap", .part = "0"), "a\0\0", 3, false},
	{"snap with an invalid filter", H("snap", .part = "0"), "a\0#/x\0", 6, false},
	{"hello with a payload", H("hello"), "x", 1, false},
	{"bye with a payload", H("bye"), "x", 1, false},
	{"sync without Wisp-To", H("sync"), NULL, 0, false},
	{"sync to a bad name", H("sync", .to = "\x01"), NULL, 0, false},
	{"beat every 0", H("beat", .every = "0"), NULL, 0, false},
	{"beat every past 3600", H("beat", .every = "3601"), NULL, 0, false},
	{"beat with a payload", H("beat"), "x", 1, false},
};

static void test_parse_table(void)
{
	memset(long_node, 'n', ANN_NODE_MAX + 1);
	for (size_t i = 0; i < sizeof PARSE_CASES / sizeof PARSE_CASES[0]; i++) {
		const struct parse_case *c = &PARSE_CASES[i];
		struct ann a;
		struct ann_headers h = headers(c->h);
		const char *why = ann_parse(&h, c->data, c->len, &a);
		if ((why == NULL) != c->ok)
			fprintf(stderr, "\n%s: %s\n", c->why, why ? why : "accepted");
		CU_ASSERT_EQUAL(why == NULL, c->ok);
	}
}

static void test_parse_fields(void)
{
	struct ann_headers h = headers((struct ann_headers)H("snap", .part = "3", .last = "1", .seq = "42"));
	struct ann a;
	CU_ASSERT_PTR_NULL_FATAL(ann_parse(&h, "a/b\0$share/g/#\0", 15, &a));
	CU_ASSERT_EQUAL(a.kind, ANN_SNAP);
	CU_ASSERT_EQUAL(a.seq, 42);
	CU_ASSERT_EQUAL(a.part, 3);
	CU_ASSERT_TRUE(a.last);
	CU_ASSERT_STRING_EQUAL(a.node, "b");
	const char *f;
	size_t at = 0, len;
	CU_ASSERT_TRUE(ann_snap_next(&a, &at, &f, &len));
	CU_ASSERT_TRUE(len == 3 && memcmp(f, "a/b", 3) == 0);
	CU_ASSERT_TRUE(ann_snap_next(&a, &at, &f, &len));
	CU_ASSERT_TRUE(len == 10 && memcmp(f, "$share/g/#", 10) == 0);
	CU_ASSERT_FALSE(ann_snap_next(&a, &at, &f, &len));
	struct ann_headers beat = headers((struct ann_headers)H("beat", .every = "5"));
	CU_ASSERT_PTR_NULL(ann_parse(&beat, NULL, 0, &a));
	CU_ASSERT_EQUAL(a.every, 5);
}

/* A snapshot part as large as a node writes passes; one byte more does not. */
static void test_parse_part_size(void)
{
	char *buf = malloc(ANN_SNAP_PART_MAX + 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
	memset(buf, 'x', ANN_SNAP_PART_MAX + 1);
	/* Filters of 1000 bytes, each ended by a NUL, filling it exactly. */
	for (size_t at = 1000; at < ANN_SNAP_PART_MAX; at += 1001)
		buf[at] = '\0';
	buf[ANN_SNAP_PART_MAX - 1] = '\0';
	struct ann_headers h = headers((struct ann_headers)H("snap", .part = "0"));
	struct ann a;
	CU_ASSERT_PTR_NULL(ann_parse(&h, buf, ANN_SNAP_PART_MAX, &a));
	buf[ANN_SNAP_PART_MAX] = '\0';
	CU_ASSERT_PTR_NOT_NULL(ann_parse(&h, buf, ANN_SNAP_PART_MAX + 1, &a));
	free(buf);
}

/* Every truncation of a valid part is refused, or (cut right after a NUL)
 * read as that many whole filters: never a partial one. */
static void test_parse_every_truncation(void)
{
	static const char part[] = "a/b\0+/x/#\0$share/g/c\0z\0";
	size_t full = sizeof part - 1;
	struct ann_headers h = headers((struct ann_headers)H("snap", .part = "1"));
	for (size_t cut = 0; cut <= full; cut++) {
		struct ann a;
		const char *why = ann_parse(&h, part, cut, &a);
		bool at_boundary = cut == 0 || part[cut - 1] == '\0';
		CU_ASSERT_EQUAL(why == NULL, at_boundary);
		if (why)
			continue;
		size_t at = 0, len, n = 0;
		const char *f;
		while (ann_snap_next(&a, &at, &f, &len))
			n++;
		size_t want = 0;
		for (size_t i = 0; i < cut; i++)
			want += part[i] == '\0';
		CU_ASSERT_EQUAL(n, want);
	}
}

/* ---- the bound ---- */

struct seen {
	long kept; /* filters reported kept minus dropped */
};

static void on_changed(void *ctx, const char *f, size_t len, bool add)
{
	(void)f;
	(void)len;
	((struct seen *)ctx)->kept += add ? 1 : -1;
}

static enum ann_effect add_n(struct ann_filters *s, const struct ann_limits *lim, int from, int to)
{
	enum ann_effect last = ANN_NONE, e;
	for (int i = from; i < to; i++) {
		char f[32];
		int n = snprintf(f, sizeof f, "dev/%d/cmd", i);
		if ((e = ann_filters_add(s, lim, f, (size_t)n)) != ANN_NONE)
			last = e;
	}
	return last;
}

static enum ann_effect del_one(struct ann_filters *s, const struct ann_limits *lim, int i)
{
	char f[32];
	int n = snprintf(f, sizeof f, "dev/%d/cmd", i);
	return ann_filters_del(s, lim, f, (size_t)n);
}

static void test_bound_over_and_back(void)
{
	const struct ann_limits lim = {.max_filters = 8, .max_bytes = 1 << 20};
	struct seen seen = {0};
	struct ann_filters s = {.changed = on_changed, .ctx = &seen};
	size_t mem0 = wisp_mem_used();
	CU_ASSERT_EQUAL(add_n(&s, &lim, 0, 8), ANN_NONE);
	CU_ASSERT_EQUAL(add_n(&s, &lim, 0, 8), ANN_NONE); /* repeats count once */
	CU_ASSERT_EQUAL(s.kept, 8);
	CU_ASSERT_EQUAL(seen.kept, 8);
	CU_ASSERT_FALSE(s.over);
	/* The ninth puts it over: its set dropped, reported once. */
	CU_ASSERT_EQUAL(add_n(&s, &lim, 8, 9), ANN_OVER_BEGIN);
	CU_ASSERT_TRUE(s.over && s.episode);
	CU_ASSERT_EQUAL(s.kept, 0);
	CU_ASSERT_EQUAL(seen.kept, 0);
	CU_ASSERT_EQUAL(s.n, 9);
	/* Many more while over: counted, nothing kept, nothing said. */
	CU_ASSERT_EQUAL(add_n(&s, &lim, 9, 5000), ANN_NONE);
	CU_ASSERT_EQUAL(s.kept, 0);
	CU_ASSERT_TRUE(wisp_mem_used() - mem0 < 1024); /* the empty bucket array at most */
	/* Shrinking: asked for a snapshot once, under 7/8 of the limit. */
	int i = 4999;
	for (; s.n > 8; i--)
		CU_ASSERT_EQUAL(del_one(&s, &lim, i), ANN_NONE);
	CU_ASSERT_EQUAL(del_one(&s, &lim, i--), ANN_MAY_FIT); /* 7 */
	CU_ASSERT_EQUAL(del_one(&s, &lim, i--), ANN_NONE);
	/* Its snapshot fits: kept again, the episode ends. */
	ann_filters_snap_begin(&s);
	CU_ASSERT_FALSE(s.over);
	CU_ASSERT_EQUAL(add_n(&s, &lim, 0, 6), ANN_NONE);
	CU_ASSERT_EQUAL(ann_filters_snap_end(&s), ANN_OVER_END);
	CU_ASSERT_FALSE(s.episode);
	CU_ASSERT_EQUAL(seen.kept, 6);
	/* Over again: a new episode. A snapshot still too big keeps it (not
	 * reported again), and another that fits ends it. */
	CU_ASSERT_EQUAL(add_n(&s, &lim, 100, 103), ANN_OVER_BEGIN);
	ann_filters_snap_begin(&s);
	CU_ASSERT_EQUAL(add_n(&s, &lim, 0, 20), ANN_NONE);
	CU_ASSERT_TRUE(s.over);
	CU_ASSERT_EQUAL(ann_filters_snap_end(&s), ANN_NONE);
	ann_filters_snap_begin(&s);
	CU_ASSERT_EQUAL(add_n(&s, &lim, 0, 8), ANN_NONE);
	CU_ASSERT_EQUAL(ann_filters_snap_end(&s), ANN_OVER_END);
	ann_filters_free(&s);
	CU_ASSERT_EQUAL(seen.kept, 0);
	CU_ASSERT_EQUAL(wisp_mem_used(), mem0);
}

static void test_bound_bytes(void)
{
	const struct ann_limits lim = {.max_filters = 1000, .max_bytes = 10};
	struct seen seen = {0};
	struct ann_filters s = {.changed = on_changed, .ctx = &seen};
	CU_ASSERT_EQUAL(ann_filters_add(&s, &lim, "aaaaa", 5), ANN_NONE);
	CU_ASSERT_EQUAL(ann_filters_add(&s, &lim, "bbbbb", 5), ANN_NONE);
	CU_ASSERT_EQUAL(s.kept_bytes, 10);
	CU_ASSERT_EQUAL(ann_filters_add(&s, &lim, "c", 1), ANN_OVER_BEGIN);
	CU_ASSERT_EQUAL(s.bytes, 11);
	CU_ASSERT_EQUAL(s.kept_bytes, 0);
	/* 7/8 of 10 bytes is 9 (integer): under it after one del. */
	CU_ASSERT_EQUAL(ann_filters_del(&s, &lim, "aaaaa", 5), ANN_MAY_FIT);
	/* A del of what was never announced (only a fake sends it) cannot
	 * make the count wrap. */
	for (int k = 0; k < 5; k++)
		ann_filters_del(&s, &lim, "zzzzzzzzzzzz", 12);
	CU_ASSERT_EQUAL(s.n, 0);
	CU_ASSERT_EQUAL(s.bytes, 0);
	ann_filters_free(&s);
	CU_ASSERT_EQUAL(seen.kept, 0);
}

/* Removal while within the limits follows the set; an unknown del is a no-op. */
static void test_within_limits(void)
{
	const struct ann_limits lim = {.max_filters = 100, .max_bytes = 1000};
	struct seen seen = {0};
	struct ann_filters s = {.changed = on_changed, .ctx = &seen};
	CU_ASSERT_EQUAL(add_n(&s, &lim, 0, 10), ANN_NONE);
	CU_ASSERT_EQUAL(del_one(&s, &lim, 3), ANN_NONE);
	CU_ASSERT_EQUAL(del_one(&s, &lim, 3), ANN_NONE);
	CU_ASSERT_EQUAL(del_one(&s, &lim, 77), ANN_NONE);
	CU_ASSERT_EQUAL(s.kept, 9);
	CU_ASSERT_EQUAL(s.n, 9);
	CU_ASSERT_EQUAL(seen.kept, 9);
	ann_filters_free(&s);
}

/* Allocation n failing, n = 1..k: the node goes over (the caller sends it
 * everything), what was kept is reported dropped, nothing leaks. */
static void test_oom_puts_over(void)
{
	const struct ann_limits lim = {.max_filters = 1000, .max_bytes = 1 << 20};
	size_t mem0 = wisp_mem_used();
	for (uint64_t n = 1; n <= 40; n++) {
		struct seen seen = {0};
		struct ann_filters s = {.changed = on_changed, .ctx = &seen};
		wisp_mem_fail_after(n, 0);
		enum ann_effect e = add_n(&s, &lim, 0, 30);
		wisp_mem_fail_after(0, 0);
		if (e == ANN_OVER_BEGIN) {
			CU_ASSERT_TRUE(s.over);
			CU_ASSERT_EQUAL(seen.kept, 0);
		} else {
			CU_ASSERT_EQUAL(seen.kept, (long)s.kept);
		}
		ann_filters_free(&s);
		CU_ASSERT_EQUAL(seen.kept, 0);
		CU_ASSERT_EQUAL(wisp_mem_used(), mem0);
	}
}

static CU_TestInfo tests[] = {
	{"refuses what no Wisp node sends (table)", test_parse_table},
	{"reads every field of a good announcement", test_parse_fields},
	{"a snapshot part at most as large as a node writes", test_parse_part_size},
	{"every truncation of a snapshot part: refused or whole filters", test_parse_every_truncation},
	{"past max_remote_filters: over once, nothing kept, back after a fitting snapshot", test_bound_over_and_back},
	{"past max_remote_filter_bytes; fake dels cannot wrap the counts", test_bound_bytes},
	{"within the limits the set follows adds and dels", test_within_limits},
	{"allocation failures put the node over, leak nothing", test_oom_puts_over},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_interest_bounds", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
