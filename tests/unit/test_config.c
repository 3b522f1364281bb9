/*
 * Config parser: every bad document is refused with the exact
 * "<file>: <key path>: <reason>" message; good documents give the parsed
 * values and the documented defaults; config/default.json equals
 * config_default(). Runs in a scratch directory holding the files the
 * documents name, so relative paths resolve.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit_main.h"
#include "alloc.h"
#include "config.h"
#include "err.h"
#include "log.h"

#ifndef WISP_SOURCE_DIR
#define WISP_SOURCE_DIR "."
#endif

static char scratch[] = "/tmp/wisp-test-config-XXXXXX";
static char old_cwd[PATH_MAX];

static int write_file(const char *name, const char *text)
{
	FILE *fp = fopen(name, "w");
	if (!fp)
		return -1;
	fputs(text, fp);
	return fclose(fp);
}

static int suite_init(void)
{
	if (!getcwd(old_cwd, sizeof old_cwd) || !mkdtemp(scratch) || chdir(scratch) == -1)
		return -1;
	if (write_file("cert.pem", "x\n") || write_file("key.pem", "x\n") ||
	    write_file("ca.pem", "x\n") || write_file("passwd", "") || write_file("acl", "") ||
	    mkdir("adir", 0700) == -1 || mkdir("certs", 0700) == -1 || mkdir("config", 0700) == -1 ||
	    write_file("certs/server.crt", "x\n") || write_file("certs/server.key", "x\n") ||
	    write_file("certs/ca.crt", "x\n") || write_file("config/passwd", "") ||
	    write_file("config/acl", ""))
		return -1;
	return 0;
}

static int suite_cleanup(void)
{
	const char *names[] = {"cert.pem",	   "key.pem",	       "ca.pem",       "passwd",
			       "acl",		   "out.log",	       "certs/server.crt", "certs/server.key",
			       "certs/ca.crt", "config/passwd", "config/acl"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		unlink(names[i]);
	rmdir("adir");
	rmdir("certs");
	rmdir("config");
	if (chdir(old_cwd) == -1)
		return -1;
	return rmdir(scratch);
}

struct bad_case {
	const char *json;
	const char *err; /* exact message */
};

static const struct bad_case bad_cases[] = {
	/* syntax */
	{"{", "t.json: line 1, column 2: invalid JSON"},
	{"{\n  \"sys_interval\": 10,\n  \"limits\": tru\n}", "t.json: line 3, column 13: invalid JSON"},
	{"{} trailing", "t.json: line 1, column 4: invalid JSON"},
	{"", "t.json: line 1, column 1: invalid JSON"},
	{"[]", "t.json: (root): expected an object, got an array"},
	{"{\"sys_interval\": 1, \"sys_interval\": 2}", "t.json: sys_interval: duplicate key"},
	/* unknown keys */
	{"{\"limits\": {\"max_inflit\": 5}}",
	 "t.json: limits.max_inflit: unknown key (did you mean 'max_inflight'?)"},
	{"{\"listners\": []}", "t.json: listners: unknown key (did you mean 'listeners'?)"},
	{"{\"listeners\": [{\"prot\": 1}]}",
	 "t.json: listeners[0].prot: unknown key (did you mean 'port'?)"},
	{"{\"frobnicate\": true}", "t.json: frobnicate: unknown key"},
	{"{\"listeners\": [{}, {\"port\": 2, \"tls\": {\"crt\": \"x\"}}]}",
	 "t.json: listeners[1].tls.crt: unknown key (did you mean 'cert'?)"},
	/* types */
	{"{\"sys_interval\": \"10\"}", "t.json: sys_interval: expected an integer, got a string"},
	{"{\"limits\": []}", "t.json: limits: expected an object, got an array"},
	{"{\"listeners\": {}}", "t.json: listeners: expected an array, got an object"},
	{"{\"listeners\": [1]}", "t.json: listeners[0]: expected an object, got a number"},
	{"{\"listeners\": [{\"allow_anonymous\": 1}]}",
	 "t.json: listeners[0].allow_anonymous: expected a boolean, got a number"},
	{"{\"listeners\": [{\"bind\": null}]}", "t.json: listeners[0].bind: expected a string, got null"},
	{"{\"listeners\": [{\"bind\": \"\"}]}", "t.json: listeners[0].bind: must not be empty"},
	/* ranges */
	{"{\"listeners\": [{\"port\": 70000}]}",
	 "t.json: listeners[0].port: out of range: 70000 (allowed 0 to 65535)"},
	{"{\"listeners\": [{\"port\": -1}]}",
	 "t.json: listeners[0].port: out of range: -1 (allowed 0 to 65535)"},
	{"{\"limits\": {\"max_inflight\": 1.5}}",
	 "t.json: limits.max_inflight: must be an integer, got 1.5"},
	{"{\"limits\": {\"max_inflight\": 0}}",
	 "t.json: limits.max_inflight: out of range: 0 (allowed 1 to 65535)"},
	{"{\"limits\": {\"max_packet_size\": 268435461}}",
	 "t.json: limits.max_packet_size: out of range: 268435461 (allowed 2 to 268435460)"},
	{"{\"limits\": {\"memory_limit\": 1e300}}",
	 "t.json: limits.memory_limit: out of range: 1e+300 (allowed 0 to 9007199254740992)"},
	{"{\"limits\": {\"max_topic_levels\": 1025}}",
	 "t.json: limits.max_topic_levels: out of range: 1025 (allowed 1 to 1024)"},
	{"{\"limits\": {\"max_topic_length\": 0}}",
	 "t.json: limits.max_topic_length: out of range: 0 (allowed 1 to 65535)"},
	{"{\"sys_interval\": 86401}", "t.json: sys_interval: out of range: 86401 (allowed 0 to 86400)"},
	/* enums */
	{"{\"listeners\": [{\"protocol\": \"gopher\"}]}",
	 "t.json: listeners[0].protocol: invalid value \"gopher\" (expected one of \"mqtt\", \"mqtts\", "
	 "\"ws\", \"wss\", \"http\")"},
	/* the http listener protocol */
	{"{\"listeners\": [{\"http\": {}}]}", "t.json: listeners[0].http: only allowed when protocol is \"http\""},
	{"{\"listeners\": [{\"protocol\": \"http\", \"bind\": \"0.0.0.0\"}]}",
	 "t.json: listeners[0].bind: an http listener reachable from other hosts (or with require_auth \"always\") "
	 "needs auth.password_file for its users"},
	{"{\"listeners\": [{\"protocol\": \"http\", \"http\": {\"require_auth\": \"always\"}}]}",
	 "t.json: listeners[0].bind: an http listener reachable from other hosts (or with require_auth \"always\") "
	 "needs auth.password_file for its users"},
	{"{\"listeners\": [{\"protocol\": \"http\", \"max_header_bytes\": 100}]}",
	 "t.json: listeners[0].max_header_bytes: out of range: 100 (allowed 256 to 1048576)"},
	{"{\"listeners\": [{\"protocol\": \"http\", \"path\": \"/x\"}]}",
	 "t.json: listeners[0].path: only allowed when protocol is \"ws\" or \"wss\""},
	{"{\"listeners\": [{\"max_headers\": 10}]}",
	 "t.json: listeners[0].max_headers: only allowed when protocol is \"ws\", \"wss\" or \"http\""},
	{"{\"listeners\": [{\"protocol\": \"http\", \"http\": {\"idle_timeout\": 0}}]}",
	 "t.json: listeners[0].http.idle_timeout: out of range: 0 (allowed 1 to 3600)"},
	{"{\"dashboard\": {\"max_topics\": 0}}", "t.json: dashboard.max_topics: out of range: 0 (allowed 1 to 10000000)"},
	{"{\"log\": {\"level\": \"verbose\"}}",
	 "t.json: log.level: invalid value \"verbose\" (expected one of \"error\", \"warning\", "
	 "\"notice\", \"info\", \"debug\")"},
	{"{\"log\": {\"format\": \"xml\"}}",
	 "t.json: log.format: invalid value \"xml\" (expected one of \"text\", \"json\")"},
	{"{\"persistence\": {\"fsync\": \"sometimes\"}}",
	 "t.json: persistence.fsync: invalid value \"sometimes\" (expected one of \"always\", "
	 "\"everysec\", \"no\")"},
	/* listeners */
	{"{\"listeners\": []}",
	 "t.json: listeners: must not be empty (at least one listener is needed)"},
	{"{\"listeners\": [{\"port\": 1883}, {\"port\": 1884}, {\"port\": 1883}]}",
	 "t.json: listeners[2].port: duplicate of listeners[0] (127.0.0.1 port 1883)"},
	{"{\"listeners\": [{\"protocol\": \"mqtts\"}]}",
	 "t.json: listeners[0].tls: required when protocol is \"mqtts\""},
	{"{\"listeners\": [{\"protocol\": \"mqtts\", \"tls\": {\"key\": \"key.pem\"}}]}",
	 "t.json: listeners[0].tls.cert: required when protocol is \"mqtts\""},
	{"{\"listeners\": [{\"protocol\": \"mqtts\", \"tls\": {\"cert\": \"cert.pem\"}}]}",
	 "t.json: listeners[0].tls.key: required when protocol is \"mqtts\""},
	{"{\"listeners\": [{\"tls\": {\"cert\": \"cert.pem\", \"key\": \"key.pem\"}}]}",
	 "t.json: listeners[0].tls: only allowed when protocol is \"mqtts\" or \"wss\""},
	{"{\"listeners\": [{\"protocol\": \"ws\", \"tls\": {\"cert\": \"cert.pem\", \"key\": \"key.pem\"}}]}",
	 "t.json: listeners[0].tls: only allowed when protocol is \"mqtts\" or \"wss\""},
	{"{\"listeners\": [{\"protocol\": \"wss\"}]}",
	 "t.json: listeners[0].tls: required when protocol is \"wss\""},
	{"{\"listeners\": [{\"protocol\": \"wss\", \"tls\": {\"key\": \"key.pem\"}}]}",
	 "t.json: listeners[0].tls.cert: required when protocol is \"wss\""},
	{"{\"listeners\": [{\"path\": \"/mqtt\"}]}",
	 "t.json: listeners[0].path: only allowed when protocol is \"ws\" or \"wss\""},
	{"{\"listeners\": [{\"protocol\": \"mqtts\", \"max_frame_size\": 10}]}",
	 "t.json: listeners[0].max_frame_size: only allowed when protocol is \"ws\" or \"wss\""},
	{"{\"listeners\": [{\"protocol\": \"ws\", \"path\": \"mqtt\"}]}",
	 "t.json: listeners[0].path: must start with '/'"},
	{"{\"listeners\": [{\"protocol\": \"ws\", \"max_header_bytes\": 100}]}",
	 "t.json: listeners[0].max_header_bytes: out of range: 100 (allowed 256 to 1048576)"},
	{"{\"listeners\": [{}, {\"port\": 8883, \"protocol\": \"mqtts\", \"tls\": {\"cert\": "
	 "\"/x/y.pem\"}}]}",
	 "t.json: listeners[1].tls.cert: file not found: /x/y.pem"},
	{"{\"listeners\": [{\"protocol\": \"mqtts\", \"tls\": {\"cert\": \"cert.pem\", \"key\": "
	 "\"key.pem\", \"require_certificate\": true}}]}",
	 "t.json: listeners[0].tls.ca: required when require_certificate is true"},
	{"{\"listeners\": [{\"protocol\": \"mqtts\", \"tls\": {\"cert\": \"cert.pem\", \"key\": "
	 "\"key.pem\", \"use_identity_as_username\": true}}]}",
	 "t.json: listeners[0].tls.use_identity_as_username: needs require_certificate to be true"},
	{"{\"listeners\": [{\"protocol\": \"mqtts\", \"tls\": {\"cert\": \"cert.pem\", \"key\": "
	 "\"key.pem\", \"min_version\": \"tls1.1\"}}]}",
	 "t.json: listeners[0].tls.min_version: invalid value \"tls1.1\" (expected one of "
	 "\"tls1.2\", \"tls1.3\")"},
	/* files */
	{"{\"auth\": {\"password_file\": \"nope\"}}", "t.json: auth.password_file: file not found: nope"},
	{"{\"auth\": {\"acl_file\": \"adir\"}}", "t.json: auth.acl_file: is a directory, not a file: adir"},
	{"{\"log\": {\"destination\": \"/nonexistent-dir/x.log\"}}",
	 "t.json: log.destination: cannot create log file: /nonexistent-dir/x.log: No such file or "
	 "directory"},
	{"{\"log\": {\"destination\": \"adir\"}}",
	 "t.json: log.destination: is a directory, not a file: adir"},
	/* inline ACL */
	{"{\"auth\": {\"acl_file\": \"acl\", \"acl\": []}}",
	 "t.json: auth.acl: cannot be combined with auth.acl_file (choose one)"},
	{"{\"auth\": {\"acl\": \"topic x\"}}", "t.json: auth.acl: expected an array, got a string"},
	{"{\"auth\": {\"acl\": [\"user a\", \"topci read x\"]}}",
	 "t.json: auth.acl[1]: invalid rule \"topci read x\" (expected \"user <name>\", \"topic "
	 "[access] <filter>\" or \"pattern [access] <filter>\")"},
	{"{\"auth\": {\"acl\": [\"topic reed a/b\"]}}",
	 "t.json: auth.acl[0]: invalid rule \"topic reed a/b\": access must be read, write, "
	 "readwrite, subscribe or deny"},
	{"{\"auth\": {\"acl\": [\"pattern\"]}}", "t.json: auth.acl[0]: invalid rule \"pattern\": missing topic"},
	{"{\"auth\": {\"acl\": [\"topic a\\nuser b\"]}}", "t.json: auth.acl[0]: must be a single line"},
	{"{\"auth\": {\"acl\": [{\"user\": \"a\", \"topic\": \"x\", \"acess\": \"read\"}]}}",
	 "t.json: auth.acl[0].acess: unknown key (did you mean 'access'?)"},
	{"{\"auth\": {\"acl\": [{\"user\": \"a\", \"topic\": \"x\", \"access\": \"all\"}]}}",
	 "t.json: auth.acl[0].access: invalid value \"all\" (expected one of \"read\", \"write\", "
	 "\"readwrite\", \"subscribe\", \"deny\")"},
	{"{\"auth\": {\"acl\": [{\"topic\": \"x\"}]}}",
	 "t.json: auth.acl[0]: \"topic\" needs a \"user\" (use a string rule for anonymous clients)"},
	{"{\"auth\": {\"acl\": [{\"user\": \"a\", \"pattern\": \"x/%u\"}]}}",
	 "t.json: auth.acl[0]: \"pattern\" applies to every client and cannot have a \"user\""},
	{"{\"auth\": {\"acl\": [{\"user\": \"a\"}]}}",
	 "t.json: auth.acl[0]: needs exactly one of \"topic\" or \"pattern\""},
	{"{\"auth\": {\"acl\": [true]}}",
	 "t.json: auth.acl[0]: expected a string or an object, got a boolean"},
	/* bridges */
	{"{\"bridges\": []}", "t.json: bridges: must not be empty"},
	{"{\"bridges\": [{\"addresses\": \"h:1\", \"topics\": [{}]}]}", "t.json: bridges[0]: needs a \"name\""},
	{"{\"bridges\": [{\"name\": \"a/b\", \"addresses\": \"h:1\", \"topics\": [{}]}]}",
	 "t.json: bridges[0]: name \"a/b\": 1 to 64 characters, none of / + #"},
	{"{\"bridges\": [{\"name\": \"a\", \"addresses\": \"h:1\", \"topics\": [{}]},"
	 " {\"name\": \"a\", \"addresses\": \"h:1\", \"topics\": [{}]}]}",
	 "t.json: bridges[1]: name \"a\" is also bridges[0]'s"},
	{"{\"bridges\": [{\"name\": \"a\", \"topics\": [{}]}]}", "t.json: bridges[0]: needs \"addresses\""},
	{"{\"bridges\": [{\"name\": \"a\", \"addresses\": \"h:1\"}]}",
	 "t.json: bridges[0]: needs \"topics\" (what crosses the bridge)"},
	{"{\"bridges\": [{\"name\": \"a\", \"addresses\": [\"h:1\", \"h\"], \"topics\": [{}]}]}",
	 "t.json: bridges[0].addresses[1]: \"h\" is not host:port"},
	{"{\"bridges\": [{\"name\": \"a\", \"addresses\": \"h:70000\", \"topics\": [{}]}]}",
	 "t.json: bridges[0].addresses: \"h:70000\" is not host:port"},
	{"{\"bridges\": [{\"name\": \"a\", \"addresses\": \"h:1\", \"topics\": [{\"pattern\": \"a/#/b\"}]}]}",
	 "t.json: bridges[0].topics[0]: pattern \"a/#/b\" is not a valid topic filter"},
	{"{\"bridges\": [{\"name\": \"a\", \"addresses\": \"h:1\", \"topics\": [{\"direction\": \"up\"}]}]}",
	 "t.json: bridges[0].topics[0].direction: invalid value \"up\" (expected one of \"out\", \"in\", \"both\")"},
	{"{\"bridges\": [{\"name\": \"a\", \"addresses\": \"h:1\", \"topics\": [{\"local_prefix\": \"x/+/\"}]}]}",
	 "t.json: bridges[0].topics[0].local_prefix: \"x/+/\": a prefix has no wildcards"},
	{"{\"bridges\": [{\"name\": \"a\", \"addresses\": \"h:1\", \"topics\": [{\"qos\": 3}]}]}",
	 "t.json: bridges[0].topics[0].qos: out of range: 3 (allowed 0 to 2)"},
	{"{\"bridges\": [{\"name\": \"a\", \"addresses\": \"h:1\", \"topics\": [{}], \"reconnect_min\": 9, "
	 "\"reconnect_max\": 8}]}",
	 "t.json: bridges[0]: reconnect_max (8) is below reconnect_min (9)"},
	/* cluster */
	{"{\"cluster\": {\"nats\": []}}",
	 "t.json: cluster.nats: expected a URL or a non-empty array of URLs, got an array"},
	{"{\"cluster\": {\"nats\": [\"nats://a:1\", 4222]}}",
	 "t.json: cluster.nats[1]: expected a string, got a number"},
	{"{\"cluster\": {\"nats\": \"nats://a:1,nats://b:2\"}}",
	 "t.json: cluster.nats: a NATS URL, without commas"},
	{"{\"cluster\": {\"nats\": [\"\"]}}", "t.json: cluster.nats[0]: a NATS URL, without commas"},
	{"{\"cluster\": {\"nats\": \"nats://a:1\", \"inbound_queue\": 8}}",
	 "t.json: cluster.inbound_queue: out of range: 8 (allowed 16 to 16777216)"},
	{"{\"cluster\": {\"nats\": \"nats://a:1\", \"inbound_queue_bytes\": 1024}}",
	 "t.json: cluster.inbound_queue_bytes: out of range: 1024 (allowed 65536 to 9007199254740992)"},
	{"{\"cluster\": {\"stream\": \"A.B\"}}",
	 "t.json: cluster.stream: \"A.B\" is not a JetStream stream name (no space, '.', '*', '>', '/', '\\')"},
	{"{\"cluster\": {\"stream\": \"\"}}", "t.json: cluster.stream: a stream name is 1 to 64 characters"},
	{"{\"cluster\": {\"outbound_queue\": 15}}",
	 "t.json: cluster.outbound_queue: out of range: 15 (allowed 16 to 16777216)"},
	{"{\"cluster\": {\"replicas\": 6}}", "t.json: cluster.replicas: out of range: 6 (allowed 1 to 5)"},
	{"{\"cluster\": {\"subject_prefix\": \"a..b\"}}",
	 "t.json: cluster.subject_prefix: \"a..b\" is not a NATS literal subject (empty token or wildcard)"},
	{"{\"cluster\": {\"subject_prefix\": \"a.>\"}}",
	 "t.json: cluster.subject_prefix: \"a.>\" is not a NATS literal subject (empty token or wildcard)"},
	{"{\"cluster\": {\"subject_prefix\": \"a b\"}}",
	 "t.json: cluster.subject_prefix: \"a b\" is not a NATS literal subject (whitespace or control character)"},
	{"{\"cluster\": {\"retained_bucket\": \"a.b\"}}",
	 "t.json: cluster.retained_bucket: \"a.b\" is not a JetStream bucket name (1 to 64 of A-Z a-z 0-9 _ -)"},
	{"{\"cluster\": {\"retained_bucket\": \"\"}}",
	 "t.json: cluster.retained_bucket: \"\" is not a JetStream bucket name (1 to 64 of A-Z a-z 0-9 _ -)"},
	{"{\"cluster\": {\"nod\": \"a\"}}", "t.json: cluster.nod: unknown key (did you mean 'node'?)"},
	/* cluster: NATS TLS and credentials */
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"cafile\": \"missing.pem\"}}",
	 "t.json: cluster.cafile: file not found: missing.pem"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"credentials\": \"adir\"}}",
	 "t.json: cluster.credentials: is a directory, not a file: adir"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"nkey\": \"UAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\", \"nkey_seed\": \"nope\"}}",
	 "t.json: cluster.nkey_seed: file not found: nope"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"username\": \"u\"}}",
	 "t.json: cluster.username: needs cluster.password too"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"password\": \"p\"}}",
	 "t.json: cluster.password: needs cluster.username too"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"username\": \"u\", \"password\": \"p\", \"token\": \"t\"}}",
	 "t.json: cluster.token: cannot be combined with cluster.username (NATS takes one way of authenticating)"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"token\": \"t\", \"credentials\": \"ca.pem\"}}",
	 "t.json: cluster.credentials: cannot be combined with cluster.token (NATS takes one way of authenticating)"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"credentials\": \"ca.pem\", \"nkey_seed\": \"ca.pem\"}}",
	 "t.json: cluster.nkey_seed: cannot be combined with cluster.credentials (NATS takes one way of authenticating)"},
	{"{\"cluster\": {\"nats\": [\"nats://h:1\", \"nats://u:p@h:2\"], \"token\": \"t\"}}",
	 "t.json: cluster.token: cannot be combined with a user or token in a cluster.nats URL (NATS takes one way of authenticating)"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"nkey\": \"UAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}",
	 "t.json: cluster.nkey: needs cluster.nkey_seed too (the public key and the file of its seed)"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"nkey\": \"SUAB\", \"nkey_seed\": \"ca.pem\"}}",
	 "t.json: cluster.nkey: \"SUAB\" is not an NKey user public key ('U' and 55 of A-Z 2-7)"},
	{"{\"cluster\": {\"nats\": \"tls://h:4222\", \"certfile\": \"cert.pem\"}}",
	 "t.json: cluster.certfile: certfile and keyfile go together (mutual TLS)"},
	{"{\"cluster\": {\"nats\": \"tls://h:4222\", \"keyfile\": \"key.pem\"}}",
	 "t.json: cluster.keyfile: certfile and keyfile go together (mutual TLS)"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"certfile\": \"cert.pem\", \"keyfile\": \"key.pem\"}}",
	 "t.json: cluster.certfile: needs TLS: set cluster.cafile or use tls:// URLs in cluster.nats"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"tls_skip_verify\": true}}",
	 "t.json: cluster.tls_skip_verify: needs TLS: set cluster.cafile or use tls:// URLs in cluster.nats"},
	{"{\"cluster\": {\"nats\": \"nats://h:4222\", \"tls_server_name\": \"h\"}}",
	 "t.json: cluster.tls_server_name: needs TLS: set cluster.cafile or use tls:// URLs in cluster.nats"},
	{"{\"cluster\": {\"nats\": \"tls://h:4222\", \"tls_skip_verify\": true, \"tls_server_name\": \"h\"}}",
	 "t.json: cluster.tls_server_name: cannot be combined with cluster.tls_skip_verify (nothing is checked then)"},
};

static void test_bad_documents_name_key_path_and_reason(void)
{
	for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		const struct bad_case *c = &bad_cases[i];
		struct config *cfg = (struct config *)1;
		char err[1024];
		int rc = config_parse(c->json, strlen(c->json), "t.json", &cfg, err, sizeof err);
		CU_ASSERT_EQUAL(rc, WISP_ECONFIG);
		CU_ASSERT_PTR_NULL(cfg);
		if (strcmp(err, c->err) != 0)
			fprintf(stderr, "\ncase %zu:\n  doc:  %s\n  want: %s\n  got:  %s\n", i, c->json,
				c->err, err);
		CU_ASSERT_STRING_EQUAL(err, c->err);
	}
}

static void test_embedded_nul_is_refused_with_position(void)
{
	static const char doc[] = "{\n \0}";
	struct config *cfg;
	char err[256];
	CU_ASSERT_EQUAL(config_parse(doc, sizeof doc - 1, "t.json", &cfg, err, sizeof err), WISP_ECONFIG);
	CU_ASSERT_STRING_EQUAL(err, "t.json: line 2, column 2: invalid JSON (NUL byte)");
}

/* cJSON would decode \u0000 and end the string there: "pw\u0000.disabled"
 * read as "pw", a key "listeners\u0000x" as "listeners". An escaped
 * backslash before "u0000" is text, not an escape. */
static void test_escaped_nul_is_refused_with_position(void)
{
	static const char *const docs[] = {
		"{\"auth\": {\"password_file\": \"pw\\u0000.disabled\"}}",
		"{\n  \"listeners\\u0000junk\": []}",
		"{\"log\": {\"destination\": \"a\\\\\\u0000\"}}",
	};
	static const char *const want[] = {
		"t.json: line 1, column 31: \\u0000: no configuration string can hold U+0000",
		"t.json: line 2, column 13: \\u0000: no configuration string can hold U+0000",
		"t.json: line 1, column 29: \\u0000: no configuration string can hold U+0000",
	};
	struct config *cfg;
	char err[256];
	for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
		CU_ASSERT_EQUAL(config_parse(docs[i], strlen(docs[i]), "t.json", &cfg, err, sizeof err), WISP_ECONFIG);
		CU_ASSERT_STRING_EQUAL(err, want[i]);
	}
	/* "\\u0000" is a backslash and the text u0000. */
	static const char ok[] = "{\"log\": {\"destination\": \"/tmp/a\\\\u0000\"}}";
	CU_ASSERT_EQUAL(config_parse(ok, sizeof ok - 1, "t.json", &cfg, err, sizeof err), 0);
	if (cfg) {
		CU_ASSERT_STRING_EQUAL(cfg->log.destination, "/tmp/a\\u0000");
		config_free(cfg);
	}
}

static void test_error_buffer_is_truncated_safely(void)
{
	struct config *cfg;
	char err[8];
	CU_ASSERT_EQUAL(config_parse("{\"x\":1}", 7, "t.json", &cfg, err, sizeof err), WISP_ECONFIG);
	CU_ASSERT_EQUAL(strlen(err), 7);
}

static void check_defaults(const struct config *cfg)
{
	CU_ASSERT_EQUAL_FATAL(cfg->listener_count, 1);
	CU_ASSERT_STRING_EQUAL(cfg->listeners[0].bind, "127.0.0.1");
	CU_ASSERT_EQUAL(cfg->listeners[0].port, 1883);
	CU_ASSERT_EQUAL(cfg->listeners[0].protocol, CONFIG_PROTO_MQTT);
	CU_ASSERT_TRUE(cfg->listeners[0].allow_anonymous);
	CU_ASSERT_EQUAL(cfg->listeners[0].max_connections, 0);
	CU_ASSERT_EQUAL(cfg->listeners[0].max_handshakes, 512);
	CU_ASSERT_EQUAL(cfg->listeners[0].max_handshakes_per_address, 64);
	CU_ASSERT_EQUAL(cfg->log.rate_limit, 10);
	CU_ASSERT_EQUAL(cfg->log.rate_burst, 100);
	CU_ASSERT_PTR_NULL(cfg->listeners[0].tls.cert);
	CU_ASSERT_STRING_EQUAL(cfg->listeners[0].tls.min_version, "tls1.2");
	CU_ASSERT_EQUAL(cfg->limits.max_packet_size, 1048576u);
	CU_ASSERT_EQUAL(cfg->limits.max_inflight, 20);
	CU_ASSERT_EQUAL(cfg->limits.max_queued_messages, 1000);
	CU_ASSERT_EQUAL(cfg->limits.max_queued_bytes, 8388608u);
	CU_ASSERT_EQUAL(cfg->limits.max_keepalive, 65535);
	CU_ASSERT_EQUAL(cfg->limits.connect_timeout, 10);
	CU_ASSERT_EQUAL(cfg->limits.max_topic_levels, 128);
	CU_ASSERT_EQUAL(cfg->limits.max_topic_length, 4096);
	CU_ASSERT_EQUAL(cfg->limits.max_connections, 0);
	CU_ASSERT_EQUAL(cfg->limits.max_output_buffer, 1048576);
	CU_ASSERT_EQUAL(cfg->limits.max_subscriptions, 1000);
	CU_ASSERT_EQUAL(cfg->limits.max_retained, 0);
	CU_ASSERT_EQUAL(cfg->limits.max_retained_bytes, 0);
	CU_ASSERT_EQUAL(cfg->limits.memory_limit, 0);
	CU_ASSERT_EQUAL(cfg->limits.output_buffer_timeout, 60);
	CU_ASSERT_EQUAL(cfg->limits.max_connect_size, 327701u);
	CU_ASSERT_EQUAL(cfg->limits.max_unauthenticated_bytes, 33554432u);
	CU_ASSERT_EQUAL(cfg->limits.max_queued_bytes_total, 268435456u);
	CU_ASSERT_PTR_NULL(cfg->auth.password_file);
	CU_ASSERT_PTR_NULL(cfg->auth.acl_file);
	CU_ASSERT_PTR_NULL(cfg->auth.acl_inline);
	CU_ASSERT_EQUAL(cfg->log.level, LOG_NOTICE);
	CU_ASSERT_STRING_EQUAL(cfg->log.destination, "stderr");
	CU_ASSERT_EQUAL(cfg->log.format, LOG_FORMAT_TEXT);
	CU_ASSERT_TRUE(cfg->persistence.enabled);
	CU_ASSERT_STRING_EQUAL(cfg->persistence.dir, "./wisp-data");
	CU_ASSERT_EQUAL(cfg->persistence.fsync, CONFIG_FSYNC_EVERYSEC);
	CU_ASSERT_EQUAL(cfg->sys_interval, 10);
}

static void test_default_config(void)
{
	struct config *cfg = config_default();
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_STRING_EQUAL(cfg->path, "<default>");
	check_defaults(cfg);
	config_free(cfg);
}

static void test_empty_object_gives_defaults(void)
{
	struct config *cfg;
	char err[256];
	CU_ASSERT_EQUAL_FATAL(config_parse("{}", 2, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_STRING_EQUAL(err, "");
	CU_ASSERT_STRING_EQUAL(cfg->path, "t.json");
	check_defaults(cfg);
	config_free(cfg);
}

static void test_default_json_file_matches_embedded_default(void)
{
	struct config *cfg;
	char err[512];
	int rc = config_load(WISP_SOURCE_DIR "/config/default.json", &cfg, err, sizeof err);
	if (rc)
		fprintf(stderr, "\n%s\n", err);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	check_defaults(cfg);
	config_free(cfg);
}

/* The shipped examples stay valid (their files stand in the scratch dir). */
static void test_example_files_are_valid(void)
{
	static const char *const files[] = {"default.json", "tls.json", "secure.json", "websocket.json", "http.json",
					     "cluster.json", "bridge.json"};
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char path[1024], err[512];
		struct config *cfg;
		snprintf(path, sizeof path, "%s/config/%s", WISP_SOURCE_DIR, files[i]);
		int rc = config_load(path, &cfg, err, sizeof err);
		if (rc)
			fprintf(stderr, "\n%s\n", err);
		CU_ASSERT_EQUAL(rc, 0);
		if (!rc)
			config_free(cfg);
	}
}

static void test_load_missing_file(void)
{
	struct config *cfg;
	char err[256];
	CU_ASSERT_EQUAL(config_load("missing.json", &cfg, err, sizeof err), WISP_ECONFIG);
	CU_ASSERT_STRING_EQUAL(err, "missing.json: (root): cannot open: No such file or directory");
}

static void test_websocket_listeners(void)
{
	static const char doc[] =
		"{\"listeners\": [{\"protocol\": \"ws\"},\n"
		" {\"protocol\": \"ws\", \"port\": 9001, \"path\": \"/mqtt\", \"max_header_bytes\": 4096,\n"
		"  \"max_headers\": 20, \"max_frame_size\": 65536, \"trust_proxy\": true},\n"
		" {\"protocol\": \"wss\", \"tls\": {\"cert\": \"cert.pem\", \"key\": \"key.pem\"}}]}";
	struct config *cfg;
	char err[256];
	int rc = config_parse(doc, sizeof doc - 1, "ws.json", &cfg, err, sizeof err);
	if (rc)
		fprintf(stderr, "\n%s\n", err);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	const struct config_listener *l = cfg->listeners;
	CU_ASSERT_EQUAL(l[0].protocol, CONFIG_PROTO_WS);
	CU_ASSERT_EQUAL(l[0].port, 8083);
	CU_ASSERT_PTR_NULL(l[0].path);
	CU_ASSERT_EQUAL(l[0].max_header_bytes, 8192);
	CU_ASSERT_EQUAL(l[0].max_headers, 100);
	CU_ASSERT_EQUAL(l[0].max_frame_size, 0);
	CU_ASSERT_FALSE(l[0].trust_proxy);
	CU_ASSERT_STRING_EQUAL(l[1].path, "/mqtt");
	CU_ASSERT_EQUAL(l[1].port, 9001);
	CU_ASSERT_EQUAL(l[1].max_header_bytes, 4096);
	CU_ASSERT_EQUAL(l[1].max_headers, 20);
	CU_ASSERT_EQUAL(l[1].max_frame_size, 65536);
	CU_ASSERT_TRUE(l[1].trust_proxy);
	CU_ASSERT_EQUAL(l[2].protocol, CONFIG_PROTO_WSS);
	CU_ASSERT_EQUAL(l[2].port, 8084);
	CU_ASSERT_TRUE(config_proto_is_tls(l[2].protocol) && config_proto_is_ws(l[2].protocol));
	config_free(cfg);
}

static void test_full_document_is_parsed(void)
{
	static const char doc[] =
		"\xEF\xBB\xBF{\n"
		"  \"listeners\": [\n"
		"    {\"bind\": \"0.0.0.0\", \"port\": 1883, \"allow_anonymous\": false,\n"
		"     \"max_connections\": 500},\n"
		"    {\"bind\": \"::1\", \"protocol\": \"mqtts\", \"tls\": {\"cert\": \"cert.pem\",\n"
		"      \"key\": \"key.pem\", \"ca\": \"ca.pem\", \"require_certificate\": true,\n"
		"      \"use_identity_as_username\": true, \"ciphersuites\": "
		"\"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256\",\n"
		"      \"min_version\": \"tls1.3\"}},\n"
		"    {\"bind\": \"127.0.0.1\", \"port\": 0}, {\"bind\": \"127.0.0.1\", \"port\": 0}\n"
		"  ],\n"
		"  \"limits\": {\"max_packet_size\": 65536, \"max_inflight\": 10, \"max_queued_messages\": 50,\n"
		"    \"max_queued_bytes\": 9007199254740992, \"max_keepalive\": 600, \"connect_timeout\": 5,\n"
		"    \"max_topic_levels\": 16, \"max_topic_length\": 300, \"max_connections\": 10000, \"max_output_buffer\": 2048,\n"
		"    \"max_subscriptions\": 64, \"max_retained\": 1000, \"max_retained_bytes\": 1e6,\n"
		"    \"memory_limit\": 268435456, \"output_buffer_timeout\": 5, \"max_connect_size\": 1024,\n"
		"    \"max_unauthenticated_bytes\": 0, \"max_queued_bytes_total\": 1e9},\n"
		"  \"auth\": {\"password_file\": \"passwd\", \"acl_file\": \"acl\"},\n"
		"  \"log\": {\"level\": \"debug\", \"destination\": \"out.log\", \"format\": \"json\"},\n"
		"  \"persistence\": {\"enabled\": true, \"dir\": \"/var/lib/wisp\", \"fsync\": \"always\"},\n"
		"  \"sys_interval\": 0\n"
		"}\n";
	struct config *cfg;
	char err[256];
	int rc = config_parse(doc, sizeof doc - 1, "full.json", &cfg, err, sizeof err);
	if (rc)
		fprintf(stderr, "\n%s\n", err);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	CU_ASSERT_EQUAL_FATAL(cfg->listener_count, 4);
	const struct config_listener *l = cfg->listeners;
	CU_ASSERT_STRING_EQUAL(l[0].bind, "0.0.0.0");
	CU_ASSERT_FALSE(l[0].allow_anonymous);
	CU_ASSERT_EQUAL(l[0].max_connections, 500);
	CU_ASSERT_STRING_EQUAL(l[1].bind, "::1");
	CU_ASSERT_EQUAL(l[1].protocol, CONFIG_PROTO_MQTTS);
	CU_ASSERT_EQUAL(l[1].port, 8883); /* mqtts default port */
	CU_ASSERT_FALSE(l[1].allow_anonymous); /* password_file set, not explicit */
	CU_ASSERT_STRING_EQUAL(l[1].tls.cert, "cert.pem");
	CU_ASSERT_STRING_EQUAL(l[1].tls.key, "key.pem");
	CU_ASSERT_STRING_EQUAL(l[1].tls.ca, "ca.pem");
	CU_ASSERT_TRUE(l[1].tls.require_certificate);
	CU_ASSERT_TRUE(l[1].tls.use_identity_as_username);
	CU_ASSERT_STRING_EQUAL(l[1].tls.ciphersuites, "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256");
	CU_ASSERT_STRING_EQUAL(l[1].tls.min_version, "tls1.3");
	CU_ASSERT_EQUAL(l[2].port, 0); /* two ephemeral listeners on one address are fine */
	CU_ASSERT_EQUAL(l[3].port, 0);
	CU_ASSERT_EQUAL(cfg->limits.max_packet_size, 65536);
	CU_ASSERT_EQUAL(cfg->limits.max_inflight, 10);
	CU_ASSERT_EQUAL(cfg->limits.max_queued_messages, 50);
	CU_ASSERT_EQUAL(cfg->limits.max_queued_bytes, 9007199254740992ULL);
	CU_ASSERT_EQUAL(cfg->limits.max_keepalive, 600);
	CU_ASSERT_EQUAL(cfg->limits.connect_timeout, 5);
	CU_ASSERT_EQUAL(cfg->limits.max_topic_levels, 16);
	CU_ASSERT_EQUAL(cfg->limits.max_topic_length, 300);
	CU_ASSERT_EQUAL(cfg->limits.max_connections, 10000);
	CU_ASSERT_EQUAL(cfg->limits.max_output_buffer, 2048);
	CU_ASSERT_EQUAL(cfg->limits.max_subscriptions, 64);
	CU_ASSERT_EQUAL(cfg->limits.max_retained, 1000);
	CU_ASSERT_EQUAL(cfg->limits.max_retained_bytes, 1000000);
	CU_ASSERT_EQUAL(cfg->limits.memory_limit, 268435456);
	CU_ASSERT_EQUAL(cfg->limits.output_buffer_timeout, 5);
	CU_ASSERT_EQUAL(cfg->limits.max_connect_size, 1024);
	CU_ASSERT_EQUAL(cfg->limits.max_unauthenticated_bytes, 0);
	CU_ASSERT_EQUAL(cfg->limits.max_queued_bytes_total, 1000000000u);
	CU_ASSERT_STRING_EQUAL(cfg->auth.password_file, "passwd");
	CU_ASSERT_STRING_EQUAL(cfg->auth.acl_file, "acl");
	CU_ASSERT_PTR_NULL(cfg->auth.acl_inline);
	CU_ASSERT_EQUAL(cfg->log.level, LOG_DEBUG);
	CU_ASSERT_STRING_EQUAL(cfg->log.destination, "out.log");
	CU_ASSERT_EQUAL(cfg->log.format, LOG_FORMAT_JSON);
	CU_ASSERT_TRUE(cfg->persistence.enabled);
	CU_ASSERT_STRING_EQUAL(cfg->persistence.dir, "/var/lib/wisp");
	CU_ASSERT_EQUAL(cfg->persistence.fsync, CONFIG_FSYNC_ALWAYS);
	CU_ASSERT_EQUAL(cfg->sys_interval, 0);
	config_free(cfg);
}

static void test_inline_acl_becomes_acl_text(void)
{
	static const char doc[] = "{\"auth\": {\"acl\": ["
				  "\"topic read $SYS/#\","
				  "{\"user\": \"alice\", \"topic\": \"alice/#\"},"
				  "\"topic deny alice/secret\","
				  "{\"pattern\": \"sensors/%u/#\", \"access\": \"write\"},"
				  "\"# a comment-free rule list\","
				  "\"pattern subscribe clients/%c\""
				  "]}}";
	struct config *cfg;
	char err[256];
	int rc = config_parse(doc, sizeof doc - 1, "t.json", &cfg, err, sizeof err);
	CU_ASSERT_NOT_EQUAL_FATAL(rc, 0); /* '#' comment lines are not rules */
	CU_ASSERT_STRING_EQUAL(err, "t.json: auth.acl[4]: invalid rule \"# a comment-free rule list\" "
				    "(expected \"user <name>\", \"topic [access] <filter>\" or "
				    "\"pattern [access] <filter>\")");

	static const char doc2[] = "{\"auth\": {\"acl\": ["
				   "\"topic read $SYS/#\","
				   "{\"user\": \"alice\", \"topic\": \"alice/#\"},"
				   "\"topic deny alice/secret\","
				   "{\"pattern\": \"sensors/%u/#\", \"access\": \"write\"},"
				   "\"pattern subscribe clients/%c\""
				   "]}}";
	rc = config_parse(doc2, sizeof doc2 - 1, "t.json", &cfg, err, sizeof err);
	if (rc)
		fprintf(stderr, "\n%s\n", err);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	CU_ASSERT_STRING_EQUAL(cfg->auth.acl_inline, "topic read $SYS/#\n"
						     "user alice\n"
						     "topic readwrite alice/#\n"
						     "topic deny alice/secret\n"
						     "pattern write sensors/%u/#\n"
						     "pattern subscribe clients/%c\n");
	config_free(cfg);

	/* An empty array is an ACL that denies everything, not "no ACL". */
	rc = config_parse("{\"auth\": {\"acl\": []}}", 21, "t.json", &cfg, err, sizeof err);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	CU_ASSERT_PTR_NOT_NULL(cfg->auth.acl_inline);
	CU_ASSERT_STRING_EQUAL(cfg->auth.acl_inline, "");
	config_free(cfg);
}

static void test_password_file_turns_anonymous_off_unless_explicit(void)
{
	static const char doc[] = "{\"auth\": {\"password_file\": \"passwd\"}, \"listeners\": ["
				  "{\"port\": 1}, {\"port\": 2, \"allow_anonymous\": true}]}";
	struct config *cfg;
	char err[256];
	CU_ASSERT_EQUAL_FATAL(config_parse(doc, sizeof doc - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_FALSE(cfg->listeners[0].allow_anonymous);
	CU_ASSERT_TRUE(cfg->listeners[1].allow_anonymous);
	config_free(cfg);

	/* ...and the implicit default listener too. */
	static const char doc2[] = "{\"auth\": {\"password_file\": \"passwd\"}}";
	CU_ASSERT_EQUAL_FATAL(config_parse(doc2, sizeof doc2 - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_FALSE(cfg->listeners[0].allow_anonymous);
	config_free(cfg);
}

/* sqlite-style fault simulation: fail allocation N for N = 1.. until the
 * parse succeeds; every failing run must report ENOMEM and leak nothing. */
static void test_out_of_memory_at_every_allocation(void)
{
	static const char doc[] = "{\"listeners\": [{\"bind\": \"0.0.0.0\"}, {\"port\": 2}],"
				  "\"auth\": {\"acl\": [\"user a\", {\"pattern\": \"x/%u\"}]},"
				  "\"log\": {\"destination\": \"syslog\"},"
				  "\"bridges\": [{\"name\": \"a\", \"addresses\": [\"h:1\", \"k:2\"],"
				  " \"topics\": [{\"local_prefix\": \"l/\"}, {\"pattern\": \"x\"}]}]}";
	size_t base = wisp_mem_used();
	int ok = 0;
	for (uint64_t n = 1; n < 400 && !ok; n++) {
		struct config *cfg = NULL;
		char err[256];
		wisp_mem_fail_after(n, 0);
		int rc = config_parse(doc, sizeof doc - 1, "t.json", &cfg, err, sizeof err);
		wisp_mem_fail_after(0, 0);
		if (rc == 0) {
			ok = 1;
			config_free(cfg);
		} else {
			CU_ASSERT_EQUAL(rc, WISP_ENOMEM);
			CU_ASSERT_PTR_NULL(cfg);
		}
		CU_ASSERT_EQUAL(wisp_mem_used(), base);
	}
	CU_ASSERT_TRUE(ok);
}

static void test_cluster_section(void)
{
	struct config *cfg;
	char err[256];
	static const char off[] = "{}";
	CU_ASSERT_EQUAL_FATAL(config_parse(off, sizeof off - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_PTR_NULL(cfg->cluster.nats); /* no section: no cluster */
	CU_ASSERT_PTR_NULL(cfg->cluster.node);
	CU_ASSERT_STRING_EQUAL(cfg->cluster.subject_prefix, "wisp");
	CU_ASSERT_EQUAL(cfg->cluster.inbound_queue, 65536);
	CU_ASSERT_TRUE(cfg->cluster.durable);
	CU_ASSERT_STRING_EQUAL(cfg->cluster.stream, "WISP");
	CU_ASSERT_EQUAL(cfg->cluster.replicas, 1);
	CU_ASSERT_EQUAL(cfg->cluster.stream_max_age, 86400);
	CU_ASSERT_EQUAL(cfg->cluster.duplicate_window, 120);
	CU_ASSERT_EQUAL(cfg->cluster.outbound_queue, 65536);
	CU_ASSERT_STRING_EQUAL(cfg->cluster.retained_bucket, "wisp_retained");
	CU_ASSERT_EQUAL(cfg->cluster.retained_replicas, 1);
	CU_ASSERT_FALSE(cfg->cluster.send_asap); /* cnats batches: a write per millisecond, not per message */
	CU_ASSERT_TRUE(cfg->cluster.data_connection);
	CU_ASSERT_EQUAL(cfg->cluster.send_queue, 8192);
	CU_ASSERT_EQUAL(cfg->cluster.send_queue_bytes, 16u << 20);
	CU_ASSERT_EQUAL(cfg->cluster.inbound_queue_bytes, 64u << 20);
	CU_ASSERT_EQUAL(cfg->cluster.write_deadline, 2000);
	CU_ASSERT_EQUAL(cfg->cluster.ping_interval, 5);
	config_free(cfg);
	static const char two[] = "{\"cluster\": {\"nats\": [\"nats://127.0.0.1:4222\", \"nats://h:4223\"], "
				  "\"node\": \"a\", \"subject_prefix\": \"\", \"inbound_queue\": 16, "
				  "\"inbound_queue_bytes\": 65536, "
				  "\"durable\": false, \"stream\": \"MQTT_Q\", \"outbound_queue\": 100, \"duplicate_window\": 3600, "
				  "\"retained_bucket\": \"R-1_x\", \"retained_replicas\": 3, \"send_asap\": true, "
				  "\"data_connection\": false, "
				  "\"send_queue\": 16, \"send_queue_bytes\": 65536, \"write_deadline\": 10, "
				  "\"ping_interval\": 3600}}";
	CU_ASSERT_EQUAL_FATAL(config_parse(two, sizeof two - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_STRING_EQUAL(cfg->cluster.nats, "nats://127.0.0.1:4222,nats://h:4223");
	CU_ASSERT_STRING_EQUAL(cfg->cluster.node, "a");
	CU_ASSERT_STRING_EQUAL(cfg->cluster.subject_prefix, "");
	CU_ASSERT_EQUAL(cfg->cluster.duplicate_window, 3600);
	CU_ASSERT_EQUAL(cfg->cluster.inbound_queue, 16);
	CU_ASSERT_EQUAL(cfg->cluster.inbound_queue_bytes, 65536);
	CU_ASSERT_FALSE(cfg->cluster.durable);
	CU_ASSERT_STRING_EQUAL(cfg->cluster.stream, "MQTT_Q");
	CU_ASSERT_EQUAL(cfg->cluster.outbound_queue, 100);
	CU_ASSERT_STRING_EQUAL(cfg->cluster.retained_bucket, "R-1_x");
	CU_ASSERT_EQUAL(cfg->cluster.retained_replicas, 3);
	CU_ASSERT_TRUE(cfg->cluster.send_asap);
	CU_ASSERT_FALSE(cfg->cluster.data_connection);
	CU_ASSERT_EQUAL(cfg->cluster.send_queue, 16);
	CU_ASSERT_EQUAL(cfg->cluster.send_queue_bytes, 65536);
	CU_ASSERT_EQUAL(cfg->cluster.write_deadline, 10);
	CU_ASSERT_EQUAL(cfg->cluster.ping_interval, 3600);
	config_free(cfg);
	static const char one[] = "{\"cluster\": {\"nats\": \"nats://127.0.0.1:4222\"}}";
	CU_ASSERT_EQUAL_FATAL(config_parse(one, sizeof one - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_STRING_EQUAL(cfg->cluster.nats, "nats://127.0.0.1:4222");
	config_free(cfg);
}

/* The shared groups' bound, their JetStream consumers' timings and the
 * node consumer's ack wait (cluster/groups.h, jetstream.c): the defaults, each key at both ends of
 * its range, and one past each end refused with the file, key and range. */
static void test_cluster_group_keys_at_their_bounds(void)
{
	struct config *cfg;
	char err[256];
	CU_ASSERT_EQUAL_FATAL(config_parse("{}", 2, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_EQUAL(cfg->cluster.max_groups, 1000);
	CU_ASSERT_EQUAL(cfg->cluster.group_ack_wait, 30);
	CU_ASSERT_EQUAL(cfg->cluster.group_inactive, 300);
	CU_ASSERT_EQUAL(cfg->cluster.ack_wait, 30);
	config_free(cfg);
	static const struct {
		const char *json;
		uint32_t max_groups, group_ack_wait, group_inactive, ack_wait;
	} ok[] = {
		{"{\"cluster\": {\"max_groups\": 1, \"group_ack_wait\": 1, \"group_inactive\": 1, \"ack_wait\": 1}}",
		 1, 1, 1, 1},
		{"{\"cluster\": {\"max_groups\": 1000000, \"group_ack_wait\": 86400, \"group_inactive\": 31536000,"
		 " \"ack_wait\": 86400}}",
		 1000000, 86400, 31536000, 86400},
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		CU_ASSERT_EQUAL_FATAL(config_parse(ok[i].json, strlen(ok[i].json), "t.json", &cfg, err, sizeof err), 0);
		CU_ASSERT_EQUAL(cfg->cluster.ack_wait, ok[i].ack_wait);
		CU_ASSERT_EQUAL(cfg->cluster.max_groups, ok[i].max_groups);
		CU_ASSERT_EQUAL(cfg->cluster.group_ack_wait, ok[i].group_ack_wait);
		CU_ASSERT_EQUAL(cfg->cluster.group_inactive, ok[i].group_inactive);
		config_free(cfg);
	}
	static const struct bad_case bad[] = {
		{"{\"cluster\": {\"max_groups\": 0}}",
		 "t.json: cluster.max_groups: out of range: 0 (allowed 1 to 1000000)"},
		{"{\"cluster\": {\"max_groups\": 1000001}}",
		 "t.json: cluster.max_groups: out of range: 1000001 (allowed 1 to 1000000)"},
		{"{\"cluster\": {\"group_ack_wait\": 0}}",
		 "t.json: cluster.group_ack_wait: out of range: 0 (allowed 1 to 86400)"},
		{"{\"cluster\": {\"group_ack_wait\": 86401}}",
		 "t.json: cluster.group_ack_wait: out of range: 86401 (allowed 1 to 86400)"},
		{"{\"cluster\": {\"ack_wait\": 0}}",
		 "t.json: cluster.ack_wait: out of range: 0 (allowed 1 to 86400)"},
		{"{\"cluster\": {\"ack_wait\": 86401}}",
		 "t.json: cluster.ack_wait: out of range: 86401 (allowed 1 to 86400)"},
		{"{\"cluster\": {\"group_inactive\": 0}}",
		 "t.json: cluster.group_inactive: out of range: 0 (allowed 1 to 31536000)"},
		{"{\"cluster\": {\"group_inactive\": 31536001}}",
		 "t.json: cluster.group_inactive: out of range: 31536001 (allowed 1 to 31536000)"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cfg = (struct config *)1;
		CU_ASSERT_EQUAL(config_parse(bad[i].json, strlen(bad[i].json), "t.json", &cfg, err, sizeof err),
				WISP_ECONFIG);
		CU_ASSERT_PTR_NULL(cfg);
		if (strcmp(err, bad[i].err) != 0)
			fprintf(stderr, "\ncase %zu:\n  want: %s\n  got:  %s\n", i, bad[i].err, err);
		CU_ASSERT_STRING_EQUAL(err, bad[i].err);
	}
}

/* NATS TLS and credentials: where each key lands, when TLS is on, and the
 * URL parts nats_auth.c and the checks use. */
static void test_cluster_tls_and_credentials(void)
{
	struct config *cfg;
	char err[256];
	static const char plain[] = "{\"cluster\": {\"nats\": \"nats://h:4222\", \"token\": \"t0k\"}}";
	CU_ASSERT_EQUAL_FATAL(config_parse(plain, sizeof plain - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_FALSE(config_cluster_tls(&cfg->cluster));
	CU_ASSERT_STRING_EQUAL(cfg->cluster.token, "t0k");
	CU_ASSERT_PTR_NULL(cfg->cluster.cafile);
	CU_ASSERT_FALSE(cfg->cluster.tls_skip_verify);
	config_free(cfg);
	static const char mtls[] = "{\"cluster\": {\"nats\": [\"nats://h:1\", \"nats://H:2\"], \"cafile\": \"ca.pem\", "
				   "\"certfile\": \"cert.pem\", \"keyfile\": \"key.pem\", \"username\": \"u\", "
				   "\"password\": \"p\"}}";
	CU_ASSERT_EQUAL_FATAL(config_parse(mtls, sizeof mtls - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_TRUE(config_cluster_tls(&cfg->cluster)); /* a CA means TLS, whatever the scheme */
	CU_ASSERT_STRING_EQUAL(cfg->cluster.cafile, "ca.pem");
	CU_ASSERT_STRING_EQUAL(cfg->cluster.certfile, "cert.pem");
	CU_ASSERT_STRING_EQUAL(cfg->cluster.keyfile, "key.pem");
	CU_ASSERT_STRING_EQUAL(cfg->cluster.username, "u");
	CU_ASSERT_STRING_EQUAL(cfg->cluster.password, "p");
	config_free(cfg);
	static const char named[] = "{\"cluster\": {\"nats\": [\"tls://a:1\", \"TLS://b:2\"], \"tls_server_name\": \"n\", "
				    "\"credentials\": \"ca.pem\"}}";
	CU_ASSERT_EQUAL_FATAL(config_parse(named, sizeof named - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_TRUE(config_cluster_tls(&cfg->cluster));
	CU_ASSERT_STRING_EQUAL(cfg->cluster.tls_server_name, "n");
	CU_ASSERT_STRING_EQUAL(cfg->cluster.credentials, "ca.pem");
	config_free(cfg);
	static const char nkey[] = "{\"cluster\": {\"nats\": \"tls://a:1\", \"tls_skip_verify\": true, \"nkey\": "
				   "\"UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4\", \"nkey_seed\": \"key.pem\"}}";
	CU_ASSERT_EQUAL_FATAL(config_parse(nkey, sizeof nkey - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_TRUE(cfg->cluster.tls_skip_verify);
	CU_ASSERT_STRING_EQUAL(cfg->cluster.nkey_seed, "key.pem");
	config_free(cfg);
	/* Keys of a section without "nats" are not checked against each other. */
	static const char off[] = "{\"cluster\": {\"username\": \"u\"}}";
	CU_ASSERT_EQUAL_FATAL(config_parse(off, sizeof off - 1, "t.json", &cfg, err, sizeof err), 0);
	config_free(cfg);

	static const struct {
		const char *url, *scheme, *userinfo, *host;
	} urls[] = {
		{"nats://127.0.0.1:4222", "nats", NULL, "127.0.0.1"},
		{"tls://alice:s3cr@t@h.example:4222", "tls", "alice:s3cr@t", "h.example"},
		{"nats://tok@[::1]:4222", "nats", "tok", "::1"},
		{"h:4222", NULL, NULL, "h"},
		{"nats://h", "nats", NULL, "h"},
		{"nats://u:p@h/x@y", "nats", "u:p", "h"},
	};
	for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
		struct config_nats_url u;
		config_nats_url_split(urls[i].url, strlen(urls[i].url), &u);
		CU_ASSERT_EQUAL(u.scheme == NULL, urls[i].scheme == NULL);
		if (u.scheme && urls[i].scheme)
			CU_ASSERT_TRUE(u.scheme_len == strlen(urls[i].scheme) && !memcmp(u.scheme, urls[i].scheme, u.scheme_len));
		CU_ASSERT_EQUAL(u.userinfo == NULL, urls[i].userinfo == NULL);
		if (u.userinfo && urls[i].userinfo)
			CU_ASSERT_TRUE(u.userinfo_len == strlen(urls[i].userinfo) &&
				       !memcmp(u.userinfo, urls[i].userinfo, u.userinfo_len));
		CU_ASSERT_TRUE(u.host_len == strlen(urls[i].host) && !memcmp(u.host, urls[i].host, u.host_len));
	}
}

/* Bridges: the defaults, and every key where it lands. */
static void test_bridges_section(void)
{
	struct config *cfg;
	char err[256];
	static const char min[] = "{\"bridges\": [{\"name\": \"up\", \"addresses\": \"[::1]:1883\", \"topics\": [{}]}]}";
	CU_ASSERT_EQUAL_FATAL(config_parse(min, sizeof min - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_EQUAL_FATAL(cfg->bridge_count, 1);
	const struct config_bridge *b = &cfg->bridges[0];
	CU_ASSERT_STRING_EQUAL(b->addresses, "[::1]:1883");
	CU_ASSERT_EQUAL(b->protocol_version, 4);
	CU_ASSERT_PTR_NULL(b->client_id);
	CU_ASSERT_EQUAL(b->keepalive, 60);
	CU_ASSERT_FALSE(b->clean_start);
	CU_ASSERT_TRUE(b->try_private);
	CU_ASSERT_EQUAL(b->max_queued_messages, 100000);
	CU_ASSERT_EQUAL(b->max_queued_bytes, 64u << 20);
	CU_ASSERT_EQUAL(b->reconnect_min, 1);
	CU_ASSERT_EQUAL(b->reconnect_max, 60);
	CU_ASSERT_EQUAL_FATAL(b->topic_count, 1);
	CU_ASSERT_STRING_EQUAL(b->topics[0].pattern, "#");
	CU_ASSERT_EQUAL(b->topics[0].direction, CONFIG_BRIDGE_OUT);
	CU_ASSERT_EQUAL(b->topics[0].qos, 1);
	CU_ASSERT_STRING_EQUAL(b->topics[0].local_prefix, "");
	CU_ASSERT_STRING_EQUAL(b->topics[0].remote_prefix, "");
	config_free(cfg);
	static const char full[] =
		"{\"bridges\": [{\"name\": \"a\", \"addresses\": [\"h:1\", \"k:2\"], \"protocol_version\": \"5\", "
		"\"client_id\": \"gw\", \"username\": \"u\", \"password\": \"p\", \"keepalive\": 5, \"clean_start\": true, "
		"\"session_expiry\": 600, \"try_private\": false, \"max_queued_messages\": 7, \"max_queued_bytes\": 2048, "
		"\"reconnect_min\": 2, \"reconnect_max\": 9, \"connect_timeout\": 3, "
		"\"topics\": [{\"pattern\": \"s/+\", \"direction\": \"both\", \"qos\": 2, \"local_prefix\": \"l/\", "
		"\"remote_prefix\": \"r/\"}, {\"pattern\": \"c/#\", \"direction\": \"in\", \"qos\": 0}]}, "
		"{\"name\": \"b\", \"addresses\": \"h:1\", \"topics\": [{}]}]}";
	CU_ASSERT_EQUAL_FATAL(config_parse(full, sizeof full - 1, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_EQUAL_FATAL(cfg->bridge_count, 2);
	b = &cfg->bridges[0];
	CU_ASSERT_STRING_EQUAL(b->addresses, "h:1,k:2");
	CU_ASSERT_EQUAL(b->protocol_version, 5);
	CU_ASSERT_STRING_EQUAL(b->client_id, "gw");
	CU_ASSERT_STRING_EQUAL(b->username, "u");
	CU_ASSERT_STRING_EQUAL(b->password, "p");
	CU_ASSERT_EQUAL(b->keepalive, 5);
	CU_ASSERT_TRUE(b->clean_start);
	CU_ASSERT_EQUAL(b->session_expiry, 600);
	CU_ASSERT_FALSE(b->try_private);
	CU_ASSERT_EQUAL(b->max_queued_messages, 7);
	CU_ASSERT_EQUAL(b->max_queued_bytes, 2048);
	CU_ASSERT_EQUAL(b->reconnect_min, 2);
	CU_ASSERT_EQUAL(b->reconnect_max, 9);
	CU_ASSERT_EQUAL(b->connect_timeout, 3);
	CU_ASSERT_EQUAL_FATAL(b->topic_count, 2);
	CU_ASSERT_STRING_EQUAL(b->topics[0].pattern, "s/+");
	CU_ASSERT_EQUAL(b->topics[0].direction, CONFIG_BRIDGE_BOTH);
	CU_ASSERT_EQUAL(b->topics[0].qos, 2);
	CU_ASSERT_STRING_EQUAL(b->topics[0].local_prefix, "l/");
	CU_ASSERT_STRING_EQUAL(b->topics[0].remote_prefix, "r/");
	CU_ASSERT_EQUAL(b->topics[1].direction, CONFIG_BRIDGE_IN);
	CU_ASSERT_EQUAL(b->topics[1].qos, 0);
	CU_ASSERT_STRING_EQUAL(cfg->bridges[1].name, "b");
	config_free(cfg);
}

/* The http listener protocol: its keys, their defaults, the dashboard's. */
static void test_http_listener_keys(void)
{
	static const char doc[] =
		"{\"listeners\": [{\"protocol\": \"http\"},\n"
		"  {\"protocol\": \"http\", \"bind\": \"::1\", \"port\": 9100, \"max_header_bytes\": 4096,\n"
		"   \"max_headers\": 10, \"http\": {\"max_body_size\": 0, \"max_requests\": 5, \"idle_timeout\": 2,\n"
		"   \"tree_page_size\": 50, \"dashboard\": false, \"require_auth\": \"remote\"}}],\n"
		" \"dashboard\": {\"max_topics\": 42, \"max_value_bytes\": 0}}";
	struct config *cfg;
	char err[256];
	int rc = config_parse(doc, sizeof doc - 1, "t.json", &cfg, err, sizeof err);
	if (rc)
		fprintf(stderr, "\n%s\n", err);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	const struct config_listener *d = &cfg->listeners[0], *l = &cfg->listeners[1];
	CU_ASSERT_EQUAL(d->protocol, CONFIG_PROTO_HTTP);
	CU_ASSERT_EQUAL(d->port, 8080);
	CU_ASSERT_STRING_EQUAL(d->bind, "127.0.0.1");
	CU_ASSERT_EQUAL(d->max_header_bytes, 8192);
	CU_ASSERT_EQUAL(d->max_headers, 100);
	CU_ASSERT_EQUAL(d->http.max_body_size, 65536);
	CU_ASSERT_EQUAL(d->http.max_requests, 1000);
	CU_ASSERT_EQUAL(d->http.idle_timeout, 30);
	CU_ASSERT_EQUAL(d->http.tree_page_size, 500);
	CU_ASSERT_TRUE(d->http.dashboard);
	CU_ASSERT_EQUAL(d->http.require_auth, CONFIG_HTTP_AUTH_REMOTE);
	CU_ASSERT_EQUAL(l->port, 9100);
	CU_ASSERT_EQUAL(l->max_header_bytes, 4096);
	CU_ASSERT_EQUAL(l->max_headers, 10);
	CU_ASSERT_EQUAL(l->http.max_body_size, 0);
	CU_ASSERT_EQUAL(l->http.max_requests, 5);
	CU_ASSERT_EQUAL(l->http.idle_timeout, 2);
	CU_ASSERT_EQUAL(l->http.tree_page_size, 50);
	CU_ASSERT_FALSE(l->http.dashboard);
	CU_ASSERT_EQUAL(cfg->dashboard.max_topics, 42);
	CU_ASSERT_EQUAL(cfg->dashboard.max_value_bytes, 0);
	config_free(cfg);
	CU_ASSERT_EQUAL_FATAL(config_parse("{}", 2, "t.json", &cfg, err, sizeof err), 0);
	CU_ASSERT_EQUAL(cfg->dashboard.max_topics, 10000);
	CU_ASSERT_EQUAL(cfg->dashboard.max_value_bytes, 256);
	config_free(cfg);
	CU_ASSERT_TRUE(config_is_loopback("127.0.0.1"));
	CU_ASSERT_TRUE(config_is_loopback("::1"));
	CU_ASSERT_TRUE(config_is_loopback("localhost"));
	CU_ASSERT_FALSE(config_is_loopback("0.0.0.0"));
	CU_ASSERT_FALSE(config_is_loopback("::"));
	CU_ASSERT_FALSE(config_is_loopback("192.168.1.2"));
}

/* config_diff: every changed key once, by path, with both values. */
struct diff_seen {
	char lines[16][320];
	size_t n;
};

static void collect_diff(const char *path, const char *was, const char *now, void *ctx)
{
	struct diff_seen *d = ctx;
	if (d->n < 16)
		snprintf(d->lines[d->n++], sizeof d->lines[0], "%s: %s -> %s", path, was, now);
}

static void test_config_diff_names_each_changed_key(void)
{
	static const char a[] = "{\"listeners\":[{\"port\":1,\"max_connections\":3}],\"limits\":{\"max_packet_size\":1000},"
				"\"persistence\":{\"fsync\":\"no\"},\"sys_interval\":10,"
				"\"bridges\":[{\"name\":\"b\",\"addresses\":[\"h:1\"],\"password\":\"old\","
				"\"topics\":[{\"pattern\":\"a/#\",\"qos\":1}]}]}";
	static const char b[] = "{\"listeners\":[{\"port\":1,\"max_connections\":4}],\"limits\":{\"max_packet_size\":100000},"
				"\"persistence\":{\"fsync\":\"always\"},\"sys_interval\":10,\"pid_file\":\"/run/w.pid\","
				"\"bridges\":[{\"name\":\"b\",\"addresses\":[\"h:1\"],\"password\":\"new\","
				"\"topics\":[{\"pattern\":\"a/#\",\"qos\":2},{\"pattern\":\"c\"}]}]}";
	struct config *x = NULL, *y = NULL;
	char err[256];
	CU_ASSERT_EQUAL_FATAL(config_parse(a, sizeof a - 1, "a.json", &x, err, sizeof err), 0);
	CU_ASSERT_EQUAL_FATAL(config_parse(b, sizeof b - 1, "b.json", &y, err, sizeof err), 0);
	struct diff_seen d = {0};
	config_diff(x, x, collect_diff, &d);
	CU_ASSERT_EQUAL(d.n, 0);
	config_diff(x, y, collect_diff, &d);
	static const char *const want[] = {
		"limits.max_packet_size: 1000 -> 100000",
		"persistence.fsync: \"no\" -> \"always\"",
		"bridges[0].password: (hidden) -> (hidden)",
		"bridges[0].topics: 1 entries -> 2 entries",
		"bridges[0].topics[0].qos: 1 -> 2",
		"pid_file: unset -> \"/run/w.pid\"",
	};
	CU_ASSERT_EQUAL(d.n, sizeof want / sizeof want[0]);
	for (size_t i = 0; i < d.n && i < sizeof want / sizeof want[0]; i++)
		CU_ASSERT_STRING_EQUAL(d.lines[i], want[i]);
	d.n = 0;
	config_diff_listener(&x->listeners[0], &y->listeners[0], 2, collect_diff, &d);
	CU_ASSERT_EQUAL(d.n, 1);
	CU_ASSERT_STRING_EQUAL(d.lines[0], "listeners[2].max_connections: 3 -> 4");
	config_free(x);
	config_free(y);
}

static CU_TestInfo config_tests[] = {
	{"cluster section: off by default, URL or URLs, bounds", test_cluster_section},
	{"cluster TLS and credentials: keys, TLS on, URL parts", test_cluster_tls_and_credentials},
	{"bridges section: defaults and every key", test_bridges_section},
	{"bad documents name key path and reason", test_bad_documents_name_key_path_and_reason},
	{"embedded NUL refused with position", test_embedded_nul_is_refused_with_position},
	{"\\u0000 in a string or key is refused with its position", test_escaped_nul_is_refused_with_position},
	{"error buffer truncated safely", test_error_buffer_is_truncated_safely},
	{"config_default values", test_default_config},
	{"empty object gives defaults", test_empty_object_gives_defaults},
	{"config/default.json equals embedded default", test_default_json_file_matches_embedded_default},
	{"missing file", test_load_missing_file},
	{"example files are valid", test_example_files_are_valid},
	{"http listener keys and defaults", test_http_listener_keys},
	{"cluster group keys at their bounds", test_cluster_group_keys_at_their_bounds},
	{"full document parsed", test_full_document_is_parsed},
	{"ws and wss listeners", test_websocket_listeners},
	{"inline acl becomes acl text", test_inline_acl_becomes_acl_text},
	{"password file turns anonymous off unless explicit",
	 test_password_file_turns_anonymous_off_unless_explicit},
	{"out of memory at every allocation", test_out_of_memory_at_every_allocation},
	{"config_diff names each changed key with both values", test_config_diff_names_each_changed_key},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"config", suite_init, suite_cleanup, NULL, NULL, config_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
