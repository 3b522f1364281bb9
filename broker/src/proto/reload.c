/*
 * SIGHUP: apply what can change without dropping connections (password
 * file, ACL, each listener's allow_anonymous and use_identity_as_username,
 * log settings and TLS material), all or nothing. Every new piece is built
 * first; only when all of them succeed are they swapped in, so a reload
 * with a bad file keeps the running configuration. Every other key needs
 * a restart: each one whose value changed is logged with both values
 * (config_diff walks the schema tables, so a new key is covered without
 * a line here), and the running value stays. Listeners are matched by
 * address, port and protocol; one added or removed needs a restart too.
 *
 * A connected client the new authentication settings would refuse (an
 * anonymous client where anonymity is no longer allowed, a user no longer
 * in the password file) is disconnected, as Mosquitto does; its persistent
 * session stays.
 *
 * Connections accepted before the reload keep the TLS context they
 * started with (reference counted) until they close.
 */
#include "broker.h"

#include <string.h>

#include "alloc.h"
#include "err.h"
#include "log.h"

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The keys a reload applies, as key paths without their indices. */
static bool applied_at_reload(const char *path)
{
	static const char *const keys[] = {"auth.password_file", "auth.acl_file", "auth.acl", "log.level",
					   "log.format", "log.rate_limit", "log.rate_burst", "log.destination",
					   "listeners[].allow_anonymous"};
	char key[256];
	size_t n = 0;
	for (const char *p = path; *p && n + 1 < sizeof key; p++) {
		key[n++] = *p;
		if (*p == '[')
			while (p[1] && p[1] != ']')
				p++;
	}
	key[n] = '\0';
	if (strncmp(key, "listeners[].tls.", 16) == 0)
		return true; /* a new TLS context is built from all of them */
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (strcmp(key, keys[i]) == 0)
			return true;
	return false;
}

static void log_restart_only(const char *path, const char *was, const char *now, void *ctx)
{
	(void)ctx;
	if (!applied_at_reload(path))
		log_msg(LOG_WARNING, "main", "reload: %s changed from %s to %s: needs a restart", path, was, now);
}

/* Every session gets a client for the new rules, its subscriptions are
 * classified again and its queued and in-flight messages re-checked for
 * read access; a session whose rules cannot be built (out of memory)
 * keeps none, which denies it everything rather than allowing it all. */
static void reapply_acl(struct broker *b)
{
	for (size_t i = 0; i < b->sessions.nbuckets; i++)
		for (struct session *s = b->sessions.buckets[i]; s; s = s->hash_next) {
			acl_client_free(s->acl);
			s->acl = NULL;
			/* A bridge without local_username follows no rules. */
			bool ruleless = (s->sess_flags & SESS_FLAG_BRIDGE) && !s->username;
			if (b->auth.acl && !ruleless && acl_client_new(b->auth.acl, s->username, s->client_id, &s->acl) != 0)
				log_msg(LOG_WARNING, "acl", "%s: out of memory rebuilding its ACL", s->client_id);
			broker_reclassify_subs(b, s);
			if (!ruleless && auth_recheck_messages(b, s) && s->conn)
				delivery_pump(s, &b->dlim); /* the window may have room now */
		}
}

/* NO_MATCH: a running listener the new file no longer has. */
#define NO_MATCH SIZE_MAX

static const char *proto_name(enum config_protocol p)
{
	static const char *const names[] = {"mqtt", "mqtts", "ws", "wss", "http"};
	return (size_t)p < sizeof names / sizeof names[0] ? names[p] : "?";
}

/* A listener is its socket: address, port and protocol. Its position in
 * the file is not its identity; an operator who removes or reorders
 * listeners must not move one listener's settings onto another. */
static bool same_listener(const struct config_listener *a, const struct config_listener *b)
{
	return a->port == b->port && a->protocol == b->protocol && same_str(a->bind, b->bind);
}

/* Fills match[i] with the index in next of running listener i, or
 * NO_MATCH, and logs each listener that only a restart would open or
 * close. Port 0 (tests) gives equal identities; they pair in file order.
 * 0, or WISP_ENOMEM. */
static int match_listeners(const struct broker *b, const struct config *next, size_t *match)
{
	bool *taken = wisp_calloc(next->listener_count ? next->listener_count : 1, sizeof *taken);
	if (!taken)
		return WISP_ENOMEM;
	for (size_t i = 0; i < b->srv.listener_count; i++) {
		const struct config_listener *rl = b->srv.listeners[i].cfg;
		match[i] = NO_MATCH;
		for (size_t j = 0; j < next->listener_count && match[i] == NO_MATCH; j++)
			if (!taken[j] && same_listener(rl, &next->listeners[j])) {
				match[i] = j;
				taken[j] = true;
			}
		if (match[i] == NO_MATCH)
			log_msg(LOG_WARNING, "main",
				"reload: listener %s port %u (%s) is not in %s any more; closing it needs a restart, "
				"until then it keeps its settings",
				rl->bind, (unsigned)rl->port, proto_name(rl->protocol), next->path);
	}
	for (size_t j = 0; j < next->listener_count; j++)
		if (!taken[j])
			log_msg(LOG_WARNING, "main", "reload: %s: listeners[%zu] (%s port %u, %s) is not running; "
				"opening it needs a restart", next->path, j, next->listeners[j].bind,
				(unsigned)next->listeners[j].port, proto_name(next->listeners[j].protocol));
	wisp_free(taken);
	return 0;
}

/* The per-listener auth switches, each from the same listener in the new
 * file; each change is logged. */
static void apply_listener_auth(struct broker *b, const struct config *next, const size_t *match)
{
	for (size_t i = 0; i < b->srv.listener_count; i++) {
		if (match[i] == NO_MATCH)
			continue;
		const struct config_listener *nl = &next->listeners[match[i]];
		struct server_listener *bl = &b->srv.listeners[i];
		if (nl->allow_anonymous != bl->allow_anonymous)
			log_msg(LOG_NOTICE, "main", "reload: %s: allow_anonymous is now %s", bl->net.name,
				nl->allow_anonymous ? "true" : "false");
		if (nl->tls.use_identity_as_username != bl->use_identity_as_username)
			log_msg(LOG_NOTICE, "main", "reload: %s: use_identity_as_username is now %s (for new connections)",
				bl->net.name, nl->tls.use_identity_as_username ? "true" : "false");
		bl->allow_anonymous = nl->allow_anonymous;
		bl->use_identity_as_username = nl->tls.use_identity_as_username;
	}
}

/* Whether the login of a connected client would still be accepted: the
 * same rules as auth_connect, minus the password (which is not kept). */
static bool still_allowed(const struct broker *b, const struct conn *c)
{
	const struct server_listener *bl = server_listener_of(c);
	const char *user = c->sess->username;
	if (!user)
		return bl->allow_anonymous;
	if (bl->use_identity_as_username)
		return true;
	if (b->auth.passwd)
		return passwd_has_user(b->auth.passwd->db, user, strlen(user));
	return bl->allow_anonymous;
}

static void drop_refused_logins(struct broker *b)
{
	size_t dropped = 0;
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &b->srv.conns.all) {
		struct conn *c = container_of(n, struct conn, all_link);
		if (c->state != CONN_ACTIVE || !c->sess || still_allowed(b, c))
			continue;
		broker_drop(b, c, c->sess->username ? REASON_USER_REMOVED : REASON_ANONYMOUS_REVOKED, NULL);
		dropped++;
	}
	if (dropped)
		log_msg(LOG_NOTICE, "main", "reload: disconnected %zu client(s) the new authentication settings refuse",
			dropped);
}

int broker_reload(struct broker *b, const struct config *next)
{
	const struct config *cur = b->cfg;
	size_t n = b->srv.listener_count ? b->srv.listener_count : 1;
	struct tls_ctx **fresh = wisp_calloc(n, sizeof *fresh);
	size_t *match = wisp_calloc(n, sizeof *match);
	if (!fresh || !match) {
		wisp_free(fresh);
		wisp_free(match);
		log_msg(LOG_ERROR, "main", "reload refused: out of memory");
		return WISP_ENOMEM;
	}
	int rc = 0;

	if (match_listeners(b, next, match) != 0) {
		log_msg(LOG_ERROR, "main", "reload refused: out of memory");
		rc = WISP_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < b->srv.listener_count; i++) {
		if (match[i] == NO_MATCH || !b->srv.listeners[i].tls)
			continue;
		char why[384], err[512];
		if (server_tls_context(&next->listeners[match[i]], &fresh[i], why, sizeof why) != 0) {
			server_tls_error(next->path, match[i], why, err, sizeof err);
			log_msg(LOG_ERROR, "main", "reload refused, keeping the running configuration: %s", err);
			rc = WISP_ECONFIG;
			goto out;
		}
	}
	struct auth_state auth = b->auth; /* carries the counters over */
	char err[512];
	if (auth_load(next, &auth, err, sizeof err) != 0) {
		log_msg(LOG_ERROR, "main", "reload refused, keeping the running configuration: %s", err);
		rc = WISP_ECONFIG;
		goto out;
	}
	auth_release(&b->auth);
	b->auth = auth;
	apply_listener_auth(b, next, match);
	drop_refused_logins(b);
	reapply_acl(b);
	for (size_t i = 0; i < b->srv.listener_count; i++) {
		if (!fresh[i])
			continue;
		tls_ctx_unref(b->srv.listeners[i].tls);
		b->srv.listeners[i].tls = fresh[i];
		fresh[i] = NULL;
		log_msg(LOG_NOTICE, "main", "reload: new TLS certificate and key for %s", b->srv.listeners[i].net.name);
	}
	log_set_level((enum log_level)next->log.level);
	log_set_format((enum log_format)next->log.format);
	log_set_rate_limit(next->log.rate_limit, next->log.rate_burst);
	if (next->log.destination && !same_str(next->log.destination, cur->log.destination) &&
	    log_set_destination(next->log.destination) != 0)
		log_msg(LOG_WARNING, "main", "reload: cannot open log destination '%s'; keeping the old one",
			next->log.destination);
	config_diff(cur, next, log_restart_only, NULL);
	for (size_t i = 0; i < b->srv.listener_count; i++)
		if (match[i] != NO_MATCH)
			config_diff_listener(b->srv.listeners[i].cfg, &next->listeners[match[i]], match[i], log_restart_only,
					     NULL);
	log_msg(LOG_NOTICE, "main", "configuration reloaded from %s", next->path);
out:
	for (size_t i = 0; i < b->srv.listener_count; i++)
		if (fresh[i])
			tls_ctx_unref(fresh[i]);
	wisp_free(fresh);
	wisp_free(match);
	return rc;
}
