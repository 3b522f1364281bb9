/*
 * Non-blocking outbound TCP connect over resolved addresses, for the
 * client engine (client/connector.h), which the client tools and the
 * bridges share. Knows nothing of MQTT or TLS: it hands back a connected
 * socket that the caller wraps in a transport.
 *
 * dial_resolve() is getaddrinfo(), which blocks: the connector calls it on
 * a background thread in the broker, inline in the tools (which resolve
 * once for many connections, as the sensor simulator does).
 *
 * Usage: dial_start_resolved(); wait for the fd to become writable;
 * dial_finish(). When an address fails, dial_finish() moves on to the next
 * one and returns WISP_EAGAIN with a new fd to wait on. Single-threaded;
 * the address lists are borrowed, never freed here.
 */
#ifndef WISP_NET_DIAL_H
#define WISP_NET_DIAL_H

#include <stdbool.h>
#include <stdint.h>

struct addrinfo;

struct dial {
	struct addrinfo *bind_addrs; /* borrowed; NULL: the kernel chooses */
	struct addrinfo *cur;        /* the address being tried */
	bool nodelay;
	int fd;         /* socket being connected, or -1 */
	int last_errno; /* why the last address failed, for the error message */
};

/* Starts connecting to the first of `addrs` (binding to one of
 * `bind_addrs` of its family first, when given). 0 with d->fd connecting
 * (or already connected), or WISP_EIO when every address failed at once
 * (see d->last_errno). */
int dial_start_resolved(struct dial *d, struct addrinfo *addrs, struct addrinfo *bind_addrs, bool nodelay);
/* getaddrinfo() for a TCP stream (port 0: any); 0 or WISP_ENOENT (gai
 * code in *gai_error). Blocks; safe on any thread. */
int dial_resolve(const char *host, uint16_t port, struct addrinfo **out, int *gai_error);
void dial_free_addrs(struct addrinfo *addrs);

/*
 * Call when d->fd is writable. Returns 0 when connected (the caller now
 * owns the socket and d->fd is set to -1), WISP_EAGAIN when the address
 * failed and the next one is being tried (wait on the new d->fd), or
 * WISP_EIO when no address is left (d->last_errno says why). A socket
 * that met itself (its own address and port as the peer's) is refused.
 */
int dial_finish(struct dial *d);

/* Closes a socket still connecting. */
void dial_cleanup(struct dial *d);

#endif
