/* kyok tke apikey-create, apikeys, apikey-revoke: the API keys that applications exchange
 * for tokens of the key-management API.
 *
 * An API key's secret is made here: "kyok_" followed by 32 random bytes in base64url. Only
 * its SHA-256 travels, in a signed apikey-create command sent to every selected crypto unit
 * with the same id and hash (the units share key storage: the first one stores the key,
 * the others find it there). The secret goes into a 0600 file, written before the command
 * is sent, so that a re-run after an interruption sends the same key again:
 *   {"name": "...", "id": "...", "role": "...", "apikey": "kyok_..."}
 * the shape of an IBM Cloud API key download ('kyok kp --apikey-file' reads it).
 */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/tke_signing.h"
#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"

#define APIKEY_PREFIX     "kyok_"
#define APIKEY_RAW_LEN    32
#define APIKEY_SECRET_MAX 256
#define APIKEY_FILE_MAX   4096

enum {
	OPT_NAME = 0x2001,
	OPT_ROLE,
	OPT_OUT,
	OPT_SHOW,
	OPT_ID,
	OPT_PREPARE,
};

struct apikey_ctx {
	bool present; /* already in key storage */
	char id[KY_ID_MAX + 1];
	char name[KY_APIKEY_NAME_MAX + 1];
	char role[KY_ROLE_MAX + 1];
	uint8_t hash[KY_APIKEY_HASH_LEN];
};

/* Names become file names: letters, digits, '.', '_', '-', not starting with '.'. Pure. */
static bool apikey_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > KY_APIKEY_NAME_MAX || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* A new secret "kyok_" + base64url(32 random bytes), no padding; ky_secret_alloc'd. */
static int apikey_secret_new(char **out)
{
	int r = KY_ERR_INTERNAL;
	uint8_t *raw = NULL;
	char *b64 = NULL, *s = NULL;
	size_t k = 0;

	*out = NULL;
	if ((raw = ky_secret_alloc(APIKEY_RAW_LEN)) == NULL ||
	    (s = ky_secret_alloc(APIKEY_SECRET_MAX)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = ky_random(raw, APIKEY_RAW_LEN)) != 0)
		goto out;
	if ((r = ky_b64_encode(raw, APIKEY_RAW_LEN, &b64)) != 0)
		goto out;
	memcpy(s, APIKEY_PREFIX, strlen(APIKEY_PREFIX));
	k = strlen(APIKEY_PREFIX);
	for (const char *p = b64; *p != '\0' && *p != '='; p++)
		s[k++] = *p == '+' ? '-' : *p == '/' ? '_' : *p;
	s[k] = '\0';
	*out = s;
	s = NULL; /* transferred */
	r = 0;
out:
	if (b64 != NULL) {
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
	}
	ky_secret_free(raw, APIKEY_RAW_LEN);
	ky_secret_free(s, APIKEY_SECRET_MAX);
	return r;
}

/* Reads an API key file written by apikey-create. KY_ERR_MALFORMED with a reason. The
 * secret is ky_secret_alloc'd (APIKEY_SECRET_MAX bytes). */
static int apikey_file_read(const char *path, struct apikey_ctx *k, char **secret, char *why,
                            size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	json_t *j = NULL;
	const char *name, *id, *role, *key;

	*secret = NULL;
	if ((r = ky_file_read(path, APIKEY_FILE_MAX, &b)) != 0) {
		snprintf(why, whylen, "%s",
		         r == KY_ERR_TOO_LARGE ? "file too large" : strerror(errno));
		return r;
	}
	r = KY_ERR_MALFORMED;
	j = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, NULL);
	name = json_string_value(json_object_get(j, "name"));
	id = json_string_value(json_object_get(j, "id"));
	role = json_string_value(json_object_get(j, "role"));
	key = json_string_value(json_object_get(j, "apikey"));
	if (name == NULL || id == NULL || role == NULL || key == NULL) {
		snprintf(why, whylen, "not a kyok API key file (JSON with name, id, role, apikey)");
		goto out;
	}
	if (strlen(name) > KY_APIKEY_NAME_MAX || strlen(id) == 0 || strlen(id) > KY_ID_MAX ||
	    !ky_role_valid(role) || strlen(key) <= strlen(APIKEY_PREFIX) ||
	    strlen(key) >= APIKEY_SECRET_MAX) {
		snprintf(why, whylen, "not a valid kyok API key file");
		goto out;
	}
	snprintf(k->name, sizeof(k->name), "%s", name);
	snprintf(k->id, sizeof(k->id), "%s", id);
	snprintf(k->role, sizeof(k->role), "%s", role);
	if ((*secret = ky_secret_alloc(APIKEY_SECRET_MAX)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	memcpy(*secret, key, strlen(key) + 1);
	r = 0;
out:
	if (j != NULL) {
		/* the secret string inside the JSON tree */
		json_t *v = json_object_get(j, "apikey");
		if (json_is_string(v))
			OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
	}
	json_decref(j);
	ky_buf_free(&b);
	return r;
}

/* Writes the API key file (0600; the directory 0700). */
static int apikey_file_write(const char *path, const struct apikey_ctx *k, const char *secret)
{
	int r = KY_ERR_INTERNAL;
	json_t *j = NULL;
	char *text = NULL;
	size_t n = 0;

	j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", k->name, "id", k->id, "role", k->role,
	              "apikey", secret, "created_by", "kyok tke apikey-create");
	if (j == NULL || (text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	n = strlen(text);
	if (n + 1 < n) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	text[n] = '\n'; /* json_dumps left a NUL there: written with the newline */
	r = ky_file_write_atomic(path, text, n + 1, 0600);
	text[n] = '\0';
out:
	if (j != NULL) {
		json_t *v = json_object_get(j, "apikey");
		if (json_is_string(v))
			OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
	}
	json_decref(j);
	if (text != NULL) {
		OPENSSL_cleanse(text, strlen(text));
		free(text);
	}
	return r;
}

static int apikey_create_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	const struct apikey_ctx *k = ctx;

	(void)run;
	if (k->present) {
		snprintf(u->detail, sizeof(u->detail), "API key %s is already in key storage",
		         k->id);
		u->result = TKE_UNCHANGED;
	}
	return 0;
}

static int apikey_create_fill(void *ctx, struct tke_run *run, struct tke_unit *u,
                              struct ky_command *c)
{
	const struct apikey_ctx *k = ctx;

	(void)run;
	(void)u;
	snprintf(c->apikey_id, sizeof(c->apikey_id), "%s", k->id);
	snprintf(c->apikey_name, sizeof(c->apikey_name), "%s", k->name);
	snprintf(c->role, sizeof(c->role), "%s", k->role);
	memcpy(c->hash, k->hash, sizeof(c->hash));
	return 0;
}

static int apikey_revoke_fill(void *ctx, struct tke_run *run, struct tke_unit *u,
                              struct ky_command *c)
{
	const struct apikey_ctx *k = ctx;

	(void)run;
	(void)u;
	snprintf(c->apikey_id, sizeof(c->apikey_id), "%s", k->id);
	return 0;
}

/* After submitting (tke_hooks.after_submit; ctx: what the others report). The units share
 * key storage: the first unit that runs the command changes it, the others run it (their
 * transaction counters advance) and find it done. */
static void apikey_mark_unchanged(void *ctx, struct tke_run *run)
{
	const char *what = ctx;
	const struct tke_unit *first = NULL;

	for (size_t i = 0; i < run->n; i++) {
		struct tke_unit *u = &run->units[i];

		if (u->skip || u->result != TKE_CHANGED)
			continue;
		if (first == NULL) {
			first = u;
			continue;
		}
		u->result = TKE_UNCHANGED;
		snprintf(u->detail, sizeof(u->detail), "%s (through crypto unit %d)", what,
		         first->u.number);
	}
}

static bool apikey_is_revoked(const json_t *a)
{
	const json_t *v = json_object_get(a, "revoked");

	return json_is_true(v) || (json_is_integer(v) && json_integer_value(v) > 0) ||
	       (json_is_string(v) && json_string_length(v) > 0);
}

/* The API key list read through the first reachable unit of a loaded run. *list is NULL
 * when that unit does not list API keys (a unit without key storage). */
static int apikey_list_from_run(struct tke_run *run, json_t **list)
{
	int r = KY_ERR_INTERNAL;
	json_t *j = NULL;

	*list = NULL;
	for (size_t i = 0; i < run->n; i++) {
		if (run->units[i].skip || !run->units[i].reachable)
			continue;
		if ((r = unit_get(&run->inst, &run->units[i].u, "/v1/admin/apikeys", &j)) != 0)
			return r;
		if (json_is_array(json_object_get(j, "apikeys")))
			*list = json_incref(json_object_get(j, "apikeys"));
		json_decref(j);
		return 0;
	}
	return 0;
}

/* The entry of list with that id, or NULL. */
static const json_t *apikey_find(const json_t *list, const char *id)
{
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *a = json_array_get(list, i);
		const char *aid = json_string_value(json_object_get(a, "id"));
		if (aid != NULL && strcmp(aid, id) == 0)
			return a;
	}
	return NULL;
}

/* ---- apikey-create ---- */

static int apikey_default_path(const char *name, char *out, size_t outlen)
{
	char dir[600];
	struct stat st;
	int r;

	if ((r = cli_workspace_ensure()) != 0)
		return r;
	snprintf(dir, sizeof(dir), "%s/apikeys", cli_workspace());
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return cli_err(KY_ERR_IO, dir, "cannot create the directory: %s", strerror(errno));
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return cli_err(KY_ERR_IO, dir, "not a directory");
	if (snprintf(out, outlen, "%s/%s.apikey", dir, name) >= (int)outlen)
		return cli_err(KY_ERR_USAGE, dir, "path too long");
	return 0;
}

/* The units that took the command (stored it or found it stored). */
static size_t apikey_done_units(const struct tke_run *run)
{
	size_t n = 0;

	for (size_t i = 0; i < run->n; i++)
		if (!run->units[i].skip &&
		    (run->units[i].result == TKE_CHANGED || run->units[i].result == TKE_UNCHANGED ||
		     run->units[i].result == TKE_PREPARED))
			n++;
	return n;
}

int tke_apikey_create_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke apikey-create --name NAME --role ROLE[,ROLE...] [--out FILE] "
	    "[--show]\n"
	    "                              [--prepare FILE]\n"
	    "\n"
	    "Creates an API key for the key-management API ('kyok kp', the Key Protect SDKs).\n"
	    "The secret is generated here and written to a file readable by you only (default\n"
	    "<workspace>/apikeys/NAME.apikey); the crypto units receive only its SHA-256, in a\n"
	    "signed command sent to every selected unit (signature threshold), which tags the\n"
	    "row under a key kept under the master key: the units need their master key\n"
	    "first. If the command is interrupted, run it again with the same name: the key\n"
	    "in the file is sent again.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"name", OPT_NAME, CLI_ARG_REQUIRED, "NAME", "1 to 64 letters, digits, '.', '_', '-'"},
	    {"role", OPT_ROLE, CLI_ARG_REQUIRED, "ROLE[,ROLE...]",
	     "Reader, ReaderPlus, Writer, Manager or KeyPurge; several separated by commas "
	     "(Manager,KeyPurge: delete and purge)"},
	    {"out", OPT_OUT, CLI_ARG_REQUIRED, "FILE",
	     "where to write the secret (never overwritten)"},
	    {"show", OPT_SHOW, CLI_ARG_NONE, NULL,
	     "also print the secret (only when stdout is a terminal)"},
	    {"prepare", OPT_PREPARE, CLI_ARG_REQUIRED, "FILE",
	     "do not sign or submit: write the unsigned commands into the command bundle FILE "
	     "(cmd-sign, cmd-submit); the secret file is written now"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, status = 0, opt;
	const char *name = NULL, *role = NULL, *out = NULL, *prepare = NULL;
	bool show = false, created_file = false;
	char path[700], why[256], roles[KY_ROLE_MAX + 1];
	char *secret = NULL;
	struct apikey_ctx k = {0};
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_APIKEY_CREATE, apikey_create_plan, apikey_create_fill, &k};
	struct stat st;
	json_t *steps = NULL, *list = NULL;
	const json_t *found;

	while ((opt = cli_getopt(argc, argv, longopts, cli_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			tke_print_help(usage, longopts);
			return 0;
		case OPT_NAME:
			name = optarg;
			break;
		case OPT_ROLE:
			role = optarg;
			break;
		case OPT_OUT:
			out = optarg;
			break;
		case OPT_SHOW:
			show = true;
			break;
		case OPT_PREPARE:
			prepare = optarg;
			break;
		default:
			if (cli_common_opt(opt, optarg) != 0)
				return ky_err_exit(KY_ERR_USAGE);
		}
	}
	if (cli_no_operands(argc, argv) != 0)
		return ky_err_exit(KY_ERR_USAGE);
	if (name == NULL || role == NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(), "--name and --role are required");
	if (!apikey_name_ok(name))
		return cli_fail(KY_ERR_USAGE, "--name",
		                "'%s': use 1 to %d letters, digits, '.', '_' or '-' (not first)",
		                name, KY_APIKEY_NAME_MAX);
	if ((r = ky_roles_canonical(role, roles, why, sizeof(why))) != 0)
		return cli_fail(r, "--role", "%s", why);
	role = roles; /* canonical order: what the units store */
	if (show && !isatty(STDOUT_FILENO))
		return cli_fail(KY_ERR_USAGE, "--show",
		                "the secret is printed only on a terminal: read it from the file");
	if (out != NULL)
		snprintf(path, sizeof(path), "%s", out);
	else if ((r = apikey_default_path(name, path, sizeof(path))) != 0)
		return ky_err_exit(r);

	/* State of the units first: nothing is written when they cannot take the command. */
	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}

	/* What key storage holds, before any file is written. */
	if ((r = apikey_list_from_run(&run, &list)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if (lstat(path, &st) == 0) {
		/* A re-run: the same key again, if the file is ours and for this name/role. */
		if ((r = cli_check_private("API key file", path)) != 0) {
			status = ky_err_exit(r);
			goto out;
		}
		r = apikey_file_read(path, &k, &secret, why, sizeof(why));
		if (r != 0) {
			status =
			    cli_fail(KY_ERR_EXISTS, path,
			             "%s: choose another file with --out, or another name", why);
			goto out;
		}
		if (strcmp(k.name, name) != 0 || strcmp(k.role, role) != 0) {
			status =
			    cli_fail(KY_ERR_EXISTS, path,
			             "holds API key '%s' with role %s: choose another file with "
			             "--out, or another name",
			             k.name, k.role);
			goto out;
		}
		tke_note("%s already holds API key '%s' (id %s): sending that key again", path,
		         k.name, k.id);
	} else {
		snprintf(k.name, sizeof(k.name), "%s", name);
		snprintf(k.role, sizeof(k.role), "%s", role);
		if ((r = ky_uuid_new(k.id)) != 0 || (r = apikey_secret_new(&secret)) != 0) {
			status = cli_fail(r, NULL, "cannot generate the API key");
			goto out;
		}
		if ((r = apikey_file_write(path, &k, secret)) != 0) {
			status =
			    cli_fail(r, path, "cannot write the API key file: %s", strerror(errno));
			goto out;
		}
		created_file = true;
	}
	if ((r = ky_apikey_hash(secret, k.hash)) != 0) {
		status = cli_fail(r, NULL, "cannot hash the API key");
		goto out;
	}
	/* What the listing says of a row only counts when the unit verified it. */
	if ((found = apikey_find(list, k.id)) != NULL &&
	    !json_is_true(json_object_get(found, "verified"))) {
		tke_note("the row of API key %s in key storage does not verify: sending the key "
		         "again",
		         k.id);
		found = NULL;
	}
	if (found != NULL) {
		const char *role_now = json_string_value(json_object_get(found, "role"));
		if (role_now == NULL || strcmp(role_now, k.role) != 0) {
			status =
			    cli_fail(KY_ERR_EXISTS, path,
			             "key storage holds API key %s with role %s, this file says "
			             "%s: not sent",
			             k.id, role_now != NULL ? role_now : "?", k.role);
			goto out;
		}
		if (apikey_is_revoked(found)) {
			status =
			    cli_fail(KY_ERR_APIKEY_INVALID, path,
			             "API key %s in this file was revoked: it cannot be created "
			             "again; remove the file, or make another key (--name, --out)",
			             k.id);
			goto out;
		}
		k.present = true;
	}
	if (cli_g.json && (steps = json_array()) == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	status = tke_run_command(&run, &op,
	                         &(struct tke_hooks){.prepare = prepare,
	                                             .after_submit = apikey_mark_unchanged,
	                                             .ctx = "API key already in key storage",
	                                             .json_steps = steps});
	if (apikey_done_units(&run) == 0) {
		if (created_file && unlink(path) == 0)
			tke_note("no crypto unit took the API key: %s removed", path);
		goto out;
	}
	if (cli_g.json) {
		json_t *units = json_object_get(json_array_get(steps, 0), "units");
		cli_print_json(json_pack("{s:s, s:s, s:s, s:s, s:O*}", "id", k.id, "name", k.name,
		                         "role", k.role, "file", path, "units", units));
	} else {
		printf("API key '%s' (id %s), role %s: secret in %s\n", k.name, k.id, k.role, path);
		if (show)
			printf("secret: %s\n", secret);
		if (prepare != NULL)
			printf("the key works once the commands in %s are signed and submitted\n",
			       prepare);
	}
out:
	json_decref(list);
	json_decref(steps);
	ky_secret_free(secret, APIKEY_SECRET_MAX);
	OPENSSL_cleanse(&k, sizeof(k));
	tke_run_release(&run);
	return status;
}

/* ---- apikeys ---- */

/* A time field: epoch seconds or already a string; 0, null or false -> "-". */
static void apikey_time_text(const json_t *v, char *out, size_t outlen)
{
	if (json_is_string(v)) {
		snprintf(out, outlen, "%s", json_string_value(v));
	} else if (json_is_integer(v) && json_integer_value(v) > 0) {
		time_t t = (time_t)json_integer_value(v);
		struct tm tm;
		if (gmtime_r(&t, &tm) == NULL ||
		    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
			snprintf(out, outlen, "%lld", (long long)json_integer_value(v));
	} else if (json_is_true(v)) {
		snprintf(out, outlen, "yes");
	} else {
		snprintf(out, outlen, "-");
	}
}

/* GET /v1/admin/apikeys on the first selected unit that answers: {"apikeys": [...]}. */
static int apikey_list_fetch(struct cli_instance *inst, json_t **list, int *unit_number)
{
	int r = KY_ERR_INTERNAL;
	struct cli_unit *sel = NULL;
	size_t n = 0;
	json_t *j = NULL;

	*list = NULL;
	if ((r = cli_instance_load(inst)) != 0)
		return r;
	if ((r = cli_selected_units(inst, &sel, &n)) != 0)
		return r;
	if (n == 0) {
		free(sel);
		return cli_err(KY_ERR_NO_UNITS, NULL, NULL);
	}
	r = KY_ERR_UNREACHABLE;
	for (size_t i = 0; i < n; i++) {
		r = unit_get(inst, &sel[i], "/v1/admin/apikeys", &j);
		if (r == KY_ERR_UNREACHABLE || r == KY_ERR_INSTANCE_DOWN)
			continue;
		if (r != 0)
			break;
		if (!json_is_array(json_object_get(j, "apikeys"))) {
			char subject[128];
			snprintf(subject, sizeof(subject), "crypto unit %d (%s)", sel[i].number,
			         sel[i].zone);
			r = cli_err(KY_ERR_BAD_REPLY, subject, "API key list without 'apikeys'");
			break;
		}
		*list = json_incref(json_object_get(j, "apikeys"));
		if (unit_number != NULL)
			*unit_number = sel[i].number;
		r = 0;
		break;
	}
	if (r == KY_ERR_UNREACHABLE)
		tke_note("no selected crypto unit answers");
	json_decref(j);
	free(sel);
	return r;
}

int tke_apikeys_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke apikeys [--output json]\n\n"
	    "Lists the API keys of the instance's key storage (read from the first selected\n"
	    "crypto unit that answers): id, name, role, creation date, revocation, and whether\n"
	    "the unit verified the row's integrity tag (ok; ALTERED: changed in key storage\n"
	    "by someone without the master key, refused by every unit; unknown: the unit holds\n"
	    "no master key). Secrets are never stored, only their hash, which is not "
	    "shown.\n";
	static const char *const hdr[] = {"ID", "NAME", "ROLE", "CREATED", "REVOKED", "INTEGRITY"};
	struct cli_instance inst;
	json_t *list = NULL;
	struct cli_table *t = NULL;
	size_t altered = 0;
	int r, status = 0;

	if ((r = cli_opts_common_only(argc, argv, usage)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = apikey_list_fetch(&inst, &list, NULL)) != 0)
		return ky_err_exit(r);
	if (cli_g.json) {
		cli_print_json(json_pack("{s:s, s:O}", "instance", inst.id, "apikeys", list));
		goto out;
	}
	if ((t = cli_table_new(6, hdr)) == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *a = json_array_get(list, i);
		const char *id = json_string_value(json_object_get(a, "id"));
		const char *name = json_string_value(json_object_get(a, "name"));
		const char *role = json_string_value(json_object_get(a, "role"));
		const json_t *v = json_object_get(a, "verified");
		char created[64], revoked[64];
		const char *cells[6];

		apikey_time_text(json_object_get(a, "created"), created, sizeof(created));
		apikey_time_text(json_object_get(a, "revoked"), revoked, sizeof(revoked));
		cells[0] = id != NULL ? id : "?";
		cells[1] = name != NULL ? name : "";
		cells[2] = role != NULL ? role : "?";
		cells[3] = created;
		cells[4] = revoked;
		cells[5] = json_is_true(v) ? "ok" : json_is_false(v) ? "ALTERED" : "unknown";
		altered += json_is_false(v) ? 1 : 0;
		if (cli_table_add(t, cells) != 0) {
			status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
			goto out;
		}
	}
	cli_table_print(t, stdout);
	printf("%zu API key%s\n", json_array_size(list), json_array_size(list) == 1 ? "" : "s");
	if (altered > 0)
		printf(
		    "%zu API key%s ALTERED in key storage: refused by every unit, and never "
		    "written again; make new ones under other names with kyok tke apikey-create, "
		    "and revoke these with kyok tke apikey-revoke\n",
		    altered, altered == 1 ? " was" : "s were");
out:
	cli_table_free(t);
	json_decref(list);
	return status;
}

/* ---- apikey-revoke ---- */

struct apikey_revoke_ctx {
	struct apikey_ctx k;
	bool revoked; /* already revoked in key storage */
};

static int apikey_revoke_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	const struct apikey_revoke_ctx *c = ctx;

	(void)run;
	if (c->revoked) {
		snprintf(u->detail, sizeof(u->detail), "API key %s is already revoked", c->k.id);
		u->result = TKE_UNCHANGED;
	}
	return 0;
}

int tke_apikey_revoke_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke apikey-revoke --id ID [--prepare FILE]\n"
	    "\n"
	    "Revokes an API key on every selected crypto unit: tokens issued for it are\n"
	    "refused within seconds, and it cannot get new ones. Asks for confirmation (--yes\n"
	    "answers it). 'kyok tke apikeys' lists the ids. Needs one administrator\n"
	    "signature; every selected signature key signs, each asking its password.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"id", OPT_ID, CLI_ARG_REQUIRED, "ID", "the API key's id"},
	    {"prepare", OPT_PREPARE, CLI_ARG_REQUIRED, "FILE",
	     "do not sign or submit: write the unsigned commands into the command bundle FILE "
	     "(cmd-sign, cmd-submit)"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, status = 0, opt;
	const char *id = NULL, *prepare = NULL, *name = NULL;
	struct apikey_revoke_ctx c = {0};
	struct tke_run run = {0};
	struct tke_op op = {KY_OP_APIKEY_REVOKE, apikey_revoke_plan, apikey_revoke_fill, &c};
	json_t *list = NULL;
	char question[256];

	while ((opt = cli_getopt(argc, argv, longopts, cli_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			tke_print_help(usage, longopts);
			return 0;
		case OPT_ID:
			id = optarg;
			break;
		case OPT_PREPARE:
			prepare = optarg;
			break;
		default:
			if (cli_common_opt(opt, optarg) != 0)
				return ky_err_exit(KY_ERR_USAGE);
		}
	}
	if (cli_no_operands(argc, argv) != 0)
		return ky_err_exit(KY_ERR_USAGE);
	if (id == NULL || id[0] == '\0' || strlen(id) > KY_ID_MAX)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "--id ID is required: 'kyok tke apikeys' lists them");
	snprintf(c.k.id, sizeof(c.k.id), "%s", id);

	if ((r = tke_run_load(&run)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	/* Is there such a key, and is it revoked already? */
	if ((r = apikey_list_from_run(&run, &list)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if (list != NULL) {
		const json_t *a = apikey_find(list, id);
		if (a == NULL) {
			status =
			    cli_fail(KY_ERR_NOT_FOUND, "API key",
			             "no API key with id '%s': 'kyok tke apikeys' lists them", id);
			goto out;
		}
		/* Only a verified row is known to be revoked. */
		c.revoked = apikey_is_revoked(a) && json_is_true(json_object_get(a, "verified"));
		name = json_string_value(json_object_get(a, "name"));
		if (name != NULL && name[0] == '\0')
			name = NULL;
	}
	snprintf(question, sizeof(question),
	         "revoke API key %s%s%s%s? applications using it lose access", id,
	         name != NULL ? " ('" : "", name != NULL ? name : "", name != NULL ? "')" : "");
	status = tke_run_command(&run, &op,
	                         &(struct tke_hooks){.prepare = prepare,
	                                             .question = c.revoked ? NULL : question,
	                                             .after_submit = apikey_mark_unchanged,
	                                             .ctx = "API key already revoked"});
out:
	json_decref(list);
	tke_run_release(&run);
	return status;
}
