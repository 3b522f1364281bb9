#include "scram_client.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/sha256.h>

static void hmac(const uint8_t *key, size_t klen, const void *msg, size_t mlen, uint8_t out[32])
{
	mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, klen, msg, mlen, out);
}

int scram_client_final(const char *password, const char *bare, const char *server_first, size_t server_first_len,
		       char *final, size_t final_cap, char *expect_v, size_t v_cap)
{
	char sf[512];
	if (server_first_len >= sizeof sf)
		return -1;
	memcpy(sf, server_first, server_first_len);
	sf[server_first_len] = '\0';
	char *r = strstr(sf, "r="), *s = strstr(sf, ",s="), *i = strstr(sf, ",i=");
	if (r != sf || !s || !i)
		return -1;
	char nonce[256], salt64[128];
	snprintf(nonce, sizeof nonce, "%.*s", (int)(s - r - 2), r + 2);
	snprintf(salt64, sizeof salt64, "%.*s", (int)(i - s - 3), s + 3);
	unsigned iterations = (unsigned)strtoul(i + 3, NULL, 10);
	uint8_t salt[96], salted[32], client_key[32], stored[32], server_key[32], sig[32], proof[32];
	size_t slen;
	if (mbedtls_base64_decode(salt, sizeof salt, &slen, (const unsigned char *)salt64, strlen(salt64)) != 0)
		return -1;
	mbedtls_md_context_t md;
	mbedtls_md_init(&md);
	mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
	mbedtls_pkcs5_pbkdf2_hmac(&md, (const unsigned char *)password, strlen(password), salt, slen, iterations, 32,
				  salted);
	mbedtls_md_free(&md);
	hmac(salted, 32, "Client Key", 10, client_key);
	hmac(salted, 32, "Server Key", 10, server_key);
	mbedtls_sha256_ret(client_key, 32, stored, 0);
	char without_proof[320], am[1024];
	snprintf(without_proof, sizeof without_proof, "c=biws,r=%s", nonce);
	int amlen = snprintf(am, sizeof am, "%s,%s,%s", bare, sf, without_proof);
	hmac(stored, 32, am, (size_t)amlen, sig);
	for (int k = 0; k < 32; k++)
		proof[k] = (uint8_t)(client_key[k] ^ sig[k]);
	unsigned char p64[64], v64[64];
	size_t plen, vlen;
	mbedtls_base64_encode(p64, sizeof p64, &plen, proof, sizeof proof);
	hmac(server_key, 32, am, (size_t)amlen, sig);
	mbedtls_base64_encode(v64, sizeof v64, &vlen, sig, sizeof sig);
	snprintf(final, final_cap, "%s,p=%s", without_proof, (const char *)p64);
	snprintf(expect_v, v_cap, "v=%s", (const char *)v64);
	return 0;
}
