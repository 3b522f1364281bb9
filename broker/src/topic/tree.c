/*
 * The subscription tree: a level trie (trie.h) keyed by topic filter, each
 * node holding the intrusive list of subscriptions whose filter ends there.
 *
 * Matching a publish walks the already split name once: at each node it
 * follows the literal child (one hash lookup), recurses into the '+' child,
 * and reports the '#' child's subscriptions, which match every remaining
 * level including none ("a/#" matches "a" [MQTT-4.7.1-2]). The cost is
 * O(levels x matching filter branches), independent of how many unrelated
 * filters exist, and matching never allocates. Recursion depth is at most
 * the number of levels of the name.
 *
 * '$' names start from the trie's separate '$' root, which holds only
 * filters that start with '$' themselves, so "#" and "+/..." cannot match
 * them [MQTT-4.7.2-1] while "$SYS/#" does.
 *
 * Memory per subscription: one 40-byte handle, plus the nodes its filter
 * adds (see trie.h). Unsubscribing is O(1) through the handle's node
 * back-pointer, plus pruning of the nodes it leaves empty.
 * Single threaded: loop thread only.
 */
#include "tree.h"

#include <string.h>

#include "alloc.h"
#include "list.h"
#include "topic.h"
#include "trie.h"

struct tree {
	struct trie trie;
	size_t count;
};



_Static_assert(sizeof(struct tree_sub) <= 40, "a subscription handle stays at 40 bytes");

static bool node_in_use(const struct trie_node *n)
{
	return !list_empty(&n->u.subs);
}

static void node_init(struct trie_node *n)
{
	list_init(&n->u.subs);
}

static void node_release(struct trie_node *n, void *ctx)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &n->u.subs)
		wisp_free(container_of(pos, struct tree_sub, link));
}

struct tree *tree_new(void)
{
	struct tree *t = wisp_calloc(1, sizeof *t);
	if (!t)
		return NULL;
	if (trie_init(&t->trie, node_in_use, node_init) < 0) {
		wisp_free(t);
		return NULL;
	}
	return t;
}

void tree_free(struct tree *t)
{
	if (!t)
		return;
	trie_destroy(&t->trie, node_release, NULL);
	wisp_free(t);
}

int tree_attach(struct tree *t, const char *filter, size_t len, struct tree_sub *sub, void *subscriber,
		uint8_t options, uint32_t subscription_id)
{
	/* [MQTT-4.7.3-1] no filter is empty; callers validate the rest. */
	if (len == 0)
		return -1;
	struct trie_node *n = trie_insert(&t->trie, filter, len, true);
	if (!n)
		return -1;
	sub->node = n;
	sub->subscriber = subscriber;
	sub->options = options;
	sub->subscription_id = subscription_id;
	list_push_back(&n->u.subs, &sub->link);
	t->count++;
	return 0;
}

void tree_detach(struct tree *t, struct tree_sub *sub)
{
	struct trie_node *n = sub->node;
	list_remove(&sub->link);
	t->count--;
	trie_prune(&t->trie, n);
}

struct tree_sub *tree_subscribe(struct tree *t, const char *filter, size_t len,
				void *subscriber, uint8_t options, uint32_t subscription_id)
{
	struct tree_sub *sub = wisp_malloc(sizeof *sub);
	if (sub && tree_attach(t, filter, len, sub, subscriber, options, subscription_id) != 0) {
		wisp_free(sub);
		sub = NULL;
	}
	return sub;
}

void tree_unsubscribe(struct tree *t, struct tree_sub *sub)
{
	tree_detach(t, sub);
	wisp_free(sub);
}

void tree_sub_set_options(struct tree_sub *sub, uint8_t options, uint32_t subscription_id)
{
	sub->options = options;
	sub->subscription_id = subscription_id;
}

size_t tree_sub_filter(const struct tree_sub *sub, char *buf, size_t cap)
{
	size_t len = 0;
	const struct trie_node *n;
	for (n = sub->node; !trie_is_root(n); n = n->parent)
		len += n->len + (trie_is_root(n->parent) ? 0u : 1u);
	if (len > cap)
		return len;
	size_t at = len;
	for (n = sub->node; !trie_is_root(n); n = n->parent) {
		at -= n->len;
		memcpy(buf + at, n->level, n->len);
		if (!trie_is_root(n->parent))
			buf[--at] = '/';
	}
	return len;
}

bool tree_sub_filter_is(const struct tree_sub *sub, const char *filter, size_t len)
{
	/* From the last level up, so a mismatch usually stops at the leaf. */
	size_t at = len;
	const struct trie_node *n;
	for (n = sub->node; !trie_is_root(n); n = n->parent) {
		if (n->len > at || memcmp(filter + at - n->len, n->level, n->len) != 0)
			return false;
		at -= n->len;
		if (trie_is_root(n->parent))
			break;
		if (at == 0 || filter[--at] != '/')
			return false;
	}
	return at == 0;
}

uint8_t tree_sub_options(const struct tree_sub *sub) { return sub->options; }
uint32_t tree_sub_id(const struct tree_sub *sub) { return sub->subscription_id; }
void *tree_sub_subscriber(const struct tree_sub *sub) { return sub->subscriber; }

static size_t emit(const struct trie_node *n, tree_match_fn fn, void *ctx)
{
	size_t calls = 0;
	for (const struct list_node *pos = n->u.subs.next; pos != &n->u.subs; pos = pos->next) {
		const struct tree_sub *sub = container_of(pos, const struct tree_sub, link);
		fn(sub->subscriber, sub->options, sub->subscription_id, ctx);
		calls++;
	}
	return calls;
}

/* Reports the subscriptions under `n` matching levels[i..nlevels). The
 * literal branch is followed in the loop, the '+' branch by recursion. */
static size_t match_from(const struct trie *t, const struct trie_node *n, const struct topic_level *levels,
			 size_t i, size_t nlevels, tree_match_fn fn, void *ctx)
{
	size_t calls = 0;
	for (;;) {
		const struct trie_wild *w = n->wild;
		if (w && w->hash)
			calls += emit(w->hash, fn, ctx);
		if (i == nlevels)
			return calls + emit(n, fn, ctx);
		/* '+' matches exactly one level, an empty one too [MQTT-4.7.1-3]. */
		if (w && w->plus)
			calls += match_from(t, w->plus, levels, i + 1, nlevels, fn, ctx);
		n = trie_child(t, n, levels[i].ptr, levels[i].len);
		if (!n)
			return calls;
		i++;
	}
}

size_t tree_match(const struct tree *t, const struct topic_level *levels, size_t nlevels,
		  tree_match_fn fn, void *ctx)
{
	if (nlevels == 0)
		return 0;
	/* [MQTT-4.7.2-1] the root is chosen by the name's first byte. */
	const struct trie_node *root = trie_root_for(&t->trie, levels[0].ptr, levels[0].len);
	return match_from(&t->trie, root, levels, 0, nlevels, fn, ctx);
}

size_t tree_match_filter(const struct tree *t, const char *filter, size_t len, tree_match_fn fn, void *ctx)
{
	const struct trie_node *n = len ? trie_find(&t->trie, filter, len, true) : NULL;
	return n ? emit(n, fn, ctx) : 0;
}

size_t tree_count(const struct tree *t) { return t->count; }

size_t tree_debug_nodes(const struct tree *t) { return t->trie.nodes; }
