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

bool mqtt_utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		uint8_t lo = 0x80, hi = 0xBF; /* range of the first continuation byte */
		size_t need;

		if (c < 0x80) {
			if (c == 0) /* [MQTT-1.5.4-2] */
				return false;
			i++;
			continue;
		}
		if (c < 0xC2) { /* a stray continuation, or an overlong 2-byte lead */
			return false;
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
			return false;
		}
		if (len - i - 1 < need)
			return false; /* truncated sequence */
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= need; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
		}
		i += need + 1;
	}
	return true;
}

bool mqtt_utf8_has_control(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((s[i] >= 0x01 && s[i] <= 0x1F) || s[i] == 0x7F)
			return true;
		/* U+0080..U+009F encode as C2 80..C2 9F. */
		if (s[i] == 0xC2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9F)
			return true;
	}
	return false;
}
