/*
 * Fuzz target: the HTTP request-head parser (net/http.c).
 *
 * Input: byte 0 picks the piece size (1..64, or 0: whole), byte 1 the
 * limits (head bytes 16..2063, header lines 1..8 or unbounded-ish); the
 * rest is the request. It is fed whole and then in pieces: both must give
 * the same verdict (bytes used, status) and, for a head, the same fields;
 * every view lies inside the parser's own storage bounds and the head never
 * exceeds max_head_bytes. Also checks http_has_token on every kept header
 * and the response writer with the parsed path.
 *
 * Built with libFuzzer (WISP_BUILD_FUZZ) and as a replay program over
 * tests/fuzz/corpus/http/ (seeds: make_ws_seeds.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "err.h"
#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "fuzz_http: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                        \
		}                                                                       \
	} while (0)

struct verdict {
	ssize_t used;
	int status;
	struct http_request req;
};

static void feed(struct http_req_parser *p, const uint8_t *in, size_t len, size_t piece, struct verdict *v)
{
	size_t off = 0;
	v->used = 0;
	while (off < len) {
		size_t n = piece && piece < len - off ? piece : len - off;
		ssize_t r = http_req_feed(p, in + off, n, &v->req);
		if (r != 0) {
			v->used = r > 0 ? (ssize_t)off + r : r;
			CHECK(r < 0 || (size_t)r <= n);
			break;
		}
		off += n;
	}
	v->status = http_req_status(p);
}

static int str_cmp(struct http_str a, struct http_str b)
{
	return a.len != b.len || (a.len && memcmp(a.ptr, b.ptr, a.len) != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t piece = data[0] % 65;
	struct http_limits lim = {.max_head_bytes = 16 + (size_t)(data[1] & 0x7f) * 16,
				  .max_headers = data[1] & 0x80 ? 1u + (data[1] & 7u) : 1000u};
	const uint8_t *in = data + 2;
	size_t len = size - 2;

	struct http_req_parser *a = http_req_new(&lim), *b = http_req_new(&lim);
	if (!a || !b) {
		http_req_free(a);
		http_req_free(b);
		return 0;
	}
	struct verdict whole, pieces;
	feed(a, in, len, 0, &whole);
	feed(b, in, len, piece ? piece : 1, &pieces);
	CHECK(whole.used == pieces.used);
	CHECK(whole.status == pieces.status);
	CHECK((whole.used < 0) == (whole.status != 0));
	if (whole.used > 0) {
		CHECK((size_t)whole.used <= lim.max_head_bytes);
		CHECK(strcmp(whole.req.method, pieces.req.method) == 0);
		CHECK(!str_cmp(whole.req.target, pieces.req.target));
		CHECK(!str_cmp(whole.req.path, pieces.req.path));
		CHECK(!str_cmp(whole.req.query, pieces.req.query));
		CHECK(whole.req.header_count == pieces.req.header_count);
		CHECK(whole.req.header_count <= lim.max_headers);
		for (int h = 0; h < HTTP_HDR_COUNT; h++) {
			CHECK(!str_cmp(whole.req.hdr[h], pieces.req.hdr[h]));
			CHECK(whole.req.hdr[h].len <= lim.max_head_bytes);
			(void)http_has_token(whole.req.hdr[h], "upgrade");
		}
		char buf[256];
		struct http_resp r;
		http_resp_start(&r, buf, sizeof buf, 404);
		http_resp_headerf(&r, "X-Path", "%.*s", (int)whole.req.path.len, whole.req.path.ptr);
		ssize_t n = http_resp_end(&r);
		CHECK(n == WISP_ELIMIT || (n > 0 && (size_t)n < sizeof buf));
		/* A finished head takes no more until reset; then it parses again. */
		CHECK(http_req_feed(a, "x", 1, &whole.req) == WISP_EINVAL);
		http_req_reset(a);
		struct verdict again;
		feed(a, in, len, 0, &again);
		CHECK(again.used == whole.used);
	} else if (whole.used < 0) {
		CHECK(whole.status >= 400 && whole.status <= 505);
		CHECK(http_req_error(a)[0] != '\0');
		CHECK(http_req_feed(a, "\r\n", 2, &whole.req) == whole.used);
	}
	http_req_free(a);
	http_req_free(b);
	return 0;
}
