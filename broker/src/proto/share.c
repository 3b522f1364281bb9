/*
 * Shared subscription groups (share.h): parsing, the group table, and the
 * round-robin pick. Routing (route.c) and the subscribe path call these;
 * nothing here delivers. Single threaded: loop thread only.
 */
#include "share.h"

#include <string.h>

#include "acl.h"
#include "alloc.h"
#include "err.h"
#include "hash.h"
#include "topic.h"

/* Fixed: the table is not exposed to more flooding than each client's
 * max_subscriptions allows. */
#define SHARE_HASH_SEED 0x5e4a3d21u

enum share_parse share_parse(const char *f, size_t len, size_t *filter_at)
{
	if (len < SHARE_PREFIX_LEN || memcmp(f, SHARE_PREFIX, SHARE_PREFIX_LEN) != 0)
		return SHARE_NOT_SHARED;
	size_t i = SHARE_PREFIX_LEN;
	/* [MQTT-4.8.2-1] a ShareName of at least one character; [MQTT-4.8.2-2]
	 * without '/', '+' or '#', then a '/' and a Topic Filter. */
	while (i < len && f[i] != '/') {
		if (f[i] == '+' || f[i] == '#')
			return SHARE_MALFORMED;
		i++;
	}
	if (i == SHARE_PREFIX_LEN || i + 1 >= len)
		return SHARE_MALFORMED;
	*filter_at = i + 1;
	return SHARE_OK;
}

static size_t slot_of(const struct share_table *t, uint32_t hash) { return hash & (t->nbuckets - 1); }

struct share_group *share_find(const struct share_table *t, const char *key, size_t len)
{
	if (!t->nbuckets)
		return NULL;
	uint32_t h = hash_bytes(SHARE_HASH_SEED, key, len);
	for (struct share_group *g = t->buckets[slot_of(t, h)]; g; g = g->hash_next)
		if (g->hash == h && g->key_len == len && memcmp(g->key, key, len) == 0)
			return g;
	return NULL;
}

/* Doubles the table when it is as full as it has buckets. */
static int grow(struct share_table *t)
{
	if (t->nbuckets && t->count < t->nbuckets)
		return 0;
	size_t n = t->nbuckets ? t->nbuckets * 2 : 16;
	struct share_group **b = wisp_calloc(n, sizeof *b);
	if (!b)
		return t->nbuckets ? 0 : WISP_ENOMEM; /* a fuller table still works */
	for (size_t i = 0; i < t->nbuckets; i++)
		for (struct share_group *g = t->buckets[i], *next; g; g = next) {
			next = g->hash_next;
			g->hash_next = b[g->hash & (n - 1)];
			b[g->hash & (n - 1)] = g;
		}
	wisp_free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
	return 0;
}

static struct share_group *group_new(struct share_table *t, struct tree *tree, const char *key, size_t len)
{
	size_t at = 0;
	if (len > UINT16_MAX || share_parse(key, len, &at) != SHARE_OK || grow(t) != 0)
		return NULL;
	struct share_group *g = wisp_malloc(sizeof *g + len);
	if (!g)
		return NULL;
	memset(g, 0, sizeof *g);
	memcpy(g->key, key, len);
	g->key_len = (uint16_t)len;
	g->filter_at = (uint16_t)at;
	g->hash = hash_bytes(SHARE_HASH_SEED, key, len);
	if (tree_attach(tree, key + at, len - at, &g->handle, g, SESS_SUBOPT_SHARED, SHARE_GROUP_MARK) != 0) {
		wisp_free(g);
		return NULL;
	}
	size_t slot = slot_of(t, g->hash);
	g->hash_next = t->buckets[slot];
	t->buckets[slot] = g;
	t->count++;
	return g;
}

static void group_free(struct share_table *t, struct tree *tree, struct share_group *g)
{
	struct share_group **p = &t->buckets[slot_of(t, g->hash)];
	while (*p != g)
		p = &(*p)->hash_next;
	*p = g->hash_next;
	t->count--;
	tree_detach(tree, &g->handle);
	wisp_free(g->members);
	wisp_free(g);
}

static const char *sub_key(const struct sess_sub *sub) { return sess_sub_filter(sub); }

int share_join(struct share_table *t, struct tree *tree, struct sess_sub *sub)
{
	struct share_group *g = share_find(t, sub_key(sub), sess_sub_filter_len(sub));
	bool created = false;
	if (!g) {
		g = group_new(t, tree, sub_key(sub), sess_sub_filter_len(sub));
		if (!g)
			return WISP_ENOMEM;
		created = true;
	}
	for (uint32_t i = 0; i < g->count; i++)
		if (g->members[i] == sub)
			return 0;
	if (g->count == g->cap) {
		uint32_t cap = g->cap ? g->cap * 2 : 4;
		struct sess_sub **v = wisp_realloc(g->members, cap * sizeof *v);
		if (!v) {
			if (created)
				group_free(t, tree, g);
			return WISP_ENOMEM;
		}
		g->members = v;
		g->cap = cap;
	}
	g->members[g->count++] = sub;
	/* Restored at start, offline: it may hold the group's messages. */
	if (!((struct session *)tree_sub_subscriber(&sub->handle))->conn)
		g->stranded = true;
	return 0;
}

void share_leave(struct share_table *t, struct tree *tree, const struct sess_sub *sub)
{
	struct share_group *g = share_find(t, sub_key(sub), sess_sub_filter_len(sub));
	if (!g)
		return;
	for (uint32_t i = 0; i < g->count; i++) {
		if (g->members[i] != sub)
			continue;
		/* Order kept, so the round-robin stays fair to those after it. */
		memmove(&g->members[i], &g->members[i + 1], (g->count - i - 1) * sizeof g->members[0]);
		g->count--;
		if (g->cursor > i)
			g->cursor--;
		break;
	}
	if (g->count == 0)
		group_free(t, tree, g);
}

static bool may_take(const struct sess_sub *sub, const struct session *s, const char *topic, size_t topic_len)
{
	if (!(tree_sub_options(&sub->handle) & SESS_SUBOPT_ACL_CHECK))
		return true;
	return s->acl && acl_client_check(s->acl, topic, topic_len, ACL_READ);
}

struct sess_sub *share_pick(struct share_group *g, const char *topic, size_t topic_len,
			    const struct session *except, bool connected_only)
{
	struct sess_sub *offline = NULL;
	uint32_t offline_at = 0;
	for (uint32_t k = 0; k < g->count; k++) {
		uint32_t i = (g->cursor + k) % g->count;
		struct sess_sub *sub = g->members[i];
		const struct session *s = tree_sub_subscriber(&sub->handle);
		if (s == except || !may_take(sub, s, topic, topic_len))
			continue;
		if (s->conn) {
			g->cursor = (i + 1) % g->count;
			return sub;
		}
		if (!offline) {
			offline = sub;
			offline_at = i;
		}
	}
	if (!offline || connected_only)
		return NULL;
	g->cursor = (offline_at + 1) % g->count;
	g->stranded = true;
	return offline;
}

void share_table_free(struct share_table *t, struct tree *tree)
{
	for (size_t i = 0; i < t->nbuckets; i++)
		while (t->buckets[i])
			group_free(t, tree, t->buckets[i]);
	wisp_free(t->buckets);
	memset(t, 0, sizeof *t);
}
