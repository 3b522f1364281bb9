/*
 * CONNECT: protocol checks, client id rules, authentication (possibly
 * waiting for a background verification), will, session takeover and
 * resumption, CONNACK, then the keepalive timer.
 *
 * A session belongs to the user whose CONNECT created it: a client id is
 * not a credential, so a CONNECT by another user (or anonymous) with that
 * id is refused with "not authorised" and the owner's connection and
 * session are left alone. The store keeps the owner (proto/persist.c), so
 * this holds after a restart; the one exception is a session restored from
 * a store written before owners were recorded: its next login binds it
 * (and the store records that owner at the session_put event), and what that user may not
 * read is dropped from its queue (auth_recheck_messages).
 */
#include "broker.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "enhanced_auth.h"
#include "err.h"
#include "log.h"
#include "session_v5.h"

/* What a v5 CONNACK announces besides the limits from the configuration. */
struct connack_extra {
	uint16_t server_keepalive; /* 0: the client's keep alive stands */
	const char *assigned_id;   /* NULL: the client chose its id */
	size_t assigned_len;
	bool expiry_changed;       /* limits.max_session_expiry cut the client's interval */
	uint32_t expiry;           /* the interval granted, then */
	struct mqtt_str auth_method; /* enhanced authentication: its name and final data */
	struct mqtt_str auth_data;
};

/* The CONNACK properties of a v5 accept, in the order Mosquitto 2.0 writes
 * them, so tools comparing bytes with Mosquitto see none: Topic Alias
 * Maximum, Server Keep Alive, Assigned Client Identifier, Retain
 * Available, Maximum Packet Size, Receive Maximum, Maximum QoS. Each only
 * when it says something the default does not [MQTT-3.2.2.3]. */
static int connack_props(const struct config_limits *lim, const struct connack_extra *x, uint8_t *buf,
			 size_t cap, size_t *off)
{
	int rc = 0;
	if (lim->max_topic_alias)
		rc |= mqtt_props_put_u16(buf, cap, off, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, lim->max_topic_alias);
	if (x->server_keepalive) /* [MQTT-3.2.2-21] */
		rc |= mqtt_props_put_u16(buf, cap, off, MQTT_PROP_SERVER_KEEP_ALIVE, x->server_keepalive);
	if (x->assigned_id) /* [MQTT-3.2.2-16] */
		rc |= mqtt_props_put_str(buf, cap, off, MQTT_PROP_ASSIGNED_CLIENT_ID,
					 (struct mqtt_str){(const uint8_t *)x->assigned_id, x->assigned_len});
	if (!lim->retain_available)
		rc |= mqtt_props_put_u8(buf, cap, off, MQTT_PROP_RETAIN_AVAILABLE, 0);
	if (lim->max_packet_size && lim->max_packet_size < MQTT_MAX_REMAINING_LEN + MQTT_MAX_FIXED_HEADER)
		rc |= mqtt_props_put_u32(buf, cap, off, MQTT_PROP_MAXIMUM_PACKET_SIZE, lim->max_packet_size);
	if (lim->max_inflight < UINT16_MAX)
		rc |= mqtt_props_put_u16(buf, cap, off, MQTT_PROP_RECEIVE_MAXIMUM, lim->max_inflight);
	if (lim->max_qos < 2)
		rc |= mqtt_props_put_u8(buf, cap, off, MQTT_PROP_MAXIMUM_QOS, (uint8_t)lim->max_qos);
	/* The client learns the interval the broker uses when it is not the
	 * one asked (MQTT 5, 3.2.2.3.2); Mosquitto never cuts it, so this has
	 * no place in its order: last but enhanced authentication's. */
	if (x->expiry_changed)
		rc |= mqtt_props_put_u32(buf, cap, off, MQTT_PROP_SESSION_EXPIRY, x->expiry);
	if (x->auth_method.ptr) /* [MQTT-4.12.0-5] */
		rc |= mqtt_props_put_str(buf, cap, off, MQTT_PROP_AUTH_METHOD, x->auth_method);
	if (x->auth_data.len)
		rc |= mqtt_props_put_str(buf, cap, off, MQTT_PROP_AUTH_DATA, x->auth_data);
	return rc ? WISP_EINVAL : 0;
}

static int send_connack(struct broker *b, struct conn *c, bool session_present, const struct connack_extra *x)
{
	uint8_t buf[800], props[768]; /* room for Authentication Data (AUTH_METHOD_DATA_MAX) */
	/* [MQTT-3.2.2-1] 3.1 has no session present flag: the byte is reserved. */
	struct mqtt_connack ack = {.session_present = session_present && c->version != MQTT_PROTO_V31,
				   .code = MQTT_CONNACK_ACCEPTED};
	if (c->version == MQTT_PROTO_V5) {
		size_t off = 0;
		if (connack_props(&b->cfg->limits, x, props, sizeof props, &off) != 0)
			return WISP_EINVAL;
		ack.props.raw = (struct mqtt_str){props, off};
	}
	ssize_t n = mqtt_encode_connack(buf, sizeof buf, c->version, &ack);
	if (n < 0)
		return WISP_EINVAL;
	return conn_send_bytes(c, buf, (size_t)n);
}

/* The Session Expiry Interval granted: the client's, under
 * limits.max_session_expiry when that is set (a 3.1.1 persistent session
 * asks "never"). */
static uint32_t granted_expiry(const struct config_limits *lim, uint32_t asked)
{
	return lim->max_session_expiry && asked > lim->max_session_expiry ? lim->max_session_expiry : asked;
}

static bool same_user(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* A refusal: dispatch answers it with the reason's CONNACK code (reason.h). */
static int refuse(enum reason *why, enum reason r)
{
	*why = r;
	return WISP_EPROTO;
}

/* Assigned ids are unique for the broker's lifetime and cannot collide
 * with ids clients choose in practice; "auto-" mirrors mosquitto's prefix. */
static size_t assign_id(struct broker *b, char *buf, size_t len)
{
	int n = snprintf(buf, len, "auto-%08llx-%llu", (unsigned long long)(uintptr_t)b & 0xffffffffu,
			 (unsigned long long)++b->id_seq);
	return n > 0 ? (size_t)n : 0;
}

/* The ACL client for this user and client id (NULL without an ACL). */
static int make_acl_client(struct broker *b, const char *username, const char *id, size_t id_len,
			   struct acl_client **out)
{
	*out = NULL;
	if (!b->auth.acl)
		return 0;
	char *cid = wisp_strndup(id, id_len); /* the ACL wants C strings */
	if (!cid)
		return WISP_ENOMEM;
	int rc = acl_client_new(b->auth.acl, username, cid, out);
	wisp_free(cid);
	return rc;
}

static int make_will(struct broker *b, struct conn *c, const struct mqtt_connect *p,
		     const struct acl_client *acl, enum reason *why)
{
	if (!p->has_will)
		return 0;
	const char *topic = (const char *)p->will_topic.ptr;
	if (!topic_name_valid(topic, p->will_topic.len)) {
		return refuse(why, REASON_WILL_TOPIC_INVALID); /* [MQTT-3.1.3-10] a topic name, no wildcards */
	}
	/* A will is routed like a PUBLISH, so the same bounds: refused now
	 * rather than dropped unseen when it fires. */
	enum topic_bound bound = broker_topic_bound(b, topic, p->will_topic.len);
	if (bound != TOPIC_WITHIN_LIMITS) {
		b->stats.topics_refused++;
		return refuse(why, bound == TOPIC_TOO_LONG ? REASON_WILL_TOPIC_TOO_LONG : REASON_WILL_TOPIC_TOO_DEEP);
	}
	/* Checked now, as Mosquitto 2 does, so a client learns at CONNECT that
	 * its will could never be published. */
	if (acl && !acl_client_check(acl, topic, p->will_topic.len, ACL_WRITE))
		return refuse(why, REASON_WILL_NOT_AUTHORIZED);
	if (!broker_sys_write_allowed(acl, topic, p->will_topic.len))
		return refuse(why, REASON_WILL_SYS);
	/* Checked now rather than when it fires, as a PUBLISH's is (MQTT 5
	 * section 3.1.3.2.3: the Server may answer 0x99). */
	if ((p->will_props.present & MQTT_PROP_BIT(MQTT_PROP_PAYLOAD_FORMAT)) && p->will_props.payload_format == 1 &&
	    !mqtt_utf8_valid(p->will_payload.ptr, p->will_payload.len))
		return refuse(why, REASON_WILL_PAYLOAD_FORMAT_INVALID);
	/* The will keeps its properties as the CONNECT gave them but the Will
	 * Delay Interval: its Message Expiry Interval starts when it is
	 * published (broker_publish_will). */
	const uint64_t delay = MQTT_PROP_BIT(MQTT_PROP_WILL_DELAY);
	struct msg_spec spec = {
		.topic = topic,
		.topic_len = p->will_topic.len,
		.props_len = p->will_props.present ? mqtt_props_filter(&p->will_props, delay, NULL) : 0,
		.payload = p->will_payload.ptr,
		.payload_len = p->will_payload.len,
		.qos = p->will_qos,
		.retain = p->will_retain,
	};
	struct conn_rare *r = conn_rare(c);
	struct msg *will = r ? msg_create(&spec) : NULL;
	if (!will) {
		conn_rare_trim(c);
		*why = REASON_NO_MEMORY;
		return WISP_ENOMEM;
	}
	r->will = will;
	if (spec.props_len)
		mqtt_props_filter(&p->will_props, delay, msg_props_mut(will));
	(void)b;
	return 0;
}

int handle_connect(struct broker *b, struct conn *c, const struct mqtt_connect *p, enum reason *why)
{
	if (c->state != CONN_AWAIT_CONNECT) {
		return refuse(why, REASON_SECOND_CONNECT); /* [MQTT-3.1.0-2] */
	}
	c->version = p->version;
	const struct config_limits *lim = &b->cfg->limits;
	bool v5 = p->version == MQTT_PROTO_V5;
	/* v5: the session outlives the connection only with a Session Expiry
	 * Interval [MQTT-3.1.2-23] (absent is 0); 3.1.1: clean session 0. */
	uint32_t expiry = v5 ? p->props.session_expiry : (p->clean_start ? 0 : SESS_EXPIRY_NEVER);
	struct connack_extra extra = {0};
	if (v5 && granted_expiry(lim, expiry) != expiry) {
		extra.expiry_changed = true;
		extra.expiry = granted_expiry(lim, expiry);
	}
	expiry = granted_expiry(lim, expiry);
	bool persistent = expiry != 0;

	/* Control characters (MQTT-1.5.4 lets us refuse them; Mosquitto does):
	 * the connection is closed, no CONNACK is due for malformed input. */
	if (mqtt_utf8_has_control(p->client_id.ptr, p->client_id.len) ||
	    (p->has_username && mqtt_utf8_has_control(p->username.ptr, p->username.len)) ||
	    (p->has_will && mqtt_utf8_has_control(p->will_topic.ptr, p->will_topic.len)))
		return refuse(why, REASON_CONTROL_CHARACTER);
	char idbuf[64];
	const char *id = (const char *)p->client_id.ptr;
	size_t id_len = p->client_id.len;
	if (id_len == 0) {
		/* 3.1.1: an empty id needs clean session [MQTT-3.1.3-7][MQTT-3.1.3-8];
		 * 3.1 needs an id. v5 dropped that condition: the assigned id is
		 * used as if the client had sent it, whatever Clean Start says
		 * [MQTT-3.1.3-6][MQTT-3.1.3-7] (Paho's client_test5 and Mosquitto). */
		if ((!p->clean_start && !v5) || p->version == MQTT_PROTO_V31)
			return refuse(why, REASON_CLIENT_ID_REJECTED);
		id_len = assign_id(b, idbuf, sizeof idbuf);
		id = idbuf;
		if (v5) {
			extra.assigned_id = idbuf;
			extra.assigned_len = id_len;
		}
	}
	/* 3.1 limits client ids to 23 characters (the 3.1 specification, 3.1);
	 * 3.1.1 lifted it [MQTT-3.1.3-5]. */
	if (p->version == MQTT_PROTO_V31 && id_len > 23)
		return refuse(why, REASON_CLIENT_ID_REJECTED);
	/* "$bridge/<name>" is a bridge's local session (bridge/): a client
	 * taking it over would read what waits for the remote [MQTT-3.1.3-9]. */
	if (id_len >= 8 && memcmp(id, "$bridge/", 8) == 0)
		return refuse(why, REASON_CLIENT_ID_REJECTED);
	uint16_t keepalive = p->keepalive;
	if (lim->max_keepalive && (p->keepalive > lim->max_keepalive || (v5 && p->keepalive == 0))) {
		/* v5: the server's keep alive replaces the client's
		 * [MQTT-3.2.2-21]; 3.1.1 has no way to say so, and keep alive 0
		 * is accepted there. */
		if (!v5)
			return refuse(why, REASON_KEEPALIVE_TOO_LONG);
		keepalive = lim->max_keepalive;
		extra.server_keepalive = keepalive;
	}
	if (p->has_will && p->will_qos > lim->max_qos)
		return refuse(why, REASON_WILL_QOS_NOT_SUPPORTED); /* [MQTT-3.2.2-12] */
	if (p->has_will && p->will_retain && !lim->retain_available)
		return refuse(why, REASON_WILL_RETAIN_NOT_SUPPORTED); /* [MQTT-3.2.2-13] */

	char *username = NULL;
	bool enhanced = v5 && (p->props.present & MQTT_PROP_BIT(MQTT_PROP_AUTH_METHOD));
	if (enhanced) {
		bool pending;
		int rc = enhanced_auth_connect(b, c, p, &username, &extra.auth_data, &pending, why);
		if (rc != 0 || pending)
			return rc; /* refused, or the CONNECT is answered after the exchange */
		extra.auth_method = p->props.auth_method;
	} else switch (auth_connect(b, c, p, &username)) {
	case AUTH_OK:
		break;
	case AUTH_PENDING:
		return WISP_EAGAIN;
	case AUTH_BAD_CREDENTIALS:
		return refuse(why, REASON_BAD_CREDENTIALS);
	case AUTH_NOT_AUTHORIZED:
		return refuse(why, REASON_NOT_AUTHORIZED);
	case AUTH_UNAVAILABLE:
		return refuse(why, REASON_AUTH_BUSY);
	}
	/* Authorisation (3.1.4 step 3) comes before the takeover of step 4
	 * [MQTT-3.1.4-2], so a refused CONNECT leaves the owner connected. */
	int rc;
	const struct session *held = sess_find(&b->sessions, id, id_len);
	if (held && held->owned && !same_user(held->username, username)) {
		log_limited("client id of another user", LOG_NOTICE, "auth",
			    "%s: client id '%.*s' refused to %s%s%s: its session belongs to %s%s%s",
			    conn_peer(c), (int)id_len, id, username ? "user '" : "",
			    username ? username : "an anonymous client", username ? "'" : "", held->username ? "user '" : "",
			    held->username ? held->username : "an anonymous client", held->username ? "'" : "");
		wisp_free(username);
		return refuse(why, REASON_TAKEOVER_REFUSED);
	}
	/* A session that lives at another node of a cluster comes here first
	 * (cluster/handover.h), and one restored here waits for the other
	 * nodes' word at start; an assigned id or an AUTH exchange (which a
	 * second run of this CONNECT would start again) does not wait. */
	if (!p->clean_start && id != idbuf && !enhanced && b->on_resume_session) {
		rc = b->on_resume_session(b->client_connected_ctx, c, id, id_len, username);
		if (rc != 0) {
			wisp_free(username);
			return rc == WISP_EAGAIN ? rc : refuse(why, REASON_TAKEOVER_REFUSED);
		}
	}
	/* A persistent session is a promise the store cannot keep right now;
	 * clean sessions never touch it and are still served. */
	if (persistent && persist_refuses_durable(b)) {
		wisp_free(username);
		b->persist.refused++;
		return refuse(why, REASON_STORE_REFUSED_SESSION);
	}
	struct acl_client *acl = NULL;
	if (make_acl_client(b, username, id, id_len, &acl) != 0) {
		wisp_free(username);
		return refuse(why, REASON_NO_MEMORY);
	}
	rc = make_will(b, c, p, acl, why);
	if (rc != 0) {
		acl_client_free(acl);
		wisp_free(username);
		return rc;
	}

	struct session *s = sess_find(&b->sessions, id, id_len);
	if (s && s->conn) {
		/* [MQTT-3.1.4-2] the existing connection of this id is closed. */
		broker_drop(b, s->conn, REASON_SESSION_TAKEN_OVER, NULL);
		s = sess_find(&b->sessions, id, id_len); /* a clean one is gone now */
	}
	bool present = false;
	if (s && p->clean_start) {
		session_v5_end(b, s); /* a delayed will goes out as the session ends */
		SESS_OBSERVE(&b->observer, session_del, s); /* [MQTT-3.1.2-6] the stored session ends */
		sess_destroy(&b->sessions, b->subs, s);
		s = NULL;
	}
	if (s) {
		present = true; /* [MQTT-3.2.2-2] */
		if (!persistent)
			SESS_OBSERVE(&b->observer, session_del, s); /* v5 expiry 0: ends with this connection */
		s->clean = !persistent;
	} else {
		s = sess_create(&b->sessions, id, id_len, !persistent);
		if (!s) {
			acl_client_free(acl);
			wisp_free(username);
			return refuse(why, REASON_NO_MEMORY);
		}
	}
	/* v5 state only where it is needed: a v5 client, or a bounded 3.1.1
	 * persistent session (an expiry timer). */
	if (v5 || (persistent && expiry != SESS_EXPIRY_NEVER)) {
		struct sess_v5 *v = session_v5_get(b, s);
		if (!v) {
			acl_client_free(acl);
			wisp_free(username);
			if (!present)
				sess_destroy(&b->sessions, b->subs, s);
			return refuse(why, REASON_NO_MEMORY);
		}
		session_v5_online(b, s);
		v->expiry = expiry;
		v->will_delay = p->has_will && v5 ? p->will_props.will_delay : 0;
		/* What this connection lets Wisp send (session/delivery.c). */
		v->send_max = v5 && (p->props.present & MQTT_PROP_BIT(MQTT_PROP_RECEIVE_MAXIMUM))
				      ? p->props.receive_maximum : 0;
		v->packet_max = v5 && (p->props.present & MQTT_PROP_BIT(MQTT_PROP_MAXIMUM_PACKET_SIZE))
					? p->props.maximum_packet_size : 0;
		/* Outbound aliases: what the client accepts [MQTT-3.3.2-9], up to
		 * limits.max_topic_alias. */
		uint16_t out_max = v5 && (p->props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS_MAXIMUM))
					   ? p->props.topic_alias_maximum : 0;
		v->out_alias_max = out_max < b->cfg->limits.max_topic_alias ? out_max : b->cfg->limits.max_topic_alias;
		if (!v5)
			v->alias_max = 0;
	} else if (s->v5) {
		session_v5_online(b, s);
		session_v5_free(s); /* a 3.1.1 client resumed a v5 session */
	}
	/* The session now acts for whoever proved this connection. */
	wisp_free(s->username);
	s->username = username;
	acl_client_free(s->acl);
	s->acl = acl;
	s->owned = true;
	if (present) {
		broker_reclassify_subs(b, s);
		auth_recheck_messages(b, s); /* before anything is re-sent */
	}
	s->conn = c;
	c->sess = s;
	SESS_OBSERVE(&b->observer, session_put, s);
	if (v5 && persistent && conn_will(c))
		SESS_OBSERVE(&b->observer, will_set, s, conn_will(c)); /* survives kill -9 (docs/persistence.md) */
	conn_set_keepalive(c, keepalive);
	c->state = CONN_ACTIVE;
	b->stats.clients_total++;
	send_connack(b, c, present, &extra);
	if (b->on_client_connected)
		b->on_client_connected(b->client_connected_ctx, s, p->clean_start, id == idbuf);
	if (present) {
		delivery_resume(s, &b->dlim); /* [MQTT-4.4.0-1] */
		route_share_member_online(b, s, NULL);
	}
	if (!conn_keepalive(c))
		loop_timer_stop(b->loop, &c->timer); /* keepalive 0: no limit [MQTT-3.1.2-23] */
	log_limited("client connected", LOG_NOTICE, "conn", "client %s connected from %s on %s (p%u, c%u, k%u%s%s%s)",
		    s->client_id, conn_peer(c), server_listener_of(c)->net.name, p->version, p->clean_start ? 1u : 0u,
		    p->keepalive, s->username ? ", u'" : "", s->username ? s->username : "", s->username ? "'" : "");
	if (present)
		log_msg(LOG_INFO, "conn", "client %s resumed its session (%u in flight, %u queued)", s->client_id,
			(unsigned)sess_inflight_count(s), (unsigned)sess_queued_count(s));
	enhanced_auth_forget(c); /* the CONNACK carried its final data */
	return 0;
}
