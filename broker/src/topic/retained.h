/*
 * The retained-message store: at most one message per topic name.
 *
 * The same trie shape as the subscription tree, keyed by topic name, so a
 * subscription's filter walks only the branches it can match ('+' visits the
 * children of one node, '#' a subtree). Values are opaque references (the
 * broker's refcounted messages): the store takes the caller's reference on
 * set and gives it back through the release callback when the value is
 * replaced, deleted or the store is freed. '$' topics are only returned to
 * filters that start with '$' themselves [MQTT-4.7.2-1].
 *
 * Bounded: max_count messages and max_bytes of values (as reported by the
 * caller) at most; a set beyond either cap fails (RETAINED_OVER_COUNT or
 * RETAINED_OVER_BYTES) and leaves the store unchanged. A value stored with
 * bytes 0 is the caller's own (the broker's $SYS figures): it counts in
 * retained_count() but uses neither cap, so those values can never crowd
 * out clients' retained messages, nor be refused for them. Single threaded.
 */
#ifndef WISP_TOPIC_RETAINED_H
#define WISP_TOPIC_RETAINED_H

#include <stddef.h>

struct retained;

typedef void (*retained_release_fn)(void *value);
typedef void (*retained_visit_fn)(const char *topic, size_t len, void *value, void *ctx);

/* 0 for max_count or max_bytes means unlimited. NULL when out of memory. */
struct retained *retained_new(retained_release_fn release, size_t max_count, size_t max_bytes);
void retained_free(struct retained *r);

/*
 * Stores `value` (taking the caller's reference) under the valid topic name,
 * replacing and releasing any previous value. A NULL value deletes the topic
 * (MQTT's zero-length retained payload [MQTT-3.3.1-10]) and prunes nodes.
 * Returns 0, -1 (invalid name or out of memory), RETAINED_OVER_COUNT or
 * RETAINED_OVER_BYTES; on failure the value is not taken. bytes 0 exempts
 * the value from both caps (see above).
 */
enum { RETAINED_OVER_COUNT = -2, RETAINED_OVER_BYTES = -3 };
int retained_set(struct retained *r, const char *topic, size_t len, void *value, size_t bytes);

/* The value stored under `topic`, or NULL; the store keeps its reference. */
void *retained_get(const struct retained *r, const char *topic, size_t len);

/* Calls `fn` for every stored topic the valid filter matches. The store keeps
 * its references; `fn` takes its own if it keeps the value, and must not
 * change the store. */
size_t retained_match(const struct retained *r, const char *filter, size_t len,
		      retained_visit_fn fn, void *ctx);

/* Calls `fn` for every stored topic, '$' topics included: what a snapshot of
 * the store must see, where no filter (not even '#' [MQTT-4.7.2-1]) does. */
size_t retained_each(const struct retained *r, retained_visit_fn fn, void *ctx);

size_t retained_count(const struct retained *r);
size_t retained_bytes(const struct retained *r);

#endif
