#include "session.h"

#include <string.h>

#include "alloc.h"
#include "delivery.h"
#include "err.h"

/* FNV-1a: client ids are short, and the table is not exposed to hash
 * flooding worse than any per-client cost (ids come from connected clients). */
static uint32_t hash_id(const char *id, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)id[i];
		h *= 16777619u;
	}
	return h;
}

int sess_table_init(struct session_table *tab)
{
	tab->nbuckets = 64;
	tab->count = 0;
	tab->on_free = NULL;
	tab->buckets = wisp_calloc(tab->nbuckets, sizeof *tab->buckets);
	return tab->buckets ? 0 : WISP_ENOMEM;
}

static void free_session(const struct session_table *tab, struct tree *tree, struct session *s)
{
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &s->subs) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		tree_detach(tree, &sub->handle);
		wisp_free(sub);
	}
	delivery_clear(s);
	if (tab->on_free)
		tab->on_free(s);
	wisp_free(s->username);
	wisp_free(s->qos2_in);
	wisp_free(s);
}

void sess_table_free(struct session_table *tab, struct tree *tree)
{
	for (size_t i = 0; i < tab->nbuckets; i++) {
		struct session *s = tab->buckets[i];
		while (s) {
			struct session *next = s->hash_next;
			free_session(tab, tree, s);
			s = next;
		}
	}
	wisp_free(tab->buckets);
	tab->buckets = NULL;
	tab->count = 0;
}

struct session *sess_find(const struct session_table *tab, const char *id, size_t len)
{
	uint32_t h = hash_id(id, len);
	for (struct session *s = tab->buckets[h & (tab->nbuckets - 1)]; s; s = s->hash_next)
		if (s->hash == h && s->id_len == len && memcmp(s->client_id, id, len) == 0)
			return s;
	return NULL;
}

/* Doubling keeps chains short; a failed grow only costs longer chains. */
static void maybe_grow(struct session_table *tab)
{
	if (tab->count < tab->nbuckets)
		return;
	size_t n = tab->nbuckets * 2;
	struct session **b = wisp_calloc(n, sizeof *b);
	if (!b)
		return;
	for (size_t i = 0; i < tab->nbuckets; i++) {
		struct session *s = tab->buckets[i];
		while (s) {
			struct session *next = s->hash_next;
			s->hash_next = b[s->hash & (n - 1)];
			b[s->hash & (n - 1)] = s;
			s = next;
		}
	}
	wisp_free(tab->buckets);
	tab->buckets = b;
	tab->nbuckets = n;
}

struct session *sess_create(struct session_table *tab, const char *id, size_t len, bool clean)
{
	if (len > UINT16_MAX)
		return NULL;
	struct session *s = wisp_calloc(1, sizeof *s + len + 1);
	if (!s)
		return NULL;
	memcpy(s->client_id, id, len);
	s->id_len = (uint16_t)len;
	s->hash = hash_id(id, len);
	s->clean = clean;
	list_init(&s->subs);
	list_init(&s->inflight);
	list_init(&s->queue);
	maybe_grow(tab);
	struct session **b = &tab->buckets[s->hash & (tab->nbuckets - 1)];
	s->hash_next = *b;
	*b = s;
	tab->count++;
	return s;
}

void sess_destroy(struct session_table *tab, struct tree *tree, struct session *s)
{
	struct session **pp = &tab->buckets[s->hash & (tab->nbuckets - 1)];
	while (*pp && *pp != s)
		pp = &(*pp)->hash_next;
	if (*pp) {
		*pp = s->hash_next;
		tab->count--;
	}
	free_session(tab, tree, s);
}

static struct sess_sub *find_sub(struct session *s, const char *filter, size_t len)
{
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &s->subs) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		if (sub->filter_len == len && memcmp(sub->filter, filter, len) == 0)
			return sub;
	}
	return NULL;
}

int sess_subscribe(struct session *s, struct tree *tree, const char *filter, size_t len,
		   uint8_t options, size_t max_subs)
{
	struct sess_sub *sub = find_sub(s, filter, len);
	if (sub) {
		tree_sub_set_options(&sub->handle, options, 0);
		return 0;
	}
	if (max_subs && s->sub_count >= max_subs)
		return WISP_ELIMIT;
	if (len > UINT16_MAX)
		return WISP_EINVAL;
	sub = wisp_malloc(sizeof *sub + len);
	if (!sub)
		return WISP_ENOMEM;
	if (tree_attach(tree, filter, len, &sub->handle, s, options, 0) != 0) {
		wisp_free(sub);
		return WISP_ENOMEM;
	}
	sub->filter_len = (uint16_t)len;
	memcpy(sub->filter, filter, len);
	list_push_back(&s->subs, &sub->link);
	s->sub_count++;
	return 1;
}

int sess_unsubscribe(struct session *s, struct tree *tree, const char *filter, size_t len)
{
	struct sess_sub *sub = find_sub(s, filter, len);
	if (!sub)
		return WISP_ENOENT;
	tree_detach(tree, &sub->handle);
	list_remove(&sub->link);
	s->sub_count--;
	wisp_free(sub);
	return 0;
}

/* A plain array: a client rarely has more than a few QoS 2 publishes
 * between PUBREC and PUBREL, and the cap bounds the scan. */
int sess_qos2_in_add(struct session *s, uint16_t packet_id)
{
	for (uint16_t i = 0; i < s->qos2_in_count; i++)
		if (s->qos2_in[i] == packet_id)
			return 0;
	if (s->qos2_in_count >= SESS_QOS2_IN_MAX)
		return WISP_ELIMIT;
	if (s->qos2_in_count == s->qos2_in_cap) {
		uint16_t cap = (uint16_t)(s->qos2_in_cap ? s->qos2_in_cap * 2 : 8);
		uint16_t *a = wisp_realloc(s->qos2_in, cap * sizeof *a);
		if (!a)
			return WISP_ENOMEM;
		s->qos2_in = a;
		s->qos2_in_cap = cap;
	}
	s->qos2_in[s->qos2_in_count++] = packet_id;
	return 1;
}

int sess_qos2_in_release(struct session *s, uint16_t packet_id)
{
	for (uint16_t i = 0; i < s->qos2_in_count; i++) {
		if (s->qos2_in[i] == packet_id) {
			s->qos2_in[i] = s->qos2_in[--s->qos2_in_count];
			return 1;
		}
	}
	return 0;
}
