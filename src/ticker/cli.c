/*
 * Command-line parsing (see cli.h). Switches behave as in pgqd 3.5; --ini is
 * honoured anywhere on the line, as pgqd checks it before getopt.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

void cli_usage(FILE *f, const char *prog)
{
	fprintf(f,
		"usage: %s [switches] config.ini\n"
		"  -v, --verbose  more output (twice: every tick)\n"
		"  -q, --quiet    nothing on stderr\n"
		"  -d, --daemon   run in the background (needs pidfile)\n"
		"  -s             stop the running daemon (SIGINT)\n"
		"  -k             kill the running daemon (SIGTERM)\n"
		"  -r             reload the running daemon (SIGHUP)\n"
		"      --check    validate the configuration and exit\n"
		"      --ini      print a commented sample configuration\n"
		"  -V, --version  print the version\n"
		"  -h, --help     this help\n",
		prog);
}

int cli_parse(int argc, char **argv, TickerCli *out)
{
	static const struct option opts[] = {
		{"verbose", no_argument, NULL, 'v'}, {"quiet", no_argument, NULL, 'q'},
		{"daemon", no_argument, NULL, 'd'},  {"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},    {"check", no_argument, NULL, 'C'},
		{"ini", no_argument, NULL, 'I'},     {NULL, 0, NULL, 0},
	};
	const char *prog = argc > 0 ? argv[0] : "pgqd-ev";
	int c;

	memset(out, 0, sizeof(*out));
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--ini") == 0) {
			out->action = CLI_INI;
			return 0;
		}
	}
	optind = 0; /* full re-initialisation in glibc */
	opterr = 1;
	while ((c = getopt_long(argc, argv, "vqdskrVh", opts, NULL)) != -1) {
		switch (c) {
		case 'v':
			out->verbose++;
			break;
		case 'q':
			out->quiet = true;
			break;
		case 'd':
			out->daemon = true;
			break;
		case 's':
			out->action = CLI_SIGNAL;
			out->signo = SIGINT;
			break;
		case 'k':
			out->action = CLI_SIGNAL;
			out->signo = SIGTERM;
			break;
		case 'r':
			out->action = CLI_SIGNAL;
			out->signo = SIGHUP;
			break;
		case 'V':
			out->action = CLI_VERSION;
			return 0;
		case 'h':
			out->action = CLI_HELP;
			return 0;
		case 'C':
			out->action = CLI_CHECK;
			break;
		case 'I':
			out->action = CLI_INI;
			return 0;
		default:
			cli_usage(stderr, prog);
			return -1;
		}
	}
	if (optind < argc)
		out->config = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument \"%s\"\n", prog, argv[optind]);
		cli_usage(stderr, prog);
		return -1;
	}
	if (!out->config) {
		fprintf(stderr, "%s requires config file\n", prog);
		return -1;
	}
	return 0;
}
