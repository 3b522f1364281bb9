/*
 * ACL: a table of (user, client id, topic, access) against one rule file,
 * covering user blocks, the anonymous block, %u/%c patterns, deny rules,
 * '$' topics [MQTT-4.7.2-1] and default deny; SUBSCRIBE filter
 * classification; parse errors with line numbers; no ACL = allow all.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit_main.h"
#include "acl.h"
#include "alloc.h"
#include "err.h"
#include "topic.h"

static const char rules[] =
	"# Example rules\n"
	"topic read public/#\n"
	"topic write anon/in\n"
	"\n"
	"pattern write sensors/%u/#\n"
	"pattern read commands/%u/#\n"
	"pattern readwrite clients/%c/#\n"
	"pattern read   shared/%u/%c\n"
	"\r\n"
	"user dashboard\n"
	"topic read sensors/#\n"
	"topic read $SYS/#\n"
	"topic deny sensors/+/secret\n"
	"\n"
	"user operator\n"
	"  topic readwrite commands/#   \n"
	"topic subscribe #\n"
	"topic deny commands/+/bootloader/#\n"
	"user two words\n"
	"topic everything/#\n"
	"user dashboard\n" /* a second block for the same user is merged */
	"topic write dashboard/out\n";

static struct acl *acl;

static int suite_init(void)
{
	char err[256];
	if (acl_parse(rules, strlen(rules), "acl", &acl, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	return 0;
}

static int suite_cleanup(void)
{
	acl_free(acl);
	return 0;
}

#define R ACL_READ
#define W ACL_WRITE
#define S ACL_SUBSCRIBE

struct check_case {
	const char *user; /* NULL = anonymous */
	const char *cid;
	const char *topic;
	enum acl_access access;
	bool allowed;
};

static const struct check_case check_cases[] = {
	/* anonymous block */
	{NULL, "c1", "public/news", R, true},
	{NULL, "c1", "public", R, true}, /* "public/#" matches the parent level */
	{NULL, "c1", "public/news", W, false},
	{NULL, "c1", "anon/in", W, true},
	{NULL, "c1", "anon/in", R, false},
	{NULL, "c1", "other", R, false},
	/* patterns need a user name when they mention %u */
	{NULL, "c1", "sensors/c1/t", W, false},
	{NULL, "c1", "clients/c1/x", W, true}, /* %c only */
	{NULL, "c1", "clients/c2/x", W, false},
	/* a user without a block gets the patterns only, not the anonymous block */
	{"s1", "dev-1", "sensors/s1/temp", W, true},
	{"s1", "dev-1", "sensors/s1", W, true},
	{"s1", "dev-1", "sensors/s1/temp", R, false},
	{"s1", "dev-1", "sensors/s2/temp", W, false},
	{"s1", "dev-1", "commands/s1/reboot", R, true},
	{"s1", "dev-1", "commands/s1/reboot", W, false},
	{"s1", "dev-1", "commands/s2/reboot", R, false},
	{"s1", "dev-1", "clients/dev-1/state", R, true},
	{"s1", "dev-1", "clients/dev-1/state", W, true},
	{"s1", "dev-1", "clients/s1/state", W, false},
	{"s1", "dev-1", "shared/s1/dev-1", R, true},
	{"s1", "dev-1", "shared/s1/dev-2", R, false},
	{"s1", "dev-1", "public/news", R, false},
	/* default deny */
	{"s1", "dev-1", "anything", R, false},
	{"s1", "dev-1", "anything", W, false},
	/* values that would change the filter's shape disable the pattern */
	{"#", "dev-1", "sensors/x/y", W, false},
	{"#", "dev-1", "sensors/#", W, false},
	{"a+b", "c", "sensors/a+b/t", W, false},
	{"a/b", "c", "sensors/a/b/t", W, false},
	{"", "c", "sensors//t", W, false},
	{"s1", "+", "clients/+/x", W, false},
	{"s1", NULL, "clients/x/y", W, false},
	/* user blocks */
	{"dashboard", "d", "sensors/s1/temp", R, true},
	{"dashboard", "d", "sensors/s1/temp", W, false},
	{"dashboard", "d", "sensors/s1/secret", R, false}, /* deny wins */
	{"dashboard", "d", "sensors/s1/secret/more", R, true},
	{"dashboard", "d", "$SYS/broker/uptime", R, true},
	{"dashboard", "d", "dashboard/out", W, true}, /* merged second block */
	{"dashboard", "d", "sensors/dashboard/x", W, true}, /* patterns apply too */
	{"operator", "o", "commands/s1/reboot", W, true},
	{"operator", "o", "commands/s1/bootloader", W, false},
	{"operator", "o", "commands/s1/bootloader/flash", R, false},
	{"operator", "o", "sensors/s1/temp", R, false}, /* subscribe-only '#' gives no read */
	{"two words", "x", "everything/a", W, true},
	{"two words", "x", "everything/a", R, true},
	{"two", "x", "everything/a", R, false},
	/* [MQTT-4.7.2-1] */
	{"operator", "o", "$SYS/x", R, false},
};

static void test_check_table(void)
{
	for (size_t i = 0; i < sizeof check_cases / sizeof check_cases[0]; i++) {
		const struct check_case *c = &check_cases[i];
		bool got = acl_check(acl, c->user, c->cid, c->topic, strlen(c->topic), c->access);
		if (got != c->allowed)
			fprintf(stderr, "\ncase %zu: user=%s cid=%s topic=%s access=%d: want %d\n", i,
				c->user ? c->user : "(none)", c->cid ? c->cid : "(none)", c->topic,
				(int)c->access, c->allowed);
		CU_ASSERT_EQUAL(got, c->allowed);
	}
}

struct sub_case {
	const char *user;
	const char *cid;
	const char *filter;
	enum acl_sub want;
};

static const struct sub_case sub_cases[] = {
	{NULL, "c1", "public/#", ACL_SUB_ALL},
	{NULL, "c1", "public/+/x", ACL_SUB_ALL},
	{NULL, "c1", "public", ACL_SUB_ALL},
	{NULL, "c1", "#", ACL_SUB_DENY},
	{NULL, "c1", "+/news", ACL_SUB_DENY},
	{NULL, "c1", "anon/in", ACL_SUB_DENY}, /* write-only */
	{"s1", "dev-1", "commands/s1/#", ACL_SUB_ALL},
	{"s1", "dev-1", "commands/+/#", ACL_SUB_DENY},
	{"s1", "dev-1", "sensors/s1/#", ACL_SUB_DENY},
	{"dashboard", "d", "sensors/#", ACL_SUB_FILTERED}, /* deny rule inside */
	{"dashboard", "d", "sensors/+/temp", ACL_SUB_ALL}, /* deny does not overlap */
	{"dashboard", "d", "sensors/+/secret", ACL_SUB_DENY}, /* deny covers it */
	{"dashboard", "d", "sensors/s1/secret", ACL_SUB_DENY},
	{"dashboard", "d", "$SYS/#", ACL_SUB_ALL},
	{"dashboard", "d", "#", ACL_SUB_DENY},
	{"operator", "o", "#", ACL_SUB_FILTERED}, /* subscribe '#', reads commands/# */
	{"operator", "o", "commands/#", ACL_SUB_FILTERED}, /* bootloader denied inside */
	{"operator", "o", "commands/s1/status", ACL_SUB_ALL},
	{"operator", "o", "commands/+/bootloader/#", ACL_SUB_DENY},
	{"operator", "o", "commands/s1/bootloader", ACL_SUB_DENY},
	{"operator", "o", "weather/#", ACL_SUB_NEVER}, /* may subscribe, may read nothing */
	{"operator", "o", "$SYS/#", ACL_SUB_DENY}, /* '#' rule does not cover '$' */
};

static void test_subscribe_classification(void)
{
	for (size_t i = 0; i < sizeof sub_cases / sizeof sub_cases[0]; i++) {
		const struct sub_case *c = &sub_cases[i];
		struct acl_client *cl;
		CU_ASSERT_EQUAL_FATAL(acl_client_new(acl, c->user, c->cid, &cl), 0);
		enum acl_sub got = acl_client_subscribe(cl, c->filter, strlen(c->filter));
		if (got != c->want)
			fprintf(stderr, "\ncase %zu: user=%s filter=%s: want %d got %d\n", i,
				c->user ? c->user : "(none)", c->filter, (int)c->want, (int)got);
		CU_ASSERT_EQUAL(got, c->want);
		CU_ASSERT_EQUAL(acl_client_check(cl, c->filter, strlen(c->filter), ACL_SUBSCRIBE),
				c->want != ACL_SUB_DENY);
		CU_ASSERT_EQUAL(acl_check(acl, c->user, c->cid, c->filter, strlen(c->filter), S),
				c->want != ACL_SUB_DENY);
		acl_client_free(cl);
	}
}

/* The per-client view holds only that client's rules. */
static void test_client_compiles_only_its_rules(void)
{
	struct acl_client *cl;
	CU_ASSERT_EQUAL_FATAL(acl_client_new(acl, "s1", "dev-1", &cl), 0);
	CU_ASSERT_EQUAL(acl_client_rule_count(cl), 4); /* the four patterns */
	acl_client_free(cl);
	CU_ASSERT_EQUAL_FATAL(acl_client_new(acl, NULL, "c1", &cl), 0);
	CU_ASSERT_EQUAL(acl_client_rule_count(cl), 3); /* 2 anonymous + the %c pattern */
	acl_client_free(cl);
	CU_ASSERT_EQUAL_FATAL(acl_client_new(acl, "dashboard", "d", &cl), 0);
	CU_ASSERT_EQUAL(acl_client_rule_count(cl), 4 + 4);
	acl_client_free(cl);
}

/* A client keeps working after a reload freed the ACL it came from. */
static void test_client_outlives_acl(void)
{
	struct acl *a;
	struct acl_client *cl;
	char err[128];
	CU_ASSERT_EQUAL_FATAL(acl_parse("pattern read x/%u\n", 18, "a", &a, err, sizeof err), 0);
	CU_ASSERT_EQUAL_FATAL(acl_client_new(a, "bob", "c", &cl), 0);
	acl_free(a);
	CU_ASSERT_TRUE(acl_client_check(cl, "x/bob", 5, R));
	CU_ASSERT_FALSE(acl_client_check(cl, "x/eve", 5, R));
	acl_client_free(cl);
}

static void test_no_acl_allows_everything(void)
{
	struct acl_client *cl = (struct acl_client *)1;
	CU_ASSERT_TRUE(acl_check(NULL, "u", "c", "a/b", 3, W));
	CU_ASSERT_EQUAL(acl_client_new(NULL, "u", "c", &cl), 0);
	CU_ASSERT_PTR_NULL(cl);
	CU_ASSERT_TRUE(acl_client_check(NULL, "a/b", 3, R));
	CU_ASSERT_EQUAL(acl_client_subscribe(NULL, "#", 1), ACL_SUB_ALL);
}

static void test_empty_acl_denies_everything(void)
{
	struct acl *a;
	char err[128];
	CU_ASSERT_EQUAL_FATAL(acl_parse("", 0, "a", &a, err, sizeof err), 0);
	CU_ASSERT_FALSE(acl_check(a, "u", "c", "a/b", 3, W));
	CU_ASSERT_FALSE(acl_check(a, NULL, "c", "a/b", 3, R));
	CU_ASSERT_FALSE(acl_check(a, "u", "c", "#", 1, S));
	acl_free(a);
}

/* Mosquitto reads "topic read" as the topic named "read". */
static void test_access_word_alone_is_a_topic(void)
{
	struct acl *a;
	char err[128];
	CU_ASSERT_EQUAL_FATAL(acl_parse("topic read\ntopic #\n", 19, "a", &a, err, sizeof err), 0);
	CU_ASSERT_TRUE(acl_check(a, NULL, "c", "read", 4, W));
	CU_ASSERT_TRUE(acl_check(a, NULL, "c", "x/y", 3, W)); /* "topic #": readwrite everything */
	acl_free(a);
}

struct bad_case {
	const char *text;
	const char *err;
};

static const struct bad_case bad_cases[] = {
	{"topic a\nfoo bar\n", "acl:2: unknown rule 'foo' (expected user, topic or pattern)"},
	{"user\n", "acl:1: missing user name after 'user'"},
	{"# c\n\ntopic\n", "acl:3: missing topic filter after 'topic'"},
	{"pattern  \n", "acl:1: missing topic filter after 'pattern'"},
	{"topic reed a/b\n", "acl:1: unknown access 'reed' (expected read, write, readwrite, subscribe or deny)"},
	{"topic read a/#/b\n", "acl:1: invalid topic filter 'a/#/b'"},
	{"user x\ntopic read a+/b\n", "acl:2: invalid topic filter 'a+/b'"},
	{"pattern write sensors/%u#\n", "acl:1: invalid topic filter 'sensors/%u#'"},
	{"topic a\0b\n", "acl:1: NUL byte in line"},
};

static void test_parse_errors_name_the_line(void)
{
	for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		struct acl *a = (struct acl *)1;
		char err[256];
		/* Lengths from the text, or 10 for the embedded-NUL case. */
		size_t len = i == 8 ? 10 : strlen(bad_cases[i].text);
		CU_ASSERT_EQUAL(acl_parse(bad_cases[i].text, len, "acl", &a, err, sizeof err), WISP_EINVAL);
		CU_ASSERT_PTR_NULL(a);
		if (strcmp(err, bad_cases[i].err) != 0)
			fprintf(stderr, "\ncase %zu: want %s\n         got  %s\n", i, bad_cases[i].err, err);
		CU_ASSERT_STRING_EQUAL(err, bad_cases[i].err);
	}
}

static void test_load_from_file(void)
{
	char path[] = "/tmp/wisp-test-acl-XXXXXX";
	int fd = mkstemp(path);
	CU_ASSERT_FATAL(fd != -1);
	CU_ASSERT_EQUAL(write(fd, rules, sizeof rules - 1), (ssize_t)(sizeof rules - 1));
	close(fd);
	struct acl *a;
	char err[256];
	CU_ASSERT_EQUAL_FATAL(acl_load(path, &a, err, sizeof err), 0);
	CU_ASSERT_TRUE(acl_check(a, "dashboard", "d", "sensors/a/b", 11, R));
	acl_free(a);
	unlink(path);
	CU_ASSERT_EQUAL(acl_load(path, &a, err, sizeof err), WISP_EIO);
}

#ifndef WISP_SOURCE_DIR
#define WISP_SOURCE_DIR "."
#endif

/* config/acl, the example secure.json uses, parses and means what it says. */
static void test_example_acl_file(void)
{
	struct acl *a;
	char err[256];
	int rc = acl_load(WISP_SOURCE_DIR "/config/acl", &a, err, sizeof err);
	if (rc)
		fprintf(stderr, "\n%s\n", err);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	CU_ASSERT_TRUE(acl_check(a, "sensor-01", "c", "sensors/sensor-01/temp", 22, W));
	CU_ASSERT_FALSE(acl_check(a, "sensor-01", "c", "sensors/sensor-02/temp", 22, W));
	CU_ASSERT_FALSE(acl_check(a, "sensor-01", "c", "sensors/sensor-02/temp", 22, R));
	CU_ASSERT_TRUE(acl_check(a, "dashboard", "d", "sensors/sensor-02/temp", 22, R));
	CU_ASSERT_FALSE(acl_check(a, "operator", "o", "commands/s/bootloader", 21, W));
	acl_free(a);
}

static void test_out_of_memory_at_every_allocation(void)
{
	size_t base = wisp_mem_used();
	int ok = 0;
	for (uint64_t k = 1; k < 300 && !ok; k++) {
		struct acl *a = NULL;
		struct acl_client *cl = NULL;
		char err[256];
		wisp_mem_fail_after(k, 0);
		int rc = acl_parse(rules, strlen(rules), "acl", &a, err, sizeof err);
		if (rc == 0)
			rc = acl_client_new(a, "dashboard", "d", &cl);
		wisp_mem_fail_after(0, 0);
		if (rc == 0) {
			ok = 1;
			CU_ASSERT_TRUE(acl_client_check(cl, "sensors/x", 9, R));
		} else {
			CU_ASSERT_EQUAL(rc, WISP_ENOMEM);
			CU_ASSERT_PTR_NULL(cl);
		}
		acl_client_free(cl);
		acl_free(a);
		CU_ASSERT_EQUAL(wisp_mem_used(), base);
	}
	CU_ASSERT_TRUE(ok);
}


/*
 * The filter algebra behind acl_client_subscribe against brute force: over
 * small filters and every name of up to 4 levels from {a, b, z, $x}, a read
 * rule R makes filter F "ALL" exactly when every name F matches R matches,
 * and "NEVER" exactly when no name matches both ('z' stands for any level
 * the filters do not mention).
 */
static size_t gen_filters(char out[][16], size_t max)
{
	static const char *const lv[] = {"a", "b", "+", "#", "$x"};
	size_t n = 0;
	for (size_t d = 1; d <= 3; d++) {
		size_t total = 1;
		for (size_t i = 0; i < d; i++)
			total *= 5;
		for (size_t k = 0; k < total && n < max; k++) {
			char buf[16] = "";
			size_t x = k;
			for (size_t i = 0; i < d; i++, x /= 5) {
				if (i)
					strcat(buf, "/");
				strcat(buf, lv[x % 5]);
			}
			if (topic_filter_valid(buf, strlen(buf)))
				strcpy(out[n++], buf);
		}
	}
	return n;
}

static size_t gen_names(char out[][16], size_t max)
{
	static const char *const lv[] = {"a", "b", "z", "$x"};
	size_t n = 0;
	for (size_t d = 1; d <= 4; d++) {
		size_t total = 1;
		for (size_t i = 0; i < d; i++)
			total *= 4;
		for (size_t k = 0; k < total && n < max; k++) {
			char buf[16] = "";
			size_t x = k;
			for (size_t i = 0; i < d; i++, x /= 4) {
				if (i)
					strcat(buf, "/");
				strcat(buf, lv[x % 4]);
			}
			strcpy(out[n++], buf);
		}
	}
	return n;
}

static void test_filter_algebra_against_brute_force(void)
{
	static char filters[200][16], names[400][16];
	size_t nf = gen_filters(filters, 200), nn = gen_names(names, 400);
	CU_ASSERT_FATAL(nf > 50 && nn == 340);
	size_t bad = 0;
	for (size_t r = 0; r < nf; r++) {
		char text[64];
		int tl = snprintf(text, sizeof text, "topic subscribe #\ntopic subscribe $x/#\ntopic read %s\n",
				  filters[r]);
		struct acl *a;
		struct acl_client *cl;
		char err[128];
		CU_ASSERT_EQUAL_FATAL(acl_parse(text, (size_t)tl, "gen", &a, err, sizeof err), 0);
		CU_ASSERT_EQUAL_FATAL(acl_client_new(a, NULL, "c", &cl), 0);
		for (size_t f = 0; f < nf; f++) {
			bool cover = true, overlap = false;
			const char *rf = filters[r], *ff = filters[f];
			for (size_t i = 0; i < nn; i++) {
				bool mf = topic_matches(ff, strlen(ff), names[i], strlen(names[i]));
				bool mr = topic_matches(rf, strlen(rf), names[i], strlen(names[i]));
				if (mf && !mr)
					cover = false;
				if (mf && mr)
					overlap = true;
			}
			enum acl_sub want = cover ? ACL_SUB_ALL : overlap ? ACL_SUB_FILTERED : ACL_SUB_NEVER;
			enum acl_sub got = acl_client_subscribe(cl, ff, strlen(ff));
			if (got != want && bad++ < 10)
				fprintf(stderr, "\nrule %s filter %s: want %d got %d\n", rf, ff, (int)want,
					(int)got);
		}
		acl_client_free(cl);
		acl_free(a);
	}
	CU_ASSERT_EQUAL(bad, 0);
}

static CU_TestInfo acl_tests[] = {
	{"rules x topics x access, %u/%c, deny, default deny", test_check_table},
	{"subscribe filter classification", test_subscribe_classification},
	{"client compiles only its rules", test_client_compiles_only_its_rules},
	{"client outlives acl (reload)", test_client_outlives_acl},
	{"no acl allows everything", test_no_acl_allows_everything},
	{"empty acl denies everything", test_empty_acl_denies_everything},
	{"access word alone is a topic", test_access_word_alone_is_a_topic},
	{"parse errors name the line", test_parse_errors_name_the_line},
	{"load from file", test_load_from_file},
	{"example config/acl", test_example_acl_file},
	{"out of memory at every allocation", test_out_of_memory_at_every_allocation},
	{"filter algebra against brute force", test_filter_algebra_against_brute_force},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"acl", suite_init, suite_cleanup, NULL, NULL, acl_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
