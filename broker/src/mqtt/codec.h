/*
 * MQTT packet codec: bytes in, structs out, and structs in, bytes out.
 *
 * Pure: no I/O, no globals, no allocation. Decoded packets hold (ptr, len)
 * views into the caller's buffer, valid as long as that buffer is. Shared by
 * the broker, the client tools and the fuzzers. Speaks MQTT 3.1 (level 3),
 * 3.1.1 (level 4) and 5.0 (level 5); the version a packet is read with comes
 * from the CONNECT of its connection, so callers pass it in `opts`.
 *
 * Cost model: decoding is one pass over the packet; lists inside a packet
 * (subscription entries, v5 user properties) are validated during that pass
 * and then walked lazily with the iterators below, so no packet needs storage
 * proportional to its size.
 */
#ifndef WISP_MQTT_CODEC_H
#define WISP_MQTT_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MQTT_PROTO_V31  3 /* "MQIsdp" */
#define MQTT_PROTO_V311 4
#define MQTT_PROTO_V5   5

/* The largest Remaining Length a 4-byte varint can carry [MQTT-2.2.3]. */
#define MQTT_MAX_REMAINING_LEN 268435455u
/* Fixed header: one type byte plus at most four length bytes. */
#define MQTT_MAX_FIXED_HEADER 5

enum mqtt_pkt_type {
	MQTT_PKT_CONNECT = 1,
	MQTT_PKT_CONNACK = 2,
	MQTT_PKT_PUBLISH = 3,
	MQTT_PKT_PUBACK = 4,
	MQTT_PKT_PUBREC = 5,
	MQTT_PKT_PUBREL = 6,
	MQTT_PKT_PUBCOMP = 7,
	MQTT_PKT_SUBSCRIBE = 8,
	MQTT_PKT_SUBACK = 9,
	MQTT_PKT_UNSUBSCRIBE = 10,
	MQTT_PKT_UNSUBACK = 11,
	MQTT_PKT_PINGREQ = 12,
	MQTT_PKT_PINGRESP = 13,
	MQTT_PKT_DISCONNECT = 14,
	MQTT_PKT_AUTH = 15, /* v5 only */
};

/* Decoder and encoder errors. Negative so that ssize_t results can carry them. */
#define MQTT_ERR_LIST(X)                                                       \
	X(MQTT_EMALFORMED, -1, "malformed packet")                             \
	X(MQTT_EPROTOCOL, -2, "protocol error")                                \
	X(MQTT_ETOOBIG, -3, "packet exceeds the maximum packet size")          \
	X(MQTT_EVARINT, -4, "bad remaining length encoding")                   \
	X(MQTT_EFLAGS, -5, "reserved fixed-header flags set")                  \
	X(MQTT_EUTF8, -6, "invalid UTF-8 string")                              \
	X(MQTT_EQOS, -7, "invalid QoS")                                        \
	X(MQTT_ETYPE, -8, "unknown packet type")                               \
	X(MQTT_EVERSION, -9, "unsupported protocol name or level")             \
	X(MQTT_EPROPS, -10, "invalid property")                                \
	X(MQTT_ENOSPC, -11, "output buffer too small")                         \
	X(MQTT_EINVAL, -12, "invalid argument to encoder")                     \
	X(MQTT_EPROTONAME, -13, "unknown protocol name")

enum mqtt_err {
#define MQTT_ERR_ENUM(name, value, text) name = value,
	MQTT_ERR_LIST(MQTT_ERR_ENUM)
#undef MQTT_ERR_ENUM
};

/* Text for an MQTT_E* value; "unknown error" for anything else. */
const char *mqtt_strerror(int err);

/* A view of a length-prefixed string or binary field inside a packet. */
struct mqtt_str {
	const uint8_t *ptr;
	size_t len;
};

/*
 * MQTT 5 properties. Scalar properties land in named fields with a bit in
 * `present`; repeatable ones (user properties, subscription identifiers in a
 * PUBLISH) stay in the raw block and are walked with mqtt_props_next().
 * `raw` is the property block without its length prefix, so a broker can
 * forward a PUBLISH's properties without re-encoding them.
 */
enum mqtt_prop_id {
	MQTT_PROP_PAYLOAD_FORMAT = 0x01,
	MQTT_PROP_MESSAGE_EXPIRY = 0x02,
	MQTT_PROP_CONTENT_TYPE = 0x03,
	MQTT_PROP_RESPONSE_TOPIC = 0x08,
	MQTT_PROP_CORRELATION_DATA = 0x09,
	MQTT_PROP_SUBSCRIPTION_ID = 0x0B,
	MQTT_PROP_SESSION_EXPIRY = 0x11,
	MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,
	MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,
	MQTT_PROP_AUTH_METHOD = 0x15,
	MQTT_PROP_AUTH_DATA = 0x16,
	MQTT_PROP_REQUEST_PROBLEM_INFO = 0x17,
	MQTT_PROP_WILL_DELAY = 0x18,
	MQTT_PROP_REQUEST_RESPONSE_INFO = 0x19,
	MQTT_PROP_RESPONSE_INFO = 0x1A,
	MQTT_PROP_SERVER_REFERENCE = 0x1C,
	MQTT_PROP_REASON_STRING = 0x1F,
	MQTT_PROP_RECEIVE_MAXIMUM = 0x21,
	MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
	MQTT_PROP_TOPIC_ALIAS = 0x23,
	MQTT_PROP_MAXIMUM_QOS = 0x24,
	MQTT_PROP_RETAIN_AVAILABLE = 0x25,
	MQTT_PROP_USER_PROPERTY = 0x26,
	MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,
	MQTT_PROP_WILDCARD_SUB_AVAILABLE = 0x28,
	MQTT_PROP_SUB_ID_AVAILABLE = 0x29,
	MQTT_PROP_SHARED_SUB_AVAILABLE = 0x2A,
};

/* Bit (1ull << id) in mqtt_props.present for each scalar property seen. */
#define MQTT_PROP_BIT(id) (1ull << (id))

struct mqtt_props {
	uint64_t present;
	struct mqtt_str raw;
	uint8_t payload_format;
	uint32_t message_expiry;
	struct mqtt_str content_type;
	struct mqtt_str response_topic;
	struct mqtt_str correlation_data;
	uint32_t subscription_id; /* first one; PUBLISH may carry several */
	uint32_t session_expiry;
	struct mqtt_str assigned_client_id;
	uint16_t server_keep_alive;
	struct mqtt_str auth_method;
	struct mqtt_str auth_data;
	uint8_t request_problem_info;
	uint32_t will_delay;
	uint8_t request_response_info;
	struct mqtt_str response_info;
	struct mqtt_str server_reference;
	struct mqtt_str reason_string;
	uint16_t receive_maximum;
	uint16_t topic_alias_maximum;
	uint16_t topic_alias;
	uint8_t maximum_qos;
	uint8_t retain_available;
	uint32_t maximum_packet_size;
	uint8_t wildcard_sub_available;
	uint8_t sub_id_available;
	uint8_t shared_sub_available;
	uint32_t user_property_count; /* a packet of max_packet_size can hold millions */
};

/* One property as the iterator yields it. */
struct mqtt_prop {
	uint8_t id;
	uint32_t value;        /* byte, two-byte, four-byte and varint properties */
	struct mqtt_str str;   /* string and binary properties; the key of a user property */
	struct mqtt_str value_str; /* the value of a user property */
};

struct mqtt_prop_iter {
	const uint8_t *pos;
	const uint8_t *end;
};

void mqtt_props_iter_init(const struct mqtt_props *props, struct mqtt_prop_iter *out);
/* 1 and fills `out` while properties remain, 0 at the end. The block was
 * validated by the decoder, so it cannot fail on decoded packets. */
int mqtt_props_next(struct mqtt_prop_iter *it, struct mqtt_prop *out);

/* Copies the block's properties whose bit (MQTT_PROP_BIT) is not in
 * `drop` to `out`, unchanged and in order; returns their length (with
 * `out` NULL, only measures). `present` must describe the block (as
 * decoded): nothing dropped is one memcpy. */
size_t mqtt_props_filter(const struct mqtt_props *props, uint64_t drop, uint8_t *out);
/* 1 and the first property `id` in `out`, or 0. Only `raw` is read. */
int mqtt_props_find(const struct mqtt_props *props, uint8_t id, struct mqtt_prop *out);

/* CONNECT flags byte [MQTT-3.1.2.3]. */
#define MQTT_CONNECT_CLEAN 0x02
#define MQTT_CONNECT_WILL 0x04
#define MQTT_CONNECT_WILL_RETAIN 0x20
#define MQTT_CONNECT_PASSWORD 0x40
#define MQTT_CONNECT_USERNAME 0x80

struct mqtt_connect {
	uint8_t version;          /* 3, 4 or 5 */
	bool clean_start;         /* clean session in 3.1.1 */
	uint16_t keepalive;
	struct mqtt_str client_id;
	bool has_will;
	uint8_t will_qos;
	bool will_retain;
	struct mqtt_str will_topic;
	struct mqtt_str will_payload;
	struct mqtt_props will_props; /* v5 */
	bool has_username;
	struct mqtt_str username;
	bool has_password;
	struct mqtt_str password;
	struct mqtt_props props;  /* v5 */
};

/* CONNACK return codes of 3.1/3.1.1 [MQTT-3.2.2.3]. v5 reason codes are in
 * the same byte and listed with the other reason codes below. */
enum mqtt_connack_code {
	MQTT_CONNACK_ACCEPTED = 0,
	MQTT_CONNACK_BAD_PROTOCOL = 1,
	MQTT_CONNACK_ID_REJECTED = 2,
	MQTT_CONNACK_SERVER_UNAVAILABLE = 3,
	MQTT_CONNACK_BAD_CREDENTIALS = 4,
	MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

/* MQTT 5 reason codes used by the broker [MQTT-2.4]. */
enum mqtt_reason {
	MQTT_RC_SUCCESS = 0x00,
	MQTT_RC_GRANTED_QOS1 = 0x01,
	MQTT_RC_GRANTED_QOS2 = 0x02,
	MQTT_RC_DISCONNECT_WITH_WILL = 0x04,
	MQTT_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
	MQTT_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
	MQTT_RC_UNSPECIFIED = 0x80,
	MQTT_RC_MALFORMED = 0x81,
	MQTT_RC_PROTOCOL_ERROR = 0x82,
	MQTT_RC_IMPL_SPECIFIC = 0x83,
	MQTT_RC_UNSUPPORTED_VERSION = 0x84,
	MQTT_RC_CLIENT_ID_INVALID = 0x85,
	MQTT_RC_BAD_CREDENTIALS = 0x86,
	MQTT_RC_NOT_AUTHORIZED = 0x87,
	MQTT_RC_SERVER_UNAVAILABLE = 0x88,
	MQTT_RC_SERVER_BUSY = 0x89,
	MQTT_RC_SESSION_TAKEN_OVER = 0x8E,
	MQTT_RC_TOPIC_FILTER_INVALID = 0x8F,
	MQTT_RC_TOPIC_NAME_INVALID = 0x90,
	MQTT_RC_PACKET_ID_IN_USE = 0x91,
	MQTT_RC_PACKET_ID_NOT_FOUND = 0x92,
	MQTT_RC_RECEIVE_MAX_EXCEEDED = 0x93,
	MQTT_RC_PACKET_TOO_LARGE = 0x95,
	MQTT_RC_QUOTA_EXCEEDED = 0x97,
	MQTT_RC_KEEP_ALIVE_TIMEOUT = 0x8D,
	MQTT_RC_QOS_NOT_SUPPORTED = 0x9B,
	MQTT_RC_PAYLOAD_FORMAT_INVALID = 0x99,
	MQTT_RC_SHARED_SUB_NOT_SUPPORTED = 0x9E,
};

/* The 3.1.1 SUBACK failure return code [MQTT-3.9.3]. */
#define MQTT_SUBACK_FAILURE 0x80

struct mqtt_connack {
	bool session_present;
	uint8_t code; /* enum mqtt_connack_code, or a v5 reason code */
	struct mqtt_props props;
};

struct mqtt_publish {
	uint8_t qos;
	bool dup;
	bool retain;
	struct mqtt_str topic;  /* may be empty in v5 when a topic alias is set */
	bool topic_control;     /* the topic holds a control character (mqtt_utf8_scan) */
	uint16_t packet_id;     /* 0 for QoS 0 */
	struct mqtt_str payload;
	struct mqtt_props props;
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP. `reason` is 0 for 3.1.1 and for a v5
 * ack whose Remaining Length is 2. */
struct mqtt_ack {
	uint16_t packet_id;
	uint8_t reason;
	struct mqtt_props props;
};

/* Subscription options byte: QoS in bits 0-1, v5 options above. */
#define MQTT_SUBOPT_QOS_MASK 0x03
#define MQTT_SUBOPT_NO_LOCAL 0x04
#define MQTT_SUBOPT_RETAIN_AS_PUBLISHED 0x08
#define MQTT_SUBOPT_RETAIN_HANDLING_SHIFT 4
#define MQTT_SUBOPT_RETAIN_HANDLING_MASK 0x30

/* SUBSCRIBE and UNSUBSCRIBE. `entries` is the validated payload; walk it with
 * mqtt_sub_next(). `count` is the number of entries (at least one; a packet
 * with more than 65535 entries, or a property block with more than 65535
 * user properties, is refused with MQTT_ETOOBIG). */
struct mqtt_subscribe {
	uint16_t packet_id;
	struct mqtt_props props;
	struct mqtt_str entries;
	uint16_t count;
};

struct mqtt_sub_iter {
	const uint8_t *pos;
	const uint8_t *end;
	bool with_options; /* SUBSCRIBE entries carry an options byte, UNSUBSCRIBE's do not */
};

void mqtt_sub_iter_init(const struct mqtt_subscribe *sub, bool is_subscribe, struct mqtt_sub_iter *out);
/* 1 while entries remain: `filter` and, for SUBSCRIBE, the options byte
 * (whose low two bits are the requested QoS). 0 at the end. */
int mqtt_sub_next(struct mqtt_sub_iter *it, struct mqtt_str *filter, uint8_t *options);

/* SUBACK and UNSUBACK; `codes` holds one byte per filter (UNSUBACK: v5 only). */
struct mqtt_suback {
	uint16_t packet_id;
	struct mqtt_props props;
	struct mqtt_str codes;
};

/* DISCONNECT and AUTH (reason 0 when absent). */
struct mqtt_reason_pkt {
	uint8_t reason;
	struct mqtt_props props;
};

struct mqtt_pkt {
	uint8_t type;      /* enum mqtt_pkt_type */
	uint8_t flags;     /* the low nibble of the fixed header */
	uint32_t remaining_len;
	union {
		struct mqtt_connect connect;
		struct mqtt_connack connack;
		struct mqtt_publish publish;
		struct mqtt_ack ack;
		struct mqtt_subscribe subscribe;   /* and UNSUBSCRIBE */
		struct mqtt_suback suback;         /* and UNSUBACK */
		struct mqtt_reason_pkt reason;     /* DISCONNECT, AUTH */
	} u;
};

struct mqtt_codec_opts {
	/* Packets whose whole size (fixed header included) exceeds this are
	 * rejected with MQTT_ETOOBIG as soon as the fixed header is read, before
	 * the body has arrived. 0 means the protocol maximum. */
	uint32_t max_packet_size;
	/* Protocol level of the connection: 3, 4 or 5. CONNECT is decoded
	 * whatever this says (it carries its own level); 0 before CONNECT.
	 * Other packets use the 5.0 format only when this is 5 (3.1 and 3.1.1
	 * share one); AUTH is MQTT_ETYPE unless it is 5. */
	uint8_t version;
};

/*
 * Reads the fixed header only. Returns the whole packet's size in bytes
 * (> 0), 0 when more bytes are needed to know it, or a negative MQTT_E*
 * (MQTT_EVARINT for a fifth length byte or a non-minimal encoding, MQTT_ETOOBIG
 * past opts->max_packet_size, MQTT_ETYPE for type 0).
 */
ssize_t mqtt_frame_size(const uint8_t *buf, size_t len, const struct mqtt_codec_opts *opts);

/*
 * Decodes one packet from the start of `buf`. Returns the bytes consumed
 * (> 0), 0 when `buf` holds less than a whole packet, or a negative MQTT_E*.
 * `out` borrows from `buf`. Validates everything the specification makes
 * the receiver check: reserved flags per type [MQTT-2.2.2-1], QoS 3
 * [MQTT-3.3.1-4], UTF-8 without U+0000 [MQTT-1.5.3], packet id non-zero
 * where required [MQTT-2.3.1-1], CONNECT flag rules [MQTT-3.1.2-3], at least
 * one SUBSCRIBE entry [MQTT-3.8.3-3], trailing bytes, property rules (v5).
 * Topic name and filter wildcard rules are left to topic/ (a v3 SUBSCRIBE
 * with a bad filter gets 0x80, not a disconnect); an empty PUBLISH topic is
 * refused here (MQTT_EPROTOCOL) unless a v5 Topic Alias stands in for it.
 * On MQTT_EVERSION (a known protocol name with a level not its own) and
 * MQTT_EPROTONAME (neither "MQTT" nor "MQIsdp"), out->type and
 * out->u.connect.version are filled with what the CONNECT said, so the
 * broker can answer in kind [MQTT-3.1.2-1][MQTT-3.1.2-2];
 * after other errors `out` is unspecified. On success every field of the
 * packet type's member of `out->u` is written, zero where the packet
 * carries nothing (a property block it lacks reads as empty); the other
 * members are not, so read only the one `out->type` names.
 */
ssize_t mqtt_decode(const uint8_t *buf, size_t len, const struct mqtt_codec_opts *opts,
		    struct mqtt_pkt *out);

/* Bytes the varint encoding of `value` takes (1..4), or 0 if too large. */
size_t mqtt_varint_size(uint32_t value);
/* Writes `value` as a varint; returns bytes written, or MQTT_ENOSPC/MQTT_EINVAL. */
ssize_t mqtt_varint_encode(uint32_t value, uint8_t *buf, size_t cap);
/* Reads a varint: bytes read (> 0), 0 if incomplete, MQTT_EVARINT if invalid. */
ssize_t mqtt_varint_decode(const uint8_t *buf, size_t len, uint32_t *out);

/* True when `s` is well-formed UTF-8 without U+0000 or surrogates [MQTT-1.5.3]. */
bool mqtt_utf8_valid(const uint8_t *s, size_t len);
/* True when the valid UTF-8 `s` holds a control character U+0001..U+001F
 * or U+007F..U+009F (allowed by [MQTT-1.5.4-3] to be refused; the broker
 * refuses them in client ids, user names, topic names and filters, as
 * Mosquitto does); false for invalid UTF-8. */
bool mqtt_utf8_has_control(const uint8_t *s, size_t len);
/* Both in one pass: -1 invalid UTF-8, 1 valid with a control character as
 * above, 0 valid without. Printable ASCII goes eight bytes at a time. */
int mqtt_utf8_scan(const uint8_t *s, size_t len);

/*
 * Encoders write one whole packet into `buf` and return its length, or
 * MQTT_ENOSPC when `cap` is too small (nothing useful is written then), or
 * MQTT_EINVAL for values the protocol cannot carry. `version` selects the
 * wire format (properties and reason codes exist only for 5).
 * For v5 the property block is taken from `props.raw` as is (the caller
 * builds it with mqtt_props_encode_*), so encoders never re-encode.
 */
ssize_t mqtt_encode_connect(uint8_t *buf, size_t cap, const struct mqtt_connect *c);
ssize_t mqtt_encode_connack(uint8_t *buf, size_t cap, uint8_t version, const struct mqtt_connack *c);
ssize_t mqtt_encode_publish(uint8_t *buf, size_t cap, uint8_t version, const struct mqtt_publish *p);
/* type is one of PUBACK, PUBREC, PUBREL, PUBCOMP. */
ssize_t mqtt_encode_ack(uint8_t *buf, size_t cap, uint8_t version, uint8_t type, const struct mqtt_ack *a);
/* `entries` holds `count` filters; `options` one byte per filter. */
ssize_t mqtt_encode_subscribe(uint8_t *buf, size_t cap, uint8_t version, uint16_t packet_id,
			      const struct mqtt_props *props, const struct mqtt_str *filters,
			      const uint8_t *options, size_t count);
ssize_t mqtt_encode_unsubscribe(uint8_t *buf, size_t cap, uint8_t version, uint16_t packet_id,
				const struct mqtt_props *props, const struct mqtt_str *filters,
				size_t count);
/* type is SUBACK or UNSUBACK (a 3.1.1 UNSUBACK has no codes). */
ssize_t mqtt_encode_suback(uint8_t *buf, size_t cap, uint8_t version, uint8_t type,
			   const struct mqtt_suback *s);
/* PINGREQ, PINGRESP, and the 3.1.1 DISCONNECT: two bytes (MQTT_EINVAL for other types). */
ssize_t mqtt_encode_empty(uint8_t *buf, size_t cap, uint8_t type);
/* DISCONNECT or AUTH with a reason (v5); for version < 5 a plain DISCONNECT. */
ssize_t mqtt_encode_reason(uint8_t *buf, size_t cap, uint8_t version, uint8_t type,
			   const struct mqtt_reason_pkt *r);

/*
 * PUBLISH split for fan-out: the broker shares one copy of topic and payload
 * among all subscribers and writes only the bytes that differ per subscriber.
 * This writes the fixed header, Remaining Length and the topic length prefix
 * into `buf` (the "head"), and the packet id (QoS > 0) plus the v5 property
 * length and properties into `mid`; the caller then sends
 * head | topic | mid | payload. Returns the head's length, or a negative
 * MQTT_E*; `*mid_len` receives the middle part's length.
 */
ssize_t mqtt_encode_publish_parts(uint8_t *head, size_t head_cap, uint8_t *mid, size_t mid_cap,
				  size_t *mid_len, uint8_t version, const struct mqtt_publish *p);

/*
 * PUBLISH split for fan-out when the message carries v5 properties shared by
 * every copy: the broker keeps topic, shared properties and payload in one
 * block and writes per delivery only the head (fixed header, Remaining
 * Length, topic length) and the middle part (packet id; for v5 the
 * property length and the per-delivery properties: Topic Alias, the
 * remaining Message Expiry Interval, Subscription Identifiers). The caller
 * sends head | topic | mid | shared properties | payload. For versions
 * below 5 no property is written and shared_props_len is ignored.
 */
struct mqtt_publish_split {
	uint8_t qos;
	bool dup;
	bool retain;
	uint16_t packet_id;       /* QoS > 0 */
	size_t topic_len;         /* 0 only with a Topic Alias (v5) */
	size_t shared_props_len;  /* v5: property bytes the caller sends after mid */
	size_t payload_len;
	uint16_t topic_alias;     /* v5, 0: none */
	uint32_t message_expiry;  /* v5, 0: none */
	const uint32_t *sub_ids;  /* v5, each 1 to 268,435,455 */
	size_t sub_id_count;
};
/* Returns the head's length (at most MQTT_MAX_FIXED_HEADER + 2), or a
 * negative MQTT_E*; `*mid_len` receives the middle part's length, at most
 * mqtt_publish_split_mid_max(p->sub_id_count). */
ssize_t mqtt_encode_publish_split(uint8_t *head, size_t head_cap, uint8_t *mid, size_t mid_cap,
				  size_t *mid_len, uint8_t version, const struct mqtt_publish_split *p);
size_t mqtt_publish_split_mid_max(size_t sub_id_count);
/* The whole packet's size in bytes, or 0 if it cannot be encoded. */
size_t mqtt_publish_split_size(uint8_t version, const struct mqtt_publish_split *p);
/*
 * The same PUBLISH written whole, for a small delivery copied into one
 * buffer: below 5.0 and with a Remaining Length under 128 (a one-byte
 * varint) only. mqtt_publish_small_size returns its size (at most 129), or
 * 0 when the packet is not such a one or cannot be encoded (the caller then
 * takes mqtt_encode_publish_split, which says why); mqtt_encode_publish_small
 * writes exactly that many bytes: head, topic, packet id, payload.
 */
size_t mqtt_publish_small_size(uint8_t version, const struct mqtt_publish_split *p);
void mqtt_encode_publish_small(uint8_t *buf, const struct mqtt_publish_split *p, const void *topic,
			       const void *payload);

/* Property builders for v5 encoders: append one property to `buf` at `*off`.
 * Return 0, or MQTT_ENOSPC (nothing written, *off unchanged), or MQTT_EINVAL
 * for a string over 65535 bytes or a varint over MQTT_MAX_REMAINING_LEN.
 * The result is what mqtt_props.raw points at. */
int mqtt_props_put_u8(uint8_t *buf, size_t cap, size_t *off, uint8_t id, uint8_t v);
int mqtt_props_put_u16(uint8_t *buf, size_t cap, size_t *off, uint8_t id, uint16_t v);
int mqtt_props_put_u32(uint8_t *buf, size_t cap, size_t *off, uint8_t id, uint32_t v);
int mqtt_props_put_varint(uint8_t *buf, size_t cap, size_t *off, uint8_t id, uint32_t v);
int mqtt_props_put_str(uint8_t *buf, size_t cap, size_t *off, uint8_t id, struct mqtt_str s);
int mqtt_props_put_pair(uint8_t *buf, size_t cap, size_t *off, struct mqtt_str key,
			struct mqtt_str value);

#endif
