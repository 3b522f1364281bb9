/*
 * Small objects (core/alloc.h: wisp_small_alloc): packed with no header
 * between them (the point, issue 18: a 200-byte connection takes 200
 * bytes, not glibc's 208), each in its own bytes over several chunks,
 * freed slots reused, counted in wisp_mem_used by the class's size, and
 * failed by the memory limit and by fault injection like wisp_malloc;
 * doubling tables (wisp_table_zalloc) zeroed, counted and given back.
 */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <string.h>

#include "unit_main.h"
#include "alloc.h"

/* More than one 64 KiB chunk's worth of 200-byte objects. */
#define MANY 1000

static void test_objects_are_packed_without_a_header(void)
{
	static uint8_t *p[64];
	size_t adjacent = 0;
	for (size_t i = 0; i < 64; i++) {
		p[i] = wisp_small_alloc(200);
		CU_ASSERT_PTR_NOT_NULL_FATAL(p[i]);
		CU_ASSERT_EQUAL((uintptr_t)p[i] % 8, 0);
		if (i && p[i] == p[i - 1] + 200)
			adjacent++;
	}
	/* A fresh run carves one after the other (a chunk boundary may fall
	 * in between once). */
	CU_ASSERT(adjacent >= 62);
	for (size_t i = 0; i < 64; i++)
		wisp_small_free(p[i], 200);
}

static void test_every_object_keeps_its_bytes_over_several_chunks(void)
{
	static uint8_t *p[MANY];
	for (size_t i = 0; i < MANY; i++) {
		p[i] = wisp_small_alloc(200);
		CU_ASSERT_PTR_NOT_NULL_FATAL(p[i]);
		memset(p[i], (int)(i & 0xff), 200);
	}
	/* Every other one freed and allocated again, as connections come and go. */
	for (size_t i = 0; i < MANY; i += 2)
		wisp_small_free(p[i], 200);
	for (size_t i = 0; i < MANY; i += 2) {
		p[i] = wisp_small_zalloc(200);
		CU_ASSERT_PTR_NOT_NULL_FATAL(p[i]);
		for (size_t j = 0; j < 200; j++)
			CU_ASSERT_EQUAL_FATAL(p[i][j], 0);
		memset(p[i], (int)(i & 0xff), 200);
	}
	for (size_t i = 0; i < MANY; i++)
		for (size_t j = 0; j < 200; j++)
			CU_ASSERT_EQUAL_FATAL(p[i][j], (uint8_t)(i & 0xff));
	for (size_t i = 0; i < MANY; i++)
		wisp_small_free(p[i], 200);
}

static void test_a_freed_slot_is_the_next_one_given(void)
{
	void *a = wisp_small_alloc(56);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	wisp_small_free(a, 56);
	void *b = wisp_small_alloc(51); /* same 56-byte class */
	CU_ASSERT_PTR_EQUAL(a, b);
	wisp_small_free(b, 51);
}

static void test_counted_by_class_and_given_back(void)
{
	size_t before = wisp_mem_used();
	void *a = wisp_small_alloc(100);
	void *b = wisp_small_alloc(4096); /* over WISP_SMALL_MAX: the C heap */
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	CU_ASSERT(wisp_mem_used() >= before + 104 + 4096);
	wisp_small_free(b, 4096);
	CU_ASSERT_EQUAL(wisp_mem_used(), before + 104);
	wisp_small_free(a, 100);
	CU_ASSERT_EQUAL(wisp_mem_used(), before);
}

static void test_limit_and_injected_faults_fail_it(void)
{
	wisp_mem_fail_after(1, 0);
	CU_ASSERT_PTR_NULL(wisp_small_alloc(200));
	void *ok = wisp_small_alloc(200);
	CU_ASSERT_PTR_NOT_NULL(ok);
	wisp_small_free(ok, 200);

	wisp_mem_set_limit(wisp_mem_used() + 100);
	CU_ASSERT_PTR_NULL(wisp_small_alloc(104));
	ok = wisp_small_alloc(96);
	CU_ASSERT_PTR_NOT_NULL(ok);
	wisp_mem_set_limit(0);
	wisp_small_free(ok, 96);
}

/* Tables (wisp_table_zalloc): zeroed below and above the size from which
 * they are mapped apart, counted while held, failed by injection. */
static void test_tables_are_zeroed_counted_and_given_back(void)
{
	size_t before = wisp_mem_used();
	size_t sizes[] = {512, WISP_TABLE_MAP_MIN, 4 * WISP_TABLE_MAP_MIN + 8};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		uint8_t *t = wisp_table_zalloc(sizes[k]);
		CU_ASSERT_PTR_NOT_NULL_FATAL(t);
		CU_ASSERT(wisp_mem_used() >= before + sizes[k]);
		size_t nonzero = 0;
		for (size_t i = 0; i < sizes[k]; i++)
			nonzero += t[i] != 0;
		CU_ASSERT_EQUAL(nonzero, 0);
		memset(t, 0xa5, sizes[k]);
		wisp_table_free(t, sizes[k]);
		CU_ASSERT_EQUAL(wisp_mem_used(), before);
	}
	wisp_mem_fail_after(1, 0);
	CU_ASSERT_PTR_NULL(wisp_table_zalloc(WISP_TABLE_MAP_MIN));
}

static CU_TestInfo alloc_tests[] = {
	{"tables are zeroed, counted and given back", test_tables_are_zeroed_counted_and_given_back},
	{"objects are packed without a header", test_objects_are_packed_without_a_header},
	{"every object keeps its bytes over several chunks", test_every_object_keeps_its_bytes_over_several_chunks},
	{"a freed slot is the next one given", test_a_freed_slot_is_the_next_one_given},
	{"counted by class and given back", test_counted_by_class_and_given_back},
	{"limit and injected faults fail it", test_limit_and_injected_faults_fail_it},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"alloc", NULL, NULL, NULL, NULL, alloc_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
