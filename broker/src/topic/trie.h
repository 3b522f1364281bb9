/*
 * Private to topic/: the level trie shared by the subscription tree
 * (tree.c, keyed by filters) and the retained store (retained.c, keyed by
 * names); one outside user, cluster/interest.c, keys it by the filters of
 * the other cluster nodes and keeps only a count per node. Not part of the
 * topic API; tests include it only to count nodes.
 *
 * Shape. One node per level, the level bytes stored inline after the node
 * (one allocation per node, no strdup). Literal children sit in an
 * open-addressed, linearly probed table of node pointers, power-of-two
 * sized, at most 3/4 full, grown by doubling and shrunk when mostly empty,
 * so a lookup costs O(1) whatever the number of siblings. A node with a
 * single literal child (the common chain "site/floor/room/sensor") keeps it
 * in place of the table and allocates nothing more. '+' and '#' children
 * of a filter have dedicated pointers, never a string lookup; the retained
 * store never sets them.
 *
 * Two roots: levels whose first byte is '$' hang under `dollar`, all others
 * under `root`, so a root-level '+' or '#' cannot reach '$' topics
 * [MQTT-4.7.2-1] and no per-match check is needed.
 *
 * Invariant: every node except the roots has a payload or a child (empty
 * nodes are pruned up to the root right after the change that emptied
 * them), so memory is proportional to what is stored.
 *
 * Cost: a node is 43 bytes plus its level, at least 48 (a small object,
 * core/alloc.h: no allocator header); a table adds 8 bytes per slot and
 * 8 for its count, wildcard children 16 bytes for the pair. Lookups in a lone
 * child compare bytes; tables hash the level once per lookup. Insertion allocates at most one node per new
 * level, one table per grown parent and one wildcard pair per level that
 * gets its first '+' or '#' child; failure at any point leaves the
 * trie as it was. Lookup and removal never allocate. Single threaded.
 */
#ifndef WISP_TOPIC_TRIE_H
#define WISP_TOPIC_TRIE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"

/* The wildcard children of a filter level, allocated apart while it has
 * one: most nodes (every retained one, every leaf) have none, and 8 bytes
 * less per node count for every leaf (issue 18). */
struct trie_wild {
	struct trie_node *plus; /* the '+' child, or NULL */
	struct trie_node *hash; /* the '#' child, or NULL */
};

/* The literal children of a node with two or more: their count and
 * 1 << cap_log2 slots (NULL = free). The count lives here, not in every
 * node (issue 18). */
struct trie_table {
	uint32_t count;
	uint32_t cursor; /* trie_destroy's scan */
	struct trie_node *slots[];
};

struct trie_node {
	struct trie_node *parent; /* NULL for a root */
	union {
		struct trie_node *one;    /* cap_log2 == 0: the only literal child, or NULL */
		struct trie_table *table; /* cap_log2 > 0 */
	} kids;
	struct trie_wild *wild; /* '+' and '#' children (subscription tree only); NULL: neither */
	union {
		struct list_node subs; /* tree: struct tree_sub.link of filters ending here */
		struct {
			void *value; /* retained: the stored reference, or NULL */
			size_t bytes;
		} ret;
		size_t count; /* cluster/interest.c: other nodes' filters ending here */
	} u;
	/* No cached hash of the level: a table rehashes its children's levels
	 * when it grows, shrinks or loses one, and compares lengths and bytes
	 * when probing; no child count: the table holds it. A leaf with a
	 * level of up to 5 bytes is 48 bytes (issue 18). */
	uint16_t len;   /* a level is at most 65535 bytes, as is a whole topic */
	uint8_t cap_log2;
	char level[]; /* not NUL-terminated */
};

/* The owner's view of its payload: whether a node must be kept for it, and
 * how to let go of it when the whole trie is freed. */
typedef bool (*trie_in_use_fn)(const struct trie_node *n);
typedef void (*trie_release_fn)(struct trie_node *n, void *ctx);
/* Sets up the payload of a node just allocated (zeroed otherwise). */
typedef void (*trie_init_fn)(struct trie_node *n);

struct trie {
	struct trie_node *root;
	struct trie_node *dollar;
	trie_in_use_fn in_use;
	trie_init_fn init; /* may be NULL */
	uint32_t seed;
	size_t nodes; /* excluding the two roots */
};

/* 0, or -1 when out of memory (nothing allocated then). */
int trie_init(struct trie *t, trie_in_use_fn in_use, trie_init_fn init);
/* Frees every node, calling `release` once per node that is not a root
 * before freeing it. Iterative: no recursion however deep the trie. */
void trie_destroy(struct trie *t, trie_release_fn release, void *ctx);

/* The root under which a topic or filter starting with `first` lives. */
static inline struct trie_node *trie_root_for(const struct trie *t, const char *s, size_t len)
{
	return len > 0 && s[0] == '$' ? t->dollar : t->root;
}

/* The literal child of `n` named (lvl, len), or NULL. Never allocates. */
struct trie_node *trie_child(const struct trie *t, const struct trie_node *n, const char *lvl, size_t len);

/*
 * Walks `s` (len bytes, '/'-separated) from its root, creating missing
 * nodes. With `wildcards`, "+" and "#" levels use the dedicated children.
 * Returns the last level's node, or NULL when out of memory (or `len` is
 * over 65535), in which case the trie is exactly as before.
 */
struct trie_node *trie_insert(struct trie *t, const char *s, size_t len, bool wildcards);

/* The node for `s` without creating anything, or NULL. */
struct trie_node *trie_find(const struct trie *t, const char *s, size_t len, bool wildcards);

/* After `n` lost its payload: frees it and its ancestors while they have
 * neither payload nor children, stopping at a root. */
void trie_prune(struct trie *t, struct trie_node *n);

/* The literal children of `n` as an array of `*count` slots, some NULL. */
static inline struct trie_node *const *trie_kids(const struct trie_node *n, size_t *count)
{
	if (n->cap_log2 == 0) {
		*count = n->kids.one ? 1 : 0;
		return &n->kids.one;
	}
	*count = (size_t)1 << n->cap_log2;
	return n->kids.table->slots;
}

/* How many literal children `n` has. */
static inline size_t trie_nkids(const struct trie_node *n)
{
	return n->cap_log2 ? n->kids.table->count : n->kids.one != NULL;
}

static inline bool trie_is_root(const struct trie_node *n) { return n->parent == NULL; }

/* Test hooks (non-root nodes in use) for the tree and the store. */
struct tree;
struct retained;
size_t tree_debug_nodes(const struct tree *t);
size_t retained_debug_nodes(const struct retained *r);

#endif
