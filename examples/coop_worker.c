/*
 * A cooperative worker: several processes share one consumer's stream, each
 * taking whole batches (pgq_coop).
 *
 *   coop_worker CONNSTR QUEUE CONSUMER WORKER_NAME [--leave]
 *
 * Start it several times with different WORKER_NAMEs. A worker silent for
 * longer than dead_interval (here 60 s) has its open batch taken over by
 * another. SIGTERM/SIGINT finish the batch in progress and stop; with --leave
 * the worker then unregisters its subconsumer (pgq_coop.unregister_subconsumer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pgqd-ev/pgqev_consumer.h>

static PgqevVerdict on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	const char *worker = arg;
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		const char *data = pgqev_event_data(e);
		printf("[%s pid %d] batch %lld event %lld: %s\n", worker, (int)getpid(),
		       (long long)pgqev_batch_id(b), (long long)pgqev_event_id(e),
		       data ? data : "(null)");
	}
	fflush(stdout);
	return PGQEV_DONE;
}

int main(int argc, char **argv)
{
	if (argc < 5 || argc > 6 || (argc == 6 && strcmp(argv[5], "--leave") != 0)) {
		fprintf(stderr, "usage: %s CONNSTR QUEUE CONSUMER WORKER_NAME [--leave]\n",
			argv[0]);
		return 2;
	}
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = argv[1];
	cfg.queue = argv[2];
	cfg.consumer = argv[3];
	cfg.subconsumer = argv[4];
	cfg.dead_interval = 60 * PGQEV_USEC_PER_SEC;
	cfg.on_batch = on_batch;
	cfg.arg = argv[4];
	if (pgqev_run(&cfg) != 0)
		return EXIT_FAILURE;
	if (argc == 6) {
		PGconn *conn = PQconnectdb(argv[1]);
		if (pgqev_unregister(conn, argv[2], argv[3], argv[4], false) < 0) {
			fprintf(stderr, "unregister: %s", PQerrorMessage(conn));
			PQfinish(conn);
			return EXIT_FAILURE;
		}
		printf("worker %s left the group\n", argv[4]);
		PQfinish(conn);
	}
	return EXIT_SUCCESS;
}
