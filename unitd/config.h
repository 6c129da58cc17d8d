/* config.c: unit.conf, small and pure, no I/O beyond reading the file. */
#ifndef KYOK_UNITD_CONFIG_H
#define KYOK_UNITD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"
#include "unitd/imprint.h"

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
#define UNITD_THREADS_MAX            256u
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
	uint32_t threads;         /* request threads; 0 = 8 per CPU, at most 128 */
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

#endif
