/* Unit tests of the shared rules (include/kyok/common.h, ky_apikey_hash, ky_hmac_sha256):
 * each accepted and refused at its boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyok/common.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"

static char tmpdir[256];

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/kyok-test-rules-XXXXXX",
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

static void test_id_valid(void **state)
{
	char s[KY_ID_MAX + 2];
	char one[2] = {0};

	(void)state;
	assert_true(ky_id_valid("unit-1"));
	assert_true(ky_id_valid("a"));
	assert_true(ky_id_valid("Zone_A.2-b"));
	assert_true(ky_id_valid("0123456789"));
	assert_true(ky_id_valid(".."));
	assert_true(ky_id_valid("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"));
	/* empty, NULL */
	assert_false(ky_id_valid(""));
	assert_false(ky_id_valid(NULL));
	/* max length and one more */
	memset(s, 'x', KY_ID_MAX);
	s[KY_ID_MAX] = '\0';
	assert_true(ky_id_valid(s));
	s[KY_ID_MAX] = 'x';
	s[KY_ID_MAX + 1] = '\0';
	assert_false(ky_id_valid(s));
	/* every byte outside the set is refused, alone and inside an id */
	for (int c = 1; c < 256; c++) {
		bool in = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		char mid[4] = {'a', (char)c, 'b', '\0'};

		one[0] = (char)c;
		assert_int_equal(ky_id_valid(one), in);
		assert_int_equal(ky_id_valid(mid), in);
	}
	/* each class by name: space, slash, colon, control, DEL, non-ASCII */
	assert_false(ky_id_valid("a b"));
	assert_false(ky_id_valid("a/b"));
	assert_false(ky_id_valid("a:b"));
	assert_false(ky_id_valid("a\tb"));
	assert_false(ky_id_valid("a\x7f"));
	assert_false(ky_id_valid("caf\xc3\xa9"));
}

static void test_hex_digit(void **state)
{
	(void)state;
	for (int c = 1; c < 256; c++) {
		int want = c >= '0' && c <= '9'   ? c - '0'
		           : c >= 'a' && c <= 'f' ? c - 'a' + 10
		           : c >= 'A' && c <= 'F' ? c - 'A' + 10
		                                  : -1;
		assert_int_equal(ky_hex_digit((char)c), want);
	}
	assert_int_equal(ky_hex_digit('0'), 0);
	assert_int_equal(ky_hex_digit('f'), 15);
	assert_int_equal(ky_hex_digit('F'), 15);
	assert_int_equal(ky_hex_digit('g'), -1);
	assert_int_equal(ky_hex_digit('/'), -1);
	assert_int_equal(ky_hex_digit(':'), -1);
	assert_int_equal(ky_hex_digit('\0'), -1);
}

static void test_uuid(void **state)
{
	char u[KY_UUID_LEN + 1], v[KY_UUID_LEN + 1];

	(void)state;
	assert_int_equal(ky_uuid_new(u), 0);
	assert_int_equal(strlen(u), KY_UUID_LEN);
	assert_true(ky_uuid_valid(u));
	assert_true(ky_id_valid(u));
	assert_int_equal(u[14], '4');            /* version 4 */
	assert_non_null(strchr("89ab", u[19]));  /* RFC 4122 variant */
	for (size_t i = 0; i < KY_UUID_LEN; i++) /* lowercase */
		assert_false(u[i] >= 'A' && u[i] <= 'F');
	assert_int_equal(ky_uuid_new(v), 0);
	assert_string_not_equal(u, v);

	assert_true(ky_uuid_valid("00000000-0000-0000-0000-000000000000"));
	assert_true(ky_uuid_valid("ABCDEF01-2345-6789-abcd-ef0123456789"));
	assert_false(ky_uuid_valid(NULL));
	assert_false(ky_uuid_valid(""));
	/* one short, one long */
	assert_false(ky_uuid_valid("00000000-0000-0000-0000-00000000000"));
	assert_false(ky_uuid_valid("00000000-0000-0000-0000-0000000000000"));
	/* a dash out of place, a hex digit where a dash goes */
	assert_false(ky_uuid_valid("0000000-00000-0000-0000-000000000000"));
	assert_false(ky_uuid_valid("00000000a0000-0000-0000-000000000000"));
	/* not hex: g, space, non-ASCII */
	assert_false(ky_uuid_valid("g0000000-0000-0000-0000-000000000000"));
	assert_false(ky_uuid_valid("00000000-0000-0000-0000-00000000000 "));
	assert_false(ky_uuid_valid("00000000-0000-0000-0000-0000000000\xc3\xa9"));
}

static void test_mkdir_p(void **state)
{
	char p[PATH_MAX + 16], at[PATH_MAX], file[300];
	struct stat st;
	FILE *f;

	(void)state;
	/* makes every missing parent with the mode asked */
	snprintf(p, sizeof(p), "%s/a/b/c", tmpdir);
	assert_int_equal(ky_mkdir_p(p, 0700, at, sizeof(at)), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	snprintf(p, sizeof(p), "%s/a", tmpdir);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	/* existing: fine, left as it is; a trailing slash too */
	snprintf(p, sizeof(p), "%s/a/b/c/", tmpdir);
	assert_int_equal(ky_mkdir_p(p, 0700, NULL, 0), 0);
	/* a file where a directory should be: at the end, and as a parent */
	snprintf(file, sizeof(file), "%s/file", tmpdir);
	assert_non_null(f = fopen(file, "w"));
	fclose(f);
	assert_int_equal(ky_mkdir_p(file, 0700, at, sizeof(at)), KY_ERR_IO);
	assert_int_equal(errno, ENOTDIR);
	assert_string_equal(at, file);
	snprintf(p, sizeof(p), "%s/sub", file);
	assert_int_equal(ky_mkdir_p(p, 0700, at, sizeof(at)), KY_ERR_IO);
	assert_int_equal(errno, ENOTDIR);
	assert_string_equal(at, p);
	/* empty, NULL, longer than PATH_MAX */
	assert_int_equal(ky_mkdir_p("", 0700, at, sizeof(at)), KY_ERR_USAGE);
	assert_int_equal(ky_mkdir_p(NULL, 0700, at, sizeof(at)), KY_ERR_USAGE);
	memset(p, 'd', PATH_MAX);
	p[0] = '/';
	p[PATH_MAX] = '\0';
	assert_int_equal(ky_mkdir_p(p, 0700, at, sizeof(at)), KY_ERR_USAGE);
	assert_string_equal(at, "");
}

static void test_apikey_hash(void **state)
{
	/* SHA-256("kyok_test") and SHA-256(""), as `printf %s ... | sha256sum` prints them */
	static const char want[] =
	    "6dcab2e5369bbf5acdb3a3b3a9b885c2a87e03486905fd516ac232c3b99ad4d4";
	static const char empty[] =
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	uint8_t h[KY_APIKEY_HASH_LEN];
	char hex[2 * KY_APIKEY_HASH_LEN + 1];

	(void)state;
	assert_int_equal(ky_apikey_hash("kyok_test", h), 0);
	ky_hex_encode(h, sizeof(h), hex);
	assert_string_equal(hex, want);
	assert_int_equal(ky_apikey_hash("", h), 0);
	ky_hex_encode(h, sizeof(h), hex);
	assert_string_equal(hex, empty);
	assert_int_equal(ky_apikey_hash(NULL, h), KY_ERR_USAGE);
}

static void test_hmac_sha256(void **state)
{
	/* RFC 4231, test case 2 */
	static const char want[] =
	    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
	uint8_t mac[KY_HMAC_SHA256_LEN];
	char hex[2 * KY_HMAC_SHA256_LEN + 1];

	(void)state;
	assert_int_equal(
	    ky_hmac_sha256((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28, mac), 0);
	ky_hex_encode(mac, sizeof(mac), hex);
	assert_string_equal(hex, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_id_valid),    cmocka_unit_test(test_uuid),
	    cmocka_unit_test(test_mkdir_p),     cmocka_unit_test(test_apikey_hash),
	    cmocka_unit_test(test_hmac_sha256), cmocka_unit_test(test_hex_digit),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
