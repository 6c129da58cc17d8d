/* Finding the running instance: <dir>/instance.json, written by 'kyok up'. */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define CLI_INSTANCE_JSON_MAX (256 * 1024)
#define CLI_MAX_UNITS         (int)(sizeof(((struct cli_instance *)0)->units) / sizeof(struct cli_unit))

const char *cli_instance_dir(void)
{
	static char dir[512];
	const char *env, *home;

	if (cli_g.instance_dir != NULL)
		return cli_g.instance_dir;
	env = getenv("KYOK_INSTANCE");
	if (env != NULL && env[0] != '\0')
		return env;
	home = getenv("HOME");
	if (home == NULL || home[0] == '\0') {
		struct passwd *pw = getpwuid(getuid());
		home = pw != NULL ? pw->pw_dir : "/";
	}
	snprintf(dir, sizeof(dir), "%s/.kyok/instance", home);
	return dir;
}

static bool cli_url_ok(const char *s)
{
	size_t n = strlen(s);

	if (n >= sizeof(((struct cli_unit *)0)->url))
		return false;
	if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return false;
	return strlen(strstr(s, "://") + 3) > 0;
}

static int cli_unit_cmp(const void *a, const void *b)
{
	const struct cli_unit *x = a, *y = b;

	return (x->number > y->number) - (x->number < y->number);
}

int cli_instance_parse(const char *text, size_t n, struct cli_instance *inst, char *why,
                       size_t whylen)
{
	int r = KY_ERR_CONFIG;
	json_error_t jerr;
	json_t *root, *units, *u;
	const char *id;
	size_t i;

	root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		snprintf(why, whylen, "not JSON: line %d: %s", jerr.line, jerr.text);
		return r;
	}
	if (!json_is_object(root)) {
		snprintf(why, whylen, "not a JSON object");
		goto out;
	}
	id = json_string_value(json_object_get(root, "instance"));
	if (id == NULL || !ky_id_valid(id)) {
		snprintf(why, whylen, "'instance' must be 1 to %d characters of A-Z a-z 0-9 . _ -",
		         KY_ID_MAX);
		goto out;
	}
	units = json_object_get(root, "units");
	if (!json_is_array(units) || json_array_size(units) == 0 ||
	    json_array_size(units) > (size_t)CLI_MAX_UNITS) {
		snprintf(why, whylen, "'units' must be an array of 1 to %d units", CLI_MAX_UNITS);
		goto out;
	}
	snprintf(inst->id, sizeof(inst->id), "%s", id);
	inst->nunits = 0;
	json_array_foreach(units, i, u)
	{
		struct cli_unit *cu = &inst->units[i];
		json_t *num = json_object_get(u, "number");
		const char *uid = json_string_value(json_object_get(u, "id"));
		const char *zone = json_string_value(json_object_get(u, "zone"));
		const char *url = json_string_value(json_object_get(u, "url"));

		if (!json_is_object(u)) {
			snprintf(why, whylen, "unit %zu: not an object", i + 1);
			goto out;
		}
		if (!json_is_integer(num) || json_integer_value(num) < 1 ||
		    json_integer_value(num) > CLI_MAX_UNITS) {
			snprintf(why, whylen, "unit %zu: 'number' must be 1 to %d", i + 1,
			         CLI_MAX_UNITS);
			goto out;
		}
		if (uid == NULL || !ky_id_valid(uid)) {
			snprintf(why, whylen,
			         "unit %zu: 'id' must be 1 to %d characters of A-Z a-z "
			         "0-9 . _ -",
			         i + 1, KY_ID_MAX);
			goto out;
		}
		if (zone == NULL || !ky_id_valid(zone)) {
			snprintf(why, whylen,
			         "unit %zu: 'zone' must be 1 to %d characters of A-Z "
			         "a-z 0-9 . _ -",
			         i + 1, KY_ID_MAX);
			goto out;
		}
		if (url == NULL || !cli_url_ok(url)) {
			snprintf(why, whylen, "unit %zu: 'url' must be an http:// or https:// URL",
			         i + 1);
			goto out;
		}
		if (json_object_get(u, "remote") != NULL &&
		    !json_is_boolean(json_object_get(u, "remote"))) {
			snprintf(why, whylen, "unit %zu: 'remote' must be true or false", i + 1);
			goto out;
		}
		cu->remote = json_is_true(json_object_get(u, "remote"));
		cu->number = (int)json_integer_value(num);
		for (size_t k = 0; k < i; k++) {
			if (inst->units[k].number == cu->number) {
				snprintf(why, whylen, "unit number %d appears twice", cu->number);
				goto out;
			}
			if (strcmp(inst->units[k].id, uid) == 0) {
				snprintf(why, whylen, "unit id '%s' appears twice", uid);
				goto out;
			}
		}
		snprintf(cu->id, sizeof(cu->id), "%s", uid);
		snprintf(cu->zone, sizeof(cu->zone), "%s", zone);
		snprintf(cu->url, sizeof(cu->url), "%s", url);
		inst->nunits = i + 1;
	}
	qsort(inst->units, inst->nunits, sizeof(inst->units[0]), cli_unit_cmp);
	r = 0;
out:
	if (r != 0)
		inst->nunits = 0;
	json_decref(root);
	return r;
}

int cli_instance_load(struct cli_instance *inst)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	char path[600], why[256];
	const char *dir = cli_instance_dir();

	memset(inst, 0, sizeof(*inst));
	if (strlen(dir) >= sizeof(inst->dir)) {
		r = KY_ERR_USAGE;
		cli_fail(r, dir, "instance directory path too long");
		goto out;
	}
	snprintf(inst->dir, sizeof(inst->dir), "%s", dir);
	snprintf(path, sizeof(path), "%s/instance.json", dir);
	if ((r = ky_file_read(path, CLI_INSTANCE_JSON_MAX, &b)) != 0) {
		if (r == KY_ERR_NOT_FOUND) {
			r = KY_ERR_INSTANCE_DOWN;
			cli_fail(r, dir,
			         "no instance.json there: start one with 'kyok up', or point "
			         "--instance or KYOK_INSTANCE at its directory");
		} else {
			cli_fail(r, path, NULL);
		}
		goto out;
	}
	if ((r = cli_instance_parse((const char *)b.data, b.len, inst, why, sizeof(why))) != 0) {
		cli_fail(r, path, "%s", why);
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

const struct cli_unit *cli_instance_unit(const struct cli_instance *inst, int number)
{
	for (size_t i = 0; i < inst->nunits; i++)
		if (inst->units[i].number == number)
			return &inst->units[i];
	return NULL;
}
