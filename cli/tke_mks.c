/* kyok tke mks, mk-add, mk-rm: the master key part files of the workspace. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/card_part.h"
#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/token_part.h"
#include "kyok/crypto.h"

#define MKS_SHORT_HEX    16
#define MKS_MIN_PASSWORD 8
#define MKS_DESC_MAX     127

static const char *mks_base(const char *path)
{
	const char *s = strrchr(path, '/');

	return s != NULL ? s + 1 : path;
}

/* Where the part is: "file" (encrypted under a password), or "token 'LABEL'". */
static void mks_held(const struct cli_keypart *p, char *out, size_t n)
{
	if (p->in_token)
		snprintf(out, n, "token '%s'", p->token_label);
	else if (p->on_card)
		snprintf(out, n, "EP11 card");
	else
		snprintf(out, n, "file");
}

static json_t *mks_json(const struct cli_keypart *p)
{
	return json_pack("{s:i, s:s, s:s, s:s, s:s, s:s*}", "number", p->number, "description",
	                 p->description, "vp", p->vp_hex, "file", p->path, "held",
	                 p->in_token  ? "token"
	                 : p->on_card ? "ep11-card"
	                              : "file",
	                 "token_label", p->in_token ? p->token_label : NULL);
}

static int mks_print(const struct cli_keypart *parts, size_t n)
{
	static const char *const hdr[] = {"NUMBER", "DESCRIPTION", "VP", "HELD IN", "FILE"};
	int r = KY_ERR_NOMEM;
	struct cli_table *t = NULL;
	json_t *arr = NULL;

	if (cli_g.json) {
		if ((arr = json_array()) == NULL)
			goto out;
		for (size_t i = 0; i < n; i++)
			if (json_array_append_new(arr, mks_json(&parts[i])) != 0)
				goto out;
		cli_print_json(json_pack("{s:o}", "keyparts", arr));
		arr = NULL; /* transferred */
		r = 0;
		goto out;
	}
	if ((t = cli_table_new(5, hdr)) == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		char num[16], vp[MKS_SHORT_HEX + 1], held[64];
		snprintf(num, sizeof(num), "%d", parts[i].number);
		memcpy(vp, parts[i].vp_hex, MKS_SHORT_HEX);
		vp[MKS_SHORT_HEX] = '\0';
		mks_held(&parts[i], held, sizeof(held));
		const char *row[] = {num, parts[i].description, vp, held, mks_base(parts[i].path)};
		if (cli_table_add(t, row) != 0)
			goto out;
	}
	printf("master key parts in %s/keyparts\n\n", cli_workspace());
	cli_table_print(t, stdout);
	if (n == 0)
		printf("\nno key parts yet: 'kyok tke mk-add --random' creates one\n");
	r = 0;
out:
	if (r != 0)
		cli_fail(r, NULL, NULL);
	json_decref(arr);
	cli_table_free(t);
	return r;
}

/* ---- mks ---- */

static const char mks_usage[] =
    "usage: kyok tke mks [options]\n"
    "\n"
    "Lists the master key part files of the workspace: number, description,\n"
    "verification pattern (first 16 hex digits; --output json gives all), where the\n"
    "part is held (\"file\": in the file, under its password; \"token 'LABEL'\": in a\n"
    "PKCS#11 token; \"EP11 card\": on an EP11 smart card; never in clear here but in\n"
    "a file) and file. No password or PIN is needed.\n";

int tke_mks_main(int argc, char **argv)
{
	int r;
	struct cli_keypart *parts = NULL;
	size_t n = 0;

	if ((r = cli_opts_common_only(argc, argv, mks_usage)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = cli_keyparts_list(&parts, &n)) == 0)
		r = mks_print(parts, n);
	free(parts);
	return ky_err_exit(r);
}

/* ---- mk-add ---- */

static const char mk_add_usage[] =
    "usage: kyok tke mk-add --random [--description TEXT] [options]\n"
    "       kyok tke mk-add --card [--description TEXT] [options]\n"
    "       kyok tke mk-add --value [--value-file PATH | --value-fd N]\n"
    "                       [--description TEXT] [options]\n"
    "       kyok tke mk-add --token-module PATH --token-label LABEL [--key-label TEXT]\n"
    "                       [--description TEXT] [options]\n"
    "\n"
    "Creates a master key part file: a 32-byte AES-256 part, encrypted under a\n"
    "password (asked twice; at least 8 characters). The description and the part's\n"
    "verification pattern stay readable without the password. With --card the part\n"
    "is made and kept on an EP11 smart card instead, and the file only records it.\n"
    "\n";

static bool mks_desc_ok(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > MKS_DESC_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

/* The key part's description: given (--description), else asked; checked (mks_desc_ok).
 * *asked holds what was asked (free it). Errors printed. */
static int mks_desc_get(const char *given, char **asked, const char **desc)
{
	int r = KY_ERR_INTERNAL;

	*asked = NULL;
	*desc = given;
	if (given == NULL) {
		if ((r = cli_prompt_line("key part description", "--description", asked)) != 0)
			return r;
		*desc = *asked;
	}
	if (!mks_desc_ok(*desc))
		return cli_err(KY_ERR_USAGE, "--description",
		               "use 1 to %d printable ASCII characters", MKS_DESC_MAX);
	return 0;
}

/* Reads the part value: exactly 64 hex digits, into part (secure memory). */
static int mks_read_value(const char *file, int fd, uint8_t *part)
{
	int r = KY_ERR_INTERNAL;
	char *hex = NULL;

	if ((r = cli_secret_read("key part value (64 hex digits, not shown)", file, fd, &hex)) != 0)
		return r;
	if ((r = ky_hex_decode(hex, part, KY_MK_LEN)) != 0) {
		r = KY_ERR_MALFORMED;
		if (strlen(hex) != 2 * KY_MK_LEN)
			cli_fail(
			    r, "key part value",
			    "expected exactly 64 hex digits (0-9, a-f or A-F), got %zu characters",
			    strlen(hex));
		else
			cli_fail(r, "key part value",
			         "expected exactly 64 hex digits (0-9, a-f or A-F): it holds other "
			         "characters");
	}
	cli_secret_free(hex);
	return r;
}

/* One byte repeated (all zero included): no part anyone should hold. Constant time. */
static bool mks_value_constant(const uint8_t part[KY_MK_LEN])
{
	uint8_t diff = 0;

	for (size_t i = 1; i < KY_MK_LEN; i++)
		diff |= part[i] ^ part[0];
	return diff == 0;
}

static int mks_parse_fd(const char *arg, int *fd)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < 0 || v > INT_MAX) {
		cli_fail(KY_ERR_USAGE, "--value-fd", "takes a descriptor number, not '%s'", arg);
		return KY_ERR_USAGE;
	}
	*fd = (int)v;
	return 0;
}

/* The created part, as mks lists it; where says where it is held, when not in a file. */
static int mks_print_created(const char *path, const char *where)
{
	int r = KY_ERR_INTERNAL;
	struct cli_keypart *parts = NULL;
	size_t n = 0;

	if ((r = cli_keyparts_list(&parts, &n)) != 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(parts[i].path, path) != 0)
			continue;
		if (cli_g.json)
			cli_print_json(mks_json(&parts[i]));
		else
			printf("created key part %d '%s'%s%s%s%s\n  VP   %s\n  file %s\n",
			       parts[i].number, parts[i].description,
			       parts[i].in_token ? " in token '" : "",
			       parts[i].in_token ? parts[i].token_label : "",
			       parts[i].in_token ? "'" : "", where, parts[i].vp_hex, path);
	}
	free(parts);
	return 0;
}

/* A new file name in keyparts/: 8 random hex digits. */
static int mks_new_path(char *path, size_t n)
{
	int r = KY_ERR_INTERNAL;
	uint8_t rnd[4];
	char name_hex[9];

	if ((r = ky_random(rnd, sizeof(rnd))) != 0) {
		cli_fail(r, NULL, "no random bytes");
		return r;
	}
	ky_hex_encode(rnd, sizeof(rnd), name_hex);
	snprintf(path, n, "%s/keyparts/%s.keypart", cli_workspace(), name_hex);
	return 0;
}

/* mk-add --card: the part made on the EP11 card in reader 2, its record written here. */
static int mks_add_card(const char *desc)
{
	int r = KY_ERR_INTERNAL;
	char path[700], where[64];
	struct cli_card_part cp;

	if ((r = mks_new_path(path, sizeof(path))) != 0)
		return r;

	if ((r = cli_card_part_add(path, desc, &cp)) != 0)
		return r;
	snprintf(where, sizeof(where), " on the EP11 card in reader %d (slot %u)", CARD_PART_READER,
	         cp.slot);
	return mks_print_created(path, where);
}

/* mk-add --token-module PATH --token-label LABEL. */
static int mks_add_token(bool with_value, const char *module, const char *label,
                         const char *key_label, const char *desc)
{
	int r = KY_ERR_INTERNAL;
	char *asked = NULL, path[700];

	if (with_value)
		return cli_err(KY_ERR_USAGE, "mk-add",
		               "a part in a token is generated by the token: drop --random, "
		               "--value, --value-file and --value-fd");
	if (module == NULL || label == NULL)
		return cli_err(KY_ERR_USAGE, module == NULL ? "--token-label" : "--token-module",
		               "a key part in a token needs both --token-module and --token-label");
	if (module[0] != '/' || strlen(module) > KY_TOKEN_MODULE_MAX)
		return cli_err(KY_ERR_USAGE, "--token-module",
		               "'%.80s' is not an absolute path of at most %d bytes", module,
		               KY_TOKEN_MODULE_MAX);
	if (label[0] == '\0' || strlen(label) > KY_TOKEN_LABEL_MAX)
		return cli_err(KY_ERR_USAGE, "--token-label",
		               "'%.40s' is not a token label of 1 to %d bytes", label,
		               KY_TOKEN_LABEL_MAX);
	if (key_label == NULL)
		key_label = "kyok key part";
	if (!mks_desc_ok(key_label) || strlen(key_label) > KY_TOKEN_LABEL_MAX)
		return cli_err(KY_ERR_USAGE, "--key-label",
		               "use 1 to %d printable ASCII characters", KY_TOKEN_LABEL_MAX);
	if ((r = mks_desc_get(desc, &asked, &desc)) != 0)
		goto out;
	if ((r = cli_workspace_ensure()) != 0)
		goto out;
	if ((r = mks_new_path(path, sizeof(path))) != 0)
		goto out;
	if ((r = cli_token_keypart_add(path, desc, module, label, key_label)) != 0)
		goto out;
	if ((r = mks_print_created(path, "")) != 0)
		goto out;
	r = 0;
out:
	free(asked);
	return r;
}

int tke_mk_add_main(int argc, char **argv)
{
	enum {
		OPT_VALUE_FD = 0x2001,
		OPT_KEY_LABEL,
		OPT_TOKEN_LABEL,
		OPT_TOKEN_MODULE,
		OPT_CARD,
		OPT_DESCRIPTION,
		OPT_VALUE_FILE,
		OPT_RANDOM,
		OPT_VALUE
	};
	static const struct cli_opt opts[] = {
	    {"random", OPT_RANDOM, CLI_ARG_NONE, NULL, "a new random part"},
	    {"card", OPT_CARD, CLI_ARG_NONE, NULL,
	     "a new random part generated on the EP11 card in reader 2, where it stays: the file "
	     "records the card and the part's slot, description (1 to 64 characters) and VP, no "
	     "secret. The card's PIN is typed on the reader's PIN pad, or read from "
	     "--card-pin-file, --card-pin-fd or the terminal"},
	    {"value", OPT_VALUE, CLI_ARG_NONE, NULL,
	     "a known part: 64 hex digits, asked without echo, or read from --value-file or "
	     "--value-fd (never give it on the command line); one byte repeated (all zero "
	     "included) is refused"},
	    {"value-file", OPT_VALUE_FILE, CLI_ARG_REQUIRED, "PATH",
	     "file holding the 64 hex digits (one line)"},
	    {"value-fd", OPT_VALUE_FD, CLI_ARG_REQUIRED, "N",
	     "read the 64 hex digits as one line from descriptor N"},
	    {"description", OPT_DESCRIPTION, CLI_ARG_REQUIRED, "TEXT",
	     "1 to 127 printable characters; asked when missing"},
	    CLI_OPT_TEXT("\nWith --token-module and --token-label (and neither --random nor "
	                 "--value), the\npart is generated inside a PKCS#11 token as a sensitive "
	                 "AES-256 key that is never\nread in clear, and the file holds only where "
	                 "it is and its verification pattern,\ncomputed by the token. The token's "
	                 "user PIN is asked (or read like a password,\nfrom --password-file or "
	                 "--password-fd) here and when the part is loaded.\n\n"),
	    {"token-module", OPT_TOKEN_MODULE, CLI_ARG_REQUIRED, "PATH",
	     "the token's PKCS#11 module (absolute path)"},
	    {"token-label", OPT_TOKEN_LABEL, CLI_ARG_REQUIRED, "LABEL", "the token's label"},
	    {"key-label", OPT_KEY_LABEL, CLI_ARG_REQUIRED, "TEXT",
	     "the key's label in the token (CKA_LABEL; 1 to 32 printable characters); default "
	     "'kyok key part'"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c, value_fd = -1;
	bool random = false, value = false, card = false;
	const char *value_file = NULL, *desc = NULL;
	const char *module = NULL, *label = NULL, *key_label = NULL;
	char *asked = NULL, *password = NULL;
	char path[700], prompt[200];
	uint8_t *part = NULL;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		switch (c) {
		case 'h':
			cli_opts_help(stdout, mk_add_usage, opts, cli_common_opts);
			return 0;
		case OPT_RANDOM:
			random = true;
			break;
		case OPT_VALUE:
			value = true;
			break;
		case OPT_CARD:
			card = true;
			break;
		case OPT_VALUE_FILE:
			value_file = optarg;
			break;
		case OPT_VALUE_FD:
			if (mks_parse_fd(optarg, &value_fd) != 0)
				return ky_err_exit(KY_ERR_USAGE);
			break;
		case OPT_DESCRIPTION:
			desc = optarg;
			break;
		case OPT_TOKEN_MODULE:
			module = optarg;
			break;
		case OPT_TOKEN_LABEL:
			label = optarg;
			break;
		case OPT_KEY_LABEL:
			key_label = optarg;
			break;
		default:
			if (cli_common_opt(c, optarg) != 0)
				return ky_err_exit(KY_ERR_USAGE);
			break;
		}
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if ((int)random + (int)value + (int)card > 1 ||
	    (card && (module != NULL || label != NULL || key_label != NULL)))
		return cli_fail(
		    KY_ERR_USAGE, "mk-add",
		    "a key part is random, a known value, on a card or in a token: give "
		    "one of --random, --value, --card and --token-module: see 'kyok tke "
		    "mk-add --help'");
	if (module != NULL || label != NULL || key_label != NULL)
		return ky_err_exit(mks_add_token(random || value, module, label, key_label, desc));
	if ((int)random + (int)value + (int)card != 1)
		return cli_fail(
		    KY_ERR_USAGE, "mk-add",
		    "give one of --random, --value, --card and --token-module: see 'kyok "
		    "tke mk-add --help'");
	if (!value && (value_file != NULL || value_fd >= 0))
		return cli_fail(KY_ERR_USAGE, "mk-add",
		                "--value-file and --value-fd go with --value");
	if (value_file != NULL && value_fd >= 0)
		return cli_fail(KY_ERR_USAGE, "mk-add",
		                "give --value-file or --value-fd, not both");
	if ((r = mks_desc_get(desc, &asked, &desc)) != 0)
		goto out;
	if ((r = cli_workspace_ensure()) != 0)
		goto out;
	if (card) {
		r = mks_add_card(desc);
		goto out;
	}
	if ((part = ky_secret_alloc(KY_MK_LEN)) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	if (random) {
		if ((r = ky_random(part, KY_MK_LEN)) != 0) {
			cli_fail(r, NULL, "no random bytes");
			goto out;
		}
	} else if ((r = mks_read_value(value_file, value_fd, part)) != 0) {
		goto out;
	} else if (mks_value_constant(part)) {
		r = KY_ERR_PART_VALUE_WEAK;
		cli_fail(r, "key part value", NULL);
		goto out;
	}
	snprintf(prompt, sizeof(prompt), "password for the new key part '%s'", desc);
	if ((r = cli_password(prompt, true, &password)) != 0)
		goto out;
	if (strlen(password) < MKS_MIN_PASSWORD) {
		r = KY_ERR_WEAK_PASSWORD;
		cli_fail(r, "key part", NULL);
		goto out;
	}
	if ((r = mks_new_path(path, sizeof(path))) != 0)
		goto out;
	if ((r = ky_keypart_write(path, part, desc, password)) != 0) {
		cli_fail(r, path, NULL);
		goto out;
	}
	if ((r = mks_print_created(path, "")) != 0)
		goto out;
	r = 0;
out:
	ky_secret_free(part, KY_MK_LEN);
	cli_secret_free(password);
	free(asked);
	return ky_err_exit(r);
}

/* ---- mk-rm ---- */

/* Before a key part is deleted: the backups listed in the instance directory whose records
 * are under a master key made from this part (by its VP, as the units reported it when the
 * backup was made), and, always, the rule. Prints on stderr; refuses nothing. */
static void mk_rm_warn_backups(const struct cli_keypart *p)
{
	const char *dir = cli_instance_dir();
	json_t *list = NULL, *b, *mk, *v;
	size_t i, k, q, named = 0;

	if (backup_list_load(dir, &list) == 0) {
		json_array_foreach(json_object_get(list, "backups"), i, b)
		{
			json_array_foreach(json_object_get(b, "master_keys"), k, mk)
			{
				const json_t *pv = json_object_get(mk, "part_vps");
				const char *file = json_string_value(json_object_get(b, "file"));
				bool uses = false;
				json_array_foreach(pv, q, v)
				{
					const char *vp = json_string_value(v);
					uses = uses || (vp != NULL && strcmp(vp, p->vp_hex) == 0);
				}
				if (!uses && json_is_array(pv))
					continue;
				fprintf(
				    stderr,
				    "warning: backup %s (made %s) is under master key VP %.16s..., "
				    "%s%s\n",
				    file ? file : "?",
				    json_string_value(json_object_get(b, "created")) ?: "?",
				    json_string_value(json_object_get(mk, "vp")) ?: "?",
				    uses ? "made from this key part: without the part it cannot be "
				           "restored"
				         : "whose key parts were not recorded (no unit answered): "
				           "it "
				           "may need this part",
				    file != NULL && access(file, F_OK) != 0
				        ? " (the file is no longer there; copies of it may be)"
				        : "");
				named++;
			}
		}
	}
	json_decref(list);
	fprintf(stderr,
	        "note: a backup of key storage is restored only with the master key its records "
	        "are under: keep every key part of that master key, with its password, as long as "
	        "such a backup may be needed, also after a rotation. %s\n",
	        named > 0 ? "The backups above may need this part."
	                  : "kyok knows only the backups 'kyok backup' listed in the instance "
	                    "directory's backups.json; none there needs this part, as far as the "
	                    "units told which parts made each master key.");
}

static const char mk_rm_usage[] =
    "usage: kyok tke mk-rm [--mk N] [options]\n"
    "\n"
    "Deletes a master key part file after confirmation (--yes skips it). A master key\n"
    "cannot be rebuilt without all of its parts. Without --mk, lists the parts and asks\n"
    "for the number. For a part held by an EP11 card only the record is deleted: the\n"
    "part stays on the card (a card cannot delete a part).\n"
    "\n"
    "Before it asks, it names every backup listed in the instance directory's\n"
    "backups.json (made by 'kyok backup') whose records are under a master key made\n"
    "from this part, and reminds that a backup is restored only with its master key:\n"
    "keep the parts of that key as long as such a backup may be needed.\n"
    "\n"
    "For a part held in a token, only the file is deleted: the key stays in the token\n"
    "(its id is printed) until it is deleted there with the token's own tools, e.g.\n"
    "'pkcs11-tool --module MODULE --login --delete-object --type secrkey --id ID'.\n"
    "\n";

static int mks_print_ctx(const void *ctx)
{
	const struct cli_keypart_list *l = ctx;

	return mks_print(l->parts, l->n);
}

/* mk-rm's part of cli_rm_numbered: the listing, the token's record of the part picked (for
 * the note). */
struct mk_rm {
	struct cli_keypart_list l;
	struct cli_token_keypart tp;
};

static int mk_rm_pick(void *ctx, int num, const char **path, char *question, size_t qlen)
{
	struct mk_rm *m = ctx;
	struct cli_keypart *p = &m->l.parts[num - 1];
	char why[200];
	int r = KY_ERR_INTERNAL;

	if (p->in_token && (r = cli_token_keypart_read(p->path, &m->tp, why, sizeof(why))) != 0)
		return cli_err(r, p->path, "%s", why);
	if (p->on_card)
		snprintf(question, qlen,
		         "delete the record of key part %d '%s' (VP %.16s, %s)? the part stays on "
		         "its EP11 card",
		         p->number, p->description, p->vp_hex, mks_base(p->path));
	else
		snprintf(question, qlen,
		         "delete key part %d '%s' (VP %.16s, %s)? this cannot be undone", p->number,
		         p->description, p->vp_hex, mks_base(p->path));
	mk_rm_warn_backups(p);
	*path = p->path;
	return 0;
}

int tke_mk_rm_main(int argc, char **argv)
{
	enum { OPT_MK = 0x2001 };
	static const struct cli_opt opts[] = {
	    {"mk", OPT_MK, CLI_ARG_REQUIRED, "N", "number of the key part to delete"}, CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c, num = 0;
	const char *arg = NULL;
	char id[2 * KY_TOKEN_ID_LEN + 1] = "";
	struct mk_rm m = {0};
	struct cli_rm rm = {.what = "key parts",
	                    .flag = "--mk",
	                    .ask = "number of the key part to delete",
	                    .print = mks_print_ctx,
	                    .list = &m.l,
	                    .pick = mk_rm_pick,
	                    .ctx = &m};
	struct cli_keypart *p;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, mk_rm_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_MK)
			arg = optarg;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if ((r = cli_keyparts_list(&m.l.parts, &m.l.n)) != 0)
		goto out;
	rm.n = m.l.n;
	if ((r = cli_rm_numbered(&rm, arg, &num)) != 0)
		goto out;
	p = &m.l.parts[num - 1];
	if (cli_g.json)
		cli_print_json(json_pack("{s:i, s:s, s:s, s:s, s:s}", "deleted", p->number,
		                         "description", p->description, "vp", p->vp_hex, "file",
		                         p->path, "held", p->on_card ? "ep11-card" : "file"));
	else
		printf("deleted key part %d '%s' (%s)\n", p->number, p->description, p->path);
	if (p->in_token) {
		ky_hex_encode(m.tp.where.id, KY_TOKEN_ID_LEN, id);
		fprintf(
		    stderr,
		    "note: the key stays in token '%s' (module %s, label '%s', id %s): delete it "
		    "there with the token's own tools\n",
		    m.tp.where.label, m.tp.where.module, m.tp.key_label, id);
	}
	if (p->on_card && !cli_g.json)
		printf("the part itself stays on its EP11 card: 'kyok scup show --reader 2' lists "
		       "it\n");
	r = 0;
out:
	free(m.l.parts);
	return ky_err_exit(r);
}
