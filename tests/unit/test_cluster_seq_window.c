/*
 * The routed stream sequences' window and its text form
 * (broker/src/cluster/seq_window.h): a redelivery is told from a first
 * delivery, the floor advances over what is marked and to the consumer's
 * ack floor, never past a sequence left unmarked on its own (however far
 * newer ones reach: the bitmap grows, to a bound), a restored window reads
 * as the store wrote it, and the text a handover carries reads back as
 * written (malformed text holds nothing).
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "seq_window.h"
#include "unit_main.h"

#define SPAN 64
#define MAX_SPAN (4 * SPAN)

/* The first mark puts the floor a span below it: what an earlier run left
 * unacked, delivered again, still counts as new. A second delivery of a
 * marked sequence is told. */
static void test_first_mark_and_redelivery(void)
{
	struct seq_window w;
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN, MAX_SPAN), 0);
	CU_ASSERT_FALSE(seq_window_has(&w, 1));
	CU_ASSERT_EQUAL(seq_window_mark(&w, 1000), SEQ_WINDOW_NEW);
	CU_ASSERT_EQUAL(w.floor, 1000 - SPAN);
	CU_ASSERT_EQUAL(seq_window_mark(&w, 1000), SEQ_WINDOW_MARKED); /* redelivered */
	CU_ASSERT_EQUAL(seq_window_mark(&w, 990), SEQ_WINDOW_NEW);     /* left unacked before, within the span */
	CU_ASSERT_TRUE(seq_window_has(&w, 990));
	CU_ASSERT_EQUAL(seq_window_mark(&w, 900), SEQ_WINDOW_MARKED);  /* at or below the floor */
	CU_ASSERT_FALSE(seq_window_has(&w, 1001));
	seq_window_free(&w);
}

/* The floor follows the marked sequences contiguous above it and nothing
 * else: a sequence delivered and left unmarked (an inbox that was full, a
 * node killed before routing it) holds it while newer ones pass it by
 * more than the span, and its redelivery is new. (Before, a sequence more
 * than a span above dragged the floor past it: taken for routed, acked,
 * never routed.) */
static void test_floor_waits_for_a_gap(void)
{
	struct seq_window w;
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN, MAX_SPAN), 0);
	seq_window_restore(&w, 10, NULL, 0);
	CU_ASSERT_EQUAL(seq_window_mark(&w, 12), SEQ_WINDOW_NEW);
	CU_ASSERT_EQUAL(w.floor, 10);
	CU_ASSERT_EQUAL(seq_window_mark(&w, 11), SEQ_WINDOW_NEW);
	CU_ASSERT_EQUAL(w.floor, 12);
	/* 13 is delivered and never marked; 14 .. 12 + 3 x SPAN pass it. */
	for (uint64_t s = 14; s <= 12 + 3 * SPAN; s++)
		CU_ASSERT_EQUAL(seq_window_mark(&w, s), SEQ_WINDOW_NEW);
	CU_ASSERT_EQUAL(w.floor, 12);
	CU_ASSERT(w.span >= 3 * SPAN && w.span <= MAX_SPAN); /* grew */
	CU_ASSERT_FALSE(seq_window_has(&w, 13));
	for (uint64_t s = 14; s <= 12 + 3 * SPAN; s++)
		CU_ASSERT_TRUE(seq_window_has(&w, s)); /* kept through the growth */
	CU_ASSERT_EQUAL(seq_window_mark(&w, 20), SEQ_WINDOW_MARKED);
	/* Past the bound: not marked, left for a redelivery. */
	CU_ASSERT_EQUAL(seq_window_mark(&w, 12 + MAX_SPAN + 1), SEQ_WINDOW_FAR);
	CU_ASSERT_FALSE(seq_window_has(&w, 12 + MAX_SPAN + 1));
	CU_ASSERT_EQUAL(seq_window_mark(&w, 12 + MAX_SPAN), SEQ_WINDOW_NEW);
	/* 13's redelivery is new, and the floor runs up over all. */
	CU_ASSERT_EQUAL(seq_window_mark(&w, 13), SEQ_WINDOW_NEW);
	CU_ASSERT_EQUAL(w.floor, 12 + 3 * SPAN);
	CU_ASSERT_FALSE(seq_window_has(&w, 13 + 3 * SPAN));
	CU_ASSERT_TRUE(seq_window_has(&w, 12 + MAX_SPAN));
	seq_window_free(&w);
}

/* The consumer's ack floor settles what lies at or below it, marked or
 * not (gaps a filtered consumer never delivers, messages aged out); a
 * lower one changes nothing; bits round the ring hold nothing stale. */
static void test_raise(void)
{
	struct seq_window w;
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN, MAX_SPAN), 0);
	seq_window_raise(&w, 0); /* known: nothing acked yet */
	CU_ASSERT_TRUE(w.init);
	CU_ASSERT_EQUAL(seq_window_mark(&w, 2 * SPAN), SEQ_WINDOW_NEW);
	CU_ASSERT_EQUAL(w.floor, 0); /* not a span below the first mark: 1 .. 2 x SPAN - 1 may come */
	CU_ASSERT_EQUAL(seq_window_mark(&w, 5), SEQ_WINDOW_NEW);
	CU_ASSERT_EQUAL(seq_window_mark(&w, 7), SEQ_WINDOW_NEW);
	seq_window_raise(&w, 5);
	CU_ASSERT_EQUAL(w.floor, 5);
	CU_ASSERT_TRUE(seq_window_has(&w, 3));
	CU_ASSERT_FALSE(seq_window_has(&w, 6));
	CU_ASSERT_TRUE(seq_window_has(&w, 7));
	seq_window_raise(&w, 6); /* runs on over 7 */
	CU_ASSERT_EQUAL(w.floor, 7);
	seq_window_raise(&w, 2); /* lower: nothing */
	CU_ASSERT_EQUAL(w.floor, 7);
	seq_window_raise(&w, 3 * SPAN); /* past everything marked */
	CU_ASSERT_EQUAL(w.floor, 3 * SPAN);
	CU_ASSERT_TRUE(seq_window_has(&w, 2 * SPAN));
	for (uint64_t s = 3 * SPAN + 1; s <= 3 * SPAN + w.span; s++)
		CU_ASSERT_FALSE(seq_window_has(&w, s)); /* 2 x SPAN's bit went */
	CU_ASSERT_EQUAL(seq_window_mark(&w, 2 * SPAN + w.span), SEQ_WINDOW_NEW);
	seq_window_free(&w);
}

/* What the store kept: a floor and sequences above it, those past the
 * bound left out. */
static void test_restore(void)
{
	struct seq_window w;
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN, MAX_SPAN), 0);
	const uint64_t marked[] = {105, 107, 100 + MAX_SPAN + 1};
	seq_window_restore(&w, 100, marked, 3);
	CU_ASSERT_TRUE(w.init);
	CU_ASSERT_TRUE(seq_window_has(&w, 100));
	CU_ASSERT_TRUE(seq_window_has(&w, 105));
	CU_ASSERT_TRUE(seq_window_has(&w, 107));
	CU_ASSERT_FALSE(seq_window_has(&w, 106));
	CU_ASSERT_FALSE(seq_window_has(&w, 100 + MAX_SPAN + 1));
	CU_ASSERT_EQUAL(seq_window_mark(&w, 105), SEQ_WINDOW_MARKED);
	CU_ASSERT_EQUAL(seq_window_mark(&w, 106), SEQ_WINDOW_NEW);
	seq_window_free(&w);

	/* Nothing kept: as a new window. */
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN, MAX_SPAN), 0);
	seq_window_restore(&w, 0, NULL, 0);
	CU_ASSERT_FALSE(w.init);
	seq_window_free(&w);
}

/* The text form reads back as written, sequence by sequence. */
static void test_encode_reads_back(void)
{
	struct seq_window w;
	char text[SPAN / 4 + 32];
	CU_ASSERT_EQUAL_FATAL(seq_window_init(&w, SPAN, MAX_SPAN), 0);
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
	{"the floor waits for a sequence left unmarked", test_floor_waits_for_a_gap},
	{"the ack floor settles what lies below it", test_raise},
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
