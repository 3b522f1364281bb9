/*
 * MQTT packet encoders: one whole packet into the caller's buffer.
 *
 * Every encoder first computes the exact Remaining Length, then checks it
 * against MQTT_MAX_REMAINING_LEN (MQTT_EINVAL) and the whole size against
 * `cap` (MQTT_ENOSPC), and only then writes, so a short buffer is never
 * written past and a packet is either complete or absent. Values the wire
 * format cannot carry (QoS 3, a string longer than 65535 bytes, a zero
 * packet id where one is required, flags the decoder would reject) are
 * MQTT_EINVAL: what we encode our own decoder accepts.
 *
 * v5 property blocks come pre-built in props.raw and are copied as they are.
 * Strings are not re-validated as UTF-8: they come from decoded packets or
 * from the broker's own constants.
 *
 * Pure: no allocation, no globals, no I/O. Thread-safe.
 */
#include "codec_internal.h"

/* Adds `n` to a Remaining Length kept within the protocol maximum. */
static bool grow(size_t *rl, size_t n)
{
	if (n > MQTT_MAX_REMAINING_LEN - *rl)
		return false;
	*rl += n;
	return true;
}

static bool grow_str(size_t *rl, struct mqtt_str s)
{
	return s.len <= UINT16_MAX && grow(rl, 2 + s.len);
}

/* Property length varint plus the block. */
static bool grow_props(size_t *rl, const struct mqtt_props *p)
{
	size_t len = p != NULL ? p->raw.len : 0;

	return len <= MQTT_MAX_REMAINING_LEN && grow(rl, mqtt_varint_size((uint32_t)len) + len);
}

/* A write cursor whose room was checked up front. */
struct wr {
	uint8_t *p;
};

static void w_u8(struct wr *w, uint8_t v)
{
	*w->p++ = v;
}

static void w_u16(struct wr *w, uint16_t v)
{
	put_be16(w->p, v);
	w->p += 2;
}

static void w_bytes(struct wr *w, const uint8_t *p, size_t n)
{
	if (n > 0)
		memcpy(w->p, p, n);
	w->p += n;
}

static void w_str(struct wr *w, struct mqtt_str s)
{
	w_u16(w, (uint16_t)s.len);
	w_bytes(w, s.ptr, s.len);
}

static void w_varint(struct wr *w, size_t v)
{
	w->p += mqtt_varint_encode((uint32_t)v, w->p, MQTT_MAX_FIXED_HEADER);
}

static void w_props(struct wr *w, const struct mqtt_props *p)
{
	if (p == NULL) {
		w_u8(w, 0);
		return;
	}
	w_varint(w, p->raw.len);
	w_bytes(w, p->raw.ptr, p->raw.len);
}

static size_t packet_size(size_t rl)
{
	return 1 + mqtt_varint_size((uint32_t)rl) + rl;
}

/* Writes the fixed header once `rl` is known to fit; NULL with *err set otherwise. */
static bool begin(struct wr *w, uint8_t *buf, size_t cap, uint8_t byte0, size_t rl, ssize_t *err)
{
	if (cap < packet_size(rl)) {
		*err = MQTT_ENOSPC;
		return false;
	}
	w->p = buf;
	w_u8(w, byte0);
	w_varint(w, rl);
	return true;
}

static uint8_t first_byte(uint8_t type, uint8_t flags)
{
	return (uint8_t)((type << 4) | (flags & 0x0F));
}

ssize_t mqtt_encode_connect(uint8_t *buf, size_t cap, const struct mqtt_connect *c)
{
	static const struct mqtt_str name31 = {(const uint8_t *)"MQIsdp", 6};
	static const struct mqtt_str name311 = {(const uint8_t *)"MQTT", 4};
	struct mqtt_str name;
	bool v5 = c->version == MQTT_PROTO_V5;
	size_t rl = 0;
	uint8_t flags = 0;
	ssize_t err = MQTT_EINVAL;
	struct wr w;

	if (c->version == MQTT_PROTO_V31)
		name = name31;
	else if (c->version == MQTT_PROTO_V311 || v5)
		name = name311;
	else
		return MQTT_EINVAL;
	if (c->clean_start)
		flags |= MQTT_CONNECT_CLEAN;
	if (c->has_will) {
		if (c->will_qos > 2)
			return MQTT_EINVAL; /* [MQTT-3.1.2-14] */
		flags |= (uint8_t)(MQTT_CONNECT_WILL | (c->will_qos << 3));
		if (c->will_retain)
			flags |= MQTT_CONNECT_WILL_RETAIN;
	}
	if (c->has_username)
		flags |= MQTT_CONNECT_USERNAME;
	if (c->has_password) {
		if (!v5 && !c->has_username)
			return MQTT_EINVAL; /* [MQTT-3.1.2-22] */
		flags |= MQTT_CONNECT_PASSWORD;
	}

	if (!grow_str(&rl, name) || !grow(&rl, 4) || (v5 && !grow_props(&rl, &c->props)) ||
	    !grow_str(&rl, c->client_id))
		return MQTT_EINVAL;
	if (c->has_will && ((v5 && !grow_props(&rl, &c->will_props)) || !grow_str(&rl, c->will_topic) ||
			    !grow_str(&rl, c->will_payload)))
		return MQTT_EINVAL;
	if ((c->has_username && !grow_str(&rl, c->username)) ||
	    (c->has_password && !grow_str(&rl, c->password)))
		return MQTT_EINVAL;

	if (!begin(&w, buf, cap, first_byte(MQTT_PKT_CONNECT, 0), rl, &err))
		return err;
	w_str(&w, name);
	w_u8(&w, c->version);
	w_u8(&w, flags);
	w_u16(&w, c->keepalive);
	if (v5)
		w_props(&w, &c->props);
	w_str(&w, c->client_id);
	if (c->has_will) {
		if (v5)
			w_props(&w, &c->will_props);
		w_str(&w, c->will_topic);
		w_str(&w, c->will_payload);
	}
	if (c->has_username)
		w_str(&w, c->username);
	if (c->has_password)
		w_str(&w, c->password);
	return w.p - buf;
}

ssize_t mqtt_encode_connack(uint8_t *buf, size_t cap, uint8_t version, const struct mqtt_connack *c)
{
	bool v5 = version == MQTT_PROTO_V5;
	size_t rl = 2;
	ssize_t err = MQTT_EINVAL;
	struct wr w;

	if (v5 && !grow_props(&rl, &c->props))
		return MQTT_EINVAL;
	if (!begin(&w, buf, cap, first_byte(MQTT_PKT_CONNACK, 0), rl, &err))
		return err;
	w_u8(&w, c->session_present ? 1 : 0);
	w_u8(&w, c->code);
	if (v5)
		w_props(&w, &c->props);
	return w.p - buf;
}

/* Checks a PUBLISH and sizes it: *mid is packet id plus v5 properties, *rl the whole body. */
static int publish_layout(uint8_t version, const struct mqtt_publish *p, size_t *rl, size_t *mid)
{
	bool v5 = version == MQTT_PROTO_V5;

	if (p->qos > 2)
		return MQTT_EINVAL; /* [MQTT-3.3.1-4] */
	if (p->qos == 0 && p->dup)
		return MQTT_EINVAL; /* [MQTT-3.3.1-2] */
	if (p->qos > 0 && p->packet_id == 0)
		return MQTT_EINVAL; /* [MQTT-2.3.1-1] */
	if (!v5 && p->topic.len == 0)
		return MQTT_EINVAL; /* only a 5.0 Topic Alias can replace the name */
	*mid = 0;
	if (p->qos > 0 && !grow(mid, 2))
		return MQTT_EINVAL;
	if (v5 && !grow_props(mid, &p->props))
		return MQTT_EINVAL;
	*rl = *mid;
	if (!grow_str(rl, p->topic) || p->payload.len > MQTT_MAX_REMAINING_LEN || !grow(rl, p->payload.len))
		return MQTT_EINVAL;
	return 0;
}

static uint8_t publish_byte0(const struct mqtt_publish *p)
{
	return first_byte(MQTT_PKT_PUBLISH,
			  (uint8_t)((p->dup ? 0x8 : 0) | (p->qos << 1) | (p->retain ? 0x1 : 0)));
}

static void publish_mid(struct wr *w, bool v5, const struct mqtt_publish *p)
{
	if (p->qos > 0)
		w_u16(w, p->packet_id);
	if (v5)
		w_props(w, &p->props);
}

ssize_t mqtt_encode_publish(uint8_t *buf, size_t cap, uint8_t version, const struct mqtt_publish *p)
{
	size_t rl, mid;
	ssize_t err = MQTT_EINVAL;
	struct wr w;
	int rc = publish_layout(version, p, &rl, &mid);

	if (rc != 0)
		return rc;
	if (!begin(&w, buf, cap, publish_byte0(p), rl, &err))
		return err;
	w_str(&w, p->topic);
	publish_mid(&w, version == MQTT_PROTO_V5, p);
	w_bytes(&w, p->payload.ptr, p->payload.len);
	return w.p - buf;
}

ssize_t mqtt_encode_publish_parts(uint8_t *head, size_t head_cap, uint8_t *mid, size_t mid_cap,
				  size_t *mid_len, uint8_t version, const struct mqtt_publish *p)
{
	size_t rl, mlen, hlen;
	struct wr w;
	int rc = publish_layout(version, p, &rl, &mlen);

	if (rc != 0)
		return rc;
	hlen = 1 + mqtt_varint_size((uint32_t)rl) + 2;
	if (head_cap < hlen || mid_cap < mlen)
		return MQTT_ENOSPC;
	w.p = head;
	w_u8(&w, publish_byte0(p));
	w_varint(&w, rl);
	w_u16(&w, (uint16_t)p->topic.len);
	w.p = mid;
	publish_mid(&w, version == MQTT_PROTO_V5, p);
	*mid_len = mlen;
	return (ssize_t)hlen;
}

/* The per-delivery v5 properties of a split PUBLISH, in bytes. */
static bool split_own_props(const struct mqtt_publish_split *p, size_t *len)
{
	size_t n = 0;
	if (p->topic_alias)
		n += 3;
	if (p->message_expiry)
		n += 5;
	for (size_t i = 0; i < p->sub_id_count; i++) {
		uint32_t id = p->sub_ids[i];
		if (id == 0 || id > MQTT_MAX_REMAINING_LEN)
			return false; /* [MQTT-3.3.4-6] 1 to 268,435,455 */
		n += 1 + mqtt_varint_size(id);
	}
	*len = n;
	return true;
}

size_t mqtt_publish_split_size(uint8_t version, const struct mqtt_publish_split *p)
{
	size_t own = 0, rl = (p->qos > 0 ? 2u : 0u) + 2 + p->topic_len + p->payload_len;
	if (version == MQTT_PROTO_V5) {
		if (!split_own_props(p, &own))
			return 0;
		size_t props = own + p->shared_props_len;
		rl += mqtt_varint_size((uint32_t)props) + props;
	}
	if (rl > MQTT_MAX_REMAINING_LEN)
		return 0;
	return 1 + mqtt_varint_size((uint32_t)rl) + rl;
}

size_t mqtt_publish_small_size(uint8_t version, const struct mqtt_publish_split *p)
{
	if (version == MQTT_PROTO_V5 || p->qos > 2 || (p->qos == 0 && p->dup) || (p->qos > 0 && p->packet_id == 0) ||
	    p->topic_len == 0)
		return 0; /* as mqtt_encode_publish_split refuses it, or v5 */
	size_t rl = 2 + p->topic_len + (p->qos > 0 ? 2u : 0u) + p->payload_len;
	return rl < 128 ? 2 + rl : 0;
}

void mqtt_encode_publish_small(uint8_t *buf, const struct mqtt_publish_split *p, const void *topic,
			       const void *payload)
{
	size_t rl = 2 + p->topic_len + (p->qos > 0 ? 2u : 0u) + p->payload_len;
	struct wr w = {buf};
	w_u8(&w, first_byte(MQTT_PKT_PUBLISH,
			    (uint8_t)((p->dup ? 0x8 : 0) | (p->qos << 1) | (p->retain ? 0x1 : 0))));
	w_u8(&w, (uint8_t)rl);
	w_u16(&w, (uint16_t)p->topic_len);
	w_bytes(&w, topic, p->topic_len);
	if (p->qos > 0)
		w_u16(&w, p->packet_id);
	w_bytes(&w, payload, p->payload_len);
}

size_t mqtt_publish_split_mid_max(size_t sub_id_count)
{
	/* packet id, property length, Topic Alias, Message Expiry, identifiers */
	return 2 + 4 + 3 + 5 + sub_id_count * 5;
}

ssize_t mqtt_encode_publish_split(uint8_t *head, size_t head_cap, uint8_t *mid, size_t mid_cap,
				  size_t *mid_len, uint8_t version, const struct mqtt_publish_split *p)
{
	bool v5 = version == MQTT_PROTO_V5;
	if (p->qos > 2 || (p->qos == 0 && p->dup) || (p->qos > 0 && p->packet_id == 0))
		return MQTT_EINVAL; /* [MQTT-3.3.1-4] [MQTT-3.3.1-2] [MQTT-2.3.1-1] */
	if (p->topic_len > UINT16_MAX || (p->topic_len == 0 && !(v5 && p->topic_alias)))
		return MQTT_EINVAL; /* only a 5.0 Topic Alias can replace the name */
	size_t own = 0, props = 0, mlen = p->qos > 0 ? 2 : 0;
	if (v5) {
		if (!split_own_props(p, &own) || p->shared_props_len > MQTT_MAX_REMAINING_LEN - own)
			return MQTT_EINVAL;
		props = own + p->shared_props_len;
		mlen += mqtt_varint_size((uint32_t)props) + own;
	}
	size_t rl = mlen;
	if ((v5 && !grow(&rl, p->shared_props_len)) || !grow(&rl, 2 + p->topic_len) ||
	    p->payload_len > MQTT_MAX_REMAINING_LEN || !grow(&rl, p->payload_len))
		return MQTT_EINVAL;
	size_t hlen = 1 + mqtt_varint_size((uint32_t)rl) + 2;
	if (head_cap < hlen || mid_cap < mlen)
		return MQTT_ENOSPC;
	struct wr w = {head};
	w_u8(&w, first_byte(MQTT_PKT_PUBLISH,
			    (uint8_t)((p->dup ? 0x8 : 0) | (p->qos << 1) | (p->retain ? 0x1 : 0))));
	w_varint(&w, rl);
	w_u16(&w, (uint16_t)p->topic_len);
	w.p = mid;
	if (p->qos > 0)
		w_u16(&w, p->packet_id);
	if (v5) {
		w_varint(&w, props);
		if (p->topic_alias) {
			w_u8(&w, MQTT_PROP_TOPIC_ALIAS);
			w_u16(&w, p->topic_alias);
		}
		if (p->message_expiry) {
			w_u8(&w, MQTT_PROP_MESSAGE_EXPIRY);
			put_be32(w.p, p->message_expiry);
			w.p += 4;
		}
		for (size_t i = 0; i < p->sub_id_count; i++) {
			w_u8(&w, MQTT_PROP_SUBSCRIPTION_ID);
			w_varint(&w, p->sub_ids[i]);
		}
	}
	*mid_len = mlen;
	return (ssize_t)hlen;
}

static bool is_ack_type(uint8_t type)
{
	return type == MQTT_PKT_PUBACK || type == MQTT_PKT_PUBREC || type == MQTT_PKT_PUBREL ||
	       type == MQTT_PKT_PUBCOMP;
}

static bool props_empty(const struct mqtt_props *p)
{
	return p == NULL || p->raw.len == 0;
}

ssize_t mqtt_encode_ack(uint8_t *buf, size_t cap, uint8_t version, uint8_t type, const struct mqtt_ack *a)
{
	bool v5 = version == MQTT_PROTO_V5;
	size_t rl = 2;
	ssize_t err = MQTT_EINVAL;
	struct wr w;

	if (!is_ack_type(type) || a->packet_id == 0)
		return MQTT_EINVAL;
	/* 5.0 drops trailing parts that carry nothing [MQTT-3.4.2.1]. */
	bool with_props = v5 && !props_empty(&a->props);
	bool with_reason = v5 && (with_props || a->reason != 0);
	if (with_reason)
		rl++;
	if (with_props && !grow_props(&rl, &a->props))
		return MQTT_EINVAL;
	if (!begin(&w, buf, cap, first_byte(type, type == MQTT_PKT_PUBREL ? 0x2 : 0), rl, &err))
		return err;
	w_u16(&w, a->packet_id);
	if (with_reason)
		w_u8(&w, a->reason);
	if (with_props)
		w_props(&w, &a->props);
	return w.p - buf;
}

static ssize_t encode_sub_common(uint8_t *buf, size_t cap, uint8_t version, uint8_t type,
				 uint16_t packet_id, const struct mqtt_props *props,
				 const struct mqtt_str *filters, const uint8_t *options, size_t count)
{
	bool v5 = version == MQTT_PROTO_V5;
	size_t rl = 2;
	ssize_t err = MQTT_EINVAL;
	struct wr w;

	if (packet_id == 0 || count == 0)
		return MQTT_EINVAL; /* [MQTT-2.3.1-1] [MQTT-3.8.3-3] [MQTT-3.10.3-2] */
	if (v5 && !grow_props(&rl, props))
		return MQTT_EINVAL;
	for (size_t i = 0; i < count; i++) {
		if (!grow_str(&rl, filters[i]))
			return MQTT_EINVAL;
		if (options == NULL)
			continue;
		uint8_t opt = options[i];
		if ((opt & MQTT_SUBOPT_QOS_MASK) == 3 || (opt & (v5 ? 0xC0 : 0xFC)) ||
		    ((opt & MQTT_SUBOPT_RETAIN_HANDLING_MASK) >> MQTT_SUBOPT_RETAIN_HANDLING_SHIFT) == 3)
			return MQTT_EINVAL;
		if (!grow(&rl, 1))
			return MQTT_EINVAL;
	}
	if (!begin(&w, buf, cap, first_byte(type, 0x2), rl, &err))
		return err;
	w_u16(&w, packet_id);
	if (v5)
		w_props(&w, props);
	for (size_t i = 0; i < count; i++) {
		w_str(&w, filters[i]);
		if (options != NULL)
			w_u8(&w, options[i]);
	}
	return w.p - buf;
}

ssize_t mqtt_encode_subscribe(uint8_t *buf, size_t cap, uint8_t version, uint16_t packet_id,
			      const struct mqtt_props *props, const struct mqtt_str *filters,
			      const uint8_t *options, size_t count)
{
	if (options == NULL)
		return MQTT_EINVAL;
	return encode_sub_common(buf, cap, version, MQTT_PKT_SUBSCRIBE, packet_id, props, filters,
				 options, count);
}

ssize_t mqtt_encode_unsubscribe(uint8_t *buf, size_t cap, uint8_t version, uint16_t packet_id,
				const struct mqtt_props *props, const struct mqtt_str *filters,
				size_t count)
{
	return encode_sub_common(buf, cap, version, MQTT_PKT_UNSUBSCRIBE, packet_id, props, filters,
				 NULL, count);
}

ssize_t mqtt_encode_suback(uint8_t *buf, size_t cap, uint8_t version, uint8_t type,
			   const struct mqtt_suback *s)
{
	bool v5 = version == MQTT_PROTO_V5;
	bool with_codes = v5 || type == MQTT_PKT_SUBACK;
	size_t rl = 2;
	ssize_t err = MQTT_EINVAL;
	struct wr w;

	if ((type != MQTT_PKT_SUBACK && type != MQTT_PKT_UNSUBACK) || s->packet_id == 0)
		return MQTT_EINVAL;
	if (v5 && !grow_props(&rl, &s->props))
		return MQTT_EINVAL;
	if (with_codes) {
		if (s->codes.len == 0 || s->codes.len > MQTT_MAX_REMAINING_LEN || !grow(&rl, s->codes.len))
			return MQTT_EINVAL;
		for (size_t i = 0; !v5 && i < s->codes.len; i++) {
			if (s->codes.ptr[i] > 2 && s->codes.ptr[i] != MQTT_SUBACK_FAILURE)
				return MQTT_EINVAL; /* [MQTT-3.9.3-2] */
		}
	}
	if (!begin(&w, buf, cap, first_byte(type, 0), rl, &err))
		return err;
	w_u16(&w, s->packet_id);
	if (v5)
		w_props(&w, &s->props);
	if (with_codes)
		w_bytes(&w, s->codes.ptr, s->codes.len);
	return w.p - buf;
}

ssize_t mqtt_encode_empty(uint8_t *buf, size_t cap, uint8_t type)
{
	if (type != MQTT_PKT_PINGREQ && type != MQTT_PKT_PINGRESP && type != MQTT_PKT_DISCONNECT)
		return MQTT_EINVAL;
	if (cap < 2)
		return MQTT_ENOSPC;
	buf[0] = first_byte(type, 0);
	buf[1] = 0;
	return 2;
}

ssize_t mqtt_encode_reason(uint8_t *buf, size_t cap, uint8_t version, uint8_t type,
			   const struct mqtt_reason_pkt *r)
{
	size_t rl = 0;
	ssize_t err = MQTT_EINVAL;
	struct wr w;

	if (type != MQTT_PKT_DISCONNECT && type != MQTT_PKT_AUTH)
		return MQTT_EINVAL;
	if (version != MQTT_PROTO_V5) {
		if (type == MQTT_PKT_AUTH)
			return MQTT_EINVAL; /* AUTH exists only in 5.0 */
		return mqtt_encode_empty(buf, cap, type);
	}
	/* Both parts may be omitted for reason 0 without properties [MQTT-3.14.2.1]. */
	bool with_props = !props_empty(&r->props);
	bool with_reason = with_props || r->reason != 0;
	if (with_reason)
		rl++;
	if (with_props && !grow_props(&rl, &r->props))
		return MQTT_EINVAL;
	if (!begin(&w, buf, cap, first_byte(type, 0), rl, &err))
		return err;
	if (with_reason)
		w_u8(&w, r->reason);
	if (with_props)
		w_props(&w, &r->props);
	return w.p - buf;
}
