/*
 * A session handed between nodes (proto/persist.h: persist_session_export
 * and persist_import_rec, which cluster/handover.c moves over NATS): a
 * session with every kind of state (subscriptions with options and a
 * Subscription Identifier, queued QoS 1/2 messages with properties, in
 * flight waiting for PUBACK, PUBREC and PUBCOMP, inbound QoS 2 ids, a v5
 * expiry) exported from one broker, framed as the store frames it, and
 * imported into another comes out the same when exported again; the
 * importing broker's store holds it (it is the same after a restart); a
 * second import of an id that exists is refused; records out of order are
 * refused and leave nothing behind. A session's cluster claim time (what a
 * restarted node compares) survives a restart and a compaction.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

#include "unit_main.h"
#include "broker.h"
#include "broker_harness.h"
#include "delivery.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "persist.h"
#include "record.h"
#include "session_v5.h"

struct node {
	struct config *cfg;
	struct loop *l;
	struct broker b;
};

static void node_start(struct node *n, const char *dir)
{
	char json[512], err[256];
	if (dir)
		snprintf(json, sizeof json,
			 "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}], \"persistence\": {\"enabled\": true,"
			 " \"dir\": \"%s\", \"fsync\": \"no\"}, \"log\": {\"level\": \"error\"}}", dir);
	else
		snprintf(json, sizeof json, "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
					    " \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}}");
	CU_ASSERT_FATAL(config_parse(json, strlen(json), "test", &n->cfg, err, sizeof err) == 0);
	log_set_level(LOG_ERROR);
	n->l = loop_new();
	CU_ASSERT_FATAL(n->l != NULL);
	CU_ASSERT_FATAL(broker_init(&n->b, n->l, n->cfg, err, sizeof err) == 0);
}

static void node_stop(struct node *n)
{
	persist_flush(&n->b);
	broker_free(&n->b);
	loop_free(n->l);
	config_free(n->cfg);
}

/* The records as handover.c sends them: store frames, salt 0. */
struct frames {
	uint8_t buf[64 * 1024];
	size_t len;
	size_t count;
};

static int put(void *ctx, const struct store_rec *r)
{
	struct frames *f = ctx;
	ssize_t n = store_rec_encode(r, 0, f->buf + f->len, sizeof f->buf - f->len);
	CU_ASSERT_FATAL(n > 0);
	f->len += (size_t)n;
	f->count++;
	return 0;
}

static void export(struct broker *b, const char *id, struct frames *out)
{
	struct session *s = sess_find(&b->sessions, id, strlen(id));
	CU_ASSERT_FATAL(s != NULL);
	memset(out, 0, sizeof *out);
	CU_ASSERT_FATAL(persist_session_export(b, s, put, out) == 0);
}

/* Applies frames to b; returns the first error (the import ended either way). */
static int import(struct broker *b, const struct frames *f)
{
	struct persist_import x = {0};
	size_t off = 0, total;
	int rc = 0;
	while (rc == 0 && off < f->len) {
		CU_ASSERT_FATAL(store_frame_check(f->buf + off, f->len - off, 0, &total) == STORE_FRAME_OK);
		const uint8_t *fr = f->buf + off;
		struct store_rec r;
		CU_ASSERT_FATAL(store_rec_decode(fr[4], fr[5], fr + STORE_FRAME_HDR, total - STORE_FRAME_HDR, &r) == 0);
		rc = persist_import_rec(b, &x, &r);
		off += total;
	}
	persist_import_end(b, &x, rc == 0);
	return rc;
}

/* Frames after the first (SESSION_PUT: its owner and protocol level are the
 * next CONNECT's business). */
static const uint8_t *after_first(const struct frames *f, size_t *len)
{
	size_t total;
	CU_ASSERT_FATAL(store_frame_check(f->buf, f->len, 0, &total) == STORE_FRAME_OK);
	*len = f->len - total;
	return f->buf + total;
}

static void publish(struct broker *b, const char *topic, const char *payload, uint8_t qos)
{
	static const uint8_t props[] = {0x03, 0x00, 0x04, 't', 'e', 'x', 't'}; /* Content Type "text" */
	struct msg_spec spec = {.topic = topic, .topic_len = strlen(topic), .payload = payload,
				.payload_len = strlen(payload), .props = props, .props_len = sizeof props, .qos = qos};
	struct msg *m = msg_create(&spec);
	CU_ASSERT_FATAL(m != NULL);
	struct topic_level levels[TOPIC_MAX_LEVELS_HARD];
	int n = topic_split(topic, strlen(topic), levels, TOPIC_MAX_LEVELS_HARD);
	CU_ASSERT_FATAL(n > 0);
	router_publish(b->router, m, levels, (size_t)n);
	msg_unref(m);
}

/* An offline session "mover" at a with one of everything. */
static void build(struct broker *b)
{
	struct session *s = sess_create(&b->sessions, "mover", 5, false);
	CU_ASSERT_FATAL(s != NULL);
	struct sess_v5 *v = session_v5_get(b, s);
	CU_ASSERT_FATAL(v != NULL);
	v->expiry = 3600;
	/* QoS 2, No Local, Retain As Published, Retain Handling 1; an id. */
	CU_ASSERT(router_interest_add(b->router, s, "a/#", 3, 0x02 | 0x04 | 0x08 | 0x10, 7, 0) >= 0);
	CU_ASSERT(router_interest_add(b->router, s, "b/+/c", 5, 0x01, 0, 0) >= 0);
	struct msg_spec spec = {.topic = "a/f", .topic_len = 3, .payload = "flight", .payload_len = 6, .qos = 2};
	struct msg *m = msg_create(&spec);
	CU_ASSERT_FATAL(m != NULL);
	uint32_t ids[] = {7};
	struct delivery_sub_ids sid = {ids, 1};
	CU_ASSERT(delivery_restore_flight(s, &b->dlim, m, 11, 1, SESS_MSG_WAIT_PUBACK, false, NULL) == 0);
	CU_ASSERT(delivery_restore_flight(s, &b->dlim, m, 12, 2, SESS_MSG_WAIT_PUBREC, true, &sid) == 0);
	CU_ASSERT(delivery_restore_flight(s, &b->dlim, NULL, 13, 2, SESS_MSG_WAIT_PUBCOMP, false, NULL) == 0);
	msg_unref(m);
	publish(b, "a/q", "one", 1);
	publish(b, "b/x/c", "two", 1);
	publish(b, "a/q", "three", 2);
	CU_ASSERT(sess_qos2_in_add(s, 21) == 1);
	CU_ASSERT(sess_qos2_in_add(s, 22) == 1);
	s->next_packet_id = 13;
	CU_ASSERT(sess_queued_count(s) == 3 && sess_inflight_count(s) == 3);
}

static void test_session_round_trips_and_is_stored_at_the_new_node(void)
{
	char dir[128];
	CU_ASSERT_FATAL(harness_temp_dir(dir, sizeof dir, "wisp-handover") == 0);
	struct node a, b;
	node_start(&a, NULL);
	node_start(&b, dir);
	build(&a.b);
	static struct frames sent, again, restored;
	export(&a.b, "mover", &sent);
	CU_ASSERT(sent.count == 1 + 2 + (2 + 2 + 1) + 2 * 3 + 2); /* session, subs, flight, queue, qos2 */
	CU_ASSERT(import(&b.b, &sent) == 0);
	struct session *s = sess_find(&b.b.sessions, "mover", 5);
	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT(!s->clean && !s->conn);
	CU_ASSERT(sess_queued_count(s) == 3 && sess_inflight_count(s) == 3 && sess_sub_count(s) == 2);
	CU_ASSERT(s->v5 && s->v5->expiry == 3600 && s->next_packet_id == 13);
	export(&b.b, "mover", &again);
	size_t l1, l2;
	const uint8_t *p1 = after_first(&sent, &l1), *p2 = after_first(&again, &l2);
	CU_ASSERT(l1 == l2 && memcmp(p1, p2, l1) == 0);
	/* A second copy of the id is refused, and the first stays. */
	CU_ASSERT(import(&b.b, &sent) == WISP_EEXIST);
	CU_ASSERT(sess_find(&b.b.sessions, "mover", 5) == s);
	node_stop(&b);
	/* b's store has it: the same after a restart. */
	node_start(&b, dir);
	export(&b.b, "mover", &restored);
	p2 = after_first(&restored, &l2);
	CU_ASSERT(l1 == l2 && memcmp(p1, p2, l1) == 0);
	node_stop(&b);
	node_stop(&a);
	harness_remove_dir(dir);
}

static void test_records_out_of_order_leave_nothing(void)
{
	struct node a, b;
	node_start(&a, NULL);
	node_start(&b, NULL);
	build(&a.b);
	static struct frames sent, cut;
	export(&a.b, "mover", &sent);
	/* Drop the MSG_PUT before the first FLIGHT_SET: its delivery has no message. */
	size_t off = 0, total, n = 0;
	memset(&cut, 0, sizeof cut);
	while (off < sent.len) {
		CU_ASSERT_FATAL(store_frame_check(sent.buf + off, sent.len - off, 0, &total) == STORE_FRAME_OK);
		if (n++ != 3) {
			memcpy(cut.buf + cut.len, sent.buf + off, total);
			cut.len += total;
		}
		off += total;
	}
	CU_ASSERT(import(&b.b, &cut) == WISP_EPROTO);
	CU_ASSERT(sess_find(&b.b.sessions, "mover", 5) == NULL);
	CU_ASSERT(b.b.sessions.count == 0);
	node_stop(&b);
	node_stop(&a);
}

/* The claim time of a persistent session's last connect at a cluster node
 * (what a restarted node compares with the other nodes' copies,
 * cluster/presence.h) comes back after a restart, from the log and from a
 * snapshot; a session without one comes back without one. */
static void test_claim_time_survives_restart_and_compaction(void)
{
	char dir[128], cfg[512];
	CU_ASSERT_FATAL(harness_temp_dir(dir, sizeof dir, "wisp-claim") == 0);
	snprintf(cfg, sizeof cfg,
		 "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}], \"log\": {\"level\": \"error\"},"
		 " \"persistence\": {\"dir\": \"%s\", \"compact_min_size\": 4096}}", dir);
	const uint64_t at = UINT64_C(1764494000123456789);
	for (int compacted = 0; compacted < 2; compacted++) {
		struct harness *h = harness_new(cfg);
		CU_ASSERT_FATAL(h != NULL);
		struct broker *b = harness_broker(h);
		struct session *timed = sess_find(&b->sessions, "timed", 5);
		struct session *untimed = sess_find(&b->sessions, "untimed", 7);
		CU_ASSERT((timed != NULL) == (compacted == 1)); /* the first round's, restored */
		if (!compacted) {
			timed = sess_create(&b->sessions, "timed", 5, false);
			untimed = sess_create(&b->sessions, "untimed", 7, false);
			CU_ASSERT(timed && sess_claim_ns(timed) == 0);
		}
		CU_ASSERT_FATAL(timed && untimed);
		CU_ASSERT_FATAL(sess_set_claim_ns(timed, at - 1));
		SESS_OBSERVE(&b->observer, session_put, untimed);
		/* As presence.c writes it at each connect: the last one counts.
		 * Enough of them, the second time, for a compaction. */
		for (int i = 0; i < (compacted ? 200 : 1); i++) {
			CU_ASSERT_FATAL(sess_set_claim_ns(timed, at - 1 + (uint64_t)(i == (compacted ? 199 : 0))));
			SESS_OBSERVE(&b->observer, session_put, timed);
		}
		harness_run(h);
		harness_run(h);
		CU_ASSERT(harness_has_snapshot(dir) == (compacted == 1));
		harness_free(h);

		h = harness_new(cfg);
		CU_ASSERT_FATAL(h != NULL);
		b = harness_broker(h);
		timed = sess_find(&b->sessions, "timed", 5);
		untimed = sess_find(&b->sessions, "untimed", 7);
		CU_ASSERT_FATAL(timed && untimed);
		CU_ASSERT_EQUAL(sess_claim_ns(timed), at);
		CU_ASSERT_EQUAL(sess_claim_ns(untimed), 0);
		CU_ASSERT(untimed->rare == NULL); /* no block for a session without one */
		harness_free(h);
	}
	harness_remove_dir(dir);
}

static CU_TestInfo tests[] = {
	{"claim time survives a restart and a compaction", test_claim_time_survives_restart_and_compaction},
	{"session_round_trips_and_is_stored_at_the_new_node", test_session_round_trips_and_is_stored_at_the_new_node},
	{"records_out_of_order_leave_nothing", test_records_out_of_order_leave_nothing},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"handover", NULL, NULL, NULL, NULL, tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
