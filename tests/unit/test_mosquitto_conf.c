/*
 * Mosquitto configuration reader: each supported key lands at its Wisp
 * JSON path with Mosquitto's meaning; Mosquitto's defaults (local-only
 * mode, the default listener, allow_anonymous) hold where the file is
 * silent; every refusal names file:line, the key and the reason, including
 * values the JSON validator refuses; include_dir loads files in Mosquitto's
 * order; per_listener_settings maps or is refused. Runs in a scratch
 * directory holding the files the configurations name.
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
#include "mosquitto_conf.h"

static char scratch[] = "/tmp/wisp-test-mosqconf-XXXXXX";
static char old_cwd[PATH_MAX];

static int write_file(const char *name, const char *text)
{
	FILE *fp = fopen(name, "w");
	if (!fp)
		return -1;
	fputs(text, fp);
	return fclose(fp);
}

static const char *const scratch_files[] = {
	"cert.pem", "key.pem", "ca.pem", "passwd", "passwd2", "acl",
	"inc/b.conf", "inc/A.conf", "inc/01.conf", "inc/a.conf", "inc/B.conf", "inc/00.conf", "inc/x.txt",
	"inc/.conf", "inc2/z.conf", "inc3/nested.conf", "main.conf"};

static int suite_init(void)
{
	if (!getcwd(old_cwd, sizeof old_cwd) || !mkdtemp(scratch) || chdir(scratch) == -1)
		return -1;
	if (write_file("cert.pem", "x\n") || write_file("key.pem", "x\n") || write_file("ca.pem", "x\n") ||
	    write_file("passwd", "") || write_file("passwd2", "") || write_file("acl", "") ||
	    mkdir("inc", 0700) == -1 || mkdir("inc2", 0700) == -1 || mkdir("inc3", 0700) == -1 ||
	    mkdir("data", 0700) == -1)
		return -1;
	/* Mosquitto's example: 00, 01, A, a, B, b. Each adds a listener, so
	 * the listener order is the load order. */
	if (write_file("inc/b.conf", "listener 1005 127.0.0.1\n") ||
	    write_file("inc/A.conf", "listener 1002 127.0.0.1\n") ||
	    write_file("inc/01.conf", "listener 1001 127.0.0.1\n") ||
	    write_file("inc/a.conf", "listener 1003 127.0.0.1\n") ||
	    write_file("inc/B.conf", "listener 1004 127.0.0.1\n") ||
	    write_file("inc/00.conf", "# first\nlistener 1000 127.0.0.1\n") ||
	    write_file("inc/x.txt", "this is not read\n") || write_file("inc/.conf", "neither is this\n") ||
	    write_file("inc2/z.conf", "listener 1006 127.0.0.1\nsys_interval 7\nfrobnicate 1\n") ||
	    write_file("inc3/nested.conf", "include_dir inc\n"))
		return -1;
	return 0;
}

static int suite_cleanup(void)
{
	for (size_t i = 0; i < sizeof scratch_files / sizeof scratch_files[0]; i++)
		unlink(scratch_files[i]);
	rmdir("inc");
	rmdir("inc2");
	rmdir("inc3");
	rmdir("data");
	if (chdir(old_cwd) == -1)
		return -1;
	return rmdir(scratch);
}

/* The translated JSON without white space, for substring checks. */
static char *convert_compact(const char *conf, char *err, size_t errlen)
{
	char *json = NULL;
	if (mosq_conf_convert("m.conf", conf, strlen(conf), &json, err, errlen) != 0)
		return NULL;
	char *w = json;
	for (const char *s = json; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\n')
			*w++ = *s;
	*w = '\0';
	return json;
}

struct map_case {
	const char *conf;
	const char *json; /* expected in the compact translation */
};

/* One row per supported key: what it becomes in Wisp's JSON. */
static const struct map_case map_cases[] = {
	/* listeners */
	{"listener 1884 127.0.0.1\n", "\"listeners\":[{\"port\":1884,\"bind\":\"127.0.0.1\",\"allow_anonymous\":false}]"},
	{"listener 1884\n",
	 "\"listeners\":[{\"port\":1884,\"bind\":\"0.0.0.0\",\"allow_anonymous\":false},"
	 "{\"port\":1884,\"bind\":\"::\",\"allow_anonymous\":false}]"},
	{"listener 1884\nsocket_domain ipv4\n", "\"listeners\":[{\"port\":1884,\"bind\":\"0.0.0.0\",\"allow_anonymous\":false}]"},
	{"listener 1884\nsocket_domain ipv6\n", "\"listeners\":[{\"port\":1884,\"bind\":\"::\",\"allow_anonymous\":false}]"},
	{"listener 1884 127.0.0.1\nprotocol mqtt\n", "\"listeners\":[{\"port\":1884,\"bind\":\"127.0.0.1\",\"allow_anonymous\":false}]"},
	/* MQTT over WebSockets: ws, and wss with TLS keys */
	{"listener 9001 127.0.0.1\nprotocol websockets\n", "{\"port\":9001,\"bind\":\"127.0.0.1\",\"protocol\":\"ws\""},
	{"listener 9001 127.0.0.1\nprotocol websockets\ncertfile cert.pem\nkeyfile key.pem\n", "\"protocol\":\"wss\""},
	{"listener 1883 127.0.0.1\nlistener 9001 127.0.0.1\nprotocol websockets\nlog_type websockets\n",
	 "{\"port\":1883,\"bind\":\"127.0.0.1\",\"allow_anonymous\":false},{\"port\":9001,\"bind\":\"127.0.0.1\",\"protocol\":\"ws\""},
	/* the default listener: `port` and `bind_address`, placed after the others */
	{"port 1885\nbind_address 127.0.0.1\n", "\"listeners\":[{\"port\":1885,\"bind\":\"127.0.0.1\",\"allow_anonymous\":false}]"},
	{"bind_address 127.0.0.1\nlistener 1884 127.0.0.2\n",
	 "\"listeners\":[{\"port\":1884,\"bind\":\"127.0.0.2\",\"allow_anonymous\":false},"
	 "{\"bind\":\"127.0.0.1\",\"port\":1883,\"allow_anonymous\":false}]"},
	{"max_connections 5\nsocket_domain ipv4\nlistener 1884 127.0.0.1\n",
	 "{\"port\":1884,\"bind\":\"127.0.0.1\",\"allow_anonymous\":false},"
	 "{\"max_connections\":5,\"bind\":\"0.0.0.0\",\"port\":1883,\"allow_anonymous\":false}"},
	{"listener 1884 127.0.0.1\nmax_connections -1\n", "\"max_connections\":0"},
	{"listener 1884 127.0.0.1\nmax_connections 100\n", "\"max_connections\":100"},
	/* TLS */
	{"listener 8883 127.0.0.1\ncafile ca.pem\ncertfile cert.pem\nkeyfile key.pem\nrequire_certificate true\n"
	 "use_identity_as_username true\ntls_version tlsv1.2\nciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384\n",
	 "\"tls\":{\"ca\":\"ca.pem\",\"cert\":\"cert.pem\",\"key\":\"key.pem\",\"require_certificate\":true,"
	 "\"use_identity_as_username\":true,\"min_version\":\"tls1.2\",\"ciphersuites\":"
	 "\"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256:TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384\"},"
	 "\"protocol\":\"mqtts\""},
	/* security, global by default wherever it is written */
	{"listener 1884 127.0.0.1\nallow_anonymous true\n", "\"allow_anonymous\":true"},
	{"allow_anonymous true\nlistener 1884 127.0.0.1\nlistener 1885 127.0.0.1\n",
	 "{\"port\":1884,\"bind\":\"127.0.0.1\",\"allow_anonymous\":true},{\"port\":1885,\"bind\":\"127.0.0.1\","
	 "\"allow_anonymous\":true}"},
	{"listener 1884 127.0.0.1\npassword_file passwd\nacl_file acl\n",
	 "\"auth\":{\"password_file\":\"passwd\",\"acl_file\":\"acl\"}"},
	/* limits */
	{"max_inflight_messages 7\n", "\"max_inflight\":7"},
	{"max_inflight_messages 0\n", "\"max_inflight\":65535"},
	{"max_queued_messages 0\n", "\"max_queued_messages\":0"},
	{"max_queued_messages 50\n", "\"max_queued_messages\":50"},
	{"max_queued_bytes 4096\n", "\"max_queued_bytes\":4096"},
	{"message_size_limit 0\n", "\"listeners\""},
	{"max_packet_size 0\n", "\"max_packet_size\":268435460"},
	{"max_packet_size 2048\n", "\"max_packet_size\":2048"},
	{"max_keepalive 600\n", "\"max_keepalive\":600"},
	{"memory_limit 100000000\n", "\"memory_limit\":100000000"},
	/* MQTT 5 */
	{"listener 1884 127.0.0.1\nmax_qos 1\n", "\"max_qos\":1"},
	{"listener 1884 127.0.0.1\nmaximum_qos 0\nlistener 1885 127.0.0.1\nmax_qos 0\n", "\"max_qos\":0"},
	{"listener 1884 127.0.0.1\nmax_topic_alias 10\nlistener 1885 127.0.0.1\n", "\"max_topic_alias\":10"},
	{"max_topic_alias 0\n", "\"max_topic_alias\":0"},
	/* before any listener it makes Mosquitto's default listener, on every address */
	{"max_qos 1\n", "\"listeners\":[{\"bind\":\"0.0.0.0\",\"port\":1883,\"allow_anonymous\":false},{\"bind\":\"::\","
			 "\"port\":1883,\"allow_anonymous\":false}],\"limits\":{\"max_qos\":1}"},
	{"retain_available false\n", "\"retain_available\":false"},
	{"persistent_client_expiration 2h\n", "\"max_session_expiry\":7200"},
	{"persistent_client_expiration 14d\n", "\"max_session_expiry\":1209600"},
	{"persistent_client_expiration 1w\n", "\"max_session_expiry\":604800"},
	{"persistent_client_expiration 1m\n", "\"max_session_expiry\":2592000"},
	{"persistent_client_expiration 1y\n", "\"max_session_expiry\":31536000"},
	/* persistence */
	{"persistence false\n", "\"persistence\":{\"enabled\":false}"},
	{"persistence true\npersistence_location data/\npersistence_file mosquitto.db\nautosave_interval 1800\n",
	 "\"persistence\":{\"enabled\":true,\"dir\":\"data/\",\"fsync\":\"everysec\"}"},
	{"autosave_interval 0\n", "\"fsync\":\"no\""},
	{"pid_file /run/mosquitto/mosquitto.pid\n", "\"pid_file\":\"/run/mosquitto/mosquitto.pid\""},
	/* logging: Mosquitto's default types are error to information */
	{"sys_interval 0\n", "\"log\":{\"level\":\"info\"}"},
	/* Mosquitto's default, and what Wisp does: nothing to write */
	{"connection_messages true\n", "\"log\":{\"level\":\"info\"}"},
	{"log_type error\nlog_type warning\n", "\"level\":\"warning\""},
	{"log_type all\n", "\"level\":\"debug\""},
	{"log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type debug\nlog_type subscribe\n",
	 "\"level\":\"debug\""},
	{"log_dest stderr\nlog_dest stderr\n", "\"destination\":\"stderr\""},
	{"log_dest syslog\n", "\"destination\":\"syslog\""},
	{"log_dest file out.log\n", "\"destination\":\"out.log\""},
	{"log_dest none\n", "\"destination\":\"/dev/null\""},
	{"log_timestamp true\n", "\"level\":\"info\""},
	{"sys_interval 30\n", "\"sys_interval\":30"},
	/* bridges: a connection and its keys */
	{"connection up\naddress 10.0.0.1:1884 10.0.0.2\ntopic sensors/# out 1 \"\" site/\n",
	 "\"bridges\":[{\"name\":\"up\",\"addresses\":[\"10.0.0.1:1884\",\"10.0.0.2:1883\"],\"topics\":[{\"pattern\":"
	 "\"sensors/#\",\"direction\":\"out\",\"qos\":1,\"local_prefix\":\"\",\"remote_prefix\":\"site/\"}]"},
	{"connection up\naddress h:1\ntopic #\nbridge_protocol_version mqttv50\nremote_clientid gw\nremote_username u\n"
	 "remote_password p\ncleansession true\nkeepalive_interval 30\ntry_private false\nrestart_timeout 2 30\n"
	 "bridge_cafile ca.pem\nbridge_certfile cert.pem\nbridge_keyfile key.pem\nbridge_insecure true\n"
	 "notifications false\nstart_type automatic\n",
	 "\"topics\":[{\"pattern\":\"#\",\"direction\":\"out\",\"qos\":0}],\"protocol_version\":\"mqttv50\",\"client_id\":"
	 "\"gw\",\"username\":\"u\",\"password\":\"p\",\"clean_start\":true,\"keepalive\":30,\"try_private\":false,"
	 "\"reconnect_min\":2,\"reconnect_max\":30,\"cafile\":\"ca.pem\",\"certfile\":\"cert.pem\",\"keyfile\":\"key.pem\","
	 "\"tls_insecure\":true}]"},
	{"connection up\naddress h:1\ntopic #\nlocal_username gateway\n", "\"local_username\":\"gateway\""},
	/* Mosquitto's default client id: <host name>.<connection> */
	{"connection up\naddress h\ntopic x in\nconnection two\naddress h\ntopic y both 2\n",
	 "\"topics\":[{\"pattern\":\"y\",\"direction\":\"both\",\"qos\":2}],\"client_id\":\""},
	{"connection up\naddress h\ntopic x in\nrestart_timeout 5\n", "\"reconnect_min\":5,\"reconnect_max\":5"},
	/* comments, blank lines, CRLF, a byte order mark, trailing blanks */
	{"\xEF\xBB\xBF# comment\r\n\r\n   \n  # indented comment\nsys_interval 3  \r\n", "\"sys_interval\":3"},
};

static void test_each_key_maps_to_its_wisp_path(void)
{
	for (size_t i = 0; i < sizeof map_cases / sizeof map_cases[0]; i++) {
		char err[512];
		char *json = convert_compact(map_cases[i].conf, err, sizeof err);
		if (!json) {
			fprintf(stderr, "\ncase %zu: refused: %s\n", i, err);
			CU_FAIL("refused");
			continue;
		}
		if (!strstr(json, map_cases[i].json)) {
			fprintf(stderr, "\ncase %zu:\n  want %s\n  in   %s\n", i, map_cases[i].json, json);
			CU_FAIL("translation");
		}
		/* ... and the validator accepts it */
		struct config *cfg = NULL;
		if (mosq_conf_parse("m.conf", map_cases[i].conf, strlen(map_cases[i].conf), &cfg, err, sizeof err) != 0) {
			fprintf(stderr, "\ncase %zu: validator refused: %s\n", i, err);
			CU_FAIL("validator");
		}
		config_free(cfg);
		wisp_free(json);
	}
}

struct bad_case {
	const char *conf;
	const char *err; /* exact message */
};

static const struct bad_case bad_cases[] = {
	/* the reader's own refusals */
	{"frobnicate 1\n", "m.conf:1: frobnicate: unknown key"},
	{"\n\nsys_interval\n", "m.conf:3: sys_interval: missing value"},
	{"sys_interval ten\n", "m.conf:1: sys_interval: expected an integer, got 'ten'"},
	{"sys_interval 1 2\n", "m.conf:1: sys_interval: expected one value, got '1 2'"},
	{"persistence yes\n", "m.conf:1: persistence: expected true or false, got 'yes'"},
	{"connection_messages false\n", "m.conf:1: connection_messages: not supported by Wisp: connections are logged "
					"at level notice; log_type warning (log.level \"warning\") leaves them out"},
	{"connection_messages yes\n", "m.conf:1: connection_messages: expected true or false, got 'yes'"},
	{"listener 0 /tmp/mosq.sock\n",
	 "m.conf:1: listener: not supported by Wisp: port 0 means a Unix socket in Mosquitto; Wisp listens on TCP only"},
	{"listener 70000\n", "m.conf:1: listener: port out of range: 70000 (allowed 1 to 65535)"},
	{"listener 1884 a b\n", "m.conf:1: listener: expected 'listener <port> [<address>]', got '1884 a b'"},
	{"listener 1884\nprotocol ftp\n", "m.conf:2: protocol: expected mqtt or websockets, got 'ftp'"},
	{"listener 1884\nsocket_domain ipx\n", "m.conf:2: socket_domain: expected ipv4 or ipv6, got 'ipx'"},
	{"listener 1884\nmax_connections 10\n",
	 "m.conf:2: max_connections: not supported by Wisp on a listener without an address: Wisp listens on IPv4 "
	 "and IPv6 with two sockets and counts each apart; add an address or socket_domain to the listener"},
	{"listener 1884 127.0.0.1\nmax_connections 0\n",
	 "m.conf:2: max_connections: not supported by Wisp: 0 refuses every connection in Mosquitto; remove the "
	 "listener instead (-1 means unlimited)"},
	{"listener 8883 127.0.0.1\ncafile ca.pem\n",
	 "m.conf:1: listener: TLS settings without certfile: Mosquitto needs certfile and keyfile to enable TLS"},
	{"listener 8883 127.0.0.1\ncertfile cert.pem\nkeyfile key.pem\nrequire_certificate true\n",
	 "m.conf:4: require_certificate: needs cafile (the CA client certificates must chain to)"},
	{"listener 8883 127.0.0.1\ncertfile cert.pem\nkeyfile key.pem\ntls_version tlsv1.1\n",
	 "m.conf:4: tls_version: not supported by Wisp: tlsv1.1 (Wisp accepts TLS 1.2 and later only)"},
	{"listener 8883 127.0.0.1\ncertfile cert.pem\nkeyfile key.pem\nciphers HIGH:!aNULL\n",
	 "m.conf:4: ciphers: cannot translate the OpenSSL cipher 'HIGH' to mbedTLS (Wisp understands ECDHE/DHE "
	 "AES-GCM, CHACHA20-POLY1305 and AES-SHA256/384 suite names, not OpenSSL keywords)"},
	{"password_file passwd\npassword_file passwd2\n",
	 "m.conf:2: password_file: duplicate value (already set at m.conf:1)"},
	{"persistence_location a\npersistence_location b\n",
	 "m.conf:2: persistence_location: duplicate value (already set at m.conf:1)"},
	{"message_size_limit 1000\n",
	 "m.conf:1: message_size_limit: not supported by Wisp: a payload limit that completes the QoS flow and "
	 "drops the message; use max_packet_size, which closes the connection of a client sending more"},
	{"max_packet_size 10\n", "m.conf:1: max_packet_size: out of range: 10 (Mosquitto allows 20 to 2147483647)"},
	{"persistence_file other.db\n",
	 "m.conf:1: persistence_file: not supported by Wisp: Wisp keeps its store as several files (log.N, "
	 "snap.N) in persistence_location, not in one named file; remove persistence_file, or give each broker "
	 "its own persistence_location"},
	{"autosave_interval -5\n", "m.conf:1: autosave_interval: out of range: -5 (seconds, 0 = at exit only)"},
	{"log_dest stdout\n",
	 "m.conf:1: log_dest: not supported by Wisp: Wisp logs to stderr, syslog or a file (use log_dest stderr)"},
	{"log_dest topic\n", "m.conf:1: log_dest: not supported by Wisp: the log is not published on $SYS/broker/log"},
	{"log_dest stderr\nlog_dest syslog\n",
	 "m.conf:2: log_dest: not supported by Wisp: a second log destination (Wisp writes to one; already stderr "
	 "at m.conf:1)"},
	{"log_dest file\n", "m.conf:1: log_dest: log_dest file needs a file name"},
	{"log_type information\n",
	 "m.conf:1: log_type: not supported by Wisp: Wisp logs by level, so logging information logs error too; "
	 "add log_type error"},
	{"log_type error\nlog_type notice\n",
	 "m.conf:2: log_type: not supported by Wisp: Wisp logs by level, so logging notice logs warning too; add "
	 "log_type warning"},
	{"log_type error\nlog_type subscribe\n",
	 "m.conf:2: log_type: not supported by Wisp: subscriptions are logged at level debug only; add log_type "
	 "debug"},
	{"log_type none\n",
	 "m.conf:1: log_type: not supported by Wisp: Wisp always logs errors (use log_dest none to discard the log)"},
	{"log_timestamp false\n",
	 "m.conf:1: log_timestamp: not supported by Wisp: every text log line starts with its time"},
	{"include_dir nowhere\n", "m.conf:1: include_dir: cannot open directory nowhere: No such file or directory"},
	/* plugins, bridges, and keys waiting for MQTT 5 */
	{"auth_opt_db x\n", "m.conf:1: auth_opt_db: not supported by Wisp: no plugins"},
	{"topic # both 0\n", "m.conf:1: topic: a bridge key needs a `connection` line before it"},
	{"try_private false\n", "m.conf:1: try_private: a bridge key needs a `connection` line before it"},
	{"connection up\naddress h\ntopic # sideways\n", "m.conf:3: topic: direction 'sideways': expected out, in or both"},
	{"connection up\naddress h\ntopic # in 3\n", "m.conf:3: topic: qos 3: expected 0, 1 or 2"},
	{"connection up\naddress h\ntopic # in 1 a/\n",
	 "m.conf:3: topic: expected pattern [direction [qos [local_prefix remote_prefix]]], got '# in 1 a/'"},
	{"connection up\nconnection up\n", "m.conf:2: connection: a second connection named 'up'"},
	{"connection up\nbridge_protocol_version mqttv31\n",
	 "m.conf:2: bridge_protocol_version: 'mqttv31': Wisp's bridges speak mqttv311 or mqttv50"},
	{"connection up\nlocal_clientid x\n",
	 "m.conf:2: local_clientid: not supported by Wisp's bridges: the local session is $bridge/<connection> (what %c means in ACL patterns for it)"},
	{"connection up\nlocal_password x\n",
	 "m.conf:2: local_password: not supported by Wisp's bridges: the local side is not a login: local_username alone "
	 "chooses its ACL rules"},
	{"connection up\nnotifications true\n",
	 "m.conf:2: notifications: not supported by Wisp's bridges: only 'false' (the bridge's state is in "
	 "$SYS/broker/bridges/<name>/)"},
	/* per-listener keys Wisp has broker-wide */
	{"listener 1884 127.0.0.1\nmax_qos 1\nlistener 1885 127.0.0.1\nmax_qos 2\n",
	 "m.conf:4: max_qos: not supported by Wisp: max_qos is per listener in Mosquitto and for the whole broker in "
	 "Wisp, so every listener must have the same (this one has 2, the listener at m.conf:1 has 1)"},
	{"listener 1884 127.0.0.1\nmax_topic_alias 5\nlistener 1885 127.0.0.1\n",
	 "m.conf:3: listener: not supported by Wisp: max_topic_alias is per listener in Mosquitto and for the whole "
	 "broker in Wisp, so every listener must have the same (this one has 10, the listener at m.conf:1 has 5)"},
	{"max_topic_alias 5\nlistener 1884 127.0.0.1\n",
	 "m.conf:1: max_topic_alias: before any listener line this applies to the default listener (port, "
	 "bind_address), which this file does not define, so Mosquitto ignores it; move it after a listener line"},
	{"listener 1884 127.0.0.1\nmax_qos 3\n", "m.conf:2: max_qos: out of range: 3 (Mosquitto allows 0 to 2)"},
	{"persistent_client_expiration 14\n",
	 "m.conf:1: persistent_client_expiration: expected a duration such as 12h, 14d, 2w, 6m or 1y, got '14'"},
	{"persistent_client_expiration 200y\n", "m.conf:1: persistent_client_expiration: out of range: 200y"},
	{"retain_available no\n", "m.conf:1: retain_available: expected true or false, got 'no'"},
	/* values the JSON validator refuses, reported at their line */
	{"\nmax_inflight_messages 70000\n",
	 "m.conf:2: max_inflight_messages: out of range: 70000 (allowed 1 to 65535) (Wisp key limits.max_inflight)"},
	{"sys_interval 90000\n",
	 "m.conf:1: sys_interval: out of range: 90000 (allowed 0 to 86400) (Wisp key sys_interval)"},
	{"listener 1884 127.0.0.1\npassword_file nofile\n",
	 "m.conf:2: password_file: file not found: nofile (Wisp key auth.password_file)"},
	{"listener 8883 127.0.0.1\ncertfile nocert.pem\nkeyfile key.pem\n",
	 "m.conf:2: certfile: file not found: nocert.pem (Wisp key listeners[0].tls.cert)"},
	{"listener 8883 127.0.0.1\ncertfile cert.pem\nkeyfile key.pem\nuse_identity_as_username true\n",
	 "m.conf:4: use_identity_as_username: needs require_certificate to be true (Wisp key "
	 "listeners[0].tls.use_identity_as_username)"},
	{"listener 1884 127.0.0.1\nlistener 1884 127.0.0.1\n",
	 "m.conf:2: listener: duplicate of listeners[0] (127.0.0.1 port 1884) (Wisp key listeners[1].port)"},
	{"port 1884\nbind_address 127.0.0.1\nlistener 1884 127.0.0.1\n",
	 "m.conf:1: port: duplicate of listeners[0] (127.0.0.1 port 1884) (Wisp key listeners[1].port)"},
	{"max_keepalive 0\n",
	 "m.conf:1: max_keepalive: out of range: 0 (allowed 1 to 65535) (Wisp key limits.max_keepalive)"},
	/* per_listener_settings */
	{"allow_anonymous true\nper_listener_settings true\n",
	 "m.conf:2: per_listener_settings: must come before allow_anonymous, password_file and acl_file (as "
	 "Mosquitto requires)"},
	{"per_listener_settings true\nlistener 1884 127.0.0.1\npassword_file passwd\nlistener 1885 127.0.0.1\n"
	 "password_file passwd2\n",
	 "m.conf:5: password_file: not supported yet: with per_listener_settings true, every listener must use the "
	 "same password_file (Wisp has one for the whole broker; this listener's differs from the one at m.conf:2)"},
	{"per_listener_settings true\nlistener 1884 127.0.0.1\nacl_file acl\nlistener 1885 127.0.0.1\n",
	 "m.conf:4: listener: not supported yet: with per_listener_settings true, every listener must use the same "
	 "acl_file (Wisp has one for the whole broker; this listener's differs from the one at m.conf:2)"},
	{"per_listener_settings true\nallow_anonymous true\nlistener 1884 127.0.0.1\n",
	 "m.conf:2: allow_anonymous: with per_listener_settings true this applies to the default listener (port, "
	 "bind_address), which this file does not define, so Mosquitto ignores it; move it after a listener line"},
	/* include_dir: errors in an included file name that file */
	{"include_dir inc2\n", "inc2/z.conf:3: frobnicate: unknown key"},
	{"include_dir inc3\n",
	 "inc3/nested.conf:1: include_dir: only allowed in the main configuration file (as in Mosquitto)"},
};

static void test_refusals_name_file_line_key_and_reason(void)
{
	for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		char err[512];
		struct config *cfg = NULL;
		int rc = mosq_conf_parse("m.conf", bad_cases[i].conf, strlen(bad_cases[i].conf), &cfg, err, sizeof err);
		CU_ASSERT_EQUAL(rc, WISP_ECONFIG);
		CU_ASSERT_PTR_NULL(cfg);
		if (rc != WISP_ECONFIG || strcmp(err, bad_cases[i].err) != 0) {
			fprintf(stderr, "\ncase %zu:\n  want %s\n  got  %s\n", i, bad_cases[i].err, rc ? err : "(accepted)");
			CU_FAIL("message");
		}
		config_free(cfg);
	}
}

static struct config *parse_ok(const char *conf)
{
	char err[512];
	struct config *cfg = NULL;
	if (mosq_conf_parse("m.conf", conf, strlen(conf), &cfg, err, sizeof err) != 0)
		fprintf(stderr, "\nrefused: %s\n", err);
	return cfg;
}

/* Mosquitto 2.0 without a listener: 127.0.0.1 and ::1 port 1883,
 * anonymous allowed (even with a password file, which then applies to
 * clients that give a user name). */
static void test_no_listener_is_local_only_mode(void)
{
	struct config *cfg = parse_ok("password_file passwd\nsys_interval 10\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_EQUAL(cfg->listener_count, 2);
	CU_ASSERT_STRING_EQUAL(cfg->listeners[0].bind, "127.0.0.1");
	CU_ASSERT_STRING_EQUAL(cfg->listeners[1].bind, "::1");
	for (size_t i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(cfg->listeners[i].port, 1883);
		CU_ASSERT_TRUE(cfg->listeners[i].allow_anonymous);
	}
	CU_ASSERT_STRING_EQUAL(cfg->auth.password_file, "passwd");
	config_free(cfg);
	cfg = parse_ok("allow_anonymous false\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_FALSE(cfg->listeners[0].allow_anonymous);
	config_free(cfg);
}

/* Silent where Wisp's own defaults differ: persistence stays on. */
static void test_silent_file_keeps_wisp_persistence_on(void)
{
	struct config *cfg = parse_ok("listener 1884 127.0.0.1\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_TRUE(cfg->persistence.enabled);
	CU_ASSERT_EQUAL(cfg->persistence.fsync, CONFIG_FSYNC_EVERYSEC);
	CU_ASSERT_FALSE(cfg->listeners[0].allow_anonymous);
	CU_ASSERT_EQUAL(cfg->log.level, 3); /* info: Mosquitto logs "information" by default */
	config_free(cfg);
}

static void test_include_dir_loads_in_mosquitto_order(void)
{
	struct config *cfg = parse_ok("sys_interval 1\ninclude_dir inc\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	/* 00, 01, A, a, B, b; x.txt and a file named ".conf" are not read */
	CU_ASSERT_EQUAL_FATAL(cfg->listener_count, 6);
	for (size_t i = 0; i < 6; i++)
		CU_ASSERT_EQUAL(cfg->listeners[i].port, 1000 + i);
	config_free(cfg);
}

static void test_include_dirs_load_one_after_the_other(void)
{
	write_file("inc2/z.conf", "listener 1006 127.0.0.1\n");
	struct config *cfg = parse_ok("include_dir inc2\ninclude_dir inc/\n");
	write_file("inc2/z.conf", "listener 1006 127.0.0.1\nsys_interval 7\nfrobnicate 1\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_EQUAL_FATAL(cfg->listener_count, 7);
	CU_ASSERT_EQUAL(cfg->listeners[0].port, 1006);
	CU_ASSERT_EQUAL(cfg->listeners[1].port, 1000);
	CU_ASSERT_EQUAL(cfg->listeners[6].port, 1005);
	config_free(cfg);
}

/* A key before any `listener` line belongs to the default listener, which
 * Mosquitto then opens on port 1883 after the others. */
static void test_default_listener_comes_last_on_1883(void)
{
	struct config *cfg = parse_ok("certfile cert.pem\nkeyfile key.pem\nbind_address 127.0.0.1\n"
				      "listener 1884 127.0.0.1\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_EQUAL_FATAL(cfg->listener_count, 2);
	CU_ASSERT_EQUAL(cfg->listeners[0].port, 1884);
	CU_ASSERT_EQUAL(cfg->listeners[0].protocol, CONFIG_PROTO_MQTT);
	CU_ASSERT_EQUAL(cfg->listeners[1].port, 1883);
	CU_ASSERT_EQUAL(cfg->listeners[1].protocol, CONFIG_PROTO_MQTTS);
	CU_ASSERT_STRING_EQUAL(cfg->listeners[1].tls.cert, "cert.pem");
	config_free(cfg);
}

static void test_per_listener_settings(void)
{
	/* allow_anonymous per listener; the same files on every listener map
	 * to Wisp's broker-wide ones */
	struct config *cfg = parse_ok("per_listener_settings true\n"
				      "listener 1884 127.0.0.1\nallow_anonymous true\npassword_file passwd\nacl_file acl\n"
				      "listener 1885 127.0.0.1\npassword_file passwd\nacl_file acl\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_TRUE(cfg->listeners[0].allow_anonymous);
	CU_ASSERT_FALSE(cfg->listeners[1].allow_anonymous);
	CU_ASSERT_STRING_EQUAL(cfg->auth.password_file, "passwd");
	CU_ASSERT_STRING_EQUAL(cfg->auth.acl_file, "acl");
	config_free(cfg);
	/* false (the default): allow_anonymous after a listener is still global */
	cfg = parse_ok("per_listener_settings false\nlistener 1884 127.0.0.1\nlistener 1885 127.0.0.1\n"
		       "allow_anonymous true\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_TRUE(cfg->listeners[0].allow_anonymous);
	CU_ASSERT_TRUE(cfg->listeners[1].allow_anonymous);
	config_free(cfg);
	/* a per-listener password file before any listener makes the default one real */
	cfg = parse_ok("per_listener_settings true\npassword_file passwd\nbind_address 127.0.0.1\n");
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_EQUAL(cfg->listener_count, 1);
	CU_ASSERT_EQUAL(cfg->listeners[0].port, 1883);
	CU_ASSERT_FALSE(cfg->listeners[0].allow_anonymous);
	CU_ASSERT_STRING_EQUAL(cfg->auth.password_file, "passwd");
	config_free(cfg);
}

/* The file format is decided by content. */
static void test_detect_by_first_character(void)
{
	CU_ASSERT_FALSE(mosq_conf_detect("{}", 2));
	CU_ASSERT_FALSE(mosq_conf_detect("\xEF\xBB\xBF \n\t{", 6));
	CU_ASSERT_FALSE(mosq_conf_detect("  []", 4));
	CU_ASSERT_FALSE(mosq_conf_detect("", 0));
	CU_ASSERT_TRUE(mosq_conf_detect("# mosquitto\n", 12));
	CU_ASSERT_TRUE(mosq_conf_detect("\nlistener 1883\n", 15));
}

/* config_load reads either format from a file. */
static void test_config_load_reads_a_mosquitto_file(void)
{
	CU_ASSERT_EQUAL_FATAL(write_file("main.conf", "listener 1884 127.0.0.1\nmax_queued_messages 5\n"), 0);
	char err[512];
	struct config *cfg = NULL;
	CU_ASSERT_EQUAL_FATAL(config_load("main.conf", &cfg, err, sizeof err), 0);
	CU_ASSERT_EQUAL(cfg->limits.max_queued_messages, 5);
	CU_ASSERT_STRING_EQUAL(cfg->path, "main.conf");
	config_free(cfg);
	CU_ASSERT_EQUAL_FATAL(write_file("main.conf", "listener 1884 127.0.0.1\nbridge_cafile x\n"), 0);
	CU_ASSERT_EQUAL(config_load("main.conf", &cfg, err, sizeof err), WISP_ECONFIG);
	CU_ASSERT_STRING_EQUAL(err, "main.conf:2: bridge_cafile: a bridge key needs a `connection` line before it");
}

static void test_out_of_memory_at_every_allocation(void)
{
	static const char conf[] = "listener 1884\nsocket_domain ipv4\npassword_file passwd\n"
				   "allow_anonymous true\nlistener 1885 127.0.0.1\nacl_file acl\ninclude_dir inc\n"
				   "log_dest syslog\nmax_inflight_messages 70000\n";
	size_t base = wisp_mem_used();
	int done = 0;
	for (uint64_t n = 1; n < 400 && !done; n++) {
		struct config *cfg = NULL;
		char err[256];
		wisp_mem_fail_after(n, 0);
		int rc = mosq_conf_parse("m.conf", conf, sizeof conf - 1, &cfg, err, sizeof err);
		wisp_mem_fail_after(0, 0);
		CU_ASSERT_PTR_NULL(cfg);
		if (rc == WISP_ECONFIG) {
			done = 1; /* got as far as the validator's refusal */
			CU_ASSERT_PTR_NOT_NULL(strstr(err, "max_inflight_messages"));
		} else {
			CU_ASSERT_EQUAL(rc, WISP_ENOMEM);
		}
		CU_ASSERT_EQUAL(wisp_mem_used(), base);
	}
	CU_ASSERT_TRUE(done);
}

static CU_TestInfo tests[] = {
	{"each key maps to its Wisp path", test_each_key_maps_to_its_wisp_path},
	{"refusals name file:line, key and reason", test_refusals_name_file_line_key_and_reason},
	{"no listener is local-only mode", test_no_listener_is_local_only_mode},
	{"a silent file keeps Wisp's persistence on", test_silent_file_keeps_wisp_persistence_on},
	{"include_dir loads in Mosquitto's order", test_include_dir_loads_in_mosquitto_order},
	{"include_dirs load one after the other", test_include_dirs_load_one_after_the_other},
	{"default listener comes last, on 1883", test_default_listener_comes_last_on_1883},
	{"per_listener_settings", test_per_listener_settings},
	{"format detected by the first character", test_detect_by_first_character},
	{"config_load reads a mosquitto.conf", test_config_load_reads_a_mosquitto_file},
	{"out of memory at every allocation", test_out_of_memory_at_every_allocation},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"mosquitto_conf", suite_init, suite_cleanup, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
