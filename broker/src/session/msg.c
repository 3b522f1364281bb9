#include "msg.h"

#include <string.h>

#include "alloc.h"

/*
 * Message blocks of at most MSG_SMALL bytes (a 40-byte header, then topic,
 * properties and payload: a sensor reading on a short topic) are recycled
 * through free lists, one per 32-byte size class (64, 96, 128), each of at
 * most MSG_FREE_MAX blocks (576 KiB in all), so the one allocation of a
 * PUBLISH is a list pop in steady state: malloc and free of the message
 * were 8% of fan-in QoS 1's broker CPU (callgrind, ~240 instructions per
 * message). A block is its class's size, at most 31 bytes over what the
 * message needs (malloc's own rounding is 16). Larger messages, and
 * messages adopted from an input buffer (msg_adopt), go to the allocator.
 * Loop thread only, like every message.
 */
#define MSG_CLASS 32
#define MSG_CLASSES 3
#define MSG_SMALL (MSG_CLASS * (MSG_CLASSES + 1))
#define MSG_FREE_MAX 2048

_Static_assert(sizeof(struct msg) <= 2 * MSG_CLASS, "the smallest class holds a header");

struct msg_free_list {
	struct msg *head; /* linked through `origin`, which a free block does not use */
	size_t count;
};

static struct msg_free_list free_msgs[MSG_CLASSES];

static size_t block_size(size_t topic_len, size_t props_len, size_t payload_len)
{
	return sizeof(struct msg) + topic_len + props_len + payload_len;
}

/* The class of a block of `size` bytes (<= MSG_SMALL). */
static size_t class_of(size_t size)
{
	return size <= 2 * MSG_CLASS ? 0 : (size - 1) / MSG_CLASS - 1;
}

static struct msg *block_get(size_t size)
{
	if (size > MSG_SMALL)
		return wisp_malloc(size);
	size_t k = class_of(size);
	struct msg_free_list *fl = &free_msgs[k];
	if (fl->head) {
		struct msg *m = fl->head;
		fl->head = (struct msg *)(uintptr_t)m->origin;
		fl->count--;
		return m;
	}
	return wisp_malloc((k + 2) * MSG_CLASS);
}

static void block_put(struct msg *m)
{
	size_t size = block_size(m->topic_len, m->props_len, m->payload_len);
	/* data_off != 0: an adopted input buffer, of its own size. */
	if (m->data_off == 0 && size <= MSG_SMALL) {
		struct msg_free_list *fl = &free_msgs[class_of(size)];
		if (fl->count < MSG_FREE_MAX) {
			m->origin = fl->head;
			fl->head = m;
			fl->count++;
			return;
		}
	}
	wisp_free(m);
}

void msg_release_cache(void)
{
	for (size_t k = 0; k < MSG_CLASSES; k++) {
		while (free_msgs[k].head) {
			struct msg *m = free_msgs[k].head;
			free_msgs[k].head = (struct msg *)(uintptr_t)m->origin;
			wisp_free(m);
		}
		free_msgs[k].count = 0;
	}
}

static uint32_t expiry32(uint64_t expires_at)
{
	return expires_at > UINT32_MAX ? UINT32_MAX : (uint32_t)expires_at;
}

static bool lengths_fit(const struct msg_spec *spec)
{
	return spec->topic_len <= UINT16_MAX && spec->payload_len <= UINT32_MAX && spec->props_len <= UINT32_MAX &&
	       spec->payload_len + spec->props_len <= UINT32_MAX;
}

/* One reference, lengths that lengths_fit() checked. */
static void set_header(struct msg *m, const struct msg_spec *spec, uint32_t data_off)
{
	m->refcnt = 1;
	m->qos = spec->qos;
	m->retain = spec->retain;
	m->topic_len = (uint16_t)spec->topic_len;
	m->payload_len = (uint32_t)spec->payload_len;
	m->props_len = (uint32_t)spec->props_len;
	m->expires_at = expiry32(spec->expires_at);
	m->data_off = data_off;
	m->origin = spec->origin;
	m->stored = NULL;
}

struct msg *msg_create(const struct msg_spec *spec)
{
	if (!lengths_fit(spec))
		return NULL;
	struct msg *m = block_get(block_size(spec->topic_len, spec->props_len, spec->payload_len));
	if (!m)
		return NULL;
	set_header(m, spec, 0);
	char *p = m->data;
	memcpy(p, spec->topic, spec->topic_len);
	p += spec->topic_len;
	if (spec->props_len) {
		if (spec->props)
			memcpy(p, spec->props, spec->props_len);
		p += spec->props_len;
	}
	if (spec->payload_len)
		memcpy(p, spec->payload, spec->payload_len);
	return m;
}

struct msg *msg_adopt(void *block, const struct msg_spec *spec)
{
	struct msg *m = block;
	const char *payload = spec->payload;
	if (!lengths_fit(spec) || (spec->props_len && !spec->props) || !payload || payload < m->data)
		return NULL;
	/* Topic and props end where the payload starts: the wire put at least
	 * the fixed header and the topic's length prefix before the topic, and
	 * forwards at most the properties it carried. */
	size_t before = (size_t)(payload - m->data);
	size_t head = spec->topic_len + spec->props_len;
	if (head > before || before - head > UINT32_MAX)
		return NULL;
	char *topic = (char *)payload - head;
	/* The props first: the topic's move may cover where they were read
	 * from (never the other way round: the props follow the topic on the
	 * wire, and both only move towards the payload). */
	if (spec->props_len)
		memmove(topic + spec->topic_len, spec->props, spec->props_len);
	memmove(topic, spec->topic, spec->topic_len);
	set_header(m, spec, (uint32_t)(before - head));
	return m;
}

struct msg *msg_new(const char *topic, size_t topic_len, const void *payload, size_t payload_len,
		    uint8_t qos, bool retain)
{
	struct msg_spec spec = {
		.topic = topic,
		.topic_len = topic_len,
		.payload = payload,
		.payload_len = payload_len,
		.qos = qos,
		.retain = retain,
	};
	return msg_create(&spec);
}

/* Out of line: msg_unref runs once per delivery, the free once per message. */
__attribute__((noinline)) static void msg_free(struct msg *m)
{
	/* The store frees its bookkeeping when the message's last durable
	 * reference goes; what is left here belongs to a store closed before
	 * the message's holders (shutdown). It is one plain block with no
	 * links, so freeing it here is safe. */
	if (m->stored)
		wisp_free(m->stored);
	block_put(m);
}

void msg_unref(struct msg *m)
{
	if (!m)
		return;
	assert(m->refcnt > 0);
	if (--m->refcnt == 0)
		msg_free(m);
}
