/*
 * A transport over memory for session and protocol tests: no sockets.
 * Everything written is appended to `written`; `accept_limit` bounds how
 * many more bytes it takes before answering WISP_EAGAIN, to play a
 * subscriber that stops reading.
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
	int closed;
};

struct fake_transport *fake_transport_new(void);
/* Forgets what was written so far. */
void fake_transport_reset(struct fake_transport *f);

#endif
