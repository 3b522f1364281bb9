/*
 * Dormant nodes (dormant.h). The set is small (one entry per node
 * consumer on the stream, not per group), so lookups are linear; a list
 * is filtered by name prefix before any lookup, so a stream with
 * thousands of group consumers costs one pass over their names.
 */
#include "dormant.h"

#include <string.h>

#include "alloc.h"
#include "err.h"

char dormant_consumer_char(char c)
{
	if ((unsigned char)c <= ' ' || c == '.' || c == '*' || c == '>' || c == '/' || c == '\\')
		return '_';
	return c;
}

bool dormant_is_node(const char *node, const char *consumer)
{
	for (; *node && *consumer; node++, consumer++)
		if (dormant_consumer_char(*node) != *consumer)
			return false;
	return *node == '\0' && *consumer == '\0';
}

static struct dormant_node *find(struct dormant *d, const char *name)
{
	for (size_t i = 0; i < d->n; i++)
		if (strcmp(d->nodes[i].name, name) == 0)
			return &d->nodes[i];
	return NULL;
}

static struct dormant_node *add(struct dormant *d, const char *name, size_t len)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 8;
		struct dormant_node *nodes = wisp_realloc(d->nodes, cap * sizeof *nodes);
		if (!nodes)
			return NULL;
		d->nodes = nodes;
		d->cap = cap;
	}
	char *copy = wisp_strndup(name, len);
	if (!copy)
		return NULL;
	d->nodes[d->n] = (struct dormant_node){.name = copy};
	return &d->nodes[d->n++];
}

int dormant_list(struct dormant *d, const char *const *names, size_t n, const char *own, uint64_t ask)
{
	d->known = true;
	/* Two passes: every allocation first, so that running out of memory
	 * leaves the set as it was. */
	bool *seen = wisp_calloc(d->n + n + 1, sizeof *seen);
	if (!seen)
		return WISP_ENOMEM;
	size_t before = d->n;
	int rc = 0;
	bool full = false;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const char *name = names[i];
		if (!name || strncmp(name, DORMANT_SHARE_PREFIX, strlen(DORMANT_SHARE_PREFIX)) == 0 ||
		    strncmp(name, DORMANT_HOLD_PREFIX, strlen(DORMANT_HOLD_PREFIX)) == 0 || strcmp(name, own) == 0)
			continue;
		struct dormant_node *e = find(d, name);
		if (!e && d->n >= DORMANT_MAX_NODES)
			full = true;
		else if (!e && !(e = add(d, name, strlen(name))))
			rc = WISP_ENOMEM;
		else
			seen[e - d->nodes] = true;
	}
	if (rc != 0) {
		while (d->n > before)
			wisp_free(d->nodes[--d->n].name);
		wisp_free(seen);
		return rc;
	}
	for (size_t i = 0; i < d->n; i++) {
		struct dormant_node *e = &d->nodes[i];
		e->listed = seen[i];
		/* Asked after it was forgotten: this list says it all. */
		if (e->held_until && e->held_until <= ask)
			e->held_until = 0;
	}
	wisp_free(seen);
	d->full = full;
	return 0;
}

int dormant_forgotten(struct dormant *d, const char *node, uint64_t ask)
{
	char name[256];
	size_t len = 0;
	for (; node[len] && len < sizeof name - 1; len++)
		name[len] = dormant_consumer_char(node[len]);
	name[len] = '\0';
	struct dormant_node *e = find(d, name);
	if (!e && d->n >= DORMANT_MAX_NODES) {
		d->full = true;
		return 0;
	}
	if (!e && !(e = add(d, name, len)))
		return WISP_ENOMEM;
	e->held_until = ask ? ask : 1;
	return 0;
}

size_t dormant_update(struct dormant *d, dormant_live_fn live, dormant_said_fn said, void *ctx)
{
	for (size_t i = 0; i < d->n;) {
		struct dormant_node *e = &d->nodes[i];
		if (!e->listed && !e->held_until) {
			if (e->dormant) {
				d->count--;
				said(ctx, e->name, false, true);
			}
			wisp_free(e->name);
			d->nodes[i] = d->nodes[--d->n];
			continue;
		}
		bool now = !live(ctx, e->name);
		if (now != e->dormant) {
			e->dormant = now;
			if (now)
				d->count++;
			else
				d->count--;
			said(ctx, e->name, now, false);
		}
		i++;
	}
	return d->count;
}

bool dormant_doubt(const struct dormant *d) { return !d->known || d->count != 0 || d->full; }

void dormant_free(struct dormant *d)
{
	for (size_t i = 0; i < d->n; i++)
		wisp_free(d->nodes[i].name);
	wisp_free(d->nodes);
	*d = (struct dormant){0};
}
