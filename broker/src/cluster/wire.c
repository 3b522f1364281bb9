/* The cluster's NATS headers (wire.h). */
#include "wire.h"

#include <string.h>

#include <mbedtls/base64.h>

#include "alloc.h"
#include "broker.h"

const char *wire_header(natsMsg *nm, const char *key)
{
	const char *v = NULL;
	return natsMsgHeader_Get(nm, key, &v) == NATS_OK ? v : NULL;
}

natsStatus wire_set_props(natsMsg *nm, const uint8_t *props, size_t len)
{
	size_t b64_len = 4 * ((len + 2) / 3) + 1;
	unsigned char *b64 = wisp_malloc(b64_len);
	size_t olen = 0;
	natsStatus st = NATS_NO_MEMORY;
	if (b64 && mbedtls_base64_encode(b64, b64_len, &olen, props, len) == 0)
		st = natsMsgHeader_Set(nm, "Wisp-Props", (const char *)b64);
	wisp_free(b64);
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
	*props = NULL;
	*len = 0;
	const char *p64 = wire_header(nm, "Wisp-Props");
	if (!p64 || !*p64)
		return NULL;
	size_t n = strlen(p64);
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
