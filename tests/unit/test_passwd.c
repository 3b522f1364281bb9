/*
 * Password file: PBKDF2-SHA512 against a reference vector, hash/verify
 * round trips with small iteration counts, wrong passwords and users,
 * Mosquitto $7$ compatibility, malformed lines rejected with line numbers,
 * the success memo, and file round trip.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit_main.h"
#include "alloc.h"
#include "err.h"
#include "passwd.h"

/* Small counts keep the tests fast; the format carries the count. */
#define IT 7u

static struct passwd_db *parse_ok(const char *text)
{
	struct passwd_db *db = NULL;
	char err[256];
	int rc = passwd_parse(text, strlen(text), "pw", &db, err, sizeof err);
	if (rc)
		fprintf(stderr, "\nunexpected: %s\n", err);
	CU_ASSERT_EQUAL(rc, 0);
	return db;
}

static bool check(struct passwd_db *db, const char *u, const char *p)
{
	return passwd_check(db, u, strlen(u), p, strlen(p));
}

/* PBKDF2-HMAC-SHA512 against an independent implementation. */
static void test_reference_vector(void)
{
	/* The classic vector's "salt" is 4 bytes, shorter than we accept, so
	 * "saltsalt" with 1 iteration, computed independently with Python:
	 * hashlib.pbkdf2_hmac('sha512', b'password', b'saltsalt', 1) */
	static const char doc[] =
		"u:$pbkdf2-sha512$1$c2FsdHNhbHQ=$"
		"y99Aqyh+xt2ovbJvGRltovGpWf8SfKJATk5ELfdRhStwvGAd6YSOUD0tNyMyqMpAiaYf7puolRhDkqtkfsdXOA==\n";
	struct passwd_db *db = parse_ok(doc);
	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_TRUE(passwd_verify(db, "u", 1, "password", 8));
	CU_ASSERT_FALSE(passwd_verify(db, "u", 1, "Password", 8));
	passwd_free(db);
}

static void test_hash_then_verify(void)
{
	static const struct {
		const char *password;
	} cases[] = {{"s3cret"}, {""}, {"pässwörd ✓"}, {"a very long password that is longer than "
							  "the 128 byte SHA-512 block so HMAC has to "
							  "hash the key first......................."}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char enc[PASSWD_ENCODED_MAX], line[PASSWD_LINE_MAX];
		const char *pw = cases[i].password;
		int n = passwd_hash(pw, strlen(pw), IT, enc, sizeof enc);
		CU_ASSERT_FATAL(n > 0);
		CU_ASSERT_EQUAL((size_t)n, strlen(enc));
		CU_ASSERT_EQUAL(strncmp(enc, "$pbkdf2-sha512$7$", 17), 0);
		snprintf(line, sizeof line, "alice:%s\n", enc);
		struct passwd_db *db = parse_ok(line);
		CU_ASSERT_PTR_NOT_NULL_FATAL(db);
		CU_ASSERT_TRUE(passwd_verify(db, "alice", 5, pw, strlen(pw)));
		CU_ASSERT_FALSE(passwd_verify(db, "alice", 5, "wrong", 5));
		if (strlen(pw))
			CU_ASSERT_FALSE(passwd_verify(db, "alice", 5, pw, strlen(pw) - 1));
		CU_ASSERT_FALSE(passwd_verify(db, "alice", 5, "x", 1));
		CU_ASSERT_FALSE(passwd_verify(db, "bob", 3, pw, strlen(pw)));
		CU_ASSERT_FALSE(passwd_verify(db, "alic", 4, pw, strlen(pw)));
		passwd_free(db);
	}
}

static void test_salts_differ(void)
{
	char a[PASSWD_ENCODED_MAX], b[PASSWD_ENCODED_MAX];
	CU_ASSERT(passwd_hash("same", 4, IT, a, sizeof a) > 0);
	CU_ASSERT(passwd_hash("same", 4, IT, b, sizeof b) > 0);
	CU_ASSERT_STRING_NOT_EQUAL(a, b);
}

static void test_hash_rejects_bad_arguments(void)
{
	char out[PASSWD_ENCODED_MAX];
	CU_ASSERT_EQUAL(passwd_hash("x", 1, 0, out, sizeof out), WISP_EINVAL);
	CU_ASSERT_EQUAL(passwd_hash("x", 1, PASSWD_ITERATIONS_MAX + 1, out, sizeof out), WISP_EINVAL);
	CU_ASSERT_EQUAL(passwd_hash("x", 1, IT, out, 20), WISP_ELIMIT);
	CU_ASSERT_STRING_EQUAL(out, "");
}

static void test_binary_password_with_nul(void)
{
	static const char pw[] = {'a', '\0', 'b'};
	char enc[PASSWD_ENCODED_MAX], line[PASSWD_LINE_MAX];
	CU_ASSERT_FATAL(passwd_hash(pw, sizeof pw, IT, enc, sizeof enc) > 0);
	snprintf(line, sizeof line, "dev:%s", enc); /* no final newline */
	struct passwd_db *db = parse_ok(line);
	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_TRUE(passwd_verify(db, "dev", 3, pw, sizeof pw));
	CU_ASSERT_FALSE(passwd_verify(db, "dev", 3, pw, 1)); /* not cut at the NUL */
	passwd_free(db);
}

/* Made with: mosquitto_passwd -c -b mp mosq 'secret pw' (Mosquitto 2.0). */
static void test_mosquitto_pbkdf2_lines_are_accepted(void)
{
	static const char doc[] =
		"mosq:$7$101$fs3EZWh6x0tAZi+3$Hn5xzGGarve+jMubKeYoRuGA9wzT2HuHokjaJWBKABYz1wjshF743rVJ"
		"ctj4j/iyRn2PMz1YCNQpaye1zxuxEA==\n";
	struct passwd_db *db = parse_ok(doc);
	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_TRUE(check(db, "mosq", "secret pw"));
	CU_ASSERT_FALSE(check(db, "mosq", "secret"));
	passwd_free(db);
}

struct bad_case {
	const char *text;
	const char *err;
};

static const struct bad_case bad_cases[] = {
	{"alice\n", "pw:1: missing ':' between user name and password hash"},
	{"# users\n\n:$pbkdf2-sha512$1$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n", "pw:3: empty user name"},
	{"alice:hunter2\n",
	 "pw:1: user 'alice': not a $pbkdf2-sha512$ hash (a plain-text password? run wisp_passwd -U)"},
	{"bob:$6$c2FsdA==$aGFzaA==\n",
	 "pw:1: user 'bob': mosquitto $6$ hashes (one round of SHA-512) are too weak; set the "
	 "password again with wisp_passwd"},
	{"a:$pbkdf2-sha512$\n", "pw:1: user 'a': expected <iterations>$<salt>$<hash> after the prefix"},
	{"a:$pbkdf2-sha512$$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n", "pw:1: user 'a': missing iteration count"},
	{"a:$pbkdf2-sha512$0$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
	 "pw:1: user 'a': iteration count must be 1 to 10000000"},
	{"a:$pbkdf2-sha512$10000001$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
	 "pw:1: user 'a': iteration count must be 1 to 10000000"},
	{"a:$pbkdf2-sha512$99999999999999999999999$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
	 "pw:1: user 'a': iteration count must be 1 to 10000000"},
	{"a:$pbkdf2-sha512$1x$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
	 "pw:1: user 'a': iteration count must be 1 to 10000000"},
	{"a:$pbkdf2-sha512$5$c2FsdA==$c2FsdHNhbHRzYWx0c2FsdA==\n",
	 "pw:1: user 'a': salt must be base64 of 8 to 64 bytes"},
	{"a:$pbkdf2-sha512$5$c2FsdHNh!HQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
	 "pw:1: user 'a': salt must be base64 of 8 to 64 bytes"},
	{"a:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdA==\n",
	 "pw:1: user 'a': hash must be base64 of 16 to 64 bytes"},
	{"a:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==x\n",
	 "pw:1: user 'a': hash must be base64 of 16 to 64 bytes"},
	{"a:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\r\n"
	 "b:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n"
	 "a:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
	 "pw:3: user 'a' appears twice"},
	{"a\tb:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
	 "pw:1: control character in user name"},
};

static void test_malformed_lines_rejected_with_line_numbers(void)
{
	for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		struct passwd_db *db = (struct passwd_db *)1;
		char err[512];
		int rc = passwd_parse(bad_cases[i].text, strlen(bad_cases[i].text), "pw", &db, err,
				      sizeof err);
		CU_ASSERT_EQUAL(rc, WISP_EINVAL);
		CU_ASSERT_PTR_NULL(db);
		if (strcmp(err, bad_cases[i].err) != 0)
			fprintf(stderr, "\ncase %zu: want %s\n         got  %s\n", i, bad_cases[i].err, err);
		CU_ASSERT_STRING_EQUAL(err, bad_cases[i].err);
	}
}

static void test_comments_blank_lines_and_crlf(void)
{
	static const char doc[] = "# comment\r\n\r\n   \n"
				  "a:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\r\n"
				  "b:$7$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==";
	struct passwd_db *db = parse_ok(doc);
	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_EQUAL(passwd_count(db), 2);
	CU_ASSERT_TRUE(passwd_has_user(db, "a", 1));
	CU_ASSERT_TRUE(passwd_has_user(db, "b", 1));
	CU_ASSERT_FALSE(passwd_has_user(db, "c", 1));
	passwd_free(db);

	db = parse_ok("");
	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_EQUAL(passwd_count(db), 0);
	CU_ASSERT_FALSE(check(db, "a", "b"));
	passwd_free(db);
}

static void test_memo_accepts_same_password_and_never_a_different_one(void)
{
	char enc[PASSWD_ENCODED_MAX], line[PASSWD_LINE_MAX];
	CU_ASSERT_FATAL(passwd_hash("right", 5, IT, enc, sizeof enc) > 0);
	snprintf(line, sizeof line, "s1:%s\n", enc);
	struct passwd_db *db = parse_ok(line);
	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_FALSE(check(db, "s1", "wrong"));
	CU_ASSERT_TRUE(check(db, "s1", "right"));
	CU_ASSERT_TRUE(check(db, "s1", "right")); /* from the memo */
	CU_ASSERT_FALSE(check(db, "s1", "wrong"));
	CU_ASSERT_FALSE(check(db, "s1", "righ"));
	CU_ASSERT_FALSE(check(db, "s2", "right"));
	CU_ASSERT_FALSE(passwd_check(db, "s1", 2, NULL, 3));
	passwd_free(db);
}

/* Many users: the table grows and every user is still found. */
static void test_many_users_round_trip_through_a_file(void)
{
	enum { N = 300 };
	char path[] = "/tmp/wisp-test-passwd-XXXXXX";
	int fd = mkstemp(path);
	CU_ASSERT_FATAL(fd != -1);
	FILE *fp = fdopen(fd, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
	char enc[PASSWD_ENCODED_MAX];
	CU_ASSERT_FATAL(passwd_hash("pw", 2, 1, enc, sizeof enc) > 0);
	for (int i = 0; i < N; i++)
		fprintf(fp, "user%d:%s\n", i, enc);
	fclose(fp);

	struct passwd_db *db;
	char err[256];
	CU_ASSERT_EQUAL_FATAL(passwd_load(path, &db, err, sizeof err), 0);
	CU_ASSERT_EQUAL(passwd_count(db), N);
	for (int i = 0; i < N; i++) {
		char u[16];
		int n = snprintf(u, sizeof u, "user%d", i);
		CU_ASSERT_TRUE(passwd_has_user(db, u, (size_t)n));
	}
	CU_ASSERT_TRUE(check(db, "user299", "pw"));
	CU_ASSERT_FALSE(check(db, "user300", "pw"));
	passwd_free(db);
	unlink(path);

	CU_ASSERT_EQUAL(passwd_load(path, &db, err, sizeof err), WISP_EIO);
	char want[128];
	snprintf(want, sizeof want, "%s: No such file or directory", path);
	CU_ASSERT_STRING_EQUAL(err, want);
}

#ifndef WISP_SOURCE_DIR
#define WISP_SOURCE_DIR "."
#endif

/* config/passwd, the example secure.json uses, loads (not verified here:
 * it has the real default of 210000 iterations). */
static void test_example_passwd_file(void)
{
	struct passwd_db *db;
	char err[256];
	int rc = passwd_load(WISP_SOURCE_DIR "/config/passwd", &db, err, sizeof err);
	if (rc)
		fprintf(stderr, "\n%s\n", err);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	CU_ASSERT_EQUAL(passwd_count(db), 4);
	CU_ASSERT_TRUE(passwd_has_user(db, "sensor-01", 9));
	passwd_free(db);
}

static void test_check_line_for_upgrade(void)
{
	char err[256];
	CU_ASSERT_EQUAL(passwd_check_line("a:$7$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==", 44, err,
					  sizeof err),
			0);
	CU_ASSERT_EQUAL(passwd_check_line("a:plain", 7, err, sizeof err), WISP_EINVAL);
}

/* An unknown user is verified at the highest iteration count in the file,
 * wherever that line is, so a refusal for a user that does not exist takes
 * as long as one for the dearest user that does (no enumeration by timing). */
static void test_unknown_user_costs_the_highest_iteration_count(void)
{
	static const struct {
		const char *doc;
		unsigned want;
	} cases[] = {
		{"", 0},
		{"a:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n", 5},
		{"a:$pbkdf2-sha512$1$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n"
		 "b:$7$900$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n"
		 "c:$pbkdf2-sha512$3$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
		 900},
		{"# the dearest user last\n"
		 "a:$pbkdf2-sha512$2$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n"
		 "b:$pbkdf2-sha512$40$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
		 40},
		{"a:$pbkdf2-sha512$70$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n"
		 "b:$pbkdf2-sha512$8$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
		 70},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct passwd_db *db = parse_ok(cases[i].doc);
		CU_ASSERT_PTR_NOT_NULL_FATAL(db);
		CU_ASSERT_EQUAL(passwd_unknown_user_iterations(db), cases[i].want);
		CU_ASSERT_FALSE(passwd_verify(db, "nobody", 6, "x", 1));
		passwd_free(db);
	}
}

/* What wisp_passwd must refuse: user names the loader cannot read back. */
static void test_user_names_the_loader_cannot_read_back(void)
{
	static const struct {
		const char *user;
		const char *err; /* NULL: accepted */
	} cases[] = {
		{"alice", NULL},
		{"a#b", NULL},
		{" alice", NULL},
		{"#alice", "user name starts with '#' (the line would be read as a comment)"},
		{"", "empty user name"},
		{"a:b", "':' in user name (it ends the name in the file)"},
		{"a\nb", "control character in user name"},
		{"a\rb", "control character in user name"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char err[128] = "";
		int rc = passwd_check_username(cases[i].user, strlen(cases[i].user), err, sizeof err);
		if (!cases[i].err) {
			CU_ASSERT_EQUAL(rc, 0);
			/* and the loader really reads it back */
			char line[PASSWD_LINE_MAX];
			snprintf(line, sizeof line, "%s:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n",
				 cases[i].user);
			struct passwd_db *db = parse_ok(line);
			CU_ASSERT_PTR_NOT_NULL_FATAL(db);
			CU_ASSERT_TRUE(passwd_has_user(db, cases[i].user, strlen(cases[i].user)));
			passwd_free(db);
		} else {
			CU_ASSERT_EQUAL(rc, WISP_EINVAL);
			CU_ASSERT_STRING_EQUAL(err, cases[i].err);
		}
	}
	char long_name[PASSWD_USERNAME_MAX + 2];
	memset(long_name, 'x', sizeof long_name - 1);
	long_name[sizeof long_name - 1] = '\0';
	char err[128];
	CU_ASSERT_EQUAL(passwd_check_username(long_name, strlen(long_name), err, sizeof err), WISP_EINVAL);
	CU_ASSERT_EQUAL(passwd_check_username(long_name, PASSWD_USERNAME_MAX, err, sizeof err), 0);
}

static void test_out_of_memory_at_every_allocation(void)
{
	char doc[4096];
	size_t n = 0;
	for (int i = 0; i < 20; i++)
		n += (size_t)snprintf(doc + n, sizeof doc - n,
				      "u%d:$pbkdf2-sha512$5$c2FsdHNhbHQ=$c2FsdHNhbHRzYWx0c2FsdA==\n", i);
	size_t base = wisp_mem_used();
	int ok = 0;
	for (uint64_t k = 1; k < 200 && !ok; k++) {
		struct passwd_db *db = NULL;
		char err[256];
		wisp_mem_fail_after(k, 0);
		int rc = passwd_parse(doc, n, "pw", &db, err, sizeof err);
		wisp_mem_fail_after(0, 0);
		if (rc == 0) {
			ok = 1;
			CU_ASSERT_EQUAL(passwd_count(db), 20);
			passwd_free(db);
		} else {
			CU_ASSERT_EQUAL(rc, WISP_ENOMEM);
			CU_ASSERT_PTR_NULL(db);
		}
		CU_ASSERT_EQUAL(wisp_mem_used(), base);
	}
	CU_ASSERT_TRUE(ok);
}

static CU_TestInfo passwd_tests[] = {
	{"PBKDF2-SHA512 reference vector", test_reference_vector},
	{"hash then verify; wrong password and user refused", test_hash_then_verify},
	{"salts differ", test_salts_differ},
	{"hash rejects bad arguments", test_hash_rejects_bad_arguments},
	{"binary password with NUL", test_binary_password_with_nul},
	{"mosquitto $7$ lines accepted", test_mosquitto_pbkdf2_lines_are_accepted},
	{"malformed lines rejected with line numbers", test_malformed_lines_rejected_with_line_numbers},
	{"comments, blank lines and CRLF", test_comments_blank_lines_and_crlf},
	{"memo accepts same password, never a different one",
	 test_memo_accepts_same_password_and_never_a_different_one},
	{"many users round trip through a file", test_many_users_round_trip_through_a_file},
	{"check_line tells hashed from plain", test_check_line_for_upgrade},
	{"example config/passwd", test_example_passwd_file},
	{"unknown user costs the highest iteration count", test_unknown_user_costs_the_highest_iteration_count},
	{"user names the loader cannot read back", test_user_names_the_loader_cannot_read_back},
	{"out of memory at every allocation", test_out_of_memory_at_every_allocation},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"passwd", NULL, NULL, NULL, NULL, passwd_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
