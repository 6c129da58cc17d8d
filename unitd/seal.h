/* seal.c, seal_file.c, seal_tpm2.c, seal_pkcs11.c: the data directory, the sealed unit state
 * and the storage mark, and the sealing backends.
 *
 * The unit state is sealed under a seal key that one backend makes, finds, uses and
 * destroys. Each key has a reference file in the data directory (ops->ref_name): the key
 * itself for the file backend, what the TPM or token needs to find it for the others. A key
 * has an id (hex) that the sealed state's readable header names.
 */
#ifndef KYOK_UNITD_SEAL_H
#define KYOK_UNITD_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"
#include "kyok/store.h"

struct ky_domain;
struct unitd_config;

#define UNITD_SEAL_ID_MAX 64

struct unitd_seal;
struct unitd_seal_key {
	const struct unitd_seal_ops *ops;
	char id[UNITD_SEAL_ID_MAX + 1];
	void *priv;
};
struct unitd_seal_ops {
	const char *name;     /* as in unit.conf: "file", "tpm2", "pkcs11" */
	const char *ref_name; /* reference file in the data directory: "seal.key" */
	/* Makes a new key and writes its reference at path (never replacing a file). The key is
	 * ready to use. */
	int (*create)(struct unitd_seal *s, const char *path, struct unitd_seal_key **out,
	              char *err, size_t errlen);
	/* Reads the reference at path (KY_ERR_NOT_FOUND when there is none): sets the id and
	 * touches no device. */
	int (*read)(struct unitd_seal *s, const char *path, struct unitd_seal_key **out, char *err,
	            size_t errlen);
	/* Finds a read key in the device and makes it usable: KY_ERR_SEAL_TPM_KEY_MISSING or
	 * KY_ERR_SEAL_TOKEN_KEY_MISSING when the device does not hold it. */
	int (*attach)(struct unitd_seal *s, struct unitd_seal_key *k, char *err, size_t errlen);
	/* Destroys the key in the device (already gone is success); leaves the reference file
	 * to the caller. */
	int (*destroy)(struct unitd_seal *s, struct unitd_seal_key *k, char *err, size_t errlen);
	int (*seal)(struct unitd_seal *s, struct unitd_seal_key *k, const void *aad, size_t aadlen,
	            const uint8_t *pt, size_t n, struct ky_buf *out);
	/* KY_ERR_STATE_CORRUPT when the blob does not open. */
	int (*open)(struct unitd_seal *s, struct unitd_seal_key *k, const void *aad, size_t aadlen,
	            const uint8_t *in, size_t n, struct ky_buf *out);
	void (*key_free)(struct unitd_seal_key *k); /* NULL is a no-op */
	void (*free)(struct unitd_seal *s);
};
struct unitd_seal {
	const struct unitd_seal_ops *ops;
	void *priv;
};

/* The file backend (seal_file.c): the key itself in its reference file. */
int unitd_seal_file_new(struct unitd_seal **out, char *err, size_t errlen) KY_WUR;
/* Backends other than file: connect to the device named in cfg. */
int unitd_seal_tpm2_new(const struct unitd_config *cfg, struct unitd_seal **out, char *err,
                        size_t errlen) KY_WUR;
int unitd_seal_pkcs11_new(const struct unitd_config *cfg, struct unitd_seal **out, char *err,
                          size_t errlen) KY_WUR;

/* For the backends (seal_file.c): a reference file written whole (temp file, fsync, link: an existing
 * file is never replaced, KY_ERR_EXISTS) with mode 0600; read with the same checks as the
 * seal key always had (regular, owned by us, 0600 at most, no symlink, at most max bytes;
 * KY_ERR_NOT_FOUND when absent); one "name=value\n" line of a text reference. */
int unitd_seal_ref_write(const char *path, const void *data, size_t n, char *err,
                         size_t errlen) KY_WUR;
int unitd_seal_ref_read(const char *path, size_t max, struct ky_buf *out, char *err,
                        size_t errlen) KY_WUR;
int unitd_seal_ref_field(const struct ky_buf *b, const char *name, char *out, size_t outlen) KY_WUR;
/* fsync of the directory holding path. */
int unitd_seal_fsync_dir(const char *path) KY_WUR;

/* What sealing does, for whoever records it (an audit log): key_id "-" when unknown,
 * outcome 0 or the error code. */
enum unitd_seal_event {
	UNITD_SEAL_KEY_CREATED,
	UNITD_SEAL_KEY_DESTROYED,
	UNITD_SEAL_STATE_SEALED,
	UNITD_SEAL_STATE_UNSEALED,
	UNITD_SEAL_UNSEAL_REFUSED,
};
typedef void unitd_seal_observer_fn(void *ctx, enum unitd_seal_event ev, const char *backend,
                                    const char *key_id, int outcome);

/* Holds the data directory: created 0700 when missing, locked against a second daemon. */
struct unitd_datadir {
	char *dir;
	char *state_path;
	char *key_path;  /* the seal key's reference */
	char *next_path; /* the next one's, while the key is being replaced */
	int lock_fd;
	struct unitd_seal *seal;
	struct unitd_seal_key *key; /* the state on disk is sealed under it */
	struct unitd_seal_key *old; /* replaced, not destroyed yet (key_in_next) */
	bool key_in_next;           /* key's reference is still next_path */
	unitd_seal_observer_fn *observer;
	void *observer_ctx;
};

/* Creates or checks cfg->data_dir, takes its lock, connects the sealing backend cfg->seal
 * names. The seal key is found or made by unitd_state_load. */
int unitd_datadir_open(const struct unitd_config *cfg, struct unitd_datadir *dd, char *err,
                       size_t errlen) KY_WUR;
void unitd_datadir_release(struct unitd_datadir *dd);
/* Every seal event (key made or destroyed, state sealed or unsealed or refused) is passed to
 * fn as well as logged; fn NULL stops that. */
void unitd_datadir_set_observer(struct unitd_datadir *dd, unitd_seal_observer_fn *fn, void *ctx);
/* Before the first state: finds the seal key a first start cut short left, or makes one
 * (dd->key). Whatever is sealed before the state (the pending identity key) uses it. */
int unitd_seal_key_first(struct unitd_datadir *dd, char *err, size_t errlen) KY_WUR;
/* Loads the unit state, or creates and writes a new one (and its seal key) on first start.
 * Refuses a state that does not open (never overwrites it), belongs to another unit or
 * instance, names another backend or a seal key that no longer exists. Finishes or undoes a
 * seal key switch that a crash cut short, once the state opened. */
int unitd_state_load(struct unitd_datadir *dd, const struct unitd_config *cfg,
                     struct ky_domain **out, char *err, size_t errlen) KY_WUR;
/* Seals d and writes it atomically: afterwards the file holds d, or on error the old state. */
int unitd_state_write(struct unitd_datadir *dd, const struct ky_domain *d) KY_WUR;
/* Same, under a new seal key, and destroys the old one (zeroize): no copy of an earlier
 * state opens afterwards. On error the file holds the old state under the old key. */
int unitd_state_rekey(struct unitd_datadir *dd, const struct ky_domain *d) KY_WUR;

/* The highest position of key storage this unit has seen (data_dir/storage.mark, sealed):
 * 0/0 when there is no mark. The mark lets a restarted unit refuse storage older than it saw,
 * or missing. */
int unitd_mark_load(struct unitd_datadir *dd, const char *instance, const char *unit,
                    struct ky_store_ledger_pos *pos) KY_WUR;
int unitd_mark_write(struct unitd_datadir *dd, const char *instance, const char *unit,
                     const struct ky_store_ledger_pos *pos) KY_WUR;
/* Removes the mark (before the seal key it is sealed under is replaced). */
int unitd_mark_remove(struct unitd_datadir *dd) KY_WUR;

#endif
