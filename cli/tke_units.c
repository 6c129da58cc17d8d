/* kyok tke cryptounits, cryptounit-add, -rm, -admins, -thrhlds, -mk, -compare:
 * choosing crypto units and reading their state. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"

#define UNITS_MAX       16
#define UNITS_SHORT_HEX 16

/* ---- reading the public state (ky_domain_public_json) ---- */

static const char *units_str(const json_t *st, const char *reg, const char *key)
{
	const json_t *o = reg != NULL ? json_object_get(st, reg) : st;

	return json_string_value(json_object_get(o, key));
}

static int units_int(const json_t *st, const char *key)
{
	return (int)json_integer_value(json_object_get(st, key));
}

static const char *units_mode(const json_t *st)
{
	return json_is_true(json_object_get(st, "imprint")) ? "imprint" : "secure";
}

/* States of every unit (NULL for a unit that failed: its error is printed). Returns the
 * first error. */
static int units_states(const struct cli_instance *inst, const struct cli_unit *units, size_t n,
                        json_t **states)
{
	int first = 0;

	for (size_t i = 0; i < n; i++) {
		int r = unit_state(inst, &units[i], &states[i]);
		if (r != 0 && first == 0)
			first = r;
	}
	return first;
}

static void units_states_free(json_t **states, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(states[i]);
}

/* Loads the instance and the selected units and their states. */
static int units_load(struct cli_instance *inst, struct cli_unit **units, size_t *n,
                      json_t **states, int *state_err)
{
	int r;

	if ((r = cli_instance_load(inst)) != 0)
		return r;
	if ((r = cli_selected_units(inst, units, n)) != 0)
		return r;
	*state_err = units_states(inst, *units, *n, states);
	return 0;
}

/* ---- cryptounits ---- */

static int units_list(const struct cli_instance *inst)
{
	int r = KY_ERR_NOMEM;
	static const char *const hdr[] = {"SELECTED", "NUMBER", "ID", "ZONE", "TYPE", "URL"};
	struct cli_table *t = NULL;
	int sel[UNITS_MAX];
	size_t nsel = 0;
	json_t *j = NULL, *arr = NULL;

	if ((r = cli_selection_units(inst, sel, UNITS_MAX, &nsel)) != 0)
		return r;
	r = KY_ERR_NOMEM;
	if (cli_g.json) {
		if ((arr = json_array()) == NULL)
			goto out;
	} else if ((t = cli_table_new(6, hdr)) == NULL) {
		goto out;
	}
	for (size_t i = 0; i < inst->nunits; i++) {
		const struct cli_unit *u = &inst->units[i];
		bool selected = false;
		char num[16];

		for (size_t k = 0; k < nsel; k++)
			selected = selected || sel[k] == u->number;
		if (arr != NULL) {
			if (json_array_append_new(
			        arr, json_pack("{s:b, s:i, s:s, s:s, s:s, s:s}", "selected",
			                       selected, "number", u->number, "id", u->id, "zone",
			                       u->zone, "type", "OPERATIONAL", "url", u->url)) != 0)
				goto out;
			continue;
		}
		snprintf(num, sizeof(num), "%d", u->number);
		const char *row[] = {selected ? "yes" : "no", num,   u->id, u->zone,
		                     "OPERATIONAL",           u->url};
		if (cli_table_add(t, row) != 0)
			goto out;
	}
	if (arr != NULL) {
		if ((j = json_pack("{s:s, s:o}", "instance", inst->id, "units", arr)) == NULL) {
			arr = NULL;
			goto out;
		}
		arr = NULL; /* transferred */
		cli_print_json(j);
		j = NULL; /* transferred */
	} else {
		printf("instance %s (%s)\n\n", inst->id, inst->dir);
		cli_table_print(t, stdout);
		if (nsel == 0)
			printf(
			    "\nno crypto unit selected: 'kyok tke cryptounit-add' selects some\n");
	}
	r = 0;
out:
	if (r != 0)
		cli_fail(r, NULL, NULL);
	json_decref(arr);
	json_decref(j);
	cli_table_free(t);
	return r;
}

static const char cryptounits_usage[] =
    "usage: kyok tke cryptounits [options]\n"
    "\n"
    "Lists the crypto units of the instance: whether later commands act on them\n"
    "(SELECTED), their number, id, zone, type and URL.\n";

int tke_cryptounits_main(int argc, char **argv)
{
	int r;
	struct cli_instance inst;

	if ((r = cli_opts_common_only(argc, argv, cryptounits_usage)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = cli_instance_load(&inst)) != 0 || (r = units_list(&inst)) != 0)
		return ky_err_exit(r);
	return 0;
}

/* ---- cryptounit-add, cryptounit-rm ---- */

static const char cryptounit_add_usage[] =
    "usage: kyok tke cryptounit-add [--units N[,N...]] [options]\n"
    "\n"
    "Adds crypto units to the selection that later commands act on. Without --units,\n"
    "lists the units and asks for their numbers.\n"
    "\n";

static const char cryptounit_rm_usage[] =
    "usage: kyok tke cryptounit-rm [--units N[,N...]] [options]\n"
    "\n"
    "Removes crypto units from the selection. Without --units, lists the units and\n"
    "asks for their numbers.\n"
    "\n";

static int units_select(int argc, char **argv, bool add)
{
	enum { OPT_UNITS = 0x2001 };
	static const struct cli_opt add_opts[] = {
	    {"units", OPT_UNITS, CLI_ARG_REQUIRED, "LIST",
	     "unit numbers to add, comma separated (e.g. 1,2)"},
	    CLI_OPT_END};
	static const struct cli_opt rm_opts[] = {
	    {"units", OPT_UNITS, CLI_ARG_REQUIRED, "LIST",
	     "unit numbers to remove, comma separated (e.g. 2)"},
	    CLI_OPT_END};
	const struct cli_opt *opts = add ? add_opts : rm_opts;
	int r = KY_ERR_INTERNAL, c;
	const char *list = NULL, *usage = add ? cryptounit_add_usage : cryptounit_rm_usage;
	char *answer = NULL, why[160];
	int nums[UNITS_MAX], sel[UNITS_MAX], next[UNITS_MAX];
	size_t nnums = 0, nsel = 0, nnext = 0;
	struct cli_instance inst;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_UNITS)
			list = optarg;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if ((r = cli_instance_load(&inst)) != 0)
		return ky_err_exit(r);
	if ((r = cli_selection_units(&inst, sel, UNITS_MAX, &nsel)) != 0)
		return ky_err_exit(r);
	if (list == NULL) {
		bool saved_json = cli_g.json;
		cli_g.json = false;
		r = units_list(&inst);
		cli_g.json = saved_json;
		if (r != 0)
			goto out;
		putchar('\n');
		fflush(stdout);
		if ((r = cli_prompt_line(add ? "crypto unit numbers to add (comma separated)"
		                             : "crypto unit numbers to remove (comma separated)",
		                         "--units", &answer)) != 0)
			goto out;
		list = answer;
	}
	if ((r = cli_parse_numbers(list, UNITS_MAX, nums, UNITS_MAX, &nnums, why, sizeof(why))) !=
	    0) {
		cli_fail(r, "--units", "%s", why);
		goto out;
	}
	for (size_t i = 0; i < nnums; i++)
		if (cli_instance_unit(&inst, nums[i]) == NULL) {
			r = KY_ERR_USAGE;
			cli_fail(r, "--units", "instance %s has no crypto unit %d (units 1 to %zu)",
			         inst.id, nums[i], inst.nunits);
			goto out;
		}
	/* next = sel + nums, or sel - nums */
	for (size_t i = 0; i < nsel; i++) {
		bool listed = false;
		for (size_t k = 0; k < nnums; k++)
			listed = listed || nums[k] == sel[i];
		if (add || !listed)
			next[nnext++] = sel[i];
	}
	for (size_t k = 0; k < nnums; k++) {
		bool was = false;
		for (size_t i = 0; i < nsel; i++)
			was = was || nums[k] == sel[i];
		if (add && !was)
			next[nnext++] = nums[k];
		if (add && was)
			fprintf(stderr, "note: crypto unit %d was already selected\n", nums[k]);
		if (!add && !was)
			fprintf(stderr, "note: crypto unit %d was not selected\n", nums[k]);
	}
	if ((r = cli_selection_set_units(&inst, next, nnext)) != 0)
		goto out;
	r = units_list(&inst);
out:
	free(answer);
	return ky_err_exit(r);
}

int tke_cryptounit_add_main(int argc, char **argv)
{
	return units_select(argc, argv, true);
}

int tke_cryptounit_rm_main(int argc, char **argv)
{
	return units_select(argc, argv, false);
}

/* ---- cryptounit-admins, -thrhlds, -mk ---- */

enum units_view { UNITS_ADMINS, UNITS_THRESHOLDS, UNITS_REGISTERS };

/* Under a full register: one row per key part the key was loaded from (its VP), or one row
 * saying it has none. */
static int units_parts_rows(struct cli_table *t, const char *num, const char *zone,
                            const json_t *reg)
{
	const json_t *vps = json_object_get(reg, "part_vps"), *v;
	size_t k;
	char label[32];

	if (json_array_size(vps) == 0) {
		const char *row[] = {num, zone, "  key parts", "none: generated or imported", "-"};
		return cli_table_add(t, row);
	}
	json_array_foreach(vps, k, v)
	{
		snprintf(label, sizeof(label), "  key part %zu", k + 1);
		const char *row[] = {num, zone, label, "", json_string_value(v) ?: "?"};
		if (cli_table_add(t, row) != 0)
			return KY_ERR_NOMEM;
	}
	return 0;
}

static int units_view_table(const struct cli_unit *units, size_t n, json_t **states,
                            enum units_view view)
{
	static const char *const admins_hdr[] = {"UNIT", "ZONE", "ADMIN NAME", "SKI"};
	static const char *const thr_hdr[] = {"UNIT", "ZONE", "MODE", "SIGNATURE", "REVOCATION"};
	static const char *const mk_hdr[] = {"UNIT", "ZONE", "REGISTER", "STATE", "VP"};
	struct cli_table *t = NULL;
	int r = KY_ERR_NOMEM;

	switch (view) {
	case UNITS_ADMINS:
		t = cli_table_new(4, admins_hdr);
		break;
	case UNITS_THRESHOLDS:
		t = cli_table_new(5, thr_hdr);
		break;
	case UNITS_REGISTERS:
		t = cli_table_new(5, mk_hdr);
		break;
	}
	if (t == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const json_t *st = states[i];
		char num[16], sig[16], rev[16];
		snprintf(num, sizeof(num), "%d", units[i].number);
		if (st == NULL) {
			const char *row[] = {num, units[i].zone, "(no answer)", "-", "-"};
			if (cli_table_add(t, row) != 0)
				goto out;
			continue;
		}
		switch (view) {
		case UNITS_ADMINS: {
			const json_t *admins = json_object_get(st, "admins"), *a;
			size_t k;
			if (json_array_size(admins) == 0) {
				const char *row[] = {num, units[i].zone, "(none)", "-"};
				if (cli_table_add(t, row) != 0)
					goto out;
			}
			json_array_foreach(admins, k, a)
			{
				char ski[UNITS_SHORT_HEX + 1];
				snprintf(ski, sizeof(ski), "%s",
				         json_string_value(json_object_get(a, "ski")) ?: "?");
				const char *row[] = {
				    num, units[i].zone,
				    json_string_value(json_object_get(a, "name")) ?: "?", ski};
				if (cli_table_add(t, row) != 0)
					goto out;
			}
			break;
		}
		case UNITS_THRESHOLDS: {
			snprintf(sig, sizeof(sig), "%d", units_int(st, "signature_threshold"));
			snprintf(rev, sizeof(rev), "%d", units_int(st, "revocation_threshold"));
			const char *row[] = {num, units[i].zone, units_mode(st), sig, rev};
			if (cli_table_add(t, row) != 0)
				goto out;
			break;
		}
		case UNITS_REGISTERS: {
			static const char *const regs[2][2] = {{"new_mk", "NEW"},
			                                       {"current_mk", "CURRENT"}};
			for (int k = 0; k < 2; k++) {
				const char *vp = units_str(st, regs[k][0], "vp");
				const bool full = vp != NULL && vp[0] != '\0';
				const char *row[] = {num, units[i].zone, regs[k][1],
				                     units_str(st, regs[k][0], "state") ?: "?",
				                     full ? vp : "-"};
				if (cli_table_add(t, row) != 0)
					goto out;
				if (full && units_parts_rows(t, num, units[i].zone,
				                             json_object_get(st, regs[k][0])) != 0)
					goto out;
			}
			break;
		}
		}
	}
	cli_table_print(t, stdout);
	r = 0;
out:
	if (r != 0)
		cli_fail(r, NULL, NULL);
	cli_table_free(t);
	return r;
}

static json_t *units_view_json(const struct cli_unit *u, const json_t *st, enum units_view view)
{
	json_t *o = json_pack("{s:i, s:s, s:s}", "number", u->number, "id", u->id, "zone", u->zone);
	const char *keys[3] = {NULL, NULL, NULL};

	if (o == NULL)
		return NULL;
	if (st == NULL) {
		json_object_set_new(o, "reachable", json_false());
		return o;
	}
	json_object_set_new(o, "reachable", json_true());
	switch (view) {
	case UNITS_ADMINS:
		keys[0] = "admins";
		break;
	case UNITS_THRESHOLDS:
		keys[0] = "imprint";
		keys[1] = "signature_threshold";
		keys[2] = "revocation_threshold";
		break;
	case UNITS_REGISTERS:
		keys[0] = "new_mk";
		keys[1] = "current_mk";
		break;
	}
	for (int k = 0; k < 3 && keys[k] != NULL; k++) {
		json_t *v = json_object_get(st, keys[k]);
		if (view == UNITS_ADMINS) {
			/* names and SKIs; the certificates stay out of the listing */
			json_t *arr = json_array(), *a;
			size_t i;
			json_array_foreach(v, i, a)
			{
				json_array_append_new(arr,
				                      json_pack("{s:O?, s:O?}", "name",
				                                json_object_get(a, "name"), "ski",
				                                json_object_get(a, "ski")));
			}
			json_object_set_new(o, keys[k], arr);
		} else {
			json_object_set(o, keys[k], v != NULL ? v : json_null());
		}
	}
	if (view == UNITS_THRESHOLDS)
		json_object_set_new(o, "mode", json_string(units_mode(st)));
	return o;
}

static int units_view_main(int argc, char **argv, const char *usage, enum units_view view)
{
	int r, state_err = 0;
	struct cli_instance inst;
	struct cli_unit *units = NULL;
	size_t n = 0;
	json_t *states[UNITS_MAX] = {NULL};

	if ((r = cli_opts_common_only(argc, argv, usage)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = units_load(&inst, &units, &n, states, &state_err)) != 0)
		goto out;
	if (cli_g.json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, units_view_json(&units[i], states[i], view));
		cli_print_json(json_pack("{s:s, s:o}", "instance", inst.id, "units", arr));
	} else if ((r = units_view_table(units, n, states, view)) != 0) {
		goto out;
	}
	r = state_err;
out:
	units_states_free(states, n);
	free(units);
	return ky_err_exit(r);
}

static const char cryptounit_admins_usage[] =
    "usage: kyok tke cryptounit-admins [options]\n"
    "\n"
    "Shows the administrators installed in each selected crypto unit: name and subject\n"
    "key identifier (SKI, first 16 hex digits; --output json gives all of it).\n";

static const char cryptounit_thrhlds_usage[] =
    "usage: kyok tke cryptounit-thrhlds [options]\n"
    "\n"
    "Shows the mode (imprint or secure) and the signature and revocation thresholds of\n"
    "each selected crypto unit.\n";

static const char cryptounit_mk_usage[] =
    "usage: kyok tke cryptounit-mk [options]\n"
    "\n"
    "Shows the new and current master key registers of each selected crypto unit: state\n"
    "and verification pattern (VP). Under a full register, the VP of each key part the\n"
    "key was loaded from (compare them with 'kyok tke mks'), or 'none' for a key that\n"
    "was generated on a unit or imported from one (--output json: \"part_vps\").\n";

int tke_cryptounit_admins_main(int argc, char **argv)
{
	return units_view_main(argc, argv, cryptounit_admins_usage, UNITS_ADMINS);
}

int tke_cryptounit_thrhlds_main(int argc, char **argv)
{
	return units_view_main(argc, argv, cryptounit_thrhlds_usage, UNITS_THRESHOLDS);
}

int tke_cryptounit_mk_main(int argc, char **argv)
{
	return units_view_main(argc, argv, cryptounit_mk_usage, UNITS_REGISTERS);
}

/* ---- cryptounit-compare ---- */

/* One row of the comparison: a label, a shown cell and a compared value per unit. */
struct units_row {
	char label[64];
	char cells[UNITS_MAX][96];
	char values[UNITS_MAX][160];
};

static bool units_row_same(const struct units_row *row, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (strcmp(row->values[i], row->values[0]) != 0)
			return false;
	return true;
}

static void units_row_set(struct units_row *row, size_t i, const char *cell, const char *value)
{
	snprintf(row->cells[i], sizeof(row->cells[i]), "%s", cell);
	snprintf(row->values[i], sizeof(row->values[i]), "%s", value);
}

/* The key parts of a full register: shown as the first 8 hex digits of each part's VP
 * ("none" for a generated or imported key), compared by the full VPs. */
static void units_parts_cell(struct units_row *row, size_t i, const json_t *reg)
{
	const json_t *vps = json_object_get(reg, "part_vps"), *v;
	char cell[sizeof(row->cells[0])] = "", value[2 * EVP_MAX_MD_SIZE + 1];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = NULL;
	size_t k;

	if (json_array_size(vps) == 0) {
		units_row_set(row, i, "none", "none");
		return;
	}
	/* Up to 8 VPs do not fit a compared value: compare the SHA-256 of the list. */
	if ((ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		ctx = NULL;
	json_array_foreach(vps, k, v)
	{
		const char *vp = json_string_value(v) ?: "?";
		size_t cl = strlen(cell);
		snprintf(cell + cl, sizeof(cell) - cl, "%s%.8s", k > 0 ? " " : "", vp);
		if (ctx != NULL && EVP_DigestUpdate(ctx, vp, strlen(vp) + 1) != 1) {
			EVP_MD_CTX_free(ctx);
			ctx = NULL;
		}
	}
	if (ctx != NULL && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1)
		ky_hex_encode(md, mdlen, value);
	else /* never equal to another unit's: shown as different rather than as the same */
		snprintf(value, sizeof(value), "? unit %zu", i);
	EVP_MD_CTX_free(ctx);
	units_row_set(row, i, cell, value);
}

/* Builds the rows: administrators (one row per distinct SKI), thresholds, mode, registers. */
static size_t units_compare_rows(json_t **states, size_t n, struct units_row *rows, size_t cap)
{
	size_t nrows = 0;
	char skis[UNITS_MAX * 8][2 * 32 + 1];
	size_t nskis = 0;

	/* distinct admins by SKI, in the order first seen */
	for (size_t i = 0; i < n; i++) {
		const json_t *a;
		size_t k;
		json_array_foreach(json_object_get(states[i], "admins"), k, a)
		{
			const char *ski = json_string_value(json_object_get(a, "ski"));
			bool seen = false;
			if (ski == NULL)
				continue;
			for (size_t s = 0; s < nskis; s++)
				seen = seen || strcmp(skis[s], ski) == 0;
			if (!seen && nskis < sizeof(skis) / sizeof(skis[0]))
				snprintf(skis[nskis++], sizeof(skis[0]), "%s", ski);
		}
	}
	if (nrows < cap) {
		struct units_row *row = &rows[nrows++];
		snprintf(row->label, sizeof(row->label), "administrators");
		for (size_t i = 0; i < n; i++) {
			char c[16];
			snprintf(c, sizeof(c), "%zu",
			         json_array_size(json_object_get(states[i], "admins")));
			units_row_set(row, i, c, c);
		}
	}
	for (size_t s = 0; s < nskis && nrows < cap; s++) {
		struct units_row *row = &rows[nrows++];
		char ski[UNITS_SHORT_HEX + 1];
		snprintf(ski, sizeof(ski), "%.16s", skis[s]);
		for (size_t i = 0; i < n; i++) {
			const json_t *a;
			size_t k;
			units_row_set(row, i, "-", "");
			json_array_foreach(json_object_get(states[i], "admins"), k, a)
			{
				const char *aski = json_string_value(json_object_get(a, "ski"));
				const char *name = json_string_value(json_object_get(a, "name"));
				if (aski == NULL || strcmp(aski, skis[s]) != 0)
					continue;
				/* the label names the admin as the first unit having it does */
				if (row->label[0] == '\0')
					snprintf(row->label, sizeof(row->label), "admin %.30s",
					         name ? name : "?");
				units_row_set(row, i, ski, name ? name : "?");
			}
		}
	}
	static const char *const ints[][2] = {{"signature threshold", "signature_threshold"},
	                                      {"revocation threshold", "revocation_threshold"}};
	for (size_t q = 0; q < 2 && nrows < cap; q++) {
		struct units_row *row = &rows[nrows++];
		snprintf(row->label, sizeof(row->label), "%s", ints[q][0]);
		for (size_t i = 0; i < n; i++) {
			char c[16];
			snprintf(c, sizeof(c), "%d", units_int(states[i], ints[q][1]));
			units_row_set(row, i, c, c);
		}
	}
	if (nrows < cap) {
		struct units_row *row = &rows[nrows++];
		snprintf(row->label, sizeof(row->label), "mode");
		for (size_t i = 0; i < n; i++)
			units_row_set(row, i, units_mode(states[i]), units_mode(states[i]));
	}
	static const char *const regs[][4] = {
	    {"new master key", "new master key VP", "new master key parts", "new_mk"},
	    {"current master key", "current master key VP", "current master key parts",
	     "current_mk"}};
	for (size_t q = 0; q < 2 && nrows + 3 <= cap; q++) {
		struct units_row *srow = &rows[nrows++], *vrow = &rows[nrows++];
		struct units_row *prow = &rows[nrows++];
		snprintf(srow->label, sizeof(srow->label), "%s", regs[q][0]);
		snprintf(vrow->label, sizeof(vrow->label), "%s", regs[q][1]);
		snprintf(prow->label, sizeof(prow->label), "%s", regs[q][2]);
		for (size_t i = 0; i < n; i++) {
			const char *st = units_str(states[i], regs[q][3], "state");
			const char *vp = units_str(states[i], regs[q][3], "vp");
			char c[UNITS_SHORT_HEX + 1];
			units_row_set(srow, i, st ? st : "?", st ? st : "?");
			if (vp == NULL || vp[0] == '\0') {
				units_row_set(vrow, i, "-", "");
				units_row_set(prow, i, "-", "");
			} else {
				snprintf(c, sizeof(c), "%s", vp);
				units_row_set(vrow, i, c, vp);
				units_parts_cell(prow, i, json_object_get(states[i], regs[q][3]));
			}
		}
	}
	if (nrows < cap) { /* the anchor that certified each unit (kyok up, kyok unit-add) */
		struct units_row *row = &rows[nrows++];
		snprintf(row->label, sizeof(row->label), "unit trust anchor");
		for (size_t i = 0; i < n; i++) {
			const char *fp = json_string_value(json_object_get(states[i], "anchor"));
			char c[UNITS_SHORT_HEX + 1];
			snprintf(c, sizeof(c), "%s", fp ? fp : "?");
			units_row_set(row, i, c, fp ? fp : "?");
		}
	}
	return nrows;
}

static const char cryptounit_compare_usage[] =
    "usage: kyok tke cryptounit-compare [options]\n"
    "\n"
    "Compares the selected crypto units side by side: administrators, thresholds, mode,\n"
    "master key registers (state, VP, and the VPs of the key parts each key was loaded\n"
    "from: first 8 hex digits each, 'none' for a generated or imported key) and the unit\n"
    "trust anchor that certified each unit. All units of an instance must be configured\n"
    "the same.\n"
    "Exits 0 whether or not they differ; the last line says which.\n";

int tke_cryptounit_compare_main(int argc, char **argv)
{
	int r, state_err = 0;
	struct cli_instance inst;
	struct cli_unit *units = NULL;
	size_t n = 0, nrows;
	json_t *states[UNITS_MAX] = {NULL};
	struct units_row *rows = NULL;
	struct cli_table *t = NULL;
	const char *hdr[UNITS_MAX + 2];
	char unit_hdr[UNITS_MAX][96], diffs[1024] = "";
	bool identical = true;
	json_t *jdiffs = NULL, *junits = NULL;
	const size_t cap = UNITS_MAX * 8 + 8;

	if ((r = cli_opts_common_only(argc, argv, cryptounit_compare_usage)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = units_load(&inst, &units, &n, states, &state_err)) != 0)
		goto out;
	if ((r = state_err) != 0) {
		cli_fail(r, "cryptounit-compare",
		         "every selected crypto unit must answer to be compared");
		goto out;
	}
	r = KY_ERR_NOMEM;
	if ((rows = calloc(cap, sizeof(*rows))) == NULL || (jdiffs = json_array()) == NULL ||
	    (junits = json_array()) == NULL)
		goto nomem;
	nrows = units_compare_rows(states, n, rows, cap);
	hdr[0] = "";
	for (size_t i = 0; i < n; i++) {
		snprintf(unit_hdr[i], sizeof(unit_hdr[i]), "UNIT %d (%s)", units[i].number,
		         units[i].zone);
		hdr[i + 1] = unit_hdr[i];
		if (json_array_append_new(junits,
		                          json_pack("{s:i, s:s, s:s, s:O}", "number",
		                                    units[i].number, "id", units[i].id, "zone",
		                                    units[i].zone, "state", states[i])) != 0)
			goto nomem;
	}
	hdr[n + 1] = "";
	if (!cli_g.json && (t = cli_table_new(n + 2, hdr)) == NULL)
		goto nomem;
	for (size_t q = 0; q < nrows; q++) {
		bool same = units_row_same(&rows[q], n);
		const char *cells[UNITS_MAX + 2];
		if (!same) {
			if (!identical)
				strncat(diffs, ", ", sizeof(diffs) - strlen(diffs) - 1);
			strncat(diffs, rows[q].label, sizeof(diffs) - strlen(diffs) - 1);
			identical = false;
			if (json_array_append_new(jdiffs, json_string(rows[q].label)) != 0)
				goto nomem;
		}
		if (t == NULL)
			continue;
		cells[0] = rows[q].label;
		for (size_t i = 0; i < n; i++)
			cells[i + 1] = rows[q].cells[i];
		cells[n + 1] = same ? "same" : "DIFFERENT";
		if (cli_table_add(t, cells) != 0)
			goto nomem;
	}
	if (cli_g.json) {
		cli_print_json(json_pack("{s:b, s:s, s:O, s:O}", "identical", identical, "instance",
		                         inst.id, "units", junits, "differences", jdiffs));
	} else {
		cli_table_print(t, stdout);
		putchar('\n');
		if (identical)
			printf("crypto units are configured identically\n");
		else
			printf("crypto units differ in: %s\n", diffs);
	}
	r = 0;
	goto out;
nomem:
	cli_fail(r, NULL, NULL);
out:
	json_decref(jdiffs);
	json_decref(junits);
	cli_table_free(t);
	free(rows);
	units_states_free(states, n);
	free(units);
	return ky_err_exit(r);
}
