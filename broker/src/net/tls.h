/*
 * TLS transport over mbed TLS 2.28 (TLS 1.2). Only tls.c includes mbed TLS;
 * callers see struct tls_ctx as opaque and a TLS connection as a plain
 * struct transport (see transport.h), so nothing above net/ knows which one
 * it talks to: the verified certificate's CN is the transport's peer_info
 * identity, and tls_transport_last_error() its last_error.
 *
 * A tls_ctx holds what is shared by all connections of one listener (or of
 * one client): certificate, key, CA chain, ciphersuites, verification mode,
 * and for a server the session ticket keys and the session cache, so a
 * session resumes only under the context that verified it.
 * It is reference counted: every transport takes a reference, so a reload
 * (SIGHUP) builds a new context for new connections, drops the listener's
 * reference to the old one, and existing connections keep theirs until they
 * close.
 *
 * Threading: single-threaded, on the loop thread. The entropy source and
 * CTR-DRBG are process-wide, seeded once by the first tls_ctx_new_*().
 *
 * Built without TLS (WISP_WITH_TLS=OFF), the same functions exist and the
 * constructors fail with "TLS support not built", so callers need no #ifdef.
 */
#ifndef WISP_NET_TLS_H
#define WISP_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"

struct tls_ctx;

/*
 * Options for a server or client context. Call tls_opts_init() first: it
 * sets the secure defaults (verify_peer = true, min_version "tls1.2"), so a
 * field left alone never weakens security. Strings are borrowed until the
 * constructor returns (it copies what it keeps).
 */
struct tls_opts {
	const char *cert_file; /* PEM/DER chain, leaf first. Server: required.
	                          Client: optional (mutual TLS), with key_file */
	const char *key_file;  /* unencrypted private key matching cert_file */
	const char *ca_file;   /* trusted CAs (PEM bundle) */
	const char *ca_path;   /* or a directory of CA files (e.g. /etc/ssl/certs) */
	bool require_peer_cert; /* server: mutual TLS, needs ca_file or ca_path */
	bool verify_peer;       /* client: verify the server chain (default true) */
	const char *hostname;   /* client: SNI and name checked against the cert */
	bool insecure;          /* client: verify the chain, skip the name check */
	const char *ciphersuites; /* colon-separated IANA names, NULL = defaults */
	const char *min_version;  /* "tls1.2" (default, NULL); "tls1.3" refused */
	const char *curves;       /* ECDHE groups, colon-separated mbed TLS names
	                             ("x25519:secp256r1"), NULL = defaults. A
	                             server takes the client's first group that
	                             is in this list, so the list restricts, and
	                             a client's order is its preference. */
	/* Server: session resumption, so a reconnecting client skips the
	 * certificate signature and ECDHE (an abbreviated handshake). */
	bool session_tickets;          /* RFC 5077 tickets (default true) */
	unsigned session_lifetime;     /* seconds a ticket or cache entry resumes,
	                                  and the ticket key rotation period
	                                  (default 86400, 1..604800) */
	unsigned session_cache_size;   /* server-side cache entries, 0 = no cache
	                                  (default 1000) */
	/* Server: an established connection with nothing to read or write for
	 * this many seconds frees its two 16 KiB record buffers until it is
	 * used again (0 = never; default TLS_HIBERNATE_DEFAULT). Needs
	 * tls_hibernation_attach(). */
	unsigned hibernate_after;
};

void tls_opts_init(struct tls_opts *o);

/* Whether the default suite list (ciphersuites unset) puts AES-GCM before
 * ChaCha20-Poly1305: true when AES-GCM is the cheaper here (Nettle's, on a
 * CPU with AES-NI and PCLMULQDQ; see tls.c). */
bool tls_default_prefers_gcm(void);

/* Session resumption defaults (see config/README.md for the reasoning). */
#define TLS_SESSION_LIFETIME_DEFAULT 86400u
#define TLS_SESSION_LIFETIME_MAX 604800u
#define TLS_SESSION_CACHE_DEFAULT 1000u
#define TLS_HIBERNATE_DEFAULT 5u
#define TLS_HIBERNATE_MAX 86400u

struct loop;

/*
 * Hibernation of idle connections runs on this loop's timers (one per
 * context that hibernates, armed while it has awake connections). Call once
 * before serving; without it nothing hibernates by itself (tests call
 * tls_transport_hibernate()).
 */
void tls_hibernation_attach(struct loop *l);

/* Established TLS connections whose record buffers are freed right now. */
size_t tls_hibernated_count(void);

/* Receive system calls made by established TLS connections since start-up,
 * and reads that left read-ahead ciphertext to carry to the next (tests,
 * bench: records read per system call). */
uint64_t tls_socket_reads(void);
uint64_t tls_read_carries(void);
/* AES-GCM records opened straight from the read-ahead into the reader's
 * buffer, past mbed TLS's input record (tests). */
uint64_t tls_records_opened_in_place(void);
/* AES-GCM records sealed by libcrypto into the thread's send batch, sent
 * or dropped after a cut (tests). */
uint64_t tls_records_sealed_in_batches(void);

/*
 * Build a context. 0 with *out holding one reference, or a negative WISP_E*
 * (WISP_ECONFIG for bad options or files, WISP_ENOMEM, WISP_EIO for entropy
 * failure) with "<what>: <file or value>: <reason>" in err (may be NULL;
 * always NUL-terminated when errlen > 0). Checks everything that can be
 * checked before a peer connects: files readable and parsable, key matches
 * certificate, certificate within its validity period, ciphersuite names
 * known, mutual TLS has a CA.
 */
int tls_ctx_new_server(const struct tls_opts *o, struct tls_ctx **out, char *err, size_t errlen);
int tls_ctx_new_client(const struct tls_opts *o, struct tls_ctx **out, char *err, size_t errlen);

/*
 * Server: a new session ticket key seals tickets from now on; the previous
 * one still opens the tickets it sealed, the one before it is destroyed
 * (its tickets get a full handshake). Runs by itself every
 * session_lifetime; a reload replaces the whole context instead. 0,
 * WISP_EINVAL (no tickets in this context), WISP_ENOMEM or WISP_EIO (the
 * old keys stay then).
 */
int tls_ctx_rotate_ticket_keys(struct tls_ctx *c);

/* Tests: the clock (seconds, monotonic) that ticket key rotation runs on;
 * NULL restores the real one. */
void tls_set_clock(uint64_t (*now)(void));

void tls_ctx_ref(struct tls_ctx *c);
/* Frees the context when the last reference goes; NULL is a no-op. */
void tls_ctx_unref(struct tls_ctx *c);

/*
 * A TLS transport over a connected non-blocking socket, server or client
 * side as the context says. Takes ownership of fd (closed on failure too)
 * and a reference to c (the caller keeps its own). NULL when out of memory.
 *
 * Drive transport_handshake() until it returns 0 (WISP_EAGAIN: wait for
 * t->want); read/writev also work before that and finish the handshake
 * first. Errors: WISP_ECLOSED (peer closed, or EOF), WISP_EIO (socket
 * error), WISP_EPROTO (TLS alert, bad record, failed verification: e.g.
 * plaintext sent to a TLS port); tls_transport_last_error() says more.
 *
 * writev encrypts record after record (up to 16 KiB of plaintext each,
 * small pieces staged together into one record) until everything is taken
 * or the socket is full, and returns the plaintext bytes accepted; short
 * means full, and `want` says so (transport.h). After it returns
 * WISP_EAGAIN, or a short count, the caller must call it again with the
 * same bytes (those not yet accepted) at the front of iov, more may follow
 * them, as mbed TLS requires. read returns every decrypted record that fits,
 * until the socket has no more. pending() is plaintext decrypted but not
 * yet returned by read().
 * close sends close_notify (best effort, never blocks) and frees.
 *
 * Memory: the transport struct (~800 bytes, wisp_malloc) until the
 * session starts: a server starts it when the peer's first bytes arrive
 * and look like a TLS handshake (else WISP_EPROTO, nothing allocated).
 * Then ~36 KiB while it is awake (~2 KiB hibernated) plus a few KiB during the handshake
 * (see certs/README.md), allocated by mbed TLS through wisp_tls_calloc, so
 * counted in the heap figures: a session that would not fit within
 * memory_limit does not start, and one whose allocation fails later fails
 * with WISP_ENOMEM.
 */
struct transport *tls_transport_new(struct tls_ctx *c, int fd);

bool tls_transport_is(const struct transport *t);

/*
 * The Common Name of the peer's verified certificate (server: the client
 * certificate under require_peer_cert; client: the server's), for
 * use_identity_as_username. 0 with a NUL-terminated copy in buf; WISP_ENOENT
 * if there is no verified peer certificate or it has no CN; WISP_EPROTO if
 * the CN contains a NUL byte; WISP_ELIMIT if buf is too small; WISP_EINVAL
 * if t is not a TLS transport.
 */
int tls_transport_peer_cn(struct transport *t, char *buf, size_t len);

/*
 * Describes the last failure of t (mbed TLS error text, and why the peer's
 * certificate was rejected) for the log line of a failed handshake. Writes
 * "" when there was none.
 */
void tls_transport_last_error(const struct transport *t, char *buf, size_t len);

/*
 * True once the handshake is done if it was abbreviated: the session was
 * resumed from a ticket or the server's session cache (either side).
 */
bool tls_transport_resumed(const struct transport *t);

/*
 * Puts an established, idle connection to sleep: its two record buffers
 * (2 x 16,717 bytes) are freed; the keys, sequence numbers and session stay.
 * The next read, writev or close allocates them again, transparently, so a
 * caller never needs to know (the sweep of hibernate_after calls this).
 * 0 (asleep), WISP_EAGAIN (not now: a record is half read or half
 * written, or decrypted data waits), WISP_EINVAL (not a TLS transport, or
 * no finished handshake).
 */
int tls_transport_hibernate(struct transport *t);
bool tls_transport_hibernated(const struct transport *t);

/*
 * The connection's record buffers as the kernel sees them: bytes mapped for
 * them and bytes of those resident in memory (mincore). Both 0 while
 * hibernated or before the handshake starts. For tests and diagnostics:
 * the buffers are mappings of their own, so pages a connection never
 * touched cost no memory and a hibernated one holds none.
 */
void tls_transport_buffer_residency(const struct transport *t, size_t *out_mapped,
                                    size_t *out_resident);

/* Whether this mbed TLS build has the ciphersuite `name` (IANA name with
 * '_' or mbed TLS's with '-'), as struct tls_opts' ciphersuites takes it. */
bool tls_ciphersuite_supported(const char *name);
/* Whether the handshake failed because the peer's certificate was not
 * accepted (chain, validity, host name): mbed TLS's verification result,
 * as opposed to an alert, a bad record or a peer that does not speak TLS. */
bool tls_transport_cert_rejected(const struct transport *t);
/* The negotiated ciphersuite's IANA-style name (mbed TLS spelling, with
 * dashes) once the handshake is done, else NULL. Static storage. */
const char *tls_transport_ciphersuite(const struct transport *t);

/*
 * Client side of resumption. tls_transport_save_session() copies the
 * session of a client transport whose handshake is done (with the ticket
 * the server sent, if any) into *out (free with tls_session_free());
 * tls_transport_set_session() offers it on a client transport whose
 * handshake has not started. 0, WISP_EINVAL (not a TLS client transport,
 * wrong state), WISP_ENOMEM or WISP_EPROTO.
 */
struct tls_session;
int tls_transport_save_session(struct transport *t, struct tls_session **out);
int tls_transport_set_session(struct transport *t, const struct tls_session *s);
void tls_session_free(struct tls_session *s);

#endif
