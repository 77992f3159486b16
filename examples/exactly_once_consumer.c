/*
 * Exactly-once copy of a queue into another PostgreSQL database.
 *
 *   exactly_once_consumer SRC_CONNSTR TARGET_CONNSTR QUEUE CONSUMER
 *
 * The target needs pgq_ext (sql/pgq_ext) and gets a table `queue_copy`. Every
 * batch is written in one target transaction together with
 * pgq_ext.set_batch_done, so a batch delivered again after a crash anywhere is
 * recognised and skipped: each event lands in queue_copy exactly once.
 */
#include <stdio.h>
#include <stdlib.h>

#include <pgqd-ev/pgqev_consumer.h>

static PgqevVerdict on_batch(PgqevConsumer *c, PgqevBatch *b, void *arg)
{
	for (size_t i = 0; i < pgqev_batch_count(b); i++) {
		PgqevEvent *e = pgqev_batch_event(b, i);
		char id[32];
		snprintf(id, sizeof(id), "%lld", (long long)pgqev_event_id(e));
		const char *p[4] = {id, pgqev_event_time(e), pgqev_event_type(e),
				    pgqev_event_data(e)};
		/* queued on the target's batch transaction; a failure fails the batch */
		if (pgqev_batch_target_exec(
			    b,
			    "insert into queue_copy (ev_id, ev_time, ev_type, ev_data)"
			    " values ($1, $2, $3, $4)",
			    4, p) < 0)
			return PGQEV_FAIL;
	}
	printf("batch %lld: %zu events (chunk %u)\n", (long long)pgqev_batch_id(b),
	       pgqev_batch_count(b), pgqev_batch_chunk(b));
	fflush(stdout);
	return PGQEV_DONE;
}

static int prepare_target(const char *conninfo)
{
	PGconn *t = PQconnectdb(conninfo);
	PGresult *r = PQexec(t, "create table if not exists queue_copy (ev_id bigint primary key,"
				" ev_time timestamptz, ev_type text, ev_data text)");
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "target: %s", PQerrorMessage(t));
	PQclear(r);
	PQfinish(t);
	return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s SRC_CONNSTR TARGET_CONNSTR QUEUE CONSUMER\n", argv[0]);
		return 2;
	}
	if (prepare_target(argv[2]) < 0)
		return 1;
	PgqevConsumerConfig cfg;
	pgqev_config_init(&cfg);
	cfg.conninfo = argv[1];
	cfg.target_conninfo = argv[2];
	cfg.queue = argv[3];
	cfg.consumer = argv[4];
	cfg.on_batch = on_batch;
	return pgqev_run(&cfg) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
