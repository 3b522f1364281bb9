/*
 * libFuzzer target for the MQTT codec (also built with replay_main.c as a
 * plain program so gcc builds and CTest can replay the corpus).
 *
 * Input: byte 0 picks the connection's protocol level (bits 0-1: 3.1.1, 5,
 * 3.1, or 0 = before CONNECT) and a max_packet_size (bits 2-4); the rest is
 * a byte stream decoded packet after packet. For every packet decoded:
 *  - mqtt_frame_size agrees with the bytes mqtt_decode consumed, and the
 *    packet minus its last byte is "need more";
 *  - the matching encoder re-encodes it (no larger than the original, since
 *    encoders emit minimal forms), one byte less of room is MQTT_ENOSPC, and
 *    decoding the result gives an equal packet;
 *  - for PUBLISH, head | topic | mid | payload equals the whole encoding;
 *  - the property iterator walks each v5 block to its end and agrees with
 *    the decoder's present bits, first subscription id and user count.
 * Any broken invariant abort()s, which libFuzzer reports as a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_roundtrip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t fuzz_versions[4] = {MQTT_PROTO_V311, MQTT_PROTO_V5, MQTT_PROTO_V31, 0};
static const uint32_t fuzz_maxes[8] = {0, 5, 16, 64, 256, 1024, 65536, 0};

#define FUZZ_MAX_PACKETS 64

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_codec: %s\n", what);
	abort();
}

static void check_publish_parts(const uint8_t *enc, size_t n, uint8_t version, const struct mqtt_publish *p)
{
	uint8_t head[MQTT_MAX_FIXED_HEADER + 2];
	size_t mid_cap = n, mid_len = 0, off;
	uint8_t *mid = malloc(mid_cap ? mid_cap : 1);
	uint8_t *cat = malloc(n);
	ssize_t h;

	if (mid == NULL || cat == NULL)
		fail("out of memory");
	h = mqtt_encode_publish_parts(head, sizeof(head), mid, mid_cap, &mid_len, version, p);
	if (h <= 0)
		fail("publish_parts refused an encodable PUBLISH");
	if ((size_t)h + p->topic.len + mid_len + p->payload.len != n)
		fail("publish_parts lengths disagree");
	memcpy(cat, head, (size_t)h);
	off = (size_t)h;
	if (p->topic.len)
		memcpy(cat + off, p->topic.ptr, p->topic.len);
	off += p->topic.len;
	if (mid_len)
		memcpy(cat + off, mid, mid_len);
	off += mid_len;
	if (p->payload.len)
		memcpy(cat + off, p->payload.ptr, p->payload.len);
	if (memcmp(cat, enc, n) != 0)
		fail("publish_parts bytes differ from mqtt_encode_publish");
	free(mid);
	free(cat);
}

/* The iterator must agree with what the decoder recorded for the same block. */
static void check_props(const struct mqtt_props *props)
{
	struct mqtt_prop_iter it;
	struct mqtt_prop pr;
	size_t users = 0, steps = 0, subids = 0;

	mqtt_props_iter_init(props, &it);
	while (mqtt_props_next(&it, &pr) == 1) {
		if (++steps > props->raw.len)
			fail("property iterator does not advance");
		if (!(props->present & MQTT_PROP_BIT(pr.id)))
			fail("iterator yields a property the decoder did not mark present");
		if (pr.id == MQTT_PROP_USER_PROPERTY)
			users++;
		if (pr.id == MQTT_PROP_SUBSCRIPTION_ID && subids++ == 0 && pr.value != props->subscription_id)
			fail("first subscription id differs");
	}
	if (props->raw.len > 0 && it.pos != props->raw.ptr + props->raw.len)
		fail("property iterator stopped before the end of a validated block");
	if (users != props->user_property_count)
		fail("user_property_count differs from the iterator");
}

static void check_all_props(const struct mqtt_pkt *p)
{
	switch (p->type) {
	case MQTT_PKT_CONNECT:
		check_props(&p->u.connect.props);
		check_props(&p->u.connect.will_props);
		break;
	case MQTT_PKT_CONNACK:
		check_props(&p->u.connack.props);
		break;
	case MQTT_PKT_PUBLISH:
		check_props(&p->u.publish.props);
		break;
	case MQTT_PKT_PUBACK:
	case MQTT_PKT_PUBREC:
	case MQTT_PKT_PUBREL:
	case MQTT_PKT_PUBCOMP:
		check_props(&p->u.ack.props);
		break;
	case MQTT_PKT_SUBSCRIBE:
	case MQTT_PKT_UNSUBSCRIBE:
		check_props(&p->u.subscribe.props);
		break;
	case MQTT_PKT_SUBACK:
	case MQTT_PKT_UNSUBACK:
		check_props(&p->u.suback.props);
		break;
	case MQTT_PKT_DISCONNECT:
	case MQTT_PKT_AUTH:
		check_props(&p->u.reason.props);
		break;
	default:
		break;
	}
}

static void check_packet(const uint8_t *buf, size_t n, const struct mqtt_codec_opts *opts,
			 const struct mqtt_pkt *pkt)
{
	struct mqtt_codec_opts any = {0, opts->version};
	struct mqtt_pkt again, tmp;
	uint8_t *enc;
	ssize_t m, r;

	if (mqtt_frame_size(buf, n, opts) != (ssize_t)n)
		fail("mqtt_frame_size disagrees with mqtt_decode");
	if (mqtt_decode(buf, n - 1, opts, &tmp) != 0)
		fail("a strict prefix of a packet was not 'need more'");

	check_all_props(pkt);
	enc = malloc(n);
	if (enc == NULL)
		fail("out of memory");
	m = rt_encode(enc, n, opts->version, pkt);
	if (m <= 0)
		fail("encoder refused a decoded packet, or needs more room than the original");
	if (rt_encode(enc, (size_t)m - 1, opts->version, pkt) != MQTT_ENOSPC)
		fail("encoder did not report MQTT_ENOSPC one byte short");
	m = rt_encode(enc, (size_t)m, opts->version, pkt); /* the ENOSPC call may have scribbled */
	r = mqtt_decode(enc, (size_t)m, &any, &again);
	if (r != m)
		fail("re-encoded packet does not decode to its own length");
	if (!rt_pkt_eq(pkt, &again))
		fail("decode(encode(decode(x))) differs from decode(x)");
	if (pkt->type == MQTT_PKT_PUBLISH)
		check_publish_parts(enc, (size_t)m, opts->version, &pkt->u.publish);
	free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mqtt_codec_opts opts;
	const uint8_t *buf;
	size_t len;

	if (size < 1)
		return 0;
	opts.version = fuzz_versions[data[0] & 0x3];
	opts.max_packet_size = fuzz_maxes[(data[0] >> 2) & 0x7];
	buf = data + 1;
	len = size - 1;
	for (int i = 0; i < FUZZ_MAX_PACKETS && len > 0; i++) {
		struct mqtt_pkt pkt;
		ssize_t n = mqtt_decode(buf, len, &opts, &pkt);

		if (n <= 0)
			break;
		if ((size_t)n > len)
			fail("consumed more than the input");
		check_packet(buf, (size_t)n, &opts, &pkt);
		/* A CONNECT sets the level for what follows, as on a connection. */
		if (pkt.type == MQTT_PKT_CONNECT && opts.version == 0)
			opts.version = pkt.u.connect.version;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}
