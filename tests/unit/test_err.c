/* The error table (include/kyok/err.h): every row is checked, so that a row added with a
 * duplicate slug, a wrong exit or HTTP status or a message out of the house style fails here
 * rather than in front of a user. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kyok/err.h"

/* The rows as written, for the checks that need the name too. */
struct row {
	const char *name;
	int code;
	const char *slug;
	int exitc;
	int http;
	const char *msg;
};
static const struct row rows[] = {
#define ROW(name, slug, exitc, http, msg) {#name, KY_ERR_##name, slug, exitc, http, msg},
    KY_ERRORS(ROW)
#undef ROW
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

static void test_codes_are_dense(void **state)
{
	(void)state;
	assert_int_equal(NROWS, KY_ERR__COUNT);
	for (size_t i = 0; i < NROWS; i++)
		assert_int_equal(rows[i].code, (int)i);
	assert_int_equal(KY_ERR_OK, 0);
	assert_string_equal(rows[0].slug, "ok");
}

static void test_slugs(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++) {
		const char *s = rows[i].slug;

		if (strlen(s) < 2 || !islower((unsigned char)s[0]) || s[strlen(s) - 1] == '-')
			fail_msg("%s: slug '%s' must start with a letter and not end with '-'",
			         rows[i].name, s);
		for (const char *p = s; *p != '\0'; p++)
			if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) ||
			      (*p == '-' && p[1] != '-')))
				fail_msg("%s: slug '%s' has '%c': only a-z, 0-9 and single '-'",
				         rows[i].name, s, *p);
		for (size_t j = 0; j < i; j++)
			if (strcmp(rows[j].slug, s) == 0)
				fail_msg("slug '%s' used by %s and %s", s, rows[j].name,
				         rows[i].name);
		assert_string_equal(ky_err_slug(rows[i].code), s);
		assert_int_equal(ky_err_from_slug(s), rows[i].code);
	}
	assert_int_equal(ky_err_from_slug("no-such-slug"), KY_ERR_INTERNAL);
	assert_int_equal(ky_err_from_slug(NULL), KY_ERR_INTERNAL);
}

static void test_exit_and_http(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++) {
		int e = rows[i].exitc, h = rows[i].http;

		if (rows[i].code == KY_ERR_OK) {
			assert_int_equal(e, 0);
			assert_int_equal(h, 200);
			continue;
		}
		if (e < KY_EXIT_INTERNAL || e > KY_EXIT_UNIT)
			fail_msg("%s: exit code %d is not one of KY_EXIT_*", rows[i].name, e);
		if (h < 400 || h > 599)
			fail_msg("%s: HTTP status %d is not an error status", rows[i].name, h);
		/* A usage error is the caller's: never a server error. */
		if (e == KY_EXIT_USAGE && h >= 500)
			fail_msg("%s: a usage error answered with %d", rows[i].name, h);
		assert_int_equal(ky_err_exit(rows[i].code), e);
		assert_int_equal(ky_err_http(rows[i].code), h);
	}
}

static void test_messages(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++) {
		const char *m = rows[i].msg;
		size_t n = strlen(m);

		if (n < 5)
			fail_msg("%s: message '%s' says nothing", rows[i].name, m);
		/* Lowercase (callers put a subject before it), no final full stop, no newline. */
		if (isupper((unsigned char)m[0]) && !(isupper((unsigned char)m[1])))
			fail_msg("%s: message '%s' must start in lowercase", rows[i].name, m);
		if (m[n - 1] == '.' || m[n - 1] == ' ')
			fail_msg("%s: message '%s' ends with '%c'", rows[i].name, m, m[n - 1]);
		if (strchr(m, '\n') != NULL)
			fail_msg("%s: message has a newline", rows[i].name);
		assert_string_equal(ky_err_message(rows[i].code), m);
	}
}

static void test_out_of_range(void **state)
{
	(void)state;
	assert_string_equal(ky_err_message(KY_ERR__COUNT), "unknown error");
	assert_string_equal(ky_err_message(-1), "unknown error");
	assert_string_equal(ky_err_slug(KY_ERR__COUNT + 7), "unknown");
	assert_int_equal(ky_err_exit(-3), KY_EXIT_INTERNAL);
	assert_int_equal(ky_err_http(KY_ERR__COUNT), 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codes_are_dense), cmocka_unit_test(test_slugs),
	    cmocka_unit_test(test_exit_and_http),   cmocka_unit_test(test_messages),
	    cmocka_unit_test(test_out_of_range),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
