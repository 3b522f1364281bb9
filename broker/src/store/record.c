/*
 * Record and frame encoding (see record.h for the layout). Pure: the
 * encoder writes into the caller's buffer and the decoder returns views into
 * the caller's bytes. Decoding is strict (exact length, reserved bits zero,
 * ranges checked) so that decode -> encode is the identity, which the fuzz
 * target checks.
 */
#include <string.h>

#include "err.h"
#include "record.h"

static const char file_magic[2][8] = {
	{'W', 'I', 'S', 'P', '-', 'L', 'O', 'G'},
	{'W', 'I', 'S', 'P', 'S', 'N', 'A', 'P'},
};

static const char *const type_names[STORE_REC_TYPE_MAX + 1] = {
	[STORE_REC_MSG_PUT] = "MSG_PUT",         [STORE_REC_MSG_DEL] = "MSG_DEL",
	[STORE_REC_RETAIN_SET] = "RETAIN_SET",   [STORE_REC_RETAIN_DEL] = "RETAIN_DEL",
	[STORE_REC_SESSION_PUT] = "SESSION_PUT", [STORE_REC_SESSION_DEL] = "SESSION_DEL",
	[STORE_REC_SUB_ADD] = "SUB_ADD",         [STORE_REC_SUB_DEL] = "SUB_DEL",
	[STORE_REC_QUEUE_ADD] = "QUEUE_ADD",     [STORE_REC_QUEUE_DEL] = "QUEUE_DEL",
	[STORE_REC_FLIGHT_SET] = "FLIGHT_SET",   [STORE_REC_FLIGHT_DEL] = "FLIGHT_DEL",
	[STORE_REC_QOS2_IN_ADD] = "QOS2_IN_ADD", [STORE_REC_QOS2_IN_DEL] = "QOS2_IN_DEL",
	[STORE_REC_WILL_SET] = "WILL_SET", [STORE_REC_WILL_DEL] = "WILL_DEL",
	[STORE_REC_FWD_ADD] = "FWD_ADD",         [STORE_REC_FWD_DEL] = "FWD_DEL",
	[STORE_REC_STREAM_TAKEN] = "STREAM_TAKEN",
	[STORE_REC_RETAIN_UNSENT] = "RETAIN_UNSENT", [STORE_REC_RETAIN_SENT] = "RETAIN_SENT",
};

const char *store_rec_type_name(uint8_t type)
{
	if (type == 0 || type > STORE_REC_TYPE_MAX)
		return "UNKNOWN";
	return type_names[type];
}

/* ---- little-endian cursors ---- */

struct wcur {
	uint8_t *p;
};

static void put8(struct wcur *w, uint8_t v) { *w->p++ = v; }
static void put16(struct wcur *w, uint16_t v)
{
	w->p[0] = (uint8_t)v;
	w->p[1] = (uint8_t)(v >> 8);
	w->p += 2;
}
static void put32(struct wcur *w, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		w->p[i] = (uint8_t)(v >> (8 * i));
	w->p += 4;
}
static void put64(struct wcur *w, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		w->p[i] = (uint8_t)(v >> (8 * i));
	w->p += 8;
}
static void putstr(struct wcur *w, struct store_str s)
{
	put16(w, (uint16_t)s.len);
	if (s.len)
		memcpy(w->p, s.ptr, s.len);
	w->p += s.len;
}
static void putbytes(struct wcur *w, struct store_bytes b)
{
	put32(w, (uint32_t)b.len);
	if (b.len)
		memcpy(w->p, b.ptr, b.len);
	w->p += b.len;
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

struct rcur {
	const uint8_t *p;
	size_t left;
	bool bad; /* sticky: any short read marks the record malformed */
};

static const uint8_t *take(struct rcur *r, size_t n)
{
	if (r->bad || r->left < n) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *p = r->p;
	r->p += n;
	r->left -= n;
	return p;
}
static uint8_t get8(struct rcur *r)
{
	const uint8_t *p = take(r, 1);
	return p ? p[0] : 0;
}
static uint16_t get16(struct rcur *r)
{
	const uint8_t *p = take(r, 2);
	if (!p)
		return 0;
	return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t get32(struct rcur *r)
{
	const uint8_t *p = take(r, 4);
	return p ? rd32(p) : 0;
}
static uint64_t get64(struct rcur *r)
{
	const uint8_t *p = take(r, 8);
	return p ? rd64(p) : 0;
}
static struct store_str getstr(struct rcur *r)
{
	struct store_str s = {NULL, get16(r)};
	s.ptr = (const char *)take(r, s.len);
	if (s.ptr == NULL)
		s.len = 0;
	return s;
}
static struct store_bytes getbytes(struct rcur *r)
{
	struct store_bytes b = {NULL, get32(r)};
	b.ptr = take(r, b.len);
	if (b.ptr == NULL)
		b.len = 0;
	return b;
}

/* ---- validation shared by encoder and decoder ---- */

static bool str_ok(struct store_str s) { return s.len <= 0xffffu && (s.len == 0 || s.ptr); }
static bool bytes_ok(struct store_bytes b) { return b.len <= STORE_MAX_PAYLOAD && (b.len == 0 || b.ptr); }

/* The broker keeps user names as C strings: a NUL inside one would name
 * another user after the restore. An anonymous or unknown owner has no name,
 * so each owner has exactly one encoding. */
static bool owner_ok(const struct store_session *s)
{
	switch (s->owner) {
	case STORE_OWNER_USER:
		return str_ok(s->owner_name) &&
		       (s->owner_name.len == 0 || !memchr(s->owner_name.ptr, 0, s->owner_name.len));
	case STORE_OWNER_NONE:
	case STORE_OWNER_ANONYMOUS:
		return s->owner_name.len == 0;
	default:
		return false;
	}
}

/* The frame's version byte for r (see STORE_REC_VERSION_SESSION_OWNER). */
static uint8_t rec_version(const struct store_rec *r)
{
	if (r->type == STORE_REC_SESSION_PUT && r->u.session.claim_ns)
		return STORE_REC_VERSION_SESSION_CLAIM;
	if (r->type == STORE_REC_SESSION_PUT && r->u.session.owner != STORE_OWNER_NONE)
		return STORE_REC_VERSION_SESSION_OWNER;
	if ((r->type == STORE_REC_QUEUE_ADD && r->u.queue.sub_ids.len) ||
	    (r->type == STORE_REC_FLIGHT_SET && r->u.flight.sub_ids.len))
		return STORE_REC_VERSION_SUB_IDS;
	if (r->type == STORE_REC_STREAM_TAKEN && r->u.taken.stamp)
		return STORE_REC_VERSION_TAKEN_STAMP;
	return STORE_REC_VERSION;
}

/* A delivery's identifiers: whole u32s, each a valid Subscription
 * Identifier [MQTT-3.3.4-6 range], at most STORE_MAX_SUB_IDS. */
static bool sub_ids_ok(struct store_bytes b)
{
	if (b.len % 4 || b.len / 4 > STORE_MAX_SUB_IDS || (b.len && !b.ptr))
		return false;
	for (size_t i = 0; i < b.len; i += 4) {
		uint32_t id = rd32(b.ptr + i);
		if (id == 0 || id > 268435455u)
			return false;
	}
	return true;
}

static bool rec_valid(const struct store_rec *r)
{
	switch (r->type) {
	case STORE_REC_MSG_PUT: {
		const struct store_msg *m = &r->u.msg;
		return m->id != 0 && m->qos <= 2 && (m->flags & ~STORE_MSG_FLAGS_KNOWN) == 0 &&
		       str_ok(m->topic) && bytes_ok(m->props) && bytes_ok(m->payload) &&
		       m->props.len + m->payload.len <= STORE_MAX_PAYLOAD;
	}
	case STORE_REC_MSG_DEL:
		return r->u.msg_id != 0;
	case STORE_REC_RETAIN_SET:
		return r->u.retain.msg_id != 0 && str_ok(r->u.retain.topic);
	case STORE_REC_RETAIN_DEL:
		return str_ok(r->u.retain.topic);
	case STORE_REC_SESSION_PUT:
		return str_ok(r->u.session.client) && owner_ok(&r->u.session);
	case STORE_REC_SESSION_DEL:
		return str_ok(r->u.session.client) && r->u.session.owner == STORE_OWNER_NONE && !r->u.session.claim_ns &&
		       r->u.session.owner_name.len == 0;
	case STORE_REC_SUB_ADD:
	case STORE_REC_SUB_DEL:
		return str_ok(r->u.sub.client) && str_ok(r->u.sub.filter);
	case STORE_REC_QUEUE_ADD:
		return str_ok(r->u.queue.client) && r->u.queue.msg_id != 0 && r->u.queue.qos <= 2 &&
		       (r->u.queue.flags & ~STORE_MSG_FLAGS_KNOWN) == 0 && sub_ids_ok(r->u.queue.sub_ids);
	case STORE_REC_QUEUE_DEL:
		return str_ok(r->u.queue.client) && r->u.queue.msg_id != 0;
	case STORE_REC_FLIGHT_SET: {
		const struct store_flight *f = &r->u.flight;
		return str_ok(f->client) && f->packet_id != 0 && f->state >= STORE_FLIGHT_WAIT_PUBACK &&
		       f->state <= STORE_FLIGHT_WAIT_PUBCOMP && f->qos >= 1 && f->qos <= 2 &&
		       (f->flags & ~STORE_MSG_FLAGS_KNOWN) == 0 && sub_ids_ok(f->sub_ids) &&
		       (f->msg_id != 0 || f->state == STORE_FLIGHT_WAIT_PUBCOMP);
	}
	case STORE_REC_FLIGHT_DEL:
		return str_ok(r->u.flight.client) && r->u.flight.packet_id != 0;
	case STORE_REC_QOS2_IN_ADD:
	case STORE_REC_QOS2_IN_DEL:
		return str_ok(r->u.qos2.client) && r->u.qos2.packet_id != 0;
	case STORE_REC_WILL_SET: {
		const struct store_will *w = &r->u.will;
		return str_ok(w->client) && w->qos <= 2 && (w->flags & ~STORE_MSG_RETAIN) == 0 && str_ok(w->topic) &&
		       w->topic.len > 0 && bytes_ok(w->props) && bytes_ok(w->payload) &&
		       w->props.len + w->payload.len <= STORE_MAX_PAYLOAD;
	}
	case STORE_REC_WILL_DEL:
		return str_ok(r->u.will.client);
	case STORE_REC_FWD_ADD:
		return r->u.fwd.msg_id != 0 && r->u.fwd.id.len > 0 && r->u.fwd.id.len <= 255 && str_ok(r->u.fwd.id);
	case STORE_REC_FWD_DEL:
		return r->u.fwd.msg_id != 0 && r->u.fwd.id.len == 0;
	case STORE_REC_STREAM_TAKEN:
		return r->u.taken.seq != 0;
	case STORE_REC_RETAIN_UNSENT:
		return str_ok(r->u.mark.topic) && r->u.mark.topic.len > 0 && str_ok(r->u.mark.id) &&
		       r->u.mark.id.len > 0 && r->u.mark.id.len <= 255;
	case STORE_REC_RETAIN_SENT:
		return str_ok(r->u.mark.topic) && r->u.mark.topic.len > 0 && r->u.mark.id.len == 0;
	default:
		return false;
	}
}

static size_t payload_size(const struct store_rec *r)
{
	switch (r->type) {
	case STORE_REC_MSG_PUT:
		return 8 + 8 + 1 + 1 + 2 + r->u.msg.topic.len + 4 + r->u.msg.props.len + 4 +
		       r->u.msg.payload.len;
	case STORE_REC_MSG_DEL:
		return 8;
	case STORE_REC_RETAIN_SET:
		return 8 + 2 + r->u.retain.topic.len;
	case STORE_REC_RETAIN_DEL:
		return 2 + r->u.retain.topic.len;
	case STORE_REC_SESSION_PUT:
		return 2 + r->u.session.client.len + 1 + 1 + 2 + 4 +
		       (r->u.session.owner != STORE_OWNER_NONE || r->u.session.claim_ns
				? 1 + 2 + r->u.session.owner_name.len : 0) +
		       (r->u.session.claim_ns ? 8 : 0);
	case STORE_REC_SESSION_DEL:
		return 2 + r->u.session.client.len;
	case STORE_REC_SUB_ADD:
		return 2 + r->u.sub.client.len + 2 + r->u.sub.filter.len + 1 + 4;
	case STORE_REC_SUB_DEL:
		return 2 + r->u.sub.client.len + 2 + r->u.sub.filter.len;
	case STORE_REC_QUEUE_ADD:
		return 2 + r->u.queue.client.len + 8 + 1 + 1 + (r->u.queue.sub_ids.len ? 4 + r->u.queue.sub_ids.len : 0);
	case STORE_REC_QUEUE_DEL:
		return 2 + r->u.queue.client.len + 8;
	case STORE_REC_FLIGHT_SET:
		return 2 + r->u.flight.client.len + 8 + 2 + 1 + 1 + 1 +
		       (r->u.flight.sub_ids.len ? 4 + r->u.flight.sub_ids.len : 0);
	case STORE_REC_FLIGHT_DEL:
		return 2 + r->u.flight.client.len + 2;
	case STORE_REC_WILL_SET:
		return 2 + r->u.will.client.len + 4 + 4 + 1 + 1 + 2 + r->u.will.topic.len + 4 + r->u.will.props.len +
		       4 + r->u.will.payload.len;
	case STORE_REC_WILL_DEL:
		return 2 + r->u.will.client.len;
	case STORE_REC_FWD_ADD:
		return 8 + 2 + r->u.fwd.id.len;
	case STORE_REC_FWD_DEL:
		return 8;
	case STORE_REC_STREAM_TAKEN:
		return r->u.taken.stamp ? 24 : 16;
	case STORE_REC_RETAIN_UNSENT:
		return 2 + r->u.mark.topic.len + 2 + r->u.mark.id.len;
	case STORE_REC_RETAIN_SENT:
		return 2 + r->u.mark.topic.len;
	default: /* QOS2_IN_ADD, QOS2_IN_DEL */
		return 2 + r->u.qos2.client.len + 2;
	}
}

ssize_t store_rec_size(const struct store_rec *r)
{
	/* The decoder refuses frames above STORE_MAX_PAYLOAD: never write one. */
	if (!rec_valid(r) || payload_size(r) > STORE_MAX_PAYLOAD)
		return WISP_EINVAL;
	return (ssize_t)(STORE_FRAME_HDR + payload_size(r));
}

static void encode_payload(const struct store_rec *r, struct wcur *w)
{
	switch (r->type) {
	case STORE_REC_MSG_PUT:
		put64(w, r->u.msg.id);
		put64(w, r->u.msg.expiry);
		put8(w, r->u.msg.qos);
		put8(w, r->u.msg.flags);
		putstr(w, r->u.msg.topic);
		putbytes(w, r->u.msg.props);
		putbytes(w, r->u.msg.payload);
		break;
	case STORE_REC_MSG_DEL:
		put64(w, r->u.msg_id);
		break;
	case STORE_REC_RETAIN_SET:
		put64(w, r->u.retain.msg_id);
		putstr(w, r->u.retain.topic);
		break;
	case STORE_REC_RETAIN_DEL:
		putstr(w, r->u.retain.topic);
		break;
	case STORE_REC_SESSION_PUT:
		putstr(w, r->u.session.client);
		put8(w, r->u.session.proto);
		put8(w, r->u.session.flags);
		put16(w, r->u.session.next_packet_id);
		put32(w, r->u.session.expiry_s);
		if (r->u.session.owner != STORE_OWNER_NONE || r->u.session.claim_ns) {
			put8(w, r->u.session.owner);
			putstr(w, r->u.session.owner_name);
		}
		if (r->u.session.claim_ns)
			put64(w, r->u.session.claim_ns);
		break;
	case STORE_REC_SESSION_DEL:
		putstr(w, r->u.session.client);
		break;
	case STORE_REC_SUB_ADD:
	case STORE_REC_SUB_DEL:
		putstr(w, r->u.sub.client);
		putstr(w, r->u.sub.filter);
		if (r->type == STORE_REC_SUB_ADD) {
			put8(w, r->u.sub.options);
			put32(w, r->u.sub.sub_id);
		}
		break;
	case STORE_REC_QUEUE_ADD:
	case STORE_REC_QUEUE_DEL:
		putstr(w, r->u.queue.client);
		put64(w, r->u.queue.msg_id);
		if (r->type == STORE_REC_QUEUE_ADD) {
			put8(w, r->u.queue.qos);
			put8(w, r->u.queue.flags);
			if (r->u.queue.sub_ids.len)
				putbytes(w, r->u.queue.sub_ids);
		}
		break;
	case STORE_REC_FLIGHT_SET:
		putstr(w, r->u.flight.client);
		put64(w, r->u.flight.msg_id);
		put16(w, r->u.flight.packet_id);
		put8(w, r->u.flight.state);
		put8(w, r->u.flight.qos);
		put8(w, r->u.flight.flags);
		if (r->u.flight.sub_ids.len)
			putbytes(w, r->u.flight.sub_ids);
		break;
	case STORE_REC_FLIGHT_DEL:
		putstr(w, r->u.flight.client);
		put16(w, r->u.flight.packet_id);
		break;
	case STORE_REC_WILL_SET:
		putstr(w, r->u.will.client);
		put32(w, r->u.will.delay_s);
		put32(w, r->u.will.expiry_s);
		put8(w, r->u.will.qos);
		put8(w, r->u.will.flags);
		putstr(w, r->u.will.topic);
		putbytes(w, r->u.will.props);
		putbytes(w, r->u.will.payload);
		break;
	case STORE_REC_WILL_DEL:
		putstr(w, r->u.will.client);
		break;
	case STORE_REC_FWD_ADD:
	case STORE_REC_FWD_DEL:
		put64(w, r->u.fwd.msg_id);
		if (r->type == STORE_REC_FWD_ADD)
			putstr(w, r->u.fwd.id);
		break;
	case STORE_REC_STREAM_TAKEN:
		put64(w, r->u.taken.floor);
		put64(w, r->u.taken.seq);
		if (r->u.taken.stamp)
			put64(w, r->u.taken.stamp);
		break;
	case STORE_REC_RETAIN_UNSENT:
	case STORE_REC_RETAIN_SENT:
		putstr(w, r->u.mark.topic);
		if (r->type == STORE_REC_RETAIN_UNSENT)
			putstr(w, r->u.mark.id);
		break;
	default:
		putstr(w, r->u.qos2.client);
		put16(w, r->u.qos2.packet_id);
		break;
	}
}

ssize_t store_rec_encode(const struct store_rec *r, uint32_t salt, uint8_t *buf, size_t cap)
{
	if (!rec_valid(r) || payload_size(r) > STORE_MAX_PAYLOAD)
		return WISP_EINVAL;
	size_t plen = payload_size(r);
	if (cap < STORE_FRAME_HDR || cap - STORE_FRAME_HDR < plen)
		return WISP_ELIMIT;
	struct wcur w = {buf};
	put32(&w, (uint32_t)plen);
	put8(&w, r->type);
	put8(&w, rec_version(r));
	put16(&w, 0);
	put32(&w, store_crc32c(salt, buf, 8));
	uint8_t *crc_at = w.p;
	w.p += 4;
	encode_payload(r, &w);
	struct wcur c = {crc_at};
	put32(&c, store_crc32c(salt, buf + STORE_FRAME_HDR, plen));
	return (ssize_t)(STORE_FRAME_HDR + plen);
}

int store_rec_decode(uint8_t type, uint8_t version, const uint8_t *p, size_t len,
		     struct store_rec *out)
{
	struct rcur r = {p, len, false};

	if (type == 0 || type > STORE_REC_TYPE_MAX)
		return WISP_ENOENT;
	bool with_ids = version == STORE_REC_VERSION_SUB_IDS &&
			(type == STORE_REC_QUEUE_ADD || type == STORE_REC_FLIGHT_SET);
	bool with_stamp = version == STORE_REC_VERSION_TAKEN_STAMP && type == STORE_REC_STREAM_TAKEN;
	if (version != STORE_REC_VERSION && !with_ids && !with_stamp &&
	    !(type == STORE_REC_SESSION_PUT &&
	      (version == STORE_REC_VERSION_SESSION_OWNER || version == STORE_REC_VERSION_SESSION_CLAIM)))
		return WISP_ENOENT;
	memset(out, 0, sizeof *out);
	out->type = type;
	switch (type) {
	case STORE_REC_MSG_PUT:
		out->u.msg.id = get64(&r);
		out->u.msg.expiry = get64(&r);
		out->u.msg.qos = get8(&r);
		out->u.msg.flags = get8(&r);
		out->u.msg.topic = getstr(&r);
		out->u.msg.props = getbytes(&r);
		out->u.msg.payload = getbytes(&r);
		break;
	case STORE_REC_MSG_DEL:
		out->u.msg_id = get64(&r);
		break;
	case STORE_REC_RETAIN_SET:
		out->u.retain.msg_id = get64(&r);
		out->u.retain.topic = getstr(&r);
		break;
	case STORE_REC_RETAIN_DEL:
		out->u.retain.topic = getstr(&r);
		break;
	case STORE_REC_SESSION_PUT:
		out->u.session.client = getstr(&r);
		out->u.session.proto = get8(&r);
		out->u.session.flags = get8(&r);
		out->u.session.next_packet_id = get16(&r);
		out->u.session.expiry_s = get32(&r);
		if (version >= STORE_REC_VERSION_SESSION_OWNER) {
			out->u.session.owner = get8(&r);
			out->u.session.owner_name = getstr(&r);
			/* Version 2 always names an owner: NONE is written as version 1. */
			if (version == STORE_REC_VERSION_SESSION_OWNER && out->u.session.owner == STORE_OWNER_NONE)
				r.bad = true;
		}
		if (version == STORE_REC_VERSION_SESSION_CLAIM) {
			out->u.session.claim_ns = get64(&r);
			/* Version 3 always has a time: none is written as 1 or 2. */
			if (!out->u.session.claim_ns)
				r.bad = true;
		}
		break;
	case STORE_REC_SESSION_DEL:
		out->u.session.client = getstr(&r);
		break;
	case STORE_REC_SUB_ADD:
	case STORE_REC_SUB_DEL:
		out->u.sub.client = getstr(&r);
		out->u.sub.filter = getstr(&r);
		if (type == STORE_REC_SUB_ADD) {
			out->u.sub.options = get8(&r);
			out->u.sub.sub_id = get32(&r);
		}
		break;
	case STORE_REC_QUEUE_ADD:
	case STORE_REC_QUEUE_DEL:
		out->u.queue.client = getstr(&r);
		out->u.queue.msg_id = get64(&r);
		if (type == STORE_REC_QUEUE_ADD) {
			out->u.queue.qos = get8(&r);
			out->u.queue.flags = get8(&r);
			if (with_ids) {
				out->u.queue.sub_ids = getbytes(&r);
				/* Version 2 always carries some: none is written as version 1. */
				if (out->u.queue.sub_ids.len == 0)
					r.bad = true;
			}
		}
		break;
	case STORE_REC_FLIGHT_SET:
		out->u.flight.client = getstr(&r);
		out->u.flight.msg_id = get64(&r);
		out->u.flight.packet_id = get16(&r);
		out->u.flight.state = get8(&r);
		out->u.flight.qos = get8(&r);
		out->u.flight.flags = get8(&r);
		if (with_ids) {
			out->u.flight.sub_ids = getbytes(&r);
			if (out->u.flight.sub_ids.len == 0)
				r.bad = true;
		}
		break;
	case STORE_REC_FLIGHT_DEL:
		out->u.flight.client = getstr(&r);
		out->u.flight.packet_id = get16(&r);
		break;
	case STORE_REC_WILL_SET:
		out->u.will.client = getstr(&r);
		out->u.will.delay_s = get32(&r);
		out->u.will.expiry_s = get32(&r);
		out->u.will.qos = get8(&r);
		out->u.will.flags = get8(&r);
		out->u.will.topic = getstr(&r);
		out->u.will.props = getbytes(&r);
		out->u.will.payload = getbytes(&r);
		break;
	case STORE_REC_WILL_DEL:
		out->u.will.client = getstr(&r);
		break;
	case STORE_REC_FWD_ADD:
	case STORE_REC_FWD_DEL:
		out->u.fwd.msg_id = get64(&r);
		if (type == STORE_REC_FWD_ADD)
			out->u.fwd.id = getstr(&r);
		break;
	case STORE_REC_STREAM_TAKEN:
		out->u.taken.floor = get64(&r);
		out->u.taken.seq = get64(&r);
		if (version == STORE_REC_VERSION_TAKEN_STAMP) {
			out->u.taken.stamp = get64(&r);
			/* Version 2 always has one: none is written as version 1. */
			if (out->u.taken.stamp == 0)
				r.bad = true;
		}
		break;
	case STORE_REC_RETAIN_UNSENT:
	case STORE_REC_RETAIN_SENT:
		out->u.mark.topic = getstr(&r);
		if (type == STORE_REC_RETAIN_UNSENT)
			out->u.mark.id = getstr(&r);
		break;
	default:
		out->u.qos2.client = getstr(&r);
		out->u.qos2.packet_id = get16(&r);
		break;
	}
	if (r.bad || r.left != 0 || !rec_valid(out))
		return WISP_EPROTO;
	return 0;
}

enum store_frame_status store_frame_check(const uint8_t *buf, size_t len, uint32_t salt,
					  size_t *total)
{
	if (len < STORE_FRAME_HDR)
		return STORE_FRAME_SHORT;
	uint32_t plen = rd32(buf);
	/* Cheap filters first: the resync scan calls this at every offset. */
	if (buf[4] == 0 || buf[4] > STORE_REC_TYPE_MAX || buf[6] != 0 || buf[7] != 0 ||
	    plen > STORE_MAX_PAYLOAD)
		return STORE_FRAME_BAD_HDR;
	if (store_crc32c(salt, buf, 8) != rd32(buf + 8))
		return STORE_FRAME_BAD_HDR;
	if (len - STORE_FRAME_HDR < plen)
		return STORE_FRAME_SHORT;
	*total = STORE_FRAME_HDR + (size_t)plen;
	if (store_crc32c(salt, buf + STORE_FRAME_HDR, plen) != rd32(buf + 12))
		return STORE_FRAME_BAD_CRC;
	return STORE_FRAME_OK;
}

void store_file_header_encode(enum store_file_kind kind, uint64_t gen, uint32_t salt,
			      uint8_t out[STORE_FILE_HDR])
{
	struct wcur w = {out};
	memcpy(w.p, file_magic[kind], 8);
	w.p += 8;
	put32(&w, STORE_FORMAT_VERSION);
	put32(&w, salt);
	put64(&w, gen);
	put32(&w, 0);
	put32(&w, store_crc32c(0, out, 28));
}

int store_file_header_check(const uint8_t *buf, size_t len, enum store_file_kind kind,
			    uint64_t *gen, uint32_t *salt, const char **why)
{
	if (len < STORE_FILE_HDR) {
		*why = "file shorter than its header";
		return WISP_EPROTO;
	}
	if (memcmp(buf, file_magic[kind], 8) != 0) {
		*why = memcmp(buf, file_magic[!kind], 8) == 0 ? "wrong file kind (log/snapshot swapped)"
							      : "bad header magic";
		return WISP_EPROTO;
	}
	if (store_crc32c(0, buf, 28) != rd32(buf + 28)) {
		*why = "header checksum mismatch";
		return WISP_EPROTO;
	}
	if (rd32(buf + 8) != STORE_FORMAT_VERSION) {
		*why = "unsupported format version (written by a newer Wisp?)";
		return WISP_EPROTO;
	}
	if (rd32(buf + 24) != 0) {
		*why = "reserved header field not zero";
		return WISP_EPROTO;
	}
	*salt = rd32(buf + 12);
	*gen = rd64(buf + 16);
	return 0;
}
