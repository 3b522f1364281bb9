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

/* One helper thread, and the job it runs (NULL: idle). */
struct bg_worker {
	struct bg *bg;
	pthread_t thread;
	struct bg_job *job; /* guarded by lock */
};

struct bg {
	struct loop *loop;
	struct loop_io io;        /* the eventfd */
	struct bg_worker workers[BG_MAX_THREADS];
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct bg_job *todo_head, *todo_tail; /* guarded by lock */
	struct bg_job *done_head, *done_tail; /* guarded by lock */
	bool stopping;            /* guarded by lock */
	bool abandoned;           /* guarded by lock: bg_abandon left running jobs behind */
	size_t pending;           /* loop thread only */
	size_t max_jobs;
	struct bg *next_abandoned;
};

/* Sets bg_abandon left behind, each with the jobs its detached threads
 * still run: a global root, so the leak checker at exit sees them held,
 * not lost (they are, honestly: the process ends before those jobs do). */
static struct bg *abandoned_sets;

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
	struct bg_worker *w = arg;
	struct bg *bg = w->bg;
	pthread_mutex_lock(&bg->lock);
	for (;;) {
		while (!bg->todo_head && !bg->stopping)
			pthread_cond_wait(&bg->wake, &bg->lock);
		struct bg_job *j = bg->todo_head;
		if (!j || bg->abandoned)
			break; /* stopping and nothing left, or nothing more wanted */
		bg->todo_head = j->next;
		if (!bg->todo_head)
			bg->todo_tail = NULL;
		w->job = j;
		pthread_mutex_unlock(&bg->lock);
		j->work(j);
		pthread_mutex_lock(&bg->lock);
		if (bg->abandoned)
			break; /* nobody reads the result: the job stays in w->job, the thread ends */
		w->job = NULL;
		push(&bg->done_head, &bg->done_tail, j);
		uint64_t one = 1;
		ssize_t wr = write(bg->io.fd, &one, sizeof one);
		(void)wr; /* the counter cannot overflow with a bounded queue */
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
		pthread_join(bg->workers[i].thread, NULL);
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
	for (; bg->nthreads < threads; bg->nthreads++) {
		struct bg_worker *w = &bg->workers[bg->nthreads];
		w->bg = bg;
		if (pthread_create(&w->thread, NULL, worker, w) != 0)
			goto fail_threads;
	}
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

void bg_abandon(struct bg *bg)
{
	if (!bg)
		return;
	bool busy[BG_MAX_THREADS] = {false};
	bool any = false;
	pthread_mutex_lock(&bg->lock);
	bg->stopping = true;
	bg->abandoned = true;
	for (unsigned i = 0; i < bg->nthreads; i++) {
		busy[i] = bg->workers[i].job != NULL;
		any |= busy[i];
		if (busy[i])
			pthread_detach(bg->workers[i].thread);
	}
	any |= bg->todo_head != NULL; /* its owner did not cancel it: it stays held */
	pthread_cond_broadcast(&bg->wake);
	pthread_mutex_unlock(&bg->lock);
	/* Idle threads see the flag and end at once. */
	for (unsigned i = 0; i < bg->nthreads; i++)
		if (!busy[i])
			pthread_join(bg->workers[i].thread, NULL);
	drain(bg);
	loop_io_stop(bg->loop, &bg->io);
	close(bg->io.fd); /* no thread writes to it once abandoned is set */
	if (!any) {
		pthread_cond_destroy(&bg->wake);
		pthread_mutex_destroy(&bg->lock);
		wisp_free(bg);
		return;
	}
	/* The detached threads still take the lock when their job returns
	 * (then they end without touching anything else: no eventfd write,
	 * no done()), so the set stays. */
	bg->next_abandoned = abandoned_sets;
	abandoned_sets = bg;
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
