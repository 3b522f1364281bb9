/*
 * The one place where the NATS client's threads meet the broker's loop
 * thread: a bounded ring of opaque items (received NATS messages) and a
 * set of event bits (connection state changes), guarded by a mutex, with
 * an eventfd the loop polls.
 *
 * Producers (any thread) push; a push into a full ring fails and is
 * counted in `dropped`, never blocks, never grows the ring: a NATS server
 * or a remote node faster than this loop costs counted drops, not memory.
 * Full is cap items, or, with a byte bound (inbox_init_bytes), items whose
 * sizes as pushed add up to max_bytes: the items' own memory, which the
 * inbox holds until the loop takes them (one item is let in whatever its
 * size while the ring is empty, so none is too large to pass ever).
 * The eventfd is written when the ring goes from empty to non-empty or an
 * event is raised, so a busy stream costs one write per drain, not per
 * message. The consumer (the loop thread only) takes a batch at a time.
 *
 * Memory: cap pointers (and cap sizes with a byte bound), fixed at init.
 * Locking: one mutex, held only to move pointers in and out of the ring.
 */
#ifndef WISP_CLUSTER_INBOX_H
#define WISP_CLUSTER_INBOX_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct inbox {
	pthread_mutex_t mu;
	void **items;
	uint32_t *sizes;   /* each queued item's bytes (with max_bytes), at its index */
	size_t cap, head, len;
	uint64_t bytes, max_bytes; /* queued items' bytes and their bound (0: none) */
	unsigned events;   /* raised bits, cleared by inbox_take */
	uint64_t dropped;  /* pushes refused because the ring was full */
	bool closed;       /* inbox_close: pushes refused (not counted) */
	int efd;
};

/* 0, or WISP_ENOMEM / WISP_EIO (eventfd). cap >= 1. */
int inbox_init(struct inbox *q, size_t cap);
/* The same with a bound on the queued items' bytes (inbox_push_sized). */
int inbox_init_bytes(struct inbox *q, size_t cap, uint64_t max_bytes);
/* Frees what is still queued with free_item (may be NULL), then the ring. */
void inbox_free(struct inbox *q, void (*free_item)(void *));

/* Refuses every later push and frees what is queued with free_item: while
 * the NATS library can still free its messages (before nats_CloseAndWait,
 * after which a late callback's push must not find the ring open). */
void inbox_close(struct inbox *q, void (*free_item)(void *));
/* Any thread. true: queued (the inbox owns it until taken); false: full,
 * counted, the caller still owns it. */
bool inbox_push(struct inbox *q, void *item);
/* The same for an item of `bytes` (counted against max_bytes). */
bool inbox_push_sized(struct inbox *q, void *item, size_t bytes);
/* Any thread: raises event bits and wakes the loop. */
void inbox_raise(struct inbox *q, unsigned events);

/*
 * Loop thread: takes up to max items (oldest first) into out, and the
 * raised events and the drop count so far. Resets the eventfd, and sets it
 * again if items remain, so a level-triggered loop comes back for them.
 */
size_t inbox_take(struct inbox *q, void **out, size_t max, unsigned *events, uint64_t *dropped);

#endif
