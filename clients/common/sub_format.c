/*
 * Message rendering for wisp_sub; see sub_format.h. Field widths and
 * padding follow mosquitto_sub's rules, which differ per field: integers
 * use printf widths, strings printf widths and precisions, and payloads a
 * width that also truncates (in bytes, halved for hex).
 */
#include "sub_format.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

struct field {
	char align; /* '-' or 0 */
	char pad;   /* ' ' or '0' */
	int width;
	int precision; /* -1: none */
};

static void put_padding(FILE *out, int n, char pad)
{
	for (int i = 0; i < n; i++)
		fputc(pad, out);
}

/* hex: 0 raw, 1 lower, 2 upper. */
static void put_payload(FILE *out, const struct sub_msg *m, int hex, const struct field *f)
{
	int len = (int)m->len, padlen;
	if (f->width > 0) {
		if (len > f->width)
			len = f->width;
		if (hex) {
			len /= 2;
			padlen = f->width - len * 2;
		} else {
			padlen = f->width - len;
		}
	} else {
		padlen = f->width - len;
	}
	if (f->align != '-')
		put_padding(out, padlen, f->pad);
	const unsigned char *p = (const unsigned char *)m->payload;
	if (hex == 0) {
		if (len > 0)
			fwrite(p, 1, (size_t)len, out);
	} else {
		for (int i = 0; i < len; i++)
			fprintf(out, hex == 1 ? "%02x" : "%02X", p[i]);
	}
	if (f->align == '-' && padlen > 0)
		fprintf(out, "%*s", padlen, "");
}

static void put_int(FILE *out, long long v, const struct field *f)
{
	if (f->width == 0)
		fprintf(out, "%lld", v);
	else if (f->align == '-')
		fprintf(out, "%-*lld", f->width, v);
	else if (f->pad == '0')
		fprintf(out, "%0*lld", f->width, v);
	else
		fprintf(out, "%*lld", f->width, v);
}

static void put_str(FILE *out, const char *s, int slen, const struct field *f)
{
	int prec = f->precision;
	if (prec < 0 || prec > slen)
		prec = slen;
	if (f->align == '-')
		fprintf(out, "%-*.*s", f->width, prec, s);
	else
		fprintf(out, "%*.*s", f->width, prec, s);
}

static void put_mstr(FILE *out, struct mqtt_str s, const struct field *f)
{
	put_str(out, (const char *)s.ptr, (int)s.len, f);
}

static bool has_prop(const struct sub_msg *m, int id)
{
	return m->props && (m->props->present & MQTT_PROP_BIT(id));
}

/* mosquitto's "tst": local time with microseconds, a literal 'Z' and then
 * the numeric zone (2.0.11 prints both). */
static void json_timestamp(char *buf, size_t cap, const struct tm *ti, long ns)
{
	char base[64];
	strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", ti);
	char zone[16];
	strftime(zone, sizeof zone, "%z", ti);
	snprintf(buf, cap, "%s.%06ldZ%s", base, ns / 1000, zone);
}

/* A C string copy of a property string or binary, as libmosquitto's
 * property readers hand them out (binary data ends at its first NUL). */
static char *prop_cstr(struct mqtt_str s)
{
	return wisp_strndup((const char *)s.ptr, s.len);
}

static bool add_string(cJSON *obj, const char *key, struct mqtt_str s)
{
	char *v = prop_cstr(s);
	if (!v)
		return false;
	cJSON_AddItemToObject(obj, key, cJSON_CreateString(v));
	wisp_free(v);
	return true;
}

/*
 * mosquitto_sub's "properties" object: the PUBLISH properties in wire
 * order, named as mosquitto_property_identifier_to_string() names them,
 * user properties gathered in "user-properties" (a repeated name is
 * repeated, as cJSON allows). One quirk is kept: topic-alias prints the
 * length of the last correlation data before it (0 if none), because
 * 2.0.11 reads it with the wrong identifier. False when out of memory.
 */
static bool json_props(cJSON *root, const struct mqtt_props *props)
{
	static const char *const names[] = {
		[MQTT_PROP_PAYLOAD_FORMAT] = "payload-format-indicator",
		[MQTT_PROP_MESSAGE_EXPIRY] = "message-expiry-interval",
		[MQTT_PROP_CONTENT_TYPE] = "content-type",
		[MQTT_PROP_RESPONSE_TOPIC] = "response-topic",
		[MQTT_PROP_CORRELATION_DATA] = "correlation-data",
		[MQTT_PROP_SUBSCRIPTION_ID] = "subscription-identifier",
		[MQTT_PROP_TOPIC_ALIAS] = "topic-alias",
	};
	cJSON *obj = cJSON_CreateObject(), *user = NULL;
	if (!obj)
		return false;
	cJSON_AddItemToObject(root, "properties", obj);
	struct mqtt_prop_iter it;
	struct mqtt_prop p;
	uint16_t last_len = 0;
	mqtt_props_iter_init(props, &it);
	while (mqtt_props_next(&it, &p)) {
		switch (p.id) {
		case MQTT_PROP_PAYLOAD_FORMAT:
		case MQTT_PROP_MESSAGE_EXPIRY:
		case MQTT_PROP_SUBSCRIPTION_ID:
			cJSON_AddItemToObject(obj, names[p.id], cJSON_CreateNumber(p.value));
			break;
		case MQTT_PROP_TOPIC_ALIAS:
			cJSON_AddItemToObject(obj, names[p.id], cJSON_CreateNumber(last_len));
			break;
		case MQTT_PROP_CORRELATION_DATA:
			last_len = (uint16_t)p.str.len;
			if (!add_string(obj, names[p.id], p.str))
				return false;
			break;
		case MQTT_PROP_CONTENT_TYPE:
		case MQTT_PROP_RESPONSE_TOPIC:
			if (!add_string(obj, names[p.id], p.str))
				return false;
			break;
		case MQTT_PROP_USER_PROPERTY: {
			if (!user) {
				if (!(user = cJSON_CreateObject()))
					return false;
				cJSON_AddItemToObject(obj, "user-properties", user);
			}
			char *key = prop_cstr(p.str);
			bool ok = key && add_string(user, key, p.value_str);
			wisp_free(key);
			if (!ok)
				return false;
			break;
		}
		}
	}
	return true;
}

/* 0; 1 when `raw` is set and the payload is not one whole JSON value; 2
 * when out of memory. */
static int put_json(FILE *out, const struct sub_msg *m, const struct tm *ti, long ns, bool raw, bool pretty)
{
	char tst[100];
	json_timestamp(tst, sizeof tst, ti, ns);
	cJSON *root = cJSON_CreateObject();
	if (!root)
		return 0;
	cJSON_AddItemToObject(root, "tst", cJSON_CreateString(tst));
	cJSON_AddItemToObject(root, "topic", cJSON_CreateString(m->topic));
	cJSON_AddItemToObject(root, "qos", cJSON_CreateNumber(m->qos));
	cJSON_AddItemToObject(root, "retain", cJSON_CreateNumber(m->retain ? 1 : 0));
	cJSON_AddItemToObject(root, "payloadlen", cJSON_CreateNumber((double)m->len));
	if (m->qos > 0)
		cJSON_AddItemToObject(root, "mid", cJSON_CreateNumber(m->mid));
	if (m->props && m->props->raw.len && !json_props(root, m->props)) {
		cJSON_Delete(root);
		return 2;
	}
	cJSON *payload;
	if (!m->payload) {
		payload = cJSON_CreateNull();
	} else if (!raw) {
		/* A C string, as libmosquitto hands it over: an embedded NUL ends it. */
		payload = cJSON_CreateString(m->payload);
	} else {
		const char *end = NULL;
		payload = cJSON_ParseWithOpts(m->payload, &end, 1);
		if (!payload || end != m->payload + m->len) {
			cJSON_Delete(payload);
			cJSON_Delete(root);
			return 1;
		}
	}
	cJSON_AddItemToObject(root, "payload", payload);
	char *s = pretty ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (s) {
		fputs(s, out);
		cJSON_free(s);
	}
	return 0;
}

struct clock_view {
	const struct timespec *now;
	struct tm tm;
	bool have;
};

static const struct tm *local_tm(struct clock_view *cv)
{
	if (!cv->have) {
		time_t s = cv->now->tv_sec;
		localtime_r(&s, &cv->tm);
		cv->have = true;
	}
	return &cv->tm;
}

static void put_field(FILE *out, FILE *err, const struct sub_format_opts *o, const struct sub_msg *m, char spec,
		      const struct field *f, struct clock_view *cv)
{
	char buf[128];
	switch (spec) {
	case '%':
		fputc('%', out);
		break;
	case 'A':
		if (has_prop(m, MQTT_PROP_TOPIC_ALIAS))
			put_int(out, m->props->topic_alias, f);
		else
			put_padding(out, f->width, f->pad);
		break;
	case 'C':
		if (has_prop(m, MQTT_PROP_CONTENT_TYPE))
			put_mstr(out, m->props->content_type, f);
		else
			put_padding(out, f->width, ' ');
		break;
	case 'D':
		if (has_prop(m, MQTT_PROP_CORRELATION_DATA))
			fwrite(m->props->correlation_data.ptr, 1, m->props->correlation_data.len, out);
		break;
	case 'E':
		if (has_prop(m, MQTT_PROP_MESSAGE_EXPIRY))
			put_int(out, (int)m->props->message_expiry, f);
		else
			put_padding(out, f->width, f->pad);
		break;
	case 'F':
		if (has_prop(m, MQTT_PROP_PAYLOAD_FORMAT))
			put_int(out, m->props->payload_format, f);
		else
			put_padding(out, f->width, f->pad);
		break;
	case 'I':
		if (strftime(buf, sizeof buf, "%FT%T%z", local_tm(cv)) != 0)
			put_str(out, buf, (int)strlen(buf), f);
		else
			put_padding(out, f->width, ' ');
		break;
	case 'j':
	case 'J': {
		int rc = put_json(out, m, local_tm(cv), cv->now->tv_nsec, spec == 'J', o->pretty);
		if (rc && !o->quiet) {
			if (rc == 2)
				fprintf(err, "Error: Out of memory.\n");
			else
				fprintf(err, "Error: Message payload is not valid JSON on topic %s.\n", m->topic);
		}
		break;
	}
	case 'l':
		put_int(out, (long long)m->len, f);
		break;
	case 'm':
		put_int(out, m->mid, f);
		break;
	case 'P':
		if (m->props && m->props->user_property_count) {
			struct mqtt_prop_iter it;
			struct mqtt_prop p;
			bool first = true;
			mqtt_props_iter_init(m->props, &it);
			while (mqtt_props_next(&it, &p)) {
				if (p.id != MQTT_PROP_USER_PROPERTY)
					continue;
				if (!first)
					fputc(' ', out);
				first = false;
				fprintf(out, "%.*s:%.*s", (int)p.str.len, (const char *)p.str.ptr,
					(int)p.value_str.len, (const char *)p.value_str.ptr);
			}
		}
		break;
	case 'p':
		put_payload(out, m, 0, f);
		break;
	case 'q':
		fputc('0' + m->qos, out);
		break;
	case 'R':
		if (has_prop(m, MQTT_PROP_RESPONSE_TOPIC))
			put_mstr(out, m->props->response_topic, f);
		break;
	case 'r':
		fputc(m->retain ? '1' : '0', out);
		break;
	case 'S':
		if (has_prop(m, MQTT_PROP_SUBSCRIPTION_ID))
			put_int(out, (int)m->props->subscription_id, f);
		else
			put_padding(out, f->width, f->pad);
		break;
	case 't':
		put_str(out, m->topic, (int)strlen(m->topic), f);
		break;
	case 'U':
		if (strftime(buf, sizeof buf, "%s", local_tm(cv)) != 0)
			fprintf(out, "%s.%09ld", buf, cv->now->tv_nsec);
		break;
	case 'x':
		put_payload(out, m, 1, f);
		break;
	case 'X':
		put_payload(out, m, 2, f);
		break;
	}
}

static int escape_char(char c)
{
	switch (c) {
	case '\\': return '\\';
	case '0': return '\0';
	case 'a': return '\a';
	case 'e': return '\033';
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	case 'v': return '\v';
	}
	return -1;
}

static void print_formatted(FILE *out, FILE *err, const struct sub_format_opts *o, const struct sub_msg *m,
			    const struct timespec *now)
{
	const char *fmt = o->format;
	size_t len = strlen(fmt);
	struct clock_view cv = {.now = now};
	for (size_t i = 0; i < len; i++) {
		if (fmt[i] == '%') {
			struct field f = {0, ' ', 0, -1};
			if (i + 1 >= len)
				continue;
			i++;
			if (fmt[i] == '-') {
				f.align = '-';
				if (i < len - 1)
					i++;
			}
			if (fmt[i] == '0') {
				f.pad = '0';
				if (i < len - 1)
					i++;
			}
			while (i < len - 1 && fmt[i] >= '0' && fmt[i] <= '9') {
				f.width = f.width * 10 + (fmt[i] - '0');
				i++;
			}
			if (fmt[i] == '.' && i < len - 1) {
				i++;
				f.precision = 0;
				while (i < len - 1 && fmt[i] >= '0' && fmt[i] <= '9') {
					f.precision = f.precision * 10 + (fmt[i] - '0');
					i++;
				}
			}
			put_field(out, err, o, m, fmt[i], &f, &cv);
		} else if (fmt[i] == '@') {
			if (i + 1 >= len)
				continue;
			i++;
			if (fmt[i] == '@') {
				fputc('@', out);
			} else if (fmt[i] == 'N') {
				fprintf(out, "%09ld", now->tv_nsec);
			} else {
				char spec[3] = {'%', fmt[i], '\0'}, buf[128];
				/* The format comes from the user, as strftime's
				 * own command-line tools take it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
				if (strftime(buf, sizeof buf, spec, local_tm(&cv)) != 0)
					fputs(buf, out);
#pragma GCC diagnostic pop
			}
		} else if (fmt[i] == '\\') {
			if (i + 1 >= len)
				continue;
			i++;
			int c = escape_char(fmt[i]);
			if (c != -1)
				fputc(c, out);
		} else {
			fputc(fmt[i], out);
		}
	}
	if (o->eol)
		fputc('\n', out);
}

void sub_format_print(FILE *out, FILE *err, const struct sub_format_opts *o, const struct sub_msg *m,
		      const struct timespec *now)
{
	if (o->format) {
		print_formatted(out, err, o, m, now);
	} else if (o->verbose) {
		if (m->len) {
			fprintf(out, "%s ", m->topic);
			fwrite(m->payload, 1, m->len, out);
			if (o->eol)
				fputc('\n', out);
		} else if (o->eol) {
			fprintf(out, "%s (null)\n", m->topic);
		}
	} else if (m->len) {
		fwrite(m->payload, 1, m->len, out);
		if (o->eol)
			fputc('\n', out);
	}
	fflush(out);
}
