#include "activity.h"

#include <math.h>
#include <string.h>

#include "alloc.h"
#include "list.h"
#include "trie.h"

/* The rate decays with this time constant: a topic that stops shows 0
 * within a minute, one that publishes once a second shows ~1/s. */
#define RATE_TAU_MS 10000.0

struct entry {
	struct list_node lru;   /* most recent first */
	struct trie_node *node;
	uint64_t count;
	uint64_t last_ms;
	double rate;            /* at last_ms */
	uint32_t payload_len;
	uint32_t value_len;
	uint32_t value_cap;
	char value[];
};

struct activity {
	struct trie trie;
	struct list_node lru;
	size_t count;
	size_t max_topics;
	size_t max_value;
	uint64_t evicted;
};

static bool node_in_use(const struct trie_node *n) { return n->u.ret.value != NULL; }

static void node_release(struct trie_node *n, void *ctx)
{
	(void)ctx;
	wisp_free(n->u.ret.value);
	n->u.ret.value = NULL;
}

struct activity *activity_new(size_t max_topics, size_t max_value)
{
	struct activity *a = wisp_calloc(1, sizeof *a);
	if (!a)
		return NULL;
	if (trie_init(&a->trie, node_in_use, NULL) < 0) {
		wisp_free(a);
		return NULL;
	}
	list_init(&a->lru);
	a->max_topics = max_topics ? max_topics : 1;
	a->max_value = max_value;
	return a;
}

void activity_free(struct activity *a)
{
	if (!a)
		return;
	trie_destroy(&a->trie, node_release, NULL);
	wisp_free(a);
}

static void forget(struct activity *a, struct entry *e)
{
	struct trie_node *n = e->node;
	list_remove(&e->lru);
	wisp_free(e);
	n->u.ret.value = NULL;
	a->count--;
	trie_prune(&a->trie, n);
}

static double decayed(const struct entry *e, uint64_t now_ms)
{
	double dt = now_ms > e->last_ms ? (double)(now_ms - e->last_ms) : 0.0;
	return e->rate * exp(-dt / RATE_TAU_MS);
}

int activity_note(struct activity *a, const char *topic, size_t len, const void *payload, size_t plen,
		  uint64_t now_ms)
{
	size_t vlen = plen < a->max_value ? plen : a->max_value;
	struct trie_node *n = trie_find(&a->trie, topic, len, false);
	struct entry *e = n ? n->u.ret.value : NULL;
	if (!e) {
		if (a->count >= a->max_topics) {
			struct list_node *oldest = a->lru.prev;
			forget(a, container_of(oldest, struct entry, lru));
			a->evicted++;
		}
		n = trie_insert(&a->trie, topic, len, false);
		if (!n)
			return -1;
		e = wisp_malloc(sizeof *e + vlen);
		if (!e) {
			trie_prune(&a->trie, n);
			return -1;
		}
		memset(e, 0, sizeof *e);
		e->node = n;
		e->value_cap = (uint32_t)vlen;
		e->last_ms = now_ms;
		n->u.ret.value = e;
		list_push_front(&a->lru, &e->lru);
		a->count++;
	} else {
		list_remove(&e->lru);
		list_push_front(&a->lru, &e->lru);
		if (vlen > e->value_cap) {
			struct entry *grown = wisp_realloc(e, sizeof *e + vlen);
			if (grown) {
				e = grown;
				e->value_cap = (uint32_t)vlen;
				/* the list and the node point at the old address */
				e->lru.prev->next = &e->lru;
				e->lru.next->prev = &e->lru;
				n->u.ret.value = e;
			} else {
				vlen = e->value_cap;
			}
		}
	}
	e->rate = decayed(e, now_ms) + 1000.0 / RATE_TAU_MS;
	e->last_ms = now_ms;
	e->count++;
	e->payload_len = plen > UINT32_MAX ? UINT32_MAX : (uint32_t)plen;
	e->value_len = (uint32_t)vlen;
	memcpy(e->value, payload, vlen);
	return 0;
}

static void visit(const struct trie_node *k, uint64_t now_ms, activity_visit_fn fn, void *ctx)
{
	const struct entry *e = k->u.ret.value;
	struct activity_item it = {
		.level = k->level,
		.level_len = k->len,
		.has_children = trie_nkids(k) > 0,
		.has_value = e != NULL,
	};
	if (e) {
		it.value = e->value;
		it.value_len = e->value_len;
		it.payload_len = e->payload_len;
		it.count = e->count;
		it.rate = decayed(e, now_ms);
		it.age_ms = now_ms > e->last_ms ? now_ms - e->last_ms : 0;
	}
	fn(&it, ctx);
}

/* Visits the children of n from index *skip on, at most *left of them. */
static void walk_kids(const struct trie_node *n, size_t *skip, size_t *left, uint64_t now_ms,
		      activity_visit_fn fn, void *ctx)
{
	size_t slots;
	struct trie_node *const *kids = trie_kids(n, &slots);
	for (size_t i = 0; i < slots && *left; i++) {
		if (!kids[i])
			continue;
		if (*skip) {
			(*skip)--;
			continue;
		}
		visit(kids[i], now_ms, fn, ctx);
		(*left)--;
	}
}

size_t activity_children(const struct activity *a, const char *prefix, size_t len, size_t offset, size_t limit,
			 uint64_t now_ms, activity_visit_fn fn, void *ctx)
{
	size_t skip = offset, left = limit;
	if (!prefix) {
		walk_kids(a->trie.root, &skip, &left, now_ms, fn, ctx);
		walk_kids(a->trie.dollar, &skip, &left, now_ms, fn, ctx);
		return trie_nkids(a->trie.root) + trie_nkids(a->trie.dollar);
	}
	const struct trie_node *n = trie_find(&a->trie, prefix, len, false);
	if (!n)
		return 0;
	walk_kids(n, &skip, &left, now_ms, fn, ctx);
	return trie_nkids(n);
}

size_t activity_count(const struct activity *a) { return a->count; }
uint64_t activity_evicted(const struct activity *a) { return a->evicted; }
