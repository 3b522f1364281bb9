/*
 * TLS and credentials of the node's NATS connections (the core one, the
 * shared-subscription one and the JetStream worker's): one place applies
 * the `cluster` keys to a natsOptions, so every connection the node makes
 * authenticates and verifies the same way.
 *
 * Secrets (password, token, the seed files' contents) are handed to cnats
 * and never logged: URLs are logged through nats_urls_redacted.
 */
#ifndef WISP_CLUSTER_NATS_AUTH_H
#define WISP_CLUSTER_NATS_AUTH_H

#include <stddef.h>

#include <nats/nats.h>

#include "config.h"

/* Sets TLS (cafile, certfile/keyfile, the server's name or tls_insecure)
 * and the one way of authenticating on o. The config was validated
 * (config.c check_cluster); what cnats itself refuses (a PEM file it
 * cannot read) is reported here. 0, or WISP_ECONFIG with
 * "cluster.<key>: <reason>" in err. */
int nats_auth_apply(natsOptions *o, const struct config_cluster *cfg, char *err, size_t errlen);

/* urls (cnats's comma-separated list) with each URL's user, password or
 * token replaced by "***", for logs; cut to cap - 1 bytes. */
void nats_urls_redacted(const char *urls, char *out, size_t cap);

/* cnats's last error on this thread, without its "(file.c:N): " prefix;
 * "" when there is none. Valid until the next cnats call on the thread. */
const char *nats_last_error(void);

#endif
