/* Reading the key storage change log (ky_store_changes), the backend-independent part: every
 * backend walks the rows of its log after the caller's position through these, so that the
 * rule "the log can tell" has one home.
 *
 * The log can tell when, in one snapshot:
 *   - its last sequence number (last) is at or after the caller's (pos->seq), at most
 *     KY_STORE_CHANGES_MAX after it;
 *   - the row at pos->seq is the one the position was taken at (its fingerprint, pos->check;
 *     nothing to check at 0, the start of the log);
 *   - the rows after it follow one by one without a gap up to last, each with a known rec
 *     and an id of at most KY_STORE_CHANGE_ID_MAX bytes.
 * Anything else (pruned, gone back, another log, a gap, a row kyok never writes) is "every
 * record changed". The new position is last with the fingerprint of the row at last (0 when
 * there is none).
 *
 *   fingerprint(seq, rec, id) = FNV-1a 64 over rec (one byte) then id, seeded with the
 *                               offset basis XOR seq (a consistency check, not a MAC)
 *
 * Use: ky_changelog_begin (pos, last); while ky_changelog_wants rows, feed those from pos->seq
 * (that one included: it is checked) to last, in seq order, to ky_changelog_row;
 * ky_changelog_end; when it says *all, set pos->check to the fingerprint of the row at last
 * (0 when there is none).
 */
#ifndef KYOK_STORE_CHANGELOG_H
#define KYOK_STORE_CHANGELOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"
#include "kyok/store.h"

struct ky_changelog {
	struct ky_store_change_pos from; /* the caller's position */
	uint64_t last;                   /* the log's last sequence number */
	uint64_t expect;                 /* the last row taken */
	uint64_t check;                  /* its fingerprint */
	bool anchored;                   /* the row at from.seq was found and is the one */
	bool broken;                     /* the log cannot tell */
	struct ky_store_change *v;       /* the records changed, malloc'd */
	size_t n;
};

uint64_t ky_changelog_check(uint64_t seq, int64_t rec, const char *id, size_t idlen);
/* KY_ERR_NOMEM; on failure nothing is held. */
int ky_changelog_begin(struct ky_changelog *L, const struct ky_store_change_pos *pos,
                       uint64_t last) KY_WUR;
/* Whether rows are still wanted (false once the answer is "everything"). */
bool ky_changelog_wants(const struct ky_changelog *L);
/* One row of the log, in seq order from L->from.seq on; id is idlen bytes (NULL: none). */
void ky_changelog_row(struct ky_changelog *L, uint64_t seq, int64_t rec, const char *id,
                      size_t idlen);
/* The answer (see ky_store_changes): *out transferred; *pos = {last, the fingerprint of the
 * row at last}, but for *all = 1: then {last, 0}, for the backend to complete. */
void ky_changelog_end(struct ky_changelog *L, struct ky_store_change_pos *pos,
                      struct ky_store_change **out, size_t *n, int *all);
void ky_changelog_release(struct ky_changelog *L); /* after an error before _end */

#endif
