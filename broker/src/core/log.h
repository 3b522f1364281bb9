/*
 * Logging: one line per event, "2026-11-25T08:49:33.123Z LEVEL [module] text".
 * Destination and format come from configuration (stderr by default).
 * Never pass passwords; payloads only at debug. Single-threaded.
 */
#ifndef WISP_CORE_LOG_H
#define WISP_CORE_LOG_H

#include <stdbool.h>

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

#endif
