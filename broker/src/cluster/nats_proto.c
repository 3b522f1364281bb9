/* The NATS client protocol of the data connection (nats_proto.h). */
#include "nats_proto.h"

#include <stdio.h>
#include <string.h>

#include "sbuf.h"

static bool starts(const char *line, size_t len, const char *op, size_t oplen)
{
	if (len < oplen)
		return false;
	for (size_t i = 0; i < oplen; i++) {
		char ch = line[i];
		if (ch >= 'a' && ch <= 'z')
			ch = (char)(ch - 'a' + 'A');
		if (ch != op[i])
			return false;
	}
	/* The name ends the line or is followed by a blank. */
	return len == oplen || line[oplen] == ' ' || line[oplen] == '\t';
}

enum nats_op nats_proto_op(const char *line, size_t len, const char **arg, size_t *arg_len)
{
	static const struct {
		const char *name;
		size_t len;
		enum nats_op op;
	} ops[] = {
		{"INFO", 4, NATS_OP_INFO}, {"PING", 4, NATS_OP_PING}, {"PONG", 4, NATS_OP_PONG},
		{"+OK", 3, NATS_OP_OK},    {"-ERR", 4, NATS_OP_ERR},  {"MSG", 3, NATS_OP_MSG},
		{"HMSG", 4, NATS_OP_MSG},
	};
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		if (!starts(line, len, ops[i].name, ops[i].len))
			continue;
		size_t p = ops[i].len;
		while (p < len && (line[p] == ' ' || line[p] == '\t'))
			p++;
		*arg = line + p;
		*arg_len = len - p;
		return ops[i].op;
	}
	*arg = line;
	*arg_len = len;
	return NATS_OP_UNKNOWN;
}

/* ---- INFO: a flat reading of one JSON object ---- */

struct scan {
	const char *p, *end;
};

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\r' || *s->p == '\n'))
		s->p++;
}

/* Past a string whose opening quote is at s->p; its inside in [*from, *to),
 * escapes left as they are. */
static int skip_string(struct scan *s, const char **from, const char **to)
{
	if (s->p >= s->end || *s->p != '"')
		return -1;
	*from = ++s->p;
	while (s->p < s->end && *s->p != '"') {
		if ((unsigned char)*s->p < 0x20)
			return -1;
		s->p += *s->p == '\\' ? 2 : 1;
	}
	if (s->p >= s->end)
		return -1;
	*to = s->p++;
	return 0;
}

/* Past one value of any kind. Nesting is bounded by the line (64 KiB):
 * counted, not recursed. */
static int skip_value(struct scan *s)
{
	const char *a, *b;
	if (s->p >= s->end)
		return -1;
	if (*s->p == '"')
		return skip_string(s, &a, &b);
	if (*s->p == '{' || *s->p == '[') {
		size_t depth = 0;
		while (s->p < s->end) {
			char ch = *s->p;
			if (ch == '"') {
				if (skip_string(s, &a, &b) != 0)
					return -1;
				continue;
			}
			if (ch == '{' || ch == '[')
				depth++;
			else if ((ch == '}' || ch == ']') && --depth == 0) {
				s->p++;
				return 0;
			}
			s->p++;
		}
		return -1;
	}
	const char *start = s->p;
	while (s->p < s->end && *s->p && strchr("+-.0123456789eEtruefalsn", *s->p))
		s->p++;
	return s->p > start ? 0 : -1;
}

static int read_bool(struct scan *s, bool *out)
{
	if (s->end - s->p >= 4 && memcmp(s->p, "true", 4) == 0) {
		*out = true;
		s->p += 4;
		return 0;
	}
	if (s->end - s->p >= 5 && memcmp(s->p, "false", 5) == 0) {
		*out = false;
		s->p += 5;
		return 0;
	}
	return -1;
}

/* A non-negative integer below 2^53 (JSON's exact range). */
static int read_int(struct scan *s, int64_t *out)
{
	int64_t v = 0;
	const char *start = s->p;
	while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
		if (v > (INT64_C(1) << 53) / 10)
			return -1;
		v = v * 10 + (*s->p - '0');
		s->p++;
	}
	if (s->p == start || (s->p < s->end && *s->p && strchr(".eE", *s->p)))
		return -1;
	*out = v;
	return 0;
}

static bool key_is(const char *k, size_t klen, const char *name)
{
	return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

int nats_proto_info(const char *json, size_t len, struct nats_info *out)
{
	memset(out, 0, sizeof *out);
	struct scan s = {json, json + len};
	skip_ws(&s);
	if (s.p >= s.end || *s.p++ != '{')
		return -1;
	skip_ws(&s);
	if (s.p < s.end && *s.p == '}') {
		s.p++;
	} else {
		for (;;) {
			const char *k, *kend;
			skip_ws(&s);
			if (skip_string(&s, &k, &kend) != 0)
				return -1;
			size_t klen = (size_t)(kend - k);
			skip_ws(&s);
			if (s.p >= s.end || *s.p++ != ':')
				return -1;
			skip_ws(&s);
			int rc;
			if (key_is(k, klen, "max_payload")) {
				rc = read_int(&s, &out->max_payload);
			} else if (key_is(k, klen, "headers")) {
				rc = read_bool(&s, &out->headers);
			} else if (key_is(k, klen, "tls_required")) {
				rc = read_bool(&s, &out->tls_required);
			} else if (key_is(k, klen, "tls_available")) {
				rc = read_bool(&s, &out->tls_available);
			} else if (key_is(k, klen, "nonce")) {
				const char *v, *vend;
				rc = skip_string(&s, &v, &vend);
				size_t vlen = rc == 0 ? (size_t)(vend - v) : 0;
				/* A nonce is signed as its bytes: one with an escape, or
				 * longer than any server sends, is not taken. */
				if (rc == 0 && (vlen > NATS_PROTO_NONCE_MAX || memchr(v, '\\', vlen)))
					rc = -1;
				if (rc == 0) {
					memcpy(out->nonce, v, vlen);
					out->nonce[vlen] = '\0';
				}
			} else {
				rc = skip_value(&s);
			}
			if (rc != 0)
				return -1;
			skip_ws(&s);
			if (s.p >= s.end)
				return -1;
			if (*s.p == '}') {
				s.p++;
				break;
			}
			if (*s.p++ != ',')
				return -1;
		}
	}
	skip_ws(&s);
	return s.p == s.end ? 0 : -1;
}

/* ---- what the writer says ---- */

static void json_field(struct sbuf *out, const char *key, const char *value)
{
	if (!value)
		return;
	sbuf_addf(out, ",\"%s\":\"", key);
	sbuf_add_json(out, value, strlen(value));
	sbuf_add(out, "\"", 1);
}

void nats_proto_connect(struct sbuf *out, const struct nats_connect *c)
{
	sbuf_addf(out, "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":%s,\"headers\":true,"
		  "\"no_responders\":false,\"echo\":false,\"protocol\":1,\"lang\":\"C\"",
		  c->tls_required ? "true" : "false");
	json_field(out, "version", c->version);
	json_field(out, "name", c->name);
	json_field(out, "user", c->user);
	json_field(out, "pass", c->pass);
	json_field(out, "auth_token", c->token);
	json_field(out, "jwt", c->jwt);
	json_field(out, "nkey", c->nkey);
	json_field(out, "sig", c->sig);
	sbuf_add(out, "}\r\nPING\r\n", 9);
}

size_t nats_proto_hpub_head(char *out, size_t cap, const char *subject, size_t subject_len, size_t hdr_len,
			    size_t payload_len)
{
	if (subject_len > (size_t)INT32_MAX)
		return 0;
	int n = snprintf(out, cap, "HPUB %.*s %zu %zu\r\n", (int)subject_len, subject, hdr_len, hdr_len + payload_len);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- MSG and HMSG ---- */

static bool blank(char ch) { return ch == ' ' || ch == '\t'; }

/* Plain decimal digits, at most max. */
static int decimal(const char *p, size_t len, uint64_t max, uint64_t *out)
{
	if (len == 0 || len > 20)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		uint64_t d = (uint64_t)(p[i] - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int nats_proto_msg(const char *arg, size_t len, bool hmsg, size_t max_size, struct nats_msg_head *out)
{
	const char *f[6];
	size_t flen[6], n = 0;
	for (size_t p = 0; p < len;) {
		while (p < len && blank(arg[p]))
			p++;
		if (p == len)
			break;
		if (n == 6)
			return -1;
		size_t start = p;
		while (p < len && !blank(arg[p]))
			p++;
		f[n] = arg + start;
		flen[n++] = p - start;
	}
	size_t sizes = hmsg ? 2 : 1;
	if (n != 2 + sizes && n != 3 + sizes)
		return -1;
	*out = (struct nats_msg_head){.subject = f[0], .subject_len = flen[0]};
	if (decimal(f[1], flen[1], UINT64_MAX, &out->sid) != 0)
		return -1;
	if (n == 3 + sizes) {
		out->reply = f[2];
		out->reply_len = flen[2];
	}
	uint64_t hdr = 0, total = 0;
	if (decimal(f[n - 1], flen[n - 1], max_size, &total) != 0 ||
	    (hmsg && decimal(f[n - 2], flen[n - 2], max_size, &hdr) != 0))
		return -1;
	if (hdr > total || (hmsg && hdr < 12))
		return -1;
	out->hdr_len = (size_t)hdr;
	out->total_len = (size_t)total;
	return 0;
}

static bool same_key(const char *a, const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char x = a[i], y = b[i];
		if (x >= 'A' && x <= 'Z')
			x = (char)(x - 'A' + 'a');
		if (y >= 'A' && y <= 'Z')
			y = (char)(y - 'A' + 'a');
		if (x != y)
			return false;
	}
	return true;
}

bool nats_proto_header(const char *block, size_t len, const char *key, size_t key_len, const char **val,
		       size_t *val_len)
{
	if (len < 12 || memcmp(block, "NATS/1.0", 8) != 0 || memcmp(block + len - 4, "\r\n\r\n", 4) != 0)
		return false;
	const char *eol = memmem(block, len, "\r\n", 2);
	size_t p = (size_t)(eol - block) + 2; /* past the version line */
	while (p + 2 <= len) {
		const char *line = block + p;
		const char *end = memmem(line, len - p, "\r\n", 2);
		size_t n = (size_t)(end - line); /* there is one: the block ends so */
		if (n == 0)
			return false; /* the empty line that ends the block */
		const char *colon = memchr(line, ':', n);
		if (colon && (size_t)(colon - line) == key_len && same_key(line, key, key_len)) {
			const char *v = colon + 1, *ve = line + n;
			while (v < ve && blank(*v))
				v++;
			while (ve > v && blank(ve[-1]))
				ve--;
			if (memchr(v, '\r', (size_t)(ve - v)) || memchr(v, '\n', (size_t)(ve - v)))
				return false; /* a bare CR or LF: no sender of ours writes one */
			*val = v;
			*val_len = (size_t)(ve - v);
			return true;
		}
		p += n + 2;
	}
	return false;
}

void nats_proto_base64url(const unsigned char *in, size_t n, char *out)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i = 0;
	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = abc[v >> 6 & 63];
		out[o++] = abc[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = abc[v >> 6 & 63];
	}
	out[o] = '\0';
}
