#include "enhanced_auth.h"

#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "err.h"
#include "log.h"
#include "method.h"
#include "passwd.h"

/* AUTH reason codes (MQTT 5, 3.15.2.1). */
#define MQTT_RC_CONTINUE_AUTH 0x18u
#define MQTT_RC_REAUTHENTICATE 0x19u

struct enhanced_auth {
	size_t *count;          /* auth_state.exchanges, which this one is in */
	struct auth_exchange *x;
	char *user;             /* proven, until handle_connect takes it */
	size_t final_len;
	uint8_t final[AUTH_METHOD_DATA_MAX]; /* for the CONNACK */
	size_t connect_len;
	uint8_t connect[];      /* the CONNECT being answered, re-encoded */
};

/* Nonce text for SCRAM: base64's alphabet, which has no ','. */
static int make_nonce(char *out, size_t len)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint8_t raw[64];
	if (len > sizeof raw)
		return WISP_EINVAL;
	int rc = passwd_random(raw, len);
	if (rc)
		return rc;
	for (size_t i = 0; i < len; i++)
		out[i] = alphabet[raw[i] & 63u];
	return 0;
}

static int refuse(enum reason *why, enum reason r)
{
	*why = r;
	return WISP_EPROTO;
}

void enhanced_auth_forget(struct conn *c)
{
	struct enhanced_auth *ea = conn_enhanced_auth(c);
	if (!ea)
		return;
	c->rare->enhanced_auth = NULL;
	conn_rare_trim(c);
	--*ea->count;
	auth_exchange_free(ea->x);
	wisp_free(ea->user);
	memset(ea->connect, 0, ea->connect_len); /* it may hold a password */
	wisp_free(ea);
}

/* An AUTH 0x18 with the connection's method and `data` [MQTT-4.12.0-2][MQTT-4.12.0-5]. */
static int send_continue(struct conn *c, struct mqtt_str method, const uint8_t *data, size_t len)
{
	uint8_t props[AUTH_METHOD_DATA_MAX + 128], buf[AUTH_METHOD_DATA_MAX + 160];
	size_t off = 0;
	if (mqtt_props_put_str(props, sizeof props, &off, MQTT_PROP_AUTH_METHOD, method) != 0 ||
	    mqtt_props_put_str(props, sizeof props, &off, MQTT_PROP_AUTH_DATA, (struct mqtt_str){data, len}) != 0)
		return WISP_EINVAL;
	struct mqtt_reason_pkt a = {.reason = MQTT_RC_CONTINUE_AUTH};
	a.props.raw = (struct mqtt_str){props, off};
	ssize_t n = mqtt_encode_reason(buf, sizeof buf, MQTT_PROTO_V5, MQTT_PKT_AUTH, &a);
	return n < 0 ? WISP_EINVAL : conn_send_bytes(c, buf, (size_t)n);
}

static int failed(struct broker *b, struct conn *c, const struct auth_out *out, enum reason *why)
{
	b->auth.failed_logins++;
	log_limited("login refused", LOG_NOTICE, "auth", "%s: enhanced authentication failed: %s", conn_peer(c),
		    out->reason == AUTH_FAIL_BAD_CREDENTIALS ? "bad user name or password" : "not authorised");
	return refuse(why, out->reason == AUTH_FAIL_BAD_CREDENTIALS ? REASON_BAD_CREDENTIALS : REASON_NOT_AUTHORIZED);
}

/* The exchange succeeded: keep what the CONNACK needs. */
static int succeeded(struct enhanced_auth *ea, const struct auth_out *out, enum reason *why)
{
	ea->user = wisp_strndup(out->user, out->user_len);
	if (!ea->user)
		return refuse(why, REASON_NO_MEMORY);
	memcpy(ea->final, out->data, out->len);
	ea->final_len = out->len;
	return 0;
}

static size_t connect_size(const struct mqtt_connect *p)
{
	size_t n = 16 + 2 + p->client_id.len + 4 + p->props.raw.len;
	if (p->has_will)
		n += 4 + p->will_props.raw.len + 2 + p->will_topic.len + 2 + p->will_payload.len;
	if (p->has_username)
		n += 2 + p->username.len;
	if (p->has_password)
		n += 2 + p->password.len;
	return n;
}

int enhanced_auth_connect(struct broker *b, struct conn *c, const struct mqtt_connect *p, char **username,
			  struct mqtt_str *final, bool *pending, enum reason *why)
{
	*pending = false;
	struct enhanced_auth *ea = conn_enhanced_auth(c);
	if (ea && ea->user) {
		/* handle_auth answers the kept CONNECT: the exchange is done. */
		*username = ea->user;
		ea->user = NULL;
		*final = (struct mqtt_str){ea->final, ea->final_len};
		return 0;
	}
	if (ea)
		return refuse(why, REASON_SECOND_CONNECT); /* [MQTT-3.1.0-2] */
	const struct mqtt_str *name = &p->props.auth_method;
	/* Methods check users against the password file: none without one. */
	const struct auth_method *m =
		b->auth.passwd ? auth_method_find((const char *)name->ptr, name->len) : NULL;
	if (!m) {
		log_limited("unknown authentication method", LOG_NOTICE, "auth",
			    "%s: authentication method '%.*s' is not offered", conn_peer(c), (int)name->len,
			    (const char *)name->ptr);
		return refuse(why, REASON_BAD_AUTH_METHOD); /* [MQTT-4.12.0-1] */
	}
	struct auth_state *a = &b->auth;
	if (a->exchanges < b->cfg->auth.max_exchanges / 2)
		a->exchanges_over_logged = false; /* the episode is over */
	if (a->exchanges >= b->cfg->auth.max_exchanges) {
		a->exchanges_refused++;
		if (!a->exchanges_over_logged) {
			a->exchanges_over_logged = true;
			log_msg(LOG_WARNING, "auth",
				"%s: login refused: %zu enhanced-authentication exchanges under way (auth.max_exchanges); "
				"further refusals are counted, not logged, until half of them are done",
				conn_peer(c), a->exchanges);
		}
		return refuse(why, REASON_AUTH_BUSY);
	}
	size_t cap = connect_size(p);
	struct conn_rare *rare = conn_rare(c);
	ea = rare ? wisp_malloc(sizeof *ea + cap) : NULL;
	if (!ea) {
		conn_rare_trim(c);
		return refuse(why, REASON_NO_MEMORY);
	}
	memset(ea, 0, sizeof *ea);
	ssize_t n = mqtt_encode_connect(ea->connect, cap, p);
	if (n < 0) {
		wisp_free(ea);
		conn_rare_trim(c);
		return refuse(why, REASON_NO_MEMORY);
	}
	ea->connect_len = (size_t)n;
	ea->count = &a->exchanges;
	a->exchanges++;
	rare->enhanced_auth = ea;
	c->auth_method = true; /* freed by auth_forget_conn from now on */
	struct auth_method_env env = {.db = b->auth.passwd->db, .nonce = make_nonce};
	struct auth_in in = {.data = p->props.auth_data.ptr, .len = p->props.auth_data.len};
	if (p->has_username) {
		in.user = (const char *)p->username.ptr;
		in.user_len = p->username.len;
	}
	struct auth_out out;
	enum auth_step r;
	if (auth_exchange_start(m, &env, &in, &out, &ea->x, &r) != 0)
		return refuse(why, REASON_NO_MEMORY);
	if (r == AUTH_STEP_FAILURE)
		return failed(b, c, &out, why);
	if (r == AUTH_STEP_CONTINUE) {
		if (send_continue(c, *name, out.data, out.len) != 0)
			return refuse(why, REASON_NO_MEMORY);
		*pending = true;
		return 0;
	}
	int rc = succeeded(ea, &out, why);
	if (rc)
		return rc;
	return enhanced_auth_connect(b, c, p, username, final, pending, why);
}

int handle_auth(struct broker *b, struct conn *c, const struct mqtt_reason_pkt *p, enum reason *why)
{
	struct enhanced_auth *ea = conn_enhanced_auth(c);
	if (c->state == CONN_ACTIVE) {
		/* Re-authentication is not offered: a failed one [MQTT-4.12.1-2].
		 * Any other AUTH after CONNACK is out of turn; without a method in
		 * CONNECT none may be sent at all [MQTT-4.12.0-6]. */
		if (c->auth_method && p->reason == MQTT_RC_REAUTHENTICATE)
			return refuse(why, REASON_REAUTH_REFUSED);
		return refuse(why, REASON_AUTH_UNEXPECTED);
	}
	if (!ea || !ea->x)
		return refuse(why, REASON_AUTH_UNEXPECTED); /* [MQTT-4.12.0-6] */
	/* The client answers with 0x18 [MQTT-4.12.0-3], naming the CONNECT's
	 * method [MQTT-4.12.0-5]. */
	const struct auth_method *m = ea->x->method;
	if (p->reason != MQTT_RC_CONTINUE_AUTH || !(p->props.present & MQTT_PROP_BIT(MQTT_PROP_AUTH_METHOD)) ||
	    p->props.auth_method.len != strlen(m->name) ||
	    memcmp(p->props.auth_method.ptr, m->name, p->props.auth_method.len) != 0)
		return refuse(why, REASON_AUTH_UNEXPECTED);
	struct auth_method_env env = {.db = b->auth.passwd ? b->auth.passwd->db : NULL, .nonce = make_nonce};
	struct auth_out out;
	enum auth_step r = env.db ? auth_exchange_step(ea->x, &env, p->props.auth_data.ptr, p->props.auth_data.len, &out)
				  : AUTH_STEP_FAILURE;
	if (!env.db)
		out.reason = AUTH_FAIL_NOT_AUTHORIZED; /* the password file went away in a reload */
	if (r == AUTH_STEP_FAILURE)
		return failed(b, c, &out, why);
	if (r == AUTH_STEP_CONTINUE)
		return send_continue(c, p->props.auth_method, out.data, out.len) == 0 ? 0
										    : refuse(why, REASON_NO_MEMORY);
	int rc = succeeded(ea, &out, why);
	if (rc)
		return rc;
	/* Answer the CONNECT kept since the exchange began. */
	struct mqtt_codec_opts opts = {0};
	struct mqtt_pkt kept;
	if (mqtt_decode(ea->connect, ea->connect_len, &opts, &kept) != (ssize_t)ea->connect_len)
		return refuse(why, REASON_PROTOCOL_ERROR);
	return handle_connect(b, c, &kept.u.connect, why);
}
