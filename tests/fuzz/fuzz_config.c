/*
 * Fuzz target for the config engine: any bytes as an ini file, loaded first as a
 * fresh config and then as a reload over a fixed running config (NO_RELOAD
 * copying, repeated-section matching). Built with libFuzzer when clang is used:
 *   clang -g -fsanitize=fuzzer,address,undefined -Isrc/core/include -Itests/fuzz \
 *     tests/fuzz/fuzz_config.c src/core/pqev_config.c src/core/pqev_config_value.c \
 *     src/core/pqev_log.c -o fuzz_config
 * and in `meson test` through the standalone driver fuzz_main.c over the corpus.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <pgqd-ev/pqev_config.h>

#include "fuzz.h"

typedef struct FCluster {
	char *name;
	char *connstr;
	PqevConfList dbs;
	usec_t period;
	int weight;
} FCluster;

typedef struct FCfg {
	char *base_connstr;
	char *logfile;
	PqevConfList database_list;
	int max_connects;
	usec_t ticker_period;
	bool syslog;
	int facility;
	PqevConfArray clusters;
} FCfg;

static const PqevConfKey main_keys[] = {
	PQEV_CONF_STRING("base_connstr", FCfg, base_connstr, "", PQEV_CF_NO_RELOAD),
	PQEV_CONF_PATH("logfile", FCfg, logfile, NULL, 0),
	PQEV_CONF_LIST("database_list", FCfg, database_list, "", PQEV_CF_NO_RELOAD),
	PQEV_CONF_INT("max_connects", FCfg, max_connects, "20", 0, 1, 1000),
	PQEV_CONF_SECONDS("ticker_period", FCfg, ticker_period, "1", PQEV_CF_NO_RELOAD, 0.01, 3600),
	PQEV_CONF_BOOL("syslog", FCfg, syslog, "1", 0),
	PQEV_CONF_ENUM("syslog_facility", FCfg, facility, "daemon", PQEV_CF_NO_RELOAD,
		       pqev_conf_syslog_facilities),
	PQEV_CONF_END,
};

static const PqevConfKey cluster_keys[] = {
	PQEV_CONF_STRING("connstr", FCluster, connstr, NULL, PQEV_CF_REQUIRED | PQEV_CF_NO_RELOAD),
	PQEV_CONF_LIST("databases", FCluster, dbs, NULL, PQEV_CF_NO_RELOAD),
	PQEV_CONF_SECONDS("period", FCluster, period, NULL, PQEV_CF_NO_RELOAD, 0, 60),
	PQEV_CONF_INT("weight", FCluster, weight, "1", PQEV_CF_NO_RELOAD, 0, 0),
	PQEV_CONF_END,
};

static void cluster_check(void *section, const char *name, PqevConfCheck *chk)
{
	FCluster *c = section;
	if (c->weight < 0)
		pqev_conf_check_error(chk, "weight", "negative weight for %s", name);
}

static const PqevConfSection sections[] = {
	{.name = "pgqd", .flags = PQEV_CS_REQUIRED, .keys = main_keys},
	{.name = "cluster",
	 .flags = PQEV_CS_REPEATED,
	 .offset = offsetof(FCfg, clusters),
	 .elem_size = sizeof(FCluster),
	 .name_offset = offsetof(FCluster, name),
	 .keys = cluster_keys,
	 .check = cluster_check},
	{.name = NULL},
};

static const PqevConfSchema schema = {.size = sizeof(FCfg), .sections = sections};

static const char running[] = "[pgqd]\n"
			      "base_connstr = host=/tmp\n"
			      "database_list = a, b\n"
			      "ticker_period = 0.5\n"
			      "[cluster a]\nconnstr = host=a\ndatabases = x\n"
			      "[cluster:b]\nconnstr = host=b\nperiod = 2\n";

static void sink(const PqevConfDiag *d, void *arg)
{
	size_t *n = arg;
	/* touch every field so sanitizers check them */
	*n += strlen(d->message) + strlen(d->cause) + strlen(d->file) + (size_t)d->line +
	      (d->section ? strlen(d->section) : 0) + (d->key ? strlen(d->key) : 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	void *old = NULL, *fresh = NULL;
	size_t n = 0;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (pqev_conf_load_string(&schema, running, "running", NULL, &old, NULL, NULL) != 0)
		abort();
	/* as a file, NUL bytes included (a string stops at the first one) */
	{
		int fd = memfd_create("fuzz-config", MFD_CLOEXEC);
		char path[64];
		if (fd < 0 || write(fd, data, size) != (ssize_t)size)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (pqev_conf_load_file(&schema, path, NULL, &fresh, sink, &n) == 0)
			fresh = pqev_conf_free(&schema, fresh);
		close(fd);
	}
	if (pqev_conf_load_string(&schema, text, "fuzz", old, &fresh, sink, &n) == 0)
		fresh = pqev_conf_free(&schema, fresh);
	pqev_conf_free(&schema, old);
	free(text);
	return 0;
}
