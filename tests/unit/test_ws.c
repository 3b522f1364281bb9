/*
 * WebSocket transport (net/ws.c) over a socketpair: the server side is the
 * transport under test, wrapping plain TCP; the client side is written
 * here by hand (masked frames, raw HTTP), so each rule of RFC 6455 can be
 * broken on purpose. The upgrade (RFC 6455's own example key), refusals
 * with their HTTP status, the byte stream across frames split at every
 * offset, fragmented messages, frames pipelined behind the request, ping
 * and pong, the close handshake, each protocol violation with its close
 * code, writes through a full socket buffer (the retry rule), one frame
 * per writev, reading without a buffer of its own, and a read that fills
 * the buffer stopping there.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "unit_main.h"
#include "alloc.h"
#include "err.h"
#include "transport.h"
#include "ws.h"

#define POLL_MS 50
#define MAX_ROUNDS 400

static const char rfc_key[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char rfc_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/* What server/ gives a ws listener: MQTT's subprotocols. */
static const char *const mqtt_subprotocols[] = {"mqtt", "mqttv3.1", NULL};

static struct ws_opts default_opts(void)
{
	return (struct ws_opts){
		.http = {.max_head_bytes = 4096, .max_headers = 32},
		.max_frame_size = 1u << 20,
		.path = NULL,
		.subprotocols = mqtt_subprotocols,
		.trust_proxy = false,
	};
}

struct pair {
	struct transport *t; /* server side */
	int client;          /* blocking */
};

static int make_pair(struct pair *p, const struct ws_opts *o)
{
	int fds[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0)
		return -1;
	fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) & ~O_NONBLOCK);
	p->t = ws_transport_new(tcp_transport_new(fds[0]), o);
	p->client = fds[1];
	return p->t ? 0 : -1;
}

static void free_pair(struct pair *p)
{
	if (p->t)
		transport_close(p->t);
	if (p->client >= 0)
		close(p->client);
}

static void client_send(int fd, const void *buf, size_t len)
{
	const char *b = buf;
	while (len) {
		ssize_t n = write(fd, b, len);
		if (n <= 0) {
			CU_FAIL("client write");
			return;
		}
		b += n;
		len -= (size_t)n;
	}
}

static void wait_fd(int fd, short events)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	(void)poll(&pfd, 1, POLL_MS);
}

/* Drives the server handshake: its return code (0, or the failure). */
static int server_handshake(struct pair *p)
{
	for (int i = 0; i < MAX_ROUNDS; i++) {
		int rc = transport_handshake(p->t);
		if (rc != WISP_EAGAIN)
			return rc;
		wait_fd(p->t->fd, p->t->want & TRANSPORT_WANT_WRITE ? POLLOUT : POLLIN);
	}
	return WISP_EAGAIN;
}

/* Reads the HTTP response head (up to the blank line) into buf. */
static size_t client_read_head(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	while (len + 1 < cap) {
		ssize_t n = read(fd, buf + len, 1);
		if (n <= 0)
			break;
		len++;
		buf[len] = '\0';
		if (len >= 4 && memcmp(buf + len - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	buf[len] = '\0';
	return len;
}

static void request(char *buf, size_t cap, const char *extra)
{
	snprintf(buf, cap,
		 "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
		 rfc_key, extra ? extra : "Sec-WebSocket-Protocol: mqtt\r\n");
}

/* Upgrades; true when the server said 101. */
static bool upgrade(struct pair *p, const char *extra)
{
	char req[1024], resp[1024];
	request(req, sizeof req, extra);
	client_send(p->client, req, strlen(req));
	if (server_handshake(p) != 0)
		return false;
	client_read_head(p->client, resp, sizeof resp);
	return strncmp(resp, "HTTP/1.1 101 ", 13) == 0;
}

/* A client frame: masked unless told otherwise. */
static size_t frame(uint8_t *out, bool fin, uint8_t op, bool mask, const void *payload, size_t len)
{
	static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
	size_t n = 0;
	out[n++] = (uint8_t)((fin ? 0x80 : 0) | op);
	uint8_t m = mask ? 0x80 : 0;
	if (len < 126) {
		out[n++] = (uint8_t)(m | len);
	} else if (len <= 0xffff) {
		out[n++] = m | 126;
		out[n++] = (uint8_t)(len >> 8);
		out[n++] = (uint8_t)len;
	} else {
		out[n++] = m | 127;
		for (int i = 7; i >= 0; i--)
			out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
	}
	if (mask) {
		memcpy(out + n, key, 4);
		n += 4;
	}
	const uint8_t *pl = payload;
	for (size_t i = 0; i < len; i++)
		out[n + i] = mask ? pl[i] ^ key[i % 4] : pl[i];
	return n + len;
}

/* Reads one server frame (blocking): opcode, or -1. Checks it is unmasked. */
static int client_read_frame(int fd, uint8_t *payload, size_t cap, size_t *len)
{
	uint8_t h[10];
	if (read(fd, h, 2) != 2)
		return -1;
	CU_ASSERT_EQUAL(h[1] & 0x80, 0); /* server frames are never masked */
	size_t l = h[1] & 0x7f;
	if (l == 126) {
		if (read(fd, h + 2, 2) != 2)
			return -1;
		l = (size_t)h[2] << 8 | h[3];
	} else if (l == 127) {
		if (read(fd, h + 2, 8) != 8)
			return -1;
		l = 0;
		for (int i = 0; i < 8; i++)
			l = l << 8 | h[2 + i];
	}
	if (l > cap)
		return -1;
	size_t got = 0;
	while (got < l) {
		ssize_t n = read(fd, payload + got, l - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	*len = l;
	return h[0] & 0x0f;
}

/* Reads `want` stream bytes from the server transport (bounded loop). */
static ssize_t server_read(struct pair *p, uint8_t *buf, size_t want)
{
	size_t got = 0;
	for (int i = 0; i < MAX_ROUNDS * 10 && got < want; i++) {
		ssize_t n = transport_read(p->t, buf + got, want - got);
		if (n == WISP_EAGAIN) {
			wait_fd(p->t->fd, POLLIN);
			continue;
		}
		if (n < 0)
			return n;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Reads until the transport fails; the failure. */
static ssize_t server_read_until_error(struct pair *p)
{
	uint8_t buf[256];
	for (int i = 0; i < MAX_ROUNDS; i++) {
		ssize_t n = transport_read(p->t, buf, sizeof buf);
		if (n == WISP_EAGAIN) {
			wait_fd(p->t->fd, POLLIN);
			continue;
		}
		if (n < 0)
			return n;
	}
	return 0;
}

static void test_upgrade_rfc_example(void)
{
	struct pair p;
	struct ws_opts o = default_opts();
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	char req[1024], resp[1024];
	request(req, sizeof req, "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n");
	client_send(p.client, req, strlen(req));
	CU_ASSERT_EQUAL(server_handshake(&p), 0);
	client_read_head(p.client, resp, sizeof resp);
	CU_ASSERT(strncmp(resp, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
	CU_ASSERT(strstr(resp, "\r\nUpgrade: websocket\r\n") != NULL);
	CU_ASSERT(strstr(resp, "\r\nConnection: Upgrade\r\n") != NULL);
	char want[80];
	snprintf(want, sizeof want, "\r\nSec-WebSocket-Accept: %s\r\n", rfc_accept);
	CU_ASSERT(strstr(resp, want) != NULL);
	/* [MQTT-6.0.0-4] "mqtt" is chosen when offered, whatever the order. */
	CU_ASSERT(strstr(resp, "\r\nSec-WebSocket-Protocol: mqtt\r\n") != NULL);
	CU_ASSERT(ws_transport_is(p.t));
	CU_ASSERT_STRING_EQUAL(p.t->ops->name, "ws");
	free_pair(&p);

	/* Old clients: mqttv3.1 alone; no subprotocol at all is accepted too. */
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	request(req, sizeof req, "Sec-WebSocket-Protocol: mqttv3.1\r\n");
	client_send(p.client, req, strlen(req));
	CU_ASSERT_EQUAL(server_handshake(&p), 0);
	client_read_head(p.client, resp, sizeof resp);
	CU_ASSERT(strstr(resp, "\r\nSec-WebSocket-Protocol: mqttv3.1\r\n") != NULL);
	free_pair(&p);
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT(upgrade(&p, ""));
	free_pair(&p);
}

/* The transport knows no subprotocol or path of its own: its owner's. */
static void test_owner_subprotocols_and_path(void)
{
	static const char *const chat[] = {"chat", NULL};
	struct ws_opts o = default_opts();
	o.subprotocols = chat;
	struct pair p;
	char req[1024], resp[1024], why[200];
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	request(req, sizeof req, "Sec-WebSocket-Protocol: mqtt\r\n");
	client_send(p.client, req, strlen(req));
	CU_ASSERT_EQUAL(server_handshake(&p), WISP_EPROTO);
	client_read_head(p.client, resp, sizeof resp);
	CU_ASSERT(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);
	transport_last_error(p.t, why, sizeof why);
	CU_ASSERT(strstr(why, "no subprotocol chat offered") != NULL);
	free_pair(&p);
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	request(req, sizeof req, "Sec-WebSocket-Protocol: superchat, chat\r\n");
	client_send(p.client, req, strlen(req));
	CU_ASSERT_EQUAL(server_handshake(&p), 0);
	client_read_head(p.client, resp, sizeof resp);
	CU_ASSERT(strstr(resp, "\r\nSec-WebSocket-Protocol: chat\r\n") != NULL);
	free_pair(&p);
	/* None: whatever is offered, none is chosen. */
	o.subprotocols = NULL;
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	request(req, sizeof req, "Sec-WebSocket-Protocol: mqtt\r\n");
	client_send(p.client, req, strlen(req));
	CU_ASSERT_EQUAL(server_handshake(&p), 0);
	client_read_head(p.client, resp, sizeof resp);
	CU_ASSERT(strncmp(resp, "HTTP/1.1 101 ", 13) == 0);
	CU_ASSERT(strstr(resp, "Sec-WebSocket-Protocol") == NULL);
	free_pair(&p);

	/* The client side asks for "/" unless told, offering what it is given. */
	static const char *const two[] = {"a", "b", NULL};
	for (int k = 0; k < 2; k++) {
		int fds[2];
		CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
		struct ws_opts co = default_opts();
		co.subprotocols = k ? two : NULL;
		co.path = k ? "/x" : NULL;
		struct transport *c = ws_client_transport_new(tcp_transport_new(fds[0]), &co);
		CU_ASSERT_FATAL(c != NULL);
		CU_ASSERT_EQUAL(transport_handshake(c), WISP_EAGAIN); /* the request is out */
		fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) & ~O_NONBLOCK);
		client_read_head(fds[1], resp, sizeof resp);
		CU_ASSERT(strncmp(resp, k ? "GET /x HTTP/1.1\r\n" : "GET / HTTP/1.1\r\n", k ? 17 : 16) == 0);
		const char *offer = strstr(resp, "Sec-WebSocket-Protocol");
		CU_ASSERT(k ? offer && strncmp(offer, "Sec-WebSocket-Protocol: a, b\r\n", 30) == 0 : offer == NULL);
		transport_close(c);
		close(fds[1]);
	}
}

struct refusal {
	const char *req;
	int status;
	const char *header; /* expected in the response, or NULL */
};

static void test_refusals(void)
{
	static const struct refusal cases[] = {
		{"POST /mqtt HTTP/1.1\r\nHost: h\r\n\r\n", 405, "Allow: GET"},
		{"GET /mqtt HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 400, NULL},
		{"GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, NULL},
		{"GET /mqtt HTTP/1.1\r\nHost: h\r\n\r\n", 426, "Upgrade: websocket"},
		{"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", 426,
		 "Sec-WebSocket-Version: 13"},
		{"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, NULL},
		{"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
		 "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n", 400, NULL},
		{"GET /other HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 404, NULL},
		{"GET /mqtt HTTP/1.1\r\nHost: h\r\nX-Big: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
		 431, NULL},
		{"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", 501, NULL},
	};
	struct ws_opts o = default_opts();
	o.path = "/mqtt";
	o.http.max_head_bytes = 256;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct pair p;
		uint64_t refused = ws_stats_get()->refused;
		CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
		client_send(p.client, cases[i].req, strlen(cases[i].req));
		int rc = server_handshake(&p);
		CU_ASSERT_EQUAL(rc, WISP_EPROTO);
		char resp[1024], status[32];
		client_read_head(p.client, resp, sizeof resp);
		snprintf(status, sizeof status, "HTTP/1.1 %d ", cases[i].status);
		CU_ASSERT(strncmp(resp, status, strlen(status)) == 0);
		CU_ASSERT(strstr(resp, "Connection: close\r\n") != NULL);
		if (cases[i].header)
			CU_ASSERT(strstr(resp, cases[i].header) != NULL);
		char why[200], says[16];
		transport_last_error(p.t, why, sizeof why);
		snprintf(says, sizeof says, "HTTP %d:", cases[i].status);
		CU_ASSERT(strstr(why, says) != NULL);
		if (strncmp(resp, status, strlen(status)) != 0 || strstr(why, says) == NULL)
			printf("case %zu: %s / %s\n", i, resp, why);
		CU_ASSERT_EQUAL(ws_stats_get()->refused, refused + 1);
		/* Every later call fails the same way. */
		CU_ASSERT_EQUAL(transport_read(p.t, resp, 1), WISP_EPROTO);
		free_pair(&p);
	}
}

/* The stream: frames of many sizes, a fragmented message, split anywhere. */
static void test_stream_split_everywhere(void)
{
	uint8_t wire[4096], stream[2048], got[2048];
	size_t wlen = 0, slen = 0;
	for (size_t i = 0; i < sizeof stream; i++)
		stream[i] = (uint8_t)(i * 7 + 3);
	/* 0, 1, 125, 126, 200 byte frames, then a message in three fragments
	 * with a ping in the middle. */
	static const size_t sizes[] = {0, 1, 125, 126, 200};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		wlen += frame(wire + wlen, true, 0x2, true, stream + slen, sizes[i]);
		slen += sizes[i];
	}
	wlen += frame(wire + wlen, false, 0x2, true, stream + slen, 10);
	slen += 10;
	wlen += frame(wire + wlen, true, 0x9, true, "hi", 2);
	wlen += frame(wire + wlen, false, 0x0, true, stream + slen, 300);
	slen += 300;
	wlen += frame(wire + wlen, true, 0x0, true, stream + slen, 5);
	slen += 5;

	struct ws_opts o = default_opts();
	for (size_t split = 0; split < wlen; split += 1 + split / 16) {
		struct pair p;
		CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
		CU_ASSERT_FATAL(upgrade(&p, NULL));
		client_send(p.client, wire, split);
		size_t have = 0;
		/* What arrived so far, then the rest. */
		for (int i = 0; i < 8; i++) {
			ssize_t n = transport_read(p.t, got + have, sizeof got - have);
			if (n <= 0)
				break;
			have += (size_t)n;
		}
		client_send(p.client, wire + split, wlen - split);
		ssize_t n = server_read(&p, got + have, slen - have);
		CU_ASSERT_EQUAL(n, (ssize_t)(slen - have));
		CU_ASSERT(memcmp(got, stream, slen) == 0);
		/* The ping was answered with its payload. */
		uint8_t pong[16];
		size_t plen = 0;
		CU_ASSERT_EQUAL(client_read_frame(p.client, pong, sizeof pong, &plen), 0xA);
		CU_ASSERT(plen == 2 && memcmp(pong, "hi", 2) == 0);
		free_pair(&p);
	}
}

/* The payload is unmasked where it lands, moved down over the headers:
 * whatever the size of the reader's buffer, and whatever the key's phase
 * at a cut, the stream comes out whole (unmasked 32 bytes at a time, then
 * 8, the tail byte by byte). */
static void test_stream_small_reads(void)
{
	static uint8_t wire[8192], stream[4096], got[4096];
	size_t wlen = 0, slen = 0;
	for (size_t i = 0; i < sizeof stream; i++)
		stream[i] = (uint8_t)(i * 11 + (i >> 8));
	static const size_t sizes[] = {1, 7, 8, 9, 15, 16, 17, 31, 125, 126, 127, 1000, 0, 3};
	/* One message in fragments (a continuation of length 0 among them). */
	size_t count = sizeof sizes / sizeof sizes[0];
	for (size_t i = 0; i < count; i++) {
		wlen += frame(wire + wlen, i + 1 == count, i == 0 ? 0x2 : 0x0, true, stream + slen, sizes[i]);
		slen += sizes[i];
	}
	struct ws_opts o = default_opts();
	static const size_t rooms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
				       31, 32, 33, 39, 40, 41, 63, 64, 65, 70, 1500};
	for (size_t r = 0; r < sizeof rooms / sizeof rooms[0]; r++) {
		size_t room = rooms[r];
		struct pair p;
		CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
		CU_ASSERT_FATAL(upgrade(&p, NULL));
		client_send(p.client, wire, wlen);
		size_t have = 0;
		for (int i = 0; i < 20000 && have < slen; i++) {
			size_t ask = slen - have < room ? slen - have : room;
			ssize_t n = transport_read(p.t, got + have, ask);
			if (n == WISP_EAGAIN) {
				wait_fd(p.t->fd, POLLIN);
				continue;
			}
			CU_ASSERT_FATAL(n > 0 && (size_t)n <= ask);
			have += (size_t)n;
		}
		CU_ASSERT_EQUAL(have, slen);
		CU_ASSERT(memcmp(got, stream, slen) == 0);
		free_pair(&p);
	}
}

/* A read that fills the buffer stops there: the few bytes the frame
 * headers freed are not read into (a system call each over TCP); the
 * caller's next read takes the rest, whole. */
static void test_full_read_stops(void)
{
	static uint8_t wire[4096], stream[2000], got[2000];
	size_t wlen = 0;
	for (size_t i = 0; i < sizeof stream; i++)
		stream[i] = (uint8_t)(i * 7 + 3);
	for (size_t at = 0; at < sizeof stream; at += 100)
		wlen += frame(wire + wlen, true, 0x2, true, stream + at, 100);
	struct ws_opts o = default_opts();
	struct pair p;
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT_FATAL(upgrade(&p, NULL));
	client_send(p.client, wire, wlen);
	/* 1000 bytes on the wire: nine 106-byte frames and the first 40
	 * payload bytes of the tenth. */
	ssize_t n = transport_read(p.t, got, 1000);
	CU_ASSERT_EQUAL(n, 940);
	CU_ASSERT_EQUAL(p.t->want, 0u);
	int queued = -1;
	CU_ASSERT_EQUAL(ioctl(p.t->fd, FIONREAD, &queued), 0);
	CU_ASSERT_EQUAL(queued, (int)(wlen - 1000));
	CU_ASSERT_EQUAL(server_read(&p, got + 940, sizeof stream - 940), (ssize_t)(sizeof stream - 940));
	CU_ASSERT(memcmp(got, stream, sizeof stream) == 0);
	free_pair(&p);
}

/* Frames that yield no data (empty ones, pings) are bounded per read by
 * what they take from the socket: a read asked for 1000 bytes takes 1000
 * and says WISP_EAGAIN, the rest still queued for the next turn, instead
 * of draining the socket (a client streaming them held the loop). */
static void test_frames_without_data_bounded(void)
{
	static uint8_t wire[8000 * 6 + 16];
	for (uint8_t op = 0x2; op <= 0x9; op = (uint8_t)(op + 0x7)) {
		size_t wlen = 0;
		for (int i = 0; i < 8000; i++)
			wlen += frame(wire + wlen, true, op, true, NULL, 0);
		wlen += frame(wire + wlen, true, 0x2, true, "x", 1);
		struct ws_opts o = default_opts();
		struct pair p;
		CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
		CU_ASSERT_FATAL(upgrade(&p, NULL));
		client_send(p.client, wire, wlen);
		uint8_t got[1000];
		CU_ASSERT_EQUAL(transport_read(p.t, got, sizeof got), WISP_EAGAIN);
		CU_ASSERT(p.t->want & TRANSPORT_WANT_READ);
		int queued = -1;
		CU_ASSERT_EQUAL(ioctl(p.t->fd, FIONREAD, &queued), 0);
		CU_ASSERT_EQUAL(queued, (int)(wlen - sizeof got));
		ssize_t n = WISP_EAGAIN;
		for (size_t i = 0; i < wlen / sizeof got + 2 && n == WISP_EAGAIN; i++)
			n = transport_read(p.t, got, sizeof got);
		CU_ASSERT_EQUAL(n, 1);
		CU_ASSERT_EQUAL(got[0], 'x');
		free_pair(&p);
	}
}

/* Reads that stop at a small buffer leave the rest pending, not lost. */
static void test_small_reads_and_pending(void)
{
	struct pair p;
	struct ws_opts o = default_opts();
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	/* Frames right behind the request, in the same write. */
	char req[1024];
	request(req, sizeof req, NULL);
	uint8_t wire[2048];
	size_t wlen = strlen(req);
	memcpy(wire, req, wlen);
	wlen += frame(wire + wlen, true, 0x2, true, "0123456789", 10);
	wlen += frame(wire + wlen, true, 0x2, true, "abcdef", 6);
	client_send(p.client, wire, wlen);
	CU_ASSERT_EQUAL(server_handshake(&p), 0);
	uint8_t got[16];
	CU_ASSERT(transport_pending(p.t) > 0);
	CU_ASSERT_EQUAL(transport_read(p.t, got, 4), 4);
	CU_ASSERT(transport_pending(p.t) > 0);
	CU_ASSERT_EQUAL(transport_read(p.t, got + 4, 12), 12);
	CU_ASSERT(memcmp(got, "0123456789abcdef", 16) == 0);
	CU_ASSERT_EQUAL(transport_read(p.t, got, 4), WISP_EAGAIN);
	CU_ASSERT(p.t->want & TRANSPORT_WANT_READ);
	CU_ASSERT_EQUAL(transport_pending(p.t), 0);
	free_pair(&p);
}

struct violation {
	const char *name;
	uint8_t wire[160];
	size_t len;
	uint16_t code;
	const char *why;
};

static void test_violations_close_with_status(void)
{
	static uint8_t big[200];
	struct violation v[14];
	size_t n = 0;
	memset(v, 0, sizeof v);
	v[n].name = "unmasked";
	v[n].len = frame(v[n].wire, true, 0x2, false, "abc", 3);
	v[n].code = 1002;
	v[n++].why = "unmasked";
	v[n].name = "text";
	v[n].len = frame(v[n].wire, true, 0x1, true, "abc", 3);
	v[n].code = 1003;
	v[n++].why = "text frame";
	v[n].name = "fragmented ping";
	v[n].len = frame(v[n].wire, false, 0x9, true, "abc", 3);
	v[n].code = 1002;
	v[n++].why = "control frame";
	v[n].name = "oversized ping";
	v[n].len = frame(v[n].wire, true, 0x9, true, big, 126);
	v[n].code = 1002;
	v[n++].why = "control frame";
	v[n].name = "continuation without message";
	v[n].len = frame(v[n].wire, true, 0x0, true, "abc", 3);
	v[n].code = 1002;
	v[n++].why = "continuation";
	v[n].name = "reserved opcode";
	v[n].len = frame(v[n].wire, true, 0x3, true, "abc", 3);
	v[n].code = 1002;
	v[n++].why = "reserved opcode";
	v[n].name = "frame too large";
	v[n].len = frame(v[n].wire, true, 0x2, true, big, 101);
	v[n].code = 1009;
	v[n++].why = "over max_frame_size";
	v[n].name = "bad close code";
	v[n].len = frame(v[n].wire, true, 0x8, true, "\x03\xed", 2); /* 1005 may not be sent */
	v[n].code = 1002;
	v[n++].why = "invalid code";
	/* [RFC 6455 5.2] the header itself. */
	v[n].name = "RSV bit";
	v[n].len = frame(v[n].wire, true, 0x2, true, "abc", 3);
	v[n].wire[0] |= 0x40;
	v[n].code = 1002;
	v[n++].why = "RSV bits";
	v[n].name = "reserved control opcode";
	v[n].len = frame(v[n].wire, true, 0xb, true, "abc", 3);
	v[n].code = 1002;
	v[n++].why = "reserved opcode 0xb";
	v[n].name = "16-bit length under 126";
	memcpy(v[n].wire, "\x82\xfe\x00\x03\0\0\0\0abc", 11);
	v[n].len = 11;
	v[n].code = 1002;
	v[n++].why = "16-bit length under 126";
	v[n].name = "64-bit length under 65536";
	memcpy(v[n].wire, "\x82\xff\0\0\0\0\0\0\x01\0", 10);
	v[n].len = 10; /* judged before the mask key and the payload come */
	v[n].code = 1002;
	v[n++].why = "64-bit length under 65536";
	v[n].name = "64-bit length with its top bit set";
	memcpy(v[n].wire, "\x82\xff\x80\0\0\0\0\0\0\0", 10);
	v[n].len = 10; /* 1002, not 1009: malformed before too large */
	v[n].code = 1002;
	v[n++].why = "top bit set";
	v[n].name = "new message inside a fragmented one";
	v[n].len = frame(v[n].wire, false, 0x2, true, "ab", 2);
	v[n].len += frame(v[n].wire + v[n].len, true, 0x2, true, "cd", 2);
	v[n].code = 1002;
	v[n++].why = "inside a fragmented one";

	struct ws_opts o = default_opts();
	o.max_frame_size = 100;
	for (size_t i = 0; i < n; i++) {
		struct pair p;
		CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
		CU_ASSERT_FATAL(upgrade(&p, NULL));
		/* Some good data first: it is delivered before the failure. */
		uint8_t ok[32];
		size_t oklen = frame(ok, true, 0x2, true, "good", 4);
		client_send(p.client, ok, oklen);
		client_send(p.client, v[i].wire, v[i].len);
		uint8_t got[8];
		CU_ASSERT_EQUAL(server_read(&p, got, 4), 4);
		CU_ASSERT_EQUAL(server_read_until_error(&p), WISP_EPROTO);
		uint8_t payload[128];
		size_t plen = 0;
		int op = client_read_frame(p.client, payload, sizeof payload, &plen);
		CU_ASSERT_EQUAL(op, 0x8);
		CU_ASSERT_EQUAL(plen, 2);
		unsigned code = plen >= 2 ? (unsigned)payload[0] << 8 | payload[1] : 0;
		CU_ASSERT_EQUAL(code, v[i].code);
		char why[200];
		transport_last_error(p.t, why, sizeof why);
		CU_ASSERT(strstr(why, v[i].why) != NULL);
		if (op != 0x8 || code != v[i].code || !strstr(why, v[i].why))
			printf("%s: op %d code %u: %s\n", v[i].name, op, code, why);
		/* The server closes the connection after its close frame. */
		transport_close(p.t);
		p.t = NULL;
		CU_ASSERT_EQUAL(read(p.client, payload, 1), 0);
		free_pair(&p);
	}
}

static void test_close_handshake(void)
{
	struct pair p;
	struct ws_opts o = default_opts();
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT_FATAL(upgrade(&p, NULL));
	/* Half an MQTT packet, then a close: the half arrives, then ECLOSED. */
	uint8_t wire[64];
	size_t wlen = frame(wire, true, 0x2, true, "\x30\x0a\x00\x03", 4);
	wlen += frame(wire + wlen, true, 0x8, true, "\x03\xe8" "bye", 5);
	client_send(p.client, wire, wlen);
	uint8_t got[8];
	CU_ASSERT_EQUAL(server_read(&p, got, 4), 4);
	CU_ASSERT_EQUAL(server_read_until_error(&p), WISP_ECLOSED);
	uint8_t payload[16];
	size_t plen = 0;
	CU_ASSERT_EQUAL(client_read_frame(p.client, payload, sizeof payload, &plen), 0x8);
	CU_ASSERT(plen == 2 && payload[0] == 0x03 && payload[1] == 0xe8); /* 1000 echoed */
	char why[200];
	transport_last_error(p.t, why, sizeof why);
	CU_ASSERT(strstr(why, "closed by the client (1000)") != NULL);
	/* Nothing may follow a close. */
	struct iovec iov = {"x", 1};
	CU_ASSERT(transport_writev(p.t, &iov, 1) < 0);
	free_pair(&p);

	/* The server ends the connection: a close 1000, then EOF. */
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT_FATAL(upgrade(&p, NULL));
	transport_close(p.t);
	p.t = NULL;
	CU_ASSERT_EQUAL(client_read_frame(p.client, payload, sizeof payload, &plen), 0x8);
	CU_ASSERT(plen == 2 && payload[0] == 0x03 && payload[1] == 0xe8);
	CU_ASSERT_EQUAL(read(p.client, payload, 1), 0);
	free_pair(&p);

	/* EOF without a close frame. */
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT_FATAL(upgrade(&p, NULL));
	shutdown(p.client, SHUT_WR);
	CU_ASSERT_EQUAL(server_read_until_error(&p), WISP_ECLOSED);
	transport_last_error(p.t, why, sizeof why);
	CU_ASSERT(strstr(why, "without a close frame") != NULL);
	free_pair(&p);
}

/* writev: one frame per call, header + pieces; through a full socket
 * buffer the stream the client reassembles is exactly what was written. */
static void test_writev_frames_and_retry(void)
{
	struct pair p;
	struct ws_opts o = default_opts();
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT_FATAL(upgrade(&p, NULL));
	struct iovec iov[3] = {{"ab", 2}, {"cde", 3}, {"f", 1}};
	CU_ASSERT_EQUAL(transport_writev(p.t, iov, 3), 6);
	CU_ASSERT_EQUAL(p.t->want, 0);
	uint8_t payload[16];
	size_t plen = 0;
	CU_ASSERT_EQUAL(client_read_frame(p.client, payload, sizeof payload, &plen), 0x2);
	CU_ASSERT(plen == 6 && memcmp(payload, "abcdef", 6) == 0);

	/* 3 MiB through a small socket buffer, in writes of up to 70000
	 * bytes (16- and 64-bit lengths), retried as outq does. */
	int small = 8192;
	setsockopt(p.t->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
	size_t total = 3u << 20, rawcap = total + (total / 1000 + 16) * 10;
	uint8_t *src = malloc(total), *raw = malloc(rawcap);
	CU_ASSERT_FATAL(src && raw);
	for (size_t i = 0; i < total; i++)
		src[i] = (uint8_t)(i * 31 + (i >> 11));
	fcntl(p.client, F_SETFL, fcntl(p.client, F_GETFL) | O_NONBLOCK);
	size_t sent = 0, rawlen = 0;
	int eagains = 0, writes = 0, shorts = 0;
	for (int round = 0; round < 100000 && (sent < total || rawlen < rawcap); round++) {
		if (sent < total) {
			size_t chunk = total - sent < 70000 ? total - sent : 70000;
			struct iovec v[2] = {{src + sent, chunk / 3}, {src + sent + chunk / 3, chunk - chunk / 3}};
			ssize_t w = transport_writev(p.t, v, 2);
			if (w > 0) {
				sent += (size_t)w;
				writes++;
				if ((size_t)w < chunk)
					shorts++;
			} else if (w == WISP_EAGAIN) {
				eagains++;
			} else {
				CU_FAIL_FATAL("writev failed");
			}
		}
		/* The client takes whatever is readable, as raw bytes. */
		/* Slower than the writer, so the socket fills up. */
		size_t ask = rawcap - rawlen < 4096 ? rawcap - rawlen : 4096;
		ssize_t n = read(p.client, raw + rawlen, ask);
		if (n > 0)
			rawlen += (size_t)n;
		else if (sent == total)
			break;
	}
	/* Reassemble: every frame binary, FIN, unmasked, lengths minimal. */
	uint8_t *dst = malloc(total);
	CU_ASSERT_FATAL(dst != NULL);
	size_t off = 0, recvd = 0;
	int frames = 0;
	while (off + 2 <= rawlen) {
		CU_ASSERT_EQUAL_FATAL(raw[off], 0x82);
		CU_ASSERT_EQUAL_FATAL(raw[off + 1] & 0x80, 0);
		uint64_t l = raw[off + 1] & 0x7f;
		size_t h = 2;
		if (l == 126) {
			l = (uint64_t)raw[off + 2] << 8 | raw[off + 3];
			CU_ASSERT(l >= 126);
			h = 4;
		} else if (l == 127) {
			l = 0;
			for (size_t i = 0; i < 8; i++)
				l = l << 8 | raw[off + 2 + i];
			CU_ASSERT(l > 0xffff);
			h = 10;
		}
		CU_ASSERT_FATAL(off + h + l <= rawlen && recvd + l <= total);
		memcpy(dst + recvd, raw + off + h, (size_t)l);
		recvd += (size_t)l;
		off += h + (size_t)l;
		frames++;
	}
	CU_ASSERT_EQUAL(off, rawlen);
	/* A frame per writev, except those that finished a frame cut short. */
	CU_ASSERT(frames <= writes && frames >= writes - shorts);
	CU_ASSERT_EQUAL(sent, total);
	CU_ASSERT_EQUAL(recvd, total);
	CU_ASSERT(memcmp(src, dst, total) == 0);
	CU_ASSERT(shorts > 0 && eagains > 0); /* the retry path was taken */
	free(src);
	free(dst);
	free(raw);
	free_pair(&p);
}

/* Test messages: the first byte is the whole message's length. */
static size_t byte_length(const uint8_t *head, size_t len) { return len ? head[0] : 0; }

static void test_frame_per_message(void)
{
	struct pair p;
	struct ws_opts o = default_opts();
	o.frame_per_message = byte_length;
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT_FATAL(upgrade(&p, NULL));
	/* Three messages over pieces that do not follow them. */
	struct iovec iov[3] = {{"\x03" "a", 2}, {"b\x04" "cd", 4}, {"e\x02" "f", 3}};
	size_t total = 9, sent = 0;
	for (int i = 0; i < 10 && sent < total; i++) {
		struct iovec v[3];
		int n = 0;
		size_t skip = sent;
		for (int k = 0; k < 3; k++) {
			if (skip >= iov[k].iov_len) {
				skip -= iov[k].iov_len;
				continue;
			}
			v[n++] = (struct iovec){(char *)iov[k].iov_base + skip, iov[k].iov_len - skip};
			skip = 0;
		}
		ssize_t w = transport_writev(p.t, v, n);
		CU_ASSERT_FATAL(w > 0);
		sent += (size_t)w;
	}
	static const char *const want[] = {"\x03" "ab", "\x04" "cde", "\x02" "f"};
	for (int i = 0; i < 3; i++) {
		uint8_t payload[16];
		size_t plen = 0;
		CU_ASSERT_EQUAL(client_read_frame(p.client, payload, sizeof payload, &plen), 0x2);
		CU_ASSERT(plen == strlen(want[i]) && memcmp(payload, want[i], plen) == 0);
	}
	free_pair(&p);
}

static void test_forwarded_for(void)
{
	struct ws_opts o = default_opts();
	struct transport_peer_info info;
	struct pair p;
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT_FATAL(upgrade(&p, "X-Forwarded-For: 203.0.113.9\r\n"));
	transport_peer_info(p.t, &info);
	CU_ASSERT_EQUAL(info.forwarded.ss_family, AF_UNSPEC); /* not trusted */
	free_pair(&p);

	o.trust_proxy = true;
	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT_FATAL(upgrade(&p, "X-Forwarded-For: 198.51.100.1, 203.0.113.9 \r\n"));
	transport_peer_info(p.t, &info);
	CU_ASSERT_EQUAL(info.forwarded.ss_family, AF_INET);
	const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)&info.forwarded;
	CU_ASSERT_EQUAL(ntohl(in->sin_addr.s_addr), 0xcb007109u);
	free_pair(&p);

	CU_ASSERT_EQUAL_FATAL(make_pair(&p, &o), 0);
	CU_ASSERT_FATAL(upgrade(&p, "X-Forwarded-For: 2001:db8::7\r\n"));
	transport_peer_info(p.t, &info);
	CU_ASSERT_EQUAL(info.forwarded.ss_family, AF_INET6);
	free_pair(&p);
}

/* Reading allocates nothing: frames are parsed in the reader's buffer,
 * and a header or payload cut by a read waits in the connection itself. */
static void test_no_read_buffer(void)
{
	struct ws_opts o = default_opts();
	size_t before = wisp_mem_used();
	struct pair p[4];
	for (int i = 0; i < 4; i++) {
		CU_ASSERT_EQUAL_FATAL(make_pair(&p[i], &o), 0);
		CU_ASSERT_FATAL(upgrade(&p[i], NULL));
	}
	size_t upgraded = wisp_mem_used();
	uint8_t wire[64], got[8];
	size_t wlen = frame(wire, true, 0x2, true, "abcd", 4);
	wlen += frame(wire + wlen, true, 0x2, true, "efgh", 4);
	for (int i = 0; i < 4; i++) {
		/* A whole frame, then one cut in its header (i even) or in
		 * its payload (i odd): both wait in the connection. */
		size_t cut = i & 1 ? 18 : 13;
		client_send(p[i].client, wire, cut);
		CU_ASSERT_EQUAL(server_read(&p[i], got, 4), 4);
		CU_ASSERT(memcmp(got, "abcd", 4) == 0);
		ssize_t k = transport_read(p[i].t, got, sizeof got);
		size_t have = k > 0 ? (size_t)k : 0;
		CU_ASSERT_EQUAL(have, i & 1 ? 2u : 0u);
		CU_ASSERT_EQUAL(wisp_mem_used(), upgraded);
		client_send(p[i].client, wire + cut, wlen - cut);
		CU_ASSERT_EQUAL(server_read(&p[i], got + have, 4 - have), (ssize_t)(4 - have));
		CU_ASSERT(memcmp(got, "efgh", 4) == 0);
	}
	CU_ASSERT_EQUAL(wisp_mem_used(), upgraded);
	for (int i = 0; i < 4; i++)
		free_pair(&p[i]);
	CU_ASSERT_EQUAL(wisp_mem_used(), before);
}

/* Our client side (wisp_bench --ws) against our server side. */
static void test_client_against_server(void)
{
	int fds[2];
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
	struct ws_opts o = default_opts();
	struct transport *srv = ws_transport_new(tcp_transport_new(fds[0]), &o);
	struct transport *cli = ws_client_transport_new(tcp_transport_new(fds[1]), &o);
	CU_ASSERT_FATAL(srv && cli);
	int rs = WISP_EAGAIN, rc = WISP_EAGAIN;
	for (int i = 0; i < MAX_ROUNDS && (rs || rc); i++) {
		if (rc)
			rc = transport_handshake(cli);
		if (rs)
			rs = transport_handshake(srv);
		if (rs == WISP_EAGAIN || rc == WISP_EAGAIN)
			wait_fd(fds[0], POLLIN);
	}
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	CU_ASSERT_EQUAL_FATAL(rs, 0);
	/* Both ways, pieces of a 100 KiB stream. */
	static uint8_t src[100000], dst[100000];
	for (size_t i = 0; i < sizeof src; i++)
		src[i] = (uint8_t)(i * 13);
	for (int dir = 0; dir < 2; dir++) {
		struct transport *w = dir ? srv : cli, *r = dir ? cli : srv;
		size_t sent = 0, got = 0;
		for (int i = 0; i < 100000 && got < sizeof src; i++) {
			if (sent < sizeof src) {
				size_t n = sizeof src - sent < 3000 ? sizeof src - sent : 3000;
				struct iovec v[2] = {{src + sent, n / 2}, {src + sent + n / 2, n - n / 2}};
				ssize_t k = transport_writev(w, v, 2);
				CU_ASSERT_FATAL(k > 0 || k == WISP_EAGAIN);
				if (k > 0)
					sent += (size_t)k;
			}
			ssize_t k = transport_read(r, dst + got, sizeof dst - got);
			CU_ASSERT_FATAL(k > 0 || k == WISP_EAGAIN);
			if (k > 0)
				got += (size_t)k;
		}
		CU_ASSERT_EQUAL(got, sizeof src);
		CU_ASSERT(memcmp(src, dst, sizeof src) == 0);
	}
	transport_close(cli);
	/* The server sees the client's close frame. */
	uint8_t b[8];
	ssize_t k = WISP_EAGAIN;
	for (int i = 0; i < MAX_ROUNDS && k == WISP_EAGAIN; i++) {
		k = transport_read(srv, b, sizeof b);
		if (k == WISP_EAGAIN)
			wait_fd(fds[0], POLLIN);
	}
	CU_ASSERT_EQUAL(k, WISP_ECLOSED);
	transport_close(srv);
}

static void test_oom(void)
{
	int fds[2];
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
	struct transport *inner = tcp_transport_new(fds[0]);
	CU_ASSERT_PTR_NOT_NULL_FATAL(inner);
	struct ws_opts o = default_opts();
	wisp_mem_fail_after(1, 0);
	CU_ASSERT_PTR_NULL(ws_transport_new(inner, &o)); /* inner closed */
	wisp_mem_fail_after(0, 0);
	close(fds[1]);
}

static CU_TestInfo tests[] = {
	{"upgrade: RFC 6455's example key, subprotocols", test_upgrade_rfc_example},
	{"refused upgrades answer their HTTP status", test_refusals},
	{"subprotocols and path are the owner's", test_owner_subprotocols_and_path},
	{"the byte stream across frames, split at every offset", test_stream_split_everywhere},
	{"frames behind the request; small reads leave the rest pending", test_small_reads_and_pending},
	{"unmasked in place through reads of 1..1500 bytes", test_stream_small_reads},
	{"a read that fills the buffer stops there", test_full_read_stops},
	{"frames without data are bounded per read by their bytes", test_frames_without_data_bounded},
	{"each violation closes with its status code", test_violations_close_with_status},
	{"close handshake both ways, EOF without close", test_close_handshake},
	{"writev: one frame per call, retry through a full socket", test_writev_frames_and_retry},
	{"X-Forwarded-For only from a trusted proxy", test_forwarded_for},
	{"one frame per message when asked (Paho C)", test_frame_per_message},
	{"reading allocates nothing, cut frames wait in the connection", test_no_read_buffer},
	{"our client side against our server side", test_client_against_server},
	{"out of memory", test_oom},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"ws", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	/* The broker ignores SIGPIPE (main.c); a close frame answered to a
	 * peer that already closed must not kill the test either. */
	signal(SIGPIPE, SIG_IGN);
	return unit_run(suites);
}
