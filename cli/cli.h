/* Internals shared by the kyok command's files. */
#ifndef KYOK_CLI_H
#define KYOK_CLI_H

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>

#include "kyok/common.h"
#include "kyok/err.h"

/* One row of a dispatch table: main.c and tke.c each hold one array of these;
 * usage text is generated from it. */
struct cli_cmd {
	const char *name;
	int (*fn)(int argc, char **argv); /* argv[0] is the command name */
	const char *help;		  /* one line */
};
int cli_dispatch(const char *prog, const struct cli_cmd *cmds, int argc, char **argv);
void cli_usage_table(FILE *f, const char *prog, const struct cli_cmd *cmds);

/* ---- errors: "error: <subject>: <message>[: <detail>]" on stderr; returns the exit
 * status for err (ky_err_exit). subject and detail may be NULL. */
int cli_fail(int err, const char *subject, const char *detail_fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- global options every command accepts (parsed by cli_common_opt) ----
 *   --output table|json      listings
 *   --password-file PATH     repeatable: the k-th password asked is read from the k-th file
 *   --password-fd N          passwords asked are read one per line from descriptor N
 *   --yes                    answer yes to confirmations
 *   --instance DIR           instance directory (default $KYOK_INSTANCE or ~/.kyok/instance)
 * Commands call cli_common_opt for each option getopt_long returns that they do not own. */
struct cli_global {
	bool json;
	bool yes;
	const char *instance_dir;
	const char *password_files[16];
	int npassword_files;
	int password_fd;
};
extern struct cli_global cli_g;
#define CLI_COMMON_LONGOPTS                                                                        \
	{"output", required_argument, NULL, 0x1001},                                               \
		{"password-file", required_argument, NULL, 0x1002},                                \
		{"password-fd", required_argument, NULL, 0x1003},                                  \
		{"yes", no_argument, NULL, 0x1004}, {"instance", required_argument, NULL, 0x1005}, \
		{"help", no_argument, NULL, 'h'}
/* Returns 0 when opt was a common option, KY_ERR_USAGE otherwise (message printed). */
int cli_common_opt(int opt, const char *arg);

/* ---- prompts ----
 * Password: from the next --password-file, else the next line of --password-fd, else the
 * terminal without echo (confirm asks twice). No terminal and no source: KY_ERR_USAGE with
 * a message naming --password-file. The returned string is ky_secret_alloc'd: free it
 * with cli_secret_free. */
int cli_password(const char *prompt, bool confirm, char **out) KY_WUR;
void cli_secret_free(char *s);
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
};
struct cli_instance {
	char dir[512];
	char id[KY_ID_MAX + 1];
	size_t nunits;
	struct cli_unit units[16];
};
const char *cli_instance_dir(void); /* --instance, $KYOK_INSTANCE, ~/.kyok/instance */
int cli_instance_load(struct cli_instance *inst) KY_WUR;

/* ---- TKE workspace: $KYOK_TKE_FILES or ~/.kyok/tke (created 0700) ----
 *   <ws>/sigkeys/<n>.sigkey      signature key files
 *   <ws>/keyparts/<n>.keypart    key part files
 *   <ws>/known_units             pinned identities: "<instance> <unit> <sha256 hex>"
 *   <ws>/selection.json          {"<instance>": {"units": [numbers]}, "sigkeys": [files]} */
const char *cli_workspace(void);
int cli_workspace_ensure(void) KY_WUR;
int cli_selected_units(const struct cli_instance *inst, struct cli_unit **units,
		       size_t *n) KY_WUR; /* KY_ERR_NO_UNITS when none; malloc'd array */
int cli_selection_set_units(const struct cli_instance *inst, const int *numbers,
			    size_t n) KY_WUR;

/* Signature keys of the workspace, numbered as 'sigkeys' lists them (sorted by file). */
struct cli_sigkey {
	int number;
	char path[512];
	char name[KY_ADMIN_NAME_MAX + 1];
	uint8_t ski[KY_SKI_LEN];
	bool selected;
};
int cli_sigkeys_list(struct cli_sigkey **keys, size_t *n) KY_WUR;
int cli_selection_set_sigkeys(const char *const *paths, size_t n) KY_WUR;

/* An unlocked signer: the selected signature keys, passwords asked in order. */
struct cli_signer {
	char name[KY_ADMIN_NAME_MAX + 1];
	X509 *cert;
	EVP_PKEY *key;
};
int cli_signers_open(struct cli_signer **signers, size_t *n) KY_WUR; /* KY_ERR_NO_SIGNERS */
void cli_signers_free(struct cli_signer *signers, size_t n);

/* Key part files of the workspace, numbered as 'mks' lists them. */
struct cli_keypart {
	int number;
	char path[512];
	char description[128];
	char vp_hex[2 * KY_VP_LEN + 1];
};
int cli_keyparts_list(struct cli_keypart **parts, size_t *n) KY_WUR;

/* ---- talking to a crypto unit: every reply's signature checked against the identity
 * pinned in known_units (pinned on first contact; KY_ERR_IDENTITY_CHANGED after). */
int unit_state(const struct cli_instance *inst, const struct cli_unit *u,
	       json_t **state) KY_WUR;
int unit_importer(const struct cli_instance *inst, const struct cli_unit *u,
		  X509 **cert) KY_WUR; /* checked: issued by the pinned identity */
/* Submits a DER SignedData. On refusal returns the unit's error code and sets *detail
 * (malloc'd) to the unit's message + detail. On success *reply holds {"result","state"}. */
int unit_command(const struct cli_instance *inst, const struct cli_unit *u, const uint8_t *cms,
		 size_t n, json_t **reply, char **detail) KY_WUR;

/* Command entry points (tke_*.c, up.c, ...) are declared in cmds.h. */

#endif
