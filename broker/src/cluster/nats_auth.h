/*
 * TLS and credentials of the node's NATS connections (the core one, the
 * shared-subscription one and the JetStream worker's): one place applies
 * the `cluster` keys to a natsOptions, so every connection the node makes
 * authenticates and verifies the same way (and notices a stalled server
 * the same way: write deadline, PINGs, pending limit).
 *
 * Secrets (password, token, the seed files' contents) are handed to cnats
 * and never logged: URLs are logged through nats_urls_redacted.
 */
#ifndef WISP_CLUSTER_NATS_AUTH_H
#define WISP_CLUSTER_NATS_AUTH_H

#include <stddef.h>

#include <nats/nats.h>

#include "config.h"

/* The NKey that signs the server's nonce (nkey_seed or the credentials
 * file's seed), and the credentials file's user JWT. libnats 3.4's own
 * signer (nats_Sign) makes a wrong Ed25519 signature for about one nonce in
 * 200, and nats-server then refuses the connection, for good: libcrypto
 * signs instead. */
struct nats_signer;

/* A connection cnats closed for good (a server that refused it twice in a
 * row: credentials revoked or not yet known, say) is made anew after
 * this wait, doubled after each try that is refused again, up to the
 * maximum; back to the first once connected. */
#define NATS_REJOIN_FIRST_MS 1000
#define NATS_REJOIN_MAX_MS 30000

/* Reads and checks cfg's nkey_seed (against cfg->nkey) or credentials file.
 * *out is NULL when cfg has neither. 0, or WISP_ECONFIG / WISP_ENOMEM with
 * "cluster.<key>: <file>: <reason>" in err. */
int nats_signer_load(const struct config_cluster *cfg, struct nats_signer **out, char *err, size_t errlen);
/* The Ed25519 signature of nonce, as nats-server checks it. Any thread.
 * 0 or WISP_EIO. */
int nats_signer_sign(const struct nats_signer *s, const char *nonce, unsigned char sig[64]);
/* The credentials file's user JWT; NULL for an nkey_seed. */
const char *nats_signer_jwt(const struct nats_signer *s);
/* After every connection using it is closed (nats_CloseAndWait). NULL: no-op. */
void nats_signer_free(struct nats_signer *s);

/* Sets TLS (cafile, certfile/keyfile, the server's name or tls_skip_verify),
 * write_deadline, ping_interval, the pending limit per subscription
 * (inbound_queue) and the one way of authenticating on o (signer: nats_signer_load's, borrowed
 * until o's connections are closed). The config was validated
 * (config.c check_cluster); what cnats itself refuses (a PEM file it
 * cannot read) is reported here. 0, or WISP_ECONFIG with
 * "cluster.<key>: <reason>" in err. */
int nats_auth_apply(natsOptions *o, const struct config_cluster *cfg, const struct nats_signer *signer, char *err,
		    size_t errlen);

/* urls (cnats's comma-separated list) with each URL's user, password or
 * token replaced by "***", for logs; cut to cap - 1 bytes. */
void nats_urls_redacted(const char *urls, char *out, size_t cap);

/* cnats's last error on this thread, without its "(file.c:N): " prefix;
 * "" when there is none. Valid until the next cnats call on the thread. */
const char *nats_last_error(void);

#endif
