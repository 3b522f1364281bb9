/*
 * Opening and locking the data directory, appending records, flushing them
 * once per loop turn, durability reporting and closing. Loading is in
 * load.c, compaction in compact.c, fsync in sync.c. Loop thread only.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "log.h"
#include "store_int.h"

/* A buffer that grew past this for one huge message is given back after the
 * flush, so one 256 MiB publish does not pin 256 MiB. */
#define STORE_BUF_KEEP (4u << 20)
#define STORE_BUF_MIN (64u << 10)

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

int store_fsync_parse(const char *name, enum store_fsync *out)
{
	static const char *const names[] = {"no", "everysec", "always"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		if (strcmp(name, names[i]) == 0) {
			*out = (enum store_fsync)i;
			return 0;
		}
	}
	return WISP_EINVAL;
}

void store_name(char out[STORE_NAME_MAX], const char *prefix, uint64_t gen, const char *suffix)
{
	snprintf(out, STORE_NAME_MAX, "%s.%016" PRIx64 "%s", prefix, gen, suffix);
}

bool store_parse_name(const char *name, const char *prefix, uint64_t *gen)
{
	size_t plen = strlen(prefix);
	uint64_t g = 0;
	if (strncmp(name, prefix, plen) != 0 || name[plen] != '.' || strlen(name) != plen + 17)
		return false;
	for (const char *p = name + plen + 1; *p; p++) {
		int d;
		if (*p >= '0' && *p <= '9')
			d = *p - '0';
		else if (*p >= 'a' && *p <= 'f')
			d = *p - 'a' + 10;
		else
			return false;
		g = g << 4 | (uint64_t)d;
	}
	*gen = g;
	return true;
}

int store_write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

uint32_t store_random_salt(void)
{
	uint32_t v;
	if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v)
		return v;
	/* Early boot without entropy: the salt only guards resync against
	 * smuggled frames, so a weaker value is acceptable. */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec ^ ((uint32_t)getpid() << 16);
}

int store_create_file(struct store *s, const char *name, enum store_file_kind kind, uint64_t gen,
		      uint32_t *salt)
{
	uint8_t hdr[STORE_FILE_HDR];
	int fd = openat(s->dir_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (fd == -1)
		return -errno;
	*salt = store_random_salt();
	store_file_header_encode(kind, gen, *salt, hdr);
	int rc = store_write_all(fd, hdr, sizeof hdr);
	if (rc != 0) {
		close(fd);
		unlinkat(s->dir_fd, name, 0);
		return rc;
	}
	return fd;
}

void store_remove_older(struct store *s, uint64_t gen)
{
	int fd = dup(s->dir_fd);
	DIR *d = fd == -1 ? NULL : fdopendir(fd);
	struct dirent *e;
	uint64_t g;

	if (d == NULL) {
		if (fd != -1)
			close(fd);
		return;
	}
	rewinddir(d);
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		bool tmp = n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0 &&
			   strncmp(e->d_name, "snap.", 5) == 0;
		bool old = (store_parse_name(e->d_name, "log", &g) ||
			    store_parse_name(e->d_name, "snap", &g)) && g < gen;
		if (tmp || old) {
			if (unlinkat(s->dir_fd, e->d_name, 0) == 0)
				log_msg(LOG_DEBUG, "store", "removed %s/%s", s->dir, e->d_name);
			else
				log_msg(LOG_WARNING, "store", "cannot remove %s/%s: %s", s->dir, e->d_name,
					strerror(errno));
		}
	}
	closedir(d);
}

static int mkdir_p(const char *dir)
{
	char path[4096];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof path)
		return -ENAMETOOLONG;
	memcpy(path, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		char c = path[i];
		path[i] = '\0';
		if (mkdir(path, 0700) == -1 && errno != EEXIST)
			return -errno;
		path[i] = c;
	}
	return 0;
}

int store_open(const struct store_options *opt, struct store **out, char *err, size_t errlen)
{
	struct store *s;
	int rc;

	if (opt == NULL || opt->dir == NULL || opt->fsync > STORE_FSYNC_ALWAYS) {
		set_err(err, errlen, "store: invalid options");
		return WISP_EINVAL;
	}
	s = wisp_calloc(1, sizeof *s);
	if (s == NULL)
		goto fail_nomem;
	s->dir_fd = s->lock_fd = s->log_fd = s->snap_fd = -1;
	s->mode = opt->fsync;
	s->ratio = opt->compact_ratio ? opt->compact_ratio : STORE_DEFAULT_COMPACT_RATIO;
	s->min_bytes = opt->compact_min_bytes ? opt->compact_min_bytes : STORE_DEFAULT_COMPACT_MIN;
	s->next_msg_id = 1;
	s->dir = wisp_strndup(opt->dir, strlen(opt->dir));
	if (s->dir == NULL)
		goto fail_nomem;
	rc = mkdir_p(opt->dir);
	if (rc != 0) {
		set_err(err, errlen, "cannot create data directory %s: %s", opt->dir, strerror(-rc));
		rc = WISP_EIO;
		goto fail;
	}
	s->dir_fd = open(opt->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd == -1) {
		set_err(err, errlen, "cannot open data directory %s: %s", opt->dir, strerror(errno));
		rc = WISP_EIO;
		goto fail;
	}
	s->lock_fd = openat(s->dir_fd, STORE_LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lock_fd == -1) {
		set_err(err, errlen, "cannot open %s/%s: %s", opt->dir, STORE_LOCK_NAME, strerror(errno));
		rc = WISP_EIO;
		goto fail;
	}
	while ((rc = flock(s->lock_fd, LOCK_EX | LOCK_NB)) == -1 && errno == EINTR)
		;
	if (rc == -1) {
		if (errno == EWOULDBLOCK) {
			set_err(err, errlen, "data directory %s is in use by another process (lock on %s/%s)",
				opt->dir, opt->dir, STORE_LOCK_NAME);
			rc = WISP_EEXIST;
		} else {
			set_err(err, errlen, "cannot lock %s/%s: %s", opt->dir, STORE_LOCK_NAME,
				strerror(errno));
			rc = WISP_EIO;
		}
		goto fail;
	}
	/* The pid helps whoever finds the directory busy; best effort. */
	if (ftruncate(s->lock_fd, 0) == 0)
		dprintf(s->lock_fd, "%ld\n", (long)getpid());
	*out = s;
	return 0;

fail_nomem:
	set_err(err, errlen, "store: out of memory");
	rc = WISP_ENOMEM;
fail:
	if (s) {
		if (s->lock_fd != -1)
			close(s->lock_fd);
		if (s->dir_fd != -1)
			close(s->dir_fd);
		wisp_free(s->dir);
		wisp_free(s);
	}
	return rc;
}

uint64_t store_next_msg_id(struct store *s) { return s->next_msg_id++; }

static int buf_reserve(struct store *s, size_t need)
{
	if (s->cap - s->len >= need)
		return 0;
	size_t cap = s->cap ? s->cap : STORE_BUF_MIN;
	while (cap - s->len < need) {
		if (cap > SIZE_MAX / 2)
			return WISP_ENOMEM;
		cap *= 2;
	}
	uint8_t *p = wisp_realloc(s->buf, cap);
	if (p == NULL)
		return WISP_ENOMEM;
	s->buf = p;
	s->cap = cap;
	return 0;
}

static void buf_trim(struct store *s)
{
	if (s->len == 0 && s->cap > STORE_BUF_KEEP) {
		wisp_free(s->buf);
		s->buf = NULL;
		s->cap = 0;
	}
}

int store_append(struct store *s, const struct store_rec *r)
{
	if (!s->loaded)
		return WISP_EINVAL;
	ssize_t n = store_rec_size(r);
	if (n < 0)
		return (int)n;
	int rc = buf_reserve(s, (size_t)n);
	if (rc != 0)
		return rc;
	n = store_rec_encode(r, s->compacting ? s->snap_salt : s->log_salt, s->buf + s->len,
			     s->cap - s->len);
	if (n < 0)
		return (int)n;
	s->len += (size_t)n;
	if (r->type == STORE_REC_MSG_PUT && r->u.msg.id >= s->next_msg_id)
		s->next_msg_id = r->u.msg.id + 1;
	if (!s->compacting) {
		s->seq++;
		return 0;
	}
	/* Snapshot records stream out in ~1 MiB writes. */
	if (s->len >= (1u << 20)) {
		if (s->snap_err == 0)
			s->snap_err = store_write_all(s->snap_fd, s->buf, s->len);
		s->snap_written += s->len;
		s->len = 0;
	}
	return 0;
}

static struct store_str str_of(const char *p, size_t len) { return (struct store_str){p, len}; }

int store_append_msg_put(struct store *s, const struct store_msg *m)
{
	struct store_rec r = {.type = STORE_REC_MSG_PUT, .u.msg = *m};
	return store_append(s, &r);
}

int store_append_msg_del(struct store *s, uint64_t msg_id)
{
	struct store_rec r = {.type = STORE_REC_MSG_DEL, .u.msg_id = msg_id};
	return store_append(s, &r);
}

int store_append_retain_set(struct store *s, const char *topic, size_t topic_len, uint64_t msg_id)
{
	struct store_rec r = {.type = STORE_REC_RETAIN_SET,
			      .u.retain = {.topic = str_of(topic, topic_len), .msg_id = msg_id}};
	return store_append(s, &r);
}

int store_append_retain_del(struct store *s, const char *topic, size_t topic_len)
{
	struct store_rec r = {.type = STORE_REC_RETAIN_DEL, .u.retain = {.topic = str_of(topic, topic_len)}};
	return store_append(s, &r);
}

int store_append_session_put(struct store *s, const struct store_session *ss)
{
	struct store_rec r = {.type = STORE_REC_SESSION_PUT, .u.session = *ss};
	return store_append(s, &r);
}

int store_append_session_del(struct store *s, const char *client, size_t client_len)
{
	struct store_rec r = {.type = STORE_REC_SESSION_DEL,
			      .u.session = {.client = str_of(client, client_len)}};
	return store_append(s, &r);
}

int store_append_sub_add(struct store *s, const struct store_sub *sub)
{
	struct store_rec r = {.type = STORE_REC_SUB_ADD, .u.sub = *sub};
	return store_append(s, &r);
}

int store_append_sub_del(struct store *s, const char *client, size_t client_len,
			 const char *filter, size_t filter_len)
{
	struct store_rec r = {.type = STORE_REC_SUB_DEL,
			      .u.sub = {.client = str_of(client, client_len),
					.filter = str_of(filter, filter_len)}};
	return store_append(s, &r);
}

int store_append_queue_add(struct store *s, const char *client, size_t client_len,
			   uint64_t msg_id, uint8_t qos, uint8_t flags)
{
	struct store_queue q = {.client = str_of(client, client_len), .msg_id = msg_id, .qos = qos, .flags = flags};
	return store_append_queue(s, &q);
}

int store_append_queue(struct store *s, const struct store_queue *q)
{
	struct store_rec r = {.type = STORE_REC_QUEUE_ADD, .u.queue = *q};
	return store_append(s, &r);
}

int store_append_queue_del(struct store *s, const char *client, size_t client_len,
			   uint64_t msg_id)
{
	struct store_rec r = {.type = STORE_REC_QUEUE_DEL,
			      .u.queue = {.client = str_of(client, client_len), .msg_id = msg_id}};
	return store_append(s, &r);
}

int store_append_flight_set(struct store *s, const struct store_flight *f)
{
	struct store_rec r = {.type = STORE_REC_FLIGHT_SET, .u.flight = *f};
	return store_append(s, &r);
}

int store_append_flight_del(struct store *s, const char *client, size_t client_len,
			    uint16_t packet_id)
{
	struct store_rec r = {.type = STORE_REC_FLIGHT_DEL,
			      .u.flight = {.client = str_of(client, client_len), .packet_id = packet_id}};
	return store_append(s, &r);
}

int store_append_qos2_in_add(struct store *s, const char *client, size_t client_len,
			     uint16_t packet_id)
{
	struct store_rec r = {.type = STORE_REC_QOS2_IN_ADD,
			      .u.qos2 = {.client = str_of(client, client_len), .packet_id = packet_id}};
	return store_append(s, &r);
}

int store_append_qos2_in_del(struct store *s, const char *client, size_t client_len,
			     uint16_t packet_id)
{
	struct store_rec r = {.type = STORE_REC_QOS2_IN_DEL,
			      .u.qos2 = {.client = str_of(client, client_len), .packet_id = packet_id}};
	return store_append(s, &r);
}

int store_append_will_set(struct store *s, const struct store_will *w)
{
	struct store_rec r = {.type = STORE_REC_WILL_SET, .u.will = *w};
	return store_append(s, &r);
}

int store_append_will_del(struct store *s, const char *client, size_t client_len)
{
	struct store_rec r = {.type = STORE_REC_WILL_DEL, .u.will = {.client = str_of(client, client_len)}};
	return store_append(s, &r);
}

uint64_t store_seq(const struct store *s) { return s->seq; }

/* One error line per episode: a full disk must not fill the log too. */
static int flush_failed(struct store *s, int rc)
{
	s->stats.write_errors++;
	s->last_errno = -rc;
	if (!s->write_failing)
		log_msg(LOG_ERROR, "store", "write to %s/log.%016" PRIx64 " failed: %s; the records stay buffered "
			"and are retried", s->dir, s->gen, strerror(-rc));
	s->write_failing = true;
	return WISP_EIO;
}

int store_flush(struct store *s)
{
	if (!s->loaded || s->compacting)
		return WISP_EINVAL;
	if (s->len == 0)
		return 0;
	/* O_APPEND: a partial record left by a failed write must go before
	 * anything else is appended, or the next frames would follow garbage. */
	if (s->need_truncate && ftruncate(s->log_fd, (off_t)s->log_size) == -1)
		return flush_failed(s, -errno);
	s->need_truncate = false;
	int rc = store_write_all(s->log_fd, s->buf, s->len);
	if (rc != 0) {
		/* The records stay buffered (seq unchanged) for the next call. */
		if (ftruncate(s->log_fd, (off_t)s->log_size) == -1)
			s->need_truncate = true;
		return flush_failed(s, rc);
	}
	if (s->write_failing)
		log_msg(LOG_NOTICE, "store", "the log in %s is writable again (%" PRIu64 " failed attempts in all)",
			s->dir, s->stats.write_errors);
	s->write_failing = false;
	s->log_size += s->len;
	s->len = 0;
	s->written_seq = s->seq;
	s->stats.flushes++;
	buf_trim(s);
	sync_written(s->sync, s->seq);
	return 0;
}

int store_durable_fd(const struct store *s) { return s->sync ? sync_event_fd(s->sync) : -1; }

uint64_t store_durable_seq(struct store *s)
{
	struct sync_report rep;
	if (s->sync == NULL)
		return 0;
	sync_collect(s->sync, &rep);
	if (rep.fsync_errors > s->stats.fsync_errors)
		s->last_errno = -rep.sync_err;
	s->stats.fsync_errors = rep.fsync_errors;
	if (rep.tainted && !s->tainted)
		log_msg(LOG_ERROR, "store",
			"fsync in %s failed: %s; the log is no longer trusted and will be rewritten by a compaction",
			s->dir, strerror(-rep.sync_err));
	if (rep.switch_done)
		store_finish_compaction(s, rep.switch_err);
	if (!rep.tainted && s->tainted)
		log_msg(LOG_NOTICE, "store", "%s: the state was rewritten and synced; durability is back", s->dir);
	s->tainted = rep.tainted;
	return sync_durable(s->sync);
}

int store_error(const struct store *s) { return s->write_failing || s->tainted ? WISP_EIO : 0; }
bool store_write_failing(const struct store *s) { return s->write_failing; }
bool store_needs_rewrite(const struct store *s) { return s->tainted; }
uint64_t store_written_seq(const struct store *s) { return s->written_seq; }
int store_last_errno(const struct store *s) { return s->last_errno; }
enum store_fsync store_fsync_mode(const struct store *s) { return s->mode; }

bool store_compact_due(const struct store *s)
{
	if (!s->loaded || s->finishing)
		return false;
	if (s->tainted)
		return true;
	uint64_t data = s->log_size + s->len;
	return data >= s->min_bytes && data / s->ratio >= s->snap_size;
}

void store_get_stats(const struct store *s, struct store_stats *out)
{
	*out = s->stats;
	out->log_bytes = s->log_size;
	out->snap_bytes = s->snap_size;
	out->generation = s->gen;
}

void store_close(struct store *s)
{
	if (s == NULL)
		return;
	if (s->loaded)
		store_flush(s);
	/* Joining the helper runs its final fsync (except in mode "no") and
	 * lets a compaction in progress finish. */
	struct sync_report rep = {0};
	sync_stop(s->sync, &rep);
	s->sync = NULL;
	if (rep.switch_done)
		store_finish_compaction(s, rep.switch_err);
	if (s->log_fd != -1)
		close(s->log_fd);
	if (s->lock_fd != -1)
		close(s->lock_fd); /* releases the flock */
	if (s->dir_fd != -1)
		close(s->dir_fd);
	wisp_free(s->buf);
	wisp_free(s->dir);
	wisp_free(s);
}

int store_append_fwd_add(struct store *s, uint64_t msg_id, const char *id, size_t id_len)
{
	struct store_rec r = {.type = STORE_REC_FWD_ADD, .u.fwd = {.msg_id = msg_id, .id = str_of(id, id_len)}};
	return store_append(s, &r);
}

int store_append_fwd_del(struct store *s, uint64_t msg_id)
{
	struct store_rec r = {.type = STORE_REC_FWD_DEL, .u.fwd = {.msg_id = msg_id}};
	return store_append(s, &r);
}

int store_append_stream_taken(struct store *s, uint64_t floor, uint64_t seq, uint64_t stamp)
{
	struct store_rec r = {.type = STORE_REC_STREAM_TAKEN, .u.taken = {.floor = floor, .seq = seq, .stamp = stamp}};
	return store_append(s, &r);
}

int store_append_retain_unsent(struct store *s, const char *topic, size_t len, const char *id, size_t id_len)
{
	struct store_rec r = {.type = STORE_REC_RETAIN_UNSENT,
			      .u.mark = {.topic = str_of(topic, len), .id = str_of(id, id_len)}};
	return store_append(s, &r);
}

int store_append_retain_sent(struct store *s, const char *topic, size_t len)
{
	struct store_rec r = {.type = STORE_REC_RETAIN_SENT, .u.mark = {.topic = str_of(topic, len)}};
	return store_append(s, &r);
}
