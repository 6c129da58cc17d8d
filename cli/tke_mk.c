/* kyok tke cryptounit-mk-load, -mk-commit, -mk-setimm, -mk-clrnew, -mk-clrcur: the master
 * key registers of the selected crypto units. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/card_part.h"
#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/tke_signing.h"
#include "cli/token_part.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

/* ---- cryptounit-mk-load ---- */

/* The chosen key parts. A part read on the workstation (a key part file) is kept in parts
 * and sealed to each unit's importer key when its command is built. A part whose holder
 * seals it itself, so that it never appears here in clear, is sealed for every unit before
 * the run: sealed[k * nunits + i] is part k for run unit i. The new key's VP is known here
 * only when every part was read here; otherwise the units report it. */
struct mk_load_ctx {
	size_t nparts;
	size_t nunits;
	uint8_t *parts;        /* nparts * KY_MK_LEN, secure heap; zero for a holder's part */
	struct ky_buf *sealed; /* nparts * nunits; empty for a part read here */
	bool has_vp;
	uint8_t vp[KY_VP_LEN];
	char vp_hex[2 * KY_VP_LEN + 1];
	struct cli_token_set tokens; /* of the parts held in tokens, each opened once */
};

static bool mk_load_sealed_by_holder(const struct mk_load_ctx *m, size_t k)
{
	for (size_t i = 0; i < m->nunits; i++)
		if (m->sealed[k * m->nunits + i].len > 0)
			return true;
	return false;
}

static int mk_load_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	struct mk_load_ctx *m = ctx;

	(void)run;
	if (u->st.new_state != KY_NEW_EMPTY && !m->has_vp) {
		snprintf(u->detail, sizeof(u->detail),
		         "new master key register is %s (vp %s), and the key the chosen parts make "
		         "is known only inside the units: clear the register first "
		         "(cryptounit-mk-clrnew)",
		         ky_new_state_name(u->st.new_state), u->st.new_vp);
		return KY_ERR_REGISTER_STATE;
	}
	if (u->st.new_state != KY_NEW_EMPTY) {
		if (strcmp(u->st.new_vp, m->vp_hex) == 0) {
			snprintf(u->detail, sizeof(u->detail),
			         "new master key register already holds this key (%s)",
			         ky_new_state_name(u->st.new_state));
			u->result = TKE_UNCHANGED;
			return 0;
		}
		snprintf(u->detail, sizeof(u->detail),
		         "new master key register is %s with another key (vp %s): clear it first "
		         "(cryptounit-mk-clrnew)",
		         ky_new_state_name(u->st.new_state), u->st.new_vp);
		return KY_ERR_REGISTER_STATE;
	}
	if (m->has_vp && u->st.cur_state == KY_CUR_VALID && strcmp(u->st.cur_vp, m->vp_hex) == 0) {
		snprintf(u->detail, sizeof(u->detail), "the current master key has vp %s",
		         m->vp_hex);
		return KY_ERR_SAME_KEY;
	}
	return 0;
}

static int mk_load_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	int r = KY_ERR_INTERNAL;
	struct mk_load_ctx *m = ctx;
	X509 *importer = NULL;
	size_t ui = (size_t)(u - run->units);

	/* unit_importer checks the certificate against the unit's pinned identity. */
	if ((r = unit_importer(&run->inst, &u->u, &importer)) != 0) {
		snprintf(u->detail, sizeof(u->detail),
		         "cannot get the unit's importer certificate");
		return r;
	}
	for (size_t i = 0; i < m->nparts; i++) {
		const struct ky_buf *held = &m->sealed[i * m->nunits + ui];

		if (mk_load_sealed_by_holder(m, i)) {
			if (held->len == 0) {
				r = KY_ERR_INTERNAL;
				snprintf(u->detail, sizeof(u->detail),
				         "key part %zu was not sealed to this unit", i + 1);
				goto out;
			}
			if ((r = ky_buf_append(&c->parts[i], held->data, held->len)) != 0) {
				snprintf(u->detail, sizeof(u->detail), "out of memory");
				goto out;
			}
			continue;
		}
		if ((r = ky_envelope_seal(m->parts + i * KY_MK_LEN, KY_MK_LEN, importer,
		                          &c->parts[i])) != 0) {
			snprintf(u->detail, sizeof(u->detail),
			         "cannot encrypt key part %zu to the unit's importer key", i + 1);
			goto out;
		}
	}
	c->nparts = m->nparts;
	c->has_vp = m->has_vp;
	if (m->has_vp)
		memcpy(c->vp, m->vp, KY_VP_LEN);
	r = 0;
out:
	X509_free(importer);
	return r;
}

/* Lists key part files on stderr and asks which to load. */
static int mk_load_choose(const struct cli_keypart *parts, size_t n, const char *flag, int *chosen,
                          size_t *nchosen)
{
	int r = KY_ERR_INTERNAL;
	char *line = NULL, why[256];
	int maxnum = 0;

	for (size_t i = 0; i < n; i++)
		if (parts[i].number > maxnum)
			maxnum = parts[i].number;
	if (flag == NULL) {
		fprintf(stderr, "key part files:\n");
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, "  %3d  %-40s  vp %s%s%s%s%s\n", parts[i].number,
			        parts[i].description, parts[i].vp_hex,
			        parts[i].in_token ? "  in token '" : "",
			        parts[i].in_token ? parts[i].token_label : "",
			        parts[i].in_token ? "'" : "",
			        parts[i].on_card ? "  (on an EP11 card)" : "");
		if ((r = cli_prompt_line("key parts to load (numbers, comma-separated, 2 to 8)",
		                         "--parts 1,2", &line)) != 0)
			return r;
		flag = line;
	}
	r = cli_parse_numbers(flag, maxnum, chosen, KY_MAX_PARTS + 1, nchosen, why, sizeof(why));
	if (r != 0) {
		cli_err(KY_ERR_USAGE, "--parts", "%s", why);
		goto out;
	}
	if (*nchosen < KY_MIN_PARTS || *nchosen > KY_MAX_PARTS) {
		r = cli_err(KY_ERR_KEY_PARTS, NULL, "%zu chosen", *nchosen);
		goto out;
	}
	for (size_t k = 0; k < *nchosen; k++) {
		bool found = false;
		for (size_t i = 0; i < n; i++)
			found = found || parts[i].number == chosen[k];
		if (!found) {
			r = cli_err(KY_ERR_NOT_FOUND, "key part",
			            "no key part number %d: see 'kyok tke mks'", chosen[k]);
			goto out;
		}
	}
	r = 0;
out:
	free(line);
	return r;
}

/* Before any password: mode of the units and enough signers selected for n parts. */
static int mk_load_precheck(struct tke_run *run, size_t nparts, bool prepare)
{
	int r = KY_ERR_INTERNAL;
	struct cli_sigkey *keys = NULL;
	size_t nkeys = 0, nsel = 0;

	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		if (u->reachable && u->st.imprint) {
			char subject[128];
			snprintf(subject, sizeof(subject), "crypto unit %d (%s)", u->u.number,
			         u->u.zone);
			cli_fail(KY_ERR_IMPRINT_MODE, subject, NULL);
			tke_note("nothing was sent to any crypto unit");
			return KY_ERR_IMPRINT_MODE;
		}
	}
	if (prepare)
		return 0;
	if ((r = tke_selected_sigkeys(&keys, &nkeys, &nsel)) != 0)
		return r;
	free(keys);
	if (nsel < nparts) {
		r = nsel == 0 ? KY_ERR_NO_SIGNERS : KY_ERR_NOT_ENOUGH_SIGNATURES;
		return cli_err(
		    r, NULL,
		    "loading %zu key parts needs %zu signatures (one per key part), and %zu "
		    "signature key%s %s selected: select more with 'kyok tke sigkey-sel'",
		    nparts, nparts, nsel, nsel == 1 ? "" : "s", nsel == 1 ? "is" : "are");
	}
	/* Which selected keys are administrators of each unit: all units need nparts. */
	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		if (u->reachable && !u->skip) {
			u->result = TKE_PENDING;
			u->required = (int)nparts;
		}
	}
	return tke_run_check_signers(run); /* tke_run_plan starts afresh */
}

/* A key part file: its password asked, the part read into m->parts (row k). */
static int mk_load_take_file(struct mk_load_ctx *m, size_t k, const struct cli_keypart *p,
                             struct ky_keypart_info *info)
{
	int r = KY_ERR_INTERNAL;
	char prompt[256], subject[700], *pw = NULL;

	if ((r = cli_check_private("key part file", p->path)) != 0)
		return r;
	snprintf(prompt, sizeof(prompt), "password for key part '%s'", p->description);
	if ((r = cli_password(prompt, false, &pw)) != 0)
		return r;
	r = ky_keypart_open(p->path, pw, &info[k], m->parts + k * KY_MK_LEN);
	cli_secret_free(pw);
	snprintf(subject, sizeof(subject), "key part '%s' (%s)", p->description, p->path);
	if (r != 0) {
		cli_fail(r, subject, "nothing was sent to any crypto unit");
		return r;
	}
	for (size_t j = 0; j < k; j++) {
		if (!mk_load_sealed_by_holder(m, j) &&
		    CRYPTO_memcmp(m->parts + j * KY_MK_LEN, m->parts + k * KY_MK_LEN, KY_MK_LEN) ==
		        0)
			return cli_err(KY_ERR_KEY_PARTS, subject,
			               "it holds the same value as key part '%s': choose distinct "
			               "key parts",
			               info[j].description);
	}
	return 0;
}

/* A part held in a token: the token seals it for every unit of the run that will get the
 * command, to that unit's importer certificate (checked against its pinned identity). */
static int mk_load_take_token(struct mk_load_ctx *m, size_t k, const struct cli_keypart *p,
                              struct tke_run *run, struct ky_keypart_info *info)
{
	int r = KY_ERR_INTERNAL;
	struct cli_token_keypart tp;
	struct cli_token_part_ref ref;
	char subject[700], why[CLI_TOKEN_WHY_MAX];
	X509 *importer = NULL;

	snprintf(subject, sizeof(subject), "key part '%s' (%s)", p->description, p->path);
	if ((r = cli_token_keypart_read(p->path, &tp, why, sizeof(why))) != 0)
		return cli_err(r, subject, "%s", why);
	if ((r = cli_token_keypart_take(&m->tokens, &tp, subject, &ref)) != 0)
		return r;
	snprintf(info[k].description, sizeof(info[k].description), "%s", tp.description);
	memcpy(info[k].vp, tp.vp, KY_VP_LEN);
	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];
		char unit[128];

		if (!u->reachable || u->skip)
			continue;
		snprintf(unit, sizeof(unit), "crypto unit %d (%s)", u->u.number, u->u.zone);
		if ((r = unit_importer(&run->inst, &u->u, &importer)) != 0)
			return cli_err(r, unit,
			               "cannot get the unit's importer certificate; nothing "
			               "was sent to any crypto unit");
		r = cli_token_keypart_seal(&ref, importer, &m->sealed[k * m->nunits + i], why,
		                           sizeof(why));
		X509_free(importer);
		importer = NULL;
		if (r != 0)
			return cli_err(r, subject,
			               "%s (for %s); nothing was sent to any crypto unit", why,
			               unit);
	}
	return 0;
}

/* Takes the chosen part k from where the workspace says it is held; two parts with one
 * value (one VP) are refused whatever holds them. */
static int mk_load_take_part(struct mk_load_ctx *m, size_t k, const struct cli_keypart *p,
                             struct tke_run *run, struct ky_keypart_info *info)
{
	int r = KY_ERR_INTERNAL;

	if (p->in_token)
		r = mk_load_take_token(m, k, p, run, info);
	else if (p->on_card)
		r = cli_card_part_seal(p->path, run, m->sealed + k * m->nunits, &info[k]);
	else
		r = mk_load_take_file(m, k, p, info);
	if (r != 0)
		return r;
	/* One VP, one value: two parts of one value, whatever holds them, are refused. */
	for (size_t j = 0; j < k; j++)
		if (CRYPTO_memcmp(info[j].vp, info[k].vp, KY_VP_LEN) == 0)
			return cli_err(
			    KY_ERR_KEY_PARTS, p->description,
			    "it holds the same value as key part '%s' (same verification "
			    "pattern): choose distinct key parts; nothing was sent to any crypto "
			    "unit",
			    info[j].description);
	return 0;
}

/* The new key's VP, when every part was read here (the units check it). */
static int mk_load_vp(struct mk_load_ctx *m)
{
	int r = KY_ERR_INTERNAL;
	uint8_t *key = NULL;

	m->has_vp = false;
	for (size_t k = 0; k < m->nparts; k++)
		if (mk_load_sealed_by_holder(m, k))
			return 0;
	if ((key = ky_secret_alloc(KY_MK_LEN)) == NULL)
		return cli_err(KY_ERR_NOMEM, NULL, NULL);
	memset(key, 0, KY_MK_LEN);
	for (size_t k = 0; k < m->nparts; k++)
		for (size_t b = 0; b < KY_MK_LEN; b++)
			key[b] ^= m->parts[k * KY_MK_LEN + b];
	if ((r = ky_vp(key, m->vp)) != 0) {
		cli_err(r, NULL, "cannot compute the verification pattern");
		goto out;
	}
	ky_hex_encode(m->vp, KY_VP_LEN, m->vp_hex);
	m->has_vp = true;
	r = 0;
out:
	ky_secret_free(key, KY_MK_LEN);
	return r;
}

/* The VP each unit reports for the key it received (cryptounit-mk-commit refuses units
 * that disagree). */
static void mk_load_print_vps(const struct tke_run *run)
{
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (u->result == TKE_CHANGED)
			tke_note("crypto unit %d: new master key verification pattern %s",
			         u->u.number, u->st.new_vp);
	}
}

/* Each unit that took the key records the VP of every part it received ("part_vps" of its
 * result, in load order): they must be the VPs of the chosen parts (a part sealed on a card
 * included), else the unit holds another key than the one chosen. */
static int mk_load_check_part_vps(const struct tke_run *run, const struct ky_keypart_info *info,
                                  size_t nparts)
{
	int r = 0;

	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		const json_t *vps = NULL, *got = NULL;
		char subject[128], want[2 * KY_VP_LEN + 1];
		size_t k = 0;

		if (u->result != TKE_CHANGED)
			continue;
		snprintf(subject, sizeof(subject), "crypto unit %d (%s)", u->u.number, u->u.zone);
		vps = json_object_get(u->result_json, "part_vps");
		if (cli_part_vps_check(vps, info, nparts, &k) == 0)
			continue;
		if (k == nparts) {
			r = cli_err(KY_ERR_VP_MISMATCH, subject,
			            "its answer does not list the VP of each of the %zu key parts "
			            "loaded: clear its new register (cryptounit-mk-clrnew)",
			            nparts);
			continue;
		}
		got = json_array_get(vps, k);
		ky_hex_encode(info[k].vp, KY_VP_LEN, want);
		r = cli_err(KY_ERR_VP_MISMATCH, subject,
		            "it received key part %zu '%s' with vp %s, not %s: clear its new "
		            "register (cryptounit-mk-clrnew)",
		            k + 1, info[k].description,
		            json_is_string(got) ? json_string_value(got) : "(none)", want);
	}
	return r;
}

int tke_mk_load_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-mk-load [--parts N,N,...] [--prepare FILE]\n\n"
	    "Loads a new master key into the new master key register of every selected crypto\n"
	    "unit. The key is the XOR of 2 to 8 key part files of the workspace ('kyok tke\n"
	    "mks'); each part's password is asked, and each part travels to a unit encrypted\n"
	    "to that unit's importer key. A part held in a PKCS#11 token is sealed to each\n"
	    "unit's importer key inside the token (its PIN asked once per token); a part\n"
	    "held by an EP11 card (mk-add --card) is encrypted by the card: its card is\n"
	    "asked for in reader 2 and its PIN is asked (PIN pad, --card-pin-file,\n"
	    "--card-pin-fd, terminal). Such parts never appear here in clear, and the units\n"
	    "then report the new key's verification pattern. Passwords, token PINs and card\n"
	    "PINs are asked in the order of the parts, before the signers'. Needs one\n"
	    "administrator signature per key part; every selected signature key signs,\n"
	    "each asking its password.\n\n"
	    "options:\n";
	int r = KY_ERR_INTERNAL, status = 0;
	const char *prepare = NULL, *parts_flag = NULL;
	struct cli_keypart *parts = NULL;
	size_t nparts_ws = 0, nchosen = 0;
	int chosen[KY_MAX_PARTS + 1];
	struct mk_load_ctx m = {0};
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_MK_LOAD, mk_load_plan, mk_load_fill, &m};
	struct ky_keypart_info info[KY_MAX_PARTS];

	if ((r = tke_opts_prepare(argc, argv, usage, false, &prepare, &parts_flag)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = cli_keyparts_list(&parts, &nparts_ws)) != 0)
		return ky_err_exit(r);
	if (nparts_ws < KY_MIN_PARTS) {
		status = cli_fail(KY_ERR_KEY_PARTS, NULL,
		                  "the workspace has %zu key part file%s: create them with 'kyok "
		                  "tke mk-add'",
		                  nparts_ws, nparts_ws == 1 ? "" : "s");
		goto out;
	}
	if ((r = mk_load_choose(parts, nparts_ws, parts_flag, chosen, &nchosen)) != 0)
		goto out_r;
	if ((r = tke_run_load(&run)) != 0)
		goto out_r;
	if ((r = mk_load_precheck(&run, nchosen, prepare != NULL)) != 0)
		goto out_r;

	m.nparts = nchosen;
	m.nunits = run.n;
	if ((m.parts = ky_secret_alloc(nchosen * KY_MK_LEN)) == NULL ||
	    (m.sealed = calloc(nchosen * (run.n > 0 ? run.n : 1), sizeof(*m.sealed))) == NULL) {
		r = cli_err(KY_ERR_NOMEM, NULL, NULL);
		goto out_r;
	}
	memset(m.parts, 0, nchosen * KY_MK_LEN);
	for (size_t k = 0; k < nchosen; k++) {
		const struct cli_keypart *p = NULL;

		for (size_t i = 0; i < nparts_ws; i++)
			if (parts[i].number == chosen[k])
				p = &parts[i];
		if ((r = mk_load_take_part(&m, k, p, &run, info)) != 0)
			goto out_r;
	}
	if ((r = mk_load_vp(&m)) != 0)
		goto out_r;
	if (m.has_vp)
		tke_note("new master key verification pattern: %s", m.vp_hex);
	else
		tke_note("the new master key's verification pattern is computed by the crypto "
		         "units: each unit reports it");
	status = tke_run_command(&run, &op, &(struct tke_hooks){.prepare = prepare});
	if (!m.has_vp)
		mk_load_print_vps(&run);
	if ((r = mk_load_check_part_vps(&run, info, m.nparts)) != 0 && status == 0)
		status = ky_err_exit(r);
	goto out;
out_r:
	status = ky_err_exit(r);
out:
	cli_token_set_release(&m.tokens);
	ky_secret_free(m.parts, m.nparts * KY_MK_LEN);
	if (m.sealed != NULL)
		for (size_t i = 0; i < m.nparts * m.nunits; i++)
			ky_buf_free(&m.sealed[i]);
	free(m.sealed);
	OPENSSL_cleanse(&m, sizeof(m));
	tke_run_release(&run);
	free(parts);
	return status;
}

/* ---- the VP a register command carries ---- */

struct mk_reg_ctx {
	enum ky_op op;
	char target[2 * KY_VP_LEN + 1]; /* VP of the new registers, "" when none is full */
};

/* All selected units that hold a new master key must hold the same one. */
static int mk_reg_target(struct tke_run *run, struct mk_reg_ctx *m)
{
	bool differ = false;

	m->target[0] = '\0';
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (!u->reachable || u->skip || u->st.new_state == KY_NEW_EMPTY)
			continue;
		if (m->target[0] == '\0')
			snprintf(m->target, sizeof(m->target), "%s", u->st.new_vp);
		else if (strcmp(m->target, u->st.new_vp) != 0)
			differ = true;
	}
	if (!differ)
		return 0;
	cli_fail(KY_ERR_VP_MISMATCH, NULL,
	         "the selected crypto units hold different new master keys: nothing was sent");
	for (size_t i = 0; i < run->n; i++) {
		const struct tke_unit *u = &run->units[i];
		if (!u->reachable || u->skip)
			continue;
		fprintf(stderr, "  crypto unit %d (%s): new register %s%s%s\n", u->u.number,
		        u->u.zone, ky_new_state_name(u->st.new_state),
		        u->st.new_vp[0] != '\0' ? ", vp " : "", u->st.new_vp);
	}
	fprintf(stderr, "select units with the same key (cryptounit-add/-rm), or clear the wrong "
	                "ones (cryptounit-mk-clrnew) and load them again\n");
	return KY_ERR_VP_MISMATCH;
}

static int mk_reg_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	struct mk_reg_ctx *m = ctx;
	const struct ky_unit_state *st = &u->st;

	(void)run;
	if (st->new_state == KY_NEW_EMPTY) {
		if (st->cur_state == KY_CUR_VALID && m->target[0] != '\0' &&
		    strcmp(st->cur_vp, m->target) == 0) {
			snprintf(u->detail, sizeof(u->detail),
			         "the key is already the current master key (vp %s)", st->cur_vp);
			u->result = TKE_UNCHANGED;
			return 0;
		}
		if (st->cur_state == KY_CUR_VALID && m->target[0] == '\0')
			snprintf(u->detail, sizeof(u->detail),
			         "new master key register is EMPTY (the current master key, vp %s, "
			         "is in place): nothing to %s; load a new key first "
			         "(cryptounit-mk-load)",
			         st->cur_vp, m->op == KY_OP_MK_COMMIT ? "commit" : "set");
		else
			snprintf(u->detail, sizeof(u->detail),
			         "new master key register is EMPTY: load a key first "
			         "(cryptounit-mk-load)");
		return KY_ERR_REGISTER_STATE;
	}
	if (m->op == KY_OP_MK_COMMIT && st->new_state == KY_NEW_COMMITTED) {
		snprintf(u->detail, sizeof(u->detail), "new master key already committed (vp %s)",
		         st->new_vp);
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (m->op == KY_OP_MK_SETIMM && st->new_state == KY_NEW_UNCOMMITTED) {
		snprintf(u->detail, sizeof(u->detail),
		         "new master key register is FULL UNCOMMITTED: commit it first "
		         "(cryptounit-mk-commit)");
		return KY_ERR_REGISTER_STATE;
	}
	return 0;
}

static int mk_reg_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	(void)ctx;
	(void)run;
	/* The VP read from the unit's own new register. */
	if (ky_hex_decode(u->st.new_vp, c->vp, KY_VP_LEN) != 0)
		return KY_ERR_BAD_REPLY;
	c->has_vp = true;
	return 0;
}

static int mk_reg_main(int argc, char **argv, enum ky_op opcode, const char *usage)
{
	int r = KY_ERR_INTERNAL, status;
	const char *prepare = NULL;
	struct mk_reg_ctx m = {.op = opcode};
	struct tke_run run = {0};
	struct tke_op op = {opcode, mk_reg_plan, mk_reg_fill, &m};
	char question[128];
	const char *warning = NULL;

	if ((r = tke_opts_prepare(argc, argv, usage, false, &prepare, NULL)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if ((r = mk_reg_target(&run, &m)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if ((r = tke_run_plan(&run, &op)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if (opcode == KY_OP_MK_SETIMM) {
		size_t n = tke_run_pending(&run, NULL);
		warning =
		    "warning: set-immediate makes the new master key the current one WITHOUT "
		    "re-enciphering key storage: keys stored under the present current master "
		    "key cannot be used with the new one. To keep them, rotate instead "
		    "(cryptounit-mk-rotate), which re-enciphers key storage first.";
		snprintf(question, sizeof(question),
		         "set the new master key (vp %.16s...) as current on %zu crypto unit%s?",
		         m.target, n, n == 1 ? "" : "s");
	}
	status = tke_run_finish(
	    &run, &(struct tke_hooks){.prepare = prepare,
	                              .warning = warning,
	                              .question = opcode == KY_OP_MK_SETIMM ? question : NULL});
	if (opcode == KY_OP_MK_SETIMM && !cli_g.json) {
		bool stale = false;
		for (size_t i = 0; i < run.n; i++)
			stale = stale ||
			        (run.units[i].result == TKE_REFUSED &&
			         strcmp(ky_err_slug(run.units[i].err), "not-reenciphered") == 0);
		if (stale)
			tke_note(
			    "key storage still holds records under the current master key: run "
			    "'kyok tke cryptounit-mk-rotate', which re-enciphers them under the "
			    "new "
			    "key and then sets it current on every unit");
	}
out:
	tke_run_release(&run);
	return status;
}

int tke_mk_commit_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-mk-commit [--prepare FILE]\n\n"
	    "Commits the new master key register of every selected crypto unit (FULL\n"
	    "UNCOMMITTED -> FULL COMMITTED). The command carries the verification pattern\n"
	    "read from the unit's new register; the selected units must all hold the same new\n"
	    "key. Needs as many signatures as the signature threshold.\n\n"
	    "options:\n";
	return mk_reg_main(argc, argv, KY_OP_MK_COMMIT, usage);
}

int tke_mk_setimm_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-mk-setimm [--prepare FILE]\n\n"
	    "Makes the committed new master key the current one on every selected crypto unit\n"
	    "and empties the new register. It does NOT re-encipher key storage (see\n"
	    "cryptounit-mk-rotate). Asks for confirmation (--yes answers it). Needs one\n"
	    "administrator signature; every selected signature key signs, each asking its\n"
	    "password.\n\n"
	    "options:\n";
	return mk_reg_main(argc, argv, KY_OP_MK_SETIMM, usage);
}

/* ---- clear new / clear current ---- */

/* The unit refuses both in imprint mode (its registers are empty there anyway): said before
 * anything is signed, not reported as "unchanged". */
static int mk_clr_imprint(struct tke_unit *u)
{
	snprintf(u->detail, sizeof(u->detail),
	         "in imprint mode, where no master key register can be cleared: set the "
	         "thresholds first (cryptounit-thrhld-set)");
	return KY_ERR_IMPRINT_MODE;
}

static int mk_clrnew_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	(void)ctx;
	(void)run;
	if (u->st.imprint)
		return mk_clr_imprint(u);
	if (u->st.new_state == KY_NEW_EMPTY) {
		snprintf(u->detail, sizeof(u->detail), "new master key register already EMPTY");
		u->result = TKE_UNCHANGED;
	}
	return 0;
}

static int mk_clrcur_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	(void)ctx;
	(void)run;
	if (u->st.imprint)
		return mk_clr_imprint(u);
	if (u->st.cur_state == KY_CUR_EMPTY) {
		snprintf(u->detail, sizeof(u->detail), "current master key register already EMPTY");
		u->result = TKE_UNCHANGED;
	}
	return 0;
}

int tke_mk_clrnew_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-mk-clrnew [--prepare FILE]\n\n"
	    "Clears the new master key register of every selected crypto unit. Needs one\n"
	    "administrator signature; every selected signature key signs, each asking its\n"
	    "password.\n\n"
	    "options:\n";
	int r = KY_ERR_INTERNAL, status;
	const char *prepare = NULL;
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_MK_CLRNEW, mk_clrnew_plan, NULL, NULL};

	if ((r = tke_opts_prepare(argc, argv, usage, false, &prepare, NULL)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	status = tke_run_command(&run, &op, &(struct tke_hooks){.prepare = prepare});
out:
	tke_run_release(&run);
	return status;
}

int tke_mk_clrcur_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-mk-clrcur [--prepare FILE]\n\n"
	    "Clears the current master key register of every selected crypto unit: the unit\n"
	    "cannot use key storage until a master key is set again. Asks for confirmation\n"
	    "(--yes answers it). Needs one administrator signature; every selected signature\n"
	    "key signs, each asking its password.\n\n"
	    "options:\n";
	int r = KY_ERR_INTERNAL, status;
	const char *prepare = NULL;
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_MK_CLRCUR, mk_clrcur_plan, NULL, NULL};
	char question[128];
	size_t n;

	if ((r = tke_opts_prepare(argc, argv, usage, false, &prepare, NULL)) != 0)
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
	snprintf(question, sizeof(question),
	         "clear the current master key register on %zu crypto unit%s?", n,
	         n == 1 ? "" : "s");
	status = tke_run_finish(
	    &run, &(struct tke_hooks){
	              .prepare = prepare,
	              .warning = "warning: clearing the current master key register makes key "
	                         "storage unusable on these crypto units until a master key is "
	                         "set again (load, commit, set-immediate).",
	              .question = question});
out:
	tke_run_release(&run);
	return status;
}

/* ---- storage-accept ---- */

int tke_storage_accept_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke storage-accept [--prepare FILE]\n\n"
	    "Accepts key storage as it is now on every selected crypto unit: after a restore\n"
	    "from a backup, the units refuse storage older than they have seen it (error\n"
	    "storage-rolled-back) until the administrators accept it with this command. Each\n"
	    "unit then takes the records as they are, writes a new storage digest past every\n"
	    "position it has seen and serves them; keys made or changed after the backup are\n"
	    "gone. Needs the signature threshold.\n\n"
	    "options:\n";
	int r = KY_ERR_INTERNAL, status;
	const char *prepare = NULL;
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_STORAGE_ACCEPT, NULL, NULL, NULL};

	if ((r = tke_opts_prepare(argc, argv, usage, false, &prepare, NULL)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	status = tke_run_command(&run, &op, &(struct tke_hooks){.prepare = prepare});
out:
	tke_run_release(&run);
	return status;
}
