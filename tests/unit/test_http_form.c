/*
 * http/form.c: form fields, query strings and Basic credentials, as tables
 * of inputs and what they decode to, and every input cut at every length
 * (nothing read past n, nothing written past cap: ASan watches).
 */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "unit_main.h"
#include "form.h"

struct form_case {
	const char *form;
	const char *key;
	size_t cap;
	ssize_t want_len;   /* -1: absent or too long */
	const char *want;
};

static const struct form_case form_cases[] = {
	{"topic=a%2Fb&payload=hi+there", "topic", 64, 3, "a/b"},
	{"topic=a%2Fb&payload=hi+there", "payload", 64, 8, "hi there"},
	{"topic=a&topic=b", "topic", 64, 1, "a"},             /* the first one */
	{"topicx=1&topic=2", "topic", 64, 1, "2"},            /* a longer key is another key */
	{"xtopic=1", "topic", 64, -1, NULL},
	{"topic=", "topic", 64, 0, ""},
	{"topic", "topic", 64, -1, NULL},                     /* no '=' */
	{"", "topic", 64, -1, NULL},
	{"&&&topic=z&&", "topic", 64, 1, "z"},
	{"v=%41%42%4a%4A", "v", 64, 4, "ABJJ"},
	{"v=%4", "v", 64, 2, "%4"},                           /* a cut escape stays */
	{"v=%zz%", "v", 64, 4, "%zz%"},
	{"v=%00x", "v", 64, 2, "\0x"},                        /* binary is the caller's to refuse */
	{"v=%C3%A9t%C3%A9", "v", 64, 5, "\xc3\xa9t\xc3\xa9"},
	{"v=%41%42%43", "v", 4, 3, "ABC"},                    /* cap counts decoded bytes */
	{"v=%41%42%43%44", "v", 4, -1, NULL},                 /* decoded too long */
	{"v=abc", "v", 1, -1, NULL},
	{"v=abc", "v", 0, -1, NULL},
};

static void test_form_fields(void)
{
	for (size_t i = 0; i < sizeof form_cases / sizeof form_cases[0]; i++) {
		const struct form_case *c = &form_cases[i];
		char out[64];
		memset(out, 0x55, sizeof out);
		ssize_t n = http_form_get(c->form, strlen(c->form), c->key, out, c->cap);
		CU_ASSERT_EQUAL(n, c->want_len);
		if (n != c->want_len)
			fprintf(stderr, "case %zu (%s): got %zd\n", i, c->form, n);
		if (n >= 0 && c->want) {
			CU_ASSERT(memcmp(out, c->want, (size_t)n) == 0);
			CU_ASSERT_EQUAL(out[n], '\0');
		}
	}
}

/* Every case cut at every length, from a heap copy of exactly that size. */
static void test_form_prefixes_stay_in_bounds(void)
{
	for (size_t i = 0; i < sizeof form_cases / sizeof form_cases[0]; i++) {
		const char *f = form_cases[i].form;
		size_t len = strlen(f);
		for (size_t cut = 0; cut <= len; cut++) {
			char *copy = malloc(cut ? cut : 1);
			memcpy(copy, f, cut);
			for (size_t cap = 0; cap <= 8; cap++) {
				char *out = malloc(cap ? cap : 1);
				ssize_t n = http_form_get(copy, cut, form_cases[i].key, out, cap);
				CU_ASSERT(n < (ssize_t)cap || n == -1);
				free(out);
			}
			free(copy);
		}
	}
}

static void test_url_decode_in_place(void)
{
	char s[] = "a+b%20c%2";
	size_t n = http_url_decode(s, strlen(s));
	CU_ASSERT_EQUAL(n, 7);
	CU_ASSERT(memcmp(s, "a b c%2", 7) == 0);
}

struct b64_case {
	const char *in;
	ssize_t want_len;
	const char *want;
};

static const struct b64_case b64_cases[] = {
	{"YWRtaW46czNjcmV0", 12, "admin:s3cret"},
	{"YQ==", 1, "a"},
	{"YQ", 1, "a"},
	{"YWI=", 2, "ab"},
	{"", 0, ""},
	{"YW*=", -1, NULL},
	{"YW Jj", -1, NULL},
	{"/+/+", 3, "\xff\xef\xfe"},
	{"QUJDREVGR0g=", -1, NULL}, /* 8 bytes into a cap of 6 */
};

static void test_base64(void)
{
	for (size_t i = 0; i < sizeof b64_cases / sizeof b64_cases[0]; i++) {
		/* 16 bytes of room for the first case, 6 for the rest */
		char out[16];
		size_t cap = i == 0 ? sizeof out : 6;
		ssize_t n = http_base64_decode(b64_cases[i].in, strlen(b64_cases[i].in), out, cap);
		CU_ASSERT_EQUAL(n, b64_cases[i].want_len);
		if (n > 0)
			CU_ASSERT(memcmp(out, b64_cases[i].want, (size_t)n) == 0);
	}
}

static CU_TestInfo form_tests[] = {
	{"form fields: first match, percent and plus decoding, bounds", test_form_fields},
	{"every prefix and small cap stays in bounds", test_form_prefixes_stay_in_bounds},
	{"url decoding in place", test_url_decode_in_place},
	{"base64 of Basic credentials", test_base64},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"http form", NULL, NULL, NULL, NULL, form_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
