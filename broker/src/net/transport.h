/*
 * A transport moves bytes for one connection: plain TCP, TLS, later
 * WebSocket (which will wrap another transport). It knows nothing of MQTT.
 *
 * All operations are non-blocking. When an operation cannot progress it
 * returns WISP_EAGAIN and sets `want` to the readiness (TRANSPORT_WANT_READ
 * and/or TRANSPORT_WANT_WRITE) the caller must wait for before retrying:
 * a TLS read may need the socket writable, a TLS write readable.
 *
 * Lifetime: created by a listener (server side) or a client, destroyed with
 * transport_close(). Single-threaded.
 */
#ifndef WISP_NET_TRANSPORT_H
#define WISP_NET_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define TRANSPORT_WANT_READ 0x1u
#define TRANSPORT_WANT_WRITE 0x2u

struct transport;

struct transport_ops {
	const char *name; /* "tcp", "tls" */
	/* Finishes any handshake: 0 when done, WISP_EAGAIN (see want), or an
	 * error. Plain TCP is done at once. */
	int (*handshake)(struct transport *t);
	/* Bytes read (> 0), WISP_ECLOSED at orderly EOF, WISP_EAGAIN, or WISP_EIO. */
	ssize_t (*read)(struct transport *t, void *buf, size_t len);
	/* Bytes written (>= 0, possibly short), WISP_EAGAIN, or WISP_EIO. */
	ssize_t (*writev)(struct transport *t, const struct iovec *iov, int iovcnt);
	/* Bytes already read from the socket and decoded but not yet returned
	 * by read(), so the caller drains them without waiting for epoll. */
	size_t (*pending)(struct transport *t);
	/* Releases everything, closes the socket and frees `t`. */
	void (*close)(struct transport *t);
};

struct transport {
	const struct transport_ops *ops;
	int fd;
	uint32_t want;
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

/* Plain TCP over a connected, non-blocking socket; takes ownership of fd.
 * NULL when out of memory (fd is then closed). */
struct transport *tcp_transport_new(int fd);

/* Plain TCP in memory the caller owns (a broker connection embeds it and
 * saves an allocation per client): close() closes fd and frees nothing. */
void tcp_transport_init(struct transport *t, int fd);

#endif
