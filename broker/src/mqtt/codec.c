/*
 * MQTT packet decoder: fixed header, Remaining Length, and the variable
 * header and payload of every packet type of MQTT 3.1, 3.1.1 and 5.0.
 *
 * What it does: turns one whole packet at the start of a buffer into a
 * struct mqtt_pkt of (ptr, len) views into that buffer, after checking every
 * rule the specification puts on the receiver's parsing (cited inline).
 * What it does not: topic name/filter wildcard rules (topic/), session state
 * such as packet id reuse or topic alias mapping (session/, proto/), and
 * mapping errors to reason codes (proto/dispatch.c).
 *
 * Invariants: never reads past `len`; never reads past the packet's
 * Remaining Length while parsing its body; returns 0 ("need more") for every
 * strict prefix of a packet whose fixed header is acceptable, so a caller
 * can feed it bytes as they arrive. Remaining Length is checked against the
 * packet size limit as soon as the length bytes are in, before the body.
 *
 * Cost: O(packet) in one pass, no allocation, no globals, no I/O. Callers
 * on the loop thread may use it freely; it is also thread-safe.
 */
#include "codec_internal.h"

const char *mqtt_strerror(int err)
{
	switch (err) {
#define MQTT_ERR_TEXT(name, value, text) \
	case name:                       \
		return text;
		MQTT_ERR_LIST(MQTT_ERR_TEXT)
#undef MQTT_ERR_TEXT
	default:
		return "unknown error";
	}
}

size_t mqtt_varint_size(uint32_t value)
{
	if (value < 128u)
		return 1;
	if (value < 16384u)
		return 2;
	if (value < 2097152u)
		return 3;
	if (value <= MQTT_MAX_REMAINING_LEN)
		return 4;
	return 0;
}

ssize_t mqtt_varint_encode(uint32_t value, uint8_t *buf, size_t cap)
{
	size_t n = mqtt_varint_size(value);

	if (n == 0)
		return MQTT_EINVAL;
	if (cap < n)
		return MQTT_ENOSPC;
	for (size_t i = 0; i < n; i++) {
		uint8_t b = (uint8_t)(value & 0x7F);
		value >>= 7;
		buf[i] = (uint8_t)(i + 1 < n ? (b | 0x80) : b);
	}
	return (ssize_t)n;
}

/*
 * At most four bytes [MQTT-1.5.5]; a fourth byte with the continuation bit
 * is invalid without waiting for a fifth. Minimal encoding only: a
 * multi-byte value whose last byte is 0 could have been shorter, and
 * accepting that would let two byte strings mean one packet.
 */
ssize_t mqtt_varint_decode(const uint8_t *buf, size_t len, uint32_t *out)
{
	uint32_t value = 0;

	for (size_t i = 0; i < 4; i++) {
		if (i >= len)
			return 0;
		value |= (uint32_t)(buf[i] & 0x7F) << (7 * i);
		if (!(buf[i] & 0x80)) {
			if (i > 0 && buf[i] == 0)
				return MQTT_EVARINT;
			*out = value;
			return (ssize_t)(i + 1);
		}
	}
	return MQTT_EVARINT;
}

static const struct mqtt_codec_opts default_opts = {0, 0};

/* Flags a packet type must carry in the low nibble [MQTT-2.2.2-1]; PUBLISH is checked apart. */
static const uint8_t required_flags[16] = {
	[MQTT_PKT_PUBREL] = 0x2,
	[MQTT_PKT_SUBSCRIBE] = 0x2,
	[MQTT_PKT_UNSUBSCRIBE] = 0x2,
};

/* The checks that need only the first byte, so garbage fails before its body arrives. */
static int check_first_byte(uint8_t b, uint8_t version)
{
	uint8_t type = (uint8_t)(b >> 4), flags = (uint8_t)(b & 0x0F);

	if (type == 0)
		return MQTT_ETYPE; /* reserved */
	if (type == MQTT_PKT_AUTH && version != MQTT_PROTO_V5)
		return MQTT_ETYPE; /* reserved before 5.0 */
	if (type == MQTT_PKT_PUBLISH) {
		uint8_t qos = (uint8_t)((flags >> 1) & 0x3);
		if (qos == 3)
			return MQTT_EQOS; /* [MQTT-3.3.1-4] */
		if (qos == 0 && (flags & 0x8))
			return MQTT_EFLAGS; /* [MQTT-3.3.1-2] DUP must be 0 for QoS 0 */
		return 0;
	}
	if (flags != required_flags[type])
		return MQTT_EFLAGS; /* [MQTT-2.2.2-1] */
	return 0;
}

/* Fixed header: total packet size (> 0), 0 for more, or an error; *hdr gets its length. */
static ssize_t read_fixed_header(const uint8_t *buf, size_t len, const struct mqtt_codec_opts *opts,
				 uint32_t *rl, size_t *hdr)
{
	ssize_t n;
	uint64_t total;

	n = mqtt_varint_decode(buf + 1, len - 1, rl);
	if (n <= 0)
		return n;
	*hdr = 1 + (size_t)n;
	total = (uint64_t)*hdr + *rl;
	if (opts->max_packet_size != 0 && total > opts->max_packet_size)
		return MQTT_ETOOBIG;
	return (ssize_t)total;
}

ssize_t mqtt_frame_size(const uint8_t *buf, size_t len, const struct mqtt_codec_opts *opts)
{
	uint32_t rl;
	size_t hdr;
	uint8_t type;

	if (opts == NULL)
		opts = &default_opts;
	if (len < 1)
		return 0;
	type = (uint8_t)(buf[0] >> 4);
	if (type == 0 || (type == MQTT_PKT_AUTH && opts->version != MQTT_PROTO_V5))
		return MQTT_ETYPE;
	return read_fixed_header(buf, len, opts, &rl, &hdr);
}

/* A non-zero packet identifier [MQTT-2.3.1-1]. */
static int rd_packet_id(struct mqtt_rd *rd, uint16_t *out)
{
	if (rd_u16(rd, out) != 0)
		return MQTT_EMALFORMED;
	return *out == 0 ? MQTT_EPROTOCOL : 0;
}

static bool str_is(struct mqtt_str s, const char *lit, size_t n)
{
	return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static int decode_connect(struct mqtt_rd *rd, struct mqtt_connect *c)
{
	struct mqtt_str name;
	uint8_t level, flags;
	int rc;

	if ((rc = rd_bin(rd, &name)) != 0 || (rc = rd_u8(rd, &level)) != 0)
		return rc;
	/* Filled before judging, so the broker can answer with the level it saw [MQTT-3.1.2-2]. */
	c->version = level;
	bool v31_name = str_is(name, "MQIsdp", 6);
	if (!v31_name && !str_is(name, "MQTT", 4))
		return MQTT_EPROTONAME; /* [MQTT-3.1.2-1] not this protocol */
	if (!(v31_name ? level == MQTT_PROTO_V31 : (level == MQTT_PROTO_V311 || level == MQTT_PROTO_V5)))
		return MQTT_EVERSION; /* [MQTT-3.1.2-2] */

	if ((rc = rd_u8(rd, &flags)) != 0)
		return rc;
	if (flags & 0x01)
		return MQTT_EMALFORMED; /* [MQTT-3.1.2-3] reserved bit */
	c->clean_start = (flags & MQTT_CONNECT_CLEAN) != 0;
	c->has_will = (flags & MQTT_CONNECT_WILL) != 0;
	c->will_qos = (uint8_t)((flags >> 3) & 0x3);
	c->will_retain = (flags & MQTT_CONNECT_WILL_RETAIN) != 0;
	c->has_username = (flags & MQTT_CONNECT_USERNAME) != 0;
	c->has_password = (flags & MQTT_CONNECT_PASSWORD) != 0;
	if (!c->has_will && (c->will_qos != 0 || c->will_retain))
		return MQTT_EMALFORMED; /* [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15] */
	if (c->will_qos == 3)
		return MQTT_EQOS; /* [MQTT-3.1.2-14] */
	if (level < MQTT_PROTO_V5 && c->has_password && !c->has_username)
		return MQTT_EMALFORMED; /* [MQTT-3.1.2-22]; allowed in 5.0 */

	if ((rc = rd_u16(rd, &c->keepalive)) != 0)
		return rc;
	if (level == MQTT_PROTO_V5 && (rc = mqtt_props_parse(rd, MQTT_PKT_CONNECT, &c->props)) != 0)
		return rc;
	if ((rc = rd_str(rd, &c->client_id)) != 0) /* [MQTT-3.1.3-4] */
		return rc;
	if (c->has_will) {
		if (level == MQTT_PROTO_V5 &&
		    (rc = mqtt_props_parse(rd, MQTT_PROPS_OWNER_WILL, &c->will_props)) != 0)
			return rc;
		if ((rc = rd_str(rd, &c->will_topic)) != 0) /* [MQTT-3.1.3-10] */
			return rc;
		if ((rc = rd_bin(rd, &c->will_payload)) != 0)
			return rc;
	}
	if (c->has_username && (rc = rd_str(rd, &c->username)) != 0) /* [MQTT-3.1.3-11] */
		return rc;
	if (c->has_password && (rc = rd_bin(rd, &c->password)) != 0)
		return rc;
	return 0;
}

static int decode_connack(struct mqtt_rd *rd, bool v5, struct mqtt_connack *c)
{
	uint8_t flags;
	int rc;

	if ((rc = rd_u8(rd, &flags)) != 0 || (rc = rd_u8(rd, &c->code)) != 0)
		return rc;
	if (flags & 0xFE)
		return MQTT_EMALFORMED; /* [MQTT-3.2.2-1] reserved bits 7-1 */
	c->session_present = (flags & 0x01) != 0;
	if (v5)
		return mqtt_props_parse(rd, MQTT_PKT_CONNACK, &c->props);
	return 0;
}

/* What a packet without a property block reads as: nothing present.
 * mqtt_props_parse() zeroes the block itself, so this is only for the
 * packets that carry none (before 5.0, or a 5.0 ack that omits it). */
static void props_none(struct mqtt_props *props)
{
	memset(props, 0, sizeof(*props));
}

static int decode_publish(struct mqtt_rd *rd, bool v5, uint8_t flags, struct mqtt_publish *p)
{
	int rc;

	p->packet_id = 0;
	p->qos = (uint8_t)((flags >> 1) & 0x3);
	p->dup = (flags & 0x8) != 0;
	p->retain = (flags & 0x1) != 0;
	if ((rc = rd_bin(rd, &p->topic)) != 0)
		return rc;
	/* [MQTT-3.3.2-1] UTF-8; the same pass notes control characters, which
	 * the broker refuses (so its PUBLISH path walks the topic once). */
	int scan = mqtt_utf8_scan(p->topic.ptr, p->topic.len);
	if (scan < 0)
		return MQTT_EUTF8;
	p->topic_control = scan > 0;
	if (p->qos > 0 && (rc = rd_packet_id(rd, &p->packet_id)) != 0)
		return rc;
	if (!v5)
		props_none(&p->props);
	else if ((rc = mqtt_props_parse(rd, MQTT_PKT_PUBLISH, &p->props)) != 0)
		return rc;
	/* An empty topic needs a Topic Alias in 5.0 [MQTT-3.3.2-1]; before 5.0 nothing can stand in. */
	if (p->topic.len == 0 && !(p->props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)))
		return MQTT_EPROTOCOL;
	p->payload.ptr = rd->pos;
	p->payload.len = rd_left(rd);
	rd->pos = rd->end;
	return 0;
}

/* PUBACK, PUBREC, PUBREL, PUBCOMP [MQTT-3.4..3.7]. */
static int decode_ack(struct mqtt_rd *rd, bool v5, uint8_t type, struct mqtt_ack *a)
{
	int rc;

	a->reason = 0;
	if ((rc = rd_packet_id(rd, &a->packet_id)) != 0)
		return rc;
	/* Before 5.0 anything more is a trailing byte: Remaining Length is exactly 2.
	 * 5.0: reason and properties may be omitted from the end [MQTT-3.4.2.1]. */
	if (v5 && rd_left(rd) > 0 && (rc = rd_u8(rd, &a->reason)) != 0)
		return rc;
	if (v5 && rd_left(rd) > 0)
		return mqtt_props_parse(rd, type, &a->props);
	props_none(&a->props);
	return 0;
}

static int decode_subscribe(struct mqtt_rd *rd, bool v5, bool is_sub, struct mqtt_subscribe *s)
{
	uint8_t type = is_sub ? MQTT_PKT_SUBSCRIBE : MQTT_PKT_UNSUBSCRIBE;
	int rc;

	if ((rc = rd_packet_id(rd, &s->packet_id)) != 0)
		return rc;
	if (v5 && (rc = mqtt_props_parse(rd, type, &s->props)) != 0)
		return rc;
	s->entries.ptr = rd->pos;
	s->entries.len = rd_left(rd);
	while (rd_left(rd) > 0) {
		struct mqtt_str filter;
		uint8_t opt;

		if ((rc = rd_str(rd, &filter)) != 0) /* [MQTT-3.8.3-1] [MQTT-3.10.3-1] */
			return rc;
		if (is_sub) {
			if ((rc = rd_u8(rd, &opt)) != 0)
				return rc;
			if (!v5 && (opt & 0xFC))
				return MQTT_EMALFORMED; /* [MQTT-3-8.3-4] */
			if (v5 && (opt & 0xC0))
				return MQTT_EMALFORMED; /* [MQTT-3.8.3-5] */
			if ((opt & MQTT_SUBOPT_QOS_MASK) == 3)
				return MQTT_EQOS; /* [MQTT-3-8.3-4] */
			if (((opt & MQTT_SUBOPT_RETAIN_HANDLING_MASK) >> MQTT_SUBOPT_RETAIN_HANDLING_SHIFT) == 3)
				return MQTT_EPROTOCOL; /* 5.0 3.8.3.1: Retain Handling 3 */
		}
		if (s->count == UINT16_MAX)
			return MQTT_ETOOBIG; /* more entries than this codec counts */
		s->count++;
	}
	if (s->count == 0)
		return MQTT_EPROTOCOL; /* [MQTT-3.8.3-3] [MQTT-3.10.3-2] */
	return 0;
}

static int decode_suback(struct mqtt_rd *rd, bool v5, uint8_t type, struct mqtt_suback *s)
{
	int rc;

	if ((rc = rd_packet_id(rd, &s->packet_id)) != 0)
		return rc;
	if (!v5 && type == MQTT_PKT_UNSUBACK)
		return 0; /* 3.1.1 UNSUBACK is the packet id alone */
	if (v5 && (rc = mqtt_props_parse(rd, type, &s->props)) != 0)
		return rc;
	s->codes.ptr = rd->pos;
	s->codes.len = rd_left(rd);
	rd->pos = rd->end;
	if (s->codes.len == 0)
		return MQTT_EPROTOCOL; /* one code per filter, and a request has at least one */
	if (!v5) {
		for (size_t i = 0; i < s->codes.len; i++) {
			uint8_t code = s->codes.ptr[i];
			if (code > 2 && code != MQTT_SUBACK_FAILURE)
				return MQTT_EMALFORMED; /* [MQTT-3.9.3-2] */
		}
	}
	return 0;
}

/* 5.0 DISCONNECT and AUTH: both parts may be omitted [MQTT-3.14.2.1] [MQTT-3.15.2.1]. */
static int decode_reason(struct mqtt_rd *rd, uint8_t type, struct mqtt_reason_pkt *r)
{
	int rc;

	if (rd_left(rd) > 0 && (rc = rd_u8(rd, &r->reason)) != 0)
		return rc;
	if (rd_left(rd) > 0)
		return mqtt_props_parse(rd, type, &r->props);
	return 0;
}

static int decode_body(struct mqtt_rd *rd, uint8_t version, struct mqtt_pkt *out)
{
	/* Packets other than CONNECT follow the connection's level; 3.1 and
	 * 3.1.1 share one wire format, and an unknown level reads as 3.1.1. */
	bool v5 = version == MQTT_PROTO_V5;

	/* Every field of the packet's struct reads as zero unless the packet
	 * sets it. PUBLISH and the acks, the packets of every delivery, write
	 * each of their fields themselves; zeroing the whole 584-byte struct
	 * for them (a CONNECT holds two property blocks) was 160 of the ~2,950
	 * instructions of a QoS 1 fan-in delivery. The rest are rare. */
	switch (out->type) {
	case MQTT_PKT_PUBLISH:
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBREL:
	case MQTT_PKT_PUBCOMP:
		break;
	default:
		memset(&out->u, 0, sizeof(out->u));
		break;
	}
	switch (out->type) {
	case MQTT_PKT_CONNECT:
		return decode_connect(rd, &out->u.connect);
	case MQTT_PKT_CONNACK:
		return decode_connack(rd, v5, &out->u.connack);
	case MQTT_PKT_PUBLISH:
		return decode_publish(rd, v5, out->flags, &out->u.publish);
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBREL:
	case MQTT_PKT_PUBCOMP:
		return decode_ack(rd, v5, out->type, &out->u.ack);
	case MQTT_PKT_SUBSCRIBE:
		return decode_subscribe(rd, v5, true, &out->u.subscribe);
	case MQTT_PKT_UNSUBSCRIBE:
		return decode_subscribe(rd, v5, false, &out->u.subscribe);
	case MQTT_PKT_SUBACK:
	case MQTT_PKT_UNSUBACK:
		return decode_suback(rd, v5, out->type, &out->u.suback);
	case MQTT_PKT_PINGREQ:
	case MQTT_PKT_PINGRESP:
		return 0; /* Remaining Length 0: any byte is trailing */
	case MQTT_PKT_DISCONNECT:
		return v5 ? decode_reason(rd, out->type, &out->u.reason) : 0;
	case MQTT_PKT_AUTH:
		return decode_reason(rd, out->type, &out->u.reason); /* v5 only, checked before */
	default:
		return MQTT_ETYPE;
	}
}

ssize_t mqtt_decode(const uint8_t *buf, size_t len, const struct mqtt_codec_opts *opts,
		    struct mqtt_pkt *out)
{
	struct mqtt_rd rd;
	ssize_t total;
	uint32_t rl;
	size_t hdr;
	int rc;

	if (opts == NULL)
		opts = &default_opts;
	if (len < 1)
		return 0;
	rc = check_first_byte(buf[0], opts->version);
	if (rc != 0)
		return rc;
	total = read_fixed_header(buf, len, opts, &rl, &hdr);
	if (total <= 0)
		return total;
	if ((size_t)total > len)
		return 0;

	out->type = (uint8_t)(buf[0] >> 4);
	out->flags = (uint8_t)(buf[0] & 0x0F);
	out->remaining_len = rl;
	rd.pos = buf + hdr;
	rd.end = buf + total;
	rc = decode_body(&rd, opts->version, out);
	if (rc != 0)
		return rc;
	if (rd.pos != rd.end)
		return MQTT_EMALFORMED; /* bytes the Remaining Length covers but the packet does not use */
	return total;
}

void mqtt_sub_iter_init(const struct mqtt_subscribe *sub, bool is_subscribe, struct mqtt_sub_iter *out)
{
	out->pos = sub->entries.ptr;
	out->end = sub->entries.ptr ? sub->entries.ptr + sub->entries.len : NULL;
	out->with_options = is_subscribe;
}

int mqtt_sub_next(struct mqtt_sub_iter *it, struct mqtt_str *filter, uint8_t *options)
{
	struct mqtt_rd rd = {it->pos, it->end};
	uint8_t opt = 0;

	if (it->pos == NULL || it->pos >= it->end)
		return 0;
	if (rd_bin(&rd, filter) != 0 || (it->with_options && rd_u8(&rd, &opt) != 0)) {
		it->pos = it->end; /* unreachable on decoded packets; ends the walk safely */
		return 0;
	}
	if (options != NULL)
		*options = opt;
	it->pos = rd.pos;
	return 1;
}
