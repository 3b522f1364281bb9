/*
 * nats_delivery_drain (cluster/retire.h): it returns only once cnats's
 * delivery worker has run every subscription close queued before it,
 * however busy the worker is, so nats_CloseAndWait finds nothing queued
 * (libnats 3.4 leaked what it found: LeakSanitizer failed a node's stop
 * about once in 50). A node's stop calls it before its last connection
 * closes. The test plays a NATS server that only answers PINGs.
 */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "retire.h"
#include "unit_main.h"

static int lfd = -1;
static int port;
static pthread_t server;
static atomic_bool stopping;

/* One client at a time: INFO, then a PONG for each PING. */
static void *serve(void *arg)
{
	(void)arg;
	static const char info[] = "INFO {\"server_id\":\"X\",\"version\":\"2.9.10\",\"proto\":1,\"headers\":true,"
				   "\"max_payload\":1048576}\r\n";
	while (!atomic_load(&stopping)) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			break;
		if (write(fd, info, sizeof info - 1) < 0) {
			close(fd);
			continue;
		}
		char buf[4096 + 5] = {0};
		size_t keep = 0; /* the tail of the last read: a PING across two reads */
		ssize_t n;
		while ((n = read(fd, buf + keep, sizeof buf - 1 - keep)) > 0) {
			size_t len = keep + (size_t)n;
			buf[len] = '\0';
			for (char *p = buf; (p = strstr(p, "PING\r\n")); p += 6)
				if (write(fd, "PONG\r\n", 6) < 0)
					break;
			keep = len < 5 ? len : 5;
			memmove(buf, buf + len - keep, keep);
		}
		close(fd);
	}
	return NULL;
}

static int suite_init(void)
{
	if (nats_Open(-1) != NATS_OK)
		return -1;
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof a;
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
		return -1;
	port = ntohs(a.sin_port);
	return pthread_create(&server, NULL, serve, NULL) == 0 ? 0 : -1;
}

static int suite_cleanup(void)
{
	atomic_store(&stopping, true);
	shutdown(lfd, SHUT_RDWR);
	pthread_join(server, NULL);
	close(lfd);
	nats_CloseAndWait(5000);
	return 0;
}

static natsConnection *connect_pooled(void)
{
	natsOptions *opts = NULL;
	natsConnection *nc = NULL;
	char url[64];
	snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
	CU_ASSERT_EQUAL_FATAL(natsOptions_Create(&opts), NATS_OK);
	CU_ASSERT_EQUAL(natsOptions_SetURL(opts, url), NATS_OK);
	CU_ASSERT_EQUAL(natsOptions_UseGlobalMessageDelivery(opts, true), NATS_OK);
	CU_ASSERT_EQUAL(natsConnection_Connect(&nc, opts), NATS_OK);
	natsOptions_Destroy(opts);
	return nc;
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	(void)nc;
	(void)sub;
	(void)closure;
	natsMsg_Destroy(msg);
}

#define SUBS 50
static atomic_int completed;

/* The first close the worker runs keeps it busy, as a node's slow
 * callback would: every later one waits behind it. */
static void on_complete(void *closure)
{
	if (closure)
		nanosleep(&(struct timespec){.tv_nsec = 200 * 1000000L}, NULL);
	atomic_fetch_add(&completed, 1);
}

static void test_drain_waits_for_every_close_before_it(void)
{
	natsConnection *nc = connect_pooled();
	CU_ASSERT_PTR_NOT_NULL_FATAL(nc);
	natsSubscription *subs[SUBS];
	for (int i = 0; i < SUBS; i++) {
		char subject[32];
		snprintf(subject, sizeof subject, "drain.%d", i);
		CU_ASSERT_EQUAL_FATAL(natsConnection_Subscribe(&subs[i], nc, subject, on_msg, NULL), NATS_OK);
		CU_ASSERT_EQUAL(natsSubscription_SetOnCompleteCB(subs[i], on_complete, i == 0 ? subs : NULL), NATS_OK);
	}
	atomic_store(&completed, 0);
	for (int i = 0; i < SUBS; i++)
		CU_ASSERT_EQUAL(natsSubscription_Unsubscribe(subs[i]), NATS_OK);
	struct nats_retire retired;
	nats_retire_init(&retired, nats_retire_monotonic_ms, NULL, NULL);
	retired.off_loop = true;
	CU_ASSERT_TRUE(nats_delivery_drain(nc, 5000, &retired));
	CU_ASSERT_EQUAL(atomic_load(&completed), SUBS);
	CU_ASSERT_EQUAL(retired.n, 1); /* its own subscription, destroyed once nc is closed */
	natsConnection_Close(nc);
	nats_retire_all(&retired);
	for (int i = 0; i < SUBS; i++)
		natsSubscription_Destroy(subs[i]);
	natsConnection_Destroy(nc);
}

static void test_closed_connection_is_no_wait(void)
{
	natsConnection *nc = connect_pooled();
	CU_ASSERT_PTR_NOT_NULL_FATAL(nc);
	natsConnection_Close(nc);
	struct nats_retire retired;
	nats_retire_init(&retired, nats_retire_monotonic_ms, NULL, NULL);
	retired.off_loop = true;
	CU_ASSERT_FALSE(nats_delivery_drain(nc, 5000, &retired));
	CU_ASSERT_EQUAL(retired.n, 0);
	CU_ASSERT_FALSE(nats_delivery_drain(NULL, 5000, &retired));
	natsConnection_Destroy(nc);
}

static CU_TestInfo tests[] = {
	{"the drain returns once every close queued before it ran", test_drain_waits_for_every_close_before_it},
	{"a closed connection or none: no wait", test_closed_connection_is_no_wait},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_drain", suite_init, suite_cleanup, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void) { return unit_run(suites); }
