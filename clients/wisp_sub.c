/*
 * wisp_sub: a drop-in for mosquitto_sub 2.0 (MQTT 3.1, 3.1.1 and 5 with -D
 * properties). Subscribes, prints messages exactly as mosquitto_sub does
 * (see common/sub_format.h) and exits with mosquitto_sub's statuses.
 *
 * Flow: options -> connect -> on CONNACK subscribe to every -t in one
 * SUBSCRIBE, then one UNSUBSCRIBE per -U -> print messages until -C, -E,
 * --retained-only, -W or a signal ends the run. A lost connection is
 * retried every second, re-subscribing on each CONNACK, as mosquitto_sub's
 * loop_forever does.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "cli_conn.h"
#include "cli_help.h"
#include "cli_misc.h"
#include "cli_opts.h"
#include "sub_format.h"

struct sub_state {
	struct cli_cfg cfg;
	struct cli_conn cc;
	struct cli_signals sig;
	bool connected_once; /* mosquitto_sub's "connected": a CONNACK accepted, ever */
	bool in_loop;        /* connected once, or lost before CONNACK: retrying */
	bool process_messages;
	bool timed_out;
	bool done;
	int msg_count;
	uint16_t last_mid; /* last --remove-retained publish still unacknowledged */
	int exit_code;
};

static void disconnect(struct sub_state *s, uint8_t reason)
{
	const struct cli_props *dp = &s->cfg.props.list[CLI_PROPS_DISCONNECT];
	mqtt_client_disconnect_props(s->cc.client, reason, dp->buf, dp->len);
}

static void finish(struct sub_state *s, int code)
{
	if (s->done)
		return;
	s->done = true;
	s->exit_code = code;
	disconnect(s, 0);
}

static void on_log(struct mqtt_client *c, const char *line, void *ud)
{
	(void)c;
	struct sub_state *s = ud;
	if (s->cfg.debug)
		printf("%s\n", line);
}

static void on_connect(struct mqtt_client *c, uint8_t code, bool session_present, void *ud)
{
	(void)session_present;
	struct sub_state *s = ud;
	if (code != 0) {
		cli_print_connack_error(&s->cfg, code);
		s->exit_code = code;
		s->done = true;
		disconnect(s, 0); /* as mosquitto_sub does; shows in -d */
		return;
	}
	s->connected_once = true;
	s->in_loop = true;
	uint8_t *options = wisp_malloc(s->cfg.topics.n + 1);
	if (!options) {
		finish(s, CLI_EXIT_ERROR);
		return;
	}
	for (size_t i = 0; i < s->cfg.topics.n; i++) {
		options[i] = (uint8_t)s->cfg.qos;
		if (s->cfg.protocol_version == MQTT_PROTO_V5) {
			if (s->cfg.no_retain)
				options[i] |= 2u << MQTT_SUBOPT_RETAIN_HANDLING_SHIFT; /* send retained: never */
			if (s->cfg.retain_as_published)
				options[i] |= MQTT_SUBOPT_RETAIN_AS_PUBLISHED;
		}
	}
	const struct cli_props *sp = &s->cfg.props.list[CLI_PROPS_SUBSCRIBE];
	const struct cli_props *up = &s->cfg.props.list[CLI_PROPS_UNSUBSCRIBE];
	mqtt_client_subscribe(c, (const char *const *)s->cfg.topics.v, options, s->cfg.topics.n, sp->buf, sp->len,
			      NULL);
	wisp_free(options);
	for (size_t i = 0; i < s->cfg.unsub_topics.n; i++)
		mqtt_client_unsubscribe(c, (const char *const *)&s->cfg.unsub_topics.v[i], 1, up->buf, up->len, NULL);
}

static void on_subscribe(struct mqtt_client *c, uint16_t mid, const uint8_t *codes, size_t count, void *ud)
{
	(void)c;
	struct sub_state *s = ud;
	bool some_allowed = false;
	if (s->cfg.debug && !s->cfg.quiet && count)
		printf("Subscribed (mid: %u): %u", (unsigned)mid, (unsigned)codes[0]);
	for (size_t i = 0; i < count; i++) {
		if (i && s->cfg.debug && !s->cfg.quiet)
			printf(", %u", (unsigned)codes[i]);
		some_allowed |= codes[i] < 128;
	}
	if (s->cfg.debug && !s->cfg.quiet && count)
		printf("\n");
	if (!some_allowed) {
		finish(s, 0);
		cli_err(&s->cfg, "All subscription requests were denied.\n");
	}
	if (s->cfg.exit_after_sub) {
		finish(s, 0);
		if (!some_allowed)
			disconnect(s, 0); /* mosquitto_sub disconnects a second time */
	}
}

static bool filtered_out(const struct sub_state *s, const struct mqtt_publish *p)
{
	for (size_t i = 0; i < s->cfg.filter_outs.n; i++)
		if (cli_topic_matches(s->cfg.filter_outs.v[i], (const char *)p->topic.ptr, p->topic.len))
			return true;
	return false;
}

static void print_one(struct sub_state *s, const struct mqtt_publish *p)
{
	if (s->cfg.random_filter < 10000 && random() % 10000 >= s->cfg.random_filter)
		return;
	/* Topic and payload as C strings, as libmosquitto hands them over. */
	char *topic = wisp_strndup((const char *)p->topic.ptr, p->topic.len);
	char *payload = p->payload.len ? wisp_strndup((const char *)p->payload.ptr, p->payload.len) : NULL;
	if (!topic || (p->payload.len && !payload)) {
		wisp_free(topic);
		wisp_free(payload);
		return;
	}
	struct sub_msg m = {.topic = topic, .payload = payload, .len = p->payload.len, .qos = p->qos,
			    .retain = p->retain, .mid = p->packet_id,
			    .props = s->cfg.protocol_version == MQTT_PROTO_V5 ? &p->props : NULL};
	struct sub_format_opts fo = {.format = s->cfg.format, .eol = s->cfg.eol, .verbose = s->cfg.verbose,
				     .pretty = s->cfg.pretty, .quiet = s->cfg.quiet};
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	sub_format_print(stdout, stderr, &fo, &m, &now);
	wisp_free(topic);
	wisp_free(payload);
}

static void on_message(struct mqtt_client *c, const struct mqtt_publish *p, void *ud)
{
	struct sub_state *s = ud;
	if (!s->process_messages)
		return;
	if (s->cfg.retained_only && !p->retain) {
		/* The first live message ends a --retained-only run unprinted. */
		s->process_messages = false;
		if (s->last_mid == 0)
			finish(s, 0);
		return;
	}
	if (p->retain && s->cfg.no_retain)
		return;
	if (filtered_out(s, p))
		return;
	if (s->cfg.remove_retained && p->retain) {
		char *topic = wisp_strndup((const char *)p->topic.ptr, p->topic.len);
		if (topic) {
			mqtt_client_publish(c, topic, NULL, 0, 1, true, &s->last_mid);
			wisp_free(topic);
		}
	}
	print_one(s, p);
	if (s->cfg.msg_count > 0 && ++s->msg_count == s->cfg.msg_count) {
		s->process_messages = false;
		if (s->last_mid == 0)
			finish(s, 0);
	}
}

static void on_publish(struct mqtt_client *c, uint16_t mid, uint8_t reason, void *ud)
{
	(void)c;
	(void)reason;
	struct sub_state *s = ud;
	if (mid == s->last_mid) {
		s->last_mid = 0;
		if (!s->process_messages)
			finish(s, 0);
	}
}

static void on_disconnect(struct mqtt_client *c, int err, void *ud)
{
	(void)c;
	struct sub_state *s = ud;
	if (s->done || err == MQTT_CLIENT_OK || err == MQTT_CLIENT_EREFUSED) {
		loop_stop(s->cc.loop);
		return;
	}
	if (s->connected_once && cli_conn_loop_ends(&s->cc, &s->cfg, err, &s->exit_code)) {
		s->done = true;
		loop_stop(s->cc.loop);
		return;
	}
	if (!s->in_loop && err == MQTT_CLIENT_ELOST)
		s->in_loop = true; /* closed before CONNACK: loop_forever reconnects */
	if (s->in_loop) {
		/* mosquitto_loop_forever() gives up on a TLS error only; the
		 * client library retries anything else in a second. */
		if (err == MQTT_CLIENT_ETLS) {
			s->exit_code = cli_conn_loop_error(&s->cc, &s->cfg, err);
			s->done = true;
			loop_stop(s->cc.loop);
		}
		return;
	}
	/* The first connect failed: mosquitto_sub's blocking connect would
	 * have reported it before the loop started. */
	s->exit_code = cli_conn_report_failure(&s->cc, &s->cfg, err);
	s->done = true;
	loop_stop(s->cc.loop);
}

/* mosquitto_sub's handler, for -W's SIGALRM as for SIGINT and SIGTERM:
 * exit(-1) until a CONNACK was ever accepted; after that a DISCONNECT
 * (v5: "disconnect with will message", so the will is still sent) ends
 * the loop, connected or reconnecting. */
static void on_signal(int signo, void *ud)
{
	struct sub_state *s = ud;
	if (!s->connected_once)
		exit(255);
	if (signo == SIGALRM)
		s->timed_out = true;
	bool connected = mqtt_client_is_connected(s->cc.client);
	s->done = true;
	s->exit_code = signo == SIGALRM ? CLI_EXIT_TIMEOUT : 0;
	disconnect(s, MQTT_RC_DISCONNECT_WITH_WILL);
	if (!connected)
		loop_stop(s->cc.loop); /* between attempts nothing calls back */
}

int main(int argc, char **argv)
{
	static struct sub_state s;
	cli_rand_init();
	int rc = cli_cfg_load(&s.cfg, CLI_SUB, argc, argv);
	if (rc) {
		if (rc == CLI_PARSE_HELP)
			cli_print_usage(CLI_SUB);
		else if (rc == CLI_PARSE_VERSION)
			cli_print_version(CLI_SUB);
		else
			fprintf(stderr, "\nUse 'wisp_sub --help' to see usage.\n");
		cli_cfg_cleanup(&s.cfg);
		return 1;
	}
	if (s.cfg.no_retain && s.cfg.retained_only) {
		fprintf(stderr, "\nError: Combining '-R' and '--retained-only' makes no sense.\n");
		cli_cfg_cleanup(&s.cfg);
		return 1;
	}
	static const struct mqtt_client_cbs cbs = {
		.on_connect = on_connect,
		.on_disconnect = on_disconnect,
		.on_message = on_message,
		.on_publish = on_publish,
		.on_subscribe = on_subscribe,
		.on_log = on_log,
	};
	s.process_messages = true;
	rc = cli_conn_setup(&s.cc, &s.cfg, &cbs, &s);
	if (rc == 0 && cli_signals_start(&s.sig, s.cc.loop, on_signal, &s) != 0)
		rc = CLI_EXIT_ERROR;
	if (rc == 0)
		mqtt_client_set_reconnect(s.cc.client, true); /* loop_forever */
	if (rc == 0)
		rc = cli_conn_start(&s.cc, &s.cfg);
	if (rc == 0) {
		if (s.cfg.timeout)
			alarm(s.cfg.timeout);
		loop_run(s.cc.loop);
		rc = s.exit_code;
		if (s.timed_out) {
			cli_err(&s.cfg, "Timed out\n");
			rc = CLI_EXIT_TIMEOUT;
		}
	}
	fflush(stdout);
	if (s.cc.loop && s.sig.cb)
		cli_signals_stop(&s.sig, s.cc.loop);
	cli_conn_cleanup(&s.cc);
	cli_cfg_cleanup(&s.cfg);
	return rc;
}
