/* Whole-file reads and atomic writes. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyok/common.h"
#include "kyok/err.h"

int ky_file_read(const char *path, size_t max, struct ky_buf *out)
{
	int r = KY_ERR_IO;
	uint8_t chunk[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return errno == ENOENT ? KY_ERR_NOT_FOUND : KY_ERR_IO;
	for (;;) {
		ssize_t got = read(fd, chunk, sizeof(chunk));
		if (got < 0) {
			if (errno == EINTR)
				continue;
			r = KY_ERR_IO;
			goto fail;
		}
		if (got == 0)
			break;
		if (out->len + (size_t)got > max) {
			r = KY_ERR_TOO_LARGE;
			goto fail;
		}
		if ((r = ky_buf_append(out, chunk, (size_t)got)) != 0)
			goto fail;
	}
	r = 0;
	goto done;
fail:
	ky_buf_free(out);
done:
	close(fd);
	OPENSSL_cleanse(chunk, sizeof(chunk));
	return r;
}

int ky_path_check_private(const char *path, char *why, size_t whylen)
{
	struct stat st;
	mode_t open_to;
	const char *who;
	bool dir;

	if (stat(path, &st) != 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return errno == ENOENT ? KY_ERR_NOT_FOUND : KY_ERR_IO;
	}
	dir = S_ISDIR(st.st_mode);
	if (!dir && !S_ISREG(st.st_mode))
		return 0;
	open_to = st.st_mode & (S_IRWXG | S_IRWXO);
	if (open_to == 0)
		return 0;
	if ((open_to & (S_IRGRP | S_IROTH)) != 0)
		who = (open_to & S_IROTH) != 0 ? "readable by all users" : "readable by its group";
	else if ((open_to & (S_IWGRP | S_IWOTH)) != 0)
		who = (open_to & S_IWOTH) != 0 ? "writable by all users" : "writable by its group";
	else
		who = "open to its group or all users";
	snprintf(why, whylen, "%s (mode %04o): run 'chmod %s %s'", who,
	         (unsigned)(st.st_mode & 07777), dir ? "700" : "600", path);
	return KY_ERR_NOT_PRIVATE;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return KY_ERR_IO;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int ky_file_write_atomic(const char *path, const void *p, size_t n, int mode)
{
	int r = KY_ERR_IO;
	int fd = -1, dfd = -1;
	char *tmp = NULL, *dir = NULL, *slash;

	if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) {
		tmp = NULL;
		return KY_ERR_NOMEM;
	}
	if ((dir = strdup(path)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	slash = strrchr(dir, '/');
	if (slash == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		goto out;
	if (fchmod(fd, (mode_t)mode) != 0)
		goto out_unlink;
	if ((r = write_all(fd, p, n)) != 0)
		goto out_unlink;
	r = KY_ERR_IO;
	if (fsync(fd) != 0)
		goto out_unlink;
	if (close(fd) != 0) {
		fd = -1;
		goto out_unlink;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto out_unlink;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0)
		goto out;
	r = 0;
	goto out;
out_unlink:
	unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	free(tmp);
	free(dir);
	return r;
}

static int file_mkdir_one(const char *p, mode_t mode, char *at, size_t atlen)
{
	if (mkdir(p, mode) == 0 || errno == EEXIST)
		return 0;
	if (at != NULL && atlen > 0)
		snprintf(at, atlen, "%s", p);
	return KY_ERR_IO;
}

int ky_mkdir_p(const char *path, mode_t mode, char *at, size_t atlen)
{
	char p[PATH_MAX];
	struct stat st;
	int r = KY_ERR_INTERNAL;

	if (at != NULL && atlen > 0)
		at[0] = '\0';
	if (path == NULL || path[0] == '\0' ||
	    snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p)) {
		r = KY_ERR_USAGE;
		goto out;
	}
	for (char *s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if ((r = file_mkdir_one(p, mode, at, atlen)) != 0)
			goto out;
		*s = '/';
	}
	if ((r = file_mkdir_one(p, mode, at, atlen)) != 0)
		goto out;
	if (stat(p, &st) != 0) {
		r = KY_ERR_IO;
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		if (at != NULL && atlen > 0)
			snprintf(at, atlen, "%s", p);
		r = KY_ERR_IO;
		goto out;
	}
	r = 0;
out:
	return r;
}
