/* Entry points of every kyok command: main.c and tke.c list them in their tables. */
#ifndef KYOK_CLI_CMDS_H
#define KYOK_CLI_CMDS_H

/* kyok <cmd> */
int up_main(int argc, char **argv);
int down_main(int argc, char **argv);
int unit_add_main(int argc, char **argv);
int host_main(int argc, char **argv);
int status_main(int argc, char **argv);
int tke_main(int argc, char **argv);
int scup_main(int argc, char **argv); /* scup.c: kyok scup <cmd>, its table there */
int kp_main(int argc, char **argv);
int audit_main(int argc, char **argv);
int backup_main(int argc, char **argv);  /* backup.c */
int restore_main(int argc, char **argv); /* restore.c */

/* kyok tke <cmd>: tke_units.c */
int tke_cryptounits_main(int argc, char **argv);
int tke_cryptounit_add_main(int argc, char **argv);
int tke_cryptounit_rm_main(int argc, char **argv);
int tke_cryptounit_admins_main(int argc, char **argv);
int tke_cryptounit_thrhlds_main(int argc, char **argv);
int tke_cryptounit_mk_main(int argc, char **argv);
int tke_cryptounit_compare_main(int argc, char **argv);
/* tke_sigkeys.c */
int tke_sigkeys_main(int argc, char **argv);
int tke_sigkey_add_main(int argc, char **argv);
int tke_card_copy_main(int argc, char **argv);
int tke_card_keep_main(int argc, char **argv);
int tke_sigkey_sel_main(int argc, char **argv);
int tke_sigkey_rm_main(int argc, char **argv);
/* tke_mks.c */
int tke_mks_main(int argc, char **argv);
int tke_mk_add_main(int argc, char **argv);
int tke_mk_rm_main(int argc, char **argv);
/* tke_admin.c */
int tke_admin_add_main(int argc, char **argv);
int tke_admin_rm_main(int argc, char **argv);
int tke_thrhld_set_main(int argc, char **argv);
int tke_exit_impr_main(int argc, char **argv);
int tke_zeroize_main(int argc, char **argv);
/* tke_mk.c */
int tke_mk_load_main(int argc, char **argv);
int tke_mk_commit_main(int argc, char **argv);
int tke_mk_setimm_main(int argc, char **argv);
int tke_mk_clrnew_main(int argc, char **argv);
int tke_storage_accept_main(int argc, char **argv);
int tke_mk_clrcur_main(int argc, char **argv);
/* tke_signing.c: commands prepared on one workstation, signed on others */
int tke_cmd_show_main(int argc, char **argv);
int tke_cmd_sign_main(int argc, char **argv);
int tke_cmd_submit_main(int argc, char **argv);
/* tke_autoinit.c */
int tke_auto_init_main(int argc, char **argv);
int tke_auto_recover_main(int argc, char **argv);
/* tke_rotate.c */
int tke_mk_rotate_main(int argc, char **argv);
/* tke_apikey.c */
int tke_apikey_create_main(int argc, char **argv);
int tke_apikeys_main(int argc, char **argv);
int tke_apikey_revoke_main(int argc, char **argv);

/* kyok kp <cmd>: kp_keys.c */
int kp_keys_main(int argc, char **argv);
int kp_key_create_main(int argc, char **argv);
int kp_key_show_main(int argc, char **argv);
int kp_key_rotate_main(int argc, char **argv);
int kp_key_enable_main(int argc, char **argv);
int kp_key_disable_main(int argc, char **argv);
int kp_key_schedule_delete_main(int argc, char **argv);
int kp_key_cancel_delete_main(int argc, char **argv);
int kp_key_delete_main(int argc, char **argv);
int kp_key_restore_main(int argc, char **argv);
int kp_key_purge_main(int argc, char **argv);
int kp_key_versions_main(int argc, char **argv);
int kp_key_sync_main(int argc, char **argv);
/* kp_wrap.c */
int kp_wrap_main(int argc, char **argv);
int kp_unwrap_main(int argc, char **argv);
int kp_rewrap_main(int argc, char **argv);
/* kp_policies.c */
int kp_policies_main(int argc, char **argv);
int kp_instance_policies_main(int argc, char **argv);
int kp_key_policy_update_main(int argc, char **argv);
int kp_instance_policy_update_main(int argc, char **argv);
/* kp_rings.c */
int kp_key_rings_main(int argc, char **argv);
int kp_key_ring_create_main(int argc, char **argv);
int kp_key_ring_delete_main(int argc, char **argv);
int kp_key_alias_create_main(int argc, char **argv);
int kp_key_alias_delete_main(int argc, char **argv);
int kp_import_token_create_main(int argc, char **argv);
int kp_import_token_show_main(int argc, char **argv);
int kp_registrations_main(int argc, char **argv);
int kp_key_update_main(int argc, char **argv);
/* kp_import.c */
int kp_import_token_key_encrypt_main(int argc, char **argv);
int kp_import_token_nonce_encrypt_main(int argc, char **argv);

#endif
