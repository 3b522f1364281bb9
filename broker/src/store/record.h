/*
 * The persistent store's on-disk vocabulary: file headers, record frames and
 * the records themselves. Pure functions over caller buffers (no I/O, no
 * allocation, no globals besides the CRC table), so the loader can be fuzzed
 * and the format unit-tested byte for byte. docs/persistence.md is the
 * normative description of the layout; this header is its C mirror.
 *
 * Layout (all integers little-endian):
 *   file header, 32 bytes: magic[8] ("WISP-LOG" or "WISPSNAP"), u32 format
 *     version, u32 salt, u64 generation, u32 reserved (0),
 *     u32 crc32c(bytes 0..27).
 *   record frame, 16 bytes + payload: u32 payload length, u8 type, u8 record
 *     version, u16 reserved (0), u32 header crc, u32 payload crc, payload.
 *     The version is 1 for every record except a SESSION_PUT that names its
 *     owner (2) or its claim time (3); the decoder takes the version from
 *     the frame, the encoder derives it from the record.
 * Both CRCs are CRC-32C seeded with the file's random salt, so a frame that
 * a client smuggled inside a message payload never validates when the
 * loader resynchronises after damage.
 */
#ifndef WISP_STORE_RECORD_H
#define WISP_STORE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STORE_FORMAT_VERSION 1u
#define STORE_REC_VERSION 1u
/* SESSION_PUT alone has a second version, which adds the session's owner;
 * a session without a known owner is still written as version 1. */
#define STORE_REC_VERSION_SESSION_OWNER 2u
/* SESSION_PUT's third version adds, after the owner (which may be NONE
 * there), the claim time of the session's last connect at a cluster node
 * (cluster/presence.h); a session without one is still written as 1 or 2. */
#define STORE_REC_VERSION_SESSION_CLAIM 3u
/* QUEUE_ADD and FLIGHT_SET have a second version, which adds the MQTT 5
 * Subscription Identifiers of the delivery; one without any (every 3.1.1
 * delivery) is still written as version 1. */
#define STORE_REC_VERSION_SUB_IDS 2u
/* STREAM_TAKEN's second version adds the newest JetStream time stamp
 * routed; version 1 (an earlier Wisp) has none. */
#define STORE_REC_VERSION_TAKEN_STAMP 2u
/* Identifiers a delivery record may carry (one per matching subscription). */
#define STORE_MAX_SUB_IDS 65535u
#define STORE_FILE_HDR 32u
#define STORE_FRAME_HDR 16u
/* MQTT's largest payload (268,435,455) plus topic, properties and slack. */
#define STORE_MAX_PAYLOAD (268435455u + 65535u + 16u * 65536u)

enum store_file_kind {
	STORE_FILE_LOG = 0,
	STORE_FILE_SNAP = 1,
};

enum store_rec_type {
	STORE_REC_MSG_PUT = 1,
	STORE_REC_MSG_DEL = 2,
	STORE_REC_RETAIN_SET = 3,
	STORE_REC_RETAIN_DEL = 4,
	STORE_REC_SESSION_PUT = 5,
	STORE_REC_SESSION_DEL = 6,
	STORE_REC_SUB_ADD = 7,
	STORE_REC_SUB_DEL = 8,
	STORE_REC_QUEUE_ADD = 9,
	STORE_REC_QUEUE_DEL = 10,
	STORE_REC_FLIGHT_SET = 11,
	STORE_REC_FLIGHT_DEL = 12,
	STORE_REC_QOS2_IN_ADD = 13,
	STORE_REC_QOS2_IN_DEL = 14,
	STORE_REC_WILL_SET = 15,
	STORE_REC_WILL_DEL = 16,
	STORE_REC_FWD_ADD = 17,
	STORE_REC_FWD_DEL = 18,
	STORE_REC_STREAM_TAKEN = 19,
	STORE_REC_RETAIN_UNSENT = 20,
	STORE_REC_RETAIN_SENT = 21,
	STORE_REC_TYPE_MAX = 21,
};

/* Message flags (store_msg.flags, store_queue.flags, store_flight.flags). */
#define STORE_MSG_RETAIN 0x01u /* retain flag as published / as to be sent */
#define STORE_MSG_DUP 0x02u    /* flight: DUP must be set on resend */
#define STORE_MSG_FLAGS_KNOWN 0x03u

/* Outbound in-flight states: the packet the broker waits for. */
enum store_flight_state {
	STORE_FLIGHT_WAIT_PUBACK = 1,  /* QoS 1 PUBLISH sent */
	STORE_FLIGHT_WAIT_PUBREC = 2,  /* QoS 2 PUBLISH sent */
	STORE_FLIGHT_WAIT_PUBCOMP = 3, /* QoS 2 PUBREL sent; message may be gone */
};

/* Views into a record buffer or into the caller's data; never owned. */
struct store_str {
	const char *ptr;
	size_t len; /* <= 65535 */
};

struct store_bytes {
	const uint8_t *ptr;
	size_t len;
};

/* MSG_PUT: one application message, shared by every reference to `id`. */
struct store_msg {
	uint64_t id;        /* != 0, from store_next_msg_id() */
	uint64_t expiry;    /* absolute Unix seconds (MQTT 5 expiry), 0 = never */
	uint8_t qos;        /* as published, 0..2 */
	uint8_t flags;      /* STORE_MSG_RETAIN */
	struct store_str topic;
	struct store_bytes props;   /* MQTT 5 properties to forward, opaque */
	struct store_bytes payload;
};

/* RETAIN_SET (topic -> msg_id) and RETAIN_DEL (topic; msg_id unused). */
struct store_retain {
	struct store_str topic;
	uint64_t msg_id;
};

/* Who a persistent session belongs to (proto/handle_connect.c refuses its
 * client id to anyone else). NONE: not known, as for a session written by a
 * Wisp that did not record owners; its next login binds it. */
enum store_owner {
	STORE_OWNER_NONE = 0,      /* SESSION_PUT version 1 */
	STORE_OWNER_USER = 1,      /* version 2, owner_name is the user name */
	STORE_OWNER_ANONYMOUS = 2, /* version 2, owner_name empty */
};

/* SESSION_PUT creates or updates a persistent session's metadata without
 * touching its subscriptions or messages; SESSION_DEL (client only; owner
 * NONE) drops the session with everything it owns. */
struct store_session {
	struct store_str client;
	uint8_t proto;          /* MQTT protocol level (3, 4, 5) */
	uint8_t flags;          /* reserved for the broker, stored verbatim */
	uint16_t next_packet_id;
	uint32_t expiry_s;      /* MQTT 5 session expiry interval */
	uint8_t owner;          /* enum store_owner */
	struct store_str owner_name; /* USER: the user name (no NUL byte, may be empty) */
	uint64_t claim_ns;      /* version 3: the last connect's cluster claim time, ns; 0 = not recorded */
};

/* SUB_ADD (upsert by client+filter) and SUB_DEL (client, filter). */
struct store_sub {
	struct store_str client;
	struct store_str filter;
	uint8_t options;        /* SUBSCRIBE options byte (QoS, v5 bits) */
	uint32_t sub_id;        /* MQTT 5 subscription identifier, 0 = none */
};

/* QUEUE_ADD appends msg_id to the client's queue; QUEUE_DEL removes it
 * (qos, flags unused). */
struct store_queue {
	struct store_str client;
	uint64_t msg_id;
	uint8_t qos;            /* delivery QoS for this session */
	uint8_t flags;          /* STORE_MSG_RETAIN as it goes on the wire */
	struct store_bytes sub_ids; /* QUEUE_ADD: 4 bytes (u32 LE) per identifier, each 1..268435455 */
};

/* FLIGHT_SET upserts the in-flight entry keyed by client+packet_id and
 * removes msg_id from that client's queue if it is there; msg_id 0 means
 * the message is no longer needed (PUBREL phase). FLIGHT_DEL: client,
 * packet_id. */
struct store_flight {
	struct store_str client;
	uint64_t msg_id;
	uint16_t packet_id;     /* != 0 */
	uint8_t state;          /* enum store_flight_state */
	uint8_t qos;
	uint8_t flags;          /* STORE_MSG_RETAIN, STORE_MSG_DUP */
	struct store_bytes sub_ids; /* as in struct store_queue */
};

/* QOS2_IN_ADD / QOS2_IN_DEL: inbound QoS 2 packet id awaiting PUBREL. */
struct store_qos2 {
	struct store_str client;
	uint16_t packet_id;     /* != 0 */
};

/* WILL_SET: the will of a v5 persistent session's connection, kept so
 * that after kill -9 it is published at the earlier of its Will Delay
 * Interval and the session's end, counted from the restart, unless the
 * client reconnects first. Self-contained (not a MSG_PUT reference): it is
 * replaced or deleted whole. WILL_DEL: client only. */
struct store_will {
	struct store_str client;
	uint32_t delay_s;         /* Will Delay Interval */
	uint32_t expiry_s;        /* reserved, written 0: the will's Message Expiry Interval is among its props */
	uint8_t qos;
	uint8_t flags;            /* STORE_MSG_RETAIN */
	struct store_str topic;
	struct store_bytes props; /* forwarded will properties, opaque */
	struct store_bytes payload;
};

/* FWD_ADD: a message this node acknowledged to its publisher while
 * JetStream was out of reach, waiting to be published to the cluster's
 * stream (cluster/durable.c) with its NATS message id `id`, so that
 * JetStream drops a second copy of it; FWD_DEL (msg_id only): it is in
 * the stream now. */
struct store_fwd {
	uint64_t msg_id;
	struct store_str id;    /* FWD_ADD: the Nats-Msg-Id, 1..255 bytes */
};

/* STREAM_TAKEN: the cluster's stream message `seq` was routed by this
 * node, the copies it made for persistent sessions appended before this
 * record, and every stream sequence up to `floor` was routed too
 * (cluster/durable.c), so a redelivery after a restart is not routed a
 * second time. A floor lower than the last one starts a new window
 * (earlier builds wrote one when the stream was made anew; the window now
 * only moves up, the stamp telling a new stream's messages apart). `stamp`, the newest JetStream time stamp routed
 * so far, tells a redelivery from a new message that got a sequence again
 * (a NATS server that lost its last writes). */
struct store_stream_taken {
	uint64_t floor;
	uint64_t seq;           /* > 0 */
	uint64_t stamp;         /* ns since the epoch; 0: not known (version 1) */
};

/* RETAIN_UNSENT: this node's retained write to `topic` (the RETAIN_SET or
 * RETAIN_DEL before it, or the topic's value in a snapshot) has not reached
 * the cluster's retained bucket yet (cluster/retained_kv.c); it is
 * published again with the NATS message id `id`, so that JetStream drops
 * a second copy. RETAIN_SENT (topic only): the topic's last write is in
 * the bucket now. */
struct store_retain_mark {
	struct store_str topic; /* 1..65535 bytes */
	struct store_str id;    /* RETAIN_UNSENT: the Nats-Msg-Id, 1..255 bytes */
};

struct store_rec {
	uint8_t type; /* enum store_rec_type */
	union {
		struct store_msg msg;        /* MSG_PUT */
		uint64_t msg_id;             /* MSG_DEL */
		struct store_retain retain;  /* RETAIN_SET, RETAIN_DEL */
		struct store_session session;/* SESSION_PUT, SESSION_DEL */
		struct store_sub sub;        /* SUB_ADD, SUB_DEL */
		struct store_queue queue;    /* QUEUE_ADD, QUEUE_DEL */
		struct store_flight flight;  /* FLIGHT_SET, FLIGHT_DEL */
		struct store_qos2 qos2;      /* QOS2_IN_ADD, QOS2_IN_DEL */
		struct store_will will;      /* WILL_SET, WILL_DEL */
		struct store_fwd fwd;        /* FWD_ADD, FWD_DEL */
		struct store_stream_taken taken; /* STREAM_TAKEN */
		struct store_retain_mark mark; /* RETAIN_UNSENT, RETAIN_SENT */
	} u;
};

/* CRC-32C (Castagnoli), table-driven (slicing by 8). `crc` is the previous
 * value (0 to start, or a salt). Thread-safe. */
uint32_t store_crc32c(uint32_t crc, const void *data, size_t len);

const char *store_rec_type_name(uint8_t type);

/* Bytes the frame of `r` takes (header + payload), or a negative WISP_EINVAL
 * when a field is out of range (string over 65535, qos 3, ...). */
ssize_t store_rec_size(const struct store_rec *r);

/* Writes the frame of `r` into buf; returns its size, WISP_EINVAL for a bad
 * record, or WISP_ELIMIT when cap is too small. Borrows everything. */
ssize_t store_rec_encode(const struct store_rec *r, uint32_t salt, uint8_t *buf, size_t cap);

/* Decodes one record payload (frame already checked). `out` holds views into
 * `p`. 0, WISP_ENOENT for an unknown type or version (a newer writer), or
 * WISP_EPROTO for a malformed payload. Canonical: encoding `out` again gives
 * the same bytes. */
int store_rec_decode(uint8_t type, uint8_t version, const uint8_t *p, size_t len,
		     struct store_rec *out);

enum store_frame_status {
	STORE_FRAME_OK = 0,
	STORE_FRAME_SHORT = 1,   /* fewer bytes than the frame claims */
	STORE_FRAME_BAD_HDR = 2, /* header CRC or reserved fields wrong */
	STORE_FRAME_BAD_CRC = 3, /* header sound, payload CRC wrong */
};

/* Checks the frame at buf. On OK and BAD_CRC, *total is the frame size. */
enum store_frame_status store_frame_check(const uint8_t *buf, size_t len, uint32_t salt,
					  size_t *total);

void store_file_header_encode(enum store_file_kind kind, uint64_t gen, uint32_t salt,
			      uint8_t out[STORE_FILE_HDR]);

/* 0, or WISP_EPROTO with *why set ("bad magic", ...). *gen and *salt on 0. */
int store_file_header_check(const uint8_t *buf, size_t len, enum store_file_kind kind,
			    uint64_t *gen, uint32_t *salt, const char **why);

#endif
