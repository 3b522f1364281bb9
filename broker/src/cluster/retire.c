/*
 * The retire list of retire.h: a ring growing by doubling up to
 * NATS_RETIRE_MAX. Deadlines are added in clock order, so the due ones are
 * always at the head.
 */
#include "retire.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "alloc.h"
#include "log.h"

void nats_retire_init(struct nats_retire *r, uint64_t (*now_ms)(void *ctx), void (*arm)(void *ctx, uint64_t due_ms),
		      void *ctx)
{
	*r = (struct nats_retire){.now_ms = now_ms, .arm = arm, .ctx = ctx};
}

static void destroy_oldest(struct nats_retire *r)
{
	natsSubscription_Destroy(r->v[r->head].sub);
	free(r->v[r->head].closure);
	r->head = (r->head + 1) % r->cap;
	r->n--;
}

static void release(struct nats_retire *r)
{
	if (r->off_loop)
		free(r->v);
	else
		wisp_free(r->v);
}

static bool grow(struct nats_retire *r)
{
	size_t cap = r->cap ? 2 * r->cap : 16;
	struct nats_retired *v = r->off_loop ? malloc(cap * sizeof *v) : wisp_malloc(cap * sizeof *v);
	if (!v)
		return false;
	for (size_t i = 0; i < r->n; i++)
		v[i] = r->v[(r->head + i) % r->cap];
	release(r);
	r->v = v;
	r->cap = cap;
	r->head = 0;
	return true;
}

uint64_t nats_retire_monotonic_ms(void *ctx)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void nats_retire_sub(struct nats_retire *r, natsSubscription **sub) { nats_retire_sub_closure(r, sub, NULL); }

void nats_retire_sub_closure(struct nats_retire *r, natsSubscription **sub, void *closure)
{
	if (!*sub) {
		free(closure);
		return;
	}
	if (!r) {
		natsSubscription_Destroy(*sub);
		free(closure);
		*sub = NULL;
		return;
	}
	bool full = r->n == r->cap && r->cap >= NATS_RETIRE_MAX && !r->stopping;
	if (r->n == r->cap && (full || !grow(r))) {
		if (!r->n) { /* out of memory for the first one: at once, as before this list */
			natsSubscription_Destroy(*sub);
			free(closure);
			*sub = NULL;
			r->early++;
			return;
		}
		if (full && !r->full_said && !r->off_loop) {
			log_msg(LOG_WARNING, "cluster", "more than %u NATS subscriptions ended within %u s: the oldest "
				"are destroyed before their %u s delay", NATS_RETIRE_MAX, NATS_RETIRE_MS / 1000,
				NATS_RETIRE_MS / 1000);
			r->full_said = true;
		}
		destroy_oldest(r);
		r->early++;
	}
	uint64_t due = r->now_ms(r->ctx) + NATS_RETIRE_MS;
	r->v[(r->head + r->n++) % r->cap] = (struct nats_retired){.sub = *sub, .closure = closure, .due_ms = due};
	*sub = NULL;
	if (r->n == 1 && r->arm)
		r->arm(r->ctx, due);
}

uint64_t nats_retire_due(struct nats_retire *r)
{
	if (!r->n)
		return 0;
	uint64_t now = r->now_ms(r->ctx);
	while (r->n && r->v[r->head].due_ms <= now)
		destroy_oldest(r);
	if (!r->n)
		r->full_said = false;
	return r->n ? r->v[r->head].due_ms : 0;
}

void nats_retire_move(struct nats_retire *dst, struct nats_retire *src)
{
	dst->stopping = true;
	while (src->n) {
		struct nats_retired e = src->v[src->head];
		src->head = (src->head + 1) % src->cap;
		src->n--;
		nats_retire_sub_closure(dst, &e.sub, e.closure);
	}
	nats_retire_all(src);
}

void nats_retire_all(struct nats_retire *r)
{
	while (r->n)
		destroy_oldest(r);
	release(r);
	r->v = NULL;
	r->cap = r->head = 0;
	r->full_said = false;
}

/* ---- on the loop thread ---- */

/* The loop's clock (CLOCK_MONOTONIC, cached per turn), or the same clock
 * read directly for a list without one. */
static uint64_t loop_clock(void *ctx)
{
	struct nats_retire_loop *rl = ctx;
	if (rl->loop)
		return loop_now_ms(rl->loop);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_retire_due(struct loop *l, struct loop_timer *t);

static void arm_at(struct nats_retire_loop *rl, uint64_t due_ms)
{
	if (!rl->loop || loop_timer_armed(&rl->timer))
		return;
	uint64_t now = loop_now_ms(rl->loop);
	/* The wheel's slots are seconds: at least one, so a deadline a few
	 * ms away never spins. */
	uint64_t s = due_ms > now ? (due_ms - now + 999) / 1000 : 1;
	loop_timer_start(rl->loop, &rl->timer, s ? s : 1, on_retire_due);
}

static void arm(void *ctx, uint64_t due_ms) { arm_at(ctx, due_ms); }

static void on_retire_due(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct nats_retire_loop *rl = container_of(t, struct nats_retire_loop, timer);
	uint64_t next = nats_retire_due(&rl->list);
	if (next)
		arm_at(rl, next);
}

void nats_retire_loop_init(struct nats_retire_loop *rl, struct loop *loop)
{
	nats_retire_init(&rl->list, loop_clock, arm, rl);
	rl->loop = loop;
	list_init(&rl->timer.link);
}

void nats_retire_loop_stop(struct nats_retire_loop *rl)
{
	if (rl->loop && loop_timer_armed(&rl->timer))
		loop_timer_stop(rl->loop, &rl->timer);
	nats_retire_all(&rl->list);
}

/* One drain at a time per process (a node's stop); a callback that comes
 * after its waiter gave up only moves `drained` on, so nothing it touches
 * goes away. */
static pthread_mutex_t drain_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drain_cv = PTHREAD_COND_INITIALIZER;
static uint64_t drain_asked, drained;

static void on_drained(void *closure)
{
	uint64_t n = (uint64_t)(uintptr_t)closure;
	pthread_mutex_lock(&drain_mu);
	if (n > drained)
		drained = n;
	pthread_cond_broadcast(&drain_cv);
	pthread_mutex_unlock(&drain_mu);
}

static void on_drain_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	(void)nc;
	(void)sub;
	(void)closure;
	natsMsg_Destroy(msg);
}

bool nats_delivery_drain(natsConnection *nc, int64_t timeout_ms, struct nats_retire *retired)
{
	natsInbox *inbox = NULL;
	natsSubscription *sub = NULL;
	if (!nc || natsInbox_Create(&inbox) != NATS_OK)
		return false;
	natsStatus st = natsConnection_Subscribe(&sub, nc, inbox, on_drain_msg, NULL);
	natsInbox_Destroy(inbox);
	if (st != NATS_OK)
		return false;
	pthread_mutex_lock(&drain_mu);
	uint64_t n = ++drain_asked;
	pthread_mutex_unlock(&drain_mu);
	bool done = false;
	if (natsSubscription_SetOnCompleteCB(sub, on_drained, (void *)(uintptr_t)n) == NATS_OK &&
	    natsSubscription_Unsubscribe(sub) == NATS_OK) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += (time_t)(timeout_ms / 1000);
		until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&drain_mu);
		while (drained < n && pthread_cond_timedwait(&drain_cv, &drain_mu, &until) == 0)
			;
		done = drained >= n;
		pthread_mutex_unlock(&drain_mu);
	}
	nats_retire_sub(retired, &sub);
	return done;
}
