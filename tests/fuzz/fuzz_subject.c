/*
 * fuzz_subject: the cluster's topic <-> subject mapping
 * (broker/src/cluster/subject.h) must be reversible. The input's first
 * byte picks a prefix, the rest is the topic (or filter):
 *  - a valid topic name maps to a literal NATS subject (no whitespace or
 *    control bytes, no empty token, no whole-token wildcard) that maps
 *    back to exactly the topic;
 *  - a valid filter maps to a subject whose tokens are literal or whole
 *    '*' / '>' wildcards;
 *  - any bytes at all, read as a subject, either are refused or decode to
 *    a topic that maps back to the very same subject (one subject per
 *    topic: two subjects never decode to one topic).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "subject.h"
#include "topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const prefixes[] = {"", "wisp", "a.b"};

static void check_literal(const char *s, size_t n, bool wildcards_ok)
{
	size_t tok = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == '.') {
			if (tok == 0)
				abort(); /* empty token */
			if (tok == 1 && (s[i - 1] == '*' || s[i - 1] == '>') && !wildcards_ok)
				abort();
			tok = 0;
			continue;
		}
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == 0x7f)
			abort();
		tok++;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4097)
		return 0;
	const char *prefix = prefixes[data[0] % 3];
	const char *in = (const char *)data + 1;
	size_t len = size - 1;
	size_t cap = SUBJECT_MAX(strlen(prefix), len);
	char *subj = malloc(cap), *back = malloc(len + 1), *again = malloc(cap);
	if (!subj || !back || !again)
		abort();
	if (topic_name_valid(in, len)) {
		ssize_t n = subject_from_topic(prefix, in, len, subj, cap);
		if (n <= 0)
			abort();
		check_literal(subj, (size_t)n, false);
		ssize_t m = subject_to_topic(prefix, subj, (size_t)n, back, len + 1);
		if (m != (ssize_t)len || memcmp(back, in, len) != 0)
			abort();
	}
	if (topic_filter_valid(in, len)) {
		bool parent = false;
		ssize_t n = subject_from_filter(prefix, in, len, subj, cap, &parent);
		if (n <= 0)
			abort();
		check_literal(subj, (size_t)n, true);
	}
	/* Arbitrary bytes as a subject. */
	ssize_t m = subject_to_topic(prefix, in, len, back, len + 1);
	if (m > 0) {
		ssize_t n = subject_from_topic(prefix, back, (size_t)m, again, cap);
		if (n != (ssize_t)len || memcmp(again, in, len) != 0)
			abort();
	}
	free(subj);
	free(back);
	free(again);
	return 0;
}
