/* unitd/seal.c and seal_file.c, file backend: the data directory and its lock, the seal key
 * made on a first start and found again on the next, the seal key file's rules, and the
 * storage mark (the highest position of key storage a unit has seen) sealed under the seal
 * key.
 *
 * What the unit state needs besides (an anchor and an identity) is the integration tests'
 * (t_seal_file.sh, t_anchor.sh).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kyok/common.h"
#include "kyok/err.h"
#include "unitd/config.h"
#include "unitd/seal.h"

#define INSTANCE "inst-1"
#define UNIT     "unit-1"

struct fixture {
	char dir[64];
	char data[128];
	struct unitd_config cfg;
	struct unitd_datadir dd;
	char err[512];
};

static void path_in(const struct fixture *f, const char *name, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", f->data, name);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The fixture's directory and all it holds (depth first, links not followed). */
static void rm_tree(const char *dir)
{
	assert_int_equal(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static int config_for(const char *data, struct unitd_config *cfg)
{
	char text[512], err[256];
	int n = snprintf(text, sizeof(text),
	                 "instance = " INSTANCE "\nunit = " UNIT "\nzone = zone-1\ndata_dir = %s\n",
	                 data);

	return unitd_config_parse("unit.conf", "/", text, (size_t)n, cfg, err, sizeof(err));
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kyok-test-seal.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->data, sizeof(f->data), "%s/data", f->dir);
	if (config_for(f->data, &f->cfg) != 0)
		return -1;
	f->dd.lock_fd = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	unitd_datadir_release(&f->dd);
	unitd_config_release(&f->cfg);
	rm_tree(f->dir);
	free(f);
	return 0;
}

/* Opens the store and makes (or finds) its seal key. */
static void open_with_key(struct fixture *f)
{
	assert_int_equal(unitd_datadir_open(&f->cfg, &f->dd, f->err, sizeof(f->err)), 0);
	assert_int_equal(unitd_seal_key_first(&f->dd, f->err, sizeof(f->err)), 0);
	assert_non_null(f->dd.key);
}

static void test_open_makes_dir_and_key(void **state)
{
	struct fixture *f = *state;
	struct stat sb;
	char key[256], id[UNITD_SEAL_ID_MAX + 1];

	open_with_key(f);
	assert_int_equal(stat(f->data, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);
	path_in(f, "seal.key", key, sizeof(key));
	assert_int_equal(stat(key, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	snprintf(id, sizeof(id), "%s", f->dd.key->id);

	/* The next start finds the same key. */
	unitd_datadir_release(&f->dd);
	open_with_key(f);
	assert_string_equal(f->dd.key->id, id);
}

static void test_lock_refuses_second_daemon(void **state)
{
	struct fixture *f = *state;
	struct unitd_datadir other;

	open_with_key(f);
	assert_int_equal(unitd_datadir_open(&f->cfg, &other, f->err, sizeof(f->err)),
	                 KY_ERR_CONFIG);
	assert_non_null(strstr(f->err, "in use by another kyok-unitd"));
	/* Released, the lock is free again. */
	unitd_datadir_release(&f->dd);
	assert_int_equal(unitd_datadir_open(&f->cfg, &other, f->err, sizeof(f->err)), 0);
	unitd_datadir_release(&other);
}

static void test_data_dir_is_a_file(void **state)
{
	struct fixture *f = *state;
	int fd = open(f->data, O_WRONLY | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	close(fd);
	assert_int_not_equal(unitd_datadir_open(&f->cfg, &f->dd, f->err, sizeof(f->err)), 0);
	assert_non_null(strstr(f->err, "is not a directory"));
}

static void test_ref_read_rules(void **state)
{
	struct fixture *f = *state;
	struct ky_buf b = {0};
	char key[256], link_path[256], big[256];
	static const char text[] = "kind=file\n";

	assert_int_equal(mkdir(f->data, 0700), 0);
	path_in(f, "ref", key, sizeof(key));
	assert_int_equal(unitd_seal_ref_read(key, 64, &b, f->err, sizeof(f->err)),
	                 KY_ERR_NOT_FOUND);
	assert_int_equal(unitd_seal_ref_write(key, text, sizeof(text) - 1, f->err, sizeof(f->err)),
	                 0);
	/* Never overwritten. */
	assert_int_equal(unitd_seal_ref_write(key, text, sizeof(text) - 1, f->err, sizeof(f->err)),
	                 KY_ERR_EXISTS);
	assert_int_equal(unitd_seal_ref_read(key, 64, &b, f->err, sizeof(f->err)), 0);
	assert_int_equal(b.len, sizeof(text) - 1);
	ky_buf_free(&b);

	/* Larger than its bound. */
	assert_int_equal(unitd_seal_ref_read(key, 4, &b, f->err, sizeof(f->err)), KY_ERR_CONFIG);
	assert_non_null(strstr(f->err, "at most 4"));

	/* Readable by others. */
	assert_int_equal(chmod(key, 0640), 0);
	assert_int_equal(unitd_seal_ref_read(key, 64, &b, f->err, sizeof(f->err)), KY_ERR_CONFIG);
	assert_non_null(strstr(f->err, "wider than 0600"));
	assert_int_equal(chmod(key, 0600), 0);

	/* A symbolic link to it. */
	path_in(f, "ref-link", link_path, sizeof(link_path));
	assert_int_equal(symlink(key, link_path), 0);
	assert_int_equal(unitd_seal_ref_read(link_path, 64, &b, f->err, sizeof(f->err)),
	                 KY_ERR_CONFIG);
	assert_non_null(strstr(f->err, "symbolic link"));

	/* A directory in its place. */
	path_in(f, "ref-dir", big, sizeof(big));
	assert_int_equal(mkdir(big, 0700), 0);
	assert_int_equal(unitd_seal_ref_read(big, 64, &b, f->err, sizeof(f->err)), KY_ERR_CONFIG);
	assert_non_null(strstr(f->err, "not a regular file"));
}

static void test_ref_field(void **state)
{
	struct ky_buf b = {0};
	char v[16];

	(void)state;
	assert_int_equal(ky_buf_append_str(&b, "kind=file\nid=00ff\n"), 0);
	assert_int_equal(unitd_seal_ref_field(&b, "id", v, sizeof(v)), 0);
	assert_string_equal(v, "00ff");
	assert_int_equal(unitd_seal_ref_field(&b, "kind", v, sizeof(v)), 0);
	assert_string_equal(v, "file");
	assert_int_equal(unitd_seal_ref_field(&b, "i", v, sizeof(v)), KY_ERR_NOT_FOUND);
	/* A value that does not fit is malformed, never cut. */
	assert_int_equal(unitd_seal_ref_field(&b, "kind", v, 4), KY_ERR_MALFORMED);
	ky_buf_free(&b);
	/* The last line without its newline. */
	assert_int_equal(ky_buf_append_str(&b, "kind=file"), 0);
	assert_int_equal(unitd_seal_ref_field(&b, "kind", v, sizeof(v)), KY_ERR_MALFORMED);
	ky_buf_free(&b);
}

static void test_mark_round_trip(void **state)
{
	struct fixture *f = *state;
	struct ky_store_ledger_pos pos = {.gen = 0x0102030405060708ULL, .epoch = 3}, got;

	open_with_key(f);
	/* No mark: the unit never saw key storage. */
	assert_int_equal(unitd_mark_load(&f->dd, INSTANCE, UNIT, &got), 0);
	assert_true(got.gen == 0 && got.epoch == 0);
	assert_int_equal(unitd_mark_write(&f->dd, INSTANCE, UNIT, &pos), 0);
	assert_int_equal(unitd_mark_load(&f->dd, INSTANCE, UNIT, &got), 0);
	assert_true(got.gen == pos.gen && got.epoch == pos.epoch);
	/* After a restart too. */
	unitd_datadir_release(&f->dd);
	open_with_key(f);
	assert_int_equal(unitd_mark_load(&f->dd, INSTANCE, UNIT, &got), 0);
	assert_true(got.gen == pos.gen && got.epoch == pos.epoch);
	/* Removed: back to none. */
	assert_int_equal(unitd_mark_remove(&f->dd), 0);
	assert_int_equal(unitd_mark_load(&f->dd, INSTANCE, UNIT, &got), 0);
	assert_true(got.gen == 0 && got.epoch == 0);
	assert_int_equal(unitd_mark_remove(&f->dd), 0);
}

static void test_mark_refusals(void **state)
{
	struct fixture *f = *state;
	struct ky_store_ledger_pos pos = {.gen = 41, .epoch = 1}, got;
	struct ky_buf file = {0};
	char path[256];

	open_with_key(f);
	assert_int_equal(unitd_mark_write(&f->dd, INSTANCE, UNIT, &pos), 0);
	/* Bound to its unit and instance: another's mark copied here does not open. */
	assert_int_not_equal(unitd_mark_load(&f->dd, INSTANCE, "unit-2", &got), 0);
	assert_int_not_equal(unitd_mark_load(&f->dd, "inst-2", UNIT, &got), 0);

	/* A flipped bit anywhere in the sealed part. */
	path_in(f, "storage.mark", path, sizeof(path));
	assert_int_equal(ky_file_read(path, 4096, &file), 0);
	for (size_t i = strlen("KYOKMARK1\n"); i < file.len; i += 7) {
		file.data[i] ^= 0x01;
		assert_int_equal(ky_file_write_atomic(path, file.data, file.len, 0600), 0);
		assert_int_not_equal(unitd_mark_load(&f->dd, INSTANCE, UNIT, &got), 0);
		file.data[i] ^= 0x01;
	}
	/* Cut short. */
	assert_int_equal(ky_file_write_atomic(path, file.data, file.len - 1, 0600), 0);
	assert_int_not_equal(unitd_mark_load(&f->dd, INSTANCE, UNIT, &got), 0);
	/* Another magic. */
	file.data[0] = 'X';
	assert_int_equal(ky_file_write_atomic(path, file.data, file.len, 0600), 0);
	assert_int_equal(unitd_mark_load(&f->dd, INSTANCE, UNIT, &got), KY_ERR_STATE_CORRUPT);
	file.data[0] = 'K';
	/* Put back whole, it opens again. */
	assert_int_equal(ky_file_write_atomic(path, file.data, file.len, 0600), 0);
	assert_int_equal(unitd_mark_load(&f->dd, INSTANCE, UNIT, &got), 0);
	assert_true(got.gen == 41 && got.epoch == 1);
	ky_buf_free(&file);

	/* Under another seal key (the data directory made again), the old mark does not open. */
	unitd_datadir_release(&f->dd);
	path_in(f, "seal.key", path, sizeof(path));
	assert_int_equal(unlink(path), 0);
	open_with_key(f);
	assert_int_not_equal(unitd_mark_load(&f->dd, INSTANCE, UNIT, &got), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_makes_dir_and_key, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lock_refuses_second_daemon, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_data_dir_is_a_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ref_read_rules, setup, teardown),
	    cmocka_unit_test(test_ref_field),
	    cmocka_unit_test_setup_teardown(test_mark_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mark_refusals, setup, teardown),
	};

	/* The daemon's log goes to stderr here. */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
