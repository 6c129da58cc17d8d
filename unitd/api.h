/* The key-management API of a crypto unit (Key Protect v2 compatible), its token service and
 * the small pure pieces they are made of.
 *
 *   api.c        HTTP: the route, action and role tables, the request life cycle
 *   api_token.c  the token service: POST /identity/token, the bearer token of each request
 *   api_keys.c   the route handlers
 *   api_internal.h   what those three share (private to them)
 *   api_json.c   pure: Key Protect bodies in and out, query values, dates, errors
 *   api_netpolicy.c  pure: allowedIP's address ranges
 *   api_importtok.c  import tokens and secure import: their bodies, and the token in storage
 *   token.c      pure: access tokens (JWT HS256), the token request form
 */
#ifndef KYOK_UNITD_API_H
#define KYOK_UNITD_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "kyok/common.h"
#include "kyok/kms.h"

#define KP_BODY_MAX        (64 * 1024) /* request bodies: larger ones get 413 */
#define KP_TYPE_KEY        "application/vnd.ibm.kms.key+json"
#define KP_TYPE_ERROR      "application/vnd.ibm.kms.error+json"
#define KP_TYPE_VERSION    "application/vnd.ibm.kms.key_version+json"
#define KP_TYPE_POLICY     "application/vnd.ibm.kms.policy+json"
#define KP_TYPE_ACTION     "application/vnd.ibm.kms.key_action+json"
#define KP_TYPE_ALIAS      "application/vnd.ibm.kms.key_alias+json"
#define KP_TYPE_RING       "application/vnd.ibm.kms.key_ring+json"
#define KP_LIST_DEFAULT    200
#define KP_LIST_MAX        5000
#define KP_AAD_ITEMS_MAX   32
#define KP_DATE_LEN        20 /* "2024-01-02T03:04:05Z" */
#define KP_ACTOR_MAX       KY_KEY_ACTOR_MAX
#define KP_CORRELATION_MAX 128

/* ---- api_json.c ---- */

/* RFC 3339 UTC, seconds precision. */
void kp_date(int64_t t, char out[KP_DATE_LEN + 1]);
/* Accepts "YYYY-MM-DDTHH:MM:SS", optional fraction, then "Z" or "+hh:mm"/"-hh:mm".
 * KY_ERR_MALFORMED. */
int kp_date_parse(const char *s, int64_t *out) KY_WUR;

/* Query values. NULL or an empty value counts as absent (*present false, *out untouched);
 * a request's empty values are refused before (kp_query_param_check). KY_ERR_MALFORMED otherwise when not valid. */
int kp_query_uint(const char *v, uint64_t max, bool *present, uint64_t *out) KY_WUR;
int kp_query_bool(const char *v, bool *present, bool *out) KY_WUR;
/* "1,2,5" -> bits (1u << state); states 0..5; no blanks, no empty items. */
int kp_query_states(const char *v, bool *present, unsigned *mask) KY_WUR;

/* ---- api_query.c: filter, sort and search of GET /keys ---- */

enum kp_date_prop {
	KP_DATE_CREATION,
	KP_DATE_DELETION,
	KP_DATE_EXPIRATION,
	KP_DATE_LAST_ROTATE,
	KP_DATE_LAST_UPDATE,
	KP_DATE__COUNT
};
enum kp_date_op { KP_OP_EQ, KP_OP_LT, KP_OP_LTE, KP_OP_GT, KP_OP_GTE, KP_OP_NONE };
struct kp_date_term {
	enum kp_date_op op;
	int64_t t;
};
struct kp_filter {
	bool present;
	bool none;       /* contradictory terms: nothing matches */
	int extractable; /* -1 = either */
	unsigned states; /* 0 = any */
	struct kp_date_term dates[KP_DATE__COUNT][3];
	unsigned ndates[KP_DATE__COUNT];
};
enum kp_sort_prop {
	KP_SORT_ID,
	KP_SORT_STATE,
	KP_SORT_EXTRACTABLE,
	KP_SORT_IMPORTED,
	KP_SORT_CREATION,
	KP_SORT_LAST_UPDATE,
	KP_SORT_LAST_ROTATE,
	KP_SORT_DELETION,
	KP_SORT_EXPIRATION,
	KP_SORT__COUNT
};
struct kp_sort {
	unsigned n; /* 0 = creation order */
	struct {
		enum kp_sort_prop prop;
		bool desc;
	} by[KP_SORT__COUNT];
};
enum kp_search_scope { KP_SEARCH_ANY, KP_SEARCH_NAME, KP_SEARCH_ALIAS };
struct kp_search {
	bool present, negate, exact;
	enum kp_search_scope scope;
	char text[KY_KEY_NAME_MAX + 1];
};
/* Writes a request's detail (the part of an error message that names its subject) into d, n
 * bytes; d NULL or n 0: nothing. The one formatter of the key API's parsers. */
void kp_detail(char *d, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Parsers of the query values (NULL or "" = absent): KY_ERR_MALFORMED with a detail. */
int kp_filter_parse(const char *s, struct kp_filter *f, char *detail, size_t detaillen) KY_WUR;
int kp_sort_parse(const char *s, struct kp_sort *o, char *detail, size_t detaillen) KY_WUR;
int kp_search_parse(const char *s, struct kp_search *q, char *detail, size_t detaillen) KY_WUR;
/* One query parameter (name=value) of a request whose route takes the space-separated names
 * of allowed (at most KP_QUERY_PARAMS_MAX); label names the request in a refusal ("GET
 * /api/v2/keys"). *seen (0 before the first) holds the names met so far. KY_ERR_QUERY_PARAM:
 * a name allowed lacks; KY_ERR_QUERY_PARAM_REPEATED: a name met before;
 * KY_ERR_QUERY_PARAM_EMPTY: no value (NULL, as in "?limit", or "", as in "?limit="). Pure. */
#define KP_QUERY_PARAMS_MAX 16
int kp_query_param_check(const char *allowed, const char *label, const char *name,
                         const char *value, uint32_t *seen, char *detail, size_t detaillen) KY_WUR;
/* k's state must be its state as of now (ky_key_state_at). */
bool kp_filter_match(const struct kp_filter *f, const struct ky_key *k);
bool kp_search_match(const struct kp_search *q, const struct ky_key *k);
/* < 0, 0, > 0; ties broken by creation order. */
int kp_sort_cmp(const struct kp_sort *o, const struct ky_key *a, const struct ky_key *b);

enum kp_prefer { KP_PREFER_NONE, KP_PREFER_MINIMAL, KP_PREFER_REPRESENTATION };
/* Header Prefer: "return=minimal" or "return=representation" (other values: none). */
enum kp_prefer kp_prefer_parse(const char *v);

/* The members of a secure import (api_importtok.c): the payload beside them is the key
 * encrypted to the import token. */
struct kp_secure {
	bool present; /* encryptedNonce and iv given */
	struct ky_buf enc_nonce;
	struct ky_buf iv;
	int oaep_sha1; /* encryptionAlgorithm RSAES_OAEP_SHA_1 */
};

/* POST /keys: resources[0]. */
struct kp_create {
	char name[KY_KEY_NAME_MAX + 1];
	char description[KY_KEY_DESC_MAX + 1];
	int extractable;
	bool has_payload;
	struct ky_buf payload; /* secret: ky_buf_free cleanses */
	int64_t expires;       /* 0 = none */
	/* member 'aliases': each ky_key_alias_valid (KY_ERR_KEY_ALIAS_INVALID), at most
	 * KY_KEY_ALIASES_MAX (KY_ERR_KEY_ALIAS_QUOTA) */
	char aliases[KY_KEY_ALIASES_MAX][KY_KEY_ALIAS_MAX + 1];
	size_t naliases;
	struct kp_secure secure;
};
int kp_parse_create(const uint8_t *body, size_t n, struct kp_create *out, char *detail,
                    size_t detaillen) KY_WUR;
void kp_create_release(struct kp_create *c);

/* wrap / unwrap / rewrap / rotate / restore bodies. aad is the client's list of strings,
 * each as u32 big-endian length then the bytes (the associated data given to lib/kms). */
struct kp_action_body {
	bool has_plaintext;
	struct ky_buf plaintext; /* secret */
	bool has_ciphertext;
	struct ky_buf ciphertext;
	bool has_aad;
	struct ky_buf aad;
	bool has_payload;        /* rotate of an imported key, restore */
	struct ky_buf payload;   /* secret */
	struct kp_secure secure; /* rotate with an import token */
};
/* Empty body (n == 0) = {}; a collection of one is taken too (its metadata, when sent, of
 * collectionType KP_TYPE_ACTION, KP_TYPE_KEY for "restore"). action names the request in
 * messages; takes is the space-separated list of the members it takes ("" for none): any other
 * member is KY_ERR_BODY_MEMBER naming its path. Members taken are type-checked; encryptedNonce,
 * iv and encryptionAlgorithm (when takes has them) go to secure. */
int kp_parse_action(const uint8_t *body, size_t n, const char *action, const char *takes,
                    struct kp_action_body *out, char *detail, size_t detaillen) KY_WUR;
void kp_action_release(struct kp_action_body *a);

/* PUT /keys/{id}/policies. -1 = not given. only: "rotation", "dualAuthDelete" or NULL. A
 * member not taken, at any depth, is KY_ERR_BODY_MEMBER naming its path. */
struct kp_key_policy {
	int rotation_months; /* 0 = off, 1..12 */
	int dual_auth;       /* 0 / 1 */
};
int kp_parse_key_policies(const uint8_t *body, size_t n, const char *only,
                          struct kp_key_policy *out, char *detail, size_t detaillen) KY_WUR;

/* Instance policies: what is stored (a system secret, JSON) and what PUT changes. */
struct kp_ipolicy_meta {
	bool set; /* ever set */
	int64_t created, updated;
	char created_by[KP_ACTOR_MAX + 1];
	char updated_by[KP_ACTOR_MAX + 1];
};
/* An address range of allowedIP (api_netpolicy.c); an address is a range of all its bits. */
#define KP_ALLOWED_IP_MAX 64
#define KP_CIDR_TEXT_MAX  49 /* "ffff:...:ffff/128" */
struct kp_cidr {
	uint8_t family; /* 4 or 6 */
	uint8_t bits;   /* prefix length */
	uint8_t addr[16];
};
/* allowedNetwork's two values, as Key Protect names them. */
#define KP_NETWORK_PUBLIC_AND_PRIVATE "public-and-private"
#define KP_NETWORK_PRIVATE_ONLY       "private-only"
struct kp_instance_policies {
	struct kp_ipolicy_meta dual_meta;
	bool dual_auth;
	struct kp_ipolicy_meta rot_meta;
	bool rotation;
	int rotation_months;
	struct kp_ipolicy_meta kcia_meta;
	bool kcia; /* keyCreateImportAccess enabled: the four booleans below apply */
	bool create_root, create_standard, import_root, import_standard, enforce_token;
	/* Stored and listed; enforced: allowedIP (kp_allowed_ip_check). */
	struct kp_ipolicy_meta net_meta;
	bool allowed_network;
	bool private_only; /* allowed_network "private-only" (else "public-and-private") */
	struct kp_ipolicy_meta ip_meta;
	bool allowed_ip;
	size_t nranges;
	struct kp_cidr ranges[KP_ALLOWED_IP_MAX];
	struct kp_ipolicy_meta metrics_meta;
	bool metrics;
};
void kp_instance_policies_init(struct kp_instance_policies *p);
int kp_instance_policies_decode(const uint8_t *p, size_t n,
                                struct kp_instance_policies *out) KY_WUR;
int kp_instance_policies_encode(const struct kp_instance_policies *p, struct ky_buf *out) KY_WUR;
/* Applies a PUT body to p (only = query "policy" or NULL), all of it or nothing.
 * KY_ERR_BODY_MEMBER naming the path of a member not taken, at any depth; KY_ERR_MALFORMED
 * for a bad value (an allowedIP range: kp_cidr_parse). */
int kp_parse_instance_policies(const uint8_t *body, size_t n, const char *only, const char *actor,
                               int64_t now, struct kp_instance_policies *p, char *detail,
                               size_t detaillen) KY_WUR;
/* The instance policy types, as a message lists them; kp_instance_policy_known: whether type
 * is one (what ?policy= may name). */
#define KP_IPOLICY_TYPES \
	"dualAuthDelete, rotation, keyCreateImportAccess, allowedNetwork, allowedIP, metrics"
bool kp_instance_policy_known(const char *type);
/* GET /instance/policies resources (only = one type or NULL). */
json_t *kp_instance_policies_json(const struct kp_instance_policies *p, const char *only);
/* Where a key's material comes from. */
enum kp_origin {
	KP_GENERATED = 0,
	KP_IMPORTED = 1,       /* payload in the clear (over TLS) */
	KP_IMPORTED_TOKEN = 2, /* payload encrypted to the import token */
};
/* Whether p allows making a key of this kind with material of this origin. */
int kp_instance_policies_allow(const struct kp_instance_policies *p, int extractable,
                               enum kp_origin origin, char *detail, size_t detaillen) KY_WUR;

/* ---- api_netpolicy.c: allowedIP ---- */

/* "address/prefix", IPv4 or IPv6, no bits beyond the prefix: KY_ERR_MALFORMED with a detail
 * that names s and what to write. */
int kp_cidr_parse(const char *s, struct kp_cidr *out, char *detail, size_t detaillen) KY_WUR;
/* "192.0.2.0/24" (cap: KP_CIDR_TEXT_MAX + 1); kp_addr_format: the address alone. */
void kp_cidr_format(const struct kp_cidr *c, char *out, size_t cap);
void kp_addr_format(const struct kp_cidr *c, char *out, size_t cap);
/* A socket address as a range of one address (an IPv4-mapped IPv6 address as IPv4).
 * KY_ERR_USAGE for another family. */
int kp_addr_of(const struct sockaddr *sa, struct kp_cidr *out) KY_WUR;
bool kp_cidr_match(const struct kp_cidr *range, const struct kp_cidr *addr);
/* 0 when p has no allowedIP policy enabled or one of its ranges holds addr, else
 * KY_ERR_IP_NOT_ALLOWED naming the address. */
int kp_allowed_ip_check(const struct kp_instance_policies *p, const struct kp_cidr *addr,
                        char *detail, size_t detaillen) KY_WUR;

/* Building replies. */
json_t *kp_collection(const char *type, json_t *resources /* stolen */);
/* The reply to a new alias of k: a collection of one alias resource (keyId, alias, createdBy,
 * creationDate). NULL when k has no such alias, or out of memory. */
json_t *kp_alias_json(const struct ky_key *k, const char *alias);
/* PATCH /keys/{id}: {"keyRingID": "..."} (or a collection of one such object). */
int kp_parse_patch(const uint8_t *body, size_t n, char ring[KY_KEY_RING_MAX + 1], char *detail,
                   size_t detaillen) KY_WUR;
/* The key rings page [offset, offset + limit): 'default' first, then l's in creation order.
 * metadata.totalCount when total. */
json_t *kp_rings_json(const struct ky_key_rings *l, uint64_t offset, uint64_t limit, bool total);
/* The key as Key Protect shows it. payload: include the newest version's material (standard
 * keys only; callers check the role). crn names the instance. */
json_t *kp_key_json(const struct ky_key *k, const char *instance, bool payload, int64_t now);
json_t *kp_versions_json(const struct ky_key *k, uint64_t offset, uint64_t limit);
json_t *kp_key_policies_json(const struct ky_key *k, const char *instance, const char *only);
/* {"metadata": error collection, "resources": [{"errorMsg", "reasons": [{"code", "message",
 * "status", "moreInfo"}]}]}: code is the kyok slug in upper case with '_' and "_ERR", or
 * Key Protect's code where it gives one code to several refusals (REQ_TOO_EARLY_ERR). */
json_t *kp_error_json(int err, const char *detail);
const char *kp_status_text(unsigned status);
/* Appends compact JSON and a newline. */
int kp_json_dump(const json_t *j, struct ky_buf *out) KY_WUR;

/* ---- api_importtok.c: import tokens, secure import, registrations ---- */

struct ky_import_token;
/* The secure import members of o (a create resource or an action body; path names o in
 * messages): nothing present = 0 with out->present false; encryptedNonce and iv need each
 * other and a payload (has_payload); encryptionAlgorithm is RSAES_OAEP_SHA_256 (default) or
 * RSAES_OAEP_SHA_1. KY_ERR_MALFORMED with a detail. Pure. */
int kp_secure_parse(json_t *o, const char *path, bool has_payload, struct kp_secure *out,
                    char *detail, size_t detaillen) KY_WUR;
void kp_secure_release(struct kp_secure *s);
/* POST /import_token: {"expiration": 300..86400 (600), "maxAllowedRetrievals": 1..500 (1)};
 * an empty body takes the defaults. Pure. */
int kp_parse_import_token(const uint8_t *body, size_t n, uint32_t *expiration,
                          uint32_t *max_retrievals, char *detail, size_t detaillen) KY_WUR;
/* {creationDate, expirationDate, maxAllowedRetrievals, remainingRetrievals} and, for a
 * retrieval (payload_b64 not NULL), payload and nonce. Pure. */
json_t *kp_import_token_json(const struct ky_import_token *t, const char *payload_b64,
                             const char *nonce_b64);
/* How long after a key's last change a sync of its associated resources may be asked. */
#define KP_SYNC_WAIT 3600
/* Key Protect's rule for a sync of key id last changed at updated: KY_ERR_SYNC_TOO_EARLY
 * (saying from when) before updated + KP_SYNC_WAIT, else 0. Pure. */
int kp_sync_check(const char *id, int64_t updated, int64_t now, char *detail,
                  size_t detaillen) KY_WUR;
/* An empty registration collection (kyok keys protect no other service's resources). */
json_t *kp_registrations_json(bool total_count);
/* A write transaction of the request's own, unless it runs in one already (in_txn): *mine
 * says which. kp_txn_end commits one of its own when r is 0 (returning the commit's result)
 * and rolls it back otherwise (returning r). */
int kp_txn_begin(const struct ky_kms *kms, bool in_txn, bool *mine) KY_WUR;
int kp_txn_end(const struct ky_kms *kms, bool mine, int r) KY_WUR;
/* POST /import_token: a new token replaces the instance's one. in_txn: the request runs in a
 * write transaction already (else these functions run their own). made: the token
 * kp_import_token_make made from this body before that transaction (its RSA key takes a
 * while, and no lock may be held meanwhile), taken over (*made set to NULL); NULL or *made
 * NULL: made here. */
struct ky_import_token;
int kp_import_token_make(const uint8_t *body, size_t n, int64_t now, struct ky_import_token **out,
                         char *detail, size_t detaillen) KY_WUR;
int kp_import_token_create(const struct ky_kms *kms, bool in_txn, const uint8_t *body, size_t n,
                           int64_t now, struct ky_import_token **made, json_t **reply, char *detail,
                           size_t detaillen) KY_WUR;
/* GET /import_token: counts one retrieval and answers the public key and nonce. */
int kp_import_token_retrieve(const struct ky_kms *kms, bool in_txn, int64_t now, json_t **reply,
                             char *detail, size_t detaillen) KY_WUR;
/* Opens a secure import with the instance's token: the key into key (cap bytes), and the
 * token's nonce used up in key storage. Must run in the write transaction that stores the
 * key, so that a failure after it leaves the nonce as it was. */
int kp_import_token_unseal(const struct ky_kms *kms, const struct kp_secure *s,
                           const struct ky_buf *payload, int64_t now, uint8_t *key, size_t cap,
                           size_t *keylen, char *detail, size_t detaillen) KY_WUR;

#endif
