/*
 * pgqctl main: global options, the command table, dispatch, exit codes.
 *
 * The table nests: a group entry (sub != NULL) takes the next word as its
 * sub-command (`pgqctl retry now`, `pgqctl node create-root`).
 */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_config.h>
#include <pgqd-ev/pqev_connlimit.h>

#include "pgqctl.h"
#include "pgqev_config.h"

volatile int ctl_signalled;

static const CtlCommand retry_commands[] = {
	{"list", cmd_retry_list, NULL, "[QUEUE] [--limit N]", "events waiting in the retry queue"},
	{"now", cmd_retry_now, NULL, "QUEUE [EVENT_ID...]",
	 "make retry events due now (all of the queue without ids)"},
	{"drop", cmd_retry_drop, NULL, "QUEUE EVENT_ID... --yes | QUEUE --all-events --yes",
	 "delete events from the retry queue"},
	{NULL},
};

static const CtlCommand node_commands[] = {
	{"create-root", cmd_node_create_root, NULL,
	 "NODE [PUBLIC_CONNSTR] --queue QUEUE [--worker W] [--store-password]",
	 "make this database (-d) the root node of a cascade"},
	{"create-branch", cmd_node_create_branch, NULL,
	 "NODE [PUBLIC_CONNSTR] --provider CONNSTR --queue QUEUE [--worker W] [--sync-watermark "
	 "A,B] [--store-password]",
	 "make this database a branch node (full copy of the queue) under a provider"},
	{"create-leaf", cmd_node_create_leaf, NULL,
	 "NODE [PUBLIC_CONNSTR] --provider CONNSTR --queue QUEUE [--worker W] [--merge "
	 "COMBINED_QUEUE] [--store-password]",
	 "make this database a leaf node (no local queue) under a provider"},
	{"members", cmd_node_members, NULL, "QUEUE",
	 "the cascade's members as this node knows them"},
	{"info", cmd_node_info, NULL, "QUEUE", "this database's node of the cascade"},
	{"change-provider", cmd_node_change_provider, NULL,
	 "--cascade QUEUE --provider NODE [--node NODE | --consumer C] [--dry-run] [--timeout SEC]",
	 "make a node's worker (or a cascaded consumer) read from another node"},
	{"switchover", cmd_node_switchover, NULL,
	 "NEW_ROOT --cascade QUEUE [--old ROOT] [--dry-run] [--timeout SEC]",
	 "the live root hands its role to a branch; the old root becomes its branch"},
	{"failover", cmd_node_failover, NULL,
	 "--dead OLD NEW --cascade QUEUE [--dry-run] [--timeout SEC]",
	 "NEW takes over from a dead root, or a dead branch's subscribers move to NEW"},
	{"status", cmd_node_status, NULL, "QUEUE [--max-lag SECONDS]",
	 "the cascade as a tree from any member; exit 3 when something is wrong"},
	{"pause", cmd_node_pause, NULL,
	 "QUEUE [--node N | --consumer C] [--timeout SECONDS | --no-wait]",
	 "pause a node's worker (default: this node's) or a consumer"},
	{"resume", cmd_node_resume, NULL,
	 "QUEUE [--node N | --consumer C] [--timeout SECONDS | --no-wait]",
	 "resume a paused worker or consumer"},
	{"tag-dead", cmd_node_tag_dead, NULL, "QUEUE NODE [--dry-run]",
	 "mark a member dead on every live member"},
	{"tag-alive", cmd_node_tag_alive, NULL, "QUEUE NODE [--dry-run]",
	 "clear the dead mark of a member that is back"},
	{"drop-node", cmd_node_drop_node, NULL, "QUEUE NODE [--dry-run]",
	 "remove a member from the cascade (its subscribers must have moved)"},
	{"resurrect", cmd_node_resurrect, NULL, "QUEUE [--lost-events FILE] [--dry-run]",
	 "turn an old root, after a failover, into a branch of the new cascade"},
	{"wait-root", cmd_node_wait_root, NULL, "QUEUE [--timeout SECONDS]",
	 "wait until this node has the root's current last tick"},
	{"wait-provider", cmd_node_wait_provider, NULL, "QUEUE [--timeout SECONDS]",
	 "wait until this node has its provider's current last tick"},
	{"rename-node", cmd_node_rename_node, NULL, "QUEUE OLD NEW",
	 "refused: see pgqctl(1) for why and what to do instead"},
	{NULL},
};

const CtlCommand ctl_commands[] = {
	{"install", cmd_install, NULL, "[--extension] [--coop] [--ext]",
	 "install PgQ (plain script, or CREATE EXTENSION pgq_ev)"},
	{"upgrade", cmd_upgrade, NULL, "", "upgrade an installed PgQ in place"},
	{"uninstall", cmd_uninstall, NULL, "--yes-drop-all-queues",
	 "drop PgQ with every queue and event"},
	{"version", cmd_version, NULL, "", "versions of pgq, pgq_coop, pgq_ext and pgqctl"},
	{"queues", cmd_queues, NULL, "", "list queues"},
	{"create", cmd_create, NULL, "QUEUE [KEY=VALUE...]", "create a queue"},
	{"drop", cmd_drop, NULL, "QUEUE [--force]", "drop a queue"},
	{"config", cmd_config, NULL, "QUEUE [KEY=VALUE...]", "show or change queue settings"},
	{"register", cmd_register, NULL, "QUEUE CONSUMER [--at TICK | --from-start-of-retained]",
	 "register a consumer"},
	{"unregister", cmd_unregister, NULL, "QUEUE CONSUMER", "unregister a consumer"},
	{"consumers", cmd_consumers, NULL, "[QUEUE]", "list consumers (coop subconsumers too)"},
	{"status", cmd_status, NULL, "[--watch SECONDS] [--stuck-minutes N] [--tick-grace SECONDS]",
	 "queues, consumers and problems; exit 3 when something is wrong"},
	{"events", cmd_events, NULL, "QUEUE [--consumer C | --batch ID] [--limit N]",
	 "pending events, without consuming them"},
	{"insert", cmd_insert, NULL,
	 "QUEUE TYPE DATA [EXTRA1..4] | QUEUE --stdin [--json] [--chunk-lines N]", "insert events"},
	{"tail", cmd_tail, NULL, "QUEUE [--from-now]", "print events as they are ticked"},
	{"retry", NULL, retry_commands, "list|now|drop ...", "the retry queue"},
	{"node", NULL, node_commands,
	 "create-root|...|status|switchover|failover|... (pgqctl node --help)",
	 "cascade nodes (pgq_node)"},
	{"ticker", cmd_ticker, NULL, "[--listen ADDR:PORT]",
	 "the daemon's view, from its /health endpoint"},
	{"complete", cmd_complete, NULL, "queues|consumers [QUEUE]",
	 "names for shell completion (one a line)"},
	{NULL},
};

static void usage(FILE *out)
{
	fputs("Usage: pgqctl [-d CONNSTR | -c pgqd-ev.ini [--db NAME | --cluster NAME | --all]]\n"
	      "              [--json] [--connect-timeout SEC] [--max-conns N] COMMAND ...\n\n"
	      "Commands:\n",
	      out);
	for (const CtlCommand *c = ctl_commands; c->name; c++) {
		if (c->sub) {
			for (const CtlCommand *s = c->sub; s->name; s++)
				fprintf(out, "  %s %s %s\n      %s\n", c->name, s->name, s->usage,
					s->help);
		} else {
			fprintf(out, "  %s %s\n      %s\n", c->name, c->usage, c->help);
		}
	}
	fputs("\nExit status: 0 ok, 1 error, 2 usage, 3 status found a problem, 4 a wait timed out.\n"
	      "See pgqctl(1).\n",
	      out);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	CtlCtx *ctx = arg;

	ctl_signalled = (int)fd;
	event_base_loopbreak(ctx->base);
}

static int dispatch(CtlCtx *ctx, const CtlCommand *table, const char *group, int argc, char **argv)
{
	const CtlCommand *c = NULL;

	for (const CtlCommand *p = table; p->name; p++)
		if (strcmp(p->name, argv[0]) == 0)
			c = p;
	if (!c) {
		if (group)
			return ctl_usage(group, "unknown command \"%s\"", argv[0]);
		return ctl_usage(NULL, "unknown command \"%s\"", argv[0]);
	}
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			if (c->sub)
				for (const CtlCommand *s = c->sub; s->name; s++)
					printf("pgqctl %s %s %s\n  %s\n", c->name, s->name,
					       s->usage, s->help);
			else
				printf("pgqctl %s%s%s %s\n  %s\n", group ? group : "",
				       group ? " " : "", c->name, c->usage, c->help);
			return CTL_EXIT_OK;
		}
	if (c->sub) {
		if (argc < 2)
			return ctl_usage(c->name, "needs a sub-command");
		return dispatch(ctx, c->sub, c->name, argc - 1, argv + 1);
	}
	return c->run(ctx, argc, argv);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"dbconn", required_argument, NULL, 'd'},
		{"config", required_argument, NULL, 'c'},
		{"db", required_argument, NULL, 'D'},
		{"cluster", required_argument, NULL, 'C'},
		{"all", no_argument, NULL, 'a'},
		{"json", no_argument, NULL, 'j'},
		{"connect-timeout", required_argument, NULL, 'T'},
		{"max-conns", required_argument, NULL, 'M'},
		{"sqldir", required_argument, NULL, 'S'},
		{"quiet", no_argument, NULL, 'q'},
		{"no-color", no_argument, NULL, 'N'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	CtlCtx ctx = {0};
	const char *env;
	bool no_color = false, have_d = false;
	struct event *sigint_ev, *sigterm_ev;
	int opt, rc;
	long long v;

	ctx.connstr = getenv("PGQCTL_DB") ? getenv("PGQCTL_DB") : "";
	ctx.connect_timeout = 10 * USEC_PER_SEC;
	ctx.max_conns = 50;
	ctx.sqldir = getenv("PGQCTL_SQLDIR");
	while ((opt = getopt_long(argc, argv, "+d:c:qhV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			ctx.connstr = optarg;
			have_d = true;
			break;
		case 'c':
			ctx.ini = optarg;
			break;
		case 'D':
			ctx.db_name = optarg;
			break;
		case 'C':
			ctx.cluster = optarg;
			break;
		case 'a':
			ctx.all = true;
			break;
		case 'j':
			ctx.json = true;
			break;
		case 'T': {
			usec_t t;
			if (pqev_conf_parse_seconds(optarg, &t) != 0 || t == 0) {
				ctl_err("--connect-timeout: \"%s\" is not a positive number of "
					"seconds",
					optarg);
				return CTL_EXIT_USAGE;
			}
			ctx.connect_timeout = t;
			ctx.connect_timeout_set = true;
			break;
		}
		case 'M':
			if (!ctl_parse_i64("--max-conns", optarg, 1, 10000, &v))
				return CTL_EXIT_USAGE;
			ctx.max_conns = (unsigned)v;
			break;
		case 'S':
			ctx.sqldir = optarg;
			break;
		case 'q':
			ctx.quiet = true;
			break;
		case 'N':
			no_color = true;
			break;
		case 'h':
			usage(stdout);
			return CTL_EXIT_OK;
		case 'V':
			printf("pgqctl %s\n", PGQEV_VERSION);
			return CTL_EXIT_OK;
		default:
			fputs("Try 'pgqctl --help'.\n", stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (strcmp(argv[optind], "help") == 0) {
		if (optind + 1 < argc) {
			char *hv[3] = {argv[optind + 1], (char *)"--help", NULL};
			return dispatch(&ctx, ctl_commands, NULL, 2, hv);
		}
		usage(stdout);
		return CTL_EXIT_OK;
	}
	if (ctx.ini && have_d)
		return ctl_usage(NULL, "-d and -c exclude each other");
	if (!ctx.ini && (ctx.db_name || ctx.cluster || ctx.all))
		return ctl_usage(NULL, "--db, --cluster and --all need -c INI");
	env = getenv("NO_COLOR");
	ctx.color = !no_color && !(env && *env) && isatty(STDOUT_FILENO);

	signal(SIGPIPE, SIG_IGN);
	ctx.base = event_base_new();
	ctx.lim = pqev_connlimit_new(ctx.base, ctx.max_conns);
	if (!ctx.base || !ctx.lim) {
		ctl_err("out of memory");
		return CTL_EXIT_ERROR;
	}
	sigint_ev = evsignal_new(ctx.base, SIGINT, on_signal, &ctx);
	sigterm_ev = evsignal_new(ctx.base, SIGTERM, on_signal, &ctx);
	event_add(sigint_ev, NULL);
	event_add(sigterm_ev, NULL);

	rc = dispatch(&ctx, ctl_commands, NULL, argc - optind, argv + optind);

	event_free(sigint_ev);
	event_free(sigterm_ev);
	if (pqev_connlimit_free(ctx.lim) != 0)
		ctl_err("internal: connections left open");
	event_base_free(ctx.base);
	fflush(stdout);
	if (ferror(stdout) && rc == 0)
		rc = CTL_EXIT_ERROR;
	return rc;
}
