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
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

static void expect_not_private(const char *path, const char *mode, const char *fix)
{
	char why[700], want[700];

	assert_int_equal(ky_path_check_private(path, why, sizeof(why)), KY_ERR_NOT_PRIVATE);
	assert_non_null(strstr(why, mode));
	snprintf(want, sizeof(want), "run 'chmod %s %s'", fix, path);
	assert_non_null(strstr(why, want));
}

static void test_path_check_private(void **state)
{
	char dir[] = "/tmp/kyok-test-private.XXXXXX", f[128], fifo[128], why[700];

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(f, sizeof(f), "%s/secret", dir);
	snprintf(fifo, sizeof(fifo), "%s/pipe", dir);
	assert_int_equal(ky_file_write_atomic(f, "x", 1, 0600), 0);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(ky_path_check_private(f, why, sizeof(why)), 0);
	assert_int_equal(ky_path_check_private(dir, why, sizeof(why)), 0);
	assert_int_equal(chmod(f, 0400), 0);
	assert_int_equal(ky_path_check_private(f, why, sizeof(why)), 0);
	assert_int_equal(chmod(f, 0644), 0);
	expect_not_private(f, "readable by all users (mode 0644)", "600");
	assert_int_equal(chmod(f, 0640), 0);
	expect_not_private(f, "readable by its group (mode 0640)", "600");
	assert_int_equal(chmod(f, 0620), 0);
	expect_not_private(f, "writable by its group (mode 0620)", "600");
	assert_int_equal(chmod(f, 0602), 0);
	expect_not_private(f, "writable by all users (mode 0602)", "600");
	assert_int_equal(chmod(f, 0601), 0);
	expect_not_private(f, "(mode 0601)", "600");
	assert_int_equal(chmod(dir, 0755), 0);
	expect_not_private(dir, "readable by all users (mode 0755)", "700");
	assert_int_equal(chmod(dir, 0711), 0);
	expect_not_private(dir, "(mode 0711)", "700");
	assert_int_equal(chmod(dir, 0700), 0);
	/* A pipe is no file that others can open later. */
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(chmod(fifo, 0666), 0);
	assert_int_equal(ky_path_check_private(fifo, why, sizeof(why)), 0);
	assert_int_equal(unlink(fifo), 0);
	assert_int_equal(unlink(f), 0);
	assert_int_equal(ky_path_check_private(f, why, sizeof(why)), KY_ERR_NOT_FOUND);
	assert_int_equal(rmdir(dir), 0);
}

/* In a child: after ky_process_harden the process is not dumpable and may not dump core. */
static void test_process_harden(void **state)
{
	int status = -1;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[256];
		struct rlimit rl;
		int ok = ky_process_harden(err, sizeof(err)) == 0 &&
		         prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 &&
		         getrlimit(RLIMIT_CORE, &rl) == 0 && rl.rlim_cur == 0 && rl.rlim_max == 0;
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* This process was left as it was. */
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buf_append),      cmocka_unit_test(test_hex),
	    cmocka_unit_test(test_file_write_read), cmocka_unit_test(test_path_check_private),
	    cmocka_unit_test(test_process_harden),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
