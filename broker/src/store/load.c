/*
 * Start-up: find the files of the current state, replay them through the
 * broker's visitor, repair the active log and start the helper thread.
 *
 * Which files: the newest snapshot snap.S (if any), then every log.G with
 * G >= S in increasing G. Normally that is snap.S + log.S; after a crash in
 * the middle of a compaction to S+1 (snapshot not yet renamed) it is snap.S
 * + log.S + log.S+1, which together are still the whole history. Logs and
 * snapshots below S and temp snapshots are garbage and removed.
 *
 * Files are mapped read-only and scanned in place (scan.c): no copy of the
 * log in memory. During the load, message ids map to the broker's handles
 * in an open-addressing table (16 bytes a slot, load <= 1/2), freed at the
 * end. Loop thread, before the loop runs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "log.h"
#include "scan.h"
#include "store_int.h"

/* Damage lines logged per file before summarising. */
#define LOAD_LOG_DAMAGE_MAX 16

struct msg_slot {
	uint64_t id; /* 0: empty */
	void *handle;
};

struct load_ctx {
	struct store *s;
	const struct store_visitor *v;
	void *vctx;
	struct msg_slot *slots;
	size_t nslots; /* power of two */
	size_t used;
	struct store_load_stats st;
	const char *file;
	size_t file_damage;
	size_t fail_off;
	/* The mapping being replayed; pages behind the scan are dropped so a
	 * large log does not stay resident (they are clean file pages). */
	uint8_t *map;
	size_t dropped;
};

#define LOAD_DROP_CHUNK (16u << 20)

static size_t slot_hash(uint64_t id, size_t mask)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	id ^= id >> 33;
	return (size_t)id & mask;
}

static struct msg_slot *map_find(struct load_ctx *lc, uint64_t id)
{
	if (lc->nslots == 0)
		return NULL;
	size_t mask = lc->nslots - 1;
	for (size_t i = slot_hash(id, mask);; i = (i + 1) & mask) {
		if (lc->slots[i].id == id)
			return &lc->slots[i];
		if (lc->slots[i].id == 0)
			return NULL;
	}
}

static int map_grow(struct load_ctx *lc)
{
	size_t n = lc->nslots ? lc->nslots * 2 : 1024;
	struct msg_slot *slots = wisp_calloc(n, sizeof *slots);
	if (slots == NULL)
		return WISP_ENOMEM;
	for (size_t j = 0; j < lc->nslots; j++) {
		if (lc->slots[j].id == 0)
			continue;
		size_t i = slot_hash(lc->slots[j].id, n - 1);
		while (slots[i].id != 0)
			i = (i + 1) & (n - 1);
		slots[i] = lc->slots[j];
	}
	wisp_free(lc->slots);
	lc->slots = slots;
	lc->nslots = n;
	return 0;
}

/* Caller checked the id is absent. */
static int map_insert(struct load_ctx *lc, uint64_t id, void *handle)
{
	if ((lc->used + 1) * 2 > lc->nslots) {
		int rc = map_grow(lc);
		if (rc != 0)
			return rc;
	}
	size_t mask = lc->nslots - 1, i = slot_hash(id, mask);
	while (lc->slots[i].id != 0)
		i = (i + 1) & mask;
	lc->slots[i] = (struct msg_slot){id, handle};
	lc->used++;
	return 0;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void map_remove(struct load_ctx *lc, struct msg_slot *slot)
{
	size_t mask = lc->nslots - 1, i = (size_t)(slot - lc->slots), j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (lc->slots[j].id == 0)
			break;
		size_t home = slot_hash(lc->slots[j].id, mask);
		/* Move j back into the hole i unless its home lies in (i, j]. */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			lc->slots[i] = lc->slots[j];
			i = j;
		}
	}
	lc->slots[i].id = 0;
	lc->slots[i].handle = NULL;
	lc->used--;
}

static void release(struct load_ctx *lc, void *handle)
{
	if (lc->v->msg_release)
		lc->v->msg_release(lc->vctx, handle);
}

static void note_id(struct load_ctx *lc, uint64_t id)
{
	if (id >= lc->s->next_msg_id)
		lc->s->next_msg_id = id + 1;
}

/* Resolves a referenced message; false (record skipped) when unknown. */
static bool resolve(struct load_ctx *lc, uint64_t id, size_t off, void **handle)
{
	note_id(lc, id);
	if (id == 0) {
		*handle = NULL;
		return true;
	}
	struct msg_slot *slot = map_find(lc, id);
	if (slot == NULL) {
		if (lc->st.dangling++ < LOAD_LOG_DAMAGE_MAX)
			log_msg(LOG_WARNING, "store", "%s/%s: record at offset %zu names unknown message %" PRIu64 "; skipped",
				lc->s->dir, lc->file, off, id);
		return false;
	}
	*handle = slot->handle;
	return true;
}

#define CALL(fn, ...) (lc->v->fn ? lc->v->fn(lc->vctx, __VA_ARGS__) : 0)

static int on_record(void *ctx, const struct store_rec *r, size_t off)
{
	struct load_ctx *lc = ctx;
	void *h = NULL;
	int rc = 0;

	lc->fail_off = off;
	lc->st.records++;
	if (lc->map != NULL && off - lc->dropped >= 2 * LOAD_DROP_CHUNK) {
		/* Keep the last chunk: the current record may start there. */
		madvise(lc->map + lc->dropped, LOAD_DROP_CHUNK, MADV_DONTNEED);
		lc->dropped += LOAD_DROP_CHUNK;
	}
	switch (r->type) {
	case STORE_REC_MSG_PUT: {
		struct msg_slot *old = map_find(lc, r->u.msg.id);
		note_id(lc, r->u.msg.id);
		if (old != NULL) { /* re-put: the newer copy wins */
			release(lc, old->handle);
			map_remove(lc, old);
		}
		if (lc->v->msg_put && (rc = lc->v->msg_put(lc->vctx, &r->u.msg, &h)) != 0)
			return rc;
		rc = map_insert(lc, r->u.msg.id, h);
		if (rc != 0)
			release(lc, h);
		return rc;
	}
	case STORE_REC_MSG_DEL: {
		struct msg_slot *slot = map_find(lc, r->u.msg_id);
		note_id(lc, r->u.msg_id);
		if (slot != NULL) {
			release(lc, slot->handle);
			map_remove(lc, slot);
		}
		return 0;
	}
	case STORE_REC_RETAIN_SET:
		return resolve(lc, r->u.retain.msg_id, off, &h) ? CALL(retain_set, &r->u.retain, h) : 0;
	case STORE_REC_RETAIN_DEL:
		return CALL(retain_del, &r->u.retain);
	case STORE_REC_SESSION_PUT:
		return CALL(session_put, &r->u.session);
	case STORE_REC_SESSION_DEL:
		return CALL(session_del, &r->u.session);
	case STORE_REC_SUB_ADD:
		return CALL(sub_add, &r->u.sub);
	case STORE_REC_SUB_DEL:
		return CALL(sub_del, &r->u.sub);
	case STORE_REC_QUEUE_ADD:
		return resolve(lc, r->u.queue.msg_id, off, &h) ? CALL(queue_add, &r->u.queue, h) : 0;
	case STORE_REC_QUEUE_DEL:
		return CALL(queue_del, &r->u.queue);
	case STORE_REC_FLIGHT_SET:
		return resolve(lc, r->u.flight.msg_id, off, &h) ? CALL(flight_set, &r->u.flight, h) : 0;
	case STORE_REC_FLIGHT_DEL:
		return CALL(flight_del, &r->u.flight);
	case STORE_REC_QOS2_IN_ADD:
		return CALL(qos2_in_add, &r->u.qos2);
	case STORE_REC_QOS2_IN_DEL:
		return CALL(qos2_in_del, &r->u.qos2);
	case STORE_REC_WILL_SET:
		return CALL(will_set, &r->u.will);
	case STORE_REC_WILL_DEL:
		return CALL(will_del, &r->u.will);
	case STORE_REC_FWD_ADD:
		return resolve(lc, r->u.fwd.msg_id, off, &h) ? CALL(fwd_add, &r->u.fwd, h) : 0;
	case STORE_REC_FWD_DEL:
		return CALL(fwd_del, &r->u.fwd);
	case STORE_REC_STREAM_TAKEN:
		return CALL(stream_taken, &r->u.taken);
	case STORE_REC_RETAIN_UNSENT:
		return CALL(retain_unsent, &r->u.mark);
	case STORE_REC_RETAIN_SENT:
		return CALL(retain_sent, &r->u.mark);
	default:
		return 0;
	}
}

static void on_damage(void *ctx, size_t off, size_t len, const char *why)
{
	struct load_ctx *lc = ctx;
	if (lc->file_damage++ < LOAD_LOG_DAMAGE_MAX)
		log_msg(LOG_WARNING, "store", "%s/%s: %s at offset %zu: skipped %zu bytes", lc->s->dir,
			lc->file, why, off, len);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/*
 * Replays one file. For the active log the fd stays open for appending and
 * a torn tail is cut off; a log torn while it was being created (shorter
 * than its header, or a zero-filled header) is recreated empty.
 */
static int load_file(struct load_ctx *lc, const char *name, enum store_file_kind kind, uint64_t gen,
		     bool active, char *err, size_t errlen)
{
	struct store *s = lc->s;
	struct stat st;
	uint8_t *map = NULL;
	size_t size;
	int rc = 0;
	int fd = openat(s->dir_fd, name, (active ? O_RDWR | O_APPEND : O_RDONLY) | O_CLOEXEC);

	if (fd == -1) {
		set_err(err, errlen, "cannot open %s/%s: %s", s->dir, name, strerror(errno));
		return WISP_EIO;
	}
	if (fstat(fd, &st) == -1) {
		set_err(err, errlen, "cannot stat %s/%s: %s", s->dir, name, strerror(errno));
		rc = WISP_EIO;
		goto out;
	}
	size = (size_t)st.st_size;
	if (size > 0) {
		map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			map = NULL;
			set_err(err, errlen, "cannot map %s/%s: %s", s->dir, name, strerror(errno));
			rc = WISP_EIO;
			goto out;
		}
		madvise(map, size, MADV_SEQUENTIAL);
	}
	lc->st.bytes += size;
	if (kind == STORE_FILE_LOG && (size < STORE_FILE_HDR || all_zero(map, STORE_FILE_HDR))) {
		log_msg(LOG_WARNING, "store", "%s/%s: log torn at creation (%zu bytes), %s", s->dir, name,
			size, active ? "recreated empty" : "ignored");
		if (active) {
			uint32_t salt;
			close(fd);
			fd = store_create_file(s, name, STORE_FILE_LOG, gen, &salt);
			if (fd < 0) {
				set_err(err, errlen, "cannot recreate %s/%s: %s", s->dir, name, strerror(-fd));
				rc = WISP_EIO;
				goto out;
			}
			lc->st.truncated_bytes += size;
			s->log_salt = salt;
			s->log_size = STORE_FILE_HDR;
		}
		goto out;
	}

	struct store_scan_result res;
	const struct store_scan_ops ops = {on_record, on_damage};
	lc->file = name;
	lc->file_damage = 0;
	lc->map = map;
	lc->dropped = 0;
	rc = store_scan(map, size, kind, &ops, lc, &res);
	if (rc == WISP_EPROTO) {
		set_err(err, errlen, "%s/%s: %s at offset %zu; refusing to start (move the file away to start without it)",
			s->dir, name, res.why, res.bad_offset);
		goto out;
	}
	if (rc != 0) {
		set_err(err, errlen, "%s/%s: replaying the record at offset %zu failed: %s", s->dir, name,
			lc->fail_off, wisp_strerror(rc));
		goto out;
	}
	if (res.gen != gen) {
		set_err(err, errlen, "%s/%s: header names generation %" PRIu64 " at offset 16; refusing to start",
			s->dir, name, res.gen);
		rc = WISP_EPROTO;
		goto out;
	}
	if (lc->file_damage > LOAD_LOG_DAMAGE_MAX)
		log_msg(LOG_WARNING, "store", "%s/%s: %zu damaged regions in all", s->dir, name, lc->file_damage);
	lc->st.damaged += res.damaged;
	lc->st.damaged_bytes += res.damaged_bytes;
	if (res.tail_bytes > 0) {
		if (active) {
			if (ftruncate(fd, (off_t)res.valid_end) == -1 || fdatasync(fd) == -1) {
				set_err(err, errlen, "cannot truncate %s/%s at offset %zu: %s", s->dir, name,
					res.valid_end, strerror(errno));
				rc = WISP_EIO;
				goto out;
			}
			lc->st.truncated_bytes += res.tail_bytes;
		}
		log_msg(LOG_WARNING, "store", "%s/%s: torn or corrupt tail at offset %zu: %s %zu bytes", s->dir,
			name, res.valid_end, active ? "truncated" : "ignored", res.tail_bytes);
	}
	if (res.damaged > 0)
		log_msg(LOG_WARNING, "store", "%s/%s: skipped %zu damaged bytes in %zu places, kept %zu records",
			s->dir, name, res.damaged_bytes, res.damaged, res.records);
	if (active) {
		s->log_salt = res.salt;
		s->log_size = res.valid_end;
	} else if (kind == STORE_FILE_SNAP) {
		s->snap_size = size;
	}
out:
	lc->map = NULL;
	if (map != NULL)
		munmap(map, size);
	if (rc == 0 && active) {
		s->log_fd = fd;
		return 0;
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

struct gens {
	uint64_t *v;
	size_t n, cap;
};

static int gens_add(struct gens *g, uint64_t gen)
{
	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 8;
		uint64_t *v = wisp_realloc(g->v, cap * sizeof *v);
		if (v == NULL)
			return WISP_ENOMEM;
		g->v = v;
		g->cap = cap;
	}
	g->v[g->n++] = gen;
	return 0;
}

static int cmp_gen(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Newest snapshot generation (0: none) and the sorted log generations. */
static int list_dir(struct store *s, uint64_t *snap, struct gens *logs, char *err, size_t errlen)
{
	int fd = dup(s->dir_fd);
	DIR *d = fd == -1 ? NULL : fdopendir(fd);
	struct dirent *e;
	uint64_t g;
	int rc = 0;

	if (d == NULL) {
		if (fd != -1)
			close(fd);
		set_err(err, errlen, "cannot list %s: %s", s->dir, strerror(errno));
		return WISP_EIO;
	}
	*snap = 0;
	rewinddir(d);
	while (rc == 0 && (e = readdir(d)) != NULL) {
		if (store_parse_name(e->d_name, "snap", &g)) {
			if (g > *snap)
				*snap = g;
		} else if (store_parse_name(e->d_name, "log", &g)) {
			rc = gens_add(logs, g);
		} else {
			continue;
		}
		if (g > s->max_gen)
			s->max_gen = g;
	}
	closedir(d);
	if (rc != 0)
		set_err(err, errlen, "store: out of memory");
	if (logs->n > 1)
		qsort(logs->v, logs->n, sizeof *logs->v, cmp_gen);
	return rc;
}

static int fsync_dir(struct store *s, char *err, size_t errlen)
{
	if (fsync(s->dir_fd) == -1) {
		set_err(err, errlen, "cannot fsync %s: %s", s->dir, strerror(errno));
		return WISP_EIO;
	}
	return 0;
}

int store_load(struct store *s, const struct store_visitor *v, void *ctx,
	       struct store_load_stats *stats, char *err, size_t errlen)
{
	static const struct store_visitor none;
	struct load_ctx lc = {.s = s, .v = v ? v : &none, .vctx = ctx};
	struct gens logs = {0};
	char name[STORE_NAME_MAX];
	uint64_t snap = 0;
	int rc;

	if (s->loaded || s->log_fd != -1) {
		set_err(err, errlen, "store_load called twice");
		return WISP_EINVAL;
	}
	rc = list_dir(s, &snap, &logs, err, errlen);
	if (rc != 0)
		goto done;
	/* Garbage from finished or crashed compactions. */
	store_remove_older(s, snap);
	if (snap > 0) {
		store_name(name, "snap", snap, "");
		rc = load_file(&lc, name, STORE_FILE_SNAP, snap, false, err, errlen);
		if (rc != 0)
			goto done;
	}
	size_t first = 0;
	while (first < logs.n && logs.v[first] < snap)
		first++;
	for (size_t i = first; i < logs.n; i++) {
		bool active = i + 1 == logs.n;
		store_name(name, "log", logs.v[i], "");
		rc = load_file(&lc, name, STORE_FILE_LOG, logs.v[i], active, err, errlen);
		if (rc != 0)
			goto done;
		if (active)
			s->gen = logs.v[i];
	}
	if (s->log_fd == -1) {
		/* No log yet (fresh directory, or a compaction died between the
		 * rename and the new log): start one. */
		s->gen = snap > 0 ? snap : 1;
		store_name(name, "log", s->gen, "");
		rc = store_create_file(s, name, STORE_FILE_LOG, s->gen, &s->log_salt);
		if (rc < 0) {
			set_err(err, errlen, "cannot create %s/%s: %s", s->dir, name, strerror(-rc));
			rc = WISP_EIO;
			goto done;
		}
		s->log_fd = rc;
		s->log_size = STORE_FILE_HDR;
		if (s->gen > s->max_gen)
			s->max_gen = s->gen;
	}
	/* Start-up may block: make the new or repaired log's directory entry
	 * durable before anything in it is reported durable. */
	rc = fsync_dir(s, err, errlen);
	if (rc != 0)
		goto done;
	rc = sync_start(s->mode, s->dir_fd, s->log_fd, 0, &s->sync);
	if (rc != 0) {
		set_err(err, errlen, "cannot start the store's fsync thread");
		goto done;
	}
	s->loaded = true;
	s->stats.generation = s->gen;
	log_msg(LOG_INFO, "store",
		"loaded %s: %" PRIu64 " records, %" PRIu64 " bytes, generation %" PRIu64 ", fsync %s",
		s->dir, lc.st.records, lc.st.bytes, s->gen,
		s->mode == STORE_FSYNC_ALWAYS ? "always" : s->mode == STORE_FSYNC_EVERYSEC ? "everysec" : "no");
done:
	for (size_t i = 0; i < lc.nslots; i++) {
		if (lc.slots[i].id != 0)
			release(&lc, lc.slots[i].handle);
	}
	wisp_free(lc.slots);
	wisp_free(logs.v);
	if (rc != 0 && s->log_fd != -1) {
		close(s->log_fd);
		s->log_fd = -1;
	}
	if (stats)
		*stats = lc.st;
	return rc;
}
