/*
 * NATS subscriptions unsubscribed but not destroyed yet: libnats 3.4's
 * read loop can still hold a pointer to one for a moment.
 *
 * libnats 3.4 (Debian 12) has nats.c issue 637, fixed upstream by PR 638
 * (3.6): natsConn_processMsg looks the message's subscription up by its
 * sid (natsHash_Get(nc->subs, ...) under nc->subsMu), releases subsMu and
 * only then locks the subscription, holding no reference. A
 * natsSubscription_Destroy on another thread in that window frees it
 * under the read loop (e2e 35 crashed so). PR 638's version of the same
 * function (nats-io/nats.c src/conn.c) says why it now retains: "as soon
 * as we release the nc->subsMu lock, the subscription could be destroyed
 * and we would reference freed memory".
 *
 * Why a few seconds after natsSubscription_Unsubscribe is enough:
 * Unsubscribe (natsConn_unsubscribe -> natsConn_removeSubscription)
 * removes the sid from nc->subs under subsMu, so every lookup that starts
 * after it misses and the message is dropped; a connection cnats closes
 * removes all of its subscriptions the same way (_removeAllSubscriptions).
 * What is left is a lookup already in progress: the read loop holds the
 * pointer for the rest of that one message's natsConn_processMsg (lock
 * the subscription, queue the message, unlock), microseconds.
 * NATS_RETIRE_MS leaves that window a margin of seconds for a read loop
 * descheduled on a loaded machine. Checked in nats.c's sources
 * (natsConn_processMsg, natsConn_unsubscribe, natsConn_removeSubscription
 * in src/conn.c) and in Debian's libnats.so.3.4 (3.4.1) itself, whose
 * natsConn_processMsg calls natsMutex_Lock (subsMu), natsHash_Get,
 * natsMutex_Unlock, natsMsg_create (the payload's copy: the window), then
 * natsMutex_Lock on the subscription, with no natsSub_retain. Not
 * covered: the asynchronous error handler cnats may call later with a
 * subscription's pointer (nats.c PR 659); ours never reads it.
 *
 * At stop the connections are closed first (natsConnection_Close joins
 * their read loops), then nats_retire_all destroys whatever is left, due
 * or not.
 *
 * Lists are owned by the structures whose thread unsubscribes: struct
 * cluster's on the loop thread (struct nats_retire_loop, drained by a
 * loop timer), each sender's (sender.h: the filters' and the shared
 * groups' subscriptions) and the JetStream worker's (struct jsw), drained
 * on their threads' own wake-ups. Not thread-safe: the owner's thread
 * only.
 *
 * Bound: an entry (24 bytes, plus cnats's subscription object, a few
 * hundred bytes) per subscription unsubscribed in the last
 * NATS_RETIRE_MS. Subscriptions held at once are bounded by the filters
 * and shared groups the node's sessions hold (limits.max_subscriptions
 * per client); churn is not, so the list holds at most NATS_RETIRE_MAX:
 * past it the oldest is destroyed before its deadline (counted in
 * `early`, logged once per episode). Even then it has been unsubscribed
 * NATS_RETIRE_MAX unsubscribes ago, far longer than a lookup.
 */
#ifndef WISP_CLUSTER_RETIRE_H
#define WISP_CLUSTER_RETIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "loop.h"

#define NATS_RETIRE_MS 5000u
#define NATS_RETIRE_MAX 4096u

struct nats_retired {
	natsSubscription *sub;
	void *closure;  /* its message callback's, the C heap's: freed with it (NULL: none) */
	uint64_t due_ms;
};

struct nats_retire {
	struct nats_retired *v; /* a ring, oldest (first due) first */
	size_t head, n, cap;
	/* The owner's monotonic clock, in ms. */
	uint64_t (*now_ms)(void *ctx);
	/* Called when an entry is added to an empty list (NULL: the owner
	 * calls nats_retire_due on its own wake-ups). */
	void (*arm)(void *ctx, uint64_t due_ms);
	void *ctx;
	uint64_t early;  /* destroyed before their deadline: the list was full, or out of memory */
	/* The owner stops: every subscription it held comes here at once, so
	 * NATS_RETIRE_MAX no longer applies (they are bounded by what was
	 * held). */
	bool stopping;
	bool full_said;  /* this episode of a full list is logged */
	/* Owned off the loop thread, where log.h and alloc.h are not for it:
	 * the C heap holds the entries, and a full list only counts in
	 * `early`. Set after nats_retire_init, before the first entry. */
	bool off_loop;
};

void nats_retire_init(struct nats_retire *r, uint64_t (*now_ms)(void *ctx), void (*arm)(void *ctx, uint64_t due_ms),
		      void *ctx);
/* A now_ms for a list its owner thread drains on its own wake-ups (the
 * JetStream worker's, the retained bucket's): CLOCK_MONOTONIC in ms. */
uint64_t nats_retire_monotonic_ms(void *ctx);
/* *sub, unsubscribed already (or its connection closed), is destroyed
 * NATS_RETIRE_MS from now (nats_retire_due) or at nats_retire_all. Sets
 * *sub to NULL. r NULL: destroyed at once (no connection can look it up
 * any more: a module's free after its stop). */
void nats_retire_sub(struct nats_retire *r, natsSubscription **sub);
/* The same, and closure (the C heap's: free()) is freed right after the
 * subscription is destroyed: cnats may still call the subscription's
 * callback with it until then (sender.h's subscriptions). */
void nats_retire_sub_closure(struct nats_retire *r, natsSubscription **sub, void *closure);
/* Destroys the entries due by now. Returns the next deadline (ms of the
 * owner's clock), 0 when the list is empty. */
uint64_t nats_retire_due(struct nats_retire *r);
/* Stopping: src's entries (another owner's) join dst, src is emptied.
 * Out of memory, they are destroyed at once. */
void nats_retire_move(struct nats_retire *dst, struct nats_retire *src);
/* The first deadline, 0 when the list is empty. */
static inline uint64_t nats_retire_next(const struct nats_retire *r) { return r->n ? r->v[r->head].due_ms : 0; }
/* Every connection the subscriptions were on is closed: destroys them
 * all, and frees the list (it can be used again). */
void nats_retire_all(struct nats_retire *r);

/*
 * Stopping, before the last connection closes: waits (at most timeout_ms)
 * until cnats's message delivery worker has handled everything queued to
 * it so far, every other connection being closed and nc holding no
 * subscription of the pool any more. false: no wait was possible (nc
 * closed) or it timed out.
 *
 * Why: libnats 3.4 closes a subscription of the global delivery pool
 * (natsOptions_UseGlobalMessageDelivery, one worker thread by default) by
 * queueing a control message to that worker, which frees it when it
 * comes to it; nats_CloseAndWait stops the worker without freeing what is
 * still queued. A stop right after closing the connections so left a
 * chain of those messages unfreed, about once in 50 stops
 * (LeakSanitizer: "natsMsg_create", 106 bytes each; a 20-line program
 * with 9 subscriptions: 13 of 600 runs, none with this wait). The wait is
 * a subscription of nc's own closed last: its completion callback runs
 * on the worker after everything queued before it (one worker, in order).
 * That subscription joins `retired`, destroyed once nc is closed.
 */
bool nats_delivery_drain(natsConnection *nc, int64_t timeout_ms, struct nats_retire *retired);

/* A list on the loop thread, drained by its own timer. loop may be NULL
 * (then nothing is due before the stop). */
struct loop;
struct nats_retire_loop {
	struct nats_retire list;
	struct loop *loop;
	struct loop_timer timer;
};
void nats_retire_loop_init(struct nats_retire_loop *rl, struct loop *loop);
/* Stopping, every connection closed: the timer stopped, all destroyed. */
void nats_retire_loop_stop(struct nats_retire_loop *rl);

#endif
