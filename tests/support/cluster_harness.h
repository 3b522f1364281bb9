/*
 * A harness broker with a cluster started against a NATS that never
 * answers (127.0.0.1:1): the unit tests of the cluster's loop-side
 * behaviour, which must hold while NATS is unreachable. `cluster_keys`
 * are more members of the "cluster" object ("" for none, else starting
 * with a comma). NULL when either cannot start; *cl is then NULL.
 */
#ifndef WISP_TESTS_CLUSTER_HARNESS_H
#define WISP_TESTS_CLUSTER_HARNESS_H

#include <stdio.h>

#include "broker.h"
#include "broker_harness.h"
#include "cluster.h"
#include "nats_reconnected.h"

static inline struct harness *cluster_harness(const char *cluster_keys, struct cluster **cl)
{
	char cfg[512];
	*cl = NULL;
	snprintf(cfg, sizeof cfg,
		 "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
		 " \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"},"
		 " \"cluster\": {\"nats\": [\"nats://127.0.0.1:1\"], \"node\": \"t\"%s}}",
		 cluster_keys);
	struct harness *h = harness_new(cfg);
	char err[256];
	if (h && cluster_start(harness_broker(h), cl, err, sizeof err) != 0) {
		fprintf(stderr, "cluster_start: %s\n", err);
		*cl = NULL;
	}
	return h;
}

/* The same with both of the node's NATS connections up as far as its loop
 * knows, run once: the main one by its flag, '<node>-share' by its
 * callback (link with nats_reconnected.h's wrap). The loop writes nothing
 * to a connection that is not up (cluster/link.h). */
static inline struct harness *cluster_harness_up(const char *cluster_keys, struct cluster **cl)
{
	nats_reconnected_reset();
	struct harness *h = cluster_harness(cluster_keys, cl);
	if (h && *cl) {
		harness_broker(h)->stats.cluster.connected = 1;
		nats_reconnected_play(*cl);
		harness_run(h);
	}
	return h;
}

#endif
