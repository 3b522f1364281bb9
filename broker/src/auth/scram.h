/*
 * SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, without channel
 * binding: the key derivation wisp_passwd and the password file use, and
 * the enhanced authentication method "SCRAM-SHA-256" (auth/method.h).
 *
 * The exchange in MQTT 5: CONNECT carries client-first-message, AUTH 0x18
 * from the server carries server-first-message, AUTH 0x18 from the client
 * client-final-message, and the CONNACK (or AUTH 0x00 when
 * re-authenticating) server-final-message ("v=...").
 *
 * The server keeps StoredKey = H(HMAC(SaltedPassword, "Client Key")) and
 * ServerKey = HMAC(SaltedPassword, "Server Key"), never the password or
 * SaltedPassword; a stolen file does not let anyone log in without the
 * PBKDF2 search. A user name the file does not know (or knows only with a
 * $pbkdf2-sha512$ hash, which SCRAM cannot use) gets a salt derived from
 * the name and a secret, so the reply does not say which users exist, and
 * fails at the proof with "bad user name or password" like a wrong one.
 */
#ifndef WISP_AUTH_SCRAM_H
#define WISP_AUTH_SCRAM_H

#include <stddef.h>
#include <stdint.h>

#include "method.h"

#define SCRAM_KEY_LEN 32u /* SHA-256 */
/* RFC 7677 §4: at least 4096 iterations. */
#define SCRAM_ITERATIONS_MIN 4096u
/* Server nonce characters added to the client's. */
#define SCRAM_SERVER_NONCE_LEN 30u

/* Derives StoredKey and ServerKey from a password: PBKDF2-HMAC-SHA256 with
 * `salt` and `iterations`, then RFC 5802 §3. 0, or WISP_EINVAL/WISP_ENOMEM. */
int scram_keys(const char *password, size_t plen, const uint8_t *salt, size_t slen, unsigned iterations,
	       uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN]);

/* The "SCRAM-SHA-256" method (in auth_method_find's table). */
extern const struct auth_method scram_sha256_method;

#endif
