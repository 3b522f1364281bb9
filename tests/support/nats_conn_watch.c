/* The connection wraps of nats_conn_watch.h. */
#include "nats_conn_watch.h"

#include <pthread.h>
#include <stdatomic.h>

static natsConnection *opened[NATS_CONN_WATCH_MAX];
static _Atomic bool closed[NATS_CONN_WATCH_MAX];
static _Atomic size_t nopened;

natsStatus __real_natsConnection_Connect(natsConnection **nc, natsOptions *opts);
void __real_natsConnection_Close(natsConnection *nc);
void __real_natsConnection_Destroy(natsConnection *nc);

/* A rejoin makes its two connections on two threads at once: the mutex
 * orders the writers, the count's store publishes each slot to readers. */
static pthread_mutex_t connect_mu = PTHREAD_MUTEX_INITIALIZER;

natsStatus __wrap_natsConnection_Connect(natsConnection **nc, natsOptions *opts);
natsStatus __wrap_natsConnection_Connect(natsConnection **nc, natsOptions *opts)
{
	natsStatus st = __real_natsConnection_Connect(nc, opts);
	pthread_mutex_lock(&connect_mu);
	size_t i = nopened;
	if (*nc && i < NATS_CONN_WATCH_MAX) {
		closed[i] = false;
		opened[i] = *nc;
		nopened = i + 1;
	}
	pthread_mutex_unlock(&connect_mu);
	return st;
}

static void mark_closed(natsConnection *nc)
{
	for (size_t i = 0; i < nopened; i++)
		if (opened[i] == nc)
			closed[i] = true;
}

void __wrap_natsConnection_Close(natsConnection *nc);
void __wrap_natsConnection_Close(natsConnection *nc)
{
	__real_natsConnection_Close(nc);
	mark_closed(nc);
}

/* Destroy closes a connection still open too. */
void __wrap_natsConnection_Destroy(natsConnection *nc);
void __wrap_natsConnection_Destroy(natsConnection *nc)
{
	mark_closed(nc);
	__real_natsConnection_Destroy(nc);
}

size_t nats_conn_watch_count(void) { return nopened; }

natsConnection *nats_conn_watch_get(size_t i) { return i < nopened ? opened[i] : NULL; }

bool nats_conn_watch_any_open(void)
{
	for (size_t i = 0; i < nopened; i++)
		if (!closed[i])
			return true;
	return false;
}
