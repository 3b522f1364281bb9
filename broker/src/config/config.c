/*
 * Configuration loader: JSON text -> validated, immutable struct config.
 *
 * What it does: one schema table per JSON object ({key, type, min, max,
 * default, offsetof}, the redis standardConfig / nginx ngx_command_t shape)
 * drives defaults, parsing, validation and freeing, so a new key is one table
 * line. Cross-field rules (mqtts needs a certificate, duplicate listeners,
 * acl vs acl_file) run after the tables in finalize().
 *
 * What it does not do: it checks that files named in the configuration are
 * readable, but not what is inside them (TLS material belongs to net/tls.c,
 * password and ACL syntax to auth/). Nothing here touches the loop, sockets
 * or logging state; applying a config is the caller's job.
 *
 * Invariants: every error is reported exactly once as
 * "<file>: <key path>: <reason>" (key path "(root)" for the document itself,
 * "line L, column C" for JSON syntax errors) and every failure path frees the
 * partial config. JSON numbers pass through a double in cJSON, so 64-bit
 * limits are capped at 2^53, where doubles stop being exact.
 *
 * Cost: runs at start-up and on reload only; unknown-key suggestions are
 * O(keys x len^2), duplicate-key checks O(keys^2) per object. The cJSON tree
 * uses cJSON's own malloc on purpose: it is transient, freed before return,
 * and an allocation failure inside cJSON must not be reported as a syntax
 * error. Everything that outlives config_parse comes from wisp_malloc.
 *
 * Single-threaded; no global state (cJSON's error pointer is not used).
 */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "file.h"
#include "err.h"
#include "log.h"
#include "mosquitto_conf.h"

/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define JSON_INT_MAX 9007199254740992ULL
/* A config file larger than this is a mistake, not a configuration. */
#define CONFIG_FILE_MAX (4u * 1024u * 1024u)
#define PATH_BUF 256

_Static_assert(sizeof(enum config_protocol) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum config_fsync) == sizeof(int), "enums are stored as int");

enum ftype {
	FT_BOOL,
	FT_U16,
	FT_U32,
	FT_U64,
	FT_STR,    /* non-empty string */
	FT_FILE,   /* non-empty string naming a readable file */
	FT_ENUM,   /* string from `names`, stored as int */
	FT_OBJECT, /* nested object described by `sub` */
	FT_CUSTOM, /* parsed by `custom` */
};

struct enum_name {
	const char *name;
	int value;
};

struct parser {
	const char *name; /* the file, for messages */
	char *err;
	size_t errlen;
	char path[PATH_BUF];
	size_t plen;
	struct config *cfg;
};

struct field;
typedef int (*custom_fn)(struct parser *p, const cJSON *item, void *base, const struct field *f);

struct field {
	const char *key; /* NULL ends a table */
	enum ftype type;
	uint64_t min, max;
	uint64_t def;        /* FT_BOOL, numbers, FT_ENUM */
	const char *def_str; /* FT_STR, FT_FILE: NULL means unset */
	size_t offset;
	const struct enum_name *names; /* FT_ENUM, NULL-name terminated */
	const struct field *sub;       /* FT_OBJECT */
	custom_fn custom;              /* FT_CUSTOM */
};

#define F_BOOL(st, k, m, d) {.key = k, .type = FT_BOOL, .max = 1, .def = d, .offset = offsetof(st, m)}
#define F_NUM(st, t, k, m, lo, hi, d) \
	{.key = k, .type = t, .min = lo, .max = hi, .def = d, .offset = offsetof(st, m)}
#define F_STR(st, k, m, d) {.key = k, .type = FT_STR, .def_str = d, .offset = offsetof(st, m)}
#define F_FILE(st, k, m) {.key = k, .type = FT_FILE, .offset = offsetof(st, m)}
#define F_ENUM(st, k, m, n, d) {.key = k, .type = FT_ENUM, .def = d, .offset = offsetof(st, m), .names = n}
#define F_OBJ(st, k, m, s) {.key = k, .type = FT_OBJECT, .offset = offsetof(st, m), .sub = s}
#define F_CUSTOM(st, k, m, fn) {.key = k, .type = FT_CUSTOM, .offset = offsetof(st, m), .custom = fn}

static const struct enum_name protocol_names[] = {
	{"mqtt", CONFIG_PROTO_MQTT}, {"mqtts", CONFIG_PROTO_MQTTS}, {"ws", CONFIG_PROTO_WS},
	{"wss", CONFIG_PROTO_WSS},   {"http", CONFIG_PROTO_HTTP},   {NULL, 0}};
static const struct enum_name http_auth_names[] = {
	{"remote", CONFIG_HTTP_AUTH_REMOTE}, {"always", CONFIG_HTTP_AUTH_ALWAYS}, {NULL, 0}};
static const struct enum_name level_names[] = {
	{"error", LOG_ERROR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
	{"info", LOG_INFO},   {"debug", LOG_DEBUG},     {NULL, 0}};
static const struct enum_name format_names[] = {
	{"text", LOG_FORMAT_TEXT}, {"json", LOG_FORMAT_JSON}, {NULL, 0}};
static const struct enum_name fsync_names[] = {{"always", CONFIG_FSYNC_ALWAYS},
					       {"everysec", CONFIG_FSYNC_EVERYSEC},
					       {"no", CONFIG_FSYNC_NO},
					       {NULL, 0}};
static const struct enum_name tls_version_names[] = {{"tls1.2", 0}, {"tls1.3", 1}, {NULL, 0}};

static int parse_listeners(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_acl(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_min_version(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_log_destination(struct parser *p, const cJSON *item, void *base,
				 const struct field *f);
static int parse_nats_urls(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_subject_prefix(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_stream_name(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_bridges(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_bridge_topics(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_addresses(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_prefix(struct parser *p, const cJSON *item, void *base, const struct field *f);
static int parse_bucket_name(struct parser *p, const cJSON *item, void *base, const struct field *f);

static const struct field tls_fields[] = {
	F_FILE(struct config_tls, "cert", cert),
	F_FILE(struct config_tls, "key", key),
	F_FILE(struct config_tls, "ca", ca),
	F_BOOL(struct config_tls, "require_certificate", require_certificate, 0),
	F_BOOL(struct config_tls, "use_identity_as_username", use_identity_as_username, 0),
	F_STR(struct config_tls, "ciphersuites", ciphersuites, NULL),
	{.key = "min_version", .type = FT_CUSTOM, .def_str = "tls1.2",
	 .offset = offsetof(struct config_tls, min_version), .custom = parse_min_version},
	/* Resumption skips the signature and ECDHE of a full handshake (~5 ms
	 * of CPU each). A day lets a sensor that reconnects at least daily
	 * always resume, while a ticket key (rotated every lifetime) exposes at
	 * most two lifetimes of sessions if the process memory leaks; RFC 8446
	 * caps tickets at 7 days. A cache entry is ~0.2 KiB (~0.8 KiB with a
	 * client certificate): 1000 is under 1 MiB for the clients without
	 * ticket support. */
	F_BOOL(struct config_tls, "session_tickets", session_tickets, 1),
	F_NUM(struct config_tls, FT_U32, "session_ticket_lifetime", session_ticket_lifetime, 1, 604800, 86400),
	F_NUM(struct config_tls, FT_U32, "session_cache_size", session_cache_size, 0, 1000000, 1000),
	/* An idle TLS connection frees its two 16 KiB record buffers after this
	 * many seconds (0 = never). Waking costs two zeroed allocations (a few
	 * microseconds, against ~40 us to deliver one 4 KiB TLS message), so a
	 * short period is cheap: 5 s puts a sensor that reports every minute to
	 * sleep for 55 s of it, while a busy connection never sleeps. */
	F_NUM(struct config_tls, FT_U32, "hibernate_after", hibernate_after, 0, 86400, 5),
	{0},
};

/* The request head is bounded by the listener's max_header_bytes and
 * max_headers, as for ws. Why these defaults: 64 KiB of body holds any test
 * message a person types; 1000 requests (nginx's keepalive_requests) is 16
 * minutes of the dashboard's once-a-second polling on one connection; 30 s
 * idle lets a polling page keep its connection while a silent one is gone
 * soon; 500 children a request keeps a response under ~200 KiB however
 * many topics the broker has. */
static const struct field http_fields[] = {
	F_NUM(struct config_http, FT_U32, "max_body_size", max_body_size, 0, 16777216, 65536),
	F_NUM(struct config_http, FT_U32, "max_requests", max_requests, 1, UINT32_MAX, 1000),
	F_NUM(struct config_http, FT_U32, "idle_timeout", idle_timeout, 1, 3600, 30),
	F_NUM(struct config_http, FT_U32, "tree_page_size", tree_page_size, 1, 100000, 500),
	F_BOOL(struct config_http, "dashboard", dashboard, 1),
	F_ENUM(struct config_http, "require_auth", require_auth, http_auth_names, CONFIG_HTTP_AUTH_REMOTE),
	{0},
};

static const struct field listener_fields[] = {
	F_STR(struct config_listener, "bind", bind, "127.0.0.1"),
	F_NUM(struct config_listener, FT_U16, "port", port, 0, 65535, 1883),
	F_ENUM(struct config_listener, "protocol", protocol, protocol_names, CONFIG_PROTO_MQTT),
	F_BOOL(struct config_listener, "allow_anonymous", allow_anonymous, 1),
	F_NUM(struct config_listener, FT_U32, "max_connections", max_connections, 0, UINT32_MAX, 0),
	/* A handshake holds ~58 KiB (mbed TLS record buffers plus handshake
	 * state) and ~5 ms of CPU: 512 is 2.5 s of handshake work, well inside
	 * connect_timeout, and bounds handshake memory to ~29 MiB. */
	F_NUM(struct config_listener, FT_U32, "max_handshakes", max_handshakes, 0, UINT32_MAX, 512),
	F_NUM(struct config_listener, FT_U32, "max_handshakes_per_address", max_handshakes_per_address, 0,
	      UINT32_MAX, 64),
	F_OBJ(struct config_listener, "tls", tls, tls_fields),
	F_OBJ(struct config_listener, "http", http, http_fields),
	/* WebSocket (and, for the first two, http) listeners. Browsers send 0.5-2 KiB of head, more with
	 * cookies; 8 KiB is nginx's large_client_header_buffers line size and
	 * what Mosquitto's libwebsockets accepts by default, and bounds what a
	 * handshake holds. 100 lines is Apache's LimitRequestFields: no real
	 * client sends a tenth of it. */
	F_STR(struct config_listener, "path", path, NULL),
	F_NUM(struct config_listener, FT_U32, "max_header_bytes", max_header_bytes, 256, 1048576, 8192),
	F_NUM(struct config_listener, FT_U32, "max_headers", max_headers, 1, 10000, 100),
	/* A frame is streamed into the MQTT input, never held whole, so its
	 * size costs no memory; the bound is for the operator who wants
	 * clients to frame per packet. 0 follows limits.max_packet_size: a
	 * client framing one packet per frame always fits. */
	F_NUM(struct config_listener, FT_U32, "max_frame_size", max_frame_size, 0, UINT32_MAX, 0),
	F_BOOL(struct config_listener, "trust_proxy", trust_proxy, 0),
	/* Off: one frame carries every packet a loop turn queued, as
	 * [MQTT-6.0.0-2] allows; on for clients that cannot read that. */
	F_BOOL(struct config_listener, "frame_per_packet", frame_per_packet, 0),
	{0},
};

static const struct field limits_fields[] = {
	/* 2 bytes is the smallest MQTT packet; the maximum is the largest
	 * Remaining Length (268435455) plus a 5-byte fixed header. The default
	 * is EMQX's 1 MiB: sensors send far less, and it bounds what one
	 * connection or one queued message can pin (config/README.md). */
	F_NUM(struct config_limits, FT_U32, "max_packet_size", max_packet_size, 2, 268435460,
	      1048576),
	F_NUM(struct config_limits, FT_U16, "max_inflight", max_inflight, 1, 65535, 20),
	F_NUM(struct config_limits, FT_U32, "max_queued_messages", max_queued_messages, 0, UINT32_MAX,
	      1000),
	/* 1000 queued messages of 8 KiB; without it a stalled QoS 1/2
	 * subscriber could pin 1000 x max_packet_size. */
	F_NUM(struct config_limits, FT_U64, "max_queued_bytes", max_queued_bytes, 0, JSON_INT_MAX, 8u << 20),
	F_NUM(struct config_limits, FT_U16, "max_keepalive", max_keepalive, 1, 65535, 65535),
	F_NUM(struct config_limits, FT_U32, "connect_timeout", connect_timeout, 1, 3600, 10),
	F_NUM(struct config_limits, FT_U16, "max_topic_levels", max_topic_levels, 1, 1024, 128),
	/* Bounds a filter's cost with max_topic_levels; see config/README.md. */
	F_NUM(struct config_limits, FT_U16, "max_topic_length", max_topic_length, 1, 65535, 4096),
	F_NUM(struct config_limits, FT_U32, "max_connections", max_connections, 0, UINT32_MAX, 0),
	F_NUM(struct config_limits, FT_U64, "max_output_buffer", max_output_buffer, 1024, JSON_INT_MAX,
	      1048576),
	F_NUM(struct config_limits, FT_U32, "max_subscriptions", max_subscriptions, 0, UINT32_MAX, 1000),
	F_NUM(struct config_limits, FT_U32, "max_retained", max_retained, 0, UINT32_MAX, 0),
	F_NUM(struct config_limits, FT_U64, "max_retained_bytes", max_retained_bytes, 0, JSON_INT_MAX,
	      0),
	F_NUM(struct config_limits, FT_U64, "memory_limit", memory_limit, 0, JSON_INT_MAX, 0),
	/* A client over max_output_buffer is not read from; this long over it
	 * and it is disconnected (redis: pubsub clients, 60 s soft limit). */
	F_NUM(struct config_limits, FT_U32, "output_buffer_timeout", output_buffer_timeout, 1, 86400, 60),
	/* The largest CONNECT MQTT 3.1/3.1.1 can carry: 4-byte fixed header,
	 * 12-byte MQIsdp variable header, five strings of 2 + 65535 bytes. */
	F_NUM(struct config_limits, FT_U32, "max_connect_size", max_connect_size, 16, 268435460, 327701),
	F_NUM(struct config_limits, FT_U64, "max_unauthenticated_bytes", max_unauthenticated_bytes, 0,
	      JSON_INT_MAX, 32u << 20),
	/* Connected clients' unfinished packets, all together: without it
	 * 500 clients with keepalive 0 each holding all but the last byte of
	 * a max_packet_size PUBLISH held 500 MiB for as long as they liked. */
	F_NUM(struct config_limits, FT_U64, "max_input_bytes", max_input_bytes, 0, JSON_INT_MAX, 256u << 20),
	F_NUM(struct config_limits, FT_U64, "max_queued_bytes_total", max_queued_bytes_total, 0, JSON_INT_MAX,
	      256u << 20),
	/* MQTT 5 (announced in CONNACK). Mosquitto's defaults: 10 inbound
	 * topic aliases per connection (a 10-pointer table, only for v5
	 * connections that use one), QoS 2, retained messages on, and
	 * sessions that never expire kept forever. */
	F_NUM(struct config_limits, FT_U16, "max_topic_alias", max_topic_alias, 0, 65535, 10),
	F_NUM(struct config_limits, FT_U16, "max_qos", max_qos, 0, 2, 2),
	F_BOOL(struct config_limits, "retain_available", retain_available, 1),
	F_NUM(struct config_limits, FT_U32, "max_session_expiry", max_session_expiry, 0, UINT32_MAX - 1, 0),
	{0},
};

static const struct field auth_fields[] = {
	F_FILE(struct config_auth, "password_file", password_file),
	F_FILE(struct config_auth, "acl_file", acl_file),
	F_CUSTOM(struct config_auth, "acl", acl_inline, parse_acl),
	/* 8: a NAT'd site's first logins after a restart still get through a
	 * few at a time, while one address cannot hold more than 8 x one
	 * PBKDF2 of the helper threads' time ahead of everyone else. */
	F_NUM(struct config_auth, FT_U32, "max_pending_per_address", max_pending_per_address, 0, 256, 8),
	/* 1024 enhanced-authentication exchanges of ~2.4 KiB plus their
	 * CONNECT: a few MiB at most, while a real fleet's logins, each done
	 * in one round trip, never come near it. */
	F_NUM(struct config_auth, FT_U32, "max_exchanges", max_exchanges, 1, 1000000, 1024),
	{0},
};

static const struct field log_fields[] = {
	F_ENUM(struct config_log, "level", level, level_names, LOG_NOTICE),
	{.key = "destination", .type = FT_CUSTOM, .def_str = "stderr",
	 .offset = offsetof(struct config_log, destination), .custom = parse_log_destination},
	F_ENUM(struct config_log, "format", format, format_names, LOG_FORMAT_TEXT),
	F_NUM(struct config_log, FT_U32, "rate_limit", rate_limit, 0, 1000000, 10),
	F_NUM(struct config_log, FT_U32, "rate_burst", rate_burst, 1, 1000000, 100),
	{0},
};

static const struct field persistence_fields[] = {
	F_BOOL(struct config_persistence, "enabled", enabled, 1),
	F_STR(struct config_persistence, "dir", dir, "./wisp-data"),
	F_ENUM(struct config_persistence, "fsync", fsync, fsync_names, CONFIG_FSYNC_EVERYSEC),
	F_NUM(struct config_persistence, FT_U64, "compact_min_size", compact_min_size, 4096, JSON_INT_MAX,
	      16u << 20),
	{0},
};

static const struct field cluster_fields[] = {
	F_CUSTOM(struct config_cluster, "nats", nats, parse_nats_urls),
	F_STR(struct config_cluster, "node", node, NULL),
	{.key = "subject_prefix", .type = FT_CUSTOM, .def_str = "wisp",
	 .offset = offsetof(struct config_cluster, subject_prefix), .custom = parse_subject_prefix},
	/* Messages NATS delivered that the loop has not taken yet. 65536 is
	 * about a second of a busy node's inbound rate and, as pointers, 512
	 * KiB; the messages themselves, up to NATS's max_payload each, are
	 * held until taken: bounded by inbound_queue_bytes. Over either a
	 * message is dropped and counted. */
	F_NUM(struct config_cluster, FT_U32, "inbound_queue", inbound_queue, 16, 16777216, 65536),
	F_NUM(struct config_cluster, FT_U64, "inbound_queue_bytes", inbound_queue_bytes, 65536, JSON_INT_MAX,
	      64u << 20),
	/* QoS 1/2 through JetStream (cluster/durable.h): acks wait for the stream. */
	F_BOOL(struct config_cluster, "durable", durable, 1),
	{.key = "stream", .type = FT_CUSTOM, .def_str = "WISP",
	 .offset = offsetof(struct config_cluster, stream), .custom = parse_stream_name},
	F_NUM(struct config_cluster, FT_U32, "replicas", replicas, 1, 5, 1),
	/* A day: a node down longer than that misses what it did not
	 * acknowledge before it aged out; the stream's disk stays bounded by
	 * a day of QoS 1/2 traffic that some node has not acknowledged. */
	F_NUM(struct config_cluster, FT_U32, "stream_max_age", stream_max_age, 1, 31536000, 86400),
	/* The stream's duplicate window: a message this node kept in its store
	 * and re-sends after a restart with the Nats-Msg-Id JetStream already
	 * had is dropped as a duplicate only within it. 120 s is nats-server's
	 * own default; JetStream keeps every message id of the window in
	 * memory (roughly 100 bytes each, not measured: 10k msg/s for 120 s
	 * is ~120 MB), so a longer promise costs NATS memory. At most
	 * stream_max_age (JetStream's rule). */
	F_NUM(struct config_cluster, FT_U32, "duplicate_window", duplicate_window, 1, 31536000, 120),
	/* QoS 1/2 messages waiting for JetStream's ack (their publishers'
	 * PUBACKs wait too): one flag byte each here plus the message in
	 * cnats (~ its size + 200 bytes of headers). 65536 rides out a NATS
	 * restart of a few seconds at ~10k msg/s; past it, at most once. */
	F_NUM(struct config_cluster, FT_U32, "outbound_queue", outbound_queue, 16, 16777216, 65536),
	/* Store and forward while JetStream is out of reach (needs
	 * persistence): QoS 1/2 messages kept in the store, acked once
	 * written, published when it is back. 1,000,000 messages or 256 MiB
	 * is ~100 s at 10k msg/s of small messages, and the memory a node
	 * may spend holding them (each stays in memory too, with ~100 bytes
	 * of bookkeeping); past either, acks wait for JetStream
	 * (back-pressure). 0: no store and forward. */
	F_NUM(struct config_cluster, FT_U32, "forward_queue", forward_queue, 0, 16777216, 1000000),
	F_NUM(struct config_cluster, FT_U64, "forward_queue_bytes", forward_queue_bytes, 1024, JSON_INT_MAX,
	      256u << 20),
	{.key = "retained_bucket", .type = FT_CUSTOM, .def_str = "wisp_retained",
	 .offset = offsetof(struct config_cluster, retained_bucket), .custom = parse_bucket_name},
	/* JetStream's own range: 1 (one NATS server) to 5. */
	F_NUM(struct config_cluster, FT_U32, "retained_replicas", retained_replicas, 1, 5, 1),
	/* Interest-based publishing (cluster/interest.h). Off: every message
	 * goes to NATS, for NATS-native subscribers. */
	F_BOOL(struct config_cluster, "interest", interest, 1),
	/* Publishes written at once rather than after cnats's flusher's 1 ms
	 * wait: that wait was ~0.8 ms of a cross-node hop at p50 (measured,
	 * docs/cluster.md). Off: fewer write()s when publishing hard. */
	F_BOOL(struct config_cluster, "send_asap", send_asap, 0),
	/* The at-most-once messages through a connection the loop writes
	 * (cluster/nats_writer.h) rather than cnats's sender thread: less
	 * than half the broker CPU per cross-node message when publishing hard
	 * (measured, docs/cluster.md).
	 * Off: cnats for them too, as before. */
	F_BOOL(struct config_cluster, "data_connection", data_connection, 1),
	/* Wanted QoS 0 messages waiting for the thread that publishes them
	 * (cluster/sender.h): two pointers and a size each here, the message
	 * in cnats. 8192 or 16 MiB rides out a burst of a busy node (well
	 * under a second at 100k msg/s); past either, while NATS does not
	 * take them, a message is dropped (at most once) and counted. */
	F_NUM(struct config_cluster, FT_U32, "send_queue", send_queue, 16, 16777216, 8192),
	F_NUM(struct config_cluster, FT_U64, "send_queue_bytes", send_queue_bytes, 65536, JSON_INT_MAX, 16u << 20),
	/* How long a write to a NATS server that reads nothing may wait (cnats
	 * write deadline, ms): a write holds its connection's lock, which the
	 * loop's own NATS calls (a new filter's SUB, interest announcements)
	 * wait for. 2 s (nats-server's own deadline for its clients before
	 * 2.2) is far above a healthy server's pause, even on a loaded
	 * machine; past it the write fails and the connection is lost. */
	F_NUM(struct config_cluster, FT_U32, "write_deadline", write_deadline, 10, 600000, 2000),
	/* A PING every ping_interval seconds on each NATS connection; two
	 * unanswered and the connection is lost (cnats's stale connection): a
	 * frozen server that the node writes little to is noticed in 10 to
	 * 15 s with 5, against cnats's own 4 to 6 minutes, for one PING/PONG
	 * per connection per 5 s. Shorter risks losing a healthy connection on
	 * a machine so loaded that the PONG is read late. */
	F_NUM(struct config_cluster, FT_U32, "ping_interval", ping_interval, 1, 3600, 5),
	/* How long one connect attempt to a NATS server may take (cnats's
	 * timeout, whose default this is): cnats holds the connection's lock
	 * through it, so against a frozen or unreachable server each attempt
	 * holds the connection's users that long (the loop no longer waits:
	 * cluster/link.h). Longer for a far server behind TLS. */
	F_NUM(struct config_cluster, FT_U32, "connect_timeout", connect_timeout, 1, 600, 2),
	/* A beat (a few bytes) per node per interval; a node sends everything
	 * for one interval after joining, and forgets a node unheard for three:
	 * 2 s keeps both short at no measurable cost. */
	F_NUM(struct config_cluster, FT_U32, "interest_interval", interest_interval, 1, 3600, 2),
	/* How long a SUBACK of a new filter waits for every other node to
	 * answer its announcement: a round trip is well under a millisecond;
	 * 2 s rides out a busy node and bounds the wait for a dead one until
	 * it is forgotten. */
	F_NUM(struct config_cluster, FT_U32, "interest_ack_timeout", interest_ack_timeout, 1, 60, 2),
	/* The filters kept for each other node (cluster/announce.h); past
	 * either, that node gets every message until its set fits again. A
	 * node announces its distinct filters: 100,000 covers a node holding
	 * one filter per device for 100,000 devices (a per-device command
	 * topic); 16 MiB is 100,000 filters of 160 bytes. Kept, a filter costs
	 * its bytes plus ~160 of set and trie (measured by
	 * test_cluster_interest): the defaults bound what one node's filters
	 * cost here at ~32 MiB, and 64 nodes' (PEERS_MAX) at ~2 GiB. */
	F_NUM(struct config_cluster, FT_U64, "max_remote_filters", max_remote_filters, 1, JSON_INT_MAX, 100000),
	F_NUM(struct config_cluster, FT_U64, "max_remote_filter_bytes", max_remote_filter_bytes, 65535, JSON_INT_MAX,
	      16u << 20),
	/* A session moving to another node (cluster/handover.h): its CONNECT
	 * waits at most this long for the old node's answer, then starts
	 * fresh. 5 s is far above a handover's round trip (a 1,000-message
	 * session moves in 10 to 80 ms, docs/cluster.md) and below the usual
	 * client connect timeouts (10 s and more). */
	F_NUM(struct config_cluster, FT_U32, "handover_timeout", handover_timeout, 1, 60, 5),
	/* The session as records, held whole at the new node until stored:
	 * 64 MiB is 64 times limits.max_queued_bytes' default (1 MiB). A
	 * larger session starts fresh at the new node, logged. */
	F_NUM(struct config_cluster, FT_U32, "handover_max_bytes", handover_max_bytes, 65536, 1073741824, 67108864),
	/* 16 bytes each (1 MiB by default): which node claimed an id last, so
	 * that a reconnect asks that node only and a first connect asks none. */
	F_NUM(struct config_cluster, FT_U32, "handover_directory", handover_directory, 1024, 16777216, 65536),
	/* Shared subscription groups this node holds (cluster/groups.h): each
	 * new one costs nats-server a queue subscription and, with durable,
	 * one or two durable JetStream consumers, whichever client asks
	 * (measured, nats-server 2.9: ~50 KiB of memory and 16 KiB of store
	 * per consumer; here one cnats delivery thread per consumer binding
	 * and ~150 KiB in the ASan build). Applications use a few groups each
	 * (worker pools); 1,000 leaves room for hundreds of them while
	 * bounding what one node's clients can make nats-server keep near
	 * 50 MiB and 16 MiB of disk (twice that for filters ending in "/#").
	 * Past it a new group's SUBACK says Quota exceeded; joining a group
	 * the node holds still works. */
	F_NUM(struct config_cluster, FT_U32, "max_groups", max_groups, 1, 1000000, 1000),
	/* The node consumer gives again a message this node did not ack
	 * within this: one its inbox had no room for, one delivered to a run
	 * killed before routing it, one whose ack was lost; one whose copies
	 * the store has not written yet comes again each time (dropped, the
	 * ack still waits: durable.c). Shorter recovers those sooner and costs
	 * a redelivery of what waits longer (a stalled store, a paused loop);
	 * 30 s is JetStream's own default. Updated on the existing consumer at
	 * the next start. */
	F_NUM(struct config_cluster, FT_U32, "ack_wait", ack_wait, 1, 86400, 30),
	/* A group's consumer redelivers a message its node did not ack
	 * within this (the node killed or frozen) to another node: 30 s rides
	 * out a loaded node's pause; shorter risks duplicates from a slow
	 * but live one. At most a day: a longer wait only delays what a
	 * frozen node held. */
	F_NUM(struct config_cluster, FT_U32, "group_ack_wait", group_ack_wait, 1, 86400, 30),
	/* A group's consumer that no node has bound for this long is deleted
	 * by JetStream (its last member anywhere left, or every member's
	 * node is gone); until then it keeps the messages stored for its
	 * filter (interest retention, within stream_max_age). 300 s is long
	 * enough for a member's node to be restarted and find them, short
	 * enough that an abandoned group does not keep a busy topic's
	 * messages for long. At most a year, as stream_max_age. */
	F_NUM(struct config_cluster, FT_U32, "group_inactive", group_inactive, 1, 31536000, 300),
	/* TLS and credentials of every NATS connection (check_cluster). */
	F_FILE(struct config_cluster, "cafile", cafile),
	F_FILE(struct config_cluster, "certfile", certfile),
	F_FILE(struct config_cluster, "keyfile", keyfile),
	F_BOOL(struct config_cluster, "tls_skip_verify", tls_skip_verify, false),
	F_STR(struct config_cluster, "tls_server_name", tls_server_name, NULL),
	F_STR(struct config_cluster, "username", username, NULL),
	F_STR(struct config_cluster, "password", password, NULL),
	F_STR(struct config_cluster, "token", token, NULL),
	F_FILE(struct config_cluster, "credentials", credentials),
	F_STR(struct config_cluster, "nkey", nkey, NULL),
	F_FILE(struct config_cluster, "nkey_seed", nkey_seed),
	{0},
};

/* 10000 topics of at most 256 bytes each bound the table near 4 MiB
 * (~400 B a topic with its trie node); a broker with more topics shows the
 * most recently published ones. */
static const struct field dashboard_fields[] = {
	F_NUM(struct config_dashboard, FT_U32, "max_topics", max_topics, 1, 10000000, 10000),
	F_NUM(struct config_dashboard, FT_U32, "max_value_bytes", max_value_bytes, 0, 65536, 256),
	{0},
};

static const struct enum_name bridge_dir_names[] = {
	{"out", CONFIG_BRIDGE_OUT}, {"in", CONFIG_BRIDGE_IN}, {"both", CONFIG_BRIDGE_BOTH}, {NULL, 0}};
static const struct enum_name bridge_version_names[] = {
	{"mqttv311", 4}, {"3.1.1", 4}, {"mqttv50", 5}, {"5", 5}, {NULL, 0}};

static const struct field topic_fields[] = {
	F_STR(struct config_bridge_topic, "pattern", pattern, "#"),
	F_ENUM(struct config_bridge_topic, "direction", direction, bridge_dir_names, CONFIG_BRIDGE_OUT),
	F_NUM(struct config_bridge_topic, FT_U32, "qos", qos, 0, 2, 1),
	{.key = "local_prefix", .type = FT_CUSTOM, .def_str = "",
	 .offset = offsetof(struct config_bridge_topic, local_prefix), .custom = parse_prefix},
	{.key = "remote_prefix", .type = FT_CUSTOM, .def_str = "",
	 .offset = offsetof(struct config_bridge_topic, remote_prefix), .custom = parse_prefix},
	{0},
};

static const struct field bridge_fields[] = {
	F_STR(struct config_bridge, "name", name, NULL),
	F_CUSTOM(struct config_bridge, "addresses", addresses, parse_addresses),
	F_ENUM(struct config_bridge, "protocol_version", protocol_version, bridge_version_names, 4),
	F_STR(struct config_bridge, "client_id", client_id, NULL),
	F_STR(struct config_bridge, "username", username, NULL),
	F_STR(struct config_bridge, "password", password, NULL),
	/* Mosquitto's bridge default; the remote drops us after 1.5 times it. */
	F_NUM(struct config_bridge, FT_U32, "keepalive", keepalive, 5, 65535, 60),
	F_BOOL(struct config_bridge, "clean_start", clean_start, false),
	F_NUM(struct config_bridge, FT_U32, "session_expiry", session_expiry, 0, UINT32_MAX, 0),
	F_BOOL(struct config_bridge, "try_private", try_private, true),
	F_FILE(struct config_bridge, "cafile", cafile),
	F_FILE(struct config_bridge, "certfile", certfile),
	F_FILE(struct config_bridge, "keyfile", keyfile),
	F_BOOL(struct config_bridge, "tls_insecure", tls_insecure, false),
	/* Whose ACL rules the bridge's local side follows (Mosquitto's
	 * local_username; unset: none apply). Their %c is "$bridge/<name>". */
	F_STR(struct config_bridge, "local_username", local_username, NULL),
	F_CUSTOM(struct config_bridge, "topics", topics, parse_bridge_topics),
	/* What waits for the remote while it is unreachable: 100000 messages
	 * or 64 MiB, about 15 minutes of a gateway sending 100 messages a
	 * second of up to ~600 bytes. Past either bound a new message is
	 * dropped, counted and logged once per episode. */
	F_NUM(struct config_bridge, FT_U32, "max_queued_messages", max_queued_messages, 1, UINT32_MAX, 100000),
	/* QoS 0 for the remote waits too while it is away (Mosquitto's
	 * queue_qos0_messages), in memory, under the same two bounds. */
	F_BOOL(struct config_bridge, "queue_qos0", queue_qos0, false),
	F_NUM(struct config_bridge, FT_U64, "max_queued_bytes", max_queued_bytes, 1024, UINT64_MAX, 64u << 20),
	/* Reconnect backoff: from 1 s, doubling to 60 s, each wait drawn
	 * between half and all of it, so gateways that lost the same remote
	 * do not come back at the same instant. */
	F_NUM(struct config_bridge, FT_U32, "reconnect_min", reconnect_min, 1, 3600, 1),
	F_NUM(struct config_bridge, FT_U32, "reconnect_max", reconnect_max, 1, 86400, 60),
	F_NUM(struct config_bridge, FT_U32, "connect_timeout", connect_timeout, 1, 3600, 10),
	{0},
};

static const struct field top_fields[] = {
	F_CUSTOM(struct config, "listeners", listeners, parse_listeners),
	F_OBJ(struct config, "limits", limits, limits_fields),
	F_OBJ(struct config, "auth", auth, auth_fields),
	F_OBJ(struct config, "log", log, log_fields),
	F_OBJ(struct config, "persistence", persistence, persistence_fields),
	F_OBJ(struct config, "cluster", cluster, cluster_fields),
	F_OBJ(struct config, "dashboard", dashboard, dashboard_fields),
	F_CUSTOM(struct config, "bridges", bridges, parse_bridges),
	F_NUM(struct config, FT_U32, "sys_interval", sys_interval, 0, 86400, 10),
	F_STR(struct config, "pid_file", pid_file, NULL),
	{0},
};

/* ---- errors and key paths ---- */

__attribute__((format(printf, 2, 3))) static int fail(struct parser *p, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	if (p->errlen)
		snprintf(p->err, p->errlen, "%s: %s: %s", p->name, p->plen ? p->path : "(root)",
			 reason);
	return WISP_ECONFIG;
}

static int fail_nomem(struct parser *p)
{
	fail(p, "out of memory");
	return WISP_ENOMEM;
}

/* Appends ".key" (or "key" at the root) to the path; returns the old length
 * for path_pop. A path too long for the buffer is cut, never overflowed. */
static size_t path_push_key(struct parser *p, const char *key)
{
	size_t old = p->plen;
	int n = snprintf(p->path + p->plen, sizeof p->path - p->plen, "%s%s", p->plen ? "." : "",
			 key);
	if (n > 0)
		p->plen += (size_t)n < sizeof p->path - p->plen ? (size_t)n : sizeof p->path - p->plen - 1;
	return old;
}

static size_t path_push_index(struct parser *p, size_t i)
{
	size_t old = p->plen;
	int n = snprintf(p->path + p->plen, sizeof p->path - p->plen, "[%zu]", i);
	if (n > 0)
		p->plen += (size_t)n < sizeof p->path - p->plen ? (size_t)n : sizeof p->path - p->plen - 1;
	return old;
}

static void path_pop(struct parser *p, size_t old)
{
	p->plen = old;
	p->path[old] = '\0';
}

static const char *json_type_name(const cJSON *item)
{
	if (cJSON_IsBool(item))
		return "a boolean";
	if (cJSON_IsNull(item))
		return "null";
	if (cJSON_IsNumber(item))
		return "a number";
	if (cJSON_IsString(item))
		return "a string";
	if (cJSON_IsArray(item))
		return "an array";
	if (cJSON_IsObject(item))
		return "an object";
	return "an invalid value";
}

static int fail_type(struct parser *p, const char *want, const cJSON *item)
{
	return fail(p, "expected %s, got %s", want, json_type_name(item));
}

/* ---- did-you-mean ---- */

/* Optimal string alignment distance (Levenshtein plus adjacent swaps), so
 * "prot" is one edit from "port". Keys are short; longer input is cut. */
static size_t edit_distance(const char *a, const char *b)
{
	enum { MAXK = 40 };
	size_t la = strlen(a), lb = strlen(b);
	if (la > MAXK)
		la = MAXK;
	if (lb > MAXK)
		lb = MAXK;
	size_t d[MAXK + 1][MAXK + 1];
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			size_t cost = a[i - 1] != b[j - 1];
			size_t best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + cost < best)
				best = d[i - 1][j - 1] + cost;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[la][lb];
}

static int fail_unknown_key(struct parser *p, const char *key, const struct field *fields)
{
	const char *best = NULL;
	size_t best_d = SIZE_MAX;
	for (const struct field *f = fields; f->key; f++) {
		size_t d = edit_distance(key, f->key);
		if (d < best_d) {
			best_d = d;
			best = f->key;
		}
	}
	/* A third of the key's length is close enough to be a typo, not a
	 * different word; always allow one edit for short keys. */
	size_t allowed = strlen(best ? best : "") / 3;
	if (allowed < 1)
		allowed = 1;
	if (best && best_d <= allowed)
		return fail(p, "unknown key (did you mean '%s'?)", best);
	return fail(p, "unknown key");
}

/* ---- scalar fields ---- */

static void store_uint(void *dst, enum ftype t, uint64_t v)
{
	switch (t) {
	case FT_U16: {
		uint16_t x = (uint16_t)v;
		memcpy(dst, &x, sizeof x);
		break;
	}
	case FT_U32: {
		uint32_t x = (uint32_t)v;
		memcpy(dst, &x, sizeof x);
		break;
	}
	case FT_U64:
		memcpy(dst, &v, sizeof v);
		break;
	default:
		break;
	}
}

static void store_bool(void *dst, bool v) { memcpy(dst, &v, sizeof v); }
static void store_int(void *dst, int v) { memcpy(dst, &v, sizeof v); }

/* Replaces the string at dst (freeing a default) with a copy of s. */
static int store_str(struct parser *p, void *dst, const char *s)
{
	char *copy = wisp_strndup(s, strlen(s));
	if (!copy)
		return fail_nomem(p);
	char *old;
	memcpy(&old, dst, sizeof old);
	wisp_free(old);
	memcpy(dst, &copy, sizeof copy);
	return 0;
}

static int get_string(struct parser *p, const cJSON *item, const char **out)
{
	if (!cJSON_IsString(item) || !item->valuestring)
		return fail_type(p, "a string", item);
	if (item->valuestring[0] == '\0')
		return fail(p, "must not be empty");
	*out = item->valuestring;
	return 0;
}

static int check_readable(struct parser *p, const char *path)
{
	struct stat st;
	if (stat(path, &st) == -1) {
		if (errno == ENOENT || errno == ENOTDIR)
			return fail(p, "file not found: %s", path);
		return fail(p, "file not readable: %s: %s", path, strerror(errno));
	}
	if (S_ISDIR(st.st_mode))
		return fail(p, "is a directory, not a file: %s", path);
	if (access(path, R_OK) == -1)
		return fail(p, "file not readable: %s: %s", path, strerror(errno));
	return 0;
}

static int parse_enum(struct parser *p, const cJSON *item, const struct enum_name *names, int *out)
{
	const char *s;
	int rc = get_string(p, item, &s);
	if (rc)
		return rc;
	char list[256];
	size_t n = 0;
	list[0] = '\0';
	for (const struct enum_name *e = names; e->name; e++) {
		if (strcmp(e->name, s) == 0) {
			*out = e->value;
			return 0;
		}
		int w = snprintf(list + n, sizeof list - n, "%s\"%s\"", n ? ", " : "", e->name);
		if (w > 0 && (size_t)w < sizeof list - n)
			n += (size_t)w;
	}
	return fail(p, "invalid value \"%s\" (expected one of %s)", s, list);
}

static int parse_object(struct parser *p, const cJSON *obj, const struct field *fields, void *base);

static int parse_field(struct parser *p, const cJSON *item, const struct field *f, void *base)
{
	void *dst = (char *)base + f->offset;
	switch (f->type) {
	case FT_BOOL:
		if (!cJSON_IsBool(item))
			return fail_type(p, "a boolean", item);
		store_bool(dst, cJSON_IsTrue(item));
		return 0;
	case FT_U16:
	case FT_U32:
	case FT_U64: {
		if (!cJSON_IsNumber(item))
			return fail_type(p, "an integer", item);
		double v = item->valuedouble;
		if (!isfinite(v) || v != floor(v))
			return fail(p, "must be an integer, got %g", v);
		if (v < (double)f->min || v > (double)f->max)
			return fail(p, "out of range: %.15g (allowed %llu to %llu)", v,
				    (unsigned long long)f->min, (unsigned long long)f->max);
		store_uint(dst, f->type, (uint64_t)v);
		return 0;
	}
	case FT_STR:
	case FT_FILE: {
		const char *s;
		int rc = get_string(p, item, &s);
		if (rc)
			return rc;
		if (f->type == FT_FILE && (rc = check_readable(p, s)))
			return rc;
		return store_str(p, dst, s);
	}
	case FT_ENUM: {
		int v;
		int rc = parse_enum(p, item, f->names, &v);
		if (rc)
			return rc;
		store_int(dst, v);
		return 0;
	}
	case FT_OBJECT:
		return parse_object(p, item, f->sub, dst);
	case FT_CUSTOM:
		return f->custom(p, item, base, f);
	}
	return fail(p, "internal error: bad schema");
}

static int parse_object(struct parser *p, const cJSON *obj, const struct field *fields, void *base)
{
	if (!cJSON_IsObject(obj))
		return fail_type(p, "an object", obj);
	for (const cJSON *c = obj->child; c; c = c->next) {
		size_t old = path_push_key(p, c->string ? c->string : "");
		int rc = 0;
		/* cJSON keeps both copies of a repeated key; which one wins
		 * would be an accident, so refuse. */
		for (const cJSON *prev = obj->child; prev != c; prev = prev->next) {
			if (prev->string && c->string && strcmp(prev->string, c->string) == 0) {
				rc = fail(p, "duplicate key");
				break;
			}
		}
		if (!rc) {
			const struct field *f = fields;
			while (f->key && (!c->string || strcmp(f->key, c->string) != 0))
				f++;
			rc = f->key ? parse_field(p, c, f, base)
				    : fail_unknown_key(p, c->string ? c->string : "", fields);
		}
		if (rc)
			return rc;
		path_pop(p, old);
	}
	return 0;
}

/* ---- defaults and freeing, driven by the same tables ---- */

static int apply_defaults(const struct field *fields, void *base)
{
	for (const struct field *f = fields; f->key; f++) {
		void *dst = (char *)base + f->offset;
		switch (f->type) {
		case FT_BOOL:
			store_bool(dst, f->def != 0);
			break;
		case FT_U16:
		case FT_U32:
		case FT_U64:
			store_uint(dst, f->type, f->def);
			break;
		case FT_ENUM:
			store_int(dst, (int)f->def);
			break;
		case FT_STR:
		case FT_FILE:
		case FT_CUSTOM:
			if (f->def_str) {
				char *s = wisp_strndup(f->def_str, strlen(f->def_str));
				if (!s)
					return WISP_ENOMEM;
				memcpy(dst, &s, sizeof s);
			}
			break;
		case FT_OBJECT: {
			int rc = apply_defaults(f->sub, dst);
			if (rc)
				return rc;
			break;
		}
		}
	}
	return 0;
}

/* Custom fields own a char * except "listeners", which free_fields skips
 * (config_free frees the array itself). */
static void free_fields(const struct field *fields, void *base)
{
	for (const struct field *f = fields; f->key; f++) {
		void *dst = (char *)base + f->offset;
		if (f->type == FT_OBJECT) {
			free_fields(f->sub, dst);
		} else if (f->type == FT_STR || f->type == FT_FILE ||
			   (f->type == FT_CUSTOM && f->custom != parse_listeners && f->custom != parse_bridges &&
			    f->custom != parse_bridge_topics)) {
			char *s;
			memcpy(&s, dst, sizeof s);
			wisp_free(s);
			s = NULL;
			memcpy(dst, &s, sizeof s);
		}
	}
}

/* ---- differences, driven by the same tables ---- */

struct diff {
	config_diff_fn *fn;
	void *ctx;
	char path[PATH_BUF];
};

/* Secrets are compared, never shown. */
static bool is_secret(const char *key)
{
	static const char *const keys[] = {"password", "token", "nkey_seed", "credentials"};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (strcmp(key, keys[i]) == 0)
			return true;
	return false;
}

static void render(const struct field *f, const void *dst, char *out, size_t len)
{
	uint64_t u = 0;
	switch (f->type) {
	case FT_BOOL: {
		bool v;
		memcpy(&v, dst, sizeof v);
		snprintf(out, len, "%s", v ? "true" : "false");
		return;
	}
	case FT_U16: {
		uint16_t v;
		memcpy(&v, dst, sizeof v);
		u = v;
		break;
	}
	case FT_U32: {
		uint32_t v;
		memcpy(&v, dst, sizeof v);
		u = v;
		break;
	}
	case FT_U64:
		memcpy(&u, dst, sizeof u);
		break;
	case FT_ENUM: {
		int v;
		memcpy(&v, dst, sizeof v);
		for (const struct enum_name *n = f->names; n->name; n++)
			if (n->value == v) {
				snprintf(out, len, "\"%s\"", n->name);
				return;
			}
		snprintf(out, len, "%d", v);
		return;
	}
	default: {
		const char *v;
		memcpy(&v, dst, sizeof v);
		if (!v)
			snprintf(out, len, "unset");
		else if (is_secret(f->key))
			snprintf(out, len, "(hidden)");
		else
			snprintf(out, len, "\"%.200s\"", v);
		return;
	}
	}
	snprintf(out, len, "%" PRIu64, u);
}

/* Appends ".key" (or "key[index]" when indexed) to the path; returns the
 * length to cut it back to. */
static size_t diff_push(struct diff *d, const char *key, bool indexed, size_t index)
{
	size_t old = strlen(d->path);
	if (indexed)
		snprintf(d->path + old, sizeof d->path - old, "%s%s[%zu]", old ? "." : "", key, index);
	else
		snprintf(d->path + old, sizeof d->path - old, "%s%s", old ? "." : "", key);
	return old;
}

static void diff_count(struct diff *d, const char *key, size_t a, size_t b)
{
	if (a == b)
		return;
	char was[32], now[32];
	snprintf(was, sizeof was, "%zu entries", a);
	snprintf(now, sizeof now, "%zu entries", b);
	size_t old = diff_push(d, key, false, 0);
	d->fn(d->path, was, now, d->ctx);
	d->path[old] = '\0';
}

static void diff_fields(struct diff *d, const struct field *fields, const void *a, const void *b);

/* The stored size of a scalar field; 0 for strings and objects. */
static size_t scalar_size(enum ftype t)
{
	switch (t) {
	case FT_BOOL:
		return sizeof(bool);
	case FT_U16:
		return sizeof(uint16_t);
	case FT_U32:
		return sizeof(uint32_t);
	case FT_U64:
		return sizeof(uint64_t);
	case FT_ENUM:
		return sizeof(int);
	default:
		return 0;
	}
}

static void diff_bridges(struct diff *d, const struct config *a, const struct config *b)
{
	diff_count(d, "bridges", a->bridge_count, b->bridge_count);
	for (size_t i = 0; i < a->bridge_count && i < b->bridge_count; i++) {
		const struct config_bridge *x = &a->bridges[i], *y = &b->bridges[i];
		size_t old = diff_push(d, "bridges", true, i);
		diff_fields(d, bridge_fields, x, y);
		diff_count(d, "topics", x->topic_count, y->topic_count);
		for (size_t t = 0; t < x->topic_count && t < y->topic_count; t++) {
			size_t at = diff_push(d, "topics", true, t);
			diff_fields(d, topic_fields, &x->topics[t], &y->topics[t]);
			d->path[at] = '\0';
		}
		d->path[old] = '\0';
	}
}

static void diff_fields(struct diff *d, const struct field *fields, const void *a, const void *b)
{
	for (const struct field *f = fields; f->key; f++) {
		const void *x = (const char *)a + f->offset, *y = (const char *)b + f->offset;
		if (f->type == FT_CUSTOM && f->custom == parse_listeners)
			continue; /* by identity: config_diff_listener */
		if (f->type == FT_CUSTOM && f->custom == parse_bridges) {
			diff_bridges(d, a, b);
			continue;
		}
		if (f->type == FT_CUSTOM && f->custom == parse_bridge_topics)
			continue; /* diff_bridges */
		size_t old = diff_push(d, f->key, false, 0);
		bool same = true;
		size_t size = scalar_size(f->type);
		if (f->type == FT_OBJECT) {
			diff_fields(d, f->sub, x, y);
		} else if (size) {
			same = memcmp(x, y, size) == 0;
		} else {
			const char *sx, *sy;
			memcpy(&sx, x, sizeof sx);
			memcpy(&sy, y, sizeof sy);
			same = (!sx && !sy) || (sx && sy && strcmp(sx, sy) == 0);
		}
		if (!same) {
			char was[256], now[256];
			render(f, x, was, sizeof was);
			render(f, y, now, sizeof now);
			d->fn(d->path, was, now, d->ctx);
		}
		d->path[old] = '\0';
	}
}

void config_diff(const struct config *a, const struct config *b, config_diff_fn *fn, void *ctx)
{
	struct diff d = {.fn = fn, .ctx = ctx};
	diff_fields(&d, top_fields, a, b);
}

void config_diff_listener(const struct config_listener *a, const struct config_listener *b, size_t index,
			  config_diff_fn *fn, void *ctx)
{
	struct diff d = {.fn = fn, .ctx = ctx};
	snprintf(d.path, sizeof d.path, "listeners[%zu]", index);
	diff_fields(&d, listener_fields, a, b);
}

/* ---- custom fields ---- */

static int parse_min_version(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	int v;
	int rc = parse_enum(p, item, tls_version_names, &v);
	if (rc)
		return rc;
	return store_str(p, (char *)base + f->offset, item->valuestring);
}

/* "stderr", "syslog", or a file we can append to (created if missing, so
 * its directory must be writable). */
static int parse_log_destination(struct parser *p, const cJSON *item, void *base,
				 const struct field *f)
{
	const char *s;
	int rc = get_string(p, item, &s);
	if (rc)
		return rc;
	if (strcmp(s, "stderr") != 0 && strcmp(s, "syslog") != 0) {
		struct stat st;
		if (stat(s, &st) == 0) {
			if (S_ISDIR(st.st_mode))
				return fail(p, "is a directory, not a file: %s", s);
			if (access(s, W_OK) == -1)
				return fail(p, "file not writable: %s: %s", s, strerror(errno));
		} else {
			const char *slash = strrchr(s, '/');
			char dir[PATH_BUF];
			if (!slash)
				snprintf(dir, sizeof dir, ".");
			else if (slash == s)
				snprintf(dir, sizeof dir, "/");
			else
				snprintf(dir, sizeof dir, "%.*s", (int)(slash - s), s);
			if (access(dir, W_OK) == -1)
				return fail(p, "cannot create log file: %s: %s", s, strerror(errno));
		}
	}
	return store_str(p, (char *)base + f->offset, s);
}

static int parse_listeners(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	struct config *cfg = base;
	if (!cJSON_IsArray(item))
		return fail_type(p, "an array", item);
	size_t n = (size_t)cJSON_GetArraySize(item);
	if (n == 0)
		return fail(p, "must not be empty (at least one listener is needed)");
	cfg->listeners = wisp_calloc(n, sizeof *cfg->listeners);
	if (!cfg->listeners)
		return fail_nomem(p);
	cfg->listener_count = n;
	for (size_t i = 0; i < n; i++)
		if (apply_defaults(listener_fields, &cfg->listeners[i]))
			return fail_nomem(p);
	size_t i = 0;
	for (const cJSON *c = item->child; c; c = c->next, i++) {
		size_t old = path_push_index(p, i);
		int rc = parse_object(p, c, listener_fields, &cfg->listeners[i]);
		if (rc)
			return rc;
		path_pop(p, old);
	}
	return 0;
}

/* ---- inline ACL ---- */

struct strbuf {
	char *s;
	size_t len, cap;
};

static int sb_add(struct strbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *ns = wisp_realloc(b->s, cap);
		if (!ns)
			return WISP_ENOMEM;
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
	return 0;
}

static int sb_addz(struct strbuf *b, const char *s) { return sb_add(b, s, strlen(s)); }

static const char *const acl_access_words[] = {"read", "write", "readwrite", "subscribe", "deny",
					       NULL};

static bool is_access_word(const char *s, size_t n)
{
	for (const char *const *w = acl_access_words; *w; w++)
		if (strlen(*w) == n && memcmp(*w, s, n) == 0)
			return true;
	return false;
}

/*
 * Checks one rule line of the ACL file format (see auth/acl.h):
 * "user <name>", "topic [access] <filter>", "pattern [access] <filter>".
 * The topic filter itself is checked by auth/ when the ACL is built.
 */
static int check_acl_line(struct parser *p, const char *line)
{
	if (strpbrk(line, "\r\n"))
		return fail(p, "must be a single line");
	const char *s = line;
	while (*s == ' ' || *s == '\t')
		s++;
	size_t kw = strcspn(s, " \t");
	const char *rest = s + kw;
	while (*rest == ' ' || *rest == '\t')
		rest++;
	bool is_user = kw == 4 && memcmp(s, "user", 4) == 0;
	bool is_topic = kw == 5 && memcmp(s, "topic", 5) == 0;
	bool is_pattern = kw == 7 && memcmp(s, "pattern", 7) == 0;
	if (!is_user && !is_topic && !is_pattern)
		return fail(p, "invalid rule \"%s\" (expected \"user <name>\", \"topic [access] "
			       "<filter>\" or \"pattern [access] <filter>\")",
			    line);
	if (*rest == '\0')
		return fail(p, "invalid rule \"%s\": missing %s", line, is_user ? "user name" : "topic");
	if (!is_user) {
		size_t w = strcspn(rest, " \t");
		const char *after = rest + w;
		while (*after == ' ' || *after == '\t')
			after++;
		if (*after != '\0' && !is_access_word(rest, w))
			return fail(p,
				    "invalid rule \"%s\": access must be read, write, readwrite, "
				    "subscribe or deny",
				    line);
	}
	return 0;
}

static int acl_object_to_line(struct parser *p, const cJSON *obj, struct strbuf *b)
{
	static const struct field acl_obj_keys[] = {
		{.key = "user"}, {.key = "topic"}, {.key = "pattern"}, {.key = "access"}, {0}};
	const char *vals[4] = {NULL, NULL, NULL, NULL};
	for (const cJSON *c = obj->child; c; c = c->next) {
		size_t old = path_push_key(p, c->string ? c->string : "");
		size_t k = 0;
		while (acl_obj_keys[k].key && strcmp(acl_obj_keys[k].key, c->string ? c->string : "") != 0)
			k++;
		if (!acl_obj_keys[k].key)
			return fail_unknown_key(p, c->string ? c->string : "", acl_obj_keys);
		if (vals[k])
			return fail(p, "duplicate key");
		int rc = get_string(p, c, &vals[k]);
		if (rc)
			return rc;
		if (strpbrk(vals[k], "\r\n"))
			return fail(p, "must be a single line");
		if (k == 3 && !is_access_word(vals[k], strlen(vals[k])))
			return fail(p,
				    "invalid value \"%s\" (expected one of \"read\", \"write\", "
				    "\"readwrite\", \"subscribe\", \"deny\")",
				    vals[k]);
		path_pop(p, old);
	}
	const char *user = vals[0], *topic = vals[1], *pattern = vals[2];
	const char *access = vals[3] ? vals[3] : "readwrite";
	if (!topic == !pattern)
		return fail(p, "needs exactly one of \"topic\" or \"pattern\"");
	if (pattern && user)
		return fail(p, "\"pattern\" applies to every client and cannot have a \"user\"");
	if (topic && !user)
		return fail(p, "\"topic\" needs a \"user\" (use a string rule for anonymous clients)");
	int rc = 0;
	if (user)
		rc = sb_addz(b, "user ") || sb_addz(b, user) || sb_addz(b, "\n");
	rc = rc || sb_addz(b, topic ? "topic " : "pattern ") || sb_addz(b, access) ||
	     sb_addz(b, " ") || sb_addz(b, topic ? topic : pattern) || sb_addz(b, "\n");
	return rc ? fail_nomem(p) : 0;
}

/* The inline "acl" array becomes ACL file text, so auth/ has one parser. */
/* Ends a custom parser that built `b`: on success the field owns b's text
 * (replacing its default), on failure b is freed and rc returned. */
static int set_built_string(struct strbuf *b, int rc, void *base, const struct field *f)
{
	if (rc) {
		wisp_free(b->s);
		return rc;
	}
	char **dst = (char **)((char *)base + f->offset);
	wisp_free(*dst);
	*dst = b->s;
	return 0;
}

static int parse_acl(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	if (!cJSON_IsArray(item))
		return fail_type(p, "an array", item);
	struct strbuf b = {0};
	if (sb_add(&b, "", 0))
		return fail_nomem(p);
	size_t i = 0;
	int rc = 0;
	for (const cJSON *c = item->child; c && !rc; c = c->next, i++) {
		size_t old = path_push_index(p, i);
		if (cJSON_IsString(c)) {
			rc = check_acl_line(p, c->valuestring);
			if (!rc && (sb_addz(&b, c->valuestring) || sb_addz(&b, "\n")))
				rc = fail_nomem(p);
		} else if (cJSON_IsObject(c)) {
			rc = acl_object_to_line(p, c, &b);
		} else {
			rc = fail_type(p, "a string or an object", c);
		}
		if (!rc)
			path_pop(p, old);
	}
	return set_built_string(&b, rc, base, f);
}

/* A string or a non-empty array of them, each one checked by `why_bad`
 * (NULL: fine; else the reason, possibly written into `buf`), kept
 * comma-separated. `want` names the accepted shapes for a wrong type. */
typedef const char *why_bad_fn(const char *v, char *buf, size_t len);

static int parse_string_list(struct parser *p, const cJSON *item, void *base, const struct field *f,
			     why_bad_fn *why_bad, const char *want)
{
	struct strbuf b = {0};
	if (sb_add(&b, "", 0))
		return fail_nomem(p);
	int rc = 0;
	char buf[160];
	const char *why;
	if (cJSON_IsString(item)) {
		if ((why = why_bad(item->valuestring, buf, sizeof buf)))
			rc = fail(p, "%s", why);
		else if (sb_addz(&b, item->valuestring))
			rc = fail_nomem(p);
	} else if (cJSON_IsArray(item) && item->child) {
		size_t i = 0;
		for (const cJSON *c = item->child; c && !rc; c = c->next, i++) {
			size_t old = path_push_index(p, i);
			if (!cJSON_IsString(c))
				rc = fail_type(p, "a string", c);
			else if ((why = why_bad(c->valuestring, buf, sizeof buf)))
				rc = fail(p, "%s", why);
			else if ((i && sb_addz(&b, ",")) || sb_addz(&b, c->valuestring))
				rc = fail_nomem(p);
			if (!rc)
				path_pop(p, old);
		}
	} else {
		rc = fail_type(p, want, item);
	}
	return set_built_string(&b, rc, base, f);
}

static const char *nats_url_bad(const char *v, char *buf, size_t len)
{
	(void)buf;
	(void)len;
	return !*v || strchr(v, ',') ? "a NATS URL, without commas" : NULL;
}

/* "nats": a URL or an array of them, kept as cnats's comma-separated list. */
static int parse_nats_urls(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	return parse_string_list(p, item, base, f, nats_url_bad, "a URL or a non-empty array of URLs");
}

/* "subject_prefix": a NATS literal subject (tokens joined by '.', none
 * empty, no whitespace, no '*' or '>' token), or "" for none. */
static int parse_subject_prefix(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	if (!cJSON_IsString(item))
		return fail_type(p, "a string", item);
	const char *v = item->valuestring;
	size_t tok = 0;
	for (const char *c = v; *v; c++) { /* "" is valid: no prefix */
		unsigned char ch = (unsigned char)*c;
		if (ch == '.' || ch == '\0') {
			if (tok == 0 || (tok == 1 && (c[-1] == '*' || c[-1] == '>')))
				return fail(p, "\"%s\" is not a NATS literal subject (empty token or wildcard)", v);
			tok = 0;
			if (ch == '\0')
				break;
			continue;
		}
		if (ch <= ' ' || ch == 0x7f)
			return fail(p, "\"%s\" is not a NATS literal subject (whitespace or control character)", v);
		tok++;
	}
	struct strbuf b = {0};
	int rc = sb_addz(&b, v) ? fail_nomem(p) : 0;
	return set_built_string(&b, rc, base, f);
}

/* A JetStream KV bucket name: what nats-server accepts, [A-Za-z0-9_-]+
 * (it becomes the stream KV_<name> and the subjects $KV.<name>.>). */
static int parse_bucket_name(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	if (!cJSON_IsString(item))
		return fail_type(p, "a string", item);
	const char *v = item->valuestring;
	size_t n = strlen(v);
	if (n == 0 || n > 64 || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != n)
		return fail(p, "\"%s\" is not a JetStream bucket name (1 to 64 of A-Z a-z 0-9 _ -)", v);
	struct strbuf b = {0};
	int rc = sb_addz(&b, v) ? fail_nomem(p) : 0;
	return set_built_string(&b, rc, base, f);
}

/* A JetStream stream name, also the first token of its subjects. */
static int parse_stream_name(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	if (!cJSON_IsString(item))
		return fail_type(p, "a string", item);
	const char *v = item->valuestring;
	if (!*v || strlen(v) > 64)
		return fail(p, "a stream name is 1 to 64 characters");
	for (const char *c = v; *c; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f || *c == '.' || *c == '*' || *c == '>' || *c == '/' ||
		    *c == '\\')
			return fail(p, "\"%s\" is not a JetStream stream name (no space, '.', '*', '>', '/', '\\')", v);
	struct strbuf b = {0};
	int rc = sb_addz(&b, v) ? fail_nomem(p) : 0;
	return set_built_string(&b, rc, base, f);
}

/* ---- bridges ---- */

/* An array of objects described by `fields` into a new array of `size`-byte
 * elements, defaults applied first. */
static int parse_array(struct parser *p, const cJSON *item, const struct field *fields, size_t size,
		       void **out, size_t *count)
{
	if (!cJSON_IsArray(item))
		return fail_type(p, "an array", item);
	size_t n = (size_t)cJSON_GetArraySize(item);
	if (n == 0)
		return fail(p, "must not be empty");
	char *arr = wisp_calloc(n, size);
	if (!arr)
		return fail_nomem(p);
	*out = arr;
	*count = n;
	for (size_t i = 0; i < n; i++)
		if (apply_defaults(fields, arr + i * size))
			return fail_nomem(p);
	size_t i = 0;
	for (const cJSON *c = item->child; c; c = c->next, i++) {
		size_t old = path_push_index(p, i);
		int rc = parse_object(p, c, fields, arr + i * size);
		if (rc)
			return rc;
		path_pop(p, old);
	}
	return 0;
}

static int parse_bridges(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	struct config *cfg = base;
	void *arr = NULL;
	(void)f;
	int rc = parse_array(p, item, bridge_fields, sizeof *cfg->bridges, &arr, &cfg->bridge_count);
	cfg->bridges = arr;
	return rc;
}

static int parse_bridge_topics(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	struct config_bridge *br = base;
	void *arr = NULL;
	(void)f;
	int rc = parse_array(p, item, topic_fields, sizeof *br->topics, &arr, &br->topic_count);
	br->topics = arr;
	return rc;
}

/* "host:port" (an IPv6 host in brackets), port 1..65535. */
static bool address_valid(const char *a)
{
	const char *colon = strrchr(a, ':');
	if (!colon || colon == a || !colon[1] || strchr(a, ','))
		return false;
	if (a[0] == '[' && colon[-1] != ']')
		return false;
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	return !*end && port >= 1 && port <= 65535;
}

static const char *address_bad(const char *v, char *buf, size_t len)
{
	if (address_valid(v))
		return NULL;
	snprintf(buf, len, "\"%.100s\" is not host:port", v);
	return buf;
}

/* "addresses": "host:port" or an array of them (tried in order), kept
 * comma-separated. */
static int parse_addresses(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	return parse_string_list(p, item, base, f, address_bad, "\"host:port\" or a non-empty array of them");
}

/* A topic prefix: "" or topic levels without wildcards. */
static int parse_prefix(struct parser *p, const cJSON *item, void *base, const struct field *f)
{
	if (!cJSON_IsString(item))
		return fail_type(p, "a string", item);
	if (strpbrk(item->valuestring, "+#"))
		return fail(p, "\"%s\": a prefix has no wildcards", item->valuestring);
	return store_str(p, (char *)base + f->offset, item->valuestring);
}

/* A valid topic filter: '+' a whole level, '#' the whole last one. */
static bool filter_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 65535)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool level_start = i == 0 || s[i - 1] == '/';
		bool level_end = i + 1 == n || s[i + 1] == '/';
		if (s[i] == '+' && !(level_start && level_end))
			return false;
		if (s[i] == '#' && !(level_start && i + 1 == n))
			return false;
	}
	return true;
}

static int check_bridge(struct parser *p, struct config *cfg, size_t i)
{
	struct config_bridge *br = &cfg->bridges[i];
	size_t old = path_push_key(p, "bridges");
	path_push_index(p, i);
	if (!br->name)
		return fail(p, "needs a \"name\"");
	if (!*br->name || strpbrk(br->name, "/+#") || strlen(br->name) > 64)
		return fail(p, "name \"%s\": 1 to 64 characters, none of / + #", br->name);
	for (size_t j = 0; j < i; j++)
		if (strcmp(cfg->bridges[j].name, br->name) == 0)
			return fail(p, "name \"%s\" is also bridges[%zu]'s", br->name, j);
	if (!br->addresses)
		return fail(p, "needs \"addresses\"");
	if (!br->topics)
		return fail(p, "needs \"topics\" (what crosses the bridge)");
	if ((br->certfile != NULL) != (br->keyfile != NULL))
		return fail(p, "certfile and keyfile go together (mutual TLS)");
	if (br->certfile && !br->cafile)
		return fail(p, "certfile needs cafile (TLS)");
	if (br->reconnect_max < br->reconnect_min)
		return fail(p, "reconnect_max (%u) is below reconnect_min (%u)", br->reconnect_max, br->reconnect_min);
	for (size_t t = 0; t < br->topic_count; t++) {
		const struct config_bridge_topic *r = &br->topics[t];
		if (!filter_valid(r->pattern)) {
			path_push_key(p, "topics");
			path_push_index(p, t);
			return fail(p, "pattern \"%s\" is not a valid topic filter", r->pattern);
		}
	}
	path_pop(p, old);
	return 0;
}

/* ---- cluster: NATS TLS and credentials ---- */

void config_nats_url_split(const char *url, size_t len, struct config_nats_url *out)
{
	memset(out, 0, sizeof *out);
	const char *end = url + len, *c = url;
	for (const char *s = url; s + 3 <= end; s++)
		if (s[0] == ':' && s[1] == '/' && s[2] == '/') {
			out->scheme = url;
			out->scheme_len = (size_t)(s - url);
			c = s + 3;
			break;
		}
	const char *auth_end = c;
	while (auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#')
		auth_end++;
	/* The last '@': a password may hold one (cnats takes it so too). */
	for (const char *s = auth_end; s > c; s--)
		if (s[-1] == '@') {
			out->userinfo = c;
			out->userinfo_len = (size_t)(s - 1 - c);
			c = s;
			break;
		}
	if (c < auth_end && *c == '[') {
		const char *close = memchr(c, ']', (size_t)(auth_end - c));
		out->host = c + 1;
		out->host_len = close ? (size_t)(close - c - 1) : (size_t)(auth_end - c - 1);
		return;
	}
	const char *colon = memchr(c, ':', (size_t)(auth_end - c));
	out->host = c;
	out->host_len = (size_t)((colon ? colon : auth_end) - c);
}

/* Calls fn on each URL of cnats's comma-separated list until it returns
 * non-zero. */
static int each_nats_url(const char *urls, int (*fn)(const struct config_nats_url *u, void *ctx), void *ctx)
{
	for (const char *s = urls; s && *s;) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);
		struct config_nats_url u;
		config_nats_url_split(s, n, &u);
		int rc = fn(&u, ctx);
		if (rc)
			return rc;
		s = comma ? comma + 1 : s + n;
	}
	return 0;
}

static int url_is_tls(const struct config_nats_url *u, void *ctx)
{
	(void)ctx;
	return u->scheme_len == 3 && strncasecmp(u->scheme, "tls", 3) == 0;
}

static int url_has_userinfo(const struct config_nats_url *u, void *ctx)
{
	(void)ctx;
	return u->userinfo != NULL;
}

bool config_cluster_tls(const struct config_cluster *c)
{
	return c->cafile || each_nats_url(c->nats, url_is_tls, NULL);
}

/* An NKey user's public key: 'U' and 55 more of base32's A-Z 2-7. */
static bool nkey_user_valid(const char *k)
{
	return strlen(k) == 56 && k[0] == 'U' && strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") == 56;
}

/* NATS takes one way of authenticating per connection (cnats would send
 * them all and nats-server decides by its own order), so more than one is
 * refused rather than one silently winning. Keys that need TLS are refused
 * without it, so a certificate the operator meant to use is never ignored. */
static int check_cluster(struct parser *p, struct config *cfg)
{
	struct config_cluster *c = &cfg->cluster;
	if (!c->nats)
		return 0;
	size_t old = path_push_key(p, "cluster");
	struct {
		bool set;
		const char *key;
	} ways[] = {
		{each_nats_url(c->nats, url_has_userinfo, NULL) != 0, "nats"},
		{c->username || c->password, c->username ? "username" : "password"},
		{c->token != NULL, "token"},
		{c->credentials != NULL, "credentials"},
		{c->nkey || c->nkey_seed, c->nkey ? "nkey" : "nkey_seed"},
	};
	const char *first = NULL;
	for (size_t i = 0; i < sizeof ways / sizeof ways[0]; i++) {
		if (!ways[i].set)
			continue;
		if (first) {
			path_push_key(p, ways[i].key);
			if (strcmp(first, "nats") == 0)
				return fail(p, "cannot be combined with a user or token in a cluster.nats URL (NATS "
					    "takes one way of authenticating)");
			return fail(p, "cannot be combined with cluster.%s (NATS takes one way of authenticating)",
				    first);
		}
		first = ways[i].key;
	}
	if ((c->username != NULL) != (c->password != NULL)) {
		path_push_key(p, c->username ? "username" : "password");
		return fail(p, "needs cluster.%s too", c->username ? "password" : "username");
	}
	if ((c->nkey != NULL) != (c->nkey_seed != NULL)) {
		path_push_key(p, c->nkey ? "nkey" : "nkey_seed");
		return fail(p, "needs cluster.%s too (the public key and the file of its seed)",
			    c->nkey ? "nkey_seed" : "nkey");
	}
	if (c->nkey && !nkey_user_valid(c->nkey)) {
		path_push_key(p, "nkey");
		return fail(p, "\"%s\" is not an NKey user public key ('U' and 55 of A-Z 2-7)", c->nkey);
	}
	if ((c->certfile != NULL) != (c->keyfile != NULL)) {
		path_push_key(p, c->certfile ? "certfile" : "keyfile");
		return fail(p, "certfile and keyfile go together (mutual TLS)");
	}
	bool tls = config_cluster_tls(c);
	const char *needs_tls = c->certfile ? "certfile" : c->tls_skip_verify ? "tls_skip_verify"
					   : c->tls_server_name ? "tls_server_name" : NULL;
	if (needs_tls && !tls) {
		path_push_key(p, needs_tls);
		return fail(p, "needs TLS: set cluster.cafile or use tls:// URLs in cluster.nats");
	}
	if (c->tls_skip_verify && c->tls_server_name) {
		path_push_key(p, "tls_server_name");
		return fail(p, "cannot be combined with cluster.tls_skip_verify (nothing is checked then)");
	}
	path_pop(p, old);
	return 0;
}

/* ---- whole-document rules ---- */

static int add_default_listener(struct config *cfg)
{
	cfg->listeners = wisp_calloc(1, sizeof *cfg->listeners);
	if (!cfg->listeners)
		return WISP_ENOMEM;
	cfg->listener_count = 1;
	cfg->default_listeners = true;
	return apply_defaults(listener_fields, &cfg->listeners[0]);
}

static const cJSON *listener_json(const cJSON *root, size_t i)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "listeners");
	return arr ? cJSON_GetArrayItem(arr, (int)i) : NULL;
}

bool config_is_loopback(const char *bind)
{
	return strcmp(bind, "localhost") == 0 || strcmp(bind, "::1") == 0 || strncmp(bind, "127.", 4) == 0;
}

static int check_listener(struct parser *p, struct config *cfg, const cJSON *lj, size_t i)
{
	struct config_listener *l = &cfg->listeners[i];
	const cJSON *tls = cJSON_GetObjectItemCaseSensitive(lj, "tls");
	size_t old = path_push_key(p, "listeners");
	path_push_index(p, i);
	int rc = 0;
	if (!cJSON_HasObjectItem(lj, "port") && l->protocol == CONFIG_PROTO_MQTTS)
		l->port = 8883;
	if (!cJSON_HasObjectItem(lj, "port") && l->protocol == CONFIG_PROTO_HTTP)
		l->port = 8080;
	const cJSON *http = cJSON_GetObjectItemCaseSensitive(lj, "http");
	/* A broker with a password file wants passwords unless a listener
	 * says otherwise explicitly. */
	if (!cJSON_HasObjectItem(lj, "allow_anonymous") && cfg->auth.password_file)
		l->allow_anonymous = false;

	bool is_tls = l->protocol == CONFIG_PROTO_MQTTS || l->protocol == CONFIG_PROTO_WSS;
	bool is_ws = l->protocol == CONFIG_PROTO_WS || l->protocol == CONFIG_PROTO_WSS;
	bool is_http = l->protocol == CONFIG_PROTO_HTTP;
	const char *proto = l->protocol == CONFIG_PROTO_WSS ? "wss" : "mqtts";
	/* The first HEAD_KEYS bound any HTTP request head: http listeners take them too. */
	enum { HEAD_KEYS = 2 };
	static const char *const ws_keys[] = {"max_header_bytes", "max_headers", "path", "max_frame_size",
					      "trust_proxy", "frame_per_packet"};
	if (!cJSON_HasObjectItem(lj, "port") && l->protocol == CONFIG_PROTO_WS)
		l->port = 8083;
	if (!cJSON_HasObjectItem(lj, "port") && l->protocol == CONFIG_PROTO_WSS)
		l->port = 8084;
	for (size_t k = 0; !is_ws && k < sizeof ws_keys / sizeof ws_keys[0]; k++) {
		if (is_http && k < HEAD_KEYS)
			continue;
		if (cJSON_HasObjectItem(lj, ws_keys[k])) {
			path_push_key(p, ws_keys[k]);
			rc = fail(p, k < HEAD_KEYS ? "only allowed when protocol is \"ws\", \"wss\" or \"http\""
						   : "only allowed when protocol is \"ws\" or \"wss\"");
			break;
		}
	}
	if (rc) {
		/* reported */
	} else if (!is_http && http) {
		path_push_key(p, "http");
		rc = fail(p, "only allowed when protocol is \"http\"");
	} else if (is_http && tls) {
		path_push_key(p, "tls");
		rc = fail(p, "not supported for protocol \"http\" (put it behind a TLS proxy, or bind it to loopback)");
	} else if (is_http && !cfg->auth.password_file &&
		   (l->http.require_auth == CONFIG_HTTP_AUTH_ALWAYS || !config_is_loopback(l->bind))) {
		/* Off loopback the dashboard can publish and shows every
		 * topic: it must not be open to whoever reaches the port. */
		path_push_key(p, "bind");
		rc = fail(p, "an http listener reachable from other hosts (or with require_auth \"always\") "
			     "needs auth.password_file for its users");
	} else if (!is_tls && tls) {
		path_push_key(p, "tls");
		rc = fail(p, "only allowed when protocol is \"mqtts\" or \"wss\"");
	} else if (is_tls) {
		if (!tls) {
			path_push_key(p, "tls");
			rc = fail(p, "required when protocol is \"%s\"", proto);
		} else if (!l->tls.cert) {
			path_push_key(p, "tls.cert");
			rc = fail(p, "required when protocol is \"%s\"", proto);
		} else if (!l->tls.key) {
			path_push_key(p, "tls.key");
			rc = fail(p, "required when protocol is \"%s\"", proto);
		} else if (l->tls.require_certificate && !l->tls.ca) {
			path_push_key(p, "tls.ca");
			rc = fail(p, "required when require_certificate is true");
		} else if (l->tls.use_identity_as_username && !l->tls.require_certificate) {
			path_push_key(p, "tls.use_identity_as_username");
			rc = fail(p, "needs require_certificate to be true");
		}
	}
	if (!rc && l->path && l->path[0] != '/') {
		path_push_key(p, "path");
		rc = fail(p, "must start with '/'");
	}
	for (size_t j = 0; !rc && j < i; j++) {
		const struct config_listener *o = &cfg->listeners[j];
		/* Port 0 asks the kernel for a fresh port each time. */
		if (l->port != 0 && o->port == l->port && strcmp(o->bind, l->bind) == 0) {
			path_push_key(p, "port");
			rc = fail(p, "duplicate of listeners[%zu] (%s port %u)", j, l->bind,
				  (unsigned)l->port);
		}
	}
	if (!rc)
		path_pop(p, old);
	return rc;
}

static int finalize(struct parser *p, struct config *cfg, const cJSON *root)
{
	int rc;
	if (!cfg->listeners && (rc = add_default_listener(cfg)))
		return fail_nomem(p);
	for (size_t i = 0; i < cfg->listener_count; i++) {
		const cJSON *lj = listener_json(root, i);
		if (lj && (rc = check_listener(p, cfg, lj, i)))
			return rc;
		if (!lj && cfg->auth.password_file)
			cfg->listeners[i].allow_anonymous = false;
	}
	for (size_t i = 0; i < cfg->bridge_count; i++)
		if ((rc = check_bridge(p, cfg, i)))
			return rc;
	if ((rc = check_cluster(p, cfg)))
		return rc;
	if (cfg->auth.acl_file && cfg->auth.acl_inline) {
		path_push_key(p, "auth.acl");
		return fail(p, "cannot be combined with auth.acl_file (choose one)");
	}
	return 0;
}

/* ---- public API ---- */

static struct config *config_new(const char *name)
{
	struct config *cfg = wisp_calloc(1, sizeof *cfg);
	if (!cfg)
		return NULL;
	cfg->path = wisp_strndup(name, strlen(name));
	if (!cfg->path || apply_defaults(top_fields, cfg)) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

struct config *config_default(void)
{
	struct config *cfg = config_new("<default>");
	if (cfg && add_default_listener(cfg)) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

static void line_col(const char *text, size_t off, size_t *line, size_t *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off; i++) {
		if (text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static int fail_syntax(struct parser *p, const char *text, size_t off, const char *why)
{
	size_t line, col;
	line_col(text, off, &line, &col);
	if (p->errlen)
		snprintf(p->err, p->errlen, "%s: line %zu, column %zu: %s", p->name, line, col, why);
	return WISP_ECONFIG;
}

/* Where an escape "\u0000" starts, or NULL. cJSON decodes it and the C
 * string then ends there, so "pw\u0000.disabled" would read as "pw" and a
 * key "listeners\u0000x" as "listeners", silently: no configuration
 * string holds U+0000, so such a file is refused. A backslash run of even
 * length is escaped backslashes, not an escape. */
static const char *escaped_nul(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '\\')
			continue;
		size_t start = i;
		while (i < len && s[i] == '\\')
			i++;
		if ((i - start) % 2 == 1 && len - i >= 5 && memcmp(s + i, "u0000", 5) == 0)
			return s + i - 1;
	}
	return NULL;
}

int config_parse(const char *json, size_t len, const char *name, struct config **out, char *err,
		 size_t errlen)
{
	struct parser p = {.name = name ? name : "<config>", .err = err, .errlen = errlen};
	if (errlen)
		err[0] = '\0';
	*out = NULL;
	size_t skip = 0;
	if (len >= 3 && memcmp(json, "\xEF\xBB\xBF", 3) == 0)
		skip = 3; /* editors on some systems add a UTF-8 BOM */
	const char *nul = memchr(json, '\0', len);
	if (nul)
		return fail_syntax(&p, json, (size_t)(nul - json), "invalid JSON (NUL byte)");
	const char *esc = escaped_nul(json, len);
	if (esc)
		return fail_syntax(&p, json, (size_t)(esc - json), "\\u0000: no configuration string can hold U+0000");
	/* cJSON only rejects trailing garbage when the text ends in a NUL
	 * inside the given length, so parse a terminated copy. */
	char *text = wisp_malloc(len + 1);
	if (!text)
		return fail_nomem(&p);
	memcpy(text, json, len);
	text[len] = '\0';
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text + skip, len - skip + 1, &end, 1);
	if (!root) {
		size_t off = end && end >= text + skip && end <= text + len ? (size_t)(end - text)
									 : len;
		int rc = fail_syntax(&p, text, off, "invalid JSON");
		wisp_free(text);
		return rc;
	}
	int rc = WISP_ENOMEM;
	struct config *cfg = config_new(p.name);
	if (!cfg) {
		fail_nomem(&p);
		goto fail;
	}
	p.cfg = cfg;
	if ((rc = parse_object(&p, root, top_fields, cfg)))
		goto fail;
	if ((rc = finalize(&p, cfg, root)))
		goto fail;
	cJSON_Delete(root);
	wisp_free(text);
	*out = cfg;
	return 0;
fail:
	config_free(cfg);
	cJSON_Delete(root);
	wisp_free(text);
	return rc;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	struct parser p = {.name = path, .err = err, .errlen = errlen};
	*out = NULL;
	if (errlen)
		err[0] = '\0';
	char *buf;
	size_t len;
	int rc = wisp_read_file(path, CONFIG_FILE_MAX, &buf, &len);
	switch (rc) {
	case 0:
		break;
	case WISP_ENOENT:
		return fail(&p, "cannot open: %s", strerror(errno));
	case WISP_ELIMIT:
		return fail(&p, "file larger than %u bytes", CONFIG_FILE_MAX);
	case WISP_ENOMEM:
		return fail_nomem(&p);
	default:
		return fail(&p, "cannot read: %s", strerror(errno));
	}
	/* A Mosquitto configuration is translated to this same JSON first. */
	if (mosq_conf_detect(buf ? buf : "", len))
		rc = mosq_conf_parse(path, buf, len, out, err, errlen);
	else
		rc = config_parse(buf ? buf : "", len, path, out, err, errlen);
	wisp_free(buf);
	return rc;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->listener_count; i++)
		free_fields(listener_fields, &cfg->listeners[i]);
	wisp_free(cfg->listeners);
	for (size_t i = 0; i < cfg->bridge_count; i++) {
		struct config_bridge *br = &cfg->bridges[i];
		for (size_t t = 0; t < br->topic_count; t++)
			free_fields(topic_fields, &br->topics[t]);
		wisp_free(br->topics);
		free_fields(bridge_fields, br);
	}
	wisp_free(cfg->bridges);
	free_fields(top_fields, cfg);
	wisp_free(cfg->path);
	wisp_free(cfg);
}
