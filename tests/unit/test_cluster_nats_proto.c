/*
 * The data connection's NATS protocol (broker/src/cluster/nats_proto.h):
 * the server lines it reads (nats-server 2.9.10's own INFO, and what a
 * newer or stranger server may send), the CONNECT it writes (escaped, its
 * secrets where nats-server reads them), the HPUB line, and the base64url
 * of a nonce's signature (RFC 4648 section 5 vectors).
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "nats_proto.h"
#include "sbuf.h"
#include "unit_main.h"

/* nats-server 2.9.10's first line, as it sends it (a blank before CRLF). */
static const char INFO_2_9[] =
	"{\"server_id\":\"NBWSOIXTLWWZJY5TBBDXNAIBM2353PHWU2ZZ4MNVVTBMBHS2RKAO6QQM\",\"server_name\":\"n1\","
	"\"version\":\"2.9.10\",\"proto\":1,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\",\"port\":14222,"
	"\"headers\":true,\"max_payload\":1048576,\"jetstream\":true,\"client_id\":4,\"client_ip\":\"127.0.0.1\"} ";

static void test_ops(void)
{
	static const struct {
		const char *line;
		enum nats_op op;
		const char *arg;
	} cases[] = {
		{"INFO {\"a\":1}", NATS_OP_INFO, "{\"a\":1}"},
		{"info  {}", NATS_OP_INFO, "{}"},  /* case and blanks as nats-server's parser takes them */
		{"PING", NATS_OP_PING, ""},
		{"PONG", NATS_OP_PONG, ""},
		{"+OK", NATS_OP_OK, ""},
		{"-ERR 'Authorization Violation'", NATS_OP_ERR, "'Authorization Violation'"},
		{"MSG a 1 2", NATS_OP_MSG, "a 1 2"},
		{"HMSG a 1 2 3", NATS_OP_MSG, "a 1 2 3"},
		{"PINGX", NATS_OP_UNKNOWN, "PINGX"}, /* a name is a whole word */
		{"INF", NATS_OP_UNKNOWN, "INF"},
		{"", NATS_OP_UNKNOWN, ""},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *arg = NULL;
		size_t alen = 99;
		enum nats_op op = nats_proto_op(cases[i].line, strlen(cases[i].line), &arg, &alen);
		CU_ASSERT_EQUAL(op, cases[i].op);
		CU_ASSERT_EQUAL(alen, strlen(cases[i].arg));
		CU_ASSERT_EQUAL(memcmp(arg, cases[i].arg, alen), 0);
	}
}

static void test_info_of_nats_server(void)
{
	struct nats_info info;
	CU_ASSERT_EQUAL_FATAL(nats_proto_info(INFO_2_9, strlen(INFO_2_9), &info), 0);
	CU_ASSERT_EQUAL(info.max_payload, 1048576);
	CU_ASSERT_TRUE(info.headers);
	CU_ASSERT_FALSE(info.tls_required);
	CU_ASSERT_STRING_EQUAL(info.nonce, "");

	/* TLS, auth, a nonce, and values of every kind the writer skips. */
	static const char tls[] = "{\"connect_urls\":[\"10.0.0.1:4222\",\"[::1]:4222\"],\"tls_required\":true,"
				  "\"tls_verify\":true,\"auth_required\":true,\"nonce\":\"Wj1Vb2xyX3Nz-_k\","
				  "\"nested\":{\"a\":[1,{\"b\":\"}]\\\"\"}],\"c\":null},\"x\":-1.5e3,"
				  "\"max_payload\":67108864,\"headers\":true,\"tls_available\":false}";
	CU_ASSERT_EQUAL_FATAL(nats_proto_info(tls, strlen(tls), &info), 0);
	CU_ASSERT_TRUE(info.tls_required);
	CU_ASSERT_FALSE(info.tls_available);
	CU_ASSERT_STRING_EQUAL(info.nonce, "Wj1Vb2xyX3Nz-_k");
	CU_ASSERT_EQUAL(info.max_payload, 64 << 20);
	CU_ASSERT_TRUE(info.headers);

	CU_ASSERT_EQUAL(nats_proto_info("{}", 2, &info), 0);
	CU_ASSERT_EQUAL(info.max_payload, 0);
	CU_ASSERT_FALSE(info.headers);
}

static void test_info_refused(void)
{
	static const char *bad[] = {
		"",
		"[]",
		"{",
		"{\"max_payload\":1",
		"{\"max_payload\":\"1\"}",        /* the wrong type */
		"{\"max_payload\":-1}",
		"{\"max_payload\":1.5}",
		"{\"max_payload\":99999999999999999999}",
		"{\"headers\":1}",
		"{\"nonce\":\"a\\\"b\"}",          /* a nonce with an escape is not signed */
		"{\"nonce\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
		"{\"a\":[1,2}",
		"{\"a\":\"unterminated}",
		"{\"a\":1,}",
		"{\"a\" 1}",
		"{} trailing",
		"{\"a\":}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct nats_info info;
		int rc = nats_proto_info(bad[i], strlen(bad[i]), &info);
		if (rc == 0)
			fprintf(stderr, "\ntaken: %s\n", bad[i]);
		CU_ASSERT_EQUAL(rc, -1);
	}
	/* A NUL inside is not a number's character. */
	struct nats_info info;
	CU_ASSERT_EQUAL(nats_proto_info("{\"a\":1\0}", 8, &info), -1);
}

static void test_connect(void)
{
	struct sbuf b = {0};
	struct nats_connect c = {.name = "a-pub", .user = "wisp", .pass = "p\"w\\1", .tls_required = true};
	nats_proto_connect(&b, &c);
	CU_ASSERT_FALSE_FATAL(b.failed);
	CU_ASSERT_STRING_EQUAL(b.data, "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":true,"
				       "\"headers\":true,\"no_responders\":false,\"echo\":false,\"protocol\":1,"
				       "\"lang\":\"C\",\"name\":\"a-pub\",\"user\":\"wisp\",\"pass\":\"p\\\"w\\\\1\"}\r\n"
				       "PING\r\n");
	sbuf_free(&b);
	struct nats_connect k = {.name = "n", .jwt = "eyJ0", .sig = "c2ln"};
	nats_proto_connect(&b, &k);
	CU_ASSERT_PTR_NOT_NULL(strstr(b.data, ",\"jwt\":\"eyJ0\",\"sig\":\"c2ln\"}\r\nPING\r\n"));
	CU_ASSERT_PTR_NULL(strstr(b.data, "\"user\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "\"tls_required\":false"));
	sbuf_free(&b);
}

static void test_hpub_head(void)
{
	char out[64];
	CU_ASSERT_EQUAL(nats_proto_hpub_head(out, sizeof out, "wisp.a.b", 8, 40, 5), 21);
	CU_ASSERT_EQUAL(memcmp(out, "HPUB wisp.a.b 40 45\r\n", 21), 0);
	/* The bound the header promises is enough at the longest numbers. */
	char big[NATS_PROTO_HPUB_HEAD_MAX + 1 + 1];
	size_t n = nats_proto_hpub_head(big, sizeof big, "s", 1, SIZE_MAX / 2, SIZE_MAX / 2);
	CU_ASSERT(n > 0 && n < sizeof big);
	CU_ASSERT_EQUAL(nats_proto_hpub_head(out, 10, "wisp.a.b", 8, 40, 5), 0);
}

static void test_base64url(void)
{
	/* RFC 4648 section 10's vectors, in the URL alphabet without padding. */
	static const struct {
		const char *in, *out;
	} v[] = {{"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"},
		 {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		char out[16];
		nats_proto_base64url((const unsigned char *)v[i].in, strlen(v[i].in), out);
		CU_ASSERT_STRING_EQUAL(out, v[i].out);
	}
	unsigned char sig[64];
	memset(sig, 0xff, sizeof sig);
	char out[4 * ((64 + 2) / 3) + 1];
	nats_proto_base64url(sig, sizeof sig, out);
	CU_ASSERT_EQUAL(strlen(out), 86); /* what nats-server takes for an Ed25519 signature */
}

static CU_TestInfo tests[] = {
	{"server lines' operations", test_ops},
	{"INFO of nats-server 2.9 and a TLS one", test_info_of_nats_server},
	{"malformed INFO refused", test_info_refused},
	{"CONNECT escaped, secrets where nats-server reads them", test_connect},
	{"HPUB line and its bound", test_hpub_head},
	{"base64url of a signature", test_base64url},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_nats_proto", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
