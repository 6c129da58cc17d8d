/* Ceremony commands whose effect is on key storage, and the re-encipherment worker.
 *
 * lib/ceremony checks these commands like any other (signatures, counter, registers); the
 * daemon carries them out against the store between the check and the state write:
 *
 *   apikey-create   insert the API key's hash, tagged (same id, hash and role again = done
 *                   already; a row of that key that does not verify is written again);
 *                   needs a master key: the tag's key is kept under it
 *   apikey-revoke   mark it revoked, tagged again (a row that does not verify too)
 *   mk-setimm       refused while any record is under the current master key; when it
 *                   gives the unit its first master key, the token signing key and instance
 *                   policies found under a master key no register holds (crypto-shredded)
 *                   are replaced / removed
 *   mk-clrnew       refused while any record is under the new master key
 *   mk-clrcur       refused while any record is under the current master key
 *   mk-reencipher   after the write: a worker thread moves every record current -> new in
 *                   batches (resumable: a new command continues where a crash stopped it)
 *   storage-accept  key storage taken as it is (a restore from a backup the administrators
 *                   accept): a new storage digest past every position the unit has seen
 *
 * The worker holds its own copies of both keys and stops as soon as the registers it was
 * started for are gone (zeroize, clear, set-immediate).
 */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyok/ceremony.h"
#include "kyok/ceremony_mk.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/store.h"
#include "unitd/api.h"
#include "unitd/config.h"
#include "unitd/keystore.h"
#include "unitd/log.h"
#include "unitd/storage_ops.h"

#define STORAGE_VP_SHOWN      8
#define STORAGE_PAUSE_TICK_MS 20 /* a pause looks at the stop flag this often */

struct unitd_storage {
	struct unitd_keystore *ks; /* NULL: no key storage */
	uint32_t batch;            /* records per transaction */
	uint32_t pause_ms;         /* after each batch */
	pthread_mutex_t lock;
	bool joinable; /* a worker was started and not joined */
	pthread_t thread;
	bool running;
	atomic_bool stop;
	uint64_t done, total;
	int error; /* of the last run, 0 = none */
	uint8_t from_vp[KY_VP_LEN], to_vp[KY_VP_LEN];
	bool first_mk; /* the command checked last is a set-immediate on an empty register */
	struct ky_mk *old, *new_mk; /* the worker's copies */
};

int unitd_storage_new(struct unitd_keystore *ks, uint32_t batch, uint32_t pause_ms,
                      struct unitd_storage **out)
{
	struct unitd_storage *so = calloc(1, sizeof(*so));

	*out = NULL;
	if (so == NULL)
		return KY_ERR_NOMEM;
	if (pthread_mutex_init(&so->lock, NULL) != 0) {
		free(so);
		return KY_ERR_INTERNAL;
	}
	so->ks = ks;
	so->batch = batch != 0 ? batch : UNITD_REENC_BATCH_DEFAULT;
	so->pause_ms = pause_ms;
	atomic_init(&so->stop, false);
	*out = so;
	return 0;
}

static void storage_join(struct unitd_storage *so)
{
	bool joinable;

	pthread_mutex_lock(&so->lock);
	joinable = so->joinable;
	so->joinable = false;
	pthread_mutex_unlock(&so->lock);
	if (joinable)
		pthread_join(so->thread, NULL);
}

void unitd_storage_free(struct unitd_storage *so)
{
	if (so == NULL)
		return;
	atomic_store(&so->stop, true);
	storage_join(so);
	ky_mk_free(so->old);
	ky_mk_free(so->new_mk);
	pthread_mutex_destroy(&so->lock);
	free(so);
}

/* ---- before the state write ---- */

static void storage_vp_short(const uint8_t vp[KY_VP_LEN], char out[2 * STORAGE_VP_SHOWN + 1])
{
	ky_hex_encode(vp, STORAGE_VP_SHOWN, out);
}

static int storage_count(struct unitd_storage *so, const uint8_t vp[KY_VP_LEN], uint64_t *n,
                         char *detail, size_t detaillen)
{
	int r = ky_kms_count_under(unitd_keystore_store(so->ks), vp, n);

	if (r != 0)
		snprintf(detail, detaillen, "cannot count the records in key storage: %s",
		         ky_err_message(r));
	return r;
}

/* A read hold on the registers for an apikey op: the rows are tagged under a key that lives
 * under the master key. */
static int storage_enter(struct unitd_storage *so, const struct ky_domain *old, struct ky_kms *kms,
                         char *detail, size_t detaillen)
{
	int r = unitd_keystore_enter(so->ks, kms);

	if (r == KY_ERR_NO_MASTER_KEY)
		snprintf(detail, detaillen,
		         "unit %s holds no master key: API keys are tagged under a key that is "
		         "kept under it (finish the master key ceremony first)",
		         old->unit);
	else if (r == KY_ERR_MK_MISMATCH)
		snprintf(detail, detaillen,
		         "the storage integrity key is under a master key this unit does not hold: "
		         "it cannot check key storage");
	else if (r != 0)
		snprintf(detail, detaillen, "cannot read key storage: %s", ky_err_message(r));
	return r;
}

static void storage_apikey_detail(int r, const char *id, char *detail, size_t detaillen)
{
	if (r == KY_ERR_MK_MISMATCH)
		snprintf(detail, detaillen,
		         "the API key integrity key is under a master key this unit does not hold");
	else if (r == KY_ERR_CONFLICT)
		snprintf(detail, detaillen,
		         "API key '%s' changed in key storage meanwhile: run the command again",
		         id);
}

/* Writes k (tagged here) over the stored row have, whatever have's tag says: the signed
 * command is the authority. */
static int storage_apikey_rewrite(struct unitd_storage *so, const struct ky_kms *kms, int64_t now,
                                  struct ky_store_apikey *k, const struct ky_store_apikey *have)
{
	int r;

	if ((r = unitd_keystore_apikey_seal(so->ks, kms, now, k)) != 0)
		return r;
	return ky_store_apikey_update(unitd_keystore_store(so->ks), k,
	                              have->has_mac ? have->mac : NULL);
}

static int storage_apikey_create(struct unitd_storage *so, const struct ky_domain *old,
                                 const struct ky_command *c, char *detail, size_t detaillen)
{
	struct ky_store *st = unitd_keystore_store(so->ks);
	struct ky_store_apikey k, have;
	struct ky_kms kms;
	int64_t now = (int64_t)time(NULL);
	int r;

	if ((r = storage_enter(so, old, &kms, detail, detaillen)) != 0)
		return r;
	memset(&k, 0, sizeof(k));
	snprintf(k.id, sizeof(k.id), "%s", c->apikey_id);
	snprintf(k.name, sizeof(k.name), "%s", c->apikey_name);
	snprintf(k.role, sizeof(k.role), "%s", c->role);
	memcpy(k.hash, c->hash, KY_APIKEY_HASH_LEN);
	k.created = now;
	/* A row deleted by hand (the storage digest still holds it) is not made anew either:
	 * it may have been a revoked one. */
	if ((r = ky_store_apikey_get(st, k.id, &have)) == KY_ERR_RECORD_MISSING) {
		snprintf(detail, detaillen,
		         "API key '%s': its stored row was deleted from key storage by hand (the "
		         "storage digest still holds it): it is not written again; make a new API "
		         "key under another name",
		         k.id);
		r = KY_ERR_APIKEY_ROW_ALTERED;
		goto out;
	}
	if (r != 0 && r != KY_ERR_NOT_FOUND)
		goto out;
	if ((r = unitd_keystore_apikey_seal(so->ks, &kms, now, &k)) != 0) {
		storage_apikey_detail(r, k.id, detail, detaillen);
		goto out;
	}
	r = ky_store_apikey_insert(st, &k);
	if (r != KY_ERR_EXISTS)
		goto out;
	/* Sent to every unit of the instance, and re-sent after a failure: the same key again
	 * is success. */
	r = ky_store_apikey_get(st, k.id, &have);
	if (r == KY_ERR_NOT_FOUND) {
		snprintf(detail, detaillen,
		         "the same API key secret is registered under another id: make a new one");
		r = KY_ERR_EXISTS;
		goto out;
	}
	if (r != 0)
		goto out;
	r = unitd_keystore_apikey_check(so->ks, &kms, now, &have);
	if (r != 0 && r != KY_ERR_RECORD_TAMPERED && r != KY_ERR_RECORD_STALE) {
		storage_apikey_detail(r, k.id, detail, detaillen);
		goto out;
	}
	if (CRYPTO_memcmp(have.hash, k.hash, KY_APIKEY_HASH_LEN) != 0 ||
	    strcmp(have.role, k.role) != 0) {
		snprintf(detail, detaillen, "an API key with id '%s' exists already%s", k.id,
		         r != 0         ? " (its row does not verify)"
		         : have.revoked ? " (revoked)"
		                        : "");
		r = KY_ERR_EXISTS;
		goto out;
	}
	if (r != 0) {
		/* The same key, but its row does not verify: altered (a revocation undone, say), or
		 * without a tag. Neither is written again: a row rewritten from the command would
		 * drop whatever the row held before it was altered, a revocation first; and a row
		 * without a tag cannot tell whether it was ever revoked (a tag removed and a
		 * revocation undone look like a row made before rows were tagged). A new key
		 * under another name is the way; apikey-revoke still revokes this row. */
		snprintf(
		    detail, detaillen,
		    "API key '%s': its stored row does not verify (%s): it is not written again; "
		    "make a new API key under another name, and revoke this one "
		    "(kyok tke apikey-revoke --id %s)",
		    k.id, have.has_mac ? "altered" : "it has no tag", k.id);
		r = KY_ERR_APIKEY_ROW_ALTERED;
		goto out;
	}
	if (have.revoked != 0) {
		snprintf(detail, detaillen, "API key '%s' exists already (revoked)", k.id);
		r = KY_ERR_EXISTS;
		goto out;
	}
	r = 0;
out:
	unitd_keystore_leave(so->ks);
	if (r != 0 && detail[0] == '\0')
		snprintf(detail, detaillen, "cannot store the API key: %s", ky_err_message(r));
	OPENSSL_cleanse(&k, sizeof(k));
	return r;
}

static int storage_apikey_revoke(struct unitd_storage *so, const struct ky_domain *old,
                                 const struct ky_command *c, char *detail, size_t detaillen)
{
	struct ky_store *st = unitd_keystore_store(so->ks);
	struct ky_store_apikey have, k;
	struct ky_kms kms;
	int64_t now = (int64_t)time(NULL);
	int r, check;

	if ((r = storage_enter(so, old, &kms, detail, detaillen)) != 0)
		return r;
	if ((r = ky_store_apikey_get(st, c->apikey_id, &have)) != 0)
		goto out;
	check = unitd_keystore_apikey_check(so->ks, &kms, now, &have);
	if (check != 0 && check != KY_ERR_RECORD_TAMPERED && check != KY_ERR_RECORD_STALE) {
		r = check;
		storage_apikey_detail(r, c->apikey_id, detail, detaillen);
		goto out;
	}
	if (check == 0 && have.revoked != 0)
		goto out; /* re-sent: done already */
	/* A row that does not verify is revoked all the same (tagged again as it stands, with
	 * a revocation date): whatever was done to it, it serves nobody from now on. */
	k = have;
	k.revoked = now > 0 ? now : 1;
	if ((r = storage_apikey_rewrite(so, &kms, now, &k, &have)) != 0)
		storage_apikey_detail(r, c->apikey_id, detail, detaillen);
	else if (check != 0)
		unitd_log(
		    "apikey-revoke: the row of API key %s did not verify: revoked all the same",
		    c->apikey_id);
out:
	unitd_keystore_leave(so->ks);
	if (r == KY_ERR_NOT_FOUND)
		snprintf(detail, detaillen, "no API key with id '%s'", c->apikey_id);
	else if (r != 0 && detail[0] == '\0')
		snprintf(detail, detaillen, "cannot revoke API key '%s': %s", c->apikey_id,
		         ky_err_message(r));
	return r;
}

/* storage-accept: key storage taken as it is, with a new digest past every position this
 * unit has seen (the signatures were checked: the administrators accept a restore). */
static int storage_accept(struct unitd_storage *so, const struct ky_domain *old, char *detail,
                          size_t detaillen)
{
	struct ky_store_ledger_pos pos;
	int r;

	if (so->ks == NULL) {
		snprintf(detail, detaillen, "unit %s has no 'store' in its unit.conf", old->unit);
		return KY_ERR_NO_STORE;
	}
	if ((r = unitd_keystore_accept(so->ks, &pos)) != 0) {
		if (r == KY_ERR_NO_MASTER_KEY)
			snprintf(detail, detaillen,
			         "unit %s holds no master key: key storage is checked under a key "
			         "kept under it",
			         old->unit);
		else
			snprintf(detail, detaillen, "key storage not accepted: %s",
			         ky_err_message(r));
		return r;
	}
	unitd_log("storage-accept: key storage taken as it is by signed command: generation "
	          "%llu, epoch %llu",
	          (unsigned long long)pos.gen, (unsigned long long)pos.epoch);
	return 0;
}

int unitd_storage_before_write(struct unitd_storage *so, const struct ky_domain *old,
                               const struct ky_verified *v, char *detail, size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	const struct ky_command *c = ky_verified_command(v);
	uint64_t cnt = 0;
	char vp[2 * STORAGE_VP_SHOWN + 1];
	bool running;

	so->first_mk = false;
	switch (c->op) {
	case KY_OP_APIKEY_CREATE:
	case KY_OP_APIKEY_REVOKE:
	case KY_OP_MK_REENCIPHER:
		if (so->ks == NULL) {
			snprintf(detail, detaillen, "unit %s has no 'store' in its unit.conf",
			         old->unit);
			r = KY_ERR_NO_STORE;
			goto out;
		}
		if (c->op == KY_OP_APIKEY_CREATE)
			r = storage_apikey_create(so, old, c, detail, detaillen);
		else if (c->op == KY_OP_APIKEY_REVOKE)
			r = storage_apikey_revoke(so, old, c, detail, detaillen);
		else
			r = 0; /* mk-reencipher: the worker starts after the write */
		goto out;
	case KY_OP_STORAGE_ACCEPT:
		r = storage_accept(so, old, detail, detaillen);
		goto out;
	case KY_OP_MK_SETIMM:
	case KY_OP_MK_CLRCUR:
		so->first_mk = c->op == KY_OP_MK_SETIMM && old->cur_state != KY_CUR_VALID;
		if (so->ks == NULL || old->cur_state != KY_CUR_VALID)
			break;
		if ((r = storage_count(so, old->cur_vp, &cnt, detail, detaillen)) != 0)
			goto out;
		if (cnt > 0) {
			storage_vp_short(old->cur_vp, vp);
			snprintf(detail, detaillen,
			         "%llu record(s) in key storage are under the current master key "
			         "(VP %s...)",
			         (unsigned long long)cnt, vp);
			r = c->op == KY_OP_MK_SETIMM ? KY_ERR_NOT_REENCIPHERED
			                             : KY_ERR_RECORDS_UNDER_CURRENT;
			goto out;
		}
		break;
	case KY_OP_MK_CLRNEW:
		if (so->ks == NULL || old->new_state == KY_NEW_EMPTY)
			break;
		pthread_mutex_lock(&so->lock);
		running = so->running && memcmp(so->to_vp, old->new_vp, KY_VP_LEN) == 0;
		pthread_mutex_unlock(&so->lock);
		if (running) {
			snprintf(detail, detaillen,
			         "records are being moved to the new master key");
			r = KY_ERR_REENCIPHER_RUNNING;
			goto out;
		}
		if ((r = storage_count(so, old->new_vp, &cnt, detail, detaillen)) != 0)
			goto out;
		if (cnt > 0) {
			storage_vp_short(old->new_vp, vp);
			snprintf(detail, detaillen,
			         "%llu record(s) in key storage are under the new master key (VP "
			         "%s...): "
			         "finish the rotation with cryptounit-mk-rotate",
			         (unsigned long long)cnt, vp);
			r = KY_ERR_RECORDS_UNDER_NEW;
			goto out;
		}
		break;
	case KY_OP_ADMIN_ADD:
	case KY_OP_ADMIN_RM:
	case KY_OP_THRESHOLDS_SET:
	case KY_OP_EXIT_IMPRINT:
	case KY_OP_MK_LOAD:
	case KY_OP_MK_COMMIT:
	case KY_OP_ZEROIZE:
	case KY_OP_MK_GENERATE:
	case KY_OP_MK_EXPORT:
	case KY_OP_MK_IMPORT:
		break;
	}
	r = 0;
out:
	return r;
}

/* ---- re-encipherment ---- */

static int storage_progress(const struct ky_kms_reenc *st, void *arg)
{
	struct unitd_storage *so = arg;

	pthread_mutex_lock(&so->lock);
	so->done = st->done;
	if (so->total < st->done + st->remaining)
		so->total = st->done + st->remaining;
	pthread_mutex_unlock(&so->lock);
	/* The operator's pause between batches (reencipher_pause_ms), cut short by a stop. */
	for (uint32_t slept = 0; slept < so->pause_ms && !atomic_load(&so->stop);) {
		uint32_t ms = so->pause_ms - slept;
		struct timespec ts;

		if (ms > STORAGE_PAUSE_TICK_MS)
			ms = STORAGE_PAUSE_TICK_MS;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)ms * 1000000L;
		nanosleep(&ts, NULL);
		slept += ms;
	}
	return atomic_load(&so->stop) ? 1 : 0;
}

static void *storage_worker(void *arg)
{
	struct unitd_storage *so = arg;
	struct ky_kms_reenc st;
	uint64_t total = 0;
	char from[2 * STORAGE_VP_SHOWN + 1], to[2 * STORAGE_VP_SHOWN + 1];
	int r;

	memset(&st, 0, sizeof(st));
	storage_vp_short(so->from_vp, from);
	storage_vp_short(so->to_vp, to);
	pthread_mutex_lock(&so->lock);
	total = so->total;
	r = so->error;
	pthread_mutex_unlock(&so->lock);
	if (r == 0) {
		/* Key storage checked against its digest before anything is moved: the swaps
		 * update it. */
		struct ky_kms kms;
		if ((r = unitd_keystore_enter(so->ks, &kms)) == 0)
			unitd_keystore_leave(so->ks);
	}
	if (r == 0) {
		unitd_log("reencipher: moving %llu record(s) from master key %s... to %s... (%u "
		          "per batch, %u ms pause)",
		          (unsigned long long)total, from, to, (unsigned)so->batch,
		          (unsigned)so->pause_ms);
		r = ky_kms_reencipher(unitd_keystore_store(so->ks), unitd_keystore_instance(so->ks),
		                      so->old, so->new_mk, so->batch, storage_progress, so, &st);
	}
	pthread_mutex_lock(&so->lock);
	so->running = false;
	so->error = r;
	if (r == 0 || r == KY_ERR_RECORD_TAMPERED || r == KY_ERR_CANCELLED)
		so->done = st.done;
	pthread_mutex_unlock(&so->lock);
	if (r == 0)
		unitd_log("reencipher: done: %llu record(s) moved to master key %s...",
		          (unsigned long long)st.done, to);
	else if (r == KY_ERR_RECORD_TAMPERED)
		unitd_log("reencipher: stopped: %llu record(s) do not open (first: %.64s): %s",
		          (unsigned long long)st.failed, st.failed_name, ky_err_message(r));
	else {
		char why[512];

		ky_store_failure(unitd_keystore_store(so->ks), why, sizeof(why));
		unitd_log("reencipher: stopped: %s: %s", ky_err_message(r), why);
	}
	/* Nothing secret stays in this thread's caches. */
	ky_gcm_thread_release();
	return NULL;
}

static void storage_start(struct unitd_storage *so, const struct ky_domain *live)
{
	struct ky_mk *old = NULL, *new_mk = NULL;
	int r;

	pthread_mutex_lock(&so->lock);
	if (so->running && memcmp(so->from_vp, live->cur_vp, KY_VP_LEN) == 0 &&
	    memcmp(so->to_vp, live->new_vp, KY_VP_LEN) == 0) {
		pthread_mutex_unlock(&so->lock);
		return; /* already at it */
	}
	pthread_mutex_unlock(&so->lock);
	atomic_store(&so->stop, true);
	storage_join(so);
	atomic_store(&so->stop, false);

	if ((r = ky_domain_mk(live, KY_MK_REGISTER_CURRENT, &old)) != 0 ||
	    (r = ky_domain_mk(live, KY_MK_REGISTER_NEW, &new_mk)) != 0) {
		unitd_log("reencipher: cannot start: %s", ky_err_message(r));
		goto fail;
	}
	pthread_mutex_lock(&so->lock);
	ky_mk_free(so->old);
	ky_mk_free(so->new_mk);
	so->old = old;
	so->new_mk = new_mk;
	old = new_mk = NULL; /* transferred */
	memcpy(so->from_vp, live->cur_vp, KY_VP_LEN);
	memcpy(so->to_vp, live->new_vp, KY_VP_LEN);
	so->running = true;
	so->done = so->total = 0;
	/* Counted here so that the command's reply already shows how much there is to do. */
	so->error = ky_kms_count_under(unitd_keystore_store(so->ks), so->from_vp, &so->total);
	if ((r = pthread_create(&so->thread, NULL, storage_worker, so)) != 0) {
		so->running = false;
		so->error = KY_ERR_INTERNAL;
		pthread_mutex_unlock(&so->lock);
		unitd_log("reencipher: cannot start a thread");
		goto fail;
	}
	so->joinable = true;
	pthread_mutex_unlock(&so->lock);
	return;
fail:
	ky_mk_free(old);
	ky_mk_free(new_mk);
}

void unitd_storage_after_write(struct unitd_storage *so, const struct ky_domain *live,
                               const struct ky_verified *v)
{
	bool stale;
	int r;

	if (so == NULL || so->ks == NULL)
		return;
	pthread_mutex_lock(&so->lock);
	stale = so->running &&
	        (live->cur_state != KY_CUR_VALID || live->new_state != KY_NEW_COMMITTED ||
	         memcmp(so->from_vp, live->cur_vp, KY_VP_LEN) != 0 ||
	         memcmp(so->to_vp, live->new_vp, KY_VP_LEN) != 0);
	pthread_mutex_unlock(&so->lock);
	if (stale) {
		unitd_log("reencipher: the master key registers changed: stopping");
		atomic_store(&so->stop, true);
	}
	switch (ky_verified_op(v)) {
	case KY_OP_APIKEY_CREATE:
	case KY_OP_APIKEY_REVOKE:
	case KY_OP_STORAGE_ACCEPT:
		unitd_keystore_flush(so->ks);
		break;
	case KY_OP_MK_REENCIPHER:
		storage_start(so, live);
		break;
	case KY_OP_MK_SETIMM:
		/* The unit's first master key: what the daemon keeps in key storage under another
		 * one was crypto-shredded (zeroize). */
		if (so->first_mk && (r = unitd_keystore_first_mk(so->ks, (int64_t)time(NULL))) != 0)
			unitd_log("first master key: not every crypto-shredded record was renewed "
			          "(%s): see the lines above",
			          ky_err_message(r));
		break;
	case KY_OP_ADMIN_ADD:
	case KY_OP_ADMIN_RM:
	case KY_OP_THRESHOLDS_SET:
	case KY_OP_EXIT_IMPRINT:
	case KY_OP_MK_LOAD:
	case KY_OP_MK_COMMIT:
	case KY_OP_MK_CLRNEW:
	case KY_OP_MK_CLRCUR:
	case KY_OP_ZEROIZE:
	case KY_OP_MK_GENERATE:
	case KY_OP_MK_EXPORT:
	case KY_OP_MK_IMPORT:
		break;
	}
}

/* ---- views ---- */

void unitd_storage_progress(struct unitd_storage *so, bool *running, uint64_t *done,
                            uint64_t *total)
{
	pthread_mutex_lock(&so->lock);
	*running = so->running;
	*done = so->done;
	*total = so->total;
	pthread_mutex_unlock(&so->lock);
}

json_t *unitd_storage_json(struct unitd_storage *so, const uint8_t *cur_vp, const uint8_t *new_vp)
{
	uint64_t ncur = 0, nnew = 0, done, total;
	bool running;
	int err, r = 0;
	json_t *re, *j;

	if (so == NULL || so->ks == NULL)
		return json_null();
	if (cur_vp != NULL)
		r = ky_kms_count_under(unitd_keystore_store(so->ks), cur_vp, &ncur);
	if (r == 0 && new_vp != NULL)
		r = ky_kms_count_under(unitd_keystore_store(so->ks), new_vp, &nnew);
	pthread_mutex_lock(&so->lock);
	running = so->running;
	done = so->done;
	total = so->total;
	err = so->error;
	pthread_mutex_unlock(&so->lock);
	re = json_pack("{s:b, s:I, s:I, s:o}", "running", running, "done", (json_int_t)done,
	               "total", (json_int_t)total, "error",
	               err ? json_string(ky_err_slug(err)) : json_null());
	if (r != 0)
		return json_pack("{s:n, s:n, s:o, s:s}", "records_under_current",
		                 "records_under_new", "reencipher", re, "store_error",
		                 ky_err_slug(r));
	j = json_pack("{s:I, s:I, s:o}", "records_under_current", (json_int_t)ncur,
	              "records_under_new", (json_int_t)nnew, "reencipher", re);
	return j;
}

int unitd_storage_apikeys_json(struct unitd_storage *so, json_t **out)
{
	struct ky_store_apikey *keys = NULL;
	size_t n = 0;
	json_t *a = NULL;
	struct ky_kms kms;
	bool held = false;
	int64_t now = (int64_t)time(NULL);
	int r;

	*out = NULL;
	if (so == NULL || so->ks == NULL)
		return KY_ERR_NO_STORE;
	/* Without a master key the rows are listed unchecked (verified: null). */
	if ((r = unitd_keystore_enter(so->ks, &kms)) == 0)
		held = true;
	else if (r != KY_ERR_NO_MASTER_KEY)
		return r;
	if ((r = ky_store_apikey_list(unitd_keystore_store(so->ks), &keys, &n)) != 0)
		goto out;
	if ((a = json_array()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char c[KP_DATE_LEN + 1], rv[KP_DATE_LEN + 1];
		json_t *verified = json_null();
		kp_date(keys[i].created, c);
		kp_date(keys[i].revoked, rv);
		if (held) {
			r = unitd_keystore_apikey_check(so->ks, &kms, now, &keys[i]);
			if (r != 0 && r != KY_ERR_RECORD_TAMPERED && r != KY_ERR_RECORD_STALE &&
			    r != KY_ERR_MK_MISMATCH)
				goto out;
			if (r != KY_ERR_MK_MISMATCH)
				verified = json_boolean(r == 0);
		}
		if (json_array_append_new(
		        a, json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "id", keys[i].id, "name",
		                     keys[i].name, "role", keys[i].role, "created", c, "revoked",
		                     keys[i].revoked ? json_string(rv) : json_null(), "verified",
		                     verified)) != 0) {
			r = KY_ERR_NOMEM;
			goto out;
		}
	}
	*out = json_pack("{s:o}", "apikeys", a);
	a = NULL; /* transferred */
	r = *out ? 0 : KY_ERR_NOMEM;
out:
	if (held)
		unitd_keystore_leave(so->ks);
	json_decref(a);
	OPENSSL_cleanse(keys, n * sizeof(*keys));
	free(keys);
	return r;
}
