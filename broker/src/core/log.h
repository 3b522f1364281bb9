/*
 * Logging: one line per event, "2026-11-25T08:49:33.123Z LEVEL [module] text".
 * Destination and format come from configuration (stderr by default).
 * Never pass passwords; payloads only at debug. Single-threaded.
 */
#ifndef WISP_CORE_LOG_H
#define WISP_CORE_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level {
	LOG_ERROR = 0,
	LOG_WARNING = 1,
	LOG_NOTICE = 2,
	LOG_INFO = 3,
	LOG_DEBUG = 4,
};

enum log_format {
	LOG_FORMAT_TEXT = 0,
	LOG_FORMAT_JSON = 1,
};

/* Parses "error".."debug"; -1 when unknown. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level level);

void log_set_level(enum log_level level);
/* "stderr" (default), "syslog", or a file path opened for append.
 * 0, or a negative WISP_E* with the old destination kept. */
int log_set_destination(const char *dest);
/* Opens the current log file again by its path, for logrotate (which
 * renames the file, then sends SIGHUP). No-op for stderr and syslog.
 * 0, or a negative WISP_E* with the old file kept. */
int log_reopen(void);
void log_set_format(enum log_format format);
/* Cheap check for callers that build expensive arguments. */
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Lines a client can cause at will (refused connections, failed logins,
 * malformed packets, failed TLS handshakes) go through log_limited, so that
 * a flood cannot fill the disk the log (and often the store) lives on.
 * Each `reason` has a token bucket: `burst` lines at once, then `per_second`
 * lines a second; lines over it are counted, not written, and the count
 * comes out later as one line "N similar messages suppressed (<reason>)"
 * at the level and module of the suppressed lines. `reason` must have
 * static storage (a string literal): buckets keep the pointer. At most
 * LOG_LIMIT_REASONS reasons get their own bucket; further ones share one.
 * A level that is filtered out is neither written nor counted.
 */
#define LOG_LIMIT_REASONS 48
void log_limited(const char *reason, enum log_level level, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* per_second 0 turns limiting off (every line is written). Resets nothing:
 * counts already suppressed are still reported. */
void log_set_rate_limit(uint32_t per_second, uint32_t burst);
/* True while some reason holds suppressed lines not yet reported: the
 * owner of the loop then calls log_limit_flush about once a second. */
bool log_limit_pending(void);
/* Reports the suppressed counts of every reason whose bucket has room. */
void log_limit_flush(void);
/* Lines suppressed since start, for $SYS. */
uint64_t log_suppressed_total(void);
/* Tests: the monotonic millisecond clock the buckets use (NULL: the real one). */
void log_set_clock(uint64_t (*now_ms)(void));

#endif
