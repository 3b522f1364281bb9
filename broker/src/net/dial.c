/*
 * Non-blocking outbound connect: walks the getaddrinfo() list, one address
 * at a time, binding to a local address first when one is given. See dial.h.
 */
#include "dial.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err.h"

int dial_resolve(const char *host, uint16_t port, struct addrinfo **out, int *gai_error)
{
	struct addrinfo hints = {0};
	char service[8];
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	snprintf(service, sizeof service, "%u", (unsigned)port);
	int rc = getaddrinfo(host, port ? service : NULL, &hints, out);
	if (gai_error)
		*gai_error = rc;
	return rc == 0 ? 0 : WISP_ENOENT;
}

void dial_free_addrs(struct addrinfo *addrs)
{
	if (addrs)
		freeaddrinfo(addrs);
}

static int bind_local(const struct dial *d, int fd, int family)
{
	for (struct addrinfo *b = d->bind_addrs; b; b = b->ai_next) {
		if (b->ai_family != family)
			continue;
		if (bind(fd, b->ai_addr, b->ai_addrlen) == 0)
			return 0;
	}
	return -1;
}

/* Tries addresses from d->cur on until one is connecting or connected. */
static int try_addresses(struct dial *d)
{
	for (; d->cur; d->cur = d->cur->ai_next) {
		struct addrinfo *a = d->cur;
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
		if (fd == -1) {
			d->last_errno = errno;
			continue;
		}
		if (d->bind_addrs && bind_local(d, fd, a->ai_family) != 0) {
			d->last_errno = errno;
			close(fd);
			continue;
		}
		if (d->nodelay) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		}
		int rc;
		do {
			rc = connect(fd, a->ai_addr, a->ai_addrlen);
		} while (rc == -1 && errno == EINTR);
		if (rc == 0 || errno == EINPROGRESS) {
			d->fd = fd;
			return 0;
		}
		d->last_errno = errno;
		close(fd);
	}
	return WISP_EIO;
}

int dial_start_resolved(struct dial *d, struct addrinfo *addrs, struct addrinfo *bind_addrs, bool nodelay)
{
	memset(d, 0, sizeof *d);
	d->fd = -1;
	d->bind_addrs = bind_addrs;
	d->cur = addrs;
	d->nodelay = nodelay;
	d->last_errno = ECONNREFUSED;
	return try_addresses(d);
}

/* A connect to a local port nothing listens on can be given that very
 * port as its own and meet itself (TCP simultaneous open; 2 in 60,000
 * tries on loopback here): a connection to nobody that holds the port the
 * server would come back on. Taken as refused, as Go's net package does. */
static bool self_connected(int fd)
{
	struct sockaddr_storage me, peer;
	socklen_t me_len = sizeof me, peer_len = sizeof peer;
	if (getsockname(fd, (struct sockaddr *)&me, &me_len) != 0 ||
	    getpeername(fd, (struct sockaddr *)&peer, &peer_len) != 0 || me.ss_family != peer.ss_family)
		return false;
	if (me.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&me, *b = (const struct sockaddr_in *)&peer;
		return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
	}
	if (me.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&me, *b = (const struct sockaddr_in6 *)&peer;
		return a->sin6_port == b->sin6_port && memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0;
	}
	return false;
}

int dial_finish(struct dial *d)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err == 0 && self_connected(d->fd))
		err = ECONNREFUSED;
	if (err == 0) {
		d->fd = -1;
		return 0;
	}
	if (err == EINPROGRESS || err == EALREADY)
		return WISP_EAGAIN; /* spurious wakeup: keep waiting on this fd */
	d->last_errno = err;
	close(d->fd);
	d->fd = -1;
	d->cur = d->cur->ai_next;
	return try_addresses(d) == 0 ? WISP_EAGAIN : WISP_EIO;
}

void dial_cleanup(struct dial *d)
{
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	d->bind_addrs = d->cur = NULL;
}
