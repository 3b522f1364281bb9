/*
 * The answers to other nodes' start-up directory requests
 * (broker/src/cluster/dir_answers.h): each tells every persistent session
 * held here once (digest and, asked for, claim time) and no clean one, in
 * steps of DIR_STEP sessions;
 * at most DIR_ANSWERS_MAX answers are under way (the others refused, and
 * taken again once those are answered), a node asking again has its answer
 * started over to its new reply subject; a chunk the emitter refuses is
 * offered again, whole, and nothing is lost or told twice; the table
 * growing during a walk loses nobody; out of memory nothing starts and
 * nothing leaks (ASan).
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "dir_answers.h"
#include "handover_impl.h"
#include "log.h"
#include "session.h"
#include "unit_main.h"

#define MAX_TOLD 40000

/* What the emitter was handed, per reply subject. */
struct told {
	char reply[64];
	bool times;
	uint64_t ids[MAX_TOLD];
	uint64_t at[MAX_TOLD];
	size_t n;
	size_t messages;
	size_t largest;
};

struct emitter {
	struct told to[DIR_ANSWERS_MAX + 4];
	size_t nto;
	bool refuse;     /* the queue is full */
	size_t offered;  /* calls, taken or not */
	const uint8_t *last_refused;
	size_t last_refused_len;
	uint8_t refused_copy[2 * HANDOVER_CHUNK];
	bool same_again; /* the chunk offered after a refusal was the refused one */
};

static struct told *told_to(struct emitter *e, const char *reply)
{
	for (size_t i = 0; i < e->nto; i++)
		if (strcmp(e->to[i].reply, reply) == 0)
			return &e->to[i];
	CU_ASSERT_FATAL(e->nto < sizeof e->to / sizeof e->to[0]);
	struct told *t = &e->to[e->nto++];
	memset(t, 0, sizeof *t);
	snprintf(t->reply, sizeof t->reply, "%s", reply);
	return t;
}

static bool emit(void *ctx, const char *reply, const uint8_t *chunk, size_t len, bool times)
{
	struct emitter *e = ctx;
	e->offered++;
	if (e->last_refused_len) {
		e->same_again = len == e->last_refused_len && memcmp(chunk, e->refused_copy, len) == 0;
		if (!e->refuse)
			e->last_refused_len = 0;
	}
	if (e->refuse) {
		CU_ASSERT_FATAL(len <= sizeof e->refused_copy);
		memcpy(e->refused_copy, chunk, len);
		e->last_refused_len = len;
		return false;
	}
	size_t entry = times ? 16 : 8;
	CU_ASSERT_EQUAL(len % entry, 0);
	struct told *t = told_to(e, reply);
	t->times = times;
	t->messages++;
	if (len > t->largest)
		t->largest = len;
	for (size_t i = 0; i + entry <= len; i += entry) {
		uint64_t v[2] = {0, 0};
		for (size_t k = 0; k < entry; k++)
			v[k / 8] |= (uint64_t)chunk[i + k] << (8 * (k % 8));
		CU_ASSERT_FATAL(t->n < MAX_TOLD);
		t->ids[t->n] = v[0];
		t->at[t->n++] = v[1];
	}
	return true;
}

struct table {
	struct session_table tab;
	size_t persistent, clean;
};

/* n persistent sessions "p<i>" (claim time 1000 + i) and n / 4 clean ones. */
static void table_fill(struct table *t, size_t from, size_t n)
{
	char id[32];
	for (size_t i = from; i < from + n; i++) {
		int len = snprintf(id, sizeof id, "p%zu", i);
		struct session *s = sess_create(&t->tab, id, (size_t)len, false);
		CU_ASSERT_FATAL(s != NULL);
		CU_ASSERT_FATAL(sess_set_claim_ns(s, 1000 + i));
		t->persistent++;
		if (i % 4 == 0) {
			len = snprintf(id, sizeof id, "c%zu", i);
			CU_ASSERT_FATAL(sess_create(&t->tab, id, (size_t)len, true) != NULL);
			t->clean++;
		}
	}
}

static void table_init(struct table *t, size_t n)
{
	memset(t, 0, sizeof *t);
	CU_ASSERT_FATAL(sess_table_init(&t->tab) == 0);
	table_fill(t, 0, n);
}

/* A table of n persistent sessions (table_fill), an emitter and the
 * answers over them. */
struct fixture {
	struct table t;
	struct emitter *e;
	struct dir_answers *a;
};

static void fixture_start(struct fixture *f, size_t n)
{
	table_init(&f->t, n);
	f->e = calloc(1, sizeof *f->e);
	CU_ASSERT_FATAL(f->e != NULL);
	f->a = dir_answers_new(&f->t.tab, emit, f->e);
	CU_ASSERT_FATAL(f->a != NULL);
}

static void fixture_end(struct fixture *f)
{
	dir_answers_free(f->a);
	free(f->e);
	sess_table_free(&f->t.tab, NULL);
}

static int by_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The answer on `reply` names persistent sessions p0 .. p<n-1> each once,
 * with their claim times when asked for, and nothing else. */
static void assert_told_all(struct emitter *e, const char *reply, size_t n, bool times)
{
	struct told *t = told_to(e, reply);
	CU_ASSERT_EQUAL(t->n, n);
	CU_ASSERT_EQUAL(t->times, times);
	uint64_t *want = calloc(n ? n : 1, sizeof *want);
	uint64_t *got = calloc(n ? n : 1, sizeof *got);
	CU_ASSERT_FATAL(want && got);
	char id[32];
	for (size_t i = 0; i < n; i++) {
		int len = snprintf(id, sizeof id, "p%zu", i);
		want[i] = ho_digest(id, (size_t)len);
	}
	size_t m = t->n < n ? t->n : n;
	memcpy(got, t->ids, m * sizeof *got);
	qsort(want, n, sizeof *want, by_u64);
	qsort(got, m, sizeof *got, by_u64);
	CU_ASSERT(m == n && memcmp(want, got, n * sizeof *want) == 0);
	if (times)
		for (size_t i = 0; i < t->n; i++) {
			int len = snprintf(id, sizeof id, "p%zu", (size_t)(t->at[i] - 1000));
			CU_ASSERT_EQUAL(t->ids[i], ho_digest(id, (size_t)len));
		}
	else
		for (size_t i = 0; i < t->n; i++)
			CU_ASSERT_EQUAL(t->at[i], 0);
	free(want);
	free(got);
}

/* Steps until idle (bounded): the steps taken. */
static size_t run(struct dir_answers *a, struct emitter *e)
{
	size_t steps = 0;
	enum dir_progress p;
	do {
		p = dir_answers_step(a);
		CU_ASSERT_FATAL(++steps < 100000);
	} while (p == DIR_MORE);
	CU_ASSERT_EQUAL(p, DIR_IDLE);
	CU_ASSERT_EQUAL(dir_answers_pending(a), 0);
	return steps;
}

/* 10,000 persistent sessions (2,500 clean besides): every one told once
 * with its claim time, in messages of about HANDOVER_CHUNK bytes, over
 * at least one step per DIR_STEP sessions; without times, 8-byte entries. */
static void test_tells_each_persistent_session_once(void)
{
	struct fixture f;
	fixture_start(&f, 10000);
	struct emitter *e = f.e;
	struct dir_answers *a = f.a;
	CU_ASSERT_EQUAL(dir_answers_step(a), DIR_IDLE);

	CU_ASSERT_EQUAL(dir_answers_request(a, "b", "_INBOX.b.1", true), DIR_TAKEN);
	CU_ASSERT_EQUAL(dir_answers_pending(a), 1);
	size_t steps = run(a, e);
	CU_ASSERT(steps >= 12500 / DIR_STEP);
	assert_told_all(e, "_INBOX.b.1", 10000, true);
	struct told *tb = told_to(e, "_INBOX.b.1");
	CU_ASSERT(tb->messages >= 10000 * 16 / HANDOVER_CHUNK);
	CU_ASSERT(tb->largest <= HANDOVER_CHUNK + 64 * 16); /* a chunk, and one bucket past it at most */

	CU_ASSERT_EQUAL(dir_answers_request(a, "c", "_INBOX.c.1", false), DIR_TAKEN);
	run(a, e);
	assert_told_all(e, "_INBOX.c.1", 10000, false);

	fixture_end(&f);
}

/* Nothing held: an answer of no message (the asker's slots stay as they
 * are), and the answer ends. */
static void test_nothing_held(void)
{
	struct fixture f;
	fixture_start(&f, 0);
	struct emitter *e = f.e;
	struct dir_answers *a = f.a;
	CU_ASSERT_EQUAL(dir_answers_request(a, "b", "_INBOX.b.1", true), DIR_TAKEN);
	run(a, e);
	CU_ASSERT_EQUAL(e->offered, 0);
	fixture_end(&f);
}

/* A flood of requests from distinct "nodes": DIR_ANSWERS_MAX are taken,
 * the rest refused; each taken one is answered whole; then a new node's
 * request is taken again. The same node asking again while its answer is
 * under way has it started over, to its new reply subject, without taking
 * another place. */
static void test_bounded_askers(void)
{
	struct fixture f;
	fixture_start(&f, 3000);
	struct emitter *e = f.e;
	struct dir_answers *a = f.a;
	char node[16], reply[32];
	size_t taken = 0, refused = 0;
	for (int i = 0; i < 1000; i++) {
		snprintf(node, sizeof node, "n%d", i);
		snprintf(reply, sizeof reply, "_INBOX.%d", i);
		enum dir_request r = dir_answers_request(a, node, reply, true);
		taken += r == DIR_TAKEN;
		refused += r == DIR_REFUSED;
		if (i == 0) /* a step in between: its walk is under way */
			CU_ASSERT_EQUAL(dir_answers_step(a), DIR_MORE);
	}
	CU_ASSERT_EQUAL(taken, DIR_ANSWERS_MAX);
	CU_ASSERT_EQUAL(refused, 1000 - DIR_ANSWERS_MAX);
	CU_ASSERT_EQUAL(dir_answers_pending(a), DIR_ANSWERS_MAX);

	/* n0 asks again, to another inbox: no new place taken */
	CU_ASSERT_EQUAL(dir_answers_request(a, "n0", "_INBOX.again", true), DIR_RESTARTED);
	CU_ASSERT_EQUAL(dir_answers_pending(a), DIR_ANSWERS_MAX);
	run(a, e);
	for (int i = 1; i < DIR_ANSWERS_MAX; i++) {
		snprintf(reply, sizeof reply, "_INBOX.%d", i);
		assert_told_all(e, reply, 3000, true);
	}
	assert_told_all(e, "_INBOX.again", 3000, true);
	/* what went to n0's first inbox before it asked again: part of one answer at most */
	CU_ASSERT(told_to(e, "_INBOX.0")->n < 3000);

	CU_ASSERT_EQUAL(dir_answers_request(a, "late", "_INBOX.late", false), DIR_TAKEN);
	run(a, e);
	assert_told_all(e, "_INBOX.late", 3000, false);

	/* the connection lost: nothing under way any more */
	CU_ASSERT_EQUAL(dir_answers_request(a, "x", "_INBOX.x", true), DIR_TAKEN);
	dir_answers_drop(a);
	CU_ASSERT_EQUAL(dir_answers_pending(a), 0);
	CU_ASSERT_EQUAL(dir_answers_step(a), DIR_IDLE);

	fixture_end(&f);
}

/* The emitter's queue full: the step waits, the chunk it refused is
 * offered again unchanged, and once it is taken the answer goes on with
 * nothing lost or told twice. */
static void test_refused_chunk_offered_again(void)
{
	struct fixture f;
	fixture_start(&f, 9000);
	struct emitter *e = f.e;
	struct dir_answers *a = f.a;
	CU_ASSERT_EQUAL(dir_answers_request(a, "b", "_INBOX.b", true), DIR_TAKEN);
	e->refuse = true;
	enum dir_progress p = DIR_MORE;
	for (int i = 0; i < 1000 && p == DIR_MORE; i++)
		p = dir_answers_step(a);
	CU_ASSERT_EQUAL(p, DIR_WAIT);
	size_t offered = e->offered;
	CU_ASSERT_EQUAL(dir_answers_step(a), DIR_WAIT); /* still full: the same chunk, no further walk */
	CU_ASSERT_EQUAL(e->offered, offered + 1);
	CU_ASSERT_TRUE(e->same_again);
	e->refuse = false;
	e->same_again = false;
	run(a, e);
	CU_ASSERT_TRUE(e->same_again);
	assert_told_all(e, "_INBOX.b", 9000, true);
	fixture_end(&f);
}

/* Sessions made during a walk make the table double under it: the
 * sessions there from the start are all told, once. */
static void test_table_grows_during_walk(void)
{
	struct fixture f;
	fixture_start(&f, 2000);
	struct table *t = &f.t;
	struct emitter *e = f.e;
	struct dir_answers *a = f.a;
	size_t buckets = t->tab.nbuckets;
	CU_ASSERT_EQUAL(dir_answers_request(a, "b", "_INBOX.b", true), DIR_TAKEN);
	CU_ASSERT_EQUAL(dir_answers_step(a), DIR_MORE);
	table_fill(t, 2000, 20000);
	CU_ASSERT(t->tab.nbuckets > buckets);
	run(a, e);
	struct told *tb = told_to(e, "_INBOX.b");
	uint64_t *got = calloc(tb->n, sizeof *got);
	CU_ASSERT_FATAL(got != NULL);
	memcpy(got, tb->ids, tb->n * sizeof *got);
	qsort(got, tb->n, sizeof *got, by_u64);
	for (size_t i = 1; i < tb->n; i++)
		CU_ASSERT_NOT_EQUAL(got[i - 1], got[i]);
	char id[32];
	for (size_t i = 0; i < 2000; i++) {
		int len = snprintf(id, sizeof id, "p%zu", i);
		uint64_t d = ho_digest(id, (size_t)len);
		CU_ASSERT(bsearch(&d, got, tb->n, sizeof *got, by_u64) != NULL);
	}
	free(got);
	fixture_end(&f);
}

/* Out of memory: a request starts nothing (and is not a place taken); a
 * reply subject too long for the answer is refused the same way. */
static void test_out_of_memory(void)
{
	struct fixture f;
	fixture_start(&f, 100);
	struct emitter *e = f.e;
	struct dir_answers *a = f.a;
	wisp_mem_fail_after(1, 1);
	CU_ASSERT_EQUAL(dir_answers_request(a, "b", "_INBOX.b", true), DIR_NO_MEMORY);
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_EQUAL(dir_answers_pending(a), 0);
	char long_reply[SUBJECT_MAX + 8];
	memset(long_reply, 'r', sizeof long_reply - 1);
	long_reply[sizeof long_reply - 1] = '\0';
	CU_ASSERT_EQUAL(dir_answers_request(a, "b", long_reply, true), DIR_NO_MEMORY);
	CU_ASSERT_EQUAL(dir_answers_pending(a), 0);
	CU_ASSERT_EQUAL(dir_answers_request(a, "b", "_INBOX.b", true), DIR_TAKEN);
	run(a, e);
	assert_told_all(e, "_INBOX.b", 100, true);
	fixture_end(&f);
}

static CU_TestInfo tests[] = {
	{"each persistent session told once, in bounded steps", test_tells_each_persistent_session_once},
	{"nothing held: no message", test_nothing_held},
	{"at most DIR_ANSWERS_MAX answers; a node asking again starts over", test_bounded_askers},
	{"a refused chunk is offered again, whole", test_refused_chunk_offered_again},
	{"the table doubling during a walk loses nobody", test_table_grows_during_walk},
	{"out of memory: nothing starts", test_out_of_memory},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_dir_answers", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	log_set_level(LOG_ERROR);
	return unit_run(suites);
}
