/*
 * Nettle's and libcrypto's multiplications behind mbed TLS's ECDH and ECDSA (net/tls_ecp.c):
 * RFC 7748's X25519 vectors (sections 5.2 and 6.1), the same result as mbed
 * TLS's own mbedtls_ecp_mul_restartable() for random scalars, its refusals
 * (low-order points, unclamped or out-of-range scalars) kept, and proof that
 * mbed TLS's public ECDH and ECDSA functions reach the fast path (the
 * archive rewrite in cmake/FindMbedTLS.cmake took effect) and still produce
 * signatures mbed TLS verifies.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>

#include "tls_ecp.h"
#include "unit_main.h"

#define RANDOM_ROUNDS 32

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

static void unhex(const char *hex, unsigned char *out, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned v = 0;
		CU_ASSERT_FATAL(sscanf(hex + 2 * i, "%2x", &v) == 1);
		out[i] = (unsigned char)v;
	}
}

/* X25519 through wisp_ecp_mul_restartable() and through mbed TLS's own
 * multiplication; both must give `want` (hex, RFC 7748 byte order). The
 * scalar is clamped first, as mbed TLS keeps its private keys. */
static void check_x25519(const char *scalar_hex, const char *u_hex, const char *want_hex)
{
	unsigned char k[32], u[32], want[32], got[32];
	unhex(scalar_hex, k, 32);
	unhex(u_hex, u, 32);
	unhex(want_hex, want, 32);
	k[0] &= 248;
	k[31] = (unsigned char)((k[31] & 127) | 64);

	mbedtls_ecp_group grp;
	mbedtls_ecp_point P, R_fast, R_ref;
	mbedtls_mpi d;
	mbedtls_ecp_group_init(&grp);
	mbedtls_ecp_point_init(&P);
	mbedtls_ecp_point_init(&R_fast);
	mbedtls_ecp_point_init(&R_ref);
	mbedtls_mpi_init(&d);
	CU_ASSERT_EQUAL_FATAL(mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_CURVE25519), 0);
	CU_ASSERT_EQUAL(mbedtls_mpi_read_binary_le(&d, k, 32), 0);
	CU_ASSERT_EQUAL(mbedtls_ecp_point_read_binary(&grp, &P, u, 32), 0);

	uint64_t before = tls_ecp_fast_count();
	CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(&grp, &R_fast, &d, &P, mbedtls_ctr_drbg_random, &drbg,
	                                         NULL), 0);
	CU_ASSERT_EQUAL(tls_ecp_fast_count(), before + 1);
	CU_ASSERT_EQUAL(mbedtls_ecp_mul_restartable(&grp, &R_ref, &d, &P, mbedtls_ctr_drbg_random, &drbg,
	                                            NULL), 0);
	CU_ASSERT_EQUAL(mbedtls_ecp_point_cmp(&R_fast, &R_ref), 0);
	size_t olen = 0;
	CU_ASSERT_EQUAL(mbedtls_ecp_point_write_binary(&grp, &R_fast, MBEDTLS_ECP_PF_UNCOMPRESSED, &olen,
	                                               got, sizeof got), 0);
	CU_ASSERT_EQUAL(olen, 32);
	CU_ASSERT_EQUAL(memcmp(got, want, 32), 0);

	mbedtls_mpi_free(&d);
	mbedtls_ecp_point_free(&R_ref);
	mbedtls_ecp_point_free(&R_fast);
	mbedtls_ecp_point_free(&P);
	mbedtls_ecp_group_free(&grp);
}

static void test_x25519_rfc7748_vectors(void)
{
	/* RFC 7748 5.2: the second u has bit 255 set, which X25519 ignores. */
	check_x25519("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
	             "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
	             "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
	check_x25519("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
	             "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
	             "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957");
	/* RFC 7748 6.1: Alice's and Bob's public keys (u = 9, the generator,
	 * Nettle's curve25519_mul_g) and their shared secret. */
	const char *nine = "0900000000000000000000000000000000000000000000000000000000000000";
	check_x25519("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", nine,
	             "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
	check_x25519("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", nine,
	             "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
	check_x25519("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
	             "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
	             "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
}

/* The path a TLS server takes: mbedtls_ecdh_gen_public() and
 * mbedtls_ecdh_compute_shared() in the rewritten ecdh.o. Both sides agree,
 * and each multiplication went through Nettle. */
static void test_x25519_ecdh_reaches_nettle_and_agrees(void)
{
	for (int i = 0; i < RANDOM_ROUNDS; i++) {
		mbedtls_ecp_group grp;
		mbedtls_mpi da, db, za, zb;
		mbedtls_ecp_point qa, qb;
		mbedtls_ecp_group_init(&grp);
		mbedtls_mpi_init(&da);
		mbedtls_mpi_init(&db);
		mbedtls_mpi_init(&za);
		mbedtls_mpi_init(&zb);
		mbedtls_ecp_point_init(&qa);
		mbedtls_ecp_point_init(&qb);
		CU_ASSERT_EQUAL_FATAL(mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_CURVE25519), 0);

		uint64_t before = tls_ecp_fast_count();
		CU_ASSERT_EQUAL(mbedtls_ecdh_gen_public(&grp, &da, &qa, mbedtls_ctr_drbg_random, &drbg), 0);
		CU_ASSERT_EQUAL(mbedtls_ecdh_gen_public(&grp, &db, &qb, mbedtls_ctr_drbg_random, &drbg), 0);
		CU_ASSERT_EQUAL(mbedtls_ecdh_compute_shared(&grp, &za, &qb, &da, mbedtls_ctr_drbg_random,
		                                            &drbg), 0);
		CU_ASSERT_EQUAL(mbedtls_ecdh_compute_shared(&grp, &zb, &qa, &db, mbedtls_ctr_drbg_random,
		                                            &drbg), 0);
		CU_ASSERT_EQUAL(tls_ecp_fast_count(), before + 4);
		CU_ASSERT_EQUAL(mbedtls_mpi_cmp_mpi(&za, &zb), 0);

		/* mbed TLS's own ladder gives the same public key and secret. */
		mbedtls_ecp_point ref;
		mbedtls_ecp_point_init(&ref);
		CU_ASSERT_EQUAL(mbedtls_ecp_mul_restartable(&grp, &ref, &da, &grp.G, mbedtls_ctr_drbg_random,
		                                            &drbg, NULL), 0);
		CU_ASSERT_EQUAL(mbedtls_ecp_point_cmp(&ref, &qa), 0);
		CU_ASSERT_EQUAL(mbedtls_ecp_mul_restartable(&grp, &ref, &da, &qb, mbedtls_ctr_drbg_random,
		                                            &drbg, NULL), 0);
		CU_ASSERT_EQUAL(mbedtls_mpi_cmp_mpi(&ref.X, &za), 0);
		mbedtls_ecp_point_free(&ref);

		mbedtls_ecp_point_free(&qb);
		mbedtls_ecp_point_free(&qa);
		mbedtls_mpi_free(&zb);
		mbedtls_mpi_free(&za);
		mbedtls_mpi_free(&db);
		mbedtls_mpi_free(&da);
		mbedtls_ecp_group_free(&grp);
	}
}

/* What mbed TLS refuses, the fast path refuses with the same error: a
 * low-order peer point (u = 0, u = 1: the shared secret would be fixed) and
 * an unclamped scalar. */
static void test_x25519_refusals_kept(void)
{
	mbedtls_ecp_group grp;
	mbedtls_ecp_point P, R;
	mbedtls_mpi d;
	mbedtls_ecp_group_init(&grp);
	mbedtls_ecp_point_init(&P);
	mbedtls_ecp_point_init(&R);
	mbedtls_mpi_init(&d);
	CU_ASSERT_EQUAL_FATAL(mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_CURVE25519), 0);
	CU_ASSERT_EQUAL(mbedtls_ecp_gen_privkey(&grp, &d, mbedtls_ctr_drbg_random, &drbg), 0);

	for (int u = 0; u <= 1; u++) {
		CU_ASSERT_EQUAL(mbedtls_mpi_lset(&P.X, u), 0);
		CU_ASSERT_EQUAL(mbedtls_mpi_lset(&P.Z, 1), 0);
		int want = mbedtls_ecp_mul_restartable(&grp, &R, &d, &P, mbedtls_ctr_drbg_random, &drbg, NULL);
		CU_ASSERT_NOT_EQUAL(want, 0);
		CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(&grp, &R, &d, &P, mbedtls_ctr_drbg_random, &drbg,
		                                         NULL), want);
	}
	CU_ASSERT_EQUAL(mbedtls_mpi_lset(&P.X, 9), 0);
	CU_ASSERT_EQUAL(mbedtls_mpi_set_bit(&d, 0, 1), 0); /* not a multiple of 8: unclamped */
	int want = mbedtls_ecp_mul_restartable(&grp, &R, &d, &P, mbedtls_ctr_drbg_random, &drbg, NULL);
	CU_ASSERT_NOT_EQUAL(want, 0);
	CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(&grp, &R, &d, &P, mbedtls_ctr_drbg_random, &drbg, NULL),
	                want);
	/* No random generator: mbed TLS 2.28.3 blinds with its own; Nettle
	 * needs none. Same result either way. */
	mbedtls_ecp_point R2;
	mbedtls_ecp_point_init(&R2);
	CU_ASSERT_EQUAL(mbedtls_mpi_set_bit(&d, 0, 0), 0);
	CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(&grp, &R, &d, &grp.G, NULL, NULL, NULL), 0);
	CU_ASSERT_EQUAL(mbedtls_ecp_mul_restartable(&grp, &R2, &d, &grp.G, NULL, NULL, NULL), 0);
	CU_ASSERT_EQUAL(mbedtls_ecp_point_cmp(&R, &R2), 0);
	mbedtls_ecp_point_free(&R2);

	mbedtls_mpi_free(&d);
	mbedtls_ecp_point_free(&R);
	mbedtls_ecp_point_free(&P);
	mbedtls_ecp_group_free(&grp);
}

static void check_p256_mul_g(mbedtls_ecp_group *grp, const mbedtls_mpi *k)
{
	mbedtls_ecp_point fast, ref;
	mbedtls_ecp_point_init(&fast);
	mbedtls_ecp_point_init(&ref);
	uint64_t before = tls_ecp_fast_count();
	CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(grp, &fast, k, &grp->G, mbedtls_ctr_drbg_random, &drbg,
	                                         NULL), 0);
	CU_ASSERT_EQUAL(tls_ecp_fast_count(), before + 1);
	CU_ASSERT_EQUAL(mbedtls_ecp_mul_restartable(grp, &ref, k, &grp->G, mbedtls_ctr_drbg_random, &drbg,
	                                            NULL), 0);
	CU_ASSERT_EQUAL(mbedtls_ecp_point_cmp(&fast, &ref), 0);
	CU_ASSERT_EQUAL(mbedtls_ecp_check_pubkey(grp, &fast), 0);
	mbedtls_ecp_point_free(&ref);
	mbedtls_ecp_point_free(&fast);
}

/* k*G on P-256 equals mbed TLS's for k = 1, 2, n-1 and random k; 2G is the
 * known point; k = 0 and k = n are refused as mbed TLS refuses them; k*P for
 * a point other than G (ECDHE's shared secret) equals mbed TLS's, and is
 * libcrypto's when the build has it. */
static void test_p256_mul_g_matches_mbedtls(void)
{
	mbedtls_ecp_group grp;
	mbedtls_mpi k;
	mbedtls_ecp_group_init(&grp);
	mbedtls_mpi_init(&k);
	CU_ASSERT_EQUAL_FATAL(mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1), 0);

	CU_ASSERT_EQUAL(mbedtls_mpi_lset(&k, 1), 0);
	check_p256_mul_g(&grp, &k);
	CU_ASSERT_EQUAL(mbedtls_mpi_lset(&k, 2), 0);
	check_p256_mul_g(&grp, &k);
	mbedtls_ecp_point two_g;
	mbedtls_ecp_point_init(&two_g);
	CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(&grp, &two_g, &k, &grp.G, mbedtls_ctr_drbg_random,
	                                         &drbg, NULL), 0);
	mbedtls_mpi x;
	mbedtls_mpi_init(&x);
	CU_ASSERT_EQUAL(mbedtls_mpi_read_string(&x, 16, "7CF27B188D034F7E8A52380304B51AC3"
	                                                "C08969E277F21B35A60B48FC47669978"), 0);
	CU_ASSERT_EQUAL(mbedtls_mpi_cmp_mpi(&two_g.X, &x), 0);
	mbedtls_mpi_free(&x);
	mbedtls_ecp_point_free(&two_g);
	CU_ASSERT_EQUAL(mbedtls_mpi_sub_int(&k, &grp.N, 1), 0);
	check_p256_mul_g(&grp, &k);
	for (int i = 0; i < RANDOM_ROUNDS; i++) {
		CU_ASSERT_EQUAL(mbedtls_ecp_gen_privkey(&grp, &k, mbedtls_ctr_drbg_random, &drbg), 0);
		check_p256_mul_g(&grp, &k);
	}

	mbedtls_ecp_point R;
	mbedtls_ecp_point_init(&R);
	CU_ASSERT_EQUAL(mbedtls_mpi_lset(&k, 0), 0);
	CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(&grp, &R, &k, &grp.G, mbedtls_ctr_drbg_random, &drbg,
	                                         NULL), MBEDTLS_ERR_ECP_INVALID_KEY);
	CU_ASSERT_EQUAL(mbedtls_mpi_copy(&k, &grp.N), 0);
	CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(&grp, &R, &k, &grp.G, mbedtls_ctr_drbg_random, &drbg,
	                                         NULL), MBEDTLS_ERR_ECP_INVALID_KEY);

	/* 2G is not G (an ECDHE peer's key): libcrypto multiplies it when it
	 * is there, else mbed TLS; the same point either way. */
	mbedtls_ecp_point P, ref;
	mbedtls_ecp_point_init(&P);
	mbedtls_ecp_point_init(&ref);
	CU_ASSERT_EQUAL(mbedtls_mpi_lset(&k, 2), 0);
	CU_ASSERT_EQUAL(mbedtls_ecp_mul(&grp, &P, &k, &grp.G, mbedtls_ctr_drbg_random, &drbg), 0);
	CU_ASSERT_EQUAL(mbedtls_mpi_lset(&k, 3), 0);
	uint64_t before = tls_ecp_fast_count();
	CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(&grp, &R, &k, &P, mbedtls_ctr_drbg_random, &drbg, NULL),
	                0);
	CU_ASSERT_EQUAL(tls_ecp_fast_count(), before + (tls_ecp_any_p256_point() ? 1 : 0));
	CU_ASSERT_EQUAL(mbedtls_ecp_mul(&grp, &ref, &k, &P, mbedtls_ctr_drbg_random, &drbg), 0);
	CU_ASSERT_EQUAL(mbedtls_ecp_point_cmp(&R, &ref), 0);
	/* Random scalars times random points agree with mbed TLS too. */
	for (int i = 0; i < RANDOM_ROUNDS; i++) {
		CU_ASSERT_EQUAL(mbedtls_ecp_gen_privkey(&grp, &k, mbedtls_ctr_drbg_random, &drbg), 0);
		CU_ASSERT_EQUAL(mbedtls_ecp_mul(&grp, &P, &k, &grp.G, mbedtls_ctr_drbg_random, &drbg), 0);
		CU_ASSERT_EQUAL(mbedtls_ecp_gen_privkey(&grp, &k, mbedtls_ctr_drbg_random, &drbg), 0);
		CU_ASSERT_EQUAL(wisp_ecp_mul_restartable(&grp, &R, &k, &P, mbedtls_ctr_drbg_random, &drbg,
		                                         NULL), 0);
		CU_ASSERT_EQUAL(mbedtls_ecp_mul(&grp, &ref, &k, &P, mbedtls_ctr_drbg_random, &drbg), 0);
		CU_ASSERT_EQUAL(mbedtls_ecp_point_cmp(&R, &ref), 0);
	}

	mbedtls_ecp_point_free(&ref);
	mbedtls_ecp_point_free(&P);
	mbedtls_ecp_point_free(&R);
	mbedtls_mpi_free(&k);
	mbedtls_ecp_group_free(&grp);
}

/* The server's signature (mbedtls_ecdsa_write_signature in the rewritten
 * ecdsa.o) goes through the fast path (libcrypto, else Nettle) and verifies
 * with mbed TLS's own code. */
static void test_ecdsa_p256_signs_through_nettle_and_verifies(void)
{
	mbedtls_ecdsa_context key;
	mbedtls_ecdsa_init(&key);
	CU_ASSERT_EQUAL_FATAL(mbedtls_ecdsa_genkey(&key, MBEDTLS_ECP_DP_SECP256R1,
	                                           mbedtls_ctr_drbg_random, &drbg), 0);
	for (int i = 0; i < RANDOM_ROUNDS; i++) {
		unsigned char hash[32], sig[MBEDTLS_ECDSA_MAX_LEN];
		size_t sig_len = 0;
		CU_ASSERT_EQUAL(mbedtls_ctr_drbg_random(&drbg, hash, sizeof hash), 0);
		uint64_t before = tls_ecp_fast_count();
		CU_ASSERT_EQUAL(mbedtls_ecdsa_write_signature(&key, MBEDTLS_MD_SHA256, hash, sizeof hash, sig,
		                                              &sig_len, mbedtls_ctr_drbg_random, &drbg), 0);
		CU_ASSERT(tls_ecp_fast_count() > before);
		CU_ASSERT_EQUAL(mbedtls_ecdsa_read_signature(&key, hash, sizeof hash, sig, sig_len), 0);
		hash[0] ^= 1;
		CU_ASSERT_EQUAL(mbedtls_ecdsa_read_signature(&key, hash, sizeof hash, sig, sig_len),
		                MBEDTLS_ERR_ECP_VERIFY_FAILED);
	}
	mbedtls_ecdsa_free(&key);
}

static CU_TestInfo tests[] = {
	{"X25519: RFC 7748 vectors, fast path and mbed TLS agree", test_x25519_rfc7748_vectors},
	{"X25519: mbed TLS's ECDH reaches Nettle, both sides agree",
	 test_x25519_ecdh_reaches_nettle_and_agrees},
	{"X25519: low-order points and unclamped scalars refused as mbed TLS does",
	 test_x25519_refusals_kept},
	{"P-256: k*G and k*P equal mbed TLS's, bad scalars refused",
	 test_p256_mul_g_matches_mbedtls},
	{"ECDSA P-256: signs through the fast path, verifies with mbed TLS",
	 test_ecdsa_p256_signs_through_nettle_and_verifies},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"tls ecp", suite_init, suite_cleanup, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
