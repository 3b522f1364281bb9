/*
 * The counted key set (broker/src/cluster/keycount.h) that tells durable.c
 * whether an ack of a message waits for the store: counts follow adds and
 * deletes whatever the order, across growth and the backward shift of
 * deletion (checked against a plain array on keys chosen to collide), key
 * 0 counts like any other, and a failed growth leaves the set as it was.
 */
#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <stdlib.h>

#include "alloc.h"
#include "err.h"
#include "keycount.h"
#include "unit_main.h"

static void test_counts(void)
{
	struct keycount kc = KEYCOUNT_INIT;
	CU_ASSERT_EQUAL(keycount_get(&kc, 7), 0);
	keycount_del(&kc, 7); /* none: no-op */
	CU_ASSERT_EQUAL(keycount_add(&kc, 7), 0);
	CU_ASSERT_EQUAL(keycount_add(&kc, 7), 0);
	CU_ASSERT_EQUAL(keycount_add(&kc, 0), 0);
	CU_ASSERT_EQUAL(keycount_get(&kc, 7), 2);
	CU_ASSERT_EQUAL(keycount_get(&kc, 0), 1);
	CU_ASSERT_EQUAL(keycount_get(&kc, 8), 0);
	keycount_del(&kc, 7);
	CU_ASSERT_EQUAL(keycount_get(&kc, 7), 1);
	keycount_del(&kc, 7);
	CU_ASSERT_EQUAL(keycount_get(&kc, 7), 0);
	keycount_del(&kc, 0);
	keycount_del(&kc, 0);
	CU_ASSERT_EQUAL(keycount_get(&kc, 0), 0);
	CU_ASSERT_EQUAL(kc.used, 0);
	keycount_free(&kc);
}

/* durable.c's pattern: stream sequences added in order, removed from the
 * front while newer ones come, each redelivered one added twice. The
 * table grows past its first size and goes once the set is empty. */
static void test_fifo_of_sequences(void)
{
	struct keycount kc = KEYCOUNT_INIT;
	for (uint64_t s = 1; s <= 10000; s++) {
		CU_ASSERT_EQUAL_FATAL(keycount_add(&kc, s), 0);
		if (s % 3 == 0)
			CU_ASSERT_EQUAL_FATAL(keycount_add(&kc, s), 0);
	}
	CU_ASSERT_EQUAL(kc.used, 10000);
	CU_ASSERT(kc.bits >= 14);
	for (uint64_t s = 1; s <= 10000; s++) {
		CU_ASSERT_EQUAL(keycount_get(&kc, s), s % 3 == 0 ? 2u : 1u);
		keycount_del(&kc, s);
		if (s % 3 == 0)
			keycount_del(&kc, s);
		CU_ASSERT_EQUAL(keycount_get(&kc, s), 0);
		if (s < 10000)
			CU_ASSERT_EQUAL(keycount_get(&kc, s + 1), (s + 1) % 3 == 0 ? 2u : 1u);
	}
	CU_ASSERT_EQUAL(kc.used, 0);
	CU_ASSERT_PTR_NULL(kc.slot); /* a grown table went with the last key */
	keycount_free(&kc);
}

/* Random adds and deletes, checked against a plain array of counts
 * after every few steps. Half the keys share three home slots, the last
 * of the table and the first two, in every table up to 1,024 slots (their
 * top 10 bits times 2⁶⁴/φ agree), so runs are long and wrap around the
 * end: a backward shift that moved a key out of its run, or past its
 * home, would show as a lost count. The other half are consecutive (0
 * among them). */
static bool crowded(uint64_t k)
{
	uint64_t top = (k * UINT64_C(0x9e3779b97f4a7c15)) >> 54;
	return top == 1023 || top <= 1;
}

static bool holds(const uint64_t *keys, size_t n, uint64_t k)
{
	for (size_t i = 0; i < n; i++)
		if (keys[i] == k)
			return true;
	return false;
}

static void test_against_array(void)
{
	enum { KEYS = 200, STEPS = 200000 };
	uint64_t keys[KEYS];
	uint64_t want[KEYS] = {0};
	size_t n = 0;
	srand(1);
	for (uint64_t k = 1; n < KEYS / 2; k = (uint64_t)rand() << 33 ^ (uint64_t)rand() << 2 ^ (uint64_t)rand())
		if (crowded(k) && !holds(keys, n, k))
			keys[n++] = k;
	for (uint64_t k = 0; n < KEYS; k++)
		keys[n++] = k;
	struct keycount kc = KEYCOUNT_INIT;
	for (int step = 0; step < STEPS; step++) {
		size_t i = (size_t)rand() % KEYS;
		/* Each key's count stays 0 to 2, so keys keep leaving the table. */
		if (want[i] == 0 || (want[i] == 1 && rand() % 2)) {
			CU_ASSERT_EQUAL_FATAL(keycount_add(&kc, keys[i]), 0);
			want[i]++;
		} else {
			keycount_del(&kc, keys[i]);
			want[i]--;
		}
		if (step % 97 == 0)
			for (size_t k = 0; k < KEYS; k++)
				CU_ASSERT_EQUAL_FATAL(keycount_get(&kc, keys[k]), want[k]);
	}
	size_t distinct = 0;
	for (size_t k = 0; k < KEYS; k++) {
		CU_ASSERT_EQUAL(keycount_get(&kc, keys[k]), want[k]);
		distinct += want[k] && keys[k];
	}
	CU_ASSERT_EQUAL(kc.used, distinct);
	keycount_free(&kc);
}

/* No memory to grow: the add says so, and what was held is still held. */
static void test_no_memory(void)
{
	struct keycount kc = KEYCOUNT_INIT;
	for (uint64_t s = 1; s <= 32; s++) /* fills the first 64 slots to half */
		CU_ASSERT_EQUAL_FATAL(keycount_add(&kc, s), 0);
	wisp_mem_fail_after(1, 1);
	CU_ASSERT_EQUAL(keycount_add(&kc, 33), WISP_ENOMEM);
	CU_ASSERT_EQUAL(keycount_add(&kc, 5), 0); /* held already: no growth */
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_EQUAL(keycount_get(&kc, 33), 0);
	CU_ASSERT_EQUAL(keycount_get(&kc, 5), 2);
	for (uint64_t s = 1; s <= 32; s++)
		CU_ASSERT(keycount_get(&kc, s) >= 1);
	CU_ASSERT_EQUAL(keycount_add(&kc, 33), 0);
	CU_ASSERT_EQUAL(keycount_get(&kc, 33), 1);
	keycount_free(&kc);
}

static CU_TestInfo tests[] = {
	{"counts follow adds and deletes, key 0 too", test_counts},
	{"a queue of stream sequences, grown and emptied", test_fifo_of_sequences},
	{"random adds and deletes agree with an array", test_against_array},
	{"a growth without memory leaves the set as it was", test_no_memory},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_keycount", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
