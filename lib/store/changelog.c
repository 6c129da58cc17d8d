/* The key storage change log, read the same way by every backend (changelog.h). */
#include <stdlib.h>
#include <string.h>

#include "kyok/err.h"
#include "lib/store/changelog.h"

uint64_t ky_changelog_check(uint64_t seq, int64_t rec, const char *id, size_t idlen)
{
	uint64_t h = 14695981039346656037ull ^ seq;

	h = (h ^ (uint8_t)rec) * 1099511628211ull;
	for (size_t i = 0; id != NULL && i < idlen; i++)
		h = (h ^ (uint8_t)id[i]) * 1099511628211ull;
	return h;
}

int ky_changelog_begin(struct ky_changelog *L, const struct ky_store_change_pos *pos, uint64_t last)
{
	memset(L, 0, sizeof(*L));
	L->from = *pos;
	L->last = last;
	L->expect = pos->seq;
	L->check = pos->check;
	L->anchored = pos->seq == 0;
	if (last < pos->seq || last - pos->seq > KY_STORE_CHANGES_MAX) {
		L->broken = true;
		return 0;
	}
	if (last > pos->seq && (L->v = calloc(last - pos->seq, sizeof(*L->v))) == NULL)
		return KY_ERR_NOMEM;
	return 0;
}

bool ky_changelog_wants(const struct ky_changelog *L)
{
	return !L->broken;
}

void ky_changelog_row(struct ky_changelog *L, uint64_t seq, int64_t rec, const char *id,
                      size_t idlen)
{
	struct ky_store_change *c;

	if (L->broken)
		return;
	if (seq == L->from.seq && seq > 0) {
		L->anchored = ky_changelog_check(seq, rec, id, idlen) == L->from.check;
		return;
	}
	if (!L->anchored || seq != L->expect + 1 || seq > L->last || id == NULL ||
	    rec < KY_STORE_REC_KEY || rec > KY_STORE_REC_APIKEY || idlen > KY_STORE_CHANGE_ID_MAX ||
	    memchr(id, 0, idlen) != NULL) {
		L->broken = true;
		return;
	}
	c = &L->v[L->n++];
	c->rec = (enum ky_store_record)rec;
	memcpy(c->id, id, idlen);
	c->id[idlen] = '\0';
	L->expect = seq;
	L->check = ky_changelog_check(seq, rec, id, idlen);
}

void ky_changelog_end(struct ky_changelog *L, struct ky_store_change_pos *pos,
                      struct ky_store_change **out, size_t *n, int *all)
{
	/* the old position or changes after it are gone */
	if (!L->anchored || L->expect != L->last)
		L->broken = true;
	pos->seq = L->last;
	pos->check = L->broken ? 0 : L->check;
	*all = L->broken;
	if (L->broken) {
		ky_changelog_release(L);
		*out = NULL;
		*n = 0;
		return;
	}
	*out = L->v;
	*n = L->n;
	L->v = NULL; /* transferred */
	L->n = 0;
}

void ky_changelog_release(struct ky_changelog *L)
{
	free(L->v);
	L->v = NULL;
	L->n = 0;
}
