/*
 * The http listener protocol: GET /metrics (Prometheus text format 0.0.4
 * from proto/metrics.c), GET /healthz and /readyz for probes, and the
 * built-in dashboard at / with its small JSON API (api.c).
 *
 * Sits above proto/: the broker skips its http listeners at start, and
 * main.c hands them to http_server_open, which opens and serves them. Each
 * listener's connections count in its conn_count and against its
 * max_connections and limits.max_connections, refused like MQTT ones
 * (counted in $SYS/broker/limits/connections_refused).
 *
 * Bounds per connection: the request head (the listener's max_header_bytes
 * and max_headers, as for ws), and from listeners[].http the body
 * (max_body_size), requests
 * (max_requests, then Connection: close) and idle_timeout, the time to
 * send a complete request after accept or after the previous response
 * (so a slow sender is closed too). Output is produced a response at a
 * time and input is not read while a response is unsent, so a client that
 * does not read holds one response. A malformed or oversized request gets
 * its status (400, 413, 414, 431, ...) and only that connection is closed,
 * counted in $SYS/broker/http/refused and logged (rate-limited).
 *
 * Authentication: HTTP Basic against the password file, for every path but
 * /healthz and /readyz, when the peer is not on loopback (or always, with
 * require_auth "always"). The password is checked on the broker's helper
 * threads like an MQTT CONNECT's (a right one is then remembered for the
 * connection); Basic sends the password in clear on each request, so a
 * listener off loopback belongs behind a TLS-terminating proxy.
 *
 * Single-threaded, on the loop thread.
 */
#ifndef WISP_HTTP_SERVER_H
#define WISP_HTTP_SERVER_H

#include <stddef.h>

#include "broker.h"
#include "list.h"
#include "loop.h"
#include "metrics.h"

struct http_listener;

struct http_server {
	struct broker *b;
	struct loop *loop;
	struct http_listener *listeners; /* one per http listener of the config */
	size_t listener_count;
	struct list_node conns;
	struct list_node closing;        /* closed this turn, freed by `reaper` */
	struct loop_timer reaper;
	size_t count;                    /* connections open, all http listeners */
	/* /api/stats reuses a snapshot up to a second old: taking one walks
	 * every session, and each open dashboard asks once a second. */
	struct metrics_snap snap;
	uint64_t snap_ms;
	bool snap_valid;
};

/* Opens every http listener of b's configuration. 0 (also when there are
 * none), or a negative WISP_E* with the reason in err. */
int http_server_open(struct http_server *s, struct broker *b, char *err, size_t errlen);
/* Closes every connection and listener socket; before broker_free. */
void http_server_close(struct http_server *s);

#endif
