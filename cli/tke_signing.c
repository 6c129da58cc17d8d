/* The signed-command engine shared by the tke commands that change crypto units, and the
 * command bundles that let administrators on different workstations sign one command:
 * cmd-show, cmd-sign, cmd-submit.
 *
 * A command bundle is text: for each crypto unit, '#' comment lines that say what the
 * command does, then one PEM block "CMS" holding the DER CMS SignedData of the command
 * (no signer when prepared; cmd-sign adds one SignerInfo per signature key). openssl
 * reads each block: openssl cms -cmsout -print -inform PEM -in FILE (first block).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/tke_signing.h"
#include "cli/token.h"
#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/wire.h"

#define TKE_BUNDLE_MAX     (16 * (size_t)KY_MAX_COMMAND_BYTES)
#define TKE_PEM_NAME       "CMS"
#define TKE_PEM_BEGIN      "-----BEGIN CMS-----"
#define TKE_PEM_END        "-----END CMS-----"
#define TKE_SIGNERS_PREFIX "# signers:"

/* ---- small helpers ---- */

void tke_note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int tke_err(int err, const char *subject, const char *fmt, ...)
{
	char detail[1024] = "";
	va_list ap;

	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(detail, sizeof(detail), fmt, ap);
		va_end(ap);
	}
	cli_fail(err, subject, "%s", detail);
	return err;
}

void tke_print_help(const char *usage)
{
	fputs(usage, stdout);
	fputs("\n" CLI_COMMON_HELP, stdout);
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

int tke_parse_int(const char *s, const char *flag, int lo, int hi, int *out)
{
	if (tke_int_parse(s, lo, hi, out) != 0)
		return tke_err(KY_ERR_USAGE, cli_cmd_name(),
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
		r = tke_err(KY_ERR_THRESHOLD_RANGE, prompt, "not '%s'", line);
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

static int tke_json_int(const json_t *o, const char *key, json_int_t lo, json_int_t hi,
                        json_int_t *out)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return KY_ERR_BAD_REPLY;
	*out = json_integer_value(v);
	return 0;
}

static int tke_json_vp(const json_t *reg, bool full, char out[2 * KY_VP_LEN + 1])
{
	json_t *v = json_object_get(reg, "vp");
	uint8_t tmp[KY_VP_LEN];

	out[0] = '\0';
	if (!full)
		return json_is_null(v) || v == NULL ? 0 : KY_ERR_BAD_REPLY;
	if (!json_is_string(v) || ky_hex_decode(json_string_value(v), tmp, sizeof(tmp)) != 0)
		return KY_ERR_BAD_REPLY;
	ky_hex_encode(tmp, sizeof(tmp), out);
	return 0;
}

int tke_ustate_parse(const json_t *j, struct tke_ustate *st)
{
	json_int_t v;
	json_t *admins, *reg;
	const char *s;

	memset(st, 0, sizeof(*st));
	if (!json_is_object(j) || !json_is_boolean(json_object_get(j, "imprint")))
		return KY_ERR_BAD_REPLY;
	st->imprint = json_is_true(json_object_get(j, "imprint"));
	if ((s = json_string_value(json_object_get(j, "incarnation"))) == NULL ||
	    ky_hex_decode(s, st->incarnation, KY_INCARNATION_LEN) != 0)
		return KY_ERR_BAD_REPLY;
	ky_hex_encode(st->incarnation, KY_INCARNATION_LEN, st->incarnation_hex);
	if (tke_json_int(j, "next_counter", 0, INT64_MAX, &v) != 0)
		return KY_ERR_BAD_REPLY;
	st->counter = (uint64_t)v;
	if (tke_json_int(j, "signature_threshold", 0, KY_MAX_ADMINS, &v) != 0)
		return KY_ERR_BAD_REPLY;
	st->sig = (int)v;
	if (tke_json_int(j, "revocation_threshold", 0, KY_MAX_ADMINS, &v) != 0)
		return KY_ERR_BAD_REPLY;
	st->rev = (int)v;
	admins = json_object_get(j, "admins");
	if (!json_is_array(admins) || json_array_size(admins) > KY_MAX_ADMINS)
		return KY_ERR_BAD_REPLY;
	for (size_t i = 0; i < json_array_size(admins); i++) {
		json_t *a = json_array_get(admins, i);
		const char *name = json_string_value(json_object_get(a, "name"));
		const char *ski = json_string_value(json_object_get(a, "ski"));
		struct tke_admin_info *ai = &st->admins[i];

		if (name == NULL || ski == NULL || strlen(name) > KY_ADMIN_NAME_MAX ||
		    ky_hex_decode(ski, ai->ski, KY_SKI_LEN) != 0)
			return KY_ERR_BAD_REPLY;
		snprintf(ai->name, sizeof(ai->name), "%s", name);
		ky_hex_encode(ai->ski, KY_SKI_LEN, ai->ski_hex);
	}
	st->nadmins = json_array_size(admins);

	reg = json_object_get(j, "new_mk");
	if ((s = json_string_value(json_object_get(reg, "state"))) == NULL)
		return KY_ERR_BAD_REPLY;
	if (strcmp(s, ky_new_state_name(KY_NEW_EMPTY)) == 0)
		st->new_state = KY_NEW_EMPTY;
	else if (strcmp(s, ky_new_state_name(KY_NEW_UNCOMMITTED)) == 0)
		st->new_state = KY_NEW_UNCOMMITTED;
	else if (strcmp(s, ky_new_state_name(KY_NEW_COMMITTED)) == 0)
		st->new_state = KY_NEW_COMMITTED;
	else
		return KY_ERR_BAD_REPLY;
	if (tke_json_vp(reg, st->new_state != KY_NEW_EMPTY, st->new_vp) != 0)
		return KY_ERR_BAD_REPLY;

	reg = json_object_get(j, "current_mk");
	if ((s = json_string_value(json_object_get(reg, "state"))) == NULL)
		return KY_ERR_BAD_REPLY;
	if (strcmp(s, ky_cur_state_name(KY_CUR_EMPTY)) == 0)
		st->cur_state = KY_CUR_EMPTY;
	else if (strcmp(s, ky_cur_state_name(KY_CUR_VALID)) == 0)
		st->cur_state = KY_CUR_VALID;
	else
		return KY_ERR_BAD_REPLY;
	if (tke_json_vp(reg, st->cur_state == KY_CUR_VALID, st->cur_vp) != 0)
		return KY_ERR_BAD_REPLY;
	return 0;
}

int tke_ustate_admin_by_ski(const struct tke_ustate *st, const uint8_t ski[KY_SKI_LEN])
{
	for (size_t i = 0; i < st->nadmins; i++)
		if (memcmp(st->admins[i].ski, ski, KY_SKI_LEN) == 0)
			return (int)i;
	return -1;
}

int tke_ustate_admin_by_name(const struct tke_ustate *st, const char *name)
{
	for (size_t i = 0; i < st->nadmins; i++)
		if (strcmp(st->admins[i].name, name) == 0)
			return (int)i;
	return -1;
}

int tke_required(const struct tke_ustate *st, const struct ky_command *c, int *required)
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

static void tke_unit_set(struct tke_unit *u, enum tke_result res, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void tke_unit_set(struct tke_unit *u, enum tke_result res, int err, const char *fmt, ...)
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
		r = tke_ustate_parse(st, &u->st);
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
		r = tke_err(KY_ERR_NO_UNITS, NULL, NULL);
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
		return tke_err(KY_ERR_NOMEM, NULL, NULL);
	for (size_t i = 0; i < n; i++) {
		const struct cli_unit *found = NULL;

		for (size_t k = 0; k < run->inst.nunits; k++)
			if (strcmp(run->inst.units[k].id, ids[i]) == 0)
				found = &run->inst.units[k];
		if (found == NULL)
			return tke_err(KY_ERR_NOT_FOUND, ids[i],
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
static void tke_command_summary(const struct ky_command *c, char *out, size_t outlen)
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

static int tke_print_local_refusals(struct tke_run *run)
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
			return tke_err(KY_ERR_NOMEM, NULL, NULL);
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
			return tke_err(KY_ERR_NOMEM, NULL, NULL);
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
			return tke_err(r, "command", "cannot encode the command for crypto unit %d",
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
static int tke_count_admin_skis(const struct tke_ustate *st, const uint8_t (*skis)[KY_SKI_LEN],
                                size_t n, char *names, size_t nameslen)
{
	bool seen[KY_MAX_ADMINS] = {false};
	int count = 0;

	if (names != NULL && nameslen > 0)
		names[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int a = tke_ustate_admin_by_ski(st, skis[i]);
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

int tke_run_check_signers(struct tke_run *run)
{
	int r = KY_ERR_INTERNAL;
	struct cli_sigkey *keys = NULL;
	size_t nkeys = 0, nsel = 0, k = 0;
	uint8_t(*skis)[KY_SKI_LEN] = NULL;
	int maxreq = 0;
	bool short_any = false;

	if (tke_run_pending(run, &maxreq) == 0 || maxreq == 0)
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
		r = tke_err(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < nkeys; i++)
		if (keys[i].selected)
			memcpy(skis[k++], keys[i].ski, KY_SKI_LEN);
	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		char names[256];
		int have;

		if (u->skip || u->result != TKE_PENDING || u->required == 0)
			continue;
		have = tke_count_admin_skis(&u->st, (const uint8_t(*)[KY_SKI_LEN])skis, nsel, names,
		                            sizeof(names));
		if (have >= u->required)
			continue;
		tke_unit_set(
		    u, TKE_REFUSED, KY_ERR_NOT_ENOUGH_SIGNATURES,
		    "%s needs %d signature%s; %d of the %zu selected signature keys %s an "
		    "administrator of this unit%s%s%s: select more with 'kyok tke sigkey-sel'",
		    "the command", u->required, u->required == 1 ? "" : "s", have, nsel,
		    have == 1 ? "is" : "are", have > 0 ? " (" : "", names, have > 0 ? ")" : "");
		short_any = true;
	}
	if (short_any) {
		r = tke_print_local_refusals(run);
		goto out;
	}
	r = 0;
out:
	free(skis);
	free(keys);
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
			if ((a = tke_ustate_admin_by_ski(&u->st, ski)) < 0 || used[i][a])
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
			struct tke_ustate nst;

			u->result = TKE_CHANGED;
			u->result_json = json_incref(res);
			if (st != NULL && tke_ustate_parse(st, &nst) == 0)
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

/* ---- command bundles ---- */

struct tke_bundle_cmd {
	struct ky_buf comments; /* '#' lines before the block, without "# signers:" */
	struct ky_buf der;
};
struct tke_bundle {
	struct tke_bundle_cmd *cmds;
	size_t n;
};

static void tke_bundle_release(struct tke_bundle *b)
{
	for (size_t i = 0; i < b->n; i++) {
		ky_buf_free(&b->cmds[i].comments);
		ky_buf_free(&b->cmds[i].der);
	}
	free(b->cmds);
	b->cmds = NULL;
	b->n = 0;
}

/* Decodes one PEM block text (BEGIN..END lines included). */
static int tke_pem_decode(const char *text, size_t n, struct ky_buf *der)
{
	int r = KY_ERR_NOT_COMMAND;
	BIO *bio = BIO_new_mem_buf(text, (int)n);
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long len = 0;

	if (bio == NULL)
		return KY_ERR_NOMEM;
	if (PEM_read_bio(bio, &name, &header, &data, &len) != 1 ||
	    strcmp(name, TKE_PEM_NAME) != 0 || header[0] != '\0' || len <= 0)
		goto out;
	if ((r = ky_buf_append(der, data, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	return r;
}

/* Pure parser of a bundle's text. why receives "line N: ...". */
static int tke_bundle_parse(const char *text, size_t n, struct tke_bundle *b, char *why,
                            size_t whylen)
{
	int r = KY_ERR_NOT_COMMAND;
	struct ky_buf comments = {0};
	const char *p = text, *end = text + n, *block = NULL;
	size_t lineno = 0, block_line = 0;

	memset(b, 0, sizeof(*b));
	why[0] = '\0';
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl != NULL ? nl : end;
		size_t ll = (size_t)(le - p);

		lineno++;
		if (ll > 0 && p[ll - 1] == '\r')
			ll--;
		if (memchr(p, '\0', ll) != NULL) {
			snprintf(why, whylen, "line %zu: binary data", lineno);
			goto out;
		}
		if (block != NULL) {
			if (ll == strlen(TKE_PEM_END) && memcmp(p, TKE_PEM_END, ll) == 0) {
				struct tke_bundle_cmd *nc;

				nc = realloc(b->cmds, (b->n + 1) * sizeof(*b->cmds));
				if (nc == NULL) {
					r = KY_ERR_NOMEM;
					goto out;
				}
				b->cmds = nc;
				memset(&b->cmds[b->n], 0, sizeof(b->cmds[b->n]));
				b->cmds[b->n].comments = comments;
				memset(&comments, 0, sizeof(comments)); /* transferred */
				b->n++;
				if ((r = tke_pem_decode(block, (size_t)(le - block),
				                        &b->cmds[b->n - 1].der)) != 0) {
					snprintf(why, whylen,
					         "line %zu: the block is not valid PEM of a CMS "
					         "structure",
					         block_line);
					goto out;
				}
				r = KY_ERR_NOT_COMMAND;
				block = NULL;
			}
		} else if (ll == strlen(TKE_PEM_BEGIN) && memcmp(p, TKE_PEM_BEGIN, ll) == 0) {
			block = p;
			block_line = lineno;
		} else if (ll == 0) {
			/* blank line between blocks */
		} else if (p[0] == '#') {
			if (ll < strlen(TKE_SIGNERS_PREFIX) ||
			    memcmp(p, TKE_SIGNERS_PREFIX, strlen(TKE_SIGNERS_PREFIX)) != 0) {
				if ((r = ky_buf_append(&comments, p, ll)) != 0 ||
				    (r = ky_buf_append(&comments, "\n", 1)) != 0)
					goto out;
				r = KY_ERR_NOT_COMMAND;
			}
		} else {
			snprintf(why, whylen,
			         "line %zu: unexpected text outside a command block (comments "
			         "start with '#')",
			         lineno);
			goto out;
		}
		p = nl != NULL ? nl + 1 : end;
	}
	if (block != NULL) {
		snprintf(why, whylen, "line %zu: command block has no END line", block_line);
		goto out;
	}
	if (b->n == 0) {
		snprintf(why, whylen, "no '%s' block", TKE_PEM_BEGIN);
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&comments);
	if (r != 0)
		tke_bundle_release(b);
	return r;
}

static int tke_bundle_read(const char *path, struct tke_bundle *b)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf text = {0};
	char why[256];

	memset(b, 0, sizeof(*b));
	if ((r = ky_file_read(path, TKE_BUNDLE_MAX, &text)) != 0)
		return tke_err(r, path, NULL);
	if ((r = tke_bundle_parse((const char *)text.data, text.len, b, why, sizeof(why))) != 0)
		cli_fail(r, path, "%s", why);
	ky_buf_free(&text);
	return r;
}

static int tke_pem_append(struct ky_buf *out, const struct ky_buf *der)
{
	int r = KY_ERR_NOMEM;
	BIO *bio = BIO_new(BIO_s_mem());
	char *p = NULL;
	long n;

	if (bio == NULL)
		return KY_ERR_NOMEM;
	if (PEM_write_bio(bio, TKE_PEM_NAME, "", der->data, (long)der->len) <= 0)
		goto out;
	n = BIO_get_mem_data(bio, &p);
	if (n <= 0 || (r = ky_buf_append(out, p, (size_t)n)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	return r;
}

/* "# signers: alice (ski ...), bob (ski ...)" or "# signers: none yet". */
static int tke_signers_line(const struct ky_buf *der, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf content = {0};
	struct ky_cms_signer *s = NULL;
	size_t ns = 0;

	if ((r = ky_cms_parse(der->data, der->len, &content, &s, &ns)) != 0)
		goto out;
	if ((r = ky_buf_append_str(out, TKE_SIGNERS_PREFIX)) != 0)
		goto out;
	if (ns == 0 && (r = ky_buf_append_str(out, " none yet")) != 0)
		goto out;
	for (size_t i = 0; i < ns; i++) {
		char hex[2 * KY_SKI_LEN + 1], item[160];
		ky_hex_encode(s[i].ski, KY_SKI_LEN, hex);
		snprintf(item, sizeof(item), "%s '%s' (ski %s)", i > 0 ? "," : "",
		         s[i].name[0] != '\0' ? s[i].name : "?", hex);
		if ((r = ky_buf_append_str(out, item)) != 0)
			goto out;
	}
	r = ky_buf_append_str(out, "\n");
out:
	free(s);
	ky_buf_free(&content);
	return r;
}

static int tke_bundle_write(const char *path, const struct tke_bundle *b, bool overwrite)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf text = {0};
	struct stat sb;

	if (!overwrite && lstat(path, &sb) == 0)
		return tke_err(KY_ERR_EXISTS, path,
		               "choose another file name or remove the old bundle");
	if ((r = ky_buf_append_str(&text, "# kyok command bundle: 'kyok tke cmd-show FILE' shows "
	                                  "it, 'kyok tke cmd-sign FILE' signs it,\n# 'kyok tke "
	                                  "cmd-submit FILE' submits it. Each block is a CMS "
	                                  "SignedData (openssl cms -cmsout -print).\n")) != 0)
		goto out;
	for (size_t i = 0; i < b->n; i++) {
		if ((r = ky_buf_append_str(&text, "\n")) != 0)
			goto out;
		if (b->cmds[i].comments.len > 0 &&
		    (r = ky_buf_append(&text, b->cmds[i].comments.data, b->cmds[i].comments.len)) !=
		        0)
			goto out;
		if ((r = tke_signers_line(&b->cmds[i].der, &text)) != 0)
			goto out;
		if ((r = tke_pem_append(&text, &b->cmds[i].der)) != 0)
			goto out;
	}
	if ((r = ky_file_write_atomic(path, text.data, text.len, 0600)) != 0) {
		cli_fail(r, path, "cannot write the command bundle");
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&text);
	return r;
}

/* Drops the header line the writer adds, so rewriting a bundle does not repeat it. */
static void tke_bundle_strip_header(struct tke_bundle *b)
{
	const char *tag = "# kyok command bundle:";
	struct ky_buf *c;

	if (b->n == 0)
		return;
	c = &b->cmds[0].comments;
	while (c->len >= strlen(tag) && memcmp(c->data, tag, strlen(tag)) == 0) {
		/* drop two lines: the header is two lines long; further '#' lines stay */
		for (int k = 0; k < 2 && c->len > 0; k++) {
			uint8_t *nl = memchr(c->data, '\n', c->len);
			size_t cut = nl != NULL ? (size_t)(nl - c->data) + 1 : c->len;
			memmove(c->data, c->data + cut, c->len - cut);
			c->len -= cut;
		}
	}
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
		return tke_err(KY_ERR_NOMEM, NULL, NULL);
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

int tke_run_command(struct tke_run *run, const struct tke_op *op, const char *prepare,
                    const char *warning, const char *question)
{
	int r = KY_ERR_INTERNAL;

	if ((r = tke_run_plan(run, op)) != 0)
		return ky_err_exit(r);
	return tke_run_finish(run, prepare, warning, question);
}

int tke_run_finish(struct tke_run *run, const char *prepare, const char *warning,
                   const char *question)
{
	int r = KY_ERR_INTERNAL;
	struct cli_signer *signers = NULL;
	size_t nsigners = 0;
	int maxreq = 0;

	if (tke_run_pending(run, &maxreq) > 0) {
		if (warning != NULL)
			tke_note("%s", warning);
		if (question != NULL && (r = cli_confirm(question)) != 0) {
			tke_note("nothing was sent to any crypto unit");
			return ky_err_exit(r);
		}
		if (prepare != NULL) {
			if ((r = tke_run_prepare(run, prepare)) != 0)
				return ky_err_exit(r);
		} else {
			if ((r = tke_run_imprint_check(run)) != 0 ||
			    (r = tke_run_check_signers(run)) != 0)
				return ky_err_exit(r);
			if (maxreq > 0 && (r = cli_signers_open(&signers, &nsigners)) != 0)
				return ky_err_exit(r);
			tke_run_submit(run, signers, nsigners);
			cli_signers_free(signers, nsigners);
		}
	}
	r = tke_run_report(run, NULL, NULL);
	if (prepare != NULL && r == 0 && tke_run_pending(run, NULL) == 0 && !cli_g.json) {
		bool any = false;
		for (size_t i = 0; i < run->n; i++)
			any = any || run->units[i].result == TKE_PREPARED;
		if (any)
			printf("wrote %s: sign it with 'kyok tke cmd-sign %s' (on each "
			       "administrator's "
			       "workstation), then 'kyok tke cmd-submit %s'\n",
			       prepare, prepare, prepare);
	}
	return r;
}

/* ---- cmd-show, cmd-sign, cmd-submit ---- */

struct tke_parsed_cmd {
	struct ky_command *c;
	struct ky_cms_signer *signers;
	size_t nsigners;
};

static void tke_parsed_release(struct tke_parsed_cmd *pc, size_t n)
{
	if (pc == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		ky_command_free(pc[i].c);
		free(pc[i].signers);
	}
	free(pc);
}

static int tke_bundle_decode(const char *path, const struct tke_bundle *b,
                             struct tke_parsed_cmd **out)
{
	int r = KY_ERR_INTERNAL;
	struct tke_parsed_cmd *pc = calloc(b->n, sizeof(*pc));

	*out = NULL;
	if (pc == NULL)
		return tke_err(KY_ERR_NOMEM, NULL, NULL);
	for (size_t i = 0; i < b->n; i++) {
		struct ky_buf content = {0};

		r = ky_cms_parse(b->cmds[i].der.data, b->cmds[i].der.len, &content, &pc[i].signers,
		                 &pc[i].nsigners);
		if (r == 0)
			r = ky_command_parse(content.data, content.len, &pc[i].c);
		ky_buf_free(&content);
		if (r != 0) {
			cli_fail(r, path, "command %zu of %zu cannot be read as a kyok command",
			         i + 1, b->n);
			tke_parsed_release(pc, b->n);
			return r;
		}
	}
	*out = pc;
	return 0;
}

static json_t *tke_signers_json(const struct tke_parsed_cmd *pc)
{
	json_t *a = json_array();

	for (size_t k = 0; a != NULL && k < pc->nsigners; k++) {
		char hex[2 * KY_SKI_LEN + 1];
		ky_hex_encode(pc->signers[k].ski, KY_SKI_LEN, hex);
		json_array_append_new(
		    a, json_pack("{s:s, s:s}", "name", pc->signers[k].name, "ski", hex));
	}
	return a;
}

/* mk-load: the envelopes that are byte for byte the same as an earlier one ("key parts 1
 * and 3 are the same envelope", ...), into out; false when none. Only copies are seen here:
 * the same part sealed twice gives different bytes, which only the unit can compare (and
 * refuses). */
static bool tke_same_envelopes(const struct ky_command *c, char *out, size_t outlen)
{
	bool found = false;

	out[0] = '\0';
	if (c->op != KY_OP_MK_LOAD)
		return false;
	for (size_t i = 0; i < c->nparts && i < KY_MAX_PARTS; i++) {
		for (size_t j = i + 1; j < c->nparts && j < KY_MAX_PARTS; j++) {
			size_t l = strlen(out);
			if (c->parts[i].len != c->parts[j].len ||
			    memcmp(c->parts[i].data, c->parts[j].data, c->parts[i].len) != 0)
				continue;
			snprintf(out + l, outlen - l, "%skey parts %zu and %zu", found ? ", " : "",
			         i + 1, j + 1);
			found = true;
		}
	}
	return found;
}

#define TKE_SAME_ENVELOPE_WARNING                                                             \
	"are the same envelope (identical bytes): they cancel out, and the unit refuses the " \
	"load; do not sign this command"

static void tke_show_bundle(FILE *f, const struct tke_bundle *b, const struct tke_parsed_cmd *pc)
{
	for (size_t i = 0; i < b->n; i++) {
		const struct ky_command *c = pc[i].c;
		char summary[256], inc[2 * KY_INCARNATION_LEN + 1];

		tke_command_summary(c, summary, sizeof(summary));
		fprintf(f, "command %zu of %zu: %s\n", i + 1, b->n, ky_op_name(c->op));
		ky_hex_encode(c->incarnation, KY_INCARNATION_LEN, inc);
		fprintf(f,
		        "  instance:  %s\n  unit:      %s\n  incarnation: %s\n  counter:   %llu\n",
		        c->instance, c->unit, inc, (unsigned long long)c->counter);
		if (summary[0] != '\0')
			fprintf(f, "  arguments: %s\n", summary);
		char same[256];
		if (tke_same_envelopes(c, same, sizeof(same)))
			fprintf(f, "  WARNING:   %s " TKE_SAME_ENVELOPE_WARNING "\n", same);
		if (pc[i].nsigners == 0)
			fprintf(f, "  signers:   none yet\n");
		for (size_t k = 0; k < pc[i].nsigners; k++) {
			char hex[2 * KY_SKI_LEN + 1];
			ky_hex_encode(pc[i].signers[k].ski, KY_SKI_LEN, hex);
			fprintf(f, "  %s '%s' ski %s\n", k == 0 ? "signers:  " : "           ",
			        pc[i].signers[k].name[0] != '\0' ? pc[i].signers[k].name : "?",
			        hex);
		}
	}
}

/* imprint: the command sends commands, so it takes --imprint-credential. */
static int tke_bundle_opts(int argc, char **argv, const char *usage, bool imprint,
                           const char **file)
{
	static const struct option longopts[] = {CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
	static const struct option longopts_imprint[] = {
	    CLI_IMPRINT_LONGOPT, CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
	int opt;

	*file = NULL;
	while ((opt = getopt_long(argc, argv, "h", imprint ? longopts_imprint : longopts, NULL)) !=
	       -1) {
		if (opt == 'h') {
			tke_print_help(usage);
			return -1;
		}
		if (cli_common_opt(opt, optarg) != 0)
			return KY_ERR_USAGE;
	}
	if (optind != argc - 1)
		return tke_err(KY_ERR_USAGE, cli_cmd_name(),
		               "give exactly one bundle FILE: see '%s --help'", cli_cmd_name());
	*file = argv[optind];
	return 0;
}

int tke_cmd_show_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cmd-show FILE [--output json]\n\n"
	    "Shows each command of a command bundle (written by a command's --prepare FILE):\n"
	    "its operation, instance, crypto unit, incarnation of the unit's state (a unit\n"
	    "whose state was created again has another), transaction counter, arguments, and\n"
	    "who signed it so far. Nothing is verified here: signatures are checked by the\n"
	    "unit. A warning flags an mk-load whose key part envelopes are byte for byte the\n"
	    "same (a part that cancels out with its copy): do not sign it. The unit refuses\n"
	    "equal, all-zero or cancelling parts in any case, also those sealed separately.\n";
	int r = KY_ERR_INTERNAL;
	const char *file;
	struct tke_bundle b = {0};
	struct tke_parsed_cmd *pc = NULL;

	if ((r = tke_bundle_opts(argc, argv, usage, false, &file)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = tke_bundle_read(file, &b)) != 0)
		return ky_err_exit(r);
	if ((r = tke_bundle_decode(file, &b, &pc)) != 0)
		goto out;
	if (cli_g.json) {
		json_t *a = json_array();
		for (size_t i = 0; a != NULL && i < b.n; i++) {
			char summary[256], same[256], warning[512], inc[2 * KY_INCARNATION_LEN + 1];
			json_t *warnings = json_array();
			tke_command_summary(pc[i].c, summary, sizeof(summary));
			ky_hex_encode(pc[i].c->incarnation, KY_INCARNATION_LEN, inc);
			if (warnings != NULL && tke_same_envelopes(pc[i].c, same, sizeof(same))) {
				snprintf(warning, sizeof(warning), "%s " TKE_SAME_ENVELOPE_WARNING,
				         same);
				json_array_append_new(warnings, json_string(warning));
			}
			json_array_append_new(
			    a, json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:o, s:o}", "op",
			                 ky_op_name(pc[i].c->op), "instance", pc[i].c->instance,
			                 "unit", pc[i].c->unit, "incarnation", inc, "counter",
			                 (json_int_t)pc[i].c->counter, "args", summary, "signers",
			                 tke_signers_json(&pc[i]), "warnings", warnings));
		}
		cli_print_json(json_pack("{s:o, s:s}", "commands", a, "note",
		                         "signatures are checked by the unit"));
	} else {
		tke_show_bundle(stdout, &b, pc);
		printf("signatures are checked by the unit when the bundle is submitted\n");
	}
	r = 0;
out:
	tke_parsed_release(pc, b.n);
	tke_bundle_release(&b);
	return ky_err_exit(r);
}

/* Before any password: some selected key has not signed some command yet.
 * Returns -1 (nothing to do, said so), 0 (go on) or an error (printed). */
static int tke_cmd_sign_needed(const struct tke_bundle *b, const struct tke_parsed_cmd *pc)
{
	int r = KY_ERR_INTERNAL;
	struct cli_sigkey *keys = NULL;
	size_t nkeys = 0, nsel = 0;
	bool needed = false;

	if ((r = tke_selected_sigkeys(&keys, &nkeys, &nsel)) != 0)
		return r;
	if (nsel == 0) {
		free(keys);
		return tke_err(KY_ERR_NO_SIGNERS, NULL, NULL);
	}
	for (size_t k = 0; k < nkeys; k++) {
		if (!keys[k].selected)
			continue;
		for (size_t i = 0; i < b->n; i++) {
			bool has = false;
			for (size_t s = 0; s < pc[i].nsigners; s++)
				has = has ||
				      memcmp(pc[i].signers[s].ski, keys[k].ski, KY_SKI_LEN) == 0;
			needed = needed || !has;
		}
	}
	free(keys);
	if (!needed) {
		tke_note("every command is already signed by the selected signature keys: nothing "
		         "to sign");
		return -1;
	}
	return 0;
}

/* Before any password: every selected key is an administrator of every command's unit, as
 * far as this workstation can see (the units of this instance it reaches). A unit refuses a
 * whole command with one signature it does not know, and a signature cannot be taken back:
 * better said here than at cmd-submit. Units it cannot read are left to cmd-submit. */
static int tke_cmd_sign_check_admins(const struct tke_parsed_cmd *pc, size_t n)
{
	int r = KY_ERR_INTERNAL;
	struct cli_sigkey *keys = NULL;
	size_t nkeys = 0, nsel = 0;
	struct tke_run run = {0};
	char path[600];

	snprintf(path, sizeof(path), "%s/instance.json", cli_instance_dir());
	if (access(path, R_OK) != 0) {
		tke_note("no instance at %s here: whether the signers are administrators of the "
		         "commands' units is checked when the bundle is submitted",
		         cli_instance_dir());
		return 0;
	}
	if ((r = tke_selected_sigkeys(&keys, &nkeys, &nsel)) != 0)
		return r;
	if ((r = cli_instance_load(&run.inst)) != 0)
		goto out;
	if ((run.units = calloc(n == 0 ? 1 : n, sizeof(*run.units))) == NULL) {
		r = tke_err(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct cli_unit *found = NULL;

		for (size_t k = 0; k < run.inst.nunits; k++)
			if (strcmp(run.inst.units[k].id, pc[i].c->unit) == 0)
				found = &run.inst.units[k];
		run.units[i].skip = found == NULL || strcmp(pc[i].c->instance, run.inst.id) != 0;
		if (found != NULL)
			run.units[i].u = *found;
		run.n = i + 1;
	}
	if ((r = tke_run_refresh(&run)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const struct tke_unit *u = &run.units[i];

		if (u->skip || !u->reachable) {
			tke_note(
			    "command %zu: its crypto unit is not one this workstation reaches: "
			    "its administrators are checked when the bundle is submitted",
			    i + 1);
			continue;
		}
		for (size_t k = 0; k < nkeys; k++) {
			if (!keys[k].selected || tke_ustate_admin_by_ski(&u->st, keys[k].ski) >= 0)
				continue;
			r = tke_err(
			    KY_ERR_SIGNER_NOT_ADMIN, keys[k].name,
			    "signature key %d is not an administrator of crypto unit %d (%s), "
			    "which would refuse command %zu whole with this signature on it: "
			    "select only its administrators' keys ('kyok tke sigkey-sel'; "
			    "'kyok tke cryptounit-admins' lists them); nothing was signed",
			    keys[k].number, u->u.number, u->u.zone, i + 1);
			goto out;
		}
	}
	r = 0;
out:
	tke_run_release(&run);
	free(keys);
	return r;
}

int tke_cmd_sign_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cmd-sign FILE\n\n"
	    "Adds a signature by every selected signature key ('kyok tke sigkey-sel') to every\n"
	    "command of the bundle FILE, and rewrites FILE. Passwords are asked per key.\n"
	    "A key that already signed a command is not added twice.\n";
	int r = KY_ERR_INTERNAL;
	const char *file;
	struct tke_bundle b = {0};
	struct tke_parsed_cmd *pc = NULL;
	struct cli_signer *signers = NULL;
	size_t nsigners = 0, added = 0;

	if ((r = tke_bundle_opts(argc, argv, usage, false, &file)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = tke_bundle_read(file, &b)) != 0)
		return ky_err_exit(r);
	if ((r = tke_bundle_decode(file, &b, &pc)) != 0)
		goto out;
	/* Whoever signs sees what they sign before giving a password. */
	fprintf(stderr, "signing %s:\n", file);
	tke_show_bundle(stderr, &b, pc);
	if ((r = tke_cmd_sign_needed(&b, pc)) != 0) {
		r = r < 0 ? 0 : r;
		goto out;
	}
	if ((r = tke_cmd_sign_check_admins(pc, b.n)) != 0)
		goto out;
	if ((r = cli_signers_open(&signers, &nsigners)) != 0)
		goto out;
	/* Signer by signer: a key on a card signs every command while its card is in. */
	for (size_t s = 0; s < nsigners; s++) {
		uint8_t ski[KY_SKI_LEN];

		if ((r = ky_cert_ski(signers[s].cert, ski)) != 0) {
			cli_fail(r, signers[s].name, NULL);
			goto out;
		}
		for (size_t i = 0; i < b.n; i++) {
			bool dup = false;

			for (size_t k = 0; k < pc[i].nsigners; k++)
				dup = dup || memcmp(pc[i].signers[k].ski, ski, KY_SKI_LEN) == 0;
			for (size_t k = 0; k < s && !dup; k++) {
				uint8_t other[KY_SKI_LEN];
				dup = ky_cert_ski(signers[k].cert, other) == 0 &&
				      memcmp(other, ski, KY_SKI_LEN) == 0;
			}
			if (dup) {
				tke_note("command %zu: already signed by '%s'", i + 1,
				         signers[s].name);
				continue;
			}
			if ((r = cli_signer_sign(&signers[s], &b.cmds[i].der)) != 0) {
				cli_fail(r, file, "cannot add the signature of '%s' to command %zu",
				         signers[s].name, i + 1);
				goto out;
			}
			added++;
		}
	}
	tke_bundle_strip_header(&b);
	if ((r = tke_bundle_write(file, &b, true)) != 0)
		goto out;
	if (!cli_g.json) {
		printf("added %zu signature%s to %zu command%s in %s\n", added,
		       added == 1 ? "" : "s", b.n, b.n == 1 ? "" : "s", file);
	} else {
		cli_print_json(json_pack("{s:s, s:I, s:I}", "file", file, "signatures_added",
		                         (json_int_t)added, "commands", (json_int_t)b.n));
	}
	r = 0;
out:
	cli_signers_free(signers, nsigners);
	tke_parsed_release(pc, b.n);
	tke_bundle_release(&b);
	return ky_err_exit(r);
}

int tke_cmd_submit_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cmd-submit FILE [--imprint-credential FILE]\n\n"
	    "Submits each command of the bundle FILE to its crypto unit (found by unit id in\n"
	    "the instance) and reports per unit. A unit refuses a command whose transaction\n"
	    "counter is out of date (another command ran since it was prepared), or that was\n"
	    "prepared for an earlier incarnation of the unit (its state was created again\n"
	    "since): prepare the command again then.\n\n"
	    "options:\n" CLI_IMPRINT_HELP;
	int r = KY_ERR_INTERNAL;
	const char *file;
	struct tke_bundle b = {0};
	struct tke_parsed_cmd *pc = NULL;
	struct tke_run run = {0};
	const char **ids = NULL;
	bool short_any = false;

	if ((r = tke_bundle_opts(argc, argv, usage, true, &file)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = tke_bundle_read(file, &b)) != 0)
		return ky_err_exit(r);
	if ((r = tke_bundle_decode(file, &b, &pc)) != 0)
		goto out;
	if ((ids = calloc(b.n, sizeof(*ids))) == NULL) {
		r = tke_err(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < b.n; i++) {
		ids[i] = pc[i].c->unit;
		for (size_t k = 0; k < i; k++)
			if (strcmp(ids[k], ids[i]) == 0) {
				r = KY_ERR_BAD_COMMAND;
				cli_fail(r, file,
				         "two commands for crypto unit '%s': nothing was sent",
				         ids[i]);
				goto out;
			}
	}
	/* The instance first: a bundle for another instance names units unknown here. */
	if ((r = cli_instance_load(&run.inst)) != 0)
		goto out;
	for (size_t i = 0; i < b.n; i++) {
		if (strcmp(pc[i].c->instance, run.inst.id) != 0) {
			r = KY_ERR_WRONG_INSTANCE;
			cli_fail(r, file,
			         "command %zu is for instance '%s', this instance is '%s' (%s): "
			         "nothing was sent",
			         i + 1, pc[i].c->instance, run.inst.id, run.inst.dir);
			goto out;
		}
	}
	if ((r = tke_run_load_ids(&run, ids, b.n)) != 0)
		goto out;
	/* Local checks against each unit's present state, before anything is sent. */
	for (size_t i = 0; i < b.n; i++) {
		struct tke_unit *u = &run.units[i];
		uint8_t(*skis)[KY_SKI_LEN] = NULL;
		char names[256];
		int have, req = 0;

		if (!u->reachable)
			continue;
		if ((r = ky_buf_append(&u->cms, b.cmds[i].der.data, b.cmds[i].der.len)) != 0)
			goto out;
		if (memcmp(u->st.incarnation, pc[i].c->incarnation, KY_INCARNATION_LEN) != 0) {
			char inc[2 * KY_INCARNATION_LEN + 1];
			ky_hex_encode(pc[i].c->incarnation, KY_INCARNATION_LEN, inc);
			tke_unit_set(u, TKE_REFUSED, KY_ERR_WRONG_INCARNATION,
			             "the command names incarnation %s, the unit's state is "
			             "incarnation %s: the unit was re-created since the command "
			             "was prepared: not sent: prepare the command again",
			             inc, u->st.incarnation_hex);
			continue;
		}
		if (u->st.counter != pc[i].c->counter) {
			tke_unit_set(u, TKE_REFUSED, KY_ERR_WRONG_COUNTER,
			             "the command names transaction counter %llu, the unit is at "
			             "%llu (%s): not sent: prepare the command again",
			             (unsigned long long)pc[i].c->counter,
			             (unsigned long long)u->st.counter,
			             u->st.counter > pc[i].c->counter
			                 ? "other commands ran since, or this one already ran"
			                 : "the command is from the future");
			continue;
		}
		r = tke_required(&u->st, pc[i].c, &req);
		if (r != 0) {
			tke_unit_set(u, TKE_REFUSED, r, NULL);
			short_any = true;
			continue;
		}
		u->required = req;
		if ((skis = calloc(pc[i].nsigners + 1, sizeof(*skis))) == NULL) {
			r = tke_err(KY_ERR_NOMEM, NULL, NULL);
			goto out;
		}
		for (size_t k = 0; k < pc[i].nsigners; k++)
			memcpy(skis[k], pc[i].signers[k].ski, KY_SKI_LEN);
		have = tke_count_admin_skis(&u->st, (const uint8_t(*)[KY_SKI_LEN])skis,
		                            pc[i].nsigners, names, sizeof(names));
		free(skis);
		for (size_t k = 0; k < pc[i].nsigners; k++) {
			if (tke_ustate_admin_by_ski(&u->st, pc[i].signers[k].ski) < 0) {
				tke_unit_set(
				    u, TKE_REFUSED, KY_ERR_SIGNER_NOT_ADMIN,
				    "signer '%s' is not an administrator of this unit, which "
				    "refuses the whole command with that signature on it: not "
				    "sent: prepare the command again and have it signed by "
				    "the unit's administrators only ('kyok tke "
				    "cryptounit-admins' lists them)",
				    pc[i].signers[k].name);
				short_any = true;
				break;
			}
		}
		if (u->result == TKE_REFUSED)
			continue;
		if (have < req) {
			tke_unit_set(
			    u, TKE_REFUSED, KY_ERR_NOT_ENOUGH_SIGNATURES,
			    "%d of %d signatures%s%s%s: sign it with 'kyok tke cmd-sign %s'", have,
			    req, have > 0 ? " (" : "", names, have > 0 ? ")" : "", file);
			short_any = true;
		}
	}
	if (short_any) {
		r = tke_print_local_refusals(&run);
		goto out;
	}
	run.no_rerun_hint = true; /* each unit left says "prepare the command again" */
	tke_run_submit(&run, NULL, 0);
	r = 0;
	{
		int status = tke_run_report(&run, NULL, NULL);
		tke_run_release(&run);
		tke_parsed_release(pc, b.n);
		tke_bundle_release(&b);
		free(ids);
		return status;
	}
out:
	tke_run_release(&run);
	tke_parsed_release(pc, b.n);
	tke_bundle_release(&b);
	free(ids);
	return ky_err_exit(r);
}
