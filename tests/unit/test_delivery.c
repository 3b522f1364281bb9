/*
 * Outbound delivery: the in-flight window, packet id allocation and reuse,
 * both QoS 2 state machines, queue limits and session resumption, driven
 * over a fake transport (no sockets). What the "subscriber" sees is the
 * byte stream written to the transport, decoded with the codec.
 */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unit_main.h"
#include "alloc.h"
#include "codec.h"
#include "conn.h"
#include "delivery.h"
#include "err.h"
#include "fake_transport.h"
#include "flight.h"
#include "loop.h"
#include "session.h"

#define MAX_SEEN 64

struct seen {
	size_t n;
	uint8_t type[MAX_SEEN];
	uint8_t qos[MAX_SEEN];
	bool dup[MAX_SEEN];
	uint16_t id[MAX_SEEN];
	char payload[MAX_SEEN][16];
};

static struct conn_set set;
static struct conn_origin origin = {&set};
static struct session_table tab;
static struct tree *tree;
static struct session *s;
static struct conn *c;
static struct fake_transport *ft;

static void attach(void)
{
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ft = fake_transport_new();
	c = conn_new(&origin, &ft->base, -1, (const struct sockaddr *)&peer);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	c->state = CONN_ACTIVE;
	c->version = MQTT_PROTO_V311;
	c->sess = s;
	s->conn = c;
}

static void detach(void)
{
	s->conn = NULL;
	c->sess = NULL;
	c->state = CONN_CLOSING;
	conn_free(c);
	c = NULL;
}

static void set_up(void)
{
	list_init(&set.all);
	list_init(&set.dirty);
	list_init(&set.closing);
	list_init(&set.read_more);
	list_init(&set.read_later);
	set.count = 0;
	set.unauth_bytes = 0;
	CU_ASSERT_EQUAL_FATAL(sess_table_init(&tab), 0);
	tree = tree_new();
	s = sess_create(&tab, "sub", 3, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	attach();
}

static void tear_down(void)
{
	if (c)
		detach();
	sess_table_free(&tab, tree);
	tree_free(tree);
	outq_release_cache();
	flight_release_cache();
	msg_release_cache();
}

/* Flushes the connection and decodes everything written since last time. */
static struct seen flush_and_decode(void)
{
	struct seen out = {0};
	outq_flush(&c->out, conn_t(c));
	struct mqtt_codec_opts opts = {.version = MQTT_PROTO_V311};
	size_t off = 0;
	while (off < ft->written_len && out.n < MAX_SEEN) {
		struct mqtt_pkt p;
		ssize_t n = mqtt_decode(ft->written + off, ft->written_len - off, &opts, &p);
		CU_ASSERT_FATAL(n > 0);
		out.type[out.n] = p.type;
		if (p.type == MQTT_PKT_PUBLISH) {
			out.qos[out.n] = p.u.publish.qos;
			out.dup[out.n] = p.u.publish.dup;
			out.id[out.n] = p.u.publish.packet_id;
			size_t len = p.u.publish.payload.len < 15 ? p.u.publish.payload.len : 15;
			memcpy(out.payload[out.n], p.u.publish.payload.ptr, len);
			out.payload[out.n][len] = '\0';
		} else {
			out.id[out.n] = p.u.ack.packet_id;
		}
		out.n++;
		off += (size_t)n;
	}
	fake_transport_reset(ft);
	return out;
}

static struct msg *mk(const char *payload, uint8_t qos)
{
	struct msg *m = msg_new("t/x", 3, payload, strlen(payload), qos, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(m);
	return m;
}

/* The reason of the last drop by offer() (DROP_REASON_COUNT: none yet). */
static enum drop_reason last_why = DROP_REASON_COUNT;

static enum delivery_result offer(const struct delivery_limits *lim, const char *payload, uint8_t qos)
{
	struct msg *m = mk(payload, qos);
	enum delivery_result r = delivery_offer(s, lim, m, qos, false, NULL, &last_why);
	msg_unref(m);
	return r;
}

static const struct delivery_limits lim3 = {
	.max_inflight = 3, .max_queued = 100, .max_queued_bytes = 0, .max_output = 1u << 20};

/* [MQTT-4.6.0] the window holds max_inflight messages; the rest wait in order. */
static void test_window_bounds_inflight_and_queue_drains_in_order(void)
{
	const char *names[] = {"m1", "m2", "m3", "m4", "m5"};
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(offer(&lim3, names[i], 1), i < 3 ? DELIVERY_SENT : DELIVERY_QUEUED);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(w.n, 3);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 3);
	CU_ASSERT_EQUAL(sess_queued_count(s), 2);
	CU_ASSERT_STRING_EQUAL(w.payload[0], "m1");
	CU_ASSERT_STRING_EQUAL(w.payload[2], "m3");
	/* [MQTT-2.3.1-1][MQTT-2.3.1-2] non-zero, distinct ids */
	CU_ASSERT(w.id[0] != 0 && w.id[0] != w.id[1] && w.id[1] != w.id[2] && w.id[0] != w.id[2]);

	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim3, w.id[1]), 0);
	struct seen w2 = flush_and_decode();
	CU_ASSERT_EQUAL(w2.n, 1);
	CU_ASSERT_STRING_EQUAL(w2.payload[0], "m4");
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim3, w.id[0]), 0);
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim3, w.id[2]), 0);
	struct seen w3 = flush_and_decode();
	CU_ASSERT_EQUAL(w3.n, 1);
	CU_ASSERT_STRING_EQUAL(w3.payload[0], "m5");
	CU_ASSERT_EQUAL(sess_queued_count(s), 0);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 2);
}

static void test_puback_for_unknown_or_repeated_id_is_ignored(void)
{
	CU_ASSERT_EQUAL(offer(&lim3, "a", 1), DELIVERY_SENT);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim3, (uint16_t)(w.id[0] + 1)), WISP_ENOENT);
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim3, w.id[0]), 0);
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim3, w.id[0]), WISP_ENOENT);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 0);
}

/* [MQTT-4.3.3] outbound QoS 2: PUBLISH -> PUBREC -> PUBREL -> PUBCOMP. */
static void test_qos2_outbound_state_machine(void)
{
	CU_ASSERT_EQUAL(offer(&lim3, "x", 2), DELIVERY_SENT);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(w.n, 1);
	CU_ASSERT_EQUAL(w.qos[0], 2);
	uint16_t id = w.id[0];
	/* PUBCOMP before PUBREC matches nothing. */
	CU_ASSERT_EQUAL(delivery_on_pubcomp(s, &lim3, id), WISP_ENOENT);
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim3, id, 0), 0);
	w = flush_and_decode();
	CU_ASSERT_EQUAL(w.n, 1);
	CU_ASSERT_EQUAL(w.type[0], MQTT_PKT_PUBREL);
	CU_ASSERT_EQUAL(w.id[0], id);
	/* A repeated PUBREC is answered with PUBREL again. */
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim3, id, 0), 0);
	w = flush_and_decode();
	CU_ASSERT_EQUAL(w.type[0], MQTT_PKT_PUBREL);
	CU_ASSERT_EQUAL(delivery_on_pubcomp(s, &lim3, id), 0);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 0);
	CU_ASSERT_EQUAL(delivery_on_pubcomp(s, &lim3, id), WISP_ENOENT);
}

/* A v5 PUBREC of 0x80 or more ends the flow: no PUBREL [MQTT-4.3.3-4], the
 * id free again (4.3.3) and the window's place back (4.9), so the next
 * queued message goes at once. */
static void test_pubrec_error_ends_the_flow(void)
{
	const struct delivery_limits lim = {.max_inflight = 1, .max_queued = 10, .max_output = 1u << 20};
	CU_ASSERT_EQUAL(offer(&lim, "refused", 2), DELIVERY_SENT);
	CU_ASSERT_EQUAL(offer(&lim, "next", 2), DELIVERY_QUEUED);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 1);
	uint16_t id = w.id[0];
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim, id, 0x80), 0);
	w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 1);
	CU_ASSERT_EQUAL(w.type[0], MQTT_PKT_PUBLISH);
	CU_ASSERT_STRING_EQUAL(w.payload[0], "next");
	CU_ASSERT_EQUAL(sess_inflight_count(s), 1);
	CU_ASSERT_EQUAL(sess_queued_count(s), 0);
	/* An error PUBREC for an id not in flight gets no PUBREL. */
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim, (uint16_t)(w.id[0] + 7), 0x87), WISP_ENOENT);
	CU_ASSERT_EQUAL(flush_and_decode().n, 0);
	/* After a PUBREL went out, an error PUBREC still ends the flow. */
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim, w.id[0], 0), 0);
	CU_ASSERT_EQUAL(flush_and_decode().type[0], MQTT_PKT_PUBREL);
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim, w.id[0], 0x80), 0);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 0);
	CU_ASSERT_EQUAL(flush_and_decode().n, 0);
}

/* A PUBACK does not complete a QoS 2 flow, nor PUBREC a QoS 1 one: each
 * is the protocol violation the broker closes for (handle_ack.c). */
static void test_ack_of_the_wrong_kind_matches_nothing(void)
{
	CU_ASSERT_EQUAL(offer(&lim3, "one", 1), DELIVERY_SENT);
	CU_ASSERT_EQUAL(offer(&lim3, "two", 2), DELIVERY_SENT);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim3, w.id[0], 0), WISP_EPROTO);
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim3, w.id[1]), WISP_EPROTO);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 2);
}

/* Ids in flight are skipped when the counter wraps [MQTT-2.3.1-2]. */
static void test_packet_ids_wrap_and_skip_ids_in_use(void)
{
	const struct delivery_limits lim = {.max_inflight = 10, .max_queued = 10, .max_output = 1u << 20};
	s->next_packet_id = 0;
	CU_ASSERT_EQUAL(offer(&lim, "a", 1), DELIVERY_SENT); /* id 1 stays in flight */
	s->next_packet_id = 65534;
	CU_ASSERT_EQUAL(offer(&lim, "b", 1), DELIVERY_SENT);
	CU_ASSERT_EQUAL(offer(&lim, "c", 1), DELIVERY_SENT);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(w.n, 3);
	CU_ASSERT_EQUAL(w.id[0], 1);
	CU_ASSERT_EQUAL(w.id[1], 65535);
	CU_ASSERT_EQUAL(w.id[2], 2); /* 0 is never used and 1 is taken */
	/* Once acknowledged, an id is free again. */
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim, 1), 0);
	s->next_packet_id = 0;
	CU_ASSERT_EQUAL(offer(&lim, "d", 1), DELIVERY_SENT);
	w = flush_and_decode();
	CU_ASSERT_EQUAL(w.id[0], 1);
}

/* A wide window across the wrap at 65535, acknowledged out of order: every
 * id stays distinct and non-zero, the ids still in flight are skipped, and
 * the freed ones are handed out again [MQTT-2.3.1-2]. */
static void test_wide_window_across_the_wrap_acked_out_of_order(void)
{
	const struct delivery_limits lim = {.max_inflight = 60, .max_queued = 10, .max_output = 1u << 20};
	s->next_packet_id = 65510;
	for (int i = 0; i < 50; i++)
		CU_ASSERT_EQUAL(offer(&lim, "w", 1), DELIVERY_SENT);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 50);
	for (size_t i = 0; i < 50; i++)
		CU_ASSERT_EQUAL(w.id[i], i < 25 ? 65511 + i : i - 24); /* 65511..65535, then 1..25 */
	/* Every other one acknowledged, newest first. */
	for (int i = 49; i >= 0; i -= 2)
		CU_ASSERT_EQUAL(delivery_on_puback(s, &lim, w.id[i]), 0);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 25);
	/* The counter wraps once more, onto 1..25: the odd ids are free again,
	 * the even ones still in flight. */
	s->next_packet_id = 65535;
	for (int i = 0; i < 10; i++)
		CU_ASSERT_EQUAL(offer(&lim, "x", 1), DELIVERY_SENT);
	struct seen w2 = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w2.n, 10);
	for (size_t i = 0; i < 10; i++)
		CU_ASSERT_EQUAL(w2.id[i], 2 * i + 1);
	/* The first batch's even ids still complete, once each. */
	for (int i = 0; i < 50; i += 2) {
		CU_ASSERT_EQUAL(delivery_on_puback(s, &lim, w.id[i]), 0);
		CU_ASSERT_EQUAL(delivery_on_puback(s, &lim, w.id[i]), WISP_ENOENT);
	}
	for (size_t i = 0; i < 10; i++)
		CU_ASSERT_EQUAL(delivery_on_puback(s, &lim, w2.id[i]), 0);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 0);
	CU_ASSERT_PTR_NULL(s->qos); /* an empty window holds no QoS block, nor its index */
}

/* [MQTT-3.3.4-9] the client's Receive Maximum bounds the window below
 * max_inflight, and an ack anywhere in the window lets the next one in. */
static void test_receive_maximum_window(void)
{
	const struct delivery_limits lim = {.max_inflight = 100, .max_queued = 100, .max_output = 1u << 20};
	struct sess_v5 v5 = {.send_max = 4};
	s->v5 = &v5;
	for (int i = 0; i < 10; i++)
		CU_ASSERT_EQUAL(offer(&lim, "r", 1), i < 4 ? DELIVERY_SENT : DELIVERY_QUEUED);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(w.n, 4);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 4);
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim, w.id[2]), 0); /* the middle of the window */
	struct seen w2 = flush_and_decode();
	CU_ASSERT_EQUAL(w2.n, 1);
	CU_ASSERT_EQUAL(w2.id[0], w.id[3] + 1);
	CU_ASSERT_EQUAL(delivery_inflight_state(s, w.id[2]), -1);
	CU_ASSERT_EQUAL(delivery_inflight_state(s, w2.id[0]), SESS_MSG_WAIT_PUBACK);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 4);
	CU_ASSERT_EQUAL(sess_queued_count(s), 5);
	s->v5 = NULL;
}

/* Out of memory for the id index: a direct delivery is dropped and
 * counted as such, a queued one stays queued until memory is back. */
static void test_index_out_of_memory(void)
{
	const struct delivery_limits lim = {.max_inflight = 40, .max_queued = 100, .max_output = 1u << 20};
	flight_release_cache();
	for (int i = 0; i < 16; i++)
		CU_ASSERT_EQUAL(offer(&lim, "m", 1), DELIVERY_SENT);
	struct msg *m = mk("n", 1);
	flight_entry_free(flight_entry_new(0)); /* the entry comes from the free list */
	wisp_mem_fail_after(1, 1);               /* the index cannot grow past 16 */
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 1, false, NULL, &last_why), DELIVERY_DROPPED);
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_EQUAL(last_why, DROP_NO_MEMORY);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 16);
	msg_unref(m);
	/* Queued behind a full output, then pumped while the index cannot grow. */
	struct delivery_limits tight = lim;
	tight.max_output = 1;
	CU_ASSERT_EQUAL(offer(&tight, "q", 1), DELIVERY_QUEUED);
	wisp_mem_fail_after(1, 1);
	flush_and_decode();
	CU_ASSERT_EQUAL(delivery_pump(s, &lim), 0);
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_EQUAL(sess_queued_count(s), 1);
	CU_ASSERT_EQUAL(delivery_pump(s, &lim), 1);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 17);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(w.n, 1);
	CU_ASSERT_STRING_EQUAL(w.payload[0], "q");
}

/* Steady-state QoS 1 delivery (send, PUBACK) allocates nothing once the
 * entry, index and outq free lists are warm: with every allocation failing,
 * the second round still delivers. */
static void test_qos1_steady_state_allocates_nothing(void)
{
	struct msg *m = mk("s", 1);
	for (int round = 0; round < 2; round++) {
		if (round == 1)
			wisp_mem_fail_after(1, 1);
		for (int i = 0; i < 100; i++) {
			CU_ASSERT_EQUAL(delivery_offer(s, &lim3, m, 1, false, NULL, &last_why), DELIVERY_SENT);
			struct seen w = flush_and_decode();
			CU_ASSERT_EQUAL(w.n, 1);
			CU_ASSERT_EQUAL(delivery_on_puback(s, &lim3, w.id[0]), 0);
		}
		wisp_mem_fail_after(0, 0);
	}
	msg_unref(m);
}

static void test_offline_queue_is_bounded_by_count(void)
{
	const struct delivery_limits lim = {.max_inflight = 5, .max_queued = 2, .max_output = 1u << 20};
	detach();
	CU_ASSERT_EQUAL(offer(&lim, "a", 1), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(offer(&lim, "b", 2), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(offer(&lim, "c", 1), DELIVERY_DROPPED);
	CU_ASSERT_EQUAL(last_why, DROP_QUEUE_FULL);
	CU_ASSERT_EQUAL(sess_queued_count(s), 2);
	CU_ASSERT_EQUAL(sess_dropped(s), 1);
}

/* config/README.md: max_queued_messages 0 means no count bound. */
static void test_offline_queue_zero_means_unlimited(void)
{
	const struct delivery_limits lim = {.max_inflight = 5, .max_queued = 0, .max_output = 1u << 20};
	detach();
	for (int i = 0; i < 2000; i++)
		CU_ASSERT_EQUAL(offer(&lim, "m", 1), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(sess_queued_count(s), 2000);
	CU_ASSERT_EQUAL(sess_dropped(s), 0);
}

static void test_offline_queue_is_bounded_by_bytes(void)
{
	struct msg *m = mk("0123456789", 1);
	const struct delivery_limits lim = {
		.max_inflight = 5, .max_queued = 100, .max_queued_bytes = 2 * msg_size(m) + 1, .max_output = 1u << 20};
	detach();
	enum drop_reason why = DROP_REASON_COUNT;
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 1, false, NULL, &why), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 1, false, NULL, &why), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 1, false, NULL, &why), DELIVERY_DROPPED);
	CU_ASSERT_EQUAL(why, DROP_QUEUE_BYTES);
	CU_ASSERT_EQUAL(sess_queued_bytes(s), 2 * msg_size(m));
	CU_ASSERT_EQUAL(m->refcnt, 3); /* ours plus one per queued entry: shared, not copied */
	msg_unref(m);
}

/* QoS 0 is not queued for offline sessions, nor past the output cap. */
static void test_qos0_dropped_when_offline_or_output_full(void)
{
	const struct delivery_limits lim = {.max_inflight = 5, .max_queued = 100, .max_output = 64};
	ft->accept_limit = 0; /* the subscriber stops reading */
	size_t sent = 0, dropped = 0;
	for (int i = 0; i < 50; i++) {
		enum delivery_result r = offer(&lim, "payload", 0);
		sent += r == DELIVERY_SENT;
		dropped += r == DELIVERY_DROPPED;
		if (r == DELIVERY_DROPPED)
			CU_ASSERT_EQUAL(last_why, DROP_OUTPUT_FULL);
	}
	CU_ASSERT(sent > 0 && sent < 50);
	CU_ASSERT_EQUAL(sent + dropped, 50);
	CU_ASSERT(c->out.bytes < 64 + 32); /* bounded by the cap plus one message */
	detach();
	CU_ASSERT_EQUAL(offer(&lim, "late", 0), DELIVERY_DROPPED);
	CU_ASSERT_EQUAL(last_why, DROP_OFFLINE_QOS0);
}

/* The outbound QoS 1/2 state is a block of its own (issue 18): a session
 * that only ever gets QoS 0 never has one, and a QoS 1/2 session's goes
 * once nothing is queued or in flight, whichever way it emptied. */
static void test_qos_state_exists_only_while_used(void)
{
	const struct delivery_limits lim = {.max_inflight = 1, .max_queued = 100, .max_output = 1u << 20};
	for (int i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(offer(&lim, "zero", 0), DELIVERY_SENT);
	CU_ASSERT_PTR_NULL(s->qos);
	CU_ASSERT_EQUAL(sess_queued_count(s) + sess_inflight_count(s), 0);
	CU_ASSERT_EQUAL(flush_and_decode().n, 5);
	/* Acked: in flight, then the queued one, then nothing. */
	CU_ASSERT_EQUAL(offer(&lim, "a", 1), DELIVERY_SENT);
	CU_ASSERT_EQUAL(offer(&lim, "b", 2), DELIVERY_QUEUED);
	CU_ASSERT_PTR_NOT_NULL(s->qos);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 1);
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim, w.id[0]), 0);
	w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 1);
	CU_ASSERT_PTR_NOT_NULL(s->qos);
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim, w.id[0], 0), 0);
	CU_ASSERT_PTR_NOT_NULL(s->qos); /* waiting for PUBCOMP */
	CU_ASSERT_EQUAL(delivery_on_pubcomp(s, &lim, w.id[0]), 0);
	CU_ASSERT_PTR_NULL(s->qos);
	/* Unknown ids find nothing and allocate nothing. */
	CU_ASSERT_EQUAL(delivery_on_puback(s, &lim, 7), WISP_ENOENT);
	CU_ASSERT_EQUAL(delivery_inflight_state(s, 7), -1);
	CU_ASSERT_PTR_NULL(s->qos);
	/* Queued while offline, then cleared with the session's messages. */
	detach();
	CU_ASSERT_EQUAL(offer(&lim, "c", 1), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(sess_queued_count(s), 1);
	delivery_clear(s, &lim);
	CU_ASSERT_PTR_NULL(s->qos);
	CU_ASSERT_EQUAL(sess_queued_bytes(s), 0);
	/* Out of memory for the block: the message is dropped and counted. */
	attach();
	sess_qos_release_cache();
	uint32_t dropped = sess_dropped(s);
	wisp_mem_fail_after(1, 0); /* the block alone */
	CU_ASSERT_EQUAL(offer(&lim, "d", 1), DELIVERY_DROPPED);
	wisp_mem_fail_after(0, 0);
	CU_ASSERT_EQUAL(last_why, DROP_NO_MEMORY);
	CU_ASSERT_EQUAL(sess_dropped(s), dropped + 1);
	CU_ASSERT_PTR_NULL(s->qos);
}

/* Output over the cap: QoS 1 waits in the queue instead of the output. */
static void test_qos1_queues_while_output_is_full_then_drains(void)
{
	const struct delivery_limits lim = {.max_inflight = 20, .max_queued = 100, .max_output = 40};
	ft->accept_limit = 0;
	for (int i = 0; i < 10; i++)
		offer(&lim, "payload", 1);
	CU_ASSERT(sess_queued_count(s) > 0);
	CU_ASSERT(sess_inflight_count(s) + sess_queued_count(s) == 10);
	size_t before = sess_inflight_count(s);
	ft->accept_limit = SIZE_MAX;
	outq_flush(&c->out, conn_t(c));
	CU_ASSERT(delivery_pump(s, &lim) > 0);
	CU_ASSERT(sess_inflight_count(s) > before);
}

/* [MQTT-4.4.0-1] on resume: unacknowledged PUBLISH again with DUP, PUBREL
 * for those past PUBREC, then the queue in order. */
static void test_resume_resends_window_with_dup_then_queue(void)
{
	const struct delivery_limits lim = {.max_inflight = 2, .max_queued = 10, .max_output = 1u << 20};
	CU_ASSERT_EQUAL(offer(&lim, "q1", 1), DELIVERY_SENT);
	CU_ASSERT_EQUAL(offer(&lim, "q2", 2), DELIVERY_SENT);
	CU_ASSERT_EQUAL(offer(&lim, "q3", 1), DELIVERY_QUEUED);
	struct seen w = flush_and_decode();
	uint16_t id1 = w.id[0], id2 = w.id[1];
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim, id2, 0), 0);
	detach();
	CU_ASSERT_EQUAL(offer(&lim, "q4", 1), DELIVERY_QUEUED);
	attach();
	delivery_resume(s, &lim);
	w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 2);
	CU_ASSERT_EQUAL(w.type[0], MQTT_PKT_PUBLISH);
	CU_ASSERT_EQUAL(w.id[0], id1);
	CU_ASSERT(w.dup[0]);
	CU_ASSERT_STRING_EQUAL(w.payload[0], "q1");
	CU_ASSERT_EQUAL(w.type[1], MQTT_PKT_PUBREL);
	CU_ASSERT_EQUAL(w.id[1], id2);
	/* Completing both lets the queue through, in order, without DUP. */
	delivery_on_puback(s, &lim, id1);
	delivery_on_pubcomp(s, &lim, id2);
	w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 2);
	CU_ASSERT_STRING_EQUAL(w.payload[0], "q3");
	CU_ASSERT_STRING_EQUAL(w.payload[1], "q4");
	CU_ASSERT(!w.dup[0] && !w.dup[1]);
}

/* The broker's PUBREL is handed to the limits' sender (the store's ack
 * queue, which holds it until the PUBCOMP-waiting state is safe), never
 * written past it: on PUBREC, on a repeated PUBREC and at resume. */
struct pubrel_log {
	int calls;
	uint16_t id;
};

static int record_pubrel(void *ctx, struct conn *conn, const uint8_t *bytes, size_t len)
{
	struct pubrel_log *log = ctx;
	CU_ASSERT_PTR_EQUAL(conn, c);
	CU_ASSERT_EQUAL_FATAL(len, 4);
	CU_ASSERT_EQUAL(bytes[0], 0x62); /* PUBREL, flags 0010 [MQTT-3.6.1-1] */
	log->calls++;
	log->id = (uint16_t)(bytes[2] << 8 | bytes[3]);
	return 0;
}

static void test_pubrel_goes_through_the_ack_sender(void)
{
	struct pubrel_log log = {0};
	const struct delivery_limits lim = {.max_inflight = 2, .max_queued = 10, .max_output = 1u << 20,
					    .send_pubrel = record_pubrel, .pubrel_ctx = &log};
	CU_ASSERT_EQUAL(offer(&lim, "q2", 2), DELIVERY_SENT);
	uint16_t id = flush_and_decode().id[0];
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim, id, 0), 0);
	CU_ASSERT_EQUAL(log.calls, 1);
	CU_ASSERT_EQUAL(log.id, id);
	CU_ASSERT_EQUAL(flush_and_decode().n, 0);
	detach();
	attach();
	delivery_resume(s, &lim);
	CU_ASSERT_EQUAL(log.calls, 2);
	CU_ASSERT_EQUAL(log.id, id);
	CU_ASSERT_EQUAL(flush_and_decode().n, 0);
	CU_ASSERT_EQUAL(delivery_on_pubcomp(s, &lim, id), 0);
}

/* A v5 client that comes back with a smaller Maximum Packet Size is not
 * sent an in-flight message over it: discarded as if delivered
 * [MQTT-3.1.2-25], the id free, and what fits still goes. */
static void test_resume_drops_inflight_over_the_new_packet_max(void)
{
	const struct delivery_limits lim = {.max_inflight = 2, .max_queued = 10, .max_output = 1u << 20};
	struct sess_v5 v5 = {0};
	s->v5 = &v5;
	CU_ASSERT_EQUAL(offer(&lim, "a-large-message", 1), DELIVERY_SENT);
	CU_ASSERT_EQUAL(offer(&lim, "small", 2), DELIVERY_SENT);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 2);
	detach();
	v5.packet_max = 16; /* the small one's PUBLISH is 14 bytes, the large one's 24 */
	attach();
	delivery_resume(s, &lim);
	w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 1);
	CU_ASSERT_STRING_EQUAL(w.payload[0], "small");
	CU_ASSERT(w.dup[0]);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 1);
	CU_ASSERT_EQUAL(sess_dropped(s), 1);
	s->v5 = NULL;
}

static bool keep_not_x(void *ctx, const struct session *sess, const struct msg *m)
{
	(void)ctx;
	(void)sess;
	return msg_payload(m)[0] != 'x';
}

/* An access re-check removes refused messages from the window and the
 * queue, keeps a QoS 2 message past PUBREC (delivered already), counts
 * what it removed, and what is left resumes in order. */
static void test_filter_removes_refused_queued_and_inflight(void)
{
	const struct delivery_limits lim = {.max_inflight = 3, .max_queued = 10, .max_output = 1u << 20};
	CU_ASSERT_EQUAL(offer(&lim, "x-rec", 2), DELIVERY_SENT);
	CU_ASSERT_EQUAL(offer(&lim, "x-fly", 1), DELIVERY_SENT);
	CU_ASSERT_EQUAL(offer(&lim, "ok-1", 1), DELIVERY_SENT);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(delivery_on_pubrec(s, &lim, w.id[0], 0), 0); /* x-rec: only its PUBREL is left */
	detach();
	CU_ASSERT_EQUAL(offer(&lim, "x-q", 1), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(offer(&lim, "ok-2", 1), DELIVERY_QUEUED);
	uint64_t dropped = sess_dropped(s);
	CU_ASSERT_EQUAL(delivery_filter(s, &lim, keep_not_x, NULL), 2);
	CU_ASSERT_EQUAL(sess_dropped(s), dropped + 2);
	CU_ASSERT_EQUAL(sess_inflight_count(s), 2);
	CU_ASSERT_EQUAL(sess_queued_count(s), 1);
	attach();
	delivery_resume(s, &lim);
	w = flush_and_decode();
	CU_ASSERT_EQUAL_FATAL(w.n, 3);
	CU_ASSERT_EQUAL(w.type[0], MQTT_PKT_PUBREL);
	CU_ASSERT_STRING_EQUAL(w.payload[1], "ok-1");
	CU_ASSERT(w.dup[1]);
	CU_ASSERT_STRING_EQUAL(w.payload[2], "ok-2");
}

/* [MQTT-4.3.3-2] inbound QoS 2: an id is held from PUBLISH until PUBREL. */
static void test_inbound_qos2_ids_held_until_pubrel(void)
{
	CU_ASSERT_EQUAL(sess_qos2_in_add(s, 7), 1);
	CU_ASSERT_EQUAL(sess_qos2_in_add(s, 7), 0); /* a DUP: not routed again */
	CU_ASSERT_EQUAL(sess_qos2_in_add(s, 8), 1);
	CU_ASSERT_EQUAL(sess_qos2_in_release(s, 7), 1);
	CU_ASSERT_EQUAL(sess_qos2_in_release(s, 7), 0);
	CU_ASSERT_EQUAL(sess_qos2_in_add(s, 7), 1); /* a new message may reuse it */
	for (uint16_t id = 100; id < 100 + SESS_QOS2_IN_MAX; id++)
		sess_qos2_in_add(s, id);
	CU_ASSERT_EQUAL(sess_qos2_in_add(s, 60000), WISP_ELIMIT);
}

/* Control packets queued back to back share items (a client that never
 * reads its PINGRESPs must not cost an item per 2 bytes), and every byte is
 * counted and written in order across short writes, a delivery in between. */
static void test_control_packets_share_items_and_keep_order(void)
{
	const struct delivery_limits lim = {.max_inflight = 5, .max_queued = 10, .max_output = 1u << 20};
	uint8_t ping[2], ack[8];
	CU_ASSERT_EQUAL_FATAL(mqtt_encode_empty(ping, sizeof ping, MQTT_PKT_PINGRESP), 2);
	size_t wire = 0;
	for (uint16_t i = 1; i <= 600; i++) {
		if (i == 300) {
			CU_ASSERT_EQUAL(offer(&lim, "mid", 1), DELIVERY_SENT);
			wire = c->out.bytes;
		}
		struct mqtt_ack a = {.packet_id = i};
		ssize_t n = i % 2 ? mqtt_encode_empty(ack, sizeof ack, MQTT_PKT_PINGRESP)
				  : mqtt_encode_ack(ack, sizeof ack, MQTT_PROTO_V311, MQTT_PKT_PUBACK, &a);
		CU_ASSERT_FATAL(n > 0);
		CU_ASSERT_EQUAL_FATAL(conn_send_bytes(c, ack, (size_t)n), 0);
		wire += (size_t)n;
	}
	CU_ASSERT_EQUAL(c->out.bytes, wire);       /* every queued byte is counted */
	CU_ASSERT(outq_items(&c->out) <= 8);               /* 1800 bytes of acks in a few items */
	/* The subscriber reads 7 bytes at a time: items end mid-packet. */
	for (int turn = 0; turn < 10000 && outq_items(&c->out); turn++) {
		ft->accept_limit = 7;
		outq_flush(&c->out, conn_t(c));
	}
	CU_ASSERT_EQUAL_FATAL(outq_items(&c->out), 0);
	CU_ASSERT_EQUAL(c->out.bytes, 0);
	CU_ASSERT_EQUAL_FATAL(ft->written_len, wire);
	struct mqtt_codec_opts opts = {.version = MQTT_PROTO_V311};
	size_t off = 0;
	for (uint16_t i = 1; i <= 600; i++) {
		struct mqtt_pkt p;
		ssize_t n = mqtt_decode(ft->written + off, ft->written_len - off, &opts, &p);
		CU_ASSERT_FATAL(n > 0);
		off += (size_t)n;
		if (i == 300) {
			CU_ASSERT_EQUAL_FATAL(p.type, MQTT_PKT_PUBLISH);
			n = mqtt_decode(ft->written + off, ft->written_len - off, &opts, &p);
			CU_ASSERT_FATAL(n > 0);
			off += (size_t)n;
		}
		CU_ASSERT_EQUAL_FATAL(p.type, i % 2 ? MQTT_PKT_PINGRESP : MQTT_PKT_PUBACK);
		if (p.type == MQTT_PKT_PUBACK)
			CU_ASSERT_EQUAL(p.u.ack.packet_id, i);
	}
	CU_ASSERT_EQUAL(off, wire);
}

/*
 * The transport contract (transport.h) from outq_flush's side: a short
 * writev from a record transport (TLS: what its records hold) means "call
 * again", so one flush writes everything the transport takes; a short
 * writev that says it would block (TCP's full socket) ends the flush at
 * once, without a second call just to hear WISP_EAGAIN.
 */
static void test_flush_calls_again_after_short_write_until_would_block(void)
{
	const struct delivery_limits lim = {.max_inflight = 5, .max_queued = 10, .max_output = 8u << 20};
	static char payload[4096];
	memset(payload, 'p', sizeof payload);
	for (int i = 0; i < 256; i++) { /* 1 MiB of output */
		struct msg *m = msg_new("t/x", 3, payload, sizeof payload, 0, false);
		CU_ASSERT_PTR_NOT_NULL_FATAL(m);
		CU_ASSERT_EQUAL_FATAL(delivery_offer(s, &lim, m, 0, false, NULL, &last_why), DELIVERY_SENT);
		msg_unref(m);
	}
	size_t wire = c->out.bytes;
	ft->per_call = 16384; /* one TLS record per call */
	ft->writev_calls = 0;
	CU_ASSERT_EQUAL(outq_flush(&c->out, conn_t(c)), 0);
	CU_ASSERT_EQUAL(ft->written_len, wire);
	CU_ASSERT_EQUAL(ft->writev_calls, (wire + 16383) / 16384);
	fake_transport_reset(ft);

	for (int i = 0; i < 256; i++) {
		struct msg *m = msg_new("t/x", 3, payload, sizeof payload, 0, false);
		CU_ASSERT_PTR_NOT_NULL_FATAL(m);
		CU_ASSERT_EQUAL_FATAL(delivery_offer(s, &lim, m, 0, false, NULL, &last_why), DELIVERY_SENT);
		msg_unref(m);
	}
	ft->per_call = 0;
	ft->accept_limit = 100000; /* a socket that fills after 100,000 bytes */
	ft->writev_calls = 0;
	CU_ASSERT_EQUAL(outq_flush(&c->out, conn_t(c)), WISP_EAGAIN);
	CU_ASSERT_EQUAL(ft->written_len, 100000);
	CU_ASSERT_EQUAL(ft->writev_calls, 1);
	CU_ASSERT_EQUAL(conn_t(c)->want, TRANSPORT_WANT_WRITE);
	ft->accept_limit = SIZE_MAX;
	CU_ASSERT_EQUAL(outq_flush(&c->out, conn_t(c)), 0);
	CU_ASSERT_EQUAL(ft->written_len, wire);
}

/*
 * Small deliveries are written whole into shared runs, or staged into one
 * contiguous stretch (outq.c): a run of them is an iovec per run chunk,
 * not 3-4 each; large ones stay by reference; and the bytes are the same,
 * in order, however short the writes.
 */
static void test_small_deliveries_staged_into_one_iovec(void)
{
	const struct delivery_limits lim = {.max_inflight = 200, .max_queued = 10, .max_output = 8u << 20};
	for (int i = 0; i < 100; i++)
		CU_ASSERT_EQUAL(offer(&lim, "small", 1), DELIVERY_SENT);
	size_t hundred = c->out.bytes;
	ft->writev_calls = 0;
	CU_ASSERT_EQUAL(outq_flush(&c->out, conn_t(c)), 0);
	CU_ASSERT_EQUAL(ft->writev_calls, 1);
	CU_ASSERT(ft->last_iovcnt >= 1 && (size_t)ft->last_iovcnt <= hundred / 256 + 1);
	fake_transport_reset(ft);
	delivery_clear(s, &lim);

	/* Small, large, control bytes, small: written byte for byte in order,
	 * 7 bytes at a time, the large payload by reference (three pieces). */
	static char big[1000];
	memset(big, 'B', sizeof big);
	struct msg *large = msg_new("t/x", 3, big, sizeof big, 1, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(large);
	s->next_packet_id = 0;
	CU_ASSERT_EQUAL(offer(&lim, "s1", 1), DELIVERY_SENT);
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, large, 1, false, NULL, &last_why), DELIVERY_SENT);
	msg_unref(large);
	uint8_t ping[2];
	CU_ASSERT_EQUAL_FATAL(mqtt_encode_empty(ping, sizeof ping, MQTT_PKT_PINGRESP), 2);
	CU_ASSERT_EQUAL(conn_send_bytes(c, ping, sizeof ping), 0);
	CU_ASSERT_EQUAL(offer(&lim, "s2", 0), DELIVERY_SENT);
	size_t wire = c->out.bytes;
	ft->accept_limit = SIZE_MAX;
	CU_ASSERT_EQUAL(outq_flush(&c->out, conn_t(c)), 0);
	CU_ASSERT_EQUAL(ft->last_iovcnt, 6); /* s1 | head | topic | id | payload | ping + s2 */
	uint8_t *whole = malloc(wire);
	CU_ASSERT_PTR_NOT_NULL_FATAL(whole);
	CU_ASSERT_EQUAL_FATAL(ft->written_len, wire);
	memcpy(whole, ft->written, wire);
	fake_transport_reset(ft);
	/* The same output again, drained 7 bytes a call. */
	delivery_clear(s, &lim);
	s->next_packet_id = 0;
	large = msg_new("t/x", 3, big, sizeof big, 1, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(large);
	CU_ASSERT_EQUAL(offer(&lim, "s1", 1), DELIVERY_SENT);
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, large, 1, false, NULL, &last_why), DELIVERY_SENT);
	msg_unref(large);
	CU_ASSERT_EQUAL(conn_send_bytes(c, ping, sizeof ping), 0);
	CU_ASSERT_EQUAL(offer(&lim, "s2", 0), DELIVERY_SENT);
	for (int turn = 0; turn < 10000 && outq_items(&c->out); turn++) {
		ft->accept_limit = 7;
		outq_flush(&c->out, conn_t(c));
	}
	ft->accept_limit = SIZE_MAX;
	CU_ASSERT_EQUAL(outq_items(&c->out), 0);
	CU_ASSERT_EQUAL_FATAL(ft->written_len, wire);
	CU_ASSERT(memcmp(ft->written, whole, wire) == 0);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(w.n, 4);
	CU_ASSERT_STRING_EQUAL(w.payload[0], "s1");
	CU_ASSERT_EQUAL(w.type[2], MQTT_PKT_PINGRESP);
	CU_ASSERT_STRING_EQUAL(w.payload[3], "s2");
	free(whole);
}

/*
 * A delivery of at most 128 bytes on the wire is copied whole into the
 * queue (outq.c's RUN_PUBLISH): the queue holds no reference to the
 * message, so the message goes back to its free list when its last
 * session lets go, not when the subscriber's socket drains. A larger
 * one is held by reference, its payload never copied per subscriber.
 */
static void test_small_delivery_holds_no_message_reference(void)
{
	const struct delivery_limits lim = {.max_inflight = 10, .max_queued = 10, .max_output = 8u << 20};
	struct msg *m = mk("small", 0);
	CU_ASSERT_EQUAL_FATAL(delivery_offer(s, &lim, m, 0, false, NULL, &last_why), DELIVERY_SENT);
	CU_ASSERT_EQUAL(m->refcnt, 1);
	msg_unref(m);
	static char big[200];
	memset(big, 'B', sizeof big);
	struct msg *large = msg_new("t/x", 3, big, sizeof big, 0, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(large);
	CU_ASSERT_EQUAL_FATAL(delivery_offer(s, &lim, large, 0, false, NULL, &last_why), DELIVERY_SENT);
	CU_ASSERT_EQUAL(large->refcnt, 2);
	msg_unref(large);
	struct seen w = flush_and_decode();
	CU_ASSERT_EQUAL(w.n, 2);
	CU_ASSERT_STRING_EQUAL(w.payload[0], "small");
}

/* Small message blocks are recycled by size class (msg.c): creating and
 * dropping messages allocates nothing once warm, at every class boundary,
 * the contents stay intact, and a large message still gets its own block. */
static void test_small_messages_recycled_by_size_class(void)
{
	static char body[200];
	for (size_t i = 0; i < sizeof body; i++)
		body[i] = (char)('a' + i % 26);
	/* A 40-byte header and a 3-byte topic: payloads that end each class
	 * exactly, one byte past it, and beyond the largest. */
	static const size_t sizes[] = {0, 21, 22, 53, 54, 85, 86, 150};
	for (int round = 0; round < 2; round++) {
		if (round == 1)
			wisp_mem_fail_after(1, 1); /* warm: nothing small may allocate */
		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			struct msg *m = msg_new("t/x", 3, body, sizes[i], 1, false);
			if (round == 1 && sizes[i] > 85) {
				CU_ASSERT_PTR_NULL(m); /* 40 + 3 + 86 > 128: its own malloc, which fails */
				continue;
			}
			CU_ASSERT_PTR_NOT_NULL_FATAL(m);
			CU_ASSERT_EQUAL(m->payload_len, sizes[i]);
			CU_ASSERT(memcmp(msg_topic(m), "t/x", 3) == 0);
			CU_ASSERT(memcmp(msg_payload(m), body, sizes[i]) == 0);
			CU_ASSERT_EQUAL(m->refcnt, 1);
			CU_ASSERT_PTR_NULL(m->stored);
			msg_unref(m);
		}
		wisp_mem_fail_after(0, 0);
	}
	msg_release_cache();
}

/* limits.max_queued_bytes_total: the queues of all sessions together. */
static void test_total_queued_bytes_bound_all_sessions(void)
{
	struct msg *m = mk("0123456789", 1);
	struct delivery_totals totals = {0}, *t = &totals;
	const struct delivery_limits lim = {.max_inflight = 5, .max_queued = 100, .max_output = 1u << 20,
					    .max_queued_bytes_total = 3 * msg_size(m), .totals = t};
	uint64_t queued0 = t->queued_bytes;
	tab.dlim = &lim; /* sessions that end give their queued bytes back to these totals */
	struct session *s2 = sess_create(&tab, "sub2", 4, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
	enum drop_reason why = DROP_REASON_COUNT;
	detach(); /* both offline: everything queues */
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 1, false, NULL, &why), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(delivery_offer(s2, &lim, m, 1, false, NULL, &why), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 1, false, NULL, &why), DELIVERY_QUEUED);
	CU_ASSERT_EQUAL(delivery_offer(s2, &lim, m, 1, false, NULL, &why), DELIVERY_DROPPED);
	CU_ASSERT_EQUAL(why, DROP_QUEUE_TOTAL);
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 1, false, NULL, &why), DELIVERY_DROPPED);
	CU_ASSERT_EQUAL(t->queued_bytes - queued0, 3 * msg_size(m));
	CU_ASSERT_EQUAL(t->episode_dropped, 2);
	CU_ASSERT(t->full);
	CU_ASSERT_EQUAL(sess_dropped(s) + sess_dropped(s2), 2);
	/* A session that ends gives its share back; the episode ends under 3/4. */
	sess_destroy(&tab, tree, s);
	s = NULL;
	CU_ASSERT_EQUAL(t->queued_bytes - queued0, msg_size(m));
	CU_ASSERT_EQUAL(delivery_offer(s2, &lim, m, 1, false, NULL, &why), DELIVERY_QUEUED);
	CU_ASSERT(!t->full);
	sess_destroy(&tab, tree, s2);
	CU_ASSERT_EQUAL(t->queued_bytes, queued0);
	tab.dlim = NULL;
	msg_unref(m);
}

/* Gives the connection a carried buffer whose head says `cap` bytes (the
 * capacity is the block's, conn.h), as input.c's resizing leaves it. */
static void fake_rbuf(size_t cap)
{
	if (!c->rbuf) {
		uint8_t *block = wisp_malloc(CONN_RBUF_HEADROOM + 16);
		CU_ASSERT_PTR_NOT_NULL_FATAL(block);
		c->rbuf = block + CONN_RBUF_HEADROOM;
		conn_rbuf_head(c)->len = 0;
	}
	conn_rbuf_head(c)->cap = (uint32_t)cap;
}

/* Input held before CONNECT is counted in the set while the connection is
 * unauthenticated, and given back when CONNECT is accepted or it closes. */
static void test_unauthenticated_input_is_counted_until_connect(void)
{
	struct loop *l = loop_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(l);
	set.unauth_bytes = 0;
	c->state = CONN_AWAIT_CONNECT;
	conn_account_rbuf(c, 256);
	fake_rbuf(256);
	conn_account_rbuf(c, 1024);
	fake_rbuf(1024);
	CU_ASSERT_EQUAL(set.unauth_bytes, 1024);
	c->state = CONN_ACTIVE; /* CONNECT accepted */
	conn_unauth_release(c);
	conn_unauth_release(c);
	CU_ASSERT_EQUAL(set.unauth_bytes, 0);
	conn_account_rbuf(c, 2048); /* an authenticated client's buffer is its own */
	CU_ASSERT_EQUAL(set.unauth_bytes, 0);
	fake_rbuf(0);
	c->state = CONN_AWAIT_CONNECT;
	conn_account_rbuf(c, 512);
	fake_rbuf(512);
	CU_ASSERT_EQUAL(set.unauth_bytes, 512);
	c->sess = NULL;
	s->conn = NULL;
	conn_close(l, c); /* refused before CONNECT */
	CU_ASSERT_EQUAL(set.unauth_bytes, 0);
	conn_free(c);
	c = NULL;
	loop_free(l);
}

/* Decodes the one PUBLISH written since the last reset. */
static struct mqtt_publish decode_one(uint8_t version, struct mqtt_pkt *pkt)
{
	outq_flush(&c->out, conn_t(c));
	struct mqtt_codec_opts opts = {.version = version};
	CU_ASSERT_FATAL(mqtt_decode(ft->written, ft->written_len, &opts, pkt) == (ssize_t)ft->written_len);
	CU_ASSERT_FATAL(pkt->type == MQTT_PKT_PUBLISH);
	return pkt->u.publish;
}

/*
 * A message's v5 properties are one copy, sent after each v5 delivery's own
 * (its Subscription Identifiers [MQTT-3.3.4-3]), unchanged and in order
 * [MQTT-3.3.2-17] [MQTT-3.3.2-18]; a 3.1.1 subscriber gets none. Steady-state
 * QoS 0 fan-out allocates nothing, v5 identifiers included.
 */
static void test_v5_properties_shared_and_per_delivery_parts(void)
{
	const struct delivery_limits lim = {.max_inflight = 5, .max_queued = 10, .max_output = 8u << 20};
	uint8_t props[64];
	size_t plen = 0;
	CU_ASSERT_FATAL(mqtt_props_put_str(props, sizeof props, &plen, MQTT_PROP_RESPONSE_TOPIC,
					   (struct mqtt_str){(const uint8_t *)"re/ply", 6}) == 0);
	CU_ASSERT_FATAL(mqtt_props_put_pair(props, sizeof props, &plen, (struct mqtt_str){(const uint8_t *)"k", 1},
					    (struct mqtt_str){(const uint8_t *)"v", 1}) == 0);
	struct msg_spec spec = {.topic = "t/v5", .topic_len = 4, .props = props, .props_len = plen,
				.payload = "body", .payload_len = 4};
	struct msg *m = msg_create(&spec);
	CU_ASSERT_FATAL(m != NULL);
	const uint32_t id = 42;
	const struct delivery_sub_ids ids = {&id, 1};
	struct mqtt_pkt pkt;

	c->version = MQTT_PROTO_V5;
	fake_transport_reset(ft);
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 0, false, &ids, &last_why), DELIVERY_SENT);
	struct mqtt_publish p = decode_one(MQTT_PROTO_V5, &pkt);
	CU_ASSERT(p.topic.len == 4 && memcmp(p.topic.ptr, "t/v5", 4) == 0);
	CU_ASSERT(p.payload.len == 4 && memcmp(p.payload.ptr, "body", 4) == 0);
	CU_ASSERT_EQUAL(p.props.subscription_id, 42);
	/* The subscriber's identifier first, then the publisher's block as it came. */
	CU_ASSERT_EQUAL_FATAL(p.props.raw.len, 2 + plen);
	CU_ASSERT(memcmp(p.props.raw.ptr + 2, props, plen) == 0);

	c->version = MQTT_PROTO_V311;
	fake_transport_reset(ft);
	CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 0, false, &ids, &last_why), DELIVERY_SENT);
	p = decode_one(MQTT_PROTO_V311, &pkt);
	CU_ASSERT(p.topic.len == 4 && memcmp(p.topic.ptr, "t/v5", 4) == 0);
	CU_ASSERT(p.payload.len == 4 && memcmp(p.payload.ptr, "body", 4) == 0);

	/* Warm the free list, then the same fan-out again allocates nothing. */
	c->version = MQTT_PROTO_V5;
	for (int round = 0; round < 2; round++) {
		size_t before = wisp_mem_used();
		for (int i = 0; i < 100; i++)
			CU_ASSERT_EQUAL(delivery_offer(s, &lim, m, 0, false, &ids, &last_why), DELIVERY_SENT);
		outq_flush(&c->out, conn_t(c));
		fake_transport_reset(ft);
		if (round == 1)
			CU_ASSERT_EQUAL(wisp_mem_used(), before);
	}
	c->version = MQTT_PROTO_V311;
	msg_unref(m);
}

static CU_TestInfo delivery_tests[] = {
	{"v5 properties: one shared copy, per-delivery parts apart, no allocation per QoS 0 delivery",
	 test_v5_properties_shared_and_per_delivery_parts},
	{"window bounds in-flight, queue drains in order [MQTT-4.6.0]", test_window_bounds_inflight_and_queue_drains_in_order},
	{"PUBACK for an unknown or repeated id is ignored", test_puback_for_unknown_or_repeated_id_is_ignored},
	{"QoS 2 outbound state machine [MQTT-4.3.3]", test_qos2_outbound_state_machine},
	{"a PUBREC error ends the flow without PUBREL [MQTT-4.3.3-4]", test_pubrec_error_ends_the_flow},
	{"an ack of the wrong kind matches nothing", test_ack_of_the_wrong_kind_matches_nothing},
	{"packet ids wrap and skip ids in use [MQTT-2.3.1-2]", test_packet_ids_wrap_and_skip_ids_in_use},
	{"wide window across the wrap at 65535, acked out of order [MQTT-2.3.1-2]",
	 test_wide_window_across_the_wrap_acked_out_of_order},
	{"Receive Maximum bounds the window [MQTT-3.3.4-9]", test_receive_maximum_window},
	{"id index out of memory: dropped when direct, kept when queued", test_index_out_of_memory},
	{"QoS 1 steady state allocates nothing", test_qos1_steady_state_allocates_nothing},
	{"offline queue bounded by count", test_offline_queue_is_bounded_by_count},
	{"offline queue: max_queued 0 means unlimited", test_offline_queue_zero_means_unlimited},
	{"offline queue bounded by bytes, messages shared", test_offline_queue_is_bounded_by_bytes},
	{"QoS 0 dropped when offline or output full", test_qos0_dropped_when_offline_or_output_full},
	{"QoS 1/2 state held only while something is queued or in flight", test_qos_state_exists_only_while_used},
	{"QoS 1 queues while output is full, then drains", test_qos1_queues_while_output_is_full_then_drains},
	{"resume re-sends window with DUP, then queue [MQTT-4.4.0-1]", test_resume_resends_window_with_dup_then_queue},
	{"PUBREL goes through the limits' ack sender [MQTT-4.3.3-1]", test_pubrel_goes_through_the_ack_sender},
	{"resume drops in-flight messages over a new Maximum Packet Size [MQTT-3.1.2-25]",
	 test_resume_drops_inflight_over_the_new_packet_max},
	{"inbound QoS 2 ids held until PUBREL [MQTT-4.3.3-2]", test_inbound_qos2_ids_held_until_pubrel},
	{"filter removes refused queued and in-flight messages", test_filter_removes_refused_queued_and_inflight},
	{"control packets share items, counted and in order", test_control_packets_share_items_and_keep_order},
	{"flush calls again after a short write, until would-block", test_flush_calls_again_after_short_write_until_would_block},
	{"small deliveries staged into one iovec, same bytes across short writes",
	 test_small_deliveries_staged_into_one_iovec},
	{"a small delivery holds no reference to its message", test_small_delivery_holds_no_message_reference},
	{"small messages recycled by size class, large ones allocated", test_small_messages_recycled_by_size_class},
	{"max_queued_bytes_total bounds all sessions together", test_total_queued_bytes_bound_all_sessions},
	{"input before CONNECT counted until CONNECT or close", test_unauthenticated_input_is_counted_until_connect},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"delivery", NULL, NULL, set_up, tear_down, delivery_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
