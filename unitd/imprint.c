/* The imprint claim rule: while a unit is in imprint mode, only the holder of the instance's
 * imprint credential may send it commands (include/kyok/imprint.h has the format). */
#include <stdio.h>
#include <string.h>

#include "kyok/ceremony.h"
#include "kyok/err.h"
#include "kyok/imprint.h"
#include "unitd/imprint.h"

#define IMPRINT_CLAIM_MAX 128 /* base64 of a 64-byte signature is 88 characters */

int unitd_imprint_check(const struct unitd_imprint *im, const struct ky_domain *live,
                        const char *claim, const uint8_t *body, size_t n, char *detail,
                        size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	const bool imprint = live->sig_threshold == 0;

	if (claim == NULL && !imprint)
		return 0; /* out of imprint mode the signatures speak */
	if (!im->configured) {
		snprintf(detail, detaillen,
		         "unit %s has no imprint_verifier in its configuration, so it can check no "
		         "imprint claim: its operator must add the public key of the instance's "
		         "imprint credential",
		         live->unit);
		return imprint ? KY_ERR_IMPRINT_CLAIM_REQUIRED : KY_ERR_IMPRINT_CLAIM_INVALID;
	}
	if (claim == NULL) {
		snprintf(detail, detaillen, "unit %s received the command without a %s header",
		         live->unit, KY_HDR_IMPRINT_CLAIM);
		return KY_ERR_IMPRINT_CLAIM_REQUIRED;
	}
	r = strlen(claim) > IMPRINT_CLAIM_MAX ? KY_ERR_IMPRINT_CLAIM_INVALID
	                                      : ky_imprint_claim_verify(im->pub, claim, body, n);
	if (r == KY_ERR_IMPRINT_CLAIM_INVALID) {
		snprintf(detail, detaillen,
		         "the %s header does not verify with the imprint verifier of unit %s",
		         KY_HDR_IMPRINT_CLAIM, live->unit);
		return r;
	}
	if (r != 0) {
		snprintf(detail, detaillen, "the unit cannot check the imprint claim");
		return r;
	}
	return 0;
}
