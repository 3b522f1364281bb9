/*
 * The node's table of the filters its clients hold (cluster.c), one NATS
 * subscription per distinct filter, counted per subscriber: the first
 * subscriber of a filter makes its SUB, the last one gone ends it. Per-
 * device topics give one filter per device, so the table grows past its
 * first 256 buckets (doubling while the filters outnumber them) and must
 * still find every filter it held before: a second subscriber of a filter
 * makes no second SUB, and once every subscriber left no SUB is held.
 * $SYS/broker/cluster/subjects counts the SUBs.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "broker_harness.h"
#include "cluster.h"
#include "cluster_harness.h"
#include "unit_main.h"

#define CLIENTS 3
#define PER_CLIENT 700 /* under limits.max_subscriptions (1000); 2,100 filters in all */

static void subscribe_range(struct hclient *c, const char *id, unsigned from, unsigned n)
{
	uint8_t connect[64];
	size_t len = strlen(id);
	size_t i = 0;
	connect[i++] = 0x10;
	connect[i++] = (uint8_t)(12 + len);
	memcpy(connect + i, "\x00\x04MQTT\x04\x02\x00\x3c\x00", 11);
	i += 11;
	connect[i++] = (uint8_t)len;
	memcpy(connect + i, id, len);
	client_send(c, connect, i + len);
	for (unsigned k = 0; k < n; k++) {
		char filter[32];
		int flen = snprintf(filter, sizeof filter, "d/%u/cmd", from + k);
		uint8_t p[48];
		size_t at = 0;
		p[at++] = 0x82;
		p[at++] = (uint8_t)(2 + 2 + flen + 1);
		p[at++] = (uint8_t)((k + 1) >> 8);
		p[at++] = (uint8_t)(k + 1);
		p[at++] = 0;
		p[at++] = (uint8_t)flen;
		memcpy(p + at, filter, (size_t)flen);
		at += (size_t)flen;
		p[at++] = 1; /* QoS 1 */
		client_send(c, p, at);
	}
}

/* CLIENTS clients, the i-th subscribing to filters i * PER_CLIENT on. */
static void subscribe_all(struct harness *h, const char *name, struct hclient **clients)
{
	for (unsigned i = 0; i < CLIENTS; i++) {
		char id[16];
		snprintf(id, sizeof id, "%s%u", name, i);
		clients[i] = harness_connect(h);
		subscribe_range(clients[i], id, i * PER_CLIENT, PER_CLIENT);
		harness_run(h);
	}
}

static void test_table_grows_and_finds(void)
{
	struct cluster *cl = NULL;
	/* No interest announcements: no SUBACK waits for the other nodes. */
	struct harness *h = cluster_harness_up(", \"durable\": false, \"interest\": false", &cl);
	CU_ASSERT_FATAL(h != NULL && cl != NULL);
	struct broker *b = harness_broker(h);
	struct hclient *first[CLIENTS], *second[CLIENTS];
	subscribe_all(h, "first", first);
	CU_ASSERT_EQUAL(b->stats.cluster.subjects, CLIENTS * PER_CLIENT);
	/* The same filters again, by other clients, after the growth: each
	 * found, none subscribed twice. */
	subscribe_all(h, "second", second);
	CU_ASSERT_EQUAL(b->stats.cluster.subjects, CLIENTS * PER_CLIENT);
	for (unsigned i = 0; i < CLIENTS; i++)
		client_close(first[i]); /* clean sessions: their subscriptions go */
	harness_run(h);
	CU_ASSERT_EQUAL(b->stats.cluster.subjects, CLIENTS * PER_CLIENT); /* the second ones still hold them */
	for (unsigned i = 0; i < CLIENTS; i++)
		client_close(second[i]);
	harness_run(h);
	CU_ASSERT_EQUAL(b->stats.cluster.subjects, 0);
	cluster_stop(cl);
	harness_free(h);
}

static CU_TestInfo tests[] = {
	/* Alone: cluster_stop ends cnats's library. */
	{"the filters' table grows and still finds each filter", test_table_grows_and_finds},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_filters", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
