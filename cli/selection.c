/* The TKE workspace's selection.json: the crypto units selected per instance and the
 * signature keys selected (cli/workspace.c holds the rest of the workspace). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define CLI_SELECTION_MAX (256 * 1024)
#define CLI_SEL_MAX_UNITS 16

/* Pure parser of selection.json:
 * {"<instance>": {"units": [numbers]}, ..., "sigkeys": ["<file>.sigkey", ...]} */
static int cli_selection_parse(const char *text, size_t n, json_t **out, char *why, size_t whylen)
{
	int r = KY_ERR_CONFIG;
	json_error_t jerr;
	json_t *root, *v;
	const char *key;

	*out = NULL;
	root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		snprintf(why, whylen, "not JSON: line %d: %s", jerr.line, jerr.text);
		return r;
	}
	if (!json_is_object(root)) {
		snprintf(why, whylen, "not a JSON object");
		goto out;
	}
	json_object_foreach(root, key, v)
	{
		size_t i;
		json_t *item, *units;

		if (strcmp(key, "sigkeys") == 0) {
			if (!json_is_array(v)) {
				snprintf(why, whylen, "'sigkeys' must be an array of file names");
				goto out;
			}
			json_array_foreach(v, i, item)
			{
				const char *f = json_string_value(item);
				if (f == NULL || !cli_file_name_ok(f, ".sigkey")) {
					snprintf(why, whylen,
					         "'sigkeys' item %zu must be a .sigkey file name",
					         i + 1);
					goto out;
				}
				for (size_t k = 0; k < i; k++)
					if (strcmp(json_string_value(json_array_get(v, k)), f) ==
					    0) {
						snprintf(why, whylen, "'sigkeys' names '%s' twice",
						         f);
						goto out;
					}
			}
			continue;
		}
		if (!ky_id_valid(key)) {
			snprintf(why, whylen, "'%.64s' is not an instance id", key);
			goto out;
		}
		units = json_object_get(v, "units");
		if (!json_is_object(v) || json_object_size(v) != 1 || !json_is_array(units)) {
			snprintf(why, whylen, "instance '%s': expected {\"units\": [numbers]}",
			         key);
			goto out;
		}
		json_array_foreach(units, i, item)
		{
			json_int_t num = json_integer_value(item);
			if (!json_is_integer(item) || num < 1 || num > CLI_SEL_MAX_UNITS) {
				snprintf(why, whylen, "instance '%s': unit numbers must be 1 to %d",
				         key, CLI_SEL_MAX_UNITS);
				goto out;
			}
			for (size_t k = 0; k < i; k++)
				if (json_integer_value(json_array_get(units, k)) == num) {
					snprintf(why, whylen,
					         "instance '%s': unit %d selected twice", key,
					         (int)num);
					goto out;
				}
		}
	}
	*out = root;
	root = NULL; /* transferred */
	r = 0;
out:
	json_decref(root);
	return r;
}

static void cli_selection_path(char *p, size_t n)
{
	snprintf(p, n, "%s/selection.json", cli_workspace());
}

/* Loads the selection (an empty object when there is none yet). Prints errors. */
int cli_selection_load(json_t **sel)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	char path[600], why[256];

	*sel = NULL;
	if ((r = cli_workspace_check()) != 0)
		goto out;
	cli_selection_path(path, sizeof(path));
	r = ky_file_read(path, CLI_SELECTION_MAX, &b);
	if (r == KY_ERR_NOT_FOUND) {
		if ((*sel = json_object()) == NULL) {
			r = KY_ERR_NOMEM;
			cli_fail(r, path, NULL);
			goto out;
		}
		r = 0;
		goto out;
	}
	if (r != 0) {
		cli_fail(r, path, NULL);
		goto out;
	}
	if ((r = cli_selection_parse((const char *)b.data, b.len, sel, why, sizeof(why))) != 0) {
		cli_fail(r, path, "%s: fix or delete the file", why);
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

static int cli_selection_save(json_t *sel)
{
	int r = KY_ERR_NOMEM;
	char path[600];
	char *text = NULL;

	cli_selection_path(path, sizeof(path));
	if ((r = cli_workspace_ensure()) != 0)
		return r;
	if ((text = json_dumps(sel, JSON_INDENT(2) | JSON_SORT_KEYS)) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, path, NULL);
		return r;
	}
	if ((r = ky_file_write_atomic(path, text, strlen(text), 0600)) != 0)
		cli_fail(r, path, "%s", strerror(errno));
	free(text);
	return r;
}

static int cli_int_cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

int cli_selection_units(const struct cli_instance *inst, int *numbers, size_t cap, size_t *n)
{
	int r = KY_ERR_INTERNAL;
	json_t *sel = NULL, *arr, *item;
	size_t count = 0, i;

	*n = 0;
	if ((r = cli_selection_load(&sel)) != 0)
		return r;
	arr = json_object_get(json_object_get(sel, inst->id), "units");
	json_array_foreach(arr, i, item)
	{
		int num = (int)json_integer_value(item);
		if (cli_instance_unit(inst, num) == NULL) {
			fprintf(stderr,
			        "warning: selected crypto unit %d is not part of instance %s: "
			        "ignored\n",
			        num, inst->id);
			continue;
		}
		if (count < cap)
			numbers[count++] = num;
	}
	qsort(numbers, count, sizeof(numbers[0]), cli_int_cmp);
	*n = count;
	json_decref(sel);
	return 0;
}

int cli_selected_units(const struct cli_instance *inst, struct cli_unit **units, size_t *n)
{
	int r = KY_ERR_INTERNAL;
	struct cli_unit *out = NULL;
	int numbers[CLI_SEL_MAX_UNITS];
	size_t count = 0;

	*units = NULL;
	*n = 0;
	if ((r = cli_selection_units(inst, numbers, CLI_SEL_MAX_UNITS, &count)) != 0)
		return r;
	if (count == 0) {
		r = KY_ERR_NO_UNITS;
		cli_fail(r, NULL, NULL);
		return r;
	}
	if ((out = calloc(count, sizeof(*out))) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		return r;
	}
	for (size_t i = 0; i < count; i++)
		out[i] = *cli_instance_unit(inst, numbers[i]);
	*units = out;
	*n = count;
	return 0;
}

int cli_selection_set_units(const struct cli_instance *inst, const int *numbers, size_t n)
{
	int r = KY_ERR_INTERNAL;
	json_t *sel = NULL, *arr = NULL, *entry = NULL;
	int sorted[CLI_SEL_MAX_UNITS];

	if (n > CLI_SEL_MAX_UNITS) {
		r = KY_ERR_USAGE;
		cli_fail(r, NULL, "at most %d crypto units", CLI_SEL_MAX_UNITS);
		return r;
	}
	if ((r = cli_selection_load(&sel)) != 0)
		goto out;
	if (n > 0) {
		memcpy(sorted, numbers, n * sizeof(*numbers));
		qsort(sorted, n, sizeof(sorted[0]), cli_int_cmp);
	}
	r = KY_ERR_NOMEM;
	if (n == 0) {
		json_object_del(sel, inst->id);
	} else {
		if ((arr = json_array()) == NULL || (entry = json_object()) == NULL)
			goto nomem;
		for (size_t i = 0; i < n; i++) {
			if (cli_instance_unit(inst, sorted[i]) == NULL) {
				r = KY_ERR_USAGE;
				cli_fail(r, NULL, "instance %s has no crypto unit %d", inst->id,
				         sorted[i]);
				goto out;
			}
			if (json_array_append_new(arr, json_integer(sorted[i])) != 0)
				goto nomem;
		}
		if (json_object_set_new(entry, "units", arr) != 0) {
			arr = NULL;
			goto nomem;
		}
		arr = NULL; /* transferred */
		if (json_object_set_new(sel, inst->id, entry) != 0) {
			entry = NULL;
			goto nomem;
		}
		entry = NULL; /* transferred */
	}
	r = cli_selection_save(sel);
	goto out;
nomem:
	cli_fail(r, NULL, NULL);
out:
	json_decref(arr);
	json_decref(entry);
	json_decref(sel);
	return r;
}

static const char *cli_base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s != NULL ? s + 1 : path;
}

int cli_selection_set_sigkeys(const char *const *paths, size_t n)
{
	int r = KY_ERR_INTERNAL;
	json_t *sel = NULL, *arr = NULL;

	if ((r = cli_selection_load(&sel)) != 0)
		goto out;
	r = KY_ERR_NOMEM;
	if ((arr = json_array()) == NULL)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		const char *f = cli_base_name(paths[i]);
		if (!cli_file_name_ok(f, ".sigkey")) {
			r = KY_ERR_USAGE;
			cli_fail(r, paths[i], "not a .sigkey file name");
			goto out;
		}
		for (size_t k = 0; k < i; k++)
			if (strcmp(cli_base_name(paths[k]), f) == 0) {
				r = KY_ERR_USAGE;
				cli_fail(r, paths[i], "signature key selected twice");
				goto out;
			}
		if (json_array_append_new(arr, json_string(f)) != 0)
			goto nomem;
	}
	if (json_object_set_new(sel, "sigkeys", arr) != 0) {
		arr = NULL;
		goto nomem;
	}
	arr = NULL; /* transferred */
	r = cli_selection_save(sel);
	goto out;
nomem:
	cli_fail(r, NULL, NULL);
out:
	json_decref(arr);
	json_decref(sel);
	return r;
}

int cli_selection_drop_sigkey(const char *path)
{
	int r = KY_ERR_INTERNAL;
	json_t *sel = NULL, *arr;
	const char *f = cli_base_name(path);

	if ((r = cli_selection_load(&sel)) != 0)
		return r;
	arr = json_object_get(sel, "sigkeys");
	for (size_t i = 0; i < json_array_size(arr); i++)
		if (strcmp(json_string_value(json_array_get(arr, i)), f) == 0) {
			json_array_remove(arr, i);
			break;
		}
	r = cli_selection_save(sel);
	json_decref(sel);
	return r;
}
