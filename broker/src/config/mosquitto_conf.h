/*
 * Mosquitto's configuration format, read as Mosquitto 2.0 means it and
 * translated into Wisp's JSON configuration, which then goes through the
 * same validator as a JSON file (config_parse). `wisp -c mosquitto.conf`
 * and `wisp --convert-mosquitto-conf` are therefore the same code.
 *
 * Every key Wisp cannot honour is refused as "<file>:<line>: <key>:
 * <reason>"; nothing is ignored. Errors the validator finds in the
 * translated JSON are reported at the line the value came from.
 */
#ifndef WISP_MOSQUITTO_CONF_H
#define WISP_MOSQUITTO_CONF_H

#include <stdbool.h>
#include <stddef.h>

struct config;

/*
 * True when `text` is not a JSON document: its first character other than
 * white space (after a UTF-8 byte order mark) is neither '{' nor '['.
 * Decided by content, not by file name, so /etc/mosquitto/mosquitto.conf
 * and a JSON file named *.conf both work.
 */
bool mosq_conf_detect(const char *text, size_t len);

/*
 * Translates the Mosquitto configuration `text` (read from `path`; files
 * named by include_dir are read from disk) into Wisp's JSON. On success
 * returns 0 and sets *json_out (NUL-terminated, caller frees with
 * wisp_free). On failure returns a negative WISP_E* and writes
 * "<file>:<line>: <key>: <reason>" into err. The JSON is not validated:
 * mosq_conf_parse does that.
 */
int mosq_conf_convert(const char *path, const char *text, size_t len, char **json_out, char *err,
		      size_t errlen);

/* Translates, then validates with config_parse; errors name the line. */
int mosq_conf_parse(const char *path, const char *text, size_t len, struct config **out, char *err,
		    size_t errlen);

#endif
