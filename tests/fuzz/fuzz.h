/* The libFuzzer entry point every fuzz target defines (see fuzz_main.c). */
#ifndef PGQEV_TESTS_FUZZ_H
#define PGQEV_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
