/*
 * SCRAM-SHA-256 (auth/scram.c) against RFC 7677's example exchange, its
 * failures, the password file's $scram-sha-256$ entries, and the provider
 * table and step bound of auth/method.c.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/base64.h>

#include "alloc.h"
#include "err.h"
#include "method.h"
#include "passwd.h"
#include "scram.h"
#include "scram_client.h"
#include "unit_main.h"

/* RFC 7677 §3: user "user", password "pencil". */
#define RFC_CLIENT_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_SERVER_FIRST "r=rOprNGfwEbeRWgbNEkqO" RFC_SERVER_NONCE ",s=" RFC_SALT ",i=4096"
#define RFC_CLIENT_FINAL                                                                                    \
	"c=biws,r=rOprNGfwEbeRWgbNEkqO" RFC_SERVER_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static int rfc_nonce(char *out, size_t len)
{
	if (len != strlen(RFC_SERVER_NONCE))
		return WISP_EINVAL;
	memcpy(out, RFC_SERVER_NONCE, len);
	return 0;
}

/* A password file with "user" / "pencil" as RFC 7677 has them. */
static struct passwd_db *rfc_db(void)
{
	uint8_t salt[16], stored[32], server[32];
	size_t slen;
	CU_ASSERT_FATAL(mbedtls_base64_decode(salt, sizeof salt, &slen, (const unsigned char *)RFC_SALT,
					      strlen(RFC_SALT)) == 0);
	CU_ASSERT_FATAL(scram_keys("pencil", 6, salt, slen, 4096, stored, server) == 0);
	unsigned char k1[64], k2[64];
	size_t l1, l2;
	mbedtls_base64_encode(k1, sizeof k1, &l1, stored, sizeof stored);
	mbedtls_base64_encode(k2, sizeof k2, &l2, server, sizeof server);
	char line[256];
	snprintf(line, sizeof line, "user:$scram-sha-256$4096$" RFC_SALT "$%s$%s\n", (const char *)k1,
		 (const char *)k2);
	struct passwd_db *db = NULL;
	char err[256];
	CU_ASSERT_FATAL(passwd_parse(line, strlen(line), "rfc", &db, err, sizeof err) == 0);
	return db;
}

static const struct auth_in *in_of(const char *data, const char *user)
{
	static struct auth_in in;
	in = (struct auth_in){.user = user, .user_len = user ? strlen(user) : 0, .data = (const uint8_t *)data,
			      .len = strlen(data)};
	return &in;
}

static bool out_is(const struct auth_out *out, const char *text)
{
	return out->len == strlen(text) && memcmp(out->data, text, out->len) == 0;
}

static void test_rfc7677_exchange(void)
{
	struct passwd_db *db = rfc_db();
	struct auth_method_env env = {.db = db, .nonce = rfc_nonce};
	const struct auth_method *m = auth_method_find("SCRAM-SHA-256", 13);
	CU_ASSERT_FATAL(m == &scram_sha256_method);
	struct auth_exchange *x;
	struct auth_out out;
	enum auth_step r;
	CU_ASSERT_FATAL(auth_exchange_start(m, &env, in_of(RFC_CLIENT_FIRST, NULL), &out, &x, &r) == 0);
	CU_ASSERT_EQUAL(r, AUTH_STEP_CONTINUE);
	CU_ASSERT_TRUE(out_is(&out, RFC_SERVER_FIRST));
	r = auth_exchange_step(x, &env, (const uint8_t *)RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &out);
	CU_ASSERT_EQUAL(r, AUTH_STEP_SUCCESS);
	CU_ASSERT_TRUE(out_is(&out, RFC_SERVER_FINAL));
	CU_ASSERT_TRUE(out.user_len == 4 && memcmp(out.user, "user", 4) == 0);
	/* Done: any further step fails. */
	r = auth_exchange_step(x, &env, (const uint8_t *)RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &out);
	CU_ASSERT_EQUAL(r, AUTH_STEP_FAILURE);
	auth_exchange_free(x);
	passwd_free(db);
}

/* Runs client-first then `final` and returns the verdict of the last step. */
static enum auth_step exchange(struct passwd_db *db, const char *first, const char *user, const char *final,
			       struct auth_out *out)
{
	struct auth_method_env env = {.db = db, .nonce = rfc_nonce};
	struct auth_exchange *x;
	enum auth_step r;
	CU_ASSERT_FATAL(auth_exchange_start(&scram_sha256_method, &env, in_of(first, user), out, &x, &r) == 0);
	if (r != AUTH_STEP_CONTINUE)
		return r;
	r = auth_exchange_step(x, &env, (const uint8_t *)final, strlen(final), out);
	auth_exchange_free(x);
	return r;
}

static void test_failures(void)
{
	struct passwd_db *db = rfc_db();
	struct auth_out out;
	/* A wrong proof: bad credentials (0x86), as a wrong password in CONNECT. */
	const char *wrong = "c=biws,r=rOprNGfwEbeRWgbNEkqO" RFC_SERVER_NONCE
			    ",p=AHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
	CU_ASSERT_EQUAL(exchange(db, RFC_CLIENT_FIRST, NULL, wrong, &out), AUTH_STEP_FAILURE);
	CU_ASSERT_EQUAL(out.reason, AUTH_FAIL_BAD_CREDENTIALS);
	/* An unknown user gets a salt and fails like a wrong password. */
	CU_ASSERT_EQUAL(exchange(db, "n,,n=nobody,r=abc", NULL, "c=biws,r=abc" RFC_SERVER_NONCE ",p=" RFC_SALT RFC_SALT,
				 &out),
			AUTH_STEP_FAILURE);
	CU_ASSERT_EQUAL(out.reason, AUTH_FAIL_BAD_CREDENTIALS);
	/* Another nonce, or another channel binding header: not authorised. */
	const char *bad_nonce = "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
	CU_ASSERT_EQUAL(exchange(db, RFC_CLIENT_FIRST, NULL, bad_nonce, &out), AUTH_STEP_FAILURE);
	CU_ASSERT_EQUAL(out.reason, AUTH_FAIL_NOT_AUTHORIZED);
	const char *bad_cb = "c=eSws,r=rOprNGfwEbeRWgbNEkqO" RFC_SERVER_NONCE
			     ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
	CU_ASSERT_EQUAL(exchange(db, RFC_CLIENT_FIRST, NULL, bad_cb, &out), AUTH_STEP_FAILURE);
	/* Channel binding asked for ("p="), an authzid, a malformed first message. */
	CU_ASSERT_EQUAL(exchange(db, "p=tls-unique,,n=user,r=x", NULL, "", &out), AUTH_STEP_FAILURE);
	CU_ASSERT_EQUAL(exchange(db, "n,a=admin,n=user,r=x", NULL, "", &out), AUTH_STEP_FAILURE);
	CU_ASSERT_EQUAL(exchange(db, "n,,r=x,n=user", NULL, "", &out), AUTH_STEP_FAILURE);
	CU_ASSERT_EQUAL(exchange(db, "n,,n=us=41er,r=x", NULL, "", &out), AUTH_STEP_FAILURE);
	/* The MQTT User Name, when present, must name the SCRAM user. */
	CU_ASSERT_EQUAL(exchange(db, RFC_CLIENT_FIRST, "admin", RFC_CLIENT_FINAL, &out), AUTH_STEP_FAILURE);
	CU_ASSERT_EQUAL(out.reason, AUTH_FAIL_NOT_AUTHORIZED);
	CU_ASSERT_EQUAL(exchange(db, RFC_CLIENT_FIRST, "user", RFC_CLIENT_FINAL, &out), AUTH_STEP_SUCCESS);
	passwd_free(db);
}

/* saslname escapes: "=2C" is ',' and "=3D" is '=' (RFC 5802 §5.1). */
static void test_escaped_user_name(void)
{
	char line[256];
	CU_ASSERT_FATAL(passwd_hash_scram("pw", 2, 4096, line + 6, sizeof line - 6) > 0);
	memcpy(line, "a,b=c:", 6);
	struct passwd_db *db = NULL;
	char err[256];
	CU_ASSERT_FATAL(passwd_parse(line, strlen(line), "esc", &db, err, sizeof err) == 0);
	struct auth_method_env env = {.db = db, .nonce = rfc_nonce};
	struct auth_exchange *x;
	struct auth_out out;
	enum auth_step r;
	const char *bare = "n=a=2Cb=3Dc,r=cn";
	CU_ASSERT_FATAL(auth_exchange_start(&scram_sha256_method, &env, in_of("n,,n=a=2Cb=3Dc,r=cn", NULL), &out, &x,
					    &r) == 0);
	CU_ASSERT_EQUAL_FATAL(r, AUTH_STEP_CONTINUE);
	char final[256], v[128];
	CU_ASSERT_FATAL(scram_client_final("pw", bare, (const char *)out.data, out.len, final, sizeof final, v,
					   sizeof v) == 0);
	r = auth_exchange_step(x, &env, (const uint8_t *)final, strlen(final), &out);
	CU_ASSERT_EQUAL(r, AUTH_STEP_SUCCESS);
	CU_ASSERT_TRUE(out_is(&out, v));
	CU_ASSERT_TRUE(out.user_len == 5 && memcmp(out.user, "a,b=c", 5) == 0);
	auth_exchange_free(x);
	passwd_free(db);
}

/* The file form: parsed, used by passwd_verify for a password in CONNECT,
 * rejected when a key is missing; a PBKDF2-SHA512 user cannot use SCRAM. */
static void test_password_file_entries(void)
{
	char enc[PASSWD_ENCODED_MAX], line[2 * PASSWD_ENCODED_MAX + 16];
	CU_ASSERT_FATAL(passwd_hash_scram("secret", 6, 4096, enc, sizeof enc) > 0);
	CU_ASSERT_EQUAL(strncmp(enc, "$scram-sha-256$4096$", 20), 0);
	CU_ASSERT_EQUAL(passwd_hash_scram("secret", 6, 4095, enc + 0, 0), WISP_EINVAL); /* RFC 7677 §4 */
	char old[PASSWD_ENCODED_MAX];
	CU_ASSERT_FATAL(passwd_hash("secret", 6, 1000, old, sizeof old) > 0);
	snprintf(line, sizeof line, "s:%s\np:%s\n", enc, old);
	struct passwd_db *db = NULL;
	char err[256];
	CU_ASSERT_FATAL(passwd_parse(line, strlen(line), "mixed", &db, err, sizeof err) == 0);
	CU_ASSERT_TRUE(passwd_verify(db, "s", 1, "secret", 6));
	CU_ASSERT_FALSE(passwd_verify(db, "s", 1, "Secret", 6));
	struct passwd_scram cred;
	CU_ASSERT_TRUE(passwd_scram_get(db, "s", 1, &cred));
	CU_ASSERT_EQUAL(cred.iterations, 4096);
	CU_ASSERT_FALSE(passwd_scram_get(db, "p", 1, &cred));
	passwd_free(db);
	/* Without the ServerKey: refused, naming the form. */
	char *last = strrchr(enc, '$');
	*last = '\0';
	snprintf(line, sizeof line, "s:%s\n", enc);
	CU_ASSERT_EQUAL(passwd_parse(line, strlen(line), "short", &db, err, sizeof err), WISP_EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "short:1: user 's': expected <iterations>$<salt>$<StoredKey>$<ServerKey>"));
}

/* The table has the method by its exact name only (MQTT strings compare
 * byte for byte); an exchange is cut off after AUTH_EXCHANGE_MAX_STEPS. */
static int count_step_calls;
static enum auth_step echo_start(void *state, const struct auth_method_env *env, const struct auth_in *in,
				 struct auth_out *out)
{
	(void)state, (void)env, (void)in, (void)out;
	return AUTH_STEP_CONTINUE;
}
static enum auth_step echo_step(void *state, const struct auth_method_env *env, const uint8_t *d, size_t n,
				struct auth_out *out)
{
	(void)state, (void)env, (void)d, (void)n, (void)out;
	count_step_calls++;
	return AUTH_STEP_CONTINUE;
}
static void echo_end(void *state) { (void)state; }

static void test_table_and_step_bound(void)
{
	CU_ASSERT_PTR_NULL(auth_method_find("scram-sha-256", 13));
	CU_ASSERT_PTR_NULL(auth_method_find("SCRAM-SHA-1", 11));
	CU_ASSERT_PTR_NULL(auth_method_find("SCRAM-SHA-256-PLUS", 18));
	const struct auth_method endless = {"endless", 8, echo_start, echo_step, echo_end};
	struct auth_method_env env = {0};
	struct auth_exchange *x;
	struct auth_out out;
	enum auth_step r;
	CU_ASSERT_FATAL(auth_exchange_start(&endless, &env, in_of("", NULL), &out, &x, &r) == 0);
	for (unsigned i = 0; i < AUTH_EXCHANGE_MAX_STEPS; i++)
		CU_ASSERT_EQUAL(auth_exchange_step(x, &env, NULL, 0, &out), AUTH_STEP_CONTINUE);
	CU_ASSERT_EQUAL(auth_exchange_step(x, &env, NULL, 0, &out), AUTH_STEP_FAILURE);
	CU_ASSERT_EQUAL(out.reason, AUTH_FAIL_NOT_AUTHORIZED);
	CU_ASSERT_EQUAL(count_step_calls, AUTH_EXCHANGE_MAX_STEPS);
	auth_exchange_free(x);
}

/* Out of memory at the exchange's allocation: WISP_ENOMEM, nothing kept. */
static void test_out_of_memory(void)
{
	struct passwd_db *db = rfc_db();
	struct auth_method_env env = {.db = db, .nonce = rfc_nonce};
	struct auth_exchange *x = NULL;
	struct auth_out out;
	enum auth_step r;
	size_t base = wisp_mem_used();
	wisp_mem_fail_after(1, 0);
	CU_ASSERT_EQUAL(auth_exchange_start(&scram_sha256_method, &env, in_of(RFC_CLIENT_FIRST, NULL), &out, &x, &r),
			WISP_ENOMEM);
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_PTR_NULL(x);
	CU_ASSERT_EQUAL(wisp_mem_used(), base);
	passwd_free(db);
}

static CU_TestInfo scram_tests[] = {
	{"RFC 7677 example exchange, byte for byte", test_rfc7677_exchange},
	{"wrong proof 0x86, bad nonce/binding/user 0x87", test_failures},
	{"saslname escapes", test_escaped_user_name},
	{"password file $scram-sha-256$ entries", test_password_file_entries},
	{"method table and step bound", test_table_and_step_bound},
	{"out of memory", test_out_of_memory},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"scram", NULL, NULL, NULL, NULL, scram_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
