/*
 * wisp_bench: an MQTT 3.1.1 (or, with -V 5, MQTT 5) load generator for
 * comparing brokers.
 *
 * One process, one thread, one epoll loop, many client connections speaking
 * raw MQTT over TCP (or TLS through net/tls.h, or WebSocket through net/ws.h), encoded and decoded with the
 * shared codec (mqtt/codec.h). Not a client library: it knows exactly the
 * packets its scenarios need and treats anything else as a protocol error.
 *
 * Files: wisp_bench.c (options, scenarios, phases, report), bench_conn.c
 * (connections and the MQTT flows), bench_stats.c (latency histogram,
 * /proc sampling, clocks).
 *
 * Every message carries a 16-byte header at the start of its payload:
 * publisher index (u32), sequence number (u32), scheduled send time (u64 ns,
 * CLOCK_MONOTONIC), all big-endian. Subscribers check sequence numbers per
 * publisher and measure latency from the scheduled time, so a generator
 * that falls behind its schedule shows up as latency, not as a lower rate
 * (no coordinated omission). With --props the payload is declared UTF-8
 * (Payload Format Indicator 1), so the same header is written as 16
 * printable characters instead (bench_conn.c: header_put_text).
 *
 * Threading: single-threaded throughout.
 */
#ifndef WISP_BENCH_H
#define WISP_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define BENCH_MSG_HEADER 16u
#define BENCH_PID_SPACE 65536u
/* --topic-alias: the Topic Alias Maximum subscribers announce (Mosquitto's
 * and Wisp's default for their own side). */
#define BENCH_TOPIC_ALIAS_MAX 10u

/* Exit statuses, documented in bench/README.md. */
enum bench_exit {
	BENCH_EXIT_OK = 0,
	BENCH_EXIT_INTEGRITY = 1, /* loss or duplicates where the QoS forbids them */
	BENCH_EXIT_USAGE = 2,
	BENCH_EXIT_ERROR = 3,     /* cannot connect, protocol error, setup timeout */
	BENCH_EXIT_NOT_YET = 77,  /* scenario unavailable (CTest's skip code) */
};

enum bench_scenario {
	SCEN_FANIN,
	SCEN_FANOUT,
	SCEN_PAIRS,
	SCEN_LATENCY,
	SCEN_CONNS,
	SCEN_TLS,
	SCEN_STORM,
};

enum bconn_state {
	BC_IDLE,          /* not started (connection batching) */
	BC_CONNECTING,    /* TCP connect in progress */
	BC_HANDSHAKE,     /* TLS handshake in progress */
	BC_AWAIT_CONNACK,
	BC_AWAIT_SUBACK,
	BC_READY,
	BC_CLOSED,
};

/* Publishing side of a connection. */
struct bench_pub {
	uint32_t index;
	char topic[96];
	size_t topic_len;
	uint32_t fanout;         /* deliveries expected per message */
	uint64_t sent;           /* messages written, also the next sequence number */
	uint64_t completed;      /* PUBACK / PUBCOMP received (QoS > 0) */
	uint64_t delivered;      /* deliveries of its messages seen by subscribers */
	uint64_t written_off;    /* closed loop: deliveries given up on after a stall */
	uint32_t inflight;       /* QoS > 0 packets not yet completed */
	uint32_t window;         /* QoS > 0: --inflight, or the broker's v5 Receive Maximum if lower */
	uint16_t next_pid;
	uint8_t *pid_state;      /* BENCH_PID_SPACE entries for QoS > 0, else NULL */
	uint64_t next_due_ns;    /* fixed-rate mode: scheduled time of the next message */
	uint64_t stall_since_ns; /* closed loop: 0, or when it started waiting */
	uint16_t alias_max;      /* --topic-alias: the broker's Topic Alias Maximum (CONNACK) */
	bool alias_set;          /* --topic-alias: alias 1 stands for the topic at the broker */
};

/* Subscribing side of a connection. */
struct bench_sub {
	char filter[96];
	uint32_t *expect;        /* next expected sequence number, per publisher */
	uint8_t *pid_rx;         /* QoS 2: ids between PUBREC and PUBREL */
	/* --topic-alias: for each alias the broker set towards us, the index of
	 * the publisher whose topic it stands for (UINT32_MAX: not set), so an
	 * aliased delivery is checked against the topic it was published on. */
	uint32_t *alias_pub;     /* BENCH_TOPIC_ALIAS_MAX + 1 entries, or NULL */
};

struct bconn {
	int fd;
	struct transport *t;     /* NULL until the TCP connect completes */
	enum bconn_state state;
	uint32_t index;
	uint32_t events;         /* epoll interest currently registered */
	uint8_t *rbuf;
	size_t rlen, rcap;
	uint8_t *wbuf;
	size_t woff, wlen, wcap;
	bool dirty;              /* on the flush list */
	struct bconn *next_dirty;
	struct bench_pub *pub;
	struct bench_sub *sub;
	uint64_t started_ns;     /* tls scenario: when this attempt began */
	struct tls_session *session; /* tls --resume: offered on every reconnect */
	bool probe;              /* storm: the established client that pings */
	bool on_port2;           /* --port2: connects to the second node */
};

struct bench_opts {
	enum bench_scenario scenario;
	const char *host;
	uint16_t port;
	uint16_t port2;          /* 0 = one broker; else a second cluster node */
	uint8_t qos;
	double duration_s, warmup_s, drain_s, setup_timeout_s;
	uint64_t count;          /* messages published, at most */
	size_t payload_size;
	uint32_t publishers, subscribers, pairs, conns, clients;
	double rate;             /* total messages/s; 0 = closed loop */
	uint32_t outstanding;    /* closed loop: messages per publisher not yet delivered */
	uint32_t inflight;       /* QoS > 0 window per publisher */
	uint32_t connect_concurrency;
	uint32_t src_addrs;      /* 127.0.0.1 .. 127.0.0.N as source addresses */
	uint16_t keepalive;
	pid_t broker_pid;
	pid_t broker_pid2;       /* --port2's node: its CPU and RSS are added */
	bool json;
	bool tls;
	const char *cafile;
	const char *tls_hostname;
	bool insecure;
	const char *tls_curves;  /* ECDHE groups offered, in order (NULL = defaults) */
	const char *tls_suites;  /* ciphersuites offered, in order (NULL = defaults) */
	bool resume;             /* tls scenario: reconnect with the first session (ticket or ID) */
	const char *topic_prefix;
	bool persistent;         /* subscribers keep a persistent session (clean session 0) */
	bool ws;                 /* MQTT over WebSocket (over TLS with tls) */
	const char *ws_path;     /* upgrade request path, NULL = /mqtt */
	uint8_t version;         /* MQTT protocol level of every connection: 4 (3.1.1) or 5 */
	bool props;              /* v5: each PUBLISH carries content type, a user property,
				  * a message expiry interval and payload format 1 */
	bool topic_alias;        /* v5: subscribers accept aliases, publishers use one */
};

/* Counters for the whole run; the report takes differences of snapshots. */
struct bench_counts {
	uint64_t published;
	uint64_t completed;      /* publisher-side QoS flows finished */
	uint64_t delivered;
	uint64_t lost;           /* sum of sequence gaps plus what never arrived */
	uint64_t gaps;           /* number of gap events */
	uint64_t dups;           /* sequence number at or below one already seen */
	uint64_t qos2_redelivered; /* QoS 2 PUBLISH for an id still awaiting PUBREL */
	uint64_t foreign;        /* payloads that are not ours (bad header) */
	uint64_t unexpected_acks;
	uint64_t bad_props;      /* v5: a delivery whose properties or topic alias differ from what was sent */
	uint64_t stalls;         /* closed loop waits given up on (suspected loss) */
	uint64_t connects;       /* CONNACKs received */
	uint64_t handshakes;     /* tls scenario: full connect cycles */
	uint64_t resumed;        /* tls scenario: cycles whose handshake resumed a session */
	uint64_t connect_failures;
	uint64_t pings;          /* storm: PINGRESPs the probe received */
};

/* ---- bench_stats.c ---- */

uint64_t bench_now_ns(void);

#define BENCH_HIST_BUCKETS 1984
struct bench_hist {
	uint64_t count;
	uint64_t max;
	uint64_t sum;
	uint64_t bucket[BENCH_HIST_BUCKETS];
};

void bench_hist_add(struct bench_hist *h, uint64_t v);
/* Value (ns) at quantile q in [0,1]; 0 for an empty histogram. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);

struct bench_proc {
	uint64_t cpu_ticks; /* utime + stime */
	uint64_t rss_bytes;
};

/* Reads /proc/PID/stat. 0, or -1 when the process is gone. */
int bench_proc_read(pid_t pid, struct bench_proc *out);
/* Seconds per clock tick of /proc/PID/stat. */
double bench_proc_tick_s(void);
/* This process's user+system CPU seconds. */
double bench_self_cpu_s(void);

/* ---- bench_conn.c ---- */

struct bench_run;

/* Everything the connection code shares with the scenario driver. */
struct bench_run {
	const struct bench_opts *o;
	int epfd;
	struct bconn *conns;
	uint32_t nconns;
	struct bench_pub *pubs;
	struct bench_sub *subs;
	uint32_t nsubs;
	uint32_t npubs;
	struct bench_counts c;
	struct bench_hist *lat;     /* latency of deliveries while measuring */
	bool measuring;
	bool publishing;
	uint8_t *payload;           /* template of payload_size bytes */
	struct bconn *dirty;
	struct sockaddr_storage *dst, *dst2; /* dst2: --port2, else NULL */
	size_t dst_len;
	void *tls_ctx;              /* struct tls_ctx *, or NULL */
	uint32_t not_ready;         /* connections not yet READY */
	uint32_t connecting;        /* connections between connect() and READY */
	bool refused;               /* a connect was refused */
	uint64_t epoch_ns;          /* --props: text headers carry times relative to this */
	uint64_t ping_sent_ns;      /* storm: when the probe's outstanding PINGREQ went out, or 0 */
	struct bench_hist *ping;    /* storm: the probe's PINGREQ round trips */
	char error[256];            /* first fatal error; non-empty stops the run */
};

/* Starts the TCP connect of c; 0, or -1 with r->error set (or refused). */
int bconn_start(struct bench_run *r, struct bconn *c);
/* Handles epoll events for c. */
void bconn_on_event(struct bench_run *r, struct bconn *c, uint32_t events);
/* Writes what is buffered for every dirty connection. */
void bconn_flush_all(struct bench_run *r);
/* Queues one PUBLISH from c's publisher with scheduled time `sched_ns`;
 * false when the window or the output buffer is full. */
bool bconn_publish(struct bench_run *r, struct bconn *c, uint64_t sched_ns);
/* Queues a PINGREQ (storm: the probe's, timed by r->ping_sent_ns). */
void bconn_ping(struct bench_run *r, struct bconn *c);
/* Queues a DISCONNECT. */
void bconn_disconnect(struct bench_run *r, struct bconn *c);
/* Closes the socket and frees buffers. */
void bconn_close(struct bench_run *r, struct bconn *c);
/* Output bytes queued but not yet written. */
size_t bconn_pending_out(const struct bconn *c);

#endif
