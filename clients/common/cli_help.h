/* Usage and version texts of wisp_pub and wisp_sub (printed on stdout). */
#ifndef WISP_CLIENTS_CLI_HELP_H
#define WISP_CLIENTS_CLI_HELP_H

#include "cli_opts.h"

void cli_print_usage(enum cli_kind kind);
void cli_print_version(enum cli_kind kind);

#endif
