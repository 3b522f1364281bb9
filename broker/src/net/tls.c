/*
 * TLS transport over mbed TLS 2.28 (Debian 12), behind the transport vtable.
 *
 * What it does: builds validated, shareable contexts (struct tls_ctx) and
 * runs one non-blocking mbed TLS session per connection over our own
 * send/recv callbacks, mapping WANT_READ/WANT_WRITE to WISP_EAGAIN plus the
 * readiness the loop must wait for. What it does not: handshake timeouts,
 * logging and MQTT identity policy belong to the listener and proto/.
 *
 * Protocol policy: TLS 1.2 only. 2.28's TLS 1.3 is an experimental, partial
 * client-only implementation (MBEDTLS_SSL_PROTO_TLS1_3_EXPERIMENTAL, off in
 * Debian), so "tls1.3" is refused rather than silently downgraded. Defaults
 * are ECDHE with AEAD ciphers only, the "next" X.509 profile (SHA-256+,
 * RSA >= 2048, P-256+), no renegotiation.
 *
 * Resumption (server): RFC 5077 session tickets, sealed with AES-256-GCM
 * keys we rotate every session_lifetime on the monotonic clock (checked
 * whenever a ticket is sealed or opened); the previous key still opens the
 * tickets it sealed, so a ticket stays valid for its lifetime and no key
 * lives longer than two. A bounded session cache (session_cache_size
 * entries, oldest reused first) serves clients without tickets. Both
 * belong to the tls_ctx: a reload (SIGHUP) builds new keys and an empty
 * cache, so a ticket from before it gets a full
 * handshake, under the new certificate and CA. A resumed handshake skips
 * the signature and the ECDHE (~5 ms of CPU on P-256 with mbed TLS 2.28).
 * The ticket keys and the cache entries (~0.2 KiB each, ~0.8 KiB with the
 * client's certificate under mutual TLS) count in the heap like the rest.
 *
 * Invariants:
 * - A transport holds a reference on its context, whose mbedtls_ssl_config
 *   (and the certificates it points to) must outlive every session using it.
 * - After mbedtls_ssl_write() returned WANT_WRITE, the next write passes the
 *   same length again (write_pending): mbed TLS has already encrypted that
 *   record and only finishes sending it.
 *
 * Cost model per connection (measured, see certs/README.md): the input
 * and output record buffers (16717 bytes each, mapped as 20 KiB: see
 * record_buf_alloc) for the life of the connection (Debian's build lacks
 * MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH, and the input side must hold a 16
 * KiB record since clients do not negotiate max_fragment_length), of which
 * only the pages records reach become resident; plus the 736-byte
 * mbedtls_ssl_context, the session and the peer certificate. The handshake
 * needs ~20 KiB more transiently. writev gathers its iovecs straight into
 * the output record buffer, or, with libcrypto's AES-GCM, seals them
 * straight into a batch buffer of the thread's, several records per
 * send() (write_batch); reads take several records per system call
 * through a read-ahead buffer of the thread's and open them straight into
 * the caller's buffer (bio_recv, open_direct). Neither buffer is the
 * connection's: no staging memory per connection. Hibernated (idle for
 * hibernate_after), a connection unmaps both record buffers and keeps ~1.9
 * KiB (ChaCha20-Poly1305; ~2.8 KiB with AES-GCM): the context, session and
 * keys.
 *
 * Paid late: a server transport calls mbedtls_ssl_setup() only once the
 * peer's first bytes are there and look like a TLS handshake record, so a
 * socket that connects and sends nothing, or sends plaintext, costs the
 * transport struct (~800 bytes) and never the buffers.
 *
 * Counted: Debian's mbed TLS has no MBEDTLS_PLATFORM_MEMORY (no
 * mbedtls_platform_set_calloc_free), so we link copies of its static
 * archives whose calloc/free are renamed to wisp_tls_calloc/wisp_tls_free
 * (cmake/FindMbedTLS.cmake, core/alloc.h): every byte mbed TLS holds is in
 * the heap figures, and an allocation past memory_limit fails in mbed TLS,
 * which fails that one connection (WISP_ENOMEM). A session does not start
 * unless TLS_MEM_SESSION + TLS_MEM_HANDSHAKE would fit, so a handshake is
 * refused before its CPU is spent rather than halfway.
 *
 * Threading: loop thread only. The process-wide entropy/CTR-DRBG is seeded
 * on first use and never torn down (mbed TLS locks it internally anyway).
 */
#include "tls.h"

#include <string.h>

#include "err.h"

#ifdef WISP_TLS_MBEDTLS

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <mbedtls/bignum.h>
#include <mbedtls/cipher.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/ssl_internal.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#ifdef WISP_TLS_LIBCRYPTO
#include "tls_gcm.h"
#endif

#include "alloc.h"
#include "list.h"
#include "log.h"
#include "loop.h"

#if MBEDTLS_VERSION_MAJOR != 2
#error "tls.c is written for the mbed TLS 2.28 API"
#endif

/* Files we read whole; a CA bundle is ~200 KiB, a key or chain a few KiB. */
#define TLS_MAX_FILE (4u << 20)

/* The most plaintext one record carries (16 KiB). */
#define TLS_RECORD_LEN MBEDTLS_SSL_OUT_CONTENT_LEN

/* What a session needs from mbed TLS (glibc usable sizes, measured on
 * libmbedtls 2.28.3: certs/README.md): the two record buffers (mapped,
 * 20 KiB each once rounded to pages) and the session for the connection's
 * life, and the handshake state (checksums, ECDHE, the peer's certificate
 * chain while it is verified) until the handshake ends. Only for refusing
 * early: the real bytes are counted. */
#define TLS_MEM_SESSION (44u * 1024u)
#define TLS_MEM_HANDSHAKE (20u * 1024u)

/* Freed bytes after which a sweep that hibernated something trims the heap. */
#define TLS_HIBERNATE_TRIM (16u * MBEDTLS_SSL_IN_BUFFER_LEN)

/* First byte of a TLS record carrying a handshake message (ClientHello). */
#define TLS_RECORD_HANDSHAKE 0x16
#define TLS_RECORD_MAJOR 3

/*
 * ECDHE key exchange (forward secrecy) and AEAD ciphers only. A server
 * picks the first suite of this list the client offers (Debian's build has
 * no MBEDTLS_SSL_SRV_RESPECT_CLIENT_PREFERENCE), so the cheapest AEAD here
 * comes first. With libcrypto's AES-GCM (net/tls_gcm.h) on a CPU with
 * AES-NI and PCLMULQDQ that is AES-GCM: sealing a 4 KiB record takes
 * 1.2-1.45 us with AES-128-GCM against 12.9 us with Nettle's
 * ChaCha20-Poly1305 and 20 us with mbed TLS's. Otherwise ChaCha20-Poly1305: mbed TLS 2.28's own GCM
 * runs AES-NI and PCLMULQDQ one 16-byte block at a time (28 us per 4 KiB
 * here), and without AES-NI AES is table-based. Both are 128-bit-secure
 * AEADs (RFC 5288, RFC 7905).
 */
static const char *const suites_gcm_first[] = {
	"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
	"TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
	"TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
	"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
	"TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
	"TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
};
static const char *const suites_chacha_first[] = {
	"TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
	"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
	"TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
	"TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
	"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
	"TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
};
_Static_assert(sizeof suites_gcm_first == sizeof suites_chacha_first, "the same suites, reordered");

bool tls_default_prefers_gcm(void)
{
#ifdef WISP_TLS_LIBCRYPTO
	return tls_gcm_is_fast();
#else
	return false;
#endif
}

/*
 * ECDHE groups. A server takes the client's first group that is in this
 * list; a client offers them in this order. X25519 first: a full handshake
 * (ECDSA P-256 certificate) cost the broker 4,770 us of CPU with X25519
 * against 6,000 us with P-256 (bench/tls_handshake.sh, mbed TLS 2.28's
 * generic bignum code; OpenSSL needs ~1,100 us for either).
 */
static const mbedtls_ecp_group_id tls_curves[] = {
	MBEDTLS_ECP_DP_CURVE25519,
	MBEDTLS_ECP_DP_SECP256R1,
	MBEDTLS_ECP_DP_SECP384R1,
	MBEDTLS_ECP_DP_SECP521R1,
	MBEDTLS_ECP_DP_NONE,
};

struct tls_ctx {
	int refs;
	bool is_server;
	bool insecure;
	bool verifies; /* peer certificates are verified (VERIFY_REQUIRED) */
	mbedtls_ssl_config conf;
	mbedtls_x509_crt cert;
	mbedtls_pk_context key;
	mbedtls_x509_crt ca;
	int *suites;    /* 0-terminated; conf points at it */
	mbedtls_ecp_group_id *curves; /* NONE-terminated, or NULL: tls_curves */
	char *hostname; /* client: SNI and expected name, or NULL */
	/* Server, session_tickets: [0] seals new tickets, [1] (the previous
	 * key, or NULL) still opens the tickets it sealed. */
	mbedtls_ssl_ticket_context *tickets[2];
	uint64_t tickets_born;      /* tls_clock() when tickets[0] was made */
	unsigned ticket_lifetime;   /* seconds: rotation period and ticket life */
	unsigned hibernate_after;   /* seconds idle before hibernation, 0 = never */
	struct list_node awake;     /* established awake transports, least recently used first */
	struct loop_timer sweep;    /* armed while `awake` is not empty */
	mbedtls_ssl_cache_context cache;    /* server: session cache (session_cache_size) */
};

struct tls_transport {
	struct transport base;
	struct tls_ctx *ctx; /* one reference */
	mbedtls_ssl_context ssl;
	size_t write_pending; /* plaintext length of a record not yet fully sent */
	int last_ret;         /* last fatal mbed TLS error, 0 if none */
	int read_error;       /* WISP_E* met by a read that returned bytes, for the next read */
	int last_errno;       /* errno behind a NET_* error */
	const char *refusal;  /* why the session was refused before it started */
	bool is_setup;        /* mbedtls_ssl_setup done: the buffers exist */
	bool handshake_done;
	bool full_handshake; /* a certificate was sent or received: not resumed */
	bool failed; /* fatal error: no close_notify on close */
	bool hibernated;      /* record buffers freed (tls_transport_hibernate) */
	bool batch_cut;       /* write_batch's last send was cut short: seal one record at a time */
	struct list_node lru; /* in ctx->awake while established, awake, and hibernation is on */
	uint64_t last_active; /* loop_now_s() of the last read or write that moved bytes */
	unsigned char in_ctr[8], out_ctr[8]; /* record sequence numbers, kept while asleep:
	                                        mbed TLS stores them in the buffers */
	struct tls_carry *carry; /* ciphertext read ahead that mbed TLS has not taken yet */
};

/* Read-ahead ciphertext a read left over (see bio_recv): served first by
 * the next read, then freed. */
struct tls_carry {
	size_t off, len;
	unsigned char data[];
};

struct tls_session {
	mbedtls_ssl_session s;
};

static const struct transport_ops tls_ops;

static struct loop *hib_loop; /* tls_hibernation_attach() */
static size_t hib_count;       /* transports hibernated now */
/* Counters any thread may bump (a client's transports live off the loop). */
static _Atomic uint64_t socket_reads; /* receive system calls of established connections */
static _Atomic uint64_t carry_count;  /* reads that left read-ahead to carry */
static _Atomic uint64_t direct_opens; /* records opened straight into the reader's buffer */
static _Atomic uint64_t direct_seals; /* records write_batch sealed (sent or not) */

static mbedtls_entropy_context rng_entropy;
static mbedtls_ctr_drbg_context rng_drbg;
static bool rng_ready;

__attribute__((format(printf, 3, 4))) static int seterr(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return WISP_ECONFIG;
}

static void mbed_errstr(int ret, char *buf, size_t len)
{
	mbedtls_strerror(ret, buf, len);
}

/* Seeded once per process: seeding reads the OS entropy source, which we do
 * not want to pay per context (reloads) or per connection. */
static int rng_init(char *err, size_t errlen)
{
	static const char pers[] = "wisp-tls";
	if (rng_ready)
		return 0;
	mbedtls_entropy_init(&rng_entropy);
	mbedtls_ctr_drbg_init(&rng_drbg);
	int ret = mbedtls_ctr_drbg_seed(&rng_drbg, mbedtls_entropy_func, &rng_entropy,
	                                (const unsigned char *)pers, sizeof pers - 1);
	if (ret != 0) {
		char msg[128];
		mbed_errstr(ret, msg, sizeof msg);
		mbedtls_ctr_drbg_free(&rng_drbg);
		mbedtls_entropy_free(&rng_entropy);
		seterr(err, errlen, "entropy: (system): cannot seed the random generator: %s", msg);
		return WISP_EIO;
	}
	rng_ready = true;
	return 0;
}

/*
 * Reads a whole file into a NUL-terminated buffer (caller zeroizes if
 * secret, and frees). *len excludes the NUL. We read it ourselves rather
 * than use mbed TLS's *_parse_file so that errors carry errno's reason.
 */
static int load_file(const char *what, const char *path, unsigned char **out, size_t *len, char *err,
                     size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return seterr(err, errlen, "%s: %s: %s", what, path, strerror(errno));
	unsigned char *buf = NULL;
	size_t cap = 0, n = 0;
	int rc = 0;
	for (;;) {
		if (cap - n < 4096) {
			size_t ncap = cap ? cap * 2 : 8192;
			if (ncap > TLS_MAX_FILE + 1) {
				rc = seterr(err, errlen, "%s: %s: file too large (over %u bytes)", what, path,
				            TLS_MAX_FILE);
				break;
			}
			unsigned char *nb = wisp_malloc(ncap);
			if (!nb) {
				seterr(err, errlen, "%s: %s: out of memory", what, path);
				rc = WISP_ENOMEM;
				break;
			}
			if (buf) {
				memcpy(nb, buf, n);
				mbedtls_platform_zeroize(buf, cap);
				wisp_free(buf);
			}
			buf = nb;
			cap = ncap;
		}
		size_t got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
		if (got == 0) {
			if (ferror(f))
				rc = seterr(err, errlen, "%s: %s: %s", what, path, strerror(errno));
			break;
		}
	}
	fclose(f);
	if (rc == 0 && n == 0)
		rc = seterr(err, errlen, "%s: %s: file is empty", what, path);
	if (rc != 0) {
		if (buf) {
			mbedtls_platform_zeroize(buf, cap);
			wisp_free(buf);
		}
		return rc;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

/* mbed TLS takes PEM with its terminating NUL counted, DER without. */
static size_t parse_len(const unsigned char *buf, size_t len)
{
	return strstr((const char *)buf, "-----BEGIN ") ? len + 1 : len;
}

static void format_time(const mbedtls_x509_time *t, char *buf, size_t len)
{
	snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d UTC", t->year, t->mon, t->day, t->hour, t->min,
	         t->sec);
}

/* Rejects a chain with any certificate outside its validity period: such a
 * server could never complete a handshake with a verifying client, and we
 * would rather refuse to start than fail every connection. */
static int check_validity(const char *what, const char *path, const mbedtls_x509_crt *chain, char *err,
                          size_t errlen)
{
	int i = 1;
	for (const mbedtls_x509_crt *c = chain; c && c->version; c = c->next, i++) {
		char when[40], which[32] = "";
		if (i > 1)
			snprintf(which, sizeof which, " (chain certificate %d)", i);
		if (mbedtls_x509_time_is_past(&c->valid_to)) {
			format_time(&c->valid_to, when, sizeof when);
			return seterr(err, errlen, "%s: %s: certificate%s expired on %s", what, path, which,
			              when);
		}
		if (mbedtls_x509_time_is_future(&c->valid_from)) {
			format_time(&c->valid_from, when, sizeof when);
			return seterr(err, errlen, "%s: %s: certificate%s not valid before %s", what, path,
			              which, when);
		}
	}
	return 0;
}

static int load_certs(const char *what, const char *path, mbedtls_x509_crt *chain, char *err,
                      size_t errlen)
{
	unsigned char *buf;
	size_t len;
	int rc = load_file(what, path, &buf, &len, err, errlen);
	if (rc != 0)
		return rc;
	int ret = mbedtls_x509_crt_parse(chain, buf, parse_len(buf, len));
	wisp_free(buf);
	if (ret < 0) {
		char msg[160];
		mbed_errstr(ret, msg, sizeof msg);
		return seterr(err, errlen, "%s: %s: cannot parse certificate: %s", what, path, msg);
	}
	if (ret > 0)
		return seterr(err, errlen, "%s: %s: %d certificate(s) in the file cannot be parsed", what,
		              path, ret);
	return 0;
}

static int load_key(const char *path, mbedtls_pk_context *key, char *err, size_t errlen)
{
	unsigned char *buf;
	size_t len;
	int rc = load_file("key", path, &buf, &len, err, errlen);
	if (rc != 0)
		return rc;
	int ret = mbedtls_pk_parse_key(key, buf, parse_len(buf, len), NULL, 0);
	mbedtls_platform_zeroize(buf, len);
	wisp_free(buf);
	if (ret == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || ret == MBEDTLS_ERR_PK_PASSWORD_MISMATCH)
		return seterr(err, errlen, "key: %s: key is encrypted (passphrase-protected keys are not "
		                           "supported)", path);
	if (ret != 0) {
		char msg[160];
		mbed_errstr(ret, msg, sizeof msg);
		return seterr(err, errlen, "key: %s: cannot parse private key: %s", path, msg);
	}
	return 0;
}

/* Loads cert_file and key_file (both required together) into c. */
static int load_identity(struct tls_ctx *c, const struct tls_opts *o, char *err, size_t errlen)
{
	int rc = load_certs("cert", o->cert_file, &c->cert, err, errlen);
	if (rc != 0)
		return rc;
	if ((rc = check_validity("cert", o->cert_file, &c->cert, err, errlen)) != 0)
		return rc;
	if ((rc = load_key(o->key_file, &c->key, err, errlen)) != 0)
		return rc;
	if (mbedtls_pk_check_pair(&c->cert.pk, &c->key) != 0)
		return seterr(err, errlen, "key: %s: does not match the certificate in %s", o->key_file,
		              o->cert_file);
	int ret = mbedtls_ssl_conf_own_cert(&c->conf, &c->cert, &c->key);
	if (ret != 0)
		return seterr(err, errlen, "cert: %s: cannot use certificate (-0x%04x)", o->cert_file,
		              (unsigned)-ret);
	return 0;
}

static int load_ca(struct tls_ctx *c, const struct tls_opts *o, char *err, size_t errlen)
{
	int rc;
	if (o->ca_file && (rc = load_certs("ca", o->ca_file, &c->ca, err, errlen)) != 0)
		return rc;
	if (o->ca_path) {
		struct stat st;
		if (stat(o->ca_path, &st) == -1)
			return seterr(err, errlen, "ca_path: %s: %s", o->ca_path, strerror(errno));
		if (!S_ISDIR(st.st_mode))
			return seterr(err, errlen, "ca_path: %s: not a directory", o->ca_path);
		/* A system directory may hold files that are not certificates:
		 * accept it as long as something loaded. */
		int ret = mbedtls_x509_crt_parse_path(&c->ca, o->ca_path);
		if (ret < 0) {
			char msg[160];
			mbed_errstr(ret, msg, sizeof msg);
			return seterr(err, errlen, "ca_path: %s: cannot load certificates: %s", o->ca_path,
			              msg);
		}
		if (c->ca.version == 0)
			return seterr(err, errlen, "ca_path: %s: no certificates found", o->ca_path);
	}
	return 0;
}

/*
 * Builds the 0-terminated ciphersuite id list. Accepts IANA names
 * (TLS_ECDHE_..._SHA256) and mbed TLS's spelling with dashes, which differ
 * only in '_' versus '-'. An unknown or unsupported name fails, naming it.
 */
static int build_suites(struct tls_ctx *c, const char *list, char *err, size_t errlen)
{
	size_t n = 1;
	if (list) {
		for (const char *p = list; *p; p++)
			n += *p == ':';
	} else {
		n = sizeof suites_gcm_first / sizeof suites_gcm_first[0];
	}
	c->suites = wisp_calloc(n + 1, sizeof *c->suites);
	if (!c->suites) {
		seterr(err, errlen, "ciphersuites: (list): out of memory");
		return WISP_ENOMEM;
	}
	size_t k = 0;
	if (!list) {
		const char *const *defaults = tls_default_prefers_gcm() ? suites_gcm_first
		                                                        : suites_chacha_first;
		for (size_t i = 0; i < n; i++) {
			int id = mbedtls_ssl_get_ciphersuite_id(defaults[i]);
			if (id != 0)
				c->suites[k++] = id;
		}
		if (k == 0)
			return seterr(err, errlen, "ciphersuites: (defaults): none supported by this mbed "
			                           "TLS build");
		return 0;
	}
	const char *p = list;
	for (;;) {
		const char *end = strchr(p, ':');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		while (len && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len > 0) {
			char name[96];
			if (len >= sizeof name)
				return seterr(err, errlen, "ciphersuites: %.*s: unknown ciphersuite", (int)len, p);
			for (size_t i = 0; i < len; i++)
				name[i] = p[i] == '_' ? '-' : p[i];
			name[len] = '\0';
			int id = mbedtls_ssl_get_ciphersuite_id(name);
			if (id == 0)
				return seterr(err, errlen,
				              "ciphersuites: %.*s: unknown ciphersuite (use IANA names such as "
				              "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)",
				              (int)len, p);
			c->suites[k++] = id;
		}
		if (!end)
			break;
		p = end + 1;
	}
	if (k == 0)
		return seterr(err, errlen, "ciphersuites: %s: empty list", list);
	return 0;
}

/* The ECDHE groups from a colon-separated list of mbed TLS curve names. */
static int build_curves(struct tls_ctx *c, const char *list, char *err, size_t errlen)
{
	if (!list)
		return 0;
	size_t n = 1;
	for (const char *p = list; *p; p++)
		n += *p == ':';
	c->curves = wisp_calloc(n + 1, sizeof *c->curves);
	if (!c->curves) {
		seterr(err, errlen, "curves: (list): out of memory");
		return WISP_ENOMEM;
	}
	size_t k = 0;
	for (const char *p = list;;) {
		const char *end = strchr(p, ':');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char name[32];
		if (len >= sizeof name)
			return seterr(err, errlen, "curves: %.*s: unknown curve", (int)len, p);
		memcpy(name, p, len);
		name[len] = '\0';
		const mbedtls_ecp_curve_info *ci = len ? mbedtls_ecp_curve_info_from_name(name) : NULL;
		if (len && !ci)
			return seterr(err, errlen, "curves: %s: unknown curve (x25519, secp256r1, secp384r1, secp521r1)",
			              name);
		if (ci)
			c->curves[k++] = ci->grp_id;
		if (!end)
			break;
		p = end + 1;
	}
	c->curves[k] = MBEDTLS_ECP_DP_NONE;
	if (k == 0)
		return seterr(err, errlen, "curves: %s: empty list", list);
	return 0;
}

/* A server whose key type no configured suite can use would fail every
 * handshake with "no shared cipher": say so at startup instead. */
static int check_suites_fit_key(const struct tls_ctx *c, const char *list, char *err, size_t errlen)
{
	for (const int *id = c->suites; *id; id++) {
		const mbedtls_ssl_ciphersuite_t *cs = mbedtls_ssl_ciphersuite_from_id(*id);
		if (!cs)
			continue;
		mbedtls_pk_type_t want = mbedtls_ssl_get_ciphersuite_sig_pk_alg(cs);
		if (want == MBEDTLS_PK_NONE || mbedtls_pk_can_do(&c->key, want))
			return 0;
	}
	return seterr(err, errlen, "ciphersuites: %s: none usable with this key type (%s)", list ? list : "(defaults)",
	              mbedtls_pk_get_name(&c->key));
}

static int parse_min_version(const char *v, char *err, size_t errlen)
{
	if (!v || strcmp(v, "tls1.2") == 0)
		return 0;
	if (strcmp(v, "tls1.3") == 0)
		return seterr(err, errlen, "min_version: tls1.3: not supported: mbed TLS %s has no "
		                           "production TLS 1.3; use \"tls1.2\"",
		              MBEDTLS_VERSION_STRING);
	if (strcmp(v, "tls1.0") == 0 || strcmp(v, "tls1.1") == 0)
		return seterr(err, errlen, "min_version: %s: refused: obsolete and insecure; use \"tls1.2\"",
		              v);
	return seterr(err, errlen, "min_version: %s: unknown version (expected \"tls1.2\")", v);
}

static bool is_ip(const char *s, unsigned char *out, size_t *len)
{
	if (inet_pton(AF_INET, s, out) == 1) {
		*len = 4;
		return true;
	}
	if (inet_pton(AF_INET6, s, out) == 1) {
		*len = 16;
		return true;
	}
	return false;
}

static bool san_has_ip(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t len)
{
	if (!(crt->ext_types & MBEDTLS_X509_EXT_SUBJECT_ALT_NAME))
		return false;
	for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s; s = s->next) {
		if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS) &&
		    s->buf.len == len && memcmp(s->buf.p, ip, len) == 0)
			return true;
	}
	return false;
}

/*
 * Client-side verification hook. mbed TLS 2.28 compares the expected name
 * only with DNS names and the CN, so a client connecting to "127.0.0.1"
 * fails against a certificate with SAN IP:127.0.0.1: we match iPAddress
 * SANs here. With `insecure`, the chain is still verified but a name
 * mismatch is forgiven.
 */
static int verify_cb(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	const struct tls_ctx *c = p;
	if (depth != 0 || !(*flags & MBEDTLS_X509_BADCERT_CN_MISMATCH))
		return 0;
	unsigned char ip[16];
	size_t iplen;
	if (c->insecure || (c->hostname && is_ip(c->hostname, ip, &iplen) && san_has_ip(crt, ip, iplen)))
		*flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH;
	return 0;
}

/* ---- session ticket keys ---- */

static uint64_t clock_monotonic(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

/* Seconds on a clock that never jumps (a wall-clock change must not rotate
 * keys early or keep them late); tests replace it. */
static uint64_t (*tls_clock)(void) = clock_monotonic;

void tls_set_clock(uint64_t (*now)(void))
{
	tls_clock = now ? now : clock_monotonic;
}

static void ticket_keys_free(mbedtls_ssl_ticket_context *k)
{
	if (!k)
		return;
	mbedtls_ssl_ticket_free(k);
	wisp_free(k);
}

/* A fresh AES-256-GCM ticket key from the DRBG, or NULL with the mbed TLS
 * error in *ret. mbed TLS's own lazy rotation inside it (on the wall
 * clock, after `lifetime`) is harmless: we replace it by then. */
static mbedtls_ssl_ticket_context *ticket_keys_new(unsigned lifetime, int *ret)
{
	mbedtls_ssl_ticket_context *k = wisp_malloc(sizeof *k);
	if (!k) {
		*ret = MBEDTLS_ERR_SSL_ALLOC_FAILED;
		return NULL;
	}
	mbedtls_ssl_ticket_init(k);
	*ret = mbedtls_ssl_ticket_setup(k, mbedtls_ctr_drbg_random, &rng_drbg, MBEDTLS_CIPHER_AES_256_GCM,
	                                lifetime);
	if (*ret != 0) {
		ticket_keys_free(k);
		return NULL;
	}
	return k;
}

int tls_ctx_rotate_ticket_keys(struct tls_ctx *c)
{
	if (!c->tickets[0])
		return WISP_EINVAL;
	int ret;
	mbedtls_ssl_ticket_context *k = ticket_keys_new(c->ticket_lifetime, &ret);
	if (!k)
		return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED || ret == MBEDTLS_ERR_CIPHER_ALLOC_FAILED ? WISP_ENOMEM
		                                                                                      : WISP_EIO;
	ticket_keys_free(c->tickets[1]);
	c->tickets[1] = c->tickets[0];
	c->tickets[0] = k;
	c->tickets_born = tls_clock();
	return 0;
}

/* The timer: due once a lifetime has passed since the key was made. Checked
 * whenever a ticket is sealed or opened, the only times a key is used, so
 * no loop timer is needed. If making the new key fails, the old one serves
 * until the next try. */
static void ticket_keys_maybe_rotate(struct tls_ctx *c)
{
	if (tls_clock() - c->tickets_born >= c->ticket_lifetime)
		(void)tls_ctx_rotate_ticket_keys(c);
}

static int ticket_write(void *p, const mbedtls_ssl_session *session, unsigned char *start,
                        const unsigned char *end, size_t *tlen, uint32_t *lifetime)
{
	struct tls_ctx *c = p;
	ticket_keys_maybe_rotate(c);
	return mbedtls_ssl_ticket_write(c->tickets[0], session, start, end, tlen, lifetime);
}

/* A ticket names its key (4 bytes): one sealed under neither the current nor
 * the previous key reads as expired, and the client gets a full handshake.
 * mbed TLS decrypts in place only once it found the named key, so trying
 * the previous key after the current one sees the ticket intact. */
static int ticket_parse(void *p, mbedtls_ssl_session *session, unsigned char *buf, size_t len)
{
	struct tls_ctx *c = p;
	ticket_keys_maybe_rotate(c);
	int ret = mbedtls_ssl_ticket_parse(c->tickets[0], session, buf, len);
	if (ret == MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED && c->tickets[1])
		ret = mbedtls_ssl_ticket_parse(c->tickets[1], session, buf, len);
	return ret;
}

static struct tls_ctx *ctx_alloc(bool is_server)
{
	struct tls_ctx *c = wisp_calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->refs = 1;
	c->is_server = is_server;
	mbedtls_ssl_config_init(&c->conf);
	mbedtls_x509_crt_init(&c->cert);
	mbedtls_pk_init(&c->key);
	mbedtls_x509_crt_init(&c->ca);
	mbedtls_ssl_cache_init(&c->cache);
	list_init(&c->awake);
	return c;
}

static void ctx_free(struct tls_ctx *c)
{
	mbedtls_ssl_config_free(&c->conf);
	mbedtls_x509_crt_free(&c->cert);
	mbedtls_pk_free(&c->key);
	mbedtls_x509_crt_free(&c->ca);
	ticket_keys_free(c->tickets[0]);
	ticket_keys_free(c->tickets[1]);
	mbedtls_ssl_cache_free(&c->cache);
	wisp_free(c->suites);
	wisp_free(c->curves);
	wisp_free(c->hostname);
	wisp_free(c);
}

/* What server and client contexts share: defaults, RNG, versions, suites. */
static int ctx_common(struct tls_ctx *c, const struct tls_opts *o, char *err, size_t errlen)
{
	int rc = parse_min_version(o->min_version, err, errlen);
	if (rc != 0)
		return rc;
	if ((rc = rng_init(err, errlen)) != 0)
		return rc;
	int ret = mbedtls_ssl_config_defaults(&c->conf,
	                                      c->is_server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
	                                      MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
	if (ret != 0) {
		seterr(err, errlen, "tls: (defaults): cannot initialise configuration (-0x%04x)",
		       (unsigned)-ret);
		return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? WISP_ENOMEM : WISP_ECONFIG;
	}
	mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &rng_drbg);
	mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_max_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_cert_profile(&c->conf, &mbedtls_x509_crt_profile_next);
	mbedtls_ssl_conf_renegotiation(&c->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
	if ((rc = build_curves(c, o->curves, err, errlen)) != 0)
		return rc;
	mbedtls_ssl_conf_curves(&c->conf, c->curves ? c->curves : tls_curves);
	if ((rc = build_suites(c, o->ciphersuites, err, errlen)) != 0)
		return rc;
	mbedtls_ssl_conf_ciphersuites(&c->conf, c->suites);
	return 0;
}

/*
 * Server: ticket keys (generated here from the DRBG, rotated by mbed TLS
 * every lifetime) and the session cache. Both are per context, so they
 * never outlive the certificate and CA that the sessions were verified
 * against.
 */
static int setup_resumption(struct tls_ctx *c, const struct tls_opts *o, char *err, size_t errlen)
{
	if (o->session_lifetime == 0 || o->session_lifetime > TLS_SESSION_LIFETIME_MAX)
		return seterr(err, errlen, "session_ticket_lifetime: %u: out of range (1..%u seconds)",
		              o->session_lifetime, TLS_SESSION_LIFETIME_MAX);
	if (o->session_cache_size > INT_MAX)
		return seterr(err, errlen, "session_cache_size: %u: out of range", o->session_cache_size);
	if (o->session_tickets) {
		int ret;
		c->ticket_lifetime = o->session_lifetime;
		c->tickets[0] = ticket_keys_new(o->session_lifetime, &ret);
		c->tickets_born = tls_clock();
		if (!c->tickets[0]) {
			char msg[128];
			mbed_errstr(ret, msg, sizeof msg);
			seterr(err, errlen, "session_tickets: (keys): cannot set up ticket keys: %s", msg);
			return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED || ret == MBEDTLS_ERR_CIPHER_ALLOC_FAILED
			               ? WISP_ENOMEM
			               : WISP_EIO;
		}
		mbedtls_ssl_conf_session_tickets_cb(&c->conf, ticket_write, ticket_parse, c);
	}
	if (o->session_cache_size > 0) {
		mbedtls_ssl_cache_set_max_entries(&c->cache, (int)o->session_cache_size);
		mbedtls_ssl_cache_set_timeout(&c->cache, (int)o->session_lifetime);
		mbedtls_ssl_conf_session_cache(&c->conf, &c->cache, mbedtls_ssl_cache_get, mbedtls_ssl_cache_set);
	}
	return 0;
}

void tls_opts_init(struct tls_opts *o)
{
	memset(o, 0, sizeof *o);
	o->verify_peer = true;
	o->min_version = "tls1.2";
	o->session_tickets = true;
	o->session_lifetime = TLS_SESSION_LIFETIME_DEFAULT;
	o->session_cache_size = TLS_SESSION_CACHE_DEFAULT;
	o->hibernate_after = TLS_HIBERNATE_DEFAULT;
}

int tls_ctx_new_server(const struct tls_opts *o, struct tls_ctx **out, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	*out = NULL;
	if (!o->cert_file || !*o->cert_file)
		return seterr(err, errlen, "cert: (none): a TLS listener needs a certificate");
	if (!o->key_file || !*o->key_file)
		return seterr(err, errlen, "key: (none): a TLS listener needs a private key");
	if (o->require_peer_cert && !o->ca_file && !o->ca_path)
		return seterr(err, errlen, "ca: (none): require_peer_cert needs a CA (ca_file or ca_path) "
		                           "to verify client certificates");
	struct tls_ctx *c = ctx_alloc(true);
	if (!c) {
		seterr(err, errlen, "tls: (context): out of memory");
		return WISP_ENOMEM;
	}
	int rc = ctx_common(c, o, err, errlen);
	if (rc == 0)
		rc = load_identity(c, o, err, errlen);
	if (rc == 0)
		rc = check_suites_fit_key(c, o->ciphersuites, err, errlen);
	if (rc == 0 && (o->ca_file || o->ca_path))
		rc = load_ca(c, o, err, errlen);
	if (rc != 0)
		goto fail;
	if (o->require_peer_cert) {
		c->verifies = true;
		mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
		mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	} else {
		/* Never ask for a certificate we would not verify: an unverified
		 * CN must not become a username. */
		mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
	}
	if ((rc = setup_resumption(c, o, err, errlen)) != 0)
		goto fail;
	if (o->hibernate_after > TLS_HIBERNATE_MAX) {
		rc = seterr(err, errlen, "hibernate_after: %u: out of range (0..%u seconds)", o->hibernate_after,
		            TLS_HIBERNATE_MAX);
		goto fail;
	}
	c->hibernate_after = o->hibernate_after;
	*out = c;
	return 0;
fail:
	ctx_free(c);
	return rc;
}

int tls_ctx_new_client(const struct tls_opts *o, struct tls_ctx **out, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	*out = NULL;
	bool has_cert = o->cert_file && *o->cert_file, has_key = o->key_file && *o->key_file;
	if (has_cert != has_key)
		return seterr(err, errlen, "%s: (none): a client certificate needs both cert and key",
		              has_cert ? "key" : "cert");
	if (o->verify_peer && !o->ca_file && !o->ca_path)
		return seterr(err, errlen, "ca: (none): verifying the server needs a CA (ca_file or "
		                           "ca_path, e.g. /etc/ssl/certs)");
	if (o->verify_peer && !o->insecure && (!o->hostname || !*o->hostname))
		return seterr(err, errlen, "hostname: (none): needed to check the server's certificate "
		                           "(or set insecure)");
	struct tls_ctx *c = ctx_alloc(false);
	if (!c) {
		seterr(err, errlen, "tls: (context): out of memory");
		return WISP_ENOMEM;
	}
	int rc = ctx_common(c, o, err, errlen);
	if (rc == 0 && has_cert)
		rc = load_identity(c, o, err, errlen);
	if (rc == 0 && (o->ca_file || o->ca_path))
		rc = load_ca(c, o, err, errlen);
	if (rc == 0 && o->hostname && *o->hostname) {
		c->hostname = wisp_strndup(o->hostname, strlen(o->hostname));
		if (!c->hostname) {
			seterr(err, errlen, "hostname: %s: out of memory", o->hostname);
			rc = WISP_ENOMEM;
		}
	}
	if (rc != 0)
		goto fail;
	c->insecure = o->insecure;
	if (o->verify_peer) {
		c->verifies = true;
		mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
		mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
		mbedtls_ssl_conf_verify(&c->conf, verify_cb, c);
	} else {
		mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
	}
	*out = c;
	return 0;
fail:
	ctx_free(c);
	return rc;
}

void tls_ctx_ref(struct tls_ctx *c)
{
	c->refs++;
}

void tls_ctx_unref(struct tls_ctx *c)
{
	if (c && --c->refs == 0)
		ctx_free(c);
}

/* ---- per-connection I/O ---- */

static int bio_send(void *p, const unsigned char *buf, size_t len)
{
	struct tls_transport *tt = p;
	if (len > INT_MAX)
		len = INT_MAX;
	for (;;) {
		/* MSG_NOSIGNAL: a peer that vanished must cost an error, not SIGPIPE. */
		ssize_t n = send(tt->base.fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_WRITE;
		tt->last_errno = errno;
		return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
		                                              : MBEDTLS_ERR_NET_SEND_FAILED;
	}
}

/*
 * Reading ahead: mbed TLS reads a record with two receives of exactly the
 * bytes it needs, its 5-byte header and then its body, so a burst of 4 KiB
 * PUBLISHes (a record each, from most clients) cost two recv() calls per
 * message plus the one that finds the socket empty, where plain TCP reads
 * the burst in one. Once the handshake is done, bio_recv reads what mbed
 * TLS asks for in place and, in the same readv(), up to TLS_READ_AHEAD
 * more into the thread's read-ahead buffer, from which the next requests
 * (the following records' headers and bodies) are copied: one system call
 * per socketful. The handshake reads as before, so no application data is
 * ever taken from the socket before a connection is established (the
 * caller would not look for it: epoll reports the socket, not us). With
 * AES-GCM done by libcrypto, tls_read goes further: it reads the socket
 * into the read-ahead itself and opens each whole application-data record
 * from there straight into the caller's buffer (open_direct), so neither
 * the ciphertext nor the plaintext is copied; mbed TLS gets, through
 * bio_recv, only what that does not take (alerts, a record larger than the
 * room left, the tail of a record the socket does not hold yet).
 *
 * The buffer belongs to one tls_read() call: the read-ahead is bounded by
 * the room left in the caller's buffer, so the records it holds normally
 * all fit, and whatever mbed TLS did not take when tls_read returns (the
 * caller's buffer filled first) moves to a block of the connection's own
 * (tt->carry), which the next read serves first and pending() reports. So
 * a connection holds no read-ahead memory between calls but that rare
 * carry; the buffer itself is one per thread (TLS_READ_AHEAD, counted),
 * made on first use and freed when a thread other than the main one exits.
 */
#define TLS_READ_AHEAD (64u * 1024u)

/* An AES-GCM record's bytes besides its plaintext: header, explicit nonce
 * (the sequence number), tag. */
#define TLS_GCM_RECORD_OVERHEAD (5u + 8u + 16u)
/* Records tls_writev seals for one send() (write_batch): four full ones. */
#define TLS_WRITE_BATCH (4u * (TLS_RECORD_LEN + TLS_GCM_RECORD_OVERHEAD))
#define TLS_WRITE_BATCH_RECORDS 32

/* The thread's I/O buffers, made on first use (io_bufs_get). */
struct io_bufs {
	struct tls_transport *owner; /* whose ciphertext buf holds (len > 0) */
	size_t off, len;
	size_t room; /* tls_read: the caller's room left, bounding the read-ahead */
	bool filled; /* tls_read's last read filled what it offered: more may wait */
	unsigned char buf[TLS_READ_AHEAD];
	unsigned char batch[TLS_WRITE_BATCH]; /* write_batch: sealed records */
};

static _Thread_local struct io_bufs *this_ra;
static _Thread_local bool ra_failed;
static pthread_key_t ra_key;
static pthread_once_t ra_key_once = PTHREAD_ONCE_INIT;

static void ra_free(void *p)
{
	wisp_tls_free(p);
}

static void ra_key_make(void)
{
	(void)pthread_key_create(&ra_key, ra_free);
}

/* This thread's read-ahead and write batch buffers, NULL when they could
 * not be had (out of memory): the thread's TLS reads and writes then go
 * record by record, as mbed TLS's own, for the rest of its life. */
static struct io_bufs *io_bufs_get(void)
{
	if (this_ra || ra_failed)
		return this_ra;
	(void)pthread_once(&ra_key_once, ra_key_make);
	struct io_bufs *ra = wisp_tls_calloc(1, sizeof *ra);
	if (!ra) {
		ra_failed = true;
		return NULL;
	}
	this_ra = ra;
	(void)pthread_setspecific(ra_key, ra);
	return ra;
}

/* Copies up to len bytes of src[*off, *off + *avail) to buf. */
static size_t take_ahead(unsigned char *buf, size_t len, const unsigned char *src, size_t *off,
                         size_t *avail)
{
	size_t n = *avail < len ? *avail : len;
	memcpy(buf, src + *off, n);
	*off += n;
	*avail -= n;
	return n;
}

static void put_be16(unsigned char *p, size_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void put_be64(unsigned char *p, uint64_t v)
{
	for (int k = 7; k >= 0; k--, v >>= 8)
		p[k] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int k = 0; k < 8; k++)
		v = v << 8 | p[k];
	return v;
}

/* One readv() of the socket: bytes read (> 0), or mbed TLS's code for EOF,
 * would-block or failure. */
static int sock_readv(struct tls_transport *tt, struct iovec *iov, int iovcnt)
{
	if (tt->handshake_done)
		atomic_fetch_add_explicit(&socket_reads, 1, memory_order_relaxed);
	for (;;) {
		ssize_t n = readv(tt->base.fd, iov, iovcnt);
		if (n > 0)
			return n > INT_MAX ? INT_MAX : (int)n; /* iovecs under 2 GiB: never */
		if (n == 0)
			return MBEDTLS_ERR_SSL_CONN_EOF;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_READ;
		tt->last_errno = errno;
		return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
	}
}

static size_t ahead_room(const struct io_bufs *ra)
{
	return ra->room < TLS_READ_AHEAD ? ra->room : TLS_READ_AHEAD;
}

static int bio_recv(void *p, unsigned char *buf, size_t len)
{
	struct tls_transport *tt = p;
	if (len > INT_MAX)
		len = INT_MAX;
	if (tt->carry) {
		size_t n = take_ahead(buf, len, tt->carry->data, &tt->carry->off, &tt->carry->len);
		if (tt->carry->len == 0) {
			wisp_tls_free(tt->carry);
			tt->carry = NULL;
		}
		return (int)n;
	}
	struct io_bufs *ra = tt->handshake_done ? this_ra : NULL;
	if (ra && ra->len) {
		/* tls_read leaves the buffer empty on return, or carried: the
		 * bytes are this connection's. */
		assert(ra->owner == tt);
		return (int)take_ahead(buf, len, ra->buf, &ra->off, &ra->len);
	}
	struct iovec iov[2] = {{buf, len}, {ra ? ra->buf : NULL, 0}};
	if (ra)
		iov[1].iov_len = ahead_room(ra);
	int n = sock_readv(tt, iov, iov[1].iov_len ? 2 : 1);
	if (ra)
		ra->filled = n > 0 && (size_t)n == len + iov[1].iov_len;
	if (n <= 0 || (size_t)n <= len)
		return n;
	ra->owner = tt;
	ra->off = 0;
	ra->len = (size_t)n - len;
	return (int)len;
}

/* At the end of tls_read: read-ahead mbed TLS did not take moves to the
 * connection's carry, so the thread's buffer is empty for the next call.
 * 0, or WISP_ENOMEM (the bytes are gone from the socket: the connection
 * fails). */
static int settle_read_ahead(struct tls_transport *tt)
{
	struct io_bufs *ra = this_ra;
	if (!ra || ra->len == 0)
		return 0;
	assert(ra->owner == tt && !tt->carry); /* bio_recv fills it only once the carry is gone */
	struct tls_carry *c = wisp_tls_calloc(1, sizeof *c + ra->len);
	if (c) {
		memcpy(c->data, ra->buf + ra->off, ra->len);
		c->len = ra->len;
		tt->carry = c;
		atomic_fetch_add_explicit(&carry_count, 1, memory_order_relaxed);
	}
	ra->len = ra->off = 0;
	ra->owner = NULL;
	if (!c) {
		tt->last_ret = MBEDTLS_ERR_SSL_ALLOC_FAILED;
		tt->failed = true;
		return WISP_ENOMEM;
	}
	return 0;
}

static size_t carried(const struct tls_transport *tt)
{
	return tt->carry ? tt->carry->len : 0;
}

/* mbed TLS returns a high-level code (SSL, X.509, PK...) plus a low-level
 * one (MPI, ECP, cipher...): an allocation failure may hide in either. */
static bool is_alloc_failure(int ret)
{
	static const int codes[] = {
		MBEDTLS_ERR_SSL_ALLOC_FAILED, MBEDTLS_ERR_X509_ALLOC_FAILED, MBEDTLS_ERR_PK_ALLOC_FAILED,
		MBEDTLS_ERR_MPI_ALLOC_FAILED, MBEDTLS_ERR_ECP_ALLOC_FAILED, MBEDTLS_ERR_CIPHER_ALLOC_FAILED,
		MBEDTLS_ERR_MD_ALLOC_FAILED,
	};
	int high = -(-ret & 0xFF80), low = -(-ret & 0x007F);
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
		if (ret == codes[i] || high == codes[i] || low == codes[i])
			return true;
	return false;
}

/* Maps a negative mbed TLS result to a transport result. */
static int map_ret(struct tls_transport *tt, int ret)
{
	switch (ret) {
	case MBEDTLS_ERR_SSL_WANT_READ:
		tt->base.want = TRANSPORT_WANT_READ;
		return WISP_EAGAIN;
	case MBEDTLS_ERR_SSL_WANT_WRITE:
		tt->base.want = TRANSPORT_WANT_WRITE;
		return WISP_EAGAIN;
	case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
		/* Orderly: we may still answer with our own close_notify. */
		tt->last_ret = ret;
		return WISP_ECLOSED;
	case MBEDTLS_ERR_SSL_CONN_EOF:
		tt->last_ret = ret;
		tt->failed = true;
		return WISP_ECLOSED;
	case MBEDTLS_ERR_NET_CONN_RESET:
	case MBEDTLS_ERR_NET_SEND_FAILED:
	case MBEDTLS_ERR_NET_RECV_FAILED:
		tt->last_ret = ret;
		tt->failed = true;
		return WISP_EIO;
	default:
		tt->last_ret = ret;
		tt->failed = true;
		return is_alloc_failure(ret) ? WISP_ENOMEM : WISP_EPROTO;
	}
}

static int refuse(struct tls_transport *tt, const char *why, int rc)
{
	tt->refusal = why;
	tt->failed = true;
	return rc;
}

/* ---- record buffers: their own mappings, not the heap ---- */

/*
 * The two 16 KiB record buffers are mapped, not taken from the heap. Freed
 * heap buffers left holes between the small objects every connection keeps
 * (its transport, session and keys, allocated around them during the
 * handshake), and the partly used pages around those holes stayed resident:
 * an idle hibernated connection measured 4.4-4.9 KiB of RSS for ~2.5 KiB of
 * live objects (bench/README.md). A mapping leaves no hole when unmapped,
 * and pages of it that are never touched (a connection whose records are
 * small uses the first page or two) never become resident at all. Cost:
 * an mmap and a munmap per buffer, per handshake and per wake from
 * hibernation, a few microseconds against a handshake's hundreds.
 * Charged to memory_limit and the heap figures whole (page-rounded).
 */
static size_t record_buf_len(size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	return (len + page - 1) / page * page;
}

static unsigned char *record_buf_alloc(size_t len)
{
	size_t mapped = record_buf_len(len);
	if (wisp_mem_charge(mapped) != 0)
		return NULL;
	void *p = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		wisp_mem_uncharge(mapped);
		return NULL;
	}
	return p;
}

/* No zeroing first: the pages go back to the kernel, which clears them
 * before anyone else sees them, and touching them would make them
 * resident just to drop them. */
static void record_buf_free(unsigned char *p, size_t len)
{
	if (!p)
		return;
	size_t mapped = record_buf_len(len);
	(void)munmap(p, mapped);
	wisp_mem_uncharge(mapped);
}

/* mbedtls_ssl_setup() has just taken its buffers from the heap (calloc:
 * Debian's build offers no hook); mapped ones replace them at once. After
 * this, a context's buffers are mapped or NULL, never from the heap (so
 * unmap_record_buffers() is always right): on failure,
 * MBEDTLS_ERR_SSL_ALLOC_FAILED, they are NULL and the connection fails. */
static int map_record_buffers(mbedtls_ssl_context *ssl)
{
	unsigned char *in = record_buf_alloc(MBEDTLS_SSL_IN_BUFFER_LEN);
	unsigned char *out = in ? record_buf_alloc(MBEDTLS_SSL_OUT_BUFFER_LEN) : NULL;
	if (!out)
		record_buf_free(in, MBEDTLS_SSL_IN_BUFFER_LEN);
	wisp_tls_free(ssl->in_buf);
	wisp_tls_free(ssl->out_buf);
	ssl->in_buf = out ? in : NULL;
	ssl->out_buf = out;
	if (!out)
		return MBEDTLS_ERR_SSL_ALLOC_FAILED;
	mbedtls_ssl_reset_in_out_pointers(ssl);
	return 0;
}

/* Before mbedtls_ssl_free(), which would hand them to free(). */
static void unmap_record_buffers(mbedtls_ssl_context *ssl)
{
	record_buf_free(ssl->in_buf, MBEDTLS_SSL_IN_BUFFER_LEN);
	record_buf_free(ssl->out_buf, MBEDTLS_SSL_OUT_BUFFER_LEN);
	ssl->in_buf = ssl->out_buf = NULL;
}

/* ---- hibernation: idle connections give their record buffers back ---- */

static void sweep(struct loop *l, struct loop_timer *t);

/* A read or write moved bytes: the connection goes to the back of its
 * context's idle order, and the sweep is armed if it was not. */
static void touch(struct tls_transport *tt)
{
	struct tls_ctx *c = tt->ctx;
	if (!hib_loop || !c->hibernate_after || !tt->handshake_done || tt->failed || tt->hibernated)
		return;
	tt->last_active = loop_now_s(hib_loop);
	if (list_linked(&tt->lru))
		list_remove(&tt->lru);
	list_push_back(&c->awake, &tt->lru);
	if (!loop_timer_armed(&c->sweep))
		loop_timer_start(hib_loop, &c->sweep, c->hibernate_after, sweep);
}

static void leave_lru(struct tls_transport *tt)
{
	if (!list_linked(&tt->lru))
		return;
	list_remove(&tt->lru);
	if (list_empty(&tt->ctx->awake) && hib_loop && loop_timer_armed(&tt->ctx->sweep))
		loop_timer_stop(hib_loop, &tt->ctx->sweep);
}

/*
 * mbed TLS 2.28 cannot serialise a TLS (stream) context:
 * mbedtls_ssl_context_save() says "Only DTLS is supported". But between
 * records an established context needs its buffers for nothing except the
 * 8-byte sequence numbers it keeps in them, so we keep those, free the
 * buffers, and on waking allocate them again and let mbed TLS recompute
 * its pointers into them (mbedtls_ssl_reset_in_out_pointers, then the
 * output pointers for the current transform's explicit IV), as its own
 * MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH resizing does.
 */
static int hibernate(struct tls_transport *tt)
{
	mbedtls_ssl_context *ssl = &tt->ssl;
	if (tt->hibernated)
		return 0;
	if (!tt->handshake_done || !tt->is_setup || tt->failed || ssl->state != MBEDTLS_SSL_HANDSHAKE_OVER)
		return WISP_EINVAL;
	/* Nothing half read, half written or decrypted and waiting. */
	if (tt->write_pending || tt->read_error || tt->carry || ssl->in_left || ssl->in_msglen ||
	    ssl->in_offt || ssl->in_hslen || ssl->keep_current_message || ssl->out_left)
		return WISP_EAGAIN;
	memcpy(tt->in_ctr, ssl->in_ctr, sizeof tt->in_ctr);
	memcpy(tt->out_ctr, ssl->out_ctr, sizeof tt->out_ctr);
	unmap_record_buffers(ssl);
	ssl->in_ctr = ssl->in_hdr = ssl->in_len = ssl->in_iv = ssl->in_msg = NULL;
	ssl->out_ctr = ssl->out_hdr = ssl->out_len = ssl->out_iv = ssl->out_msg = NULL;
	tt->hibernated = true;
	hib_count++;
	leave_lru(tt);
	return 0;
}

/* Allocates the buffers again: 0, or WISP_ENOMEM (past memory_limit: the
 * connection fails, as any that cannot get its buffers). */
static int wake(struct tls_transport *tt)
{
	if (!tt->hibernated)
		return 0;
	mbedtls_ssl_context *ssl = &tt->ssl;
	unsigned char *in = record_buf_alloc(MBEDTLS_SSL_IN_BUFFER_LEN);
	unsigned char *out = in ? record_buf_alloc(MBEDTLS_SSL_OUT_BUFFER_LEN) : NULL;
	if (!out) {
		record_buf_free(in, MBEDTLS_SSL_IN_BUFFER_LEN);
		tt->refusal = "out of memory waking from hibernation (memory_limit)";
		return WISP_ENOMEM;
	}
	ssl->in_buf = in;
	ssl->out_buf = out;
	mbedtls_ssl_reset_in_out_pointers(ssl);
	mbedtls_ssl_update_out_pointers(ssl, ssl->transform_out);
	memcpy(ssl->in_ctr, tt->in_ctr, sizeof tt->in_ctr);
	memcpy(ssl->out_ctr, tt->out_ctr, sizeof tt->out_ctr);
	tt->hibernated = false;
	hib_count--;
	touch(tt);
	return 0;
}

/*
 * The context's timer: hibernates the connections idle for hibernate_after,
 * oldest first, and re-arms for the next one due. A busy one (a record half
 * read or written) waits another period. O(connections put to sleep).
 */
static void sweep(struct loop *l, struct loop_timer *t)
{
	struct tls_ctx *c = container_of(t, struct tls_ctx, sweep);
	uint64_t now = loop_now_s(l);
	size_t slept = 0;
	struct list_node *n;
	while ((n = list_first(&c->awake)) != NULL) {
		struct tls_transport *tt = container_of(n, struct tls_transport, lru);
		uint64_t due = tt->last_active + c->hibernate_after;
		if (due > now) {
			loop_timer_start(l, t, due - now, sweep);
			break;
		}
		if (hibernate(tt) == 0) {
			slept++;
		} else {
			tt->last_active = now;
			list_remove(n);
			list_push_back(&c->awake, n);
		}
	}
	/* One line per sweep (at most one a second per listener), never per
	 * connection. The buffers just freed go back to the system now: the
	 * broker's own trim waits for 8 MiB, which the last few hundred
	 * connections of a burst to fall asleep never reach (measured: 6.3
	 * instead of 4.4 KiB of RSS per idle connection). A trim walks the
	 * heap, so it runs at most once per sweep, and only for 16 buffers or
	 * more. */
	if (slept) {
		log_msg(LOG_DEBUG, "tls", "%zu idle connection(s) hibernated, %zu asleep", slept, hib_count);
		wisp_mem_trim(TLS_HIBERNATE_TRIM);
	}
}

void tls_hibernation_attach(struct loop *l)
{
	hib_loop = l;
}

size_t tls_hibernated_count(void)
{
	return hib_count;
}

uint64_t tls_socket_reads(void)
{
	return atomic_load_explicit(&socket_reads, memory_order_relaxed);
}

uint64_t tls_read_carries(void)
{
	return atomic_load_explicit(&carry_count, memory_order_relaxed);
}

uint64_t tls_records_opened_in_place(void)
{
	return atomic_load_explicit(&direct_opens, memory_order_relaxed);
}

uint64_t tls_records_sealed_in_batches(void)
{
	return atomic_load_explicit(&direct_seals, memory_order_relaxed);
}

int tls_transport_hibernate(struct transport *t)
{
	if (!tls_transport_is(t))
		return WISP_EINVAL;
	return hibernate((struct tls_transport *)t);
}

bool tls_transport_hibernated(const struct transport *t)
{
	return tls_transport_is(t) && ((const struct tls_transport *)t)->hibernated;
}

static size_t resident_bytes(const unsigned char *p, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), mapped = record_buf_len(len), n = 0;
	unsigned char vec[64];
	if (!p || mapped / page > sizeof vec || mincore((void *)(uintptr_t)p, mapped, vec) != 0)
		return 0;
	for (size_t i = 0; i < mapped / page; i++)
		n += (vec[i] & 1) ? page : 0;
	return n;
}

void tls_transport_buffer_residency(const struct transport *t, size_t *out_mapped,
                                    size_t *out_resident)
{
	*out_mapped = *out_resident = 0;
	if (!tls_transport_is(t))
		return;
	const mbedtls_ssl_context *ssl = &((const struct tls_transport *)t)->ssl;
	if (ssl->in_buf)
		*out_mapped += record_buf_len(MBEDTLS_SSL_IN_BUFFER_LEN);
	if (ssl->out_buf)
		*out_mapped += record_buf_len(MBEDTLS_SSL_OUT_BUFFER_LEN);
	*out_resident = resident_bytes(ssl->in_buf, MBEDTLS_SSL_IN_BUFFER_LEN) +
	                resident_bytes(ssl->out_buf, MBEDTLS_SSL_OUT_BUFFER_LEN);
}

static void handshake_finished(struct tls_transport *tt)
{
	tt->handshake_done = true;
	touch(tt);
}

/*
 * Allocates the session (mbedtls_ssl_setup) when there is something to run
 * it on. A server waits for the peer's first bytes and checks them without
 * consuming them (MSG_PEEK): EOF, or a first byte that cannot start a TLS
 * handshake record (plaintext MQTT, garbage), ends the connection before
 * anything is allocated. 0 once set up, WISP_EAGAIN (want READ), or an
 * error as the transport's operations return them.
 */
static int ensure_setup(struct tls_transport *tt)
{
	if (tt->is_setup)
		return 0;
	if (tt->failed)
		return WISP_EPROTO;
	if (tt->ctx->is_server) {
		unsigned char hdr[2];
		ssize_t n;
		do
			n = recv(tt->base.fd, hdr, sizeof hdr, MSG_PEEK);
		while (n == -1 && errno == EINTR);
		if (n == 0)
			return refuse(tt, "closed by the peer before the handshake", WISP_ECLOSED);
		if (n == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				tt->base.want = TRANSPORT_WANT_READ;
				return WISP_EAGAIN;
			}
			tt->last_errno = errno;
			return refuse(tt, "receive failed", WISP_EIO);
		}
		if (hdr[0] != TLS_RECORD_HANDSHAKE || (n > 1 && hdr[1] != TLS_RECORD_MAJOR))
			return refuse(tt, "not a TLS handshake record (plaintext or garbage)", WISP_EPROTO);
	}
	if (!wisp_mem_has_room(TLS_MEM_SESSION + TLS_MEM_HANDSHAKE))
		return refuse(tt, "out of memory (memory_limit)", WISP_ENOMEM);
	int ret = mbedtls_ssl_setup(&tt->ssl, &tt->ctx->conf);
	if (ret == 0)
		ret = map_record_buffers(&tt->ssl);
	if (ret == 0 && !tt->ctx->is_server && tt->ctx->hostname)
		ret = mbedtls_ssl_set_hostname(&tt->ssl, tt->ctx->hostname);
	if (ret != 0) {
		tt->last_ret = ret;
		tt->failed = true;
		return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? WISP_ENOMEM : WISP_EPROTO;
	}
	mbedtls_ssl_set_bio(&tt->ssl, tt, bio_send, bio_recv, NULL);
	tt->is_setup = true;
	return 0;
}

/*
 * mbedtls_ssl_handshake(), one step at a time, to see whether it was
 * resumed: 2.28 has no API for it, and only a full handshake passes the
 * SERVER_CERTIFICATE state (the server sends its certificate, the client
 * reads it); an abbreviated one goes from ServerHello to ChangeCipherSpec.
 * Returns 0 or a negative mbed TLS error.
 */
static int run_handshake(struct tls_transport *tt)
{
	while (tt->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
		if (tt->ssl.state == MBEDTLS_SSL_SERVER_CERTIFICATE)
			tt->full_handshake = true;
		int ret = mbedtls_ssl_handshake_step(&tt->ssl);
		if (ret != 0)
			return ret;
	}
	handshake_finished(tt);
	return 0;
}

static int tls_handshake(struct transport *t)
{
	struct tls_transport *tt = (struct tls_transport *)t;
	if (tt->handshake_done)
		return 0;
	if (tt->failed)
		return WISP_EPROTO;
	int rc = ensure_setup(tt);
	if (rc != 0)
		return rc;
	int ret = run_handshake(tt);
	return ret != 0 ? map_ret(tt, ret) : 0;
}

/* Where the read-ahead's first record ends (from off): its header's
 * length, or 5 while the header is incomplete; at most the buffer. */
static size_t record_end(const struct io_bufs *ra)
{
	const unsigned char *h = ra->buf + ra->off;
	size_t end = ra->len < 5 ? 5 : 5 + ((size_t)h[3] << 8 | h[4]);
	return end < TLS_READ_AHEAD ? end : TLS_READ_AHEAD;
}

/* Whether the read-ahead ends inside its first record (or header). */
static bool record_cut(const struct io_bufs *ra)
{
	return ra->len < record_end(ra);
}

/* Whether open_direct may take this connection's next records: TLS 1.2
 * AES-GCM as mbed TLS 2.28 sets it up, and mbed TLS holding no record,
 * half read or half returned, and nothing carried. */
static bool can_open_direct(const struct tls_transport *tt)
{
#ifdef WISP_TLS_LIBCRYPTO
	const mbedtls_ssl_context *ssl = &tt->ssl;
	const mbedtls_ssl_transform *tr = ssl->transform_in;
	return tls_gcm_is_fast() && tr && tr == ssl->transform && tr->cipher_ctx_dec.cipher_info &&
	       tr->cipher_ctx_dec.cipher_info->mode == MBEDTLS_MODE_GCM && tr->maclen == 0 &&
	       tr->ivlen == 12 && tr->fixed_ivlen == 4 && tr->taglen == 16 &&
	       tr->minor_ver == MBEDTLS_SSL_MINOR_VERSION_3 && ssl->in_left == 0 &&
	       ssl->in_msglen == 0 && ssl->in_offt == NULL && ssl->in_hslen == 0 &&
	       !ssl->keep_current_message && !tt->carry && ssl->in_ctr != NULL;
#else
	(void)tt;
	return false;
#endif
}

#ifdef WISP_TLS_LIBCRYPTO
/*
 * The next record of the read-ahead opened straight into the caller's
 * buffer: mbed TLS would copy it into its input record (the ciphertext),
 * open it there and copy the plaintext out, two copies of every byte. Only
 * a whole application-data record of the negotiated version, non-empty and
 * no longer than the room left, is taken; anything else (an alert, a
 * handshake message, a record not all read yet, an empty one, a malformed
 * header) is left where it is for mbed TLS, which reads it through bio_recv
 * and handles it as it always has. What is checked and counted is what
 * mbed TLS's ssl_decrypt_buf() and ssl_prepare_record_content() do for
 * such a record: nonce = salt || explicit nonce, additional data = the
 * expected sequence number || type || version || plaintext length
 * (RFC 5288, 5246 6.2.3.3), the tag checked in constant time; then the
 * sequence number counts it and the run of empty records ends.
 *
 * Returns the plaintext length (> 0), 0 when the record is mbed TLS's, or
 * MBEDTLS_ERR_SSL_INVALID_MAC for a forged or corrupt record (fatal, with
 * a bad_record_mac alert, as mbed TLS does).
 */
static int open_direct(struct tls_transport *tt, struct io_bufs *ra, unsigned char *out,
                       size_t room)
{
	mbedtls_ssl_context *ssl = &tt->ssl;
	mbedtls_ssl_transform *tr = ssl->transform_in;
	const unsigned char *h = ra->buf + ra->off;
	if (ra->owner != tt || ra->len < 5 || h[0] != MBEDTLS_SSL_MSG_APPLICATION_DATA)
		return 0;
	unsigned char ver[2];
	mbedtls_ssl_write_version(ssl->major_ver, ssl->minor_ver, ssl->conf->transport, ver);
	size_t clen = (size_t)h[3] << 8 | h[4];
	if (h[1] != ver[0] || h[2] != ver[1] || clen <= TLS_GCM_RECORD_OVERHEAD - 5 ||
	    clen > MBEDTLS_SSL_IN_CONTENT_LEN + TLS_GCM_RECORD_OVERHEAD - 5 || ra->len < 5 + clen)
		return 0;
	size_t n = clen - (TLS_GCM_RECORD_OVERHEAD - 5);
	uint64_t seq = get_be64(ssl->in_ctr);
	if (n > room || seq == UINT64_MAX)
		return 0;
	unsigned char nonce[12], add[13];
	memcpy(nonce, tr->iv_dec, 4);
	memcpy(nonce + 4, h + 5, 8);
	memcpy(add, ssl->in_ctr, 8);
	add[8] = MBEDTLS_SSL_MSG_APPLICATION_DATA;
	add[9] = ver[0];
	add[10] = ver[1];
	put_be16(add + 11, n);
	int ret = wisp_gcm_auth_decrypt(tr->cipher_ctx_dec.cipher_ctx, n, nonce, sizeof nonce, add,
	                                sizeof add, h + 13 + n, 16, h + 13, out);
	if (ret != 0) {
		(void)mbedtls_ssl_send_alert_message(ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
		                                     MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC);
		return MBEDTLS_ERR_SSL_INVALID_MAC;
	}
	put_be64(ssl->in_ctr, seq + 1);
	ssl->nb_zero = 0;
	atomic_fetch_add_explicit(&direct_opens, 1, memory_order_relaxed);
	ra->off += 5 + clen;
	ra->len -= 5 + clen;
	return (int)n;
}
#endif

/*
 * Reads every decrypted record there is, up to len: mbedtls_ssl_read()
 * returns at most one record per call, and a caller that took a short
 * result for "drained" would leave the rest of the socket for the next
 * loop turn. Stops at WANT_READ/WANT_WRITE (returning what it has, with
 * `want` set: nothing is pending then) or at an error, which a call that
 * already has bytes keeps for the next call.
 */
static ssize_t tls_read(struct transport *t, void *buf, size_t len)
{
	struct tls_transport *tt = (struct tls_transport *)t;
	t->want = 0;
	if (tt->read_error)
		return tt->read_error;
	if (tt->failed)
		return WISP_EIO;
	if (len == 0)
		return 0;
	int rc = ensure_setup(tt);
	if (rc != 0)
		return rc;
	if (!tt->handshake_done) {
		int ret = run_handshake(tt);
		if (ret != 0)
			return map_ret(tt, ret);
	}
	if ((rc = wake(tt)) != 0)
		return rc;
	unsigned char *p = buf;
	size_t got = 0;
	struct io_bufs *ra = io_bufs_get();
	while (got < len) {
		size_t ask = len - got > INT_MAX ? INT_MAX : len - got;
		int ret = 0;
		if (ra)
			ra->room = len - got;
#ifdef WISP_TLS_LIBCRYPTO
		if (ra && can_open_direct(tt)) {
			if (ra->len == 0 || (ra->filled && record_cut(ra))) {
				/* Nothing read ahead, or a read that filled the buffer
				 * cut the last record: read the socket here (behind
				 * that record's start, moved to the front), so that its
				 * records open straight into buf as well. A record cut
				 * by a read that drained the socket is mbed TLS's to
				 * wait for. */
				memmove(ra->buf, ra->buf + ra->off, ra->len);
				ra->off = 0;
				size_t want = ahead_room(ra);
				if (want < record_end(ra))
					want = record_end(ra);
				struct iovec iov = {ra->buf + ra->len, want - ra->len};
				ret = sock_readv(tt, &iov, 1);
				ra->filled = ret > 0 && (size_t)ret == iov.iov_len;
				if (ret > 0) {
					ra->owner = tt;
					ra->len += (size_t)ret;
					ret = 0;
				} else if (ret == MBEDTLS_ERR_SSL_WANT_READ && ra->len) {
					ret = 0; /* the cut record goes to mbed TLS, which waits */
				}
			}
			if (ret == 0)
				ret = open_direct(tt, ra, p + got, ask);
		}
#endif
		if (ret == 0)
			ret = mbedtls_ssl_read(&tt->ssl, p + got, ask);
		if (ret > 0) {
			got += (size_t)ret;
			continue;
		}
		rc = ret == 0 ? WISP_ECLOSED : map_ret(tt, ret);
		if (got == 0) {
			/* Read ahead before a would-block (mbed TLS had an alert
			 * to send) is kept; before a failure it only waits for
			 * close. */
			int kept = settle_read_ahead(tt);
			return kept != 0 && rc == WISP_EAGAIN ? kept : rc;
		}
		if (rc != WISP_EAGAIN)
			tt->read_error = rc; /* want stays 0: call again to see it */
		break;
	}
	if ((rc = settle_read_ahead(tt)) != 0 && got == 0)
		return rc;
	if (rc != 0)
		tt->read_error = rc;
	touch(tt);
	return (ssize_t)got;
}

/* Moves the position `*skip` bytes into iov[*i] on by n bytes. */
static void iov_advance(const struct iovec *iov, int *i, size_t *skip, size_t n)
{
	while (n) {
		size_t avail = iov[*i].iov_len - *skip;
		if (n < avail) {
			*skip += n;
			return;
		}
		n -= avail;
		++*i;
		*skip = 0;
	}
}

/* Copies n bytes from the iovecs, starting `skip` bytes into iov[i], to out. */
static void stage_copy(unsigned char *out, size_t n, const struct iovec *iov, int i, size_t skip)
{
	size_t off = 0;
	for (; off < n; i++, skip = 0) {
		size_t avail = iov[i].iov_len - skip;
		size_t take = avail < n - off ? avail : n - off;
		memcpy(out + off, (const unsigned char *)iov[i].iov_base + skip, take);
		off += take;
	}
}

/*
 * One application-data record of the n bytes that start `skip` bytes into
 * iov[i]: what mbedtls_ssl_write() does after its checks (ssl_write_real()
 * in 2.28's ssl_msg.c), except that the bytes are gathered from the iovecs
 * straight into mbed TLS's output record buffer, where
 * mbedtls_ssl_write_record() seals them in place and sends the record.
 * mbedtls_ssl_write() would take one contiguous buffer and memcpy it there:
 * small pieces then cost two copies (into a staging buffer, then into the
 * record), now one. The checks it would make hold on every call: the
 * handshake is over (tls_writev runs after it), renegotiation is disabled
 * in every configuration (build_config), TLS 1.2 only (no 1/n-1 record
 * splitting), and n <= mbedtls_ssl_get_max_out_record_payload().
 * Returns n, or mbed TLS's error. After WANT_WRITE the record is sealed
 * and partly sent (out_left); the next call flushes it without reading the
 * iovecs and returns the same n, as mbedtls_ssl_write() does.
 */
static int write_record(mbedtls_ssl_context *ssl, const struct iovec *iov, int i, size_t skip,
                        size_t n)
{
	int ret;
	if (ssl->out_left != 0) {
		ret = mbedtls_ssl_flush_output(ssl);
	} else {
		stage_copy(ssl->out_msg, n, iov, i, skip);
		ssl->out_msglen = n;
		ssl->out_msgtype = MBEDTLS_SSL_MSG_APPLICATION_DATA;
		ret = mbedtls_ssl_write_record(ssl, 1); /* force the flush */
	}
	return ret != 0 ? ret : (int)n;
}

/* Whether write_batch may seal this connection's next records itself:
 * TLS 1.2 AES-GCM (RFC 5288) set up as mbed TLS 2.28 sets it, libcrypto
 * doing AES-GCM here, and no record of mbed TLS's half sent. */
static bool can_seal_direct(const struct tls_transport *tt)
{
#ifdef WISP_TLS_LIBCRYPTO
	const mbedtls_ssl_context *ssl = &tt->ssl;
	const mbedtls_ssl_transform *tr = ssl->transform_out;
	return tls_gcm_is_fast() && tr && tr == ssl->transform && tr->cipher_ctx_enc.cipher_info &&
	       tr->cipher_ctx_enc.cipher_info->mode == MBEDTLS_MODE_GCM && tr->maclen == 0 &&
	       tr->ivlen == 12 && tr->fixed_ivlen == 4 && tr->taglen == 16 &&
	       tr->minor_ver == MBEDTLS_SSL_MINOR_VERSION_3 && ssl->out_left == 0 &&
	       tt->write_pending == 0;
#else
	(void)tt;
	return false;
#endif
}

#ifdef WISP_TLS_LIBCRYPTO
/*
 * Several application-data records sealed side by side into the thread's
 * batch buffer and sent with one send(): mbed TLS seals one record in its
 * output buffer and sends it (a system call, and the kernel's loopback or
 * TCP transmit work, per 16 KiB), after a copy of the plaintext into that
 * buffer. Here libcrypto reads the plaintext where it is (the messages'
 * payloads, tls_gcm_seal_iov), so a record costs no staging copy, and up
 * to four full records leave in one system call. The records are what
 * mbed TLS's ssl_encrypt_buf() makes for TLS 1.2 AES-GCM (RFC 5288 and
 * 5246 6.2.3.3): nonce = the 4-byte salt || the 8-byte sequence number,
 * which is also the explicit nonce sent; additional data = sequence number
 * || type || version || plaintext length; ciphertext || 16-byte tag. The
 * peer's mbed TLS or OpenSSL checks every one of them (the unit and e2e
 * tests read them with both).
 *
 * A partial send: the records it carried whole are written; the one it
 * cut is left to mbed TLS as a record half sent (its tail copied to the
 * output buffer, out_left and write_pending set, exactly the state
 * mbedtls_ssl_write() leaves after WANT_WRITE, so the next call flushes
 * it); the records after it never left the process, so they are dropped
 * and their sequence numbers used again for the next records. No
 * ciphertext under a nonce is ever sent twice or for two plaintexts. After
 * a cut, batches hold one record each until one goes whole, so a full
 * socket (a slow subscriber) costs no more sealing than mbed TLS's record
 * per call.
 *
 * Returns the plaintext bytes taken (> 0), 0 when it did not start (the
 * caller goes through mbed TLS: nothing was sealed), or a negative mbed
 * TLS error (MBEDTLS_ERR_SSL_WANT_WRITE: nothing taken, `want` to set).
 */
static ssize_t write_batch(struct tls_transport *tt, const struct iovec *iov, int i, size_t skip,
                           size_t total, size_t record)
{
	struct io_bufs *b = io_bufs_get();
	if (!b)
		return 0;
	mbedtls_ssl_context *ssl = &tt->ssl;
	mbedtls_ssl_transform *tr = ssl->transform_out;
	unsigned char ver[2];
	mbedtls_ssl_write_version(ssl->major_ver, ssl->minor_ver, ssl->conf->transport, ver);
	uint64_t seq0 = get_be64(ssl->cur_out_ctr);
	size_t ends[TLS_WRITE_BATCH_RECORDS], plains[TLS_WRITE_BATCH_RECORDS];
	size_t used = 0, done = 0;
	int nrec = 0;
	/* After a cut, a record at a time until one goes whole: a full socket
	 * would otherwise make every call seal records it then drops. */
	int max_rec = tt->batch_cut ? 1 : TLS_WRITE_BATCH_RECORDS;
	while (done < total && nrec < max_rec) {
		while (skip == iov[i].iov_len) {
			i++;
			skip = 0;
		}
		size_t n = total - done < record ? total - done : record;
		uint64_t seq = seq0 + (uint64_t)nrec;
		/* The last sequence number is mbed TLS's to refuse. */
		if (used + TLS_GCM_RECORD_OVERHEAD + n > TLS_WRITE_BATCH || seq == UINT64_MAX)
			break;
		unsigned char *h = b->batch + used, nonce[12], add[13];
		h[0] = MBEDTLS_SSL_MSG_APPLICATION_DATA;
		h[1] = ver[0];
		h[2] = ver[1];
		put_be16(h + 3, 8 + n + 16);
		put_be64(h + 5, seq);
		memcpy(nonce, tr->iv_enc, 4);
		put_be64(nonce + 4, seq);
		put_be64(add, seq);
		add[8] = MBEDTLS_SSL_MSG_APPLICATION_DATA;
		add[9] = ver[0];
		add[10] = ver[1];
		put_be16(add + 11, n);
		int rc = tls_gcm_seal_iov(tr->cipher_ctx_enc.cipher_ctx, nonce, add, sizeof add, iov, i,
		                          skip, n, h + 13, h + 13 + n);
		if (rc == 1)
			break; /* not libcrypto's: what is sealed goes, mbed TLS does the rest */
		if (rc != 0)
			return rc;
		atomic_fetch_add_explicit(&direct_seals, 1, memory_order_relaxed);
		used += TLS_GCM_RECORD_OVERHEAD + n;
		done += n;
		ends[nrec] = used;
		plains[nrec] = n;
		nrec++;
		iov_advance(iov, &i, &skip, n);
	}
	if (nrec == 0)
		return 0;
	ssize_t sent;
	do
		sent = send(tt->base.fd, b->batch, used, MSG_NOSIGNAL);
	while (sent == -1 && errno == EINTR);
	if (sent == -1) {
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			tt->last_errno = errno;
			return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
			                                              : MBEDTLS_ERR_NET_SEND_FAILED;
		}
		sent = 0;
	}
	tt->batch_cut = (size_t)sent < used;
	if ((size_t)sent == used) {
		put_be64(ssl->cur_out_ctr, seq0 + (uint64_t)nrec);
		return (ssize_t)done;
	}
	/* Cut short: whole records first, then the one cut, if any. */
	int k = 0;
	size_t taken = 0, start = 0;
	while ((size_t)sent >= ends[k]) {
		taken += plains[k];
		start = ends[k];
		k++;
	}
	uint64_t next = seq0 + (uint64_t)k;
	if ((size_t)sent > start) {
		size_t rest = ends[k] - (size_t)sent;
		memcpy(ssl->out_hdr, b->batch + sent, rest);
		ssl->out_left = rest;
		ssl->out_hdr += rest;
		mbedtls_ssl_update_out_pointers(ssl, tr);
		tt->write_pending = plains[k];
		next++;
	}
	put_be64(ssl->cur_out_ctr, next);
	tt->base.want = TRANSPORT_WANT_WRITE;
	return taken ? (ssize_t)taken : MBEDTLS_ERR_SSL_WANT_WRITE;
}
#endif

/*
 * Writes record after record until every byte is taken or the socket is
 * full (WANT_WRITE: then the bytes already taken are returned, with `want`
 * set, or WISP_EAGAIN if none). Each record carries up to the maximum
 * fragment: small pieces (many MQTT packets) share one record, as many
 * share one writev on TCP; each record's bytes are copied once, from the
 * iovecs into mbed TLS's record buffer (write_record). mbed TLS writes one
 * record per send(), so a burst costs one syscall per 16 KiB.
 */
static ssize_t tls_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
	struct tls_transport *tt = (struct tls_transport *)t;
	t->want = 0;
	if (tt->failed)
		return WISP_EIO;
	size_t total = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SIZE_MAX - total)
			return WISP_EINVAL;
		total += iov[i].iov_len;
	}
	int rc = ensure_setup(tt);
	if (rc != 0)
		return rc;
	if (total == 0)
		return 0;
	if (!tt->handshake_done) {
		int ret = run_handshake(tt);
		if (ret != 0)
			return map_ret(tt, ret);
	}
	if ((rc = wake(tt)) != 0)
		return rc;
	/* mbed TLS's retry rule: same data, same length as the call that
	 * returned WANT_WRITE; the caller promised the same bytes lead iov. */
	if (tt->write_pending && total < tt->write_pending)
		return WISP_EINVAL;
	int max = mbedtls_ssl_get_max_out_record_payload(&tt->ssl);
	if (max <= 0)
		return max < 0 ? map_ret(tt, max) : WISP_EIO;
	size_t record = (size_t)max < TLS_RECORD_LEN ? (size_t)max : TLS_RECORD_LEN;
	size_t done = 0, skip = 0; /* position: `skip` bytes into iov[i] */
	int i = 0;
#ifdef WISP_TLS_LIBCRYPTO
	/* Batch after batch of records sealed by libcrypto (write_batch), until
	 * all is taken or the socket is full; what it does not take (another
	 * cipher, libcrypto out of order) goes record by record below. */
	while (done < total && can_seal_direct(tt)) {
		ssize_t w = write_batch(tt, iov, i, skip, total - done, record);
		if (w == 0)
			break;
		if (w < 0) {
			rc = map_ret(tt, (int)w);
			if (done == 0)
				return rc;
			if (rc != WISP_EAGAIN)
				t->want = 0; /* the next call fails (tt->failed) */
			touch(tt);
			return (ssize_t)done;
		}
		done += (size_t)w;
		iov_advance(iov, &i, &skip, (size_t)w);
		if (t->want) { /* the socket is full */
			touch(tt);
			return (ssize_t)done;
		}
	}
#endif
	while (done < total) {
		while (skip == iov[i].iov_len) {
			i++;
			skip = 0;
		}
		size_t n = tt->write_pending ? tt->write_pending : total - done;
		if (n > record)
			n = record;
		int ret = write_record(&tt->ssl, iov, i, skip, n);
		if (ret < 0) {
			if (ret == MBEDTLS_ERR_SSL_WANT_WRITE || ret == MBEDTLS_ERR_SSL_WANT_READ)
				tt->write_pending = n;
			rc = map_ret(tt, ret);
			/* A fatal error after some records: report the bytes; the
			 * next call fails (tt->failed). */
			if (done == 0)
				return rc;
			if (rc != WISP_EAGAIN)
				t->want = 0;
			break;
		}
		tt->write_pending = 0;
		/* mbed TLS takes at most one record: ret <= n. */
		done += (size_t)ret;
		iov_advance(iov, &i, &skip, (size_t)ret);
	}
	touch(tt);
	return (ssize_t)done;
}

static size_t tls_pending(struct transport *t)
{
	struct tls_transport *tt = (struct tls_transport *)t;
	return tt->is_setup ? mbedtls_ssl_get_bytes_avail(&tt->ssl) + carried(tt) : 0;
}

static void tls_close(struct transport *t)
{
	struct tls_transport *tt = (struct tls_transport *)t;
	/* Best effort: on a full socket buffer the peer just sees EOF, which
	 * MQTT tolerates (it has its own DISCONNECT). */
	if (tt->handshake_done && !tt->failed && wake(tt) == 0)
		(void)mbedtls_ssl_close_notify(&tt->ssl);
	if (tt->hibernated)
		hib_count--;
	leave_lru(tt);
	if (!tt->hibernated)
		unmap_record_buffers(&tt->ssl);
#ifdef WISP_TLS_LIBCRYPTO
	/* The thread's libcrypto contexts may hold this connection's keys. */
	if (tt->ssl.transform) {
		tls_gcm_forget(tt->ssl.transform->cipher_ctx_enc.cipher_ctx);
		tls_gcm_forget(tt->ssl.transform->cipher_ctx_dec.cipher_ctx);
	}
#endif
	mbedtls_ssl_free(&tt->ssl);
	wisp_tls_free(tt->carry);
	if (t->fd >= 0)
		close(t->fd);
	tls_ctx_unref(tt->ctx);
	wisp_free(tt);
}

static int tls_peer_info(struct transport *t, struct transport_peer_info *out)
{
	int rc = tls_transport_peer_cn(t, out->identity, sizeof out->identity);
	if (rc == 0)
		return 0;
	out->identity[0] = '\0';
	return rc == WISP_ENOENT ? 0 : WISP_EPROTO;
}

static const struct transport_ops tls_ops = {
	.name = "tls",
	.handshake = tls_handshake,
	.read = tls_read,
	.writev = tls_writev,
	.pending = tls_pending,
	.peer_info = tls_peer_info,
	.last_error = tls_transport_last_error,
	.close = tls_close,
};

struct transport *tls_transport_new(struct tls_ctx *c, int fd)
{
	struct tls_transport *tt = wisp_calloc(1, sizeof *tt);
	if (!tt) {
		close(fd);
		return NULL;
	}
	tt->base.ops = &tls_ops;
	tt->base.fd = fd;
	/* No allocation: ensure_setup() pays for the session when it starts. */
	mbedtls_ssl_init(&tt->ssl);
	tls_ctx_ref(c);
	tt->ctx = c;
	return &tt->base;
}

bool tls_transport_is(const struct transport *t)
{
	return t && t->ops == &tls_ops;
}

int tls_transport_peer_cn(struct transport *t, char *buf, size_t len)
{
	if (!tls_transport_is(t))
		return WISP_EINVAL;
	struct tls_transport *tt = (struct tls_transport *)t;
	if (!tt->handshake_done)
		return WISP_ENOENT;
	const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&tt->ssl);
	/* Only a verified certificate is an identity: under VERIFY_NONE a
	 * client still receives the server's certificate, unchecked. */
	if (!tt->ctx->verifies || !crt || mbedtls_ssl_get_verify_result(&tt->ssl) != 0)
		return WISP_ENOENT;
	for (const mbedtls_x509_name *n = &crt->subject; n; n = n->next) {
		if (!n->oid.p || MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) != 0)
			continue;
		if (memchr(n->val.p, '\0', n->val.len))
			return WISP_EPROTO;
		if (n->val.len >= len)
			return WISP_ELIMIT;
		memcpy(buf, n->val.p, n->val.len);
		buf[n->val.len] = '\0';
		return 0;
	}
	return WISP_ENOENT;
}

bool tls_transport_resumed(const struct transport *t)
{
	if (!tls_transport_is(t))
		return false;
	const struct tls_transport *tt = (const struct tls_transport *)t;
	return tt->handshake_done && !tt->full_handshake;
}

bool tls_ciphersuite_supported(const char *name)
{
	char buf[96];
	size_t len = strlen(name);
	if (len == 0 || len >= sizeof buf)
		return false;
	for (size_t i = 0; i <= len; i++)
		buf[i] = name[i] == '_' ? '-' : name[i];
	return mbedtls_ssl_get_ciphersuite_id(buf) != 0;
}

bool tls_transport_cert_rejected(const struct transport *t)
{
	if (!tls_transport_is(t))
		return false;
	const struct tls_transport *tt = (const struct tls_transport *)t;
	uint32_t flags = mbedtls_ssl_get_verify_result(&tt->ssl);
	return tt->last_ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED ||
	       (flags != 0 && flags != UINT32_MAX && !(flags & MBEDTLS_X509_BADCERT_SKIP_VERIFY));
}

const char *tls_transport_ciphersuite(const struct transport *t)
{
	if (!tls_transport_is(t))
		return NULL;
	const struct tls_transport *tt = (const struct tls_transport *)t;
	return tt->handshake_done ? mbedtls_ssl_get_ciphersuite(&tt->ssl) : NULL;
}

int tls_transport_save_session(struct transport *t, struct tls_session **out)
{
	*out = NULL;
	if (!tls_transport_is(t))
		return WISP_EINVAL;
	struct tls_transport *tt = (struct tls_transport *)t;
	if (tt->ctx->is_server || !tt->handshake_done)
		return WISP_EINVAL;
	struct tls_session *s = wisp_malloc(sizeof *s);
	if (!s)
		return WISP_ENOMEM;
	mbedtls_ssl_session_init(&s->s);
	int ret = mbedtls_ssl_get_session(&tt->ssl, &s->s);
	if (ret != 0) {
		tls_session_free(s);
		return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? WISP_ENOMEM : WISP_EPROTO;
	}
	*out = s;
	return 0;
}

int tls_transport_set_session(struct transport *t, const struct tls_session *s)
{
	if (!tls_transport_is(t) || !s)
		return WISP_EINVAL;
	struct tls_transport *tt = (struct tls_transport *)t;
	if (tt->ctx->is_server || tt->handshake_done ||
	    (tt->is_setup && tt->ssl.state != MBEDTLS_SSL_HELLO_REQUEST))
		return WISP_EINVAL;
	int rc = ensure_setup(tt); /* a client's reads nothing */
	if (rc != 0)
		return rc;
	int ret = mbedtls_ssl_set_session(&tt->ssl, &s->s);
	if (ret != 0)
		return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? WISP_ENOMEM : WISP_EPROTO;
	return 0;
}

void tls_session_free(struct tls_session *s)
{
	if (!s)
		return;
	mbedtls_ssl_session_free(&s->s);
	wisp_free(s);
}

void tls_transport_last_error(const struct transport *t, char *buf, size_t len)
{
	if (!buf || len == 0)
		return;
	buf[0] = '\0';
	if (!tls_transport_is(t))
		return;
	const struct tls_transport *tt = (const struct tls_transport *)t;
	size_t off = 0;
	if (tt->refusal) {
		int w = snprintf(buf, len, "%s", tt->refusal);
		off = w < 0 ? 0 : (size_t)w;
	}
	if (tt->last_ret && off < len) {
		char msg[200];
		mbed_errstr(tt->last_ret, msg, sizeof msg);
		int w = snprintf(buf + off, len - off, "%s%s", off ? ": " : "", msg);
		off += w < 0 ? 0 : (size_t)w;
	}
	if (tt->last_errno && off < len) {
		int w = snprintf(buf + off, len - off, "%s%s", off ? ": " : "", strerror(tt->last_errno));
		off += w < 0 ? 0 : (size_t)w;
	}
	uint32_t flags = mbedtls_ssl_get_verify_result(&tt->ssl);
	if (flags != 0 && flags != UINT32_MAX && !(flags & MBEDTLS_X509_BADCERT_SKIP_VERIFY) && off < len) {
		char info[256];
		int w = mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
		if (w > 0) {
			/* One log line: the info is newline-separated. */
			for (char *q = info; *q; q++)
				if (*q == '\n')
					*q = ';';
			size_t l = strlen(info);
			if (l && info[l - 1] == ';')
				info[l - 1] = '\0';
			snprintf(buf + off, len - off, "%scertificate: %s", off ? "; " : "", info);
		}
	}
}

#else /* !WISP_TLS_MBEDTLS: built without TLS, every constructor fails. */

#include <unistd.h>

bool tls_default_prefers_gcm(void)
{
	return false;
}

static int no_tls(char *err, size_t errlen)
{
	if (err && errlen) {
		strncpy(err, "tls: (build): TLS support not built (WISP_WITH_TLS=OFF)", errlen - 1);
		err[errlen - 1] = '\0';
	}
	return WISP_ECONFIG;
}

void tls_opts_init(struct tls_opts *o)
{
	memset(o, 0, sizeof *o);
	o->verify_peer = true;
	o->min_version = "tls1.2";
	o->session_tickets = true;
	o->session_lifetime = TLS_SESSION_LIFETIME_DEFAULT;
	o->session_cache_size = TLS_SESSION_CACHE_DEFAULT;
	o->hibernate_after = TLS_HIBERNATE_DEFAULT;
}

int tls_ctx_new_server(const struct tls_opts *o, struct tls_ctx **out, char *err, size_t errlen)
{
	(void)o;
	*out = NULL;
	return no_tls(err, errlen);
}

int tls_ctx_new_client(const struct tls_opts *o, struct tls_ctx **out, char *err, size_t errlen)
{
	(void)o;
	*out = NULL;
	return no_tls(err, errlen);
}

void tls_ctx_ref(struct tls_ctx *c) { (void)c; }

int tls_ctx_rotate_ticket_keys(struct tls_ctx *c)
{
	(void)c;
	return WISP_EINVAL;
}

void tls_set_clock(uint64_t (*now)(void)) { (void)now; }
void tls_ctx_unref(struct tls_ctx *c) { (void)c; }

struct transport *tls_transport_new(struct tls_ctx *c, int fd)
{
	(void)c;
	close(fd); /* takes fd, as the real one does */
	return NULL;
}

bool tls_transport_is(const struct transport *t)
{
	(void)t;
	return false;
}

int tls_transport_peer_cn(struct transport *t, char *buf, size_t len)
{
	(void)t;
	(void)buf;
	(void)len;
	return WISP_EINVAL;
}

void tls_transport_last_error(const struct transport *t, char *buf, size_t len)
{
	(void)t;
	if (buf && len)
		buf[0] = '\0';
}

bool tls_transport_resumed(const struct transport *t)
{
	(void)t;
	return false;
}

void tls_hibernation_attach(struct loop *l) { (void)l; }
size_t tls_hibernated_count(void) { return 0; }
uint64_t tls_socket_reads(void) { return 0; }
uint64_t tls_read_carries(void) { return 0; }
uint64_t tls_records_opened_in_place(void) { return 0; }
uint64_t tls_records_sealed_in_batches(void) { return 0; }

int tls_transport_hibernate(struct transport *t)
{
	(void)t;
	return WISP_EINVAL;
}

bool tls_transport_hibernated(const struct transport *t)
{
	(void)t;
	return false;
}

void tls_transport_buffer_residency(const struct transport *t, size_t *out_mapped,
                                    size_t *out_resident)
{
	(void)t;
	*out_mapped = *out_resident = 0;
}

bool tls_ciphersuite_supported(const char *name)
{
	(void)name;
	return false;
}

bool tls_transport_cert_rejected(const struct transport *t)
{
	(void)t;
	return false;
}

const char *tls_transport_ciphersuite(const struct transport *t)
{
	(void)t;
	return NULL;
}

int tls_transport_save_session(struct transport *t, struct tls_session **out)
{
	(void)t;
	*out = NULL;
	return WISP_EINVAL;
}

int tls_transport_set_session(struct transport *t, const struct tls_session *s)
{
	(void)t;
	(void)s;
	return WISP_EINVAL;
}

void tls_session_free(struct tls_session *s)
{
	(void)s;
}

#endif
