/*
 * UTF-8 validation for MQTT strings [MQTT-1.5.4]: well-formed per RFC 3629
 * (no overlong forms, nothing above U+10FFFF), no surrogate code points
 * U+D800..U+DFFF [MQTT-1.5.4-1] and no U+0000 [MQTT-1.5.4-2].
 *
 * Other control characters and non-characters such as U+FFFF are accepted
 * here: the specification lets a receiver refuse them but forbids skipping
 * them [MQTT-1.5.4-3]. mqtt_utf8_has_control() finds the C0 and C1
 * controls, which the broker refuses in identifiers and topics (as
 * Mosquitto does).
 *
 * Cost: one pass, no table, an ASCII fast path. Pure; thread-safe.
 */
#include "codec.h"

#include <string.h>

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* True when all eight bytes of x are printable ASCII (0x20..0x7E): per
 * byte b, b + 1 reaches 0x80 only at 0x7F, b + 0x60 stays below 0x80 only
 * under 0x20, and a byte with the high bit set is caught by x itself (its
 * sums may carry into the next byte, which only makes a flagged word more
 * flagged). The fast path of every topic and id. */
static inline bool word_printable(const uint8_t *p)
{
	uint64_t x;
	memcpy(&x, p, sizeof x);
	return (((x + ONES) | x | ~(x + ONES * 0x60)) & HIGHS) == 0;
}

int mqtt_utf8_scan(const uint8_t *s, size_t len)
{
	size_t i = 0;
	int control = 0;

	/* Printable ASCII eight bytes at a time; the last window overlaps the
	 * one before, so a string of 8 or more such bytes has no tail. */
	if (len >= 8) {
		while (i + 8 <= len && word_printable(s + i))
			i += 8;
		if (i < len && i + 8 > len && word_printable(s + len - 8))
			i = len;
	}
	while (i < len) {
		uint8_t c = s[i];
		uint8_t lo = 0x80, hi = 0xBF; /* range of the first continuation byte */
		size_t need;

		if (c < 0x80) {
			if (c == 0) /* [MQTT-1.5.4-2] */
				return -1;
			if (c < 0x20 || c == 0x7F)
				control = 1;
			i++;
			continue;
		}
		if (c < 0xC2) { /* a stray continuation, or an overlong 2-byte lead */
			return -1;
		} else if (c < 0xE0) {
			need = 1;
		} else if (c < 0xF0) {
			need = 2;
			if (c == 0xE0)
				lo = 0xA0; /* overlong below U+0800 */
			else if (c == 0xED)
				hi = 0x9F; /* surrogates [MQTT-1.5.4-1] */
		} else if (c < 0xF5) {
			need = 3;
			if (c == 0xF0)
				lo = 0x90; /* overlong below U+10000 */
			else if (c == 0xF4)
				hi = 0x8F; /* above U+10FFFF */
		} else {
			return -1;
		}
		if (len - i - 1 < need)
			return -1; /* truncated sequence */
		if (s[i + 1] < lo || s[i + 1] > hi)
			return -1;
		if (c == 0xC2 && s[i + 1] <= 0x9F)
			control = 1; /* U+0080..U+009F */
		for (size_t k = 2; k <= need; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return -1;
		}
		i += need + 1;
	}
	return control;
}

bool mqtt_utf8_valid(const uint8_t *s, size_t len)
{
	return mqtt_utf8_scan(s, len) >= 0;
}

bool mqtt_utf8_has_control(const uint8_t *s, size_t len)
{
	return mqtt_utf8_scan(s, len) == 1;
}
