/*
 * Test-only helpers shared by tests/unit/test_codec.c and fuzz_codec.c:
 * encode any decoded struct mqtt_pkt with its matching encoder, and compare
 * two decoded packets field by field (string views by content, v5 property
 * blocks by their raw bytes plus every parsed field).
 *
 * Header-only with static inline functions so each test program compiles it
 * in without a library; not part of the broker.
 */
#ifndef WISP_TESTS_CODEC_ROUNDTRIP_H
#define WISP_TESTS_CODEC_ROUNDTRIP_H

#include <stdlib.h>
#include <string.h>

#include "codec.h"

static inline bool rt_str_eq(struct mqtt_str a, struct mqtt_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static inline bool rt_props_eq(const struct mqtt_props *a, const struct mqtt_props *b)
{
	return a->present == b->present && rt_str_eq(a->raw, b->raw) &&
	       a->payload_format == b->payload_format && a->message_expiry == b->message_expiry &&
	       rt_str_eq(a->content_type, b->content_type) &&
	       rt_str_eq(a->response_topic, b->response_topic) &&
	       rt_str_eq(a->correlation_data, b->correlation_data) &&
	       a->subscription_id == b->subscription_id && a->session_expiry == b->session_expiry &&
	       rt_str_eq(a->assigned_client_id, b->assigned_client_id) &&
	       a->server_keep_alive == b->server_keep_alive &&
	       rt_str_eq(a->auth_method, b->auth_method) && rt_str_eq(a->auth_data, b->auth_data) &&
	       a->request_problem_info == b->request_problem_info && a->will_delay == b->will_delay &&
	       a->request_response_info == b->request_response_info &&
	       rt_str_eq(a->response_info, b->response_info) &&
	       rt_str_eq(a->server_reference, b->server_reference) &&
	       rt_str_eq(a->reason_string, b->reason_string) &&
	       a->receive_maximum == b->receive_maximum &&
	       a->topic_alias_maximum == b->topic_alias_maximum && a->topic_alias == b->topic_alias &&
	       a->maximum_qos == b->maximum_qos && a->retain_available == b->retain_available &&
	       a->maximum_packet_size == b->maximum_packet_size &&
	       a->wildcard_sub_available == b->wildcard_sub_available &&
	       a->sub_id_available == b->sub_id_available &&
	       a->shared_sub_available == b->shared_sub_available &&
	       a->user_property_count == b->user_property_count;
}

static inline bool rt_connect_eq(const struct mqtt_connect *a, const struct mqtt_connect *b)
{
	return a->version == b->version && a->clean_start == b->clean_start &&
	       a->keepalive == b->keepalive && rt_str_eq(a->client_id, b->client_id) &&
	       a->has_will == b->has_will && a->will_qos == b->will_qos &&
	       a->will_retain == b->will_retain && rt_str_eq(a->will_topic, b->will_topic) &&
	       rt_str_eq(a->will_payload, b->will_payload) &&
	       rt_props_eq(&a->will_props, &b->will_props) && a->has_username == b->has_username &&
	       rt_str_eq(a->username, b->username) && a->has_password == b->has_password &&
	       rt_str_eq(a->password, b->password) && rt_props_eq(&a->props, &b->props);
}

/* Equal packets as the application sees them; remaining_len may differ
 * because 5.0 lets a sender omit a zero reason code. */
static inline bool rt_pkt_eq(const struct mqtt_pkt *a, const struct mqtt_pkt *b)
{
	if (a->type != b->type || a->flags != b->flags)
		return false;
	switch (a->type) {
	case MQTT_PKT_CONNECT:
		return rt_connect_eq(&a->u.connect, &b->u.connect);
	case MQTT_PKT_CONNACK:
		return a->u.connack.session_present == b->u.connack.session_present &&
		       a->u.connack.code == b->u.connack.code &&
		       rt_props_eq(&a->u.connack.props, &b->u.connack.props);
	case MQTT_PKT_PUBLISH:
		return a->u.publish.qos == b->u.publish.qos && a->u.publish.dup == b->u.publish.dup &&
		       a->u.publish.retain == b->u.publish.retain &&
		       rt_str_eq(a->u.publish.topic, b->u.publish.topic) &&
		       a->u.publish.packet_id == b->u.publish.packet_id &&
		       rt_str_eq(a->u.publish.payload, b->u.publish.payload) &&
		       rt_props_eq(&a->u.publish.props, &b->u.publish.props);
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBREL:
	case MQTT_PKT_PUBCOMP:
		return a->u.ack.packet_id == b->u.ack.packet_id && a->u.ack.reason == b->u.ack.reason &&
		       rt_props_eq(&a->u.ack.props, &b->u.ack.props);
	case MQTT_PKT_SUBSCRIBE:
	case MQTT_PKT_UNSUBSCRIBE:
		return a->u.subscribe.packet_id == b->u.subscribe.packet_id &&
		       a->u.subscribe.count == b->u.subscribe.count &&
		       rt_str_eq(a->u.subscribe.entries, b->u.subscribe.entries) &&
		       rt_props_eq(&a->u.subscribe.props, &b->u.subscribe.props);
	case MQTT_PKT_SUBACK:
	case MQTT_PKT_UNSUBACK:
		return a->u.suback.packet_id == b->u.suback.packet_id &&
		       rt_str_eq(a->u.suback.codes, b->u.suback.codes) &&
		       rt_props_eq(&a->u.suback.props, &b->u.suback.props);
	case MQTT_PKT_DISCONNECT:
	case MQTT_PKT_AUTH:
		return a->u.reason.reason == b->u.reason.reason &&
		       rt_props_eq(&a->u.reason.props, &b->u.reason.props);
	default:
		return true; /* PINGREQ, PINGRESP: nothing but the type */
	}
}

/* Encodes `p` (as decoded on a connection of level `version`) with the
 * encoder for its type. Allocates only for a SUBSCRIBE's filter array. */
static inline ssize_t rt_encode(uint8_t *buf, size_t cap, uint8_t version, const struct mqtt_pkt *p)
{
	switch (p->type) {
	case MQTT_PKT_CONNECT:
		return mqtt_encode_connect(buf, cap, &p->u.connect);
	case MQTT_PKT_CONNACK:
		return mqtt_encode_connack(buf, cap, version, &p->u.connack);
	case MQTT_PKT_PUBLISH:
		return mqtt_encode_publish(buf, cap, version, &p->u.publish);
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBREL:
	case MQTT_PKT_PUBCOMP:
		return mqtt_encode_ack(buf, cap, version, p->type, &p->u.ack);
	case MQTT_PKT_SUBSCRIBE:
	case MQTT_PKT_UNSUBSCRIBE: {
		bool is_sub = p->type == MQTT_PKT_SUBSCRIBE;
		size_t n = p->u.subscribe.count;
		struct mqtt_str *filters = calloc(n ? n : 1, sizeof(*filters));
		uint8_t *opts = calloc(n ? n : 1, 1);
		struct mqtt_sub_iter it;
		size_t i = 0;
		ssize_t r;

		if (filters == NULL || opts == NULL) {
			free(filters);
			free(opts);
			return MQTT_ENOSPC;
		}
		mqtt_sub_iter_init(&p->u.subscribe, is_sub, &it);
		while (i < n && mqtt_sub_next(&it, &filters[i], &opts[i]) == 1)
			i++;
		if (is_sub)
			r = mqtt_encode_subscribe(buf, cap, version, p->u.subscribe.packet_id,
						  &p->u.subscribe.props, filters, opts, i);
		else
			r = mqtt_encode_unsubscribe(buf, cap, version, p->u.subscribe.packet_id,
						    &p->u.subscribe.props, filters, i);
		free(filters);
		free(opts);
		return r;
	}
	case MQTT_PKT_SUBACK:
	case MQTT_PKT_UNSUBACK:
		return mqtt_encode_suback(buf, cap, version, p->type, &p->u.suback);
	case MQTT_PKT_PINGREQ:
	case MQTT_PKT_PINGRESP:
		return mqtt_encode_empty(buf, cap, p->type);
	case MQTT_PKT_DISCONNECT:
	case MQTT_PKT_AUTH:
		return mqtt_encode_reason(buf, cap, version, p->type, &p->u.reason);
	default:
		return MQTT_EINVAL;
	}
}

#endif
