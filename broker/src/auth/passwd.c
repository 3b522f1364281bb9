/*
 * Password file: a chained hash table of users keyed by name (FNV-1a), each
 * holding its PBKDF2 parameters. The table is built once per load and not
 * changed afterwards, except for the success memo of passwd_check.
 *
 * Invariants: every entry has 1..PASSWD_ITERATIONS_MAX iterations, an 8..64
 * byte salt and a 16..64 byte hash; user names are unique, non-empty and
 * free of ':' and control characters. Secrets never reach the log or err.
 *
 * Cost: lookup O(1) expected; verification is the PBKDF2 (see passwd.h).
 * Memory: one allocation per user plus the bucket array, from wisp_malloc.
 * mbedTLS allocates its HMAC context with its own calloc, briefly.
 */
#include "passwd.h"

#include <errno.h>
#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/sha512.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "file.h"
#include "err.h"
#include "scram.h"

#define PREFIX_WISP "$pbkdf2-sha512$"
#define PREFIX_MOSQ "$7$"
#define PREFIX_SCRAM "$scram-sha-256$"
#define SALT_MIN 8u
#define SALT_MAX 64u
#define HASH_MIN 16u
#define HASH_MAX 64u
#define PASSWD_FILE_MAX (16u * 1024u * 1024u)

struct entry {
	struct entry *next; /* bucket chain */
	bool scram;         /* hash is StoredKey || ServerKey (SCRAM-SHA-256) */
	unsigned iterations;
	size_t salt_len, hash_len;
	uint8_t salt[SALT_MAX];
	uint8_t hash[HASH_MAX];
	bool has_memo;
	uint8_t memo[64]; /* SHA-512(hash || password) of the last good login */
	size_t ulen;
	char user[]; /* NUL-terminated */
};

struct passwd_db {
	struct entry **buckets;
	size_t nbuckets; /* power of two */
	size_t count;
	struct entry *dummy; /* verified against for unknown users */
};

/* ---- small helpers ---- */

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* The compiler may not turn this into an early-exit memcmp: the volatile
 * accumulator keeps every byte compared, so timing does not say how many
 * leading bytes of a guess were right. */
static bool ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	volatile uint8_t diff = 0;
	for (size_t i = 0; i < n; i++)
		diff |= (uint8_t)(a[i] ^ b[i]);
	return diff == 0;
}

static bool b64_valid(const char *s, size_t n)
{
	if (n == 0 || n % 4 != 0)
		return false;
	size_t pad = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '=') {
			pad++;
			continue;
		}
		if (pad)
			return false; /* '=' only at the end */
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/'))
			return false;
	}
	return pad <= 2;
}

/* Decodes standard base64 into out (capacity cap); 0 on bad input or size. */
static size_t b64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
	if (!b64_valid(s, n))
		return 0;
	size_t olen = 0;
	if (mbedtls_base64_decode(out, cap, &olen, (const unsigned char *)s, n) != 0)
		return 0;
	return olen;
}

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
							   ...)
{
	if (!errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- parsing ---- */

struct parsed {
	const char *user;
	size_t ulen;
	bool scram;
	unsigned iterations;
	size_t salt_len, hash_len;
	uint8_t salt[SALT_MAX];
	uint8_t hash[HASH_MAX];
};

int passwd_check_username(const char *user, size_t ulen, char *err, size_t errlen)
{
	if (ulen == 0) {
		set_err(err, errlen, "empty user name");
		return WISP_EINVAL;
	}
	if (ulen > PASSWD_USERNAME_MAX) {
		set_err(err, errlen, "user name longer than %u bytes", PASSWD_USERNAME_MAX);
		return WISP_EINVAL;
	}
	if (user[0] == '#') {
		set_err(err, errlen, "user name starts with '#' (the line would be read as a comment)");
		return WISP_EINVAL;
	}
	for (size_t i = 0; i < ulen; i++) {
		if ((unsigned char)user[i] < 0x20 || user[i] == 0x7F) {
			set_err(err, errlen, "control character in user name");
			return WISP_EINVAL;
		}
		if (user[i] == ':') {
			set_err(err, errlen, "':' in user name (it ends the name in the file)");
			return WISP_EINVAL;
		}
	}
	return 0;
}

/* Parses "user:encoded" (no line terminator). On error returns WISP_EINVAL
 * with a reason that never quotes the secret part. */
static int parse_line(const char *line, size_t len, struct parsed *out, char *err, size_t errlen)
{
	const char *colon = memchr(line, ':', len);
	if (!colon) {
		set_err(err, errlen, "missing ':' between user name and password hash");
		return WISP_EINVAL;
	}
	size_t ulen = (size_t)(colon - line);
	if (passwd_check_username(line, ulen, err, errlen) != 0)
		return WISP_EINVAL;
	const char *p = colon + 1;
	size_t rest = len - ulen - 1;
	size_t plen;
	bool scram = false;
	if (rest >= sizeof PREFIX_SCRAM - 1 && memcmp(p, PREFIX_SCRAM, sizeof PREFIX_SCRAM - 1) == 0) {
		plen = sizeof PREFIX_SCRAM - 1;
		scram = true;
	} else if (rest >= sizeof PREFIX_WISP - 1 && memcmp(p, PREFIX_WISP, sizeof PREFIX_WISP - 1) == 0) {
		plen = sizeof PREFIX_WISP - 1;
	} else if (rest >= sizeof PREFIX_MOSQ - 1 &&
		   memcmp(p, PREFIX_MOSQ, sizeof PREFIX_MOSQ - 1) == 0) {
		plen = sizeof PREFIX_MOSQ - 1;
	} else if (rest >= 3 && memcmp(p, "$6$", 3) == 0) {
		set_err(err, errlen,
			"user '%.*s': mosquitto $6$ hashes (one round of SHA-512) are too weak; set the "
			"password again with wisp_passwd",
			(int)ulen, line);
		return WISP_EINVAL;
	} else {
		set_err(err, errlen,
			"user '%.*s': not a $pbkdf2-sha512$ hash (a plain-text password? run "
			"wisp_passwd -U)",
			(int)ulen, line);
		return WISP_EINVAL;
	}
	p += plen;
	rest -= plen;

	/* <iterations>$<salt>$<hash> */
	const char *d1 = memchr(p, '$', rest);
	const char *d2 = d1 ? memchr(d1 + 1, '$', rest - (size_t)(d1 + 1 - p)) : NULL;
	if (!d1 || !d2) {
		set_err(err, errlen, "user '%.*s': expected <iterations>$<salt>$<hash> after the prefix",
			(int)ulen, line);
		return WISP_EINVAL;
	}
	uint64_t it = 0;
	if (d1 == p) {
		set_err(err, errlen, "user '%.*s': missing iteration count", (int)ulen, line);
		return WISP_EINVAL;
	}
	for (const char *q = p; q < d1; q++) {
		if (*q < '0' || *q > '9' || it > PASSWD_ITERATIONS_MAX) {
			set_err(err, errlen, "user '%.*s': iteration count must be 1 to %u", (int)ulen,
				line, PASSWD_ITERATIONS_MAX);
			return WISP_EINVAL;
		}
		it = it * 10 + (uint64_t)(*q - '0');
	}
	if (it < 1 || it > PASSWD_ITERATIONS_MAX) {
		set_err(err, errlen, "user '%.*s': iteration count must be 1 to %u", (int)ulen, line,
			PASSWD_ITERATIONS_MAX);
		return WISP_EINVAL;
	}
	const char *salt = d1 + 1, *hash = d2 + 1, *end = p + rest;
	size_t salt_len = b64_decode(salt, (size_t)(d2 - salt), out->salt, sizeof out->salt);
	if (salt_len < SALT_MIN || salt_len > SALT_MAX) {
		set_err(err, errlen, "user '%.*s': salt must be base64 of %u to %u bytes", (int)ulen,
			line, SALT_MIN, SALT_MAX);
		return WISP_EINVAL;
	}
	if (scram) {
		/* <StoredKey>$<ServerKey>, each base64 of 32 bytes */
		const char *d3 = memchr(hash, '$', (size_t)(end - hash));
		if (!d3 || b64_decode(hash, (size_t)(d3 - hash), out->hash, SCRAM_KEY_LEN) != SCRAM_KEY_LEN ||
		    b64_decode(d3 + 1, (size_t)(end - d3 - 1), out->hash + SCRAM_KEY_LEN, SCRAM_KEY_LEN) !=
			    SCRAM_KEY_LEN) {
			set_err(err, errlen,
				"user '%.*s': expected <iterations>$<salt>$<StoredKey>$<ServerKey> after "
				"$scram-sha-256$, each key base64 of %u bytes",
				(int)ulen, line, SCRAM_KEY_LEN);
			return WISP_EINVAL;
		}
		out->user = line;
		out->ulen = ulen;
		out->scram = true;
		out->iterations = (unsigned)it;
		out->salt_len = salt_len;
		out->hash_len = 2 * SCRAM_KEY_LEN;
		return 0;
	}
	size_t hash_len = b64_decode(hash, (size_t)(end - hash), out->hash, sizeof out->hash);
	if (hash_len < HASH_MIN || hash_len > HASH_MAX) {
		set_err(err, errlen, "user '%.*s': hash must be base64 of %u to %u bytes", (int)ulen,
			line, HASH_MIN, HASH_MAX);
		return WISP_EINVAL;
	}
	out->user = line;
	out->ulen = ulen;
	out->scram = false;
	out->iterations = (unsigned)it;
	out->salt_len = salt_len;
	out->hash_len = hash_len;
	return 0;
}

int passwd_check_line(const char *line, size_t len, char *err, size_t errlen)
{
	struct parsed p;
	if (errlen)
		err[0] = '\0';
	return parse_line(line, len, &p, err, errlen);
}

static struct entry *entry_new(const struct parsed *p)
{
	struct entry *e = wisp_malloc(sizeof *e + p->ulen + 1);
	if (!e)
		return NULL;
	memset(e, 0, sizeof *e);
	e->scram = p->scram;
	e->iterations = p->iterations;
	e->salt_len = p->salt_len;
	e->hash_len = p->hash_len;
	memcpy(e->salt, p->salt, p->salt_len);
	memcpy(e->hash, p->hash, p->hash_len);
	e->ulen = p->ulen;
	memcpy(e->user, p->user, p->ulen);
	e->user[p->ulen] = '\0';
	return e;
}

static struct entry *lookup(const struct passwd_db *db, const char *user, size_t ulen)
{
	if (!db->nbuckets)
		return NULL;
	for (struct entry *e = db->buckets[fnv1a(user, ulen) & (db->nbuckets - 1)]; e; e = e->next)
		if (e->ulen == ulen && memcmp(e->user, user, ulen) == 0)
			return e;
	return NULL;
}

static int grow(struct passwd_db *db)
{
	size_t n = db->nbuckets ? db->nbuckets * 2 : 16;
	struct entry **b = wisp_calloc(n, sizeof *b);
	if (!b)
		return WISP_ENOMEM;
	for (size_t i = 0; i < db->nbuckets; i++) {
		struct entry *e = db->buckets[i];
		while (e) {
			struct entry *next = e->next;
			size_t h = fnv1a(e->user, e->ulen) & (n - 1);
			e->next = b[h];
			b[h] = e;
			e = next;
		}
	}
	wisp_free(db->buckets);
	db->buckets = b;
	db->nbuckets = n;
	return 0;
}

static int insert(struct passwd_db *db, struct entry *e)
{
	if (db->count + 1 > db->nbuckets / 4 * 3) {
		int rc = grow(db);
		if (rc)
			return rc;
	}
	size_t h = fnv1a(e->user, e->ulen) & (db->nbuckets - 1);
	e->next = db->buckets[h];
	db->buckets[h] = e;
	db->count++;
	return 0;
}

int passwd_parse(const char *text, size_t len, const char *name, struct passwd_db **out,
		 char *err, size_t errlen)
{
	*out = NULL;
	if (errlen)
		err[0] = '\0';
	struct passwd_db *db = wisp_calloc(1, sizeof *db);
	if (!db)
		goto nomem;
	size_t lineno = 0;
	for (size_t pos = 0; pos < len;) {
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos;
		pos += n + (nl ? 1 : 0);
		lineno++;
		if (n && line[n - 1] == '\r')
			n--;
		size_t lead = 0;
		while (lead < n && (line[lead] == ' ' || line[lead] == '\t'))
			lead++;
		if (lead == n || line[0] == '#')
			continue;
		char why[256];
		struct parsed p;
		if (n > PASSWD_LINE_MAX) {
			set_err(err, errlen, "%s:%zu: line longer than %u bytes", name, lineno,
				PASSWD_LINE_MAX);
			goto invalid;
		}
		if (memchr(line, '\0', n)) {
			set_err(err, errlen, "%s:%zu: NUL byte in line", name, lineno);
			goto invalid;
		}
		if (parse_line(line, n, &p, why, sizeof why)) {
			set_err(err, errlen, "%s:%zu: %s", name, lineno, why);
			goto invalid;
		}
		if (lookup(db, p.user, p.ulen)) {
			set_err(err, errlen, "%s:%zu: user '%.*s' appears twice", name, lineno,
				(int)p.ulen, p.user);
			goto invalid;
		}
		struct entry *e = entry_new(&p);
		if (!e)
			goto nomem;
		if (insert(db, e)) {
			wisp_free(e);
			goto nomem;
		}
		/* An unknown user costs what the dearest real user costs: with
		 * the first line's count instead, a file of mixed counts
		 * (wisp_passwd -I, imported $7$ lines) would tell by timing which
		 * user names exist. PBKDF2's cost is its iteration count (every
		 * hash here is at most one SHA-512 block long). */
		if (!db->dummy) {
			db->dummy = entry_new(&p);
			if (!db->dummy)
				goto nomem;
			memset(db->dummy->hash, 0, sizeof db->dummy->hash);
		} else if (p.iterations > db->dummy->iterations) {
			db->dummy->iterations = p.iterations;
		}
	}
	*out = db;
	return 0;
invalid:
	passwd_free(db);
	return WISP_EINVAL;
nomem:
	passwd_free(db);
	set_err(err, errlen, "%s: out of memory", name);
	return WISP_ENOMEM;
}

int passwd_load(const char *path, struct passwd_db **out, char *err, size_t errlen)
{
	*out = NULL;
	char *buf;
	size_t len;
	int rc = wisp_read_file(path, PASSWD_FILE_MAX, &buf, &len);
	if (rc == WISP_ELIMIT)
		set_err(err, errlen, "%s: larger than %u bytes", path, PASSWD_FILE_MAX);
	else if (rc == WISP_ENOMEM)
		set_err(err, errlen, "%s: out of memory", path);
	else if (rc != 0)
		set_err(err, errlen, "%s: %s", path, strerror(errno));
	if (rc != 0)
		return rc == WISP_ENOENT ? WISP_EIO : rc;
	rc = passwd_parse(buf ? buf : "", len, path, out, err, errlen);
	if (buf) {
		/* The buffer held hashes; do not leave them in freed memory. */
		memset(buf, 0, len);
		wisp_free(buf);
	}
	return rc;
}

void passwd_free(struct passwd_db *db)
{
	if (!db)
		return;
	for (size_t i = 0; i < db->nbuckets; i++) {
		struct entry *e = db->buckets[i];
		while (e) {
			struct entry *next = e->next;
			memset(e, 0, sizeof *e);
			wisp_free(e);
			e = next;
		}
	}
	wisp_free(db->buckets);
	wisp_free(db->dummy);
	wisp_free(db);
}

size_t passwd_count(const struct passwd_db *db) { return db ? db->count : 0; }

unsigned passwd_unknown_user_iterations(const struct passwd_db *db)
{
	return db && db->dummy ? db->dummy->iterations : 0;
}

bool passwd_has_user(const struct passwd_db *db, const char *username, size_t ulen)
{
	return db && username && lookup(db, username, ulen) != NULL;
}

/* ---- verification ---- */

static int pbkdf2(const uint8_t *salt, size_t slen, unsigned iterations, const char *password,
		  size_t plen, uint8_t *out, size_t outlen)
{
	mbedtls_md_context_t md;
	mbedtls_md_init(&md);
	int rc = mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA512), 1);
	if (rc == 0)
		rc = mbedtls_pkcs5_pbkdf2_hmac(&md, (const unsigned char *)password, plen, salt, slen,
					       iterations, (uint32_t)outlen, out);
	mbedtls_md_free(&md);
	return rc == 0 ? 0 : (rc == MBEDTLS_ERR_MD_ALLOC_FAILED ? WISP_ENOMEM : WISP_EINVAL);
}

static bool verify_entry(const struct entry *e, const char *password, size_t plen)
{
	uint8_t got[HASH_MAX];
	if (e->scram) {
		/* A SCRAM user may still log in with the password in CONNECT:
		 * the same PBKDF2 gives the StoredKey to compare. */
		uint8_t server_key[SCRAM_KEY_LEN];
		bool ok = scram_keys(password, plen, e->salt, e->salt_len, e->iterations, got, server_key) == 0 &&
			  ct_equal(got, e->hash, SCRAM_KEY_LEN);
		memset(got, 0, sizeof got);
		memset(server_key, 0, sizeof server_key);
		return ok;
	}
	if (pbkdf2(e->salt, e->salt_len, e->iterations, password, plen, got, e->hash_len))
		return false;
	bool ok = ct_equal(got, e->hash, e->hash_len);
	memset(got, 0, sizeof got);
	return ok;
}

bool passwd_verify(const struct passwd_db *db, const char *username, size_t ulen,
		   const char *password, size_t plen)
{
	if (!db || !username || (!password && plen))
		return false;
	if (!password)
		password = "";
	const struct entry *e = lookup(db, username, ulen);
	if (!e) {
		if (db->dummy)
			(void)verify_entry(db->dummy, password, plen);
		return false;
	}
	return verify_entry(e, password, plen);
}

static void memo_of(const struct entry *e, const char *password, size_t plen, uint8_t out[64])
{
	mbedtls_sha512_context c;
	mbedtls_sha512_init(&c);
	mbedtls_sha512_starts_ret(&c, 0);
	mbedtls_sha512_update_ret(&c, e->hash, e->hash_len);
	mbedtls_sha512_update_ret(&c, (const unsigned char *)password, plen);
	mbedtls_sha512_finish_ret(&c, out);
	mbedtls_sha512_free(&c);
}

bool passwd_memo_hit(const struct passwd_db *db, const char *username, size_t ulen, const char *password,
		     size_t plen)
{
	if (!db || !username || (!password && plen))
		return false;
	if (!password)
		password = "";
	struct entry *e = lookup(db, username, ulen);
	if (!e || !e->has_memo)
		return false;
	uint8_t m[64];
	memo_of(e, password, plen, m);
	bool hit = ct_equal(m, e->memo, sizeof m);
	memset(m, 0, sizeof m);
	return hit;
}

void passwd_memo_set(struct passwd_db *db, const char *username, size_t ulen, const char *password,
		     size_t plen)
{
	if (!db || !username || (!password && plen))
		return;
	if (!password)
		password = "";
	struct entry *e = lookup(db, username, ulen);
	if (!e)
		return;
	memo_of(e, password, plen, e->memo);
	e->has_memo = true;
}

bool passwd_check(struct passwd_db *db, const char *username, size_t ulen, const char *password,
		  size_t plen)
{
	if (passwd_memo_hit(db, username, ulen, password, plen))
		return true;
	if (!passwd_verify(db, username, ulen, password, plen))
		return false;
	passwd_memo_set(db, username, ulen, password, plen);
	return true;
}

/* ---- hashing new passwords ---- */

static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;
static bool drbg_ready;

int passwd_random(uint8_t *out, size_t n)
{
	if (!drbg_ready) {
		static const char pers[] = "wisp passwd salt";
		mbedtls_entropy_init(&entropy);
		mbedtls_ctr_drbg_init(&drbg);
		if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
					  (const unsigned char *)pers, sizeof pers - 1) != 0) {
			mbedtls_ctr_drbg_free(&drbg);
			mbedtls_entropy_free(&entropy);
			return WISP_EIO;
		}
		drbg_ready = true;
	}
	return mbedtls_ctr_drbg_random(&drbg, out, n) == 0 ? 0 : WISP_EIO;
}

int passwd_hash(const char *password, size_t plen, unsigned iterations, char *out, size_t outlen)
{
	if ((!password && plen) || iterations < 1 || iterations > PASSWD_ITERATIONS_MAX)
		return WISP_EINVAL;
	if (!password)
		password = "";
	uint8_t salt[PASSWD_SALT_LEN], hash[PASSWD_HASH_LEN];
	int rc = passwd_random(salt, sizeof salt);
	if (rc)
		return rc;
	if ((rc = pbkdf2(salt, sizeof salt, iterations, password, plen, hash, sizeof hash)))
		return rc;
	unsigned char s64[64], h64[128];
	size_t sl, hl;
	if (mbedtls_base64_encode(s64, sizeof s64, &sl, salt, sizeof salt) ||
	    mbedtls_base64_encode(h64, sizeof h64, &hl, hash, sizeof hash)) {
		memset(hash, 0, sizeof hash);
		return WISP_ELIMIT;
	}
	memset(hash, 0, sizeof hash);
	int n = snprintf(out, outlen, PREFIX_WISP "%u$%s$%s", iterations, (const char *)s64,
			 (const char *)h64);
	if (n < 0 || (size_t)n >= outlen) {
		if (outlen)
			out[0] = '\0';
		return WISP_ELIMIT;
	}
	return n;
}

bool passwd_scram_get(const struct passwd_db *db, const char *username, size_t ulen, struct passwd_scram *out)
{
	const struct entry *e = db && username ? lookup(db, username, ulen) : NULL;
	if (!e || !e->scram)
		return false;
	out->iterations = e->iterations;
	out->salt_len = e->salt_len;
	memcpy(out->salt, e->salt, e->salt_len);
	memcpy(out->stored_key, e->hash, SCRAM_KEY_LEN);
	memcpy(out->server_key, e->hash + SCRAM_KEY_LEN, SCRAM_KEY_LEN);
	return true;
}

int passwd_hash_scram(const char *password, size_t plen, unsigned iterations, char *out, size_t outlen)
{
	if ((!password && plen) || iterations < SCRAM_ITERATIONS_MIN || iterations > PASSWD_ITERATIONS_MAX)
		return WISP_EINVAL;
	if (!password)
		password = "";
	uint8_t salt[PASSWD_SALT_LEN], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];
	int rc = passwd_random(salt, sizeof salt);
	if (rc)
		return rc;
	if ((rc = scram_keys(password, plen, salt, sizeof salt, iterations, stored, server)))
		return rc;
	unsigned char s64[64], k1[64], k2[64];
	size_t sl, l1, l2;
	rc = mbedtls_base64_encode(s64, sizeof s64, &sl, salt, sizeof salt) ||
	     mbedtls_base64_encode(k1, sizeof k1, &l1, stored, sizeof stored) ||
	     mbedtls_base64_encode(k2, sizeof k2, &l2, server, sizeof server);
	memset(stored, 0, sizeof stored);
	memset(server, 0, sizeof server);
	if (rc)
		return WISP_ELIMIT;
	int n = snprintf(out, outlen, PREFIX_SCRAM "%u$%s$%s$%s", iterations, (const char *)s64, (const char *)k1,
			 (const char *)k2);
	if (n < 0 || (size_t)n >= outlen) {
		if (outlen)
			out[0] = '\0';
		return WISP_ELIMIT;
	}
	return n;
}
