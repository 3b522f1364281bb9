#include "msg.h"

#include <string.h>

#include "alloc.h"

struct msg *msg_create(const struct msg_spec *spec)
{
	if (spec->topic_len > UINT16_MAX || spec->payload_len > UINT32_MAX || spec->props_len > UINT32_MAX ||
	    spec->payload_len + spec->props_len > UINT32_MAX)
		return NULL;
	struct msg *m = wisp_malloc(sizeof *m + spec->topic_len + spec->props_len + spec->payload_len);
	if (!m)
		return NULL;
	m->refcnt = 1;
	m->qos = spec->qos;
	m->retain = spec->retain;
	m->topic_len = (uint16_t)spec->topic_len;
	m->payload_len = (uint32_t)spec->payload_len;
	m->props_len = (uint32_t)spec->props_len;
	m->expires_at = spec->expires_at;
	m->origin = spec->origin;
	m->stored = NULL;
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
	wisp_free(m);
}

void msg_unref(struct msg *m)
{
	if (!m)
		return;
	assert(m->refcnt > 0);
	if (--m->refcnt == 0)
		msg_free(m);
}
