/*
 * Compaction: rewrite the live state as a snapshot and start a new log, so
 * the log does not grow without bound.
 *
 * Compaction protocol (generation N = highest generation so far + 1):
 *  1. loop:   flush the turn's records to log.N-1 (write only).
 *  2. loop:   write snap.N.tmp: header, then the broker's live state through
 *             its emit callback (write only, ~1 MiB at a time).
 *  3. loop:   create log.N with its header; appends go there from now on.
 *  4. helper: fdatasync log.N-1 (unless fsync "no"); fsync snap.N.tmp;
 *             fsync the directory (log.N and the temp name are durable);
 *             rename snap.N.tmp -> snap.N; fsync the directory.
 *  5. loop:   on the helper's report, unlink every log/snapshot below N.
 * A crash before the rename leaves snap.N-1 (or none), log.N-1 and log.N:
 * the loader replays them all, in order, and deletes the temp file. A crash
 * after it leaves snap.N (complete: fsynced before the rename) and log.N;
 * older files are deleted at the next start. No step overwrites a file that
 * recovery might still need.
 *
 * Cost: step 2 runs on the loop thread; it is a serialisation of the whole
 * live state into the page cache (measured in docs/persistence.md). The
 * fsyncs of step 4 never block the loop, but with fsync "always" the acks
 * of records appended meanwhile wait for them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "store_int.h"

/* One error line per episode of failing compactions (the caller retries
 * with backoff); the next success says so. */
static int compact_failed(struct store *s, int rc, const char *what, const char *name, int err)
{
	s->stats.compact_errors++;
	if (!s->compact_failing)
		log_msg(LOG_ERROR, "store", "compaction: %s %s/%s failed: %s; keeping the old files", what, s->dir,
			name, err ? strerror(-err) : wisp_strerror(rc));
	s->compact_failing = true;
	return rc;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int store_compact(struct store *s, store_emit_fn emit, void *ctx)
{
	struct sync_switch sw = {.old_fd = -1, .snap_fd = -1};
	char log_name[STORE_NAME_MAX];
	uint64_t gen, t0 = now_ms();
	uint32_t log_salt;
	int rc, log_fd;

	if (!s->loaded || s->compacting)
		return WISP_EINVAL;
	if (s->finishing)
		return WISP_EAGAIN;
	rc = store_flush(s);
	if (rc != 0)
		return rc;
	gen = s->max_gen + 1;
	store_name(sw.tmp_name, "snap", gen, ".tmp");
	store_name(sw.snap_name, "snap", gen, "");
	store_name(log_name, "log", gen, "");

	rc = store_create_file(s, sw.tmp_name, STORE_FILE_SNAP, gen, &s->snap_salt);
	if (rc < 0)
		return compact_failed(s, WISP_EIO, "creating", sw.tmp_name, rc);
	s->snap_fd = rc;
	s->snap_written = STORE_FILE_HDR;
	s->snap_err = 0;
	s->compacting = true;
	rc = emit(ctx, s);
	s->compacting = false;
	if (rc == 0 && s->snap_err == 0 && s->len > 0)
		s->snap_err = store_write_all(s->snap_fd, s->buf, s->len);
	s->snap_written += s->len;
	s->len = 0;
	if (rc == 0 && s->snap_err != 0)
		rc = compact_failed(s, WISP_EIO, "writing", sw.tmp_name, s->snap_err);
	else if (rc != 0)
		compact_failed(s, rc, "emitting the state into", sw.tmp_name, 0);
	if (rc != 0)
		goto fail_snap;

	log_fd = store_create_file(s, log_name, STORE_FILE_LOG, gen, &log_salt);
	if (log_fd < 0) {
		rc = compact_failed(s, WISP_EIO, "creating", log_name, log_fd);
		goto fail_snap;
	}
	sw.old_fd = s->log_fd;
	sw.old_seq = s->seq;
	sw.snap_fd = s->snap_fd;
	sync_switch(s->sync, &sw, log_fd);
	s->snap_fd = -1;
	s->log_fd = log_fd;
	s->log_salt = log_salt;
	s->log_size = STORE_FILE_HDR;
	s->gen = s->max_gen = gen;
	s->finishing = true;
	s->finishing_gen = gen;
	log_msg(LOG_INFO, "store", "compaction to generation %" PRIu64 ": snapshot of %" PRIu64 " bytes written in %" PRIu64 " ms",
		gen, s->snap_written, now_ms() - t0);
	return 0;

fail_snap:
	close(s->snap_fd);
	s->snap_fd = -1;
	unlinkat(s->dir_fd, sw.tmp_name, 0);
	return rc;
}

void store_finish_compaction(struct store *s, int err)
{
	char name[STORE_NAME_MAX];

	if (!s->finishing)
		return;
	s->finishing = false;
	if (err != 0) {
		/* Nothing is lost: without snap.N the loader replays the old
		 * snapshot and both logs. The next compaction tries again. */
		store_name(name, "snap", s->finishing_gen, ".tmp");
		unlinkat(s->dir_fd, name, 0);
		compact_failed(s, WISP_EIO, "syncing", name, err);
		return;
	}
	if (s->compact_failing)
		log_msg(LOG_NOTICE, "store", "compaction works again (%" PRIu64 " failed attempts in all)",
			s->stats.compact_errors);
	s->compact_failing = false;
	s->snap_size = s->snap_written;
	s->stats.compactions++;
	store_remove_older(s, s->finishing_gen);
	log_msg(LOG_INFO, "store", "compaction to generation %" PRIu64 " complete", s->finishing_gen);
}
