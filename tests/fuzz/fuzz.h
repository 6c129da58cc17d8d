/* Fuzz targets: one per parser of untrusted input. Each file defines
 * LLVMFuzzerTestOneInput; built with libFuzzer by 'make fuzz' (clang), and with replay.c
 * (any compiler) so that 'make check' runs every seed and corpus input through it.
 *
 * The fixed keys below are not secrets: they exist so that seeds made by fuzz-seeds open
 * under the same key in the target and the fuzzer can reach past the authentication tags.
 */
#ifndef KYOK_FUZZ_H
#define KYOK_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "kyok/kms.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* A result the target does not need (refusals are the expected outcome of most inputs). */
#define FUZZ_IGNORE(x)                   \
	do {                             \
		int fuzz_ignored_ = (x); \
		(void)fuzz_ignored_;     \
	} while (0)
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_KEY_ID   "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
#define FUZZ_INSTANCE "fuzz-instance"

/* The root key every wrap seed is made under (fixed material and id). */
int fuzz_root_key(struct ky_key **out);
/* The fixed token signing key. */
extern const uint8_t fuzz_token_key[32];
/* data written to an anonymous file; path names it as /proc/self/fd/N. Returns the fd
 * (close it after use) or -1. */
int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t pathlen);
/* Allocates a NUL-terminated copy of data (size + 1 bytes). */
char *fuzz_cstr(const uint8_t *data, size_t size);

#endif
