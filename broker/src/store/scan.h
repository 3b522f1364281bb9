/*
 * Walking a store file (log or snapshot) held in memory: header check,
 * frame-by-frame verification, decoding, and recovery from damage. Pure and
 * allocation-free, so it is the heart of the loader fuzz target.
 *
 * Recovery rules:
 *  - A frame whose header and payload CRCs hold is decoded and delivered;
 *    an unknown type/version or malformed payload under a sound CRC is
 *    reported as damage and skipped (its length is trustworthy).
 *  - A frame with a sound header but a bad payload CRC is skipped by its
 *    length; any other bad or short frame starts a byte-by-byte search for
 *    the next offset holding a fully valid frame (resynchronisation).
 *  - Damage followed by a valid frame is "middle" damage: reported through
 *    ops->damage with offset and length, the records after it are kept.
 *  - Everything after the last valid frame is the "tail": not reported
 *    through ops->damage; out->tail_bytes says how much, out->valid_end
 *    where the caller may truncate.
 */
#ifndef WISP_STORE_SCAN_H
#define WISP_STORE_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

struct store_scan_ops {
	/* A decoded record at file offset `off`; views into the buffer. A
	 * non-zero return stops the scan and is returned by store_scan. */
	int (*record)(void *ctx, const struct store_rec *r, size_t off);
	/* Skipped middle damage [off, off+len). Optional. */
	void (*damage)(void *ctx, size_t off, size_t len, const char *why);
};

struct store_scan_result {
	uint64_t gen;          /* from the file header */
	uint32_t salt;
	size_t records;        /* records delivered */
	size_t damaged;        /* middle damage regions (and undecodable frames) */
	size_t damaged_bytes;
	size_t valid_end;      /* end offset of the last frame with sound CRCs */
	size_t tail_bytes;     /* bytes after valid_end */
	size_t bad_offset;     /* on WISP_EPROTO: offset of the bad header field */
	const char *why;       /* on WISP_EPROTO: what is wrong */
};

/* 0; WISP_EPROTO when the file header is unusable (out->why, out->bad_offset);
 * or the record callback's non-zero value. */
int store_scan(const uint8_t *buf, size_t len, enum store_file_kind kind,
	       const struct store_scan_ops *ops, void *ctx, struct store_scan_result *out);

#endif
