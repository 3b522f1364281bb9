/*
 * The bounded hand-over ring of inbox.h. The only threaded code of the
 * cluster: every function but inbox_take may run on a NATS client thread.
 */
#include "inbox.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"

int inbox_init(struct inbox *q, size_t cap)
{
	q->items = wisp_calloc(cap, sizeof *q->items);
	if (!q->items)
		return WISP_ENOMEM;
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd == -1) {
		wisp_free(q->items);
		q->items = NULL;
		return WISP_EIO;
	}
	pthread_mutex_init(&q->mu, NULL);
	q->cap = cap;
	q->head = q->len = 0;
	q->events = 0;
	q->dropped = 0;
	q->closed = false;
	return 0;
}

void inbox_free(struct inbox *q, void (*free_item)(void *))
{
	if (!q->items)
		return;
	for (size_t i = 0; i < q->len; i++)
		if (free_item)
			free_item(q->items[(q->head + i) % q->cap]);
	wisp_free(q->items);
	q->items = NULL;
	close(q->efd);
	pthread_mutex_destroy(&q->mu);
}

static void wake(int efd)
{
	uint64_t one = 1;
	/* EAGAIN: the counter is saturated, the loop is woken anyway. */
	while (write(efd, &one, sizeof one) == -1 && errno == EINTR)
		;
}

void inbox_close(struct inbox *q, void (*free_item)(void *))
{
	if (!q->items)
		return;
	pthread_mutex_lock(&q->mu);
	q->closed = true;
	for (; q->len; q->len--, q->head = (q->head + 1) % q->cap)
		if (free_item)
			free_item(q->items[q->head]);
	pthread_mutex_unlock(&q->mu);
}

bool inbox_push(struct inbox *q, void *item)
{
	pthread_mutex_lock(&q->mu);
	if (q->closed) {
		pthread_mutex_unlock(&q->mu);
		return false;
	}
	if (q->len == q->cap) {
		q->dropped++;
		pthread_mutex_unlock(&q->mu);
		return false;
	}
	q->items[(q->head + q->len) % q->cap] = item;
	bool was_empty = q->len++ == 0;
	pthread_mutex_unlock(&q->mu);
	if (was_empty)
		wake(q->efd);
	return true;
}

void inbox_raise(struct inbox *q, unsigned events)
{
	pthread_mutex_lock(&q->mu);
	q->events |= events;
	pthread_mutex_unlock(&q->mu);
	wake(q->efd);
}

size_t inbox_take(struct inbox *q, void **out, size_t max, unsigned *events, uint64_t *dropped)
{
	uint64_t v;
	while (read(q->efd, &v, sizeof v) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&q->mu);
	size_t n = q->len < max ? q->len : max;
	for (size_t i = 0; i < n; i++) {
		out[i] = q->items[q->head];
		q->head = (q->head + 1) % q->cap;
	}
	q->len -= n;
	bool more = q->len > 0;
	*events = q->events;
	q->events = 0;
	*dropped = q->dropped;
	pthread_mutex_unlock(&q->mu);
	if (more)
		wake(q->efd);
	return n;
}
