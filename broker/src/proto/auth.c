#include "auth.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "bg.h"
#include "broker.h"
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

int auth_load(const struct config *cfg, struct auth_state *out, char *err, size_t errlen)
{
	struct auth_state a = {0};
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
	a.failed_logins = out->failed_logins;
	a.pending_max_hit = out->pending_max_hit;
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

static void verify_done(struct bg_job *job)
{
	struct auth_job *j = container_of(job, struct auth_job, job);
	if (j->ok)
		passwd_memo_set(j->passwd->db, j->data, j->ulen, j->data + j->ulen, j->plen);
	struct conn *c = j->c;
	if (c) {
		c->auth_job = NULL;
		c->auth_result = j->ok ? CONN_AUTH_OK : CONN_AUTH_BAD;
		broker_resume_input(j->b, c);
	}
	memset(j->data, 0, j->ulen + j->plen); /* no passwords left in freed memory */
	passwd_unref(j->passwd);
	wisp_free(j);
}

void auth_forget_conn(struct conn *c)
{
	if (c->auth_job) {
		c->auth_job->c = NULL;
		c->auth_job = NULL;
	}
}

static enum auth_verdict start_verify(struct broker *b, struct conn *c, const struct mqtt_connect *p)
{
	struct auth_job *j = wisp_malloc(sizeof *j + p->username.len + p->password.len);
	if (!j)
		return AUTH_UNAVAILABLE;
	j->job.work = verify_work;
	j->job.done = verify_done;
	j->b = b;
	j->c = c;
	j->passwd = b->auth.passwd;
	j->ok = false;
	j->ulen = p->username.len;
	j->plen = p->password.len;
	memcpy(j->data, p->username.ptr, j->ulen);
	if (j->plen)
		memcpy(j->data + j->ulen, p->password.ptr, j->plen);
	if (bg_submit(b->bg, &j->job) != 0) {
		memset(j->data, 0, j->ulen + j->plen);
		wisp_free(j);
		b->auth.pending_max_hit++;
		return AUTH_UNAVAILABLE;
	}
	j->passwd->refs++;
	c->auth_job = j;
	c->auth_result = CONN_AUTH_PENDING;
	return AUTH_PENDING;
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
	const struct broker_listener *bl = c->listener;
	*username = NULL;

	if (bl->cfg->tls.use_identity_as_username) {
		/* The verified certificate is the credential; the CONNECT's user
		 * name and password are ignored, as Mosquitto does. */
		char cn[256];
		if (tls_transport_peer_cn(c->t, cn, sizeof cn) != 0)
			return fail(b, c, AUTH_NOT_AUTHORIZED, "", 0);
		*username = wisp_strndup(cn, strlen(cn));
		return *username ? AUTH_OK : AUTH_UNAVAILABLE;
	}
	if (!p->has_username) {
		if (!bl->cfg->allow_anonymous)
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
			enum auth_verdict v = start_verify(b, c, p);
			if (v != AUTH_PENDING)
				log_limited("login refused: verifier busy", LOG_WARNING, "auth",
					    "%s: login refused: too many logins being verified", conn_peer(c));
			return v;
		}
	} else if (!bl->cfg->allow_anonymous) {
		/* No password file, so no user name can be proven. */
		return fail(b, c, AUTH_NOT_AUTHORIZED, user, ulen);
	}
	*username = wisp_strndup(user, ulen);
	return *username ? AUTH_OK : AUTH_UNAVAILABLE;
}
