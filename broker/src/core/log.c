/*
 * Logging: formats one event into one line and writes it with a single
 * write(2), so lines from several processes appending to one file never
 * interleave and a crash loses at most the line being written.
 *
 * Text:  2026-11-25T08:49:33.123Z NOTICE [conn] text
 * JSON:  {"ts":"2026-11-25T08:49:33.123Z","level":"notice","module":"conn","msg":"text"}
 *
 * Messages often carry client-supplied strings (client ids, user names,
 * topics), so control characters are escaped in both formats: a client id
 * holding "\n" cannot forge a log line. JSON output is always valid JSON:
 * invalid UTF-8 becomes U+FFFD. Lines are cut at LOG_LINE_MAX bytes.
 *
 * Rate limiting: log_limited() keeps one token bucket per reason (a
 * static string, compared by pointer, then by content), so one flooding
 * reason is summarised without hiding the others. Per-client episodes are
 * still the callers' business (log once per episode, see STYLE.md).
 *
 * Single-threaded: the loop thread only. Costs one clock_gettime, one
 * vsnprintf and one write per emitted line; a disabled level costs one
 * comparison, a suppressed line a bucket lookup and one monotonic clock read.
 */

/* syslog.h defines LOG_WARNING, LOG_NOTICE, LOG_INFO and LOG_DEBUG as
 * macros, which collide with our enum: capture its priorities first, then
 * drop the macros before including log.h. */
#include <syslog.h>
static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG};
static void syslog_open(void) { openlog("wisp", LOG_PID | LOG_NDELAY, LOG_DAEMON); }
#undef LOG_WARNING
#undef LOG_NOTICE
#undef LOG_INFO
#undef LOG_DEBUG

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

#define LOG_MSG_MAX 2048
#define LOG_LINE_MAX 4096

enum log_dest {
	DEST_STDERR,
	DEST_SYSLOG,
	DEST_FILE,
};

static enum log_level cur_level = LOG_NOTICE;
static enum log_format cur_format = LOG_FORMAT_TEXT;
static enum log_dest cur_dest = DEST_STDERR;
static int cur_fd = -1; /* DEST_FILE only */
static char cur_path[4096]; /* DEST_FILE only: what log_reopen opens again */

/* One per reason. Tokens are counted in thousandths of a line, so a refill
 * of `elapsed_ms * per_second` needs no division. */
struct log_bucket {
	const char *reason;     /* NULL: free slot */
	const char *module;     /* of the last suppressed line, for the summary */
	uint64_t tokens_milli;
	uint64_t refilled_ms;
	uint64_t suppressed;    /* not yet reported */
	uint64_t first_suppressed_ms;
	enum log_level level;   /* of the last suppressed line */
};

static struct log_bucket buckets[LOG_LIMIT_REASONS + 1]; /* the last one is shared */
static uint32_t rate_per_second = 10;
static uint32_t rate_burst = 100;
static uint64_t suppressed_total;
static size_t pending_buckets;
static uint64_t (*clock_fn)(void);

static const char *const level_names[] = {"error", "warning", "notice", "info", "debug"};
static const char *const level_upper[] = {"ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"};
_Static_assert(sizeof level_names / sizeof level_names[0] == LOG_DEBUG + 1, "one name per level");
_Static_assert(sizeof syslog_prio / sizeof syslog_prio[0] == LOG_DEBUG + 1, "one prio per level");

int log_level_parse(const char *name)
{
	for (int i = 0; i <= LOG_DEBUG; i++)
		if (strcmp(name, level_names[i]) == 0)
			return i;
	return -1;
}

const char *log_level_name(enum log_level level)
{
	if ((int)level < 0 || level > LOG_DEBUG)
		return "unknown";
	return level_names[level];
}

void log_set_level(enum log_level level)
{
	if ((int)level >= 0 && level <= LOG_DEBUG)
		cur_level = level;
}

void log_set_format(enum log_format format) { cur_format = format; }

bool log_enabled(enum log_level level) { return (int)level >= 0 && level <= cur_level; }

/* Reopening the same path is how SIGHUP follows logrotate: the new fd is
 * opened before the old one is closed, so a failure keeps logging alive. */
int log_set_destination(const char *dest)
{
	if (!dest || strcmp(dest, "stderr") == 0) {
		if (cur_fd != -1)
			close(cur_fd);
		if (cur_dest == DEST_SYSLOG)
			closelog();
		cur_fd = -1;
		cur_dest = DEST_STDERR;
		return 0;
	}
	if (strcmp(dest, "syslog") == 0) {
		if (cur_fd != -1)
			close(cur_fd);
		cur_fd = -1;
		if (cur_dest != DEST_SYSLOG)
			syslog_open();
		cur_dest = DEST_SYSLOG;
		return 0;
	}
	size_t len = strlen(dest);
	if (len >= sizeof cur_path)
		return WISP_EINVAL;
	int fd;
	do
		fd = open(dest, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	while (fd == -1 && errno == EINTR);
	if (fd == -1)
		return WISP_EIO;
	if (cur_fd != -1)
		close(cur_fd);
	if (cur_dest == DEST_SYSLOG)
		closelog();
	cur_fd = fd;
	cur_dest = DEST_FILE;
	if (dest != cur_path)
		memcpy(cur_path, dest, len + 1);
	return 0;
}

int log_reopen(void)
{
	return cur_dest == DEST_FILE ? log_set_destination(cur_path) : 0;
}

struct line {
	char buf[LOG_LINE_MAX];
	size_t len;
	size_t limit; /* bytes usable now; lowered to keep room for a tail */
	bool full;
};

static void put(struct line *l, const char *s, size_t n)
{
	/* All or nothing, so an escape or a UTF-8 sequence is never cut. */
	if (l->full || l->len + n > l->limit) {
		l->full = true;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void puts_raw(struct line *l, const char *s) { put(l, s, strlen(s)); }

/* Length of a valid UTF-8 sequence at s (at most n bytes), or 0. Overlongs,
 * surrogates and values past U+10FFFF are invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned cp;
	if (s[0] < 0xC2)
		return 0;
	if (s[0] < 0xE0) {
		len = 2;
		cp = s[0] & 0x1Fu;
	} else if (s[0] < 0xF0) {
		len = 3;
		cp = s[0] & 0x0Fu;
	} else if (s[0] < 0xF5) {
		len = 4;
		cp = s[0] & 0x07u;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0u) != 0x80u)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3Fu);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		return 0;
	return len;
}

/* Escapes for either format: JSON string escapes, or C-like escapes for
 * text (where quotes and non-ASCII pass through unchanged). */
static void put_escaped(struct line *l, const char *str, bool json)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str);
	char tmp[8];
	for (size_t i = 0; i < n && !l->full;) {
		unsigned char c = s[i];
		if (c == '\n') {
			puts_raw(l, "\\n");
		} else if (c == '\r') {
			puts_raw(l, "\\r");
		} else if (c == '\t') {
			puts_raw(l, "\\t");
		} else if (c == '\\') {
			puts_raw(l, "\\\\");
		} else if (json && c == '"') {
			puts_raw(l, "\\\"");
		} else if (c < 0x20 || c == 0x7F) {
			snprintf(tmp, sizeof tmp, json ? "\\u%04x" : "\\x%02x", c);
			puts_raw(l, tmp);
		} else if (c >= 0x80 && json) {
			size_t k = utf8_seq(s + i, n - i);
			if (k == 0) {
				puts_raw(l, "\\ufffd");
			} else {
				put(l, (const char *)s + i, k);
				i += k;
				continue;
			}
		} else {
			put(l, (const char *)s + i, 1);
		}
		i++;
	}
}

static void format_time(char *out, size_t outlen)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, outlen - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return; /* nowhere left to report a logging failure */
		}
		buf += n;
		len -= (size_t)n;
	}
}

__attribute__((format(printf, 3, 0))) static void log_vmsg(enum log_level level, const char *module,
							     const char *fmt, va_list ap)
{
	char msg[LOG_MSG_MAX];
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	if (n < 0)
		snprintf(msg, sizeof msg, "(unformattable message)");
	else if ((size_t)n >= sizeof msg)
		memcpy(msg + sizeof msg - 4, "...", 4);
	if (!module)
		module = "-";

	struct line l = {.len = 0, .limit = sizeof l.buf - 1, .full = false};
	char ts[40];
	bool json = cur_format == LOG_FORMAT_JSON;
	if (cur_dest != DEST_SYSLOG || json)
		format_time(ts, sizeof ts);
	if (json) {
		if (cur_dest != DEST_SYSLOG) {
			puts_raw(&l, "{\"ts\":\"");
			puts_raw(&l, ts);
			puts_raw(&l, "\",");
		} else {
			puts_raw(&l, "{");
		}
		puts_raw(&l, "\"level\":\"");
		puts_raw(&l, level_names[level]);
		/* A cut line must still be one valid object: keep room for the tail. */
		l.limit = sizeof l.buf - 1 - 16;
		puts_raw(&l, "\",\"module\":\"");
		put_escaped(&l, module, true);
		puts_raw(&l, "\",\"msg\":\"");
		put_escaped(&l, msg, true);
		l.limit = sizeof l.buf - 1;
		if (l.full) {
			/* Both tails fit in the reserve; the module/msg keys may be
			 * lost only if the module name alone is kilobytes long. */
			l.full = false;
			puts_raw(&l, "...");
		}
		puts_raw(&l, "\"}");
	} else {
		if (cur_dest != DEST_SYSLOG) {
			puts_raw(&l, ts);
			puts_raw(&l, " ");
			puts_raw(&l, level_upper[level]);
			puts_raw(&l, " ");
		}
		puts_raw(&l, "[");
		put_escaped(&l, module, false);
		puts_raw(&l, "] ");
		put_escaped(&l, msg, false);
	}
	if (cur_dest == DEST_SYSLOG) {
		l.buf[l.len] = '\0';
		syslog(syslog_prio[level], "%s", l.buf);
		return;
	}
	l.buf[l.len++] = '\n';
	write_all(cur_dest == DEST_FILE ? cur_fd : STDERR_FILENO, l.buf, l.len);
}

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, module, fmt, ap);
	va_end(ap);
}

static uint64_t now_ms(void)
{
	if (clock_fn)
		return clock_fn();
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void log_set_clock(uint64_t (*fn)(void)) { clock_fn = fn; }

void log_set_rate_limit(uint32_t per_second, uint32_t burst)
{
	rate_per_second = per_second;
	rate_burst = burst ? burst : 1;
	for (size_t i = 0; i < sizeof buckets / sizeof buckets[0]; i++)
		if (buckets[i].tokens_milli > (uint64_t)rate_burst * 1000u)
			buckets[i].tokens_milli = (uint64_t)rate_burst * 1000u;
}

bool log_limit_pending(void) { return pending_buckets > 0; }

uint64_t log_suppressed_total(void) { return suppressed_total; }

static struct log_bucket *find_bucket(const char *reason, uint64_t now)
{
	size_t n = LOG_LIMIT_REASONS;
	for (size_t i = 0; i < n; i++) {
		struct log_bucket *bk = &buckets[i];
		if (bk->reason == reason || (bk->reason && strcmp(bk->reason, reason) == 0))
			return bk;
		if (!bk->reason) {
			/* A new reason starts with a full bucket. */
			bk->reason = reason;
			bk->tokens_milli = (uint64_t)rate_burst * 1000u;
			bk->refilled_ms = now;
			return bk;
		}
	}
	struct log_bucket *shared = &buckets[n];
	if (!shared->reason) {
		shared->reason = "other reasons";
		shared->tokens_milli = (uint64_t)rate_burst * 1000u;
		shared->refilled_ms = now;
	}
	return shared;
}

static void refill(struct log_bucket *bk, uint64_t now)
{
	uint64_t cap = (uint64_t)rate_burst * 1000u;
	if (now > bk->refilled_ms) {
		/* Clamped so the product cannot overflow: 1e9 ms fills any bucket. */
		uint64_t elapsed = now - bk->refilled_ms;
		if (elapsed > 1000000000u)
			elapsed = 1000000000u;
		bk->tokens_milli += elapsed * rate_per_second;
		if (bk->tokens_milli > cap)
			bk->tokens_milli = cap;
		bk->refilled_ms = now;
	}
}

/* Writes the summary of a bucket that has a token for it. A summary written
 * just before a line rides on that line's token; alone, it spends one. */
static void report(struct log_bucket *bk, uint64_t now, bool spend)
{
	uint64_t secs = (now - bk->first_suppressed_ms + 999u) / 1000u;
	log_msg(bk->level, bk->module, "%llu similar messages suppressed in the last %llu s (%s)",
		(unsigned long long)bk->suppressed, (unsigned long long)(secs ? secs : 1), bk->reason);
	bk->suppressed = 0;
	if (spend)
		bk->tokens_milli -= 1000u;
	pending_buckets--;
}

void log_limited(const char *reason, enum log_level level, const char *module, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	va_list ap;
	if (rate_per_second == 0) {
		va_start(ap, fmt);
		log_vmsg(level, module, fmt, ap);
		va_end(ap);
		return;
	}
	uint64_t now = now_ms();
	struct log_bucket *bk = find_bucket(reason, now);
	refill(bk, now);
	if (bk->suppressed && bk->tokens_milli >= 1000u)
		report(bk, now, false);
	if (bk->tokens_milli < 1000u) {
		if (bk->suppressed++ == 0) {
			bk->first_suppressed_ms = now;
			pending_buckets++;
		}
		bk->level = level;
		bk->module = module ? module : "-";
		suppressed_total++;
		return;
	}
	bk->tokens_milli -= 1000u;
	va_start(ap, fmt);
	log_vmsg(level, module, fmt, ap);
	va_end(ap);
}

void log_limit_flush(void)
{
	if (!pending_buckets)
		return;
	uint64_t now = now_ms();
	for (size_t i = 0; i < sizeof buckets / sizeof buckets[0]; i++) {
		struct log_bucket *bk = &buckets[i];
		if (!bk->suppressed)
			continue;
		refill(bk, now);
		if (bk->tokens_milli >= 1000u)
			report(bk, now, true);
	}
}
