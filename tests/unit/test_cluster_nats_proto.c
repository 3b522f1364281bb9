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

/* MSG and HMSG as nats-server 2.9 writes them (server/client.go's
 * msgHeader: "MSG <subject> <sid> [reply] <size>", HMSG with the header
 * size before the total). */
static void test_msg_lines(void)
{
	struct nats_msg_head h;
	static const char m1[] = "wisp.a.b 7 12";
	CU_ASSERT_EQUAL_FATAL(nats_proto_msg(m1, strlen(m1), false, 1048576, &h), 0);
	CU_ASSERT_EQUAL(h.subject_len, 8);
	CU_ASSERT_EQUAL(memcmp(h.subject, "wisp.a.b", 8), 0);
	CU_ASSERT_EQUAL(h.sid, 7);
	CU_ASSERT_EQUAL(h.reply_len, 0);
	CU_ASSERT_EQUAL(h.hdr_len, 0);
	CU_ASSERT_EQUAL(h.total_len, 12);

	static const char m2[] = "wisp.x  18446744073709551615\t_INBOX.r.1 0";
	CU_ASSERT_EQUAL_FATAL(nats_proto_msg(m2, strlen(m2), false, 10, &h), 0);
	CU_ASSERT_EQUAL(h.sid, UINT64_MAX);
	CU_ASSERT_EQUAL(h.reply_len, 10);
	CU_ASSERT_EQUAL(memcmp(h.reply, "_INBOX.r.1", 10), 0);
	CU_ASSERT_EQUAL(h.total_len, 0);

	static const char hm[] = "wisp.t 3 22 30";
	CU_ASSERT_EQUAL_FATAL(nats_proto_msg(hm, strlen(hm), true, 1048576, &h), 0);
	CU_ASSERT_EQUAL(h.hdr_len, 22);
	CU_ASSERT_EQUAL(h.total_len, 30);
	static const char hr[] = "wisp.t 3 r.1 12 12";
	CU_ASSERT_EQUAL_FATAL(nats_proto_msg(hr, strlen(hr), true, 1048576, &h), 0);
	CU_ASSERT_EQUAL(h.reply_len, 3);

	static const char *bad_msg[] = {
		"", "wisp.a", "wisp.a 1", "wisp.a 1 r 2 3", "wisp.a x 2", "wisp.a 1 -2", "wisp.a 1 +2", "wisp.a 1 2x",
		"wisp.a 18446744073709551616 2", "wisp.a 1 1048577", "wisp.a 1 99999999999999999999999",
	};
	for (size_t i = 0; i < sizeof bad_msg / sizeof bad_msg[0]; i++)
		CU_ASSERT_EQUAL(nats_proto_msg(bad_msg[i], strlen(bad_msg[i]), false, 1048576, &h), -1);
	static const char *bad_hmsg[] = {
		"wisp.a 1 2", "wisp.a 1 30 22", "wisp.a 1 11 20", "wisp.a 1 r 12 20 x", "wisp.a 1 12 1048577",
	};
	for (size_t i = 0; i < sizeof bad_hmsg / sizeof bad_hmsg[0]; i++)
		CU_ASSERT_EQUAL(nats_proto_msg(bad_hmsg[i], strlen(bad_hmsg[i]), true, 1048576, &h), -1);
}

static void test_header_block(void)
{
	static const char b[] = "NATS/1.0\r\nWisp-Node: a\r\nwisp-seq:  1f-42 \r\nWisp-QoS:1\r\nEmpty:\r\n"
				"Wisp-Node: second\r\n\r\n";
	const char *v;
	size_t n;
	CU_ASSERT_TRUE_FATAL(nats_proto_header(b, strlen(b), "Wisp-Node", 9, &v, &n));
	CU_ASSERT_EQUAL(n, 1);
	CU_ASSERT_EQUAL(*v, 'a'); /* the first of two */
	CU_ASSERT_TRUE_FATAL(nats_proto_header(b, strlen(b), "Wisp-Seq", 8, &v, &n));
	CU_ASSERT_EQUAL(n, 5);
	CU_ASSERT_EQUAL(memcmp(v, "1f-42", 5), 0);
	CU_ASSERT_TRUE_FATAL(nats_proto_header(b, strlen(b), "WISP-QOS", 8, &v, &n));
	CU_ASSERT_EQUAL(n, 1);
	CU_ASSERT_TRUE(nats_proto_header(b, strlen(b), "Empty", 5, &v, &n));
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_FALSE(nats_proto_header(b, strlen(b), "Wisp-Retain", 11, &v, &n));
	CU_ASSERT_FALSE(nats_proto_header(b, strlen(b), "Wisp", 4, &v, &n)); /* a prefix is not the key */

	/* A status line (no responders: 503) is still a block. */
	static const char st[] = "NATS/1.0 503\r\nK: v\r\n\r\n";
	CU_ASSERT_TRUE(nats_proto_header(st, strlen(st), "k", 1, &v, &n));
	static const char none[] = "NATS/1.0\r\n\r\n";
	CU_ASSERT_FALSE(nats_proto_header(none, strlen(none), "K", 1, &v, &n));
	static const char *bad[] = {"", "NATS/1.0\r\n", "NATS/2.0\r\nK: v\r\n\r\n", "NATS/1.0\r\nK: v\r\n",
				    "HTTP/1.1\r\nK: v\r\n\r\n", "NATS/1.0\r\nK: a\nb\r\n\r\n", "NATS/1.0\r\nK: a\rb\r\n\r\n"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CU_ASSERT_FALSE(nats_proto_header(bad[i], strlen(bad[i]), "K", 1, &v, &n));
}

static CU_TestInfo tests[] = {
	{"server lines' operations", test_ops},
	{"INFO of nats-server 2.9 and a TLS one", test_info_of_nats_server},
	{"malformed INFO refused", test_info_refused},
	{"CONNECT escaped, secrets where nats-server reads them", test_connect},
	{"HPUB line and its bound", test_hpub_head},
	{"base64url of a signature", test_base64url},
	{"MSG and HMSG lines", test_msg_lines},
	{"a header block's values", test_header_block},
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
