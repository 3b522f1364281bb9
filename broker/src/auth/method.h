/*
 * Enhanced authentication providers (MQTT 5, 4.12): a table of methods by
 * the name a CONNECT's Authentication Method gives, each a small state
 * machine of start (the CONNECT's Authentication Data) and step (each AUTH
 * packet's). The protocol side (proto/enhanced_auth.c) carries the bytes;
 * a method knows nothing of packets, so adding one (SCRAM-SHA-512, a token
 * method) touches this table and its own file only.
 *
 * State exists only for a connection in an exchange: the caller allocates
 * `state_size` bytes at start and frees them at the end (a 3.1.1 or
 * password connection never has any).
 *
 * Cost: start and step run on the loop thread and must stay cheap (a few
 * hashes). SCRAM is built for that: the PBKDF2 is the client's; the server
 * keeps StoredKey and ServerKey and spends a few SHA-256 per login (~14 us).
 * There is no "pending" result yet: a method that needs a slow derivation
 * must first add one and run it on core/bg.h's helper threads, as
 * proto/auth.c does for password checks.
 */
#ifndef WISP_AUTH_METHOD_H
#define WISP_AUTH_METHOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct passwd_db;

/* Largest Authentication Data a method sends in one packet. */
#define AUTH_METHOD_DATA_MAX 512u
/* Longest user name a method may prove (the password file's bound). */
#define AUTH_METHOD_USER_MAX 512u
/* Steps (AUTH packets from the client) one exchange may take, whatever the
 * method: SCRAM needs one; a client that keeps an exchange going is cut
 * off long before limits.connect_timeout. */
#define AUTH_EXCHANGE_MAX_STEPS 4u

enum auth_step {
	AUTH_STEP_CONTINUE = 0, /* send out.data in an AUTH 0x18, wait for the next */
	AUTH_STEP_SUCCESS = 1,  /* send out.data (may be empty) with the CONNACK or AUTH 0x00 */
	AUTH_STEP_FAILURE = 2,  /* refuse with out.reason */
};

/* Why an exchange failed, as MQTT 5 reason codes. */
#define AUTH_FAIL_BAD_CREDENTIALS 0x86u
#define AUTH_FAIL_NOT_AUTHORIZED 0x87u
#define AUTH_FAIL_BAD_METHOD 0x8Cu

/* What a method may use: the password file, and a source of nonce text
 * (tests give a fixed one). */
struct auth_method_env {
	const struct passwd_db *db;
	/* Writes `len` printable ASCII characters except ',' into out; 0 or
	 * a negative WISP_E*. */
	int (*nonce)(char *out, size_t len);
};

/* Data to send, and the verdict's detail. The caller owns `data`. */
struct auth_out {
	uint8_t data[AUTH_METHOD_DATA_MAX];
	size_t len;
	uint8_t reason;         /* AUTH_FAIL_*, on AUTH_STEP_FAILURE */
	const char *user;       /* on success: the proven user name (in the state) */
	size_t user_len;
};

/* The start of an exchange: the CONNECT's (or the re-authenticating AUTH's)
 * view. `user` is the CONNECT's User Name, NULL when absent. Borrowed until
 * return. */
struct auth_in {
	const char *user;
	size_t user_len;
	const uint8_t *data;
	size_t len;
};

struct auth_method {
	const char *name;
	size_t state_size;
	enum auth_step (*start)(void *state, const struct auth_method_env *env, const struct auth_in *in,
				struct auth_out *out);
	enum auth_step (*step)(void *state, const struct auth_method_env *env, const uint8_t *data, size_t len,
			       struct auth_out *out);
	/* Wipes what the state holds (secrets, nonces); the caller frees it. */
	void (*end)(void *state);
};

/* The method named `name` (case-sensitive, as MQTT strings compare), or NULL. */
const struct auth_method *auth_method_find(const char *name, size_t len);

/* One connection's exchange: the method, its step count and its state. */
struct auth_exchange {
	const struct auth_method *method;
	unsigned steps;
	bool done;       /* succeeded or failed: no further step */
	_Alignas(max_align_t) unsigned char state[];
};

/*
 * Starts an exchange of `m`. *out_x is set (wisp_malloc'd; the caller
 * ends it with auth_exchange_free) unless the result is a failure with
 * out->reason set, or WISP_ENOMEM is returned.
 */
int auth_exchange_start(const struct auth_method *m, const struct auth_method_env *env, const struct auth_in *in,
			struct auth_out *out, struct auth_exchange **out_x, enum auth_step *result);
/* The next step: AUTH_STEP_FAILURE with AUTH_FAIL_NOT_AUTHORIZED after
 * AUTH_EXCHANGE_MAX_STEPS, or once the exchange is done. */
enum auth_step auth_exchange_step(struct auth_exchange *x, const struct auth_method_env *env, const uint8_t *data,
				  size_t len, struct auth_out *out);
void auth_exchange_free(struct auth_exchange *x);

#endif
