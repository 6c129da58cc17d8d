/* The data directory, the seal and the sealed unit state.
 *
 * data_dir/seal.key      32 random bytes, mode 0600, made on first start (file backend)
 * data_dir/state.sealed  "KYOKSEAL1\n" "instance=<id>\n" "unit=<id>\n" "\n"
 *                        then ky_aead_seal(seal key,
 *                                          aad = "kyok-unit-state-v1\0" instance "\0" unit,
 *                                          ky_domain_serialize(state))
 * data_dir/lock          flock()ed while a daemon runs on the directory
 *
 * The readable lines only name the unit, so a daemon pointed at another unit's directory
 * can say so; they are bound to the ciphertext through the associated data.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/unitd.h"

#define SEAL_KEY_LEN   32
#define SEAL_MAGIC     "KYOKSEAL1\n"
#define SEAL_AAD_LABEL "kyok-unit-state-v1"
#define SEAL_STATE_MAX (4 * 1024 * 1024)

/* ---- file backend ---- */

struct seal_file {
	uint8_t *key; /* SEAL_KEY_LEN bytes, secure heap */
};

static int seal_file_seal(struct unitd_seal *s, const void *aad, size_t aadlen, const uint8_t *pt,
                          size_t n, struct ky_buf *out)
{
	struct seal_file *f = s->priv;

	return ky_aead_seal(f->key, aad, aadlen, pt, n, out);
}

static int seal_file_open(struct unitd_seal *s, const void *aad, size_t aadlen, const uint8_t *in,
                          size_t n, struct ky_buf *out)
{
	struct seal_file *f = s->priv;
	int r = ky_aead_open(f->key, aad, aadlen, in, n, out);

	if (r == KY_ERR_TAMPERED || r == KY_ERR_MALFORMED)
		return KY_ERR_STATE_CORRUPT;
	return r;
}

static void seal_file_free(struct unitd_seal *s)
{
	struct seal_file *f;

	if (s == NULL)
		return;
	f = s->priv;
	if (f != NULL) {
		ky_secret_free(f->key, SEAL_KEY_LEN);
		free(f);
	}
	free(s);
}

static const struct unitd_seal_ops seal_file_ops = {
    .name = "file",
    .seal = seal_file_seal,
    .open = seal_file_open,
    .free = seal_file_free,
};

static int seal_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return KY_ERR_IO;
	if (fsync(fd) != 0)
		r = KY_ERR_IO;
	close(fd);
	return r;
}

/* Writes a fresh key to a temp file and links it into place: the key file appears whole or
 * not at all, and an existing one is never replaced. */
static int seal_key_create(const char *dir, const char *path, uint8_t *key, char *err,
                           size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	int fd = -1;
	char *tmp = NULL;
	size_t done = 0;

	if (asprintf(&tmp, "%s/seal.key.tmp.%ld", dir, (long)getpid()) < 0) {
		tmp = NULL;
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if ((r = ky_random(key, SEAL_KEY_LEN)) != 0) {
		snprintf(err, errlen, "cannot generate the seal key: %s", ky_err_message(r));
		goto out;
	}
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot create seal key '%s': %s", tmp, strerror(errno));
		goto out;
	}
	while (done < SEAL_KEY_LEN) {
		ssize_t w = write(fd, key + done, SEAL_KEY_LEN - done);
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
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot create seal key '%s': %s", path, strerror(errno));
		goto out_unlink;
	}
	(void)unlink(tmp);
	if ((r = seal_fsync_dir(dir)) != 0) {
		snprintf(err, errlen, "cannot sync directory '%s': %s", dir, strerror(errno));
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

static int seal_key_read(const char *path, uint8_t *key, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat sb;
	size_t done = 0;

	if (fd < 0) {
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
	if (sb.st_size != SEAL_KEY_LEN) {
		snprintf(err, errlen,
		         "seal key '%s' is %lld bytes, must be exactly %d; refusing to start", path,
		         (long long)sb.st_size, SEAL_KEY_LEN);
		goto out;
	}
	while (done < SEAL_KEY_LEN) {
		ssize_t got = read(fd, key + done, SEAL_KEY_LEN - done);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			r = KY_ERR_IO;
			snprintf(err, errlen, "cannot read seal key '%s'", path);
			goto out;
		}
		done += (size_t)got;
	}
	r = 0;
out:
	close(fd);
	return r;
}

/* Opens the file seal backend of dir. state_exists: a sealed state is already there, so a
 * missing key must not be replaced by a new one. */
static int seal_file_backend(const char *dir, bool state_exists, struct unitd_seal **out, char *err,
                             size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct unitd_seal *s = NULL;
	struct seal_file *f = NULL;
	char *path = NULL;
	struct stat sb;

	if ((s = calloc(1, sizeof(*s))) == NULL || (f = calloc(1, sizeof(*f))) == NULL ||
	    (f->key = ky_secret_alloc(SEAL_KEY_LEN)) == NULL ||
	    asprintf(&path, "%s/seal.key", dir) < 0) {
		path = NULL;
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	s->ops = &seal_file_ops;
	s->priv = f;
	f = NULL; /* transferred */

	if (lstat(path, &sb) != 0) {
		if (errno != ENOENT) {
			r = KY_ERR_IO;
			snprintf(err, errlen, "cannot stat seal key '%s': %s", path,
			         strerror(errno));
			goto out;
		}
		if (state_exists) {
			r = KY_ERR_STATE_CORRUPT;
			snprintf(err, errlen,
			         "seal key '%s' is missing but the sealed state in '%s' exists: "
			         "restore the seal key; refusing to start",
			         path, dir);
			goto out;
		}
		r = seal_key_create(dir, path, ((struct seal_file *)s->priv)->key, err, errlen);
	} else if (S_ISLNK(sb.st_mode)) {
		r = KY_ERR_CONFIG;
		snprintf(err, errlen, "seal key '%s' is a symbolic link; refusing to start", path);
	} else {
		r = seal_key_read(path, ((struct seal_file *)s->priv)->key, err, errlen);
	}
	if (r != 0)
		goto out;
	*out = s;
	s = NULL; /* transferred */
	r = 0;
out:
	if (f != NULL) {
		ky_secret_free(f->key, SEAL_KEY_LEN);
		free(f);
	}
	if (s != NULL)
		seal_file_free(s);
	free(path);
	return r;
}

/* ---- data directory ---- */

/* mkdir -p with mode 0700 for every directory it makes. */
static int store_mkdirs(const char *dir, char *err, size_t errlen)
{
	char *p = strdup(dir);
	int r = 0;

	if (p == NULL)
		return KY_ERR_NOMEM;
	for (char *c = p + 1;; c++) {
		if (*c != '/' && *c != '\0')
			continue;
		char save = *c;
		*c = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create data directory '%s': %s", p,
			         strerror(errno));
			r = KY_ERR_IO;
			break;
		}
		*c = save;
		if (save == '\0')
			break;
	}
	free(p);
	return r;
}

/* Temp files of writes cut short by a crash (ky_file_write_atomic, seal_key_create): the
 * lock is held, so nobody else is writing them. */
static void store_remove_stale(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "state.sealed.tmp.", 17) != 0 &&
		    strncmp(e->d_name, "seal.key.tmp.", 13) != 0)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			unitd_log("removed '%s/%s' left by an interrupted write", dir, e->d_name);
	}
	closedir(d);
}

int unitd_store_open(const char *data_dir, struct unitd_store *st, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	char *lock_path = NULL;
	struct stat sb;
	bool state_exists = true;

	memset(st, 0, sizeof(*st));
	st->lock_fd = -1;
	if ((st->dir = strdup(data_dir)) == NULL ||
	    asprintf(&st->state_path, "%s/state.sealed", data_dir) < 0 ||
	    asprintf(&lock_path, "%s/lock", data_dir) < 0) {
		lock_path = NULL;
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if ((r = store_mkdirs(data_dir, err, errlen)) != 0)
		goto out;
	r = KY_ERR_CONFIG;
	if (stat(data_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen, "data directory '%s' is not a directory", data_dir);
		goto out;
	}
	if (sb.st_uid != geteuid()) {
		snprintf(err, errlen,
		         "data directory '%s' is owned by uid %ld, not by this daemon's uid %ld",
		         data_dir, (long)sb.st_uid, (long)geteuid());
		goto out;
	}
	if ((sb.st_mode & 077) != 0)
		unitd_log("warning: data directory '%s' has mode %04o: others can list it, 0700 "
		          "is advised",
		          data_dir, (unsigned)(sb.st_mode & 07777));

	st->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (st->lock_fd < 0) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot open '%s': %s", lock_path, strerror(errno));
		goto out;
	}
	if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK) {
			r = KY_ERR_CONFIG;
			snprintf(err, errlen,
			         "data directory '%s' is in use by another kyok-unitd (it holds "
			         "'%s'); stop that one first",
			         data_dir, lock_path);
		} else {
			r = KY_ERR_IO;
			snprintf(err, errlen, "cannot lock '%s': %s", lock_path, strerror(errno));
		}
		goto out;
	}
	store_remove_stale(data_dir);
	if (lstat(st->state_path, &sb) != 0) {
		if (errno != ENOENT) {
			r = KY_ERR_IO;
			snprintf(err, errlen, "cannot stat '%s': %s", st->state_path,
			         strerror(errno));
			goto out;
		}
		state_exists = false;
	}
	if ((r = seal_file_backend(data_dir, state_exists, &st->seal, err, errlen)) != 0)
		goto out;
	r = 0;
out:
	free(lock_path);
	if (r != 0)
		unitd_store_release(st);
	return r;
}

void unitd_store_release(struct unitd_store *st)
{
	if (st == NULL)
		return;
	if (st->seal != NULL)
		st->seal->ops->free(st->seal);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	free(st->dir);
	free(st->state_path);
	memset(st, 0, sizeof(*st));
	st->lock_fd = -1;
}

/* ---- sealed state ---- */

static int state_aad(const char *instance, const char *unit, struct ky_buf *aad)
{
	int r = KY_ERR_INTERNAL;

	if ((r = ky_buf_append(aad, SEAL_AAD_LABEL, sizeof(SEAL_AAD_LABEL))) != 0 ||
	    (r = ky_buf_append(aad, instance, strlen(instance) + 1)) != 0 ||
	    (r = ky_buf_append(aad, unit, strlen(unit))) != 0)
		return r;
	return 0;
}

int unitd_state_write(struct unitd_store *st, const struct ky_domain *d)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf plain = {0}, aad = {0}, out = {0};

	if ((r = ky_domain_serialize(d, &plain)) != 0)
		goto out;
	if ((r = state_aad(d->instance, d->unit, &aad)) != 0)
		goto out;
	if ((r = ky_buf_append_str(&out, SEAL_MAGIC)) != 0 ||
	    (r = ky_buf_append_str(&out, "instance=")) != 0 ||
	    (r = ky_buf_append_str(&out, d->instance)) != 0 ||
	    (r = ky_buf_append_str(&out, "\nunit=")) != 0 ||
	    (r = ky_buf_append_str(&out, d->unit)) != 0 ||
	    (r = ky_buf_append_str(&out, "\n\n")) != 0)
		goto out;
	{
		struct ky_buf sealed = {0};
		if ((r = st->seal->ops->seal(st->seal, aad.data, aad.len, plain.data, plain.len,
		                             &sealed)) == 0)
			r = ky_buf_append(&out, sealed.data, sealed.len);
		ky_buf_free(&sealed);
		if (r != 0)
			goto out;
	}
	if ((r = ky_file_write_atomic(st->state_path, out.data, out.len, 0600)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&plain);
	ky_buf_free(&aad);
	ky_buf_free(&out);
	return r;
}

/* Reads one "name=value\n" header line at *pos into val (KY_ID_MAX). */
static int state_header_line(const struct ky_buf *b, size_t *pos, const char *name, char *val)
{
	size_t nlen = strlen(name), i = *pos, len = 0;

	if (b->len - i < nlen + 1 || memcmp(b->data + i, name, nlen) != 0 ||
	    b->data[i + nlen] != '=')
		return KY_ERR_MALFORMED;
	i += nlen + 1;
	while (i < b->len && b->data[i] != '\n') {
		if (len >= KY_ID_MAX || b->data[i] < 0x21 || b->data[i] > 0x7e)
			return KY_ERR_MALFORMED;
		val[len++] = (char)b->data[i++];
	}
	if (i >= b->len || len == 0)
		return KY_ERR_MALFORMED;
	val[len] = '\0';
	*pos = i + 1;
	return 0;
}

static int state_open(struct unitd_store *st, const struct unitd_config *cfg,
                      const struct ky_buf *file, struct ky_domain **out, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	char instance[KY_ID_MAX + 1], unit[KY_ID_MAX + 1];
	size_t pos = strlen(SEAL_MAGIC);
	struct ky_buf aad = {0}, plain = {0};
	struct ky_domain *d = NULL;

	if (file->len < pos || memcmp(file->data, SEAL_MAGIC, pos) != 0 ||
	    state_header_line(file, &pos, "instance", instance) != 0 ||
	    state_header_line(file, &pos, "unit", unit) != 0 || pos >= file->len ||
	    file->data[pos] != '\n') {
		r = KY_ERR_STATE_CORRUPT;
		snprintf(err, errlen,
		         "'%s' is not a kyok sealed state (bad header); refusing to start and "
		         "leaving it as it is",
		         st->state_path);
		goto out;
	}
	pos++;
	if (strcmp(instance, cfg->instance) != 0 || strcmp(unit, cfg->unit) != 0) {
		r = KY_ERR_CONFIG;
		snprintf(err, errlen,
		         "'%s': state belongs to unit %s of instance %s, but the config says unit "
		         "%s of instance %s; refusing to start",
		         st->state_path, unit, instance, cfg->unit, cfg->instance);
		goto out;
	}
	if ((r = state_aad(instance, unit, &aad)) != 0)
		goto out;
	r = st->seal->ops->open(st->seal, aad.data, aad.len, file->data + pos, file->len - pos,
	                        &plain);
	if (r == KY_ERR_STATE_CORRUPT) {
		snprintf(err, errlen,
		         "sealed state '%s' cannot be opened: wrong seal key or damaged file; "
		         "refusing to start and leaving it as it is",
		         st->state_path);
		goto out;
	}
	if (r != 0) {
		snprintf(err, errlen, "cannot open sealed state '%s': %s", st->state_path,
		         ky_err_message(r));
		goto out;
	}
	if ((r = ky_domain_parse(plain.data, plain.len, &d)) != 0) {
		snprintf(err, errlen,
		         "sealed state '%s' opens but does not parse (%s); refusing to start",
		         st->state_path, ky_err_message(r));
		r = KY_ERR_STATE_CORRUPT;
		goto out;
	}
	if (strcmp(d->instance, instance) != 0 || strcmp(d->unit, unit) != 0) {
		r = KY_ERR_STATE_CORRUPT;
		snprintf(err, errlen,
		         "sealed state '%s' names unit %s of instance %s inside but %s of %s "
		         "outside; refusing to start",
		         st->state_path, d->unit, d->instance, unit, instance);
		goto out;
	}
	*out = d;
	d = NULL; /* transferred */
	r = 0;
out:
	ky_domain_free(d);
	ky_buf_free(&aad);
	ky_buf_free(&plain);
	return r;
}

int unitd_state_load(struct unitd_store *st, const struct unitd_config *cfg, struct ky_domain **out,
                     char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0};
	struct ky_domain *d = NULL, *moved = NULL;

	r = ky_file_read(st->state_path, SEAL_STATE_MAX, &file);
	if (r == KY_ERR_NOT_FOUND) {
		if ((r = ky_domain_new(cfg->instance, cfg->unit, cfg->zone, &d)) != 0) {
			snprintf(err, errlen, "cannot create the unit state: %s",
			         ky_err_message(r));
			goto out;
		}
		if ((r = unitd_state_write(st, d)) != 0) {
			snprintf(err, errlen, "cannot write sealed state '%s': %s", st->state_path,
			         ky_err_message(r));
			goto out;
		}
		unitd_log("created new unit state in '%s' (imprint mode)", st->state_path);
	} else if (r != 0) {
		snprintf(err, errlen, "cannot read sealed state '%s': %s", st->state_path,
		         ky_err_message(r));
		goto out;
	} else {
		if ((r = state_open(st, cfg, &file, &d, err, errlen)) != 0)
			goto out;
		if (strcmp(d->zone, cfg->zone) != 0) {
			/* The operator moved the unit: record the new zone, atomically. */
			if ((r = ky_domain_dup(d, &moved)) != 0) {
				snprintf(err, errlen, "cannot copy the unit state: %s",
				         ky_err_message(r));
				goto out;
			}
			snprintf(moved->zone, sizeof(moved->zone), "%s", cfg->zone);
			if ((r = unitd_state_write(st, moved)) != 0) {
				snprintf(err, errlen, "cannot write sealed state '%s': %s",
				         st->state_path, ky_err_message(r));
				goto out;
			}
			unitd_log("zone changed from %s to %s", d->zone, moved->zone);
			ky_domain_free(d);
			d = moved;
			moved = NULL; /* transferred */
		}
	}
	*out = d;
	d = NULL; /* transferred */
	r = 0;
out:
	ky_domain_free(moved);
	ky_domain_free(d);
	ky_buf_free(&file);
	return r;
}

/* ---- storage mark ----
 *
 * data_dir/storage.mark  "KYOKMARK1\n" then seal(aad = "kyok-storage-mark-v1\0" instance "\0"
 *                        unit, u64 BE generation || u64 BE epoch): the highest position of key
 *                        storage this unit has seen. */

#define MARK_MAGIC "KYOKMARK1\n"
#define MARK_LABEL "kyok-storage-mark-v1"
#define MARK_FILE  "storage.mark"
#define MARK_MAX   4096

static int mark_aad(const char *instance, const char *unit, struct ky_buf *aad)
{
	int r;

	if ((r = ky_buf_append(aad, MARK_LABEL, sizeof(MARK_LABEL))) != 0 ||
	    (r = ky_buf_append(aad, instance, strlen(instance) + 1)) != 0 ||
	    (r = ky_buf_append(aad, unit, strlen(unit))) != 0)
		return r;
	return 0;
}

static int mark_path(const struct unitd_store *st, char **out)
{
	return asprintf(out, "%s/%s", st->dir, MARK_FILE) < 0 ? KY_ERR_NOMEM : 0;
}

int unitd_mark_load(struct unitd_store *st, const char *instance, const char *unit,
                    struct ky_store_ledger_pos *pos)
{
	int r = KY_ERR_INTERNAL;
	char *path = NULL;
	struct ky_buf file = {0}, aad = {0}, plain = {0};
	size_t m = strlen(MARK_MAGIC);

	memset(pos, 0, sizeof(*pos));
	if ((r = mark_path(st, &path)) != 0)
		goto out;
	if (access(path, F_OK) != 0 && errno == ENOENT) {
		r = 0; /* never saw key storage */
		goto out;
	}
	if ((r = ky_file_read(path, MARK_MAX, &file)) != 0)
		goto out;
	if (file.len < m || memcmp(file.data, MARK_MAGIC, m) != 0) {
		r = KY_ERR_STATE_CORRUPT;
		goto out;
	}
	if ((r = mark_aad(instance, unit, &aad)) != 0)
		goto out;
	if ((r = st->seal->ops->open(st->seal, aad.data, aad.len, file.data + m, file.len - m,
	                             &plain)) != 0)
		goto out;
	if (plain.len != 16) {
		r = KY_ERR_STATE_CORRUPT;
		goto out;
	}
	for (int i = 0; i < 8; i++) {
		pos->gen = pos->gen << 8 | plain.data[i];
		pos->epoch = pos->epoch << 8 | plain.data[8 + i];
	}
	r = 0;
out:
	free(path);
	ky_buf_free(&file);
	ky_buf_free(&aad);
	ky_buf_free(&plain);
	return r;
}

int unitd_mark_write(struct unitd_store *st, const char *instance, const char *unit,
                     const struct ky_store_ledger_pos *pos)
{
	int r = KY_ERR_INTERNAL;
	char *path = NULL;
	struct ky_buf aad = {0}, sealed = {0}, out = {0};
	uint8_t plain[16];

	for (int i = 0; i < 8; i++) {
		plain[7 - i] = (uint8_t)(pos->gen >> (8 * i));
		plain[15 - i] = (uint8_t)(pos->epoch >> (8 * i));
	}
	if ((r = mark_path(st, &path)) != 0 || (r = mark_aad(instance, unit, &aad)) != 0 ||
	    (r = st->seal->ops->seal(st->seal, aad.data, aad.len, plain, sizeof(plain), &sealed)) !=
	        0 ||
	    (r = ky_buf_append_str(&out, MARK_MAGIC)) != 0 ||
	    (r = ky_buf_append(&out, sealed.data, sealed.len)) != 0 ||
	    (r = ky_file_write_atomic(path, out.data, out.len, 0600)) != 0)
		goto out;
	r = 0;
out:
	free(path);
	ky_buf_free(&aad);
	ky_buf_free(&sealed);
	ky_buf_free(&out);
	return r;
}
