/* Unit tests of lib/util: byte buffers, hex, whole-file reads and atomic writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyok/common.h"
#include "kyok/err.h"

static char tmpdir[256];

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/kyok-test-buf-XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
	char cmd[400];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_buf_append(void **state)
{
	struct ky_buf b = {0};
	uint8_t chunk[100];

	(void)state;
	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (uint8_t)i;
	assert_int_equal(ky_buf_append(&b, NULL, 0), 0);
	assert_null(b.data);
	assert_int_equal(ky_buf_append_str(&b, "abc"), 0);
	assert_int_equal(b.len, 3);
	/* Growth over several reallocations keeps every byte. */
	for (int i = 0; i < 50; i++)
		assert_int_equal(ky_buf_append(&b, chunk, sizeof(chunk)), 0);
	assert_int_equal(b.len, 3 + 50 * sizeof(chunk));
	assert_true(b.cap >= b.len);
	assert_memory_equal(b.data, "abc", 3);
	for (int i = 0; i < 50; i++)
		assert_memory_equal(b.data + 3 + i * sizeof(chunk), chunk, sizeof(chunk));
	/* Overflowing sizes are refused, the buffer unchanged. */
	assert_int_equal(ky_buf_append(&b, chunk, SIZE_MAX), KY_ERR_TOO_LARGE);
	assert_int_equal(ky_buf_append(&b, chunk, SIZE_MAX - b.len + 1), KY_ERR_TOO_LARGE);
	assert_int_equal(ky_buf_append(&b, chunk, SIZE_MAX / 2 + 1), KY_ERR_TOO_LARGE);
	assert_int_equal(b.len, 3 + 50 * sizeof(chunk));
	ky_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	ky_buf_free(&b);
	ky_buf_free(NULL);
}

static void test_hex(void **state)
{
	static const uint8_t bin[] = {0x00, 0x01, 0xab, 0xff, 0x7e};
	uint8_t out[5];
	char hex[11];

	(void)state;
	ky_hex_encode(bin, sizeof(bin), hex);
	assert_string_equal(hex, "0001abff7e");
	assert_int_equal(ky_hex_decode("0001abff7e", out, sizeof(out)), 0);
	assert_memory_equal(out, bin, sizeof(bin));
	assert_int_equal(ky_hex_decode("0001ABFF7E", out, sizeof(out)), 0);
	assert_memory_equal(out, bin, sizeof(bin));
	ky_hex_encode(bin, 0, hex);
	assert_string_equal(hex, "");
	/* Wrong length, odd length, non-hex characters, NULL. */
	assert_int_equal(ky_hex_decode("0001abff", out, sizeof(out)), KY_ERR_MALFORMED);
	assert_int_equal(ky_hex_decode("0001abff7e00", out, sizeof(out)), KY_ERR_MALFORMED);
	assert_int_equal(ky_hex_decode("0001abff7", out, sizeof(out)), KY_ERR_MALFORMED);
	assert_int_equal(ky_hex_decode("0001abfg7e", out, sizeof(out)), KY_ERR_MALFORMED);
	assert_int_equal(ky_hex_decode(" 001abff7e", out, sizeof(out)), KY_ERR_MALFORMED);
	assert_int_equal(ky_hex_decode(NULL, out, sizeof(out)), KY_ERR_MALFORMED);
}

static void test_file_write_read(void **state)
{
	char path[300], path2[300];
	struct ky_buf b = {0};
	struct stat st;
	uint8_t big[10000];

	(void)state;
	snprintf(path, sizeof(path), "%s/f1", tmpdir);
	snprintf(path2, sizeof(path2), "%s/missing/f2", tmpdir);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);

	assert_int_equal(ky_file_write_atomic(path, big, sizeof(big), 0600), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, sizeof(big));
	assert_int_equal(ky_file_read(path, sizeof(big), &b), 0);
	assert_int_equal(b.len, sizeof(big));
	assert_memory_equal(b.data, big, sizeof(big));
	ky_buf_free(&b);

	/* Larger than allowed: refused, buffer released. */
	assert_int_equal(ky_file_read(path, sizeof(big) - 1, &b), KY_ERR_TOO_LARGE);
	assert_null(b.data);
	assert_int_equal(b.len, 0);

	/* Replaced atomically with another mode; no temporary file left. */
	assert_int_equal(ky_file_write_atomic(path, "x", 1, 0640), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	assert_int_equal(ky_file_read(path, 100, &b), 0);
	assert_int_equal(b.len, 1);
	ky_buf_free(&b);
	{
		char tmp[400];
		snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
		assert_int_equal(access(tmp, F_OK), -1);
	}

	/* Empty file. */
	assert_int_equal(ky_file_write_atomic(path, "", 0, 0600), 0);
	assert_int_equal(ky_file_read(path, 100, &b), 0);
	assert_int_equal(b.len, 0);
	ky_buf_free(&b);

	/* Missing file, missing directory, a directory. */
	assert_int_equal(ky_file_read(path2, 100, &b), KY_ERR_NOT_FOUND);
	assert_int_equal(ky_file_write_atomic(path2, "x", 1, 0600), KY_ERR_IO);
	assert_int_equal(ky_file_read(tmpdir, 100, &b), KY_ERR_IO);
	assert_null(b.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buf_append),
	    cmocka_unit_test(test_hex),
	    cmocka_unit_test(test_file_write_read),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
