/* The manifest of a key storage backup (cli/backup_manifest.c), which kyok backup writes
 * beside the copy and kyok restore checks it against (docs/formats.md, section 12); and what
 * kyok restore (cli/restore.c) uses of kyok backup (cli/backup.c). */
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

/* ---- what cli/backup.c gives cli/restore.c ---- */

#define BK_MANIFEST_SUFFIX ".manifest.json"
#define BK_MANIFEST_MAX    (64 * 1024)

struct cli_instance;

struct bk_vp {
	char vp[BACKUP_VP_HEX + 1];
	long long keys, secrets;
};

/* What a key storage file holds (bk_read_contents). */
struct bk_contents {
	char instance[KY_ID_MAX + 1];
	char schema[16];
	long long keys, api_keys;
	size_t nvps;
	struct bk_vp vps[BACKUP_MAX_VPS];
	bool has_digest;
	long long gen, epoch, digest_records;
	char integrity_vp[BACKUP_VP_HEX + 1]; /* the VP of the storage integrity key, "" if none */
};

/* SHA-256 of a file, as hex. Not printed. */
int bk_file_sha256(const char *path, char hex[2 * 32 + 1]) KY_WUR;
/* fsync of a file, or of a directory (dir true). */
int bk_fsync_path(const char *path, bool dir) KY_WUR;
/* The directory part of path ("." when none). */
void bk_dirname(const char *path, char *out, size_t n);
bool bk_exists(const char *path);
/* The SQLite file of the instance's key storage. Prints its errors. */
int bk_store_path(const struct cli_instance *inst, char *out, size_t n) KY_WUR;
/* What a key storage file holds (opened read-only); check: its integrity check too. Prints its
 * errors. */
int bk_read_contents(const char *path, bool check, struct bk_contents *c) KY_WUR;

#endif
