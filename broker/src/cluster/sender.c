/*
 * The publishing thread of sender.h. sender_push runs on the loop thread,
 * the rest of the work on the sender's own thread.
 */
#include "sender.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "err.h"
#include "list.h"
#include "retire.h"

/* Messages taken per lock: one lock round per batch, not per message. */
#define SEND_BATCH 64

struct sent_item {
	natsConnection *nc;
	natsMsg *nm;
	size_t bytes;
};

enum op_kind { OP_PUBLISH, OP_SUBSCRIBE, OP_UNSUBSCRIBE };

/* A control operation, in struct sender's control queue. Its memory is the
 * C heap's, not alloc.h's (the loop's alone): either thread may free it. */
struct op {
	struct list_node link;
	enum op_kind kind;
};

struct control_pub {
	struct op op;
	natsConnection *nc;
	natsMsg *nm;
	size_t bytes;
};

/* cnats's closure for the subscription it makes: freed only with the
 * subscription (retire.h), as cnats may call on_sub_msg until then. */
struct sender_sub {
	struct op sub_op, unsub_op;
	natsConnection *nc;
	sender_msg_fn cb;
	void *closure;
	uint64_t tag;
	const char *queue;         /* in subject[], after the subject; NULL: none */
	/* The thread's once made; the loop reads it for the drops. */
	_Atomic(natsSubscription *) sub;
	char subject[];
};

struct sender {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_cond_t idle;         /* signalled when a batch is done (sender_forget waits) */
	bool busy;                   /* a batch or an operation is under way, outside the lock */
	uint64_t batches_done;       /* batches and operations done so far (sender_forget waits for one) */
	pthread_t thread;
	struct sent_item *ring;
	size_t cap, head, len;
	uint64_t bytes, max_bytes;
	struct list_node control;    /* struct op, in order */
	uint64_t control_bytes;      /* of the bounded control publishes queued */
	bool control_full;           /* one was refused; taken again below half */
	/* Subscriptions the thread ended (retire.h): its own, drained on its
	 * wake-ups. */
	struct nats_retire retired;
	atomic_bool stop;
	atomic_uint_fast64_t failed;
	atomic_uint_fast64_t too_large;
	atomic_uint_fast64_t sub_failed;
	atomic_uint_fast64_t dropped_gone;
	atomic_uint_fast64_t retired_early; /* retired.early, for the loop (sender_retired_early) */
};

static uint64_t sub_dropped(natsSubscription *sub)
{
	int64_t dropped = 0;
	return sub && natsSubscription_GetDropped(sub, &dropped) == NATS_OK && dropped > 0 ? (uint64_t)dropped : 0;
}

static void on_sub_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	(void)nc;
	(void)sub;
	struct sender_sub *ss = closure;
	ss->cb(msg, ss->closure, ss->tag);
}

/* Sender thread, outside the lock. */
static void run_op(struct sender *s, struct op *op)
{
	bool stopping = atomic_load_explicit(&s->stop, memory_order_relaxed);
	if (op->kind == OP_PUBLISH) {
		struct control_pub *p = container_of(op, struct control_pub, op);
		if (!stopping)
			natsConnection_PublishMsg(p->nc, p->nm);
		natsMsg_Destroy(p->nm);
		free(p);
		return;
	}
	if (op->kind == OP_SUBSCRIBE) {
		struct sender_sub *ss = container_of(op, struct sender_sub, sub_op);
		natsSubscription *sub = NULL;
		natsStatus st = NATS_OK;
		if (!stopping && ss->queue)
			st = natsConnection_QueueSubscribe(&sub, ss->nc, ss->subject, ss->queue, on_sub_msg, ss);
		else if (!stopping)
			st = natsConnection_Subscribe(&sub, ss->nc, ss->subject, on_sub_msg, ss);
		if (st != NATS_OK) {
			sub = NULL;
			if (natsConnection_Status(ss->nc) != NATS_CONN_STATUS_CLOSED)
				atomic_fetch_add_explicit(&s->sub_failed, 1, memory_order_relaxed);
		}
		atomic_store_explicit(&ss->sub, sub, memory_order_release);
		return;
	}
	struct sender_sub *ss = container_of(op, struct sender_sub, unsub_op);
	natsSubscription *sub = atomic_load_explicit(&ss->sub, memory_order_relaxed);
	if (sub) {
		atomic_fetch_add_explicit(&s->dropped_gone, sub_dropped(sub), memory_order_relaxed);
		/* Stopping too: a subscription still open when its connection
		 * closes leaks the close notice cnats 3.4 queues for its delivery
		 * thread (LeakSanitizer, now and then). Writing UNSUB waits only
		 * for the connection's lock, not for the server to read. */
		natsSubscription_Unsubscribe(sub);
		nats_retire_sub_closure(&s->retired, &sub, ss);
		atomic_store_explicit(&s->retired_early, s->retired.early, memory_order_relaxed);
		return;
	}
	free(ss);
}

/* Under the lock: a control publish left the queue. Below half the bound
 * the bounded ones are taken again (sender_control_room). */
static void control_gone(struct sender *s, uint64_t bytes)
{
	s->control_bytes -= bytes;
	if (s->control_full && s->control_bytes < SENDER_CONTROL_BYTES / 2)
		s->control_full = false;
}

/* CLOCK_MONOTONIC ms (the retire list's clock) as the cv's deadline. */
static struct timespec at_ms(uint64_t ms)
{
	return (struct timespec){.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
}

static void *run(void *arg)
{
	struct sender *s = arg;
	struct sent_item batch[SEND_BATCH];
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->len == 0 && list_empty(&s->control) && !atomic_load(&s->stop)) {
			uint64_t due = nats_retire_next(&s->retired);
			if (!due) {
				pthread_cond_wait(&s->cv, &s->mu);
			} else if (due > nats_retire_monotonic_ms(NULL)) {
				struct timespec until = at_ms(due);
				pthread_cond_timedwait(&s->cv, &s->mu, &until);
			} else {
				pthread_mutex_unlock(&s->mu);
				nats_retire_due(&s->retired);
				pthread_mutex_lock(&s->mu);
			}
		}
		if (atomic_load(&s->stop))
			break;
		if (!list_empty(&s->control)) {
			struct op *op = container_of(list_first(&s->control), struct op, link);
			list_remove(&op->link);
			if (op->kind == OP_PUBLISH)
				control_gone(s, container_of(op, struct control_pub, op)->bytes);
			s->busy = true;
			pthread_mutex_unlock(&s->mu);
			run_op(s, op);
		} else {
			size_t n = s->len < SEND_BATCH ? s->len : SEND_BATCH;
			for (size_t i = 0; i < n; i++) {
				batch[i] = s->ring[s->head];
				s->head = (s->head + 1) % s->cap;
				s->bytes -= batch[i].bytes;
			}
			s->len -= n;
			s->busy = true;
			pthread_mutex_unlock(&s->mu);
			for (size_t i = 0; i < n; i++) {
				/* Stopping: the rest goes unsent, rather than each
				 * waiting out a stalled server's write deadline. */
				natsStatus st = atomic_load_explicit(&s->stop, memory_order_relaxed)
							? NATS_CONNECTION_CLOSED
							: natsConnection_PublishMsg(batch[i].nc, batch[i].nm);
				/* Over the server's max_payload: cnats refuses it
				 * before writing anything, and would every time. */
				if (st == NATS_MAX_PAYLOAD)
					atomic_fetch_add_explicit(&s->too_large, 1, memory_order_relaxed);
				else if (st != NATS_OK)
					atomic_fetch_add_explicit(&s->failed, 1, memory_order_relaxed);
				natsMsg_Destroy(batch[i].nm);
			}
		}
		uint64_t due = nats_retire_next(&s->retired);
		if (due && due <= nats_retire_monotonic_ms(NULL))
			nats_retire_due(&s->retired);
		pthread_mutex_lock(&s->mu);
		s->busy = false;
		s->batches_done++;
		pthread_cond_broadcast(&s->idle);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int sender_start(struct sender **out, size_t cap, uint64_t max_bytes)
{
	*out = NULL;
	struct sender *s = wisp_calloc(1, sizeof *s);
	if (!s)
		return WISP_ENOMEM;
	s->ring = wisp_calloc(cap, sizeof *s->ring);
	if (!s->ring) {
		wisp_free(s);
		return WISP_ENOMEM;
	}
	s->cap = cap;
	s->max_bytes = max_bytes;
	atomic_init(&s->stop, false);
	atomic_init(&s->failed, 0);
	atomic_init(&s->too_large, 0);
	atomic_init(&s->sub_failed, 0);
	atomic_init(&s->dropped_gone, 0);
	atomic_init(&s->retired_early, 0);
	list_init(&s->control);
	/* Off the loop thread: no logging from the list (retire.h). */
	nats_retire_init(&s->retired, nats_retire_monotonic_ms, NULL, NULL);
	s->retired.off_loop = true;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&s->idle, NULL);
	if (pthread_create(&s->thread, NULL, run, s) != 0) {
		pthread_cond_destroy(&s->idle);
		pthread_cond_destroy(&s->cv);
		pthread_mutex_destroy(&s->mu);
		wisp_free(s->ring);
		wisp_free(s);
		return WISP_EIO;
	}
	*out = s;
	return 0;
}

void sender_stop(struct sender *s, struct nats_retire *retired)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	atomic_store(&s->stop, true);
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	for (; s->len; s->len--, s->head = (s->head + 1) % s->cap)
		natsMsg_Destroy(s->ring[s->head].nm);
	/* run_op while stopping publishes nothing and makes no SUB: no wait
	 * for a stalled server. It still ends the subscriptions. */
	while (!list_empty(&s->control)) {
		struct op *op = container_of(list_first(&s->control), struct op, link);
		list_remove(&op->link);
		run_op(s, op);
	}
	if (retired)
		nats_retire_move(retired, &s->retired);
	else
		nats_retire_all(&s->retired);
	pthread_cond_destroy(&s->idle);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	wisp_free(s->ring);
	wisp_free(s);
}

bool sender_push(struct sender *s, natsConnection *nc, natsMsg *nm, size_t bytes, size_t *fill)
{
	pthread_mutex_lock(&s->mu);
	/* One message larger than the byte bound still goes when the ring is
	 * empty, as a bounded queue of one. */
	if (s->len == s->cap || (s->len && s->bytes + bytes > s->max_bytes)) {
		*fill = s->len;
		pthread_mutex_unlock(&s->mu);
		return false;
	}
	s->ring[(s->head + s->len) % s->cap] = (struct sent_item){nc, nm, bytes};
	s->bytes += bytes;
	bool was_empty = s->len++ == 0;
	*fill = s->len;
	/* The thread waits only on an empty ring; a busy one finds the new
	 * message at its next lock, without a wake-up. */
	if (was_empty)
		pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return true;
}

void sender_forget(struct sender *s, natsConnection *nc)
{
	pthread_mutex_lock(&s->mu);
	size_t kept = 0;
	for (size_t i = 0; i < s->len; i++) {
		struct sent_item it = s->ring[(s->head + i) % s->cap];
		if (it.nc == nc) {
			natsMsg_Destroy(it.nm);
			s->bytes -= it.bytes;
			atomic_fetch_add_explicit(&s->failed, 1, memory_order_relaxed);
		} else {
			s->ring[(s->head + kept++) % s->cap] = it;
		}
	}
	s->len = kept;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &s->control) {
		struct op *op = container_of(pos, struct op, link);
		if (op->kind == OP_PUBLISH) {
			struct control_pub *p = container_of(op, struct control_pub, op);
			if (p->nc != nc)
				continue;
			list_remove(&op->link);
			control_gone(s, p->bytes);
			natsMsg_Destroy(p->nm);
			free(p);
		} else if (op->kind == OP_SUBSCRIBE && container_of(op, struct sender_sub, sub_op)->nc == nc) {
			/* Never made: its UNSUB, when it comes, has nothing to end. */
			list_remove(&op->link);
		}
	}
	/* Only the batch in flight may hold nc: the thread takes the next
	 * one without letting go of the lock, so waiting for it to be idle
	 * would also wait for other connections' batches. */
	uint64_t in_flight = s->batches_done + 1;
	while (s->busy && s->batches_done < in_flight)
		pthread_cond_wait(&s->idle, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

uint64_t sender_failed(const struct sender *s)
{
	return atomic_load_explicit(&((struct sender *)s)->failed, memory_order_relaxed);
}

uint64_t sender_too_large(const struct sender *s)
{
	return atomic_load_explicit(&((struct sender *)s)->too_large, memory_order_relaxed);
}

size_t sender_cap(const struct sender *s) { return s->cap; }

size_t sender_queued(struct sender *s)
{
	pthread_mutex_lock(&s->mu);
	size_t n = s->len;
	pthread_mutex_unlock(&s->mu);
	return n;
}

uint64_t sender_max_bytes(const struct sender *s) { return s->max_bytes; }

struct sender_sub *sender_subscribe(struct sender *s, natsConnection *nc, const char *subject, const char *queue,
				    sender_msg_fn cb, void *closure, uint64_t tag)
{
	size_t len = strlen(subject), qlen = queue ? strlen(queue) + 1 : 0;
	struct sender_sub *ss = calloc(1, sizeof *ss + len + 1 + qlen);
	if (!ss)
		return NULL;
	ss->sub_op.kind = OP_SUBSCRIBE;
	ss->unsub_op.kind = OP_UNSUBSCRIBE;
	ss->nc = nc;
	ss->cb = cb;
	ss->closure = closure;
	ss->tag = tag;
	atomic_init(&ss->sub, NULL);
	memcpy(ss->subject, subject, len + 1);
	if (queue) {
		memcpy(ss->subject + len + 1, queue, qlen);
		ss->queue = ss->subject + len + 1;
	}
	pthread_mutex_lock(&s->mu);
	list_push_back(&s->control, &ss->sub_op.link);
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return ss;
}

void sender_unsubscribe(struct sender *s, struct sender_sub *ss)
{
	if (!ss)
		return;
	pthread_mutex_lock(&s->mu);
	/* Taken ops are unlinked by the thread (list_remove leaves the node
	 * pointing at itself): still linked means not made yet. */
	if (list_linked(&ss->sub_op.link)) {
		list_remove(&ss->sub_op.link);
		pthread_mutex_unlock(&s->mu);
		free(ss);
		return;
	}
	list_push_back(&s->control, &ss->unsub_op.link);
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

uint64_t sender_sub_dropped(const struct sender_sub *ss)
{
	return sub_dropped(atomic_load_explicit(&((struct sender_sub *)ss)->sub, memory_order_acquire));
}

uint64_t sender_dropped_gone(const struct sender *s)
{
	return atomic_load_explicit(&((struct sender *)s)->dropped_gone, memory_order_relaxed);
}

uint64_t sender_retired_early(const struct sender *s)
{
	return atomic_load_explicit(&((struct sender *)s)->retired_early, memory_order_relaxed);
}

uint64_t sender_sub_failed(const struct sender *s)
{
	return atomic_load_explicit(&((struct sender *)s)->sub_failed, memory_order_relaxed);
}

bool sender_publish_control(struct sender *s, natsConnection *nc, natsMsg *nm, size_t bytes, bool bounded)
{
	struct control_pub *p = malloc(sizeof *p);
	if (!p)
		return false;
	*p = (struct control_pub){.op.kind = OP_PUBLISH, .nc = nc, .nm = nm, .bytes = bounded ? bytes : 0};
	pthread_mutex_lock(&s->mu);
	/* One larger than the bound still goes when none is queued. */
	if (bounded && (s->control_full || (s->control_bytes && s->control_bytes + bytes > SENDER_CONTROL_BYTES))) {
		s->control_full = true;
		pthread_mutex_unlock(&s->mu);
		free(p);
		return false;
	}
	bytes = p->bytes;
	list_push_back(&s->control, &p->op.link);
	s->control_bytes += bytes;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return true;
}

bool sender_control_room(const struct sender *s)
{
	struct sender *m = (struct sender *)s; /* the lock only */
	pthread_mutex_lock(&m->mu);
	bool room = !m->control_full;
	pthread_mutex_unlock(&m->mu);
	return room;
}
