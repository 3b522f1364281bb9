#include "session.h"

#include <stddef.h>
#include <string.h>

#include "alloc.h"
#include "delivery.h"
#include "err.h"
#include "flight.h"
#include "hash.h"

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
	tab->on_sub_gone = NULL;
	tab->sub_gone_ctx = NULL;
	tab->on_end = NULL;
	tab->dlim = NULL;
	tab->buckets = wisp_table_zalloc(tab->nbuckets * sizeof *tab->buckets);
	return tab->buckets ? 0 : WISP_ENOMEM;
}

/* A session's block, from the id's offset: sizeof would add the struct's
 * tail padding, which the id fills. Never less than the struct, so every
 * member access stays in bounds. */
static size_t sess_block_size(size_t id_len)
{
	size_t size = offsetof(struct session, client_id) + id_len + 1;
	return size < sizeof(struct session) ? sizeof(struct session) : size;
}

static void free_session(struct session_table *tab, struct tree *tree, struct session *s)
{
	if (tab->on_end)
		tab->on_end(tab, s);
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &s->subs) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		if (tab->on_sub_gone)
			tab->on_sub_gone(tab->sub_gone_ctx, sess_sub_filter(sub), sess_sub_filter_len(sub));
		tree_detach(tree, &sub->handle);
		wisp_small_free(sub, sizeof *sub);
	}
	if (s->rare) {
		wisp_free(s->rare->sub_index);
		wisp_free(s->rare->qos2_in);
		wisp_free(s->rare);
	}
	delivery_clear(s, tab->dlim);
	if (tab->on_free)
		tab->on_free(s);
	wisp_free(s->username);
	wisp_small_free(s, sess_block_size(s->id_len));
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
	wisp_table_free(tab->buckets, tab->nbuckets * sizeof *tab->buckets);
	tab->buckets = NULL;
	tab->count = 0;
}

struct session *sess_find(const struct session_table *tab, const char *id, size_t len)
{
	uint32_t h = hash_id(id, len);
	for (struct session *s = tab->buckets[h & (tab->nbuckets - 1)]; s; s = s->hash_next)
		if (s->id_len == len && memcmp(s->client_id, id, len) == 0)
			return s;
	return NULL;
}

/* Doubling at four sessions a bucket keeps chains short (four on average,
 * walked only at CONNECT, takeover and session end, never per message; a
 * lookup compares an id's length before its bytes) at a quarter of the
 * table of load factor 1: 8 bytes a bucket is 3.4 bytes of each idle
 * connection at 19,000 (docs/cost-connection.md). A failed grow only costs
 * longer chains. */
static void maybe_grow(struct session_table *tab)
{
	if (tab->count < tab->nbuckets * 4)
		return;
	size_t n = tab->nbuckets * 2;
	struct session **b = wisp_table_zalloc(n * sizeof *b);
	if (!b)
		return;
	for (size_t i = 0; i < tab->nbuckets; i++) {
		struct session *s = tab->buckets[i];
		while (s) {
			struct session *next = s->hash_next;
			/* Not cached: 4 bytes of every session, against
			 * hashing each id once per doubling. */
			uint32_t h = hash_id(s->client_id, s->id_len);
			s->hash_next = b[h & (n - 1)];
			b[h & (n - 1)] = s;
			s = next;
		}
	}
	wisp_table_free(tab->buckets, tab->nbuckets * sizeof *tab->buckets);
	tab->buckets = b;
	tab->nbuckets = n;
}

struct session *sess_create(struct session_table *tab, const char *id, size_t len, bool clean)
{
	if (len > UINT16_MAX)
		return NULL;
	struct session *s = wisp_small_zalloc(sess_block_size(len));
	if (!s)
		return NULL;
	memcpy(s->client_id, id, len);
	s->id_len = (uint16_t)len;
	s->clean = clean;
	list_init(&s->subs);
	maybe_grow(tab);
	struct session **b = &tab->buckets[hash_id(id, len) & (tab->nbuckets - 1)];
	s->hash_next = *b;
	*b = s;
	tab->count++;
	return s;
}

void sess_destroy(struct session_table *tab, struct tree *tree, struct session *s)
{
	struct session **pp = &tab->buckets[hash_id(s->client_id, s->id_len) & (tab->nbuckets - 1)];
	while (*pp && *pp != s)
		pp = &(*pp)->hash_next;
	if (*pp) {
		*pp = s->hash_next;
		tab->count--;
	}
	free_session(tab, tree, s);
}

static size_t reverse_bits(size_t v)
{
	size_t r = 0;
	for (unsigned i = 0; i < sizeof v * 8; i++, v >>= 1)
		r = r << 1 | (v & 1);
	return r;
}

/* The table only doubles, so bucket b of the smaller table is buckets b and
 * b + nbuckets of the larger: counting the cursor in reversed bits visits
 * both right after b, and the buckets the scan passed before a doubling
 * are the ones it skips after it. */
bool sess_table_scan(const struct session_table *tab, size_t *cursor,
		     bool (*fn)(void *ctx, const struct session *s), void *ctx)
{
	size_t mask = tab->nbuckets - 1;
	for (const struct session *s = tab->buckets[*cursor & mask]; s; s = s->hash_next)
		if (!fn(ctx, s))
			return false;
	size_t v = *cursor | ~mask;
	*cursor = reverse_bits(reverse_bits(v) + 1);
	return true;
}

/* The block of the rare parts, allocated if need be; NULL when out of memory. */
static struct sess_rare *rare_get(struct session *s)
{
	if (!s->rare)
		s->rare = wisp_calloc(1, sizeof *s->rare);
	return s->rare;
}

/* Frees the block once it holds nothing. */
static void rare_trim(struct session *s)
{
	if (s->rare && !s->rare->sub_index && !s->rare->qos2_in && !s->rare->dropped && !s->rare->drop_episodes &&
	    !s->rare->claim_ns) {
		wisp_free(s->rare);
		s->rare = NULL;
	}
}

void sess_count_dropped(struct session *s, uint32_t n)
{
	if (n && rare_get(s))
		s->rare->dropped += n;
}

bool sess_set_drop_episodes(struct session *s, uint16_t episodes)
{
	if (!episodes && !s->rare)
		return true;
	if (!rare_get(s))
		return false;
	s->rare->drop_episodes = episodes;
	rare_trim(s);
	return true;
}

bool sess_set_claim_ns(struct session *s, uint64_t ns)
{
	if (!ns && !s->rare)
		return true;
	if (!rare_get(s))
		return false;
	s->rare->claim_ns = ns;
	rare_trim(s);
	return true;
}

/*
 * The filter index of a session with many subscriptions: open addressing,
 * linear probing, a power-of-two table at most 3/4 full, backward-shift
 * deletion (no tombstones). Entries cache their hash (sess_sub.hash), so
 * growing never rehashes strings. The seed differs per index; a client
 * crafting colliding filters only slows its own session, whose size
 * limits.max_subscriptions bounds.
 */
struct sess_sub_index {
	uint32_t seed;
	uint32_t count; /* the session's subscriptions (sess_sub_count) */
	uint8_t cap_log2;
	struct sess_sub *slots[]; /* then 1 << cap_log2 uint32_t: each slot's filter hash */
};

#define INDEX_MIN_LOG2 4

/* 56 bytes, as many as a small object (core/alloc.h), the filter being the tree leaf's path. */
_Static_assert(sizeof(struct sess_sub) <= 56, "a subscription stays at 56 bytes");

static uint64_t compares;

uint64_t sess_debug_compares(void) { return compares; }

static bool sub_is(const struct sess_sub *sub, const char *filter, size_t len)
{
	compares++;
	return tree_sub_filter_is(&sub->handle, filter, len);
}

static size_t index_mask(const struct sess_sub_index *x) { return ((size_t)1 << x->cap_log2) - 1; }

static uint32_t *index_hashes(struct sess_sub_index *x) { return (uint32_t *)(x->slots + index_mask(x) + 1); }

/* Places `sub`, whose filter hashes to `h`, in a table known to have a free slot. */
static void index_put(struct sess_sub_index *x, struct sess_sub *sub, uint32_t h)
{
	size_t mask = index_mask(x);
	size_t i = h & mask;
	while (x->slots[i])
		i = (i + 1) & mask;
	x->slots[i] = sub;
	index_hashes(x)[i] = h;
	x->count++;
}

/* A table of 1 << log2 slots holding every subscription of `s`, replacing
 * the old one. 0, or WISP_ENOMEM with `s` unchanged. */
static int index_rebuild(struct session *s, unsigned log2)
{
	static uint32_t made;
	size_t cap = (size_t)1 << log2;
	if (!rare_get(s))
		return WISP_ENOMEM;
	struct sess_sub_index *x = wisp_calloc(1, sizeof *x + cap * (sizeof x->slots[0] + sizeof(uint32_t)));
	if (!x) {
		rare_trim(s);
		return WISP_ENOMEM;
	}
	struct sess_sub_index *old = s->rare->sub_index;
	x->cap_log2 = (uint8_t)log2;
	x->seed = old ? old->seed : hash_mix32((uint32_t)(uintptr_t)x ^ (uint32_t)((uintptr_t)s >> 4) ^ ++made);
	struct list_node *n;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		index_put(x, sub, hash_bytes(x->seed, sess_sub_filter(sub), sess_sub_filter_len(sub)));
	}
	wisp_free(old);
	s->rare->sub_index = x;
	return 0;
}

/* Makes room for one more subscription: builds the index when the session
 * reaches SESS_SUB_INDEX_MIN, doubles it past 3/4. 0 or WISP_ENOMEM. */
static int index_reserve(struct session *s)
{
	size_t want = sess_sub_count(s) + 1;
	const struct sess_sub_index *x = sess_sub_index(s);
	if (!x && want < SESS_SUB_INDEX_MIN)
		return 0;
	unsigned log2 = x ? x->cap_log2 : INDEX_MIN_LOG2;
	if (x && want * 4 <= ((size_t)1 << log2) * 3)
		return 0;
	while (want * 4 > ((size_t)1 << log2) * 3)
		log2++;
	return index_rebuild(s, log2);
}

static void index_remove(struct sess_sub_index *x, const struct sess_sub *sub, uint32_t h)
{
	size_t mask = index_mask(x);
	uint32_t *hashes = index_hashes(x);
	size_t i = h & mask;
	while (x->slots[i] != sub)
		i = (i + 1) & mask;
	x->count--;
	for (;;) {
		x->slots[i] = NULL;
		size_t j = i;
		for (;;) {
			j = (j + 1) & mask;
			if (!x->slots[j])
				return;
			size_t home = hashes[j] & mask;
			/* An entry whose home lies cyclically in (i, j] stays put. */
			bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
			if (!stays)
				break;
		}
		x->slots[i] = x->slots[j];
		hashes[i] = hashes[j];
		i = j;
	}
}

/* After a removal: memory goes back once the session is mostly empty. A
 * failed shrink keeps the bigger table, which is still correct. */
static void index_shrink(struct session *s)
{
	struct sess_sub_index *x = sess_sub_index(s);
	if (!x)
		return;
	if (x->count < SESS_SUB_INDEX_MIN / 2) {
		wisp_free(x);
		s->rare->sub_index = NULL;
		rare_trim(s);
		return;
	}
	size_t cap = (size_t)1 << x->cap_log2;
	if ((size_t)x->count * 8 >= cap || x->cap_log2 <= INDEX_MIN_LOG2)
		return;
	unsigned log2 = INDEX_MIN_LOG2;
	while (((size_t)1 << log2) * 3 < (size_t)x->count * 8)
		log2++;
	(void)index_rebuild(s, log2);
}

size_t sess_sub_count(const struct session *s)
{
	const struct sess_sub_index *x = sess_sub_index(s);
	if (x)
		return x->count;
	size_t n = 0;
	for (const struct list_node *l = s->subs.next; l != &s->subs; l = l->next)
		n++;
	return n;
}

size_t sess_sub_filter_len(const struct sess_sub *sub) { return tree_sub_filter(&sub->handle, NULL, 0); }

const char *sess_sub_filter(const struct sess_sub *sub)
{
	static char buf[UINT16_MAX];
	(void)tree_sub_filter(&sub->handle, buf, sizeof buf);
	return buf;
}

struct sess_sub *sess_find_sub(const struct session *s, const char *filter, size_t len)
{
	const struct sess_sub_index *x = sess_sub_index(s);
	if (!x) {
		/* Fewer than SESS_SUB_INDEX_MIN entries. */
		struct list_node *n;
		for (n = s->subs.next; n != &s->subs; n = n->next) {
			struct sess_sub *sub = container_of(n, struct sess_sub, link);
			if (sub_is(sub, filter, len))
				return sub;
		}
		return NULL;
	}
	uint32_t h = hash_bytes(x->seed, filter, len);
	size_t mask = index_mask(x);
	const uint32_t *hashes = (const uint32_t *)(x->slots + mask + 1);
	/* Never full, so the probe meets a free slot. */
	for (size_t i = h & mask; x->slots[i]; i = (i + 1) & mask)
		if (hashes[i] == h && sub_is(x->slots[i], filter, len))
			return x->slots[i];
	return NULL;
}

int sess_subscribe(struct session *s, struct tree *tree, const char *filter, size_t len,
		   uint8_t options, uint32_t subscription_id, size_t max_subs)
{
	struct sess_sub *sub = sess_find_sub(s, filter, len);
	if (sub) {
		tree_sub_set_options(&sub->handle, options, subscription_id);
		return 0;
	}
	size_t count = sess_sub_count(s);
	if ((max_subs && count >= max_subs) || count >= UINT32_MAX)
		return WISP_ELIMIT;
	if (len > UINT16_MAX)
		return WISP_EINVAL;
	if (index_reserve(s) != 0)
		return WISP_ENOMEM;
	sub = wisp_small_alloc(sizeof *sub);
	if (!sub)
		return WISP_ENOMEM;
	if (tree_attach(tree, filter, len, &sub->handle, s, options, subscription_id) != 0) {
		wisp_small_free(sub, sizeof *sub);
		return WISP_ENOMEM;
	}
	list_push_back(&s->subs, &sub->link);
	struct sess_sub_index *x = sess_sub_index(s);
	if (x)
		index_put(x, sub, hash_bytes(x->seed, filter, len));
	return 1;
}

int sess_unsubscribe(struct session *s, struct tree *tree, const char *filter, size_t len)
{
	struct sess_sub *sub = sess_find_sub(s, filter, len);
	if (!sub)
		return WISP_ENOENT;
	struct sess_sub_index *x = sess_sub_index(s);
	if (x)
		index_remove(x, sub, hash_bytes(x->seed, filter, len));
	tree_detach(tree, &sub->handle);
	list_remove(&sub->link);
	wisp_small_free(sub, sizeof *sub);
	index_shrink(s);
	return 0;
}

/* Blocks of sessions whose QoS 1/2 state emptied, for the next one that
 * needs some: a subscriber whose window drains between messages would
 * otherwise malloc and free one per message. Bounded, as flight.c's. */
#define SESS_QOS_CACHE_MAX 256
static struct sess_qos *qos_cache[SESS_QOS_CACHE_MAX];
static size_t qos_cached;

struct sess_qos *sess_qos_get(struct session *s)
{
	if (s->qos)
		return s->qos;
	struct sess_qos *q = qos_cached ? qos_cache[--qos_cached] : wisp_malloc(sizeof *q);
	if (!q)
		return NULL;
	memset(q, 0, sizeof *q);
	list_init(&q->inflight);
	list_init(&q->queue);
	s->qos = q;
	return q;
}

void sess_qos_trim(struct session *s)
{
	struct sess_qos *q = s->qos;
	if (!q || !list_empty(&q->inflight) || !list_empty(&q->queue))
		return;
	/* The flight index goes with its last entry, but one reserved for an
	 * entry that was then not sent is still here. */
	flight_index_free(&q->flight);
	s->qos = NULL;
	if (qos_cached < SESS_QOS_CACHE_MAX)
		qos_cache[qos_cached++] = q;
	else
		wisp_free(q);
}

void sess_qos_release_cache(void)
{
	while (qos_cached)
		wisp_free(qos_cache[--qos_cached]);
}

/* A plain array: a client rarely has more than a few QoS 2 publishes
 * between PUBREC and PUBREL, and the cap bounds the scan. */
int sess_qos2_in_add(struct session *s, uint16_t packet_id)
{
	struct sess_qos2_in *q = s->rare ? s->rare->qos2_in : NULL;
	uint16_t count = sess_qos2_in_count(s);
	for (uint16_t i = 0; i < count; i++)
		if (q->ids[i] == packet_id)
			return 0;
	if (count >= SESS_QOS2_IN_MAX)
		return WISP_ELIMIT;
	if (!q || count == q->cap) {
		if (!rare_get(s))
			return WISP_ENOMEM;
		uint16_t cap = (uint16_t)(q ? q->cap * 2 : 8);
		q = wisp_realloc(q, sizeof *q + cap * sizeof q->ids[0]);
		if (!q) {
			rare_trim(s);
			return WISP_ENOMEM;
		}
		q->count = count;
		q->cap = cap;
		s->rare->qos2_in = q;
	}
	q->ids[q->count++] = packet_id;
	return 1;
}

int sess_qos2_in_release(struct session *s, uint16_t packet_id)
{
	struct sess_qos2_in *q = s->rare ? s->rare->qos2_in : NULL;
	for (uint16_t i = 0; i < sess_qos2_in_count(s); i++) {
		if (q->ids[i] == packet_id) {
			q->ids[i] = q->ids[--q->count];
			return 1;
		}
	}
	return 0;
}
