/*
 * The client's half of SCRAM-SHA-256 (RFC 5802), for tests that talk to
 * the broker's method: the client-final-message for a server-first-message
 * and the ServerSignature the server must send back.
 */
#ifndef WISP_TEST_SCRAM_CLIENT_H
#define WISP_TEST_SCRAM_CLIENT_H

#include <stddef.h>

/*
 * `bare` is the client-first-message-bare ("n=user,r=nonce"), `server_first`
 * the server's reply. Writes the client-final-message with the proof for
 * `password` into final (NUL-terminated) and the expected server-final
 * ("v=...") into expect_v. 0, or -1 when server_first cannot be read.
 */
int scram_client_final(const char *password, const char *bare, const char *server_first, size_t server_first_len,
		       char *final, size_t final_cap, char *expect_v, size_t v_cap);

#endif
