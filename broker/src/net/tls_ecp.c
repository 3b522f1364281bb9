/*
 * Nettle's X25519, and libcrypto's P-256 (Nettle's fixed-base P-256 without
 * libcrypto), behind mbed TLS's ECDH and ECDSA (see tls_ecp.h for how and
 * why). Measured on the 2-core
 * Xeon VM, one operation, -O2: mbed TLS 2.28 takes 1,280 us for an X25519
 * key generation, 1,330 us for an X25519 shared secret and 700 us for the
 * P-256 k*G of a signature (830 us the whole signature); Nettle 3.8 takes
 * 60, 144 and about 60 us.
 *
 * Every conversion here is between fixed-size buffers (32 bytes, four
 * 64-bit limbs), so its time does not depend on the secret either; the
 * stack copies of scalars are wiped before returning.
 */
#include "tls_ecp.h"

#include <stdbool.h>
#include <string.h>

#include <mbedtls/platform_util.h>
#include <nettle/curve25519.h>
#include <nettle/ecc-curve.h>
#include <nettle/ecc.h>
#ifdef WISP_TLS_LIBCRYPTO
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#endif

#define P256_BYTES 32u
#define P256_LIMBS ((P256_BYTES + sizeof(mp_limb_t) - 1) / sizeof(mp_limb_t))

_Static_assert(CURVE25519_SIZE == 32, "X25519 works on 32-byte strings (RFC 7748)");

static uint64_t fast_count;

uint64_t tls_ecp_fast_count(void)
{
	return fast_count;
}

bool tls_ecp_any_p256_point(void)
{
#ifdef WISP_TLS_LIBCRYPTO
	return true;
#else
	return false;
#endif
}

/* RFC 7748 X25519: scalar and u-coordinate as 32-byte little-endian strings.
 * mbed TLS has already clamped m (mbedtls_ecp_check_privkey() refuses an
 * unclamped one) and cleared bit 255 of P->X when it read the peer's key;
 * Nettle does both again, as RFC 7748 says, which changes nothing. */
static int x25519(const mbedtls_ecp_group *grp, mbedtls_ecp_point *R, const mbedtls_mpi *m,
                  const mbedtls_ecp_point *P)
{
	unsigned char n[CURVE25519_SIZE], u[CURVE25519_SIZE], q[CURVE25519_SIZE];
	int ret = mbedtls_mpi_write_binary_le(m, n, sizeof n);
	if (ret != 0)
		goto out;
	if (mbedtls_mpi_cmp_mpi(&P->X, &grp->G.X) == 0) {
		curve25519_mul_g(q, n);
	} else {
		ret = mbedtls_mpi_write_binary_le(&P->X, u, sizeof u);
		if (ret != 0)
			goto out;
		curve25519_mul(q, n, u);
	}
	/* The form ecp_mul_mxz() leaves: X, Z = 1, no Y. */
	ret = mbedtls_mpi_read_binary_le(&R->X, q, sizeof q);
	if (ret == 0)
		ret = mbedtls_mpi_lset(&R->Z, 1);
	mbedtls_mpi_free(&R->Y);
	fast_count++;
out:
	mbedtls_platform_zeroize(n, sizeof n);
	mbedtls_platform_zeroize(q, sizeof q);
	return ret;
}

#ifndef WISP_TLS_LIBCRYPTO
static void limbs_from_be(mp_limb_t *limbs, const unsigned char *be, size_t len)
{
	memset(limbs, 0, P256_LIMBS * sizeof *limbs);
	for (size_t i = 0; i < len; i++) {
		size_t bit = 8 * (len - 1 - i);
		limbs[bit / (8 * sizeof(mp_limb_t))] |= (mp_limb_t)be[i]
		                                        << (bit % (8 * sizeof(mp_limb_t)));
	}
}

static void limbs_to_be(unsigned char *be, const mp_limb_t *limbs, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		size_t bit = 8 * (len - 1 - i);
		be[i] = (unsigned char)(limbs[bit / (8 * sizeof(mp_limb_t))] >>
		                        (bit % (8 * sizeof(mp_limb_t))));
	}
}

/* R = m*G on secp256r1, affine, as ecp_mul_comb() returns it (Z = 1).
 * mbedtls_ecp_check_privkey() has checked 1 <= m < n, the range Nettle's
 * ecc_point_mul_g() takes. The point and scalar live in stack limbs rather
 * than ecc_point_init()'s GMP allocations. */
static int p256_mul_g(mbedtls_ecp_point *R, const mbedtls_mpi *m)
{
	unsigned char buf[P256_BYTES];
	mp_limb_t k[P256_LIMBS], xy[2 * P256_LIMBS];
	const struct ecc_curve *curve = nettle_get_secp_256r1();
	struct ecc_scalar scalar = {.ecc = curve, .p = k};
	struct ecc_point point = {.ecc = curve, .p = xy};

	int ret = mbedtls_mpi_write_binary(m, buf, sizeof buf);
	if (ret != 0)
		goto out;
	limbs_from_be(k, buf, sizeof buf);
	ecc_point_mul_g(&point, &scalar);
	limbs_to_be(buf, xy, sizeof buf);
	ret = mbedtls_mpi_read_binary(&R->X, buf, sizeof buf);
	if (ret != 0)
		goto out;
	limbs_to_be(buf, xy + P256_LIMBS, sizeof buf);
	ret = mbedtls_mpi_read_binary(&R->Y, buf, sizeof buf);
	if (ret == 0)
		ret = mbedtls_mpi_lset(&R->Z, 1);
	fast_count++;
out:
	mbedtls_platform_zeroize(buf, sizeof buf);
	mbedtls_platform_zeroize(k, sizeof k);
	return ret;
}
#endif

#ifdef WISP_TLS_LIBCRYPTO
/*
 * R = m*P on secp256r1 by libcrypto (OpenSSL 3.0's ecp_nistz256: AVX2
 * field arithmetic, a precomputed table for G, constant-time windows for
 * both; measured 21 us for k*G against Nettle's 64 us, and a k*P for the
 * ECDHE shared secret in ~70 us against mbed TLS's ~700 us). P is mbed
 * TLS's, already checked to be on the curve (mbedtls_ecp_check_pubkey);
 * libcrypto checks it again when it takes the coordinates. The result is
 * affine, Z = 1, as mbed TLS's ecp_mul_comb() leaves it. The group is made
 * once per thread (EC_GROUP_new_by_curve_name costs more than a
 * multiplication's worth of setup) and lives as long as the thread.
 */
static _Thread_local EC_GROUP *p256_group;

static int p256_mul(mbedtls_ecp_point *R, const mbedtls_mpi *m, const mbedtls_ecp_point *P,
                    bool is_g)
{
	unsigned char buf[P256_BYTES];
	int ret = MBEDTLS_ERR_ECP_ALLOC_FAILED;
	if (!p256_group && !(p256_group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1)))
		return ret;
	BN_CTX *bn = BN_CTX_secure_new();
	EC_POINT *r = EC_POINT_new(p256_group), *p = is_g ? NULL : EC_POINT_new(p256_group);
	BIGNUM *k = BN_secure_new();
	if (!bn || !r || (!is_g && !p) || !k)
		goto out;
	BN_CTX_start(bn);
	BIGNUM *x = BN_CTX_get(bn), *y = BN_CTX_get(bn);
	if (!y)
		goto out;
	BN_set_flags(k, BN_FLG_CONSTTIME);
	ret = mbedtls_mpi_write_binary(m, buf, sizeof buf);
	if (ret != 0)
		goto out;
	ret = MBEDTLS_ERR_ECP_BAD_INPUT_DATA;
	if (!BN_bin2bn(buf, sizeof buf, k))
		goto out;
	if (!is_g) {
		if (mbedtls_mpi_write_binary(&P->X, buf, sizeof buf) != 0 ||
		    !BN_bin2bn(buf, sizeof buf, x) ||
		    mbedtls_mpi_write_binary(&P->Y, buf, sizeof buf) != 0 ||
		    !BN_bin2bn(buf, sizeof buf, y) ||
		    !EC_POINT_set_affine_coordinates(p256_group, p, x, y, bn))
			goto out;
	}
	if (!EC_POINT_mul(p256_group, r, is_g ? k : NULL, p, is_g ? NULL : k, bn) ||
	    !EC_POINT_get_affine_coordinates(p256_group, r, x, y, bn) ||
	    BN_bn2binpad(x, buf, sizeof buf) != (int)sizeof buf)
		goto out;
	ret = mbedtls_mpi_read_binary(&R->X, buf, sizeof buf);
	if (ret == 0 && BN_bn2binpad(y, buf, sizeof buf) != (int)sizeof buf)
		ret = MBEDTLS_ERR_ECP_BAD_INPUT_DATA;
	if (ret == 0)
		ret = mbedtls_mpi_read_binary(&R->Y, buf, sizeof buf);
	if (ret == 0)
		ret = mbedtls_mpi_lset(&R->Z, 1);
	if (ret == 0)
		fast_count++;
out:
	mbedtls_platform_zeroize(buf, sizeof buf);
	if (bn)
		BN_CTX_end(bn);
	BN_CTX_free(bn);
	BN_clear_free(k);
	EC_POINT_clear_free(r);
	EC_POINT_free(p);
	return ret;
}
#endif

static bool is_generator(const mbedtls_ecp_group *grp, const mbedtls_ecp_point *P)
{
	return mbedtls_mpi_cmp_mpi(&P->X, &grp->G.X) == 0 &&
	       mbedtls_mpi_cmp_mpi(&P->Y, &grp->G.Y) == 0 &&
	       mbedtls_mpi_cmp_mpi(&P->Z, &grp->G.Z) == 0;
}

int wisp_ecp_mul_restartable(mbedtls_ecp_group *grp, mbedtls_ecp_point *R, const mbedtls_mpi *m,
                             const mbedtls_ecp_point *P,
                             int (*f_rng)(void *, unsigned char *, size_t), void *p_rng,
                             mbedtls_ecp_restart_ctx *rs_ctx)
{
	/* f_rng is mbed TLS's for blinding its own ladder; Nettle's and
	 * libcrypto's constant-time code needs none. */
	bool is_g = grp->id == MBEDTLS_ECP_DP_SECP256R1 && is_generator(grp, P);
#ifdef WISP_TLS_LIBCRYPTO
	bool mine = rs_ctx == NULL &&
	            (grp->id == MBEDTLS_ECP_DP_CURVE25519 || grp->id == MBEDTLS_ECP_DP_SECP256R1);
#else
	bool mine = rs_ctx == NULL && (grp->id == MBEDTLS_ECP_DP_CURVE25519 || is_g);
#endif
	if (!mine)
		return mbedtls_ecp_mul_restartable(grp, R, m, P, f_rng, p_rng, rs_ctx);
	/* The checks mbed TLS makes before it multiplies (ecp.c,
	 * ecp_mul_restartable_internal): a clamped / in-range scalar, and a
	 * public point that is on the curve and, for X25519, not of low order. */
	int ret = mbedtls_ecp_check_privkey(grp, m);
	if (ret == 0)
		ret = mbedtls_ecp_check_pubkey(grp, P);
	if (ret != 0)
		return ret;
	if (grp->id == MBEDTLS_ECP_DP_CURVE25519)
		return x25519(grp, R, m, P);
#ifdef WISP_TLS_LIBCRYPTO
	return p256_mul(R, m, P, is_g);
#else
	return p256_mul_g(R, m);
#endif
}
