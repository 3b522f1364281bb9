/*
 * The cluster's NATS TLS and credentials (nats_auth.h).
 *
 * cnats 3.4 enforces TLS only when asked: a tls:// URL or a CA alone still
 * connects in plain text to a server that offers no TLS. So TLS, once
 * configured, is always made a requirement (natsOptions_SetSecure). The
 * server's certificate must carry the URL's host (cnats's own check), or
 * tls_server_name for every server when that is set.
 *
 * NKeys (nkey_seed, or the seed of a .creds file) are read once, at start,
 * into a libcrypto key that signs every connection's nonce (libnats's own
 * signer is wrong now and then: nats_auth.h); the file's bytes are wiped
 * once read. libnats frees what the callbacks return with free(), so those
 * few bytes are malloc'd, not wisp_malloc'd.
 *
 * The same call also sets what every connection shares beyond TLS and
 * credentials: its write deadline, PING interval and pending limit.
 */
#include "nats_auth.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "alloc.h"
#include "err.h"
#include "file.h"

static int failed(natsStatus st, const char *key, const char *file, char *err, size_t errlen)
{
	const char *why = nats_last_error();
	snprintf(err, errlen, "cluster.%s: %s%s%s", key, file ? file : "", file ? ": " : "",
		 *why ? why : natsStatus_GetText(st));
	return WISP_ECONFIG;
}

struct nats_signer {
	EVP_PKEY *key; /* Ed25519; read-only once loaded, so cnats's threads may sign at once */
	char *jwt;     /* the credentials file's user JWT; NULL for an nkey_seed */
};

/* ---- NKeys: base32 of prefix, key, CRC-16/XMODEM (nats-io/nkeys) ---- */

#define NKEY_PREFIX_SEED (18u << 3)
#define NKEY_PREFIX_USER (20u << 3)

static uint16_t crc16_xmodem(const uint8_t *p, size_t n)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
	}
	return crc;
}

/* Decodes n base32 characters into out (cap bytes); the length, or 0. */
static size_t base32_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		const char *c = strchr(alphabet, in[i]);
		if (!in[i] || !c)
			return 0;
		acc = acc << 5 | (uint32_t)(c - alphabet);
		bits += 5;
		if (bits >= 8) {
			if (len == cap)
				return 0;
			bits -= 8;
			out[len++] = (uint8_t)(acc >> bits);
		}
	}
	return len;
}

static void base32_encode(const uint8_t *in, size_t n, char *out)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	uint32_t acc = 0;
	unsigned bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = acc << 8 | in[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			*out++ = alphabet[(acc >> bits) & 31];
		}
	}
	if (bits)
		*out++ = alphabet[(acc << (5 - bits)) & 31];
	*out = '\0';
}

/* The first line of text that starts with prefix, as (ptr, len). */
static const char *line_starting(const char *text, size_t tlen, const char *prefix, size_t *len)
{
	size_t plen = strlen(prefix);
	for (const char *p = text, *end = text + tlen; p < end;) {
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *stop = eol ? eol : end;
		if ((size_t)(stop - p) >= plen && memcmp(p, prefix, plen) == 0) {
			while (stop > p && (stop[-1] == '\r' || stop[-1] == ' ' || stop[-1] == '\t'))
				stop--;
			*len = (size_t)(stop - p);
			return p;
		}
		p = eol ? eol + 1 : end;
	}
	return NULL;
}

/* The line after the one holding marker (a .creds block's body). */
static const char *line_after(const char *text, size_t tlen, const char *marker, size_t *len)
{
	const char *m = memmem(text, tlen, marker, strlen(marker));
	const char *eol = m ? memchr(m, '\n', tlen - (size_t)(m - text)) : NULL;
	if (!eol)
		return NULL;
	const char *start = eol + 1;
	const char *next = memchr(start, '\n', tlen - (size_t)(start - text));
	const char *stop = next ? next : text + tlen;
	while (stop > start && (stop[-1] == '\r' || stop[-1] == ' '))
		stop--;
	*len = (size_t)(stop - start);
	return *len ? start : NULL;
}

/* A user seed ("SU...") into its Ed25519 key, and its public key "U...". */
static const char *seed_key(const char *seed, size_t n, EVP_PKEY **key, char pub[64])
{
	uint8_t raw[64];
	size_t len = base32_decode(seed, n, raw, sizeof raw);
	const char *why = NULL;
	if (len != 36)
		why = "not an NKey seed (base32 of 36 bytes)";
	else if (raw[0] != (NKEY_PREFIX_SEED | NKEY_PREFIX_USER >> 5) || raw[1] != (uint8_t)((NKEY_PREFIX_USER & 31) << 3))
		why = "not a user NKey seed (\"SU...\")";
	else if (crc16_xmodem(raw, 34) != (uint16_t)(raw[34] | raw[35] << 8))
		why = "NKey seed checksum mismatch";
	if (!why) {
		*key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw + 2, 32);
		uint8_t praw[35] = {NKEY_PREFIX_USER};
		size_t plen = 32;
		if (!*key || EVP_PKEY_get_raw_public_key(*key, praw + 1, &plen) != 1 || plen != 32) {
			why = "libcrypto cannot load the Ed25519 key";
		} else {
			uint16_t crc = crc16_xmodem(praw, 33);
			praw[33] = (uint8_t)crc;
			praw[34] = (uint8_t)(crc >> 8);
			base32_encode(praw, sizeof praw, pub);
		}
	}
	OPENSSL_cleanse(raw, sizeof raw);
	return why;
}

int nats_signer_sign(const struct nats_signer *s, const char *nonce, unsigned char sig[64])
{
	size_t len = 64;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, s->key) == 1 &&
		  EVP_DigestSign(ctx, sig, &len, (const unsigned char *)nonce, strlen(nonce)) == 1 && len == 64;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : WISP_EIO;
}

static natsStatus sign_nonce(char **err_txt, unsigned char **sig, int *sig_len, const char *nonce, void *closure)
{
	/* cnats asks even when the server sent no nonce: it wants no NKey. */
	if (!nonce) {
		*err_txt = strdup("the NATS server sent no nonce to sign: it does not take NKeys"); /* cnats frees it */
		return NATS_ERR;
	}
	/* cnats frees the signature with free(): it is not wisp_malloc's. */
	unsigned char *out = malloc(64);
	if (!out || nats_signer_sign(closure, nonce, out) != 0) {
		free(out);
		return NATS_ERR;
	}
	*sig = out;
	*sig_len = 64;
	return NATS_OK;
}

const char *nats_signer_jwt(const struct nats_signer *s) { return s->jwt; }

static natsStatus user_jwt(char **jwt, char **err_txt, void *closure)
{
	(void)err_txt;
	const struct nats_signer *s = closure;
	*jwt = strdup(s->jwt); /* freed by cnats with free() */
	return *jwt ? NATS_OK : NATS_NO_MEMORY;
}

int nats_signer_load(const struct config_cluster *cfg, struct nats_signer **out, char *err, size_t errlen)
{
	*out = NULL;
	const char *key = cfg->credentials ? "credentials" : "nkey_seed";
	const char *path = cfg->credentials ? cfg->credentials : cfg->nkey_seed;
	if (!path)
		return 0;
	char *text = NULL;
	size_t tlen = 0;
	int rc = wisp_read_file(path, 1u << 20, &text, &tlen);
	if (rc != 0) {
		snprintf(err, errlen, "cluster.%s: %s: %s", key, path, wisp_strerror(rc));
		return rc == WISP_ENOMEM ? rc : WISP_ECONFIG;
	}
	const char *why = NULL;
	struct nats_signer *s = wisp_calloc(1, sizeof *s);
	size_t n = 0;
	const char *seed = text ? line_starting(text, tlen, "SU", &n) : NULL;
	char pub[64];
	if (!s) {
		why = "out of memory";
	} else if (cfg->credentials) {
		size_t jn = 0;
		const char *jwt = text ? line_after(text, tlen, "BEGIN NATS USER JWT", &jn) : NULL;
		seed = text ? line_after(text, tlen, "BEGIN USER NKEY SEED", &n) : NULL;
		if (!jwt || !seed)
			why = "not a .creds file (a user JWT and a user NKey seed block)";
		else if (!(s->jwt = wisp_strndup(jwt, jn)))
			why = "out of memory";
	} else if (!seed) {
		why = "no user NKey seed (a line starting \"SU\")";
	}
	if (!why)
		why = seed_key(seed, n, &s->key, pub);
	if (!why && cfg->nkey && strcmp(pub, cfg->nkey) != 0)
		why = "its public key is not cluster.nkey";
	if (text) {
		OPENSSL_cleanse(text, tlen);
		wisp_free(text);
	}
	if (why) {
		snprintf(err, errlen, "cluster.%s: %s: %s", key, path, why);
		nats_signer_free(s);
		return WISP_ECONFIG;
	}
	*out = s;
	return 0;
}

void nats_signer_free(struct nats_signer *s)
{
	if (!s)
		return;
	EVP_PKEY_free(s->key);
	wisp_free(s->jwt);
	wisp_free(s);
}

const char *nats_last_error(void)
{
	natsStatus st;
	const char *e = nats_GetLastError(&st);
	if (!e)
		return "";
	/* cnats prefixes "(conn.c:733): "; the reader wants the reason. */
	if (e[0] == '(') {
		const char *close = strstr(e, "): ");
		if (close)
			return close + 3;
	}
	return e;
}

int nats_auth_apply(natsOptions *o, const struct config_cluster *cfg, const struct nats_signer *signer, char *err,
		    size_t errlen)
{
	natsStatus st = NATS_OK;
	/* How every connection notices a server that stopped reading or
	 * answering (sender.h): a write waits at most write_deadline, and two
	 * PINGs unanswered lose the connection (then cnats reconnects, and the
	 * node runs as with NATS down). Zero in a config made by hand: cnats's
	 * defaults. */
	if (cfg->write_deadline)
		st = natsOptions_SetWriteDeadline(o, cfg->write_deadline);
	if (st == NATS_OK && cfg->ping_interval)
		st = natsOptions_SetPingInterval(o, (int64_t)cfg->ping_interval * 1000);
	if (st == NATS_OK && cfg->ping_interval)
		st = natsOptions_SetMaxPingsOut(o, 2);
	if (st != NATS_OK)
		return failed(st, "ping_interval", NULL, err, errlen);
	if (cfg->connect_timeout && (st = natsOptions_SetTimeout(o, (int64_t)cfg->connect_timeout * 1000)) != NATS_OK)
		return failed(st, "connect_timeout", NULL, err, errlen);
	/* Messages cnats keeps per subscription before its delivery thread
	 * hands them to the inbox: no more than the inbox itself holds
	 * (cnats's own default is 65,536 or 64 MiB per subscription). */
	if (cfg->inbound_queue && cfg->inbound_queue <= INT_MAX &&
	    (st = natsOptions_SetMaxPendingMsgs(o, (int)cfg->inbound_queue)) != NATS_OK)
		return failed(st, "inbound_queue", NULL, err, errlen);
	if (config_cluster_tls(cfg)) {
		if ((st = natsOptions_SetSecure(o, true)) != NATS_OK)
			return failed(st, "nats", NULL, err, errlen);
		if (cfg->cafile && (st = natsOptions_LoadCATrustedCertificates(o, cfg->cafile)) != NATS_OK)
			return failed(st, "cafile", cfg->cafile, err, errlen);
		if (cfg->certfile &&
		    (st = natsOptions_LoadCertificatesChain(o, cfg->certfile, cfg->keyfile)) != NATS_OK)
			return failed(st, "certfile", cfg->certfile, err, errlen);
		/* Without a name cnats checks each server against its own URL's
		 * host. */
		st = NATS_OK;
		if (cfg->tls_skip_verify)
			st = natsOptions_SkipServerVerification(o, true);
		else if (cfg->tls_server_name)
			st = natsOptions_SetExpectedHostname(o, cfg->tls_server_name);
		if (st != NATS_OK)
			return failed(st, cfg->tls_skip_verify ? "tls_skip_verify" : "tls_server_name", NULL, err, errlen);
	}
	if (cfg->username && (st = natsOptions_SetUserInfo(o, cfg->username, cfg->password)) != NATS_OK)
		return failed(st, "username", NULL, err, errlen);
	if (cfg->token && (st = natsOptions_SetToken(o, cfg->token)) != NATS_OK)
		return failed(st, "token", NULL, err, errlen);
	if (signer && signer->jwt)
		st = natsOptions_SetUserCredentialsCallbacks(o, user_jwt, (void *)signer, sign_nonce, (void *)signer);
	else if (signer)
		st = natsOptions_SetNKey(o, cfg->nkey, sign_nonce, (void *)signer);
	else
		st = NATS_OK;
	if (st != NATS_OK)
		return failed(st, signer && signer->jwt ? "credentials" : "nkey", NULL, err, errlen);
	return 0;
}

void nats_urls_redacted(const char *urls, char *out, size_t cap)
{
	size_t n = 0;
	out[0] = '\0';
	for (const char *s = urls; s && *s && n + 1 < cap;) {
		const char *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);
		struct config_nats_url u;
		config_nats_url_split(s, len, &u);
		int w;
		if (u.userinfo) {
			size_t head = (size_t)(u.userinfo - s);
			const char *rest = u.userinfo + u.userinfo_len; /* from the '@' */
			w = snprintf(out + n, cap - n, "%s%.*s***%.*s", n ? "," : "", (int)head, s,
				     (int)(len - (size_t)(rest - s)), rest);
		} else {
			w = snprintf(out + n, cap - n, "%s%.*s", n ? "," : "", (int)len, s);
		}
		if (w < 0)
			break;
		n += (size_t)w < cap - n ? (size_t)w : cap - n - 1;
		s = comma ? comma + 1 : s + len;
	}
}
