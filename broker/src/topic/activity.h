/*
 * Topic activity for the dashboard: for each recently published topic
 * name, its last payload (cut to a bound), how many messages it has seen
 * and their rate, in the same level trie as the retained store, so the
 * dashboard can list one level's children at a time.
 *
 * Bounded: at most `max_topics` topics. A new topic past the bound evicts
 * the least recently published one (an LRU list), so the table shows what
 * is flowing now; evictions are counted. Each topic keeps at most
 * `max_value` bytes of its last payload.
 *
 * Cost: nothing unless the broker serves a dashboard (the broker holds no
 * table then). With one, each routed message costs a trie walk (one hash
 * per level), an exp() for the rate, a copy of at most max_value bytes and
 * an allocation only when a topic is new or its value outgrows its slot.
 * Memory: a trie node per level (~64 B + the level) and an entry of
 * 64 B + the value per topic. Single threaded.
 */
#ifndef WISP_TOPIC_ACTIVITY_H
#define WISP_TOPIC_ACTIVITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct activity;

/* NULL when out of memory. */
struct activity *activity_new(size_t max_topics, size_t max_value);
void activity_free(struct activity *a);

/* Records one message on the valid topic name. 0, or -1 when out of memory
 * (the message is not recorded). */
int activity_note(struct activity *a, const char *topic, size_t len, const void *payload, size_t plen,
		  uint64_t now_ms);

/* One child of a listed level. Views valid until the next change. */
struct activity_item {
	const char *level;    /* this level's name (not NUL-terminated) */
	size_t level_len;
	bool has_children;
	bool has_value;       /* a message was published to exactly this topic */
	const char *value;    /* its last payload, at most max_value bytes */
	size_t value_len;
	size_t payload_len;   /* the whole payload's length */
	uint64_t count;       /* messages since the topic was first recorded */
	double rate;          /* messages per second, decaying over ~10 s */
	uint64_t age_ms;      /* since the last message */
};

typedef void (*activity_visit_fn)(const struct activity_item *it, void *ctx);

/*
 * Calls `fn` for the children of the level `prefix` (NULL for the top, whose
 * children include the '$' topics; "" is the empty first level of topics
 * such as "/a", a child of the top like any other), skipping the first `offset` and
 * visiting at most `limit`, so a request costs O(offset + limit) whatever
 * the number of topics. Returns how many children the level has in all
 * (0 when the prefix is not in the table).
 */
size_t activity_children(const struct activity *a, const char *prefix, size_t len, size_t offset, size_t limit,
			 uint64_t now_ms, activity_visit_fn fn, void *ctx);

size_t activity_count(const struct activity *a);
uint64_t activity_evicted(const struct activity *a);

#endif
