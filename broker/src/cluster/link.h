/*
 * Whether a NATS connection is up, as its cnats callbacks last said, for
 * the loop thread to read without cnats's connection lock.
 *
 * Every cnats call on a connection takes that lock, natsConnection_Status
 * included, and cnats's reconnect thread holds it through each connect
 * attempt: up to its connect timeout (cluster.connect_timeout) against a
 * server that accepts the TCP connection and never answers (frozen) or
 * one behind a network that drops the packets. A loop that asked cnats
 * then stopped every client of the node for that long, once per attempt
 * (tests/e2e/35_cluster_nats_stall.py). So the loop looks here first and
 * leaves a connection that is not up alone; what it skipped is made good
 * when the connection is back (each user says how).
 *
 * The flag trails cnats by the callback's hop (cnats's callback thread),
 * well inside the reconnect wait (500 ms) before the first attempt. The
 * same goes for a connection cnats gave up (closed for good): the loop
 * asks here, not natsConnection_Status, which of its connections it must
 * make anew.
 */
#ifndef WISP_CLUSTER_LINK_H
#define WISP_CLUSTER_LINK_H

#include <stdatomic.h>
#include <stdbool.h>

struct nats_link {
	atomic_bool up;
	atomic_uint_fast64_t ups;     /* times it came up: a reconnect between two looks shows */
	_Atomic(const void *) closed; /* the connection cnats last closed for good */
};

/* Any thread. NULL: not up. */
static inline bool nats_link_up(const struct nats_link *l)
{
	return l && atomic_load_explicit(&l->up, memory_order_acquire);
}

/* Any thread. NULL: 0. */
static inline uint64_t nats_link_ups(const struct nats_link *l)
{
	return l ? atomic_load_explicit(&l->ups, memory_order_relaxed) : 0;
}

/* cnats's callbacks, or the thread that connected at the first try. */
static inline void nats_link_set(struct nats_link *l, bool up)
{
	if (up)
		atomic_fetch_add_explicit(&l->ups, 1, memory_order_relaxed);
	atomic_store_explicit(&l->up, up, memory_order_release);
}

/* cnats's closed callback: it gave nc up for good (no more reconnects;
 * made anew by the loop). */
static inline void nats_link_closed(struct nats_link *l, const void *nc)
{
	atomic_store_explicit(&l->up, false, memory_order_release);
	atomic_store_explicit(&l->closed, nc, memory_order_release);
}

/* Any thread: whether cnats closed nc for good. Unlike
 * natsConnection_Status, it never waits for nc's lock: a connection
 * still trying to connect holds it through each attempt. */
static inline bool nats_link_is_closed(const struct nats_link *l, const void *nc)
{
	return nc && atomic_load_explicit(&l->closed, memory_order_acquire) == nc;
}

/* Loop thread, before the closed nc is destroyed: a later connection
 * given its address does not count as closed. (Its callback has come:
 * that is how the loop knew to replace it.) */
static inline void nats_link_forget(struct nats_link *l, const void *nc)
{
	atomic_compare_exchange_strong_explicit(&l->closed, &nc, NULL, memory_order_acq_rel, memory_order_acquire);
}

#endif
