/*
 * libFuzzer target for the whole broker (issue #12, "Tests first"): up to
 * four clients' byte streams go through the real read, dispatch, routing,
 * delivery and persistence code over the fake transport
 * (tests/support/broker_harness.h), with persistence on in a temporary
 * directory (mkdtemp, removed after each input; a crash leaves it). Also built with replay_main.c as a plain program, so gcc builds
 * and CTest replay the corpus.
 *
 * Input: byte 0 picks the configuration (bits 0-1 fsync: no, everysec,
 * always, no; bit 2 max_inflight 2; bit 3 max_queued_messages 3; bit 4
 * max_packet_size 512; bit 5 reads as TCP makes them, all there is, instead
 * of a packet per read). Then events, each led by a byte whose bits 0-1
 * name a client slot and bits 2-3 the event:
 *   0, 1  send: the next byte is a length n, then n bytes the client sends
 *         (a slot whose connection is closed opens a new one first);
 *   2     the client closes its end abruptly (no DISCONNECT);
 *   3     with bit 4 set, the broker restarts on the same directory (at
 *         most RESTARTS_MAX times an input), else nothing.
 *
 * With WISP_FUZZ_TRACE set in the environment it prints what the broker
 * writes to each client (to see what a seed or a reproducer does).
 *
 * Checks, each abort()ing on failure:
 *  - nothing crashes, reads out of bounds or leaks (ASan, LSan and UBSan in
 *    the fuzz build), and every byte wisp_malloc counted is given back by
 *    broker_free (so the gcc replay checks leaks too);
 *  - with a packet per read: no PUBACK or PUBREC for a QoS 1/2 PUBLISH
 *    that appended store records is written before those records are
 *    written to the OS (fsync "always": known fsynced, the broker's
 *    persist.durable), the promise of proto/persist.h. The harness runs
 *    the read hook before each packet and once more when the broker finds
 *    no more input, so the store's seq before and after handling each
 *    PUBLISH is exact. A PUBLISH that appended nothing vouches for nothing
 *    (its ack need not wait for older records, e.g. the session's own).
 *    With TCP reads several packets go in one read and the seq after one
 *    is not known, so only the first check runs.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "broker_harness.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLOTS 4
#define RESTARTS_MAX 3
#define STREAM_MAX 8192  /* per connection; more is not sent */
#define ACKS_REMEMBERED 32

enum fsync_mode { FSYNC_NO, FSYNC_EVERYSEC, FSYNC_ALWAYS };

struct pending_id {
	uint16_t packet_id;
	uint64_t before; /* the store's seq when the broker read the PUBLISH */
	uint64_t after;  /* and once it had handled it */
};

struct slot {
	struct hclient *c;       /* NULL before its first connection */
	uint8_t in[STREAM_MAX];  /* what this connection sent */
	size_t in_len;
	size_t read_len;         /* how much of it the broker has read */
	size_t parsed;           /* whole packets of in[0..read_len] looked at */
	bool in_broken;          /* a length the checker cannot frame: stop looking */
	size_t out_parsed;       /* of the connection's output */
	struct pending_id ids[ACKS_REMEMBERED]; /* QoS 1/2 PUBLISHes read and not yet acked, oldest first */
	size_t nids;
	size_t unresolved;       /* ids[nids - unresolved ..] have seq 0 */
};

static char dir[64];
static char config[512];
static struct harness *H;
static struct slot slots[SLOTS];
static enum fsync_mode fsync_mode;
static bool trace; /* WISP_FUZZ_TRACE set: what the broker writes, on stderr */
static bool check_acks; /* reads a packet at a time: the ack check is exact */

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_broker: %s\n", what);
	abort();
}

static struct slot *slot_of(const struct hclient *c)
{
	for (size_t i = 0; i < SLOTS; i++)
		if (slots[i].c == c)
			return &slots[i];
	fail("a client the fuzzer did not make");
	return NULL;
}

/* What the acks of PUBLISHes handled by now must wait for. */
static uint64_t current_seq(void) { return persist_seq(harness_broker(H)); }

static uint64_t safe_seq(void)
{
	struct broker *b = harness_broker(H);
	if (!b->persist.store)
		return UINT64_MAX;
	if (fsync_mode == FSYNC_ALWAYS)
		return b->persist.durable;
	return store_written_seq(b->persist.store);
}

/* The PUBLISHes read earlier have been handled now: their seq is known. */
static void resolve_all(void)
{
	uint64_t seq = current_seq();
	for (size_t i = 0; i < SLOTS; i++) {
		struct slot *s = &slots[i];
		for (size_t k = s->nids - s->unresolved; k < s->nids; k++)
			s->ids[k].after = seq;
		s->unresolved = 0;
	}
}

static void remember_publish(struct slot *s, uint16_t packet_id)
{
	if (s->nids == ACKS_REMEMBERED) {
		memmove(s->ids, s->ids + 1, (ACKS_REMEMBERED - 1) * sizeof s->ids[0]);
		s->nids--;
		if (s->unresolved > s->nids)
			s->unresolved = s->nids;
	}
	s->ids[s->nids++] = (struct pending_id){.packet_id = packet_id, .before = current_seq()};
	s->unresolved++;
}

static void on_read(void *ctx, struct hclient *c, size_t len)
{
	(void)ctx;
	resolve_all();
	struct slot *s = slot_of(c);
	s->read_len += len;
	while (!s->in_broken && s->parsed < s->read_len) {
		const uint8_t *p = s->in + s->parsed;
		size_t n = harness_frame_len(p, s->read_len - s->parsed);
		if (n == SIZE_MAX) {
			s->in_broken = true;
			break;
		}
		if (n == 0 || n > s->read_len - s->parsed)
			break;
		uint8_t qos = (uint8_t)((p[0] >> 1) & 3);
		if ((p[0] >> 4) == 3 && (qos == 1 || qos == 2)) {
			size_t vh = 2; /* after the fixed header */
			while (vh < 5 && (p[vh - 1] & 0x80))
				vh++;
			if (vh + 2 <= n) {
				size_t tlen = (size_t)p[vh] << 8 | p[vh + 1];
				if (vh + 2 + tlen + 2 <= n)
					remember_publish(s, (uint16_t)(p[vh + 2 + tlen] << 8 | p[vh + 3 + tlen]));
			}
		}
		s->parsed += n;
	}
}

static void on_write(void *ctx, struct hclient *c, const uint8_t *bytes, size_t len)
{
	(void)ctx;
	resolve_all();
	struct slot *s = slot_of(c);
	if (trace) {
		fprintf(stderr, "slot %d <-", (int)(s - slots));
		for (size_t k = 0; k < len; k++)
			fprintf(stderr, " %02x", bytes[k]);
		fputc('\n', stderr);
	}
	size_t n_out;
	const uint8_t *out = client_output(c, &n_out);
	while (s->out_parsed < n_out) {
		const uint8_t *p = out + s->out_parsed;
		size_t n = harness_frame_len(p, n_out - s->out_parsed);
		if (n == SIZE_MAX)
			fail("the broker wrote a malformed fixed header");
		if (n == 0 || n > n_out - s->out_parsed)
			break;
		uint8_t type = p[0] >> 4;
		if ((type == 4 || type == 5) && n >= 4) { /* PUBACK, PUBREC */
			uint16_t id = (uint16_t)(p[2] << 8 | p[3]);
			/* Each PUBLISH gets one ack, in order: the oldest with this
			 * id (a QoS 2 PUBLISH sent again answers again). */
			for (size_t k = 0; k < s->nids; k++) {
				if (s->ids[k].packet_id != id)
					continue;
				/* A PUBLISH that appended nothing vouches for nothing. */
				if (check_acks && s->ids[k].after > s->ids[k].before && s->ids[k].after > safe_seq())
					fail("PUBACK/PUBREC written before the records of its PUBLISH");
				memmove(s->ids + k, s->ids + k + 1, (s->nids - k - 1) * sizeof s->ids[0]);
				s->nids--;
				break;
			}
		}
		s->out_parsed += n;
	}
}

static void start(void)
{
	H = harness_new(config);
	if (!H)
		fail("the broker did not start");
	harness_on_read(H, on_read, NULL);
	harness_on_write(H, on_write, NULL);
	harness_packet_reads(H, check_acks);
	memset(slots, 0, sizeof slots);
}

static void send_bytes(struct slot *s, const uint8_t *p, size_t n)
{
	if (!s->c || client_closed(s->c)) {
		memset(s, 0, sizeof *s);
		s->c = harness_connect(H);
	}
	if (n > STREAM_MAX - s->in_len)
		n = STREAM_MAX - s->in_len;
	if (n == 0)
		return;
	memcpy(s->in + s->in_len, p, n);
	s->in_len += n;
	client_send(s->c, p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	trace = getenv("WISP_FUZZ_TRACE") != NULL;
	/* A directory per input, removed at its end: libFuzzer leaves with
	 * _Exit, so an atexit() clean-up would never run. */
	if (harness_temp_dir(dir, sizeof dir, "wisp-fuzz-broker") != 0)
		fail("mkdtemp");
	static const char *const modes[] = {"no", "everysec", "always", "no"};
	check_acks = !(data[0] & 32);
	fsync_mode = (data[0] & 3) == 1 ? FSYNC_EVERYSEC : (data[0] & 3) == 2 ? FSYNC_ALWAYS : FSYNC_NO;
	snprintf(config, sizeof config,
		 "{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}],"
		 " \"persistence\": {\"enabled\": true, \"dir\": \"%s\", \"fsync\": \"%s\", \"compact_min_size\": 4096},"
		 " \"limits\": {\"max_inflight\": %u, \"max_queued_messages\": %u, \"max_packet_size\": %u},"
		 " \"log\": {\"level\": \"error\"}}",
		 dir, modes[data[0] & 3], data[0] & 4 ? 2u : 20u, data[0] & 8 ? 3u : 1000u,
		 data[0] & 16 ? 512u : 268435455u);
	size_t mem_before = wisp_mem_used();
	start();
	int restarts = 0;
	size_t i = 1;
	while (i < size) {
		uint8_t op = data[i++];
		struct slot *s = &slots[op & 3];
		switch ((op >> 2) & 3) {
		case 0:
		case 1: {
			if (i >= size)
				break;
			size_t n = data[i++];
			if (n > size - i)
				n = size - i;
			send_bytes(s, data + i, n);
			i += n;
			break;
		}
		case 2:
			if (s->c && !client_closed(s->c))
				client_close(s->c);
			break;
		default:
			if ((op & 16) && restarts < RESTARTS_MAX) {
				restarts++;
				harness_free(H);
				start();
			}
			break;
		}
	}
	harness_free(H);
	H = NULL;
	harness_remove_dir(dir);
	if (wisp_mem_used() != mem_before)
		fail("wisp_malloc bytes not given back after broker_free");
	return 0;
}
