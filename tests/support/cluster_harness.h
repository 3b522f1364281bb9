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

#include "broker_harness.h"
#include "cluster.h"

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

#endif
