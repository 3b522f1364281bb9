/*
 * AES-GCM records sealed and opened by Nettle instead of mbed TLS 2.28
 * (issue 13: over TLS a 4 KiB message cost Wisp 39 us of broker CPU against
 * Mosquitto's 12, nearly all of it in the cipher). mbed TLS's GCM runs
 * AES-NI and PCLMULQDQ one 16-byte block at a time: 28 us to seal 4 KiB
 * here; Nettle 3.8's pipelined AES-NI and PCLMULQDQ code takes 2.5 us.
 *
 * cmake/FindMbedTLS.cmake rewrites cipher.o in the copy of libmbedcrypto.a
 * Wisp links, so that the AEAD calls TLS records go through
 * (mbedtls_cipher_auth_encrypt_ext / _decrypt_ext) reach
 * wisp_gcm_crypt_and_tag() and wisp_gcm_auth_decrypt() instead of
 * mbedtls_gcm_crypt_and_tag() and mbedtls_gcm_auth_decrypt(). These take
 * what TLS 1.2 uses (AES-128 or AES-256, a 12-byte nonce, a 16-byte tag)
 * on a CPU with AES-NI and PCLMULQDQ (tls_gcm_is_fast) and hand everything
 * else to mbed TLS's own functions, which gcm.o still defines. The key is the first round key of the AES context mbed TLS
 * expanded (AES's key schedule starts with the key itself); Nettle's
 * context is built on the stack per record (0.3 us) and wiped, so a
 * connection holds no second copy of its keys and no more memory.
 * Constant time as far as the hardware is: AES-NI and PCLMULQDQ, as mbed
 * TLS's own path on this machine; the tag is compared with memeql_sec().
 */
#ifndef WISP_NET_TLS_GCM_H
#define WISP_NET_TLS_GCM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/gcm.h>

int wisp_gcm_crypt_and_tag(mbedtls_gcm_context *ctx, int mode, size_t length,
                           const unsigned char *iv, size_t iv_len, const unsigned char *add,
                           size_t add_len, const unsigned char *input, unsigned char *output,
                           size_t tag_len, unsigned char *tag);

int wisp_gcm_auth_decrypt(mbedtls_gcm_context *ctx, size_t length, const unsigned char *iv,
                          size_t iv_len, const unsigned char *add, size_t add_len,
                          const unsigned char *tag, size_t tag_len, const unsigned char *input,
                          unsigned char *output);

/* True when the CPU has AES-NI and PCLMULQDQ, so AES-GCM is the cheapest
 * AEAD here (2.5 us per 4 KiB against ChaCha20-Poly1305's 12.9 us with
 * Nettle, 20 us with mbed TLS); without them Nettle's AES is table-based
 * and ChaCha20-Poly1305 stays first. tls.c orders its suites by it. */
bool tls_gcm_is_fast(void);

/* Records Nettle sealed or opened since start-up (tests). */
uint64_t tls_gcm_fast_count(void);

#endif
