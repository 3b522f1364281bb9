/*
 * The filters' move from cnats to the data connection behind the fence
 * (broker/src/cluster/fence.h), played without NATS: the test is the
 * driver, records what the move asks for, and checks which connection
 * routes the filters' messages at each step. Each connection routes up to
 * (cnats) or from (the data connection) its own copy of the fence, so every
 * message is routed once and in order ([MQTT-4.6.0-6]); the data
 * connection waits at its copy for cnats's; cnats's subscriptions end once
 * both copies came; a fence is published only once cnats has heard a probe
 * of its current subscription; a fence that does not come, or a lost main
 * connection, moves the filters without it (said with the reason, cnats's
 * subscriptions kept SWITCH_GRACE_S).
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "fence.h"
#include "unit_main.h"

struct driver {
	bool share_up;         /* publish succeeds */
	char sent[8][24];      /* what was published, in order */
	int nsent;
	int pauses, resumes, ended;
	bool timer[3];         /* running, by enum fence_timer */
	int starts[3];         /* times started */
	int skips;
	char why[400];
};

static bool d_publish(void *ud, const char *text)
{
	struct driver *d = ud;
	if (!d->share_up || d->nsent == 8)
		return false;
	snprintf(d->sent[d->nsent++], sizeof d->sent[0], "%s", text);
	return true;
}

static void d_pause(void *ud) { ((struct driver *)ud)->pauses++; }

static void d_resume(void *ud) { ((struct driver *)ud)->resumes++; }

static void d_end_cnats(void *ud) { ((struct driver *)ud)->ended++; }

static void d_timer(void *ud, enum fence_timer which, bool on)
{
	struct driver *d = ud;
	if (on && !d->timer[which])
		d->starts[which]++;
	d->timer[which] = on;
}

static void d_skipped(void *ud, const char *why)
{
	struct driver *d = ud;
	d->skips++;
	snprintf(d->why, sizeof d->why, "%s", why);
}

static const struct fence_ops ops = {
	.publish = d_publish,
	.pause = d_pause,
	.resume = d_resume,
	.end_cnats = d_end_cnats,
	.timer = d_timer,
	.skipped = d_skipped,
};

static const char *last_sent(const struct driver *d) { return d->nsent ? d->sent[d->nsent - 1] : ""; }

static void hear(struct fence *f, const char *text, bool from_cnats) { fence_heard(f, text, strlen(text), from_cnats); }

/* A node whose cnats heard probe p1, its data connection up and subscribed
 * (mark 7), not yet back. */
static void ready_and_subscribed(struct fence *f, struct driver *d)
{
	*d = (struct driver){.share_up = true};
	fence_init(f, &ops, d, "b");
	CU_ASSERT_TRUE(fence_cnats_reads(f));
	fence_poke(f, true, 1000);
	CU_ASSERT_STRING_EQUAL(last_sent(d), "p1");
	CU_ASSERT_TRUE(d->timer[FENCE_T_RETRY]);
	hear(f, "p1", false); /* the data connection's copy proves nothing about cnats */
	CU_ASSERT_FALSE(f->ready);
	hear(f, "p1", true);
	CU_ASSERT_TRUE(f->ready);
	CU_ASSERT_FALSE(d->timer[FENCE_T_RETRY]);
	fence_writer_up(f);
	fence_writer_subscribed(f, 7);
	CU_ASSERT_EQUAL(f->reading, READ_BOTH);
	/* Both bring everything; cnats routes, the data connection's SUBs are
	 * not all in place. */
	CU_ASSERT_TRUE(fence_cnats_reads(f));
	CU_ASSERT_FALSE(fence_writer_routes(f));
	fence_writer_marked(f, 6, true); /* an earlier mark */
	CU_ASSERT_EQUAL(f->reading, READ_BOTH);
	CU_ASSERT_EQUAL(d->nsent, 1);
}

static void test_cnats_copy_first(void)
{
	struct fence f;
	struct driver d;
	ready_and_subscribed(&f, &d);
	fence_writer_marked(&f, 7, true);
	CU_ASSERT_EQUAL(f.reading, READ_FENCE);
	CU_ASSERT_STRING_EQUAL(last_sent(&d), "1");
	CU_ASSERT_TRUE(d.timer[FENCE_T_WAIT]);
	CU_ASSERT_TRUE(fence_cnats_reads(&f));
	CU_ASSERT_FALSE(fence_writer_routes(&f));
	hear(&f, "1", true);
	/* cnats routed up to its copy; what it brings after is the data
	 * connection's, which still drops up to its own. */
	CU_ASSERT_FALSE(fence_cnats_reads(&f));
	CU_ASSERT_TRUE(fence_cnats_past(&f));
	CU_ASSERT_FALSE(fence_writer_routes(&f));
	CU_ASSERT_EQUAL(d.ended, 0);
	hear(&f, "1", false);
	CU_ASSERT_EQUAL(f.reading, READ_WRITER);
	CU_ASSERT_TRUE(fence_writer_routes(&f));
	CU_ASSERT_EQUAL(d.ended, 1);
	CU_ASSERT_EQUAL(d.pauses, 0);
	CU_ASSERT_FALSE(d.timer[FENCE_T_WAIT]);
	CU_ASSERT_FALSE(d.timer[FENCE_T_GRACE]);
	CU_ASSERT_EQUAL(d.skips, 0);
	fence_wait_over(&f, true); /* a timer already past: nothing */
	CU_ASSERT_EQUAL(d.skips, 0);
}

static void test_writer_copy_first_pauses(void)
{
	struct fence f;
	struct driver d;
	ready_and_subscribed(&f, &d);
	fence_writer_marked(&f, 9, true);
	hear(&f, "1", false);
	/* The data connection waits at its copy: routing on would put its
	 * later messages ahead of what cnats still hands over. */
	CU_ASSERT_EQUAL(d.pauses, 1);
	CU_ASSERT_TRUE(fence_writer_routes(&f));
	CU_ASSERT_TRUE(fence_cnats_reads(&f));
	CU_ASSERT_EQUAL(d.ended, 0);
	CU_ASSERT_EQUAL(d.resumes, 0);
	hear(&f, "1", true);
	CU_ASSERT_EQUAL(d.resumes, 1);
	CU_ASSERT_EQUAL(d.ended, 1);
	CU_ASSERT_EQUAL(f.reading, READ_WRITER);
}

static void test_fence_waits_for_a_probe_cnats_heard(void)
{
	struct driver d = {.share_up = true};
	struct fence f;
	fence_init(&f, &ops, &d, "b");
	fence_writer_up(&f);
	fence_writer_subscribed(&f, 1);
	fence_writer_marked(&f, 1, true);
	CU_ASSERT_EQUAL(f.reading, READ_FENCE);
	CU_ASSERT_EQUAL(d.nsent, 0); /* cnats may not listen yet: it would reach the data connection only */
	fence_poke(&f, false, 1000); /* cnats's subscription not made */
	CU_ASSERT_EQUAL(d.nsent, 0);
	fence_poke(&f, true, 2000);
	CU_ASSERT_STRING_EQUAL(last_sent(&d), "p1");
	fence_poke(&f, true, 2500); /* at most one a second */
	CU_ASSERT_EQUAL(d.nsent, 1);
	/* The subscription made anew: p1 proves nothing any more. */
	fence_main_lost(&f);
	CU_ASSERT_EQUAL(d.skips, 1); /* and the move went on without the fence */
	CU_ASSERT_STRING_EQUAL(d.why, "the main connection is lost");
	hear(&f, "p1", true);
	CU_ASSERT_FALSE(f.ready);
	fence_retry_due(&f, true, 2600); /* the retry timer: a probe now, numbered past p2, the one that never went */
	CU_ASSERT_STRING_EQUAL(last_sent(&d), "p3");
	hear(&f, "p2", true);
	CU_ASSERT_FALSE(f.ready);
	hear(&f, "p3", true);
	CU_ASSERT_TRUE(f.ready);
}

static void test_fence_published_once_ready(void)
{
	struct driver d = {.share_up = true};
	struct fence f;
	fence_init(&f, &ops, &d, "b");
	fence_poke(&f, true, 1000);
	fence_writer_up(&f);
	fence_writer_subscribed(&f, 1);
	fence_writer_marked(&f, 1, true);
	CU_ASSERT_STRING_EQUAL(last_sent(&d), "p1");
	hear(&f, "p1", true);
	CU_ASSERT_STRING_EQUAL(last_sent(&d), "1");
	CU_ASSERT_EQUAL(d.nsent, 2);
	fence_poke(&f, true, 5000); /* published once */
	CU_ASSERT_EQUAL(d.nsent, 2);
}

static void test_share_down_then_up(void)
{
	struct fence f;
	struct driver d;
	ready_and_subscribed(&f, &d);
	d.share_up = false;
	fence_writer_marked(&f, 7, true);
	CU_ASSERT_EQUAL(d.nsent, 1);
	CU_ASSERT_TRUE(f.pending);
	d.share_up = true;
	fence_poke(&f, true, 3000); /* '<node>-share' back */
	CU_ASSERT_STRING_EQUAL(last_sent(&d), "1");
	CU_ASSERT_FALSE(f.pending);
}

/* cnats_came: cnats's copy came before, so a NATS-native message cnats
 * brings after it is left to the data connection. */
static void expect_skip(struct fence *f, struct driver *d, const char *why, bool cnats_came)
{
	CU_ASSERT_EQUAL(d->skips, 1);
	CU_ASSERT_STRING_EQUAL(d->why, why);
	CU_ASSERT_EQUAL(f->reading, READ_WRITER);
	CU_ASSERT_TRUE(d->timer[FENCE_T_GRACE]);
	CU_ASSERT_FALSE(d->timer[FENCE_T_WAIT]);
	CU_ASSERT_EQUAL(d->resumes, 1);
	/* Both bring everything for SWITCH_GRACE_S: the data connection
	 * routes, cnats's copies go through the repeat check, a NATS-native
	 * one is routed from both (twice) unless cnats's copy came. */
	CU_ASSERT_TRUE(fence_writer_routes(f));
	CU_ASSERT_FALSE(fence_cnats_reads(f));
	CU_ASSERT_EQUAL(fence_cnats_past(f), cnats_came);
	CU_ASSERT_EQUAL(d->ended, 0);
	fence_grace_over(f);
	CU_ASSERT_EQUAL(d->ended, 1);
}

static void test_late_fence_reasons(void)
{
	struct fence f;
	struct driver d;

	ready_and_subscribed(&f, &d);
	d.share_up = false;
	fence_writer_marked(&f, 7, true);
	fence_wait_over(&f, false);
	expect_skip(&f, &d, "not published within 5 s: 'b-share' is down", false);

	ready_and_subscribed(&f, &d);
	fence_listen_anew(&f); /* cnats's subscription made again: no probe heard since */
	fence_writer_marked(&f, 7, true);
	fence_wait_over(&f, true);
	expect_skip(&f, &d, "not published within 5 s: cnats has not heard a probe of it yet", false);

	ready_and_subscribed(&f, &d);
	fence_writer_marked(&f, 7, true);
	hear(&f, "1", false);
	fence_wait_over(&f, true);
	CU_ASSERT_EQUAL(d.pauses, 1);
	expect_skip(&f, &d, "it did not come through the main connection within 5 s", false);

	ready_and_subscribed(&f, &d);
	fence_writer_marked(&f, 7, true);
	hear(&f, "1", true);
	fence_wait_over(&f, true);
	expect_skip(&f, &d, "it did not come through the data connection within 5 s", true);

	ready_and_subscribed(&f, &d);
	f.no_fence = true;
	fence_writer_marked(&f, 7, true);
	CU_ASSERT_EQUAL(d.nsent, 1); /* never published */
	fence_wait_over(&f, true);
	expect_skip(&f, &d, "it did not come through either connection within 5 s", false);
}

static void test_main_lost(void)
{
	struct fence f;
	struct driver d;

	/* Lost before the fence goes: at once. */
	ready_and_subscribed(&f, &d);
	fence_writer_marked(&f, 7, false);
	CU_ASSERT_EQUAL(d.nsent, 1);
	expect_skip(&f, &d, "the main connection is lost", false);

	/* Lost while cnats's copy is awaited: nothing more comes through it. */
	ready_and_subscribed(&f, &d);
	fence_writer_marked(&f, 7, true);
	hear(&f, "1", false);
	fence_main_lost(&f);
	expect_skip(&f, &d, "the main connection is lost", false);

	/* Lost after cnats's copy came: the data connection's is still awaited. */
	ready_and_subscribed(&f, &d);
	fence_writer_marked(&f, 7, true);
	hear(&f, "1", true);
	fence_main_lost(&f);
	CU_ASSERT_EQUAL(d.skips, 0);
	hear(&f, "1", false);
	CU_ASSERT_EQUAL(d.ended, 1);
	CU_ASSERT_EQUAL(f.reading, READ_WRITER);
}

static void test_writer_lost_and_up_again(void)
{
	struct fence f;
	struct driver d;
	ready_and_subscribed(&f, &d);
	fence_writer_marked(&f, 7, true);
	hear(&f, "1", false);
	CU_ASSERT_EQUAL(d.pauses, 1);
	/* Lost during the wait: back to cnats, the wait's bound gone. */
	CU_ASSERT_TRUE(fence_writer_down(&f));
	CU_ASSERT_EQUAL(f.reading, READ_CNATS);
	CU_ASSERT_FALSE(d.timer[FENCE_T_WAIT]);
	CU_ASSERT_TRUE(fence_cnats_reads(&f));
	CU_ASSERT_FALSE(fence_cnats_past(&f));
	CU_ASSERT_FALSE(fence_writer_down(&f)); /* already on cnats: nothing to put back */
	/* Up again: a new fence, and the first move's copies, late, count for
	 * nothing. */
	fence_writer_up(&f);
	fence_writer_subscribed(&f, 12);
	fence_writer_marked(&f, 12, true);
	CU_ASSERT_STRING_EQUAL(last_sent(&d), "2");
	hear(&f, "1", true);
	hear(&f, "1", false);
	CU_ASSERT_EQUAL(f.reading, READ_FENCE);
	CU_ASSERT_TRUE(fence_cnats_reads(&f));
	/* Not fences: ignored. */
	hear(&f, "", true);
	hear(&f, "x", true);
	hear(&f, "99999999999999999999999999", true);
	CU_ASSERT_TRUE(fence_cnats_reads(&f));
	hear(&f, "2", true);
	hear(&f, "2", false);
	CU_ASSERT_EQUAL(f.reading, READ_WRITER);
	CU_ASSERT_EQUAL(d.ended, 1);
	/* Lost after the move: back to cnats, the grace (none here) stopped. */
	CU_ASSERT_TRUE(fence_writer_down(&f));
	CU_ASSERT_FALSE(d.timer[FENCE_T_GRACE]);
	fence_grace_over(&f); /* a timer already past: nothing */
	CU_ASSERT_EQUAL(d.ended, 1);
}

static void test_skip_restarts_the_grace(void)
{
	struct fence f;
	struct driver d;
	ready_and_subscribed(&f, &d);
	fence_writer_marked(&f, 7, false);
	CU_ASSERT_EQUAL(d.starts[FENCE_T_GRACE], 1);
	/* Up again (without a loss seen in between) and skipped again: the
	 * whole grace from the second skip. */
	fence_writer_up(&f);
	fence_writer_subscribed(&f, 8);
	fence_writer_marked(&f, 8, false);
	CU_ASSERT_EQUAL(d.starts[FENCE_T_GRACE], 2);
}

static CU_TestInfo tests[] = {
	{"cnats's copy first: each routes on its side, cnats's subscriptions end", test_cnats_copy_first},
	{"the data connection's copy first: it pauses until cnats's", test_writer_copy_first_pauses},
	{"probes: cnats's own copy of the latest, at most one a second", test_fence_waits_for_a_probe_cnats_heard},
	{"the fence goes once cnats heard a probe, once", test_fence_published_once_ready},
	{"'<node>-share' down: the fence goes when it is back", test_share_down_then_up},
	{"a fence that does not come: moved without it, with the reason", test_late_fence_reasons},
	{"the main connection lost: moved without the fence unless cnats's copy came", test_main_lost},
	{"the data connection lost and up again: a new fence, old copies ignored", test_writer_lost_and_up_again},
	{"a second move without the fence restarts the grace", test_skip_restarts_the_grace},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"cluster_fence", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
