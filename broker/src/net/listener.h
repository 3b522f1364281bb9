/*
 * Listening sockets. A listener accepts connections and hands each accepted,
 * non-blocking socket to its owner's callback; it knows nothing of MQTT or
 * of which transport the owner wraps the socket in.
 *
 * When the process runs out of file descriptors, accepting pauses for a
 * second instead of spinning on a listen socket that stays readable.
 * Single threaded.
 */
#ifndef WISP_NET_LISTENER_H
#define WISP_NET_LISTENER_H

#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

struct listener;

/* `peer` is the client's address (valid during the call). The callback owns fd. */
typedef void (*listener_accept_fn)(struct listener *ls, int fd, const struct sockaddr *peer, void *ctx);

struct listener {
	struct loop_io io;
	struct loop_timer pause;
	listener_accept_fn on_accept;
	void *ctx;
	uint16_t port;       /* the bound port (the real one when 0 was asked) */
	char name[64];       /* "127.0.0.1:1883" for logs */
};

/*
 * Binds `bind_addr`:`port` (numeric address or host name; the first address
 * that binds wins) and starts accepting. 0, or a negative WISP_E* with a
 * reason in err.
 */
int listener_open(struct listener *ls, struct loop *l, const char *bind_addr, uint16_t port,
		  listener_accept_fn on_accept, void *ctx, char *err, size_t errlen);
void listener_close(struct listener *ls, struct loop *l);

/* Formats a socket address as "addr:port" / "[addr]:port". */
void net_format_addr(const void *sockaddr, char *buf, size_t len);

#endif
