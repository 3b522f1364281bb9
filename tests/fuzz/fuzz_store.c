/*
 * libFuzzer target for the store loader (also built with replay_main.c as a
 * plain program so gcc builds and CTest can replay the corpus).
 *
 * Input: byte 0 picks how the rest becomes a store file:
 *   0: the rest is the file, verbatim;
 *   1: the rest is a list of records [type][version][len][len bytes], which
 *      are framed with valid CRCs behind a valid log header (so the fuzzer
 *      reaches the record decoders instead of dying on checksums);
 *   2: as 1, then byte 1 and 2 choose a bit to flip and byte 3 how many
 *      bytes to cut off the end (damage in the middle and torn tails).
 * Checks, each abort()ing on failure:
 *  - store_scan as log and as snapshot never reads out of bounds (ASan),
 *    keeps valid_end + tail_bytes == size, and every record it delivers
 *    re-encodes to exactly the bytes it was decoded from;
 *  - the whole loader (store_open + store_load on a scratch directory) never
 *    crashes, gives back every message handle, and leaves a log that a
 *    second load reads without any truncation (the repair is stable) and
 *    with the same records.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "scan.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_FILE (1u << 16)

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_store: %s\n", what);
	abort();
}

struct scan_check {
	const uint8_t *file;
	size_t size;
	uint32_t salt;
};

static int check_record(void *ctx, const struct store_rec *r, size_t off)
{
	struct scan_check *c = ctx;
	static uint8_t buf[FUZZ_MAX_FILE];
	ssize_t n = store_rec_encode(r, c->salt, buf, sizeof buf);
	if (n < 0)
		fail("decoded record does not encode");
	if (off + (size_t)n > c->size || memcmp(buf, c->file + off, (size_t)n) != 0)
		fail("decode -> encode is not the identity");
	return 0;
}

static void check_scan(const uint8_t *file, size_t size, enum store_file_kind kind)
{
	struct scan_check c = {file, size, 0};
	struct store_scan_result res;
	const struct store_scan_ops ops = {check_record, NULL};
	/* The salt is in the header; read it first so check_record can use it. */
	if (size >= STORE_FILE_HDR)
		c.salt = (uint32_t)file[12] | (uint32_t)file[13] << 8 | (uint32_t)file[14] << 16 |
			 (uint32_t)file[15] << 24;
	int rc = store_scan(file, size, kind, &ops, &c, &res);
	if (rc == WISP_EPROTO) {
		if (res.why == NULL)
			fail("header rejected without a reason");
		return;
	}
	if (rc != 0)
		fail("scan failed without a callback error");
	if (res.valid_end > size || res.valid_end + res.tail_bytes != size || res.valid_end < STORE_FILE_HDR)
		fail("scan bounds");
}

/* Mode 1/2: frames the fuzzer's records behind a valid log header. */
static size_t synthesize(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t len = STORE_FILE_HDR;
	store_file_header_encode(STORE_FILE_LOG, 1, 0, out);
	while (n >= 3) {
		uint8_t type = in[0], version = in[1];
		size_t plen = in[2];
		in += 3;
		n -= 3;
		if (plen > n)
			plen = n;
		if (len + STORE_FRAME_HDR + plen > cap)
			break;
		uint8_t *f = out + len;
		f[0] = (uint8_t)plen;
		f[1] = f[2] = f[3] = 0;
		f[4] = type;
		f[5] = version;
		f[6] = f[7] = 0;
		uint32_t h = store_crc32c(0, f, 8), p;
		memcpy(f + STORE_FRAME_HDR, in, plen);
		p = store_crc32c(0, f + STORE_FRAME_HDR, plen);
		for (int i = 0; i < 4; i++) {
			f[8 + i] = (uint8_t)(h >> (8 * i));
			f[12 + i] = (uint8_t)(p >> (8 * i));
		}
		len += STORE_FRAME_HDR + plen;
		in += plen;
		n -= plen;
	}
	return len;
}

/* ---- whole loader on a scratch directory ---- */

static char dir[64];
static char log_path[128];

struct loaded {
	long live;
	uint64_t records;
	uint64_t damaged;
};

static int l_msg_put(void *ctx, const struct store_msg *m, void **h)
{
	struct loaded *l = ctx;
	uint64_t *id = malloc(sizeof *id);
	if (id == NULL)
		return WISP_ENOMEM;
	*id = m->id;
	*h = id;
	l->live++;
	return 0;
}

static void l_msg_release(void *ctx, void *h)
{
	struct loaded *l = ctx;
	l->live--;
	free(h);
}

static int l_queue_add(void *ctx, const struct store_queue *q, void *h)
{
	if (h == NULL || *(uint64_t *)h != q->msg_id)
		fail("queue_add got the wrong message handle");
	return 0;
}

static int l_flight_set(void *ctx, const struct store_flight *f, void *h)
{
	if (f->msg_id == 0 ? h != NULL : (h == NULL || *(uint64_t *)h != f->msg_id))
		fail("flight_set got the wrong message handle");
	return 0;
}

static const struct store_visitor visitor = {
	.msg_put = l_msg_put,
	.msg_release = l_msg_release,
	.queue_add = l_queue_add,
	.flight_set = l_flight_set,
};

static int load_dir(struct store_load_stats *st)
{
	struct store_options o = {.dir = dir, .fsync = STORE_FSYNC_NO};
	struct store *s = NULL;
	struct loaded l = {0};
	char err[512];
	int rc = store_open(&o, &s, err, sizeof err);
	if (rc != 0)
		fail("store_open failed on the scratch directory");
	rc = store_load(s, &visitor, &l, st, err, sizeof err);
	if (l.live != 0)
		fail("message handles not released");
	store_close(s);
	return rc;
}

static void clear_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
}

static void remove_dir(void)
{
	clear_dir();
	rmdir(dir);
}

static void check_loader(const uint8_t *file, size_t size)
{
	struct store_load_stats a, b;

	if (dir[0] == '\0') {
		strcpy(dir, "/tmp/wisp-fuzz-store-XXXXXX");
		if (mkdtemp(dir) == NULL)
			fail("mkdtemp");
		snprintf(log_path, sizeof log_path, "%s/log.0000000000000001", dir);
		atexit(remove_dir);
		log_set_level(LOG_ERROR);
	}
	clear_dir();
	FILE *f = fopen(log_path, "wb");
	if (f == NULL || fwrite(file, 1, size, f) != size)
		fail("cannot write the scratch log");
	fclose(f);
	int rc = load_dir(&a);
	if (rc != 0) {
		if (rc != WISP_EPROTO)
			fail("loader failed with something else than a refusal");
		return;
	}
	rc = load_dir(&b);
	if (rc != 0 || b.truncated_bytes != 0 || b.records != a.records || b.damaged != a.damaged)
		fail("repaired log does not load the same way again");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t file[FUZZ_MAX_FILE];
	size_t len;

	if (size < 1)
		return 0;
	uint8_t mode = data[0] % 3;
	if (mode == 0) {
		len = size - 1 < sizeof file ? size - 1 : sizeof file;
		if (len)
			memcpy(file, data + 1, len);
	} else if (mode == 1) {
		len = synthesize(data + 1, size - 1, file, sizeof file);
	} else {
		if (size < 4)
			return 0;
		len = synthesize(data + 4, size - 4, file, sizeof file);
		size_t bit = ((size_t)data[1] << 8 | data[2]) % (len * 8);
		file[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		len -= data[3] < len ? data[3] : 0;
	}
	check_scan(file, len, STORE_FILE_LOG);
	check_scan(file, len, STORE_FILE_SNAP);
	check_loader(file, len);
	return 0;
}
