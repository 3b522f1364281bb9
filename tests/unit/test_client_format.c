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

static CU_TestInfo format_tests[] = {
	{"format cases match mosquitto_sub 2.0.11", test_format_cases},
	{"%J with invalid JSON reports on stderr", test_invalid_json_reports_on_stderr},
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
