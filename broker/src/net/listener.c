#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err.h"
#include "list.h"
#include "log.h"

/* Accepts per readiness event: enough to drain a burst, few enough that a
 * connection storm cannot starve the clients already connected. */
#define ACCEPT_BATCH 64

void net_format_addr(const void *sa_ptr, char *buf, size_t len)
{
	const struct sockaddr *sa = sa_ptr;
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = sa_ptr;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
		port = ntohs(in->sin_port);
		snprintf(buf, len, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = sa_ptr;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
		port = ntohs(in6->sin6_port);
		snprintf(buf, len, "[%s]:%u", host, port);
	} else {
		snprintf(buf, len, "unix");
	}
}

static void resume_accept(struct loop *l, struct loop_timer *t)
{
	struct listener *ls = container_of(t, struct listener, pause);
	loop_io_set(l, &ls->io, LOOP_READ);
}

static void on_readable(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct listener *ls = container_of(io, struct listener, io);
	(void)events;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				log_msg(LOG_WARNING, "net", "%s: cannot accept (%s); pausing accepts for 1 s",
					ls->name, strerror(errno));
				loop_io_set(l, &ls->io, 0);
				loop_timer_start(l, &ls->pause, 1, resume_accept);
			}
			return; /* EAGAIN: drained */
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		ls->on_accept(ls, fd, (const struct sockaddr *)&ss, ls->ctx);
	}
}

int listener_open(struct listener *ls, struct loop *l, const char *bind_addr, uint16_t port,
		  listener_accept_fn on_accept, void *ctx, char *err, size_t errlen)
{
	memset(ls, 0, sizeof *ls);
	list_init(&ls->pause.link);
	ls->io.fd = -1;
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	char portstr[8];
	snprintf(portstr, sizeof portstr, "%u", port);
	int gai = getaddrinfo(bind_addr, portstr, &hints, &res);
	if (gai != 0) {
		snprintf(err, errlen, "%s: %s", bind_addr, gai_strerror(gai));
		return WISP_EINVAL;
	}
	int fd = -1;
	int saved = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd == -1) {
			saved = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1) {
		snprintf(err, errlen, "cannot listen on %s port %u: %s", bind_addr, port, strerror(saved));
		return WISP_EIO;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	net_format_addr(&ss, ls->name, sizeof ls->name);
	ls->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	ls->on_accept = on_accept;
	ls->ctx = ctx;
	int rc = loop_io_start(l, &ls->io, fd, LOOP_READ, on_readable);
	if (rc != 0) {
		close(fd);
		snprintf(err, errlen, "cannot watch listener: %s", wisp_strerror(rc));
		return rc;
	}
	return 0;
}

void listener_close(struct listener *ls, struct loop *l)
{
	if (ls->io.fd < 0)
		return;
	loop_timer_stop(l, &ls->pause);
	loop_io_stop(l, &ls->io);
	close(ls->io.fd);
	ls->io.fd = -1;
}
