/* Unit tests of the kyok command's pure helpers: tables, number lists, password and secret
 * sources, the instance.json and selection.json parsers, known_units, and the workspace
 * listings with real key files.
 *
 * The cli/ sources are compiled into this test directly (they are not a library), so that
 * their file-local parsers can be tested too. client.c and up*.c (libcurl, processes) are
 * exercised by the integration tests instead.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyok/imprint.h"
#include "cli/common.c"
#include "cli/opts.c"
#include "cli/failover.c"
#include "cli/imprint.c"
#include "cli/instance.c"
#include "cli/prompt.c"
#include "cli/table.c"
#include "cli/workspace.c"
#include "cli/selection.c"
#include "cli/tke_bundle.c"
#include "cli/kp_verbs.c"
#include "cli/kp_seal.c"
#include <openssl/ec.h>
#include "cli/token_part.h"

static char tmpdir[256];

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/kyok-test-cli-XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	/* Files and directories the tests write are private, as the CLI wants secret files. */
	umask(077);
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	return ky_crypto_init() == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	char cmd[400];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A fresh workspace directory per test. */
static void use_workspace(const char *name)
{
	char ws[400];

	snprintf(ws, sizeof(ws), "%s/%s", tmpdir, name);
	assert_int_equal(setenv("KYOK_TKE_FILES", ws, 1), 0);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void reset_password_sources(void)
{
	cli_g.npassword_files = 0;
	cli_g.password_fd = -1;
	cli_next_password_file = 0;
}

static bool have_tty(void)
{
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* ---- tables ---- */

static char *table_text(struct cli_table *t)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	cli_table_print(t, f);
	fclose(f);
	return text;
}

static void test_table(void **state)
{
	static const char *const hdr[] = {"NUMBER", "NAME", "SKI"};
	const char *row1[] = {"1", "alice", "7904b887"};
	const char *row2[] = {"12", NULL, "ab"};
	const char *row3[] = {"3", "\xc3\xa9t\xc3\xa9", ""}; /* "été": 3 columns, 5 bytes */
	struct cli_table *t;
	char *text;

	(void)state;
	assert_null(cli_table_new(0, hdr));
	assert_int_equal(cli_table_add(NULL, row1), KY_ERR_INTERNAL);
	t = cli_table_new(3, hdr);
	assert_non_null(t);
	assert_int_equal(cli_table_add(t, row1), 0);
	assert_int_equal(cli_table_add(t, row2), 0);
	assert_int_equal(cli_table_add(t, row3), 0);
	text = table_text(t);
	assert_string_equal(text, "NUMBER   NAME    SKI\n"
	                          "1        alice   7904b887\n"
	                          "12       -       ab\n"
	                          "3        été\n");
	free(text);
	cli_table_free(t);
	cli_table_free(NULL);

	/* Header only. */
	t = cli_table_new(2, hdr);
	text = table_text(t);
	assert_string_equal(text, "NUMBER   NAME\n");
	free(text);
	cli_table_free(t);

	/* Many rows: the row array grows. */
	t = cli_table_new(1, hdr);
	for (int i = 0; i < 100; i++)
		assert_int_equal(cli_table_add(t, row1), 0);
	text = table_text(t);
	assert_int_equal(strlen(text), strlen("NUMBER\n") + 100 * strlen("1\n"));
	free(text);
	cli_table_free(t);
}

/* ---- number lists ---- */

static void test_parse_numbers(void **state)
{
	int out[4];
	size_t n = 99;
	char why[160];

	(void)state;
	assert_int_equal(cli_parse_numbers("1,2", 16, out, 4, &n, why, sizeof(why)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[1], 2);
	assert_int_equal(cli_parse_numbers(" 3 , 1 ", 16, out, 4, &n, why, sizeof(why)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(out[0], 3);
	assert_int_equal(out[1], 1);
	assert_int_equal(cli_parse_numbers("16", 16, out, 4, &n, why, sizeof(why)), 0);
	assert_int_equal(out[0], 16);

	/* Every check trips. */
	static const char *const bad[] = {
	    "1,,2", "x",   "0",   "",   ",",  "1,", ",1",
	    "17",   "1,1", "1 2", "-1", "+1", "1x", "99999999999999999999",
	    "1;2",  "0x1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		n = 99;
		assert_int_equal(cli_parse_numbers(bad[i], 16, out, 4, &n, why, sizeof(why)),
		                 KY_ERR_USAGE);
		assert_int_equal(n, 0);
		assert_true(why[0] != '\0');
	}
	assert_int_equal(cli_parse_numbers(NULL, 16, out, 4, &n, why, sizeof(why)), KY_ERR_USAGE);
	/* More numbers than room. */
	assert_int_equal(cli_parse_numbers("1,2,3,4,5", 16, out, 4, &n, why, sizeof(why)),
	                 KY_ERR_USAGE);
	assert_non_null(strstr(why, "at most 4"));
	/* The maximum is the caller's. */
	assert_int_equal(cli_parse_numbers("3", 2, out, 4, &n, why, sizeof(why)), KY_ERR_USAGE);
	assert_non_null(strstr(why, "1 to 2"));
}

/* ---- password and secret sources ---- */

static void test_password_files(void **state)
{
	char p1[400], p2[400], pempty[400], pnl[400], ptwo[400], pmissing[400], plong[400];
	char *pw = NULL;

	(void)state;
	reset_password_sources();
	snprintf(p1, sizeof(p1), "%s/pw1", tmpdir);
	snprintf(p2, sizeof(p2), "%s/pw2", tmpdir);
	snprintf(pempty, sizeof(pempty), "%s/pw-empty", tmpdir);
	snprintf(pnl, sizeof(pnl), "%s/pw-newline", tmpdir);
	snprintf(ptwo, sizeof(ptwo), "%s/pw-two-lines", tmpdir);
	snprintf(pmissing, sizeof(pmissing), "%s/pw-missing", tmpdir);
	snprintf(plong, sizeof(plong), "%s/pw-long", tmpdir);
	write_file(p1, "first password\n");
	write_file(p2, "second-password"); /* no newline */
	write_file(pempty, "");
	write_file(pnl, "\n");
	write_file(ptwo, "one\ntwo\n");
	{
		char big[CLI_SECRET_MAX + 2];
		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		write_file(plong, big);
	}

	/* Options: the k-th password comes from the k-th file. */
	assert_int_equal(cli_common_opt(0x1002, p1), 0);
	assert_int_equal(cli_common_opt(0x1002, p2), 0);
	assert_int_equal(cli_password("password", true, &pw), 0);
	assert_string_equal(pw, "first password"); /* one trailing newline stripped */
	cli_secret_free(pw);
	assert_int_equal(cli_password("password", false, &pw), 0);
	assert_string_equal(pw, "second-password");
	cli_secret_free(pw);
	cli_secret_free(NULL);

	/* Files that are not one secret line. */
	const char *bad[] = {pempty, pnl, ptwo};
	for (size_t i = 0; i < 3; i++) {
		reset_password_sources();
		assert_int_equal(cli_common_opt(0x1002, bad[i]), 0);
		pw = (char *)"untouched";
		assert_int_equal(cli_password("password", false, &pw), KY_ERR_USAGE);
		assert_null(pw);
	}
	reset_password_sources();
	assert_int_equal(cli_common_opt(0x1002, pmissing), 0);
	assert_int_equal(cli_password("password", false, &pw), KY_ERR_NOT_FOUND);
	reset_password_sources();
	assert_int_equal(cli_common_opt(0x1002, plong), 0);
	assert_int_equal(cli_password("password", false, &pw), KY_ERR_TOO_LARGE);
	reset_password_sources();
	assert_int_equal(cli_common_opt(0x1002, ""), KY_ERR_USAGE);

	/* At most 16 files. */
	reset_password_sources();
	for (int i = 0; i < 16; i++)
		assert_int_equal(cli_common_opt(0x1002, p1), 0);
	assert_int_equal(cli_common_opt(0x1002, p1), KY_ERR_USAGE);
	reset_password_sources();

	/* Secrets other than passwords: a file, like --value-file. */
	assert_int_equal(cli_secret_read("value", p2, -1, &pw), 0);
	assert_string_equal(pw, "second-password");
	cli_secret_free(pw);
	assert_int_equal(cli_secret_read("value", pempty, -1, &pw), KY_ERR_USAGE);
}

static void test_password_fd(void **state)
{
	int fds[2];
	char *pw = NULL;
	static const char lines[] = "alpha-pass\nbeta pass\n\nlast-no-newline";

	(void)state;
	reset_password_sources();
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], lines, strlen(lines)), (ssize_t)strlen(lines));
	close(fds[1]);
	char num[16];
	snprintf(num, sizeof(num), "%d", fds[0]);
	assert_int_equal(cli_common_opt(0x1003, num), 0);
	assert_int_equal(cli_password("password", true, &pw), 0);
	assert_string_equal(pw, "alpha-pass");
	cli_secret_free(pw);
	assert_int_equal(cli_password("password", false, &pw), 0);
	assert_string_equal(pw, "beta pass");
	cli_secret_free(pw);
	/* An empty line is no password. */
	assert_int_equal(cli_password("password", false, &pw), KY_ERR_USAGE);
	/* The last line may end without a newline. */
	assert_int_equal(cli_password("password", false, &pw), 0);
	assert_string_equal(pw, "last-no-newline");
	cli_secret_free(pw);
	/* Nothing left. */
	assert_int_equal(cli_password("password", false, &pw), KY_ERR_USAGE);
	assert_null(pw);
	close(fds[0]);

	/* A file is used before the descriptor. */
	char p[400];
	snprintf(p, sizeof(p), "%s/pw-before-fd", tmpdir);
	write_file(p, "from-the-file\n");
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "from-the-fd\n", 12), 12);
	close(fds[1]);
	reset_password_sources();
	cli_g.password_fd = fds[0];
	assert_int_equal(cli_common_opt(0x1002, p), 0);
	assert_int_equal(cli_password("password", false, &pw), 0);
	assert_string_equal(pw, "from-the-file");
	cli_secret_free(pw);
	assert_int_equal(cli_password("password", false, &pw), 0);
	assert_string_equal(pw, "from-the-fd");
	cli_secret_free(pw);
	close(fds[0]);

	/* A descriptor for --value-fd. */
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "00ff\n", 5), 5);
	close(fds[1]);
	assert_int_equal(cli_secret_read("value", NULL, fds[0], &pw), 0);
	assert_string_equal(pw, "00ff");
	cli_secret_free(pw);
	close(fds[0]);

	/* Bad --password-fd values. */
	reset_password_sources();
	assert_int_equal(cli_common_opt(0x1003, "x"), KY_ERR_USAGE);
	assert_int_equal(cli_common_opt(0x1003, "-1"), KY_ERR_USAGE);
	assert_int_equal(cli_common_opt(0x1003, ""), KY_ERR_USAGE);
	assert_int_equal(cli_common_opt(0x1003, "99999999999"), KY_ERR_USAGE);
	reset_password_sources();
}

static void test_no_terminal(void **state)
{
	char *pw = NULL;

	(void)state;
	if (have_tty())
		skip(); /* it would ask on the terminal */
	reset_password_sources();
	assert_int_equal(cli_password("password", true, &pw), KY_ERR_USAGE);
	assert_null(pw);
	assert_int_equal(cli_secret_read("value", NULL, -1, &pw), KY_ERR_USAGE);
	assert_int_equal(cli_prompt_line("name", "--name", &pw), KY_ERR_USAGE);
	assert_null(pw);
	cli_g.yes = false;
	assert_int_equal(cli_confirm("delete?"), KY_ERR_CANCELLED);
	cli_g.yes = true;
	assert_int_equal(cli_confirm("delete?"), 0);
	cli_g.yes = false;
}

static void test_common_opts(void **state)
{
	(void)state;
	assert_int_equal(cli_common_opt(0x1001, "json"), 0);
	assert_true(cli_g.json);
	assert_int_equal(cli_common_opt(0x1001, "table"), 0);
	assert_false(cli_g.json);
	assert_int_equal(cli_common_opt(0x1001, "yaml"), KY_ERR_USAGE);
	assert_int_equal(cli_common_opt(0x1005, ""), KY_ERR_USAGE);
	assert_int_equal(cli_common_opt(0x1005, "/some/dir"), 0);
	assert_string_equal(cli_instance_dir(), "/some/dir");
	cli_g.instance_dir = NULL;
	assert_int_equal(cli_common_opt('?', NULL), KY_ERR_USAGE);
	assert_int_equal(cli_common_opt('x', NULL), KY_ERR_USAGE);
	assert_int_equal(cli_common_opt(0x1004, NULL), 0);
	assert_true(cli_g.yes);
	cli_g.yes = false;
}

/* ---- instance.json ---- */

#define UNIT1 \
	"{\"number\": 1, \"id\": \"u-1\", \"zone\": \"zone-1\", \"url\": \"http://127.0.0.1:1\"}"
#define UNIT2 "{\"number\": 2, \"id\": \"u-2\", \"zone\": \"zone-2\", \"url\": \"https://h:2\"}"

static int parse_instance(const char *text, struct cli_instance *inst)
{
	char why[256] = "";
	int r;

	memset(inst, 0, sizeof(*inst));
	r = cli_instance_parse(text, strlen(text), inst, why, sizeof(why));
	if (r != 0)
		assert_true(why[0] != '\0');
	return r;
}

static void test_instance_parse(void **state)
{
	struct cli_instance inst;

	(void)state;
	/* Units come out sorted by number; unknown fields are left for later versions. */
	assert_int_equal(
	    parse_instance("{\"instance\": \"inst-1\", \"extra\": 1, \"units\": [" UNIT2 ", " UNIT1
	                   "]}",
	                   &inst),
	    0);
	assert_string_equal(inst.id, "inst-1");
	assert_int_equal(inst.nunits, 2);
	assert_int_equal(inst.units[0].number, 1);
	assert_string_equal(inst.units[0].id, "u-1");
	assert_string_equal(inst.units[0].zone, "zone-1");
	assert_string_equal(inst.units[0].url, "http://127.0.0.1:1");
	assert_int_equal(inst.units[1].number, 2);
	assert_string_equal(inst.units[1].url, "https://h:2");
	assert_non_null(cli_instance_unit(&inst, 2));
	assert_null(cli_instance_unit(&inst, 3));

	static const char *const bad[] = {
	    "",
	    "not json",
	    "[]",
	    "{\"instance\": \"i\", \"instance\": \"j\", \"units\": [" UNIT1 "]}",
	    "{\"units\": [" UNIT1 "]}",
	    "{\"instance\": 5, \"units\": [" UNIT1 "]}",
	    "{\"instance\": \"\", \"units\": [" UNIT1 "]}",
	    "{\"instance\": \"a b\", \"units\": [" UNIT1 "]}",
	    "{\"instance\": \"../x\", \"units\": [" UNIT1 "]}",
	    "{\"instance\": \"i\"}",
	    "{\"instance\": \"i\", \"units\": {}}",
	    "{\"instance\": \"i\", \"units\": []}",
	    "{\"instance\": \"i\", \"units\": [1]}",
	    "{\"instance\": \"i\", \"units\": [" UNIT1 ", " UNIT1 "]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 0, \"id\": \"u\", \"zone\": \"z\", "
	    "\"url\": \"http://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 17, \"id\": \"u\", \"zone\": \"z\", "
	    "\"url\": \"http://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": \"1\", \"id\": \"u\", \"zone\": \"z\", "
	    "\"url\": \"http://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"id\": \"u\", \"zone\": \"z\", \"url\": "
	    "\"http://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"zone\": \"z\", \"url\": "
	    "\"http://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"id\": \"u/1\", \"zone\": \"z\", "
	    "\"url\": \"http://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"id\": \"u\", \"zone\": \"\", "
	    "\"url\": \"http://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"id\": \"u\", \"url\": "
	    "\"http://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"id\": \"u\", \"zone\": \"z\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"id\": \"u\", \"zone\": \"z\", "
	    "\"url\": \"ftp://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"id\": \"u\", \"zone\": \"z\", "
	    "\"url\": \"http://\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"id\": \"u\", \"zone\": \"z\", "
	    "\"url\": \"http://h /x\"}]}",
	    /* same number twice, same id twice */
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"id\": \"u\", \"zone\": \"z\", "
	    "\"url\": \"http://h\"}, {\"number\": 1, \"id\": \"v\", \"zone\": \"z\", \"url\": "
	    "\"http://h\"}]}",
	    "{\"instance\": \"i\", \"units\": [{\"number\": 1, \"id\": \"u\", \"zone\": \"z\", "
	    "\"url\": \"http://h\"}, {\"number\": 2, \"id\": \"u\", \"zone\": \"z\", \"url\": "
	    "\"http://h\"}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse_instance(bad[i], &inst), KY_ERR_CONFIG);
		assert_int_equal(inst.nunits, 0);
	}

	/* An id longer than 64 characters. */
	char text[512];
	snprintf(text, sizeof(text), "{\"instance\": \"%065d\", \"units\": [" UNIT1 "]}", 0);
	assert_int_equal(parse_instance(text, &inst), KY_ERR_CONFIG);
	/* 17 units. */
	{
		char big[8192];
		int off = snprintf(big, sizeof(big), "{\"instance\": \"i\", \"units\": [");
		for (int i = 1; i <= 17; i++)
			off += snprintf(big + off, sizeof(big) - (size_t)off,
			                "%s{\"number\": %d, \"id\": \"u%d\", \"zone\": \"z\", "
			                "\"url\": \"http://h\"}",
			                i > 1 ? ", " : "", i, i);
		snprintf(big + off, sizeof(big) - (size_t)off, "]}");
		assert_int_equal(parse_instance(big, &inst), KY_ERR_CONFIG);
	}
}

static void test_instance_load(void **state)
{
	struct cli_instance inst;
	char dir[400], path[450];

	(void)state;
	snprintf(dir, sizeof(dir), "%s/inst", tmpdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	cli_g.instance_dir = dir;
	/* No instance.json: the instance is not running. */
	assert_int_equal(cli_instance_load(&inst), KY_ERR_INSTANCE_DOWN);
	snprintf(path, sizeof(path), "%s/instance.json", dir);
	write_file(path, "{\"instance\": \"x\"");
	assert_int_equal(cli_instance_load(&inst), KY_ERR_CONFIG);
	write_file(path, "{\"instance\": \"inst-9\", \"units\": [" UNIT1 "]}");
	assert_int_equal(cli_instance_load(&inst), 0);
	assert_string_equal(inst.dir, dir);
	assert_string_equal(inst.id, "inst-9");
	cli_g.instance_dir = NULL;

	/* $KYOK_INSTANCE, then ~/.kyok/instance. */
	assert_int_equal(setenv("KYOK_INSTANCE", "/env/dir", 1), 0);
	assert_string_equal(cli_instance_dir(), "/env/dir");
	assert_int_equal(unsetenv("KYOK_INSTANCE"), 0);
	assert_int_equal(setenv("HOME", "/home/someone", 1), 0);
	assert_string_equal(cli_instance_dir(), "/home/someone/.kyok/instance");
}

/* ---- selection.json ---- */

static int parse_selection(const char *text)
{
	json_t *sel = NULL;
	char why[256] = "";
	int r = cli_selection_parse(text, strlen(text), &sel, why, sizeof(why));

	if (r == 0)
		assert_non_null(sel);
	else {
		assert_null(sel);
		assert_true(why[0] != '\0');
	}
	json_decref(sel);
	return r;
}

static void test_selection_parse(void **state)
{
	(void)state;
	assert_int_equal(parse_selection("{}"), 0);
	assert_int_equal(
	    parse_selection("{\"inst-1\": {\"units\": [1, 2]}, \"inst-2\": {\"units\": "
	                    "[]}, \"sigkeys\": [\"a-1.sigkey\", \"b.sigkey\"]}"),
	    0);

	static const char *const bad[] = {
	    "",
	    "nope",
	    "[]",
	    "{\"sigkeys\": \"a.sigkey\"}",
	    "{\"sigkeys\": [1]}",
	    "{\"sigkeys\": [\"../a.sigkey\"]}",
	    "{\"sigkeys\": [\"dir/a.sigkey\"]}",
	    "{\"sigkeys\": [\".sigkey\"]}",
	    "{\"sigkeys\": [\".hidden.sigkey\"]}",
	    "{\"sigkeys\": [\"a.keypart\"]}",
	    "{\"sigkeys\": [\"a\\n.sigkey\"]}",
	    "{\"sigkeys\": [\"a.sigkey\", \"a.sigkey\"]}",
	    "{\"sigkeys\": [], \"sigkeys\": []}",
	    "{\"bad id\": {\"units\": [1]}}",
	    "{\"i\": [1]}",
	    "{\"i\": {}}",
	    "{\"i\": {\"units\": [1], \"more\": 1}}",
	    "{\"i\": {\"units\": 1}}",
	    "{\"i\": {\"units\": [0]}}",
	    "{\"i\": {\"units\": [17]}}",
	    "{\"i\": {\"units\": [\"1\"]}}",
	    "{\"i\": {\"units\": [1.5]}}",
	    "{\"i\": {\"units\": [2, 2]}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(parse_selection(bad[i]), KY_ERR_CONFIG);
}

static void test_selection_units(void **state)
{
	struct cli_instance inst;
	struct cli_unit *units = NULL;
	size_t n = 99;
	int nums[16], three[] = {3};
	char path[450];

	(void)state;
	use_workspace("ws-units");
	assert_int_equal(
	    parse_instance("{\"instance\": \"inst-1\", \"units\": [" UNIT1 ", " UNIT2 "]}", &inst),
	    0);
	/* Nothing selected yet. */
	assert_int_equal(cli_selection_units(&inst, nums, 16, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(cli_selected_units(&inst, &units, &n), KY_ERR_NO_UNITS);
	assert_null(units);

	int two_one[] = {2, 1};
	assert_int_equal(cli_selection_set_units(&inst, two_one, 2), 0);
	assert_int_equal(cli_selected_units(&inst, &units, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(units[0].number, 1);
	assert_int_equal(units[1].number, 2);
	assert_string_equal(units[1].id, "u-2");
	free(units);
	/* A unit the instance does not have. */
	assert_int_equal(cli_selection_set_units(&inst, three, 1), KY_ERR_USAGE);
	/* Deselect everything. */
	assert_int_equal(cli_selection_set_units(&inst, NULL, 0), 0);
	assert_int_equal(cli_selection_units(&inst, nums, 16, &n), 0);
	assert_int_equal(n, 0);

	/* A damaged selection file is reported, not ignored. */
	assert_true((size_t)snprintf(path, sizeof(path), "%s/selection.json", cli_workspace()) <
	            sizeof(path));
	write_file(path, "{\"inst-1\": {\"units\": [0]}}");
	assert_int_equal(cli_selection_units(&inst, nums, 16, &n), KY_ERR_CONFIG);
	assert_int_equal(cli_selection_set_units(&inst, two_one, 2), KY_ERR_CONFIG);
	/* Numbers of units that are gone are skipped. */
	write_file(path, "{\"inst-1\": {\"units\": [2, 5]}}");
	assert_int_equal(cli_selection_units(&inst, nums, 16, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(nums[0], 2);
}

/* ---- known_units ---- */

static void test_known_units(void **state)
{
	char fp[65], path[450];
	static const char fp1[] =
	    "fd0210be28ef56d3b0cf553f96e2e32513a86fe5d68d5a2b0e39d411ed7f0262";
	static const char fp2[] =
	    "289f79f082a65a426bd69b4fb675a2d6ed7e2abdbb1dabf7baa07b0be39a1094";
	struct stat st;

	(void)state;
	use_workspace("ws-known");
	assert_int_equal(cli_known_unit_lookup("i", "u1", fp), KY_ERR_NOT_FOUND);
	assert_int_equal(cli_known_unit_pin("i", "u1", fp1), 0);
	assert_int_equal(cli_known_unit_pin("i", "u2", fp2), 0);
	assert_true((size_t)snprintf(path, sizeof(path), "%s/known_units", cli_workspace()) <
	            sizeof(path));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(cli_known_unit_lookup("i", "u1", fp), 0);
	assert_string_equal(fp, fp1);
	assert_int_equal(cli_known_unit_lookup("i", "u2", fp), 0);
	assert_string_equal(fp, fp2);
	assert_int_equal(cli_known_unit_lookup("other", "u1", fp), KY_ERR_NOT_FOUND);

	/* Comments and junk lines are skipped; a malformed pin for the unit is an error. */
	write_file(path, "# comment\njunk\ni u1 "
	                 "fd02\n");
	assert_int_equal(cli_known_unit_lookup("i", "u1", fp), KY_ERR_CONFIG);
	write_file(path, "i u1 zz0210be28ef56d3b0cf553f96e2e32513a86fe5d68d5a2b0e39d411ed7f0262\n");
	assert_int_equal(cli_known_unit_lookup("i", "u1", fp), KY_ERR_CONFIG);
	write_file(path,
	           "i u1 fd0210be28ef56d3b0cf553f96e2e32513a86fe5d68d5a2b0e39d411ed7f0262 x\n");
	assert_int_equal(cli_known_unit_lookup("i", "u1", fp), KY_ERR_NOT_FOUND);
}

/* ---- the workspace with real files ---- */

static void test_sigkeys_and_signers(void **state)
{
	char path_a[600], path_b[600], pw_ok[400], pw_bad[400];
	struct cli_sigkey *keys = NULL;
	struct cli_signer *signers = NULL;
	size_t n = 0;
	struct timespec later[2] = {{0, UTIME_OMIT}, {2000000000, 0}};

	(void)state;
	use_workspace("ws-keys");
	assert_int_equal(cli_workspace_ensure(), 0);
	assert_int_equal(cli_sigkeys_list(&keys, &n), 0);
	assert_int_equal(n, 0);
	free(keys);

	/* No selection: no signers. */
	reset_password_sources();
	assert_int_equal(cli_signers_open(&signers, &n), KY_ERR_NO_SIGNERS);

	snprintf(path_a, sizeof(path_a), "%s/sigkeys/zed-00000001.sigkey", cli_workspace());
	snprintf(path_b, sizeof(path_b), "%s/sigkeys/amy-00000002.sigkey", cli_workspace());
	assert_int_equal(ky_sigkey_create(path_a, "zed", "zed-password"), 0);
	assert_int_equal(ky_sigkey_create(path_b, "amy", "amy-password"), 0);
	/* amy's file is newer: listed second although its name sorts first. */
	assert_int_equal(utimensat(AT_FDCWD, path_b, later, 0), 0);
	{
		char junk[600];
		snprintf(junk, sizeof(junk), "%s/sigkeys/junk.sigkey", cli_workspace());
		write_file(junk, "not a key\n"); /* skipped with a warning */
		snprintf(junk, sizeof(junk), "%s/sigkeys/notes.txt", cli_workspace());
		write_file(junk, "ignored\n");
	}
	assert_int_equal(cli_sigkeys_list(&keys, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(keys[0].number, 1);
	assert_string_equal(keys[0].name, "zed");
	assert_string_equal(keys[0].path, path_a);
	assert_int_equal(keys[1].number, 2);
	assert_string_equal(keys[1].name, "amy");
	assert_false(keys[0].selected);

	/* Select amy then zed: order kept. */
	const char *sel[] = {path_b, path_a};
	assert_int_equal(cli_selection_set_sigkeys(sel, 2), 0);
	const char *twice[] = {keys[1].path, keys[1].path};
	assert_int_equal(cli_selection_set_sigkeys(twice, 2), KY_ERR_USAGE);
	const char *notkey[] = {"/x/y.txt"};
	assert_int_equal(cli_selection_set_sigkeys(notkey, 1), KY_ERR_USAGE);
	free(keys);
	assert_int_equal(cli_sigkeys_list(&keys, &n), 0);
	assert_true(keys[0].selected && keys[1].selected);
	free(keys);

	/* Passwords asked in selection order: amy, then zed. */
	snprintf(pw_ok, sizeof(pw_ok), "%s/pw-amy", tmpdir);
	write_file(pw_ok, "amy-password\n");
	snprintf(pw_bad, sizeof(pw_bad), "%s/pw-zed-wrong", tmpdir);
	write_file(pw_bad, "not-zeds-password\n");
	reset_password_sources();
	assert_int_equal(cli_common_opt(0x1002, pw_ok), 0);
	assert_int_equal(cli_common_opt(0x1002, pw_bad), 0);
	assert_int_equal(cli_signers_open(&signers, &n), KY_ERR_WRONG_PASSWORD);
	assert_null(signers);
	assert_int_equal(n, 0);

	char pw_zed[400];
	snprintf(pw_zed, sizeof(pw_zed), "%s/pw-zed", tmpdir);
	write_file(pw_zed, "zed-password\n");
	reset_password_sources();
	assert_int_equal(cli_common_opt(0x1002, pw_ok), 0);
	assert_int_equal(cli_common_opt(0x1002, pw_zed), 0);
	assert_int_equal(cli_signers_open(&signers, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(signers[0].name, "amy");
	assert_string_equal(signers[1].name, "zed");
	assert_non_null(signers[0].key);
	assert_non_null(signers[1].cert);
	cli_signers_free(signers, n);
	cli_signers_free(NULL, 0);

	/* Dropping zed keeps amy; a selected file that vanished is an error. */
	assert_int_equal(cli_selection_drop_sigkey(path_a), 0);
	assert_int_equal(cli_sigkeys_list(&keys, &n), 0);
	assert_false(keys[0].selected);
	assert_true(keys[1].selected);
	free(keys);
	assert_int_equal(cli_selection_set_sigkeys(sel, 2), 0);
	assert_int_equal(unlink(path_a), 0);
	reset_password_sources();
	assert_int_equal(cli_common_opt(0x1002, pw_ok), 0);
	assert_int_equal(cli_signers_open(&signers, &n), KY_ERR_NOT_FOUND);
	reset_password_sources();
}

static void test_keyparts_list(void **state)
{
	char path[600];
	struct cli_keypart *parts = NULL;
	size_t n = 0;
	uint8_t part[KY_MK_LEN], vp[KY_VP_LEN];
	char vp_hex[2 * KY_VP_LEN + 1];

	(void)state;
	use_workspace("ws-parts");
	assert_int_equal(cli_keyparts_list(&parts, &n), 0); /* no directory yet */
	assert_int_equal(n, 0);
	assert_int_equal(cli_workspace_ensure(), 0);
	memset(part, 0x5a, sizeof(part));
	snprintf(path, sizeof(path), "%s/keyparts/0000abcd.keypart", cli_workspace());
	assert_int_equal(ky_keypart_write(path, part, "ops part 1", "part-password"), 0);
	snprintf(path, sizeof(path), "%s/keyparts/broken.keypart", cli_workspace());
	write_file(path, "garbage\n");
	assert_int_equal(cli_keyparts_list(&parts, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(parts[0].number, 1);
	assert_string_equal(parts[0].description, "ops part 1");
	assert_int_equal(ky_vp(part, vp), 0);
	ky_hex_encode(vp, sizeof(vp), vp_hex);
	assert_string_equal(parts[0].vp_hex, vp_hex);
	free(parts);
}

/* ---- timeouts, unit order, safe requests (failover.c) ---- */

static void test_timeouts(void **state)
{
	long v = 0, c = 0, t = 0;
	char why[200];

	(void)state;
	assert_int_equal(cli_parse_timeout("2", &v), 0);
	assert_int_equal(v, 2);
	assert_int_equal(cli_parse_timeout("3600", &v), 0);
	assert_int_equal(cli_parse_timeout("3601", &v), KY_ERR_USAGE);
	assert_int_equal(cli_parse_timeout("0", &v), KY_ERR_USAGE);
	assert_int_equal(cli_parse_timeout("-1", &v), KY_ERR_USAGE);
	assert_int_equal(cli_parse_timeout(" 5", &v), KY_ERR_USAGE);
	assert_int_equal(cli_parse_timeout("5s", &v), KY_ERR_USAGE);
	assert_int_equal(cli_parse_timeout("", &v), KY_ERR_USAGE);
	assert_int_equal(cli_parse_timeout(NULL, &v), KY_ERR_USAGE);
	cli_g.timeout = 0;
	unsetenv("KYOK_TIMEOUT");
	assert_int_equal(cli_timeouts(&c, &t, why, sizeof(why)), 0);
	assert_int_equal(t, CLI_TIMEOUT_DEFAULT);
	assert_int_equal(c, CLI_CONNECT_TIMEOUT);
	setenv("KYOK_TIMEOUT", "2", 1);
	assert_int_equal(cli_timeouts(&c, &t, why, sizeof(why)), 0);
	assert_int_equal(t, 2);
	assert_int_equal(c, 2); /* connecting never takes longer than the whole */
	setenv("KYOK_TIMEOUT", "two", 1);
	assert_int_equal(cli_timeouts(&c, &t, why, sizeof(why)), KY_ERR_USAGE);
	assert_non_null(strstr(why, "'two'"));
	cli_g.timeout = 7; /* --timeout wins over the environment */
	assert_int_equal(cli_timeouts(&c, &t, why, sizeof(why)), 0);
	assert_int_equal(t, 7);
	assert_int_equal(c, CLI_CONNECT_TIMEOUT);
	cli_g.timeout = 0;
	unsetenv("KYOK_TIMEOUT");
	assert_int_equal(cli_common_opt(0x1006, "9"), 0);
	assert_int_equal(cli_g.timeout, 9);
	assert_int_equal(cli_common_opt(0x1006, "nine"), KY_ERR_USAGE);
	cli_g.timeout = 0;
}

static void test_unit_order(void **state)
{
	size_t order[4];
	int64_t failed[4] = {0, 0, 0, 0};

	(void)state;
	cli_unit_order(3, 0, NULL, 1000, order);
	assert_int_equal(order[0], 0);
	assert_int_equal(order[1], 1);
	assert_int_equal(order[2], 2);
	cli_unit_order(3, 1, failed, 1000, order); /* --unit 2 */
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 2);
	assert_int_equal(order[2], 0);
	failed[0] = 990; /* failed 10 s ago: last */
	cli_unit_order(3, 0, failed, 1000, order);
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 2);
	assert_int_equal(order[2], 0);
	failed[0] = 1000 - CLI_FAILED_HOLD; /* long enough ago: back in its place */
	cli_unit_order(3, 0, failed, 1000, order);
	assert_int_equal(order[0], 0);
	failed[0] = 2000; /* a time in the future (clock moved back): not trusted */
	cli_unit_order(3, 0, failed, 1000, order);
	assert_int_equal(order[0], 0);
	failed[0] = 995;
	failed[1] = 999; /* all failed: the usual order among them */
	failed[2] = 998;
	cli_unit_order(3, 0, failed, 1000, order);
	assert_int_equal(order[0], 0);
	assert_int_equal(order[1], 1);
	assert_int_equal(order[2], 2);
}

static void test_failures_parse(void **state)
{
	struct cli_instance inst = {.nunits = 2};
	int64_t at[2];
	const char *ok = "unit-b 1700\n\nnot-a-unit 5\nunit-a 1600\n";

	(void)state;
	snprintf(inst.units[0].id, sizeof(inst.units[0].id), "unit-a");
	snprintf(inst.units[1].id, sizeof(inst.units[1].id), "unit-b");
	assert_int_equal(cli_failures_parse(ok, strlen(ok), &inst, at), 0);
	assert_int_equal(at[0], 1600);
	assert_int_equal(at[1], 1700);
	assert_int_equal(cli_failures_parse("", 0, &inst, at), 0);
	assert_int_equal(at[0], 0);
	assert_int_equal(cli_failures_parse("unit-a\n", 7, &inst, at), KY_ERR_MALFORMED);
	assert_int_equal(cli_failures_parse("unit-a 12x\n", 11, &inst, at), KY_ERR_MALFORMED);
	assert_int_equal(cli_failures_parse("unit-a -3\n", 10, &inst, at), KY_ERR_MALFORMED);
	assert_int_equal(cli_failures_parse("unit-a 1 2\n", 11, &inst, at), KY_ERR_MALFORMED);
}

static void test_failures_file(void **state)
{
	struct cli_instance inst = {.nunits = 2};
	int64_t at[2];
	char path[700];
	struct stat st;

	(void)state;
	assert_true((size_t)snprintf(inst.dir, sizeof(inst.dir), "%s/fail-inst", cli_workspace()) <
	            sizeof(inst.dir));
	assert_int_equal(mkdir(inst.dir, 0700), 0);
	snprintf(inst.units[0].id, sizeof(inst.units[0].id), "unit-a");
	snprintf(inst.units[1].id, sizeof(inst.units[1].id), "unit-b");
	assert_int_equal(cli_failures_load(&inst, at), 0); /* no file: none failed */
	assert_int_equal(at[0] + at[1], 0);
	assert_int_equal(cli_failure_note(&inst, 1, 1234), 0);
	assert_int_equal(cli_failures_load(&inst, at), 0);
	assert_int_equal(at[0], 0);
	assert_int_equal(at[1], 1234);
	snprintf(path, sizeof(path), "%s/unit-failures", inst.dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(cli_failure_note(&inst, 1, 0), 0); /* served again */
	assert_int_equal(cli_failures_load(&inst, at), 0);
	assert_int_equal(at[1], 0);
	write_file(path, "garbage\n");
	assert_int_equal(cli_failures_load(&inst, at), KY_ERR_MALFORMED);
	assert_int_equal(cli_failure_note(&inst, 0, 77), 0); /* replaced */
	assert_int_equal(cli_failures_load(&inst, at), 0);
	assert_int_equal(at[0], 77);
	assert_int_equal(cli_failure_note(&inst, 2, 77), KY_ERR_USAGE);
}

static void test_request_safe(void **state)
{
	(void)state;
	assert_true(cli_api_request_safe("GET", "/api/v2/keys"));
	assert_true(cli_api_request_safe("HEAD", "/api/v2/keys"));
	assert_true(cli_api_request_safe("POST", "/api/v2/keys/k/actions/wrap"));
	assert_true(cli_api_request_safe("POST", "/api/v2/keys/k/actions/unwrap"));
	assert_true(cli_api_request_safe("POST", "/api/v2/keys/k/actions/rewrap"));
	assert_true(cli_api_request_safe("POST", "/api/v2/keys/k?action=unwrap"));
	assert_false(cli_api_request_safe("POST", "/api/v2/keys"));
	assert_false(cli_api_request_safe("POST", "/api/v2/keys/k/actions/rotate"));
	assert_false(cli_api_request_safe("POST", "/api/v2/keys/k/actions/wrapx"));
	assert_false(cli_api_request_safe("POST", "/api/v2/keys/k/actions/wrap/x"));
	assert_false(cli_api_request_safe("POST", "/api/v2/keys/k?action=restore"));
	assert_false(cli_api_request_safe("POST", "/api/v2/keys/k?action=wrap&x=1"));
	assert_false(cli_api_request_safe("POST", "/api/v2/keys/k/restore"));
	assert_false(cli_api_request_safe("DELETE", "/api/v2/keys/k"));
	assert_false(cli_api_request_safe("PUT", "/api/v2/keys/k/policies"));
}

/* ---- the imprint credential ---- */

static void imprint_reset(void)
{
	EVP_PKEY_free(imprint_key);
	imprint_key = NULL;
	imprint_option = NULL;
	imprint_path[0] = '\0';
}

static void write_credential(const char *path, mode_t mode, uint8_t pub[KY_IMPRINT_PUB_LEN])
{
	struct ky_buf pem = {0};
	int fd;

	assert_int_equal(ky_imprint_credential_new(&pem, pub), 0);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, pem.data, pem.len), (ssize_t)pem.len);
	assert_int_equal(close(fd), 0);
	assert_int_equal(chmod(path, mode), 0);
	ky_buf_free(&pem);
}

/* The token form of key part file: the good one parses, written and read back; every
 * deviation is refused as not a key part file. */
static void test_token_keypart_parse(void **state)
{
	static const char good[] =
	    "{\"format\": \"kyok-token-keypart-1\", \"description\": \"ops part\", \"vp\": "
	    "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\", \"module\": "
	    "\"/usr/lib/softhsm/libsofthsm2.so\", \"token_label\": \"kyok-ops\", "
	    "\"token_serial\": \"5c8a0e2b1f3d4a67\", \"key_label\": \"kyok key part\", "
	    "\"key_id\": \"0123456789abcdef0123456789abcdef\"}";
	/* Each: {from, to} replaces the first from in good. */
	static const char *const bad[][2] = {
	    {"kyok-token-keypart-1", "kyok-token-keypart-2"},
	    {"\"ops part\"", "\"\""},
	    {"\"ops part\"", "\"ops\\npart\""},
	    {"\"ops part\"", "42"},
	    {"eeff\", \"module", "eef\", \"module"},
	    {"00112233", "0011223G"},
	    {"00112233", "0011223A"},
	    {"\"/usr/lib", "\"usr/lib"},
	    {"\"kyok-ops\"", "\"\""},
	    {"\"kyok-ops\"", "\"kyok-ops-kyok-ops-kyok-ops-kyok-ops\""},
	    {"5c8a0e2b1f3d4a67", "5c8a0e2b1f3d4a67x"},
	    {"\"kyok key part\"", "null"},
	    {"cdef\"}", "cde\"}"},
	    {"cdef\"}", "cdef\", \"extra\": \"x\"}"},
	    {"\"key_id\"", "\"key_ID\""},
	    {"\"description\": \"ops part\"", "\"description\": \"a\", \"description\": \"b\""},
	    {"{\"format\"", "[{\"format\""},
	};
	struct cli_token_keypart tp, back;
	char why[200], path[512], buf[1024];

	(void)state;
	assert_int_equal(cli_token_keypart_parse(good, strlen(good), &tp, why, sizeof(why)), 0);
	assert_string_equal(tp.description, "ops part");
	assert_string_equal(tp.where.module, "/usr/lib/softhsm/libsofthsm2.so");
	assert_string_equal(tp.where.label, "kyok-ops");
	assert_string_equal(tp.where.serial, "5c8a0e2b1f3d4a67");
	assert_string_equal(tp.key_label, "kyok key part");
	assert_int_equal(tp.vp[0], 0x00);
	assert_int_equal(tp.vp[31], 0xff);
	assert_int_equal(tp.where.id[0], 0x01);
	assert_int_equal(tp.where.id[15], 0xef);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *at = strstr(good, bad[i][0]);
		size_t pre;
		assert_non_null(at);
		pre = (size_t)(at - good);
		snprintf(buf, sizeof(buf), "%.*s%s%s", (int)pre, good, bad[i][1],
		         at + strlen(bad[i][0]));
		why[0] = '\0';
		assert_int_equal(cli_token_keypart_parse(buf, strlen(buf), &tp, why, sizeof(why)),
		                 KY_ERR_NOT_KEY_PART);
		assert_true(why[0] != '\0' || buf[0] != '{');
	}
	assert_int_equal(cli_token_keypart_parse("", 0, &tp, why, sizeof(why)),
	                 KY_ERR_NOT_KEY_PART);
	/* Written, read back the same; never over an existing file. */
	assert_int_equal(cli_token_keypart_parse(good, strlen(good), &tp, why, sizeof(why)), 0);
	snprintf(path, sizeof(path), "%s/token.keypart", tmpdir);
	assert_int_equal(cli_token_keypart_write(path, &tp), 0);
	assert_int_equal(cli_token_keypart_write(path, &tp), KY_ERR_EXISTS);
	assert_int_equal(cli_token_keypart_read(path, &back, why, sizeof(why)), 0);
	assert_memory_equal(&tp, &back, sizeof(tp));
	assert_int_equal(unlink(path), 0);
}

static void test_imprint_credential(void **state)
{
	char dir[400], indir[450], other[450], why[1024];
	const uint8_t body[] = "command bytes";
	uint8_t pub[KY_IMPRINT_PUB_LEN], pub2[KY_IMPRINT_PUB_LEN];
	char *claim = NULL;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/inst-imprint", tmpdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	cli_g.instance_dir = dir;
	assert_int_equal(unsetenv("KYOK_IMPRINT_CREDENTIAL_FILE"), 0);
	imprint_reset();

	/* none anywhere: no claim, and the early check says where to put it */
	assert_int_equal(cli_imprint_claim(body, sizeof(body), &claim, why, sizeof(why)), 0);
	assert_null(claim);
	assert_int_equal(cli_imprint_require(why, sizeof(why)), KY_ERR_IMPRINT_CLAIM_REQUIRED);
	assert_non_null(strstr(why, "--imprint-credential FILE"));
	assert_non_null(strstr(why, "inst-imprint/imprint-credential.pem"));

	/* in the instance directory */
	snprintf(indir, sizeof(indir), "%s/%s", dir, KY_IMPRINT_CREDENTIAL_FILE);
	write_credential(indir, 0600, pub);
	assert_int_equal(cli_imprint_require(why, sizeof(why)), 0);
	assert_string_equal(cli_imprint_path(), indir);
	assert_int_equal(cli_imprint_claim(body, sizeof(body), &claim, why, sizeof(why)), 0);
	assert_non_null(claim);
	assert_int_equal(ky_imprint_claim_verify(pub, claim, body, sizeof(body)), 0);
	free(claim);
	claim = NULL;

	/* readable by others, or writable by the group: refused */
	imprint_reset();
	assert_int_equal(chmod(indir, 0644), 0);
	assert_int_equal(cli_imprint_claim(body, sizeof(body), &claim, why, sizeof(why)),
	                 KY_ERR_CREDENTIAL_EXPOSED);
	assert_non_null(strstr(why, "mode 0644"));
	assert_null(claim);
	assert_int_equal(chmod(indir, 0620), 0);
	assert_int_equal(cli_imprint_require(why, sizeof(why)), KY_ERR_CREDENTIAL_EXPOSED);
	assert_int_equal(chmod(indir, 0400), 0);
	assert_int_equal(cli_imprint_require(why, sizeof(why)), 0);

	/* the environment variable before the instance directory; it must exist */
	imprint_reset();
	snprintf(other, sizeof(other), "%s/other.pem", tmpdir);
	write_credential(other, 0600, pub2);
	assert_int_equal(setenv("KYOK_IMPRINT_CREDENTIAL_FILE", other, 1), 0);
	assert_int_equal(cli_imprint_claim(body, sizeof(body), &claim, why, sizeof(why)), 0);
	assert_int_equal(ky_imprint_claim_verify(pub2, claim, body, sizeof(body)), 0);
	free(claim);
	claim = NULL;
	imprint_reset();
	assert_int_equal(setenv("KYOK_IMPRINT_CREDENTIAL_FILE", "/nonexistent/cred.pem", 1), 0);
	assert_int_equal(cli_imprint_require(why, sizeof(why)), KY_ERR_NOT_FOUND);
	assert_non_null(strstr(why, "KYOK_IMPRINT_CREDENTIAL_FILE"));

	/* --imprint-credential before both */
	imprint_reset();
	assert_int_equal(cli_common_opt(CLI_IMPRINT_OPT, indir), 0);
	assert_int_equal(cli_imprint_require(why, sizeof(why)), 0);
	assert_string_equal(cli_imprint_path(), indir);
	/* not a credential: a text file */
	imprint_reset();
	write_file(other, "not a key\n");
	assert_int_equal(chmod(other, 0600), 0);
	assert_int_equal(cli_common_opt(CLI_IMPRINT_OPT, other), 0);
	assert_int_equal(cli_imprint_require(why, sizeof(why)), KY_ERR_MALFORMED);
	assert_non_null(strstr(why, "not an unencrypted Ed25519 private key"));
	/* a directory */
	imprint_reset();
	assert_int_equal(cli_common_opt(CLI_IMPRINT_OPT, dir), 0);
	assert_int_equal(cli_imprint_require(why, sizeof(why)), KY_ERR_IO);

	imprint_reset();
	assert_int_equal(unsetenv("KYOK_IMPRINT_CREDENTIAL_FILE"), 0);
	cli_g.instance_dir = NULL;
}

/* The card form of a key part file: the one good text, and a refusal for each way off. */
static const char card_part_good[] =
    "kyok-key-part: 1\n"
    "description: part of hana\n"
    "vp: 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
    "held-by: ep11-card\n"
    "kyok-card-zone: 0101010101010101010101010101010101010101010101010101010101010101\n"
    "kyok-card-device: 0202020202020202020202020202020202020202020202020202020202020202\n"
    "kyok-card-part: 85\n";

/* card_part_good with the first occurrence of from replaced by to. */
static int card_part_variant(const char *from, const char *to, struct cli_card_part *cp)
{
	char text[1024];
	const char *at = strstr(card_part_good, from);
	size_t head;

	assert_non_null(at);
	head = (size_t)(at - card_part_good);
	snprintf(text, sizeof(text), "%.*s%s%s", (int)head, card_part_good, to, at + strlen(from));
	return cli_card_part_parse(text, strlen(text), cp);
}

static void test_card_part_parse(void **state)
{
	struct cli_card_part cp;
	static const char *const bad[][2] = {
	    {"kyok-key-part: 1", "kyok-key-part: 2"},
	    {"description: part of hana", "description: "},
	    {"description: part of hana",
	     "description: 12345678901234567890123456789012345678901234567890123456789012345"},
	    {"description: part", "description: \tpart"},
	    {"vp: 00", "vp: 0"},
	    {"vp: 00112233445566778899aabb", "vp: 00112233445566778899AABB"},
	    {"held-by: ep11-card", "held-by: token"},
	    {"kyok-card-zone: 01", "kyok-card-zone: 0"},
	    {"kyok-card-device: 02", "kyok-card-device: 0g"},
	    {"kyok-card-part: 85", "kyok-card-part: 86"},
	    {"kyok-card-part: 85", "kyok-card-part: 0"},
	    {"kyok-card-part: 85", "kyok-card-part: 01"},
	    {"kyok-card-part: 85", "kyok-card-part: 8a"},
	    {"kyok-card-part: 85\n", "kyok-card-part: 85"},
	    {"kyok-card-part: 85\n", "kyok-card-part: 85\n\n"},
	    {"kyok-card-part: 85\n", "kyok-card-part: 85\nextra: 1\n"},
	    {"held-by: ep11-card\n", ""},
	    {"vp: ", "kdf: scrypt\nvp: "},
	};

	(void)state;
	assert_int_equal(cli_card_part_parse(card_part_good, strlen(card_part_good), &cp), 0);
	assert_string_equal(cp.description, "part of hana");
	assert_int_equal(cp.slot, 85);
	assert_int_equal(cp.vp[1], 0x11);
	assert_int_equal(cp.zone_id[31], 0x01);
	assert_int_equal(cp.device_id[0], 0x02);
	assert_int_equal(card_part_variant("85\n", "1\n", &cp), 0);
	assert_int_equal(cp.slot, 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(card_part_variant(bad[i][0], bad[i][1], &cp), KY_ERR_NOT_KEY_PART);
	/* a key part file is not the card form */
	assert_int_equal(cli_card_part_parse("kyok-key-part: 1\ndescription: x\n", 32, &cp),
	                 KY_ERR_NOT_KEY_PART);
}

/* The record written is the record read; it is never overwritten. */
static void test_card_part_write_read(void **state)
{
	char dir[] = "/tmp/kyok-test-cardpart.XXXXXX", path[64];
	struct cli_card_part cp, back;
	struct ky_keypart_info info;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.keypart", dir);
	assert_int_equal(cli_card_part_parse(card_part_good, strlen(card_part_good), &cp), 0);
	assert_int_equal(cli_card_part_write(path, &cp), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(cli_card_part_read(path, &back), 0);
	assert_memory_equal(&cp, &back, sizeof(cp));
	assert_int_equal(cli_card_part_info(path, &info), 0);
	assert_string_equal(info.description, "part of hana");
	assert_memory_equal(info.vp, cp.vp, KY_VP_LEN);
	assert_int_equal(ky_keypart_read_info(path, &info), KY_ERR_NOT_KEY_PART);
	assert_int_equal(cli_card_part_write(path, &cp), KY_ERR_EXISTS);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* The part VPs a unit reports after a load: each must be the chosen part's. */
static void test_part_vps_check(void **state)
{
	struct ky_keypart_info info[2];
	char hex0[2 * KY_VP_LEN + 1], hex1[2 * KY_VP_LEN + 1];
	json_t *vps;
	size_t bad = 0;

	(void)state;
	memset(info, 0, sizeof(info));
	memset(info[0].vp, 0x11, KY_VP_LEN);
	memset(info[1].vp, 0x22, KY_VP_LEN);
	ky_hex_encode(info[0].vp, KY_VP_LEN, hex0);
	ky_hex_encode(info[1].vp, KY_VP_LEN, hex1);
	vps = json_pack("[s, s]", hex0, hex1);
	assert_int_equal(cli_part_vps_check(vps, info, 2, &bad), 0);
	assert_int_equal(bad, 2);
	json_decref(vps);
	vps = json_pack("[s, s]", hex0, hex0); /* part 2 is not the chosen one */
	assert_int_equal(cli_part_vps_check(vps, info, 2, &bad), KY_ERR_VP_MISMATCH);
	assert_int_equal(bad, 1);
	json_decref(vps);
	vps = json_pack("[s, s]", hex1, hex0); /* in another order */
	assert_int_equal(cli_part_vps_check(vps, info, 2, &bad), KY_ERR_VP_MISMATCH);
	assert_int_equal(bad, 0);
	json_decref(vps);
	vps = json_pack("[s]", hex0); /* one VP for two parts */
	assert_int_equal(cli_part_vps_check(vps, info, 2, &bad), KY_ERR_VP_MISMATCH);
	assert_int_equal(bad, 2);
	json_decref(vps);
	vps = json_pack("[s, i]", hex0, 1); /* not a VP */
	assert_int_equal(cli_part_vps_check(vps, info, 2, &bad), KY_ERR_VP_MISMATCH);
	assert_int_equal(bad, 1);
	json_decref(vps);
	assert_int_equal(cli_part_vps_check(NULL, info, 2, &bad), KY_ERR_VP_MISMATCH);
	assert_int_equal(bad, 2);
}

/* ---- command bundles (cli/tke_bundle.c) ---- */

/* A bundle's text with the PEM of der (n blocks of it), comments before each. */
static void bundle_text(const struct ky_buf *der, int n, struct ky_buf *out)
{
	struct tke_bundle b = {0};
	char path[400];

	b.cmds = calloc((size_t)n, sizeof(*b.cmds));
	assert_non_null(b.cmds);
	for (int i = 0; i < n; i++) {
		assert_int_equal(ky_buf_append_str(&b.cmds[i].comments, "# kyok command: x\n"), 0);
		assert_int_equal(ky_buf_append(&b.cmds[i].der, der->data, der->len), 0);
	}
	b.n = (size_t)n;
	snprintf(path, sizeof(path), "%s/b-%d.bundle", tmpdir, n);
	unlink(path);
	assert_int_equal(tke_bundle_write(path, &b, false), 0);
	assert_int_equal(tke_bundle_write(path, &b, false), KY_ERR_EXISTS); /* never replaced */
	tke_bundle_release(&b);
	assert_int_equal(ky_file_read(path, TKE_BUNDLE_MAX, out), 0);
}

static int bundle_parse_str(const char *text, struct tke_bundle *b, char *why, size_t whylen)
{
	return tke_bundle_parse(text, strlen(text), b, why, whylen);
}

static void test_bundle_parse(void **state)
{
	struct ky_buf der = {0}, text = {0};
	struct tke_bundle b = {0};
	char why[256], *t, *begin, *crlf;
	size_t k = 0;

	(void)state;
	assert_int_equal(ky_cms_unsigned("hello", 5, &der), 0);
	bundle_text(&der, 2, &text);
	assert_int_equal(tke_bundle_parse((const char *)text.data, text.len, &b, why, sizeof(why)),
	                 0);
	assert_int_equal(b.n, 2);
	for (size_t i = 0; i < b.n; i++) {
		assert_int_equal(b.cmds[i].der.len, der.len);
		assert_memory_equal(b.cmds[i].der.data, der.data, der.len);
		/* the "# signers:" line is written from the block, never read back */
		assert_null(
		    memmem(b.cmds[i].comments.data, b.cmds[i].comments.len, "# signers:", 10));
	}
	tke_bundle_release(&b);

	/* The same text with CRLF line ends parses the same. */
	t = calloc(2 * text.len + 1, 1);
	assert_non_null(t);
	for (size_t i = 0; i < text.len; i++) {
		if (text.data[i] == '\n')
			t[k++] = '\r';
		t[k++] = (char)text.data[i];
	}
	assert_int_equal(tke_bundle_parse(t, k, &b, why, sizeof(why)), 0);
	assert_int_equal(b.n, 2);
	tke_bundle_release(&b);
	crlf = t;

	/* Refusals, each with the line it found the fault on. */
	assert_int_equal(bundle_parse_str("", &b, why, sizeof(why)), KY_ERR_NOT_COMMAND);
	assert_non_null(strstr(why, "no '-----BEGIN CMS-----' block"));
	assert_int_equal(b.n, 0);
	assert_int_equal(bundle_parse_str("# only a comment\n", &b, why, sizeof(why)),
	                 KY_ERR_NOT_COMMAND);
	assert_int_equal(bundle_parse_str("# c\nhello\n", &b, why, sizeof(why)),
	                 KY_ERR_NOT_COMMAND);
	assert_non_null(strstr(why, "line 2: unexpected text outside a command block"));
	assert_int_equal(bundle_parse_str("# c\n-----BEGIN CMS-----\nAAAA\n", &b, why, sizeof(why)),
	                 KY_ERR_NOT_COMMAND);
	assert_non_null(strstr(why, "line 2: command block has no END line"));
	assert_int_equal(bundle_parse_str("-----BEGIN CMS-----\n!!!!\n-----END CMS-----\n", &b, why,
	                                  sizeof(why)),
	                 KY_ERR_NOT_COMMAND);
	assert_non_null(strstr(why, "line 1: the block is not valid PEM"));
	assert_int_equal(b.n, 0); /* nothing kept of a refused bundle */
	assert_int_equal(bundle_parse_str("-----BEGIN CERTIFICATE-----\nAAAA\n-----END "
	                                  "CERTIFICATE-----\n",
	                                  &b, why, sizeof(why)),
	                 KY_ERR_NOT_COMMAND);
	assert_int_equal(
	    bundle_parse_str("-----BEGIN CMS-----\n-----END CMS-----\n", &b, why, sizeof(why)),
	    KY_ERR_NOT_COMMAND); /* empty block */
	/* A NUL byte anywhere: binary data, refused. */
	assert_int_equal(ky_buf_append(&text, "", 1), 0); /* NUL-terminated for strstr */
	text.len--;
	begin = strstr((char *)text.data, "-----BEGIN CMS-----");
	assert_non_null(begin);
	begin[25] = '\0';
	assert_int_equal(tke_bundle_parse((const char *)text.data, text.len, &b, why, sizeof(why)),
	                 KY_ERR_NOT_COMMAND);
	assert_non_null(strstr(why, "binary data"));
	/* Truncated anywhere inside the second block: refused, never one block of two. */
	begin[25] = 'A';
	begin = strstr(begin + 1, "-----BEGIN CMS-----");
	assert_non_null(begin);
	for (size_t cut = (size_t)(begin - (char *)text.data) + 1; cut < text.len - 2; cut += 7)
		assert_int_not_equal(
		    tke_bundle_parse((const char *)text.data, cut, &b, why, sizeof(why)), 0);
	free(crlf);
	ky_buf_free(&text);
	ky_buf_free(&der);
}

/* ---- kyok kp's verb table: lookup in both spellings, edit distance, did you mean ---- */

static int verb_run(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static const struct kp_verb test_verbs[] = {
    {"keys", "keys", verb_run, "list keys"},
    {"key-create", "key create", verb_run, "create a key"},
    {"wrap", "key wrap", verb_run, "wrap"},
    {"instance-policies", "instance policies", verb_run, "instance policies"},
    {"deep-verb", "key policy-update rotation", verb_run, "three words"},
    {NULL, NULL, NULL, NULL},
};

/* kp_verb_find on a NULL-terminated list of words; *used set. */
static const struct kp_verb *find_words(int *used, const char *w0, ...)
{
	char *words[8];
	int n = 0;
	va_list ap;

	words[n++] = (char *)w0;
	va_start(ap, w0);
	while (n < 8 && (words[n] = va_arg(ap, char *)) != NULL)
		n++;
	va_end(ap);
	return kp_verb_find(test_verbs, n, words, used);
}

static void test_kp_verb_find(void **state)
{
	int used = -1;

	(void)state;
	/* both spellings, one row */
	assert_ptr_equal(find_words(&used, "key", "create", "NAME", NULL), &test_verbs[1]);
	assert_int_equal(used, 2);
	assert_ptr_equal(find_words(&used, "key-create", "--name", "x", NULL), &test_verbs[1]);
	assert_int_equal(used, 1);
	assert_ptr_equal(find_words(&used, "wrap", "ID", NULL), &test_verbs[2]);
	assert_int_equal(used, 1);
	assert_ptr_equal(find_words(&used, "key", "wrap", "ID", NULL), &test_verbs[2]);
	assert_int_equal(used, 2);
	assert_ptr_equal(find_words(&used, "keys", NULL), &test_verbs[0]);
	assert_int_equal(used, 1);
	assert_ptr_equal(find_words(&used, "key", "policy-update", "rotation", "ID", NULL),
	                 &test_verbs[4]);
	assert_int_equal(used, 3);
	assert_ptr_equal(find_words(&used, "instance", "policies", "-o", "json", NULL),
	                 &test_verbs[3]);
	assert_int_equal(used, 2);
	/* a group alone, an incomplete spelling, options, case, unknown words: no row */
	assert_null(find_words(&used, "key", NULL));
	assert_int_equal(used, 0);
	assert_null(find_words(&used, "key", "policy-update", NULL));
	assert_null(find_words(&used, "key", "--help", NULL));
	assert_null(find_words(&used, "key", "-i", "create", NULL));
	assert_null(find_words(&used, "-i", "x", "keys", NULL));
	assert_null(find_words(&used, "key", "Create", NULL));
	assert_null(find_words(&used, "create", NULL));
	assert_null(find_words(&used, "key create", NULL)); /* one argument with a space */
	assert_null(kp_verb_find(test_verbs, 0, NULL, &used));
	/* groups: the first word of a spelling of 2 or more words */
	assert_true(kp_verb_is_group(test_verbs, "key"));
	assert_true(kp_verb_is_group(test_verbs, "instance"));
	assert_false(kp_verb_is_group(test_verbs, "keys"));
	assert_false(kp_verb_is_group(test_verbs, "wrap"));
	assert_false(kp_verb_is_group(test_verbs, "key-create"));
}

static void test_kp_edit_distance(void **state)
{
	char long_word[KP_VERB_WORD_MAX + 2];

	(void)state;
	assert_int_equal(kp_edit_distance("", ""), 0);
	assert_int_equal(kp_edit_distance("key", "key"), 0);
	assert_int_equal(kp_edit_distance("kye", "key"), 1);       /* a transposition */
	assert_int_equal(kp_edit_distance("craete", "create"), 1); /* a transposition */
	assert_int_equal(kp_edit_distance("creat", "create"), 1);  /* a deletion */
	assert_int_equal(kp_edit_distance("keys", "key"), 1);      /* an insertion */
	assert_int_equal(kp_edit_distance("wrop", "wrap"), 1);     /* a substitution */
	assert_int_equal(kp_edit_distance("kyes", "key"), 2);
	assert_int_equal(kp_edit_distance("abc", "xyz"), 3);
	assert_int_equal(kp_edit_distance("", "abc"), 3);
	assert_int_equal(kp_edit_distance("key-create", "create-key"), 8);
	assert_int_equal(kp_edit_distance("ab", "ba"), kp_edit_distance("ba", "ab"));
	memset(long_word, 'k', sizeof(long_word) - 1);
	long_word[sizeof(long_word) - 1] = '\0';
	assert_true(kp_edit_distance(long_word, "key") == SIZE_MAX);
	assert_true(kp_edit_distance("key", long_word) == SIZE_MAX);
	long_word[KP_VERB_WORD_MAX] = '\0'; /* 64 bytes: still measured */
	assert_int_equal(kp_edit_distance(long_word, long_word), 0);
}

/* kp_verb_suggest on words; the suggestion, or "" for none. */
static const char *suggest(const char *w0, const char *w1)
{
	static char out[160];
	char *words[2] = {(char *)w0, (char *)w1};

	if (!kp_verb_suggest(test_verbs, w1 != NULL ? 2 : 1, words, out, sizeof(out)))
		out[0] = '\0';
	return out;
}

static void test_kp_verb_suggest(void **state)
{
	char small[4];
	char *words[1] = {(char *)"kye"};

	(void)state;
	/* the first level, completed by the next word when that makes a command */
	assert_string_equal(suggest("kye", "create"), "key create");
	assert_string_equal(suggest("kye", NULL), "key");
	assert_string_equal(suggest("kye", "nothing"), "key");
	assert_string_equal(suggest("kye", "--help"), "key");
	assert_string_equal(suggest("instanse", "policies"), "instance policies");
	/* kyok's spelling */
	assert_string_equal(suggest("key-craete", NULL), "key-create");
	assert_string_equal(suggest("wrpa", "ID"), "wrap");
	assert_string_equal(suggest("kyes", NULL), "keys");
	/* the second level: a verb of the group */
	assert_string_equal(suggest("key", "craete"), "key create");
	assert_string_equal(suggest("key", "wrpa"), "key wrap");
	assert_string_equal(suggest("instance", "polices"), "instance policies");
	/* too far, or as far as the word is long: nothing */
	assert_string_equal(suggest("frobnicate", NULL), "");
	assert_string_equal(suggest("key", "frobnicate"), "");
	assert_string_equal(suggest("x", NULL), "");
	assert_string_equal(suggest("ab", NULL), "");
	/* the output is cut to its buffer, never overrun */
	assert_true(kp_verb_suggest(test_verbs, 1, words, small, sizeof(small)));
	assert_string_equal(small, "key");
}

static void test_kp_verbs_usage(void **state)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	(void)state;
	assert_non_null(f = open_memstream(&text, &len));
	kp_verbs_usage(f, test_verbs, NULL);
	assert_int_equal(fclose(f), 0);
	/* every row, both spellings, the flat name first on its line */
	assert_non_null(
	    strstr(text, "\n  key-create         key create                  create a key\n"));
	assert_non_null(strstr(text, "\n  instance-policies  instance policies           instance "
	                             "policies\n"));
	free(text);
	assert_non_null(f = open_memstream(&text, &len));
	kp_verbs_usage(f, test_verbs, "key");
	assert_int_equal(fclose(f), 0);
	/* the group's rows only */
	assert_non_null(strstr(text, "usage: kyok kp key <command>"));
	assert_non_null(strstr(text, "\n  create                  key-create  create a key\n"));
	assert_non_null(strstr(text, "\n  policy-update rotation  deep-verb   three words\n"));
	assert_null(strstr(text, "instance"));
	assert_null(strstr(text, "list keys"));
	free(text);
}

/* ---- option tables (cli/opts.c) ---- */

enum { TOPT_SIGKEY = 0x2001, TOPT_QUIET };
static const struct cli_opt test_opts[] = {
    {"sigkey", TOPT_SIGKEY, CLI_ARG_REQUIRED, "N", "the signature key to install"},
    {"limit", 'n', CLI_ARG_REQUIRED, "N", "at most N keys"},
    {"number-of-keys", 'n', CLI_ARG_REQUIRED, NULL, NULL}, /* another spelling */
    CLI_OPT_TEXT("\nA paragraph between groups.\n\n"),
    {"force", 'f', CLI_ARG_NONE, NULL, "no question asked"},
    {NULL, 'k', CLI_ARG_REQUIRED, "KEY", "a short option only"},
    {"quiet", TOPT_QUIET, CLI_ARG_NONE, NULL, NULL}, /* accepted, not listed */
    CLI_OPT_END};
static const struct cli_opt test_common[] = {{"yes", 0x1004, CLI_ARG_NONE, NULL, "answer yes"},
                                             {"help", 'h', CLI_ARG_NONE, NULL, "this text"},
                                             CLI_OPT_END};

static void test_opts_build(void **state)
{
	struct option longs[16];
	char shorts[16];

	(void)state;
	assert_int_equal(cli_opts_build(test_opts, test_common, longs, 16, shorts, 16), 0);
	/* one short letter per option, ':' after those that take a value, in table order */
	assert_string_equal(shorts, "n:fk:h");
	assert_string_equal(longs[0].name, "sigkey");
	assert_int_equal(longs[0].has_arg, required_argument);
	assert_int_equal(longs[0].val, TOPT_SIGKEY);
	assert_null(longs[0].flag);
	assert_string_equal(longs[1].name, "limit");
	assert_int_equal(longs[1].val, 'n');
	assert_string_equal(longs[2].name, "number-of-keys");
	assert_int_equal(longs[2].val, 'n');
	assert_string_equal(longs[3].name, "force");
	assert_int_equal(longs[3].has_arg, no_argument);
	assert_string_equal(longs[4].name, "quiet"); /* the short-only row has no long entry */
	assert_string_equal(longs[5].name, "yes");
	assert_int_equal(longs[5].val, 0x1004);
	assert_string_equal(longs[6].name, "help");
	assert_int_equal(longs[6].val, 'h');
	assert_null(longs[7].name);
	assert_int_equal(longs[7].val, 0);
	/* no command table: the common options alone */
	assert_int_equal(cli_opts_build(NULL, test_common, longs, 16, shorts, 16), 0);
	assert_string_equal(shorts, "h");
	assert_string_equal(longs[0].name, "yes");
	assert_null(longs[2].name);
	/* the real common table builds, and fits the room cli_getopt has */
	{
		struct option big[CLI_OPTS_MAX + 1];
		char bigs[CLI_OPTS_SHORT_MAX];
		assert_int_equal(cli_opts_build(test_opts, cli_common_opts, big, CLI_OPTS_MAX + 1,
		                                bigs, sizeof(bigs)),
		                 0);
		assert_string_equal(bigs, "n:fk:h");
	}
}

static void test_opts_build_refused(void **state)
{
	struct option longs[16];
	char shorts[16];
	const struct cli_opt twice[] = {{"force", 0x2001, CLI_ARG_NONE, NULL, "a"},
	                                {"force", 0x2002, CLI_ARG_NONE, NULL, "b"},
	                                CLI_OPT_END};
	const struct cli_opt letter_args[] = {{"limit", 'n', CLI_ARG_REQUIRED, "N", "a"},
	                                      {"no", 'n', CLI_ARG_NONE, NULL, "b"},
	                                      CLI_OPT_END};
	const struct cli_opt low_id[] = {{"odd", 0x7f, CLI_ARG_NONE, NULL, "a"}, CLI_OPT_END};
	const struct cli_opt colon[] = {{"colon", ':', CLI_ARG_NONE, NULL, "a"}, CLI_OPT_END};
	const struct cli_opt nameless[] = {{NULL, 0x2001, CLI_ARG_NONE, NULL, "a"}, CLI_OPT_END};
	const struct cli_opt empty[] = {{"", 0x2001, CLI_ARG_NONE, NULL, "a"}, CLI_OPT_END};

	(void)state;
	/* a long name twice, even across the two tables */
	assert_int_equal(cli_opts_build(twice, NULL, longs, 16, shorts, 16), KY_ERR_INTERNAL);
	assert_null(longs[0].name);
	assert_string_equal(shorts, "");
	assert_int_equal(cli_opts_build(test_common, test_common, longs, 16, shorts, 16),
	                 KY_ERR_INTERNAL);
	/* a short letter for two options, one with a value and one without */
	assert_int_equal(cli_opts_build(letter_args, NULL, longs, 16, shorts, 16), KY_ERR_INTERNAL);
	/* an id that is neither a letter for getopt nor a long-only value */
	assert_int_equal(cli_opts_build(low_id, NULL, longs, 16, shorts, 16), KY_ERR_INTERNAL);
	assert_int_equal(cli_opts_build(colon, NULL, longs, 16, shorts, 16), KY_ERR_INTERNAL);
	assert_int_equal(cli_opts_build(nameless, NULL, longs, 16, shorts, 16), KY_ERR_INTERNAL);
	assert_int_equal(cli_opts_build(empty, NULL, longs, 16, shorts, 16), KY_ERR_INTERNAL);
	/* no room: the long array needs its end row, the short string its NUL */
	assert_int_equal(cli_opts_build(test_opts, test_common, longs, 7, shorts, 16),
	                 KY_ERR_INTERNAL);
	assert_int_equal(cli_opts_build(test_opts, test_common, longs, 8, shorts, 16), 0);
	assert_int_equal(cli_opts_build(test_opts, test_common, longs, 16, shorts, 6),
	                 KY_ERR_INTERNAL);
}

static void test_opts_help(void **state)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	const struct cli_opt wrap[] = {
	    {"imprint-credential", 0x2001, CLI_ARG_REQUIRED, "FILE",
	     "the instance's imprint credential, which a unit in imprint mode demands (default: "
	     "$KYOK_IMPRINT_CREDENTIAL_FILE, else imprint-credential.pem in the instance "
	     "directory)"},
	    {"output", 'o', CLI_ARG_REQUIRED, "table|json", "output format (default table)"},
	    {"ab", 0x2002, CLI_ARG_NONE, NULL,
	     "first line\nsecond line, "
	     "a_word_far_longer_than_the_room_a_line_has_for_help_text_which_gets_its_own_line "
	     "end"},
	    CLI_OPT_END};

	(void)state;
	assert_non_null(f = open_memstream(&text, &len));
	cli_opts_help(f, "usage: kyok test [options]\n\noptions:\n", test_opts, test_common);
	assert_int_equal(fclose(f), 0);
	assert_string_equal(text, "usage: kyok test [options]\n\noptions:\n"
	                          "  --sigkey N              the signature key to install\n"
	                          "  -n, --limit N           at most N keys\n"
	                          "\nA paragraph between groups.\n\n"
	                          "  -f, --force             no question asked\n"
	                          "  -k KEY                  a short option only\n"
	                          "\ncommon options:\n"
	                          "  --yes                   answer yes\n"
	                          "  -h, --help              this text\n");
	free(text);
	/* wrapped at CLI_OPTS_WIDTH, continuation lines from the help column; a name that
	 * reaches the column gets a line of its own; "-o, --output table|json" (23 characters)
	 * still fits before it */
	assert_non_null(f = open_memstream(&text, &len));
	cli_opts_help(f, "", wrap, NULL);
	assert_int_equal(fclose(f), 0);
	assert_string_equal(
	    text,
	    "  --imprint-credential FILE\n"
	    "                          the instance's imprint credential, which a unit in imprint\n"
	    "                          mode demands (default: $KYOK_IMPRINT_CREDENTIAL_FILE, else\n"
	    "                          imprint-credential.pem in the instance directory)\n"
	    "  -o, --output table|json output format (default table)\n"
	    "  --ab                    first line\n"
	    "                          second line,\n"
	    "                          "
	    "a_word_far_longer_than_the_room_a_line_has_for_help_text_which_gets_its_own_line\n"
	    "                          end\n");
	for (char *p = text, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1)
		if (strncmp(p, "                          a_word", 32) != 0)
			assert_true(nl - p <= CLI_OPTS_WIDTH);
	free(text);
}

static void test_opts_getopt(void **state)
{
	char a0[] = "test", a1[] = "-n", a2[] = "5", a3[] = "--sigkey=2", a4[] = "--number-of-keys",
	     a5[] = "7", a6[] = "-fk", a7[] = "K", a8[] = "--quiet", a9[] = "operand";
	char *argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, NULL};
	char m0[] = "test", m1[] = "--sigkey";
	char *missing[] = {m0, m1, NULL};
	char s0[] = "test", s1[] = "-k";
	char *missing_short[] = {s0, s1, NULL};
	char u0[] = "test", u1[] = "--nope";
	char *unknown[] = {u0, u1, NULL};

	(void)state;
	optind = 0;
	opterr = 0;
	assert_int_equal(cli_getopt(10, argv, test_opts, test_common), 'n');
	assert_string_equal(optarg, "5");
	assert_int_equal(cli_getopt(10, argv, test_opts, test_common), TOPT_SIGKEY);
	assert_string_equal(optarg, "2");
	assert_int_equal(cli_getopt(10, argv, test_opts, test_common), 'n');
	assert_string_equal(optarg, "7");
	assert_int_equal(cli_getopt(10, argv, test_opts, test_common), 'f');
	assert_int_equal(cli_getopt(10, argv, test_opts, test_common), 'k');
	assert_string_equal(optarg, "K");
	assert_int_equal(cli_getopt(10, argv, test_opts, test_common), TOPT_QUIET);
	assert_int_equal(cli_getopt(10, argv, test_opts, test_common), -1);
	assert_int_equal(optind, 9);
	/* a required argument missing, long and short: '?', which cli_common_opt reports */
	optind = 0;
	assert_int_equal(cli_getopt(2, missing, test_opts, test_common), '?');
	cli_cmd_argv = missing;
	assert_int_equal(cli_common_opt('?', NULL), KY_ERR_USAGE);
	cli_cmd_argv = NULL;
	optind = 0;
	assert_int_equal(cli_getopt(2, missing_short, test_opts, test_common), '?');
	optind = 0;
	assert_int_equal(cli_getopt(2, unknown, test_opts, test_common), '?');
	/* the common table alone: --sigkey is unknown there */
	optind = 0;
	assert_int_equal(cli_getopt(2, missing, NULL, cli_common_opts), '?');
	optind = 0;
}

/* ---- kp_seal: the client's side of secure import ---- */

/* A PEM public key of pk, NUL-terminated, in buf. */
static size_t seal_pem(EVP_PKEY *pk, char *buf, size_t cap)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *p = NULL;
	long n;

	assert_non_null(bio);
	assert_int_equal(PEM_write_bio_PUBKEY(bio, pk), 1);
	n = BIO_get_mem_data(bio, &p);
	assert_true(n > 0 && (size_t)n < cap);
	memcpy(buf, p, (size_t)n);
	buf[n] = '\0';
	BIO_free(bio);
	return (size_t)n;
}

/* RSAES-OAEP decryption with md for the OAEP hash and MGF1: what a unit does. */
static int seal_oaep_open(EVP_PKEY *pk, const char *md, const uint8_t *ct, size_t ctlen,
                          uint8_t *out, size_t *outlen)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
	int ok;

	assert_non_null(ctx);
	ok = EVP_PKEY_decrypt_init(ctx) == 1 &&
	     EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1 &&
	     EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, md, NULL) == 1 &&
	     EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, md, NULL) == 1 &&
	     EVP_PKEY_decrypt(ctx, out, outlen, ct, ctlen) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok ? 0 : -1;
}

static void test_kp_seal_key(void **state)
{
	EVP_PKEY *pk = EVP_RSA_gen(2048), *small = EVP_RSA_gen(1024);
	EVP_PKEY *ec = EVP_EC_gen("P-256");
	char pem[4096], other[4096];
	size_t pemlen, n = 0, outlen;
	uint8_t key[32], ct[KP_SEAL_CIPHER_MAX], out[512];

	(void)state;
	assert_non_null(pk);
	assert_non_null(small);
	assert_non_null(ec);
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7 + 1);
	pemlen = seal_pem(pk, pem, sizeof(pem));
	/* SHA-256 (the default): opens with SHA-256, not with SHA-1 */
	for (size_t klen = 16; klen <= 32; klen += 8) {
		assert_int_equal(
		    kp_seal_key((const uint8_t *)pem, pemlen, key, klen, 0, ct, sizeof(ct), &n), 0);
		assert_int_equal(n, 256);
		outlen = sizeof(out);
		assert_int_equal(seal_oaep_open(pk, "SHA256", ct, n, out, &outlen), 0);
		assert_int_equal(outlen, klen);
		assert_memory_equal(out, key, klen);
		outlen = sizeof(out);
		assert_int_equal(seal_oaep_open(pk, "SHA1", ct, n, out, &outlen), -1);
	}
	/* SHA-1 when asked */
	assert_int_equal(kp_seal_key((const uint8_t *)pem, pemlen, key, 24, 1, ct, sizeof(ct), &n),
	                 0);
	outlen = sizeof(out);
	assert_int_equal(seal_oaep_open(pk, "SHA1", ct, n, out, &outlen), 0);
	assert_int_equal(outlen, 24);
	assert_memory_equal(out, key, 24);
	/* two encryptions differ (OAEP is randomised) */
	{
		uint8_t ct2[KP_SEAL_CIPHER_MAX];
		size_t n2 = 0;
		assert_int_equal(
		    kp_seal_key((const uint8_t *)pem, pemlen, key, 32, 0, ct, sizeof(ct), &n), 0);
		assert_int_equal(
		    kp_seal_key((const uint8_t *)pem, pemlen, key, 32, 0, ct2, sizeof(ct2), &n2),
		    0);
		assert_int_equal(n, n2);
		assert_true(memcmp(ct, ct2, n) != 0);
	}
	/* refusals: key lengths, public keys that are not an import token's */
	assert_int_equal(kp_seal_key((const uint8_t *)pem, pemlen, key, 15, 0, ct, sizeof(ct), &n),
	                 KY_ERR_KEY_MATERIAL);
	assert_int_equal(kp_seal_key((const uint8_t *)pem, pemlen, key, 0, 0, ct, sizeof(ct), &n),
	                 KY_ERR_KEY_MATERIAL);
	assert_int_equal(kp_seal_key((const uint8_t *)pem, pemlen, key, 33, 0, ct, sizeof(ct), &n),
	                 KY_ERR_KEY_MATERIAL);
	assert_int_equal(
	    kp_seal_key((const uint8_t *)"not a key", 9, key, 32, 0, ct, sizeof(ct), &n),
	    KY_ERR_KP_IMPORT_PUBKEY);
	assert_int_equal(kp_seal_key((const uint8_t *)pem, 0, key, 32, 0, ct, sizeof(ct), &n),
	                 KY_ERR_KP_IMPORT_PUBKEY);
	assert_int_equal(
	    kp_seal_key((const uint8_t *)pem, pemlen / 2, key, 32, 0, ct, sizeof(ct), &n),
	    KY_ERR_KP_IMPORT_PUBKEY);
	n = seal_pem(small, other, sizeof(other));
	assert_int_equal(kp_seal_key((const uint8_t *)other, n, key, 32, 0, ct, sizeof(ct), &n),
	                 KY_ERR_KP_IMPORT_PUBKEY);
	n = seal_pem(ec, other, sizeof(other));
	assert_int_equal(kp_seal_key((const uint8_t *)other, n, key, 32, 0, ct, sizeof(ct), &n),
	                 KY_ERR_KP_IMPORT_PUBKEY);
	EVP_PKEY_free(pk);
	EVP_PKEY_free(small);
	EVP_PKEY_free(ec);
}

/* AES-GCM decryption of ct || tag under key and iv: what a unit does. */
static int seal_gcm_open(const uint8_t *key, size_t keylen, const uint8_t *iv, const uint8_t ct[28],
                         uint8_t pt[12])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	const EVP_CIPHER *c = keylen == 16   ? EVP_aes_128_gcm()
	                      : keylen == 24 ? EVP_aes_192_gcm()
	                                     : EVP_aes_256_gcm();
	uint8_t tag[16];
	int len = 0, fin = 0, ok;

	assert_non_null(ctx);
	memcpy(tag, ct + 12, sizeof(tag));
	ok = EVP_DecryptInit_ex2(ctx, c, NULL, NULL, NULL) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1 &&
	     EVP_DecryptInit_ex2(ctx, NULL, key, iv, NULL) == 1 &&
	     EVP_DecryptUpdate(ctx, pt, &len, ct, 12) == 1 && len == 12 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 &&
	     EVP_DecryptFinal_ex(ctx, pt + len, &fin) == 1;
	EVP_CIPHER_CTX_free(ctx);
	return ok ? 0 : -1;
}

static void test_kp_seal_nonce(void **state)
{
	uint8_t key[32], nonce[13], iv[12], iv2[12], out[28], pt[12];

	(void)state;
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(0xa0 ^ i);
	for (size_t i = 0; i < sizeof(nonce); i++)
		nonce[i] = (uint8_t)(i + 1);
	memset(iv, 0x5c, sizeof(iv));
	memcpy(iv2, iv, sizeof(iv2));
	iv2[11] ^= 1;
	for (size_t klen = 16; klen <= 32; klen += 8) {
		assert_int_equal(kp_seal_nonce(key, klen, nonce, 12, iv, out), 0);
		assert_int_equal(seal_gcm_open(key, klen, iv, out, pt), 0);
		assert_memory_equal(pt, nonce, 12);
		/* another IV, or another key, does not open it */
		assert_int_equal(seal_gcm_open(key, klen, iv2, out, pt), -1);
		key[0] ^= 1;
		assert_int_equal(seal_gcm_open(key, klen, iv, out, pt), -1);
		key[0] ^= 1;
	}
	/* a known answer: AES-256-GCM of this nonce under this key and IV, ciphertext || tag
	 * (computed apart from this code, with Python's cryptography package) */
	{
		static const uint8_t want[28] = {0x41, 0x52, 0x92, 0x36, 0x47, 0xc9, 0x79,
		                                 0x44, 0xb1, 0xe1, 0x49, 0xc3, 0x55, 0x98,
		                                 0x82, 0xeb, 0x7f, 0x57, 0x70, 0xb7, 0x21,
		                                 0xcd, 0x9b, 0x96, 0x25, 0xb3, 0x23, 0xe2};
		assert_int_equal(kp_seal_nonce(key, 32, nonce, 12, iv, out), 0);
		assert_memory_equal(out, want, sizeof(want));
	}
	assert_int_equal(kp_seal_nonce(key, 32, nonce, 11, iv, out), KY_ERR_KP_IMPORT_NONCE);
	assert_int_equal(kp_seal_nonce(key, 32, nonce, 13, iv, out), KY_ERR_KP_IMPORT_NONCE);
	assert_int_equal(kp_seal_nonce(key, 20, nonce, 12, iv, out), KY_ERR_KEY_MATERIAL);
	assert_int_equal(kp_seal_nonce(key, 0, nonce, 12, iv, out), KY_ERR_KEY_MATERIAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_parse_numbers),
	    cmocka_unit_test(test_password_files),
	    cmocka_unit_test(test_password_fd),
	    cmocka_unit_test(test_no_terminal),
	    cmocka_unit_test(test_common_opts),
	    cmocka_unit_test(test_instance_parse),
	    cmocka_unit_test(test_instance_load),
	    cmocka_unit_test(test_selection_parse),
	    cmocka_unit_test(test_selection_units),
	    cmocka_unit_test(test_known_units),
	    cmocka_unit_test(test_sigkeys_and_signers),
	    cmocka_unit_test(test_keyparts_list),
	    cmocka_unit_test(test_timeouts),
	    cmocka_unit_test(test_unit_order),
	    cmocka_unit_test(test_failures_parse),
	    cmocka_unit_test(test_failures_file),
	    cmocka_unit_test(test_request_safe),
	    cmocka_unit_test(test_imprint_credential),
	    cmocka_unit_test(test_token_keypart_parse),
	    cmocka_unit_test(test_card_part_parse),
	    cmocka_unit_test(test_card_part_write_read),
	    cmocka_unit_test(test_part_vps_check),
	    cmocka_unit_test(test_bundle_parse),
	    cmocka_unit_test(test_kp_verb_find),
	    cmocka_unit_test(test_kp_edit_distance),
	    cmocka_unit_test(test_kp_verb_suggest),
	    cmocka_unit_test(test_kp_verbs_usage),
	    cmocka_unit_test(test_opts_build),
	    cmocka_unit_test(test_opts_build_refused),
	    cmocka_unit_test(test_opts_help),
	    cmocka_unit_test(test_opts_getopt),
	    cmocka_unit_test(test_kp_seal_key),
	    cmocka_unit_test(test_kp_seal_nonce),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
