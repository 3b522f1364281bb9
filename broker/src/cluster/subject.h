/*
 * MQTT topic names and filters to NATS subjects and back: a pure module
 * (no I/O, no allocation), so the cluster router, its tests and the fuzzer
 * share it.
 *
 * Each MQTT level becomes one NATS token; the rules are nats-server's own
 * MQTT mapping (server/mqtt.go) wherever it has one, so a NATS-native
 * consumer finds MQTT data under the subject it expects:
 *
 *     MQTT                      NATS token / subject
 *     level separator '/'       '.'
 *     '.' inside a level        '//'
 *     empty level ("/a", "a/",  the token "/"  (so "/a" -> "/.a",
 *       "a//b")                   "a/" -> "a./", "a//b" -> "a./.b",
 *                                 as nats-server writes them)
 *     '+' (filter)              '*'
 *     '#' (filter)              '>'
 *
 * and a reversible escape, '%' plus two upper-case hex digits, for what
 * nats-server's mapping refuses or would misread (it rejects these topics):
 *
 *     ' ', '\t', '\r', '\n', other bytes < 0x20, 0x7f   %XX
 *     '%' itself                                          %25
 *     a level that is exactly "*" or ">"                  %2A, %3E
 *       (NATS reads a whole-token '*' or '>' as a wildcard; "a*b" stays)
 *
 * so every legal MQTT topic crosses the cluster and comes back unchanged
 * (subject_to_topic(topic_to_subject(t)) == t), and every subject this
 * module writes is a valid NATS literal subject. A topic containing '%'
 * therefore differs from nats-server's subject for it, the one place the
 * two mappings part.
 *
 * A filter's '#' also matches its parent level [MQTT-4.7.1-2] ("a/#"
 * matches "a"), which NATS's '>' does not: subject_filter says so in
 * `*parent_too`, and the caller subscribes to both subjects.
 *
 * `prefix` (may be empty) is put in front as its own tokens: "wisp" and
 * "a/b" give "wisp.a.b".
 */
#ifndef WISP_CLUSTER_SUBJECT_H
#define WISP_CLUSTER_SUBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The longest subject a topic of `len` bytes can need (every byte escaped
 * to 3), plus the prefix and its dot. */
#define SUBJECT_MAX(prefix_len, len) ((prefix_len) + 1 + 3 * (len) + 1)

/*
 * Writes the subject of the topic name `topic` (len bytes, a valid MQTT
 * topic name: no wildcards) into out[cap], NUL-terminated. Returns its
 * length, or WISP_EINVAL (a wildcard, or len 0), or WISP_ELIMIT (out too small).
 */
ssize_t subject_from_topic(const char *prefix, const char *topic, size_t len, char *out, size_t cap);

/*
 * The subject to subscribe to for the valid MQTT filter `filter`, as
 * above with '+' -> '*' and '#' -> '>'. *parent_too is set when the filter
 * ends in "/#": the subject without its last ".>" must be subscribed too.
 */
ssize_t subject_from_filter(const char *prefix, const char *filter, size_t len, char *out, size_t cap,
			    bool *parent_too);

/*
 * The MQTT topic name of `subject` (len bytes), which must start with the
 * prefix's tokens: the inverse of subject_from_topic. Returns the topic's
 * length (NUL-terminated in out), or WISP_EINVAL for a subject this
 * mapping never writes (another prefix, a wildcard token, a bad escape,
 * an odd run of '/'), or WISP_ELIMIT (out too small).
 */
ssize_t subject_to_topic(const char *prefix, const char *subject, size_t len, char *out, size_t cap);

#endif
