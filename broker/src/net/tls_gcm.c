/*
 * OpenSSL libcrypto's AES-GCM behind mbed TLS's GCM (see tls_gcm.h for how
 * and why).
 *
 * Single-threaded per thread: each thread that seals or opens a record gets
 * its own cache of EVP contexts, up to GCM_SETS x GCM_WAYS per direction
 * (thread-local, made as records need them, freed when a thread other than
 * the main one exits; the main thread's live until the process ends). A
 * connection owns none of them: its records find the one last set to its
 * key, or take the least recently used of their set.
 */
#include "tls_gcm.h"

#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <mbedtls/aes.h>
#include <mbedtls/cipher.h>
#include <mbedtls/platform_util.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define TLS_GCM_IV_LEN 12u  /* TLS 1.2: 4-byte salt + 8-byte explicit nonce */
#define TLS_GCM_TAG_LEN 16u
#define TLS_GCM_MAX_KEY 32u

enum gcm_dir { GCM_SEAL, GCM_OPEN, GCM_DIRS };

/*
 * Contexts are cached per thread and direction, keyed by the mbed TLS GCM
 * context (one per connection and direction) and checked against its key:
 * re-keying costs the AES key schedule and GHASH table, 0.25 us a record,
 * as much as a tenth of a 4 KiB delivery, and consecutive records belong to
 * different connections whenever a loop turn serves several (pairs,
 * fan-in: every record). GCM_SETS x GCM_WAYS contexts per direction, made
 * on first use (~1 KiB each in libcrypto), least recently used replaced.
 */
#define GCM_SETS 16u
#define GCM_WAYS 4u

/* One cached context and the key it is set to (key_len 0: none yet). The
 * key is kept to tell a context freed and reused by mbed TLS for another
 * connection (same pointer, other key) from the one it was set for. */
struct gcm_dir_ctx {
	EVP_CIPHER_CTX *evp;
	const mbedtls_gcm_context *owner;
	uint64_t used;         /* the thread's record count when last used */
	size_t cipher_key_len; /* AES-128 (16) or -256 (32) set in evp; 0: none */
	size_t key_len;
	unsigned char key[TLS_GCM_MAX_KEY];
};

struct gcm_thread {
	struct gcm_dir_ctx dir[GCM_DIRS][GCM_SETS * GCM_WAYS];
	uint64_t records;
	EVP_CIPHER *aes128, *aes256;
	bool failed;  /* libcrypto could not make them: mbed TLS does the work */
};

static uint64_t fast_count;
static uint64_t rekey_count;
static _Thread_local struct gcm_thread *this_thread;
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;

uint64_t tls_gcm_fast_count(void)
{
	return fast_count;
}

uint64_t tls_gcm_rekey_count(void)
{
	return rekey_count;
}

bool tls_gcm_is_fast(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	return __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#else
	return false;
#endif
}

/* Only there: without AES-NI and PCLMULQDQ libcrypto's AES is constant-time
 * bit-sliced or table code, no faster to matter, so mbed TLS keeps them. */

static void thread_free(void *arg)
{
	struct gcm_thread *t = arg;
	if (!t)
		return;
	for (int d = 0; d < GCM_DIRS; d++) {
		for (size_t i = 0; i < GCM_SETS * GCM_WAYS; i++) {
			EVP_CIPHER_CTX_free(t->dir[d][i].evp);
			mbedtls_platform_zeroize(t->dir[d][i].key, sizeof t->dir[d][i].key);
		}
	}
	EVP_CIPHER_free(t->aes128);
	EVP_CIPHER_free(t->aes256);
	OPENSSL_free(t);
}

static void thread_key_make(void)
{
	(void)pthread_key_create(&thread_key, thread_free);
}

/* This thread's contexts, made on first use; NULL when libcrypto failed
 * (out of memory, no default provider), and then for the rest of the
 * thread's life. Allocated by libcrypto (OPENSSL_zalloc): a fixed few KiB
 * per thread, outside memory_limit, which counts what grows with
 * connections. */
static struct gcm_thread *thread_get(void)
{
	struct gcm_thread *t = this_thread;
	if (t)
		return t->failed ? NULL : t;
	(void)pthread_once(&thread_key_once, thread_key_make);
	t = OPENSSL_zalloc(sizeof *t);
	if (!t)
		return NULL;
	this_thread = t;
	(void)pthread_setspecific(thread_key, t);
	t->aes128 = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	t->aes256 = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	t->failed = !t->aes128 || !t->aes256;
	return t->failed ? NULL : t;
}

static size_t set_of(const mbedtls_gcm_context *ctx)
{
	uint64_t h = (uint64_t)(uintptr_t)ctx * 0x9E3779B97F4A7C15u;
	return (size_t)(h >> 32) % GCM_SETS;
}

/* The context cached for ctx in direction d: its own if it has one, else
 * a free or the least recently used one of its set, to be re-keyed. NULL
 * when libcrypto cannot make a context (out of memory). */
static struct gcm_dir_ctx *slot_for(struct gcm_thread *t, enum gcm_dir d,
                                    const mbedtls_gcm_context *ctx)
{
	struct gcm_dir_ctx *set = &t->dir[d][set_of(ctx) * GCM_WAYS], *pick = NULL;
	for (size_t w = 0; w < GCM_WAYS; w++) {
		if (set[w].owner == ctx) {
			pick = &set[w];
			break;
		}
		if (!pick || set[w].used < pick->used)
			pick = &set[w];
	}
	if (!pick->evp && !(pick->evp = EVP_CIPHER_CTX_new()))
		return NULL;
	pick->owner = ctx;
	pick->used = ++t->records;
	return pick;
}

void tls_gcm_forget(const mbedtls_gcm_context *ctx)
{
	struct gcm_thread *t = this_thread;
	if (!t || t->failed || !ctx)
		return;
	for (int d = 0; d < GCM_DIRS; d++) {
		struct gcm_dir_ctx *set = &t->dir[d][set_of(ctx) * GCM_WAYS];
		for (size_t w = 0; w < GCM_WAYS; w++) {
			struct gcm_dir_ctx *dc = &set[w];
			if (dc->owner != ctx)
				continue;
			/* Overwrite the key schedule libcrypto holds with one of an
			 * all-zero key (keeping the context: naming the cipher again
			 * would cost more); on failure drop the context. */
			static const unsigned char zero[TLS_GCM_MAX_KEY];
			if (dc->cipher_key_len &&
			    !EVP_CipherInit_ex(dc->evp, NULL, NULL, zero, NULL, d == GCM_SEAL ? 1 : 0)) {
				EVP_CIPHER_CTX_free(dc->evp);
				dc->evp = NULL;
				dc->cipher_key_len = 0;
			}
			mbedtls_platform_zeroize(dc->key, sizeof dc->key);
			dc->key_len = 0;
			dc->owner = NULL;
			dc->used = 0;
		}
	}
}

/* The AES key mbed TLS was given, from its expanded schedule: 16 or 32
 * bytes, or 0 when this is not a GCM over AES-128/256 we take. */
static size_t aes_key(const mbedtls_gcm_context *ctx, unsigned char key[TLS_GCM_MAX_KEY])
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

/* Sets direction d of t to ctx's key (only if it is not already) and to
 * iv, then feeds the additional data. Returns the EVP context, or NULL when
 * this is not a case we take or libcrypto failed: the caller then hands the
 * record to mbed TLS. */
static EVP_CIPHER_CTX *gcm_begin(mbedtls_gcm_context *ctx, enum gcm_dir d, size_t length,
                                 const unsigned char *iv, size_t iv_len, const unsigned char *add,
                                 size_t add_len, size_t tag_len)
{
	if (!tls_gcm_is_fast() || iv_len != TLS_GCM_IV_LEN || tag_len != TLS_GCM_TAG_LEN ||
	    length > INT_MAX || add_len > INT_MAX)
		return NULL;
	struct gcm_thread *t = thread_get();
	if (!t)
		return NULL;
	unsigned char key[TLS_GCM_MAX_KEY];
	size_t key_len = aes_key(ctx, key);
	if (key_len == 0)
		return NULL;
	struct gcm_dir_ctx *dc = slot_for(t, d, ctx);
	if (!dc) {
		mbedtls_platform_zeroize(key, sizeof key);
		return NULL;
	}
	int enc = d == GCM_SEAL ? 1 : 0;
	int ok;
	if (dc->key_len == key_len && CRYPTO_memcmp(dc->key, key, key_len) == 0) {
		ok = EVP_CipherInit_ex(dc->evp, NULL, NULL, NULL, iv, enc);
	} else {
		/* Naming the cipher again would make libcrypto 3.0 free and remake
		 * its provider context (0.2-0.5 us a record): only when the key
		 * length changes. A failed re-key leaves the context unknown. */
		const EVP_CIPHER *cipher = NULL;
		if (dc->cipher_key_len != key_len)
			cipher = key_len == 16 ? t->aes128 : t->aes256;
		dc->key_len = 0;
		dc->cipher_key_len = 0;
		ok = EVP_CipherInit_ex(dc->evp, cipher, NULL, key, iv, enc);
		rekey_count++;
		if (ok) {
			memcpy(dc->key, key, key_len);
			dc->key_len = key_len;
			dc->cipher_key_len = key_len;
		}
	}
	mbedtls_platform_zeroize(key, sizeof key);
	int out_len = 0;
	if (ok && add_len > 0)
		ok = EVP_CipherUpdate(dc->evp, NULL, &out_len, add, (int)add_len);
	return ok ? dc->evp : NULL;
}

int wisp_gcm_crypt_and_tag(mbedtls_gcm_context *ctx, int mode, size_t length,
                           const unsigned char *iv, size_t iv_len, const unsigned char *add,
                           size_t add_len, const unsigned char *input, unsigned char *output,
                           size_t tag_len, unsigned char *tag)
{
	/* Decrypt mode here means "decrypt and tag the ciphertext" with no check,
	 * which TLS never asks (it opens with mbedtls_gcm_auth_decrypt) and
	 * libcrypto's decrypting context cannot report: mbed TLS does it. */
	EVP_CIPHER_CTX *evp = NULL;
	if (mode == MBEDTLS_GCM_ENCRYPT)
		evp = gcm_begin(ctx, GCM_SEAL, length, iv, iv_len, add, add_len, tag_len);
	if (!evp)
		return mbedtls_gcm_crypt_and_tag(ctx, mode, length, iv, iv_len, add, add_len, input,
		                                 output, tag_len, tag);
	int out_len = 0, fin_len = 0;
	if ((length > 0 && !EVP_EncryptUpdate(evp, output, &out_len, input, (int)length)) ||
	    !EVP_EncryptFinal_ex(evp, output + out_len, &fin_len) ||
	    !EVP_CIPHER_CTX_ctrl(evp, EVP_CTRL_AEAD_GET_TAG, (int)tag_len, tag)) {
		/* Not seen to happen once the context is set; an in-place input may
		 * be half sealed already, so mbed TLS cannot redo it: the record
		 * fails. */
		mbedtls_platform_zeroize(output, length);
		return MBEDTLS_ERR_GCM_BAD_INPUT;
	}
	fast_count++;
	return 0;
}

int wisp_gcm_auth_decrypt(mbedtls_gcm_context *ctx, size_t length, const unsigned char *iv,
                          size_t iv_len, const unsigned char *add, size_t add_len,
                          const unsigned char *tag, size_t tag_len, const unsigned char *input,
                          unsigned char *output)
{
	EVP_CIPHER_CTX *evp = gcm_begin(ctx, GCM_OPEN, length, iv, iv_len, add, add_len, tag_len);
	int out_len = 0, fin_len = 0;
	unsigned char want[TLS_GCM_TAG_LEN];
	if (evp)
		memcpy(want, tag, TLS_GCM_TAG_LEN);  /* the ctrl takes a non-const pointer */
	if (!evp || (length > 0 && !EVP_DecryptUpdate(evp, output, &out_len, input, (int)length)) ||
	    !EVP_CIPHER_CTX_ctrl(evp, EVP_CTRL_AEAD_SET_TAG, (int)TLS_GCM_TAG_LEN, want)) {
		/* Only a record libcrypto never touched goes to mbed TLS: an
		 * in-place input may already be half opened. */
		if (!evp)
			return mbedtls_gcm_auth_decrypt(ctx, length, iv, iv_len, add, add_len, tag,
			                                tag_len, input, output);
		mbedtls_platform_zeroize(output, length);
		return MBEDTLS_ERR_GCM_BAD_INPUT;
	}
	fast_count++;
	/* EVP_DecryptFinal_ex compares the tag in constant time
	 * (CRYPTO_memcmp). */
	if (EVP_DecryptFinal_ex(evp, output + out_len, &fin_len) <= 0) {
		/* As mbed TLS: no unauthenticated plaintext is left behind. */
		mbedtls_platform_zeroize(output, length);
		return MBEDTLS_ERR_GCM_AUTH_FAILED;
	}
	return 0;
}

/* Pieces at least this long are sealed straight from where they are;
 * shorter ones are first copied to their place in the output, next to each
 * other, and sealed there in place as one run: a call into libcrypto per
 * 2-byte length field would cost more than the copy saves, and its
 * stitched AES-NI+PCLMULQDQ code wants long runs. */
#define SEAL_DIRECT_MIN 512u

int tls_gcm_seal_iov(mbedtls_gcm_context *ctx, const unsigned char nonce[12],
                     const unsigned char *add, size_t add_len, const struct iovec *iov, int i,
                     size_t skip, size_t n, unsigned char *out, unsigned char tag[16])
{
	EVP_CIPHER_CTX *evp = gcm_begin(ctx, GCM_SEAL, n, nonce, TLS_GCM_IV_LEN, add, add_len,
	                                TLS_GCM_TAG_LEN);
	if (!evp)
		return 1;
	size_t off = 0, run = 0; /* run: start of the copied bytes not sealed yet */
	int out_len = 0;
	bool ok = true;
	for (; ok && off < n; i++, skip = 0) {
		const unsigned char *src = (const unsigned char *)iov[i].iov_base + skip;
		size_t take = iov[i].iov_len - skip;
		if (take > n - off)
			take = n - off;
		if (take < SEAL_DIRECT_MIN) {
			memcpy(out + off, src, take);
			off += take;
			continue;
		}
		if (run < off)
			ok = EVP_EncryptUpdate(evp, out + run, &out_len, out + run, (int)(off - run));
		ok = ok && EVP_EncryptUpdate(evp, out + off, &out_len, src, (int)take);
		off += take;
		run = off;
	}
	if (ok && run < off)
		ok = EVP_EncryptUpdate(evp, out + run, &out_len, out + run, (int)(off - run));
	int fin_len = 0;
	if (!ok || !EVP_EncryptFinal_ex(evp, out + off, &fin_len) ||
	    !EVP_CIPHER_CTX_ctrl(evp, EVP_CTRL_AEAD_GET_TAG, (int)TLS_GCM_TAG_LEN, tag)) {
		mbedtls_platform_zeroize(out, n);
		return MBEDTLS_ERR_GCM_BAD_INPUT;
	}
	fast_count++;
	return 0;
}
