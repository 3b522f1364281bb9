/* Private to http/: a connection of an http listener, shared by the
 * server (server.c: I/O, bounds, authentication) and the routes (api.c). */
#ifndef WISP_HTTP_INT_H
#define WISP_HTTP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "http_server.h"
#include "sbuf.h"
#include "transport.h"

/* Staging for reads; the parser copies the head, so this only holds what
 * one read brought and a pipelined next request waiting for its turn. */
#define HTTP_INBUF 4096

struct http_listener {
	struct http_server *srv;
	struct server_listener *bl;
	const struct config_http *cfg;
};

struct http_auth_job;
struct auth_passwd;

struct http_conn {
	struct loop_io io;
	struct transport tcp;
	struct http_listener *hl;
	struct http_req_parser *parser;
	struct loop_timer timer;      /* idle_timeout */
	struct list_node link;        /* srv->conns, then srv->closing */
	struct http_auth_job *auth;   /* a password check in flight, or NULL */
	char *auth_ok;                /* the Authorization value that verified, or NULL */
	const struct auth_passwd *auth_passwd; /* the password file it verified against */
	struct http_request req;
	bool have_head;
	bool partial;                 /* part of a request head arrived, not all of it */
	bool closed;
	bool close_after_write;
	bool peer_loopback;
	bool is_head;                 /* HEAD: the response has no body */
	bool draining;                /* last response sent: reading and dropping what the peer still sends */
	uint32_t drained;             /* bytes dropped while draining */
	char *body;                   /* the request's body, body_want bytes */
	size_t body_len, body_want;
	struct sbuf out;              /* the unsent response */
	size_t out_off;
	uint32_t requests;
	size_t in_len, in_off;
	char peer[64];
	char in[HTTP_INBUF];
};

/* Queues a complete response. `extra` holds whole header lines ending in
 * CRLF, or NULL. The body is left out for HEAD. */
void http_respond(struct http_conn *c, int status, const char *type, const char *body, size_t len,
		  const char *extra);
/* A response whose body the caller built in `body` (freed here). */
void http_respond_sbuf(struct http_conn *c, int status, const char *type, struct sbuf *body);

/* The user name of the request's verified Basic credentials into out
 * (cap bytes, NUL-terminated): its length, or -1 when the request came in
 * without them (a loopback peer) or the name does not fit. */
ssize_t http_auth_user(const struct http_conn *c, char *out, size_t cap);

/* Answers the request in c->req (and c->body): api.c. */
void http_route(struct http_conn *c);
/* Whether `path` is open without authentication (the probes). */
bool http_path_is_public(struct http_str path);

/* The dashboard's files, embedded at build time (assets.c, generated). */
struct http_asset {
	const char *path;  /* "/", "/dashboard.js" */
	const char *type;  /* Content-Type */
	const unsigned char *data;
	size_t len;
};
extern const struct http_asset http_assets[];
extern const size_t http_asset_count;

#endif
