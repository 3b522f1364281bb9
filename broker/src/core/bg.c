#include "bg.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "list.h"

struct bg {
	struct loop *loop;
	struct loop_io io;        /* the eventfd */
	pthread_t threads[BG_MAX_THREADS];
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct bg_job *todo_head, *todo_tail; /* guarded by lock */
	struct bg_job *done_head, *done_tail; /* guarded by lock */
	bool stopping;            /* guarded by lock */
	size_t pending;           /* loop thread only */
	size_t max_jobs;
};

static void push(struct bg_job **head, struct bg_job **tail, struct bg_job *j)
{
	j->next = NULL;
	if (*tail)
		(*tail)->next = j;
	else
		*head = j;
	*tail = j;
}

static void *worker(void *arg)
{
	struct bg *bg = arg;
	pthread_mutex_lock(&bg->lock);
	for (;;) {
		while (!bg->todo_head && !bg->stopping)
			pthread_cond_wait(&bg->wake, &bg->lock);
		struct bg_job *j = bg->todo_head;
		if (!j)
			break; /* stopping and nothing left */
		bg->todo_head = j->next;
		if (!bg->todo_head)
			bg->todo_tail = NULL;
		pthread_mutex_unlock(&bg->lock);
		j->work(j);
		pthread_mutex_lock(&bg->lock);
		push(&bg->done_head, &bg->done_tail, j);
		uint64_t one = 1;
		ssize_t w = write(bg->io.fd, &one, sizeof one);
		(void)w; /* the counter cannot overflow with a bounded queue */
	}
	pthread_mutex_unlock(&bg->lock);
	return NULL;
}

/* Runs done() of every finished job, outside the lock. */
static void drain(struct bg *bg)
{
	pthread_mutex_lock(&bg->lock);
	struct bg_job *j = bg->done_head;
	bg->done_head = bg->done_tail = NULL;
	pthread_mutex_unlock(&bg->lock);
	while (j) {
		struct bg_job *next = j->next;
		bg->pending--;
		j->done(j);
		j = next;
	}
}

static void on_event(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct bg *bg = container_of(io, struct bg, io);
	(void)l;
	(void)events;
	uint64_t n;
	while (read(io->fd, &n, sizeof n) == (ssize_t)sizeof n)
		;
	drain(bg);
}

/* Wakes every helper thread with the stop flag set and joins them; a job
 * already running finishes first. */
static void stop_workers(struct bg *bg)
{
	pthread_mutex_lock(&bg->lock);
	bg->stopping = true;
	pthread_cond_broadcast(&bg->wake);
	pthread_mutex_unlock(&bg->lock);
	for (unsigned i = 0; i < bg->nthreads; i++)
		pthread_join(bg->threads[i], NULL);
}

struct bg *bg_new(struct loop *l, size_t max_jobs, unsigned threads)
{
	if (threads < 1 || threads > BG_MAX_THREADS)
		return NULL;
	struct bg *bg = wisp_calloc(1, sizeof *bg);
	if (!bg)
		return NULL;
	bg->loop = l;
	bg->max_jobs = max_jobs;
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (fd == -1)
		goto fail_free;
	if (loop_io_start(l, &bg->io, fd, LOOP_READ, on_event) != 0)
		goto fail_fd;
	pthread_mutex_init(&bg->lock, NULL);
	pthread_cond_init(&bg->wake, NULL);
	for (; bg->nthreads < threads; bg->nthreads++)
		if (pthread_create(&bg->threads[bg->nthreads], NULL, worker, bg) != 0)
			goto fail_threads;
	return bg;
fail_threads:
	stop_workers(bg);
	pthread_cond_destroy(&bg->wake);
	pthread_mutex_destroy(&bg->lock);
	loop_io_stop(l, &bg->io);
fail_fd:
	close(fd);
fail_free:
	wisp_free(bg);
	return NULL;
}

void bg_free(struct bg *bg)
{
	if (!bg)
		return;
	stop_workers(bg);
	drain(bg);
	loop_io_stop(bg->loop, &bg->io);
	close(bg->io.fd);
	pthread_cond_destroy(&bg->wake);
	pthread_mutex_destroy(&bg->lock);
	wisp_free(bg);
}

int bg_submit(struct bg *bg, struct bg_job *job)
{
	if (bg->pending >= bg->max_jobs)
		return WISP_ELIMIT;
	bg->pending++;
	pthread_mutex_lock(&bg->lock);
	push(&bg->todo_head, &bg->todo_tail, job);
	pthread_cond_signal(&bg->wake);
	pthread_mutex_unlock(&bg->lock);
	return 0;
}

bool bg_cancel(struct bg *bg, struct bg_job *job)
{
	bool found = false;
	pthread_mutex_lock(&bg->lock);
	struct bg_job *prev = NULL;
	for (struct bg_job *j = bg->todo_head; j; prev = j, j = j->next) {
		if (j != job)
			continue;
		if (prev)
			prev->next = j->next;
		else
			bg->todo_head = j->next;
		if (bg->todo_tail == j)
			bg->todo_tail = prev;
		found = true;
		break;
	}
	pthread_mutex_unlock(&bg->lock);
	if (found)
		bg->pending--;
	return found;
}

size_t bg_pending(const struct bg *bg) { return bg->pending; }
