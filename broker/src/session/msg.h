/*
 * A published application message, shared by reference among every
 * subscriber it is delivered to, the retained store and the durable store.
 * One allocation holds the header and, contiguous, the topic, the v5
 * properties forwarded with it and the payload (blocks of at most 128
 * bytes are recycled through size-class free lists, msg.c):
 *
 *     data[] = topic | props | payload
 *
 * so a delivery writes the shared parts straight from here: a 3.1.1 QoS 0
 * delivery of a message without properties is two iovecs (per-subscriber
 * head, then topic+payload), and a v5 one sends props+payload as one piece
 * after its per-subscriber middle part.
 *
 * `props` holds only what is forwarded unchanged and in order (Payload
 * Format Indicator, Content Type, Response Topic, Correlation Data, User
 * Properties [MQTT-3.3.2-17, MQTT-3.3.2-18]); what differs per delivery (Topic
 * Alias, Subscription Identifiers, the remaining Message Expiry Interval)
 * is written per subscriber by the encoder.
 *
 * `expires_at` is the loop second (loop_now_s) from which the message is
 * no longer delivered [MQTT-3.3.2-5]; 0 never expires.
 *
 * `origin` identifies the publishing session, for No Local [MQTT-3.8.3-3]
 * and, later, loop prevention between cluster nodes. It is compared, never
 * dereferenced: the message may outlive its publisher, and only routing
 * (which runs while the publisher is alive) looks at it. NULL: the
 * broker's own ($SYS) or a restored message.
 *
 * `stored` is the durable store's bookkeeping (proto/persist.c: record id,
 * how many records need it), opaque here: NULL while the message has no
 * record in the store. Only messages bound for the disk pay for it; a
 * block the store leaves behind at shutdown goes with the message.
 *
 * Immutable after creation and before it is shared; then only the
 * reference count (and `stored`, by the store) changes. Single threaded.
 */
#ifndef WISP_SESSION_MSG_H
#define WISP_SESSION_MSG_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct persist_msg; /* proto/persist.c */

struct msg {
	uint32_t refcnt;
	uint8_t qos;       /* as published */
	bool retain;       /* as published */
	uint16_t topic_len;
	uint32_t payload_len;
	uint32_t props_len;
	/* Loop seconds fit 32 bits (as loop timers' do): a larger expiry is
	 * stored as UINT32_MAX, 136 years after the broker started. */
	uint32_t expires_at;
	/* Where topic | props | payload start after data[]: 0, except in a
	 * message adopted from the input buffer its PUBLISH was read into
	 * (msg_adopt), whose payload stayed where it was read. */
	uint32_t data_off;
	const void *origin;
	struct persist_msg *stored;
	char data[];       /* (data_off bytes unused), topic, then props, then payload */
};
_Static_assert(sizeof(struct msg) == 40, "the message header stays 40 bytes");

/* What a message is made of; the bytes are copied. */
struct msg_spec {
	const char *topic;
	size_t topic_len;
	const uint8_t *props;  /* forwarded v5 properties; NULL: written by the creator (msg_props_mut) */
	size_t props_len;
	const void *payload;
	size_t payload_len;
	uint8_t qos;
	bool retain;
	uint64_t expires_at;   /* loop second, 0 = never */
	const void *origin;
};

/* A message with one reference, or NULL when out of memory or when a
 * length does not fit its field. */
struct msg *msg_create(const struct msg_spec *spec);

/*
 * A message made from a PUBLISH already in memory, without copying its
 * payload: `block` is a wisp_malloc'd allocation whose first
 * sizeof(struct msg) bytes are free and which holds the packet after them,
 * with spec->payload (and spec->topic and spec->props, which may lie in it
 * or elsewhere) pointing into it. The topic and props are moved to just
 * before the payload and the header is written at the start of the block,
 * which becomes the message (one reference; freed with it). NULL, with the
 * block untouched, when the bytes before the payload cannot hold the
 * header, topic and props (a v5 topic alias longer than the packet's
 * topic) or a length does not fit: the caller then uses msg_create.
 * spec->props must not be NULL when props_len is not 0.
 */
struct msg *msg_adopt(void *block, const struct msg_spec *spec);

/* The common case: no properties, no expiry, no origin. */
struct msg *msg_new(const char *topic, size_t topic_len, const void *payload, size_t payload_len,
		    uint8_t qos, bool retain);

static inline struct msg *msg_ref(struct msg *m)
{
	assert(m->refcnt > 0);
	m->refcnt++;
	return m;
}

void msg_unref(struct msg *m);

/* Releases the free lists of small message blocks (at shutdown, so leak
 * checkers stay quiet, and in tests that count the heap). */
void msg_release_cache(void);

static inline const char *msg_topic(const struct msg *m) { return m->data + m->data_off; }
static inline const uint8_t *msg_props(const struct msg *m)
{
	return (const uint8_t *)m->data + m->data_off + m->topic_len;
}
static inline const uint8_t *msg_payload(const struct msg *m)
{
	return (const uint8_t *)m->data + m->data_off + m->topic_len + m->props_len;
}
/* The property block, writable by the message's creator only, before it
 * shares the message (msg_create with spec->props NULL leaves it unset). */
static inline uint8_t *msg_props_mut(struct msg *m)
{
	return (uint8_t *)m->data + m->data_off + m->topic_len;
}
/* Whether the message is past its Message Expiry Interval at loop second `now`. */
static inline bool msg_expired(const struct msg *m, uint64_t now)
{
	return m->expires_at != 0 && now >= m->expires_at;
}
/* Seconds left of its Message Expiry Interval at `now` (at least 1 while not
 * expired), for the value forwarded [MQTT-3.3.2-6]; 0 if it has none. */
static inline uint32_t msg_expiry_left(const struct msg *m, uint64_t now)
{
	if (!m->expires_at)
		return 0;
	if (now >= m->expires_at)
		return 1;
	uint64_t left = m->expires_at - now;
	return left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
}
/* Bytes the message accounts for in queue limits. */
static inline size_t msg_size(const struct msg *m)
{
	return sizeof *m + m->data_off + m->topic_len + m->props_len + m->payload_len;
}

#endif
