/* The engine behind every 'kyok tke' command that changes crypto units with signed
 * commands: read each selected unit's state, decide per unit, check locally what can be
 * checked, sign with the selected signature keys, submit, report per unit.
 *
 * A command's life: tke_run_load (states of the selected units) -> tke_run_plan (per unit:
 * unchanged, to do, or refused before anything is sent; builds the command bytes) ->
 * tke_run_check_signers (before any password) -> cli_signers_open -> tke_run_submit or
 * tke_run_prepare -> tke_run_report. tke_run_finish runs every part after the plan, with a
 * verb's hooks (struct tke_hooks); tke_run_command plans first.
 */
#ifndef KYOK_CLI_TKE_SIGNING_H
#define KYOK_CLI_TKE_SIGNING_H

#include <stdio.h>

#include "cli/cli.h"
#include "cli/token.h"
#include "kyok/ceremony.h"

enum tke_result {
	TKE_PENDING,     /* a command is to be sent */
	TKE_CHANGED,     /* the unit accepted it */
	TKE_UNCHANGED,   /* already in the desired state: nothing sent */
	TKE_REFUSED,     /* refused by the unit, or locally before anything was sent */
	TKE_UNREACHABLE, /* state or command could not be exchanged */
	TKE_PREPARED,    /* written into a command bundle */
};

struct tke_unit {
	struct cli_unit u;
	bool skip;      /* not part of this step (auto-init) */
	bool reachable; /* state was read */
	struct ky_unit_state st;
	enum tke_result result;
	int err;               /* refusal code */
	char detail[640];      /* "unchanged" reason or refusal detail */
	int required;          /* signatures the command needs on this unit */
	struct ky_buf content; /* encoded command (TKE_PENDING) */
	struct ky_buf cms;     /* a command already signed, sent as is (cmd-submit) */
	char op_summary[160];  /* e.g. "thresholds-set signature 2 revocation 2" */
	json_t *result_json;   /* the unit's "result" after success */
};

struct tke_run {
	struct cli_instance inst;
	struct tke_unit *units;
	size_t n;
	bool local_refusal; /* set by tke_run_plan */
	bool no_rerun_hint; /* report: no "re-run the command" line (auto-init) */
};

/* Per-command decisions. plan is called for every reachable, non-skipped unit: it leaves
 * u->result at TKE_PENDING, or sets TKE_UNCHANGED with u->detail, or returns an error code
 * with u->detail for a refusal found locally. fill sets the op's fields of c (instance,
 * unit, counter and op are set by the engine). */
struct tke_op {
	enum ky_op op;
	int (*plan)(void *ctx, struct tke_run *run, struct tke_unit *u);
	int (*fill)(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c);
	void *ctx;
};

/* Loads the instance and the selected units and reads every unit's state. Units that do
 * not answer are marked unreachable; a unit whose identity changed, or a bad reply, is an
 * error for the whole command (nothing is sent). */
int tke_run_load(struct tke_run *run) KY_WUR;
/* Same for the given unit ids (cmd-submit). */
int tke_run_load_ids(struct tke_run *run, const char *const *ids, size_t n) KY_WUR;
/* Reads every non-skipped unit's state again and clears results (next step). */
int tke_run_refresh(struct tke_run *run) KY_WUR;
void tke_run_release(struct tke_run *run);

/* Plans op on every unit and builds each command. On a local refusal prints every one
 * ("error: crypto unit N: ...") and "nothing was sent" and returns the first error. */
int tke_run_plan(struct tke_run *run, const struct tke_op *op) KY_WUR;
/* Number of units with a command to send; the largest signature count needed. */
size_t tke_run_pending(const struct tke_run *run, int *max_required);
/* Before any password: the selected signature keys (by SKI) that are administrators of
 * each unit must be at least the unit's required count. Prints and returns the error. */
int tke_run_check_signers(struct tke_run *run) KY_WUR;
/* Before any password and only when commands are to be sent: when a unit with a command to
 * send is in imprint mode, the imprint credential must be at hand. Prints and returns the
 * error (KY_ERR_IMPRINT_CLAIM_REQUIRED, or what is wrong with the credential file). */
int tke_run_imprint_check(struct tke_run *run) KY_WUR;
/* Signs each planned command with the signers that are administrators of its unit
 * (when the unit needs signatures) and submits it. Results go to the units. */
void tke_run_submit(struct tke_run *run, const struct cli_signer *signers, size_t nsigners);
/* Writes the planned commands, unsigned, into a command bundle. */
int tke_run_prepare(struct tke_run *run, const char *path) KY_WUR;
/* Prints the per-unit table and summary (or JSON with --output json when json_steps is
 * NULL; else appends {"step": title, "units": [...]} to json_steps). Returns the exit
 * status: 0, or ky_err_exit of the first refusal / unreachable unit. */
int tke_run_report(struct tke_run *run, const char *title, json_t *json_steps);

/* What a verb adds to the runner's sequence; every field may be left 0 (hooks NULL). Every
 * verb that signs goes through the runner with its hooks: the admin, master key and API key
 * verbs, and the steps of auto-init, auto-recover and mk-rotate (its re-encipherment on one
 * unit too). */
struct tke_hooks {
	const char *prepare;  /* write the commands into this bundle: nothing is signed or sent */
	const char *warning;  /* printed when a command is to be sent or prepared */
	const char *question; /* then asked (cli_confirm): a no sends nothing */
	/* signers_open: the verb opened signers and nsigners itself (a verb of several steps
	 * opens them once); they sign as they are, checked against each unit's admins. Else
	 * the selected signature keys are checked and opened when a command needs them. */
	bool signers_open;
	const struct cli_signer *signers;
	size_t nsigners;
	/* Called after the commands were sent (or not), before the report: may change what
	 * units report (several units that share key storage). */
	void (*after_submit)(void *ctx, struct tke_run *run);
	void *ctx;
	const char *title;  /* the report's title (a step of several), or NULL */
	json_t *json_steps; /* with --output json: the report goes into this array */
	/* changed_note: when every unit of the run took the command, a line "crypto unit N
	 * (ZONE) " changed_note on stderr for each instead of the report (nothing with --output
	 * json): a step that hands work on from one unit to another. */
	const char *changed_note;
	/* only (tke_run_command, not tke_run_finish): the run is this unit's alone (one of
	 * run->units): the others are skipped and its state is read again before the plan.
	 * When it does not answer, nothing is sent or printed and the exit status is that of
	 * KY_ERR_UNREACHABLE (the verb says what to do). Afterwards no unit is skipped. */
	const struct tke_unit *only;
};

/* The one runner: after tke_run_plan, when a command is to be sent, the warning and
 * question, then prepare, or: imprint credential, signers (before any password), sign and
 * submit; then after_submit and the report (or the changed_note lines), and how to go on
 * with a prepared bundle. Returns the exit status. */
int tke_run_finish(struct tke_run *run, const struct tke_hooks *hooks);
/* tke_run_plan, then tke_run_finish (on hooks->only alone when set). Returns the exit
 * status. */
int tke_run_command(struct tke_run *run, const struct tke_op *op, const struct tke_hooks *hooks);

/* Signature requirement of c on a unit in state st, by the ceremony's own rule. */
int tke_required(const struct ky_unit_state *st, const struct ky_command *c, int *required) KY_WUR;

/* ---- the engine's parts the bundle verbs (cli/tke_cmd.c) use ---- */

/* Sets a unit's result, error and detail (fmt may format u->detail itself). */
void tke_unit_set(struct tke_unit *u, enum tke_result res, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The command's own fields, in words (cmd-show, bundle comments). */
void tke_command_summary(const struct ky_command *c, char *out, size_t outlen);
/* Prints the refusals found before sending, and "nothing was sent"; returns the error. */
int tke_print_local_refusals(struct tke_run *run) KY_WUR;
/* How many of skis are administrators of st (each counted once); their names in names. */
int tke_count_admin_skis(const struct ky_unit_state *st, const uint8_t (*skis)[KY_SKI_LEN],
                         size_t n, char *names, size_t nameslen);

/* ---- helpers shared by the command files ---- */

/* The fill of an admin-add command (cryptounit-admin-add, auto-init, auto-recover): the
 * new administrator's certificate, a reference taken (KY_ERR_CRYPTO when it cannot be). */
int tke_fill_admin_cert(X509 *cert, struct ky_command *c) KY_WUR;
/* Pure: a decimal integer in [lo, hi] (KY_ERR_USAGE, nothing printed). */
int tke_int_parse(const char *s, int lo, int hi, int *out) KY_WUR;
/* Parses an integer flag value in [lo, hi]; prints the error. */
int tke_parse_int(const char *s, const char *flag, int lo, int hi, int *out) KY_WUR;
/* Asks for a line (or fails naming flag when not interactive) and parses an int. def, when
 * not 0, is shown in brackets and taken for an empty answer. */
int tke_ask_int(const char *prompt, const char *flag, int lo, int hi, int def, int *out) KY_WUR;
/* Asks a threshold (1..hi): KY_ERR_THRESHOLD_RANGE otherwise; def as for tke_ask_int. */
int tke_ask_threshold(const char *prompt, const char *flag, int hi, int def, int *out) KY_WUR;
/* Prints usage text plus the common options on stdout. */
void tke_print_help(const char *usage, const struct cli_opt *opts);
/* The --prepare FILE row of the commands that can prepare a bundle (id: the file's own). */
#define TKE_OPT_PREPARE(id)                                                                        \
	{                                                                                          \
		"prepare", id, CLI_ARG_REQUIRED, "FILE",                                           \
		    "do not sign or submit: write the unsigned commands into the command bundle "  \
		    "FILE, to be signed with 'kyok tke cmd-sign' (on other workstations too) and " \
		    "sent with 'kyok tke cmd-submit'"                                              \
	}
/* Options of a ceremony command that takes no operand and, of its own, only --prepare FILE;
 * with parts not NULL --parts N,N,... too; with imprint --imprint-credential FILE too (not
 * both). Returns -1 after --help, 0 to go on, or KY_ERR_USAGE (printed). */
int tke_opts_prepare(int argc, char **argv, const char *usage, bool imprint, const char **prepare,
                     const char **parts) KY_WUR;
/* Number of selected signature keys and their SKIs (no password needed). */
int tke_selected_sigkeys(struct cli_sigkey **keys, size_t *n, size_t *nselected) KY_WUR;
/* Opens one signature key file with a password, the token it names with the PIN, or the
 * card it names (nothing asked here: the card signs through cli_signer_sign), for
 * auto-init; why says what the token said ("" otherwise). */
int tke_signer_open_path(const char *path, const char *password, struct cli_signer *out,
                         char why[CLI_TOKEN_WHY_MAX]) KY_WUR;
/* Prints the common "unit N is in imprint mode" etc. style notices to stderr. */
void tke_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
