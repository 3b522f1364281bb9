/*
 * Logging: level names, filtering, the exact text and JSON line shapes,
 * escaping of client-controlled strings, destination switching, and the
 * per-reason rate limiter (with an injected clock). Writes to a scratch
 * file and reads it back.
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


/* ---- rate limiting: the clock is injected, so no test sleeps ---- */

static uint64_t fake_now = 1000000;
static uint64_t fake_clock(void) { return fake_now; }

static size_t count_substr(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

static void limiter_reset(uint32_t per_second, uint32_t burst)
{
	reset();
	log_set_clock(fake_clock);
	fake_now += 10000000; /* every bucket refills completely */
	log_set_rate_limit(per_second, burst);
	log_limit_flush(); /* reports leftovers of earlier tests */
	reset();
}

static void test_limit_burst_then_summary(void)
{
	static char buf[65536];
	limiter_reset(2, 5);
	uint64_t before = log_suppressed_total();
	for (int i = 0; i < 1000; i++)
		log_limited("refused", LOG_NOTICE, "conn", "refusing client %d", i);
	slurp(buf, sizeof buf);
	CU_ASSERT_EQUAL(count_substr(buf, "refusing client"), 5);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "refusing client 4\n"));
	CU_ASSERT_PTR_NULL(strstr(buf, "suppressed"));
	CU_ASSERT_EQUAL(log_suppressed_total() - before, 995);
	CU_ASSERT_TRUE(log_limit_pending());
	/* Not a whole token yet: the summary waits. */
	fake_now += 499;
	log_limit_flush();
	slurp(buf, sizeof buf);
	CU_ASSERT_PTR_NULL(strstr(buf, "suppressed"));
	fake_now += 1;
	log_limit_flush();
	slurp(buf, sizeof buf);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, " NOTICE [conn] 995 similar messages suppressed in the last 1 s (refused)\n"));
	CU_ASSERT_FALSE(log_limit_pending());
	log_set_clock(NULL);
}

static void test_limit_refills_at_rate(void)
{
	static char buf[65536];
	limiter_reset(10, 1);
	/* 10 seconds of a steady flood at 1000 lines/s: about 10 lines a second
	 * get through, plus one summary each time the flood is interrupted by a
	 * written line. */
	for (int ms = 0; ms < 10000; ms++) {
		log_limited("login", LOG_NOTICE, "auth", "login refused %d", ms);
		fake_now++;
	}
	slurp(buf, sizeof buf);
	size_t lines = count_substr(buf, "login refused"), summaries = count_substr(buf, "suppressed");
	CU_ASSERT(lines >= 99 && lines <= 101);
	/* A summary precedes each written line once the bucket has run dry. */
	CU_ASSERT(summaries >= 98 && summaries <= 100);
	log_set_clock(NULL);
}

static void test_limit_reasons_are_independent(void)
{
	static char buf[65536];
	limiter_reset(1, 3);
	for (int i = 0; i < 100; i++)
		log_limited("tls", LOG_NOTICE, "conn", "tls failure %d", i);
	/* Another reason is not hidden by the first one's flood; the same text
	 * at another address is the same reason. */
	char other[] = "login";
	log_limited(other, LOG_NOTICE, "auth", "login refused");
	log_limited("login", LOG_NOTICE, "auth", "login refused again");
	slurp(buf, sizeof buf);
	CU_ASSERT_EQUAL(count_substr(buf, "tls failure"), 3);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "login refused\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "login refused again\n"));
	log_set_clock(NULL);
}

static void test_limit_filtered_level_not_counted(void)
{
	limiter_reset(1, 1);
	log_set_level(LOG_WARNING);
	uint64_t before = log_suppressed_total();
	for (int i = 0; i < 10; i++)
		log_limited("quiet", LOG_INFO, "conn", "hidden %d", i);
	CU_ASSERT_EQUAL(log_suppressed_total(), before);
	CU_ASSERT_FALSE(log_limit_pending());
	log_set_clock(NULL);
}

static void test_limit_off_writes_everything(void)
{
	static char buf[65536];
	limiter_reset(0, 1);
	for (int i = 0; i < 50; i++)
		log_limited("off", LOG_NOTICE, "conn", "line %d", i);
	slurp(buf, sizeof buf);
	CU_ASSERT_EQUAL(count_substr(buf, "[conn] line "), 50);
	log_set_rate_limit(10, 100);
	log_set_clock(NULL);
}

static void test_limit_many_reasons_share_last_bucket(void)
{
	static char buf[65536];
	static char names[LOG_LIMIT_REASONS + 8][16];
	limiter_reset(1, 1);
	/* Fill the table (earlier tests used some slots already). */
	for (int i = 0; i < LOG_LIMIT_REASONS + 8; i++) {
		snprintf(names[i], sizeof names[i], "reason-%d", i);
		log_limited(names[i], LOG_NOTICE, "x", "first of %s", names[i]);
		log_limited(names[i], LOG_NOTICE, "x", "second of %s", names[i]);
	}
	slurp(buf, sizeof buf);
	/* Never more than one line per reason, and the overflow ones share. */
	CU_ASSERT(count_substr(buf, "second of") == 0);
	CU_ASSERT(count_substr(buf, "first of") < LOG_LIMIT_REASONS + 8);
	fake_now += 2000;
	log_limit_flush();
	slurp(buf, sizeof buf);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "(other reasons)\n"));
	log_set_clock(NULL);
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
	{"limit: burst, then one summary", test_limit_burst_then_summary},
	{"limit: refills at the configured rate", test_limit_refills_at_rate},
	{"limit: reasons are independent", test_limit_reasons_are_independent},
	{"limit: filtered level not counted", test_limit_filtered_level_not_counted},
	{"limit: off writes everything", test_limit_off_writes_everything},
	{"limit: overflow reasons share a bucket", test_limit_many_reasons_share_last_bucket},
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
