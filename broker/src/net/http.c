/*
 * Request heads on libhttp-parser (see http.h). http-parser tokenises and
 * validates the syntax; this file bounds it (bytes, header lines), keeps
 * the target and the headers of enum http_hdr in one arena of
 * max_head_bytes, and maps failures to a status. Cost: one allocation per
 * parser (its struct and the arena), nothing per byte beyond http-parser's
 * own state machine and the copies of the kept values.
 */
#include "http.h"

#include <http_parser.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "err.h"

/* Long enough for every name in hdr_names; longer names are not ours. */
#define HTTP_FIELD_MAX 32

static const char *const hdr_names[HTTP_HDR_COUNT] = {
	[HTTP_HDR_HOST] = "Host",
	[HTTP_HDR_UPGRADE] = "Upgrade",
	[HTTP_HDR_CONNECTION] = "Connection",
	[HTTP_HDR_WS_KEY] = "Sec-WebSocket-Key",
	[HTTP_HDR_WS_VERSION] = "Sec-WebSocket-Version",
	[HTTP_HDR_WS_PROTOCOL] = "Sec-WebSocket-Protocol",
	[HTTP_HDR_AUTHORIZATION] = "Authorization",
	[HTTP_HDR_FORWARDED_FOR] = "X-Forwarded-For",
	[HTTP_HDR_ORIGIN] = "Origin",
	[HTTP_HDR_CONTENT_LENGTH] = "Content-Length",
	[HTTP_HDR_EXPECT] = "Expect",
};

/* RFC 9110 5.3: only list-valued fields may be repeated and joined. */
static bool hdr_is_list(int h)
{
	return h == HTTP_HDR_UPGRADE || h == HTTP_HDR_CONNECTION || h == HTTP_HDR_WS_PROTOCOL ||
	       h == HTTP_HDR_FORWARDED_FOR || h == HTTP_HDR_EXPECT;
}

struct span {
	size_t off;
	size_t len;
	bool seen;
};

struct http_req_parser {
	http_parser hp;
	struct http_limits lim;
	size_t head_bytes; /* fed to http-parser so far */
	uint32_t headers;
	int status; /* of the failure, 0 while fine */
	const char *error;
	bool done;
	/* Bounds passed, reported at the end of the head: http-parser calls
	 * back lazily (a name or value cut by the end of a piece is reported
	 * at once, a whole one when it ends), so a check made in a callback
	 * could see a syntax error first or not depending on where the pieces
	 * end. A malformed head is then a 400 however it arrives. */
	bool over_headers;
	bool over_arena;
	bool in_value; /* the last callback was a header value */
	bool in_url;   /* still in the request target (for 414) */
	char field[HTTP_FIELD_MAX];
	size_t field_len; /* > HTTP_FIELD_MAX: a name that is none of ours */
	int cur;          /* enum http_hdr the value goes to, -1 for none */
	struct span target;
	struct span hdr[HTTP_HDR_COUNT];
	size_t used;
	char arena[];
};

static int fail(struct http_req_parser *p, int status, const char *why)
{
	if (p->status == 0) {
		p->status = status;
		p->error = why;
	}
	return 1; /* http-parser stops on a non-zero callback return */
}

/* Appends to the arena at its tail; the span being built must end there. */
static int arena_append(struct http_req_parser *p, struct span *s, const char *at, size_t len)
{
	if (p->over_arena || len > p->lim.max_head_bytes - p->used) {
		p->over_arena = true;
		return 0;
	}
	memcpy(p->arena + p->used, at, len);
	p->used += len;
	s->len += len;
	return 0;
}

static int on_message_begin(http_parser *hp)
{
	struct http_req_parser *p = hp->data;
	p->in_url = true;
	return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
	struct http_req_parser *p = hp->data;
	if (!p->target.seen) {
		p->target.seen = true;
		p->target.off = p->used;
	}
	return arena_append(p, &p->target, at, len);
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
	struct http_req_parser *p = hp->data;
	p->in_url = false;
	/* [RFC 9112 5.1] "A server MUST reject, with a response status code of
	 * 400 (Bad Request), any received request message that contains
	 * whitespace between a header field name and colon": http-parser
	 * passes "Host : x" with the space in the name. */
	if (memchr(at, ' ', len) || memchr(at, '\t', len))
		return fail(p, 400, "whitespace in a header name");
	if (p->in_value || p->headers == 0) {
		/* A new header line. */
		p->in_value = false;
		p->field_len = 0;
		p->cur = -1;
		/* Checked when the value begins: http-parser reports a name cut
		 * by the end of a piece before it has seen the rest of the line,
		 * and the verdict must not depend on where pieces end. */
		p->headers++;
	}
	if (p->field_len + len <= HTTP_FIELD_MAX)
		memcpy(p->field + p->field_len, at, len);
	p->field_len += len;
	return 0;
}

/* The first piece of a header's value: which of ours is it, and may it be
 * (re)started here? */
static int value_begin(struct http_req_parser *p)
{
	p->cur = -1;
	if (p->headers > p->lim.max_headers)
		p->over_headers = true;
	if (p->field_len > HTTP_FIELD_MAX)
		return 0;
	for (int h = 0; h < HTTP_HDR_COUNT; h++) {
		if (strlen(hdr_names[h]) == p->field_len &&
		    strncasecmp(hdr_names[h], p->field, p->field_len) == 0) {
			p->cur = h;
			break;
		}
	}
	if (p->cur < 0)
		return 0;
	struct span *s = &p->hdr[p->cur];
	if (!s->seen) {
		s->seen = true;
		s->off = p->used;
		s->len = 0;
		return 0;
	}
	if (!hdr_is_list(p->cur))
		return fail(p, 400, "repeated header");
	/* Join with ", ": move the earlier value to the tail unless it is there. */
	if (s->off + s->len != p->used) {
		size_t old = s->off;
		if (p->over_arena || s->len > p->lim.max_head_bytes - p->used) {
			p->over_arena = true;
			return 0;
		}
		memcpy(p->arena + p->used, p->arena + old, s->len);
		s->off = p->used;
		p->used += s->len;
	}
	return arena_append(p, s, ", ", 2);
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
	struct http_req_parser *p = hp->data;
	if (!p->in_value) {
		p->in_value = true;
		if (value_begin(p))
			return 1;
	}
	if (p->cur < 0)
		return 0;
	return arena_append(p, &p->hdr[p->cur], at, len);
}

static int on_headers_complete(http_parser *hp)
{
	struct http_req_parser *p = hp->data;
	/* Not fail()'s 1: here 1 and 2 mean "no body", only others stop. */
	if (p->headers > p->lim.max_headers || p->over_headers)
		return fail(p, 431, "too many header lines"), -1;
	if (p->over_arena)
		return fail(p, 431, "request head too large"), -1;
	if (hp->http_major != 1)
		return fail(p, 505, "HTTP version not supported"), -1;
	/* [RFC 9112 6.1] a request whose final coding is not chunked has no
	 * length a server can know: 400, then close. http-parser would read
	 * such a body to the end of the connection, but only after this
	 * callback, and the pause below stops it first. */
	if (hp->uses_transfer_encoding && !(hp->flags & F_CHUNKED))
		return fail(p, 400, "Transfer-Encoding does not end in chunked"), -1;
	p->done = true;
	/* Stop here: whatever follows the head is the caller's. */
	http_parser_pause(hp, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
};

struct http_req_parser *http_req_new(const struct http_limits *lim)
{
	if (lim->max_head_bytes == 0 || lim->max_head_bytes > SIZE_MAX / 2)
		return NULL;
	struct http_req_parser *p = wisp_malloc(sizeof *p + lim->max_head_bytes);
	if (p == NULL)
		return NULL;
	p->lim = *lim;
	http_req_reset(p);
	return p;
}

void http_req_free(struct http_req_parser *p) { wisp_free(p); }

void http_req_reset(struct http_req_parser *p)
{
	size_t off = offsetof(struct http_req_parser, head_bytes);
	memset((char *)p + off, 0, sizeof *p - off);
	p->cur = -1;
	http_parser_init(&p->hp, HTTP_REQUEST);
	p->hp.data = p;
}

static struct http_str view(const struct http_req_parser *p, const struct span *s)
{
	if (!s->seen)
		return (struct http_str){"", 0};
	return (struct http_str){p->arena + s->off, s->len};
}

/* [RFC 9110 5.5] a field value excludes the whitespace around it;
 * http-parser drops the leading part, not the trailing ("5 "). */
static struct http_str trim_ows(struct http_str v)
{
	while (v.len && (v.ptr[v.len - 1] == ' ' || v.ptr[v.len - 1] == '\t'))
		v.len--;
	return v;
}

/* Fills out from the finished head; 0 or a failure (target unusable). */
static int finish(struct http_req_parser *p, struct http_request *out)
{
	memset(out, 0, sizeof *out);
	out->method = http_method_str((enum http_method)p->hp.method);
	out->version_major = (uint8_t)p->hp.http_major;
	out->version_minor = (uint8_t)p->hp.http_minor;
	out->header_count = p->headers;
	for (int h = 0; h < HTTP_HDR_COUNT; h++)
		out->hdr[h] = trim_ows(view(p, &p->hdr[h]));
	out->target = view(p, &p->target);

	if (p->hp.method == HTTP_CONNECT) {
		fail(p, 501, "CONNECT not supported");
		return WISP_EPROTO;
	}
	out->path = (struct http_str){"/", 1};
	out->query = (struct http_str){"", 0};
	bool asterisk = out->target.len == 1 && out->target.ptr[0] == '*';
	/* [RFC 9112 3.2.4] "The asterisk-form of request-target is only used
	 * for a server-wide OPTIONS request". */
	if (asterisk && p->hp.method != HTTP_OPTIONS) {
		fail(p, 400, "asterisk-form target for a method other than OPTIONS");
		return WISP_EPROTO;
	}
	if (!asterisk) {
		struct http_parser_url u;
		http_parser_url_init(&u);
		if (http_parser_parse_url(out->target.ptr, out->target.len, 0, &u) != 0) {
			fail(p, 400, "bad request target");
			return WISP_EPROTO;
		}
		if (u.field_set & (1u << UF_PATH))
			out->path = (struct http_str){out->target.ptr + u.field_data[UF_PATH].off,
						      u.field_data[UF_PATH].len};
		if (u.field_set & (1u << UF_QUERY))
			out->query = (struct http_str){out->target.ptr + u.field_data[UF_QUERY].off,
						       u.field_data[UF_QUERY].len};
	}
	out->keep_alive = http_should_keep_alive(&p->hp) != 0;
	out->has_body = (p->hp.flags & F_CHUNKED) ||
			(p->hp.content_length > 0 && p->hp.content_length != ULLONG_MAX);
	return 0;
}

static int status_of(enum http_errno e)
{
	switch (e) {
	case HPE_INVALID_METHOD:
		return 501;
	case HPE_HEADER_OVERFLOW:
		return 431;
	case HPE_INVALID_VERSION:
		return 505;
	default:
		return 400;
	}
}

ssize_t http_req_feed(struct http_req_parser *p, const void *buf, size_t len,
		      struct http_request *out)
{
	if (p->status)
		return p->status == 400 || p->status == 501 || p->status == 505 ? WISP_EPROTO : WISP_ELIMIT;
	if (p->done)
		return WISP_EINVAL;
	if (len == 0)
		return 0;
	/* Never hand http-parser more than the head may still hold: a head
	 * that has not ended by then is too large, whatever follows. */
	size_t room = p->lim.max_head_bytes - p->head_bytes;
	size_t n = len < room ? len : room;
	size_t used = http_parser_execute(&p->hp, &settings, buf, n);
	enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);

	if (p->done && e == HPE_PAUSED && p->status == 0) {
		/* Paused in on_headers_complete, http-parser reports the offset
		 * of the head's final LF, not past it. */
		used++;
		p->head_bytes += used;
		if (finish(p, out) != 0)
			return WISP_EPROTO;
		return (ssize_t)used;
	}
	if (p->status == 0 && e != HPE_OK)
		fail(p, status_of(e), http_errno_description(e));
	if (p->status == 0 && used == n) {
		p->head_bytes += used;
		if (p->head_bytes < p->lim.max_head_bytes)
			return 0;
		fail(p, p->in_url ? 414 : 431,
		     p->in_url ? "request target too long" : "request head too large");
	}
	if (p->status == 0)
		fail(p, 400, "malformed request");
	return p->status == 431 || p->status == 414 ? WISP_ELIMIT : WISP_EPROTO;
}

int http_req_status(const struct http_req_parser *p) { return p->status; }

const char *http_req_error(const struct http_req_parser *p) { return p->error ? p->error : ""; }

const char *http_hdr_name(enum http_hdr h)
{
	return (unsigned)h < HTTP_HDR_COUNT ? hdr_names[h] : "";
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static bool has_token(struct http_str v, const char *token, bool exact)
{
	size_t tlen = strlen(token);
	size_t i = 0;
	while (i < v.len) {
		while (i < v.len && (is_ows(v.ptr[i]) || v.ptr[i] == ','))
			i++;
		size_t start = i;
		while (i < v.len && v.ptr[i] != ',')
			i++;
		size_t end = i;
		while (end > start && is_ows(v.ptr[end - 1]))
			end--;
		if (end - start == tlen &&
		    (exact ? memcmp(v.ptr + start, token, tlen) : strncasecmp(v.ptr + start, token, tlen)) == 0)
			return true;
	}
	return false;
}

bool http_has_token(struct http_str v, const char *token) { return has_token(v, token, false); }

bool http_has_exact_token(struct http_str v, const char *token) { return has_token(v, token, true); }

/* An IPv4 literal in 127.0.0.0/8: four decimal octets, each 0..255 without
 * a leading zero (which some resolvers read as octal). */
static bool is_ipv4_loopback(const char *s, size_t n)
{
	size_t i = 0;
	for (int octet = 0; octet < 4; octet++) {
		if (octet && (i == n || s[i++] != '.'))
			return false;
		size_t start = i;
		unsigned v = 0;
		while (i < n && i - start < 3 && s[i] >= '0' && s[i] <= '9')
			v = v * 10 + (unsigned)(s[i++] - '0');
		if (i == start || v > 255 || (i - start > 1 && s[start] == '0') || (octet == 0 && v != 127))
			return false;
	}
	return i == n;
}

bool http_host_is_loopback(struct http_str host)
{
	const char *s = host.ptr;
	size_t n = host.len, name = n;
	/* The port, if any, is the digits after the last ':' outside brackets. */
	const char *colon = NULL;
	for (size_t i = n; i > 0 && s[i - 1] != ']'; i--)
		if (s[i - 1] == ':') {
			colon = s + i - 1;
			break;
		}
	if (colon) {
		name = (size_t)(colon - s);
		size_t digits = n - name - 1;
		if (digits == 0 || digits > 5)
			return false;
		for (size_t i = name + 1; i < n; i++)
			if (s[i] < '0' || s[i] > '9')
				return false;
	}
	return (name == 9 && strncasecmp(s, "localhost", 9) == 0) || (name == 5 && memcmp(s, "[::1]", 5) == 0) ||
	       is_ipv4_loopback(s, name);
}

const char *http_reason(int status)
{
	switch (status) {
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

static void resp_printf(struct http_resp *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void resp_vprintf(struct http_resp *r, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void resp_vprintf(struct http_resp *r, const char *fmt, va_list ap)
{
	if (r->overflow)
		return;
	size_t room = r->cap - r->len;
	int n = vsnprintf(r->buf + r->len, room, fmt, ap);
	if (n < 0 || (size_t)n >= room) {
		r->overflow = true;
		return;
	}
	r->len += (size_t)n;
}

static void resp_printf(struct http_resp *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	resp_vprintf(r, fmt, ap);
	va_end(ap);
}

void http_resp_start(struct http_resp *r, char *buf, size_t cap, int status)
{
	r->buf = buf;
	r->cap = cap;
	r->len = 0;
	r->overflow = cap == 0;
	resp_printf(r, "HTTP/1.1 %d %s\r\n", status, http_reason(status));
}

void http_resp_header(struct http_resp *r, const char *name, const char *value)
{
	resp_printf(r, "%s: %s\r\n", name, value);
}

void http_resp_headerf(struct http_resp *r, const char *name, const char *fmt, ...)
{
	va_list ap;
	resp_printf(r, "%s: ", name);
	va_start(ap, fmt);
	resp_vprintf(r, fmt, ap);
	va_end(ap);
	resp_printf(r, "\r\n");
}

ssize_t http_resp_end(struct http_resp *r)
{
	resp_printf(r, "\r\n");
	return r->overflow ? WISP_ELIMIT : (ssize_t)r->len;
}

ssize_t http_error_response(char *buf, size_t cap, int status, const char *extra_headers)
{
	struct http_resp r;
	const char *reason = http_reason(status);
	http_resp_start(&r, buf, cap, status);
	http_resp_header(&r, "Connection", "close");
	http_resp_header(&r, "Content-Type", "text/plain");
	http_resp_headerf(&r, "Content-Length", "%zu", strlen(reason) + 1);
	if (extra_headers)
		resp_printf(&r, "%s", extra_headers);
	resp_printf(&r, "\r\n%s\n", reason);
	return r.overflow ? WISP_ELIMIT : (ssize_t)r.len;
}
