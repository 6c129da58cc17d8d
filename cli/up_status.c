/* kyok status: every crypto unit of the instance, from its public state (GET /state). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"

#define UP_SHORT_HEX 16

/* ---- kyok status ---- */

static const char status_usage[] =
    "usage: kyok status [options]\n"
    "\n"
    "Shows every crypto unit of the instance: zone, whether it answers, mode (imprint or\n"
    "secure), administrators, signature/revocation thresholds and both master key\n"
    "registers (state and the first 16 hex digits of the verification pattern).\n"
    "Below the table, each unit's readiness: 'ready' when it can serve keys, else\n"
    "'not ready' and every reason (docs/operations.md, Monitoring), as its GET /ready\n"
    "answers. --output json gives each unit's full public state (readiness in\n"
    "\"ready\"). Exits non-zero when a unit does not answer; a unit not ready does not\n"
    "change the exit status.\n";

/* "ready", "not ready: code, code", or why it is not known. */
static void status_ready(const json_t *st, char *out, size_t n)
{
	const json_t *o = json_object_get(st, "ready"), *reasons = json_object_get(o, "reasons"),
	             *e;
	size_t k, len;

	if (st == NULL) {
		snprintf(out, n, "unknown (does not answer)");
		return;
	}
	if (!json_is_boolean(json_object_get(o, "ready")) || !json_is_array(reasons)) {
		snprintf(out, n, "unknown (the unit does not report it)");
		return;
	}
	if (json_is_true(json_object_get(o, "ready"))) {
		snprintf(out, n, "ready");
		return;
	}
	len = (size_t)snprintf(out, n, "not ready:");
	json_array_foreach(reasons, k, e)
	{
		const char *code = json_string_value(json_object_get(e, "code"));
		if (len >= n)
			break;
		len += (size_t)snprintf(out + len, n - len, "%s %s", k == 0 ? "" : ",",
		                        code ? code : "?");
	}
}

static void status_register(const json_t *st, const char *reg, char *out, size_t n)
{
	const json_t *o = json_object_get(st, reg);
	const char *state = json_string_value(json_object_get(o, "state"));
	const char *vp = json_string_value(json_object_get(o, "vp"));

	if (vp != NULL && vp[0] != '\0')
		snprintf(out, n, "%s %.*s", state ? state : "?", UP_SHORT_HEX, vp);
	else
		snprintf(out, n, "%s", state ? state : "?");
}

int status_main(int argc, char **argv)
{
	static const char *const hdr[] = {"UNIT",   "ZONE",    "REACHABLE", "MODE",
	                                  "ADMINS", "SIG/REV", "NEW MK",    "CURRENT MK"};
	int r = KY_ERR_INTERNAL, first = 0;
	struct cli_instance inst;
	struct cli_table *t = NULL;
	json_t *arr = NULL;
	char(*ready)[256] = NULL;

	if ((r = cli_opts_common_only(argc, argv, status_usage)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = cli_instance_load(&inst)) != 0)
		return ky_err_exit(r);
	r = KY_ERR_NOMEM;
	if ((ready = calloc(inst.nunits ? inst.nunits : 1, sizeof(*ready))) == NULL ||
	    (cli_g.json ? (arr = json_array()) == NULL : (t = cli_table_new(8, hdr)) == NULL)) {
		cli_fail(r, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < inst.nunits; i++) {
		const struct cli_unit *u = &inst.units[i];
		json_t *st = NULL;
		int e = unit_state(&inst, u, &st);
		char num[16], admins[512], thr[32], newmk[128], curmk[128];

		if (e != 0 && first == 0)
			first = e;
		status_ready(e == 0 ? st : NULL, ready[i], sizeof(ready[i]));
		if (arr != NULL) {
			json_array_append_new(
			    arr,
			    json_pack("{s:i, s:s, s:s, s:s, s:b, s:o?, s:s*}", "number", u->number,
			              "id", u->id, "zone", u->zone, "url", u->url, "reachable",
			              e == 0, "state", st, "error", e ? ky_err_slug(e) : NULL));
			continue;
		}
		snprintf(num, sizeof(num), "%d", u->number);
		if (e != 0) {
			const char *row[] = {num, u->zone, "no", "-", "-", "-", "-", "-"};
			if (cli_table_add(t, row) != 0)
				goto nomem;
			continue;
		}
		const json_t *list = json_object_get(st, "admins"), *a;
		size_t k;
		int len = snprintf(admins, sizeof(admins), "%zu", json_array_size(list));
		json_array_foreach(list, k, a)
		{
			const char *name = json_string_value(json_object_get(a, "name"));
			if (len < 0 || (size_t)len >= sizeof(admins))
				break;
			len += snprintf(admins + len, sizeof(admins) - (size_t)len, "%s%s",
			                k == 0 ? " (" : ", ", name ? name : "?");
		}
		if (json_array_size(list) > 0 && len >= 0 && (size_t)len < sizeof(admins) - 1)
			strcat(admins, ")");
		snprintf(thr, sizeof(thr), "%d/%d",
		         (int)json_integer_value(json_object_get(st, "signature_threshold")),
		         (int)json_integer_value(json_object_get(st, "revocation_threshold")));
		status_register(st, "new_mk", newmk, sizeof(newmk));
		status_register(st, "current_mk", curmk, sizeof(curmk));
		const char *row[] = {
		    num,    u->zone,
		    "yes",  json_is_true(json_object_get(st, "imprint")) ? "imprint" : "secure",
		    admins, thr,
		    newmk,  curmk};
		e = cli_table_add(t, row);
		json_decref(st);
		if (e != 0)
			goto nomem;
	}
	if (arr != NULL) {
		cli_print_json(json_pack("{s:s, s:s, s:o}", "instance", inst.id, "dir", inst.dir,
		                         "units", arr));
		arr = NULL; /* transferred */
	} else {
		printf("instance %s (%s)\n\n", inst.id, inst.dir);
		cli_table_print(t, stdout);
		printf("\n");
		for (size_t i = 0; i < inst.nunits; i++)
			printf("unit %d: %s\n", inst.units[i].number, ready[i]);
	}
	r = first;
	goto out;
nomem:
	r = KY_ERR_NOMEM;
	cli_fail(r, NULL, NULL);
out:
	json_decref(arr);
	cli_table_free(t);
	free(ready);
	return ky_err_exit(r);
}
