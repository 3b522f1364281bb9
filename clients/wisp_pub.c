/*
 * wisp_pub: a drop-in for mosquitto_pub 2.0 (MQTT 3.1, 3.1.1 and 5 with -D
 * properties). Publishes one message (-m, -f, -s, -n), possibly --repeat'ed,
 * or one message per stdin line (-l) as lines arrive, then disconnects once
 * everything is acknowledged. Output and exit statuses are mosquitto_pub's.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cli_conn.h"
#include "cli_help.h"
#include "cli_misc.h"
#include "cli_opts.h"

#define STDIN_CHUNK 65536
/* libmosquitto's MOSQ_ERR_NOT_SUPPORTED: v5 properties on a v3 publish. */
#define PUB_NOT_SUPPORTED 10

struct pub_state {
	struct cli_cfg cfg;
	struct cli_conn cc;
	/* the one message of -m/-f/-s/-n */
	char *payload;
	size_t payload_len;
	int sent;          /* publishes issued so far (--repeat) */
	uint16_t last_mid; /* completion of this one triggers the next step */
	struct mtimer repeat_timer;
	/* -l */
	struct loop_io stdin_io;
	bool stdin_polled; /* false: a regular file, read on a timer instead */
	struct mtimer stdin_timer;
	char *line;
	size_t line_len, line_cap;
	bool stdin_eof;
	bool connected_once;
	bool refused;        /* CONNACK refused the connection */
	bool published_once; /* with -D publish topic-alias, later ones go without the topic */
	bool done;
	int exit_code;
};

static void disconnect(struct pub_state *s, uint8_t reason)
{
	const struct cli_props *dp = &s->cfg.props.list[CLI_PROPS_DISCONNECT];
	mqtt_client_disconnect_props(s->cc.client, reason, dp->buf, dp->len);
}

static void finish(struct pub_state *s, int code)
{
	if (s->done)
		return;
	s->done = true;
	s->exit_code = code;
	disconnect(s, 0);
}

/* mosquitto_pub's my_publish(): 0, PUB_NOT_SUPPORTED or a negative
 * MQTT_CLIENT_E*. */
static int publish(struct pub_state *s, const void *payload, size_t len)
{
	const struct cli_props *pp = &s->cfg.props.list[CLI_PROPS_PUBLISH];
	if (pp->len && s->cfg.protocol_version != MQTT_PROTO_V5)
		return PUB_NOT_SUPPORTED;
	/* The topic once, then only its alias [MQTT-3.3.2.3.4]. */
	const char *topic = s->cfg.props.have_topic_alias && s->published_once ? "" : s->cfg.topic;
	s->published_once = true;
	return mqtt_client_publish_props(s->cc.client, topic, payload, len, (uint8_t)s->cfg.qos, s->cfg.retain,
					 pp->buf, pp->len, &s->last_mid);
}

static void on_log(struct mqtt_client *c, const char *line, void *ud)
{
	(void)c;
	struct pub_state *s = ud;
	if (s->cfg.debug)
		printf("%s\n", line);
}

static void publish_once(struct pub_state *s)
{
	s->sent++;
	int rc = publish(s, s->payload, s->payload_len);
	if (rc == PUB_NOT_SUPPORTED) {
		finish(s, 0); /* mosquitto_pub says nothing and exits 0 */
		return;
	}
	if (rc != 0) {
		cli_err(&s->cfg, "Error: %s\n", mqtt_client_strerror(rc));
		finish(s, CLI_EXIT_ERROR);
	}
}

static void on_repeat(struct mtimer *t, void *ud)
{
	(void)t;
	publish_once(ud);
}

/* -l: everything read and acknowledged ends the run. */
static void maybe_finish_lines(struct pub_state *s)
{
	if (s->stdin_eof && mqtt_client_pending(s->cc.client) == 0 && mqtt_client_out_pending(s->cc.client) == 0)
		finish(s, 0);
}

static void publish_line(struct pub_state *s, const char *p, size_t len)
{
	int rc = publish(s, p, len);
	if (rc != 0)
		cli_err(&s->cfg, "Error: Publish returned %d, disconnecting.\n", rc);
}

/* Splits buffered input at '\n' (dropped; '\r' is kept, as mosquitto_pub). */
static void drain_lines(struct pub_state *s)
{
	size_t start = 0;
	for (size_t i = 0; i < s->line_len; i++) {
		if (s->line[i] == '\n') {
			publish_line(s, s->line + start, i - start);
			start = i + 1;
		}
	}
	memmove(s->line, s->line + start, s->line_len - start);
	s->line_len -= start;
	if (s->stdin_eof && s->line_len) {
		publish_line(s, s->line, s->line_len); /* last line without '\n' */
		s->line_len = 0;
	}
}

static void read_stdin(struct pub_state *s)
{
	if (s->line_cap - s->line_len < STDIN_CHUNK) {
		size_t ncap = s->line_cap + STDIN_CHUNK;
		char *b = wisp_realloc(s->line, ncap);
		if (!b) {
			finish(s, CLI_EXIT_ERROR);
			return;
		}
		s->line = b;
		s->line_cap = ncap;
	}
	ssize_t n;
	do {
		n = read(STDIN_FILENO, s->line + s->line_len, s->line_cap - s->line_len);
	} while (n == -1 && errno == EINTR);
	if (n == -1 && errno == EAGAIN)
		return;
	if (n <= 0) {
		s->stdin_eof = true;
		if (s->stdin_polled)
			loop_io_stop(s->cc.loop, &s->stdin_io);
	} else {
		s->line_len += (size_t)n;
	}
	drain_lines(s);
	if (s->stdin_eof)
		maybe_finish_lines(s);
	else if (!s->stdin_polled)
		mtimer_start(s->cc.timers, &s->stdin_timer, 0);
}

static void on_stdin(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	(void)events;
	read_stdin(container_of(io, struct pub_state, stdin_io));
}

static void on_stdin_timer(struct mtimer *t, void *ud)
{
	(void)t;
	read_stdin(ud);
}

static void start_stdin_lines(struct pub_state *s)
{
	if (s->stdin_polled || s->stdin_eof || mtimer_is_armed(&s->stdin_timer))
		return;
	int fl = fcntl(STDIN_FILENO, F_GETFL);
	if (fl != -1)
		fcntl(STDIN_FILENO, F_SETFL, fl | O_NONBLOCK);
	if (loop_io_start(s->cc.loop, &s->stdin_io, STDIN_FILENO, LOOP_READ, on_stdin) == 0) {
		s->stdin_polled = true;
		return;
	}
	/* epoll refuses regular files and /dev/null: read them on a timer. */
	if (fl != -1)
		fcntl(STDIN_FILENO, F_SETFL, fl);
	mtimer_start(s->cc.timers, &s->stdin_timer, 0);
}

static void on_connect(struct mqtt_client *c, uint8_t code, bool session_present, void *ud)
{
	(void)session_present;
	struct pub_state *s = ud;
	if (code != 0) {
		cli_print_connack_error(&s->cfg, code);
		s->refused = true;
		s->exit_code = code;
		s->done = true;
		return;
	}
	/* Only -l stays connected through losses, as mosquitto_pub's -l
	 * loop reconnects; -m/-f/-s/-n end on the first one. */
	if (s->cfg.pub_mode == CLI_MSG_STDIN_LINE)
		mqtt_client_set_reconnect(c, true);
	if (s->connected_once)
		return; /* reconnected: queued messages are resent by the library */
	s->connected_once = true;
	if (s->cfg.pub_mode == CLI_MSG_STDIN_LINE)
		start_stdin_lines(s);
	else
		publish_once(s);
}

static void on_publish(struct mqtt_client *c, uint16_t mid, uint8_t reason, void *ud)
{
	(void)c;
	struct pub_state *s = ud;
	if (s->cfg.protocol_version == MQTT_PROTO_V5 && reason >= 128)
		cli_err(&s->cfg, "Warning: Publish %u failed: %s.\n", (unsigned)mid,
			cli_connack_string(MQTT_PROTO_V5, reason));
	if (s->cfg.pub_mode == CLI_MSG_STDIN_LINE) {
		maybe_finish_lines(s);
		return;
	}
	if (mid != s->last_mid)
		return;
	if (s->sent < s->cfg.repeat_count) {
		/* The delay counts from the previous delivery. */
		mtimer_start(s->cc.timers, &s->repeat_timer, s->cfg.repeat_delay_us / 1000u);
		return;
	}
	finish(s, 0);
}

static void on_disconnect(struct mqtt_client *c, int err, void *ud)
{
	(void)c;
	struct pub_state *s = ud;
	if (s->done || err == MQTT_CLIENT_OK || err == MQTT_CLIENT_EREFUSED) {
		loop_stop(s->cc.loop);
		return;
	}
	if (s->connected_once && cli_conn_loop_ends(&s->cc, &s->cfg, err, &s->exit_code)) {
		s->done = true;
		loop_stop(s->cc.loop);
		return;
	}
	if (s->connected_once && s->cfg.pub_mode == CLI_MSG_STDIN_LINE)
		return; /* the client library reconnects in a second */
	/* "Error: The connection was lost." and 7, at once, before or after
	 * CONNACK. */
	s->exit_code = s->connected_once ? cli_conn_loop_error(&s->cc, &s->cfg, err)
					 : cli_conn_report_failure(&s->cc, &s->cfg, err);
	s->done = true;
	loop_stop(s->cc.loop);
}

/* Reads all of `f` into s->payload. 0 or -1. */
static int slurp(struct pub_state *s, FILE *f)
{
	size_t cap = 0;
	for (;;) {
		if (cap - s->payload_len < STDIN_CHUNK) {
			char *b = wisp_realloc(s->payload, cap + STDIN_CHUNK);
			if (!b)
				return -1;
			s->payload = b;
			cap += STDIN_CHUNK;
		}
		size_t n = fread(s->payload + s->payload_len, 1, cap - s->payload_len, f);
		s->payload_len += n;
		if (n == 0)
			return ferror(f) ? -1 : 0;
	}
}

static int load_message(struct pub_state *s)
{
	switch (s->cfg.pub_mode) {
	case CLI_MSG_CMD:
		s->payload = wisp_strndup(s->cfg.message, s->cfg.msglen);
		s->payload_len = s->cfg.msglen;
		return s->payload ? 0 : 1;
	case CLI_MSG_FILE: {
		FILE *f = fopen(s->cfg.file_input, "rb");
		if (!f) {
			cli_err(&s->cfg, "Error: Unable to open file \"%s\".\n", s->cfg.file_input);
			cli_err(&s->cfg, "Error loading input file \"%s\".\n", s->cfg.file_input);
			return 1;
		}
		int rc = slurp(s, f);
		fclose(f);
		if (rc) {
			cli_err(&s->cfg, "Error loading input file \"%s\".\n", s->cfg.file_input);
			return 1;
		}
		return 0;
	}
	case CLI_MSG_STDIN_FILE: {
		int rc = slurp(s, stdin);
		if (rc == 0 && s->payload_len == 0)
			cli_err(&s->cfg, "Error: Zero length input.\n"); /* mosquitto_pub sends nothing then */
		if (rc != 0 || s->payload_len == 0) {
			cli_err(&s->cfg, "Error loading input from stdin.\n");
			return 1;
		}
		return 0;
	}
	default:
		return 0;
	}
}

int main(int argc, char **argv)
{
	static struct pub_state s;
	cli_rand_init();
	int rc = cli_cfg_load(&s.cfg, CLI_PUB, argc, argv);
	if (rc) {
		if (rc == CLI_PARSE_HELP)
			cli_print_usage(CLI_PUB);
		else if (rc == CLI_PARSE_VERSION)
			cli_print_version(CLI_PUB);
		else
			fprintf(stderr, "\nUse 'wisp_pub --help' to see usage.\n");
		cli_cfg_cleanup(&s.cfg);
		return 1;
	}
	/* The message first: mosquitto_pub reads it before checking the topic. */
	if (load_message(&s)) {
		cli_cfg_cleanup(&s.cfg);
		wisp_free(s.payload);
		return 1;
	}
	if (!s.cfg.topic || s.cfg.pub_mode == CLI_MSG_NONE) {
		fprintf(stderr, "Error: Both topic and message must be supplied.\n");
		cli_print_usage(CLI_PUB);
		cli_cfg_cleanup(&s.cfg);
		wisp_free(s.payload);
		return 1;
	}
	static const struct mqtt_client_cbs cbs = {
		.on_connect = on_connect,
		.on_disconnect = on_disconnect,
		.on_publish = on_publish,
		.on_log = on_log,
	};
	mtimer_init(&s.repeat_timer, on_repeat, &s);
	mtimer_init(&s.stdin_timer, on_stdin_timer, &s);
	/* No SIGINT/SIGTERM handler: mosquitto_pub has none, so it dies by
	 * the signal and the broker publishes the will. */
	signal(SIGPIPE, SIG_IGN);
	rc = cli_conn_setup(&s.cc, &s.cfg, &cbs, &s);
	if (rc == 0)
		rc = cli_conn_start(&s.cc, &s.cfg);
	if (rc == 0) {
		loop_run(s.cc.loop);
		rc = s.exit_code;
		/* mosquitto_pub then reports what its network loop returned. */
		if (s.refused)
			cli_err(&s.cfg, "Error: %s\n",
				s.cfg.protocol_version == MQTT_PROTO_V5
					? "A network protocol error occurred when communicating with the broker."
					: "The connection was refused.");
	}
	fflush(stdout);
	if (s.cc.timers) {
		mtimer_stop(s.cc.timers, &s.repeat_timer);
		mtimer_stop(s.cc.timers, &s.stdin_timer);
	}
	if (s.stdin_polled)
		loop_io_stop(s.cc.loop, &s.stdin_io);
	cli_conn_cleanup(&s.cc);
	cli_cfg_cleanup(&s.cfg);
	wisp_free(s.payload);
	wisp_free(s.line);
	return rc;
}
