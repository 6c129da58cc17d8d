/* kyok kp: the key-management API client, for applications' operators and scripts. Every
 * command talks to the instance's crypto units over the Key Protect v2 API with a token
 * for an API key ('kyok tke apikey-create' makes them). */
#include <stdio.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/kp_client.h"

static const struct cli_cmd kp_cmds[] = {
    /* keys (kp_keys.c) */
    {"keys", kp_keys_main, "list keys (--state, --extractable, --limit, --offset)"},
    {"key-create", kp_key_create_main, "create a root key, or a standard key (--standard)"},
    {"key-show", kp_key_show_main, "show a key's metadata (--show-payload: standard key)"},
    {"key-versions", kp_key_versions_main, "list the versions of a root key"},
    {"key-rotate", kp_key_rotate_main, "rotate a root key: new version for new wraps"},
    {"key-disable", kp_key_disable_main, "suspend a key: no wrap or unwrap until enabled"},
    {"key-enable", kp_key_enable_main, "enable a suspended key"},
    {"key-schedule-delete", kp_key_schedule_delete_main,
     "authorise deletion of a key with dual authorization (first of two users)"},
    {"key-cancel-delete", kp_key_cancel_delete_main, "cancel a scheduled deletion"},
    {"key-delete", kp_key_delete_main, "delete (destroy) a key: restorable for 30 days"},
    {"key-restore", kp_key_restore_main, "restore a deleted key"},
    {"key-purge", kp_key_purge_main, "remove a deleted key for good (KeyPurge role)"},
    /* envelope encryption (kp_wrap.c) */
    {"wrap", kp_wrap_main, "wrap a data key with a root key (or make a new data key)"},
    {"unwrap", kp_unwrap_main, "unwrap a wrapped data key"},
    {"rewrap", kp_rewrap_main, "re-wrap a wrapped data key with the newest root key version"},
    /* policies (kp_policies.c) */
    {"policies", kp_policies_main, "show or set a key's rotation and dual-authorization policies"},
    {"instance-policies", kp_instance_policies_main, "show or set the instance's policies"},
    {NULL, NULL, NULL},
};

int kp_main(int argc, char **argv)
{
	int status = cli_dispatch("kyok kp", kp_cmds, argc, argv);

	kp_close();
	return status;
}
