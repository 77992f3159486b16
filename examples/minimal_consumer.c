/*
 * Minimal consumer: print every event of QUEUE as consumer CONSUMER.
 * With --register it only subscribes (once, at setup) and exits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgqd-ev/pgqev_consumer.h>

static PgqevVerdict on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		const char *type = pgqev_event_type(e), *data = pgqev_event_data(e);
		printf("batch %lld event %lld: %s %s\n", (long long)pgqev_batch_id(b),
		       (long long)pgqev_event_id(e), type ? type : "(null)",
		       data ? data : "(null)");
	}
	fflush(stdout);
	return PGQEV_DONE;
}

/*
 * --register: subscribe and exit. PgQ delivers only events produced after the
 * consumer registered, so run this once at setup, before the producers start.
 */
static int register_only(const char *conninfo, const char *queue, const char *consumer)
{
	PGconn *conn = PQconnectdb(conninfo);
	bool is_new = false;
	int rc = PQstatus(conn) == CONNECTION_OK
			 ? pgqev_register(conn, queue, consumer, NULL, 0, &is_new)
			 : -EIO;
	if (rc < 0)
		fprintf(stderr, "register: %s", PQerrorMessage(conn));
	else
		printf("%s on %s: %s\n", consumer, queue,
		       is_new ? "registered" : "already registered");
	PQfinish(conn);
	return rc < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[4], "--register") == 0)
		return register_only(argv[1], argv[2], argv[3]);
	if (argc != 4) {
		fprintf(stderr, "usage: %s CONNSTR QUEUE CONSUMER [--register]\n", argv[0]);
		return 2;
	}
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = argv[1];
	cfg.queue = argv[2];
	cfg.consumer = argv[3];
	cfg.on_batch = on_batch;
	return pgqev_run(&cfg) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
