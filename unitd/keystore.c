/* The unit's view of key storage: the store, the master key registers of the live state and
 * the caches that keep the unwrap hot path off SQLite.
 *
 * Size: the registers, the caches and the reading of the store's change log in one file, on
 * purpose: they share the locks below and their order, and a cached key's freshness is
 * checked against the code that fills the cache and the code that drops from it.
 *
 * Locks, always taken in this order:
 *   regs   rwlock (writer-preferring): the registers. API requests read-hold it for the
 *          length of one request; a state swap write-holds it for the swap.
 *   lock   mutex: the caches. Held for lookups and inserts only, never across store I/O.
 *
 *   chg    mutex: who reads the store's change log and applies it (one thread at a time,
 *          for every thread that asks meanwhile). Never held across store I/O.
 *
 * A cached key is shared by reference count: the cache holds one reference while the entry is
 * linked, each user one more. Dropping an entry unlinks it; the last user frees it.
 *
 * Freshness: when the store says something changed (ky_store_changed, per thread, before
 * every request), the unit reads the change log since the position it last applied
 * (ky_store_changes, one thread at a time) and drops the cached keys the log names; a change
 * of a secret or an API key drops those two small caches whole; a log that cannot tell
 * (pruned past the position, replaced, an error) drops everything. A key being read from the
 * store is registered as a load: a change of its id applied meanwhile (or a drop of
 * everything: generation check) keeps it from being linked, so a row changed by someone
 * else is never cached stale.
 *
 * Capacity: the material of unitd_key_cache keys (key_cache in unit.conf; each counted for at
 * least KS_KEY_COST bytes of secure heap), in a hash table of about one chain per key. When
 * it is full the keys used least recently make room (CLOCK: a lookup marks a key; the hand
 * clears marks and closes the first key it finds without one), so a working set larger
 * than the cache costs a store read per miss, not a cliff. The secure heap is sized for the
 * cache plus 16 MiB for records being opened (unitd_secure_heap_size); were it full anyway,
 * opening a key fails with out-of-memory (HTTP 500), nothing is served from elsewhere.
 */
#include <limits.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyok/ceremony_mk.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/kms.h"
#include "kyok/kms_import.h"
#include "kyok/store.h"
#include "unitd/config.h"
#include "unitd/keystore.h"
#include "unitd/log.h"
#include "unitd/metrics.h"
#include "unitd/portholder.h"
#include "unitd/seal.h"

#define KS_APIKEY_BUCKETS 64
#define KS_SECURE_ROUND   32 /* the secure heap's smallest block */
#define KS_KEY_COST       64 /* secure heap bytes a cached key counts for at least (2 versions) */
#define KS_SECRET_LEN     32

/* The daemon's own secrets in key storage, each 32 random bytes made by whichever unit needs
 * it first, and cached here while nothing changes in the store. */
enum ks_secret {
	KS_TOKEN_KEY,  /* signs access tokens */
	KS_APIKEY_MAC, /* tags API key rows */
	KS_LEDGER_KEY, /* MACs the storage digest */
	KS__NSECRETS,
};
static const char *const ks_secret_names[KS__NSECRETS] = {
    [KS_TOKEN_KEY] = UNITD_SECRET_TOKEN_KEY,
    [KS_APIKEY_MAC] = UNITD_SECRET_APIKEY_MAC,
    [KS_LEDGER_KEY] = KY_STORE_LEDGER_SECRET,
};

/* The storage mark is written when the digest moved and this long has passed since the last
 * write (and when the unit stops): a restarted unit refuses storage older than that. */
#define KS_MARK_INTERVAL_MS 1000

/* A cached key is one block: this header, the versions, then the key (struct ky_key puts the
 * fields a request reads first). A request for a key among millions then reads the few cache
 * lines at the start of one block, its bucket and its material, not five allocations spread
 * over the heap. */
struct unitd_key_ref {
	struct unitd_key_ref *next;                /* hash chain */
	struct unitd_key_ref *clk_prev, *clk_next; /* the clock ring, while linked */
	atomic_int refs;
	bool linked;
	bool used;          /* looked up since the clock hand last passed it */
	uint32_t hash;      /* ks_hash(key->id): a chain is searched without reading other keys */
	size_t cost;        /* secure heap bytes counted for its material */
	struct ky_key *key; /* in this block, after the versions */
	struct ky_key_version versions[]; /* key->versions; materials in the secure heap */
};

/* A key being read from the store, not linked yet. */
struct ks_load {
	struct ks_load *next;
	const char *id;
	bool dead; /* a change of id was applied meanwhile: not to be linked */
};

struct ks_apikey {
	struct ks_apikey *next;
	struct ky_store_apikey k;
};

struct unitd_keystore {
	struct ky_store *store;
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];

	/* storage digest */
	struct unitd_datadir *dd;    /* the data directory: the storage mark */
	pthread_mutex_t attach_lock; /* attach and mark writes */
	atomic_bool attached;
	struct ky_store_ledger_pos mark; /* as last written; under attach_lock */
	atomic_int_fast64_t mark_ms;     /* when, monotonic */
	int refused;                     /* last refusal logged, 0 = none */

	pthread_rwlock_t regs;
	struct ky_mk *cur;          /* current register when VALID */
	struct ky_mk *next;         /* new register when FULL COMMITTED */
	atomic_uint_fast64_t epoch; /* bumped when the registers change */

	pthread_mutex_t chg;
	pthread_cond_t chg_cv;              /* a read of the change log was applied */
	uint64_t chg_started, chg_done;     /* reads begun, and the last one applied */
	bool chg_running;                   /* a read is under way */
	int chg_r;                          /* the last read's result */
	struct ky_store_change_pos chg_pos; /* the change log as applied; by the reader */

	pthread_mutex_t lock;
	uint64_t gen;                /* bumped by every drop of everything */
	uint64_t sgen;               /* bumped by every drop of the secrets and API keys */
	struct ks_load *loads;       /* keys being read */
	struct unitd_key_ref **keys; /* hash table of nbuckets chains */
	size_t nbuckets;             /* a power of two, about one per key of the budget */
	size_t budget;               /* bytes of key material the cache may hold */
	size_t material;             /* cost of the linked entries */
	struct unitd_key_ref *hand;  /* the clock hand: next eviction candidate; NULL = empty */
	bool evicting;               /* logged once: the cache is full */
	struct ks_apikey *apikeys[KS_APIKEY_BUCKETS]; /* verified rows */
	bool have_secret[KS__NSECRETS];
	uint8_t *secret; /* KS__NSECRETS * KS_SECRET_LEN, secure heap */
	/* the instance policies record as opened (not secret; read on every key API request) */
	enum { KS_POL_UNKNOWN, KS_POL_HAVE, KS_POL_NONE } pol_state;
	uint8_t *pol;
	size_t pol_len;
};

static uint32_t ks_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 16777619u;
	}
	return h;
}

/* Moves k into one block (k is freed; its materials now belong to the block). NULL when out
 * of memory (k untouched). */
static struct unitd_key_ref *ks_ref_make(struct ky_key *k)
{
	size_t vs = (size_t)k->nversions * sizeof(struct ky_key_version);
	struct unitd_key_ref *ref = malloc(sizeof(*ref) + vs + sizeof(*k));

	if (ref == NULL)
		return NULL;
	memset(ref, 0, sizeof(*ref));
	ref->key = (struct ky_key *)((char *)ref->versions + vs);
	memcpy(ref->versions, k->versions, vs);
	*ref->key = *k;
	ref->key->versions = ref->versions;
	ref->hash = ks_hash(k->id);
	atomic_init(&ref->refs, 1);
	k->nversions = 0; /* the materials moved: ky_key_free frees only the rest */
	ky_key_free(k);
	return ref;
}

static void ks_ref_free(struct unitd_key_ref *ref)
{
	if (ref == NULL)
		return;
	/* The materials are wiped; the rest is what the key API shows any reader. */
	for (uint32_t i = 0; i < ref->key->nversions; i++)
		OPENSSL_secure_clear_free(ref->versions[i].material, ref->versions[i].len);
	free(ref);
}

/* Drops the daemon's secrets and the API keys. Caller holds ks->lock. */
static void ks_drop_small_locked(struct unitd_keystore *ks)
{
	for (size_t b = 0; b < KS_APIKEY_BUCKETS; b++) {
		struct ks_apikey *a = ks->apikeys[b], *nx;
		for (; a != NULL; a = nx) {
			nx = a->next;
			free(a);
		}
		ks->apikeys[b] = NULL;
	}
	if (ks->secret != NULL)
		OPENSSL_cleanse(ks->secret, KS__NSECRETS * KS_SECRET_LEN);
	for (size_t i = 0; i < KS__NSECRETS; i++)
		ks->have_secret[i] = false;
	free(ks->pol);
	ks->pol = NULL;
	ks->pol_len = 0;
	ks->pol_state = KS_POL_UNKNOWN;
	ks->sgen++;
}

static struct unitd_key_ref **ks_bucket(struct unitd_keystore *ks, uint32_t hash)
{
	return &ks->keys[hash & (ks->nbuckets - 1)];
}

/* Unlinks e (*pp points to it in its chain) and drops the cache's reference. Caller holds
 * ks->lock. */
static void ks_unlink_locked(struct unitd_keystore *ks, struct unitd_key_ref **pp,
                             struct unitd_key_ref *e)
{
	*pp = e->next;
	e->next = NULL;
	if (e->clk_next == e) {
		ks->hand = NULL;
	} else {
		if (ks->hand == e)
			ks->hand = e->clk_next;
		e->clk_prev->clk_next = e->clk_next;
		e->clk_next->clk_prev = e->clk_prev;
	}
	e->clk_prev = e->clk_next = NULL;
	e->linked = false;
	ks->material -= e->cost;
	unitd_metrics_cache(UNITD_METRICS_CACHE_EVICT, 1);
	if (atomic_fetch_sub(&e->refs, 1) == 1)
		ks_ref_free(e);
}

/* Unlinks the cached key id, and keeps a load of it from being linked. Caller holds ks->lock. */
static void ks_drop_key_locked(struct unitd_keystore *ks, const char *id)
{
	uint32_t h = ks_hash(id);
	struct unitd_key_ref **pp = ks_bucket(ks, h), *e;

	for (struct ks_load *l = ks->loads; l != NULL; l = l->next)
		if (strcmp(l->id, id) == 0)
			l->dead = true;
	for (; (e = *pp) != NULL; pp = &e->next) {
		if (e->hash == h && strcmp(e->key->id, id) == 0) {
			ks_unlink_locked(ks, pp, e);
			return;
		}
	}
}

/* CLOCK: makes room for need bytes. The hand passes over the ring; a key looked up since its
 * last pass loses its mark and stays, the first one without a mark goes. Caller holds
 * ks->lock. */
static void ks_evict_locked(struct unitd_keystore *ks, size_t need)
{
	while (ks->hand != NULL && ks->material + need > ks->budget) {
		struct unitd_key_ref *e = ks->hand, **pp;

		if (e->used) {
			e->used = false;
			ks->hand = e->clk_next;
			continue;
		}
		for (pp = ks_bucket(ks, e->hash); *pp != e; pp = &(*pp)->next)
			;
		ks_unlink_locked(ks, pp, e);
	}
}

/* Links e as the newest entry of its chain and of the ring (just behind the hand). Caller
 * holds ks->lock and made room. */
static void ks_link_locked(struct unitd_keystore *ks, struct unitd_key_ref **bucket,
                           struct unitd_key_ref *e)
{
	e->next = *bucket;
	*bucket = e;
	if (ks->hand == NULL) {
		e->clk_prev = e->clk_next = e;
		ks->hand = e;
	} else {
		e->clk_next = ks->hand;
		e->clk_prev = ks->hand->clk_prev;
		e->clk_prev->clk_next = e;
		ks->hand->clk_prev = e;
	}
	e->linked = true;
	e->used = false;
	atomic_fetch_add(&e->refs, 1); /* the cache's reference */
	ks->material += e->cost;
}

/* Drops every cache. Caller holds ks->lock. The chains are cut whole and the ring with them,
 * without the unlinking of one key at a time (which reads each key's neighbours in the ring,
 * anywhere in memory). A unit with 1,000,000 keys cached stopped in 3.3 s, against 5.2 s
 * one key at a time. */
static void ks_drop_locked(struct unitd_keystore *ks)
{
	uint64_t n = 0;

	for (size_t b = 0; ks->keys != NULL && b < ks->nbuckets; b++) {
		struct unitd_key_ref *e = ks->keys[b], *nx;

		ks->keys[b] = NULL;
		for (; e != NULL; e = nx, n++) {
			nx = e->next;
			e->next = e->clk_prev = e->clk_next = NULL;
			e->linked = false;
			if (atomic_fetch_sub(&e->refs, 1) == 1)
				ks_ref_free(e);
		}
	}
	ks->hand = NULL;
	ks->material = 0;
	unitd_metrics_cache(UNITD_METRICS_CACHE_EVICT, n);
	ks_drop_small_locked(ks);
	ks->gen++;
}

/* Reads the store's change log since the last read and drops what it names. */
static int ks_changes_read(struct unitd_keystore *ks)
{
	struct ky_store_change *v = NULL;
	size_t n = 0;
	int r = KY_ERR_INTERNAL, all = 1;
	bool small = false;

	r = ky_store_changes(ks->store, &ks->chg_pos, &v, &n, &all);
	pthread_mutex_lock(&ks->lock);
	if (r != 0 || all) {
		ks_drop_locked(ks);
	} else {
		for (size_t i = 0; i < n; i++) {
			if (v[i].rec == KY_STORE_REC_KEY)
				ks_drop_key_locked(ks, v[i].id);
			else
				small = true;
		}
		if (small)
			ks_drop_small_locked(ks);
	}
	pthread_mutex_unlock(&ks->lock);
	free(v);
	return r;
}

/* Applies what the store's change log says changed, for a thread that the store told of a
 * change: a read begun after the thread asked sees that change, so one read serves every
 * thread that asks while another is under way (they take the next one). Many request
 * threads told of one commit then cost one or two reads of the log, not one each. */
static int ks_changes_apply(struct unitd_keystore *ks)
{
	uint64_t need;
	int r;

	pthread_mutex_lock(&ks->chg);
	need = ks->chg_started + 1;
	while (ks->chg_done < need) {
		uint64_t id;

		if (ks->chg_running) {
			pthread_cond_wait(&ks->chg_cv, &ks->chg);
			continue;
		}
		id = ++ks->chg_started;
		ks->chg_running = true;
		pthread_mutex_unlock(&ks->chg);
		r = ks_changes_read(ks);
		pthread_mutex_lock(&ks->chg);
		ks->chg_running = false;
		ks->chg_done = id;
		ks->chg_r = r;
		pthread_cond_broadcast(&ks->chg_cv);
	}
	r = ks->chg_r;
	pthread_mutex_unlock(&ks->chg);
	return r;
}

void unitd_keystore_flush(struct unitd_keystore *ks)
{
	if (ks == NULL)
		return;
	pthread_mutex_lock(&ks->lock);
	ks_drop_locked(ks);
	pthread_mutex_unlock(&ks->lock);
}

uint32_t unitd_key_cache(const struct unitd_config *cfg)
{
	uint32_t limit = cfg->key_limit ? cfg->key_limit : KY_STORE_KEY_LIMIT_DEFAULT;

	if (cfg->key_cache != 0)
		return cfg->key_cache;
	return limit < UNITD_KEY_CACHE_DEFAULT ? limit : UNITD_KEY_CACHE_DEFAULT;
}

#define KS_HEAP_BESIDE (16u * 1024 * 1024) /* secure heap for what is not cached */

size_t unitd_secure_heap_size(const struct unitd_config *cfg)
{
	size_t need = (size_t)unitd_key_cache(cfg) * KS_KEY_COST + KS_HEAP_BESIDE, heap;

	for (heap = KY_KMS_SECURE_HEAP; heap < need; heap *= 2)
		;
	return heap;
}

static int64_t ks_now_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The program holding the write lock of SQLite key storage, when one is seen. In WAL mode a
 * writer holds byte 120 of the -shm file (SQLite's unix VFS: WAL_WRITE_LOCK at UNIX_SHM_BASE);
 * other storage backends name no holder. */
static bool ks_lock_holder(const char *store, char *out, size_t n)
{
	char shm[PATH_MAX];

	if (strncmp(store, "sqlite:", 7) != 0 ||
	    snprintf(shm, sizeof(shm), "%s-shm", store + 7) >= (int)sizeof(shm))
		return false;
	return unitd_lock_holder(shm, 120, out, n);
}

int unitd_keystore_open(const struct unitd_config *cfg, struct unitd_datadir *dd,
                        struct unitd_keystore **out, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct unitd_keystore *ks = NULL;
	struct ky_store_opts o = {0};
	pthread_rwlockattr_t attr;
	bool attr_made = false, regs_made = false, lock_made = false, attach_made = false,
	     chg_made = false;
	char holder[160];

	*out = NULL;
	if ((ks = calloc(1, sizeof(*ks))) == NULL ||
	    (ks->secret = ky_secret_alloc(KS__NSECRETS * KS_SECRET_LEN)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	ks->budget = (size_t)unitd_key_cache(cfg) * KS_KEY_COST;
	for (ks->nbuckets = 64; ks->nbuckets < unitd_key_cache(cfg); ks->nbuckets *= 2)
		;
	if ((ks->keys = calloc(ks->nbuckets, sizeof(*ks->keys))) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	snprintf(ks->instance, sizeof(ks->instance), "%s", cfg->instance);
	snprintf(ks->unit, sizeof(ks->unit), "%s", cfg->unit);
	ks->dd = dd;
	if ((r = unitd_mark_load(dd, cfg->instance, cfg->unit, &ks->mark)) != 0) {
		snprintf(err, errlen,
		         "storage mark '%s/storage.mark' does not open (%s): it records how far "
		         "this unit has seen key storage; restore it with the data directory",
		         dd->dir, ky_err_message(r));
		goto out;
	}
	if (pthread_mutex_init(&ks->attach_lock, NULL) != 0)
		goto lockfail;
	attach_made = true;
	if (pthread_rwlockattr_init(&attr) != 0)
		goto lockfail;
	attr_made = true;
	/* A state swap must not wait behind an endless stream of API requests. */
	if (pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP) !=
	        0 ||
	    pthread_rwlock_init(&ks->regs, &attr) != 0)
		goto lockfail;
	regs_made = true;
	if (pthread_mutex_init(&ks->lock, NULL) != 0)
		goto lockfail;
	lock_made = true;
	if (pthread_mutex_init(&ks->chg, NULL) != 0)
		goto lockfail;
	if (pthread_cond_init(&ks->chg_cv, NULL) != 0) {
		pthread_mutex_destroy(&ks->chg);
		goto lockfail;
	}
	chg_made = true;

	o.key_limit = cfg->key_limit;
	o.instance = cfg->instance;
	o.must_exist = ks->mark.gen > 0;
	o.busy_timeout_ms = (int)cfg->store_lock_wait_ms;
	if (ks_lock_holder(cfg->store, holder, sizeof(holder)))
		unitd_log("key storage '%s' is locked by another writer, %s: waiting up to %u ms",
		          cfg->store, holder, (unsigned)cfg->store_lock_wait_ms);
	if ((r = ky_store_open(cfg->store, &o, &ks->store)) != 0) {
		if (r == KY_ERR_STORE_BUSY) {
			r = KY_ERR_STORE_LOCKED_AT_START;
			if (!ks_lock_holder(cfg->store, holder, sizeof(holder)))
				snprintf(holder, sizeof(holder), "a program not seen from here");
			snprintf(err, errlen,
			         "key storage '%s' stayed locked by another writer (%s) for %u ms: "
			         "not started; end that program's write transaction, or raise "
			         "store_lock_wait_ms in the unit.conf",
			         cfg->store, holder, (unsigned)cfg->store_lock_wait_ms);
			goto out;
		}
		switch (r) {
		case KY_ERR_STORAGE_MISSING:
			snprintf(
			    err, errlen,
			    "key storage '%s' is missing or empty, but this unit has seen it hold "
			    "records (generation %llu): not started on empty storage; restore "
			    "the file from a backup (docs/keys.md, restoring key storage)",
			    cfg->store, (unsigned long long)ks->mark.gen);
			break;
		case KY_ERR_WRONG_INSTANCE:
			snprintf(err, errlen,
			         "key storage '%s' belongs to another service instance than '%s'",
			         cfg->store, cfg->instance);
			break;
		case KY_ERR_STORE_PASSWORD: /* the URI is not repeated: it holds the password */
			snprintf(err, errlen, "key storage: %s", ky_err_message(r));
			break;
		case KY_ERR_STORE_SCHEMA:
			snprintf(err, errlen, "key storage '%s': %s", cfg->store,
			         ky_err_message(r));
			break;
		case KY_ERR_CONFIG:
			snprintf(err, errlen, "key storage '%s': unknown kind of storage",
			         cfg->store);
			break;
		default: {
			char why[512];
			ky_store_open_failure(why, sizeof(why));
			snprintf(err, errlen, "cannot open key storage '%s': %s%s%s", cfg->store,
			         ky_err_message(r), why[0] ? "; " : "", why);
			break;
		}
		}
		goto out;
	}
	pthread_rwlockattr_destroy(&attr);
	*out = ks;
	return 0;
lockfail:
	r = KY_ERR_INTERNAL;
	snprintf(err, errlen, "cannot create a lock");
out:
	if (attr_made)
		pthread_rwlockattr_destroy(&attr);
	if (ks != NULL) {
		if (regs_made)
			pthread_rwlock_destroy(&ks->regs);
		if (lock_made)
			pthread_mutex_destroy(&ks->lock);
		if (chg_made) {
			pthread_cond_destroy(&ks->chg_cv);
			pthread_mutex_destroy(&ks->chg);
		}
		if (attach_made)
			pthread_mutex_destroy(&ks->attach_lock);
		ky_secret_free(ks->secret, KS__NSECRETS * KS_SECRET_LEN);
		free(ks->keys);
		free(ks);
	}
	return r;
}

/* Writes the storage mark when the digest moved past it (force: whenever it moved; else at
 * most once per KS_MARK_INTERVAL_MS). */
static void ks_mark_write(struct unitd_keystore *ks, bool force)
{
	struct ky_store_ledger_pos pos;
	int64_t now = ks_now_ms();
	int r;

	if (!atomic_load(&ks->attached) ||
	    (!force && now - atomic_load(&ks->mark_ms) < KS_MARK_INTERVAL_MS))
		return;
	if (force)
		pthread_mutex_lock(&ks->attach_lock);
	else if (pthread_mutex_trylock(&ks->attach_lock) != 0)
		return;
	atomic_store(&ks->mark_ms, now);
	if (ky_store_ledger_pos(ks->store, &pos) == 0 &&
	    (pos.gen != ks->mark.gen || pos.epoch != ks->mark.epoch)) {
		if ((r = unitd_mark_write(ks->dd, ks->instance, ks->unit, &pos)) == 0)
			ks->mark = pos;
		else
			unitd_log("storage mark: cannot write it: %s", ky_err_message(r));
	}
	pthread_mutex_unlock(&ks->attach_lock);
}

int unitd_keystore_state_rekey(struct unitd_keystore *ks, struct unitd_datadir *dd,
                               const struct ky_domain *d)
{
	int r = KY_ERR_INTERNAL, w;

	pthread_mutex_lock(&ks->attach_lock);
	if ((r = unitd_mark_remove(dd)) != 0) {
		unitd_log("storage mark: cannot remove it before the seal key is replaced: %s",
		          ky_err_message(r));
		goto out;
	}
	if ((r = unitd_state_rekey(dd, d)) != 0)
		goto out;
	if (atomic_load(&ks->attached) &&
	    (w = unitd_mark_write(dd, ks->instance, ks->unit, &ks->mark)) != 0)
		unitd_log("storage mark: cannot write it under the new seal key: %s",
		          ky_err_message(w));
	r = 0;
out:
	pthread_mutex_unlock(&ks->attach_lock);
	return r;
}

void unitd_keystore_free(struct unitd_keystore *ks)
{
	if (ks == NULL)
		return;
	pthread_mutex_lock(&ks->lock);
	ks_drop_locked(ks);
	pthread_mutex_unlock(&ks->lock);
	ks_mark_write(ks, true);
	ky_mk_free(ks->cur);
	ky_mk_free(ks->next);
	ky_store_close(ks->store);
	pthread_mutex_destroy(&ks->attach_lock);
	ky_secret_free(ks->secret, KS__NSECRETS * KS_SECRET_LEN);
	pthread_mutex_destroy(&ks->lock);
	pthread_cond_destroy(&ks->chg_cv);
	pthread_mutex_destroy(&ks->chg);
	pthread_rwlock_destroy(&ks->regs);
	free(ks->keys);
	free(ks);
}

uint64_t unitd_keystore_epoch(struct unitd_keystore *ks)
{
	return atomic_load(&ks->epoch);
}

struct ky_store *unitd_keystore_store(struct unitd_keystore *ks)
{
	return ks->store;
}

const char *unitd_keystore_instance(const struct unitd_keystore *ks)
{
	return ks->instance;
}

static bool ks_same_mk(const struct ky_mk *a, const struct ky_mk *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return CRYPTO_memcmp(a->vp, b->vp, KY_VP_LEN) == 0;
}

int unitd_keystore_set_registers(struct unitd_keystore *ks, const struct ky_domain *d)
{
	int r = KY_ERR_INTERNAL;
	struct ky_mk *cur = NULL, *next = NULL;

	if (d->cur_state == KY_CUR_VALID &&
	    (r = ky_domain_mk(d, KY_MK_REGISTER_CURRENT, &cur)) != 0)
		goto out;
	if (d->new_state == KY_NEW_COMMITTED &&
	    (r = ky_domain_mk(d, KY_MK_REGISTER_NEW, &next)) != 0)
		goto out;
	pthread_rwlock_wrlock(&ks->regs);
	if (!ks_same_mk(cur, ks->cur) || !ks_same_mk(next, ks->next)) {
		/* Keys opened under registers that are gone are not served again. */
		pthread_mutex_lock(&ks->lock);
		ks_drop_locked(ks);
		pthread_mutex_unlock(&ks->lock);
		atomic_fetch_add(&ks->epoch, 1);
		/* The storage integrity key is read again under the new registers (a zeroized unit
		 * may find another one: a first master key elsewhere replaced it). */
		atomic_store(&ks->attached, false);
	}
	{
		struct ky_mk *t = ks->cur;
		ks->cur = cur;
		cur = t;
		t = ks->next;
		ks->next = next;
		next = t;
	}
	pthread_rwlock_unlock(&ks->regs);
	r = 0;
out:
	ky_mk_free(cur);
	ky_mk_free(next);
	return r;
}

static int ks_secret(struct unitd_keystore *ks, const struct ky_kms *kms, enum ks_secret which,
                     int64_t now, uint8_t out[KS_SECRET_LEN]);

/* Checks key storage against its digest with the storage integrity key (made when missing)
 * and the mark as floor; adopt: take storage as it is (see ky_store_ledger_attach). Inside a
 * hold. */
static int ks_attach(struct unitd_keystore *ks, const struct ky_kms *kms, int adopt)
{
	uint8_t *key = NULL;
	struct ky_store_ledger_pos pos;
	int r = KY_ERR_INTERNAL, w;

	pthread_mutex_lock(&ks->attach_lock);
	if (atomic_load(&ks->attached) && !adopt) {
		r = 0;
		goto out;
	}
	if ((key = ky_secret_alloc(KS_SECRET_LEN)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = ks_secret(ks, kms, KS_LEDGER_KEY, (int64_t)time(NULL), key)) != 0)
		goto refused;
	if ((r = ky_store_ledger_attach(ks->store, key, &ks->mark, adopt, &pos)) != 0)
		goto refused;
	if ((w = unitd_mark_write(ks->dd, ks->instance, ks->unit, &pos)) == 0)
		ks->mark = pos;
	else
		unitd_log("storage mark: cannot write it: %s", ky_err_message(w));
	atomic_store(&ks->mark_ms, ks_now_ms());
	atomic_store(&ks->attached, true);
	if (ks->refused != 0 || adopt)
		unitd_log("key storage: checked against its digest: generation %llu, epoch %llu%s",
		          (unsigned long long)pos.gen, (unsigned long long)pos.epoch,
		          adopt ? " (taken as it is)" : "");
	ks->refused = 0;
	r = 0;
	goto out;
refused:
	atomic_store(&ks->attached, false);
	if (r != ks->refused)
		unitd_log("key storage refused (seen up to generation %llu, epoch %llu): %s",
		          (unsigned long long)ks->mark.gen, (unsigned long long)ks->mark.epoch,
		          ky_err_message(r));
	ks->refused = r;
out:
	pthread_mutex_unlock(&ks->attach_lock);
	ky_secret_free(key, KS_SECRET_LEN);
	return r;
}

/* The hold; attach: check key storage first (see ks_attach). */
static int ks_enter(struct unitd_keystore *ks, struct ky_kms *kms, bool attach)
{
	int r, changed = 1;

	pthread_rwlock_rdlock(&ks->regs);
	if (ks->cur == NULL && ks->next == NULL) {
		pthread_rwlock_unlock(&ks->regs);
		return KY_ERR_NO_MASTER_KEY;
	}
	if ((r = ky_store_changed(ks->store, &changed)) != 0) {
		pthread_rwlock_unlock(&ks->regs);
		return r;
	}
	if (changed && (r = ks_changes_apply(ks)) != 0) {
		pthread_rwlock_unlock(&ks->regs);
		return r;
	}
	kms->store = ks->store;
	kms->instance = ks->instance;
	kms->current = ks->cur;
	kms->next = ks->next;
	if (attach) {
		if (!atomic_load(&ks->attached) && (r = ks_attach(ks, kms, 0)) != 0) {
			pthread_rwlock_unlock(&ks->regs);
			return r;
		}
		ks_mark_write(ks, false);
	}
	return 0;
}

int unitd_keystore_enter(struct unitd_keystore *ks, struct ky_kms *kms)
{
	return ks_enter(ks, kms, true);
}

int unitd_keystore_accept(struct unitd_keystore *ks, struct ky_store_ledger_pos *pos)
{
	struct ky_kms kms;
	int r;

	if ((r = ks_enter(ks, &kms, false)) != 0)
		return r;
	if ((r = ks_attach(ks, &kms, 1)) == 0) {
		pthread_mutex_lock(&ks->attach_lock);
		*pos = ks->mark;
		pthread_mutex_unlock(&ks->attach_lock);
	}
	unitd_keystore_flush(ks);
	unitd_keystore_leave(ks);
	return r;
}

void unitd_keystore_leave(struct unitd_keystore *ks)
{
	pthread_rwlock_unlock(&ks->regs);
}

/* ---- opened keys ---- */

static size_t ks_key_cost(const struct ky_key *k)
{
	size_t c = 0;

	for (uint32_t i = 0; i < k->nversions; i++)
		c += (k->versions[i].len + KS_SECURE_ROUND - 1) / KS_SECURE_ROUND * KS_SECURE_ROUND;
	return c > KS_KEY_COST ? c : KS_KEY_COST;
}

int unitd_keystore_key_get(struct unitd_keystore *ks, const struct ky_kms *kms, const char *id,
                           int64_t now, struct unitd_key_ref **ref)
{
	int r = KY_ERR_INTERNAL;
	uint32_t h = ks_hash(id);
	struct unitd_key_ref **bucket = ks_bucket(ks, h), *e, *made = NULL;
	struct ky_key *k = NULL;
	struct ks_load load = {.id = id}, **pp;
	uint64_t gen;

	*ref = NULL;
	pthread_mutex_lock(&ks->lock);
	for (e = *bucket; e != NULL; e = e->next) {
		if (e->hash == h && strcmp(e->key->id, id) == 0) {
			atomic_fetch_add(&e->refs, 1);
			e->used = true;
			pthread_mutex_unlock(&ks->lock);
			unitd_metrics_cache(UNITD_METRICS_CACHE_HIT, 1);
			*ref = e;
			return 0;
		}
	}
	gen = ks->gen;
	load.next = ks->loads;
	ks->loads = &load;
	pthread_mutex_unlock(&ks->lock);
	unitd_metrics_cache(UNITD_METRICS_CACHE_MISS, 1);

	if ((r = ky_kms_key_get(kms, id, 0, now, &k)) == 0) {
		if ((made = ks_ref_make(k)) == NULL) {
			r = KY_ERR_NOMEM;
		} else {
			k = NULL; /* moved */
			made->cost = ks_key_cost(made->key);
		}
	}

	pthread_mutex_lock(&ks->lock);
	for (pp = &ks->loads; *pp != &load; pp = &(*pp)->next)
		;
	*pp = load.next;
	/* made->hash == h: its key is the one asked for (a record's id is checked against its
	 * row), so the entry is linked in the chain its hash names. */
	if (r == 0 && ks->gen == gen && !load.dead && made->cost <= ks->budget && made->hash == h &&
	    strcmp(made->key->id, id) == 0) {
		for (e = *bucket; e != NULL; e = e->next)
			if (e->hash == h && strcmp(e->key->id, id) == 0)
				break;
		if (e == NULL) {
			if (ks->material + made->cost > ks->budget && !ks->evicting) {
				ks->evicting = true;
				unitd_log(
				    "key cache full (%zu bytes of key material, key_cache in "
				    "unit.conf): the keys used least recently are closed to make "
				    "room, and opened again from key storage when used",
				    ks->budget);
			}
			ks_evict_locked(ks, made->cost);
			ks_link_locked(ks, bucket, made);
		}
	}
	pthread_mutex_unlock(&ks->lock);
	ky_key_free(k);
	if (r != 0)
		return r;
	*ref = made;
	return 0;
}

const struct ky_key *unitd_key_ref_key(const struct unitd_key_ref *ref)
{
	return ref->key;
}

void unitd_keystore_key_put(struct unitd_keystore *ks, struct unitd_key_ref *ref)
{
	(void)ks;
	if (ref != NULL && atomic_fetch_sub(&ref->refs, 1) == 1)
		ks_ref_free(ref);
}

/* ---- the daemon's secrets ---- */

static int ks_secret(struct unitd_keystore *ks, const struct ky_kms *kms, enum ks_secret which,
                     int64_t now, uint8_t out[KS_SECRET_LEN])
{
	int r = KY_ERR_INTERNAL;
	const char *name = ks_secret_names[which];
	uint8_t *p = NULL, *fresh = NULL, *slot = ks->secret + (size_t)which * KS_SECRET_LEN;
	size_t n = 0;
	uint64_t gen;

	pthread_mutex_lock(&ks->lock);
	if (ks->have_secret[which]) {
		memcpy(out, slot, KS_SECRET_LEN);
		pthread_mutex_unlock(&ks->lock);
		return 0;
	}
	gen = ks->sgen;
	pthread_mutex_unlock(&ks->lock);

	r = ky_kms_secret_get(kms, name, &p, &n);
	if (r == KY_ERR_NOT_FOUND) {
		/* First unit to need it makes it; a unit that loses the race reads the winner's. */
		if ((fresh = ky_secret_alloc(KS_SECRET_LEN)) == NULL) {
			r = KY_ERR_NOMEM;
			goto out;
		}
		if ((r = ky_random(fresh, KS_SECRET_LEN)) != 0)
			goto out;
		r = ky_kms_secret_create(kms, name, fresh, KS_SECRET_LEN, now);
		if (r != 0 && r != KY_ERR_EXISTS)
			goto out;
		r = ky_kms_secret_get(kms, name, &p, &n);
	}
	/* KY_ERR_MK_MISMATCH: the stored secret is under a master key this unit holds in
	 * neither register. A unit left behind by a rotation must not replace it (that would
	 * void every token or API key of the instance, on every unit): only a unit given its
	 * first master key may, see unitd_keystore_first_mk. */
	if (r != 0)
		goto out;
	if (n != KS_SECRET_LEN) {
		r = KY_ERR_RECORD_TAMPERED;
		goto out;
	}
	memcpy(out, p, KS_SECRET_LEN);
	pthread_mutex_lock(&ks->lock);
	if (ks->sgen == gen) {
		memcpy(slot, p, KS_SECRET_LEN);
		ks->have_secret[which] = true;
	}
	pthread_mutex_unlock(&ks->lock);
	r = 0;
out:
	ky_kms_buf_free(p, n);
	ky_secret_free(fresh, KS_SECRET_LEN);
	return r;
}

int unitd_keystore_token_key(struct unitd_keystore *ks, const struct ky_kms *kms, int64_t now,
                             uint8_t out[UNITD_TOKEN_KEY_LEN])
{
	return ks_secret(ks, kms, KS_TOKEN_KEY, now, out);
}

/* ---- the instance policies record ---- */

int unitd_keystore_policies(struct unitd_keystore *ks, const struct ky_kms *kms, uint8_t **out,
                            size_t *n)
{
	int r = KY_ERR_INTERNAL;
	uint8_t *p = NULL, *copy = NULL;
	size_t len = 0;
	uint64_t gen;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&ks->lock);
	if (ks->pol_state == KS_POL_NONE) {
		pthread_mutex_unlock(&ks->lock);
		return KY_ERR_NOT_FOUND;
	}
	if (ks->pol_state == KS_POL_HAVE) {
		if ((copy = malloc(ks->pol_len)) != NULL) {
			memcpy(copy, ks->pol, ks->pol_len);
			*out = copy;
			*n = ks->pol_len;
		}
		pthread_mutex_unlock(&ks->lock);
		return copy != NULL ? 0 : KY_ERR_NOMEM;
	}
	gen = ks->sgen;
	pthread_mutex_unlock(&ks->lock);

	r = ky_kms_secret_get(kms, UNITD_SECRET_POLICIES, &p, &len);
	if (r == KY_ERR_NOT_FOUND) {
		pthread_mutex_lock(&ks->lock);
		if (ks->sgen == gen)
			ks->pol_state = KS_POL_NONE;
		pthread_mutex_unlock(&ks->lock);
		return r;
	}
	if (r != 0)
		goto out; /* an error is never cached */
	r = KY_ERR_NOMEM;
	if ((*out = malloc(len > 0 ? len : 1)) == NULL ||
	    (copy = malloc(len > 0 ? len : 1)) == NULL)
		goto out;
	memcpy(*out, p, len);
	memcpy(copy, p, len);
	*n = len;
	pthread_mutex_lock(&ks->lock);
	if (ks->sgen == gen && ks->pol_state == KS_POL_UNKNOWN) {
		ks->pol = copy;
		ks->pol_len = len;
		ks->pol_state = KS_POL_HAVE;
		copy = NULL; /* transferred */
	}
	pthread_mutex_unlock(&ks->lock);
	r = 0;
out:
	if (r != 0) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	free(copy);
	ky_kms_buf_free(p, len);
	return r;
}

void unitd_keystore_policies_drop(struct unitd_keystore *ks)
{
	pthread_mutex_lock(&ks->lock);
	free(ks->pol);
	ks->pol = NULL;
	ks->pol_len = 0;
	ks->pol_state = KS_POL_UNKNOWN;
	ks->sgen++;
	pthread_mutex_unlock(&ks->lock);
}

/* ---- API key records ---- */

int unitd_keystore_apikey_seal(struct unitd_keystore *ks, const struct ky_kms *kms, int64_t now,
                               struct ky_store_apikey *k)
{
	uint8_t key[KS_SECRET_LEN];
	int r;

	if ((r = ks_secret(ks, kms, KS_APIKEY_MAC, now, key)) == 0 &&
	    (r = ky_kms_apikey_mac(key, ks->instance, k, k->mac)) == 0)
		k->has_mac = true;
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

int unitd_keystore_apikey_check(struct unitd_keystore *ks, const struct ky_kms *kms, int64_t now,
                                const struct ky_store_apikey *k)
{
	uint8_t key[KS_SECRET_LEN];
	int r;

	if (!k->has_mac)
		return KY_ERR_RECORD_TAMPERED; /* no need to make the key for that */
	if ((r = ks_secret(ks, kms, KS_APIKEY_MAC, now, key)) == 0)
		r = ky_kms_apikey_check(key, ks->instance, k);
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

int unitd_keystore_apikey(struct unitd_keystore *ks, const struct ky_kms *kms, const char *id,
                          int64_t now, struct ky_store_apikey *out)
{
	int r = KY_ERR_INTERNAL;
	uint32_t b = ks_hash(id) & (KS_APIKEY_BUCKETS - 1);
	struct ks_apikey *a;
	uint64_t gen;

	pthread_mutex_lock(&ks->lock);
	for (a = ks->apikeys[b]; a != NULL; a = a->next) {
		if (strcmp(a->k.id, id) == 0) {
			*out = a->k;
			pthread_mutex_unlock(&ks->lock);
			return 0;
		}
	}
	gen = ks->sgen;
	pthread_mutex_unlock(&ks->lock);

	if ((r = ky_store_apikey_get(ks->store, id, out)) != 0 ||
	    (r = unitd_keystore_apikey_check(ks, kms, now, out)) != 0)
		return r;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return 0; /* not cached: the answer stands */
	a->k = *out;
	pthread_mutex_lock(&ks->lock);
	if (ks->sgen == gen) {
		a->next = ks->apikeys[b];
		ks->apikeys[b] = a;
		a = NULL; /* transferred */
	}
	pthread_mutex_unlock(&ks->lock);
	free(a);
	return 0;
}

int unitd_keystore_apikey_find(struct unitd_keystore *ks, const struct ky_kms *kms,
                               const uint8_t hash[KY_APIKEY_HASH_LEN], int64_t now,
                               struct ky_store_apikey *out)
{
	int r;

	if ((r = ky_store_apikey_find(ks->store, hash, out)) != 0)
		return r;
	return unitd_keystore_apikey_check(ks, kms, now, out);
}

/* Is the daemon's secret name under a master key neither register holds? */
static int ks_shredded(const struct ky_kms *kms, const char *name, bool *shredded)
{
	uint8_t *p = NULL;
	size_t n = 0;
	int r = ky_kms_secret_get(kms, name, &p, &n);

	ky_kms_buf_free(p, n);
	*shredded = r == KY_ERR_MK_MISMATCH;
	return r == KY_ERR_MK_MISMATCH || r == KY_ERR_NOT_FOUND ? 0 : r;
}

/* The API keys were tagged under an integrity key that went with the old master key: none
 * of them can be trusted again. Rows and key go in one transaction. */
static int ks_first_mk_apikeys(const struct ky_kms *kms)
{
	uint64_t gone = 0;
	bool shredded;
	int r;

	if ((r = ks_shredded(kms, UNITD_SECRET_APIKEY_MAC, &shredded)) != 0 || !shredded)
		return r;
	if ((r = ky_store_begin(kms->store)) != 0)
		return r;
	if ((r = ky_store_apikey_purge(kms->store, &gone)) != 0 ||
	    ((r = ky_store_secret_delete(kms->store, UNITD_SECRET_APIKEY_MAC)) != 0 &&
	     r != KY_ERR_NOT_FOUND) ||
	    (r = ky_store_commit(kms->store)) != 0) {
		(void)ky_store_rollback(kms->store);
		return r;
	}
	unitd_log("API key integrity key in key storage is under a master key this unit does not "
	          "hold (crypto-shredded): %llu API key(s) removed with it; make them again with "
	          "kyok tke apikey-create (the same name sends the key in its file again)",
	          (unsigned long long)gone);
	return 0;
}

static int ks_first_mk_token_key(const struct ky_kms *kms, int64_t now)
{
	uint8_t *fresh = NULL;
	bool shredded;
	int r;

	if ((r = ks_shredded(kms, UNITD_SECRET_TOKEN_KEY, &shredded)) != 0 || !shredded)
		return r;
	if ((fresh = ky_secret_alloc(KS_SECRET_LEN)) == NULL)
		return KY_ERR_NOMEM;
	if ((r = ky_random(fresh, KS_SECRET_LEN)) == 0 &&
	    (r = ky_kms_secret_put(kms, UNITD_SECRET_TOKEN_KEY, fresh, KS_SECRET_LEN, now)) == 0)
		unitd_log(
		    "token signing key in key storage is under a master key this unit does "
		    "not hold (crypto-shredded): replaced (tokens issued before are no longer "
		    "accepted)");
	ky_secret_free(fresh, KS_SECRET_LEN);
	return r;
}

/* The storage integrity key went with the old master key: a new one, and a digest made anew
 * under it from the records as they are (those under the old master key are shredded). */
static int ks_first_mk_ledger(struct unitd_keystore *ks, const struct ky_kms *kms)
{
	bool shredded;
	int r;

	if ((r = ks_shredded(kms, KY_STORE_LEDGER_SECRET, &shredded)) != 0)
		return r;
	if (!shredded)
		return ks_attach(ks, kms, 0);
	if ((r = ky_store_secret_delete(kms->store, KY_STORE_LEDGER_SECRET)) != 0 &&
	    r != KY_ERR_NOT_FOUND)
		return r;
	unitd_keystore_flush(ks);
	unitd_log("storage integrity key in key storage is under a master key this unit does not "
	          "hold (crypto-shredded): replaced, the storage digest made anew");
	return ks_attach(ks, kms, 1);
}

int unitd_keystore_first_mk(struct unitd_keystore *ks, int64_t now)
{
	struct ky_kms kms;
	bool shredded;
	int r, first = 0;

	if ((r = ks_enter(ks, &kms, false)) != 0)
		return r;
	/* First: the other steps write to key storage, which needs its digest key. */
	if ((r = ks_first_mk_ledger(ks, &kms)) != 0) {
		unitd_log("first master key: storage digest: %s", ky_err_message(r));
		unitd_keystore_leave(ks);
		return r;
	}
	/* Each step on its own: one that fails does not keep the others from being done. */
	if ((r = ks_shredded(&kms, UNITD_SECRET_POLICIES, &shredded)) == 0 && shredded &&
	    (r = ky_store_secret_delete(kms.store, UNITD_SECRET_POLICIES)) == 0)
		unitd_log("instance policies in key storage are under a master key this unit does "
		          "not hold (crypto-shredded): removed, the defaults apply");
	if (r != 0 && r != KY_ERR_NOT_FOUND) {
		unitd_log("first master key: instance policies: %s", ky_err_message(r));
		first = first ? first : r;
	}
	if ((r = ks_shredded(&kms, KY_IMPORT_TOKEN_SECRET, &shredded)) == 0 && shredded &&
	    (r = ky_store_secret_delete(kms.store, KY_IMPORT_TOKEN_SECRET)) == 0)
		unitd_log("import token in key storage is under a master key this unit does not "
		          "hold (crypto-shredded): removed, a new one can be created");
	if (r != 0 && r != KY_ERR_NOT_FOUND) {
		unitd_log("first master key: import token: %s", ky_err_message(r));
		first = first ? first : r;
	}
	if ((r = ks_first_mk_apikeys(&kms)) != 0) {
		unitd_log("first master key: API keys: %s", ky_err_message(r));
		first = first ? first : r;
	}
	if ((r = ks_first_mk_token_key(&kms, now)) != 0) {
		unitd_log("first master key: token signing key: %s", ky_err_message(r));
		first = first ? first : r;
	}
	unitd_keystore_flush(ks);
	unitd_keystore_leave(ks);
	return first;
}
