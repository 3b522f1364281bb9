#include "scram.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/sha256.h>

#include "err.h"
#include "passwd.h"

#define NONCE_MAX 128u        /* client nonce plus ours */
#define BARE_MAX 768u         /* client-first-message-bare */
#define SERVER_FIRST_MAX 256u

enum scram_phase { SCRAM_AWAIT_FINAL = 0, SCRAM_DONE = 1 };

struct scram_state {
	enum scram_phase phase;
	struct passwd_scram cred;
	bool cred_known;           /* a real SCRAM entry: else the proof always fails */
	char gs2[4];               /* "n,," or "y,," */
	size_t gs2_len;
	char nonce[NONCE_MAX];
	size_t nonce_len;
	char bare[BARE_MAX];
	size_t bare_len;
	char server_first[SERVER_FIRST_MAX];
	size_t server_first_len;
	char user[AUTH_METHOD_USER_MAX];
	size_t user_len;
};

static int hmac(const uint8_t *key, size_t klen, const void *msg, size_t mlen, uint8_t out[SCRAM_KEY_LEN])
{
	return mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, klen, msg, mlen, out) == 0
		       ? 0 : WISP_EINVAL;
}

static void sha256(const uint8_t *in, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	mbedtls_sha256_ret(in, len, out, 0);
}

int scram_keys(const char *password, size_t plen, const uint8_t *salt, size_t slen, unsigned iterations,
	       uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
	mbedtls_md_context_t md;
	mbedtls_md_init(&md);
	int rc = mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
	if (rc == 0)
		rc = mbedtls_pkcs5_pbkdf2_hmac(&md, (const unsigned char *)password, plen, salt, slen, iterations,
					       SCRAM_KEY_LEN, salted);
	mbedtls_md_free(&md);
	if (rc != 0)
		return rc == MBEDTLS_ERR_MD_ALLOC_FAILED ? WISP_ENOMEM : WISP_EINVAL;
	rc = hmac(salted, sizeof salted, "Client Key", 10, client_key);
	if (rc == 0)
		rc = hmac(salted, sizeof salted, "Server Key", 10, server_key);
	if (rc == 0)
		sha256(client_key, sizeof client_key, stored_key);
	memset(salted, 0, sizeof salted);
	memset(client_key, 0, sizeof client_key);
	return rc;
}

static enum auth_step fail(struct scram_state *s, struct auth_out *out, uint8_t reason)
{
	s->phase = SCRAM_DONE;
	out->len = 0;
	out->reason = reason;
	return AUTH_STEP_FAILURE;
}

/* RFC 5802 §5.1 saslname: "=2C" is ',' and "=3D" is '='; any other '='
 * makes the name invalid. */
static bool sasl_unescape(const char *in, size_t len, char *out, size_t cap, size_t *olen)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = in[i];
		if (ch == '=') {
			if (len - i < 3)
				return false;
			if (in[i + 1] == '2' && in[i + 2] == 'C')
				ch = ',';
			else if (in[i + 1] == '3' && in[i + 2] == 'D')
				ch = '=';
			else
				return false;
			i += 2;
		} else if (ch == ',') {
			return false;
		}
		if (n == cap)
			return false;
		out[n++] = ch;
	}
	*olen = n;
	return n > 0;
}

/* The value of attribute `name` ("n=", "r=") at `*pos` in `msg`, up to the
 * next ','; advances past it. */
static bool attr(const char *msg, size_t len, size_t *pos, char name, const char **val, size_t *vlen)
{
	if (*pos + 2 > len || msg[*pos] != name || msg[*pos + 1] != '=')
		return false;
	size_t start = *pos + 2, end = start;
	while (end < len && msg[end] != ',')
		end++;
	*val = msg + start;
	*vlen = end - start;
	*pos = end < len ? end + 1 : end;
	return true;
}

static bool printable_nonce(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7E || s[i] == ',')
			return false;
	return n > 0;
}

/* A salt for a user without a SCRAM entry: stable per name and process, so
 * asking twice does not tell a made-up entry from a real one. */
static int mock_cred(const char *user, size_t ulen, struct passwd_scram *c)
{
	static uint8_t secret[SCRAM_KEY_LEN];
	static bool ready;
	if (!ready) {
		int rc = passwd_random(secret, sizeof secret);
		if (rc)
			return rc;
		ready = true;
	}
	uint8_t mac[SCRAM_KEY_LEN];
	int rc = hmac(secret, sizeof secret, user, ulen, mac);
	if (rc)
		return rc;
	memset(c, 0, sizeof *c);
	c->iterations = SCRAM_ITERATIONS_MIN;
	c->salt_len = 16;
	memcpy(c->salt, mac, c->salt_len);
	return passwd_random(c->stored_key, sizeof c->stored_key);
}

static enum auth_step scram_start(void *state, const struct auth_method_env *env, const struct auth_in *in,
				  struct auth_out *out)
{
	struct scram_state *s = state;
	const char *msg = (const char *)in->data;
	size_t len = in->len;
	memset(s, 0, sizeof *s);
	s->phase = SCRAM_DONE;
	/* gs2-header: "n,," or "y,," (no channel binding; "p=" asks for it
	 * and is refused, RFC 5802 §7). An authzid ("a=") is not supported. */
	if (len < 3 || (msg[0] != 'n' && msg[0] != 'y') || msg[1] != ',' || msg[2] != ',')
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	memcpy(s->gs2, msg, 3);
	s->gs2_len = 3;
	const char *bare = msg + 3;
	size_t bare_len = len - 3, pos = 0;
	if (bare_len > sizeof s->bare)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	const char *name, *cnonce;
	size_t name_len, cnonce_len;
	if (!attr(bare, bare_len, &pos, 'n', &name, &name_len) ||
	    !attr(bare, bare_len, &pos, 'r', &cnonce, &cnonce_len) || !printable_nonce(cnonce, cnonce_len) ||
	    cnonce_len + SCRAM_SERVER_NONCE_LEN > sizeof s->nonce ||
	    !sasl_unescape(name, name_len, s->user, sizeof s->user, &s->user_len))
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	/* The MQTT User Name, when given, must name the same user: the session
	 * and the ACL follow the proven name. */
	if (in->user && (in->user_len != s->user_len || memcmp(in->user, s->user, s->user_len) != 0))
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	memcpy(s->bare, bare, bare_len);
	s->bare_len = bare_len;
	s->cred_known = passwd_scram_get(env->db, s->user, s->user_len, &s->cred);
	if (!s->cred_known && mock_cred(s->user, s->user_len, &s->cred) != 0)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	memcpy(s->nonce, cnonce, cnonce_len);
	if (env->nonce(s->nonce + cnonce_len, SCRAM_SERVER_NONCE_LEN) != 0)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	s->nonce_len = cnonce_len + SCRAM_SERVER_NONCE_LEN;
	unsigned char salt64[96];
	size_t salt64_len;
	if (mbedtls_base64_encode(salt64, sizeof salt64, &salt64_len, s->cred.salt, s->cred.salt_len) != 0)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	int n = snprintf(s->server_first, sizeof s->server_first, "r=%.*s,s=%.*s,i=%u", (int)s->nonce_len, s->nonce,
			 (int)salt64_len, (const char *)salt64, s->cred.iterations);
	if (n < 0 || (size_t)n >= sizeof s->server_first)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	s->server_first_len = (size_t)n;
	memcpy(out->data, s->server_first, s->server_first_len);
	out->len = s->server_first_len;
	s->phase = SCRAM_AWAIT_FINAL;
	return AUTH_STEP_CONTINUE;
}

static enum auth_step scram_step(void *state, const struct auth_method_env *env, const uint8_t *data, size_t len,
				 struct auth_out *out)
{
	struct scram_state *s = state;
	(void)env;
	if (s->phase != SCRAM_AWAIT_FINAL)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	const char *msg = (const char *)data;
	size_t pos = 0;
	const char *cb, *nonce, *proof64;
	size_t cb_len, nonce_len, proof64_len;
	unsigned char gs2_64[8];
	size_t gs2_64_len;
	if (!attr(msg, len, &pos, 'c', &cb, &cb_len) || !attr(msg, len, &pos, 'r', &nonce, &nonce_len))
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	/* Extensions may follow the nonce; the proof comes last (RFC 5802 §7). */
	size_t without_proof = pos ? pos - 1 : 0;
	while (pos < len && !(msg[pos] == 'p' && pos + 1 < len && msg[pos + 1] == '=')) {
		while (pos < len && msg[pos] != ',')
			pos++;
		pos++;
		without_proof = pos - 1;
	}
	if (!attr(msg, len, &pos, 'p', &proof64, &proof64_len) || pos != len)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	if (mbedtls_base64_encode(gs2_64, sizeof gs2_64, &gs2_64_len, (const unsigned char *)s->gs2, s->gs2_len) != 0 ||
	    cb_len != gs2_64_len || memcmp(cb, gs2_64, cb_len) != 0 || nonce_len != s->nonce_len ||
	    memcmp(nonce, s->nonce, nonce_len) != 0)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	uint8_t proof[SCRAM_KEY_LEN + 4];
	size_t proof_len;
	if (mbedtls_base64_decode(proof, sizeof proof, &proof_len, (const unsigned char *)proof64, proof64_len) != 0 ||
	    proof_len != SCRAM_KEY_LEN)
		return fail(s, out, AUTH_FAIL_BAD_CREDENTIALS);
	/* AuthMessage = client-first-message-bare "," server-first-message ","
	 * client-final-message-without-proof */
	char am[BARE_MAX + SERVER_FIRST_MAX + 512];
	size_t am_len = s->bare_len + 1 + s->server_first_len + 1 + without_proof;
	if (am_len > sizeof am)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	memcpy(am, s->bare, s->bare_len);
	am[s->bare_len] = ',';
	memcpy(am + s->bare_len + 1, s->server_first, s->server_first_len);
	am[s->bare_len + 1 + s->server_first_len] = ',';
	memcpy(am + s->bare_len + 2 + s->server_first_len, msg, without_proof);
	uint8_t sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	if (hmac(s->cred.stored_key, SCRAM_KEY_LEN, am, am_len, sig) != 0)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		client_key[i] = (uint8_t)(proof[i] ^ sig[i]);
	sha256(client_key, sizeof client_key, stored);
	volatile uint8_t diff = 0; /* constant time: no early exit on the first wrong byte */
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		diff |= (uint8_t)(stored[i] ^ s->cred.stored_key[i]);
	memset(client_key, 0, sizeof client_key);
	if (diff != 0 || !s->cred_known)
		return fail(s, out, AUTH_FAIL_BAD_CREDENTIALS);
	if (hmac(s->cred.server_key, SCRAM_KEY_LEN, am, am_len, sig) != 0)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	size_t v64_len;
	memcpy(out->data, "v=", 2);
	if (mbedtls_base64_encode(out->data + 2, sizeof out->data - 2, &v64_len, sig, sizeof sig) != 0)
		return fail(s, out, AUTH_FAIL_NOT_AUTHORIZED);
	out->len = 2 + v64_len;
	out->user = s->user;
	out->user_len = s->user_len;
	s->phase = SCRAM_DONE;
	return AUTH_STEP_SUCCESS;
}

static void scram_end(void *state)
{
	struct scram_state *s = state;
	volatile unsigned char *p = (volatile unsigned char *)s;
	for (size_t i = 0; i < sizeof *s; i++)
		p[i] = 0;
}

const struct auth_method scram_sha256_method = {
	.name = "SCRAM-SHA-256",
	.state_size = sizeof(struct scram_state),
	.start = scram_start,
	.step = scram_step,
	.end = scram_end,
};
