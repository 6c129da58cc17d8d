/* The manifest of a key storage backup (cli/backup_manifest.c), which kyok backup writes
 * beside the copy and kyok restore checks it against (docs/formats.md, section 12). */
#ifndef KYOK_CLI_BACKUP_H
#define KYOK_CLI_BACKUP_H

#include <stdbool.h>
#include <stddef.h>

#include "kyok/common.h"

#define BACKUP_FORMAT  "kyok-backup-manifest-v1"
#define BACKUP_MAX_VPS 16 /* master keys whose records one storage may hold */
#define BACKUP_VP_HEX  (2 * KY_VP_LEN)

/* What kyok restore needs of a manifest. */
struct backup_manifest {
	char instance[KY_ID_MAX + 1];
	char created[32];
	char sha256[65];
	long long keys;
	size_t nvps;
	struct {
		char vp[BACKUP_VP_HEX + 1];
		long long records;
		size_t nparts;
		char parts[KY_MAX_PARTS][BACKUP_VP_HEX + 1];
	} vps[BACKUP_MAX_VPS];
	bool has_digest;
	long long gen;
};

/* Pure parser of a manifest's text: every field kyok restore relies on checked (format,
 * instance, created, sha256 as 64 lowercase hex digits, keys, master_keys with their VPs,
 * counts and part VPs, storage_digest an object with a generation or null). KY_ERR_MALFORMED
 * with a reason in why. */
int backup_manifest_parse(const char *text, size_t n, struct backup_manifest *m, char *why,
                          size_t whylen) KY_WUR;

#endif
