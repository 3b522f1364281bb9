/*
 * WebSocket transport (RFC 6455, server side): wraps a TCP or TLS transport
 * and carries a byte stream in binary frames, behind the same interface
 * (transport.h). It knows nothing of MQTT: what it reads is the payload of
 * the client's data frames, in order, whatever the frame boundaries; what
 * it is given to write goes out as binary frames.
 *
 * Handshake (transport_handshake): the inner transport's handshake (TLS),
 * then an HTTP/1.1 Upgrade request (net/http.h, bounded by
 * ws_opts.http), answered with 101 or with an HTTP error and the
 * connection failed. Any request path is accepted unless ws_opts.path is
 * set. Subprotocols are the owner's (ws_opts.subprotocols; server/ gives
 * MQTT's): the first of them, in the owner's order, that the client
 * offers is chosen; a client that offers others only is refused (400),
 * one that offers none is accepted without the header (lenient: MQTT's
 * [MQTT-6.0.0-3] puts the duty on the client).
 *
 * Frames in: the client's frames must be masked ([RFC 6455 5.1], else
 * close 1002), binary ([MQTT-6.0.0-1]: a text frame closes with 1003),
 * without RSV bits (no extension is negotiated), data frames at most
 * ws_opts.max_frame_size bytes of payload (else 1009); a control frame is
 * at most 125 bytes and never fragmented (1002). Fragmented binary
 * messages are fine: MQTT is a stream. A ping is answered with a pong
 * (only the latest, if they arrive faster than the socket takes them); a
 * close frame is echoed, after which read() returns WISP_ECLOSED. The
 * frames are parsed in the reader's own buffer: the inner transport reads
 * into it and the payload is unmasked in place, over the frame headers,
 * so the stream reaches the reader with no copy in between (ws.c says why
 * not libwslay).
 *
 * Frames out: the server's frames are unmasked, so a frame is a 2-10 byte
 * header ahead of the caller's own buffers: one frame per writev, the
 * header one more iovec in the inner transport's writev, no copy of the
 * payload. Many MQTT packets share a frame and a system call (unless
 * ws_opts.frame_per_message: then one frame, and one call, per message).
 * The header
 * is encoded here: wslay_frame_send reports progress through a send
 * callback per piece, which cannot put header and payload into one writev.
 *
 * Retry rule (transport.h, and tls.h's "same bytes at the front"): what
 * this transport offered the inner one and was not accepted (a control
 * frame, a frame header, payload) is offered again, first and unchanged,
 * before anything new: a frame's header is never re-encoded.
 *
 * Control frames to send (pong, close) wait until no data frame is under
 * way, are written at once from read() when the socket takes them, and
 * otherwise go out ahead of the next writev (MQTT's keepalive makes one).
 *
 * Memory: ~0.65 KiB per connection (this struct, 616 bytes, and the
 * inner transport; measured with the former libwslay parser: an idle ws
 * connection with one subscription cost the broker ~1.38 KB of RSS, a TCP
 * one 0.63 KB, Mosquitto's ws one 6.3 KB), plus the HTTP parser
 * (max_header_bytes) during the handshake only. Reading needs no buffer
 * of its own: a frame header cut by a read waits in 14 bytes of this
 * struct, a control frame's payload in 125.
 *
 * Single-threaded, on the loop thread.
 */
#ifndef WISP_NET_WS_H
#define WISP_NET_WS_H

#include <stdbool.h>
#include <stdint.h>

#include "http.h"
#include "transport.h"

/*
 * One frame per message instead of one per writev, for clients that assume
 * frames and messages align (Paho C 1.3 does: it reads a frame up to its
 * first MQTT packet and then waits for the socket). Given the first bytes
 * of the stream at a message boundary (at most 5), returns the size of the
 * message starting there, or 0 if it cannot tell (the rest goes as one
 * frame). The owner supplies it, so this file stays ignorant of MQTT.
 */
typedef size_t (*ws_message_size_fn)(const uint8_t *head, size_t len);

struct ws_opts {
	struct http_limits http; /* the Upgrade request's head */
	uint64_t max_frame_size; /* payload bytes of one client data frame */
	const char *path;        /* server: the path to accept, NULL or "": any; client: the path asked for (NULL or "": "/") */
	/* The subprotocols spoken over the stream, by preference, NULL-terminated
	 * ([RFC 6455 1.9]); NULL: none. Server: chosen from the client's offer;
	 * client: offered, all of them. */
	const char *const *subprotocols;
	bool trust_proxy;        /* take the client address from X-Forwarded-For */
	ws_message_size_fn frame_per_message; /* NULL: one frame per writev */
	const char *host;        /* client: the Host header (default "localhost") */
};

/*
 * A WebSocket transport over `inner` (connected, non-blocking, its
 * handshake not yet done or done); takes ownership of inner (closed on
 * failure too). `o` is copied; o->path, o->subprotocols and o->host are
 * borrowed and must outlive the transport. NULL when out of memory.
 */
struct transport *ws_transport_new(struct transport *inner, const struct ws_opts *o);

/*
 * The client side, for load generators and tests (wisp_bench --ws): sends
 * an upgrade request for o->path offering o->subprotocols, accepts a 101 (the accept key is not checked) and masks its frames with
 * an all-zero key, which RFC 6455 5.3 says should be unpredictable: the
 * server unmasks every byte as usual while the generator spends nothing on
 * it and copies no payload. Not for use towards untrusted servers.
 */
struct transport *ws_client_transport_new(struct transport *inner, const struct ws_opts *o);

bool ws_transport_is(const struct transport *t);
/* The wrapped transport (TLS for wss), e.g. to ask it about resumption. */
struct transport *ws_transport_inner(struct transport *t);
/* True once the inner handshake is done (the HTTP part may still run). */
bool ws_transport_inner_ready(const struct transport *t);

/* Process-wide counters ($SYS/broker/ws/...). */
struct ws_stats {
	uint64_t upgrades;         /* handshakes completed (101 sent) */
	uint64_t refused;          /* upgrade requests answered with an HTTP error */
	uint64_t head_too_large;   /* of those, over max_header_bytes or max_headers (431, 414) */
	uint64_t protocol_errors;  /* connections closed with 1002 or 1003 */
	uint64_t frames_too_large; /* connections closed with 1009 (max_frame_size) */
};

const struct ws_stats *ws_stats_get(void);

#endif
