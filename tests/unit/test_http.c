/*
 * HTTP request heads (net/http.c): a WebSocket upgrade request fed whole,
 * byte by byte and split at every offset gives the same head and stops
 * exactly at its end; the bounds on bytes and header lines; repeated
 * headers; malformed requests and their statuses; the response writer.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "unit_main.h"
#include "alloc.h"
#include "err.h"
#include "http.h"

static const char upgrade_req[] = "GET /mqtt?x=1 HTTP/1.1\r\n"
				  "Host: broker.example:8080\r\n"
				  "Upgrade: websocket\r\n"
				  "Connection: keep-alive, Upgrade\r\n"
				  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
				  "Sec-WebSocket-Version: 13\r\n"
				  "Sec-WebSocket-Protocol: mqtt\r\n"
				  "X-Empty:\r\n"
				  "Origin: http://example.com\r\n"
				  "\r\n";
/* What follows the head: the first bytes of a WebSocket frame. */
static const char trailer[] = "\x82\x8c";

static bool str_eq(struct http_str s, const char *want)
{
	return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static const struct http_limits default_lim = {.max_head_bytes = 4096, .max_headers = 32};

static void check_upgrade(const struct http_request *r)
{
	CU_ASSERT_STRING_EQUAL(r->method, "GET");
	CU_ASSERT(str_eq(r->target, "/mqtt?x=1"));
	CU_ASSERT(str_eq(r->path, "/mqtt"));
	CU_ASSERT(str_eq(r->query, "x=1"));
	CU_ASSERT_EQUAL(r->version_major, 1);
	CU_ASSERT_EQUAL(r->version_minor, 1);
	CU_ASSERT_EQUAL(r->header_count, 8);
	CU_ASSERT(str_eq(r->hdr[HTTP_HDR_HOST], "broker.example:8080"));
	CU_ASSERT(str_eq(r->hdr[HTTP_HDR_UPGRADE], "websocket"));
	CU_ASSERT(str_eq(r->hdr[HTTP_HDR_CONNECTION], "keep-alive, Upgrade"));
	CU_ASSERT(str_eq(r->hdr[HTTP_HDR_WS_KEY], "dGhlIHNhbXBsZSBub25jZQ=="));
	CU_ASSERT(str_eq(r->hdr[HTTP_HDR_WS_VERSION], "13"));
	CU_ASSERT(str_eq(r->hdr[HTTP_HDR_WS_PROTOCOL], "mqtt"));
	CU_ASSERT(str_eq(r->hdr[HTTP_HDR_ORIGIN], "http://example.com"));
	CU_ASSERT(str_eq(r->hdr[HTTP_HDR_AUTHORIZATION], ""));
	CU_ASSERT(http_has_token(r->hdr[HTTP_HDR_CONNECTION], "upgrade"));
	CU_ASSERT(!r->has_body);
}

/* Feeds `in` in pieces of `step` bytes (the last may be shorter), stopping
 * at the first non-zero result; returns the sum of the bytes used. */
static ssize_t feed_steps(struct http_req_parser *p, const char *in, size_t len, size_t split_at,
			  size_t step, struct http_request *out)
{
	size_t off = 0;
	while (off < len) {
		size_t n = step ? step : len - off;
		if (split_at && off < split_at && off + n > split_at)
			n = split_at - off;
		if (n > len - off)
			n = len - off;
		ssize_t r = http_req_feed(p, in + off, n, out);
		if (r < 0)
			return r;
		if (r > 0)
			return (ssize_t)off + r;
		off += n;
	}
	return 0;
}

static void test_upgrade_whole_split_bytewise(void)
{
	char in[sizeof upgrade_req + sizeof trailer];
	size_t head = sizeof upgrade_req - 1;
	size_t len = head + sizeof trailer - 1;
	memcpy(in, upgrade_req, head);
	memcpy(in + head, trailer, sizeof trailer - 1);

	struct http_req_parser *p = http_req_new(&default_lim);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	struct http_request r;

	CU_ASSERT_EQUAL(feed_steps(p, in, len, 0, 0, &r), (ssize_t)head);
	check_upgrade(&r);

	http_req_reset(p);
	CU_ASSERT_EQUAL(feed_steps(p, in, len, 0, 1, &r), (ssize_t)head);
	check_upgrade(&r);

	for (size_t split = 1; split < len; split++) {
		http_req_reset(p);
		ssize_t got = feed_steps(p, in, len, split, 0, &r);
		CU_ASSERT_EQUAL(got, (ssize_t)head);
		if (got != (ssize_t)head) {
			printf("split at %zu: %zd\n", split, got);
			break;
		}
		check_upgrade(&r);
	}
	/* A finished head takes no more bytes until reset. */
	CU_ASSERT_EQUAL(http_req_feed(p, "x", 1, &r), WISP_EINVAL);
	http_req_free(p);
}

static void test_keep_alive_next_request(void)
{
	static const char two[] = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
				  "GET /metrics HTTP/1.0\r\n\r\n";
	struct http_req_parser *p = http_req_new(&default_lim);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	struct http_request r;
	ssize_t n = http_req_feed(p, two, sizeof two - 1, &r);
	CU_ASSERT_EQUAL(n, 34);
	CU_ASSERT(str_eq(r.path, "/healthz"));
	CU_ASSERT(r.keep_alive);
	http_req_reset(p);
	CU_ASSERT_EQUAL(http_req_feed(p, two + n, sizeof two - 1 - (size_t)n, &r),
			(ssize_t)(sizeof two - 1 - (size_t)n));
	CU_ASSERT(str_eq(r.path, "/metrics"));
	CU_ASSERT_EQUAL(r.version_minor, 0);
	CU_ASSERT(!r.keep_alive);
	CU_ASSERT_EQUAL(r.header_count, 0);
	http_req_free(p);
}

static void test_body_is_callers(void)
{
	static const char post[] = "POST /api/publish HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
	struct http_req_parser *p = http_req_new(&default_lim);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	struct http_request r;
	CU_ASSERT_EQUAL(http_req_feed(p, post, sizeof post - 1, &r), (ssize_t)(sizeof post - 1 - 5));
	CU_ASSERT_STRING_EQUAL(r.method, "POST");
	CU_ASSERT(r.has_body);
	CU_ASSERT(str_eq(r.hdr[HTTP_HDR_CONTENT_LENGTH], "5"));
	/* [RFC 9110 5.5] the whitespace around a field value is not part of it. */
	static const char ows[] = "POST / HTTP/1.1\r\nContent-Length: 5 \r\nHost: h:1 \t\r\n\r\nhello";
	http_req_reset(p);
	CU_ASSERT_EQUAL(http_req_feed(p, ows, sizeof ows - 1, &r), (ssize_t)(sizeof ows - 1 - 5));
	CU_ASSERT(str_eq(r.hdr[HTTP_HDR_CONTENT_LENGTH], "5"));
	CU_ASSERT(str_eq(r.hdr[HTTP_HDR_HOST], "h:1"));
	static const char chunked[] = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\n";
	http_req_reset(p);
	CU_ASSERT_EQUAL(http_req_feed(p, chunked, sizeof chunked - 1, &r), (ssize_t)(sizeof chunked - 1 - 3));
	CU_ASSERT(r.has_body);
	http_req_free(p);
}

static void test_absolute_form_and_star(void)
{
	static const char abs[] = "GET http://h:1/a/b?q HTTP/1.1\r\n\r\n";
	static const char star[] = "OPTIONS * HTTP/1.1\r\n\r\n";
	struct http_req_parser *p = http_req_new(&default_lim);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	struct http_request r;
	CU_ASSERT(http_req_feed(p, abs, sizeof abs - 1, &r) > 0);
	CU_ASSERT(str_eq(r.path, "/a/b"));
	CU_ASSERT(str_eq(r.query, "q"));
	http_req_reset(p);
	CU_ASSERT(http_req_feed(p, star, sizeof star - 1, &r) > 0);
	CU_ASSERT(str_eq(r.path, "/"));
	http_req_free(p);
}

static void test_repeated_headers(void)
{
	static const char joined[] = "GET / HTTP/1.1\r\nConnection: Upgrade\r\nHost: h\r\n"
				     "X-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive\r\n"
				     "X-Forwarded-For: 10.0.0.2\r\n\r\n";
	static const char dup_host[] = "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
	static const char dup_key[] = "GET / HTTP/1.1\r\nsec-websocket-key: a\r\nSEC-WEBSOCKET-KEY: b\r\n\r\n";
	struct http_req_parser *p = http_req_new(&default_lim);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	struct http_request r;
	CU_ASSERT(http_req_feed(p, joined, sizeof joined - 1, &r) > 0);
	CU_ASSERT(str_eq(r.hdr[HTTP_HDR_CONNECTION], "Upgrade, keep-alive"));
	CU_ASSERT(str_eq(r.hdr[HTTP_HDR_FORWARDED_FOR], "10.0.0.1, 10.0.0.2"));
	CU_ASSERT(str_eq(r.hdr[HTTP_HDR_HOST], "h"));
	http_req_reset(p);
	CU_ASSERT_EQUAL(http_req_feed(p, dup_host, sizeof dup_host - 1, &r), WISP_EPROTO);
	CU_ASSERT_EQUAL(http_req_status(p), 400);
	CU_ASSERT_STRING_EQUAL(http_req_error(p), "repeated header");
	http_req_reset(p);
	CU_ASSERT_EQUAL(http_req_feed(p, dup_key, sizeof dup_key - 1, &r), WISP_EPROTO);
	CU_ASSERT_EQUAL(http_req_status(p), 400);
	http_req_free(p);
}

struct bad_case {
	const char *in;
	int status;
	ssize_t ret;
};

static void test_malformed(void)
{
	static const struct bad_case cases[] = {
		{"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400, WISP_EPROTO},
		{"GET / HTTP/1.1\nHo\x01st: a\r\n\r\n", 400, WISP_EPROTO},
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 501, WISP_EPROTO}, /* TLS on a ws port */
		{"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c", 501, WISP_EPROTO},         /* MQTT on a ws port */
		{"GET / HTTP/2.0\r\n\r\n", 505, WISP_EPROTO},
		/* HTTP/0.9 (no version) must not let the request after it through:
		 * found by fuzz_http. */
		{"GET http://h\n\r\nGET / HTTP/1.1\r\n\r\n", 505, WISP_EPROTO},
		{"CONNECT h:1 HTTP/1.1\r\n\r\n", 501, WISP_EPROTO},
		{"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, WISP_EPROTO},
		{"GET /\x7f HTTP/1.1\r\n\r\n", 400, WISP_EPROTO},
		/* [RFC 9112 6.1] "If a Transfer-Encoding header field is present in
		 * a request and the chunked transfer coding is not the final
		 * encoding, the message body length cannot be determined reliably;
		 * the server MUST respond with the 400 (Bad Request) status code
		 * and then close the connection." */
		{"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET /x HTTP/1.1\r\n\r\n", 400, WISP_EPROTO},
		{"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, WISP_EPROTO},
		{"GET / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", 400, WISP_EPROTO},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: x\r\n\r\n", 400, WISP_EPROTO},
		/* [RFC 9112 5.1] "No whitespace is allowed between the field name
		 * and colon ... A server MUST reject" it with 400. */
		{"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, WISP_EPROTO},
		{"GET / HTTP/1.1\r\nContent-Length\t: 0\r\n\r\n", 400, WISP_EPROTO},
		/* [RFC 9112 3.2.4] asterisk-form is for OPTIONS only. */
		{"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, WISP_EPROTO},
	};
	struct http_req_parser *p = http_req_new(&default_lim);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct http_request r;
		http_req_reset(p);
		ssize_t got = http_req_feed(p, cases[i].in, strlen(cases[i].in), &r);
		CU_ASSERT_EQUAL(got, cases[i].ret);
		CU_ASSERT_EQUAL(http_req_status(p), cases[i].status);
		if (got != cases[i].ret || http_req_status(p) != cases[i].status)
			printf("case %zu: %zd status %d (%s)\n", i, got, http_req_status(p), http_req_error(p));
		CU_ASSERT(http_req_error(p)[0] != '\0');
		/* A failed parser stays failed. */
		CU_ASSERT_EQUAL(http_req_feed(p, "\r\n", 2, &r), cases[i].ret);
	}
	http_req_free(p);
}

static void test_bounds(void)
{
	struct http_limits lim = {.max_head_bytes = 64, .max_headers = 2};
	struct http_req_parser *p = http_req_new(&lim);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	struct http_request r;
	char in[256];

	/* Exactly at the byte bound is fine, one more is 431. */
	int n = snprintf(in, sizeof in, "GET / HTTP/1.1\r\nHost: %0*d\r\n\r\n", 64 - 26, 0);
	CU_ASSERT_EQUAL(n, 64);
	CU_ASSERT_EQUAL(http_req_feed(p, in, (size_t)n, &r), 64);
	http_req_reset(p);
	n = snprintf(in, sizeof in, "GET / HTTP/1.1\r\nHost: %0*d\r\n\r\n", 65 - 26, 0);
	CU_ASSERT_EQUAL(feed_steps(p, in, (size_t)n, 0, 7, &r), WISP_ELIMIT);
	CU_ASSERT_EQUAL(http_req_status(p), 431);

	/* A request target that alone fills the bound is 414. */
	http_req_reset(p);
	memset(in, 'a', sizeof in);
	memcpy(in, "GET /", 5);
	CU_ASSERT_EQUAL(feed_steps(p, in, sizeof in, 0, 10, &r), WISP_ELIMIT);
	CU_ASSERT_EQUAL(http_req_status(p), 414);

	/* Two header lines pass, three are too many. */
	http_req_reset(p);
	static const char two[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
	CU_ASSERT(http_req_feed(p, two, sizeof two - 1, &r) > 0);
	http_req_reset(p);
	static const char three[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
	CU_ASSERT_EQUAL(http_req_feed(p, three, sizeof three - 1, &r), WISP_ELIMIT);
	CU_ASSERT_EQUAL(http_req_status(p), 431);
	http_req_free(p);

	/* Joining repeated list headers cannot grow past the arena either. */
	lim = (struct http_limits){.max_head_bytes = 128, .max_headers = 100};
	p = http_req_new(&lim);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	static const char many[] = "GET / HTTP/1.1\r\nConnection: aaaaaaaaaaaaaaaa\r\nOrigin: o\r\n"
				   "Connection: bbbbbbbbbbbbbbbb\r\nHost: h\r\n"
				   "Connection: cccccccccccccccc\r\n\r\n";
	ssize_t got = http_req_feed(p, many, sizeof many - 1, &r);
	CU_ASSERT(got == (ssize_t)(sizeof many - 1) || (got == WISP_ELIMIT && http_req_status(p) == 431));
	if (got > 0)
		CU_ASSERT(str_eq(r.hdr[HTTP_HDR_CONNECTION],
				 "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb, cccccccccccccccc"));
	http_req_free(p);
}

static void test_has_token(void)
{
	struct http_str v = {" keep-alive ,Upgrade,, x ", 25};
	CU_ASSERT(http_has_token(v, "upgrade"));
	CU_ASSERT(http_has_token(v, "keep-alive"));
	CU_ASSERT(http_has_token(v, "x"));
	CU_ASSERT(!http_has_token(v, "keep"));
	CU_ASSERT(!http_has_token(v, ""));
	struct http_str proto = {"mqttv3.1, mqtt", 14};
	CU_ASSERT(http_has_token(proto, "mqtt"));
	CU_ASSERT(!http_has_token((struct http_str){"", 0}, "mqtt"));
	/* [RFC 6455 11.3.4] subprotocol names "MUST ... match case-sensitively" */
	struct http_str upper = {"MQTT, mqttv3.1", 14};
	CU_ASSERT(http_has_token(upper, "mqtt"));
	CU_ASSERT(!http_has_exact_token(upper, "mqtt"));
	CU_ASSERT(http_has_exact_token(upper, "mqttv3.1"));
	CU_ASSERT(http_has_exact_token(proto, "mqtt"));
}

/* A page reached by DNS rebinding sends its own name as Host; only names
 * that cannot be rebound count as loopback. */
static void test_host_is_loopback(void)
{
	static const struct {
		const char *host;
		bool loopback;
	} cases[] = {
		{"127.0.0.1", true},        {"127.0.0.1:8080", true},  {"127.255.3.4:1", true},
		{"localhost", true},        {"LocalHost:80", true},    {"[::1]", true},
		{"[::1]:8080", true},       {"127.evil.example", false}, {"127.0.0.1.evil.example", false},
		{"127.0.0.1:80x", false},   {"127.0.0.1:", false},     {"127.0.0.1:123456", false},
		{"127.0.0", false},         {"127.0.0.1.", false},     {"127.0.0.256", false},
		{"127.0.0.01", false},      {"0127.0.0.1", false},     {"128.0.0.1", false},
		{"localhost.evil", false},  {"localhostx", false},     {"[::1]x", false},
		{"[::1]:", false},          {"[::2]", false},          {"::1", false},
		{"evil.example", false},    {"", false},               {":80", false},
		{"127.0.0.1:80:80", false}, {"1270.0.0.1", false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct http_str h = {cases[i].host, strlen(cases[i].host)};
		if (http_host_is_loopback(h) != cases[i].loopback)
			printf("Host \"%s\": expected %d\n", cases[i].host, cases[i].loopback);
		CU_ASSERT_EQUAL(http_host_is_loopback(h), cases[i].loopback);
	}
}

static void test_response_writer(void)
{
	char buf[256];
	struct http_resp r;
	http_resp_start(&r, buf, sizeof buf, 101);
	http_resp_header(&r, "Upgrade", "websocket");
	http_resp_headerf(&r, "Content-Length", "%d", 0);
	ssize_t n = http_resp_end(&r);
	static const char want[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
				   "Content-Length: 0\r\n\r\n";
	CU_ASSERT_EQUAL(n, (ssize_t)(sizeof want - 1));
	CU_ASSERT(memcmp(buf, want, sizeof want - 1) == 0);

	http_resp_start(&r, buf, 40, 200);
	http_resp_header(&r, "X-Long", "0123456789012345678901234567890123456789");
	CU_ASSERT_EQUAL(http_resp_end(&r), WISP_ELIMIT);

	n = http_error_response(buf, sizeof buf, 431, "Sec-WebSocket-Version: 13\r\n");
	CU_ASSERT(n > 0);
	buf[n] = '\0';
	CU_ASSERT(strncmp(buf, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46) == 0);
	CU_ASSERT(strstr(buf, "Connection: close\r\n") != NULL);
	CU_ASSERT(strstr(buf, "Sec-WebSocket-Version: 13\r\n\r\n") != NULL);
	CU_ASSERT(strstr(buf, "Content-Length: 32\r\n") != NULL);
	CU_ASSERT(strcmp(buf + n - 32, "Request Header Fields Too Large\n") == 0);
	CU_ASSERT_EQUAL(http_error_response(buf, 20, 400, NULL), WISP_ELIMIT);
}

static void test_oom(void)
{
	wisp_mem_fail_after(1, 0);
	CU_ASSERT_PTR_NULL(http_req_new(&default_lim));
	wisp_mem_fail_after(0, 0);
	struct http_limits zero = {0, 0};
	CU_ASSERT_PTR_NULL(http_req_new(&zero));
}

static CU_TestInfo tests[] = {
	{"upgrade request whole, bytewise, split at every offset", test_upgrade_whole_split_bytewise},
	{"keep-alive: the next request after reset", test_keep_alive_next_request},
	{"the body is left to the caller", test_body_is_callers},
	{"absolute-form and asterisk targets", test_absolute_form_and_star},
	{"repeated headers: lists joined, single values refused", test_repeated_headers},
	{"malformed requests and their statuses", test_malformed},
	{"bounds: head bytes (431), target (414), header lines (431)", test_bounds},
	{"comma-separated tokens", test_has_token},
	{"Host names of the loopback interface", test_host_is_loopback},
	{"response writer and error responses", test_response_writer},
	{"out of memory", test_oom},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"http", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void) { return unit_run(suites); }
