/*
 * The metrics table (see metrics.h) and the Prometheus rendering. To add a
 * figure: one row here, and its $SYS topic in README.md's table (the e2e
 * test 12_sys checks that every published topic is documented).
 *
 * Prometheus names follow its conventions: counters end in _total, sizes
 * are in bytes, durations in seconds, and "count" figures are gauges named
 * for what they count (promtool check metrics passes, tests/e2e/19_http).
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "log.h"

#ifndef WISP_VERSION
#define WISP_VERSION "0.0.0"
#endif

#define STAT(field) .source = METRIC_FROM_STATS, .offset = offsetof(struct broker_stats, field)
#define SNAP(field) .source = METRIC_FROM_SNAP, .offset = offsetof(struct metrics_snap, field)
#define LOAD(field) .source = METRIC_FROM_LOAD, .offset = offsetof(struct sys_state, field), \
		    .label = METRIC_LABEL_WINDOW, .sys_format = METRIC_SYS_FLOAT2, .type = METRIC_GAUGE
#define SERVER(field) .source = METRIC_FROM_SERVER, .offset = offsetof(struct server_stats, field)
#define GROUP(g) .source = METRIC_FROM_REASON_GROUP, .offset = REASON_G_##g
#define LISTENER(which) .source = METRIC_FROM_LISTENER, .offset = which, .label = METRIC_LABEL_LISTENER
#define BRIDGE(which) .source = METRIC_FROM_BRIDGE, .offset = which, .label = METRIC_LABEL_BRIDGE
#define COUNTER .type = METRIC_COUNTER
#define GAUGE .type = METRIC_GAUGE

const struct metric metrics_table[] = {
	{"info", "The broker's version (the value is always 1).", GAUGE, .source = METRIC_FROM_ONE,
	 .label = METRIC_LABEL_VERSION, .sys = "version", .sys_format = METRIC_SYS_VERSION},
	{"uptime_seconds", "Seconds since the broker started.", GAUGE, SNAP(uptime), .sys = "uptime",
	 .sys_format = METRIC_SYS_SECONDS},
	{"clients_connected", "Clients connected now.", GAUGE, SNAP(clients_online), .sys = "clients/connected",
	 .sys_alias = "clients/active"},
	{"clients_disconnected", "Persistent sessions whose client is offline.", GAUGE, SNAP(clients_offline),
	 .sys = "clients/disconnected", .sys_alias = "clients/inactive"},
	{"clients_sessions", "Sessions, online and offline.", GAUGE, SNAP(clients_all), .sys = "clients/total"},
	{"clients_maximum", "Most clients connected at once since start.", GAUGE, SNAP(clients_max),
	 .sys = "clients/maximum"},
	{"messages_received_total", "PUBLISH packets received.", COUNTER, STAT(msgs_received),
	 .sys = "messages/received", .sys_alias = "publish/messages/received"},
	{"messages_sent_total", "PUBLISH packets sent.", COUNTER, STAT(msgs_sent), .sys = "messages/sent",
	 .sys_alias = "publish/messages/sent"},
	{"messages_dropped_all_total", "Messages dropped for a subscriber, all reasons.", COUNTER,
	 STAT(publish_dropped), .sys = "publish/messages/dropped"},
	{"messages_dropped_total", "Messages dropped for a subscriber, by reason (the bound that dropped them).",
	 COUNTER, .source = METRIC_FROM_DROPPED, .label = METRIC_LABEL_REASON, .sys = "messages/dropped/%s"},
	{"sys_publish_dropped_total", "Client PUBLISHes to $SYS/ acknowledged and dropped.", COUNTER,
	 STAT(sys_publish_dropped), .sys = "publish/messages/sys_dropped"},
	{"acl_dropped_total", "Queued or in-flight messages dropped because their reader may no longer read them.",
	 COUNTER, STAT(acl_dropped_queued), .sys = "publish/messages/acl_dropped"},
	{"clients_takeover_refused_total", "CONNECTs refused: the client id's session belongs to another user.",
	 COUNTER, GROUP(TAKEOVER), .sys = "clients/takeover_refused"},
	{"clients_refused_total", "CONNECTs answered with a refusing CONNACK, all reasons.", COUNTER,
	 STAT(refused), .sys = "clients/refused"},
	{"clients_malformed_total", "Connections closed for input that breaks the protocol.", COUNTER,
	 GROUP(MALFORMED), .sys = "clients/malformed"},
	{"clients_keepalive_expired_total", "Connections closed after 1.5 keep-alive periods of silence.", COUNTER,
	 GROUP(KEEPALIVE), .sys = "clients/keepalive_expired"},
	{"bytes_received_total", "Bytes received from MQTT clients.", COUNTER, SNAP(bytes_received),
	 .sys = "bytes/received"},
	{"bytes_sent_total", "Bytes sent to MQTT clients.", COUNTER, SERVER(bytes_sent), .sys = "bytes/sent"},
	{"publish_fanout_waits_total", "Reads whose PUBLISHes fanned out to 65,536 copies: the rest of the client's "
	 "input waited for the other connections' reads.", COUNTER, SNAP(fanout_waits), .sys = "publish/fanout_waits"},
	{"subscriptions", "Subscriptions of all sessions.", GAUGE, SNAP(subscriptions), .sys = "subscriptions/count"},
	{"subscriptions_shared_groups", "Shared subscription groups ($share/{group}/{filter}) with a member.", GAUGE,
	 SNAP(shared_groups), .sys = "subscriptions/shared_groups"},
	{"subscriptions_refused_total", "Filters refused by a topic bound, max_subscriptions or memory.", COUNTER,
	 STAT(subs_refused), .sys = "subscriptions/refused"},
	{"topics_refused_total", "PUBLISH and will topics refused by max_topic_length or max_topic_levels.", COUNTER,
	 STAT(topics_refused), .sys = "topics/refused"},
	{"retained_messages", "Retained messages stored ($SYS figures included).", GAUGE, SNAP(retained),
	 .sys = "retained messages/count"},
	{"retained_refused_total", "Retained messages delivered but not stored: max_retained or max_retained_bytes.",
	 COUNTER, STAT(retained_refused), .sys = "retained messages/refused"},
	{"clients_login_failures_total", "CONNECTs refused for a bad user name or password.", COUNTER,
	 SNAP(login_failures), .sys = "clients/login_failures"},
	{"clients_login_refused_busy_total", "CONNECTs refused because the password check queue was full.", COUNTER,
	 SNAP(login_busy), .sys = "clients/login_checks/refused_busy"},
	{"clients_login_refused_per_address_total",
	 "CONNECTs refused because auth.max_pending_per_address checks were pending from that address.", COUNTER,
	 SNAP(login_per_address), .sys = "clients/login_checks/refused_per_address"},
	{"clients_login_refused_exchanges_total",
	 "CONNECTs naming an Authentication Method refused because auth.max_exchanges were under way.", COUNTER,
	 SNAP(login_exchanges), .sys = "clients/login_checks/refused_exchanges"},
	{"clients_login_cancelled_total", "Password checks dropped unrun because their connection closed.", COUNTER,
	 SNAP(login_cancelled), .sys = "clients/login_checks/cancelled"},
	{"heap_bytes", "Bytes allocated by the broker now.", GAUGE, SNAP(heap), .sys = "heap/current"},
	{"heap_max_bytes", "Most bytes allocated by the broker at once since start.", GAUGE, SNAP(heap_max),
	 .sys = "heap/maximum"},
	{"store_messages", "QoS 1/2 messages queued or in flight for all sessions.", GAUGE, SNAP(stored_msgs),
	 .sys = "store/messages/count"},
	{"store_degraded", "1 while the store cannot write or sync its log, else 0.", GAUGE, SNAP(store_degraded),
	 .sys = "store/state", .sys_format = METRIC_SYS_STATE, .flags = METRIC_PERSIST_ONLY},
	{"store_write_errors_total", "Failed writes of the store's log.", COUNTER, SNAP(store_write_errors),
	 .sys = "store/write_errors", .flags = METRIC_PERSIST_ONLY},
	{"store_fsync_errors_total", "Failed fsyncs of the store's log.", COUNTER, SNAP(store_fsync_errors),
	 .sys = "store/fsync_errors", .flags = METRIC_PERSIST_ONLY},
	{"store_compaction_errors_total", "Failed compactions of the store.", COUNTER, SNAP(store_compact_errors),
	 .sys = "store/compaction_errors", .flags = METRIC_PERSIST_ONLY},
	{"store_refused_total", "CONNECTs and PUBLISHes refused while the store cannot write.", COUNTER,
	 SNAP(store_refused), .sys = "store/refused", .flags = METRIC_PERSIST_ONLY},
	{"store_held_acks", "Acknowledgements waiting for the records they vouch for.", GAUGE, SNAP(store_held_acks),
	 .sys = "store/held_acks", .flags = METRIC_PERSIST_ONLY},
	{"cluster_connected", "1 while the node is connected to NATS; 0 while it is not, or without a cluster.", GAUGE,
	 STAT(cluster.connected), .sys = "cluster/connected"},
	{"cluster_sent_total", "Messages for the other cluster nodes handed over for NATS: to the sender thread (core "
	 "NATS) or, QoS 1/2 with cluster.durable, to the JetStream side; what NATS's client then refused is in "
	 "cluster_send_failed_total.", COUNTER, STAT(cluster.sent),
	 .sys = "cluster/messages/sent"},
	{"cluster_received_total", "Messages from NATS routed to this node's subscribers.", COUNTER,
	 STAT(cluster.received), .sys = "cluster/messages/received"},
	{"cluster_dropped_total", "Messages from NATS not routed: cluster.inbound_queue full, or unusable.", COUNTER,
	 STAT(cluster.dropped), .sys = "cluster/messages/dropped"},
	{"cluster_send_failed_total", "Messages NATS's client refused to publish (its reconnect buffer full).", COUNTER,
	 STAT(cluster.send_failed), .sys = "cluster/messages/send_failed"},
	{"cluster_send_dropped_total", "QoS 0 messages another node wanted, dropped: cluster.send_queue full (NATS "
	 "not taking them).", COUNTER, STAT(cluster.send_dropped), .sys = "cluster/messages/send_dropped"},
	{"cluster_too_large_total", "Messages not sent to the other nodes: their NATS form (payload, headers, "
	 "properties) over NATS's max_payload.", COUNTER, STAT(cluster.too_large), .sys = "cluster/messages/too_large"},
	{"cluster_pending_dropped_total", "Messages from NATS dropped by NATS's client: a subscription's pending limit "
	 "(cluster.inbound_queue) full.", COUNTER, STAT(cluster.pending_dropped), .sys = "cluster/messages/pending_dropped"},
	{"cluster_subjects", "NATS subscriptions held for this node's filters.", GAUGE, STAT(cluster.subjects),
	 .sys = "cluster/subjects"},
	{"cluster_durable_ready", "1 while the JetStream stream and this node's consumer are bound.", GAUGE,
	 STAT(cluster.durable_ready), .sys = "cluster/durable_ready"},
	{"cluster_pending", "QoS 1/2 messages waiting for JetStream's ack (their PUBACK/PUBREC waits).", GAUGE,
	 STAT(cluster.pending), .sys = "cluster/messages/pending"},
	{"cluster_overflow_total", "QoS 1/2 messages no publisher waits on (wills, HTTP API) sent at most once: "
	 "cluster.outbound_queue full.", COUNTER, STAT(cluster.overflow), .sys = "cluster/messages/overflow"},
	{"cluster_waited_total", "QoS 1/2 PUBLISHes that waited for a free cluster.outbound_queue slot (their "
	 "connection's input paused).", COUNTER, STAT(cluster.waited), .sys = "cluster/messages/waited"},
	{"cluster_unwanted_total", "Messages no other cluster node wanted, so not sent to NATS.", COUNTER,
	 STAT(cluster.unwanted), .sys = "cluster/messages/unwanted"},
	{"cluster_interest_ack_timeouts_total", "SUBACKs sent before every other node answered the new filter's "
	 "announcement (cluster.interest_ack_timeout).", COUNTER, STAT(cluster.interest_timeouts),
	 .sys = "cluster/interest/ack_timeouts"},
	{"cluster_interest_overflows_total", "Times another node's filters went past cluster.max_remote_filters or "
	 "max_remote_filter_bytes (it then gets every message until they fit).", COUNTER,
	 STAT(cluster.interest_overflows), .sys = "cluster/interest/overflows"},
	{"cluster_interest_malformed_total", "Interest announcements refused as malformed (every message then goes "
	 "to NATS for three intervals).", COUNTER, STAT(cluster.interest_malformed), .sys = "cluster/interest/malformed"},
	{"cluster_interest_dormant", "Nodes not heard whose JetStream consumer remains: every QoS 1/2 message goes to "
	 "the stream while any is.", GAUGE, STAT(cluster.interest_dormant), .sys = "cluster/interest/dormant"},
	{"cluster_bridges_duplicated", "This node's bridges that another cluster node runs too (each message then "
	 "crosses such a bridge once per node).", GAUGE, STAT(cluster.bridges_duplicated),
	 .sys = "cluster/bridges/duplicated"},
	{"cluster_forward_queued", "QoS 1/2 messages kept in the store while JetStream is out of reach.", GAUGE,
	 STAT(cluster.forward_queued), .sys = "cluster/forward/queued"},
	{"cluster_forward_bytes", "Bytes of the QoS 1/2 messages kept in the store for JetStream.", GAUGE,
	 STAT(cluster.forward_bytes), .sys = "cluster/forward/bytes"},
	{"cluster_forward_overflow_total", "QoS 1/2 messages not kept in the store (cluster.forward_queue full): "
	 "their acks waited for JetStream.", COUNTER, STAT(cluster.forward_overflow), .sys = "cluster/forward/overflow"},
	{"cluster_retained_applied_total", "Retained records from the cluster's JetStream bucket applied to this node's store.",
	 COUNTER, STAT(cluster.retained_applied), .sys = "cluster/retained/applied"},
	{"cluster_retained_unsent", "This node's retained writes (sets and deletions) waiting for the cluster's "
	 "JetStream bucket to acknowledge them.", GAUGE, STAT(cluster.retained_unsent), .sys = "cluster/retained/unsent"},
	{"cluster_retained_untracked_total", "Retained writes past the outbox's bound (stored retained messages plus "
	 "65,536), published to the bucket at most once.", COUNTER, STAT(cluster.retained_untracked),
	 .sys = "cluster/retained/untracked"},
	{"cluster_taken_over_total", "Sessions ended here because their client id connected at another node.", COUNTER,
	 STAT(cluster.taken_over), .sys = "cluster/clients/taken_over"},
	{"cluster_sessions_in_total", "Sessions fetched from another node at their client's reconnect.", COUNTER,
	 STAT(cluster.sessions_in), .sys = "cluster/sessions/in"},
	{"cluster_sessions_out_total", "Sessions handed to another node.", COUNTER,
	 STAT(cluster.sessions_out), .sys = "cluster/sessions/out"},
	{"cluster_handover_failed_total", "Session fetches that fell back to a fresh session.", COUNTER,
	 STAT(cluster.handover_failed), .sys = "cluster/sessions/handover_failed"},
	{"cluster_handover_tail_lost_total", "Messages of a handover's window the old node could not pass on.", COUNTER,
	 STAT(cluster.handover_tail_lost), .sys = "cluster/sessions/tail_lost"},
	{"cluster_directory_refused_total", "Other nodes' start-up directory requests refused: as many were being "
	 "answered already.", COUNTER, STAT(cluster.directory_refused), .sys = "cluster/sessions/directory_refused"},
	{"cluster_groups_refused_total", "Shared subscriptions refused because their group would be new to a node "
	 "holding cluster.max_groups groups.", COUNTER, STAT(cluster.groups_refused), .sys = "cluster/groups/refused"},
	{"cluster_nats_rejoins_total", "Times the node rejoined the cluster: NATS had closed one of its connections "
	 "for good (refused it) and the ones made anew were accepted.", COUNTER, STAT(cluster.rejoins),
	 .sys = "cluster/nats/rejoins"},
	{"tls_handshakes_current", "TLS handshakes under way on all listeners.", GAUGE, SNAP(handshakes_current),
	 .sys = "tls/handshakes/current"},
	{"tls_handshakes_refused_total", "TLS connections closed at accept by max_handshakes(_per_address).", COUNTER,
	 SERVER(handshakes_refused), .sys = "tls/handshakes/refused"},
	{"tls_handshakes_failed_total", "TLS handshakes that failed, timed out or met plaintext.", COUNTER,
	 SERVER(handshakes_failed), .sys = "tls/handshakes/failed"},
	{"tls_handshakes_resumed_total", "TLS handshakes that resumed a session.", COUNTER,
	 SERVER(handshakes_resumed), .sys = "tls/handshakes/resumed"},
	{"tls_connections_hibernated", "Idle TLS connections whose record buffers are freed (tls.hibernate_after).",
	 GAUGE, SNAP(tls_hibernated), .sys = "tls/connections/hibernated"},
	{"ws_upgrades_total", "WebSocket upgrades completed (101 sent) on ws and wss listeners.", COUNTER,
	 SNAP(ws_upgrades), .sys = "ws/upgrades"},
	{"ws_refused_total", "WebSocket upgrade requests answered with an HTTP error.", COUNTER, SNAP(ws_refused),
	 .sys = "ws/refused"},
	{"ws_refused_head_too_large_total", "WebSocket upgrade requests over max_header_bytes or max_headers.",
	 COUNTER, SNAP(ws_head_too_large), .sys = "ws/refused/head_too_large"},
	{"ws_protocol_errors_total", "WebSocket connections closed with status 1002 or 1003.", COUNTER,
	 SNAP(ws_protocol_errors), .sys = "ws/protocol_errors"},
	{"ws_frames_too_large_total", "WebSocket connections closed with status 1009 (a frame over max_frame_size).",
	 COUNTER, SNAP(ws_frames_too_large), .sys = "ws/frames_too_large"},
	{"log_suppressed_total", "Log lines held back by log.rate_limit.", COUNTER, SNAP(log_suppressed),
	 .sys = "log/suppressed"},
	{"output_stalled_total", "Clients disconnected for staying over max_output_buffer.", COUNTER,
	 GROUP(OUTPUT_STALLED), .sys = "limits/output_stalled"},
	{"unauthenticated_refused_total",
	 "Connections closed before CONNECT by max_connect_size or max_unauthenticated_bytes.", COUNTER,
	 GROUP(UNAUTH), .sys = "limits/unauthenticated_refused"},
	{"connections_refused_total", "Connections closed at accept by a connection limit or memory_limit.", COUNTER,
	 SERVER(conns_refused), .sys = "limits/connections_refused"},
	{"http_requests_total", "HTTP requests answered by the http listeners.", COUNTER, STAT(http_requests),
	 .sys = "http/requests"},
	{"http_refused_total", "HTTP connections closed for a malformed or oversized request, or a limit.", COUNTER,
	 STAT(http_refused), .sys = "http/refused"},
	{"http_auth_failures_total", "HTTP requests refused (401) for missing or wrong credentials.", COUNTER,
	 STAT(http_auth_failures), .sys = "http/auth_failures"},
	{"dashboard_topics", "Topics in the dashboard's table of recently published topics.", GAUGE,
	 SNAP(dashboard_topics), .sys = "dashboard/topics"},
	{"dashboard_topics_evicted_total", "Topics the dashboard's table forgot for dashboard.max_topics.", COUNTER,
	 SNAP(dashboard_evicted), .sys = "dashboard/topics_evicted"},
	{"load_messages_received", "Damped per-minute rate of PUBLISH packets received.", LOAD(msgs_received),
	 .sys = "load/messages/received/%s", .sys_alias = "load/publish/received/%s"},
	{"load_messages_sent", "Damped per-minute rate of PUBLISH packets sent.", LOAD(msgs_sent),
	 .sys = "load/messages/sent/%s", .sys_alias = "load/publish/sent/%s"},
	{"load_bytes_received", "Damped per-minute rate of bytes received.", LOAD(bytes_received),
	 .sys = "load/bytes/received/%s"},
	{"load_bytes_sent", "Damped per-minute rate of bytes sent.", LOAD(bytes_sent), .sys = "load/bytes/sent/%s"},
	{"load_publish_dropped", "Damped per-minute rate of messages dropped.", LOAD(dropped),
	 .sys = "load/publish/dropped/%s"},
	{"load_connections", "Damped per-minute rate of accepted CONNECTs.", LOAD(connections),
	 .sys = "load/connections/%s"},
	{"load_sockets", "Damped per-minute rate of connections accepted on the MQTT listeners (refused ones included).",
	 LOAD(sockets), .sys = "load/sockets/%s"},
	{"listener_connections", "Connections open on the listener.", GAUGE, LISTENER(METRIC_LISTENER_CONNECTIONS)},
	{"listener_connections_refused_total", "Connections the listener closed at accept by a connection limit.",
	 COUNTER, LISTENER(METRIC_LISTENER_REFUSED)},
	{"listener_up", "1 while the listener's socket is listening.", GAUGE, LISTENER(METRIC_LISTENER_UP)},
	{"bridge_connected", "1 while the bridge's remote broker has accepted it (CONNACK), else 0.", GAUGE,
	 BRIDGE(METRIC_BRIDGE_CONNECTED), .sys = "bridges/%s/connected"},
	{"bridge_queued", "Messages of the bridge waiting for its remote or in flight to it.", GAUGE,
	 BRIDGE(METRIC_BRIDGE_QUEUED), .sys = "bridges/%s/queued"},
	{"bridge_dropped_total", "Messages for the bridge's remote dropped: QoS 0 while it is away, or past max_queued_messages/bytes.",
	 COUNTER, BRIDGE(METRIC_BRIDGE_DROPPED), .sys = "bridges/%s/dropped"},
	{"bridge_connects_total", "Times the bridge's remote accepted it since start.", COUNTER,
	 BRIDGE(METRIC_BRIDGE_CONNECTS), .sys = "bridges/%s/connects"},
	/* Last: a $SYS subscriber with a small output bound gets the older
	 * topics first, as before there were sixty of these. */
	{"disconnects_total",
	 "Connections ended or CONNECTs refused, by reason (session/reason.h: its v5 code, 3.1.1 code and log text).",
	 COUNTER, .source = METRIC_FROM_REASONS, .label = METRIC_LABEL_DISCONNECT, .sys = "clients/disconnects/%s"},
};
const size_t metrics_count = sizeof metrics_table / sizeof metrics_table[0];

static const char *const window_names[SYS_LOAD_WINDOWS] = {"1min", "5min", "15min"};

void metrics_snapshot(struct broker *b, struct metrics_snap *out)
{
	memset(out, 0, sizeof *out);
	struct sys_state *st = &b->sys;
	uint64_t now = loop_now_s(b->loop);
	out->uptime = now - st->start;
	for (size_t i = 0; i < b->sessions.nbuckets; i++)
		for (const struct session *s = b->sessions.buckets[i]; s; s = s->hash_next) {
			if (s->conn)
				out->clients_online++;
			else
				out->clients_offline++;
			out->stored_msgs += sess_queued_count(s) + sess_inflight_count(s);
		}
	out->clients_all = out->clients_online + out->clients_offline;
	if (out->clients_online > st->clients_max)
		st->clients_max = out->clients_online;
	out->clients_max = st->clients_max;
	out->heap = wisp_mem_used();
	if (out->heap > st->heap_max)
		st->heap_max = out->heap;
	out->heap_max = st->heap_max;
	/* A shared group's own tree handle is no client's subscription. */
	out->subscriptions = tree_count(b->subs) - b->route.shares.count;
	out->shared_groups = b->route.shares.count;
	out->retained = retained_count(b->retained);
	out->login_failures = b->auth.failed_logins;
	out->login_busy = b->auth.pending_max_hit;
	out->login_per_address = b->auth.pending_address_hit;
	out->login_cancelled = b->auth.verify_cancelled;
	out->login_exchanges = b->auth.exchanges_refused;
	struct persist_status ps;
	persist_status(b, &ps);
	out->persist_enabled = ps.enabled;
	out->store_degraded = ps.degraded;
	out->store_write_errors = ps.write_errors;
	out->store_fsync_errors = ps.fsync_errors;
	out->store_compact_errors = ps.compact_errors;
	out->store_refused = ps.refused;
	out->store_held_acks = ps.held_acks;
	for (size_t i = 0; i < b->srv.listener_count; i++)
		out->handshakes_current += b->srv.listeners[i].net.hs.count;
	out->log_suppressed = log_suppressed_total();
	out->tls_hibernated = tls_hibernated_count();
	out->bytes_received = b->srv.conns.in.bytes_received;
	out->fanout_waits = b->srv.conns.in.fanout_waits;
	const struct ws_stats *ws = ws_stats_get();
	out->ws_upgrades = ws->upgrades;
	out->ws_refused = ws->refused;
	out->ws_head_too_large = ws->head_too_large;
	out->ws_protocol_errors = ws->protocol_errors;
	out->ws_frames_too_large = ws->frames_too_large;
	if (b->activity) {
		out->dashboard_topics = activity_count(b->activity);
		out->dashboard_evicted = activity_evicted(b->activity);
	}
}

void metrics_log_summary(struct broker *b, const char *why)
{
	struct metrics_snap snap;
	metrics_snapshot(b, &snap);
	log_msg(LOG_NOTICE, "main",
		"%s: %" PRIu64 " sessions (%" PRIu64 " connected), %" PRIu64 " subscriptions, %" PRIu64
		" retained messages ($SYS ones included), %" PRIu64 " messages queued or in flight",
		why, snap.clients_all, snap.clients_online, snap.subscriptions, snap.retained, snap.stored_msgs);
}

size_t metrics_label_count(const struct broker *b, const struct metric *m)
{
	switch ((enum metric_label)m->label) {
	case METRIC_LABEL_REASON:
		return DROP_REASON_COUNT;
	case METRIC_LABEL_WINDOW:
		return SYS_LOAD_WINDOWS;
	case METRIC_LABEL_LISTENER:
		return b->srv.listener_count;
	case METRIC_LABEL_DISCONNECT:
		return REASON_COUNT;
	case METRIC_LABEL_BRIDGE:
		return b->bridge_count;
	case METRIC_LABEL_NONE:
	case METRIC_LABEL_VERSION:
		break;
	}
	return 1;
}

static const char *const label_names[] = {
	[METRIC_LABEL_NONE] = NULL,
	[METRIC_LABEL_REASON] = "reason",
	[METRIC_LABEL_WINDOW] = "window",
	[METRIC_LABEL_LISTENER] = "listener",
	[METRIC_LABEL_VERSION] = "version",
	[METRIC_LABEL_DISCONNECT] = "reason",
	[METRIC_LABEL_BRIDGE] = "bridge",
};

const char *metrics_label_value(const struct broker *b, const struct metric *m, size_t i)
{
	switch ((enum metric_label)m->label) {
	case METRIC_LABEL_REASON:
		return drop_reason_name((enum drop_reason)i);
	case METRIC_LABEL_WINDOW:
		return window_names[i];
	case METRIC_LABEL_LISTENER:
		return b->srv.listeners[i].net.name;
	case METRIC_LABEL_DISCONNECT:
		return reason_info((enum reason)i)->name;
	case METRIC_LABEL_VERSION:
		return WISP_VERSION;
	case METRIC_LABEL_BRIDGE:
		return b->bridge_stats[i].name;
	case METRIC_LABEL_NONE:
		break;
	}
	return NULL;
}

bool metrics_shown(const struct metric *m, const struct metrics_snap *snap)
{
	return !(m->flags & METRIC_PERSIST_ONLY) || snap->persist_enabled;
}

bool metrics_value(const struct broker *b, const struct metrics_snap *snap, const struct metric *m, size_t i,
		   uint64_t *u, double *d)
{
	*u = 0;
	*d = 0;
	switch ((enum metric_source)m->source) {
	case METRIC_FROM_STATS:
		memcpy(u, (const char *)&b->stats + m->offset, sizeof *u);
		return false;
	case METRIC_FROM_SNAP:
		memcpy(u, (const char *)snap + m->offset, sizeof *u);
		return false;
	case METRIC_FROM_DROPPED:
		*u = b->stats.dropped[i];
		return false;
	case METRIC_FROM_LOAD: {
		const struct sys_load *l = (const struct sys_load *)(const void *)((const char *)&b->sys + m->offset);
		*d = l->avg[i];
		return true;
	}
	case METRIC_FROM_LISTENER: {
		const struct server_listener *bl = &b->srv.listeners[i];
		if (m->offset == METRIC_LISTENER_CONNECTIONS)
			*u = bl->conn_count;
		else if (m->offset == METRIC_LISTENER_REFUSED)
			*u = bl->conns_refused;
		else
			*u = bl->net.io.fd >= 0;
		return false;
	}
	case METRIC_FROM_ONE:
		*u = 1;
		return false;
	case METRIC_FROM_BRIDGE: {
		const struct broker_bridge_stat *bs = &b->bridge_stats[i];
		if (m->offset == METRIC_BRIDGE_CONNECTED)
			*u = bs->connected;
		else if (m->offset == METRIC_BRIDGE_QUEUED)
			*u = (bs->session ? (uint64_t)sess_queued_count(bs->session) + sess_inflight_count(bs->session) : 0) +
			     bs->queued_qos0;
		else if (m->offset == METRIC_BRIDGE_DROPPED)
			*u = bs->session ? sess_dropped(bs->session) : 0;
		else
			*u = bs->connects;
		return false;
	}
	case METRIC_FROM_SERVER:
		memcpy(u, (const char *)&b->srv.stats + m->offset, sizeof *u);
		return false;
	case METRIC_FROM_REASONS:
		*u = b->stats.reasons[i];
		return false;
	case METRIC_FROM_REASON_GROUP:
		for (size_t r = 0; r < REASON_COUNT; r++)
			if ((size_t)reason_info((enum reason)r)->group == m->offset)
				*u += b->stats.reasons[r];
		return false;
	}
	return false;
}

/* Label values are escaped as the exposition format asks: \\, \" and \n. */
static void add_label_value(struct sbuf *out, const char *v)
{
	for (const char *p = v; *p; p++) {
		if (*p == '\\' || *p == '"')
			sbuf_addf(out, "\\%c", *p);
		else if (*p == '\n')
			sbuf_adds(out, "\\n");
		else
			sbuf_add(out, p, 1);
	}
}

void metrics_render_prometheus(struct broker *b, struct sbuf *out)
{
	struct metrics_snap snap;
	metrics_snapshot(b, &snap);
	for (size_t r = 0; r < metrics_count; r++) {
		const struct metric *m = &metrics_table[r];
		if (!metrics_shown(m, &snap))
			continue;
		size_t n = metrics_label_count(b, m);
		if (n == 0)
			continue;
		sbuf_addf(out, "# HELP wisp_%s %s\n# TYPE wisp_%s %s\n", m->name, m->help, m->name,
			  m->type == METRIC_COUNTER ? "counter" : "gauge");
		for (size_t i = 0; i < n; i++) {
			sbuf_addf(out, "wisp_%s", m->name);
			if (m->label != METRIC_LABEL_NONE) {
				sbuf_addf(out, "{%s=\"", label_names[m->label]);
				add_label_value(out, metrics_label_value(b, m, i));
				sbuf_adds(out, "\"}");
			}
			uint64_t u;
			double d;
			if (metrics_value(b, &snap, m, i, &u, &d))
				sbuf_addf(out, " %.6g\n", d);
			else
				sbuf_addf(out, " %llu\n", (unsigned long long)u);
		}
	}
}
