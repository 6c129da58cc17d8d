/* What the fuzz targets and fuzz-seeds share. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tests/fuzz/fuzz.h"

const uint8_t fuzz_token_key[32] = {
    0x6b, 0x79, 0x6f, 0x6b, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x74, 0x6f, 0x6b, 0x65, 0x6e, 0x2d,
    0x6b, 0x65, 0x79, 0x2d, 0x6e, 0x6f, 0x74, 0x2d, 0x61, 0x2d, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74,
};

int fuzz_root_key(struct ky_key **out)
{
	static const uint8_t material[32] = {
	    0x6b, 0x79, 0x6f, 0x6b, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x72,
	    0x6f, 0x6f, 0x74, 0x2d, 0x6b, 0x65, 0x79, 0x2d, 0x6e, 0x6f, 0x74,
	    0x2d, 0x61, 0x2d, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x21,
	};
	struct ky_key_spec spec = {
	    .name = "fuzz-root",
	    .extractable = 0,
	    .payload = material,
	    .len = sizeof(material),
	};
	int r = ky_key_new(&spec, 1700000000, out);

	if (r == 0)
		memcpy((*out)->id, FUZZ_KEY_ID, sizeof(FUZZ_KEY_ID));
	return r;
}

int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t pathlen)
{
	int fd = memfd_create("kyok-fuzz", 0);

	if (fd < 0)
		return -1;
	if (size > 0 && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return -1;
	}
	snprintf(path, pathlen, "/proc/self/fd/%d", fd);
	return fd;
}

char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		abort();
	if (size > 0)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}
