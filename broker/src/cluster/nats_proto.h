/*
 * What the node's data connection (nats_writer.h) says and hears of the
 * NATS client protocol: a pure module (no I/O), so the unit test and the
 * fuzzer see all of it.
 *
 * It writes CONNECT, PING, PONG and HPUB, and reads INFO, PING, PONG, +OK
 * and -ERR (one "\r\n"-terminated control line each) and MSG and HMSG (a
 * control line, then the message's bytes). INFO is one JSON object; only its
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

/* A MSG or HMSG line's fields: the subject and reply point into the line
 * (reply_len 0: none). The message's body follows the line: hdr_len bytes
 * of header block (0 for MSG), then total_len - hdr_len of payload, then
 * "\r\n". */
struct nats_msg_head {
	const char *subject, *reply;
	size_t subject_len, reply_len;
	uint64_t sid;
	size_t hdr_len, total_len;
};

/* Parses the argument of a MSG (hmsg false) or HMSG line (nats_proto_op's
 * *arg): "<subject> <sid> [reply] <size>" or "<subject> <sid> [reply]
 * <hdr size> <total size>", fields separated by blanks. 0, or -1 when a
 * field is missing or extra, the sid or a size is not plain decimal
 * digits, a size is over max_size, or the header size is over the total
 * or (HMSG) too short for "NATS/1.0\r\n\r\n". */
int nats_proto_msg(const char *arg, size_t len, bool hmsg, size_t max_size, struct nats_msg_head *out);

/* The value of header `key` (compared without case, as NATS's are) in a
 * header block ("NATS/1.0[ status]\r\n", "Key: value\r\n"..., "\r\n"):
 * the first one, its leading and trailing blanks trimmed, pointing into
 * the block. false when it is not there or the block is malformed. */
bool nats_proto_header(const char *block, size_t len, const char *key, size_t key_len, const char **val,
		       size_t *val_len);

/* The base64url form (no padding) of n bytes, as nats-server reads a
 * nonce's signature: into out (4 * ((n + 2) / 3) + 1 bytes), NUL-ended. */
void nats_proto_base64url(const unsigned char *in, size_t n, char *out);

#endif
