/* kyok tke cryptounit-admin-add, -admin-rm, -thrhld-set, -exit-impr, -zeroize: the
 * administrators and thresholds of the selected crypto units. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/tke_signing.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

enum {
	OPT_PREPARE = 0x2001,
	OPT_SIGKEY,
	OPT_ADMIN,
	OPT_SKI,
	OPT_SIGNATURE,
	OPT_REVOCATION,
};

/* ---- cryptounit-admin-add ---- */

struct admin_add_ctx {
	X509 *cert;
	char name[KY_ADMIN_NAME_MAX + 1];
	uint8_t ski[KY_SKI_LEN];
};

static int admin_add_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	struct admin_add_ctx *a = ctx;
	int i;

	(void)run;
	if ((i = ky_unit_state_admin_by_ski(&u->st, a->ski)) >= 0) {
		snprintf(u->detail, sizeof(u->detail), "administrator '%s' already installed",
		         u->st.admins[i].name);
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if ((i = ky_unit_state_admin_by_name(&u->st, a->name)) >= 0) {
		snprintf(u->detail, sizeof(u->detail),
		         "the unit has an administrator named '%s' with another key (ski %s)",
		         a->name, u->st.admins[i].ski_hex);
		return KY_ERR_DUPLICATE_ADMIN;
	}
	if (u->st.nadmins >= KY_MAX_ADMINS) {
		snprintf(u->detail, sizeof(u->detail), "%zu administrators installed",
		         u->st.nadmins);
		return KY_ERR_ADMIN_TABLE_FULL;
	}
	return 0;
}

static int admin_add_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	struct admin_add_ctx *a = ctx;

	(void)run;
	(void)u;
	return tke_fill_admin_cert(a->cert, c);
}

/* Lists the workspace's signature keys on stderr and asks for one. */
static int tke_choose_sigkey(const char *flag_value, struct cli_sigkey *out)
{
	int r = KY_ERR_INTERNAL;
	struct cli_sigkey *keys = NULL;
	size_t n = 0;
	char *line = NULL;
	int number = 0;

	if ((r = cli_sigkeys_list(&keys, &n)) != 0)
		return r;
	if (n == 0) {
		r = cli_err(KY_ERR_NOT_FOUND, "signature keys",
		            "the workspace %s has none: create one with 'kyok tke sigkey-add'",
		            cli_workspace());
		goto out;
	}
	if (flag_value == NULL) {
		fprintf(stderr, "signature keys:\n");
		for (size_t i = 0; i < n; i++) {
			char hex[2 * KY_SKI_LEN + 1];
			ky_hex_encode(keys[i].ski, KY_SKI_LEN, hex);
			fprintf(stderr, "  %3d  %-30s  ski %s\n", keys[i].number, keys[i].name,
			        hex);
		}
		if ((r = cli_prompt_line("signature key to install as administrator (number)",
		                         "--sigkey N", &line)) != 0)
			goto out;
		flag_value = line;
	}
	if ((r = tke_parse_int(flag_value, "--sigkey", 1, 1 << 20, &number)) != 0)
		goto out;
	r = KY_ERR_NOT_FOUND;
	for (size_t i = 0; i < n; i++) {
		if (keys[i].number == number) {
			*out = keys[i];
			r = 0;
		}
	}
	if (r != 0)
		cli_err(r, "signature key", "no signature key number %d: see 'kyok tke sigkeys'",
		        number);
out:
	free(line);
	free(keys);
	return r;
}

int tke_admin_add_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-admin-add [--sigkey N] [--prepare FILE]\n"
	    "\n"
	    "Installs an administrator in every selected crypto unit: the certificate of a\n"
	    "signature key of the workspace (no password needed for it). In imprint mode no\n"
	    "signature is needed; afterwards as many as the signature threshold.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"sigkey", OPT_SIGKEY, CLI_ARG_REQUIRED, "N",
	     "the signature key to install (number from 'sigkeys'); asked when missing"},
	    TKE_OPT_PREPARE(OPT_PREPARE),
	    CLI_OPT_IMPRINT,
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, opt, status;
	const char *sigkey = NULL, *prepare = NULL;
	struct cli_sigkey key;
	struct admin_add_ctx a = {0};
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_ADMIN_ADD, admin_add_plan, admin_add_fill, &a};

	while ((opt = cli_getopt(argc, argv, longopts, cli_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			tke_print_help(usage, longopts);
			return 0;
		case OPT_SIGKEY:
			sigkey = optarg;
			break;
		case OPT_PREPARE:
			prepare = optarg;
			break;
		default:
			if (cli_common_opt(opt, optarg) != 0)
				return KY_EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(), "unexpected argument '%s'",
		                argv[optind]);
	if ((r = tke_choose_sigkey(sigkey, &key)) != 0)
		return ky_err_exit(r);
	if ((r = ky_sigkey_read_cert(key.path, &a.cert)) != 0) {
		status = cli_fail(r, key.path, NULL);
		goto out;
	}
	if ((r = ky_admin_cert_check(a.cert)) != 0 ||
	    (r = ky_cert_cn(a.cert, a.name, sizeof(a.name))) != 0 ||
	    (r = ky_cert_ski(a.cert, a.ski)) != 0) {
		status = cli_fail(r, key.path, NULL);
		goto out;
	}
	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	status = tke_run_command(&run, &op, &(struct tke_hooks){.prepare = prepare});
out:
	tke_run_release(&run);
	X509_free(a.cert);
	return status;
}

/* ---- cryptounit-admin-rm ---- */

struct admin_rm_ctx {
	bool by_name;
	char name[KY_ADMIN_NAME_MAX + 1];
	uint8_t ski[KY_SKI_LEN];
	char ski_hex[2 * KY_SKI_LEN + 1];
};

static int admin_rm_find(const struct admin_rm_ctx *a, const struct ky_unit_state *st)
{
	return a->by_name ? ky_unit_state_admin_by_name(st, a->name)
	                  : ky_unit_state_admin_by_ski(st, a->ski);
}

static int admin_rm_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	struct admin_rm_ctx *a = ctx;
	int i = admin_rm_find(a, &u->st);

	(void)run;
	if (i < 0) {
		if (a->by_name)
			snprintf(u->detail, sizeof(u->detail), "no administrator '%s' installed",
			         a->name);
		else
			snprintf(u->detail, sizeof(u->detail),
			         "no administrator with ski %s installed", a->ski_hex);
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (!u->st.imprint &&
	    ((int)u->st.nadmins - 1 < u->st.sig || (int)u->st.nadmins - 1 < u->st.rev)) {
		if (u->st.nadmins <= 1)
			snprintf(u->detail, sizeof(u->detail),
			         "'%s' is the last administrator, and a unit out of imprint mode "
			         "keeps at least one: to remove every administrator, zeroize the "
			         "unit (cryptounit-zeroize)",
			         u->st.admins[i].name);
		else
			snprintf(u->detail, sizeof(u->detail),
			         "%zu administrators, signature threshold %d, revocation threshold "
			         "%d: lower both thresholds to %zu or less first "
			         "(cryptounit-thrhld-set)",
			         u->st.nadmins, u->st.sig, u->st.rev, u->st.nadmins - 1);
		return KY_ERR_BELOW_THRESHOLD;
	}
	return 0;
}

static int admin_rm_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	struct admin_rm_ctx *a = ctx;
	int i = admin_rm_find(a, &u->st);

	(void)run;
	if (i < 0)
		return KY_ERR_ADMIN_NOT_FOUND;
	memcpy(c->ski, u->st.admins[i].ski, KY_SKI_LEN);
	return 0;
}

/* An administrator no reachable selected unit has is a typo, not a success: refused before
 * anything is signed. (One installed on some units only is removed from those.) */
static int admin_rm_check_named(const struct tke_run *run, const struct admin_rm_ctx *a)
{
	size_t reachable = 0;

	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (u->skip || !u->reachable)
			continue;
		reachable++;
		if (admin_rm_find(a, &u->st) >= 0)
			return 0;
	}
	if (reachable == 0)
		return 0; /* the run reports the units it cannot reach */
	if (a->by_name)
		return cli_err(KY_ERR_ADMIN_NOT_FOUND, a->name,
		               "no selected crypto unit has an administrator of this name: "
		               "'kyok tke cryptounit-admins' lists the installed ones");
	return cli_err(KY_ERR_ADMIN_NOT_FOUND, a->ski_hex,
	               "no selected crypto unit has an administrator with this key identifier: "
	               "'kyok tke cryptounit-admins' lists the installed ones");
}

/* Lists the administrators of the selected units and asks which one to remove. */
static int admin_rm_choose(const struct tke_run *run, struct admin_rm_ctx *a)
{
	int r = KY_ERR_INTERNAL;
	struct ky_unit_admin list[KY_MAX_ADMINS * 16];
	size_t n = 0;
	char *line = NULL;
	int k = 0;

	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (!u->reachable)
			continue;
		for (size_t j = 0; j < u->st.nadmins; j++) {
			bool seen = false;
			for (size_t m = 0; m < n; m++)
				seen = seen ||
				       memcmp(list[m].ski, u->st.admins[j].ski, KY_SKI_LEN) == 0;
			if (!seen && n < sizeof(list) / sizeof(list[0]))
				list[n++] = u->st.admins[j];
		}
	}
	if (n == 0)
		return cli_err(KY_ERR_ADMIN_NOT_FOUND, NULL,
		               "no administrator is installed on the selected crypto units");
	fprintf(stderr, "administrators of the selected crypto units:\n");
	for (size_t m = 0; m < n; m++) {
		char units[128] = "";
		for (size_t i = 0; i < run->n; i++) {
			const struct tke_unit *u = &run->units[i];
			size_t l = strlen(units);
			if (u->reachable && ky_unit_state_admin_by_ski(&u->st, list[m].ski) >= 0)
				snprintf(units + l, sizeof(units) - l, "%s%d", l > 0 ? "," : "",
				         u->u.number);
		}
		fprintf(stderr, "  %2zu  %-30s  ski %s  (units %s)\n", m + 1, list[m].name,
		        list[m].ski_hex, units);
	}
	if ((r = cli_prompt_line("administrator to remove (number)", "--admin NAME or --ski HEX",
	                         &line)) != 0)
		return r;
	r = tke_parse_int(line, "administrator number", 1, (int)n, &k);
	free(line);
	if (r != 0)
		return r;
	a->by_name = false;
	memcpy(a->ski, list[k - 1].ski, KY_SKI_LEN);
	memcpy(a->ski_hex, list[k - 1].ski_hex, sizeof(a->ski_hex));
	return 0;
}

int tke_admin_rm_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-admin-rm [--admin NAME | --ski HEX] [--prepare FILE]\n"
	    "\n"
	    "Removes an administrator from every selected crypto unit. Refused when fewer\n"
	    "administrators than a threshold would remain. In imprint mode no signature is\n"
	    "needed; afterwards as many as the revocation threshold.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"admin", OPT_ADMIN, CLI_ARG_REQUIRED, "NAME", "the administrator's name"},
	    {"ski", OPT_SKI, CLI_ARG_REQUIRED, "HEX",
	     "the administrator's key identifier (64 hex digits) (without either: choose from the "
	     "installed ones)"},
	    TKE_OPT_PREPARE(OPT_PREPARE),
	    CLI_OPT_IMPRINT,
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, opt, status;
	const char *name = NULL, *ski = NULL, *prepare = NULL;
	struct admin_rm_ctx a = {0};
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_ADMIN_RM, admin_rm_plan, admin_rm_fill, &a};

	while ((opt = cli_getopt(argc, argv, longopts, cli_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			tke_print_help(usage, longopts);
			return 0;
		case OPT_ADMIN:
			name = optarg;
			break;
		case OPT_SKI:
			ski = optarg;
			break;
		case OPT_PREPARE:
			prepare = optarg;
			break;
		default:
			if (cli_common_opt(opt, optarg) != 0)
				return KY_EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(), "unexpected argument '%s'",
		                argv[optind]);
	if (name != NULL && ski != NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(), "give --admin or --ski, not both");
	if (name != NULL) {
		if (name[0] == '\0' || strlen(name) > KY_ADMIN_NAME_MAX)
			return cli_fail(KY_ERR_ADMIN_NAME, name, NULL);
		a.by_name = true;
		snprintf(a.name, sizeof(a.name), "%s", name);
	}
	if (ski != NULL) {
		if (ky_hex_decode(ski, a.ski, KY_SKI_LEN) != 0)
			return cli_fail(
			    KY_ERR_USAGE, cli_cmd_name(),
			    "--ski takes the 64 hex digits 'cryptounit-admins' shows, not '%s'",
			    ski);
		ky_hex_encode(a.ski, KY_SKI_LEN, a.ski_hex);
	}
	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if (name == NULL && ski == NULL && (r = admin_rm_choose(&run, &a)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if ((r = admin_rm_check_named(&run, &a)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	status = tke_run_command(&run, &op, &(struct tke_hooks){.prepare = prepare});
out:
	tke_run_release(&run);
	return status;
}

/* ---- cryptounit-thrhld-set ---- */

struct thrhld_ctx {
	int sig, rev;
};

static int thrhld_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	struct thrhld_ctx *t = ctx;
	int need = t->sig > t->rev ? t->sig : t->rev;

	(void)run;
	if (!u->st.imprint && u->st.sig == t->sig && u->st.rev == t->rev) {
		snprintf(u->detail, sizeof(u->detail), "thresholds already %d/%d", t->sig, t->rev);
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if ((int)u->st.nadmins < need) {
		snprintf(u->detail, sizeof(u->detail),
		         "%zu administrator%s installed, threshold %d asked: add administrators "
		         "first (cryptounit-admin-add)",
		         u->st.nadmins, u->st.nadmins == 1 ? "" : "s", need);
		return KY_ERR_THRESHOLD_ABOVE_ADMINS;
	}
	return 0;
}

static int thrhld_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	struct thrhld_ctx *t = ctx;

	(void)run;
	(void)u;
	c->sig = t->sig;
	c->rev = t->rev;
	return 0;
}

/* "crypto units 1, 2 are in imprint mode: ..." when any unit to change is. */
static void tke_imprint_warning(const struct tke_run *run, const char *what, char *out,
                                size_t outlen)
{
	char units[128] = "";
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		size_t l = strlen(units);
		if (u->skip || u->result != TKE_PENDING || !u->st.imprint)
			continue;
		snprintf(units + l, sizeof(units) - l, "%s%d", l > 0 ? ", " : "", u->u.number);
		n++;
	}
	if (n > 0)
		snprintf(out, outlen,
		         "crypto unit%s %s %s in imprint mode: %s exits imprint mode; from then on "
		         "every command to %s needs administrator signatures",
		         n == 1 ? "" : "s", units, n == 1 ? "is" : "are", what,
		         n == 1 ? "it" : "them");
}

int tke_thrhld_set_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-thrhld-set [--signature N --revocation N] [--prepare "
	    "FILE]\n"
	    "\n"
	    "Sets the signature threshold (signatures needed by most commands) and the\n"
	    "revocation threshold (signatures needed to remove an administrator) of every\n"
	    "selected crypto unit, each 1 to 8 and at most the number of administrators.\n"
	    "In imprint mode this exits imprint mode and needs as many signatures as the new\n"
	    "signature threshold; afterwards as many as the present signature threshold.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"signature", OPT_SIGNATURE, CLI_ARG_REQUIRED, "N",
	     "new signature threshold (asked when missing)"},
	    {"revocation", OPT_REVOCATION, CLI_ARG_REQUIRED, "N",
	     "new revocation threshold (asked when missing)"},
	    TKE_OPT_PREPARE(OPT_PREPARE),
	    CLI_OPT_IMPRINT,
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, opt, status;
	const char *sig = NULL, *rev = NULL, *prepare = NULL;
	struct thrhld_ctx t = {0};
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_THRESHOLDS_SET, thrhld_plan, thrhld_fill, &t};
	char warning[512];

	while ((opt = cli_getopt(argc, argv, longopts, cli_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			tke_print_help(usage, longopts);
			return 0;
		case OPT_SIGNATURE:
			sig = optarg;
			break;
		case OPT_REVOCATION:
			rev = optarg;
			break;
		case OPT_PREPARE:
			prepare = optarg;
			break;
		default:
			if (cli_common_opt(opt, optarg) != 0)
				return KY_EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(), "unexpected argument '%s'",
		                argv[optind]);
	if (sig != NULL && tke_int_parse(sig, 1, KY_MAX_ADMINS, &t.sig) != 0)
		return cli_fail(KY_ERR_THRESHOLD_RANGE, "--signature", "not '%s'", sig);
	if (rev != NULL && tke_int_parse(rev, 1, KY_MAX_ADMINS, &t.rev) != 0)
		return cli_fail(KY_ERR_THRESHOLD_RANGE, "--revocation", "not '%s'", rev);
	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if (sig == NULL && (r = tke_ask_threshold("new signature threshold (1-8)", "--signature",
	                                          KY_MAX_ADMINS, 0, &t.sig)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if (rev == NULL && (r = tke_ask_threshold("new revocation threshold (1-8)", "--revocation",
	                                          KY_MAX_ADMINS, 0, &t.rev)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if ((r = tke_run_plan(&run, &op)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	tke_imprint_warning(&run, "setting thresholds", warning, sizeof(warning));
	status = tke_run_finish(
	    &run, &(struct tke_hooks){.prepare = prepare,
	                              .warning = warning[0] != '\0' ? warning : NULL});
out:
	tke_run_release(&run);
	return status;
}

/* ---- cryptounit-exit-impr ---- */

static int exit_impr_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	(void)ctx;
	(void)run;
	if (!u->st.imprint) {
		snprintf(u->detail, sizeof(u->detail),
		         "not in imprint mode (signature threshold %d, revocation threshold %d)",
		         u->st.sig, u->st.rev);
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (u->st.nadmins == 0) {
		snprintf(u->detail, sizeof(u->detail),
		         "no administrator installed: add one first (cryptounit-admin-add)");
		return KY_ERR_THRESHOLD_ABOVE_ADMINS;
	}
	return 0;
}

int tke_exit_impr_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-exit-impr [--prepare FILE]\n\n"
	    "Exits imprint mode on every selected crypto unit: both thresholds become 1.\n"
	    "(cryptounit-thrhld-set does the same with thresholds of your choice.)\n\n"
	    "options:\n";
	int r = KY_ERR_INTERNAL, status;
	const char *prepare = NULL;
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_EXIT_IMPRINT, exit_impr_plan, NULL, NULL};
	char warning[512];

	if ((r = tke_opts_prepare(argc, argv, usage, true, &prepare, NULL)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if ((r = tke_run_plan(&run, &op)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	tke_imprint_warning(&run, "this command", warning, sizeof(warning));
	status = tke_run_finish(
	    &run, &(struct tke_hooks){.prepare = prepare,
	                              .warning = warning[0] != '\0' ? warning : NULL});
out:
	tke_run_release(&run);
	return status;
}

/* ---- cryptounit-zeroize ---- */

static int zeroize_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	(void)ctx;
	(void)run;
	if (u->st.imprint && u->st.nadmins == 0 && u->st.new_state == KY_NEW_EMPTY &&
	    u->st.cur_state == KY_CUR_EMPTY) {
		snprintf(u->detail, sizeof(u->detail),
		         "already zeroized (imprint mode, no administrator, registers empty)");
		u->result = TKE_UNCHANGED;
	}
	return 0;
}

int tke_zeroize_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-zeroize [--prepare FILE]\n\n"
	    "Zeroizes every selected crypto unit: clears both master key registers, removes\n"
	    "every administrator and returns the unit to imprint mode. Key storage cannot be\n"
	    "used by the unit until the master key is loaded again from its key parts.\n"
	    "Asks for confirmation (--yes answers it).\n\n"
	    "options:\n";
	int r = KY_ERR_INTERNAL, status;
	const char *prepare = NULL;
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_ZEROIZE, zeroize_plan, NULL, NULL};
	char question[128];
	size_t n;

	if ((r = tke_opts_prepare(argc, argv, usage, true, &prepare, NULL)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if ((r = tke_run_plan(&run, &op)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	n = tke_run_pending(&run, NULL);
	snprintf(question, sizeof(question), "zeroize %zu crypto unit%s?", n, n == 1 ? "" : "s");
	status = tke_run_finish(
	    &run,
	    &(struct tke_hooks){
	        .prepare = prepare,
	        .warning = "WARNING: zeroize clears the new and current master key registers, "
	                   "removes every administrator and returns the crypto units to imprint "
	                   "mode. Every key in key storage becomes unusable on these units until "
	                   "the master key is loaded again from its key parts; without the key "
	                   "parts, key storage is lost for good.",
	        .question = question});
out:
	tke_run_release(&run);
	return status;
}
