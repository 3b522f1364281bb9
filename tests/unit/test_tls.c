/*
 * TLS transport: context validation refuses bad options and files with a
 * "<what>: <file>: <reason>" message; real handshakes between a server and
 * a client context run in-process over a non-blocking socketpair, driven by
 * a bounded poll loop (verification, mutual TLS, peer CN, ciphersuites),
 * then data flows both ways, including 100 KiB writes through a small
 * socket buffer so that WANT_WRITE and the retry rule are exercised;
 * plaintext sent to a TLS server fails the handshake cleanly. A server
 * session is allocated only when a handshake record arrives, and the
 * estimate of mbed TLS's memory is charged to the allocator (and refused
 * past its limit) and uncharged at close. Session resumption: a client
 * that offers its saved session is resumed from a ticket or from the
 * server's cache, and falls back to a full handshake when the server's
 * context (its ticket keys and cache) is a different one.
 *
 * Suite init makes certificates with certs/make-certs.sh in a temp dir.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit_main.h"
#include "alloc.h"
#include "codec.h"
#include "err.h"
#include "msg.h"
#include "outq.h"
#include "tls.h"
#include "transport.h"

#ifndef WISP_SOURCE_DIR
#define WISP_SOURCE_DIR "."
#endif

#define MAX_ROUNDS 400 /* poll-loop iterations before a handshake counts as stuck */
#define POLL_MS 50
#define BIG_LEN (100u * 1024u)

#define DIR_TEMPLATE "/tmp/wisp-test-tls-XXXXXX"
static char dir[] = DIR_TEMPLATE;

/* Absolute path of a file in the scratch dir; NULL stays NULL. A small ring
 * of buffers so one expression can hold several paths. */
static const char *P(const char *name)
{
	static char ring[8][512];
	static unsigned next;
	if (!name)
		return NULL;
	char *b = ring[next++ % 8];
	snprintf(b, sizeof ring[0], "%s/%s", dir, name);
	return b;
}

/* CU_ASSERT with the table case named in the failure report. */
#define CHECK(cond, label)                                                                     \
	do {                                                                                   \
		char msg_[512];                                                                \
		snprintf(msg_, sizeof msg_, "[%s] %s", (label), #cond);                        \
		CU_assertImplementation((cond) ? CU_TRUE : CU_FALSE, __LINE__, msg_, __FILE__, \
		                        "", CU_FALSE);                                         \
	} while (0)

static int run(const char *args)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "sh '%s/certs/make-certs.sh' --dir '%s' %s >/dev/null", WISP_SOURCE_DIR,
	         dir, args);
	int rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "test_tls: failed: %s\n", cmd);
	return rc;
}

static int write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	if (!fp)
		return -1;
	fputs(text, fp);
	return fclose(fp);
}

static int suite_init(void)
{
	memcpy(dir, DIR_TEMPLATE, sizeof dir);
	if (!mkdtemp(dir))
		return -1;
	if (run("") || run("client sensor-0001") || run("--rsa client sensor-rsa") ||
	    run("selfsigned rogue") || run("expired old") || run("notyet future"))
		return -1;
	char cmd[1024];
	snprintf(cmd, sizeof cmd,
	         "openssl pkey -in '%s/server.key' -aes256 -passout pass:secret -out '%s/enc.key' 2>/dev/null",
	         dir, dir);
	if (system(cmd) != 0)
		return -1;
	if (write_file(P("garbage.pem"), "this is not a certificate\n") || mkdir(P("adir"), 0700) == -1 ||
	    mkdir(P("cadir"), 0700) == -1)
		return -1;
	snprintf(cmd, sizeof cmd, "cp '%s/ca.crt' '%s/cadir/'", dir, dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int suite_cleanup(void)
{
	return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- validation ---- */

struct vcase {
	const char *label;
	bool server;
	const char *cert, *key, *ca, *ca_path; /* names in the scratch dir */
	bool require;                           /* server: require_peer_cert */
	bool no_verify;                         /* client: verify_peer = false */
	const char *host;
	bool insecure;
	const char *suites, *minver;
	int rc;
	const char *prefix; /* err must start with this; "$D" is the scratch dir */
	const char *reason; /* and contain this */
};

static const struct vcase vcases[] = {
	{"server: valid", true, "server.crt", "server.key", NULL, NULL, false, false, NULL, false, NULL,
	 NULL, 0, "", ""},
	{"server: mutual TLS with CA", true, "server.crt", "server.key", "ca.crt", NULL, true, false, NULL,
	 false, NULL, "tls1.2", 0, "", ""},
	{"server: mutual TLS with ca_path", true, "server.crt", "server.key", NULL, "cadir", true, false,
	 NULL, false, NULL, NULL, 0, "", ""},
	{"server: no certificate", true, NULL, "server.key", NULL, NULL, false, false, NULL, false, NULL,
	 NULL, WISP_ECONFIG, "cert: (none): ", "needs a certificate"},
	{"server: no key", true, "server.crt", NULL, NULL, NULL, false, false, NULL, false, NULL, NULL,
	 WISP_ECONFIG, "key: (none): ", "needs a private key"},
	{"missing cert file", true, "nope.crt", "server.key", NULL, NULL, false, false, NULL, false, NULL,
	 NULL, WISP_ECONFIG, "cert: $D/nope.crt: ", "No such file or directory"},
	{"unreadable cert (a directory)", true, "adir", "server.key", NULL, NULL, false, false, NULL, false,
	 NULL, NULL, WISP_ECONFIG, "cert: $D/adir: ", "Is a directory"},
	{"unparsable cert", true, "garbage.pem", "server.key", NULL, NULL, false, false, NULL, false, NULL,
	 NULL, WISP_ECONFIG, "cert: $D/garbage.pem: ", "cannot parse certificate"},
	{"missing key file", true, "server.crt", "nope.key", NULL, NULL, false, false, NULL, false, NULL,
	 NULL, WISP_ECONFIG, "key: $D/nope.key: ", "No such file or directory"},
	{"unparsable key", true, "server.crt", "garbage.pem", NULL, NULL, false, false, NULL, false, NULL,
	 NULL, WISP_ECONFIG, "key: $D/garbage.pem: ", "cannot parse private key"},
	{"encrypted key", true, "server.crt", "enc.key", NULL, NULL, false, false, NULL, false, NULL, NULL,
	 WISP_ECONFIG, "key: $D/enc.key: ", "encrypted"},
	{"key does not match cert", true, "server.crt", "sensor-0001.key", NULL, NULL, false, false, NULL,
	 false, NULL, NULL, WISP_ECONFIG, "key: $D/sensor-0001.key: ", "does not match the certificate"},
	{"expired cert", true, "old.crt", "old.key", NULL, NULL, false, false, NULL, false, NULL, NULL,
	 WISP_ECONFIG, "cert: $D/old.crt: ", "certificate expired on 2020-01-02 00:00:00 UTC"},
	{"cert not yet valid", true, "future.crt", "future.key", NULL, NULL, false, false, NULL, false, NULL,
	 NULL, WISP_ECONFIG, "cert: $D/future.crt: ", "not valid before 2099-01-01"},
	{"require_peer_cert without CA", true, "server.crt", "server.key", NULL, NULL, true, false, NULL,
	 false, NULL, NULL, WISP_ECONFIG, "ca: (none): ", "require_peer_cert needs a CA"},
	{"unparsable CA file", true, "server.crt", "server.key", "garbage.pem", NULL, true, false, NULL,
	 false, NULL, NULL, WISP_ECONFIG, "ca: $D/garbage.pem: ", "cannot parse certificate"},
	{"missing CA file", true, "server.crt", "server.key", "nope.crt", NULL, true, false, NULL, false,
	 NULL, NULL, WISP_ECONFIG, "ca: $D/nope.crt: ", "No such file"},
	{"missing ca_path", true, "server.crt", "server.key", NULL, "nope", true, false, NULL, false, NULL,
	 NULL, WISP_ECONFIG, "ca_path: $D/nope: ", "No such file"},
	{"unknown ciphersuite named", true, "server.crt", "server.key", NULL, NULL, false, false, NULL, false,
	 "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:TLS_BOGUS_WITH_ROT13", NULL, WISP_ECONFIG,
	 "ciphersuites: TLS_BOGUS_WITH_ROT13: ", "unknown ciphersuite"},
	{"OpenSSL-style cipher name is unknown", true, "server.crt", "server.key", NULL, NULL, false, false,
	 NULL, false, "ECDHE-ECDSA-AES128-GCM-SHA256", NULL, WISP_ECONFIG,
	 "ciphersuites: ECDHE-ECDSA-AES128-GCM-SHA256: ", "unknown ciphersuite"},
	{"empty ciphersuite list", true, "server.crt", "server.key", NULL, NULL, false, false, NULL, false,
	 " : ", NULL, WISP_ECONFIG, "ciphersuites:  : ", "empty list"},
	{"IANA and mbed TLS spellings, spaces", true, "server.crt", "server.key", NULL, NULL, false, false,
	 NULL, false, "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256 : TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	 NULL, 0, "", ""},
	{"suites unusable with the key type", true, "server.crt", "server.key", NULL, NULL, false, false,
	 NULL, false, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", NULL, WISP_ECONFIG,
	 "ciphersuites: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: ", "none usable with this key type (EC)"},
	{"tls1.3 refused", true, "server.crt", "server.key", NULL, NULL, false, false, NULL, false, NULL,
	 "tls1.3", WISP_ECONFIG, "min_version: tls1.3: ", "not supported"},
	{"tls1.0 refused", true, "server.crt", "server.key", NULL, NULL, false, false, NULL, false, NULL,
	 "tls1.0", WISP_ECONFIG, "min_version: tls1.0: ", "insecure"},
	{"unknown version", true, "server.crt", "server.key", NULL, NULL, false, false, NULL, false, NULL,
	 "ssl3", WISP_ECONFIG, "min_version: ssl3: ", "unknown version"},
	{"client: valid", false, NULL, NULL, "ca.crt", NULL, false, false, "localhost", false, NULL, NULL, 0,
	 "", ""},
	{"client: with certificate", false, "sensor-0001.crt", "sensor-0001.key", "ca.crt", NULL, false,
	 false, "localhost", false, NULL, NULL, 0, "", ""},
	{"client: no CA to verify with", false, NULL, NULL, NULL, NULL, false, false, "localhost", false,
	 NULL, NULL, WISP_ECONFIG, "ca: (none): ", "needs a CA"},
	{"client: no hostname to check", false, NULL, NULL, "ca.crt", NULL, false, false, NULL, false, NULL,
	 NULL, WISP_ECONFIG, "hostname: (none): ", "insecure"},
	{"client: insecure needs no hostname", false, NULL, NULL, "ca.crt", NULL, false, false, NULL, true,
	 NULL, NULL, 0, "", ""},
	{"client: verify_peer off needs no CA", false, NULL, NULL, NULL, NULL, false, true, NULL, false, NULL,
	 NULL, 0, "", ""},
	{"client: cert without key", false, "sensor-0001.crt", NULL, "ca.crt", NULL, false, false,
	 "localhost", false, NULL, NULL, WISP_ECONFIG, "key: (none): ", "both cert and key"},
	{"client: key mismatch", false, "sensor-0001.crt", "server.key", "ca.crt", NULL, false, false,
	 "localhost", false, NULL, NULL, WISP_ECONFIG, "key: $D/server.key: ", "does not match"},
	{"client: expired certificate", false, "old.crt", "old.key", "ca.crt", NULL, false, false,
	 "localhost", false, NULL, NULL, WISP_ECONFIG, "cert: $D/old.crt: ", "expired"},
	{"client: tls1.3 refused", false, NULL, NULL, "ca.crt", NULL, false, false, "localhost", false, NULL,
	 "tls1.3", WISP_ECONFIG, "min_version: tls1.3: ", "not supported"},
};

static void expand(const char *in, char *out, size_t len)
{
	const char *d = strstr(in, "$D");
	if (!d) {
		snprintf(out, len, "%s", in);
		return;
	}
	snprintf(out, len, "%.*s%s%s", (int)(d - in), in, dir, d + 2);
}

static void opts_from(const struct vcase *c, struct tls_opts *o)
{
	tls_opts_init(o);
	o->cert_file = P(c->cert);
	o->key_file = P(c->key);
	o->ca_file = P(c->ca);
	o->ca_path = P(c->ca_path);
	o->require_peer_cert = c->require;
	o->verify_peer = !c->no_verify;
	o->hostname = c->host;
	o->insecure = c->insecure;
	o->ciphersuites = c->suites;
	if (c->minver)
		o->min_version = c->minver;
}

static void test_validation_table(void)
{
	for (size_t i = 0; i < sizeof vcases / sizeof vcases[0]; i++) {
		const struct vcase *c = &vcases[i];
		struct tls_opts o;
		opts_from(c, &o);
		struct tls_ctx *ctx = (struct tls_ctx *)&o; /* must be reset to NULL on error */
		char err[512];
		int rc = c->server ? tls_ctx_new_server(&o, &ctx, err, sizeof err)
		                   : tls_ctx_new_client(&o, &ctx, err, sizeof err);
		CHECK(rc == c->rc, c->label);
		if (c->rc == 0) {
			CHECK(ctx != NULL, c->label);
			CHECK(err[0] == '\0', c->label);
			tls_ctx_unref(ctx);
			continue;
		}
		CHECK(ctx == NULL, c->label);
		char prefix[600];
		expand(c->prefix, prefix, sizeof prefix);
		CHECK(strncmp(err, prefix, strlen(prefix)) == 0, c->label);
		CHECK(strstr(err, c->reason) != NULL, c->label);
		if (rc != c->rc || strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, c->reason))
			fprintf(stderr, "\n[%s] rc=%d err=\"%s\"\n", c->label, rc, err);
	}
}

static void test_error_buffer_truncated_or_absent(void)
{
	struct tls_opts o;
	tls_opts_init(&o);
	o.cert_file = P("nope.crt");
	o.key_file = P("server.key");
	struct tls_ctx *ctx;
	char err[8];
	memset(err, 'x', sizeof err);
	CU_ASSERT_EQUAL(tls_ctx_new_server(&o, &ctx, err, sizeof err), WISP_ECONFIG);
	CU_ASSERT_EQUAL(err[sizeof err - 1], '\0');
	CU_ASSERT_STRING_EQUAL(err, "cert: /");
	CU_ASSERT_EQUAL(tls_ctx_new_server(&o, &ctx, NULL, 0), WISP_ECONFIG);
	CU_ASSERT_PTR_NULL(ctx);
}

static void test_opts_init_is_secure(void)
{
	struct tls_opts o;
	memset(&o, 0xff, sizeof o);
	tls_opts_init(&o);
	CU_ASSERT_TRUE(o.verify_peer);
	CU_ASSERT_FALSE(o.insecure);
	CU_ASSERT_FALSE(o.require_peer_cert);
	CU_ASSERT_STRING_EQUAL(o.min_version, "tls1.2");
	CU_ASSERT_PTR_NULL(o.ciphersuites);
}

/* ---- handshakes over a socketpair ---- */

struct side {
	struct transport *t;
	int rc;   /* last handshake result */
	bool done;
	char why[512]; /* tls_transport_last_error() at failure */
};

static bool side_finished(const struct side *s)
{
	return s->done || !s->t;
}

static void side_step(struct side *s)
{
	if (side_finished(s))
		return;
	s->rc = transport_handshake(s->t);
	if (s->rc == 0) {
		s->done = true;
	} else if (s->rc != WISP_EAGAIN) {
		/* Close at once, as the listener would: the peer then sees EOF or
		 * our alert instead of waiting forever. */
		tls_transport_last_error(s->t, s->why, sizeof s->why);
		transport_close(s->t);
		s->t = NULL;
	}
}

/* Polls on what each side wants; returns false when the round limit hit. */
static bool drive(struct side *a, struct side *b)
{
	for (int round = 0; round < MAX_ROUNDS; round++) {
		side_step(a);
		side_step(b);
		if (side_finished(a) && side_finished(b))
			return true;
		struct pollfd p[2];
		nfds_t n = 0;
		struct side *s[2] = {a, b};
		for (int i = 0; i < 2; i++) {
			if (side_finished(s[i]))
				continue;
			p[n].fd = s[i]->t->fd;
			p[n].events = (short)(((s[i]->t->want & TRANSPORT_WANT_READ) ? POLLIN : 0) |
			                      ((s[i]->t->want & TRANSPORT_WANT_WRITE) ? POLLOUT : 0));
			p[n].revents = 0;
			n++;
		}
		(void)poll(p, n, POLL_MS);
	}
	return false;
}

static int make_pair(int fds[2])
{
	return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds);
}

struct hcase {
	const char *label;
	/* server */
	bool require;
	const char *srv_suites;
	/* client */
	const char *cli_cert; /* name stem: <stem>.crt / <stem>.key */
	const char *cli_ca;
	bool no_verify;
	const char *host;
	bool insecure;
	const char *cli_suites;
	/* expectations */
	bool ok;
	char fails; /* 's' or 'c': which side must report the failure */
	const char *server_sees_cn; /* NULL: WISP_ENOENT */
	const char *client_sees_cn;
};

static const struct hcase hcases[] = {
	{"server auth only", false, NULL, NULL, "ca.crt", false, "localhost", false, NULL, true, 0, NULL,
	 "localhost"},
	{"[mutual TLS] CA-signed client cert accepted, CN seen", true, NULL, "sensor-0001", "ca.crt", false,
	 "localhost", false, NULL, true, 0, "sensor-0001", "localhost"},
	{"[mutual TLS] RSA client cert accepted", true, NULL, "sensor-rsa", "ca.crt", false, "localhost",
	 false, NULL, true, 0, "sensor-rsa", "localhost"},
	{"[mutual TLS] self-signed client cert refused", true, NULL, "rogue", "ca.crt", false, "localhost",
	 false, NULL, false, 's', NULL, NULL},
	{"[mutual TLS] no client cert refused", true, NULL, NULL, "ca.crt", false, "localhost", false, NULL,
	 false, 's', NULL, NULL},
	{"client cert not requested without require_peer_cert", false, NULL, "sensor-0001", "ca.crt", false,
	 "localhost", false, NULL, true, 0, NULL, "localhost"},
	{"hostname mismatch refused", false, NULL, NULL, "ca.crt", false, "example.com", false, NULL, false,
	 'c', NULL, NULL},
	{"hostname mismatch accepted when insecure", false, NULL, NULL, "ca.crt", false, "example.com", true,
	 NULL, true, 0, NULL, "localhost"},
	{"IPv4 SAN matched", false, NULL, NULL, "ca.crt", false, "127.0.0.1", false, NULL, true, 0, NULL,
	 "localhost"},
	{"IPv6 SAN matched", false, NULL, NULL, "ca.crt", false, "::1", false, NULL, true, 0, NULL,
	 "localhost"},
	{"IP not in SAN refused", false, NULL, NULL, "ca.crt", false, "127.0.0.2", false, NULL, false, 'c',
	 NULL, NULL},
	{"untrusted server chain refused", false, NULL, NULL, "rogue.crt", false, "localhost", false, NULL,
	 false, 'c', NULL, NULL},
	{"untrusted chain refused even when insecure", false, NULL, NULL, "rogue.crt", false, "localhost",
	 true, NULL, false, 'c', NULL, NULL},
	{"verify_peer off: connects, server CN not an identity", false, NULL, NULL, NULL, true, NULL, false,
	 NULL, true, 0, NULL, NULL},
	{"ChaCha20-Poly1305 negotiated", false, NULL, NULL, "ca.crt", false, "localhost", false,
	 "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", true, 0, NULL, "localhost"},
	{"no shared ciphersuite refused", false, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", NULL, "ca.crt",
	 false, "localhost", false, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", false, 's', NULL, NULL},
};

/* A context from o, or NULL with the reason on stderr. */
static struct tls_ctx *new_ctx(bool server, const struct tls_opts *o)
{
	struct tls_ctx *c = NULL;
	char err[512];
	int rc = server ? tls_ctx_new_server(o, &c, err, sizeof err) : tls_ctx_new_client(o, &c, err, sizeof err);
	if (rc != 0)
		fprintf(stderr, "%s ctx: %s\n", server ? "server" : "client", err);
	return c;
}

static struct tls_ctx *server_ctx(bool require, const char *suites)
{
	struct tls_opts o;
	tls_opts_init(&o);
	o.cert_file = P("server.crt");
	o.key_file = P("server.key");
	if (require) {
		o.ca_file = P("ca.crt");
		o.require_peer_cert = true;
	}
	o.ciphersuites = suites;
	return new_ctx(true, &o);
}

static struct tls_ctx *client_ctx(const char *stem, const char *ca, bool no_verify, const char *host,
                                  bool insecure, const char *suites)
{
	struct tls_opts o;
	char crt[64], key[64];
	tls_opts_init(&o);
	if (stem) {
		snprintf(crt, sizeof crt, "%s.crt", stem);
		snprintf(key, sizeof key, "%s.key", stem);
		o.cert_file = P(crt);
		o.key_file = P(key);
	}
	o.ca_file = P(ca);
	o.verify_peer = !no_verify;
	o.hostname = host;
	o.insecure = insecure;
	o.ciphersuites = suites;
	return new_ctx(false, &o);
}

/* A connected pair; both contexts' references are dropped here, so the
 * transports alone keep them alive (as after a reload). */
static bool connect_pair(struct tls_ctx *sc, struct tls_ctx *cc, struct side *s, struct side *c)
{
	int fds[2];
	memset(s, 0, sizeof *s);
	memset(c, 0, sizeof *c);
	if (!sc || !cc || make_pair(fds) == -1) {
		tls_ctx_unref(sc);
		tls_ctx_unref(cc);
		return false;
	}
	s->t = tls_transport_new(sc, fds[0]);
	c->t = tls_transport_new(cc, fds[1]);
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
	return s->t && c->t;
}

static void close_side(struct side *s)
{
	if (s->t)
		transport_close(s->t);
	s->t = NULL;
}

/* Writes all of buf from `from` (retrying on EAGAIN) and reads it at `to`. */
static bool transfer(struct transport *from, struct transport *to, const void *buf, size_t len,
                     size_t *eagains)
{
	unsigned char *got = malloc(len);
	size_t off = 0, rcvd = 0;
	bool ok = got != NULL;
	for (int round = 0; ok && rcvd < len && round < 100000; round++) {
		if (off < len) {
			/* Three pieces of uneven size, as header + topic + payload. */
			const unsigned char *b = (const unsigned char *)buf + off;
			size_t rest = len - off;
			size_t a = rest < 7 ? rest : 7;
			size_t m = rest - a < 3000 ? rest - a : 3000;
			struct iovec iov[3] = {{(void *)b, a}, {(void *)(b + a), m}, {(void *)(b + a + m), rest - a - m}};
			ssize_t n = transport_writev(from, iov, 3);
			if (n > 0) {
				/* Short means the socket is full, and says so. */
				ok = (size_t)n <= rest && ((size_t)n == rest || from->want == TRANSPORT_WANT_WRITE);
				off += (size_t)n;
			} else if (n == WISP_EAGAIN) {
				++*eagains;
				ok = from->want != 0;
			} else {
				ok = false;
			}
		}
		while (rcvd < len) {
			ssize_t n = transport_read(to, got + rcvd, len - rcvd);
			if (n > 0) {
				rcvd += (size_t)n;
				continue;
			}
			ok = ok && n == WISP_EAGAIN;
			break;
		}
	}
	ok = ok && rcvd == len && memcmp(got, buf, len) == 0;
	free(got);
	return ok;
}

static void check_cn(struct transport *t, const char *want, const char *label)
{
	char cn[128];
	int rc = tls_transport_peer_cn(t, cn, sizeof cn);
	if (want) {
		CHECK(rc == 0, label);
		CHECK(rc == 0 && strcmp(cn, want) == 0, label);
	} else {
		CHECK(rc == WISP_ENOENT, label);
	}
}

static void test_handshake_table(void)
{
	for (size_t i = 0; i < sizeof hcases / sizeof hcases[0]; i++) {
		const struct hcase *h = &hcases[i];
		struct side s, c;
		bool ok = connect_pair(server_ctx(h->require, h->srv_suites),
		                       client_ctx(h->cli_cert, h->cli_ca, h->no_verify, h->host, h->insecure,
		                                  h->cli_suites),
		                       &s, &c);
		CHECK(ok, h->label);
		if (!ok) {
			close_side(&s);
			close_side(&c);
			continue;
		}
		CHECK(drive(&s, &c), h->label);
		if (h->ok) {
			CHECK(s.done && c.done, h->label);
			if (!(s.done && c.done))
				fprintf(stderr, "\n[%s] server rc=%d (%s), client rc=%d (%s)\n", h->label, s.rc,
				        s.why, c.rc, c.why);
			if (s.done && c.done) {
				check_cn(s.t, h->server_sees_cn, h->label);
				check_cn(c.t, h->client_sees_cn, h->label);
				size_t eagains = 0;
				CHECK(transfer(c.t, s.t, "ping from client", 16, &eagains), h->label);
				CHECK(transfer(s.t, c.t, "pong from server", 16, &eagains), h->label);
			}
		} else {
			CHECK(!(s.done && c.done), h->label);
			struct side *f = h->fails == 's' ? &s : &c;
			CHECK(f->t == NULL && f->rc == WISP_EPROTO, h->label);
			CHECK(f->why[0] != '\0', h->label);
		}
		close_side(&s);
		close_side(&c);
	}
}

/* Plaintext (or junk) to a TLS server: the handshake fails with an error,
 * never EAGAIN forever, never a crash. */
static void test_plaintext_to_tls_port_fails_cleanly(void)
{
	static const struct {
		const char *label;
		const char *bytes;
		size_t len;
		int rc;
	} junk[] = {
		{"MQTT CONNECT", "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", 14, WISP_EPROTO},
		{"HTTP request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, WISP_EPROTO},
		{"TLS record of 65535 bytes", "\x16\x03\x01\xff\xff", 5, WISP_EPROTO},
		{"truncated record then EOF", "\x16\x03\x01\x00\x40\x01", 6, WISP_ECLOSED},
		{"EOF at once", "", 0, WISP_ECLOSED},
	};
	for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
		int fds[2];
		CU_ASSERT_FATAL(make_pair(fds) == 0);
		struct tls_ctx *sc = server_ctx(false, NULL);
		CU_ASSERT_FATAL(sc != NULL);
		struct transport *t = tls_transport_new(sc, fds[0]);
		tls_ctx_unref(sc);
		CU_ASSERT_FATAL(t != NULL);
		CHECK(write(fds[1], junk[i].bytes, junk[i].len) == (ssize_t)junk[i].len, junk[i].label);
		shutdown(fds[1], SHUT_WR);
		int rc = WISP_EAGAIN;
		for (int round = 0; round < MAX_ROUNDS && rc == WISP_EAGAIN; round++)
			rc = transport_handshake(t);
		CHECK(rc == junk[i].rc, junk[i].label);
		char why[256];
		transport_last_error(t, why, sizeof why);
		CHECK(why[0] != '\0', junk[i].label);
		/* Further calls keep failing instead of touching a dead session. */
		char buf[8];
		CHECK(transport_read(t, buf, sizeof buf) < 0 && transport_read(t, buf, sizeof buf) != WISP_EAGAIN,
		      junk[i].label);
		transport_close(t);
		close(fds[1]);
	}
}

static bool good_pair(struct side *s, struct side *c, bool mutual)
{
	if (!connect_pair(server_ctx(mutual, NULL),
	                  client_ctx(mutual ? "sensor-0001" : NULL, "ca.crt", false, "localhost", false, NULL),
	                  s, c))
		return false;
	return drive(s, c) && s->done && c->done;
}

static void test_pending_reports_decrypted_bytes(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(good_pair(&s, &c, false));
	unsigned char msg[100];
	for (size_t i = 0; i < sizeof msg; i++)
		msg[i] = (unsigned char)i;
	struct iovec iov[3] = {{msg, 2}, {msg + 2, 30}, {msg + 32, 68}};
	CU_ASSERT_EQUAL(transport_writev(c.t, iov, 3), 100); /* one record */
	CU_ASSERT_EQUAL(transport_pending(s.t), 0);
	unsigned char got[100];
	CU_ASSERT_EQUAL(transport_read(s.t, got, 10), 10);
	CU_ASSERT_EQUAL(transport_pending(s.t), 90);
	CU_ASSERT_EQUAL(transport_read(s.t, got + 10, 90), 90);
	CU_ASSERT_EQUAL(transport_pending(s.t), 0);
	CU_ASSERT_EQUAL(memcmp(got, msg, sizeof msg), 0);
	CU_ASSERT_EQUAL(transport_read(s.t, got, sizeof got), WISP_EAGAIN);
	CU_ASSERT_EQUAL(s.t->want, TRANSPORT_WANT_READ);
	CU_ASSERT_EQUAL(transport_writev(c.t, iov, 0), 0);
	close_side(&s);
	close_side(&c);
}

static void test_close_notify_reads_as_closed(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(good_pair(&s, &c, false));
	close_side(&c);
	unsigned char buf[16];
	CU_ASSERT_EQUAL(transport_read(s.t, buf, sizeof buf), WISP_ECLOSED);
	close_side(&s);
}

static void test_read_before_handshake_completes_it(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(connect_pair(server_ctx(false, NULL),
	                             client_ctx(NULL, "ca.crt", false, "localhost", false, NULL), &s, &c));
	/* The server never calls handshake(): read() runs it. */
	unsigned char buf[8];
	ssize_t n = WISP_EAGAIN;
	for (int round = 0; round < MAX_ROUNDS && n == WISP_EAGAIN; round++) {
		side_step(&c);
		n = transport_read(s.t, buf, sizeof buf);
		if (n == WISP_EAGAIN && c.done) {
			struct iovec iov = {"hi", 2};
			if (transport_writev(c.t, &iov, 1) != 2)
				break;
		}
	}
	CU_ASSERT_EQUAL(n, 2);
	CU_ASSERT_EQUAL(memcmp(buf, "hi", 2), 0);
	close_side(&s);
	close_side(&c);
}

/* 100 KiB each way through a ~4 KiB socket buffer: writev returns short
 * with want=WRITE or WISP_EAGAIN when the socket fills, and retrying with
 * the same bytes in front (plus more) completes the pending record. */
static void test_large_writes_with_want_write(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(good_pair(&s, &c, true));
	int small = 4096;
	CU_ASSERT(setsockopt(s.t->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
	CU_ASSERT(setsockopt(c.t->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
	unsigned char *big = malloc(BIG_LEN);
	CU_ASSERT_FATAL(big != NULL);
	for (size_t i = 0; i < BIG_LEN; i++)
		big[i] = (unsigned char)(i * 131u + (i >> 9));
	size_t eagains = 0;
	CU_ASSERT(transfer(c.t, s.t, big, BIG_LEN, &eagains));
	CU_ASSERT(eagains > 0);
	eagains = 0;
	CU_ASSERT(transfer(s.t, c.t, big, BIG_LEN, &eagains));
	CU_ASSERT(eagains > 0);
	free(big);
	close_side(&s);
	close_side(&c);
}

/* After WISP_EAGAIN the caller owes the same bytes again: offering fewer
 * than the pending record is refused rather than corrupting the stream. */
/* A server context with the given ECDHE groups (NULL: defaults). */
static struct tls_ctx *curve_server_ctx(const char *curves)
{
	struct tls_opts o;
	tls_opts_init(&o);
	o.cert_file = P("server.crt");
	o.key_file = P("server.key");
	o.curves = curves;
	return new_ctx(true, &o);
}

static struct tls_ctx *curve_client_ctx(const char *curves, const char *suites)
{
	struct tls_opts o;
	tls_opts_init(&o);
	o.ca_file = P("ca.crt");
	o.hostname = "localhost";
	o.curves = curves;
	o.ciphersuites = suites;
	return new_ctx(false, &o);
}

/*
 * The server's suite order decides (ChaCha20-Poly1305 first by default,
 * measured faster than mbed TLS 2.28's AES-GCM), whatever the client's
 * order; a server's group list restricts what a client may pick. An ECDSA
 * P-256 certificate needs P-256 among the client's groups (TLS 1.2
 * supported_groups covers the signature curve too).
 */
static void test_suite_and_curve_preference(void)
{
	/* The default server's first choice (AES-128-GCM where Nettle's AES-GCM
	 * runs on AES-NI and PCLMULQDQ, else ChaCha20-Poly1305) beats a client
	 * that lists the other first. */
	bool gcm = tls_default_prefers_gcm();
	static const char *const aes_chacha =
		"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256";
	static const char *const chacha_aes =
		"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256:TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";
	const struct {
		const char *label, *srv_curves, *cli_curves, *cli_suites;
		bool ok;
		const char *suite; /* negotiated */
	} cases[] = {
		{"default server's first AEAD over the client's other first", NULL, NULL,
		 gcm ? chacha_aes : aes_chacha, true,
		 gcm ? "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"
		     : "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256"},
		{"AES-GCM when the client offers nothing else", NULL, NULL,
		 "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", true, "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"},
		{"client offering X25519 and P-256", NULL, "x25519:secp256r1", NULL, true, NULL},
		{"client offering P-256 only", NULL, "secp256r1", NULL, true, NULL},
		{"server restricted to P-256, client prefers X25519", "secp256r1", "x25519:secp256r1", NULL,
		 true, NULL},
		{"no group in common refused", "secp384r1", "x25519:secp256r1", NULL, false, NULL},
		{"client without the certificate's curve refused", NULL, "x25519", NULL, false, NULL},
	};
	static const struct {
		const char *curves, *err;
	} bad[] = {
		{"x25519:prime256v1", "curves: prime256v1: unknown curve"},
		{"::", "curves: ::: empty list"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct tls_opts o;
		tls_opts_init(&o);
		o.cert_file = P("server.crt");
		o.key_file = P("server.key");
		o.curves = bad[i].curves;
		struct tls_ctx *ctx = NULL;
		char err[512];
		CHECK(tls_ctx_new_server(&o, &ctx, err, sizeof err) == WISP_ECONFIG, bad[i].curves);
		CHECK(ctx == NULL && strncmp(err, bad[i].err, strlen(bad[i].err)) == 0, bad[i].curves);
	}
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct side s, c;
		bool ok = connect_pair(curve_server_ctx(cases[i].srv_curves),
		                       curve_client_ctx(cases[i].cli_curves, cases[i].cli_suites), &s, &c);
		CHECK(ok, cases[i].label);
		if (ok) {
			CHECK(drive(&s, &c), cases[i].label);
			CHECK((s.done && c.done) == cases[i].ok, cases[i].label);
			if (cases[i].ok && s.done && c.done) {
				const char *suite = tls_transport_ciphersuite(s.t);
				CHECK(suite != NULL, cases[i].label);
				CHECK(cases[i].suite == NULL || (suite && strcmp(suite, cases[i].suite) == 0),
				      cases[i].label);
				if (suite && cases[i].suite && strcmp(suite, cases[i].suite) != 0)
					fprintf(stderr, "\n[%s] negotiated %s\n", cases[i].label, suite);
			}
		}
		close_side(&s);
		close_side(&c);
	}
}

static void test_retry_with_fewer_bytes_is_refused(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(good_pair(&s, &c, false));
	int small = 4096;
	CU_ASSERT(setsockopt(c.t->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
	static unsigned char buf[16384];
	memset(buf, 'a', sizeof buf);
	struct iovec iov = {buf, sizeof buf};
	ssize_t n = 0;
	for (int i = 0; i < 64 && n >= 0; i++)
		n = transport_writev(c.t, &iov, 1);
	CU_ASSERT_EQUAL(n, WISP_EAGAIN);
	CU_ASSERT_EQUAL(c.t->want, TRANSPORT_WANT_WRITE);
	struct iovec shorter = {buf, 100};
	CU_ASSERT_EQUAL(transport_writev(c.t, &shorter, 1), WISP_EINVAL);
	close_side(&s);
	close_side(&c);
}

static void test_peer_cn_edge_cases(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(good_pair(&s, &c, true));
	char tiny[4];
	CU_ASSERT_EQUAL(tls_transport_peer_cn(s.t, tiny, sizeof tiny), WISP_ELIMIT);
	char exact[12]; /* "sensor-0001" + NUL */
	CU_ASSERT_EQUAL(tls_transport_peer_cn(s.t, exact, sizeof exact), 0);
	CU_ASSERT_STRING_EQUAL(exact, "sensor-0001");
	CU_ASSERT_TRUE(tls_transport_is(s.t));
	CU_ASSERT_STRING_EQUAL(s.t->ops->name, "tls");
	/* The same through the transport interface, which proto/ uses. */
	struct transport_peer_info info;
	CU_ASSERT_EQUAL(transport_peer_info(s.t, &info), 0);
	CU_ASSERT_STRING_EQUAL(info.identity, "sensor-0001");
	CU_ASSERT_EQUAL(transport_peer_info(c.t, &info), 0); /* the server's, verified by the client */
	CU_ASSERT_STRING_EQUAL(info.identity, "localhost");
	close_side(&s);
	close_side(&c);

	int fds[2];
	CU_ASSERT_FATAL(make_pair(fds) == 0);
	struct transport *tcp = tcp_transport_new(fds[0]);
	CU_ASSERT_FATAL(tcp != NULL);
	CU_ASSERT_FALSE(tls_transport_is(tcp));
	CU_ASSERT_EQUAL(tls_transport_peer_cn(tcp, exact, sizeof exact), WISP_EINVAL);
	char why[16] = "x";
	tls_transport_last_error(tcp, why, sizeof why);
	CU_ASSERT_STRING_EQUAL(why, "");
	strcpy(why, "x");
	transport_last_error(tcp, why, sizeof why);
	CU_ASSERT_STRING_EQUAL(why, "");
	memset(&info, 'x', sizeof info);
	CU_ASSERT_EQUAL(transport_peer_info(tcp, &info), 0);
	CU_ASSERT_STRING_EQUAL(info.identity, "");
	transport_close(tcp);
	close(fds[1]);
}

/* A reload drops the listener's reference; connections made before it keep
 * working on the old context, new ones use the new context. */
static void test_context_outlives_reload(void)
{
	struct tls_ctx *old = server_ctx(false, NULL);
	CU_ASSERT_FATAL(old != NULL);
	int fds[2];
	CU_ASSERT_FATAL(make_pair(fds) == 0);
	struct side s = {0}, c = {0};
	s.t = tls_transport_new(old, fds[0]);
	struct tls_ctx *cc = client_ctx(NULL, "ca.crt", false, "localhost", false, NULL);
	c.t = tls_transport_new(cc, fds[1]);
	tls_ctx_unref(cc);
	tls_ctx_ref(old);   /* someone else (e.g. a second listener) */
	tls_ctx_unref(old); /* ... lets go */
	tls_ctx_unref(old); /* reload: the listener lets go too */
	CU_ASSERT_FATAL(s.t && c.t);
	CU_ASSERT(drive(&s, &c) && s.done && c.done);
	size_t eagains = 0;
	CU_ASSERT(transfer(c.t, s.t, "after reload", 12, &eagains));
	close_side(&s);
	close_side(&c);
	tls_ctx_unref(NULL);
}


/* ---- session resumption ---- */

static struct tls_ctx *resume_server_ctx(bool require, bool tickets, unsigned cache)
{
	struct tls_opts o;
	tls_opts_init(&o);
	o.cert_file = P("server.crt");
	o.key_file = P("server.key");
	if (require) {
		o.ca_file = P("ca.crt");
		o.require_peer_cert = true;
	}
	o.session_tickets = tickets;
	o.session_cache_size = cache;
	return new_ctx(true, &o);
}

/*
 * One connection from a client context (kept by the caller) to sc (ditto),
 * offering `offer` if not NULL: true if the handshake completed and data
 * flowed; *resumed says what each side saw (server, client), *saved gets the
 * client's session when asked.
 */
static bool resume_round(struct tls_ctx *sc, struct tls_ctx *cc, const struct tls_session *offer,
                         bool resumed[2], struct tls_session **saved, const char *want_cn)
{
	tls_ctx_ref(sc);
	tls_ctx_ref(cc);
	struct side s, c;
	if (!connect_pair(sc, cc, &s, &c)) {
		close_side(&s);
		close_side(&c);
		return false;
	}
	bool ok = !offer || tls_transport_set_session(c.t, offer) == 0;
	ok = ok && drive(&s, &c) && s.done && c.done;
	size_t eagains = 0;
	ok = ok && transfer(c.t, s.t, "resumed?", 8, &eagains) && transfer(s.t, c.t, "yes", 3, &eagains);
	if (ok) {
		resumed[0] = tls_transport_resumed(s.t);
		resumed[1] = tls_transport_resumed(c.t);
		if (want_cn)
			check_cn(s.t, want_cn, "CN after resumption");
	}
	if (ok && saved)
		ok = tls_transport_save_session(c.t, saved) == 0;
	close_side(&s);
	close_side(&c);
	return ok;
}

struct rcase {
	const char *label;
	bool tickets;
	unsigned cache;
	bool other_server; /* resume against a different server context (reload) */
	bool expect_resumed;
};

static const struct rcase rcases[] = {
	{"ticket, no cache", true, 0, false, true},
	{"cache, no tickets", false, 16, false, true},
	{"ticket and cache (the defaults)", true, 1000, false, true},
	{"neither: full handshake", false, 0, false, false},
	{"ticket from another context (reload): full handshake", true, 0, true, false},
	{"ticket and cache of another context: full handshake", true, 1000, true, false},
};

static void test_resumption_table(void)
{
	for (size_t i = 0; i < sizeof rcases / sizeof rcases[0]; i++) {
		const struct rcase *r = &rcases[i];
		struct tls_ctx *sc = resume_server_ctx(false, r->tickets, r->cache);
		struct tls_ctx *sc2 = r->other_server ? resume_server_ctx(false, r->tickets, r->cache) : NULL;
		struct tls_ctx *cc = client_ctx(NULL, "ca.crt", false, "localhost", false, NULL);
		CHECK(sc && cc && (!r->other_server || sc2), r->label);
		if (!sc || !cc || (r->other_server && !sc2)) {
			tls_ctx_unref(sc);
			tls_ctx_unref(sc2);
			tls_ctx_unref(cc);
			continue;
		}
		bool first[2] = {true, true}, second[2] = {false, false};
		struct tls_session *sess = NULL;
		CHECK(resume_round(sc, cc, NULL, first, &sess, NULL), r->label);
		CHECK(!first[0] && !first[1], r->label); /* nothing to resume yet */
		CHECK(resume_round(sc2 ? sc2 : sc, cc, sess, second, NULL, NULL), r->label);
		CHECK(second[0] == r->expect_resumed && second[1] == r->expect_resumed, r->label);
		tls_session_free(sess);
		tls_ctx_unref(sc);
		tls_ctx_unref(sc2);
		tls_ctx_unref(cc);
	}
}

static uint64_t fake_now;
static uint64_t fake_clock(void) { return fake_now; }

/*
 * Ticket keys rotate every lifetime on the (monotonic) clock: a ticket
 * sealed under the previous key still resumes, one from before two
 * rotations gets a full handshake (its key is gone), and so does one from
 * before an explicit rotation followed by the timed one. No cache, so only
 * the ticket can resume.
 */
static void test_ticket_key_rotation(void)
{
	static const struct {
		const char *label;
		uint64_t advance;   /* seconds the clock moves after those */
		int manual;         /* explicit rotations after the ticket is issued */
		bool expect_resumed;
	} cases[] = {
		/* label, advance, manual, expect_resumed */
		{"same key: resumed", 0, 0, true},
		{"just before the timer: resumed", 99, 0, true},
		{"after one timed rotation (previous key): resumed", 100, 0, true},
		{"after one explicit rotation (previous key): resumed", 0, 1, true},
		{"after two explicit rotations: full handshake", 0, 2, false},
		{"explicit rotation, then the timed one: full handshake", 100, 1, false},
	};
	fake_now = 1000;
	tls_set_clock(fake_clock);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct tls_opts o;
		tls_opts_init(&o);
		o.cert_file = P("server.crt");
		o.key_file = P("server.key");
		o.session_cache_size = 0;
		o.session_lifetime = 100;
		struct tls_ctx *sc = NULL;
		char err[512];
		CHECK(tls_ctx_new_server(&o, &sc, err, sizeof err) == 0, cases[i].label);
		struct tls_ctx *cc = client_ctx(NULL, "ca.crt", false, "localhost", false, NULL);
		CHECK(sc && cc, cases[i].label);
		if (!sc || !cc) {
			tls_ctx_unref(sc);
			tls_ctx_unref(cc);
			continue;
		}
		bool first[2] = {true, true}, second[2] = {false, false};
		struct tls_session *sess = NULL;
		CHECK(resume_round(sc, cc, NULL, first, &sess, NULL), cases[i].label);
		CHECK(!first[0], cases[i].label);
		for (int m = 0; m < cases[i].manual; m++)
			CHECK(tls_ctx_rotate_ticket_keys(sc) == 0, cases[i].label);
		fake_now += cases[i].advance;
		/* The timed rotation happens when a key is next used: here. */
		CHECK(resume_round(sc, cc, sess, second, NULL, NULL), cases[i].label);
		CHECK(second[0] == cases[i].expect_resumed && second[1] == cases[i].expect_resumed,
		      cases[i].label);
		tls_session_free(sess);
		tls_ctx_unref(sc);
		tls_ctx_unref(cc);
	}
	tls_set_clock(NULL);
	/* Without tickets there is nothing to rotate. */
	struct tls_ctx *nt = resume_server_ctx(false, false, 16);
	CU_ASSERT_FATAL(nt != NULL);
	CU_ASSERT_EQUAL(tls_ctx_rotate_ticket_keys(nt), WISP_EINVAL);
	tls_ctx_unref(nt);
}

/* Mutual TLS: the resumed session carries the verified client certificate,
 * so use_identity_as_username sees the same CN. */
static void test_resumed_session_keeps_client_cn(void)
{
	for (int tickets = 0; tickets < 2; tickets++) {
		struct tls_ctx *sc = resume_server_ctx(true, tickets, tickets ? 0 : 16);
		struct tls_ctx *cc = client_ctx("sensor-0001", "ca.crt", false, "localhost", false, NULL);
		CU_ASSERT_FATAL(sc && cc);
		bool first[2], second[2] = {false, false};
		struct tls_session *sess = NULL;
		CU_ASSERT(resume_round(sc, cc, NULL, first, &sess, "sensor-0001"));
		CU_ASSERT(resume_round(sc, cc, sess, second, NULL, "sensor-0001"));
		CU_ASSERT(second[0] && second[1]);
		tls_session_free(sess);
		tls_ctx_unref(sc);
		tls_ctx_unref(cc);
	}
}

static void test_session_lifetime_validated(void)
{
	unsigned bad[] = {0, TLS_SESSION_LIFETIME_MAX + 1};
	for (size_t i = 0; i < 2; i++) {
		struct tls_opts o;
		tls_opts_init(&o);
		o.cert_file = P("server.crt");
		o.key_file = P("server.key");
		o.session_lifetime = bad[i];
		struct tls_ctx *c = NULL;
		char err[512];
		CU_ASSERT_EQUAL(tls_ctx_new_server(&o, &c, err, sizeof err), WISP_ECONFIG);
		CU_ASSERT(strstr(err, "session_ticket_lifetime") != NULL);
		CU_ASSERT_PTR_NULL(c);
	}
}

/* mbed TLS's memory is charged when the session starts, not at accept. */
#define TLS_RECORD_BUF 16717u /* one mbed TLS 2.28 record buffer (in or out) */
#define TLS_RECORD_MAPPED 20480u /* as tls.c maps it: rounded up to 4 KiB pages */

static void test_session_paid_when_handshake_starts(void)
{
	int fds[2];
	CU_ASSERT_FATAL(make_pair(fds) == 0);
	/* Cache only: a server that issues a ticket sends no session ID and
	 * caches nothing. */
	struct tls_ctx *sc = resume_server_ctx(false, false, 16);
	struct tls_ctx *cc = client_ctx(NULL, "ca.crt", false, "localhost", false, NULL);
	CU_ASSERT_FATAL(sc && cc);
	size_t base = wisp_mem_used();
	struct side s = {.t = tls_transport_new(sc, fds[0])}, c = {.t = NULL};
	CU_ASSERT_FATAL(s.t != NULL);
	size_t idle = wisp_mem_used() - base;
	CU_ASSERT(idle < 2048);
	/* Nothing sent yet: no session, and the loop is told to wait for input. */
	CU_ASSERT_EQUAL(transport_handshake(s.t), WISP_EAGAIN);
	CU_ASSERT_EQUAL(s.t->want, TRANSPORT_WANT_READ);
	CU_ASSERT_EQUAL(wisp_mem_used() - base, idle);
	CU_ASSERT_EQUAL(transport_pending(s.t), 0);
	/* The client's first step sends its ClientHello; the server's next
	 * step starts the session: mbed TLS's own allocations, counted. */
	size_t before_client = wisp_mem_used();
	c.t = tls_transport_new(cc, fds[1]);
	CU_ASSERT_FATAL(c.t != NULL);
	side_step(&c);
	size_t client_cost = wisp_mem_used() - before_client;
	CU_ASSERT(client_cost >= 2 * TLS_RECORD_BUF);
	side_step(&s);
	CU_ASSERT(wisp_mem_used() - base - client_cost >= idle + 2 * TLS_RECORD_BUF);
	/* Done: each side keeps its buffers, session and transform. */
	CU_ASSERT_FATAL(drive(&s, &c) && s.done && c.done);
	size_t done = wisp_mem_used() - base;
	CU_ASSERT(done >= 4 * TLS_RECORD_MAPPED && done < 2 * 44u * 1024u);
	close_side(&s);
	close_side(&c);
	/* What outlives the connection is the server's session cache entry:
	 * counted too, and gone with the context. */
	size_t cached = wisp_mem_used() - base;
	CU_ASSERT(cached > 0 && cached < 2048);
	CU_ASSERT(wisp_mem_untrimmed() >= 4 * TLS_RECORD_BUF);
	wisp_mem_trim(0);
	CU_ASSERT_EQUAL(wisp_mem_untrimmed(), 0);
	size_t with_ctx = wisp_mem_used();
	tls_ctx_unref(sc);
	CU_ASSERT(wisp_mem_used() < with_ctx - cached);
	tls_ctx_unref(cc);
}

/*
 * Every mbed TLS allocation goes through wisp_tls_calloc, so a failure
 * injected at any of them during a handshake (sqlite's fault simulation:
 * allocation N fails, for N across the whole handshake) ends that
 * connection with an error, and closing it gives back every byte.
 */
static void test_handshake_survives_every_allocation_failure(void)
{
	struct tls_ctx *sc = resume_server_ctx(false, false, 0); /* nothing outlives a connection */
	struct tls_ctx *cc = client_ctx(NULL, "ca.crt", false, "localhost", false, NULL);
	CU_ASSERT_FATAL(sc && cc);
	size_t base = wisp_mem_used();
	unsigned failed = 0, enomem = 0;
	bool completed = false;
	/* A handshake makes tens of thousands of allocations (bignum
	 * temporaries): every one of the first 40, then ever wider steps. */
	for (uint64_t n = 1; n < 10000000 && !completed; n = n < 40 ? n + 1 : n + n / 8) {
		int fds[2];
		CU_ASSERT_FATAL(make_pair(fds) == 0);
		tls_ctx_ref(sc);
		tls_ctx_ref(cc);
		struct side s = {.t = tls_transport_new(sc, fds[0])}, c = {.t = tls_transport_new(cc, fds[1])};
		tls_ctx_unref(sc);
		tls_ctx_unref(cc);
		CU_ASSERT_FATAL(s.t && c.t);
		wisp_mem_fail_after(n, 0);
		CU_ASSERT(drive(&s, &c));
		wisp_mem_fail_after(0, 0);
		if (s.done && c.done) {
			completed = true;
		} else {
			failed++;
			enomem += s.rc == WISP_ENOMEM || c.rc == WISP_ENOMEM;
		}
		close_side(&s);
		close_side(&c);
		CU_ASSERT_EQUAL(wisp_mem_used(), base);
	}
	CU_ASSERT(completed);
	CU_ASSERT(failed > 10);
	CU_ASSERT(enomem > 0);
	tls_ctx_unref(sc);
	tls_ctx_unref(cc);
}

/* A session that would pass memory_limit is refused before mbed TLS allocates. */
static void test_session_refused_past_memory_limit(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(connect_pair(server_ctx(false, NULL),
	                             client_ctx(NULL, "ca.crt", false, "localhost", false, NULL), &s, &c));
	side_step(&c); /* ClientHello sent */
	size_t used = wisp_mem_used();
	wisp_mem_set_limit(used + 16u * 1024u);
	CU_ASSERT_EQUAL(transport_handshake(s.t), WISP_ENOMEM);
	CU_ASSERT_EQUAL(wisp_mem_used(), used);
	char why[256];
	tls_transport_last_error(s.t, why, sizeof why);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "memory_limit"));
	wisp_mem_set_limit(0);
	close_side(&s);
	close_side(&c);
}

/* ---- hibernation: idle connections free their record buffers ---- */

/* Reads until `len` bytes came or EAGAIN; the count read. */
static size_t read_some(struct transport *t, unsigned char *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = transport_read(t, buf + got, len - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

static void hibernation_round(const char *suite)
{
	struct side s, c;
	CU_ASSERT_FATAL(connect_pair(server_ctx(false, suite),
	                             client_ctx(NULL, "ca.crt", false, "localhost", false, NULL), &s, &c));
	CU_ASSERT_FATAL(drive(&s, &c) && s.done && c.done);
	size_t eagains = 0;
	CU_ASSERT(transfer(c.t, s.t, "before", 6, &eagains));
	CU_ASSERT(transfer(s.t, c.t, "ack", 3, &eagains));

	/* Asleep: both record buffers gone, counted. */
	size_t awake = wisp_mem_used(), asleep_count = tls_hibernated_count();
	CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), 0);
	CU_ASSERT(tls_transport_hibernated(s.t));
	CU_ASSERT_EQUAL(tls_hibernated_count(), asleep_count + 1);
	CU_ASSERT(awake - wisp_mem_used() >= 2 * TLS_RECORD_BUF);
	CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), 0); /* already */
	CU_ASSERT_EQUAL(transport_pending(s.t), 0);
	CU_ASSERT_EQUAL(transport_read(s.t, (char[4]){0}, 4), WISP_EAGAIN); /* woken, nothing there */
	CU_ASSERT_FALSE(tls_transport_hibernated(s.t));

	/* Data that arrives while asleep waits in the socket; the read that
	 * follows wakes the connection and decrypts it. */
	CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), 0);
	struct iovec iov = {"while asleep", 12};
	CU_ASSERT_EQUAL(transport_writev(c.t, &iov, 1), 12);
	unsigned char buf[64];
	CU_ASSERT_EQUAL(read_some(s.t, buf, 12), 12);
	CU_ASSERT(memcmp(buf, "while asleep", 12) == 0);
	CU_ASSERT_EQUAL(tls_hibernated_count(), asleep_count);

	/* A record half arrived: mbed TLS holds part of it, so no sleep until
	 * the rest came and was read. The client's record is caught on a
	 * second socket pair and fed to the server in two pieces. */
	int relay[2];
	CU_ASSERT_FATAL(make_pair(relay) == 0);
	int client_fd = c.t->fd;
	c.t->fd = relay[0];
	static unsigned char msg[1000];
	memset(msg, 'm', sizeof msg);
	struct iovec big = {msg, sizeof msg};
	CU_ASSERT_EQUAL(transport_writev(c.t, &big, 1), (ssize_t)sizeof msg);
	c.t->fd = client_fd;
	unsigned char rec[2048];
	ssize_t reclen = recv(relay[1], rec, sizeof rec, 0);
	CU_ASSERT_FATAL(reclen > (ssize_t)sizeof msg);
	CU_ASSERT_EQUAL(send(client_fd, rec, 10, 0), 10);
	CU_ASSERT_EQUAL(transport_read(s.t, buf, sizeof buf), WISP_EAGAIN);
	CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), WISP_EAGAIN);
	CU_ASSERT_FALSE(tls_transport_hibernated(s.t));
	CU_ASSERT_EQUAL(send(client_fd, rec + 10, (size_t)reclen - 10, 0), reclen - 10);
	unsigned char got[sizeof msg];
	CU_ASSERT_EQUAL(read_some(s.t, got, sizeof got), sizeof got);
	CU_ASSERT(memcmp(got, msg, sizeof msg) == 0);
	close(relay[0]);
	close(relay[1]);

	/* The sequence numbers survive any number of sleeps, both ways. */
	for (int i = 0; i < 5; i++) {
		CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), 0);
		CU_ASSERT(transfer(s.t, c.t, "server after sleep", 18, &eagains));
		CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), 0);
		CU_ASSERT(transfer(c.t, s.t, "client after sleep", 18, &eagains));
	}
	/* Closing a sleeping connection sends close_notify: the peer reads an
	 * orderly close. */
	CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), 0);
	close_side(&s);
	CU_ASSERT_EQUAL(tls_hibernated_count(), asleep_count);
	ssize_t n = transport_read(c.t, buf, sizeof buf);
	for (int i = 0; i < 100 && n == WISP_EAGAIN; i++) {
		struct pollfd p = {.fd = c.t->fd, .events = POLLIN};
		(void)poll(&p, 1, 100);
		n = transport_read(c.t, buf, sizeof buf);
	}
	CU_ASSERT_EQUAL(n, WISP_ECLOSED);
	close_side(&c);
}

static void test_hibernate_and_wake(void)
{
	/* ChaCha20-Poly1305 has no explicit nonce, AES-GCM an 8-byte one in
	 * every record: the output pointers after waking must know which. */
	hibernation_round("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256");
	hibernation_round("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
	/* Not before the handshake is done, not on TCP. */
	struct side s, c;
	CU_ASSERT_FATAL(connect_pair(server_ctx(false, NULL),
	                             client_ctx(NULL, "ca.crt", false, "localhost", false, NULL), &s, &c));
	CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), WISP_EINVAL);
	close_side(&s);
	close_side(&c);
	int fds[2];
	CU_ASSERT_FATAL(make_pair(fds) == 0);
	struct transport *tcp = tcp_transport_new(fds[0]);
	CU_ASSERT_EQUAL(tls_transport_hibernate(tcp), WISP_EINVAL);
	transport_close(tcp);
	close(fds[1]);
}

/*
 * The record buffers are mappings of their own, not heap blocks: pages a
 * connection never wrote to are not resident (small records use the first
 * page of each), hibernation unmaps them (nothing left behind in the heap
 * to fragment it), and the memory figure counts them whole while they
 * exist.
 */
static void test_record_buffers_are_mapped(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(connect_pair(server_ctx(false, NULL),
	                             client_ctx(NULL, "ca.crt", false, "localhost", false, NULL), &s, &c));
	CU_ASSERT_FATAL(drive(&s, &c) && s.done && c.done);
	size_t eagains = 0;
	CU_ASSERT(transfer(c.t, s.t, "small", 5, &eagains));
	CU_ASSERT(transfer(s.t, c.t, "records", 7, &eagains));
	size_t mapped = 0, resident = 0;
	tls_transport_buffer_residency(s.t, &mapped, &resident);
	CU_ASSERT_EQUAL(mapped, 2 * TLS_RECORD_MAPPED);
	CU_ASSERT(resident > 0 && resident <= TLS_RECORD_MAPPED);

	size_t awake = wisp_mem_used();
	CU_ASSERT_EQUAL_FATAL(tls_transport_hibernate(s.t), 0);
	tls_transport_buffer_residency(s.t, &mapped, &resident);
	CU_ASSERT_EQUAL(mapped, 0);
	CU_ASSERT_EQUAL(resident, 0);
	CU_ASSERT(awake - wisp_mem_used() >= 2 * TLS_RECORD_MAPPED);

	CU_ASSERT(transfer(c.t, s.t, "wake", 4, &eagains));
	tls_transport_buffer_residency(s.t, &mapped, &resident);
	CU_ASSERT_EQUAL(mapped, 2 * TLS_RECORD_MAPPED);
	CU_ASSERT(resident > 0 && resident <= TLS_RECORD_MAPPED);
	CU_ASSERT(wisp_mem_used() >= awake);
	close_side(&s);
	close_side(&c);
}

/* ---- throughput: the transport contract (transport.h) ---- */

#define BURST (1024u * 1024u)
#define READ_BUF (64u * 1024u) /* the broker's scratch buffer */
#define TOPIC "t/burst"
#define GCM_RECORD_OVERHEAD 29u /* header 5, explicit nonce 8, tag 16 */

/* Room for the whole burst in the socket: forced past wmem_max when we
 * may (root), else as much as the system allows. The effective size. */
static size_t grow_sndbuf(int fd)
{
	int want = 4 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) == -1)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
	int got = 0;
	socklen_t len = sizeof got;
	getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len);
	return got > 0 ? (size_t)got : 0;
}

struct burst_result {
	size_t turns;       /* readiness events each way until all arrived */
	size_t read_calls;  /* transport_read calls, EAGAIN included */
	size_t wire_max;    /* most ciphertext queued in the socket at once */
	size_t received;
	bool in_order;
};

/*
 * Queues `count` PUBLISHes of `payload` bytes on a TLS connection, then
 * plays loop turns: the writer's outq_flush() (one EPOLLOUT event: it must
 * write until the socket is full or the queue empty), then the reader's
 * event (read until the transport would block, as dispatch.c does). The
 * reader decodes everything and checks the sequence numbers.
 */
static struct burst_result run_burst(struct transport *w, struct transport *r, size_t count, size_t payload)
{
	struct burst_result res = {.in_order = true};
	struct outq q;
	outq_init(&q);
	unsigned char *body = calloc(1, payload);
	unsigned char *in = malloc(2 * READ_BUF + payload + 64);
	CU_ASSERT_FATAL(body && in);
	for (size_t i = 0; i < count; i++) {
		memcpy(body, &i, sizeof i);
		struct msg *m = msg_new(TOPIC, sizeof TOPIC - 1, body, payload, 0, false);
		CU_ASSERT_FATAL(m != NULL);
		CU_ASSERT_FATAL(outq_push_publish(&q, m, MQTT_PROTO_V311, &(struct outq_delivery){0}) == 0);
		msg_unref(m);
	}
	size_t have = 0, next = 0;
	struct mqtt_codec_opts opts = {.version = MQTT_PROTO_V311};
	while (next < count && res.turns < 1000) {
		res.turns++;
		int rc = outq_flush(&q, w);
		CU_ASSERT(rc == 0 || rc == WISP_EAGAIN);
		int queued = 0;
		if (ioctl(r->fd, FIONREAD, &queued) == 0 && (size_t)queued > res.wire_max)
			res.wire_max = (size_t)queued;
		for (;;) { /* the reader's event */
			ssize_t n = transport_read(r, in + have, READ_BUF);
			res.read_calls++;
			if (n == WISP_EAGAIN)
				break;
			CU_ASSERT_FATAL(n > 0);
			res.received += (size_t)n;
			have += (size_t)n;
			size_t off = 0;
			struct mqtt_pkt p;
			ssize_t k;
			while ((k = mqtt_decode(in + off, have - off, &opts, &p)) > 0) {
				size_t seq;
				memcpy(&seq, p.u.publish.payload.ptr, sizeof seq);
				if (p.type != MQTT_PKT_PUBLISH || p.u.publish.payload.len != payload || seq != next)
					res.in_order = false;
				next++;
				off += (size_t)k;
			}
			CU_ASSERT_FATAL(k == 0);
			memmove(in, in + off, have - off);
			have -= off;
			if ((size_t)n < READ_BUF && r->want)
				break; /* would block: the event is over */
		}
	}
	CU_ASSERT(outq_empty(&q));
	outq_clear(&q);
	free(body);
	free(in);
	return res;
}

/*
 * 1 MiB of 64-byte PUBLISHes, then 1 MiB of 64 KiB ones, each way: with a
 * socket that holds the burst, it moves in one readiness event each way
 * (before the contract, outq_flush stopped after one record and dispatch.c
 * after one read, so it took a turn per 16 KiB record). Small packets share
 * records: the ciphertext is the plaintext plus a record's overhead per
 * 16 KiB, not per packet. A read returns every record that fits the buffer.
 */
static void test_burst_moves_in_one_event_each_way(void)
{
	static const struct {
		const char *label;
		size_t payload;
	} sizes[] = {{"64 B messages", 64}, {"64 KiB messages", 64u * 1024u}};
	struct side s, c;
	CU_ASSERT_FATAL(good_pair(&s, &c, false));
	size_t room = grow_sndbuf(s.t->fd);
	CU_ASSERT(grow_sndbuf(c.t->fd) == room);
	/* Linux doubles the value asked for and counts skb overhead in it;
	 * a socket under 3 MiB could not take the whole burst at once. */
	bool fits = room >= 3u * BURST;
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		size_t packet = sizeof TOPIC - 1 + 2 + 2 + sizes[k].payload + (sizes[k].payload > 127 ? 2 : 0);
		size_t count = BURST / packet + 1;
		size_t plain = count * packet;
		for (int way = 0; way < 2; way++) {
			struct transport *w = way ? c.t : s.t, *r = way ? s.t : c.t;
			struct burst_result res = run_burst(w, r, count, sizes[k].payload);
			char label[96];
			snprintf(label, sizeof label, "%s, %s", sizes[k].label, way ? "client to server" : "server to client");
			CHECK(res.received == plain && res.in_order, label);
			if (fits)
				CHECK(res.turns == 1, label);
			else /* a turn per socket-full, not per record */
				CHECK(res.turns <= plain / (room / 4) + 2, label);
			CHECK(res.read_calls <= plain / READ_BUF + res.turns + 1, label);
			/* outq_flush offers 256 pieces per writev (9.6 KB of 75-byte
			 * packets), each call ends a record: 4 KiB is a safe floor
			 * for a record, against 75 bytes if each packet had one. */
			size_t records = plain / 4096 + 2 * res.turns;
			CHECK(!fits || res.wire_max <= plain + records * GCM_RECORD_OVERHEAD, label);
			if (res.turns != 1 || res.read_calls > plain / READ_BUF + 2)
				fprintf(stderr, "\n[%s] socket %zu B: %zu turns, %zu reads, %zu B on the wire for %zu\n",
				        label, room, res.turns, res.read_calls, res.wire_max, plain);
		}
	}
	close_side(&s);
	close_side(&c);
}

/* Reads stop at the caller's buffer and keep the rest for pending(); an
 * error met after some records is reported by the next read, not lost. */
static void test_read_drains_records_then_reports_close(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(good_pair(&s, &c, false));
	static unsigned char msg[3 * 16384];
	for (size_t i = 0; i < sizeof msg; i++)
		msg[i] = (unsigned char)(i * 7u);
	struct iovec iov = {msg, sizeof msg};
	CU_ASSERT_EQUAL(transport_writev(c.t, &iov, 1), (ssize_t)sizeof msg); /* three records */
	CU_ASSERT_EQUAL(c.t->want, 0);
	close_side(&c); /* close_notify follows the records */
	static unsigned char got[sizeof msg];
	CU_ASSERT_EQUAL(transport_read(s.t, got, 20000), 20000); /* more than a record */
	CU_ASSERT_EQUAL(s.t->want, 0);
	/* The rest of record 2, plus what was read ahead of record 3 */
	CU_ASSERT(transport_pending(s.t) >= 2 * 16384 - 20000);
	CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), WISP_EAGAIN); /* busy: holds records */
	CU_ASSERT_EQUAL(transport_read(s.t, got + 20000, sizeof got), (ssize_t)(sizeof msg - 20000));
	CU_ASSERT_EQUAL(s.t->want, 0); /* short, but not would-block: call again */
	CU_ASSERT_EQUAL(memcmp(got, msg, sizeof msg), 0);
	CU_ASSERT_EQUAL(transport_read(s.t, got, sizeof got), WISP_ECLOSED);
	close_side(&s);
}

#define SMALL_RECORDS 32u
#define SMALL_RECORD 4096u

/*
 * A burst of 4 KiB records (one per writev: a client that writes each
 * PUBLISH as it comes) is read with a receive system call per socketful,
 * not two per record (mbed TLS's header-then-body reads). With a small
 * buffer the reads stop at it: what was read ahead of it is carried to
 * the next read, reported by pending(), and nothing is lost or reordered.
 */
static void test_records_read_several_per_system_call(void)
{
	struct side s, c;
	CU_ASSERT_FATAL(good_pair(&s, &c, false));
	static unsigned char msg[SMALL_RECORDS * SMALL_RECORD], got[sizeof msg];
	for (size_t i = 0; i < sizeof msg; i++)
		msg[i] = (unsigned char)(i * 13u + i / 4096u);
	static const size_t bufs[] = {READ_BUF, 1000};
	for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) {
		for (size_t i = 0; i < SMALL_RECORDS; i++) {
			struct iovec iov = {msg + i * SMALL_RECORD, SMALL_RECORD};
			CU_ASSERT_EQUAL_FATAL(transport_writev(c.t, &iov, 1), (ssize_t)SMALL_RECORD);
		}
		uint64_t reads = tls_socket_reads(), carries = tls_read_carries();
		uint64_t in_place = tls_records_opened_in_place();
		size_t have = 0, calls = 0;
		bool saw_pending = false;
		while (have < sizeof got && calls < 10000) {
			size_t ask = sizeof got - have < bufs[k] ? sizeof got - have : bufs[k];
			ssize_t n = transport_read(s.t, got + have, ask);
			calls++;
			CU_ASSERT_FATAL(n > 0);
			have += (size_t)n;
			if (transport_pending(s.t))
				saw_pending = true;
		}
		CU_ASSERT_EQUAL(have, sizeof got);
		CU_ASSERT_EQUAL(memcmp(got, msg, sizeof msg), 0);
		CU_ASSERT_EQUAL(transport_pending(s.t), 0);
		CU_ASSERT_EQUAL(transport_read(s.t, got, sizeof got), WISP_EAGAIN);
		uint64_t syscalls = tls_socket_reads() - reads;
		if (bufs[k] == READ_BUF) {
			/* 32 records of 4,125 bytes: 2 x 32 + 1 record by record, a
			 * few with read-ahead (64 KiB at a time, bounded by the room
			 * left in the 64 KiB buffer). */
			CU_ASSERT(syscalls <= SMALL_RECORDS / 4);
			/* All but perhaps the first opened straight into the
			 * buffer, when libcrypto does AES-GCM: no copy into and
			 * out of mbed TLS's input record. */
			uint64_t direct = tls_records_opened_in_place() - in_place;
			if (tls_default_prefers_gcm() && direct < SMALL_RECORDS - 1) {
				CU_FAIL("records not opened in place");
				fprintf(stderr, "\n[64 KiB reads] %llu of %u records opened in place\n",
				        (unsigned long long)direct, SMALL_RECORDS);
			}
		} else {
			/* A 1000-byte buffer reads ahead at most 1000 bytes: still
			 * fewer calls than records by record, and the rest carried. */
			CU_ASSERT(syscalls < 2 * SMALL_RECORDS);
			CU_ASSERT(tls_read_carries() > carries);
			CU_ASSERT(saw_pending);
		}
		if (syscalls > SMALL_RECORDS / 4)
			fprintf(stderr, "\n[%zu-byte reads] %llu receive calls for %u records\n", bufs[k],
			        (unsigned long long)syscalls, SMALL_RECORDS);
	}
	CU_ASSERT_EQUAL(tls_transport_hibernate(s.t), 0); /* nothing carried is left */
	close_side(&s);
	close_side(&c);
}

/* The two 100-byte records a client sends, as ciphertext taken off the
 * server's socket (each 129 bytes with AES-GCM). */
static size_t steal_records(struct side *s, struct side *c, unsigned char *raw, size_t cap)
{
	static const unsigned char text[100] = {1, 2, 3};
	for (int k = 0; k < 2; k++) {
		struct iovec iov = {(void *)text, sizeof text};
		CU_ASSERT_EQUAL(transport_writev(c->t, &iov, 1), (ssize_t)sizeof text);
	}
	ssize_t n = recv(s->t->fd, raw, cap, 0);
	return n > 0 ? (size_t)n : 0;
}

/*
 * Records opened past mbed TLS are checked as mbed TLS checks them: a
 * flipped ciphertext bit, a record replayed, two records swapped (the
 * sequence number in the additional data) each fail the connection
 * (bad_record_mac), after the good records before them were delivered.
 */
static void test_forged_replayed_reordered_records_fail(void)
{
	static const char *const cases[] = {"flipped bit", "replayed", "reordered"};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		struct side s, c;
		CU_ASSERT_FATAL(good_pair(&s, &c, false));
		unsigned char raw[512], bad[1024], got[1024];
		size_t n = steal_records(&s, &c, raw, sizeof raw);
		CU_ASSERT_FATAL(n > 0 && n % 2 == 0);
		size_t one = n / 2, len = n, good = 0;
		memcpy(bad, raw, n);
		if (k == 0) {
			bad[one + 20] ^= 0x01; /* in the second record's ciphertext */
			good = 100;
		} else if (k == 1) {
			memcpy(bad + one, raw, one); /* the first, twice, then the second */
			memcpy(bad + 2 * one, raw + one, one);
			len = 3 * one;
			good = 100;
		} else {
			memcpy(bad, raw + one, one);
			memcpy(bad + one, raw, one);
		}
		CU_ASSERT_EQUAL_FATAL(send(c.t->fd, bad, len, 0), (ssize_t)len);
		ssize_t r = transport_read(s.t, got, sizeof got);
		if (good) {
			CHECK(r == (ssize_t)good, cases[k]);
			r = transport_read(s.t, got, sizeof got);
		}
		CHECK(r == WISP_EPROTO, cases[k]);
		char why[128];
		transport_last_error(s.t, why, sizeof why);
		CHECK(strstr(why, "MAC") != NULL || strstr(why, "mac") != NULL, cases[k]);
		close_side(&s);
		close_side(&c);
	}
}

/*
 * Writes seal up to four records into one send(): a socket that takes only
 * part of it cuts the batch after whole records, inside one, or before the
 * first. Whatever the cut, every byte arrives once, in order, and the
 * records after the cut (sealed, never sent) do not use up sequence
 * numbers: the reader's mbed TLS checks each record's tag against its own
 * count. Socket sizes from 2 KiB to 160 KiB move the cut around.
 */
static void test_batched_records_cut_anywhere_arrive_whole(void)
{
	static const int sndbufs[] = {2048, 9000, 20000, 33000, 47000, 70000, 160000};
	size_t len = 600u * 1024u;
	unsigned char *big = malloc(len);
	CU_ASSERT_FATAL(big != NULL);
	for (size_t i = 0; i < len; i++)
		big[i] = (unsigned char)(i * 31u + (i >> 12));
	for (size_t k = 0; k < sizeof sndbufs / sizeof sndbufs[0]; k++) {
		struct side s, c;
		CU_ASSERT_FATAL(good_pair(&s, &c, false));
		CU_ASSERT(setsockopt(s.t->fd, SOL_SOCKET, SO_SNDBUF, &sndbufs[k], sizeof sndbufs[k]) == 0);
		CU_ASSERT(setsockopt(c.t->fd, SOL_SOCKET, SO_SNDBUF, &sndbufs[k], sizeof sndbufs[k]) == 0);
		size_t eagains = 0;
		char label[64];
		snprintf(label, sizeof label, "SO_SNDBUF %d", sndbufs[k]);
		CHECK(transfer(s.t, c.t, big, len, &eagains), label);
		CHECK(transfer(c.t, s.t, big, len, &eagains), label);
		CHECK(transfer(s.t, c.t, "after", 5, &eagains), label);
		close_side(&s);
		close_side(&c);
	}
	free(big);
}

/*
 * A full socket (a subscriber that does not read) costs no sealing wasted
 * on every call: once a batch was cut, each call seals one record until one
 * goes whole, so a call that meets a full socket seals at most one record
 * and drops it, not four.
 */
static void test_full_socket_seals_one_record_per_call(void)
{
	if (!tls_default_prefers_gcm())
		return; /* mbed TLS's record-by-record path */
	struct side s, c;
	CU_ASSERT_FATAL(good_pair(&s, &c, false));
	int small = 8192;
	CU_ASSERT(setsockopt(s.t->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
	static unsigned char big[256 * 1024];
	struct iovec iov = {big, sizeof big};
	/* Fill the socket behind the transport's back (the stream is not read
	 * again): every batch from now on meets a socket that takes nothing. */
	for (int k = 0; k < 10000 && send(s.t->fd, big, sizeof big, MSG_DONTWAIT) > 0; k++)
		;
	ssize_t n = transport_writev(s.t, &iov, 1);
	CU_ASSERT_FATAL(n == WISP_EAGAIN && s.t->want == TRANSPORT_WANT_WRITE);
	for (int k = 0; k < 5; k++) {
		uint64_t sealed = tls_records_sealed_in_batches();
		n = transport_writev(s.t, &iov, 1);
		CU_ASSERT(n == WISP_EAGAIN || n > 0);
		CU_ASSERT(tls_records_sealed_in_batches() - sealed <= 1);
	}
	close_side(&s);
	close_side(&c);
}

/* TCP keeps its one-syscall path: a short read or writev says it would
 * block, a full one does not. */
static void test_tcp_short_io_reports_would_block(void)
{
	int fds[2];
	CU_ASSERT_FATAL(make_pair(fds) == 0);
	struct transport *a = tcp_transport_new(fds[0]), *b = tcp_transport_new(fds[1]);
	CU_ASSERT_FATAL(a && b);
	int small = 4096;
	CU_ASSERT(setsockopt(a->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
	static unsigned char big[256 * 1024], got[256 * 1024];
	struct iovec iov[2] = {{big, 100}, {big + 100, sizeof big - 100}};
	ssize_t n = transport_writev(a, iov, 2);
	CU_ASSERT(n > 0 && (size_t)n < sizeof big);
	CU_ASSERT_EQUAL(a->want, TRANSPORT_WANT_WRITE);
	ssize_t r = transport_read(b, got, sizeof got);
	CU_ASSERT_EQUAL(r, n);
	CU_ASSERT_EQUAL(b->want, TRANSPORT_WANT_READ);
	CU_ASSERT_EQUAL(transport_writev(a, iov, 1), 100);
	CU_ASSERT_EQUAL(a->want, 0);
	CU_ASSERT_EQUAL(transport_read(b, got, 100), 100);
	CU_ASSERT_EQUAL(b->want, 0);
	transport_close(a);
	transport_close(b);
}

static CU_TestInfo validation_tests[] = {
	{"tls_ctx_new_* refuse bad options and files, naming them", test_validation_table},
	{"error buffer is truncated safely or may be NULL", test_error_buffer_truncated_or_absent},
	{"tls_opts_init defaults are the secure ones", test_opts_init_is_secure},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo handshake_tests[] = {
	{"handshake table: verification, mutual TLS, CN, suites", test_handshake_table},
	{"plaintext to a TLS server fails the handshake cleanly", test_plaintext_to_tls_port_fails_cleanly},
	{"pending() reports decrypted bytes not yet read", test_pending_reports_decrypted_bytes},
	{"close_notify from the peer reads as WISP_ECLOSED", test_close_notify_reads_as_closed},
	{"read() before handshake() completes the handshake", test_read_before_handshake_completes_it},
	{"100 KiB each way in records, with WANT_WRITE retries", test_large_writes_with_want_write},
	{"retry after EAGAIN with fewer bytes is refused", test_retry_with_fewer_bytes_is_refused},
	{"suite order is the server's, groups restrict", test_suite_and_curve_preference},
	{"peer CN: buffer size, TLS vs TCP transports", test_peer_cn_edge_cases},
	{"a context outlives a reload through its connections", test_context_outlives_reload},
	{"a server session is paid when the handshake starts, and counted", test_session_paid_when_handshake_starts},
	{"a session past memory_limit is refused", test_session_refused_past_memory_limit},
	{"hibernate and wake: buffers freed, data arriving meanwhile or half a record, sequence numbers kept",
	 test_hibernate_and_wake},
	{"record buffers are mappings: untouched pages not resident, unmapped asleep",
	 test_record_buffers_are_mapped},
	{"a handshake survives an allocation failure anywhere, and frees everything",
	 test_handshake_survives_every_allocation_failure},
	{"resumption: ticket, cache, neither, another context", test_resumption_table},
	{"ticket keys rotate on the clock and on demand; the previous key still opens",
	 test_ticket_key_rotation},
	{"resumption under mutual TLS keeps the client's CN", test_resumed_session_keeps_client_cn},
	{"session lifetime out of range is refused", test_session_lifetime_validated},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo throughput_tests[] = {
	{"a 1 MiB burst moves in one readiness event each way, small packets share records",
	 test_burst_moves_in_one_event_each_way},
	{"read drains records up to the buffer; a close after them is reported next",
	 test_read_drains_records_then_reports_close},
	{"4 KiB records are read several per system call; a short buffer carries the rest",
	 test_records_read_several_per_system_call},
	{"a forged, replayed or reordered record fails the connection (bad_record_mac)",
	 test_forged_replayed_reordered_records_fail},
	{"records batched into one send and cut anywhere by a full socket arrive whole, in order",
	 test_batched_records_cut_anywhere_arrive_whole},
	{"a full socket: one record sealed per call, not a batch dropped each time",
	 test_full_socket_seals_one_record_per_call},
	{"TCP: a short read or writev reports would-block", test_tcp_short_io_reports_would_block},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"tls validation", suite_init, suite_cleanup, NULL, NULL, validation_tests},
	{"tls handshake", suite_init, suite_cleanup, NULL, NULL, handshake_tests},
	{"transport throughput", suite_init, suite_cleanup, NULL, NULL, throughput_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
