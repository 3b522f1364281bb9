/*
 * The whole broker, scripted byte for byte (issue #12, "Tests first"): the
 * safety net of the proto/ redesign. Each exchange is what a client sends
 * and exactly what the broker writes back, over the fake transport
 * (tests/support/broker_harness.h), for MQTT 3.1.1, 3.1 where it differs,
 * and MQTT 5 (CONNACK properties byte for byte as Mosquitto 2.0.11 sends
 * them, refusals, server DISCONNECT, sessions, topic aliases).
 *
 * Script notation: hex bytes, with 'text' for the bytes of a string.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit_main.h"
#include "broker_harness.h"
#include "passwd.h"
#include "scram_client.h"

#define STR2(x) #x
#define STR(x) STR2(x)
#define SEND(c, script) client_send_hex(c, script)
#define EXPECT(c, script) CU_ASSERT(client_expect_hex(c, script, __FILE__ ":" STR(__LINE__)))
#define NOTHING(c) EXPECT(c, "")

static const char base_config[] =
	"{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
	" \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}}";

static struct harness *h;

static void start(const char *config)
{
	h = harness_new(config);
	CU_ASSERT_FATAL(h != NULL);
}

static void setup(void) { start(base_config); }

static void teardown(void)
{
	harness_free(h);
	h = NULL;
}

/* CONNECT, 3.1.1, clean session, keepalive 60, client id "pub". */
#define CONNECT_PUB "10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'pub'"
#define CONNECT_SUB "10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'sub'"
#define CONNACK_OK "20 02 00 00"

static struct hclient *connected(const char *connect)
{
	struct hclient *c = harness_connect(h);
	SEND(c, connect);
	EXPECT(c, CONNACK_OK);
	return c;
}

/* ---- CONNECT / CONNACK ---- */

static void test_connect_accepted(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, CONNECT_PUB);
	EXPECT(c, CONNACK_OK); /* [MQTT-3.2.2-1] clean session: session present 0 */
	CU_ASSERT_FALSE(client_closed(c));
}

/* The same CONNECT arriving a byte at a time. */
static void test_connect_byte_by_byte(void)
{
	struct hclient *c = harness_connect(h);
	uint8_t buf[64];
	size_t n = harness_unhex(CONNECT_PUB, buf, sizeof buf);
	for (size_t i = 0; i < n; i++) {
		NOTHING(c);
		client_send(c, buf + i, 1);
	}
	EXPECT(c, CONNACK_OK);
}

static void test_connect_31_accepted(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 11 00 06 'MQIsdp' 03 02 00 3c 00 03 'c31'");
	EXPECT(c, CONNACK_OK);
	SEND(c, "c0 00");
	EXPECT(c, "d0 00");
}

/* [MQTT-3.1.2-2] an unknown protocol level: code 1, then close. */
static void test_connect_refused_protocol_level(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 0f 00 04 'MQTT' 06 02 00 3c 00 03 'pub'");
	EXPECT(c, "20 02 00 01");
	CU_ASSERT_TRUE(client_closed(c));
}

/* [MQTT-3.1.3-8] an empty client id with clean session 0: code 2, close. */
static void test_connect_refused_empty_id_persistent(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 0c 00 04 'MQTT' 04 00 00 3c 00 00");
	EXPECT(c, "20 02 00 02");
	CU_ASSERT_TRUE(client_closed(c));
}

/* 3.1 has no empty client id at all (3.1.1 allows it with clean session). */
static void test_connect_31_refused_empty_id(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 0e 00 06 'MQIsdp' 03 02 00 3c 00 00");
	EXPECT(c, "20 02 00 02");
	CU_ASSERT_TRUE(client_closed(c));
	struct hclient *d = harness_connect(h); /* [MQTT-3.1.3-6] 3.1.1 assigns one */
	SEND(d, "10 0c 00 04 'MQTT' 04 02 00 3c 00 00");
	EXPECT(d, CONNACK_OK);
}

/* An anonymous client on a listener without allow_anonymous: code 5. */
static void test_connect_refused_not_authorised(void)
{
	harness_free(h);
	start("{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0, \"allow_anonymous\": false}],"
	      " \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}}");
	struct hclient *c = harness_connect(h);
	SEND(c, CONNECT_PUB);
	EXPECT(c, "20 02 00 05");
	CU_ASSERT_TRUE(client_closed(c));
}

/* A password file (one user, "alice" / "secret", 1000 PBKDF2 rounds so the
 * check is quick): the right password is accepted, a wrong one or an
 * unknown user gets code 4 [MQTT-3.1.4-2 step 3]. The check runs on a
 * helper thread; harness_run waits for it. */
static void test_connect_password(void)
{
	static const char line[] = "alice:$pbkdf2-sha512$1000$d2lzcC10ZXN0LXNhbHQxNg==$y6X/Sh2QBMxbszdX28W9kP4S0uT/"
				   "PjPvpbzG3K9mvvLAqvgOomnRexC+tj77kvkADXAyyQv1ROisO7r+n64bWw==\n";
	char dir[64], path[96], config[512];
	CU_ASSERT_FATAL(harness_temp_dir(dir, sizeof dir, "wisp-script-pw") == 0);
	snprintf(path, sizeof path, "%s/passwd", dir);
	FILE *f = fopen(path, "w");
	CU_ASSERT_FATAL(f != NULL);
	fputs(line, f);
	fclose(f);
	snprintf(config, sizeof config,
		 "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}], \"auth\": {\"password_file\": \"%s\"},"
		 " \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}}",
		 path);
	harness_free(h);
	start(config);
	/* CONNECT with user name and password flags (0xc2), id "pw". */
	struct hclient *ok = harness_connect(h);
	SEND(ok, "10 1d 00 04 'MQTT' 04 c2 00 3c 00 02 'pw' 00 05 'alice' 00 06 'secret'");
	EXPECT(ok, CONNACK_OK);
	struct hclient *bad = harness_connect(h);
	SEND(bad, "10 1d 00 04 'MQTT' 04 c2 00 3c 00 02 'pw' 00 05 'alice' 00 06 'Secret'");
	EXPECT(bad, "20 02 00 04");
	CU_ASSERT_TRUE(client_closed(bad));
	CU_ASSERT_FALSE(client_closed(ok)); /* a refused CONNECT takes nothing over */
	struct hclient *who = harness_connect(h);
	SEND(who, "10 1b 00 04 'MQTT' 04 c2 00 3c 00 02 'p2' 00 03 'bob' 00 06 'secret'");
	EXPECT(who, "20 02 00 04");
	/* Without a user name: not authorised (the listener is not anonymous). */
	struct hclient *anon = harness_connect(h);
	SEND(anon, CONNECT_PUB);
	EXPECT(anon, "20 02 00 05");
	harness_remove_dir(dir);
}

/* [MQTT-3.1.0-1] the first packet must be CONNECT: closed, nothing written. */
static void test_first_packet_not_connect(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "c0 00");
	NOTHING(c);
	CU_ASSERT_TRUE(client_closed(c));
}

/* [MQTT-3.1.0-2] a second CONNECT is a protocol violation: closed. */
static void test_second_connect_closes(void)
{
	struct hclient *c = connected(CONNECT_PUB);
	SEND(c, CONNECT_PUB);
	NOTHING(c);
	CU_ASSERT_TRUE(client_closed(c));
}

/* ---- SUBSCRIBE, PUBLISH, UNSUBSCRIBE, PINGREQ ---- */

static void test_pingreq(void)
{
	struct hclient *c = connected(CONNECT_PUB);
	SEND(c, "c0 00");
	EXPECT(c, "d0 00"); /* [MQTT-3.12.4-1] */
	SEND(c, "c0 00 c0 00"); /* two in one read: two answers */
	EXPECT(c, "d0 00 d0 00");
}

static void test_subscribe_and_qos0(void)
{
	struct hclient *pub = connected(CONNECT_PUB);
	struct hclient *sub = connected(CONNECT_SUB);
	SEND(sub, "82 08 00 01 00 03 'a/b' 00");
	EXPECT(sub, "90 03 00 01 00"); /* [MQTT-3.8.4-1] */
	SEND(pub, "30 08 00 03 'a/b' 'hi!'");
	NOTHING(pub);
	EXPECT(sub, "30 08 00 03 'a/b' 'hi!'");
	/* Not matching: nothing. */
	SEND(pub, "30 08 00 03 'a/c' 'no!'");
	NOTHING(sub);
}

/* Several filters, one SUBACK with a code per filter in order [MQTT-3.8.4-5];
 * a filter with a misplaced wildcard gets 0x80. */
static void test_subscribe_several_filters(void)
{
	struct hclient *sub = connected(CONNECT_SUB);
	SEND(sub, "82 14 00 05 00 03 'a/#' 02 00 03 'a#b' 01 00 03 'x/+' 01");
	EXPECT(sub, "90 05 00 05 02 80 01");
}

/* A QoS 1 PUBLISH: PUBACK to the publisher, delivered at QoS 1 with the
 * broker's packet id, PUBACK from the subscriber ends it. */
static void test_qos1_exchange(void)
{
	struct hclient *pub = connected(CONNECT_PUB);
	struct hclient *sub = connected(CONNECT_SUB);
	SEND(sub, "82 08 00 01 00 03 'a/b' 01");
	EXPECT(sub, "90 03 00 01 01");
	SEND(pub, "32 0a 00 03 'a/b' 00 07 'hi!'");
	EXPECT(pub, "40 02 00 07"); /* [MQTT-4.3.2-2] */
	EXPECT(sub, "32 0a 00 03 'a/b' 00 01 'hi!'");
	SEND(sub, "40 02 00 01");
	NOTHING(sub);
	NOTHING(pub);
	/* The next delivery takes the next packet id. */
	SEND(pub, "32 0a 00 03 'a/b' 00 08 'two'");
	EXPECT(pub, "40 02 00 08");
	EXPECT(sub, "32 0a 00 03 'a/b' 00 02 'two'");
	SEND(sub, "40 02 00 02");
	/* Granted QoS caps the delivery: a QoS 2 PUBLISH goes out at QoS 1. */
	SEND(pub, "34 0a 00 03 'a/b' 00 09 'q2!'");
	EXPECT(pub, "50 02 00 09");
	EXPECT(sub, "32 0a 00 03 'a/b' 00 03 'q2!'");
	SEND(pub, "62 02 00 09");
	EXPECT(pub, "70 02 00 09");
}

/* QoS 2 both ways: PUBREC / PUBREL / PUBCOMP with the publisher and with
 * the subscriber [MQTT-4.3.3]. */
static void test_qos2_exchange(void)
{
	struct hclient *pub = connected(CONNECT_PUB);
	struct hclient *sub = connected(CONNECT_SUB);
	SEND(sub, "82 08 00 01 00 03 'a/b' 02");
	EXPECT(sub, "90 03 00 01 02");
	SEND(pub, "34 0a 00 03 'a/b' 00 08 'hi!'");
	EXPECT(pub, "50 02 00 08");
	EXPECT(sub, "34 0a 00 03 'a/b' 00 01 'hi!'");
	/* The same packet id again before PUBREL: a duplicate, not routed twice. */
	SEND(pub, "3c 0a 00 03 'a/b' 00 08 'hi!'");
	EXPECT(pub, "50 02 00 08");
	NOTHING(sub);
	SEND(sub, "50 02 00 01");
	EXPECT(sub, "62 02 00 01"); /* PUBREL has flags 0010 [MQTT-3.6.1-1] */
	SEND(sub, "70 02 00 01");
	NOTHING(sub);
	SEND(pub, "62 02 00 08");
	EXPECT(pub, "70 02 00 08");
	/* [MQTT-4.3.3] PUBCOMP answers even a PUBREL the broker does not know. */
	SEND(pub, "62 02 00 63");
	EXPECT(pub, "70 02 00 63");
	NOTHING(sub);
}

/* A retained message follows the SUBACK, retain flag set [MQTT-3.3.1-6];
 * live deliveries of a retained PUBLISH carry retain 0 [MQTT-3.3.1-9];
 * an empty retained payload deletes it [MQTT-3.3.1-10]. */
static void test_retained_on_subscribe(void)
{
	struct hclient *pub = connected(CONNECT_PUB);
	struct hclient *live = connected("10 10 00 04 'MQTT' 04 02 00 3c 00 04 'live'");
	SEND(live, "82 08 00 01 00 03 'r/#' 00");
	EXPECT(live, "90 03 00 01 00");
	SEND(pub, "31 08 00 03 'r/t' 'ret'");
	NOTHING(pub);
	EXPECT(live, "30 08 00 03 'r/t' 'ret'");
	struct hclient *sub = connected(CONNECT_SUB);
	SEND(sub, "82 08 00 01 00 03 'r/#' 01");
	EXPECT(sub, "90 03 00 01 01 31 08 00 03 'r/t' 'ret'");
	/* Delete it; a later subscriber gets nothing retained. */
	SEND(pub, "31 05 00 03 'r/t'");
	EXPECT(sub, "30 05 00 03 'r/t'");
	struct hclient *late = connected("10 10 00 04 'MQTT' 04 02 00 3c 00 04 'late'");
	SEND(late, "82 08 00 02 00 03 'r/#' 00");
	EXPECT(late, "90 03 00 02 00");
}

/* A retained QoS 1 message to a QoS 1 subscription: sent at QoS 1 with a packet id. */
static void test_retained_qos1(void)
{
	struct hclient *pub = connected(CONNECT_PUB);
	SEND(pub, "33 0a 00 03 'r/q' 00 05 'one'");
	EXPECT(pub, "40 02 00 05");
	struct hclient *sub = connected(CONNECT_SUB);
	SEND(sub, "82 08 00 01 00 03 'r/q' 01");
	EXPECT(sub, "90 03 00 01 01 33 0a 00 03 'r/q' 00 01 'one'");
	SEND(sub, "40 02 00 01");
	NOTHING(sub);
}

static void test_unsubscribe(void)
{
	struct hclient *pub = connected(CONNECT_PUB);
	struct hclient *sub = connected(CONNECT_SUB);
	SEND(sub, "82 08 00 01 00 03 'a/b' 00");
	EXPECT(sub, "90 03 00 01 00");
	SEND(sub, "a2 07 00 02 00 03 'a/b'");
	EXPECT(sub, "b0 02 00 02"); /* [MQTT-3.10.4-4] */
	SEND(pub, "30 08 00 03 'a/b' 'hi!'");
	NOTHING(sub);
	/* Unsubscribing what is not subscribed is still acknowledged [MQTT-3.10.4-5]. */
	SEND(sub, "a2 07 00 03 00 03 'x/y'");
	EXPECT(sub, "b0 02 00 03");
}

/* ---- wills, sessions, takeover ---- */

/* Client "w" with will "w/t" = "bye" (QoS 0), clean session. */
#define CONNECT_WILL "10 17 00 04 'MQTT' 04 06 00 3c 00 01 'w' 00 03 'w/t' 00 03 'bye'"

static void test_will_on_abrupt_close(void)
{
	struct hclient *watch = connected(CONNECT_SUB);
	SEND(watch, "82 08 00 01 00 03 'w/t' 00");
	EXPECT(watch, "90 03 00 01 00");
	struct hclient *w = connected(CONNECT_WILL);
	client_close(w);
	CU_ASSERT_TRUE(client_closed(w));
	EXPECT(watch, "30 08 00 03 'w/t' 'bye'"); /* [MQTT-3.1.2-8] */
}

static void test_no_will_after_disconnect(void)
{
	struct hclient *watch = connected(CONNECT_SUB);
	SEND(watch, "82 08 00 01 00 03 'w/t' 00");
	EXPECT(watch, "90 03 00 01 00");
	struct hclient *w = connected(CONNECT_WILL);
	SEND(w, "e0 00");
	CU_ASSERT_TRUE(client_closed(w));
	client_close(w);
	NOTHING(watch); /* [MQTT-3.1.2-10] */
}

/* Also a will: a protocol violation closes the connection abnormally. */
static void test_will_on_protocol_violation(void)
{
	struct hclient *watch = connected(CONNECT_SUB);
	SEND(watch, "82 08 00 01 00 03 'w/t' 00");
	EXPECT(watch, "90 03 00 01 00");
	struct hclient *w = connected(CONNECT_WILL);
	SEND(w, "20 02 00 00"); /* CONNACK from a client */
	CU_ASSERT_TRUE(client_closed(w));
	EXPECT(watch, "30 08 00 03 'w/t' 'bye'");
}

/* Client "s" with clean session 0. */
#define CONNECT_S_PERSISTENT "10 0d 00 04 'MQTT' 04 00 00 3c 00 01 's'"

/* [MQTT-3.2.2-2] session present on resumption; QoS 1 messages published
 * while it was away are delivered [MQTT-3.1.2-5]; QoS 0 ones are not kept. */
static void test_session_present_and_queued_qos1(void)
{
	struct hclient *s = connected(CONNECT_S_PERSISTENT);
	SEND(s, "82 08 00 01 00 03 'q/1' 01");
	EXPECT(s, "90 03 00 01 01");
	SEND(s, "e0 00");
	CU_ASSERT_TRUE(client_closed(s));

	struct hclient *pub = connected(CONNECT_PUB);
	SEND(pub, "32 0a 00 03 'q/1' 00 09 'off'");
	EXPECT(pub, "40 02 00 09");
	SEND(pub, "30 08 00 03 'q/1' 'q0!'");

	struct hclient *s2 = harness_connect(h);
	SEND(s2, CONNECT_S_PERSISTENT);
	EXPECT(s2, "20 02 01 00 32 0a 00 03 'q/1' 00 01 'off'");
	SEND(s2, "40 02 00 01");
	NOTHING(s2);
	/* The subscription came back with the session. */
	SEND(pub, "30 08 00 03 'q/1' 'now'");
	EXPECT(s2, "30 08 00 03 'q/1' 'now'");
	SEND(s2, "e0 00");

	/* Clean session 1 ends the stored session [MQTT-3.1.2-6]: not present. */
	struct hclient *s3 = harness_connect(h);
	SEND(s3, "10 0d 00 04 'MQTT' 04 02 00 3c 00 01 's'");
	EXPECT(s3, CONNACK_OK);
	SEND(pub, "30 08 00 03 'q/1' 'gone'");
	NOTHING(s3);
}

/* An unacknowledged QoS 1 delivery is sent again, DUP set, on resumption
 * [MQTT-4.4.0-1]. */
static void test_inflight_redelivered_with_dup(void)
{
	struct hclient *s = connected(CONNECT_S_PERSISTENT);
	SEND(s, "82 08 00 01 00 03 'q/1' 01");
	EXPECT(s, "90 03 00 01 01");
	struct hclient *pub = connected(CONNECT_PUB);
	SEND(pub, "32 0a 00 03 'q/1' 00 09 'abc'");
	EXPECT(pub, "40 02 00 09");
	EXPECT(s, "32 0a 00 03 'q/1' 00 01 'abc'");
	client_close(s); /* no PUBACK */
	struct hclient *s2 = harness_connect(h);
	SEND(s2, CONNECT_S_PERSISTENT);
	EXPECT(s2, "20 02 01 00 3a 0a 00 03 'q/1' 00 01 'abc'");
}

/* [MQTT-3.1.4-2] a second connection with the same client id closes the
 * first (3.1.1 has no packet to say so); the newcomer is accepted. */
static void test_takeover(void)
{
	struct hclient *first = connected(CONNECT_SUB);
	SEND(first, "82 08 00 01 00 03 'a/b' 00");
	EXPECT(first, "90 03 00 01 00");
	struct hclient *second = harness_connect(h);
	SEND(second, CONNECT_SUB);
	EXPECT(second, CONNACK_OK);
	CU_ASSERT_TRUE(client_closed(first));
	NOTHING(first);
	/* Clean session: the first one's subscription went with it. */
	struct hclient *pub = connected(CONNECT_PUB);
	SEND(pub, "30 08 00 03 'a/b' 'hi!'");
	NOTHING(second);
}

/* A taken-over persistent session keeps its subscriptions and says so. */
static void test_takeover_persistent(void)
{
	struct hclient *first = connected(CONNECT_S_PERSISTENT);
	SEND(first, "82 08 00 01 00 03 'a/b' 00");
	EXPECT(first, "90 03 00 01 00");
	struct hclient *second = harness_connect(h);
	SEND(second, CONNECT_S_PERSISTENT);
	EXPECT(second, "20 02 01 00");
	CU_ASSERT_TRUE(client_closed(first));
	struct hclient *pub = connected(CONNECT_PUB);
	SEND(pub, "30 08 00 03 'a/b' 'hi!'");
	EXPECT(second, "30 08 00 03 'a/b' 'hi!'");
}

/* ---- persistence: the same exchanges with a store, across a restart ---- */

static char data_dir[64];

static void persistent_config(char *buf, size_t len, const char *fsync)
{
	snprintf(buf, len,
		 "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
		 " \"persistence\": {\"enabled\": true, \"dir\": \"%s\", \"fsync\": \"%s\"},"
		 " \"log\": {\"level\": \"error\"}}",
		 data_dir, fsync);
}

static void setup_persistent(void)
{
	CU_ASSERT_FATAL(harness_temp_dir(data_dir, sizeof data_dir, "wisp-script") == 0);
	char config[512];
	persistent_config(config, sizeof config, "always");
	start(config);
}

static void teardown_persistent(void)
{
	teardown();
	harness_remove_dir(data_dir);
}

/* With fsync "always" the PUBACK waits for the group commit, then comes;
 * after a restart the session, its subscription, its queued message and
 * the retained message are all back [MQTT-3.1.2-4]. */
static void test_restart_keeps_session_queue_and_retained(void)
{
	struct hclient *s = connected(CONNECT_S_PERSISTENT);
	SEND(s, "82 08 00 01 00 03 'q/1' 01");
	EXPECT(s, "90 03 00 01 01");
	SEND(s, "e0 00");
	struct hclient *pub = connected(CONNECT_PUB);
	SEND(pub, "32 0a 00 03 'q/1' 00 09 'off'");
	EXPECT(pub, "40 02 00 09");
	SEND(pub, "35 0a 00 03 'r/t' 00 0a 'ret'");
	EXPECT(pub, "50 02 00 0a");
	SEND(pub, "62 02 00 0a");
	EXPECT(pub, "70 02 00 0a");

	harness_free(h);
	char config[512];
	persistent_config(config, sizeof config, "always");
	start(config);

	struct hclient *s2 = harness_connect(h);
	SEND(s2, CONNECT_S_PERSISTENT);
	EXPECT(s2, "20 02 01 00 32 0a 00 03 'q/1' 00 01 'off'");
	SEND(s2, "40 02 00 01");
	SEND(s2, "82 08 00 02 00 03 'r/t' 02");
	EXPECT(s2, "90 03 00 02 02 35 0a 00 03 'r/t' 00 02 'ret'");
	SEND(s2, "50 02 00 02");
	EXPECT(s2, "62 02 00 02");
	SEND(s2, "70 02 00 02");
	NOTHING(s2);
}

/* A QoS 2 PUBLISH of a persistent session whose PUBREL comes after a
 * restart: the packet id is still known, so a re-sent PUBLISH is not
 * routed again [MQTT-4.3.3-2]. */
static void test_restart_keeps_inbound_qos2(void)
{
	struct hclient *sub = connected(CONNECT_SUB);
	SEND(sub, "82 08 00 01 00 03 'a/b' 00");
	EXPECT(sub, "90 03 00 01 00");
	struct hclient *s = connected(CONNECT_S_PERSISTENT);
	SEND(s, "34 0a 00 03 'a/b' 00 05 'two'");
	EXPECT(s, "50 02 00 05");
	EXPECT(sub, "30 08 00 03 'a/b' 'two'");

	harness_free(h);
	char config[512];
	persistent_config(config, sizeof config, "no");
	start(config);

	sub = connected(CONNECT_SUB);
	SEND(sub, "82 08 00 01 00 03 'a/b' 00");
	EXPECT(sub, "90 03 00 01 00");
	struct hclient *s2 = harness_connect(h);
	SEND(s2, CONNECT_S_PERSISTENT);
	EXPECT(s2, "20 02 01 00");
	SEND(s2, "3c 0a 00 03 'a/b' 00 05 'two'");
	EXPECT(s2, "50 02 00 05");
	NOTHING(sub);
	SEND(s2, "62 02 00 05");
	EXPECT(s2, "70 02 00 05");
}

/* Whether `out` holds a PUBACK (40 02) for packet id `pid`. */
static bool has_puback(const uint8_t *out, size_t len, uint16_t pid)
{
	for (size_t i = 0; i + 4 <= len; i++)
		if (out[i] == 0x40 && out[i + 1] == 2 && out[i + 2] == (uint8_t)(pid >> 8) && out[i + 3] == (uint8_t)pid)
			return true;
	return false;
}

/* Acks wait for the store (its writes held here, as a stalled disk does):
 * of 200 publishers with three held PUBACKs each (their messages queued
 * for an offline persistent subscriber), 199 close
 * meanwhile. Once the store writes, the survivor gets its three in order
 * and the closed ones' are dropped (each close found its held acks at
 * once, through the connection's ack owner in session/conn.h, rather than
 * searching the queue of 600; ASan sees nothing freed twice or leaked). */
static void test_closed_publishers_held_acks_are_dropped(void)
{
	enum { PUBLISHERS = 200 };
	/* A persistent subscriber gone offline: each message is a record its
	 * PUBACK waits for. */
	struct hclient *s = connected(CONNECT_S_PERSISTENT);
	SEND(s, "82 06 00 01 00 01 't' 01");
	EXPECT(s, "90 03 00 01 01");
	SEND(s, "e0 00");
	char hold[96];
	snprintf(hold, sizeof hold, "%s/hold-writes", data_dir);
	FILE *f = fopen(hold, "w");
	CU_ASSERT_FATAL(f != NULL);
	fclose(f);
	setenv("WISP_DEBUG_HOLD_STORE_WRITES", hold, 1);
	struct hclient *c[PUBLISHERS];
	char script[96];
	for (int i = 0; i < PUBLISHERS; i++) {
		c[i] = harness_connect(h);
		snprintf(script, sizeof script, "10 10 00 04 'MQTT' 04 00 00 3c 00 04 'c%03d'", i);
		client_feed_hex(c[i], script);
		for (int pid = 1; pid <= 3; pid++) {
			snprintf(script, sizeof script, "32 06 00 01 't' 00 %02x 'x'", pid);
			client_feed_hex(c[i], script);
		}
	}
	harness_turns(h, 8);
	size_t len;
	for (int i = 0; i < PUBLISHERS; i++) {
		const uint8_t *out = client_output(c[i], &len);
		CU_ASSERT(!has_puback(out, len, 1) && !has_puback(out, len, 2) && !has_puback(out, len, 3));
		client_take(c[i]);
	}
	for (int i = 0; i + 1 < PUBLISHERS; i++)
		client_feed_close(c[i]);
	harness_turns(h, 8);
	for (int i = 0; i + 1 < PUBLISHERS; i++)
		CU_ASSERT(client_closed(c[i]));
	unlink(hold);
	harness_run(h);
	unsetenv("WISP_DEBUG_HOLD_STORE_WRITES");
	EXPECT(c[PUBLISHERS - 1], "40 02 00 01 40 02 00 02 40 02 00 03");
	for (int i = 0; i + 1 < PUBLISHERS; i++) {
		client_output(c[i], &len);
		CU_ASSERT_EQUAL(len, 0);
	}
}

/* ---- MQTT 5: only what is already right ---- */

/* CONNECT v5, clean start, keepalive 60, no properties, id "v5". */
#define CONNECT_V5 "10 0f 00 04 'MQTT' 05 02 00 3c 00 00 02 'v5'"

/* A v5 CONNACK's first bytes: the v5 work will add properties, so only the
 * flags and the reason code are pinned, and the property length must span
 * the rest [MQTT-3.2.2-1]. */
static void expect_v5_connack(struct hclient *c, uint8_t flags, uint8_t reason, const char *where)
{
	size_t n;
	const uint8_t *p = client_output(c, &n);
	bool ok = n >= 5 && p[0] == 0x20 && p[1] < 128 && (size_t)p[1] + 2 == n && p[2] == flags && p[3] == reason &&
		  p[4] < 128 && (size_t)p[4] + 5 == n;
	if (!ok)
		fprintf(stderr, "%s: not a v5 CONNACK with flags %02x and reason %02x (%zu bytes)\n", where, flags,
			reason, n);
	CU_ASSERT(ok);
	client_take(c);
}

static void test_v5_connect_ping_subscribe_publish(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, CONNECT_V5);
	expect_v5_connack(c, 0x00, 0x00, "v5 connack");
	SEND(c, "c0 00");
	EXPECT(c, "d0 00");
	/* SUBSCRIBE with empty properties; SUBACK: packet id, no properties, granted QoS. */
	SEND(c, "82 09 00 01 00 00 03 'a/b' 00");
	EXPECT(c, "90 04 00 01 00 00");
	/* A QoS 0 PUBLISH comes back with an empty property length. */
	SEND(c, "30 09 00 03 'a/b' 00 'hi!'");
	EXPECT(c, "30 09 00 03 'a/b' 00 'hi!'");
	/* QoS 1 with a matching subscriber: the short PUBACK (reason 0, no
	 * properties) [MQTT-3.4.2.1]; the delivery has an empty property length. */
	SEND(c, "82 09 00 03 00 00 03 'q/1' 01");
	EXPECT(c, "90 04 00 03 00 01");
	SEND(c, "32 0b 00 03 'q/1' 00 07 00 'one'");
	/* Its own subscription: the delivery is queued before the PUBACK
	 * (today's order; the other would be as right). */
	EXPECT(c, "32 0b 00 03 'q/1' 00 01 00 'one' 40 02 00 07");
	SEND(c, "40 02 00 01");
	NOTHING(c);
	/* UNSUBSCRIBE: UNSUBACK with no properties and reason 0 per filter. */
	SEND(c, "a2 08 00 02 00 00 03 'a/b'");
	EXPECT(c, "b0 04 00 02 00 00");
}

/* v5 drops 3.1.1's clean-session condition on an empty client id: with
 * Clean Start 0 it is accepted too, and CONNACK carries the Assigned Client
 * Identifier [MQTT-3.1.3-6][MQTT-3.1.3-7][MQTT-3.2.2-16]. */
static void test_v5_empty_id_clean_start_0_assigned(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 0d 00 04 'MQTT' 05 00 00 3c 00 00 00");
	size_t n;
	const uint8_t *p = client_output(c, &n);
	static const uint8_t prefix[] = {0x12, 0x00};
	const uint8_t *at = n >= 5 ? memmem(p + 5, n - 5, prefix, sizeof prefix) : NULL;
	CU_ASSERT_TRUE(n >= 5 && p[0] == 0x20 && p[2] == 0x00 && p[3] == 0x00);
	CU_ASSERT_TRUE(at != NULL && (size_t)(at - p) + 8 <= n && memcmp(at + 3, "auto-", 5) == 0);
	client_take(c);
	SEND(c, "c0 00");
	EXPECT(c, "d0 00");
}

/* v3.1.1 publisher, v5 subscriber and the other way round: each gets the
 * PUBLISH in its own version. */
static void test_v5_and_v311_interwork(void)
{
	struct hclient *v5 = harness_connect(h);
	SEND(v5, CONNECT_V5);
	client_take(v5);
	struct hclient *v3 = connected(CONNECT_SUB);
	SEND(v5, "82 09 00 01 00 00 03 'a/b' 00");
	EXPECT(v5, "90 04 00 01 00 00");
	SEND(v3, "82 08 00 01 00 03 'c/d' 00");
	EXPECT(v3, "90 03 00 01 00");
	SEND(v3, "30 08 00 03 'a/b' 'v3!'");
	EXPECT(v5, "30 09 00 03 'a/b' 00 'v3!'");
	SEND(v5, "30 09 00 03 'c/d' 00 'v5!'");
	EXPECT(v3, "30 08 00 03 'c/d' 'v5!'");
}

/* ---- MQTT 5 messages (issue #12, route5) ---- */

#define CONNECT_V5_SUB "10 10 00 04 'MQTT' 05 02 00 3c 00 00 03 's5b'"
#define CONNECT_V5_PUB "10 10 00 04 'MQTT' 05 02 00 3c 00 00 03 'p5b'"

static struct hclient *connected_v5(const char *connect)
{
	struct hclient *c = harness_connect(h);
	SEND(c, connect);
	expect_v5_connack(c, 0x00, 0x00, "v5 connack");
	return c;
}

/* [MQTT-3.3.2-17] [MQTT-3.3.2-18] the publisher's properties arrive
 * unchanged and in order, after the subscriber's own: the Message Expiry
 * Interval as the time left [MQTT-3.3.2-6] (none has passed) and its
 * Subscription Identifier [MQTT-3.3.4-3]; a 3.1.1 subscriber gets none. */
static void test_v5_properties_forwarded(void)
{
	struct hclient *s = connected_v5(CONNECT_V5_SUB);
	SEND(s, "82 0b 00 01 02 0b 05 00 03 'p/t' 00");
	EXPECT(s, "90 04 00 01 00 00");
	struct hclient *old = connected(CONNECT_SUB);
	SEND(old, "82 08 00 01 00 03 'p/t' 00");
	EXPECT(old, "90 03 00 01 00");
	struct hclient *p = connected_v5(CONNECT_V5_PUB);
	SEND(p, "30 18 00 03 'p/t' 11 02 00 00 0e 10 03 00 02 'ct' 26 00 01 'k' 00 01 'v' 'x'");
	EXPECT(s, "30 1a 00 03 'p/t' 13 02 00 00 0e 10 0b 05 03 00 02 'ct' 26 00 01 'k' 00 01 'v' 'x'");
	EXPECT(old, "30 06 00 03 'p/t' 'x'");
}

/* PUBACK 0x10 when no subscription matched, the short form when one did
 * [MQTT-3.4.2.1]; 0x99 for a Payload Format Indicator 1 payload that is
 * not UTF-8 [MQTT-3.3.2-4], not routed. */
static void test_v5_puback_reason_codes(void)
{
	struct hclient *p = connected_v5(CONNECT_V5_PUB);
	SEND(p, "32 09 00 03 'n/t' 00 07 00 'x'");
	EXPECT(p, "40 03 00 07 10");
	struct hclient *s = connected_v5(CONNECT_V5_SUB);
	SEND(s, "82 09 00 01 00 00 03 'n/t' 00");
	EXPECT(s, "90 04 00 01 00 00");
	SEND(p, "32 0b 00 03 'n/t' 00 08 02 01 01 ff");
	EXPECT(p, "40 03 00 08 99");
	NOTHING(s);
	SEND(p, "32 0b 00 03 'n/t' 00 09 02 01 01 'x'");
	EXPECT(p, "40 02 00 09");
	EXPECT(s, "30 09 00 03 'n/t' 02 01 01 'x'");
}

/* [MQTT-3.8.3-3] No Local; [MQTT-3.3.1-12] RETAIN cleared on forwarding
 * without Retain As Published, kept with it [MQTT-3.3.1-13]. */
static void test_v5_no_local_and_retain_as_published(void)
{
	struct hclient *c = connected_v5(CONNECT_V5_SUB);
	SEND(c, "82 09 00 01 00 00 03 'n/l' 04");
	EXPECT(c, "90 04 00 01 00 00");
	SEND(c, "30 07 00 03 'n/l' 00 'x'");
	NOTHING(c);
	SEND(c, "82 0f 00 02 00 00 03 'r/a' 08 00 03 'r/b' 00");
	EXPECT(c, "90 05 00 02 00 00 00");
	SEND(c, "31 07 00 03 'r/a' 00 'y'");
	EXPECT(c, "31 07 00 03 'r/a' 00 'y'");
	SEND(c, "31 07 00 03 'r/b' 00 'z'");
	EXPECT(c, "30 07 00 03 'r/b' 00 'z'");
}

/* Retain Handling 0: retained messages on every SUBSCRIBE [MQTT-3.3.1-9];
 * 1: only for a new subscription [MQTT-3.3.1-10]; 2: never [MQTT-3.3.1-11]. */
static void test_v5_retain_handling(void)
{
	struct hclient *p = connected_v5(CONNECT_V5_PUB);
	SEND(p, "31 07 00 03 'k/t' 00 'r'");
	struct hclient *c = connected_v5(CONNECT_V5_SUB);
	SEND(c, "82 09 00 01 00 00 03 'k/t' 20");
	EXPECT(c, "90 04 00 01 00 00");
	SEND(c, "82 09 00 02 00 00 03 'k/t' 10");
	EXPECT(c, "90 04 00 02 00 00");
	SEND(c, "82 09 00 03 00 00 03 'k/+' 10");
	EXPECT(c, "90 04 00 03 00 00 31 07 00 03 'k/t' 00 'r'");
	SEND(c, "82 09 00 04 00 00 03 'k/+' 00");
	EXPECT(c, "90 04 00 04 00 00 31 07 00 03 'k/t' 00 'r'");
}

/* [MQTT-3.3.4-3] [MQTT-3.3.4-4] overlapping subscriptions with identifiers
 * 1 and 2: one copy carrying both. */
static void test_v5_one_copy_with_both_identifiers(void)
{
	struct hclient *c = connected_v5(CONNECT_V5_SUB);
	SEND(c, "82 0b 00 01 02 0b 01 00 03 'o/#' 00");
	EXPECT(c, "90 04 00 01 00 00");
	SEND(c, "82 0b 00 02 02 0b 02 00 03 'o/+' 01");
	EXPECT(c, "90 04 00 02 00 01");
	struct hclient *p = connected_v5(CONNECT_V5_PUB);
	SEND(p, "32 09 00 03 'o/x' 00 01 00 'x'");
	EXPECT(p, "40 02 00 01");
	EXPECT(c, "32 0d 00 03 'o/x' 00 01 04 0b 01 0b 02 'x'");
}

/* [MQTT-3.9.3-1] a code per filter: 0x8F invalid filter; a shared
 * subscription is granted. */
static void test_v5_suback_reason_codes(void)
{
	struct hclient *c = connected_v5(CONNECT_V5_SUB);
	SEND(c, "82 1e 00 01 00 00 03 'a/b' 01 00 05 'a/#/b' 00 00 0a '$share/g/t' 00");
	EXPECT(c, "90 06 00 01 00 01 8f 00");
}

/* ---- Shared subscriptions (section 4.8.2) ---- */

#define CONNECT_SA "10 0e 00 04 'MQTT' 04 02 00 3c 00 02 'sa'"
#define CONNECT_SB "10 0e 00 04 'MQTT' 04 02 00 3c 00 02 'sb'"
/* Persistent (clean session 0). */
#define CONNECT_PA "10 0e 00 04 'MQTT' 04 00 00 3c 00 02 'pa'"
#define CONNECT_PB "10 0e 00 04 'MQTT' 04 00 00 3c 00 02 'pb'"
#define SUB_SHARED_Q1 "82 11 00 01 00 0c '$share/g/s/t' 01"
#define SUB_SHARED_Q0 "82 11 00 01 00 0c '$share/g/s/t' 00"

/* One delivery per message for the group, round-robin in the order the
 * members joined, each at min(message QoS, its granted QoS); an ordinary
 * subscriber to the same topic gets every message. */
static void test_shared_round_robin(void)
{
	struct hclient *a = connected(CONNECT_SA);
	SEND(a, SUB_SHARED_Q1);
	EXPECT(a, "90 03 00 01 01");
	struct hclient *b = connected(CONNECT_SB);
	SEND(b, SUB_SHARED_Q0);
	EXPECT(b, "90 03 00 01 00");
	struct hclient *o = connected(CONNECT_SUB);
	SEND(o, "82 08 00 01 00 03 's/t' 00");
	EXPECT(o, "90 03 00 01 00");
	struct hclient *p = connected(CONNECT_PUB);
	SEND(p, "32 08 00 03 's/t' 00 05 'x'");
	EXPECT(p, "40 02 00 05");
	EXPECT(a, "32 08 00 03 's/t' 00 01 'x'");
	NOTHING(b);
	EXPECT(o, "30 06 00 03 's/t' 'x'");
	SEND(p, "32 08 00 03 's/t' 00 06 'y'");
	EXPECT(p, "40 02 00 06");
	NOTHING(a);
	EXPECT(b, "30 06 00 03 's/t' 'y'");
	EXPECT(o, "30 06 00 03 's/t' 'y'");
	SEND(p, "30 06 00 03 's/t' 'z'");
	EXPECT(a, "30 06 00 03 's/t' 'z'");
	NOTHING(b);
	EXPECT(o, "30 06 00 03 's/t' 'z'");
	/* A topic "$share/g/s/t" published literally reaches no member. */
	SEND(p, "30 0f 00 0c '$share/g/s/t' 'w'");
	NOTHING(a);
	NOTHING(b);
}

/* [MQTT-4.8.2-1] a ShareName of at least one character, [MQTT-4.8.2-2]
 * without '/', '+', '#', followed by '/' and a filter: else 0x8F in v5,
 * 0x80 for 3.1.1. */
static void test_shared_malformed(void)
{
	struct hclient *c = connected_v5(CONNECT_V5_SUB);
	SEND(c, "82 33 00 01 00 00 09 '$share//t' 00 00 0a '$share/+/t' 00 00 08 '$share/g' 00 00 09 '$share/g/' 00");
	EXPECT(c, "90 07 00 01 00 8f 8f 8f 8f");
	struct hclient *o = connected(CONNECT_SUB);
	SEND(o, "82 32 00 01 00 09 '$share//t' 00 00 0a '$share/+/t' 00 00 08 '$share/g' 00 00 09 '$share/g/' 00");
	EXPECT(o, "90 06 00 01 80 80 80 80");
}

/* [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error:
 * DISCONNECT 0x82, then the connection is closed. */
static void test_shared_no_local_protocol_error(void)
{
	struct hclient *c = connected_v5(CONNECT_V5_SUB);
	SEND(c, "82 12 00 01 00 00 0c '$share/g/s/t' 04");
	EXPECT(c, "e0 01 82");
	CU_ASSERT(client_closed(c));
}

/* Retained messages go to a new Non-shared Subscription only (MQTT 5
 * section 3.3.1.3): a shared one gets the SUBACK alone, then live messages. */
static void test_shared_no_retained(void)
{
	struct hclient *p = connected(CONNECT_PUB);
	SEND(p, "31 06 00 03 's/t' 'r'");
	struct hclient *a = connected(CONNECT_SA);
	SEND(a, SUB_SHARED_Q1);
	EXPECT(a, "90 03 00 01 01");
	SEND(p, "31 06 00 03 's/t' 'n'");
	EXPECT(a, "30 06 00 03 's/t' 'n'");
}

/* A member leaving with unacknowledged QoS 1 messages: they go to another
 * connected member, by UNSUBSCRIBE and by disconnect of a persistent
 * session; an offline member is skipped while another is connected. */
static void test_shared_hand_over(void)
{
	struct hclient *a = connected(CONNECT_PA);
	SEND(a, SUB_SHARED_Q1);
	EXPECT(a, "90 03 00 01 01");
	struct hclient *b = connected(CONNECT_PB);
	SEND(b, SUB_SHARED_Q1);
	EXPECT(b, "90 03 00 01 01");
	struct hclient *p = connected(CONNECT_PUB);
	SEND(p, "32 08 00 03 's/t' 00 05 'x'");
	EXPECT(p, "40 02 00 05");
	EXPECT(a, "32 08 00 03 's/t' 00 01 'x'");
	client_close(a); /* PUBACK never sent */
	harness_run(h);
	EXPECT(b, "32 08 00 03 's/t' 00 01 'x'");
	SEND(b, "40 02 00 01");
	SEND(p, "32 08 00 03 's/t' 00 06 'y'");
	EXPECT(p, "40 02 00 06");
	EXPECT(b, "32 08 00 03 's/t' 00 02 'y'"); /* pa is offline: skipped */
	struct hclient *c = connected(CONNECT_SA);
	SEND(c, SUB_SHARED_Q1);
	EXPECT(c, "90 03 00 01 01");
	SEND(p, "32 08 00 03 's/t' 00 07 'z'");
	EXPECT(p, "40 02 00 07");
	EXPECT(b, "32 08 00 03 's/t' 00 03 'z'"); /* the cursor had wrapped to pa, offline */
	NOTHING(c);
	SEND(b, "40 02 00 03");
	SEND(p, "32 08 00 03 's/t' 00 08 'w'");
	EXPECT(p, "40 02 00 08");
	EXPECT(c, "32 08 00 03 's/t' 00 01 'w'");
	SEND(c, "a2 10 00 02 00 0c '$share/g/s/t'");
	EXPECT(c, "b0 02 00 02");
	EXPECT(b, "32 08 00 03 's/t' 00 04 'w'");
}

static CU_TestInfo shared_tests[] = {
	{"one delivery per group, round-robin, min QoS (4.8.2)", test_shared_round_robin},
	{"malformed share name: 0x8F / 0x80 [MQTT-4.8.2-1] [MQTT-4.8.2-2]", test_shared_malformed},
	{"No Local on a shared subscription: DISCONNECT 0x82 [MQTT-3.8.3-4]", test_shared_no_local_protocol_error},
	{"no retained messages on a shared subscription (3.3.1.3)", test_shared_no_retained},
	{"unacknowledged messages handed over on leave", test_shared_hand_over},
	CU_TEST_INFO_NULL,
};

#define CONNECT_V5_PERSIST "10 15 00 04 'MQTT' 05 00 00 3c 05 11 00 00 0e 10 00 03 's5p'"

/* A v5 CONNACK (flags and reason pinned, as expect_v5_connack) followed by
 * exactly `rest`. */
static void expect_v5_connack_then(struct hclient *c, uint8_t flags, const char *rest, const char *where)
{
	harness_run(h);
	size_t n;
	const uint8_t *p = client_output(c, &n);
	size_t first = harness_frame_len(p, n);
	uint8_t want[256];
	size_t wn = harness_unhex(rest, want, sizeof want);
	bool ok = first >= 5 && first <= n && p[0] == 0x20 && p[2] == flags && p[3] == 0 && n - first == wn &&
		  memcmp(p + first, want, wn) == 0;
	if (!ok)
		fprintf(stderr, "%s: not a v5 CONNACK (flags %02x) then the expected bytes\n", where, flags);
	CU_ASSERT(ok);
	client_take(c);
}

/* A v5 persistent session's subscription (identifier, No Local, Retain As
 * Published) and its queued message (properties, its delivery's
 * identifier) are the same after a restart [MQTT-3.1.2-4]. */
static void test_v5_restart_keeps_options_identifiers_and_properties(void)
{
	struct hclient *s = harness_connect(h);
	SEND(s, CONNECT_V5_PERSIST);
	expect_v5_connack(s, 0x00, 0x00, "v5 persistent connack");
	SEND(s, "82 0b 00 01 02 0b 07 00 03 'v/t' 0d");
	EXPECT(s, "90 04 00 01 00 01");
	SEND(s, "e0 00");
	struct hclient *p = connected_v5(CONNECT_V5_PUB);
	SEND(p, "33 10 00 03 'v/t' 00 05 07 26 00 01 'k' 00 01 'v' 'x'");
	EXPECT(p, "40 02 00 05");

	harness_free(h);
	char config[512];
	persistent_config(config, sizeof config, "always");
	start(config);

	struct hclient *s2 = harness_connect(h);
	SEND(s2, CONNECT_V5_PERSIST);
	expect_v5_connack_then(s2, 0x01, "33 12 00 03 'v/t' 00 01 09 0b 07 26 00 01 'k' 00 01 'v' 'x'", "resumed");
	SEND(s2, "40 02 00 01");
	SEND(s2, "30 07 00 03 'v/t' 00 'y'"); /* No Local still holds */
	NOTHING(s2);
}

/* The client's Receive Maximum (1) bounds what Wisp has in flight to it
 * [MQTT-3.3.4-9]; nothing over its Maximum Packet Size (30) is sent
 * [MQTT-3.1.2-25]: that message is dropped for it alone. */
static void test_v5_client_receive_maximum_and_packet_size(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 18 00 04 'MQTT' 05 02 00 3c 08 21 00 01 27 00 00 00 1e 00 03 'rmx'");
	expect_v5_connack(c, 0x00, 0x00, "connack");
	SEND(c, "82 09 00 01 00 00 03 'r/t' 01");
	EXPECT(c, "90 04 00 01 00 01");
	struct hclient *p = connected_v5(CONNECT_V5_PUB);
	SEND(p, "32 09 00 03 'r/t' 00 01 00 'a'");
	EXPECT(p, "40 02 00 01");
	EXPECT(c, "32 09 00 03 'r/t' 00 01 00 'a'");
	SEND(p, "32 09 00 03 'r/t' 00 02 00 'b'");
	EXPECT(p, "40 02 00 02");
	NOTHING(c); /* the window of 1 is full */
	SEND(c, "40 02 00 01");
	EXPECT(c, "32 09 00 03 'r/t' 00 02 00 'b'");
	SEND(p, "30 24 00 03 'r/t' 00 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'"); /* 38 bytes to c: over 30 */
	SEND(p, "30 07 00 03 'r/t' 00 'c'");
	EXPECT(c, "30 07 00 03 'r/t' 00 'c'");
}

/* A v5 client with more unacknowledged QoS 2 PUBLISHes than the Receive
 * Maximum Wisp announced (limits.max_inflight) gets DISCONNECT 0x93. */
static void test_v5_receive_maximum_exceeded(void)
{
	harness_free(h);
	start("{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}], \"limits\": {\"max_inflight\": 2},"
	      " \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}}");
	struct hclient *p = connected_v5(CONNECT_V5_PUB);
	SEND(p, "34 09 00 03 'q/2' 00 01 00 'a'");
	EXPECT(p, "50 03 00 01 10");
	SEND(p, "34 09 00 03 'q/2' 00 02 00 'b'");
	EXPECT(p, "50 03 00 02 10");
	SEND(p, "34 09 00 03 'q/2' 00 03 00 'c'");
	EXPECT(p, "e0 01 93");
	CU_ASSERT(client_closed(p));
}

/* [MQTT-3.3.2-9..11] outbound Topic Aliases up to the client's Topic Alias
 * Maximum (2): a new topic goes with its name and an alias, a repeated one
 * as the alias alone, slots reused round robin. */
static void test_v5_outbound_topic_aliases(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 13 00 04 'MQTT' 05 02 00 3c 03 22 00 02 00 03 'tam'");
	expect_v5_connack(c, 0x00, 0x00, "connack");
	SEND(c, "82 09 00 01 00 00 03 'a/#' 00");
	EXPECT(c, "90 04 00 01 00 00");
	struct hclient *p = connected_v5(CONNECT_V5_PUB);
	SEND(p, "30 07 00 03 'a/1' 00 'x'");
	EXPECT(c, "30 0a 00 03 'a/1' 03 23 00 01 'x'");
	SEND(p, "30 07 00 03 'a/1' 00 'y'");
	EXPECT(c, "30 07 00 00 03 23 00 01 'y'");
	SEND(p, "30 07 00 03 'a/2' 00 'z'");
	EXPECT(c, "30 0a 00 03 'a/2' 03 23 00 02 'z'");
	SEND(p, "30 07 00 03 'a/3' 00 'w'");
	EXPECT(c, "30 0a 00 03 'a/3' 03 23 00 01 'w'");
	SEND(p, "30 07 00 03 'a/1' 00 'v'");
	EXPECT(c, "30 0a 00 03 'a/1' 03 23 00 02 'v'");
	/* A client that gave no maximum gets no alias [MQTT-3.3.2-9]. */
	struct hclient *s = connected_v5(CONNECT_V5_SUB);
	SEND(s, "82 09 00 01 00 00 03 'a/#' 00");
	EXPECT(s, "90 04 00 01 00 00");
	SEND(p, "30 07 00 03 'a/1' 00 'u'");
	EXPECT(s, "30 07 00 03 'a/1' 00 'u'");
	EXPECT(c, "30 07 00 00 03 23 00 02 'u'");
}

/* A v5 will's properties reach subscribers like a PUBLISH's, unchanged
 * and in order [MQTT-3.3.2-17]; its Message Expiry Interval starts when
 * it is published and goes as the time left (section 3.1.3.2.4); a 3.1.1
 * subscriber gets none. */
static void test_v5_will_properties(void)
{
	struct hclient *watch = connected_v5(CONNECT_V5_SUB);
	SEND(watch, "82 09 00 01 00 00 03 'w/t' 00");
	EXPECT(watch, "90 04 00 01 00 00");
	struct hclient *old = connected(CONNECT_SUB);
	SEND(old, "82 08 00 01 00 03 'w/t' 00");
	EXPECT(old, "90 03 00 01 00");
	struct hclient *w = harness_connect(h);
	SEND(w, "10 27 00 04 'MQTT' 05 06 00 3c 00 00 03 'wil' 0c 02 00 00 00 64 26 00 01 'k' 00 01 'v'"
		" 00 03 'w/t' 00 03 'bye'");
	expect_v5_connack(w, 0x00, 0x00, "will connack");
	client_close(w);
	EXPECT(watch, "30 15 00 03 'w/t' 0c 02 00 00 00 64 26 00 01 'k' 00 01 'v' 'bye'");
	EXPECT(old, "30 08 00 03 'w/t' 'bye'");
}


/* ---- MQTT 5 enhanced authentication (4.12) ---- */

/* A v5 packet: type byte, then `body` with its Remaining Length. */
static size_t packet(uint8_t type, const uint8_t *body, size_t n, uint8_t *out)
{
	size_t o = 0;
	out[o++] = type;
	size_t rl = n;
	do {
		uint8_t b = rl & 0x7f;
		rl >>= 7;
		out[o++] = (uint8_t)(b | (rl ? 0x80 : 0));
	} while (rl);
	memcpy(out + o, body, n);
	return o + n;
}

/* Authentication Method and Data properties, with their length first
 * (a varint: one or two bytes here). */
static size_t auth_props(const char *method, const char *data, uint8_t *out)
{
	uint8_t p[400];
	size_t ml = strlen(method), dl = data ? strlen(data) : 0, o = 0;
	p[o++] = 0x15;
	p[o++] = (uint8_t)(ml >> 8);
	p[o++] = (uint8_t)ml;
	memcpy(p + o, method, ml);
	o += ml;
	if (data) {
		p[o++] = 0x16;
		p[o++] = (uint8_t)(dl >> 8);
		p[o++] = (uint8_t)dl;
		memcpy(p + o, data, dl);
		o += dl;
	}
	size_t head = 0;
	if (o < 128) {
		out[head++] = (uint8_t)o;
	} else {
		out[head++] = (uint8_t)(0x80 | (o & 0x7f));
		out[head++] = (uint8_t)(o >> 7);
	}
	memcpy(out + head, p, o);
	return head + o;
}

/* CONNECT v5, clean start, keepalive 60, id "sc", naming `method`. */
static void send_connect_auth(struct hclient *c, const char *method, const char *data)
{
	uint8_t body[512], pkt[520];
	size_t n = harness_unhex("00 04 'MQTT' 05 02 00 3c", body, sizeof body);
	n += auth_props(method, data, body + n);
	n += harness_unhex("00 02 'sc'", body + n, sizeof body - n);
	client_send(c, pkt, packet(0x10, body, n, pkt));
}

static void send_auth(struct hclient *c, uint8_t reason, const char *method, const char *data)
{
	uint8_t body[512], pkt[520];
	body[0] = reason;
	size_t n = 1 + auth_props(method, data, body + 1);
	client_send(c, pkt, packet(0xf0, body, n, pkt));
}

/* A broker whose password file holds "scram" / "pencil" in SCRAM form. */
static void start_scram(char *dir, size_t dirlen)
{
	char enc[PASSWD_ENCODED_MAX], path[96], config[512];
	CU_ASSERT_FATAL(passwd_hash_scram("pencil", 6, 4096, enc, sizeof enc) > 0);
	CU_ASSERT_FATAL(harness_temp_dir(dir, dirlen, "wisp-script-scram") == 0);
	snprintf(path, sizeof path, "%s/passwd", dir);
	FILE *f = fopen(path, "w");
	CU_ASSERT_FATAL(f != NULL);
	fprintf(f, "scram:%s\n", enc);
	fclose(f);
	snprintf(config, sizeof config,
		 "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0, \"allow_anonymous\": true}],"
		 " \"auth\": {\"password_file\": \"%s\"},"
		 " \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}}",
		 path);
	harness_free(h);
	start(config);
}

#define CLIENT_FIRST_BARE "n=scram,r=fyko+d2lbbFgONRv9qkxdawL"

/* Sends client-first, checks the server-first AUTH 0x18 byte for byte but
 * for the server's 30 random nonce characters, and returns it in sf. */
static size_t scram_first(struct hclient *c, char *sf, size_t cap)
{
	send_connect_auth(c, "SCRAM-SHA-256", "n,," CLIENT_FIRST_BARE);
	size_t n;
	const uint8_t *p = client_output(c, &n);
	/* f0 rl 18 pl 15 00 0d 'SCRAM-SHA-256' 16 00 len 'r=<client nonce><30>,s=<24>,i=4096' */
	static const char head[] = "\xf0\x6f\x18\x6d\x15\x00\x0dSCRAM-SHA-256\x16\x00\x5a"
				   "r=fyko+d2lbbFgONRv9qkxdawL";
	bool ok = n == 0x71 && memcmp(p, head, sizeof head - 1) == 0 &&
		  memcmp(p + sizeof head - 1 + 30, ",s=", 3) == 0 && memcmp(p + n - 7, ",i=4096", 7) == 0;
	CU_ASSERT_FATAL(ok);
	size_t len = (size_t)p[21] << 8 | p[22];
	CU_ASSERT_FATAL(len < cap && 23 + len == n);
	memcpy(sf, p + 23, len);
	sf[len] = '\0';
	client_take(c);
	return len;
}

/* The plain v5 CONNACK of this broker (its properties), for comparison. */
static size_t plain_connack(uint8_t *out, size_t cap)
{
	struct hclient *p = harness_connect(h);
	SEND(p, CONNECT_V5);
	size_t n;
	const uint8_t *b = client_output(p, &n);
	CU_ASSERT_FATAL(n <= cap);
	memcpy(out, b, n);
	client_take(p);
	client_close(p);
	return n;
}

/* SCRAM-SHA-256: CONNECT with client-first, AUTH 0x18 both ways, then the
 * CONNACK with the method [MQTT-4.12.0-5] and server-final as its
 * Authentication Data; the client is then served. Re-authentication is
 * refused with DISCONNECT 0x87 [MQTT-4.12.1-2]. */
static void test_v5_scram_success(void)
{
	char dir[64], sf[256], final[320], v[128];
	start_scram(dir, sizeof dir);
	uint8_t plain[128], want[256];
	size_t pn = plain_connack(plain, sizeof plain);
	struct hclient *c = harness_connect(h);
	size_t sflen = scram_first(c, sf, sizeof sf);
	CU_ASSERT_FATAL(scram_client_final("pencil", CLIENT_FIRST_BARE, sf, sflen, final, sizeof final, v,
					   sizeof v) == 0);
	send_auth(c, 0x18, "SCRAM-SHA-256", final);
	/* The plain CONNACK's properties, then the method and server-final. */
	uint8_t body[256];
	size_t bn = pn - 2;
	memcpy(body, plain + 2, bn);
	size_t extra = auth_props("SCRAM-SHA-256", v, body + bn) - 1; /* under 128: one length byte */
	memmove(body + bn, body + bn + 1, extra);
	CU_ASSERT_FATAL(body[2] + extra < 128);
	body[2] = (uint8_t)(body[2] + extra);
	bn += extra;
	size_t wn = packet(0x20, body, bn, want);
	size_t n;
	const uint8_t *got = client_output(c, &n);
	CU_ASSERT_TRUE(n == wn && memcmp(got, want, n) == 0);
	CU_ASSERT_EQUAL(v[0], 'v');
	client_take(c);
	SEND(c, "c0 00");
	EXPECT(c, "d0 00");
	send_auth(c, 0x19, "SCRAM-SHA-256", "n,," CLIENT_FIRST_BARE);
	EXPECT(c, "e0 01 87");
	CU_ASSERT_TRUE(client_closed(c));
	harness_remove_dir(dir);
}

/* A wrong password: the proof fails, CONNACK 0x86 as for a wrong password
 * in CONNECT (MQTT 5 leaves the code to the server, 4.12.0-4). */
static void test_v5_scram_wrong_password(void)
{
	char dir[64], sf[256], final[320], v[128];
	start_scram(dir, sizeof dir);
	struct hclient *c = harness_connect(h);
	size_t sflen = scram_first(c, sf, sizeof sf);
	CU_ASSERT_FATAL(scram_client_final("Pencil", CLIENT_FIRST_BARE, sf, sflen, final, sizeof final, v,
					   sizeof v) == 0);
	send_auth(c, 0x18, "SCRAM-SHA-256", final);
	EXPECT(c, "20 03 00 86 00");
	CU_ASSERT_TRUE(client_closed(c));
	harness_remove_dir(dir);
}

/* During the exchange the client's AUTH names the CONNECT's method
 * [MQTT-4.12.0-5] and says 0x18 [MQTT-4.12.0-3]: else CONNACK 0x82. A
 * second CONNECT is refused too [MQTT-3.1.0-2], and any packet but AUTH
 * and DISCONNECT [MQTT-3.1.2-30]. */
static void test_v5_auth_mismatch(void)
{
	char dir[64], sf[256];
	start_scram(dir, sizeof dir);
	struct hclient *c = harness_connect(h);
	scram_first(c, sf, sizeof sf);
	send_auth(c, 0x18, "SCRAM-SHA-1", "c=biws");
	EXPECT(c, "20 03 00 82 00");
	CU_ASSERT_TRUE(client_closed(c));
	struct hclient *d = harness_connect(h);
	scram_first(d, sf, sizeof sf);
	send_auth(d, 0x19, "SCRAM-SHA-256", "c=biws");
	EXPECT(d, "20 03 00 82 00");
	struct hclient *e = harness_connect(h);
	scram_first(e, sf, sizeof sf);
	send_connect_auth(e, "SCRAM-SHA-256", "n,," CLIENT_FIRST_BARE);
	EXPECT(e, "20 03 00 82 00");
	CU_ASSERT_TRUE(client_closed(e));
	/* Only AUTH or DISCONNECT until the CONNACK [MQTT-3.1.2-30]: a PINGREQ
	 * is refused, a DISCONNECT just ends it. */
	struct hclient *f = harness_connect(h);
	scram_first(f, sf, sizeof sf);
	SEND(f, "c0 00");
	EXPECT(f, "20 03 00 82 00");
	CU_ASSERT_TRUE(client_closed(f));
	struct hclient *g = harness_connect(h);
	scram_first(g, sf, sizeof sf);
	SEND(g, "e0 00");
	NOTHING(g);
	CU_ASSERT_TRUE(client_closed(g));
	harness_remove_dir(dir);
}

/* A method Wisp does not offer: CONNACK 0x8C [MQTT-4.12.0-1], then close;
 * SCRAM-SHA-256 without a password file is not offered either. */
static void test_v5_unknown_auth_method(void)
{
	struct hclient *c = harness_connect(h);
	send_connect_auth(c, "KERBEROS", NULL);
	EXPECT(c, "20 03 00 8c 00");
	CU_ASSERT_TRUE(client_closed(c));
	struct hclient *d = harness_connect(h);
	send_connect_auth(d, "SCRAM-SHA-256", "n,," CLIENT_FIRST_BARE);
	EXPECT(d, "20 03 00 8c 00");
	CU_ASSERT_TRUE(client_closed(d));
}

/* A client whose CONNECT named no method must not send AUTH
 * [MQTT-4.12.0-6]: DISCONNECT 0x82, and the connection closes. */
static void test_v5_auth_without_method(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, CONNECT_V5);
	expect_v5_connack(c, 0x00, 0x00, "v5 connack");
	SEND(c, "f0 02 18 00");
	EXPECT(c, "e0 01 82"); /* the short form [MQTT-3.14.2.1] */
	CU_ASSERT_TRUE(client_closed(c));
	/* Before any CONNECT, AUTH is not a CONNECT: closed [MQTT-3.1.0-1]. */
	struct hclient *d = harness_connect(h);
	SEND(d, "f0 02 18 00");
	NOTHING(d);
	CU_ASSERT_TRUE(client_closed(d));
}

static CU_TestInfo connect_tests[] = {
	{"CONNECT accepted: CONNACK 0", test_connect_accepted},
	{"CONNECT a byte at a time", test_connect_byte_by_byte},
	{"3.1 CONNECT (MQIsdp) accepted", test_connect_31_accepted},
	{"unknown protocol level: CONNACK 1 [MQTT-3.1.2-2]", test_connect_refused_protocol_level},
	{"empty id with clean session 0: CONNACK 2 [MQTT-3.1.3-8]", test_connect_refused_empty_id_persistent},
	{"v5 empty id with clean start 0: assigned id [MQTT-3.1.3-6]", test_v5_empty_id_clean_start_0_assigned},
	{"3.1 empty id: CONNACK 2", test_connect_31_refused_empty_id},
	{"anonymous not allowed: CONNACK 5", test_connect_refused_not_authorised},
	{"password file: CONNACK 0, 4 and 5", test_connect_password},
	{"first packet not CONNECT: closed [MQTT-3.1.0-1]", test_first_packet_not_connect},
	{"second CONNECT: closed [MQTT-3.1.0-2]", test_second_connect_closes},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo flow_tests[] = {
	{"PINGREQ: PINGRESP [MQTT-3.12.4-1]", test_pingreq},
	{"SUBSCRIBE, SUBACK, QoS 0 delivery", test_subscribe_and_qos0},
	{"SUBACK code per filter [MQTT-3.8.4-5]", test_subscribe_several_filters},
	{"QoS 1: PUBACK both ways", test_qos1_exchange},
	{"QoS 2: PUBREC, PUBREL, PUBCOMP both ways", test_qos2_exchange},
	{"retained message after SUBACK [MQTT-3.3.1-6]", test_retained_on_subscribe},
	{"retained QoS 1 message on subscribe", test_retained_qos1},
	{"UNSUBSCRIBE: UNSUBACK, no more deliveries", test_unsubscribe},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo session_tests[] = {
	{"will on abrupt close [MQTT-3.1.2-8]", test_will_on_abrupt_close},
	{"no will after DISCONNECT [MQTT-3.1.2-10]", test_no_will_after_disconnect},
	{"will on protocol violation", test_will_on_protocol_violation},
	{"session present and queued QoS 1 on reconnect [MQTT-3.2.2-2]", test_session_present_and_queued_qos1},
	{"in-flight QoS 1 re-sent with DUP [MQTT-4.4.0-1]", test_inflight_redelivered_with_dup},
	{"takeover of a client id [MQTT-3.1.4-2]", test_takeover},
	{"takeover of a persistent session", test_takeover_persistent},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo persist_tests[] = {
	{"restart keeps session, queue and retained [MQTT-3.1.2-4]", test_restart_keeps_session_queue_and_retained},
	{"restart keeps inbound QoS 2 packet ids [MQTT-4.3.3-2]", test_restart_keeps_inbound_qos2},
	{"closed publishers' held acks are dropped, the others' sent in order", test_closed_publishers_held_acks_are_dropped},
	{"v5 restart keeps options, identifiers, properties", test_v5_restart_keeps_options_identifiers_and_properties},
	CU_TEST_INFO_NULL,
};

/* ---- MQTT 5: CONNACK properties, refusals, server DISCONNECT, sessions ---- */

/* What Mosquitto 2.0.11 sends with max_inflight_messages 20 and
 * max_packet_size 1048576 (the broker's defaults): Topic Alias Maximum 10,
 * Maximum Packet Size, Receive Maximum 20, in that order [MQTT-3.2.2.3]. */
#define CONNACK_V5 "20 0e 00 00 0b 22 00 0a 27 00 10 00 00 21 00 14"

static void test_v5_connack_properties(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, CONNECT_V5);
	EXPECT(c, CONNACK_V5);
	/* Keep alive 0: Server Keep Alive 65535 (limits.max_keepalive) after
	 * the Topic Alias Maximum, as Mosquitto [MQTT-3.2.2-21]. */
	struct hclient *k = harness_connect(h);
	SEND(k, "10 0f 00 04 'MQTT' 05 02 00 00 00 00 02 'k0'");
	EXPECT(k, "20 11 00 00 0e 22 00 0a 13 ff ff 27 00 10 00 00 21 00 14");
}

/* [MQTT-3.2.2-6][MQTT-3.2.2-7] a refusing v5 CONNACK: a v5 code, no
 * properties, session present 0, then the close; nothing was created.
 * (An empty id with Clean Start 0 is no refusal in v5: see
 * test_v5_empty_id_clean_start_0_assigned.) */
static void test_v5_refusals(void)
{
	/* An authentication method, Clean Start 0: 0x8C Bad authentication method. */
	struct hclient *a = harness_connect(h);
	SEND(a, "10 15 00 04 'MQTT' 05 00 00 3c 07 15 00 04 'SCRA' 00 01 'x'");
	EXPECT(a, "20 03 00 8c 00");
	CU_ASSERT_TRUE(client_closed(a));
}

/* A will whose Payload Format Indicator promises UTF-8 and whose payload is
 * not: CONNACK 0x99 (MQTT 5 section 3.1.3.2.3), no session. */
static void test_v5_will_payload_format_invalid(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 1a 00 04 'MQTT' 05 06 00 3c 00 00 02 'v5' 02 01 01 00 03 'w/t' 00 01 ff");
	EXPECT(c, "20 03 00 99 00");
	CU_ASSERT_TRUE(client_closed(c));
	struct hclient *ok = harness_connect(h);
	SEND(ok, "10 1a 00 04 'MQTT' 05 06 00 3c 00 00 02 'v5' 02 01 01 00 03 'w/t' 00 01 'k'");
	EXPECT(ok, CONNACK_V5);
}

/* Server DISCONNECT before the close, with the reason code only (Remaining
 * Length 1, as Mosquitto writes it) [MQTT-3.14.2.1]. */
static void test_v5_server_disconnect(void)
{
	struct hclient *first = harness_connect(h);
	SEND(first, CONNECT_V5);
	EXPECT(first, CONNACK_V5);
	struct hclient *second = harness_connect(h);
	SEND(second, CONNECT_V5);
	EXPECT(second, CONNACK_V5);
	EXPECT(first, "e0 01 8e"); /* Session taken over [MQTT-3.1.4-3] */
	CU_ASSERT_TRUE(client_closed(first));
	SEND(second, CONNECT_V5); /* a second CONNECT: Protocol Error */
	EXPECT(second, "e0 01 82");
	CU_ASSERT_TRUE(client_closed(second));
}

/* DISCONNECT 0x04 publishes the will [MQTT-3.14.4-3]; 0x00 does not. */
static void test_v5_disconnect_with_will(void)
{
	struct hclient *w = connected(CONNECT_SUB);
	SEND(w, "82 08 00 01 00 03 'w/t' 00");
	EXPECT(w, "90 03 00 01 00");
	struct hclient *c = harness_connect(h);
	/* v5, will flag, clean start; will properties empty, topic w/t, payload "bye" */
	SEND(c, "10 1a 00 04 'MQTT' 05 06 00 3c 00 00 02 'v5' 00 00 03 'w/t' 00 03 'bye'");
	EXPECT(c, CONNACK_V5);
	SEND(c, "e0 02 04 00");
	CU_ASSERT_TRUE(client_closed(c));
	EXPECT(w, "30 08 00 03 'w/t' 'bye'");
}

/* Will properties reach a v5 subscriber as a PUBLISH's would (MQTT 5,
 * 3.1.3.2): Message Expiry Interval (its time left, counted from the
 * will's publication), Content Type and a User Property, in order; the
 * Will Delay Interval is the broker's and is not forwarded. */
static void test_v5_will_delay_not_forwarded(void)
{
	struct hclient *w = harness_connect(h);
	SEND(w, CONNECT_V5_SUB);
	EXPECT(w, CONNACK_V5);
	SEND(w, "82 09 00 01 00 00 03 'w/t' 00");
	EXPECT(w, "90 04 00 01 00 00");
	struct hclient *c = harness_connect(h);
	SEND(c, "10 2f 00 04 'MQTT' 05 06 00 3c 00 00 02 'v5' 15 18 00 00 00 00 02 00 00 00 3c 03 00 01 't'"
		" 26 00 01 'k' 00 01 'v' 00 03 'w/t' 00 03 'bye'");
	EXPECT(c, CONNACK_V5);
	SEND(c, "e0 02 04 00");
	CU_ASSERT_TRUE(client_closed(c));
	EXPECT(w, "30 19 00 03 'w/t' 10 02 00 00 00 3c 03 00 01 't' 26 00 01 'k' 00 01 'v' 'bye'");
}

/* [MQTT-3.1.2-25] the client's Maximum Packet Size, to the byte: the
 * 11-byte v5 PUBLISH reaches a client whose maximum is 11, not one whose
 * maximum is 10. */
static void test_v5_client_maximum_packet_size(void)
{
	struct hclient *fits = harness_connect(h);
	SEND(fits, "10 15 00 04 'MQTT' 05 02 00 3c 05 27 00 00 00 0b 00 03 's11'");
	EXPECT(fits, CONNACK_V5);
	SEND(fits, "82 09 00 01 00 00 03 'a/b' 00");
	EXPECT(fits, "90 04 00 01 00 00");
	struct hclient *tight = harness_connect(h);
	SEND(tight, "10 15 00 04 'MQTT' 05 02 00 3c 05 27 00 00 00 0a 00 03 's10'");
	EXPECT(tight, CONNACK_V5);
	SEND(tight, "82 09 00 01 00 00 03 'a/b' 00");
	EXPECT(tight, "90 04 00 01 00 00");
	struct hclient *pub = connected(CONNECT_PUB);
	SEND(pub, "30 08 00 03 'a/b' 'hi!'");
	EXPECT(fits, "30 09 00 03 'a/b' 00 'hi!'");
	NOTHING(tight);
}

/* Topic aliases [MQTT-3.3.2-12]: set with a topic, then used with an
 * empty one; alias 11 (over the maximum of 10) is DISCONNECT 0x94. */
static void test_v5_topic_alias(void)
{
	struct hclient *sub = connected(CONNECT_SUB);
	SEND(sub, "82 08 00 01 00 03 'a/b' 00");
	EXPECT(sub, "90 03 00 01 00");
	struct hclient *c = harness_connect(h);
	SEND(c, CONNECT_V5);
	EXPECT(c, CONNACK_V5);
	SEND(c, "30 0c 00 03 'a/b' 03 23 00 01 'one'");
	EXPECT(sub, "30 08 00 03 'a/b' 'one'");
	SEND(c, "30 09 00 00 03 23 00 01 'two'");
	EXPECT(sub, "30 08 00 03 'a/b' 'two'");
	SEND(c, "30 0c 00 03 'a/b' 03 23 00 0b 'bad'");
	EXPECT(c, "e0 01 94");
	CU_ASSERT_TRUE(client_closed(c));
}

/* [MQTT-3.1.2-23] Clean Start 0 without a Session Expiry Interval: the
 * session ends with the connection; with one, it is kept. */
static void test_v5_session_expiry(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 0f 00 04 'MQTT' 05 00 00 3c 00 00 02 'v5'");
	EXPECT(c, CONNACK_V5);
	SEND(c, "e0 00");
	struct hclient *again = harness_connect(h);
	SEND(again, "10 0f 00 04 'MQTT' 05 00 00 3c 00 00 02 'v5'");
	EXPECT(again, CONNACK_V5); /* session present 0 */
	SEND(again, "e0 00");
	/* Session Expiry Interval 60: kept, session present 1 on return. */
	struct hclient *kept = harness_connect(h);
	SEND(kept, "10 14 00 04 'MQTT' 05 00 00 3c 05 11 00 00 00 3c 00 02 'v5'");
	EXPECT(kept, CONNACK_V5);
	SEND(kept, "e0 00");
	struct hclient *back = harness_connect(h);
	SEND(back, "10 14 00 04 'MQTT' 05 00 00 3c 05 11 00 00 00 3c 00 02 'v5'");
	EXPECT(back, "20 0e 01 00 0b 22 00 0a 27 00 10 00 00 21 00 14");
	/* [MQTT-3.14.2-2] not from 0 at DISCONNECT: this one had 60, fine;
	 * a connection that had 0 and sets one gets DISCONNECT 0x82. */
	struct hclient *zero = harness_connect(h);
	SEND(zero, "10 0f 00 04 'MQTT' 05 02 00 3c 00 00 02 'z0'");
	EXPECT(zero, CONNACK_V5);
	SEND(zero, "e0 07 00 05 11 00 00 00 3c");
	EXPECT(zero, "e0 01 82");
	CU_ASSERT_TRUE(client_closed(zero));
}

/* 3.1: ids over 23 characters get CONNACK 2; the CONNACK of a resumed
 * session leaves the (reserved) session present bit clear. */
static void test_31_strictness(void)
{
	struct hclient *c = harness_connect(h);
	SEND(c, "10 26 00 06 'MQIsdp' 03 02 00 3c 00 18 'abcdefghijklmnopqrstuvwx'");
	EXPECT(c, "20 02 00 02");
	CU_ASSERT_TRUE(client_closed(c));
	struct hclient *p = harness_connect(h);
	SEND(p, "10 13 00 06 'MQIsdp' 03 00 00 3c 00 05 'keep3'");
	EXPECT(p, "20 02 00 00");
	SEND(p, "e0 00");
	struct hclient *r = harness_connect(h);
	SEND(r, "10 13 00 06 'MQIsdp' 03 00 00 3c 00 05 'keep3'");
	EXPECT(r, "20 02 00 00");
}

static CU_TestInfo v5_session_tests[] = {
	{"v5 CONNACK properties as Mosquitto 2.0.11 writes them", test_v5_connack_properties},
	{"v5 refusals: 0x8C, no properties, closed", test_v5_refusals},
	{"v5 will with Payload Format 1 and a payload that is not UTF-8: CONNACK 0x99", test_v5_will_payload_format_invalid},
	{"v5 server DISCONNECT 0x8E takeover, 0x82 second CONNECT", test_v5_server_disconnect},
	{"v5 DISCONNECT 0x04 publishes the will", test_v5_disconnect_with_will},
	{"v5 will properties forwarded, will delay not", test_v5_will_delay_not_forwarded},
	{"v5 client Maximum Packet Size, to the byte", test_v5_client_maximum_packet_size},
	{"v5 inbound topic aliases, 0x94 over the maximum", test_v5_topic_alias},
	{"v5 Clean Start and Session Expiry Interval", test_v5_session_expiry},
	{"3.1 client id limit and session present", test_31_strictness},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo v5_tests[] = {
	{"v5 CONNECT, PINGREQ, SUBSCRIBE, PUBLISH, UNSUBSCRIBE", test_v5_connect_ping_subscribe_publish},
	{"v5 and 3.1.1 clients exchange messages", test_v5_and_v311_interwork},
	{"MQTT-3.3.2-17/18 properties forwarded unchanged, in order", test_v5_properties_forwarded},
	{"PUBACK 0x10, short form, 0x99 [MQTT-3.3.2-4]", test_v5_puback_reason_codes},
	{"MQTT-3.8.3-3 No Local, MQTT-3.3.1-12 Retain As Published", test_v5_no_local_and_retain_as_published},
	{"Retain Handling 0/1/2 [MQTT-3.3.1-9..11]", test_v5_retain_handling},
	{"MQTT-3.3.4-4 one copy with both identifiers", test_v5_one_copy_with_both_identifiers},
	{"SUBACK 0x8F per filter [MQTT-3.9.3-1]", test_v5_suback_reason_codes},
	{"client Receive Maximum and Maximum Packet Size [MQTT-3.3.4-9] [MQTT-3.1.2-25]",
	 test_v5_client_receive_maximum_and_packet_size},
	{"Receive Maximum exceeded: DISCONNECT 0x93", test_v5_receive_maximum_exceeded},
	{"outbound topic aliases [MQTT-3.3.2-9..11]", test_v5_outbound_topic_aliases},
	{"v5 will properties forwarded, expiry from publication", test_v5_will_properties},
	{"unknown Authentication Method: CONNACK 0x8C [MQTT-4.12.0-1]", test_v5_unknown_auth_method},
	{"AUTH without a method: DISCONNECT 0x82 [MQTT-4.12.0-6]", test_v5_auth_without_method},
	{"SCRAM-SHA-256 exchange, CONNACK with method and data [MQTT-4.12.0-5]", test_v5_scram_success},
	{"SCRAM-SHA-256 wrong password: CONNACK 0x86", test_v5_scram_wrong_password},
	{"AUTH with another method or reason, other packets: CONNACK 0x82 [MQTT-3.1.2-30]", test_v5_auth_mismatch},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"connect", NULL, NULL, setup, teardown, connect_tests},
	{"publish and subscribe", NULL, NULL, setup, teardown, flow_tests},
	{"wills and sessions", NULL, NULL, setup, teardown, session_tests},
	{"persistence", NULL, NULL, setup_persistent, teardown_persistent, persist_tests},
	{"mqtt 5 (today's right answers)", NULL, NULL, setup, teardown, v5_tests},
	{"shared subscriptions", NULL, NULL, setup, teardown, shared_tests},
	{"mqtt 5 connect and sessions", NULL, NULL, setup, teardown, v5_session_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
