/*
 * pgqd-ev's command line: pgqd's switches (-v -q -d -s -k -r -h -V --ini) plus
 * --check and --version.
 */
#ifndef PGQEV_TICKER_CLI_H
#define PGQEV_TICKER_CLI_H

#include <stdbool.h>

typedef enum CliAction {
	CLI_RUN = 0, /* run the daemon */
	CLI_CHECK,   /* validate the config and exit */
	CLI_INI,     /* print the sample config */
	CLI_HELP,
	CLI_VERSION,
	CLI_SIGNAL, /* send `signo` to the running daemon (-s/-k/-r) */
} CliAction;

typedef struct TickerCli {
	CliAction action;
	int verbose; /* -v count */
	bool quiet;  /* -q */
	bool daemon; /* -d */
	int signo;   /* CLI_SIGNAL */
	const char *config;
} TickerCli;

/*
 * Parse argv. Returns 0, or -1 after printing the problem and the usage to
 * stderr (exit status 1, as pgqd).
 */
int cli_parse(int argc, char **argv, TickerCli *out);
void cli_usage(FILE *f, const char *prog);

#endif
