/*
 * The store's helper thread: every fsync of the store happens here, never on
 * the loop thread (as redis's bio.c does for its append-only file).
 *
 * Threading: the loop thread calls sync_*; the helper thread only runs
 * sync.c's static functions. They share `struct store_sync` under one mutex;
 * durable_seq is also readable without it. The helper never calls
 * wisp_malloc or log_msg (both loop-thread only): it reports through the
 * eventfd and the fields the loop reads back.
 */
#ifndef WISP_STORE_SYNC_H
#define WISP_STORE_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

struct store_sync;

/* The compaction tail handed to the helper (see store.c for the protocol).
 * Names are relative to dir_fd. The helper closes old_fd and snap_fd. */
struct sync_switch {
	int old_fd;          /* the log being retired */
	uint64_t old_seq;    /* last sequence number written to it */
	uint32_t old_epoch;  /* filled in by sync_switch */
	int snap_fd;         /* the written, not yet synced, temp snapshot */
	char tmp_name[64];
	char snap_name[64];
};

/* Starts the helper on `log_fd` (borrowed; the store closes it). `dir_fd`
 * is borrowed too. 0 or a negative WISP_E*. */
int sync_start(enum store_fsync mode, int dir_fd, int log_fd, uint64_t seq,
	       struct store_sync **out);
struct sync_report;
/* Finishes a pending switch, does a final sync of the current log (unless
 * mode "no"), joins the thread, reports what it finished (out may be NULL)
 * and frees sy. */
void sync_stop(struct store_sync *sy, struct sync_report *out);

/* Records up to `seq` are in the OS (write() returned). */
void sync_written(struct store_sync *sy, uint64_t seq);
/* Hands over a compaction tail and makes `new_log_fd` current. A
 * successful switch also clears the taint of a failed fsync on any log it
 * retires: the snapshot holds everything that log held. */
void sync_switch(struct store_sync *sy, const struct sync_switch *sw, int new_log_fd);

int sync_event_fd(const struct store_sync *sy);
uint64_t sync_durable(const struct store_sync *sy);

struct sync_report {
	bool switch_done;      /* a sync_switch finished since the last call */
	int switch_err;        /* its result: 0 or -errno */
	int sync_err;          /* -errno of the last failed log fsync, or 0 */
	bool tainted;          /* a log fsync failed and no snapshot has replaced that log yet */
	uint64_t fsync_errors; /* failed log fsyncs since start */
};
/* Drains the eventfd and collects what the helper finished. */
void sync_collect(struct store_sync *sy, struct sync_report *out);

#endif
