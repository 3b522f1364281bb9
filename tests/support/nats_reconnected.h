/*
 * For unit tests linked with -Wl,--wrap=natsOptions_SetReconnectedCB: the
 * wrap remembers each connection's "connected again" callback (the first
 * NATS_RECONNECTED_MAX), so a test can play cnats telling that a
 * connection came up: the loop asks cnats nothing about a connection its
 * callbacks did not say is up (cluster/link.h). Test thread only.
 */
#ifndef WISP_TESTS_NATS_RECONNECTED_H
#define WISP_TESTS_NATS_RECONNECTED_H

#define NATS_RECONNECTED_MAX 8

/* Forgets the callbacks remembered so far (before a cluster starts). */
void nats_reconnected_reset(void);
/* Calls every callback remembered whose closure is not `except` (the
 * cluster's own: its main connection's, which the tests set up by its
 * flag), with no connection. */
void nats_reconnected_play(const void *except);

#endif
