/*
 * The cluster's hand-over from NATS client threads to the loop thread
 * (broker/src/cluster/inbox.h): bounded in items and bytes, counted drops, per-producer order
 * kept, the eventfd readable exactly while something waits. Run under
 * ThreadSanitizer too (tests/tsan_ci.cmake).
 */
#include <CUnit/CUnit.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>

#include "inbox.h"
#include "unit_main.h"

static bool readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, 0) == 1;
}

static void test_bounded_and_counted(void)
{
	struct inbox q;
	CU_ASSERT_EQUAL_FATAL(inbox_init(&q, 4), 0);
	CU_ASSERT_FALSE(readable(q.efd));
	for (uintptr_t i = 1; i <= 6; i++)
		CU_ASSERT_EQUAL(inbox_push(&q, (void *)i), i <= 4);
	CU_ASSERT_TRUE(readable(q.efd));
	void *out[8];
	unsigned ev = 0;
	uint64_t dropped = 0;
	CU_ASSERT_EQUAL(inbox_take(&q, out, 3, &ev, &dropped), 3);
	CU_ASSERT_EQUAL(dropped, 2);
	CU_ASSERT_EQUAL((uintptr_t)out[0], 1);
	CU_ASSERT_EQUAL((uintptr_t)out[2], 3);
	CU_ASSERT_TRUE(readable(q.efd)); /* one left: the loop must come back */
	CU_ASSERT_EQUAL(inbox_take(&q, out, 3, &ev, &dropped), 1);
	CU_ASSERT_EQUAL((uintptr_t)out[0], 4);
	CU_ASSERT_FALSE(readable(q.efd));
	inbox_raise(&q, 0x2);
	CU_ASSERT_TRUE(readable(q.efd));
	CU_ASSERT_EQUAL(inbox_take(&q, out, 3, &ev, &dropped), 0);
	CU_ASSERT_EQUAL(ev, 0x2);
	CU_ASSERT_FALSE(readable(q.efd));
	inbox_free(&q, NULL);
}

#define PRODUCERS 4
#define PER_PRODUCER 20000

struct producer {
	struct inbox *q;
	uintptr_t id;
	uint64_t accepted;
};

static void *produce(void *arg)
{
	struct producer *p = arg;
	for (uintptr_t i = 1; i <= PER_PRODUCER; i++)
		if (inbox_push(p->q, (void *)(p->id << 32 | i)))
			p->accepted++;
	inbox_raise(p->q, 1u << p->id);
	return NULL;
}

static size_t closed_freed;
static void count_freed(void *item)
{
	(void)item;
	closed_freed++;
}

/* Shutdown: what is queued is freed while the NATS library still can, and
 * a late producer's push is refused (it frees its item), not counted. */
static void test_close_frees_and_refuses(void)
{
	struct inbox q;
	CU_ASSERT_EQUAL_FATAL(inbox_init(&q, 4), 0);
	for (uintptr_t i = 1; i <= 5; i++) /* the fifth wraps the ring's head */
		inbox_push(&q, (void *)i);
	void *out[4];
	unsigned ev = 0;
	uint64_t dropped = 0;
	CU_ASSERT_EQUAL(inbox_take(&q, out, 2, &ev, &dropped), 2);
	CU_ASSERT_TRUE(inbox_push(&q, (void *)6));
	closed_freed = 0;
	inbox_close(&q, count_freed);
	CU_ASSERT_EQUAL(closed_freed, 3);
	CU_ASSERT_FALSE(inbox_push(&q, (void *)7));
	CU_ASSERT_EQUAL(inbox_take(&q, out, 4, &ev, &dropped), 0);
	CU_ASSERT_EQUAL(dropped, 1); /* only the full ring's refusal */
	closed_freed = 0;
	inbox_free(&q, count_freed);
	CU_ASSERT_EQUAL(closed_freed, 0);
}

static void test_threads_hand_over_in_order(void)
{
	struct inbox q;
	CU_ASSERT_EQUAL_FATAL(inbox_init(&q, 256), 0);
	pthread_t t[PRODUCERS];
	struct producer p[PRODUCERS];
	for (uintptr_t i = 0; i < PRODUCERS; i++) {
		p[i] = (struct producer){&q, i, 0};
		CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, produce, &p[i]), 0);
	}
	uint64_t last[PRODUCERS] = {0}, taken = 0, dropped = 0;
	unsigned all = 0;
	bool in_order = true;
	/* Drains until every producer said it is done and nothing is left;
	 * bounded by the producers' own bound. */
	for (;;) {
		struct pollfd pf = {.fd = q.efd, .events = POLLIN};
		poll(&pf, 1, 1000);
		void *out[64];
		unsigned ev = 0;
		size_t n = inbox_take(&q, out, 64, &ev, &dropped);
		all |= ev;
		for (size_t i = 0; i < n; i++) {
			uintptr_t v = (uintptr_t)out[i];
			uintptr_t id = v >> 32, seq = v & 0xffffffffu;
			if (seq <= last[id])
				in_order = false;
			last[id] = seq;
		}
		taken += n;
		if (all == (1u << PRODUCERS) - 1 && n == 0)
			break;
	}
	uint64_t accepted = 0;
	for (int i = 0; i < PRODUCERS; i++) {
		pthread_join(t[i], NULL);
		accepted += p[i].accepted;
	}
	CU_ASSERT_TRUE(in_order);
	CU_ASSERT_EQUAL(taken, accepted);
	CU_ASSERT_EQUAL(accepted + dropped, (uint64_t)PRODUCERS * PER_PRODUCER);
	inbox_free(&q, NULL);
}

/* The items' bytes bound the inbox too: a loop that stalls while NATS
 * brings large messages costs counted drops, not their memory. */
static void test_bounded_in_bytes(void)
{
	struct inbox q;
	CU_ASSERT_EQUAL_FATAL(inbox_init_bytes(&q, 8, 1000), 0);
	CU_ASSERT_TRUE(inbox_push_sized(&q, (void *)1, 600));
	CU_ASSERT_TRUE(inbox_push_sized(&q, (void *)2, 400)); /* 1000: at the bound, in */
	CU_ASSERT_FALSE(inbox_push_sized(&q, (void *)3, 1)); /* over it */
	void *out[8];
	unsigned ev = 0;
	uint64_t dropped = 0;
	CU_ASSERT_EQUAL(inbox_take(&q, out, 1, &ev, &dropped), 1);
	CU_ASSERT_EQUAL(dropped, 1);
	CU_ASSERT_EQUAL(q.bytes, 400); /* taken: its bytes are free again */
	CU_ASSERT_TRUE(inbox_push_sized(&q, (void *)4, 600));
	CU_ASSERT_FALSE(inbox_push_sized(&q, (void *)5, 600));
	CU_ASSERT_EQUAL(inbox_take(&q, out, 8, &ev, &dropped), 2);
	CU_ASSERT_EQUAL(dropped, 2);
	CU_ASSERT_EQUAL((uintptr_t)out[0], 2);
	CU_ASSERT_EQUAL((uintptr_t)out[1], 4);
	CU_ASSERT_EQUAL(q.bytes, 0);
	/* Empty, one item over the bound passes (else it never could); the
	 * next waits for it to be taken. */
	CU_ASSERT_TRUE(inbox_push_sized(&q, (void *)6, 5000));
	CU_ASSERT_FALSE(inbox_push_sized(&q, (void *)7, 1));
	CU_ASSERT_EQUAL(inbox_take(&q, out, 8, &ev, &dropped), 1);
	CU_ASSERT_EQUAL(q.bytes, 0);
	/* The count bound still holds for small items. */
	for (uintptr_t i = 1; i <= 9; i++)
		CU_ASSERT_EQUAL(inbox_push_sized(&q, (void *)i, 1), i <= 8);
	inbox_close(&q, NULL);
	CU_ASSERT_EQUAL(q.bytes, 0);
	inbox_free(&q, NULL);
}

static CU_TestInfo tests[] = {
	{"bounded in bytes: past the items' byte bound a push is refused and counted", test_bounded_in_bytes},
	{"close frees what is queued and refuses later pushes", test_close_frees_and_refuses},
	{"bounded: a full inbox refuses and counts", test_bounded_and_counted},
	{"producer threads: nothing lost but the counted, order kept", test_threads_hand_over_in_order},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_inbox", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
