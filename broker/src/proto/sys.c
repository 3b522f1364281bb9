/*
 * $SYS statistics: Mosquitto-compatible topics under $SYS/broker/,
 * published as retained messages every sys_interval seconds, so a
 * dashboard that subscribes to $SYS/# gets the figures at once and then
 * every interval. The counters themselves are plain integers bumped on the
 * hot path (struct broker_stats); all the work is here, once per interval.
 *
 * Dropped messages are published in total (Mosquitto's topic) and per
 * reason under $SYS/broker/messages/dropped/<reason> (drop.h); connections
 * ended or refused per reason under $SYS/broker/clients/disconnects/<name>
 * (session/reason.h).
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

#ifndef WISP_VERSION
#define WISP_VERSION "0.0.0"
#endif

static const double load_minutes[SYS_LOAD_WINDOWS] = {1.0, 5.0, 15.0};
static const char *const load_names[SYS_LOAD_WINDOWS] = {"1min", "5min", "15min"};

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

static void publish_u64(struct broker *b, const char *topic, uint64_t v)
{
	char buf[32];
	snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
	publish(b, topic, buf);
}

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

static void publish_load(struct broker *b, const char *what, const struct sys_load *l)
{
	char topic[96], value[32];
	for (int i = 0; i < SYS_LOAD_WINDOWS; i++) {
		snprintf(topic, sizeof topic, "$SYS/broker/load/%s/%s", what, load_names[i]);
		snprintf(value, sizeof value, "%.2f", l->avg[i]);
		publish(b, topic, value);
	}
}

/* The aggregate topics that predate the reason table, by group (reason.h). */
static const char *const group_topics[REASON_G_COUNT] = {
	[REASON_G_MALFORMED] = "$SYS/broker/clients/malformed",
	[REASON_G_KEEPALIVE] = "$SYS/broker/clients/keepalive_expired",
	[REASON_G_TAKEOVER] = "$SYS/broker/clients/takeover_refused",
	[REASON_G_OUTPUT_STALLED] = "$SYS/broker/limits/output_stalled",
	[REASON_G_UNAUTH] = "$SYS/broker/limits/unauthenticated_refused",
};

/* Every reason's count under clients/disconnects/<name>, and each older
 * aggregate topic as the sum of its group. */
static void publish_reasons(struct broker *b, const struct broker_stats *s)
{
	uint64_t groups[REASON_G_COUNT] = {0};
	for (int r = 0; r < REASON_COUNT; r++) {
		const struct reason_info *ri = reason_info((enum reason)r);
		char topic[96];
		snprintf(topic, sizeof topic, "$SYS/broker/clients/disconnects/%s", ri->name);
		publish_u64(b, topic, s->reasons[r]);
		groups[ri->group] += s->reasons[r];
	}
	for (int g = 0; g < REASON_G_COUNT; g++)
		if (group_topics[g])
			publish_u64(b, group_topics[g], groups[g]);
}

/* Walks the sessions once per interval rather than keeping gauges on the
 * hot path. `stored` counts QoS 1/2 messages queued or in flight. */
static size_t connected_clients(const struct broker *b, size_t *offline, size_t *stored)
{
	size_t online = 0, off = 0, msgs = 0;
	for (size_t i = 0; i < b->sessions.nbuckets; i++)
		for (const struct session *s = b->sessions.buckets[i]; s; s = s->hash_next) {
			if (s->conn)
				online++;
			else
				off++;
			msgs += s->queued_count + s->inflight_count;
		}
	*offline = off;
	*stored = msgs;
	return online;
}

void sys_publish(struct broker *b)
{
	struct sys_state *st = &b->sys;
	const struct broker_stats *s = &b->stats;
	uint64_t now = loop_now_s(b->loop);
	double interval = st->last_tick ? (double)(now - st->last_tick) : 0.0;
	st->last_tick = now;

	size_t offline, stored;
	size_t online = connected_clients(b, &offline, &stored);
	if (online > st->clients_max)
		st->clients_max = online;
	size_t heap = wisp_mem_used();
	if (heap > st->heap_max)
		st->heap_max = heap;

	char buf[64];
	publish(b, "$SYS/broker/version", "wisp version " WISP_VERSION);
	snprintf(buf, sizeof buf, "%llu seconds", (unsigned long long)(now - st->start));
	publish(b, "$SYS/broker/uptime", buf);
	publish_u64(b, "$SYS/broker/clients/connected", online);
	publish_u64(b, "$SYS/broker/clients/active", online);
	publish_u64(b, "$SYS/broker/clients/disconnected", offline);
	publish_u64(b, "$SYS/broker/clients/inactive", offline);
	publish_u64(b, "$SYS/broker/clients/total", online + offline);
	publish_u64(b, "$SYS/broker/clients/maximum", st->clients_max);
	publish_u64(b, "$SYS/broker/messages/received", s->msgs_received);
	publish_u64(b, "$SYS/broker/messages/sent", s->msgs_sent);
	publish_u64(b, "$SYS/broker/publish/messages/received", s->msgs_received);
	publish_u64(b, "$SYS/broker/publish/messages/sent", s->msgs_sent);
	publish_u64(b, "$SYS/broker/publish/messages/dropped", s->publish_dropped);
	publish_u64(b, "$SYS/broker/publish/messages/sys_dropped", s->sys_publish_dropped);
	publish_u64(b, "$SYS/broker/publish/messages/acl_dropped", s->acl_dropped_queued);
	publish_u64(b, "$SYS/broker/clients/refused", s->refused);
	for (int r = 0; r < DROP_REASON_COUNT; r++) {
		char topic[96];
		snprintf(topic, sizeof topic, "$SYS/broker/messages/dropped/%s", drop_reason_name((enum drop_reason)r));
		publish_u64(b, topic, s->dropped[r]);
	}
	publish_u64(b, "$SYS/broker/bytes/received", b->srv.conns.in.bytes_received);
	publish_u64(b, "$SYS/broker/bytes/sent", b->srv.stats.bytes_sent);
	publish_u64(b, "$SYS/broker/subscriptions/count", tree_count(b->subs));
	publish_u64(b, "$SYS/broker/subscriptions/refused", s->subs_refused);
	publish_u64(b, "$SYS/broker/topics/refused", s->topics_refused);
	publish_u64(b, "$SYS/broker/retained messages/count", retained_count(b->retained));
	publish_u64(b, "$SYS/broker/retained messages/refused", s->retained_refused);
	publish_u64(b, "$SYS/broker/clients/login_failures", b->auth.failed_logins);
	publish_u64(b, "$SYS/broker/clients/login_checks/refused_busy", b->auth.pending_max_hit);
	publish_u64(b, "$SYS/broker/clients/login_checks/refused_per_address", b->auth.pending_address_hit);
	publish_u64(b, "$SYS/broker/clients/login_checks/cancelled", b->auth.verify_cancelled);
	publish_u64(b, "$SYS/broker/heap/current", heap);
	publish_u64(b, "$SYS/broker/heap/maximum", st->heap_max);
	publish_u64(b, "$SYS/broker/store/messages/count", stored);
	/* Always published (zeros and "off" without a cluster), so a
	 * dashboard's topic list does not depend on the configuration. */
	publish(b, "$SYS/broker/cluster/state",
		!b->cfg->cluster.nats ? "off" : s->cluster.connected ? "connected" : "disconnected");
	publish_u64(b, "$SYS/broker/cluster/messages/sent", s->cluster.sent);
	publish_u64(b, "$SYS/broker/cluster/messages/received", s->cluster.received);
	publish_u64(b, "$SYS/broker/cluster/messages/dropped", s->cluster.dropped);
	publish_u64(b, "$SYS/broker/cluster/messages/send_failed", s->cluster.send_failed);
	publish_u64(b, "$SYS/broker/cluster/subjects", s->cluster.subjects);
	struct persist_status ps;
	persist_status(b, &ps);
	if (ps.enabled) {
		publish(b, "$SYS/broker/store/state", ps.degraded ? "degraded" : "ok");
		publish_u64(b, "$SYS/broker/store/write_errors", ps.write_errors);
		publish_u64(b, "$SYS/broker/store/fsync_errors", ps.fsync_errors);
		publish_u64(b, "$SYS/broker/store/compaction_errors", ps.compact_errors);
		publish_u64(b, "$SYS/broker/store/refused", ps.refused);
		publish_u64(b, "$SYS/broker/store/held_acks", ps.held_acks);
	}
	uint64_t handshaking = 0;
	for (size_t i = 0; i < b->srv.listener_count; i++)
		handshaking += b->srv.listeners[i].net.hs.count;
	publish_u64(b, "$SYS/broker/tls/handshakes/current", handshaking);
	publish_u64(b, "$SYS/broker/tls/handshakes/refused", b->srv.stats.handshakes_refused);
	publish_u64(b, "$SYS/broker/tls/handshakes/failed", b->srv.stats.handshakes_failed);
	publish_u64(b, "$SYS/broker/tls/handshakes/resumed", b->srv.stats.handshakes_resumed);
	const struct ws_stats *ws = ws_stats_get();
	publish_u64(b, "$SYS/broker/ws/upgrades", ws->upgrades);
	publish_u64(b, "$SYS/broker/ws/refused", ws->refused);
	publish_u64(b, "$SYS/broker/ws/refused/head_too_large", ws->head_too_large);
	publish_u64(b, "$SYS/broker/ws/protocol_errors", ws->protocol_errors);
	publish_u64(b, "$SYS/broker/ws/frames_too_large", ws->frames_too_large);
	publish_u64(b, "$SYS/broker/log/suppressed", log_suppressed_total());
	publish_u64(b, "$SYS/broker/limits/connections_refused", b->srv.stats.conns_refused);

	if (interval > 0) {
		update_load(&st->msgs_received, s->msgs_received, interval);
		update_load(&st->msgs_sent, s->msgs_sent, interval);
		update_load(&st->bytes_received, b->srv.conns.in.bytes_received, interval);
		update_load(&st->bytes_sent, b->srv.stats.bytes_sent, interval);
		update_load(&st->dropped, s->publish_dropped, interval);
		update_load(&st->connections, s->clients_total, interval);
	}
	publish_load(b, "messages/received", &st->msgs_received);
	publish_load(b, "messages/sent", &st->msgs_sent);
	publish_load(b, "bytes/received", &st->bytes_received);
	publish_load(b, "bytes/sent", &st->bytes_sent);
	publish_load(b, "publish/dropped", &st->dropped);
	publish_load(b, "connections", &st->connections);
	/* Last: a subscriber with a small output bound gets the older topics
	 * first, as before there were forty of these. */
	publish_reasons(b, s);
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
