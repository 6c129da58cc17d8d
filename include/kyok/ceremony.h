/* The crypto unit's domain state and the ceremony rules that change it.
 *
 * Pure logic: nothing here does I/O. The daemon keeps one struct ky_domain, verifies a
 * command against a snapshot (ky_ceremony_verify), applies it to a private copy
 * (ky_ceremony_apply), seals and writes the copy, then swaps it in.
 */
#ifndef KYOK_CEREMONY_H
#define KYOK_CEREMONY_H

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>

#include "kyok/common.h"

/* A unit state's incarnation: random bytes drawn when the state is created. A state made
 * again for the same unit id (data directory lost or deleted) has another one, so commands
 * signed for the earlier state, whose counter started at 0 too, do not apply to it. */
#define KY_INCARNATION_LEN 16

enum ky_new_state { KY_NEW_EMPTY, KY_NEW_UNCOMMITTED, KY_NEW_COMMITTED };
enum ky_cur_state { KY_CUR_EMPTY, KY_CUR_VALID };

struct ky_admin {
	char name[KY_ADMIN_NAME_MAX + 1];
	uint8_t ski[KY_SKI_LEN];
	X509 *cert;
};

/* One master key transfer between two units of the instance, as a unit records it: the
 * export on the sending unit, the import on the receiving one. fp = SHA-256 of the unit's
 * identity public key (DER SubjectPublicKeyInfo), as 'known_units' pins it. */
#define KY_MAX_TRANSFERS 16 /* the oldest record goes when a unit holds this many */
enum ky_transfer_kind { KY_TRANSFER_EXPORT, KY_TRANSFER_IMPORT };
struct ky_transfer {
	enum ky_transfer_kind kind;
	uint64_t counter; /* the transaction counter of the command that did it */
	char from[KY_ID_MAX + 1];
	char from_fp[65];
	char to[KY_ID_MAX + 1];
	char to_fp[65];
	uint8_t vp[KY_VP_LEN];
};

/* The master key registers' key bytes: opaque outside lib/ceremony. The daemon reaches them
 * only through ky_domain_mk (kyok/ceremony_mk.h), to encrypt key storage. */
struct ky_domain_keys;

/* Allocated in the OpenSSL secure heap (it holds private keys; the master keys sit in their
 * own secure allocation, keys). */
struct ky_domain {
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	char zone[KY_ID_MAX + 1];
	uint8_t incarnation[KY_INCARNATION_LEN]; /* fixed when the state is created */
	uint64_t next_counter;                   /* a command must carry exactly this value */
	int sig_threshold;                       /* 0 = imprint mode */
	int rev_threshold;
	size_t nadmins;
	struct ky_admin admins[KY_MAX_ADMINS];
	enum ky_new_state new_state;
	uint8_t new_vp[KY_VP_LEN];
	/* VPs of the key parts that formed the key, in load order; 0 parts when the key was
	 * generated or imported (or the register is empty). Moved with the key on set-immediate. */
	size_t new_nparts;
	uint8_t new_part_vps[KY_MAX_PARTS][KY_VP_LEN];
	enum ky_cur_state cur_state;
	uint8_t cur_vp[KY_VP_LEN];
	size_t cur_nparts;
	uint8_t cur_part_vps[KY_MAX_PARTS][KY_VP_LEN];
	struct ky_domain_keys *keys; /* new and current master keys; NULL only in a domain built
	                              * by hand to ask ky_ceremony_required */
	EVP_PKEY *identity_key;      /* signs every reply (outbound authentication) */
	X509 *identity_cert;         /* self-signed, CN = unit id, OU = instance id */
	EVP_PKEY *importer_key;      /* ECDH recipient of key parts */
	X509 *importer_cert;         /* issued by the identity key */
	X509 *anchor_cert;           /* the instance's unit trust anchor: issued identity_cert */
	size_t ntransfers;           /* master key transfers, oldest first (ceremony/transfer.c) */
	struct ky_transfer transfers[KY_MAX_TRANSFERS];
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
	KY_OP_MK_EXPORT,      /* "mk-export"      {"recipients": [{"importer": PEM,
	                       *  "identity": PEM}], "register": "new"|"current" (optional)} */
	KY_OP_MK_IMPORT,      /* "mk-import"      {"envelope": b64 EnvelopedData, "vp": hex,
	                       *  "source": PEM identity of the exporting unit,
	                       *  "signature": b64 of its transfer signature} */
	/* Ops whose effect is on key storage: the ceremony checks them, the daemon acts. */
	KY_OP_MK_REENCIPHER,  /* "mk-reencipher"  {"vp": hex of the committed new key} */
	KY_OP_APIKEY_CREATE,  /* "apikey-create"  {"apikey_id", "name", "role": role list,
	                       *  "hash": hex} */
	KY_OP_APIKEY_REVOKE,  /* "apikey-revoke"  {"apikey_id"} */
	KY_OP_STORAGE_ACCEPT, /* "storage-accept" {} : key storage taken as it is (a restore) */
};
#define KY_OP_LAST KY_OP_STORAGE_ACCEPT

#define KY_APIKEY_NAME_MAX 64
/* The longest role list: every role once, "Reader,ReaderPlus,Writer,Manager,KeyPurge". */
#define KY_ROLE_MAX 48
/* Service access roles of API keys, as the reference names them. An API key holds one or
 * more of them, written as a comma list in the canonical order Reader, ReaderPlus, Writer,
 * Manager, KeyPurge (no blanks): that text is what the unit stores and tags, so two lists of
 * the same roles are the same text. */
/* in (roles in any order, comma-separated) -> out in the canonical order. An empty list or
 * item, an unknown role or one given twice is KY_ERR_APIKEY_ROLES, named in detail (which
 * may be NULL). */
int ky_roles_canonical(const char *in, char out[KY_ROLE_MAX + 1], char *detail,
                       size_t detaillen) KY_WUR;
/* Whether role is a valid role list in the canonical order (a single role is one). */
bool ky_role_valid(const char *role);

/* A parsed command. JSON on the wire (the content of the CMS SignedData):
 * {"kyok": "admin-command-v1", "instance": "...", "unit": "...",
 *  "incarnation": "<32 hex digits>", "counter": N, "op": "<name>", ...op fields above} */
struct ky_command {
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	uint8_t incarnation[KY_INCARNATION_LEN];
	uint64_t counter;
	enum ky_op op;
	X509 *cert;              /* admin-add */
	uint8_t ski[KY_SKI_LEN]; /* admin-rm */
	int sig, rev;            /* thresholds-set */
	size_t nparts;           /* mk-load */
	struct ky_buf parts[KY_MAX_PARTS];
	bool has_vp; /* mk-load, mk-commit, mk-setimm, mk-import */
	uint8_t vp[KY_VP_LEN];
	size_t nrecips;                 /* mk-export */
	X509 *recips[KY_MAX_ADMINS];    /* importer certificates */
	X509 *recip_ids[KY_MAX_ADMINS]; /* the identity certificate that issued each */
	bool export_current;            /* "register": "current" */
	X509 *source;                   /* mk-import: identity certificate of the sender */
	struct ky_buf source_sig;       /* mk-import: its transfer signature */
	struct ky_buf envelope;         /* mk-import */
	char apikey_id[KY_ID_MAX + 1];  /* apikey-create, apikey-revoke */
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

/* New unit state in imprint mode with fresh identity and importer keys and a fresh random
 * incarnation, certified by a unit trust anchor made here and forgotten: for tests and
 * tools, a unit on its own. */
int ky_domain_new(const char *instance, const char *unit, const char *zone,
                  struct ky_domain **out) KY_WUR;
/* New unit state in imprint mode around an identity key certified by the instance's anchor
 * (identity_cert: CN = unit, OU = instance, issued by anchor_cert; KY_ERR_BAD_CERT else);
 * a fresh importer key certified by the identity. References are taken, not stolen. */
int ky_domain_new_certified(const char *instance, const char *unit, const char *zone,
                            EVP_PKEY *identity_key, X509 *identity_cert, X509 *anchor_cert,
                            struct ky_domain **out) KY_WUR;
void ky_domain_free(struct ky_domain *d);
/* False for a state sealed before incarnations existed (all zero): the daemon gives it one
 * with ky_domain_new_incarnation and writes it before serving. */
bool ky_domain_has_incarnation(const struct ky_domain *d);
int ky_domain_new_incarnation(struct ky_domain *d) KY_WUR;
int ky_domain_dup(const struct ky_domain *d, struct ky_domain **out) KY_WUR;
/* Full state including secrets, for sealing. Caller ky_buf_free's (cleanses). */
int ky_domain_serialize(const struct ky_domain *d, struct ky_buf *out) KY_WUR;
int ky_domain_parse(const uint8_t *p, size_t n, struct ky_domain **out) KY_WUR;
/* Public view (no secret): what GET /v1/admin/state answers.
 * {"instance","unit","zone","incarnation":hex,"imprint":bool,"next_counter":n,
 *  "signature_threshold":n,
 *  "revocation_threshold":n,"admins":[{"name","ski","cert"}],
 *  "new_mk":{"state":"EMPTY|FULL UNCOMMITTED|FULL COMMITTED","vp":hex|null,
 *            "part_vps":[hex...]},
 *  "current_mk":{"state":"EMPTY|VALID","vp":hex|null,"part_vps":[hex...]},
 *  "identity": sha256 hex of the identity public key, "anchor": same of the anchor's,
 *  "transfers":[{"op":"mk-export|mk-import","counter","from","from_identity","to",
 *   "to_identity","vp"}]}
 * part_vps: the VPs of the key parts the key was loaded from; [] when it was generated or
 * imported, or the register is empty. */
json_t *ky_domain_public_json(const struct ky_domain *d);

/* That public state, read back by a workstation (what it needs to plan a command). */
struct ky_unit_admin {
	char name[KY_ADMIN_NAME_MAX + 1];
	uint8_t ski[KY_SKI_LEN];
	char ski_hex[2 * KY_SKI_LEN + 1];
};
struct ky_unit_state {
	uint8_t incarnation[KY_INCARNATION_LEN]; /* of the unit's state: every command names it */
	char incarnation_hex[2 * KY_INCARNATION_LEN + 1];
	bool imprint;
	uint64_t counter; /* next transaction counter */
	int sig, rev;
	size_t nadmins;
	struct ky_unit_admin admins[KY_MAX_ADMINS];
	enum ky_new_state new_state;
	char new_vp[2 * KY_VP_LEN + 1]; /* "" when empty */
	enum ky_cur_state cur_state;
	char cur_vp[2 * KY_VP_LEN + 1];
};
/* Parses what ky_domain_public_json wrote: KY_ERR_BAD_REPLY when a member is missing, of
 * the wrong type or out of range. */
int ky_unit_state_parse(const json_t *j, struct ky_unit_state *st) KY_WUR;
/* Index of the administrator with that SKI (or name), or -1. */
int ky_unit_state_admin_by_ski(const struct ky_unit_state *st, const uint8_t ski[KY_SKI_LEN]);
int ky_unit_state_admin_by_name(const struct ky_unit_state *st, const char *name);

/* Number of distinct admin signatures op needs in d's present mode, or an error
 * (KY_ERR_IMPRINT_MODE, KY_ERR_NOT_IMPRINT_MODE). For thresholds-set in imprint mode this
 * is the new signature threshold; for mk-load the number of parts. When that number
 * itself is impossible the reason is returned instead: KY_ERR_KEY_PARTS (mk-load with
 * other than 2..8 parts), KY_ERR_THRESHOLD_RANGE / KY_ERR_THRESHOLD_ABOVE_ADMINS
 * (thresholds-set in imprint mode; exit-imprint with no admin installed). */
int ky_ceremony_required(const struct ky_domain *d, const struct ky_command *c,
                         int *required) KY_WUR;

/* ---- signed commands: verify, then apply ----
 *
 * A command (DER CMS SignedData) is decoded once, by ky_ceremony_verify, into a verified
 * command. Everything that acts on it afterwards (the unit's log line, its key storage
 * guards, ky_ceremony_apply) reads that object: the bytes are never decoded again, and
 * nothing acts on a decoding that was not the one verified. The daemon verifies against a
 * snapshot of its state without holding its lock, then applies under the lock; apply
 * refuses when the state changed in between (KY_ERR_STATE_CHANGED). */

/* Opaque; made only by ky_ceremony_verify. */
struct ky_verified;

/* What a command claims before anything is verified, for log lines about refusals. */
struct ky_command_label {
	bool parsed; /* false: op and counter are unknown */
	enum ky_op op;
	uint64_t counter;
};

/* Verifies cms against d (not changed). Check order, each with its own error: command form,
 * instance, unit, incarnation, counter, every signature (signer not admin, bad signature: one CMS
 * verification per SignerInfo), mode, signature count (duplicate signer, not enough).
 * label (may be NULL) is filled whenever the command's content parsed, verified or not.
 * detail receives a specific sentence for the error ("1 of 2 signatures", "signer 'bob' is
 * not an administrator", ...), "" when none. */
int ky_ceremony_verify(const struct ky_domain *d, const uint8_t *cms, size_t n,
                       struct ky_verified **out, struct ky_command_label *label, char *detail,
                       size_t detaillen) KY_WUR;
void ky_verified_free(struct ky_verified *v);
/* What was verified. The command is the one decoded from the signed bytes. */
const struct ky_command *ky_verified_command(const struct ky_verified *v);
enum ky_op ky_verified_op(const struct ky_verified *v);
uint64_t ky_verified_counter(const struct ky_verified *v);
/* The administrators whose signatures verified, each once, in the order of their first
 * SignerInfo (CMS keeps SignerInfos as a DER SET: not the order of signing). */
size_t ky_verified_nsigners(const struct ky_verified *v);
const char *ky_verified_signer_name(const struct ky_verified *v, size_t i);
const uint8_t *ky_verified_signer_ski(const struct ky_verified *v, size_t i); /* KY_SKI_LEN */

/* Runs the op of v on d, which must be a private copy of the state v was verified against
 * (KY_ERR_STATE_CHANGED otherwise: another command changed it since): on error d may be
 * partly changed and must be discarded. On success d->next_counter has advanced and *result
 * holds the reply payload ({"op": name, ...op results, e.g. "envelopes" for mk-export, "vp"
 * for mk-generate}). */
int ky_ceremony_apply(struct ky_domain *d, const struct ky_verified *v, json_t **result,
                      char *detail, size_t detaillen) KY_WUR;

/* ky_ceremony_verify then ky_ceremony_apply on the same d (a private copy). */
int ky_ceremony_execute(struct ky_domain *d, const uint8_t *cms, size_t n, json_t **result,
                        char *detail, size_t detaillen) KY_WUR;

#endif
