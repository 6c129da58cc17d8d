/* The crypto unit's domain state and the ceremony rules that change it.
 *
 * Pure logic: nothing here does I/O. The daemon keeps one struct ky_domain, runs
 * ky_ceremony_execute on a private copy, seals and writes the copy, then swaps it in.
 */
#ifndef KYOK_CEREMONY_H
#define KYOK_CEREMONY_H

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>

#include "kyok/common.h"

enum ky_new_state { KY_NEW_EMPTY, KY_NEW_UNCOMMITTED, KY_NEW_COMMITTED };
enum ky_cur_state { KY_CUR_EMPTY, KY_CUR_VALID };

struct ky_admin {
	char name[KY_ADMIN_NAME_MAX + 1];
	uint8_t ski[KY_SKI_LEN];
	X509 *cert;
};

/* Allocated in the OpenSSL secure heap (it holds master keys). */
struct ky_domain {
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	char zone[KY_ID_MAX + 1];
	uint64_t next_counter; /* a command must carry exactly this value */
	int sig_threshold;     /* 0 = imprint mode */
	int rev_threshold;
	size_t nadmins;
	struct ky_admin admins[KY_MAX_ADMINS];
	enum ky_new_state new_state;
	uint8_t new_key[KY_MK_LEN];
	uint8_t new_vp[KY_VP_LEN];
	enum ky_cur_state cur_state;
	uint8_t cur_key[KY_MK_LEN];
	uint8_t cur_vp[KY_VP_LEN];
	EVP_PKEY *identity_key; /* signs every reply (outbound authentication) */
	X509 *identity_cert;    /* self-signed, CN = unit id, OU = instance id */
	EVP_PKEY *importer_key; /* ECDH recipient of key parts */
	X509 *importer_cert;    /* issued by the identity key */
};

enum ky_op {
	KY_OP_ADMIN_ADD,      /* "admin-add"      {"cert": PEM} */
	KY_OP_ADMIN_RM,       /* "admin-rm"       {"ski": hex} */
	KY_OP_THRESHOLDS_SET, /* "thresholds-set" {"signature": n, "revocation": n} */
	KY_OP_EXIT_IMPRINT,   /* "exit-imprint"   {} : thresholds become 1/1 */
	KY_OP_MK_LOAD,        /* "mk-load"        {"parts": [b64 EnvelopedData...], "vp": hex} */
	KY_OP_MK_COMMIT,      /* "mk-commit"      {"vp": hex} */
	KY_OP_MK_SETIMM,      /* "mk-setimm"      {"vp": hex} */
	KY_OP_MK_CLRNEW,      /* "mk-clrnew"      {} */
	KY_OP_MK_CLRCUR,      /* "mk-clrcur"      {} */
	KY_OP_ZEROIZE,        /* "zeroize"        {} */
	KY_OP_MK_GENERATE,    /* "mk-generate"    {} : random key into the new register */
	KY_OP_MK_EXPORT,      /* "mk-export"      {"recipients": [PEM importer certs]} */
	KY_OP_MK_IMPORT,      /* "mk-import"      {"envelope": b64 EnvelopedData, "vp": hex} */
	/* Ops whose effect is on key storage: the ceremony checks them, the daemon acts. */
	KY_OP_MK_REENCIPHER,  /* "mk-reencipher"  {"vp": hex of the committed new key} */
	KY_OP_APIKEY_CREATE,  /* "apikey-create"  {"apikey_id", "name", "role", "hash": hex} */
	KY_OP_APIKEY_REVOKE,  /* "apikey-revoke"  {"apikey_id"} */
	KY_OP_STORAGE_ACCEPT, /* "storage-accept" {} : key storage taken as it is (a restore) */
};
#define KY_OP_LAST KY_OP_STORAGE_ACCEPT

#define KY_APIKEY_NAME_MAX 64
#define KY_ROLE_MAX        16
/* Service access roles of API keys, as the reference names them. */
bool ky_role_valid(const char *role);

/* A parsed command. JSON on the wire (the content of the CMS SignedData):
 * {"kyok": "admin-command-v1", "instance": "...", "unit": "...", "counter": N,
 *  "op": "<name>", ...op fields above} */
struct ky_command {
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	uint64_t counter;
	enum ky_op op;
	X509 *cert;              /* admin-add */
	uint8_t ski[KY_SKI_LEN]; /* admin-rm */
	int sig, rev;            /* thresholds-set */
	size_t nparts;           /* mk-load */
	struct ky_buf parts[KY_MAX_PARTS];
	bool has_vp; /* mk-load, mk-commit, mk-setimm, mk-import */
	uint8_t vp[KY_VP_LEN];
	size_t nrecips; /* mk-export */
	X509 *recips[KY_MAX_ADMINS];
	struct ky_buf envelope;                   /* mk-import */
	char apikey_id[KY_ID_MAX + 1];            /* apikey-create, apikey-revoke */
	char apikey_name[KY_APIKEY_NAME_MAX + 1]; /* apikey-create */
	char role[KY_ROLE_MAX + 1];
	uint8_t hash[32]; /* SHA-256 of the API key's secret */
};

const char *ky_op_name(enum ky_op op);
int ky_op_from_name(const char *name, enum ky_op *op) KY_WUR;
const char *ky_new_state_name(enum ky_new_state s); /* "EMPTY", "FULL UNCOMMITTED", ... */
const char *ky_cur_state_name(enum ky_cur_state s); /* "EMPTY", "VALID" */

struct ky_command *ky_command_new(void);
void ky_command_free(struct ky_command *c);
/* Strict parser: unknown fields, wrong types, bad hex/base64 -> KY_ERR_BAD_COMMAND;
 * unknown op -> KY_ERR_NOT_COMMAND_OP; "kyok" tag missing or not "admin-command-v1" ->
 * KY_ERR_NOT_COMMAND; more than 8 key parts -> KY_ERR_KEY_PARTS. "vp" is required for
 * mk-commit and mk-import, optional for mk-load and mk-setimm. */
int ky_command_parse(const uint8_t *json, size_t n, struct ky_command **out) KY_WUR;
int ky_command_encode(const struct ky_command *c, struct ky_buf *json) KY_WUR;

/* New unit state in imprint mode with fresh identity and importer keys. */
int ky_domain_new(const char *instance, const char *unit, const char *zone,
                  struct ky_domain **out) KY_WUR;
void ky_domain_free(struct ky_domain *d);
int ky_domain_dup(const struct ky_domain *d, struct ky_domain **out) KY_WUR;
/* Full state including secrets, for sealing. Caller ky_buf_free's (cleanses). */
int ky_domain_serialize(const struct ky_domain *d, struct ky_buf *out) KY_WUR;
int ky_domain_parse(const uint8_t *p, size_t n, struct ky_domain **out) KY_WUR;
/* Public view (no secret): what GET /v1/admin/state answers.
 * {"instance","unit","zone","imprint":bool,"next_counter":n,"signature_threshold":n,
 *  "revocation_threshold":n,"admins":[{"name","ski","cert"}],
 *  "new_mk":{"state":"EMPTY|FULL UNCOMMITTED|FULL COMMITTED","vp":hex|null},
 *  "current_mk":{"state":"EMPTY|VALID","vp":hex|null}} */
json_t *ky_domain_public_json(const struct ky_domain *d);

/* Number of distinct admin signatures op needs in d's present mode, or an error
 * (KY_ERR_IMPRINT_MODE, KY_ERR_NOT_IMPRINT_MODE). For thresholds-set in imprint mode this
 * is the new signature threshold; for mk-load the number of parts. When that number
 * itself is impossible the reason is returned instead: KY_ERR_KEY_PARTS (mk-load with
 * other than 2..8 parts), KY_ERR_THRESHOLD_RANGE / KY_ERR_THRESHOLD_ABOVE_ADMINS
 * (thresholds-set in imprint mode; exit-imprint with no admin installed). */
int ky_ceremony_required(const struct ky_domain *d, const struct ky_command *c,
                         int *required) KY_WUR;

/* Runs one signed command (DER CMS SignedData) against d, which must be a private copy:
 * on error d may be partly changed and must be discarded. Check order: command form,
 * instance, unit, counter, every signature (bad signature, signer not admin), mode,
 * signature count (duplicate signer, not enough), then the op's own rules.
 * On success d->next_counter has advanced and *result holds the reply payload
 * ({"op": name, ...op results, e.g. "envelopes" for mk-export, "vp" for mk-generate}).
 * detail receives a specific sentence for the error ("1 of 2 signatures", "signer
 * 'bob' is not an administrator", ...), "" when none. */
int ky_ceremony_execute(struct ky_domain *d, const uint8_t *cms, size_t n, json_t **result,
                        char *detail, size_t detaillen) KY_WUR;

#endif
