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
 * A failed log fsync taints that log. After a failed fsync Linux may have
 * dropped the dirty pages (or marked them clean), so a later fsync of the
 * same file that succeeds proves nothing about what was written before it.
 * While tainted, the durable seq does not advance and the helper stops
 * syncing the log; the loop learns it through sync_collect() and starts a
 * compaction, which writes the whole state into fresh files. Only when that
 * snapshot is fsynced and renamed (so it replaces the tainted log) is the
 * taint cleared and the durable seq moved to the retired log's last seq.
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
	int sync_err;           /* last failed log fsync, -errno */
	uint64_t fsync_errors;
	uint32_t epoch;         /* which log is current: bumped by each switch */
	bool tainted;           /* a log fsync failed ... */
	uint32_t taint_epoch;   /* ... on the log of this epoch (or an older one) */
	struct sync_switch sw;
};

/* Locked. A failed fsync of the log of `epoch`. */
static void taint(struct store_sync *sy, int err, uint32_t epoch)
{
	sy->sync_err = err;
	sy->fsync_errors++;
	if (!sy->tainted || epoch < sy->taint_epoch)
		sy->taint_epoch = epoch;
	sy->tainted = true;
}

/* Locked. Records up to seq are on disk (unless a tainted log is below). */
static void advance_durable(struct store_sync *sy, uint64_t seq)
{
	if (sy->tainted || seq <= sy->synced)
		return;
	sy->synced = seq;
	atomic_store(&sy->durable, seq);
}

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
		/* Lets "always" acks go before the snapshot is done. A failure
		 * here does not stop the switch: the snapshot makes the old log
		 * redundant, which is how a tainted log is recovered. */
		int old_err = retry_fsync(sw->old_fd, true);
		pthread_mutex_lock(&sy->mu);
		if (old_err == 0)
			advance_durable(sy, sw->old_seq);
		else
			taint(sy, old_err, sw->old_epoch);
		pthread_mutex_unlock(&sy->mu);
	}
	close_quiet(sw->old_fd);
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
	if (err == 0 && sy->mode != STORE_FSYNC_NO) {
		pthread_mutex_lock(&sy->mu);
		if (sy->tainted && sy->taint_epoch <= sw->old_epoch)
			sy->tainted = false;
		advance_durable(sy, sw->old_seq);
		pthread_mutex_unlock(&sy->mu);
	}
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
		/* A tainted log is not synced again (see the file comment): the
		 * loop's compaction replaces it, and retrying it here would spin
		 * in mode always. */
		if (sy->mode != STORE_FSYNC_NO && !sy->tainted && due && sy->written > sy->synced) {
			uint64_t target = sy->written;
			int fd = sy->log_fd;
			uint32_t epoch = sy->epoch;
			pthread_mutex_unlock(&sy->mu);
			int err = retry_fsync(fd, true);
			pthread_mutex_lock(&sy->mu);
			if (err != 0)
				taint(sy, err, epoch);
			else
				advance_durable(sy, target);
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
		out->tainted = sy->tainted;
		out->fsync_errors = sy->fsync_errors;
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
	sy->sw.old_epoch = sy->epoch++;
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
	out->tainted = sy->tainted;
	out->fsync_errors = sy->fsync_errors;
	sy->switch_done = false;
	pthread_mutex_unlock(&sy->mu);
}
