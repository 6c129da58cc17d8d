/* Helpers shared by the ceremony sources; not part of the public API. */
#ifndef KYOK_CEREMONY_INTERNAL_H
#define KYOK_CEREMONY_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "kyok/ceremony.h"

/* The master key registers' bytes (struct ky_domain's keys), in the secure heap. */
struct ky_domain_keys {
	uint8_t new_key[KY_MK_LEN];
	uint8_t cur_key[KY_MK_LEN];
};

#define CEREMONY_COMMAND_TAG "admin-command-v1"
#define CEREMONY_STATE_TAG   "unit-state-v1"

/* Instance, unit and zone ids: printable ASCII, 1..KY_ID_MAX chars (0 allowed when
 * allow_empty). */
bool ceremony_id_valid(const char *s, size_t len, bool allow_empty);

/* A JSON string member of o as a C string: present, a string, no NUL inside. */
const char *ceremony_json_str(json_t *o, const char *key);

/* Every key of o is one of the NULL-terminated list keys. */
bool ceremony_json_only_keys(json_t *o, const char *const *keys);

/* Overwrites the bytes of a JSON string value in place (it held a secret), so that the
 * copy jansson made is cleansed before json_decref frees it. No-op unless a string. */
void ceremony_json_cleanse(json_t *s);

/* json_dumpb into a freshly sized buffer appended to out, with no intermediate copy. */
int ceremony_json_dump(json_t *j, struct ky_buf *out) KY_WUR;

/* ky_command_parse that also says what was wrong (detail may be NULL). */
int ceremony_command_parse(const uint8_t *json, size_t n, struct ky_command **out, char *detail,
                           size_t detaillen) KY_WUR;

void ceremony_detail(char *detail, size_t detaillen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- transfer.c: master key transfers between units of one instance ---- */

/* mk-export recipient i: importer -> identity -> d's anchor, same instance, not d itself, no
 * administrator's key. to / to_fp get the recipient unit's id and identity fingerprint.
 * KY_ERR_RECIPIENT_SELF / _ADMIN / _INSTANCE / _NOT_UNIT with a detail. */
int ceremony_recipient_check(const struct ky_domain *d, X509 *importer, X509 *identity, size_t i,
                             char to[KY_ID_MAX + 1], char to_fp[65], char *detail,
                             size_t len) KY_WUR;
/* d's identity signature over the transfer statement of envelope env to unit to (base64). */
int ceremony_transfer_sign(const struct ky_domain *d, const char *to, const uint8_t vp[KY_VP_LEN],
                           const struct ky_buf *env, char **sig_b64) KY_WUR;
/* mk-import: the sender c->source chains to d's anchor, is not d, and signed the statement
 * for c->envelope, d and c->vp. KY_ERR_SOURCE_NOT_UNIT with a detail. */
int ceremony_source_check(const struct ky_domain *d, const struct ky_command *c,
                          char from[KY_ID_MAX + 1], char from_fp[65], char *detail,
                          size_t len) KY_WUR;
/* Appends t to d's records (the oldest goes past KY_MAX_TRANSFERS) and to res "transfers". */
int ceremony_transfer_record(struct ky_domain *d, const struct ky_transfer *t, json_t *res) KY_WUR;
json_t *ceremony_transfers_json(const struct ky_domain *d);
/* The sealed/public "transfers" array into d (d->unit already set). KY_ERR_STATE_CORRUPT. */
int ceremony_transfers_parse(json_t *a, struct ky_domain *d) KY_WUR;

#endif
