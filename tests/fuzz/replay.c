/* Runs every file named on the command line (or found in a directory named there) through
 * the target's LLVMFuzzerTestOneInput: how 'make check' replays seeds and corpora without
 * libFuzzer. Prints how many inputs ran; exits 1 when there were none. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kyok/common.h"
#include "tests/fuzz/fuzz.h"

#define REPLAY_MAX (4 * 1024 * 1024)

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static int replay_file(const char *path, size_t *count)
{
	struct ky_buf b = {0};

	if (ky_file_read(path, REPLAY_MAX, &b) != 0) {
		fprintf(stderr, "replay: cannot read '%s'\n", path);
		return 1;
	}
	(void)LLVMFuzzerTestOneInput(b.data, b.len);
	ky_buf_free(&b);
	(*count)++;
	return 0;
}

static int replay_path(const char *path, size_t *count)
{
	struct stat st;
	struct dirent **names = NULL;
	int n, r = 0;

	if (stat(path, &st) != 0) {
		fprintf(stderr, "replay: '%s' does not exist\n", path);
		return 1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path, count);
	if ((n = scandir(path, &names, NULL, alphasort)) < 0) {
		fprintf(stderr, "replay: cannot list '%s'\n", path);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		char full[4096];
		if (names[i]->d_name[0] != '.') {
			snprintf(full, sizeof(full), "%s/%s", path, names[i]->d_name);
			if (r == 0)
				r = replay_path(full, count);
		}
		free(names[i]);
	}
	free(names);
	return r;
}

int main(int argc, char **argv)
{
	size_t count = 0;

	(void)LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
		if (replay_path(argv[i], &count) != 0)
			return 1;
	printf("%s: replayed %zu inputs\n", argv[0], count);
	return count > 0 ? 0 : 1;
}
