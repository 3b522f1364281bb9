#include "msg.h"

#include <string.h>

#include "alloc.h"

struct msg *msg_new(const char *topic, size_t topic_len, const void *payload, size_t payload_len,
		    uint8_t qos, bool retain)
{
	if (topic_len > UINT16_MAX || payload_len > UINT32_MAX)
		return NULL;
	struct msg *m = wisp_malloc(sizeof *m + topic_len + payload_len);
	if (!m)
		return NULL;
	m->refcnt = 1;
	m->durable_refs = 0;
	m->store_id = 0;
	m->emit_gen = 0;
	m->qos = qos;
	m->retain = retain;
	m->topic_len = (uint16_t)topic_len;
	m->payload_len = (uint32_t)payload_len;
	memcpy(m->data, topic, topic_len);
	if (payload_len)
		memcpy(m->data + topic_len, payload, payload_len);
	return m;
}

void msg_unref(struct msg *m)
{
	if (!m)
		return;
	assert(m->refcnt > 0);
	if (--m->refcnt == 0)
		wisp_free(m);
}
