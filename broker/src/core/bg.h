/*
 * Background work: jobs that would block the loop (password hashing now;
 * fsync belongs to the store's own thread) run on one helper thread, and
 * their completions come back to the loop thread through an eventfd, so a
 * slow job delays only the connection waiting for it.
 *
 * A job is an intrusive struct embedded in its owner. work() runs on the
 * helper thread and must touch only the job's own data; done() runs later
 * on the loop thread. The number of jobs queued or running is capped, so a
 * flood of requests (wrong passwords) cannot grow memory: bg_submit refuses
 * past the cap and the caller answers "server unavailable".
 */
#ifndef WISP_CORE_BG_H
#define WISP_CORE_BG_H

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

/* NULL on failure (thread, eventfd or memory). */
struct bg *bg_new(struct loop *l, size_t max_jobs);
/* Waits for running work, calls done() of every finished job, then frees. */
void bg_free(struct bg *bg);

/* 0, or WISP_ELIMIT past max_jobs. */
int bg_submit(struct bg *bg, struct bg_job *job);
size_t bg_pending(const struct bg *bg);

#endif
