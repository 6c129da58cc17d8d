/* The bundle verbs: cmd-show, cmd-sign, cmd-submit. A bundle (cli/tke_bundle.c) is prepared
 * by any changing tke command with --prepare, signed on each administrator's workstation and
 * submitted from anywhere; the units check everything again.
 */
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/tke_bundle.h"
#include "cli/tke_signing.h"
#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/wire.h"

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
		return cli_err(KY_ERR_NOMEM, NULL, NULL);
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
	static const struct cli_opt longopts_imprint[] = {CLI_OPT_IMPRINT, CLI_OPT_END};
	const struct cli_opt *opts = imprint ? longopts_imprint : NULL;
	int opt;

	*file = NULL;
	while ((opt = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (opt == 'h') {
			tke_print_help(usage, opts);
			return -1;
		}
		if (cli_common_opt(opt, optarg) != 0)
			return KY_ERR_USAGE;
	}
	if (optind != argc - 1)
		return cli_err(KY_ERR_USAGE, cli_cmd_name(),
		               "give exactly one bundle FILE: see '%s --help'", cli_cmd_name());
	*file = argv[optind];
	return 0;
}

/* What cmd-show, -sign and -submit start with: their options, then the bundle FILE read and
 * each of its commands decoded. Returns -1 after --help, 0 with *file, *b and *pc set (the
 * caller releases b and pc), or an error code (printed; nothing to release). */
static int tke_bundle_load(int argc, char **argv, const char *usage, bool imprint,
                           const char **file, struct tke_bundle *b, struct tke_parsed_cmd **pc)
{
	int r = KY_ERR_INTERNAL;

	if ((r = tke_bundle_opts(argc, argv, usage, imprint, file)) != 0)
		return r;
	if ((r = tke_bundle_read(*file, b)) != 0)
		return r;
	if ((r = tke_bundle_decode(*file, b, pc)) != 0) {
		tke_bundle_release(b);
		return r;
	}
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

	if ((r = tke_bundle_load(argc, argv, usage, false, &file, &b, &pc)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
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
	tke_parsed_release(pc, b.n);
	tke_bundle_release(&b);
	return 0;
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
		return cli_err(KY_ERR_NO_SIGNERS, NULL, NULL);
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
		r = cli_err(KY_ERR_NOMEM, NULL, NULL);
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
			if (!keys[k].selected ||
			    ky_unit_state_admin_by_ski(&u->st, keys[k].ski) >= 0)
				continue;
			r = cli_err(
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

	if ((r = tke_bundle_load(argc, argv, usage, false, &file, &b, &pc)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
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
	    "options:\n";
	int r = KY_ERR_INTERNAL;
	const char *file;
	struct tke_bundle b = {0};
	struct tke_parsed_cmd *pc = NULL;
	struct tke_run run = {0};
	const char **ids = NULL;
	bool short_any = false;

	if ((r = tke_bundle_load(argc, argv, usage, true, &file, &b, &pc)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((ids = calloc(b.n, sizeof(*ids))) == NULL) {
		r = cli_err(KY_ERR_NOMEM, NULL, NULL);
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
			r = cli_err(KY_ERR_NOMEM, NULL, NULL);
			goto out;
		}
		for (size_t k = 0; k < pc[i].nsigners; k++)
			memcpy(skis[k], pc[i].signers[k].ski, KY_SKI_LEN);
		have = tke_count_admin_skis(&u->st, (const uint8_t(*)[KY_SKI_LEN])skis,
		                            pc[i].nsigners, names, sizeof(names));
		free(skis);
		for (size_t k = 0; k < pc[i].nsigners; k++) {
			if (ky_unit_state_admin_by_ski(&u->st, pc[i].signers[k].ski) < 0) {
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
	{
		/* The commands came signed (u->cms): the runner sends them as they are. */
		int status = tke_run_finish(&run, NULL);
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
