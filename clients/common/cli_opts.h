/*
 * Command-line and options-file parsing shared by wisp_pub and wisp_sub,
 * reproducing mosquitto_pub/mosquitto_sub 2.0: same option names, defaults,
 * error texts and exit statuses (see shared/MOSQUITTO-CLI.md).
 *
 * Options file: $XDG_CONFIG_HOME/wisp_pub (or wisp_sub), else
 * ~/.config/wisp_pub. If ours does not exist we read mosquitto's
 * ($XDG_CONFIG_HOME/mosquitto_pub, ~/.config/mosquitto_pub) instead, so a
 * user switching tools keeps their defaults. One option and its value per
 * line, '#' starts a comment line; command-line options come after it and
 * so override it (-t adds up, as in mosquitto).
 *
 * Pure apart from reading that file and printing errors to stderr; no
 * network. Strings are wisp_malloc'ed and freed by cli_cfg_cleanup().
 */
#ifndef WISP_CLIENTS_CLI_OPTS_H
#define WISP_CLIENTS_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli_props.h"

enum cli_kind { CLI_PUB, CLI_SUB };

enum cli_msg_mode {
	CLI_MSG_NONE,
	CLI_MSG_CMD,        /* -m */
	CLI_MSG_FILE,       /* -f */
	CLI_MSG_STDIN_FILE, /* -s */
	CLI_MSG_STDIN_LINE, /* -l */
	CLI_MSG_NULL,       /* -n */
};

/* cli_cfg_load() results besides 0. */
#define CLI_PARSE_ERROR 1
#define CLI_PARSE_HELP 2
#define CLI_PARSE_VERSION 3

#define CLI_PORT_UNDEFINED (-1)

struct cli_strv {
	char **v;
	size_t n;
};

struct cli_cfg {
	enum cli_kind kind;
	const char *prog; /* "wisp_pub" or "wisp_sub" */
	/* connection */
	char *host;
	int port;
	char *bind_address;
	char *unix_path;
	bool nodelay;
	int keepalive;
	unsigned max_inflight;
	char *id;
	char *id_prefix;
	int protocol_version; /* 3, 4 or 5 */
	bool clean_session;
	long long session_expiry; /* -1: unset; UINT32_MAX: never */
	bool debug;
	bool quiet;
	char *username;
	char *password;
	char *will_topic;
	char *will_payload;
	int will_qos;
	bool will_retain;
	struct cli_prop_set props; /* -D, and -x as the CONNECT session expiry */
	/* TLS */
	char *cafile, *capath, *certfile, *keyfile, *keyform, *tls_engine, *tls_engine_kpass_sha1;
	char *ciphers, *tls_version, *tls_alpn, *psk, *psk_identity, *proxy;
	bool insecure;
	bool tls_use_os_certs;
	/* pub */
	char *topic;
	char *message;
	size_t msglen;
	char *file_input;
	enum cli_msg_mode pub_mode;
	int qos;
	bool retain;
	int repeat_count;
	uint64_t repeat_delay_us;
	/* sub */
	struct cli_strv topics;
	struct cli_strv filter_outs;
	struct cli_strv unsub_topics;
	int msg_count;
	bool exit_after_sub;
	unsigned timeout;
	bool no_retain;
	bool retained_only;
	bool remove_retained;
	bool retain_as_published;
	char *format;
	bool eol;
	bool verbose;
	bool pretty;
	int random_filter; /* per 10000 */
};

/*
 * Defaults, then the options file, then argv. Returns 0, or
 * CLI_PARSE_ERROR (message already on stderr), CLI_PARSE_HELP or
 * CLI_PARSE_VERSION. The caller prints the usage hint / help / version.
 */
int cli_cfg_load(struct cli_cfg *cfg, enum cli_kind kind, int argc, char **argv);
/* Parses one argv-style vector into cfg (argv[0] is skipped). Exposed for
 * tests. Same results as cli_cfg_load(). */
int cli_cfg_parse_args(struct cli_cfg *cfg, int argc, char **argv);
void cli_cfg_init(struct cli_cfg *cfg, enum cli_kind kind);
void cli_cfg_cleanup(struct cli_cfg *cfg);

/* mosquitto's -F validation ("Error: Invalid format specifier 'z'."): 0 or 1. */
int cli_check_format(const char *fmt);
/* Topic rules: a publish topic has no wildcards; a filter uses them whole-level. */
bool cli_pub_topic_valid(const char *t);
bool cli_sub_topic_valid(const char *t);
/* mosquitto_validate_utf8(): well-formed UTF-8 (the codec's check) and no
 * control characters or noncharacters. */
bool cli_utf8_valid(const char *s);

/* The port actually used: -p, else 8883 with --cafile/--capath/--psk, else 1883. */
int cli_cfg_port(const struct cli_cfg *cfg);

/* "Error: ..." on stderr unless --quiet. */
void cli_err(const struct cli_cfg *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
