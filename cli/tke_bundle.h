/* Command bundles (cli/tke_bundle.c): prepared commands as text, one PEM "CMS" block per
 * crypto unit with its '#' comment lines. */
#ifndef KYOK_CLI_TKE_BUNDLE_H
#define KYOK_CLI_TKE_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>

#include "kyok/common.h"

#define TKE_BUNDLE_MAX (16 * (size_t)KY_MAX_COMMAND_BYTES)

struct tke_bundle_cmd {
	struct ky_buf comments; /* '#' lines before the block, without "# signers:" */
	struct ky_buf der;      /* the CMS SignedData */
};
struct tke_bundle {
	struct tke_bundle_cmd *cmds;
	size_t n;
};

void tke_bundle_release(struct tke_bundle *b);
/* Parses a bundle's text (n bytes, not NUL-terminated) into b: KY_ERR_NOT_COMMAND with why
 * ("line N: ...") when it is not one. Pure: no I/O, nothing printed. b is empty on error. */
int tke_bundle_parse(const char *text, size_t n, struct tke_bundle *b, char *why,
                     size_t whylen) KY_WUR;
/* Reads and parses the file path (at most TKE_BUNDLE_MAX bytes); prints the error. */
int tke_bundle_read(const char *path, struct tke_bundle *b) KY_WUR;
/* Writes b to path (0600, atomically); refuses an existing file unless overwrite. Prints
 * the error. */
int tke_bundle_write(const char *path, const struct tke_bundle *b, bool overwrite) KY_WUR;
/* Drops the bundle's header comment (the lines before the first command's own comments). */
void tke_bundle_strip_header(struct tke_bundle *b);

#endif
