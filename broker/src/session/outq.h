/*
 * A connection's ordered output: control packets and PUBLISH deliveries
 * waiting to be written. Deliveries hold a reference to the shared message
 * plus only the bytes that differ per subscriber (fixed header, lengths,
 * packet id, per-delivery v5 properties: Topic Alias, remaining Message
 * Expiry, Subscription Identifiers), and outq_flush() sends many of them
 * per writev: nothing is written per message, and no payload over 256
 * bytes is copied per subscriber. A delivery of at most 256 bytes on the
 * wire is copied once, at flush, into a stage shared by all connections,
 * so a run of small ones is one iovec: the kernel's cost per iovec
 * segment was more than the copy.
 *
 * Items come from a free list, so steady-state delivery does not allocate.
 * Single threaded.
 */
#ifndef WISP_SESSION_OUTQ_H
#define WISP_SESSION_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"
#include "msg.h"
#include "transport.h"

/* 24 bytes in every connection: no item count is kept (nothing but the
 * tests needs it: outq_items walks the list), which is 8 bytes of every
 * idle connection (issue 18). */
struct outq {
	struct list_node items;
	size_t bytes;  /* unsent bytes on the wire, control packets included */
};

void outq_init(struct outq *q);
/* Drops everything unsent, releasing message references. */
void outq_clear(struct outq *q);

/* Appends a whole encoded control packet (copied; consecutive control
 * packets share an item). 0 or WISP_ENOMEM. */
int outq_push_bytes(struct outq *q, const uint8_t *bytes, size_t len);

/* What differs per delivery of a shared message. */
struct outq_delivery {
	uint8_t qos;
	bool retain;
	bool dup;
	bool topic_omitted;       /* v5: the client knows topic_alias's topic */
	uint16_t packet_id;       /* QoS > 0 */
	uint16_t topic_alias;     /* v5, 0: none */
	uint32_t expiry_left;     /* v5: remaining Message Expiry Interval, 0: none */
	const uint32_t *sub_ids;  /* v5: Subscription Identifiers, borrowed until return */
	uint16_t sub_id_count;
};

/*
 * Appends a PUBLISH of `m` (taking a new reference) as `d` says, for
 * protocol `version`: the item holds only the per-delivery bytes (head,
 * packet id, per-delivery v5 properties); topic, the message's shared v5
 * properties (sent to v5 clients only) and payload are written from `m`.
 * No allocation while the free list has items and the per-delivery bytes
 * fit an inline item (every 3.1.1 delivery; v5 up to two identifiers).
 * 0, WISP_ENOMEM, or WISP_EINVAL if the packet cannot be encoded.
 */
int outq_push_publish(struct outq *q, struct msg *m, uint8_t version, const struct outq_delivery *d);

/* The PUBLISH's size on the wire (0: it cannot be encoded), to hold it
 * against the client's Maximum Packet Size before queueing. */
size_t outq_publish_size(const struct msg *m, uint8_t version, const struct outq_delivery *d);

/*
 * Writes until the queue is empty or the transport would block (a short
 * writev alone does not stop it: transport.h). Returns 0 when the queue is
 * empty, WISP_EAGAIN when bytes remain (wait for t->want), or WISP_EIO.
 */
int outq_flush(struct outq *q, struct transport *t);

static inline bool outq_empty(const struct outq *q) { return list_empty(&q->items); }
/* Items queued (a run of control packets may share one): a walk, for tests. */
size_t outq_items(const struct outq *q);

/* Releases the free list (at shutdown, so leak checkers stay quiet). */
void outq_release_cache(void);

#endif
