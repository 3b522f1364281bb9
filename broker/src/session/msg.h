/*
 * A published application message, shared by reference among every
 * subscriber it is delivered to, the retained store and (later) the
 * persistent store. One allocation holds the header, the topic and the
 * payload, so that topic and payload are contiguous: a QoS 0 delivery is
 * written as two iovecs (per-subscriber head, then topic+payload).
 *
 * Immutable after creation; only the reference count changes. Single threaded.
 */
#ifndef WISP_SESSION_MSG_H
#define WISP_SESSION_MSG_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct msg {
	uint32_t refcnt;
	uint8_t qos;       /* as published */
	bool retain;       /* as published */
	uint16_t topic_len;
	uint32_t payload_len;
	/* Durable store bookkeeping (proto/persist.c): the message's id in the
	 * store (0 = not stored), how many stored records still need it, and
	 * the compaction that last wrote it. */
	uint32_t durable_refs;
	uint64_t store_id;
	uint32_t emit_gen;
	char data[];       /* topic, then payload */
};

/* A message with one reference, or NULL when out of memory. */
struct msg *msg_new(const char *topic, size_t topic_len, const void *payload, size_t payload_len,
		    uint8_t qos, bool retain);

static inline struct msg *msg_ref(struct msg *m)
{
	assert(m->refcnt > 0);
	m->refcnt++;
	return m;
}

void msg_unref(struct msg *m);

static inline const char *msg_topic(const struct msg *m) { return m->data; }
static inline const uint8_t *msg_payload(const struct msg *m)
{
	return (const uint8_t *)m->data + m->topic_len;
}
/* Bytes the message accounts for in queue limits. */
static inline size_t msg_size(const struct msg *m) { return sizeof *m + m->topic_len + m->payload_len; }

#endif
