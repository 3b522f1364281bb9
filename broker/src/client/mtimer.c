/*
 * Millisecond timer heap over a timerfd; see mtimer.h for the cost model.
 * Callbacks run from the timerfd's I/O callback, so they may start or stop
 * any timer, including the one firing.
 */
#include "mtimer.h"

#include <errno.h>
#include <stdint.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "list.h"

struct mtimers {
	struct loop *loop;
	struct loop_io io;
	struct mtimer **heap;
	size_t len, cap;
	uint64_t armed_for; /* deadline the timerfd is set to; 0 = disarmed */
};

uint64_t mtimer_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void heap_swap(struct mtimers *ts, size_t a, size_t b)
{
	struct mtimer *t = ts->heap[a];
	ts->heap[a] = ts->heap[b];
	ts->heap[b] = t;
	ts->heap[a]->idx = a;
	ts->heap[b]->idx = b;
}

static void sift_up(struct mtimers *ts, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (ts->heap[p]->deadline_ms <= ts->heap[i]->deadline_ms)
			break;
		heap_swap(ts, i, p);
		i = p;
	}
}

static void sift_down(struct mtimers *ts, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < ts->len && ts->heap[l]->deadline_ms < ts->heap[m]->deadline_ms)
			m = l;
		if (r < ts->len && ts->heap[r]->deadline_ms < ts->heap[m]->deadline_ms)
			m = r;
		if (m == i)
			return;
		heap_swap(ts, i, m);
		i = m;
	}
}

/* Points the timerfd at the earliest deadline (absolute, so no drift). */
static void rearm(struct mtimers *ts)
{
	uint64_t want = ts->len ? ts->heap[0]->deadline_ms : 0;
	if (want == ts->armed_for)
		return;
	struct itimerspec its = {0};
	if (want) {
		/* Absolute: a deadline already past fires at once. */
		its.it_value.tv_sec = (time_t)(want / 1000u);
		its.it_value.tv_nsec = (long)(want % 1000u) * 1000000L;
	}
	timerfd_settime(ts->io.fd, TFD_TIMER_ABSTIME, &its, NULL);
	ts->armed_for = want;
}

static void on_timerfd(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	(void)events;
	struct mtimers *ts = container_of(io, struct mtimers, io);
	uint64_t expirations;
	while (read(io->fd, &expirations, sizeof expirations) == -1 && errno == EINTR) {
	}
	ts->armed_for = 0;
	uint64_t now = mtimer_now_ms();
	/* Bounded: a timer re-armed from its callback lands in the future
	 * (delay 0 still fires, but on the next pass through the loop). */
	size_t budget = ts->len;
	while (ts->len && ts->heap[0]->deadline_ms <= now && budget--) {
		struct mtimer *t = ts->heap[0];
		mtimer_stop(ts, t);
		t->cb(t, t->ud);
	}
	rearm(ts);
}

struct mtimers *mtimers_new(struct loop *l)
{
	struct mtimers *ts = wisp_calloc(1, sizeof *ts);
	if (!ts)
		return NULL;
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (fd == -1)
		goto fail;
	ts->loop = l;
	if (loop_io_start(l, &ts->io, fd, LOOP_READ, on_timerfd) != 0) {
		close(fd);
		goto fail;
	}
	return ts;
fail:
	wisp_free(ts);
	return NULL;
}

void mtimers_free(struct mtimers *ts)
{
	if (!ts)
		return;
	for (size_t i = 0; i < ts->len; i++)
		ts->heap[i]->idx = SIZE_MAX;
	loop_io_stop(ts->loop, &ts->io);
	close(ts->io.fd);
	wisp_free(ts->heap);
	wisp_free(ts);
}

void mtimer_init(struct mtimer *t, mtimer_fn cb, void *ud)
{
	t->deadline_ms = 0;
	t->idx = SIZE_MAX;
	t->cb = cb;
	t->ud = ud;
}

bool mtimer_is_armed(const struct mtimer *t) { return t->idx != SIZE_MAX; }

int mtimer_start(struct mtimers *ts, struct mtimer *t, uint64_t delay_ms)
{
	uint64_t deadline = mtimer_now_ms() + delay_ms;
	if (mtimer_is_armed(t)) {
		uint64_t old = t->deadline_ms;
		t->deadline_ms = deadline;
		if (deadline < old)
			sift_up(ts, t->idx);
		else
			sift_down(ts, t->idx);
		rearm(ts);
		return 0;
	}
	if (ts->len == ts->cap) {
		size_t ncap = ts->cap ? ts->cap * 2 : 64;
		struct mtimer **h = wisp_realloc(ts->heap, ncap * sizeof *h);
		if (!h)
			return WISP_ENOMEM;
		ts->heap = h;
		ts->cap = ncap;
	}
	t->deadline_ms = deadline;
	t->idx = ts->len;
	ts->heap[ts->len++] = t;
	sift_up(ts, t->idx);
	rearm(ts);
	return 0;
}

void mtimer_stop(struct mtimers *ts, struct mtimer *t)
{
	if (!mtimer_is_armed(t))
		return;
	size_t i = t->idx;
	size_t last = --ts->len;
	if (i != last) {
		ts->heap[i] = ts->heap[last];
		ts->heap[i]->idx = i;
		sift_down(ts, i);
		sift_up(ts, i);
	}
	t->idx = SIZE_MAX;
	/* The timerfd may now point earlier than needed: a spurious wakeup
	 * is cheaper than a syscall per stop, so rearm lazily. */
}
