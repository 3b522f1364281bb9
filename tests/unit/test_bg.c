/*
 * Background jobs (core/bg): a job cancelled before it starts never runs
 * and its done() is never called; a running job cannot be cancelled and
 * completes as usual; with several helper threads, jobs run side by side;
 * bg_abandon does not wait for a running job.
 * The loop is never run: bg_free drains finished jobs itself.
 */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdbool.h>

#include "unit_main.h"
#include "bg.h"
#include "list.h"
#include "loop.h"

struct tjob {
	struct bg_job job;
	bool ran, done;
};

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static unsigned running; /* jobs inside blocking_work, guarded by gate_lock */

/* Holds the helper thread until the test opens the gate. */
static void blocking_work(struct bg_job *job)
{
	struct tjob *t = container_of(job, struct tjob, job);
	pthread_mutex_lock(&gate_lock);
	running++;
	pthread_cond_broadcast(&gate_cond);
	while (!gate_open)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	t->ran = true;
}

static void plain_work(struct bg_job *job) { container_of(job, struct tjob, job)->ran = true; }
static void mark_done(struct bg_job *job) { container_of(job, struct tjob, job)->done = true; }

static void wait_running(unsigned n)
{
	pthread_mutex_lock(&gate_lock);
	while (running < n)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
}

static void open_gate(void)
{
	pthread_mutex_lock(&gate_lock);
	gate_open = true;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

static void reset_gate(void)
{
	gate_open = false;
	running = 0;
}

static void test_cancel_before_start_skips_work_and_done(void)
{
	reset_gate();
	struct loop *l = loop_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(l);
	struct bg *bg = bg_new(l, 8, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(bg);
	struct tjob first = {.job = {.work = blocking_work, .done = mark_done}};
	struct tjob second = {.job = {.work = plain_work, .done = mark_done}};
	struct tjob third = {.job = {.work = plain_work, .done = mark_done}};
	CU_ASSERT_EQUAL(bg_submit(bg, &first.job), 0);
	CU_ASSERT_EQUAL(bg_submit(bg, &second.job), 0);
	CU_ASSERT_EQUAL(bg_submit(bg, &third.job), 0);
	wait_running(1); /* first is on the only helper thread */
	CU_ASSERT_EQUAL(bg_pending(bg), 3);
	CU_ASSERT_TRUE(bg_cancel(bg, &second.job));
	CU_ASSERT_FALSE(bg_cancel(bg, &second.job)); /* no longer queued */
	CU_ASSERT_FALSE(bg_cancel(bg, &first.job));  /* running: completes as usual */
	CU_ASSERT_EQUAL(bg_pending(bg), 2);
	open_gate();
	bg_free(bg);
	loop_free(l);
	CU_ASSERT_TRUE(first.ran && first.done);
	CU_ASSERT_FALSE(second.ran || second.done);
	CU_ASSERT_TRUE(third.ran && third.done);
}

static void test_cancel_of_the_last_queued_job_keeps_the_queue_usable(void)
{
	reset_gate();
	struct loop *l = loop_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(l);
	struct bg *bg = bg_new(l, 8, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(bg);
	struct tjob first = {.job = {.work = blocking_work, .done = mark_done}};
	struct tjob tail = {.job = {.work = plain_work, .done = mark_done}};
	struct tjob after = {.job = {.work = plain_work, .done = mark_done}};
	CU_ASSERT_EQUAL(bg_submit(bg, &first.job), 0);
	wait_running(1);
	CU_ASSERT_EQUAL(bg_submit(bg, &tail.job), 0);
	CU_ASSERT_TRUE(bg_cancel(bg, &tail.job)); /* the tail pointer must move back */
	CU_ASSERT_EQUAL(bg_submit(bg, &after.job), 0);
	open_gate();
	bg_free(bg);
	loop_free(l);
	CU_ASSERT_FALSE(tail.ran || tail.done);
	CU_ASSERT_TRUE(after.ran && after.done);
}

static void test_two_threads_run_two_jobs_at_once(void)
{
	reset_gate();
	struct loop *l = loop_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(l);
	struct bg *bg = bg_new(l, 8, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(bg);
	struct tjob a = {.job = {.work = blocking_work, .done = mark_done}};
	struct tjob b = {.job = {.work = blocking_work, .done = mark_done}};
	CU_ASSERT_EQUAL(bg_submit(bg, &a.job), 0);
	CU_ASSERT_EQUAL(bg_submit(bg, &b.job), 0);
	wait_running(2); /* would hang with one thread: the test's timeout says so */
	open_gate();
	bg_free(bg);
	CU_ASSERT_PTR_NULL(bg_new(l, 8, 0));
	CU_ASSERT_PTR_NULL(bg_new(l, 8, BG_MAX_THREADS + 1));
	loop_free(l);
	CU_ASSERT_TRUE(a.done && b.done);
}

/* Outlives the test: bg_abandon leaves it to its thread. */
static struct tjob held = {.job = {.work = blocking_work, .done = mark_done}};

/* bg_abandon does not wait for a running job (a name lookup that hangs
 * must not hold the exit): it returns with the job still running, joins
 * the idle thread, and the job's done() never runs, even once work()
 * returns. */
static void test_abandon_returns_while_a_job_runs(void)
{
	reset_gate();
	struct loop *l = loop_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(l);
	struct bg *bg = bg_new(l, 8, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(bg);
	CU_ASSERT_EQUAL(bg_submit(bg, &held.job), 0);
	wait_running(1);
	bg_abandon(bg); /* would hang until the gate opens: the test's timeout says so */
	loop_free(l);
	CU_ASSERT_FALSE(held.done);
	open_gate(); /* the thread ends on its own, touching nothing of ours */
}

static CU_TestInfo bg_tests[] = {
	{"cancel before start skips work and done", test_cancel_before_start_skips_work_and_done},
	{"cancel of the last queued job keeps the queue usable",
	 test_cancel_of_the_last_queued_job_keeps_the_queue_usable},
	{"two threads run two jobs at once", test_two_threads_run_two_jobs_at_once},
	{"abandon returns while a job runs", test_abandon_returns_while_a_job_runs},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"bg", NULL, NULL, NULL, NULL, bg_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
