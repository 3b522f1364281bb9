/*
 * Small pieces shared by the client tools: topic filter matching (for -T),
 * the usage/version texts, and signals delivered through the loop.
 */
#ifndef WISP_CLIENTS_CLI_MISC_H
#define WISP_CLIENTS_CLI_MISC_H

#include <stdbool.h>
#include <stddef.h>

#include "loop.h"

/* True when `topic` matches `filter` ('+', '#'; a first-level wildcard
 * does not match a '$' topic [MQTT-4.7.2-1]). */
bool cli_topic_matches(const char *filter, const char *topic, size_t topic_len);

typedef void (*cli_signal_fn)(int signo, void *ud);

struct cli_signals {
	struct loop_io io;
	cli_signal_fn cb;
	void *ud;
};

/* Blocks SIGINT, SIGTERM, SIGALRM (and SIGPIPE is ignored) and delivers
 * them to `cb` from the loop. 0 or -1. */
int cli_signals_start(struct cli_signals *s, struct loop *l, cli_signal_fn cb, void *ud);
void cli_signals_stop(struct cli_signals *s, struct loop *l);

#endif
