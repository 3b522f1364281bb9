/*
 * gcm_speed: the cost of sealing and opening one TLS record with AES-128-GCM
 * (12-byte nonce, 13 bytes of additional data, 16-byte tag), by Nettle 3.8
 * and by OpenSSL libcrypto 3.0, on this CPU. It chose libcrypto for
 * net/tls_gcm.c (issue 13).
 *
 * Five ways: Nettle with its context rebuilt per record (what tls_gcm.c did),
 * Nettle with its context kept, libcrypto's EVP context kept with only the
 * nonce set per record, the same context re-keyed per record (what
 * tls_gcm.c does when consecutive records belong to different connections),
 * and re-keyed naming the cipher again, which makes libcrypto 3.0 remake its
 * provider context (what tls_gcm.c avoids).
 * Each figure is the fastest of many batches of 16 records, so that a
 * machine shared with other work shows the CPU's cost rather than the
 * scheduler's.
 *
 * usage: gcm_speed [record_bytes]   (default 4096, at most 16384)
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nettle/gcm.h>
#include <openssl/evp.h>

#define MAX_RECORD 16384
#define BATCH 16
#define BATCHES 3000

static unsigned char key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static unsigned char iv[12], aad[13], plain[MAX_RECORD], sealed[MAX_RECORD], opened[MAX_RECORD];
static unsigned char tag[16];
static size_t record_len = 4096;
static struct gcm_aes128_ctx nettle_kept;
static EVP_CIPHER_CTX *evp_seal, *evp_open;
static EVP_CIPHER *aes128gcm;
static int failures;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void nettle_record(struct gcm_aes128_ctx *g, int rekey)
{
	if (rekey)
		gcm_aes128_set_key(g, key);
	gcm_aes128_set_iv(g, sizeof iv, iv);
	gcm_aes128_update(g, sizeof aad, aad);
	gcm_aes128_encrypt(g, record_len, sealed, plain);
	gcm_aes128_digest(g, sizeof tag, tag);
	if (rekey)
		gcm_aes128_set_key(g, key);
	gcm_aes128_set_iv(g, sizeof iv, iv);
	gcm_aes128_update(g, sizeof aad, aad);
	gcm_aes128_decrypt(g, record_len, opened, sealed);
	unsigned char check[16];
	gcm_aes128_digest(g, sizeof check, check);
	failures += memcmp(check, tag, sizeof tag) != 0;
}

static void nettle_rebuilt(void)
{
	struct gcm_aes128_ctx g;
	nettle_record(&g, 1);
}

static void nettle_context_kept(void)
{
	nettle_record(&nettle_kept, 0);
}

/* rekey 0: nonce only; 1: key and nonce; 2: cipher, key and nonce (libcrypto
 * 3.0 then remakes its provider context). */
static void evp_record(int rekey)
{
	const unsigned char *k = rekey ? key : NULL;
	const EVP_CIPHER *c = rekey == 2 ? aes128gcm : NULL;
	int len = 0, fin = 0;
	int ok = EVP_EncryptInit_ex(evp_seal, c, NULL, k, iv) &&
	         EVP_EncryptUpdate(evp_seal, NULL, &len, aad, (int)sizeof aad) &&
	         EVP_EncryptUpdate(evp_seal, sealed, &len, plain, (int)record_len) &&
	         EVP_EncryptFinal_ex(evp_seal, sealed + len, &fin) &&
	         EVP_CIPHER_CTX_ctrl(evp_seal, EVP_CTRL_AEAD_GET_TAG, (int)sizeof tag, tag) &&
	         EVP_DecryptInit_ex(evp_open, c, NULL, k, iv) &&
	         EVP_DecryptUpdate(evp_open, NULL, &len, aad, (int)sizeof aad) &&
	         EVP_DecryptUpdate(evp_open, opened, &len, sealed, (int)record_len) &&
	         EVP_CIPHER_CTX_ctrl(evp_open, EVP_CTRL_AEAD_SET_TAG, (int)sizeof tag, tag) &&
	         EVP_DecryptFinal_ex(evp_open, opened + len, &fin) > 0;
	failures += !ok;
}

static void evp_context_kept(void)
{
	evp_record(0);
}

static void evp_rekeyed(void)
{
	evp_record(1);
}

static void evp_cipher_named_again(void)
{
	evp_record(2);
}

static void run(const char *name, void (*record)(void))
{
	double best = 1e9;
	for (int b = 0; b < BATCHES; b++) {
		double t0 = now();
		for (int i = 0; i < BATCH; i++) {
			iv[11] = (unsigned char)i;
			record();
		}
		double us = (now() - t0) / BATCH * 1e6;
		if (us < best)
			best = us;
	}
	printf("%-40s %7.3f us per seal+open (%.2f GB/s each way)\n", name, best,
	       2.0 * (double)record_len / (best * 1e3));
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		long n = strtol(argv[1], NULL, 10);
		if (n < 1 || n > MAX_RECORD) {
			fprintf(stderr, "usage: %s [record_bytes 1..%d]\n", argv[0], MAX_RECORD);
			return 2;
		}
		record_len = (size_t)n;
	}
	memset(plain, 0x5a, sizeof plain);
	gcm_aes128_set_key(&nettle_kept, key);
	aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	evp_seal = EVP_CIPHER_CTX_new();
	evp_open = EVP_CIPHER_CTX_new();
	if (!aes128gcm || !evp_seal || !evp_open ||
	    !EVP_EncryptInit_ex(evp_seal, aes128gcm, NULL, key, iv) ||
	    !EVP_DecryptInit_ex(evp_open, aes128gcm, NULL, key, iv)) {
		fprintf(stderr, "libcrypto has no AES-128-GCM\n");
		return 1;
	}
	printf("AES-128-GCM, %zu-byte records, %s\n", record_len, OpenSSL_version(OPENSSL_VERSION));
	for (int pass = 0; pass < 2; pass++) {
		run("Nettle, context rebuilt per record", nettle_rebuilt);
		run("Nettle, context kept", nettle_context_kept);
		run("libcrypto EVP, context kept, nonce only", evp_context_kept);
		run("libcrypto EVP, re-keyed per record", evp_rekeyed);
		run("libcrypto EVP, cipher named per record", evp_cipher_named_again);
	}
	EVP_CIPHER_CTX_free(evp_seal);
	EVP_CIPHER_CTX_free(evp_open);
	EVP_CIPHER_free(aes128gcm);
	if (failures) {
		fprintf(stderr, "%d records did not open\n", failures);
		return 1;
	}
	return 0;
}
