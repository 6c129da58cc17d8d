/* kyok kp keys, key-create, key-show, key-versions, key-rotate, key-disable, key-enable,
 * key-schedule-delete, key-cancel-delete, key-delete, key-restore, key-purge: keys over
 * the Key Protect v2 API. Payloads given to the service come from files holding the raw
 * bytes; payloads shown are base64.
 *
 * Size: the key commands in one file, as kp_rings.c and kp_policies.c hold theirs: they
 * share the display of a key and the options of the key commands (both below), and
 * key-create, with its import paths, is a quarter of it.
 */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/kp_client.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define KP_KEY_CT      "application/vnd.ibm.kms.key+json"
#define KP_PAYLOAD_MAX 7500
#define KP_REPRESENT   "return=representation"
#define KP_PATH_MAX    512

enum {
	OPT_EXTRACTABLE = 0x2001,
	OPT_NAME,
	OPT_PAYLOAD_FILE,
	OPT_SHOW_PAYLOAD,
	/* ibmcloud kp options kyok kp refuses, with the reason */
	OPT_KEY_MATERIAL,
	OPT_NONCE,
	OPT_IV,
	OPT_CRN,
	OPT_ENC_ALG,
};

/* Refuses -k, -n, -v (OPT_KEY_MATERIAL, OPT_NONCE, OPT_IV): the error code (printed); 0 for
 * other options. */
static int kp_import_refused(int opt, const char *why_material)
{
	switch (opt) {
	case OPT_KEY_MATERIAL:
		return kp_refuse_opt("-k/--key-material", why_material);
	case OPT_NONCE:
		return kp_refuse_opt("-n/--encrypted-nonce", KP_WHY_IMPORT_TOKEN);
	case OPT_IV:
		return kp_refuse_opt("-v/--iv", KP_WHY_IMPORT_TOKEN);
	default:
		return 0;
	}
}

/* ---- showing keys ---- */

static const char *kp_state_name(json_int_t s)
{
	switch (s) {
	case 0:
		return "Pre-activation";
	case 1:
		return "Active";
	case 2:
		return "Suspended";
	case 3:
		return "Deactivated";
	case 5:
		return "Destroyed";
	default:
		return "?";
	}
}

static const char *kp_key_type(const json_t *k)
{
	return json_is_true(json_object_get(k, "extractable")) ? "standard" : "root";
}

static int kp_keys_table(const json_t *list)
{
	static const char *const hdr[] = {"ID", "NAME", "STATE", "TYPE", "CREATED"};
	struct cli_table *t = cli_table_new(5, hdr);
	int status = 0;

	if (t == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *k = json_array_get(list, i);
		const char *cells[5] = {
		    kp_json_str(k, "id"), kp_json_str(k, "name"),
		    kp_state_name(json_integer_value(json_object_get(k, "state"))), kp_key_type(k),
		    kp_json_str(k, "creationDate")};
		if (cli_table_add(t, cells) != 0) {
			status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
			break;
		}
	}
	if (status == 0)
		cli_table_print(t, stdout);
	cli_table_free(t);
	return status;
}

/* One key, field per line. */
static void kp_key_print(const json_t *k, bool want_payload)
{
	const json_t *v;
	const json_t *dad = json_object_get(k, "dualAuthDelete");
	json_int_t state = json_integer_value(json_object_get(k, "state"));
	const char *payload = json_string_value(json_object_get(k, "payload"));

	printf("%-18s %s\n", "id", kp_json_str(k, "id"));
	printf("%-18s %s\n", "name", kp_json_str(k, "name"));
	if (kp_json_str(k, "description")[0] != '\0')
		printf("%-18s %s\n", "description", kp_json_str(k, "description"));
	printf("%-18s %s\n", "type", kp_key_type(k));
	printf("%-18s %s (%lld)\n", "state", kp_state_name(state), (long long)state);
	printf("%-18s %s\n", "imported",
	       json_is_true(json_object_get(k, "imported")) ? "yes" : "no");
	printf("%-18s %s%s%s\n", "created", kp_json_str(k, "creationDate"),
	       kp_json_str(k, "createdBy")[0] != '\0' ? " by " : "", kp_json_str(k, "createdBy"));
	if (kp_json_str(k, "lastUpdateDate")[0] != '\0')
		printf("%-18s %s\n", "updated", kp_json_str(k, "lastUpdateDate"));
	if (kp_json_str(k, "lastRotateDate")[0] != '\0')
		printf("%-18s %s\n", "rotated", kp_json_str(k, "lastRotateDate"));
	if ((v = json_object_get(k, "keyVersion")) != NULL && json_is_object(v))
		printf("%-18s %s%s%s%s\n", "version", kp_json_str(v, "id"),
		       kp_json_str(v, "creationDate")[0] != '\0' ? " (" : "",
		       kp_json_str(v, "creationDate"),
		       kp_json_str(v, "creationDate")[0] != '\0' ? ")" : "");
	if (kp_json_str(k, "expirationDate")[0] != '\0')
		printf("%-18s %s\n", "expires", kp_json_str(k, "expirationDate"));
	if (json_is_object(dad))
		printf("%-18s %s\n", "dual-auth delete",
		       json_is_true(json_object_get(dad, "enabled")) ? "enabled" : "disabled");
	if (json_is_true(json_object_get(k, "deleted")))
		printf("%-18s %s%s%s\n", "deleted", kp_json_str(k, "deletionDate"),
		       kp_json_str(k, "deletedBy")[0] != '\0' ? " by " : "",
		       kp_json_str(k, "deletedBy"));
	if (kp_json_str(k, "restoreExpirationDate")[0] != '\0')
		printf("%-18s %s\n", "restorable until", kp_json_str(k, "restoreExpirationDate"));
	if (kp_json_str(k, "purgeAllowedFrom")[0] != '\0')
		printf("%-18s %s\n", "purge allowed from", kp_json_str(k, "purgeAllowedFrom"));
	if (kp_json_str(k, "crn")[0] != '\0')
		printf("%-18s %s\n", "crn", kp_json_str(k, "crn"));
	if (!want_payload)
		return;
	if (payload != NULL)
		printf("%-18s %s\n", "payload", payload);
	else if (!json_is_true(json_object_get(k, "extractable")))
		printf("%-18s (root keys never leave the service)\n", "payload");
	else
		printf("%-18s (none returned)\n", "payload");
}

/* The first resource of a collection reply. */
static const json_t *kp_first(const struct kp_reply *rep)
{
	return json_array_get(json_object_get(rep->json, "resources"), 0);
}

/* Prints a reply: JSON as is, else the key (or only a line when there is none). */
static int kp_print_key_reply(struct kp_reply *rep, const char *line_if_none)
{
	const json_t *k = kp_first(rep);

	if (cli_g.json) {
		if (rep->json != NULL)
			kp_print_json(json_incref(rep->json));
		else
			kp_print_json(json_pack("{s:i}", "status", (int)rep->status));
		return 0;
	}
	if (k != NULL && json_is_object(k))
		kp_key_print(k, false);
	else if (line_if_none != NULL)
		printf("%s\n", line_if_none);
	return 0;
}

/* ---- options shared by the key commands ---- */

/* getopt over the kp and common options only, then the key id operand. Returns -1 after
 * --help (printed), else 0 or KY_ERR_USAGE. */
static int kp_id_only_opts(int argc, char **argv, const char *usage, const char **id)
{
	static const struct cli_opt longopts[] = {CLI_OPT_END};
	int opt;

	while ((opt = cli_getopt(argc, argv, longopts, kp_common_opts)) != -1) {
		if (opt == 'h') {
			kp_print_help(usage, longopts);
			return -1;
		}
		if (kp_common_opt(opt, optarg) != 0)
			return KY_ERR_USAGE;
	}
	return kp_key_operand(argc, argv, id);
}

/* A payload file: raw bytes, base64'd for the API. *b64 malloc'd; cleanse and free it with
 * kp_b64_free. */
static int kp_payload_b64(const char *path, char **b64)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf raw = {0};

	*b64 = NULL;
	if ((r = kp_file_read(path, "--payload-file", KP_PAYLOAD_MAX, &raw)) != 0)
		return r;
	if ((r = ky_b64_encode(raw.data, raw.len, b64)) != 0)
		cli_fail(r, path, NULL);
	ky_buf_free(&raw);
	return r;
}

static void kp_b64_free(char *b64)
{
	if (b64 == NULL)
		return;
	OPENSSL_cleanse(b64, strlen(b64));
	free(b64);
}

static int kp_key_path(char *out, size_t outlen, const char *id, const char *suffix)
{
	if (snprintf(out, outlen, "/api/v2/keys/%s%s", id, suffix) >= (int)outlen)
		return KY_ERR_USAGE;
	return 0;
}

/* ---- keys ---- */

/* Pure: "active,suspended" or "1,2" -> "1,2". KY_ERR_USAGE. */
static int kp_states_parse(const char *s, char *out, size_t outlen)
{
	static const struct {
		const char *name;
		int n;
	} names[] = {{"active", 1},    {"suspended", 2}, {"deactivated", 3},
	             {"destroyed", 5}, {"deleted", 5},   {NULL, 0}};
	char buf[128], *save = NULL, *tok;
	size_t k = 0;

	if (snprintf(buf, sizeof(buf), "%s", s) >= (int)sizeof(buf))
		return KY_ERR_USAGE;
	out[0] = '\0';
	for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		int n = -1;
		if (strlen(tok) == 1 &&
		    (tok[0] == '1' || tok[0] == '2' || tok[0] == '3' || tok[0] == '5'))
			n = tok[0] - '0';
		for (size_t i = 0; names[i].name != NULL && n < 0; i++)
			if (strcasecmp(tok, names[i].name) == 0)
				n = names[i].n;
		if (n < 0 || k + 3 > outlen)
			return KY_ERR_USAGE;
		k += (size_t)snprintf(out + k, outlen - k, "%s%d", k > 0 ? "," : "", n);
	}
	return k > 0 ? 0 : KY_ERR_USAGE;
}

static int kp_uint_opt(const char *flag, const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max) {
		cli_fail(KY_ERR_USAGE, flag, "takes a number from 0 to %lu, not '%s'", max, s);
		return KY_ERR_USAGE;
	}
	*out = v;
	return 0;
}

int kp_keys_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp keys [--limit N] [--offset N] [--state LIST] [--extractable BOOL]\n"
	    "\n"
	    "Lists the keys of the instance: ID, NAME, STATE, TYPE (root or standard), CREATED.\n"
	    "Any API key role but KeyPurge may list.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"limit", 'n', CLI_ARG_REQUIRED, "N",
	     "at most N keys (1 to 5000; the service's default: 200); also spelled "
	     "--number-of-keys"},
	    {"offset", 's', CLI_ARG_REQUIRED, "N",
	     "skip the first N keys; also spelled --starting-offset"},
	    {"state", 't', CLI_ARG_REQUIRED, "LIST",
	     "states to list: active, suspended, deactivated, destroyed, or their numbers 1,2,3,5 "
	     "(default 1,2,3); also spelled --key-states"},
	    {"extractable", OPT_EXTRACTABLE, CLI_ARG_REQUIRED, "BOOL",
	     "true: standard keys only; false: root keys only"},
	    CLI_OPT_TEXT("  (ibmcloud kp's -c/--crn is refused: -o json shows each key's crn)\n"),
	    {"number-of-keys", 'n', CLI_ARG_REQUIRED, NULL, NULL},
	    {"starting-offset", 's', CLI_ARG_REQUIRED, NULL, NULL},
	    {"key-states", 't', CLI_ARG_REQUIRED, NULL, NULL},
	    {"crn", OPT_CRN, CLI_ARG_NONE, NULL, NULL},
	    {NULL, 'c', CLI_ARG_NONE, NULL, NULL},
	    CLI_OPT_END};
	int opt, status = 0;
	unsigned long limit = 0, offset = 0;
	bool have_limit = false, have_offset = false;
	const char *extractable = NULL;
	char states[64] = "", path[KP_PATH_MAX], sep = '?';
	size_t k;
	struct kp_reply rep = {0};
	const json_t *meta, *list, *total;

	while ((opt = cli_getopt(argc, argv, longopts, kp_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			kp_print_help(usage, longopts);
			return 0;
		case 'c':
		case OPT_CRN:
			return ky_err_exit(kp_refuse_opt("-c/--crn",
			                                 "kyok kp lists key IDs: -o json "
			                                 "shows each key's crn"));
		case 'n':
			if (kp_uint_opt("--limit", optarg, 5000, &limit) != 0 || limit == 0)
				return limit == 0 ? cli_fail(KY_ERR_USAGE, "--limit",
				                             "takes a number from 1 to 5000")
				                  : KY_EXIT_USAGE;
			have_limit = true;
			break;
		case 's':
			if (kp_uint_opt("--offset", optarg, 1000000000UL, &offset) != 0)
				return KY_EXIT_USAGE;
			have_offset = true;
			break;
		case 't':
			if (kp_states_parse(optarg, states, sizeof(states)) != 0)
				return cli_fail(KY_ERR_USAGE, "--state",
				                "'%s': give states like active,suspended or 1,2",
				                optarg);
			break;
		case OPT_EXTRACTABLE:
			if (strcmp(optarg, "true") != 0 && strcmp(optarg, "false") != 0)
				return cli_fail(KY_ERR_USAGE, "--extractable",
				                "takes true or false, not '%s'", optarg);
			extractable = optarg;
			break;
		default:
			if (kp_common_opt(opt, optarg) != 0)
				return KY_EXIT_USAGE;
		}
	}
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	k = (size_t)snprintf(path, sizeof(path), "/api/v2/keys");
	if (have_limit) {
		k += (size_t)snprintf(path + k, sizeof(path) - k, "%climit=%lu", sep, limit);
		sep = '&';
	}
	if (have_offset) {
		k += (size_t)snprintf(path + k, sizeof(path) - k, "%coffset=%lu", sep, offset);
		sep = '&';
	}
	if (states[0] != '\0') {
		k += (size_t)snprintf(path + k, sizeof(path) - k, "%cstate=%s", sep, states);
		sep = '&';
	}
	if (extractable != NULL)
		k += (size_t)snprintf(path + k, sizeof(path) - k, "%cextractable=%s", sep,
		                      extractable);
	if ((status = kp_call("GET", path, NULL, NULL, NULL, "keys", &rep)) != 0)
		return status;
	meta = json_object_get(rep.json, "metadata");
	list = json_object_get(rep.json, "resources");
	if (cli_g.json) {
		kp_print_json(json_incref(rep.json));
	} else if (list != NULL && !json_is_array(list)) {
		status = cli_fail(KY_ERR_BAD_REPLY, "keys", "'resources' is not a list");
	} else if (json_array_size(list) == 0) {
		total = json_object_get(meta, "totalCount");
		if (json_is_integer(total) && json_integer_value(total) > 0)
			printf("no keys in this range (%lld keys match)\n",
			       (long long)json_integer_value(total));
		else
			printf("no keys\n");
	} else if ((status = kp_keys_table(list)) == 0) {
		total = json_object_get(meta, "totalCount");
		if (json_is_integer(total))
			printf("%zu of %lld keys\n", json_array_size(list),
			       (long long)json_integer_value(total));
		else
			printf("%zu key%s\n", json_array_size(list),
			       json_array_size(list) == 1 ? "" : "s");
	}
	kp_reply_release(&rep);
	return status;
}

/* ---- key-create ---- */

/* The aliases of -a/--aliases (each given once or as a comma-separated list) appended to a.
 * Each is 2 to 90 letters, digits, '-', '_'; KY_ERR_USAGE (printed). */
static int kp_aliases_add(json_t *a, const char *arg)
{
	char buf[512], *save = NULL, *tok;

	if (snprintf(buf, sizeof(buf), "%s", arg) >= (int)sizeof(buf))
		return cli_err(KY_ERR_USAGE, "-a/--aliases", "'%.60s...' is too long", arg);
	for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (!kp_key_id_ok(tok) || strlen(tok) < 2)
			return cli_err(
			    KY_ERR_USAGE, "-a/--aliases",
			    "'%.100s' is not an alias (2 to 90 letters, digits, '-', '_')", tok);
		if (json_array_append_new(a, json_string(tok)) != 0)
			return cli_err(KY_ERR_NOMEM, NULL, NULL);
	}
	if (json_array_size(a) == 0)
		return cli_err(KY_ERR_USAGE, "-a/--aliases", "give an alias, not '%.60s'", arg);
	return 0;
}

/* What -k, -n, -v give a secure import (the key encrypted to the import token): each is
 * base64 of its size, so that key material in the clear given as -k is refused, not sent. */
struct kp_sealed_args {
	const char *key, *nonce, *iv, *alg;
};

static int kp_sealed_check(const struct kp_sealed_args *s, bool standard, bool payload_file)
{
	struct ky_buf b = {0};
	size_t n;
	int bad;

	if (s->key == NULL && (s->nonce != NULL || s->iv != NULL || s->alg != NULL))
		return cli_err(KY_ERR_USAGE,
		               s->nonce != NULL ? "-n/--encrypted-nonce"
		               : s->iv != NULL  ? "-v/--iv"
		                                : "--encryption-algorithm",
		               "imports a key encrypted to the import token: give -k ENCRYPTED_KEY "
		               "too ('kyok kp import-token key-encrypt' makes it)");
	if (s->key == NULL)
		return 0;
	if (s->nonce == NULL || s->iv == NULL) {
		return kp_refuse_opt(
		    "-k/--key-material",
		    "without -n and -v it is key material in the clear, and key material on "
		    "the command line is seen by every user of this host (ps, /proc): give the "
		    "raw bytes with --payload-file FILE, or the key encrypted to the import "
		    "token with -n ENCRYPTED_NONCE and -v IV ('kyok kp import-token "
		    "key-encrypt' and 'nonce-encrypt')");
	}
	if (standard)
		return cli_err(KY_ERR_USAGE, "-k/--key-material",
		               "a key encrypted to the import token is a root key: leave "
		               "-s/--standard out");
	if (payload_file)
		return cli_err(KY_ERR_USAGE, "--payload-file",
		               "give the key material once: --payload-file FILE, or -k, -n, -v");
	if (s->alg != NULL && strcmp(s->alg, "RSAES_OAEP_SHA_256") != 0 &&
	    strcmp(s->alg, "RSAES_OAEP_SHA_1") != 0)
		return cli_err(KY_ERR_USAGE, "--encryption-algorithm",
		               "takes RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1, not '%.40s'", s->alg);
	bad = ky_b64_decode(s->key, &b) != 0;
	n = b.len;
	ky_buf_free(&b);
	if (bad || n < 256)
		return cli_err(
		    KY_ERR_USAGE, "-k/--key-material",
		    "with -n and -v it is the key encrypted to the import token (base64 "
		    "of 256 bytes or more, from 'kyok kp import-token key-encrypt'), not "
		    "%s",
		    bad ? "text that is not base64" : "key material in the clear");
	bad = ky_b64_decode(s->nonce, &b) != 0 || b.len != 28;
	ky_buf_free(&b);
	if (bad)
		return cli_err(
		    KY_ERR_USAGE, "-n/--encrypted-nonce",
		    "'%.60s' is not an encrypted nonce (base64 of 28 bytes, from 'kyok kp "
		    "import-token nonce-encrypt')",
		    s->nonce);
	bad = ky_b64_decode(s->iv, &b) != 0 || b.len != 12;
	ky_buf_free(&b);
	if (bad)
		return cli_err(
		    KY_ERR_USAGE, "-v/--iv",
		    "'%.60s' is not an IV (base64 of 12 bytes, from 'kyok kp import-token "
		    "nonce-encrypt')",
		    s->iv);
	return 0;
}

int kp_key_create_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-create --name NAME [--standard] [--payload-file FILE]\n"
	    "                          [--description TEXT] [--expiration-date DATE]\n"
	    "                          [-a ALIAS...] [-r RING]\n"
	    "       kyok kp key create NAME [-s] [-D TEXT] [-e DATE] [--payload-file FILE]\n"
	    "                          [-a ALIAS...] [-r RING]\n"
	    "       kyok kp key create NAME -k ENCRYPTED_KEY -n ENCRYPTED_NONCE -v IV\n"
	    "\n"
	    "Creates a root key (wraps data keys; never leaves the service) or, with\n"
	    "--standard, a standard key (its payload can be read back). The key material is\n"
	    "generated by the service, or imported: from FILE (raw bytes: 16, 24 or 32 for a\n"
	    "root key), or encrypted to the import token (-k, -n, -v: a root key; see 'kyok kp\n"
	    "import-token key-encrypt' and 'nonce-encrypt'). Needs the Writer or Manager role.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"name", OPT_NAME, CLI_ARG_REQUIRED, "NAME",
	     "2 to 90 characters (or NAME as the operand)"},
	    {"standard", 's', CLI_ARG_NONE, NULL,
	     "a standard key instead of a root key (also spelled --standard-key)"},
	    {"payload-file", OPT_PAYLOAD_FILE, CLI_ARG_REQUIRED, "FILE",
	     "import the key material from FILE (raw bytes)"},
	    {"key-material", 'k', CLI_ARG_REQUIRED, "ENCRYPTED_KEY",
	     "the key encrypted to the import token (from 'kyok kp import-token key-encrypt'); "
	     "only with -n and -v: key material in the clear is refused here"},
	    {"encrypted-nonce", 'n', CLI_ARG_REQUIRED, "ENCRYPTED_NONCE",
	     "the token's nonce encrypted under the key (from 'kyok kp import-token "
	     "nonce-encrypt')"},
	    {"iv", 'v', CLI_ARG_REQUIRED, "IV", "the IV it was encrypted with (from the same)"},
	    {"encryption-algorithm", OPT_ENC_ALG, CLI_ARG_REQUIRED, "ALG",
	     "how -k was encrypted: RSAES_OAEP_SHA_256 (default) or RSAES_OAEP_SHA_1 (key-encrypt "
	     "-a SHA1)"},
	    {"aliases", 'a', CLI_ARG_REQUIRED, "ALIAS",
	     "give the key this alias (2 to 90 letters, digits, '-', '_'); repeat it, or separate "
	     "aliases with commas"},
	    {NULL, 'r', CLI_ARG_REQUIRED, "RING",
	     "create the key in key ring RING (default: 'default'), as --key-ring does"},
	    {"description", 'D', CLI_ARG_REQUIRED, "TEXT", "at most 240 characters"},
	    {"expiration-date", 'e', CLI_ARG_REQUIRED, "DATE",
	     "the key expires then (RFC 3339, e.g. 2030-01-31T00:00:00Z): it no longer wraps from "
	     "that date"},
	    {"standard-key", 's', CLI_ARG_NONE, NULL, NULL},
	    CLI_OPT_END};
	int opt, status = 0;
	const char *name = NULL, *payload_file = NULL, *desc = NULL, *expires = NULL;
	struct kp_sealed_args sealed = {NULL, NULL, NULL, NULL};
	bool standard = false;
	char *payload = NULL, subject[160];
	json_t *res = NULL, *body = NULL, *aliases = json_array();
	struct kp_reply rep = {0};

	if (aliases == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	while ((opt = cli_getopt(argc, argv, longopts, kp_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			kp_print_help(usage, longopts);
			goto out;
		case OPT_NAME:
			name = optarg;
			break;
		case 's':
			standard = true;
			break;
		case OPT_PAYLOAD_FILE:
			payload_file = optarg;
			break;
		case 'D':
			desc = optarg;
			break;
		case 'e':
			expires = optarg;
			break;
		case 'a':
			if (kp_aliases_add(aliases, optarg) != 0) {
				status = KY_EXIT_USAGE;
				goto out;
			}
			break;
		case 'r':
			if (kp_common_opt(KP_OPT_KEY_RING, optarg) != 0) {
				status = KY_EXIT_USAGE;
				goto out;
			}
			break;
		case 'k':
			sealed.key = optarg;
			break;
		case 'n':
			sealed.nonce = optarg;
			break;
		case 'v':
			sealed.iv = optarg;
			break;
		case OPT_ENC_ALG:
			sealed.alg = optarg;
			break;
		default:
			if (kp_common_opt(opt, optarg) != 0) {
				status = KY_EXIT_USAGE;
				goto out;
			}
		}
	}
	if (optind < argc && name != NULL) {
		status =
		    cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		             "the name is given twice ('%.100s' and --name '%.100s'): give it once",
		             argv[optind], name);
		goto out;
	}
	if (optind < argc)
		name = argv[optind++];
	if (cli_no_operands(argc, argv) != 0) {
		status = KY_EXIT_USAGE;
		goto out;
	}
	if (name == NULL) {
		status = cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                  "give the key's name: NAME, or --name NAME");
		goto out;
	}
	if ((status = kp_sealed_check(&sealed, standard, payload_file != NULL)) != 0) {
		status = ky_err_exit(status);
		goto out;
	}
	if (payload_file != NULL && kp_payload_b64(payload_file, &payload) != 0) {
		status = KY_EXIT_INPUT;
		goto out;
	}
	res =
	    json_pack("{s:s, s:s, s:b}", "type", KP_KEY_CT, "name", name, "extractable", standard);
	if (res == NULL ||
	    (desc != NULL && json_object_set_new(res, "description", json_string(desc)) != 0) ||
	    (expires != NULL &&
	     json_object_set_new(res, "expirationDate", json_string(expires)) != 0) ||
	    (payload != NULL && json_object_set_new(res, "payload", json_string(payload)) != 0) ||
	    (sealed.key != NULL &&
	     (json_object_set_new(res, "payload", json_string(sealed.key)) != 0 ||
	      json_object_set_new(res, "encryptedNonce", json_string(sealed.nonce)) != 0 ||
	      json_object_set_new(res, "iv", json_string(sealed.iv)) != 0)) ||
	    (sealed.alg != NULL &&
	     json_object_set_new(res, "encryptionAlgorithm", json_string(sealed.alg)) != 0) ||
	    (json_array_size(aliases) > 0 && json_object_set(res, "aliases", aliases) != 0)) {
		status = cli_fail(KY_ERR_NOMEM, NULL, "or the name or description is not UTF-8");
		goto out;
	}
	body = json_pack("{s:{s:s, s:i}, s:[O]}", "metadata", "collectionType", KP_KEY_CT,
	                 "collectionTotal", 1, "resources", res);
	if (body == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	snprintf(subject, sizeof(subject), "key '%.100s'", name);
	if ((status = kp_call("POST", "/api/v2/keys", KP_KEY_CT, body, KP_REPRESENT, subject,
	                      &rep)) != 0)
		goto out;
	status = kp_print_key_reply(&rep, "key created");
out:
	kp_reply_release(&rep);
	kp_json_cleanse(body);
	json_decref(body);
	kp_json_cleanse(res);
	json_decref(res);
	json_decref(aliases);
	kp_b64_free(payload);
	return status;
}

/* ---- key-show, key-versions ---- */

int kp_key_show_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-show ID [--show-payload]\n"
	    "       kyok kp key show ID [--show-payload]\n"
	    "\n"
	    "Shows a key's metadata. With --show-payload, also the payload of a standard key\n"
	    "(base64; needs ReaderPlus, Writer or Manager); root keys never leave the service.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {{"show-payload", OPT_SHOW_PAYLOAD, CLI_ARG_NONE,
	                                           NULL,
	                                           "fetch and print a standard key's payload"},
	                                          CLI_OPT_END};
	int opt, status = 0;
	bool show = false;
	const char *id = NULL;
	char path[KP_PATH_MAX], subject[160];
	struct kp_reply rep = {0};
	const json_t *k;

	while ((opt = cli_getopt(argc, argv, longopts, kp_common_opts)) != -1) {
		if (opt == 'h') {
			kp_print_help(usage, longopts);
			return 0;
		}
		if (opt == OPT_SHOW_PAYLOAD) {
			show = true;
			continue;
		}
		if (kp_common_opt(opt, optarg) != 0)
			return KY_EXIT_USAGE;
	}
	if (kp_key_operand(argc, argv, &id) != 0)
		return KY_EXIT_USAGE;
	(void)kp_key_path(path, sizeof(path), id, show ? "" : "/metadata");
	snprintf(subject, sizeof(subject), "key %s", id);
	if ((status = kp_call("GET", path, NULL, NULL, NULL, subject, &rep)) != 0)
		return status;
	k = kp_first(&rep);
	if (cli_g.json)
		kp_print_json(json_incref(rep.json));
	else if (!json_is_object(k))
		status = cli_fail(KY_ERR_BAD_REPLY, subject, "the reply holds no key");
	else
		kp_key_print(k, show);
	if (status == 0 && show && json_is_true(json_object_get(k, "extractable")) &&
	    !json_is_string(json_object_get(k, "payload")))
		status =
		    cli_fail(KY_ERR_FORBIDDEN, subject,
		             "the service returned no payload: reading a standard key's payload "
		             "needs the ReaderPlus, Writer or Manager role");
	kp_reply_release(&rep);
	return status;
}

int kp_key_versions_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-versions ID\n"
	    "       kyok kp key versions ID\n\n"
	    "Lists the versions of a root key, newest first as the service returns them: each\n"
	    "rotation adds one; wraps use the newest, unwraps any.\n";
	static const char *const hdr[] = {"VERSION ID", "CREATED"};
	int r, status = 0;
	const char *id = NULL;
	char path[KP_PATH_MAX], subject[160];
	struct kp_reply rep = {0};
	const json_t *list;
	struct cli_table *t = NULL;

	if ((r = kp_id_only_opts(argc, argv, usage, &id)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	(void)kp_key_path(path, sizeof(path), id, "/versions");
	snprintf(subject, sizeof(subject), "key %s", id);
	if ((status = kp_call("GET", path, NULL, NULL, NULL, subject, &rep)) != 0)
		return status;
	list = json_object_get(rep.json, "resources");
	if (cli_g.json) {
		kp_print_json(json_incref(rep.json));
		goto out;
	}
	if ((t = cli_table_new(2, hdr)) == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *v = json_array_get(list, i);
		const char *cells[2] = {kp_json_str(v, "id"), kp_json_str(v, "creationDate")};
		if (cli_table_add(t, cells) != 0) {
			status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
			goto out;
		}
	}
	cli_table_print(t, stdout);
	printf("%zu version%s\n", json_array_size(list), json_array_size(list) == 1 ? "" : "s");
out:
	cli_table_free(t);
	kp_reply_release(&rep);
	return status;
}

/* ---- actions ---- */

/* POST /api/v2/keys/{id}/actions/{action}, body {} or {"payload"} (rotate); prints done. */
static int kp_key_action(int argc, char **argv, const char *usage, const char *action,
                         bool takes_payload, const char *done)
{
	/* rotate: --payload-file (described in its usage); ibmcloud kp's -k, -n, -v refused */
	static const struct cli_opt with_payload[] = {
	    {"payload-file", OPT_PAYLOAD_FILE, CLI_ARG_REQUIRED, NULL, NULL},
	    {"key-material", OPT_KEY_MATERIAL, CLI_ARG_REQUIRED, NULL, NULL},
	    {"encrypted-nonce", OPT_NONCE, CLI_ARG_REQUIRED, NULL, NULL},
	    {"iv", OPT_IV, CLI_ARG_REQUIRED, NULL, NULL},
	    {NULL, 'k', CLI_ARG_REQUIRED, NULL, NULL},
	    {NULL, 'n', CLI_ARG_REQUIRED, NULL, NULL},
	    {NULL, 'v', CLI_ARG_REQUIRED, NULL, NULL},
	    CLI_OPT_END};
	const struct cli_opt *opts = takes_payload ? with_payload : NULL;
	int opt, status = 0;
	const char *id = NULL, *payload_file = NULL;
	char path[KP_PATH_MAX], subject[160], ctype[96], *payload = NULL;
	json_t *body = NULL;
	struct kp_reply rep = {0};

	while ((opt = cli_getopt(argc, argv, opts, kp_common_opts)) != -1) {
		if (opt == 'h') {
			kp_print_help(usage, opts);
			return 0;
		}
		if (opt == 'k' || opt == 'n' || opt == 'v')
			opt = opt == 'k' ? OPT_KEY_MATERIAL : opt == 'n' ? OPT_NONCE : OPT_IV;
		if (opt == OPT_KEY_MATERIAL || opt == OPT_NONCE || opt == OPT_IV)
			return ky_err_exit(kp_import_refused(opt, KP_WHY_SECRET_ARGV));
		if (opt == OPT_PAYLOAD_FILE) {
			payload_file = optarg;
			continue;
		}
		if (kp_common_opt(opt, optarg) != 0)
			return KY_EXIT_USAGE;
	}
	if (kp_key_operand(argc, argv, &id) != 0)
		return KY_EXIT_USAGE;
	if (payload_file != NULL && kp_payload_b64(payload_file, &payload) != 0)
		return KY_EXIT_INPUT;
	snprintf(path, sizeof(path), "/api/v2/keys/%s/actions/%s", id, action);
	snprintf(subject, sizeof(subject), "key %s", id);
	snprintf(ctype, sizeof(ctype), "application/vnd.ibm.kms.key_action_%s+json", action);
	if ((body = payload != NULL ? json_pack("{s:s}", "payload", payload) : json_object()) ==
	    NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	if ((status = kp_call("POST", path, ctype, body, NULL, subject, &rep)) != 0)
		goto out;
	if (cli_g.json)
		kp_print_json(rep.json != NULL ? json_incref(rep.json)
		                               : json_pack("{s:s, s:s, s:i}", "id", id, "action",
		                                           action, "status", (int)rep.status));
	else
		printf("key %s: %s\n", id, done);
out:
	kp_reply_release(&rep);
	kp_json_cleanse(body);
	json_decref(body);
	kp_b64_free(payload);
	return status;
}

int kp_key_rotate_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-rotate ID [--payload-file FILE]\n"
	    "       kyok kp key rotate ID [--payload-file FILE]\n\n"
	    "Rotates a root key: a new version wraps from now on; data keys wrapped with older\n"
	    "versions still unwrap ('kyok kp rewrap' moves them to the newest). An imported key\n"
	    "needs new material (--payload-file, raw bytes); a generated one takes none. Needs\n"
	    "the Writer or Manager role.\n";
	return kp_key_action(argc, argv, usage, "rotate", true, "rotated: new version created");
}

int kp_key_disable_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-disable ID\n"
	    "       kyok kp key disable ID\n\n"
	    "Suspends a key (state 2): it wraps and unwraps nothing until enabled again. Needs\n"
	    "the Manager role.\n";
	return kp_key_action(argc, argv, usage, "disable", false, "disabled (Suspended)");
}

int kp_key_enable_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-enable ID\n"
	    "       kyok kp key enable ID\n\n"
	    "Enables a suspended key again (state 1). Needs the Manager role.\n";
	return kp_key_action(argc, argv, usage, "enable", false, "enabled (Active)");
}

int kp_key_schedule_delete_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-schedule-delete ID\n"
	    "       kyok kp key schedule-delete ID\n\n"
	    "For a key under the dual-authorization delete policy: authorises its deletion.\n"
	    "Another user (another API key) with the Manager role must then delete it within 7\n"
	    "days ('kyok kp key-delete'). Needs the Writer or Manager role.\n";
	return kp_key_action(argc, argv, usage, "setKeyForDeletion", false,
	                     "scheduled for deletion: another user can delete it within 7 days");
}

int kp_key_cancel_delete_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-cancel-delete ID\n"
	    "       kyok kp key cancel-delete ID\n\n"
	    "Cancels the deletion authorised by 'key-schedule-delete'. Needs the Writer or\n"
	    "Manager role.\n";
	return kp_key_action(argc, argv, usage, "unsetKeyForDeletion", false,
	                     "deletion no longer authorised");
}

int kp_key_sync_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-sync ID\n"
	    "       kyok kp key sync ID\n\n"
	    "Asks the service to tell the cloud resources a key protects (its registrations) of\n"
	    "its state (POST .../actions/sync). No other service registers kyok keys, so there\n"
	    "is nothing to tell; the units still refuse a sync within an hour of the key's last\n"
	    "change, as Key Protect does. Needs the Writer or Manager role.\n";
	return kp_key_action(argc, argv, usage, "sync", false, "associated resources synchronized");
}

/* ---- delete, restore, purge ---- */

int kp_key_delete_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-delete ID [--force]\n"
	    "       kyok kp key delete ID [-f]\n"
	    "\n"
	    "Deletes a key: its material is destroyed (state 5, Destroyed); it can be restored\n"
	    "within 30 days ('kyok kp key-restore') and purged after 4 hours. A key under the\n"
	    "dual-authorization policy must first be scheduled for deletion by another user.\n"
	    "Needs the Manager role.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"force", 'f', CLI_ARG_NONE, NULL,
	     "delete even a key that protects registered resources (as Key Protect's force=true; "
	     "kyok has no registrations, so it is the same delete)"},
	    CLI_OPT_END};
	int opt, status = 0;
	bool force = false;
	const char *id = NULL;
	char path[KP_PATH_MAX], subject[160];
	struct kp_reply rep = {0};

	while ((opt = cli_getopt(argc, argv, longopts, kp_common_opts)) != -1) {
		if (opt == 'h') {
			kp_print_help(usage, longopts);
			return 0;
		}
		if (opt == 'f') {
			force = true;
			continue;
		}
		if (kp_common_opt(opt, optarg) != 0)
			return KY_EXIT_USAGE;
	}
	if (kp_key_operand(argc, argv, &id) != 0)
		return KY_EXIT_USAGE;
	(void)kp_key_path(path, sizeof(path), id, force ? "?force=true" : "");
	snprintf(subject, sizeof(subject), "key %s", id);
	if ((status = kp_call("DELETE", path, NULL, NULL, KP_REPRESENT, subject, &rep)) != 0)
		return status;
	if (cli_g.json)
		status = kp_print_key_reply(&rep, NULL);
	else
		printf("key %s: deleted (restorable for 30 days with 'kyok kp key-restore')\n", id);
	kp_reply_release(&rep);
	return status;
}

int kp_key_restore_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-restore ID\n"
	    "       kyok kp key restore ID\n"
	    "\n"
	    "Restores a deleted key within 30 days of its deletion, with the material it had\n"
	    "(kyok keeps it until the key is purged). Needs the Manager role.\n";
	static const struct cli_opt longopts[] = {
	    {"key-material", OPT_KEY_MATERIAL, CLI_ARG_REQUIRED, NULL, NULL},
	    {"encrypted-nonce", OPT_NONCE, CLI_ARG_REQUIRED, NULL, NULL},
	    {"iv", OPT_IV, CLI_ARG_REQUIRED, NULL, NULL},
	    {NULL, 'k', CLI_ARG_REQUIRED, NULL, NULL},
	    {NULL, 'n', CLI_ARG_REQUIRED, NULL, NULL},
	    {NULL, 'v', CLI_ARG_REQUIRED, NULL, NULL},
	    CLI_OPT_END};
	int opt, status = 0;
	const char *id = NULL;
	char path[KP_PATH_MAX], subject[160];
	json_t *body = NULL;
	struct kp_reply rep = {0};

	while ((opt = cli_getopt(argc, argv, longopts, kp_common_opts)) != -1) {
		if (opt == 'h') {
			kp_print_help(usage, longopts);
			return 0;
		}
		if (opt == 'k' || opt == 'n' || opt == 'v')
			opt = opt == 'k' ? OPT_KEY_MATERIAL : opt == 'n' ? OPT_NONCE : OPT_IV;
		if (opt == OPT_KEY_MATERIAL || opt == OPT_NONCE || opt == OPT_IV)
			return ky_err_exit(kp_import_refused(
			    opt, "kyok keeps a deleted key's material until it is purged: restore "
			         "takes none"));
		if (kp_common_opt(opt, optarg) != 0)
			return KY_EXIT_USAGE;
	}
	if (kp_key_operand(argc, argv, &id) != 0)
		return KY_EXIT_USAGE;
	(void)kp_key_path(path, sizeof(path), id, "/restore");
	snprintf(subject, sizeof(subject), "key %s", id);
	body = json_pack("{s:{s:s, s:i}, s:[{}]}", "metadata", "collectionType", KP_KEY_CT,
	                 "collectionTotal", 1, "resources");
	if (body == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	if ((status = kp_call("POST", path, KP_KEY_CT, body, KP_REPRESENT, subject, &rep)) != 0)
		goto out;
	if (cli_g.json)
		status = kp_print_key_reply(&rep, NULL);
	else
		printf("key %s: restored\n", id);
out:
	kp_reply_release(&rep);
	json_decref(body);
	return status;
}

int kp_key_purge_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-purge ID\n"
	    "       kyok kp key purge ID\n\n"
	    "Removes a deleted key for good, 4 hours or more after its deletion: it can no\n"
	    "longer be restored. Asks for confirmation (--yes answers it). Needs the KeyPurge\n"
	    "role.\n";
	int r, status = 0;
	const char *id = NULL;
	char path[KP_PATH_MAX], subject[160], question[200];
	struct kp_reply rep = {0};

	if ((r = kp_id_only_opts(argc, argv, usage, &id)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	snprintf(question, sizeof(question), "purge key %s for good? it cannot be restored after",
	         id);
	if ((r = cli_confirm(question)) != 0)
		return ky_err_exit(r);
	(void)kp_key_path(path, sizeof(path), id, "/purge");
	snprintf(subject, sizeof(subject), "key %s", id);
	if ((status = kp_call("DELETE", path, NULL, NULL, KP_REPRESENT, subject, &rep)) != 0)
		return status;
	if (cli_g.json)
		status = kp_print_key_reply(&rep, NULL);
	else
		printf("key %s: purged\n", id);
	kp_reply_release(&rep);
	return status;
}
