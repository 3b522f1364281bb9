/*
 * Unit tests for the MQTT codec (broker/src/mqtt/). Table-driven:
 *  - round trip of every packet type for 3.1.1 and 5.0 (CONNECT also 3.1),
 *    with known wire bytes where the spec pins them, comparing every field;
 *    each encoded packet is also decoded whole, byte by byte (every strict
 *    prefix must say "need more"), split at every offset of a two-packet
 *    stream, against max_packet_size, and encoded into every short buffer;
 *  - every malformed case the decoder must reject, with its error code;
 *  - Remaining Length and varint boundaries, UTF-8, encoder argument checks,
 *    iterators and property builders.
 * Input buffers are heap copies of exact size so AddressSanitizer catches
 * any read past `len`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "unit_main.h"
#include "../fuzz/codec_roundtrip.h"
#include "codec.h"

#define S(lit) ((struct mqtt_str){(const uint8_t *)(lit), sizeof(lit) - 1})
#define BIT(id) MQTT_PROP_BIT(id)

/* CU_ASSERT that also names the table case that failed. */
#define CHECK(cond, name)                                                                  \
	do {                                                                               \
		bool ok_ = (cond);                                                         \
		if (!ok_)                                                                  \
			fprintf(stderr, "\n  case \"%s\": %s (line %d)", (name), #cond, __LINE__); \
		CU_assertImplementation(ok_, __LINE__, #cond, __FILE__, "", CU_FALSE);     \
	} while (0)

static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);

	if (c != NULL && n > 0)
		memcpy(c, p, n);
	return c;
}

static ssize_t decode_v(const uint8_t *buf, size_t len, uint8_t version, uint32_t max,
			struct mqtt_pkt *out)
{
	struct mqtt_codec_opts o = {max, version};
	return mqtt_decode(buf, len, &o, out);
}

/* ---- property builder scratch, kept alive for the whole run ---- */

struct pb {
	uint8_t buf[512];
	size_t off;
};
static struct pb pbs[64];
static size_t npb;

static struct pb *pb_new(void)
{
	struct pb *b = &pbs[npb++];
	b->off = 0;
	return b;
}

static struct mqtt_str pb_raw(const struct pb *b)
{
	return (struct mqtt_str){b->buf, b->off};
}

/* ---- round-trip cases ---- */

struct rt_case {
	char name[64];
	uint8_t version;
	struct mqtt_pkt pkt; /* what the decoder must produce */
	const uint8_t *wire; /* optional: the exact bytes the encoder must produce */
	size_t wire_len;
};

static struct rt_case cases[96];
static size_t ncases;

static struct rt_case *add(const char *name, uint8_t version, uint8_t type)
{
	struct rt_case *c = &cases[ncases++];

	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->version = version;
	c->pkt.type = type;
	if (type == MQTT_PKT_PUBREL || type == MQTT_PKT_SUBSCRIBE || type == MQTT_PKT_UNSUBSCRIBE)
		c->pkt.flags = 0x2; /* [MQTT-2.2.2-1] */
	return c;
}

#define WIRE(c, lit)                                  \
	do {                                          \
		(c)->wire = (const uint8_t *)(lit);   \
		(c)->wire_len = sizeof(lit) - 1;      \
	} while (0)

static void publish_flags(struct rt_case *c)
{
	struct mqtt_publish *p = &c->pkt.u.publish;
	c->pkt.flags = (uint8_t)((p->dup ? 8 : 0) | (p->qos << 1) | (p->retain ? 1 : 0));
}

static void build_connect_cases(void)
{
	struct rt_case *c;
	struct mqtt_connect *k;
	struct pb *b;

	c = add("CONNECT 3.1.1 minimal", 4, MQTT_PKT_CONNECT);
	k = &c->pkt.u.connect;
	k->version = 4, k->clean_start = true, k->keepalive = 60, k->client_id = S("c1");
	WIRE(c, "\x10\x0E\x00\x04MQTT\x04\x02\x00\x3C\x00\x02" "c1");

	c = add("CONNECT 3.1.1 will, username, binary password", 4, MQTT_PKT_CONNECT);
	k = &c->pkt.u.connect;
	k->version = 4, k->keepalive = 0, k->client_id = S("sensor-\xC3\xA9");
	k->has_will = true, k->will_qos = 1, k->will_retain = true;
	k->will_topic = S("w/t"), k->will_payload = S("bye\0\xFF");
	k->has_username = true, k->username = S("u"), k->has_password = true, k->password = S("p\0x");

	c = add("CONNECT 3.1 (MQIsdp) username only", 4, MQTT_PKT_CONNECT);
	k = &c->pkt.u.connect;
	k->version = 3, k->clean_start = true, k->keepalive = 10, k->client_id = S("abc");
	k->has_username = true, k->username = S("me");
	WIRE(c, "\x10\x15\x00\x06MQIsdp\x03\x82\x00\x0A\x00\x03" "abc\x00\x02" "me");

	c = add("CONNECT 3.1.1 will QoS 2, empty client id", 0, MQTT_PKT_CONNECT);
	k = &c->pkt.u.connect;
	k->version = 4, k->clean_start = true, k->client_id = S("");
	k->has_will = true, k->will_qos = 2, k->will_topic = S("x"), k->will_payload = S("");

	c = add("CONNECT 5 minimal", 0, MQTT_PKT_CONNECT);
	k = &c->pkt.u.connect;
	k->version = 5, k->clean_start = true, k->keepalive = 60, k->client_id = S("");
	WIRE(c, "\x10\x0D\x00\x04MQTT\x05\x02\x00\x3C\x00\x00\x00");

	c = add("CONNECT 5 properties, will properties, password alone", 5, MQTT_PKT_CONNECT);
	k = &c->pkt.u.connect;
	k->version = 5, k->keepalive = 30, k->client_id = S("dev1");
	b = pb_new();
	mqtt_props_put_u32(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SESSION_EXPIRY, 3600);
	mqtt_props_put_u16(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_RECEIVE_MAXIMUM, 20);
	mqtt_props_put_u32(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_MAXIMUM_PACKET_SIZE, 65536);
	mqtt_props_put_u16(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 5);
	mqtt_props_put_u8(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_REQUEST_RESPONSE_INFO, 1);
	mqtt_props_put_u8(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_REQUEST_PROBLEM_INFO, 0);
	mqtt_props_put_pair(b->buf, sizeof(b->buf), &b->off, S("a"), S("b"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_AUTH_METHOD, S("SCRAM"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_AUTH_DATA, S("\x01\x00\x02"));
	mqtt_props_put_pair(b->buf, sizeof(b->buf), &b->off, S("a"), S("c"));
	k->props.raw = pb_raw(b);
	k->props.present = BIT(0x11) | BIT(0x21) | BIT(0x27) | BIT(0x22) | BIT(0x19) | BIT(0x17) |
			   BIT(0x26) | BIT(0x15) | BIT(0x16);
	k->props.session_expiry = 3600, k->props.receive_maximum = 20;
	k->props.maximum_packet_size = 65536, k->props.topic_alias_maximum = 5;
	k->props.request_response_info = 1, k->props.request_problem_info = 0;
	k->props.auth_method = S("SCRAM"), k->props.auth_data = S("\x01\x00\x02");
	k->props.user_property_count = 2;
	k->has_will = true, k->will_qos = 2, k->will_topic = S("w"), k->will_payload = S("\x00");
	b = pb_new();
	mqtt_props_put_u32(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_WILL_DELAY, 10);
	mqtt_props_put_u8(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_PAYLOAD_FORMAT, 1);
	mqtt_props_put_u32(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_MESSAGE_EXPIRY, 60);
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_CONTENT_TYPE, S("text/plain"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_RESPONSE_TOPIC, S("r/t"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_CORRELATION_DATA, S("\x00\xFF"));
	mqtt_props_put_pair(b->buf, sizeof(b->buf), &b->off, S("k"), S("v"));
	k->will_props.raw = pb_raw(b);
	k->will_props.present = BIT(0x18) | BIT(0x01) | BIT(0x02) | BIT(0x03) | BIT(0x08) |
				BIT(0x09) | BIT(0x26);
	k->will_props.will_delay = 10, k->will_props.payload_format = 1;
	k->will_props.message_expiry = 60, k->will_props.content_type = S("text/plain");
	k->will_props.response_topic = S("r/t"), k->will_props.correlation_data = S("\x00\xFF");
	k->will_props.user_property_count = 1;
	k->has_password = true, k->password = S("secret"); /* without username: allowed in 5 */
}

static void build_connack_cases(void)
{
	struct rt_case *c;
	struct mqtt_connack *a;
	struct pb *b;

	c = add("CONNACK 3.1.1 session present", 4, MQTT_PKT_CONNACK);
	c->pkt.u.connack.session_present = true;
	WIRE(c, "\x20\x02\x01\x00");

	c = add("CONNACK 3.1.1 not authorized", 4, MQTT_PKT_CONNACK);
	c->pkt.u.connack.code = MQTT_CONNACK_NOT_AUTHORIZED;
	WIRE(c, "\x20\x02\x00\x05");

	c = add("CONNACK 3.1 accepted", 3, MQTT_PKT_CONNACK);
	WIRE(c, "\x20\x02\x00\x00");

	c = add("CONNACK 5 unsupported version, no properties", 5, MQTT_PKT_CONNACK);
	c->pkt.u.connack.code = MQTT_RC_UNSUPPORTED_VERSION;
	WIRE(c, "\x20\x03\x00\x84\x00");

	c = add("CONNACK 5 every server property", 5, MQTT_PKT_CONNACK);
	a = &c->pkt.u.connack;
	b = pb_new();
	mqtt_props_put_u32(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SESSION_EXPIRY, 0xFFFFFFFFu);
	mqtt_props_put_u16(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_RECEIVE_MAXIMUM, 65535);
	mqtt_props_put_u8(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_MAXIMUM_QOS, 1);
	mqtt_props_put_u8(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_RETAIN_AVAILABLE, 0);
	mqtt_props_put_u32(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_MAXIMUM_PACKET_SIZE, 1024);
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_ASSIGNED_CLIENT_ID, S("auto-1"));
	mqtt_props_put_u16(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, 10);
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_REASON_STRING, S("ok"));
	mqtt_props_put_pair(b->buf, sizeof(b->buf), &b->off, S("x"), S(""));
	mqtt_props_put_u8(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_WILDCARD_SUB_AVAILABLE, 1);
	mqtt_props_put_u8(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SUB_ID_AVAILABLE, 0);
	mqtt_props_put_u8(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SHARED_SUB_AVAILABLE, 1);
	mqtt_props_put_u16(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SERVER_KEEP_ALIVE, 120);
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_RESPONSE_INFO, S("resp/"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SERVER_REFERENCE, S("other:1883"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_AUTH_METHOD, S("m"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_AUTH_DATA, S(""));
	a->props.raw = pb_raw(b);
	a->props.present = BIT(0x11) | BIT(0x21) | BIT(0x24) | BIT(0x25) | BIT(0x27) | BIT(0x12) |
			   BIT(0x22) | BIT(0x1F) | BIT(0x26) | BIT(0x28) | BIT(0x29) | BIT(0x2A) |
			   BIT(0x13) | BIT(0x1A) | BIT(0x1C) | BIT(0x15) | BIT(0x16);
	a->props.session_expiry = 0xFFFFFFFFu, a->props.receive_maximum = 65535;
	a->props.maximum_qos = 1, a->props.retain_available = 0, a->props.maximum_packet_size = 1024;
	a->props.assigned_client_id = S("auto-1"), a->props.topic_alias_maximum = 10;
	a->props.reason_string = S("ok"), a->props.user_property_count = 1;
	a->props.wildcard_sub_available = 1, a->props.sub_id_available = 0;
	a->props.shared_sub_available = 1, a->props.server_keep_alive = 120;
	a->props.response_info = S("resp/"), a->props.server_reference = S("other:1883");
	a->props.auth_method = S("m"), a->props.auth_data = S("");
}

static void build_publish_cases(void)
{
	struct rt_case *c;
	struct mqtt_publish *p;
	struct pb *b;

	c = add("PUBLISH 3.1.1 QoS 0", 4, MQTT_PKT_PUBLISH);
	p = &c->pkt.u.publish;
	p->topic = S("a/b"), p->payload = S("hi");
	publish_flags(c);
	WIRE(c, "\x30\x07\x00\x03" "a/b" "hi");

	c = add("PUBLISH 3.1.1 QoS 1 dup retain, empty payload", 4, MQTT_PKT_PUBLISH);
	p = &c->pkt.u.publish;
	p->qos = 1, p->dup = true, p->retain = true, p->packet_id = 10, p->topic = S("a/b");
	publish_flags(c);
	WIRE(c, "\x3B\x07\x00\x03" "a/b\x00\x0A");

	c = add("PUBLISH 3.1.1 QoS 2 binary payload, wildcard chars left to topic/", 4, MQTT_PKT_PUBLISH);
	p = &c->pkt.u.publish;
	p->qos = 2, p->packet_id = 65535, p->topic = S("s/+/#/\xE2\x82\xAC"), p->payload = S("\x00\x01\x00\xFF");
	publish_flags(c);

	c = add("PUBLISH 3.1 QoS 1", 3, MQTT_PKT_PUBLISH);
	p = &c->pkt.u.publish;
	p->qos = 1, p->packet_id = 1, p->topic = S("t"), p->payload = S("x");
	publish_flags(c);

	c = add("PUBLISH 5 QoS 0 no properties", 5, MQTT_PKT_PUBLISH);
	p = &c->pkt.u.publish;
	p->topic = S("a"), p->payload = S("p");
	publish_flags(c);
	WIRE(c, "\x30\x05\x00\x01" "a\x00" "p");

	c = add("PUBLISH 5 QoS 1 all properties, two subscription ids", 5, MQTT_PKT_PUBLISH);
	p = &c->pkt.u.publish;
	p->qos = 1, p->packet_id = 77, p->topic = S("sensors/1"), p->payload = S("{\"t\":21}");
	b = pb_new();
	mqtt_props_put_u8(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_PAYLOAD_FORMAT, 1);
	mqtt_props_put_u32(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_MESSAGE_EXPIRY, 100);
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_CONTENT_TYPE, S("json"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_RESPONSE_TOPIC, S("resp"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_CORRELATION_DATA, S("\x00\x01"));
	mqtt_props_put_varint(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SUBSCRIPTION_ID, 268435455);
	mqtt_props_put_varint(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SUBSCRIPTION_ID, 9);
	mqtt_props_put_u16(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_TOPIC_ALIAS, 4);
	mqtt_props_put_pair(b->buf, sizeof(b->buf), &b->off, S("k1"), S("v1"));
	mqtt_props_put_pair(b->buf, sizeof(b->buf), &b->off, S("k1"), S("v2"));
	p->props.raw = pb_raw(b);
	p->props.present = BIT(0x01) | BIT(0x02) | BIT(0x03) | BIT(0x08) | BIT(0x09) | BIT(0x0B) |
			   BIT(0x23) | BIT(0x26);
	p->props.payload_format = 1, p->props.message_expiry = 100;
	p->props.content_type = S("json"), p->props.response_topic = S("resp");
	p->props.correlation_data = S("\x00\x01"), p->props.subscription_id = 268435455;
	p->props.topic_alias = 4, p->props.user_property_count = 2;
	publish_flags(c);

	c = add("PUBLISH 5 empty topic with topic alias", 5, MQTT_PKT_PUBLISH);
	p = &c->pkt.u.publish;
	p->qos = 2, p->retain = true, p->packet_id = 2, p->topic = S(""), p->payload = S("z");
	b = pb_new();
	mqtt_props_put_u16(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_TOPIC_ALIAS, 65535);
	p->props.raw = pb_raw(b), p->props.present = BIT(0x23), p->props.topic_alias = 65535;
	publish_flags(c);
}

static void build_ack_cases(void)
{
	static const uint8_t types[] = {MQTT_PKT_PUBACK, MQTT_PKT_PUBREC, MQTT_PKT_PUBREL, MQTT_PKT_PUBCOMP};
	static const char *names[] = {"PUBACK", "PUBREC", "PUBREL", "PUBCOMP"};
	char name[64];

	for (size_t i = 0; i < 4; i++) {
		struct rt_case *c;
		struct pb *b;

		snprintf(name, sizeof(name), "%s 3.1.1", names[i]);
		c = add(name, 4, types[i]);
		c->pkt.u.ack.packet_id = 1;

		snprintf(name, sizeof(name), "%s 5 success, reason omitted", names[i]);
		c = add(name, 5, types[i]);
		c->pkt.u.ack.packet_id = 0x1234;

		snprintf(name, sizeof(name), "%s 5 reason only", names[i]);
		c = add(name, 5, types[i]);
		c->pkt.u.ack.packet_id = 2, c->pkt.u.ack.reason = i < 2 ? 0x10 : 0x92;

		snprintf(name, sizeof(name), "%s 5 reason and properties", names[i]);
		c = add(name, 5, types[i]);
		c->pkt.u.ack.packet_id = 3, c->pkt.u.ack.reason = 0x80;
		b = pb_new();
		mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_REASON_STRING, S("no"));
		mqtt_props_put_pair(b->buf, sizeof(b->buf), &b->off, S("k"), S("v"));
		c->pkt.u.ack.props.raw = pb_raw(b);
		c->pkt.u.ack.props.present = BIT(0x1F) | BIT(0x26);
		c->pkt.u.ack.props.reason_string = S("no"), c->pkt.u.ack.props.user_property_count = 1;
	}
	WIRE(&cases[ncases - 16 + 8], "\x62\x02\x00\x01"); /* PUBREL 3.1.1 */
	WIRE(&cases[ncases - 16 + 1], "\x40\x02\x12\x34");  /* PUBACK 5 success */
	WIRE(&cases[ncases - 16 + 2], "\x40\x03\x00\x02\x10");
}

static void build_sub_cases(void)
{
	struct rt_case *c;
	struct mqtt_subscribe *s;
	struct pb *b;

	c = add("SUBSCRIBE 3.1.1 two filters", 4, MQTT_PKT_SUBSCRIBE);
	s = &c->pkt.u.subscribe;
	s->packet_id = 5, s->count = 2, s->entries = S("\x00\x03" "a/+\x01\x00\x01#\x00");
	WIRE(c, "\x82\x0C\x00\x05\x00\x03" "a/+\x01\x00\x01#\x00");

	c = add("SUBSCRIBE 3.1.1 QoS 2, empty filter left to topic/", 4, MQTT_PKT_SUBSCRIBE);
	s = &c->pkt.u.subscribe;
	s->packet_id = 6, s->count = 2, s->entries = S("\x00\x00\x02\x00\x01x\x02");

	c = add("SUBSCRIBE 5 options and subscription id", 5, MQTT_PKT_SUBSCRIBE);
	s = &c->pkt.u.subscribe;
	s->packet_id = 9, s->count = 2, s->entries = S("\x00\x03s/#\x2E\x00\x01x\x10");
	b = pb_new();
	mqtt_props_put_varint(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SUBSCRIPTION_ID, 42);
	mqtt_props_put_pair(b->buf, sizeof(b->buf), &b->off, S("u"), S("p"));
	s->props.raw = pb_raw(b), s->props.present = BIT(0x0B) | BIT(0x26);
	s->props.subscription_id = 42, s->props.user_property_count = 1;

	c = add("SUBSCRIBE 5 no properties", 5, MQTT_PKT_SUBSCRIBE);
	s = &c->pkt.u.subscribe;
	s->packet_id = 1, s->count = 1, s->entries = S("\x00\x01#\x00");
	WIRE(c, "\x82\x07\x00\x01\x00\x00\x01#\x00");

	c = add("UNSUBSCRIBE 3.1.1 two filters", 4, MQTT_PKT_UNSUBSCRIBE);
	s = &c->pkt.u.subscribe;
	s->packet_id = 7, s->count = 2, s->entries = S("\x00\x03" "a/b\x00\x01" "c");
	WIRE(c, "\xA2\x0A\x00\x07\x00\x03" "a/b\x00\x01" "c");

	c = add("UNSUBSCRIBE 5 with user property", 5, MQTT_PKT_UNSUBSCRIBE);
	s = &c->pkt.u.subscribe;
	s->packet_id = 8, s->count = 1, s->entries = S("\x00\x03" "a/#");
	b = pb_new();
	mqtt_props_put_pair(b->buf, sizeof(b->buf), &b->off, S("k"), S("v"));
	s->props.raw = pb_raw(b), s->props.present = BIT(0x26), s->props.user_property_count = 1;

	c = add("SUBACK 3.1.1 all return codes", 4, MQTT_PKT_SUBACK);
	c->pkt.u.suback.packet_id = 5, c->pkt.u.suback.codes = S("\x00\x01\x02\x80");
	WIRE(c, "\x90\x06\x00\x05\x00\x01\x02\x80");

	c = add("SUBACK 5 reason codes and reason string", 5, MQTT_PKT_SUBACK);
	c->pkt.u.suback.packet_id = 9, c->pkt.u.suback.codes = S("\x00\x01\x02\x80\x87\x8F\x9E");
	b = pb_new();
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_REASON_STRING, S("partial"));
	c->pkt.u.suback.props.raw = pb_raw(b), c->pkt.u.suback.props.present = BIT(0x1F);
	c->pkt.u.suback.props.reason_string = S("partial");

	c = add("UNSUBACK 3.1.1", 4, MQTT_PKT_UNSUBACK);
	c->pkt.u.suback.packet_id = 7;
	WIRE(c, "\xB0\x02\x00\x07");

	c = add("UNSUBACK 5 reason codes", 5, MQTT_PKT_UNSUBACK);
	c->pkt.u.suback.packet_id = 8, c->pkt.u.suback.codes = S("\x00\x11");
	WIRE(c, "\xB0\x05\x00\x08\x00\x00\x11");
}

static void build_misc_cases(void)
{
	struct rt_case *c;
	struct pb *b;

	c = add("PINGREQ 3.1.1", 4, MQTT_PKT_PINGREQ);
	WIRE(c, "\xC0\x00");
	c = add("PINGRESP 3.1.1", 4, MQTT_PKT_PINGRESP);
	WIRE(c, "\xD0\x00");
	c = add("PINGREQ 5", 5, MQTT_PKT_PINGREQ);
	c = add("PINGRESP 5", 5, MQTT_PKT_PINGRESP);
	c = add("DISCONNECT 3.1.1", 4, MQTT_PKT_DISCONNECT);
	WIRE(c, "\xE0\x00");
	c = add("DISCONNECT 5 normal, all omitted", 5, MQTT_PKT_DISCONNECT);
	WIRE(c, "\xE0\x00");
	c = add("DISCONNECT 5 with will message", 5, MQTT_PKT_DISCONNECT);
	c->pkt.u.reason.reason = MQTT_RC_DISCONNECT_WITH_WILL;
	WIRE(c, "\xE0\x01\x04");
	c = add("DISCONNECT 5 reason and properties", 5, MQTT_PKT_DISCONNECT);
	c->pkt.u.reason.reason = MQTT_RC_SESSION_TAKEN_OVER;
	b = pb_new();
	mqtt_props_put_u32(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SESSION_EXPIRY, 0);
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_REASON_STRING, S("bye"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_SERVER_REFERENCE, S("b:1"));
	c->pkt.u.reason.props.raw = pb_raw(b);
	c->pkt.u.reason.props.present = BIT(0x11) | BIT(0x1F) | BIT(0x1C);
	c->pkt.u.reason.props.reason_string = S("bye"), c->pkt.u.reason.props.server_reference = S("b:1");
	c = add("AUTH 5 success, all omitted", 5, MQTT_PKT_AUTH);
	WIRE(c, "\xF0\x00");
	c = add("AUTH 5 continue with method and data", 5, MQTT_PKT_AUTH);
	c->pkt.u.reason.reason = 0x18;
	b = pb_new();
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_AUTH_METHOD, S("SCRAM"));
	mqtt_props_put_str(b->buf, sizeof(b->buf), &b->off, MQTT_PROP_AUTH_DATA, S("\x00\x01"));
	c->pkt.u.reason.props.raw = pb_raw(b);
	c->pkt.u.reason.props.present = BIT(0x15) | BIT(0x16);
	c->pkt.u.reason.props.auth_method = S("SCRAM"), c->pkt.u.reason.props.auth_data = S("\x00\x01");
}

static int build_cases(void)
{
	ncases = 0;
	npb = 0;
	build_connect_cases();
	build_connack_cases();
	build_publish_cases();
	build_ack_cases();
	build_sub_cases();
	build_misc_cases();
	return 0;
}

static size_t header_len(const uint8_t *b)
{
	size_t i = 1;
	while (b[i] & 0x80)
		i++;
	return i + 1;
}

/* One case through encode, every decode shape, and the encoder's bounds. */
static void run_roundtrip(const struct rt_case *c)
{
	uint8_t out[1024];
	ssize_t n = rt_encode(out, sizeof(out), c->version, &c->pkt);
	struct mqtt_pkt d;
	uint8_t *buf;

	CHECK(n > 0, c->name);
	if (n <= 0)
		return;
	if (c->wire != NULL)
		CHECK((size_t)n == c->wire_len && memcmp(out, c->wire, c->wire_len) == 0, c->name);

	/* Whole, from an exact-size buffer. */
	buf = dup_exact(out, (size_t)n);
	CHECK(decode_v(buf, (size_t)n, c->version, 0, &d) == n, c->name);
	CHECK(rt_pkt_eq(&c->pkt, &d), c->name);
	CHECK(d.remaining_len == (size_t)n - header_len(buf), c->name);
	CHECK(mqtt_frame_size(buf, (size_t)n, &(struct mqtt_codec_opts){0, c->version}) == n, c->name);

	/* Decoded, encoded again: the same bytes. */
	{
		uint8_t again[1024];
		CHECK(rt_encode(again, sizeof(again), c->version, &d) == n && memcmp(again, out, (size_t)n) == 0,
		      c->name);
	}
	/* max_packet_size: the exact size passes, one less fails from the header alone. */
	CHECK(decode_v(buf, (size_t)n, c->version, (uint32_t)n, &d) == n, c->name);
	CHECK(decode_v(buf, header_len(buf), c->version, (uint32_t)n - 1, &d) == MQTT_ETOOBIG, c->name);
	free(buf);

	/* Byte by byte: every strict prefix needs more. */
	for (size_t k = 0; k < (size_t)n; k++) {
		uint8_t *pre = dup_exact(out, k);
		ssize_t r = decode_v(pre, k, c->version, 0, &d);
		ssize_t f = mqtt_frame_size(pre, k, &(struct mqtt_codec_opts){0, c->version});
		CHECK(r == 0, c->name);
		CHECK(f == (k < header_len(out) ? 0 : n), c->name);
		free(pre);
	}

	/* Two packets back to back, the stream cut at every offset. */
	{
		size_t total = 2 * (size_t)n;
		uint8_t *two = malloc(total);
		memcpy(two, out, (size_t)n);
		memcpy(two + n, out, (size_t)n);
		for (size_t cut = 0; cut <= total; cut++) {
			uint8_t *part = dup_exact(two, cut);
			size_t pos = 0;
			int got = 0;
			for (int step = 0; step < 3; step++) {
				ssize_t r = decode_v(part + pos, cut - pos, c->version, 0, &d);
				if (r <= 0) {
					CHECK(r == 0, c->name);
					break;
				}
				CHECK(r == n && rt_pkt_eq(&c->pkt, &d), c->name);
				pos += (size_t)r;
				got++;
			}
			CHECK((size_t)got == cut / (size_t)n, c->name);
			free(part);
		}
		free(two);
	}

	/* Every buffer shorter than the packet: MQTT_ENOSPC, nothing written past cap. */
	for (size_t cap = 0; cap < (size_t)n; cap++) {
		uint8_t *small = malloc(cap ? cap : 1);
		CHECK(rt_encode(small, cap, c->version, &c->pkt) == MQTT_ENOSPC, c->name);
		free(small);
	}

	/* Fan-out split: head | topic | mid | payload is the same packet. */
	if (c->pkt.type == MQTT_PKT_PUBLISH) {
		const struct mqtt_publish *p = &c->pkt.u.publish;
		uint8_t head[8], mid[512], cat[1024];
		size_t mid_len = 0, off = 0;
		ssize_t h = mqtt_encode_publish_parts(head, sizeof(head), mid, sizeof(mid), &mid_len,
						      c->version, p);
		CHECK(h > 0, c->name);
		if (h > 0) {
			memcpy(cat, head, (size_t)h);
			off = (size_t)h;
			memcpy(cat + off, p->topic.ptr, p->topic.len);
			off += p->topic.len;
			memcpy(cat + off, mid, mid_len);
			off += mid_len;
			if (p->payload.len > 0)
				memcpy(cat + off, p->payload.ptr, p->payload.len);
			off += p->payload.len;
			CHECK(off == (size_t)n && memcmp(cat, out, off) == 0, c->name);
			CHECK(mqtt_encode_publish_parts(head, (size_t)h - 1, mid, sizeof(mid), &mid_len,
							c->version, p) == MQTT_ENOSPC, c->name);
			if (mid_len > 0)
				CHECK(mqtt_encode_publish_parts(head, sizeof(head), mid, mid_len - 1, &mid_len,
								c->version, p) == MQTT_ENOSPC, c->name);
		}
		/* The split with the properties kept apart (shared by every
		 * copy) and none per delivery: head | topic | mid | props | payload.
		 * (A broker's Topic Alias is per delivery: not this table's cases
		 * without a topic.) */
		struct mqtt_publish_split sp = {
			.qos = p->qos, .dup = p->dup, .retain = p->retain, .packet_id = p->packet_id,
			.topic_len = p->topic.len, .shared_props_len = p->props.raw.len, .payload_len = p->payload.len,
		};
		h = p->topic.len ? mqtt_encode_publish_split(head, sizeof(head), mid, sizeof(mid), &mid_len,
							      c->version, &sp)
				 : 0;
		CHECK(!p->topic.len || (h > 0 && mid_len <= mqtt_publish_split_mid_max(0)), c->name);
		if (h > 0) {
			memcpy(cat, head, (size_t)h);
			off = (size_t)h;
			memcpy(cat + off, p->topic.ptr, p->topic.len);
			off += p->topic.len;
			memcpy(cat + off, mid, mid_len);
			off += mid_len;
			if (c->version == MQTT_PROTO_V5 && p->props.raw.len) {
				memcpy(cat + off, p->props.raw.ptr, p->props.raw.len);
				off += p->props.raw.len;
			}
			if (p->payload.len > 0)
				memcpy(cat + off, p->payload.ptr, p->payload.len);
			off += p->payload.len;
			CHECK(off == (size_t)n && memcmp(cat, out, off) == 0, c->name);
		}
	}
}

/* A v5 delivery's own properties (Topic Alias, the remaining Message
 * Expiry Interval [MQTT-3.3.2-6], every Subscription Identifier
 * [MQTT-3.3.4-3]) go in the middle part, before the shared ones, which
 * arrive unchanged and in order [MQTT-3.3.2-17] [MQTT-3.3.2-18]. */
static void test_publish_split_per_delivery_properties(void)
{
	uint8_t shared[64];
	size_t slen = 0;
	CU_ASSERT_FATAL(mqtt_props_put_pair(shared, sizeof shared, &slen, (struct mqtt_str){(const uint8_t *)"k", 1},
					   (struct mqtt_str){(const uint8_t *)"v", 1}) == 0);
	CU_ASSERT_FATAL(mqtt_props_put_str(shared, sizeof shared, &slen, MQTT_PROP_CONTENT_TYPE,
					   (struct mqtt_str){(const uint8_t *)"text", 4}) == 0);
	const uint32_t ids[] = {1, 300};
	struct mqtt_publish_split sp = {
		.qos = 1, .packet_id = 9, .topic_len = 3, .shared_props_len = slen, .payload_len = 2,
		.topic_alias = 4, .message_expiry = 10, .sub_ids = ids, .sub_id_count = 2,
	};
	uint8_t head[8], mid[64], cat[256];
	size_t mid_len = 0;
	ssize_t h = mqtt_encode_publish_split(head, sizeof head, mid, sizeof mid, &mid_len, MQTT_PROTO_V5, &sp);
	CU_ASSERT_FATAL(h > 0);
	CU_ASSERT(mid_len <= mqtt_publish_split_mid_max(2));
	size_t off = 0;
	memcpy(cat, head, (size_t)h);
	off += (size_t)h;
	memcpy(cat + off, "a/b", 3);
	off += 3;
	memcpy(cat + off, mid, mid_len);
	off += mid_len;
	memcpy(cat + off, shared, slen);
	off += slen;
	memcpy(cat + off, "hi", 2);
	off += 2;
	struct mqtt_pkt pkt;
	struct mqtt_codec_opts o = {.version = MQTT_PROTO_V5};
	CU_ASSERT_FATAL(mqtt_decode(cat, off, &o, &pkt) == (ssize_t)off);
	const struct mqtt_publish *p = &pkt.u.publish;
	CU_ASSERT_EQUAL(p->packet_id, 9);
	CU_ASSERT(p->payload.len == 2 && memcmp(p->payload.ptr, "hi", 2) == 0);
	const uint8_t want[] = {MQTT_PROP_TOPIC_ALIAS, MQTT_PROP_MESSAGE_EXPIRY, MQTT_PROP_SUBSCRIPTION_ID,
				MQTT_PROP_SUBSCRIPTION_ID, MQTT_PROP_USER_PROPERTY, MQTT_PROP_CONTENT_TYPE};
	const uint32_t values[] = {4, 10, 1, 300};
	struct mqtt_prop_iter it;
	struct mqtt_prop pr;
	size_t i = 0;
	mqtt_props_iter_init(&p->props, &it);
	while (mqtt_props_next(&it, &pr) == 1 && i < sizeof want) {
		CU_ASSERT_EQUAL(pr.id, want[i]);
		if (i < 4)
			CU_ASSERT_EQUAL(pr.value, values[i]);
		i++;
	}
	CU_ASSERT_EQUAL(i, sizeof want);
	/* 3.1.1: no property at all, the same head and topic. */
	h = mqtt_encode_publish_split(head, sizeof head, mid, sizeof mid, &mid_len, MQTT_PROTO_V311, &sp);
	CU_ASSERT(h > 0 && mid_len == 2);
	/* An identifier of 0 cannot be sent [MQTT-3.3.4-6]. */
	const uint32_t zero = 0;
	sp.sub_ids = &zero;
	sp.sub_id_count = 1;
	CU_ASSERT_EQUAL(mqtt_encode_publish_split(head, sizeof head, mid, sizeof mid, &mid_len, MQTT_PROTO_V5, &sp),
			MQTT_EINVAL);
}

/*
 * A small 3.1.1 PUBLISH written whole is byte for byte the split
 * encoder's head | topic | mid | payload, for every QoS and flag, up to
 * a Remaining Length of 127; at 128 (a two-byte varint), for v5 and for
 * what the split encoder refuses, the small form declines (size 0).
 */
static void test_publish_small_equals_split(void)
{
	static const char topic[] = "bench/fanin/3";
	uint8_t payload[128];
	for (size_t i = 0; i < sizeof payload; i++)
		payload[i] = (uint8_t)(i * 7);
	const struct {
		uint8_t qos;
		bool dup, retain;
		size_t payload_len;
	} shapes[] = {{0, false, false, 16}, {1, false, false, 16}, {1, true, true, 16},
		     {2, false, true, 0}, {0, false, true, 110}, {1, false, false, 108}};
	for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
		struct mqtt_publish_split sp = {.qos = shapes[c].qos, .dup = shapes[c].dup, .retain = shapes[c].retain,
						.packet_id = 0x1234, .topic_len = strlen(topic),
						.payload_len = shapes[c].payload_len};
		uint8_t head[8], mid[32], want[256], got[256];
		size_t mid_len = 0;
		ssize_t h = mqtt_encode_publish_split(head, sizeof head, mid, sizeof mid, &mid_len, MQTT_PROTO_V311, &sp);
		CU_ASSERT_FATAL(h > 0);
		size_t n = 0;
		memcpy(want + n, head, (size_t)h), n += (size_t)h;
		memcpy(want + n, topic, sp.topic_len), n += sp.topic_len;
		memcpy(want + n, mid, mid_len), n += mid_len;
		memcpy(want + n, payload, sp.payload_len), n += sp.payload_len;
		CU_ASSERT_EQUAL(mqtt_publish_small_size(MQTT_PROTO_V311, &sp), n);
		CU_ASSERT_EQUAL(mqtt_publish_split_size(MQTT_PROTO_V311, &sp), n);
		memset(got, 0xEE, sizeof got);
		mqtt_encode_publish_small(got, &sp, topic, payload);
		CU_ASSERT(memcmp(got, want, n) == 0);
		CU_ASSERT_EQUAL(got[n], 0xEE);
		CU_ASSERT_EQUAL(mqtt_publish_small_size(MQTT_PROTO_V5, &sp), 0);
	}
	/* Remaining Length 128: 2 + 13 + 2 + 111. */
	struct mqtt_publish_split sp = {.qos = 1, .packet_id = 1, .topic_len = strlen(topic), .payload_len = 111};
	CU_ASSERT_EQUAL(mqtt_publish_small_size(MQTT_PROTO_V311, &sp), 0);
	sp.payload_len = 110;
	CU_ASSERT_EQUAL(mqtt_publish_small_size(MQTT_PROTO_V311, &sp), 129);
	/* [MQTT-2.3.1-1] [MQTT-3.3.1-2] refused as the split encoder refuses them */
	sp.packet_id = 0;
	CU_ASSERT_EQUAL(mqtt_publish_small_size(MQTT_PROTO_V311, &sp), 0);
	sp = (struct mqtt_publish_split){.qos = 0, .dup = true, .topic_len = 3};
	CU_ASSERT_EQUAL(mqtt_publish_small_size(MQTT_PROTO_V311, &sp), 0);
	sp = (struct mqtt_publish_split){.qos = 0, .topic_len = 0};
	CU_ASSERT_EQUAL(mqtt_publish_small_size(MQTT_PROTO_V311, &sp), 0);
}

static void test_roundtrip_every_type(void)
{
	bool seen[16][6] = {{false}};

	for (size_t i = 0; i < ncases; i++) {
		run_roundtrip(&cases[i]);
		seen[cases[i].pkt.type][cases[i].version] = true;
	}
	/* Coverage of the table itself: every type in 3.1.1 and 5, CONNECT in 3.1. */
	for (uint8_t t = MQTT_PKT_CONNECT; t <= MQTT_PKT_AUTH; t++) {
		bool v4 = seen[t][4] || (t == MQTT_PKT_CONNECT);
		CU_ASSERT(t == MQTT_PKT_AUTH || v4);
		CU_ASSERT(seen[t][5] || t == MQTT_PKT_CONNECT);
	}
	CU_ASSERT(ncases <= sizeof(cases) / sizeof(cases[0]));
	CU_ASSERT(npb <= sizeof(pbs) / sizeof(pbs[0]));
}

/* The CONNECT cases carry their own level; check 3.1, 3.1.1 and 5 all appear. */
static void test_connect_levels_covered(void)
{
	bool lv[6] = {false};
	for (size_t i = 0; i < ncases; i++)
		if (cases[i].pkt.type == MQTT_PKT_CONNECT)
			lv[cases[i].pkt.u.connect.version] = true;
	CU_ASSERT(lv[3] && lv[4] && lv[5]);
}

/* ---- malformed input ---- */

struct bad_case {
	const char *name;
	uint8_t version;
	const char *bytes;
	size_t len;
	int err;
};

#define BAD(name, ver, err, lit) {name, ver, lit, sizeof(lit) - 1, err}
/* A valid 3.1.1 CONNECT is "\x10\x0E\x00\x04MQTT\x04\x02\x00\x3C\x00\x02c1". */

static const struct bad_case bad_cases[] = {
	/* Fixed header */
	BAD("type 0 is reserved", 4, MQTT_ETYPE, "\x00\x00"),
	BAD("AUTH before 5.0", 4, MQTT_ETYPE, "\xF0\x00"),
	BAD("AUTH before CONNECT", 0, MQTT_ETYPE, "\xF0\x00"),
	BAD("[MQTT-2.2.2-1] CONNECT flags", 0, MQTT_EFLAGS, "\x11\x00"),
	BAD("[MQTT-2.2.2-1] CONNACK flags", 4, MQTT_EFLAGS, "\x28\x02\x00\x00"),
	BAD("[MQTT-2.2.2-1] PUBACK flags", 4, MQTT_EFLAGS, "\x42\x02\x00\x01"),
	BAD("[MQTT-2.2.2-1] PUBREL flags 0", 4, MQTT_EFLAGS, "\x60\x02\x00\x01"),
	BAD("[MQTT-2.2.2-1] SUBSCRIBE flags 0", 4, MQTT_EFLAGS, "\x80\x06\x00\x01\x00\x01#\x00"),
	BAD("[MQTT-2.2.2-1] UNSUBSCRIBE flags 3", 4, MQTT_EFLAGS, "\xA3\x05\x00\x01\x00\x01#"),
	BAD("[MQTT-2.2.2-1] PINGREQ flags", 4, MQTT_EFLAGS, "\xC1\x00"),
	BAD("[MQTT-2.2.2-1] DISCONNECT flags", 5, MQTT_EFLAGS, "\xE8\x00"),
	BAD("[MQTT-2.2.2-1] AUTH flags", 5, MQTT_EFLAGS, "\xF1\x00"),
	BAD("[MQTT-3.3.1-4] PUBLISH QoS 3", 4, MQTT_EQOS, "\x36\x05\x00\x01" "a\x00\x01"),
	BAD("[MQTT-3.3.1-2] DUP with QoS 0", 4, MQTT_EFLAGS, "\x38\x03\x00\x01" "a"),
	BAD("varint overlong 2 bytes", 4, MQTT_EVARINT, "\x30\x80\x00"),
	BAD("varint overlong 3 bytes", 4, MQTT_EVARINT, "\x30\x80\x80\x00"),
	BAD("varint overlong 4 bytes", 4, MQTT_EVARINT, "\x30\xFF\x80\x80\x00"),
	BAD("varint fifth byte", 4, MQTT_EVARINT, "\x30\xFF\xFF\xFF\xFF\x01"),
	BAD("varint four continuation bytes", 4, MQTT_EVARINT, "\x30\x80\x80\x80\x80"),
	/* CONNECT */
	BAD("CONNECT empty", 0, MQTT_EMALFORMED, "\x10\x00"),
	BAD("CONNECT name truncated", 0, MQTT_EMALFORMED, "\x10\x04\x00\x04MQ"),
	BAD("CONNECT no level", 0, MQTT_EMALFORMED, "\x10\x06\x00\x04MQTT"),
	BAD("[MQTT-3.1.2-1] unknown protocol name", 0, MQTT_EPROTONAME,
	    "\x10\x0E\x00\x04MQTX\x04\x02\x00\x3C\x00\x02" "c1"),
	BAD("[MQTT-3.1.2-2] level 6", 0, MQTT_EVERSION, "\x10\x0E\x00\x04MQTT\x06\x02\x00\x3C\x00\x02" "c1"),
	BAD("[MQTT-3.1.2-2] MQTT with level 3", 0, MQTT_EVERSION,
	    "\x10\x0E\x00\x04MQTT\x03\x02\x00\x3C\x00\x02" "c1"),
	BAD("[MQTT-3.1.2-2] MQIsdp with level 4", 0, MQTT_EVERSION,
	    "\x10\x10\x00\x06MQIsdp\x04\x02\x00\x3C\x00\x02" "c1"),
	BAD("[MQTT-3.1.2-2] bad level, rest garbage", 0, MQTT_EVERSION, "\x10\x08\x00\x04MQTT\x07\xFF"),
	BAD("CONNECT no flags", 0, MQTT_EMALFORMED, "\x10\x07\x00\x04MQTT\x04"),
	BAD("[MQTT-3.1.2-3] reserved flag", 0, MQTT_EMALFORMED,
	    "\x10\x0E\x00\x04MQTT\x04\x03\x00\x3C\x00\x02" "c1"),
	BAD("[MQTT-3.1.2-11] will QoS without will", 0, MQTT_EMALFORMED,
	    "\x10\x0E\x00\x04MQTT\x04\x0A\x00\x3C\x00\x02" "c1"),
	BAD("[MQTT-3.1.2-15] will retain without will", 0, MQTT_EMALFORMED,
	    "\x10\x0E\x00\x04MQTT\x04\x22\x00\x3C\x00\x02" "c1"),
	BAD("[MQTT-3.1.2-14] will QoS 3", 0, MQTT_EQOS,
	    "\x10\x13\x00\x04MQTT\x04\x1E\x00\x3C\x00\x02" "c1\x00\x01t\x00\x00"),
	BAD("[MQTT-3.1.2-22] password without username 3.1.1", 0, MQTT_EMALFORMED,
	    "\x10\x11\x00\x04MQTT\x04\x42\x00\x3C\x00\x02" "c1\x00\x01p"),
	BAD("[MQTT-3.1.2-22] password without username 3.1", 0, MQTT_EMALFORMED,
	    "\x10\x13\x00\x06MQIsdp\x03\x42\x00\x3C\x00\x02" "c1\x00\x01p"),
	BAD("CONNECT no keepalive", 0, MQTT_EMALFORMED, "\x10\x09\x00\x04MQTT\x04\x02\x00"),
	BAD("CONNECT client id truncated", 0, MQTT_EMALFORMED,
	    "\x10\x0E\x00\x04MQTT\x04\x02\x00\x3C\x00\x05" "c1"),
	BAD("CONNECT trailing byte", 0, MQTT_EMALFORMED,
	    "\x10\x0F\x00\x04MQTT\x04\x02\x00\x3C\x00\x02" "c1!"),
	BAD("[MQTT-1.5.4-2] client id U+0000", 0, MQTT_EUTF8,
	    "\x10\x0E\x00\x04MQTT\x04\x02\x00\x3C\x00\x02" "c\x00"),
	BAD("[MQTT-1.5.4-1] client id overlong", 0, MQTT_EUTF8,
	    "\x10\x0E\x00\x04MQTT\x04\x02\x00\x3C\x00\x02\xC0\x80"),
	BAD("will topic missing", 0, MQTT_EMALFORMED, "\x10\x0E\x00\x04MQTT\x04\x06\x00\x3C\x00\x02" "c1"),
	BAD("[MQTT-3.1.3-10] will topic not UTF-8", 0, MQTT_EUTF8,
	    "\x10\x13\x00\x04MQTT\x04\x06\x00\x3C\x00\x02" "c1\x00\x01\xFF\x00\x00"),
	BAD("will payload missing", 0, MQTT_EMALFORMED,
	    "\x10\x11\x00\x04MQTT\x04\x06\x00\x3C\x00\x02" "c1\x00\x01t"),
	BAD("[MQTT-3.1.3-11] username surrogate", 0, MQTT_EUTF8,
	    "\x10\x13\x00\x04MQTT\x04\x82\x00\x3C\x00\x02" "c1\x00\x03\xED\xA0\x80"),
	BAD("username missing", 0, MQTT_EMALFORMED, "\x10\x0E\x00\x04MQTT\x04\x82\x00\x3C\x00\x02" "c1"),
	BAD("password missing", 0, MQTT_EMALFORMED,
	    "\x10\x11\x00\x04MQTT\x04\xC2\x00\x3C\x00\x02" "c1\x00\x01u"),
	BAD("CONNECT 5 no property length", 0, MQTT_EMALFORMED, "\x10\x0A\x00\x04MQTT\x05\x02\x00\x3C"),
	BAD("CONNECT 5 property length past the packet", 0, MQTT_EMALFORMED,
	    "\x10\x0E\x00\x04MQTT\x05\x02\x00\x3C\x09\x00\x01" "c"),
	BAD("CONNECT 5 property not allowed (topic alias)", 0, MQTT_EMALFORMED,
	    "\x10\x10\x00\x04MQTT\x05\x02\x00\x3C\x03\x23\x00\x01\x00\x00"),
	BAD("CONNECT 5 duplicate session expiry", 0, MQTT_EPROPS,
	    "\x10\x17\x00\x04MQTT\x05\x02\x00\x3C\x0A\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02\x00\x00"),
	BAD("CONNECT 5 receive maximum 0", 0, MQTT_EPROPS,
	    "\x10\x10\x00\x04MQTT\x05\x02\x00\x3C\x03\x21\x00\x00\x00\x00"),
	BAD("CONNECT 5 maximum packet size 0", 0, MQTT_EPROPS,
	    "\x10\x12\x00\x04MQTT\x05\x02\x00\x3C\x05\x27\x00\x00\x00\x00\x00\x00"),
	BAD("CONNECT 5 request problem info 2", 0, MQTT_EPROPS,
	    "\x10\x0F\x00\x04MQTT\x05\x02\x00\x3C\x02\x17\x02\x00\x00"),
	BAD("CONNECT 5 auth data without method", 0, MQTT_EPROPS,
	    "\x10\x10\x00\x04MQTT\x05\x02\x00\x3C\x03\x16\x00\x00\x00\x00"),
	BAD("CONNECT 5 unknown property 0x7F", 0, MQTT_EMALFORMED,
	    "\x10\x0F\x00\x04MQTT\x05\x02\x00\x3C\x02\x7F\x00\x00\x00"),
	BAD("CONNECT 5 property id overlong varint", 0, MQTT_EMALFORMED,
	    "\x10\x10\x00\x04MQTT\x05\x02\x00\x3C\x03\x91\x00\x00\x00\x00"),
	BAD("CONNECT 5 property value truncated", 0, MQTT_EMALFORMED,
	    "\x10\x0F\x00\x04MQTT\x05\x02\x00\x3C\x02\x11\x00\x00\x00"),
	BAD("CONNECT 5 user property value U+0000", 0, MQTT_EUTF8,
	    "\x10\x14\x00\x04MQTT\x05\x02\x00\x3C\x07\x26\x00\x01k\x00\x01\x00\x00\x00"),
	BAD("CONNECT 5 will property not allowed (session expiry)", 0, MQTT_EMALFORMED,
	    "\x10\x18\x00\x04MQTT\x05\x06\x00\x3C\x00\x00\x00\x05\x11\x00\x00\x00\x01\x00\x01t\x00\x00"),
	BAD("CONNECT 5 will delay in CONNECT properties", 0, MQTT_EMALFORMED,
	    "\x10\x12\x00\x04MQTT\x05\x02\x00\x3C\x05\x18\x00\x00\x00\x01\x00\x00"),
	/* CONNACK */
	BAD("[MQTT-3.2.2-1] CONNACK reserved ack flags", 4, MQTT_EMALFORMED, "\x20\x02\x02\x00"),
	BAD("CONNACK 3.1.1 too long", 4, MQTT_EMALFORMED, "\x20\x03\x00\x00\x00"),
	BAD("CONNACK 3.1.1 too short", 4, MQTT_EMALFORMED, "\x20\x01\x00"),
	BAD("CONNACK 5 no property length", 5, MQTT_EMALFORMED, "\x20\x02\x00\x00"),
	BAD("CONNACK 5 subscription id not allowed", 5, MQTT_EMALFORMED, "\x20\x05\x00\x00\x02\x0B\x01"),
	BAD("CONNACK 5 maximum QoS 2", 5, MQTT_EPROPS, "\x20\x05\x00\x00\x02\x24\x02"),
	BAD("CONNACK 5 retain available 2", 5, MQTT_EPROPS, "\x20\x05\x00\x00\x02\x25\x02"),
	BAD("CONNACK 5 duplicate reason string", 5, MQTT_EPROPS,
	    "\x20\x09\x00\x00\x06\x1F\x00\x00\x1F\x00\x00"),
	BAD("CONNACK 5 assigned client id not UTF-8", 5, MQTT_EUTF8, "\x20\x07\x00\x00\x04\x12\x00\x01\x80"),
	/* PUBLISH */
	BAD("[MQTT-2.3.1-1] PUBLISH QoS 1 packet id 0", 4, MQTT_EPROTOCOL, "\x32\x05\x00\x01" "a\x00\x00"),
	BAD("[MQTT-2.3.1-1] PUBLISH QoS 2 packet id 0", 5, MQTT_EPROTOCOL, "\x34\x06\x00\x01" "a\x00\x00\x00"),
	BAD("PUBLISH QoS 1 packet id missing", 4, MQTT_EMALFORMED, "\x32\x04\x00\x01" "a\x00"),
	BAD("[MQTT-3.3.2-1] topic not UTF-8", 4, MQTT_EUTF8, "\x30\x04\x00\x02\xE2\x82"),
	BAD("[MQTT-1.5.4-2] topic U+0000", 4, MQTT_EUTF8, "\x30\x04\x00\x02" "a\x00"),
	BAD("PUBLISH 3.1.1 empty topic", 4, MQTT_EPROTOCOL, "\x30\x02\x00\x00"),
	BAD("PUBLISH 5 empty topic without alias", 5, MQTT_EPROTOCOL, "\x30\x03\x00\x00\x00"),
	BAD("PUBLISH topic length past the packet", 4, MQTT_EMALFORMED, "\x30\x03\x00\x05" "a"),
	BAD("PUBLISH no topic length", 4, MQTT_EMALFORMED, "\x30\x01\x00"),
	BAD("PUBLISH 5 no property length", 5, MQTT_EMALFORMED, "\x30\x03\x00\x01" "a"),
	BAD("PUBLISH 5 topic alias 0", 5, MQTT_EPROPS, "\x30\x07\x00\x01" "a\x03\x23\x00\x00"),
	BAD("PUBLISH 5 duplicate topic alias", 5, MQTT_EPROPS,
	    "\x30\x0A\x00\x01" "a\x06\x23\x00\x01\x23\x00\x02"),
	BAD("PUBLISH 5 session expiry not allowed", 5, MQTT_EMALFORMED,
	    "\x30\x09\x00\x01" "a\x05\x11\x00\x00\x00\x01"),
	BAD("PUBLISH 5 subscription id 0", 5, MQTT_EPROPS, "\x30\x06\x00\x01" "a\x02\x0B\x00"),
	BAD("PUBLISH 5 subscription id overlong", 5, MQTT_EMALFORMED, "\x30\x07\x00\x01" "a\x03\x0B\x81\x00"),
	BAD("PUBLISH 5 payload format 2", 5, MQTT_EPROPS, "\x30\x06\x00\x01" "a\x02\x01\x02"),
	BAD("PUBLISH 5 content type not UTF-8", 5, MQTT_EUTF8, "\x30\x08\x00\x01" "a\x04\x03\x00\x01\xFF"),
	BAD("PUBLISH 5 duplicate content type", 5, MQTT_EPROPS,
	    "\x30\x0C\x00\x01" "a\x08\x03\x00\x01x\x03\x00\x01y"),
	/* Acks */
	BAD("PUBACK 3.1.1 remaining length 3", 4, MQTT_EMALFORMED, "\x40\x03\x00\x01\x00"),
	BAD("PUBACK 3.1.1 remaining length 1", 4, MQTT_EMALFORMED, "\x40\x01\x00"),
	BAD("PUBREC 3.1.1 remaining length 0", 4, MQTT_EMALFORMED, "\x50\x00"),
	BAD("PUBREL 3.1.1 remaining length 0", 4, MQTT_EMALFORMED, "\x62\x00"),
	BAD("PUBCOMP 3.1.1 remaining length 4", 4, MQTT_EMALFORMED, "\x70\x04\x00\x01\x00\x00"),
	BAD("[MQTT-2.3.1-1] PUBACK packet id 0", 4, MQTT_EPROTOCOL, "\x40\x02\x00\x00"),
	BAD("[MQTT-2.3.1-1] PUBREL 5 packet id 0", 5, MQTT_EPROTOCOL, "\x62\x02\x00\x00"),
	BAD("PUBACK 5 property length past the packet", 5, MQTT_EMALFORMED, "\x40\x04\x00\x01\x00\x05"),
	BAD("PUBACK 5 topic alias not allowed", 5, MQTT_EMALFORMED, "\x40\x07\x00\x01\x00\x03\x23\x00\x01"),
	BAD("PUBREC 5 trailing byte", 5, MQTT_EMALFORMED, "\x50\x05\x00\x01\x00\x00\x00"),
	BAD("PUBACK 5 remaining length 1", 5, MQTT_EMALFORMED, "\x40\x01\x00"),
	/* SUBSCRIBE and UNSUBSCRIBE */
	BAD("[MQTT-3.8.3-3] SUBSCRIBE without entries", 4, MQTT_EPROTOCOL, "\x82\x02\x00\x01"),
	BAD("[MQTT-3.8.3-3] SUBSCRIBE 5 without entries", 5, MQTT_EPROTOCOL, "\x82\x03\x00\x01\x00"),
	BAD("[MQTT-2.3.1-1] SUBSCRIBE packet id 0", 4, MQTT_EPROTOCOL, "\x82\x06\x00\x00\x00\x01#\x00"),
	BAD("[MQTT-3-8.3-4] SUBSCRIBE 3.1.1 options bit 2", 4, MQTT_EMALFORMED, "\x82\x06\x00\x01\x00\x01#\x04"),
	BAD("[MQTT-3-8.3-4] SUBSCRIBE 3.1.1 options bit 7", 4, MQTT_EMALFORMED, "\x82\x06\x00\x01\x00\x01#\x80"),
	BAD("[MQTT-3-8.3-4] SUBSCRIBE 3.1.1 QoS 3", 4, MQTT_EQOS, "\x82\x06\x00\x01\x00\x01#\x03"),
	BAD("SUBSCRIBE 3.1.1 second entry QoS 3", 4, MQTT_EQOS,
	    "\x82\x0A\x00\x01\x00\x01#\x00\x00\x01+\x03"),
	BAD("SUBSCRIBE options byte missing", 4, MQTT_EMALFORMED, "\x82\x05\x00\x01\x00\x01#"),
	BAD("[MQTT-3.8.3-1] SUBSCRIBE filter not UTF-8", 4, MQTT_EUTF8, "\x82\x06\x00\x01\x00\x01\xC2\x00"),
	BAD("[MQTT-3.8.3-5] SUBSCRIBE 5 reserved option bits", 5, MQTT_EMALFORMED,
	    "\x82\x07\x00\x01\x00\x00\x01#\x40"),
	BAD("SUBSCRIBE 5 retain handling 3", 5, MQTT_EPROTOCOL, "\x82\x07\x00\x01\x00\x00\x01#\x30"),
	BAD("SUBSCRIBE 5 QoS 3", 5, MQTT_EQOS, "\x82\x07\x00\x01\x00\x00\x01#\x03"),
	BAD("SUBSCRIBE 5 two subscription ids", 5, MQTT_EPROPS,
	    "\x82\x0B\x00\x01\x04\x0B\x01\x0B\x02\x00\x01#\x00"),
	BAD("SUBSCRIBE 5 subscription id 0", 5, MQTT_EPROPS, "\x82\x09\x00\x01\x02\x0B\x00\x00\x01#\x00"),
	BAD("SUBSCRIBE 5 reason string not allowed", 5, MQTT_EMALFORMED,
	    "\x82\x0A\x00\x01\x03\x1F\x00\x00\x00\x01#\x00"),
	BAD("[MQTT-3.10.3-2] UNSUBSCRIBE without entries", 4, MQTT_EPROTOCOL, "\xA2\x02\x00\x01"),
	BAD("[MQTT-2.3.1-1] UNSUBSCRIBE packet id 0", 4, MQTT_EPROTOCOL, "\xA2\x05\x00\x00\x00\x01#"),
	BAD("[MQTT-3.10.3-1] UNSUBSCRIBE filter U+0000", 4, MQTT_EUTF8, "\xA2\x05\x00\x01\x00\x01\x00"),
	BAD("UNSUBSCRIBE filter truncated", 4, MQTT_EMALFORMED, "\xA2\x05\x00\x01\x00\x02#"),
	BAD("UNSUBSCRIBE 5 subscription id not allowed", 5, MQTT_EMALFORMED,
	    "\xA2\x08\x00\x01\x02\x0B\x01\x00\x01#"),
	/* SUBACK and UNSUBACK */
	BAD("[MQTT-3.9.3-2] SUBACK 3.1.1 code 3", 4, MQTT_EMALFORMED, "\x90\x03\x00\x01\x03"),
	BAD("SUBACK without codes", 4, MQTT_EPROTOCOL, "\x90\x02\x00\x01"),
	BAD("SUBACK packet id 0", 4, MQTT_EPROTOCOL, "\x90\x03\x00\x00\x00"),
	BAD("UNSUBACK 3.1.1 remaining length 3", 4, MQTT_EMALFORMED, "\xB0\x03\x00\x01\x00"),
	BAD("UNSUBACK 5 without codes", 5, MQTT_EPROTOCOL, "\xB0\x03\x00\x01\x00"),
	BAD("SUBACK 5 user property truncated", 5, MQTT_EMALFORMED, "\x90\x08\x00\x01\x03\x26\x00\x01k\x00"),
	/* PINGREQ, PINGRESP, DISCONNECT, AUTH */
	BAD("PINGREQ remaining length 1", 4, MQTT_EMALFORMED, "\xC0\x01\x00"),
	BAD("PINGRESP remaining length 1", 5, MQTT_EMALFORMED, "\xD0\x01\x00"),
	BAD("DISCONNECT 3.1.1 remaining length 1", 4, MQTT_EMALFORMED, "\xE0\x01\x00"),
	BAD("DISCONNECT 5 topic alias not allowed", 5, MQTT_EMALFORMED, "\xE0\x05\x00\x03\x23\x00\x01"),
	BAD("DISCONNECT 5 trailing byte", 5, MQTT_EMALFORMED, "\xE0\x03\x00\x00\x00"),
	BAD("DISCONNECT 5 property length past the packet", 5, MQTT_EMALFORMED, "\xE0\x02\x00\x01"),
	BAD("AUTH 5 session expiry not allowed", 5, MQTT_EMALFORMED, "\xF0\x07\x18\x05\x11\x00\x00\x00\x01"),
	BAD("AUTH 5 auth data without method", 5, MQTT_EPROPS, "\xF0\x05\x18\x03\x16\x00\x00"),
};

static void test_malformed_table(void)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *b = &bad_cases[i];
		uint8_t *buf = dup_exact((const uint8_t *)b->bytes, b->len);
		struct mqtt_pkt d;
		ssize_t r = decode_v(buf, b->len, b->version, 0, &d);

		if (r != b->err)
			fprintf(stderr, "\n  case \"%s\": got %zd (%s), want %d", b->name, r,
				mqtt_strerror((int)r), b->err);
		CU_ASSERT_EQUAL(r, b->err);
		/* The table holds whole frames, so body errors are not "need more" in disguise. */
		ssize_t f = mqtt_frame_size(buf, b->len, &(struct mqtt_codec_opts){0, b->version});
		CHECK(f <= 0 || (size_t)f == b->len, b->name);
		/* A prefix is never accepted as a packet. */
		for (size_t k = 0; k < b->len; k++) {
			ssize_t rp = decode_v(buf, k, b->version, 0, &d);
			CHECK(rp <= 0, b->name);
		}
		free(buf);
	}
}

/* The broker answers CONNACK 0x01 in the level it saw [MQTT-3.1.2-2]. */
static void test_connect_bad_level_reports_level(void)
{
	static const struct {
		const char *bytes;
		size_t len;
		uint8_t level;
	} t[] = {
		{"\x10\x0E\x00\x04MQTT\x06\x02\x00\x3C\x00\x02" "c1", 16, 6},
		{"\x10\x0E\x00\x04MQTT\x03\x02\x00\x3C\x00\x02" "c1", 16, 3},
		{"\x10\x09\x00\x06MQIsdp\x05", 11, 5},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct mqtt_pkt d;
		CU_ASSERT_EQUAL(decode_v((const uint8_t *)t[i].bytes, t[i].len, 0, 0, &d), MQTT_EVERSION);
		CU_ASSERT_EQUAL(d.type, MQTT_PKT_CONNECT);
		CU_ASSERT_EQUAL(d.u.connect.version, t[i].level);
	}
}

/* ---- Remaining Length and varints ---- */

static void test_varint_boundaries(void)
{
	static const struct {
		uint32_t value;
		const char *bytes;
		size_t len;
	} t[] = {
		{0, "\x00", 1},
		{127, "\x7F", 1},
		{128, "\x80\x01", 2},
		{16383, "\xFF\x7F", 2},
		{16384, "\x80\x80\x01", 3},
		{2097151, "\xFF\xFF\x7F", 3},
		{2097152, "\x80\x80\x80\x01", 4},
		{268435455, "\xFF\xFF\xFF\x7F", 4},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint8_t buf[4];
		uint32_t v = 0;

		CU_ASSERT_EQUAL(mqtt_varint_size(t[i].value), t[i].len);
		CU_ASSERT_EQUAL(mqtt_varint_encode(t[i].value, buf, sizeof(buf)), (ssize_t)t[i].len);
		CU_ASSERT(memcmp(buf, t[i].bytes, t[i].len) == 0);
		CU_ASSERT_EQUAL(mqtt_varint_encode(t[i].value, buf, t[i].len - 1), MQTT_ENOSPC);
		CU_ASSERT_EQUAL(mqtt_varint_decode((const uint8_t *)t[i].bytes, t[i].len, &v), (ssize_t)t[i].len);
		CU_ASSERT_EQUAL(v, t[i].value);
		for (size_t k = 0; k < t[i].len; k++)
			CU_ASSERT_EQUAL(mqtt_varint_decode((const uint8_t *)t[i].bytes, k, &v), 0);
	}
	CU_ASSERT_EQUAL(mqtt_varint_size(268435456u), 0);
	{
		uint8_t buf[8];
		CU_ASSERT_EQUAL(mqtt_varint_encode(268435456u, buf, sizeof(buf)), MQTT_EINVAL);
		CU_ASSERT_EQUAL(mqtt_varint_encode(UINT32_MAX, buf, sizeof(buf)), MQTT_EINVAL);
	}
}

static void test_varint_invalid(void)
{
	static const struct {
		const char *name;
		const char *bytes;
		size_t len;
	} t[] = {
		{"overlong 0 in 2 bytes", "\x80\x00", 2},
		{"overlong 127 in 2 bytes", "\xFF\x00", 2},
		{"overlong in 3 bytes", "\x80\x80\x00", 3},
		{"overlong in 4 bytes", "\x80\x80\x80\x00", 4},
		{"fifth byte", "\xFF\xFF\xFF\xFF\x7F", 5},
		{"four continuation bytes", "\x80\x80\x80\x80", 4},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint32_t v;
		CHECK(mqtt_varint_decode((const uint8_t *)t[i].bytes, t[i].len, &v) == MQTT_EVARINT, t[i].name);
	}
}

/* Real PUBLISH packets whose Remaining Length sits on each encoding boundary. */
static void test_remaining_length_boundaries(void)
{
	static const uint32_t rls[] = {3, 127, 128, 16383, 16384, 2097151, 2097152};
	for (size_t i = 0; i < sizeof(rls) / sizeof(rls[0]); i++) {
		uint32_t rl = rls[i];
		size_t plen = rl - 3; /* topic "t" takes 3 bytes */
		uint8_t *payload = calloc(plen ? plen : 1, 1);
		size_t cap = 5 + rl;
		uint8_t *buf = malloc(cap);
		struct mqtt_publish p = {.topic = S("t"), .payload = {payload, plen}};
		struct mqtt_pkt d;
		ssize_t n = mqtt_encode_publish(buf, cap, 4, &p);
		ssize_t want = (ssize_t)(1 + mqtt_varint_size(rl) + rl);

		CU_ASSERT_EQUAL(n, want);
		CU_ASSERT_EQUAL(mqtt_frame_size(buf, 5, NULL), want);
		CU_ASSERT_EQUAL(mqtt_decode(buf, (size_t)n, NULL, &d), want);
		CU_ASSERT_EQUAL(d.remaining_len, rl);
		CU_ASSERT_EQUAL(d.u.publish.payload.len, plen);
		CU_ASSERT_EQUAL(mqtt_decode(buf, (size_t)n - 1, NULL, &d), 0);
		free(payload);
		free(buf);
	}
	/* Remaining Length 0. */
	{
		struct mqtt_pkt d;
		CU_ASSERT_EQUAL(mqtt_decode((const uint8_t *)"\xC0\x00", 2, NULL, &d), 2);
		CU_ASSERT_EQUAL(d.remaining_len, 0);
	}
}

/* Judged from the fixed header alone, before any body byte exists. */
static void test_max_packet_size_from_header(void)
{
	const uint8_t huge[] = {0x30, 0xFF, 0xFF, 0xFF, 0x7F}; /* 268435455 */
	const uint8_t k1[] = {0x30, 0x80, 0x08};                /* 1024: packet of 1027 */
	struct mqtt_codec_opts o = {0, 4};
	struct mqtt_pkt d;

	CU_ASSERT_EQUAL(mqtt_frame_size(huge, sizeof(huge), &o), 268435460);
	CU_ASSERT_EQUAL(mqtt_decode(huge, sizeof(huge), &o, &d), 0);
	o.max_packet_size = 268435459;
	CU_ASSERT_EQUAL(mqtt_frame_size(huge, sizeof(huge), &o), MQTT_ETOOBIG);
	CU_ASSERT_EQUAL(mqtt_decode(huge, sizeof(huge), &o, &d), MQTT_ETOOBIG);
	o.max_packet_size = 1024;
	CU_ASSERT_EQUAL(mqtt_decode(huge, sizeof(huge), &o, &d), MQTT_ETOOBIG);
	CU_ASSERT_EQUAL(mqtt_decode(k1, sizeof(k1), &o, &d), MQTT_ETOOBIG);
	o.max_packet_size = 1026;
	CU_ASSERT_EQUAL(mqtt_decode(k1, sizeof(k1), &o, &d), MQTT_ETOOBIG);
	o.max_packet_size = 1027;
	CU_ASSERT_EQUAL(mqtt_decode(k1, sizeof(k1), &o, &d), 0);
	CU_ASSERT_EQUAL(mqtt_frame_size(k1, sizeof(k1), &o), 1027);
	/* Length bytes still arriving: need more, not an error. */
	CU_ASSERT_EQUAL(mqtt_decode(huge, 3, &o, &d), 0);
	CU_ASSERT_EQUAL(mqtt_frame_size(huge, 1, &o), 0);
	CU_ASSERT_EQUAL(mqtt_frame_size(huge, 0, &o), 0);
	CU_ASSERT_EQUAL(mqtt_frame_size((const uint8_t *)"\x00\x00", 2, &o), MQTT_ETYPE);
	CU_ASSERT_EQUAL(mqtt_frame_size((const uint8_t *)"\xF0\x00", 2, &o), MQTT_ETYPE);
	CU_ASSERT_EQUAL(mqtt_frame_size((const uint8_t *)"\x30\x80\x00", 3, &o), MQTT_EVARINT);
}

/* ---- UTF-8 ---- */

static void test_utf8_table(void)
{
	static const struct {
		const char *name;
		const char *s;
		size_t len;
		bool valid;
	} t[] = {
#define U(name, lit, ok) {name, lit, sizeof(lit) - 1, ok}
		U("empty", "", true),
		U("ASCII", "sensors/room-1/temp", true),
		U("control U+0001 and DEL accepted", "\x01\x7F", true),
		U("U+0080", "\xC2\x80", true),
		U("U+07FF", "\xDF\xBF", true),
		U("U+0800", "\xE0\xA0\x80", true),
		U("U+D7FF", "\xED\x9F\xBF", true),
		U("U+E000", "\xEE\x80\x80", true),
		U("U+FEFF BOM kept [MQTT-1.5.4-3]", "\xEF\xBB\xBF", true),
		U("U+FFFF non-character accepted", "\xEF\xBF\xBF", true),
		U("U+10000", "\xF0\x90\x80\x80", true),
		U("U+10FFFF", "\xF4\x8F\xBF\xBF", true),
		U("mixed", "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9D\x84\x9E", true),
		U("U+0000 [MQTT-1.5.4-2]", "\x00", false),
		U("U+0000 inside", "a\x00" "b", false),
		U("overlong U+0000", "\xC0\x80", false),
		U("overlong 2-byte C1", "\xC1\xBF", false),
		U("overlong 3-byte", "\xE0\x80\x80", false),
		U("overlong 3-byte U+07FF", "\xE0\x9F\xBF", false),
		U("overlong 4-byte", "\xF0\x80\x80\x80", false),
		U("overlong 4-byte U+FFFF", "\xF0\x8F\xBF\xBF", false),
		U("surrogate U+D800 [MQTT-1.5.4-1]", "\xED\xA0\x80", false),
		U("surrogate U+DFFF", "\xED\xBF\xBF", false),
		U("surrogate pair as CESU-8", "\xED\xA0\xBD\xED\xB2\xA9", false),
		U("above U+10FFFF", "\xF4\x90\x80\x80", false),
		U("F5 lead", "\xF5\x80\x80\x80", false),
		U("FF byte", "\xFF", false),
		U("FE byte", "\xFE", false),
		U("lone continuation", "\x80", false),
		U("truncated 2-byte", "\xC2", false),
		U("truncated 3-byte", "\xE2\x82", false),
		U("truncated 4-byte", "\xF0\x9D\x84", false),
		U("truncated at end after ASCII", "abc\xE2", false),
		U("bad continuation 2-byte", "\xC2\x41", false),
		U("bad continuation 3-byte", "\xE2\x28\xA1", false),
		U("bad third byte 3-byte", "\xE2\x82\x28", false),
		U("bad fourth byte 4-byte", "\xF0\x9D\x84\x28", false),
#undef U
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint8_t *buf = dup_exact((const uint8_t *)t[i].s, t[i].len);
		CHECK(mqtt_utf8_valid(buf, t[i].len) == t[i].valid, t[i].name);
		free(buf);
		/* The same after 1..17 printable bytes and before 0..9, so each
		 * case also meets the eight-byte fast path and its overlapping
		 * last window. */
		for (size_t pre = 1; pre <= 17; pre++) {
			for (size_t post = 0; post <= 9; post++) {
				size_t n = pre + t[i].len + post;
				uint8_t *w = malloc(n);
				memset(w, 'p', n);
				memcpy(w + pre, t[i].s, t[i].len);
				CHECK(mqtt_utf8_valid(w, n) == t[i].valid, t[i].name);
				free(w);
			}
		}
	}
}

/* ---- encoders: arguments the wire cannot carry ---- */

static void test_encoder_einval(void)
{
	static uint8_t big[70000];
	uint8_t buf[256];
	struct mqtt_str f1 = S("a");
	uint8_t opt;

	/* PUBLISH */
	{
		struct mqtt_publish p = {.topic = S("t"), .qos = 3, .packet_id = 1};
		CU_ASSERT_EQUAL(mqtt_encode_publish(buf, sizeof(buf), 4, &p), MQTT_EINVAL);
		p.qos = 1, p.packet_id = 0;
		CU_ASSERT_EQUAL(mqtt_encode_publish(buf, sizeof(buf), 4, &p), MQTT_EINVAL);
		p.qos = 0, p.dup = true;
		CU_ASSERT_EQUAL(mqtt_encode_publish(buf, sizeof(buf), 4, &p), MQTT_EINVAL);
		p.dup = false, p.topic = (struct mqtt_str){big, 65536};
		CU_ASSERT_EQUAL(mqtt_encode_publish(buf, sizeof(buf), 4, &p), MQTT_EINVAL);
		p.topic = S("");
		CU_ASSERT_EQUAL(mqtt_encode_publish(buf, sizeof(buf), 4, &p), MQTT_EINVAL);
		p.topic = S("t"), p.payload = (struct mqtt_str){big, MQTT_MAX_REMAINING_LEN - 2};
		CU_ASSERT_EQUAL(mqtt_encode_publish(buf, sizeof(buf), 4, &p), MQTT_EINVAL);
		p.payload.len = MQTT_MAX_REMAINING_LEN - 3; /* exactly the maximum: just too big for buf */
		CU_ASSERT_EQUAL(mqtt_encode_publish(buf, sizeof(buf), 4, &p), MQTT_ENOSPC);
		p.payload.len = SIZE_MAX;
		CU_ASSERT_EQUAL(mqtt_encode_publish(buf, sizeof(buf), 4, &p), MQTT_EINVAL);
		size_t mid_len;
		CU_ASSERT_EQUAL(mqtt_encode_publish_parts(buf, 8, buf + 8, 8, &mid_len, 4, &p), MQTT_EINVAL);
	}
	/* CONNECT */
	{
		struct mqtt_connect c = {.version = 6, .client_id = S("c")};
		CU_ASSERT_EQUAL(mqtt_encode_connect(buf, sizeof(buf), &c), MQTT_EINVAL);
		c.version = 4, c.has_will = true, c.will_qos = 3, c.will_topic = S("w");
		CU_ASSERT_EQUAL(mqtt_encode_connect(buf, sizeof(buf), &c), MQTT_EINVAL);
		c.has_will = false, c.has_password = true;
		CU_ASSERT_EQUAL(mqtt_encode_connect(buf, sizeof(buf), &c), MQTT_EINVAL); /* [MQTT-3.1.2-22] */
		c.version = 5;
		CU_ASSERT(mqtt_encode_connect(buf, sizeof(buf), &c) > 0);
		c.has_password = false, c.client_id = (struct mqtt_str){big, 65536};
		CU_ASSERT_EQUAL(mqtt_encode_connect(buf, sizeof(buf), &c), MQTT_EINVAL);
	}
	/* SUBSCRIBE, UNSUBSCRIBE */
	opt = 1;
	CU_ASSERT_EQUAL(mqtt_encode_subscribe(buf, sizeof(buf), 4, 1, NULL, &f1, &opt, 0), MQTT_EINVAL);
	CU_ASSERT_EQUAL(mqtt_encode_subscribe(buf, sizeof(buf), 4, 0, NULL, &f1, &opt, 1), MQTT_EINVAL);
	CU_ASSERT(mqtt_encode_subscribe(buf, sizeof(buf), 4, 1, NULL, &f1, &opt, 1) > 0);
	CU_ASSERT(mqtt_encode_subscribe(buf, sizeof(buf), 5, 1, NULL, &f1, &opt, 1) > 0); /* NULL props: none */
	opt = 3;
	CU_ASSERT_EQUAL(mqtt_encode_subscribe(buf, sizeof(buf), 4, 1, NULL, &f1, &opt, 1), MQTT_EINVAL);
	opt = 0x04;
	CU_ASSERT_EQUAL(mqtt_encode_subscribe(buf, sizeof(buf), 4, 1, NULL, &f1, &opt, 1), MQTT_EINVAL);
	CU_ASSERT(mqtt_encode_subscribe(buf, sizeof(buf), 5, 1, NULL, &f1, &opt, 1) > 0);
	opt = 0x40;
	CU_ASSERT_EQUAL(mqtt_encode_subscribe(buf, sizeof(buf), 5, 1, NULL, &f1, &opt, 1), MQTT_EINVAL);
	opt = 0x30;
	CU_ASSERT_EQUAL(mqtt_encode_subscribe(buf, sizeof(buf), 5, 1, NULL, &f1, &opt, 1), MQTT_EINVAL);
	CU_ASSERT_EQUAL(mqtt_encode_subscribe(buf, sizeof(buf), 5, 1, NULL, &f1, NULL, 1), MQTT_EINVAL);
	CU_ASSERT_EQUAL(mqtt_encode_unsubscribe(buf, sizeof(buf), 4, 1, NULL, &f1, 0), MQTT_EINVAL);
	CU_ASSERT_EQUAL(mqtt_encode_unsubscribe(buf, sizeof(buf), 4, 0, NULL, &f1, 1), MQTT_EINVAL);
	{
		struct mqtt_str fbig = {big, 65536};
		CU_ASSERT_EQUAL(mqtt_encode_unsubscribe(buf, sizeof(buf), 4, 1, NULL, &fbig, 1), MQTT_EINVAL);
	}
	/* SUBACK, UNSUBACK */
	{
		struct mqtt_suback s = {.packet_id = 1, .codes = S("")};
		CU_ASSERT_EQUAL(mqtt_encode_suback(buf, sizeof(buf), 4, MQTT_PKT_SUBACK, &s), MQTT_EINVAL);
		CU_ASSERT_EQUAL(mqtt_encode_suback(buf, sizeof(buf), 5, MQTT_PKT_UNSUBACK, &s), MQTT_EINVAL);
		CU_ASSERT_EQUAL(mqtt_encode_suback(buf, sizeof(buf), 4, MQTT_PKT_UNSUBACK, &s), 4);
		s.codes = S("\x03");
		CU_ASSERT_EQUAL(mqtt_encode_suback(buf, sizeof(buf), 4, MQTT_PKT_SUBACK, &s), MQTT_EINVAL);
		CU_ASSERT_EQUAL(mqtt_encode_suback(buf, sizeof(buf), 4, MQTT_PKT_PUBACK, &s), MQTT_EINVAL);
		s.codes = S("\x00"), s.packet_id = 0;
		CU_ASSERT_EQUAL(mqtt_encode_suback(buf, sizeof(buf), 4, MQTT_PKT_SUBACK, &s), MQTT_EINVAL);
	}
	/* Acks, empty and reason packets */
	{
		struct mqtt_ack a = {.packet_id = 0};
		struct mqtt_reason_pkt r = {0};
		CU_ASSERT_EQUAL(mqtt_encode_ack(buf, sizeof(buf), 4, MQTT_PKT_PUBACK, &a), MQTT_EINVAL);
		a.packet_id = 1;
		CU_ASSERT_EQUAL(mqtt_encode_ack(buf, sizeof(buf), 4, MQTT_PKT_SUBACK, &a), MQTT_EINVAL);
		a.reason = 0x80; /* no reason codes in 3.1.1: dropped */
		CU_ASSERT_EQUAL(mqtt_encode_ack(buf, sizeof(buf), 4, MQTT_PKT_PUBACK, &a), 4);
		CU_ASSERT_EQUAL(mqtt_encode_empty(buf, sizeof(buf), MQTT_PKT_CONNECT), MQTT_EINVAL);
		CU_ASSERT_EQUAL(mqtt_encode_empty(buf, 1, MQTT_PKT_PINGREQ), MQTT_ENOSPC);
		CU_ASSERT_EQUAL(mqtt_encode_reason(buf, sizeof(buf), 4, MQTT_PKT_AUTH, &r), MQTT_EINVAL);
		CU_ASSERT_EQUAL(mqtt_encode_reason(buf, sizeof(buf), 5, MQTT_PKT_PUBACK, &r), MQTT_EINVAL);
		r.reason = 0x8E; /* 3.1.1 DISCONNECT carries no reason */
		CU_ASSERT_EQUAL(mqtt_encode_reason(buf, sizeof(buf), 4, MQTT_PKT_DISCONNECT, &r), 2);
	}
}

/* ---- iterators and builders ---- */

static void test_props_iterator_walks_raw(void)
{
	/* The PUBLISH with every property, decoded, then walked in wire order. */
	const struct rt_case *c = NULL;
	for (size_t i = 0; i < ncases; i++)
		if (strstr(cases[i].name, "two subscription ids") != NULL)
			c = &cases[i];
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);

	uint8_t out[512];
	ssize_t n = rt_encode(out, sizeof(out), 5, &c->pkt);
	struct mqtt_pkt d;
	CU_ASSERT_EQUAL_FATAL(decode_v(out, (size_t)n, 5, 0, &d), n);

	static const uint8_t ids[] = {0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x0B, 0x23, 0x26, 0x26};
	struct mqtt_prop_iter it;
	struct mqtt_prop pr;
	size_t k = 0;
	uint32_t subids[2] = {0};
	mqtt_props_iter_init(&d.u.publish.props, &it);
	while (mqtt_props_next(&it, &pr) == 1 && k < 16) {
		CU_ASSERT(k < sizeof(ids) && pr.id == ids[k]);
		if (pr.id == MQTT_PROP_SUBSCRIPTION_ID)
			subids[k - 5] = pr.value;
		if (pr.id == MQTT_PROP_CONTENT_TYPE)
			CU_ASSERT(rt_str_eq(pr.str, S("json")));
		if (pr.id == MQTT_PROP_USER_PROPERTY) {
			CU_ASSERT(rt_str_eq(pr.str, S("k1")));
			CU_ASSERT(rt_str_eq(pr.value_str, k == 8 ? S("v1") : S("v2")));
		}
		if (pr.id == MQTT_PROP_MESSAGE_EXPIRY)
			CU_ASSERT_EQUAL(pr.value, 100);
		k++;
	}
	CU_ASSERT_EQUAL(k, sizeof(ids));
	CU_ASSERT_EQUAL(subids[0], 268435455);
	CU_ASSERT_EQUAL(subids[1], 9);
	CU_ASSERT_EQUAL(mqtt_props_next(&it, &pr), 0);

	/* Empty and absent blocks. */
	struct mqtt_props none = {0};
	mqtt_props_iter_init(&none, &it);
	CU_ASSERT_EQUAL(mqtt_props_next(&it, &pr), 0);
	/* A truncated hand-made block ends the walk instead of overreading. */
	uint8_t *trunc = dup_exact((const uint8_t *)"\x26\x00\x05k", 4);
	struct mqtt_props bad = {.raw = {trunc, 4}};
	mqtt_props_iter_init(&bad, &it);
	CU_ASSERT_EQUAL(mqtt_props_next(&it, &pr), 0);
	free(trunc);
}

static void test_sub_iterator(void)
{
	const uint8_t pkt[] = "\x82\x0C\x00\x05\x00\x03" "a/+\x01\x00\x01#\x02";
	const uint8_t unsub[] = "\xA2\x0A\x00\x07\x00\x03" "a/b\x00\x01" "c";
	struct mqtt_pkt d;
	struct mqtt_sub_iter it;
	struct mqtt_str f;
	uint8_t opt = 0xFF;

	CU_ASSERT_EQUAL_FATAL(decode_v(pkt, sizeof(pkt) - 1, 4, 0, &d), 14);
	CU_ASSERT_EQUAL(d.u.subscribe.count, 2);
	mqtt_sub_iter_init(&d.u.subscribe, true, &it);
	CU_ASSERT_EQUAL(mqtt_sub_next(&it, &f, &opt), 1);
	CU_ASSERT(rt_str_eq(f, S("a/+")) && opt == 1);
	CU_ASSERT_EQUAL(mqtt_sub_next(&it, &f, &opt), 1);
	CU_ASSERT(rt_str_eq(f, S("#")) && opt == 2);
	CU_ASSERT_EQUAL(mqtt_sub_next(&it, &f, &opt), 0);

	CU_ASSERT_EQUAL_FATAL(decode_v(unsub, sizeof(unsub) - 1, 4, 0, &d), 12);
	CU_ASSERT_EQUAL(d.u.subscribe.count, 2);
	mqtt_sub_iter_init(&d.u.subscribe, false, &it);
	CU_ASSERT_EQUAL(mqtt_sub_next(&it, &f, NULL), 1);
	CU_ASSERT(rt_str_eq(f, S("a/b")));
	CU_ASSERT_EQUAL(mqtt_sub_next(&it, &f, &opt), 1);
	CU_ASSERT(rt_str_eq(f, S("c")) && opt == 0);
	CU_ASSERT_EQUAL(mqtt_sub_next(&it, &f, &opt), 0);
}

static void test_props_builders_bounds(void)
{
	uint8_t buf[32];
	static uint8_t big[65536];
	size_t off;

	/* Each builder at every short capacity: ENOSPC and *off untouched. */
	for (size_t cap = 0; cap < 9; cap++) {
		off = 0;
		int r1 = mqtt_props_put_u8(buf, cap, &off, MQTT_PROP_MAXIMUM_QOS, 1);
		CU_ASSERT(cap >= 2 ? r1 == 0 && off == 2 : r1 == MQTT_ENOSPC && off == 0);
		off = 0;
		int r2 = mqtt_props_put_u16(buf, cap, &off, MQTT_PROP_TOPIC_ALIAS, 1);
		CU_ASSERT(cap >= 3 ? r2 == 0 && off == 3 : r2 == MQTT_ENOSPC && off == 0);
		off = 0;
		int r3 = mqtt_props_put_u32(buf, cap, &off, MQTT_PROP_SESSION_EXPIRY, 1);
		CU_ASSERT(cap >= 5 ? r3 == 0 && off == 5 : r3 == MQTT_ENOSPC && off == 0);
		off = 0;
		int r4 = mqtt_props_put_varint(buf, cap, &off, MQTT_PROP_SUBSCRIPTION_ID, 16384);
		CU_ASSERT(cap >= 4 ? r4 == 0 && off == 4 : r4 == MQTT_ENOSPC && off == 0);
		off = 0;
		int r5 = mqtt_props_put_str(buf, cap, &off, MQTT_PROP_REASON_STRING, S("abc"));
		CU_ASSERT(cap >= 6 ? r5 == 0 && off == 6 : r5 == MQTT_ENOSPC && off == 0);
		off = 0;
		int r6 = mqtt_props_put_pair(buf, cap, &off, S("k"), S("vv"));
		CU_ASSERT(cap >= 8 ? r6 == 0 && off == 8 : r6 == MQTT_ENOSPC && off == 0);
	}
	off = 0;
	CU_ASSERT_EQUAL(mqtt_props_put_varint(buf, sizeof(buf), &off, MQTT_PROP_SUBSCRIPTION_ID, 268435456u),
			MQTT_EINVAL);
	CU_ASSERT_EQUAL(mqtt_props_put_str(buf, sizeof(buf), &off, MQTT_PROP_REASON_STRING,
					   (struct mqtt_str){big, 65536}),
			MQTT_EINVAL);
	CU_ASSERT_EQUAL(mqtt_props_put_pair(buf, sizeof(buf), &off, S("k"), (struct mqtt_str){big, 65536}),
			MQTT_EINVAL);
	CU_ASSERT_EQUAL(off, 0);
	/* Exact bytes of one of each. */
	off = 0;
	mqtt_props_put_u16(buf, sizeof(buf), &off, MQTT_PROP_RECEIVE_MAXIMUM, 0x1234);
	mqtt_props_put_pair(buf, sizeof(buf), &off, S("k"), S("v"));
	CU_ASSERT_EQUAL(off, 10);
	CU_ASSERT(memcmp(buf, "\x21\x12\x34\x26\x00\x01k\x00\x01v", 10) == 0);
}

/* A v5 property block counted raw: user_property_count matches the block,
 * past 65,535 too (a legal 1 MiB packet holds 200,000 empty pairs; they
 * were refused as "packet exceeds the maximum packet size"). */
static void test_user_property_count(void)
{
	static uint8_t props[70000 * 5], pkt[70000 * 5 + 16];
	size_t off = 0;
	for (int i = 0; i < 70000; i++)
		CU_ASSERT_EQUAL(mqtt_props_put_pair(props, sizeof(props), &off, S(""), S("")), 0);
	struct mqtt_reason_pkt r = {.reason = 0, .props = {.raw = {props, off}}};
	ssize_t n = mqtt_encode_reason(pkt, sizeof(pkt), 5, MQTT_PKT_DISCONNECT, &r);
	struct mqtt_pkt d;
	CU_ASSERT_EQUAL_FATAL(decode_v(pkt, (size_t)n, 5, 0, &d), n);
	CU_ASSERT_EQUAL(d.u.reason.props.user_property_count, 70000);
	CU_ASSERT_EQUAL(d.u.reason.props.present, BIT(MQTT_PROP_USER_PROPERTY));
	CU_ASSERT_EQUAL(d.u.reason.props.raw.len, off);
}

static void test_strerror(void)
{
	static const int errs[] = {MQTT_EMALFORMED, MQTT_EPROTOCOL, MQTT_ETOOBIG, MQTT_EVARINT,
				   MQTT_EFLAGS,     MQTT_EUTF8,     MQTT_EQOS,    MQTT_ETYPE,
				   MQTT_EVERSION,   MQTT_EPROPS,    MQTT_ENOSPC,  MQTT_EINVAL,
				   MQTT_EPROTONAME};
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
		CU_ASSERT(strcmp(mqtt_strerror(errs[i]), "unknown error") != 0);
	CU_ASSERT_STRING_EQUAL(mqtt_strerror(0), "unknown error");
	CU_ASSERT_STRING_EQUAL(mqtt_strerror(-99), "unknown error");
}

/* The naive definition mqtt_utf8_has_control must agree with. */
static bool naive_has_control(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((s[i] >= 0x01 && s[i] <= 0x1F) || s[i] == 0x7F)
			return true;
		if (s[i] == 0xC2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9F)
			return true;
	}
	return false;
}

/* Control characters U+0001..U+001F, U+007F..U+009F (MQTT-1.5.4 lets a
 * server refuse them): each placed at every offset of a 40-byte topic,
 * across the 8-byte steps, and near misses that are not controls. */
static void test_utf8_controls(void)
{
	static const struct {
		const char *bytes;
		size_t len;
		bool control;
	} t[] = {
		{"\x01", 1, true},     {"\x1F", 1, true},     {"\x7F", 1, true},
		{"\xC2\x80", 2, true}, {"\xC2\x9F", 2, true}, {"\x20", 1, false},
		{"\x7E", 1, false},    {"\xC2\xA0", 2, false}, {"\xC2\xB0", 2, false},
		{"\xC3\x80", 2, false}, {"\xE2\x82\xAC", 3, false},
	};
	uint8_t buf[48];
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		for (size_t at = 0; at + t[i].len <= 40; at++) {
			memset(buf, 'a', 40);
			memcpy(buf + at, t[i].bytes, t[i].len);
			bool got = mqtt_utf8_has_control(buf, 40);
			CU_ASSERT_EQUAL(got, t[i].control);
			CU_ASSERT_EQUAL(got, naive_has_control(buf, 40));
			/* and in every shorter prefix that holds it whole */
			for (size_t n = at + t[i].len; n <= 40; n += 7)
				CU_ASSERT_EQUAL(mqtt_utf8_has_control(buf, n), t[i].control);
		}
	}
	/* A C2 lead cut at the end is no control. */
	memset(buf, 'a', 16);
	buf[15] = 0xC2;
	CU_ASSERT_FALSE(mqtt_utf8_has_control(buf, 16));
	CU_ASSERT_FALSE(mqtt_utf8_has_control(buf, 0));
}

static CU_TestInfo codec_tests[] = {
	{"control characters found at every offset (mqtt_utf8_has_control)", test_utf8_controls},
	{"PUBLISH split: per-delivery v5 properties before the shared ones", test_publish_split_per_delivery_properties},
	{"PUBLISH small: the split encoder's bytes in one buffer, RL < 128 only", test_publish_small_equals_split},
	{"round trip of every packet type, 3.1/3.1.1/5: whole, per byte, split, ENOSPC", test_roundtrip_every_type},
	{"CONNECT cases cover levels 3, 4 and 5", test_connect_levels_covered},
	{"malformed packets rejected with their error code", test_malformed_table},
	{"[MQTT-3.1.2-2] unknown level still reported in connect.version", test_connect_bad_level_reports_level},
	{"varint encodings at each length boundary", test_varint_boundaries},
	{"varint overlong and fifth byte rejected", test_varint_invalid},
	{"Remaining Length 0, 127/128, 16383/16384, 2097151/2097152", test_remaining_length_boundaries},
	{"max_packet_size judged from the fixed header alone", test_max_packet_size_from_header},
	{"[MQTT-1.5.4] UTF-8 validity table", test_utf8_table},
	{"encoders refuse what the wire cannot carry", test_encoder_einval},
	{"property iterator walks the raw block", test_props_iterator_walks_raw},
	{"subscription iterator", test_sub_iterator},
	{"property builders: bounds and bytes", test_props_builders_bounds},
	{"user_property_count", test_user_property_count},
	{"mqtt_strerror covers every code", test_strerror},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"codec", build_cases, NULL, NULL, NULL, codec_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
