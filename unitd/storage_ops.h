/* storage_ops.c: ceremony ops that act on key storage, re-encipherment. */
#ifndef KYOK_UNITD_STORAGE_OPS_H
#define KYOK_UNITD_STORAGE_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kyok/common.h"

struct ky_domain;
struct ky_verified;
struct unitd_keystore;

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

#endif
