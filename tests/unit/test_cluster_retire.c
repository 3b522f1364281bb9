/*
 * NATS subscriptions unsubscribed while the broker runs are destroyed only
 * NATS_RETIRE_MS later (cluster/retire.h: libnats 3.4's read loop can
 * still hold a subscription it looked up, nats.c issue 637), and at stop
 * only once every connection is closed.
 *
 * The wraps see every subscription destroyed and every connection made
 * and closed, and move CLOCK_MONOTONIC forward (the loop's clock and the
 * JetStream worker's) so that no test waits seconds. Connections never
 * connect (nothing listens on port 1); the worker's JetStream calls are
 * wrapped to succeed, so that it binds a group's consumer (a plain
 * subscription on its connection) and unbinds it when the group leaves.
 */
#include <CUnit/CUnit.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "broker_harness.h"
#include "cluster.h"
#include "cluster_harness.h"
#include "inbox.h"
#include "jetstream.h"
#include "nats_conn_watch.h"
#include "retire.h"
#include "unit_main.h"

static _Atomic bool stopping;
static _Atomic unsigned destroyed, destroyed_in_stop, destroyed_while_open;
static _Atomic int64_t clock_offset_ms;
static size_t worker_conn; /* which nats_conn_watch_get is the worker's, set before it starts */

/* Fake subscriptions of the list's own tests: recorded, never freed. */
static char fakes[64];
static bool is_fake(const natsSubscription *sub)
{
	return (const char *)sub >= fakes && (const char *)sub < fakes + sizeof fakes;
}

void __real_natsSubscription_Destroy(natsSubscription *sub);
int __real_clock_gettime(clockid_t id, struct timespec *ts);

void __wrap_natsSubscription_Destroy(natsSubscription *sub);
void __wrap_natsSubscription_Destroy(natsSubscription *sub)
{
	if (!sub)
		return;
	destroyed++;
	if (stopping) {
		destroyed_in_stop++;
		if (nats_conn_watch_any_open())
			destroyed_while_open++;
	}
	if (!is_fake(sub))
		__real_natsSubscription_Destroy(sub);
}

/* The loop's and the worker's clock, moved forward by the tests. */
int __wrap_clock_gettime(clockid_t id, struct timespec *ts);
int __wrap_clock_gettime(clockid_t id, struct timespec *ts)
{
	int rc = __real_clock_gettime(id, ts);
	int64_t off = clock_offset_ms;
	if (rc == 0 && id == CLOCK_MONOTONIC && off) {
		int64_t ns = (int64_t)ts->tv_nsec + (off % 1000) * 1000000;
		ts->tv_sec += (time_t)(off / 1000 + ns / 1000000000);
		ts->tv_nsec = (long)(ns % 1000000000);
	}
	return rc;
}

/* ---- JetStream, as a server that has the stream and every consumer ---- */

static _Atomic unsigned js_subscribed;

natsConnStatus __wrap_natsConnection_Status(natsConnection *nc);
natsConnStatus __wrap_natsConnection_Status(natsConnection *nc)
{
	(void)nc;
	return NATS_CONN_STATUS_CONNECTED;
}

static _Atomic unsigned unsubscribed;

/* The filters' SUBs and the groups' queue SUBs the sender threads made
 * (sender.h). */
static _Atomic unsigned filter_subscribed, group_subscribed;
natsStatus __real_natsConnection_QueueSubscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
						const char *queue, natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_QueueSubscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
						const char *queue, natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_QueueSubscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
						const char *queue, natsMsgHandler cb, void *closure)
{
	natsStatus st = __real_natsConnection_QueueSubscribe(sub, nc, subject, queue, cb, closure);
	group_subscribed++;
	return st;
}
natsStatus __real_natsConnection_Subscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
					   natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_Subscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
					   natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_Subscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
					   natsMsgHandler cb, void *closure)
{
	natsStatus st = __real_natsConnection_Subscribe(sub, nc, subject, cb, closure);
	if (strncmp(subject, "wisp.", 5) == 0)
		filter_subscribed++;
	return st;
}
natsStatus __real_natsSubscription_Unsubscribe(natsSubscription *sub);
natsStatus __wrap_natsSubscription_Unsubscribe(natsSubscription *sub);
natsStatus __wrap_natsSubscription_Unsubscribe(natsSubscription *sub)
{
	unsubscribed++;
	return __real_natsSubscription_Unsubscribe(sub);
}

natsStatus __wrap_js_GetStreamInfo(jsStreamInfo **si, jsCtx *js, const char *stream, jsOptions *opts,
				   jsErrCode *errCode);
natsStatus __wrap_js_GetStreamInfo(jsStreamInfo **si, jsCtx *js, const char *stream, jsOptions *opts,
				   jsErrCode *errCode)
{
	(void)js;
	(void)stream;
	(void)opts;
	(void)errCode;
	*si = calloc(1, sizeof **si);
	return *si ? NATS_OK : NATS_NO_MEMORY;
}

void __wrap_jsStreamInfo_Destroy(jsStreamInfo *si);
void __wrap_jsStreamInfo_Destroy(jsStreamInfo *si) { free(si); }

natsStatus __wrap_js_GetConsumerInfo(jsConsumerInfo **ci, jsCtx *js, const char *stream, const char *consumer,
				     jsOptions *opts, jsErrCode *errCode);
natsStatus __wrap_js_GetConsumerInfo(jsConsumerInfo **ci, jsCtx *js, const char *stream, const char *consumer,
				     jsOptions *opts, jsErrCode *errCode)
{
	(void)js;
	(void)stream;
	(void)consumer;
	(void)opts;
	(void)errCode;
	*ci = calloc(1, sizeof **ci); /* delivered nothing: not ahead of the stream */
	return *ci ? NATS_OK : NATS_NO_MEMORY;
}

void __wrap_jsConsumerInfo_Destroy(jsConsumerInfo *ci);
void __wrap_jsConsumerInfo_Destroy(jsConsumerInfo *ci) { free(ci); }

natsStatus __wrap_js_Subscribe(natsSubscription **sub, jsCtx *js, const char *subject, natsMsgHandler cb,
			       void *cbClosure, jsOptions *opts, jsSubOptions *subOpts, jsErrCode *errCode);
natsStatus __wrap_js_Subscribe(natsSubscription **sub, jsCtx *js, const char *subject, natsMsgHandler cb,
			       void *cbClosure, jsOptions *opts, jsSubOptions *subOpts, jsErrCode *errCode)
{
	(void)js;
	(void)cb;
	(void)cbClosure;
	(void)opts;
	(void)subOpts;
	(void)errCode;
	natsStatus st = natsConnection_SubscribeSync(sub, nats_conn_watch_get(worker_conn), subject);
	if (st == NATS_OK)
		js_subscribed++;
	return st;
}

/* ---- the list alone ---- */

static uint64_t fake_now;
static unsigned armed;
static uint64_t fake_clock(void *ctx)
{
	(void)ctx;
	return fake_now;
}
static void fake_arm(void *ctx, uint64_t due)
{
	(void)ctx;
	(void)due;
	armed++;
}

static void test_list_deadline(void)
{
	struct nats_retire r;
	nats_retire_init(&r, fake_clock, fake_arm, NULL);
	fake_now = 1000;
	armed = 0;
	unsigned before = destroyed;
	natsSubscription *a = (natsSubscription *)(void *)&fakes[0];
	natsSubscription *b = (natsSubscription *)(void *)&fakes[1];
	nats_retire_sub(&r, &a);
	CU_ASSERT_PTR_NULL(a);
	CU_ASSERT_EQUAL(armed, 1);
	fake_now = 2000;
	nats_retire_sub(&r, &b);
	CU_ASSERT_EQUAL(armed, 1); /* armed for the first only */
	CU_ASSERT_EQUAL(nats_retire_due(&r), 1000 + NATS_RETIRE_MS);
	fake_now = 1000 + NATS_RETIRE_MS - 1;
	CU_ASSERT_EQUAL(nats_retire_due(&r), 1000 + NATS_RETIRE_MS);
	CU_ASSERT_EQUAL(destroyed - before, 0);
	fake_now = 1000 + NATS_RETIRE_MS;
	CU_ASSERT_EQUAL(nats_retire_due(&r), 2000 + NATS_RETIRE_MS);
	CU_ASSERT_EQUAL(destroyed - before, 1);
	fake_now = 2000 + NATS_RETIRE_MS;
	CU_ASSERT_EQUAL(nats_retire_due(&r), 0);
	CU_ASSERT_EQUAL(destroyed - before, 2);
	nats_retire_all(&r);
}

/* Full while running: the oldest goes early (counted); stopping: no cap. */
static void test_list_bound(void)
{
	struct nats_retire r;
	nats_retire_init(&r, fake_clock, NULL, NULL);
	fake_now = 0;
	unsigned before = destroyed;
	for (unsigned i = 0; i < NATS_RETIRE_MAX + 3; i++) {
		natsSubscription *s = (natsSubscription *)(void *)&fakes[i % sizeof fakes];
		nats_retire_sub(&r, &s);
	}
	CU_ASSERT_EQUAL(r.n, NATS_RETIRE_MAX);
	CU_ASSERT_EQUAL(r.early, 3);
	CU_ASSERT_EQUAL(destroyed - before, 3);
	r.stopping = true;
	for (unsigned i = 0; i < 10; i++) {
		natsSubscription *s = (natsSubscription *)(void *)&fakes[i];
		nats_retire_sub(&r, &s);
	}
	CU_ASSERT_EQUAL(r.n, NATS_RETIRE_MAX + 10);
	CU_ASSERT_EQUAL(r.early, 3);
	nats_retire_all(&r);
	CU_ASSERT_EQUAL(destroyed - before, NATS_RETIRE_MAX + 13);
	CU_ASSERT_EQUAL(r.n, 0);
}

/* ---- the JetStream worker's list ---- */

static bool wait_for(_Atomic unsigned *v, unsigned want)
{
	for (int i = 0; i < 500 && *v < want; i++) /* 5 s at most */
		nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	return *v >= want;
}

static bool wait_event(struct inbox *acks, unsigned ev)
{
	for (int i = 0; i < 500; i++) {
		void *items[16];
		unsigned got = 0;
		uint64_t dropped = 0;
		inbox_take(acks, items, 16, &got, &dropped);
		if (got & ev)
			return true;
		nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	}
	return false;
}

/* The worker wakes every RETRY_MS (500 ms) at the latest: 600 ms lets it
 * look at its list once more. */
static void let_worker_run(void) { nanosleep(&(struct timespec){.tv_nsec = 600000000}, NULL); }

static void test_worker_destroys_after_deadline(void)
{
	struct inbox acks, msgs;
	CU_ASSERT_FATAL(inbox_init(&acks, 64) == 0 && inbox_init(&msgs, 64) == 0);
	struct jsw_config wc = {.stream = "S", .consumer = "t", .replicas = 1, .max_age_s = 60,
				.duplicate_window_s = 60, .out_cap = 8, .ack_cap = 8};
	struct jsw *w = NULL;
	worker_conn = nats_conn_watch_count(); /* its connection is the next one made */
	CU_ASSERT_EQUAL_FATAL(jsw_start(&w, "nats://127.0.0.1:1", &wc, &acks, &msgs), 0);
	CU_ASSERT_FATAL(nats_conn_watch_count() == worker_conn + 1);
	CU_ASSERT_FATAL(wait_event(&acks, JSW_EV_READY)); /* its own consumer bound */
	unsigned base = destroyed;

	CU_ASSERT_EQUAL_FATAL(jsw_group_join(w, 1, "g1", "S.a", NULL), 0);
	CU_ASSERT_FATAL(wait_event(&acks, JSW_EV_GROUP));
	unsigned subs = js_subscribed;
	unsigned unsubs = unsubscribed;
	jsw_group_leave(w, 1);
	CU_ASSERT(wait_for(&unsubscribed, unsubs + 1)); /* unbound */
	let_worker_run();
	/* Not destroyed: then 2 s more pass (the real ones included, under
	 * its 5 s by more than a second). */
	CU_ASSERT_EQUAL(destroyed - base, 0);
	clock_offset_ms += NATS_RETIRE_MS - 3000;
	let_worker_run();
	CU_ASSERT_EQUAL(destroyed - base, 0);
	clock_offset_ms += 3000;
	CU_ASSERT(wait_for(&destroyed, base + 1)); /* its deadline passed: destroyed on a wake-up */
	CU_ASSERT_EQUAL(destroyed - base, 1);

	/* Stopping: the one left just now, and the worker's own two, go to
	 * the caller's list; destroyed once the connection is closed. */
	CU_ASSERT_EQUAL_FATAL(jsw_group_join(w, 2, "g2", "S.b", NULL), 0);
	CU_ASSERT_FATAL(wait_event(&acks, JSW_EV_GROUP));
	CU_ASSERT(js_subscribed > subs);
	unsubs = unsubscribed;
	jsw_group_leave(w, 2);
	CU_ASSERT(wait_for(&unsubscribed, unsubs + 1));
	struct nats_retire stop_list;
	nats_retire_init(&stop_list, fake_clock, NULL, NULL);
	base = destroyed;
	stopping = true;
	jsw_stop(w, &stop_list);
	CU_ASSERT_EQUAL(destroyed - base, 0);
	CU_ASSERT_EQUAL(stop_list.n, 3); /* g2's, the consumer's and the replies' */
	nats_retire_all(&stop_list);
	stopping = false;
	CU_ASSERT_EQUAL(destroyed - base, 3);
	CU_ASSERT_EQUAL(destroyed_while_open, 0);
	jsw_free(w);
	inbox_free(&acks, NULL);
	inbox_free(&msgs, NULL);
	clock_offset_ms = 0;
}

/* ---- the loop's lists: a filter's subscription, a shared group's ---- */

static void test_loop_destroys_after_deadline(void)
{
	struct cluster *cl = NULL;
	/* As if both connections were up: the filter's SUB and the group's
	 * queue SUB are made now (cnats buffers them until it connects). */
	struct harness *h = cluster_harness_up(", \"durable\": false", &cl);
	CU_ASSERT_FATAL(h != NULL && cl != NULL);
	struct broker *b = harness_broker(h);
	/* Past the settling interval after a connect: the SUBACKs below are
	 * not held for nodes that might exist (interest.c's gate). */
	clock_offset_ms += ((int64_t)b->cfg->cluster.interest_interval + 2) * 1000;
	harness_run(h);
	struct hclient *c = harness_connect(h);
	client_send_hex(c, "10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'sub'");
	client_send_hex(c, "82 08 00 01 00 03 'a/b' 00");
	client_send_hex(c, "82 0f 00 02 00 0a '$share/g/a' 00");
	harness_run(h);
	/* No NATS server to bring the group's mark back: its SUBACK goes at
	 * cluster.interest_ack_timeout. */
	clock_offset_ms += ((int64_t)b->cfg->cluster.interest_ack_timeout + 1) * 1000;
	harness_run(h);
	/* Made, not only queued: their UNSUBs reach cnats. */
	CU_ASSERT(wait_for(&filter_subscribed, 1));
	CU_ASSERT(wait_for(&group_subscribed, 1));
	uint64_t subjects = b->stats.cluster.subjects;
	CU_ASSERT(subjects >= 2);
	unsigned base = destroyed;
	unsigned unsubs = unsubscribed;
	client_send_hex(c, "a2 07 00 03 00 03 'a/b'"); /* and runs the broker */
	client_send_hex(c, "a2 0e 00 04 00 0a '$share/g/a'");
	harness_run(h);
	/* Both last ones gone: unsubscribed (by the sender threads,
	 * sender.h), not destroyed yet. */
	CU_ASSERT(wait_for(&unsubscribed, unsubs + 2));
	CU_ASSERT_EQUAL(unsubscribed - unsubs, 2);
	CU_ASSERT_EQUAL(b->stats.cluster.subjects, subjects - 2);
	CU_ASSERT_EQUAL(destroyed - base, 0);
	clock_offset_ms += NATS_RETIRE_MS - 1000;
	harness_run(h);
	CU_ASSERT_EQUAL(destroyed - base, 0);
	/* Past the deadline: each sender thread destroys its own at its next
	 * wake-up (it waits in real time, which the test does not move): a
	 * new filter's SUB wakes the main one, a new group's the share one. */
	clock_offset_ms += 2000;
	client_send_hex(c, "82 08 00 07 00 03 'e/f' 00"); /* and runs the broker */
	client_send_hex(c, "82 0f 00 08 00 0a '$share/g/e' 00");
	for (int i = 0; i < 1000 && destroyed - base < 2; i++) { /* 10 s at most: two threads to wake, ASan, load */
		harness_run(h);
		nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	}
	CU_ASSERT_EQUAL(destroyed - base, 2);

	/* Stopping: one unsubscribed just before is destroyed only once every
	 * connection is closed, with all the others. */
	base = destroyed;
	client_send_hex(c, "82 08 00 05 00 03 'c/d' 00");
	client_send_hex(c, "a2 07 00 06 00 03 'c/d'");
	harness_run(h);
	CU_ASSERT_EQUAL(destroyed - base, 0);
	stopping = true;
	cluster_stop(cl);
	stopping = false;
	CU_ASSERT(destroyed - base >= 1);
	CU_ASSERT_EQUAL(destroyed_while_open, 0);
	harness_free(h);
	clock_offset_ms = 0;
}

static CU_TestInfo tests[] = {
	{"a retired subscription is destroyed at its deadline, not before", test_list_deadline},
	{"the list is bounded while running, not while stopping", test_list_bound},
	{"the JetStream worker destroys a group's subscription after its deadline", test_worker_destroys_after_deadline},
	/* Last: cluster_stop ends cnats's library. */
	{"the senders destroy a filter's and a group's subscription after their deadline",
	 test_loop_destroys_after_deadline},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_retire", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
