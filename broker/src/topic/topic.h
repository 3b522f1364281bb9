/*
 * Topic names and topic filters: validation, splitting into levels, and the
 * reference matcher. Knows strings only, nothing of sessions.
 *
 * Rules enforced [MQTT-4.7]: names and filters are at least one byte
 * [MQTT-4.7.3-1]; names hold no wildcard [MQTT-4.7.3-2]; '+' fills a whole
 * level [MQTT-4.7.1-3]; '#' is alone in the last level [MQTT-4.7.1-2];
 * filters starting with a wildcard do not match names starting with '$'
 * [MQTT-4.7.2-1]. UTF-8 validity is the codec's job and is not re-checked.
 */
#ifndef WISP_TOPIC_H
#define WISP_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

/* One level of a topic: a view into the original string. */
struct topic_level {
	const char *ptr;
	size_t len;
};

/* Levels a topic may have unless configured otherwise; bounds stack arrays. */
#define TOPIC_MAX_LEVELS_DEFAULT 128
#define TOPIC_MAX_LEVELS_HARD 1024

bool topic_name_valid(const char *name, size_t len);
bool topic_filter_valid(const char *filter, size_t len);

/* Levels of a topic name or filter: one more than its '/' count. O(len),
 * never allocates: what limits.max_topic_levels is checked with before a
 * filter reaches the tree (where each level costs a node). */
size_t topic_level_count(const char *topic, size_t len);

/*
 * Splits `topic` at '/' into `out` (capacity `max`). Returns the number of
 * levels, or -1 when there are more than `max`. "a//b" has three levels, the
 * middle one empty; "/" has two empty levels.
 */
int topic_split(const char *topic, size_t len, struct topic_level *out, size_t max);

/*
 * topic_name_valid and topic_split in one pass, for a PUBLISH's topic name:
 * the number of levels; TOPIC_NAME_INVALID where topic_name_valid says
 * false (whatever the depth); TOPIC_NAME_TOO_DEEP when it has more than
 * `max` levels. Eight bytes at a time: the two wildcard scans and the
 * split's memchr per level cost more than the name on short topics.
 */
#define TOPIC_NAME_INVALID (-2)
#define TOPIC_NAME_TOO_DEEP (-1)
int topic_split_name(const char *name, size_t len, struct topic_level *out, size_t max);

/* True when a (valid) filter matches a (valid) name, by the rules above. The
 * slow reference the tree and the ACLs are tested against. */
bool topic_matches(const char *filter, size_t flen, const char *name, size_t nlen);

#endif
