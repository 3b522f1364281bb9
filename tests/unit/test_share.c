/*
 * Unit tests for shared subscription groups (proto/share.c): parsing the
 * share name [MQTT-4.8.2-1] [MQTT-4.8.2-2], joining and leaving (a group
 * lives while it has members, with one tree handle under its inner
 * filter), the round-robin pick over connected members (an offline one
 * skipped, the next in turn when none is connected), and an out-of-memory
 * loop on join. No sockets: sessions, the tree and the table only.
 */
#include <CUnit/Basic.h>
#include <stdint.h>
#include <string.h>

#include "unit_main.h"
#include "alloc.h"
#include "err.h"
#include "session.h"
#include "share.h"
#include "topic.h"
#include "tree.h"

static struct session_table tab;
static struct tree *tree;
static struct share_table shares;
/* A stand-in for a connection: share_pick only asks whether there is one. */
static char fake_conn;

static void set_up(void)
{
	CU_ASSERT_EQUAL_FATAL(sess_table_init(&tab), 0);
	tree = tree_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(tree);
	memset(&shares, 0, sizeof shares);
}

static void tear_down(void)
{
	sess_table_free(&tab, tree);
	share_table_free(&shares, tree);
	tree_free(tree);
}

static struct session *member(const char *id, const char *filter, bool connected)
{
	struct session *s = sess_create(&tab, id, strlen(id), false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	s->conn = connected ? (struct conn *)(void *)&fake_conn : NULL;
	CU_ASSERT_FATAL(sess_subscribe(s, tree, filter, strlen(filter), 1 | SESS_SUBOPT_SHARED, 0, 0) == 1);
	CU_ASSERT_EQUAL_FATAL(share_join(&shares, tree, sess_find_sub(s, filter, strlen(filter))), 0);
	return s;
}

static const char *picked(struct share_group *g, bool connected_only)
{
	struct sess_sub *sub = share_pick(g, "s/t", 3, NULL, connected_only);
	return sub ? ((struct session *)tree_sub_subscriber(&sub->handle))->client_id : "-";
}

static void test_parse(void)
{
	static const struct {
		const char *f;
		enum share_parse want;
		size_t at;
	} cases[] = {
		{"$share/g/t", SHARE_OK, 9},
		{"$share/group/a/+/#", SHARE_OK, 13},
		{"$share/g/#", SHARE_OK, 9},
		{"$share/g//", SHARE_OK, 9},   /* the inner filter "/" is valid */
		{"$share//t", SHARE_MALFORMED, 0},   /* [MQTT-4.8.2-1] empty ShareName */
		{"$share/+/t", SHARE_MALFORMED, 0},  /* [MQTT-4.8.2-2] */
		{"$share/g#/t", SHARE_MALFORMED, 0},
		{"$share/g", SHARE_MALFORMED, 0},    /* no '/' after the ShareName */
		{"$share/g/", SHARE_MALFORMED, 0},   /* no filter after it */
		{"$share/", SHARE_MALFORMED, 0},
		{"$share", SHARE_NOT_SHARED, 0},
		{"$shared/g/t", SHARE_NOT_SHARED, 0},
		{"share/g/t", SHARE_NOT_SHARED, 0},
		{"$SYS/#", SHARE_NOT_SHARED, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t at = 0;
		enum share_parse got = share_parse(cases[i].f, strlen(cases[i].f), &at);
		CU_ASSERT_EQUAL(got, cases[i].want);
		if (got == SHARE_OK)
			CU_ASSERT_EQUAL(at, cases[i].at);
		if (got != cases[i].want)
			fprintf(stderr, "share_parse(%s): %d, want %d\n", cases[i].f, got, cases[i].want);
	}
}

/* One group per (ShareName, filter), with one tree handle that a matching
 * topic reaches; it goes with its last member. */
static void test_join_leave(void)
{
	set_up();
	struct session *a = member("a", "$share/g/s/t", true);
	struct session *b = member("b", "$share/g/s/t", true);
	member("c", "$share/h/s/t", true);
	CU_ASSERT_EQUAL(shares.count, 2);
	/* Three member handles and two group handles. */
	CU_ASSERT_EQUAL(tree_count(tree), 5);
	struct share_group *g = share_find(&shares, "$share/g/s/t", 12);
	CU_ASSERT_PTR_NOT_NULL_FATAL(g);
	CU_ASSERT_EQUAL(g->count, 2);
	/* Joining again changes nothing. */
	CU_ASSERT_EQUAL(share_join(&shares, tree, sess_find_sub(a, "$share/g/s/t", 12)), 0);
	CU_ASSERT_EQUAL(g->count, 2);
	share_leave(&shares, tree, sess_find_sub(a, "$share/g/s/t", 12));
	CU_ASSERT_EQUAL(g->count, 1);
	share_leave(&shares, tree, sess_find_sub(b, "$share/g/s/t", 12));
	CU_ASSERT_PTR_NULL(share_find(&shares, "$share/g/s/t", 12));
	CU_ASSERT_EQUAL(shares.count, 1);
	CU_ASSERT_EQUAL(tree_count(tree), 4);
	tear_down();
}

/* Round-robin in join order over connected members; an offline member is
 * skipped while another is connected; with none connected, the next in
 * turn (it queues), unless only connected members may be picked. */
static void test_pick_round_robin(void)
{
	set_up();
	struct session *a = member("a", "$share/g/s/t", true);
	struct session *b = member("b", "$share/g/s/t", true);
	member("c", "$share/g/s/t", true);
	struct share_group *g = share_find(&shares, "$share/g/s/t", 12);
	CU_ASSERT_PTR_NOT_NULL_FATAL(g);
	const char *want[] = {"a", "b", "c", "a", "b", "c"};
	for (size_t i = 0; i < 6; i++)
		CU_ASSERT_STRING_EQUAL(picked(g, false), want[i]);
	b->conn = NULL;
	CU_ASSERT_STRING_EQUAL(picked(g, false), "a");
	CU_ASSERT_STRING_EQUAL(picked(g, false), "c");
	CU_ASSERT_STRING_EQUAL(picked(g, false), "a");
	/* Nobody connected: the next in turn after a. */
	a->conn = NULL;
	struct session *c = tree_sub_subscriber(&g->members[2]->handle);
	c->conn = NULL;
	CU_ASSERT_STRING_EQUAL(picked(g, false), "b");
	CU_ASSERT_STRING_EQUAL(picked(g, false), "c");
	CU_ASSERT_STRING_EQUAL(picked(g, false), "a");
	CU_ASSERT_STRING_EQUAL(picked(g, true), "-");
	/* `except` is never picked. */
	c->conn = (struct conn *)(void *)&fake_conn;
	CU_ASSERT_PTR_NULL(share_pick(g, "s/t", 3, c, true));
	tear_down();
}

/* A member leaving keeps the turn order of the others. */
static void test_leave_keeps_turn(void)
{
	set_up();
	member("a", "$share/g/s/t", true);
	struct session *b = member("b", "$share/g/s/t", true);
	member("c", "$share/g/s/t", true);
	struct share_group *g = share_find(&shares, "$share/g/s/t", 12);
	CU_ASSERT_PTR_NOT_NULL_FATAL(g);
	CU_ASSERT_STRING_EQUAL(picked(g, false), "a");
	CU_ASSERT_STRING_EQUAL(picked(g, false), "b");
	share_leave(&shares, tree, sess_find_sub(b, "$share/g/s/t", 12));
	CU_ASSERT_STRING_EQUAL(picked(g, false), "c");
	CU_ASSERT_STRING_EQUAL(picked(g, false), "a");
	tear_down();
}

/* Every allocation of a join failing in turn: WISP_ENOMEM, no group left
 * half made, nothing leaked. */
static void test_join_oom(void)
{
	set_up();
	size_t base = wisp_mem_used();
	struct session *s = sess_create(&tab, "oom", 3, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_FATAL(sess_subscribe(s, tree, "$share/g/x", 10, SESS_SUBOPT_SHARED, 0, 0) == 1);
	struct sess_sub *sub = sess_find_sub(s, "$share/g/x", 10);
	size_t subs = tree_count(tree);
	int rc = WISP_ENOMEM;
	size_t failures = 0;
	for (uint64_t n = 1; n <= 16 && rc == WISP_ENOMEM; n++) {
		wisp_mem_fail_after(n, 0);
		rc = share_join(&shares, tree, sub);
		wisp_mem_fail_after(0, 0);
		if (rc == WISP_ENOMEM) {
			failures++;
			CU_ASSERT_PTR_NULL(share_find(&shares, "$share/g/x", 10));
			CU_ASSERT_EQUAL(tree_count(tree), subs);
		}
	}
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT(failures >= 3); /* the table, the group, its member array */
	share_leave(&shares, tree, sub);
	sess_destroy(&tab, tree, s);
	share_table_free(&shares, tree);
	CU_ASSERT_EQUAL(wisp_mem_used(), base);
	tear_down();
}

static CU_TestInfo tests[] = {
	{"share name parsing [MQTT-4.8.2-1] [MQTT-4.8.2-2]", test_parse},
	{"a group per (ShareName, filter), gone with its last member", test_join_leave},
	{"round-robin over connected members, then the next in turn", test_pick_round_robin},
	{"a member leaving keeps the others' turn", test_leave_keeps_turn},
	{"OOM at every allocation of a join changes nothing", test_join_oom},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"share", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
