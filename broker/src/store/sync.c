/*
 * The fsync helper thread (see sync.h). Policies:
 *  - always:   sync as soon as the loop reports new writes; flushes that
 *              arrive while an fdatasync runs share the next one (group
 *              commit), so the cost is one fsync per disk round trip, not
 *              per record.
 *  - everysec: at most one fdatasync a second, only if something was written.
 *  - no:       the log is never synced by us (the kernel writes it back).
 * In every mode the helper also finishes compactions (fsync the snapshot,
 * rename it, fsync the directory), because a snapshot that replaces logs
 * must be durable before the logs may go, whatever the policy.
 *
 * A failed log fsync is sticky: durability is never claimed again for this
 * process (after a failed fsync Linux may have dropped the dirty pages, so
 * a later success would lie). The loop learns it through sync_collect().
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "sync.h"

struct store_sync {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	enum store_fsync mode;
	int dir_fd;
	int log_fd;
	int efd;
	uint64_t written;       /* highest seq the loop wrote to the OS */
	uint64_t synced;        /* highest seq covered by a completed fsync */
	_Atomic uint64_t durable;
	bool stop;
	bool has_switch;
	bool switch_done;
	int switch_err;
	int sync_err;
	struct sync_switch sw;
};

static int retry_fsync(int fd, bool data_only)
{
	for (;;) {
		int rc = data_only ? fdatasync(fd) : fsync(fd);
		if (rc == 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

static void notify(struct store_sync *sy)
{
	uint64_t one = 1;
	/* EAGAIN means the counter is already non-zero: the loop will wake. */
	while (write(sy->efd, &one, sizeof one) == -1 && errno == EINTR)
		;
}

static void close_quiet(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* Runs unlocked. Order matters, see store.c "Compaction protocol". */
static int finish_switch(struct store_sync *sy, const struct sync_switch *sw)
{
	int err = 0;

	if (sy->mode != STORE_FSYNC_NO) {
		err = retry_fsync(sw->old_fd, true);
		pthread_mutex_lock(&sy->mu);
		if (err == 0 && sw->old_seq > sy->synced) {
			sy->synced = sw->old_seq;
			atomic_store(&sy->durable, sw->old_seq);
		} else if (err != 0 && sy->sync_err == 0) {
			sy->sync_err = err;
		}
		pthread_mutex_unlock(&sy->mu);
	}
	close_quiet(sw->old_fd);
	if (err == 0)
		err = retry_fsync(sw->snap_fd, false);
	close_quiet(sw->snap_fd);
	/* Makes the new log's and the temp file's directory entries durable
	 * before the rename and before any record of the new log is declared
	 * durable. */
	if (err == 0)
		err = retry_fsync(sy->dir_fd, false);
	if (err == 0 && renameat(sy->dir_fd, sw->tmp_name, sy->dir_fd, sw->snap_name) == -1)
		err = -errno;
	if (err == 0)
		err = retry_fsync(sy->dir_fd, false);
	return err;
}

static void deadline_in_1s(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += 1;
}

static bool reached(const struct timespec *ts)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > ts->tv_sec || (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

static void *helper_main(void *arg)
{
	struct store_sync *sy = arg;
	struct timespec next;

	deadline_in_1s(&next);
	pthread_mutex_lock(&sy->mu);
	for (;;) {
		if (sy->has_switch) {
			struct sync_switch sw = sy->sw;
			sy->has_switch = false;
			pthread_mutex_unlock(&sy->mu);
			int err = finish_switch(sy, &sw);
			pthread_mutex_lock(&sy->mu);
			sy->switch_done = true;
			sy->switch_err = err;
			notify(sy);
			continue;
		}
		bool tick = sy->mode == STORE_FSYNC_EVERYSEC && reached(&next);
		bool due = sy->mode == STORE_FSYNC_ALWAYS || sy->stop || tick;
		if (sy->mode != STORE_FSYNC_NO && sy->sync_err == 0 && due && sy->written > sy->synced) {
			uint64_t target = sy->written;
			int fd = sy->log_fd;
			pthread_mutex_unlock(&sy->mu);
			int err = retry_fsync(fd, true);
			pthread_mutex_lock(&sy->mu);
			if (err != 0) {
				sy->sync_err = err;
			} else if (target > sy->synced) {
				sy->synced = target;
				atomic_store(&sy->durable, target);
			}
			notify(sy);
			if (tick)
				deadline_in_1s(&next);
			continue;
		}
		if (tick)
			deadline_in_1s(&next);
		if (sy->stop)
			break;
		if (sy->mode == STORE_FSYNC_EVERYSEC)
			pthread_cond_timedwait(&sy->cond, &sy->mu, &next);
		else
			pthread_cond_wait(&sy->cond, &sy->mu);
	}
	pthread_mutex_unlock(&sy->mu);
	return NULL;
}

int sync_start(enum store_fsync mode, int dir_fd, int log_fd, uint64_t seq,
	       struct store_sync **out)
{
	pthread_condattr_t ca;
	sigset_t all, old;
	struct store_sync *sy = wisp_calloc(1, sizeof *sy);

	if (sy == NULL)
		return WISP_ENOMEM;
	sy->mode = mode;
	sy->dir_fd = dir_fd;
	sy->log_fd = log_fd;
	sy->written = sy->synced = seq;
	atomic_init(&sy->durable, seq);
	sy->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (sy->efd == -1)
		goto fail_free;
	if (pthread_mutex_init(&sy->mu, NULL) != 0)
		goto fail_efd;
	if (pthread_condattr_init(&ca) != 0)
		goto fail_mu;
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	int rc = pthread_cond_init(&sy->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (rc != 0)
		goto fail_mu;
	/* Signals stay with the loop thread (signalfd or handlers there). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&sy->thread, NULL, helper_main, sy);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		goto fail_cond;
	*out = sy;
	return 0;

fail_cond:
	pthread_cond_destroy(&sy->cond);
fail_mu:
	pthread_mutex_destroy(&sy->mu);
fail_efd:
	close(sy->efd);
fail_free:
	wisp_free(sy);
	return WISP_EIO;
}

void sync_stop(struct store_sync *sy, struct sync_report *out)
{
	if (sy == NULL)
		return;
	pthread_mutex_lock(&sy->mu);
	sy->stop = true;
	pthread_cond_signal(&sy->cond);
	pthread_mutex_unlock(&sy->mu);
	pthread_join(sy->thread, NULL);
	if (out != NULL) {
		out->switch_done = sy->switch_done;
		out->switch_err = sy->switch_err;
		out->sync_err = sy->sync_err;
	}
	pthread_cond_destroy(&sy->cond);
	pthread_mutex_destroy(&sy->mu);
	close(sy->efd);
	wisp_free(sy);
}

void sync_written(struct store_sync *sy, uint64_t seq)
{
	pthread_mutex_lock(&sy->mu);
	if (seq > sy->written) {
		sy->written = seq;
		if (sy->mode == STORE_FSYNC_ALWAYS)
			pthread_cond_signal(&sy->cond);
	}
	pthread_mutex_unlock(&sy->mu);
}

void sync_switch(struct store_sync *sy, const struct sync_switch *sw, int new_log_fd)
{
	pthread_mutex_lock(&sy->mu);
	sy->sw = *sw;
	sy->has_switch = true;
	sy->log_fd = new_log_fd;
	pthread_cond_signal(&sy->cond);
	pthread_mutex_unlock(&sy->mu);
}

int sync_event_fd(const struct store_sync *sy) { return sy->efd; }

uint64_t sync_durable(const struct store_sync *sy)
{
	return atomic_load(&((struct store_sync *)sy)->durable);
}

void sync_collect(struct store_sync *sy, struct sync_report *out)
{
	uint64_t n;
	while (read(sy->efd, &n, sizeof n) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&sy->mu);
	out->switch_done = sy->switch_done;
	out->switch_err = sy->switch_err;
	out->sync_err = sy->sync_err;
	sy->switch_done = false;
	pthread_mutex_unlock(&sy->mu);
}
