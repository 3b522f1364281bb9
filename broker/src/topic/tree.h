/*
 * The subscription tree: topic filters to subscribers.
 *
 * A trie of levels. Each node has its literal children in a hash table and
 * dedicated '+' and '#' children, so matching a topic costs O(levels x
 * matching branches), never a scan over unrelated filters. Filters whose
 * first level starts with '$' live under a separate root, so a root-level
 * '+' or '#' never matches '$' topics [MQTT-4.7.2-1].
 *
 * A leaf holds an intrusive list of subscriptions; each subscription is
 * returned to the caller as a handle so that removal is O(1) plus pruning
 * of nodes left empty. The tree stores an opaque subscriber pointer and a
 * byte of options (the SUBSCRIBE options byte: QoS and v5 flags) plus a v5
 * subscription identifier; it never looks inside them.
 *
 * Memory: nodes, level strings and handles come from wisp_malloc. Single
 * threaded: loop thread only.
 */
#ifndef WISP_TOPIC_TREE_H
#define WISP_TOPIC_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"

struct tree;
struct trie_node;

/* One (filter, subscriber) pair. Public so that an owner can embed it and
 * save an allocation per subscription (tree_attach); treat the fields as
 * the tree's. */
struct tree_sub {
	struct list_node link; /* in node->u.subs */
	struct trie_node *node;
	void *subscriber;
	uint32_t subscription_id;
	uint8_t options;
};

struct topic_level; /* topic.h */

struct tree *tree_new(void);
/* Frees every node and handle; subscribers are not touched. */
void tree_free(struct tree *t);

/*
 * Adds a subscription of `subscriber` to the valid filter `filter`. Returns
 * the handle, or NULL when out of memory (the tree is unchanged then).
 * The caller keeps one handle per (subscriber, filter) and updates it
 * rather than subscribing twice.
 */
struct tree_sub *tree_subscribe(struct tree *t, const char *filter, size_t len,
				void *subscriber, uint8_t options, uint32_t subscription_id);
/* Removes and frees the handle; prunes nodes left without children or subscriptions. */
void tree_unsubscribe(struct tree *t, struct tree_sub *sub);

/* The same for a handle the caller owns (embedded in its own struct):
 * tree_attach returns 0, or -1 when out of memory (tree unchanged);
 * tree_detach frees nothing of `sub`. */
int tree_attach(struct tree *t, const char *filter, size_t len, struct tree_sub *sub, void *subscriber,
		uint8_t options, uint32_t subscription_id);
void tree_detach(struct tree *t, struct tree_sub *sub);

/* The filter a handle is filed under, rebuilt from its leaf's path (no
 * copy is kept): writes it to `buf` when it fits `cap` bytes (no NUL) and
 * returns its length either way. */
size_t tree_sub_filter(const struct tree_sub *sub, char *buf, size_t cap);
/* Whether a handle is filed under exactly (filter, len); never allocates. */
bool tree_sub_filter_is(const struct tree_sub *sub, const char *filter, size_t len);
void tree_sub_set_options(struct tree_sub *sub, uint8_t options, uint32_t subscription_id);
uint8_t tree_sub_options(const struct tree_sub *sub);
uint32_t tree_sub_id(const struct tree_sub *sub);
void *tree_sub_subscriber(const struct tree_sub *sub);

/*
 * Called once per matching subscription. A subscriber with several matching
 * filters is reported once per filter; deduplication is the caller's.
 * The callback must not subscribe or unsubscribe.
 */
typedef void (*tree_match_fn)(void *subscriber, uint8_t options, uint32_t subscription_id, void *ctx);

/* Calls `fn` for every subscription whose filter matches the valid topic
 * name `topic`, already split into `nlevels` levels. Returns the number of calls. */
size_t tree_match(const struct tree *t, const struct topic_level *levels, size_t nlevels,
		  tree_match_fn fn, void *ctx);

/* Calls `fn` for every subscription filed under exactly the valid filter
 * `filter` (a NATS subscription's copy of a message is for one filter:
 * cluster.c); the caller knows the filter matches the topic. Returns the
 * number of calls. */
size_t tree_match_filter(const struct tree *t, const char *filter, size_t len, tree_match_fn fn, void *ctx);

/* Subscriptions in the tree. */
size_t tree_count(const struct tree *t);

#endif
