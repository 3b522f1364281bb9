/*
 * wisp_sub's -F renderer: each case is a format, a message and the bytes
 * mosquitto_sub 2.0.11 prints for them (captured from the real tool).
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit_main.h"
#include "sub_format.h"

struct fmt_case {
	const char *name;
	const char *format;
	bool eol, verbose, pretty;
	const char *topic;
	const char *payload; /* NULL: zero length */
	int qos, mid;
	bool retain;
	const char *expect;
};

static const struct fmt_case CASES[] = {
	{"default payload and newline", NULL, true, false, false, "t", "hi", 0, 0, false, "hi\n"},
	{"empty payload prints nothing", NULL, true, false, false, "t", NULL, 0, 0, false, ""},
	{"-v", NULL, true, true, false, "a/b", "hi", 0, 0, false, "a/b hi\n"},
	{"-v empty payload is (null)", NULL, true, true, false, "a/b", NULL, 0, 0, false, "a/b (null)\n"},
	{"-v -N empty prints nothing", NULL, false, true, false, "a/b", NULL, 0, 0, false, ""},
	{"-N", NULL, false, false, false, "t", "hi", 0, 0, false, "hi"},
	{"fields", "%%|%t|%p|%q|%r|%l|%m", true, false, false, "x", "abc", 1, 7, true, "%|x|abc|1|1|3|7\n"},
	{"width truncates payload", "[%3p][%-3p][%03x][%8x][%-8X]", true, false, false, "x", "abcdef", 0, 0, false,
	 "[abc][abc][061][  616263][616263  ]\n"},
	{"string widths", "%10t|%-10t|%5.2t|%.3t|", true, false, false, "x", "p", 0, 0, false,
	 "         x|x         |    x|x|\n"},
	{"integer widths", "%010l|%-5l|%5m|%05m", true, false, false, "x", "hello", 1, 42, false,
	 "0000000005|5    |   42|00042\n"},
	{"escapes", "\\\\|\\t|\\n|\\0|", true, false, false, "x", "p", 0, 0, false, "\\|\t|\n|\0|\n"},
	{"-F overrides -v, not -N", "%p", false, true, false, "x", "p", 0, 0, false, "p"},
	{"at-at is a literal", "@@", true, false, false, "x", "p", 0, 0, false, "@\n"},
	{"nanoseconds", "@N", true, false, false, "x", "p", 0, 0, false, "000000123\n"},
	{"json escaped", "%j", true, false, false, "x", "ab\"c", 0, 0, true,
	 "{\"tst\":\"1970-01-01T00:00:00.000000Z+0000\",\"topic\":\"x\",\"qos\":0,\"retain\":1,\"payloadlen\":4,"
	 "\"payload\":\"ab\\\"c\"}\n"},
	{"json mid only with qos", "%j", true, false, false, "x", "1", 1, 3, false,
	 "{\"tst\":\"1970-01-01T00:00:00.000000Z+0000\",\"topic\":\"x\",\"qos\":1,\"retain\":0,\"payloadlen\":1,"
	 "\"mid\":3,\"payload\":\"1\"}\n"},
	{"json raw", "%J", true, false, false, "x", "{\"a\":[1,2]}", 0, 0, false,
	 "{\"tst\":\"1970-01-01T00:00:00.000000Z+0000\",\"topic\":\"x\",\"qos\":0,\"retain\":0,\"payloadlen\":11,"
	 "\"payload\":{\"a\":[1,2]}}\n"},
	{"json raw invalid drops the field", "|%J|", true, false, false, "x", "nope {", 0, 0, false, "||\n"},
	{"json null payload", "%j", true, false, false, "x", NULL, 0, 0, false,
	 "{\"tst\":\"1970-01-01T00:00:00.000000Z+0000\",\"topic\":\"x\",\"qos\":0,\"retain\":0,\"payloadlen\":0,"
	 "\"payload\":null}\n"},
	{"v5 fields blank without properties", "%A|%C|%E|%5F|%S|", true, false, false, "x", "p", 0, 0, false,
	 "|||     ||\n"},
	{"unix time", "%U", true, false, false, "x", "p", 0, 0, false, "0.000000123\n"},
	{"iso time", "%I", true, false, false, "x", "p", 0, 0, false, "1970-01-01T00:00:00+0000\n"},
};

static void test_format_cases(void)
{
	setenv("TZ", "UTC", 1);
	struct timespec now = {.tv_sec = 0, .tv_nsec = 123};
	for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
		const struct fmt_case *c = &CASES[i];
		char *buf = NULL, *ebuf = NULL;
		size_t len = 0, elen = 0;
		FILE *out = open_memstream(&buf, &len), *err = open_memstream(&ebuf, &elen);
		struct sub_format_opts o = {.format = c->format, .eol = c->eol, .verbose = c->verbose, .pretty = c->pretty};
		struct sub_msg m = {.topic = c->topic, .payload = c->payload, .len = c->payload ? strlen(c->payload) : 0,
				    .qos = c->qos, .retain = c->retain, .mid = c->mid};
		sub_format_print(out, err, &o, &m, &now);
		fclose(out);
		fclose(err);
		size_t elen_expect = strlen(c->expect);
		if (c->format && strstr(c->format, "\\0"))
			elen_expect = 9; /* "\|\t|\n|" + NUL + "|\n" */
		int ok = len == elen_expect && memcmp(buf, c->expect, len) == 0;
		if (!ok)
			fprintf(stderr, "\ncase '%s': got [%.*s]\n", c->name, (int)len, buf);
		CU_ASSERT(ok);
		free(buf);
		free(ebuf);
	}
}

static void test_invalid_json_reports_on_stderr(void)
{
	struct timespec now = {0};
	char *buf = NULL, *ebuf = NULL;
	size_t len = 0, elen = 0;
	FILE *out = open_memstream(&buf, &len), *err = open_memstream(&ebuf, &elen);
	struct sub_format_opts o = {.format = "%J", .eol = true};
	struct sub_msg m = {.topic = "a/b", .payload = "x", .len = 1};
	sub_format_print(out, err, &o, &m, &now);
	fclose(out);
	fclose(err);
	CU_ASSERT_STRING_EQUAL(ebuf, "Error: Message payload is not valid JSON on topic a/b.\n");
	CU_ASSERT_STRING_EQUAL(buf, "\n");
	free(buf);
	free(ebuf);
}

/* Renders `fmt` for a v5 PUBLISH carrying the property block `raw`, decoded
 * by the codec as wisp_sub gets it. */
static char *render_v5(const char *fmt, const uint8_t *raw, size_t raw_len, int qos)
{
	uint8_t pkt[512];
	struct mqtt_publish p = {.qos = (uint8_t)qos, .packet_id = qos ? 5 : 0,
				 .topic = {(const uint8_t *)"v/5", 3}, .payload = {(const uint8_t *)"{}", 2},
				 .props.raw = {raw, raw_len}};
	ssize_t n = mqtt_encode_publish(pkt, sizeof pkt, MQTT_PROTO_V5, &p);
	CU_ASSERT_FATAL(n > 0);
	struct mqtt_codec_opts co = {.version = MQTT_PROTO_V5};
	struct mqtt_pkt d;
	CU_ASSERT_FATAL(mqtt_decode(pkt, (size_t)n, &co, &d) == n);
	setenv("TZ", "UTC", 1);
	struct timespec now = {0};
	char *buf = NULL, *ebuf = NULL;
	size_t len = 0, elen = 0;
	FILE *out = open_memstream(&buf, &len), *err = open_memstream(&ebuf, &elen);
	struct sub_format_opts o = {.format = fmt, .eol = false};
	struct sub_msg m = {.topic = "v/5", .payload = "{}", .len = 2, .qos = qos, .mid = qos ? 5 : 0,
			    .props = &d.u.publish.props};
	sub_format_print(out, err, &o, &m, &now);
	fclose(out);
	fclose(err);
	CU_ASSERT_EQUAL(elen, 0);
	free(ebuf);
	return buf;
}

/* Expected bytes captured from mosquitto_sub 2.0.11 for the same PUBLISH. */
static void test_v5_properties(void)
{
	size_t off = 0;
	uint8_t raw[256];
	struct mqtt_str k1 = {(const uint8_t *)"k1", 2}, v1 = {(const uint8_t *)"v1", 2};
	struct mqtt_str e = {(const uint8_t *)"", 0}, ct = {(const uint8_t *)"text/json", 9};
	struct mqtt_str cd = {(const uint8_t *)"corr", 4}, rt = {(const uint8_t *)"r/t", 3};
	CU_ASSERT(mqtt_props_put_pair(raw, sizeof raw, &off, k1, v1) == 0);
	CU_ASSERT(mqtt_props_put_str(raw, sizeof raw, &off, MQTT_PROP_CONTENT_TYPE, ct) == 0);
	CU_ASSERT(mqtt_props_put_str(raw, sizeof raw, &off, MQTT_PROP_CORRELATION_DATA, cd) == 0);
	CU_ASSERT(mqtt_props_put_u16(raw, sizeof raw, &off, MQTT_PROP_TOPIC_ALIAS, 9) == 0);
	CU_ASSERT(mqtt_props_put_str(raw, sizeof raw, &off, MQTT_PROP_RESPONSE_TOPIC, rt) == 0);
	CU_ASSERT(mqtt_props_put_u32(raw, sizeof raw, &off, MQTT_PROP_MESSAGE_EXPIRY, 4000000000u) == 0);
	CU_ASSERT(mqtt_props_put_u8(raw, sizeof raw, &off, MQTT_PROP_PAYLOAD_FORMAT, 1) == 0);
	CU_ASSERT(mqtt_props_put_varint(raw, sizeof raw, &off, MQTT_PROP_SUBSCRIPTION_ID, 300) == 0);
	CU_ASSERT(mqtt_props_put_pair(raw, sizeof raw, &off, e, e) == 0);
	char *got = render_v5("%P|%C|%D|%A|%R|%E|%F|%S|%-4A|%05S|%.4C|", raw, off, 1);
	/* %E is a signed int in mosquitto_sub: 4000000000 prints negative. */
	CU_ASSERT_STRING_EQUAL(got, "k1:v1 :|text/json|corr|9|r/t|-294967296|1|300|9   |00300|text|");
	free(got);
	/* topic-alias in %j: the length of the correlation data read before
	 * it, mosquitto_sub 2.0.11's slip; user properties gathered. */
	got = render_v5("%j", raw, off, 1);
	CU_ASSERT_STRING_EQUAL(got, "{\"tst\":\"1970-01-01T00:00:00.000000Z+0000\",\"topic\":\"v/5\",\"qos\":1,"
				    "\"retain\":0,\"payloadlen\":2,\"mid\":5,\"properties\":{\"user-properties\":"
				    "{\"k1\":\"v1\",\"\":\"\"},\"content-type\":\"text/json\",\"correlation-data\":"
				    "\"corr\",\"topic-alias\":4,\"response-topic\":\"r/t\",\"message-expiry-interval\":"
				    "4000000000,\"payload-format-indicator\":1,\"subscription-identifier\":300},"
				    "\"payload\":\"{}\"}");
	free(got);
	/* No properties at all: no "properties" key; an alias alone reads 0. */
	got = render_v5("%J", NULL, 0, 0);
	CU_ASSERT_STRING_EQUAL(got, "{\"tst\":\"1970-01-01T00:00:00.000000Z+0000\",\"topic\":\"v/5\",\"qos\":0,"
				    "\"retain\":0,\"payloadlen\":2,\"payload\":{}}");
	free(got);
	off = 0;
	CU_ASSERT(mqtt_props_put_u16(raw, sizeof raw, &off, MQTT_PROP_TOPIC_ALIAS, 9) == 0);
	got = render_v5("%j", raw, off, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(got, "\"properties\":{\"topic-alias\":0}"));
	free(got);
}

static CU_TestInfo format_tests[] = {
	{"format cases match mosquitto_sub 2.0.11", test_format_cases},
	{"%J with invalid JSON reports on stderr", test_invalid_json_reports_on_stderr},
	{"v5 properties in -F fields and %j", test_v5_properties},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"sub_format", NULL, NULL, NULL, NULL, format_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
