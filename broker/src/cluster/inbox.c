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

static void free_rings(struct inbox *q)
{
	wisp_free(q->items);
	wisp_free(q->sizes);
	q->items = NULL;
	q->sizes = NULL;
}

int inbox_init_bytes(struct inbox *q, size_t cap, uint64_t max_bytes)
{
	q->items = wisp_calloc(cap, sizeof *q->items);
	q->sizes = max_bytes ? wisp_calloc(cap, sizeof *q->sizes) : NULL;
	if (!q->items || (max_bytes && !q->sizes)) {
		free_rings(q);
		return WISP_ENOMEM;
	}
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd == -1) {
		free_rings(q);
		return WISP_EIO;
	}
	pthread_mutex_init(&q->mu, NULL);
	q->cap = cap;
	q->head = q->len = 0;
	q->bytes = 0;
	q->max_bytes = max_bytes;
	q->events = 0;
	q->dropped = 0;
	q->closed = false;
	return 0;
}

int inbox_init(struct inbox *q, size_t cap) { return inbox_init_bytes(q, cap, 0); }

void inbox_free(struct inbox *q, void (*free_item)(void *))
{
	if (!q->items)
		return;
	for (size_t i = 0; i < q->len; i++)
		if (free_item)
			free_item(q->items[(q->head + i) % q->cap]);
	free_rings(q);
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
	q->bytes = 0;
	pthread_mutex_unlock(&q->mu);
}

bool inbox_push_sized(struct inbox *q, void *item, size_t bytes)
{
	uint32_t size = bytes < UINT32_MAX ? (uint32_t)bytes : UINT32_MAX;
	pthread_mutex_lock(&q->mu);
	if (q->closed) {
		pthread_mutex_unlock(&q->mu);
		return false;
	}
	if (q->len == q->cap || (q->max_bytes && q->len && q->bytes + size > q->max_bytes)) {
		q->dropped++;
		pthread_mutex_unlock(&q->mu);
		return false;
	}
	size_t at = (q->head + q->len) % q->cap;
	q->items[at] = item;
	if (q->sizes) {
		q->sizes[at] = size;
		q->bytes += size;
	}
	bool was_empty = q->len++ == 0;
	pthread_mutex_unlock(&q->mu);
	if (was_empty)
		wake(q->efd);
	return true;
}

bool inbox_push(struct inbox *q, void *item) { return inbox_push_sized(q, item, 0); }

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
		if (q->sizes)
			q->bytes -= q->sizes[q->head];
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
