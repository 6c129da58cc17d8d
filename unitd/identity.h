/* identity.c: the unit identity certified by the instance's anchor. */
#ifndef KYOK_UNITD_IDENTITY_H
#define KYOK_UNITD_IDENTITY_H

#include <stddef.h>

#include "kyok/common.h"

struct ky_domain;
struct unitd_config;
struct unitd_datadir;

/* Makes (or finds) the pending identity key, sealed in data_dir, and writes its certificate
 * request to csr_path. KY_ERR_EXISTS when the unit already has its state. */
int unitd_identity_request(struct unitd_datadir *dd, const struct unitd_config *cfg,
                           const char *csr_path, char *err, size_t errlen) KY_WUR;
/* A new state around the pending identity key and the certificates unit.conf names
 * (identity_cert issued by anchor_cert). Not written: the caller writes it, then drops the
 * pending key with unitd_identity_pending_drop. */
int unitd_identity_new_state(struct unitd_datadir *dd, const struct unitd_config *cfg,
                             struct ky_domain **out, char *err, size_t errlen) KY_WUR;
void unitd_identity_pending_drop(struct unitd_datadir *dd);
/* The anchor unit.conf names must be the one sealed in d: KY_ERR_ANCHOR_MISMATCH, or
 * KY_ERR_CONFIG when none is named or it does not read. */
int unitd_anchor_check(const struct ky_domain *d, const struct unitd_config *cfg, char *err,
                       size_t errlen) KY_WUR;

#endif
