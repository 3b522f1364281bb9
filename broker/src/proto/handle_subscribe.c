/*
 * SUBSCRIBE and UNSUBSCRIBE. Each filter is validated on its own: an
 * invalid one gets 0x80 in SUBACK while the others are granted [MQTT-3.9.3].
 * Retained messages matching a new or replaced subscription follow the
 * SUBACK [MQTT-3.3.1-6][MQTT-3.8.4-3], with the retain flag set.
 */
#include "broker.h"

#include <string.h>

#include "alloc.h"
#include "err.h"
#include "log.h"

/* SUBACK codes stay on the stack for ordinary requests. */
#define CODES_ON_STACK 64

struct retained_ctx {
	struct broker *b;
	struct session *s;
	uint8_t qos;
	bool acl_check;
};

static void send_retained(const char *topic, size_t len, void *value, void *ctx)
{
	struct retained_ctx *r = ctx;
	struct msg *m = value;
	if (r->acl_check && !acl_client_check(r->s->acl, topic, len, ACL_READ))
		return;
	broker_deliver(r->b, r->s, m, m->qos < r->qos ? m->qos : r->qos, true);
}

/* The options bit that makes routing ask the ACL per delivered topic, or
 * -1 when the subscription is denied outright. */
static int acl_bits(const struct session *s, const char *filter, size_t len)
{
	if (!s->acl)
		return 0;
	switch (acl_client_subscribe(s->acl, filter, len)) {
	case ACL_SUB_DENY:
		return -1;
	case ACL_SUB_ALL:
		return 0;
	case ACL_SUB_FILTERED:
	case ACL_SUB_NEVER:
		break;
	}
	return SESS_SUBOPT_ACL_CHECK;
}

void broker_reclassify_subs(struct broker *b, struct session *s)
{
	(void)b;
	struct list_node *n;
	for (n = s->subs.next; n != &s->subs; n = n->next) {
		struct sess_sub *sub = container_of(n, struct sess_sub, link);
		int bits = acl_bits(s, sub->filter, sub->filter_len);
		/* A subscription the new rules deny stays (MQTT has no way to tell
		 * the client) but receives nothing: every topic is checked and refused. */
		uint8_t opts = (uint8_t)((tree_sub_options(&sub->handle) & ~SESS_SUBOPT_ACL_CHECK) |
					 (bits != 0 ? SESS_SUBOPT_ACL_CHECK : 0));
		tree_sub_set_options(&sub->handle, opts, tree_sub_id(&sub->handle));
	}
}

static int send_codes(struct conn *c, uint8_t type, uint16_t packet_id, const uint8_t *codes, size_t count)
{
	uint8_t stack[CODES_ON_STACK + 16];
	size_t cap = count + 16;
	uint8_t *buf = cap <= sizeof stack ? stack : wisp_malloc(cap);
	if (!buf)
		return WISP_ENOMEM;
	struct mqtt_suback ack = {.packet_id = packet_id, .codes = {codes, count}};
	ssize_t n = mqtt_encode_suback(buf, cap, c->version, type, &ack);
	int rc = n < 0 ? WISP_EINVAL : conn_send_bytes(c, buf, (size_t)n);
	if (buf != stack)
		wisp_free(buf);
	return rc;
}

int handle_subscribe(struct broker *b, struct conn *c, const struct mqtt_subscribe *p, const char **why)
{
	uint8_t stack[CODES_ON_STACK];
	uint8_t *codes = p->count <= CODES_ON_STACK ? stack : wisp_malloc(p->count);
	if (!codes) {
		*why = "out of memory";
		return WISP_ENOMEM;
	}
	struct session *s = c->sess;
	struct mqtt_sub_iter it;
	struct mqtt_str filter;
	uint8_t options;
	size_t i = 0;
	mqtt_sub_iter_init(p, true, &it);
	while (i < p->count && mqtt_sub_next(&it, &filter, &options)) {
		const char *f = (const char *)filter.ptr;
		uint8_t qos = options & MQTT_SUBOPT_QOS_MASK;
		int rc = WISP_EINVAL;
		const char *verdict = "invalid filter";
		if (topic_filter_valid(f, filter.len)) {
			int bits = acl_bits(s, f, filter.len);
			if (bits < 0) {
				verdict = "denied by the ACL";
			} else {
				rc = sess_subscribe(s, b->subs, f, filter.len, (uint8_t)(options | bits),
						    b->cfg->limits.max_subscriptions);
				if (rc >= 0)
					persist_sub_add(b, s, f, filter.len, options);
				verdict = rc >= 0 ? "granted" : wisp_strerror(rc);
			}
		}
		codes[i++] = rc >= 0 ? qos : MQTT_SUBACK_FAILURE;
		log_msg(LOG_DEBUG, "sub", "%s subscribe '%.*s' qos %u: %s", s->client_id, (int)filter.len, f, qos,
			verdict);
	}
	int rc = send_codes(c, MQTT_PKT_SUBACK, p->packet_id, codes, i);

	/* Retained messages after the SUBACK, for every granted filter. */
	mqtt_sub_iter_init(p, true, &it);
	for (size_t k = 0; rc == 0 && k < i && mqtt_sub_next(&it, &filter, &options); k++) {
		if (codes[k] == MQTT_SUBACK_FAILURE)
			continue;
		struct retained_ctx ctx = {b, s, codes[k],
					   acl_bits(s, (const char *)filter.ptr, filter.len) != 0};
		retained_match(b->retained, (const char *)filter.ptr, filter.len, send_retained, &ctx);
	}
	if (codes != stack)
		wisp_free(codes);
	if (rc != 0)
		*why = "out of memory";
	return rc;
}

int handle_unsubscribe(struct broker *b, struct conn *c, const struct mqtt_subscribe *p, const char **why)
{
	uint8_t stack[CODES_ON_STACK];
	uint8_t *codes = p->count <= CODES_ON_STACK ? stack : wisp_malloc(p->count);
	if (!codes) {
		*why = "out of memory";
		return WISP_ENOMEM;
	}
	struct mqtt_sub_iter it;
	struct mqtt_str filter;
	size_t i = 0;
	mqtt_sub_iter_init(p, false, &it);
	while (i < p->count && mqtt_sub_next(&it, &filter, NULL)) {
		int rc = sess_unsubscribe(c->sess, b->subs, (const char *)filter.ptr, filter.len);
		if (rc == 0)
			persist_sub_del(b, c->sess, (const char *)filter.ptr, filter.len);
		codes[i++] = rc == 0 ? MQTT_RC_SUCCESS : MQTT_RC_NO_SUBSCRIPTION_EXISTED;
	}
	int rc = send_codes(c, MQTT_PKT_UNSUBACK, p->packet_id, codes, i);
	if (codes != stack)
		wisp_free(codes);
	if (rc != 0)
		*why = "out of memory";
	return rc;
}
