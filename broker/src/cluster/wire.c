/* The cluster's NATS headers (wire.h). */
#include "wire.h"

#include <string.h>

#include <mbedtls/base64.h>

#include "alloc.h"
#include "broker.h"
#include "sbuf.h"

const char *wire_header(natsMsg *nm, const char *key)
{
	const char *v = NULL;
	return natsMsgHeader_Get(nm, key, &v) == NATS_OK ? v : NULL;
}

size_t wire_msg_bytes(natsMsg *nm)
{
	int data = natsMsg_GetDataLength(nm);
	const char *reply = natsMsg_GetReply(nm);
	return (data > 0 ? (size_t)data : 0) + strlen(natsMsg_GetSubject(nm)) + (reply ? strlen(reply) : 0) +
	       WIRE_HEADERS_COUNTED;
}

void wire_add_props(struct sbuf *b, const uint8_t *props, size_t len)
{
	/* In whole groups of 3 bytes, so that only the last has padding. */
	unsigned char chunk[4 * 256 + 1];
	while (len) {
		size_t n = len < 3 * 256 ? len : 3 * 256, olen = 0;
		if (mbedtls_base64_encode(chunk, sizeof chunk, &olen, props, n) != 0) {
			b->failed = true;
			return;
		}
		sbuf_add(b, (const char *)chunk, olen);
		props += n;
		len -= n;
	}
}

natsStatus wire_set_props(natsMsg *nm, const uint8_t *props, size_t len)
{
	struct sbuf b = {0};
	wire_add_props(&b, props, len);
	natsStatus st = b.failed ? NATS_NO_MEMORY : natsMsgHeader_Set(nm, "Wisp-Props", b.data ? b.data : "");
	sbuf_free(&b);
	return st;
}

static bool props_ok(const uint8_t *p, size_t len)
{
	struct mqtt_prop_iter it = {p, p + len};
	struct mqtt_prop prop;
	int rc;
	while ((rc = mqtt_props_next(&it, &prop)) == 1)
		if (MQTT_PROP_BIT(prop.id) & BROKER_PROPS_NOT_FORWARDED)
			return false;
	return rc == 0 && it.pos == it.end;
}

const char *wire_get_props(natsMsg *nm, uint8_t **props, size_t *len)
{
	const char *p64 = wire_header(nm, "Wisp-Props");
	return wire_decode_props(p64, p64 ? strlen(p64) : 0, props, len);
}

const char *wire_decode_props(const char *p64, size_t n, uint8_t **props, size_t *len)
{
	*props = NULL;
	*len = 0;
	if (!n)
		return NULL;
	uint8_t *p = wisp_malloc(n);
	if (!p)
		return "out of memory";
	if (mbedtls_base64_decode(p, n, len, (const unsigned char *)p64, n) != 0 || !props_ok(p, *len)) {
		wisp_free(p);
		*len = 0;
		return "malformed Wisp-Props";
	}
	*props = p;
	return NULL;
}
