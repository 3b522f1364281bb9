/*
 * A transport moves bytes for one connection: plain TCP, TLS, WebSocket
 * (which wraps one of the other two: net/ws.h). It knows nothing of MQTT.
 *
 * The contract (every caller relies on it, every transport keeps it):
 * - All operations are non-blocking. Only WISP_EAGAIN means "would block":
 *   `want` then holds the readiness (TRANSPORT_WANT_READ and/or
 *   TRANSPORT_WANT_WRITE) to wait for before retrying; a TLS read may need
 *   the socket writable, a TLS write readable. A read may also say so
 *   with the socket still readable, having spent its own budget on bytes
 *   that held nothing for the caller (WebSocket control and empty
 *   frames) while nothing decoded waits in pending(): the loop's
 *   level-triggered epoll calls again.
 * - A read or writev that moved fewer bytes than asked did not necessarily
 *   stop at would-block: a record-based transport returns what its records
 *   hold. Call again, until WISP_EAGAIN or the caller's own per-turn budget.
 * - The short cut: read and writev set `want` on every return. After a
 *   positive result it is 0 unless the transport already knows that the
 *   next call would block (a TCP short read or write, a TLS read or write
 *   that ran into WANT_READ/WANT_WRITE); then it holds the readiness to wait
 *   for, nothing is pending(), and the caller may stop without the call
 *   that would only return WISP_EAGAIN. That keeps plain TCP at one syscall
 *   per event and direction.
 * - writev with bytes to write returns > 0, WISP_EAGAIN or an error, never
 *   0; read with room returns > 0, WISP_ECLOSED, WISP_EAGAIN or an error.
 *
 * Lifetime: created by a listener (server side) or a client, destroyed with
 * transport_close(). Single-threaded.
 */
#ifndef WISP_NET_TRANSPORT_H
#define WISP_NET_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#define TRANSPORT_WANT_READ 0x1u
#define TRANSPORT_WANT_WRITE 0x2u

struct transport;

#define TRANSPORT_IDENTITY_MAX 256

/* What a transport knows of its peer beyond the socket address (which the
 * connection keeps from accept). */
struct transport_peer_info {
	/* The peer's verified identity (TLS: the Common Name of a certificate
	 * that was verified), NUL-terminated; "" when there is none. */
	char identity[TRANSPORT_IDENTITY_MAX];
	/* The client's address as a proxy the listener trusts reported it
	 * (WebSocket: X-Forwarded-For); ss_family AF_UNSPEC when none. */
	struct sockaddr_storage forwarded;
};

struct transport_ops {
	const char *name; /* "tcp", "tls", "ws" */
	/* Finishes any handshake: 0 when done, WISP_EAGAIN (see want), or an
	 * error. Plain TCP is done at once. */
	int (*handshake)(struct transport *t);
	/* Bytes read (> 0, possibly short: see the contract), WISP_ECLOSED at
	 * orderly EOF, WISP_EAGAIN, or WISP_EIO / WISP_EPROTO. */
	ssize_t (*read)(struct transport *t, void *buf, size_t len);
	/* Bytes written (> 0, possibly short: see the contract; 0 only for
	 * nothing to write), WISP_EAGAIN, or WISP_EIO / WISP_EPROTO. */
	ssize_t (*writev)(struct transport *t, const struct iovec *iov, int iovcnt);
	/* Bytes already read from the socket and decoded but not yet returned
	 * by read(), so the caller drains them without waiting for epoll. */
	size_t (*pending)(struct transport *t);
	/* What the transport proved about the peer (may be NULL: nothing). */
	int (*peer_info)(struct transport *t, struct transport_peer_info *out);
	/* Why the last operation failed, for a log line (may be NULL). */
	void (*last_error)(const struct transport *t, char *buf, size_t len);
	/* Releases everything, closes the socket and frees `t`. */
	void (*close)(struct transport *t);
};

struct transport {
	const struct transport_ops *ops;
	int fd;
	uint32_t want; /* set by every read/writev (see the contract above) */
};

static inline int transport_handshake(struct transport *t) { return t->ops->handshake(t); }
static inline ssize_t transport_read(struct transport *t, void *buf, size_t len)
{
	return t->ops->read(t, buf, len);
}
static inline ssize_t transport_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
	return t->ops->writev(t, iov, iovcnt);
}
static inline size_t transport_pending(struct transport *t) { return t->ops->pending(t); }
static inline void transport_close(struct transport *t) { t->ops->close(t); }

/* Fills `out`: 0, or WISP_EPROTO when the peer presented an identity that
 * cannot be used (e.g. a certificate CN with a NUL byte, or longer than
 * TRANSPORT_IDENTITY_MAX - 1): out->identity is then "". */
static inline int transport_peer_info(struct transport *t, struct transport_peer_info *out)
{
	out->identity[0] = '\0';
	out->forwarded.ss_family = AF_UNSPEC;
	return t->ops->peer_info ? t->ops->peer_info(t, out) : 0;
}

/* The last failure in words (TLS: mbed TLS's error, the certificate's
 * problems), always NUL-terminated; "" when the transport has nothing to
 * add to the WISP_E* code. */
static inline void transport_last_error(const struct transport *t, char *buf, size_t len)
{
	if (len)
		buf[0] = '\0';
	if (t->ops->last_error && len)
		t->ops->last_error(t, buf, len);
}

/* Plain TCP over a connected, non-blocking socket; takes ownership of fd.
 * NULL when out of memory (fd is then closed). */
struct transport *tcp_transport_new(int fd);

/* Plain TCP in memory the caller owns (a broker connection embeds it and
 * saves an allocation per client): close() closes fd and frees nothing. */
void tcp_transport_init(struct transport *t, int fd);

#endif
