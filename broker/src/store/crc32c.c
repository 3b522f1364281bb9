/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
 * iSCSI, ext4 and SCTP: better error detection than CRC-32 on short
 * records. Slicing by 8 (eight 256-entry tables, 8 KiB) processes eight
 * bytes per step, so verifying a log at load costs about 1-2 GB/s per core.
 * The tables are built once, under pthread_once, so any thread may call.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "record.h"

#define CRC32C_POLY 0x82F63B78u

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1u) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = crc_table[0][i];
		for (int t = 1; t < 8; t++) {
			c = (c >> 8) ^ crc_table[0][c & 0xffu];
			crc_table[t][i] = c;
		}
	}
}

uint32_t store_crc32c(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (len >= 8) {
		/* Explicit little-endian assembly: no alignment or byte-order
		 * assumption about the host. */
		uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
			      (uint32_t)p[3] << 24;
		uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
			      (uint32_t)p[7] << 24;
		lo ^= crc;
		crc = crc_table[7][lo & 0xffu] ^ crc_table[6][(lo >> 8) & 0xffu] ^
		      crc_table[5][(lo >> 16) & 0xffu] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][hi & 0xffu] ^ crc_table[2][(hi >> 8) & 0xffu] ^
		      crc_table[1][(hi >> 16) & 0xffu] ^ crc_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xffu];
	return ~crc;
}
