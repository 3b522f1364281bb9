/*
 * libcrypto's AES-GCM behind mbed TLS's (net/tls_gcm.c): the GCM specification's
 * test cases 4 (AES-128) and 16 (AES-256) through mbed TLS's cipher layer, as
 * TLS records use it (proof that the rewrite of cipher.o took effect: a
 * counter, on a CPU with AES-NI and PCLMULQDQ); a forged tag refused with
 * no plaintext left; and the same bytes and tags as mbed TLS's own GCM for
 * random keys, nonces, additional data and lengths, in place or not, with
 * what libcrypto does not take (other nonce or tag lengths) left to mbed
 * TLS; records of two connections interleaved, each under its own key; and
 * records of a dozen connections in turn keep their contexts in the
 * thread's cache, keyed once per connection and direction.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/cipher.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/gcm.h>

#include "tls_gcm.h"
#include "unit_main.h"

#define RANDOM_ROUNDS 200
#define MAX_LEN 5000u

static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

static int suite_init(void)
{
	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);
	return mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0);
}

static int suite_cleanup(void)
{
	mbedtls_ctr_drbg_free(&drbg);
	mbedtls_entropy_free(&entropy);
	return 0;
}

static size_t unhex(const char *hex, unsigned char *out)
{
	size_t n = strlen(hex) / 2;
	for (size_t i = 0; i < n; i++) {
		unsigned v = 0;
		CU_ASSERT_FATAL(sscanf(hex + 2 * i, "%2x", &v) == 1);
		out[i] = (unsigned char)v;
	}
	return n;
}

/* McGrew and Viega, "The Galois/Counter Mode of Operation", test cases 4
 * and 16: the same plaintext, nonce and additional data under AES-128 and
 * AES-256 (checked against Python's cryptography as well). */
static const char *const TC_P =
	"d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
static const char *const TC_A = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
static const char *const TC_IV = "cafebabefacedbaddecaf888";

static void check_vector(mbedtls_cipher_type_t type, const char *key_hex, const char *c_hex,
                         const char *tag_hex)
{
	unsigned char key[32], p[64], a[32], iv[12], want[80], sealed[80], opened[64];
	size_t key_len = unhex(key_hex, key), p_len = unhex(TC_P, p), a_len = unhex(TC_A, a);
	unhex(TC_IV, iv);
	size_t c_len = unhex(c_hex, want);
	CU_ASSERT_EQUAL_FATAL(c_len, p_len);
	unhex(tag_hex, want + c_len);

	mbedtls_cipher_context_t enc, dec;
	mbedtls_cipher_init(&enc);
	mbedtls_cipher_init(&dec);
	CU_ASSERT_EQUAL_FATAL(mbedtls_cipher_setup(&enc, mbedtls_cipher_info_from_type(type)), 0);
	CU_ASSERT_EQUAL_FATAL(mbedtls_cipher_setup(&dec, mbedtls_cipher_info_from_type(type)), 0);
	CU_ASSERT_EQUAL(mbedtls_cipher_setkey(&enc, key, (int)(8 * key_len), MBEDTLS_ENCRYPT), 0);
	CU_ASSERT_EQUAL(mbedtls_cipher_setkey(&dec, key, (int)(8 * key_len), MBEDTLS_DECRYPT), 0);

	uint64_t before = tls_gcm_fast_count();
	size_t olen = 0;
	CU_ASSERT_EQUAL(mbedtls_cipher_auth_encrypt_ext(&enc, iv, sizeof iv, a, a_len, p, p_len, sealed,
	                                                sizeof sealed, &olen, 16), 0);
	CU_ASSERT_EQUAL(olen, p_len + 16);
	CU_ASSERT_EQUAL(memcmp(sealed, want, p_len + 16), 0);
	CU_ASSERT_EQUAL(mbedtls_cipher_auth_decrypt_ext(&dec, iv, sizeof iv, a, a_len, sealed,
	                                                p_len + 16, opened, sizeof opened, &olen, 16), 0);
	CU_ASSERT_EQUAL(olen, p_len);
	CU_ASSERT_EQUAL(memcmp(opened, p, p_len), 0);
	CU_ASSERT_EQUAL(tls_gcm_fast_count(), before + (tls_gcm_is_fast() ? 2 : 0));

	/* A forged tag: refused, and nothing of the plaintext is handed out. */
	sealed[p_len + 15] ^= 1;
	memset(opened, 0xaa, sizeof opened);
	CU_ASSERT_EQUAL(mbedtls_cipher_auth_decrypt_ext(&dec, iv, sizeof iv, a, a_len, sealed,
	                                                p_len + 16, opened, sizeof opened, &olen, 16),
	                MBEDTLS_ERR_CIPHER_AUTH_FAILED);
	for (size_t i = 0; i < p_len; i++)
		CU_ASSERT_EQUAL_FATAL(opened[i], 0);
	/* So is changed additional data (the record header). */
	sealed[p_len + 15] ^= 1;
	a[0] ^= 1;
	CU_ASSERT_EQUAL(mbedtls_cipher_auth_decrypt_ext(&dec, iv, sizeof iv, a, a_len, sealed,
	                                                p_len + 16, opened, sizeof opened, &olen, 16),
	                MBEDTLS_ERR_CIPHER_AUTH_FAILED);

	mbedtls_cipher_free(&dec);
	mbedtls_cipher_free(&enc);
}

static void test_gcm_spec_vectors_through_cipher_layer(void)
{
	check_vector(MBEDTLS_CIPHER_AES_128_GCM, "feffe9928665731c6d6a8f9467308308",
	             "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
	             "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
	             "5bc94fbc3221a5db94fae95ae7121a47");
	check_vector(MBEDTLS_CIPHER_AES_256_GCM,
	             "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
	             "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
	             "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
	             "76fc6ece0f4e1768cddf8853bb2d551b");
}

static unsigned char plain[MAX_LEN], mine[MAX_LEN], theirs[MAX_LEN];

/* Random cases against mbed TLS's own gcm.o; iv_len and tag_len other than
 * TLS's go to mbed TLS (the count stays) and agree trivially. */
static void test_gcm_matches_mbedtls(void)
{
	for (int i = 0; i < RANDOM_ROUNDS; i++) {
		unsigned char key[32], iv[16], ad[29], tag_mine[16], tag_theirs[16], r[4];
		CU_ASSERT_EQUAL(mbedtls_ctr_drbg_random(&drbg, key, sizeof key), 0);
		CU_ASSERT_EQUAL(mbedtls_ctr_drbg_random(&drbg, iv, sizeof iv), 0);
		CU_ASSERT_EQUAL(mbedtls_ctr_drbg_random(&drbg, ad, sizeof ad), 0);
		CU_ASSERT_EQUAL(mbedtls_ctr_drbg_random(&drbg, r, sizeof r), 0);
		size_t len = ((size_t)r[0] << 8 | r[1]) % MAX_LEN, ad_len = r[2] % sizeof ad;
		unsigned bits = (r[3] & 1) ? 256 : 128;
		size_t iv_len = i % 10 == 9 ? 16 : 12, tag_len = i % 10 == 8 ? 12 : 16;
		for (size_t at = 0; at < len; at += MBEDTLS_CTR_DRBG_MAX_REQUEST) {
			size_t n = len - at < MBEDTLS_CTR_DRBG_MAX_REQUEST ? len - at : MBEDTLS_CTR_DRBG_MAX_REQUEST;
			CU_ASSERT_EQUAL(mbedtls_ctr_drbg_random(&drbg, plain + at, n), 0);
		}

		mbedtls_gcm_context g;
		mbedtls_gcm_init(&g);
		CU_ASSERT_EQUAL_FATAL(mbedtls_gcm_setkey(&g, MBEDTLS_CIPHER_ID_AES, key, bits), 0);
		bool fast = tls_gcm_is_fast() && iv_len == 12 && tag_len == 16;
		uint64_t before = tls_gcm_fast_count();
		CU_ASSERT_EQUAL(wisp_gcm_crypt_and_tag(&g, MBEDTLS_GCM_ENCRYPT, len, iv, iv_len, ad, ad_len,
		                                       plain, mine, tag_len, tag_mine), 0);
		CU_ASSERT_EQUAL(tls_gcm_fast_count(), before + (fast ? 1 : 0));
		CU_ASSERT_EQUAL(mbedtls_gcm_crypt_and_tag(&g, MBEDTLS_GCM_ENCRYPT, len, iv, iv_len, ad,
		                                          ad_len, plain, theirs, tag_len, tag_theirs), 0);
		CU_ASSERT_EQUAL(memcmp(mine, theirs, len), 0);
		CU_ASSERT_EQUAL(memcmp(tag_mine, tag_theirs, tag_len), 0);

		/* Decrypt mode tags the ciphertext, as mbed TLS does. */
		CU_ASSERT_EQUAL(wisp_gcm_crypt_and_tag(&g, MBEDTLS_GCM_DECRYPT, len, iv, iv_len, ad, ad_len,
		                                       theirs, mine, tag_len, tag_mine), 0);
		CU_ASSERT_EQUAL(memcmp(mine, plain, len), 0);
		CU_ASSERT_EQUAL(memcmp(tag_mine, tag_theirs, tag_len), 0);

		/* In place, as TLS opens its records. */
		memcpy(mine, theirs, len);
		CU_ASSERT_EQUAL(wisp_gcm_auth_decrypt(&g, len, iv, iv_len, ad, ad_len, tag_theirs, tag_len,
		                                      mine, mine), 0);
		CU_ASSERT_EQUAL(memcmp(mine, plain, len), 0);
		memcpy(mine, theirs, len);
		tag_mine[0] = (unsigned char)(tag_theirs[0] ^ 0x80);
		memcpy(tag_mine + 1, tag_theirs + 1, tag_len - 1);
		CU_ASSERT_EQUAL(wisp_gcm_auth_decrypt(&g, len, iv, iv_len, ad, ad_len, tag_mine, tag_len,
		                                      mine, mine), MBEDTLS_ERR_GCM_AUTH_FAILED);
		mbedtls_gcm_free(&g);
	}
}

/* Connections A and B (the same key length, then AES-128 against AES-256)
 * seal and open in the order A, A, B, A, B, B: each record must be what mbed
 * TLS's own GCM makes with that connection's key, and a record of A must
 * not open under B's key right after one of A's opened (the kept key is
 * compared, not the context pointer). */
static void test_gcm_interleaved_keys(void)
{
	static const int order[] = {0, 0, 1, 0, 1, 1};
	for (int round = 0; round < 2; round++) {
		mbedtls_gcm_context g[2];
		unsigned char key[2][32], iv[12], ad[13], tag[16], want_tag[16];
		unsigned char sealed[2][256], text[256], out[256];
		unsigned bits[2] = {128, round == 0 ? 128u : 256u};
		CU_ASSERT_EQUAL_FATAL(mbedtls_ctr_drbg_random(&drbg, &key[0][0], sizeof key), 0);
		CU_ASSERT_EQUAL_FATAL(mbedtls_ctr_drbg_random(&drbg, text, sizeof text), 0);
		CU_ASSERT_EQUAL_FATAL(mbedtls_ctr_drbg_random(&drbg, ad, sizeof ad), 0);
		unsigned char tags[2][16];
		for (int c = 0; c < 2; c++) {
			mbedtls_gcm_init(&g[c]);
			CU_ASSERT_EQUAL_FATAL(mbedtls_gcm_setkey(&g[c], MBEDTLS_CIPHER_ID_AES, key[c],
			                                         bits[c]), 0);
		}
		for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
			int c = order[i];
			memset(iv, (int)i, sizeof iv);
			uint64_t before = tls_gcm_fast_count();
			CU_ASSERT_EQUAL(wisp_gcm_crypt_and_tag(&g[c], MBEDTLS_GCM_ENCRYPT, sizeof text, iv,
			                                       sizeof iv, ad, sizeof ad, text, sealed[c],
			                                       sizeof tag, tags[c]), 0);
			CU_ASSERT_EQUAL(tls_gcm_fast_count(), before + (tls_gcm_is_fast() ? 1 : 0));
			CU_ASSERT_EQUAL(mbedtls_gcm_crypt_and_tag(&g[c], MBEDTLS_GCM_ENCRYPT, sizeof text, iv,
			                                          sizeof iv, ad, sizeof ad, text, out,
			                                          sizeof want_tag, want_tag), 0);
			CU_ASSERT_EQUAL(memcmp(sealed[c], out, sizeof out), 0);
			CU_ASSERT_EQUAL(memcmp(tags[c], want_tag, sizeof tag), 0);
			CU_ASSERT_EQUAL(wisp_gcm_auth_decrypt(&g[c], sizeof text, iv, sizeof iv, ad, sizeof ad,
			                                      tags[c], sizeof tag, sealed[c], out), 0);
			CU_ASSERT_EQUAL(memcmp(out, text, sizeof text), 0);
			/* The same record under the other connection's key: refused. */
			CU_ASSERT_EQUAL(wisp_gcm_auth_decrypt(&g[1 - c], sizeof text, iv, sizeof iv, ad,
			                                      sizeof ad, tags[c], sizeof tag, sealed[c], out),
			                MBEDTLS_ERR_GCM_AUTH_FAILED);
		}
		for (int c = 0; c < 2; c++)
			mbedtls_gcm_free(&g[c]);
	}
}

#define BUSY_CONNS 12
#define BUSY_ROUNDS 10

/*
 * Records of 12 connections in turn, as a loop turn serving 12 busy clients
 * makes them: each context keeps its key schedule in the thread's cache,
 * so the keys are set once per connection and direction, not per record
 * (0.25 us each). A connection forgotten (closed) is keyed again on its
 * next record; a context freed and set up again at the same address with
 * another key is not taken for the old one.
 */
static void test_gcm_contexts_cached_per_connection(void)
{
	if (!tls_gcm_is_fast())
		return; /* mbed TLS's own GCM: nothing cached */
	mbedtls_gcm_context g[BUSY_CONNS];
	unsigned char key[BUSY_CONNS][16], iv[12], ad[13], tag[16], want_tag[16];
	unsigned char text[512], sealed[512], out[512];
	CU_ASSERT_EQUAL_FATAL(mbedtls_ctr_drbg_random(&drbg, &key[0][0], sizeof key), 0);
	CU_ASSERT_EQUAL_FATAL(mbedtls_ctr_drbg_random(&drbg, text, sizeof text), 0);
	memset(ad, 7, sizeof ad);
	for (int c = 0; c < BUSY_CONNS; c++) {
		mbedtls_gcm_init(&g[c]);
		CU_ASSERT_EQUAL_FATAL(mbedtls_gcm_setkey(&g[c], MBEDTLS_CIPHER_ID_AES, key[c], 128), 0);
	}
	uint64_t rekeys = tls_gcm_rekey_count();
	for (int r = 0; r < BUSY_ROUNDS; r++) {
		for (int c = 0; c < BUSY_CONNS; c++) {
			memset(iv, r * BUSY_CONNS + c, sizeof iv);
			CU_ASSERT_EQUAL(wisp_gcm_crypt_and_tag(&g[c], MBEDTLS_GCM_ENCRYPT, sizeof text, iv,
			                                       sizeof iv, ad, sizeof ad, text, sealed,
			                                       sizeof tag, tag), 0);
			CU_ASSERT_EQUAL(wisp_gcm_auth_decrypt(&g[c], sizeof text, iv, sizeof iv, ad, sizeof ad,
			                                      tag, sizeof tag, sealed, out), 0);
			CU_ASSERT_EQUAL(memcmp(out, text, sizeof text), 0);
		}
	}
	/* Each connection's key set once per direction (a set of the cache
	 * could in principle take more than its ways: allow a little). */
	CU_ASSERT(tls_gcm_rekey_count() - rekeys <= 2 * BUSY_CONNS + 4);

	tls_gcm_forget(&g[0]);
	rekeys = tls_gcm_rekey_count();
	CU_ASSERT_EQUAL(wisp_gcm_crypt_and_tag(&g[0], MBEDTLS_GCM_ENCRYPT, sizeof text, iv, sizeof iv,
	                                       ad, sizeof ad, text, sealed, sizeof tag, tag), 0);
	CU_ASSERT_EQUAL(tls_gcm_rekey_count(), rekeys + 1);

	/* Same address, new key: sealed as mbed TLS seals it with the new key. */
	mbedtls_gcm_free(&g[1]);
	mbedtls_gcm_init(&g[1]);
	key[1][0] ^= 0x5a;
	CU_ASSERT_EQUAL_FATAL(mbedtls_gcm_setkey(&g[1], MBEDTLS_CIPHER_ID_AES, key[1], 128), 0);
	CU_ASSERT_EQUAL(wisp_gcm_crypt_and_tag(&g[1], MBEDTLS_GCM_ENCRYPT, sizeof text, iv, sizeof iv,
	                                       ad, sizeof ad, text, sealed, sizeof tag, tag), 0);
	CU_ASSERT_EQUAL(mbedtls_gcm_crypt_and_tag(&g[1], MBEDTLS_GCM_ENCRYPT, sizeof text, iv,
	                                          sizeof iv, ad, sizeof ad, text, out,
	                                          sizeof want_tag, want_tag), 0);
	CU_ASSERT_EQUAL(memcmp(sealed, out, sizeof out), 0);
	CU_ASSERT_EQUAL(memcmp(tag, want_tag, sizeof tag), 0);
	for (int c = 0; c < BUSY_CONNS; c++) {
		tls_gcm_forget(&g[c]);
		mbedtls_gcm_free(&g[c]);
	}
}

static CU_TestInfo tests[] = {
	{"GCM spec vectors 4 and 16 through mbed TLS's cipher layer reach libcrypto; forgeries refused",
	 test_gcm_spec_vectors_through_cipher_layer},
	{"random keys, nonces, data and lengths: the same bytes and tags as mbed TLS",
	 test_gcm_matches_mbedtls},
	{"two connections' records interleaved: each sealed and opened with its own key",
	 test_gcm_interleaved_keys},
	{"busy connections' records in turn: keys set once per connection, not per record",
	 test_gcm_contexts_cached_per_connection},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"tls gcm", suite_init, suite_cleanup, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
