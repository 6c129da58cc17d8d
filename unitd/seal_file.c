/* The file sealing backend: the seal key itself, 32 random bytes, in its reference file
 * data_dir/seal.key (mode 0600); and the reference files every backend keeps its key's
 * reference in (unitd_seal_ref_*, declared in seal.h). seal.c: what is sealed with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/seal.h"
#include "unitd/unitd.h"

#define SEAL_KEY_LEN  32
#define SEAL_REF_MAX  (64 * 1024)
#define SEAL_ID_LABEL "kyok-seal-key-id"

/* ---- helpers for the backends ---- */

int unitd_seal_fsync_dir(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd, r = 0;

	if (dir == NULL)
		return KY_ERR_NOMEM;
	slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir)
		*slash = '\0';
	else if (slash == dir)
		dir[1] = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd < 0)
		return KY_ERR_IO;
	if (fsync(fd) != 0)
		r = KY_ERR_IO;
	close(fd);
	return r;
}

int unitd_seal_ref_write(const char *path, const void *data, size_t n, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	int fd = -1;
	char *tmp = NULL;
	size_t done = 0;

	if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) {
		tmp = NULL;
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot create seal key '%s': %s", tmp, strerror(errno));
		goto out;
	}
	while (done < n) {
		ssize_t w = write(fd, (const uint8_t *)data + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			r = KY_ERR_IO;
			snprintf(err, errlen, "cannot write seal key '%s': %s", tmp,
			         strerror(errno));
			goto out_unlink;
		}
		done += (size_t)w;
	}
	if (fsync(fd) != 0 || close(fd) != 0) {
		fd = -1;
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot write seal key '%s': %s", tmp, strerror(errno));
		goto out_unlink;
	}
	fd = -1;
	if (link(tmp, path) != 0) {
		r = errno == EEXIST ? KY_ERR_EXISTS : KY_ERR_IO;
		snprintf(err, errlen, "cannot create seal key '%s': %s", path, strerror(errno));
		goto out_unlink;
	}
	(void)unlink(tmp);
	if ((r = unitd_seal_fsync_dir(path)) != 0) {
		snprintf(err, errlen, "cannot sync the directory of '%s': %s", path,
		         strerror(errno));
		goto out;
	}
	r = 0;
	goto out;
out_unlink:
	(void)unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	free(tmp);
	return r;
}

int unitd_seal_ref_read(const char *path, size_t max, struct ky_buf *out, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	int fd = -1;
	struct stat sb;
	uint8_t chunk[4096];

	if (lstat(path, &sb) != 0) {
		if (errno == ENOENT)
			return KY_ERR_NOT_FOUND;
		snprintf(err, errlen, "cannot stat seal key '%s': %s", path, strerror(errno));
		return KY_ERR_IO;
	}
	if (S_ISLNK(sb.st_mode)) {
		snprintf(err, errlen, "seal key '%s' is a symbolic link; refusing to start", path);
		return KY_ERR_CONFIG;
	}
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "cannot open seal key '%s': %s", path, strerror(errno));
		return KY_ERR_IO;
	}
	if (fstat(fd, &sb) != 0) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot stat seal key '%s': %s", path, strerror(errno));
		goto out;
	}
	r = KY_ERR_CONFIG;
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "seal key '%s' is not a regular file; refusing to start",
		         path);
		goto out;
	}
	if (sb.st_uid != geteuid()) {
		snprintf(err, errlen,
		         "seal key '%s' is owned by uid %ld, not by this daemon's uid %ld; "
		         "refusing to start",
		         path, (long)sb.st_uid, (long)geteuid());
		goto out;
	}
	if ((sb.st_mode & 07777 & ~(mode_t)0600) != 0) {
		snprintf(err, errlen,
		         "seal key '%s' has mode %04o, wider than 0600; refusing to start "
		         "(check who could read it, then chmod 600 it)",
		         path, (unsigned)(sb.st_mode & 07777));
		goto out;
	}
	if ((size_t)sb.st_size > max) {
		snprintf(err, errlen, "seal key '%s' is %lld bytes, at most %zu; refusing to start",
		         path, (long long)sb.st_size, max);
		goto out;
	}
	for (;;) {
		ssize_t got = read(fd, chunk, sizeof(chunk));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = KY_ERR_IO;
			snprintf(err, errlen, "cannot read seal key '%s': %s", path,
			         strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		if (out->len + (size_t)got > max) {
			r = KY_ERR_CONFIG;
			snprintf(err, errlen, "seal key '%s' grew while read; refusing to start",
			         path);
			goto out;
		}
		if ((r = ky_buf_append(out, chunk, (size_t)got)) != 0) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
	}
	r = 0;
out:
	OPENSSL_cleanse(chunk, sizeof(chunk));
	close(fd);
	if (r != 0)
		ky_buf_free(out);
	return r;
}

int unitd_seal_ref_field(const struct ky_buf *b, const char *name, char *out, size_t outlen)
{
	size_t nlen = strlen(name), i = 0;

	while (i < b->len) {
		const uint8_t *line = b->data + i;
		const uint8_t *nl = memchr(line, '\n', b->len - i);
		size_t len;

		if (nl == NULL)
			return KY_ERR_MALFORMED; /* every line ends with a newline */
		len = (size_t)(nl - line);
		if (len > nlen && memcmp(line, name, nlen) == 0 && line[nlen] == '=') {
			size_t vlen = len - nlen - 1;
			if (vlen == 0 || vlen >= outlen)
				return KY_ERR_MALFORMED;
			for (size_t k = 0; k < vlen; k++)
				if (line[nlen + 1 + k] < 0x20 || line[nlen + 1 + k] > 0x7e)
					return KY_ERR_MALFORMED;
			memcpy(out, line + nlen + 1, vlen);
			out[vlen] = '\0';
			return 0;
		}
		i += len + 1;
	}
	return KY_ERR_NOT_FOUND;
}

/* ---- file backend: the key itself in the reference file ---- */

struct seal_file_key {
	uint8_t *key; /* SEAL_KEY_LEN bytes, secure heap */
};

static void seal_file_key_free(struct unitd_seal_key *k)
{
	struct seal_file_key *f;

	if (k == NULL)
		return;
	f = k->priv;
	if (f != NULL) {
		ky_secret_free(f->key, SEAL_KEY_LEN);
		free(f);
	}
	free(k);
}

/* The id of a file key: the first 8 bytes of SHA-256(label || key), in hex. */
static int seal_file_key_id(const uint8_t *key, char id[UNITD_SEAL_ID_MAX + 1])
{
	uint8_t md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int r = KY_ERR_CRYPTO;

	if (ctx == NULL)
		return KY_ERR_NOMEM;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, SEAL_ID_LABEL, sizeof(SEAL_ID_LABEL)) != 1 ||
	    EVP_DigestUpdate(ctx, key, SEAL_KEY_LEN) != 1 ||
	    EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != sizeof(md))
		goto out;
	ky_hex_encode(md, 8, id);
	r = 0;
out:
	EVP_MD_CTX_free(ctx);
	return r;
}

static int seal_file_key_new(struct unitd_seal_key **out)
{
	struct unitd_seal_key *k = calloc(1, sizeof(*k));
	struct seal_file_key *f = calloc(1, sizeof(*f));

	if (k == NULL || f == NULL || (f->key = ky_secret_alloc(SEAL_KEY_LEN)) == NULL) {
		free(k);
		free(f);
		return KY_ERR_NOMEM;
	}
	k->priv = f;
	*out = k;
	return 0;
}

static int seal_file_create(struct unitd_seal *s, const char *path, struct unitd_seal_key **out,
                            char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct unitd_seal_key *k = NULL;
	struct seal_file_key *f;

	if ((r = seal_file_key_new(&k)) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	k->ops = s->ops;
	f = k->priv;
	if ((r = ky_random(f->key, SEAL_KEY_LEN)) != 0) {
		snprintf(err, errlen, "cannot generate the seal key: %s", ky_err_message(r));
		goto out;
	}
	if ((r = seal_file_key_id(f->key, k->id)) != 0) {
		snprintf(err, errlen, "cannot compute the seal key id: %s", ky_err_message(r));
		goto out;
	}
	if ((r = unitd_seal_ref_write(path, f->key, SEAL_KEY_LEN, err, errlen)) != 0)
		goto out;
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	seal_file_key_free(k);
	return r;
}

static int seal_file_read(struct unitd_seal *s, const char *path, struct unitd_seal_key **out,
                          char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct unitd_seal_key *k = NULL;
	struct ky_buf b = {0};

	if ((r = unitd_seal_ref_read(path, SEAL_REF_MAX, &b, err, errlen)) != 0)
		goto out;
	if (b.len != SEAL_KEY_LEN) {
		r = KY_ERR_CONFIG;
		snprintf(err, errlen,
		         "seal key '%s' is %zu bytes, must be exactly %d; refusing to start", path,
		         b.len, SEAL_KEY_LEN);
		goto out;
	}
	if ((r = seal_file_key_new(&k)) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	k->ops = s->ops;
	memcpy(((struct seal_file_key *)k->priv)->key, b.data, SEAL_KEY_LEN);
	if ((r = seal_file_key_id(b.data, k->id)) != 0) {
		snprintf(err, errlen, "cannot compute the seal key id: %s", ky_err_message(r));
		goto out;
	}
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	ky_buf_free(&b);
	seal_file_key_free(k);
	return r;
}

/* The key is in the file: nothing to find, nothing to destroy beyond the file itself. */
static int seal_file_attach(struct unitd_seal *s, struct unitd_seal_key *k, char *err,
                            size_t errlen)
{
	(void)s;
	(void)k;
	(void)err;
	(void)errlen;
	return 0;
}

static int seal_file_destroy(struct unitd_seal *s, struct unitd_seal_key *k, char *err,
                             size_t errlen)
{
	(void)s;
	(void)k;
	(void)err;
	(void)errlen;
	return 0;
}

static int seal_file_seal(struct unitd_seal *s, struct unitd_seal_key *k, const void *aad,
                          size_t aadlen, const uint8_t *pt, size_t n, struct ky_buf *out)
{
	struct seal_file_key *f = k->priv;

	(void)s;
	return ky_aead_seal(f->key, aad, aadlen, pt, n, out);
}

static int seal_file_open(struct unitd_seal *s, struct unitd_seal_key *k, const void *aad,
                          size_t aadlen, const uint8_t *in, size_t n, struct ky_buf *out)
{
	struct seal_file_key *f = k->priv;
	int r = ky_aead_open(f->key, aad, aadlen, in, n, out);

	(void)s;
	if (r == KY_ERR_TAMPERED || r == KY_ERR_MALFORMED)
		return KY_ERR_STATE_CORRUPT;
	return r;
}

static void seal_file_free(struct unitd_seal *s)
{
	free(s);
}

static const struct unitd_seal_ops seal_file_ops = {
    .name = "file",
    .ref_name = "seal.key",
    .create = seal_file_create,
    .read = seal_file_read,
    .attach = seal_file_attach,
    .destroy = seal_file_destroy,
    .seal = seal_file_seal,
    .open = seal_file_open,
    .key_free = seal_file_key_free,
    .free = seal_file_free,
};

int unitd_seal_file_new(struct unitd_seal **out, char *err, size_t errlen)
{
	struct unitd_seal *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return KY_ERR_NOMEM;
	}
	s->ops = &seal_file_ops;
	*out = s;
	return 0;
}
