/*
 * The http listeners' connections: accept (with the connection limits),
 * reading a request head through net/http.c and its body, the per
 * connection bounds, Basic authentication on the helper threads, and
 * writing one response at a time. What each path answers is api.c's.
 *
 * A connection is freed in the next loop turn (the reaper), never inside
 * its own callback chain.
 */
#include "http_int.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "auth.h"
#include "bg.h"
#include "err.h"
#include "form.h"
#include "log.h"
#include "passwd.h"

/* A response larger than this is refused (500) rather than built: the
 * largest, a tree page of tree_page_size children with 256-byte values,
 * stays far below it. */
#define HTTP_MAX_RESPONSE (16u << 20)

/* The lingering close's bounds (see flush). */
#define LINGER_SECONDS 2
#define LINGER_BYTES (256u * 1024u)

static void hconn_close(struct http_conn *c, const char *why);
static void process(struct http_conn *c);
static void on_idle(struct loop *l, struct loop_timer *t);
static void forget_auth(struct http_conn *c);

/* ---- output ---- */

void http_respond(struct http_conn *c, int status, const char *type, const char *body, size_t len,
		  const char *extra)
{
	struct http_server *srv = c->hl->srv;
	char head[1024];
	struct http_resp r;
	http_resp_start(&r, head, sizeof head, status);
	http_resp_header(&r, "Content-Type", type);
	http_resp_headerf(&r, "Content-Length", "%zu", len);
	http_resp_header(&r, "Cache-Control", "no-store");
	http_resp_header(&r, "X-Content-Type-Options", "nosniff");
	c->requests++;
	/* Answers a client can simply act on keep the connection. */
	bool recoverable = status < 400 || status == 401 || status == 404 || status == 405 || status == 503;
	if (!c->req.keep_alive || c->requests >= c->hl->cfg->max_requests || !recoverable)
		c->close_after_write = true;
	http_resp_header(&r, "Connection", c->close_after_write ? "close" : "keep-alive");
	ssize_t n = http_resp_end(&r);
	if (n < 0) {
		hconn_close(c, "response head too large");
		return;
	}
	/* http_resp_end wrote the blank line: the extra lines go before it. */
	sbuf_add(&c->out, head, (size_t)n - 2);
	if (extra)
		sbuf_adds(&c->out, extra);
	sbuf_add(&c->out, "\r\n", 2);
	if (!c->is_head)
		sbuf_add(&c->out, body, len);
	if (c->out.failed) {
		hconn_close(c, "out of memory for a response");
		return;
	}
	srv->b->stats.http_requests++;
}

void http_respond_sbuf(struct http_conn *c, int status, const char *type, struct sbuf *body)
{
	if (body->failed)
		http_respond(c, 500, "text/plain; charset=utf-8", "response too large\n", 19, NULL);
	else
		http_respond(c, status, type, body->data ? body->data : "", body->len, NULL);
	sbuf_free(body);
}

/* Writes what the socket takes; 0, or an error after which it is closed. */
static int flush(struct http_conn *c)
{
	struct http_server *srv = c->hl->srv;
	while (c->out_off < c->out.len) {
		struct iovec iov = {c->out.data + c->out_off, c->out.len - c->out_off};
		ssize_t n = transport_writev(&c->tcp, &iov, 1);
		if (n == WISP_EAGAIN) {
			loop_io_set(srv->loop, &c->io, LOOP_WRITE);
			return 0;
		}
		if (n < 0) {
			hconn_close(c, "write error");
			return WISP_EIO;
		}
		c->out_off += (size_t)n;
	}
	sbuf_free(&c->out);
	c->out.max = HTTP_MAX_RESPONSE;
	c->out_off = 0;
	if (c->close_after_write) {
		/* A lingering close (RFC 9112 9.6; nginx's lingering_close):
		 * closing with unread input sends a reset, which can destroy the
		 * response before the client reads it (a 431 to a client still
		 * sending its headers). So: FIN, then read and drop what still
		 * comes, for at most LINGER_SECONDS and LINGER_BYTES. */
		shutdown(c->tcp.fd, SHUT_WR);
		c->draining = true;
		c->in_len = c->in_off = 0;
		loop_timer_start(srv->loop, &c->timer, LINGER_SECONDS, on_idle);
		loop_io_set(srv->loop, &c->io, LOOP_READ);
		return WISP_ECLOSED;
	}
	loop_io_set(srv->loop, &c->io, LOOP_READ);
	return 0;
}

/* ---- closing ---- */

static void reap(struct loop *l, struct loop_timer *t)
{
	struct http_server *srv = container_of(t, struct http_server, reaper);
	(void)l;
	struct list_node *n;
	while ((n = list_first(&srv->closing)) != NULL) {
		struct http_conn *c = container_of(n, struct http_conn, link);
		list_remove(n);
		wisp_free(c);
	}
}

struct http_auth_job {
	struct bg_job job;
	struct http_conn *c;          /* NULL once the connection is gone */
	struct auth_passwd *passwd;
	bool ok;
	size_t ulen, plen;
	char data[];                  /* user, then password */
};

static void hconn_close(struct http_conn *c, const char *why)
{
	struct http_server *srv = c->hl->srv;
	if (c->closed)
		return;
	c->closed = true;
	if (why)
		log_limited("http connection closed", LOG_INFO, "http", "%s: connection from %s closed: %s",
			    c->hl->bl->net.name, c->peer, why);
	if (c->auth) {
		struct broker *b = srv->b;
		if (bg_cancel(b->bg, &c->auth->job)) {
			auth_passwd_unref(c->auth->passwd);
			memset(c->auth->data, 0, c->auth->ulen + c->auth->plen);
			wisp_free(c->auth);
		} else {
			c->auth->c = NULL; /* its done() frees it */
		}
		c->auth = NULL;
	}
	loop_io_stop(srv->loop, &c->io);
	loop_timer_stop(srv->loop, &c->timer);
	transport_close(&c->tcp);
	http_req_free(c->parser);
	c->parser = NULL;
	sbuf_free(&c->out);
	wisp_free(c->body);
	c->body = NULL;
	forget_auth(c);
	c->hl->bl->conn_count--;
	srv->count--;
	srv->b->srv.other_conns--;
	list_remove(&c->link);
	list_push_back(&srv->closing, &c->link);
	if (!loop_timer_armed(&srv->reaper))
		loop_timer_soon(srv->loop, &srv->reaper, reap);
}

static void on_idle(struct loop *l, struct loop_timer *t)
{
	struct http_conn *c = container_of(t, struct http_conn, timer);
	(void)l;
	if (c->draining || !(c->partial || c->have_head)) {
		hconn_close(c, NULL); /* idle between requests (or a browser's preconnect): normal */
		return;
	}
	c->hl->srv->b->stats.http_refused++;
	hconn_close(c, "no complete request within idle_timeout");
}

/* A request the connection cannot go on after: its status, then close. */
static void refuse(struct http_conn *c, int status, const char *why)
{
	struct broker *b = c->hl->srv->b;
	b->stats.http_refused++;
	log_limited("http request refused", LOG_NOTICE, "http", "%s: refusing a request from %s (%d): %s",
		    c->hl->bl->net.name, c->peer, status, why);
	char buf[256];
	ssize_t n = http_error_response(buf, sizeof buf, status, NULL);
	c->close_after_write = true;
	if (n > 0)
		sbuf_add(&c->out, buf, (size_t)n);
	c->in_len = c->in_off = 0;
	flush(c);
}

/* ---- authentication ---- */

static void auth_work(struct bg_job *job)
{
	struct http_auth_job *j = container_of(job, struct http_auth_job, job);
	j->ok = passwd_verify(j->passwd->db, j->data, j->ulen, j->data + j->ulen, j->plen);
}

static void unauthorized(struct http_conn *c, const char *why)
{
	struct broker *b = c->hl->srv->b;
	b->stats.http_auth_failures++;
	log_limited("http authentication failed", LOG_NOTICE, "http", "%s: %s from %s: %s", c->hl->bl->net.name,
		    "authentication failed", c->peer, why);
	static const char body[] = "authentication required\n";
	http_respond(c, 401, "text/plain; charset=utf-8", body, sizeof body - 1,
		     "WWW-Authenticate: Basic realm=\"wisp\", charset=\"UTF-8\"\r\n");
}

static void forget_auth(struct http_conn *c)
{
	if (!c->auth_ok)
		return;
	memset(c->auth_ok, 0, strlen(c->auth_ok));
	wisp_free(c->auth_ok);
	c->auth_ok = NULL;
	c->auth_passwd = NULL;
}

/* The request's credentials verified against `pw`: later requests on the
 * connection with the same header pass without a check, as long as the
 * password file is still `pw` (a reload makes them verify again). */
static void remember_auth(struct http_conn *c, const struct auth_passwd *pw)
{
	struct http_str h = c->req.hdr[HTTP_HDR_AUTHORIZATION];
	forget_auth(c);
	c->auth_ok = wisp_strndup(h.ptr, h.len);
	if (c->auth_ok)
		c->auth_passwd = pw;
}

static void auth_done(struct bg_job *job)
{
	struct http_auth_job *j = container_of(job, struct http_auth_job, job);
	struct http_conn *c = j->c;
	bool ok = j->ok;
	if (c && ok) {
		passwd_memo_set(j->passwd->db, j->data, j->ulen, j->data + j->ulen, j->plen);
		remember_auth(c, j->passwd);
	}
	auth_passwd_unref(j->passwd);
	memset(j->data, 0, j->ulen + j->plen);
	wisp_free(j);
	if (!c)
		return;
	c->auth = NULL;
	if (!ok) {
		c->close_after_write = true; /* one guess per connection */
		unauthorized(c, "wrong user name or password");
	} else {
		http_route(c);
	}
	c->have_head = false;
	wisp_free(c->body);
	c->body = NULL;
	http_req_reset(c->parser);
	loop_timer_start(c->hl->srv->loop, &c->timer, c->hl->cfg->idle_timeout, on_idle);
	if (flush(c) == 0 && c->out.len == 0)
		process(c);
}

/* Decodes the Authorization value `h` as Basic credentials into cred
 * (cap bytes, "user:password", not NUL-terminated): their length, with
 * *ulen the user's; WISP_EINVAL when they are not Basic, WISP_EPROTO when
 * malformed. The caller wipes cred. */
static ssize_t basic_decode(const char *h, size_t n, char *cred, size_t cap, size_t *ulen)
{
	if (n < 6 || strncasecmp(h, "Basic ", 6) != 0)
		return WISP_EINVAL;
	h += 6;
	n -= 6;
	while (n && *h == ' ')
		h++, n--;
	ssize_t cl = http_base64_decode(h, n, cred, cap);
	const char *colon = cl > 0 ? memchr(cred, ':', (size_t)cl) : NULL;
	if (!colon)
		return WISP_EPROTO;
	*ulen = (size_t)(colon - cred);
	return cl;
}

ssize_t http_auth_user(const struct http_conn *c, char *out, size_t cap)
{
	if (!c->auth_ok || cap == 0)
		return -1;
	char cred[512];
	size_t ulen = 0;
	ssize_t cl = basic_decode(c->auth_ok, strlen(c->auth_ok), cred, sizeof cred, &ulen);
	ssize_t ret = -1;
	if (cl >= 0 && ulen < cap) {
		memcpy(out, cred, ulen);
		out[ulen] = '\0';
		ret = (ssize_t)ulen;
	}
	memset(cred, 0, sizeof cred);
	return ret;
}

/* 1 when the request may go on, 0 when it was answered (401) or waits for
 * a check on a helper thread. */
static int authorize(struct http_conn *c)
{
	struct broker *b = c->hl->srv->b;
	if (http_path_is_public(c->req.path))
		return 1;
	if (c->peer_loopback && c->hl->cfg->require_auth != CONFIG_HTTP_AUTH_ALWAYS)
		return 1;
	struct http_str h = c->req.hdr[HTTP_HDR_AUTHORIZATION];
	if (c->auth_ok && c->auth_passwd == b->auth.passwd && strlen(c->auth_ok) == h.len &&
	    memcmp(c->auth_ok, h.ptr, h.len) == 0)
		return 1;
	forget_auth(c);
	char cred[512];
	size_t ulen = 0;
	ssize_t cl = basic_decode(h.ptr, h.len, cred, sizeof cred, &ulen);
	if (cl == WISP_EINVAL) {
		unauthorized(c, h.len ? "not Basic credentials" : "no credentials");
		return 0;
	}
	if (cl < 0 || !b->auth.passwd) {
		memset(cred, 0, sizeof cred);
		unauthorized(c, !b->auth.passwd ? "no password file" : "malformed credentials");
		return 0;
	}
	const char *colon = cred + ulen;
	size_t plen = (size_t)cl - ulen - 1;
	if (passwd_memo_hit(b->auth.passwd->db, cred, ulen, colon + 1, plen)) {
		memset(cred, 0, sizeof cred);
		remember_auth(c, b->auth.passwd);
		return 1;
	}
	struct http_auth_job *j = wisp_malloc(sizeof *j + ulen + plen);
	if (!j) {
		memset(cred, 0, sizeof cred);
		http_respond(c, 503, "text/plain; charset=utf-8", "out of memory\n", 14, NULL);
		return 0;
	}
	memset(j, 0, sizeof *j);
	j->job.work = auth_work;
	j->job.done = auth_done;
	j->c = c;
	j->ulen = ulen;
	j->plen = plen;
	memcpy(j->data, cred, ulen);
	memcpy(j->data + ulen, colon + 1, plen);
	memset(cred, 0, sizeof cred);
	j->passwd = auth_passwd_ref(&b->auth);
	if (bg_submit(b->bg, &j->job) != 0) {
		auth_passwd_unref(j->passwd);
		memset(j->data, 0, ulen + plen);
		wisp_free(j);
		b->auth.pending_max_hit++;
		http_respond(c, 503, "text/plain; charset=utf-8", "too many password checks pending\n", 33,
			     "Retry-After: 1\r\n");
		return 0;
	}
	c->auth = j;
	loop_io_set(c->hl->srv->loop, &c->io, 0); /* nothing more until the answer */
	return 0;
}

/* ---- input ---- */

/* Reads Content-Length; -1 when absent or not a number. A number too
 * large to hold reads as LLONG_MAX: a length, too large for any body
 * (413), not a missing one (411). */
static long long content_length(const struct http_request *req)
{
	struct http_str v = req->hdr[HTTP_HDR_CONTENT_LENGTH];
	if (v.len == 0)
		return -1;
	long long n = 0;
	for (size_t i = 0; i < v.len; i++) {
		if (v.ptr[i] < '0' || v.ptr[i] > '9')
			return -1;
		n = n > (LLONG_MAX - 9) / 10 ? LLONG_MAX : n * 10 + (v.ptr[i] - '0');
	}
	return n;
}

/* One complete request: authenticate, answer, get ready for the next. */
static void dispatch(struct http_conn *c)
{
	c->is_head = strcmp(c->req.method, "HEAD") == 0;
	int ok = authorize(c);
	if (c->closed || c->auth)
		return; /* the check's done() answers */
	if (ok)
		http_route(c);
	if (c->closed)
		return;
	c->have_head = false;
	wisp_free(c->body);
	c->body = NULL;
	http_req_reset(c->parser);
	/* The next request waits for its own full idle_timeout. */
	loop_timer_start(c->hl->srv->loop, &c->timer, c->hl->cfg->idle_timeout, on_idle);
}

/* Works through the buffered input while no response is unsent. */
static void process(struct http_conn *c)
{
	while (!c->closed && !c->draining && !c->auth && c->out.len == 0) {
		if (c->have_head && c->body_len == c->body_want) {
			dispatch(c);
			if (!c->closed && c->out.len)
				flush(c);
			continue;
		}
		if (c->in_off == c->in_len)
			break;
		const char *p = c->in + c->in_off;
		size_t n = c->in_len - c->in_off;
		if (c->have_head) {
			size_t take = c->body_want - c->body_len < n ? c->body_want - c->body_len : n;
			memcpy(c->body + c->body_len, p, take);
			c->body_len += take;
			c->in_off += take;
			if (c->body_len == c->body_want)
				c->body[c->body_len] = '\0';
			continue;
		}
		ssize_t used = http_req_feed(c->parser, p, n, &c->req);
		if (used < 0) {
			int st = http_req_status(c->parser);
			refuse(c, st ? st : 400, http_req_error(c->parser));
			return;
		}
		if (used == 0) {
			c->in_off = c->in_len;
			c->partial = true;
			break;
		}
		c->in_off += (size_t)used;
		/* [RFC 9112 3.2] "A server MUST respond with a 400 (Bad Request)
		 * status code to any HTTP/1.1 request message that lacks a Host
		 * header field"; an empty one names no authority either (the ws
		 * listener refuses both too). */
		if (c->req.version_minor >= 1 && c->req.hdr[HTTP_HDR_HOST].len == 0) {
			refuse(c, 400, "no Host header");
			return;
		}
		c->have_head = true;
		c->partial = false;
		c->body_len = c->body_want = 0;
		if (!c->req.has_body)
			continue;
		long long cl = content_length(&c->req);
		if (cl < 0) {
			refuse(c, 411, "a body without Content-Length");
			return;
		}
		if ((unsigned long long)cl > c->hl->cfg->max_body_size) {
			refuse(c, 413, "body over http.max_body_size");
			return;
		}
		c->body_want = (size_t)cl;
		c->body = wisp_malloc(c->body_want + 1);
		if (!c->body) {
			refuse(c, 503, "out of memory for the body");
			return;
		}
		c->body[0] = '\0';
		/* [RFC 9110 10.1.1] a client that sent "Expect: 100-continue" waits
		 * for a 100 (or a final status, which a body over the bounds above
		 * got) before it sends the body; without one it waits a second
		 * (curl) or for good. Not when the body is already arriving (a
		 * server MAY omit it), nor to HTTP/1.0 (15.2: no 1xx to it). What
		 * only the route or the password check decides still comes after
		 * the body. */
		if (c->in_off == c->in_len && c->req.version_minor >= 1 &&
		    http_has_token(c->req.hdr[HTTP_HDR_EXPECT], "100-continue")) {
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			sbuf_add(&c->out, cont, sizeof cont - 1);
			if (c->out.failed) {
				hconn_close(c, "out of memory for a response");
				return;
			}
			if (flush(c) != 0)
				return;
		}
	}
	if (!c->closed && c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
}

static void on_io(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct http_conn *c = container_of(io, struct http_conn, io);
	(void)l;
	if (c->draining) {
		ssize_t n = transport_read(&c->tcp, c->in, sizeof c->in);
		if (n > 0)
			c->drained += (uint32_t)n;
		if (n != WISP_EAGAIN && (n <= 0 || c->drained >= LINGER_BYTES))
			hconn_close(c, NULL);
		return;
	}
	if ((events & LOOP_WRITE) && c->out.len) {
		if (flush(c) != 0 || c->out.len)
			return;
		process(c); /* a pipelined request may be waiting */
		if (c->closed || c->out.len || c->auth)
			return;
	}
	if (!(events & LOOP_READ) || c->closed || c->draining || c->out.len || c->auth)
		return;
	if (c->in_off)
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
	c->in_len -= c->in_off;
	c->in_off = 0;
	if (c->in_len == sizeof c->in) {
		process(c);
		return;
	}
	ssize_t n = transport_read(&c->tcp, c->in + c->in_len, sizeof c->in - c->in_len);
	if (n == WISP_EAGAIN)
		return;
	if (n <= 0) {
		hconn_close(c, c->have_head || c->in_len ? "closed in the middle of a request" : NULL);
		return;
	}
	c->in_len += (size_t)n;
	process(c);
}

/* ---- accept ---- */

static bool is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
	}
	return false;
}

static void on_accept(struct listener *ls, int fd, const struct sockaddr *sa, void *ctx)
{
	struct http_listener *hl = ctx;
	struct http_server *srv = hl->srv;
	struct broker *b = srv->b;
	struct server_listener *bl = hl->bl;
	const struct config_limits *lim = &b->cfg->limits;
	char peer[64];
	net_format_addr(sa, peer, sizeof peer);
	(void)ls;
	bool broker_full = lim->max_connections && b->srv.conns.count + b->srv.other_conns >= lim->max_connections;
	if (broker_full || (bl->cfg->max_connections && bl->conn_count >= bl->cfg->max_connections)) {
		b->srv.stats.conns_refused++;
		bl->conns_refused++;
		log_limited("refused: connection limit", LOG_WARNING, "conn",
			    "%s: refusing %s: connection limit reached (%s)", bl->net.name, peer,
			    broker_full ? "limits.max_connections" : "the listener's max_connections");
		close(fd);
		return;
	}
	struct http_limits hlim = {.max_head_bytes = bl->cfg->max_header_bytes, .max_headers = bl->cfg->max_headers};
	struct http_conn *c = wisp_calloc(1, sizeof *c);
	struct http_req_parser *parser = c ? http_req_new(&hlim) : NULL;
	if (!parser) {
		wisp_free(c);
		b->srv.stats.conns_refused++;
		bl->conns_refused++;
		log_limited("refused: out of memory", LOG_WARNING, "conn", "%s: refusing %s: out of memory",
			    bl->net.name, peer);
		close(fd);
		return;
	}
	c->hl = hl;
	c->parser = parser;
	c->out.max = HTTP_MAX_RESPONSE;
	c->peer_loopback = is_loopback(sa);
	snprintf(c->peer, sizeof c->peer, "%s", peer);
	tcp_transport_init(&c->tcp, fd);
	list_init(&c->timer.link);
	if (loop_io_start(srv->loop, &c->io, fd, LOOP_READ, on_io) != 0) {
		http_req_free(parser);
		transport_close(&c->tcp);
		wisp_free(c);
		return;
	}
	list_push_back(&srv->conns, &c->link);
	srv->count++;
	b->srv.other_conns++;
	bl->conn_count++;
	loop_timer_start(srv->loop, &c->timer, hl->cfg->idle_timeout, on_idle);
}

int http_server_open(struct http_server *s, struct broker *b, char *err, size_t errlen)
{
	memset(s, 0, sizeof *s);
	s->b = b;
	s->loop = b->loop;
	list_init(&s->conns);
	list_init(&s->closing);
	list_init(&s->reaper.link);
	size_t n = 0;
	for (size_t i = 0; i < b->srv.listener_count; i++)
		n += b->srv.listeners[i].cfg->protocol == CONFIG_PROTO_HTTP;
	if (n == 0)
		return 0;
	s->listeners = wisp_calloc(n, sizeof *s->listeners);
	if (!s->listeners) {
		snprintf(err, errlen, "out of memory");
		return WISP_ENOMEM;
	}
	for (size_t i = 0; i < b->srv.listener_count; i++) {
		struct server_listener *bl = &b->srv.listeners[i];
		if (bl->cfg->protocol != CONFIG_PROTO_HTTP)
			continue;
		struct http_listener *hl = &s->listeners[s->listener_count++];
		hl->srv = s;
		hl->bl = bl;
		hl->cfg = &bl->cfg->http;
		char why[384];
		int rc = listener_open(&bl->net, s->loop, bl->cfg->bind, bl->cfg->port, on_accept, hl, why, sizeof why);
		if (rc != 0) {
			/* Named as server.c names the other listeners' failures. */
			snprintf(err, errlen, "%s: listeners[%zu].%s: %s", b->cfg->path, i,
				 rc == WISP_EINVAL ? "bind" : "port", why);
			http_server_close(s);
			return rc;
		}
		log_msg(LOG_NOTICE, "main", "listening on %s (http: /metrics, /healthz, /readyz%s)", bl->net.name,
			hl->cfg->dashboard ? ", dashboard at /" : "");
	}
	return 0;
}

void http_server_close(struct http_server *s)
{
	struct list_node *n;
	while ((n = list_first(&s->conns)) != NULL)
		hconn_close(container_of(n, struct http_conn, link), NULL);
	loop_timer_stop(s->loop, &s->reaper);
	reap(s->loop, &s->reaper);
	for (size_t i = 0; i < s->listener_count; i++)
		listener_close(&s->listeners[i].bl->net, s->loop);
	wisp_free(s->listeners);
	s->listeners = NULL;
	s->listener_count = 0;
}
