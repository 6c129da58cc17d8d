/* The listing options of GET /api/v2/keys that Key Protect documents beyond limit, offset,
 * state and extractable: filter, sort and search. Pure: parsers and matchers over lib/kms key
 * objects; api.c applies them to the keys a unit lists.
 *
 *   filter  space-separated terms <property>=<value> or <property>=<op>:<value>, all of
 *           which must hold. Dates (creationDate, deletionDate, expirationDate,
 *           lastRotateDate, lastUpdateDate) take an RFC 3339 date in double quotes, with op
 *           lt, lte, gt or gte (none: the same second), or the word none (the key has no
 *           such date); extractable takes true or false; state a list like 1,2,5. At most 3
 *           terms per property.
 *   sort    comma-separated properties, each optionally prefixed with '-' (descending):
 *           id, state, extractable, imported, creationDate, lastUpdateDate, lastRotateDate,
 *           deletionDate, expirationDate. Ties keep creation order.
 *   search  [not:][exact:][name:|alias:][escape:]<text>: keys whose name or an alias contains
 *           text (any case), or with exact: whose name, id or an alias equals it; name: and
 *           alias: search names or aliases only; not: keeps the keys that do not match.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "kyok/err.h"
#include "unitd/api.h"

#define KP_FILTER_PER_PROP 3

static const char *const kp_date_props[KP_DATE__COUNT] = {
    [KP_DATE_CREATION] = "creationDate",      [KP_DATE_DELETION] = "deletionDate",
    [KP_DATE_EXPIRATION] = "expirationDate",  [KP_DATE_LAST_ROTATE] = "lastRotateDate",
    [KP_DATE_LAST_UPDATE] = "lastUpdateDate",
};

static const char *const kp_sort_props[KP_SORT__COUNT] = {
    [KP_SORT_ID] = "id",
    [KP_SORT_STATE] = "state",
    [KP_SORT_EXTRACTABLE] = "extractable",
    [KP_SORT_IMPORTED] = "imported",
    [KP_SORT_CREATION] = "creationDate",
    [KP_SORT_LAST_UPDATE] = "lastUpdateDate",
    [KP_SORT_LAST_ROTATE] = "lastRotateDate",
    [KP_SORT_DELETION] = "deletionDate",
    [KP_SORT_EXPIRATION] = "expirationDate",
};

/* The date d of k, 0 when k has none. */
static int64_t kp_key_date(const struct ky_key *k, enum kp_date_prop d)
{
	switch (d) {
	case KP_DATE_CREATION:
		return k->created;
	case KP_DATE_DELETION:
		return k->deleted;
	case KP_DATE_EXPIRATION:
		return k->expires;
	case KP_DATE_LAST_ROTATE:
		return k->nversions > 1 ? k->versions[k->nversions - 1].created : 0;
	case KP_DATE_LAST_UPDATE:
		return k->updated;
	case KP_DATE__COUNT:
		break;
	}
	return 0;
}

/* ---- filter ---- */

static int kp_filter_date(const char *prop, const char *v, size_t n, struct kp_date_term *t,
                          char *detail, size_t detaillen)
{
	static const struct {
		const char *name;
		enum kp_date_op op;
	} ops[] = {{"lte:", KP_OP_LTE}, {"lt:", KP_OP_LT}, {"gte:", KP_OP_GTE}, {"gt:", KP_OP_GT}};
	char date[40];

	t->op = KP_OP_EQ;
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (n > strlen(ops[i].name) && strncmp(v, ops[i].name, strlen(ops[i].name)) == 0) {
			t->op = ops[i].op;
			v += strlen(ops[i].name);
			n -= strlen(ops[i].name);
			break;
		}
	if (t->op == KP_OP_EQ && n == 4 && strncasecmp(v, "none", 4) == 0) {
		t->op = KP_OP_NONE;
		return 0;
	}
	if (n < 3 || n - 2 >= sizeof(date) || v[0] != '"' || v[n - 1] != '"')
		goto bad;
	memcpy(date, v + 1, n - 2);
	date[n - 2] = '\0';
	if (kp_date_parse(date, &t->t) != 0)
		goto bad;
	return 0;
bad:
	snprintf(detail, detaillen,
	         "query filter: %s takes a date in double quotes (e.g. \"2030-01-31T00:00:00Z\"), "
	         "optionally after lt:, lte:, gt: or gte:, or none",
	         prop);
	return KY_ERR_MALFORMED;
}

int kp_filter_parse(const char *s, struct kp_filter *f, char *detail, size_t detaillen)
{
	memset(f, 0, sizeof(*f));
	f->extractable = -1;
	while (s != NULL && *s != '\0') {
		const char *end, *eq;
		size_t n, pl;
		bool inq = false;
		int d;

		if (*s == ' ') {
			s++;
			continue;
		}
		/* a term ends at a space outside double quotes */
		for (end = s; *end != '\0' && (inq || *end != ' '); end++)
			if (*end == '"')
				inq = !inq;
		n = (size_t)(end - s);
		if ((eq = memchr(s, '=', n)) == NULL) {
			snprintf(detail, detaillen,
			         "query filter: '%.*s' is not <property>=<value>",
			         (int)(n > 60 ? 60 : n), s);
			return KY_ERR_MALFORMED;
		}
		pl = (size_t)(eq - s);
		for (d = 0; d < KP_DATE__COUNT; d++)
			if (strlen(kp_date_props[d]) == pl && strncmp(s, kp_date_props[d], pl) == 0)
				break;
		if (d < KP_DATE__COUNT) {
			int r;
			if (f->ndates[d] >= KP_FILTER_PER_PROP) {
				snprintf(detail, detaillen, "query filter: at most %d terms on %s",
				         KP_FILTER_PER_PROP, kp_date_props[d]);
				return KY_ERR_MALFORMED;
			}
			if ((r = kp_filter_date(kp_date_props[d], eq + 1, n - pl - 1,
			                        &f->dates[d][f->ndates[d]], detail, detaillen)) !=
			    0)
				return r;
			f->ndates[d]++;
		} else if (pl == 11 && strncmp(s, "extractable", 11) == 0) {
			size_t vl = n - pl - 1;
			int want;
			if (vl == 4 && strncasecmp(eq + 1, "true", 4) == 0) {
				want = 1;
			} else if (vl == 5 && strncasecmp(eq + 1, "false", 5) == 0) {
				want = 0;
			} else {
				snprintf(detail, detaillen,
				         "query filter: extractable takes true or false");
				return KY_ERR_MALFORMED;
			}
			if (f->extractable >= 0 && f->extractable != want)
				f->none = true; /* both: nothing matches */
			f->extractable = want;
		} else if (pl == 5 && strncmp(s, "state", 5) == 0) {
			char v[32];
			size_t vl = n - pl - 1;
			bool present;
			unsigned mask;
			if (vl == 0 || vl >= sizeof(v)) {
				snprintf(detail, detaillen,
				         "query filter: state takes a list like 1,2,5");
				return KY_ERR_MALFORMED;
			}
			memcpy(v, eq + 1, vl);
			v[vl] = '\0';
			if (kp_query_states(v, &present, &mask) != 0 || !present) {
				snprintf(detail, detaillen,
				         "query filter: state takes a list like 1,2,5");
				return KY_ERR_MALFORMED;
			}
			f->states = f->states ? (f->states & mask) : mask;
			if (f->states == 0)
				f->none = true;
		} else {
			snprintf(
			    detail, detaillen,
			    "query filter: unknown property '%.*s' (creationDate, deletionDate, "
			    "expirationDate, extractable, lastRotateDate, lastUpdateDate, state)",
			    (int)(pl > 40 ? 40 : pl), s);
			return KY_ERR_MALFORMED;
		}
		f->present = true;
		s = end;
	}
	return 0;
}

static bool kp_date_term_holds(const struct kp_date_term *t, int64_t v)
{
	switch (t->op) {
	case KP_OP_NONE:
		return v == 0;
	case KP_OP_EQ:
		return v != 0 && v == t->t;
	case KP_OP_LT:
		return v != 0 && v < t->t;
	case KP_OP_LTE:
		return v != 0 && v <= t->t;
	case KP_OP_GT:
		return v != 0 && v > t->t;
	case KP_OP_GTE:
		return v != 0 && v >= t->t;
	}
	return false;
}

bool kp_filter_match(const struct kp_filter *f, const struct ky_key *k)
{
	if (f->none)
		return false;
	if (f->extractable >= 0 && k->extractable != f->extractable)
		return false;
	if (f->states != 0 && (f->states & (1u << k->state)) == 0)
		return false;
	for (int d = 0; d < KP_DATE__COUNT; d++)
		for (unsigned i = 0; i < f->ndates[d]; i++)
			if (!kp_date_term_holds(&f->dates[d][i],
			                        kp_key_date(k, (enum kp_date_prop)d)))
				return false;
	return true;
}

/* ---- sort ---- */

int kp_sort_parse(const char *s, struct kp_sort *o, char *detail, size_t detaillen)
{
	memset(o, 0, sizeof(*o));
	while (s != NULL && *s != '\0') {
		const char *end = strchr(s, ',');
		size_t n = end ? (size_t)(end - s) : strlen(s);
		bool desc = n > 0 && s[0] == '-';
		int p;

		if (desc) {
			s++;
			n--;
		}
		for (p = 0; p < KP_SORT__COUNT; p++)
			if (strlen(kp_sort_props[p]) == n && strncmp(s, kp_sort_props[p], n) == 0)
				break;
		if (p == KP_SORT__COUNT || o->n >= KP_SORT__COUNT) {
			snprintf(
			    detail, detaillen,
			    "query sort: '%.*s' is not one of id, state, extractable, imported, "
			    "creationDate, lastUpdateDate, lastRotateDate, deletionDate, "
			    "expirationDate (prefix '-' to reverse), comma-separated",
			    (int)(n > 40 ? 40 : n), s);
			return KY_ERR_MALFORMED;
		}
		o->by[o->n].prop = (enum kp_sort_prop)p;
		o->by[o->n].desc = desc;
		o->n++;
		s += n;
		if (*s == ',') {
			s++;
			if (*s == '\0') {
				snprintf(detail, detaillen, "query sort: a trailing comma");
				return KY_ERR_MALFORMED;
			}
		}
	}
	return 0;
}

static int kp_cmp_i64(int64_t a, int64_t b)
{
	return a < b ? -1 : a > b;
}

int kp_sort_cmp(const struct kp_sort *o, const struct ky_key *a, const struct ky_key *b)
{
	for (unsigned i = 0; i < o->n; i++) {
		int c = 0;
		switch (o->by[i].prop) {
		case KP_SORT_ID:
			c = strcmp(a->id, b->id);
			break;
		case KP_SORT_STATE:
			c = kp_cmp_i64(a->state, b->state);
			break;
		case KP_SORT_EXTRACTABLE:
			c = kp_cmp_i64(a->extractable, b->extractable);
			break;
		case KP_SORT_IMPORTED:
			c = kp_cmp_i64(a->imported, b->imported);
			break;
		case KP_SORT_CREATION:
			c = kp_cmp_i64(a->created, b->created);
			break;
		case KP_SORT_LAST_UPDATE:
			c = kp_cmp_i64(a->updated, b->updated);
			break;
		case KP_SORT_LAST_ROTATE:
			c = kp_cmp_i64(kp_key_date(a, KP_DATE_LAST_ROTATE),
			               kp_key_date(b, KP_DATE_LAST_ROTATE));
			break;
		case KP_SORT_DELETION:
			c = kp_cmp_i64(a->deleted, b->deleted);
			break;
		case KP_SORT_EXPIRATION:
			c = kp_cmp_i64(a->expires, b->expires);
			break;
		case KP_SORT__COUNT:
			break;
		}
		if (c != 0)
			return o->by[i].desc ? -c : c;
	}
	return kp_cmp_i64(a->seq, b->seq); /* creation order */
}

/* ---- search ---- */

int kp_search_parse(const char *s, struct kp_search *q, char *detail, size_t detaillen)
{
	memset(q, 0, sizeof(*q));
	if (s == NULL)
		return 0;
	for (;;) {
		if (strncmp(s, "not:", 4) == 0 && !q->negate) {
			q->negate = true;
			s += 4;
		} else if (strncmp(s, "exact:", 6) == 0 && !q->exact) {
			q->exact = true;
			s += 6;
		} else if (strncmp(s, "name:", 5) == 0 && q->scope == KP_SEARCH_ANY) {
			q->scope = KP_SEARCH_NAME;
			s += 5;
		} else if (strncmp(s, "alias:", 6) == 0 && q->scope == KP_SEARCH_ANY) {
			q->scope = KP_SEARCH_ALIAS;
			s += 6;
		} else if (strncmp(s, "escape:", 7) == 0) {
			s += 7;
			break;
		} else {
			break;
		}
	}
	if (strlen(s) == 0 || strlen(s) >= sizeof(q->text)) {
		snprintf(detail, detaillen,
		         "query search: give 1 to %zu characters to look for, after the options "
		         "not:, exact:, name:, alias:, escape:",
		         sizeof(q->text) - 1);
		return KY_ERR_MALFORMED;
	}
	memcpy(q->text, s, strlen(s) + 1);
	q->present = true;
	return 0;
}

/* text in s: equal (exact) or held in it, in any case. */
static bool kp_search_text(const struct kp_search *q, const char *s)
{
	size_t n = strlen(q->text), sl = strlen(s);
	bool m = false;

	if (q->exact)
		return strcmp(s, q->text) == 0;
	for (size_t i = 0; !m && i + n <= sl; i++)
		m = strncasecmp(s + i, q->text, n) == 0;
	return m;
}

bool kp_search_match(const struct kp_search *q, const struct ky_key *k)
{
	bool m = false;

	if (!q->present)
		return true;
	if (q->scope != KP_SEARCH_ALIAS)
		m = kp_search_text(q, k->name) ||
		    (q->scope == KP_SEARCH_ANY && strcasecmp(k->id, q->text) == 0);
	for (uint32_t i = 0; !m && q->scope != KP_SEARCH_NAME && i < k->naliases; i++)
		m = kp_search_text(q, k->aliases[i].name);
	return q->negate ? !m : m;
}

/* ---- the parameters of a request ---- */

int kp_query_param_check(const char *allowed, const char *label, const char *name,
                         const char *value, uint32_t *seen, char *detail, size_t detaillen)
{
	unsigned at = 0;
	size_t n = strlen(name);
	bool found = false;

	for (const char *p = allowed; *p != '\0' && !found;) {
		size_t w = strcspn(p, " ");
		if (w == n && strncmp(p, name, n) == 0) {
			found = true;
		} else {
			at++;
			p += w;
			p += strspn(p, " ");
		}
	}
	if (!found || at >= KP_QUERY_PARAMS_MAX) {
		if (allowed[0] == '\0')
			kp_detail(detail, detaillen, "'%.60s': %s takes none", name, label);
		else
			kp_detail(detail, detaillen, "'%.60s': %s takes %s", name, label, allowed);
		return KY_ERR_QUERY_PARAM;
	}
	if (*seen & (1u << at)) {
		kp_detail(detail, detaillen, "'%s' is given twice: give it once", name);
		return KY_ERR_QUERY_PARAM_REPEATED;
	}
	*seen |= 1u << at;
	if (value == NULL || value[0] == '\0') {
		kp_detail(detail, detaillen,
		          "'%s' is given without a value: give one or leave '%s' out", name, name);
		return KY_ERR_QUERY_PARAM_EMPTY;
	}
	return 0;
}
