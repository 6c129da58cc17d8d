/* kyok tke auto-recover: brings selected crypto units that lack the instance's master key
 * (a unit added or re-created with 'kyok unit-add') to the state of the live units, without
 * any key part: the master key moves from a live unit through the genuine-unit path
 * (mk-export of the current register to the new unit's importer -> identity -> anchor chain,
 * mk-import with the sender's transfer signature).
 *
 * Steps, each an ordinary command reported per unit, each skipped on units already there (so
 * a run cut short is completed by running it again):
 *   1. install the live units' administrators on the new units (certificates read from a
 *      live unit's signed state; unsigned while the new unit is in imprint mode);
 *   2. set the live units' thresholds (ends imprint mode; signed by that many admins);
 *   3. export the current master key from the first live unit to the new units;
 *   4. import it, 5. commit it, 6. set it as current, on the new units.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/tke_signing.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define AR_MAX_UNITS 16

static const char ar_usage[] =
    "usage: kyok tke auto-recover [options]\n"
    "\n"
    "Brings the selected crypto units that lack the instance's master key (added or\n"
    "re-created with 'kyok unit-add') to the state of the selected live units: same\n"
    "administrators, same thresholds, same current master key. The master key goes from\n"
    "the first live unit to each new unit's importer key, which must be certified by the\n"
    "instance's unit trust anchor; no key part is needed, so it also serves instances\n"
    "initialised with 'auto-init'. Each step is a signed command reported per unit; run\n"
    "it again after an interruption and it completes what is left. The selected signature\n"
    "keys sign (as many administrators as the signature threshold).\n";

struct ar_admin {
	char name[KY_ADMIN_NAME_MAX + 1];
	uint8_t ski[KY_SKI_LEN];
	X509 *cert;
};

struct ar {
	struct tke_run run;
	size_t source; /* index of the live unit the key comes from */
	bool target[AR_MAX_UNITS];
	size_t ntargets;
	int sig, rev;
	char vp_hex[2 * KY_VP_LEN + 1];
	uint8_t vp[KY_VP_LEN];
	size_t nadmins;
	struct ar_admin admins[KY_MAX_ADMINS];
	struct cli_signer *signers;
	size_t nsigners;
	X509 *source_id;
	X509 *recips[KY_MAX_ADMINS], *recip_ids[KY_MAX_ADMINS];
	size_t nrecips;
	struct ky_buf envelopes[AR_MAX_UNITS], signatures[AR_MAX_UNITS];
	json_t *steps;
	int step, nsteps;
};

static void ar_release(struct ar *ar)
{
	for (size_t i = 0; i < ar->nadmins; i++)
		X509_free(ar->admins[i].cert);
	for (size_t i = 0; i < ar->nrecips; i++) {
		X509_free(ar->recips[i]);
		X509_free(ar->recip_ids[i]);
	}
	for (size_t i = 0; i < AR_MAX_UNITS; i++) {
		ky_buf_free(&ar->envelopes[i]);
		ky_buf_free(&ar->signatures[i]);
	}
	X509_free(ar->source_id);
	cli_signers_free(ar->signers, ar->nsigners);
	json_decref(ar->steps);
	tke_run_release(&ar->run);
}

static bool ar_live(const struct tke_unit *u)
{
	return u->reachable && !u->st.imprint && u->st.cur_state == KY_CUR_VALID;
}

/* Done: out of imprint mode with the key as current, the same thresholds and admins. */
static bool ar_unit_done(const struct ar *ar, const struct tke_unit *u)
{
	if (!ar_live(u) || strcmp(u->st.cur_vp, ar->vp_hex) != 0 || u->st.sig != ar->sig ||
	    u->st.rev != ar->rev || u->st.nadmins != ar->nadmins)
		return false;
	for (size_t k = 0; k < ar->nadmins; k++)
		if (ky_unit_state_admin_by_ski(&u->st, ar->admins[k].ski) < 0)
			return false;
	return true;
}

/* The live units agree; the others become targets. */
static int ar_classify(struct ar *ar)
{
	struct tke_run *run = &ar->run;
	bool found = false;

	if (run->n > AR_MAX_UNITS)
		return cli_err(KY_ERR_USAGE, NULL, "at most %d crypto units", AR_MAX_UNITS);
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (!u->reachable)
			return cli_err(KY_ERR_UNREACHABLE, NULL,
			               "crypto unit %d (%s) does not answer: deselect it "
			               "('kyok tke cryptounit-rm') or re-create it ('kyok unit-add "
			               "--replace %d'); nothing was done",
			               u->u.number, u->u.zone, u->u.number);
		if (!ar_live(u) || found)
			continue;
		found = true;
		ar->source = i;
		ar->sig = u->st.sig;
		ar->rev = u->st.rev;
		snprintf(ar->vp_hex, sizeof(ar->vp_hex), "%s", u->st.cur_vp);
	}
	if (!found)
		return cli_err(KY_ERR_NO_MASTER_KEY, NULL,
		               "no selected crypto unit holds a current master key: select a live "
		               "unit too ('kyok tke cryptounit-add'); nothing was done");
	if (ky_hex_decode(ar->vp_hex, ar->vp, KY_VP_LEN) != 0)
		return cli_err(KY_ERR_BAD_REPLY, NULL, "current master key vp '%s'", ar->vp_hex);
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (ar_live(u) && strcmp(u->st.cur_vp, ar->vp_hex) != 0)
			return cli_err(
			    KY_ERR_VP_MISMATCH, NULL,
			    "crypto units %d and %d hold different current master keys "
			    "(vp %.16s and %.16s): auto-recover does not choose; see 'kyok "
			    "tke cryptounit-compare'",
			    run->units[ar->source].u.number, u->u.number, ar->vp_hex, u->st.cur_vp);
	}
	return 0;
}

/* The source's administrators, with their certificates, from its signed state. */
static int ar_read_admins(struct ar *ar)
{
	int r = KY_ERR_INTERNAL;
	json_t *st = NULL, *a;
	size_t k;
	const struct tke_unit *src = &ar->run.units[ar->source];

	if ((r = unit_state(&ar->run.inst, &src->u, &st)) != 0)
		return r;
	json_array_foreach(json_object_get(st, "admins"), k, a)
	{
		struct ar_admin *ad = &ar->admins[ar->nadmins];
		const char *pem = json_string_value(json_object_get(a, "cert"));
		if (k >= KY_MAX_ADMINS || pem == NULL || ky_cert_from_pem(pem, &ad->cert) != 0) {
			r = cli_err(KY_ERR_BAD_REPLY, NULL,
			            "crypto unit %d: administrator %zu has no readable certificate",
			            src->u.number, k + 1);
			goto out;
		}
		ar->nadmins++;
		if (ky_admin_cert_check(ad->cert) != 0 ||
		    ky_cert_cn(ad->cert, ad->name, sizeof(ad->name)) != 0 ||
		    ky_cert_ski(ad->cert, ad->ski) != 0) {
			r = cli_err(KY_ERR_BAD_REPLY, NULL,
			            "crypto unit %d: administrator %zu has an invalid certificate",
			            src->u.number, k + 1);
			goto out;
		}
	}
	if (ar->nadmins != src->st.nadmins) {
		r = cli_err(KY_ERR_BAD_REPLY, NULL, "crypto unit %d: administrator list changed",
		            src->u.number);
		goto out;
	}
	r = 0;
out:
	json_decref(st);
	return r;
}

static void ar_skip(struct ar *ar, bool targets)
{
	for (size_t i = 0; i < ar->run.n; i++)
		ar->run.units[i].skip = targets ? !ar->target[i] : i != ar->source;
}

/* One step: fresh states, plan, sign, submit, report. Returns the exit status. */
static int ar_step(struct ar *ar, const char *what, const struct tke_op *op, bool targets)
{
	int r = KY_ERR_INTERNAL, status;
	char title[200];

	ar->step++;
	snprintf(title, sizeof(title), "step %d of %d: %s", ar->step, ar->nsteps, what);
	ar_skip(ar, targets);
	if ((r = tke_run_refresh(&ar->run)) != 0 || (r = tke_run_plan(&ar->run, op)) != 0) {
		fprintf(stderr, "auto-recover stopped at %s: fix the cause and run it again\n",
		        title);
		return ky_err_exit(r);
	}
	status = tke_run_finish(&ar->run, &(struct tke_hooks){.signers_open = true,
	                                                      .signers = ar->signers,
	                                                      .nsigners = ar->nsigners,
	                                                      .title = title,
	                                                      .json_steps = ar->steps});
	if (!cli_g.json)
		printf("\n");
	if (status != 0)
		fprintf(stderr, "auto-recover stopped at %s: fix the cause and run it again\n",
		        title);
	return status;
}

/* ---- per-step plans and fills ---- */

static int ar_admin_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	const struct ar_admin *a = ctx;
	int j = ky_unit_state_admin_by_name(&u->st, a->name);

	(void)run;
	if (ky_unit_state_admin_by_ski(&u->st, a->ski) >= 0) {
		snprintf(u->detail, sizeof(u->detail), "administrator '%s' already installed",
		         a->name);
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (j >= 0) {
		snprintf(u->detail, sizeof(u->detail),
		         "an administrator named '%s' with another key is installed", a->name);
		return KY_ERR_DUPLICATE_ADMIN;
	}
	return 0;
}

static int ar_admin_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	const struct ar_admin *a = ctx;

	(void)run;
	(void)u;
	return tke_fill_admin_cert(a->cert, c);
}

static int ar_thr_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	const struct ar *ar = ctx;

	(void)run;
	if (!u->st.imprint && u->st.sig == ar->sig && u->st.rev == ar->rev) {
		snprintf(u->detail, sizeof(u->detail), "thresholds already %d/%d", ar->sig,
		         ar->rev);
		u->result = TKE_UNCHANGED;
	}
	return 0;
}

static int ar_thr_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	const struct ar *ar = ctx;

	(void)run;
	(void)u;
	c->sig = ar->sig;
	c->rev = ar->rev;
	return 0;
}

/* A target still needs the key in its new register (none there, not current yet). */
static bool ar_needs_import(const struct ar *ar, const struct tke_unit *u)
{
	if (u->st.cur_state == KY_CUR_VALID && strcmp(u->st.cur_vp, ar->vp_hex) == 0)
		return false;
	return !(u->st.new_state != KY_NEW_EMPTY && strcmp(u->st.new_vp, ar->vp_hex) == 0);
}

static int ar_export_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	const struct ar *ar = ctx;

	(void)run;
	(void)u;
	for (size_t i = 0; i < ar->nrecips; i++) {
		if (X509_up_ref(ar->recips[i]) != 1 || X509_up_ref(ar->recip_ids[i]) != 1)
			return KY_ERR_CRYPTO;
		c->recips[i] = ar->recips[i];
		c->recip_ids[i] = ar->recip_ids[i];
		c->nrecips = i + 1;
	}
	c->export_current = true;
	return 0;
}

static int ar_import_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	const struct ar *ar = ctx;
	size_t idx = (size_t)(u - run->units);

	if (!ar_needs_import(ar, u)) {
		snprintf(u->detail, sizeof(u->detail), "already holds the master key");
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (u->st.new_state != KY_NEW_EMPTY) {
		snprintf(u->detail, sizeof(u->detail),
		         "new master key register is %s with vp %.16s: clear it first "
		         "(cryptounit-mk-clrnew)",
		         ky_new_state_name(u->st.new_state), u->st.new_vp);
		return KY_ERR_REGISTER_STATE;
	}
	if (idx >= AR_MAX_UNITS || ar->envelopes[idx].len == 0) {
		snprintf(u->detail, sizeof(u->detail), "no envelope was exported for this unit");
		return KY_ERR_INTERNAL;
	}
	return 0;
}

static int ar_import_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	const struct ar *ar = ctx;
	size_t idx = (size_t)(u - run->units);

	if (idx >= AR_MAX_UNITS || ar->envelopes[idx].len == 0 || ar->source_id == NULL ||
	    X509_up_ref(ar->source_id) != 1)
		return KY_ERR_INTERNAL;
	c->source = ar->source_id;
	if (ky_buf_append(&c->envelope, ar->envelopes[idx].data, ar->envelopes[idx].len) != 0 ||
	    ky_buf_append(&c->source_sig, ar->signatures[idx].data, ar->signatures[idx].len) != 0)
		return KY_ERR_NOMEM;
	memcpy(c->vp, ar->vp, KY_VP_LEN);
	c->has_vp = true;
	return 0;
}

static int ar_commit_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	const struct ar *ar = ctx;

	(void)run;
	if ((u->st.cur_state == KY_CUR_VALID && strcmp(u->st.cur_vp, ar->vp_hex) == 0) ||
	    (u->st.new_state == KY_NEW_COMMITTED && strcmp(u->st.new_vp, ar->vp_hex) == 0)) {
		snprintf(u->detail, sizeof(u->detail), "already committed");
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (u->st.new_state != KY_NEW_UNCOMMITTED || strcmp(u->st.new_vp, ar->vp_hex) != 0) {
		snprintf(u->detail, sizeof(u->detail), "new master key register is %s",
		         ky_new_state_name(u->st.new_state));
		return KY_ERR_REGISTER_STATE;
	}
	return 0;
}

static int ar_setimm_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	const struct ar *ar = ctx;

	(void)run;
	if (u->st.cur_state == KY_CUR_VALID && strcmp(u->st.cur_vp, ar->vp_hex) == 0) {
		snprintf(u->detail, sizeof(u->detail), "already the current master key");
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (u->st.new_state != KY_NEW_COMMITTED || strcmp(u->st.new_vp, ar->vp_hex) != 0) {
		snprintf(u->detail, sizeof(u->detail), "new master key register is %s",
		         ky_new_state_name(u->st.new_state));
		return KY_ERR_REGISTER_STATE;
	}
	return 0;
}

static int ar_vp_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	const struct ar *ar = ctx;

	(void)run;
	(void)u;
	memcpy(c->vp, ar->vp, KY_VP_LEN);
	c->has_vp = true;
	return 0;
}

/* Step 3: recipient chains of the targets still without the key, export, envelopes kept. */
static int ar_export(struct ar *ar)
{
	struct tke_run *run = &ar->run;
	struct tke_op op = {KY_OP_MK_EXPORT, NULL, ar_export_fill, ar};
	size_t to[AR_MAX_UNITS], n = 0;
	json_t *envs, *sigs;
	char what[128];
	int status;

	ar_skip(ar, true);
	if (tke_run_refresh(run) != 0)
		return ky_err_exit(KY_ERR_UNREACHABLE);
	if (unit_identity_cert(&run->inst, &run->units[ar->source].u, &ar->source_id) != 0)
		return ky_err_exit(KY_ERR_IDENTITY_CHANGED);
	for (size_t i = 0; i < run->n; i++) {
		if (!ar->target[i] || !ar_needs_import(ar, &run->units[i]) ||
		    run->units[i].st.new_state != KY_NEW_EMPTY)
			continue;
		if (n >= KY_MAX_ADMINS)
			return cli_fail(KY_ERR_USAGE, NULL,
			                "at most %d crypto units take the key in one run: run "
			                "auto-recover again for the others",
			                KY_MAX_ADMINS);
		if (unit_importer(&run->inst, &run->units[i].u, &ar->recips[n]) != 0 ||
		    unit_identity_cert(&run->inst, &run->units[i].u, &ar->recip_ids[n]) != 0) {
			ar->nrecips = n + 1;
			return ky_err_exit(KY_ERR_UNREACHABLE);
		}
		to[n++] = i;
		ar->nrecips = n;
	}
	if (n == 0) {
		ar->step++;
		if (!cli_g.json)
			printf("step %d of %d: export the master key: no unit needs it\n\n",
			       ar->step, ar->nsteps);
		return 0;
	}
	snprintf(what, sizeof(what),
	         "export the current master key from crypto unit %d to %zu unit%s",
	         run->units[ar->source].u.number, n, n == 1 ? "" : "s");
	if ((status = ar_step(ar, what, &op, false)) != 0)
		return status;
	envs = json_object_get(run->units[ar->source].result_json, "envelopes");
	sigs = json_object_get(run->units[ar->source].result_json, "signatures");
	if (json_array_size(envs) != n || json_array_size(sigs) != n)
		return cli_fail(KY_ERR_BAD_REPLY, "crypto unit",
		                "mk-export answered %zu envelopes and %zu signatures for %zu "
		                "recipients",
		                json_array_size(envs), json_array_size(sigs), n);
	for (size_t k = 0; k < n; k++) {
		const char *e = json_string_value(json_array_get(envs, k));
		const char *s = json_string_value(json_array_get(sigs, k));
		if (e == NULL || s == NULL || ky_b64_decode(e, &ar->envelopes[to[k]]) != 0 ||
		    ky_b64_decode(s, &ar->signatures[to[k]]) != 0)
			return cli_fail(KY_ERR_BAD_REPLY, "crypto unit",
			                "mk-export envelope or signature %zu is not base64", k + 1);
	}
	return 0;
}

/* Refreshes all units; true when every one holds the same admins, thresholds and key. */
static int ar_summary(struct ar *ar)
{
	struct tke_run *run = &ar->run;
	bool same = true;

	for (size_t i = 0; i < run->n; i++)
		run->units[i].skip = false;
	if (tke_run_refresh(run) != 0)
		return ky_err_exit(KY_ERR_UNREACHABLE);
	for (size_t i = 0; i < run->n; i++)
		same = same && ar_unit_done(ar, &run->units[i]);
	if (cli_g.json) {
		cli_print_json(json_pack("{s:O?, s:b, s:s}", "steps", ar->steps, "identical", same,
		                         "current_vp", ar->vp_hex));
	} else if (same) {
		printf("all %zu selected crypto units hold the same %zu administrators, thresholds "
		       "%d/%d and current master key vp %s\n",
		       run->n, ar->nadmins, ar->sig, ar->rev, ar->vp_hex);
	} else {
		printf("the crypto units still differ: see 'kyok tke cryptounit-compare'\n");
	}
	return same ? 0 : ky_err_exit(KY_ERR_VP_MISMATCH);
}

static int ar_run(struct ar *ar)
{
	int status = 0;

	ar->nsteps = (int)ar->nadmins + 5;
	for (size_t k = 0; k < ar->nadmins; k++) {
		struct tke_op op = {KY_OP_ADMIN_ADD, ar_admin_plan, ar_admin_fill, &ar->admins[k]};
		char what[96];
		snprintf(what, sizeof(what), "install administrator '%s'", ar->admins[k].name);
		if ((status = ar_step(ar, what, &op, true)) != 0)
			return status;
	}
	{
		struct tke_op op = {KY_OP_THRESHOLDS_SET, ar_thr_plan, ar_thr_fill, ar};
		char what[96];
		snprintf(what, sizeof(what), "set thresholds %d/%d", ar->sig, ar->rev);
		if ((status = ar_step(ar, what, &op, true)) != 0)
			return status;
	}
	if ((status = ar_export(ar)) != 0)
		return status;
	{
		struct tke_op op = {KY_OP_MK_IMPORT, ar_import_plan, ar_import_fill, ar};
		if ((status = ar_step(ar, "import the master key", &op, true)) != 0)
			return status;
	}
	{
		struct tke_op op = {KY_OP_MK_COMMIT, ar_commit_plan, ar_vp_fill, ar};
		if ((status = ar_step(ar, "commit the master key", &op, true)) != 0)
			return status;
	}
	{
		struct tke_op op = {KY_OP_MK_SETIMM, ar_setimm_plan, ar_vp_fill, ar};
		if ((status = ar_step(ar, "set the master key as current", &op, true)) != 0)
			return status;
	}
	return ar_summary(ar);
}

int tke_auto_recover_main(int argc, char **argv)
{
	static const struct cli_opt longopts[] = {CLI_OPT_END};
	int r = KY_ERR_INTERNAL, opt, status = 0;
	struct ar ar;

	memset(&ar, 0, sizeof(ar));
	while ((opt = cli_getopt(argc, argv, longopts, cli_common_opts)) != -1) {
		if (opt == 'h') {
			tke_print_help(ar_usage, longopts);
			return 0;
		}
		if (cli_common_opt(opt, optarg) != 0)
			return KY_EXIT_USAGE;
	}
	if (optind != argc)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(), "unexpected argument '%s'",
		                argv[optind]);
	if ((r = tke_run_load(&ar.run)) != 0 || (r = ar_classify(&ar)) != 0 ||
	    (r = ar_read_admins(&ar)) != 0)
		goto out_r;
	ar.run.no_rerun_hint = true;
	for (size_t i = 0; i < ar.run.n; i++) {
		ar.target[i] = !ar_unit_done(&ar, &ar.run.units[i]);
		ar.ntargets += ar.target[i] ? 1 : 0;
	}
	if (ar.ntargets == 0) {
		if (!cli_g.json)
			printf("nothing to recover: ");
		status = ar_summary(&ar);
		goto out;
	}
	/* A live unit that differs in admins or thresholds is not something to copy onto. */
	for (size_t i = 0; i < ar.run.n; i++) {
		const struct tke_unit *u = &ar.run.units[i];
		if (ar.target[i] && u->st.cur_state == KY_CUR_VALID) {
			status = cli_fail(KY_ERR_VP_MISMATCH, NULL,
			                  "crypto unit %d holds the master key but other "
			                  "administrators or thresholds than crypto unit %d: "
			                  "auto-recover does not choose; nothing was done",
			                  u->u.number, ar.run.units[ar.source].u.number);
			goto out;
		}
	}
	if (!cli_g.json) {
		printf("recovering %zu crypto unit%s from crypto unit %d (current master key vp "
		       "%.16s...):",
		       ar.ntargets, ar.ntargets == 1 ? "" : "s", ar.run.units[ar.source].u.number,
		       ar.vp_hex);
		for (size_t i = 0; i < ar.run.n; i++)
			if (ar.target[i])
				printf(" %d", ar.run.units[i].u.number);
		printf("\n\n");
	}
	if (cli_g.json && (ar.steps = json_array()) == NULL) {
		r = cli_err(KY_ERR_NOMEM, NULL, NULL);
		goto out_r;
	}
	if ((r = cli_signers_open(&ar.signers, &ar.nsigners)) != 0)
		goto out_r;
	status = ar_run(&ar);
	goto out;
out_r:
	status = ky_err_exit(r);
out:
	ar_release(&ar);
	return status;
}
