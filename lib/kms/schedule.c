/* Policies acted on over time: a root key's rotation policy rotates it, and a destroyed key is
 * purged KY_KMS_AUTO_PURGE after its deletion, as Key Protect does.
 *
 * Several units may act at once on the same key storage. Each change is one compare-and-swap
 * on the rev of the row as it was read and is never retried: of two units that read a due
 * key, one writes and the other gets KY_ERR_CONFLICT and leaves the key alone (on its next
 * pass the key is no longer due). A key is thus rotated once per interval, however many
 * units run the pass.
 *
 * The rotation date: the newest version's creation date (the key's creation, or its last
 * rotation, by hand or by this pass) plus rotation_months calendar months, UTC, the day of
 * the month kept where the month has it and else the month's last day (Jan 31 + 1 month =
 * Feb 28 or 29), the time of day kept.
 */
#include <string.h>
#include <time.h>

#include "kyok/err.h"
#include "kyok/kms.h"

int64_t ky_kms_rotation_due(const struct ky_key *k)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	time_t base;
	struct tm tm;
	int months, year, mon, last;

	if (k->rotation_months == 0 || k->nversions == 0)
		return 0;
	base = (time_t)k->versions[k->nversions - 1].created;
	if (gmtime_r(&base, &tm) == NULL)
		return 0;
	months = tm.tm_mon + (int)k->rotation_months;
	year = tm.tm_year + 1900 + months / 12;
	mon = months % 12;
	last = mdays[mon] +
	       (mon == 1 && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0) ? 1 : 0);
	tm.tm_year = year - 1900;
	tm.tm_mon = mon;
	if (tm.tm_mday > last)
		tm.tm_mday = last;
	tm.tm_isdst = 0;
	return (int64_t)timegm(&tm);
}

enum ky_kms_due ky_kms_due(const struct ky_key *k, int64_t now)
{
	int64_t at;

	if (k->state == KY_KEY_DESTROYED)
		return now >= k->deleted + KY_KMS_AUTO_PURGE ? KY_KMS_DUE_PURGE : KY_KMS_DUE_NONE;
	/* Imported keys need new material from their owner: never rotated here. */
	if (k->extractable || k->imported || ky_key_state_at(k, now) != KY_KEY_ACTIVE)
		return KY_KMS_DUE_NONE;
	if ((at = ky_kms_rotation_due(k)) == 0 || now < at)
		return KY_KMS_DUE_NONE;
	return k->nversions < KY_KEY_VERSIONS_MAX ? KY_KMS_DUE_ROTATE : KY_KMS_DUE_NONE;
}

int ky_kms_due_apply(const struct ky_kms *kms, const struct ky_store_row *row, int64_t now,
                     enum ky_kms_due *done, struct ky_key **out)
{
	struct ky_store_row w = {0};
	struct ky_key *k = NULL;
	struct ky_key_act a = {.action = KY_KEY_ROTATE, .rotation_months = -1, .dual_auth = -1};
	enum ky_kms_due due;
	int r = KY_ERR_INTERNAL;

	*done = KY_KMS_DUE_NONE;
	if (out != NULL)
		*out = NULL;
	if ((r = ky_kms_record_open(kms, row, 0, &k)) != 0)
		goto out;
	due = ky_kms_due(k, now);
	if (due == KY_KMS_DUE_PURGE) {
		a.action = KY_KEY_PURGE;
		if ((r = ky_key_check(k, &a, now)) != 0)
			goto out;
		/* Compare-and-swap: only the row as it was read is deleted. */
		if ((r = ky_store_key_delete(kms->store, row->id, row->rev)) != 0)
			goto out;
	} else if (due == KY_KMS_DUE_ROTATE) {
		if ((r = ky_key_apply(k, &a, now)) != 0)
			goto out;
		if ((r = ky_kms_record_seal(kms, k, &w)) != 0)
			goto out;
		w.rev = row->rev; /* compare-and-swap on the row as it was read */
		if ((r = ky_store_key_update(kms->store, &w)) != 0)
			goto out;
		k->seq = w.seq;
		k->rev = w.rev;
		memcpy(k->vp, w.vp, KY_VP_LEN);
	}
	*done = due;
	if (out != NULL) {
		*out = k;
		k = NULL; /* transferred */
	}
	r = 0;
out:
	ky_store_row_release(&w);
	ky_key_free(k);
	return r;
}

#define KMS_SCHED_PAGE 500

int ky_kms_schedule_pass(const struct ky_kms *kms, int64_t now, ky_kms_sched_gate_fn gate,
                         ky_kms_sched_fn fn, void *arg, struct ky_kms_sched *st)
{
	struct ky_store_filter f = {.states = (1u << KY_KEY_ACTIVE) | (1u << KY_KEY_DESTROYED),
	                            .extractable = -1};
	struct ky_store_row *rows = NULL;
	size_t nrows = 0;
	int r = KY_ERR_INTERNAL;

	memset(st, 0, sizeof(*st));
	f.now = now;
	f.vp_a = kms->current ? kms->current->vp : (kms->next ? kms->next->vp : NULL);
	f.vp_b = kms->next ? kms->next->vp : NULL;
	if (f.vp_a == NULL)
		return KY_ERR_MK_MISMATCH;
	/* Page after page in seq order, each resuming after the last row of the one before. */
	for (;;) {
		if ((r = ky_store_key_list(kms->store, &f, KMS_SCHED_PAGE, 0, &rows, &nrows)) != 0)
			goto out;
		for (size_t i = 0; i < nrows; i++) {
			struct ky_key *k = NULL, *after = NULL;
			enum ky_kms_due done = KY_KMS_DUE_NONE, due;
			int e = rows[i].fault;

			st->keys++;
			if (e == 0)
				e = ky_kms_record_open(kms, &rows[i], KY_KMS_METADATA_ONLY, &k);
			due = e == 0 ? ky_kms_due(k, now) : KY_KMS_DUE_NONE;
			if (e == 0 && due != KY_KMS_DUE_NONE && gate != NULL &&
			    (r = gate(rows[i].id, k, due, arg)) != 0) {
				ky_key_free(k);
				goto out; /* nothing done to this key or any after it */
			}
			if (e == 0 && due != KY_KMS_DUE_NONE)
				e = ky_kms_due_apply(kms, &rows[i], now, &done, &after);
			if (e == KY_ERR_CONFLICT || e == KY_ERR_NOT_FOUND) {
				st->raced++; /* another writer came first */
			} else if (e != 0) {
				st->failed++;
			} else if (done == KY_KMS_DUE_ROTATE) {
				st->rotated++;
			} else if (done == KY_KMS_DUE_PURGE) {
				st->purged++;
			}
			if (fn != NULL && (e != 0 || done != KY_KMS_DUE_NONE))
				fn(rows[i].id, k, after, done != KY_KMS_DUE_NONE ? done : due, e,
				   arg);
			ky_key_free(k);
			ky_key_free(after);
		}
		if (nrows > 0)
			f.after_seq = rows[nrows - 1].seq;
		ky_store_rows_free(rows, nrows);
		rows = NULL;
		if (nrows < KMS_SCHED_PAGE)
			break;
		nrows = 0;
	}
	r = 0;
out:
	ky_store_rows_free(rows, nrows);
	return r;
}
