/* kyok tke sigkeys, sigkey-add, sigkey-sel, sigkey-rm: the administrators' signature key
 * files of the workspace and which of them sign the next commands. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/card_sigkey.h"
#include "cli/token.h"
#include "kyok/crypto.h"

#define SIGKEYS_SHORT_HEX    16
#define SIGKEYS_MAX_SELECTED 16
#define SIGKEYS_MIN_PASSWORD 8

static const char *sigkeys_base(const char *path)
{
	const char *s = strrchr(path, '/');

	return s != NULL ? s + 1 : path;
}

static int sigkeys_print(const struct cli_sigkey *keys, size_t n)
{
	static const char *const hdr[] = {"NUMBER", "SELECTED", "ADMIN NAME", "SKI", "FILE"};
	int r = KY_ERR_NOMEM;
	struct cli_table *t = NULL;
	json_t *arr = NULL;

	if (cli_g.json) {
		if ((arr = json_array()) == NULL)
			goto out;
		for (size_t i = 0; i < n; i++) {
			char ski[2 * KY_SKI_LEN + 1];
			ky_hex_encode(keys[i].ski, KY_SKI_LEN, ski);
			if (json_array_append_new(arr,
			                          json_pack("{s:i, s:b, s:s, s:s, s:s}", "number",
			                                    keys[i].number, "selected",
			                                    keys[i].selected, "name", keys[i].name,
			                                    "ski", ski, "file", keys[i].path)) != 0)
				goto out;
		}
		cli_print_json(json_pack("{s:o}", "sigkeys", arr));
		arr = NULL; /* transferred */
		r = 0;
		goto out;
	}
	if ((t = cli_table_new(5, hdr)) == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		char num[16], ski[2 * KY_SKI_LEN + 1];
		ky_hex_encode(keys[i].ski, KY_SKI_LEN, ski);
		ski[SIGKEYS_SHORT_HEX] = '\0';
		snprintf(num, sizeof(num), "%d", keys[i].number);
		const char *row[] = {num, keys[i].selected ? "yes" : "no", keys[i].name, ski,
		                     sigkeys_base(keys[i].path)};
		if (cli_table_add(t, row) != 0)
			goto out;
	}
	printf("signature keys in %s/sigkeys\n\n", cli_workspace());
	cli_table_print(t, stdout);
	if (n == 0)
		printf("\nno signature keys yet: 'kyok tke sigkey-add' creates one\n");
	r = 0;
out:
	if (r != 0)
		cli_fail(r, NULL, NULL);
	json_decref(arr);
	cli_table_free(t);
	return r;
}

/* ---- sigkeys ---- */

static const char sigkeys_usage[] =
    "usage: kyok tke sigkeys [options]\n"
    "\n"
    "Lists the signature key files of the workspace ($KYOK_TKE_FILES, default\n"
    "~/.kyok/tke): number, whether selected to sign, administrator name, subject key\n"
    "identifier (first 16 hex digits) and file. No password is needed.\n";

int tke_sigkeys_main(int argc, char **argv)
{
	int r;
	struct cli_sigkey *keys = NULL;
	size_t n = 0;

	if ((r = cli_opts_common_only(argc, argv, sigkeys_usage)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = cli_sigkeys_list(&keys, &n)) == 0)
		r = sigkeys_print(keys, n);
	free(keys);
	return ky_err_exit(r);
}

/* ---- sigkey-add ---- */

static const char sigkey_add_usage[] =
    "usage: kyok tke sigkey-add [--name NAME]\n"
    "                           [--token-module PATH --token-label LABEL\n"
    "                            [--token-curve P-521|P-384]] [--card] [options]\n"
    "\n"
    "Creates a signature key (ECDSA P-521) for an administrator and its self-signed\n"
    "certificate, in a file protected by a password (asked twice; at least 8\n"
    "characters). Without --name, asks for the administrator name.\n"
    "\n"
    "With --token-module and --token-label, the key is generated inside a PKCS#11\n"
    "token instead (sensitive, never extractable) and the file holds only the\n"
    "certificate and where the key is; the token's user PIN is asked (or read like a\n"
    "password, from --password-file or --password-fd) here and whenever the key signs.\n"
    "\n"
    "With --card, the key is generated on the EP11 smart card in smart card reader 1\n"
    "(it must have none yet), which signs the certificate; the card's PIN is typed on\n"
    "the reader's PIN pad, or read from --card-pin-file, --card-pin-fd or the terminal.\n"
    "The file holds the certificate, the card's zone and device ids and the key's SKI.\n"
    "The card is left powered, its PIN entered, until it is removed or pcscd powers it\n"
    "off ('kyok tke card-keep' keeps it powered). Commands signed with the key later ask\n"
    "for the card in reader 1, and its PIN only if it wants it.\n"
    "\n";

static bool sigkeys_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > KY_ADMIN_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return s[0] != ' ' && s[n - 1] != ' ';
}

/* The key generated in the token, its certificate and the file naming both. The key pair
 * is destroyed again when the file cannot be written: no key without its file. */
static int sigkeys_add_token(const char *path, const char *name, const char *module,
                             const char *label, int bits, char *serial, size_t serial_len)
{
	int r = KY_ERR_INTERNAL;
	char prompt[128], why[CLI_TOKEN_WHY_MAX], subject[96];
	char *pin = NULL;
	struct cli_token *t = NULL;
	struct ky_sigkey_token tok = {0};
	struct ky_ext_signer ext = {0};
	EVP_PKEY *pub = NULL;

	snprintf(subject, sizeof(subject), "token '%s'", label);
	snprintf(prompt, sizeof(prompt), "PIN of token '%s'", label);
	if ((r = cli_password(prompt, false, &pin)) != 0)
		goto out;
	if ((r = cli_token_open(module, label, NULL, pin, &t, why)) != 0) {
		cli_fail(r, subject, "%s", why);
		goto out;
	}
	if ((r = cli_token_ec_generate(t, name, bits, tok.id, &pub)) != 0) {
		cli_fail(r, subject, "%s", cli_token_why(t));
		goto out;
	}
	snprintf(tok.module, sizeof(tok.module), "%s", module);
	snprintf(tok.label, sizeof(tok.label), "%s", label);
	snprintf(tok.serial, sizeof(tok.serial), "%s", cli_token_serial(t));
	ext = (struct ky_ext_signer){pub, cli_token_sign, t};
	if ((r = ky_sigkey_token_create(path, name, &ext, &tok)) != 0) {
		cli_token_ec_destroy(t);
		cli_fail(r, path, "%s", cli_token_why(t));
		goto out;
	}
	snprintf(serial, serial_len, "%s", tok.serial);
	r = 0;
out:
	EVP_PKEY_free(pub);
	cli_token_free(t);
	cli_secret_free(pin);
	return r;
}

int tke_sigkey_add_main(int argc, char **argv)
{
	enum { OPT_CARD = 0x2001, OPT_TOKEN_CURVE, OPT_TOKEN_LABEL, OPT_TOKEN_MODULE, OPT_NAME };
	static const struct cli_opt opts[] = {
	    {"name", OPT_NAME, CLI_ARG_REQUIRED, "NAME",
	     "administrator name: 1 to 30 printable characters"},
	    {"token-module", OPT_TOKEN_MODULE, CLI_ARG_REQUIRED, "PATH",
	     "the token's PKCS#11 module (absolute path)"},
	    {"token-label", OPT_TOKEN_LABEL, CLI_ARG_REQUIRED, "LABEL", "the token's label"},
	    {"token-curve", OPT_TOKEN_CURVE, CLI_ARG_REQUIRED, "CURVE",
	     "P-521 (default), or P-384 for a token without P-521"},
	    {"card", OPT_CARD, CLI_ARG_NONE, NULL, "the key on the EP11 smart card in reader 1"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c;
	const char *name = NULL, *module = NULL, *label = NULL, *curve = NULL;
	int bits = 521;
	bool on_card = false;
	struct ky_sigkey_card card;
	char serial[KY_TOKEN_SERIAL_MAX + 1] = "";
	char *asked = NULL, *password = NULL;
	char path[700], prompt[128], subject[64];
	struct cli_sigkey *keys = NULL;
	size_t n = 0;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, sigkey_add_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_NAME)
			name = optarg;
		else if (c == OPT_TOKEN_MODULE)
			module = optarg;
		else if (c == OPT_TOKEN_LABEL)
			label = optarg;
		else if (c == OPT_TOKEN_CURVE)
			curve = optarg;
		else if (c == OPT_CARD)
			on_card = true;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if ((module == NULL) != (label == NULL)) {
		r = KY_ERR_USAGE;
		cli_fail(r, module == NULL ? "--token-label" : "--token-module",
		         "a key in a token needs both --token-module and --token-label");
		return ky_err_exit(r);
	}
	if (on_card && module != NULL) {
		r = KY_ERR_USAGE;
		cli_fail(r, "--card", "a key is on a card or in a token: leave out --token-module");
		return ky_err_exit(r);
	}
	if (curve != NULL && module == NULL) {
		r = KY_ERR_USAGE;
		cli_fail(r, "--token-curve",
		         "only a key in a token (--token-module) takes a curve");
		return ky_err_exit(r);
	}
	if (curve != NULL && strcmp(curve, "P-521") != 0 && strcmp(curve, "P-384") != 0) {
		r = KY_ERR_USAGE;
		cli_fail(r, "--token-curve", "'%.20s' is not P-521 or P-384", curve);
		return ky_err_exit(r);
	}
	if (curve != NULL && strcmp(curve, "P-384") == 0)
		bits = 384;
	if (module != NULL && (module[0] != '/' || strlen(module) > KY_TOKEN_MODULE_MAX)) {
		r = KY_ERR_USAGE;
		cli_fail(r, "--token-module", "'%.80s' is not an absolute path of at most %d bytes",
		         module, KY_TOKEN_MODULE_MAX);
		return ky_err_exit(r);
	}
	if (label != NULL && (label[0] == '\0' || strlen(label) > KY_TOKEN_LABEL_MAX)) {
		r = KY_ERR_USAGE;
		cli_fail(r, "--token-label", "'%.40s' is not a token label of 1 to %d bytes", label,
		         KY_TOKEN_LABEL_MAX);
		return ky_err_exit(r);
	}
	if (name == NULL) {
		if ((r = cli_prompt_line("administrator name", "--name", &asked)) != 0)
			goto out;
		name = asked;
	}
	if (!sigkeys_name_ok(name)) {
		r = KY_ERR_ADMIN_NAME;
		cli_fail(r, "--name",
		         "'%.40s' has a character outside ASCII 32..126, a space at "
		         "either end, or is too long",
		         name);
		goto out;
	}
	snprintf(subject, sizeof(subject), "administrator '%s'", name);
	if ((r = cli_workspace_ensure()) != 0 || (r = cli_sigkeys_list(&keys, &n)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++)
		if (strcmp(keys[i].name, name) == 0) {
			r = KY_ERR_EXISTS;
			cli_fail(r, subject,
			         "signature key %d (%s) already belongs to this administrator: one "
			         "key per administrator",
			         keys[i].number, sigkeys_base(keys[i].path));
			goto out;
		}
	if ((r = cli_sigkey_path_new(name, path, sizeof(path))) != 0) {
		cli_fail(r, subject, "cannot name the signature key file");
		goto out;
	}
	if (on_card) {
		if ((r = cli_card_sigkey_add(path, name, &card)) != 0)
			goto out;
	} else if (module != NULL) {
		if ((r = sigkeys_add_token(path, name, module, label, bits, serial,
		                           sizeof(serial))) != 0)
			goto out;
	} else {
		snprintf(prompt, sizeof(prompt), "password for the new signature key of '%s'",
		         name);
		if ((r = cli_password(prompt, true, &password)) != 0)
			goto out;
		if (strlen(password) < SIGKEYS_MIN_PASSWORD) {
			r = KY_ERR_WEAK_PASSWORD;
			cli_fail(r, subject, NULL);
			goto out;
		}
		if ((r = ky_sigkey_create(path, name, password)) != 0) {
			cli_fail(r, path, NULL);
			goto out;
		}
	}
	free(keys);
	keys = NULL;
	if ((r = cli_sigkeys_list(&keys, &n)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		char ski[2 * KY_SKI_LEN + 1];
		if (strcmp(keys[i].path, path) != 0)
			continue;
		ky_hex_encode(keys[i].ski, KY_SKI_LEN, ski);
		if (cli_g.json && module != NULL)
			cli_print_json(json_pack("{s:i, s:s, s:s, s:s, s:{s:s, s:s, s:s}}",
			                         "number", keys[i].number, "name", keys[i].name,
			                         "ski", ski, "file", path, "token", "module",
			                         module, "label", label, "serial", serial));
		else if (cli_g.json && on_card) {
			char dev[2 * KY_SIGKEY_CARD_ID_LEN + 1],
			    zone[2 * KY_SIGKEY_CARD_ID_LEN + 1];

			ky_hex_encode(card.device_id, KY_SIGKEY_CARD_ID_LEN, dev);
			ky_hex_encode(card.zone_id, KY_SIGKEY_CARD_ID_LEN, zone);
			cli_print_json(json_pack("{s:i, s:s, s:s, s:s, s:{s:s, s:s}}", "number",
			                         keys[i].number, "name", keys[i].name, "ski", ski,
			                         "file", path, "card", "zone", zone, "device",
			                         dev));
		} else if (cli_g.json)
			cli_print_json(json_pack("{s:i, s:s, s:s, s:s}", "number", keys[i].number,
			                         "name", keys[i].name, "ski", ski, "file", path));
		else
			printf("created signature key %d for administrator '%s'\n  SKI  %s\n  "
			       "file %s\n%s%s%s%s%sselect it to sign with 'kyok tke sigkey-sel'\n",
			       keys[i].number, keys[i].name, ski, path,
			       module != NULL ? "  token " : "", module != NULL ? label : "",
			       module != NULL ? " (serial " : "", module != NULL ? serial : "",
			       module != NULL ? "), key generated in it\n"
			       : on_card      ? "  key generated on the EP11 card in reader 1\n"
			                      : "");
	}
	r = 0;
out:
	cli_secret_free(password);
	free(asked);
	free(keys);
	return ky_err_exit(r);
}

/* ---- sigkey-sel ---- */

static const char sigkey_sel_usage[] =
    "usage: kyok tke sigkey-sel [--sigkeys N[,N...]] [options]\n"
    "\n"
    "Selects the signature keys that sign the next commands, replacing the present\n"
    "selection. Passwords are asked when a command is signed, not here. Without\n"
    "--sigkeys, lists the keys and asks for their numbers.\n"
    "\n";

int tke_sigkey_sel_main(int argc, char **argv)
{
	enum { OPT_SIGKEYS = 0x2001 };
	static const struct cli_opt opts[] = {{"sigkeys", OPT_SIGKEYS, CLI_ARG_REQUIRED, "LIST",
	                                       "signature key numbers, comma separated (e.g. 1,2)"},
	                                      CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c;
	const char *list = NULL;
	char *answer = NULL, why[160];
	struct cli_sigkey *keys = NULL;
	size_t n = 0, nnums = 0;
	int nums[SIGKEYS_MAX_SELECTED];
	const char *paths[SIGKEYS_MAX_SELECTED];

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, sigkey_sel_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_SIGKEYS)
			list = optarg;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if ((r = cli_sigkeys_list(&keys, &n)) != 0)
		goto out;
	if (n == 0) {
		r = KY_ERR_NOT_FOUND;
		cli_fail(r, "signature keys",
		         "the workspace has none: create one with 'kyok tke "
		         "sigkey-add'");
		goto out;
	}
	if (list == NULL) {
		bool saved_json = cli_g.json;
		cli_g.json = false;
		r = sigkeys_print(keys, n);
		cli_g.json = saved_json;
		if (r != 0)
			goto out;
		putchar('\n');
		fflush(stdout);
		if ((r = cli_prompt_line("signature key numbers to select (comma separated)",
		                         "--sigkeys", &answer)) != 0)
			goto out;
		list = answer;
	}
	if ((r = cli_parse_numbers(list, (int)n, nums, SIGKEYS_MAX_SELECTED, &nnums, why,
	                           sizeof(why))) != 0) {
		cli_fail(r, "--sigkeys", "%s (the workspace has signature keys 1 to %zu)", why, n);
		goto out;
	}
	for (size_t i = 0; i < nnums; i++)
		paths[i] = keys[nums[i] - 1].path;
	if ((r = cli_selection_set_sigkeys(paths, nnums)) != 0)
		goto out;
	free(keys);
	keys = NULL;
	if ((r = cli_sigkeys_list(&keys, &n)) != 0)
		goto out;
	if (!cli_g.json)
		printf("selected %zu signature key%s\n\n", nnums, nnums == 1 ? "" : "s");
	r = sigkeys_print(keys, n);
out:
	free(answer);
	free(keys);
	return ky_err_exit(r);
}

/* ---- sigkey-rm ---- */

static const char sigkey_rm_usage[] =
    "usage: kyok tke sigkey-rm [--sigkey N] [options]\n"
    "\n"
    "Deletes a signature key file after confirmation (--yes skips it) and drops it\n"
    "from the selection. An administrator whose only key is deleted can no longer\n"
    "sign. Without --sigkey, lists the keys and asks for the number.\n"
    "\n";

static int sigkeys_print_ctx(const void *ctx)
{
	const struct cli_sigkey_list *l = ctx;

	return sigkeys_print(l->keys, l->n);
}

/* sigkey-rm's part of cli_rm_numbered: the key picked. */
struct sigkey_rm {
	struct cli_sigkey_list l;
	struct cli_sigkey *k;
};

static int sigkey_rm_pick(void *ctx, int num, const char **path, char *question, size_t qlen)
{
	struct sigkey_rm *s = ctx;
	struct cli_sigkey *k = &s->l.keys[num - 1];

	s->k = k;
	snprintf(question, qlen,
	         "delete signature key %d of administrator '%s' (%s)? this cannot be undone",
	         k->number, k->name, sigkeys_base(k->path));
	*path = k->path;
	return 0;
}

/* Before the file goes: a selection never names a missing file. */
static int sigkey_rm_unselect(void *ctx)
{
	const struct sigkey_rm *s = ctx;

	return s->k->selected ? cli_selection_drop_sigkey(s->k->path) : 0;
}

int tke_sigkey_rm_main(int argc, char **argv)
{
	enum { OPT_SIGKEY = 0x2001 };
	static const struct cli_opt opts[] = {
	    {"sigkey", OPT_SIGKEY, CLI_ARG_REQUIRED, "N", "number of the signature key to delete"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c, num = 0;
	const char *arg = NULL;
	struct sigkey_rm s = {0};
	struct cli_rm rm = {.what = "signature keys",
	                    .flag = "--sigkey",
	                    .ask = "number of the signature key to delete",
	                    .print = sigkeys_print_ctx,
	                    .list = &s.l,
	                    .pick = sigkey_rm_pick,
	                    .before_unlink = sigkey_rm_unselect,
	                    .ctx = &s};
	struct cli_sigkey *k;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, sigkey_rm_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_SIGKEY)
			arg = optarg;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if ((r = cli_sigkeys_list(&s.l.keys, &s.l.n)) != 0)
		goto out;
	rm.n = s.l.n;
	if ((r = cli_rm_numbered(&rm, arg, &num)) != 0)
		goto out;
	k = &s.l.keys[num - 1];
	if (cli_g.json)
		cli_print_json(json_pack("{s:i, s:s, s:s}", "deleted", k->number, "name", k->name,
		                         "file", k->path));
	else
		printf("deleted signature key %d of administrator '%s' (%s)\n", k->number, k->name,
		       k->path);
	r = 0;
out:
	free(s.l.keys);
	return ky_err_exit(r);
}
