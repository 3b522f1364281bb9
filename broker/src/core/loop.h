/*
 * The event loop: epoll readiness, second-granularity timers and a hook
 * that runs once per turn before the loop sleeps.
 *
 * One turn: wait for events -> dispatch I/O callbacks -> fire expired
 * timers -> run the before-sleep hook (the broker flushes coalesced output
 * and frees connections closed during the turn there). Level-triggered.
 * Single-threaded; nothing here is safe to call from another thread except
 * loop_wake().
 */
#ifndef WISP_CORE_LOOP_H
#define WISP_CORE_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "list.h"

#define LOOP_READ 0x1u
#define LOOP_WRITE 0x2u

struct loop;
struct loop_io;
struct loop_timer;

typedef void (*loop_io_fn)(struct loop *l, struct loop_io *io, uint32_t events);
typedef void (*loop_timer_fn)(struct loop *l, struct loop_timer *t);
typedef void (*loop_hook_fn)(struct loop *l, void *ctx);

/* Embedded in its owner; recover the owner with container_of. 8 bytes,
 * in every connection (issue 18): the callback is a slot of the loop's
 * table of the few distinct callbacks (LOOP_IO_CBS), not a pointer. */
struct loop_io {
	int fd;
	uint16_t events; /* LOOP_READ | LOOP_WRITE currently registered */
	uint16_t cb;     /* the loop's callback slot (loop_io_start) */
};
_Static_assert(sizeof(struct loop_io) == 8, "an io registration stays at 8 bytes");
/* Distinct loop_io callbacks a loop can hold: the program has a fixed set
 * of them (one per kind of descriptor), far fewer. */
#define LOOP_IO_CBS 64

/*
 * Intrusive timer. Timers live in a wheel of one-second slots, so start and
 * stop are O(1). Moving a deadline later (keepalive on every packet) only
 * writes `deadline`: when the slot comes round the timer is re-filed if its
 * deadline moved, instead of paying a list move per packet.
 */
struct loop_timer {
	struct list_node link; /* linked while armed */
	uint32_t deadline;     /* loop_now_s() value at which it fires */
	/* The wheel slot it is filed under (the low LOOP_WHEEL_BITS) and its
	 * callback's slot in the loop's table (the bits above). */
	uint16_t slot_cb;
	/* Two bytes the loop never reads or writes, for the struct that
	 * embeds the timer (struct conn keeps its keepalive there). */
	uint16_t owner_u16;
};
/* 24 bytes: every connection embeds one (issue 18). Monotonic seconds fit
 * 32 bits; the callback is a slot of the loop's table of the program's
 * few distinct timer callbacks (LOOP_TIMER_CBS), as struct loop_io's. */
_Static_assert(sizeof(struct loop_timer) <= 24, "a timer stays small");
#define LOOP_WHEEL_BITS 9
#define LOOP_TIMER_CBS (1 << (16 - LOOP_WHEEL_BITS))

struct loop *loop_new(void);
void loop_free(struct loop *l);

/* 0; WISP_EIO or WISP_ENOMEM from epoll; WISP_ELIMIT if `cb` would be the
 * loop's LOOP_IO_CBS + 1st distinct callback. */
int loop_io_start(struct loop *l, struct loop_io *io, int fd, uint32_t events, loop_io_fn cb);
int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events);
void loop_io_stop(struct loop *l, struct loop_io *io);

/* Monotonic seconds, cached once per turn. */
uint64_t loop_now_s(const struct loop *l);
/* Monotonic milliseconds, cached once per turn. */
uint64_t loop_now_ms(const struct loop *l);

/* Fires `cb` once, `seconds` from now, at a tick of the wheel: whole
 * seconds, rounded up, so 0 means at the next whole second (up to a
 * second away), never in this turn. */
void loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t seconds, loop_timer_fn cb);
/* Fires `cb` once in the next turn, after that turn's I/O (whose poll then
 * does not wait): work gathered over a turn, done once. */
void loop_timer_soon(struct loop *l, struct loop_timer *t, loop_timer_fn cb);
/* Moves an armed timer's deadline; O(1). */
void loop_timer_set_deadline(struct loop *l, struct loop_timer *t, uint64_t deadline);
static inline bool loop_timer_armed(const struct loop_timer *t) { return list_linked(&t->link); }
void loop_timer_stop(struct loop *l, struct loop_timer *t);

void loop_set_before_sleep(struct loop *l, loop_hook_fn fn, void *ctx);
/* Makes the next poll return at once (work was queued during the turn). */
void loop_request_turn(struct loop *l);

/* Runs until loop_stop(); returns 0, or a negative WISP_E* if epoll failed. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

#endif
