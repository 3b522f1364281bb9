/*
 * The cluster's NATS TLS and credentials (nats_auth.h).
 *
 * cnats 3.4 enforces TLS only when asked: a tls:// URL or a CA alone still
 * connects in plain text to a server that offers no TLS. So TLS, once
 * configured, is always made a requirement (natsOptions_SetSecure), and the
 * server's name is always checked unless tls_insecure says not to: cnats
 * checks a name only when given one (the host of the URLs by default).
 */
#include "nats_auth.h"

#include <stdio.h>
#include <string.h>

#include "err.h"

static int failed(natsStatus st, const char *key, const char *file, char *err, size_t errlen)
{
	const char *why = nats_last_error();
	snprintf(err, errlen, "cluster.%s: %s%s%s", key, file ? file : "", file ? ": " : "",
		 *why ? why : natsStatus_GetText(st));
	return WISP_ECONFIG;
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

int nats_auth_apply(natsOptions *o, const struct config_cluster *cfg, char *err, size_t errlen)
{
	natsStatus st;
	if (config_cluster_tls(cfg)) {
		if ((st = natsOptions_SetSecure(o, true)) != NATS_OK)
			return failed(st, "nats", NULL, err, errlen);
		if (cfg->cafile && (st = natsOptions_LoadCATrustedCertificates(o, cfg->cafile)) != NATS_OK)
			return failed(st, "cafile", cfg->cafile, err, errlen);
		if (cfg->certfile &&
		    (st = natsOptions_LoadCertificatesChain(o, cfg->certfile, cfg->keyfile)) != NATS_OK)
			return failed(st, "certfile", cfg->certfile, err, errlen);
		if (cfg->tls_insecure) {
			st = natsOptions_SkipServerVerification(o, true);
		} else if (cfg->tls_server_name) {
			st = natsOptions_SetExpectedHostname(o, cfg->tls_server_name);
		} else {
			/* check_cluster made sure every URL names this host. */
			const char *comma = strchr(cfg->nats, ',');
			struct config_nats_url u;
			config_nats_url_split(cfg->nats, comma ? (size_t)(comma - cfg->nats) : strlen(cfg->nats), &u);
			char host[256];
			snprintf(host, sizeof host, "%.*s", (int)u.host_len, u.host);
			st = natsOptions_SetExpectedHostname(o, host);
		}
		if (st != NATS_OK)
			return failed(st, cfg->tls_insecure ? "tls_insecure" : "tls_server_name", NULL, err, errlen);
	}
	if (cfg->username && (st = natsOptions_SetUserInfo(o, cfg->username, cfg->password)) != NATS_OK)
		return failed(st, "username", NULL, err, errlen);
	if (cfg->token && (st = natsOptions_SetToken(o, cfg->token)) != NATS_OK)
		return failed(st, "token", NULL, err, errlen);
	/* cnats reads these two files at each connect: a bad one is reported
	 * by the first connect (cluster.c logs its reason). */
	if (cfg->credentials && (st = natsOptions_SetUserCredentialsFromFiles(o, cfg->credentials, NULL)) != NATS_OK)
		return failed(st, "credentials", cfg->credentials, err, errlen);
	if (cfg->nkey && (st = natsOptions_SetNKeyFromSeed(o, cfg->nkey, cfg->nkey_seed)) != NATS_OK)
		return failed(st, "nkey_seed", cfg->nkey_seed, err, errlen);
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
