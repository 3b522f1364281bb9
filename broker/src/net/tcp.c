/*
 * Plain TCP transport: a thin shell over a non-blocking socket. EINTR is
 * retried, EAGAIN becomes WISP_EAGAIN with the matching `want`, and every
 * other errno is WISP_EIO (the caller logs and closes). A short read or
 * write on a stream socket means its buffer ran empty or full, so it sets
 * `want` too: the caller stops there instead of paying one more syscall
 * for the WISP_EAGAIN (transport.h).
 */
#include "transport.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"

static int tcp_handshake(struct transport *t)
{
	(void)t;
	return 0;
}

static ssize_t tcp_read(struct transport *t, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = read(t->fd, buf, len);
		if (n > 0) {
			t->want = (size_t)n < len ? TRANSPORT_WANT_READ : 0;
			return n;
		}
		if (n == 0)
			return WISP_ECLOSED;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			t->want = TRANSPORT_WANT_READ;
			return WISP_EAGAIN;
		}
		return WISP_EIO;
	}
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
	size_t total = 0;
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	return total;
}

static ssize_t tcp_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
	bool capped = iovcnt > IOV_MAX;
	if (capped)
		iovcnt = IOV_MAX;
	for (;;) {
		ssize_t n = writev(t->fd, iov, iovcnt);
		if (n >= 0) {
			/* Short against the whole request: full socket, unless we
			 * offered only the first IOV_MAX pieces. */
			t->want = 0;
			if (!capped && iovcnt > 0 && (size_t)n < iov_total(iov, iovcnt))
				t->want = TRANSPORT_WANT_WRITE;
			return n;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			t->want = TRANSPORT_WANT_WRITE;
			return WISP_EAGAIN;
		}
		return WISP_EIO;
	}
}

static size_t tcp_pending(struct transport *t)
{
	(void)t;
	return 0;
}

static void tcp_close(struct transport *t)
{
	if (t->fd >= 0)
		close(t->fd);
	wisp_free(t);
}

static void tcp_close_embedded(struct transport *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}

static const struct transport_ops tcp_embedded_ops = {
	.name = "tcp",
	.handshake = tcp_handshake,
	.read = tcp_read,
	.writev = tcp_writev,
	.pending = tcp_pending,
	.close = tcp_close_embedded,
};

void tcp_transport_init(struct transport *t, int fd)
{
	t->ops = &tcp_embedded_ops;
	t->fd = fd;
	t->want = 0;
}

static const struct transport_ops tcp_ops = {
	.name = "tcp",
	.handshake = tcp_handshake,
	.read = tcp_read,
	.writev = tcp_writev,
	.pending = tcp_pending,
	.close = tcp_close,
};

struct transport *tcp_transport_new(int fd)
{
	struct transport *t = wisp_malloc(sizeof *t);
	if (!t) {
		close(fd);
		return NULL;
	}
	t->ops = &tcp_ops;
	t->fd = fd;
	t->want = 0;
	return t;
}
