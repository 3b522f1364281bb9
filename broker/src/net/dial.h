/*
 * Non-blocking outbound TCP connect, for client tools (and later bridges).
 * Knows nothing of MQTT or TLS: it hands back a connected socket that the
 * caller wraps in a transport.
 *
 * Name resolution uses getaddrinfo(), which blocks; callers that open many
 * connections to one host (the sensor simulator) resolve once and reuse the
 * result through dial_start_resolved().
 *
 * Usage: dial_start(); wait for the fd to become writable; dial_finish().
 * When an address fails, dial_finish() moves on to the next one and returns
 * WISP_EAGAIN with a new fd to wait on. Single-threaded.
 */
#ifndef WISP_NET_DIAL_H
#define WISP_NET_DIAL_H

#include <stdbool.h>
#include <stdint.h>

struct addrinfo;

struct dial_opts {
	const char *host;
	uint16_t port;
	const char *bind_address; /* NULL: let the kernel choose (-A) */
	bool nodelay;             /* TCP_NODELAY (--nodelay) */
};

struct dial {
	struct addrinfo *addrs;     /* owned unless `shared` */
	struct addrinfo *bind_addrs;
	struct addrinfo *cur;
	bool shared;
	bool nodelay;
	int fd;         /* socket being connected, or -1 */
	int last_errno; /* why the last address failed, for the error message */
	int gai_error;  /* getaddrinfo() result when resolution failed */
};

/*
 * Resolves and starts connecting to the first address. Returns 0 with
 * d->fd connecting (or already connected), or a negative WISP_E*:
 * WISP_ENOENT when the name does not resolve (see d->gai_error), WISP_EIO
 * when every address failed at once (see d->last_errno).
 */
int dial_start(struct dial *d, const struct dial_opts *o);
/* As dial_start() over addresses resolved by dial_resolve(), which the
 * caller keeps and frees after every dial using them is cleaned up. */
int dial_start_resolved(struct dial *d, struct addrinfo *addrs, struct addrinfo *bind_addrs,
			bool nodelay);
/* getaddrinfo() for a TCP stream; 0 or WISP_ENOENT (gai code in *gai_error). */
int dial_resolve(const char *host, uint16_t port, struct addrinfo **out, int *gai_error);
void dial_free_addrs(struct addrinfo *addrs);

/*
 * Call when d->fd is writable. Returns 0 when connected (the caller now
 * owns d->fd and d->fd is set to -1), WISP_EAGAIN when the address failed
 * and the next one is being tried (wait on the new d->fd), or WISP_EIO when
 * no address is left (d->last_errno says why).
 */
int dial_finish(struct dial *d);

/* Closes a socket still connecting and frees what dial_start() resolved. */
void dial_cleanup(struct dial *d);

#endif
