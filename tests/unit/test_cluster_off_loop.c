/*
 * The loop thread writes nothing to a NATS connection while the node runs
 * (cluster/sender.h): every cnats call that writes takes the connection's
 * lock, which a write stalled by a server that stopped reading holds up to
 * cluster.write_deadline, so one made on the loop stopped every client of
 * the node for that long (tests/e2e/35_cluster_nats_stall.py shows it end
 * to end on the main connection).
 *
 * The wraps record each natsConnection_PublishMsg, natsConnection_Subscribe,
 * natsConnection_QueueSubscribe, natsSubscription_Unsubscribe and
 * natsConnection_GetStats (a look that takes the same lock) made on the
 * test's own thread, which runs the broker's loop, while `watching`: after
 * the start and before the stop, which may still call cnats there. The
 * calls the sender threads make are on theirs and go through to cnats
 * (nothing listens: the connections never connect). What a client does
 * here makes each kind of write: its claim at CONNECT, a filter's SUB and
 * UNSUB, a shared group's queue SUBs and UNSUBs, the interest
 * announcements (add, del, the beats, a new group's mark), the claims'
 * look every second.
 */
#include <CUnit/CUnit.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "broker_harness.h"
#include "cluster.h"
#include "cluster_harness.h"
#include "nats_conn_watch.h"
#include "unit_main.h"

static pthread_t loop_thread;
static atomic_bool watching;
static atomic_uint on_loop;  /* calls recorded */
static char first_call[160]; /* the first one, for the failure message */

static void record(const char *call, const char *subject)
{
	if (!atomic_load(&watching) || !pthread_equal(pthread_self(), loop_thread))
		return;
	if (atomic_fetch_add(&on_loop, 1) == 0)
		snprintf(first_call, sizeof first_call, "%s(%s)", call, subject ? subject : "");
}

natsStatus __real_natsConnection_PublishMsg(natsConnection *nc, natsMsg *msg);
natsStatus __wrap_natsConnection_PublishMsg(natsConnection *nc, natsMsg *msg);
natsStatus __wrap_natsConnection_PublishMsg(natsConnection *nc, natsMsg *msg)
{
	record("natsConnection_PublishMsg", natsMsg_GetSubject(msg));
	return __real_natsConnection_PublishMsg(nc, msg);
}

/* The SUBs made off the loop (by the sender threads), with their
 * connection: a rejoin must make the share subscriptions again on the
 * connection made anew. */
#define SUBS_SEEN_MAX 64
static natsConnection *_Atomic subs_seen[SUBS_SEEN_MAX]; /* NULL: a slot taken, not written yet */
static atomic_size_t nsubs_seen;

natsStatus __real_natsConnection_Subscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
					   natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_Subscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
					   natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_Subscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
					   natsMsgHandler cb, void *closure)
{
	record("natsConnection_Subscribe", subject);
	if (!pthread_equal(pthread_self(), loop_thread)) {
		size_t i = atomic_fetch_add(&nsubs_seen, 1);
		if (i < SUBS_SEEN_MAX)
			atomic_store(&subs_seen[i], nc);
	}
	return __real_natsConnection_Subscribe(sub, nc, subject, cb, closure);
}

/* Subscriptions the sender threads made on nc so far. */
static unsigned subs_made_on(const natsConnection *nc)
{
	unsigned n = 0;
	size_t seen = atomic_load(&nsubs_seen);
	for (size_t i = 0; i < seen && i < SUBS_SEEN_MAX; i++)
		n += atomic_load(&subs_seen[i]) == nc;
	return n;
}

natsStatus __real_natsConnection_QueueSubscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
						const char *queue, natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_QueueSubscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
						const char *queue, natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_QueueSubscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
						const char *queue, natsMsgHandler cb, void *closure)
{
	record("natsConnection_QueueSubscribe", subject);
	return __real_natsConnection_QueueSubscribe(sub, nc, subject, queue, cb, closure);
}

natsStatus __real_natsSubscription_Unsubscribe(natsSubscription *sub);
natsStatus __wrap_natsSubscription_Unsubscribe(natsSubscription *sub);
natsStatus __wrap_natsSubscription_Unsubscribe(natsSubscription *sub)
{
	record("natsSubscription_Unsubscribe", natsSubscription_GetSubject(sub));
	return __real_natsSubscription_Unsubscribe(sub);
}

natsStatus __real_natsConnection_GetStats(natsConnection *nc, natsStatistics *stats);
natsStatus __wrap_natsConnection_GetStats(natsConnection *nc, natsStatistics *stats);
natsStatus __wrap_natsConnection_GetStats(natsConnection *nc, natsStatistics *stats)
{
	record("natsConnection_GetStats", NULL);
	return __real_natsConnection_GetStats(nc, stats);
}

/* Looks: each takes the connection's lock, which cnats's reconnect
 * thread holds through a connect attempt. Asking whether a connection cnats
 * gave up is closed does not wait (no attempt holds it any more). */
natsConnStatus __real_natsConnection_Status(natsConnection *nc);
natsConnStatus __wrap_natsConnection_Status(natsConnection *nc);
natsConnStatus __wrap_natsConnection_Status(natsConnection *nc)
{
	natsConnStatus st = __real_natsConnection_Status(nc);
	if (st != NATS_CONN_STATUS_CLOSED)
		record("natsConnection_Status", NULL);
	return st;
}

int64_t __real_natsConnection_GetMaxPayload(natsConnection *nc);
int64_t __wrap_natsConnection_GetMaxPayload(natsConnection *nc);
int64_t __wrap_natsConnection_GetMaxPayload(natsConnection *nc)
{
	record("natsConnection_GetMaxPayload", NULL);
	return __real_natsConnection_GetMaxPayload(nc);
}

/* Runs the broker for about ms milliseconds of real time (the loop's
 * timers are in whole seconds). */
static void run_for(struct harness *h, long ms)
{
	for (long waited = 0; waited < ms; waited += 50) {
		harness_run(h);
		nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
	}
}

static void test_no_write_on_loop(void)
{
	struct cluster *cl = NULL;
	loop_thread = pthread_self();
	/* Beats every second: the SUBACKs, held for the settling interval
	 * after the connect (interest.c's gate), go after 2 s; the group's
	 * (its mark never comes back: nothing listens) after 1 s more, and
	 * the SUBACKs behind it with it. */
	struct harness *h = cluster_harness_up(", \"durable\": false, \"interest_interval\": 1, "
					       "\"interest_ack_timeout\": 1", &cl);
	CU_ASSERT_FATAL(h != NULL && cl != NULL);
	struct broker *b = harness_broker(h);
	atomic_store(&on_loop, 0);
	atomic_store(&watching, true);

	struct hclient *c = harness_connect(h);
	client_send_hex(c, "10 10 00 04 'MQTT' 04 02 00 3c 00 04 'sub1'");   /* a claim */
	client_send_hex(c, "82 08 00 01 00 03 'a/b' 00");                    /* SUB, add */
	client_send_hex(c, "82 0a 00 02 00 05 'c/d/#' 00");                  /* SUB, parent SUB, add */
	struct hclient *d = harness_connect(h);
	client_send_hex(d, "10 10 00 04 'MQTT' 04 02 00 3c 00 04 'sub2'");
	client_send_hex(d, "82 08 00 01 00 03 'e/f' 00");
	client_send_hex(d, "a2 07 00 02 00 03 'e/f'");                       /* UNSUB, del */
	struct hclient *e = harness_connect(h);
	client_send_hex(e, "10 10 00 04 'MQTT' 04 02 00 3c 00 04 'sub3'");
	client_send_hex(e, "82 11 00 01 00 0c '$share/g/x/#' 00");           /* two queue SUBs, add, mark */
	run_for(h, 3000); /* past the settling interval; the claims' look and the beats, each second */
	/* Every SUBACK out (c: 14 bytes with its CONNACK, e: 9), so that
	 * the closes below are read. */
	size_t c_out = 0, e_out = 0;
	for (int i = 0; i < 70 && (c_out < 14 || e_out < 9); i++) {
		run_for(h, 100);
		client_output(c, &c_out);
		client_output(e, &e_out);
	}
	CU_ASSERT_EQUAL(c_out, 14);
	CU_ASSERT_EQUAL(e_out, 9);
	uint64_t held = b->stats.cluster.subjects;
	client_close(e); /* clean sessions: their filters and groups go, UNSUBs and dels */
	client_close(d);
	client_close(c);
	harness_run(h);

	if (atomic_load(&on_loop))
		fprintf(stderr, "\n%u cnats writes on the loop thread, the first: %s\n", atomic_load(&on_loop),
			first_call);
	CU_ASSERT_EQUAL(atomic_load(&on_loop), 0);
	CU_ASSERT_EQUAL(held, 5); /* a/b, c.d.>, c.d, and x.>, x in queue g: queued to the senders */
	CU_ASSERT_EQUAL(b->stats.cluster.subjects, 0);

	/* A rejoin: cnats gives both connections up for good (as when a
	 * server refused each twice in a row), and the node makes them anew
	 * on connector threads and moves every subscription over: the
	 * filters', and on '<node>-share' the claims', handovers' (two),
	 * interest's (two) and $SYS figures'. The new connections never
	 * connect (nothing listens), so each is in a connect attempt, holding
	 * its lock, whenever the loop would ask it anything. */
	struct hclient *f = harness_connect(h);
	client_send_hex(f, "10 10 00 04 'MQTT' 04 02 00 3c 00 04 'sub4'");
	client_send_hex(f, "82 08 00 01 00 03 'g/h' 00");
	run_for(h, 200);
	size_t made = nats_conn_watch_count();
	CU_ASSERT_EQUAL_FATAL(made, 2); /* the main connection and '<node>-share' */
	natsConnection *first[2] = {nats_conn_watch_get(0), nats_conn_watch_get(1)};
	natsConnection_Close(first[0]);
	natsConnection_Close(first[1]);
	unsigned moved = 0;
	for (int i = 0; i < 100 && moved < 6; i++) { /* the first try comes after 1 s */
		run_for(h, 100);
		moved = 0;
		for (size_t k = made; k < nats_conn_watch_count(); k++)
			moved += subs_made_on(nats_conn_watch_get(k));
	}
	CU_ASSERT_EQUAL(nats_conn_watch_count(), made + 2);
	CU_ASSERT_EQUAL(moved, 6); /* the filter's waits for its connection to come up */
	run_for(h, 1100); /* the claims' look, a second later, on the new '<node>-share' */
	client_close(f);
	harness_run(h);

	atomic_store(&watching, false);
	if (atomic_load(&on_loop))
		fprintf(stderr, "\n%u cnats calls on the loop thread, the first: %s\n", atomic_load(&on_loop),
			first_call);
	CU_ASSERT_EQUAL(atomic_load(&on_loop), 0);
	cluster_stop(cl);
	harness_free(h);
}

static CU_TestInfo tests[] = {
	/* Alone: cluster_stop ends cnats's library. */
	{"no cnats write on the loop thread while the node runs, a rejoin included", test_no_write_on_loop},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_off_loop", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
