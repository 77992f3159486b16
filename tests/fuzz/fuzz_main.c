/*
 * Standalone driver for LLVMFuzzerTestOneInput targets, so the saved corpus runs
 * in `meson test` with gcc (no libFuzzer). Arguments are files or directories;
 * each input is one TAP test point. `--mutate N SEED` additionally runs N random
 * mutations of the corpus inputs (byte flips, splices, inserted tokens), a
 * poor man's fuzzer for sanitizer builds without clang. With FUZZ_SAVE=path each
 * mutation is written there before it runs, so a crash leaves its input behind.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

typedef struct Input {
	char *name;
	uint8_t *data;
	size_t size;
} Input;

static Input *inputs;
static size_t ninputs;

static void add_file(const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	Input *in;
	if (fd < 0 || fstat(fd, &st) < 0) {
		printf("Bail out! cannot read %s\n", path);
		exit(1);
	}
	inputs = realloc(inputs, (ninputs + 1) * sizeof(*inputs));
	in = &inputs[ninputs++];
	in->name = strdup(path);
	in->size = (size_t)st.st_size;
	in->data = malloc(in->size + 1);
	if (!inputs || !in->name || !in->data ||
	    read(fd, in->data, in->size) != (ssize_t)in->size) {
		printf("Bail out! cannot read %s\n", path);
		exit(1);
	}
	close(fd);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(((const Input *)a)->name, ((const Input *)b)->name);
}

static void add_path(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *e;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		d = opendir(path);
		while (d && (e = readdir(d))) {
			char sub[4096];
			if (e->d_name[0] == '.')
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			add_file(sub);
		}
		if (d)
			closedir(d);
	} else {
		add_file(path);
	}
}

static uint64_t rng;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static const char *const tokens[] = {"[",
				     "]",
				     "=",
				     "\n",
				     " ",
				     "\t",
				     ";",
				     "#",
				     "\r\n",
				     "[pgqd]\n",
				     "[cluster ",
				     "[cluster:",
				     "~",
				     "~root/",
				     "\xEF\xBB\xBF",
				     "0.",
				     "99999999999999999999",
				     ",",
				     "%include ",
				     "\n  "};

/* One random mutation of a random input into buf; returns its size. */
static size_t mutate(uint8_t *buf, size_t cap)
{
	const Input *in = &inputs[next_rand() % ninputs];
	size_t n = in->size < cap ? in->size : cap;
	int ops = 1 + (int)(next_rand() % 8);
	memcpy(buf, in->data, n);
	while (ops-- > 0) {
		size_t pos = n ? next_rand() % (n + 1) : 0;
		switch (next_rand() % 5) {
		case 0: /* flip */
			if (n)
				buf[pos % n] ^= (uint8_t)(1u << (next_rand() % 8));
			break;
		case 1: /* delete a run */
			if (n) {
				size_t len = next_rand() % 16;
				pos %= n;
				if (len > n - pos)
					len = n - pos;
				memmove(buf + pos, buf + pos + len, n - pos - len);
				n -= len;
			}
			break;
		case 2: { /* insert a token */
			const char *t = tokens[next_rand() % (sizeof(tokens) / sizeof(tokens[0]))];
			size_t len = strlen(t);
			if (n + len <= cap) {
				memmove(buf + pos + len, buf + pos, n - pos);
				memcpy(buf + pos, t, len);
				n += len;
			}
			break;
		}
		case 3: { /* repeat a byte many times (long lines) */
			size_t len = next_rand() % 300;
			if (n && n + len <= cap) {
				uint8_t c = buf[pos % n];
				memmove(buf + pos + len, buf + pos, n - pos);
				memset(buf + pos, c, len);
				n += len;
			}
			break;
		}
		default: /* splice another input's tail */
		{
			const Input *o = &inputs[next_rand() % ninputs];
			size_t from = o->size ? next_rand() % o->size : 0;
			size_t len = o->size - from;
			if (pos + len > cap)
				len = cap - pos;
			memcpy(buf + pos, o->data + from, len);
			n = pos + len;
			break;
		}
		}
	}
	return n;
}

int main(int argc, char **argv)
{
	long mutations = 0;
	int i = 1, t = 0;
	const char *save = getenv("FUZZ_SAVE");

	if (argc > 3 && strcmp(argv[1], "--mutate") == 0) {
		mutations = atol(argv[2]);
		rng = strtoull(argv[3], NULL, 10) | 1;
		i = 4;
	}
	for (; i < argc; i++)
		add_path(argv[i]);
	qsort(inputs, ninputs, sizeof(*inputs), cmp_names);
	printf("1..%zu\n", ninputs + (mutations > 0));
	for (size_t k = 0; k < ninputs; k++) {
		LLVMFuzzerTestOneInput(inputs[k].data, inputs[k].size);
		printf("ok %d - %s\n", ++t, inputs[k].name);
		fflush(stdout);
	}
	if (mutations > 0 && ninputs > 0) {
		static uint8_t buf[65536];
		for (long m = 0; m < mutations; m++) {
			size_t n = mutate(buf, sizeof(buf));
			if (save) {
				/* the input that crashes is the one left in the file */
				FILE *f = fopen(save, "wb");
				if (f) {
					fwrite(buf, 1, n, f);
					fclose(f);
				}
			}
			LLVMFuzzerTestOneInput(buf, n);
		}
		printf("ok %d - %ld mutations\n", ++t, mutations);
	}
	for (size_t k = 0; k < ninputs; k++) {
		free(inputs[k].name);
		free(inputs[k].data);
	}
	free(inputs);
	return 0;
}
