/*
 * The cluster's QoS 0 publishing thread (broker/src/cluster/sender.h): order
 * kept, the ring's two bounds, refusals counted, sender_forget and
 * sender_stop; its control operations (SUB, UNSUB, publishes that are never
 * dropped) queued without waiting for a publish in progress, in order,
 * a SUB not made yet forgotten at its UNSUB, and the control bound. Run
 * under ThreadSanitizer too (tests/tsan_ci.cmake).
 *
 * No NATS server: each connection points at a loopback port that is bound
 * but never listens, with retry on a failed connect (and a connected
 * callback, without which cnats 3.4 retries synchronously and gives up), so
 * natsConnection_Connect returns NATS_NOT_YET_CONNECTED and publishes go to
 * cnats's reconnect buffer, refused once it is full. The link wraps
 * natsConnection_PublishMsg and natsMsg_Destroy (-Wl,--wrap, CMakeLists.txt)
 * to see what the thread publishes, hold it inside a publish (the gate), and
 * count destroyed messages; the real cnats call still does the work. The
 * wraps of natsConnection_Subscribe, natsConnection_QueueSubscribe and
 * natsSubscription_Unsubscribe list the subjects the thread subscribed and
 * unsubscribed; the subscribe wraps keep the handler and closure cnats got,
 * so a test can deliver a message as cnats would.
 *
 * Subjects: "t.<conn>.<seq>" must be published, seq 0, 1, ... per conn;
 * "drop.<n>" must never be; "big.<n>" are refused as over the server's
 * max_payload (cnats checks that only once connected: the wrap answers).
 */
#include <CUnit/CUnit.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "retire.h"
#include "sender.h"
#include "unit_main.h"

natsStatus __real_natsConnection_PublishMsg(natsConnection *nc, natsMsg *msg);
natsStatus __real_natsConnection_Subscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
					   natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_Subscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
					   natsMsgHandler cb, void *closure);
natsStatus __real_natsConnection_QueueSubscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
						const char *queue, natsMsgHandler cb, void *closure);
natsStatus __wrap_natsConnection_QueueSubscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
						const char *queue, natsMsgHandler cb, void *closure);
natsStatus __real_natsSubscription_Unsubscribe(natsSubscription *sub);
natsStatus __wrap_natsSubscription_Unsubscribe(natsSubscription *sub);
natsStatus __wrap_natsConnection_PublishMsg(natsConnection *nc, natsMsg *msg);
void __real_natsMsg_Destroy(natsMsg *msg);
void __wrap_natsMsg_Destroy(natsMsg *msg);

#define CONNS 2

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool gate_closed;   /* publishes wait at the gate until it opens */
	size_t entered;     /* publishes begun */
	size_t done;        /* publishes returned from cnats */
	size_t refused;     /* of them, not NATS_OK */
	size_t unexpected;  /* "drop." subjects published, or unparsable */
	bool out_of_order;
	uint32_t next[CONNS];
	bool finished;      /* the call a releaser waits for returned */
	char subscribed[256];   /* the subjects subscribed, in order, each followed by ' ' */
	char unsubscribed[256]; /* the same for natsSubscription_Unsubscribe */
	size_t unsubscribes;
	natsMsgHandler cb;  /* the last subscription's, as cnats got them */
	void *closure;
} rec = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* Relaxed: counting must not add happens-before edges that could hide a
 * race in sender.c from ThreadSanitizer. */
static atomic_size_t destroyed;

static int down_fd = -1;
static char down_url[64];

static void record(const char *subject, natsStatus st)
{
	unsigned conn, seq;
	if (strncmp(subject, "t.", 2) != 0 || sscanf(subject, "t.%u.%u", &conn, &seq) != 2 || conn >= CONNS) {
		rec.unexpected++;
	} else {
		if (seq != rec.next[conn])
			rec.out_of_order = true;
		rec.next[conn] = seq + 1;
	}
	if (st != NATS_OK)
		rec.refused++;
	rec.done++;
}

natsStatus __wrap_natsConnection_PublishMsg(natsConnection *nc, natsMsg *msg)
{
	pthread_mutex_lock(&rec.mu);
	rec.entered++;
	pthread_cond_broadcast(&rec.cv);
	while (rec.gate_closed)
		pthread_cond_wait(&rec.cv, &rec.mu);
	pthread_mutex_unlock(&rec.mu);
	bool big = strncmp(natsMsg_GetSubject(msg), "big.", 4) == 0;
	natsStatus st = big ? NATS_MAX_PAYLOAD : __real_natsConnection_PublishMsg(nc, msg);
	pthread_mutex_lock(&rec.mu);
	if (big)
		rec.done++;
	else
		record(natsMsg_GetSubject(msg), st);
	pthread_cond_broadcast(&rec.cv);
	pthread_mutex_unlock(&rec.mu);
	return st;
}

static void append(char *list, size_t cap, const char *subject)
{
	size_t used = strlen(list);
	snprintf(list + used, cap - used, "%s ", subject);
}

/* A subscription the thread made: listed, its handler and closure kept. */
static void record_subscribed(const char *what, natsMsgHandler cb, void *closure)
{
	pthread_mutex_lock(&rec.mu);
	append(rec.subscribed, sizeof rec.subscribed, what);
	rec.cb = cb;
	rec.closure = closure;
	rec.done++;
	pthread_cond_broadcast(&rec.cv);
	pthread_mutex_unlock(&rec.mu);
}

natsStatus __wrap_natsConnection_Subscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
					   natsMsgHandler cb, void *closure)
{
	natsStatus st = __real_natsConnection_Subscribe(sub, nc, subject, cb, closure);
	record_subscribed(subject, cb, closure);
	return st;
}

natsStatus __wrap_natsConnection_QueueSubscribe(natsSubscription **sub, natsConnection *nc, const char *subject,
						const char *queue, natsMsgHandler cb, void *closure)
{
	natsStatus st = __real_natsConnection_QueueSubscribe(sub, nc, subject, queue, cb, closure);
	char both[128];
	snprintf(both, sizeof both, "%s@%s", subject, queue);
	record_subscribed(both, cb, closure);
	return st;
}

natsStatus __wrap_natsSubscription_Unsubscribe(natsSubscription *sub)
{
	const char *subject = natsSubscription_GetSubject(sub);
	pthread_mutex_lock(&rec.mu);
	append(rec.unsubscribed, sizeof rec.unsubscribed, subject ? subject : "?");
	pthread_mutex_unlock(&rec.mu);
	natsStatus st = __real_natsSubscription_Unsubscribe(sub);
	pthread_mutex_lock(&rec.mu);
	rec.unsubscribes++;
	pthread_cond_broadcast(&rec.cv);
	pthread_mutex_unlock(&rec.mu);
	return st;
}

void __wrap_natsMsg_Destroy(natsMsg *msg)
{
	if (msg)
		atomic_fetch_add_explicit(&destroyed, 1, memory_order_relaxed);
	__real_natsMsg_Destroy(msg);
}

static void reset(void)
{
	pthread_mutex_lock(&rec.mu);
	rec.gate_closed = false;
	rec.entered = rec.done = rec.refused = rec.unexpected = 0;
	rec.out_of_order = rec.finished = false;
	memset(rec.next, 0, sizeof rec.next);
	rec.subscribed[0] = rec.unsubscribed[0] = '\0';
	rec.unsubscribes = 0;
	rec.cb = NULL;
	rec.closure = NULL;
	pthread_mutex_unlock(&rec.mu);
	atomic_store(&destroyed, 0);
}

static struct timespec deadline_in(long ms)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

/* Waits until *counter reaches n; bounded, so a lost message fails the
 * test instead of hanging it. */
static bool wait_for(const size_t *counter, size_t n)
{
	struct timespec until = deadline_in(30000);
	pthread_mutex_lock(&rec.mu);
	int rc = 0;
	while (*counter < n && rc == 0)
		rc = pthread_cond_timedwait(&rec.cv, &rec.mu, &until);
	bool reached = *counter >= n;
	pthread_mutex_unlock(&rec.mu);
	return reached;
}

static void set_gate(bool closed)
{
	pthread_mutex_lock(&rec.mu);
	rec.gate_closed = closed;
	pthread_cond_broadcast(&rec.cv);
	pthread_mutex_unlock(&rec.mu);
}

/* Opens the gate once the test thread's call returned, or after a while if
 * it does not (a correct sender_forget / sender_stop cannot return while a
 * publish is held). Either way the test is deterministic: a call that
 * returns early is seen returning with the publish still held. */
static void *release_later(void *arg)
{
	(void)arg;
	struct timespec until = deadline_in(300);
	pthread_mutex_lock(&rec.mu);
	int rc = 0;
	while (!rec.finished && rc == 0)
		rc = pthread_cond_timedwait(&rec.cv, &rec.mu, &until);
	rec.gate_closed = false;
	pthread_cond_broadcast(&rec.cv);
	pthread_mutex_unlock(&rec.mu);
	return NULL;
}

static void noop_connected(natsConnection *nc, void *closure)
{
	(void)nc;
	(void)closure;
}

/* A connection that never connects; its publishes fill a reconnect buffer
 * of buf_size bytes (0: cnats's 8 MiB default). */
static natsConnection *connect_nowhere(int buf_size)
{
	natsOptions *o = NULL;
	natsConnection *nc = NULL;
	natsStatus st = natsOptions_Create(&o);
	if (st == NATS_OK)
		st = natsOptions_SetURL(o, down_url);
	if (st == NATS_OK) /* never gives up: a closed connection refuses differently */
		st = natsOptions_SetMaxReconnect(o, -1);
	if (st == NATS_OK) /* natsConnection_Destroy waits out one reconnect wait */
		st = natsOptions_SetReconnectWait(o, 50);
	if (st == NATS_OK && buf_size)
		st = natsOptions_SetReconnectBufSize(o, buf_size);
	if (st == NATS_OK)
		st = natsOptions_SetRetryOnFailedConnect(o, true, noop_connected, NULL);
	if (st == NATS_OK)
		st = natsConnection_Connect(&nc, o);
	CU_ASSERT_EQUAL(st, NATS_NOT_YET_CONNECTED);
	natsOptions_Destroy(o);
	return nc;
}

static natsMsg *make_msg(const char *subject, size_t payload_len)
{
	static const char payload[256];
	natsMsg *nm = NULL;
	if (payload_len > sizeof payload || natsMsg_Create(&nm, subject, NULL, payload, (int)payload_len) != NATS_OK)
		return NULL;
	return nm;
}

static bool push(struct sender *s, natsConnection *nc, const char *subject, size_t bytes, size_t *fill)
{
	natsMsg *nm = make_msg(subject, 8);
	CU_ASSERT_PTR_NOT_NULL_FATAL(nm);
	bool taken = sender_push(s, nc, nm, bytes, fill);
	if (!taken)
		natsMsg_Destroy(nm); /* still the caller's: a double free if the ring kept it */
	return taken;
}

static bool push_seq(struct sender *s, natsConnection *nc, unsigned conn, unsigned seq, size_t bytes, size_t *fill)
{
	char subject[32];
	snprintf(subject, sizeof subject, "t.%u.%u", conn, seq);
	return push(s, nc, subject, bytes, fill);
}

/* A fresh record, a connection that never connects (reconnect buffer of
 * buf_size bytes, 0: the default) and a sender of cap messages and
 * max_bytes bytes over it. */
static struct sender *start_nowhere(natsConnection **nc, int buf_size, size_t cap, uint64_t max_bytes)
{
	reset();
	*nc = connect_nowhere(buf_size);
	CU_ASSERT_PTR_NOT_NULL_FATAL(*nc);
	struct sender *s = NULL;
	CU_ASSERT_EQUAL_FATAL(sender_start(&s, cap, max_bytes), 0);
	return s;
}

/* Closes the gate and pushes t.0.0 on nc: the thread held inside its
 * publish, as in a write to a server that stopped reading. Returns *fill. */
static size_t hold_publish(struct sender *s, natsConnection *nc)
{
	set_gate(true);
	size_t fill = 0;
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 0, 64, &fill));
	CU_ASSERT_TRUE(wait_for(&rec.entered, 1));
	return fill;
}

/* A fresh record, two connections that never connect and a sender of 16
 * messages over them. */
static struct sender *start_two(natsConnection **old, natsConnection **nc)
{
	reset();
	*old = connect_nowhere(0);
	*nc = connect_nowhere(0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(*old);
	CU_ASSERT_PTR_NOT_NULL_FATAL(*nc);
	struct sender *s = NULL;
	CU_ASSERT_EQUAL_FATAL(sender_start(&s, 16, UINT64_C(1) << 30), 0);
	return s;
}

/* Tells release_later that the test thread's call returned; gives
 * rec.done at that moment. */
static size_t call_returned(void)
{
	pthread_mutex_lock(&rec.mu);
	size_t done = rec.done;
	rec.finished = true;
	pthread_cond_broadcast(&rec.cv);
	pthread_mutex_unlock(&rec.mu);
	return done;
}

/* What every test expects of the thread's publishes: each connection's
 * in order, connection 0 up to next0, no "drop." subject. */
static void assert_published_in_order(uint32_t next0)
{
	CU_ASSERT_FALSE(rec.out_of_order);
	CU_ASSERT_EQUAL(rec.next[0], next0);
	CU_ASSERT_EQUAL(rec.unexpected, 0);
}

static void test_published_in_order_and_owned(void)
{
	enum { N = 1000 };
	natsConnection *nc = NULL;
	struct sender *s = start_nowhere(&nc, 0, N, UINT64_C(1) << 30);
	CU_ASSERT_EQUAL(sender_cap(s), N);
	CU_ASSERT_EQUAL(sender_max_bytes(s), UINT64_C(1) << 30);
	size_t fill = 0;
	bool all_taken = true;
	for (unsigned i = 0; i < N; i++)
		all_taken &= push_seq(s, nc, 0, i, 64, &fill);
	CU_ASSERT_TRUE(all_taken);
	CU_ASSERT_TRUE(wait_for(&rec.done, N));
	sender_stop(s, NULL);
	assert_published_in_order(N);
	CU_ASSERT_EQUAL(rec.refused, 0);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), N); /* each freed by the sender, once */
	natsStatistics *stats = NULL;
	uint64_t out_msgs = 0;
	CU_ASSERT_EQUAL_FATAL(natsStatistics_Create(&stats), NATS_OK);
	CU_ASSERT_EQUAL(natsConnection_GetStats(nc, stats), NATS_OK);
	CU_ASSERT_EQUAL(natsStatistics_GetCounts(stats, NULL, NULL, &out_msgs, NULL, NULL), NATS_OK);
	CU_ASSERT_EQUAL(out_msgs, N); /* in cnats's reconnect buffer */
	natsStatistics_Destroy(stats);
	natsConnection_Destroy(nc);
}

/* The ring full by count: refused, *fill the cap, the message the
 * caller's; the episode's end shows as a small *fill again. */
static void test_refuses_at_cap(void)
{
	enum { CAP = 4 };
	natsConnection *nc = NULL;
	struct sender *s = start_nowhere(&nc, 0, CAP, UINT64_C(1) << 30);
	set_gate(true);
	size_t fill = 99;
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 0, 64, &fill));
	CU_ASSERT_TRUE(wait_for(&rec.entered, 1)); /* held in its publish, out of the ring */
	for (unsigned i = 1; i <= CAP; i++) {
		CU_ASSERT_TRUE(push_seq(s, nc, 0, i, 64, &fill));
		CU_ASSERT_EQUAL(fill, i);
	}
	CU_ASSERT_FALSE(push(s, nc, "drop.0", 64, &fill));
	CU_ASSERT_EQUAL(fill, CAP);
	set_gate(false);
	CU_ASSERT_TRUE(wait_for(&rec.done, CAP + 1));
	CU_ASSERT_TRUE(push_seq(s, nc, 0, CAP + 1, 64, &fill));
	CU_ASSERT_EQUAL(fill, 1);
	CU_ASSERT_TRUE(wait_for(&rec.done, CAP + 2));
	sender_stop(s, NULL);
	assert_published_in_order(CAP + 2);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), CAP + 3);
	natsConnection_Destroy(nc);
}

/* The ring full by bytes; a message larger than the bound still goes
 * alone, and the bytes of what the thread took count no more. */
static void test_refuses_at_max_bytes(void)
{
	natsConnection *nc = NULL;
	struct sender *s = start_nowhere(&nc, 0, 8, 100);
	set_gate(true);
	size_t fill = 99;
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 0, 500, &fill)); /* empty ring: a queue of one */
	CU_ASSERT_EQUAL(fill, 1);
	CU_ASSERT_TRUE(wait_for(&rec.entered, 1));
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 1, 60, &fill));
	CU_ASSERT_FALSE(push(s, nc, "drop.0", 41, &fill));
	CU_ASSERT_EQUAL(fill, 1);
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 2, 40, &fill)); /* exactly max_bytes */
	CU_ASSERT_EQUAL(fill, 2);
	CU_ASSERT_FALSE(push(s, nc, "drop.1", 1, &fill));
	CU_ASSERT_EQUAL(fill, 2);
	set_gate(false);
	CU_ASSERT_TRUE(wait_for(&rec.done, 3));
	set_gate(true);
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 3, 1, &fill));
	CU_ASSERT_TRUE(wait_for(&rec.entered, 4));
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 4, 100, &fill)); /* 100 bytes free again */
	CU_ASSERT_EQUAL(fill, 1);
	CU_ASSERT_FALSE(push(s, nc, "drop.2", 1, &fill));
	set_gate(false);
	CU_ASSERT_TRUE(wait_for(&rec.done, 5));
	sender_stop(s, NULL);
	assert_published_in_order(5);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), 8);
	natsConnection_Destroy(nc);
}

/* cnats refuses once its reconnect buffer is full: counted, and the
 * message freed all the same. */
static void test_counts_refused_publishes(void)
{
	enum { N = 8 };
	natsConnection *nc = NULL;
	struct sender *s = start_nowhere(&nc, 256, N, UINT64_C(1) << 30);
	size_t fill = 0;
	for (unsigned i = 0; i < N; i++) {
		char subject[32];
		snprintf(subject, sizeof subject, "t.0.%u", i);
		natsMsg *nm = make_msg(subject, 100);
		CU_ASSERT_PTR_NOT_NULL_FATAL(nm);
		CU_ASSERT_TRUE(sender_push(s, nc, nm, 100, &fill));
	}
	CU_ASSERT_TRUE(wait_for(&rec.done, N));
	/* The thread counts after the publish returns: once it holds the
	 * next one at the gate, the first N are all counted. */
	set_gate(true);
	CU_ASSERT_TRUE(push_seq(s, nc, 0, N, 8, &fill));
	CU_ASSERT_TRUE(wait_for(&rec.entered, N + 1));
	pthread_mutex_lock(&rec.mu);
	size_t refused = rec.refused;
	pthread_mutex_unlock(&rec.mu);
	CU_ASSERT_TRUE(refused > 0 && refused < N); /* the buffer took some */
	CU_ASSERT_EQUAL(sender_failed(s), refused);
	set_gate(false);
	CU_ASSERT_TRUE(wait_for(&rec.done, N + 1));
	sender_stop(s, NULL);
	CU_ASSERT_FALSE(rec.out_of_order);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), N + 1);
	natsConnection_Destroy(nc);
}

/* Over the server's max_payload: counted apart from the other refusals
 * (the loop logs it as a bound), freed, never tried again, and the
 * messages around it still go, in order. */
static void test_counts_too_large_apart(void)
{
	reset();
	natsConnection *nc = connect_nowhere(0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(nc);
	struct sender *s = NULL;
	CU_ASSERT_EQUAL_FATAL(sender_start(&s, 8, UINT64_C(1) << 30), 0);
	size_t fill = 0;
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 0, 64, &fill));
	CU_ASSERT_TRUE(push(s, nc, "big.0", 64, &fill));
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 1, 64, &fill));
	CU_ASSERT_TRUE(push(s, nc, "big.1", 64, &fill));
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 2, 64, &fill));
	CU_ASSERT_TRUE(wait_for(&rec.done, 5));
	/* Counted after the publish returns: final once the thread holds
	 * the next one at the gate. */
	set_gate(true);
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 3, 64, &fill));
	CU_ASSERT_TRUE(wait_for(&rec.entered, 6));
	CU_ASSERT_EQUAL(sender_too_large(s), 2);
	CU_ASSERT_EQUAL(sender_failed(s), 0);
	set_gate(false);
	CU_ASSERT_TRUE(wait_for(&rec.done, 6));
	sender_stop(s, NULL);
	CU_ASSERT_FALSE(rec.out_of_order);
	CU_ASSERT_EQUAL(rec.next[0], 4);
	CU_ASSERT_EQUAL(rec.unexpected, 0);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), 6);
	natsConnection_Destroy(nc);
}

/* A replaced connection: what is queued for it is dropped and counted, the
 * other connection's messages keep their order, and sender_forget returns
 * only once the publish in flight on it ended, so destroying it is safe. */
static void test_forget_drops_and_waits(void)
{
	natsConnection *old = NULL, *nc = NULL;
	struct sender *s = start_two(&old, &nc);
	set_gate(true);
	size_t fill = 0;
	CU_ASSERT_TRUE(push_seq(s, old, 0, 0, 64, &fill));
	CU_ASSERT_TRUE(wait_for(&rec.entered, 1));
	CU_ASSERT_TRUE(push(s, old, "drop.0", 64, &fill));
	CU_ASSERT_TRUE(push_seq(s, nc, 1, 0, 64, &fill));
	CU_ASSERT_TRUE(push(s, old, "drop.1", 64, &fill));
	CU_ASSERT_TRUE(push(s, old, "drop.2", 64, &fill));
	CU_ASSERT_TRUE(push_seq(s, nc, 1, 1, 64, &fill));
	CU_ASSERT_TRUE(push(s, old, "drop.3", 64, &fill));
	CU_ASSERT_EQUAL(sender_failed(s), 0);
	pthread_t releaser;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&releaser, NULL, release_later, NULL), 0);
	sender_forget(s, old);
	size_t done_at_return = call_returned();
	/* old's publish ended before the return (and, the lock being the
	 * thread's again at once, maybe nc's batch after it too) */
	CU_ASSERT_TRUE(done_at_return >= 1);
	CU_ASSERT_EQUAL(sender_failed(s), 4);
	natsConnection_Destroy(old);
	pthread_join(releaser, NULL);
	CU_ASSERT_TRUE(wait_for(&rec.done, 3));
	/* Nothing queued behind them: all of nc's, then stop. */
	CU_ASSERT_TRUE(push_seq(s, nc, 1, 2, 64, &fill));
	CU_ASSERT_TRUE(wait_for(&rec.done, 4));
	sender_stop(s, NULL);
	assert_published_in_order(1);
	CU_ASSERT_EQUAL(rec.next[1], 3);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), 8);
	natsConnection_Destroy(nc);
}

/* Stopping with messages queued behind a held publish frees them all. */
static void test_stop_frees_queued(void)
{
	enum { QUEUED = 10 };
	natsConnection *nc = NULL;
	struct sender *s = start_nowhere(&nc, 0, 16, UINT64_C(1) << 30);
	size_t fill = hold_publish(s, nc);
	for (unsigned i = 0; i < QUEUED; i++) {
		char subject[32];
		snprintf(subject, sizeof subject, "q.%u", i); /* sent or not: both are right */
		CU_ASSERT_TRUE(push(s, nc, subject, 64, &fill));
	}
	pthread_t releaser;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&releaser, NULL, release_later, NULL), 0);
	sender_stop(s, NULL);
	call_returned();
	pthread_join(releaser, NULL);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), QUEUED + 1);
	natsConnection_Destroy(nc);
}

/* The loop thread pushing while the sender publishes, the ring often full:
 * a refused message is pushed again (the caller still owns it), so every
 * message is published, each connection's in order. ThreadSanitizer
 * watches the hand-off. */
static void test_concurrent_push(void)
{
	enum { PER_CONN = 5000, MAX_ATTEMPTS = 5000000 };
	reset();
	natsConnection *nc[CONNS];
	for (int i = 0; i < CONNS; i++) {
		nc[i] = connect_nowhere(0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(nc[i]);
	}
	struct sender *s = NULL;
	CU_ASSERT_EQUAL_FATAL(sender_start(&s, 32, 32 * 48), 0);
	natsMsg *pending[CONNS] = {NULL};
	unsigned seq[CONNS] = {0};
	size_t refused = 0, fill = 0;
	bool fill_in_bound = true;
	for (unsigned attempt = 0, conn = 0; attempt < MAX_ATTEMPTS; attempt++, conn = (conn + 1) % CONNS) {
		if (seq[0] == PER_CONN && seq[1] == PER_CONN)
			break;
		if (seq[conn] == PER_CONN)
			continue;
		if (!pending[conn]) {
			char subject[32];
			snprintf(subject, sizeof subject, "t.%u.%u", conn, seq[conn]);
			pending[conn] = make_msg(subject, 16);
			CU_ASSERT_PTR_NOT_NULL_FATAL(pending[conn]);
		}
		if (sender_push(s, nc[conn], pending[conn], 48 + (seq[conn] % 3), &fill)) {
			pending[conn] = NULL;
			seq[conn]++;
		} else {
			refused++;
			sched_yield();
		}
		fill_in_bound &= fill <= 32;
	}
	CU_ASSERT_EQUAL(seq[0], PER_CONN);
	CU_ASSERT_EQUAL(seq[1], PER_CONN);
	for (int i = 0; i < CONNS; i++)
		natsMsg_Destroy(pending[i]);
	CU_ASSERT_TRUE(wait_for(&rec.done, 2 * PER_CONN));
	sender_stop(s, NULL);
	CU_ASSERT_TRUE(fill_in_bound);
	assert_published_in_order(PER_CONN);
	CU_ASSERT_EQUAL(rec.next[1], PER_CONN);
	CU_ASSERT_EQUAL(rec.refused, 0);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), 2 * PER_CONN);
	printf("(%zu pushes refused by the full ring) ", refused);
	for (int i = 0; i < CONNS; i++)
		natsConnection_Destroy(nc[i]);
}

static void on_msg(natsMsg *msg, void *closure, uint64_t tag)
{
	(void)closure;
	(void)tag;
	natsMsg_Destroy(msg);
}

/* What on_tagged saw: the caller's closure and tag, per message. */
struct tagged {
	unsigned messages;
	uint64_t tag;
	void *closure;
};

static void on_tagged(natsMsg *msg, void *closure, uint64_t tag)
{
	struct tagged *t = closure;
	t->messages++;
	t->tag = tag;
	t->closure = closure;
	natsMsg_Destroy(msg);
}

/* A message as cnats's delivery thread hands one to the last subscription
 * made (its handler and closure, kept by the wrap). */
static void deliver_to_last(natsConnection *nc)
{
	natsMsg *nm = make_msg("q.a", 4);
	CU_ASSERT_PTR_NOT_NULL_FATAL(nm);
	pthread_mutex_lock(&rec.mu);
	natsMsgHandler cb = rec.cb;
	void *closure = rec.closure;
	pthread_mutex_unlock(&rec.mu);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
	cb(nc, NULL, nm, closure);
}

/* A queue SUB made by the thread, in its queue; its messages reach the
 * caller's handler with the caller's closure and tag (the shared groups
 * map a message to its group by that tag: groups.c). cnats may still
 * call the handler after the UNSUB, until the subscription is destroyed
 * (retire.h), so the sender's own closure must live that long: here it is
 * called after sender_unsubscribe and again after sender_stop handed the
 * subscription over, then freed with it (ASan: no use after free, no
 * leak). */
static void test_queue_sub_tagged_until_destroyed(void)
{
	natsConnection *nc = NULL;
	struct sender *s = start_nowhere(&nc, 0, 16, UINT64_C(1) << 30);
	struct tagged seen = {0};
	struct sender_sub *a = sender_subscribe(s, nc, "q.a", "wisp-share-x", on_tagged, &seen, 7);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_TRUE(wait_for(&rec.done, 1));
	CU_ASSERT_STRING_EQUAL(rec.subscribed, "q.a@wisp-share-x ");
	deliver_to_last(nc);
	CU_ASSERT_EQUAL(seen.messages, 1);
	CU_ASSERT_EQUAL(seen.tag, 7);
	CU_ASSERT_PTR_EQUAL(seen.closure, &seen);
	sender_unsubscribe(s, a);
	CU_ASSERT_TRUE(wait_for(&rec.unsubscribes, 1));
	deliver_to_last(nc); /* a lookup cnats began before the UNSUB */
	CU_ASSERT_EQUAL(seen.messages, 2);
	CU_ASSERT_EQUAL(seen.tag, 7);
	struct nats_retire retired;
	nats_retire_init(&retired, nats_retire_monotonic_ms, NULL, NULL);
	sender_stop(s, &retired);
	CU_ASSERT_EQUAL(retired.n, 1);
	deliver_to_last(nc);
	CU_ASSERT_EQUAL(seen.messages, 3);
	CU_ASSERT_STRING_EQUAL(rec.unsubscribed, "q.a ");
	natsConnection_Close(nc);
	nats_retire_all(&retired);
	natsConnection_Destroy(nc);
}

/* The thread held inside a publish (as in a write to a server that stopped
 * reading, which holds cnats's connection lock): SUBs, UNSUBs and control
 * publishes are queued at once, none waits for it. Once it goes on they
 * run in the order given, before the data pushed after them: "sub.a",
 * then the control publish t.0.1, then t.0.2. "sub.b", unsubscribed
 * before its SUB was made, never reaches cnats; "sub.a"'s UNSUB does. */
static void test_control_ops_queued_in_order(void)
{
	natsConnection *nc = NULL;
	struct sender *s = start_nowhere(&nc, 0, 16, UINT64_C(1) << 30);
	size_t fill = hold_publish(s, nc);
	struct sender_sub *a = sender_subscribe(s, nc, "sub.a", NULL, on_msg, NULL, 0);
	struct sender_sub *b = sender_subscribe(s, nc, "sub.b", NULL, on_msg, NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	sender_unsubscribe(s, b);
	natsMsg *nm = make_msg("t.0.1", 8);
	CU_ASSERT_PTR_NOT_NULL_FATAL(nm);
	CU_ASSERT_TRUE(sender_publish_control(s, nc, nm, 64, true));
	CU_ASSERT_TRUE(push_seq(s, nc, 0, 2, 64, &fill));
	pthread_mutex_lock(&rec.mu);
	CU_ASSERT_EQUAL(rec.done, 0); /* all of it returned with the publish still held */
	pthread_mutex_unlock(&rec.mu);
	CU_ASSERT_EQUAL(sender_sub_dropped(a), 0);
	set_gate(false);
	CU_ASSERT_TRUE(wait_for(&rec.done, 4)); /* t.0.0, sub.a, t.0.1, t.0.2 */
	sender_unsubscribe(s, a);
	CU_ASSERT_TRUE(wait_for(&rec.unsubscribes, 1));
	CU_ASSERT_EQUAL(sender_sub_failed(s), 0);
	sender_stop(s, NULL);
	assert_published_in_order(3);
	CU_ASSERT_STRING_EQUAL(rec.subscribed, "sub.a ");
	CU_ASSERT_STRING_EQUAL(rec.unsubscribed, "sub.a ");
	CU_ASSERT_EQUAL(atomic_load(&destroyed), 3);
	natsConnection_Destroy(nc);
}

/* A connection replaced: its queued SUB and control publish are dropped by
 * sender_forget (it is destroyed next), the SUB's handle still the
 * caller's to unsubscribe; another connection's SUB is made. */
static void test_forget_drops_control(void)
{
	natsConnection *old = NULL, *nc = NULL;
	struct sender *s = start_two(&old, &nc);
	hold_publish(s, nc);
	struct sender_sub *gone = sender_subscribe(s, old, "sub.old", NULL, on_msg, NULL, 0);
	struct sender_sub *kept = sender_subscribe(s, nc, "sub.new", NULL, on_msg, NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(gone);
	CU_ASSERT_PTR_NOT_NULL_FATAL(kept);
	natsMsg *nm = make_msg("drop.0", 8);
	CU_ASSERT_PTR_NOT_NULL_FATAL(nm);
	CU_ASSERT_TRUE(sender_publish_control(s, old, nm, 64, true));
	pthread_t releaser;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&releaser, NULL, release_later, NULL), 0);
	sender_forget(s, old);
	call_returned();
	pthread_join(releaser, NULL);
	natsConnection_Destroy(old);
	CU_ASSERT_TRUE(wait_for(&rec.done, 2)); /* t.0.0, sub.new */
	sender_unsubscribe(s, gone);
	sender_unsubscribe(s, kept);
	CU_ASSERT_TRUE(wait_for(&rec.unsubscribes, 1));
	sender_stop(s, NULL);
	CU_ASSERT_STRING_EQUAL(rec.subscribed, "sub.new ");
	CU_ASSERT_STRING_EQUAL(rec.unsubscribed, "sub.new ");
	CU_ASSERT_EQUAL(rec.unexpected, 0);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), 2);
	natsConnection_Destroy(nc);
}

/* Bounded control publishes stop at SENDER_CONTROL_BYTES: past it one is
 * refused, and the caller keeps it; taken again only once they are below
 * half the bound. An unbounded one (a resend larger than the bound) is
 * taken even then, and counts for nothing. */
static void test_control_bound(void)
{
	natsConnection *nc = NULL;
	struct sender *s = start_nowhere(&nc, 0, 16, UINT64_C(1) << 30);
	hold_publish(s, nc);
	natsMsg *first = make_msg("t.0.1", 8), *second = make_msg("t.0.2", 8), *over = make_msg("drop.0", 8);
	natsMsg *resend = make_msg("t.0.3", 8), *later = make_msg("t.0.4", 8);
	CU_ASSERT_PTR_NOT_NULL_FATAL(first);
	CU_ASSERT_PTR_NOT_NULL_FATAL(second);
	CU_ASSERT_PTR_NOT_NULL_FATAL(over);
	CU_ASSERT_PTR_NOT_NULL_FATAL(resend);
	CU_ASSERT_PTR_NOT_NULL_FATAL(later);
	CU_ASSERT_TRUE(sender_control_room(s));
	CU_ASSERT_TRUE(sender_publish_control(s, nc, first, SENDER_CONTROL_BYTES / 2, true));
	CU_ASSERT_TRUE(sender_publish_control(s, nc, second, SENDER_CONTROL_BYTES / 2, true));
	CU_ASSERT_FALSE(sender_publish_control(s, nc, over, 1, true));
	CU_ASSERT_FALSE(sender_control_room(s));
	CU_ASSERT_TRUE(sender_publish_control(s, nc, resend, 4 * SENDER_CONTROL_BYTES, false));
	CU_ASSERT_FALSE(sender_control_room(s));
	set_gate(false);
	CU_ASSERT_TRUE(wait_for(&rec.done, 4));
	CU_ASSERT_TRUE(sender_control_room(s));
	CU_ASSERT_TRUE(sender_publish_control(s, nc, later, 1, true));
	CU_ASSERT_TRUE(wait_for(&rec.done, 5));
	sender_stop(s, NULL);
	natsMsg_Destroy(over); /* still the caller's */
	assert_published_in_order(5);
	CU_ASSERT_EQUAL(atomic_load(&destroyed), 6);
	natsConnection_Destroy(nc);
}

/* A SUB made and its UNSUB queued behind a held publish: sender_stop
 * sends no queued publish and loses no subscription (unsubscribed, so that
 * its connection's close leaks nothing, and retired into the caller's
 * list, destroyed there once the connection is closed). */
static void test_stop_with_control_queued(void)
{
	natsConnection *nc = NULL;
	struct sender *s = start_nowhere(&nc, 0, 16, UINT64_C(1) << 30);
	struct sender_sub *a = sender_subscribe(s, nc, "sub.a", NULL, on_msg, NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_TRUE(wait_for(&rec.done, 1));
	hold_publish(s, nc);
	sender_unsubscribe(s, a);
	natsMsg *nm = make_msg("q.0", 8);
	CU_ASSERT_PTR_NOT_NULL_FATAL(nm);
	CU_ASSERT_TRUE(sender_publish_control(s, nc, nm, 64, true));
	struct nats_retire retired;
	nats_retire_init(&retired, nats_retire_monotonic_ms, NULL, NULL);
	pthread_t releaser;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&releaser, NULL, release_later, NULL), 0);
	sender_stop(s, &retired);
	call_returned();
	pthread_join(releaser, NULL);
	CU_ASSERT_EQUAL(retired.n, 1);
	CU_ASSERT_EQUAL(rec.unsubscribes, 1); /* ended before its connection closes */
	CU_ASSERT_EQUAL(atomic_load(&destroyed), 2);
	natsConnection_Close(nc);
	nats_retire_all(&retired);
	natsConnection_Destroy(nc);
}

static int suite_init(void)
{
	/* Bound, never listening: connects are refused at once and no one
	 * else can take the port. */
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	down_fd = socket(AF_INET, SOCK_STREAM, 0);
	if (down_fd == -1 || bind(down_fd, (struct sockaddr *)&a, sizeof a) == -1 ||
	    getsockname(down_fd, (struct sockaddr *)&a, &len) == -1)
		return -1;
	snprintf(down_url, sizeof down_url, "nats://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
	return 0;
}

static int suite_cleanup(void)
{
	if (down_fd != -1)
		close(down_fd);
	return nats_CloseAndWait(5000) == NATS_OK ? 0 : -1;
}

static CU_TestInfo tests[] = {
	{"control operations queued without waiting, run in order", test_control_ops_queued_in_order},
	{"control publishes bounded, taken again below half", test_control_bound},
	{"stop with control operations queued: no wait, nothing lost", test_stop_with_control_queued},
	{"queue SUB: messages tagged; its closure lives until destroyed", test_queue_sub_tagged_until_destroyed},
	{"forget drops a replaced connection's SUBs and control publishes", test_forget_drops_control},
	{"published in order, each message freed by the sender", test_published_in_order_and_owned},
	{"full at cap: refused, caller keeps it, *fill shows the end", test_refuses_at_cap},
	{"full at max_bytes: refused; one large message goes alone", test_refuses_at_max_bytes},
	{"publishes cnats refuses are counted", test_counts_refused_publishes},
	{"publishes over max_payload are counted apart, never retried", test_counts_too_large_apart},
	{"forget drops a connection's queue, waits for its publish", test_forget_drops_and_waits},
	{"stop frees what is still queued", test_stop_frees_queued},
	{"pushes concurrent with publishing: all sent, in order", test_concurrent_push},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_sender", suite_init, suite_cleanup, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
