/* The signed-command engine shared by the tke commands that change crypto units: read each
 * unit's state, plan, check the signers, sign, submit (or prepare a bundle, cli/tke_bundle.c),
 * report. The bundle verbs cmd-show, cmd-sign and cmd-submit are in cli/tke_cmd.c.
 *
 * Size: the engine in one file, on purpose: loading, planning, checking signers, signing,
 * submitting and reporting act on one struct tke_run in the order a command runs them; what
 * stands apart is already apart (the bundle format in tke_bundle.c, the bundle verbs in
 * tke_cmd.c).
 */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/tke_bundle.h"
#include "cli/tke_signing.h"
#include "cli/token.h"
#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/wire.h"

/* ---- small helpers ---- */

void tke_note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void tke_print_help(const char *usage, const struct cli_opt *opts)
{
	cli_opts_help(stdout, usage, opts, cli_common_opts);
}

int tke_int_parse(const char *s, int lo, int hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	while (*end == ' ' || *end == '\t' || *end == '\n')
		end++;
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return KY_ERR_USAGE;
	*out = (int)v;
	return 0;
}

int tke_opts_prepare(int argc, char **argv, const char *usage, bool imprint, const char **prepare,
                     const char **parts)
{
	enum { OPT_PREPARE = 0x2001, OPT_PARTS };
	static const struct cli_opt with_parts[] = {
	    {"parts", OPT_PARTS, CLI_ARG_REQUIRED, "N,N,...",
	     "key part numbers (from 'mks'); asked when missing"},
	    TKE_OPT_PREPARE(OPT_PREPARE),
	    CLI_OPT_END};
	static const struct cli_opt with_imprint[] = {TKE_OPT_PREPARE(OPT_PREPARE), CLI_OPT_IMPRINT,
	                                              CLI_OPT_END};
	static const struct cli_opt prepare_only[] = {TKE_OPT_PREPARE(OPT_PREPARE), CLI_OPT_END};
	const struct cli_opt *opts = parts != NULL ? with_parts
	                             : imprint     ? with_imprint
	                                           : prepare_only;
	int opt;

	*prepare = NULL;
	if (parts != NULL)
		*parts = NULL;
	while ((opt = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (opt == 'h') {
			tke_print_help(usage, opts);
			return -1;
		}
		if (opt == OPT_PREPARE) {
			*prepare = optarg;
			continue;
		}
		if (opt == OPT_PARTS) {
			*parts = optarg;
			continue;
		}
		if (cli_common_opt(opt, optarg) != 0)
			return KY_ERR_USAGE;
	}
	if (optind != argc)
		return cli_err(KY_ERR_USAGE, cli_cmd_name(),
		               "unexpected argument '%s': see '%s --help'", argv[optind],
		               cli_cmd_name());
	return 0;
}

int tke_fill_admin_cert(X509 *cert, struct ky_command *c)
{
	if (X509_up_ref(cert) != 1)
		return KY_ERR_CRYPTO;
	c->cert = cert;
	return 0;
}

int tke_parse_int(const char *s, const char *flag, int lo, int hi, int *out)
{
	if (tke_int_parse(s, lo, hi, out) != 0)
		return cli_err(KY_ERR_USAGE, cli_cmd_name(),
		               "%s takes a number from %d to %d, not '%s'", flag, lo, hi, s);
	return 0;
}

int tke_ask_int(const char *prompt, const char *flag, int lo, int hi, int def, int *out)
{
	int r = KY_ERR_INTERNAL;
	char *line = NULL, full[256];

	if (def != 0)
		snprintf(full, sizeof(full), "%s [%d]", prompt, def);
	else
		snprintf(full, sizeof(full), "%s", prompt);
	if ((r = cli_prompt_line(full, flag, &line)) != 0)
		return r;
	if (def != 0 && line[0] == '\0')
		*out = def;
	else
		r = tke_parse_int(line, flag, lo, hi, out);
	free(line);
	return r;
}

int tke_ask_threshold(const char *prompt, const char *flag, int hi, int def, int *out)
{
	int r = KY_ERR_INTERNAL;
	char *line = NULL, full[256];

	if (def != 0)
		snprintf(full, sizeof(full), "%s [%d]", prompt, def);
	else
		snprintf(full, sizeof(full), "%s", prompt);
	if ((r = cli_prompt_line(full, flag, &line)) != 0)
		return r;
	if (def != 0 && line[0] == '\0')
		*out = def;
	else if (tke_int_parse(line, 1, hi, out) != 0)
		r = cli_err(KY_ERR_THRESHOLD_RANGE, prompt, "not '%s'", line);
	free(line);
	return r;
}

int tke_selected_sigkeys(struct cli_sigkey **keys, size_t *n, size_t *nselected)
{
	int r = KY_ERR_INTERNAL;

	*nselected = 0;
	if ((r = cli_sigkeys_list(keys, n)) != 0)
		return r;
	for (size_t i = 0; i < *n; i++)
		if ((*keys)[i].selected)
			(*nselected)++;
	return 0;
}

int tke_signer_open_path(const char *path, const char *password, struct cli_signer *out,
                         char why[CLI_TOKEN_WHY_MAX])
{
	int r = KY_ERR_INTERNAL;
	struct ky_sigkey_token tok;
	bool in_token = false;

	memset(out, 0, sizeof(*out));
	why[0] = '\0';
	if ((r = ky_sigkey_read(path, &out->cert, &tok, &in_token)) == KY_ERR_SIGKEY_IN_CARD) {
		/* The card is asked for, and its PIN when it wants it, when it signs. */
		if ((out->card = calloc(1, sizeof(*out->card))) == NULL) {
			r = KY_ERR_NOMEM;
			goto out;
		}
		if ((r = ky_sigkey_read_card(path, &out->cert, out->card)) != 0 ||
		    (r = ky_cert_cn(out->cert, out->name, sizeof(out->name))) != 0)
			goto out;
		r = 0;
		goto out;
	}
	if (r != 0)
		goto out;
	if ((r = ky_cert_cn(out->cert, out->name, sizeof(out->name))) != 0)
		goto out;
	if (in_token) {
		if ((r = cli_signer_open_token(out, &tok, password, why)) != 0)
			goto out;
	} else {
		X509_free(out->cert);
		out->cert = NULL;
		if ((r = ky_sigkey_open(path, password, &out->cert, &out->key)) != 0)
			goto out;
	}
	r = 0;
out:
	if (r != 0) {
		X509_free(out->cert);
		EVP_PKEY_free(out->key);
		free(out->card);
		memset(out, 0, sizeof(*out));
	}
	return r;
}

/* ---- unit state ---- */

int tke_required(const struct ky_unit_state *st, const struct ky_command *c, int *required)
{
	int r = KY_ERR_INTERNAL;
	/* The ceremony's own rule decides; it reads only thresholds, admins and registers.
	 * No key material is in this copy. */
	struct ky_domain *d = calloc(1, sizeof(*d));

	*required = 0;
	if (d == NULL)
		return KY_ERR_NOMEM;
	d->next_counter = st->counter;
	d->sig_threshold = st->sig;
	d->rev_threshold = st->rev;
	d->nadmins = st->nadmins;
	for (size_t i = 0; i < st->nadmins; i++) {
		snprintf(d->admins[i].name, sizeof(d->admins[i].name), "%s", st->admins[i].name);
		memcpy(d->admins[i].ski, st->admins[i].ski, KY_SKI_LEN);
	}
	d->new_state = st->new_state;
	if (st->new_vp[0] != '\0' && ky_hex_decode(st->new_vp, d->new_vp, KY_VP_LEN) != 0)
		goto out;
	d->cur_state = st->cur_state;
	if (st->cur_vp[0] != '\0' && ky_hex_decode(st->cur_vp, d->cur_vp, KY_VP_LEN) != 0)
		goto out;
	r = ky_ceremony_required(d, c, required);
out:
	free(d);
	return r;
}

/* ---- runs ---- */

static void tke_unit_clear(struct tke_unit *u)
{
	json_decref(u->result_json);
	u->result_json = NULL;
	ky_buf_free(&u->content);
	ky_buf_free(&u->cms);
	u->result = TKE_PENDING;
	u->err = 0;
	u->detail[0] = '\0';
	u->op_summary[0] = '\0';
	u->required = 0;
}

void tke_unit_set(struct tke_unit *u, enum tke_result res, int err, const char *fmt, ...)
{
	char text[sizeof(u->detail)] = "";
	va_list ap;

	/* Formatted apart first: the arguments may be u->detail itself. */
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(text, sizeof(text), fmt, ap);
		va_end(ap);
	}
	u->result = res;
	u->err = err;
	memcpy(u->detail, text, sizeof(u->detail));
}

int tke_run_refresh(struct tke_run *run)
{
	int r = KY_ERR_INTERNAL;

	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		json_t *st = NULL;
		const char *unit_id;

		tke_unit_clear(u);
		if (u->skip)
			continue;
		u->reachable = false;
		r = unit_state(&run->inst, &u->u, &st);
		if (r == KY_ERR_UNREACHABLE || r == KY_ERR_INSTANCE_DOWN) {
			tke_unit_set(u, TKE_UNREACHABLE, r, NULL);
			continue;
		}
		if (r != 0)
			return r; /* printed by unit_state: identity changed, bad reply */
		unit_id = json_string_value(json_object_get(st, "unit"));
		r = ky_unit_state_parse(st, &u->st);
		if (r == 0 && (unit_id == NULL || strcmp(unit_id, u->u.id) != 0))
			r = KY_ERR_BAD_REPLY;
		json_decref(st);
		if (r != 0) {
			char subject[64];
			snprintf(subject, sizeof(subject), "crypto unit %d", u->u.number);
			cli_fail(r, subject, "its state is not what a crypto unit '%s' answers",
			         u->u.id);
			return r;
		}
		u->reachable = true;
	}
	return 0;
}

int tke_run_load(struct tke_run *run)
{
	int r = KY_ERR_INTERNAL;
	struct cli_unit *sel = NULL;
	size_t n = 0;

	memset(run, 0, sizeof(*run));
	if ((r = cli_instance_load(&run->inst)) != 0)
		goto out;
	if ((r = cli_selected_units(&run->inst, &sel, &n)) != 0)
		goto out;
	if (n == 0) {
		r = cli_err(KY_ERR_NO_UNITS, NULL, NULL);
		goto out;
	}
	if ((run->units = calloc(n, sizeof(*run->units))) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		run->units[i].u = sel[i];
	run->n = n;
	r = tke_run_refresh(run);
out:
	free(sel);
	return r;
}

int tke_run_load_ids(struct tke_run *run, const char *const *ids, size_t n)
{
	int r = KY_ERR_INTERNAL;

	memset(run, 0, sizeof(*run));
	if ((r = cli_instance_load(&run->inst)) != 0)
		return r;
	if ((run->units = calloc(n == 0 ? 1 : n, sizeof(*run->units))) == NULL)
		return cli_err(KY_ERR_NOMEM, NULL, NULL);
	for (size_t i = 0; i < n; i++) {
		const struct cli_unit *found = NULL;

		for (size_t k = 0; k < run->inst.nunits; k++)
			if (strcmp(run->inst.units[k].id, ids[i]) == 0)
				found = &run->inst.units[k];
		if (found == NULL)
			return cli_err(KY_ERR_NOT_FOUND, ids[i],
			               "no crypto unit with this id in instance '%s' (%s)",
			               run->inst.id, run->inst.dir);
		run->units[i].u = *found;
		run->n = i + 1;
	}
	return tke_run_refresh(run);
}

void tke_run_release(struct tke_run *run)
{
	if (run == NULL)
		return;
	for (size_t i = 0; i < run->n; i++)
		tke_unit_clear(&run->units[i]);
	free(run->units);
	run->units = NULL;
	run->n = 0;
}

/* The command's own fields, in words (cmd-show, bundle comments). */
void tke_command_summary(const struct ky_command *c, char *out, size_t outlen)
{
	char hex[2 * KY_SKI_LEN + 1];
	char cn[KY_ADMIN_NAME_MAX + 1] = "?";

	out[0] = '\0';
	switch (c->op) {
	case KY_OP_ADMIN_ADD:
		if (c->cert != NULL && ky_cert_cn(c->cert, cn, sizeof(cn)) != 0)
			snprintf(cn, sizeof(cn), "?");
		hex[0] = '\0';
		if (c->cert != NULL) {
			uint8_t ski[KY_SKI_LEN];
			if (ky_cert_ski(c->cert, ski) == 0)
				ky_hex_encode(ski, KY_SKI_LEN, hex);
		}
		snprintf(out, outlen, "administrator '%s' ski %s", cn, hex);
		break;
	case KY_OP_ADMIN_RM:
		ky_hex_encode(c->ski, KY_SKI_LEN, hex);
		snprintf(out, outlen, "administrator with ski %s", hex);
		break;
	case KY_OP_THRESHOLDS_SET:
		snprintf(out, outlen, "signature threshold %d, revocation threshold %d", c->sig,
		         c->rev);
		break;
	case KY_OP_MK_LOAD:
		if (c->has_vp)
			ky_hex_encode(c->vp, KY_VP_LEN, hex);
		snprintf(out, outlen, "%zu key parts, vp %s", c->nparts,
		         c->has_vp ? hex : "(none)");
		break;
	case KY_OP_MK_COMMIT:
	case KY_OP_MK_SETIMM:
	case KY_OP_MK_IMPORT:
	case KY_OP_MK_REENCIPHER:
		if (c->has_vp)
			ky_hex_encode(c->vp, KY_VP_LEN, hex);
		snprintf(out, outlen, "vp %s", c->has_vp ? hex : "(none)");
		break;
	case KY_OP_APIKEY_CREATE:
		snprintf(out, outlen, "API key '%s' (%s), role %s", c->apikey_name, c->apikey_id,
		         c->role);
		break;
	case KY_OP_APIKEY_REVOKE:
		snprintf(out, outlen, "API key %s", c->apikey_id);
		break;
	case KY_OP_MK_EXPORT:
		snprintf(out, outlen, "to %zu importer certificates", c->nrecips);
		break;
	case KY_OP_EXIT_IMPRINT:
	case KY_OP_MK_CLRNEW:
	case KY_OP_MK_CLRCUR:
	case KY_OP_ZEROIZE:
	case KY_OP_STORAGE_ACCEPT:
	case KY_OP_MK_GENERATE:
		break;
	}
}

static void tke_unit_subject(const struct tke_unit *u, char *out, size_t outlen)
{
	snprintf(out, outlen, "crypto unit %d (%s)", u->u.number, u->u.zone);
}

int tke_print_local_refusals(struct tke_run *run)
{
	int first = 0;

	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		char subject[128];

		if (u->skip || u->result != TKE_REFUSED)
			continue;
		tke_unit_subject(u, subject, sizeof(subject));
		cli_fail(u->err, subject, "%s", u->detail);
		if (first == 0)
			first = u->err;
	}
	if (first != 0)
		tke_note("nothing was sent to any crypto unit");
	return first;
}

/* Before any password: a unit in imprint mode takes the command only with the instance's
 * imprint credential, so it must be at hand (the unit enforces it; this only fails early). */
int tke_run_imprint_check(struct tke_run *run)
{
	int r = KY_ERR_INTERNAL;
	char why[512] = "";

	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (u->skip || !u->reachable || u->result != TKE_PENDING || !u->st.imprint)
			continue;
		if ((r = cli_imprint_require(why, sizeof(why))) != 0) {
			cli_fail(r, "imprint credential", "%s", why);
			tke_note("nothing was sent to any crypto unit");
			return r;
		}
		return 0;
	}
	return 0;
}

int tke_run_plan(struct tke_run *run, const struct tke_op *op)
{
	int r = KY_ERR_INTERNAL;

	run->local_refusal = false;
	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		struct ky_command *c = NULL;
		int mode_err = 0, req = 0;

		if (u->skip || !u->reachable)
			continue;
		tke_unit_clear(u);
		/* Mode first: a command not allowed in the unit's mode says so, whatever else. */
		if ((c = ky_command_new()) == NULL)
			return cli_err(KY_ERR_NOMEM, NULL, NULL);
		c->op = op->op;
		r = tke_required(&u->st, c, &req);
		if (r == KY_ERR_IMPRINT_MODE || r == KY_ERR_NOT_IMPRINT_MODE)
			mode_err = r;
		ky_command_free(c);
		c = NULL;

		if (op->plan != NULL && (r = op->plan(op->ctx, run, u)) != 0) {
			tke_unit_set(u, TKE_REFUSED, mode_err != 0 ? mode_err : r, "%s",
			             mode_err != 0 ? "" : u->detail);
			run->local_refusal = true;
			continue;
		}
		if (u->result == TKE_UNCHANGED)
			continue;
		if (mode_err != 0) {
			tke_unit_set(u, TKE_REFUSED, mode_err, NULL);
			run->local_refusal = true;
			continue;
		}
		if ((c = ky_command_new()) == NULL)
			return cli_err(KY_ERR_NOMEM, NULL, NULL);
		snprintf(c->instance, sizeof(c->instance), "%s", run->inst.id);
		snprintf(c->unit, sizeof(c->unit), "%s", u->u.id);
		memcpy(c->incarnation, u->st.incarnation, KY_INCARNATION_LEN);
		c->counter = u->st.counter;
		c->op = op->op;
		if (op->fill != NULL && (r = op->fill(op->ctx, run, u, c)) != 0) {
			ky_command_free(c);
			if (r == KY_ERR_UNREACHABLE || r == KY_ERR_INSTANCE_DOWN) {
				tke_unit_set(u, TKE_UNREACHABLE, r, NULL);
				continue;
			}
			tke_unit_set(u, TKE_REFUSED, r, "%s", u->detail);
			run->local_refusal = true;
			continue;
		}
		if ((r = tke_required(&u->st, c, &u->required)) != 0) {
			ky_command_free(c);
			tke_unit_set(u, TKE_REFUSED, r, NULL);
			run->local_refusal = true;
			continue;
		}
		tke_command_summary(c, u->op_summary, sizeof(u->op_summary));
		r = ky_command_encode(c, &u->content);
		ky_command_free(c);
		if (r != 0)
			return cli_err(r, "command", "cannot encode the command for crypto unit %d",
			               u->u.number);
		u->result = TKE_PENDING;
	}
	if (run->local_refusal)
		return tke_print_local_refusals(run);
	return 0;
}

size_t tke_run_pending(const struct tke_run *run, int *max_required)
{
	size_t n = 0;

	if (max_required != NULL)
		*max_required = 0;
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (u->skip || u->result != TKE_PENDING || !u->reachable)
			continue;
		n++;
		if (max_required != NULL && u->required > *max_required)
			*max_required = u->required;
	}
	return n;
}

/* Distinct administrators of st among the given SKIs; names appended to names. */
int tke_count_admin_skis(const struct ky_unit_state *st, const uint8_t (*skis)[KY_SKI_LEN],
                         size_t n, char *names, size_t nameslen)
{
	bool seen[KY_MAX_ADMINS] = {false};
	int count = 0;

	if (names != NULL && nameslen > 0)
		names[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int a = ky_unit_state_admin_by_ski(st, skis[i]);
		if (a < 0 || seen[a])
			continue;
		seen[a] = true;
		count++;
		if (names != NULL) {
			size_t l = strlen(names);
			snprintf(names + l, nameslen - l, "%s'%s'", l > 0 ? ", " : "",
			         st->admins[a].name);
		}
	}
	return count;
}

/* The largest signature count among the commands this run signs itself (a command that
 * came signed, cmd-submit, is sent as it is). */
static int tke_run_to_sign(const struct tke_run *run)
{
	int maxreq = 0;

	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (u->skip || u->result != TKE_PENDING || !u->reachable || u->cms.len > 0)
			continue;
		if (u->required > maxreq)
			maxreq = u->required;
	}
	return maxreq;
}

/* Each unit to sign for must have its required count of administrators among skis (the n
 * signature keys that sign). Prints the units that fall short and returns the error. */
static int tke_run_check_skis(struct tke_run *run, const uint8_t (*skis)[KY_SKI_LEN], size_t n)
{
	bool short_any = false;

	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		char names[256];
		int have;

		if (u->skip || u->result != TKE_PENDING || u->required == 0 || u->cms.len > 0)
			continue;
		have = tke_count_admin_skis(&u->st, skis, n, names, sizeof(names));
		if (have >= u->required)
			continue;
		tke_unit_set(
		    u, TKE_REFUSED, KY_ERR_NOT_ENOUGH_SIGNATURES,
		    "%s needs %d signature%s; %d of the %zu selected signature keys %s an "
		    "administrator of this unit%s%s%s: select more with 'kyok tke sigkey-sel'",
		    "the command", u->required, u->required == 1 ? "" : "s", have, n,
		    have == 1 ? "is" : "are", have > 0 ? " (" : "", names, have > 0 ? ")" : "");
		short_any = true;
	}
	return short_any ? tke_print_local_refusals(run) : 0;
}

int tke_run_check_signers(struct tke_run *run)
{
	int r = KY_ERR_INTERNAL;
	struct cli_sigkey *keys = NULL;
	size_t nkeys = 0, nsel = 0, k = 0;
	uint8_t(*skis)[KY_SKI_LEN] = NULL;
	int maxreq = tke_run_to_sign(run);

	if (maxreq == 0)
		return 0;
	if ((r = tke_selected_sigkeys(&keys, &nkeys, &nsel)) != 0)
		return r;
	if (nsel == 0) {
		r = KY_ERR_NO_SIGNERS;
		cli_fail(r, NULL, "this command needs %d signature%s on the selected crypto units",
		         maxreq, maxreq == 1 ? "" : "s");
		goto out;
	}
	if ((skis = calloc(nsel, sizeof(*skis))) == NULL) {
		r = cli_err(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < nkeys; i++)
		if (keys[i].selected)
			memcpy(skis[k++], keys[i].ski, KY_SKI_LEN);
	if ((r = tke_run_check_skis(run, (const uint8_t(*)[KY_SKI_LEN])skis, nsel)) != 0)
		goto out;
	r = 0;
out:
	free(skis);
	free(keys);
	return r;
}

/* tke_run_check_signers for signers a verb opened itself. */
static int tke_run_check_open_signers(struct tke_run *run, const struct cli_signer *signers,
                                      size_t nsigners)
{
	int r = KY_ERR_INTERNAL;
	uint8_t(*skis)[KY_SKI_LEN] = NULL;
	size_t k = 0;

	if (tke_run_to_sign(run) == 0)
		return 0;
	if ((skis = calloc(nsigners + 1, sizeof(*skis))) == NULL)
		return cli_err(KY_ERR_NOMEM, NULL, NULL);
	for (size_t i = 0; i < nsigners; i++)
		if (ky_cert_ski(signers[i].cert, skis[k]) == 0)
			k++;
	r = tke_run_check_skis(run, (const uint8_t(*)[KY_SKI_LEN])skis, k);
	free(skis);
	return r;
}

/* The command for each pending unit, signed by every signer that is one of its
 * administrators (once each), into ders[i]; signer by signer, so that a key on a card signs
 * for every unit while its card is in the reader. Nothing is sent here: a signer that
 * fails (a wrong PIN, another card, a card not inserted in time) leaves every unit
 * without its command. */
static int tke_sign_all(struct tke_run *run, const struct cli_signer *signers, size_t nsigners,
                        struct ky_buf *ders)
{
	int r = KY_ERR_INTERNAL;
	bool(*used)[KY_MAX_ADMINS] = NULL;

	if ((used = calloc(run->n + 1, sizeof(*used))) == NULL)
		return KY_ERR_NOMEM;
	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];

		if (u->skip || u->result != TKE_PENDING || !u->reachable)
			continue;
		if (u->cms.len > 0)
			r = ky_buf_append(&ders[i], u->cms.data, u->cms.len);
		else
			r = ky_cms_unsigned(u->content.data, u->content.len, &ders[i]);
		if (r != 0)
			goto out;
	}
	for (size_t k = 0; k < nsigners; k++) {
		uint8_t ski[KY_SKI_LEN];

		if (ky_cert_ski(signers[k].cert, ski) != 0)
			continue;
		for (size_t i = 0; i < run->n; i++) {
			struct tke_unit *u = &run->units[i];
			int a;

			if (u->skip || u->result != TKE_PENDING || !u->reachable ||
			    u->cms.len > 0 || u->required == 0)
				continue;
			if ((a = ky_unit_state_admin_by_ski(&u->st, ski)) < 0 || used[i][a])
				continue;
			used[i][a] = true;
			if ((r = cli_signer_sign(&signers[k], &ders[i])) != 0)
				goto out;
		}
	}
	r = 0;
out:
	free(used);
	return r;
}

void tke_run_submit(struct tke_run *run, const struct cli_signer *signers, size_t nsigners)
{
	struct ky_buf *ders = calloc(run->n + 1, sizeof(*ders));
	int r = ders == NULL ? KY_ERR_NOMEM : tke_sign_all(run, signers, nsigners, ders);

	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		json_t *reply = NULL;
		char *detail = NULL;

		if (u->skip || u->result != TKE_PENDING || !u->reachable)
			continue;
		if (r != 0) {
			tke_unit_set(u, TKE_REFUSED, r,
			             "cannot sign the command: nothing was sent");
			continue;
		}
		int rc =
		    unit_command(&run->inst, &u->u, ders[i].data, ders[i].len, &reply, &detail);
		if (rc == 0) {
			json_t *res = json_object_get(reply, "result");
			json_t *st = json_object_get(reply, "state");
			struct ky_unit_state nst;

			u->result = TKE_CHANGED;
			u->result_json = json_incref(res);
			if (st != NULL && ky_unit_state_parse(st, &nst) == 0)
				u->st = nst;
		} else if (rc == KY_ERR_UNREACHABLE || rc == KY_ERR_INSTANCE_DOWN) {
			tke_unit_set(u, TKE_UNREACHABLE, rc, "%s", detail != NULL ? detail : "");
		} else if (rc == KY_ERR_WRONG_COUNTER) {
			const char *d = detail != NULL ? detail : "";
			tke_unit_set(u, TKE_REFUSED, rc, "%s%s%s", d, d[0] != '\0' ? ": " : "",
			             u->cms.len > 0 ? "prepare the command again"
			                            : "another command reached the unit meanwhile: "
			                              "run the command again");
		} else {
			tke_unit_set(u, TKE_REFUSED, rc, "%s", detail != NULL ? detail : "");
		}
		json_decref(reply);
		free(detail);
	}
	for (size_t i = 0; ders != NULL && i < run->n; i++)
		ky_buf_free(&ders[i]);
	free(ders);
}

int tke_run_prepare(struct tke_run *run, const char *path)
{
	int r = KY_ERR_INTERNAL;
	struct tke_bundle b = {0};
	size_t ntodo = tke_run_pending(run, NULL);

	if (ntodo == 0) {
		tke_note("no crypto unit needs this command: no bundle written");
		return 0;
	}
	if ((b.cmds = calloc(ntodo, sizeof(*b.cmds))) == NULL)
		return cli_err(KY_ERR_NOMEM, NULL, NULL);
	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		struct tke_bundle_cmd *bc;
		char line[512];
		struct ky_command *c = NULL;

		if (u->skip || u->result != TKE_PENDING || !u->reachable)
			continue;
		bc = &b.cmds[b.n++];
		if ((r = ky_command_parse(u->content.data, u->content.len, &c)) != 0)
			goto out;
		snprintf(line, sizeof(line),
		         "# kyok command: %s unit %d %s counter %llu\n# instance: %s, zone: %s\n",
		         ky_op_name(c->op), u->u.number, u->u.id, (unsigned long long)c->counter,
		         run->inst.id, u->u.zone);
		ky_command_free(c);
		if ((r = ky_buf_append_str(&bc->comments, line)) != 0)
			goto out;
		if (u->op_summary[0] != '\0') {
			snprintf(line, sizeof(line), "# %s\n", u->op_summary);
			if ((r = ky_buf_append_str(&bc->comments, line)) != 0)
				goto out;
		}
		snprintf(line, sizeof(line), "# signatures required when prepared: %d\n",
		         u->required);
		if ((r = ky_buf_append_str(&bc->comments, line)) != 0)
			goto out;
		if ((r = ky_cms_unsigned(u->content.data, u->content.len, &bc->der)) != 0)
			goto out;
	}
	if ((r = tke_bundle_write(path, &b, false)) != 0)
		goto out_printed;
	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		if (!u->skip && u->result == TKE_PENDING && u->reachable)
			tke_unit_set(u, TKE_PREPARED, 0, "%d signature%s needed", u->required,
			             u->required == 1 ? "" : "s");
	}
	r = 0;
	goto out_printed;
out:
	cli_fail(r, path, "cannot prepare the command bundle");
out_printed:
	tke_bundle_release(&b);
	return r;
}

/* ---- reporting ---- */

static const char *tke_result_slug(enum tke_result res)
{
	switch (res) {
	case TKE_PENDING:
		return "not-sent";
	case TKE_CHANGED:
		return "changed";
	case TKE_UNCHANGED:
		return "unchanged";
	case TKE_REFUSED:
		return "refused";
	case TKE_UNREACHABLE:
		return "unreachable";
	case TKE_PREPARED:
		return "prepared";
	}
	return "unknown";
}

static void tke_result_text(const struct tke_unit *u, char *out, size_t outlen)
{
	switch (u->result) {
	case TKE_CHANGED:
	case TKE_PENDING:
		snprintf(out, outlen, "%s", tke_result_slug(u->result));
		break;
	case TKE_UNREACHABLE:
		snprintf(out, outlen, "unreachable%s%s", u->detail[0] != '\0' ? ": " : "",
		         u->detail);
		break;
	case TKE_UNCHANGED:
	case TKE_PREPARED:
		snprintf(out, outlen, "%s: %s", tke_result_slug(u->result), u->detail);
		break;
	case TKE_REFUSED:
		if (u->detail[0] == '\0')
			snprintf(out, outlen, "refused: %s", ky_err_message(u->err));
		else if (strncmp(u->detail, ky_err_message(u->err),
		                 strlen(ky_err_message(u->err))) == 0)
			snprintf(out, outlen, "refused: %s", u->detail);
		else
			snprintf(out, outlen, "refused: %s: %s", ky_err_message(u->err), u->detail);
		break;
	}
}

int tke_run_report(struct tke_run *run, const char *title, json_t *json_steps)
{
	size_t total = 0, changed = 0, failed = 0, prepared = 0;
	int status = 0;
	json_t *arr = cli_g.json ? json_array() : NULL;
	struct cli_table *t = NULL;
	static const char *const hdr[] = {"UNIT", "ZONE", "RESULT"};

	if (!cli_g.json)
		t = cli_table_new(3, hdr);
	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		char num[16], text[1024];

		if (u->skip)
			continue;
		total++;
		if (u->result == TKE_CHANGED)
			changed++;
		if (u->result == TKE_PREPARED)
			prepared++;
		if (u->result == TKE_REFUSED || u->result == TKE_UNREACHABLE ||
		    u->result == TKE_PENDING) {
			failed++;
			if (status == 0)
				status = ky_err_exit(u->err != 0 ? u->err : KY_ERR_INTERNAL);
		}
		tke_result_text(u, text, sizeof(text));
		if (arr != NULL) {
			json_t *o = json_pack("{s:i, s:s, s:s, s:s?, s:s?}", "number", u->u.number,
			                      "id", u->u.id, "result", tke_result_slug(u->result),
			                      "error", u->err != 0 ? ky_err_slug(u->err) : NULL,
			                      "detail", u->detail[0] != '\0' ? u->detail : NULL);
			if (o == NULL || json_array_append_new(arr, o) != 0)
				status = KY_EXIT_INTERNAL;
		} else if (t != NULL) {
			const char *cells[3] = {num, u->u.zone, text};
			snprintf(num, sizeof(num), "%d", u->u.number);
			if (cli_table_add(t, cells) != 0)
				status = KY_EXIT_INTERNAL;
		}
	}
	if (arr != NULL) {
		if (json_steps != NULL) {
			json_array_append_new(
			    json_steps,
			    json_pack("{s:s, s:o}", "step", title ? title : "", "units", arr));
		} else {
			cli_print_json(json_pack("{s:o}", "units", arr));
		}
	} else if (t != NULL) {
		if (title != NULL)
			printf("%s\n", title);
		cli_table_print(t, stdout);
		cli_table_free(t);
		if (prepared > 0)
			printf("prepared commands for %zu of %zu crypto units\n", prepared, total);
		else
			printf("changed %zu of %zu crypto units\n", changed, total);
		if (changed > 0 && failed > 0 && !run->no_rerun_hint)
			printf("re-run the command to complete the remaining units\n");
	}
	fflush(stdout);
	return status;
}

int tke_run_command(struct tke_run *run, const struct tke_op *op, const struct tke_hooks *hooks)
{
	const struct tke_unit *only = hooks != NULL ? hooks->only : NULL;
	int r = KY_ERR_INTERNAL, status = 0;

	if (only != NULL) {
		for (size_t i = 0; i < run->n; i++)
			run->units[i].skip = &run->units[i] != only;
		if ((r = tke_run_refresh(run)) != 0)
			goto out;
		if (!only->reachable) {
			r = KY_ERR_UNREACHABLE; /* nothing sent, nothing printed: the verb goes on */
			goto out;
		}
	}
	if ((r = tke_run_plan(run, op)) != 0)
		goto out;
	status = tke_run_finish(run, hooks);
	r = 0;
out:
	for (size_t i = 0; only != NULL && i < run->n; i++)
		run->units[i].skip = false;
	return r != 0 ? ky_err_exit(r) : status;
}

/* Every unit of the run (at least one) took the command. */
static bool tke_run_all_changed(const struct tke_run *run)
{
	size_t changed = 0;

	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (u->skip)
			continue;
		if (u->result != TKE_CHANGED)
			return false;
		changed++;
	}
	return changed > 0;
}

/* Signs (with the verb's signers, or the selected signature keys opened here) and submits;
 * every check before any password. */
static int tke_run_sign_submit(struct tke_run *run, const struct tke_hooks *h)
{
	int r = KY_ERR_INTERNAL;
	struct cli_signer *signers = NULL;
	size_t nsigners = 0;

	if ((r = tke_run_imprint_check(run)) != 0)
		return r;
	if (h->signers_open) {
		if ((r = tke_run_check_open_signers(run, h->signers, h->nsigners)) != 0)
			return r;
		tke_run_submit(run, h->signers, h->nsigners);
		return 0;
	}
	if ((r = tke_run_check_signers(run)) != 0)
		return r;
	if (tke_run_to_sign(run) > 0 && (r = cli_signers_open(&signers, &nsigners)) != 0)
		return r;
	tke_run_submit(run, signers, nsigners);
	cli_signers_free(signers, nsigners);
	return 0;
}

int tke_run_finish(struct tke_run *run, const struct tke_hooks *hooks)
{
	static const struct tke_hooks none = {0};
	const struct tke_hooks *h = hooks != NULL ? hooks : &none;
	int r = KY_ERR_INTERNAL;

	if (tke_run_pending(run, NULL) > 0) {
		if (h->warning != NULL)
			tke_note("%s", h->warning);
		if (h->question != NULL && (r = cli_confirm(h->question)) != 0) {
			tke_note("nothing was sent to any crypto unit");
			return ky_err_exit(r);
		}
		if (h->prepare != NULL)
			r = tke_run_prepare(run, h->prepare);
		else
			r = tke_run_sign_submit(run, h);
		if (r != 0)
			return ky_err_exit(r);
	}
	if (h->after_submit != NULL)
		h->after_submit(h->ctx, run);
	if (h->changed_note != NULL && tke_run_all_changed(run)) {
		for (size_t i = 0; i < run->n && !cli_g.json; i++) {
			char subject[128];

			if (run->units[i].skip)
				continue;
			tke_unit_subject(&run->units[i], subject, sizeof(subject));
			tke_note("%s %s", subject, h->changed_note);
		}
		return 0;
	}
	r = tke_run_report(run, h->title, h->json_steps);
	if (h->prepare != NULL && r == 0 && tke_run_pending(run, NULL) == 0 && !cli_g.json) {
		bool any = false;
		for (size_t i = 0; i < run->n; i++)
			any = any || run->units[i].result == TKE_PREPARED;
		if (any)
			printf("wrote %s: sign it with 'kyok tke cmd-sign %s' (on each "
			       "administrator's "
			       "workstation), then 'kyok tke cmd-submit %s'\n",
			       h->prepare, h->prepare, h->prepare);
	}
	return r;
}
