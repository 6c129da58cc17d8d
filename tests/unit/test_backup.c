/* Unit tests of the backup manifest's parser (cli/backup_manifest.c): a manifest as kyok
 * backup writes it, and a negative case for every check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cli/backup_manifest.c"

#define VP1 "1111111111111111111111111111111111111111111111111111111111111111"
#define VP2 "2222222222222222222222222222222222222222222222222222222222222222"
#define PA  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define PB  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* A manifest as kyok backup writes it, with one field replaced: field "name": value (JSON),
 * or the whole text when name is NULL. */
static char text[4096];
static const char *manifest_with(const char *name, const char *value)
{
	struct {
		const char *name, *value;
	} fields[] = {
	    {"format", "\"kyok-backup-manifest-v1\""},
	    {"instance", "\"inst-1\""},
	    {"created", "\"2026-12-05T19:00:00Z\""},
	    {"file", "\"keys.backup\""},
	    {"sha256", "\"" SHA "\""},
	    {"size", "8192"},
	    {"schema", "\"1\""},
	    {"keys", "3"},
	    {"api_keys", "1"},
	    {"master_keys", "[{\"vp\": \"" VP1 "\", \"keys\": 2, \"secrets\": 3, \"register\": "
	                    "\"current\", \"part_vps\": [\"" PA "\", \"" PB "\"]}, {\"vp\": \"" VP2
	                    "\", \"keys\": 1, \"secrets\": 0}]"},
	    {"storage_digest", "{\"generation\": 42, \"epoch\": 1, \"records\": 7}"},
	};
	size_t len = 0;

	len += (size_t)snprintf(text + len, sizeof(text) - len, "{");
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const char *v = fields[i].value;
		if (name != NULL && strcmp(name, fields[i].name) == 0)
			v = value;
		if (v == NULL)
			continue; /* the field left out */
		len += (size_t)snprintf(text + len, sizeof(text) - len, "%s\"%s\": %s",
		                        len > 1 ? ", " : "", fields[i].name, v);
	}
	snprintf(text + len, sizeof(text) - len, "}");
	return text;
}

static void test_parse_good(void **state)
{
	struct backup_manifest m;
	char why[200] = "";
	const char *t = manifest_with(NULL, NULL);

	(void)state;
	assert_int_equal(backup_manifest_parse(t, strlen(t), &m, why, sizeof(why)), 0);
	assert_string_equal(m.instance, "inst-1");
	assert_string_equal(m.created, "2026-12-05T19:00:00Z");
	assert_string_equal(m.sha256, SHA);
	assert_int_equal(m.keys, 3);
	assert_int_equal(m.nvps, 2);
	assert_string_equal(m.vps[0].vp, VP1);
	assert_int_equal(m.vps[0].records, 5);
	assert_int_equal(m.vps[0].nparts, 2);
	assert_string_equal(m.vps[0].parts[1], PB);
	assert_int_equal(m.vps[1].nparts, 0);
	assert_true(m.has_digest);
	assert_int_equal(m.gen, 42);

	t = manifest_with("storage_digest", "null");
	assert_int_equal(backup_manifest_parse(t, strlen(t), &m, why, sizeof(why)), 0);
	assert_false(m.has_digest);
}

static void test_parse_refusals(void **state)
{
	static const struct {
		const char *field, *value, *why;
	} cases[] = {
	    {"format", NULL, "'format'"},
	    {"format", "\"kyok-backup-manifest-v2\"", "'format'"},
	    {"instance", NULL, "'instance'"},
	    {"instance", "\"\"", "'instance'"},
	    {"instance", "\"" SHA SHA "\"", "'instance'"}, /* longer than an id */
	    {"created", "12", "'created'"},
	    {"sha256", NULL, "'sha256'"},
	    {"sha256", "\"" VP1 "0\"", "'sha256'"}, /* 65 digits */
	    {"sha256", "\"0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\"",
	     "'sha256'"},
	    {"keys", "-1", "'keys'"},
	    {"keys", "\"3\"", "'keys'"},
	    {"master_keys", "{}", "'master_keys'"},
	    {"master_keys", "[{\"vp\": \"12\", \"keys\": 1, \"secrets\": 0}]", "master key 1"},
	    {"master_keys", "[{\"vp\": \"" VP1 "\", \"secrets\": 0}]", "master key 1"},
	    {"master_keys",
	     "[{\"vp\": \"" VP1 "\", \"keys\": 1, \"secrets\": 0, \"part_vps\": \"x\"}]",
	     "'part_vps'"},
	    {"master_keys",
	     "[{\"vp\": \"" VP1 "\", \"keys\": 1, \"secrets\": 0, \"part_vps\": [\"zz\"]}]",
	     "part VP 1"},
	    {"storage_digest", "{\"epoch\": 1}", "'generation'"},
	    {"storage_digest", "7", "'storage_digest'"},
	};
	struct backup_manifest m;
	char why[200];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *t = manifest_with(cases[i].field, cases[i].value);
		why[0] = '\0';
		assert_int_equal(backup_manifest_parse(t, strlen(t), &m, why, sizeof(why)),
		                 KY_ERR_MALFORMED);
		if (strstr(why, cases[i].why) == NULL)
			fail_msg("case %zu (%s): reason '%s' does not name %s", i, cases[i].field,
			         why, cases[i].why);
	}
	/* Not JSON, not an object, a field twice. */
	assert_int_equal(backup_manifest_parse("{", 1, &m, why, sizeof(why)), KY_ERR_MALFORMED);
	assert_non_null(strstr(why, "not JSON"));
	assert_int_equal(backup_manifest_parse("[]", 2, &m, why, sizeof(why)), KY_ERR_MALFORMED);
	assert_non_null(strstr(why, "not a JSON object"));
	{
		char twice[sizeof(text) + 64];
		const char *t = manifest_with(NULL, NULL);
		snprintf(twice, sizeof(twice), "{\"instance\": \"other\", %s", t + 1);
		assert_int_equal(backup_manifest_parse(twice, strlen(twice), &m, why, sizeof(why)),
		                 KY_ERR_MALFORMED);
	}
	/* More master keys than a storage holds, more parts than a key has. */
	{
		char many[4096] = "[";
		for (int k = 0; k <= BACKUP_MAX_VPS; k++)
			snprintf(many + strlen(many), sizeof(many) - strlen(many),
			         "%s{\"vp\": \"" VP1 "\", \"keys\": 1, \"secrets\": 0}",
			         k ? ", " : "");
		strcat(many, "]");
		const char *t = manifest_with("master_keys", many);
		assert_int_equal(backup_manifest_parse(t, strlen(t), &m, why, sizeof(why)),
		                 KY_ERR_MALFORMED);
		assert_non_null(strstr(why, "at most"));
	}
	{
		char parts[2048] =
		    "[{\"vp\": \"" VP1 "\", \"keys\": 1, \"secrets\": 0, \"part_vps\": [";
		for (int k = 0; k <= KY_MAX_PARTS; k++)
			snprintf(parts + strlen(parts), sizeof(parts) - strlen(parts),
			         "%s\"" PA "\"", k ? ", " : "");
		strcat(parts, "]}]");
		const char *t = manifest_with("master_keys", parts);
		assert_int_equal(backup_manifest_parse(t, strlen(t), &m, why, sizeof(why)),
		                 KY_ERR_MALFORMED);
		assert_non_null(strstr(why, "'part_vps'"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_good),
	    cmocka_unit_test(test_parse_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
