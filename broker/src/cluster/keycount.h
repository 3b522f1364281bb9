/*
 * A counted set of 64-bit keys: how many entries of a queue hold each key,
 * asked in O(1). durable.c keeps one beside its queue of JetStream acks
 * waiting for the store, so that a redelivery asks whether an ack of the
 * same message waits there without scanning the queue (which, with the
 * store stuck past an ack wait, held up to 2 x inbound_queue entries and
 * was scanned once per redelivery: about 4·10⁹ comparisons per ack wait at
 * the default 65,536, on the loop thread).
 *
 * Open addressing with linear probing over a power-of-two table at most
 * half full; the slot is the key times 2⁶⁴/φ, its top bits (Fibonacci
 * hashing), so that consecutive keys (stream sequences) land apart instead
 * of in one run; deletion shifts the run back, leaving no tombstones. Key 0
 * is counted on its own (0 marks an empty slot). The table is allocated
 * at the first add (64 slots) and doubles at half load; a grown one is
 * freed when the last key goes, the 64-slot one kept.
 *
 * Cost: add, del and get touch one slot and its run, expected O(1) at
 * half load; growth O(slots). Memory: 16 bytes a slot, at most 4 slots per
 * key at the set's largest since it was last empty. Single threaded.
 */
#ifndef WISP_CLUSTER_KEYCOUNT_H
#define WISP_CLUSTER_KEYCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct keycount_slot {
	uint64_t key; /* 0: empty */
	uint64_t n;
};

struct keycount {
	struct keycount_slot *slot;
	unsigned bits;   /* the table has 1 << bits slots (0: none) */
	size_t used;     /* distinct nonzero keys held */
	uint64_t zeros;  /* how many of key 0 */
};

#define KEYCOUNT_INIT {0}

/* One more of `key`: 0, or WISP_ENOMEM (the set is unchanged). */
int keycount_add(struct keycount *kc, uint64_t key);
/* One fewer of `key` (no-op when it holds none). */
void keycount_del(struct keycount *kc, uint64_t key);
/* How many of `key` it holds. */
uint64_t keycount_get(const struct keycount *kc, uint64_t key);
void keycount_free(struct keycount *kc);

#endif
