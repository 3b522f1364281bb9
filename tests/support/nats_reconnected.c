#include "nats_reconnected.h"

#include <stddef.h>

#include <nats/nats.h>

static natsConnectionHandler cbs[NATS_RECONNECTED_MAX];
static void *closures[NATS_RECONNECTED_MAX];
static size_t n;

natsStatus __real_natsOptions_SetReconnectedCB(natsOptions *opts, natsConnectionHandler cb, void *closure);
natsStatus __wrap_natsOptions_SetReconnectedCB(natsOptions *opts, natsConnectionHandler cb, void *closure);
natsStatus __wrap_natsOptions_SetReconnectedCB(natsOptions *opts, natsConnectionHandler cb, void *closure)
{
	if (n < NATS_RECONNECTED_MAX) {
		cbs[n] = cb;
		closures[n++] = closure;
	}
	return __real_natsOptions_SetReconnectedCB(opts, cb, closure);
}

void nats_reconnected_reset(void) { n = 0; }

void nats_reconnected_play(const void *except)
{
	for (size_t i = 0; i < n; i++)
		if (closures[i] != except)
			cbs[i](NULL, closures[i]);
}
