/*
 * The local router (proto/route.c) through the router interface: a real
 * broker with no traffic, offline persistent sessions whose QoS 1
 * deliveries land in their queues, where the test reads what routing
 * decided: one delivery per session however many subscriptions match, at
 * the best granted QoS; No Local per subscription [MQTT-3.8.3-3]; RETAIN
 * cleared unless Retain As Published [MQTT-3.3.1-12]; and a drop asked for
 * while the delivery loop runs waits until it is over (routing is never
 * re-entered).
 */
#include <CUnit/Basic.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "unit_main.h"
#include "broker.h"
#include "err.h"
#include "fake_transport.h"
#include "log.h"
#include "loop.h"

static const char config_json[] = "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
				  " \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}}";

static struct config *cfg;
static struct loop *l;
static struct broker b;

static void setup(void)
{
	char err[256];
	CU_ASSERT_FATAL(config_parse(config_json, strlen(config_json), "test", &cfg, err, sizeof err) == 0);
	log_set_level(LOG_ERROR);
	l = loop_new();
	CU_ASSERT_FATAL(l != NULL);
	CU_ASSERT_FATAL(broker_init(&b, l, cfg, err, sizeof err) == 0);
}

static void teardown(void)
{
	broker_free(&b);
	loop_free(l);
	config_free(cfg);
}

static struct session *offline(const char *id)
{
	struct session *s = sess_create(&b.sessions, id, strlen(id), false);
	CU_ASSERT_FATAL(s != NULL);
	return s;
}

static void subscribe(struct session *s, const char *filter, uint8_t options, uint32_t sub_id)
{
	CU_ASSERT(router_interest_add(&b.route.router, s, filter, strlen(filter), options, sub_id, 0) >= 0);
}

static void publish(const char *topic, uint8_t qos, bool retain, const void *origin)
{
	struct msg_spec spec = {.topic = topic, .topic_len = strlen(topic), .payload = "p", .payload_len = 1,
				.qos = qos, .retain = retain, .origin = origin};
	struct msg *m = msg_create(&spec);
	CU_ASSERT_FATAL(m != NULL);
	struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
	int n = topic_split(topic, strlen(topic), levels, TOPIC_MAX_LEVELS_HARD);
	CU_ASSERT_FATAL(n > 0);
	router_publish(&b.route.router, m, levels, (size_t)n);
	msg_unref(m);
}

static struct sess_msg *queued(struct session *s, size_t i)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(s->qos);
	struct list_node *n = s->qos->queue.next;
	for (; n != &s->qos->queue && i; n = n->next)
		i--;
	CU_ASSERT_FATAL(n != &s->qos->queue);
	return container_of(n, struct sess_msg, link);
}

/* Overlapping subscriptions: one copy, at the best granted QoS. */
static void test_overlapping_subscriptions_deliver_once_at_best_qos(void)
{
	setup();
	struct session *s = offline("s");
	subscribe(s, "a/#", 0, 0);
	subscribe(s, "a/+", 1, 0);
	subscribe(s, "a/b", 0, 0);
	publish("a/b", 2, false, NULL);
	CU_ASSERT_EQUAL(sess_queued_count(s), 1);
	CU_ASSERT_EQUAL(queued(s, 0)->qos, 1);
	teardown();
}

/* [MQTT-3.8.3-3] No Local: not sent back to its publisher on that
 * subscription; another of the publisher's subscriptions still matches. */
static void test_no_local_applies_per_subscription(void)
{
	setup();
	struct session *pub = offline("pub");
	struct session *other = offline("other");
	subscribe(pub, "nl/#", 1 | MQTT_SUBOPT_NO_LOCAL, 0);
	subscribe(other, "nl/#", 1 | MQTT_SUBOPT_NO_LOCAL, 0);
	publish("nl/x", 1, false, pub);
	CU_ASSERT_EQUAL(sess_queued_count(pub), 0);
	CU_ASSERT_EQUAL(sess_queued_count(other), 1);
	publish("nl/x", 1, false, other);
	CU_ASSERT_EQUAL(sess_queued_count(pub), 1);
	CU_ASSERT_EQUAL(sess_queued_count(other), 1);
	subscribe(pub, "nl/x", 1, 0); /* without No Local */
	publish("nl/x", 1, false, pub);
	CU_ASSERT_EQUAL(sess_queued_count(pub), 2);
	teardown();
}

/* [MQTT-3.3.1-12] RETAIN is forwarded only with Retain As Published. */
static void test_retain_as_published(void)
{
	setup();
	struct session *rap = offline("rap");
	struct session *plain = offline("plain");
	subscribe(rap, "r/+", 1 | MQTT_SUBOPT_RETAIN_AS_PUBLISHED, 0);
	subscribe(plain, "r/+", 1, 0);
	publish("r/x", 1, true, NULL);
	publish("r/x", 1, false, NULL);
	CU_ASSERT_TRUE(queued(rap, 0)->retain);
	CU_ASSERT_FALSE(queued(rap, 1)->retain);
	CU_ASSERT_FALSE(queued(plain, 0)->retain);
	CU_ASSERT_FALSE(queued(plain, 1)->retain);
	teardown();
}

/* A drop asked for during a delivery (which could free a session the
 * delivery loop still holds, and publishes a will) waits for the loop. */
static void test_drop_during_delivery_waits_for_the_loop(void)
{
	setup();
	int fds[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
	struct fake_transport *ft = fake_transport_new();
	ft->base.fd = fds[0];
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct conn *c = conn_new(&b.srv.listeners[0].origin, &ft->base, fds[0], (const struct sockaddr *)&peer);
	CU_ASSERT_FATAL(c != NULL);
	b.srv.listeners[0].conn_count++;
	c->state = CONN_AWAIT_CONNECT;
	b.route.busy = true; /* as broker_deliver runs */
	broker_drop(&b, c, REASON_PROTOCOL_ERROR, "dropped during a delivery");
	CU_ASSERT_NOT_EQUAL(c->state, CONN_CLOSING);
	CU_ASSERT_EQUAL(b.route.later_len, 1);
	b.route.busy = false;
	publish("any", 0, false, NULL); /* the next delivery loop ends: the drop is done */
	CU_ASSERT_EQUAL(c->state, CONN_CLOSING);
	CU_ASSERT_EQUAL(b.route.later_len, 0);
	teardown();
	close(fds[0]);
	close(fds[1]);
}

/* Events of the session observer, counted. */
static struct {
	int sub_add, sub_del, queued, retain_set, retain_released;
	uint8_t last_options;
	uint32_t last_sub_id;
} seen;

static void count_sub_add(void *ctx, struct session *s, const struct sess_sub *sub)
{
	(void)ctx;
	(void)s;
	seen.sub_add++;
	seen.last_options = tree_sub_options(&sub->handle);
	seen.last_sub_id = tree_sub_id(&sub->handle);
}
static void count_sub_del(void *ctx, struct session *s, const char *f, size_t len)
{
	(void)ctx, (void)s, (void)f, (void)len;
	seen.sub_del++;
}
static void count_queued(void *ctx, struct session *s, struct sess_msg *e)
{
	(void)ctx, (void)s, (void)e;
	seen.queued++;
}
static void count_retain_set(void *ctx, struct msg *m)
{
	(void)ctx, (void)m;
	seen.retain_set++;
}
static void count_retain_released(void *ctx, struct msg *m)
{
	(void)ctx, (void)m;
	seen.retain_released++;
}

/* Every change reaches the observer once, from wherever it is made: the
 * router's interest_add/remove (with the subscription's options and
 * identifier as stored), delivery's queue, the retained store. */
static void test_observer_sees_each_change_once(void)
{
	setup();
	static const struct sess_observer_ops ops = {
		.sub_add = count_sub_add,
		.sub_del = count_sub_del,
		.queued = count_queued,
		.retain_set = count_retain_set,
		.retain_released = count_retain_released,
	};
	memset(&seen, 0, sizeof seen);
	b.observer = (struct sess_observer){&ops, NULL};
	struct session *s = offline("obs");
	subscribe(s, "o/#", 1 | MQTT_SUBOPT_NO_LOCAL, 7);
	CU_ASSERT_EQUAL(seen.sub_add, 1);
	CU_ASSERT_EQUAL(seen.last_options, 1 | MQTT_SUBOPT_NO_LOCAL);
	CU_ASSERT_EQUAL(seen.last_sub_id, 7);
	subscribe(s, "o/#", 1, 0); /* replaced [MQTT-3.8.4-3] */
	CU_ASSERT_EQUAL(seen.sub_add, 2);
	CU_ASSERT_EQUAL(seen.last_sub_id, 0);
	publish("o/x", 1, false, NULL);
	CU_ASSERT_EQUAL(seen.queued, 1);
	struct msg *r1 = msg_new("o/r", 3, "1", 1, 0, true);
	struct msg *r2 = msg_new("o/r", 3, "2", 1, 0, true);
	CU_ASSERT_FATAL(r1 && r2);
	broker_retain(&b, r1);
	broker_retain(&b, r2);
	CU_ASSERT_EQUAL(seen.retain_set, 2);
	CU_ASSERT_EQUAL(seen.retain_released, 1);
	msg_unref(r1);
	msg_unref(r2);
	CU_ASSERT_EQUAL(router_interest_remove(&b.route.router, s, "o/#", 3), 0);
	CU_ASSERT_EQUAL(router_interest_remove(&b.route.router, s, "o/#", 3), WISP_ENOENT);
	CU_ASSERT_EQUAL(seen.sub_del, 1);
	b.observer = (struct sess_observer){0};
	teardown();
}

static CU_TestInfo route_tests[] = {
	{"the session observer sees each change once", test_observer_sees_each_change_once},
	{"overlapping subscriptions deliver once at the best QoS", test_overlapping_subscriptions_deliver_once_at_best_qos},
	{"MQTT-3.8.3-3 No Local applies per subscription", test_no_local_applies_per_subscription},
	{"MQTT-3.3.1-12 RETAIN forwarded only with Retain As Published", test_retain_as_published},
	{"a drop during a delivery waits for the delivery loop", test_drop_during_delivery_waits_for_the_loop},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"local router", NULL, NULL, NULL, NULL, route_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
