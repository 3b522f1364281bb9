/*
 * HTTP/1.1 request heads, for the listeners that speak HTTP (the WebSocket
 * upgrade, the metrics/health/dashboard listener): an incremental parser on
 * Debian's libhttp-parser and a small response writer. It knows nothing of
 * WebSockets or MQTT, and does no I/O.
 *
 * The parser is fed bytes as they arrive, in pieces of any size. It stops
 * at the end of the head (the blank line) and reports how many of the bytes
 * it was given belonged to the head; what follows (a body, WebSocket frames)
 * is the caller's. It keeps copies of the request target and of the headers
 * a server acts on, so the caller need not keep the bytes it fed.
 *
 * Bounds (from the listener's config): the head's total size, request line
 * included, and the number of header lines. Past either the request is
 * refused with the status a client expects (431, or 414 for a request
 * target alone too long); nothing grows past `max_head_bytes` + a fixed
 * size, whatever the input.
 *
 * Repeated headers: list-valued ones (Connection, Upgrade,
 * Sec-WebSocket-Protocol, X-Forwarded-For, Expect) are joined with ", " as RFC 9110
 * 5.3 allows; a repeated single-valued one (Host, Sec-WebSocket-Key,
 * Sec-WebSocket-Version, Authorization, Origin) is a 400.
 *
 * Single-threaded; a parser belongs to one connection.
 */
#ifndef WISP_NET_HTTP_H
#define WISP_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A view into the parser's own storage: valid until http_req_reset() or
 * http_req_free(). Not NUL-terminated; len 0 and ptr "" when absent. */
struct http_str {
	const char *ptr;
	size_t len;
};

/* The headers a server acts on; the others are counted, not kept. */
enum http_hdr {
	HTTP_HDR_HOST,
	HTTP_HDR_UPGRADE,
	HTTP_HDR_CONNECTION,
	HTTP_HDR_WS_KEY,      /* Sec-WebSocket-Key */
	HTTP_HDR_WS_VERSION,  /* Sec-WebSocket-Version */
	HTTP_HDR_WS_PROTOCOL, /* Sec-WebSocket-Protocol */
	HTTP_HDR_AUTHORIZATION,
	HTTP_HDR_FORWARDED_FOR, /* X-Forwarded-For */
	HTTP_HDR_ORIGIN,
	HTTP_HDR_CONTENT_LENGTH,
	HTTP_HDR_EXPECT,
	HTTP_HDR_COUNT
};

struct http_request {
	const char *method; /* "GET", "POST", ...: a static string */
	struct http_str target; /* the request target as sent */
	struct http_str path;   /* its path ("/" for "*" or an absolute URI without one) */
	struct http_str query;  /* after '?', without it */
	uint8_t version_major;
	uint8_t version_minor;
	bool keep_alive;    /* HTTP/1.1 without "Connection: close", or 1.0 with keep-alive */
	bool has_body;      /* a Content-Length > 0 or chunked: the body follows the head */
	uint32_t header_count;
	struct http_str hdr[HTTP_HDR_COUNT];
};

struct http_limits {
	size_t max_head_bytes;  /* request line + headers + blank line */
	uint32_t max_headers;   /* header lines */
};

struct http_req_parser;

/* A parser with room for heads of up to lim->max_head_bytes; NULL when out
 * of memory. The limits are copied. */
struct http_req_parser *http_req_new(const struct http_limits *lim);
void http_req_free(struct http_req_parser *p);
/* Ready for the next request on the same connection (keep-alive). */
void http_req_reset(struct http_req_parser *p);

/*
 * Feeds len bytes. Returns:
 *  > 0  the head is complete; the value is how many of these bytes it used
 *       (the rest belongs to the body or the next protocol); *out is filled
 *       and stays valid until reset/free.
 *  0    all bytes used, the head is not complete yet: feed more.
 *  < 0  WISP_EPROTO (malformed), WISP_ELIMIT (a bound passed); the status to
 *       answer is http_req_status(). Feeding again fails the same way.
 * len 0 returns 0.
 */
ssize_t http_req_feed(struct http_req_parser *p, const void *buf, size_t len,
		      struct http_request *out);

/* The HTTP status for the last failure (400, 414, 431, 501, 505), 0 if none. */
int http_req_status(const struct http_req_parser *p);
/* Why, in words, for a log line ("" if none). */
const char *http_req_error(const struct http_req_parser *p);

/* The name of a header the parser keeps ("Host", ...). */
const char *http_hdr_name(enum http_hdr h);

/* True if the comma-separated list `v` holds `token` (case-insensitive, as
 * for Connection and Upgrade; surrounding whitespace ignored). */
bool http_has_token(struct http_str v, const char *token);
/* The same, matching case exactly: for tokens whose case is significant,
 * such as WebSocket subprotocol names [RFC 6455 11.3.4]. */
bool http_has_exact_token(struct http_str v, const char *token);

/* True when a Host header's value names the loopback interface:
 * "localhost", "[::1]" or an IPv4 literal in 127.0.0.0/8 (four decimal
 * octets), each with an optional ":port" of digits. Any other name, even
 * "127.evil.example" or "localhost.evil.example", may resolve anywhere
 * (DNS rebinding). */
bool http_host_is_loopback(struct http_str host);

/* The standard reason phrase ("Not Found"); "Unknown" for others. */
const char *http_reason(int status);

/*
 * Response heads, written into the caller's buffer: start, any number of
 * headers, end. An overflow is remembered and reported by http_resp_end.
 */
struct http_resp {
	char *buf;
	size_t cap;
	size_t len;
	bool overflow;
};

void http_resp_start(struct http_resp *r, char *buf, size_t cap, int status);
void http_resp_header(struct http_resp *r, const char *name, const char *value);
void http_resp_headerf(struct http_resp *r, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Adds the blank line. The head's length, or WISP_ELIMIT if it did not fit. */
ssize_t http_resp_end(struct http_resp *r);

/*
 * A complete error response: status line, "Connection: close",
 * "Content-Type: text/plain", a body of the reason phrase and a newline,
 * plus any extra header lines (each ending in CRLF; may be NULL).
 * Length, or WISP_ELIMIT.
 */
ssize_t http_error_response(char *buf, size_t cap, int status, const char *extra_headers);

#endif
