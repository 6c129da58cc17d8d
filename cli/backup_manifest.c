/* The backup manifest's parser: pure (text in, struct out), apart from the code that acts on
 * it (backup.c), so that its unit tests reach it. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/backup.h"
#include "kyok/err.h"

static bool bk_is_hex(const char *s, size_t n)
{
	if (s == NULL || strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int backup_manifest_parse(const char *text, size_t n, struct backup_manifest *m, char *why,
                          size_t whylen)
{
	int r = KY_ERR_MALFORMED;
	json_error_t jerr;
	json_t *j = NULL, *vps, *v, *dg;
	const char *s;
	size_t i;

	memset(m, 0, sizeof(*m));
	if ((j = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		snprintf(why, whylen, "not JSON (line %d: %s)", jerr.line, jerr.text);
		goto out;
	}
	if (!json_is_object(j)) {
		snprintf(why, whylen, "not a JSON object");
		goto out;
	}
	if ((s = json_string_value(json_object_get(j, "format"))) == NULL ||
	    strcmp(s, BACKUP_FORMAT) != 0) {
		snprintf(why, whylen, "'format' is not '%s'", BACKUP_FORMAT);
		goto out;
	}
	if ((s = json_string_value(json_object_get(j, "instance"))) == NULL || s[0] == '\0' ||
	    strlen(s) > KY_ID_MAX) {
		snprintf(why, whylen, "no valid 'instance'");
		goto out;
	}
	snprintf(m->instance, sizeof(m->instance), "%s", s);
	if ((s = json_string_value(json_object_get(j, "created"))) == NULL ||
	    strlen(s) >= sizeof(m->created)) {
		snprintf(why, whylen, "no valid 'created'");
		goto out;
	}
	snprintf(m->created, sizeof(m->created), "%s", s);
	if (!bk_is_hex(s = json_string_value(json_object_get(j, "sha256")), 64)) {
		snprintf(why, whylen, "'sha256' is not 64 lowercase hex digits");
		goto out;
	}
	snprintf(m->sha256, sizeof(m->sha256), "%s", s);
	if (!json_is_integer(json_object_get(j, "keys")) ||
	    (m->keys = json_integer_value(json_object_get(j, "keys"))) < 0) {
		snprintf(why, whylen, "no valid 'keys'");
		goto out;
	}
	vps = json_object_get(j, "master_keys");
	if (!json_is_array(vps) || json_array_size(vps) > BACKUP_MAX_VPS) {
		snprintf(why, whylen, "'master_keys' is not a list of at most %d", BACKUP_MAX_VPS);
		goto out;
	}
	json_array_foreach(vps, i, v)
	{
		json_t *parts = json_object_get(v, "part_vps"), *p;
		size_t k;
		if (!bk_is_hex(s = json_string_value(json_object_get(v, "vp")), BACKUP_VP_HEX) ||
		    !json_is_integer(json_object_get(v, "keys")) ||
		    !json_is_integer(json_object_get(v, "secrets"))) {
			snprintf(why, whylen, "master key %zu: no valid 'vp', 'keys' or 'secrets'",
			         i + 1);
			goto out;
		}
		snprintf(m->vps[i].vp, sizeof(m->vps[i].vp), "%s", s);
		m->vps[i].records = json_integer_value(json_object_get(v, "keys")) +
		                    json_integer_value(json_object_get(v, "secrets"));
		if (parts != NULL &&
		    (!json_is_array(parts) || json_array_size(parts) > KY_MAX_PARTS)) {
			snprintf(why, whylen,
			         "master key %zu: 'part_vps' is not a list of at most %d", i + 1,
			         KY_MAX_PARTS);
			goto out;
		}
		json_array_foreach(parts, k, p)
		{
			if (!bk_is_hex(s = json_string_value(p), BACKUP_VP_HEX)) {
				snprintf(why, whylen, "master key %zu: part VP %zu is not a VP",
				         i + 1, k + 1);
				goto out;
			}
			snprintf(m->vps[i].parts[k], sizeof(m->vps[i].parts[k]), "%s", s);
		}
		m->vps[i].nparts = json_array_size(parts);
	}
	m->nvps = json_array_size(vps);
	dg = json_object_get(j, "storage_digest");
	if (json_is_object(dg)) {
		if (!json_is_integer(json_object_get(dg, "generation"))) {
			snprintf(why, whylen, "'storage_digest' has no 'generation'");
			goto out;
		}
		m->has_digest = true;
		m->gen = json_integer_value(json_object_get(dg, "generation"));
	} else if (!json_is_null(dg)) {
		snprintf(why, whylen, "'storage_digest' is neither an object nor null");
		goto out;
	}
	r = 0;
out:
	json_decref(j);
	return r;
}
