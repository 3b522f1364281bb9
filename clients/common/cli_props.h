/*
 * MQTT v5 properties given with -D/--property, as mosquitto_pub/sub 2.0
 * parse them: `-D command identifier value` (user-property takes a name and
 * a value), one property list per command, checked property by property
 * while parsing and as a whole list once all options are read, with
 * mosquitto's error texts for every wrong combination.
 *
 * Each list is kept as an encoded v5 property block (without its length),
 * ready for mqtt_props.raw, so the client library sends it as it is.
 */
#ifndef WISP_CLIENTS_CLI_PROPS_H
#define WISP_CLIENTS_CLI_PROPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The commands whose properties the tools send. */
enum cli_prop_cmd {
	CLI_PROPS_CONNECT,
	CLI_PROPS_PUBLISH,
	CLI_PROPS_SUBSCRIBE,
	CLI_PROPS_UNSUBSCRIBE,
	CLI_PROPS_DISCONNECT,
	CLI_PROPS_WILL,
	CLI_PROPS_COUNT,
};

/* An encoded property block. */
struct cli_props {
	uint8_t *buf;
	size_t len, cap;
};

struct cli_prop_set {
	struct cli_props list[CLI_PROPS_COUNT];
	bool have_topic_alias; /* -D publish topic-alias: topics after the first are left out */
};

/*
 * Parses one -D: `args` points at the command name, `avail` is how many
 * arguments follow the -D. Returns the number of arguments consumed (2 or
 * 3), or -1 after printing mosquitto's error.
 */
int cli_props_parse(struct cli_prop_set *ps, char **args, int avail);
/* Appends a four-byte property (session expiry from -x). 0 or -1. */
int cli_props_add_u32(struct cli_props *p, uint8_t id, uint32_t v);
/* mosquitto_property_check_all() for every list, in mosquitto's order;
 * prints "Error in CONNECT properties: ..." (unless quiet). 0 or 1. */
int cli_props_check_all(const struct cli_prop_set *ps, bool quiet);
void cli_props_cleanup(struct cli_prop_set *ps);

#endif
