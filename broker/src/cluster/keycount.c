/* The counted key set: keycount.h says its shape and cost. */
#include "keycount.h"

#include "alloc.h"
#include "err.h"

#define MIN_BITS 6

static size_t slot_of(uint64_t key, unsigned bits)
{
	return (size_t)((key * UINT64_C(0x9e3779b97f4a7c15)) >> (64 - bits));
}

/* The slot holding `key`, or the empty one ending its run. */
static struct keycount_slot *find(const struct keycount *kc, uint64_t key)
{
	size_t mask = ((size_t)1 << kc->bits) - 1;
	for (size_t i = slot_of(key, kc->bits);; i = (i + 1) & mask)
		if (kc->slot[i].key == key || kc->slot[i].key == 0)
			return &kc->slot[i];
}

/* A grown table goes when the set empties; the smallest stays, so that a
 * queue filling and draining batch by batch does not call malloc. */
static void drop_table(struct keycount *kc)
{
	wisp_free(kc->slot);
	kc->slot = NULL;
	kc->bits = 0;
}

static int grow(struct keycount *kc)
{
	unsigned bits = kc->bits ? kc->bits + 1 : MIN_BITS;
	struct keycount old = *kc;
	kc->slot = wisp_calloc((size_t)1 << bits, sizeof *kc->slot);
	if (!kc->slot) {
		*kc = old;
		return WISP_ENOMEM;
	}
	kc->bits = bits;
	if (old.slot) {
		for (size_t i = 0; i < (size_t)1 << old.bits; i++)
			if (old.slot[i].key)
				*find(kc, old.slot[i].key) = old.slot[i];
		wisp_free(old.slot);
	}
	return 0;
}

int keycount_add(struct keycount *kc, uint64_t key)
{
	if (key == 0) {
		kc->zeros++;
		return 0;
	}
	if (kc->slot) {
		struct keycount_slot *s = find(kc, key);
		if (s->key == key) {
			s->n++;
			return 0;
		}
	}
	if ((kc->used + 1) * 2 > (size_t)1 << kc->bits)
		if (grow(kc) != 0)
			return WISP_ENOMEM;
	*find(kc, key) = (struct keycount_slot){key, 1};
	kc->used++;
	return 0;
}

void keycount_del(struct keycount *kc, uint64_t key)
{
	if (key == 0) {
		if (kc->zeros)
			kc->zeros--;
		return;
	}
	if (!kc->slot)
		return;
	struct keycount_slot *s = find(kc, key);
	if (s->key != key || --s->n)
		return;
	if (--kc->used == 0 && kc->bits > MIN_BITS) {
		drop_table(kc);
		return;
	}
	/* Backward shift: each later slot of the run whose home lies
	 * cyclically outside (hole, it] moves into the hole. */
	size_t mask = ((size_t)1 << kc->bits) - 1;
	size_t hole = (size_t)(s - kc->slot);
	for (size_t i = (hole + 1) & mask; kc->slot[i].key; i = (i + 1) & mask) {
		size_t home = slot_of(kc->slot[i].key, kc->bits);
		if (((i - home) & mask) >= ((i - hole) & mask)) {
			kc->slot[hole] = kc->slot[i];
			hole = i;
		}
	}
	kc->slot[hole] = (struct keycount_slot){0, 0};
}

uint64_t keycount_get(const struct keycount *kc, uint64_t key)
{
	if (key == 0)
		return kc->zeros;
	if (!kc->slot)
		return 0;
	const struct keycount_slot *s = find(kc, key);
	return s->key == key ? s->n : 0;
}

void keycount_free(struct keycount *kc)
{
	wisp_free(kc->slot);
	*kc = (struct keycount)KEYCOUNT_INIT;
}
