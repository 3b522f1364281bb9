/*
 * -D/--property parsing; see cli_props.h. The tables and the order of the
 * checks are libmosquitto 2.0.11's (mosquitto_string_to_command,
 * mosquitto_string_to_property_info, mosquitto_property_check_command,
 * mosquitto_property_check_all) and mosquitto's client_props.c, because
 * which error a bad command line gets depends on that order.
 */
#include "cli_props.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "cli_opts.h"
#include "codec.h"

/* libmosquitto's property type numbers: they appear in "Error adding
 * property content-type 6". */
enum prop_type {
	T_BYTE = 1,
	T_INT16 = 2,
	T_INT32 = 3,
	T_VARINT = 4,
	T_BINARY = 5,
	T_STRING = 6,
	T_PAIR = 7,
};

/* Packet types as libmosquitto numbers its commands; WILL is not a packet. */
enum cmd {
	C_CONNECT = 1,
	C_CONNACK = 2,
	C_PUBLISH = 3,
	C_PUBACK = 4,
	C_PUBREC = 5,
	C_PUBREL = 6,
	C_PUBCOMP = 7,
	C_SUBSCRIBE = 8,
	C_UNSUBSCRIBE = 10,
	C_DISCONNECT = 14,
	C_AUTH = 15,
	C_WILL = 0x100,
};

static const struct {
	const char *name;
	enum cmd cmd;
} CMDS[] = {
	/* 2.0.11 has no names for SUBACK and UNSUBACK. */
	{"connect", C_CONNECT},   {"connack", C_CONNACK},         {"publish", C_PUBLISH},
	{"puback", C_PUBACK},     {"pubrec", C_PUBREC},           {"pubrel", C_PUBREL},
	{"pubcomp", C_PUBCOMP},   {"subscribe", C_SUBSCRIBE},     {"unsubscribe", C_UNSUBSCRIBE},
	{"disconnect", C_DISCONNECT}, {"auth", C_AUTH},           {"will", C_WILL},
};

static const struct {
	const char *name;
	uint8_t id;
	enum prop_type type;
} PROPS[] = {
	{"payload-format-indicator", MQTT_PROP_PAYLOAD_FORMAT, T_BYTE},
	{"message-expiry-interval", MQTT_PROP_MESSAGE_EXPIRY, T_INT32},
	{"content-type", MQTT_PROP_CONTENT_TYPE, T_STRING},
	{"response-topic", MQTT_PROP_RESPONSE_TOPIC, T_STRING},
	{"correlation-data", MQTT_PROP_CORRELATION_DATA, T_BINARY},
	{"subscription-identifier", MQTT_PROP_SUBSCRIPTION_ID, T_VARINT},
	{"session-expiry-interval", MQTT_PROP_SESSION_EXPIRY, T_INT32},
	{"assigned-client-identifier", MQTT_PROP_ASSIGNED_CLIENT_ID, T_STRING},
	{"server-keep-alive", MQTT_PROP_SERVER_KEEP_ALIVE, T_INT16},
	{"authentication-method", MQTT_PROP_AUTH_METHOD, T_STRING},
	{"authentication-data", MQTT_PROP_AUTH_DATA, T_BINARY},
	{"request-problem-information", MQTT_PROP_REQUEST_PROBLEM_INFO, T_BYTE},
	{"will-delay-interval", MQTT_PROP_WILL_DELAY, T_INT32},
	{"request-response-information", MQTT_PROP_REQUEST_RESPONSE_INFO, T_BYTE},
	{"response-information", MQTT_PROP_RESPONSE_INFO, T_STRING},
	{"server-reference", MQTT_PROP_SERVER_REFERENCE, T_STRING},
	{"reason-string", MQTT_PROP_REASON_STRING, T_STRING},
	{"receive-maximum", MQTT_PROP_RECEIVE_MAXIMUM, T_INT16},
	{"topic-alias-maximum", MQTT_PROP_TOPIC_ALIAS_MAXIMUM, T_INT16},
	{"topic-alias", MQTT_PROP_TOPIC_ALIAS, T_INT16},
	{"maximum-qos", MQTT_PROP_MAXIMUM_QOS, T_BYTE},
	{"retain-available", MQTT_PROP_RETAIN_AVAILABLE, T_BYTE},
	{"user-property", MQTT_PROP_USER_PROPERTY, T_PAIR},
	{"maximum-packet-size", MQTT_PROP_MAXIMUM_PACKET_SIZE, T_INT32},
	{"wildcard-subscription-available", MQTT_PROP_WILDCARD_SUB_AVAILABLE, T_BYTE},
	{"subscription-identifier-available", MQTT_PROP_SUB_ID_AVAILABLE, T_BYTE},
	{"shared-subscription-available", MQTT_PROP_SHARED_SUB_AVAILABLE, T_BYTE},
};

/* Where a property may appear [MQTT-2.2.2.2], as libmosquitto checks it. */
static bool allowed(enum cmd cmd, uint8_t id)
{
	switch (id) {
	case MQTT_PROP_PAYLOAD_FORMAT:
	case MQTT_PROP_MESSAGE_EXPIRY:
	case MQTT_PROP_CONTENT_TYPE:
	case MQTT_PROP_RESPONSE_TOPIC:
	case MQTT_PROP_CORRELATION_DATA:
		return cmd == C_PUBLISH || cmd == C_WILL;
	case MQTT_PROP_SUBSCRIPTION_ID:
		return cmd == C_PUBLISH || cmd == C_SUBSCRIBE;
	case MQTT_PROP_SESSION_EXPIRY:
		return cmd == C_CONNECT || cmd == C_CONNACK || cmd == C_DISCONNECT;
	case MQTT_PROP_AUTH_METHOD:
	case MQTT_PROP_AUTH_DATA:
		return cmd == C_CONNECT || cmd == C_CONNACK || cmd == C_AUTH;
	case MQTT_PROP_ASSIGNED_CLIENT_ID:
	case MQTT_PROP_SERVER_KEEP_ALIVE:
	case MQTT_PROP_RESPONSE_INFO:
	case MQTT_PROP_MAXIMUM_QOS:
	case MQTT_PROP_RETAIN_AVAILABLE:
	case MQTT_PROP_WILDCARD_SUB_AVAILABLE:
	case MQTT_PROP_SUB_ID_AVAILABLE:
	case MQTT_PROP_SHARED_SUB_AVAILABLE:
		return cmd == C_CONNACK;
	case MQTT_PROP_WILL_DELAY:
		return cmd == C_WILL;
	case MQTT_PROP_REQUEST_PROBLEM_INFO:
	case MQTT_PROP_REQUEST_RESPONSE_INFO:
		return cmd == C_CONNECT;
	case MQTT_PROP_SERVER_REFERENCE:
		return cmd == C_CONNACK || cmd == C_DISCONNECT;
	case MQTT_PROP_REASON_STRING:
		return cmd != C_CONNECT && cmd != C_PUBLISH && cmd != C_SUBSCRIBE && cmd != C_UNSUBSCRIBE;
	case MQTT_PROP_RECEIVE_MAXIMUM:
	case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
	case MQTT_PROP_MAXIMUM_PACKET_SIZE:
		return cmd == C_CONNECT || cmd == C_CONNACK;
	case MQTT_PROP_TOPIC_ALIAS:
		return cmd == C_PUBLISH;
	case MQTT_PROP_USER_PROPERTY:
		return true;
	}
	return false;
}

static int reserve(struct cli_props *p, size_t need)
{
	if (p->cap - p->len >= need)
		return 0;
	size_t ncap = p->cap ? p->cap : 64;
	while (ncap - p->len < need)
		ncap *= 2;
	uint8_t *b = wisp_realloc(p->buf, ncap);
	if (!b)
		return -1;
	p->buf = b;
	p->cap = ncap;
	return 0;
}

int cli_props_add_u32(struct cli_props *p, uint8_t id, uint32_t v)
{
	if (reserve(p, 5))
		return -1;
	return mqtt_props_put_u32(p->buf, p->cap, &p->len, id, v) == 0 ? 0 : -1;
}

static struct mqtt_str mstr(const char *s)
{
	return (struct mqtt_str){(const uint8_t *)s, strlen(s)};
}

/* Appends one property; libmosquitto's mosquitto_property_add_* checks
 * (a varint beyond four bytes, malformed UTF-8 in a string or a user
 * property name, a string too long) fail with "Error adding property". */
static int add(struct cli_props *p, uint8_t id, enum prop_type type, long num, const char *key, const char *value)
{
	int rc = 0;
	size_t slen = value ? strlen(value) : 0, klen = key ? strlen(key) : 0;
	if (reserve(p, 16 + slen + klen))
		return -1;
	switch (type) {
	case T_BYTE:
		rc = mqtt_props_put_u8(p->buf, p->cap, &p->len, id, (uint8_t)num);
		break;
	case T_INT16:
		rc = mqtt_props_put_u16(p->buf, p->cap, &p->len, id, (uint16_t)num);
		break;
	case T_INT32:
		rc = mqtt_props_put_u32(p->buf, p->cap, &p->len, id, (uint32_t)num);
		break;
	case T_VARINT:
		rc = mqtt_props_put_varint(p->buf, p->cap, &p->len, id, (uint32_t)num);
		break;
	case T_BINARY:
		rc = mqtt_props_put_str(p->buf, p->cap, &p->len, id, mstr(value));
		break;
	case T_STRING:
		if (!cli_utf8_valid(value))
			return -1;
		rc = mqtt_props_put_str(p->buf, p->cap, &p->len, id, mstr(value));
		break;
	case T_PAIR:
		/* 2.0.11 checks the name's UTF-8 but, by a slip, not the value's. */
		if (!cli_utf8_valid(key))
			return -1;
		rc = mqtt_props_put_pair(p->buf, p->cap, &p->len, mstr(key), mstr(value));
		break;
	}
	return rc == 0 ? 0 : -1;
}

int cli_props_parse(struct cli_prop_set *ps, char **args, int avail)
{
	if (avail < 3) {
		fprintf(stderr, "Error: --property argument given but not enough arguments specified.\n\n");
		return -1;
	}
	const char *cmdname = args[0], *propname = args[1];
	int cmd = 0;
	for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++)
		if (!strcasecmp(cmdname, CMDS[i].name))
			cmd = (int)CMDS[i].cmd;
	if (!cmd) {
		fprintf(stderr, "Error: Invalid command given in --property argument.\n\n");
		return -1;
	}
	size_t pi = sizeof PROPS / sizeof PROPS[0];
	for (size_t i = 0; i < sizeof PROPS / sizeof PROPS[0]; i++)
		if (!strcasecmp(propname, PROPS[i].name))
			pi = i;
	if (pi == sizeof PROPS / sizeof PROPS[0]) {
		fprintf(stderr, "Error: Invalid property name given in --property argument.\n\n");
		return -1;
	}
	uint8_t id = PROPS[pi].id;
	enum prop_type type = PROPS[pi].type;
	if (!allowed((enum cmd)cmd, id)) {
		fprintf(stderr, "Error: %s property not allowed for %s in --property argument.\n\n", propname, cmdname);
		return -1;
	}
	const char *key = NULL, *value;
	int used;
	if (id == MQTT_PROP_USER_PROPERTY) {
		if (avail < 4) {
			fprintf(stderr, "Error: --property argument given but not enough arguments specified.\n\n");
			return -1;
		}
		key = args[2];
		value = args[3];
		used = 4;
	} else {
		value = args[2];
		used = 3;
	}
	struct cli_props *list;
	switch ((enum cmd)cmd) {
	case C_CONNECT:
		list = &ps->list[CLI_PROPS_CONNECT];
		break;
	case C_PUBLISH:
		if (id == MQTT_PROP_TOPIC_ALIAS)
			ps->have_topic_alias = true;
		if (id == MQTT_PROP_SUBSCRIPTION_ID) {
			fprintf(stderr, "Error: %s property not supported for %s in --property argument.\n\n", propname,
				cmdname);
			return -1;
		}
		list = &ps->list[CLI_PROPS_PUBLISH];
		break;
	case C_SUBSCRIBE:
		if (id != MQTT_PROP_SUBSCRIPTION_ID && id != MQTT_PROP_USER_PROPERTY) {
			fprintf(stderr, "Error: %s property not supported for %s in --property argument.\n\n", propname,
				cmdname);
			return -1;
		}
		list = &ps->list[CLI_PROPS_SUBSCRIBE];
		break;
	case C_UNSUBSCRIBE:
		list = &ps->list[CLI_PROPS_UNSUBSCRIBE];
		break;
	case C_DISCONNECT:
		list = &ps->list[CLI_PROPS_DISCONNECT];
		break;
	case C_WILL:
		list = &ps->list[CLI_PROPS_WILL];
		break;
	case C_AUTH:
	case C_PUBACK:
	case C_PUBREC:
	case C_PUBREL:
	case C_PUBCOMP:
		fprintf(stderr, "Error: %s property not supported for %s in --property argument.\n\n", propname, cmdname);
		return -1;
	default: /* CONNACK: refused without a word, as mosquitto does */
		return -1;
	}
	long num = 0;
	switch (type) {
	case T_BYTE:
	case T_INT16:
	case T_INT32:
	case T_VARINT: {
		/* atol(), as mosquitto: "abc" is 0. */
		num = strtol(value, NULL, 10);
		long max = type == T_BYTE ? UINT8_MAX : type == T_INT16 ? UINT16_MAX : (long)UINT32_MAX;
		if (num < 0 || num > max) {
			fprintf(stderr, "Error: Property value (%ld) out of range for property %s.\n\n", num, propname);
			return -1;
		}
		if (type == T_VARINT && num > (long)MQTT_MAX_REMAINING_LEN)
			goto add_failed;
		break;
	}
	case T_BINARY:
		if (strlen(value) > UINT16_MAX) {
			fprintf(stderr, "Error: Property value too long for property %s.\n\n", propname);
			return -1;
		}
		break;
	default:
		break;
	}
	if (add(list, id, type, num, key, value) == 0)
		return used;
add_failed:
	fprintf(stderr, "Error adding property %s %d\n", propname, (int)type);
	return -1;
}

/* mosquitto_property_check_all(): a 0/1 byte above 1, a zero maximum packet
 * size, receive maximum or topic alias are protocol errors
 * [MQTT-3.1.2.11]; any property but user-property at most once. */
static const char *check_list(const struct cli_props *p)
{
	struct mqtt_props view = {.raw = {p->buf, p->len}};
	struct mqtt_prop_iter it;
	struct mqtt_prop prop;
	uint64_t seen = 0;
	mqtt_props_iter_init(&view, &it);
	while (mqtt_props_next(&it, &prop)) {
		switch (prop.id) {
		case MQTT_PROP_REQUEST_PROBLEM_INFO:
		case MQTT_PROP_REQUEST_RESPONSE_INFO:
		case MQTT_PROP_MAXIMUM_QOS:
		case MQTT_PROP_RETAIN_AVAILABLE:
		case MQTT_PROP_WILDCARD_SUB_AVAILABLE:
		case MQTT_PROP_SUB_ID_AVAILABLE:
		case MQTT_PROP_SHARED_SUB_AVAILABLE:
			if (prop.value > 1)
				return "A network protocol error occurred when communicating with the broker.";
			break;
		case MQTT_PROP_MAXIMUM_PACKET_SIZE:
		case MQTT_PROP_RECEIVE_MAXIMUM:
		case MQTT_PROP_TOPIC_ALIAS:
			if (prop.value == 0)
				return "A network protocol error occurred when communicating with the broker.";
			break;
		}
		if (prop.id != MQTT_PROP_USER_PROPERTY) {
			if (seen & MQTT_PROP_BIT(prop.id))
				return "Duplicate property in property list";
			seen |= MQTT_PROP_BIT(prop.id);
		}
	}
	return NULL;
}

int cli_props_check_all(const struct cli_prop_set *ps, bool quiet)
{
	static const char *const names[CLI_PROPS_COUNT] = {"CONNECT", "PUBLISH", "SUBSCRIBE", "UNSUBSCRIBE",
							   "DISCONNECT", "Will"};
	for (int i = 0; i < CLI_PROPS_COUNT; i++) {
		const char *err = check_list(&ps->list[i]);
		if (err) {
			if (!quiet)
				fprintf(stderr, "Error in %s properties: %s\n", names[i], err);
			return 1;
		}
	}
	return 0;
}

void cli_props_cleanup(struct cli_prop_set *ps)
{
	for (int i = 0; i < CLI_PROPS_COUNT; i++)
		wisp_free(ps->list[i].buf);
	memset(ps, 0, sizeof *ps);
}
