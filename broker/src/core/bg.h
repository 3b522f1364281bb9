/*
 * Background work: jobs that would block the loop (password hashing now;
 * fsync belongs to the store's own thread) run on a few helper threads,
 * and their completions come back to the loop thread through an eventfd,
 * so a slow job delays only the connection waiting for it.
 *
 * A job is an intrusive struct embedded in its owner. work() runs on a
 * helper thread and must touch only the job's own data; done() runs later
 * on the loop thread. Jobs start in submission order. The number of jobs
 * queued or running is capped, so a flood of requests (wrong passwords)
 * cannot grow memory: bg_submit refuses past the cap and the caller
 * answers "server unavailable". A job whose requester went away is taken
 * out of the queue with bg_cancel, so it costs no helper time.
 */
#ifndef WISP_CORE_BG_H
#define WISP_CORE_BG_H

#include <stdbool.h>
#include <stddef.h>

#include "loop.h"

struct bg;
struct bg_job;

typedef void (*bg_fn)(struct bg_job *job);

struct bg_job {
	struct bg_job *next;
	bg_fn work; /* helper thread */
	bg_fn done; /* loop thread */
};

#define BG_MAX_THREADS 8u

/* `threads` helpers (1..BG_MAX_THREADS). NULL on failure (thread, eventfd
 * or memory). */
struct bg *bg_new(struct loop *l, size_t max_jobs, unsigned threads);
/* Waits for running work, calls done() of every finished job, then frees. */
void bg_free(struct bg *bg);
/* For the process's exit: like bg_free, but a job still running is left
 * to its helper thread, detached, instead of waited for (a name lookup
 * that does not answer must not hold SIGTERM up until getaddrinfo gives
 * up). Such a job never gets done() and is never freed: it stays with the
 * set, held from a global so the leak checker sees it reachable; so does
 * a job still queued (cancel those first). Loop thread; after it, neither
 * the loop nor the set's owner may expect anything back. */
void bg_abandon(struct bg *bg);

/* 0, or WISP_ELIMIT past max_jobs. */
int bg_submit(struct bg *bg, struct bg_job *job);
/* Takes a job that has not started out of the queue: true, and neither
 * work() nor done() will run (the caller owns the job again). False when
 * work() has started or finished: done() runs as usual. Loop thread;
 * O(jobs queued), which max_jobs bounds. */
bool bg_cancel(struct bg *bg, struct bg_job *job);
size_t bg_pending(const struct bg *bg);

#endif
