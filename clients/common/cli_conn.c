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

/* libmosquitto's generated id: "mosq-" and 18 random alphanumerics. */
static void random_id(char *buf, size_t cap)
{
	static const char set[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	size_t n = 0;
	n += (size_t)snprintf(buf, cap, "mosq-");
	for (int i = 0; i < 18 && n + 1 < cap; i++)
		buf[n++] = set[(size_t)random() % (sizeof set - 1)];
	buf[n] = '\0';
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

static int setup_tls(struct cli_conn *cc, const struct cli_cfg *cfg)
{
	bool use_os = cfg->tls_use_os_certs || (cli_cfg_port(cfg) == 8883 && !cfg->cafile && !cfg->capath);
	if (!cfg->cafile && !cfg->capath && !use_os)
		return 0;
	struct tls_opts o;
	tls_opts_init(&o);
	o.ca_file = cfg->cafile;
	o.ca_path = cfg->capath ? cfg->capath : (cfg->cafile ? NULL : OS_CA_PATH);
	o.cert_file = cfg->certfile;
	o.key_file = cfg->keyfile;
	o.hostname = cfg->host;
	o.insecure = cfg->insecure;
	o.ciphersuites = cfg->ciphers;
	bool ok;
	o.min_version = tls_min_version(cfg->tls_version, &ok);
	if (!ok) {
		cli_err(cfg, "Error: Problem setting TLS options, check the options are valid.\n");
		return CLI_EXIT_ERROR;
	}
	char err[256];
	int rc = tls_ctx_new_client(&o, &cc->tls, err, sizeof err);
	if (rc != 0) {
		if (cfg->debug)
			cli_err(cfg, "%s\n", err);
		cli_err(cfg, "Error: Problem setting TLS options: File not found.\n");
		return CLI_EXIT_ERROR;
	}
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
	if (!cfg->clean_session && !cfg->id && !cfg->id_prefix) {
		/* mosquitto_new() refuses a persistent session without an id. */
		cli_err(cfg, "Error: Invalid id and/or clean_session.\n");
		return CLI_EXIT_ERROR;
	}
	cc->loop = loop_new();
	cc->timers = cc->loop ? mtimers_new(cc->loop) : NULL;
	if (!cc->timers) {
		cli_err(cfg, "Error: Out of memory.\n");
		return CLI_EXIT_ERROR;
	}
	int rc = setup_tls(cc, cfg);
	if (rc)
		return rc;

	struct mqtt_client_opts o = {0};
	bool generated = false;
	if (cfg->id_prefix)
		snprintf(cc->id, sizeof cc->id, "%s%d", cfg->id_prefix, (int)getpid());
	else if (cfg->id)
		snprintf(cc->id, sizeof cc->id, "%s", cfg->id);
	else if (cfg->protocol_version != MQTT_PROTO_V5) {
		random_id(cc->id, sizeof cc->id); /* v3 needs an id from the client */
		generated = true;
	}
	const struct cli_props *cp = &cfg->props.list[CLI_PROPS_CONNECT], *wp = &cfg->props.list[CLI_PROPS_WILL];
	if (cfg->will_topic && wp->len && cfg->protocol_version != MQTT_PROTO_V5) {
		/* mosquitto_will_set_v5() refuses properties on a v3 connection. */
		cli_err(cfg, "Error: Problem setting will.\n");
		return CLI_EXIT_ERROR;
	}

	o.host = cfg->host;
	o.port = (uint16_t)cli_cfg_port(cfg);
	o.bind_address = cfg->bind_address;
	o.nodelay = cfg->nodelay;
	o.version = (uint8_t)cfg->protocol_version;
	o.client_id = cc->id;
	o.log_name = generated ? "(null)" : NULL;
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
		cli_err(cfg, "Error: %s\n", "A TLS error occurred.");
		return CLI_EXIT_TLS; /* MOSQ_ERR_TLS, as mosquitto_sub on a plain port */
	case MQTT_CLIENT_EKEEPALIVE:
		return CLI_EXIT_KEEPALIVE;
	case MQTT_CLIENT_EPROTOCOL:
		return CLI_EXIT_PROTOCOL;
	}
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
	tls_ctx_unref(cc->tls);
	mtimers_free(cc->timers);
	loop_free(cc->loop);
	memset(cc, 0, sizeof *cc);
}
