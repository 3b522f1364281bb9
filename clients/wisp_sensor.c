/*
 * wisp_sensor: a fleet of simulated IoT sensors in one process.
 *
 * N devices, each its own MQTT connection and client id (sensor-0001...),
 * all in one loop. Each publishes JSON readings (cJSON) of a bounded random
 * walk at a per-device interval with jitter, either one message per
 * reading on sensors/<site>/<device> or one per metric on
 * sensors/<site>/<device>/<metric>. Every device keeps a retained status
 * topic sensors/<site>/<device>/status: "online" once connected, "offline"
 * from its will when it dies and explicitly when it stops cleanly. With
 * --protocol 5 the devices speak MQTT v5 and mark each reading as UTF-8
 * JSON (payload format indicator 1, content type application/json).
 *
 * The run ends after --duration seconds or once every device has published
 * --count readings (and, for QoS > 0, had them acknowledged); then each
 * device publishes "offline" and disconnects. SIGINT/SIGTERM end it early
 * the same way. A live one-line progress display goes to stderr on a
 * terminal; a summary (or --json stats) goes to stdout at the end.
 *
 * Cost: one mqtt_client (a few hundred bytes idle) plus one millisecond
 * timer per device; connections are opened at --connect-rate per second so
 * a large fleet does not overflow the broker's accept backlog.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "cli_misc.h"
#include "dial.h"
#include "loop.h"
#include "mqtt_client.h"
#include "mtimer.h"
#include "tls.h"

#define TICK_MS 100u
#define STOP_GRACE_MS 10000u

struct sensor_opts {
	const char *host;
	int port;
	int devices;
	const char *site;
	const char *id_prefix;
	double interval_s;
	double jitter;
	int qos;
	bool retain;
	bool per_metric;
	double duration_s;
	long count;
	int keepalive;
	const char *username, *password;
	const char *cafile, *certs_dir;
	bool insecure;
	int connect_rate;
	bool json;
	bool quiet;
	uint8_t version; /* MQTT_PROTO_V311 or MQTT_PROTO_V5 (--protocol) */
};

/* v5 readings say what they carry: UTF-8 JSON [MQTT-3.3.2.3.2, 3.3.2.3.9]. */
static const uint8_t READING_PROPS[] = {
	MQTT_PROP_PAYLOAD_FORMAT, 1,
	MQTT_PROP_CONTENT_TYPE, 0, 16, 'a', 'p', 'p', 'l', 'i', 'c', 'a', 't', 'i', 'o', 'n', '/', 'j', 's', 'o', 'n',
};

struct walk {
	double value, lo, hi, step;
};

struct device {
	struct fleet *fleet;
	struct mqtt_client *client;
	struct tls_ctx *tls; /* per-device context with its own certificate */
	struct mtimer tick;
	char id[32];
	char base[160]; /* sensors/<site>/<id> */
	struct walk temperature, humidity, battery;
	long readings;   /* readings published */
	long unacked;    /* QoS>0 readings not yet acknowledged */
	uint16_t status_mid; /* the last status publish, which is not a reading */
	bool online;
	bool stopped;
};

struct stats {
	uint64_t published, acked, dropped, connects, disconnects, errors;
};

struct fleet {
	struct sensor_opts o;
	struct loop *loop;
	struct mtimers *timers;
	struct cli_signals sig;
	struct addrinfo *addrs;
	struct tls_ctx *tls;
	struct device *dev;
	int started;   /* devices whose connect has been started */
	int connected; /* currently connected */
	int finished;  /* devices done with --count */
	struct stats st;
	struct mtimer ramp, progress, deadline, grace;
	uint64_t t0_ms, last_progress_ms, last_published;
	bool stopping;
	bool tty;
};

static double frand(void) { return (double)random() / ((double)RAND_MAX + 1.0); }

static double walk_next(struct walk *w)
{
	w->value += (frand() * 2.0 - 1.0) * w->step;
	if (w->value < w->lo)
		w->value = w->lo + (w->lo - w->value);
	if (w->value > w->hi)
		w->value = w->hi - (w->value - w->hi);
	return w->value;
}

static double round_to(double v, double scale) { return round(v * scale) / scale; }

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t next_delay_ms(const struct fleet *f)
{
	double d = f->o.interval_s * (1.0 + (frand() * 2.0 - 1.0) * f->o.jitter);
	return d < 0.001 ? 1 : (uint64_t)(d * 1000.0);
}

static bool device_done(const struct fleet *f, const struct device *d)
{
	return f->o.count > 0 && d->readings >= f->o.count;
}

static void publish_json(struct device *d, const char *topic, cJSON *obj)
{
	struct fleet *f = d->fleet;
	char *s = cJSON_PrintUnformatted(obj);
	if (!s)
		return;
	int rc = mqtt_client_publish_props(d->client, topic, s, strlen(s), (uint8_t)f->o.qos, f->o.retain,
					   READING_PROPS, sizeof READING_PROPS, NULL);
	if (rc == 0) {
		f->st.published++;
		if (f->o.qos > 0)
			d->unacked++;
	} else {
		f->st.dropped++;
	}
	cJSON_free(s);
}

static void publish_reading(struct device *d)
{
	struct fleet *f = d->fleet;
	double t = round_to(walk_next(&d->temperature), 10), h = round_to(walk_next(&d->humidity), 10);
	double b = round_to(walk_next(&d->battery), 100);
	double ts = (double)wall_ms();
	char topic[200];
	if (!f->o.per_metric) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "device", d->id);
		cJSON_AddNumberToObject(o, "ts", ts);
		cJSON_AddNumberToObject(o, "temperature", t);
		cJSON_AddNumberToObject(o, "humidity", h);
		cJSON_AddNumberToObject(o, "battery", b);
		publish_json(d, d->base, o);
		cJSON_Delete(o);
	} else {
		const char *names[] = {"temperature", "humidity", "battery"};
		double vals[] = {t, h, b};
		for (int i = 0; i < 3; i++) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "device", d->id);
			cJSON_AddNumberToObject(o, "ts", ts);
			cJSON_AddNumberToObject(o, names[i], vals[i]);
			snprintf(topic, sizeof topic, "%s/%s", d->base, names[i]);
			publish_json(d, topic, o);
			cJSON_Delete(o);
		}
	}
	d->readings++;
}

static void check_all_done(struct fleet *f);
static void fleet_stop(struct fleet *f);

static void on_tick(struct mtimer *t, void *ud)
{
	(void)t;
	struct device *d = ud;
	struct fleet *f = d->fleet;
	if (f->stopping || device_done(f, d))
		return;
	if (mqtt_client_is_connected(d->client) || f->o.qos > 0)
		publish_reading(d);
	else
		f->st.dropped++; /* QoS 0 reading while offline: lost, as on a real device */
	if (device_done(f, d)) {
		if (d->unacked == 0) {
			f->finished++;
			check_all_done(f);
		}
		return;
	}
	mtimer_start(f->timers, &d->tick, next_delay_ms(f));
}

static void status_topic(const struct device *d, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/status", d->base);
}

static void on_connect(struct mqtt_client *c, uint8_t code, bool session_present, void *ud)
{
	(void)session_present;
	struct device *d = ud;
	struct fleet *f = d->fleet;
	if (code != 0) {
		f->st.errors++;
		return;
	}
	f->st.connects++;
	f->connected++;
	d->online = true;
	char topic[200];
	status_topic(d, topic, sizeof topic);
	mqtt_client_publish(c, topic, "online", 6, 1, true, &d->status_mid);
	if (!mtimer_is_armed(&d->tick) && !device_done(f, d))
		mtimer_start(f->timers, &d->tick, (uint64_t)(frand() * f->o.interval_s * 1000.0));
}

static void on_publish(struct mqtt_client *c, uint16_t mid, uint8_t reason, void *ud)
{
	(void)c;
	(void)mid;
	(void)reason;
	struct device *d = ud;
	struct fleet *f = d->fleet;
	if (f->o.qos == 0 || mid == d->status_mid || d->unacked == 0)
		return; /* a status message */
	d->unacked--;
	f->st.acked++;
	if (d->unacked == 0 && device_done(f, d)) {
		f->finished++;
		check_all_done(f);
	}
}

static void on_disconnect(struct mqtt_client *c, int err, void *ud)
{
	(void)c;
	struct device *d = ud;
	struct fleet *f = d->fleet;
	if (d->online) {
		d->online = false;
		f->connected--;
		f->st.disconnects++;
	}
	if (err != MQTT_CLIENT_OK)
		f->st.errors++;
	if (f->stopping && !d->stopped) {
		d->stopped = true;
		bool all = true;
		for (int i = 0; i < f->started && all; i++)
			all = f->dev[i].stopped;
		if (all)
			loop_stop(f->loop);
	}
}

static const struct mqtt_client_cbs CBS = {
	.on_connect = on_connect,
	.on_disconnect = on_disconnect,
	.on_publish = on_publish,
};

static struct transport *wrap_tls(void *ctx, int fd) { return tls_transport_new(ctx, fd); }

static int device_tls(struct fleet *f, struct device *d, struct tls_ctx **out)
{
	if (!f->o.certs_dir) {
		*out = f->tls;
		return 0;
	}
	char cert[512], key[512], err[256];
	snprintf(cert, sizeof cert, "%s/%s.crt", f->o.certs_dir, d->id);
	snprintf(key, sizeof key, "%s/%s.key", f->o.certs_dir, d->id);
	struct tls_opts o;
	tls_opts_init(&o);
	o.ca_file = f->o.cafile;
	o.cert_file = cert;
	o.key_file = key;
	o.hostname = f->o.host;
	o.insecure = f->o.insecure;
	if (tls_ctx_new_client(&o, &d->tls, err, sizeof err) != 0) {
		fprintf(stderr, "wisp_sensor: %s: %s\n", d->id, err);
		return -1;
	}
	*out = d->tls;
	return 0;
}

static int device_start(struct fleet *f, struct device *d)
{
	char will[200];
	status_topic(d, will, sizeof will);
	struct tls_ctx *tls = NULL;
	if ((f->o.cafile || f->o.certs_dir) && device_tls(f, d, &tls) != 0)
		return -1;
	struct mqtt_client_opts o = {
		.host = f->o.host,
		.port = (uint16_t)f->o.port,
		.version = f->o.version,
		.client_id = d->id,
		.clean_session = true,
		.keepalive = (uint16_t)f->o.keepalive,
		.username = f->o.username,
		.password = f->o.password,
		.will_topic = will,
		.will_payload = "offline",
		.will_len = 7,
		.will_qos = 1,
		.will_retain = true,
		.max_inflight = 100,
		.reconnect = true,
		.reconnect_min_ms = 500,
		.reconnect_max_ms = 30000,
		.transport_new = tls ? wrap_tls : NULL,
		.transport_ctx = tls,
		.addrs = f->addrs,
		.cbs = &CBS,
		.ud = d,
	};
	d->client = mqtt_client_new(f->loop, f->timers, &o);
	if (!d->client)
		return -1;
	if (mqtt_client_connect(d->client) != 0) {
		/* Retried by backoff like a lost connection. */
		f->st.errors++;
		mqtt_client_set_reconnect(d->client, true);
	}
	return 0;
}

static void on_ramp(struct mtimer *t, void *ud)
{
	(void)t;
	struct fleet *f = ud;
	int batch = f->o.connect_rate * (int)TICK_MS / 1000;
	if (batch < 1)
		batch = 1;
	for (int i = 0; i < batch && f->started < f->o.devices && !f->stopping; i++) {
		struct device *d = &f->dev[f->started];
		if (device_start(f, d) != 0) {
			fleet_stop(f);
			return;
		}
		f->started++;
	}
	if (f->started < f->o.devices && !f->stopping)
		mtimer_start(f->timers, &f->ramp, TICK_MS);
}

static double elapsed_s(const struct fleet *f) { return (double)(mtimer_now_ms() - f->t0_ms) / 1000.0; }

static void on_progress(struct mtimer *t, void *ud)
{
	(void)t;
	struct fleet *f = ud;
	uint64_t now = mtimer_now_ms();
	double dt = (double)(now - f->last_progress_ms) / 1000.0;
	double rate = dt > 0 ? (double)(f->st.published - f->last_published) / dt : 0;
	f->last_progress_ms = now;
	f->last_published = f->st.published;
	fprintf(stderr, "\r\033[K%6.1fs  devices %d/%d connected  sent %llu  acked %llu  %.0f msg/s  errors %llu",
		elapsed_s(f), f->connected, f->o.devices, (unsigned long long)f->st.published,
		(unsigned long long)f->st.acked, rate, (unsigned long long)f->st.errors);
	fflush(stderr);
	if (!f->stopping)
		mtimer_start(f->timers, &f->progress, 1000);
}

static void on_deadline(struct mtimer *t, void *ud)
{
	(void)t;
	fleet_stop(ud);
}

static void on_grace(struct mtimer *t, void *ud)
{
	(void)t;
	struct fleet *f = ud;
	loop_stop(f->loop); /* some devices never managed to say goodbye */
}

/* Every device publishes "offline" (retained) and disconnects cleanly. */
static void fleet_stop(struct fleet *f)
{
	if (f->stopping)
		return;
	f->stopping = true;
	mtimer_stop(f->timers, &f->ramp);
	mtimer_stop(f->timers, &f->deadline);
	mtimer_start(f->timers, &f->grace, STOP_GRACE_MS);
	int waiting = 0;
	for (int i = 0; i < f->started; i++) {
		struct device *d = &f->dev[i];
		mtimer_stop(f->timers, &d->tick);
		if (mqtt_client_is_connected(d->client)) {
			char topic[200];
			status_topic(d, topic, sizeof topic);
			mqtt_client_publish(d->client, topic, "offline", 7, 1, true, &d->status_mid);
			waiting++;
		}
		mqtt_client_disconnect(d->client, 0); /* after the queued messages */
	}
	if (!waiting)
		loop_stop(f->loop);
}

static void check_all_done(struct fleet *f)
{
	if (f->finished >= f->o.devices)
		fleet_stop(f);
}

static void on_signal(int signo, void *ud)
{
	(void)signo;
	struct fleet *f = ud;
	if (f->stopping)
		loop_stop(f->loop); /* second signal: do not wait */
	fleet_stop(f);
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void print_summary(const struct fleet *f)
{
	double secs = elapsed_s(f);
	if (f->o.json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "devices", f->o.devices);
		cJSON_AddNumberToObject(o, "started", f->started);
		cJSON_AddNumberToObject(o, "seconds", round_to(secs, 1000));
		cJSON_AddNumberToObject(o, "published", (double)f->st.published);
		cJSON_AddNumberToObject(o, "acked", (double)f->st.acked);
		cJSON_AddNumberToObject(o, "dropped", (double)f->st.dropped);
		cJSON_AddNumberToObject(o, "connects", (double)f->st.connects);
		cJSON_AddNumberToObject(o, "disconnects", (double)f->st.disconnects);
		cJSON_AddNumberToObject(o, "errors", (double)f->st.errors);
		cJSON_AddNumberToObject(o, "rate", secs > 0 ? round_to((double)f->st.published / secs, 10) : 0);
		char *s = cJSON_PrintUnformatted(o);
		if (s)
			printf("%s\n", s);
		cJSON_free(s);
		cJSON_Delete(o);
		return;
	}
	printf("wisp_sensor: %d devices, %.1f s, %llu published, %llu acknowledged, %llu dropped, "
	       "%llu connects, %llu errors, %.0f msg/s\n",
	       f->o.devices, secs, (unsigned long long)f->st.published, (unsigned long long)f->st.acked,
	       (unsigned long long)f->st.dropped, (unsigned long long)f->st.connects,
	       (unsigned long long)f->st.errors, secs > 0 ? (double)f->st.published / secs : 0.0);
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: wisp_sensor [options]\n"
		"  -h, --host HOST         broker host (localhost)\n"
		"  -p, --port PORT         broker port (1883, 8883 with --cafile)\n"
		"  -n, --devices N         number of simulated devices (10)\n"
		"      --site NAME         site level of the topics (site1)\n"
		"      --id-prefix P       client id prefix (sensor-), ids are P0001...\n"
		"  -i, --interval SECONDS  seconds between readings of one device (1.0)\n"
		"      --jitter FRACTION   +/- fraction of the interval, random per reading (0.2)\n"
		"  -q, --qos 0|1|2         QoS of readings (1)\n"
		"  -r, --retain            retain the latest reading\n"
		"      --per-metric        one topic per metric: sensors/<site>/<device>/<metric>\n"
		"  -d, --duration SECONDS  stop after this long\n"
		"  -c, --count N           stop after N readings per device (all acknowledged)\n"
		"  -k, --keepalive SECONDS keepalive (60)\n"
		"  -u, --username USER     -P, --password PASS\n"
		"      --cafile FILE       TLS, trusting these CAs\n"
		"      --certs-dir DIR     mutual TLS: DIR/<client id>.crt and .key per device\n"
		"      --insecure          do not check the server host name\n"
		"      --connect-rate N    new connections per second (1000)\n"
		"      --json              final statistics as one JSON object\n"
		"      --quiet             no progress line\n"
		"      --protocol VERSION  MQTT version: 311 (default) or 5; mqttv311, mqttv5 too.\n"
		"                          v5 readings carry payload-format-indicator 1 and\n"
		"                          content-type application/json\n"
		"      --help\n");
}

static int parse_args(struct sensor_opts *o, int argc, char **argv)
{
	enum { O_SITE = 256, O_JITTER, O_PER_METRIC, O_CAFILE, O_CERTS, O_INSECURE, O_RATE, O_JSON, O_QUIET,
	       O_HELP, O_PREFIX, O_PROTOCOL };
	static const struct option longs[] = {
		{"host", required_argument, NULL, 'h'}, {"port", required_argument, NULL, 'p'},
		{"devices", required_argument, NULL, 'n'}, {"site", required_argument, NULL, O_SITE},
		{"id-prefix", required_argument, NULL, O_PREFIX}, {"interval", required_argument, NULL, 'i'},
		{"jitter", required_argument, NULL, O_JITTER}, {"qos", required_argument, NULL, 'q'},
		{"retain", no_argument, NULL, 'r'}, {"per-metric", no_argument, NULL, O_PER_METRIC},
		{"duration", required_argument, NULL, 'd'}, {"count", required_argument, NULL, 'c'},
		{"keepalive", required_argument, NULL, 'k'}, {"username", required_argument, NULL, 'u'},
		{"password", required_argument, NULL, 'P'}, {"cafile", required_argument, NULL, O_CAFILE},
		{"certs-dir", required_argument, NULL, O_CERTS}, {"insecure", no_argument, NULL, O_INSECURE},
		{"connect-rate", required_argument, NULL, O_RATE}, {"json", no_argument, NULL, O_JSON},
		{"quiet", no_argument, NULL, O_QUIET}, {"help", no_argument, NULL, O_HELP},
		{"protocol", required_argument, NULL, O_PROTOCOL}, {NULL, 0, NULL, 0},
	};
	*o = (struct sensor_opts){.host = "localhost", .port = -1, .devices = 10, .site = "site1",
				  .id_prefix = "sensor-", .interval_s = 1.0, .jitter = 0.2, .qos = 1,
				  .keepalive = 60, .connect_rate = 1000, .version = MQTT_PROTO_V311};
	int c;
	while ((c = getopt_long(argc, argv, "h:p:n:i:q:rd:c:k:u:P:", longs, NULL)) != -1) {
		switch (c) {
		case 'h': o->host = optarg; break;
		case 'p': o->port = atoi(optarg); break;
		case 'n': o->devices = atoi(optarg); break;
		case O_SITE: o->site = optarg; break;
		case O_PREFIX: o->id_prefix = optarg; break;
		case 'i': o->interval_s = atof(optarg); break;
		case O_JITTER: o->jitter = atof(optarg); break;
		case 'q': o->qos = atoi(optarg); break;
		case 'r': o->retain = true; break;
		case O_PER_METRIC: o->per_metric = true; break;
		case 'd': o->duration_s = atof(optarg); break;
		case 'c': o->count = atol(optarg); break;
		case 'k': o->keepalive = atoi(optarg); break;
		case 'u': o->username = optarg; break;
		case 'P': o->password = optarg; break;
		case O_CAFILE: o->cafile = optarg; break;
		case O_CERTS: o->certs_dir = optarg; break;
		case O_INSECURE: o->insecure = true; break;
		case O_RATE: o->connect_rate = atoi(optarg); break;
		case O_JSON: o->json = true; break;
		case O_QUIET: o->quiet = true; break;
		case O_PROTOCOL:
			if (!strcmp(optarg, "5") || !strcmp(optarg, "mqttv5"))
				o->version = MQTT_PROTO_V5;
			else if (!strcmp(optarg, "311") || !strcmp(optarg, "mqttv311"))
				o->version = MQTT_PROTO_V311;
			else
				o->version = 0; /* refused below */
			break;
		case O_HELP: usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (o->port < 0)
		o->port = (o->cafile || o->certs_dir) ? 8883 : 1883;
	if (o->devices < 1 || o->devices > 1000000 || o->qos < 0 || o->qos > 2 || o->interval_s <= 0 ||
	    o->jitter < 0 || o->jitter >= 1 || o->port > 65535 || o->keepalive < 0 || o->keepalive > 65535 ||
	    o->connect_rate < 1 || o->version == 0 || optind != argc) {
		fprintf(stderr, "wisp_sensor: invalid arguments\n");
		usage(stderr);
		return -1;
	}
	return 0;
}

static void device_init(struct fleet *f, struct device *d, int i)
{
	d->fleet = f;
	snprintf(d->id, sizeof d->id, "%s%04d", f->o.id_prefix, i + 1);
	snprintf(d->base, sizeof d->base, "sensors/%s/%s", f->o.site, d->id);
	d->temperature = (struct walk){18 + frand() * 8, 10, 35, 0.3};
	d->humidity = (struct walk){35 + frand() * 30, 10, 95, 1.0};
	d->battery = (struct walk){3.6 + frand() * 0.5, 3.3, 4.2, 0.01};
	mtimer_init(&d->tick, on_tick, d);
}

int main(int argc, char **argv)
{
	static struct fleet f;
	if (parse_args(&f.o, argc, argv) != 0)
		return 1;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	srandom((unsigned)ts.tv_nsec ^ (unsigned)getpid());
	raise_nofile();
	int rc = 1, gai = 0;
	f.loop = loop_new();
	f.timers = f.loop ? mtimers_new(f.loop) : NULL;
	f.dev = wisp_calloc((size_t)f.o.devices, sizeof *f.dev);
	if (!f.timers || !f.dev) {
		fprintf(stderr, "wisp_sensor: out of memory\n");
		goto out;
	}
	/* Every timer is initialised before the first way out, which stops
	 * them all: a zeroed timer would look armed. */
	mtimer_init(&f.ramp, on_ramp, &f);
	mtimer_init(&f.progress, on_progress, &f);
	mtimer_init(&f.deadline, on_deadline, &f);
	mtimer_init(&f.grace, on_grace, &f);
	for (int i = 0; i < f.o.devices; i++)
		mtimer_init(&f.dev[i].tick, on_tick, &f.dev[i]);
	/* Resolve once for the whole fleet. */
	if (dial_resolve(f.o.host, (uint16_t)f.o.port, &f.addrs, &gai) != 0) {
		fprintf(stderr, "wisp_sensor: %s: %s\n", f.o.host, gai_strerror(gai));
		goto out;
	}
	if (f.o.cafile && !f.o.certs_dir) {
		struct tls_opts o;
		char err[256];
		tls_opts_init(&o);
		o.ca_file = f.o.cafile;
		o.hostname = f.o.host;
		o.insecure = f.o.insecure;
		if (tls_ctx_new_client(&o, &f.tls, err, sizeof err) != 0) {
			fprintf(stderr, "wisp_sensor: %s\n", err);
			goto out;
		}
	}
	for (int i = 0; i < f.o.devices; i++)
		device_init(&f, &f.dev[i], i);
	if (cli_signals_start(&f.sig, f.loop, on_signal, &f) != 0)
		goto out;
	f.tty = isatty(STDERR_FILENO) && !f.o.quiet;
	f.t0_ms = f.last_progress_ms = mtimer_now_ms();
	mtimer_start(f.timers, &f.ramp, 0);
	if (f.tty)
		mtimer_start(f.timers, &f.progress, 1000);
	if (f.o.duration_s > 0)
		mtimer_start(f.timers, &f.deadline, (uint64_t)(f.o.duration_s * 1000.0));
	loop_run(f.loop);
	if (f.tty)
		fputc('\n', stderr);
	print_summary(&f);
	/* Complete means every device did its --count and had it acknowledged. */
	rc = (f.o.count > 0 && f.finished < f.o.devices) ? 2 : 0;
	cli_signals_stop(&f.sig, f.loop);
out:
	if (f.dev) {
		for (int i = 0; i < f.o.devices; i++) {
			mtimer_stop(f.timers, &f.dev[i].tick);
			mqtt_client_free(f.dev[i].client);
			tls_ctx_unref(f.dev[i].tls);
		}
	}
	if (f.timers) {
		mtimer_stop(f.timers, &f.ramp);
		mtimer_stop(f.timers, &f.progress);
		mtimer_stop(f.timers, &f.deadline);
		mtimer_stop(f.timers, &f.grace);
	}
	wisp_free(f.dev);
	tls_ctx_unref(f.tls);
	dial_free_addrs(f.addrs);
	mtimers_free(f.timers);
	loop_free(f.loop);
	return rc;
}
