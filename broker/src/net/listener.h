/*
 * Listening sockets. A listener accepts connections and hands each accepted,
 * non-blocking socket to its owner's callback; it knows nothing of MQTT or
 * of which transport the owner wraps the socket in.
 *
 * When the process runs out of file descriptors, accepting pauses for a
 * second instead of spinning on a listen socket that stays readable.
 *
 * Handshake caps: the owner counts connections whose transport handshake
 * (TLS) is unfinished with listener_handshake_begin/_end, which refuse a
 * new one past `max` for the listener or `max_per_address` for one source
 * address. An IPv6 source is keyed by its /64, the block one host usually
 * gets; IPv4 by its whole address. The per-address counts live in an
 * open-addressing table holding only addresses with a handshake under way,
 * so its size follows the handshakes in progress, not the peers ever seen.
 * Single threaded.
 */
#ifndef WISP_NET_LISTENER_H
#define WISP_NET_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

struct listener;

/* `peer` is the client's address (valid during the call). The callback owns fd. */
typedef void (*listener_accept_fn)(struct listener *ls, int fd, const struct sockaddr *peer, void *ctx);

struct listener_hs_slot;

/* Concurrent handshakes allowed and under way (see the file comment). */
struct listener_handshakes {
	uint32_t max;             /* 0 = unlimited */
	uint32_t max_per_address; /* 0 = unlimited */
	uint32_t count;
	uint32_t nslots;          /* power of two, or 0 before the first one */
	uint32_t used;
	uint32_t seed;            /* per table, so slot order cannot be predicted */
	struct listener_hs_slot *slots;
};

enum listener_hs_verdict {
	LISTENER_HS_OK = 0,
	LISTENER_HS_LISTENER_FULL = 1, /* max reached */
	LISTENER_HS_ADDRESS_FULL = 2,  /* max_per_address reached for this source */
	LISTENER_HS_NOMEM = 3,
};

struct listener {
	struct loop_io io;
	struct loop_timer pause;
	listener_accept_fn on_accept;
	void *ctx;
	uint16_t port;       /* the bound port (the real one when 0 was asked) */
	char name[64];       /* "127.0.0.1:1883" for logs */
	struct listener_handshakes hs;
};

/*
 * Binds `bind_addr`:`port` (numeric address or host name; the first address
 * that binds wins) and starts accepting. 0, or a negative WISP_E* with a
 * reason in err: WISP_EINVAL when the address is at fault (it does not
 * resolve, or is no address of this host), WISP_EIO when the port is (in
 * use, privileged).
 */
int listener_open(struct listener *ls, struct loop *l, const char *bind_addr, uint16_t port,
		  listener_accept_fn on_accept, void *ctx, char *err, size_t errlen);
void listener_close(struct listener *ls, struct loop *l);

#define LISTENER_MAX_ADDRS 16 /* a host name's addresses tried, at most */

/* The addresses `bind_addr` resolves to, in the order listener_open tries
 * them: up to `max` in out[], their number in *n. 0, or WISP_EINVAL with
 * "<bind_addr>: <resolver's reason>" in err. Blocks on the resolver: for
 * start-up and --check-config only. */
int listener_resolve(const char *bind_addr, uint16_t port, struct sockaddr_storage *out, size_t max, size_t *n,
		     char *err, size_t errlen);
/* Whether a socket bound to `a` keeps one from binding `b` (the same
 * family and port, and the same address or either one the wildcard). */
bool listener_addrs_clash(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

/* Sets the handshake caps (0 = unlimited); counts under way are kept. */
void listener_set_handshake_caps(struct listener *ls, uint32_t max, uint32_t max_per_address);
/*
 * Counts a handshake from the source `family`/`addr` (AF_INET: 4 bytes,
 * AF_INET6: 16; other families are counted for the listener only), or
 * refuses it: LISTENER_HS_OK, or the cap that refused it. Every OK is
 * matched by one listener_handshake_end with the same address.
 */
enum listener_hs_verdict listener_handshake_begin(struct listener *ls, int family, const uint8_t *addr);
void listener_handshake_end(struct listener *ls, int family, const uint8_t *addr);

/* Formats a socket address as "addr:port" / "[addr]:port". */
void net_format_addr(const void *sockaddr, char *buf, size_t len);

#endif
