/*
 * The publishing thread of sender.h. sender_push runs on the loop thread,
 * the rest of the work on the sender's own thread.
 */
#include "sender.h"

#include <pthread.h>
#include <stdatomic.h>

#include "alloc.h"
#include "err.h"

/* Messages taken per lock: one lock round per batch, not per message. */
#define SEND_BATCH 64

struct sent_item {
	natsConnection *nc;
	natsMsg *nm;
	size_t bytes;
};

struct sender {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_cond_t idle;         /* signalled when a batch is done (sender_forget waits) */
	bool busy;                   /* a batch is being published, outside the lock */
	uint64_t batches_done;       /* batches published so far (sender_forget waits for one) */
	pthread_t thread;
	struct sent_item *ring;
	size_t cap, head, len;
	uint64_t bytes, max_bytes;
	atomic_bool stop;
	atomic_uint_fast64_t failed;
	atomic_uint_fast64_t too_large;
};

static void *run(void *arg)
{
	struct sender *s = arg;
	struct sent_item batch[SEND_BATCH];
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->len == 0 && !atomic_load(&s->stop))
			pthread_cond_wait(&s->cv, &s->mu);
		if (atomic_load(&s->stop))
			break;
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
			/* Over the server's max_payload: cnats refuses it before
			 * writing anything, and would every time. */
			if (st == NATS_MAX_PAYLOAD)
				atomic_fetch_add_explicit(&s->too_large, 1, memory_order_relaxed);
			else if (st != NATS_OK)
				atomic_fetch_add_explicit(&s->failed, 1, memory_order_relaxed);
			natsMsg_Destroy(batch[i].nm);
		}
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
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
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

void sender_stop(struct sender *s)
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

uint64_t sender_max_bytes(const struct sender *s) { return s->max_bytes; }
