#include "outq.h"

#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "err.h"

/*
 * Item bytes hold a control packet, or a delivery's head (fixed header,
 * Remaining Length, topic length: at most 7 bytes) followed by its middle
 * part (packet id; for v5 the property length and the per-delivery
 * properties). INLINE covers every control packet but a SUBACK with many
 * filters, and every delivery but a v5 one with more than two
 * Subscription Identifiers, which get a larger one-off item. 32 bytes cost
 * what 24 did: an item is 40 + INLINE bytes, and malloc rounds 64 and 72
 * to the same 80-byte chunk.
 */
#define INLINE 32
#define MID_AT 8 /* the middle part is encoded here, then moved next to the head */
#define FREE_LIST_MAX 4096
/*
 * Control packets queued back to back (PINGRESPs, or the acks of a QoS 1/2
 * stream the client does not read) share items: a 2-byte PINGRESP would
 * otherwise cost a 64-byte item, and a client could turn 60 MiB of PINGREQ
 * into 2 GB of queue. The first packet of a run takes an INLINE item from
 * the free list; later ones are appended while it has room, then go into
 * CONTROL_CHUNK-byte items, so a run costs about 1.1 bytes of heap per
 * queued byte.
 */
#define CONTROL_CHUNK 512

struct outq_item {
	struct list_node link;
	struct msg *msg;   /* NULL for control bytes */
	uint32_t len;      /* bytes on the wire */
	uint32_t sent;     /* bytes of it already written */
	uint16_t mid_len;  /* delivery: head bytes, then mid bytes */
	uint8_t head_len;
	uint8_t parts;     /* delivery: ITEM_* */
	uint16_t cap;      /* capacity of bytes[] */
	uint8_t bytes[];
};

#define ITEM_TOPIC 0x01 /* the topic name is sent (not replaced by a Topic Alias) */
#define ITEM_PROPS 0x02 /* the message's shared v5 properties are sent */

_Static_assert(sizeof(struct outq_item) == 40, "an item header stays 40 bytes");

static struct list_node free_items = {&free_items, &free_items};
static size_t free_count;

static struct outq_item *item_get(size_t need)
{
	struct outq_item *it;
	if (need <= INLINE && free_count) {
		it = container_of(list_first(&free_items), struct outq_item, link);
		list_remove(&it->link);
		free_count--;
		return it;
	}
	size_t cap = need <= INLINE ? INLINE : need;
	it = wisp_malloc(sizeof *it + cap);
	if (it)
		it->cap = (uint16_t)cap;
	return it;
}

static void item_put(struct outq_item *it)
{
	if (it->msg)
		msg_unref(it->msg);
	if (it->cap == INLINE && free_count < FREE_LIST_MAX) {
		list_push_front(&free_items, &it->link);
		free_count++;
		return;
	}
	wisp_free(it);
}

void outq_release_cache(void)
{
	struct list_node *n;
	while ((n = list_first(&free_items)) != NULL) {
		list_remove(n);
		wisp_free(container_of(n, struct outq_item, link));
	}
	free_count = 0;
}

void outq_init(struct outq *q)
{
	list_init(&q->items);
	q->bytes = 0;
}

size_t outq_items(const struct outq *q)
{
	size_t n = 0;
	for (const struct list_node *pos = q->items.next; pos != &q->items; pos = pos->next)
		n++;
	return n;
}

void outq_clear(struct outq *q)
{
	struct list_node *n;
	while ((n = list_first(&q->items)) != NULL) {
		list_remove(n);
		item_put(container_of(n, struct outq_item, link));
	}
	q->bytes = 0;
}

static void push(struct outq *q, struct outq_item *it)
{
	it->sent = 0;
	list_push_back(&q->items, &it->link);
	q->bytes += it->len;
}

int outq_push_bytes(struct outq *q, const uint8_t *bytes, size_t len)
{
	if (len > UINT16_MAX)
		return WISP_EINVAL;
	struct outq_item *tail = !outq_empty(q) ? container_of(q->items.prev, struct outq_item, link) : NULL;
	bool run = tail && !tail->msg;
	if (run && (size_t)tail->cap - tail->len >= len) {
		/* Appending to a partly sent item is fine: `sent` still counts
		 * from its start. */
		memcpy(tail->bytes + tail->len, bytes, len);
		tail->len += (uint32_t)len;
		q->bytes += len;
		return 0;
	}
	struct outq_item *it = item_get(run && len < CONTROL_CHUNK ? CONTROL_CHUNK : len);
	if (!it)
		return WISP_ENOMEM;
	it->msg = NULL;
	it->len = (uint32_t)len;
	it->head_len = 0;
	it->mid_len = 0;
	it->parts = 0;
	memcpy(it->bytes, bytes, len);
	push(q, it);
	return 0;
}

static struct mqtt_publish_split split_of(const struct msg *m, bool v5, const struct outq_delivery *d)
{
	struct mqtt_publish_split p = {
		.qos = d->qos,
		.dup = d->dup,
		.retain = d->retain,
		.packet_id = d->packet_id,
		.topic_len = d->topic_omitted ? 0 : m->topic_len,
		.shared_props_len = m->props_len,
		.payload_len = m->payload_len,
	};
	if (v5) {
		p.topic_alias = d->topic_alias;
		p.message_expiry = d->expiry_left;
		p.sub_ids = d->sub_ids;
		p.sub_id_count = d->sub_id_count;
	}
	return p;
}

size_t outq_publish_size(const struct msg *m, uint8_t version, const struct outq_delivery *d)
{
	struct mqtt_publish_split p = split_of(m, version == MQTT_PROTO_V5, d);
	return mqtt_publish_split_size(version, &p);
}

int outq_push_publish(struct outq *q, struct msg *m, uint8_t version, const struct outq_delivery *d)
{
	bool v5 = version == MQTT_PROTO_V5;
	size_t mid_max = mqtt_publish_split_mid_max(v5 ? d->sub_id_count : 0);
	if (MID_AT + mid_max > UINT16_MAX)
		return WISP_EINVAL;
	struct outq_item *it = item_get(MID_AT + mid_max);
	if (!it)
		return WISP_ENOMEM;
	it->msg = NULL;
	struct mqtt_publish_split p = split_of(m, v5, d);
	size_t mid_len = 0;
	ssize_t head_len = mqtt_encode_publish_split(it->bytes, MQTT_MAX_FIXED_HEADER + 2, it->bytes + MID_AT,
						     (size_t)it->cap - MID_AT, &mid_len, version, &p);
	if (head_len < 0) {
		item_put(it);
		return head_len == MQTT_ENOSPC ? WISP_ENOMEM : WISP_EINVAL;
	}
	/* Close the gap so head and mid are contiguous in bytes[]. */
	memmove(it->bytes + head_len, it->bytes + MID_AT, mid_len);
	it->msg = msg_ref(m);
	it->head_len = (uint8_t)head_len;
	it->mid_len = (uint16_t)mid_len;
	it->parts = (uint8_t)((p.topic_len ? ITEM_TOPIC : 0) | (v5 && m->props_len ? ITEM_PROPS : 0));
	it->len = (uint32_t)((size_t)head_len + p.topic_len + mid_len + m->payload_len +
			     (v5 ? m->props_len : 0));
	push(q, it);
	return 0;
}

/* The wire pieces of an item, in order. */
static int item_pieces(const struct outq_item *it, struct iovec *out)
{
	if (!it->msg) {
		out[0] = (struct iovec){(void *)it->bytes, it->len};
		return 1;
	}
	const struct msg *m = it->msg;
	int n = 0;
	out[n++] = (struct iovec){(void *)it->bytes, it->head_len};
	/* 3.1.1 QoS 0 of a message without properties: topic and payload
	 * are contiguous in the message, one piece. */
	if (it->mid_len == 0 && m->props_len == 0 && (it->parts & ITEM_TOPIC)) {
		out[n++] = (struct iovec){(void *)msg_topic(m), (size_t)m->topic_len + m->payload_len};
		return n;
	}
	if (it->parts & ITEM_TOPIC)
		out[n++] = (struct iovec){(void *)msg_topic(m), m->topic_len};
	out[n++] = (struct iovec){(void *)(it->bytes + it->head_len), it->mid_len};
	/* Shared properties and payload are contiguous in the message. */
	if (it->parts & ITEM_PROPS)
		out[n++] = (struct iovec){(void *)msg_props(m), (size_t)m->props_len + m->payload_len};
	else
		out[n++] = (struct iovec){(void *)msg_payload(m), m->payload_len};
	return n;
}

#define FLUSH_IOV 256
/*
 * Small deliveries are copied into one contiguous stretch rather than
 * handed to writev as 3-4 pieces of a few bytes each: the kernel's cost
 * per iovec segment (_copy_from_iter) exceeded a user-space copy of the
 * same bytes (15.7% of fan-in QoS 1's broker CPU, whose PUBLISHes are 4
 * pieces of 2-16 bytes). A delivery stays by reference above STAGE_SMALL,
 * so large payloads are never copied. Rebuilt on every call from what the
 * items still hold, so a short write needs no bookkeeping of its own.
 */
#define STAGE_SMALL 256
#define STAGE_BYTES 16384

static uint8_t stage[STAGE_BYTES];

int outq_flush(struct outq *q, struct transport *t)
{
	struct iovec iov[FLUSH_IOV];
	while (!outq_empty(q)) {
		int n = 0;
		int stage_at = -1; /* the iovec of the stage's current stretch */
		size_t staged = 0;
		struct list_node *pos = q->items.next;
		for (; pos != &q->items && n + 4 <= FLUSH_IOV; pos = pos->next) {
			struct outq_item *it = container_of(pos, struct outq_item, link);
			int k = item_pieces(it, iov + n);
			/* Skip what an earlier short write already sent. */
			size_t skip = it->sent;
			int first = n;
			while (skip && first < n + k) {
				size_t take = skip < iov[first].iov_len ? skip : iov[first].iov_len;
				iov[first].iov_base = (char *)iov[first].iov_base + take;
				iov[first].iov_len -= take;
				skip -= take;
				if (iov[first].iov_len == 0)
					first++;
			}
			if (first > n) {
				memmove(iov + n, iov + first, (size_t)(n + k - first) * sizeof *iov);
				k -= first - n;
			}
			size_t rest = it->len - it->sent;
			if (rest <= STAGE_SMALL && staged + rest <= STAGE_BYTES) {
				/* Copy the pieces to the stage, extending its current
				 * stretch when that is the previous iovec. */
				uint8_t *at = stage + staged;
				for (int i = n; i < n + k; i++) {
					memcpy(stage + staged, iov[i].iov_base, iov[i].iov_len);
					staged += iov[i].iov_len;
				}
				if (stage_at >= 0 && stage_at == n - 1) {
					iov[n - 1].iov_len += rest;
				} else {
					iov[n] = (struct iovec){at, rest};
					stage_at = n++;
				}
				continue;
			}
			n += k;
		}
		ssize_t w = transport_writev(t, iov, n);
		if (w < 0)
			return (int)w;
		if (w == 0) {
			/* Broken promise (transport.h): wait rather than spin. */
			t->want = TRANSPORT_WANT_WRITE;
			return WISP_EAGAIN;
		}
		size_t left = (size_t)w;
		q->bytes -= left;
		while (left) {
			struct outq_item *it = container_of(q->items.next, struct outq_item, link);
			size_t rest = it->len - it->sent;
			if (left < rest) {
				it->sent += (uint32_t)left;
				break;
			}
			left -= rest;
			list_remove(&it->link);
			item_put(it);
		}
		/* A short write is "call again" (TLS writes what its records
		 * hold): only a transport that says it would block stops us, as
		 * TCP does on a short writev, at no extra syscall. */
		if (!outq_empty(q) && t->want)
			return WISP_EAGAIN;
	}
	return 0;
}
