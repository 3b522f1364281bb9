/*
 * AES-GCM records sealed and opened by OpenSSL's libcrypto instead of mbed
 * TLS 2.28 (issue 13: over TLS a 4 KiB message cost Wisp 39 us of broker CPU
 * against Mosquitto's 12, nearly all of it in the cipher). mbed TLS's GCM
 * runs AES-NI and PCLMULQDQ one 16-byte block at a time: 28 us to seal
 * 4 KiB here. Nettle 3.8's pipelined code took 2.0-2.2 us per 4 KiB record
 * and direction (its context rebuilt per record); libcrypto 3.0's stitched
 * AES-NI+PCLMULQDQ+AVX code takes 1.2 us with its context reused, 1.45 us
 * re-keyed (bench/gcm_speed.c; 1.5-1.8x Nettle). libcrypto is loaded into
 * the broker anyway (libnats links it), so this adds no package.
 *
 * cmake/FindMbedTLS.cmake rewrites cipher.o in the copy of libmbedcrypto.a
 * Wisp links, so that the AEAD calls TLS records go through
 * (mbedtls_cipher_auth_encrypt_ext / _decrypt_ext) reach
 * wisp_gcm_crypt_and_tag() and wisp_gcm_auth_decrypt() instead of
 * mbedtls_gcm_crypt_and_tag() and mbedtls_gcm_auth_decrypt(). These take
 * what TLS 1.2 uses (AES-128 or AES-256, a 12-byte nonce, a 16-byte tag,
 * sealing or checked opening) on a CPU with AES-NI and PCLMULQDQ
 * (tls_gcm_is_fast) and hand everything else to mbed TLS's own functions,
 * which gcm.o still defines. The key is the first round key of the AES
 * context mbed TLS expanded (AES's key schedule starts with the key
 * itself). A connection holds no more memory: each thread caches up to 64
 * EVP contexts per direction (~1 KiB each, made as records need them; a
 * set-associative cache keyed by the mbed TLS GCM context, least recently
 * used replaced), so a connection's records find their key schedule set
 * unless more connections than that are busy at once. tls_gcm_forget()
 * overwrites a closing connection's keys there (tls.c calls it before
 * mbed TLS wipes its own copy).
 * Constant time as far as the hardware is: AES-NI and PCLMULQDQ, as mbed
 * TLS's own path on this machine; the tag (libcrypto) and the kept key
 * (tls_gcm.c) are compared with CRYPTO_memcmp().
 */
#ifndef WISP_NET_TLS_GCM_H
#define WISP_NET_TLS_GCM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <mbedtls/gcm.h>

int wisp_gcm_crypt_and_tag(mbedtls_gcm_context *ctx, int mode, size_t length,
                           const unsigned char *iv, size_t iv_len, const unsigned char *add,
                           size_t add_len, const unsigned char *input, unsigned char *output,
                           size_t tag_len, unsigned char *tag);

int wisp_gcm_auth_decrypt(mbedtls_gcm_context *ctx, size_t length, const unsigned char *iv,
                          size_t iv_len, const unsigned char *add, size_t add_len,
                          const unsigned char *tag, size_t tag_len, const unsigned char *input,
                          unsigned char *output);

/*
 * Seals the n bytes that start `skip` bytes into iov[i] into out (n bytes
 * of ciphertext) and tag, under ctx's key with a 12-byte nonce: AES-GCM as
 * wisp_gcm_crypt_and_tag() does it, but gathering the plaintext from the
 * pieces where they are, so a TLS record needs no staging copy of its
 * plaintext (tls.c). 0 when sealed; 1 when this is not a case libcrypto
 * takes (not AES-128/256, not a fast CPU, libcrypto failed before
 * starting): nothing was written, the caller seals another way; or
 * MBEDTLS_ERR_GCM_BAD_INPUT when libcrypto failed midway (out wiped).
 */
int tls_gcm_seal_iov(mbedtls_gcm_context *ctx, const unsigned char nonce[12],
                     const unsigned char *add, size_t add_len, const struct iovec *iov, int i,
                     size_t skip, size_t n, unsigned char *out, unsigned char tag[16]);

/* True when the CPU has AES-NI and PCLMULQDQ, so AES-GCM is the cheapest
 * AEAD here (1.2-1.45 us per 4 KiB against ChaCha20-Poly1305's 12.9 us with
 * Nettle, 20 us with mbed TLS); without them AES is table-based or
 * bit-sliced and ChaCha20-Poly1305 stays first. tls.c orders its suites by
 * it. */
bool tls_gcm_is_fast(void);

/* Wipes what the thread's cache holds of ctx's key (the connection using
 * it is closing). */
void tls_gcm_forget(const mbedtls_gcm_context *ctx);

/* Records libcrypto sealed or opened since start-up, and how many of them
 * had to set their key first (tests). */
uint64_t tls_gcm_fast_count(void);
uint64_t tls_gcm_rekey_count(void);

#endif
