/*
 * Event loop over epoll (level-triggered) with a one-second timer wheel.
 *
 * Timer cost model: WHEEL_SLOTS lists indexed by deadline % WHEEL_SLOTS.
 * Starting and stopping are O(1) list operations. Deadlines that move later
 * (keepalive refreshed by every packet) are only stored; when the slot is
 * visited the timer is re-filed under its new deadline. Deadlines further
 * away than the wheel's span simply survive a few visits. Each second the
 * loop visits only the slots whose time has come, so the cost is
 * proportional to the timers due (plus re-filings), not to all timers.
 *
 * Single-threaded: every function runs on the loop thread.
 */
#include "loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"

#define WHEEL_SLOTS (1u << LOOP_WHEEL_BITS)
#define MAX_EVENTS 256

struct loop {
	int epfd;
	bool running;
	bool turn_requested;
	uint64_t now_ms;
	uint64_t wheel_pos; /* every slot < wheel_pos has been visited */
	struct list_node wheel[WHEEL_SLOTS];
	struct list_node soon; /* loop_timer_soon's: run at the next turn's timers */
	loop_hook_fn before_sleep;
	void *before_sleep_ctx;
	struct epoll_event events[MAX_EVENTS];
	loop_io_fn io_cbs[LOOP_IO_CBS]; /* struct loop_io.cb indexes this */
	unsigned io_ncbs;
	loop_timer_fn timer_cbs[LOOP_TIMER_CBS]; /* struct loop_timer.cb indexes this */
	unsigned timer_ncbs;
};

static uint64_t clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct loop *loop_new(void)
{
	struct loop *l = wisp_calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd == -1) {
		wisp_free(l);
		return NULL;
	}
	for (size_t i = 0; i < WHEEL_SLOTS; i++)
		list_init(&l->wheel[i]);
	list_init(&l->soon);
	l->now_ms = clock_ms();
	l->wheel_pos = l->now_ms / 1000u;
	return l;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	close(l->epfd);
	wisp_free(l);
}

/* EPOLLRDHUP is always asked for, so a socket whose reading is paused
 * (events 0) still learns that its peer closed, as LOOP_READ: it cannot be
 * masked like EPOLLHUP, and an owner that does not want to read takes
 * readability it did not ask for as "the peer is gone". */
static uint32_t to_epoll(uint32_t events)
{
	return (uint32_t)EPOLLRDHUP | ((events & LOOP_READ) ? (uint32_t)EPOLLIN : 0u) |
	       ((events & LOOP_WRITE) ? (uint32_t)EPOLLOUT : 0u);
}

int loop_io_start(struct loop *l, struct loop_io *io, int fd, uint32_t events, loop_io_fn cb)
{
	unsigned slot = 0;
	while (slot < l->io_ncbs && l->io_cbs[slot] != cb)
		slot++;
	if (slot == l->io_ncbs) {
		/* A new kind of descriptor in the code, not more load. */
		if (slot == LOOP_IO_CBS)
			return WISP_ELIMIT;
		l->io_cbs[l->io_ncbs++] = cb;
	}
	struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
	io->fd = fd;
	io->cb = (uint16_t)slot;
	io->events = (uint16_t)events;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) == -1)
		return errno == ENOMEM ? WISP_ENOMEM : WISP_EIO;
	return 0;
}

int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events)
{
	if (io->events == events)
		return 0;
	struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) == -1)
		return WISP_EIO;
	io->events = (uint16_t)events;
	return 0;
}

void loop_io_stop(struct loop *l, struct loop_io *io)
{
	if (io->fd >= 0)
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->events = 0;
}

uint64_t loop_now_s(const struct loop *l) { return l->now_ms / 1000u; }
uint64_t loop_now_ms(const struct loop *l) { return l->now_ms; }

static void timer_file(struct loop *l, struct loop_timer *t)
{
	/* A deadline already in the past goes into the slot visited next. */
	uint64_t slot = t->deadline < l->wheel_pos ? l->wheel_pos : t->deadline;
	unsigned wheel_slot = (unsigned)(slot % WHEEL_SLOTS);
	t->slot_cb = (uint16_t)((t->slot_cb & ~(WHEEL_SLOTS - 1)) | wheel_slot);
	list_push_back(&l->wheel[wheel_slot], &t->link);
}

/* The second at which run_timers next visits the timer's slot: the first
 * position from wheel_pos on with that index. */
static uint64_t timer_next_visit(const struct loop *l, const struct loop_timer *t)
{
	unsigned wheel_slot = t->slot_cb & (WHEEL_SLOTS - 1);
	return l->wheel_pos + (wheel_slot + WHEEL_SLOTS - l->wheel_pos % WHEEL_SLOTS) % WHEEL_SLOTS;
}

/* The timer's callback slot: the one it had if the callback is the same
 * (a timer restarted with its own callback, the common case), else found
 * or added. The set of timer callbacks is fixed by the code (a few dozen),
 * so running out of slots is a build's error, never load's. */
static unsigned timer_cb(const struct loop_timer *t) { return (unsigned)t->slot_cb >> LOOP_WHEEL_BITS; }

static unsigned timer_cb_slot(struct loop *l, const struct loop_timer *t, loop_timer_fn cb)
{
	if (timer_cb(t) < l->timer_ncbs && l->timer_cbs[timer_cb(t)] == cb)
		return timer_cb(t);
	unsigned slot = 0;
	while (slot < l->timer_ncbs && l->timer_cbs[slot] != cb)
		slot++;
	if (slot == l->timer_ncbs) {
		if (slot == LOOP_TIMER_CBS) {
			fprintf(stderr, "wisp: more than %d distinct timer callbacks (LOOP_TIMER_CBS)\n", LOOP_TIMER_CBS);
			abort();
		}
		l->timer_cbs[l->timer_ncbs++] = cb;
	}
	return slot;
}

void loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t seconds, loop_timer_fn cb)
{
	if (loop_timer_armed(t))
		list_remove(&t->link);
	t->slot_cb = (uint16_t)(timer_cb_slot(l, t, cb) << LOOP_WHEEL_BITS);
	/* Rounded up: a timer never fires before `seconds` have passed. */
	t->deadline = (uint32_t)((l->now_ms + seconds * 1000u + 999u) / 1000u);
	timer_file(l, t);
}

void loop_timer_soon(struct loop *l, struct loop_timer *t, loop_timer_fn cb)
{
	if (loop_timer_armed(t))
		list_remove(&t->link);
	/* Its wheel slot says the current one, so that a deadline set on it
	 * later is filed as for a timer due now. */
	t->slot_cb = (uint16_t)(timer_cb_slot(l, t, cb) << LOOP_WHEEL_BITS | (unsigned)(l->wheel_pos % WHEEL_SLOTS));
	t->deadline = (uint32_t)loop_now_s(l);
	list_push_back(&l->soon, &t->link);
	l->turn_requested = true;
}

void loop_timer_set_deadline(struct loop *l, struct loop_timer *t, uint64_t deadline)
{
	t->deadline = (uint32_t)deadline;
	/* Later deadlines are re-filed lazily when their slot comes round; an
	 * earlier one must move now or it would fire late. */
	if (loop_timer_armed(t) && deadline < timer_next_visit(l, t)) {
		list_remove(&t->link);
		timer_file(l, t);
	}
}

void loop_timer_stop(struct loop *l, struct loop_timer *t)
{
	(void)l;
	if (loop_timer_armed(t))
		list_remove(&t->link);
}

static void run_timers(struct loop *l)
{
	/* The soon ones first, detached: one started again by its callback
	 * waits for the next turn. */
	struct list_node soon;
	struct list_node *n;
	list_take_all(&l->soon, &soon);
	while ((n = list_first(&soon)) != NULL) {
		struct loop_timer *t = container_of(n, struct loop_timer, link);
		list_remove(n);
		l->timer_cbs[timer_cb(t)](l, t);
	}
	uint64_t now = loop_now_s(l);
	while (l->wheel_pos <= now) {
		struct list_node *slot = &l->wheel[l->wheel_pos % WHEEL_SLOTS];
		/* Detach the slot first: callbacks may start timers that land in
		 * this very slot, and those must wait for the next visit. */
		struct list_node due;
		list_take_all(slot, &due);
		l->wheel_pos++;
		while ((n = list_first(&due)) != NULL) {
			struct loop_timer *t = container_of(n, struct loop_timer, link);
			list_remove(n);
			if (t->deadline > now) {
				timer_file(l, t);
				continue;
			}
			l->timer_cbs[timer_cb(t)](l, t); /* unlinked above: it may start itself again */
		}
	}
}

void loop_set_before_sleep(struct loop *l, loop_hook_fn fn, void *ctx)
{
	l->before_sleep = fn;
	l->before_sleep_ctx = ctx;
}

void loop_request_turn(struct loop *l) { l->turn_requested = true; }

void loop_stop(struct loop *l) { l->running = false; }

static int poll_timeout_ms(struct loop *l)
{
	if (l->turn_requested)
		return 0;
	/* Wake at the next second boundary so timers fire on time. */
	uint64_t next = (loop_now_s(l) + 1) * 1000u;
	return (int)(next - l->now_ms);
}

int loop_run(struct loop *l)
{
	l->running = true;
	while (l->running) {
		int timeout = poll_timeout_ms(l);
		l->turn_requested = false;
		int n = epoll_wait(l->epfd, l->events, MAX_EVENTS, timeout);
		if (n == -1) {
			if (errno != EINTR)
				return WISP_EIO;
			n = 0;
		}
		l->now_ms = clock_ms();
		for (int i = 0; i < n; i++) {
			struct loop_io *io = l->events[i].data.ptr;
			uint32_t e = l->events[i].events;
			uint32_t ev = 0;
			if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
				ev |= LOOP_READ;
			if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
				ev |= LOOP_WRITE;
			l->io_cbs[io->cb](l, io, ev);
		}
		run_timers(l);
		if (l->before_sleep)
			l->before_sleep(l, l->before_sleep_ctx);
	}
	return 0;
}
