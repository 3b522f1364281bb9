/*
 * The outbound in-flight bookkeeping (session/flight.c): the packet id ->
 * entry index (chains, growth, removal in any order, ids across the wrap
 * at 65535, all 65,535 ids at once, out of memory) and the entry free list.
 * Delivery-level behaviour (ids skipped while in use, Receive Maximum
 * windows, acks out of order) is in test_delivery.c.
 */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdlib.h>

#include "unit_main.h"
#include "alloc.h"
#include "err.h"
#include "flight.h"

#define MAX_IDS 65535u

static struct sess_msg *entries; /* entries[i] has packet id i + 1 */

static int set_up_suite(void)
{
	entries = calloc(MAX_IDS, sizeof *entries);
	if (!entries)
		return -1;
	for (uint32_t i = 0; i < MAX_IDS; i++)
		entries[i].packet_id = (uint16_t)(i + 1);
	return 0;
}

static int clean_up_suite(void)
{
	free(entries);
	flight_release_cache();
	return 0;
}

static struct sess_msg *entry(uint16_t id)
{
	return &entries[id - 1];
}

static void put(struct flight_index **fi, uint16_t id)
{
	CU_ASSERT_EQUAL_FATAL(flight_index_reserve(fi), 0);
	flight_index_put(*fi, entry(id));
}

/* Adds `n` ids in sequence from `first` (wrapping past 65535 to 1, as
 * delivery hands them out), checks each is found, removes them in the
 * order `order` gives, checking the rest stay found. */
enum order { IN_ORDER, REVERSED, SHUFFLED };

static uint16_t nth_id(uint16_t first, uint32_t k)
{
	return (uint16_t)((first - 1u + k) % MAX_IDS + 1u);
}

static void round_trip(uint16_t first, uint32_t n, enum order order)
{
	struct flight_index *fi = NULL;
	for (uint32_t k = 0; k < n; k++)
		put(&fi, nth_id(first, k));
	CU_ASSERT_EQUAL(flight_index_count(fi), n);
	for (uint32_t k = 0; k < n; k++)
		CU_ASSERT_PTR_EQUAL(flight_index_get(fi, nth_id(first, k)), entry(nth_id(first, k)));
	uint32_t *perm = malloc(n * sizeof *perm);
	CU_ASSERT_PTR_NOT_NULL_FATAL(perm);
	for (uint32_t k = 0; k < n; k++)
		perm[k] = order == REVERSED ? n - 1 - k : k;
	if (order == SHUFFLED) {
		srand(18);
		for (uint32_t k = n - 1; k > 0; k--) {
			uint32_t j = (uint32_t)rand() % (k + 1);
			uint32_t t = perm[k];
			perm[k] = perm[j];
			perm[j] = t;
		}
	}
	for (uint32_t k = 0; k < n; k++) {
		uint16_t id = nth_id(first, perm[k]);
		CU_ASSERT_PTR_EQUAL(flight_index_get(fi, id), entry(id));
		flight_index_del(&fi, id);
		CU_ASSERT_PTR_NULL(flight_index_get(fi, id));
		CU_ASSERT_EQUAL(flight_index_count(fi), n - 1 - k);
		/* A sample of the others is still there. */
		if (k + 1 < n) {
			uint16_t other = nth_id(first, perm[n - 1]);
			CU_ASSERT_PTR_EQUAL(flight_index_get(fi, other), entry(other));
		}
	}
	/* The window is empty: the session holds no table. */
	CU_ASSERT_PTR_NULL(fi);
	free(perm);
}

static void test_ids_found_and_removed_in_any_order(void)
{
	static const uint32_t sizes[] = {1, 2, 15, 16, 17, 100, 320, 1000};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		round_trip(1, sizes[i], IN_ORDER);
		round_trip(1, sizes[i], REVERSED);
		round_trip(1, sizes[i], SHUFFLED);
	}
}

/* [MQTT-2.3.1-2] ids run 1..65535 and start again at 1: a window across
 * the wrap is indexed like any other. */
static void test_window_across_the_wrap_at_65535(void)
{
	round_trip(65500, 100, IN_ORDER);
	round_trip(65535, 2, SHUFFLED);
	round_trip(60000, 10000, SHUFFLED);
}

/* max_inflight 65535 with a client that never acks: every id at once. */
static void test_all_65535_ids_at_once(void)
{
	round_trip(1, MAX_IDS, IN_ORDER);
	round_trip(30000, MAX_IDS, SHUFFLED);
}

/* Ids that share a bucket (equal modulo the table size) chain; removing
 * the head, the middle or the tail of a chain keeps the others. */
static void test_ids_sharing_a_bucket(void)
{
	static const uint16_t ids[] = {1, 17, 33, 49, 65535};
	static const uint16_t removal[][5] = {{17, 1, 49, 33, 65535}, {49, 33, 17, 1, 65535}, {1, 17, 33, 49, 65535}};
	for (size_t r = 0; r < 3; r++) {
		struct flight_index *fi = NULL;
		for (size_t i = 0; i < 5; i++)
			put(&fi, ids[i]);
		CU_ASSERT_PTR_NULL(flight_index_get(fi, 2));
		CU_ASSERT_PTR_NULL(flight_index_get(fi, 81));
		for (size_t i = 0; i < 5; i++) {
			flight_index_del(&fi, removal[r][i]);
			flight_index_del(&fi, removal[r][i]); /* twice: a no-op */
			for (size_t j = i + 1; j < 5; j++)
				CU_ASSERT_PTR_EQUAL(flight_index_get(fi, removal[r][j]), entry(removal[r][j]));
		}
		CU_ASSERT_PTR_NULL(fi);
	}
	struct flight_index *none = NULL;
	flight_index_del(&none, 5); /* no table: a no-op */
	CU_ASSERT_PTR_NULL(flight_index_get(none, 5));
}

/* An id is free again once removed, and can be added back. */
static void test_id_reuse(void)
{
	struct flight_index *fi = NULL;
	put(&fi, 7);
	put(&fi, 8);
	flight_index_del(&fi, 7);
	CU_ASSERT_PTR_NULL(flight_index_get(fi, 7));
	put(&fi, 7);
	CU_ASSERT_PTR_EQUAL(flight_index_get(fi, 7), entry(7));
	CU_ASSERT_EQUAL(flight_index_count(fi), 2);
	flight_index_free(&fi);
	CU_ASSERT_PTR_NULL(fi);
}

/* Out of memory: reserve fails and leaves the index as it was. */
static void test_reserve_out_of_memory_changes_nothing(void)
{
	flight_release_cache(); /* no cached table to hand out */
	struct flight_index *fi = NULL;
	wisp_mem_fail_after(1, 1);
	CU_ASSERT_EQUAL(flight_index_reserve(&fi), WISP_ENOMEM);
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_PTR_NULL(fi);
	for (uint16_t id = 1; id <= 16; id++)
		put(&fi, id);
	wisp_mem_fail_after(1, 1);
	CU_ASSERT_EQUAL(flight_index_reserve(&fi), WISP_ENOMEM); /* the 17th needs a larger table */
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_EQUAL(flight_index_count(fi), 16);
	for (uint16_t id = 1; id <= 16; id++)
		CU_ASSERT_PTR_EQUAL(flight_index_get(fi, id), entry(id));
	flight_index_free(&fi);
	flight_release_cache();
}

/* One message in flight at a time takes and returns a cached table and a
 * cached entry: nothing is allocated per delivery once warm. */
static void test_steady_state_allocates_nothing(void)
{
	struct flight_index *fi = NULL;
	struct sess_msg *e = flight_entry_new(0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	e->packet_id = 1;
	put(&fi, 1);
	flight_index_del(&fi, 1);
	flight_entry_free(e);
	wisp_mem_fail_after(1, 1); /* any allocation from here on fails */
	for (uint16_t id = 2; id < 1000; id++) {
		e = flight_entry_new(0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(e);
		CU_ASSERT_EQUAL(e->sub_id_count, 0);
		e->packet_id = id;
		CU_ASSERT_EQUAL(flight_index_reserve(&fi), 0);
		flight_index_put(fi, e);
		CU_ASSERT_PTR_EQUAL(flight_index_get(fi, id), e);
		flight_index_del(&fi, id);
		flight_entry_free(e);
	}
	wisp_mem_fail_after(0, 0);
	/* Entries with identifiers are sized to them and not cached. */
	size_t cached = flight_cache_count();
	e = flight_entry_new(3);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_EQUAL(e->sub_id_count, 3);
	e->sub_ids[2] = 268435455u;
	flight_entry_free(e);
	CU_ASSERT_EQUAL(flight_cache_count(), cached);
	flight_release_cache();
	CU_ASSERT_EQUAL(flight_cache_count(), 0);
}

/* The free list is bounded: a burst's entries beyond it go back to the heap. */
static void test_entry_free_list_is_bounded(void)
{
	enum { BURST = 20000 };
	struct sess_msg **burst = malloc(BURST * sizeof *burst);
	CU_ASSERT_PTR_NOT_NULL_FATAL(burst);
	for (size_t i = 0; i < BURST; i++) {
		burst[i] = flight_entry_new(0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(burst[i]);
	}
	for (size_t i = 0; i < BURST; i++)
		flight_entry_free(burst[i]);
	CU_ASSERT_EQUAL(flight_cache_count(), 16384);
	flight_release_cache();
	free(burst);
}

static CU_TestInfo flight_tests[] = {
	{"index: ids found, removed in any order, table gone when empty", test_ids_found_and_removed_in_any_order},
	{"index: a window across the wrap at 65535 [MQTT-2.3.1-2]", test_window_across_the_wrap_at_65535},
	{"index: all 65535 ids in flight at once", test_all_65535_ids_at_once},
	{"index: ids sharing a bucket, removed head, middle, tail", test_ids_sharing_a_bucket},
	{"index: an id is reusable once removed", test_id_reuse},
	{"index: out of memory on reserve changes nothing", test_reserve_out_of_memory_changes_nothing},
	{"pool: one message at a time allocates nothing once warm", test_steady_state_allocates_nothing},
	{"pool: the entry free list is bounded", test_entry_free_list_is_bounded},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"flight", set_up_suite, clean_up_suite, NULL, NULL, flight_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
