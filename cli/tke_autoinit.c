/* kyok tke auto-init: initialises every selected crypto unit, all in imprint mode, in one
 * run: installs the administrators, sets the thresholds (which ends imprint mode), has the
 * first unit generate a random master key, sends it encrypted to the importer key of each
 * other unit, then commits and sets it as current everywhere.
 *
 * Size: one command in one file, on purpose: choosing the administrators, unlocking their
 * keys and the steps all fill one struct ai, and the steps' plan and fill functions are
 * read in the order auto-init runs them, against the summary it prints before it changes
 * anything.
 *
 * Every step is an ordinary signed command, reported per unit. Signature keys needed for
 * the signed steps are unlocked once, at the start, before any unit is changed.
 */
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/tke_signing.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define AI_MIN_PASSWORD 8

enum {
	OPT_SIGNATURE = 0x2001,
	OPT_REVOCATION,
	OPT_ADMINS,
	OPT_SIGKEYS,
	OPT_NEW_ADMINS,
};

struct ai_admin {
	char name[KY_ADMIN_NAME_MAX + 1];
	char path[700];
	X509 *cert;
	uint8_t ski[KY_SKI_LEN];
	bool is_new;
	bool created;   /* file written by this run */
	char *password; /* new keys only, until created and opened; cli_secret_free */
};

struct ai {
	struct tke_run run;
	int sig, rev;
	size_t nadmins;
	struct ai_admin admins[KY_MAX_ADMINS];
	struct cli_signer *signers; /* the first sig administrators, unlocked */
	size_t nsigners;
	json_t *steps; /* --output json */
	int step, nsteps;
	bool left_imprint; /* a thresholds step changed some unit */
	bool summary_done; /* the end state was printed */
};

static const char ai_usage[] =
    "usage: kyok tke auto-init [--signature N --revocation N] [--admins N]\n"
    "                          [--sigkeys N,N,...] [--new-admins NAME,NAME,...]\n"
    "\n"
    "Initialises every selected crypto unit in one run. All of them must be in imprint\n"
    "mode. Installs the administrators (existing signature keys of the workspace, or new\n"
    "ones created here), sets the signature and revocation thresholds, generates a random\n"
    "master key in the first selected unit, transfers it encrypted to every other unit's\n"
    "importer key, commits it and sets it as current on every unit. Passwords of the\n"
    "signature keys that sign (as many as the signature threshold) are asked once, at the\n"
    "start; a key on an EP11 card signs with the card in reader 1 instead, its PIN asked\n"
    "when the card wants it.\n"
    "\n"
    "options:\n";

static void ai_release(struct ai *ai)
{
	for (size_t i = 0; i < ai->nadmins; i++) {
		X509_free(ai->admins[i].cert);
		cli_secret_free(ai->admins[i].password);
	}
	cli_signers_free(ai->signers, ai->nsigners);
	json_decref(ai->steps);
	tke_run_release(&ai->run);
}

static bool ai_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > KY_ADMIN_NAME_MAX || s[0] == ' ' || s[n - 1] == ' ')
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

/* ---- what to do when auto-init cannot go on ---- */

static void ai_print_units(const struct tke_run *run)
{
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (!u->reachable) {
			fprintf(stderr, "  crypto unit %d (%s): unreachable\n", u->u.number,
			        u->u.zone);
			continue;
		}
		fprintf(stderr,
		        "  crypto unit %d (%s): %s, %zu administrator%s, thresholds %d/%d, new "
		        "register %s, current register %s\n",
		        u->u.number, u->u.zone, u->st.imprint ? "imprint mode" : "initialised",
		        u->st.nadmins, u->st.nadmins == 1 ? "" : "s", u->st.sig, u->st.rev,
		        ky_new_state_name(u->st.new_state), ky_cur_state_name(u->st.cur_state));
	}
}

static void ai_advice_not_imprint(void)
{
	fprintf(
	    stderr,
	    "auto-init runs only on crypto units in imprint mode, so it cannot finish an\n"
	    "initialisation that went past setting thresholds. Either finish by hand:\n"
	    "  - units still in imprint mode: kyok tke cryptounit-admin-add, then\n"
	    "    kyok tke cryptounit-thrhld-set (select them with cryptounit-add/-rm);\n"
	    "  - then the master key: create key parts (kyok tke mk-add), kyok tke\n"
	    "    cryptounit-mk-load, cryptounit-mk-commit, cryptounit-mk-setimm on all units;\n"
	    "or start over: kyok tke cryptounit-zeroize on the initialised units, then\n"
	    "kyok tke auto-init again. 'kyok tke cryptounit-compare' shows where each unit is.\n");
}

static void ai_advice_stopped(const struct ai *ai, const char *title)
{
	fprintf(stderr, "auto-init stopped at %s.\n", title);
	if (!ai->left_imprint) {
		fprintf(stderr, "every crypto unit is still in imprint mode: fix the cause and run "
		                "auto-init again");
		for (size_t i = 0; i < ai->nadmins; i++)
			if (ai->admins[i].created) {
				fprintf(stderr,
				        ", with --sigkeys naming the signature keys created "
				        "here (see 'kyok tke sigkeys')");
				break;
			}
		fprintf(stderr, ".\n");
		return;
	}
	fprintf(stderr, "some crypto units have left imprint mode.\n");
	ai_advice_not_imprint();
}

/* Out of imprint mode with the same current master key everywhere, new registers empty. */
static bool ai_all_initialised(const struct tke_run *run)
{
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (!u->reachable || u->st.imprint || u->st.cur_state != KY_CUR_VALID ||
		    u->st.new_state != KY_NEW_EMPTY ||
		    strcmp(u->st.cur_vp, run->units[0].st.cur_vp) != 0)
			return false;
	}
	return run->n > 0;
}

/* ---- choosing the administrators ---- */

static int ai_add_existing(struct ai *ai, const struct cli_sigkey *keys, size_t nkeys, int number)
{
	int r = KY_ERR_INTERNAL;
	struct ai_admin *a;

	if (ai->nadmins >= KY_MAX_ADMINS)
		return cli_err(KY_ERR_ADMIN_TABLE_FULL, NULL, NULL);
	a = &ai->admins[ai->nadmins];
	for (size_t i = 0; i < nkeys; i++) {
		if (keys[i].number != number)
			continue;
		snprintf(a->path, sizeof(a->path), "%s", keys[i].path);
		if ((r = ky_sigkey_read_cert(a->path, &a->cert)) != 0 ||
		    (r = ky_admin_cert_check(a->cert)) != 0 ||
		    (r = ky_cert_cn(a->cert, a->name, sizeof(a->name))) != 0 ||
		    (r = ky_cert_ski(a->cert, a->ski)) != 0) {
			X509_free(a->cert);
			a->cert = NULL;
			return cli_err(r, a->path, NULL);
		}
		ai->nadmins++;
		return 0;
	}
	return cli_err(KY_ERR_NOT_FOUND, "signature key",
	               "no signature key number %d: see 'kyok tke sigkeys'", number);
}

static int ai_add_new(struct ai *ai, const char *name, size_t len)
{
	struct ai_admin *a;

	if (ai->nadmins >= KY_MAX_ADMINS)
		return cli_err(KY_ERR_ADMIN_TABLE_FULL, NULL, NULL);
	a = &ai->admins[ai->nadmins];
	if (len > KY_ADMIN_NAME_MAX)
		return cli_err(KY_ERR_ADMIN_NAME, NULL, "'%.*s' is longer than 30 characters",
		               (int)(len > 40 ? 40 : len), name);
	memcpy(a->name, name, len);
	a->name[len] = '\0';
	if (!ai_name_ok(a->name))
		return cli_err(KY_ERR_ADMIN_NAME, a->name,
		               "use 1 to 30 printable ASCII characters, no space at either end");
	a->is_new = true;
	ai->nadmins++;
	return 0;
}

static int ai_add_new_list(struct ai *ai, const char *list)
{
	int r = KY_ERR_INTERNAL;
	const char *p = list;

	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);

		if ((r = ai_add_new(ai, p, len)) != 0)
			return r;
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
}

static int ai_choose(struct ai *ai, const char *sigkeys, const char *new_admins, int admins_flag)
{
	int r = KY_ERR_INTERNAL;
	struct cli_sigkey *keys = NULL;
	size_t nkeys = 0, nnums = 0;
	int nums[KY_MAX_ADMINS + 1], maxnum = 0, want = admins_flag;
	char *line = NULL, why[256];
	const bool interactive = sigkeys == NULL && new_admins == NULL;

	if ((r = cli_sigkeys_list(&keys, &nkeys)) != 0)
		return r;
	for (size_t i = 0; i < nkeys; i++)
		if (keys[i].number > maxnum)
			maxnum = keys[i].number;
	if (interactive) {
		/* Interactive: how many, which existing keys, names of new ones. */
		/* An empty answer takes the default in brackets: as many administrators as the
		 * workspace has signature keys (at least 1), and those keys. */
		int def = nkeys == 0 ? 1 : (nkeys > KY_MAX_ADMINS ? KY_MAX_ADMINS : (int)nkeys);
		if (want == 0 && (r = tke_ask_int("number of administrators (1-8)", "--admins", 1,
		                                  KY_MAX_ADMINS, def, &want)) != 0)
			goto out;
		if (nkeys > 0) {
			char defkeys[64] = "none", prompt[160];
			size_t l = 0;

			fprintf(stderr, "signature keys of the workspace:\n");
			for (size_t i = 0; i < nkeys; i++)
				fprintf(stderr, "  %3d  %s\n", keys[i].number, keys[i].name);
			for (size_t i = 0; i < nkeys && (int)i < want; i++)
				l += (size_t)snprintf(defkeys + l, sizeof(defkeys) - l, "%s%d",
				                      i > 0 ? "," : "", keys[i].number);
			snprintf(prompt, sizeof(prompt),
			         "existing signature keys to use (numbers, comma-separated, or "
			         "'none') [%s]",
			         defkeys);
			if ((r = cli_prompt_line(prompt, "--sigkeys or --new-admins", &line)) != 0)
				goto out;
			if (line[0] == '\0') {
				free(line);
				if ((line = strdup(defkeys)) == NULL) {
					r = cli_err(KY_ERR_NOMEM, NULL, NULL);
					goto out;
				}
			}
			if (strcmp(line, "none") != 0)
				sigkeys = line;
		}
	}
	if (sigkeys != NULL) {
		if (maxnum == 0) {
			r = cli_err(KY_ERR_NOT_FOUND, "--sigkeys",
			            "the workspace has no signature keys: use --new-admins");
			goto out;
		}
		if ((r = cli_parse_numbers(sigkeys, maxnum, nums, KY_MAX_ADMINS + 1, &nnums, why,
		                           sizeof(why))) != 0) {
			cli_err(r, "--sigkeys", "%s", why);
			goto out;
		}
		for (size_t k = 0; k < nnums; k++)
			if ((r = ai_add_existing(ai, keys, nkeys, nums[k])) != 0)
				goto out;
	}
	if (new_admins != NULL && (r = ai_add_new_list(ai, new_admins)) != 0)
		goto out;
	if (interactive) {
		/* Interactive: names of the administrators still missing. */
		while (ai->nadmins < (size_t)want) {
			char prompt[96], *name = NULL;
			snprintf(prompt, sizeof(prompt), "name of new administrator %zu of %d",
			         ai->nadmins + 1, want);
			if ((r = cli_prompt_line(prompt, "--new-admins", &name)) != 0)
				goto out;
			r = ai_add_new(ai, name, strlen(name));
			free(name);
			if (r != 0)
				goto out;
		}
	}
	if (want == 0)
		want = (int)ai->nadmins;
	if (ai->nadmins == 0 || (size_t)want != ai->nadmins) {
		r = cli_err(KY_ERR_USAGE, cli_cmd_name(),
		            "%d administrators asked, %zu given with --sigkeys and --new-admins",
		            want, ai->nadmins);
		goto out;
	}
	/* One key per administrator, one administrator per name. */
	for (size_t i = 0; i < ai->nadmins; i++) {
		for (size_t k = 0; k < i; k++) {
			if (strcmp(ai->admins[i].name, ai->admins[k].name) == 0) {
				r = cli_err(KY_ERR_DUPLICATE_ADMIN, ai->admins[i].name,
				            "named twice");
				goto out;
			}
			if (!ai->admins[i].is_new && !ai->admins[k].is_new &&
			    memcmp(ai->admins[i].ski, ai->admins[k].ski, KY_SKI_LEN) == 0) {
				r = cli_err(KY_ERR_DUPLICATE_ADMIN, ai->admins[i].name,
				            "signature keys '%s' and '%s' are the same key",
				            ai->admins[k].path, ai->admins[i].path);
				goto out;
			}
		}
		if (ai->admins[i].is_new) {
			for (size_t k = 0; k < nkeys; k++)
				if (strcmp(keys[k].name, ai->admins[i].name) == 0) {
					r = cli_err(KY_ERR_EXISTS, ai->admins[i].name,
					            "signature key %d already belongs to this "
					            "administrator: use --sigkeys %d",
					            keys[k].number, keys[k].number);
					goto out;
				}
		}
	}
	r = 0;
out:
	free(line);
	free(keys);
	return r;
}

/* Units already holding an administrator of that name with another key refuse admin-add. */
static int ai_check_units(struct ai *ai)
{
	struct tke_run *run = &ai->run;

	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		size_t keep = 0;

		for (size_t k = 0; k < ai->nadmins; k++) {
			int j = ky_unit_state_admin_by_name(&u->st, ai->admins[k].name);
			if (j >= 0 &&
			    (ai->admins[k].is_new ||
			     memcmp(u->st.admins[j].ski, ai->admins[k].ski, KY_SKI_LEN) != 0))
				return cli_err(
				    KY_ERR_DUPLICATE_ADMIN, ai->admins[k].name,
				    "crypto unit %d already has an administrator of that "
				    "name with another key",
				    u->u.number);
		}
		for (size_t j = 0; j < u->st.nadmins; j++) {
			bool ours = false;
			for (size_t k = 0; k < ai->nadmins; k++)
				ours = ours || (!ai->admins[k].is_new &&
				                memcmp(u->st.admins[j].ski, ai->admins[k].ski,
				                       KY_SKI_LEN) == 0);
			keep += ours ? 0 : 1;
		}
		if (keep + ai->nadmins > KY_MAX_ADMINS)
			return cli_err(KY_ERR_ADMIN_TABLE_FULL, NULL,
			               "crypto unit %d already has %zu other administrators",
			               u->u.number, keep);
	}
	return 0;
}

/* Passwords: the signing keys (the first sig administrators) are opened, new keys get a
 * password (asked twice). Nothing is written yet. */
static int ai_passwords(struct ai *ai)
{
	int r = KY_ERR_INTERNAL;

	if ((ai->signers = calloc((size_t)ai->sig, sizeof(*ai->signers))) == NULL)
		return cli_err(KY_ERR_NOMEM, NULL, NULL);
	for (size_t i = 0; i < ai->nadmins; i++) {
		struct ai_admin *a = &ai->admins[i];
		char prompt[128];

		if (a->is_new) {
			snprintf(prompt, sizeof(prompt),
			         "password for the new signature key of '%s'", a->name);
			if ((r = cli_password(prompt, true, &a->password)) != 0)
				return r;
			if (strlen(a->password) < AI_MIN_PASSWORD)
				return cli_err(KY_ERR_WEAK_PASSWORD, a->name, NULL);
		} else if (i < (size_t)ai->sig) {
			char *pw = NULL;
			char subject[128];

			char why[CLI_TOKEN_WHY_MAX];
			struct ky_sigkey_token tok;
			bool in_token = false;
			X509 *cert = NULL;

			if ((r = cli_check_private("signature key file", a->path)) != 0)
				return r;
			r = ky_sigkey_read(a->path, &cert, &tok, &in_token);
			if (r == 0 && in_token)
				snprintf(prompt, sizeof(prompt),
				         "PIN of token '%s' (signature key of '%s')", tok.label,
				         a->name);
			else
				snprintf(prompt, sizeof(prompt), "password for signature key '%s'",
				         a->name);
			X509_free(cert);
			/* A key on a card: no password; its PIN is asked when the card signs. */
			if (r != KY_ERR_SIGKEY_IN_CARD &&
			    (r = cli_password(prompt, false, &pw)) != 0)
				return r;
			r = tke_signer_open_path(a->path, pw, &ai->signers[ai->nsigners], why);
			cli_secret_free(pw);
			if (r != 0) {
				snprintf(subject, sizeof(subject), "signature key '%s'", a->name);
				return why[0] != '\0' ? cli_err(r, subject, "%s", why)
				                      : cli_err(r, subject, NULL);
			}
			ai->nsigners++;
		}
	}
	return 0;
}

/* Writes the new signature keys; on failure removes those written by this run. */
static int ai_create_keys(struct ai *ai)
{
	int r = KY_ERR_INTERNAL;

	for (size_t i = 0; i < ai->nadmins; i++)
		if (ai->admins[i].is_new && (r = cli_workspace_ensure()) != 0)
			return r;
	for (size_t i = 0; i < ai->nadmins; i++) {
		struct ai_admin *a = &ai->admins[i];

		if (!a->is_new)
			continue;
		if ((r = cli_sigkey_path_new(a->name, a->path, sizeof(a->path))) != 0) {
			cli_err(r, a->name, "cannot name the signature key file of '%s'", a->name);
			goto fail;
		}
		if ((r = ky_sigkey_create(a->path, a->name, a->password)) != 0) {
			cli_err(r, a->path, "cannot create the signature key of '%s'", a->name);
			goto fail;
		}
		a->created = true;
		if ((r = ky_sigkey_read_cert(a->path, &a->cert)) != 0 ||
		    (r = ky_cert_ski(a->cert, a->ski)) != 0) {
			cli_err(r, a->path, NULL);
			goto fail;
		}
		if (i < (size_t)ai->sig) {
			char why[CLI_TOKEN_WHY_MAX];

			if ((r = tke_signer_open_path(a->path, a->password,
			                              &ai->signers[ai->nsigners], why)) != 0) {
				cli_err(r, a->path, NULL);
				goto fail;
			}
			ai->nsigners++;
		}
		cli_secret_free(a->password);
		a->password = NULL;
		if (!cli_g.json)
			printf("created signature key for administrator '%s': %s\n", a->name,
			       a->path);
	}
	return 0;
fail:
	for (size_t i = 0; i < ai->nadmins; i++) {
		if (ai->admins[i].created) {
			(void)unlink(ai->admins[i].path);
			ai->admins[i].created = false;
		}
	}
	tke_note("no signature key was kept and nothing was sent to any crypto unit");
	return r;
}

/* ---- the steps ---- */

static int ai_check_signers(struct ai *ai)
{
	struct tke_run *run = &ai->run;

	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		int have = 0;

		if (u->skip || u->result != TKE_PENDING || u->required == 0)
			continue;
		for (size_t s = 0; s < ai->nsigners; s++) {
			uint8_t ski[KY_SKI_LEN];
			if (ky_cert_ski(ai->signers[s].cert, ski) == 0 &&
			    ky_unit_state_admin_by_ski(&u->st, ski) >= 0)
				have++;
		}
		if (have < u->required) {
			char subject[128];
			snprintf(subject, sizeof(subject), "crypto unit %d (%s)", u->u.number,
			         u->u.zone);
			return cli_err(KY_ERR_NOT_ENOUGH_SIGNATURES, subject,
			               "%d of %d signatures available", have, u->required);
		}
	}
	return 0;
}

/* After a thresholds step (tke_hooks.after_submit): a unit that took it left imprint mode. */
static void ai_note_left_imprint(void *ctx, struct tke_run *run)
{
	struct ai *ai = ctx;

	for (size_t i = 0; i < run->n; i++)
		ai->left_imprint = ai->left_imprint || run->units[i].result == TKE_CHANGED;
}

/* One step: fresh states, plan, sign, submit, report. Returns the exit status. */
static int ai_step(struct ai *ai, const char *what, const struct tke_op *op)
{
	int r = KY_ERR_INTERNAL, status;
	char title[200];

	ai->step++;
	snprintf(title, sizeof(title), "step %d of %d: %s", ai->step, ai->nsteps, what);
	if ((r = tke_run_refresh(&ai->run)) != 0 || (r = tke_run_plan(&ai->run, op)) != 0 ||
	    (r = ai_check_signers(ai)) != 0) {
		ai_advice_stopped(ai, title);
		return ky_err_exit(r);
	}
	status = tke_run_finish(&ai->run,
	                        &(struct tke_hooks){.signers_open = true,
	                                            .signers = ai->signers,
	                                            .nsigners = ai->nsigners,
	                                            .after_submit = op->op == KY_OP_THRESHOLDS_SET
	                                                                ? ai_note_left_imprint
	                                                                : NULL,
	                                            .ctx = ai,
	                                            .title = title,
	                                            .json_steps = ai->steps});
	if (!cli_g.json)
		printf("\n");
	if (status != 0)
		ai_advice_stopped(ai, title);
	return status;
}

static int ai_admin_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	const struct ai_admin *a = ctx;

	(void)run;
	if (ky_unit_state_admin_by_ski(&u->st, a->ski) >= 0) {
		snprintf(u->detail, sizeof(u->detail), "administrator '%s' already installed",
		         a->name);
		u->result = TKE_UNCHANGED;
	}
	return 0;
}

static int ai_admin_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	const struct ai_admin *a = ctx;

	(void)run;
	(void)u;
	return tke_fill_admin_cert(a->cert, c);
}

static int ai_thr_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	const struct ai *ai = ctx;

	(void)run;
	(void)u;
	c->sig = ai->sig;
	c->rev = ai->rev;
	return 0;
}

struct ai_mk {
	char vp_hex[2 * KY_VP_LEN + 1];
	uint8_t vp[KY_VP_LEN];
	X509 *recips[KY_MAX_ADMINS];
	X509 *recip_ids[KY_MAX_ADMINS]; /* identity certificates: the recipients' chains */
	size_t nrecips;
	X509 *source;                /* identity of the exporting unit */
	struct ky_buf envelopes[16]; /* per unit index */
	struct ky_buf signatures[16];
};

static int ai_generate_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	(void)ctx;
	(void)run;
	if (u->st.new_state != KY_NEW_EMPTY) {
		snprintf(u->detail, sizeof(u->detail), "new master key register is %s",
		         ky_new_state_name(u->st.new_state));
		return KY_ERR_REGISTER_STATE;
	}
	return 0;
}

static int ai_export_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	struct ai_mk *m = ctx;

	(void)run;
	(void)u;
	for (size_t i = 0; i < m->nrecips; i++) {
		if (X509_up_ref(m->recips[i]) != 1)
			return KY_ERR_CRYPTO;
		c->recips[i] = m->recips[i];
		c->nrecips = i + 1;
		if (X509_up_ref(m->recip_ids[i]) != 1)
			return KY_ERR_CRYPTO;
		c->recip_ids[i] = m->recip_ids[i];
	}
	return 0;
}

static int ai_import_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	struct ai_mk *m = ctx;

	(void)run;
	if (u->st.new_state != KY_NEW_EMPTY) {
		if (strcmp(u->st.new_vp, m->vp_hex) == 0) {
			snprintf(u->detail, sizeof(u->detail),
			         "new register already holds the key");
			u->result = TKE_UNCHANGED;
			return 0;
		}
		snprintf(u->detail, sizeof(u->detail), "new master key register is %s",
		         ky_new_state_name(u->st.new_state));
		return KY_ERR_REGISTER_STATE;
	}
	return 0;
}

static int ai_import_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	struct ai_mk *m = ctx;
	size_t idx = (size_t)(u - run->units);

	if (idx >= 16 || m->envelopes[idx].len == 0 || m->signatures[idx].len == 0 ||
	    m->source == NULL || X509_up_ref(m->source) != 1)
		return KY_ERR_INTERNAL;
	c->source = m->source;
	if (ky_buf_append(&c->envelope, m->envelopes[idx].data, m->envelopes[idx].len) != 0 ||
	    ky_buf_append(&c->source_sig, m->signatures[idx].data, m->signatures[idx].len) != 0)
		return KY_ERR_NOMEM;
	memcpy(c->vp, m->vp, KY_VP_LEN);
	c->has_vp = true;
	return 0;
}

static int ai_commit_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	struct ai_mk *m = ctx;

	(void)run;
	if (u->st.new_state == KY_NEW_COMMITTED && strcmp(u->st.new_vp, m->vp_hex) == 0) {
		snprintf(u->detail, sizeof(u->detail), "already committed");
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (u->st.new_state != KY_NEW_UNCOMMITTED || strcmp(u->st.new_vp, m->vp_hex) != 0) {
		snprintf(u->detail, sizeof(u->detail), "new master key register is %s%s%s",
		         ky_new_state_name(u->st.new_state), u->st.new_vp[0] ? ", vp " : "",
		         u->st.new_vp);
		return KY_ERR_REGISTER_STATE;
	}
	return 0;
}

static int ai_setimm_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	struct ai_mk *m = ctx;

	(void)run;
	if (u->st.new_state == KY_NEW_EMPTY && u->st.cur_state == KY_CUR_VALID &&
	    strcmp(u->st.cur_vp, m->vp_hex) == 0) {
		snprintf(u->detail, sizeof(u->detail), "already the current master key");
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (u->st.new_state != KY_NEW_COMMITTED || strcmp(u->st.new_vp, m->vp_hex) != 0) {
		snprintf(u->detail, sizeof(u->detail), "new master key register is %s",
		         ky_new_state_name(u->st.new_state));
		return KY_ERR_REGISTER_STATE;
	}
	return 0;
}

static int ai_vp_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	struct ai_mk *m = ctx;

	(void)run;
	(void)u;
	memcpy(c->vp, m->vp, KY_VP_LEN);
	c->has_vp = true;
	return 0;
}

static void ai_skip_all_but(struct tke_run *run, size_t keep, bool invert)
{
	for (size_t i = 0; i < run->n; i++)
		run->units[i].skip = invert ? i == keep : i != keep;
}

static void ai_skip_none(struct tke_run *run)
{
	for (size_t i = 0; i < run->n; i++)
		run->units[i].skip = false;
}

/* The end state, cryptounit-compare style. Returns the exit status. */
static int ai_summary(struct ai *ai)
{
	int r = KY_ERR_INTERNAL;
	struct tke_run *run = &ai->run;
	static const char *const hdr[] = {"UNIT",   "ZONE",       "ADMINS",    "THRESHOLDS",
	                                  "NEW MK", "CURRENT MK", "CURRENT VP"};
	struct cli_table *t = NULL;
	json_t *units = json_array();
	bool same = true;
	const char *vp0 = NULL;

	ai_skip_none(run);
	ai->summary_done = true;
	if ((r = tke_run_refresh(run)) != 0) {
		json_decref(units);
		return ky_err_exit(r);
	}
	if (!cli_g.json)
		t = cli_table_new(7, hdr);
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		char num[16], adm[16], thr[16];
		json_t *names = json_array();

		if (!u->reachable) {
			same = false;
			json_decref(names);
			continue;
		}
		if (u->st.cur_state != KY_CUR_VALID)
			same = false;
		else if (vp0 == NULL)
			vp0 = u->st.cur_vp;
		else if (strcmp(vp0, u->st.cur_vp) != 0)
			same = false;
		snprintf(num, sizeof(num), "%d", u->u.number);
		snprintf(adm, sizeof(adm), "%zu", u->st.nadmins);
		snprintf(thr, sizeof(thr), "%d/%d", u->st.sig, u->st.rev);
		for (size_t k = 0; k < u->st.nadmins; k++)
			json_array_append_new(names, json_string(u->st.admins[k].name));
		json_array_append_new(
		    units,
		    json_pack("{s:i, s:s, s:s, s:o, s:i, s:i, s:{s:s, s:s?}, s:{s:s, s:s?}}",
		              "number", u->u.number, "id", u->u.id, "zone", u->u.zone, "admins",
		              names, "signature_threshold", u->st.sig, "revocation_threshold",
		              u->st.rev, "new_mk", "state", ky_new_state_name(u->st.new_state),
		              "vp", u->st.new_vp[0] ? u->st.new_vp : NULL, "current_mk", "state",
		              ky_cur_state_name(u->st.cur_state), "vp",
		              u->st.cur_vp[0] ? u->st.cur_vp : NULL));
		if (t != NULL) {
			const char *cells[7] = {num,
			                        u->u.zone,
			                        adm,
			                        thr,
			                        ky_new_state_name(u->st.new_state),
			                        ky_cur_state_name(u->st.cur_state),
			                        u->st.cur_vp};
			if (cli_table_add(t, cells) != 0)
				same = false;
		}
	}
	if (cli_g.json) {
		json_t *created = json_array();
		for (size_t k = 0; created != NULL && k < ai->nadmins; k++)
			if (ai->admins[k].created)
				json_array_append_new(created, json_pack("{s:s, s:s}", "name",
				                                         ai->admins[k].name, "file",
				                                         ai->admins[k].path));
		cli_print_json(json_pack("{s:O, s:o, s:b, s:s?, s:o?}", "steps", ai->steps, "units",
		                         units, "current_vp_same", same, "current_vp",
		                         same ? vp0 : NULL, "created_sigkeys", created));
		units = NULL;
	} else {
		printf("result\n");
		cli_table_print(t, stdout);
		cli_table_free(t);
		if (same)
			printf("current master key verification pattern is the same on all %zu "
			       "crypto units: %s\n",
			       run->n, vp0);
		else
			printf("the crypto units differ: see 'kyok tke cryptounit-compare'\n");
	}
	json_decref(units);
	return same ? 0 : ky_err_exit(KY_ERR_VP_MISMATCH);
}

static int ai_run_steps(struct ai *ai)
{
	int status = 0;
	struct tke_run *run = &ai->run;
	struct ai_mk m = {0};

	ai->nsteps = (int)ai->nadmins + 1 + 1 + (run->n > 1 ? 2 : 0) + 2;
	for (size_t k = 0; k < ai->nadmins; k++) {
		struct tke_op op = {KY_OP_ADMIN_ADD, ai_admin_plan, ai_admin_fill, &ai->admins[k]};
		char what[96];

		snprintf(what, sizeof(what), "install administrator '%s'", ai->admins[k].name);
		if ((status = ai_step(ai, what, &op)) != 0)
			goto out;
	}
	{
		struct tke_op op = {KY_OP_THRESHOLDS_SET, NULL, ai_thr_fill, ai};
		char what[96];

		snprintf(what, sizeof(what), "set thresholds %d/%d (ends imprint mode)", ai->sig,
		         ai->rev);
		if ((status = ai_step(ai, what, &op)) != 0)
			goto out;
	}
	{
		struct tke_op op = {KY_OP_MK_GENERATE, ai_generate_plan, NULL, &m};
		char what[96];

		ai_skip_all_but(run, 0, false);
		snprintf(what, sizeof(what), "generate a random master key in crypto unit %d",
		         run->units[0].u.number);
		if ((status = ai_step(ai, what, &op)) != 0)
			goto out;
		{
			const char *vp =
			    json_string_value(json_object_get(run->units[0].result_json, "vp"));
			snprintf(m.vp_hex, sizeof(m.vp_hex), "%s",
			         vp != NULL ? vp : run->units[0].st.new_vp);
		}
		if (ky_hex_decode(m.vp_hex, m.vp, KY_VP_LEN) != 0) {
			status = cli_fail(KY_ERR_BAD_REPLY, "crypto unit",
			                  "no verification pattern "
			                  "after mk-generate");
			goto out;
		}
	}
	if (run->n > 1) {
		struct tke_op op = {KY_OP_MK_EXPORT, NULL, ai_export_fill, &m};
		json_t *envs, *sigs;
		char what[96];

		if (run->n - 1 > KY_MAX_ADMINS || run->n > 16) {
			status =
			    cli_fail(KY_ERR_USAGE, NULL, "too many crypto units for one export");
			goto out;
		}
		/* Importer and identity certificates, each checked against its unit's pinned
		 * identity: the chains the exporting unit checks against its anchor. */
		if (unit_identity_cert(&run->inst, &run->units[0].u, &m.source) != 0) {
			status = ky_err_exit(KY_ERR_IDENTITY_CHANGED);
			ai_advice_stopped(ai, "fetching the identity certificates");
			goto out;
		}
		for (size_t i = 1; i < run->n; i++) {
			int r = unit_importer(&run->inst, &run->units[i].u, &m.recips[m.nrecips]);
			if (r == 0)
				r = unit_identity_cert(&run->inst, &run->units[i].u,
				                       &m.recip_ids[m.nrecips]);
			if (r != 0) {
				X509_free(m.recips[m.nrecips]);
				m.recips[m.nrecips] = NULL;
				status = ky_err_exit(r);
				ai_advice_stopped(ai, "fetching the importer certificates");
				goto out;
			}
			m.nrecips++;
		}
		ai_skip_all_but(run, 0, false);
		snprintf(what, sizeof(what),
		         "export the master key from crypto unit %d to %zu other unit%s",
		         run->units[0].u.number, m.nrecips, m.nrecips == 1 ? "" : "s");
		if ((status = ai_step(ai, what, &op)) != 0)
			goto out;
		envs = json_object_get(run->units[0].result_json, "envelopes");
		sigs = json_object_get(run->units[0].result_json, "signatures");
		if (json_array_size(envs) != m.nrecips || json_array_size(sigs) != m.nrecips) {
			status = cli_fail(KY_ERR_BAD_REPLY, "crypto unit",
			                  "mk-export answered %zu envelopes for %zu recipients",
			                  json_array_size(envs), m.nrecips);
			goto out;
		}
		for (size_t i = 1; i < run->n; i++) {
			const char *b64 = json_string_value(json_array_get(envs, i - 1));
			const char *sig = json_string_value(json_array_get(sigs, i - 1));
			if (b64 == NULL || ky_b64_decode(b64, &m.envelopes[i]) != 0 ||
			    sig == NULL || ky_b64_decode(sig, &m.signatures[i]) != 0) {
				status = cli_fail(KY_ERR_BAD_REPLY, "crypto unit",
				                  "mk-export envelope %zu is not base64", i);
				goto out;
			}
		}
		{
			struct tke_op iop = {KY_OP_MK_IMPORT, ai_import_plan, ai_import_fill, &m};
			ai_skip_all_but(run, 0, true);
			if ((status = ai_step(ai, "import the master key", &iop)) != 0)
				goto out;
		}
	}
	ai_skip_none(run);
	{
		struct tke_op op = {KY_OP_MK_COMMIT, ai_commit_plan, ai_vp_fill, &m};
		if ((status = ai_step(ai, "commit the new master key", &op)) != 0)
			goto out;
	}
	{
		struct tke_op op = {KY_OP_MK_SETIMM, ai_setimm_plan, ai_vp_fill, &m};
		if ((status = ai_step(ai, "set the new master key as current", &op)) != 0)
			goto out;
	}
	status = ai_summary(ai);
out:
	for (size_t i = 0; i < m.nrecips; i++) {
		X509_free(m.recips[i]);
		X509_free(m.recip_ids[i]);
	}
	X509_free(m.source);
	for (size_t i = 0; i < 16; i++) {
		ky_buf_free(&m.envelopes[i]);
		ky_buf_free(&m.signatures[i]);
	}
	OPENSSL_cleanse(&m, sizeof(m));
	return status;
}

int tke_auto_init_main(int argc, char **argv)
{
	static const struct cli_opt longopts[] = {
	    {"signature", OPT_SIGNATURE, CLI_ARG_REQUIRED, "N",
	     "signature threshold, 1 to 8 (asked when missing, after the administrators; an empty "
	     "answer is 2, or 1 with one administrator)"},
	    {"revocation", OPT_REVOCATION, CLI_ARG_REQUIRED, "N",
	     "revocation threshold, 1 to 8 (asked the same way)"},
	    {"admins", OPT_ADMINS, CLI_ARG_REQUIRED, "N",
	     "number of administrators (default: the keys given; asked without --sigkeys and "
	     "--new-admins, an empty answer being the workspace's number of signature keys)"},
	    {"sigkeys", OPT_SIGKEYS, CLI_ARG_REQUIRED, "N,N,...",
	     "existing signature keys to install (numbers from 'sigkeys')"},
	    {"new-admins", OPT_NEW_ADMINS, CLI_ARG_REQUIRED, "NAME,...",
	     "create a signature key for each name (passwords asked twice) (without --sigkeys and "
	     "--new-admins, both are asked)"},
	    CLI_OPT_IMPRINT,
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, opt, status = 0, admins = 0;
	const char *sig = NULL, *rev = NULL, *nadm = NULL, *sigkeys = NULL, *new_admins = NULL;
	struct ai ai;

	memset(&ai, 0, sizeof(ai));
	while ((opt = cli_getopt(argc, argv, longopts, cli_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			tke_print_help(ai_usage, longopts);
			return 0;
		case OPT_SIGNATURE:
			sig = optarg;
			break;
		case OPT_REVOCATION:
			rev = optarg;
			break;
		case OPT_ADMINS:
			nadm = optarg;
			break;
		case OPT_SIGKEYS:
			sigkeys = optarg;
			break;
		case OPT_NEW_ADMINS:
			new_admins = optarg;
			break;
		default:
			if (cli_common_opt(opt, optarg) != 0)
				return KY_EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(), "unexpected argument '%s'",
		                argv[optind]);
	if (sig != NULL && tke_int_parse(sig, 1, KY_MAX_ADMINS, &ai.sig) != 0)
		return cli_fail(KY_ERR_THRESHOLD_RANGE, "--signature", "not '%s'", sig);
	if (rev != NULL && tke_int_parse(rev, 1, KY_MAX_ADMINS, &ai.rev) != 0)
		return cli_fail(KY_ERR_THRESHOLD_RANGE, "--revocation", "not '%s'", rev);
	if (nadm != NULL && tke_int_parse(nadm, 1, KY_MAX_ADMINS, &admins) != 0)
		return cli_fail(KY_ERR_USAGE, "--admins", "a number from 1 to 8, not '%s'", nadm);

	/* Every selected unit reachable and in imprint mode, or nothing is done. */
	if ((r = tke_run_load(&ai.run)) != 0)
		goto out_r;
	ai.run.no_rerun_hint = true; /* auto-init says itself what to do */
	for (size_t i = 0; i < ai.run.n; i++) {
		const struct tke_unit *u = &ai.run.units[i];
		if (!u->reachable) {
			status =
			    cli_fail(KY_ERR_UNREACHABLE, NULL,
			             "auto-init needs every selected crypto unit: crypto unit %d "
			             "(%s) does not answer; nothing was done",
			             u->u.number, u->u.zone);
			goto out;
		}
	}
	if (ai_all_initialised(&ai.run)) {
		status = cli_fail(KY_ERR_NOT_IMPRINT_MODE, NULL,
		                  "the selected crypto units are already initialised: current "
		                  "master key vp %s on all of them; nothing was done",
		                  ai.run.units[0].st.cur_vp);
		tke_note("to start over: kyok tke cryptounit-zeroize, then kyok tke auto-init");
		goto out;
	}
	for (size_t i = 0; i < ai.run.n; i++) {
		if (!ai.run.units[i].st.imprint) {
			status =
			    cli_fail(KY_ERR_NOT_IMPRINT_MODE, NULL,
			             "crypto unit %d (%s) is not in imprint mode; nothing was done",
			             ai.run.units[i].u.number, ai.run.units[i].u.zone);
			ai_print_units(&ai.run);
			ai_advice_not_imprint();
			goto out;
		}
	}
	/* The units take the first commands only with the instance's imprint credential. */
	{
		char why[512] = "";
		if ((r = cli_imprint_require(why, sizeof(why))) != 0) {
			status = cli_fail(r, "imprint credential", "%s; nothing was done", why);
			goto out;
		}
	}
	/* Who the administrators are first, then the thresholds, which cannot exceed their
	 * number (default: 2 signatures where there are 2 administrators or more). */
	if ((r = ai_choose(&ai, sigkeys, new_admins, admins)) != 0)
		goto out_r;
	{
		int most = (int)ai.nadmins, def = most >= 2 ? 2 : 1;
		char prompt[96];

		snprintf(prompt, sizeof(prompt), "signature threshold (1-%d)", most);
		if (ai.sig == 0 &&
		    (r = tke_ask_threshold(prompt, "--signature", most, def, &ai.sig)) != 0)
			goto out_r;
		snprintf(prompt, sizeof(prompt), "revocation threshold (1-%d)", most);
		if (ai.rev == 0 &&
		    (r = tke_ask_threshold(prompt, "--revocation", most, def, &ai.rev)) != 0)
			goto out_r;
	}
	if ((size_t)ai.sig > ai.nadmins || (size_t)ai.rev > ai.nadmins) {
		status = cli_fail(KY_ERR_THRESHOLD_ABOVE_ADMINS, NULL,
		                  "thresholds %d/%d with %zu administrator%s", ai.sig, ai.rev,
		                  ai.nadmins, ai.nadmins == 1 ? "" : "s");
		goto out;
	}
	if ((r = ai_check_units(&ai)) != 0)
		goto out_r;
	if ((r = ai_passwords(&ai)) != 0 || (r = ai_create_keys(&ai)) != 0)
		goto out_r;
	if (cli_g.json && (ai.steps = json_array()) == NULL) {
		r = cli_err(KY_ERR_NOMEM, NULL, NULL);
		goto out_r;
	}
	status = ai_run_steps(&ai);
	if (status != 0 && ai.steps != NULL && !ai.summary_done)
		/* The steps done so far, for scripts; the error is on stderr. */
		cli_print_json(json_pack("{s:O, s:b}", "steps", ai.steps, "completed", 0));
	goto out;
out_r:
	status = ky_err_exit(r);
out:
	ai_release(&ai);
	return status;
}
