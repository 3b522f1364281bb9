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
#include "err.h"
#include "log.h"

static int send_connack(struct conn *c, bool session_present, uint8_t code)
{
	uint8_t buf[8];
	struct mqtt_connack ack = {.session_present = session_present, .code = code};
	ssize_t n = mqtt_encode_connack(buf, sizeof buf, c->version, &ack);
	if (n < 0)
		return WISP_EINVAL;
	return conn_send_bytes(c, buf, (size_t)n);
}

static bool same_user(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int refuse(struct broker *b, struct conn *c, uint8_t code, const char **why, const char *reason)
{
	send_connack(c, false, code);
	b->stats.refused++;
	*why = reason;
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
		     const struct acl_client *acl, const char **why)
{
	if (!p->has_will)
		return 0;
	const char *topic = (const char *)p->will_topic.ptr;
	if (!topic_name_valid(topic, p->will_topic.len)) {
		*why = "invalid will topic"; /* [MQTT-3.1.3-10] a topic name, no wildcards */
		return WISP_EPROTO;
	}
	/* A will is routed like a PUBLISH, so the same bounds: refused now
	 * rather than dropped unseen when it fires. */
	enum topic_bound bound = broker_topic_bound(b, topic, p->will_topic.len);
	if (bound != TOPIC_WITHIN_LIMITS) {
		b->stats.topics_refused++;
		return refuse(b, c, MQTT_CONNACK_NOT_AUTHORIZED, why,
			      bound == TOPIC_TOO_LONG ? "will topic longer than limits.max_topic_length"
						      : "will topic has more levels than limits.max_topic_levels");
	}
	/* Checked now, as Mosquitto 2 does, so a client learns at CONNECT that
	 * its will could never be published. */
	if (acl && !acl_client_check(acl, topic, p->will_topic.len, ACL_WRITE))
		return refuse(b, c, MQTT_CONNACK_NOT_AUTHORIZED, why, "will topic not authorised by the ACL");
	if (!broker_sys_write_allowed(acl, topic, p->will_topic.len))
		return refuse(b, c, MQTT_CONNACK_NOT_AUTHORIZED, why, "will topic under $SYS/");
	c->will = msg_new(topic, p->will_topic.len, p->will_payload.ptr, p->will_payload.len, p->will_qos,
			  p->will_retain);
	if (!c->will) {
		*why = "out of memory for the will";
		return WISP_ENOMEM;
	}
	(void)b;
	return 0;
}

int handle_connect(struct broker *b, struct conn *c, const struct mqtt_connect *p, const char **why)
{
	if (c->state != CONN_AWAIT_CONNECT) {
		*why = "second CONNECT"; /* [MQTT-3.1.0-2] */
		return WISP_EPROTO;
	}
	c->version = p->version;
	const struct config_limits *lim = &b->cfg->limits;

	char idbuf[64];
	const char *id = (const char *)p->client_id.ptr;
	size_t id_len = p->client_id.len;
	if (id_len == 0) {
		/* [MQTT-3.1.3-7][MQTT-3.1.3-8]: an empty id needs clean session; 3.1 needs an id. */
		if (!p->clean_start || p->version == MQTT_PROTO_V31)
			return refuse(b, c, MQTT_CONNACK_ID_REJECTED, why, "empty client id refused");
		id_len = assign_id(b, idbuf, sizeof idbuf);
		id = idbuf;
	}
	if (lim->max_keepalive && p->keepalive > lim->max_keepalive)
		return refuse(b, c, MQTT_CONNACK_ID_REJECTED, why, "keepalive above max_keepalive");

	char *username = NULL;
	switch (auth_connect(b, c, p, &username)) {
	case AUTH_OK:
		break;
	case AUTH_PENDING:
		return WISP_EAGAIN;
	case AUTH_BAD_CREDENTIALS:
		return refuse(b, c, MQTT_CONNACK_BAD_CREDENTIALS, why, "bad user name or password");
	case AUTH_NOT_AUTHORIZED:
		return refuse(b, c, MQTT_CONNACK_NOT_AUTHORIZED, why, "not authorised");
	case AUTH_UNAVAILABLE:
		return refuse(b, c, MQTT_CONNACK_SERVER_UNAVAILABLE, why, "server busy verifying other logins");
	}
	/* Authorisation (3.1.4 step 3) comes before the takeover of step 4
	 * [MQTT-3.1.4-2], so a refused CONNECT leaves the owner connected. */
	const struct session *held = sess_find(&b->sessions, id, id_len);
	if (held && held->owned && !same_user(held->username, username)) {
		b->stats.takeover_refused++;
		log_msg(LOG_NOTICE, "auth", "%s: client id '%.*s' refused to %s%s%s: its session belongs to %s%s%s",
			conn_peer(c), (int)id_len, id, username ? "user '" : "", username ? username : "an anonymous client",
			username ? "'" : "", held->username ? "user '" : "", held->username ? held->username : "an anonymous client",
			held->username ? "'" : "");
		wisp_free(username);
		return refuse(b, c, MQTT_CONNACK_NOT_AUTHORIZED, why, "client id belongs to another user's session");
	}
	/* A persistent session is a promise the store cannot keep right now;
	 * clean sessions never touch it and are still served. */
	if (!p->clean_start && persist_refuses_durable(b)) {
		wisp_free(username);
		b->persist.refused++;
		return refuse(b, c, MQTT_CONNACK_SERVER_UNAVAILABLE, why,
			      "persistent session refused: the store cannot write (see $SYS/broker/store/state)");
	}
	struct acl_client *acl = NULL;
	if (make_acl_client(b, username, id, id_len, &acl) != 0) {
		wisp_free(username);
		return refuse(b, c, MQTT_CONNACK_SERVER_UNAVAILABLE, why, "out of memory for the ACL");
	}
	int rc = make_will(b, c, p, acl, why);
	if (rc != 0) {
		acl_client_free(acl);
		wisp_free(username);
		return rc;
	}

	struct session *s = sess_find(&b->sessions, id, id_len);
	if (s && s->conn) {
		/* [MQTT-3.1.4-2] the existing connection of this id is closed. */
		broker_drop(b, s->conn, false, "session taken over by a new connection");
		s = sess_find(&b->sessions, id, id_len); /* a clean one is gone now */
	}
	bool present = false;
	if (s && p->clean_start) {
		SESS_OBSERVE(&b->observer, session_del, s); /* [MQTT-3.1.2-6] the stored session ends */
		sess_destroy(&b->sessions, b->subs, s);
		s = NULL;
	}
	if (s) {
		present = true; /* [MQTT-3.2.2-2] */
		s->clean = false;
	} else {
		s = sess_create(&b->sessions, id, id_len, p->clean_start);
		if (!s) {
			acl_client_free(acl);
			wisp_free(username);
			return refuse(b, c, MQTT_CONNACK_SERVER_UNAVAILABLE, why, "out of memory for the session");
		}
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
	c->keepalive = p->keepalive;
	c->state = CONN_ACTIVE;
	b->stats.clients_total++;
	send_connack(c, present, MQTT_CONNACK_ACCEPTED);
	if (present)
		delivery_resume(s, &b->dlim); /* [MQTT-4.4.0-1] */
	if (!c->keepalive)
		loop_timer_stop(b->loop, &c->timer); /* keepalive 0: no limit [MQTT-3.1.2-23] */
	log_msg(LOG_NOTICE, "conn", "client %s connected from %s on %s (p%u, c%u, k%u%s%s%s)", s->client_id,
		conn_peer(c), ((struct broker_listener *)c->listener)->net.name, p->version, p->clean_start ? 1u : 0u,
		p->keepalive, s->username ? ", u'" : "", s->username ? s->username : "", s->username ? "'" : "");
	if (present)
		log_msg(LOG_INFO, "conn", "client %s resumed its session (%u in flight, %u queued)", s->client_id,
			(unsigned)s->inflight_count, (unsigned)s->queued_count);
	return 0;
}
