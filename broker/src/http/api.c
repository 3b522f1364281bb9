/*
 * What each path of an http listener answers.
 *
 *   GET /healthz        200 "ok": the process is serving (no authentication)
 *   GET /readyz         200 when the store is loaded, every listener is
 *                       listening and (with a cluster) NATS is connected
 *                       and the JetStream stream set up (cluster.durable),
 *                       else 503 naming what is not (no authentication)
 *   GET /metrics        Prometheus text format 0.0.4 (proto/metrics.c)
 *   GET /               the dashboard (assets/, embedded at build time)
 *   GET /api/stats      every figure of the metrics table, as JSON
 *   GET /api/tree       one level of the topic tree: ?path=a/b&offset=N (no
 *                       path: the top; "path=": the empty first level)
 *   GET /api/clients    connected clients: ?offset=N
 *   POST /api/publish   form fields topic, payload, qos, retain
 *
 * The dashboard polls the JSON API once a second rather than holding a
 * stream or an MQTT connection: each request is bounded (a page of at
 * most tree_page_size children or clients, whatever the broker holds),
 * needs no state on the broker between requests, and goes through the
 * same limits, timeouts and authentication as any request.
 *
 * POST /api/publish is refused (403) from another origin, and every
 * /api/ request while unauthenticated (a loopback peer) also when the Host
 * is not a loopback name, so a web page in the operator's browser can
 * neither post to it across origins nor reach it by DNS rebinding (a
 * rebound page is same-origin to the browser and could read client ids and
 * payloads). /metrics, /healthz and /readyz take any Host: Prometheus and
 * probes address the broker by whatever name or address reaches it, and
 * they tell a page nothing about clients or messages.
 */
#include "http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "alloc.h"
#include "codec.h"
#include "form.h"
#include "log.h"
#include "metrics.h"

static bool str_is(struct http_str s, const char *z)
{
	size_t n = strlen(z);
	return s.len == n && memcmp(s.ptr, z, n) == 0;
}

bool http_path_is_public(struct http_str path)
{
	return str_is(path, "/healthz") || str_is(path, "/readyz");
}

static void text(struct http_conn *c, int status, const char *body)
{
	http_respond(c, status, "text/plain; charset=utf-8", body, strlen(body), NULL);
}

static size_t query_offset(const struct http_request *req)
{
	char v[24];
	if (http_form_get(req->query.ptr, req->query.len, "offset", v, sizeof v) <= 0)
		return 0;
	return (size_t)strtoull(v, NULL, 10);
}

/* ---- probes and metrics ---- */

static void readyz(struct http_conn *c)
{
	struct broker *b = c->hl->srv->b;
	struct sbuf why = {0};
	if (b->persist.loading)
		sbuf_adds(&why, "store: loading\n");
	for (size_t i = 0; i < b->srv.listener_count; i++)
		if (b->srv.listeners[i].net.io.fd < 0)
			sbuf_addf(&why, "listener %s:%u: not listening\n", b->srv.listeners[i].cfg->bind,
				  (unsigned)b->srv.listeners[i].cfg->port);
	/* Its local clients are still served, but a balancer should send new
	 * ones to a node that reaches the rest of the cluster. */
	if (b->cfg->cluster.nats && !b->stats.cluster.connected)
		sbuf_adds(&why, "cluster: not connected to NATS\n");
	else if (b->cfg->cluster.nats && b->cfg->cluster.durable && !b->stats.cluster.durable_ready)
		sbuf_adds(&why, "cluster: JetStream stream not ready\n");
	if (why.len == 0)
		text(c, 200, "ready\n");
	else
		http_respond_sbuf(c, 503, "text/plain; charset=utf-8", &why);
	sbuf_free(&why);
}

static void metrics(struct http_conn *c)
{
	struct sbuf out = {.max = 8u << 20};
	metrics_render_prometheus(c->hl->srv->b, &out);
	http_respond_sbuf(c, 200, "text/plain; version=0.0.4; charset=utf-8", &out);
}

/* ---- the dashboard's API ---- */

static void stats(struct http_conn *c)
{
	struct http_server *srv = c->hl->srv;
	struct broker *b = srv->b;
	uint64_t now = loop_now_ms(b->loop);
	if (!srv->snap_valid || now - srv->snap_ms >= 1000) {
		metrics_snapshot(b, &srv->snap);
		srv->snap_ms = now;
		srv->snap_valid = true;
	}
	const struct metrics_snap *snap = &srv->snap;
	struct sbuf out = {0};
	sbuf_addf(&out, "{\"now_ms\":%llu,\"metrics\":[", (unsigned long long)now);
	bool first = true;
	for (size_t r = 0; r < metrics_count; r++) {
		const struct metric *m = &metrics_table[r];
		if (!metrics_shown(m, snap))
			continue;
		for (size_t i = 0; i < metrics_label_count(b, m); i++) {
			uint64_t u;
			double d;
			bool is_float = metrics_value(b, snap, m, i, &u, &d);
			const char *lv = m->label != METRIC_LABEL_NONE ? metrics_label_value(b, m, i) : NULL;
			sbuf_addf(&out, "%s{\"name\":\"%s\",\"type\":\"%s\",\"help\":\"", first ? "" : ",", m->name,
				  m->type == METRIC_COUNTER ? "counter" : "gauge");
			sbuf_add_json(&out, m->help, strlen(m->help));
			sbuf_adds(&out, "\",\"label\":");
			if (lv) {
				sbuf_adds(&out, "\"");
				sbuf_add_json(&out, lv, strlen(lv));
				sbuf_adds(&out, "\"");
			} else {
				sbuf_adds(&out, "null");
			}
			sbuf_adds(&out, ",\"sys\":");
			if (m->sys) {
				const char *pct = strstr(m->sys, "%s");
				sbuf_adds(&out, "\"$SYS/broker/");
				if (pct && lv) {
					sbuf_add_json(&out, m->sys, (size_t)(pct - m->sys));
					sbuf_add_json(&out, lv, strlen(lv));
					sbuf_adds(&out, pct + 2);
				} else {
					sbuf_add_json(&out, m->sys, strlen(m->sys));
				}
				sbuf_adds(&out, "\"");
			} else {
				sbuf_adds(&out, "null");
			}
			if (is_float)
				sbuf_addf(&out, ",\"value\":%.3f}", d);
			else
				sbuf_addf(&out, ",\"value\":%llu}", (unsigned long long)u);
			first = false;
		}
	}
	sbuf_adds(&out, "]}");
	http_respond_sbuf(c, 200, "application/json", &out);
}

struct tree_ctx {
	struct sbuf *out;
	bool first;
};

/* The length of v (n bytes, the first of a longer payload) without a
 * UTF-8 sequence that the cut at dashboard.max_value_bytes left
 * incomplete, so the value ends at a character rather than in U+FFFD. */
static size_t cut_at_char(const char *v, size_t n)
{
	size_t i = n;
	while (i > 0 && n - i < 3 && ((unsigned char)v[i - 1] & 0xc0) == 0x80)
		i--;
	if (i == 0 || (unsigned char)v[i - 1] < 0xc0)
		return n;
	unsigned char lead = (unsigned char)v[i - 1];
	size_t want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
	return n - (i - 1) < want ? i - 1 : n;
}

static void tree_item(const struct activity_item *it, void *ctx)
{
	struct tree_ctx *t = ctx;
	sbuf_adds(t->out, t->first ? "{\"name\":\"" : ",{\"name\":\"");
	t->first = false;
	sbuf_add_json(t->out, it->level, it->level_len);
	sbuf_addf(t->out, "\",\"children\":%s", it->has_children ? "true" : "false");
	if (it->has_value) {
		sbuf_adds(t->out, ",\"value\":\"");
		size_t vlen = it->value_len < it->payload_len ? cut_at_char(it->value, it->value_len) : it->value_len;
		sbuf_add_json(t->out, it->value, vlen);
		sbuf_addf(t->out, "\",\"size\":%zu,\"count\":%llu,\"rate\":%.3f,\"age_ms\":%llu", it->payload_len,
			  (unsigned long long)it->count, it->rate, (unsigned long long)it->age_ms);
	}
	sbuf_adds(t->out, "}");
}

static void tree(struct http_conn *c)
{
	struct broker *b = c->hl->srv->b;
	/* Decoding never lengthens, so the query's size holds any value. */
	char *path = wisp_malloc(c->req.query.len + 1);
	if (!path) {
		text(c, 503, "out of memory\n");
		return;
	}
	/* No path parameter is the top; "path=" (empty) is the empty first
	 * level of topics such as "/a", which the top holds as a child. */
	ssize_t plen = http_form_get(c->req.query.ptr, c->req.query.len, "path", path, c->req.query.len + 1);
	size_t offset = query_offset(&c->req);
	size_t limit = c->hl->cfg->tree_page_size;
	struct sbuf out = {0};
	if (plen < 0) {
		sbuf_adds(&out, "{\"path\":null");
	} else {
		sbuf_adds(&out, "{\"path\":\"");
		sbuf_add_json(&out, path, (size_t)plen);
		sbuf_adds(&out, "\"");
	}
	sbuf_addf(&out, ",\"offset\":%zu,\"limit\":%zu,\"children\":[", offset, limit);
	struct tree_ctx t = {&out, true};
	size_t total = activity_children(b->activity, plen < 0 ? NULL : path, plen < 0 ? 0 : (size_t)plen, offset,
					 limit, loop_now_ms(b->loop), tree_item, &t);
	wisp_free(path);
	sbuf_addf(&out, "],\"total\":%zu}", total);
	http_respond_sbuf(c, 200, "application/json", &out);
}

static void clients(struct http_conn *c)
{
	struct broker *b = c->hl->srv->b;
	size_t offset = query_offset(&c->req);
	size_t left = c->hl->cfg->tree_page_size;
	struct sbuf out = {0};
	sbuf_addf(&out, "{\"total\":%zu,\"offset\":%zu,\"clients\":[", b->srv.conns.count, offset);
	bool first = true;
	struct list_node *n;
	/* The connection list, not the session table: a page costs
	 * offset + page_size steps, whatever the number of sessions. */
	for (n = b->srv.conns.all.next; n != &b->srv.conns.all; n = n->next) {
		if (!left)
			break;
		if (offset) {
			offset--;
			continue;
		}
		const struct conn *k = container_of(n, struct conn, all_link);
		const struct server_listener *bl = server_listener_of(k);
		sbuf_adds(&out, first ? "{\"id\":" : ",{\"id\":");
		first = false;
		if (k->sess) {
			sbuf_adds(&out, "\"");
			sbuf_add_json(&out, k->sess->client_id, strlen(k->sess->client_id));
			sbuf_adds(&out, "\"");
		} else {
			sbuf_adds(&out, "null");
		}
		sbuf_adds(&out, ",\"peer\":\"");
		const char *peer = conn_peer(k);
		sbuf_add_json(&out, peer, strlen(peer));
		sbuf_addf(&out, "\",\"listener\":\"%s\",\"state\":%u,\"version\":%u,\"keepalive\":%u,"
			  "\"subscriptions\":%u,\"queued\":%zu,\"output_bytes\":%zu}",
			  bl->net.name, (unsigned)k->state, (unsigned)k->version, (unsigned)conn_keepalive(k),
			  k->sess ? (unsigned)sess_sub_count(k->sess) : 0u, k->sess ? (size_t)sess_queued_count(k->sess) : 0u,
			  conn_output_bytes(k));
		left--;
	}
	sbuf_adds(&out, "]}");
	http_respond_sbuf(c, 200, "application/json", &out);
}

/* A request let in without credentials (from a loopback peer) whose Host
 * is a name a page could have rebound to 127.0.0.1. */
static bool rebound(const struct http_conn *c)
{
	return !c->auth_ok && !http_host_is_loopback(c->req.hdr[HTTP_HDR_HOST]);
}

/* The Origin of a browser's POST, when it sends one, names this server:
 * "http://" or "https://" and the Host. Either scheme, since behind a
 * TLS-terminating proxy that keeps the Host (the deployment config/README.md
 * describes) the page's origin is https while this listener speaks http. */
static bool same_origin(const struct http_request *req)
{
	struct http_str o = req->hdr[HTTP_HDR_ORIGIN], h = req->hdr[HTTP_HDR_HOST];
	if (o.len == 0)
		return true; /* not a browser (curl), or a same-origin GET */
	size_t scheme = 0;
	if (o.len > 7 && memcmp(o.ptr, "http://", 7) == 0)
		scheme = 7;
	else if (o.len > 8 && memcmp(o.ptr, "https://", 8) == 0)
		scheme = 8;
	return scheme && o.len == scheme + h.len && memcmp(o.ptr + scheme, h.ptr, h.len) == 0;
}

/*
 * Whether auth.acl_file lets the request publish to `topic`: the API
 * publishes as the request's Basic user, or as an anonymous client when it
 * came in without credentials, with the same rules as an MQTT client of
 * that user (its "user" block and the patterns; no client id, so no %c
 * pattern applies). A denial is logged like the broker's other refusals;
 * MQTT has no counter for ACL denials, so neither does this.
 */
static bool may_publish(struct http_conn *c, const char *topic, size_t len)
{
	const struct acl *acl = c->hl->srv->b->auth.acl;
	if (!acl)
		return true;
	char user[512];
	bool named = http_auth_user(c, user, sizeof user) >= 0;
	/* Credentials that verified but cannot be read back are not anonymous. */
	if ((named || !c->auth_ok) && acl_check(acl, named ? user : NULL, NULL, topic, len, ACL_WRITE))
		return true;
	log_limited("http publish denied", LOG_NOTICE, "acl", "%s: publish to '%.*s' from %s as %s%s%s denied by the ACL",
		    c->hl->bl->net.name, (int)len, topic, c->peer, named ? "user '" : "anonymous", named ? user : "",
		    named ? "'" : "");
	return false;
}

static void publish(struct http_conn *c)
{
	struct broker *b = c->hl->srv->b;
	if (!same_origin(&c->req) || rebound(c)) {
		text(c, 403, "cross-origin publish refused\n");
		return;
	}
	const char *body = c->body ? c->body : "";
	size_t blen = c->body_len;
	char topic[1024], qos_s[4], retain_s[8];
	ssize_t tlen = http_form_get(body, blen, "topic", topic, sizeof topic);
	size_t cap = blen + 1;
	char *payload = wisp_malloc(cap);
	if (!payload) {
		text(c, 503, "out of memory\n");
		return;
	}
	ssize_t plen = http_form_get(body, blen, "payload", payload, cap);
	if (plen < 0)
		plen = 0;
	long qos = http_form_get(body, blen, "qos", qos_s, sizeof qos_s) > 0 ? strtol(qos_s, NULL, 10) : 0;
	bool retain = http_form_get(body, blen, "retain", retain_s, sizeof retain_s) > 0 &&
		      (strcmp(retain_s, "1") == 0 || strcmp(retain_s, "true") == 0 || strcmp(retain_s, "on") == 0);
	const char *bad = NULL;
	int scan = tlen > 0 ? mqtt_utf8_scan((const uint8_t *)topic, (size_t)tlen) : 0;
	if (tlen <= 0)
		bad = "a topic is required\n";
	else if (scan < 0) /* [MQTT-1.5.4-1], [MQTT-1.5.4-2], as the codec refuses it in a PUBLISH */
		bad = "the topic is not well-formed UTF-8, or holds U+0000\n";
	else if (scan > 0) /* [MQTT-1.5.4-3] allows refusing them; handle_publish.c does */
		bad = "the topic holds a control character (U+0001..U+001F, U+007F..U+009F)\n";
	else if (!topic_name_valid(topic, (size_t)tlen))
		bad = "not a valid topic name (no + or #)\n";
	else if (topic[0] == '$')
		bad = "topics starting with $ are the broker's\n";
	else if (qos < 0 || qos > 2)
		bad = "qos must be 0, 1 or 2\n";
	else if (broker_topic_bound(b, topic, (size_t)tlen) != TOPIC_WITHIN_LIMITS)
		bad = "topic over limits.max_topic_length or max_topic_levels\n";
	struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
	int nlevels = bad ? -1 : topic_split(topic, (size_t)tlen, levels, TOPIC_MAX_LEVELS_HARD);
	if (!bad && nlevels < 0)
		bad = "too many topic levels\n";
	if (bad) {
		wisp_free(payload);
		text(c, 400, bad);
		return;
	}
	if (!may_publish(c, topic, (size_t)tlen)) {
		wisp_free(payload);
		text(c, 403, "the ACL does not let this user publish to this topic\n");
		return;
	}
	struct msg *m = msg_new(topic, (size_t)tlen, payload, (size_t)plen, (uint8_t)qos, retain);
	wisp_free(payload);
	if (!m) {
		text(c, 503, "out of memory\n");
		return;
	}
	b->stats.msgs_received++;
	if (retain)
		broker_retain(b, m);
	broker_route(b, m, levels, (size_t)nlevels);
	msg_unref(m);
	struct sbuf out = {0};
	sbuf_adds(&out, "{\"published\":\"");
	sbuf_add_json(&out, topic, (size_t)tlen);
	sbuf_addf(&out, "\",\"bytes\":%zd,\"qos\":%ld,\"retain\":%s}", plen, qos, retain ? "true" : "false");
	http_respond_sbuf(c, 200, "application/json", &out);
}

static void asset(struct http_conn *c)
{
	for (size_t i = 0; i < http_asset_count; i++) {
		const struct http_asset *a = &http_assets[i];
		if (!str_is(c->req.path, a->path))
			continue;
		/* Everything the page uses is served here: the policy lets it
		 * load nothing from elsewhere. */
		http_respond(c, 200, a->type, (const char *)a->data, a->len,
			     "Content-Security-Policy: default-src 'self'; img-src 'self' data:; "
			     "frame-ancestors 'none'\r\n");
		return;
	}
	text(c, 404, "not found\n");
}

void http_route(struct http_conn *c)
{
	const struct http_request *req = &c->req;
	bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
	bool post = strcmp(req->method, "POST") == 0;
	struct http_str p = req->path;
	bool dashboard = c->hl->cfg->dashboard && c->hl->srv->b->activity;
	if (str_is(p, "/api/publish") && dashboard) {
		if (!post) {
			http_respond(c, 405, "text/plain; charset=utf-8", "use POST\n", 9, "Allow: POST\r\n");
			return;
		}
		publish(c);
		return;
	}
	if (!get) {
		http_respond(c, 405, "text/plain; charset=utf-8", "method not allowed\n", 19,
			     "Allow: GET, HEAD\r\n");
		return;
	}
	if (str_is(p, "/healthz"))
		text(c, 200, "ok\n");
	else if (str_is(p, "/readyz"))
		readyz(c);
	else if (str_is(p, "/metrics"))
		metrics(c);
	else if (!dashboard)
		text(c, 404, "not found\n");
	else if (p.len >= 5 && memcmp(p.ptr, "/api/", 5) == 0 && rebound(c))
		text(c, 403, "Host is not a loopback name: use 127.0.0.1 or localhost, or credentials\n");
	else if (str_is(p, "/api/stats"))
		stats(c);
	else if (str_is(p, "/api/tree"))
		tree(c);
	else if (str_is(p, "/api/clients"))
		clients(c);
	else
		asset(c);
}
