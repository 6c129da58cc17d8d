/* Internals shared by the kyok command's files. */
#ifndef KYOK_CLI_H
#define KYOK_CLI_H

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>

#include "kyok/common.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "cli/opts.h"

/* One row of a dispatch table: main.c and tke.c each hold one array of these;
 * usage text is generated from it. */
struct cli_cmd {
	const char *name;
	int (*fn)(int argc, char **argv); /* argv[0] is the command name */
	const char *help;                 /* one line */
};
int cli_dispatch(const char *prog, const struct cli_cmd *cmds, int argc, char **argv);
void cli_usage_table(FILE *f, const char *prog, const struct cli_cmd *cmds);

/* ---- errors: "error: <subject>: <message>[: <detail>]" on stderr; returns the exit
 * status for err (ky_err_exit). subject and detail may be NULL (an empty detail is left out).
 *
 * Convention: the cli_* and unit_* helpers below print their own error line (through
 * cli_fail or cli_err) before returning an error code, so a command just returns ky_err_exit(r).
 * Exceptions: the pure parsers (cli_parse_numbers, cli_instance_parse) write a reason into
 * their why buffer, and unit_command prints nothing: it hands every failure back in *detail.
 * Command entry points return an exit status (0, or what cli_fail / ky_err_exit gave), and
 * so do the functions that end a command for it: the body several entry points share
 * (kp_key_action, units_select, ...), the kp client (kp_call, kp_call_feature: cli/kp_client.h)
 * and the ceremony runner (tke_run_finish, tke_run_command, tke_run_report) with the
 * steps built on it (auto-init, auto-recover, mk-rotate). Option parsers return -1 after
 * --help (nothing more to do), 0 to go on, or an error code (printed): the caller returns
 * r < 0 ? 0 : ky_err_exit(r). A helper never returns 1 or -1 for an error (1 is
 * KY_ERR_INTERNAL); -1 says "nothing more to do" (help printed, stopped, already done). */
int cli_fail(int err, const char *subject, const char *detail_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same line, returning err itself (not the exit status): for functions that return
 * error codes to their caller. */
int cli_err(int err, const char *subject, const char *detail_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Refuses a secret file or directory that group or other users can access (the rule:
 * ky_path_check_private): prints "error: <what> '<path>': open to other users...: <mode>:
 * run 'chmod 600 <path>'" and returns the error code; 0 when private. what names the
 * file for the user, e.g. "signature key file", "password file", "workspace directory". */
int cli_check_private(const char *what, const char *path) KY_WUR;
/* No core dumps, not dumpable, secure heap: the CLI holds passwords, key parts and private
 * keys. First thing in main. */
int cli_harden(void) KY_WUR;
/* Full name of the running command, e.g. "kyok tke sigkeys" (set by cli_dispatch). */
const char *cli_cmd_name(void);

/* ---- global options every command accepts: the table cli_common_opts (cli/opts.h), whose
 * rows --help lists; cli_common_opt takes them (--password-file repeatable: the k-th password
 * asked is read from the k-th file; --card-pin-file read only when a card asks). Commands
 * call cli_common_opt for each option cli_getopt returns that they do not own. */
#define CLI_CARD_WAIT_DEFAULT 300 /* seconds for a signature card to be inserted */
#define CLI_CARD_WAIT_MAX     86400
struct cli_global {
	bool json;
	bool yes;
	const char *instance_dir;
	const char *password_files[16];
	int npassword_files;
	int password_fd;
	long timeout; /* --timeout SECONDS, 0 = $KYOK_TIMEOUT or the default (cli/failover.h) */
	const char *card_pin_files[16]; /* --card-pin-file: read only when a card asks its PIN */
	int ncard_pin_files;
	int card_pin_files_read;
	int card_pin_fd;
	long card_wait;     /* --card-wait SECONDS for a card to be inserted; -1: the default */
	const char *cacert; /* --cacert FILE: CA certificates of units served over HTTPS */
};
extern struct cli_global cli_g;
/* Returns 0 when opt was a common option, KY_ERR_USAGE otherwise (message printed).
 * 'h' is not handled here: each command prints its own usage for --help. */
int cli_common_opt(int opt, const char *arg);
/* For commands that take only the common options and no operands: parses argv. Returns 0
 * to go on, -1 after --help (which prints usage and the common options), or KY_ERR_USAGE
 * (printed). */
int cli_opts_common_only(int argc, char **argv, const char *usage) KY_WUR;
/* After getopt: KY_ERR_USAGE (printed) when operands are left over. */
int cli_no_operands(int argc, char **argv) KY_WUR;

/* Parses a list of numbers "1,2,5" (spaces around items allowed): each 1..max, no
 * duplicates, no empty items, at most cap. KY_ERR_USAGE with a reason in why. Pure. */
int cli_parse_numbers(const char *s, int max, int *out, size_t cap, size_t *n, char *why,
                      size_t whylen) KY_WUR;

/* One entry of a numbered listing (signature keys, key parts) by its number: from arg (the
 * value of flag) or, when arg is NULL, by printing the listing (print(ctx), as a table even
 * with --output json) and asking. n == 0 is KY_ERR_NOT_FOUND naming what ("key parts").
 * Errors are printed. */
int cli_pick_number(const char *what, const char *flag, const char *question, size_t n,
                    int (*print)(const void *ctx), const void *ctx, const char *arg,
                    int *num) KY_WUR;
/* Deletes a workspace file: KY_ERR_IO naming it and why (printed). */
int cli_unlink(const char *path) KY_WUR;
/* Deletes one file of a numbered listing (mk-rm, sigkey-rm): the number picked as
 * cli_pick_number picks it (what, flag, ask, n, print(list)); pick(ctx, num) gives the
 * file's path and the confirmation question (it may print notes first, or refuse); the
 * question is asked (cli_confirm); before_unlink(ctx), when set, runs; the file goes.
 * *num is the number picked.
 * Errors are printed. */
struct cli_rm {
	const char *what, *flag, *ask;
	size_t n;
	int (*print)(const void *list);
	const void *list;
	int (*pick)(void *ctx, int num, const char **path, char *question, size_t qlen);
	int (*before_unlink)(void *ctx);
	void *ctx;
};
int cli_rm_numbered(const struct cli_rm *rm, const char *arg, int *num) KY_WUR;

/* ---- prompts ----
 * Password: from the next --password-file, else the next line of --password-fd, else the
 * terminal without echo (confirm asks twice). No terminal and no source: KY_ERR_USAGE with
 * a message naming --password-file. The returned string is ky_secret_alloc'd: free it
 * with cli_secret_free. */
int cli_password(const char *prompt, bool confirm, char **out) KY_WUR;
void cli_secret_free(char *s);
/* A secret line other than a password (e.g. a key part value): from file when not NULL
 * (one trailing newline stripped), else one line from fd when fd >= 0, else the terminal
 * without echo. ky_secret_alloc'd like cli_password: free with cli_secret_free. */
int cli_secret_read(const char *prompt, const char *file, int fd, char **out) KY_WUR;
/* A signature card's PIN, asked only when the card wants it: the next --card-pin-file, else
 * a line of --card-pin-fd, else the terminal without echo (never a --password-file).
 * ky_secret_alloc'd: free with cli_secret_free. */
int cli_card_pin(const char *prompt, char **out) KY_WUR;
/* Whether a 'kyok tke card-keep' of this workspace holds reader N (its pid file names a live
 * process): only then does a command leave a card it verified powered (its PIN kept). */
bool cli_card_keep_running(unsigned reader);
/* <workspace>/card-keep-N.pid, which card-keep writes while it runs. */
void cli_card_keep_pid_path(unsigned reader, char *path, size_t n);
/* Notes on stderr each --card-pin-file no card asked for (a card whose PIN was still
 * verified asks none): given, not read, and said so. */
void cli_card_pins_unread(void);
/* A visible line from the terminal (KY_ERR_USAGE when not interactive: name the flag). */
int cli_prompt_line(const char *prompt, const char *flag_hint, char **out) KY_WUR;
/* y/N confirmation; --yes answers yes; non-interactive without --yes: KY_ERR_CANCELLED. */
int cli_confirm(const char *question) KY_WUR;

/* ---- tables ---- */
struct cli_table;
struct cli_table *cli_table_new(size_t ncols, const char *const *headers);
int cli_table_add(struct cli_table *t, const char *const *cells) KY_WUR;
void cli_table_print(struct cli_table *t, FILE *f);
void cli_table_free(struct cli_table *t);
/* Prints json (compact, sorted keys, newline) on stdout and decrefs it. */
void cli_print_json(json_t *j);

/* ---- instance discovery: <dir>/instance.json written by 'kyok up' ----
 * {"instance": id, "units": [{"number": 1, "id": "...", "zone": "...", "url": "http://..."}]} */
struct cli_unit {
	int number; /* 1-based, as 'cryptounits' shows */
	char id[KY_ID_MAX + 1];
	char zone[KY_ID_MAX + 1];
	char url[256];
	bool remote; /* runs on another host ("remote": true in instance.json, 'kyok host') */
};
struct cli_instance {
	char dir[512];
	char id[KY_ID_MAX + 1];
	size_t nunits;
	struct cli_unit units[16];
};
const char *cli_instance_dir(void); /* --instance, $KYOK_INSTANCE, ~/.kyok/instance */
int cli_instance_load(struct cli_instance *inst) KY_WUR;
/* Pure parser of instance.json text (inst->dir is left alone); units sorted by number.
 * KY_ERR_CONFIG with a reason in why. */
int cli_instance_parse(const char *json, size_t n, struct cli_instance *inst, char *why,
                       size_t whylen) KY_WUR;
/* The crypto units of the local instance in dir whose kyok-unitd runs (pid file, and the
 * process runs kyok-unitd with that unit's unit.conf): numbers and pids, at most cap
 * (up_proc.c). No unit directory at all: 0 and *n = 0. */
int up_running_units(const char *dir, int *numbers, long *pids, size_t cap, size_t *n) KY_WUR;
/* The list of backups 'kyok backup' made of the instance in dir (<dir>/backups.json,
 * backup.c): {"backups": [{"file", "manifest", "created", "master_keys": [{"vp",
 * "part_vps"?, ...}]}]}. KY_ERR_NOT_FOUND (not printed) when there is none; other errors
 * printed. */
int backup_list_load(const char *dir, json_t **out) KY_WUR;
/* The unit numbered number, or NULL. */
const struct cli_unit *cli_instance_unit(const struct cli_instance *inst, int number);

/* ---- TKE workspace: $KYOK_TKE_FILES or ~/.kyok/tke (created 0700) ----
 *   <ws>/sigkeys/<n>.sigkey      signature key files
 *   <ws>/keyparts/<n>.keypart    key part files (or records of parts on EP11 cards)
 *   <ws>/known_units             pinned identities: "<instance> <unit> <sha256 hex>"
 *   <ws>/selection.json          {"<instance>": {"units": [numbers]}, "sigkeys": [files]} */
const char *cli_workspace(void);
/* The path of a new signature key file for administrator name: <ws>/sigkeys/<base>-<8 random
 * hex>.sigkey, base being the name with every character but A-Z a-z 0-9 '-' '_' (and '.' not
 * first) made '_', "admin" when empty. 0, KY_ERR_CRYPTO (no random bytes) or KY_ERR_USAGE
 * (does not fit in outlen); the file is not made. */
int cli_sigkey_path_new(const char *name, char *out, size_t outlen) KY_WUR;
int cli_workspace_ensure(void) KY_WUR;
/* The workspace directory and its files are private to their owner (checked once per run; a
 * workspace not created yet passes). */
int cli_workspace_check(void) KY_WUR;
/* A workspace file name: no '/', no leading '.', no control character, ending in suffix. */
bool cli_file_name_ok(const char *s, const char *suffix);
/* Loads selection.json (cli/selection.c): an empty object when there is none yet. Prints its
 * errors. */
int cli_selection_load(json_t **sel) KY_WUR;
int cli_selected_units(const struct cli_instance *inst, struct cli_unit **units,
                       size_t *n) KY_WUR; /* KY_ERR_NO_UNITS when none; malloc'd array */
int cli_selection_set_units(const struct cli_instance *inst, const int *numbers, size_t n) KY_WUR;
/* The selected unit numbers of inst, sorted, possibly none (no error for none). */
int cli_selection_units(const struct cli_instance *inst, int *numbers, size_t cap,
                        size_t *n) KY_WUR;

/* Signature keys of the workspace, numbered as 'sigkeys' lists them: in creation order
 * (file modification time, then name), so numbers stay when a key is added. */
struct cli_sigkey {
	int number;
	char path[512];
	char name[KY_ADMIN_NAME_MAX + 1];
	uint8_t ski[KY_SKI_LEN];
	bool selected;
};
int cli_sigkeys_list(struct cli_sigkey **keys, size_t *n) KY_WUR;
struct cli_sigkey_list { /* a listing, for cli_pick_number */
	struct cli_sigkey *keys;
	size_t n;
};
int cli_selection_set_sigkeys(const char *const *paths, size_t n) KY_WUR;
/* Removes one file from the signature key selection, keeping the order of the others. */
int cli_selection_drop_sigkey(const char *path) KY_WUR;

/* An unlocked signer: the selected signature keys, passwords (or token PINs) asked in
 * order. A key in a PKCS#11 token has token set and key NULL. */
struct cli_token;
struct cli_signer {
	char name[KY_ADMIN_NAME_MAX + 1];
	X509 *cert;
	EVP_PKEY *key;
	struct cli_token *token;
	struct ky_sigkey_card *card; /* a key on an EP11 card (cli/card_sigkey.h) */
};
int cli_signers_open(struct cli_signer **signers, size_t *n) KY_WUR; /* KY_ERR_NO_SIGNERS */
void cli_signers_free(struct cli_signer *signers, size_t n);
/* Adds s's signature to the SignedData der (ky_cms_add_signer, or through the token). */
int cli_signer_sign(const struct cli_signer *s, struct ky_buf *der) KY_WUR;

/* Key part files of the workspace, numbered as 'mks' lists them (creation order too). A
 * file of the token form (cli/token_part.h) has in_token set and names its token. */
struct cli_keypart {
	int number;
	char path[512];
	char description[128];
	char vp_hex[2 * KY_VP_LEN + 1];
	bool in_token;
	char token_label[KY_TOKEN_LABEL_MAX + 1];
	bool on_card; /* the card form: the part is held by an EP11 card (cli/card_part.h) */
};
int cli_keyparts_list(struct cli_keypart **parts, size_t *n) KY_WUR;
struct cli_keypart_list { /* a listing, for cli_pick_number */
	struct cli_keypart *parts;
	size_t n;
};

/* ---- talking to a crypto unit: every reply's signature checked against the identity
 * pinned in known_units (pinned on first contact; KY_ERR_IDENTITY_CHANGED after). */
int unit_state(const struct cli_instance *inst, const struct cli_unit *u, json_t **state) KY_WUR;
int unit_importer(const struct cli_instance *inst, const struct cli_unit *u,
                  X509 **cert) KY_WUR; /* checked: issued by the pinned identity */
/* The unit's identity certificate: the one whose key is pinned (and, with the instance's
 * anchor.crt, issued by that anchor). */
int unit_identity_cert(const struct cli_instance *inst, const struct cli_unit *u,
                       X509 **cert) KY_WUR;
/* Submits a DER SignedData. On refusal returns the unit's error code and sets *detail
 * (malloc'd) to the unit's message + detail. On success *reply holds {"result","state"}.
 * Prints nothing: on every failure (refusal, unreachable, bad reply, changed identity)
 * *detail explains it without naming the unit and without repeating ky_err_message(code)
 * (the unit's message is left out when it is ours for that code), so
 *   cli_fail(r, "crypto unit 1 (zone-1)", "%s", detail ? detail : "")
 * prints the whole story. *detail may be "" (or NULL when out of memory); free() it. */
int unit_command(const struct cli_instance *inst, const struct cli_unit *u, const uint8_t *cms,
                 size_t n, json_t **reply, char **detail) KY_WUR;
/* A signed GET of another /v1/admin/... path (e.g. "/v1/admin/apikeys"): its JSON object
 * reply in *out. Prints the error like unit_state. */
int unit_get(const struct cli_instance *inst, const struct cli_unit *u, const char *path,
             json_t **out) KY_WUR;
/* GET /v1/health, unsigned and unpinned ('kyok up' probing a fresh unit). Prints
 * nothing: KY_ERR_UNREACHABLE or KY_ERR_BAD_REPLY with a reason in why. */
int unit_health(const struct cli_unit *u, char *why, size_t whylen) KY_WUR;

/* ---- the imprint credential (imprint.c, used by client.c) ---- */
void cli_imprint_set_file(const char *path);
/* The Kyok-Imprint-Claim value for a command body (malloc'd), or NULL when no credential is
 * given or in the instance directory. Errors (file missing, readable by others, not a
 * credential) come back with a reason in why, nothing printed. */
int cli_imprint_claim(const uint8_t *body, size_t n, char **claim, char *why, size_t whylen) KY_WUR;
/* Before anything is sent to a unit in imprint mode: loads the credential, or
 * KY_ERR_IMPRINT_CLAIM_REQUIRED with a reason in why when none is given or found. */
int cli_imprint_require(char *why, size_t whylen) KY_WUR;
/* The credential file used so far, or NULL. */
const char *cli_imprint_path(void);

/* ---- known_units (workspace.c, used by client.c) ----
 * Looks up the pinned fingerprint of (instance, unit): 0 and fp filled, KY_ERR_NOT_FOUND
 * when not pinned (nothing printed), other errors printed. */
int cli_known_unit_lookup(const char *instance, const char *unit, char fp[65]) KY_WUR;
/* Appends a pin line (file created 0600). */
int cli_known_unit_pin(const char *instance, const char *unit, const char *fp) KY_WUR;

/* Command entry points (tke_*.c, up.c, ...) are declared in cmds.h. */

#endif
