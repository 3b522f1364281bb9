/*
 * Nettle's AES-GCM behind mbed TLS's GCM (see tls_gcm.h for how and why).
 */
#include "tls_gcm.h"

#include <string.h>

#include <mbedtls/aes.h>
#include <mbedtls/cipher.h>
#include <mbedtls/platform_util.h>
#include <nettle/gcm.h>
#include <nettle/memops.h>

#define TLS_GCM_IV_LEN 12u  /* TLS 1.2: 4-byte salt + 8-byte explicit nonce */
#define TLS_GCM_TAG_LEN 16u

static uint64_t fast_count;

uint64_t tls_gcm_fast_count(void)
{
	return fast_count;
}

bool tls_gcm_is_fast(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	return __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#else
	return false;
#endif
}

/* Only there: without AES-NI and PCLMULQDQ Nettle's AES and GHASH are
 * table-based like mbed TLS's, no faster to matter, so mbed TLS keeps them. */

/* The AES key mbed TLS was given, from its expanded schedule: 16 or 32
 * bytes, or 0 when this is not a GCM over AES-128/256 we take. */
static size_t aes_key(const mbedtls_gcm_context *ctx, unsigned char key[32])
{
	const mbedtls_cipher_info_t *info = ctx->cipher_ctx.cipher_info;
	const mbedtls_aes_context *aes = ctx->cipher_ctx.cipher_ctx;
	if (!info || !aes)
		return 0;
	size_t len;
	if (info->type == MBEDTLS_CIPHER_AES_128_ECB && aes->nr == 10)
		len = 16;
	else if (info->type == MBEDTLS_CIPHER_AES_256_ECB && aes->nr == 14)
		len = 32;
	else
		return 0;
	memcpy(key, aes->rk, len);
	return len;
}

union aes_gcm {
	struct gcm_aes128_ctx a128;
	struct gcm_aes256_ctx a256;
};

static void gcm_begin(union aes_gcm *g, const unsigned char *key, size_t key_len,
                      const unsigned char *iv, const unsigned char *add, size_t add_len)
{
	if (key_len == 16) {
		gcm_aes128_set_key(&g->a128, key);
		gcm_aes128_set_iv(&g->a128, TLS_GCM_IV_LEN, iv);
		gcm_aes128_update(&g->a128, add_len, add);
	} else {
		gcm_aes256_set_key(&g->a256, key);
		gcm_aes256_set_iv(&g->a256, TLS_GCM_IV_LEN, iv);
		gcm_aes256_update(&g->a256, add_len, add);
	}
}

/* Encrypts or decrypts `length` bytes (in place allowed) and writes the
 * 16-byte tag of the ciphertext. */
static void gcm_run(union aes_gcm *g, size_t key_len, int mode, size_t length,
                    const unsigned char *input, unsigned char *output, unsigned char *tag)
{
	if (key_len == 16) {
		if (mode == MBEDTLS_GCM_ENCRYPT)
			gcm_aes128_encrypt(&g->a128, length, output, input);
		else
			gcm_aes128_decrypt(&g->a128, length, output, input);
		gcm_aes128_digest(&g->a128, TLS_GCM_TAG_LEN, tag);
	} else {
		if (mode == MBEDTLS_GCM_ENCRYPT)
			gcm_aes256_encrypt(&g->a256, length, output, input);
		else
			gcm_aes256_decrypt(&g->a256, length, output, input);
		gcm_aes256_digest(&g->a256, TLS_GCM_TAG_LEN, tag);
	}
}

int wisp_gcm_crypt_and_tag(mbedtls_gcm_context *ctx, int mode, size_t length,
                           const unsigned char *iv, size_t iv_len, const unsigned char *add,
                           size_t add_len, const unsigned char *input, unsigned char *output,
                           size_t tag_len, unsigned char *tag)
{
	unsigned char key[32];
	size_t key_len = 0;
	if (tls_gcm_is_fast() && iv_len == TLS_GCM_IV_LEN && tag_len == TLS_GCM_TAG_LEN &&
	    (mode == MBEDTLS_GCM_ENCRYPT || mode == MBEDTLS_GCM_DECRYPT))
		key_len = aes_key(ctx, key);
	if (key_len == 0)
		return mbedtls_gcm_crypt_and_tag(ctx, mode, length, iv, iv_len, add, add_len, input,
		                                 output, tag_len, tag);
	union aes_gcm g;
	gcm_begin(&g, key, key_len, iv, add, add_len);
	gcm_run(&g, key_len, mode, length, input, output, tag);
	mbedtls_platform_zeroize(&g, sizeof g);
	mbedtls_platform_zeroize(key, sizeof key);
	fast_count++;
	return 0;
}

int wisp_gcm_auth_decrypt(mbedtls_gcm_context *ctx, size_t length, const unsigned char *iv,
                          size_t iv_len, const unsigned char *add, size_t add_len,
                          const unsigned char *tag, size_t tag_len, const unsigned char *input,
                          unsigned char *output)
{
	unsigned char key[32];
	size_t key_len = 0;
	if (tls_gcm_is_fast() && iv_len == TLS_GCM_IV_LEN && tag_len == TLS_GCM_TAG_LEN)
		key_len = aes_key(ctx, key);
	if (key_len == 0)
		return mbedtls_gcm_auth_decrypt(ctx, length, iv, iv_len, add, add_len, tag, tag_len,
		                                input, output);
	union aes_gcm g;
	unsigned char check[TLS_GCM_TAG_LEN];
	gcm_begin(&g, key, key_len, iv, add, add_len);
	gcm_run(&g, key_len, MBEDTLS_GCM_DECRYPT, length, input, output, check);
	int ok = memeql_sec(check, tag, TLS_GCM_TAG_LEN);
	mbedtls_platform_zeroize(&g, sizeof g);
	mbedtls_platform_zeroize(key, sizeof key);
	fast_count++;
	if (!ok) {
		/* As mbed TLS: no unauthenticated plaintext is left behind. */
		mbedtls_platform_zeroize(output, length);
		return MBEDTLS_ERR_GCM_AUTH_FAILED;
	}
	return 0;
}
