/*
 * cluster/nats_auth.c: the NKey signer (seed files, .creds files, the
 * signatures nats-server checks) and the URLs logs show.
 */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "config.h"
#include "err.h"
#include "nats_auth.h"
#include "unit_main.h"

static char dir[] = "/tmp/wisp-test-nats-auth-XXXXXX";
static char seed_path[64], creds_path[64], bad_path[64];
static char public_key[64], seed[64];
static EVP_PKEY *pkey;

static uint16_t crc16(const uint8_t *p, size_t n)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
	}
	return crc;
}

/* nats-io/nkeys's encoding: base32 (no padding) of prefix, key, CRC-16. */
static void nkey_encode(const uint8_t *prefix, size_t plen, const uint8_t key[32], char *out)
{
	uint8_t raw[40];
	memcpy(raw, prefix, plen);
	memcpy(raw + plen, key, 32);
	uint16_t crc = crc16(raw, plen + 32);
	raw[plen + 32] = (uint8_t)crc;
	raw[plen + 33] = (uint8_t)(crc >> 8);
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	uint32_t acc = 0;
	unsigned bits = 0;
	for (size_t i = 0; i < plen + 34; i++) {
		acc = acc << 8 | raw[i];
		for (bits += 8; bits >= 5;)
			*out++ = a[(acc >> (bits -= 5)) & 31];
	}
	if (bits)
		*out++ = a[(acc << (5 - bits)) & 31];
	*out = '\0';
}

static int write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static int suite_init(void)
{
	if (!mkdtemp(dir))
		return -1;
	uint8_t sk[32], pk[32];
	size_t pklen = sizeof pk;
	if (RAND_bytes(sk, sizeof sk) != 1 ||
	    !(pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, sk, sizeof sk)) ||
	    EVP_PKEY_get_raw_public_key(pkey, pk, &pklen) != 1)
		return -1;
	const uint8_t user = 20 << 3, seed_prefix[2] = {(18 << 3) | (20 << 3) >> 5, ((20 << 3) & 31) << 3};
	nkey_encode(&user, 1, pk, public_key);
	nkey_encode(seed_prefix, 2, sk, seed);
	snprintf(seed_path, sizeof seed_path, "%s/user.nk", dir);
	snprintf(creds_path, sizeof creds_path, "%s/user.creds", dir);
	snprintf(bad_path, sizeof bad_path, "%s/bad", dir);
	char creds[512];
	snprintf(creds, sizeof creds,
		 "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.sig\n------END NATS USER JWT------\n\n"
		 "************************* IMPORTANT *************************\n\n"
		 "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n", seed);
	char line[80];
	snprintf(line, sizeof line, "%s\n", seed);
	return write_text(seed_path, line) || write_text(creds_path, creds) ||
	       write_text(bad_path, "not a seed\n");
}

static int suite_cleanup(void)
{
	EVP_PKEY_free(pkey);
	unlink(seed_path);
	unlink(creds_path);
	unlink(bad_path);
	return rmdir(dir);
}

/* libnats 3.4's nats_Sign gets about one nonce in 200 wrong (found by this
 * comparison with libcrypto): every one of ours verifies. */
static void test_signatures_verify_for_every_nonce(void)
{
	struct config_cluster cfg = {.nkey = public_key, .nkey_seed = seed_path};
	struct nats_signer *s = NULL;
	char err[256];
	CU_ASSERT_EQUAL_FATAL(nats_signer_load(&cfg, &s, err, sizeof err), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	int bad = 0;
	for (int i = 0; i < 2000; i++) {
		uint8_t r[11];
		char nonce[32];
		RAND_bytes(r, sizeof r);
		EVP_EncodeBlock((unsigned char *)nonce, r, sizeof r); /* nats-server's are base64 too */
		unsigned char sig[64];
		CU_ASSERT_EQUAL_FATAL(nats_signer_sign(s, nonce, sig), 0);
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) != 1 ||
		    EVP_DigestVerify(ctx, sig, sizeof sig, (const unsigned char *)nonce, strlen(nonce)) != 1)
			bad++;
		EVP_MD_CTX_free(ctx);
	}
	CU_ASSERT_EQUAL(bad, 0);
	nats_signer_free(s);
}

static void test_creds_file_gives_the_same_key(void)
{
	struct config_cluster cfg = {.credentials = creds_path};
	struct nats_signer *s = NULL;
	char err[256];
	CU_ASSERT_EQUAL_FATAL(nats_signer_load(&cfg, &s, err, sizeof err), 0);
	unsigned char sig[64];
	CU_ASSERT_EQUAL(nats_signer_sign(s, "nonce", sig), 0);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	CU_ASSERT_EQUAL(EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey), 1);
	CU_ASSERT_EQUAL(EVP_DigestVerify(ctx, sig, sizeof sig, (const unsigned char *)"nonce", 5), 1);
	EVP_MD_CTX_free(ctx);
	nats_signer_free(s);
}

static void test_bad_files_are_refused_with_key_file_and_reason(void)
{
	char other[64], want[256], err[256];
	memcpy(other, public_key, sizeof other);
	other[1] = other[1] == 'A' ? 'B' : 'A';
	struct {
		struct config_cluster cfg;
		const char *path, *key, *why;
	} cases[] = {
		{{.nkey = other, .nkey_seed = seed_path}, seed_path, "nkey_seed", "its public key is not cluster.nkey"},
		{{.nkey = public_key, .nkey_seed = bad_path}, bad_path, "nkey_seed",
		 "no user NKey seed (a line starting \"SU\")"},
		{{.credentials = bad_path}, bad_path, "credentials",
		 "not a .creds file (a user JWT and a user NKey seed block)"},
		{{.credentials = seed_path}, seed_path, "credentials",
		 "not a .creds file (a user JWT and a user NKey seed block)"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct nats_signer *s = (struct nats_signer *)1;
		CU_ASSERT_EQUAL(nats_signer_load(&cases[i].cfg, &s, err, sizeof err), WISP_ECONFIG);
		CU_ASSERT_PTR_NULL(s);
		snprintf(want, sizeof want, "cluster.%s: %s: %s", cases[i].key, cases[i].path, cases[i].why);
		CU_ASSERT_STRING_EQUAL(err, want);
	}
	/* A seed with one character changed fails its checksum. */
	char broken[80];
	snprintf(broken, sizeof broken, "%s\n", seed);
	broken[10] = broken[10] == 'A' ? 'B' : 'A';
	CU_ASSERT_EQUAL_FATAL(write_text(bad_path, broken), 0);
	struct config_cluster cfg = {.nkey = public_key, .nkey_seed = bad_path};
	struct nats_signer *s = NULL;
	CU_ASSERT_EQUAL(nats_signer_load(&cfg, &s, err, sizeof err), WISP_ECONFIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "checksum mismatch"));
	struct config_cluster none = {0};
	CU_ASSERT_EQUAL(nats_signer_load(&none, &s, err, sizeof err), 0);
	CU_ASSERT_PTR_NULL(s);
}

static void test_urls_are_logged_without_credentials(void)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"tls://alice:s3cr@t@h:4222,nats://tok@[::1]:4222,h2:1", "tls://***@h:4222,nats://***@[::1]:4222,h2:1"},
		{"nats://u:p@h/x@y", "nats://***@h/x@y"},
	};
	char out[128];
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		nats_urls_redacted(cases[i].in, out, sizeof out);
		CU_ASSERT_STRING_EQUAL(out, cases[i].out);
	}
	nats_urls_redacted("tls://alice:secret@host:4222", out, 12); /* cut, never overflowed */
	CU_ASSERT_EQUAL(strlen(out), 11);
}

static CU_TestInfo tests[] = {
	{"NKey signatures verify for every nonce", test_signatures_verify_for_every_nonce},
	{".creds file gives the same key", test_creds_file_gives_the_same_key},
	{"bad seed and creds files refused with key, file, reason", test_bad_files_are_refused_with_key_file_and_reason},
	{"URLs logged without user, password or token", test_urls_are_logged_without_credentials},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster nats_auth", suite_init, suite_cleanup, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
