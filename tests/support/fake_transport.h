/*
 * A transport over memory for session and protocol tests: no sockets.
 * Everything written is appended to `written`; `accept_limit` bounds how
 * many more bytes it takes before answering WISP_EAGAIN, to play a
 * subscriber that stops reading. It keeps the transport contract: a write
 * cut short by accept_limit sets `want` (as TCP's full socket does).
 */
#ifndef WISP_TESTS_FAKE_TRANSPORT_H
#define WISP_TESTS_FAKE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "transport.h"

struct fake_transport {
	struct transport base;
	uint8_t *written;
	size_t written_len;
	size_t accept_limit; /* SIZE_MAX = unlimited */
	/* Plays a record transport (TLS): at most this many bytes per writev
	 * (0 = no cap), a short result without `want` ("call again"). */
	size_t per_call;
	size_t writev_calls;  /* every writev, EAGAIN included */
	int last_iovcnt;      /* the iovec count of the last writev */
	/* What the peer "sent": read() hands it out, at most read_per_call
	 * bytes a call (0 = as much as asked). With read_per_call it plays a
	 * record transport (a short read without `want`: call again), without
	 * it TCP (a short read says would-block). Then WISP_EAGAIN. */
	const uint8_t *input;
	size_t input_len, input_off;
	size_t read_per_call;
	size_t read_calls;    /* every read, EAGAIN included */
	int closed;
};

struct fake_transport *fake_transport_new(void);
/* Forgets what was written so far. */
void fake_transport_reset(struct fake_transport *f);

#endif
