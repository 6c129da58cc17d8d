/* kyok tke: the key ceremony commands, named as 'ibmcloud tke' names them. */
#include <stdio.h>

#include "cli/cli.h"
#include "cli/cmds.h"

static const struct cli_cmd tke_cmds[] = {
    /* crypto units: selection and state (tke_units.c) */
    {"cryptounits", tke_cryptounits_main, "list the instance's crypto units"},
    {"cryptounit-add", tke_cryptounit_add_main, "select crypto units for later commands"},
    {"cryptounit-rm", tke_cryptounit_rm_main, "deselect crypto units"},
    {"cryptounit-admins", tke_cryptounit_admins_main, "show administrators of selected units"},
    {"cryptounit-thrhlds", tke_cryptounit_thrhlds_main, "show thresholds of selected units"},
    {"cryptounit-mk", tke_cryptounit_mk_main, "show master key registers of selected units"},
    {"cryptounit-compare", tke_cryptounit_compare_main,
     "compare the configuration of the selected units"},
    /* administrators, thresholds, zeroize (tke_admin.c) */
    {"cryptounit-admin-add", tke_admin_add_main, "install an administrator in selected units"},
    {"cryptounit-admin-rm", tke_admin_rm_main, "remove an administrator from selected units"},
    {"cryptounit-thrhld-set", tke_thrhld_set_main,
     "set signature and revocation thresholds (leaves imprint mode)"},
    {"cryptounit-exit-impr", tke_exit_impr_main, "leave imprint mode (thresholds 1/1)"},
    {"cryptounit-zeroize", tke_zeroize_main,
     "clear admins, thresholds and master keys: back to imprint mode"},
    /* master key registers (tke_mk.c) */
    {"cryptounit-mk-load", tke_mk_load_main, "load key parts into the new master key register"},
    {"cryptounit-mk-commit", tke_mk_commit_main, "commit the new master key register"},
    {"cryptounit-mk-setimm", tke_mk_setimm_main,
     "make the committed new master key current (no re-encipherment)"},
    {"cryptounit-mk-clrnew", tke_mk_clrnew_main, "clear the new master key register"},
    {"cryptounit-mk-clrcur", tke_mk_clrcur_main, "clear the current master key register"},
    {"cryptounit-mk-rotate", tke_mk_rotate_main,
     "re-encipher key storage under the committed new master key, then make it current"},
    {"storage-accept", tke_storage_accept_main,
     "accept key storage restored from a backup (older than the units have seen)"},
    /* commands prepared, signed and submitted apart (tke_signing.c) */
    {"cmd-show", tke_cmd_show_main, "show a prepared command file and its signatures"},
    {"cmd-sign", tke_cmd_sign_main, "add signatures to a prepared command file"},
    {"cmd-submit", tke_cmd_submit_main, "submit a signed command file to its crypto units"},
    /* the whole initialisation in one go (tke_autoinit.c) */
    {"auto-init", tke_auto_init_main,
     "initialise all units: admins, thresholds, one random master key"},
    /* a unit added or re-created gets what the live ones have (tke_autorecover.c) */
    {"auto-recover", tke_auto_recover_main,
     "bring new units to the live units' admins, thresholds and master key"},
    /* API keys of the key-management API (tke_apikey.c) */
    {"apikey-create", tke_apikey_create_main, "create an API key (secret written to a file)"},
    {"apikeys", tke_apikeys_main, "list the API keys of the instance"},
    {"apikey-revoke", tke_apikey_revoke_main, "revoke an API key"},
    /* workspace files (tke_sigkeys.c, tke_mks.c) */
    {"sigkeys", tke_sigkeys_main, "list signature key files"},
    {"sigkey-add", tke_sigkey_add_main, "create a signature key file"},
    {"sigkey-sel", tke_sigkey_sel_main, "select the signature keys that sign commands"},
    {"sigkey-rm", tke_sigkey_rm_main, "delete a signature key file"},
    {"card-copy", tke_card_copy_main,
     "copy the EP11 card in reader 1 to the EP11 card of its zone in reader 2"},
    {"card-keep", tke_card_keep_main,
     "keep the card in reader 1 powered: its PIN asked once per insertion"},
    {"mks", tke_mks_main, "list master key part files"},
    {"mk-add", tke_mk_add_main, "create a master key part (--random, --value or --card)"},
    {"mk-rm", tke_mk_rm_main, "delete a master key part file"},
    {NULL, NULL, NULL},
};

int tke_main(int argc, char **argv)
{
	return cli_dispatch("kyok tke", tke_cmds, argc, argv);
}
