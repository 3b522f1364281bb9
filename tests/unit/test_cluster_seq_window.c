/*
 * The routed stream sequences' window and its text form
 * (broker/src/cluster/seq_window.h): a redelivery is told from a first
 * delivery, the floor advances over what is marked and past a gap wider
 * than the span, a restored window reads as the store wrote it, and the
 * text a handover carries reads back as written (malformed text holds
 * nothing).
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "seq_window.h"
#include "unit_main.h"

#define SPAN 64

/* The first mark puts the floor a span below it: what an earlier run left
 * unacked, delivered again, still counts as new. A second delivery of a
 * marked sequence is told. */
static void test_first_mark_and_redelivery(void)
{
	struct seq_window w;
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN), 0);
	CU_ASSERT_FALSE(seq_window_has(&w, 1));
	CU_ASSERT_FALSE(seq_window_mark(&w, 1000));
	CU_ASSERT_EQUAL(w.floor, 1000 - SPAN);
	CU_ASSERT_TRUE(seq_window_mark(&w, 1000));  /* redelivered */
	CU_ASSERT_FALSE(seq_window_mark(&w, 990));  /* left unacked before, within the span */
	CU_ASSERT_TRUE(seq_window_has(&w, 990));
	CU_ASSERT_TRUE(seq_window_mark(&w, 900));   /* at or below the floor */
	CU_ASSERT_FALSE(seq_window_has(&w, 1001));
	seq_window_free(&w);
}

/* The floor follows the marked sequences contiguous above it; a sequence
 * more than a span above it drags it up, and what it passes counts as
 * routed. */
static void test_floor_advances(void)
{
	struct seq_window w;
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN), 0);
	seq_window_restore(&w, 10, NULL, 0);
	CU_ASSERT_FALSE(seq_window_mark(&w, 12));
	CU_ASSERT_EQUAL(w.floor, 10);
	CU_ASSERT_FALSE(seq_window_mark(&w, 11));
	CU_ASSERT_EQUAL(w.floor, 12);
	CU_ASSERT_FALSE(seq_window_mark(&w, 20));
	CU_ASSERT_FALSE(seq_window_mark(&w, 12 + SPAN + 5)); /* a gap wider than the span */
	CU_ASSERT_EQUAL(w.floor, 17);
	CU_ASSERT_TRUE(seq_window_has(&w, 15)); /* passed: counts as routed */
	CU_ASSERT_TRUE(seq_window_has(&w, 20));
	CU_ASSERT_FALSE(seq_window_has(&w, 19));
	CU_ASSERT_FALSE(seq_window_mark(&w, 19));
	/* Bits reused round the ring hold nothing stale: 20 + SPAN lands on
	 * 20's bit, cleared when the floor passed 20. */
	for (uint64_t s = 18; s <= 12 + SPAN + 4; s++)
		seq_window_mark(&w, s);
	CU_ASSERT_EQUAL(w.floor, 12 + SPAN + 5);
	CU_ASSERT_FALSE(seq_window_has(&w, 20 + SPAN));
	CU_ASSERT_FALSE(seq_window_mark(&w, 20 + SPAN));
	seq_window_free(&w);
}

/* What the store kept: a floor and sequences above it, those past the
 * span left out. */
static void test_restore(void)
{
	struct seq_window w;
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN), 0);
	const uint64_t marked[] = {105, 107, 100 + SPAN + 1};
	seq_window_restore(&w, 100, marked, 3);
	CU_ASSERT_TRUE(w.init);
	CU_ASSERT_TRUE(seq_window_has(&w, 100));
	CU_ASSERT_TRUE(seq_window_has(&w, 105));
	CU_ASSERT_TRUE(seq_window_has(&w, 107));
	CU_ASSERT_FALSE(seq_window_has(&w, 106));
	CU_ASSERT_FALSE(seq_window_has(&w, 100 + SPAN + 1));
	CU_ASSERT_TRUE(seq_window_mark(&w, 105));
	CU_ASSERT_FALSE(seq_window_mark(&w, 106));
	seq_window_free(&w);

	/* Nothing kept: as a new window. */
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN), 0);
	seq_window_restore(&w, 0, NULL, 0);
	CU_ASSERT_FALSE(w.init);
	seq_window_free(&w);
}

/* The text form reads back as written, sequence by sequence. */
static void test_encode_reads_back(void)
{
	struct seq_window w;
	char text[SPAN / 4 + 32];
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN), 0);
	CU_ASSERT_EQUAL(seq_window_encode(&w, text, sizeof text), 1);
	CU_ASSERT_STRING_EQUAL(text, "0");
	seq_window_restore(&w, 7, NULL, 0);
	const uint64_t marks[] = {9, 12, 13, 30};
	for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
		seq_window_mark(&w, marks[i]);
	size_t len = seq_window_encode(&w, text, sizeof text);
	CU_ASSERT_EQUAL(len, strlen(text));
	/* 8 no, 9 yes, 10 no, 11 no: 2; 12 13: 3; ... 30 */
	CU_ASSERT_EQUAL(strncmp(text, "7:2", 3), 0);
	struct seq_set set;
	CU_ASSERT_TRUE_FATAL(seq_set_parse(text, &set));
	for (uint64_t s = 1; s <= 7 + SPAN + 2; s++)
		CU_ASSERT_EQUAL(seq_set_has(&set, s), seq_window_has(&w, s));
	CU_ASSERT_EQUAL(seq_set_max(&set), 30);
	CU_ASSERT_EQUAL(seq_window_encode(&w, text, 4), 0); /* too small: nothing */
	seq_window_free(&w);
}

/* A handover's cut as text: "<floor>[:<hex>]", bit k of hex digit i for
 * sequence floor + 1 + 4i + k; malformed text holds nothing. */
static void test_text(void)
{
	static const struct {
		const char *set;
		uint64_t seq;
		bool has;
	} cases[] = {
		{"0", 1, false},       {"5", 5, true},        {"5", 6, false},      {"5:1", 6, true},
		{"5:1", 7, false},     {"5:8", 9, true},      {"5:8", 8, false},    {"5:08", 10, false},
		{"5:02", 11, true},    {"5:02", 10, false},   {"5:f", 0, false},    {"x", 1, false},
		{"5;1", 6, false},     {"", 1, false},        {"5:g", 6, false},    {NULL, 1, false},
		{"5:A", 7, false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		CU_ASSERT_EQUAL(seq_text_has(cases[i].set, cases[i].seq), cases[i].has);
	CU_ASSERT_EQUAL(seq_text_max("0"), 0);
	CU_ASSERT_EQUAL(seq_text_max("7"), 7);
	CU_ASSERT_EQUAL(seq_text_max("7:1"), 8);
	CU_ASSERT_EQUAL(seq_text_max("7:18"), 15);
	CU_ASSERT_EQUAL(seq_text_max("7:10"), 8);
	CU_ASSERT_EQUAL(seq_text_max("x"), 0);
}

static CU_TestInfo tests[] = {
	{"first mark leaves room below; a redelivery is told", test_first_mark_and_redelivery},
	{"the floor follows what is marked, and past a gap", test_floor_advances},
	{"a restored window reads as the store wrote it", test_restore},
	{"the text form reads back as the window", test_encode_reads_back},
	{"a handover's cut text reads back as written", test_text},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_seq_window", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
