/*
 * Connection set-up for wisp_pub/wisp_sub; see cli_conn.h.
 */
#include "cli_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "tls.h"

#define OS_CA_PATH "/etc/ssl/certs"

void cli_rand_init(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	srandom((unsigned)ts.tv_nsec ^ (unsigned)getpid());
}

/* libmosquitto 2.0.11's mosquitto_reason_string(), for every v5 reason. */
const char *cli_reason_string(uint8_t code)
{
	switch (code) {
	case 0x00: return "Success";
	case 0x01: return "Granted QoS 1";
	case 0x02: return "Granted QoS 2";
	case 0x04: return "Disconnect with Will Message";
	case 0x10: return "No matching subscribers";
	case 0x11: return "No subscription existed";
	case 0x18: return "Continue authentication";
	case 0x19: return "Re-authenticate";
	case 0x80: return "Unspecified error";
	case 0x81: return "Malformed Packet";
	case 0x82: return "Protocol Error";
	case 0x83: return "Implementation specific error";
	case 0x84: return "Unsupported Protocol Version";
	case 0x85: return "Client Identifier not valid";
	case 0x86: return "Bad User Name or Password";
	case 0x87: return "Not authorized";
	case 0x88: return "Server unavailable";
	case 0x89: return "Server busy";
	case 0x8A: return "Banned";
	case 0x8B: return "Server shutting down";
	case 0x8C: return "Bad authentication method";
	case 0x8D: return "Keep Alive timeout";
	case 0x8E: return "Session taken over";
	case 0x8F: return "Topic Filter invalid";
	case 0x90: return "Topic Name invalid";
	case 0x91: return "Packet Identifier in use";
	case 0x92: return "Packet Identifier not found";
	case 0x93: return "Receive Maximum exceeded";
	case 0x94: return "Topic Alias invalid";
	case 0x95: return "Packet too large";
	case 0x96: return "Message rate too high";
	case 0x97: return "Quota exceeded";
	case 0x98: return "Administrative action";
	case 0x99: return "Payload format invalid";
	case 0x9A: return "Retain not supported";
	case 0x9B: return "QoS not supported";
	case 0x9C: return "Use another server";
	case 0x9D: return "Server moved";
	case 0x9E: return "Shared Subscriptions not supported";
	case 0x9F: return "Connection rate exceeded";
	case 0xA0: return "Maximum connect time";
	case 0xA1: return "Subscription identifiers not supported";
	case 0xA2: return "Wildcard Subscriptions not supported";
	}
	return "Unknown reason";
}

const char *cli_connack_string(int version, uint8_t code)
{
	if (version == MQTT_PROTO_V5)
		return cli_reason_string(code);
	switch (code) {
	case 0: return "Connection Accepted.";
	case 1: return "Connection Refused: unacceptable protocol version.";
	case 2: return "Connection Refused: identifier rejected.";
	case 3: return "Connection Refused: broker unavailable.";
	case 4: return "Connection Refused: bad user name or password.";
	case 5: return "Connection Refused: not authorised.";
	}
	return "Connection Refused: unknown reason.";
}

void cli_print_connack_error(const struct cli_cfg *cfg, uint8_t code)
{
	if (cfg->protocol_version == MQTT_PROTO_V5 && code == MQTT_RC_UNSUPPORTED_VERSION)
		cli_err(cfg, "Connection error: %s. Try connecting to an MQTT v5 broker, or use MQTT v3.x mode.\n",
			cli_connack_string(cfg->protocol_version, code));
	else
		cli_err(cfg, "Connection error: %s\n", cli_connack_string(cfg->protocol_version, code));
}

/* libmosquitto's generated id for MQTT 3.1: "mosq-" and 18 random
 * alphanumerics. */
#define RANDOM_ID_LEN 23
static void random_id(char *buf)
{
	static const char set[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	memcpy(buf, "mosq-", 5);
	for (size_t i = 5; i < RANDOM_ID_LEN; i++)
		buf[i] = set[(size_t)random() % (sizeof set - 1)];
	buf[RANDOM_ID_LEN] = '\0';
}

/* The id to send, as mosquitto_pub/sub build it (client_id_generate(),
 * mosquitto_new()): -I prefix + pid, or -i, or for MQTT 3.1 a generated
 * one; 3.1.1 and 5 send none and let the server choose. 0, or an exit
 * status after mosquitto_new()'s message: an empty id is invalid, and an
 * id it cannot send (not UTF-8, or over what its length field holds)
 * fails without a word. */
static int make_id(struct cli_conn *cc, const struct cli_cfg *cfg)
{
	const char *bad_id = cfg->kind == CLI_PUB ? "Error: Invalid id.\n" : "Error: Invalid id and/or clean_session.\n";
	if (cfg->id_prefix) {
		size_t n = strlen(cfg->id_prefix) + 16;
		if (!(cc->id = wisp_malloc(n)))
			goto nomem;
		snprintf(cc->id, n, "%s%d", cfg->id_prefix, (int)getpid());
	} else if (cfg->id) {
		if (!(cc->id = wisp_strndup(cfg->id, strlen(cfg->id))))
			goto nomem;
	} else if (cfg->protocol_version == MQTT_PROTO_V31) {
		if (!(cc->id = wisp_malloc(RANDOM_ID_LEN + 1)))
			goto nomem;
		random_id(cc->id);
	}
	if (!cc->id) {
		if (!cfg->clean_session) {
			/* mosquitto_new() refuses a persistent session without an id. */
			cli_err(cfg, "%s", bad_id);
			return CLI_EXIT_ERROR;
		}
		return 0;
	}
	if (cc->id[0] == '\0') {
		cli_err(cfg, "%s", bad_id);
		return CLI_EXIT_ERROR;
	}
	if (strlen(cc->id) > UINT16_MAX || !cli_utf8_valid(cc->id))
		return CLI_EXIT_ERROR;
	return 0;
nomem:
	cli_err(cfg, "Error: Out of memory.\n");
	return CLI_EXIT_ERROR;
}

/* Maps --tls-version to what net/tls accepts; NULL if unsupported. */
static const char *tls_min_version(const char *v, bool *ok)
{
	*ok = true;
	if (!v || !strcmp(v, "tlsv1.2"))
		return "tls1.2";
	*ok = false;
	return NULL;
}

static struct transport *wrap_tls(void *ctx, int fd) { return tls_transport_new(ctx, fd); }

/* OpenSSL's name of a TLS 1.2 suite -> mbed TLS's (IANA's, with dashes):
 * [KX-]CIPHER-MAC, e.g. ECDHE-RSA-AES128-GCM-SHA256 ->
 * TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256, AES128-SHA ->
 * TLS-RSA-WITH-AES-128-CBC-SHA. false when `name` is not in that shape. */
static bool openssl_suite_name(const char *name, char *out, size_t cap)
{
	static const char *const kx[] = {"ECDHE-ECDSA", "ECDHE-RSA", "ECDHE-PSK", "DHE-RSA", "DHE-PSK", "RSA-PSK",
					 "ECDH-ECDSA", "ECDH-RSA", "PSK"};
	static const struct { const char *ossl, *iana; } ciphers[] = {
		{"AES128", "AES-128"}, {"AES256", "AES-256"}, {"CAMELLIA128", "CAMELLIA-128"},
		{"CAMELLIA256", "CAMELLIA-256"}, {"ARIA128", "ARIA-128"}, {"ARIA256", "ARIA-256"},
		{"DES-CBC3", "3DES-EDE-CBC"}, {"CHACHA20-POLY1305", "CHACHA20-POLY1305"},
	};
	static const struct { const char *ossl, *iana; } macs[] = {
		{"GCM-SHA256", "GCM-SHA256"}, {"GCM-SHA384", "GCM-SHA384"}, {"CCM", "CCM"}, {"CCM8", "CCM-8"},
		{"CBC-SHA", "CBC-SHA"}, {"CBC-SHA256", "CBC-SHA256"}, {"CBC-SHA384", "CBC-SHA384"},
		{"SHA", "CBC-SHA"}, {"SHA256", "CBC-SHA256"}, {"SHA384", "CBC-SHA384"},
	};
	const char *k = "RSA", *p = name;
	for (size_t i = 0; i < sizeof kx / sizeof kx[0]; i++) {
		size_t n = strlen(kx[i]);
		if (!strncmp(p, kx[i], n) && p[n] == '-') {
			k = kx[i];
			p += n + 1;
			break;
		}
	}
	for (size_t i = 0; i < sizeof ciphers / sizeof ciphers[0]; i++) {
		size_t n = strlen(ciphers[i].ossl);
		if (strncmp(p, ciphers[i].ossl, n) != 0)
			continue;
		const char *rest = p + n;
		int w = -1;
		if (!strcmp(ciphers[i].iana, "CHACHA20-POLY1305") && *rest == '\0')
			w = snprintf(out, cap, "TLS-%s-WITH-CHACHA20-POLY1305-SHA256", k);
		else if (!strcmp(ciphers[i].iana, "3DES-EDE-CBC") && !strcmp(rest, "-SHA"))
			w = snprintf(out, cap, "TLS-%s-WITH-3DES-EDE-CBC-SHA", k);
		else if (*rest == '-')
			for (size_t j = 0; j < sizeof macs / sizeof macs[0]; j++)
				if (!strcmp(rest + 1, macs[j].ossl)) {
					w = snprintf(out, cap, "TLS-%s-WITH-%s-%s", k, ciphers[i].iana, macs[j].iana);
					break;
				}
		return w > 0 && (size_t)w < cap;
	}
	return false;
}

/* OpenSSL cipher-list keywords (not suite names); mosquitto hands them to
 * OpenSSL, mbed TLS has no such language. */
static bool openssl_keyword(const char *t)
{
	static const char *const words[] = {
		"ALL", "COMPLEMENTOFALL", "COMPLEMENTOFDEFAULT", "HIGH", "MEDIUM", "LOW", "DEFAULT", "eNULL",
		"NULL", "aNULL", "kRSA", "aRSA", "RSA", "kDHE", "kEDH", "DH", "DHE", "EDH", "ADH", "kEECDH",
		"kECDHE", "ECDH", "ECDHE", "EECDH", "AECDH", "aDSS", "DSS", "aECDSA", "ECDSA", "TLSv1.2", "TLSv1.0",
		"TLSv1", "SSLv3", "AES", "AES128", "AES256", "AESGCM", "AESCCM", "AESCCM8", "ARIA", "ARIA128",
		"ARIA256", "ARIAGCM", "CAMELLIA", "CAMELLIA128", "CAMELLIA256", "CHACHA20", "3DES", "DES", "RC4",
		"RC2", "IDEA", "SEED", "MD5", "SHA1", "SHA", "SHA256", "SHA384", "PSK", "kPSK", "aPSK", "kECDHEPSK",
		"kDHEPSK", "kRSAPSK", "SUITEB128", "SUITEB128ONLY", "SUITEB192", "CBC", "STRENGTH",
	};
	if (strchr("!+-@", t[0]) || strchr(t, '+'))
		return true;
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
		if (!strcmp(t, words[i]))
			return true;
	return false;
}

int cli_ciphers_translate(const char *list, char **out, char *bad, size_t badlen)
{
	*out = NULL;
	bad[0] = '\0';
	/* "DEFAULT" and "HIGH" on their own: the library's default list, which
	 * holds only ECDHE suites with AES-GCM or ChaCha20-Poly1305, all of
	 * them in OpenSSL's HIGH (and DEFAULT) set. */
	if (!strcmp(list, "DEFAULT") || !strcmp(list, "HIGH"))
		return CLI_CIPHERS_OK;
	size_t cap = strlen(list) * 2 + 64;
	char *res = wisp_malloc(cap);
	char *copy = wisp_strndup(list, strlen(list));
	if (!res || !copy) {
		wisp_free(res);
		wisp_free(copy);
		return CLI_CIPHERS_NOMEM;
	}
	size_t len = 0;
	int rc = CLI_CIPHERS_OK;
	char *save = NULL;
	for (char *t = strtok_r(copy, ":", &save); t; t = strtok_r(NULL, ":", &save)) {
		char name[96];
		const char *use = t;
		if (strncmp(t, "TLS", 3) != 0 && !tls_ciphersuite_supported(t) &&
		    openssl_suite_name(t, name, sizeof name))
			use = name;
		if (!tls_ciphersuite_supported(use)) {
			snprintf(bad, badlen, "%s", t);
			rc = use == name ? CLI_CIPHERS_UNSUPPORTED
			     : openssl_keyword(t) ? CLI_CIPHERS_KEYWORD : CLI_CIPHERS_UNKNOWN;
			break;
		}
		len += (size_t)snprintf(res + len, cap - len, "%s%s", len ? ":" : "", use);
	}
	wisp_free(copy);
	if (rc == CLI_CIPHERS_OK && len == 0) {
		snprintf(bad, badlen, "%s", list);
		rc = CLI_CIPHERS_UNKNOWN;
	}
	if (rc != CLI_CIPHERS_OK) {
		wisp_free(res);
		return rc;
	}
	*out = res;
	return CLI_CIPHERS_OK;
}

/* mosquitto_tls_set() opens each file it is given first; one it cannot
 * open is "File not found". */
static bool readable(const char *path)
{
	FILE *f = path ? fopen(path, "r") : NULL;
	if (f)
		fclose(f);
	return f != NULL;
}

/* What libmosquitto's connect says when its TLS context cannot be built
 * (ciphers, a key that does not match the certificate): the reason goes to
 * the -d trace, as libmosquitto logs it. */
static int tls_unusable(const struct cli_cfg *cfg, const char *why)
{
	if (cfg->debug && !cfg->quiet)
		printf("Error: %s\n", why);
	cli_err(cfg, "Unable to connect (A TLS error occurred.).\n");
	return CLI_EXIT_ERROR;
}

static int setup_tls(struct cli_conn *cc, const struct cli_cfg *cfg)
{
	bool use_os = cfg->tls_use_os_certs || (cli_cfg_port(cfg) == 8883 && !cfg->cafile && !cfg->capath);
	if (!cfg->cafile && !cfg->capath && !use_os)
		return 0;
	if ((cfg->cafile && !readable(cfg->cafile)) || (cfg->certfile && !readable(cfg->certfile)) ||
	    (cfg->keyfile && !readable(cfg->keyfile))) {
		cli_err(cfg, "Error: Problem setting TLS options: File not found.\n");
		return CLI_EXIT_ERROR;
	}
	struct tls_opts o;
	tls_opts_init(&o);
	o.ca_file = cfg->cafile;
	o.ca_path = cfg->capath ? cfg->capath : (cfg->cafile ? NULL : OS_CA_PATH);
	o.cert_file = cfg->certfile;
	o.key_file = cfg->keyfile;
	o.hostname = cfg->host;
	o.insecure = cfg->insecure;
	bool ok;
	o.min_version = tls_min_version(cfg->tls_version, &ok);
	if (!ok) {
		cli_err(cfg, "Error: Problem setting TLS options, check the options are valid.\n");
		return CLI_EXIT_ERROR;
	}
	char *suites = NULL;
	if (cfg->ciphers) {
		char bad[128];
		switch (cli_ciphers_translate(cfg->ciphers, &suites, bad, sizeof bad)) {
		case CLI_CIPHERS_OK:
			break;
		case CLI_CIPHERS_NOMEM:
			cli_err(cfg, "Error: Out of memory.\n");
			return CLI_EXIT_ERROR;
		case CLI_CIPHERS_KEYWORD:
			/* mosquitto (OpenSSL) takes it; we cannot honour it. */
			cli_err(cfg, "Error: --ciphers: \"%s\" is an OpenSSL cipher-list keyword, which %s does not "
				"support; name the suites (e.g. ECDHE-RSA-AES128-GCM-SHA256), or give DEFAULT or HIGH "
				"alone.\n", bad, cfg->prog);
			return CLI_EXIT_ERROR;
		case CLI_CIPHERS_UNSUPPORTED:
			cli_err(cfg, "Error: --ciphers: the TLS cipher suite \"%s\" is not available in %s (mbed "
				"TLS).\n", bad, cfg->prog);
			return CLI_EXIT_ERROR;
		default: {
			/* Unknown to OpenSSL as well: mosquitto fails at connect. */
			char why[192];
			snprintf(why, sizeof why, "Unable to set TLS ciphers. Check cipher list \"%s\".", cfg->ciphers);
			return tls_unusable(cfg, why);
		}
		}
	}
	o.ciphersuites = suites;
	char err[256];
	int rc = tls_ctx_new_client(&o, &cc->tls, err, sizeof err);
	wisp_free(suites);
	if (rc != 0)
		return tls_unusable(cfg, err);
	return 0;
}

int cli_conn_setup(struct cli_conn *cc, const struct cli_cfg *cfg, const struct mqtt_client_cbs *cbs, void *ud)
{
	memset(cc, 0, sizeof *cc);
	if (cfg->unix_path || cfg->proxy || cfg->psk) {
		cli_err(cfg, "Error: %s is not supported by %s.\n",
			cfg->unix_path ? "--unix" : cfg->proxy ? "--proxy" : "--psk", cfg->prog);
		return CLI_EXIT_ERROR;
	}
	/* mosquitto's order: the id (mosquitto_new), then client_opts_set():
	 * will, credentials, TLS. */
	int rc = make_id(cc, cfg);
	if (rc)
		return rc;
	const struct cli_props *cp = &cfg->props.list[CLI_PROPS_CONNECT], *wp = &cfg->props.list[CLI_PROPS_WILL];
	if (cfg->will_topic && wp->len && cfg->protocol_version != MQTT_PROTO_V5) {
		/* mosquitto_will_set_v5() refuses properties on a v3 connection. */
		cli_err(cfg, "Error: Problem setting will.\n");
		return CLI_EXIT_ERROR;
	}
	if (cfg->password && !cfg->username && cfg->protocol_version != MQTT_PROTO_V5) {
		/* MQTT 3 has no password without a user name [MQTT-3.1.2-22]:
		 * mosquitto_username_pw_set() refuses it. */
		cli_err(cfg, "Error: Problem setting username and/or password.\n");
		return CLI_EXIT_ERROR;
	}
	cc->loop = loop_new();
	cc->timers = cc->loop ? mtimers_new(cc->loop) : NULL;
	if (!cc->timers) {
		cli_err(cfg, "Error: Out of memory.\n");
		return CLI_EXIT_ERROR;
	}
	rc = setup_tls(cc, cfg);
	if (rc)
		return rc;

	struct mqtt_client_opts o = {0};
	o.host = cfg->host;
	o.port = (uint16_t)cli_cfg_port(cfg);
	o.bind_address = cfg->bind_address;
	o.nodelay = cfg->nodelay;
	o.version = (uint8_t)cfg->protocol_version;
	o.client_id = cc->id;
	/* libmosquitto names a client without an id "(null)" in its log
	 * until the server assigns one. */
	o.log_name = cc->id ? NULL : "(null)";
	o.clean_session = cfg->clean_session;
	o.keepalive = (uint16_t)cfg->keepalive;
	o.username = cfg->username;
	o.password = cfg->password;
	o.will_topic = cfg->will_topic;
	o.will_payload = cfg->will_payload;
	o.will_len = cfg->will_payload ? strlen(cfg->will_payload) : 0;
	o.will_qos = (uint8_t)cfg->will_qos;
	o.will_retain = cfg->will_retain;
	o.connect_props = cp->buf;
	o.connect_props_len = cp->len;
	o.will_props = wp->buf;
	o.will_props_len = wp->len;
	o.max_inflight = (uint16_t)(cfg->max_inflight > 65535 ? 65535 : cfg->max_inflight);
	/* mosquitto's clients retry a lost connection every second or so. */
	o.reconnect = false;
	o.reconnect_min_ms = 1000;
	o.reconnect_max_ms = 1000;
	o.transport_new = cc->tls ? wrap_tls : NULL;
	o.transport_ctx = cc->tls;
	o.cbs = cbs;
	o.ud = ud;
	cc->client = mqtt_client_new(cc->loop, cc->timers, &o);
	if (!cc->client) {
		cli_err(cfg, "Error: Out of memory.\n");
		return CLI_EXIT_ERROR;
	}
	return 0;
}

int cli_conn_report_failure(struct cli_conn *cc, const struct cli_cfg *cfg, int err)
{
	switch (err) {
	case MQTT_CLIENT_ERESOLVE:
		/* What mosquitto_pub/sub 2.0.11 print when the host does not resolve. */
		cli_err(cfg, "Unable to connect (Lookup error.).\n");
		return CLI_EXIT_ERROR;
	case MQTT_CLIENT_ECONNECT:
		cli_err(cfg, "Error: %s\n", strerror(mqtt_client_errno(cc->client)));
		return CLI_EXIT_ERROR;
	case MQTT_CLIENT_ETLS:
		if (mqtt_client_cert_rejected(cc->client)) {
			/* The server's certificate arrives in the first round trip,
			 * and mosquitto_connect() mostly refuses it there (9 runs in
			 * 12; else its loop does, as below). */
			cli_err(cfg, "Unable to connect (A TLS error occurred.).\n");
			return CLI_EXIT_ERROR;
		}
		/* Other handshake failures (a peer that does not speak TLS)
		 * show up in mosquitto's network loop. */
		return cli_conn_loop_error(cc, cfg, err);
	case MQTT_CLIENT_ELOST:
		/* Closed before CONNACK: mosquitto_pub's loop reports it
		 * (mosquitto_sub reconnects instead and never gets here). */
		return cli_conn_loop_error(cc, cfg, err);
	case MQTT_CLIENT_EKEEPALIVE:
		return CLI_EXIT_KEEPALIVE;
	case MQTT_CLIENT_EPROTOCOL:
		return CLI_EXIT_PROTOCOL;
	}
	return CLI_EXIT_CONN_LOST;
}

int cli_conn_loop_error(struct cli_conn *cc, const struct cli_cfg *cfg, int err)
{
	(void)cc;
	switch (err) {
	case MQTT_CLIENT_ETLS:
		cli_err(cfg, "Error: A TLS error occurred.\n");
		return CLI_EXIT_TLS;
	case MQTT_CLIENT_EPROTOCOL:
		cli_err(cfg, "Error: A network protocol error occurred when communicating with the broker.\n");
		return CLI_EXIT_PROTOCOL;
	case MQTT_CLIENT_EKEEPALIVE:
		return CLI_EXIT_KEEPALIVE;
	}
	cli_err(cfg, "Error: The connection was lost.\n");
	return CLI_EXIT_CONN_LOST;
}

bool cli_conn_loop_ends(struct cli_conn *cc, const struct cli_cfg *cfg, int err, int *code)
{
	if (err == MQTT_CLIENT_ESERVER) {
		/* mosquitto_sub stops quietly; mosquitto_pub's own loop reports
		 * MOSQ_ERR_NO_CONN unless the reason was 0. */
		if (cfg->kind == CLI_PUB && mqtt_client_disconnect_reason(cc->client) != 0) {
			cli_err(cfg, "Error: The client is not currently connected.\n");
			*code = CLI_EXIT_NO_CONN;
		}
		return true;
	}
	if (err == MQTT_CLIENT_EPROTOCOL) {
		/* mosquitto_loop_forever() gives up on a protocol error. */
		cli_err(cfg, "Error: A network protocol error occurred when communicating with the broker.\n");
		*code = CLI_EXIT_PROTOCOL;
		return true;
	}
	return false;
}

int cli_conn_start(struct cli_conn *cc, const struct cli_cfg *cfg)
{
	if (cfg->props.list[CLI_PROPS_CONNECT].len && cfg->protocol_version != MQTT_PROTO_V5) {
		/* mosquitto_connect_bind_v5() on a v3 connection (-D ... -V 311). */
		cli_err(cfg, "Unable to connect (This feature is not supported.).\n");
		return CLI_EXIT_ERROR;
	}
	int rc = mqtt_client_connect(cc->client);
	if (rc == 0)
		return 0;
	return cli_conn_report_failure(cc, cfg, rc);
}

void cli_conn_cleanup(struct cli_conn *cc)
{
	mqtt_client_free(cc->client);
	wisp_free(cc->id);
	tls_ctx_unref(cc->tls);
	mtimers_free(cc->timers);
	loop_free(cc->loop);
	memset(cc, 0, sizeof *cc);
}
