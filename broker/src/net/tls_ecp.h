/*
 * The elliptic-curve scalar multiplications of a full TLS handshake, done by
 * Nettle instead of mbed TLS 2.28's generic bignum code (issue 13: the full
 * handshake cost 3.5 times Mosquitto's CPU, about 85% of it in the X25519
 * exchange and the ECDSA P-256 signature).
 *
 * cmake/FindMbedTLS.cmake rewrites the static archive Wisp links so that
 * ecdh.o and ecdsa.o call wisp_ecp_mul_restartable() where they called
 * mbedtls_ecp_mul_restartable(). This function does, for the two
 * multiplications a handshake makes, what mbed TLS does (the same argument
 * checks, the same result in the same form) and hands every other case
 * (other curves, restartable operations, a P-256 point other than the
 * generator) to mbed TLS's own mbedtls_ecp_mul_restartable(), which ecp.o
 * still defines:
 *   - Curve25519 (X25519 key generation and shared secret): Nettle's
 *     curve25519_mul_g() / curve25519_mul(), RFC 7748.
 *   - secp256r1: with libcrypto (WISP_TLS_LIBCRYPTO), every point: the k*G
 *     of an ECDSA signature and of an ECDHE key, and the k*P of an ECDHE
 *     shared secret, by OpenSSL's EC_POINT_mul() (ecp_nistz256 on x86-64);
 *     without it, P = G only, by Nettle's ecc_point_mul_g().
 * All are side-channel-silent code paths (no branch or memory access
 * depends on the scalar), as mbed TLS's are. Nettle's allocate nothing
 * (their scratch space is on the stack); libcrypto's take a few small
 * blocks per multiplication from OpenSSL's allocator, outside
 * memory_limit (freed before returning), and one group per thread.
 *
 * Built only when FindMbedTLS found Nettle (WISP_TLS_NETTLE); otherwise
 * the archive is not rewritten and this file is not linked.
 */
#ifndef WISP_NET_TLS_ECP_H
#define WISP_NET_TLS_ECP_H

#include <stdbool.h>
#include <stdint.h>

#include <mbedtls/ecp.h>

int wisp_ecp_mul_restartable(mbedtls_ecp_group *grp, mbedtls_ecp_point *R, const mbedtls_mpi *m,
                             const mbedtls_ecp_point *P,
                             int (*f_rng)(void *, unsigned char *, size_t), void *p_rng,
                             mbedtls_ecp_restart_ctx *rs_ctx);

/* Multiplications Nettle did since start-up, for tests to see that
 * mbed TLS's ECDH and ECDSA really reach it. Loop thread only. */
uint64_t tls_ecp_fast_count(void);

/* Whether P-256 points other than the generator are multiplied here too
 * (libcrypto), not only by mbed TLS. */
bool tls_ecp_any_p256_point(void);

#endif
