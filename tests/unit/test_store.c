/*
 * The durable store: record encoding, replay after reopen, recovery from
 * torn tails and damaged middles, compaction (and a crash in the middle of
 * one), fsync policies and the directory lock. Every test works in its own
 * scratch directory under /tmp; replayed state is compared as a text trace
 * (one line per record), so a failure shows what differs.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit_main.h"
#include "alloc.h"
#include "err.h"
#include "log.h"
#include "scan.h"
#include "store.h"
#include "store_int.h" /* the log fd, to make its disk fail */

#define S(lit) ((struct store_str){(lit), sizeof(lit) - 1})
#define B(lit) ((struct store_bytes){(const uint8_t *)(lit), sizeof(lit) - 1})

/* ---- scratch directory ---- */

static char dir[64];

static void rm_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char p[512];
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", path, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(path);
}

static void set_up(void)
{
	strcpy(dir, "/tmp/wisp-test-store-XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
}

static void tear_down(void) { rm_dir(dir); }

static char *path_of(const char *name)
{
	static char p[512];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return p;
}

static bool file_exists(const char *name)
{
	struct stat st;
	return stat(path_of(name), &st) == 0;
}

static long file_size(const char *name)
{
	struct stat st;
	return stat(path_of(name), &st) == 0 ? (long)st.st_size : -1;
}

/* ---- text traces ---- */

struct trace {
	char *buf;
	size_t len, cap;
	long live; /* message handles not yet released */
	int fail_at; /* callback number that fails with WISP_ENOMEM (0: never) */
	int calls;
};

static void tprintf(struct trace *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tprintf(struct trace *t, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		t->cap = t->cap ? t->cap * 2 : 4096;
		t->buf = realloc(t->buf, t->cap);
		if (t->buf == NULL)
			abort();
	}
}

static void tstr(struct trace *t, struct store_str s) { tprintf(t, "'%.*s'", (int)s.len, s.ptr ? s.ptr : ""); }

static void thex(struct trace *t, struct store_bytes b)
{
	tprintf(t, "#");
	for (size_t i = 0; i < b.len; i++)
		tprintf(t, "%02x", b.ptr[i]);
}

static void fmt_rec(struct trace *t, const struct store_rec *r)
{
	tprintf(t, "%s", store_rec_type_name(r->type));
	switch (r->type) {
	case STORE_REC_MSG_PUT:
		tprintf(t, " id=%" PRIu64 " exp=%" PRIu64 " q=%u f=%u t=", r->u.msg.id, r->u.msg.expiry,
			r->u.msg.qos, r->u.msg.flags);
		tstr(t, r->u.msg.topic);
		thex(t, r->u.msg.props);
		thex(t, r->u.msg.payload);
		break;
	case STORE_REC_MSG_DEL:
		tprintf(t, " id=%" PRIu64, r->u.msg_id);
		break;
	case STORE_REC_RETAIN_SET:
		tprintf(t, " id=%" PRIu64 " ", r->u.retain.msg_id);
		/* fall through */
	case STORE_REC_RETAIN_DEL:
		tstr(t, r->u.retain.topic);
		break;
	case STORE_REC_SESSION_PUT:
		tstr(t, r->u.session.client);
		tprintf(t, " v=%u f=%u pid=%u exp=%u", r->u.session.proto, r->u.session.flags,
			r->u.session.next_packet_id, r->u.session.expiry_s);
		if (r->u.session.owner != STORE_OWNER_NONE) {
			tprintf(t, " owner=%u ", r->u.session.owner);
			tstr(t, r->u.session.owner_name);
		}
		if (r->u.session.claim_ns)
			tprintf(t, " claim=%llu", (unsigned long long)r->u.session.claim_ns);
		break;
	case STORE_REC_SESSION_DEL:
		tstr(t, r->u.session.client);
		break;
	case STORE_REC_SUB_ADD:
	case STORE_REC_SUB_DEL:
		tstr(t, r->u.sub.client);
		tstr(t, r->u.sub.filter);
		if (r->type == STORE_REC_SUB_ADD)
			tprintf(t, " o=%u sid=%u", r->u.sub.options, r->u.sub.sub_id);
		break;
	case STORE_REC_QUEUE_ADD:
	case STORE_REC_QUEUE_DEL:
		tstr(t, r->u.queue.client);
		tprintf(t, " id=%" PRIu64, r->u.queue.msg_id);
		if (r->type == STORE_REC_QUEUE_ADD)
			tprintf(t, " q=%u f=%u", r->u.queue.qos, r->u.queue.flags);
		break;
	case STORE_REC_FLIGHT_SET:
		tstr(t, r->u.flight.client);
		tprintf(t, " id=%" PRIu64 " pid=%u st=%u q=%u f=%u", r->u.flight.msg_id, r->u.flight.packet_id,
			r->u.flight.state, r->u.flight.qos, r->u.flight.flags);
		break;
	case STORE_REC_FLIGHT_DEL:
		tstr(t, r->u.flight.client);
		tprintf(t, " pid=%u", r->u.flight.packet_id);
		break;
	case STORE_REC_FWD_ADD:
	case STORE_REC_FWD_DEL:
		tprintf(t, "id=%" PRIu64 " ", r->u.fwd.msg_id);
		tstr(t, r->u.fwd.id);
		break;
	case STORE_REC_STREAM_TAKEN:
		tprintf(t, "floor=%" PRIu64 " seq=%" PRIu64 " stamp=%" PRIu64, r->u.taken.floor, r->u.taken.seq,
			r->u.taken.stamp);
		break;
	case STORE_REC_RETAIN_UNSENT:
	case STORE_REC_RETAIN_SENT:
		tstr(t, r->u.mark.topic);
		tstr(t, r->u.mark.id);
		break;
	default:
		tstr(t, r->u.qos2.client);
		tprintf(t, " pid=%u", r->u.qos2.packet_id);
		break;
	}
	tprintf(t, "\n");
}

static void trace_free(struct trace *t) { free(t->buf); }

static const char *trace_of(struct trace *t, const struct store_rec *recs, size_t n, size_t skip)
{
	tprintf(t, "%s", "");
	/* MSG_DEL has no callback: the engine turns it into msg_release. */
	for (size_t i = 0; i < n; i++)
		if (i != skip && recs[i].type != STORE_REC_MSG_DEL)
			fmt_rec(t, &recs[i]);
	return t->buf;
}

/* Visitor: every callback formats the record it got into the trace. */
static int tick(struct trace *t) { return ++t->calls == t->fail_at ? WISP_ENOMEM : 0; }

static int v_msg_put(void *ctx, const struct store_msg *m, void **h)
{
	struct trace *t = ctx;
	struct store_rec r = {.type = STORE_REC_MSG_PUT, .u.msg = *m};
	if (tick(t))
		return WISP_ENOMEM;
	uint64_t *id = malloc(sizeof *id);
	*id = m->id;
	*h = id;
	t->live++;
	fmt_rec(t, &r);
	return 0;
}

static void v_msg_release(void *ctx, void *h)
{
	struct trace *t = ctx;
	t->live--;
	free(h);
}

static int check_handle(void *h, uint64_t id)
{
	CU_ASSERT(id == 0 ? h == NULL : (h != NULL && *(uint64_t *)h == id));
	return 0;
}

#define V_SIMPLE(fn, TYPE, field, stype)                                        \
	static int fn(void *ctx, const stype *x)                                \
	{                                                                       \
		struct store_rec r = {.type = 0};                               \
		r.u.field = *x;                                                 \
		r.type = (TYPE);                                                \
		if (tick(ctx))                                                  \
			return WISP_ENOMEM;                                     \
		fmt_rec(ctx, &r);                                               \
		return 0;                                                       \
	}
V_SIMPLE(v_retain_del, STORE_REC_RETAIN_DEL, retain, struct store_retain)
V_SIMPLE(v_session_put, STORE_REC_SESSION_PUT, session, struct store_session)
V_SIMPLE(v_session_del, STORE_REC_SESSION_DEL, session, struct store_session)
V_SIMPLE(v_sub_add, STORE_REC_SUB_ADD, sub, struct store_sub)
V_SIMPLE(v_sub_del, STORE_REC_SUB_DEL, sub, struct store_sub)
V_SIMPLE(v_queue_del, STORE_REC_QUEUE_DEL, queue, struct store_queue)
V_SIMPLE(v_flight_del, STORE_REC_FLIGHT_DEL, flight, struct store_flight)
V_SIMPLE(v_qos2_add, STORE_REC_QOS2_IN_ADD, qos2, struct store_qos2)
V_SIMPLE(v_qos2_del, STORE_REC_QOS2_IN_DEL, qos2, struct store_qos2)
V_SIMPLE(v_will_set, STORE_REC_WILL_SET, will, struct store_will)
V_SIMPLE(v_will_del, STORE_REC_WILL_DEL, will, struct store_will)
V_SIMPLE(v_fwd_del, STORE_REC_FWD_DEL, fwd, struct store_fwd)
V_SIMPLE(v_stream_taken, STORE_REC_STREAM_TAKEN, taken, struct store_stream_taken)
V_SIMPLE(v_retain_unsent, STORE_REC_RETAIN_UNSENT, mark, struct store_retain_mark)
V_SIMPLE(v_retain_sent, STORE_REC_RETAIN_SENT, mark, struct store_retain_mark)

static int v_fwd_add(void *ctx, const struct store_fwd *x, void *h)
{
	struct store_rec r = {.type = STORE_REC_FWD_ADD, .u.fwd = *x};
	check_handle(h, x->msg_id);
	if (tick(ctx))
		return WISP_ENOMEM;
	fmt_rec(ctx, &r);
	return 0;
}

static int v_queue_add(void *ctx, const struct store_queue *x, void *h)
{
	struct store_rec r = {.type = STORE_REC_QUEUE_ADD, .u.queue = *x};
	check_handle(h, x->msg_id);
	if (tick(ctx))
		return WISP_ENOMEM;
	fmt_rec(ctx, &r);
	return 0;
}

static int v_flight_set(void *ctx, const struct store_flight *x, void *h)
{
	struct store_rec r = {.type = STORE_REC_FLIGHT_SET, .u.flight = *x};
	check_handle(h, x->msg_id);
	if (tick(ctx))
		return WISP_ENOMEM;
	fmt_rec(ctx, &r);
	return 0;
}

static int v_retain_set_fmt(void *ctx, const struct store_retain *x, void *h)
{
	struct store_rec r = {.type = STORE_REC_RETAIN_SET, .u.retain = *x};
	check_handle(h, x->msg_id);
	if (tick(ctx))
		return WISP_ENOMEM;
	fmt_rec(ctx, &r);
	return 0;
}

static const struct store_visitor tracer = {
	.msg_put = v_msg_put,
	.msg_release = v_msg_release,
	.retain_set = v_retain_set_fmt,
	.retain_del = v_retain_del,
	.session_put = v_session_put,
	.session_del = v_session_del,
	.sub_add = v_sub_add,
	.sub_del = v_sub_del,
	.queue_add = v_queue_add,
	.queue_del = v_queue_del,
	.flight_set = v_flight_set,
	.flight_del = v_flight_del,
	.qos2_in_add = v_qos2_add,
	.qos2_in_del = v_qos2_del,
	.will_set = v_will_set,
	.will_del = v_will_del,
	.fwd_add = v_fwd_add,
	.fwd_del = v_fwd_del,
	.stream_taken = v_stream_taken,
	.retain_unsent = v_retain_unsent,
	.retain_sent = v_retain_sent,
};

/* ---- sample records: one or more of every type, in a replayable order ---- */

static const uint8_t props1[] = {0x02, 0x00, 0x00, 0x00, 0x3c};

static const struct store_rec samples[] = {
	{.type = STORE_REC_MSG_PUT,
	 .u.msg = {.id = 7, .expiry = 1700000000, .qos = 2, .flags = STORE_MSG_RETAIN, .topic = S("a/b"),
		   .props = {props1, sizeof props1}, .payload = B("hello")}},
	{.type = STORE_REC_MSG_PUT, .u.msg = {.id = 8, .qos = 1, .topic = S("x")}},
	{.type = STORE_REC_RETAIN_SET, .u.retain = {S("a/b"), 7}},
	{.type = STORE_REC_RETAIN_DEL, .u.retain = {S("x/y"), 0}},
	{.type = STORE_REC_SESSION_PUT, .u.session = {S("c1"), 5, 1, 42, 3600, STORE_OWNER_NONE, {NULL, 0}}},
	{.type = STORE_REC_SUB_ADD, .u.sub = {S("c1"), S("a/#"), 0x02, 17}},
	{.type = STORE_REC_SUB_ADD, .u.sub = {S("c1"), S("x"), 0x01, 0}},
	{.type = STORE_REC_SUB_DEL, .u.sub = {S("c1"), S("x"), 0, 0}},
	{.type = STORE_REC_QUEUE_ADD, .u.queue = {S("c1"), 8, 1, 0}},
	{.type = STORE_REC_FLIGHT_SET,
	 .u.flight = {S("c1"), 7, 10, STORE_FLIGHT_WAIT_PUBREC, 2, STORE_MSG_RETAIN | STORE_MSG_DUP}},
	{.type = STORE_REC_FLIGHT_SET, .u.flight = {S("c1"), 0, 11, STORE_FLIGHT_WAIT_PUBCOMP, 2, 0}},
	{.type = STORE_REC_QUEUE_DEL, .u.queue = {S("c1"), 8, 0, 0}},
	{.type = STORE_REC_FWD_ADD, .u.fwd = {8, S("a-0123456789abcdef-f1")}},
	{.type = STORE_REC_FWD_DEL, .u.fwd = {8, {NULL, 0}}},
	{.type = STORE_REC_STREAM_TAKEN, .u.taken = {41, 44, 0}},
	{.type = STORE_REC_STREAM_TAKEN, .u.taken = {0, 1, 0}},
	/* Version 2: the newest time stamp routed. */
	{.type = STORE_REC_STREAM_TAKEN, .u.taken = {41, 45, 1764000000123456789ull}},
	{.type = STORE_REC_RETAIN_UNSENT, .u.mark = {S("a/b"), S("a-r-0123456789abcdef-1")}},
	{.type = STORE_REC_RETAIN_UNSENT, .u.mark = {S("x/y"), S("a-r-0123456789abcdef-2")}},
	{.type = STORE_REC_RETAIN_SENT, .u.mark = {S("a/b"), {NULL, 0}}},
	{.type = STORE_REC_FLIGHT_DEL, .u.flight = {S("c1"), 0, 10, 0, 0, 0}},
	{.type = STORE_REC_QOS2_IN_ADD, .u.qos2 = {S("c1"), 99}},
	{.type = STORE_REC_QOS2_IN_DEL, .u.qos2 = {S("c1"), 99}},
	{.type = STORE_REC_MSG_DEL, .u.msg_id = 8},
	{.type = STORE_REC_SESSION_PUT, .u.session = {S(""), 4, 0, 1, 0, STORE_OWNER_NONE, {NULL, 0}}},
	/* Version 2: the owner, a user (also one with an empty name) or anonymous. */
	{.type = STORE_REC_SESSION_PUT, .u.session = {S("c1"), 4, 0, 42, 0, STORE_OWNER_USER, S("alice")}},
	{.type = STORE_REC_SESSION_PUT, .u.session = {S("c2"), 4, 0, 1, 0, STORE_OWNER_USER, S("")}},
	{.type = STORE_REC_SESSION_PUT, .u.session = {S("c3"), 5, 0, 9, 60, STORE_OWNER_ANONYMOUS, {NULL, 0}}},
	{.type = STORE_REC_SESSION_PUT, .u.session = {S("c4"), 4, 0, 3, 0, STORE_OWNER_NONE, {NULL, 0}, 1764000000000000001ull}},
	{.type = STORE_REC_SESSION_PUT, .u.session = {S("c5"), 5, 0, 3, 60, STORE_OWNER_USER, S("bob"), 1}},
	{.type = STORE_REC_WILL_SET,
	 .u.will = {S("c3"), 30, 60, 1, STORE_MSG_RETAIN, S("w/t"), {(const uint8_t *)"\x03\x00\x01t", 4},
		    {(const uint8_t *)"bye", 3}}},
	{.type = STORE_REC_WILL_SET, .u.will = {S("c3"), 0, 0, 0, 0, S("w/u"), {NULL, 0}, {NULL, 0}}},
	{.type = STORE_REC_WILL_DEL, .u.will = {S("c3"), 0, 0, 0, 0, {NULL, 0}, {NULL, 0}, {NULL, 0}}},
	{.type = STORE_REC_SESSION_DEL, .u.session = {S("c1"), 0, 0, 0, 0, STORE_OWNER_NONE, {NULL, 0}}},
};
#define NSAMPLES (sizeof samples / sizeof samples[0])

/* ---- helpers ---- */

static struct store *open_store(enum store_fsync mode)
{
	struct store_options o = {.dir = dir, .fsync = mode};
	struct store *s = NULL;
	char err[256];
	int rc = store_open(&o, &s, err, sizeof err);
	CU_ASSERT_EQUAL(rc, 0);
	return rc == 0 ? s : NULL;
}

static struct store *open_load(enum store_fsync mode, struct trace *t, struct store_load_stats *st)
{
	char err[512] = "";
	struct store *s = open_store(mode);
	if (s == NULL)
		return NULL;
	int rc = store_load(s, &tracer, t, st, err, sizeof err);
	CU_ASSERT_EQUAL(rc, 0);
	if (rc != 0) {
		fprintf(stderr, "load: %s\n", err);
		store_close(s);
		return NULL;
	}
	CU_ASSERT_EQUAL(t->live, 0);
	return s;
}

/* Writes a store file by hand; offs[i] is the offset of record i, offs[n] the end. */
static void write_file(const char *name, enum store_file_kind kind, uint64_t gen,
		       const struct store_rec *recs, size_t n, size_t *offs)
{
	uint8_t buf[1 << 14];
	size_t len = STORE_FILE_HDR;
	store_file_header_encode(kind, gen, 0x5eedu, buf);
	for (size_t i = 0; i < n; i++) {
		if (offs)
			offs[i] = len;
		ssize_t k = store_rec_encode(&recs[i], 0x5eedu, buf + len, sizeof buf - len);
		CU_ASSERT_FATAL(k > 0);
		len += (size_t)k;
	}
	if (offs)
		offs[n] = len;
	FILE *f = fopen(path_of(name), "wb");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(fwrite(buf, 1, len, f), len);
	fclose(f);
}

static uint8_t *read_all(const char *name, size_t *len)
{
	FILE *f = fopen(path_of(name), "rb");
	uint8_t *p;
	long n;
	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n + 1);
	*len = fread(p, 1, (size_t)n, f);
	fclose(f);
	return p;
}

static void write_all_bytes(const char *name, const uint8_t *p, size_t len)
{
	FILE *f = fopen(path_of(name), "wb");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(fwrite(p, 1, len, f), len);
	fclose(f);
}

static void append_all(struct store *s, const struct store_rec *recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		CU_ASSERT_EQUAL(store_append(s, &recs[i]), 0);
}

#define LOG1 "log.0000000000000001"
#define LOG2 "log.0000000000000002"
#define SNAP1 "snap.0000000000000001"
#define SNAP2 "snap.0000000000000002"

/* Bounded wait (at most 30 s) for the helper thread; no timing asserted. */
static uint64_t wait_durable(struct store *s, uint64_t want, int *fired)
{
	uint64_t d = 0;
	for (int i = 0; i < 300; i++) {
		struct pollfd p = {.fd = store_durable_fd(s), .events = POLLIN};
		if (poll(&p, 1, 100) == 1 && fired)
			*fired = 1;
		d = store_durable_seq(s);
		if (d >= want)
			break;
	}
	return d;
}

/* ---- tests ---- */

static void test_crc32c_check_value(void)
{
	/* The CRC-32C check value from the CRC catalogue / RFC 3720. */
	CU_ASSERT_EQUAL(store_crc32c(0, "123456789", 9), 0xE3069283u);
	CU_ASSERT_EQUAL(store_crc32c(0, "", 0), 0u);
	/* Incremental equals one shot, across the 8-byte stride. */
	const char *s = "The quick brown fox jumps over the lazy dog";
	CU_ASSERT_EQUAL(store_crc32c(store_crc32c(0, s, 13), s + 13, strlen(s) - 13),
			store_crc32c(0, s, strlen(s)));
}

static void test_record_roundtrip_every_type(void)
{
	bool seen[STORE_REC_TYPE_MAX + 1] = {false};
	for (size_t i = 0; i < NSAMPLES; i++) {
		uint8_t buf[512], again[512];
		struct store_rec out;
		size_t total = 0;
		ssize_t n = store_rec_size(&samples[i]);
		CU_ASSERT_FATAL(n >= (ssize_t)STORE_FRAME_HDR);
		CU_ASSERT_EQUAL(store_rec_encode(&samples[i], 42, buf, sizeof buf), n);
		CU_ASSERT_EQUAL(store_rec_encode(&samples[i], 42, buf, (size_t)n - 1), WISP_ELIMIT);
		CU_ASSERT_EQUAL(store_frame_check(buf, (size_t)n, 42, &total), STORE_FRAME_OK);
		CU_ASSERT_EQUAL(total, (size_t)n);
		/* Another file's salt does not validate the frame. */
		CU_ASSERT_EQUAL(store_frame_check(buf, (size_t)n, 43, &total), STORE_FRAME_BAD_HDR);
		CU_ASSERT_EQUAL(store_rec_decode(buf[4], buf[5], buf + STORE_FRAME_HDR,
						 (size_t)n - STORE_FRAME_HDR, &out), 0);
		CU_ASSERT_EQUAL(store_rec_encode(&out, 42, again, sizeof again), n);
		CU_ASSERT_EQUAL(memcmp(buf, again, (size_t)n), 0);
		struct trace a = {0}, b = {0};
		fmt_rec(&a, &samples[i]);
		fmt_rec(&b, &out);
		CU_ASSERT_STRING_EQUAL(a.buf, b.buf);
		trace_free(&a);
		trace_free(&b);
		seen[samples[i].type] = true;
	}
	for (int t = 1; t <= STORE_REC_TYPE_MAX; t++)
		CU_ASSERT(seen[t]);
}

/* A v5 delivery's Subscription Identifiers survive in QUEUE_ADD and
 * FLIGHT_SET version 2; without any the record stays version 1 (3.1.1
 * and older stores), a version 2 without any or with an identifier out of
 * 1..268435455 is not a record [MQTT-3.3.4-6 range]. */
static void test_delivery_sub_ids_version_2(void)
{
	static const uint8_t ids[] = {1, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f}; /* 1 and 268435455 */
	static const uint8_t zero[] = {0, 0, 0, 0};
	struct store_rec q = {.type = STORE_REC_QUEUE_ADD,
			      .u.queue = {.client = S("c"), .msg_id = 4, .qos = 1, .sub_ids = {ids, sizeof ids}}};
	struct store_rec f = {.type = STORE_REC_FLIGHT_SET,
			      .u.flight = {.client = S("c"), .msg_id = 4, .packet_id = 9,
					   .state = STORE_FLIGHT_WAIT_PUBACK, .qos = 1, .sub_ids = {ids, sizeof ids}}};
	const struct store_rec *recs[] = {&q, &f};
	for (size_t i = 0; i < 2; i++) {
		uint8_t buf[128];
		struct store_rec out;
		ssize_t n = store_rec_encode(recs[i], 7, buf, sizeof buf);
		CU_ASSERT_FATAL(n > 0);
		CU_ASSERT_EQUAL(buf[5], STORE_REC_VERSION_SUB_IDS);
		CU_ASSERT_EQUAL_FATAL(store_rec_decode(buf[4], buf[5], buf + STORE_FRAME_HDR,
						       (size_t)n - STORE_FRAME_HDR, &out), 0);
		struct store_bytes got = i == 0 ? out.u.queue.sub_ids : out.u.flight.sub_ids;
		CU_ASSERT(got.len == sizeof ids && memcmp(got.ptr, ids, sizeof ids) == 0);
		/* The same record read as version 1 has trailing bytes: refused. */
		CU_ASSERT_NOT_EQUAL(store_rec_decode(buf[4], STORE_REC_VERSION, buf + STORE_FRAME_HDR,
						     (size_t)n - STORE_FRAME_HDR, &out), 0);
	}
	q.u.queue.sub_ids = (struct store_bytes){zero, sizeof zero};
	uint8_t buf[128];
	CU_ASSERT_EQUAL(store_rec_encode(&q, 7, buf, sizeof buf), WISP_EINVAL);
	q.u.queue.sub_ids = (struct store_bytes){ids, 3};
	CU_ASSERT_EQUAL(store_rec_encode(&q, 7, buf, sizeof buf), WISP_EINVAL);
	q.u.queue.sub_ids = (struct store_bytes){NULL, 0};
	ssize_t n = store_rec_encode(&q, 7, buf, sizeof buf);
	CU_ASSERT_FATAL(n > 0);
	CU_ASSERT_EQUAL(buf[5], STORE_REC_VERSION);
	struct store_rec out;
	/* A version 1 body read as version 2 lacks its identifiers: refused. */
	CU_ASSERT_NOT_EQUAL(store_rec_decode(buf[4], STORE_REC_VERSION_SUB_IDS, buf + STORE_FRAME_HDR,
					     (size_t)n - STORE_FRAME_HDR, &out), 0);
}

static void test_record_decode_rejects_short_long_and_unknown(void)
{
	for (size_t i = 0; i < NSAMPLES; i++) {
		uint8_t buf[512];
		struct store_rec out;
		ssize_t n = store_rec_encode(&samples[i], 0, buf, sizeof buf - 1);
		CU_ASSERT_FATAL(n > 0);
		size_t plen = (size_t)n - STORE_FRAME_HDR;
		const uint8_t *p = buf + STORE_FRAME_HDR;
		for (size_t cut = 0; cut < plen; cut++)
			CU_ASSERT_EQUAL(store_rec_decode(buf[4], buf[5], p, cut, &out), WISP_EPROTO);
		buf[n] = 0;
		CU_ASSERT_EQUAL(store_rec_decode(buf[4], buf[5], p, plen + 1, &out), WISP_EPROTO);
		CU_ASSERT_EQUAL(store_rec_decode(buf[4], STORE_REC_VERSION_SESSION_CLAIM + 1, p, plen, &out),
				WISP_ENOENT);
		CU_ASSERT_EQUAL(store_rec_decode(buf[4], 0, p, plen, &out), WISP_ENOENT);
		/* SESSION_PUT, QUEUE_ADD, FLIGHT_SET and STREAM_TAKEN have a
		 * version 2 (a version 1 body read as 2 lacks its last field:
		 * malformed); any other type with it is from a newer writer. */
		if (buf[4] == STORE_REC_QUEUE_ADD || buf[4] == STORE_REC_FLIGHT_SET ||
		    (buf[4] == STORE_REC_STREAM_TAKEN && buf[5] == 1)) {
			CU_ASSERT_EQUAL(store_rec_decode(buf[4], 2, p, plen, &out), WISP_EPROTO);
		} else if (buf[4] == STORE_REC_STREAM_TAKEN) {
			CU_ASSERT_EQUAL(store_rec_decode(buf[4], 1, p, plen, &out), WISP_EPROTO); /* one field too many */
		} else if (buf[4] != STORE_REC_SESSION_PUT) {
			CU_ASSERT_EQUAL(store_rec_decode(buf[4], 2, p, plen, &out), WISP_ENOENT);
		}
		CU_ASSERT_EQUAL(store_rec_decode(0, 1, p, plen, &out), WISP_ENOENT);
		CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_TYPE_MAX + 1, 1, p, plen, &out), WISP_ENOENT);
	}
}

static void test_record_encode_rejects_out_of_range(void)
{
	char big[70000];
	memset(big, 'a', sizeof big);
	const struct store_rec bad[] = {
		{.type = 0},
		{.type = STORE_REC_TYPE_MAX + 1},
		{.type = STORE_REC_MSG_PUT, .u.msg = {.id = 0, .topic = S("t")}},
		{.type = STORE_REC_MSG_PUT, .u.msg = {.id = 1, .qos = 3, .topic = S("t")}},
		{.type = STORE_REC_MSG_PUT, .u.msg = {.id = 1, .flags = 0x80, .topic = S("t")}},
		{.type = STORE_REC_MSG_PUT, .u.msg = {.id = 1, .topic = {big, 65536}}},
		{.type = STORE_REC_MSG_DEL, .u.msg_id = 0},
		{.type = STORE_REC_RETAIN_SET, .u.retain = {S("t"), 0}},
		{.type = STORE_REC_QUEUE_ADD, .u.queue = {S("c"), 1, 3, 0}},
		{.type = STORE_REC_FLIGHT_SET, .u.flight = {S("c"), 1, 0, 1, 1, 0}},
		{.type = STORE_REC_FLIGHT_SET, .u.flight = {S("c"), 1, 1, 4, 1, 0}},
		{.type = STORE_REC_FLIGHT_SET, .u.flight = {S("c"), 1, 1, 1, 0, 0}},
		{.type = STORE_REC_FLIGHT_SET, .u.flight = {S("c"), 0, 1, STORE_FLIGHT_WAIT_PUBACK, 1, 0}},
		{.type = STORE_REC_QOS2_IN_ADD, .u.qos2 = {S("c"), 0}},
		{.type = STORE_REC_SESSION_PUT, .u.session = {{NULL, 3}, 4, 0, 0, 0, STORE_OWNER_NONE, {NULL, 0}}},
		/* Owners: unknown kind, a name where none belongs, a NUL inside one,
		 * an owner on SESSION_DEL. */
		{.type = STORE_REC_SESSION_PUT, .u.session = {S("c"), 4, 0, 0, 0, 3, {NULL, 0}}},
		{.type = STORE_REC_SESSION_PUT, .u.session = {S("c"), 4, 0, 0, 0, STORE_OWNER_NONE, S("a")}},
		{.type = STORE_REC_SESSION_PUT, .u.session = {S("c"), 4, 0, 0, 0, STORE_OWNER_ANONYMOUS, S("a")}},
		{.type = STORE_REC_SESSION_PUT, .u.session = {S("c"), 4, 0, 0, 0, STORE_OWNER_USER, S("al\0ce")}},
		{.type = STORE_REC_SESSION_PUT, .u.session = {S("c"), 4, 0, 0, 0, STORE_OWNER_USER, {big, 65536}}},
		{.type = STORE_REC_SESSION_DEL, .u.session = {S("c"), 0, 0, 0, 0, STORE_OWNER_USER, S("a")}},
		/* Retained marks: no topic, no id, an id over 255 bytes, an id on RETAIN_SENT. */
		{.type = STORE_REC_RETAIN_UNSENT, .u.mark = {{NULL, 0}, S("i")}},
		{.type = STORE_REC_RETAIN_UNSENT, .u.mark = {S("t"), {NULL, 0}}},
		{.type = STORE_REC_RETAIN_UNSENT, .u.mark = {S("t"), {big, 256}}},
		{.type = STORE_REC_RETAIN_SENT, .u.mark = {{NULL, 0}, {NULL, 0}}},
		{.type = STORE_REC_RETAIN_SENT, .u.mark = {S("t"), S("i")}},
	};
	uint8_t buf[64];
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		CU_ASSERT_EQUAL(store_rec_size(&bad[i]), WISP_EINVAL);
		CU_ASSERT_EQUAL(store_rec_encode(&bad[i], 0, buf, sizeof buf), WISP_EINVAL);
	}
}

/* A frame around a payload built by hand, with the given version byte. */
static size_t frame_by_hand(uint8_t *out, uint8_t type, uint8_t version, const uint8_t *p, size_t plen)
{
	out[0] = (uint8_t)plen, out[1] = out[2] = out[3] = 0;
	out[4] = type, out[5] = version, out[6] = out[7] = 0;
	uint32_t h = store_crc32c(0x5eedu, out, 8), c = store_crc32c(0x5eedu, p, plen);
	for (int i = 0; i < 4; i++) {
		out[8 + i] = (uint8_t)(h >> (8 * i));
		out[12 + i] = (uint8_t)(c >> (8 * i));
	}
	memcpy(out + STORE_FRAME_HDR, p, plen);
	return STORE_FRAME_HDR + plen;
}

/* SESSION_PUT version 3 adds the claim time of the session's last connect
 * at a cluster node, after an owner that may be unknown there; the records
 * of older Wisps (versions 1 and 2) still load, with no time, and a
 * session without a time is still written in their forms. */
static void test_session_claim_time_form(void)
{
	/* str client "c1", proto 4, flags 0, next packet id 7, expiry 0 */
	static const uint8_t v1[] = {2, 0, 'c', '1', 4, 0, 7, 0, 0, 0, 0, 0};
	/* the same, owner 1 (user) "alice" */
	static const uint8_t v2[] = {2, 0, 'c', '1', 4, 0, 7, 0, 0, 0, 0, 0, 1, 5, 0, 'a', 'l', 'i', 'c', 'e'};
	/* the same, then u64 claim time 0x0102030405060708 */
	static const uint8_t v3_user[] = {2, 0, 'c', '1', 4, 0, 7, 0, 0, 0, 0, 0, 1, 5, 0, 'a', 'l', 'i', 'c', 'e',
					  8, 7, 6, 5, 4, 3, 2, 1};
	/* no owner known (0, empty str), claim time 5 */
	static const uint8_t v3_none[] = {2, 0, 'c', '1', 4, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0};
	struct store_rec out;
	uint8_t buf[128], again[128];

	CU_ASSERT_EQUAL_FATAL(store_rec_decode(STORE_REC_SESSION_PUT, 3, v3_user, sizeof v3_user, &out), 0);
	CU_ASSERT_EQUAL(out.u.session.owner, STORE_OWNER_USER);
	CU_ASSERT_EQUAL(out.u.session.owner_name.len, 5);
	CU_ASSERT_EQUAL(out.u.session.claim_ns, 0x0102030405060708ull);
	size_t n = frame_by_hand(buf, STORE_REC_SESSION_PUT, 3, v3_user, sizeof v3_user);
	CU_ASSERT_EQUAL(store_rec_encode(&out, 0x5eedu, again, sizeof again), (ssize_t)n);
	CU_ASSERT_EQUAL(memcmp(buf, again, n), 0);

	CU_ASSERT_EQUAL_FATAL(store_rec_decode(STORE_REC_SESSION_PUT, 3, v3_none, sizeof v3_none, &out), 0);
	CU_ASSERT_EQUAL(out.u.session.owner, STORE_OWNER_NONE);
	CU_ASSERT_EQUAL(out.u.session.claim_ns, 5);
	n = frame_by_hand(buf, STORE_REC_SESSION_PUT, 3, v3_none, sizeof v3_none);
	CU_ASSERT_EQUAL(store_rec_encode(&out, 0x5eedu, again, sizeof again), (ssize_t)n);
	CU_ASSERT_EQUAL(memcmp(buf, again, n), 0);

	/* Without a time, the older forms are written, byte for byte. */
	out.u.session.claim_ns = 0;
	n = frame_by_hand(buf, STORE_REC_SESSION_PUT, 1, v1, sizeof v1);
	CU_ASSERT_EQUAL(store_rec_encode(&out, 0x5eedu, again, sizeof again), (ssize_t)n);
	CU_ASSERT_EQUAL(memcmp(buf, again, n), 0);
	CU_ASSERT_EQUAL_FATAL(store_rec_decode(STORE_REC_SESSION_PUT, 3, v3_user, sizeof v3_user, &out), 0);
	out.u.session.claim_ns = 0;
	n = frame_by_hand(buf, STORE_REC_SESSION_PUT, 2, v2, sizeof v2);
	CU_ASSERT_EQUAL(store_rec_encode(&out, 0x5eedu, again, sizeof again), (ssize_t)n);
	CU_ASSERT_EQUAL(memcmp(buf, again, n), 0);

	/* Version 3 with time 0, truncated, or under another version: malformed. */
	uint8_t bad[sizeof v3_none];
	memcpy(bad, v3_none, sizeof v3_none);
	bad[15] = 0;
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 3, bad, sizeof v3_none, &out), WISP_EPROTO);
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 3, v3_user, sizeof v3_user - 1, &out), WISP_EPROTO);
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 3, v2, sizeof v2, &out), WISP_EPROTO);
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 2, v3_user, sizeof v3_user, &out), WISP_EPROTO);
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 4, v3_user, sizeof v3_user, &out), WISP_ENOENT);

	/* A log of an older Wisp's records followed by this one's loads all of them. */
	uint8_t file[256];
	size_t len = STORE_FILE_HDR;
	store_file_header_encode(STORE_FILE_LOG, 1, 0x5eedu, file);
	len += frame_by_hand(file + len, STORE_REC_SESSION_PUT, 1, v1, sizeof v1);
	len += frame_by_hand(file + len, STORE_REC_SESSION_PUT, 2, v2, sizeof v2);
	len += frame_by_hand(file + len, STORE_REC_SESSION_PUT, 3, v3_user, sizeof v3_user);
	len += frame_by_hand(file + len, STORE_REC_SESSION_PUT, 3, v3_none, sizeof v3_none);
	write_all_bytes(LOG1, file, len);
	struct trace t = {0};
	struct store_load_stats st;
	struct store *s = open_load(STORE_FSYNC_NO, &t, &st);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(st.records, 4);
	CU_ASSERT_EQUAL(st.damaged + st.truncated_bytes, 0);
	CU_ASSERT_STRING_EQUAL(t.buf, "SESSION_PUT'c1' v=4 f=0 pid=7 exp=0\n"
				      "SESSION_PUT'c1' v=4 f=0 pid=7 exp=0 owner=1 'alice'\n"
				      "SESSION_PUT'c1' v=4 f=0 pid=7 exp=0 owner=1 'alice' claim=72623859790382856\n"
				      "SESSION_PUT'c1' v=4 f=0 pid=7 exp=0 claim=5\n");
	store_close(s);
	trace_free(&t);
}

/* SESSION_PUT as the previous Wisp wrote it (version 1, no owner) still
 * decodes, to an unknown owner, and is written back byte for byte; version 2
 * carries the owner and is as strict as every other record. */
static void test_session_owner_old_and_new_form(void)
{
	/* str client "c1", proto 4, flags 0, next packet id 7, expiry 0 */
	static const uint8_t v1[] = {2, 0, 'c', '1', 4, 0, 7, 0, 0, 0, 0, 0};
	/* the same, then owner 1 (user) and str "alice" */
	static const uint8_t v2_user[] = {2, 0, 'c', '1', 4, 0, 7, 0, 0, 0, 0, 0, 1, 5, 0, 'a', 'l', 'i', 'c', 'e'};
	/* owner 2 (anonymous), empty str */
	static const uint8_t v2_anon[] = {2, 0, 'c', '1', 4, 0, 7, 0, 0, 0, 0, 0, 2, 0, 0};
	struct store_rec out;
	uint8_t buf[128], again[128];

	CU_ASSERT_EQUAL_FATAL(store_rec_decode(STORE_REC_SESSION_PUT, 1, v1, sizeof v1, &out), 0);
	CU_ASSERT_EQUAL(out.u.session.owner, STORE_OWNER_NONE);
	CU_ASSERT_EQUAL(out.u.session.owner_name.len, 0);
	CU_ASSERT_EQUAL(out.u.session.next_packet_id, 7);
	size_t n = frame_by_hand(buf, STORE_REC_SESSION_PUT, 1, v1, sizeof v1);
	CU_ASSERT_EQUAL(store_rec_encode(&out, 0x5eedu, again, sizeof again), (ssize_t)n);
	CU_ASSERT_EQUAL(memcmp(buf, again, n), 0);

	CU_ASSERT_EQUAL_FATAL(store_rec_decode(STORE_REC_SESSION_PUT, 2, v2_user, sizeof v2_user, &out), 0);
	CU_ASSERT_EQUAL(out.u.session.owner, STORE_OWNER_USER);
	CU_ASSERT_EQUAL(out.u.session.owner_name.len, 5);
	CU_ASSERT_EQUAL(memcmp(out.u.session.owner_name.ptr, "alice", 5), 0);
	n = frame_by_hand(buf, STORE_REC_SESSION_PUT, 2, v2_user, sizeof v2_user);
	CU_ASSERT_EQUAL(store_rec_encode(&out, 0x5eedu, again, sizeof again), (ssize_t)n);
	CU_ASSERT_EQUAL(memcmp(buf, again, n), 0);

	CU_ASSERT_EQUAL_FATAL(store_rec_decode(STORE_REC_SESSION_PUT, 2, v2_anon, sizeof v2_anon, &out), 0);
	CU_ASSERT_EQUAL(out.u.session.owner, STORE_OWNER_ANONYMOUS);
	n = frame_by_hand(buf, STORE_REC_SESSION_PUT, 2, v2_anon, sizeof v2_anon);
	CU_ASSERT_EQUAL(store_rec_encode(&out, 0x5eedu, again, sizeof again), (ssize_t)n);
	CU_ASSERT_EQUAL(memcmp(buf, again, n), 0);

	/* Each form under the other's version: the length is wrong. */
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 2, v1, sizeof v1, &out), WISP_EPROTO);
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 1, v2_user, sizeof v2_user, &out), WISP_EPROTO);
	/* Version 2 without an owner, an unknown owner kind, a named anonymous
	 * owner, a NUL in a user name: each malformed. */
	uint8_t bad[sizeof v2_user];
	memcpy(bad, v2_anon, sizeof v2_anon);
	bad[12] = STORE_OWNER_NONE;
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 2, bad, sizeof v2_anon, &out), WISP_EPROTO);
	bad[12] = 3;
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 2, bad, sizeof v2_anon, &out), WISP_EPROTO);
	memcpy(bad, v2_user, sizeof v2_user);
	bad[12] = STORE_OWNER_ANONYMOUS;
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 2, bad, sizeof v2_user, &out), WISP_EPROTO);
	memcpy(bad, v2_user, sizeof v2_user);
	bad[17] = 0;
	CU_ASSERT_EQUAL(store_rec_decode(STORE_REC_SESSION_PUT, 2, bad, sizeof v2_user, &out), WISP_EPROTO);

	/* A log holding both forms loads both: the old one with no owner. */
	uint8_t file[256];
	size_t len = STORE_FILE_HDR;
	store_file_header_encode(STORE_FILE_LOG, 1, 0x5eedu, file);
	len += frame_by_hand(file + len, STORE_REC_SESSION_PUT, 1, v1, sizeof v1);
	len += frame_by_hand(file + len, STORE_REC_SESSION_PUT, 2, v2_user, sizeof v2_user);
	len += frame_by_hand(file + len, STORE_REC_SESSION_PUT, 2, v2_anon, sizeof v2_anon);
	write_all_bytes(LOG1, file, len);
	struct trace t = {0};
	struct store_load_stats st;
	struct store *s = open_load(STORE_FSYNC_NO, &t, &st);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(st.records, 3);
	CU_ASSERT_EQUAL(st.damaged + st.truncated_bytes, 0);
	CU_ASSERT_STRING_EQUAL(t.buf, "SESSION_PUT'c1' v=4 f=0 pid=7 exp=0\n"
				      "SESSION_PUT'c1' v=4 f=0 pid=7 exp=0 owner=1 'alice'\n"
				      "SESSION_PUT'c1' v=4 f=0 pid=7 exp=0 owner=2 ''\n");
	store_close(s);
	trace_free(&t);
}

static void test_append_reopen_load_same_state(void)
{
	struct trace t = {0}, want = {0};
	struct store_load_stats st;
	struct store *s = open_load(STORE_FSYNC_NO, &t, &st);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(st.records, 0);
	CU_ASSERT_EQUAL(store_seq(s), 0);
	append_all(s, samples, NSAMPLES);
	CU_ASSERT_EQUAL(store_seq(s), NSAMPLES);
	CU_ASSERT_EQUAL(store_flush(s), 0);
	/* A second flush with nothing buffered is a no-op. */
	CU_ASSERT_EQUAL(store_flush(s), 0);
	store_close(s);
	trace_free(&t);

	memset(&t, 0, sizeof t);
	s = open_load(STORE_FSYNC_NO, &t, &st);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	trace_of(&want, samples, NSAMPLES, SIZE_MAX);
	if (strcmp(t.buf, want.buf) != 0)
		fprintf(stderr, "got:\n%s\nwant:\n%s\n", t.buf, want.buf);
	CU_ASSERT_STRING_EQUAL(t.buf, want.buf);
	CU_ASSERT_EQUAL(st.records, NSAMPLES);
	CU_ASSERT_EQUAL(st.damaged + st.truncated_bytes + st.dangling, 0);
	/* New ids never collide with stored ones. */
	CU_ASSERT(store_next_msg_id(s) > 8);
	store_close(s);
	trace_free(&t);
	trace_free(&want);
}

static void test_append_before_load_and_bad_record_rejected(void)
{
	struct store *s = open_store(STORE_FSYNC_NO);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(store_append(s, &samples[0]), WISP_EINVAL);
	CU_ASSERT_EQUAL(store_load(s, NULL, NULL, NULL, NULL, 0), 0);
	CU_ASSERT_EQUAL(store_load(s, NULL, NULL, NULL, NULL, 0), WISP_EINVAL);
	CU_ASSERT_EQUAL(store_append_queue_add(s, "c", 1, 1, 3, 0), WISP_EINVAL);
	CU_ASSERT_EQUAL(store_seq(s), 0);
	store_close(s);
}

/* Every typed wrapper produces the record it names. */
static void test_typed_appends(void)
{
	struct trace t = {0}, want = {0};
	const struct store_msg m = {.id = 3, .qos = 1, .topic = S("t"), .payload = B("p")};
	const struct store_session ss = {S("c"), 4, 0, 7, 0, STORE_OWNER_USER, S("u"), 0};
	const struct store_sub sub = {S("c"), S("t/#"), 1, 0};
	const struct store_flight fl = {S("c"), 3, 5, STORE_FLIGHT_WAIT_PUBACK, 1, 0, {NULL, 0}};
	const struct store_rec recs[] = {
		{.type = STORE_REC_MSG_PUT, .u.msg = m},
		{.type = STORE_REC_RETAIN_SET, .u.retain = {S("t"), 3}},
		{.type = STORE_REC_SESSION_PUT, .u.session = ss},
		{.type = STORE_REC_SUB_ADD, .u.sub = sub},
		{.type = STORE_REC_QUEUE_ADD, .u.queue = {S("c"), 3, 1, STORE_MSG_RETAIN}},
		{.type = STORE_REC_FLIGHT_SET, .u.flight = fl},
		{.type = STORE_REC_FLIGHT_DEL, .u.flight = {S("c"), 0, 5, 0, 0, 0}},
		{.type = STORE_REC_QUEUE_DEL, .u.queue = {S("c"), 3, 0, 0}},
		{.type = STORE_REC_QOS2_IN_ADD, .u.qos2 = {S("c"), 9}},
		{.type = STORE_REC_QOS2_IN_DEL, .u.qos2 = {S("c"), 9}},
		{.type = STORE_REC_SUB_DEL, .u.sub = {S("c"), S("t/#"), 0, 0}},
		{.type = STORE_REC_RETAIN_DEL, .u.retain = {S("t"), 0}},
		{.type = STORE_REC_MSG_DEL, .u.msg_id = 3},
		{.type = STORE_REC_SESSION_DEL, .u.session = {S("c"), 0, 0, 0, 0, STORE_OWNER_NONE, {NULL, 0}}},
	};
	struct store *s = open_load(STORE_FSYNC_NO, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(store_append_msg_put(s, &m), 0);
	CU_ASSERT_EQUAL(store_append_retain_set(s, "t", 1, 3), 0);
	CU_ASSERT_EQUAL(store_append_session_put(s, &ss), 0);
	CU_ASSERT_EQUAL(store_append_sub_add(s, &sub), 0);
	CU_ASSERT_EQUAL(store_append_queue_add(s, "c", 1, 3, 1, STORE_MSG_RETAIN), 0);
	CU_ASSERT_EQUAL(store_append_flight_set(s, &fl), 0);
	CU_ASSERT_EQUAL(store_append_flight_del(s, "c", 1, 5), 0);
	CU_ASSERT_EQUAL(store_append_queue_del(s, "c", 1, 3), 0);
	CU_ASSERT_EQUAL(store_append_qos2_in_add(s, "c", 1, 9), 0);
	CU_ASSERT_EQUAL(store_append_qos2_in_del(s, "c", 1, 9), 0);
	CU_ASSERT_EQUAL(store_append_sub_del(s, "c", 1, "t/#", 3), 0);
	CU_ASSERT_EQUAL(store_append_retain_del(s, "t", 1), 0);
	CU_ASSERT_EQUAL(store_append_msg_del(s, 3), 0);
	CU_ASSERT_EQUAL(store_append_session_del(s, "c", 1), 0);
	store_close(s); /* close flushes */
	trace_free(&t);
	memset(&t, 0, sizeof t);
	s = open_load(STORE_FSYNC_NO, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(t.buf, trace_of(&want, recs, sizeof recs / sizeof recs[0], SIZE_MAX));
	store_close(s);
	trace_free(&t);
	trace_free(&want);
}

static void test_truncated_tail_every_offset_loads_prefix_and_truncates(void)
{
	size_t offs[NSAMPLES + 1], len;
	write_file(LOG1, STORE_FILE_LOG, 1, samples, NSAMPLES, offs);
	uint8_t *orig = read_all(LOG1, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(orig);
	size_t start = offs[NSAMPLES - 1];
	struct trace want = {0};
	trace_of(&want, samples, NSAMPLES - 1, SIZE_MAX);
	for (size_t cut = start + 1; cut < len; cut++) {
		struct trace t = {0};
		struct store_load_stats st;
		write_all_bytes(LOG1, orig, cut);
		struct store *s = open_load(STORE_FSYNC_NO, &t, &st);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT_STRING_EQUAL(t.buf, want.buf);
		CU_ASSERT_EQUAL(st.truncated_bytes, cut - start);
		CU_ASSERT_EQUAL(st.damaged, 0);
		/* Appends after the repair land on a clean record boundary. */
		CU_ASSERT_EQUAL(store_append(s, &samples[NSAMPLES - 1]), 0);
		store_close(s);
		CU_ASSERT_EQUAL(file_size(LOG1), (long)len);
		trace_free(&t);
	}
	trace_free(&want);
	free(orig);
}

/* The retained bucket's mark comes after the write it marks (RETAIN_SET,
 * then RETAIN_UNSENT): a tail torn anywhere in the mark keeps the write
 * without it (its publish was not acknowledged: the ack waited for both),
 * and the repaired log takes the mark again on a clean boundary. */
static void test_retain_unsent_torn_tail_keeps_the_write(void)
{
	const struct store_rec recs[] = {
		{.type = STORE_REC_MSG_PUT, .u.msg = {.id = 5, .qos = 1, .flags = STORE_MSG_RETAIN, .topic = S("r/t"),
						       .payload = B("new")}},
		{.type = STORE_REC_RETAIN_SET, .u.retain = {S("r/t"), 5}},
		{.type = STORE_REC_RETAIN_UNSENT, .u.mark = {S("r/t"), S("a-r-00000000000000ff-7")}},
	};
	size_t n = sizeof recs / sizeof recs[0], offs[4], len;
	write_file(LOG1, STORE_FILE_LOG, 1, recs, n, offs);
	uint8_t *orig = read_all(LOG1, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(orig);
	struct trace want = {0}, whole = {0};
	trace_of(&want, recs, n - 1, SIZE_MAX);
	trace_of(&whole, recs, n, SIZE_MAX);
	for (size_t cut = offs[n - 1] + 1; cut < len; cut++) {
		struct trace t = {0};
		struct store_load_stats st;
		write_all_bytes(LOG1, orig, cut);
		struct store *s = open_load(STORE_FSYNC_NO, &t, &st);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT_STRING_EQUAL(t.buf, want.buf);
		CU_ASSERT_EQUAL(st.truncated_bytes, cut - offs[n - 1]);
		CU_ASSERT_EQUAL(store_append_retain_unsent(s, "r/t", 3, "a-r-00000000000000ff-7", 22), 0);
		store_close(s);
		CU_ASSERT_EQUAL(file_size(LOG1), (long)len);
		trace_free(&t);
	}
	struct trace t = {0};
	struct store *s = open_load(STORE_FSYNC_NO, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(t.buf, whole.buf);
	CU_ASSERT_EQUAL(store_append_retain_sent(s, "r/t", 3), 0);
	store_close(s);
	trace_free(&t);
	trace_free(&want);
	trace_free(&whole);
	free(orig);
}

static void test_bit_flip_in_middle_record_skips_only_it(void)
{
	/* Byte offsets inside the frame of the damaged record. */
	static const struct {
		size_t at;
		const char *what;
	} flips[] = {
		{0, "payload length"}, {4, "type"}, {5, "version"}, {6, "reserved"},
		{9, "header crc"},     {13, "payload crc"}, {16, "first payload byte"},
		{SIZE_MAX, "last payload byte"},
	};
	const size_t victim = 5; /* SUB_ADD: nothing refers to it */
	size_t offs[NSAMPLES + 1], len;
	write_file(LOG1, STORE_FILE_LOG, 1, samples, NSAMPLES, offs);
	uint8_t *orig = read_all(LOG1, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(orig);
	struct trace want = {0};
	trace_of(&want, samples, NSAMPLES, victim);
	for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			struct trace t = {0};
			struct store_load_stats st;
			size_t at = flips[i].at == SIZE_MAX ? offs[victim + 1] - 1 : offs[victim] + flips[i].at;
			orig[at] ^= (uint8_t)(1u << bit);
			write_all_bytes(LOG1, orig, len);
			orig[at] ^= (uint8_t)(1u << bit);
			struct store *s = open_load(STORE_FSYNC_NO, &t, &st);
			CU_ASSERT_PTR_NOT_NULL_FATAL(s);
			if (strcmp(t.buf, want.buf) != 0)
				fprintf(stderr, "flip %s bit %d\n", flips[i].what, bit);
			CU_ASSERT_STRING_EQUAL(t.buf, want.buf);
			CU_ASSERT_EQUAL(st.damaged, 1);
			CU_ASSERT_EQUAL(st.damaged_bytes, offs[victim + 1] - offs[victim]);
			CU_ASSERT_EQUAL(st.truncated_bytes, 0);
			store_close(s);
			CU_ASSERT_EQUAL(file_size(LOG1), (long)len);
			trace_free(&t);
		}
	}
	trace_free(&want);
	free(orig);
}

static void test_dangling_reference_skipped_and_orphan_released(void)
{
	const struct store_rec recs[] = {
		{.type = STORE_REC_MSG_PUT, .u.msg = {.id = 1, .qos = 1, .topic = S("orphan")}},
		{.type = STORE_REC_QUEUE_ADD, .u.queue = {S("c"), 2, 1, 0}},
		{.type = STORE_REC_RETAIN_SET, .u.retain = {S("t"), 3}},
		{.type = STORE_REC_MSG_PUT, .u.msg = {.id = 4, .qos = 1, .topic = S("gone")}},
		{.type = STORE_REC_MSG_DEL, .u.msg_id = 4},
		{.type = STORE_REC_FLIGHT_SET, .u.flight = {S("c"), 4, 1, STORE_FLIGHT_WAIT_PUBACK, 1, 0}},
	};
	struct trace t = {0};
	struct store_load_stats st;
	write_file(LOG1, STORE_FILE_LOG, 1, recs, sizeof recs / sizeof recs[0], NULL);
	struct store *s = open_load(STORE_FSYNC_NO, &t, &st);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(st.dangling, 3);
	CU_ASSERT_EQUAL(t.live, 0); /* the orphan was released at the end */
	CU_ASSERT_EQUAL(store_next_msg_id(s), 5);
	store_close(s);
	trace_free(&t);
}

static void test_bad_headers_refuse_with_file_and_offset(void)
{
	static const struct {
		const char *name;
		size_t flip; /* header byte to damage */
		const char *expect;
	} cases[] = {
		{SNAP1, 0, "snap.0000000000000001: bad header magic at offset 0"},
		{SNAP1, 9, "snap.0000000000000001: header checksum mismatch"},
		{LOG1, 2, "log.0000000000000001: bad header magic at offset 0"},
		{LOG1, 20, "log.0000000000000001: header checksum mismatch"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t len;
		char err[512] = "";
		bool snap = cases[i].name[0] == 's';
		write_file(cases[i].name, snap ? STORE_FILE_SNAP : STORE_FILE_LOG, 1, samples, 3, NULL);
		uint8_t *p = read_all(cases[i].name, &len);
		p[cases[i].flip] ^= 0x40;
		write_all_bytes(cases[i].name, p, len);
		free(p);
		struct store *s = open_store(STORE_FSYNC_NO);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		struct trace t = {0};
		CU_ASSERT_EQUAL(store_load(s, &tracer, &t, NULL, err, sizeof err), WISP_EPROTO);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].expect));
		CU_ASSERT_PTR_NOT_NULL(strstr(err, dir));
		CU_ASSERT_EQUAL(t.live, 0);
		store_close(s);
		trace_free(&t);
		unlink(path_of(cases[i].name));
	}
}

static void test_log_torn_at_creation_is_recreated(void)
{
	static const size_t sizes[] = {0, 1, STORE_FILE_HDR - 1};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		uint8_t junk[STORE_FILE_HDR] = {'W', 'I', 'S'};
		struct trace t = {0};
		struct store_load_stats st;
		write_all_bytes(LOG1, junk, sizes[i]);
		struct store *s = open_load(STORE_FSYNC_NO, &t, &st);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT_EQUAL(st.truncated_bytes, sizes[i]);
		CU_ASSERT_EQUAL(file_size(LOG1), STORE_FILE_HDR);
		store_close(s);
		trace_free(&t);
	}
	/* A zero-filled header (delayed allocation after a power cut) too. */
	uint8_t zeros[STORE_FILE_HDR] = {0};
	struct trace t = {0};
	write_all_bytes(LOG1, zeros, sizeof zeros);
	struct store *s = open_load(STORE_FSYNC_NO, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL(s);
	store_close(s);
	trace_free(&t);
}

/* ---- compaction ---- */

#define NMSG 60
static char topics[NMSG + 1][16];
static char payloads[NMSG + 1][16];

static struct store_rec mk_msg(uint64_t id)
{
	snprintf(topics[id], sizeof topics[id], "t/%u", (unsigned)id);
	snprintf(payloads[id], sizeof payloads[id], "p%u", (unsigned)id);
	return (struct store_rec){.type = STORE_REC_MSG_PUT,
				  .u.msg = {.id = id, .qos = 1, .topic = {topics[id], strlen(topics[id])},
					    .payload = {(const uint8_t *)payloads[id], strlen(payloads[id])}}};
}

/* The live state after history(): what the broker's emit would produce. */
static size_t live_state(struct store_rec *out)
{
	size_t n = 0;
	for (uint64_t id = 2; id <= NMSG; id += 2)
		out[n++] = mk_msg(id);
	out[n++] = (struct store_rec){.type = STORE_REC_RETAIN_SET, .u.retain = {{topics[2], strlen(topics[2])}, 2}};
	out[n++] = (struct store_rec){.type = STORE_REC_SESSION_PUT,
				      .u.session = {.client = S("c1"), .proto = 4, .next_packet_id = 9}};
	out[n++] = (struct store_rec){.type = STORE_REC_SUB_ADD, .u.sub = {S("c1"), S("t/#"), 1, 0}};
	for (uint64_t id = 2; id <= NMSG; id += 2)
		out[n++] = (struct store_rec){.type = STORE_REC_QUEUE_ADD, .u.queue = {S("c1"), id, 1, 0}};
	return n;
}

static void history(struct store *s)
{
	CU_ASSERT_EQUAL(store_append_session_put(s, &(struct store_session){.client = S("c1"), .proto = 4,
									    .next_packet_id = 9}),
			0);
	CU_ASSERT_EQUAL(store_append_sub_add(s, &(struct store_sub){S("c1"), S("t/#"), 1, 0}), 0);
	CU_ASSERT_EQUAL(store_append_sub_add(s, &(struct store_sub){S("c1"), S("old"), 1, 0}), 0);
	CU_ASSERT_EQUAL(store_append_sub_del(s, "c1", 2, "old", 3), 0);
	for (uint64_t id = 1; id <= NMSG; id++) {
		struct store_rec m = mk_msg(id);
		CU_ASSERT_EQUAL(store_append(s, &m), 0);
		CU_ASSERT_EQUAL(store_append_queue_add(s, "c1", 2, id, 1, 0), 0);
	}
	for (uint64_t id = 1; id <= NMSG; id += 2) {
		CU_ASSERT_EQUAL(store_append_queue_del(s, "c1", 2, id), 0);
		CU_ASSERT_EQUAL(store_append_msg_del(s, id), 0);
	}
	CU_ASSERT_EQUAL(store_append_retain_set(s, topics[2], strlen(topics[2]), 2), 0);
	CU_ASSERT_EQUAL(store_append_retain_set(s, topics[4], strlen(topics[4]), 4), 0);
	CU_ASSERT_EQUAL(store_append_retain_del(s, topics[4], strlen(topics[4])), 0);
}

static int emit_live(void *ctx, struct store *s)
{
	struct store_rec live[2 * NMSG + 8];
	size_t n = live_state(live);
	(void)ctx;
	for (size_t i = 0; i < n; i++) {
		int rc = store_append(s, &live[i]);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int emit_fail(void *ctx, struct store *s)
{
	(void)ctx;
	CU_ASSERT_EQUAL(store_append(s, &samples[0]), 0);
	return WISP_ENOMEM;
}

static void wait_compaction(struct store *s, uint64_t n)
{
	struct store_stats st;
	for (int i = 0; i < 300; i++) {
		store_get_stats(s, &st);
		if (st.compactions >= n)
			return;
		struct pollfd p = {.fd = store_durable_fd(s), .events = POLLIN};
		poll(&p, 1, 100);
		store_durable_seq(s);
	}
}

static void test_compaction_keeps_exactly_live_state(void)
{
	static const enum store_fsync modes[] = {STORE_FSYNC_NO, STORE_FSYNC_EVERYSEC, STORE_FSYNC_ALWAYS};
	for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
		struct store_options o = {.dir = dir, .fsync = modes[m], .compact_min_bytes = 1024};
		struct store_rec live[2 * NMSG + 8];
		struct store_stats st;
		struct trace t = {0}, want = {0};
		struct store *s = NULL;
		rm_dir(dir);
		CU_ASSERT_EQUAL_FATAL(store_open(&o, &s, NULL, 0), 0);
		CU_ASSERT_EQUAL_FATAL(store_load(s, &tracer, &t, NULL, NULL, 0), 0);
		CU_ASSERT_FALSE(store_compact_due(s));
		history(s);
		CU_ASSERT_EQUAL(store_flush(s), 0);
		CU_ASSERT_TRUE(store_compact_due(s));
		uint64_t seq = store_seq(s);
		/* A failing emit leaves everything as it was. */
		CU_ASSERT_EQUAL(store_compact(s, emit_fail, NULL), WISP_ENOMEM);
		CU_ASSERT_FALSE(file_exists("snap.0000000000000002.tmp"));
		CU_ASSERT_EQUAL(store_compact(s, emit_live, NULL), 0);
		CU_ASSERT_EQUAL(store_seq(s), seq); /* snapshot records are not log appends */
		/* One compaction at a time. */
		CU_ASSERT_EQUAL(store_compact(s, emit_live, NULL), WISP_EAGAIN);
		CU_ASSERT_FALSE(store_compact_due(s));
		CU_ASSERT_EQUAL(store_append_queue_del(s, "c1", 2, 2), 0);
		CU_ASSERT_EQUAL(store_append_qos2_in_add(s, "c1", 2, 5), 0);
		CU_ASSERT_EQUAL(store_flush(s), 0);
		wait_compaction(s, 1);
		store_get_stats(s, &st);
		CU_ASSERT_EQUAL(st.compactions, 1);
		CU_ASSERT_EQUAL(st.generation, 2);
		CU_ASSERT(st.snap_bytes > STORE_FILE_HDR);
		if (modes[m] != STORE_FSYNC_NO)
			CU_ASSERT(wait_durable(s, store_seq(s), NULL) >= store_seq(s));
		CU_ASSERT_FALSE(file_exists(LOG1));
		CU_ASSERT_TRUE(file_exists(SNAP2));
		CU_ASSERT_TRUE(file_exists(LOG2));
		store_close(s);
		trace_free(&t);

		memset(&t, 0, sizeof t);
		s = open_load(modes[m], &t, NULL);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		size_t n = live_state(live);
		live[n++] = (struct store_rec){.type = STORE_REC_QUEUE_DEL, .u.queue = {S("c1"), 2, 0, 0}};
		live[n++] = (struct store_rec){.type = STORE_REC_QOS2_IN_ADD, .u.qos2 = {S("c1"), 5}};
		CU_ASSERT_STRING_EQUAL(t.buf, trace_of(&want, live, n, SIZE_MAX));
		CU_ASSERT(store_next_msg_id(s) > NMSG);
		store_close(s);
		trace_free(&t);
		trace_free(&want);
	}
}

/* The states a crash can leave during compaction to generation 2. */
static void test_crash_during_compaction_recovers(void)
{
	const struct store_rec a[] = {samples[0], samples[4]};
	const struct store_rec b[] = {samples[5], samples[9]};
	struct store_rec both[4] = {a[0], a[1], b[0], b[1]};
	const struct store_rec stale[] = {samples[1]};
	struct trace t = {0}, want = {0};

	/* Before the rename: old log + new log + temp snapshot. */
	write_file(LOG1, STORE_FILE_LOG, 1, a, 2, NULL);
	write_file(LOG2, STORE_FILE_LOG, 2, b, 2, NULL);
	write_file("snap.0000000000000002.tmp", STORE_FILE_SNAP, 2, stale, 1, NULL);
	struct store *s = open_load(STORE_FSYNC_NO, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(t.buf, trace_of(&want, both, 4, SIZE_MAX));
	CU_ASSERT_FALSE(file_exists("snap.0000000000000002.tmp"));
	CU_ASSERT_TRUE(file_exists(LOG1));
	store_close(s);
	trace_free(&t);
	trace_free(&want);

	/* After the rename: the snapshot replaces log 1, which is removed. */
	rm_dir(dir);
	CU_ASSERT_EQUAL(mkdir(dir, 0700), 0);
	memset(&t, 0, sizeof t);
	memset(&want, 0, sizeof want);
	write_file(LOG1, STORE_FILE_LOG, 1, stale, 1, NULL);
	write_file(SNAP2, STORE_FILE_SNAP, 2, a, 2, NULL);
	write_file(LOG2, STORE_FILE_LOG, 2, b, 2, NULL);
	s = open_load(STORE_FSYNC_NO, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(t.buf, trace_of(&want, both, 4, SIZE_MAX));
	CU_ASSERT_FALSE(file_exists(LOG1));
	store_close(s);
	trace_free(&t);
	trace_free(&want);

	/* After the rename, before log 2 existed: a new log 2 is started. */
	rm_dir(dir);
	CU_ASSERT_EQUAL(mkdir(dir, 0700), 0);
	memset(&t, 0, sizeof t);
	memset(&want, 0, sizeof want);
	write_file(LOG1, STORE_FILE_LOG, 1, stale, 1, NULL);
	write_file(SNAP2, STORE_FILE_SNAP, 2, a, 2, NULL);
	s = open_load(STORE_FSYNC_NO, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(t.buf, trace_of(&want, a, 2, SIZE_MAX));
	CU_ASSERT_TRUE(file_exists(LOG2));
	CU_ASSERT_FALSE(file_exists(LOG1));
	store_close(s);
	trace_free(&t);
	trace_free(&want);

	/* A snapshot whose name and header disagree is refused. */
	rm_dir(dir);
	CU_ASSERT_EQUAL(mkdir(dir, 0700), 0);
	write_file(SNAP2, STORE_FILE_SNAP, 3, a, 2, NULL);
	s = open_store(STORE_FSYNC_NO);
	char err[512] = "";
	memset(&t, 0, sizeof t);
	CU_ASSERT_EQUAL(store_load(s, &tracer, &t, NULL, err, sizeof err), WISP_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "generation 3"));
	CU_ASSERT_EQUAL(t.live, 0);
	store_close(s);
	trace_free(&t);
}

/* ---- fsync policies ---- */

static void test_fsync_always_eventfd_fires_and_seq_becomes_durable(void)
{
	struct trace t = {0};
	struct store *s = open_load(STORE_FSYNC_ALWAYS, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT(store_durable_fd(s) >= 0);
	CU_ASSERT_EQUAL(store_fsync_mode(s), STORE_FSYNC_ALWAYS);
	for (int round = 0; round < 3; round++) {
		int fired = 0;
		append_all(s, samples, NSAMPLES);
		uint64_t seq = store_seq(s);
		CU_ASSERT(store_durable_seq(s) < seq);
		CU_ASSERT_EQUAL(store_flush(s), 0);
		CU_ASSERT(wait_durable(s, seq, &fired) >= seq);
		CU_ASSERT_EQUAL(fired, 1);
	}
	CU_ASSERT_EQUAL(store_error(s), 0);
	store_close(s);
	trace_free(&t);
}

static void test_fsync_everysec_durable_seq_advances(void)
{
	struct trace t = {0};
	struct store *s = open_load(STORE_FSYNC_EVERYSEC, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	append_all(s, samples, NSAMPLES);
	CU_ASSERT_EQUAL(store_flush(s), 0);
	uint64_t seq = store_seq(s);
	CU_ASSERT(wait_durable(s, seq, NULL) >= seq);
	store_close(s);
	trace_free(&t);
}

static void test_fsync_no_never_claims_durability_but_data_is_in_os(void)
{
	struct trace t = {0}, want = {0};
	struct store *s = open_load(STORE_FSYNC_NO, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	append_all(s, samples, NSAMPLES);
	CU_ASSERT_EQUAL(store_flush(s), 0);
	CU_ASSERT_EQUAL(store_durable_seq(s), 0);
	/* Another reader sees the flushed bytes before close (kill -9 safe). */
	size_t len;
	uint8_t *p = read_all(LOG1, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	struct store_scan_result res;
	const struct store_scan_ops ops = {0};
	CU_ASSERT_EQUAL(store_scan(p, len, STORE_FILE_LOG, &ops, NULL, &res), 0);
	CU_ASSERT_EQUAL(res.records, NSAMPLES);
	free(p);
	store_close(s);
	trace_free(&t);
	trace_free(&want);
}

/* ---- a failing disk: nothing sticky, nothing lost ---- */

/* Points the store's log fd at `fd` (a failing file); returns the saved
 * real one for restore_log(). */
static int swap_log(struct store *s, int fd)
{
	int saved = dup(s->log_fd);
	CU_ASSERT_FATAL(saved >= 0);
	CU_ASSERT_FATAL(dup2(fd, s->log_fd) == s->log_fd);
	return saved;
}

static void restore_log(struct store *s, int saved)
{
	CU_ASSERT_FATAL(dup2(saved, s->log_fd) == s->log_fd);
	close(saved);
}

static void test_failed_write_keeps_records_and_retry_writes_them_once(void)
{
	struct trace t = {0}, want = {0};
	struct store_stats st;
	struct store *s = open_load(STORE_FSYNC_EVERYSEC, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	append_all(s, samples, 3);
	CU_ASSERT_EQUAL(store_flush(s), 0);
	CU_ASSERT_EQUAL(store_written_seq(s), 3);

	int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
	CU_ASSERT_FATAL(full >= 0);
	int saved = swap_log(s, full);
	append_all(s, samples + 3, NSAMPLES - 3);
	/* ENOSPC: the records stay buffered and are not called written. */
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL(store_flush(s), WISP_EIO);
		CU_ASSERT_TRUE(store_write_failing(s));
		CU_ASSERT_EQUAL(store_error(s), WISP_EIO);
		CU_ASSERT_EQUAL(store_written_seq(s), 3);
		if (i == 0) /* later: /dev/full cannot be truncated either */
			CU_ASSERT_EQUAL(store_last_errno(s), ENOSPC);
	}
	store_get_stats(s, &st);
	CU_ASSERT_EQUAL(st.write_errors, 3);
	/* Appends go on meanwhile; they join the buffered ones. */
	CU_ASSERT_EQUAL(store_append(s, &samples[0]), 0);
	/* Compaction waits for the buffer to reach the log first. */
	CU_ASSERT_EQUAL(store_compact(s, emit_live, NULL), WISP_EIO);

	restore_log(s, saved);
	close(full);
	CU_ASSERT_EQUAL(store_flush(s), 0);
	CU_ASSERT_FALSE(store_write_failing(s));
	CU_ASSERT_EQUAL(store_error(s), 0);
	CU_ASSERT_EQUAL(store_written_seq(s), store_seq(s));
	CU_ASSERT_EQUAL(store_seq(s), NSAMPLES + 1);
	store_close(s);
	trace_free(&t);

	/* Every record exactly once, in order: nothing lost, nothing doubled. */
	struct store_rec all[NSAMPLES + 1];
	memcpy(all, samples, sizeof samples);
	all[NSAMPLES] = samples[0];
	memset(&t, 0, sizeof t);
	s = open_load(STORE_FSYNC_EVERYSEC, &t, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(t.buf, trace_of(&want, all, NSAMPLES + 1, SIZE_MAX));
	store_close(s);
	trace_free(&t);
	trace_free(&want);
}

/* Bounded wait (at most 30 s) for the helper to report a failed fsync. */
static bool wait_tainted(struct store *s)
{
	for (int i = 0; i < 300 && !store_needs_rewrite(s); i++) {
		struct pollfd p = {.fd = store_durable_fd(s), .events = POLLIN};
		poll(&p, 1, 100);
		store_durable_seq(s);
	}
	return store_needs_rewrite(s);
}

static void test_failed_fsync_is_not_sticky_compaction_recovers(void)
{
	static const enum store_fsync modes[] = {STORE_FSYNC_EVERYSEC, STORE_FSYNC_ALWAYS};
	for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
		struct store_options o = {.dir = dir, .fsync = modes[m]};
		struct store_rec live[2 * NMSG + 8];
		struct trace t = {0}, want = {0};
		struct store_stats st;
		struct store *s = NULL;
		rm_dir(dir);
		CU_ASSERT_EQUAL_FATAL(store_open(&o, &s, NULL, 0), 0);
		CU_ASSERT_EQUAL_FATAL(store_load(s, &tracer, &t, NULL, NULL, 0), 0);
		history(s);
		CU_ASSERT_EQUAL(store_flush(s), 0);
		CU_ASSERT(wait_durable(s, store_seq(s), NULL) >= store_seq(s));
		CU_ASSERT_FALSE(store_compact_due(s));

		/* fdatasync on a pipe fails (EINVAL): a log whose fsync failed.
		 * What is written to it is lost, as dirty pages may be. */
		int pfd[2];
		CU_ASSERT_FATAL(pipe(pfd) == 0);
		int saved = swap_log(s, pfd[1]);
		uint64_t durable = store_durable_seq(s);
		CU_ASSERT_EQUAL(store_append_queue_del(s, "c1", 2, 2), 0);
		CU_ASSERT_EQUAL(store_flush(s), 0); /* write() works */
		CU_ASSERT_TRUE(wait_tainted(s));
		CU_ASSERT_EQUAL(store_error(s), WISP_EIO);
		CU_ASSERT_EQUAL(store_durable_seq(s), durable); /* never claimed */
		store_get_stats(s, &st);
		CU_ASSERT(st.fsync_errors >= 1);
		CU_ASSERT_TRUE(store_compact_due(s)); /* the state must be rewritten */
		restore_log(s, saved);
		close(pfd[0]);
		close(pfd[1]);

		/* Writes still work, and flushes are not refused. */
		CU_ASSERT_EQUAL(store_append_qos2_in_add(s, "c1", 2, 5), 0);
		CU_ASSERT_EQUAL(store_flush(s), 0);
		uint64_t seq = store_seq(s);
		/* The compaction's synced snapshot replaces the tainted log. */
		CU_ASSERT_EQUAL(store_compact(s, emit_live, NULL), 0);
		wait_compaction(s, 1);
		CU_ASSERT(wait_durable(s, seq, NULL) >= seq);
		CU_ASSERT_FALSE(store_needs_rewrite(s));
		CU_ASSERT_EQUAL(store_error(s), 0);
		CU_ASSERT_FALSE(store_compact_due(s));
		/* And later records become durable again. */
		CU_ASSERT_EQUAL(store_append_qos2_in_add(s, "c1", 2, 6), 0);
		CU_ASSERT_EQUAL(store_flush(s), 0);
		CU_ASSERT(wait_durable(s, store_seq(s), NULL) >= store_seq(s));
		store_close(s);
		trace_free(&t);

		memset(&t, 0, sizeof t);
		s = open_load(modes[m], &t, NULL);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		size_t n = live_state(live);
		live[n++] = (struct store_rec){.type = STORE_REC_QOS2_IN_ADD, .u.qos2 = {S("c1"), 6}};
		CU_ASSERT_STRING_EQUAL(t.buf, trace_of(&want, live, n, SIZE_MAX));
		store_close(s);
		trace_free(&t);
		trace_free(&want);
	}
}

static void test_fsync_parse(void)
{
	enum store_fsync m;
	CU_ASSERT(store_fsync_parse("always", &m) == 0 && m == STORE_FSYNC_ALWAYS);
	CU_ASSERT(store_fsync_parse("everysec", &m) == 0 && m == STORE_FSYNC_EVERYSEC);
	CU_ASSERT(store_fsync_parse("no", &m) == 0 && m == STORE_FSYNC_NO);
	CU_ASSERT_EQUAL(store_fsync_parse("sometimes", &m), WISP_EINVAL);
}

/* ---- lock, directory, allocation failures ---- */

static void test_lock_prevents_second_open(void)
{
	struct store_options o = {.dir = dir, .fsync = STORE_FSYNC_NO};
	struct store *a = NULL, *b = NULL;
	char err[512] = "";
	CU_ASSERT_EQUAL_FATAL(store_open(&o, &a, err, sizeof err), 0);
	CU_ASSERT_EQUAL(store_open(&o, &b, err, sizeof err), WISP_EEXIST);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "in use by another process"));
	store_close(a);
	CU_ASSERT_EQUAL(store_open(&o, &b, err, sizeof err), 0);
	store_close(b);
}

static void test_open_creates_nested_directory(void)
{
	char nested[128];
	struct store *s = NULL;
	snprintf(nested, sizeof nested, "%s/a/b", dir);
	struct store_options o = {.dir = nested, .fsync = STORE_FSYNC_NO};
	CU_ASSERT_EQUAL_FATAL(store_open(&o, &s, NULL, 0), 0);
	CU_ASSERT_EQUAL(store_load(s, NULL, NULL, NULL, NULL, 0), 0);
	store_close(s);
	rm_dir(nested);
	snprintf(nested, sizeof nested, "%s/a", dir);
	rm_dir(nested);
}

static void test_allocation_failures_fail_cleanly(void)
{
	write_file(LOG1, STORE_FILE_LOG, 1, samples, NSAMPLES, NULL);
	bool done = false;
	for (uint64_t n = 1; n <= 64 && !done; n++) {
		struct store_options o = {.dir = dir, .fsync = STORE_FSYNC_EVERYSEC};
		struct store *s = NULL;
		struct trace t = {0};
		wisp_mem_fail_after(n, 0);
		int rc = store_open(&o, &s, NULL, 0);
		if (rc == 0) {
			rc = store_load(s, &tracer, &t, NULL, NULL, 0);
			if (rc == 0)
				rc = store_append(s, &samples[0]);
			done = rc == 0;
			store_close(s);
		}
		wisp_mem_fail_after(0, 0);
		CU_ASSERT(rc == 0 || rc == WISP_ENOMEM || rc == WISP_EIO);
		CU_ASSERT_EQUAL(t.live, 0);
		trace_free(&t);
	}
	CU_ASSERT_TRUE(done);
	/* A visitor failure aborts the load with its error and releases all. */
	for (int k = 1; k <= (int)NSAMPLES; k++) {
		struct trace t = {.fail_at = k};
		struct store *s = open_store(STORE_FSYNC_NO);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT_EQUAL(store_load(s, &tracer, &t, NULL, NULL, 0), WISP_ENOMEM);
		CU_ASSERT_EQUAL(t.live, 0);
		store_close(s);
		trace_free(&t);
	}
}

static CU_TestInfo record_tests[] = {
	{"CRC-32C check value and incremental use", test_crc32c_check_value},
	{"encode/decode round trip for every record type", test_record_roundtrip_every_type},
	{"QUEUE_ADD and FLIGHT_SET carry subscription identifiers (version 2)", test_delivery_sub_ids_version_2},
	{"decode rejects short, long, unknown type and version", test_record_decode_rejects_short_long_and_unknown},
	{"encode rejects out-of-range fields", test_record_encode_rejects_out_of_range},
	CU_TEST_INFO_NULL,
};

static CU_TestInfo file_tests[] = {
	{"append, reopen, load gives the same records", test_append_reopen_load_same_state},
	{"append before load and bad records are rejected", test_append_before_load_and_bad_record_rejected},
	{"typed append functions", test_typed_appends},
	{"SESSION_PUT with and without its owner (versions 1 and 2)", test_session_owner_old_and_new_form},
	{"SESSION_PUT with a claim time (version 3); versions 1 and 2 still load", test_session_claim_time_form},
	{"torn tail at every offset: prefix loaded, file truncated", test_truncated_tail_every_offset_loads_prefix_and_truncates},
	{"retained mark torn at every offset: the write stays, unmarked", test_retain_unsent_torn_tail_keeps_the_write},
	{"bit flip in a middle record skips only that record", test_bit_flip_in_middle_record_skips_only_it},
	{"unknown message ids skipped, orphans released", test_dangling_reference_skipped_and_orphan_released},
	{"bad file headers refuse start naming file and offset", test_bad_headers_refuse_with_file_and_offset},
	{"log torn at creation is recreated", test_log_torn_at_creation_is_recreated},
	{"compaction keeps exactly the live state", test_compaction_keeps_exactly_live_state},
	{"crash at each compaction step recovers", test_crash_during_compaction_recovers},
	{"fsync always: eventfd fires, seq durable", test_fsync_always_eventfd_fires_and_seq_becomes_durable},
	{"fsync everysec: durable seq advances", test_fsync_everysec_durable_seq_advances},
	{"fsync no: never durable, data in the OS", test_fsync_no_never_claims_durability_but_data_is_in_os},
	{"fsync policy names", test_fsync_parse},
	{"failed write: records kept, retried, written once", test_failed_write_keeps_records_and_retry_writes_them_once},
	{"failed fsync: not sticky, a compaction recovers", test_failed_fsync_is_not_sticky_compaction_recovers},
	{"lock prevents a second open", test_lock_prevents_second_open},
	{"open creates nested directories", test_open_creates_nested_directory},
	{"allocation and visitor failures fail cleanly", test_allocation_failures_fail_cleanly},
	CU_TEST_INFO_NULL,
};

static int quiet(void)
{
	/* Recovery warnings are expected here; keep the output readable. */
	log_set_level(LOG_ERROR);
	return 0;
}

static CU_SuiteInfo suites[] = {
	{"store records", NULL, NULL, NULL, NULL, record_tests},
	{"store files", quiet, NULL, set_up, tear_down, file_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
