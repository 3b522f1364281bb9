/*
 * Fuzz target: the WebSocket transport (net/ws.c: the upgrade, frames in
 * through its own parser, frames out, control frames, the retry rule)
 * over an in-memory inner transport.
 *
 * Input: byte 0 sets how many bytes the inner transport returns per read
 * (1..256) and accepts per write (its low bits), byte 1 the options (a
 * canned valid upgrade request ahead of the data or none, frame per
 * message, a small max_frame_size, 7-byte reads, reads of 1..64 bytes
 * varying); the rest is what the client sends. Between reads the target
 * writes a known byte pattern.
 *
 * Checked: no crash or leak whatever the bytes; the inner transport sees
 * the retry rule kept (what it did not accept is offered again first,
 * unchanged); and the bytes the server sent parse as an HTTP response head
 * followed by unmasked, final frames whose binary payloads are exactly the
 * pattern bytes writev reported as taken, in order, with at most one close
 * frame, last.
 *
 * After the canned upgrade, the frames in are also parsed by libwslay's
 * frame parser (wslay_frame_recv, what ws.c used before it parsed in the
 * reader's buffer) with ws.c's rules applied to each header it returns:
 * the byte stream read from the transport must be exactly the payload of
 * the data frames wslay found, unmasked, and the transport must end as the
 * reference does: waiting for more, closed by the client with the same
 * code, or failed with the same close status.
 *
 * Built with libFuzzer (WISP_BUILD_FUZZ) and as a replay program over
 * tests/fuzz/corpus/ws/ (seeds: make_ws_seeds.py).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "alloc.h"
#include "err.h"
#include "transport.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "fuzz_ws: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                      \
		}                                                                     \
	} while (0)

#define OUT_MAX (64u * 1024u)
#define OWED_MAX 64

static const char canned[] = "GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
			     "Sec-WebSocket-Protocol: mqtt\r\n\r\n";

struct mem {
	struct transport base;
	const uint8_t *in[2];
	size_t in_len[2], in_off[2];
	size_t read_chunk, write_chunk;
	unsigned writes;
	uint8_t out[OUT_MAX];
	size_t out_len;
	uint8_t owed[OWED_MAX]; /* offered, not accepted: must lead the next offering */
	size_t owed_len;
	int closed;
};

static int mem_handshake(struct transport *t)
{
	(void)t;
	return 0;
}

static ssize_t mem_read(struct transport *t, void *buf, size_t len)
{
	struct mem *m = (struct mem *)t;
	int s = m->in_off[0] < m->in_len[0] ? 0 : 1;
	size_t left = m->in_len[s] - m->in_off[s];
	if (left == 0) {
		t->want = TRANSPORT_WANT_READ;
		return WISP_EAGAIN;
	}
	size_t n = left < len ? left : len;
	if (n > m->read_chunk)
		n = m->read_chunk;
	memcpy(buf, m->in[s] + m->in_off[s], n);
	m->in_off[s] += n;
	t->want = 0;
	return (ssize_t)n;
}

static ssize_t mem_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
	struct mem *m = (struct mem *)t;
	uint8_t offered[OWED_MAX];
	size_t total = 0, first = 0;
	for (int i = 0; i < iovcnt; i++) {
		for (size_t k = 0; k < iov[i].iov_len && first < OWED_MAX; k++)
			offered[first++] = ((const uint8_t *)iov[i].iov_base)[k];
		total += iov[i].iov_len;
	}
	/* The retry rule (tls.h): what was not taken leads, unchanged. */
	CHECK(first >= m->owed_len || first == total);
	CHECK(memcmp(offered, m->owed, m->owed_len < first ? m->owed_len : first) == 0);
	t->want = 0;
	if (total == 0)
		return 0;
	/* Every third write would block; the others take a bounded amount. */
	if (++m->writes % 3 == 0) {
		m->owed_len = first;
		memcpy(m->owed, offered, first);
		t->want = TRANSPORT_WANT_WRITE;
		return WISP_EAGAIN;
	}
	size_t take = total < m->write_chunk ? total : m->write_chunk;
	size_t done = 0;
	for (int i = 0; i < iovcnt && done < take; i++) {
		size_t n = iov[i].iov_len < take - done ? iov[i].iov_len : take - done;
		size_t room = OUT_MAX - m->out_len;
		memcpy(m->out + m->out_len, iov[i].iov_base, n < room ? n : room);
		m->out_len += n < room ? n : room;
		done += n;
	}
	m->owed_len = first > take ? first - take : 0;
	if (m->owed_len)
		memmove(m->owed, offered + take, m->owed_len);
	if (take < total)
		t->want = TRANSPORT_WANT_WRITE;
	return (ssize_t)take;
}

static size_t mem_pending(struct transport *t)
{
	(void)t;
	return 0;
}

static void mem_close(struct transport *t) { ((struct mem *)t)->closed = 1; }

static const struct transport_ops mem_ops = {
	.name = "mem",
	.handshake = mem_handshake,
	.read = mem_read,
	.writev = mem_writev,
	.pending = mem_pending,
	.close = mem_close,
};

static const char *const subprotocols[] = {"mqtt", "mqttv3.1", NULL};

/* Test messages for frame_per_message: the first byte is the length. */
static size_t byte_length(const uint8_t *head, size_t len) { return len ? (size_t)(head[0] % 32) + 1 : 0; }

static uint8_t pattern(size_t i) { return (uint8_t)(i * 7 + 1); }

/* The server's bytes: a response head, then frames (see the file comment). */
static void check_output(const struct mem *m, size_t accepted, bool upgraded)
{
	if (m->out_len == OUT_MAX)
		return; /* truncated: nothing to compare */
	size_t off = 0;
	if (m->out_len == 0)
		return;
	/* A refusal is written once, best effort: maybe only in part. */
	CHECK(memcmp(m->out, "HTTP/1.1 ", m->out_len < 9 ? m->out_len : 9) == 0);
	if (m->out_len < 12)
		return;
	const uint8_t *end = memmem(m->out, m->out_len, "\r\n\r\n", 4);
	CHECK(end != NULL || !upgraded); /* a refusal is written once, maybe in part */
	if (!end)
		return;
	off = (size_t)(end - m->out) + 4;
	if (!upgraded || memcmp(m->out, "HTTP/1.1 101 ", 13) != 0) {
		/* A refusal: its body and nothing else. */
		CHECK(accepted == 0);
		return;
	}
	size_t data = 0;
	bool closed = false;
	while (off < m->out_len) {
		CHECK(!closed); /* nothing after a close frame */
		if (m->out_len - off < 2)
			break; /* a header cut by the last write */
		uint8_t b0 = m->out[off], b1 = m->out[off + 1];
		CHECK(b0 & 0x80);         /* FIN */
		CHECK((b1 & 0x80) == 0); /* unmasked */
		uint64_t len = b1 & 0x7f;
		size_t h = 2;
		if (len == 126) {
			if (m->out_len - off < 4)
				break;
			len = (uint64_t)m->out[off + 2] << 8 | m->out[off + 3];
			h = 4;
		} else if (len == 127) {
			if (m->out_len - off < 10)
				break;
			len = 0;
			for (size_t i = 0; i < 8; i++)
				len = len << 8 | m->out[off + 2 + i];
			h = 10;
		}
		if (off + h + len > m->out_len) {
			/* The last frame may be cut by a write that did not finish. */
			if ((b0 & 0x0f) == 0x2)
				for (size_t i = off + h; i < m->out_len; i++)
					CHECK(m->out[i] == pattern(data++));
			break;
		}
		switch (b0 & 0x0f) {
		case 0x2:
			for (size_t i = 0; i < len; i++)
				CHECK(m->out[off + h + i] == pattern(data++));
			break;
		case 0x8:
			closed = true;
			/* fall through */
		case 0xA:
			CHECK(len <= 125);
			break;
		default:
			CHECK(0);
		}
		off += h + (size_t)len;
	}
	CHECK(data == accepted);
}

/* ---- the reference: wslay's frame parser and ws.c's rules ---- */

enum ref_end { REF_MORE, REF_CLOSED, REF_FAILED };

struct ref {
	const uint8_t *wire;
	size_t len, fed;
	enum ref_end end;
	unsigned code;
	uint8_t *data; /* the data frames' payload, unmasked */
	size_t data_len;
};

static ssize_t ref_recv(uint8_t *buf, size_t len, int flags, void *user)
{
	struct ref *r = user;
	(void)flags;
	size_t n = r->len - r->fed < len ? r->len - r->fed : len;
	if (n == 0)
		return -1;
	memcpy(buf, r->wire + r->fed, n);
	r->fed += n;
	return (ssize_t)n;
}

/* ws.c's rules for a client frame's header: its close status, or 0. */
static unsigned ref_rules(uint8_t rsv, bool mask, uint8_t op, uint64_t len, bool in_message, uint64_t max)
{
	if (rsv || !mask)
		return 1002;
	switch (op) {
	case 0x0:
		if (!in_message)
			return 1002;
		break;
	case 0x2:
		if (in_message)
			return 1002;
		break;
	case 0x1:
		return 1003;
	case 0x8:
	case 0x9:
	case 0xA:
		break;
	default:
		return 1002;
	}
	return !(op & 8) && len > max ? 1009 : 0;
}

static void ref_run(struct ref *r, uint64_t max_frame_size)
{
	static const struct wslay_frame_callbacks cb = {.recv_callback = ref_recv};
	wslay_frame_context_ptr ctx;
	CHECK(wslay_frame_context_init(&ctx, &cb, r) == 0);
	bool in_frame = false, in_message = false, fin = false;
	uint8_t op = 0, cin[125];
	size_t cin_len = 0, consumed = 0;
	uint64_t left = 0;
	r->end = REF_MORE;
	for (size_t guard = 0; guard <= 4 * r->len + 8; guard++) {
		struct wslay_frame_iocb io;
		ssize_t n = wslay_frame_recv(ctx, &io);
		if (n == WSLAY_ERR_WANT_READ) {
			if (r->fed == r->len)
				break;
			continue;
		}
		if (n < 0) {
			r->end = REF_FAILED;
			r->code = 1002;
			goto done;
		}
		if (!in_frame) {
			uint64_t l = io.payload_length;
			consumed += (l < 126 ? 2u : l <= 0xffff ? 4u : 10u) + (io.mask ? 4u : 0u);
			r->code = ref_rules(io.rsv, io.mask, io.opcode, l, in_message, max_frame_size);
			if (r->code) {
				r->end = REF_FAILED;
				goto done;
			}
			in_frame = true;
			op = io.opcode;
			fin = io.fin;
			left = l;
			cin_len = 0;
		}
		consumed += io.data_length;
		left -= io.data_length;
		if (op & 8) {
			memcpy(cin + cin_len, io.data, io.data_length);
			cin_len += io.data_length;
		} else {
			memcpy(r->data + r->data_len, io.data, io.data_length);
			r->data_len += io.data_length;
		}
		if (left)
			continue;
		in_frame = false;
		if (!(op & 8)) {
			in_message = !fin;
		} else if (op == 0x8) {
			unsigned code = cin_len >= 2 ? (unsigned)cin[0] << 8 | cin[1] : 1005;
			bool valid = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
				     (code >= 3000 && code <= 4999) || cin_len == 0;
			r->end = cin_len != 1 && valid ? REF_CLOSED : REF_FAILED;
			r->code = r->end == REF_CLOSED ? code : 1002;
			goto done;
		}
	}
	/* Out of input. wslay returns a header with the first payload byte:
	 * one it holds whole with none yet is judged here. */
	if (!in_frame && r->len - consumed >= 2) {
		const uint8_t *h = r->wire + consumed;
		size_t avail = r->len - consumed, ext = (h[1] & 0x7f) == 126 ? 2 : (h[1] & 0x7f) == 127 ? 8 : 0;
		size_t size = 2 + ext + (h[1] & 0x80 ? 4 : 0);
		if (avail >= size) {
			uint64_t l = h[1] & 0x7f;
			if (ext) {
				l = 0;
				for (size_t i = 0; i < ext; i++)
					l = l << 8 | h[2 + i];
			}
			r->code = ref_rules((h[0] >> 4) & 7, h[1] & 0x80, h[0] & 0x0f, l, in_message, max_frame_size);
			if (r->code)
				r->end = REF_FAILED;
		}
	}
done:
	wslay_frame_context_free(ctx);
}

/* What the transport's last error says of how it ended: the code. */
static unsigned said_code(const char *why, const char *before)
{
	const char *at = strstr(why, before);
	return at ? (unsigned)strtoul(at + strlen(before), NULL, 10) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	static struct mem m;
	memset(&m, 0, sizeof m);
	m.base.ops = &mem_ops;
	m.base.fd = -1;
	m.read_chunk = (size_t)data[0] + 1;
	m.write_chunk = (size_t)(data[0] & 0x0f) * 37 + 1;
	uint8_t flags = data[1];
	int s = 0;
	if (flags & 1) {
		m.in[s] = (const uint8_t *)canned;
		m.in_len[s++] = sizeof canned - 1;
	}
	m.in[s] = data + 2;
	m.in_len[s] = size - 2;

	struct ws_opts o = {
		.http = {.max_head_bytes = 1024, .max_headers = 16},
		.max_frame_size = flags & 4 ? 64 : 1u << 20,
		.path = flags & 8 ? "/mqtt" : NULL,
		.subprotocols = subprotocols,
		.trust_proxy = flags & 16,
		.frame_per_message = flags & 2 ? byte_length : NULL,
	};
	struct transport *t = ws_transport_new(&m.base, &o);
	if (!t)
		return 0;
	int rc = WISP_EAGAIN;
	for (int i = 0; i < 1024 && rc == WISP_EAGAIN; i++)
		rc = transport_handshake(t);
	bool upgraded = rc == 0;
	size_t accepted = 0;
	static uint8_t stream[1u << 17];
	size_t stream_len = 0;
	ssize_t last = WISP_EAGAIN;
	bool ran_out = false;
	if (upgraded) {
		uint8_t buf[4096];
		for (int i = 0; i < 4096; i++) {
			size_t room = flags & 64 ? (size_t)(i * 13 % 64) + 1 : flags & 32 ? 7 : sizeof buf;
			ssize_t n = transport_read(t, buf, room);
			last = n;
			if (n == 0 || (n < 0 && n != WISP_EAGAIN))
				break;
			CHECK(n == WISP_EAGAIN || (size_t)n <= room);
			if (n > 0 && stream_len + (size_t)n <= sizeof stream) {
				memcpy(stream + stream_len, buf, (size_t)n);
				stream_len += (size_t)n;
			}
			/* A write of the pattern, 1..40 bytes in two pieces, retried as
			 * outq does: the unaccepted bytes lead the next call. */
			uint8_t out[80];
			size_t len = (size_t)(i % 40) + 1;
			for (size_t k = 0; k < len + 40; k++)
				out[k] = pattern(accepted + k);
			struct iovec iov[2] = {{out, len / 2}, {out + len / 2, len - len / 2 + 40}};
			ssize_t w = transport_writev(t, iov, 2);
			CHECK(w != 0);
			if (w > 0)
				accepted += (size_t)w;
			if (n == WISP_EAGAIN && m.in_off[s] == m.in_len[s] && (s == 0 || m.in_off[0] == m.in_len[0])) {
				ran_out = true;
				break;
			}
		}
		(void)transport_pending(t);
	}
	char why[160];
	transport_last_error(t, why, sizeof why);
	/* The canned upgrade: everything after it is frames. Compared when the
	 * transport read it all or stopped. */
	if (upgraded && (flags & 1) && size - 2 <= sizeof stream && (ran_out || last != WISP_EAGAIN)) {
		static uint8_t ref_data[sizeof stream];
		struct ref r = {.wire = data + 2, .len = size - 2, .data = ref_data};
		ref_run(&r, o.max_frame_size);
		CHECK(stream_len == r.data_len && memcmp(stream, ref_data, r.data_len) == 0);
		switch (r.end) {
		case REF_MORE:
			CHECK(last == WISP_EAGAIN);
			break;
		case REF_CLOSED:
			CHECK(last == WISP_ECLOSED);
			CHECK(said_code(why, "closed by the client (") == r.code);
			break;
		case REF_FAILED:
			CHECK(last == WISP_EPROTO);
			CHECK(said_code(why, "closing with ") == r.code);
			break;
		}
	}
	transport_close(t);
	CHECK(m.closed);
	check_output(&m, accepted, upgraded);
	return 0;
}
