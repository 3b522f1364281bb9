/*
 * The loop's timers and io registrations with their callbacks kept as
 * slots of the loop's tables (core/loop.h, issue 18): each timer fires its
 * own callback; a deadline moved earlier than the wheel's next visit of
 * its slot (here: from beyond the wheel's span) fires then, not at the
 * old deadline; one moved later does not fire early; an io registration
 * calls its own callback; a soon timer fires in the next turn, not at the
 * wheel's next second. Real time: the timers are 1-2 s, bounded by a
 * 5 s guard timer.
 */
#include <CUnit/Basic.h>
#include <stdbool.h>
#include <unistd.h>

#include "unit_main.h"
#include "list.h"
#include "loop.h"

static int fired_a, fired_b, fired_guard;
static struct loop_timer ta, tb, guard;

static void on_a(struct loop *l, struct loop_timer *t)
{
	(void)l;
	CU_ASSERT_PTR_EQUAL(t, &ta);
	fired_a++;
}

static void on_b(struct loop *l, struct loop_timer *t)
{
	CU_ASSERT_PTR_EQUAL(t, &tb);
	fired_b++;
	loop_stop(l);
}

static void on_guard(struct loop *l, struct loop_timer *t)
{
	(void)t;
	fired_guard++;
	loop_stop(l);
}

static void test_moved_deadlines_fire_their_own_callbacks_on_time(void)
{
	struct loop *l = loop_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(l);
	fired_a = fired_b = fired_guard = 0;
	/* a: 1000 s, beyond the wheel's span, then moved to 1 s from now. */
	loop_timer_start(l, &ta, 1000, on_a);
	loop_timer_set_deadline(l, &ta, loop_now_s(l) + 1);
	/* b: 1 s, then moved later, to 2 s: it stops the loop. */
	loop_timer_start(l, &tb, 1, on_b);
	loop_timer_set_deadline(l, &tb, loop_now_s(l) + 2);
	loop_timer_start(l, &guard, 5, on_guard);
	uint64_t start = loop_now_ms(l);
	CU_ASSERT_EQUAL(loop_run(l), 0);
	CU_ASSERT_EQUAL(fired_a, 1);
	CU_ASSERT_EQUAL(fired_b, 1);
	CU_ASSERT_EQUAL(fired_guard, 0);
	CU_ASSERT(loop_now_ms(l) - start >= 1000); /* b not at its first deadline */
	loop_timer_stop(l, &guard);
	loop_free(l);
}

static int io_fired;

static void on_pipe(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)io;
	CU_ASSERT(events & LOOP_READ);
	io_fired++;
	loop_stop(l);
}

static void on_other(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	(void)io;
	(void)events;
	CU_FAIL("another registration's callback was called");
}

static void test_an_io_registration_calls_its_own_callback(void)
{
	struct loop *l = loop_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(l);
	int a[2], b[2];
	CU_ASSERT_EQUAL_FATAL(pipe(a), 0);
	CU_ASSERT_EQUAL_FATAL(pipe(b), 0);
	struct loop_io ia = {0}, ib = {0};
	CU_ASSERT_EQUAL(loop_io_start(l, &ib, b[0], LOOP_READ, on_other), 0);
	CU_ASSERT_EQUAL(loop_io_start(l, &ia, a[0], LOOP_READ, on_pipe), 0);
	CU_ASSERT_EQUAL(write(a[1], "x", 1), 1);
	fired_guard = 0;
	loop_timer_start(l, &guard, 5, on_guard);
	io_fired = 0;
	CU_ASSERT_EQUAL(loop_run(l), 0);
	CU_ASSERT_EQUAL(io_fired, 1);
	CU_ASSERT_EQUAL(fired_guard, 0);
	loop_timer_stop(l, &guard);
	loop_io_stop(l, &ia);
	loop_io_stop(l, &ib);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	loop_free(l);
}

/* A soon timer fires in the next turn, counted by an always-readable pipe
 * that makes every turn: the first, where a 0-second timer waits for the
 * wheel's next whole second (hundreds of busy turns here). Started again
 * from its own callback, it fires in the turn after, not in the same. */
static int turns, soon_turn[2], soon_fired;
static struct loop_timer ts, t0;
static int zero_turn;

static void on_busy(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	(void)io;
	(void)events;
	turns++;
}

static void on_soon(struct loop *l, struct loop_timer *t)
{
	soon_turn[soon_fired++] = turns;
	if (soon_fired == 1)
		loop_timer_soon(l, t, on_soon);
}

static void on_zero(struct loop *l, struct loop_timer *t)
{
	(void)t;
	zero_turn = turns;
	loop_stop(l);
}

static void test_a_soon_timer_fires_in_the_next_turn(void)
{
	struct loop *l = loop_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(l);
	int p[2];
	CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
	CU_ASSERT_EQUAL(write(p[1], "x", 1), 1);
	struct loop_io io = {0};
	CU_ASSERT_EQUAL(loop_io_start(l, &io, p[0], LOOP_READ, on_busy), 0);
	turns = soon_fired = zero_turn = 0;
	fired_guard = 0;
	loop_timer_start(l, &guard, 5, on_guard);
	loop_timer_start(l, &t0, 0, on_zero); /* stops the loop at the next whole second */
	loop_timer_soon(l, &ts, on_soon);
	CU_ASSERT_TRUE(loop_timer_armed(&ts));
	CU_ASSERT_EQUAL(loop_run(l), 0);
	CU_ASSERT_EQUAL(fired_guard, 0);
	CU_ASSERT_EQUAL(soon_fired, 2);
	CU_ASSERT_EQUAL(soon_turn[0], 1);
	CU_ASSERT_EQUAL(soon_turn[1], 2);
	CU_ASSERT(zero_turn >= soon_turn[1]);
	CU_ASSERT_FALSE(loop_timer_armed(&ts));
	/* Stopped before its turn, it does not fire. */
	loop_timer_soon(l, &ts, on_soon);
	loop_timer_stop(l, &ts);
	loop_timer_start(l, &t0, 0, on_zero);
	soon_fired = 0;
	CU_ASSERT_EQUAL(loop_run(l), 0);
	CU_ASSERT_EQUAL(soon_fired, 0);
	loop_timer_stop(l, &guard);
	loop_io_stop(l, &io);
	close(p[0]);
	close(p[1]);
	loop_free(l);
}

static CU_TestInfo loop_tests[] = {
	{"a soon timer fires in the next turn", test_a_soon_timer_fires_in_the_next_turn},
	{"moved deadlines fire their own callbacks on time", test_moved_deadlines_fire_their_own_callbacks_on_time},
	{"an io registration calls its own callback", test_an_io_registration_calls_its_own_callback},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"loop", NULL, NULL, NULL, NULL, loop_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
