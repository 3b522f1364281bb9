/*
 * wisp_bench: scenarios, phases and the report. See bench.h for the model
 * and bench/README.md for how to read the output.
 *
 * A run goes through fixed phases, each bounded in time:
 *   setup   connect every connection (at most --connect-concurrency at once)
 *           and subscribe; fails after --setup-timeout;
 *   warmup  publish, measure nothing (caches, TCP windows, allocator);
 *   measure publish and count: the figures cover only this window, which
 *           also ends early when --count messages have been published;
 *   drain   stop publishing and wait up to --drain for every QoS flow to
 *           finish and every message to arrive; what is still missing then
 *           is lost.
 *
 * Publishing is closed-loop unless --rate is given: a publisher stops while
 * --outstanding of its messages (times its fan-out) are not yet delivered,
 * so a broker cannot look fast by buffering. At QoS 0 a broker may drop
 * messages, which would stall a closed loop for ever; after one second
 * without progress the missing deliveries are written off (counted in
 * "stalls") and publishing resumes. With --rate the publishers follow a
 * fixed schedule and stamp each message with its scheduled time.
 *
 * Single-threaded.
 */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "err.h"
#include "tls.h"

#define NS_PER_S 1000000000.0
#define PUBLISH_BURST 256u      /* per publisher per loop turn, for fairness */
#define STALL_NS 1000000000ull  /* closed loop: give up waiting after this */
#define RSS_SAMPLE_NS 100000000ull
#define MAX_EVENTS 512
#define GEN_BOUND_PCT 90.0
#define BROKER_BOUND_PCT 90.0

static const char *const scenario_names[] = {"fanin", "fanout", "pairs", "latency", "conns", "tls", "storm"};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: wisp_bench SCENARIO [options]\n"
		"scenarios:\n"
		"  fanin     P publishers -> 1 subscriber on a wildcard filter\n"
		"  fanout    1 publisher -> S subscribers\n"
		"  pairs     N publisher/subscriber pairs, one topic each\n"
		"  latency   N pairs at a fixed total --rate; latency percentiles\n"
		"  conns     C idle connections with one subscription each; connect rate, RSS per connection\n"
		"  tls       TLS handshake + CONNECT + DISCONNECT cycles on --clients connections\n"
		"  storm     C clients connect at once, are cut off and reconnect at once, while an\n"
		"            established client pings; every CONNACK and each PINGRESP in its keep-alive\n"
		"options:\n"
		"  -h, --host ADDR            broker address (127.0.0.1)\n"
		"  -p, --port PORT            broker port (1883)\n"
		"      --port2 PORT           a second cluster node on the same host: pairs puts\n"
		"                             even pairs' subscribers there (crossing nodes) and\n"
		"                             every fourth pair (from 3) wholly there; latency puts\n"
		"                             every subscriber there\n"
		"      --broker-pid2 PID      the --port2 node: its CPU and RSS are added to\n"
		"                             --broker-pid's in the report\n"
		"  -q, --qos 0|1|2            QoS of publishes and subscriptions (0)\n"
		"  -d, --duration S           measurement window, seconds (5); conns: hold time\n"
		"  -w, --warmup S             warm-up before measuring, seconds (1)\n"
		"      --drain S              wait for stragglers after publishing stops (2)\n"
		"  -n, --count N              stop after N messages published (100000000)\n"
		"  -s, --payload-size B       payload bytes, at least 16 (16)\n"
		"  -P, --publishers N         fanin publishers (10)\n"
		"  -S, --subscribers N        fanout subscribers (100)\n"
		"  -N, --pairs N              pairs and latency pairs (10)\n"
		"  -C, --conns N              conns connections (1000)\n"
		"  -K, --clients N            tls concurrent connections (4)\n"
		"  -r, --rate R               fixed total rate, msg/s (latency: 10000; others: closed loop)\n"
		"      --outstanding N        closed loop: undelivered messages per publisher (64)\n"
		"      --inflight N           QoS 1/2 unacknowledged publishes per publisher (32)\n"
		"      --connect-concurrency N  connections being set up at once (256)\n"
		"      --src-addrs N          spread connections over 127.0.0.1..N (auto)\n"
		"      --keepalive S          CONNECT keepalive (0 = none)\n"
		"      --broker-pid PID       read the broker's CPU and RSS from /proc/PID\n"
		"      --setup-timeout S      give up connecting after S seconds (30)\n"
		"      --topic-prefix T       topic prefix (bench)\n"
		"      --tls                  use TLS for every connection (tls scenario: always)\n"
		"      --persistent           subscribers use persistent sessions (clean session 0), so a\n"
		"                             broker with durable storage must store what it queues\n"
		"      --cafile FILE          TLS: verify the broker against this CA\n"
		"      --insecure             TLS: do not verify the broker (default without --cafile)\n"
		"      --tls-hostname NAME    TLS: name to verify (localhost)\n"
		"      --tls-curves LIST      TLS: ECDHE groups to offer, in order (x25519:secp256r1)\n"
		"      --tls-suites LIST      TLS: ciphersuites to offer, in order (IANA names)\n"
		"      --resume               tls: reconnect with the session of each client's first\n"
		"                             handshake (ticket or session ID): resumed handshakes\n"
		"      --ws                   MQTT over WebSocket (RFC 6455; wss with --tls): an upgrade\n"
		"                             per connection, binary frames masked with a zero key\n"
		"      --ws-path PATH         WebSocket: the request path (/mqtt)\n"
		"  -V, --mqtt-version 4|5     MQTT protocol level of every connection (4: 3.1.1)\n"
		"      --props                v5: each PUBLISH carries content type, a user property, a\n"
		"                             message expiry interval and payload format 1 (UTF-8);\n"
		"                             subscribers check that they arrive intact\n"
		"      --topic-alias          v5: subscribers allow %u topic aliases, publishers send\n"
		"                             alias 1 instead of the topic after their first PUBLISH\n"
		"      --json                 one JSON object on stdout instead of the text report\n"
		"exit status: 0 ok, 1 loss/duplicates where the QoS forbids them, 2 usage,\n"
		"             3 error (connect, protocol, timeout), 77 scenario not available\n",
		BENCH_TOPIC_ALIAS_MAX);
}

static bool parse_num(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || isnan(v) || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

enum {
	OPT_DRAIN = 256, OPT_OUTSTANDING, OPT_INFLIGHT, OPT_CONC, OPT_SRC, OPT_KEEPALIVE, OPT_PID,
	OPT_SETUP, OPT_PREFIX, OPT_TLS, OPT_CAFILE, OPT_INSECURE, OPT_TLSHOST, OPT_JSON, OPT_PERSISTENT,
	OPT_WS, OPT_WS_PATH,
	OPT_RESUME,
	OPT_TLSCURVES,
	OPT_TLSSUITES,
	OPT_PROPS,
	OPT_TOPIC_ALIAS,
	OPT_PORT2,
	OPT_PID2,
};

static int parse_args(int argc, char **argv, struct bench_opts *o)
{
	static const struct option longopts[] = {
		{"host", required_argument, NULL, 'h'},
		{"port", required_argument, NULL, 'p'},
		{"port2", required_argument, NULL, OPT_PORT2},
		{"broker-pid2", required_argument, NULL, OPT_PID2},
		{"qos", required_argument, NULL, 'q'},
		{"duration", required_argument, NULL, 'd'},
		{"warmup", required_argument, NULL, 'w'},
		{"count", required_argument, NULL, 'n'},
		{"payload-size", required_argument, NULL, 's'},
		{"publishers", required_argument, NULL, 'P'},
		{"subscribers", required_argument, NULL, 'S'},
		{"pairs", required_argument, NULL, 'N'},
		{"conns", required_argument, NULL, 'C'},
		{"clients", required_argument, NULL, 'K'},
		{"rate", required_argument, NULL, 'r'},
		{"drain", required_argument, NULL, OPT_DRAIN},
		{"outstanding", required_argument, NULL, OPT_OUTSTANDING},
		{"inflight", required_argument, NULL, OPT_INFLIGHT},
		{"connect-concurrency", required_argument, NULL, OPT_CONC},
		{"src-addrs", required_argument, NULL, OPT_SRC},
		{"keepalive", required_argument, NULL, OPT_KEEPALIVE},
		{"broker-pid", required_argument, NULL, OPT_PID},
		{"setup-timeout", required_argument, NULL, OPT_SETUP},
		{"topic-prefix", required_argument, NULL, OPT_PREFIX},
		{"tls", no_argument, NULL, OPT_TLS},
		{"cafile", required_argument, NULL, OPT_CAFILE},
		{"insecure", no_argument, NULL, OPT_INSECURE},
		{"resume", no_argument, NULL, OPT_RESUME},
		{"tls-curves", required_argument, NULL, OPT_TLSCURVES},
		{"tls-suites", required_argument, NULL, OPT_TLSSUITES},
		{"tls-hostname", required_argument, NULL, OPT_TLSHOST},
		{"json", no_argument, NULL, OPT_JSON},
		{"persistent", no_argument, NULL, OPT_PERSISTENT},
		{"ws", no_argument, NULL, OPT_WS},
		{"ws-path", required_argument, NULL, OPT_WS_PATH},
		{"mqtt-version", required_argument, NULL, 'V'},
		{"props", no_argument, NULL, OPT_PROPS},
		{"topic-alias", no_argument, NULL, OPT_TOPIC_ALIAS},
		{"help", no_argument, NULL, 'H'},
		{NULL, 0, NULL, 0},
	};
	*o = (struct bench_opts){
		.host = "127.0.0.1", .port = 1883, .duration_s = 5, .warmup_s = 1, .drain_s = 2,
		.setup_timeout_s = 30, .count = 100000000, .payload_size = 16, .publishers = 10,
		.subscribers = 100, .pairs = 10, .conns = 1000, .clients = 4, .rate = -1,
		.outstanding = 64, .inflight = 32, .connect_concurrency = 256, .src_addrs = 0,
		.tls_hostname = "localhost", .topic_prefix = "bench", .version = 4,
	};
	int ch;
	double v;
	while ((ch = getopt_long(argc, argv, "h:p:q:d:w:n:s:P:S:N:C:K:r:V:", longopts, NULL)) != -1) {
		const char *bad = NULL;
		switch (ch) {
		case 'h': o->host = optarg; break;
		case 'p': if (!parse_num(optarg, 1, 65535, &v)) bad = "--port"; else o->port = (uint16_t)v; break;
		case 'q': if (!parse_num(optarg, 0, 2, &v) || v != floor(v)) bad = "--qos"; else o->qos = (uint8_t)v; break;
		case 'd': if (!parse_num(optarg, 0.01, 3600, &v)) bad = "--duration"; else o->duration_s = v; break;
		case 'w': if (!parse_num(optarg, 0, 3600, &v)) bad = "--warmup"; else o->warmup_s = v; break;
		case 'n': if (!parse_num(optarg, 1, 4e9, &v)) bad = "--count"; else o->count = (uint64_t)v; break;
		case 's': if (!parse_num(optarg, BENCH_MSG_HEADER, 16777216, &v)) bad = "--payload-size (16 .. 16 MiB)"; else o->payload_size = (size_t)v; break;
		case 'P': if (!parse_num(optarg, 1, 10000, &v)) bad = "--publishers"; else o->publishers = (uint32_t)v; break;
		case 'S': if (!parse_num(optarg, 1, 19000, &v)) bad = "--subscribers"; else o->subscribers = (uint32_t)v; break;
		case 'N': if (!parse_num(optarg, 1, 9000, &v)) bad = "--pairs"; else o->pairs = (uint32_t)v; break;
		case 'C': if (!parse_num(optarg, 1, 1000000, &v)) bad = "--conns"; else o->conns = (uint32_t)v; break;
		case 'K': if (!parse_num(optarg, 1, 10000, &v)) bad = "--clients"; else o->clients = (uint32_t)v; break;
		case 'r': if (!parse_num(optarg, 0, 1e9, &v)) bad = "--rate"; else o->rate = v; break;
		case OPT_DRAIN: if (!parse_num(optarg, 0, 3600, &v)) bad = "--drain"; else o->drain_s = v; break;
		case OPT_OUTSTANDING: if (!parse_num(optarg, 1, 1e6, &v)) bad = "--outstanding"; else o->outstanding = (uint32_t)v; break;
		case OPT_INFLIGHT: if (!parse_num(optarg, 1, 65000, &v)) bad = "--inflight"; else o->inflight = (uint32_t)v; break;
		case OPT_CONC: if (!parse_num(optarg, 1, 100000, &v)) bad = "--connect-concurrency"; else o->connect_concurrency = (uint32_t)v; break;
		case OPT_SRC: if (!parse_num(optarg, 1, 254, &v)) bad = "--src-addrs"; else o->src_addrs = (uint32_t)v; break;
		case OPT_KEEPALIVE: if (!parse_num(optarg, 0, 65535, &v)) bad = "--keepalive"; else o->keepalive = (uint16_t)v; break;
		case OPT_PID: if (!parse_num(optarg, 1, 4194304, &v)) bad = "--broker-pid"; else o->broker_pid = (pid_t)v; break;
		case OPT_SETUP: if (!parse_num(optarg, 0.1, 3600, &v)) bad = "--setup-timeout"; else o->setup_timeout_s = v; break;
		case OPT_PREFIX: o->topic_prefix = optarg; break;
		case OPT_TLS: o->tls = true; break;
		case OPT_CAFILE: o->cafile = optarg; break;
		case OPT_INSECURE: o->insecure = true; break;
		case OPT_RESUME: o->resume = true; break;
		case OPT_TLSCURVES: o->tls_curves = optarg; break;
		case OPT_TLSSUITES: o->tls_suites = optarg; break;
		case OPT_TLSHOST: o->tls_hostname = optarg; break;
		case OPT_JSON: o->json = true; break;
		case OPT_PERSISTENT: o->persistent = true; break;
		case OPT_WS: o->ws = true; break;
		case OPT_WS_PATH: o->ws_path = optarg; break;
		case 'V': if (!parse_num(optarg, 4, 5, &v) || v != floor(v)) bad = "--mqtt-version (4 or 5)"; else o->version = (uint8_t)v; break;
		case OPT_PROPS: o->props = true; break;
		case OPT_TOPIC_ALIAS: o->topic_alias = true; break;
		case OPT_PORT2: if (!parse_num(optarg, 1, 65535, &v)) bad = "--port2"; else o->port2 = (uint16_t)v; break;
		case OPT_PID2: if (!parse_num(optarg, 1, 4194304, &v)) bad = "--broker-pid2"; else o->broker_pid2 = (pid_t)v; break;
		case 'H': usage(stdout); exit(BENCH_EXIT_OK);
		default: usage(stderr); return -1;
		}
		if (bad) {
			fprintf(stderr, "wisp_bench: bad value for %s: %s\n", bad, optarg);
			return -1;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return -1;
	}
	size_t i;
	for (i = 0; i < sizeof scenario_names / sizeof scenario_names[0]; i++)
		if (strcmp(argv[optind], scenario_names[i]) == 0)
			break;
	if (i == sizeof scenario_names / sizeof scenario_names[0]) {
		fprintf(stderr, "wisp_bench: unknown scenario '%s'\n", argv[optind]);
		return -1;
	}
	o->scenario = (enum bench_scenario)i;
	if (o->rate < 0)
		o->rate = o->scenario == SCEN_LATENCY ? 10000 : 0;
	if (o->scenario == SCEN_LATENCY && o->rate == 0) {
		fprintf(stderr, "wisp_bench: latency needs a fixed --rate above 0\n");
		return -1;
	}
	if (o->port2 && o->scenario != SCEN_PAIRS && o->scenario != SCEN_LATENCY) {
		fprintf(stderr, "wisp_bench: --port2 is for pairs and latency\n");
		return -1;
	}
	if (o->broker_pid2 && (!o->port2 || !o->broker_pid)) {
		fprintf(stderr, "wisp_bench: --broker-pid2 needs --port2 and --broker-pid\n");
		return -1;
	}
	if (o->scenario == SCEN_TLS)
		o->tls = true;
	if (o->scenario == SCEN_STORM && o->keepalive == 0)
		o->keepalive = 10; /* the probe's PINGRESPs are judged against it */
	if ((o->props || o->topic_alias) && o->version != 5) {
		fprintf(stderr, "wisp_bench: --props and --topic-alias need -V 5\n");
		return -1;
	}
	if (strlen(o->topic_prefix) > 40) {
		fprintf(stderr, "wisp_bench: --topic-prefix is limited to 40 bytes\n");
		return -1;
	}
	return 0;
}

/* Whether subscriber `s` receives publisher `p`'s messages. */
static bool sub_expects(enum bench_scenario sc, uint32_t s, uint32_t p)
{
	switch (sc) {
	case SCEN_FANIN:
	case SCEN_FANOUT:
		return true;
	case SCEN_PAIRS:
	case SCEN_LATENCY:
		return s == p;
	default:
		return false;
	}
}

/* --port2: which node pair `k`'s subscriber (or publisher) connects to.
 * pairs: even pairs cross nodes (publisher on port, subscriber on port2),
 * odd pairs stay on one node, alternating between the two, so each node
 * holds half the connections. latency: every subscriber on port2. */
static bool on_port2(enum bench_scenario sc, bool is_sub, uint32_t k)
{
	if (sc == SCEN_LATENCY)
		return is_sub;
	if (k % 2 == 0)
		return is_sub;
	return k % 4 == 3;
}

static int setup(struct bench_run *r, const struct bench_opts *o)
{
	uint32_t npub = 0, nsub = 0, nidle = 0;
	switch (o->scenario) {
	case SCEN_FANIN: npub = o->publishers; nsub = 1; break;
	case SCEN_FANOUT: npub = 1; nsub = o->subscribers; break;
	case SCEN_PAIRS:
	case SCEN_LATENCY: npub = nsub = o->pairs; break;
	case SCEN_CONNS: nsub = o->conns; break;
	case SCEN_TLS: nidle = o->clients; break;
	case SCEN_STORM: nsub = o->conns; nidle = 1; break; /* the probe comes last */
	}
	r->npubs = npub;
	r->nconns = npub + nsub + nidle;
	r->conns = wisp_calloc(r->nconns, sizeof *r->conns);
	r->pubs = wisp_calloc(npub ? npub : 1, sizeof *r->pubs);
	struct bench_sub *subs = wisp_calloc(nsub ? nsub : 1, sizeof *subs);
	r->subs = subs;
	r->nsubs = nsub;
	r->payload = wisp_malloc(o->payload_size);
	r->lat = wisp_calloc(1, sizeof *r->lat);
	r->ping = wisp_calloc(1, sizeof *r->ping);
	if (!r->conns || !r->pubs || !subs || !r->payload || !r->lat || !r->ping)
		return -1;
	memset(r->payload, 'x', o->payload_size);
	r->epoch_ns = bench_now_ns();
	/* Connections are started in array order: subscribers first, so
	 * every subscription exists before the first message. */
	for (uint32_t i = 0; i < r->nconns; i++) {
		struct bconn *c = &r->conns[i];
		c->fd = -1;
		c->index = i;
		c->state = BC_IDLE;
		if (o->port2)
			c->on_port2 = on_port2(o->scenario, i < nsub, i < nsub ? i : i - nsub);
		if (i < nsub) {
			struct bench_sub *s = &subs[i];
			c->sub = s;
			const char *pre = o->topic_prefix;
			switch (o->scenario) {
			case SCEN_FANIN: snprintf(s->filter, sizeof s->filter, "%s/fanin/+", pre); break;
			case SCEN_FANOUT: snprintf(s->filter, sizeof s->filter, "%s/fanout", pre); break;
			case SCEN_CONNS:
			case SCEN_STORM: snprintf(s->filter, sizeof s->filter, "%s/conns/%u", pre, i); break;
			default: snprintf(s->filter, sizeof s->filter, "%s/pairs/%u", pre, i); break;
			}
			if (npub) {
				s->expect = wisp_calloc(npub, sizeof *s->expect);
				if (!s->expect)
					return -1;
			}
			if (o->topic_alias) {
				s->alias_pub = wisp_malloc((BENCH_TOPIC_ALIAS_MAX + 1) * sizeof *s->alias_pub);
				if (!s->alias_pub)
					return -1;
				for (uint32_t a = 0; a <= BENCH_TOPIC_ALIAS_MAX; a++)
					s->alias_pub[a] = UINT32_MAX;
			}
			if (o->qos == 2 && o->scenario != SCEN_CONNS) {
				s->pid_rx = wisp_calloc(BENCH_PID_SPACE, 1);
				if (!s->pid_rx)
					return -1;
			}
		} else if (i < nsub + npub) {
			uint32_t k = i - nsub;
			struct bench_pub *p = &r->pubs[k];
			c->pub = p;
			p->index = k;
			const char *pre = o->topic_prefix;
			int n;
			switch (o->scenario) {
			case SCEN_FANIN: n = snprintf(p->topic, sizeof p->topic, "%s/fanin/%u", pre, k); break;
			case SCEN_FANOUT: n = snprintf(p->topic, sizeof p->topic, "%s/fanout", pre); break;
			default: n = snprintf(p->topic, sizeof p->topic, "%s/pairs/%u", pre, k); break;
			}
			p->topic_len = (size_t)n;
			p->fanout = 0;
			for (uint32_t s = 0; s < nsub; s++)
				p->fanout += sub_expects(o->scenario, s, k) ? 1u : 0u;
			if (o->qos > 0) {
				p->pid_state = wisp_calloc(BENCH_PID_SPACE, 1);
				if (!p->pid_state)
					return -1;
			}
		}
	}
	return 0;
}

static int resolve_one(const char *host, uint16_t port_num, struct sockaddr_storage **dst, size_t *len)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
	char port[8];
	snprintf(port, sizeof port, "%u", port_num);
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "wisp_bench: %s: %s\n", host, gai_strerror(rc));
		return -1;
	}
	*dst = wisp_calloc(1, sizeof **dst);
	if (!*dst) {
		freeaddrinfo(res);
		return -1;
	}
	memcpy(*dst, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Both nodes are on `host`, so one address length serves both. */
static int resolve(struct bench_run *r, const struct bench_opts *o)
{
	if (resolve_one(o->host, o->port, &r->dst, &r->dst_len) != 0)
		return -1;
	size_t len2 = 0;
	if (o->port2 && resolve_one(o->host, o->port2, &r->dst2, &len2) != 0)
		return -1;
	return 0;
}

static int raise_nofile(uint32_t need)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return -1;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
		fprintf(stderr, "wisp_bench: %u connections need %u open files; the limit is %llu\n",
			need - 32, need, (unsigned long long)rl.rlim_cur);
		return -1;
	}
	return 0;
}

/* One loop turn: wait at most until `deadline_ns` (0 = do not wait). */
static void poll_once(struct bench_run *r, uint64_t deadline_ns)
{
	struct epoll_event ev[MAX_EVENTS];
	bconn_flush_all(r);
	uint64_t now = bench_now_ns();
	struct timespec ts = {0, 0};
	if (deadline_ns > now) {
		uint64_t d = deadline_ns - now;
		ts.tv_sec = (time_t)(d / 1000000000u);
		ts.tv_nsec = (long)(d % 1000000000u);
	}
	int n = epoll_pwait2(r->epfd, ev, MAX_EVENTS, &ts, NULL);
	if (n == -1 && errno != EINTR) {
		snprintf(r->error, sizeof r->error, "epoll_pwait2: %s", strerror(errno));
		return;
	}
	for (int i = 0; i < n && !r->error[0]; i++)
		bconn_on_event(r, ev[i].data.ptr, ev[i].events);
}

struct sample {
	uint64_t t_ns;
	struct bench_counts c;
	struct bench_proc broker;
	bool has_broker;
	double self_cpu_s;
};

/* The broker's figures; with --broker-pid2 the sum over both nodes. */
static int read_brokers(const struct bench_opts *o, struct bench_proc *out)
{
	if (bench_proc_read(o->broker_pid, out) != 0)
		return -1;
	struct bench_proc second;
	if (o->broker_pid2 > 0) {
		if (bench_proc_read(o->broker_pid2, &second) != 0)
			return -1;
		out->cpu_ticks += second.cpu_ticks;
		out->rss_bytes += second.rss_bytes;
	}
	return 0;
}

static void take_sample(const struct bench_run *r, struct sample *s)
{
	s->t_ns = bench_now_ns();
	s->c = r->c;
	s->has_broker = r->o->broker_pid > 0 && read_brokers(r->o, &s->broker) == 0;
	s->self_cpu_s = bench_self_cpu_s();
}

/* Starts connections in array order, keeping at most `limit` connecting. */
static void start_pending(struct bench_run *r, uint32_t *cursor, uint32_t limit)
{
	while (*cursor < r->nconns && r->connecting < limit && !r->error[0]) {
		struct bconn *c = &r->conns[(*cursor)++];
		if (bconn_start(r, c) != 0)
			return;
	}
}

static int connect_all(struct bench_run *r)
{
	const struct bench_opts *o = r->o;
	uint64_t deadline = bench_now_ns() + (uint64_t)(o->setup_timeout_s * NS_PER_S);
	uint32_t cursor = 0;
	r->not_ready = r->nconns;
	while (r->not_ready > 0 && !r->error[0] && !interrupted) {
		start_pending(r, &cursor, o->connect_concurrency);
		if (bench_now_ns() > deadline) {
			snprintf(r->error, sizeof r->error, "setup timeout: %u of %u connections not ready after %.1f s",
				 r->not_ready, r->nconns, o->setup_timeout_s);
			break;
		}
		uint64_t wake = bench_now_ns() + 10000000u;
		poll_once(r, wake < deadline ? wake : deadline);
	}
	return r->error[0] || interrupted ? -1 : 0;
}

/* Publishes what the schedule or the closed loop allows; true when some
 * publisher stopped only because of its burst limit. */
static bool publish_step(struct bench_run *r, uint64_t now, uint64_t *next_due)
{
	const struct bench_opts *o = r->o;
	bool more = false;
	*next_due = UINT64_MAX;
	for (uint32_t k = 0; k < r->npubs; k++) {
		struct bench_pub *p = &r->pubs[k];
		struct bconn *c = NULL;
		/* Publishers follow the subscribers in the connection array. */
		c = &r->conns[r->nconns - r->npubs + k];
		uint32_t n = 0;
		for (; n < PUBLISH_BURST; n++) {
			if (r->c.published >= o->count)
				return false;
			if (o->rate > 0) {
				if (p->next_due_ns > now)
					break;
				if (!bconn_publish(r, c, p->next_due_ns))
					break;
				p->next_due_ns += (uint64_t)(NS_PER_S * r->npubs / o->rate);
			} else {
				uint64_t exp = p->sent * p->fanout;
				uint64_t got = p->delivered + p->written_off;
				if (exp > got && exp - got >= (uint64_t)o->outstanding * p->fanout) {
					if (p->stall_since_ns == 0) {
						p->stall_since_ns = now;
					} else if (now - p->stall_since_ns > STALL_NS) {
						p->written_off = exp - p->delivered;
						p->stall_since_ns = 0;
						r->c.stalls++;
						continue;
					}
					break;
				}
				if (!bconn_publish(r, c, now))
					break;
				p->stall_since_ns = 0;
			}
		}
		if (n == PUBLISH_BURST)
			more = true;
		if (o->rate > 0 && p->next_due_ns < *next_due)
			*next_due = p->next_due_ns;
		if (p->stall_since_ns && p->stall_since_ns + STALL_NS + 1 < *next_due)
			*next_due = p->stall_since_ns + STALL_NS + 1;
	}
	return more;
}

/* True when every QoS flow has finished and every message has arrived. */
static bool drained(const struct bench_run *r)
{
	for (uint32_t k = 0; k < r->npubs; k++) {
		const struct bench_pub *p = &r->pubs[k];
		if (r->o->qos > 0 && p->completed < p->sent)
			return false;
		if (p->delivered + p->written_off < p->sent * p->fanout)
			return false;
	}
	return true;
}

/* What never arrived, per subscriber and publisher, after the drain. */
static void count_missing(struct bench_run *r)
{
	for (uint32_t i = 0; i < r->nconns; i++) {
		struct bench_sub *s = r->conns[i].sub;
		if (!s || !s->expect)
			continue;
		for (uint32_t k = 0; k < r->npubs; k++) {
			if (!sub_expects(r->o->scenario, i, k))
				continue;
			uint64_t sent = r->pubs[k].sent;
			if (sent > s->expect[k]) {
				r->c.lost += sent - s->expect[k];
				r->c.gaps++;
			}
		}
	}
}

static void close_all(struct bench_run *r)
{
	r->publishing = false;
	for (uint32_t i = 0; i < r->nconns; i++)
		if (r->conns[i].state == BC_READY)
			bconn_disconnect(r, &r->conns[i]);
	bconn_flush_all(r);
	for (uint32_t i = 0; i < r->nconns; i++) {
		if (r->conns[i].fd >= 0)
			bconn_close(r, &r->conns[i]);
		tls_session_free(r->conns[i].session);
		r->conns[i].session = NULL;
	}
}

/* ---- the report ---- */

struct report {
	double window_s;
	double broker_cpu_s, broker_cpu_pct, gen_cpu_pct;
	bool has_broker;
	uint64_t rss, rss_max, rss_before;
	const char *limit;
};

static void window_figures(const struct bench_run *r, const struct sample *a, const struct sample *b,
			   struct report *rep)
{
	rep->window_s = (double)(b->t_ns - a->t_ns) / NS_PER_S;
	if (rep->window_s <= 0)
		rep->window_s = 1e-9;
	rep->has_broker = a->has_broker && b->has_broker;
	rep->broker_cpu_s = rep->has_broker ? (double)(b->broker.cpu_ticks - a->broker.cpu_ticks) * bench_proc_tick_s() : 0;
	rep->broker_cpu_pct = rep->broker_cpu_s / rep->window_s * 100;
	rep->gen_cpu_pct = (b->self_cpu_s - a->self_cpu_s) / rep->window_s * 100;
	rep->rss = rep->has_broker ? b->broker.rss_bytes : 0;
	if (rep->gen_cpu_pct >= GEN_BOUND_PCT)
		rep->limit = "generator";
	else if (rep->has_broker && rep->broker_cpu_pct >= BROKER_BOUND_PCT)
		rep->limit = "broker";
	else if (r->o->rate > 0)
		rep->limit = "rate";
	else
		rep->limit = "window";
}

static const char *limit_text(const char *limit)
{
	if (strcmp(limit, "generator") == 0)
		return "GENERATOR-BOUND: wisp_bench used a whole core; the broker was not the limit";
	if (strcmp(limit, "broker") == 0)
		return "broker-bound: the broker used a whole core";
	if (strcmp(limit, "rate") == 0)
		return "fixed rate: neither side saturated";
	return "closed-loop window: neither side saturated (round trips were the limit)";
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static void print_messages(const struct bench_run *r, const struct sample *a, const struct sample *b,
			   const struct report *rep, bool ok, const char *verdict)
{
	const struct bench_opts *o = r->o;
	uint64_t pub = b->c.published - a->c.published, del = b->c.delivered - a->c.delivered;
	double rate = (double)del / rep->window_s, prate = (double)pub / rep->window_s;
	double us_msg = del ? rep->broker_cpu_s * 1e6 / (double)del : 0;
	const struct bench_hist *h = r->lat;
	uint64_t p50 = bench_hist_quantile(h, 0.5), p90 = bench_hist_quantile(h, 0.9),
		 p99 = bench_hist_quantile(h, 0.99), p999 = bench_hist_quantile(h, 0.999);
	uint32_t nsub = r->nconns - r->npubs;
	if (o->json) {
		printf("{\"scenario\":\"%s\",\"qos\":%u,\"payload\":%zu,\"publishers\":%u,\"subscribers\":%u,"
		       "\"mode\":\"%s\",\"rate_target\":%.0f,\"window_s\":%.3f,\"published\":%llu,\"delivered\":%llu,"
		       "\"publish_rate\":%.1f,\"delivered_rate\":%.1f,"
		       "\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"samples\":%llu},"
		       "\"broker_cpu_s\":%.3f,\"broker_cpu_pct\":%.1f,\"broker_cpu_us_per_msg\":%.3f,"
		       "\"broker_rss_bytes\":%llu,\"broker_rss_max_bytes\":%llu,\"has_broker\":%s,"
		       "\"generator_cpu_pct\":%.1f,\"limit\":\"%s\",\"total_published\":%llu,\"total_delivered\":%llu,"
		       "\"lost\":%llu,\"gaps\":%llu,\"dups\":%llu,\"qos2_redelivered\":%llu,\"foreign\":%llu,"
		       "\"unexpected_acks\":%llu,\"bad_props\":%llu,\"mqtt_version\":%u,\"stalls\":%llu,"
		       "\"incomplete\":%llu,\"ok\":%s}\n",
		       scenario_names[o->scenario], o->qos, o->payload_size, r->npubs, nsub,
		       o->rate > 0 ? "fixed-rate" : "closed-loop", o->rate, rep->window_s,
		       (unsigned long long)pub, (unsigned long long)del, prate, rate, us(p50), us(p90), us(p99),
		       us(p999), us(h->max), (unsigned long long)h->count, rep->broker_cpu_s, rep->broker_cpu_pct,
		       us_msg, (unsigned long long)rep->rss, (unsigned long long)rep->rss_max,
		       rep->has_broker ? "true" : "false", rep->gen_cpu_pct, rep->limit,
		       (unsigned long long)r->c.published, (unsigned long long)r->c.delivered,
		       (unsigned long long)r->c.lost, (unsigned long long)r->c.gaps, (unsigned long long)r->c.dups,
		       (unsigned long long)r->c.qos2_redelivered, (unsigned long long)r->c.foreign,
		       (unsigned long long)r->c.unexpected_acks, (unsigned long long)r->c.bad_props, o->version,
		       (unsigned long long)r->c.stalls, (unsigned long long)(o->qos ? r->c.published - r->c.completed : 0), ok ? "true" : "false");
		return;
	}
	printf("%s  qos %u  payload %zu B  %u publisher%s -> %u subscriber%s  %s",
	       scenario_names[o->scenario], o->qos, o->payload_size, r->npubs, r->npubs == 1 ? "" : "s", nsub,
	       nsub == 1 ? "" : "s", o->rate > 0 ? "fixed rate" : "closed loop");
	if (o->rate > 0)
		printf(" %.0f msg/s", o->rate);
	else
		printf(" (outstanding %u/publisher)", o->outstanding);
	if (o->qos)
		printf(", in-flight %u", o->inflight);
	printf("\n");
	printf("  window      %.2f s (after %.2f s warm-up)\n", rep->window_s, o->warmup_s);
	printf("  published   %llu msg  %.0f msg/s\n", (unsigned long long)pub, prate);
	printf("  delivered   %llu msg  %.0f msg/s\n", (unsigned long long)del, rate);
	printf("  latency     p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f us (%llu samples)\n", us(p50),
	       us(p90), us(p99), us(p999), us(h->max), (unsigned long long)h->count);
	if (rep->has_broker)
		printf("  broker      CPU %.1f%% of a core, %.2f us per delivered message, RSS %.1f MiB (max %.1f MiB)\n",
		       rep->broker_cpu_pct, us_msg, (double)rep->rss / 1048576.0, (double)rep->rss_max / 1048576.0);
	else
		printf("  broker      (no --broker-pid: CPU and RSS not measured)\n");
	printf("  generator   CPU %.1f%% of a core\n", rep->gen_cpu_pct);
	printf("  limit       %s\n", limit_text(rep->limit));
	printf("  integrity   lost %llu  gaps %llu  duplicates %llu  qos2-resent %llu  foreign %llu  "
	       "unexpected-acks %llu  bad-v5-props %llu  stalls %llu  (whole run: %llu published, %llu delivered)\n",
	       (unsigned long long)r->c.lost, (unsigned long long)r->c.gaps, (unsigned long long)r->c.dups,
	       (unsigned long long)r->c.qos2_redelivered, (unsigned long long)r->c.foreign,
	       (unsigned long long)r->c.unexpected_acks, (unsigned long long)r->c.bad_props, (unsigned long long)r->c.stalls,
	       (unsigned long long)r->c.published, (unsigned long long)r->c.delivered);
	printf("  result      %s\n", verdict);
}

/* Loss and duplicate rules: QoS 1 and 2 lose nothing, nothing duplicates
 * at QoS 0 or 2, every QoS flow completes, and QoS 1 may duplicate only on
 * a resend (which a closed run without reconnects never causes). */
static bool integrity_ok(const struct bench_run *r, char *why, size_t len)
{
	const struct bench_counts *c = &r->c;
	if (r->o->qos > 0 && c->lost)
		snprintf(why, len, "FAIL: %llu messages lost at QoS %u", (unsigned long long)c->lost, r->o->qos);
	else if (c->dups)
		snprintf(why, len, "FAIL: %llu duplicates", (unsigned long long)c->dups);
	else if (r->o->qos > 0 && c->completed < c->published)
		snprintf(why, len, "FAIL: %llu QoS %u flows never completed",
			 (unsigned long long)(c->published - c->completed), r->o->qos);
	else if (c->unexpected_acks || c->foreign)
		snprintf(why, len, "FAIL: protocol anomalies (unexpected acks or foreign payloads)");
	else if (c->bad_props)
		snprintf(why, len, "FAIL: %llu deliveries with v5 properties or topic alias not as published",
			 (unsigned long long)c->bad_props);
	else if (c->published == 0 && r->npubs > 0)
		snprintf(why, len, "FAIL: nothing was published");
	else {
		snprintf(why, len, r->o->qos == 0 && c->lost ? "OK (QoS 0 loss is allowed)" : "OK");
		return true;
	}
	return false;
}

static int run_messages(struct bench_run *r)
{
	const struct bench_opts *o = r->o;
	if (connect_all(r) != 0)
		return -1;
	struct sample a = {0}, b = {0};
	struct report rep = {0};
	uint64_t t_start = bench_now_ns();
	uint64_t t_measure = t_start + (uint64_t)(o->warmup_s * NS_PER_S);
	uint64_t t_end = t_measure + (uint64_t)(o->duration_s * NS_PER_S);
	uint64_t next_rss = 0;
	bool measured = false;
	for (uint32_t k = 0; k < r->npubs; k++)
		r->pubs[k].next_due_ns = t_start + (uint64_t)((double)k * NS_PER_S / (o->rate > 0 ? o->rate : 1));
	r->publishing = true;
	while (!r->error[0] && !interrupted) {
		uint64_t now = bench_now_ns();
		if (!r->measuring && !measured && now >= t_measure) {
			take_sample(r, &a);
			r->measuring = true;
			next_rss = now;
		}
		if (r->measuring && (now >= t_end || r->c.published >= o->count)) {
			take_sample(r, &b);
			r->measuring = false;
			measured = true;
			break;
		}
		if (r->measuring && now >= next_rss && o->broker_pid > 0) {
			struct bench_proc p;
			if (read_brokers(o, &p) == 0 && p.rss_bytes > rep.rss_max)
				rep.rss_max = p.rss_bytes;
			next_rss = now + RSS_SAMPLE_NS;
		}
		if (r->c.published >= o->count && !r->measuring) {
			/* The count ran out during warm-up: measure nothing rather than a fake window. */
			snprintf(r->error, sizeof r->error, "--count %llu reached before the measurement window",
				 (unsigned long long)o->count);
			break;
		}
		uint64_t due;
		bool more = publish_step(r, now, &due);
		uint64_t wake = r->measuring ? t_end : t_measure;
		if (due < wake)
			wake = due;
		if (r->measuring && next_rss < wake)
			wake = next_rss;
		poll_once(r, more ? 0 : wake);
	}
	r->publishing = false;
	/* Drain: stop publishing, let flows finish, then count what is missing. */
	uint64_t drain_end = bench_now_ns() + (uint64_t)(o->drain_s * NS_PER_S);
	while (!r->error[0] && !interrupted && !drained(r) && bench_now_ns() < drain_end)
		poll_once(r, bench_now_ns() + 10000000u);
	if (r->error[0] || interrupted)
		return -1;
	count_missing(r);
	if (rep.rss_max < b.broker.rss_bytes)
		rep.rss_max = b.broker.rss_bytes;
	uint64_t rss_max = rep.rss_max;
	window_figures(r, &a, &b, &rep);
	rep.rss_max = rss_max;
	char verdict[160];
	bool ok = integrity_ok(r, verdict, sizeof verdict);
	print_messages(r, &a, &b, &rep, ok, verdict);
	close_all(r);
	return ok ? 0 : 1;
}

/* storm: how often the probe pings while a storm runs. */
#define STORM_PING_NS 20000000ull
/* storm: connect() calls per loop turn (no limit on how many are pending). */
#define STORM_SLICE 128u

/* One storm round: every client not READY connects at once (no
 * --connect-concurrency), while the probe sends a PINGREQ every
 * STORM_PING_NS once the last was answered. Fails when a PINGRESP is
 * later than the probe's keep-alive: the broker would have been allowed
 * to drop a client that waited that long for it. */
static int storm_round(struct bench_run *r, struct bconn *probe, double *secs)
{
	const struct bench_opts *o = r->o;
	uint64_t t0 = bench_now_ns();
	uint64_t deadline = t0 + (uint64_t)(o->setup_timeout_s * NS_PER_S);
	uint64_t keepalive_ns = (uint64_t)o->keepalive * 1000000000ull;
	uint64_t next_ping = t0;
	uint32_t cursor = 0;
	r->not_ready = r->nconns - 1;
	while (!r->error[0] && !interrupted) {
		/* A slice of connects per turn, so the probe's own reads and
		 * pings are not held up behind 19,000 connect() calls here. */
		for (uint32_t k = 0; k < STORM_SLICE && cursor < r->nconns - 1 && !r->error[0]; k++)
			if (bconn_start(r, &r->conns[cursor++]) != 0)
				break;
		uint64_t now = bench_now_ns();
		if (r->not_ready == 0 && cursor >= r->nconns - 1 && r->ping_sent_ns == 0)
			break;
		if (r->ping_sent_ns == 0 && now >= next_ping) {
			bconn_ping(r, probe);
			next_ping = now + STORM_PING_NS;
		}
		if (r->ping_sent_ns && now > r->ping_sent_ns && now - r->ping_sent_ns > keepalive_ns) {
			snprintf(r->error, sizeof r->error, "no PINGRESP within the probe's keep-alive (%u s)",
				 o->keepalive);
			break;
		}
		if (now > deadline) {
			snprintf(r->error, sizeof r->error, "setup timeout: %u of %u clients not connected after %.1f s",
				 r->not_ready, r->nconns - 1, o->setup_timeout_s);
			break;
		}
		uint64_t wake = cursor < r->nconns - 1 ? now : now + 5000000u;
		if (r->ping_sent_ns == 0 && next_ping < wake)
			wake = next_ping;
		poll_once(r, wake);
	}
	*secs = (double)(bench_now_ns() - t0) / NS_PER_S;
	return r->error[0] || interrupted ? -1 : 0;
}

static int run_storm(struct bench_run *r)
{
	const struct bench_opts *o = r->o;
	struct bconn *probe = &r->conns[r->nconns - 1];
	probe->probe = true;
	uint64_t deadline = bench_now_ns() + (uint64_t)(o->setup_timeout_s * NS_PER_S);
	r->not_ready = 1;
	if (bconn_start(r, probe) != 0)
		return -1;
	while (r->not_ready && !r->error[0] && !interrupted && bench_now_ns() < deadline)
		poll_once(r, bench_now_ns() + 10000000u);
	if (r->not_ready) {
		if (!r->error[0])
			snprintf(r->error, sizeof r->error, "the probe did not connect");
		return -1;
	}
	struct sample a, b;
	take_sample(r, &a);
	double first_s = 0, second_s = 0;
	if (storm_round(r, probe, &first_s) != 0)
		return -1;
	/* The reconnect: every client is cut off (no DISCONNECT, as a network
	 * failure or a restart of their gateway looks to the broker) and all
	 * of them connect again at once with the same client ids, so some
	 * CONNECTs arrive before the broker has seen their old socket close. */
	for (uint32_t i = 0; i + 1 < r->nconns; i++) {
		bconn_close(r, &r->conns[i]);
		r->conns[i].state = BC_IDLE;
	}
	uint64_t connects_before = r->c.connects;
	if (storm_round(r, probe, &second_s) != 0)
		return -1;
	take_sample(r, &b);
	uint32_t clients = r->nconns - 1;
	bool all = r->c.connects - connects_before == clients;
	double cpu_us = b.has_broker && a.has_broker
				? (double)(b.broker.cpu_ticks - a.broker.cpu_ticks) * bench_proc_tick_s() * 1e6 / (2.0 * clients)
				: 0;
	double p99 = (double)bench_hist_quantile(r->ping, 0.99) / 1e6, max = (double)r->ping->max / 1e6;
	if (o->json) {
		printf("{\"scenario\":\"storm\",\"clients\":%u,\"connect_s\":%.3f,\"reconnect_s\":%.3f,"
		       "\"reconnect_rate\":%.1f,\"all_connected\":%s,\"pings\":%llu,\"ping_p99_ms\":%.2f,"
		       "\"ping_max_ms\":%.2f,\"keepalive_s\":%u,\"broker_cpu_us_per_conn\":%.2f,\"ok\":%s}\n",
		       clients, first_s, second_s, clients / second_s, all ? "true" : "false",
		       (unsigned long long)r->c.pings, p99, max, o->keepalive, cpu_us, all ? "true" : "false");
	} else {
		printf("storm  %u clients at once, then cut off and reconnected at once (%u source address%s)\n",
		       clients, o->src_addrs, o->src_addrs == 1 ? "" : "es");
		printf("  connect     %.3f s for all (%.0f/s); reconnect %.3f s (%.0f/s)\n", first_s,
		       clients / first_s, second_s, clients / second_s);
		printf("  probe       %llu PINGREQs answered, p99 %.2f ms, max %.2f ms (keep-alive %u s)\n",
		       (unsigned long long)r->c.pings, p99, max, o->keepalive);
		if (cpu_us > 0)
			printf("  broker      %.1f us CPU per connection\n", cpu_us);
		printf("  result      %s\n", all ? "OK" : "NOT ALL CONNECTED");
	}
	close_all(r);
	return all ? 0 : -1;
}

static int run_conns(struct bench_run *r)
{
	const struct bench_opts *o = r->o;
	struct sample a, b, c;
	take_sample(r, &a);
	if (connect_all(r) != 0)
		return -1;
	take_sample(r, &b);
	/* Hold, so the RSS read afterwards is settled, not mid-allocation. */
	uint64_t hold_end = bench_now_ns() + (uint64_t)(o->duration_s * NS_PER_S);
	while (!r->error[0] && !interrupted && bench_now_ns() < hold_end)
		poll_once(r, hold_end);
	if (r->error[0] || interrupted)
		return -1;
	take_sample(r, &c);
	struct report rep = {0};
	window_figures(r, &a, &b, &rep);
	double connect_s = rep.window_s;
	double rate = (double)o->conns / connect_s;
	double per_conn = rep.has_broker ? ((double)c.broker.rss_bytes - (double)a.broker.rss_bytes) / o->conns : 0;
	double cpu_per_conn = rep.has_broker ? rep.broker_cpu_s * 1e6 / o->conns : 0;
	if (o->json) {
		printf("{\"scenario\":\"conns\",\"conns\":%u,\"connect_s\":%.3f,\"connect_rate\":%.1f,"
		       "\"broker_cpu_us_per_conn\":%.2f,\"broker_cpu_pct\":%.1f,\"broker_rss_before_bytes\":%llu,"
		       "\"broker_rss_after_bytes\":%llu,\"broker_rss_per_conn_bytes\":%.1f,\"has_broker\":%s,"
		       "\"generator_cpu_pct\":%.1f,\"limit\":\"%s\",\"ok\":true}\n",
		       o->conns, connect_s, rate, cpu_per_conn, rep.broker_cpu_pct,
		       (unsigned long long)(rep.has_broker ? a.broker.rss_bytes : 0),
		       (unsigned long long)(rep.has_broker ? c.broker.rss_bytes : 0), per_conn,
		       rep.has_broker ? "true" : "false", rep.gen_cpu_pct, rep.limit);
	} else {
		printf("conns  %u idle connections, one subscription each (%u source address%s)\n", o->conns,
		       o->src_addrs, o->src_addrs == 1 ? "" : "es");
		printf("  connect     %.3f s for all, %.0f connections/s (CONNECT+CONNACK+SUBSCRIBE+SUBACK, %u at once)\n",
		       connect_s, rate, o->connect_concurrency);
		if (rep.has_broker) {
			printf("  broker      %.1f us CPU per connection (%.1f%% of a core while connecting)\n",
			       cpu_per_conn, rep.broker_cpu_pct);
			printf("  broker RSS  %.1f MiB before, %.1f MiB after %.1f s idle: %.0f bytes per connection\n",
			       (double)a.broker.rss_bytes / 1048576.0, (double)c.broker.rss_bytes / 1048576.0,
			       o->duration_s, per_conn);
		} else {
			printf("  broker      (no --broker-pid: CPU and RSS not measured)\n");
		}
		printf("  generator   CPU %.1f%% of a core while connecting\n", rep.gen_cpu_pct);
		printf("  limit       %s\n", limit_text(rep.limit));
		printf("  result      OK\n");
	}
	close_all(r);
	return 0;
}

static int run_tls(struct bench_run *r)
{
	const struct bench_opts *o = r->o;
	struct sample a = {0}, b = {0};
	uint64_t t_start = bench_now_ns();
	uint64_t t_measure = t_start + (uint64_t)(o->warmup_s * NS_PER_S);
	uint64_t t_end = t_measure + (uint64_t)(o->duration_s * NS_PER_S);
	r->publishing = true;
	while (!r->error[0] && !interrupted) {
		uint64_t now = bench_now_ns();
		if (!r->measuring && now >= t_measure) {
			take_sample(r, &a);
			r->measuring = true;
		}
		if (now >= t_end) {
			take_sample(r, &b);
			break;
		}
		for (uint32_t i = 0; i < r->nconns && !r->error[0]; i++) {
			struct bconn *c = &r->conns[i];
			if (c->state == BC_IDLE || c->state == BC_CLOSED)
				bconn_start(r, c);
		}
		poll_once(r, r->measuring ? t_end : t_measure);
	}
	r->publishing = false;
	if (r->error[0] || interrupted)
		return -1;
	struct report rep = {0};
	window_figures(r, &a, &b, &rep);
	uint64_t hs = b.c.handshakes - a.c.handshakes;
	uint64_t resumed = b.c.resumed - a.c.resumed;
	double rate = (double)hs / rep.window_s;
	double cpu = hs && rep.has_broker ? rep.broker_cpu_s * 1e6 / (double)hs : 0;
	if (o->json) {
		printf("{\"scenario\":\"tls\",\"clients\":%u,\"window_s\":%.3f,\"handshakes\":%llu,\"resumed\":%llu,"
		       "\"handshake_rate\":%.1f,"
		       "\"broker_cpu_us_per_handshake\":%.1f,\"broker_cpu_pct\":%.1f,\"broker_rss_bytes\":%llu,"
		       "\"has_broker\":%s,\"generator_cpu_pct\":%.1f,\"limit\":\"%s\",\"ok\":%s}\n",
		       o->clients, rep.window_s, (unsigned long long)hs, (unsigned long long)resumed, rate, cpu, rep.broker_cpu_pct,
		       (unsigned long long)rep.rss, rep.has_broker ? "true" : "false", rep.gen_cpu_pct, rep.limit,
		       hs ? "true" : "false");
	} else {
		printf("tls  %u concurrent clients: TLS handshake + CONNECT/CONNACK + DISCONNECT, %s\n", o->clients,
		       o->cafile ? "server verified" : "server not verified");
		printf("  window      %.2f s (after %.2f s warm-up)\n", rep.window_s, o->warmup_s);
		printf("  handshakes  %llu  %.0f per second", (unsigned long long)hs, rate);
		if (o->resume)
			printf(", %llu resumed", (unsigned long long)resumed);
		printf("\n");
		if (rep.has_broker)
			printf("  broker      CPU %.1f%% of a core, %.0f us per handshake\n", rep.broker_cpu_pct, cpu);
		else
			printf("  broker      (no --broker-pid: CPU not measured)\n");
		printf("  generator   CPU %.1f%% of a core\n", rep.gen_cpu_pct);
		printf("  limit       %s\n", limit_text(rep.limit));
		printf("  result      %s\n", hs ? "OK" : "FAIL: no handshake completed");
	}
	close_all(r);
	return hs ? 0 : 1;
}

static int make_tls(struct bench_run *r, const struct bench_opts *o)
{
	struct tls_opts to;
	tls_opts_init(&to);
	to.ca_file = o->cafile;
	to.hostname = o->tls_hostname;
	to.verify_peer = o->cafile != NULL && !o->insecure;
	to.curves = o->tls_curves;
	to.ciphersuites = o->tls_suites;
	char err[256];
	struct tls_ctx *ctx;
	if (tls_ctx_new_client(&to, &ctx, err, sizeof err) != 0) {
		fprintf(stderr, "wisp_bench: TLS: %s\n", err);
		return -1;
	}
	r->tls_ctx = ctx;
	return 0;
}

/* Everything setup() and the run allocated, so sanitizer builds see no leak. */
static void teardown(struct bench_run *r)
{
	if (r->conns)
		close_all(r);
	for (uint32_t i = 0; r->subs && i < r->nsubs; i++) {
		wisp_free(r->subs[i].expect);
		wisp_free(r->subs[i].pid_rx);
		wisp_free(r->subs[i].alias_pub);
	}
	wisp_free(r->subs);
	wisp_free(r->conns);
	for (uint32_t i = 0; r->pubs && i < r->npubs; i++)
		wisp_free(r->pubs[i].pid_state);
	wisp_free(r->pubs);
	wisp_free(r->payload);
	wisp_free(r->lat);
	wisp_free(r->ping);
	wisp_free(r->dst);
	wisp_free(r->dst2);
	if (r->tls_ctx)
		tls_ctx_unref(r->tls_ctx);
	if (r->epfd >= 0)
		close(r->epfd);
}

static int run(struct bench_run *r, struct bench_opts *o)
{
	if (o->src_addrs == 0)
		o->src_addrs = (o->scenario == SCEN_CONNS || o->scenario == SCEN_STORM) && o->conns > 16000 ? 4 : 1;
	if (setup(r, o) != 0) {
		fprintf(stderr, "wisp_bench: out of memory\n");
		return BENCH_EXIT_ERROR;
	}
	if (raise_nofile(r->nconns + 32) != 0)
		return BENCH_EXIT_USAGE;
	if (resolve(r, o) != 0)
		return BENCH_EXIT_USAGE;
	if (o->tls && make_tls(r, o) != 0)
		return BENCH_EXIT_USAGE;
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epfd == -1) {
		fprintf(stderr, "wisp_bench: epoll_create1: %s\n", strerror(errno));
		return BENCH_EXIT_ERROR;
	}
	if (o->broker_pid > 0) {
		struct bench_proc p;
		if (bench_proc_read(o->broker_pid, &p) != 0) {
			fprintf(stderr, "wisp_bench: cannot read /proc/%ld/stat\n", (long)o->broker_pid);
			return BENCH_EXIT_USAGE;
		}
	}

	int rc;
	switch (o->scenario) {
	case SCEN_CONNS: rc = run_conns(r); break;
	case SCEN_TLS: rc = run_tls(r); break;
	case SCEN_STORM: rc = run_storm(r); break;
	default: rc = run_messages(r); break;
	}
	if (rc < 0) {
		close_all(r);
		if (interrupted) {
			fprintf(stderr, "wisp_bench: interrupted\n");
			return BENCH_EXIT_ERROR;
		}
		if (o->scenario == SCEN_TLS && r->refused) {
			if (o->json)
				printf("{\"scenario\":\"tls\",\"not_yet\":true,\"ok\":false}\n");
			fprintf(stderr,
				"tls: not yet: nothing accepts connections on %s:%u. Wisp needs its TLS "
				"listener (a listener with \"protocol\": \"mqtts\") for this scenario.\n",
				o->host, o->port);
			return BENCH_EXIT_NOT_YET;
		}
		if (o->json)
			printf("{\"scenario\":\"%s\",\"error\":true,\"ok\":false}\n", scenario_names[o->scenario]);
		fprintf(stderr, "wisp_bench: %s: %s\n", scenario_names[o->scenario], r->error);
		return BENCH_EXIT_ERROR;
	}
	return rc == 0 ? BENCH_EXIT_OK : BENCH_EXIT_INTEGRITY;
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	if (parse_args(argc, argv, &o) != 0)
		return BENCH_EXIT_USAGE;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);

	struct bench_run r = {.o = &o, .epfd = -1};
	int status = run(&r, &o);
	teardown(&r);
	return status;
}

