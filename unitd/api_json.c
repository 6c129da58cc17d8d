/* Key Protect v2 bodies: small pure parsers for what clients send, builders for what they get.
 * Size: one parser and one builder per documented body, all of the same shape; they stay
 * together so that the strictness rules below apply to every one of them.
 * Nothing here does I/O or touches key storage; every parser has negative tests.
 *
 * Parsers take only the members Key Protect documents for the request: any other member, at
 * any depth, is KY_ERR_BODY_MEMBER naming its path (e.g. 'resources[0].rotation.color'), and
 * documented members kyok does not implement are KY_ERR_UNSUPPORTED naming them. Members they
 * take are checked strictly: a wrong type, bad base64 or an out-of-range value is
 * KY_ERR_MALFORMED with a sentence in detail.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/api.h"

void kp_detail(char *d, size_t n, const char *fmt, ...)
{
	va_list ap;

	if (d == NULL || n == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(d, n, fmt, ap);
	va_end(ap);
}

/* ---- dates, ids ---- */

void kp_date(int64_t t, char out[KP_DATE_LEN + 1])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, KP_DATE_LEN + 1, "%Y-%m-%dT%H:%M:%SZ", &tm) != KP_DATE_LEN)
		snprintf(out, KP_DATE_LEN + 1, "1970-01-01T00:00:00Z");
}

static int kp_digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int kp_date_parse(const char *s, int64_t *out)
{
	int y, mo, d, h, mi, sec, oh = 0, om = 0;
	struct tm tm;
	const char *p;
	int64_t t;

	if (s == NULL || strlen(s) < 20 || kp_digits(s, 4, &y) || s[4] != '-' ||
	    kp_digits(s + 5, 2, &mo) || s[7] != '-' || kp_digits(s + 8, 2, &d) ||
	    (s[10] != 'T' && s[10] != 't') || kp_digits(s + 11, 2, &h) || s[13] != ':' ||
	    kp_digits(s + 14, 2, &mi) || s[16] != ':' || kp_digits(s + 17, 2, &sec))
		return KY_ERR_MALFORMED;
	if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    sec > 60)
		return KY_ERR_MALFORMED;
	p = s + 19;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return KY_ERR_MALFORMED;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		if (kp_digits(p + 1, 2, &oh) || p[3] != ':' || kp_digits(p + 4, 2, &om) ||
		    oh > 23 || om > 59)
			return KY_ERR_MALFORMED;
		if (*p == '-') {
			oh = -oh;
			om = -om;
		}
		p += 6;
	} else {
		return KY_ERR_MALFORMED;
	}
	if (*p != '\0')
		return KY_ERR_MALFORMED;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec > 59 ? 59 : sec;
	t = (int64_t)timegm(&tm);
	/* timegm normalises Feb 31 into March: refuse dates that do not exist. */
	if (tm.tm_mday != d || tm.tm_mon != mo - 1)
		return KY_ERR_MALFORMED;
	*out = t - (int64_t)oh * 3600 - (int64_t)om * 60;
	return 0;
}

/* ---- query values ---- */

int kp_query_uint(const char *v, uint64_t max, bool *present, uint64_t *out)
{
	uint64_t n = 0;

	*present = false;
	if (v == NULL || v[0] == '\0')
		return 0;
	if (strlen(v) > 19)
		return KY_ERR_MALFORMED;
	for (const char *c = v; *c; c++) {
		if (*c < '0' || *c > '9')
			return KY_ERR_MALFORMED;
		n = n * 10 + (uint64_t)(*c - '0');
	}
	if (n > max)
		return KY_ERR_MALFORMED;
	*present = true;
	*out = n;
	return 0;
}

int kp_query_bool(const char *v, bool *present, bool *out)
{
	*present = false;
	if (v == NULL || v[0] == '\0')
		return 0;
	if (strcmp(v, "true") == 0)
		*out = true;
	else if (strcmp(v, "false") == 0)
		*out = false;
	else
		return KY_ERR_MALFORMED;
	*present = true;
	return 0;
}

int kp_query_states(const char *v, bool *present, unsigned *mask)
{
	unsigned m = 0;
	const char *p = v;

	*present = false;
	if (v == NULL || v[0] == '\0')
		return 0;
	for (;;) {
		if (*p < '0' || *p > '5' || p[1] == ' ')
			return KY_ERR_MALFORMED;
		if (p[1] != ',' && p[1] != '\0')
			return KY_ERR_MALFORMED;
		m |= 1u << (*p - '0');
		if (p[1] == '\0')
			break;
		p += 2;
	}
	*present = true;
	*mask = m;
	return 0;
}

enum kp_prefer kp_prefer_parse(const char *v)
{
	if (v == NULL)
		return KP_PREFER_NONE;
	while (*v == ' ')
		v++;
	if (strncmp(v, "return=representation", 21) == 0 &&
	    (v[21] == '\0' || v[21] == ' ' || v[21] == ';' || v[21] == ','))
		return KP_PREFER_REPRESENTATION;
	if (strncmp(v, "return=minimal", 14) == 0 &&
	    (v[14] == '\0' || v[14] == ' ' || v[14] == ';' || v[14] == ','))
		return KP_PREFER_MINIMAL;
	return KP_PREFER_NONE;
}

/* ---- parsing helpers ---- */

/* Parses body as a JSON object (an empty body is {} when empty_ok). */
static int kp_load(const uint8_t *body, size_t n, bool empty_ok, json_t **out, char *detail,
                   size_t detaillen)
{
	json_error_t e;
	json_t *j;

	*out = NULL;
	if (n == 0 && empty_ok) {
		*out = json_object();
		return *out ? 0 : KY_ERR_NOMEM;
	}
	if (n > KP_BODY_MAX) {
		kp_detail(detail, detaillen, "the body is over %d bytes", KP_BODY_MAX);
		return KY_ERR_TOO_LARGE;
	}
	if ((j = json_loadb((const char *)body, n, JSON_REJECT_DUPLICATES, &e)) == NULL) {
		kp_detail(detail, detaillen, "the body is not valid JSON: %s (line %d)", e.text,
		          e.line);
		return KY_ERR_MALFORMED;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		kp_detail(detail, detaillen, "the body must be a JSON object");
		return KY_ERR_MALFORMED;
	}
	*out = j;
	return 0;
}

/* The single object of "resources" (a collection of one). */
static int kp_one_resource(json_t *j, json_t **res, char *detail, size_t detaillen)
{
	json_t *r = json_object_get(j, "resources");

	if (!json_is_array(r) || json_array_size(r) != 1 || !json_is_object(json_array_get(r, 0))) {
		kp_detail(detail, detaillen, "member 'resources' must be an array of one object");
		return KY_ERR_MALFORMED;
	}
	*res = json_array_get(r, 0);
	return 0;
}

/* Optional string member: *s NULL when absent. No NUL inside, at most max bytes. */
static int kp_opt_str(json_t *o, const char *k, size_t max, const char **s, char *detail,
                      size_t detaillen)
{
	json_t *v = json_object_get(o, k);

	*s = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
	    json_string_length(v) > max) {
		kp_detail(detail, detaillen, "member '%s' must be a string of at most %zu bytes", k,
		          max);
		return KY_ERR_MALFORMED;
	}
	*s = json_string_value(v);
	return 0;
}

static int kp_opt_bool(json_t *o, const char *k, int *out, char *detail, size_t detaillen)
{
	json_t *v = json_object_get(o, k);

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_boolean(v)) {
		kp_detail(detail, detaillen, "member '%s' must be true or false", k);
		return KY_ERR_MALFORMED;
	}
	*out = json_is_true(v) ? 1 : 0;
	return 0;
}

/* Optional base64 member, decoded into out (max decoded bytes). */
static int kp_opt_b64(json_t *o, const char *k, size_t max, bool *has, struct ky_buf *out,
                      char *detail, size_t detaillen)
{
	const char *s;
	int r;

	*has = false;
	if ((r = kp_opt_str(o, k, max / 3 * 4 + 8, &s, detail, detaillen)) != 0)
		return r;
	if (s == NULL)
		return 0;
	if (ky_b64_decode(s, out) != 0) {
		kp_detail(detail, detaillen, "member '%s' must be base64", k);
		ky_buf_free(out);
		return KY_ERR_MALFORMED;
	}
	if (out->len > max) {
		kp_detail(detail, detaillen, "member '%s' is over %zu bytes", k, max);
		ky_buf_free(out);
		return KY_ERR_MALFORMED;
	}
	*has = true;
	return 0;
}

static bool kp_text_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* Every member of o is one of the space-separated names of known (an empty list: none); the
 * first that is not is refused naming its path. path is where o sits in the body ("" for the
 * body itself, "resources[0].rotation", ...). */
static int kp_members_check(json_t *o, const char *known, const char *path, const char *label,
                            char *detail, size_t detaillen)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v)
	{
		size_t n = strlen(k);
		bool found = false;
		for (const char *p = known; *p != '\0' && !found;) {
			size_t w = strcspn(p, " ");
			found = w == n && strncmp(p, k, n) == 0;
			p += w;
			p += strspn(p, " ");
		}
		if (found)
			continue;
		if (label == NULL)
			label = path[0] ? path : "the body";
		if (known[0] == '\0')
			kp_detail(detail, detaillen, "member '%s%s%.60s': %s takes no member", path,
			          path[0] ? "." : "", k, label);
		else
			kp_detail(detail, detaillen, "member '%s%s%.60s': %s takes only %s", path,
			          path[0] ? "." : "", k, label, known);
		return KY_ERR_BODY_MEMBER;
	}
	return 0;
}

static int kp_members_known(json_t *o, const char *known, const char *path, char *detail,
                            size_t detaillen)
{
	return kp_members_check(o, known, path, NULL, detail, detaillen);
}

/* The "metadata" of a collection body, required as Key Protect requires it:
 * {"collectionType": type, "collectionTotal": the number of resources}, both members. */
static int kp_metadata(json_t *j, const char *type, char *detail, size_t detaillen)
{
	json_t *m = json_object_get(j, "metadata"), *t, *n;
	size_t nres = json_array_size(json_object_get(j, "resources"));
	int r;

	if (m == NULL) {
		kp_detail(detail, detaillen,
		          "member 'metadata' is required: {\"collectionType\": \"%s\", "
		          "\"collectionTotal\": %zu}",
		          type, nres);
		return KY_ERR_MALFORMED;
	}
	if (!json_is_object(m)) {
		kp_detail(detail, detaillen, "member 'metadata' must be an object");
		return KY_ERR_MALFORMED;
	}
	if ((r = kp_members_known(m, "collectionType collectionTotal", "metadata", detail,
	                          detaillen)) != 0)
		return r;
	t = json_object_get(m, "collectionType");
	n = json_object_get(m, "collectionTotal");
	if (!json_is_string(t) || strcmp(json_string_value(t), type) != 0) {
		kp_detail(detail, detaillen, "member 'metadata.collectionType' must be %s%s", type,
		          t == NULL ? " (it is missing)" : "");
		return KY_ERR_MALFORMED;
	}
	if (!json_is_integer(n) || json_integer_value(n) != (json_int_t)nres) {
		kp_detail(detail, detaillen,
		          "member 'metadata.collectionTotal' must be the number of resources, "
		          "%zu%s",
		          nres, n == NULL ? " (it is missing)" : "");
		return KY_ERR_MALFORMED;
	}
	return 0;
}

/* ---- POST /keys ---- */

void kp_create_release(struct kp_create *c)
{
	if (c == NULL)
		return;
	ky_buf_free(&c->payload);
	kp_secure_release(&c->secure);
	memset(c, 0, sizeof(*c));
}

#define KP_CREATE_MEMBERS                                                             \
	"type name description expirationDate extractable payload encryptedNonce iv " \
	"encryptionAlgorithm aliases"

/* Member 'aliases' of a new key: an array of at most KY_KEY_ALIASES_MAX valid aliases. */
static int kp_create_aliases(json_t *res, struct kp_create *out, char *detail, size_t detaillen)
{
	json_t *v = json_object_get(res, "aliases"), *item;
	size_t i;

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v)) {
		kp_detail(detail, detaillen,
		          "member 'resources[0].aliases' must be an array of "
		          "strings");
		return KY_ERR_MALFORMED;
	}
	if (json_array_size(v) > KY_KEY_ALIASES_MAX) {
		kp_detail(detail, detaillen, "member 'resources[0].aliases' holds %zu",
		          json_array_size(v));
		return KY_ERR_KEY_ALIAS_QUOTA;
	}
	json_array_foreach(v, i, item)
	{
		const char *a = json_string_value(item);

		if (a == NULL || !ky_key_alias_valid(a)) {
			kp_detail(detail, detaillen, "member 'resources[0].aliases[%zu]'%s%.40s%s",
			          i, a ? ": '" : " is not a string", a ? a : "", a ? "'" : "");
			return KY_ERR_KEY_ALIAS_INVALID;
		}
		snprintf(out->aliases[i], sizeof(out->aliases[i]), "%s", a);
	}
	out->naliases = json_array_size(v);
	return 0;
}

int kp_parse_create(const uint8_t *body, size_t n, struct kp_create *out, char *detail,
                    size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	json_t *j = NULL, *res;
	const char *type, *name, *desc, *exp;
	size_t nl;

	memset(out, 0, sizeof(*out));
	if ((r = kp_load(body, n, false, &j, detail, detaillen)) != 0)
		goto out;
	if ((r = kp_one_resource(j, &res, detail, detaillen)) != 0)
		goto out;
	if ((r = kp_members_known(j, "metadata resources", "", detail, detaillen)) != 0)
		goto out;
	if ((r = kp_create_aliases(res, out, detail, detaillen)) != 0)
		goto out;
	if ((r = kp_members_known(res, KP_CREATE_MEMBERS, "resources[0]", detail, detaillen)) != 0)
		goto out;
	if ((r = kp_opt_str(res, "type", 128, &type, detail, detaillen)) != 0 ||
	    (r = kp_opt_str(res, "name", 1024, &name, detail, detaillen)) != 0 ||
	    (r = kp_opt_str(res, "description", 1024, &desc, detail, detaillen)) != 0 ||
	    (r = kp_opt_str(res, "expirationDate", 64, &exp, detail, detaillen)) != 0 ||
	    (r = kp_opt_bool(res, "extractable", &out->extractable, detail, detaillen)) != 0 ||
	    (r = kp_opt_b64(res, "payload", KY_KEY_PAYLOAD_MAX, &out->has_payload, &out->payload,
	                    detail, detaillen)) != 0)
		goto out;
	r = KY_ERR_MALFORMED;
	if (type != NULL && strcmp(type, KP_TYPE_KEY) != 0) {
		kp_detail(detail, detaillen, "member 'type' must be %s", KP_TYPE_KEY);
		goto out;
	}
	nl = name ? strlen(name) : 0;
	if (nl < 2 || nl > KY_KEY_NAME_MAX || !kp_text_ok(name)) {
		kp_detail(detail, detaillen,
		          "member 'name' is required: 2 to %d characters, no control characters",
		          KY_KEY_NAME_MAX);
		r = KY_ERR_KEY_NAME;
		goto out;
	}
	memcpy(out->name, name, nl + 1);
	if (desc != NULL) {
		if (strlen(desc) > KY_KEY_DESC_MAX || !kp_text_ok(desc)) {
			kp_detail(detail, detaillen,
			          "member 'description' is at most %d characters, no control "
			          "characters",
			          KY_KEY_DESC_MAX);
			r = KY_ERR_KEY_NAME;
			goto out;
		}
		memcpy(out->description, desc, strlen(desc) + 1);
	}
	if (exp != NULL && kp_date_parse(exp, &out->expires) != 0) {
		kp_detail(detail, detaillen,
		          "member 'expirationDate' must be an RFC 3339 date, e.g. "
		          "2030-01-31T00:00:00Z");
		goto out;
	}
	if (out->has_payload && out->payload.len == 0) {
		kp_detail(detail, detaillen, "member 'payload' is empty");
		goto out;
	}
	if ((r = kp_secure_parse(res, "resources[0]", out->has_payload, &out->secure, detail,
	                         detaillen)) != 0)
		goto out;
	if (out->secure.present && out->extractable) {
		kp_detail(detail, detaillen,
		          "an import token imports root keys only: send a standard key's payload "
		          "as it is (over TLS), without encryptedNonce and iv");
		r = KY_ERR_MALFORMED;
		goto out;
	}
	/* last: a body wrong in its resources is refused for them first */
	if ((r = kp_metadata(j, KP_TYPE_KEY, detail, detaillen)) != 0)
		goto out;
	r = 0;
out:
	json_decref(j);
	if (r != 0)
		kp_create_release(out);
	return r;
}

/* ---- actions ---- */

void kp_action_release(struct kp_action_body *a)
{
	if (a == NULL)
		return;
	ky_buf_free(&a->plaintext);
	ky_buf_free(&a->ciphertext);
	ky_buf_free(&a->aad);
	ky_buf_free(&a->payload);
	kp_secure_release(&a->secure);
	memset(a, 0, sizeof(*a));
}

static int kp_aad(json_t *o, struct kp_action_body *out, char *detail, size_t detaillen)
{
	json_t *v = json_object_get(o, "aad"), *item;
	size_t i;

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v) || json_array_size(v) > KP_AAD_ITEMS_MAX) {
		kp_detail(detail, detaillen, "member 'aad' must be an array of at most %d strings",
		          KP_AAD_ITEMS_MAX);
		return KY_ERR_MALFORMED;
	}
	json_array_foreach(v, i, item)
	{
		uint8_t len[4];
		size_t n;

		if (!json_is_string(item)) {
			kp_detail(detail, detaillen, "member 'aad' must be an array of strings");
			return KY_ERR_MALFORMED;
		}
		n = json_string_length(item);
		if (out->aad.len + 4 + n > KY_WRAP_AAD_MAX) {
			kp_detail(detail, detaillen, "member 'aad' is over %d bytes",
			          KY_WRAP_AAD_MAX);
			return KY_ERR_MALFORMED;
		}
		len[0] = (uint8_t)(n >> 24);
		len[1] = (uint8_t)(n >> 16);
		len[2] = (uint8_t)(n >> 8);
		len[3] = (uint8_t)n;
		if (ky_buf_append(&out->aad, len, 4) != 0 ||
		    ky_buf_append(&out->aad, json_string_value(item), n) != 0)
			return KY_ERR_NOMEM;
	}
	out->has_aad = true;
	return 0;
}

int kp_parse_action(const uint8_t *body, size_t n, const char *action, const char *takes,
                    struct kp_action_body *out, char *detail, size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	json_t *j = NULL, *o;
	const char *path = "";

	memset(out, 0, sizeof(*out));
	if ((r = kp_load(body, n, true, &j, detail, detaillen)) != 0)
		goto out;
	/* Some clients wrap the body as a collection of one. */
	o = j;
	if (json_object_get(j, "resources") != NULL &&
	    ((r = kp_one_resource(j, &o, detail, detaillen)) != 0 ||
	     (r = kp_members_known(j, "metadata resources", "", detail, detaillen)) != 0))
		goto out;
	if (o != j)
		path = "resources[0]";
	if ((r = kp_members_check(o, takes, path, action, detail, detaillen)) != 0)
		goto out;
	if ((r = kp_opt_b64(o, "plaintext", KY_WRAP_PT_MAX, &out->has_plaintext, &out->plaintext,
	                    detail, detaillen)) != 0 ||
	    (r = kp_opt_b64(o, "ciphertext", KY_WRAP_PT_MAX + KY_WRAP_OVERHEAD,
	                    &out->has_ciphertext, &out->ciphertext, detail, detaillen)) != 0 ||
	    (r = kp_opt_b64(o, "payload", KY_KEY_PAYLOAD_MAX, &out->has_payload, &out->payload,
	                    detail, detaillen)) != 0 ||
	    (r = kp_aad(o, out, detail, detaillen)) != 0 ||
	    (r = kp_secure_parse(o, path, out->has_payload, &out->secure, detail, detaillen)) != 0)
		goto out;
	if (o != j &&
	    (r = kp_metadata(j, strcmp(action, "restore") == 0 ? KP_TYPE_KEY : KP_TYPE_ACTION,
	                     detail, detaillen)) != 0)
		goto out;
	r = 0;
out:
	json_decref(j);
	if (r != 0)
		kp_action_release(out);
	return r;
}

/* ---- key policies ---- */

int kp_parse_key_policies(const uint8_t *body, size_t n, const char *only,
                          struct kp_key_policy *out, char *detail, size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	json_t *j = NULL, *res, *item;
	size_t i;

	out->rotation_months = -1;
	out->dual_auth = -1;
	if (only != NULL && strcmp(only, "rotation") != 0 && strcmp(only, "dualAuthDelete") != 0) {
		kp_detail(detail, detaillen, "policy must be rotation or dualAuthDelete");
		return KY_ERR_MALFORMED;
	}
	if ((r = kp_load(body, n, false, &j, detail, detaillen)) != 0)
		goto out;
	if ((r = kp_members_known(j, "metadata resources", "", detail, detaillen)) != 0)
		goto out;
	r = KY_ERR_MALFORMED;
	res = json_object_get(j, "resources");
	if (!json_is_array(res) || json_array_size(res) < 1 || json_array_size(res) > 2) {
		kp_detail(detail, detaillen,
		          "member 'resources' must be an array of 1 or 2 policies");
		goto out;
	}
	json_array_foreach(res, i, item)
	{
		json_t *rot = json_object_get(item, "rotation");
		json_t *dual = json_object_get(item, "dualAuthDelete");
		const char *type;
		char path[48];

		r = KY_ERR_MALFORMED;
		if (!json_is_object(item)) {
			kp_detail(detail, detaillen, "member 'resources[%zu]' must be an object",
			          i);
			goto out;
		}
		snprintf(path, sizeof(path), "resources[%zu]", i);
		if ((r = kp_members_known(item, "type rotation dualAuthDelete", path, detail,
		                          detaillen)) != 0)
			goto out;
		r = KY_ERR_MALFORMED;
		if ((rot == NULL) == (dual == NULL)) {
			kp_detail(detail, detaillen,
			          "each policy must have exactly one of 'rotation' or "
			          "'dualAuthDelete'");
			goto out;
		}
		if ((r = kp_opt_str(item, "type", 128, &type, detail, detaillen)) != 0)
			goto out;
		r = KY_ERR_MALFORMED;
		if (type != NULL && strcmp(type, KP_TYPE_POLICY) != 0) {
			kp_detail(detail, detaillen, "member 'type' must be %s", KP_TYPE_POLICY);
			goto out;
		}
		if (rot != NULL) {
			json_t *iv = json_object_get(rot, "interval_month");
			int enabled = 1;
			if (only != NULL && strcmp(only, "rotation") != 0) {
				kp_detail(detail, detaillen, "the query asks for policy %s", only);
				goto out;
			}
			if (!json_is_object(rot) || out->rotation_months != -1) {
				kp_detail(detail, detaillen,
				          "member 'rotation' must be an object, once");
				goto out;
			}
			snprintf(path, sizeof(path), "resources[%zu].rotation", i);
			if ((r = kp_members_known(rot, "enabled interval_month", path, detail,
			                          detaillen)) != 0 ||
			    (r = kp_opt_bool(rot, "enabled", &enabled, detail, detaillen)) != 0)
				goto out;
			r = KY_ERR_MALFORMED;
			if (iv == NULL && enabled) {
				kp_detail(detail, detaillen,
				          "rotation needs interval_month 1 to 12");
				goto out;
			}
			if (iv != NULL && !enabled) {
				kp_detail(
				    detail, detaillen,
				    "member 'resources[%zu].rotation.interval_month' with enabled "
				    "false: a disabled rotation policy keeps no interval, leave it "
				    "out",
				    i);
				goto out;
			}
			if (iv != NULL && (!json_is_integer(iv) || json_integer_value(iv) < 1 ||
			                   json_integer_value(iv) > 12)) {
				kp_detail(detail, detaillen, "interval_month must be 1 to 12");
				goto out;
			}
			out->rotation_months = enabled ? (int)json_integer_value(iv) : 0;
		} else {
			int en = -1;
			if (only != NULL && strcmp(only, "dualAuthDelete") != 0) {
				kp_detail(detail, detaillen, "the query asks for policy %s", only);
				goto out;
			}
			if (!json_is_object(dual) || out->dual_auth != -1) {
				kp_detail(detail, detaillen,
				          "member 'dualAuthDelete' must be {\"enabled\": "
				          "true|false}, once");
				goto out;
			}
			snprintf(path, sizeof(path), "resources[%zu].dualAuthDelete", i);
			if ((r = kp_members_known(dual, "enabled", path, detail, detaillen)) != 0)
				goto out;
			r = KY_ERR_MALFORMED;
			if (kp_opt_bool(dual, "enabled", &en, detail, detaillen) != 0 || en < 0) {
				kp_detail(detail, detaillen,
				          "member 'dualAuthDelete' must be {\"enabled\": "
				          "true|false}, once");
				goto out;
			}
			out->dual_auth = en;
		}
	}
	if ((r = kp_metadata(j, KP_TYPE_POLICY, detail, detaillen)) != 0)
		goto out;
	r = 0;
out:
	json_decref(j);
	return r;
}

/* ---- instance policies ---- */

void kp_instance_policies_init(struct kp_instance_policies *p)
{
	memset(p, 0, sizeof(*p));
	p->create_root = p->create_standard = p->import_root = p->import_standard = true;
	p->enforce_token = false;
}

static json_t *kp_meta_json(const struct kp_ipolicy_meta *m)
{
	return json_pack("{s:b, s:I, s:I, s:s, s:s}", "set", m->set, "created",
	                 (json_int_t)m->created, "updated", (json_int_t)m->updated, "created_by",
	                 m->created_by, "updated_by", m->updated_by);
}

/* The policies added after the first three: allowedNetwork, allowedIP, metrics. Each is a
 * member of its own that a reader of the older form leaves alone. */
static int kp_ipolicies_encode_net(const struct kp_instance_policies *p, json_t *j)
{
	json_t *ips = json_array();
	char t[KP_CIDR_TEXT_MAX + 1];

	for (size_t i = 0; ips != NULL && i < p->nranges; i++) {
		kp_cidr_format(&p->ranges[i], t, sizeof(t));
		if (json_array_append_new(ips, json_string(t)) != 0) {
			json_decref(ips);
			ips = NULL;
		}
	}
	/* ips first: json_pack takes it, whether it succeeds or not. */
	if (ips == NULL ||
	    json_object_set_new(j, "allowedIP",
	                        json_pack("{s:o, s:b, s:o}", "meta", kp_meta_json(&p->ip_meta),
	                                  "enabled", p->allowed_ip, "allowed_ip", ips)) != 0 ||
	    json_object_set_new(j, "allowedNetwork",
	                        json_pack("{s:o, s:b, s:s}", "meta", kp_meta_json(&p->net_meta),
	                                  "enabled", p->allowed_network, "allowed_network",
	                                  p->private_only ? KP_NETWORK_PRIVATE_ONLY
	                                                  : KP_NETWORK_PUBLIC_AND_PRIVATE)) != 0 ||
	    json_object_set_new(j, "metrics",
	                        json_pack("{s:o, s:b}", "meta", kp_meta_json(&p->metrics_meta),
	                                  "enabled", p->metrics)) != 0)
		return KY_ERR_NOMEM;
	return 0;
}

int kp_instance_policies_encode(const struct kp_instance_policies *p, struct ky_buf *out)
{
	json_t *j;
	int r;

	j = json_pack("{s:{s:o, s:b}, s:{s:o, s:b, s:i}, s:{s:o, s:b, s:b, s:b, s:b, s:b, s:b}}",
	              "dualAuthDelete", "meta", kp_meta_json(&p->dual_meta), "enabled",
	              p->dual_auth, "rotation", "meta", kp_meta_json(&p->rot_meta), "enabled",
	              p->rotation, "interval_month", p->rotation_months, "keyCreateImportAccess",
	              "meta", kp_meta_json(&p->kcia_meta), "enabled", p->kcia, "create_root_key",
	              p->create_root, "create_standard_key", p->create_standard, "import_root_key",
	              p->import_root, "import_standard_key", p->import_standard, "enforce_token",
	              p->enforce_token);
	if (j == NULL)
		return KY_ERR_NOMEM;
	if ((r = kp_ipolicies_encode_net(p, j)) == 0)
		r = kp_json_dump(j, out);
	json_decref(j);
	return r;
}

static int kp_meta_decode(json_t *o, struct kp_ipolicy_meta *m)
{
	json_t *v = json_object_get(o, "meta");
	const char *cb, *ub;
	int set;
	json_int_t c, u;

	if (json_unpack(v, "{s:b, s:I, s:I, s:s, s:s}", "set", &set, "created", &c, "updated", &u,
	                "created_by", &cb, "updated_by", &ub) != 0 ||
	    strlen(cb) > KP_ACTOR_MAX || strlen(ub) > KP_ACTOR_MAX)
		return KY_ERR_MALFORMED;
	m->set = set;
	m->created = c;
	m->updated = u;
	strcpy(m->created_by, cb);
	strcpy(m->updated_by, ub);
	return 0;
}

/* allowedNetwork, allowedIP, metrics: absent in what older units wrote (never set). */
static int kp_ipolicies_decode_net(json_t *j, struct kp_instance_policies *out)
{
	json_t *net = json_object_get(j, "allowedNetwork"), *ip = json_object_get(j, "allowedIP");
	json_t *met = json_object_get(j, "metrics"), *ips = NULL, *v;
	const char *nw = NULL;
	int en;
	size_t i;

	if (net != NULL) {
		if (json_unpack(net, "{s:b, s:s}", "enabled", &en, "allowed_network", &nw) != 0 ||
		    kp_meta_decode(net, &out->net_meta) != 0)
			return KY_ERR_MALFORMED;
		if (strcmp(nw, KP_NETWORK_PRIVATE_ONLY) != 0 &&
		    strcmp(nw, KP_NETWORK_PUBLIC_AND_PRIVATE) != 0)
			return KY_ERR_MALFORMED;
		out->allowed_network = en;
		out->private_only = strcmp(nw, KP_NETWORK_PRIVATE_ONLY) == 0;
	}
	if (ip != NULL) {
		if (json_unpack(ip, "{s:b, s:o}", "enabled", &en, "allowed_ip", &ips) != 0 ||
		    !json_is_array(ips) || json_array_size(ips) > KP_ALLOWED_IP_MAX ||
		    (en && json_array_size(ips) == 0) || kp_meta_decode(ip, &out->ip_meta) != 0)
			return KY_ERR_MALFORMED;
		json_array_foreach(ips, i, v)
		{
			if (kp_cidr_parse(json_string_value(v), &out->ranges[i], NULL, 0) != 0)
				return KY_ERR_MALFORMED;
		}
		out->nranges = json_array_size(ips);
		out->allowed_ip = en;
	}
	if (met != NULL) {
		if (json_unpack(met, "{s:b}", "enabled", &en) != 0 ||
		    kp_meta_decode(met, &out->metrics_meta) != 0)
			return KY_ERR_MALFORMED;
		out->metrics = en;
	}
	return 0;
}

int kp_instance_policies_decode(const uint8_t *p, size_t n, struct kp_instance_policies *out)
{
	json_t *j = NULL, *d, *rot, *k;
	int dual, re, months, kc, cr, cs, ir, is, et;
	int r = KY_ERR_MALFORMED;

	kp_instance_policies_init(out);
	if ((j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL)) == NULL)
		return KY_ERR_MALFORMED;
	d = json_object_get(j, "dualAuthDelete");
	rot = json_object_get(j, "rotation");
	k = json_object_get(j, "keyCreateImportAccess");
	if (json_unpack(d, "{s:b}", "enabled", &dual) != 0 ||
	    json_unpack(rot, "{s:b, s:i}", "enabled", &re, "interval_month", &months) != 0 ||
	    json_unpack(k, "{s:b, s:b, s:b, s:b, s:b, s:b}", "enabled", &kc, "create_root_key", &cr,
	                "create_standard_key", &cs, "import_root_key", &ir, "import_standard_key",
	                &is, "enforce_token", &et) != 0 ||
	    months < 0 || months > 12 || kp_meta_decode(d, &out->dual_meta) != 0 ||
	    kp_meta_decode(rot, &out->rot_meta) != 0 || kp_meta_decode(k, &out->kcia_meta) != 0)
		goto out;
	out->dual_auth = dual;
	out->rotation = re;
	out->rotation_months = months;
	out->kcia = kc;
	out->create_root = cr;
	out->create_standard = cs;
	out->import_root = ir;
	out->import_standard = is;
	out->enforce_token = et;
	if ((r = kp_ipolicies_decode_net(j, out)) != 0)
		goto out;
	r = 0;
out:
	json_decref(j);
	if (r != 0)
		kp_instance_policies_init(out);
	return r;
}

static void kp_meta_touch(struct kp_ipolicy_meta *m, const char *actor, int64_t now)
{
	if (!m->set) {
		m->set = true;
		m->created = now;
		snprintf(m->created_by, sizeof(m->created_by), "%s", actor);
	}
	m->updated = now;
	snprintf(m->updated_by, sizeof(m->updated_by), "%s", actor);
}

/* An attribute given as null is refused, not taken as left out: a policy stored is what its
 * PUT said, member by member. */
static int kp_attr_bool(json_t *attrs, const char *k, bool *out, char *detail, size_t detaillen)
{
	int v = *out ? 1 : 0;
	int r = KY_ERR_INTERNAL;

	if (json_is_null(json_object_get(attrs, k))) {
		kp_detail(detail, detaillen,
		          "member 'attributes.%s' is null: give true or false, or leave it out "
		          "for its default",
		          k);
		return KY_ERR_MALFORMED;
	}
	if ((r = kp_opt_bool(attrs, k, &v, detail, detaillen)) != 0)
		return r;
	*out = v;
	return 0;
}

/* One resource of type allowedNetwork, allowedIP or metrics (members already checked by
 * name) applied to np. */
static int kp_ipolicy_net_apply(const char *type, int enabled, json_t *attrs, const char *actor,
                                int64_t now, struct kp_instance_policies *np, char *detail,
                                size_t detaillen)
{
	if (strcmp(type, "metrics") == 0) {
		np->metrics = enabled;
		kp_meta_touch(&np->metrics_meta, actor, now);
		return 0;
	}
	if (strcmp(type, "allowedNetwork") == 0) {
		json_t *v = json_object_get(attrs, "allowed_network");
		const char *nw = json_string_value(v);
		if (enabled && (nw == NULL || (strcmp(nw, KP_NETWORK_PRIVATE_ONLY) != 0 &&
		                               strcmp(nw, KP_NETWORK_PUBLIC_AND_PRIVATE) != 0))) {
			kp_detail(
			    detail, detaillen,
			    "allowedNetwork needs attributes.allowed_network \"%s\" or \"%s\"",
			    KP_NETWORK_PUBLIC_AND_PRIVATE, KP_NETWORK_PRIVATE_ONLY);
			return KY_ERR_MALFORMED;
		}
		np->allowed_network = enabled;
		np->private_only = enabled && strcmp(nw, KP_NETWORK_PRIVATE_ONLY) == 0;
		kp_meta_touch(&np->net_meta, actor, now);
		return 0;
	}
	/* allowedIP */
	{
		json_t *ips = json_object_get(attrs, "allowed_ip"), *v;
		struct kp_cidr ranges[KP_ALLOWED_IP_MAX];
		size_t i;
		if (enabled && (!json_is_array(ips) || json_array_size(ips) < 1 ||
		                json_array_size(ips) > KP_ALLOWED_IP_MAX)) {
			kp_detail(detail, detaillen,
			          "allowedIP needs attributes.allowed_ip, an array of 1 to %d "
			          "address ranges (\"192.0.2.0/24\")",
			          KP_ALLOWED_IP_MAX);
			return KY_ERR_MALFORMED;
		}
		json_array_foreach(ips, i, v)
		{
			int r;
			if (!json_is_string(v)) {
				kp_detail(detail, detaillen,
				          "allowed_ip[%zu] must be a string \"address/prefix\"", i);
				return KY_ERR_MALFORMED;
			}
			if ((r = kp_cidr_parse(json_string_value(v), &ranges[i], detail,
			                       detaillen)) != 0)
				return r;
			for (size_t k = 0; k < i; k++) {
				if (memcmp(&ranges[k], &ranges[i], sizeof(ranges[i])) == 0) {
					kp_detail(detail, detaillen,
					          "allowed_ip lists '%.64s' twice",
					          json_string_value(v));
					return KY_ERR_MALFORMED;
				}
			}
		}
		np->allowed_ip = enabled;
		np->nranges = enabled ? json_array_size(ips) : 0;
		if (enabled)
			memcpy(np->ranges, ranges, np->nranges * sizeof(ranges[0]));
		kp_meta_touch(&np->ip_meta, actor, now);
		return 0;
	}
}

bool kp_instance_policy_known(const char *type)
{
	static const char *const types[] = {"dualAuthDelete", "rotation",  "keyCreateImportAccess",
	                                    "allowedNetwork", "allowedIP", "metrics"};

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(type, types[i]) == 0)
			return true;
	return false;
}

int kp_parse_instance_policies(const uint8_t *body, size_t n, const char *only, const char *actor,
                               int64_t now, struct kp_instance_policies *p, char *detail,
                               size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	json_t *j = NULL, *res, *item;
	struct kp_instance_policies np = *p;
	bool seen_dual = false, seen_rot = false, seen_kcia = false;
	bool seen_net = false, seen_ip = false, seen_metrics = false;
	size_t i;

	if ((r = kp_load(body, n, false, &j, detail, detaillen)) != 0)
		goto out;
	if ((r = kp_members_known(j, "metadata resources", "", detail, detaillen)) != 0)
		goto out;
	r = KY_ERR_MALFORMED;
	res = json_object_get(j, "resources");
	if (!json_is_array(res) || json_array_size(res) < 1 || json_array_size(res) > 6) {
		kp_detail(detail, detaillen,
		          "member 'resources' must be an array of 1 to 6 policies");
		goto out;
	}
	json_array_foreach(res, i, item)
	{
		const char *type = NULL;
		json_t *data = json_object_get(item, "policy_data"), *attrs;
		int enabled = -1;
		char path[64];
		bool *seen;

		r = KY_ERR_MALFORMED;
		if (!json_is_object(item)) {
			kp_detail(detail, detaillen, "member 'resources[%zu]' must be an object",
			          i);
			goto out;
		}
		snprintf(path, sizeof(path), "resources[%zu]", i);
		if ((r = kp_members_known(item, "policy_type policy_data", path, detail,
		                          detaillen)) != 0)
			goto out;
		r = KY_ERR_MALFORMED;
		if (kp_opt_str(item, "policy_type", 64, &type, detail, detaillen) != 0 ||
		    type == NULL) {
			kp_detail(detail, detaillen, "each policy needs a string 'policy_type'");
			goto out;
		}
		if (only != NULL && strcmp(only, type) != 0) {
			kp_detail(detail, detaillen, "the query asks for policy %.64s", only);
			goto out;
		}
		if (strcmp(type, "dualAuthDelete") == 0) {
			seen = &seen_dual;
		} else if (strcmp(type, "rotation") == 0) {
			seen = &seen_rot;
		} else if (strcmp(type, "keyCreateImportAccess") == 0) {
			seen = &seen_kcia;
		} else if (strcmp(type, "allowedNetwork") == 0) {
			seen = &seen_net;
		} else if (strcmp(type, "allowedIP") == 0) {
			seen = &seen_ip;
		} else if (strcmp(type, "metrics") == 0) {
			seen = &seen_metrics;
		} else {
			kp_detail(detail, detaillen,
			          "unknown policy_type '%.64s' (" KP_IPOLICY_TYPES ")", type);
			goto out;
		}
		if (*seen) {
			kp_detail(detail, detaillen, "policy_type '%s' is given twice", type);
			goto out;
		}
		*seen = true;
		if (!json_is_object(data)) {
			kp_detail(detail, detaillen,
			          "policy '%s' needs policy_data {\"enabled\": true|false}", type);
			goto out;
		}
		snprintf(path, sizeof(path), "resources[%zu].policy_data", i);
		if ((r = kp_members_known(data, "enabled attributes", path, detail, detaillen)) !=
		    0)
			goto out;
		r = KY_ERR_MALFORMED;
		if (kp_opt_bool(data, "enabled", &enabled, detail, detaillen) != 0 || enabled < 0) {
			kp_detail(detail, detaillen,
			          "policy '%s' needs policy_data {\"enabled\": true|false}", type);
			goto out;
		}
		attrs = json_object_get(data, "attributes");
		if (attrs != NULL && (!json_is_object(attrs) || !enabled)) {
			kp_detail(
			    detail, detaillen,
			    "policy_data.attributes must be an object, and only when enabled");
			goto out;
		}
		snprintf(path, sizeof(path), "resources[%zu].policy_data.attributes", i);
		if (attrs != NULL &&
		    (r = kp_members_known(attrs,
		                          seen == &seen_dual || seen == &seen_metrics ? ""
		                          : seen == &seen_rot ? "interval_month"
		                          : seen == &seen_net ? "allowed_network"
		                          : seen == &seen_ip
		                              ? "allowed_ip"
		                              : "create_root_key create_standard_key "
		                                "import_root_key import_standard_key "
		                                "enforce_token",
		                          path, detail, detaillen)) != 0)
			goto out;
		r = KY_ERR_MALFORMED;
		if (seen == &seen_net || seen == &seen_ip || seen == &seen_metrics) {
			if ((r = kp_ipolicy_net_apply(type, enabled, attrs, actor, now, &np, detail,
			                              detaillen)) != 0)
				goto out;
		} else if (seen == &seen_dual) {
			np.dual_auth = enabled;
			kp_meta_touch(&np.dual_meta, actor, now);
		} else if (seen == &seen_rot) {
			json_t *iv = json_object_get(attrs, "interval_month");
			if (enabled && (!json_is_integer(iv) || json_integer_value(iv) < 1 ||
			                json_integer_value(iv) > 12)) {
				kp_detail(detail, detaillen,
				          "rotation needs attributes.interval_month 1 to 12");
				goto out;
			}
			np.rotation = enabled;
			np.rotation_months = enabled ? (int)json_integer_value(iv) : 0;
			kp_meta_touch(&np.rot_meta, actor, now);
		} else {
			struct kp_instance_policies d;
			kp_instance_policies_init(&d);
			np.create_root = d.create_root;
			np.create_standard = d.create_standard;
			np.import_root = d.import_root;
			np.import_standard = d.import_standard;
			np.enforce_token = d.enforce_token;
			if (attrs != NULL &&
			    (kp_attr_bool(attrs, "create_root_key", &np.create_root, detail,
			                  detaillen) != 0 ||
			     kp_attr_bool(attrs, "create_standard_key", &np.create_standard, detail,
			                  detaillen) != 0 ||
			     kp_attr_bool(attrs, "import_root_key", &np.import_root, detail,
			                  detaillen) != 0 ||
			     kp_attr_bool(attrs, "import_standard_key", &np.import_standard, detail,
			                  detaillen) != 0 ||
			     kp_attr_bool(attrs, "enforce_token", &np.enforce_token, detail,
			                  detaillen) != 0))
				goto out;
			np.kcia = enabled;
			kp_meta_touch(&np.kcia_meta, actor, now);
		}
	}
	if ((r = kp_metadata(j, KP_TYPE_POLICY, detail, detaillen)) != 0)
		goto out;
	*p = np;
	r = 0;
out:
	json_decref(j);
	return r;
}

static json_t *kp_ipolicy_item(const char *type, const struct kp_ipolicy_meta *m, json_t *data)
{
	char c[KP_DATE_LEN + 1], u[KP_DATE_LEN + 1];

	kp_date(m->created, c);
	kp_date(m->updated, u);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "creationDate", c, "createdBy",
	                 m->created_by, "updatedBy", m->updated_by, "lastUpdated", u, "policy_type",
	                 type, "policy_data", data);
}

/* allowedNetwork, allowedIP and metrics, when ever set, appended to a. */
static int kp_ipolicies_json_net(const struct kp_instance_policies *p, const char *only, json_t *a)
{
	json_t *data, *ips;
	char t[KP_CIDR_TEXT_MAX + 1];

	if (p->net_meta.set && (only == NULL || strcmp(only, "allowedNetwork") == 0)) {
		data =
		    p->allowed_network
		        ? json_pack("{s:b, s:{s:s}}", "enabled", 1, "attributes", "allowed_network",
		                    p->private_only ? KP_NETWORK_PRIVATE_ONLY
		                                    : KP_NETWORK_PUBLIC_AND_PRIVATE)
		        : json_pack("{s:b}", "enabled", 0);
		if (json_array_append_new(
		        a, kp_ipolicy_item("allowedNetwork", &p->net_meta, data)) != 0)
			return KY_ERR_NOMEM;
	}
	if (p->ip_meta.set && (only == NULL || strcmp(only, "allowedIP") == 0)) {
		if ((ips = json_array()) == NULL)
			return KY_ERR_NOMEM;
		for (size_t i = 0; i < p->nranges; i++) {
			kp_cidr_format(&p->ranges[i], t, sizeof(t));
			if (json_array_append_new(ips, json_string(t)) != 0) {
				json_decref(ips);
				return KY_ERR_NOMEM;
			}
		}
		if (p->allowed_ip) {
			data = json_pack("{s:b, s:{s:o}}", "enabled", 1, "attributes", "allowed_ip",
			                 ips);
		} else {
			json_decref(ips);
			data = json_pack("{s:b}", "enabled", 0);
		}
		if (json_array_append_new(a, kp_ipolicy_item("allowedIP", &p->ip_meta, data)) != 0)
			return KY_ERR_NOMEM;
	}
	if (p->metrics_meta.set && (only == NULL || strcmp(only, "metrics") == 0)) {
		data = json_pack("{s:b}", "enabled", p->metrics);
		if (json_array_append_new(a, kp_ipolicy_item("metrics", &p->metrics_meta, data)) !=
		    0)
			return KY_ERR_NOMEM;
	}
	return 0;
}

json_t *kp_instance_policies_json(const struct kp_instance_policies *p, const char *only)
{
	json_t *a = json_array(), *it;

	if (a == NULL)
		return NULL;
	if (p->dual_meta.set && (only == NULL || strcmp(only, "dualAuthDelete") == 0)) {
		it = kp_ipolicy_item("dualAuthDelete", &p->dual_meta,
		                     json_pack("{s:b}", "enabled", p->dual_auth));
		if (json_array_append_new(a, it) != 0)
			goto fail;
	}
	if (p->rot_meta.set && (only == NULL || strcmp(only, "rotation") == 0)) {
		it = kp_ipolicy_item("rotation", &p->rot_meta,
		                     p->rotation
		                         ? json_pack("{s:b, s:{s:i}}", "enabled", 1, "attributes",
		                                     "interval_month", p->rotation_months)
		                         : json_pack("{s:b}", "enabled", 0));
		if (json_array_append_new(a, it) != 0)
			goto fail;
	}
	if (p->kcia_meta.set && (only == NULL || strcmp(only, "keyCreateImportAccess") == 0)) {
		it = kp_ipolicy_item(
		    "keyCreateImportAccess", &p->kcia_meta,
		    p->kcia ? json_pack("{s:b, s:{s:b, s:b, s:b, s:b, s:b}}", "enabled", 1,
		                        "attributes", "create_root_key", p->create_root,
		                        "create_standard_key", p->create_standard,
		                        "import_root_key", p->import_root, "import_standard_key",
		                        p->import_standard, "enforce_token", p->enforce_token)
		            : json_pack("{s:b}", "enabled", 0));
		if (json_array_append_new(a, it) != 0)
			goto fail;
	}
	if (kp_ipolicies_json_net(p, only, a) != 0)
		goto fail;
	return kp_collection(KP_TYPE_POLICY, a);
fail:
	json_decref(a);
	return NULL;
}

int kp_instance_policies_allow(const struct kp_instance_policies *p, int extractable,
                               enum kp_origin origin, char *detail, size_t detaillen)
{
	bool ok, imported = origin != KP_GENERATED;
	const char *what;

	if (!p->kcia)
		return 0;
	if (origin == KP_IMPORTED && p->enforce_token) {
		kp_detail(
		    detail, detaillen,
		    "the instance policy keyCreateImportAccess requires import tokens "
		    "(enforce_token): encrypt the key to the instance's import token and send "
		    "encryptedNonce and iv with it");
		return KY_ERR_FORBIDDEN;
	}
	if (extractable) {
		ok = imported ? p->import_standard : p->create_standard;
		what = imported ? "importing standard keys" : "creating standard keys";
	} else {
		ok = imported ? p->import_root : p->create_root;
		what = imported ? "importing root keys" : "creating root keys";
	}
	if (!ok) {
		kp_detail(detail, detaillen, "the instance policy keyCreateImportAccess forbids %s",
		          what);
		return KY_ERR_FORBIDDEN;
	}
	return 0;
}

/* ---- replies ---- */

json_t *kp_collection(const char *type, json_t *resources)
{
	if (resources == NULL)
		return NULL;
	return json_pack("{s:{s:s, s:I}, s:o}", "metadata", "collectionType", type,
	                 "collectionTotal", (json_int_t)json_array_size(resources), "resources",
	                 resources);
}

static int kp_set(json_t *o, const char *k, json_t *v)
{
	return json_object_set_new(o, k, v) == 0 ? 0 : KY_ERR_NOMEM;
}

static int kp_set_date(json_t *o, const char *k, int64_t t)
{
	char d[KP_DATE_LEN + 1];

	kp_date(t, d);
	return kp_set(o, k, json_string(d));
}

static void kp_crn(const char *instance, const char *id, char *out, size_t cap)
{
	snprintf(out, cap, "crn:v1:kyok:private:kms:local:a/%s:%s:key:%s", instance, instance, id);
}

json_t *kp_key_json(const struct ky_key *k, const char *instance, bool payload, int64_t now)
{
	json_t *o = json_object();
	const struct ky_key_version *v = k->nversions ? &k->versions[k->nversions - 1] : NULL;
	char crn[3 * KY_ID_MAX + KY_UUID_LEN + 64];
	int st = ky_key_state_at(k, now);
	int r = 0;

	if (o == NULL)
		return NULL;
	kp_crn(instance, k->id, crn, sizeof(crn));
	r |= kp_set(o, "type", json_string(KP_TYPE_KEY));
	r |= kp_set(o, "id", json_string(k->id));
	r |= kp_set(o, "name", json_string(k->name));
	if (k->description[0] != '\0')
		r |= kp_set(o, "description", json_string(k->description));
	r |= kp_set(o, "state", json_integer(st));
	r |= kp_set(o, "extractable", json_boolean(k->extractable));
	r |= kp_set(o, "crn", json_string(crn));
	r |= kp_set(o, "imported", json_boolean(k->imported));
	r |= kp_set_date(o, "creationDate", k->created);
	r |= kp_set(o, "createdBy", json_string(k->created_by));
	r |= kp_set(o, "algorithmType", json_string("AES"));
	if (v != NULL) {
		char bits[16];
		snprintf(bits, sizeof(bits), "%zu", v->len * 8);
		r |= kp_set(o, "algorithmBitSize", json_integer((json_int_t)(v->len * 8)));
		r |= kp_set(o, "algorithmMode", json_string(k->extractable ? "NONE" : "GCM"));
		r |= kp_set(o, "algorithmMetadata",
		            json_pack("{s:s, s:s}", "bitLength", bits, "mode",
		                      k->extractable ? "NONE" : "GCM"));
	}
	r |= kp_set_date(o, "lastUpdateDate", k->updated);
	if (k->nversions > 1 && v != NULL)
		r |= kp_set_date(o, "lastRotateDate", v->created);
	if (v != NULL) {
		char d[KP_DATE_LEN + 1];
		kp_date(v->created, d);
		r |= kp_set(o, "keyVersion",
		            json_pack("{s:s, s:s}", "id", v->id, "creationDate", d));
	}
	if (k->expires > 0)
		r |= kp_set_date(o, "expirationDate", k->expires);
	if (k->dual_auth) {
		bool set = k->deletion_set_by[0] != '\0' &&
		           now < k->deletion_set_at + KY_KMS_DUAL_AUTH_VALID;
		json_t *da = json_pack("{s:b, s:b}", "enabled", 1, "keySetForDeletion", set);
		if (da != NULL && set) {
			char d[KP_DATE_LEN + 1];
			kp_date(k->deletion_set_at + KY_KMS_DUAL_AUTH_VALID, d);
			r |= kp_set(da, "authExpiration", json_string(d));
		}
		r |= kp_set(o, "dualAuthDelete", da);
	} else {
		r |= kp_set(o, "dualAuthDelete", json_pack("{s:b}", "enabled", 0));
	}
	if (k->naliases > 0) {
		json_t *al = json_array();
		for (uint32_t i = 0; al != NULL && i < k->naliases; i++)
			r |= json_array_append_new(al, json_string(k->aliases[i].name));
		r |= kp_set(o, "aliases", al);
	}
	r |= kp_set(o, "keyRingID", json_string(k->ring[0] ? k->ring : KY_KEY_RING_DEFAULT));
	r |= kp_set(o, "deleted", json_boolean(st == KY_KEY_DESTROYED));
	if (st == KY_KEY_DESTROYED) {
		r |= kp_set_date(o, "deletionDate", k->deleted);
		r |= kp_set(o, "deletedBy", json_string(k->deleted_by));
		r |= kp_set_date(o, "restoreExpirationDate", k->deleted + KY_KMS_RESTORE_WINDOW);
		r |= kp_set(o, "restoreAllowed",
		            json_boolean(now < k->deleted + KY_KMS_RESTORE_WINDOW));
		r |= kp_set_date(o, "purgeAllowedFrom", k->deleted + KY_KMS_PURGE_DELAY);
	}
	if (payload && k->extractable && st != KY_KEY_DESTROYED && v != NULL && v->material) {
		char *b64 = NULL;
		if (ky_b64_encode(v->material, v->len, &b64) != 0) {
			r |= KY_ERR_NOMEM;
		} else {
			r |= kp_set(o, "payload", json_string(b64));
			OPENSSL_cleanse(b64, strlen(b64));
			free(b64);
		}
	}
	if (r != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *kp_versions_json(const struct ky_key *k, uint64_t offset, uint64_t limit)
{
	json_t *a = json_array();

	if (a == NULL)
		return NULL;
	/* Newest first. */
	for (uint64_t i = offset; i < k->nversions && i < offset + limit; i++) {
		const struct ky_key_version *v = &k->versions[k->nversions - 1 - i];
		char d[KP_DATE_LEN + 1];
		kp_date(v->created, d);
		if (json_array_append_new(
		        a, json_pack("{s:s, s:s}", "id", v->id, "creationDate", d)) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return kp_collection(KP_TYPE_VERSION, a);
}

json_t *kp_key_policies_json(const struct ky_key *k, const char *instance, const char *only)
{
	json_t *a = json_array(), *it;
	char crn[3 * KY_ID_MAX + KY_UUID_LEN + 64], d[KP_DATE_LEN + 1];

	if (a == NULL)
		return NULL;
	kp_crn(instance, k->id, crn, sizeof(crn));
	kp_date(k->updated, d);
	if (only == NULL || strcmp(only, "rotation") == 0) {
		it = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:b, s:i}}", "id", k->id, "crn", crn,
		               "lastUpdateDate", d, "updatedBy", k->created_by, "type",
		               KP_TYPE_POLICY, "rotation", "enabled", k->rotation_months > 0,
		               "interval_month", (int)k->rotation_months);
		if (json_array_append_new(a, it) != 0)
			goto fail;
	}
	if (only == NULL || strcmp(only, "dualAuthDelete") == 0) {
		it = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:b}}", "id", k->id, "crn", crn,
		               "lastUpdateDate", d, "updatedBy", k->created_by, "type",
		               KP_TYPE_POLICY, "dualAuthDelete", "enabled", k->dual_auth != 0);
		if (json_array_append_new(a, it) != 0)
			goto fail;
	}
	return kp_collection(KP_TYPE_POLICY, a);
fail:
	json_decref(a);
	return NULL;
}

const char *kp_status_text(unsigned status)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 409:
		return "Conflict";
	case 410:
		return "Gone";
	case 413:
		return "Payload Too Large";
	case 422:
		return "Unprocessable Entity";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	default:
		return status >= 500 ? "Internal Server Error" : "Error";
	}
}

/* Refusals whose Key Protect reason code is not their slug's: Key Protect gives one code to
 * several of kyok's refusals (moreInfo keeps kyok's slug apart). */
static const struct {
	int err;
	const char *code;
} kp_codes[] = {
    {KY_ERR_PURGE_TOO_EARLY, "REQ_TOO_EARLY_ERR"},
    {KY_ERR_SYNC_TOO_EARLY, "REQ_TOO_EARLY_ERR"},
};

json_t *kp_error_json(int err, const char *detail)
{
	char code[64], msg[768];
	const char *slug = ky_err_slug(err);
	unsigned status = (unsigned)ky_err_http(err);
	size_t i;
	json_t *reason, *res;

	for (i = 0; slug[i] != '\0' && i + 5 < sizeof(code); i++)
		code[i] =
		    slug[i] == '-'
		        ? '_'
		        : (char)(slug[i] >= 'a' && slug[i] <= 'z' ? slug[i] - 'a' + 'A' : slug[i]);
	snprintf(code + i, sizeof(code) - i, "_ERR");
	for (i = 0; i < sizeof(kp_codes) / sizeof(kp_codes[0]); i++)
		if (kp_codes[i].err == err)
			snprintf(code, sizeof(code), "%s", kp_codes[i].code);
	if (detail != NULL && detail[0] != '\0')
		snprintf(msg, sizeof(msg), "%s: %s", ky_err_message(err), detail);
	else
		snprintf(msg, sizeof(msg), "%s", ky_err_message(err));
	reason = json_pack("{s:s, s:s, s:i, s:s}", "code", code, "message", msg, "status",
	                   (int)status, "moreInfo", slug);
	res = json_pack("{s:s+++, s:[o]}", "errorMsg", kp_status_text(status), ": ",
	                ky_err_message(err), "", "reasons", reason);
	if (res == NULL)
		return NULL;
	return kp_collection(KP_TYPE_ERROR, json_pack("[o]", res));
}

static int kp_dump_cb(const char *buf, size_t size, void *data)
{
	return ky_buf_append(data, buf, size) == 0 ? 0 : -1;
}

int kp_json_dump(const json_t *j, struct ky_buf *out)
{
	if (j == NULL)
		return KY_ERR_NOMEM;
	if (json_dump_callback(j, kp_dump_cb, out, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0)
		return KY_ERR_NOMEM;
	return ky_buf_append(out, "\n", 1);
}

/* ---- key aliases ---- */

json_t *kp_alias_json(const struct ky_key *k, const char *alias)
{
	const struct ky_key_alias *a = NULL;
	char d[KP_DATE_LEN + 1];

	for (uint32_t i = 0; i < k->naliases; i++)
		if (strcmp(k->aliases[i].name, alias) == 0)
			a = &k->aliases[i];
	if (a == NULL)
		return NULL;
	kp_date(a->created, d);
	return kp_collection(KP_TYPE_ALIAS,
	                     json_pack("[{s:s, s:s, s:s, s:s}]", "keyId", k->id, "alias", a->name,
	                               "createdBy", a->created_by, "creationDate", d));
}

/* ---- key rings ---- */

int kp_parse_patch(const uint8_t *body, size_t n, char ring[KY_KEY_RING_MAX + 1], char *detail,
                   size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	json_t *j = NULL, *o;
	const char *path = "", *id = NULL;

	ring[0] = '\0';
	if ((r = kp_load(body, n, false, &j, detail, detaillen)) != 0)
		goto out;
	o = j;
	if (json_object_get(j, "resources") != NULL &&
	    ((r = kp_one_resource(j, &o, detail, detaillen)) != 0 ||
	     (r = kp_members_known(j, "metadata resources", "", detail, detaillen)) != 0))
		goto out;
	if (o != j)
		path = "resources[0]";
	if ((r = kp_members_known(o, "keyRingID", path, detail, detaillen)) != 0 ||
	    (r = kp_opt_str(o, "keyRingID", KY_KEY_RING_MAX + 1, &id, detail, detaillen)) != 0)
		goto out;
	if (id == NULL) {
		kp_detail(detail, detaillen,
		          "member 'keyRingID' is required: the key ring to move "
		          "the key to");
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if (!ky_key_ring_valid(id)) {
		kp_detail(detail, detaillen, "member 'keyRingID': '%.40s'", id);
		r = KY_ERR_KEY_RING_INVALID;
		goto out;
	}
	if (o != j && (r = kp_metadata(j, KP_TYPE_KEY, detail, detaillen)) != 0)
		goto out;
	snprintf(ring, KY_KEY_RING_MAX + 1, "%s", id);
	r = 0;
out:
	json_decref(j);
	return r;
}

static json_t *kp_ring_json(const struct ky_key_ring *g)
{
	json_t *o = json_pack("{s:s}", "id", g->id);

	if (o != NULL && g->created > 0 &&
	    (kp_set_date(o, "creationDate", g->created) != 0 ||
	     kp_set(o, "createdBy", json_string(g->created_by)) != 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *kp_rings_json(const struct ky_key_rings *l, uint64_t offset, uint64_t limit, bool total)
{
	static const struct ky_key_ring def = {.id = KY_KEY_RING_DEFAULT};
	json_t *a = json_array(), *c;
	size_t all = l->n + 1;

	if (a == NULL)
		return NULL;
	for (size_t i = 0; i < all; i++) {
		if (i < offset || i - offset >= limit)
			continue;
		if (json_array_append_new(a, kp_ring_json(i == 0 ? &def : &l->rings[i - 1])) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	c = kp_collection(KP_TYPE_RING, a);
	if (c != NULL && total &&
	    json_object_set_new(json_object_get(c, "metadata"), "totalCount",
	                        json_integer((json_int_t)all)) != 0) {
		json_decref(c);
		return NULL;
	}
	return c;
}
