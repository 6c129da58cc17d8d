/* The data directory, the seal keys and the sealed unit state.
 *
 * data_dir/state.sealed  "KYOKSEAL2\n" "instance=<id>\n" "unit=<id>\n"
 *                        "seal=<backend>\n" "key=<key id>\n" "\n"
 *                        then the backend's seal(key,
 *                                  aad = "kyok-unit-state-v2\0" instance "\0" unit "\0"
 *                                        backend "\0" key id,
 *                                  ky_domain_serialize(state))
 * data_dir/seal.<ref>    the seal key's reference, mode 0600: the key itself (file backend,
 *                        seal.key), or what the TPM or token needs to find it (seal.tpm2,
 *                        seal.pkcs11). The key id is derived from it.
 * data_dir/seal.<ref>.next  only while the seal key is being replaced (zeroize)
 * data_dir/lock          flock()ed while a daemon runs on the directory
 *
 * A state of the first format ("KYOKSEAL1\n", before seal keys were replaced) is refused by
 * name: start it once with the kyok that wrote it and zeroize it, or make the unit anew.
 *
 * The readable lines only name the unit and its key, so a daemon pointed at another unit's
 * directory, or at a state older than the key, can say so; they are bound to the ciphertext
 * through the associated data.
 *
 * Replacing the seal key (unitd_state_rekey) is crash-safe: the new key is made under the
 * .next reference, the state is sealed under it and renamed into place (the commit point),
 * then the old key is destroyed and .next renamed over the old reference. At start the key
 * id in the state's header decides which of the two references is kept; the other key is
 * destroyed only after the state opened under the kept one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/audit.h"
#include "unitd/config.h"
#include "unitd/identity.h"
#include "unitd/log.h"
#include "unitd/seal.h"
#include "unitd/unitd.h"

#define SEAL_MAGIC_V1  "KYOKSEAL1\n"
#define SEAL_MAGIC     "KYOKSEAL2\n"
#define SEAL_AAD_LABEL "kyok-unit-state-v2"
#define SEAL_STATE_MAX (4 * 1024 * 1024)

/* ---- events ---- */

static const char *seal_event_name(enum unitd_seal_event ev)
{
	switch (ev) {
	case UNITD_SEAL_KEY_CREATED:
		return "seal key created";
	case UNITD_SEAL_KEY_DESTROYED:
		return "seal key destroyed";
	case UNITD_SEAL_STATE_SEALED:
		return "state sealed";
	case UNITD_SEAL_STATE_UNSEALED:
		return "state unsealed";
	case UNITD_SEAL_UNSEAL_REFUSED:
		return "state not unsealed";
	}
	return "?";
}

/* Every seal event goes through here: the key events are logged, and all of them reach the
 * observer when one is set. */
static void seal_event(struct unitd_datadir *dd, enum unitd_seal_event ev, const char *key_id,
                       int outcome)
{
	const char *backend = dd->seal != NULL ? dd->seal->ops->name : "-";

	if (ev == UNITD_SEAL_KEY_CREATED || ev == UNITD_SEAL_KEY_DESTROYED)
		unitd_log("%s: backend=%s key=%s", seal_event_name(ev), backend,
		          key_id ? key_id : "-");
	if (dd->observer != NULL)
		dd->observer(dd->observer_ctx, ev, backend, key_id ? key_id : "-", outcome);
}

void unitd_datadir_set_observer(struct unitd_datadir *dd, unitd_seal_observer_fn *fn, void *ctx)
{
	dd->observer = fn;
	dd->observer_ctx = ctx;
}

static int seal_backend_new(const struct unitd_config *cfg, struct unitd_seal **out, char *err,
                            size_t errlen)
{
	switch (cfg->seal) {
	case UNITD_SEAL_FILE:
		return unitd_seal_file_new(out, err, errlen);
	case UNITD_SEAL_TPM2:
		return unitd_seal_tpm2_new(cfg, out, err, errlen);
	case UNITD_SEAL_PKCS11:
		return unitd_seal_pkcs11_new(cfg, out, err, errlen);
	}
	snprintf(err, errlen, "unknown sealing backend");
	return KY_ERR_INTERNAL;
}

/* ---- data directory ---- */

/* Temp files of writes cut short by a crash (ky_file_write_atomic, unitd_seal_ref_write):
 * the lock is held, so nobody else is writing them. */
static void store_remove_stale(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "state.sealed.tmp.", 17) != 0 &&
		    !(strncmp(e->d_name, "seal.", 5) == 0 && strstr(e->d_name, ".tmp.") != NULL))
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			unitd_log("removed '%s/%s' left by an interrupted write", dir, e->d_name);
	}
	closedir(d);
}

int unitd_datadir_open(const struct unitd_config *cfg, struct unitd_datadir *dd, char *err,
                       size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	const char *data_dir = cfg->data_dir;
	char *lock_path = NULL, at[PATH_MAX];
	struct stat sb;

	memset(dd, 0, sizeof(*dd));
	dd->lock_fd = -1;
	if ((dd->dir = strdup(data_dir)) == NULL ||
	    asprintf(&dd->state_path, "%s/state.sealed", data_dir) < 0 ||
	    asprintf(&lock_path, "%s/lock", data_dir) < 0) {
		lock_path = NULL;
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	/* mkdir -p, 0700 for every directory it makes; a file in its place is said below */
	if ((r = ky_mkdir_p(data_dir, 0700, at, sizeof(at))) != 0 &&
	    !(r == KY_ERR_IO && errno == ENOTDIR && strcmp(at, data_dir) == 0 &&
	      stat(data_dir, &sb) == 0)) {
		snprintf(err, errlen, "cannot create data directory '%s': %s",
		         at[0] != '\0' ? at : data_dir,
		         r == KY_ERR_USAGE ? "path too long" : strerror(errno));
		goto out;
	}
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

	dd->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (dd->lock_fd < 0) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot open '%s': %s", lock_path, strerror(errno));
		goto out;
	}
	if (flock(dd->lock_fd, LOCK_EX | LOCK_NB) != 0) {
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
	if ((r = seal_backend_new(cfg, &dd->seal, err, errlen)) != 0)
		goto out;
	if (asprintf(&dd->key_path, "%s/%s", data_dir, dd->seal->ops->ref_name) < 0 ||
	    asprintf(&dd->next_path, "%s/%s.next", data_dir, dd->seal->ops->ref_name) < 0) {
		dd->next_path = NULL;
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	r = 0;
out:
	free(lock_path);
	if (r != 0)
		unitd_datadir_release(dd);
	return r;
}

void unitd_datadir_release(struct unitd_datadir *dd)
{
	if (dd == NULL)
		return;
	if (dd->seal != NULL) {
		dd->seal->ops->key_free(dd->key);
		dd->seal->ops->key_free(dd->old);
		dd->seal->ops->free(dd->seal);
	}
	if (dd->lock_fd >= 0)
		close(dd->lock_fd);
	free(dd->dir);
	free(dd->state_path);
	free(dd->key_path);
	free(dd->next_path);
	memset(dd, 0, sizeof(*dd));
	dd->lock_fd = -1;
}

/* ---- seal key switch ---- */

/* Destroys k in its device and removes its reference at path. */
static int seal_key_discard(struct unitd_datadir *dd, struct unitd_seal_key *k, const char *path,
                            char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;

	if ((r = dd->seal->ops->destroy(dd->seal, k, err, errlen)) != 0)
		return r;
	if (unlink(path) != 0 && errno != ENOENT) {
		snprintf(err, errlen, "cannot remove seal key '%s': %s", path, strerror(errno));
		return KY_ERR_IO;
	}
	if (unitd_seal_fsync_dir(path) != 0)
		unitd_log("warning: cannot sync the directory of '%s'", path);
	seal_event(dd, UNITD_SEAL_KEY_DESTROYED, k->id, 0);
	return 0;
}

/* The state on disk is sealed under dd->key, whose reference is still .next: destroys the
 * old key and moves .next over its reference. */
static int seal_switch_finish(struct unitd_datadir *dd, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;

	if (!dd->key_in_next)
		return 0;
	if (dd->old != NULL) {
		if ((r = dd->seal->ops->destroy(dd->seal, dd->old, err, errlen)) != 0)
			return r;
		seal_event(dd, UNITD_SEAL_KEY_DESTROYED, dd->old->id, 0);
		dd->seal->ops->key_free(dd->old);
		dd->old = NULL;
	}
	if (rename(dd->next_path, dd->key_path) != 0) {
		snprintf(err, errlen, "cannot rename '%s' to '%s': %s", dd->next_path, dd->key_path,
		         strerror(errno));
		return KY_ERR_IO;
	}
	if ((r = unitd_seal_fsync_dir(dd->key_path)) != 0) {
		snprintf(err, errlen, "cannot sync the data directory '%s'", dd->dir);
		return r;
	}
	dd->key_in_next = false;
	return 0;
}

/* ---- sealed state ---- */

static int state_aad(const char *instance, const char *unit, const char *backend,
                     const char *key_id, struct ky_buf *aad)
{
	int r = KY_ERR_INTERNAL;

	if ((r = ky_buf_append(aad, SEAL_AAD_LABEL, sizeof(SEAL_AAD_LABEL))) != 0 ||
	    (r = ky_buf_append(aad, instance, strlen(instance) + 1)) != 0 ||
	    (r = ky_buf_append(aad, unit, strlen(unit) + 1)) != 0 ||
	    (r = ky_buf_append(aad, backend, strlen(backend) + 1)) != 0 ||
	    (r = ky_buf_append(aad, key_id, strlen(key_id))) != 0)
		return r;
	return 0;
}

/* Seals d under k and writes it atomically. */
static int state_write_under(struct unitd_datadir *dd, struct unitd_seal_key *k,
                             const struct ky_domain *d)
{
	int r = KY_ERR_INTERNAL;
	const char *backend = dd->seal->ops->name;
	struct ky_buf plain = {0}, aad = {0}, out = {0}, sealed = {0};

	if ((r = ky_domain_serialize(d, &plain)) != 0)
		goto out;
	if ((r = state_aad(d->instance, d->unit, backend, k->id, &aad)) != 0)
		goto out;
	if ((r = ky_buf_append_str(&out, SEAL_MAGIC)) != 0 ||
	    (r = ky_buf_append_str(&out, "instance=")) != 0 ||
	    (r = ky_buf_append_str(&out, d->instance)) != 0 ||
	    (r = ky_buf_append_str(&out, "\nunit=")) != 0 ||
	    (r = ky_buf_append_str(&out, d->unit)) != 0 ||
	    (r = ky_buf_append_str(&out, "\nseal=")) != 0 ||
	    (r = ky_buf_append_str(&out, backend)) != 0 ||
	    (r = ky_buf_append_str(&out, "\nkey=")) != 0 ||
	    (r = ky_buf_append_str(&out, k->id)) != 0 || (r = ky_buf_append_str(&out, "\n\n")) != 0)
		goto out;
	if ((r = dd->seal->ops->seal(dd->seal, k, aad.data, aad.len, plain.data, plain.len,
	                             &sealed)) != 0)
		goto out;
	if ((r = ky_buf_append(&out, sealed.data, sealed.len)) != 0)
		goto out;
	if ((r = ky_file_write_atomic(dd->state_path, out.data, out.len, 0600)) != 0)
		goto out;
	unitd_audit_seal(d);
	r = 0;
out:
	seal_event(dd, UNITD_SEAL_STATE_SEALED, k->id, r);
	ky_buf_free(&plain);
	ky_buf_free(&aad);
	ky_buf_free(&out);
	ky_buf_free(&sealed);
	return r;
}

int unitd_state_write(struct unitd_datadir *dd, const struct ky_domain *d)
{
	return state_write_under(dd, dd->key, d);
}

int unitd_state_rekey(struct unitd_datadir *dd, const struct ky_domain *d)
{
	int r = KY_ERR_INTERNAL;
	char err[UNITD_ERR_MAX] = "";
	struct unitd_seal_key *k = NULL;

	/* A switch whose last step failed is finished first: .next is the live key then. */
	if ((r = seal_switch_finish(dd, err, sizeof(err))) != 0) {
		unitd_log("error: cannot finish replacing the seal key: %s", err);
		goto out;
	}
	if ((r = dd->seal->ops->create(dd->seal, dd->next_path, &k, err, sizeof(err))) != 0) {
		unitd_log("error: cannot make a new seal key: %s", err);
		goto out;
	}
	seal_event(dd, UNITD_SEAL_KEY_CREATED, k->id, 0);
	if ((r = state_write_under(dd, k, d)) != 0) {
		/* The state on disk is still the old one, under the old key. */
		if (seal_key_discard(dd, k, dd->next_path, err, sizeof(err)) != 0)
			unitd_log("error: cannot remove the unused new seal key: %s", err);
		goto out;
	}
	/* Committed: the state on disk is sealed under k. */
	dd->old = dd->key;
	dd->key = k;
	k = NULL; /* transferred */
	dd->key_in_next = true;
	if (seal_switch_finish(dd, err, sizeof(err)) != 0)
		unitd_log("error: the state is sealed under the new seal key, but the old one is "
		          "not destroyed yet (retried at the next zeroize and at start): %s",
		          err);
	r = 0;
out:
	if (k != NULL)
		dd->seal->ops->key_free(k);
	return r;
}

/* Reads one "name=value\n" header line at *pos into val (max characters). */
static int state_header_line(const struct ky_buf *b, size_t *pos, const char *name, char *val,
                             size_t max)
{
	size_t nlen = strlen(name), i = *pos, len = 0;

	if (b->len - i < nlen + 1 || memcmp(b->data + i, name, nlen) != 0 ||
	    b->data[i + nlen] != '=')
		return KY_ERR_MALFORMED;
	i += nlen + 1;
	while (i < b->len && b->data[i] != '\n') {
		if (len >= max || b->data[i] < 0x21 || b->data[i] > 0x7e)
			return KY_ERR_MALFORMED;
		val[len++] = (char)b->data[i++];
	}
	if (i >= b->len || len == 0)
		return KY_ERR_MALFORMED;
	val[len] = '\0';
	*pos = i + 1;
	return 0;
}

/* The readable header of a sealed state. */
struct state_header {
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	char backend[16];
	char key_id[UNITD_SEAL_ID_MAX + 1];
	size_t body; /* offset of the sealed bytes */
};

static int state_header_parse(const struct ky_buf *file, struct state_header *h)
{
	size_t pos = strlen(SEAL_MAGIC);

	memset(h, 0, sizeof(*h));
	if (file->len >= pos && memcmp(file->data, SEAL_MAGIC_V1, pos) == 0)
		return KY_ERR_UNSUPPORTED;
	if (file->len < pos || memcmp(file->data, SEAL_MAGIC, pos) != 0)
		return KY_ERR_MALFORMED;
	if (state_header_line(file, &pos, "instance", h->instance, KY_ID_MAX) != 0 ||
	    state_header_line(file, &pos, "unit", h->unit, KY_ID_MAX) != 0)
		return KY_ERR_MALFORMED;
	if (state_header_line(file, &pos, "seal", h->backend, sizeof(h->backend) - 1) != 0 ||
	    state_header_line(file, &pos, "key", h->key_id, UNITD_SEAL_ID_MAX) != 0)
		return KY_ERR_MALFORMED;
	if (pos >= file->len || file->data[pos] != '\n')
		return KY_ERR_MALFORMED;
	h->body = pos + 1;
	return 0;
}

/* Which seal key opens the state of header h: dd->key is set to it, attached to its device.
 * *other receives the other reference's key, to discard once the state opened
 * (*other_path: its path), and dd->key_in_next says whether the kept key is .next. Touches
 * no file. */
static int state_pick_key(struct unitd_datadir *dd, const struct state_header *h,
                          struct unitd_seal_key **other, const char **other_path, char *err,
                          size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	const struct unitd_seal_ops *ops = dd->seal->ops;
	struct unitd_seal_key *cur = NULL, *next = NULL;

	*other = NULL;
	*other_path = NULL;
	if (strcmp(h->backend, ops->name) != 0) {
		r = KY_ERR_SEAL_BACKEND_MISMATCH;
		snprintf(err, errlen,
		         "sealed state '%s' was sealed by the '%s' backend, but unit.conf says "
		         "seal = %s: set seal = %s (a unit cannot change its sealing backend); "
		         "refusing to start",
		         dd->state_path, h->backend, ops->name, h->backend);
		goto out;
	}
	r = ops->read(dd->seal, dd->key_path, &cur, err, errlen);
	if (r != 0 && r != KY_ERR_NOT_FOUND)
		goto out;
	r = ops->read(dd->seal, dd->next_path, &next, err, errlen);
	if (r != 0 && r != KY_ERR_NOT_FOUND)
		goto out;
	if (cur != NULL && strcmp(cur->id, h->key_id) == 0) {
		dd->key = cur;
		cur = NULL; /* transferred */
		*other = next;
		next = NULL; /* transferred */
		*other_path = dd->next_path;
		dd->key_in_next = false;
	} else if (next != NULL && strcmp(next->id, h->key_id) == 0) {
		dd->key = next;
		next = NULL; /* transferred */
		*other = cur;
		cur = NULL; /* transferred */
		*other_path = dd->key_path;
		dd->key_in_next = true;
	} else if (cur != NULL || next != NULL) {
		r = KY_ERR_SEAL_KEY_REPLACED;
		snprintf(err, errlen,
		         "sealed state '%s' is sealed under seal key %s, but this unit's seal key "
		         "is %s: the state is older than the unit's last zeroize (restored from a "
		         "backup?) or comes from another unit, and no seal key that could open it "
		         "exists any more; refusing to start and leaving it as it is",
		         dd->state_path, h->key_id, cur != NULL ? cur->id : next->id);
		goto out;
	} else {
		r = KY_ERR_STATE_CORRUPT;
		snprintf(err, errlen,
		         "seal key '%s' is missing but the sealed state '%s' exists: restore the "
		         "seal key; refusing to start",
		         dd->key_path, dd->state_path);
		goto out;
	}
	if ((r = ops->attach(dd->seal, dd->key, err, errlen)) != 0)
		goto out;
	r = 0;
out:
	if (r != 0) {
		ops->key_free(dd->key);
		dd->key = NULL;
		ops->key_free(*other);
		*other = NULL;
	}
	ops->key_free(cur);
	ops->key_free(next);
	return r;
}

static int state_open(struct unitd_datadir *dd, const struct unitd_config *cfg,
                      const struct ky_buf *file, struct ky_domain **out, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct state_header h;
	struct ky_buf aad = {0}, plain = {0};
	struct ky_domain *d = NULL;
	struct unitd_seal_key *other = NULL;
	const char *other_path = NULL;

	r = state_header_parse(file, &h);
	if (r == KY_ERR_UNSUPPORTED) {
		r = KY_ERR_STATE_CORRUPT;
		snprintf(err, errlen,
		         "'%s' is a sealed state of the first format (KYOKSEAL1), which this kyok "
		         "does not open: make the unit anew (kyok down --purge) or start it with "
		         "the kyok that wrote it; refusing to start and leaving it as it is",
		         dd->state_path);
		goto out;
	}
	if (r != 0) {
		r = KY_ERR_STATE_CORRUPT;
		snprintf(err, errlen,
		         "'%s' is not a kyok sealed state (bad header); refusing to start and "
		         "leaving it as it is",
		         dd->state_path);
		goto out;
	}
	if (strcmp(h.instance, cfg->instance) != 0 || strcmp(h.unit, cfg->unit) != 0) {
		r = KY_ERR_CONFIG;
		snprintf(err, errlen,
		         "'%s': state belongs to unit %s of instance %s, but the config says unit "
		         "%s of instance %s; refusing to start",
		         dd->state_path, h.unit, h.instance, cfg->unit, cfg->instance);
		goto out;
	}
	if ((r = state_pick_key(dd, &h, &other, &other_path, err, errlen)) != 0) {
		seal_event(dd, UNITD_SEAL_UNSEAL_REFUSED, h.key_id, r);
		goto out;
	}
	if ((r = state_aad(h.instance, h.unit, h.backend, h.key_id, &aad)) != 0)
		goto out;
	r = dd->seal->ops->open(dd->seal, dd->key, aad.data, aad.len, file->data + h.body,
	                        file->len - h.body, &plain);
	seal_event(dd, r == 0 ? UNITD_SEAL_STATE_UNSEALED : UNITD_SEAL_UNSEAL_REFUSED, dd->key->id,
	           r);
	if (r == KY_ERR_STATE_CORRUPT) {
		snprintf(err, errlen,
		         "sealed state '%s' cannot be opened: wrong seal key or damaged file; "
		         "refusing to start and leaving it as it is",
		         dd->state_path);
		goto out;
	}
	if (r != 0) {
		snprintf(err, errlen, "cannot open sealed state '%s': %s", dd->state_path,
		         ky_err_message(r));
		goto out;
	}
	if ((r = ky_domain_parse(plain.data, plain.len, &d)) != 0) {
		snprintf(err, errlen,
		         "sealed state '%s' opens but does not parse (%s); refusing to start",
		         dd->state_path, ky_err_message(r));
		r = KY_ERR_STATE_CORRUPT;
		goto out;
	}
	if (strcmp(d->instance, h.instance) != 0 || strcmp(d->unit, h.unit) != 0) {
		r = KY_ERR_STATE_CORRUPT;
		snprintf(err, errlen,
		         "sealed state '%s' names unit %s of instance %s inside but %s of %s "
		         "outside; refusing to start",
		         dd->state_path, d->unit, d->instance, h.unit, h.instance);
		goto out;
	}
	/* The state opened: what an interrupted key switch left is resolved now. */
	if (dd->key_in_next) {
		unitd_log("finishing a seal key switch cut short: keeping key %s", dd->key->id);
		dd->old = other;
		other = NULL; /* transferred */
		if ((r = seal_switch_finish(dd, err, errlen)) != 0)
			goto out;
	} else if (other != NULL) {
		unitd_log("removing seal key %s, made by a seal key switch cut short", other->id);
		if ((r = seal_key_discard(dd, other, other_path, err, errlen)) != 0)
			goto out;
	}
	*out = d;
	d = NULL; /* transferred */
	r = 0;
out:
	if (other != NULL)
		dd->seal->ops->key_free(other);
	ky_domain_free(d);
	ky_buf_free(&aad);
	ky_buf_free(&plain);
	return r;
}

/* First start: the seal key is made (or one left by a first start cut short is taken). */
int unitd_seal_key_first(struct unitd_datadir *dd, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	const struct unitd_seal_ops *ops = dd->seal->ops;
	struct unitd_seal_key *next = NULL;

	r = ops->read(dd->seal, dd->next_path, &next, err, errlen);
	if (r == 0) {
		/* No state was ever sealed under it. */
		r = seal_key_discard(dd, next, dd->next_path, err, errlen);
		ops->key_free(next);
		if (r != 0)
			return r;
	} else if (r != KY_ERR_NOT_FOUND) {
		return r;
	}
	r = ops->read(dd->seal, dd->key_path, &dd->key, err, errlen);
	if (r == 0) {
		r = ops->attach(dd->seal, dd->key, err, errlen);
		if (r == 0) {
			unitd_log("no sealed state yet: using the existing seal key '%s'",
			          dd->key_path);
			return 0;
		}
		if (r != KY_ERR_SEAL_TPM_KEY_MISSING && r != KY_ERR_SEAL_TOKEN_KEY_MISSING)
			return r;
		/* A reference whose key the device never made (a first start cut short): no
		 * state was ever sealed under it. */
		unitd_log("no sealed state yet and the key of '%s' is not in the %s device: "
		          "making a new seal key",
		          dd->key_path, ops->name);
		err[0] = '\0';
		if ((r = seal_key_discard(dd, dd->key, dd->key_path, err, errlen)) != 0)
			return r;
		ops->key_free(dd->key);
		dd->key = NULL;
	} else if (r != KY_ERR_NOT_FOUND) {
		return r;
	}
	if ((r = ops->create(dd->seal, dd->key_path, &dd->key, err, errlen)) != 0)
		return r;
	seal_event(dd, UNITD_SEAL_KEY_CREATED, dd->key->id, 0);
	return 0;
}

int unitd_state_load(struct unitd_datadir *dd, const struct unitd_config *cfg,
                     struct ky_domain **out, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0};
	struct ky_domain *d = NULL, *moved = NULL;

	r = ky_file_read(dd->state_path, SEAL_STATE_MAX, &file);
	if (r == KY_ERR_NOT_FOUND) {
		if ((r = unitd_seal_key_first(dd, err, errlen)) != 0)
			goto out;
		if ((r = unitd_identity_new_state(dd, cfg, &d, err, errlen)) != 0)
			goto out;
		if ((r = unitd_state_write(dd, d)) != 0) {
			snprintf(err, errlen, "cannot write sealed state '%s': %s", dd->state_path,
			         ky_err_message(r));
			goto out;
		}
		unitd_identity_pending_drop(dd);
		unitd_log("created new unit state in '%s' (imprint mode, seal = %s), identity "
		          "certified by anchor '%s'",
		          dd->state_path, dd->seal->ops->name, cfg->anchor_cert);
	} else if (r != 0) {
		snprintf(err, errlen, "cannot read sealed state '%s': %s", dd->state_path,
		         ky_err_message(r));
		goto out;
	} else {
		if ((r = state_open(dd, cfg, &file, &d, err, errlen)) != 0 ||
		    (r = unitd_anchor_check(d, cfg, err, errlen)) != 0)
			goto out;
		if (strcmp(d->zone, cfg->zone) != 0 || !ky_domain_has_incarnation(d)) {
			/* The operator moved the unit: record the new zone, atomically. A state
			 * sealed before incarnations existed gets one, written before it serves. */
			if ((r = ky_domain_dup(d, &moved)) != 0) {
				snprintf(err, errlen, "cannot copy the unit state: %s",
				         ky_err_message(r));
				goto out;
			}
			snprintf(moved->zone, sizeof(moved->zone), "%s", cfg->zone);
			if (!ky_domain_has_incarnation(moved) &&
			    (r = ky_domain_new_incarnation(moved)) != 0) {
				snprintf(err, errlen, "cannot draw an incarnation: %s",
				         ky_err_message(r));
				goto out;
			}
			if ((r = unitd_state_write(dd, moved)) != 0) {
				snprintf(err, errlen, "cannot write sealed state '%s': %s",
				         dd->state_path, ky_err_message(r));
				goto out;
			}
			if (strcmp(d->zone, moved->zone) != 0)
				unitd_log("zone changed from %s to %s", d->zone, moved->zone);
			if (!ky_domain_has_incarnation(d))
				unitd_log("unit state has no incarnation (sealed by an older "
				          "version): gave it one");
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

static int mark_path(const struct unitd_datadir *dd, char **out)
{
	return asprintf(out, "%s/%s", dd->dir, MARK_FILE) < 0 ? KY_ERR_NOMEM : 0;
}

int unitd_mark_load(struct unitd_datadir *dd, const char *instance, const char *unit,
                    struct ky_store_ledger_pos *pos)
{
	int r = KY_ERR_INTERNAL;
	char *path = NULL;
	struct ky_buf file = {0}, aad = {0}, plain = {0};
	size_t m = strlen(MARK_MAGIC);

	memset(pos, 0, sizeof(*pos));
	if ((r = mark_path(dd, &path)) != 0)
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
	if ((r = dd->seal->ops->open(dd->seal, dd->key, aad.data, aad.len, file.data + m,
	                             file.len - m, &plain)) != 0)
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

int unitd_mark_write(struct unitd_datadir *dd, const char *instance, const char *unit,
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
	if ((r = mark_path(dd, &path)) != 0 || (r = mark_aad(instance, unit, &aad)) != 0 ||
	    (r = dd->seal->ops->seal(dd->seal, dd->key, aad.data, aad.len, plain, sizeof(plain),
	                             &sealed)) != 0 ||
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

int unitd_mark_remove(struct unitd_datadir *dd)
{
	int r = KY_ERR_INTERNAL;
	char *path = NULL;

	if ((r = mark_path(dd, &path)) != 0)
		return r;
	if (unlink(path) != 0 && errno != ENOENT) {
		r = KY_ERR_IO;
		goto out;
	}
	if ((r = unitd_seal_fsync_dir(dd->dir)) != 0)
		goto out;
	r = 0;
out:
	free(path);
	return r;
}
