/*
 * A program built the way a user builds one: against the packaged libpgqev
 * (pkg-config --cflags --libs libpgqev), run by check-package.sh. It registers,
 * produces one event, consumes until that event arrives (ticked by the packaged
 * pgqd-ev) and exits 0; the test's timeout fails it otherwise.
 *
 *   consumer CONNSTR QUEUE PAYLOAD
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pgqev_consumer.h>

static const char *want;
static int seen;

static PgqevVerdict on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		const char *data = pgqev_event_data(pgqev_batch_event(b, i));
		if (data && strcmp(data, want) == 0 && !seen) {
			seen = 1;
			raise(SIGTERM); /* pgqev_run finishes this batch, then returns */
		}
	}
	return PGQEV_DONE;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s CONNSTR QUEUE PAYLOAD\n", argv[0]);
		return 2;
	}
	want = argv[3];
	PGconn *conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK ||
	    pgqev_register(conn, argv[2], "pkgtest", NULL, 0, NULL) < 0 ||
	    pgqev_insert_event(conn, argv[2], "pkgtest", want, NULL, NULL) < 0) {
		fprintf(stderr, "consumer: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return 1;
	}
	PQfinish(conn);

	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = argv[1];
	cfg.queue = argv[2];
	cfg.consumer = "pkgtest";
	cfg.on_batch = on_batch;
	if (pgqev_run(&cfg) != 0 || !seen)
		return 1;
	printf("libpgqev %s: received %s\n", pgqev_version(), want);
	return 0;
}
