/*
 * File walking and damage recovery (rules in scan.h). Cost: one CRC pass
 * over the file; a resync after damage tests every offset with cheap
 * filters (type, reserved bytes, length bound) before the 8-byte header CRC,
 * so scanning garbage stays linear.
 */
#include <string.h>

#include "err.h"
#include "scan.h"

static size_t resync(const uint8_t *buf, size_t len, size_t from, uint32_t salt)
{
	size_t total;
	for (size_t p = from; p + STORE_FRAME_HDR <= len; p++) {
		if (store_frame_check(buf + p, len - p, salt, &total) == STORE_FRAME_OK)
			return p;
	}
	return len;
}

static const char *frame_why(enum store_frame_status st)
{
	switch (st) {
	case STORE_FRAME_BAD_CRC:
		return "record checksum mismatch";
	case STORE_FRAME_SHORT:
		return "truncated record";
	default:
		return "bad record header";
	}
}

int store_scan(const uint8_t *buf, size_t len, enum store_file_kind kind,
	       const struct store_scan_ops *ops, void *ctx, struct store_scan_result *out)
{
	size_t off = STORE_FILE_HDR, damage_at = 0, total = 0;
	const char *damage_why = NULL;
	int rc;

	memset(out, 0, sizeof *out);
	rc = store_file_header_check(buf, len, kind, &out->gen, &out->salt, &out->why);
	if (rc != 0)
		return rc;
	out->valid_end = STORE_FILE_HDR;
	while (off < len) {
		enum store_frame_status st = store_frame_check(buf + off, len - off, out->salt, &total);
		if (st != STORE_FRAME_OK) {
			if (damage_why == NULL) {
				damage_at = off;
				damage_why = frame_why(st);
			}
			off = st == STORE_FRAME_BAD_CRC ? off + total : resync(buf, len, off + 1, out->salt);
			continue;
		}
		if (damage_why != NULL) {
			out->damaged++;
			out->damaged_bytes += off - damage_at;
			if (ops->damage)
				ops->damage(ctx, damage_at, off - damage_at, damage_why);
			damage_why = NULL;
		}
		struct store_rec rec;
		rc = store_rec_decode(buf[off + 4], buf[off + 5], buf + off + STORE_FRAME_HDR,
				      total - STORE_FRAME_HDR, &rec);
		if (rc != 0) {
			out->damaged++;
			out->damaged_bytes += total;
			if (ops->damage)
				ops->damage(ctx, off, total,
					    rc == WISP_ENOENT ? "unsupported record type or version"
							      : "malformed record");
		} else {
			out->records++;
			if (ops->record && (rc = ops->record(ctx, &rec, off)) != 0)
				return rc;
		}
		off += total;
		out->valid_end = off;
	}
	out->tail_bytes = len - out->valid_end;
	return 0;
}
