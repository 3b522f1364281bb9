/*
 * Large PUBLISHes through the whole broker (issue 18): a message over the
 * scratch buffer is read into its connection's carried buffer and becomes
 * the message where it lies (session/input.h, msg_adopt), so its payload
 * is not copied again on the way to the subscribers. These tests hold the
 * bytes to what was sent (3.1.1 and 5, QoS 0 and 1, forwarded properties,
 * topic aliases, several packets back to back) and the memory it takes:
 * one message's worth, not two.
 *
 * Over the broker harness (tests/support/broker_harness.h): no sockets, a
 * client's bytes are read as TCP reads them (all there is, 64 KiB at a time
 * into the scratch buffer).
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "broker_harness.h"
#include "unit_main.h"

#define STR2(x) #x
#define STR(x) STR2(x)
#define SEND(c, script) client_send_hex(c, script)
#define EXPECT(c, script) CU_ASSERT(client_expect_hex(c, script, __FILE__ ":" STR(__LINE__)))

#define BIG (300u * 1024u)

static const char base_config[] =
	"{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
	" \"limits\": {\"max_packet_size\": 4194304},"
	" \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}}";

static struct harness *h;

static void setup(void)
{
	h = harness_new(base_config);
	CU_ASSERT_FATAL(h != NULL);
}

static void teardown(void)
{
	wisp_mem_set_limit(0);
	harness_free(h);
	h = NULL;
}

#define CONNACK_OK "20 02 00 00"

static struct hclient *connected(const char *connect)
{
	struct hclient *c = harness_connect(h);
	SEND(c, connect);
	EXPECT(c, CONNACK_OK);
	return c;
}

static struct hclient *connected_v5(const char *connect)
{
	struct hclient *c = harness_connect(h);
	SEND(c, connect);
	size_t len;
	const uint8_t *out = client_output(c, &len);
	CU_ASSERT(len >= 5 && out[0] == 0x20 && out[2] == 0 && out[3] == 0);
	client_take(c);
	return c;
}

/* A packet under construction. */
struct pkt {
	uint8_t *b;
	size_t len;
};

static void put(struct pkt *p, const void *bytes, size_t n)
{
	p->b = realloc(p->b, p->len + n);
	CU_ASSERT_FATAL(p->b != NULL);
	memcpy(p->b + p->len, bytes, n);
	p->len += n;
}

static void put_u8(struct pkt *p, uint8_t v) { put(p, &v, 1); }

static void put_u16(struct pkt *p, size_t v)
{
	put_u8(p, (uint8_t)(v >> 8));
	put_u8(p, (uint8_t)(v & 0xff));
}

static void put_varint(struct pkt *p, size_t v)
{
	do {
		uint8_t b = (uint8_t)(v & 0x7f);
		v >>= 7;
		put_u8(p, (uint8_t)(b | (v ? 0x80 : 0)));
	} while (v);
}

/* A payload whose every byte says where it is, so a shifted or truncated
 * copy shows. */
static uint8_t *pattern(size_t n, unsigned seed)
{
	uint8_t *b = malloc(n);
	CU_ASSERT_FATAL(b != NULL);
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)((i * 7u + seed) % 251u);
	return b;
}

/*
 * A PUBLISH: first byte, topic, packet id (0: none), v5 property block
 * (props NULL: a 3.1.1 packet; with v5 true and no props, an empty block)
 * and payload.
 */
static struct pkt publish(uint8_t first, const char *topic, uint16_t pid, bool v5, const uint8_t *props,
			  size_t props_len, const uint8_t *payload, size_t payload_len)
{
	struct pkt body = {0}, p = {0};
	put_u16(&body, strlen(topic));
	put(&body, topic, strlen(topic));
	if (pid)
		put_u16(&body, pid);
	if (v5) {
		put_varint(&body, props_len);
		if (props_len)
			put(&body, props, props_len);
	}
	put(&body, payload, payload_len);
	put_u8(&p, first);
	put_varint(&p, body.len);
	put(&p, body.b, body.len);
	free(body.b);
	return p;
}

/* True when the client's output since the last take is exactly `want`;
 * consumes it. */
static bool got(struct hclient *c, const struct pkt *want, const char *where)
{
	size_t len;
	const uint8_t *out = client_output(c, &len);
	bool same = len == want->len && memcmp(out, want->b, len) == 0;
	if (!same) {
		size_t at = 0;
		while (at < len && at < want->len && out[at] == want->b[at])
			at++;
		fprintf(stderr, "%s: %zu bytes written, %zu expected, first difference at %zu\n", where, len,
			want->len, at);
	}
	client_take(c);
	return same;
}

#define GOT(c, pkt) CU_ASSERT(got(c, pkt, __FILE__ ":" STR(__LINE__)))

#define CONNECT_PUB "10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'pub'"
#define CONNECT_SUB "10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'sub'"
#define CONNECT_V5_SUB "10 10 00 04 'MQTT' 05 02 00 3c 00 00 03 's5b'"
/* v5 publisher allowing none, but sending with a Topic Alias Maximum of
 * the broker's default (10) in force. */
#define CONNECT_V5_PUB "10 10 00 04 'MQTT' 05 02 00 3c 00 00 03 'p5b'"

/* 3.1.1, QoS 0 and 1: what arrives is what was sent, byte for byte; a small
 * packet right behind a large one in the same read is answered too. */
static void test_v311_qos0_and_qos1(void)
{
	struct hclient *s = connected(CONNECT_SUB);
	SEND(s, "82 08 00 01 00 03 'b/t' 01");
	EXPECT(s, "90 03 00 01 01");
	struct hclient *p = connected(CONNECT_PUB);
	uint8_t *pay = pattern(BIG, 1);

	struct pkt q0 = publish(0x30, "b/t", 0, false, NULL, 0, pay, BIG);
	client_send(p, q0.b, q0.len);
	GOT(s, &q0); /* [MQTT-3.3.1-3]: the same packet, its QoS is the minimum */

	struct pkt q1 = publish(0x32, "b/t", 7, false, NULL, 0, pay, BIG);
	uint8_t ping[2] = {0xc0, 0x00};
	put(&q1, ping, sizeof ping); /* PINGREQ in the same read as the tail */
	client_send(p, q1.b, q1.len);
	EXPECT(p, "40 02 00 07 d0 00");
	struct pkt d1 = publish(0x32, "b/t", 1, false, NULL, 0, pay, BIG);
	GOT(s, &d1);
	SEND(s, "40 02 00 01");
	free(q0.b);
	free(q1.b);
	free(d1.b);
	free(pay);
}

/* MQTT 5: the publisher's properties are forwarded unchanged and in order
 * [MQTT-3.3.2-17] [MQTT-3.3.2-18], the Topic Alias is not (it is the
 * publisher's and the broker's, [MQTT-3.3.2-12]); a PUBLISH through the
 * alias arrives with the topic it stands for, including one whose topic is
 * too long for the packet's own bytes to hold (copied instead). A 3.1.1
 * subscriber gets no properties. */
static void test_v5_properties_and_topic_alias(void)
{
	struct hclient *s5 = connected_v5(CONNECT_V5_SUB);
	SEND(s5, "82 07 00 01 00 00 01 '#' 00");
	EXPECT(s5, "90 04 00 01 00 00");
	struct hclient *s3 = connected(CONNECT_SUB);
	SEND(s3, "82 06 00 01 00 01 '#' 00");
	EXPECT(s3, "90 03 00 01 00");
	struct hclient *p = connected_v5(CONNECT_V5_PUB);
	uint8_t *pay = pattern(BIG, 2);

	/* Topic Alias 1, Content Type "ct", User Property k=v. */
	static const uint8_t props[] = {0x23, 0x00, 0x01, 0x03, 0x00, 0x02, 'c', 't',
					0x26, 0x00, 0x01, 'k',  0x00, 0x01, 'v'};
	static const uint8_t fwd[] = {0x03, 0x00, 0x02, 'c', 't', 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
	struct pkt in = publish(0x30, "big/t", 0, true, props, sizeof props, pay, BIG);
	client_send(p, in.b, in.len);
	struct pkt want5 = publish(0x30, "big/t", 0, true, fwd, sizeof fwd, pay, BIG);
	struct pkt want3 = publish(0x30, "big/t", 0, false, NULL, 0, pay, BIG);
	GOT(s5, &want5);
	GOT(s3, &want3);

	/* Through the alias alone: empty topic [MQTT-3.3.2-12]. */
	static const uint8_t alias_only[] = {0x23, 0x00, 0x01};
	struct pkt via = publish(0x30, "", 0, true, alias_only, sizeof alias_only, pay, BIG);
	client_send(p, via.b, via.len);
	struct pkt want5b = publish(0x30, "big/t", 0, true, NULL, 0, pay, BIG);
	GOT(s5, &want5b);
	GOT(s3, &want3);

	/* An alias for a 300-byte topic: longer than what precedes the
	 * payload in a packet that uses the alias. */
	char long_topic[301];
	memset(long_topic, 'L', 300);
	long_topic[300] = '\0';
	static const uint8_t alias2[] = {0x23, 0x00, 0x02};
	struct pkt set2 = publish(0x30, long_topic, 0, true, alias2, sizeof alias2, pay, 16);
	client_send(p, set2.b, set2.len);
	client_take(s5);
	client_take(s3);
	struct pkt via2 = publish(0x30, "", 0, true, alias2, sizeof alias2, pay, BIG);
	client_send(p, via2.b, via2.len);
	struct pkt want5c = publish(0x30, long_topic, 0, true, NULL, 0, pay, BIG);
	struct pkt want3c = publish(0x30, long_topic, 0, false, NULL, 0, pay, BIG);
	GOT(s5, &want5c);
	GOT(s3, &want3c);
	CU_ASSERT(!client_closed(p));

	struct pkt *all[] = {&in, &want5, &want3, &via, &want5b, &set2, &via2, &want5c, &want3c};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		free(all[i]->b);
	free(pay);
}

/* A retained large message is stored (the adopted block is the stored
 * message) and sent whole to a later subscriber [MQTT-3.3.1-6]. */
static void test_retained(void)
{
	struct hclient *p = connected(CONNECT_PUB);
	uint8_t *pay = pattern(BIG, 3);
	struct pkt in = publish(0x31, "r/t", 0, false, NULL, 0, pay, BIG);
	client_send(p, in.b, in.len);
	struct hclient *s = connected(CONNECT_SUB);
	SEND(s, "82 08 00 01 00 03 'r/t' 00");
	size_t len;
	client_output(s, &len);
	CU_ASSERT(len == 5 + in.len); /* SUBACK, then the retained PUBLISH */
	const uint8_t *out = client_output(s, &len);
	CU_ASSERT(len > 5 && memcmp(out + 5, in.b, in.len) == 0);
	client_take(s);
	free(in.b);
	free(pay);
}

/* The message is the buffer it was read into: with memory_limit leaving
 * room for one and a half times the message, it is accepted and delivered
 * (a copy into a new message would need room for two). */
static void test_one_copy_in_memory(void)
{
	struct hclient *s = connected(CONNECT_SUB);
	SEND(s, "82 08 00 01 00 03 'm/t' 00");
	EXPECT(s, "90 03 00 01 00");
	struct hclient *p = connected(CONNECT_PUB);
	uint8_t *pay = pattern(BIG, 4);
	struct pkt in = publish(0x30, "m/t", 0, false, NULL, 0, pay, BIG);
	wisp_mem_set_limit(wisp_mem_used() + in.len + in.len / 2);
	client_send(p, in.b, in.len);
	wisp_mem_set_limit(0);
	CU_ASSERT(!client_closed(p));
	GOT(s, &in);
	free(in.b);
	free(pay);
}

static CU_TestInfo large_tests[] = {
	{"3.1.1 QoS 0 and 1 byte for byte, a PINGREQ right behind", test_v311_qos0_and_qos1},
	{"v5 properties forwarded, topic aliases [MQTT-3.3.2-12] [MQTT-3.3.2-17]", test_v5_properties_and_topic_alias},
	{"retained large message [MQTT-3.3.1-6]", test_retained},
	{"one message's memory, not two (read in place)", test_one_copy_in_memory},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"large messages", NULL, NULL, setup, teardown, large_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
