/*
 * Authentication and authorization as the broker applies them: the
 * password file and the ACL loaded from configuration, swapped whole on
 * SIGHUP, and password verification off the loop thread.
 *
 * PBKDF2 at a safe iteration count costs a large fraction of a second, so
 * a CONNECT with a password the broker has not seen succeed before is
 * verified on the background thread (core/bg.h) while that connection
 * waits, unread; everyone else keeps being served. A right password is
 * remembered per user (passwd_memo_*), so reconnect storms stay cheap.
 *
 * Against a flood of wrong passwords: at most AUTH_MAX_PENDING checks are
 * queued or running in all, at most auth.max_pending_per_address from one
 * source address, and the check of a connection that goes away before its
 * turn is taken out of the queue, so closed connections cost no helper
 * time. Past a cap the CONNECT gets "server unavailable" and the client
 * retries later.
 */
#ifndef WISP_PROTO_AUTH_H
#define WISP_PROTO_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "acl.h"
#include "codec.h"
#include "passwd.h"

struct broker;
struct config;
struct conn;
struct session;

/* The password file, shared with in-flight verifications (which keep the
 * one they started with alive across a reload). */
struct auth_passwd {
	unsigned refs;
	struct passwd_db *db;
};

/* Password verifications waiting or running at once; past this a CONNECT
 * is refused with "server unavailable" rather than queued without bound. */
#define AUTH_MAX_PENDING 256
/* Helper threads for verifications: two, so one long PBKDF2 does not hold
 * up every other first login, while a flood still gets at most two cores. */
#define AUTH_VERIFY_THREADS 2

struct auth_job;

struct auth_state {
	struct auth_passwd *passwd; /* NULL: no password file */
	struct acl *acl;            /* NULL: no ACL, everything allowed */
	uint64_t failed_logins;
	uint64_t pending_max_hit;   /* CONNECTs refused because the queue was full */
	uint64_t pending_address_hit; /* refused: auth.max_pending_per_address reached */
	uint64_t verify_cancelled;  /* checks dropped unrun: their connection went away */
	bool address_hit_logged;    /* this episode (until the queue drains) */
	/* Verifications not yet done, for the per-address count. Carried over
	 * a reload like the counters. */
	struct auth_job *jobs[AUTH_MAX_PENDING];
	size_t job_count;
};

/* Loads the password file and ACL named by cfg. 0, or WISP_ECONFIG with
 * "<file>:<line>: reason" in err. `out` is untouched on failure. */
int auth_load(const struct config *cfg, struct auth_state *out, char *err, size_t errlen);
/* Releases what auth_load built (in-flight jobs keep their references). */
void auth_release(struct auth_state *a);

/* The current password file with a reference the caller drops with
 * auth_passwd_unref (loop thread), so a verification running on a helper
 * thread keeps it alive across a reload. NULL without a password file. */
struct auth_passwd *auth_passwd_ref(struct auth_state *a);
void auth_passwd_unref(struct auth_passwd *p);

enum auth_verdict {
	AUTH_OK = 0,
	AUTH_PENDING = 1,        /* verification running: finish later */
	AUTH_BAD_CREDENTIALS = 2,
	AUTH_NOT_AUTHORIZED = 3,
	AUTH_UNAVAILABLE = 4,    /* too many verifications queued */
};

/*
 * Decides a CONNECT. On AUTH_OK, *username is the effective user name (a
 * wisp_malloc'd copy the caller owns: the certificate's CN with
 * use_identity_as_username, else the CONNECT's), or NULL for anonymous.
 * AUTH_PENDING: a verification was started; the caller leaves the CONNECT
 * unconsumed and stops reading; when the result is in, the connection's
 * input is resumed and the same CONNECT comes here again and gets its
 * answer at once.
 */
enum auth_verdict auth_connect(struct broker *b, struct conn *c, const struct mqtt_connect *p, char **username);

/*
 * Re-checks read access for the queued and in-flight messages of `s`
 * against its current ACL client (after a login or an ACL reload): what
 * the session's user may no longer read is dropped, counted and logged.
 * Returns how many. Nothing to do without an ACL.
 */
size_t auth_recheck_messages(struct broker *b, struct session *s);

/* A connection going away while its verification is queued (the check is
 * dropped) or runs (its result is ignored). */
void auth_forget_conn(struct conn *c);

#endif
