/*
 * For unit tests linked with -Wl,--wrap=natsConnection_Connect,
 * --wrap=natsConnection_Close and --wrap=natsConnection_Destroy: the wraps
 * here remember every connection Wisp makes (the first
 * NATS_CONN_WATCH_MAX) and whether it is closed, so a test can tell
 * whether a subscription was destroyed while a connection could still
 * read (libnats 3.4's read loop, cluster/retire.h). Any thread.
 */
#ifndef WISP_TESTS_NATS_CONN_WATCH_H
#define WISP_TESTS_NATS_CONN_WATCH_H

#include <stdbool.h>
#include <stddef.h>

#include <nats/nats.h>

#define NATS_CONN_WATCH_MAX 16

/* Connections made so far, and the i-th of them. */
size_t nats_conn_watch_count(void);
natsConnection *nats_conn_watch_get(size_t i);
/* Whether one of them is not closed (nor destroyed) yet. */
bool nats_conn_watch_any_open(void);

#endif
