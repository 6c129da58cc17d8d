/* scheduler.c: the policy pass (rotation policies, purge 90 days after deletion). */
#ifndef KYOK_UNITD_SCHEDULER_H
#define KYOK_UNITD_SCHEDULER_H

#include <stdint.h>

#include "kyok/common.h"

struct unitd_config;
struct unitd_keystore;

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

#endif
