/* Minimal consumer: print every event of QUEUE as consumer CONSUMER. */
#include <stdio.h>
#include <stdlib.h>

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

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s CONNSTR QUEUE CONSUMER\n", argv[0]);
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
