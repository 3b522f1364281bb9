/*
 * MQTT 5 properties [MQTT-2.2.2]: parsing and validation of a property
 * block, the lazy iterator over a validated block, and the builders that
 * encoders' callers use to produce one.
 *
 * The parser makes one pass: each property's identifier must be allowed in
 * the packet that carries it (the table below), or the packet is
 * malformed (MQTT_EMALFORMED: section 2.2.2.2 says so, 0x81);
 * non-repeatable properties may appear once, and values with a restricted
 * range are checked: breaking either is a protocol error (MQTT_EPROPS,
 * 0x82). Scalars land in struct mqtt_props; repeatable properties (user
 * properties, a PUBLISH's subscription identifiers) stay in `raw` for
 * mqtt_props_next(), so no storage grows with the packet.
 *
 * Pure: no allocation, no globals beyond constant tables. Thread-safe.
 */
#include "codec_internal.h"

enum prop_kind {
	PK_NONE = 0, /* not a property identifier */
	PK_BYTE,
	PK_U16,
	PK_U32,
	PK_VARINT,
	PK_STR,  /* UTF-8 Encoded String */
	PK_BIN,  /* Binary Data */
	PK_PAIR, /* UTF-8 String Pair */
};

#define PROP_ID_LIMIT 0x2B /* one past the largest identifier */

/* Bit `owner` for each packet type, bit 0 for the will properties. */
#define OWN(t) (1u << (t))
#define OWN_WILL OWN(MQTT_PROPS_OWNER_WILL)
#define OWN_ACKS (OWN(MQTT_PKT_PUBACK) | OWN(MQTT_PKT_PUBREC) | OWN(MQTT_PKT_PUBREL) | OWN(MQTT_PKT_PUBCOMP))

static const struct {
	uint8_t kind;
	uint16_t owners;
} prop_table[PROP_ID_LIMIT] = {
	[MQTT_PROP_PAYLOAD_FORMAT] = {PK_BYTE, OWN(MQTT_PKT_PUBLISH) | OWN_WILL},
	[MQTT_PROP_MESSAGE_EXPIRY] = {PK_U32, OWN(MQTT_PKT_PUBLISH) | OWN_WILL},
	[MQTT_PROP_CONTENT_TYPE] = {PK_STR, OWN(MQTT_PKT_PUBLISH) | OWN_WILL},
	[MQTT_PROP_RESPONSE_TOPIC] = {PK_STR, OWN(MQTT_PKT_PUBLISH) | OWN_WILL},
	[MQTT_PROP_CORRELATION_DATA] = {PK_BIN, OWN(MQTT_PKT_PUBLISH) | OWN_WILL},
	[MQTT_PROP_SUBSCRIPTION_ID] = {PK_VARINT, OWN(MQTT_PKT_PUBLISH) | OWN(MQTT_PKT_SUBSCRIBE)},
	[MQTT_PROP_SESSION_EXPIRY] = {PK_U32, OWN(MQTT_PKT_CONNECT) | OWN(MQTT_PKT_CONNACK) | OWN(MQTT_PKT_DISCONNECT)},
	[MQTT_PROP_ASSIGNED_CLIENT_ID] = {PK_STR, OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_SERVER_KEEP_ALIVE] = {PK_U16, OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_AUTH_METHOD] = {PK_STR, OWN(MQTT_PKT_CONNECT) | OWN(MQTT_PKT_CONNACK) | OWN(MQTT_PKT_AUTH)},
	[MQTT_PROP_AUTH_DATA] = {PK_BIN, OWN(MQTT_PKT_CONNECT) | OWN(MQTT_PKT_CONNACK) | OWN(MQTT_PKT_AUTH)},
	[MQTT_PROP_REQUEST_PROBLEM_INFO] = {PK_BYTE, OWN(MQTT_PKT_CONNECT)},
	[MQTT_PROP_WILL_DELAY] = {PK_U32, OWN_WILL},
	[MQTT_PROP_REQUEST_RESPONSE_INFO] = {PK_BYTE, OWN(MQTT_PKT_CONNECT)},
	[MQTT_PROP_RESPONSE_INFO] = {PK_STR, OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_SERVER_REFERENCE] = {PK_STR, OWN(MQTT_PKT_CONNACK) | OWN(MQTT_PKT_DISCONNECT)},
	[MQTT_PROP_REASON_STRING] = {PK_STR, OWN(MQTT_PKT_CONNACK) | OWN_ACKS | OWN(MQTT_PKT_SUBACK) |
						     OWN(MQTT_PKT_UNSUBACK) | OWN(MQTT_PKT_DISCONNECT) | OWN(MQTT_PKT_AUTH)},
	[MQTT_PROP_RECEIVE_MAXIMUM] = {PK_U16, OWN(MQTT_PKT_CONNECT) | OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_TOPIC_ALIAS_MAXIMUM] = {PK_U16, OWN(MQTT_PKT_CONNECT) | OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_TOPIC_ALIAS] = {PK_U16, OWN(MQTT_PKT_PUBLISH)},
	[MQTT_PROP_MAXIMUM_QOS] = {PK_BYTE, OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_RETAIN_AVAILABLE] = {PK_BYTE, OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_USER_PROPERTY] = {PK_PAIR, 0xFFFE | OWN_WILL}, /* every packet but none */
	[MQTT_PROP_MAXIMUM_PACKET_SIZE] = {PK_U32, OWN(MQTT_PKT_CONNECT) | OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_WILDCARD_SUB_AVAILABLE] = {PK_BYTE, OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_SUB_ID_AVAILABLE] = {PK_BYTE, OWN(MQTT_PKT_CONNACK)},
	[MQTT_PROP_SHARED_SUB_AVAILABLE] = {PK_BYTE, OWN(MQTT_PKT_CONNACK)},
};

_Static_assert(PROP_ID_LIMIT <= 64, "present bits must fit in uint64_t");

/* Stores one scalar value; returns MQTT_EPROPS for values out of range. */
static int store_scalar(struct mqtt_props *p, uint8_t id, uint32_t v)
{
	switch (id) {
	case MQTT_PROP_PAYLOAD_FORMAT:
		if (v > 1) /* 0 bytes, 1 UTF-8 */
			return MQTT_EPROPS;
		p->payload_format = (uint8_t)v;
		break;
	case MQTT_PROP_MESSAGE_EXPIRY:
		p->message_expiry = v;
		break;
	case MQTT_PROP_SUBSCRIPTION_ID:
		if (v == 0) /* [MQTT-3.8.2.1.2] 0 is a protocol error */
			return MQTT_EPROPS;
		if (!(p->present & MQTT_PROP_BIT(id)))
			p->subscription_id = v;
		break;
	case MQTT_PROP_SESSION_EXPIRY:
		p->session_expiry = v;
		break;
	case MQTT_PROP_SERVER_KEEP_ALIVE:
		p->server_keep_alive = (uint16_t)v;
		break;
	case MQTT_PROP_REQUEST_PROBLEM_INFO:
		if (v > 1)
			return MQTT_EPROPS;
		p->request_problem_info = (uint8_t)v;
		break;
	case MQTT_PROP_WILL_DELAY:
		p->will_delay = v;
		break;
	case MQTT_PROP_REQUEST_RESPONSE_INFO:
		if (v > 1)
			return MQTT_EPROPS;
		p->request_response_info = (uint8_t)v;
		break;
	case MQTT_PROP_RECEIVE_MAXIMUM:
		if (v == 0) /* [MQTT-3.1.2.11.3] */
			return MQTT_EPROPS;
		p->receive_maximum = (uint16_t)v;
		break;
	case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
		p->topic_alias_maximum = (uint16_t)v;
		break;
	case MQTT_PROP_TOPIC_ALIAS:
		if (v == 0) /* [MQTT-3.3.2-8] */
			return MQTT_EPROPS;
		p->topic_alias = (uint16_t)v;
		break;
	case MQTT_PROP_MAXIMUM_QOS:
		if (v > 1)
			return MQTT_EPROPS;
		p->maximum_qos = (uint8_t)v;
		break;
	case MQTT_PROP_RETAIN_AVAILABLE:
		if (v > 1)
			return MQTT_EPROPS;
		p->retain_available = (uint8_t)v;
		break;
	case MQTT_PROP_MAXIMUM_PACKET_SIZE:
		if (v == 0) /* [MQTT-3.1.2.11.4] */
			return MQTT_EPROPS;
		p->maximum_packet_size = v;
		break;
	case MQTT_PROP_WILDCARD_SUB_AVAILABLE:
		if (v > 1)
			return MQTT_EPROPS;
		p->wildcard_sub_available = (uint8_t)v;
		break;
	case MQTT_PROP_SUB_ID_AVAILABLE:
		if (v > 1)
			return MQTT_EPROPS;
		p->sub_id_available = (uint8_t)v;
		break;
	case MQTT_PROP_SHARED_SUB_AVAILABLE:
		if (v > 1)
			return MQTT_EPROPS;
		p->shared_sub_available = (uint8_t)v;
		break;
	default:
		return MQTT_EPROPS;
	}
	return 0;
}

static struct mqtt_str *str_field(struct mqtt_props *p, uint8_t id)
{
	switch (id) {
	case MQTT_PROP_CONTENT_TYPE:
		return &p->content_type;
	case MQTT_PROP_RESPONSE_TOPIC:
		return &p->response_topic;
	case MQTT_PROP_CORRELATION_DATA:
		return &p->correlation_data;
	case MQTT_PROP_ASSIGNED_CLIENT_ID:
		return &p->assigned_client_id;
	case MQTT_PROP_AUTH_METHOD:
		return &p->auth_method;
	case MQTT_PROP_AUTH_DATA:
		return &p->auth_data;
	case MQTT_PROP_RESPONSE_INFO:
		return &p->response_info;
	case MQTT_PROP_SERVER_REFERENCE:
		return &p->server_reference;
	case MQTT_PROP_REASON_STRING:
		return &p->reason_string;
	default:
		return NULL;
	}
}

static bool is_repeatable(uint8_t id, uint8_t owner)
{
	return id == MQTT_PROP_USER_PROPERTY ||
	       (id == MQTT_PROP_SUBSCRIPTION_ID && owner == MQTT_PKT_PUBLISH);
}

int mqtt_props_parse(struct mqtt_rd *rd, uint8_t owner, struct mqtt_props *out)
{
	struct mqtt_rd p;
	uint32_t len;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = rd_varint(rd, &len);
	if (rc != 0)
		return rc;
	if (len > rd_left(rd))
		return MQTT_EMALFORMED;
	out->raw.ptr = rd->pos;
	out->raw.len = len;
	p.pos = rd->pos;
	p.end = rd->pos + len;
	rd->pos += len;

	while (p.pos < p.end) {
		uint32_t id32, v = 0;
		uint8_t id;
		struct mqtt_str s, val;

		/* The identifier is a varint [MQTT-2.2.2.2]; all defined ones fit in one byte. */
		rc = rd_varint(&p, &id32);
		if (rc != 0)
			return rc;
		if (id32 >= PROP_ID_LIMIT || prop_table[id32].kind == PK_NONE)
			return MQTT_EMALFORMED;
		id = (uint8_t)id32;
		if (!(prop_table[id].owners & (1u << owner)))
			return MQTT_EMALFORMED;
		if ((out->present & MQTT_PROP_BIT(id)) && !is_repeatable(id, owner))
			return MQTT_EPROPS; /* "more than once is a Protocol Error" */

		switch (prop_table[id].kind) {
		case PK_BYTE: {
			uint8_t b;
			rc = rd_u8(&p, &b);
			v = b;
			break;
		}
		case PK_U16: {
			uint16_t w;
			rc = rd_u16(&p, &w);
			v = w;
			break;
		}
		case PK_U32:
			rc = rd_u32(&p, &v);
			break;
		case PK_VARINT:
			rc = rd_varint(&p, &v);
			break;
		case PK_STR:
			rc = rd_str(&p, &s);
			break;
		case PK_BIN:
			rc = rd_bin(&p, &s);
			break;
		case PK_PAIR:
			rc = rd_str(&p, &s);
			if (rc == 0)
				rc = rd_str(&p, &val);
			break;
		default:
			rc = MQTT_EPROPS;
			break;
		}
		if (rc != 0)
			return rc;

		if (prop_table[id].kind == PK_PAIR) {
			out->user_property_count++; /* five bytes each at least: no overflow below 2^32 */
		} else if (prop_table[id].kind == PK_STR || prop_table[id].kind == PK_BIN) {
			*str_field(out, id) = s;
		} else {
			rc = store_scalar(out, id, v);
			if (rc != 0)
				return rc;
		}
		out->present |= MQTT_PROP_BIT(id);
	}
	/* Authentication Data without a method is a protocol error [MQTT-3.1.2.11.10]. */
	if ((out->present & MQTT_PROP_BIT(MQTT_PROP_AUTH_DATA)) &&
	    !(out->present & MQTT_PROP_BIT(MQTT_PROP_AUTH_METHOD)))
		return MQTT_EPROPS;
	return 0;
}

void mqtt_props_iter_init(const struct mqtt_props *props, struct mqtt_prop_iter *out)
{
	out->pos = props->raw.ptr;
	out->end = props->raw.ptr ? props->raw.ptr + props->raw.len : NULL;
}

size_t mqtt_props_filter(const struct mqtt_props *props, uint64_t drop, uint8_t *out)
{
	if (!(props->present & drop)) {
		if (out && props->raw.len)
			memcpy(out, props->raw.ptr, props->raw.len);
		return props->raw.len;
	}
	struct mqtt_prop_iter it;
	struct mqtt_prop pr;
	size_t len = 0;
	mqtt_props_iter_init(props, &it);
	for (const uint8_t *at = it.pos; mqtt_props_next(&it, &pr) == 1; at = it.pos) {
		if (pr.id < 64 && (MQTT_PROP_BIT(pr.id) & drop))
			continue;
		size_t n = (size_t)(it.pos - at);
		if (out)
			memcpy(out + len, at, n);
		len += n;
	}
	return len;
}

int mqtt_props_find(const struct mqtt_props *props, uint8_t id, struct mqtt_prop *out)
{
	struct mqtt_prop_iter it;
	mqtt_props_iter_init(props, &it);
	while (mqtt_props_next(&it, out) == 1)
		if (out->id == id)
			return 1;
	return 0;
}

/*
 * Bounded even on blocks the decoder never saw (a caller's own builder
 * output): anything it cannot read ends the walk.
 */
int mqtt_props_next(struct mqtt_prop_iter *it, struct mqtt_prop *out)
{
	struct mqtt_rd rd = {it->pos, it->end};
	uint32_t id32;
	uint8_t id;
	int rc;

	if (it->pos == NULL || it->pos >= it->end)
		return 0;
	memset(out, 0, sizeof(*out));
	if (rd_varint(&rd, &id32) != 0 || id32 >= PROP_ID_LIMIT)
		goto stop;
	id = (uint8_t)id32;
	out->id = id;
	switch (prop_table[id].kind) {
	case PK_BYTE: {
		uint8_t b = 0;
		rc = rd_u8(&rd, &b);
		out->value = b;
		break;
	}
	case PK_U16: {
		uint16_t w = 0;
		rc = rd_u16(&rd, &w);
		out->value = w;
		break;
	}
	case PK_U32:
		rc = rd_u32(&rd, &out->value);
		break;
	case PK_VARINT:
		rc = rd_varint(&rd, &out->value);
		break;
	case PK_STR:
	case PK_BIN:
		rc = rd_bin(&rd, &out->str);
		break;
	case PK_PAIR:
		rc = rd_bin(&rd, &out->str);
		if (rc == 0)
			rc = rd_bin(&rd, &out->value_str);
		break;
	default:
		rc = MQTT_EPROPS;
		break;
	}
	if (rc != 0)
		goto stop;
	it->pos = rd.pos;
	return 1;
stop:
	it->pos = it->end;
	return 0;
}

/* Reserves `n` bytes at *off, or reports MQTT_ENOSPC without writing. */
static uint8_t *reserve(uint8_t *buf, size_t cap, size_t *off, size_t n)
{
	if (*off > cap || cap - *off < n)
		return NULL;
	uint8_t *p = buf + *off;
	*off += n;
	return p;
}

int mqtt_props_put_u8(uint8_t *buf, size_t cap, size_t *off, uint8_t id, uint8_t v)
{
	uint8_t *p = reserve(buf, cap, off, 2);

	if (p == NULL)
		return MQTT_ENOSPC;
	p[0] = id;
	p[1] = v;
	return 0;
}

int mqtt_props_put_u16(uint8_t *buf, size_t cap, size_t *off, uint8_t id, uint16_t v)
{
	uint8_t *p = reserve(buf, cap, off, 3);

	if (p == NULL)
		return MQTT_ENOSPC;
	p[0] = id;
	put_be16(p + 1, v);
	return 0;
}

int mqtt_props_put_u32(uint8_t *buf, size_t cap, size_t *off, uint8_t id, uint32_t v)
{
	uint8_t *p = reserve(buf, cap, off, 5);

	if (p == NULL)
		return MQTT_ENOSPC;
	p[0] = id;
	put_be32(p + 1, v);
	return 0;
}

int mqtt_props_put_varint(uint8_t *buf, size_t cap, size_t *off, uint8_t id, uint32_t v)
{
	size_t n = mqtt_varint_size(v);
	uint8_t *p;

	if (n == 0)
		return MQTT_EINVAL;
	p = reserve(buf, cap, off, 1 + n);
	if (p == NULL)
		return MQTT_ENOSPC;
	p[0] = id;
	mqtt_varint_encode(v, p + 1, n);
	return 0;
}

static void put_lenstr(uint8_t *p, struct mqtt_str s)
{
	put_be16(p, (uint16_t)s.len);
	if (s.len > 0)
		memcpy(p + 2, s.ptr, s.len);
}

int mqtt_props_put_str(uint8_t *buf, size_t cap, size_t *off, uint8_t id, struct mqtt_str s)
{
	uint8_t *p;

	if (s.len > UINT16_MAX)
		return MQTT_EINVAL;
	p = reserve(buf, cap, off, 3 + s.len);
	if (p == NULL)
		return MQTT_ENOSPC;
	p[0] = id;
	put_lenstr(p + 1, s);
	return 0;
}

int mqtt_props_put_pair(uint8_t *buf, size_t cap, size_t *off, struct mqtt_str key,
			struct mqtt_str value)
{
	uint8_t *p;

	if (key.len > UINT16_MAX || value.len > UINT16_MAX)
		return MQTT_EINVAL;
	p = reserve(buf, cap, off, 5 + key.len + value.len);
	if (p == NULL)
		return MQTT_ENOSPC;
	p[0] = MQTT_PROP_USER_PROPERTY;
	put_lenstr(p + 1, key);
	put_lenstr(p + 3 + key.len, value);
	return 0;
}
