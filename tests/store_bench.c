/*
 * store_bench: figures for docs/persistence.md (not a test; no thresholds).
 *
 *   store_bench [dir]      (default: ./store-bench-data, removed at the end)
 *
 * 1. Append throughput per fsync mode. One "message" is what a QoS 1 publish
 *    to one offline persistent session costs: MSG_PUT (64-byte payload) +
 *    QUEUE_ADD. Two loop shapes:
 *      pipelined: 100 messages per loop turn, store_flush per turn, and the
 *        loop never waits (as the broker, which parks acks until the durable
 *        seq passes them); timed until everything is durable (no: flushed).
 *      one-by-one: 1 message per turn and the loop waits for it to be
 *        durable before the next (the latency of one acknowledged publish).
 * 2. Start-up: 10,000 sessions x 100 queued messages = 1,000,000 QUEUE_ADD
 *    records (+ 1,000,000 MSG_PUT, 32-byte payloads), replayed in a child
 *    process whose visitor keeps every message (a copy of topic + payload
 *    and a reference count), so its peak RSS approximates a broker's.
 *    Also with a visitor that keeps nothing (engine cost only), and the cost
 *    of compacting that state.
 */
#include <dirent.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "log.h"
#include "store.h"

#define SESSIONS 10000
#define PER_SESSION 100

static const char *dir = "./store-bench-data";

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void rm_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[1024];
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static struct store *open_fresh(enum store_fsync mode, int wipe)
{
	struct store_options o = {.dir = dir, .fsync = mode, .compact_min_bytes = UINT64_MAX / 4};
	struct store *s = NULL;
	char err[512];
	if (wipe)
		rm_dir();
	if (store_open(&o, &s, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	return s;
}

static void must(int rc, const char *what)
{
	if (rc != 0) {
		fprintf(stderr, "%s: %s\n", what, wisp_strerror(rc));
		exit(1);
	}
}

static uint64_t wait_durable(struct store *s, uint64_t seq)
{
	uint64_t d;
	while ((d = store_durable_seq(s)) < seq) {
		struct pollfd p = {.fd = store_durable_fd(s), .events = POLLIN};
		poll(&p, 1, 1000);
	}
	return d;
}

static int append_message(struct store *s, const char *client, size_t clen, uint64_t n, size_t plen)
{
	static uint8_t payload[256];
	char topic[64];
	int tl = snprintf(topic, sizeof topic, "sensors/%s/%" PRIu64, client, n);
	struct store_msg m = {.id = store_next_msg_id(s), .qos = 1, .topic = {topic, (size_t)tl},
			      .payload = {payload, plen}};
	int rc = store_append_msg_put(s, &m);
	if (rc == 0)
		rc = store_append_queue_add(s, client, clen, m.id, 1, 0);
	return rc;
}

static const char *mode_name(enum store_fsync m)
{
	return m == STORE_FSYNC_ALWAYS ? "always" : m == STORE_FSYNC_EVERYSEC ? "everysec" : "no";
}

static void bench_append(enum store_fsync mode)
{
	const uint64_t total = mode == STORE_FSYNC_ALWAYS ? 200000 : 1000000, batch = 100;
	struct store *s = open_fresh(mode, 1);
	must(store_load(s, NULL, NULL, NULL, NULL, 0), "load");
	double t0 = now_s();
	for (uint64_t i = 0; i < total; i += batch) {
		for (uint64_t j = 0; j < batch; j++)
			must(append_message(s, "client-1", 8, i + j, 64), "append");
		must(store_flush(s), "flush");
		if (mode != STORE_FSYNC_NO)
			store_durable_seq(s); /* the loop drains the eventfd as it goes */
	}
	double t_flushed = now_s() - t0;
	if (mode != STORE_FSYNC_NO)
		wait_durable(s, store_seq(s));
	double t_durable = now_s() - t0;
	struct store_stats st;
	store_get_stats(s, &st);
	printf("append %-8s pipelined : %8.0f msg/s flushed, %8.0f msg/s durable (%" PRIu64 " msgs, %.1f MB log)\n",
	       mode_name(mode), (double)total / t_flushed,
	       mode == STORE_FSYNC_NO ? 0.0 : (double)total / t_durable, total, (double)st.log_bytes / 1e6);
	store_close(s);

	/* One message per turn, waiting for durability each time. */
	const uint64_t one = mode == STORE_FSYNC_ALWAYS ? 500 : 20000;
	s = open_fresh(mode, 1);
	must(store_load(s, NULL, NULL, NULL, NULL, 0), "load");
	t0 = now_s();
	for (uint64_t i = 0; i < one; i++) {
		must(append_message(s, "client-1", 8, i, 64), "append");
		must(store_flush(s), "flush");
		if (mode == STORE_FSYNC_ALWAYS)
			wait_durable(s, store_seq(s));
	}
	double t = now_s() - t0;
	printf("append %-8s one-by-one: %8.0f msg/s, %7.1f us per acknowledged message (%" PRIu64 " msgs)\n",
	       mode_name(mode), (double)one / t, t / (double)one * 1e6, one);
	store_close(s);
}

static void client_name(char *out, size_t cap, unsigned i) { snprintf(out, cap, "sensor-%05u", i); }

static void write_big_state(void)
{
	struct store *s = open_fresh(STORE_FSYNC_NO, 1);
	char client[32];
	must(store_load(s, NULL, NULL, NULL, NULL, 0), "load");
	double t0 = now_s();
	for (unsigned c = 0; c < SESSIONS; c++) {
		client_name(client, sizeof client, c);
		size_t cl = strlen(client);
		struct store_session ss = {.client = {client, cl}, .proto = 4, .next_packet_id = 1};
		struct store_sub sub = {{client, cl}, {"cmd/#", 5}, 1, 0};
		must(store_append_session_put(s, &ss), "session");
		must(store_append_sub_add(s, &sub), "sub");
		for (unsigned k = 0; k < PER_SESSION; k++)
			must(append_message(s, client, cl, k, 32), "append");
		must(store_flush(s), "flush");
	}
	struct store_stats st;
	store_get_stats(s, &st);
	printf("state: %u sessions x %u queued = %u QUEUE_ADD + %u MSG_PUT, log %.1f MB, written in %.2f s\n",
	       SESSIONS, PER_SESSION, SESSIONS * PER_SESSION, SESSIONS * PER_SESSION,
	       (double)st.log_bytes / 1e6, now_s() - t0);
	store_close(s);
}

/* A visitor that keeps what a broker keeps: a message copy with a refcount
 * and one queue entry per QUEUE_ADD. */
struct bmsg {
	uint32_t refcnt;
	uint32_t len;
	char data[];
};

struct bqueue {
	struct bqueue *next;
	struct bmsg *msg;
	uint16_t pid;
	uint8_t qos;
};

struct keep {
	struct bqueue *head;
	uint64_t queued, sessions;
};

static int k_msg_put(void *ctx, const struct store_msg *m, void **h)
{
	struct bmsg *b = wisp_malloc(sizeof *b + m->topic.len + m->payload.len);
	if (b == NULL)
		return WISP_ENOMEM;
	b->refcnt = 1;
	b->len = (uint32_t)(m->topic.len + m->payload.len);
	memcpy(b->data, m->topic.ptr, m->topic.len);
	memcpy(b->data + m->topic.len, m->payload.ptr, m->payload.len);
	*h = b;
	return 0;
}

static void k_release(void *ctx, void *h)
{
	struct bmsg *b = h;
	if (--b->refcnt == 0)
		wisp_free(b);
}

static int k_queue_add(void *ctx, const struct store_queue *q, void *h)
{
	struct keep *k = ctx;
	struct bqueue *e = wisp_malloc(sizeof *e);
	if (e == NULL)
		return WISP_ENOMEM;
	e->msg = h;
	e->msg->refcnt++;
	e->qos = q->qos;
	e->pid = 0;
	e->next = k->head;
	k->head = e;
	k->queued++;
	return 0;
}

static int k_session_put(void *ctx, const struct store_session *s)
{
	((struct keep *)ctx)->sessions++;
	return 0;
}

static const struct store_visitor keep_visitor = {
	.msg_put = k_msg_put, .msg_release = k_release, .queue_add = k_queue_add,
	.session_put = k_session_put,
};

static int n_msg_put(void *ctx, const struct store_msg *m, void **h)
{
	*h = NULL;
	return 0;
}

static const struct store_visitor null_visitor = {.msg_put = n_msg_put};

/* Loads in a child so that its peak RSS is the load's alone. */
static void bench_load(const char *label, const struct store_visitor *v)
{
	pid_t pid = fork();
	if (pid == 0) {
		struct keep k = {0};
		struct store_load_stats ls;
		struct rusage ru0;
		char err[512];
		getrusage(RUSAGE_SELF, &ru0);
		struct store *s = open_fresh(STORE_FSYNC_NO, 0);
		double t0 = now_s();
		if (store_load(s, v, &k, &ls, err, sizeof err) != 0) {
			fprintf(stderr, "%s\n", err);
			_exit(1);
		}
		double t = now_s() - t0;
		printf("load (%s): %.2f s for %" PRIu64 " records (%.1f MB), %.2f M records/s, heap kept %.1f MB, "
		       "sessions %" PRIu64 ", queued %" PRIu64 "\n",
		       label, t, ls.records, (double)ls.bytes / 1e6, (double)ls.records / t / 1e6,
		       (double)wisp_mem_used() / 1e6, k.sessions, k.queued);
		fflush(stdout);
		store_close(s);
		_exit(0);
	}
	int status;
	struct rusage ru;
	wait4(pid, &status, 0, &ru);
	printf("load (%s): child peak RSS %.1f MB\n", label, (double)ru.ru_maxrss / 1024.0);
}

static int emit_big(void *ctx, struct store *s)
{
	char client[32], topic[64];
	static uint8_t payload[32];
	uint64_t id = 1;
	for (unsigned c = 0; c < SESSIONS; c++) {
		client_name(client, sizeof client, c);
		for (unsigned k = 0; k < PER_SESSION; k++, id++) {
			int tl = snprintf(topic, sizeof topic, "sensors/%s/%u", client, k);
			struct store_msg m = {.id = id, .qos = 1, .topic = {topic, (size_t)tl},
					      .payload = {payload, sizeof payload}};
			int rc = store_append_msg_put(s, &m);
			if (rc != 0)
				return rc;
		}
	}
	id = 1;
	for (unsigned c = 0; c < SESSIONS; c++) {
		client_name(client, sizeof client, c);
		size_t cl = strlen(client);
		struct store_session ss = {.client = {client, cl}, .proto = 4, .next_packet_id = 1};
		struct store_sub sub = {{client, cl}, {"cmd/#", 5}, 1, 0};
		if (store_append_session_put(s, &ss) || store_append_sub_add(s, &sub))
			return WISP_ENOMEM;
		for (unsigned k = 0; k < PER_SESSION; k++, id++)
			if (store_append_queue_add(s, client, cl, id, 1, 0) != 0)
				return WISP_ENOMEM;
	}
	return 0;
}

static void bench_compact(void)
{
	struct store *s = open_fresh(STORE_FSYNC_EVERYSEC, 0);
	struct store_stats st;
	must(store_load(s, NULL, NULL, NULL, NULL, 0), "load");
	double t0 = now_s();
	must(store_compact(s, emit_big, NULL), "compact");
	double t_loop = now_s() - t0;
	while (store_get_stats(s, &st), st.compactions == 0) {
		struct pollfd p = {.fd = store_durable_fd(s), .events = POLLIN};
		poll(&p, 1, 1000);
		store_durable_seq(s);
	}
	printf("compaction: loop thread blocked %.2f s (serialise + write), snapshot durable after %.2f s, %.1f MB\n",
	       t_loop, now_s() - t0, (double)st.snap_bytes / 1e6);
	store_close(s);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		dir = argv[1];
	log_set_level(LOG_WARNING);
	setvbuf(stdout, NULL, _IOLBF, 0);
	bench_append(STORE_FSYNC_NO);
	bench_append(STORE_FSYNC_EVERYSEC);
	bench_append(STORE_FSYNC_ALWAYS);
	write_big_state();
	bench_load("engine only", &null_visitor);
	bench_load("broker-like visitor", &keep_visitor);
	bench_compact();
	bench_load("after compaction, broker-like", &keep_visitor);
	rm_dir();
	return 0;
}
