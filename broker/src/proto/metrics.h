/*
 * The broker's figures, in one table that both $SYS (sys.c) and the
 * Prometheus text exposition (GET /metrics on an http listener) render, so
 * the two never drift: a figure added here appears in both, with one help
 * text. Each row names its Prometheus metric (type, help, labels), its
 * $SYS topic under $SYS/broker/ (NULL: Prometheus only, e.g. the
 * per-listener rows, whose topics would need the listener's address in
 * them), and where the value is read.
 *
 * A row with a label is a family: one sample per drop reason (drop.h), per
 * disconnect or refusal reason (session/reason.h), per load window, per
 * listener, or per bridge ("bridges/%s/queued"). Its $SYS topic is then a format taking the
 * label's value ("messages/dropped/%s").
 *
 * Values that need a walk (sessions online and offline, queued messages)
 * are computed once per rendering by metrics_snapshot, never on the hot
 * path. Single-threaded, on the loop thread.
 */
#ifndef WISP_PROTO_METRICS_H
#define WISP_PROTO_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

struct broker;

enum metric_type {
	METRIC_COUNTER = 0,
	METRIC_GAUGE = 1,
};

/* What a family's label ranges over. */
enum metric_label {
	METRIC_LABEL_NONE = 0,
	METRIC_LABEL_REASON = 1,   /* drop.h reasons: label "reason" */
	METRIC_LABEL_WINDOW = 2,   /* 1min, 5min, 15min: label "window" */
	METRIC_LABEL_LISTENER = 3, /* each listener: label "listener" ("127.0.0.1:1883") */
	METRIC_LABEL_VERSION = 4,  /* one sample, label "version" */
	METRIC_LABEL_DISCONNECT = 5, /* session/reason.h reasons: label "reason" */
	METRIC_LABEL_BRIDGE = 6,   /* each bridge (bridge/): label "bridge" (its name) */
};

/* How $SYS writes the value. */
enum metric_sys_format {
	METRIC_SYS_INT = 0,     /* "%llu" */
	METRIC_SYS_FLOAT2 = 1,  /* "%.2f" */
	METRIC_SYS_SECONDS = 2, /* "N seconds" */
	METRIC_SYS_VERSION = 3, /* "wisp version X.Y.Z" */
	METRIC_SYS_STATE = 4,   /* 0 "ok", 1 "degraded" */
};

/* Where a row's value comes from (see metrics.c). */
enum metric_source {
	METRIC_FROM_STATS = 0,    /* uint64_t in struct broker_stats at `offset` */
	METRIC_FROM_SNAP = 1,     /* uint64_t in struct metrics_snap at `offset` */
	METRIC_FROM_DROPPED = 2,  /* broker_stats.dropped[reason] */
	METRIC_FROM_LOAD = 3,     /* struct sys_load in struct sys_state at `offset`, [window] */
	METRIC_FROM_LISTENER = 4, /* a figure of each listener, `offset` one of METRIC_LISTENER_* */
	METRIC_FROM_ONE = 5,      /* the constant 1 (an info metric) */
	METRIC_FROM_SERVER = 6,   /* uint64_t in struct server_stats at `offset` */
	METRIC_FROM_REASONS = 7,  /* broker_stats.reasons[reason] */
	METRIC_FROM_REASON_GROUP = 8, /* the sum of the reasons of group `offset` (reason.h) */
	METRIC_FROM_BRIDGE = 9,   /* a figure of each bridge, `offset` one of METRIC_BRIDGE_* */
};

#define METRIC_PERSIST_ONLY 0x1u /* only while persistence is on */

#define METRIC_LISTENER_CONNECTIONS 0 /* connections open now */
#define METRIC_LISTENER_REFUSED 1     /* connections closed at accept by a connection limit */
#define METRIC_LISTENER_UP 2          /* 1 while its socket is listening */

#define METRIC_BRIDGE_CONNECTED 0 /* 1 while the remote has accepted the bridge */
#define METRIC_BRIDGE_QUEUED 1    /* messages waiting for the remote or in flight to it */
#define METRIC_BRIDGE_DROPPED 2   /* messages for the remote dropped: QoS 0 while away, or past its queue bounds */
#define METRIC_BRIDGE_CONNECTS 3  /* CONNACKs accepted since start */

struct metric {
	const char *name;     /* Prometheus name without the "wisp_" prefix */
	const char *help;
	uint8_t type;         /* enum metric_type */
	uint8_t label;        /* enum metric_label */
	uint8_t source;       /* enum metric_source */
	uint8_t sys_format;   /* enum metric_sys_format */
	uint8_t flags;
	size_t offset;
	const char *sys;       /* topic under $SYS/broker/, a format with a label; NULL: none */
	const char *sys_alias; /* a second topic with the same value (Mosquitto publishes both); a format like sys */
};

/* The figures a rendering computes once. */
struct metrics_snap {
	uint64_t uptime;
	uint64_t clients_online, clients_offline, clients_all, clients_max;
	uint64_t stored_msgs;
	uint64_t heap, heap_max;
	uint64_t subscriptions, shared_groups, retained;
	uint64_t login_failures, login_busy, login_per_address, login_cancelled, login_exchanges;
	uint64_t store_degraded, store_write_errors, store_fsync_errors, store_compact_errors;
	uint64_t store_refused, store_held_acks;
	uint64_t handshakes_current;
	uint64_t ws_upgrades, ws_refused, ws_head_too_large, ws_protocol_errors, ws_frames_too_large;
	uint64_t log_suppressed;
	uint64_t tls_hibernated;
	uint64_t bytes_received, fanout_waits;
	uint64_t dashboard_topics, dashboard_evicted;
	bool persist_enabled;
};

/* The table, and its length. */
extern const struct metric metrics_table[];
extern const size_t metrics_count;

/* Fills `out` from the broker, and raises the "maximum" figures it tracks
 * (clients, heap). Walks the sessions once: O(sessions). */
void metrics_snapshot(struct broker *b, struct metrics_snap *out);

/* One NOTICE line, "<why>: N sessions (N connected), N subscriptions, N
 * retained messages ($SYS ones included), N messages queued or in
 * flight": the operator's SIGUSR2, in place of Mosquitto's subscription
 * tree. O(sessions). */
void metrics_log_summary(struct broker *b, const char *why);

/* A family's sample count (1 without a label) and the value of label i. */
size_t metrics_label_count(const struct broker *b, const struct metric *m);
const char *metrics_label_value(const struct broker *b, const struct metric *m, size_t i);
/* Whether row m is shown at all (METRIC_PERSIST_ONLY). */
bool metrics_shown(const struct metric *m, const struct metrics_snap *snap);
/* Sample i of row m: an integer in *u, or a float in *d (returns true). */
bool metrics_value(const struct broker *b, const struct metrics_snap *snap, const struct metric *m, size_t i,
		   uint64_t *u, double *d);

/*
 * Appends the Prometheus text exposition format 0.0.4 of every shown row
 * to `out`: "# HELP", "# TYPE", then one sample per label value. Takes a
 * fresh snapshot. The caller checks out->failed.
 */
void metrics_render_prometheus(struct broker *b, struct sbuf *out);

#endif
