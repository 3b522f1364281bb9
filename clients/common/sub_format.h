/*
 * How wisp_sub prints a received message: the default payload line, -v,
 * -N, and the -F format language with every mosquitto_sub 2.0 specifier
 * (% fields, @ strftime fields, \ escapes, %j/%J JSON with --pretty), byte
 * for byte as mosquitto_sub prints them, quirks included (a field width
 * truncates %p/%x payloads; an invalid %J payload drops the field and
 * reports on stderr; %E is signed; %j's topic-alias shows the length of
 * the correlation data before it). v5 properties come from the message's
 * decoded property block (%P %C %D %E %F %R %S %A, %j's "properties").
 *
 * Pure: writes to the given streams; the wall-clock time is passed in so
 * tests are deterministic. Uses cJSON for %j/%J, as mosquitto does, so the
 * JSON text (escapes, number format, --pretty layout) is the same.
 */
#ifndef WISP_CLIENTS_SUB_FORMAT_H
#define WISP_CLIENTS_SUB_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include "codec.h"

struct sub_format_opts {
	const char *format; /* -F, or NULL */
	bool eol;           /* false with -N */
	bool verbose;       /* -v */
	bool pretty;        /* --pretty */
	bool quiet;         /* no error text on `err` */
};

struct sub_msg {
	const char *topic;      /* NUL-terminated */
	const char *payload;    /* NUL-terminated copy, or NULL when len == 0 */
	size_t len;
	int qos;
	bool retain;
	int mid;
	const struct mqtt_props *props; /* v5 properties, or NULL */
};

/* Prints one message. `now` is CLOCK_REALTIME at receipt. */
void sub_format_print(FILE *out, FILE *err, const struct sub_format_opts *o, const struct sub_msg *m,
		      const struct timespec *now);

#endif
