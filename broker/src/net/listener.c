#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "hash.h"
#include "list.h"
#include "log.h"

/* Accepts per readiness event: enough to drain a burst, few enough that a
 * connection storm cannot starve the clients already connected. */
#define ACCEPT_BATCH 64

/* A source address as the per-address cap sees it: family plus up to 16
 * bytes (IPv6 cut to its /64). count 0 marks a free slot. */
struct listener_hs_slot {
	uint8_t key[17];
	uint32_t count;
};

static void hs_key(int family, const uint8_t *addr, uint8_t key[17])
{
	memset(key, 0, 17);
	key[0] = (uint8_t)family;
	if (family == AF_INET) {
		memcpy(key + 1, addr, 4);
		return;
	}
	/* One host usually holds a whole /64: per /128 would be no cap. */
	memcpy(key + 1, addr, 8);
}

static struct listener_hs_slot *hs_find(struct listener_handshakes *hs, const uint8_t key[17])
{
	uint32_t mask = hs->nslots - 1;
	for (uint32_t i = hash_bytes(hs->seed, (const char *)key, 17) & mask;; i = (i + 1) & mask) {
		struct listener_hs_slot *sl = &hs->slots[i];
		if (sl->count == 0 || memcmp(sl->key, key, 17) == 0)
			return sl;
	}
}

/* Keeps the table at most half full, so probes stay short and a free slot
 * always ends a probe. */
static int hs_grow(struct listener_handshakes *hs)
{
	if (hs->nslots && (hs->used + 1) * 2 <= hs->nslots)
		return 0;
	uint32_t n = hs->nslots ? hs->nslots * 2 : 64;
	if (!hs->nslots) /* varies with ASLR and per listener, as the trie's */
		hs->seed = hash_mix32((uint32_t)(uintptr_t)hs ^ (uint32_t)((uintptr_t)&hs_grow >> 4));
	struct listener_hs_slot *old = hs->slots;
	uint32_t oldn = hs->nslots;
	hs->slots = wisp_calloc(n, sizeof *hs->slots);
	if (!hs->slots) {
		hs->slots = old;
		return WISP_ENOMEM;
	}
	hs->nslots = n;
	for (uint32_t i = 0; i < oldn; i++)
		if (old[i].count)
			*hs_find(hs, old[i].key) = old[i];
	wisp_free(old);
	return 0;
}

/* Linear-probing deletion without tombstones: later entries of the run
 * move back into the hole if their home slot allows it. */
static void hs_remove(struct listener_handshakes *hs, struct listener_hs_slot *hole)
{
	uint32_t mask = hs->nslots - 1;
	uint32_t i = (uint32_t)(hole - hs->slots);
	for (uint32_t j = (i + 1) & mask; hs->slots[j].count; j = (j + 1) & mask) {
		uint32_t home = hash_bytes(hs->seed, (const char *)hs->slots[j].key, 17) & mask;
		/* j's entry may fill hole i unless its home lies in (i, j]. */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			hs->slots[i] = hs->slots[j];
			i = j;
		}
	}
	hs->slots[i].count = 0;
	hs->used--;
}

void listener_set_handshake_caps(struct listener *ls, uint32_t max, uint32_t max_per_address)
{
	ls->hs.max = max;
	ls->hs.max_per_address = max_per_address;
}

enum listener_hs_verdict listener_handshake_begin(struct listener *ls, int family, const uint8_t *addr)
{
	struct listener_handshakes *hs = &ls->hs;
	if (hs->max && hs->count >= hs->max)
		return LISTENER_HS_LISTENER_FULL;
	if (family == AF_INET || family == AF_INET6) {
		uint8_t key[17];
		hs_key(family, addr, key);
		if (hs_grow(hs) != 0)
			return LISTENER_HS_NOMEM;
		struct listener_hs_slot *sl = hs_find(hs, key);
		if (hs->max_per_address && sl->count >= hs->max_per_address)
			return LISTENER_HS_ADDRESS_FULL;
		if (sl->count == 0) {
			memcpy(sl->key, key, sizeof key);
			hs->used++;
		}
		sl->count++;
	}
	hs->count++;
	return LISTENER_HS_OK;
}

void listener_handshake_end(struct listener *ls, int family, const uint8_t *addr)
{
	struct listener_handshakes *hs = &ls->hs;
	if (hs->count)
		hs->count--;
	if ((family != AF_INET && family != AF_INET6) || !hs->nslots)
		return;
	uint8_t key[17];
	hs_key(family, addr, key);
	struct listener_hs_slot *sl = hs_find(hs, key);
	if (sl->count && --sl->count == 0)
		hs_remove(hs, sl);
}

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
		ls->on_accept(ls, fd, (const struct sockaddr *)&ss, ls->ctx);
	}
}

int listener_open(struct listener *ls, struct loop *l, const char *bind_addr, uint16_t port,
		  listener_accept_fn on_accept, void *ctx, char *err, size_t errlen)
{
	memset(ls, 0, sizeof *ls);
	list_init(&ls->pause.link);
	ls->io.fd = -1;
	struct sockaddr_storage addrs[LISTENER_MAX_ADDRS];
	size_t naddrs = 0;
	int rc = listener_resolve(bind_addr, port, addrs, LISTENER_MAX_ADDRS, &naddrs, err, errlen);
	if (rc != 0)
		return rc;
	int fd = -1;
	int saved = EADDRNOTAVAIL;
	for (size_t i = 0; i < naddrs; i++) {
		const struct sockaddr_storage *a = &addrs[i];
		fd = socket(a->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd == -1) {
			saved = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (a->ss_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		/* Accepted sockets inherit TCP_NODELAY from the listening one
		 * (Linux copies the listener's options into each child): one
		 * setsockopt here instead of one per accept. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		socklen_t alen = a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
		if (bind(fd, (const struct sockaddr *)a, alen) == 0 && listen(fd, SOMAXCONN) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	if (fd == -1) {
		snprintf(err, errlen, "cannot listen on %s port %u: %s", bind_addr, port, strerror(saved));
		return saved == EADDRNOTAVAIL ? WISP_EINVAL : WISP_EIO;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	net_format_addr(&ss, ls->name, sizeof ls->name);
	ls->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	ls->on_accept = on_accept;
	ls->ctx = ctx;
	rc = loop_io_start(l, &ls->io, fd, LOOP_READ, on_readable);
	if (rc != 0) {
		close(fd);
		snprintf(err, errlen, "cannot watch listener: %s", wisp_strerror(rc));
		return rc;
	}
	return 0;
}

int listener_resolve(const char *bind_addr, uint16_t port, struct sockaddr_storage *out, size_t max, size_t *n,
		     char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	char portstr[8];
	snprintf(portstr, sizeof portstr, "%u", port);
	int gai = getaddrinfo(bind_addr, portstr, &hints, &res);
	if (gai != 0) {
		snprintf(err, errlen, "%s: %s", bind_addr, gai_strerror(gai));
		return WISP_EINVAL;
	}
	*n = 0;
	for (struct addrinfo *ai = res; ai && *n < max; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) || ai->ai_addrlen > sizeof out[0])
			continue;
		memset(&out[*n], 0, sizeof out[0]);
		memcpy(&out[*n], ai->ai_addr, ai->ai_addrlen);
		(*n)++;
	}
	freeaddrinfo(res);
	return 0;
}

bool listener_addrs_clash(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false; /* IPv6 sockets are V6ONLY */
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port &&
		       (x->sin_addr.s_addr == y->sin_addr.s_addr || x->sin_addr.s_addr == htonl(INADDR_ANY) ||
			y->sin_addr.s_addr == htonl(INADDR_ANY));
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		       (IN6_ARE_ADDR_EQUAL(&x->sin6_addr, &y->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) ||
			IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
	}
	return false;
}

void listener_close(struct listener *ls, struct loop *l)
{
	wisp_free(ls->hs.slots);
	ls->hs.slots = NULL;
	ls->hs.nslots = ls->hs.used = ls->hs.count = 0;
	if (ls->io.fd < 0)
		return;
	loop_timer_stop(l, &ls->pause);
	loop_io_stop(l, &ls->io);
	close(ls->io.fd);
	ls->io.fd = -1;
}
