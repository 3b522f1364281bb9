#include "auth.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "bg.h"
#include "broker.h"
#include "enhanced_auth.h"
#include "input.h"
#include "err.h"
#include "log.h"
#include "tls.h"

/* A password verification on the background thread. It owns copies of the
 * credentials (the read buffer they came from moves on) and a reference on
 * the password file. `c` is cleared if the connection goes away first. */
struct auth_job {
	struct bg_job job;
	struct broker *b;
	struct conn *c;
	struct auth_passwd *passwd;
	struct conn_addr peer;  /* port 0: counted per address */
	size_t slot;            /* in auth_state.jobs */
	bool ok;
	size_t ulen, plen;
	char data[]; /* username, then password */
};

static void passwd_unref(struct auth_passwd *p)
{
	if (p && --p->refs == 0) {
		passwd_free(p->db);
		wisp_free(p);
	}
}

struct auth_passwd *auth_passwd_ref(struct auth_state *a)
{
	if (a->passwd)
		a->passwd->refs++;
	return a->passwd;
}

void auth_passwd_unref(struct auth_passwd *p) { passwd_unref(p); }

int auth_load(const struct config *cfg, struct auth_state *out, char *err, size_t errlen)
{
	/* Counters and the verifications in flight carry over. */
	struct auth_state a = *out;
	a.passwd = NULL;
	a.acl = NULL;
	if (cfg->auth.password_file) {
		struct passwd_db *db;
		if (passwd_load(cfg->auth.password_file, &db, err, errlen) != 0)
			return WISP_ECONFIG;
		a.passwd = wisp_malloc(sizeof *a.passwd);
		if (!a.passwd) {
			passwd_free(db);
			snprintf(err, errlen, "out of memory");
			return WISP_ENOMEM;
		}
		a.passwd->refs = 1;
		a.passwd->db = db;
	}
	int rc = 0;
	if (cfg->auth.acl_file)
		rc = acl_load(cfg->auth.acl_file, &a.acl, err, errlen);
	else if (cfg->auth.acl_inline) {
		char name[512];
		snprintf(name, sizeof name, "%s: auth.acl", cfg->path);
		rc = acl_parse(cfg->auth.acl_inline, strlen(cfg->auth.acl_inline), name, &a.acl, err, errlen);
	}
	if (rc != 0) {
		passwd_unref(a.passwd);
		return WISP_ECONFIG;
	}
	*out = a;
	return 0;
}

void auth_release(struct auth_state *a)
{
	passwd_unref(a->passwd);
	acl_free(a->acl);
	a->passwd = NULL;
	a->acl = NULL;
}

static void verify_work(struct bg_job *job)
{
	struct auth_job *j = container_of(job, struct auth_job, job);
	j->ok = passwd_verify(j->passwd->db, j->data, j->ulen, j->data + j->ulen, j->plen);
}

/* Ends a job on the loop thread: out of the per-address table, secrets
 * wiped, memory freed. */
static void job_free(struct auth_job *j)
{
	struct auth_state *a = &j->b->auth;
	a->jobs[j->slot] = NULL;
	if (--a->job_count == 0)
		a->address_hit_logged = false; /* the episode is over */
	memset(j->data, 0, j->ulen + j->plen); /* no passwords left in freed memory */
	passwd_unref(j->passwd);
	wisp_free(j);
}

static void verify_done(struct bg_job *job)
{
	struct auth_job *j = container_of(job, struct auth_job, job);
	if (j->ok)
		passwd_memo_set(j->passwd->db, j->data, j->ulen, j->data + j->ulen, j->plen);
	struct conn *c = j->c;
	bool ok = j->ok;
	job_free(j);
	if (c) {
		c->rare->auth_job = NULL;
		conn_rare_trim(c);
		c->auth_result = ok ? CONN_AUTH_OK : CONN_AUTH_BAD;
		conn_input_resume(c);
	}
}

void auth_forget_conn(struct conn *c)
{
	if (c->auth_method) {
		enhanced_auth_forget(c); /* the union holds the exchange, not a job */
		return;
	}
	struct auth_job *j = conn_auth_job(c);
	if (!j)
		return;
	c->rare->auth_job = NULL;
	conn_rare_trim(c);
	j->c = NULL;
	if (bg_cancel(j->b->bg, &j->job)) {
		/* Not started: a flood of CONNECTs that hang up costs nothing. */
		j->b->auth.verify_cancelled++;
		job_free(j);
	}
}

/* Verifications queued or running for connections from `peer`'s address. */
static size_t pending_from(const struct auth_state *a, const struct conn_addr *peer)
{
	size_t n = 0, seen = 0;
	for (size_t i = 0; i < AUTH_MAX_PENDING && seen < a->job_count; i++) {
		const struct auth_job *j = a->jobs[i];
		if (!j)
			continue;
		seen++;
		if (j->peer.family == peer->family && memcmp(j->peer.addr, peer->addr, sizeof peer->addr) == 0)
			n++;
	}
	return n;
}

/* Every check slot is taken (AUTH_MAX_PENDING): answer "server unavailable"
 * rather than queue without bound. */
static enum auth_verdict refuse_busy(struct auth_state *a, const struct conn *c)
{
	a->pending_max_hit++;
	log_limited("login refused: verifier busy", LOG_WARNING, "auth",
		    "%s: login refused: too many logins being verified", conn_peer(c));
	return AUTH_UNAVAILABLE;
}

static enum auth_verdict start_verify(struct broker *b, struct conn *c, const struct mqtt_connect *p)
{
	struct auth_state *a = &b->auth;
	size_t cap = b->cfg->auth.max_pending_per_address;
	if (cap && pending_from(a, &c->peer) >= cap) {
		a->pending_address_hit++;
		if (!a->address_hit_logged) {
			a->address_hit_logged = true;
			log_msg(LOG_WARNING, "auth",
				"%s: login refused: %zu logins from this address are being verified "
				"(auth.max_pending_per_address); further refusals are counted, not logged, until the "
				"verifications drain",
				conn_peer(c), cap);
		}
		return AUTH_UNAVAILABLE;
	}
	if (a->job_count >= AUTH_MAX_PENDING) {
		return refuse_busy(a, c);
	}
	struct conn_rare *r = conn_rare(c);
	struct auth_job *j = r ? wisp_malloc(sizeof *j + p->username.len + p->password.len) : NULL;
	if (!j) {
		conn_rare_trim(c);
		return AUTH_UNAVAILABLE;
	}
	j->job.work = verify_work;
	j->job.done = verify_done;
	j->b = b;
	j->c = c;
	j->passwd = b->auth.passwd;
	j->peer = c->peer;
	j->peer.port = 0;
	j->ok = false;
	j->ulen = p->username.len;
	j->plen = p->password.len;
	memcpy(j->data, p->username.ptr, j->ulen);
	if (j->plen)
		memcpy(j->data + j->ulen, p->password.ptr, j->plen);
	if (bg_submit(b->bg, &j->job) != 0) {
		memset(j->data, 0, j->ulen + j->plen);
		wisp_free(j);
		conn_rare_trim(c);
		return refuse_busy(a, c);
	}
	for (j->slot = 0; a->jobs[j->slot]; j->slot++)
		; /* a free slot exists: job_count < AUTH_MAX_PENDING */
	a->jobs[j->slot] = j;
	a->job_count++;
	j->passwd->refs++;
	log_msg(LOG_DEBUG, "auth", "%s: verifying the password of '%.*s' (%zu checks pending)", conn_peer(c),
		(int)j->ulen, j->data, a->job_count);
	r->auth_job = j;
	c->auth_result = CONN_AUTH_PENDING;
	return AUTH_PENDING;
}

static bool may_read(void *ctx, const struct session *s, const struct msg *m)
{
	(void)ctx;
	/* With an ACL configured, a session without rules (they could not be
	 * built) reads nothing rather than everything. */
	return s->acl && acl_client_check(s->acl, msg_topic(m), m->topic_len, ACL_READ);
}

size_t auth_recheck_messages(struct broker *b, struct session *s)
{
	if (!b->auth.acl || (!sess_queued_count(s) && !sess_inflight_count(s)))
		return 0;
	size_t n = delivery_filter(s, &b->dlim, may_read, NULL);
	if (n) {
		b->stats.acl_dropped_queued += n;
		log_limited("messages no longer readable", LOG_NOTICE, "acl",
			    "%s: dropped %zu queued or in-flight message(s) that %s%s%s may not read",
			    s->client_id, n, s->username ? "user '" : "", s->username ? s->username : "anonymous clients",
			    s->username ? "'" : "");
	}
	return n;
}

static enum auth_verdict fail(struct broker *b, struct conn *c, enum auth_verdict v, const char *user, size_t ulen)
{
	b->auth.failed_logins++;
	log_limited("login refused", LOG_NOTICE, "auth", "%s: login refused for user '%.*s': %s", conn_peer(c),
		    (int)ulen, user, v == AUTH_BAD_CREDENTIALS ? "bad user name or password" : "not authorised");
	return v;
}

enum auth_verdict auth_connect(struct broker *b, struct conn *c, const struct mqtt_connect *p, char **username)
{
	const struct server_listener *bl = server_listener_of(c);
	*username = NULL;

	if (bl->use_identity_as_username) {
		/* The verified certificate is the credential; the CONNECT's user
		 * name and password are ignored, as Mosquitto does. */
		struct transport_peer_info peer;
		if (transport_peer_info(conn_t(c), &peer) != 0 || !peer.identity[0])
			return fail(b, c, AUTH_NOT_AUTHORIZED, "", 0);
		*username = wisp_strndup(peer.identity, strlen(peer.identity));
		return *username ? AUTH_OK : AUTH_UNAVAILABLE;
	}
	if (!p->has_username) {
		if (!bl->allow_anonymous)
			return fail(b, c, AUTH_NOT_AUTHORIZED, "", 0); /* [MQTT-3.2.2.3] code 5 */
		return AUTH_OK;
	}
	const char *user = (const char *)p->username.ptr;
	size_t ulen = p->username.len;
	if (b->auth.passwd) {
		enum conn_auth r = c->auth_result;
		c->auth_result = CONN_AUTH_NONE;
		if (r == CONN_AUTH_BAD)
			return fail(b, c, AUTH_BAD_CREDENTIALS, user, ulen);
		if (r != CONN_AUTH_OK &&
		    !passwd_memo_hit(b->auth.passwd->db, user, ulen, (const char *)p->password.ptr, p->password.len)) {
			return start_verify(b, c, p);
		}
	} else if (!bl->allow_anonymous) {
		/* No password file, so no user name can be proven. */
		return fail(b, c, AUTH_NOT_AUTHORIZED, user, ulen);
	}
	*username = wisp_strndup(user, ulen);
	return *username ? AUTH_OK : AUTH_UNAVAILABLE;
}
