/*
 * What the node's data connection (nats_writer.h) says and hears of the
 * NATS client protocol: a pure module (no I/O), so the unit test and the
 * fuzzer see all of it.
 *
 * The connection only publishes, so it writes CONNECT, PING, PONG and
 * HPUB, and reads INFO, PING, PONG, +OK and -ERR: a server line is one
 * "\r\n"-terminated control line (a MSG would be a server's mistake: the
 * connection subscribes to nothing). INFO is one JSON object; only its
 * top-level keys are read, and only the few the writer uses, with a scanner
 * that skips every other value whole (strings with their escapes, nested
 * arrays and objects), so an unexpected key or a newer server's field is
 * ignored, never misread.
 */
#ifndef WISP_CLUSTER_NATS_PROTO_H
#define WISP_CLUSTER_NATS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sbuf;

/* The longest server control line the writer takes: an INFO lists the
 * cluster's client URLs (connect_urls), a few hundred bytes per server. */
#define NATS_PROTO_LINE_MAX (64u * 1024u)
/* The longest nonce kept (nats-server's are 11 base64url characters). */
#define NATS_PROTO_NONCE_MAX 64

enum nats_op {
	NATS_OP_UNKNOWN = 0,
	NATS_OP_INFO,
	NATS_OP_PING,
	NATS_OP_PONG,
	NATS_OP_OK,
	NATS_OP_ERR,
	NATS_OP_MSG, /* MSG or HMSG: never sent to a connection without subscriptions */
};

/* The operation of one control line (without its "\r\n"); *arg is what
 * follows the operation's name and its blanks (INFO's JSON, -ERR's text). */
enum nats_op nats_proto_op(const char *line, size_t len, const char **arg, size_t *arg_len);

struct nats_info {
	int64_t max_payload;   /* 0: not said */
	bool headers;          /* the server takes HPUB */
	bool tls_required;
	bool tls_available;
	char nonce[NATS_PROTO_NONCE_MAX + 1]; /* "" when none */
};

/* Parses INFO's JSON object into *out (zeroed first). 0, or -1 when it is
 * not one well-formed object, or a key the writer reads has the wrong type
 * or is out of range. */
int nats_proto_info(const char *json, size_t len, struct nats_info *out);

/* What CONNECT says; NULL strings are left out. */
struct nats_connect {
	const char *name;
	const char *version;
	bool tls_required;
	const char *user, *pass; /* user and password */
	const char *token;       /* auth_token */
	const char *jwt;         /* a credentials file's user JWT */
	const char *nkey;        /* an NKey user's public key */
	const char *sig;         /* the nonce's signature, base64url without padding */
};

/* Appends "CONNECT {...}\r\nPING\r\n" to out (sbuf.h: check out->failed).
 * The connection is not verbose (no +OK per publish), takes headers, and
 * hears nothing of its own publishes (echo off: it subscribes to nothing). */
void nats_proto_connect(struct sbuf *out, const struct nats_connect *c);

/* "HPUB <subject> <hdr_len> <hdr_len + payload_len>\r\n" into out (cap
 * bytes, NATS_PROTO_HPUB_HEAD_MAX + subject_len is always enough): its
 * length, or 0 when it does not fit. */
#define NATS_PROTO_HPUB_HEAD_MAX (4 + 1 + 1 + 20 + 1 + 20 + 2)
size_t nats_proto_hpub_head(char *out, size_t cap, const char *subject, size_t subject_len, size_t hdr_len,
			    size_t payload_len);

/* The base64url form (no padding) of n bytes, as nats-server reads a
 * nonce's signature: into out (4 * ((n + 2) / 3) + 1 bytes), NUL-ended. */
void nats_proto_base64url(const unsigned char *in, size_t n, char *out);

#endif
