/*
 * Internals shared by store.c, load.c and compact.c; not for the broker.
 * Single-threaded (loop thread) except where sync.h says otherwise.
 */
#ifndef WISP_STORE_INT_H
#define WISP_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "sync.h"

/* "log.%016llx" and "snap.%016llx": fixed-width hex generations sort and
 * parse trivially; a name that does not match exactly is not ours. */
#define STORE_NAME_MAX 64
#define STORE_LOCK_NAME "LOCK"

struct store {
	char *dir;
	int dir_fd;
	int lock_fd;
	int log_fd;             /* active log, O_APPEND; -1 before load */
	enum store_fsync mode;
	uint32_t ratio;
	uint64_t min_bytes;
	bool loaded;
	uint64_t gen;           /* generation of the active log */
	uint64_t max_gen;       /* highest generation named in the directory */
	uint32_t log_salt;
	uint64_t log_size;      /* bytes in the active log, header included */
	uint64_t snap_size;     /* bytes of the newest snapshot (0: none) */
	/* Records appended this turn (or, while compacting, snapshot bytes
	 * not yet written). */
	uint8_t *buf;
	size_t len;
	size_t cap;
	uint64_t seq;           /* last appended */
	uint64_t next_msg_id;
	struct store_sync *sync;
	uint64_t written_seq;   /* last seq whose record write() returned */
	int last_errno;         /* of the last failed write or fsync, for logs */
	bool write_failing;     /* the last flush failed: records still buffered */
	bool need_truncate;     /* a failed write left a partial record to cut */
	bool tainted;           /* an fsync of the log failed (sync.c); a
				   compaction must rewrite the state */
	bool compact_failing;   /* the last compaction failed (log once) */
	/* Compaction */
	bool compacting;        /* emit callback running: appends go to snap_fd */
	bool finishing;         /* helper finishing the switch */
	uint64_t finishing_gen;
	int snap_fd;
	uint32_t snap_salt;
	uint64_t snap_written;
	int snap_err;
	struct store_stats stats;
};

void store_name(char out[STORE_NAME_MAX], const char *prefix, uint64_t gen, const char *suffix);
/* Parses an exact "<prefix>.<16 hex>" name; false otherwise. */
bool store_parse_name(const char *name, const char *prefix, uint64_t *gen);
/* Full write() of len bytes, retrying EINTR and short writes; 0 or -errno. */
int store_write_all(int fd, const uint8_t *buf, size_t len);
uint32_t store_random_salt(void);
/* Creates <name> in the data dir holding only a file header. fd or -errno. */
int store_create_file(struct store *s, const char *name, enum store_file_kind kind, uint64_t gen,
		      uint32_t *salt);
/* Removes every log and snapshot with a generation below `gen`, and every
 * temp snapshot. */
void store_remove_older(struct store *s, uint64_t gen);
void store_finish_compaction(struct store *s, int err);

#endif
