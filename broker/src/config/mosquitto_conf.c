/*
 * Mosquitto configuration reader: mosquitto.conf text -> Wisp JSON (cJSON)
 * -> config_parse, the validator every JSON file goes through.
 *
 * What it does: one table of Mosquitto keys ({name, scope, Wisp JSON path,
 * converter}, in the manner of config.c's schema tables) turns each line
 * into a value in a Wisp-shaped JSON tree, with Mosquitto 2.0's meaning:
 * keys before the first `listener` line belong to the default listener
 * (which exists only when one of them is used, and comes last, as in
 * mosquitto's conf.c); a listener without a bind address listens on IPv4
 * and IPv6 (two Wisp listeners); a file without any listener runs in
 * Mosquitto's local-only mode (127.0.0.1 and ::1, port 1883, anonymous
 * allowed); otherwise allow_anonymous defaults to false; security keys are
 * global unless per_listener_settings is true. Where the file is silent on
 * anything else, Wisp's defaults apply (notably persistence is on).
 *
 * Each value remembers the file and line it came from, so a value the
 * validator refuses is reported as "<file>:<line>: <key>: <reason>" too.
 *
 * Bridges: a `connection` line starts a Wisp bridge (bridges[]); the bridge
 * keys after it (address, topic, bridge_protocol_version, remote_clientid,
 * remote_username/password, cleansession, keepalive_interval, try_private,
 * bridge_cafile/certfile/keyfile, bridge_insecure, restart_timeout,
 * local_username) fill
 * it in, with Mosquitto's defaults where Wisp's differ (client id
 * "<host name>.<connection>", topic QoS 0). Bridge keys Wisp has no
 * counterpart for are refused.
 *
 * What it does not do: plugins, and every key whose meaning Wisp cannot honour: those
 * are refused with the reason, never skipped. A key whose Wisp counterpart
 * is still being written is one table row with K_NOT_YET. Mosquitto's
 * per-listener keys that Wisp has broker-wide (max_qos, max_topic_alias,
 * and password_file/acl_file under per_listener_settings) are accepted
 * when every listener agrees, refused otherwise.
 *
 * Cost: start-up and reload only; keys are looked up linearly (~120 rows).
 * Single-threaded; no global state. The cJSON tree uses cJSON's allocator
 * (transient, as in config.c); what is returned comes from wisp_malloc.
 */
#include "mosquitto_conf.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "err.h"
#include "file.h"

#define CONF_FILE_MAX (4u * 1024u * 1024u)
#define INCLUDE_FILES_MAX 1000u
#define ORIGIN_PATH 64
#define KEY_MAX 48

enum { SCOPE_GLOBAL = -1, SCOPE_DEFAULT = -2 };

/* Where a value of the translated JSON came from. */
struct origin {
	int scope;              /* SCOPE_GLOBAL, SCOPE_DEFAULT or a listener index */
	char path[ORIGIN_PATH]; /* JSON path inside the scope, "" for the listener itself */
	const char *file;       /* owned by reader.files */
	unsigned line;
	char key[KEY_MAX];
};

/* A security setting (per listener or global), kept until the end because
 * its meaning depends on per_listener_settings and on the listeners. */
struct sec_val {
	bool set;
	char *s; /* wisp_malloc'd copy of the value */
	const char *file;
	unsigned line;
};

struct sec {
	struct sec_val password_file, acl_file, allow_anonymous;
};

struct mlistener {
	cJSON *obj;  /* Wisp listener keys */
	cJSON *wide; /* per-listener Mosquitto keys that are broker-wide in Wisp, by Wisp path */
	struct sec sec;
	int id;     /* scope of its origins */
	int domain; /* 0: IPv4 and IPv6; 4; 6 */
	bool has_bind;
	bool used; /* the default listener: one of its keys appeared */
	bool tls_keys;
	bool websockets; /* protocol websockets */
	const char *file;
	unsigned line;
	size_t first, count; /* the Wisp listeners made from it */
};

enum scope_kind {
	MK_GLOBAL,   /* top-level Wisp keys */
	MK_LISTENER, /* the listener being configured (the default one before any `listener`) */
	MK_DEFAULT,  /* always the default listener (`port`, `bind_address`) */
	MK_SECURITY, /* global, or per listener with per_listener_settings true */
	MK_OTHER,    /* the converter knows */
};

struct reader;
struct mosq_key;
typedef int (*conv_fn)(struct reader *r, const struct mosq_key *k, const char *value);

struct mosq_key {
	const char *name;
	enum scope_kind scope;
	const char *wisp; /* JSON path inside the scope, or NULL */
	conv_fn conv;
	long long min, max;     /* integers: Mosquitto's own bounds */
	bool has_unlimited;     /* integers: Mosquitto's "no limit" value ... */
	long long unlimited;    /* ... */
	long long wisp_unlimited; /* ... and Wisp's way of saying it */
	const char *why;        /* refusals: the reason */
	bool rest_of_line;      /* the value is the rest of the line (file names may hold spaces) */
	long long dflt;         /* per-listener keys Wisp has broker-wide: Mosquitto's default */
	bool no_default_listener; /* ... and before any `listener`, it does not make the default one real */
};

struct reader {
	const char *main_file;
	char **files;
	size_t nfiles;
	cJSON *global;
	struct mlistener *ls;
	size_t nls;
	struct mlistener def;
	struct mlistener *cur;
	struct sec gsec;
	bool per_listener;
	bool security_seen;
	bool local_only; /* no listener: Mosquitto 2.0's local-only mode */
	struct origin *origins;
	size_t norigins, cap_origins;
	unsigned log_types;
	const char *log_type_file;
	unsigned log_type_line;
	const char *log_dest;
	const char *log_dest_file;
	unsigned log_dest_line;
	bool in_include;
	cJSON *bridges;    /* bridges[], NULL until a `connection` line */
	cJSON *bridge;     /* the one the bridge keys go to: the last `connection` */
	char *err;
	size_t errlen;
	const char *file; /* current position, for messages */
	unsigned line;
	const char *key;
};

/* ---- errors ---- */

__attribute__((format(printf, 2, 3))) static int fail(struct reader *r, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	if (r->errlen) {
		if (r->key)
			snprintf(r->err, r->errlen, "%s:%u: %s: %s", r->file, r->line, r->key, reason);
		else
			snprintf(r->err, r->errlen, "%s:%u: %s", r->file, r->line, reason);
	}
	return WISP_ECONFIG;
}

static int fail_nomem(struct reader *r)
{
	if (r->errlen)
		snprintf(r->err, r->errlen, "%s: out of memory", r->main_file);
	return WISP_ENOMEM;
}

/* Reports at a remembered position instead of the current line. */
__attribute__((format(printf, 5, 6))) static int fail_at(struct reader *r, const char *file, unsigned line,
							  const char *key, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	if (r->errlen)
		snprintf(r->err, r->errlen, "%s:%u: %s: %s", file, line, key, reason);
	return WISP_ECONFIG;
}

/* ---- JSON tree helpers ---- */

/* Remembers that the value at `path` in `scope` came from file:line, key. */
static int add_origin_at(struct reader *r, int scope, const char *path, const char *file, unsigned line,
			 const char *key)
{
	struct origin *o = NULL;
	for (size_t i = 0; i < r->norigins && !o; i++)
		if (r->origins[i].scope == scope && strcmp(r->origins[i].path, path) == 0)
			o = &r->origins[i];
	if (!o) {
		if (r->norigins == r->cap_origins) {
			size_t cap = r->cap_origins ? r->cap_origins * 2 : 32;
			struct origin *n = wisp_realloc(r->origins, cap * sizeof *n);
			if (!n)
				return fail_nomem(r);
			r->origins = n;
			r->cap_origins = cap;
		}
		o = &r->origins[r->norigins++];
		o->scope = scope;
		snprintf(o->path, sizeof o->path, "%s", path);
	}
	o->file = file;
	o->line = line;
	snprintf(o->key, sizeof o->key, "%s", key ? key : "");
	return 0;
}

/* ... from the line being read. */
static int add_origin(struct reader *r, int scope, const char *path)
{
	return add_origin_at(r, scope, path, r->file, r->line, r->key);
}

/* Puts `item` (taken) at the dotted `path` under `obj`, creating the
 * objects on the way and replacing what was there. */
static int set_at(struct reader *r, cJSON *obj, const char *path, cJSON *item)
{
	if (!item)
		return fail_nomem(r);
	char part[ORIGIN_PATH];
	const char *s = path;
	for (;;) {
		const char *dot = strchr(s, '.');
		if (!dot)
			break;
		snprintf(part, sizeof part, "%.*s", (int)(dot - s), s);
		cJSON *child = cJSON_GetObjectItemCaseSensitive(obj, part);
		if (!child) {
			child = cJSON_AddObjectToObject(obj, part);
			if (!child) {
				cJSON_Delete(item);
				return fail_nomem(r);
			}
		}
		obj = child;
		s = dot + 1;
	}
	if (cJSON_GetObjectItemCaseSensitive(obj, s))
		return cJSON_ReplaceItemInObjectCaseSensitive(obj, s, item) ? 0 : fail_nomem(r);
	if (!cJSON_AddItemToObject(obj, s, item)) {
		cJSON_Delete(item);
		return fail_nomem(r);
	}
	return 0;
}

static const cJSON *get_at(const cJSON *obj, const char *path)
{
	char part[ORIGIN_PATH];
	const char *s = path;
	for (const char *dot; obj && (dot = strchr(s, '.')); s = dot + 1) {
		snprintf(part, sizeof part, "%.*s", (int)(dot - s), s);
		obj = cJSON_GetObjectItemCaseSensitive(obj, part);
	}
	return obj ? cJSON_GetObjectItemCaseSensitive(obj, s) : NULL;
}

/* The object a key of this scope writes into, and the scope its origin
 * belongs to. */
static cJSON *target(struct reader *r, enum scope_kind kind, int *scope)
{
	struct mlistener *l = kind == MK_DEFAULT ? &r->def : r->cur;
	if (kind == MK_GLOBAL) {
		*scope = SCOPE_GLOBAL;
		return r->global;
	}
	l->used = true;
	if (!l->file) { /* where the default listener became real, for messages */
		l->file = r->file;
		l->line = r->line;
	}
	*scope = l->id;
	return l->obj;
}

static int put(struct reader *r, const struct mosq_key *k, cJSON *item)
{
	int scope;
	cJSON *obj = target(r, k->scope, &scope);
	int rc = set_at(r, obj, k->wisp, item);
	return rc ? rc : add_origin(r, scope, k->wisp);
}

/* ---- values ---- */

/* Mosquitto's integers: one token, optional minus sign, digits only. */
static int parse_int(struct reader *r, const char *value, long long *out)
{
	const char *s = value;
	if (*s == '-')
		s++;
	if (!isdigit((unsigned char)*s))
		return fail(r, "expected an integer, got '%s'", value);
	while (isdigit((unsigned char)*s))
		s++;
	if (*s)
		return fail(r, "expected an integer, got '%s'", value);
	errno = 0;
	long long v = strtoll(value, NULL, 10);
	if (errno)
		return fail(r, "integer out of range: %s", value);
	*out = v;
	return 0;
}

static int parse_bool(struct reader *r, const char *value, bool *out)
{
	if (!strcmp(value, "true"))
		*out = true;
	else if (!strcmp(value, "false"))
		*out = false;
	else
		return fail(r, "expected true or false, got '%s'", value);
	return 0;
}

static bool is_single_token(const char *value) { return !strpbrk(value, " \t"); }

/* ---- converters ---- */

static int conv_bool(struct reader *r, const struct mosq_key *k, const char *value)
{
	bool b = false;
	int rc = parse_bool(r, value, &b);
	return rc ? rc : put(r, k, cJSON_CreateBool(b));
}

/* An integer in Mosquitto's bounds; Mosquitto's "no limit" becomes
 * Wisp's. Wisp's own bounds are the validator's job. */
static int conv_int(struct reader *r, const struct mosq_key *k, const char *value)
{
	long long v;
	int rc = parse_int(r, value, &v);
	if (rc)
		return rc;
	if (k->has_unlimited && v == k->unlimited)
		v = k->wisp_unlimited;
	else if (v < k->min || v > k->max)
		return fail(r, "out of range: %lld (Mosquitto allows %lld to %lld)", v, k->min, k->max);
	return put(r, k, cJSON_CreateNumber((double)v));
}

/* A string value (the rest of the line: file names may hold spaces).
 * Mosquitto refuses a second one, so do we. */
static int conv_string(struct reader *r, const struct mosq_key *k, const char *value)
{
	int scope;
	const cJSON *obj = target(r, k->scope, &scope);
	if (get_at(obj, k->wisp)) {
		for (size_t i = 0; i < r->norigins; i++)
			if (r->origins[i].scope == scope && !strcmp(r->origins[i].path, k->wisp))
				return fail(r, "duplicate value (already set at %s:%u)", r->origins[i].file,
					    r->origins[i].line);
		return fail(r, "duplicate value");
	}
	return put(r, k, cJSON_CreateString(value));
}

static int conv_refuse(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)value;
	return fail(r, "not supported by Wisp: %s", k->why);
}

/* `true`, Mosquitto's default, is what Wisp does: accepted without a word. */
static int conv_default_only(struct reader *r, const struct mosq_key *k, const char *value)
{
	bool v;
	int rc = parse_bool(r, value, &v);
	if (rc || v)
		return rc;
	return fail(r, "not supported by Wisp: %s", k->why);
}

static int conv_not_yet(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)value;
	return fail(r, "not supported yet (%s)", k->why);
}

static int conv_bridge(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)value;
	return fail(r, "not supported by Wisp's bridges: %s", k->why ? k->why : "no counterpart");
}

/* ---- bridges ---- */

static int bridge_put(struct reader *r, const char *path, cJSON *item)
{
	if (!r->bridge) {
		cJSON_Delete(item);
		return fail(r, "a bridge key needs a `connection` line before it");
	}
	cJSON_DeleteItemFromObjectCaseSensitive(r->bridge, path); /* a repeated key: the last one counts */
	return set_at(r, r->bridge, path, item);
}

static int conv_connection(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	if (!r->bridges && !(r->bridges = cJSON_CreateArray()))
		return fail_nomem(r);
	for (const cJSON *b = r->bridges->child; b; b = b->next)
		if (!strcmp(cJSON_GetObjectItemCaseSensitive(b, "name")->valuestring, value))
			return fail(r, "a second connection named '%s'", value);
	cJSON *b = cJSON_CreateObject();
	if (!b || !cJSON_AddStringToObject(b, "name", value)) {
		cJSON_Delete(b);
		return fail_nomem(r);
	}
	cJSON_AddItemToArray(r->bridges, b);
	r->bridge = b;
	return 0;
}

/* `address host[:port] [host[:port]...]`: port 1883 by default. */
static int conv_address(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	cJSON *arr = cJSON_CreateArray();
	if (!arr)
		return fail_nomem(r);
	const char *p = value;
	while (*p) {
		size_t n = strcspn(p, " \t");
		char one[300];
		if (n >= 256) {
			cJSON_Delete(arr);
			return fail(r, "address too long");
		}
		bool has_port = memchr(p, ':', n) && !(p[0] == '[' && p[n - 1] == ']');
		snprintf(one, sizeof one, "%.*s%s", (int)n, p, has_port ? "" : ":1883");
		cJSON *s = cJSON_CreateString(one);
		if (!s) {
			cJSON_Delete(arr);
			return fail_nomem(r);
		}
		cJSON_AddItemToArray(arr, s);
		p += n;
		while (*p == ' ' || *p == '\t')
			p++;
	}
	return bridge_put(r, "addresses", arr);
}

/* `topic pattern [[[out|in|both] qos] local-prefix remote-prefix]`; `""`
 * is an empty prefix. Mosquitto's QoS default is 0. */
static int conv_topic(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	if (!r->bridge)
		return fail(r, "a bridge key needs a `connection` line before it");
	char buf[1024];
	char *tok[6];
	size_t n = 0;
	snprintf(buf, sizeof buf, "%s", value);
	for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
		if (n == 5)
			return fail(r, "expected pattern [direction [qos [local_prefix remote_prefix]]], got '%s'", value);
		tok[n++] = !strcmp(t, "\"\"") ? t + 2 : t;
	}
	if (n == 0 || n == 4)
		return fail(r, "expected pattern [direction [qos [local_prefix remote_prefix]]], got '%s'", value);
	if (!*tok[0])
		return fail(r, "not supported by Wisp's bridges: an empty pattern (the prefix alone as the topic)");
	const char *dir = n > 1 ? tok[1] : "out";
	if (strcmp(dir, "out") && strcmp(dir, "in") && strcmp(dir, "both"))
		return fail(r, "direction '%s': expected out, in or both", dir);
	long long qos = 0;
	if (n > 2) {
		int rc = parse_int(r, tok[2], &qos);
		if (rc)
			return rc;
		if (qos < 0 || qos > 2)
			return fail(r, "qos %lld: expected 0, 1 or 2", qos);
	}
	cJSON *t = cJSON_CreateObject();
	if (!t || !cJSON_AddStringToObject(t, "pattern", tok[0]) || !cJSON_AddStringToObject(t, "direction", dir) ||
	    !cJSON_AddNumberToObject(t, "qos", (double)qos) ||
	    (n == 5 && (!cJSON_AddStringToObject(t, "local_prefix", tok[3]) ||
			!cJSON_AddStringToObject(t, "remote_prefix", tok[4])))) {
		cJSON_Delete(t);
		return fail_nomem(r);
	}
	cJSON *topics = cJSON_GetObjectItemCaseSensitive(r->bridge, "topics");
	if (!topics && !(topics = cJSON_AddArrayToObject(r->bridge, "topics"))) {
		cJSON_Delete(t);
		return fail_nomem(r);
	}
	cJSON_AddItemToArray(topics, t);
	return 0;
}

/* Keys whose value goes to the bridge as it is (k->wisp), as a string, a
 * boolean or an integer by the key's bounds. */
static int conv_bridge_string(struct reader *r, const struct mosq_key *k, const char *value)
{
	return bridge_put(r, k->wisp, cJSON_CreateString(value));
}

static int conv_bridge_bool(struct reader *r, const struct mosq_key *k, const char *value)
{
	bool b = false; /* parse_bool sets it on success; gcc -O2 cannot see fail() is never 0 */
	int rc = parse_bool(r, value, &b);
	return rc ? rc : bridge_put(r, k->wisp, cJSON_CreateBool(b));
}

static int conv_bridge_int(struct reader *r, const struct mosq_key *k, const char *value)
{
	long long v;
	int rc = parse_int(r, value, &v);
	if (rc)
		return rc;
	if (v < k->min || v > k->max)
		return fail(r, "out of range: %lld (allowed %lld to %lld)", v, k->min, k->max);
	return bridge_put(r, k->wisp, cJSON_CreateNumber((double)v));
}

static int conv_bridge_version(struct reader *r, const struct mosq_key *k, const char *value)
{
	if (strcmp(value, "mqttv311") && strcmp(value, "mqttv50"))
		return fail(r, "'%s': Wisp's bridges speak mqttv311 or mqttv50", value);
	return bridge_put(r, k->wisp, cJSON_CreateString(value));
}

/* `restart_timeout base [cap]`: one value is a constant wait, two are
 * Mosquitto's backoff from base to cap (Wisp's doubles with jitter). */
static int conv_restart_timeout(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	long long lo, hi;
	char a[32], b[32];
	int n = sscanf(value, "%31s %31s", a, b);
	int rc = parse_int(r, a, &lo);
	if (rc)
		return rc;
	hi = lo;
	if (n == 2 && (rc = parse_int(r, b, &hi)))
		return rc;
	if (lo < 1 || lo > 3600 || hi < lo || hi > 86400)
		return fail(r, "'%s': expected 1..3600 [and a cap up to 86400, not below it]", value);
	if ((rc = bridge_put(r, "reconnect_min", cJSON_CreateNumber((double)lo))))
		return rc;
	return bridge_put(r, "reconnect_max", cJSON_CreateNumber((double)hi));
}

/* `notifications false`, `start_type automatic`: what Wisp does anyway. */
static int conv_bridge_only(struct reader *r, const struct mosq_key *k, const char *value)
{
	if (!r->bridge)
		return fail(r, "a bridge key needs a `connection` line before it");
	if (strcmp(value, k->wisp))
		return fail(r, "not supported by Wisp's bridges: only '%s' (%s)", k->wisp, k->why);
	return 0;
}

/* Mosquitto's default client id, "<host name>.<connection>", where the
 * file names none. */
static int finish_bridges(struct reader *r)
{
	if (!r->bridges)
		return 0;
	char host[256];
	if (gethostname(host, sizeof host) != 0)
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	for (cJSON *b = r->bridges->child; b; b = b->next) {
		if (cJSON_HasObjectItem(b, "client_id"))
			continue;
		char id[400];
		snprintf(id, sizeof id, "%s.%s", host, cJSON_GetObjectItemCaseSensitive(b, "name")->valuestring);
		if (!cJSON_AddStringToObject(b, "client_id", id))
			return fail_nomem(r);
	}
	return 0;
}

static struct mlistener *new_listener(struct reader *r)
{
	struct mlistener *n = wisp_realloc(r->ls, (r->nls + 1) * sizeof *n);
	if (!n)
		return NULL;
	r->ls = n;
	struct mlistener *l = &r->ls[r->nls];
	memset(l, 0, sizeof *l);
	l->obj = cJSON_CreateObject();
	l->wide = cJSON_CreateObject();
	if (!l->obj || !l->wide) {
		cJSON_Delete(l->obj);
		cJSON_Delete(l->wide);
		return NULL;
	}
	l->id = (int)r->nls;
	l->used = true;
	l->file = r->file;
	l->line = r->line;
	r->nls++;
	/* The array may have moved. */
	if (r->cur != &r->def)
		r->cur = &r->ls[r->nls - 2];
	return l;
}

/* listener <port> [<address>] */
static int conv_listener(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	char port[16];
	size_t n = strcspn(value, " \t");
	if (n >= sizeof port)
		return fail(r, "expected a port number, got '%.*s'", (int)n, value);
	snprintf(port, sizeof port, "%.*s", (int)n, value);
	const char *addr = value + n;
	while (*addr == ' ' || *addr == '\t')
		addr++;
	if (*addr && !is_single_token(addr))
		return fail(r, "expected 'listener <port> [<address>]', got '%s'", value);
	long long v;
	int rc = parse_int(r, port, &v);
	if (rc)
		return rc;
	if (v == 0)
		return fail(r, "not supported by Wisp: port 0 means a Unix socket in Mosquitto; Wisp listens on TCP only");
	if (v < 1 || v > 65535)
		return fail(r, "port out of range: %lld (allowed 1 to 65535)", v);
	struct mlistener *l = new_listener(r);
	if (!l)
		return fail_nomem(r);
	r->cur = l;
	if ((rc = set_at(r, l->obj, "port", cJSON_CreateNumber((double)v))) || (rc = add_origin(r, l->id, "")))
		return rc;
	if (*addr) {
		l->has_bind = true;
		if ((rc = set_at(r, l->obj, "bind", cJSON_CreateString(addr))) || (rc = add_origin(r, l->id, "bind")))
			return rc;
	}
	return 0;
}

static int conv_port(struct reader *r, const struct mosq_key *k, const char *value)
{
	long long v;
	int rc = parse_int(r, value, &v);
	if (rc)
		return rc;
	if (v < 1 || v > 65535)
		return fail(r, "port out of range: %lld (allowed 1 to 65535)", v);
	if ((rc = put(r, k, cJSON_CreateNumber((double)v))))
		return rc;
	if (!r->def.file) {
		r->def.file = r->file;
		r->def.line = r->line;
	}
	return add_origin(r, SCOPE_DEFAULT, "");
}

static int conv_bind_address(struct reader *r, const struct mosq_key *k, const char *value)
{
	if (!is_single_token(value))
		return fail(r, "expected one address, got '%s'", value);
	int rc = conv_string(r, k, value);
	if (!rc)
		r->def.has_bind = true;
	return rc;
}

/* `protocol websockets` makes the listener a "ws" one, "wss" with TLS keys
 * (add_listener_json). */
static int conv_protocol(struct reader *r, const struct mosq_key *k, const char *value)
{
	int scope;
	if (strcmp(value, "mqtt") != 0 && strcmp(value, "websockets") != 0)
		return fail(r, "expected mqtt or websockets, got '%s'", value);
	target(r, k->scope, &scope);
	r->cur->websockets = !strcmp(value, "websockets");
	return add_origin(r, scope, "protocol");
}

static int conv_socket_domain(struct reader *r, const struct mosq_key *k, const char *value)
{
	int scope;
	target(r, k->scope, &scope);
	struct mlistener *l = r->cur;
	if (!strcmp(value, "ipv4"))
		l->domain = 4;
	else if (!strcmp(value, "ipv6"))
		l->domain = 6;
	else
		return fail(r, "expected ipv4 or ipv6, got '%s'", value);
	return add_origin(r, scope, "bind");
}

static int conv_tls_file(struct reader *r, const struct mosq_key *k, const char *value)
{
	r->cur->tls_keys = true;
	return conv_string(r, k, value);
}

static int conv_tls_bool(struct reader *r, const struct mosq_key *k, const char *value)
{
	r->cur->tls_keys = true;
	return conv_bool(r, k, value);
}

static int conv_tls_version(struct reader *r, const struct mosq_key *k, const char *value)
{
	r->cur->tls_keys = true;
	if (!strcmp(value, "tlsv1.2"))
		return put(r, k, cJSON_CreateString("tls1.2"));
	if (!strcmp(value, "tlsv1.3"))
		return put(r, k, cJSON_CreateString("tls1.3"));
	if (!strcmp(value, "tlsv1.1") || !strcmp(value, "tlsv1"))
		return fail(r, "not supported by Wisp: %s (Wisp accepts TLS 1.2 and later only)", value);
	return fail(r, "expected tlsv1.3, tlsv1.2 or tlsv1.1, got '%s'", value);
}

/* OpenSSL's names for the suites mbedTLS has, and mbedTLS's. */
static const struct {
	const char *openssl, *mbedtls;
} cipher_names[] = {
	{"ECDHE-ECDSA-AES128-GCM-SHA256", "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"},
	{"ECDHE-RSA-AES128-GCM-SHA256", "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"},
	{"ECDHE-ECDSA-AES256-GCM-SHA384", "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"},
	{"ECDHE-RSA-AES256-GCM-SHA384", "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"},
	{"ECDHE-ECDSA-CHACHA20-POLY1305", "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256"},
	{"ECDHE-RSA-CHACHA20-POLY1305", "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256"},
	{"DHE-RSA-AES128-GCM-SHA256", "TLS-DHE-RSA-WITH-AES-128-GCM-SHA256"},
	{"DHE-RSA-AES256-GCM-SHA384", "TLS-DHE-RSA-WITH-AES-256-GCM-SHA384"},
	{"DHE-RSA-CHACHA20-POLY1305", "TLS-DHE-RSA-WITH-CHACHA20-POLY1305-SHA256"},
	{"ECDHE-ECDSA-AES128-SHA256", "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256"},
	{"ECDHE-RSA-AES128-SHA256", "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256"},
	{"ECDHE-ECDSA-AES256-SHA384", "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384"},
	{"ECDHE-RSA-AES256-SHA384", "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384"},
};

/* `ciphers` is an OpenSSL cipher list; Wisp's TLS is mbedTLS. Plain suite
 * names translate one for one; OpenSSL's keywords (HIGH, !aNULL, ...)
 * select by rules mbedTLS does not have, so they are refused. */
static int conv_ciphers(struct reader *r, const struct mosq_key *k, const char *value)
{
	r->cur->tls_keys = true;
	char out[1024] = "";
	size_t used = 0;
	const char *s = value;
	while (*s) {
		size_t n = strcspn(s, ":, ");
		size_t i = 0;
		while (i < sizeof cipher_names / sizeof cipher_names[0] &&
		       (strlen(cipher_names[i].openssl) != n || memcmp(cipher_names[i].openssl, s, n) != 0))
			i++;
		if (i == sizeof cipher_names / sizeof cipher_names[0])
			return fail(r,
				    "cannot translate the OpenSSL cipher '%.*s' to mbedTLS (Wisp understands "
				    "ECDHE/DHE AES-GCM, CHACHA20-POLY1305 and AES-SHA256/384 suite names, not "
				    "OpenSSL keywords)",
				    (int)n, s);
		int w = snprintf(out + used, sizeof out - used, "%s%s", used ? ":" : "", cipher_names[i].mbedtls);
		if (w < 0 || (size_t)w >= sizeof out - used)
			return fail(r, "cipher list too long");
		used += (size_t)w;
		s += n;
		while (*s == ':' || *s == ',' || *s == ' ')
			s++;
	}
	if (!used)
		return fail(r, "empty cipher list");
	return conv_string(r, k, out);
}

/* Mosquitto's -1 is "unlimited"; 0 lets nobody in, which Wisp cannot say
 * (its 0 is unlimited). */
static int conv_max_connections(struct reader *r, const struct mosq_key *k, const char *value)
{
	long long v;
	int rc = parse_int(r, value, &v);
	if (rc)
		return rc;
	if (v == 0)
		return fail(r, "not supported by Wisp: 0 refuses every connection in Mosquitto; remove the listener "
			       "instead (-1 means unlimited)");
	if (v < -1)
		return fail(r, "out of range: %lld (-1 means unlimited)", v);
	return put(r, k, cJSON_CreateNumber(v == -1 ? 0.0 : (double)v));
}

/* A per-listener Mosquitto key that Wisp has for the whole broker
 * (max_qos, max_topic_alias): kept per listener until the end, where every
 * listener must have the same value (build). */
static int conv_listener_wide(struct reader *r, const struct mosq_key *k, const char *value)
{
	long long v;
	int rc = parse_int(r, value, &v);
	if (rc)
		return rc;
	if (v < k->min || v > k->max)
		return fail(r, "out of range: %lld (Mosquitto allows %lld to %lld)", v, k->min, k->max);
	int scope = r->cur->id;
	if (!k->no_default_listener)
		target(r, MK_LISTENER, &scope);
	rc = set_at(r, r->cur->wide, k->wisp, cJSON_CreateNumber((double)v));
	return rc ? rc : add_origin(r, scope, k->wisp);
}

/* <n>h, d, w, m (30 days) or y (365 days), as Mosquitto reads it. */
static int conv_expiration(struct reader *r, const struct mosq_key *k, const char *value)
{
	static const struct {
		char unit;
		long long seconds;
	} units[] = {{'h', 3600}, {'d', 86400}, {'w', 7 * 86400}, {'m', 30 * 86400}, {'y', 365 * 86400}};
	size_t len = strlen(value);
	char num[24];
	long long mult = 0;
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
		if (value[len - 1] == units[i].unit)
			mult = units[i].seconds;
	if (!mult || len < 2 || len - 1 >= sizeof num)
		return fail(r, "expected a duration such as 12h, 14d, 2w, 6m or 1y, got '%s'", value);
	snprintf(num, sizeof num, "%.*s", (int)(len - 1), value);
	long long v;
	int rc = parse_int(r, num, &v);
	if (rc)
		return rc;
	if (v < 0 || v > (long long)UINT32_MAX / mult)
		return fail(r, "out of range: %s", value);
	return put(r, k, cJSON_CreateNumber((double)(v * mult)));
}

static int conv_message_size_limit(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	long long v;
	int rc = parse_int(r, value, &v);
	if (rc)
		return rc;
	if (v == 0)
		return 0; /* no payload limit: Wisp has none either (max_packet_size bounds the packet) */
	return fail(r, "not supported by Wisp: a payload limit that completes the QoS flow and drops the "
		       "message; use max_packet_size, which closes the connection of a client sending more");
}

/* Security keys: global, or the current listener's with
 * per_listener_settings true. Kept aside until the listeners are known. */
static int conv_security(struct reader *r, const struct mosq_key *k, const char *value)
{
	struct sec *sec = r->per_listener ? &r->cur->sec : &r->gsec;
	struct sec_val *v = !strcmp(k->name, "password_file") ? &sec->password_file
			    : !strcmp(k->name, "acl_file")    ? &sec->acl_file
							      : &sec->allow_anonymous;
	if (v == &sec->allow_anonymous) {
		bool b = false;
		int rc = parse_bool(r, value, &b);
		if (rc)
			return rc;
	} else if (v->set) {
		return fail(r, "duplicate value (already set at %s:%u)", v->file, v->line);
	}
	r->security_seen = true;
	/* Mosquitto makes the default listener real for a per-listener password file. */
	if (r->per_listener && r->cur == &r->def && v == &sec->password_file) {
		int scope;
		target(r, MK_LISTENER, &scope);
	}
	char *s = wisp_strndup(value, strlen(value));
	if (!s)
		return fail_nomem(r);
	wisp_free(v->s);
	v->s = s;
	v->set = true;
	v->file = r->file;
	v->line = r->line;
	return 0;
}

static int conv_per_listener(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	bool b = false;
	int rc = parse_bool(r, value, &b);
	if (rc)
		return rc;
	if (r->security_seen && b != r->per_listener)
		return fail(r, "must come before allow_anonymous, password_file and acl_file (as Mosquitto requires)");
	r->per_listener = b;
	return 0;
}

static int conv_persistence_file(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	if (!strcmp(value, "mosquitto.db"))
		return 0; /* Mosquitto's default name: nothing to translate */
	return fail(r, "not supported by Wisp: Wisp keeps its store as several files (log.N, snap.N) in "
		       "persistence_location, not in one named file; remove persistence_file, or give each "
		       "broker its own persistence_location");
}

/* Mosquitto saves its whole database every autosave_interval seconds (0:
 * only at exit) and loses what came since on a crash; Wisp writes every
 * acknowledged message before the acknowledgement. The nearest fsync policy
 * is never weaker: once a second for an interval, "no" (the OS decides;
 * still survives a crash of the broker) for 0. */
static int conv_autosave(struct reader *r, const struct mosq_key *k, const char *value)
{
	long long v;
	int rc = parse_int(r, value, &v);
	if (rc)
		return rc;
	if (v < 0)
		return fail(r, "out of range: %lld (seconds, 0 = at exit only)", v);
	return put(r, k, cJSON_CreateString(v == 0 ? "no" : "everysec"));
}

static int conv_log_dest(struct reader *r, const struct mosq_key *k, const char *value)
{
	const char *dest;
	char path[4096];
	size_t n = strcspn(value, " \t");
	if (n == 4 && !strncmp(value, "file", 4)) {
		const char *f = value + n;
		while (*f == ' ' || *f == '\t')
			f++;
		if (!*f)
			return fail(r, "log_dest file needs a file name");
		snprintf(path, sizeof path, "%s", f);
		dest = path;
	} else if (!strcmp(value, "stderr") || !strcmp(value, "syslog")) {
		dest = value;
	} else if (!strcmp(value, "none")) {
		dest = "/dev/null";
	} else if (!strcmp(value, "stdout")) {
		return fail(r, "not supported by Wisp: Wisp logs to stderr, syslog or a file (use log_dest stderr)");
	} else if (!strcmp(value, "topic")) {
		return fail(r, "not supported by Wisp: the log is not published on $SYS/broker/log");
	} else if (!strcmp(value, "dlt")) {
		return fail(r, "not supported by Wisp: no DLT logging");
	} else {
		return fail(r, "expected stdout, stderr, syslog, topic, file <path>, dlt or none, got '%s'", value);
	}
	if (r->log_dest && strcmp(r->log_dest, dest) != 0)
		return fail(r, "not supported by Wisp: a second log destination (Wisp writes to one; already %s "
			       "at %s:%u)",
			    r->log_dest, r->log_dest_file, r->log_dest_line);
	int rc = put(r, k, cJSON_CreateString(dest));
	if (rc)
		return rc;
	r->log_dest = cJSON_GetStringValue(get_at(r->global, k->wisp));
	r->log_dest_file = r->file;
	r->log_dest_line = r->line;
	return 0;
}

/* Mosquitto's severities, least verbose first: Wisp logs by level, so a
 * set of types must be every severity up to the most verbose one. */
static const char *const log_severities[] = {"error", "warning", "notice", "information", "debug"};
static const char *const log_levels[] = {"error", "warning", "notice", "info", "debug"};
enum { LT_SUBSCRIBE = 1u << 5, LT_UNSUBSCRIBE = 1u << 6, LT_ALL = 0x7fu };

static int conv_log_type(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	unsigned bit = 0;
	for (unsigned i = 0; i < 5; i++)
		if (!strcmp(value, log_severities[i]))
			bit = 1u << i;
	if (!strcmp(value, "subscribe"))
		bit = LT_SUBSCRIBE;
	else if (!strcmp(value, "unsubscribe"))
		bit = LT_UNSUBSCRIBE;
	else if (!strcmp(value, "all"))
		bit = LT_ALL;
	else if (!strcmp(value, "none"))
		return fail(r, "not supported by Wisp: Wisp always logs errors (use log_dest none to discard the log)");
	else if (!strcmp(value, "websockets"))
		return 0; /* libwebsockets' own log: Wisp logs WebSocket events with the connections */
	if (!bit)
		return fail(r, "expected debug, error, warning, notice, information, subscribe, unsubscribe, "
			       "websockets, none or all, got '%s'",
			    value);
	r->log_types |= bit;
	r->log_type_file = r->file;
	r->log_type_line = r->line;
	return 0;
}

static int conv_log_timestamp(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	bool b = false;
	int rc = parse_bool(r, value, &b);
	if (rc)
		return rc;
	return b ? 0 : fail(r, "not supported by Wisp: every text log line starts with its time");
}

static int read_text(struct reader *r, const char *file, const char *text, size_t len);

/* Mosquitto's include_dir order: letter by letter, case-insensitively,
 * and an upper-case letter before the same letter in lower case. */
static int include_cmp(const void *a, const void *b)
{
	const unsigned char *s1 = *(const unsigned char *const *)a;
	const unsigned char *s2 = *(const unsigned char *const *)b;
	for (; *s1 && *s2; s1++, s2++) {
		int d = toupper(*s1) - toupper(*s2);
		if (d)
			return d;
		if (*s1 != *s2)
			return *s1 - *s2;
	}
	return *s1 - *s2;
}

static const char *intern_file(struct reader *r, const char *name)
{
	char **n = wisp_realloc(r->files, (r->nfiles + 1) * sizeof *n);
	if (!n)
		return NULL;
	r->files = n;
	char *s = wisp_strndup(name, strlen(name));
	if (!s)
		return NULL;
	r->files[r->nfiles++] = s;
	return s;
}

static int read_file_at(struct reader *r, const char *path)
{
	char *buf = NULL;
	size_t len = 0;
	int rc = wisp_read_file(path, CONF_FILE_MAX, &buf, &len);
	if (rc == WISP_ENOMEM)
		return fail_nomem(r);
	if (rc == WISP_ELIMIT)
		return fail(r, "%s: file larger than %u bytes", path, CONF_FILE_MAX);
	if (rc)
		return fail(r, "cannot read %s: %s", path, strerror(errno));
	const char *name = intern_file(r, path);
	if (!name) {
		wisp_free(buf);
		return fail_nomem(r);
	}
	const char *file = r->file;
	unsigned line = r->line;
	const char *key = r->key;
	rc = read_text(r, name, buf ? buf : "", len);
	r->file = file;
	r->line = line;
	r->key = key;
	wisp_free(buf);
	return rc;
}

static int conv_include_dir(struct reader *r, const struct mosq_key *k, const char *value)
{
	(void)k;
	if (r->in_include)
		return fail(r, "only allowed in the main configuration file (as in Mosquitto)");
	DIR *d = opendir(value);
	if (!d)
		return fail(r, "cannot open directory %s: %s", value, strerror(errno));
	char **names = NULL;
	size_t n = 0;
	int rc = 0;
	for (struct dirent *de; !rc && (de = readdir(d));) {
		size_t len = strlen(de->d_name);
		if (len <= 5 || strcmp(de->d_name + len - 5, ".conf") != 0)
			continue;
		if (n == INCLUDE_FILES_MAX) {
			rc = fail(r, "more than %u .conf files in %s", INCLUDE_FILES_MAX, value);
			break;
		}
		char **nn = wisp_realloc(names, (n + 1) * sizeof *nn);
		if (!nn) {
			rc = fail_nomem(r);
			break;
		}
		names = nn;
		size_t plen = strlen(value) + 1 + len + 1;
		names[n] = wisp_malloc(plen);
		if (!names[n]) {
			rc = fail_nomem(r);
			break;
		}
		/* Sort on the name; the directory prefix is the same for all. */
		snprintf(names[n], plen, "%s", de->d_name);
		n++;
	}
	closedir(d);
	if (!rc)
		qsort(names, n, sizeof *names, include_cmp);
	r->in_include = true;
	for (size_t i = 0; !rc && i < n; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s%s%s", value, value[strlen(value) - 1] == '/' ? "" : "/", names[i]);
		rc = read_file_at(r, path);
	}
	r->in_include = false;
	for (size_t i = 0; i < n; i++)
		wisp_free(names[i]);
	wisp_free(names);
	return rc;
}

/* ---- the table ---- */

#define K_INT(n, sc, w, lo, hi) {.name = n, .scope = sc, .wisp = w, .conv = conv_int, .min = lo, .max = hi}
#define K_INT_UNL(n, sc, w, lo, hi, unl, wunl)                                                        \
	{.name = n, .scope = sc, .wisp = w, .conv = conv_int, .min = lo, .max = hi, .has_unlimited = true, \
	 .unlimited = unl, .wisp_unlimited = wunl}
#define K_CONV(n, sc, w, fn) {.name = n, .scope = sc, .wisp = w, .conv = fn}
#define K_REST(n, sc, w, fn) {.name = n, .scope = sc, .wisp = w, .conv = fn, .rest_of_line = true}
#define K_WIDE(n, w, lo, hi, d, nodef)                                                                 \
	{.name = n, .scope = MK_LISTENER, .wisp = w, .conv = conv_listener_wide, .min = lo, .max = hi, .dflt = d, \
	 .no_default_listener = nodef}
#define K_REFUSE(n, reason) {.name = n, .scope = MK_OTHER, .conv = conv_refuse, .why = reason}
#define K_NOT_YET(n, reason) {.name = n, .scope = MK_OTHER, .conv = conv_not_yet, .why = reason}

static const struct mosq_key mosq_keys[] = {
	/* listeners */
	K_REST("listener", MK_OTHER, "port", conv_listener),
	K_CONV("port", MK_DEFAULT, "port", conv_port),
	K_CONV("bind_address", MK_DEFAULT, "bind", conv_bind_address),
	K_CONV("protocol", MK_LISTENER, "protocol", conv_protocol),
	K_CONV("socket_domain", MK_LISTENER, NULL, conv_socket_domain),
	K_CONV("max_connections", MK_LISTENER, "max_connections", conv_max_connections),
	/* TLS */
	K_REST("cafile", MK_LISTENER, "tls.ca", conv_tls_file),
	K_REST("certfile", MK_LISTENER, "tls.cert", conv_tls_file),
	K_REST("keyfile", MK_LISTENER, "tls.key", conv_tls_file),
	K_CONV("require_certificate", MK_LISTENER, "tls.require_certificate", conv_tls_bool),
	K_CONV("use_identity_as_username", MK_LISTENER, "tls.use_identity_as_username", conv_tls_bool),
	K_CONV("tls_version", MK_LISTENER, "tls.min_version", conv_tls_version),
	K_REST("ciphers", MK_LISTENER, "tls.ciphersuites", conv_ciphers),
	/* authentication and access control */
	K_CONV("allow_anonymous", MK_SECURITY, "allow_anonymous", conv_security),
	K_REST("password_file", MK_SECURITY, "auth.password_file", conv_security),
	K_REST("acl_file", MK_SECURITY, "auth.acl_file", conv_security),
	K_CONV("per_listener_settings", MK_GLOBAL, NULL, conv_per_listener),
	/* limits */
	K_INT_UNL("max_inflight_messages", MK_GLOBAL, "limits.max_inflight", 1, INT32_MAX, 0, 65535),
	K_INT("max_queued_messages", MK_GLOBAL, "limits.max_queued_messages", 0, INT32_MAX),
	K_INT("max_queued_bytes", MK_GLOBAL, "limits.max_queued_bytes", 0, INT64_MAX),
	K_CONV("message_size_limit", MK_GLOBAL, NULL, conv_message_size_limit),
	K_INT_UNL("max_packet_size", MK_GLOBAL, "limits.max_packet_size", 20, INT32_MAX, 0, 268435460),
	K_INT("max_keepalive", MK_GLOBAL, "limits.max_keepalive", 0, 65535),
	K_INT("memory_limit", MK_GLOBAL, "limits.memory_limit", 0, INT64_MAX),
	/* per listener in Mosquitto, for the whole broker in Wisp; Mosquitto
	 * 2.0.11 reads maximum_qos as max_qos */
	K_WIDE("max_qos", "limits.max_qos", 0, 2, 2, false),
	K_WIDE("maximum_qos", "limits.max_qos", 0, 2, 2, false),
	K_WIDE("max_topic_alias", "limits.max_topic_alias", 0, 65535, 10, true),
	K_CONV("retain_available", MK_GLOBAL, "limits.retain_available", conv_bool),
	/* Mosquitto expires only sessions that would never expire (3.1.1 clean
	 * session 0, v5 0xFFFFFFFF); Wisp's bound also shortens a longer v5
	 * Session Expiry Interval (README.md, Migrating from Mosquitto). */
	K_CONV("persistent_client_expiration", MK_GLOBAL, "limits.max_session_expiry", conv_expiration),
	/* persistence */
	K_CONV("persistence", MK_GLOBAL, "persistence.enabled", conv_bool),
	K_REST("persistence_location", MK_GLOBAL, "persistence.dir", conv_string),
	K_REST("persistence_file", MK_GLOBAL, NULL, conv_persistence_file),
	K_CONV("autosave_interval", MK_GLOBAL, "persistence.fsync", conv_autosave),
	/* logging */
	K_REST("log_dest", MK_GLOBAL, "log.destination", conv_log_dest),
	K_CONV("log_type", MK_GLOBAL, "log.level", conv_log_type),
	K_CONV("log_timestamp", MK_GLOBAL, NULL, conv_log_timestamp),
	K_INT("sys_interval", MK_GLOBAL, "sys_interval", 0, INT32_MAX),
	K_REST("include_dir", MK_OTHER, NULL, conv_include_dir),
	/* Mosquitto keys Wisp has no meaning for */
	K_REFUSE("retry_interval", "deprecated in Mosquitto, where it has no effect; remove it"),
	K_REST("pid_file", MK_GLOBAL, "pid_file", conv_string),
	K_REFUSE("user", "Wisp does not change user; start it as the user it should run as (systemd User=)"),
	K_REFUSE("allow_duplicate_messages", "deprecated in Mosquitto; remove it"),
	K_REFUSE("allow_zero_length_clientid", "Wisp always assigns an id to a client that sends none"),
	K_REFUSE("auto_id_prefix", "Wisp chooses the ids it assigns"),
	K_REFUSE("auth_plugin", "no plugins"),
	K_REFUSE("plugin", "no plugins"),
	K_REFUSE("auth_plugin_deny_special_chars", "no plugins"),
	K_REFUSE("autosave_on_changes", "Wisp writes every change as it happens"),
	K_REFUSE("check_retain_source", "retained messages are checked against the subscriber's ACL only"),
	K_REFUSE("clientid_prefixes", "use an ACL instead"),
	{.name = "connection_messages", .scope = MK_OTHER, .conv = conv_default_only,
	 .why = "connections are logged at level notice; log_type warning (log.level \"warning\") leaves them out"},
	K_REFUSE("log_facility", "syslog uses facility daemon"),
	K_REFUSE("log_timestamp_format", "every text log line starts with an ISO 8601 UTC time"),
	K_REFUSE("max_inflight_bytes", "in-flight messages are bounded by count (max_inflight_messages)"),
	K_REFUSE("queue_qos0_messages",
		 "QoS 0 messages are never queued for offline clients (a bridge's are with queue_qos0 in a JSON bridges entry)"),
	K_REFUSE("set_tcp_nodelay", "Wisp always sets TCP_NODELAY"),
	K_REFUSE("upgrade_outgoing_qos", "messages are delivered at the QoS the specification says"),
	K_REFUSE("bind_interface", "use a bind address (listener <port> <address>)"),
	K_REFUSE("http_dir", "no HTTP file serving"),
	K_REFUSE("mount_point", "no mount points"),
	K_REFUSE("use_username_as_clientid", "not available"),
	K_REFUSE("use_subject_as_username", "use use_identity_as_username (the certificate's CN)"),
	K_REFUSE("capath", "put the CA certificates in one cafile"),
	K_REFUSE("crlfile", "no certificate revocation lists"),
	K_REFUSE("dhparamfile", "Wisp uses ECDHE key exchange"),
	K_REFUSE("ciphers_tls1.3", "TLS 1.3 suites are not configurable"),
	K_REFUSE("psk_hint", "no pre-shared-key TLS"),
	K_REFUSE("psk_file", "no pre-shared-key TLS"),
	K_REFUSE("tls_engine", "no OpenSSL engines (Wisp's TLS is mbedTLS)"),
	K_REFUSE("tls_engine_kpass_sha1", "no OpenSSL engines (Wisp's TLS is mbedTLS)"),
	K_REFUSE("tls_keyform", "keys are read from PEM files"),
	K_REFUSE("websockets_log_level", "no libwebsockets"),
	K_REFUSE("websockets_headers_size", "no libwebsockets"),
	/* bridges: a `connection` line, then its keys */
	K_CONV("connection", MK_OTHER, NULL, conv_connection),
	K_REST("address", MK_OTHER, NULL, conv_address),
	K_REST("addresses", MK_OTHER, NULL, conv_address),
	K_REST("topic", MK_OTHER, NULL, conv_topic),
	K_CONV("bridge_protocol_version", MK_OTHER, "protocol_version", conv_bridge_version),
	K_CONV("remote_clientid", MK_OTHER, "client_id", conv_bridge_string),
	K_CONV("clientid", MK_OTHER, "client_id", conv_bridge_string),
	K_CONV("remote_username", MK_OTHER, "username", conv_bridge_string),
	K_CONV("username", MK_OTHER, "username", conv_bridge_string),
	K_CONV("remote_password", MK_OTHER, "password", conv_bridge_string),
	K_CONV("password", MK_OTHER, "password", conv_bridge_string),
	K_CONV("cleansession", MK_OTHER, "clean_start", conv_bridge_bool),
	{.name = "keepalive_interval", .scope = MK_OTHER, .wisp = "keepalive", .conv = conv_bridge_int, .min = 5,
	 .max = 65535},
	K_CONV("try_private", MK_OTHER, "try_private", conv_bridge_bool),
	K_REST("bridge_cafile", MK_OTHER, "cafile", conv_bridge_string),
	K_REST("bridge_certfile", MK_OTHER, "certfile", conv_bridge_string),
	K_REST("bridge_keyfile", MK_OTHER, "keyfile", conv_bridge_string),
	K_CONV("bridge_insecure", MK_OTHER, "tls_insecure", conv_bridge_bool),
	K_REST("restart_timeout", MK_OTHER, NULL, conv_restart_timeout),
	{.name = "notifications", .scope = MK_OTHER, .wisp = "false", .conv = conv_bridge_only,
	 .why = "the bridge's state is in $SYS/broker/bridges/<name>/"},
	{.name = "start_type", .scope = MK_OTHER, .wisp = "automatic", .conv = conv_bridge_only,
	 .why = "a bridge connects at start and reconnects by itself"},
	{.name = "bridge_attempt_unsubscribe", .scope = MK_OTHER, .conv = conv_bridge, .why = "no unsubscribing"},
	{.name = "bridge_bind_address", .scope = MK_OTHER, .conv = conv_bridge, .why = "the kernel picks the source"},
	{.name = "bridge_capath", .scope = MK_OTHER, .conv = conv_bridge, .why = "use bridge_cafile"},
	{.name = "bridge_alpn", .scope = MK_OTHER, .conv = conv_bridge, .why = "no ALPN"},
	{.name = "bridge_identity", .scope = MK_OTHER, .conv = conv_bridge, .why = "no TLS-PSK"},
	{.name = "bridge_psk", .scope = MK_OTHER, .conv = conv_bridge, .why = "no TLS-PSK"},
	{.name = "bridge_max_packet_size", .scope = MK_OTHER, .conv = conv_bridge, .why = "no per-bridge packet bound"},
	{.name = "bridge_outgoing_retain", .scope = MK_OTHER, .conv = conv_bridge,
	 .why = "the retain flag always crosses as published"},
	{.name = "bridge_require_ocsp", .scope = MK_OTHER, .conv = conv_bridge, .why = "no OCSP"},
	{.name = "bridge_tls_version", .scope = MK_OTHER, .conv = conv_bridge, .why = "TLS 1.2 (mbedTLS 2.28)"},
	{.name = "local_cleansession", .scope = MK_OTHER, .conv = conv_bridge,
	 .why = "the local side is always a persistent session (store-and-forward)"},
	{.name = "local_clientid", .scope = MK_OTHER, .conv = conv_bridge,
	 .why = "the local session is $bridge/<connection> (what %c means in ACL patterns for it)"},
	K_CONV("local_username", MK_OTHER, "local_username", conv_bridge_string),
	{.name = "local_password", .scope = MK_OTHER, .conv = conv_bridge,
	 .why = "the local side is not a login: local_username alone chooses its ACL rules"},
	{.name = "idle_timeout", .scope = MK_OTHER, .conv = conv_bridge, .why = "only start_type automatic"},
	{.name = "threshold", .scope = MK_OTHER, .conv = conv_bridge, .why = "only start_type automatic"},
	{.name = "notifications_local_only", .scope = MK_OTHER, .conv = conv_bridge, .why = "no notifications"},
	{.name = "notification_topic", .scope = MK_OTHER, .conv = conv_bridge, .why = "no notifications"},
	{.name = "round_robin", .scope = MK_OTHER, .conv = conv_bridge,
	 .why = "addresses are tried in turn after each failure, never returning to the first while one works"},
	{0},
};

static const struct mosq_key *find_key(const char *name)
{
	for (const struct mosq_key *k = mosq_keys; k->name; k++)
		if (!strcmp(k->name, name))
			return k;
	return NULL;
}

/* ---- lines ---- */

static int read_line(struct reader *r, char *line)
{
	char *s = line;
	while (*s == ' ' || *s == '\t')
		s++;
	size_t len = strlen(s);
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r'))
		s[--len] = '\0';
	if (!*s || *s == '#')
		return 0;
	size_t n = strcspn(s, " \t");
	char key[KEY_MAX];
	snprintf(key, sizeof key, "%.*s", (int)(n < sizeof key ? n : sizeof key - 1), s);
	r->key = key;
	const char *value = s + n;
	while (*value == ' ' || *value == '\t')
		value++;
	int rc;
	const struct mosq_key *k = find_key(key);
	if (!k && (!strncmp(key, "auth_opt_", 9) || !strncmp(key, "plugin_opt_", 11)))
		rc = fail(r, "not supported by Wisp: no plugins");
	else if (!k || n >= sizeof key)
		rc = fail(r, "unknown key");
	else if (k->conv == conv_refuse || k->conv == conv_not_yet || k->conv == conv_bridge)
		rc = k->conv(r, k, value);
	else if (!*value)
		rc = fail(r, "missing value");
	else if (!k->rest_of_line && !is_single_token(value))
		rc = fail(r, "expected one value, got '%s'", value);
	else
		rc = k->conv(r, k, value);
	r->key = NULL;
	return rc;
}

static int read_text(struct reader *r, const char *file, const char *text, size_t len)
{
	r->file = file;
	r->line = 0;
	r->key = NULL;
	size_t skip = len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0;
	const char *p = text + skip, *end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		r->line++;
		if (memchr(p, '\0', n))
			return fail(r, "NUL byte in the line");
		char *line = wisp_strndup(p, n);
		if (!line)
			return fail_nomem(r);
		int rc = read_line(r, line);
		wisp_free(line);
		if (rc)
			return rc;
		p += n + (nl ? 1 : 0);
	}
	return 0;
}

/* ---- building the Wisp document ---- */

static int add_listener_json(struct reader *r, cJSON *arr, struct mlistener *l, const char *bind,
			     bool allow_anonymous)
{
	cJSON *o = cJSON_Duplicate(l->obj, 1);
	if (!o)
		return fail_nomem(r);
	if (bind && cJSON_AddStringToObject(o, "bind", bind) == NULL) {
		cJSON_Delete(o);
		return fail_nomem(r);
	}
	if (!cJSON_HasObjectItem(o, "port") && !cJSON_AddNumberToObject(o, "port", 1883)) {
		cJSON_Delete(o);
		return fail_nomem(r);
	}
	const char *proto = l->websockets ? (l->tls_keys ? "wss" : "ws") : l->tls_keys ? "mqtts" : NULL;
	if (proto && !cJSON_AddStringToObject(o, "protocol", proto)) {
		cJSON_Delete(o);
		return fail_nomem(r);
	}
	if (!cJSON_AddBoolToObject(o, "allow_anonymous", allow_anonymous)) {
		cJSON_Delete(o);
		return fail_nomem(r);
	}
	cJSON_AddItemToArray(arr, o);
	if (!l->count)
		l->first = (size_t)cJSON_GetArraySize(arr) - 1;
	l->count++;
	return 0;
}

static const struct origin *find_origin(struct reader *r, int scope, const char *path)
{
	for (size_t i = 0; i < r->norigins; i++)
		if (r->origins[i].scope == scope && !strcmp(r->origins[i].path, path))
			return &r->origins[i];
	return NULL;
}

static int emit_listener(struct reader *r, cJSON *arr, struct mlistener *l, bool allow_anonymous)
{
	if (l->tls_keys) {
		const cJSON *tls = cJSON_GetObjectItemCaseSensitive(l->obj, "tls");
		const char *missing = !cJSON_HasObjectItem(tls, "cert")  ? "certfile"
				      : !cJSON_HasObjectItem(tls, "key") ? "keyfile"
									 : NULL;
		if (missing)
			return fail_at(r, l->file, l->line, "listener",
				       "TLS settings without %s: Mosquitto needs certfile and keyfile to enable TLS",
				       missing);
		const cJSON *req = cJSON_GetObjectItemCaseSensitive(tls, "require_certificate");
		const struct origin *o = find_origin(r, l->id, "tls.require_certificate");
		if (cJSON_IsTrue(req) && !cJSON_HasObjectItem(tls, "ca") && o)
			return fail_at(r, o->file, o->line, o->key, "needs cafile (the CA client certificates must chain to)");
	}
	if (l->has_bind)
		return add_listener_json(r, arr, l, NULL, allow_anonymous);
	if (l->domain != 6) {
		int rc = add_listener_json(r, arr, l, "0.0.0.0", allow_anonymous);
		if (rc)
			return rc;
	}
	if (l->domain != 4) {
		const struct origin *o = find_origin(r, l->id, "max_connections");
		if (!l->domain && o && cJSON_GetObjectItemCaseSensitive(l->obj, "max_connections")->valuedouble > 0)
			return fail_at(r, o->file, o->line, o->key,
				       "not supported by Wisp on a listener without an address: Wisp listens on IPv4 "
				       "and IPv6 with two sockets and counts each apart; add an address or "
				       "socket_domain to the listener");
		return add_listener_json(r, arr, l, "::", allow_anonymous);
	}
	return 0;
}

/* With per_listener_settings true, each listener may name its own password
 * and ACL files; Wisp has one of each for the broker, so they must agree. */
static int check_same(struct reader *r, struct mlistener **ls, size_t n, const char *key, size_t off)
{
	const struct sec_val *first = (const struct sec_val *)((const char *)&ls[0]->sec + off);
	for (size_t i = 1; i < n; i++) {
		const struct sec_val *v = (const struct sec_val *)((const char *)&ls[i]->sec + off);
		if (v->set == first->set && (!v->set || !strcmp(v->s, first->s)))
			continue;
		const char *file = v->set ? v->file : ls[i]->file;
		unsigned line = v->set ? v->line : ls[i]->line;
		return fail_at(r, file, line, v->set ? key : "listener",
			       "not supported yet: with per_listener_settings true, every listener must use the same "
			       "%s (Wisp has one for the whole broker; this listener's differs from the one at %s:%u)",
			       key, ls[0]->file, ls[0]->line);
	}
	return 0;
}

static int set_auth(struct reader *r, cJSON *root, const struct sec_val *v, const char *path, const char *key)
{
	if (!v->set)
		return 0;
	int rc = set_at(r, root, path, cJSON_CreateString(v->s));
	return rc ? rc : add_origin_at(r, SCOPE_GLOBAL, path, v->file, v->line, key);
}

static double wide_value(const struct mlistener *l, const struct mosq_key *k)
{
	const cJSON *v = get_at(l->wide, k->wisp);
	return v ? v->valuedouble : (double)k->dflt;
}

/* A per-listener Mosquitto key Wisp has broker-wide: every listener must
 * have the same value (Mosquitto's default where a listener is silent). */
static int resolve_wide(struct reader *r, struct mlistener **ls, size_t n, bool local_only, const struct mosq_key *k)
{
	const struct origin *o = find_origin(r, SCOPE_DEFAULT, k->wisp);
	if (o && !r->def.used && !local_only)
		return fail_at(r, o->file, o->line, o->key,
			       "before any listener line this applies to the default listener (port, bind_address), "
			       "which this file does not define, so Mosquitto ignores it; move it after a listener line");
	const struct origin *first = NULL;
	for (size_t i = 0; i < n && !first; i++)
		first = find_origin(r, ls[i]->id, k->wisp);
	if (!first)
		return 0;
	double want = wide_value(ls[0], k);
	for (size_t i = 1; i < n; i++) {
		if (wide_value(ls[i], k) == want)
			continue;
		const struct origin *at = find_origin(r, ls[i]->id, k->wisp);
		return fail_at(r, at ? at->file : ls[i]->file, at ? at->line : ls[i]->line, at ? at->key : "listener",
			       "not supported by Wisp: %s is per listener in Mosquitto and for the whole broker in Wisp, "
			       "so every listener must have the same (this one has %g, the listener at %s:%u has %g)",
			       k->name, wide_value(ls[i], k), ls[0]->file ? ls[0]->file : r->main_file, ls[0]->line, want);
	}
	int rc = set_at(r, r->global, k->wisp, cJSON_CreateNumber(want));
	return rc ? rc : add_origin_at(r, SCOPE_GLOBAL, k->wisp, first->file, first->line, first->key);
}

static int build(struct reader *r, cJSON **out)
{
	int rc;
	cJSON *root = cJSON_CreateObject();
	cJSON *arr = root ? cJSON_AddArrayToObject(root, "listeners") : NULL;
	struct mlistener **ls = NULL;
	if (!arr) {
		cJSON_Delete(root);
		return fail_nomem(r);
	}
	size_t n = 0;
	bool local_only = r->nls == 0 && !r->def.used;
	r->local_only = local_only;
	ls = wisp_calloc(r->nls + 1, sizeof *ls);
	if (!ls) {
		rc = fail_nomem(r);
		goto fail;
	}
	for (size_t i = 0; i < r->nls; i++)
		ls[n++] = &r->ls[i];
	if (r->def.used || local_only)
		ls[n++] = &r->def;

	if (r->per_listener) {
		/* Security keys given before the first listener belong to the
		 * default listener; Mosquitto ignores them if it does not exist. */
		if (!r->def.used && !local_only) {
			const struct sec_val *v = r->def.sec.allow_anonymous.set ? &r->def.sec.allow_anonymous
						  : r->def.sec.acl_file.set       ? &r->def.sec.acl_file
										  : NULL;
			if (v) {
				rc = fail_at(r, v->file, v->line, v == &r->def.sec.acl_file ? "acl_file" : "allow_anonymous",
					     "with per_listener_settings true this applies to the default listener "
					     "(port, bind_address), which this file does not define, so Mosquitto "
					     "ignores it; move it after a listener line");
				goto fail;
			}
		}
		if ((rc = check_same(r, ls, n, "password_file", offsetof(struct sec, password_file))) ||
		    (rc = check_same(r, ls, n, "acl_file", offsetof(struct sec, acl_file))))
			goto fail;
	}
	if (r->def.used && !find_origin(r, SCOPE_DEFAULT, "") &&
	    (rc = add_origin_at(r, SCOPE_DEFAULT, "", r->def.file, r->def.line, "default listener")))
		goto fail;
	for (const struct mosq_key *k = mosq_keys; k->name; k++) {
		if (k->conv != conv_listener_wide)
			continue;
		const struct mosq_key *same = mosq_keys; /* max_qos and maximum_qos: once */
		while (same != k && !(same->conv == conv_listener_wide && !strcmp(same->wisp, k->wisp)))
			same++;
		if (same == k && (rc = resolve_wide(r, ls, n, local_only, k)))
			goto fail;
	}
	const struct sec *gs = r->per_listener ? &ls[0]->sec : &r->gsec;
	if ((rc = set_auth(r, r->global, &gs->password_file, "auth.password_file", "password_file")) ||
	    (rc = set_auth(r, r->global, &gs->acl_file, "auth.acl_file", "acl_file")))
		goto fail;

	if (local_only) {
		/* Mosquitto 2.0 without a listener: local-only mode. */
		const struct sec_val *a = r->per_listener ? &r->def.sec.allow_anonymous : &r->gsec.allow_anonymous;
		bool anon = a->set ? !strcmp(a->s, "true") : true;
		r->def.has_bind = true;
		if ((rc = add_listener_json(r, arr, &r->def, "127.0.0.1", anon)) ||
		    (rc = add_listener_json(r, arr, &r->def, "::1", anon)))
			goto fail;
	} else {
		for (size_t i = 0; i < n; i++) {
			const struct sec_val *a = r->per_listener ? &ls[i]->sec.allow_anonymous : &r->gsec.allow_anonymous;
			bool anon = a->set && !strcmp(a->s, "true");
			if ((rc = emit_listener(r, arr, ls[i], anon)))
				goto fail;
			if (a->set && (rc = add_origin_at(r, ls[i]->id, "allow_anonymous", a->file, a->line,
							  "allow_anonymous")))
				goto fail;
		}
	}

	/* log_type: every severity up to the most verbose one listed. */
	unsigned types = r->log_types ? r->log_types : 0xfu; /* Mosquitto's default: error to information */
	int top = -1;
	for (int i = 0; i < 5; i++)
		if (types & (1u << i))
			top = i;
	if ((types & (LT_SUBSCRIBE | LT_UNSUBSCRIBE)) && top < 4) {
		rc = fail_at(r, r->log_type_file, r->log_type_line, "log_type",
			     "not supported by Wisp: subscriptions are logged at level debug only; add log_type debug");
		goto fail;
	}
	for (int i = 0; i < top; i++) {
		if (!(types & (1u << i))) {
			rc = fail_at(r, r->log_type_file, r->log_type_line, "log_type",
				     "not supported by Wisp: Wisp logs by level, so logging %s logs %s too; add "
				     "log_type %s",
				     log_severities[top], log_severities[i], log_severities[i]);
			goto fail;
		}
	}
	if (top < 0) {
		rc = fail_at(r, r->log_type_file, r->log_type_line, "log_type",
			     "not supported by Wisp: Wisp always logs errors; add log_type error");
		goto fail;
	}
	if ((rc = set_at(r, r->global, "log.level", cJSON_CreateString(log_levels[top]))) ||
	    (r->log_type_file &&
	     (rc = add_origin_at(r, SCOPE_GLOBAL, "log.level", r->log_type_file, r->log_type_line, "log_type"))))
		goto fail;

	/* The top-level keys after "listeners", in the order they first appeared. */
	while (r->global->child) {
		cJSON *c = cJSON_DetachItemViaPointer(r->global, r->global->child);
		cJSON_AddItemToObject(root, c->string, c);
		/* cJSON_AddItemToObject copies the key; the detached item keeps its own. */
	}
	if ((rc = finish_bridges(r)))
		goto fail;
	if (r->bridges) {
		cJSON_AddItemToObject(root, "bridges", r->bridges);
		r->bridges = r->bridge = NULL;
	}
	wisp_free(ls);
	*out = root;
	return 0;
fail:
	wisp_free(ls);
	cJSON_Delete(root);
	return rc;
}

static void reader_free(struct reader *r)
{
	for (size_t i = 0; i < r->nls; i++) {
		cJSON_Delete(r->ls[i].obj);
		cJSON_Delete(r->ls[i].wide);
		wisp_free(r->ls[i].sec.password_file.s);
		wisp_free(r->ls[i].sec.acl_file.s);
		wisp_free(r->ls[i].sec.allow_anonymous.s);
	}
	wisp_free(r->ls);
	cJSON_Delete(r->def.obj);
	cJSON_Delete(r->def.wide);
	struct sec *secs[] = {&r->def.sec, &r->gsec};
	for (size_t i = 0; i < 2; i++) {
		wisp_free(secs[i]->password_file.s);
		wisp_free(secs[i]->acl_file.s);
		wisp_free(secs[i]->allow_anonymous.s);
	}
	cJSON_Delete(r->global);
	cJSON_Delete(r->bridges);
	for (size_t i = 0; i < r->nfiles; i++)
		wisp_free(r->files[i]);
	wisp_free(r->files);
	wisp_free(r->origins);
}

/* Reads and translates; on success *json is the document (cJSON). */
static int convert(struct reader *r, const char *path, const char *text, size_t len, cJSON **json)
{
	r->def.id = SCOPE_DEFAULT;
	r->def.obj = cJSON_CreateObject();
	r->def.wide = cJSON_CreateObject();
	r->global = cJSON_CreateObject();
	r->cur = &r->def;
	r->main_file = path;
	r->file = path;
	if (!r->def.obj || !r->def.wide || !r->global)
		return fail_nomem(r);
	const char *name = intern_file(r, path);
	if (!name)
		return fail_nomem(r);
	int rc = read_text(r, name, text, len);
	if (!rc)
		rc = build(r, json);
	return rc;
}

bool mosq_conf_detect(const char *text, size_t len)
{
	size_t i = len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0;
	while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
		i++;
	return i < len && text[i] != '{' && text[i] != '[';
}

static char *print_json(const cJSON *json)
{
	char *s = cJSON_Print(json);
	if (!s)
		return NULL;
	size_t n = strlen(s);
	char *out = wisp_malloc(n + 2);
	if (out) {
		memcpy(out, s, n);
		out[n] = '\n';
		out[n + 1] = '\0';
	}
	cJSON_free(s);
	return out;
}

int mosq_conf_convert(const char *path, const char *text, size_t len, char **json_out, char *err, size_t errlen)
{
	struct reader r = {.err = err, .errlen = errlen};
	if (errlen)
		err[0] = '\0';
	*json_out = NULL;
	cJSON *json = NULL;
	int rc = convert(&r, path, text, len, &json);
	if (!rc) {
		*json_out = print_json(json);
		if (!*json_out)
			rc = fail_nomem(&r);
	}
	cJSON_Delete(json);
	reader_free(&r);
	return rc;
}

/* Rewrites "<file>: <json path>: <reason>" from config_parse as
 * "<file>:<line>: <mosquitto key>: <reason>", from the longest recorded
 * path that contains the one in error. */
static void map_error(struct reader *r, char *err, size_t errlen)
{
	size_t nlen = strlen(r->main_file);
	if (strncmp(err, r->main_file, nlen) != 0 || strncmp(err + nlen, ": ", 2) != 0)
		return;
	const char *jpath = err + nlen + 2;
	const char *sep = strstr(jpath, ": ");
	if (!sep)
		return;
	char path[ORIGIN_PATH * 2];
	snprintf(path, sizeof path, "%.*s", (int)(sep - jpath), jpath);
	int scope = SCOPE_GLOBAL;
	const char *rel = path;
	if (!strncmp(path, "listeners[", 10)) {
		size_t idx = strtoul(path + 10, NULL, 10);
		const char *close = strchr(path, ']');
		rel = close ? close + 1 : "";
		if (*rel == '.')
			rel++;
		scope = SCOPE_GLOBAL - 100; /* none */
		for (size_t i = 0; i < r->nls + 1; i++) {
			struct mlistener *l = i < r->nls ? &r->ls[i] : &r->def;
			if (l->count && idx >= l->first && idx < l->first + l->count)
				scope = l->id;
		}
	}
	const struct origin *best = NULL;
	for (size_t i = 0; i < r->norigins; i++) {
		const struct origin *o = &r->origins[i];
		size_t pl = strlen(o->path);
		if (o->scope != scope || strncmp(rel, o->path, pl) != 0 || (pl && rel[pl] && rel[pl] != '.'))
			continue;
		if (!best || pl > strlen(best->path))
			best = o;
	}
	if (!best)
		return;
	char reason[512];
	snprintf(reason, sizeof reason, "%s", sep + 2);
	snprintf(err, errlen, "%s:%u: %s: %s (Wisp key %s)", best->file, best->line, best->key, reason, path);
}

int mosq_conf_parse(const char *path, const char *text, size_t len, struct config **out, char *err, size_t errlen)
{
	struct reader r = {.err = err, .errlen = errlen};
	if (errlen)
		err[0] = '\0';
	*out = NULL;
	cJSON *json = NULL;
	int rc = convert(&r, path, text, len, &json);
	char *s = NULL;
	if (!rc && !(s = cJSON_PrintUnformatted(json)))
		rc = fail_nomem(&r);
	if (!rc) {
		rc = config_parse(s, strlen(s), path, out, err, errlen);
		if (rc)
			map_error(&r, err, errlen);
		else
			(*out)->default_listeners = r.local_only;
	}
	cJSON_free(s);
	cJSON_Delete(json);
	reader_free(&r);
	return rc;
}
