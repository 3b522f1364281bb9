/*
 * Broker configuration: loaded from one JSON file (or the embedded default),
 * validated completely, then immutable. cJSON is used inside config/ only.
 *
 * Every error names the file, the key path (e.g. "listeners[1].tls.cert")
 * and the reason, so a bad file is refused at start with a message the
 * operator can act on.
 */
#ifndef WISP_CONFIG_H
#define WISP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum config_protocol {
	CONFIG_PROTO_MQTT = 0,  /* plain TCP */
	CONFIG_PROTO_MQTTS = 1, /* TLS */
	CONFIG_PROTO_WS = 2,    /* MQTT over WebSocket over TCP */
	CONFIG_PROTO_WSS = 3,   /* MQTT over WebSocket over TLS */
	CONFIG_PROTO_HTTP = 4,  /* /metrics, /healthz, /readyz and the dashboard (http/) */
};

enum config_http_auth {
	CONFIG_HTTP_AUTH_REMOTE = 0, /* Basic auth for peers that are not loopback */
	CONFIG_HTTP_AUTH_ALWAYS = 1, /* for every peer */
};

/* The http listener protocol (listeners[].http); the request head's bounds
 * are the listener's max_header_bytes and max_headers, as for ws. */
struct config_http {
	uint32_t max_body_size;   /* POST bodies (the dashboard's publish form); default 65536 */
	uint32_t max_requests;    /* per connection, then it is closed; default 2000 */
	uint32_t idle_timeout;    /* seconds without a complete request; default 30 */
	uint32_t tree_page_size;  /* topic tree children per dashboard request; default 500 */
	bool dashboard;           /* serve the dashboard and its API; default true */
	int require_auth;         /* enum config_http_auth */
};

static inline bool config_proto_is_tls(enum config_protocol p)
{
	return p == CONFIG_PROTO_MQTTS || p == CONFIG_PROTO_WSS;
}

static inline bool config_proto_is_ws(enum config_protocol p)
{
	return p == CONFIG_PROTO_WS || p == CONFIG_PROTO_WSS;
}

struct config_tls {
	char *cert;     /* PEM certificate chain file */
	char *key;      /* PEM private key file */
	char *ca;       /* PEM CA file for client certificates */
	bool require_certificate;
	bool use_identity_as_username;
	char *ciphersuites; /* colon-separated IANA names, NULL = modern default */
	char *min_version;  /* "tls1.2" (default) or "tls1.3" */
	bool session_tickets;             /* RFC 5077 resumption; default true */
	uint32_t session_ticket_lifetime; /* seconds, also ticket key rotation and cache entry age; default 86400 */
	uint32_t session_cache_size;      /* server-side session cache entries; default 1000; 0 = off */
	uint32_t hibernate_after;         /* seconds idle before the record buffers are freed; default 5; 0 = never */
};

struct config_listener {
	char *bind;     /* address literal or host name; default "127.0.0.1" */
	uint16_t port;  /* 0 = ephemeral (tests) */
	enum config_protocol protocol;
	bool allow_anonymous;
	uint32_t max_connections; /* 0 = unlimited (bounded by the fd limit) */
	uint32_t max_handshakes;  /* mqtts: TLS handshakes at once; 0 = unlimited; default 512 */
	uint32_t max_handshakes_per_address; /* mqtts: the same per source address (IPv6: per /64); default 64 */
	struct config_tls tls;
	struct config_http http;
	/* ws, wss: the HTTP Upgrade request and the frames (http: the first two
	 * bound its requests too). */
	uint32_t max_header_bytes; /* request line + headers; default 8192 */
	uint32_t max_headers;      /* header lines; default 100 */
	char *path;                /* request path to accept; NULL = any */
	uint32_t max_frame_size;   /* payload of one client data frame; 0 (default) = limits.max_packet_size */
	bool trust_proxy;          /* take the client address from X-Forwarded-For; default false */
	bool frame_per_packet;     /* one WebSocket frame per MQTT packet (Paho C); default false */
};

struct config_limits {
	uint32_t max_packet_size;     /* bytes, whole packet; default 1 MiB (protocol maximum 268435455 + 5) */
	uint16_t max_inflight;        /* outbound QoS 1/2 window per client; default 20 */
	uint32_t max_queued_messages; /* per offline/slow client; default 1000 */
	uint64_t max_queued_bytes;    /* per client; default 8 MiB; 0 = unlimited by bytes */
	uint16_t max_keepalive;       /* seconds; clients asking more are clamped (v5) or refused; default 65535 */
	uint32_t connect_timeout;     /* seconds to wait for CONNECT; default 10 */
	uint16_t max_topic_levels;    /* default 128 */
	uint16_t max_topic_length;    /* bytes of a topic name or filter; default 4096 */
	uint32_t max_connections;     /* whole broker; default 0 = fd limit */
	uint64_t max_output_buffer;   /* unsent output per connection: QoS 0 dropped, input paused; default 1 MiB */
	uint32_t max_subscriptions;   /* per client; default 1000; 0 = unlimited */
	uint32_t max_retained;        /* retained messages; default 0 = unlimited */
	uint64_t max_retained_bytes;  /* default 0 = unlimited */
	uint64_t memory_limit;        /* broker heap ceiling in bytes; default 0 = none */
	uint32_t output_buffer_timeout; /* seconds a client may stay over max_output_buffer; default 60 */
	uint32_t max_connect_size;    /* bytes of a CONNECT before authentication; default 327701 (3.1.1 maximum) */
	uint64_t max_unauthenticated_bytes; /* input held by connections before CONNECT, broker-wide; default 32 MiB */
	uint64_t max_input_bytes; /* incomplete packets held by all connections together; default 256 MiB */
	uint64_t max_queued_bytes_total; /* queued QoS 1/2 bytes of all sessions; default 256 MiB */
	uint16_t max_topic_alias;     /* v5 inbound topic aliases per connection; default 10; 0 = none */
	uint16_t max_qos;             /* highest QoS accepted (v5: Maximum QoS); default 2 */
	bool retain_available;        /* retained messages accepted (v5: Retain Available); default true */
	uint32_t max_session_expiry;  /* seconds an offline session is kept at most; default 0 = as asked */
};

struct config_acl_rule; /* defined by auth/ (issue #5) */

struct config_auth {
	char *password_file;
	char *acl_file;
	char *acl_inline; /* the inline "acl" array serialised back to text rules, or NULL */
	uint32_t max_pending_per_address; /* password checks queued per source address; 0 = no cap; default 8 */
	uint32_t max_exchanges; /* MQTT 5 enhanced-authentication exchanges under way at once; default 1024 */
};

struct config_log {
	int level;          /* enum log_level */
	char *destination;  /* "stderr", "syslog" or a path */
	int format;         /* enum log_format */
	uint32_t rate_limit; /* lines a second per reason for client-caused lines; 0 = off; default 10 */
	uint32_t rate_burst; /* lines at once per reason before rate_limit applies; default 100 */
};

enum config_fsync {
	CONFIG_FSYNC_ALWAYS = 0,
	CONFIG_FSYNC_EVERYSEC = 1,
	CONFIG_FSYNC_NO = 2,
};

struct config_persistence {
	bool enabled;
	char *dir;
	enum config_fsync fsync;
	uint64_t compact_min_size; /* bytes of log before compaction is considered; default 16 MiB */
};

/* Scale-out over NATS (broker/src/cluster/); off while `nats` is NULL. */
struct config_cluster {
	char *nats;             /* server URLs, comma-separated (the JSON array joined); NULL: no cluster */
	char *node;             /* this node's name, unique in the cluster; default: the host name */
	char *subject_prefix;   /* NATS subjects are <prefix>.<mapped topic>; "" for none; default "wisp" */
	uint32_t inbound_queue; /* NATS messages waiting for the loop thread; default 65536 */
	uint64_t inbound_queue_bytes; /* their bytes (wire_msg_bytes); default 64 MiB */
	bool durable;           /* QoS 1/2 through JetStream; default true */
	char *stream;           /* the JetStream stream; default "WISP" */
	uint32_t replicas;      /* its replicas; default 1 */
	uint32_t stream_max_age; /* seconds a message stays in it at most; default 86400 */
	uint32_t duplicate_window; /* seconds its Nats-Msg-Id dedupe lasts; default 120 */
	uint32_t outbound_queue; /* QoS 1/2 messages waiting for JetStream's ack; default 65536 */
	uint32_t forward_queue;  /* QoS 1/2 kept in the store while JetStream is away; default 1000000, 0 off */
	uint64_t forward_queue_bytes; /* their bytes; default 256 MiB */
	char *retained_bucket;  /* JetStream KV bucket of the retained messages; default "wisp_retained" */
	uint32_t retained_replicas; /* its replicas; default 1 */
	bool interest;          /* send to NATS only what another node wants; default true */
	bool send_asap;         /* write each NATS publish at once (cnats sendAsap); default false */
	bool data_connection;   /* at-most-once messages through the loop's own NATS connection; default true */
	uint32_t send_queue;    /* wanted QoS 0 messages waiting for the NATS sender thread; default 8192 */
	uint64_t send_queue_bytes; /* their bytes; default 16 MiB */
	uint32_t write_deadline; /* ms a write to NATS may wait for the server to read; default 2000 */
	uint32_t ping_interval; /* seconds between PINGs on each NATS connection (2 unanswered: lost); default 5 */
	uint32_t connect_timeout; /* seconds one connect attempt to NATS may take; default 2 */
	uint32_t interest_interval; /* seconds between interest beats; default 2 */
	uint32_t interest_ack_timeout; /* seconds a SUBACK waits for the other nodes; default 2 */
	uint64_t max_remote_filters; /* distinct filters kept per other node; default 100000 */
	uint64_t max_remote_filter_bytes; /* their bytes per other node; default 16 MiB */
	uint32_t handover_timeout;  /* seconds a CONNECT waits for its session from another node; default 5 */
	uint32_t handover_max_bytes; /* largest session handed between nodes, encoded; default 64 MiB */
	uint32_t handover_directory; /* client ids whose last node is remembered; default 65536 */
	uint32_t max_groups;     /* distinct shared subscription groups this node holds; default 1000 */
	uint32_t ack_wait;       /* seconds the node's JetStream consumer waits for an ack; default 30 */
	uint32_t group_ack_wait; /* seconds a group's JetStream consumer waits for an ack; default 30 */
	uint32_t group_inactive; /* seconds a group's consumer no node binds lives on; default 300 */
	/* The NATS connections' TLS and credentials (cluster/nats_auth.h);
	 * cafile, certfile, keyfile, username and password as the bridges'
	 * keys. TLS is on when cafile is set or a URL is tls://
	 * (config_cluster_tls). At most one way of authenticating. */
	char *cafile, *certfile, *keyfile; /* cafile: TLS; certfile+keyfile: mutual TLS */
	bool tls_skip_verify;   /* check neither the server's chain nor its name (tests only); default false */
	char *tls_server_name;  /* the name every server's certificate must carry; default: its URL's host */
	char *username, *password; /* user and password (nats-server's authorization user) */
	char *token;            /* an authorization token */
	char *credentials;      /* a .creds file (user JWT and NKey seed, NATS decentralised auth) */
	char *nkey, *nkey_seed; /* an NKey user: its public key, and the file holding its seed */
};

/* A NATS URL's parts (views into it): "[scheme://][userinfo@]host[:port]".
 * host is without the brackets of an IPv6 literal. */
struct config_nats_url {
	const char *scheme, *userinfo, *host;
	size_t scheme_len, userinfo_len, host_len;
};
void config_nats_url_split(const char *url, size_t len, struct config_nats_url *out);
/* Whether the NATS connections use TLS: cafile set or a tls:// URL. */
bool config_cluster_tls(const struct config_cluster *c);

/* The dashboard's table of recently published topics (topic/activity.h). */
struct config_dashboard {
	uint32_t max_topics;      /* default 10000; the least recently published are forgotten past it */
	uint32_t max_value_bytes; /* bytes of each topic's last payload kept; default 256 */
};

/* Bridges to other brokers (broker/src/bridge/): one topic rule, as
 * Mosquitto's `topic pattern direction qos local_prefix remote_prefix`. */
enum config_bridge_dir {
	CONFIG_BRIDGE_OUT = 0,  /* local publishes go to the remote */
	CONFIG_BRIDGE_IN = 1,   /* the remote's go to local subscribers */
	CONFIG_BRIDGE_BOTH = 2,
};

struct config_bridge_topic {
	char *pattern;        /* a topic filter; default "#" */
	int direction;        /* enum config_bridge_dir; default out */
	uint32_t qos;         /* 0..2; default 1 */
	char *local_prefix;   /* prepended on this side; default "" */
	char *remote_prefix;  /* prepended on the remote; default "" */
};

struct config_bridge {
	char *name;              /* unique; the local session is "$bridge/<name>" */
	char *addresses;         /* "host:port" list, comma-separated, tried in order (failover) */
	int protocol_version;    /* 4 (3.1.1) or 5; default 4 */
	char *client_id;         /* default: the name */
	char *username, *password;
	uint32_t keepalive;      /* seconds; default 60 */
	bool clean_start;        /* default false: the remote keeps our session */
	uint32_t session_expiry; /* v5, seconds; default 0 (with clean_start false: never) */
	bool try_private;        /* 3.1.1: protocol level | 0x80 (Mosquitto's bridge flag); default true */
	char *cafile, *certfile, *keyfile; /* cafile: TLS; certfile+keyfile: mutual TLS */
	bool tls_insecure;       /* do not check the server's name; default false */
	char *local_username;    /* the ACL user of the local side; NULL: no ACL applies */
	struct config_bridge_topic *topics;
	size_t topic_count;
	uint32_t max_queued_messages; /* waiting for the remote; default 100000 */
	uint64_t max_queued_bytes;    /* default 64 MiB */
	bool queue_qos0;              /* QoS 0 waits for the remote too (in memory); default false */
	uint32_t reconnect_min, reconnect_max; /* backoff, seconds; default 1 and 60 */
	uint32_t connect_timeout;     /* seconds for TCP, TLS and CONNACK; default 10 */
};

struct config {
	char *path; /* the file it came from, or "<default>" */
	struct config_listener *listeners;
	size_t listener_count;
	/* The file names no listener: these are the defaults (JSON: 127.0.0.1;
	 * mosquitto.conf: 127.0.0.1 and ::1), and -p moves every one of them. */
	bool default_listeners;
	struct config_limits limits;
	struct config_auth auth;
	struct config_log log;
	struct config_persistence persistence;
	struct config_cluster cluster;
	struct config_dashboard dashboard;
	struct config_bridge *bridges;
	size_t bridge_count;
	uint32_t sys_interval; /* seconds between $SYS updates; 0 = off; default 10 */
	char *pid_file;        /* written once the listeners are open, removed at exit; NULL: none */
};

/*
 * The embedded default: one anonymous MQTT listener on 127.0.0.1:1883
 * (loopback only until configured, as Mosquitto 2 does) and the default
 * limits. NULL when out of memory.
 */
struct config *config_default(void);

/*
 * Loads and validates `path`: Wisp's JSON, or a Mosquitto configuration
 * (any file whose first non-blank character is not '{' or '[', translated
 * by mosquitto_conf.c into the same JSON). On success returns 0 and sets *out (caller
 * frees with config_free). On failure returns a negative WISP_E* and writes
 * "<file>: <key path>: <reason>" into err (always NUL-terminated).
 */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/* Same, from a string already in memory; `name` stands for the file in messages. */
int config_parse(const char *json, size_t len, const char *name, struct config **out, char *err,
		 size_t errlen);

void config_free(struct config *cfg);

/* Told of one key whose value differs: its path ("limits.max_packet_size",
 * "bridges[0].topics[1].qos"), and the old and new values as text
 * (secrets as "(hidden)", an array whose length changed as "N entries"). */
typedef void config_diff_fn(const char *path, const char *was, const char *now, void *ctx);
/* Calls fn for every key of the schema whose value differs between a and
 * b, in table order; listeners are left to config_diff_listener, as only
 * the caller knows which of them are the same listener. */
void config_diff(const struct config *a, const struct config *b, config_diff_fn *fn, void *ctx);
/* The same for one listener, its paths "listeners[index]....". */
void config_diff_listener(const struct config_listener *a, const struct config_listener *b, size_t index,
			  config_diff_fn *fn, void *ctx);

/* Whether a listener's `bind` is a loopback address ("127.x.y.z", "::1",
 * "localhost"): only local processes can reach it. */
bool config_is_loopback(const char *bind);

#endif
