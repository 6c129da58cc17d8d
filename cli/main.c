/* kyok: the command table. Every command a user can type is listed here, in tke.c or in scup.c. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "kyok/crypto.h"

#ifndef KYOK_VERSION
#define KYOK_VERSION "0.1.0"
#endif

#ifdef KY_SANITIZED
/* Sanitizer builds only. LeakSanitizer's scan at exit costs this command about 40 ms of CPU,
 * several times its usual run; the integration tests start it thousands of times. Its leaks
 * are looked for where ASAN_OPTIONS says detect_leaks=1 (tests/meson.build names those tests)
 * and in the unit tests that link its code; the units and every other binary keep the
 * sanitizer's default, leak checks on. Every run keeps the memory error and UB checks. */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
	return "detect_leaks=0";
}
#endif

static const struct cli_cmd kyok_cmds[] = {
    {"up", up_main, "start a local instance of crypto units (or restart its stopped units)"},
    {"unit-add", unit_add_main,
     "add a crypto unit to the local instance, or re-create a lost one (--replace N)"},
    {"host", host_main,
     "units of one instance on several hosts: invite, join-request, join-accept, join-finish"},
    {"down", down_main, "stop the local instance's crypto units (--purge deletes them)"},
    {"status", status_main, "show every crypto unit of the instance: reachable, mode, keys"},
    {"backup", backup_main, "copy key storage while the crypto units run, with a manifest"},
    {"restore", restore_main,
     "put a backup back as key storage (units stopped; accepted by 'kyok tke storage-accept')"},
    {"tke", tke_main, "key ceremony commands, as 'ibmcloud tke': 'kyok tke --help'"},
    {"scup", scup_main, "smart card utility: CA and EP11 cards, zones, PINs: 'kyok scup --help'"},
    {"kp", kp_main, "key management (Key Protect API) client: 'kyok kp --help'"},
    {"audit", audit_main, "check crypto units' audit logs: 'kyok audit verify --help'"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
	int r;

	if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
#ifdef KY_TEST_KDF
		printf(
		    "kyok %s (test build: password KDF at a sixteenth of its cost, not for use)\n",
		    KYOK_VERSION);
#else
		printf("kyok %s\n", KYOK_VERSION);
#endif
		return 0;
	}
	if ((r = cli_harden()) != 0)
		return ky_err_exit(r);
	return cli_dispatch("kyok", kyok_cmds, argc, argv);
}
