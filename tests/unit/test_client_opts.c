/*
 * wisp_pub/wisp_sub option parsing: values, defaults, and which inputs
 * are refused (the error texts themselves are compared with mosquitto's
 * in tests/e2e_clients/test_args.py). Also the -T topic matcher.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit_main.h"
#include "cli_misc.h"
#include "cli_opts.h"

static int parse(struct cli_cfg *cfg, enum cli_kind kind, const char *const *args)
{
	char *argv[32];
	int argc = 0;
	argv[argc++] = (char *)"prog";
	for (; *args && argc < 31; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	/* No options file: point the lookup at an empty place. */
	setenv("XDG_CONFIG_HOME", "/nonexistent-wisp-test", 1);
	return cli_cfg_load(cfg, kind, argc, argv);
}

struct opt_case {
	const char *name;
	enum cli_kind kind;
	const char *args[12];
	int rc;
};

static const struct opt_case CASES[] = {
	{"minimal sub", CLI_SUB, {"-t", "a/#"}, 0},
	{"sub needs a topic", CLI_SUB, {"-v"}, CLI_PARSE_ERROR},
	{"pub option on sub is unknown", CLI_SUB, {"-t", "a", "-m", "x"}, CLI_PARSE_ERROR},
	{"sub option on pub is unknown", CLI_PUB, {"-t", "a", "-m", "x", "-v"}, CLI_PARSE_ERROR},
	{"--help", CLI_SUB, {"--help"}, CLI_PARSE_HELP},
	{"--version", CLI_PUB, {"--version"}, CLI_PARSE_VERSION},
	{"two message sources", CLI_PUB, {"-t", "a", "-m", "x", "-n"}, CLI_PARSE_ERROR},
	{"keepalive below 5", CLI_SUB, {"-t", "a", "-k", "4"}, CLI_PARSE_ERROR},
	{"keepalive 5", CLI_SUB, {"-t", "a", "-k", "5"}, 0},
	{"qos 3", CLI_SUB, {"-t", "a", "-q", "3"}, CLI_PARSE_ERROR},
	{"-c needs -i (v3)", CLI_SUB, {"-t", "a", "-c"}, CLI_PARSE_ERROR},
	{"-c with -i", CLI_SUB, {"-t", "a", "-c", "-i", "x"}, 0},
	{"-i with -I", CLI_SUB, {"-t", "a", "-i", "x", "-I", "y"}, CLI_PARSE_ERROR},
	{"will payload without topic", CLI_PUB, {"-t", "a", "-n", "--will-payload", "x"}, CLI_PARSE_ERROR},
	{"cert without key", CLI_PUB, {"-t", "a", "-n", "--cert", "c"}, CLI_PARSE_ERROR},
	{"publish topic with wildcard", CLI_PUB, {"-t", "a/+", "-n"}, CLI_PARSE_ERROR},
	{"bad filter", CLI_SUB, {"-t", "a/b#"}, CLI_PARSE_ERROR},
	{"bad format", CLI_SUB, {"-t", "a", "-F", "%k"}, CLI_PARSE_ERROR},
	{"-x infinity symbol", CLI_SUB, {"-t", "a", "-x", "\xe2\x88\x9e"}, 0},
	{"-x out of range", CLI_SUB, {"-t", "a", "-x", "4294967296"}, CLI_PARSE_ERROR},
	{"missing value", CLI_SUB, {"-t"}, CLI_PARSE_ERROR},
	{"-D publish property", CLI_PUB, {"-t", "a", "-n", "-D", "publish", "content-type", "x"}, 0},
	{"-D user-property", CLI_SUB, {"-t", "a", "-D", "CONNECT", "User-Property", "k", "v"}, 0},
	{"-D user-property without value", CLI_SUB, {"-t", "a", "-D", "connect", "user-property", "k"},
	 CLI_PARSE_ERROR},
	{"-D unknown command", CLI_SUB, {"-t", "a", "-D", "suback", "user-property", "k", "v"}, CLI_PARSE_ERROR},
	{"-D unknown property", CLI_SUB, {"-t", "a", "-D", "connect", "colour", "red"}, CLI_PARSE_ERROR},
	{"-D wrong packet", CLI_SUB, {"-t", "a", "-D", "connect", "content-type", "x"}, CLI_PARSE_ERROR},
	{"-D not for subscribe", CLI_SUB, {"-t", "a", "-D", "subscribe", "reason-string", "x"}, CLI_PARSE_ERROR},
	{"-D byte out of range", CLI_PUB, {"-t", "a", "-n", "-D", "publish", "payload-format-indicator", "256"},
	 CLI_PARSE_ERROR},
	{"-D varint too big", CLI_SUB, {"-t", "a", "-D", "subscribe", "subscription-identifier", "268435456"},
	 CLI_PARSE_ERROR},
	{"-D duplicate", CLI_PUB, {"-t", "a", "-n", "-D", "publish", "topic-alias", "1", "-D", "publish",
				   "topic-alias", "2"}, CLI_PARSE_ERROR},
	{"-D zero receive maximum", CLI_SUB, {"-t", "a", "-D", "connect", "receive-maximum", "0"}, CLI_PARSE_ERROR},
	{"-D and -x are one property", CLI_SUB, {"-t", "a", "-x", "5", "-D", "connect", "session-expiry-interval",
						 "6"}, CLI_PARSE_ERROR},
	{"-D connack is refused silently", CLI_SUB, {"-t", "a", "-D", "connack", "user-property", "k", "v"},
	 CLI_PARSE_ERROR},
};

static void test_option_cases(void)
{
	for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
		struct cli_cfg cfg;
		int rc = parse(&cfg, CASES[i].kind, CASES[i].args);
		if (rc != CASES[i].rc)
			fprintf(stderr, "\ncase '%s': rc %d\n", CASES[i].name, rc);
		CU_ASSERT_EQUAL(rc, CASES[i].rc);
		cli_cfg_cleanup(&cfg);
	}
}

static void test_values_and_defaults(void)
{
	struct cli_cfg cfg;
	const char *args[] = {"-L", "mqtt://u:p@example.org:1999/a/b", "-m", "hi", "-q", "2", "-r",
			      "--repeat", "3", "--repeat-delay", "0.25", NULL};
	CU_ASSERT_EQUAL_FATAL(parse(&cfg, CLI_PUB, args), 0);
	CU_ASSERT_STRING_EQUAL(cfg.host, "example.org");
	CU_ASSERT_EQUAL(cfg.port, 1999);
	CU_ASSERT_STRING_EQUAL(cfg.username, "u");
	CU_ASSERT_STRING_EQUAL(cfg.password, "p");
	CU_ASSERT_STRING_EQUAL(cfg.topic, "a/b");
	CU_ASSERT_EQUAL(cfg.msglen, 2);
	CU_ASSERT_EQUAL(cfg.qos, 2);
	CU_ASSERT(cfg.retain);
	CU_ASSERT_EQUAL(cfg.repeat_count, 3);
	CU_ASSERT_EQUAL(cfg.repeat_delay_us, 250000);
	CU_ASSERT_EQUAL(cfg.keepalive, 60);
	CU_ASSERT_EQUAL(cfg.protocol_version, 4);
	cli_cfg_cleanup(&cfg);

	const char *sargs[] = {"-t", "a", "-t", "b/+", "-T", "b/x", "-U", "c", "--cafile", "ca.pem", NULL};
	CU_ASSERT_EQUAL_FATAL(parse(&cfg, CLI_SUB, sargs), 0);
	CU_ASSERT_EQUAL(cfg.topics.n, 2);
	CU_ASSERT_EQUAL(cfg.filter_outs.n, 1);
	CU_ASSERT_EQUAL(cfg.unsub_topics.n, 1);
	CU_ASSERT_EQUAL(cli_cfg_port(&cfg), 8883); /* TLS default port */
	CU_ASSERT_STRING_EQUAL(cfg.host, "localhost");
	cli_cfg_cleanup(&cfg);
}

static void test_v5_properties(void)
{
	struct cli_cfg cfg;
	const char *args[] = {"-t", "a", "-m", "x", "-D", "publish", "topic-alias", "7", "-D", "publish",
			      "user-property", "k", "v", "-D", "will", "will-delay-interval", "300",
			      "-D", "disconnect", "session-expiry-interval", "abc", "-i", "me", "-c", NULL};
	CU_ASSERT_EQUAL_FATAL(parse(&cfg, CLI_PUB, args), 0);
	CU_ASSERT_EQUAL(cfg.protocol_version, 5); /* -D selects v5 */
	CU_ASSERT(cfg.props.have_topic_alias);
	static const uint8_t publish[] = {0x23, 0, 7, 0x26, 0, 1, 'k', 0, 1, 'v'};
	CU_ASSERT_EQUAL(cfg.props.list[CLI_PROPS_PUBLISH].len, sizeof publish);
	CU_ASSERT(memcmp(cfg.props.list[CLI_PROPS_PUBLISH].buf, publish, sizeof publish) == 0);
	static const uint8_t will[] = {0x18, 0, 0, 1, 44};
	CU_ASSERT_EQUAL(cfg.props.list[CLI_PROPS_WILL].len, sizeof will);
	CU_ASSERT(memcmp(cfg.props.list[CLI_PROPS_WILL].buf, will, sizeof will) == 0);
	/* atol("abc") is 0, as in mosquitto. */
	static const uint8_t disconnect[] = {0x11, 0, 0, 0, 0};
	CU_ASSERT(memcmp(cfg.props.list[CLI_PROPS_DISCONNECT].buf, disconnect, sizeof disconnect) == 0);
	/* -c with v5: a session that never expires, appended to CONNECT. */
	static const uint8_t connect[] = {0x11, 0xff, 0xff, 0xff, 0xff};
	CU_ASSERT_EQUAL(cfg.props.list[CLI_PROPS_CONNECT].len, sizeof connect);
	CU_ASSERT(memcmp(cfg.props.list[CLI_PROPS_CONNECT].buf, connect, sizeof connect) == 0);
	cli_cfg_cleanup(&cfg);

	/* -V after -D wins, as in mosquitto (the properties then fail at connect). */
	const char *v3[] = {"-t", "a", "-D", "subscribe", "user-property", "k", "v", "-V", "311", NULL};
	CU_ASSERT_EQUAL_FATAL(parse(&cfg, CLI_SUB, v3), 0);
	CU_ASSERT_EQUAL(cfg.protocol_version, 4);
	cli_cfg_cleanup(&cfg);
}

struct match_case {
	const char *filter, *topic;
	bool match;
};

static const struct match_case MATCHES[] = {
	{"a/b", "a/b", true},     {"a/+", "a/b", true},       {"a/+", "a/b/c", false}, {"a/#", "a", true},
	{"a/#", "a/b/c", true},   {"#", "a/b", true},         {"#", "$SYS/x", false},  {"+/x", "$SYS/x", false},
	{"$SYS/#", "$SYS/x", true}, {"+", "", true},          {"a/+/c", "a//c", true}, {"a/b", "a/bc", false},
	{"+/+", "/x", true},      {"a", "a/b", false},
};

static void test_topic_matching(void)
{
	for (size_t i = 0; i < sizeof MATCHES / sizeof MATCHES[0]; i++) {
		bool got = cli_topic_matches(MATCHES[i].filter, MATCHES[i].topic, strlen(MATCHES[i].topic));
		if (got != MATCHES[i].match)
			fprintf(stderr, "\nmatch '%s' '%s'\n", MATCHES[i].filter, MATCHES[i].topic);
		CU_ASSERT_EQUAL(got, MATCHES[i].match);
	}
}

static CU_TestInfo tests[] = {
	{"accepted and refused option lines", test_option_cases},
	{"values and defaults", test_values_and_defaults},
	{"-D properties: encoding, -V, -x", test_v5_properties},
	{"-T filter matching [MQTT-4.7.1-2] [MQTT-4.7.2-1]", test_topic_matching},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"client_opts", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
