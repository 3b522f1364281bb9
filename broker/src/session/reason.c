/* The reason table (reason.h) as data, and which v5 packet may carry
 * which code. */
#include "reason.h"

#include "codec.h"

static const struct reason_info table[REASON_COUNT] = {
#define REASON_ROW(id, v5c, v3c, sysname, grp, fl, txt)                                      \
	[REASON_##id] = {.v5 = (v5c), .v311 = (v3c), .group = REASON_G_##grp, .flags = (fl), \
			 .name = (sysname), .text = (txt)},
	REASONS(REASON_ROW)
#undef REASON_ROW
};

const struct reason_info *reason_info(enum reason r)
{
	return &table[r < REASON_COUNT ? r : REASON_PROTOCOL_ERROR];
}

bool reason_v5_connack_allowed(uint8_t code)
{
	/* [MQTT-3.2.2.2] Table 3-1: 0x00 and 0x80-0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99-0x9D, 0x9F. */
	switch (code) {
	case 0x00: case 0x80: case 0x81: case 0x82: case 0x83: case 0x84: case 0x85: case 0x86:
	case 0x87: case 0x88: case 0x89: case 0x8A: case 0x8C: case 0x90: case 0x95: case 0x97:
	case 0x99: case 0x9A: case 0x9B: case 0x9C: case 0x9D: case 0x9F:
		return true;
	default:
		return false;
	}
}

bool reason_v5_disconnect_allowed(uint8_t code)
{
	/* [MQTT-3.14.2.1] Table 3-10, the codes a server may send. */
	switch (code) {
	case 0x00: case 0x80: case 0x81: case 0x82: case 0x83: case 0x87: case 0x89: case 0x8B:
	case 0x8D: case 0x8E: case 0x8F: case 0x90: case 0x93: case 0x94: case 0x95: case 0x96:
	case 0x97: case 0x98: case 0x99: case 0x9A: case 0x9B: case 0x9C: case 0x9D: case 0x9E:
	case 0x9F: case 0xA0: case 0xA1: case 0xA2:
		return true;
	default:
		return false;
	}
}

enum reason reason_from_decode(int err)
{
	switch (err) {
	case MQTT_ETOOBIG:
		return REASON_PACKET_TOO_LARGE;
	case MQTT_EVERSION:
		return REASON_BAD_PROTOCOL_VERSION;
	case MQTT_EPROTONAME:
		return REASON_BAD_PROTOCOL_NAME;
	case MQTT_EPROTOCOL:
	case MQTT_EPROPS:
		return REASON_PROTOCOL_ERROR;
	default:
		return REASON_MALFORMED_PACKET;
	}
}
