/*
 * Password file: parsing, lookup and verification of salted PBKDF2-HMAC-
 * SHA512 hashes, plus hashing of new passwords for wisp_passwd. Pure: no
 * sockets, no loop; only passwd_load touches the file system.
 *
 * File format (documented for operators in config/README.md), one user per
 * line, '#' comments and empty lines ignored, "\r\n" accepted:
 *
 *     username:$pbkdf2-sha512$<iterations>$<base64 salt>$<base64 hash>
 *
 * Mosquitto's "$7$<iterations>$<salt>$<hash>" (the same PBKDF2-SHA512) is
 * read too, so a mosquitto_passwd file works unchanged.
 *
 * Cost model: a verification runs the whole PBKDF2, about 2 us per
 * iteration on a current x86 core (210000 iterations ~ 0.4 s). That is the
 * point against stolen files, and a hazard on a single-threaded loop: see
 * passwd_check (cache of successful logins) and passwd_verify (thread-safe,
 * for a helper thread).
 *
 * Threading: passwd_check and passwd_hash are for one thread (the loop, the
 * tool); passwd_verify may run on any thread while nobody frees the db.
 */
#ifndef WISP_AUTH_PASSWD_H
#define WISP_AUTH_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* OWASP's 2023 recommendation for PBKDF2-HMAC-SHA512. */
#define PASSWD_ITERATIONS_DEFAULT 210000u
#define PASSWD_ITERATIONS_MAX 10000000u
#define PASSWD_SALT_LEN 16u
#define PASSWD_HASH_LEN 64u
/* Longest line accepted in a password file, and enough for any encoded
 * entry from passwd_hash ("$pbkdf2-sha512$" + digits + base64). */
#define PASSWD_LINE_MAX 1024u
#define PASSWD_ENCODED_MAX 192u
/* Longest user name (MQTT allows 65535; a password file does not need it). */
#define PASSWD_USERNAME_MAX 512u

struct passwd_db;

/*
 * Parses password file text. Returns 0 and sets *out (caller frees with
 * passwd_free), or WISP_EINVAL with "<name>:<line>: <reason>" in err
 * (always NUL-terminated), or WISP_ENOMEM. Any malformed line rejects the
 * whole file, so a typo never silently locks a user out or lets one in.
 */
int passwd_parse(const char *text, size_t len, const char *name, struct passwd_db **out,
		 char *err, size_t errlen);

/* Same from a file; an unreadable file is WISP_EIO with "<path>: <reason>". */
int passwd_load(const char *path, struct passwd_db **out, char *err, size_t errlen);

void passwd_free(struct passwd_db *db);

size_t passwd_count(const struct passwd_db *db);
bool passwd_has_user(const struct passwd_db *db, const char *username, size_t ulen);

/* The PBKDF2 iteration count an unknown user name is verified at: the
 * highest count in the file (0 for an empty file), so a refusal takes as
 * long whether or not the user exists. */
unsigned passwd_unknown_user_iterations(const struct passwd_db *db);

/*
 * True when `username` is in the file and `password` (binary, as in the
 * MQTT CONNECT packet) is its password. The hash comparison is constant
 * time; an unknown user costs a full PBKDF2 against a dummy entry at the
 * file's highest iteration count, so timing does not reveal which user
 * names exist. Thread-safe.
 * As with every HMAC-based KDF, trailing NUL bytes of a password do not
 * change the key: "pw" and "pw\0" verify alike (only matters for binary
 * passwords).
 */
bool passwd_verify(const struct passwd_db *db, const char *username, size_t ulen,
		   const char *password, size_t plen);

/*
 * passwd_verify plus a per-user memo of the last successful password, so a
 * sensor reconnecting with the right password costs one SHA-512 instead of
 * a PBKDF2 (reconnect storms after a broker restart). Failures and changed
 * passwords always take the full path. Loop thread only: it writes the memo.
 */
bool passwd_check(struct passwd_db *db, const char *username, size_t ulen, const char *password,
		  size_t plen);

/*
 * passwd_check in two halves, for a broker that runs passwd_verify on a
 * helper thread: passwd_memo_hit is the cheap first look (loop thread),
 * passwd_memo_set records a password passwd_verify accepted (loop thread).
 */
bool passwd_memo_hit(const struct passwd_db *db, const char *username, size_t ulen, const char *password,
		     size_t plen);
void passwd_memo_set(struct passwd_db *db, const char *username, size_t ulen, const char *password,
		  size_t plen);

/*
 * Hashes `password` with a fresh random salt (CTR-DRBG seeded once from
 * the system entropy source) into the text after "user:" in a password
 * file line, e.g. "$pbkdf2-sha512$210000$<salt>$<hash>", NUL-terminated.
 * iterations must be 1..PASSWD_ITERATIONS_MAX. Returns the length, or
 * WISP_EINVAL, WISP_ELIMIT (out too small: PASSWD_ENCODED_MAX is enough)
 * or WISP_EIO (no entropy). Not thread-safe (one DRBG).
 */
int passwd_hash(const char *password, size_t plen, unsigned iterations, char *out, size_t outlen);

/* Whether passwd_parse can read `user` back from a line: 1..
 * PASSWD_USERNAME_MAX bytes, no ':' or control character (newline
 * included), and no leading '#' (a comment line). 0, or WISP_EINVAL with
 * the reason in err. For wisp_passwd, which must not write a user the
 * broker cannot load. */
int passwd_check_username(const char *user, size_t ulen, char *err, size_t errlen);

/* Checks one "username:encoded" line as passwd_parse would (no '\n'); 0 or
 * WISP_EINVAL with the reason in err. For wisp_passwd -U, which must tell
 * hashed lines from plain-text ones. */
int passwd_check_line(const char *line, size_t len, char *err, size_t errlen);

/*
 * SCRAM-SHA-256 entries (auth/scram.h), for the enhanced authentication
 * method of the same name:
 *
 *     username:$scram-sha-256$<iterations>$<base64 salt>$<base64 StoredKey>$<base64 ServerKey>
 *
 * A $pbkdf2-sha512$ hash cannot serve SCRAM (SCRAM needs keys derived with
 * PBKDF2-HMAC-SHA256 from the password, which the file does not keep), so
 * a user who logs in with SCRAM has this form; the same user can still log
 * in with the password in CONNECT (passwd_verify derives the StoredKey).
 */
struct passwd_scram {
	unsigned iterations;
	size_t salt_len;
	uint8_t salt[64];
	uint8_t stored_key[32];
	uint8_t server_key[32];
};

/* True and *out filled when `username` has a SCRAM-SHA-256 entry. */
bool passwd_scram_get(const struct passwd_db *db, const char *username, size_t ulen, struct passwd_scram *out);

/* passwd_hash for the SCRAM form: "$scram-sha-256$<iterations>$...",
 * iterations SCRAM_ITERATIONS_MIN..PASSWD_ITERATIONS_MAX. */
int passwd_hash_scram(const char *password, size_t plen, unsigned iterations, char *out, size_t outlen);

/* Random bytes from the CTR-DRBG passwd_hash uses. 0 or WISP_EIO. Not
 * thread-safe: the loop thread or the tool only. */
int passwd_random(uint8_t *out, size_t n);

#endif
