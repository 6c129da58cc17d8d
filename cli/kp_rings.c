/* kyok kp key-rings, key-ring-create, key-ring-delete, key-alias-create, key-alias-delete,
 * import-token-create, import-token-show, registrations: the Key Protect requests for key
 * rings, key aliases, import tokens and registrations. The instance's crypto units may not
 * offer these features: a unit without the endpoint is reported as such (kp_call_feature),
 * never as a missing key ring or key.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/kp_client.h"
#include "kyok/err.h"

#define KP_PATH_MAX 512

enum {
	OPT_ALIAS = 0x2001,
};

/* getopt over the common kp options and the ones in extra (each handled by on_opt, which
 * returns -1 for an option not its own, else 0 or an error code, printed). Returns -1 after
 * --help (printed), else 0 or an error code (printed). */
static int kp_feature_opts(int argc, char **argv, const char *usage, const struct cli_opt *longopts,
                           int (*on_opt)(int opt, const char *arg, void *ctx), void *ctx)
{
	int opt, status;

	while ((opt = cli_getopt(argc, argv, longopts, kp_common_opts)) != -1) {
		if (opt == 'h') {
			kp_print_help(usage, longopts);
			return -1;
		}
		if (on_opt != NULL && (status = on_opt(opt, optarg, ctx)) >= 0) {
			if (status != 0)
				return status;
			continue;
		}
		if (kp_common_opt(opt, optarg) != 0)
			return KY_ERR_USAGE;
	}
	return 0;
}

/* The operand at optind, checked with ok; what names it in messages. 0, or KY_ERR_USAGE
 * (printed). */
static int kp_operand(int argc, char **argv, const char *what, bool (*ok)(const char *),
                      const char *rule, const char **out)
{
	if (optind >= argc)
		return cli_err(KY_ERR_USAGE, cli_cmd_name(), "give the %s: see '%s --help'", what,
		               cli_cmd_name());
	if (!ok(argv[optind]))
		return cli_err(KY_ERR_USAGE, cli_cmd_name(), "'%.100s' is not a %s (%s)",
		               argv[optind], what, rule);
	*out = argv[optind++];
	return 0;
}

/* Prints the reply as JSON with -o json, else prints line when the reply is empty or the
 * named fields of its first resource. */
static void kp_feature_print(const struct kp_reply *rep, const char *line,
                             const char *const *fields)
{
	const json_t *r = json_array_get(json_object_get(rep->json, "resources"), 0);

	if (cli_g.json) {
		kp_print_json(rep->json != NULL ? json_incref(rep->json)
		                                : json_pack("{s:i}", "status", (int)rep->status));
		return;
	}
	printf("%s\n", line);
	for (size_t i = 0; fields != NULL && fields[i] != NULL && json_is_object(r); i++) {
		const json_t *v = json_object_get(r, fields[i]);
		if (json_is_string(v))
			printf("  %-22s %s\n", fields[i], json_string_value(v));
		else if (json_is_integer(v))
			printf("  %-22s %lld\n", fields[i], (long long)json_integer_value(v));
		else if (json_is_boolean(v))
			printf("  %-22s %s\n", fields[i], json_is_true(v) ? "true" : "false");
	}
}

/* ---- key rings ---- */

int kp_key_rings_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-rings\n"
	    "\n"
	    "Lists the instance's key rings (GET /api/v2/key_rings): ID, CREATED, CREATED BY.\n"
	    "Units that do not offer key rings are named as such.\n";
	static const struct cli_opt longopts[] = {CLI_OPT_END};
	static const char *const hdr[] = {"ID", "CREATED", "CREATED BY"};
	int status;
	struct kp_reply rep = {0};
	const json_t *list;
	struct cli_table *t = NULL;

	if ((status = kp_feature_opts(argc, argv, usage, longopts, NULL, NULL)) != 0)
		return status < 0 ? 0 : ky_err_exit(status);
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	if ((status = kp_call_feature("GET", "/api/v2/key_rings", NULL, NULL, "key rings",
	                              "key rings", &rep)) != 0)
		return status;
	list = json_object_get(rep.json, "resources");
	if (cli_g.json) {
		kp_print_json(json_incref(rep.json));
		goto out;
	}
	if ((t = cli_table_new(3, hdr)) == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *k = json_array_get(list, i);
		const char *cells[3] = {kp_json_str(k, "id"), kp_json_str(k, "creationDate"),
		                        kp_json_str(k, "createdBy")};
		if (cli_table_add(t, cells) != 0) {
			status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
			goto out;
		}
	}
	cli_table_print(t, stdout);
out:
	cli_table_free(t);
	kp_reply_release(&rep);
	return status;
}

static int kp_force_opt(int opt, const char *arg, void *ctx)
{
	(void)arg;
	if (opt != 'f')
		return -1;
	*(bool *)ctx = true;
	return 0;
}

/* What key-ring-create, -delete and key-alias-create, -delete end with: POST (create) or
 * DELETE path, then "<subject><sep>created" (or "deleted"). Errors printed (exit status). */
static int kp_feature_change(bool create, const char *path, const char *subject,
                             const char *feature, const char *sep)
{
	int status;
	char done[256];
	struct kp_reply rep = {0};

	if ((status = kp_call_feature(create ? "POST" : "DELETE", path, NULL, NULL, subject,
	                              feature, &rep)) != 0)
		return status;
	snprintf(done, sizeof(done), "%s%s%s", subject, sep, create ? "created" : "deleted");
	kp_feature_print(&rep, done, NULL);
	kp_reply_release(&rep);
	return 0;
}

/* key-ring-create and key-ring-delete. */
static int kp_key_ring_change(int argc, char **argv, const char *usage, bool create)
{
	static const struct cli_opt delete_opts[] = {
	    {"force", 'f', CLI_ARG_NONE, NULL,
	     "delete it even when it holds deleted keys (force=true)"},
	    CLI_OPT_END};
	int status;
	bool force = false;
	const char *id = NULL;
	char path[KP_PATH_MAX], subject[160];

	if ((status = kp_feature_opts(argc, argv, usage, create ? NULL : delete_opts,
	                              create ? NULL : kp_force_opt, &force)) != 0)
		return status < 0 ? 0 : ky_err_exit(status);
	if ((status = kp_operand(argc, argv, "key ring ID", kp_ring_id_ok,
	                         "2 to 100 letters, digits, '-'", &id)) != 0)
		return ky_err_exit(status);
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	snprintf(path, sizeof(path), "/api/v2/key_rings/%s%s", id, force ? "?force=true" : "");
	snprintf(subject, sizeof(subject), "key ring %s", id);
	return kp_feature_change(create, path, subject, "key rings", ": ");
}

int kp_key_ring_create_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-ring-create RING\n"
	    "       kyok kp key-ring create RING\n\n"
	    "Creates the key ring RING (POST /api/v2/key_rings/RING): 2 to 100 letters, digits,\n"
	    "'-'. Needs the Manager role. Units that do not offer key rings are named as such.\n";
	return kp_key_ring_change(argc, argv, usage, true);
}

int kp_key_ring_delete_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-ring-delete RING [--force]\n"
	    "       kyok kp key-ring delete RING [-f]\n\n"
	    "Deletes the key ring RING (DELETE /api/v2/key_rings/RING). Needs the Manager role.\n"
	    "Units that do not offer key rings are named as such.\n\n"
	    "options:\n";
	return kp_key_ring_change(argc, argv, usage, false);
}

/* ---- key aliases ---- */

static int kp_alias_opt(int opt, const char *arg, void *ctx)
{
	if (opt != 'a' && opt != OPT_ALIAS)
		return -1;
	*(const char **)ctx = arg;
	return 0;
}

/* key-alias-create and key-alias-delete: KEY_ID ALIAS, or KEY_ID -a ALIAS. */
static int kp_key_alias_change(int argc, char **argv, const char *usage, bool create)
{
	static const struct cli_opt longopts[] = {
	    {"alias", OPT_ALIAS, CLI_ARG_REQUIRED, NULL, NULL},
	    {NULL, 'a', CLI_ARG_REQUIRED, NULL, NULL},
	    CLI_OPT_END};
	int status;
	const char *id = NULL, *alias = NULL;
	char path[KP_PATH_MAX], subject[200];

	if ((status = kp_feature_opts(argc, argv, usage, longopts, kp_alias_opt, &alias)) != 0)
		return status < 0 ? 0 : ky_err_exit(status);
	if ((status = kp_operand(argc, argv, "key ID", kp_key_id_ok, "letters, digits, '-', '_'",
	                         &id)) != 0)
		return ky_err_exit(status);
	if (optind < argc && alias != NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "the alias is given twice ('%.100s' and -a '%.100s'): give it once",
		                argv[optind], alias);
	if (alias == NULL &&
	    (status = kp_operand(argc, argv, "alias", kp_key_id_ok,
	                         "2 to 90 letters, digits, '-', '_'", &alias)) != 0)
		return ky_err_exit(status);
	if (!kp_key_id_ok(alias))
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "'%.100s' is not an alias (2 to 90 letters, digits, '-', '_')",
		                alias);
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	snprintf(path, sizeof(path), "/api/v2/keys/%s/aliases/%s", id, alias);
	snprintf(subject, sizeof(subject), "key %s: alias %s", id, alias);
	return kp_feature_change(create, path, subject, "key aliases", " ");
}

int kp_key_alias_create_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-alias-create ID ALIAS\n"
	    "       kyok kp key alias-create ID (ALIAS | -a ALIAS)\n\n"
	    "Gives key ID the alias ALIAS (POST /api/v2/keys/ID/aliases/ALIAS). Needs the\n"
	    "Writer or Manager role. Units that do not offer aliases are named as such.\n";
	return kp_key_alias_change(argc, argv, usage, true);
}

int kp_key_alias_delete_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-alias-delete ID ALIAS\n"
	    "       kyok kp key alias-delete ID (ALIAS | -a ALIAS)\n\n"
	    "Removes the alias ALIAS of key ID (DELETE /api/v2/keys/ID/aliases/ALIAS). Needs\n"
	    "the Writer or Manager role. Units that do not offer aliases are named as such.\n";
	return kp_key_alias_change(argc, argv, usage, false);
}

/* ---- moving a key to another key ring ---- */

static int kp_new_ring_opt(int opt, const char *arg, void *ctx)
{
	if (opt != 'r')
		return -1;
	if (!kp_ring_id_ok(arg))
		return cli_err(KY_ERR_USAGE, "-r/--new-key-ring",
		               "'%.100s' is not a key ring ID (2 to 100 letters, digits, '-')",
		               arg);
	*(const char **)ctx = arg;
	return 0;
}

int kp_key_update_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-update ID -r RING\n"
	    "       kyok kp key update ID -r RING\n"
	    "\n"
	    "Moves key ID to the key ring RING, which must exist (PATCH /api/v2/keys/ID with\n"
	    "keyRingID). Needs the Manager role. Units that do not offer key rings are named as\n"
	    "such.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"new-key-ring", 'r', CLI_ARG_REQUIRED, "RING", "the key ring to move the key to"},
	    CLI_OPT_END};
	static const char *const fields[] = {"id", "name", "keyRingID", NULL};
	int status;
	const char *id = NULL, *ring = NULL;
	char path[KP_PATH_MAX], subject[200];
	json_t *body = NULL;
	struct kp_reply rep = {0};

	if ((status = kp_feature_opts(argc, argv, usage, longopts, kp_new_ring_opt, &ring)) != 0)
		return status < 0 ? 0 : ky_err_exit(status);
	if ((status = kp_operand(argc, argv, "key ID", kp_key_id_ok, "letters, digits, '-', '_'",
	                         &id)) != 0)
		return ky_err_exit(status);
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	if (ring == NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "give the key ring to move the key to: -r RING");
	if ((body = json_pack("{s:s}", "keyRingID", ring)) == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	snprintf(path, sizeof(path), "/api/v2/keys/%s", id);
	snprintf(subject, sizeof(subject), "key %s", id);
	if ((status = kp_call_feature("PATCH", path, "application/json", body, subject, "key rings",
	                              &rep)) != 0)
		goto out;
	snprintf(subject, sizeof(subject), "key %s: moved to key ring %s", id, ring);
	kp_feature_print(&rep, subject, fields);
	kp_reply_release(&rep);
out:
	json_decref(body);
	return status;
}

/* ---- import tokens ---- */

struct kp_token_args {
	long expiration; /* seconds, 0: the service's default */
	long retrievals; /* 0: the service's default */
};

static int kp_token_opt(int opt, const char *arg, void *ctx)
{
	struct kp_token_args *a = ctx;
	char *end;
	long v;

	if (opt != 'e' && opt != 'm')
		return -1;
	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < 1 || v > 86400)
		return cli_err(KY_ERR_USAGE, opt == 'e' ? "-e/--expiration" : "-m/--max-retrievals",
		               "takes a whole number from 1 to 86400, not '%.40s'", arg);
	if (opt == 'e')
		a->expiration = v;
	else
		a->retrievals = v;
	return 0;
}

int kp_import_token_create_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp import-token-create [--expiration SECONDS] [--max-retrievals N]\n"
	    "       kyok kp import-token create [-e SECONDS] [-m N]\n"
	    "\n"
	    "Creates the instance's import token (POST /api/v2/import_token). Needs the Manager\n"
	    "role. Units that do not offer import tokens are named as such.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"expiration", 'e', CLI_ARG_REQUIRED, "SECONDS",
	     "how long the token is valid (the service's default without it)"},
	    {"max-retrievals", 'm', CLI_ARG_REQUIRED, "N", "how often it may be retrieved"},
	    CLI_OPT_END};
	static const char *const fields[] = {"creationDate", "expirationDate",
	                                     "maxAllowedRetrievals", "remainingRetrievals", NULL};
	struct kp_token_args a = {0, 0};
	int status;
	json_t *body = NULL;
	struct kp_reply rep = {0};

	if ((status = kp_feature_opts(argc, argv, usage, longopts, kp_token_opt, &a)) != 0)
		return status < 0 ? 0 : ky_err_exit(status);
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	if ((body = json_object()) == NULL ||
	    (a.expiration > 0 &&
	     json_object_set_new(body, "expiration", json_integer(a.expiration)) != 0) ||
	    (a.retrievals > 0 &&
	     json_object_set_new(body, "maxAllowedRetrievals", json_integer(a.retrievals)) != 0)) {
		status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	if ((status = kp_call_feature("POST", "/api/v2/import_token", "application/json", body,
	                              "import token", "import tokens", &rep)) != 0)
		goto out;
	kp_feature_print(&rep, "import token: created", fields);
out:
	kp_reply_release(&rep);
	json_decref(body);
	return status;
}

int kp_import_token_show_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp import-token-show\n"
	    "       kyok kp import-token show\n"
	    "\n"
	    "Shows the instance's import token (GET /api/v2/import_token): its public key and\n"
	    "nonce, which wrap key material for import. Needs the Reader role or more. Units\n"
	    "that do not offer import tokens are named as such.\n";
	static const struct cli_opt longopts[] = {CLI_OPT_END};
	static const char *const fields[] = {"creationDate",
	                                     "expirationDate",
	                                     "maxAllowedRetrievals",
	                                     "remainingRetrievals",
	                                     "payload",
	                                     "nonce",
	                                     NULL};
	int status;
	struct kp_reply rep = {0};

	if ((status = kp_feature_opts(argc, argv, usage, longopts, NULL, NULL)) != 0)
		return status < 0 ? 0 : ky_err_exit(status);
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	if ((status = kp_call_feature("GET", "/api/v2/import_token", NULL, NULL, "import token",
	                              "import tokens", &rep)) != 0)
		return status;
	kp_feature_print(&rep, "import token", fields);
	kp_reply_release(&rep);
	return 0;
}

/* ---- registrations ---- */

struct kp_reg_args {
	const char *id;  /* -k: one key's registrations */
	const char *crn; /* -c: those of resources whose CRN matches */
};

static int kp_reg_opt(int opt, const char *arg, void *ctx)
{
	struct kp_reg_args *a = ctx;

	if (opt == 'r')
		return kp_common_opt(KP_OPT_KEY_RING, arg) != 0 ? KY_ERR_USAGE : 0;
	if (opt == 'c') {
		if (arg[0] == '\0' || strlen(arg) > 200)
			return cli_err(KY_ERR_USAGE, "-c/--crn-query",
			               "takes a CRN of 1 to 200 "
			               "characters");
		a->crn = arg;
		return 0;
	}
	if (opt != 'k')
		return -1;
	if (!kp_key_id_ok(arg))
		return cli_err(KY_ERR_USAGE, "-k/--key-id", "'%.100s' is not a key ID", arg);
	a->id = arg;
	return 0;
}

/* Percent-encodes s (all but RFC 3986's unreserved characters) at out; false when it does not
 * fit in outlen. Pure. */
static bool kp_url_encode(const char *s, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t k = 0;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		             (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~';
		if (k + (plain ? 1 : 3) >= outlen)
			return false;
		if (plain) {
			out[k++] = (char)c;
		} else {
			out[k++] = '%';
			out[k++] = hex[c >> 4];
			out[k++] = hex[c & 15];
		}
	}
	out[k] = '\0';
	return true;
}

int kp_registrations_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp registrations [-k KEY_ID] [-c CRN] [-r RING]\n"
	    "\n"
	    "Lists the registrations of key KEY_ID (GET /api/v2/keys/KEY_ID/registrations), or\n"
	    "of every key: the cloud resources a key protects. Units that do not offer\n"
	    "registrations are named as such.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"key-id", 'k', CLI_ARG_REQUIRED, "KEY_ID", "the registrations of that key only"},
	    {"crn-query", 'c', CLI_ARG_REQUIRED, "CRN",
	     "those of the resources that CRN names (Key Protect's urlEncodedResourceCRNQuery)"},
	    {NULL, 'r', CLI_ARG_REQUIRED, "RING",
	     "those of the keys in key ring RING, as --key-ring gives it"},
	    CLI_OPT_END};
	static const char *const hdr[] = {"KEY ID", "RESOURCE CRN", "PREVENTS DELETION"};
	int status;
	struct kp_reg_args a = {NULL, NULL};
	char path[KP_PATH_MAX], crn[KP_PATH_MAX / 2];
	struct kp_reply rep = {0};
	const json_t *list;
	struct cli_table *t = NULL;

	if ((status = kp_feature_opts(argc, argv, usage, longopts, kp_reg_opt, &a)) != 0)
		return status < 0 ? 0 : ky_err_exit(status);
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	if (a.crn != NULL && !kp_url_encode(a.crn, crn, sizeof(crn)))
		return cli_fail(KY_ERR_USAGE, "-c/--crn-query", "the CRN is too long");
	snprintf(path, sizeof(path), "/api/v2/keys/%s%sregistrations%s%s", a.id != NULL ? a.id : "",
	         a.id != NULL ? "/" : "", a.crn != NULL ? "?urlEncodedResourceCRNQuery=" : "",
	         a.crn != NULL ? crn : "");
	if ((status = kp_call_feature("GET", path, NULL, NULL, "registrations", "registrations",
	                              &rep)) != 0)
		return status;
	list = json_object_get(rep.json, "resources");
	if (cli_g.json) {
		kp_print_json(json_incref(rep.json));
		goto out;
	}
	if ((t = cli_table_new(3, hdr)) == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *g = json_array_get(list, i);
		const char *cells[3] = {
		    kp_json_str(g, "keyId"), kp_json_str(g, "resourceCrn"),
		    json_is_true(json_object_get(g, "preventKeyDeletion")) ? "yes" : "no"};
		if (cli_table_add(t, cells) != 0) {
			status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
			goto out;
		}
	}
	cli_table_print(t, stdout);
out:
	cli_table_free(t);
	kp_reply_release(&rep);
	return status;
}
