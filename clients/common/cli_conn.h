/*
 * Connection set-up shared by wisp_pub and wisp_sub: turns the parsed
 * options into an mqtt_client (client id rules, will, credentials, the v5
 * CONNECT and will properties of -D and -x, TLS context from
 * --cafile/--capath/--cert/--key/...), and maps connection outcomes to
 * mosquitto's messages and exit codes.
 */
#ifndef WISP_CLIENTS_CLI_CONN_H
#define WISP_CLIENTS_CLI_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "cli_opts.h"
#include "loop.h"
#include "mqtt_client.h"
#include "mtimer.h"

struct tls_ctx;

struct cli_conn {
	struct loop *loop;
	struct mtimers *timers;
	struct mqtt_client *client;
	struct tls_ctx *tls;
	char *id; /* the client id sent, up to MQTT's 65535 bytes; NULL: none */
};

/* mosquitto's exit codes (libmosquitto mosq_err_t) we produce. */
enum cli_exit {
	CLI_EXIT_OK = 0,
	CLI_EXIT_ERROR = 1,
	CLI_EXIT_PROTOCOL = 2,
	CLI_EXIT_NO_CONN = 4,
	CLI_EXIT_CONN_LOST = 7,
	CLI_EXIT_TLS = 8,
	CLI_EXIT_ERRNO = 14,
	CLI_EXIT_KEEPALIVE = 19,
	CLI_EXIT_TIMEOUT = 27,
};

/* Creates loop, timers and client. 0, or an exit status (error printed). */
int cli_conn_setup(struct cli_conn *cc, const struct cli_cfg *cfg, const struct mqtt_client_cbs *cbs,
		   void *ud);
/* Starts connecting. 0, or an exit status after printing mosquitto's
 * "Error: Connection refused"-style message. */
int cli_conn_start(struct cli_conn *cc, const struct cli_cfg *cfg);
/* For an asynchronous connect failure reported through on_disconnect:
 * prints the message and returns the exit status. */
int cli_conn_report_failure(struct cli_conn *cc, const struct cli_cfg *cfg, int err);
/* For a run that ends on a lost connection (mosquitto_pub's own loop, or
 * mosquitto_sub's loop_forever giving up on a TLS error): prints
 * "Error: <libmosquitto's text>" and returns its exit status. */
int cli_conn_loop_error(struct cli_conn *cc, const struct cli_cfg *cfg, int err);
/* For a connection lost after CONNACK: true (message printed, *code set
 * when it is not 0) when mosquitto's network loop would end the run there
 * (a v5 DISCONNECT from the server, a protocol error) instead of
 * reconnecting. */
bool cli_conn_loop_ends(struct cli_conn *cc, const struct cli_cfg *cfg, int err, int *code);
void cli_conn_cleanup(struct cli_conn *cc);

/* --ciphers, OpenSSL's notation, into the colon-separated mbed TLS names
 * net/tls takes: each TLS 1.2 suite by its OpenSSL name
 * (ECDHE-RSA-AES128-GCM-SHA256) or by mbed TLS's/IANA's
 * (TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256); "DEFAULT" or "HIGH" alone keep
 * the library's default list (*out NULL). Other OpenSSL keywords and
 * operators (ALL, !aNULL, ECDHE+AESGCM, @STRENGTH) are refused. On
 * failure `bad` holds the entry at fault. *out is wisp_malloc'ed. */
enum cli_ciphers_result {
	CLI_CIPHERS_OK = 0,
	CLI_CIPHERS_NOMEM,
	CLI_CIPHERS_KEYWORD,     /* an OpenSSL keyword or operator */
	CLI_CIPHERS_UNSUPPORTED, /* a suite name this mbed TLS does not have */
	CLI_CIPHERS_UNKNOWN,     /* no suite name at all */
};
int cli_ciphers_translate(const char *list, char **out, char *bad, size_t badlen);

/* mosquitto_reason_string(): the text of a v5 reason code. */
const char *cli_reason_string(uint8_t code);
/* "Connection Refused: not authorised." etc. for v3 codes; v5 reason text. */
const char *cli_connack_string(int version, uint8_t code);
/* Prints "Connection error: ..." as mosquitto_pub/sub do on a refused CONNACK. */
void cli_print_connack_error(const struct cli_cfg *cfg, uint8_t code);
/* Seeds random() from the clock, as mosquitto's clients do. */
void cli_rand_init(void);

#endif
