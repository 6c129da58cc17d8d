/* imprint.c: the imprint claim rule of the admin endpoint. */
#ifndef KYOK_UNITD_IMPRINT_H
#define KYOK_UNITD_IMPRINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"
#include "kyok/imprint.h"

struct ky_domain;

/* The public key of the instance's imprint credential (include/kyok/imprint.h). */
struct unitd_imprint {
	bool configured;
	uint8_t pub[KY_IMPRINT_PUB_LEN];
};

/* The imprint claim rule, for one POST /v1/admin/command with body and header
 * Kyok-Imprint-Claim claim (NULL when absent): while the live state is in imprint mode the
 * claim must be there and verify with the configured imprint verifier
 * (KY_ERR_IMPRINT_CLAIM_REQUIRED when it is missing or none is configured); a claim that is
 * sent must verify in any mode (KY_ERR_IMPRINT_CLAIM_INVALID). detail gets the sentence for
 * the reply. Pure: no I/O. */
int unitd_imprint_check(const struct unitd_imprint *im, const struct ky_domain *live,
                        const char *claim, const uint8_t *body, size_t n, char *detail,
                        size_t detaillen) KY_WUR;

#endif
