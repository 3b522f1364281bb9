/*
 * cluster_stop's order against libnats 3.4: no natsSubscription_Destroy
 * while a connection the cluster made is still open. Its read loop looks a
 * message's subscription up and only then locks it, holding no reference
 * (fixed upstream in cnats 3.6, nats.c#638): a subscription destroyed
 * while its connection still reads can be freed under that loop (e2e 35
 * crashed so at SIGTERM under load). The wraps see every connection Wisp
 * makes and closes and every subscription it destroys; the connections
 * never connect (nothing listens on port 1), but the interest, presence,
 * handover and totals subscriptions are made on them all the same.
 */
#include <CUnit/CUnit.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "broker.h"
#include "broker_harness.h"
#include "cluster.h"
#include "nats_conn_watch.h"
#include "unit_main.h"

static bool stopping;
static unsigned destroyed_in_stop, destroyed_while_open;

void __real_natsSubscription_Destroy(natsSubscription *sub);

void __wrap_natsSubscription_Destroy(natsSubscription *sub);
void __wrap_natsSubscription_Destroy(natsSubscription *sub)
{
	if (sub && stopping) {
		destroyed_in_stop++;
		if (nats_conn_watch_any_open())
			destroyed_while_open++;
	}
	__real_natsSubscription_Destroy(sub);
}

static void test_no_subscription_destroyed_while_its_connection_reads(void)
{
	static const char cfg[] =
		"{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
		" \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"},"
		" \"cluster\": {\"nats\": [\"nats://127.0.0.1:1\"], \"node\": \"t\"}}";
	struct harness *h = harness_new(cfg);
	CU_ASSERT_FATAL(h != NULL);
	struct cluster *cl = NULL;
	char err[256];
	CU_ASSERT_EQUAL_FATAL(cluster_start(harness_broker(h), &cl, err, sizeof err), 0);
	CU_ASSERT(nats_conn_watch_count() >= 2); /* the main connection and the second one */
	stopping = true;
	cluster_stop(cl);
	stopping = false;
	CU_ASSERT(destroyed_in_stop > 0);
	CU_ASSERT_EQUAL(destroyed_while_open, 0);
	if (destroyed_while_open)
		fprintf(stderr, "%u of %u subscriptions destroyed while a connection was open\n",
			destroyed_while_open, destroyed_in_stop);
	harness_free(h);
}

static CU_TestInfo tests[] = {
	/* Alone: cluster_stop ends cnats's library. */
	{"cluster_stop destroys no subscription while a connection is open",
	 test_no_subscription_destroyed_while_its_connection_reads},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_stop", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
