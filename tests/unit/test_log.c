/*
 * Logging: level names, filtering, the exact text and JSON line shapes,
 * escaping of client-controlled strings, and destination switching. Writes
 * to a scratch file and reads it back.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit_main.h"
#include "err.h"
#include "log.h"

static char path[] = "/tmp/wisp-test-log-XXXXXX";

static int suite_init(void)
{
	int fd = mkstemp(path);
	if (fd == -1)
		return -1;
	close(fd);
	return 0;
}

static int suite_cleanup(void)
{
	log_set_destination("stderr");
	return unlink(path);
}

/* Restarts the log file and reads back what the logged lines produced. */
static void reset(void)
{
	CU_ASSERT_EQUAL(truncate(path, 0), 0);
	CU_ASSERT_EQUAL(log_set_destination(path), 0);
	log_set_format(LOG_FORMAT_TEXT);
	log_set_level(LOG_DEBUG);
}

static size_t slurp(char *buf, size_t cap)
{
	FILE *fp = fopen(path, "r");
	if (!fp)
		return 0;
	size_t n = fread(buf, 1, cap - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return n;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
static int is_timestamp(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
	for (size_t i = 0; shape[i]; i++) {
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
			return 0;
	}
	return 1;
}

static void test_level_names_round_trip(void)
{
	static const struct {
		const char *name;
		int level;
	} cases[] = {{"error", LOG_ERROR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
		     {"info", LOG_INFO},   {"debug", LOG_DEBUG},     {"verbose", -1},
		     {"ERROR", -1},        {"", -1}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		CU_ASSERT_EQUAL(log_level_parse(cases[i].name), cases[i].level);
		if (cases[i].level >= 0)
			CU_ASSERT_STRING_EQUAL(log_level_name((enum log_level)cases[i].level),
					       cases[i].name);
	}
}

static void test_text_line_shape(void)
{
	char buf[8192];
	reset();
	log_msg(LOG_NOTICE, "conn", "client %s connected from %s", "s1", "127.0.0.1");
	CU_ASSERT_FATAL(slurp(buf, sizeof buf) > 24);
	CU_ASSERT_TRUE(is_timestamp(buf));
	CU_ASSERT_STRING_EQUAL(buf + 24, " NOTICE [conn] client s1 connected from 127.0.0.1\n");
}

static void test_level_filter(void)
{
	char buf[8192];
	reset();
	log_set_level(LOG_WARNING);
	CU_ASSERT_FALSE(log_enabled(LOG_NOTICE));
	CU_ASSERT_TRUE(log_enabled(LOG_WARNING));
	CU_ASSERT_TRUE(log_enabled(LOG_ERROR));
	log_msg(LOG_DEBUG, "x", "hidden");
	log_msg(LOG_INFO, "x", "hidden");
	log_msg(LOG_ERROR, "x", "shown");
	slurp(buf, sizeof buf);
	CU_ASSERT_PTR_NULL(strstr(buf, "hidden"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, " ERROR [x] shown\n"));
}

static void test_text_escapes_control_characters(void)
{
	char buf[8192];
	reset();
	/* A client id with a newline must not forge a second line. */
	log_msg(LOG_INFO, "conn", "id=%s", "evil\n2026-01-01T00:00:00.000Z ERROR [x] fake\t\x01\\");
	slurp(buf, sizeof buf);
	CU_ASSERT_STRING_EQUAL(buf + 24, " INFO [conn] id=evil\\n2026-01-01T00:00:00.000Z ERROR [x] "
					 "fake\\t\\x01\\\\\n");
}

static void test_json_line_shape_and_escapes(void)
{
	char buf[8192];
	reset();
	log_set_format(LOG_FORMAT_JSON);
	log_msg(LOG_WARNING, "auth", "user \"%s\" \\ %s", "bob\n", "caf\xC3\xA9 \xFF\x01");
	slurp(buf, sizeof buf);
	CU_ASSERT_EQUAL(strncmp(buf, "{\"ts\":\"", 7), 0);
	CU_ASSERT_TRUE(is_timestamp(buf + 7));
	CU_ASSERT_STRING_EQUAL(buf + 7 + 24, "\",\"level\":\"warning\",\"module\":\"auth\",\"msg\":"
					     "\"user \\\"bob\\n\\\" \\\\ caf\xC3\xA9 \\ufffd\\u0001\"}\n");
}

static void test_long_json_line_stays_one_valid_object(void)
{
	static char big[10000];
	char buf[16384];
	memset(big, '"', sizeof big - 1);
	reset();
	log_set_format(LOG_FORMAT_JSON);
	log_msg(LOG_ERROR, "m", "%s", big);
	size_t n = slurp(buf, sizeof buf);
	CU_ASSERT_TRUE(n <= 4096);
	CU_ASSERT_TRUE(n > 1000);
	CU_ASSERT_EQUAL(strchr(buf, '\n'), buf + n - 1);
	CU_ASSERT_STRING_EQUAL(buf + n - 6, "...\"}\n");
	/* Not ending in the middle of an escape: the quote count pairs up. */
	CU_ASSERT_STRING_EQUAL(buf + n - 8, "\\\"...\"}\n");
}

static void test_bad_destination_keeps_old_one(void)
{
	char buf[8192];
	reset();
	CU_ASSERT_EQUAL(log_set_destination("/nonexistent-dir/x.log"), WISP_EIO);
	log_msg(LOG_ERROR, "x", "still here");
	slurp(buf, sizeof buf);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "still here"));
}

static void test_reopen_appends(void)
{
	char buf[8192];
	reset();
	log_msg(LOG_ERROR, "x", "one");
	CU_ASSERT_EQUAL(log_set_destination(path), 0); /* what SIGHUP does after logrotate */
	log_msg(LOG_ERROR, "x", "two");
	slurp(buf, sizeof buf);
	char *one = strstr(buf, "[x] one\n"), *two = strstr(buf, "[x] two\n");
	CU_ASSERT_PTR_NOT_NULL(one);
	CU_ASSERT_PTR_NOT_NULL(two);
	CU_ASSERT_TRUE(one < two);
}

static void test_syslog_destination(void)
{
	/* Only that switching works; the syslog content is not observable. */
	CU_ASSERT_EQUAL(log_set_destination("syslog"), 0);
	log_set_level(LOG_DEBUG);
	log_msg(LOG_DEBUG, "test", "wisp unit test message");
	CU_ASSERT_EQUAL(log_set_destination("stderr"), 0);
}

static CU_TestInfo log_tests[] = {
	{"level names round trip", test_level_names_round_trip},
	{"text line shape", test_text_line_shape},
	{"level filter", test_level_filter},
	{"text escapes control characters", test_text_escapes_control_characters},
	{"json line shape and escapes", test_json_line_shape_and_escapes},
	{"long json line stays one valid object", test_long_json_line_stays_one_valid_object},
	{"bad destination keeps old one", test_bad_destination_keeps_old_one},
	{"reopen appends", test_reopen_appends},
	{"syslog destination", test_syslog_destination},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"log", suite_init, suite_cleanup, NULL, NULL, log_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
