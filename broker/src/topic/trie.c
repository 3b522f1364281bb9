/*
 * The level trie behind tree.c and retained.c; see trie.h for the shape,
 * invariants and costs. This file owns node allocation, the per-node child
 * tables, insertion (all or nothing), pruning and destruction. What a node
 * carries (subscriptions or a retained value) belongs to the owner, which
 * tells the trie through `in_use` whether a node is still needed.
 * Single threaded: loop thread only.
 */
#include "trie.h"

#include <string.h>

#include "alloc.h"
#include "hash.h"

#define LEVEL_MAX 65535u
/* The first table; a lone child needs none. */
#define TABLE_MIN_LOG2 2

/* The per-node cost stated in trie.h; keep it from creeping up. */
_Static_assert(offsetof(struct trie_node, level) <= 43, "a trie node header stays at 43 bytes");

static bool level_eq(const struct trie_node *n, const char *lvl, size_t len)
{
	return n->len == len && memcmp(n->level, lvl, len) == 0;
}

/* A child's home slot: its level hashed again (nodes cache no hash, 4
 * bytes each, issue 18), only when a table grows, shrinks or loses it. */
static size_t home_of(uint32_t seed, const struct trie_node *c, size_t mask)
{
	return hash_bytes(seed, c->level, c->len) & mask;
}

/* A node's block: never less than the struct, so every member access
 * stays in bounds. */
static size_t node_size(size_t len)
{
	size_t size = offsetof(struct trie_node, level) + len;
	return size < sizeof(struct trie_node) ? sizeof(struct trie_node) : size;
}

static struct trie_node *node_new(struct trie *t, const char *lvl, size_t len)
{
	struct trie_node *n = wisp_small_alloc(node_size(len));
	if (!n)
		return NULL;
	memset(n, 0, offsetof(struct trie_node, level));
	if (len)
		memcpy(n->level, lvl, len);
	n->len = (uint16_t)len;
	if (t->init)
		t->init(n);
	return n;
}

static size_t table_size(unsigned log2)
{
	return sizeof(struct trie_table) + ((size_t)1 << log2) * sizeof(struct trie_node *);
}

static void node_free(struct trie_node *n)
{
	if (n->cap_log2)
		wisp_table_free(n->kids.table, table_size(n->cap_log2));
	wisp_free(n->wild);
	wisp_small_free(n, node_size(n->len));
}

/* Places `c` in a table known to have a free slot and not to hold it. */
static void slots_put(uint32_t seed, struct trie_node **slots, size_t mask, struct trie_node *c)
{
	size_t i = home_of(seed, c, mask);
	while (slots[i])
		i = (i + 1) & mask;
	slots[i] = c;
}

/* Moves the literal children of `n` into a fresh table of 1 << log2 slots.
 * 0, or -1 when out of memory with `n` unchanged. */
static int table_rebuild(uint32_t seed, struct trie_node *n, unsigned log2)
{
	size_t cap = (size_t)1 << log2;
	struct trie_table *x = wisp_table_zalloc(table_size(log2));
	if (!x)
		return -1;
	x->count = (uint32_t)trie_nkids(n);
	size_t count;
	struct trie_node *const *old = trie_kids(n, &count);
	for (size_t i = 0; i < count; i++)
		if (old[i])
			slots_put(seed, x->slots, cap - 1, old[i]);
	if (n->cap_log2)
		wisp_table_free(n->kids.table, table_size(n->cap_log2));
	n->kids.table = x;
	n->cap_log2 = (uint8_t)log2;
	return 0;
}

struct trie_node *trie_child(const struct trie *t, const struct trie_node *n, const char *lvl, size_t len)
{
	if (n->cap_log2 == 0) {
		/* A lone child (most nodes): comparing costs less than hashing. */
		const struct trie_node *c = n->kids.one;
		return c && level_eq(c, lvl, len) ? n->kids.one : NULL;
	}
	uint32_t hv = hash_bytes(t->seed, lvl, len);
	size_t mask = ((size_t)1 << n->cap_log2) - 1;
	struct trie_node *const *slots = n->kids.table->slots;
	/* The table is never full, so the probe meets a free slot. */
	for (size_t i = hv & mask; slots[i]; i = (i + 1) & mask)
		if (level_eq(slots[i], lvl, len))
			return slots[i];
	return NULL;
}

/* Adds the literal child `c` (not yet present). 0, or -1 when out of memory
 * with `n` unchanged. */
static int child_add(uint32_t seed, struct trie_node *n, struct trie_node *c)
{
	if (n->cap_log2 == 0 && !n->kids.one) {
		n->kids.one = c;
	} else {
		size_t cap = n->cap_log2 ? (size_t)1 << n->cap_log2 : 0;
		size_t nkids = trie_nkids(n);
		/* Keep the load at most 3/4 so probes stay short. */
		if ((nkids + 1) * 4 > cap * 3) {
			unsigned log2 = n->cap_log2 ? n->cap_log2 + 1u : TABLE_MIN_LOG2;
			if (log2 > 31 || table_rebuild(seed, n, log2) < 0)
				return -1;
		}
		slots_put(seed, n->kids.table->slots, ((size_t)1 << n->cap_log2) - 1, c);
		n->kids.table->count++;
	}
	c->parent = n;
	return 0;
}

/* Backward-shift deletion: no tombstones, so probes never lengthen with churn. */
static void slots_remove(uint32_t seed, struct trie_node **slots, size_t mask, const struct trie_node *c)
{
	size_t i = home_of(seed, c, mask);
	while (slots[i] != c)
		i = (i + 1) & mask;
	for (;;) {
		slots[i] = NULL;
		size_t j = i;
		for (;;) {
			j = (j + 1) & mask;
			if (!slots[j])
				return;
			size_t home = home_of(seed, slots[j], mask);
			/* An entry whose home lies cyclically in (i, j] stays put. */
			bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
			if (!stays)
				break;
		}
		slots[i] = slots[j];
		i = j;
	}
}

static void child_remove(uint32_t seed, struct trie_node *n, struct trie_node *c)
{
	if (n->cap_log2 == 0) {
		n->kids.one = NULL;
		return;
	}
	size_t cap = (size_t)1 << n->cap_log2;
	struct trie_table *x = n->kids.table;
	slots_remove(seed, x->slots, cap - 1, c);
	x->count--;
	if (x->count == 1) {
		struct trie_node *last = NULL;
		for (size_t i = 0; i < cap && !last; i++)
			last = x->slots[i];
		wisp_table_free(x, table_size(n->cap_log2));
		n->kids.one = last;
		n->cap_log2 = 0;
	} else if ((size_t)x->count * 8 < cap && n->cap_log2 > TABLE_MIN_LOG2) {
		/* Give memory back after mass unsubscription, down to half
		 * full; if that allocation fails the big table simply stays. */
		unsigned log2 = TABLE_MIN_LOG2;
		while (((size_t)1 << log2) < (size_t)x->count * 2)
			log2++;
		(void)table_rebuild(seed, n, log2);
	}
}

static void detach(uint32_t seed, struct trie_node *p, struct trie_node *n)
{
	struct trie_wild *w = p->wild;
	if (w && (w->plus == n || w->hash == n)) {
		if (w->plus == n)
			w->plus = NULL;
		else
			w->hash = NULL;
		if (!w->plus && !w->hash) {
			wisp_free(w);
			p->wild = NULL;
		}
	} else {
		child_remove(seed, p, n);
	}
}

static bool is_bare(const struct trie *t, const struct trie_node *n)
{
	return trie_nkids(n) == 0 && !n->wild && !t->in_use(n);
}

void trie_prune(struct trie *t, struct trie_node *n)
{
	while (!trie_is_root(n) && is_bare(t, n)) {
		struct trie_node *p = n->parent;
		detach(t->seed, p, n);
		node_free(n);
		t->nodes--;
		n = p;
	}
}

int trie_init(struct trie *t, trie_in_use_fn in_use, trie_init_fn init)
{
	static uint32_t runs;
	memset(t, 0, sizeof *t);
	t->in_use = in_use;
	t->init = init;
	/* Varies with ASLR and per trie; see core/hash.h. */
	t->seed = hash_mix32((uint32_t)(uintptr_t)t ^ (uint32_t)((uintptr_t)&runs >> 4) ^ ++runs);
	t->root = node_new(t, "", 0);
	t->dollar = node_new(t, "", 0);
	if (!t->root || !t->dollar) {
		if (t->root)
			node_free(t->root);
		if (t->dollar)
			node_free(t->dollar);
		return -1;
	}
	return 0;
}

/* Unlinks and returns some child of `n`, or NULL. Only for destruction:
 * the table is left inconsistent and its `cursor` (0 since the table was
 * built) is the scan's, so that emptying a node with a large table stays
 * linear. */
static struct trie_node *take_child(struct trie_node *n)
{
	struct trie_node *c = NULL;
	if (n->cap_log2 == 0) {
		c = n->kids.one;
		n->kids.one = NULL;
	} else {
		size_t cap = (size_t)1 << n->cap_log2;
		struct trie_table *x = n->kids.table;
		while (!c && x->cursor < cap)
			c = x->slots[x->cursor++];
	}
	if (!c && n->wild && n->wild->plus) {
		c = n->wild->plus;
		n->wild->plus = NULL;
	}
	if (!c && n->wild && n->wild->hash) {
		c = n->wild->hash;
		n->wild->hash = NULL;
	}
	return c;
}

/* Post-order walk over parent pointers rather than recursion, since a
 * filter may be thousands of levels deep. */
static void destroy_from(struct trie *t, struct trie_node *top, trie_release_fn release, void *ctx)
{
	struct trie_node *n = top;
	for (;;) {
		struct trie_node *c = take_child(n);
		if (c) {
			n = c;
			continue;
		}
		struct trie_node *p = n->parent;
		bool last = n == top;
		if (!trie_is_root(n)) {
			if (release)
				release(n, ctx);
			t->nodes--;
		}
		node_free(n);
		if (last)
			return;
		n = p;
	}
}

void trie_destroy(struct trie *t, trie_release_fn release, void *ctx)
{
	destroy_from(t, t->root, release, ctx);
	destroy_from(t, t->dollar, release, ctx);
	t->root = t->dollar = NULL;
}

/* The node for the level (lvl, len) among the children of `n`, or NULL. */
static struct trie_node *child_of(const struct trie *t, const struct trie_node *n, const char *lvl, size_t len,
				  bool wildcards)
{
	if (wildcards && len == 1 && (lvl[0] == '+' || lvl[0] == '#'))
		return !n->wild ? NULL : lvl[0] == '+' ? n->wild->plus : n->wild->hash;
	return trie_child(t, n, lvl, len);
}

/* Links `c` below `n` as its '+', '#' or literal child. A literal child
 * may need memory (a bigger table), a wildcard one its pair (the first of
 * `n`'s): 0, or -1 with nothing changed. */
static int link_child(uint32_t seed, struct trie_node *n, struct trie_node *c, bool wildcards)
{
	if (wildcards && c->len == 1 && (c->level[0] == '+' || c->level[0] == '#')) {
		if (!n->wild && !(n->wild = wisp_calloc(1, sizeof *n->wild)))
			return -1;
		if (c->level[0] == '+')
			n->wild->plus = c;
		else
			n->wild->hash = c;
	} else if (child_add(seed, n, c) < 0) {
		return -1;
	}
	c->parent = n;
	return 0;
}

/* Frees a chain built by insert_rest() that was never linked in. */
static void chain_free(struct trie_node *c)
{
	while (c) {
		struct trie_node *next = c->kids.one ? c->kids.one
				       : !c->wild ? NULL
				       : c->wild->plus ? c->wild->plus : c->wild->hash;
		node_free(c);
		c = next;
	}
}

/*
 * Creates the missing levels [p, end) below `n` as a detached chain first
 * and links the chain in last, so the only step that can fail after the
 * chain exists is growing the table of `n`, and every failure leaves the
 * trie exactly as it was (to the byte: no table grown for nothing).
 */
static struct trie_node *insert_rest(struct trie *t, struct trie_node *n, const char *p, const char *end,
				     bool wildcards)
{
	struct trie_node *head = NULL, *tail = NULL;
	size_t added = 0;
	for (;;) {
		const char *slash = p < end ? memchr(p, '/', (size_t)(end - p)) : NULL;
		size_t len = (size_t)((slash ? slash : end) - p);
		struct trie_node *c = node_new(t, p, len);
		if (!c)
			goto fail;
		added++;
		if (!tail) {
			head = c;
		} else if (link_child(t->seed, tail, c, wildcards) < 0) {
			/* A wildcard's pair (a literal child of an empty node
			 * needs no memory). */
			node_free(c);
			goto fail;
		}
		tail = c;
		if (!slash)
			break;
		p = slash + 1;
	}
	if (link_child(t->seed, n, head, wildcards) < 0)
		goto fail;
	t->nodes += added;
	return tail;
fail:
	chain_free(head);
	return NULL;
}

static struct trie_node *walk(struct trie *t, const char *s, size_t len, bool wildcards, bool create)
{
	if (len > LEVEL_MAX)
		return NULL;
	struct trie_node *n = trie_root_for(t, s, len);
	const char *p = s, *end = s + len;
	for (;;) {
		const char *slash = p < end ? memchr(p, '/', (size_t)(end - p)) : NULL;
		struct trie_node *c = child_of(t, n, p, (size_t)((slash ? slash : end) - p), wildcards);
		if (!c)
			return create ? insert_rest(t, n, p, end, wildcards) : NULL;
		n = c;
		if (!slash)
			return n;
		p = slash + 1;
	}
}

struct trie_node *trie_insert(struct trie *t, const char *s, size_t len, bool wildcards)
{
	return walk(t, s, len, wildcards, true);
}

struct trie_node *trie_find(const struct trie *t, const char *s, size_t len, bool wildcards)
{
	/* walk() only writes when creating. */
	return walk((struct trie *)t, s, len, wildcards, false);
}
