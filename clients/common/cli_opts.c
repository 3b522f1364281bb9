/*
 * Option parsing for wisp_pub/wisp_sub. One table row per option says which
 * tool accepts it, whether it takes a value, and the exact text mosquitto
 * prints when the value is missing; handlers validate values with
 * mosquitto's wording. Options of the other tool are "Unknown option", as
 * in mosquitto.
 */
#include "cli_opts.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"

#define FOR_PUB 0x1
#define FOR_SUB 0x2
#define FOR_ALL (FOR_PUB | FOR_SUB)

void cli_err(const struct cli_cfg *cfg, const char *fmt, ...)
{
	if (cfg->quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

static int set_str(char **dst, const char *v)
{
	wisp_free(*dst);
	*dst = wisp_strndup(v, strlen(v));
	if (!*dst) {
		fprintf(stderr, "Error: Out of memory.\n");
		return 1;
	}
	return 0;
}

static int strv_add(struct cli_strv *sv, const char *v)
{
	char **nv = wisp_realloc(sv->v, (sv->n + 1) * sizeof *nv);
	if (!nv)
		return 1;
	sv->v = nv;
	if (!(sv->v[sv->n] = wisp_strndup(v, strlen(v))))
		return 1;
	sv->n++;
	return 0;
}

static void strv_free(struct cli_strv *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		wisp_free(sv->v[i]);
	wisp_free(sv->v);
	sv->v = NULL;
	sv->n = 0;
}

bool cli_utf8_valid(const char *s)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t len = strlen(s);
	if (!mqtt_utf8_valid(p, len))
		return false;
	/* Well-formed; now what mosquitto_validate_utf8() refuses on top:
	 * control characters and Unicode noncharacters [MQTT-1.5.4-3 says
	 * SHOULD NOT; libmosquitto makes it an error]. */
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t n = p[i] < 0x80 ? 1 : p[i] < 0xE0 ? 2 : p[i] < 0xF0 ? 3 : 4;
		if (n == 1)
			cp = p[i];
		else if (n == 2)
			cp = (uint32_t)(p[i] & 0x1F) << 6 | (p[i + 1] & 0x3F);
		else if (n == 3)
			cp = (uint32_t)(p[i] & 0x0F) << 12 | (uint32_t)(p[i + 1] & 0x3F) << 6 | (p[i + 2] & 0x3F);
		else
			cp = (uint32_t)(p[i] & 0x07) << 18 | (uint32_t)(p[i + 1] & 0x3F) << 12 |
			     (uint32_t)(p[i + 2] & 0x3F) << 6 | (p[i + 3] & 0x3F);
		if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0xFDD0 && cp <= 0xFDEF) ||
		    (cp & 0xFFFF) == 0xFFFE || (cp & 0xFFFF) == 0xFFFF)
			return false;
		i += n;
	}
	return true;
}

bool cli_pub_topic_valid(const char *t)
{
	/* mosquitto_pub_topic_check: no '+' or '#' anywhere, not too long. */
	size_t len = strlen(t);
	if (len > 65535)
		return false;
	return strpbrk(t, "+#") == NULL;
}

bool cli_sub_topic_valid(const char *t)
{
	/* '+' must fill a whole level; '#' must fill the last level. */
	size_t len = strlen(t);
	if (len > 65535)
		return false;
	for (size_t i = 0; i < len; i++) {
		char prev = i ? t[i - 1] : '/';
		char next = t[i + 1];
		if (t[i] == '+' && (prev != '/' || (next != '/' && next != '\0')))
			return false;
		if (t[i] == '#' && (prev != '/' || next != '\0'))
			return false;
	}
	return true;
}

int cli_check_format(const char *str)
{
	size_t len = strlen(str);
	for (size_t i = 0; i < len; i++) {
		if (str[i] == '%') {
			if (i == len - 1)
				goto incomplete;
			if (str[i + 1] == '0' || str[i + 1] == '-') {
				i++;
				if (i == len - 1)
					goto incomplete;
			}
			while (str[i + 1] >= '0' && str[i + 1] <= '9') {
				i++;
				if (i == len - 1)
					goto incomplete;
			}
			if (str[i + 1] == '.') {
				i++;
				if (i == len - 1)
					goto incomplete;
				while (str[i + 1] >= '0' && str[i + 1] <= '9') {
					i++;
					if (i == len - 1)
						goto incomplete;
				}
			}
			if (!strchr("%ACDEFIlmPpqRSrtjJUxX", str[i + 1])) {
				fprintf(stderr, "Error: Invalid format specifier '%c'.\n", str[i + 1]);
				return 1;
			}
			i++;
		} else if (str[i] == '@') {
			if (i == len - 1)
				goto incomplete;
			i++;
		} else if (str[i] == '\\') {
			if (i == len - 1) {
				fprintf(stderr, "Error: Incomplete escape specifier.\n");
				return 1;
			}
			if (!strchr("\\0aenrtv", str[i + 1])) {
				fprintf(stderr, "Error: Invalid escape specifier '%c'.\n", str[i + 1]);
				return 1;
			}
			i++;
		}
	}
	return 0;
incomplete:
	fprintf(stderr, "Error: Incomplete format specifier.\n");
	return 1;
}

/* ---- option handlers: return 0, or 1 after printing the error ---------- */

typedef int (*opt_fn)(struct cli_cfg *cfg, const char *v);

static int msg_mode(struct cli_cfg *cfg, enum cli_msg_mode mode)
{
	if (cfg->pub_mode != CLI_MSG_NONE) {
		fprintf(stderr, "Error: Only one type of message can be sent at once.\n\n");
		return 1;
	}
	cfg->pub_mode = mode;
	return 0;
}

static int add_topic(struct cli_cfg *cfg, const char *topic, const char *arg)
{
	if (!cli_utf8_valid(topic)) {
		fprintf(stderr, "Error: Malformed UTF-8 in %s argument.\n\n", arg);
		return 1;
	}
	if (cfg->kind == CLI_PUB) {
		if (!cli_pub_topic_valid(topic)) {
			fprintf(stderr, "Error: Invalid publish topic '%s', does it contain '+' or '#'?\n", topic);
			return 1;
		}
		return set_str(&cfg->topic, topic);
	}
	if (!cli_sub_topic_valid(topic)) {
		fprintf(stderr, "Error: Invalid subscription topic '%s', are all '+' and '#' wildcards correct?\n",
			topic);
		return 1;
	}
	return strv_add(&cfg->topics, topic);
}

static int o_bind(struct cli_cfg *c, const char *v) { return set_str(&c->bind_address, v); }
static int o_cafile(struct cli_cfg *c, const char *v) { return set_str(&c->cafile, v); }
static int o_capath(struct cli_cfg *c, const char *v) { return set_str(&c->capath, v); }
static int o_cert(struct cli_cfg *c, const char *v) { return set_str(&c->certfile, v); }
static int o_key(struct cli_cfg *c, const char *v) { return set_str(&c->keyfile, v); }
static int o_keyform(struct cli_cfg *c, const char *v) { return set_str(&c->keyform, v); }
static int o_ciphers(struct cli_cfg *c, const char *v) { return set_str(&c->ciphers, v); }
static int o_alpn(struct cli_cfg *c, const char *v) { return set_str(&c->tls_alpn, v); }
static int o_engine(struct cli_cfg *c, const char *v) { return set_str(&c->tls_engine, v); }
static int o_kpass(struct cli_cfg *c, const char *v) { return set_str(&c->tls_engine_kpass_sha1, v); }
static int o_tlsver(struct cli_cfg *c, const char *v) { return set_str(&c->tls_version, v); }
static int o_psk(struct cli_cfg *c, const char *v) { return set_str(&c->psk, v); }
static int o_pskid(struct cli_cfg *c, const char *v) { return set_str(&c->psk_identity, v); }
static int o_host(struct cli_cfg *c, const char *v) { return set_str(&c->host, v); }
static int o_user(struct cli_cfg *c, const char *v) { return set_str(&c->username, v); }
static int o_pw(struct cli_cfg *c, const char *v) { return set_str(&c->password, v); }
static int o_will_payload(struct cli_cfg *c, const char *v) { return set_str(&c->will_payload, v); }
static int o_insecure(struct cli_cfg *c, const char *v) { (void)v; c->insecure = true; return 0; }
static int o_os_certs(struct cli_cfg *c, const char *v) { (void)v; c->tls_use_os_certs = true; return 0; }
static int o_nodelay(struct cli_cfg *c, const char *v) { (void)v; c->nodelay = true; return 0; }
static int o_clean(struct cli_cfg *c, const char *v) { (void)v; c->clean_session = false; return 0; }
static int o_debug(struct cli_cfg *c, const char *v) { (void)v; c->debug = true; return 0; }
static int o_quiet(struct cli_cfg *c, const char *v) { (void)v; c->quiet = true; return 0; }
static int o_exit_sub(struct cli_cfg *c, const char *v) { (void)v; c->exit_after_sub = true; return 0; }
static int o_noeol(struct cli_cfg *c, const char *v) { (void)v; c->eol = false; return 0; }
static int o_pretty(struct cli_cfg *c, const char *v) { (void)v; c->pretty = true; return 0; }
static int o_retain(struct cli_cfg *c, const char *v) { (void)v; c->retain = true; return 0; }
static int o_no_retain(struct cli_cfg *c, const char *v) { (void)v; c->no_retain = true; return 0; }
static int o_remove_retained(struct cli_cfg *c, const char *v) { (void)v; c->remove_retained = true; return 0; }
static int o_rap(struct cli_cfg *c, const char *v) { (void)v; c->retain_as_published = true; return 0; }
static int o_retained_only(struct cli_cfg *c, const char *v) { (void)v; c->retained_only = true; return 0; }
static int o_verbose(struct cli_cfg *c, const char *v) { (void)v; c->verbose = true; return 0; }
static int o_will_retain(struct cli_cfg *c, const char *v) { (void)v; c->will_retain = true; return 0; }
static int o_stdin_line(struct cli_cfg *c, const char *v) { (void)v; return msg_mode(c, CLI_MSG_STDIN_LINE); }
static int o_stdin_file(struct cli_cfg *c, const char *v) { (void)v; return msg_mode(c, CLI_MSG_STDIN_FILE); }
static int o_null_msg(struct cli_cfg *c, const char *v) { (void)v; return msg_mode(c, CLI_MSG_NULL); }

static int o_count(struct cli_cfg *c, const char *v)
{
	c->msg_count = atoi(v);
	if (c->msg_count < 1) {
		fprintf(stderr, "Error: Invalid message count \"%d\".\n\n", c->msg_count);
		return 1;
	}
	return 0;
}

/* Never called: -D takes a variable number of arguments, parsed in
 * cli_cfg_parse_args(). */
static int o_property(struct cli_cfg *c, const char *v)
{
	(void)c;
	(void)v;
	return 1;
}

static int o_file(struct cli_cfg *c, const char *v)
{
	c->pub_mode = CLI_MSG_FILE;
	return set_str(&c->file_input, v);
}

static int o_format(struct cli_cfg *c, const char *v)
{
	if (set_str(&c->format, v))
		return 1;
	return cli_check_format(c->format);
}

static int o_id(struct cli_cfg *c, const char *v)
{
	if (c->id_prefix) {
		fprintf(stderr, "Error: -i and -I argument cannot be used together.\n\n");
		return 1;
	}
	return set_str(&c->id, v);
}

static int o_id_prefix(struct cli_cfg *c, const char *v)
{
	if (c->id) {
		fprintf(stderr, "Error: -i and -I argument cannot be used together.\n\n");
		return 1;
	}
	return set_str(&c->id_prefix, v);
}

static int o_keepalive(struct cli_cfg *c, const char *v)
{
	c->keepalive = atoi(v);
	if (c->keepalive < 5 || c->keepalive > UINT16_MAX) {
		fprintf(stderr, "Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.\n\n");
		return 1;
	}
	return 0;
}

/* mqtt(s)://[username[:password]@]host[:port]/topic */
static int o_url(struct cli_cfg *c, const char *v)
{
	char *url = wisp_strndup(v, strlen(v)), *p = url;
	int rc = 1;
	if (!url)
		return 1;
	if (!strncasecmp(p, "mqtt://", 7)) {
		p += 7;
		c->port = 1883;
	} else if (!strncasecmp(p, "mqtts://", 8)) {
		p += 8;
		c->port = 8883;
		c->tls_use_os_certs = true;
	} else {
		fprintf(stderr, "Error: unsupported URL scheme.\n\n");
		goto out;
	}
	char *topic = strchr(p, '/');
	if (!topic) {
		fprintf(stderr, "Error: Invalid URL for -L argument specified - topic missing.\n");
		goto out;
	}
	*topic++ = '\0';
	if (add_topic(c, topic, "-L topic"))
		goto out;
	char *at = strchr(p, '@');
	if (at) {
		*at = '\0';
		char *colon = strchr(p, ':');
		if (colon) {
			*colon = '\0';
			if (set_str(&c->password, colon + 1))
				goto out;
		}
		if (set_str(&c->username, p))
			goto out;
		p = at + 1;
	}
	char *colon = strchr(p, ':');
	if (colon) {
		*colon = '\0';
		c->port = atoi(colon + 1);
	}
	rc = set_str(&c->host, p);
out:
	wisp_free(url);
	return rc;
}

static int o_message(struct cli_cfg *c, const char *v)
{
	size_t len = strlen(v);
	if (len > MQTT_MAX_REMAINING_LEN) {
		fprintf(stderr, "Error: Message length must be less than %u bytes.\n\n", MQTT_MAX_REMAINING_LEN);
		return 1;
	}
	c->pub_mode = CLI_MSG_CMD;
	c->msglen = len;
	return set_str(&c->message, v);
}

static int o_max_inflight(struct cli_cfg *c, const char *v)
{
	int n = atoi(v);
	if (n < 1) {
		fprintf(stderr, "Error: Maximum inflight messages must be greater than 0.\n\n");
		return 1;
	}
	c->max_inflight = (unsigned)n;
	return 0;
}

static int o_port(struct cli_cfg *c, const char *v)
{
	c->port = atoi(v);
	if (c->port < 0 || c->port > 65535) {
		fprintf(stderr, "Error: Invalid port given: %d\n", c->port);
		return 1;
	}
	return 0;
}

static int o_proxy(struct cli_cfg *c, const char *v)
{
	if (strncmp(v, "socks5h://", 10) != 0) {
		fprintf(stderr, "Error: Unsupported proxy protocol: %s\n", v);
		return 1;
	}
	return set_str(&c->proxy, v);
}

static int o_qos(struct cli_cfg *c, const char *v)
{
	c->qos = atoi(v);
	if (c->qos < 0 || c->qos > 2) {
		fprintf(stderr, "Error: Invalid QoS given: %d\n", c->qos);
		return 1;
	}
	return 0;
}

static int o_random_filter(struct cli_cfg *c, const char *v)
{
	c->random_filter = (int)(10.0 * atof(v));
	if (c->random_filter > 10000 || c->random_filter < 1) {
		fprintf(stderr, "Error: --random-filter chance must be between 0.1-100.0\n\n");
		return 1;
	}
	return 0;
}

static int o_repeat(struct cli_cfg *c, const char *v)
{
	c->repeat_count = atoi(v);
	if (c->repeat_count < 1) {
		fprintf(stderr, "Error: --repeat argument must be >0.\n\n");
		return 1;
	}
	return 0;
}

static int o_repeat_delay(struct cli_cfg *c, const char *v)
{
	double f = atof(v);
	if (f < 0.0) {
		fprintf(stderr, "Error: --repeat-delay argument must be >=0.0.\n\n");
		return 1;
	}
	c->repeat_delay_us = (uint64_t)(f * 1e6);
	return 0;
}

static int o_topic(struct cli_cfg *c, const char *v) { return add_topic(c, v, "-t"); }

static int add_filter(struct cli_strv *sv, const char *v, const char *opt, const char *what)
{
	if (!cli_utf8_valid(v)) {
		fprintf(stderr, "Error: Malformed UTF-8 in %s argument.\n\n", opt);
		return 1;
	}
	if (!cli_sub_topic_valid(v)) {
		fprintf(stderr, "Error: Invalid %s topic '%s', are all '+' and '#' wildcards correct?\n", what, v);
		return 1;
	}
	return strv_add(sv, v);
}

static int o_filter_out(struct cli_cfg *c, const char *v) { return add_filter(&c->filter_outs, v, "-T", "filter"); }
static int o_unsub(struct cli_cfg *c, const char *v) { return add_filter(&c->unsub_topics, v, "-U", "unsubscribe"); }

static int o_unix(struct cli_cfg *c, const char *v)
{
	c->port = 0;
	if (set_str(&c->unix_path, v))
		return 1;
	return set_str(&c->host, v);
}

static int o_version_arg(struct cli_cfg *c, const char *v)
{
	if (!strcmp(v, "mqttv31") || !strcmp(v, "31"))
		c->protocol_version = MQTT_PROTO_V31;
	else if (!strcmp(v, "mqttv311") || !strcmp(v, "311"))
		c->protocol_version = MQTT_PROTO_V311;
	else if (!strcmp(v, "mqttv5") || !strcmp(v, "5"))
		c->protocol_version = MQTT_PROTO_V5;
	else {
		fprintf(stderr, "Error: Invalid protocol version argument given.\n\n");
		return 1;
	}
	return 0;
}

static int o_timeout(struct cli_cfg *c, const char *v)
{
	int t = atoi(v);
	if (t < 1) {
		fprintf(stderr, "Error: Invalid timeout \"%d\".\n\n", t);
		return 1;
	}
	c->timeout = (unsigned)t;
	return 0;
}

static int o_will_qos(struct cli_cfg *c, const char *v)
{
	c->will_qos = atoi(v);
	if (c->will_qos < 0 || c->will_qos > 2) {
		fprintf(stderr, "Error: Invalid will QoS %d.\n\n", c->will_qos);
		return 1;
	}
	return 0;
}

static int o_will_topic(struct cli_cfg *c, const char *v)
{
	if (!cli_utf8_valid(v)) {
		fprintf(stderr, "Error: Malformed UTF-8 in --will-topic argument.\n\n");
		return 1;
	}
	if (!cli_pub_topic_valid(v)) {
		fprintf(stderr, "Error: Invalid will topic '%s', does it contain '+' or '#'?\n", v);
		return 1;
	}
	return set_str(&c->will_topic, v);
}

static int o_session_expiry(struct cli_cfg *c, const char *v)
{
	if (!strcmp(v, "\xe2\x88\x9e")) { /* "∞" */
		c->session_expiry = UINT32_MAX;
		return 0;
	}
	char *end = NULL;
	long long x = strtoll(v, &end, 0);
	if (end == v || *end != '\0') {
		fprintf(stderr, "Error: session-expiry-interval not a number.\n\n");
		return 1;
	}
	if (x > (long long)UINT32_MAX || x < -1) {
		fprintf(stderr, "Error: session-expiry-interval out of range.\n\n");
		return 1;
	}
	c->session_expiry = x == -1 ? (long long)UINT32_MAX : x;
	return 0;
}

struct opt {
	const char *s, *l; /* short and long spelling; either may be NULL */
	unsigned who;
	const char *missing; /* NULL: takes no value */
	opt_fn fn;
	/* Mode options refuse a second message source before the value check. */
	bool is_msg_mode;
};

/* Missing-value texts are mosquitto's, verbatim. */
static const struct opt OPTS[] = {
	{"-A", NULL, FOR_ALL, "-A argument given but no address specified", o_bind, false},
	{NULL, "--cafile", FOR_ALL, "--cafile argument given but no file specified", o_cafile, false},
	{NULL, "--capath", FOR_ALL, "--capath argument given but no directory specified", o_capath, false},
	{NULL, "--cert", FOR_ALL, "--cert argument given but no file specified", o_cert, false},
	{NULL, "--ciphers", FOR_ALL, "--ciphers argument given but no ciphers specified", o_ciphers, false},
	{"-C", NULL, FOR_SUB, "-C argument given but no count specified", o_count, false},
	{"-c", "--disable-clean-session", FOR_ALL, NULL, o_clean, false},
	{"-d", "--debug", FOR_ALL, NULL, o_debug, false},
	{"-D", "--property", FOR_ALL, NULL, o_property, false},
	{"-E", NULL, FOR_SUB, NULL, o_exit_sub, false},
	{"-f", "--file", FOR_PUB, "-f argument given but no file specified", o_file, true},
	{"-F", NULL, FOR_SUB, "-F argument given but no format specified", o_format, false},
	{"-h", "--host", FOR_ALL, "-h argument given but no host specified", o_host, false},
	{NULL, "--insecure", FOR_ALL, NULL, o_insecure, false},
	{"-i", "--id", FOR_ALL, "-i argument given but no id specified", o_id, false},
	{"-I", "--id-prefix", FOR_ALL, "-I argument given but no id prefix specified", o_id_prefix, false},
	{"-k", "--keepalive", FOR_ALL, "-k argument given but no keepalive specified", o_keepalive, false},
	{NULL, "--key", FOR_ALL, "--key argument given but no file specified", o_key, false},
	{NULL, "--keyform", FOR_ALL, "--keyform argument given but no keyform specified", o_keyform, false},
	{"-L", "--url", FOR_ALL, "-L argument given but no URL specified", o_url, false},
	{"-l", "--stdin-line", FOR_PUB, NULL, o_stdin_line, false},
	{"-m", "--message", FOR_PUB, "-m argument given but no message specified", o_message, true},
	{"-M", NULL, FOR_ALL, "-M argument given but max_inflight not specified", o_max_inflight, false},
	{NULL, "--nodelay", FOR_ALL, NULL, o_nodelay, false},
	{"-n", "--null-message", FOR_PUB, NULL, o_null_msg, false},
	{"-N", NULL, FOR_SUB, NULL, o_noeol, false},
	{"-p", "--port", FOR_ALL, "-p argument given but no port specified", o_port, false},
	{NULL, "--pretty", FOR_SUB, NULL, o_pretty, false},
	{"-P", "--pw", FOR_ALL, "-P argument given but no password specified", o_pw, false},
	{NULL, "--proxy", FOR_ALL, "--proxy argument given but no proxy url specified", o_proxy, false},
	{NULL, "--psk", FOR_ALL, "--psk argument given but no key specified", o_psk, false},
	{NULL, "--psk-identity", FOR_ALL, "--psk-identity argument given but no identity specified", o_pskid, false},
	{"-q", "--qos", FOR_ALL, "-q argument given but no QoS specified", o_qos, false},
	{NULL, "--quiet", FOR_ALL, NULL, o_quiet, false},
	{"-r", "--retain", FOR_PUB, NULL, o_retain, false},
	{"-R", NULL, FOR_SUB, NULL, o_no_retain, false},
	{NULL, "--random-filter", FOR_SUB, "--random-filter argument given but no chance specified", o_random_filter, false},
	{NULL, "--remove-retained", FOR_SUB, NULL, o_remove_retained, false},
	{NULL, "--repeat", FOR_PUB, "--repeat argument given but no count specified", o_repeat, false},
	{NULL, "--repeat-delay", FOR_PUB, "--repeat-delay argument given but no time specified", o_repeat_delay, false},
	{NULL, "--retain-as-published", FOR_SUB, NULL, o_rap, false},
	{NULL, "--retained-only", FOR_SUB, NULL, o_retained_only, false},
	{"-s", "--stdin-file", FOR_PUB, NULL, o_stdin_file, false},
	{"-t", "--topic", FOR_ALL, "-t argument given but no topic specified", o_topic, false},
	{"-T", "--filter-out", FOR_SUB, "-T argument given but no topic filter specified", o_filter_out, false},
	{NULL, "--tls-alpn", FOR_ALL, "--tls-alpn argument given but no protocol specified", o_alpn, false},
	{NULL, "--tls-engine", FOR_ALL, "--tls-engine argument given but no engine_id specified", o_engine, false},
	{NULL, "--tls-engine-kpass-sha1", FOR_ALL, "--tls-engine-kpass-sha1 argument given but no kpass sha1 specified", o_kpass, false},
	{NULL, "--tls-use-os-certs", FOR_ALL, NULL, o_os_certs, false},
	{NULL, "--tls-version", FOR_ALL, "--tls-version argument given but no version specified", o_tlsver, false},
	{"-U", "--unsubscribe", FOR_SUB, "-U argument given but no unsubscribe topic specified", o_unsub, false},
	{"-u", "--username", FOR_ALL, "-u argument given but no username specified", o_user, false},
	{NULL, "--unix", FOR_ALL, "--unix argument given but no socket path specified", o_unix, false},
	{"-V", "--protocol-version", FOR_ALL, "--protocol-version argument given but no version specified", o_version_arg, false},
	{"-v", "--verbose", FOR_SUB, NULL, o_verbose, false},
	{"-W", NULL, FOR_SUB, "-W argument given but no timeout specified", o_timeout, false},
	{NULL, "--will-payload", FOR_ALL, "--will-payload argument given but no will payload specified", o_will_payload, false},
	{NULL, "--will-qos", FOR_ALL, "--will-qos argument given but no will QoS specified", o_will_qos, false},
	{NULL, "--will-retain", FOR_ALL, NULL, o_will_retain, false},
	{NULL, "--will-topic", FOR_ALL, "--will-topic argument given but no will topic specified", o_will_topic, false},
	{"-x", NULL, FOR_ALL, "-x argument given but no session expiry interval specified", o_session_expiry, false},
};

static const struct opt *find_opt(const char *arg, unsigned who)
{
	for (size_t i = 0; i < sizeof OPTS / sizeof OPTS[0]; i++) {
		const struct opt *o = &OPTS[i];
		if ((o->s && !strcmp(arg, o->s)) || (o->l && !strcmp(arg, o->l)))
			return (o->who & who) ? o : NULL;
	}
	return NULL;
}

int cli_cfg_parse_args(struct cli_cfg *cfg, int argc, char **argv)
{
	unsigned who = cfg->kind == CLI_PUB ? FOR_PUB : FOR_SUB;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help"))
			return CLI_PARSE_HELP;
		if (!strcmp(argv[i], "--version"))
			return CLI_PARSE_VERSION;
		const struct opt *o = find_opt(argv[i], who);
		if (!o) {
			fprintf(stderr, "Error: Unknown option '%s'.\n", argv[i]);
			return CLI_PARSE_ERROR;
		}
		if (o->fn == o_property) {
			int used = cli_props_parse(&cfg->props, argv + i + 1, argc - i - 1);
			if (used < 0)
				return CLI_PARSE_ERROR;
			i += used;
			cfg->protocol_version = MQTT_PROTO_V5; /* properties force v5, as in mosquitto */
			continue;
		}
		if (!o->missing) {
			if (o->fn(cfg, NULL))
				return CLI_PARSE_ERROR;
			continue;
		}
		if (o->is_msg_mode && cfg->pub_mode != CLI_MSG_NONE)
			return msg_mode(cfg, CLI_MSG_NONE), CLI_PARSE_ERROR;
		if (i == argc - 1) {
			fprintf(stderr, "Error: %s.\n\n", o->missing);
			return CLI_PARSE_ERROR;
		}
		if (o->fn(cfg, argv[++i]))
			return CLI_PARSE_ERROR;
	}
	return 0;
}

void cli_cfg_init(struct cli_cfg *cfg, enum cli_kind kind)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->kind = kind;
	cfg->prog = kind == CLI_PUB ? "wisp_pub" : "wisp_sub";
	cfg->port = CLI_PORT_UNDEFINED;
	cfg->max_inflight = 20;
	cfg->keepalive = 60;
	cfg->clean_session = true;
	cfg->eol = true;
	cfg->repeat_count = 1;
	cfg->random_filter = 10000;
	cfg->protocol_version = MQTT_PROTO_V311;
	cfg->session_expiry = -1;
}

static FILE *open_options_file(const char *name)
{
	char path[4096];
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	if (xdg)
		snprintf(path, sizeof path, "%s/%s", xdg, name);
	else if (home)
		snprintf(path, sizeof path, "%s/.config/%s", home, name);
	else
		return NULL;
	return fopen(path, "r");
}

static int load_options_file(struct cli_cfg *cfg)
{
	FILE *f = open_options_file(cfg->prog);
	if (!f) /* see the file comment of cli_opts.h */
		f = open_options_file(cfg->kind == CLI_PUB ? "mosquitto_pub" : "mosquitto_sub");
	if (!f)
		return 0;
	char line[1024];
	int rc = 0;
	while (rc == 0 && fgets(line, sizeof line, f)) {
		if (line[0] == '#')
			continue;
		size_t len = strlen(line);
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		/* As mosquitto: the first word is the option, the rest of the
		 * line (spaces included) its value. */
		char *save = NULL;
		char *args[3] = {NULL, strtok_r(line, " ", &save), NULL};
		if (!args[1])
			continue;
		args[2] = strtok_r(NULL, "", &save);
		rc = cli_cfg_parse_args(cfg, args[2] ? 3 : 2, args);
	}
	fclose(f);
	return rc;
}

int cli_cfg_load(struct cli_cfg *cfg, enum cli_kind kind, int argc, char **argv)
{
	cli_cfg_init(cfg, kind);
	int rc = load_options_file(cfg);
	if (rc)
		return rc;
	rc = cli_cfg_parse_args(cfg, argc, argv);
	if (rc)
		return rc;
	if (cfg->will_payload && !cfg->will_topic) {
		fprintf(stderr, "Error: Will payload given, but no will topic given.\n");
		return CLI_PARSE_ERROR;
	}
	if (cfg->will_retain && !cfg->will_topic) {
		fprintf(stderr, "Error: Will retain given, but no will topic given.\n");
		return CLI_PARSE_ERROR;
	}
	if ((cfg->certfile && !cfg->keyfile) || (cfg->keyfile && !cfg->certfile)) {
		fprintf(stderr, "Error: Both certfile and keyfile must be provided if one of them is set.\n");
		return CLI_PARSE_ERROR;
	}
	if (cfg->keyform && !cfg->keyfile) {
		fprintf(stderr, "Error: If keyform is set, keyfile must be also specified.\n");
		return CLI_PARSE_ERROR;
	}
	if (cfg->tls_engine_kpass_sha1 && (!cfg->keyform || !cfg->tls_engine)) {
		fprintf(stderr, "Error: when using tls-engine-kpass-sha1, both tls-engine and keyform must also be provided.\n");
		return CLI_PARSE_ERROR;
	}
	if ((cfg->cafile || cfg->capath) && cfg->psk) {
		fprintf(stderr, "Error: Only one of --psk or --cafile/--capath may be used at once.\n");
		return CLI_PARSE_ERROR;
	}
	if (cfg->psk && !cfg->psk_identity) {
		fprintf(stderr, "Error: --psk-identity required if --psk used.\n");
		return CLI_PARSE_ERROR;
	}
	if (cfg->protocol_version == MQTT_PROTO_V5) {
		if (!cfg->clean_session && cfg->session_expiry == -1)
			cfg->session_expiry = UINT32_MAX;
		if (cfg->session_expiry > 0 && cfg->session_expiry == UINT32_MAX && (cfg->id_prefix || !cfg->id)) {
			fprintf(stderr, "Error: You must provide a client id if you are using an infinite session expiry interval.\n");
			return CLI_PARSE_ERROR;
		}
		/* [MQTT-3.1.2.11.2]; after the -D ones, so a second one is a duplicate. */
		if (cfg->session_expiry > 0 &&
		    cli_props_add_u32(&cfg->props.list[CLI_PROPS_CONNECT], MQTT_PROP_SESSION_EXPIRY,
				      (uint32_t)cfg->session_expiry) != 0) {
			fprintf(stderr, "Error: Out of memory.\n");
			return CLI_PARSE_ERROR;
		}
	} else if (!cfg->clean_session && (cfg->id_prefix || !cfg->id)) {
		fprintf(stderr, "Error: You must provide a client id if you are using the -c option.\n");
		return CLI_PARSE_ERROR;
	}
	if (kind == CLI_SUB && cfg->topics.n == 0) {
		fprintf(stderr, "Error: You must specify a topic to subscribe to.\n");
		return CLI_PARSE_ERROR;
	}
	if (!cfg->host && set_str(&cfg->host, "localhost"))
		return CLI_PARSE_ERROR;
	return cli_props_check_all(&cfg->props, cfg->quiet) ? CLI_PARSE_ERROR : 0;
}

int cli_cfg_port(const struct cli_cfg *cfg)
{
	if (cfg->port != CLI_PORT_UNDEFINED)
		return cfg->port;
	return (cfg->cafile || cfg->capath || cfg->psk) ? 8883 : 1883;
}

void cli_cfg_cleanup(struct cli_cfg *cfg)
{
	char **strs[] = {&cfg->host, &cfg->bind_address, &cfg->unix_path, &cfg->id, &cfg->id_prefix,
			 &cfg->username, &cfg->password, &cfg->will_topic, &cfg->will_payload, &cfg->cafile,
			 &cfg->capath, &cfg->certfile, &cfg->keyfile, &cfg->keyform, &cfg->tls_engine,
			 &cfg->tls_engine_kpass_sha1, &cfg->ciphers, &cfg->tls_version, &cfg->tls_alpn,
			 &cfg->psk, &cfg->psk_identity, &cfg->proxy, &cfg->topic, &cfg->message,
			 &cfg->file_input, &cfg->format};
	for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
		wisp_free(*strs[i]);
		*strs[i] = NULL;
	}
	strv_free(&cfg->topics);
	strv_free(&cfg->filter_outs);
	strv_free(&cfg->unsub_topics);
	cli_props_cleanup(&cfg->props);
}
