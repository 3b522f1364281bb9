/*
 * $SYS statistics: Mosquitto-compatible topics under $SYS/broker/,
 * published as retained messages every sys_interval seconds, so a
 * dashboard that subscribes to $SYS/# gets the figures at once and then
 * every interval. The counters themselves are plain integers bumped on the
 * hot path (struct broker_stats); all the work is here, once per interval.
 *
 * The figures and their topics come from the table in metrics.c, which
 * the Prometheus endpoint renders too, so the two never drift. Dropped
 * messages are published in total (Mosquitto's topic) and per reason under
 * $SYS/broker/messages/dropped/<reason> (drop.h); connections ended or
 * refused per reason under $SYS/broker/clients/disconnects/<name>
 * (session/reason.h), and the older aggregate topics (clients/malformed...)
 * as the sums of their groups.
 *
 * Load figures are exponentially damped per-minute rates over 1, 5 and 15
 * minutes, the way Mosquitto and Unix load averages compute them.
 */
#include "sys.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "metrics.h"

#ifndef WISP_VERSION
#define WISP_VERSION "0.0.0"
#endif

static const double load_minutes[SYS_LOAD_WINDOWS] = {1.0, 5.0, 15.0};

static void publish(struct broker *b, const char *topic, const char *value)
{
	struct topic_level levels[16];
	size_t tlen = strlen(topic);
	int n = topic_split(topic, tlen, levels, 16);
	struct msg *m = msg_new(topic, tlen, value, strlen(value), 0, true);
	if (!m || n < 0) {
		msg_unref(m);
		return;
	}
	broker_retain(b, m);
	broker_route(b, m, levels, (size_t)n);
	msg_unref(m);
}

void sys_publish_value(struct broker *b, const char *topic, const char *value) { publish(b, topic, value); }

/* One damped rate per window, fed with the count of the last interval. */
static void update_load(struct sys_load *l, uint64_t now_value, double interval_s)
{
	double per_min = (double)(now_value - l->last) * 60.0 / interval_s;
	l->last = now_value;
	for (int i = 0; i < SYS_LOAD_WINDOWS; i++) {
		double k = exp(-interval_s / (60.0 * load_minutes[i]));
		l->avg[i] = l->avg[i] * k + per_min * (1.0 - k);
	}
}

/* One $SYS value as the row's format asks. */
static void format_sys(const struct metric *m, uint64_t u, double d, bool is_float, char *buf, size_t len)
{
	switch ((enum metric_sys_format)m->sys_format) {
	case METRIC_SYS_FLOAT2:
		snprintf(buf, len, "%.2f", is_float ? d : (double)u);
		return;
	case METRIC_SYS_SECONDS:
		snprintf(buf, len, "%llu seconds", (unsigned long long)u);
		return;
	case METRIC_SYS_VERSION:
		snprintf(buf, len, "wisp version %s", WISP_VERSION);
		return;
	case METRIC_SYS_STATE:
		snprintf(buf, len, "%s", u ? "degraded" : "ok");
		return;
	case METRIC_SYS_INT:
		break;
	}
	snprintf(buf, len, "%llu", (unsigned long long)u);
}

/* "$SYS/broker/" + the row's topic, with the label's value for a family. */
static void sys_topic(const char *pattern, const char *label_value, char *buf, size_t len)
{
	int n = snprintf(buf, len, "$SYS/broker/");
	const char *pct = strstr(pattern, "%s");
	if (!pct || !label_value) {
		snprintf(buf + n, len - (size_t)n, "%s", pattern);
		return;
	}
	snprintf(buf + n, len - (size_t)n, "%.*s%s%s", (int)(pct - pattern), pattern, label_value, pct + 2);
}

void sys_publish(struct broker *b)
{
	struct sys_state *st = &b->sys;
	const struct broker_stats *s = &b->stats;
	uint64_t now = loop_now_s(b->loop);
	double interval = st->last_tick ? (double)(now - st->last_tick) : 0.0;
	st->last_tick = now;
	if (interval > 0) {
		update_load(&st->msgs_received, s->msgs_received, interval);
		update_load(&st->msgs_sent, s->msgs_sent, interval);
		update_load(&st->bytes_received, b->srv.conns.in.bytes_received, interval);
		update_load(&st->bytes_sent, b->srv.stats.bytes_sent, interval);
		update_load(&st->dropped, s->publish_dropped, interval);
		update_load(&st->connections, s->clients_total, interval);
		update_load(&st->sockets, b->srv.stats.conns_accepted, interval);
	}

	/* Every row of the shared table that has a $SYS topic (metrics.h). */
	struct metrics_snap snap;
	metrics_snapshot(b, &snap);
	for (size_t r = 0; r < metrics_count; r++) {
		const struct metric *m = &metrics_table[r];
		if (!m->sys || !metrics_shown(m, &snap))
			continue;
		size_t n = metrics_label_count(b, m);
		for (size_t i = 0; i < n; i++) {
			char topic[160], value[64];
			uint64_t u;
			double d;
			bool is_float = metrics_value(b, &snap, m, i, &u, &d);
			format_sys(m, u, d, is_float, value, sizeof value);
			sys_topic(m->sys, metrics_label_value(b, m, i), topic, sizeof topic);
			publish(b, topic, value);
			if (m->sys_alias) {
				sys_topic(m->sys_alias, metrics_label_value(b, m, i), topic, sizeof topic);
				publish(b, topic, value);
			}
		}
	}
	/* A bridge's last error is words, which the numeric table has no
	 * row for; "none" since the last CONNACK (an empty retained payload
	 * would delete the topic). */
	for (size_t i = 0; i < b->bridge_count; i++) {
		char topic[160];
		snprintf(topic, sizeof topic, "$SYS/broker/bridges/%s/last_error", b->bridge_stats[i].name);
		const char *e = b->bridge_stats[i].last_error;
		publish(b, topic, e && *e ? e : "none");
	}
}

static void on_tick(struct loop *l, struct loop_timer *t)
{
	struct broker *b = container_of(t, struct broker, sys.timer);
	sys_publish(b);
	loop_timer_start(l, t, b->cfg->sys_interval, on_tick);
}

void sys_start(struct broker *b)
{
	b->sys.start = loop_now_s(b->loop);
	list_init(&b->sys.timer.link);
	if (b->cfg->sys_interval == 0)
		return;
	sys_publish(b);
	loop_timer_start(b->loop, &b->sys.timer, b->cfg->sys_interval, on_tick);
}

void sys_stop(struct broker *b)
{
	loop_timer_stop(b->loop, &b->sys.timer);
}
