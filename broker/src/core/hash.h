/*
 * The one string hash of the broker's tables (topic levels in the trie,
 * a session's filter index): FNV-1a over the bytes with a per-table seed,
 * then murmur3's finaliser, so that the low bits used as a slot index
 * depend on every byte. The seed makes slot order differ between runs and
 * tables; it is no defence against a client crafting collisions, which the
 * per-client caps bound instead. Inline: it is on the publish path.
 */
#ifndef WISP_CORE_HASH_H
#define WISP_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

static inline uint32_t hash_mix32(uint32_t h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

static inline uint32_t hash_bytes(uint32_t seed, const char *s, size_t len)
{
	uint32_t h = 2166136261u ^ seed;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return hash_mix32(h);
}

#endif
