/*
 * The retained store: a level trie (trie.h) keyed by topic name, each node
 * holding at most one value. Names have no wildcards, so only literal
 * children exist.
 *
 * retained_match() walks the filter over the trie: a literal level is one
 * hash lookup, '+' visits the children of one node, '#' the subtree below
 * it (and the node itself: "a/#" matches "a" [MQTT-4.7.1-2]). Branches the
 * filter cannot match are never visited. A filter starting with '$' starts
 * from the '$' root, every other filter from the ordinary root, so
 * wildcards never reach '$' names [MQTT-4.7.2-1]. The names passed to the
 * visitor are rebuilt from the node levels in a stack buffer of the
 * maximum topic length: matching allocates nothing.
 *
 * Bounds: max_count values, max_bytes of values as the caller counts them,
 * and names of at most TOPIC_MAX_LEVELS_HARD levels, which bounds the
 * recursion of retained_match(). A set over any bound fails and changes
 * nothing. Values set with bytes 0 are exempt from both caps and counted
 * apart (`exempt`), so the caps bound only what callers charge. Single
 * threaded: loop thread only.
 */
#include "retained.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "topic.h"
#include "trie.h"

#define NAME_MAX_LEN 65535u

struct retained {
	struct trie trie;
	retained_release_fn release;
	size_t max_count, max_bytes;
	size_t count, bytes;
	size_t exempt; /* values stored with bytes 0, not under max_count */
};

static bool node_in_use(const struct trie_node *n)
{
	return n->u.ret.value != NULL;
}

static void node_release(struct trie_node *n, void *ctx)
{
	const struct retained *r = ctx;
	if (n->u.ret.value && r->release)
		r->release(n->u.ret.value);
}

struct retained *retained_new(retained_release_fn release, size_t max_count, size_t max_bytes)
{
	struct retained *r = wisp_calloc(1, sizeof *r);
	if (!r)
		return NULL;
	if (trie_init(&r->trie, node_in_use, NULL) < 0) {
		wisp_free(r);
		return NULL;
	}
	r->release = release;
	r->max_count = max_count;
	r->max_bytes = max_bytes;
	return r;
}

void retained_free(struct retained *r)
{
	if (!r)
		return;
	trie_destroy(&r->trie, node_release, r);
	wisp_free(r);
}

static void release_value(const struct retained *r, void *value)
{
	if (r->release)
		r->release(value);
}

static int delete_topic(struct retained *r, const char *topic, size_t len)
{
	struct trie_node *n = trie_find(&r->trie, topic, len, false);
	if (!n || !n->u.ret.value)
		return 0;
	void *old = n->u.ret.value;
	r->count--;
	if (n->u.ret.bytes == 0)
		r->exempt--;
	r->bytes -= n->u.ret.bytes;
	n->u.ret.value = NULL;
	n->u.ret.bytes = 0;
	trie_prune(&r->trie, n);
	/* Released last, so the callback sees a consistent store. */
	release_value(r, old);
	return 0;
}

static size_t count_levels(const char *s, size_t len)
{
	size_t n = 1;
	for (const char *p = s, *end = s + len; (p = memchr(p, '/', (size_t)(end - p))) != NULL; p++)
		n++;
	return n;
}

int retained_set(struct retained *r, const char *topic, size_t len, void *value, size_t bytes)
{
	/* [MQTT-4.7.3-1] names are 1..65535 bytes */
	if (len == 0 || len > NAME_MAX_LEN)
		return -1;
	/* [MQTT-3.3.1-10] a zero-length retained payload deletes */
	if (!value)
		return delete_topic(r, topic, len);
	if (count_levels(topic, len) > TOPIC_MAX_LEVELS_HARD)
		return -1;

	/* Check the caps before touching anything, so failure changes nothing. */
	struct trie_node *n = trie_find(&r->trie, topic, len, false);
	bool replacing = n && n->u.ret.value;
	size_t kept = r->bytes - (replacing ? n->u.ret.bytes : 0);
	size_t count = r->count + (replacing ? 0 : 1);
	size_t exempt = r->exempt - (replacing && n->u.ret.bytes == 0 ? 1 : 0) + (bytes == 0 ? 1 : 0);
	if (bytes && r->max_count && count - exempt > r->max_count)
		return RETAINED_OVER_COUNT;
	if (bytes > SIZE_MAX - kept || (r->max_bytes && kept + bytes > r->max_bytes))
		return RETAINED_OVER_BYTES;

	if (!n) {
		n = trie_insert(&r->trie, topic, len, false);
		if (!n)
			return -1;
	}
	void *old = n->u.ret.value;
	n->u.ret.value = value;
	n->u.ret.bytes = bytes;
	r->count = count;
	r->exempt = exempt;
	r->bytes = kept + bytes;
	if (old)
		release_value(r, old);
	return 0;
}

void *retained_get(const struct retained *r, const char *topic, size_t len)
{
	if (len == 0 || len > NAME_MAX_LEN)
		return NULL;
	const struct trie_node *n = trie_find(&r->trie, topic, len, false);
	return n ? n->u.ret.value : NULL;
}

struct match_ctx {
	const struct trie *trie;
	const char *fend; /* end of the filter */
	retained_visit_fn fn;
	void *ctx;
	size_t calls;
	char *name; /* NAME_MAX_LEN bytes: the name of the node being visited */
};

/* Appends child `c` of `n` to the name of `n` (nlen bytes); the new length.
 * Stored names are at most NAME_MAX_LEN bytes, so this stays in bounds. */
static size_t name_push(struct match_ctx *m, const struct trie_node *n, size_t nlen, const struct trie_node *c)
{
	if (!trie_is_root(n))
		m->name[nlen++] = '/';
	memcpy(m->name + nlen, c->level, c->len);
	return nlen + c->len;
}

static void visit(struct match_ctx *m, const struct trie_node *n, size_t nlen)
{
	if (n->u.ret.value) {
		m->fn(m->name, nlen, n->u.ret.value, m->ctx);
		m->calls++;
	}
}

/* Every value below `n`: what a '#' level matches. Depth is bounded by the
 * level cap on names. */
static void visit_subtree(struct match_ctx *m, const struct trie_node *n, size_t nlen)
{
	size_t count;
	struct trie_node *const *kids = trie_kids(n, &count);
	for (size_t i = 0; i < count; i++) {
		if (!kids[i])
			continue;
		size_t clen = name_push(m, n, nlen, kids[i]);
		visit(m, kids[i], clen);
		visit_subtree(m, kids[i], clen);
	}
}

/* Matches the filter levels from `p` (NULL once all are used) against the
 * names below `n`. Literal levels are followed in the loop, '+' recurses;
 * recursion only enters existing nodes, so its depth is bounded too. */
static void match_from(struct match_ctx *m, const struct trie_node *n, size_t nlen, const char *p)
{
	for (;;) {
		if (!p) {
			visit(m, n, nlen);
			return;
		}
		const char *slash = p < m->fend ? memchr(p, '/', (size_t)(m->fend - p)) : NULL;
		size_t llen = (size_t)((slash ? slash : m->fend) - p);
		const char *next = slash ? slash + 1 : NULL;
		if (llen == 1 && p[0] == '#') {
			/* Includes the parent level [MQTT-4.7.1-2]. */
			visit(m, n, nlen);
			visit_subtree(m, n, nlen);
			return;
		}
		if (llen == 1 && p[0] == '+') {
			size_t count;
			struct trie_node *const *kids = trie_kids(n, &count);
			for (size_t i = 0; i < count; i++)
				if (kids[i])
					match_from(m, kids[i], name_push(m, n, nlen, kids[i]), next);
			return;
		}
		const struct trie_node *c = trie_child(m->trie, n, p, llen);
		if (!c)
			return;
		nlen = name_push(m, n, nlen, c);
		n = c;
		p = next;
	}
}

size_t retained_match(const struct retained *r, const char *filter, size_t len,
		      retained_visit_fn fn, void *ctx)
{
	if (len == 0 || len > NAME_MAX_LEN)
		return 0;
	char name[NAME_MAX_LEN];
	struct match_ctx m = {
		.trie = &r->trie, .fend = filter + len, .fn = fn, .ctx = ctx, .calls = 0, .name = name,
	};
	/* [MQTT-4.7.2-1] '+' and '#' are not '$', so such filters start from
	 * the ordinary root and never see '$' names. */
	match_from(&m, trie_root_for(&r->trie, filter, len), 0, filter);
	return m.calls;
}

size_t retained_each(const struct retained *r, retained_visit_fn fn, void *ctx)
{
	char name[NAME_MAX_LEN];
	struct match_ctx m = {.trie = &r->trie, .fn = fn, .ctx = ctx, .calls = 0, .name = name};
	visit_subtree(&m, r->trie.root, 0);
	visit_subtree(&m, r->trie.dollar, 0);
	return m.calls;
}

size_t retained_count(const struct retained *r) { return r->count; }
size_t retained_bytes(const struct retained *r) { return r->bytes; }

size_t retained_debug_nodes(const struct retained *r) { return r->trie.nodes; }
