/*
 * Millisecond timers for the client tools.
 *
 * core/loop's wheel has one-second slots, which suits broker keepalives but
 * not a sensor publishing every 250 ms with jitter or --repeat-delay 0.1.
 * This module keeps a binary min-heap of millisecond deadlines and arms one
 * timerfd, registered in the loop, for the earliest one. Start, stop and
 * re-arm are O(log n); the heap array grows with wisp_realloc and never
 * shrinks. A timer is embedded in its owner (no allocation per timer).
 *
 * Single-threaded: everything runs on the loop thread.
 */
#ifndef WISP_CLIENT_MTIMER_H
#define WISP_CLIENT_MTIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

struct mtimers;
struct mtimer;

typedef void (*mtimer_fn)(struct mtimer *t, void *ud);

struct mtimer {
	uint64_t deadline_ms; /* CLOCK_MONOTONIC milliseconds */
	size_t idx;           /* position in the heap; SIZE_MAX when idle */
	mtimer_fn cb;
	void *ud;
};

/* NULL on failure (no memory or no timerfd). */
struct mtimers *mtimers_new(struct loop *l);
/* Timers still armed are simply forgotten. */
void mtimers_free(struct mtimers *ts);

/* Must be called once before the timer is first used. */
void mtimer_init(struct mtimer *t, mtimer_fn cb, void *ud);
/* (Re)arms `t` to fire once, `delay_ms` from now. 0 or WISP_ENOMEM. */
int mtimer_start(struct mtimers *ts, struct mtimer *t, uint64_t delay_ms);
void mtimer_stop(struct mtimers *ts, struct mtimer *t);
bool mtimer_is_armed(const struct mtimer *t);

/* CLOCK_MONOTONIC in milliseconds (not cached, unlike loop_now_ms). */
uint64_t mtimer_now_ms(void);

#endif
