/*
 * The outbound QoS 1/2 bookkeeping that costs per delivery: where a
 * session's in-flight entry for a packet id is, and the entries themselves.
 *
 * - struct flight_index maps a packet id to its in-flight entry in O(1):
 *   a chained hash on id & mask, chained through the entry itself
 *   (sess_msg.id_next), with at least as many buckets as entries. Ids are
 *   handed out in sequence, so a window of w ids in flight puts about one
 *   entry in each bucket, and a lookup, an insertion and a removal touch
 *   one or two entries whatever the window. (Open addressing was measured
 *   first: a window's ids fill one contiguous run, and each removal's
 *   backward shift walked all of it, 21% of fan-in's CPU at 320 in flight.)
 *   The table exists while a session has a message in flight (16 to 65,536
 *   buckets of 8 bytes) and goes when the window empties, so a session
 *   with nothing in flight holds none. Empty 16-bucket tables are kept on
 *   a free list (at most 256), so one message at a time does not call
 *   malloc.
 * - Entries (struct sess_msg) without Subscription Identifiers, the
 *   every-delivery case, come from a free list of at most 16,384
 *   entries shared by every session, so steady-state QoS 1/2 delivery does
 *   not call malloc (the outq items' scheme, outq.c).
 *
 * Neither knows the protocol: delivery.c decides what is in flight.
 * Single threaded: the loop thread only.
 */
#ifndef WISP_SESSION_FLIGHT_H
#define WISP_SESSION_FLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "session.h"

struct flight_index;

/* Makes room for one more entry (allocating or doubling the table): 0 or
 * WISP_ENOMEM, in which case the index is unchanged. */
int flight_index_reserve(struct flight_index **fi);

/* Adds `e` under e->packet_id, which must not be in the index; room must
 * have been reserved. Borrows `e` until it is deleted. */
void flight_index_put(struct flight_index *fi, struct sess_msg *e);

/* The entry for `packet_id`, or NULL (also when `fi` is NULL). */
struct sess_msg *flight_index_get(const struct flight_index *fi, uint16_t packet_id);

/* Removes `packet_id` (no-op if absent); frees a grown table that becomes
 * empty. */
void flight_index_del(struct flight_index **fi, uint16_t packet_id);

/* Entries in the index. */
size_t flight_index_count(const struct flight_index *fi);

void flight_index_free(struct flight_index **fi);

/* An entry with room for `nids` Subscription Identifiers, from the free
 * list when nids is 0; NULL when out of memory. Fields are uninitialised
 * but sub_id_count, which is set to nids. */
struct sess_msg *flight_entry_new(uint16_t nids);
/* Returns `e` to the free list (or to the allocator). Does not touch
 * e->msg: the caller releases its reference first. */
void flight_entry_free(struct sess_msg *e);
/* Releases the free list (at shutdown, so leak checkers stay quiet). */
void flight_release_cache(void);
/* Entries on the free list (for tests). */
size_t flight_cache_count(void);

#endif
