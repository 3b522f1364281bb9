/*
 * fuzz_nats: what the cluster's data connection reads from a NATS server
 * and writes to it (broker/src/cluster/nats_proto.h). The input is one
 * server line and, after its first NUL, the credentials a CONNECT carries:
 *  - a line's operation and argument stay inside the line;
 *  - a MSG or HMSG line's subject and reply stay inside it, its sizes
 *    within the bound and the header size within the total; a header
 *    block's value stays inside the block and holds no CR or LF;
 *  - INFO's JSON either is refused or gives a nonce within its bound and a
 *    max_payload in JSON's exact integer range, the same both times;
 *  - whatever bytes the credentials hold, CONNECT stays one line: its only
 *    CR LFs are the one ending it and the PING's (a password cannot add a
 *    protocol line of its own).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nats_proto.h"
#include "sbuf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	const char *nul = memchr(in, '\0', size);
	size_t line_len = nul ? (size_t)(nul - in) : size;

	const char *arg = NULL;
	size_t alen = 0;
	(void)nats_proto_op(in, line_len, &arg, &alen);
	if (arg < in || arg + alen > in + line_len)
		abort();

	for (int hmsg = 0; hmsg < 2; hmsg++) {
		struct nats_msg_head h;
		if (nats_proto_msg(in, line_len, hmsg, 4096, &h) != 0)
			continue;
		if (h.subject < in || h.subject + h.subject_len > in + line_len || h.subject_len == 0 ||
		    (h.reply_len && (h.reply < in || h.reply + h.reply_len > in + line_len)) || h.total_len > 4096 ||
		    h.hdr_len > h.total_len || (hmsg && h.hdr_len < 12) || (!hmsg && h.hdr_len))
			abort();
	}
	const char *val = NULL;
	size_t vlen = 0;
	if (nats_proto_header(in, line_len, "Wisp-Seq", 8, &val, &vlen) &&
	    (val < in || val + vlen > in + line_len || memchr(val, '\r', vlen) || memchr(val, '\n', vlen)))
		abort();

	struct nats_info a, b;
	int rc = nats_proto_info(in, line_len, &a);
	if (rc != nats_proto_info(in, line_len, &b) || (rc != 0 && rc != -1))
		abort();
	if (rc == 0 && (memcmp(&a, &b, sizeof a) != 0 || strlen(a.nonce) > NATS_PROTO_NONCE_MAX ||
			a.max_payload < 0 || a.max_payload > (INT64_C(1) << 53)))
		abort();

	if (!nul)
		return 0;
	/* The rest: user, password, token, each NUL-ended (missing: NULL). */
	const char *f[3] = {NULL, NULL, NULL};
	const char *p = nul + 1, *end = in + size;
	for (int i = 0; i < 3 && p < end; i++) {
		const char *z = memchr(p, '\0', (size_t)(end - p));
		if (!z)
			break;
		f[i] = p;
		p = z + 1;
	}
	struct nats_connect c = {.name = "n-pub", .user = f[0], .pass = f[1], .token = f[2]};
	struct sbuf out = {0};
	nats_proto_connect(&out, &c);
	if (out.failed) {
		sbuf_free(&out);
		return 0;
	}
	size_t crlf = 0;
	for (size_t i = 0; i < out.len; i++)
		if (out.data[i] == '\r' || out.data[i] == '\n')
			crlf++;
	if (crlf != 4 || out.len < 17 || memcmp(out.data + out.len - 9, "}\r\nPING\r\n", 9) != 0)
		abort();
	sbuf_free(&out);
	return 0;
}
