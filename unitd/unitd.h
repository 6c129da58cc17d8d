/* kyok-unitd internals: configuration, hardening, sealing, the HTTP server. */
#ifndef KYOK_UNITD_H
#define KYOK_UNITD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include "kyok/ceremony.h"
#include "kyok/common.h"
#include "kyok/imprint.h"
#include "kyok/store.h"

#define UNITD_ERR_MAX 512 /* room for one error sentence */

/* ---- config.c: small and pure, no I/O beyond reading the file ---- */

#define UNITD_CONFIG_MAX_BYTES             (64 * 1024)
#define UNITD_HOST_MAX                     255
#define UNITD_KEY_LIMIT_MAX                10000000u
#define UNITD_KEY_CACHE_MAX                4000000u
#define UNITD_KEY_CACHE_DEFAULT            100000u /* at most, by default: key_limit when lower */
#define UNITD_TOKEN_TTL_MIN                1u
#define UNITD_TOKEN_TTL_MAX                86400u
#define UNITD_TOKEN_TTL_DEFAULT            3600u
#define UNITD_REENC_BATCH_DEFAULT          500u
#define UNITD_REENC_BATCH_MAX              100000u
#define UNITD_REENC_PAUSE_MAX              60000u /* ms */
#define UNITD_POLICY_PASS_INTERVAL_DEFAULT 3600u  /* s */
#define UNITD_POLICY_PASS_INTERVAL_MAX     86400u /* s */
#define UNITD_POLICY_PASS_AHEAD_MAX        36500u /* days */
/* Connections: total and per client address, and how long one may take (seconds). */
#define UNITD_CONN_DEFAULT           1000u
#define UNITD_CONN_MAX               100000u
#define UNITD_CONN_CLIENT_DEFAULT    64u
#define UNITD_IDLE_TIMEOUT_DEFAULT   30u
#define UNITD_BODY_TIMEOUT_DEFAULT   60u
#define UNITD_HEADER_TIMEOUT_DEFAULT 10u
#define UNITD_TIMEOUT_MAX            3600u

/* Where the seal key of the unit state lives (unit.conf 'seal'). */
enum unitd_seal_kind { UNITD_SEAL_FILE, UNITD_SEAL_TPM2, UNITD_SEAL_PKCS11 };
#define UNITD_TCTI_MAX            255
#define UNITD_TOKEN_LABEL_MAX     32 /* a PKCS#11 token label is 32 bytes, blank padded */
#define UNITD_KEY_LABEL_MAX       64
#define UNITD_PKCS11_KEY_LABEL    "kyok-seal" /* default pkcs11_key_label */
#define UNITD_AUDIT_BYTES_MIN     4096u
#define UNITD_AUDIT_BYTES_MAX     (1024u * 1024u * 1024u)
#define UNITD_AUDIT_BYTES_DEFAULT (64u * 1024u * 1024u)
#define UNITD_AUDIT_CKPT_MIN      10u /* ms */
#define UNITD_AUDIT_CKPT_MAX      60000u
#define UNITD_AUDIT_CKPT_DEFAULT  1000u
#define UNITD_STORE_WAIT_MIN      100u    /* ms: how long a starting unit waits for storage's */
#define UNITD_STORE_WAIT_MAX      600000u /* write lock */
#define UNITD_STORE_WAIT_DEFAULT  10000u

/* The public key of the instance's imprint credential (include/kyok/imprint.h). */
struct unitd_imprint {
	bool configured;
	uint8_t pub[KY_IMPRINT_PUB_LEN];
};

struct unitd_config {
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	char zone[KY_ID_MAX + 1];
	char host[UNITD_HOST_MAX + 1]; /* without brackets for IPv6 literals */
	uint16_t port;                 /* 0 = pick a free one */
	char *data_dir;                /* relative paths are resolved against the config's dir */
	char *port_file;               /* NULL when not set */
	char *log_file;                /* NULL = stderr */
	char *store;                   /* "sqlite:/abs/path", NULL = no key storage (no key API) */
	uint32_t key_limit;            /* 0 = the store's default */
	uint32_t key_cache;            /* keys kept opened; 0 = unitd_key_cache's default */
	char *tls_cert;                /* both or neither; NULL = plain HTTP (loopback only) */
	char *tls_key;
	uint32_t token_ttl;           /* seconds */
	uint32_t reencipher_batch;    /* records per re-encipherment transaction */
	uint32_t reencipher_pause_ms; /* pause between re-encipherment batches */
	enum unitd_seal_kind seal;
	char *tpm2_tcti;          /* tpm2: TCTI string; NULL = the TCTI loader's default */
	char *pkcs11_module;      /* pkcs11: the module (shared object) path */
	char *pkcs11_token;       /* pkcs11: token label */
	char *pkcs11_key_label;   /* pkcs11: CKA_LABEL of the seal keys (default kyok-seal) */
	char *pkcs11_pin_file;    /* pkcs11: file holding the user PIN */
	uint32_t max_connections; /* open connections, all clients together */
	uint32_t max_connections_per_client; /* open connections from one address, 0 = any */
	uint32_t idle_timeout;               /* s without a byte before a connection is closed */
	uint32_t body_timeout;               /* s from a request's headers to its last byte */
	uint32_t header_timeout;             /* s from accept or the last request to its headers */
	char *anchor_cert;             /* the instance's unit trust anchor (PEM certificate) */
	char *identity_cert;           /* this unit's identity certificate, issued by the anchor */
	uint32_t audit_max_bytes;      /* audit log file size at which a new file begins */
	uint32_t audit_checkpoint_ms;  /* longest wait of an audit line for its checkpoint */
	uint32_t store_lock_wait_ms;   /* longest wait for key storage's write lock */
	struct unitd_imprint imprint;  /* imprint_verifier */
	uint32_t metrics;              /* 1: requests counted for /metrics (default), 0: not */
	uint32_t policy_pass_interval; /* s between policy passes (scheduler.c) */
	uint32_t policy_pass_days_ahead; /* the policy pass's clock ahead of the system's (tests) */
};

/* Parses config text. name is what messages call the file ("unit.conf"), base_dir the
 * directory relative paths are resolved against. On error returns KY_ERR_CONFIG and err
 * holds "NAME:LINE: what was wrong"; cfg is left released. */
int unitd_config_parse(const char *name, const char *base_dir, const char *text, size_t n,
                       struct unitd_config *cfg, char *err, size_t errlen) KY_WUR;
/* Reads path and parses it (KY_ERR_CONFIG with a message naming the file on any error). */
int unitd_config_load(const char *path, struct unitd_config *cfg, char *err, size_t errlen) KY_WUR;
void unitd_config_release(struct unitd_config *cfg);
/* "file", "tpm2", "pkcs11". */
const char *unitd_seal_kind_name(enum unitd_seal_kind kind);

/* ---- imprint.c ---- */

/* The imprint claim rule, for one POST /v1/admin/command with body and header
 * Kyok-Imprint-Claim claim (NULL when absent): while the live state is in imprint mode the
 * claim must be there and verify with the configured imprint verifier
 * (KY_ERR_IMPRINT_CLAIM_REQUIRED when it is missing or none is configured); a claim that is
 * sent must verify in any mode (KY_ERR_IMPRINT_CLAIM_INVALID). detail gets the sentence for
 * the reply. Pure: no I/O. */
int unitd_imprint_check(const struct unitd_imprint *im, const struct ky_domain *live,
                        const char *claim, const uint8_t *body, size_t n, char *detail,
                        size_t detaillen) KY_WUR;

/* ---- harden.c ---- */

/* No core dumps, not dumpable, umask 077, SIGPIPE ignored, OpenSSL secure heap, jansson
 * memory cleansed on free. Call first thing, before anything secret exists. */
int unitd_harden(char *err, size_t errlen) KY_WUR;
/* The OpenSSL secure heap, sized for the key cache (unitd_secure_heap_size); after the
 * configuration is read, before anything secret exists. */
int unitd_secure_heap_init(const struct unitd_config *cfg, char *err, size_t errlen) KY_WUR;

/* ---- log.c ---- */

/* Opens the log (path NULL = stderr). */
int unitd_log_open(const char *path, char *err, size_t errlen) KY_WUR;
/* Reopens the log file after rotation (SIGHUP); keeps the old one on failure. */
void unitd_log_reopen(void);
/* True when the log lines already land on stderr (no log file, or stderr is that file). */
bool unitd_log_reaches_stderr(void);
void unitd_log_close(void);
/* One line, prefixed with the UTC time. Never pass secrets. */
void unitd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* At most per_second lines a second from one source of lines, so that no client can fill the
 * disk: unitd_log_rate_take says whether this line may be written, and sets *missed to the
 * lines held back in the second before when that one is over (write them as one line). */
struct unitd_log_rate {
	pthread_mutex_t lock;
	time_t window;
	unsigned in_window, dropped;
};
#define UNITD_LOG_RATE_INIT                        \
	{                                          \
		PTHREAD_MUTEX_INITIALIZER, 0, 0, 0 \
	}
bool unitd_log_rate_take(struct unitd_log_rate *rl, unsigned per_second, unsigned *missed);

/* ---- header_timer.c: the header timeout of the HTTP server ----
 *
 * A connection has timeout_s seconds from its accept, and from the end of each request,
 * until the access handler sees the next request's headers; past that a sweeper thread
 * shuts it down and logs one line. Give unitd_header_timer_notify to MHD as
 * MHD_OPTION_NOTIFY_CONNECTION with the timer as its closure; free the timer after
 * MHD_stop_daemon. */
struct unitd_header_timer;

int unitd_header_timer_new(uint32_t timeout_s, struct unitd_header_timer **out) KY_WUR;
/* Stops and joins the sweeper; NULL is a no-op. */
void unitd_header_timer_free(struct unitd_header_timer *ht);
void unitd_header_timer_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                               enum MHD_ConnectionNotificationCode code);
/* The access handler's first call for a request: its headers are complete. */
void unitd_header_timer_headers_done(struct unitd_header_timer *ht, struct MHD_Connection *c);
/* A request ended (MHD_OPTION_NOTIFY_COMPLETED): the connection waits for headers again. */
void unitd_header_timer_request_done(struct unitd_header_timer *ht, struct MHD_Connection *c);

/* ---- audit.c: the unit's audit trail (docs/formats.md, "Audit log") ----
 *
 * One process-wide log in data_dir/audit/audit-NNNNNNNN.jsonl: JSON lines, hash-chained
 * (seq, prev = SHA-256 of the line before), a checkpoint line signed by the unit identity
 * key at most every audit_checkpoint_ms, every UNITD_AUDIT_CKPT_LINES lines, before a
 * new file begins and at stop. Each start begins a new file, as does a file reaching
 * audit_max_bytes; its first line carries the identity certificate and links to the last
 * line of the file before. A line has its place in the chain and its room reserved on disk
 * before the request it records is answered, and is written within about a millisecond
 * by the log's thread; lines written with sync (intents, commands, checkpoints) are on
 * disk when the call returns. Every write fails with KY_ERR_AUDIT_UNAVAILABLE when the
 * line cannot be taken, and the caller refuses what it records. Until _open and after
 * _close every call is a no-op. */

#define UNITD_AUDIT_CKPT_LINES 10000u

struct unitd_store;

enum unitd_audit_phase {
	UNITD_AUDIT_INTENT, /* about to act: in the file first (commands: on disk) */
	UNITD_AUDIT_DONE,   /* the outcome (or the refusal of what never got as far) */
};
/* Opens the log, writes the file, start and unseal lines (created: the state was made at
 * this start), starts the checkpoint thread. On error the unit must not start. */
int unitd_audit_open(const struct unitd_config *cfg, const struct unitd_store *st,
                     const struct ky_domain *d, bool created, char *err, size_t errlen) KY_WUR;
/* Stop line and final checkpoint; stops the thread. */
void unitd_audit_close(void);
/* The administrators' names and SKIs, copied out of the state under its lock, so that the
 * audit line of a command refused before it verified is made without the lock. */
struct unitd_audit_admins {
	size_t n;
	struct {
		char name[KY_ADMIN_NAME_MAX + 1];
		uint8_t ski[KY_SKI_LEN];
	} a[KY_MAX_ADMINS];
};
void unitd_audit_admins_of(const struct ky_domain *d, struct unitd_audit_admins *out);
/* An admin command. v: the verified command (op, counter, signers from it: nothing is
 * decoded again; adm may be NULL); NULL when it was refused before it verified: then what
 * the CMS claims, each signer named from adm when it is an administrator. from is the
 * client address.
 * INTENT, once the command checked out on a copy and before anything acts on it: 0, or
 * KY_ERR_AUDIT_UNAVAILABLE with detail set (refuse: nothing changed).
 * DONE, with outcome (an error code, detail its reason) and acted (the new state was
 * written): returns the code to answer: outcome, or KY_ERR_AUDIT_UNAVAILABLE with detail
 * set when the line cannot be written and the command did not act. A command that acted
 * keeps its answer (its intent line is in the log). */
int unitd_audit_command(enum unitd_audit_phase phase, const struct unitd_audit_admins *adm,
                        const struct ky_verified *v, const uint8_t *cms, size_t n, const char *from,
                        int outcome, bool acted, char *detail, size_t detaillen) KY_WUR;
/* A key API request: route is the matched pattern ("-" when none), apikey the caller's API
 * key id ("" when unknown), key the key id in the path (""), status and err the answer
 * (INTENT: 0 and 0). Never pass a token, a secret or a body. */
int unitd_audit_api(enum unitd_audit_phase phase, const char *method, const char *route,
                    const char *action, const char *apikey, const char *key, unsigned status,
                    int err) KY_WUR;
/* The sealed state was written (after the write): next counter and admin count. */
void unitd_audit_seal(const struct ky_domain *d);

/* ---- seal.c, seal_tpm2.c, seal_pkcs11.c: sealing backends ----
 *
 * The unit state is sealed under a seal key that one backend makes, finds, uses and
 * destroys. Each key has a reference file in the data directory (ops->ref_name): the key
 * itself for the file backend, what the TPM or token needs to find it for the others. A key
 * has an id (hex) that the sealed state's readable header names.
 */

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

/* Backends other than file: connect to the device named in cfg. */
int unitd_seal_tpm2_new(const struct unitd_config *cfg, struct unitd_seal **out, char *err,
                        size_t errlen) KY_WUR;
int unitd_seal_pkcs11_new(const struct unitd_config *cfg, struct unitd_seal **out, char *err,
                          size_t errlen) KY_WUR;

/* For the backends: a reference file written whole (temp file, fsync, link: an existing
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
struct unitd_store {
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
int unitd_store_open(const struct unitd_config *cfg, struct unitd_store *st, char *err,
                     size_t errlen) KY_WUR;
void unitd_store_release(struct unitd_store *st);
/* Every seal event (key made or destroyed, state sealed or unsealed or refused) is passed to
 * fn as well as logged; fn NULL stops that. */
void unitd_store_set_observer(struct unitd_store *st, unitd_seal_observer_fn *fn, void *ctx);
/* Before the first state: finds the seal key a first start cut short left, or makes one
 * (st->key). Whatever is sealed before the state (the pending identity key) uses it. */
int unitd_seal_key_first(struct unitd_store *st, char *err, size_t errlen) KY_WUR;
/* Loads the unit state, or creates and writes a new one (and its seal key) on first start.
 * Refuses a state that does not open (never overwrites it), belongs to another unit or
 * instance, names another backend or a seal key that no longer exists. Finishes or undoes a
 * seal key switch that a crash cut short, once the state opened. */
int unitd_state_load(struct unitd_store *st, const struct unitd_config *cfg, struct ky_domain **out,
                     char *err, size_t errlen) KY_WUR;
/* Seals d and writes it atomically: afterwards the file holds d, or on error the old state. */
int unitd_state_write(struct unitd_store *st, const struct ky_domain *d) KY_WUR;
/* Same, under a new seal key, and destroys the old one (zeroize): no copy of an earlier
 * state opens afterwards. On error the file holds the old state under the old key. */
int unitd_state_rekey(struct unitd_store *st, const struct ky_domain *d) KY_WUR;

/* The highest position of key storage this unit has seen (data_dir/storage.mark, sealed):
 * 0/0 when there is no mark. The mark lets a restarted unit refuse storage older than it saw,
 * or missing. */
int unitd_mark_load(struct unitd_store *st, const char *instance, const char *unit,
                    struct ky_store_ledger_pos *pos) KY_WUR;
int unitd_mark_write(struct unitd_store *st, const char *instance, const char *unit,
                     const struct ky_store_ledger_pos *pos) KY_WUR;
/* Removes the mark (before the seal key it is sealed under is replaced). */
int unitd_mark_remove(struct unitd_store *st) KY_WUR;

/* ---- identity.c: the unit identity certified by the instance's anchor ---- */

/* Makes (or finds) the pending identity key, sealed in data_dir, and writes its certificate
 * request to csr_path. KY_ERR_EXISTS when the unit already has its state. */
int unitd_identity_request(struct unitd_store *st, const struct unitd_config *cfg,
                           const char *csr_path, char *err, size_t errlen) KY_WUR;
/* A new state around the pending identity key and the certificates unit.conf names
 * (identity_cert issued by anchor_cert). Not written: the caller writes it, then drops the
 * pending key with unitd_identity_pending_drop. */
int unitd_identity_new_state(struct unitd_store *st, const struct unitd_config *cfg,
                             struct ky_domain **out, char *err, size_t errlen) KY_WUR;
void unitd_identity_pending_drop(struct unitd_store *st);
/* The anchor unit.conf names must be the one sealed in d: KY_ERR_ANCHOR_MISMATCH, or
 * KY_ERR_CONFIG when none is named or it does not read. */
int unitd_anchor_check(const struct ky_domain *d, const struct unitd_config *cfg, char *err,
                       size_t errlen) KY_WUR;

/* Records the daemon keeps in key storage's secrets, under the master key. */
#define UNITD_SECRET_TOKEN_KEY  "token-signing-key"
#define UNITD_SECRET_POLICIES   "instance-policies"
#define UNITD_SECRET_APIKEY_MAC "apikey-integrity-key"

/* ---- keystore.c: the unit's view of key storage ----
 *
 * The store, the master key registers taken from the live domain state (current when VALID,
 * new when FULL COMMITTED) and an in-memory cache of opened keys, API key records and the
 * token signing key. API requests hold the registers for reading between _enter and _leave;
 * a state swap replaces them (waiting for requests in flight). Every cache is dropped when
 * the registers change, when this unit writes the row, and when another connection (another
 * unit) committed anything since the calling thread last looked (ky_store_changed).
 */

struct unitd_keystore;
struct ky_kms;
struct ky_key;
struct ky_store;
struct ky_store_apikey;

/* st: the unit's data directory (its storage mark); it must outlive the keystore. Storage the
 * mark says held records is refused when missing or empty (KY_ERR_STORAGE_MISSING). */
int unitd_keystore_open(const struct unitd_config *cfg, struct unitd_store *st,
                        struct unitd_keystore **out, char *err, size_t errlen) KY_WUR;
void unitd_keystore_free(struct unitd_keystore *ks);
/* unitd_state_rekey (zeroize) with the storage mark kept in step: mark writes are held off,
 * the mark sealed under the old seal key is removed first, and written again under the new
 * one. A crash in between leaves no mark: the unit starts without a floor and takes the
 * storage's position again (it holds no master key after a zeroize anyway). */
int unitd_keystore_state_rekey(struct unitd_keystore *ks, struct unitd_store *st,
                               const struct ky_domain *d) KY_WUR;
struct ky_store *unitd_keystore_store(struct unitd_keystore *ks);
/* Changes whenever the registers change (what was verified under the old ones is stale). */
uint64_t unitd_keystore_epoch(struct unitd_keystore *ks);
const char *unitd_keystore_instance(const struct unitd_keystore *ks);
/* Takes the registers of d; drops the caches when they differ from the ones held. */
int unitd_keystore_set_registers(struct unitd_keystore *ks, const struct ky_domain *d) KY_WUR;
/* Read hold on the registers, *kms filled. KY_ERR_NO_MASTER_KEY (hold not taken) when the
 * unit holds no master key; a store error when the change check fails. The first hold checks
 * the whole of key storage against its digest (see ky_store_ledger_attach, the storage
 * integrity key is a system secret made by the first unit that needs it) and fails with the
 * refusal until it passes; every read is then checked. */
int unitd_keystore_enter(struct unitd_keystore *ks, struct ky_kms *kms) KY_WUR;
void unitd_keystore_leave(struct unitd_keystore *ks);
/* Drops every cache (after this unit wrote something that is cached). */
void unitd_keystore_flush(struct unitd_keystore *ks);
/* Keys the unit keeps opened: key_cache, else key_limit (the store's default when unset) up
 * to UNITD_KEY_CACHE_DEFAULT. */
uint32_t unitd_key_cache(const struct unitd_config *cfg);
/* Bytes of secure heap: KY_KMS_SECURE_HEAP, or more when the key cache needs it (a power of
 * two, with 16 MiB beside the cache for the records being opened). */
size_t unitd_secure_heap_size(const struct unitd_config *cfg);

/* A cached, opened key (material in the secure heap), shared: release with _key_put. Inside
 * a hold. The key's stored state; callers apply ky_key_state_at for expiry. */
struct unitd_key_ref;
int unitd_keystore_key_get(struct unitd_keystore *ks, const struct ky_kms *kms, const char *id,
                           int64_t now, struct unitd_key_ref **ref) KY_WUR;
const struct ky_key *unitd_key_ref_key(const struct unitd_key_ref *ref);
void unitd_keystore_key_put(struct unitd_keystore *ks, struct unitd_key_ref *ref);
/* API key records, inside a hold. A row is trusted only when its tag checks under the
 * instance's API key integrity key (a secret under the master key, made on first need):
 * KY_ERR_RECORD_TAMPERED otherwise, KY_ERR_MK_MISMATCH when that key is under a master key
 * neither register holds. */
/* By id (verified rows are cached). KY_ERR_NOT_FOUND. */
int unitd_keystore_apikey(struct unitd_keystore *ks, const struct ky_kms *kms, const char *id,
                          int64_t now, struct ky_store_apikey *out) KY_WUR;
/* By hash of the secret. KY_ERR_NOT_FOUND. */
int unitd_keystore_apikey_find(struct unitd_keystore *ks, const struct ky_kms *kms,
                               const uint8_t hash[KY_APIKEY_HASH_LEN], int64_t now,
                               struct ky_store_apikey *out) KY_WUR;
/* Sets k->mac (and has_mac) for k as it is to be stored. */
int unitd_keystore_apikey_seal(struct unitd_keystore *ks, const struct ky_kms *kms, int64_t now,
                               struct ky_store_apikey *k) KY_WUR;
int unitd_keystore_apikey_check(struct unitd_keystore *ks, const struct ky_kms *kms, int64_t now,
                                const struct ky_store_apikey *k) KY_WUR;
/* The instance policies record, opened (*out malloc'd: free it), inside a hold. Kept until a
 * change of any secret is seen in the change log, or unitd_keystore_policies_drop (after this
 * unit wrote it). KY_ERR_NOT_FOUND: never set. */
int unitd_keystore_policies(struct unitd_keystore *ks, const struct ky_kms *kms, uint8_t **out,
                            size_t *n) KY_WUR;
void unitd_keystore_policies_drop(struct unitd_keystore *ks);
/* The token signing key (32 bytes), made by whichever unit needs it first. Inside a hold. */
#define UNITD_TOKEN_KEY_LEN 32
int unitd_keystore_token_key(struct unitd_keystore *ks, const struct ky_kms *kms, int64_t now,
                             uint8_t out[UNITD_TOKEN_KEY_LEN]) KY_WUR;
/* After a set-immediate gave this unit its first master key (a new unit, or one zeroized and
 * initialised again): the records the daemon keeps for the instance that are under a master
 * key neither register holds were crypto-shredded with it. The token signing key is
 * replaced, the instance policies removed (defaults apply), the API keys removed with their
 * integrity key (none can be verified any more). Nowhere else: a unit left behind
 * by a rotation finds them under the instance's newer master key and must leave them alone
 * (it answers master key mismatch). */
int unitd_keystore_first_mk(struct unitd_keystore *ks, int64_t now) KY_WUR;
/* storage-accept: takes key storage as it is (a restore the administrators accepted) and
 * writes a new digest past every position seen; *pos = the new position. */
int unitd_keystore_accept(struct unitd_keystore *ks, struct ky_store_ledger_pos *pos) KY_WUR;

/* ---- storage_ops.c: ceremony ops that act on key storage, re-encipherment ---- */

struct unitd_storage;
/* batch: records per re-encipherment transaction (0 = the default); pause_ms: pause after
 * each batch, so that a rotation does not hog the disk. */
int unitd_storage_new(struct unitd_keystore *ks, uint32_t batch, uint32_t pause_ms,
                      struct unitd_storage **out) KY_WUR;
void unitd_storage_free(struct unitd_storage *so); /* stops and joins the worker */
/* After ky_ceremony_apply succeeded on the copy, before the state is written: the guards
 * and the store writes of apikey-create / -revoke, for the verified command v. old is the
 * live state. ks may be NULL (no store: the guards do not apply, the apikey ops are
 * refused). */
int unitd_storage_before_write(struct unitd_storage *so, const struct ky_domain *old,
                               const struct ky_verified *v, char *detail, size_t detaillen) KY_WUR;
/* After the state was written and swapped in: starts re-encipherment for mk-reencipher, stops
 * a run whose registers are gone, drops the API key cache after apikey ops. */
void unitd_storage_after_write(struct unitd_storage *so, const struct ky_domain *live,
                               const struct ky_verified *v);
/* The "storage" member of GET /v1/admin/state for registers cur_vp / new_vp (NULL = none);
 * json null when there is no store. */
json_t *unitd_storage_json(struct unitd_storage *so, const uint8_t *cur_vp, const uint8_t *new_vp);
/* The re-encipherment of this unit: running, records moved and to move (last or running run). */
void unitd_storage_progress(struct unitd_storage *so, bool *running, uint64_t *done,
                            uint64_t *total);
/* GET /v1/admin/apikeys: {"apikeys": [{"id","name","role","created","revoked","verified"}]}
 * (verified: the row's tag checks; null when the unit cannot tell: no master key). */
int unitd_storage_apikeys_json(struct unitd_storage *so, json_t **out) KY_WUR;

/* ---- scheduler.c: the policy pass (rotation policies, purge 90 days after deletion) ---- */

struct unitd_policy_pass;
struct ky_kms_sched;
/* Starts the pass's thread (nothing without key storage: *out NULL). */
int unitd_policy_pass_start(const struct unitd_config *cfg, struct unitd_keystore *ks,
                            struct unitd_policy_pass **out) KY_WUR;
void unitd_policy_pass_stop(struct unitd_policy_pass *pp); /* NULL ok; joins the thread */
/* One pass at now (logged, audited, counted). KY_ERR_NO_MASTER_KEY and the errors of key
 * storage when it cannot run. */
int unitd_policy_pass_run(struct unitd_keystore *ks, int64_t now, struct ky_kms_sched *st) KY_WUR;
/* Totals since the unit started, for /metrics. */
struct unitd_policy_pass_counts {
	uint64_t runs, rotated, purged, raced, failed;
};
void unitd_policy_pass_counts(struct unitd_policy_pass_counts *c);

/* ---- metrics.c: counters for GET /metrics, the storage check of GET /ready ---- */

#define UNITD_METRICS_ROUTES_MAX 192
#define UNITD_METRICS_UNMATCHED  0 /* the slot of a path no route table knows */

/* At start, before the server serves: the start time, and whether requests are counted
 * (unit.conf 'metrics'). */
void unitd_metrics_init(bool counting);
/* At start only: the slot of (method, prefix path), made on first use ("other" as method:
 * a method the route does not take). UNITD_METRICS_UNMATCHED when the table is full. */
int unitd_metrics_route(const char *method, const char *prefix, const char *path);
/* MHD_queue_response, the status noted for the request this thread is handling. */
enum MHD_Result unitd_metrics_queue(struct MHD_Connection *c, unsigned status,
                                    struct MHD_Response *resp);
/* The status queued on this thread since the last call (0 = none); clears it. */
unsigned unitd_metrics_taken(void);
/* One request of route slot answered with status, its headers complete at started
 * (CLOCK_MONOTONIC). Lock-free. */
void unitd_metrics_request(int route, unsigned status, const struct timespec *started);
enum unitd_metrics_cache_event {
	UNITD_METRICS_CACHE_HIT,
	UNITD_METRICS_CACHE_MISS,
	UNITD_METRICS_CACHE_EVICT,
	UNITD_METRICS_CACHE__N,
};
void unitd_metrics_cache(enum unitd_metrics_cache_event ev, uint64_t n);
void unitd_metrics_audit_line(void);
struct unitd_keystore;
/* Key storage as a key API request would find it (0, or why not), checked at most once a
 * second: the result of the last check otherwise. */
int unitd_metrics_storage_check(struct unitd_keystore *ks) KY_WUR;
/* What the server knows of the unit when /metrics is asked. */
struct unitd_metrics_view {
	bool ready, imprint, current, new_loaded, new_committed;
	struct ky_store *store; /* NULL: no key storage */
	bool reenc_running;
	uint64_t reenc_done, reenc_total;
};
/* The exposition text (format 0.0.4) appended to out. */
int unitd_metrics_render(const struct unitd_metrics_view *v, struct ky_buf *out) KY_WUR;

/* ---- api.c: the key API and the token service (see api.h) ---- */

struct unitd_api;
/* ks may be NULL: every request is then answered "no key storage". */
int unitd_api_new(const struct unitd_config *cfg, struct unitd_keystore *ks,
                  struct unitd_api **out) KY_WUR;
void unitd_api_free(struct unitd_api *api);
/* True for /api/v2/... and /identity/token. */
bool unitd_api_owns(const char *url);
/* The MHD access handler for those URLs; *con_cls is the request's own state. */
enum MHD_Result unitd_api_handle(struct unitd_api *api, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls);
void unitd_api_completed(void *con_cls);
/* The metrics slot (unitd_metrics_route) of the request whose state is con_cls. */
int unitd_api_metric(const struct unitd_api *api, const void *con_cls);

/* ---- server.c ---- */

struct unitd_server;

/* Binds host:port (port 0 = a free one), starts serving. Takes ownership of *dom (set to
 * NULL) and of *ks (may be NULL: no key storage, no key API). The data directory store must
 * outlive the server. Refuses a non-loopback address without TLS. */
int unitd_server_start(const struct unitd_config *cfg, struct unitd_store *st,
                       struct ky_domain **dom, struct unitd_keystore **ks,
                       struct unitd_server **out, char *err, size_t errlen) KY_WUR;
uint16_t unitd_server_port(const struct unitd_server *srv);
/* Numeric bound address, for the start line ("127.0.0.1", "[::1]"). */
const char *unitd_server_addr(const struct unitd_server *srv);

/* Names the program listening on TCP port ("pid N (name)"), or says it cannot be seen. */
void unitd_port_holder(uint16_t port, char *out, size_t n);
/* Names the program holding a write lock on byte `byte` of file path ("pid N (name)"): false
 * when no such lock is seen. */
bool unitd_lock_holder(const char *path, long byte, char *out, size_t n);
/* Stops serving (waits for requests in flight), frees the state. NULL is a no-op. */
void unitd_server_free(struct unitd_server *srv);

#endif
