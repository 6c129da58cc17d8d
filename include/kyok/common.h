/* Shared definitions for libkyok. */
#ifndef KYOK_COMMON_H
#define KYOK_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KY_WUR __attribute__((warn_unused_result))

#define KY_MK_LEN         32 /* master key and key part: AES-256 */
#define KY_VP_LEN         32 /* verification pattern: SHA-256(0x01 || key) */
#define KY_SKI_LEN        32 /* subject key identifier: SHA-256 of the uncompressed point */
#define KY_MAX_ADMINS     8
#define KY_ADMIN_NAME_MAX 30
#define KY_MIN_PARTS      2
#define KY_MAX_PARTS      8
#define KY_ID_MAX         64 /* instance, unit and zone identifiers */
#define KY_UUID_LEN       36 /* 8-4-4-4-12 hex digits, no NUL */

/* A growable byte buffer. ky_buf_free cleanses before freeing. */
struct ky_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

int ky_buf_append(struct ky_buf *b, const void *p, size_t n) KY_WUR;
int ky_buf_append_str(struct ky_buf *b, const char *s) KY_WUR;
void ky_buf_free(struct ky_buf *b);

/* Hex helpers. ky_hex_decode fails (KY_ERR_MALFORMED) unless hex is exactly 2*n hex digits. */
void ky_hex_encode(const uint8_t *p, size_t n, char *out /* 2n+1 */);
int ky_hex_decode(const char *hex, uint8_t *out, size_t n) KY_WUR;
/* The value of one hex digit (0-9, a-f, A-F), or -1. */
int ky_hex_digit(char c);

/* Reads a whole file (at most max bytes, else KY_ERR_TOO_LARGE). */
int ky_file_read(const char *path, size_t max, struct ky_buf *out) KY_WUR;
/* Process hardening for every kyok program that holds secrets (the unit and the CLI): core
 * dumps off (RLIMIT_CORE 0) and the process not dumpable (PR_SET_DUMPABLE 0: no core file
 * whatever core_pattern says, no ptrace by other processes of the same user, /proc/PID/mem
 * closed), and every block jansson frees wiped. Call first thing, before any jansson call.
 * 0, or KY_ERR_INTERNAL with the reason in err. */
int ky_process_harden(char *err, size_t errlen) KY_WUR;

/* The rule for files and directories that hold secrets (signature keys, key parts,
 * passwords, API keys, the workspace), as ssh applies it to a private key: group and other
 * users have no access at all. A regular file wants mode 0600 or stricter, a directory 0700.
 * Other kinds (a pipe, /dev/fd/N, a terminal) are not checked: nobody else can open them
 * later. Symbolic links are followed. KY_ERR_NOT_PRIVATE with why = "<mode> ...: run 'chmod
 * 600 PATH'" (the fix), KY_ERR_NOT_FOUND, or KY_ERR_IO. */
int ky_path_check_private(const char *path, char *why, size_t whylen) KY_WUR;
/* Writes a file atomically: temp file in the same directory, fsync, rename, fsync dir. */
int ky_file_write_atomic(const char *path, const void *p, size_t n, int mode) KY_WUR;

/* ---- Shared rules: each has this one home (docs/DEVELOPMENT.md, "One home per rule") ---- */

/* The identifier rule, for instance, unit and zone ids (unit.conf, instance.json,
 * selection.json, kyok up --zone) and the subject of an access token: 1 to KY_ID_MAX (64)
 * characters of A-Z a-z 0-9 '.' '_' '-'. Why: ids go unquoted into log lines, JSON, URLs,
 * certificate names and error messages, and are compared byte for byte; this set needs no
 * escaping anywhere and has no case folding or look-alike (Unicode) forms; 64 bounds every
 * buffer that holds one. A UUID is an id. Pure; NULL is not an id. */
bool ky_id_valid(const char *s);

/* UUIDs (RFC 4122) as text: 8-4-4-4-12 hex digits. ky_uuid_new makes a random one (version 4,
 * lowercase) from the OpenSSL random generator: 0 or KY_ERR_CRYPTO. ky_uuid_valid accepts
 * that form in either case (Key Protect clients send both); pure, NULL is not one. */
int ky_uuid_new(char out[KY_UUID_LEN + 1]) KY_WUR;
bool ky_uuid_valid(const char *s);

/* mkdir -p: makes path and every missing parent with mode (less the umask), leaves existing
 * ones as they are; the last component must end up a directory (symbolic links to one are
 * followed, like mkdir -p; who may read it is checked by ky_path_check_private). 0, or
 * KY_ERR_USAGE (path longer than PATH_MAX), or KY_ERR_IO with errno set (ENOTDIR when path
 * exists and is no directory) and, when at is not NULL, the directory that could not be made
 * in at. */
int ky_mkdir_p(const char *path, mode_t mode, char *at, size_t atlen) KY_WUR;

#endif
