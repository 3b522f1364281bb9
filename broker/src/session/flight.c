#include "flight.h"

#include <stdbool.h>
#include <string.h>

#include "alloc.h"
#include "err.h"

#define INDEX_MIN 16u       /* buckets of a new table */
#define INDEX_MAX 65536u    /* one bucket per id: chains of one */
/* 100 subscribers with 64 messages each in flight (compare.sh's fan-out
 * QoS 1) hold 6,400 entries: a cap of 4,096 sent the rest back to malloc
 * at every ack. 16,384 entries of 48 bytes keep at most 768 KiB. */
#define FLIGHT_FREE_MAX 16384
#define INDEX_FREE_MAX 256  /* empty INDEX_MIN tables kept for reuse */

struct flight_index {
	uint32_t mask;   /* buckets - 1, buckets a power of two */
	uint32_t count;
	struct sess_msg *bucket[]; /* chains through sess_msg.id_next */
};

/* At most one entry per bucket on average; ids in sequence spread evenly. */
static bool has_room(const struct flight_index *fi)
{
	return fi && (fi->count < fi->mask + 1 || fi->mask + 1 == INDEX_MAX);
}

static void insert(struct flight_index *fi, struct sess_msg *e)
{
	struct sess_msg **b = &fi->bucket[e->packet_id & fi->mask];
	e->id_next = *b;
	*b = e;
	fi->count++;
}

/* Empty smallest tables, linked through their first bucket: a session that
 * has one message in flight at a time takes and returns one per message. */
static struct flight_index *free_tables;
static size_t free_table_count;

static struct flight_index *index_new(uint32_t buckets)
{
	struct flight_index *fi;
	if (buckets == INDEX_MIN && free_tables) {
		fi = free_tables;
		free_tables = (struct flight_index *)(void *)fi->bucket[0];
		fi->bucket[0] = NULL;
		free_table_count--;
		return fi;
	}
	fi = wisp_calloc(1, sizeof *fi + buckets * sizeof fi->bucket[0]);
	if (fi)
		fi->mask = buckets - 1;
	return fi;
}

int flight_index_reserve(struct flight_index **fi)
{
	struct flight_index *old = *fi;
	if (has_room(old))
		return 0;
	struct flight_index *grown = index_new(old ? (old->mask + 1) * 2 : INDEX_MIN);
	if (!grown)
		return WISP_ENOMEM;
	if (old) {
		for (uint32_t i = 0; i <= old->mask; i++)
			for (struct sess_msg *e = old->bucket[i], *next; e; e = next) {
				next = e->id_next;
				insert(grown, e);
			}
		wisp_free(old);
	}
	*fi = grown;
	return 0;
}

void flight_index_put(struct flight_index *fi, struct sess_msg *e)
{
	insert(fi, e);
}

struct sess_msg *flight_index_get(const struct flight_index *fi, uint16_t packet_id)
{
	if (!fi)
		return NULL;
	struct sess_msg *e = fi->bucket[packet_id & fi->mask];
	while (e && e->packet_id != packet_id)
		e = e->id_next;
	return e;
}

void flight_index_del(struct flight_index **fip, uint16_t packet_id)
{
	struct flight_index *fi = *fip;
	if (!fi)
		return;
	struct sess_msg **p = &fi->bucket[packet_id & fi->mask];
	while (*p && (*p)->packet_id != packet_id)
		p = &(*p)->id_next;
	if (!*p)
		return;
	*p = (*p)->id_next;
	if (--fi->count == 0)
		flight_index_free(fip); /* nothing in flight: an idle session holds no table */
}

size_t flight_index_count(const struct flight_index *fi)
{
	return fi ? fi->count : 0;
}

void flight_index_free(struct flight_index **fip)
{
	struct flight_index *fi = *fip;
	*fip = NULL;
	if (!fi)
		return;
	if (fi->mask + 1 == INDEX_MIN && free_table_count < INDEX_FREE_MAX) {
		memset(fi->bucket, 0, INDEX_MIN * sizeof fi->bucket[0]);
		fi->count = 0;
		fi->bucket[0] = (struct sess_msg *)(void *)free_tables;
		free_tables = fi;
		free_table_count++;
		return;
	}
	wisp_free(fi);
}

/* Free entries, linked through their `link` (struct sess_msg is 40 bytes
 * without identifiers, so outq items' 80-byte chunks are not shared). */
static struct list_node free_entries = {&free_entries, &free_entries};
static size_t free_count;

struct sess_msg *flight_entry_new(uint16_t nids)
{
	struct sess_msg *e;
	if (nids == 0 && free_count) {
		e = container_of(list_first(&free_entries), struct sess_msg, link);
		list_remove(&e->link);
		free_count--;
	} else {
		e = wisp_malloc(sizeof *e + nids * sizeof e->sub_ids[0]);
		if (!e)
			return NULL;
	}
	e->sub_id_count = nids;
	return e;
}

void flight_entry_free(struct sess_msg *e)
{
	if (e->sub_id_count == 0 && free_count < FLIGHT_FREE_MAX) {
		list_push_front(&free_entries, &e->link);
		free_count++;
		return;
	}
	wisp_free(e);
}

void flight_release_cache(void)
{
	while (free_tables) {
		struct flight_index *fi = free_tables;
		free_tables = (struct flight_index *)(void *)fi->bucket[0];
		wisp_free(fi);
	}
	free_table_count = 0;
	struct list_node *n;
	while ((n = list_first(&free_entries)) != NULL) {
		list_remove(n);
		wisp_free(container_of(n, struct sess_msg, link));
	}
	free_count = 0;
}

size_t flight_cache_count(void)
{
	return free_count;
}
