/*
 * The broker: the one place that joins the codec, connections, sessions,
 * the topic tree and the retained store. main.c builds one from a config
 * and runs its loop; everything below runs on the loop thread.
 */
#ifndef WISP_PROTO_BROKER_H
#define WISP_PROTO_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "activity.h"
#include "codec.h"
#include "config.h"
#include "auth.h"
#include "bg.h"
#include "conn.h"
#include "delivery.h"
#include "drop.h"
#include "listener.h"
#include "loop.h"
#include "msg.h"
#include "reason.h"
#include "persist.h"
#include "router.h"
#include "retained.h"
#include "server.h"
#include "session.h"
#include "tls.h"
#include "topic.h"
#include "tree.h"

struct broker;
struct store;

/* Plain counters bumped inline; $SYS publishes them. */
struct broker_stats {
	uint64_t clients_total;      /* CONNECTs accepted since start */
	uint64_t msgs_received;      /* PUBLISH packets in */
	uint64_t msgs_sent;          /* PUBLISH packets queued out */
	uint64_t publish_dropped;    /* deliveries dropped, all reasons: the sum of dropped[] */
	uint64_t refused;            /* CONNACKs with a refusal code */
	uint64_t reasons[REASON_COUNT]; /* connections ended or refused, by reason (reason.h) */
	uint64_t sys_publish_dropped; /* client PUBLISHes to $SYS/ not routed */
	uint64_t acl_dropped_queued; /* queued/in-flight messages dropped by an access re-check */
	uint64_t dropped[DROP_REASON_COUNT]; /* deliveries dropped, by reason (drop.h) */
	uint64_t subs_refused;       /* filters refused by max_topic_length/levels, max_subscriptions or memory */
	uint64_t topics_refused;     /* PUBLISH and will topics over max_topic_length/levels */
	uint64_t retained_refused;   /* retained messages not stored: max_retained or max_retained_bytes */
	struct {                     /* cluster/cluster.c, when a cluster is configured */
		uint64_t sent;           /* messages published to NATS */
		uint64_t received;       /* messages from NATS routed locally */
		uint64_t dropped;        /* from NATS, dropped: cluster.inbound_queue full, or unusable */
		uint64_t send_failed;    /* not published to NATS (disconnected and its buffer full, ...) */
		uint64_t send_dropped;   /* wanted QoS 0 dropped: cluster.send_queue full (cluster/sender.h) */
		uint64_t too_large;      /* not sent to NATS: their NATS form over its max_payload (cluster.c) */
		uint64_t pending_dropped; /* from NATS, dropped by cnats: a subscription's pending limit full */
		uint64_t subjects;       /* NATS subscriptions held for local interest */
		uint64_t connected;      /* 1 while connected to NATS */
		uint64_t durable_ready;  /* 1 while the JetStream stream and this node's consumer are bound */
		uint64_t pending;        /* QoS 1/2 messages waiting for JetStream's ack (their PUBACKs wait) */
		uint64_t overflow;       /* QoS 1/2 no publisher waits on, sent at most once: cluster.outbound_queue full */
		uint64_t waited;         /* QoS 1/2 PUBLISHes that waited for cluster.outbound_queue, input paused */
		uint64_t forward_queued; /* QoS 1/2 kept in the store while JetStream is away (cluster/durable.c) */
		uint64_t forward_bytes;  /* their bytes */
		uint64_t forward_overflow; /* not kept there (forward_queue full): their acks waited for JetStream */
		uint64_t retained_applied; /* retained records from the JetStream bucket applied here (retained_kv.h) */
		uint64_t retained_unsent; /* this node's retained writes not yet acknowledged by the bucket */
		uint64_t retained_untracked; /* retained writes past the outbox's bound: sent to the bucket at most once */
		uint64_t taken_over;     /* sessions ended here because their client connected at another node */
		uint64_t unwanted;       /* messages no other node wanted: not sent to NATS (cluster/interest.h) */
		uint64_t interest_timeouts; /* SUBACKs sent before every node answered their filters' announcement */
		uint64_t interest_overflows; /* nodes whose filters went past cluster.max_remote_filters(_bytes) */
		uint64_t interest_malformed; /* interest announcements refused as no Wisp node writes them */
		uint64_t interest_dormant; /* nodes down whose stream consumer remains: QoS 1/2 all sent (cluster/dormant.h) */
		uint64_t bridges_duplicated; /* our bridges another node runs too (cluster/interest.c) */
		uint64_t sessions_in;    /* sessions fetched from another node at their client's reconnect */
		uint64_t sessions_out;   /* sessions handed to another node (and ended here) */
		uint64_t handover_failed; /* fetches that fell back to a fresh session (node gone, timeout, too big) */
		uint64_t handover_tail_lost; /* handover window messages the holder could not pass on (cluster/handover.h) */
		uint64_t directory_refused; /* start-up directory requests refused: DIR_ANSWERS_MAX under way (dir_answers.h) */
		uint64_t groups_refused; /* shared subscriptions refused: a new group past cluster.max_groups */
		uint64_t rejoins;        /* times the node rejoined after NATS closed a connection for good */
	} cluster;
	uint64_t http_requests;      /* HTTP requests answered (http/) */
	uint64_t http_refused;       /* HTTP connections closed for a malformed or oversized request */
	uint64_t http_auth_failures; /* HTTP requests refused 401 for missing or wrong credentials */
};

#define SYS_LOAD_WINDOWS 3

/* A counter's damped per-minute rate over 1, 5 and 15 minutes. */
struct sys_load {
	uint64_t last;
	double avg[SYS_LOAD_WINDOWS];
};

struct sys_state {
	struct loop_timer timer;
	uint64_t start;
	uint64_t last_tick;
	size_t clients_max;
	size_t heap_max;
	struct sys_load msgs_received, msgs_sent, bytes_received, bytes_sent, dropped, connections, sockets;
};

struct sub_job;

/* A bridge's state as $SYS and /metrics show it (bridge/ keeps it). */
struct broker_bridge_stat {
	const char *name;
	const struct session *session; /* its queue: queued_count + inflight_count */
	uint64_t queued_qos0;          /* QoS 0 waiting for the remote besides (queue_qos0) */
	const char *last_error;        /* "" after a successful CONNACK */
	uint64_t connected;            /* 1 while the remote accepted us */
	uint64_t connects;             /* CONNACKs accepted since start */
};

/*
 * The owner of connections the broker dialled itself (bridge/, a client of
 * another broker; conn.outbound set), registered once at start: their
 * packets and their end go to it, and so does a delivery to a session
 * flagged SESS_FLAG_BRIDGE, which it may give other bounds (*lim), a lower
 * QoS (*qos) and another message: a new reference to offer instead of `m`,
 * or NULL to offer `m` itself.
 */
struct outbound_verdict {
	bool taken;             /* the owner keeps the message (no delivery) */
	bool dropped;           /* drop it for `why` (counted and logged as a queue drop) */
	enum drop_reason why;
};
/* offer may also set *v: take the message (a bridge queueing QoS 0 while
 * its remote is away) or have it dropped. */
struct broker_outbound_ops {
	int (*on_packet)(void *ctx, struct conn *c, const struct mqtt_pkt *p, enum reason *why);
	void (*on_drop)(void *ctx, struct conn *c, enum reason r, const char *detail);
	struct msg *(*offer)(void *ctx, struct session *s, struct msg *m, uint8_t *qos, struct delivery_limits *lim,
			     struct outbound_verdict *v);
};

/* SUBSCRIBE and UNSUBSCRIBE work spread over loop turns (handle_subscribe.c). */
struct sub_work {
	struct list_node waiting;  /* struct sub_job, continued at the next turn */
	struct sub_job *resuming;  /* the one broker_sub_turn() is continuing */
	const struct conn *owner;  /* whose filter budget `left` is, during `owner_turn` */
	uint32_t turn;
	uint32_t owner_turn;
	uint32_t left;
	bool replay_logged;        /* a stored subscription was skipped: logged once */
};

struct broker {
	struct loop *loop;
	const struct config *cfg;
	struct tree *subs;
	struct retained *retained;
	bool retained_full; /* a retained message was refused by a bound; logged once until one is stored */
	struct session_table sessions;
	struct server srv;           /* listeners, connections, flush (server/server.h) */
	struct broker_stats stats;
	struct delivery_limits dlim;
	struct sess_observer observer; /* of durable state changes: the store's, when persistence is on */
	struct sys_state sys;
	struct auth_state auth;
	struct bg *bg;               /* password verification off the loop */
	struct {
		struct store *store;     /* NULL: persistence off */
		struct loop_io io;       /* the store's durable-seq eventfd */
		struct held_ack *held;   /* ring of acks waiting for their records, in seq order */
		size_t held_head, held_len, held_cap;
		uint64_t durable;        /* highest fsynced record seq */
		uint64_t append_errors;
		uint32_t emit_gen;       /* compaction pass, to write each message once */
		bool loading;
		struct loop_timer retry_timer; /* wakes the loop for a retry */
		uint64_t write_retry_at, compact_retry_at; /* loop ms */
		uint32_t write_backoff_s, compact_backoff_s;
		uint64_t compact_errors_seen, compactions_seen;
		uint64_t refused;        /* durable work refused while degraded */
		/* The cluster's forwarding queue (persist_forward_add), in order. */
		struct persist_fwd *fwd;
		size_t fwd_head, fwd_len, fwd_cap;
		/* The cluster's stream sequences routed (persist_stream_taken):
		 * all up to stream_floor, and those in taken[] above it; the
		 * last record's time stamp. */
		uint64_t stream_floor, stream_stamp;
		uint64_t *taken;
		size_t taken_len, taken_cap;
		/* Retained writes not yet in the cluster's bucket as the store
		 * had them (persist_retain_unsent_get), and who writes the live
		 * ones at compaction (persist_retain_marks_by). */
		struct persist_unsent *unsent;
		size_t unsent_len, unsent_cap;
		int (*emit_marks)(void *ctx, struct store *st);
		void *emit_marks_ctx;
	} persist;
	/* A second condition on acks, in front of the store's (cluster/durable.c):
	 * hold takes an ack that must wait for more than the store (1), and
	 * gives it back through persist_send_ack_ungated; 0: not held; negative
	 * (WISP_ENOMEM): the ack must not go at all, the publish fails (its
	 * connection closes unacknowledged); `resent`: the PUBREC of a re-sent
	 * QoS 2 PUBLISH (persist_send_resent_ack); forget drops a closing
	 * connection's; store_progress runs when the store's safe seq may have
	 * moved. NULL hold: no gate. */
	struct {
		int (*hold)(void *ctx, struct conn *c, const uint8_t *bytes, size_t len, uint64_t since, bool resent);
		void (*forget)(void *ctx, struct conn *c);
		void (*store_progress)(void *ctx);
		void *ctx;
	} ack_gate;
	/* In front of a QoS 1/2 PUBLISH (cluster/cluster.c): 0, handle it;
	 * WISP_EAGAIN, it waits unread (the connection's input paused) until
	 * the cluster resumes it (conn_input_resume) and it is handled again;
	 * WISP_ENOMEM, the publish fails. `levels` split its topic. NULL wait:
	 * no gate (one node, or no JetStream path). */
	struct {
		int (*wait)(void *ctx, struct conn *c, const struct topic_level *levels, size_t nlevels);
		void *ctx;
	} publish_gate;
	struct route_ctx route;      /* the local router and its per-publish scratch (router.h) */
	struct router *router;       /* where publishes and interest go: &route.router, or the cluster's on top of it */
	/* A cluster (cluster/presence.h): told of each client connected here,
	 * after its CONNACK is queued, so other nodes can let go of its id
	 * (`assigned`: the broker chose the id, unique on this node only). */
	void (*on_client_connected)(void *ctx, struct session *s, bool clean_start, bool assigned);
	void *client_connected_ctx;
	/* The same cluster, same ctx (cluster/handover.h): a CONNECT with
	 * Clean Start 0, once authenticated. 0: go on (with the session here,
	 * or a new one); WISP_EAGAIN: the session is being fetched from
	 * another node (or, restored here, waits for the other nodes' answers
	 * at start), and the CONNECT is handled again (conn_input_resume)
	 * once it is here or the fetch failed; WISP_EEXIST: it belongs to
	 * another user there (refused as on one node). */
	int (*on_resume_session)(void *ctx, struct conn *c, const char *id, size_t len, const char *username);
	/* A connection closes: whoever keeps it waiting lets go of it. */
	void (*on_conn_gone)(void *ctx, struct conn *c);
	uint64_t id_seq;             /* for assigned client ids */
	struct sub_work sub_work;
	/* Holds the SUBACK of a SUBSCRIBE until the other cluster nodes know of
	 * its new filters (cluster/interest.h): ticket is taken once the
	 * filters are subscribed; settled says whether the SUBACK may go
	 * (`since_ms`: loop ms when it was first held). NULL ticket: no gate. */
	struct {
		uint64_t (*ticket)(void *ctx);
		bool (*settled)(void *ctx, uint64_t ticket, uint64_t since_ms);
		void *ctx;
	} sub_gate;
	struct activity *activity;   /* the dashboard's topic table; NULL without a dashboard */
	const struct broker_outbound_ops *outbound; /* bridges, or NULL */
	void *outbound_ctx;
	struct broker_bridge_stat *bridge_stats; /* bridge_count of them, or NULL */
	size_t bridge_count;
};

/* Counts one message dropped by a bound (drop.h); $SYS publishes the count
 * per reason and in total. Logging the episode is the caller's (for a
 * delivery: broker_deliver). */
static inline void broker_count_drop(struct broker *b, enum drop_reason why)
{
	b->stats.dropped[why]++;
	b->stats.publish_dropped++;
}

/* Builds the broker and opens every listener. 0, or a negative WISP_E* with
 * the reason in err. */
int broker_init(struct broker *b, struct loop *l, const struct config *cfg, char *err, size_t errlen);
/* Closes every connection and frees everything. */
void broker_free(struct broker *b);

/* Routes `m` to every matching session through the router (the caller
 * keeps its reference); returns how many matched. `levels` is the topic
 * split by topic_split. */
size_t broker_route(struct broker *b, struct msg *m, const struct topic_level *levels, size_t nlevels);

/* Deletes the retained message `m` (if its topic still holds it) because
 * its Message Expiry Interval ran out [MQTT-3.3.2-5]; counted. */
void broker_retain_expired(struct broker *b, struct msg *m);

/* What a subscriber gets of a PUBLISH's (or a will's) properties,
 * unchanged and in order [MQTT-3.3.2-17] [MQTT-3.3.2-18], is all but these:
 * the Topic Alias (the connection's), the Message Expiry Interval
 * (forwarded as the time left [MQTT-3.3.2-6]), a Subscription Identifier
 * (the subscriber's own) and a will's Will Delay Interval (the broker's). */
#define BROKER_PROPS_NOT_FORWARDED                                                                       \
	(MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS) | MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY) |                \
	 MQTT_PROP_BIT(MQTT_PROP_SUBSCRIPTION_ID) | MQTT_PROP_BIT(MQTT_PROP_WILL_DELAY))

/* delivery_limits.on_drop: counts (and logs per episode) a message
 * session/delivery.c dropped on its own (route.c). */
void broker_delivery_dropped(void *ctx, struct session *s, enum drop_reason why);

/* Stores `m` as the retained message of its topic (a zero-length payload
 * deletes it [MQTT-3.3.1-10]). Logs when a retained cap refuses it. */
void broker_retain(struct broker *b, struct msg *m);

/* The sink of routing: delivers one message to one session at the granted
 * `qos`, with RETAIN as it goes on the wire (set for retained messages sent
 * on subscribe [MQTT-3.3.1-8], and kept with Retain As Published) and the
 * matching subscriptions' identifiers (NULL: none). */
void broker_deliver(struct broker *b, struct session *s, struct msg *m, uint8_t qos, bool retain,
		    const struct delivery_sub_ids *ids);

/*
 * Ends a connection for `r` (session/reason.h): answers it as its protocol
 * level allows (broker_answer_reason), counts it, logs `detail` (a more
 * precise text with figures) or else the reason's text, and publishes the
 * will unless the reason keeps it [MQTT-3.1.2-10]. The session is detached
 * (and destroyed if clean).
 */
void broker_drop(struct broker *b, struct conn *c, enum reason r, const char *detail);

/* Publishes a will now (retained if it says so); the caller keeps its
 * reference. A Message Expiry Interval among its properties starts now
 * (MQTT 5, 3.1.3.2.4). */
void broker_publish_will(struct broker *b, struct msg *will);


/* The one mapping of a reason to the wire (dispatch.c): a refusing CONNACK
 * (the v5 reason code, or the 3.1/3.1.1 return code) while the CONNECT is
 * being answered; a v5 DISCONNECT with the reason code once active; else
 * nothing (3.1.1 closes). Counts clients/refused for a refusing CONNACK. */
void broker_answer_reason(struct broker *b, struct conn *c, enum reason r);

/* on_packet of session/input.h: a decoded packet into its handler (dispatch.c). */
int broker_on_packet(void *ctx, struct conn *c, const struct mqtt_pkt *p, enum reason *why);

/*
 * Applies the reloadable parts of `next` (TLS material, log settings; auth
 * and ACL once configured) without dropping connections. All or nothing:
 * on failure the running configuration stays and the reason is logged.
 * `next` is only read during the call.
 */
int broker_reload(struct broker *b, const struct config *next);

/* Once per loop turn, before the read_more pass: continues the SUBSCRIBE and
 * UNSUBSCRIBE packets that ran out of their filter budget (handle_subscribe.c). */
void broker_sub_turn(struct broker *b);
/* Forgets the (UN)SUBSCRIBE a connection being dropped left half handled. */
void broker_sub_forget_conn(struct broker *b, struct conn *c);
/* A topic name or filter against limits.max_topic_length and max_topic_levels. */
enum topic_bound {
	TOPIC_WITHIN_LIMITS = 0,
	TOPIC_TOO_LONG = 1,
	TOPIC_TOO_DEEP = 2,
};
enum topic_bound broker_topic_bound(const struct broker *b, const char *topic, size_t len);

/* Re-evaluates the ACL class of every subscription of `s` against its
 * current ACL client (after a login or a reload). */
void broker_reclassify_subs(struct broker *b, struct session *s);

/* Packet handlers: 0, or a negative WISP_E* after which the caller drops the
 * connection for the reason the handler set in `*why` (a CONNECT refusal
 * included: dispatch answers it). */
int handle_connect(struct broker *b, struct conn *c, const struct mqtt_connect *p, enum reason *why);
int handle_publish(struct broker *b, struct conn *c, const struct mqtt_publish *p, enum reason *why);
int handle_ack(struct broker *b, struct conn *c, uint8_t type, const struct mqtt_ack *p, enum reason *why);
int handle_subscribe(struct broker *b, struct conn *c, const struct mqtt_subscribe *p, enum reason *why);
int handle_unsubscribe(struct broker *b, struct conn *c, const struct mqtt_subscribe *p, enum reason *why);
int handle_ping(struct broker *b, struct conn *c, enum reason *why);
int handle_disconnect(struct broker *b, struct conn *c, const struct mqtt_reason_pkt *p, enum reason *why);

/* Whether a client with these rules may write `topic` as far as $SYS/ is
 * concerned (true for every other topic): only with an ACL rule naming it,
 * and never under $SYS/broker/ (handle_publish.c). */
bool broker_sys_write_allowed(const struct acl_client *acl, const char *topic, size_t len);

/* Queues a PUBACK, PUBREC, PUBREL or PUBCOMP; with fsync "always" it waits for
 * the records it vouches for to be durable (persist_send_ack). */
int broker_send_ack(struct broker *b, struct conn *c, uint8_t type, uint16_t packet_id);

/* The name logs use for a connection: its client id once known, else its address. */
const char *broker_conn_name(const struct conn *c);

#endif
