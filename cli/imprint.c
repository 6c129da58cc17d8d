/* The instance's imprint credential on the client side: found, checked, and used to claim
 * commands for crypto units in imprint mode (include/kyok/imprint.h).
 *
 * Where it is looked for, first found wins:
 *   --imprint-credential FILE (commands that act in imprint mode accept it)
 *   $KYOK_IMPRINT_CREDENTIAL_FILE
 *   <instance directory>/imprint-credential.pem, when that file exists ('kyok up' writes it)
 * A file named by the option or the variable must exist. Whichever is used must be a regular
 * file that only its owner can read or write (mode 0600 or 0400).
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "kyok/crypto.h"
#include "kyok/imprint.h"

static const char *imprint_option; /* --imprint-credential */
static EVP_PKEY *imprint_key;      /* loaded once per process */
static char imprint_path[1024];

void cli_imprint_set_file(const char *path)
{
	imprint_option = path;
}

/* The credential's path: 0 and path, or 0 and "" when there is none to use. */
static int imprint_locate(char *path, size_t len, const char **source, char *why, size_t whylen)
{
	const char *env = getenv("KYOK_IMPRINT_CREDENTIAL_FILE");
	struct stat st;

	path[0] = '\0';
	if (imprint_option != NULL) {
		*source = "--imprint-credential";
		snprintf(path, len, "%s", imprint_option);
	} else if (env != NULL && env[0] != '\0') {
		*source = "KYOK_IMPRINT_CREDENTIAL_FILE";
		snprintf(path, len, "%s", env);
	} else {
		*source = "the instance directory";
		if (snprintf(path, len, "%s/%s", cli_instance_dir(), KY_IMPRINT_CREDENTIAL_FILE) >=
		    (int)len) {
			path[0] = '\0';
			return 0;
		}
		if (lstat(path, &st) != 0 && errno == ENOENT) {
			path[0] = '\0';
			return 0;
		}
	}
	if (path[0] == '\0') {
		snprintf(why, whylen, "%s names no file", *source);
		return KY_ERR_USAGE;
	}
	return 0;
}

/* Reads the credential file after checking what it is and who may read it. */
static int imprint_read(const char *path, const char *source, struct ky_buf *pem, char *why,
                        size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;

	if (fd < 0) {
		snprintf(why, whylen, "imprint credential '%s' (from %s): %s", path, source,
		         strerror(errno));
		return errno == ENOENT ? KY_ERR_NOT_FOUND : KY_ERR_IO;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "imprint credential '%s' is not a regular file", path);
		r = KY_ERR_IO;
		goto out;
	}
	if ((st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
		snprintf(
		    why, whylen,
		    "imprint credential '%s' has mode %04o and owner uid %ld: it must belong to "
		    "you and be readable by you alone (chmod 600 '%s')",
		    path, (unsigned)(st.st_mode & 07777), (long)st.st_uid, path);
		r = KY_ERR_CREDENTIAL_EXPOSED;
		goto out;
	}
	/* Read from the descriptor that was checked, not from the path again. */
	for (;;) {
		char chunk[512];
		ssize_t got = read(fd, chunk, sizeof(chunk));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			snprintf(why, whylen, "imprint credential '%s': %s", path, strerror(errno));
			r = KY_ERR_IO;
			OPENSSL_cleanse(chunk, sizeof(chunk));
			goto out;
		}
		if (got == 0)
			break;
		r = pem->len + (size_t)got > KY_IMPRINT_CREDENTIAL_MAX
		        ? KY_ERR_TOO_LARGE
		        : ky_buf_append(pem, chunk, (size_t)got);
		OPENSSL_cleanse(chunk, sizeof(chunk));
		if (r != 0) {
			snprintf(why, whylen, "imprint credential '%s': %s", path,
			         ky_err_message(r));
			goto out;
		}
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

/* Loads the credential once: 0 with imprint_key set, or 0 and none when there is none. */
static int imprint_load(char *why, size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf pem = {0};
	const char *source = "";
	char path[sizeof(imprint_path)];

	if (imprint_key != NULL)
		return 0;
	if ((r = imprint_locate(path, sizeof(path), &source, why, whylen)) != 0)
		goto out;
	if (path[0] == '\0') {
		r = 0; /* none: the unit says when it needs one */
		goto out;
	}
	if ((r = imprint_read(path, source, &pem, why, whylen)) != 0)
		goto out;
	if ((r = ky_imprint_credential_parse(pem.data, pem.len, &imprint_key)) != 0) {
		snprintf(why, whylen,
		         "imprint credential '%s' (from %s) is not an unencrypted Ed25519 private "
		         "key in PEM",
		         path, source);
		goto out;
	}
	snprintf(imprint_path, sizeof(imprint_path), "%s", path);
	r = 0;
out:
	ky_buf_free(&pem);
	return r;
}

int cli_imprint_require(char *why, size_t whylen)
{
	int r = KY_ERR_INTERNAL;

	if ((r = imprint_load(why, whylen)) != 0)
		return r;
	if (imprint_key == NULL) {
		snprintf(why, whylen,
		         "no imprint credential was found: give --imprint-credential FILE or set "
		         "KYOK_IMPRINT_CREDENTIAL_FILE (none at %s/%s)",
		         cli_instance_dir(), KY_IMPRINT_CREDENTIAL_FILE);
		return KY_ERR_IMPRINT_CLAIM_REQUIRED;
	}
	return 0;
}

int cli_imprint_claim(const uint8_t *body, size_t n, char **claim, char *why, size_t whylen)
{
	int r = KY_ERR_INTERNAL;

	*claim = NULL;
	if ((r = imprint_load(why, whylen)) != 0)
		return r;
	if (imprint_key == NULL)
		return 0;
	if ((r = ky_imprint_claim(imprint_key, body, n, claim)) != 0) {
		snprintf(why, whylen, "cannot make the imprint claim with '%s'", imprint_path);
		return r;
	}
	return 0;
}

const char *cli_imprint_path(void)
{
	return imprint_key != NULL ? imprint_path : NULL;
}
