/* Counting keys by state without reading the keys table, the rule every backend follows
 * (sq_key_count, pg_key_count).
 *
 * Each backend keeps, by triggers on keys, one counter per stored state ('state:<N>' in its
 * counters table) and a partial index keys_expiring on the Active keys that have an
 * expiration date (state 1, expires > 0). A filter by states alone (no extractable, vp or
 * after_seq condition) is then answered as
 *
 *   sum of the counters of the states in f->states
 *   + sign * (Active keys with 0 < expires <= f->now, read from keys_expiring)
 *
 * which is what the filter's scan counts: as of a date (f->now > 0), an Active key whose
 * expiration date has passed is Deactivated (state 3), so it leaves a count of Active keys
 * (sign -1) and joins one of Deactivated keys (sign +1); a count of both, or of neither, is
 * unchanged (sign 0).
 */
#ifndef KYOK_STORE_COUNT_H
#define KYOK_STORE_COUNT_H

#include <stdbool.h>

#include "kyok/store.h"

/* The stored states a date turns one into the other (kms.h: KY_KEY_ACTIVE,
 * KY_KEY_DEACTIVATED; the backends' filters name them too). */
#define KY_COUNT_ACTIVE      1u
#define KY_COUNT_DEACTIVATED 3u

/* True when f filters by states alone: the counters answer it. */
static inline bool ky_count_by_states(const struct ky_store_filter *f)
{
	return f != NULL && f->states != 0 && f->extractable < 0 && f->vp_a == NULL &&
	       f->after_seq <= 0;
}

/* -1, 0 or 1: what the Active keys expired at f->now add to the count of f->states. */
static inline int ky_count_expired_sign(const struct ky_store_filter *f)
{
	bool active = (f->states & (1u << KY_COUNT_ACTIVE)) != 0;
	bool deactivated = (f->states & (1u << KY_COUNT_DEACTIVATED)) != 0;

	if (f->now <= 0 || active == deactivated)
		return 0;
	return active ? -1 : 1;
}

#endif
