/*
 * Fuzz target: the subscription tree and the retained store against
 * topic_matches(), the naive matcher.
 *
 * The input is a little program. Each operation subscribes or unsubscribes
 * a filter, stores or deletes a retained name, publishes a name (the tree
 * must report exactly the live subscriptions whose filter topic_matches()
 * accepts) or subscribes a filter against the store (exactly the stored
 * names topic_matches() accepts, each with its own value and its name
 * rebuilt byte for byte), or makes the next allocation fail (the operation
 * must then change nothing). Strings are mostly built from a small set of
 * levels, so the trie gets shared prefixes, wildcards, empty levels and '$'
 * names; a flag takes raw bytes instead, to exercise validation.
 *
 * Built two ways: with libFuzzer (WISP_BUILD_FUZZ, clang), and linked with
 * replay_main.c as a plain program, which CTest runs over the committed
 * corpus tests/fuzz/corpus/topic/ (seeds written by make_topic_seeds.py).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "retained.h"
#include "topic.h"
#include "tree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SUBS 64
#define MAX_RET 64
#define MAX_STR 256
#define MAX_LEVELS 32

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "fuzz_topic: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                     \
		}                                                                    \
	} while (0)

struct input {
	const uint8_t *p;
	size_t n;
};

static uint8_t next(struct input *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static const char *const LEVELS[] = {"a", "b", "", "+", "#", "$SYS", "$", "sport", "ab", "c/d", "+", "#"};
#define NLEVELS (sizeof LEVELS / sizeof LEVELS[0])

/* A string into out (MAX_STR bytes); its length. Wildcard levels become
 * literals unless `filter`, so names come out valid more often. */
static size_t read_topic(struct input *in, char *out, bool filter)
{
	uint8_t head = next(in);
	size_t len = 0;
	if (head & 0x80) {
		/* Raw bytes: whatever validation says goes. */
		size_t want = head & 0x3f;
		while (len < want && in->n)
			out[len++] = (char)next(in);
		return len;
	}
	size_t levels = 1 + (head % 6);
	for (size_t l = 0; l < levels; l++) {
		const char *w = LEVELS[next(in) % NLEVELS];
		if (!filter && (w[0] == '+' || w[0] == '#'))
			w = "x";
		size_t wl = strlen(w);
		if (len + wl + 1 >= MAX_STR)
			break;
		if (l)
			out[len++] = '/';
		memcpy(out + len, w, wl);
		len += wl;
	}
	return len;
}

struct state {
	struct tree *tree;
	struct retained *ret;
	char filters[MAX_SUBS][MAX_STR];
	size_t flen[MAX_SUBS];
	struct tree_sub *subs[MAX_SUBS];
	unsigned hits[MAX_SUBS];
	char names[MAX_RET][MAX_STR];
	size_t nlen[MAX_RET];
	bool stored[MAX_RET];
	unsigned seen[MAX_RET];
	size_t released;
	const char *query; /* the filter being matched against the store */
	size_t query_len;
};

static struct state *current;

static void on_release(void *value)
{
	current->released++;
	(void)value;
}

static void on_tree_match(void *subscriber, uint8_t options, uint32_t subscription_id, void *ctx)
{
	struct state *s = ctx;
	size_t i = (size_t)(uintptr_t)subscriber - 1;
	CHECK(i < MAX_SUBS && s->subs[i]);
	CHECK(options == (uint8_t)i && subscription_id == (uint32_t)i);
	s->hits[i]++;
}

static void on_retained(const char *topic, size_t len, void *value, void *ctx)
{
	struct state *s = ctx;
	size_t i = (size_t)(uintptr_t)value - 1;
	CHECK(i < MAX_RET && s->stored[i]);
	CHECK(len == s->nlen[i] && memcmp(topic, s->names[i], len) == 0);
	CHECK(topic_matches(s->query, s->query_len, topic, len));
	s->seen[i]++;
}

/* The slot holding the stored name (topic, len), or MAX_RET. */
static size_t find_stored(const struct state *s, const char *topic, size_t len)
{
	for (size_t i = 0; i < MAX_RET; i++)
		if (s->stored[i] && s->nlen[i] == len && memcmp(s->names[i], topic, len) == 0)
			return i;
	return MAX_RET;
}

static void op_subscribe(struct state *s, struct input *in, bool inject)
{
	char f[MAX_STR];
	size_t len = read_topic(in, f, true);
	size_t i = next(in) % MAX_SUBS;
	if (!topic_filter_valid(f, len) || s->subs[i])
		return;
	size_t count = tree_count(s->tree), mem = wisp_mem_used();
	if (inject)
		wisp_mem_fail_after(1 + next(in) % 8, 0);
	s->subs[i] = tree_subscribe(s->tree, f, len, (void *)(uintptr_t)(i + 1), (uint8_t)i, (uint32_t)i);
	wisp_mem_fail_after(0, 0);
	if (!s->subs[i]) {
		CHECK(inject);
		CHECK(tree_count(s->tree) == count && wisp_mem_used() == mem);
		return;
	}
	memcpy(s->filters[i], f, len);
	s->flen[i] = len;
}

static void op_unsubscribe(struct state *s, struct input *in)
{
	size_t i = next(in) % MAX_SUBS;
	if (!s->subs[i])
		return;
	tree_unsubscribe(s->tree, s->subs[i]);
	s->subs[i] = NULL;
}

static void op_publish(struct state *s, struct input *in)
{
	char name[MAX_STR];
	size_t len = read_topic(in, name, false);
	if (!topic_name_valid(name, len))
		return;
	struct topic_level levels[MAX_LEVELS];
	int n = topic_split(name, len, levels, MAX_LEVELS);
	if (n < 0)
		return;
	memset(s->hits, 0, sizeof s->hits);
	size_t calls = tree_match(s->tree, levels, (size_t)n, on_tree_match, s);
	size_t want = 0;
	for (size_t i = 0; i < MAX_SUBS; i++) {
		bool m = s->subs[i] && topic_matches(s->filters[i], s->flen[i], name, len);
		CHECK(s->hits[i] == (m ? 1u : 0u));
		want += m;
	}
	CHECK(calls == want);
}

static void op_retain(struct state *s, struct input *in, bool inject)
{
	char name[MAX_STR];
	size_t len = read_topic(in, name, false);
	bool del = next(in) % 4 == 0;
	if (!topic_name_valid(name, len))
		return;
	size_t old = find_stored(s, name, len);
	if (del) {
		size_t released = s->released;
		CHECK(retained_set(s->ret, name, len, NULL, 0) == 0);
		CHECK(s->released == released + (old < MAX_RET));
		if (old < MAX_RET)
			s->stored[old] = false;
		CHECK(!retained_get(s->ret, name, len));
		return;
	}
	size_t i = old;
	for (size_t k = 0; i == MAX_RET && k < MAX_RET; k++)
		if (!s->stored[k])
			i = k;
	if (i == MAX_RET)
		return;
	size_t count = retained_count(s->ret), mem = wisp_mem_used(), released = s->released;
	if (inject)
		wisp_mem_fail_after(1 + next(in) % 8, 0);
	int rc = retained_set(s->ret, name, len, (void *)(uintptr_t)(i + 1), 1);
	wisp_mem_fail_after(0, 0);
	if (rc < 0) {
		CHECK(inject);
		CHECK(retained_count(s->ret) == count && wisp_mem_used() == mem && s->released == released);
		return;
	}
	/* Replacing a name with its own slot releases the old reference. */
	CHECK(s->released == released + (old < MAX_RET));
	memcpy(s->names[i], name, len);
	s->nlen[i] = len;
	s->stored[i] = true;
	CHECK(retained_get(s->ret, name, len) == (void *)(uintptr_t)(i + 1));
}

static void op_retained_match(struct state *s, struct input *in)
{
	char f[MAX_STR];
	size_t len = read_topic(in, f, true);
	if (!topic_filter_valid(f, len))
		return;
	memset(s->seen, 0, sizeof s->seen);
	s->query = f;
	s->query_len = len;
	size_t calls = retained_match(s->ret, f, len, on_retained, s);
	size_t want = 0;
	for (size_t i = 0; i < MAX_RET; i++) {
		bool m = s->stored[i] && topic_matches(f, len, s->names[i], s->nlen[i]);
		CHECK(s->seen[i] == (m ? 1u : 0u));
		want += m;
	}
	CHECK(calls == want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct state st;
	struct state *s = &st;
	struct input in = {data, size};
	size_t mem0 = wisp_mem_used();
	memset(s, 0, sizeof *s);
	current = s;
	s->tree = tree_new();
	s->ret = retained_new(on_release, 0, 0);
	CHECK(s->tree && s->ret);
	for (unsigned steps = 0; in.n && steps < 4096; steps++) {
		uint8_t op = next(&in);
		bool inject = op & 0x80;
		switch (op % 6) {
		case 0: op_subscribe(s, &in, inject); break;
		case 1: op_unsubscribe(s, &in); break;
		case 2: op_publish(s, &in); break;
		case 3: op_retain(s, &in, inject); break;
		case 4: op_retained_match(s, &in); break;
		default: {
			/* Validators and the matcher on raw input must not crash. */
			char a[MAX_STR], b[MAX_STR];
			size_t al = read_topic(&in, a, true), bl = read_topic(&in, b, false);
			if (topic_filter_valid(a, al) && topic_name_valid(b, bl))
				(void)topic_matches(a, al, b, bl);
			break;
		}
		}
	}
	size_t stored = 0;
	for (size_t i = 0; i < MAX_RET; i++)
		stored += s->stored[i];
	CHECK(retained_count(s->ret) == stored);
	size_t released = s->released;
	tree_free(s->tree);
	retained_free(s->ret);
	CHECK(s->released == released + stored);
	CHECK(wisp_mem_used() == mem0);
	return 0;
}
