/*
 * Private to broker/src/mqtt/: byte-order helpers and the bounded body
 * reader shared by codec.c, props.c and encode.c. Not part of the codec API;
 * other layers include codec.h only.
 */
#ifndef WISP_MQTT_CODEC_INTERNAL_H
#define WISP_MQTT_CODEC_INTERNAL_H

#include <string.h>

#include "codec.h"

/* Big-endian fields [MQTT-1.5.2]. Byte by byte, so alignment never matters. */
static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)(v & 0xFF);
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)((v >> 16) & 0xFF);
	p[2] = (uint8_t)((v >> 8) & 0xFF);
	p[3] = (uint8_t)(v & 0xFF);
}

/*
 * A cursor over a packet body whose end is the end of the Remaining Length.
 * Every read checks the bound, so running short inside a whole packet is
 * MQTT_EMALFORMED, never an overread.
 */
struct mqtt_rd {
	const uint8_t *pos;
	const uint8_t *end;
};

static inline size_t rd_left(const struct mqtt_rd *rd)
{
	return (size_t)(rd->end - rd->pos);
}

static inline int rd_u8(struct mqtt_rd *rd, uint8_t *out)
{
	if (rd_left(rd) < 1)
		return MQTT_EMALFORMED;
	*out = *rd->pos++;
	return 0;
}

static inline int rd_u16(struct mqtt_rd *rd, uint16_t *out)
{
	if (rd_left(rd) < 2)
		return MQTT_EMALFORMED;
	*out = get_be16(rd->pos);
	rd->pos += 2;
	return 0;
}

static inline int rd_u32(struct mqtt_rd *rd, uint32_t *out)
{
	if (rd_left(rd) < 4)
		return MQTT_EMALFORMED;
	*out = get_be32(rd->pos);
	rd->pos += 4;
	return 0;
}

/* A varint inside a body: truncation or a bad encoding is a malformed packet. */
static inline int rd_varint(struct mqtt_rd *rd, uint32_t *out)
{
	ssize_t n = mqtt_varint_decode(rd->pos, rd_left(rd), out);

	if (n <= 0)
		return MQTT_EMALFORMED;
	rd->pos += n;
	return 0;
}

/* Two-byte length then bytes: Binary Data [MQTT-1.5.6]. */
static inline int rd_bin(struct mqtt_rd *rd, struct mqtt_str *out)
{
	uint16_t n;

	if (rd_u16(rd, &n) != 0 || rd_left(rd) < n)
		return MQTT_EMALFORMED;
	out->ptr = rd->pos;
	out->len = n;
	rd->pos += n;
	return 0;
}

/* UTF-8 Encoded String [MQTT-1.5.4]: as binary, then checked [MQTT-1.5.4-1..2]. */
static inline int rd_str(struct mqtt_rd *rd, struct mqtt_str *out)
{
	int rc = rd_bin(rd, out);

	if (rc != 0)
		return rc;
	return mqtt_utf8_valid(out->ptr, out->len) ? 0 : MQTT_EUTF8;
}

/* Owner value for will properties; packet types start at 1. */
#define MQTT_PROPS_OWNER_WILL 0

/*
 * Reads a v5 property block (length prefix included) at `rd` for a packet of
 * type `owner` (or MQTT_PROPS_OWNER_WILL), checking that each property may
 * appear there, that non-repeatable ones appear once and that values are in
 * range [MQTT-2.2.2]. Fills `out`; returns 0 or a negative MQTT_E*.
 */
int mqtt_props_parse(struct mqtt_rd *rd, uint8_t owner, struct mqtt_props *out);

#endif
