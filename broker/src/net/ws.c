/*
 * The WebSocket transport (see ws.h for the behaviour and the cost). This
 * file holds three state machines, each small:
 * - the handshake: inner handshake, request head, 101 response;
 * - frames in: the inner transport reads into the caller's own buffer and
 *   the frames are parsed where they landed. Payload bytes of data frames
 *   are unmasked and moved down over the frame headers that preceded them
 *   in one pass, 32 bytes at a time, so the caller sees the byte stream
 *   without a copy into a buffer of ours: data never moves further than
 *   the headers behind it, so the output always fits where the input was.
 *   A header cut by a read waits in `hin` (at most 14 bytes), a control
 *   frame's payload in `cin`;
 * - frames out: `cout` (one control frame), then the header of the data
 *   frame under way (`hdr`), then `out_left` bytes of the caller's payload.
 *   That order is also the order of every offering to the inner transport,
 *   so what it did not accept is always a suffix of [cout][hdr][payload]
 *   and is offered again first (the retry rule of ws.h).
 *
 * Why not libwslay here: its frame API parses inside a 4 KiB buffer of
 * its own, filled through a recv callback, and unmasks byte by byte there,
 * so every payload byte was read into it, unmasked, then copied out again
 * (~8% of the broker's CPU in perf over ws at pairs QoS 1); its event API
 * adds a message buffer on top. The send side never used it:
 * wslay_frame_send reports progress per piece and cannot put a header and
 * the caller's buffers into one writev. The fuzz target keeps wslay as the
 * reference parser that this one is checked against.
 */
#include "ws.h"

#include <arpa/inet.h>
#include <limits.h>
#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "alloc.h"
#include "err.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_CTRL_MAX 125 /* [RFC 6455 5.5] */
/* Caller pieces per frame: outq offers at most 256 per writev. */
#define WS_IOV_MAX 256
/* The longest frame header: 2 bytes, a 64-bit length, a mask key. */
#define WS_HEADER_MAX 14
/* Reads of the request head: a typical head fits in one. */
#define WS_HEAD_CHUNK 2048
#define WS_RESP_MAX 320

/* Server: INNER, HEAD (request), RESPOND (101), OPEN. Client: INNER,
 * RESPOND (the request going out), HEAD (the 101 coming in), OPEN. */
enum ws_state { WS_INNER, WS_HEAD, WS_RESPOND, WS_OPEN, WS_FAILED };

enum {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xA,
};

enum {
	WS_CLOSE_NORMAL = 1000,
	WS_CLOSE_PROTOCOL = 1002,
	WS_CLOSE_UNSUPPORTED = 1003,
	WS_CLOSE_NO_STATUS = 1005,
	WS_CLOSE_TOO_BIG = 1009,
};

struct ws_transport {
	struct transport base;
	struct transport *inner;
	struct ws_opts opts;
	enum ws_state state;
	int fail_rc;
	bool client;       /* the client side (load generators, tests) */
	bool inner_failed; /* last_error is the inner transport's */
	bool inner_ready;  /* the inner handshake (TLS) is done */

	/* Handshake only. */
	struct http_req_parser *http;
	char *resp;
	size_t resp_len, resp_off;
	uint8_t *early; /* bytes after the request head, for the frame parser */
	size_t early_len, early_off;

	/* Frames in. */
	uint8_t hin[WS_HEADER_MAX]; /* the frame header being read */
	uint8_t hin_len;
	uint8_t key[4];        /* the mask key, turned so key[0] unmasks the next byte */
	bool masked;
	bool in_frame;         /* the header is read; frame_left payload bytes to come */
	bool in_message;       /* a fragmented binary message is open */
	bool fin;
	uint8_t op;
	uint64_t frame_left;
	uint8_t cin_len;
	uint8_t cin[WS_CTRL_MAX];

	/* Frames out. */
	uint8_t cout[6 + WS_CTRL_MAX];
	uint8_t cout_len, cout_off;
	bool cout_offered; /* part of an offering: frozen until written */
	bool cout_is_close;
	bool close_sent, close_received;
	uint8_t hdr[14];
	uint8_t hdr_len, hdr_off;
	uint64_t out_left;

	/* AF_UNSPEC unless a trusted proxy said; sockaddr_in6 holds an IPv4
	 * sockaddr_in too, in 28 bytes instead of sockaddr_storage's 128. */
	struct sockaddr_in6 forwarded;
	char error[112];
};

static struct ws_stats stats;

const struct ws_stats *ws_stats_get(void) { return &stats; }

static void set_error(struct ws_transport *ws, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(struct ws_transport *ws, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ws->error, sizeof ws->error, fmt, ap);
	va_end(ap);
}

/* snprintf at buf + *n, cap in all: false (and buf cut, terminated) once
 * it does not fit. */
static bool append(char *buf, size_t cap, size_t *n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static bool append(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
	if (*n >= cap)
		return false;
	va_list ap;
	va_start(ap, fmt);
	int w = vsnprintf(buf + *n, cap - *n, fmt, ap);
	va_end(ap);
	if (w < 0 || (size_t)w >= cap - *n) {
		*n = cap;
		return false;
	}
	*n += (size_t)w;
	return true;
}

/* ---- frames out ---- */

/* A client's frames are masked: with an all-zero key, so the payload goes
 * out unchanged and uncopied (see ws_client_transport_new). */
static uint8_t frame_header(uint8_t out[14], uint8_t opcode, uint64_t len, bool masked)
{
	uint8_t n;
	out[0] = (uint8_t)(0x80u | opcode); /* FIN: every frame of ours is whole */
	if (len < 126) {
		out[1] = (uint8_t)len;
		n = 2;
	} else if (len <= 0xffffu) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		n = 4;
	} else {
		out[1] = 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		n = 10;
	}
	if (!masked)
		return n;
	out[1] |= 0x80u;
	memset(out + n, 0, 4);
	return (uint8_t)(n + 4);
}

static bool data_owed(const struct ws_transport *ws) { return ws->hdr_off < ws->hdr_len || ws->out_left; }

/* Queues a control frame unless one that cannot be replaced is queued: a
 * frame already offered, or a close (nothing follows a close). */
static bool queue_control(struct ws_transport *ws, uint8_t opcode, const uint8_t *payload, size_t len)
{
	if (ws->close_sent || ws->cout_is_close || (ws->cout_offered && ws->cout_off < ws->cout_len))
		return false;
	uint8_t h = frame_header(ws->cout, opcode, len, ws->client);
	memcpy(ws->cout + h, payload, len);
	ws->cout_len = (uint8_t)(h + len);
	ws->cout_off = 0;
	ws->cout_offered = false;
	ws->cout_is_close = opcode == WS_OP_CLOSE;
	return true;
}

static void queue_close(struct ws_transport *ws, uint16_t code)
{
	uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
	queue_control(ws, WS_OP_CLOSE, p, code == WS_CLOSE_NO_STATUS ? 0 : 2);
}

static void control_written(struct ws_transport *ws, size_t n)
{
	ws->cout_off = (uint8_t)(ws->cout_off + n);
	if (ws->cout_off < ws->cout_len)
		return;
	if (ws->cout_is_close)
		ws->close_sent = true;
	ws->cout_len = ws->cout_off = 0;
	ws->cout_offered = false;
	ws->cout_is_close = false;
}

/* Writes the queued control frame if no data frame is under way; best
 * effort: what the socket does not take waits for the next writev. */
static void flush_control(struct ws_transport *ws)
{
	if (ws->cout_off >= ws->cout_len || data_owed(ws))
		return;
	for (int i = 0; i < 4 && ws->cout_off < ws->cout_len; i++) {
		struct iovec v = {ws->cout + ws->cout_off, (size_t)(ws->cout_len - ws->cout_off)};
		ws->cout_offered = true;
		ssize_t w = transport_writev(ws->inner, &v, 1);
		if (w <= 0)
			return;
		control_written(ws, (size_t)w);
		if (ws->inner->want)
			return;
	}
}

/* The size of the message at the front of iov when frames follow
 * messages, else (or when it cannot tell) all of `total`. */
static size_t first_message(const struct ws_transport *ws, const struct iovec *iov, int iovcnt, size_t total)
{
	if (!ws->opts.frame_per_message)
		return total;
	uint8_t head[5];
	size_t n = 0;
	for (int i = 0; i < iovcnt && n < sizeof head; i++) {
		size_t take = iov[i].iov_len < sizeof head - n ? iov[i].iov_len : sizeof head - n;
		memcpy(head + n, iov[i].iov_base, take);
		n += take;
	}
	size_t size = ws->opts.frame_per_message(head, n);
	return size && size < total ? size : total;
}

/* Takes the first `want` bytes of iov into out; the pieces used. */
static int take_payload(struct iovec *out, int room, const struct iovec *iov, int iovcnt, size_t want)
{
	int n = 0;
	for (int i = 0; i < iovcnt && want && n < room; i++) {
		if (iov[i].iov_len == 0)
			continue;
		size_t take = iov[i].iov_len < want ? iov[i].iov_len : want;
		out[n++] = (struct iovec){iov[i].iov_base, take};
		want -= take;
	}
	return n;
}

static ssize_t ws_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
	struct ws_transport *ws = (struct ws_transport *)t;
	t->want = 0;
	if (ws->state == WS_FAILED)
		return ws->fail_rc;
	if (ws->state != WS_OPEN)
		return WISP_EINVAL; /* nothing is written before the handshake */
	if (iovcnt > WS_IOV_MAX)
		iovcnt = WS_IOV_MAX;
	size_t total = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SIZE_MAX - total)
			return WISP_EINVAL;
		total += iov[i].iov_len;
	}
	if (total == 0)
		return 0;
	/* After a close frame nothing may follow [RFC 6455 5.5.1]. */
	if ((ws->close_sent || ws->cout_is_close) && !data_owed(ws))
		return WISP_EIO;

	/* Each round writes at least one byte of ours or returns: the bound
	 * is only a guard. */
	for (int round = 0; round < 8; round++) {
		struct iovec v[WS_IOV_MAX + 2];
		int n = 0;
		size_t a = 0, b = 0, p;
		bool ctrl_owed = ws->cout_offered && ws->cout_off < ws->cout_len;
		if (data_owed(ws) || ctrl_owed) {
			/* Only what is owed: a new frame waits for the next round. */
			if (ctrl_owed)
				a = (size_t)(ws->cout_len - ws->cout_off);
			b = (size_t)(ws->hdr_len - ws->hdr_off);
			p = ws->out_left < total ? (size_t)ws->out_left : total;
		} else {
			if (ws->cout_off < ws->cout_len) {
				a = (size_t)(ws->cout_len - ws->cout_off);
				ws->cout_offered = true;
			}
			if (ws->close_sent || ws->cout_is_close) {
				p = 0; /* the close goes alone */
			} else {
				p = first_message(ws, iov, iovcnt, total);
				ws->hdr_len = frame_header(ws->hdr, WS_OP_BINARY, p, ws->client);
				ws->hdr_off = 0;
				ws->out_left = p;
				b = ws->hdr_len;
			}
		}
		if (a)
			v[n++] = (struct iovec){ws->cout + ws->cout_off, a};
		if (b)
			v[n++] = (struct iovec){ws->hdr + ws->hdr_off, b};
		n += take_payload(v + n, WS_IOV_MAX, iov, iovcnt, p);
		if (n == 0)
			return WISP_EIO;
		ssize_t w = transport_writev(ws->inner, v, n);
		if (w < 0) {
			t->want = ws->inner->want;
			return w;
		}
		size_t left = (size_t)w;
		size_t took = left < a ? left : a;
		if (took)
			control_written(ws, took);
		left -= took;
		took = left < b ? left : b;
		ws->hdr_off = (uint8_t)(ws->hdr_off + took);
		left -= took;
		ws->out_left -= left;
		if (left) {
			t->want = ws->inner->want;
			return (ssize_t)left;
		}
		if (ws->inner->want) {
			t->want = ws->inner->want;
			return WISP_EAGAIN;
		}
		if (p == 0 && !data_owed(ws) && ws->cout_off >= ws->cout_len && (ws->close_sent || ws->cout_is_close))
			return WISP_EIO;
	}
	t->want = TRANSPORT_WANT_WRITE;
	return WISP_EAGAIN;
}

/* ---- failures ---- */

/* Closes the WebSocket with `code` (best effort) and fails the transport:
 * every later call returns WISP_EPROTO. */
static int fail_close(struct ws_transport *ws, uint16_t code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail_close(struct ws_transport *ws, uint16_t code, const char *fmt, ...)
{
	char why[120];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	set_error(ws, "WebSocket: %s (closing with %u)", why, code);
	if (code == WS_CLOSE_TOO_BIG)
		stats.frames_too_large++;
	else
		stats.protocol_errors++;
	/* An unsent pong gives way to the close. */
	if (!(ws->cout_offered && ws->cout_off < ws->cout_len))
		ws->cout_len = ws->cout_off = 0;
	queue_close(ws, code);
	flush_control(ws);
	ws->state = WS_FAILED;
	ws->fail_rc = WISP_EPROTO;
	return WISP_EPROTO;
}

static int fail_plain(struct ws_transport *ws, int rc)
{
	ws->state = WS_FAILED;
	ws->fail_rc = rc;
	return rc;
}

/* ---- frames in ---- */

static bool is_control(uint8_t op) { return op & 0x8u; }

/*
 * Checks what hin holds of a header (at least 2 bytes) as soon as it is
 * there, as RFC 6455 5.2 and 5.5 put it: a control frame (opcodes 0x8-0xF)
 * is at most 125 bytes and never fragmented; an extended length uses the
 * minimal form, and a 64-bit one has its top bit clear. Sets *size to the
 * whole header's, and frame_left to the payload's once it is known.
 */
static int header_check(struct ws_transport *ws, size_t *size)
{
	uint8_t b0 = ws->hin[0], b1 = ws->hin[1];
	uint8_t len7 = b1 & 0x7fu;
	if (is_control(b0 & 0x0fu) && (len7 > WS_CTRL_MAX || !(b0 & 0x80u)))
		return fail_close(ws, WS_CLOSE_PROTOCOL, "control frame fragmented or over 125 bytes");
	size_t ext = len7 == 126 ? 2u : len7 == 127 ? 8u : 0u;
	*size = 2u + ext + (b1 & 0x80u ? 4u : 0u);
	if (ws->hin_len < 2u + ext)
		return 0;
	uint64_t len = len7;
	if (ext) {
		len = 0;
		for (size_t i = 0; i < ext; i++)
			len = len << 8 | ws->hin[2 + i];
	}
	if (ext == 2 && len < 126)
		return fail_close(ws, WS_CLOSE_PROTOCOL, "malformed frame header: 16-bit length under 126");
	if (ext == 8 && (len < 0x10000u || len >> 63))
		return fail_close(ws, WS_CLOSE_PROTOCOL, "malformed frame header: 64-bit length %s",
				  len >> 63 ? "with its top bit set" : "under 65536");
	ws->frame_left = len;
	return 0;
}

/*
 * Takes header bytes from p[*in..n) into hin, checking each part as it
 * arrives (header_check). *whole once the header is complete.
 */
static int read_header(struct ws_transport *ws, const uint8_t *p, size_t n, size_t *in, bool *whole)
{
	*whole = false;
	for (;;) {
		size_t need = 2;
		int rc;
		if (ws->hin_len >= 2 && (rc = header_check(ws, &need)) != 0)
			return rc;
		if (ws->hin_len == need) {
			*whole = true;
			return 0;
		}
		if (*in == n)
			return 0;
		size_t take = need - ws->hin_len < n - *in ? need - ws->hin_len : n - *in;
		memcpy(ws->hin + ws->hin_len, p + *in, take);
		ws->hin_len = (uint8_t)(ws->hin_len + take);
		*in += take;
	}
}

/* The header in hin is whole and well formed (header_check): checks it
 * against the connection's rules and starts the frame. */
static int frame_begin(struct ws_transport *ws)
{
	uint8_t b0 = ws->hin[0], b1 = ws->hin[1];
	uint8_t op = b0 & 0x0fu;
	bool masked = b1 & 0x80u;
	uint8_t key_at = (uint8_t)(ws->hin_len - 4);
	ws->hin_len = 0;
	if (b0 & 0x70u)
		return fail_close(ws, WS_CLOSE_PROTOCOL, "RSV bits set, no extension was negotiated");
	/* [RFC 6455 5.1] a client masks every frame, a server none. */
	if (ws->client && masked)
		return fail_close(ws, WS_CLOSE_PROTOCOL, "masked server frame");
	if (!ws->client && !masked)
		return fail_close(ws, WS_CLOSE_PROTOCOL, "unmasked client frame");
	switch (op) {
	case WS_OP_CONT:
		if (!ws->in_message)
			return fail_close(ws, WS_CLOSE_PROTOCOL, "continuation frame outside a message");
		break;
	case WS_OP_BINARY:
		if (ws->in_message)
			return fail_close(ws, WS_CLOSE_PROTOCOL, "new message inside a fragmented one");
		break;
	case WS_OP_TEXT:
		/* [MQTT-6.0.0-1] MQTT Control Packets go in binary frames. */
		return fail_close(ws, WS_CLOSE_UNSUPPORTED, "text frame (MQTT needs binary frames)");
	case WS_OP_CLOSE:
	case WS_OP_PING:
	case WS_OP_PONG:
		ws->cin_len = 0;
		break;
	default:
		return fail_close(ws, WS_CLOSE_PROTOCOL, "reserved opcode 0x%x", (unsigned)op);
	}
	if (!is_control(op) && ws->frame_left > ws->opts.max_frame_size)
		return fail_close(ws, WS_CLOSE_TOO_BIG, "frame of %llu bytes, over max_frame_size %llu",
				  (unsigned long long)ws->frame_left, (unsigned long long)ws->opts.max_frame_size);
	ws->masked = masked;
	if (masked)
		memcpy(ws->key, ws->hin + key_at, 4);
	ws->in_frame = true;
	ws->op = op;
	ws->fin = b0 & 0x80u;
	return 0;
}

/*
 * dst[i] = src[i] ^ key[i % 4] for i < n, 32 bytes at a time (two SSE
 * registers once compiled; 8 at a time took ~1.7% of the broker's CPU at
 * pairs QoS 0 over ws), then 8, then single bytes; dst may be src or below
 * it in the same buffer: a block is read whole before its place is
 * written, and that place ends no further than the block itself, so no
 * byte is overwritten before it is read.
 */
static void unmask_move(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4])
{
	uint8_t k8[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
	uint64_t k;
	memcpy(&k, k8, sizeof k);
	size_t i = 0;
	/* GCC's and Clang's vector extension: SSE2 on x86-64, NEON on arm64. */
	typedef uint64_t u64x2 __attribute__((vector_size(16)));
	u64x2 kv = {k, k};
	for (; i + 32 <= n; i += 32) {
		u64x2 a, b;
		memcpy(&a, src + i, sizeof a);
		memcpy(&b, src + i + 16, sizeof b);
		a ^= kv;
		b ^= kv;
		memcpy(dst + i, &a, sizeof a);
		memcpy(dst + i + 16, &b, sizeof b);
	}
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, src + i, sizeof w);
		w ^= k;
		memcpy(dst + i, &w, sizeof w);
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ key[i & 3u];
}

/* The key for the byte n bytes on. */
static void turn_key(uint8_t key[4], size_t n)
{
	unsigned r = (unsigned)(n & 3u);
	if (!r)
		return;
	uint8_t k[4];
	for (unsigned i = 0; i < 4; i++)
		k[i] = key[(i + r) & 3u];
	memcpy(key, k, 4);
}

/* [RFC 6455 7.4]: the codes an endpoint may send in a close frame. */
static bool close_code_valid(unsigned code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

/* A whole control frame is in cin. */
static int on_control(struct ws_transport *ws)
{
	switch (ws->op) {
	case WS_OP_PING:
		/* [RFC 6455 5.5.3] a pong carries the ping's payload; answering
		 * only the latest of several is allowed. */
		if (queue_control(ws, WS_OP_PONG, ws->cin, ws->cin_len))
			flush_control(ws);
		return 0;
	case WS_OP_PONG:
		return 0;
	default: /* close */
		break;
	}
	unsigned code = WS_CLOSE_NO_STATUS;
	if (ws->cin_len == 1)
		return fail_close(ws, WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload");
	if (ws->cin_len >= 2) {
		code = (unsigned)ws->cin[0] << 8 | ws->cin[1];
		if (!close_code_valid(code))
			return fail_close(ws, WS_CLOSE_PROTOCOL, "close frame with invalid code %u", code);
	}
	ws->close_received = true;
	set_error(ws, "WebSocket closed by the client (%u)", code);
	/* [RFC 6455 5.5.1] answer with a close, echoing the code. */
	if (!(ws->cout_offered && ws->cout_off < ws->cout_len))
		ws->cout_len = ws->cout_off = 0;
	queue_close(ws, (uint16_t)code);
	flush_control(ws);
	return 0;
}

/* The current frame's last payload byte is in. */
static int frame_end(struct ws_transport *ws)
{
	ws->in_frame = false;
	if (!is_control(ws->op)) {
		ws->in_message = !ws->fin;
		return 0;
	}
	return on_control(ws);
}

/*
 * Parses `n` bytes of frames that just arrived at p and leaves the payload
 * of the data frames among them, unmasked, at p[0..*made). Control frames
 * are acted on as they complete. Stops at a close frame (what follows is
 * dropped: [RFC 6455 5.5.1] nothing may) or a violation (0 or its error;
 * *made counts the data ahead of it either way).
 */
static int parse_frames(struct ws_transport *ws, uint8_t *p, size_t n, size_t *made)
{
	size_t in = 0, out = 0;
	int rc = 0;
	while (in < n && rc == 0 && !ws->close_received) {
		if (!ws->in_frame) {
			bool whole;
			if ((rc = read_header(ws, p, n, &in, &whole)) != 0 || !whole)
				break;
			if ((rc = frame_begin(ws)) == 0 && ws->frame_left == 0)
				rc = frame_end(ws);
			continue;
		}
		size_t k = ws->frame_left < n - in ? (size_t)ws->frame_left : n - in;
		if (is_control(ws->op)) {
			/* header_check saw to it: at most 125 bytes in all. */
			if (ws->masked)
				unmask_move(ws->cin + ws->cin_len, p + in, k, ws->key);
			else
				memcpy(ws->cin + ws->cin_len, p + in, k);
			ws->cin_len = (uint8_t)(ws->cin_len + k);
		} else if (ws->masked) {
			unmask_move(p + out, p + in, k, ws->key);
			out += k;
		} else {
			if (out != in)
				memmove(p + out, p + in, k);
			out += k;
		}
		if (ws->masked)
			turn_key(ws->key, k);
		in += k;
		ws->frame_left -= k;
		if (ws->frame_left == 0)
			rc = frame_end(ws);
	}
	*made = out;
	return rc;
}

static int ws_handshake(struct transport *t);

/* Bytes for the parser: first those that came behind the request head,
 * then the inner transport's. *drained: the inner transport's want mask
 * when this read emptied it (a short read: the next would only say so
 * again, for a system call), else 0. */
static ssize_t read_raw(struct ws_transport *ws, uint8_t *buf, size_t len, uint32_t *drained)
{
	*drained = 0;
	if (ws->early_off < ws->early_len) {
		size_t n = ws->early_len - ws->early_off < len ? ws->early_len - ws->early_off : len;
		memcpy(buf, ws->early + ws->early_off, n);
		ws->early_off += n;
		if (ws->early_off == ws->early_len) {
			wisp_free(ws->early);
			ws->early = NULL;
			ws->early_len = ws->early_off = 0;
		}
		return (ssize_t)n;
	}
	ssize_t n = transport_read(ws->inner, buf, len);
	if (n > 0)
		*drained = ws->inner->want;
	return n;
}

static size_t ws_pending(struct transport *t);

static ssize_t ws_read(struct transport *t, void *buf, size_t len)
{
	struct ws_transport *ws = (struct ws_transport *)t;
	t->want = 0;
	if (ws->state != WS_OPEN) {
		int rc = ws_handshake(t);
		if (rc != 0)
			return rc;
	}
	if (ws->close_received)
		return WISP_ECLOSED;
	uint8_t *out = buf;
	size_t got = 0;
	int stop = 0;
	/* Each round reads into the room left, which the data it yields never
	 * passes; a read that drained the inner transport is the last, and so
	 * is one from the inner transport that filled the room and yielded
	 * data: what it left free is only the frame headers (and control
	 * frames) it held, and reading into that would be a system call for a
	 * few bytes (and another for the headers among those), while the
	 * caller comes back anyway with its whole buffer (want stays 0: more
	 * is waiting).
	 *
	 * Frames that carry no data (empty ones, pings) yield nothing the
	 * caller's read budget counts, so they have one of their own: once a
	 * call read `len` bytes that gave nothing, and nothing decoded waits
	 * inside (the socket still holds the rest), it reports WISP_EAGAIN:
	 * level-triggered epoll calls again next turn, after the other
	 * connections had theirs. */
	size_t raw = 0;
	while (got < len) {
		uint32_t drained;
		size_t room = len - got;
		bool early = ws->early_off < ws->early_len; /* a copy, no system call */
		ssize_t n = read_raw(ws, out + got, room, &drained);
		if (n == WISP_EAGAIN) {
			t->want = ws->inner->want ? ws->inner->want : TRANSPORT_WANT_READ;
			stop = WISP_EAGAIN;
			break;
		}
		if (n <= 0) {
			if (n == WISP_ECLOSED || n == 0) {
				n = WISP_ECLOSED;
				set_error(ws, "WebSocket: connection closed without a close frame");
			} else {
				ws->inner_failed = true;
			}
			stop = fail_plain(ws, (int)n);
			break;
		}
		size_t made = 0;
		stop = parse_frames(ws, out + got, (size_t)n, &made);
		got += made;
		raw += (size_t)n;
		if (stop || ws->close_received)
			break;
		if (!got && raw >= len && !ws_pending(t)) {
			t->want = TRANSPORT_WANT_READ;
			stop = WISP_EAGAIN;
			break;
		}
		if (drained) {
			t->want = drained;
			if (got == 0)
				stop = WISP_EAGAIN;
			break;
		}
		if ((size_t)n == room && got && !early)
			break;
	}
	if (got)
		return (ssize_t)got; /* a failure is sticky: the next call reports it */
	if (ws->close_received)
		return WISP_ECLOSED;
	return stop ? stop : WISP_EAGAIN;
}

static size_t ws_pending(struct transport *t)
{
	struct ws_transport *ws = (struct ws_transport *)t;
	if (ws->state != WS_OPEN)
		return 0;
	return (ws->early_len - ws->early_off) + transport_pending(ws->inner);
}

/* ---- handshake ---- */

/* Answers the request with an HTTP error (best effort: one write) and
 * fails the transport. */
static int refuse(struct ws_transport *ws, int status, const char *why, const char *extra)
{
	char buf[WS_RESP_MAX];
	ssize_t n = http_error_response(buf, sizeof buf, status, extra);
	if (n > 0) {
		struct iovec v = {buf, (size_t)n};
		(void)transport_writev(ws->inner, &v, 1);
	}
	stats.refused++;
	if (status == 431 || status == 414)
		stats.head_too_large++;
	set_error(ws, "upgrade refused with HTTP %d: %s", status, why);
	return fail_plain(ws, WISP_EPROTO);
}

static bool str_is(struct http_str s, const char *want)
{
	return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

/* The rightmost X-Forwarded-For entry: the one our proxy added. */
static void take_forwarded(struct ws_transport *ws, struct http_str v)
{
	size_t end = v.len, start;
	while (end && (v.ptr[end - 1] == ' ' || v.ptr[end - 1] == '\t'))
		end--;
	start = end;
	while (start && v.ptr[start - 1] != ',')
		start--;
	while (start < end && (v.ptr[start] == ' ' || v.ptr[start] == '\t'))
		start++;
	char addr[INET6_ADDRSTRLEN];
	if (end - start == 0 || end - start >= sizeof addr)
		return;
	memcpy(addr, v.ptr + start, end - start);
	addr[end - start] = '\0';
	_Static_assert(sizeof(struct sockaddr_in) <= sizeof ws->forwarded, "an IPv4 address fits");
	struct sockaddr_in *in = (struct sockaddr_in *)(void *)&ws->forwarded;
	struct sockaddr_in6 *in6 = &ws->forwarded;
	memset(&ws->forwarded, 0, sizeof ws->forwarded);
	if (inet_pton(AF_INET, addr, &in->sin_addr) == 1)
		in->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1)
		in6->sin6_family = AF_INET6;
}

/* Checks the request ([RFC 6455 4.2.1]) and prepares the 101. */
static int accept_upgrade(struct ws_transport *ws, const struct http_request *req)
{
	static const char upgrade_hint[] = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
	if (strcmp(req->method, "GET") != 0)
		return refuse(ws, 405, "method is not GET", "Allow: GET\r\n");
	if (req->version_major != 1 || req->version_minor < 1)
		return refuse(ws, 400, "HTTP/1.1 or later is needed to upgrade", NULL);
	if (req->hdr[HTTP_HDR_HOST].len == 0)
		return refuse(ws, 400, "no Host header", NULL);
	if (ws->opts.path && ws->opts.path[0] && !str_is(req->path, ws->opts.path))
		return refuse(ws, 404, "not the WebSocket path", NULL);
	if (!http_has_token(req->hdr[HTTP_HDR_UPGRADE], "websocket") ||
	    !http_has_token(req->hdr[HTTP_HDR_CONNECTION], "upgrade"))
		return refuse(ws, 426, "not a WebSocket upgrade request", upgrade_hint);
	/* [RFC 6455 4.4] a version we do not speak: say which one we do. */
	if (!str_is(req->hdr[HTTP_HDR_WS_VERSION], "13"))
		return refuse(ws, 426, "Sec-WebSocket-Version is not 13", upgrade_hint);
	struct http_str key = req->hdr[HTTP_HDR_WS_KEY];
	unsigned char nonce[32];
	size_t nonce_len = 0;
	if (key.len != 24 ||
	    mbedtls_base64_decode(nonce, sizeof nonce, &nonce_len, (const unsigned char *)key.ptr, key.len) != 0 ||
	    nonce_len != 16)
		return refuse(ws, 400, "Sec-WebSocket-Key is not 16 bytes in base64", NULL);
	const char *proto = NULL;
	struct http_str offered = req->hdr[HTTP_HDR_WS_PROTOCOL];
	const char *const *ours = ws->opts.subprotocols;
	/* [RFC 6455 4.2.2, 11.3.4] subprotocol names match case-sensitively
	 * and the answer is one the client offered, so a client offering
	 * only "MQTT" is refused (as Mosquitto does), not answered "mqtt",
	 * which a browser would fail the connection on. */
	for (size_t i = 0; ours && ours[i] && !proto; i++)
		if (http_has_exact_token(offered, ours[i]))
			proto = ours[i];
	if (offered.len && ours && ours[0] && !proto) {
		char why[96];
		size_t n = 0;
		for (size_t i = 0; ours[i]; i++)
			(void)append(why, sizeof why, &n, "%s %s", i ? " or" : "no subprotocol", ours[i]);
		(void)append(why, sizeof why, &n, " offered");
		return refuse(ws, 400, why, NULL);
	}
	if (ws->opts.trust_proxy && req->hdr[HTTP_HDR_FORWARDED_FOR].len)
		take_forwarded(ws, req->hdr[HTTP_HDR_FORWARDED_FOR]);

	unsigned char input[24 + sizeof WS_GUID - 1], digest[20], accept[32];
	size_t accept_len = 0;
	memcpy(input, key.ptr, 24);
	memcpy(input + 24, WS_GUID, sizeof WS_GUID - 1);
	if (mbedtls_sha1_ret(input, sizeof input, digest) != 0 ||
	    mbedtls_base64_encode(accept, sizeof accept, &accept_len, digest, sizeof digest) != 0)
		return refuse(ws, 500, "cannot compute Sec-WebSocket-Accept", NULL);
	ws->resp = wisp_malloc(WS_RESP_MAX);
	if (!ws->resp) {
		set_error(ws, "WebSocket: out of memory for the handshake");
		return fail_plain(ws, WISP_ENOMEM);
	}
	struct http_resp r;
	http_resp_start(&r, ws->resp, WS_RESP_MAX, 101);
	http_resp_header(&r, "Upgrade", "websocket");
	http_resp_header(&r, "Connection", "Upgrade");
	http_resp_headerf(&r, "Sec-WebSocket-Accept", "%.*s", (int)accept_len, (const char *)accept);
	if (proto)
		http_resp_header(&r, "Sec-WebSocket-Protocol", proto);
	ssize_t n = http_resp_end(&r);
	if (n < 0)
		return refuse(ws, 500, "response does not fit", NULL);
	ws->resp_len = (size_t)n;
	ws->resp_off = 0;
	ws->state = WS_RESPOND;
	return 0;
}

static int read_head(struct ws_transport *ws)
{
	uint8_t chunk[WS_HEAD_CHUNK];
	for (;;) {
		ssize_t n = transport_read(ws->inner, chunk, sizeof chunk);
		if (n == WISP_EAGAIN) {
			ws->base.want = ws->inner->want;
			return WISP_EAGAIN;
		}
		if (n < 0) {
			if (n == WISP_ECLOSED)
				set_error(ws, "WebSocket: connection closed during the upgrade request");
			else
				ws->inner_failed = true;
			return fail_plain(ws, (int)n);
		}
		if (!ws->http && !(ws->http = http_req_new(&ws->opts.http))) {
			set_error(ws, "WebSocket: out of memory for the upgrade request");
			return fail_plain(ws, WISP_ENOMEM);
		}
		struct http_request req;
		ssize_t used = http_req_feed(ws->http, chunk, (size_t)n, &req);
		if (used < 0)
			return refuse(ws, http_req_status(ws->http), http_req_error(ws->http), NULL);
		if (used == 0) {
			if ((size_t)n < sizeof chunk && ws->inner->want) {
				ws->base.want = ws->inner->want;
				return WISP_EAGAIN;
			}
			continue;
		}
		/* A client may send its first frames right behind the request. */
		if ((size_t)used < (size_t)n) {
			ws->early_len = (size_t)n - (size_t)used;
			ws->early = wisp_malloc(ws->early_len);
			if (!ws->early) {
				set_error(ws, "WebSocket: out of memory for the upgrade request");
				return fail_plain(ws, WISP_ENOMEM);
			}
			memcpy(ws->early, chunk + used, ws->early_len);
		}
		int rc = accept_upgrade(ws, &req);
		http_req_free(ws->http);
		ws->http = NULL;
		return rc;
	}
}

static int send_response(struct ws_transport *ws)
{
	while (ws->resp_off < ws->resp_len) {
		struct iovec v = {ws->resp + ws->resp_off, ws->resp_len - ws->resp_off};
		ssize_t w = transport_writev(ws->inner, &v, 1);
		if (w == WISP_EAGAIN) {
			ws->base.want = ws->inner->want;
			return WISP_EAGAIN;
		}
		if (w < 0) {
			ws->inner_failed = true;
			return fail_plain(ws, (int)w);
		}
		ws->resp_off += (size_t)w;
	}
	wisp_free(ws->resp);
	ws->resp = NULL;
	if (ws->client)
		return 0;
	ws->state = WS_OPEN;
	stats.upgrades++;
	return 0;
}

/* Client: sends the request (in ws->resp), then reads the response head
 * into a buffer of max_head_bytes. */
static int client_request(struct ws_transport *ws)
{
	if (!ws->resp) {
		ws->resp = wisp_malloc(WS_RESP_MAX);
		if (!ws->resp) {
			set_error(ws, "WebSocket: out of memory for the handshake");
			return fail_plain(ws, WISP_ENOMEM);
		}
		size_t n = 0;
		bool fits = append(ws->resp, WS_RESP_MAX, &n,
				   "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
				   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
				   ws->opts.path && ws->opts.path[0] ? ws->opts.path : "/",
				   ws->opts.host ? ws->opts.host : "localhost", "dGhlIHNhbXBsZSBub25jZQ==");
		const char *const *offer = ws->opts.subprotocols;
		for (size_t i = 0; offer && offer[i]; i++)
			fits = fits && append(ws->resp, WS_RESP_MAX, &n, "%s%s",
					      i ? ", " : "Sec-WebSocket-Protocol: ", offer[i]);
		if (offer && offer[0])
			fits = fits && append(ws->resp, WS_RESP_MAX, &n, "\r\n");
		if (!fits || !append(ws->resp, WS_RESP_MAX, &n, "\r\n")) {
			set_error(ws, "WebSocket: request too long");
			return fail_plain(ws, WISP_EINVAL);
		}
		ws->resp_len = n;
		ws->resp_off = 0;
	}
	return 0;
}

static int client_read_status(struct ws_transport *ws)
{
	size_t cap = ws->opts.http.max_head_bytes;
	if (!ws->early && !(ws->early = wisp_malloc(cap))) {
		set_error(ws, "WebSocket: out of memory for the handshake");
		return fail_plain(ws, WISP_ENOMEM);
	}
	for (;;) {
		if (ws->early_len == cap) {
			set_error(ws, "WebSocket: response head over %zu bytes", cap);
			return fail_plain(ws, WISP_EPROTO);
		}
		ssize_t n = transport_read(ws->inner, ws->early + ws->early_len, cap - ws->early_len);
		if (n == WISP_EAGAIN) {
			ws->base.want = ws->inner->want;
			return WISP_EAGAIN;
		}
		if (n < 0) {
			ws->inner_failed = n != WISP_ECLOSED;
			set_error(ws, "WebSocket: closed during the handshake");
			return fail_plain(ws, (int)n);
		}
		size_t from = ws->early_len > 3 ? ws->early_len - 3 : 0;
		ws->early_len += (size_t)n;
		const uint8_t *end = memmem(ws->early + from, ws->early_len - from, "\r\n\r\n", 4);
		if (!end)
			continue;
		size_t head = (size_t)(end - ws->early) + 4;
		if (head < 13 || memcmp(ws->early, "HTTP/1.1 101 ", 13) != 0) {
			set_error(ws, "WebSocket: the server refused the upgrade: %.40s", (const char *)ws->early);
			return fail_plain(ws, WISP_EPROTO);
		}
		/* What follows the head is frames already. */
		ws->early_off = head;
		if (ws->early_off == ws->early_len) {
			wisp_free(ws->early);
			ws->early = NULL;
			ws->early_len = ws->early_off = 0;
		}
		ws->state = WS_OPEN;
		stats.upgrades++;
		return 0;
	}
}

static int ws_handshake(struct transport *t)
{
	struct ws_transport *ws = (struct ws_transport *)t;
	t->want = 0;
	if (ws->state == WS_FAILED)
		return ws->fail_rc;
	if (ws->state == WS_INNER) {
		int rc = transport_handshake(ws->inner);
		if (rc == WISP_EAGAIN) {
			t->want = ws->inner->want;
			return rc;
		}
		if (rc != 0) {
			ws->inner_failed = true;
			return fail_plain(ws, rc);
		}
		ws->inner_ready = true;
		ws->state = ws->client ? WS_RESPOND : WS_HEAD;
		if (ws->client && client_request(ws) != 0)
			return ws->fail_rc;
	}
	if (ws->client) {
		if (ws->state == WS_RESPOND) {
			int rc = send_response(ws);
			if (rc != 0)
				return rc;
			ws->state = WS_HEAD;
		}
		return ws->state == WS_HEAD ? client_read_status(ws) : 0;
	}
	if (ws->state == WS_HEAD) {
		int rc = read_head(ws);
		if (rc != 0)
			return rc;
	}
	if (ws->state == WS_RESPOND)
		return send_response(ws);
	return 0;
}

/* ---- the rest of the interface ---- */

static int ws_peer_info(struct transport *t, struct transport_peer_info *out)
{
	struct ws_transport *ws = (struct ws_transport *)t;
	int rc = transport_peer_info(ws->inner, out);
	memset(&out->forwarded, 0, sizeof out->forwarded);
	memcpy(&out->forwarded, &ws->forwarded, sizeof ws->forwarded);
	return rc;
}

static void ws_last_error(const struct transport *t, char *buf, size_t len)
{
	const struct ws_transport *ws = (const struct ws_transport *)t;
	if (ws->inner_failed)
		transport_last_error(ws->inner, buf, len);
	else
		snprintf(buf, len, "%s", ws->error);
}

static void ws_close(struct transport *t)
{
	struct ws_transport *ws = (struct ws_transport *)t;
	if (ws->state == WS_OPEN && !ws->close_sent) {
		/* The broker ends the connection: say so, if the socket takes it. */
		if (!ws->cout_is_close && !(ws->cout_offered && ws->cout_off < ws->cout_len)) {
			ws->cout_len = ws->cout_off = 0;
			queue_close(ws, WS_CLOSE_NORMAL);
		}
		flush_control(ws);
	}
	transport_close(ws->inner);
	http_req_free(ws->http);
	wisp_free(ws->resp);
	wisp_free(ws->early);
	wisp_free(ws);
}

static const struct transport_ops ws_ops = {
	.name = "ws",
	.handshake = ws_handshake,
	.read = ws_read,
	.writev = ws_writev,
	.pending = ws_pending,
	.peer_info = ws_peer_info,
	.last_error = ws_last_error,
	.close = ws_close,
};

struct transport *ws_transport_new(struct transport *inner, const struct ws_opts *o)
{
	struct ws_transport *ws = wisp_calloc(1, sizeof *ws);
	if (!ws) {
		transport_close(inner);
		return NULL;
	}
	ws->base.ops = &ws_ops;
	ws->base.fd = inner->fd;
	ws->inner = inner;
	ws->opts = *o;
	ws->state = WS_INNER;
	/* Plain TCP has no handshake of its own: a ws connection that never
	 * sends a byte is in its WebSocket handshake, not in a TLS one. */
	ws->inner_ready = strcmp(inner->ops->name, "tcp") == 0;
	ws->forwarded.sin6_family = AF_UNSPEC;
	return &ws->base;
}

struct transport *ws_client_transport_new(struct transport *inner, const struct ws_opts *o)
{
	struct transport *t = ws_transport_new(inner, o);
	if (t)
		((struct ws_transport *)t)->client = true;
	return t;
}

bool ws_transport_is(const struct transport *t) { return t->ops == &ws_ops; }

struct transport *ws_transport_inner(struct transport *t)
{
	return ws_transport_is(t) ? ((struct ws_transport *)t)->inner : t;
}

bool ws_transport_inner_ready(const struct transport *t)
{
	return ws_transport_is(t) && ((const struct ws_transport *)t)->inner_ready;
}
