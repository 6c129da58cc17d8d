/* kyok kp policies, instance-policies: the rotation and dual-authorization delete policies
 * of one key, and the instance's policies. Without a setting option they show; with one
 * they set it, then show the result.
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

#define KP_POLICY_CT "application/vnd.ibm.kms.policy+json"
#define KP_PATH_MAX  512

enum {
	OPT_ROTATION = 0x2001,
	OPT_DUAL_AUTH,
};

struct kp_policy_args {
	int rotation;  /* -1 unchanged, 0 off, 1..12 months */
	int dual_auth; /* -1 unchanged, 0 off, 1 on */
	/* allowedNetwork: NULL unchanged, "" disabled, else the network enabled */
	const char *network;
};

/* Pure: "off" -> 0, "1".."12" -> months. */
static int kp_rotation_parse(const char *s, int *out)
{
	char *end;
	long v;

	if (strcmp(s, "off") == 0) {
		*out = 0;
		return 0;
	}
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 12)
		return KY_ERR_USAGE;
	*out = (int)v;
	return 0;
}

/* The options of policies and instance-policies: opts holds --rotation-months and
 * --dual-auth. */
static int kp_policy_opts(int argc, char **argv, const char *usage, const struct cli_opt *opts,
                          struct kp_policy_args *p)
{
	int opt;

	p->rotation = p->dual_auth = -1;
	p->network = NULL;
	while ((opt = cli_getopt(argc, argv, opts, kp_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			kp_print_help(usage, opts);
			return -1;
		case OPT_ROTATION:
			if (kp_rotation_parse(optarg, &p->rotation) != 0)
				return cli_err(KY_ERR_USAGE, "--rotation-months",
				               "takes 1 to 12 or 'off', not '%s'", optarg);
			break;
		case OPT_DUAL_AUTH:
			if (strcmp(optarg, "on") == 0)
				p->dual_auth = 1;
			else if (strcmp(optarg, "off") == 0)
				p->dual_auth = 0;
			else
				return cli_err(KY_ERR_USAGE, "--dual-auth",
				               "takes on or off, not '%s'", optarg);
			break;
		default:
			if (kp_common_opt(opt, optarg) != 0)
				return KY_ERR_USAGE;
		}
	}
	return 0;
}

static const char *kp_onoff(const json_t *enabled)
{
	return json_is_true(enabled) ? "enabled" : "disabled";
}

/* Rows of a key policy list: each resource holds "rotation" or "dualAuthDelete". */
static int kp_key_policies_print(const struct kp_reply *rep)
{
	static const char *const hdr[] = {"POLICY", "STATE", "SETTING", "UPDATED"};
	const json_t *list = json_object_get(rep->json, "resources");
	struct cli_table *t = cli_table_new(4, hdr);
	bool rot = false, dad = false;
	int status = 0;

	if (t == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *p = json_array_get(list, i), *o;
		const char *upd = json_string_value(json_object_get(p, "lastUpdateDate"));
		char setting[64] = "";
		const char *cells[4];

		if ((o = json_object_get(p, "rotation")) != NULL) {
			const json_t *iv = json_object_get(o, "interval_month");
			const json_t *en = json_object_get(o, "enabled");
			rot = true;
			if (json_is_integer(iv) && json_integer_value(iv) > 0)
				snprintf(setting, sizeof(setting), "every %lld month%s",
				         (long long)json_integer_value(iv),
				         json_integer_value(iv) == 1 ? "" : "s");
			cells[0] = "rotation";
			cells[1] = en == NULL ? (json_is_integer(iv) ? "enabled" : "disabled")
			                      : kp_onoff(en);
		} else if ((o = json_object_get(p, "dualAuthDelete")) != NULL) {
			dad = true;
			cells[0] = "dual-auth delete";
			cells[1] = kp_onoff(json_object_get(o, "enabled"));
		} else {
			continue;
		}
		cells[2] = setting;
		cells[3] = upd != NULL ? upd : "";
		if (cli_table_add(t, cells) != 0) {
			status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
			goto out;
		}
	}
	if (!rot) {
		const char *cells[4] = {"rotation", "disabled", "", ""};
		if (cli_table_add(t, cells) != 0)
			status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
	}
	if (!dad) {
		const char *cells[4] = {"dual-auth delete", "disabled", "", ""};
		if (cli_table_add(t, cells) != 0)
			status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
	}
	if (status == 0)
		cli_table_print(t, stdout);
out:
	cli_table_free(t);
	return status;
}

/* PUT path?policy=NAME with one resource. */
static int kp_policy_put(const char *base, const char *policy, json_t *resource,
                         const char *subject)
{
	char path[KP_PATH_MAX];
	json_t *body;
	struct kp_reply rep = {0};
	int status;

	if (resource == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	body = json_pack("{s:{s:s, s:i}, s:[o]}", "metadata", "collectionType", KP_POLICY_CT,
	                 "collectionTotal", 1, "resources", resource);
	if (body == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	snprintf(path, sizeof(path), "%s?policy=%s", base, policy);
	status = kp_call("PUT", path, KP_POLICY_CT, body, NULL, subject, &rep);
	kp_reply_release(&rep);
	json_decref(body);
	return status;
}

/* When the units act on a rotation policy (unitd/scheduler.c). */
static void kp_rotation_note(void)
{
	fprintf(stderr, "note: the crypto units rotate a root key when its rotation policy is due "
	                "(checked every hour): imported keys excepted, rotate those with 'kyok kp "
	                "key-rotate ID --payload-file FILE'\n");
}

static int kp_key_policies_run(const char *id, const struct kp_policy_args *pp);

int kp_policies_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp policies ID [--rotation-months N|off] [--dual-auth on|off]\n"
	    "       kyok kp key policies ID [--rotation-months N|off] [--dual-auth on|off]\n"
	    "\n"
	    "Shows the policies of key ID: rotation (the key is rotated every N months) and\n"
	    "dual-authorization delete (two different users are needed to delete it). With an\n"
	    "option, sets that policy first. Needs the Manager role.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt opts[] = {
	    {"rotation-months", OPT_ROTATION, CLI_ARG_REQUIRED, "N|off",
	     "rotate the root key every N months (1 to 12), or never (the crypto units rotate "
	     "generated keys when it is due; imported ones need 'kyok kp key-rotate')"},
	    {"dual-auth", OPT_DUAL_AUTH, CLI_ARG_REQUIRED, "on|off",
	     "require a second user to delete the key"},
	    CLI_OPT_END};
	struct kp_policy_args p;
	int r;
	const char *id = NULL;

	if ((r = kp_policy_opts(argc, argv, usage, opts, &p)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if (kp_key_operand(argc, argv, &id) != 0)
		return KY_EXIT_USAGE;
	return kp_key_policies_run(id, &p);
}

/* Sets what p says of key id's policies, then shows them all. */
static int kp_key_policies_run(const char *id, const struct kp_policy_args *pp)
{
	struct kp_policy_args p = *pp;
	int status = 0;
	char base[KP_PATH_MAX], subject[160];
	struct kp_reply rep = {0};

	snprintf(base, sizeof(base), "/api/v2/keys/%s/policies", id);
	snprintf(subject, sizeof(subject), "key %s", id);
	if (p.rotation >= 0 &&
	    (status = kp_policy_put(
	         base, "rotation",
	         p.rotation > 0
	             ? json_pack("{s:s, s:{s:b, s:i}}", "type", KP_POLICY_CT, "rotation", "enabled",
	                         1, "interval_month", p.rotation)
	             : json_pack("{s:s, s:{s:b}}", "type", KP_POLICY_CT, "rotation", "enabled", 0),
	         subject)) != 0)
		return status;
	if (p.dual_auth >= 0 &&
	    (status = kp_policy_put(base, "dualAuthDelete",
	                            json_pack("{s:s, s:{s:b}}", "type", KP_POLICY_CT,
	                                      "dualAuthDelete", "enabled", p.dual_auth),
	                            subject)) != 0)
		return status;
	if ((status = kp_call("GET", base, NULL, NULL, NULL, subject, &rep)) != 0)
		return status;
	if (cli_g.json)
		kp_print_json(json_incref(rep.json));
	else
		status = kp_key_policies_print(&rep);
	if (p.rotation > 0)
		kp_rotation_note();
	kp_reply_release(&rep);
	return status;
}

/* Instance policies: [{"policy_type", "policy_data": {"enabled", "attributes"?}}]. */
static int kp_instance_policies_print(const struct kp_reply *rep)
{
	static const char *const hdr[] = {"POLICY", "STATE", "SETTING", "UPDATED"};
	const json_t *list = json_object_get(rep->json, "resources");
	struct cli_table *t = cli_table_new(4, hdr);
	int status = 0;

	if (t == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *p = json_array_get(list, i);
		const json_t *data = json_object_get(p, "policy_data");
		const json_t *attrs = json_object_get(data, "attributes");
		const char *type = json_string_value(json_object_get(p, "policy_type"));
		const char *upd = json_string_value(json_object_get(p, "lastUpdated"));
		char setting[256] = "";
		const char *key;
		json_t *v;
		size_t k = 0;
		const char *cells[4];

		if (upd == NULL)
			upd = json_string_value(json_object_get(p, "lastUpdateDate"));
		json_object_foreach((json_t *)attrs, key, v)
		{
			char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			if (s != NULL && k < sizeof(setting))
				k += (size_t)snprintf(setting + k, sizeof(setting) - k, "%s%s=%s",
				                      k > 0 ? ", " : "", key, s);
			free(s);
		}
		cells[0] = type != NULL ? type : "?";
		cells[1] = kp_onoff(json_object_get(data, "enabled"));
		cells[2] = setting;
		cells[3] = upd != NULL ? upd : "";
		if (cli_table_add(t, cells) != 0) {
			status = cli_fail(KY_ERR_NOMEM, NULL, NULL);
			goto out;
		}
	}
	cli_table_print(t, stdout);
out:
	cli_table_free(t);
	return status;
}

static int kp_instance_policies_run(const struct kp_policy_args *pp);

int kp_instance_policies_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp instance-policies [--rotation-months N|off] [--dual-auth on|off]\n"
	    "       kyok kp instance policies [--rotation-months N|off] [--dual-auth on|off]\n\n"
	    "Shows the policies of the instance, which apply to keys created from then on. With\n"
	    "an option, sets that policy first. Needs the Manager role.\n\n"
	    "options:\n";
	static const struct cli_opt opts[] = {
	    {"rotation-months", OPT_ROTATION, CLI_ARG_REQUIRED, "N|off",
	     "rotate new root keys every N months (1 to 12), or never (the crypto units rotate "
	     "generated keys when it is due; imported ones need 'kyok kp key-rotate')"},
	    {"dual-auth", OPT_DUAL_AUTH, CLI_ARG_REQUIRED, "on|off",
	     "require a second user to delete new keys"},
	    CLI_OPT_END};
	struct kp_policy_args p;
	int r;

	if ((r = kp_policy_opts(argc, argv, usage, opts, &p)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	return kp_instance_policies_run(&p);
}

/* Sets what p says of the instance's policies, then shows them all. */
static int kp_instance_policies_run(const struct kp_policy_args *pp)
{
	static const char base[] = "/api/v2/instance/policies";
	struct kp_policy_args p = *pp;
	int status = 0;
	struct kp_reply rep = {0};

	if (p.rotation >= 0 &&
	    (status = kp_policy_put(base, "rotation",
	                            p.rotation > 0
	                                ? json_pack("{s:s, s:{s:b, s:{s:i}}}", "policy_type",
	                                            "rotation", "policy_data", "enabled", 1,
	                                            "attributes", "interval_month", p.rotation)
	                                : json_pack("{s:s, s:{s:b}}", "policy_type", "rotation",
	                                            "policy_data", "enabled", 0),
	                            "instance policies")) != 0)
		return status;
	if (p.dual_auth >= 0 &&
	    (status = kp_policy_put(base, "dualAuthDelete",
	                            json_pack("{s:s, s:{s:b}}", "policy_type", "dualAuthDelete",
	                                      "policy_data", "enabled", p.dual_auth),
	                            "instance policies")) != 0)
		return status;
	if (p.network != NULL &&
	    (status = kp_policy_put(base, "allowedNetwork",
	                            p.network[0] != '\0'
	                                ? json_pack("{s:s, s:{s:b, s:{s:s}}}", "policy_type",
	                                            "allowedNetwork", "policy_data", "enabled", 1,
	                                            "attributes", "allowed_network", p.network)
	                                : json_pack("{s:s, s:{s:b}}", "policy_type",
	                                            "allowedNetwork", "policy_data", "enabled", 0),
	                            "instance policies")) != 0)
		return status;
	if ((status = kp_call("GET", base, NULL, NULL, NULL, "instance policies", &rep)) != 0)
		return status;
	if (cli_g.json)
		kp_print_json(json_incref(rep.json));
	else
		status = kp_instance_policies_print(&rep);
	if (p.rotation > 0)
		kp_rotation_note();
	kp_reply_release(&rep);
	return status;
}

/* ---- policy-update, in ibmcloud kp's shape ---- */

/* The options and operands of 'key policy-update' (key: TYPE ID) and 'instance
 * policy-update' (TYPE): TYPE rotation (-e/-d, -m MONTHS), dual-auth-delete (-e/-d), or, of
 * the instance, allowed-network (-e -t NETWORK | -d). Fills p; -1 after --help (printed), else
 * 0 or an error code (printed). */
/* The options of key-policy-update and instance-policy-update: opts holds -e, -d, -m, -t. */
static int kp_policy_update_opts(int argc, char **argv, const char *usage,
                                 const struct cli_opt *opts, bool key, struct kp_policy_args *p,
                                 const char **id)
{
	int opt, months = -1;
	bool enable = false, disable = false;
	const char *type, *network = NULL;

	p->rotation = p->dual_auth = -1;
	p->network = NULL;
	while ((opt = cli_getopt(argc, argv, opts, kp_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			kp_print_help(usage, opts);
			return -1;
		case 'e':
			enable = true;
			break;
		case 'd':
			disable = true;
			break;
		case 'm':
			if (kp_rotation_parse(optarg, &months) != 0 || months == 0)
				return cli_err(KY_ERR_USAGE, "-m/--monthly-interval",
				               "takes 1 to 12 (months), not '%s'", optarg);
			break;
		case 't':
			if (strcmp(optarg, "public-and-private") != 0 &&
			    strcmp(optarg, "private-only") != 0)
				return cli_err(
				    KY_ERR_USAGE, "-t/--network-type",
				    "takes public-and-private or private-only, not '%.40s'",
				    optarg);
			network = optarg;
			break;
		default:
			if (kp_common_opt(opt, optarg) != 0)
				return KY_ERR_USAGE;
		}
	}
	if (optind >= argc)
		return cli_err(
		    KY_ERR_USAGE, cli_cmd_name(),
		    key ? "give the policy: rotation or dual-auth-delete"
		        : "give the policy: rotation, dual-auth-delete or allowed-network");
	type = argv[optind++];
	if (!key && strcmp(type, "allowed-network") == 0) {
		if (cli_no_operands(argc, argv) != 0)
			return KY_ERR_USAGE;
		if (enable == disable)
			return cli_err(KY_ERR_USAGE, cli_cmd_name(),
			               "give -e/--enable or -d/--disable (one of them)");
		if (months >= 0)
			return cli_err(KY_ERR_USAGE, "-m/--monthly-interval",
			               "is for the rotation policy");
		if (enable && network == NULL)
			return cli_err(
			    KY_ERR_USAGE, cli_cmd_name(),
			    "give -t public-and-private or -t private-only: the networks "
			    "to allow");
		if (disable && network != NULL)
			return cli_err(KY_ERR_USAGE, "-t/--network-type",
			               "sets an enabled policy: leave it out with -d/--disable");
		p->network = enable ? network : "";
		return 0;
	}
	if (network != NULL)
		return cli_err(KY_ERR_USAGE, "-t/--network-type",
		               "is for the instance's allowed-network policy");
	if (strcmp(type, "rotation") != 0 && strcmp(type, "dual-auth-delete") != 0) {
		if (!key && (strcmp(type, "allowed-ip") == 0 || strcmp(type, "metrics") == 0 ||
		             strcmp(type, "key-create-import-access") == 0)) {
			return cli_err(
			    KY_ERR_KP_OPTION_NOT_OFFERED, type,
			    "ibmcloud kp has no such policy-update either: set %s with the key "
			    "API (PUT /api/v2/instance/policies, docs/api.md)",
			    type);
		}
		return cli_err(KY_ERR_USAGE, cli_cmd_name(),
		               key ? "'%.64s' is not a policy: give rotation or dual-auth-delete"
		                   : "'%.64s' is not a policy: give rotation, dual-auth-delete or "
		                     "allowed-network",
		               type);
	}
	if (key) {
		if (kp_key_operand(argc, argv, id) != 0)
			return KY_ERR_USAGE;
	} else if (cli_no_operands(argc, argv) != 0) {
		return KY_ERR_USAGE;
	}
	if (enable == disable && !(strcmp(type, "rotation") == 0 && months > 0 && !disable))
		return cli_err(KY_ERR_USAGE, cli_cmd_name(),
		               "give -e/--enable or -d/--disable (one of them)");
	if (strcmp(type, "dual-auth-delete") == 0) {
		if (months >= 0)
			return cli_err(KY_ERR_USAGE, "-m/--monthly-interval",
			               "is for the rotation policy");
		p->dual_auth = enable ? 1 : 0;
		return 0;
	}
	if (disable && months >= 0)
		return cli_err(KY_ERR_USAGE, "-m/--monthly-interval",
		               "sets an enabled rotation: leave it out with -d/--disable");
	if (!disable && months < 0)
		return cli_err(KY_ERR_USAGE, cli_cmd_name(),
		               "give -m MONTHS (1 to 12): the rotation interval to enable");
	p->rotation = disable ? 0 : months;
	return 0;
}

int kp_key_policy_update_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp key-policy-update rotation ID (-m MONTHS [-e] | -d)\n"
	    "       kyok kp key-policy-update dual-auth-delete ID (-e | -d)\n"
	    "       kyok kp key policy-update rotation|dual-auth-delete ID ...\n\n"
	    "Sets one policy of key ID, as 'kyok kp policies ID --rotation-months N|off' or\n"
	    "'--dual-auth on|off' does, then shows the key's policies. Needs the Manager role.\n\n"
	    "options:\n";
	static const struct cli_opt opts[] = {
	    {"enable", 'e', CLI_ARG_NONE, NULL, "enable the policy"},
	    {"disable", 'd', CLI_ARG_NONE, NULL, "disable the policy"},
	    {"monthly-interval", 'm', CLI_ARG_REQUIRED, "MONTHS",
	     "rotation: every MONTHS months (1 to 12); enables it (the crypto units rotate "
	     "generated keys when it is due; imported ones need 'kyok kp key-rotate')"},
	    {"network-type", 't', CLI_ARG_REQUIRED, NULL, NULL}, /* refused for a key */
	    CLI_OPT_END};
	struct kp_policy_args p;
	const char *id = NULL;
	int r;

	if ((r = kp_policy_update_opts(argc, argv, usage, opts, true, &p, &id)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	return kp_key_policies_run(id, &p);
}

int kp_instance_policy_update_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp instance-policy-update rotation (-m MONTHS [-e] | -d)\n"
	    "       kyok kp instance-policy-update dual-auth-delete (-e | -d)\n"
	    "       kyok kp instance-policy-update allowed-network (-e -t NETWORK | -d)\n"
	    "       kyok kp instance policy-update (rotation|dual-auth-delete|allowed-network) "
	    "...\n\n"
	    "Sets one policy of the instance, as 'kyok kp instance-policies --rotation-months\n"
	    "N|off' or '--dual-auth on|off' does, then shows the instance's policies. The\n"
	    "allowed-network policy is stored and listed, nothing more: a unit has one\n"
	    "endpoint, and which networks reach it is its listen address and the firewall's\n"
	    "business. allowed-ip, metrics and key-create-import-access, which ibmcloud kp does\n"
	    "not set either, are refused by name: set them with the key API (docs/api.md).\n"
	    "Needs the Manager role.\n\n"
	    "options:\n";
	static const struct cli_opt opts[] = {
	    {"enable", 'e', CLI_ARG_NONE, NULL, "enable the policy"},
	    {"disable", 'd', CLI_ARG_NONE, NULL, "disable the policy"},
	    {"monthly-interval", 'm', CLI_ARG_REQUIRED, "MONTHS",
	     "rotation: every MONTHS months (1 to 12); enables it (the crypto units rotate "
	     "generated keys when it is due; imported ones need 'kyok kp key-rotate')"},
	    {"network-type", 't', CLI_ARG_REQUIRED, "NETWORK",
	     "allowed-network: public-and-private or private-only"},
	    CLI_OPT_END};
	struct kp_policy_args p;
	int r;

	if ((r = kp_policy_update_opts(argc, argv, usage, opts, false, &p, NULL)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	return kp_instance_policies_run(&p);
}
