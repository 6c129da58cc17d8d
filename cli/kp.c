/* kyok kp: the key-management API client, for applications' operators and scripts. Every
 * command talks to the instance's crypto units over the Key Protect v2 API with a token
 * for an API key ('kyok tke apikey-create' makes them).
 *
 * Each command has two spellings: kyok's ("key-create", "wrap") and ibmcloud kp's ("key
 * create", "key wrap"), so that people used to 'ibmcloud kp' keep their habits. The table
 * below is the only list of them: parsing, 'kyok kp --help' and "did you mean" read it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/kp_client.h"
#include "cli/kp_verbs.h"

static const struct kp_verb kp_verbs[] = {
    /* keys (kp_keys.c) */
    {"keys", "keys", kp_keys_main, "list keys (by state, type, range)"},
    {"key-create", "key create", kp_key_create_main, "create a root key, or a standard key"},
    {"key-show", "key show", kp_key_show_main, "show a key's metadata (or a standard key)"},
    {"key-versions", "key versions", kp_key_versions_main, "list the versions of a root key"},
    {"key-rotate", "key rotate", kp_key_rotate_main, "rotate a root key: a new version"},
    {"key-disable", "key disable", kp_key_disable_main, "suspend a key until enabled"},
    {"key-enable", "key enable", kp_key_enable_main, "enable a suspended key"},
    {"key-schedule-delete", "key schedule-delete", kp_key_schedule_delete_main,
     "authorise a dual-authorization deletion"},
    {"key-cancel-delete", "key cancel-delete", kp_key_cancel_delete_main,
     "cancel a scheduled deletion"},
    {"key-delete", "key delete", kp_key_delete_main, "delete a key: restorable for 30 days"},
    {"key-restore", "key restore", kp_key_restore_main, "restore a deleted key"},
    {"key-purge", "key purge", kp_key_purge_main, "remove a deleted key for good"},
    {"key-sync", "key sync", kp_key_sync_main, "synchronize a key's associated resources"},
    /* envelope encryption (kp_wrap.c) */
    {"wrap", "key wrap", kp_wrap_main, "wrap a data key with a root key (or make one)"},
    {"unwrap", "key unwrap", kp_unwrap_main, "unwrap a wrapped data key"},
    {"rewrap", "key rewrap", kp_rewrap_main, "re-wrap with the newest root key version"},
    /* policies (kp_policies.c) */
    {"policies", "key policies", kp_policies_main, "show or set a key's policies"},
    {"key-policy-update", "key policy-update", kp_key_policy_update_main,
     "set a key's rotation or dual-auth-delete policy"},
    {"instance-policies", "instance policies", kp_instance_policies_main,
     "show or set the instance's policies"},
    {"instance-policy-update", "instance policy-update", kp_instance_policy_update_main,
     "set an instance policy"},
    /* key rings, aliases, import tokens, registrations (kp_rings.c): units may lack them */
    {"key-rings", "key-rings", kp_key_rings_main, "list key rings"},
    {"key-ring-create", "key-ring create", kp_key_ring_create_main, "create a key ring"},
    {"key-ring-delete", "key-ring delete", kp_key_ring_delete_main, "delete a key ring"},
    {"key-alias-create", "key alias-create", kp_key_alias_create_main, "give a key an alias"},
    {"key-alias-delete", "key alias-delete", kp_key_alias_delete_main, "remove a key's alias"},
    {"key-update", "key update", kp_key_update_main, "move a key to another key ring"},
    {"import-token-create", "import-token create", kp_import_token_create_main,
     "create the import token"},
    {"import-token-show", "import-token show", kp_import_token_show_main, "show the import token"},
    /* secure import's client side, on this host (kp_import.c) */
    {"import-token-key-encrypt", "import-token key-encrypt", kp_import_token_key_encrypt_main,
     "encrypt key material to the import token"},
    {"import-token-nonce-encrypt", "import-token nonce-encrypt", kp_import_token_nonce_encrypt_main,
     "encrypt the import token's nonce"},
    {"registrations", "registrations", kp_registrations_main,
     "list registrations (of one key: -k)"},
    {NULL, NULL, NULL, NULL},
};

/* Runs v under the name it was given with args[0..nargs) after it, as cli_dispatch runs a
 * command (its name in messages, getopt reset). */
static int kp_run(const struct kp_verb *v, const char *name, int nargs, char **args)
{
	const struct cli_cmd one[2] = {{name, v->fn, v->help}, {NULL, NULL, NULL}};
	char **av = calloc((size_t)nargs + 3, sizeof(*av));
	int status;

	if (av == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	av[0] = (char *)"kp";
	av[1] = (char *)name;
	if (nargs > 0)
		memcpy(av + 2, args, (size_t)nargs * sizeof(*av));
	status = cli_dispatch("kyok kp", one, nargs + 2, av);
	free(av);
	return status;
}

/* The spelling the user typed: the flat name or the words. */
static const char *kp_typed_name(const struct kp_verb *v, int used, char *const *argv)
{
	return used == 1 && strcmp(argv[0], v->flat) == 0 ? v->flat : v->words;
}

static bool kp_is_help(const char *s)
{
	return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0;
}

/* An unknown command: says so, with the nearest one when there is one. */
static int kp_unknown(int argc, char **argv)
{
	char hint[2 * KP_VERB_WORD_MAX + 2];
	bool group = argc >= 2 && argv[1][0] != '-' && kp_verb_is_group(kp_verbs, argv[0]);
	const char *see = group ? argv[0] : "";

	if (kp_verb_suggest(kp_verbs, argc, argv, hint, sizeof(hint)))
		return cli_fail(KY_ERR_USAGE, "kyok kp",
		                "unknown command '%.64s%s%.64s': did you mean 'kyok kp %s'?",
		                argv[0], group ? " " : "", group ? argv[1] : "", hint);
	return cli_fail(KY_ERR_USAGE, "kyok kp",
	                "unknown command '%.64s%s%.64s': see 'kyok kp%s%s --help'", argv[0],
	                group ? " " : "", group ? argv[1] : "", group ? " " : "", see);
}

/* argv[0..argc): the arguments after 'kyok kp'. */
static int kp_dispatch(int argc, char **argv)
{
	const struct kp_verb *v;
	int used = 0;

	if (argc < 1) {
		kp_verbs_usage(stderr, kp_verbs, NULL);
		return KY_EXIT_USAGE;
	}
	if (kp_is_help(argv[0]) || (strcmp(argv[0], "help") == 0 && argc == 1)) {
		kp_verbs_usage(stdout, kp_verbs, NULL);
		return 0;
	}
	if (strcmp(argv[0], "help") == 0) {
		char help[] = "--help";
		char *hargv[1] = {help};
		if ((v = kp_verb_find(kp_verbs, argc - 1, argv + 1, &used)) != NULL)
			return kp_run(v, kp_typed_name(v, used, argv + 1), 1, hargv);
		if (argc == 2 && kp_verb_is_group(kp_verbs, argv[1])) {
			kp_verbs_usage(stdout, kp_verbs, argv[1]);
			return 0;
		}
		return kp_unknown(argc - 1, argv + 1);
	}
	if ((v = kp_verb_find(kp_verbs, argc, argv, &used)) != NULL)
		return kp_run(v, kp_typed_name(v, used, argv), argc - used, argv + used);
	if (kp_verb_is_group(kp_verbs, argv[0]) && (argc == 1 || argv[1][0] == '-')) {
		if (argc >= 2 && kp_is_help(argv[1])) {
			kp_verbs_usage(stdout, kp_verbs, argv[0]);
			return 0;
		}
		kp_verbs_usage(stderr, kp_verbs, argv[0]);
		return KY_EXIT_USAGE;
	}
	return kp_unknown(argc, argv);
}

int kp_main(int argc, char **argv)
{
	int status = kp_dispatch(argc - 1, argv + 1);

	kp_close();
	return status;
}
