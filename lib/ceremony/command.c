/* Admin commands: operation names, the strict JSON parser and its encoder.
 *
 * A command is the content of a CMS SignedData:
 *   {"kyok": "admin-command-v1", "instance": "...", "unit": "...",
 *    "incarnation": "<32 hex digits>", "counter": N, "op": "<name>", ...fields of that op}
 * The parser accepts exactly the fields of the op and nothing else.
 */
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

/* ---- helpers shared with domain.c and execute.c ---- */

bool ceremony_id_valid(const char *s, size_t len, bool allow_empty)
{
	if (s == NULL || len > KY_ID_MAX || (len == 0 && !allow_empty))
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

const char *ceremony_json_str(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v))
		return NULL;
	const char *s = json_string_value(v);
	if (strlen(s) != json_string_length(v))
		return NULL;
	return s;
}

bool ceremony_json_only_keys(json_t *o, const char *const *keys)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		size_t i;
		for (i = 0; keys[i] != NULL; i++)
			if (strcmp(k, keys[i]) == 0)
				break;
		if (keys[i] == NULL)
			return false;
	}
	return true;
}

void ceremony_json_cleanse(json_t *s)
{
	if (!json_is_string(s))
		return;
	/* jansson owns this buffer and frees it without wiping: wipe it first. */
	OPENSSL_cleanse((char *)json_string_value(s), json_string_length(s));
}

int ceremony_json_dump(json_t *j, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	const size_t flags = JSON_COMPACT;
	char *tmp = NULL;
	size_t n = json_dumpb(j, NULL, 0, flags);

	if (n == 0)
		goto out;
	if ((tmp = malloc(n)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (json_dumpb(j, tmp, n, flags) != n)
		goto out;
	if ((r = ky_buf_append(out, tmp, n)) != 0)
		goto out;
	r = 0;
out:
	if (tmp != NULL) {
		OPENSSL_cleanse(tmp, n);
		free(tmp);
	}
	return r;
}

void ceremony_detail(char *detail, size_t detaillen, const char *fmt, ...)
{
	va_list ap;

	if (detail == NULL || detaillen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(detail, detaillen, fmt, ap);
	va_end(ap);
}

/* ---- names ---- */

const char *ky_op_name(enum ky_op op)
{
	switch (op) {
	case KY_OP_ADMIN_ADD:
		return "admin-add";
	case KY_OP_ADMIN_RM:
		return "admin-rm";
	case KY_OP_THRESHOLDS_SET:
		return "thresholds-set";
	case KY_OP_EXIT_IMPRINT:
		return "exit-imprint";
	case KY_OP_MK_LOAD:
		return "mk-load";
	case KY_OP_MK_COMMIT:
		return "mk-commit";
	case KY_OP_MK_SETIMM:
		return "mk-setimm";
	case KY_OP_MK_CLRNEW:
		return "mk-clrnew";
	case KY_OP_MK_CLRCUR:
		return "mk-clrcur";
	case KY_OP_ZEROIZE:
		return "zeroize";
	case KY_OP_MK_GENERATE:
		return "mk-generate";
	case KY_OP_MK_EXPORT:
		return "mk-export";
	case KY_OP_MK_IMPORT:
		return "mk-import";
	case KY_OP_MK_REENCIPHER:
		return "mk-reencipher";
	case KY_OP_APIKEY_CREATE:
		return "apikey-create";
	case KY_OP_APIKEY_REVOKE:
		return "apikey-revoke";
	case KY_OP_STORAGE_ACCEPT:
		return "storage-accept";
	}
	return "unknown";
}

int ky_op_from_name(const char *name, enum ky_op *op)
{
	if (name == NULL)
		return KY_ERR_NOT_COMMAND_OP;
	for (int i = KY_OP_ADMIN_ADD; i <= KY_OP_LAST; i++) {
		if (strcmp(name, ky_op_name((enum ky_op)i)) == 0) {
			*op = (enum ky_op)i;
			return 0;
		}
	}
	return KY_ERR_NOT_COMMAND_OP;
}

const char *ky_new_state_name(enum ky_new_state s)
{
	switch (s) {
	case KY_NEW_EMPTY:
		return "EMPTY";
	case KY_NEW_UNCOMMITTED:
		return "FULL UNCOMMITTED";
	case KY_NEW_COMMITTED:
		return "FULL COMMITTED";
	}
	return "unknown";
}

const char *ky_cur_state_name(enum ky_cur_state s)
{
	switch (s) {
	case KY_CUR_EMPTY:
		return "EMPTY";
	case KY_CUR_VALID:
		return "VALID";
	}
	return "unknown";
}

/* ---- command objects ---- */

struct ky_command *ky_command_new(void)
{
	return calloc(1, sizeof(struct ky_command));
}

void ky_command_free(struct ky_command *c)
{
	if (c == NULL)
		return;
	X509_free(c->cert);
	for (size_t i = 0; i < KY_MAX_PARTS; i++)
		ky_buf_free(&c->parts[i]);
	for (size_t i = 0; i < KY_MAX_ADMINS; i++) {
		X509_free(c->recips[i]);
		X509_free(c->recip_ids[i]);
	}
	ky_buf_free(&c->envelope);
	X509_free(c->source);
	ky_buf_free(&c->source_sig);
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

/* ---- parser ---- */

/* Fields each op carries besides the common ones. */
static const char *const *command_op_keys(enum ky_op op)
{
	static const char *const none[] = {NULL};
	static const char *const cert[] = {"cert", NULL};
	static const char *const ski[] = {"ski", NULL};
	static const char *const thresholds[] = {"signature", "revocation", NULL};
	static const char *const load[] = {"parts", "vp", NULL};
	static const char *const vp[] = {"vp", NULL};
	static const char *const recipients[] = {"recipients", "register", NULL};
	static const char *const import[] = {"envelope", "vp", "source", "signature", NULL};
	static const char *const apikey[] = {"apikey_id", "name", "role", "hash", NULL};
	static const char *const apikey_id[] = {"apikey_id", NULL};

	switch (op) {
	case KY_OP_ADMIN_ADD:
		return cert;
	case KY_OP_ADMIN_RM:
		return ski;
	case KY_OP_THRESHOLDS_SET:
		return thresholds;
	case KY_OP_MK_LOAD:
		return load;
	case KY_OP_MK_COMMIT:
	case KY_OP_MK_SETIMM:
	case KY_OP_MK_REENCIPHER:
		return vp;
	case KY_OP_MK_EXPORT:
		return recipients;
	case KY_OP_APIKEY_CREATE:
		return apikey;
	case KY_OP_APIKEY_REVOKE:
		return apikey_id;
	case KY_OP_MK_IMPORT:
		return import;
	case KY_OP_EXIT_IMPRINT:
	case KY_OP_MK_CLRNEW:
	case KY_OP_MK_CLRCUR:
	case KY_OP_ZEROIZE:
	case KY_OP_STORAGE_ACCEPT:
	case KY_OP_MK_GENERATE:
		return none;
	}
	return none;
}

static bool command_key_allowed(const char *k, enum ky_op op)
{
	static const char *const common[] = {"kyok",    "instance", "unit", "incarnation",
	                                     "counter", "op",       NULL};
	const char *const *own = command_op_keys(op);

	for (size_t i = 0; common[i] != NULL; i++)
		if (strcmp(k, common[i]) == 0)
			return true;
	for (size_t i = 0; own[i] != NULL; i++)
		if (strcmp(k, own[i]) == 0)
			return true;
	return false;
}

static int command_get_id(json_t *o, const char *key, char out[KY_ID_MAX + 1], char *detail,
                          size_t detaillen)
{
	const char *s = ceremony_json_str(o, key);

	if (s == NULL || !ceremony_id_valid(s, strlen(s), false)) {
		ceremony_detail(detail, detaillen,
		                "field '%s' must be a string of 1 to %d printable characters", key,
		                KY_ID_MAX);
		return KY_ERR_BAD_COMMAND;
	}
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

/* Hex field of exactly n bytes. *present tells whether it was there; when required it must. */
static int command_get_hex(json_t *o, const char *key, bool required, uint8_t *out, size_t n,
                           bool *present, char *detail, size_t detaillen)
{
	json_t *v = json_object_get(o, key);

	*present = false;
	if (v == NULL && !required)
		return 0;
	const char *s = ceremony_json_str(o, key);
	if (s == NULL || ky_hex_decode(s, out, n) != 0) {
		ceremony_detail(detail, detaillen, "field '%s' must be %zu hex digits", key, 2 * n);
		return KY_ERR_BAD_COMMAND;
	}
	*present = true;
	return 0;
}

/* Printable text field of 1 to outlen-1 characters. */
static int command_get_text(json_t *o, const char *key, char *out, size_t outlen, char *detail,
                            size_t detaillen)
{
	const char *s = ceremony_json_str(o, key);

	if (s == NULL || !ceremony_id_valid(s, strlen(s), false) || strlen(s) >= outlen) {
		ceremony_detail(detail, detaillen,
		                "field '%s' must be a string of 1 to %zu printable characters", key,
		                outlen - 1);
		return KY_ERR_BAD_COMMAND;
	}
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

/* The roles in their canonical order (ky_roles_canonical). */
static const char *const ky_roles[] = {"Reader", "ReaderPlus", "Writer", "Manager", "KeyPurge"};
#define KY_NROLES (sizeof(ky_roles) / sizeof(ky_roles[0]))

int ky_roles_canonical(const char *in, char out[KY_ROLE_MAX + 1], char *detail, size_t detaillen)
{
	unsigned seen = 0;
	size_t len = 0;
	const char *p = in;

	out[0] = '\0';
	if (in == NULL || in[0] == '\0') {
		ceremony_detail(detail, detaillen,
		                "no role given: name one or more of Reader, ReaderPlus, Writer, "
		                "Manager, KeyPurge, separated by commas");
		return KY_ERR_APIKEY_ROLES;
	}
	for (;;) {
		const char *e = strchr(p, ',');
		size_t n = e != NULL ? (size_t)(e - p) : strlen(p), i;

		for (i = 0; i < KY_NROLES; i++)
			if (strlen(ky_roles[i]) == n && memcmp(ky_roles[i], p, n) == 0)
				break;
		if (n == 0) {
			ceremony_detail(
			    detail, detaillen,
			    "role list '%.64s' has an empty item: separate the roles by "
			    "single commas, without blanks",
			    in);
			return KY_ERR_APIKEY_ROLES;
		}
		if (i == KY_NROLES) {
			ceremony_detail(
			    detail, detaillen,
			    "role '%.*s' is not one of Reader, ReaderPlus, Writer, Manager, "
			    "KeyPurge",
			    (int)(n < 32 ? n : 32), p);
			return KY_ERR_APIKEY_ROLES;
		}
		if (seen & (1u << i)) {
			ceremony_detail(detail, detaillen,
			                "role '%s' is given twice: name each role once",
			                ky_roles[i]);
			return KY_ERR_APIKEY_ROLES;
		}
		seen |= 1u << i;
		if (e == NULL)
			break;
		p = e + 1;
	}
	for (size_t i = 0; i < KY_NROLES; i++) {
		if (!(seen & (1u << i)))
			continue;
		/* Every role once fits: KY_ROLE_MAX is that list's length and more. */
		len += (size_t)snprintf(out + len, KY_ROLE_MAX + 1 - len, "%s%s", len ? "," : "",
		                        ky_roles[i]);
	}
	return 0;
}

bool ky_role_valid(const char *role)
{
	char canon[KY_ROLE_MAX + 1];

	return role != NULL && ky_roles_canonical(role, canon, NULL, 0) == 0 &&
	       strcmp(canon, role) == 0;
}

static int command_b64(json_t *v, const char *what, struct ky_buf *out, char *detail,
                       size_t detaillen)
{
	const char *s = json_string_value(v);

	if (!json_is_string(v) || strlen(s) != json_string_length(v) ||
	    ky_b64_decode(s, out) != 0 || out->len == 0) {
		ceremony_detail(detail, detaillen, "%s must be non-empty base64", what);
		return KY_ERR_BAD_COMMAND;
	}
	return 0;
}

static int command_cert(json_t *v, const char *what, X509 **out, char *detail, size_t detaillen)
{
	const char *s = json_string_value(v);

	if (!json_is_string(v) || strlen(s) != json_string_length(v) ||
	    ky_cert_from_pem(s, out) != 0) {
		ceremony_detail(detail, detaillen, "%s must be a PEM certificate", what);
		return KY_ERR_BAD_COMMAND;
	}
	return 0;
}

/* mk-export: each recipient is a unit's chain {"importer": PEM, "identity": PEM}; "register"
 * says which master key register leaves ("new" when absent). */
static int command_parse_recipients(json_t *o, struct ky_command *c, char *detail, size_t detaillen)
{
	static const char *const chain[] = {"importer", "identity", NULL};
	int r = KY_ERR_BAD_COMMAND;
	json_t *v = json_object_get(o, "recipients"), *reg = json_object_get(o, "register");

	if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > KY_MAX_ADMINS) {
		ceremony_detail(detail, detaillen,
		                "field 'recipients' must be an array of 1 to %d unit chains "
		                "({\"importer\": PEM, \"identity\": PEM})",
		                KY_MAX_ADMINS);
		return KY_ERR_BAD_COMMAND;
	}
	for (size_t i = 0; i < json_array_size(v); i++) {
		json_t *e = json_array_get(v, i);
		char what[48];

		if (!json_is_object(e) || json_object_size(e) != 2 ||
		    !ceremony_json_only_keys(e, chain)) {
			ceremony_detail(detail, detaillen,
			                "recipient %zu must be an object with exactly 'importer' "
			                "and 'identity' certificates",
			                i + 1);
			return KY_ERR_BAD_COMMAND;
		}
		snprintf(what, sizeof(what), "recipient %zu importer", i + 1);
		if ((r = command_cert(json_object_get(e, "importer"), what, &c->recips[i], detail,
		                      detaillen)) != 0)
			return r;
		c->nrecips = i + 1;
		snprintf(what, sizeof(what), "recipient %zu identity", i + 1);
		if ((r = command_cert(json_object_get(e, "identity"), what, &c->recip_ids[i],
		                      detail, detaillen)) != 0)
			return r;
	}
	if (reg != NULL) {
		const char *name = json_string_value(reg);
		if (name == NULL || (strcmp(name, "new") != 0 && strcmp(name, "current") != 0)) {
			ceremony_detail(detail, detaillen,
			                "field 'register' must be \"new\" or \"current\"");
			return KY_ERR_BAD_COMMAND;
		}
		c->export_current = strcmp(name, "current") == 0;
	}
	return 0;
}

static int command_parse_fields(json_t *o, struct ky_command *c, char *detail, size_t detaillen)
{
	int r = KY_ERR_BAD_COMMAND;
	bool present = false;
	json_t *v;

	switch (c->op) {
	case KY_OP_ADMIN_ADD:
		return command_cert(json_object_get(o, "cert"), "field 'cert'", &c->cert, detail,
		                    detaillen);
	case KY_OP_ADMIN_RM:
		return command_get_hex(o, "ski", true, c->ski, KY_SKI_LEN, &present, detail,
		                       detaillen);
	case KY_OP_THRESHOLDS_SET: {
		json_t *sig = json_object_get(o, "signature");
		json_t *rev = json_object_get(o, "revocation");
		if (!json_is_integer(sig) || !json_is_integer(rev)) {
			ceremony_detail(detail, detaillen,
			                "fields 'signature' and 'revocation' must be integers");
			return KY_ERR_BAD_COMMAND;
		}
		/* Integers, but far out of range: the range error, not a type error. */
		if (json_integer_value(sig) < INT_MIN || json_integer_value(sig) > INT_MAX ||
		    json_integer_value(rev) < INT_MIN || json_integer_value(rev) > INT_MAX) {
			ceremony_detail(
			    detail, detaillen,
			    "signature %" JSON_INTEGER_FORMAT ", revocation %" JSON_INTEGER_FORMAT
			    ": each must be 1 to %d",
			    json_integer_value(sig), json_integer_value(rev), KY_MAX_ADMINS);
			return KY_ERR_THRESHOLD_RANGE;
		}
		c->sig = (int)json_integer_value(sig);
		c->rev = (int)json_integer_value(rev);
		return 0;
	}
	case KY_OP_MK_LOAD:
		v = json_object_get(o, "parts");
		if (!json_is_array(v)) {
			ceremony_detail(detail, detaillen, "field 'parts' must be an array");
			return KY_ERR_BAD_COMMAND;
		}
		if (json_array_size(v) > KY_MAX_PARTS) {
			ceremony_detail(detail, detaillen,
			                "%zu key parts given; a master key has %d to %d",
			                json_array_size(v), KY_MIN_PARTS, KY_MAX_PARTS);
			return KY_ERR_KEY_PARTS;
		}
		for (size_t i = 0; i < json_array_size(v); i++) {
			char what[32];
			snprintf(what, sizeof(what), "key part %zu", i + 1);
			if ((r = command_b64(json_array_get(v, i), what, &c->parts[i], detail,
			                     detaillen)) != 0)
				return r;
			c->nparts = i + 1;
		}
		if ((r = command_get_hex(o, "vp", false, c->vp, KY_VP_LEN, &present, detail,
		                         detaillen)) != 0)
			return r;
		c->has_vp = present;
		return 0;
	case KY_OP_APIKEY_CREATE:
		if ((r = command_get_id(o, "apikey_id", c->apikey_id, detail, detaillen)) != 0 ||
		    (r = command_get_text(o, "name", c->apikey_name, sizeof(c->apikey_name), detail,
		                          detaillen)) != 0 ||
		    (r = command_get_text(o, "role", c->role, sizeof(c->role), detail,
		                          detaillen)) != 0)
			return r;
		/* The unit's check of the roles: what it stores and tags is the canonical
		 * list, the one the role table is read from. */
		{
			char canon[KY_ROLE_MAX + 1];
			if ((r = ky_roles_canonical(c->role, canon, detail, detaillen)) != 0)
				return r;
			memcpy(c->role, canon, sizeof(canon));
		}
		return command_get_hex(o, "hash", true, c->hash, sizeof(c->hash), &present, detail,
		                       detaillen);
	case KY_OP_APIKEY_REVOKE:
		return command_get_id(o, "apikey_id", c->apikey_id, detail, detaillen);
	case KY_OP_MK_COMMIT:
	case KY_OP_MK_SETIMM:
	case KY_OP_MK_REENCIPHER:
		/* Commit confirms the VP of what was loaded: there it is required, and so for
		 * re-encipherment, which names the key it moves storage to. */
		if ((r = command_get_hex(o, "vp", c->op != KY_OP_MK_SETIMM, c->vp, KY_VP_LEN,
		                         &present, detail, detaillen)) != 0)
			return r;
		c->has_vp = present;
		return 0;
	case KY_OP_MK_EXPORT:
		return command_parse_recipients(o, c, detail, detaillen);
	case KY_OP_MK_IMPORT:
		if ((r = command_b64(json_object_get(o, "envelope"), "field 'envelope'",
		                     &c->envelope, detail, detaillen)) != 0 ||
		    (r = command_cert(json_object_get(o, "source"), "field 'source'", &c->source,
		                      detail, detaillen)) != 0 ||
		    (r = command_b64(json_object_get(o, "signature"), "field 'signature'",
		                     &c->source_sig, detail, detaillen)) != 0)
			return r;
		if ((r = command_get_hex(o, "vp", true, c->vp, KY_VP_LEN, &present, detail,
		                         detaillen)) != 0)
			return r;
		c->has_vp = present;
		return 0;
	case KY_OP_EXIT_IMPRINT:
	case KY_OP_MK_CLRNEW:
	case KY_OP_MK_CLRCUR:
	case KY_OP_ZEROIZE:
	case KY_OP_STORAGE_ACCEPT:
	case KY_OP_MK_GENERATE:
		return 0;
	}
	return KY_ERR_INTERNAL;
}

int ceremony_command_parse(const uint8_t *json, size_t n, struct ky_command **out, char *detail,
                           size_t detaillen)
{
	int r = KY_ERR_INTERNAL;
	json_t *o = NULL;
	json_error_t jerr;
	struct ky_command *c = NULL;
	const char *s;
	json_t *v;
	const char *k;
	bool present = false;

	*out = NULL;
	ceremony_detail(detail, detaillen, "%s", "");
	if ((o = json_loadb((const char *)json, n, JSON_REJECT_DUPLICATES, &jerr)) == NULL ||
	    !json_is_object(o)) {
		ceremony_detail(detail, detaillen, "command is not a JSON object");
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	s = ceremony_json_str(o, "kyok");
	if (s == NULL || strcmp(s, CEREMONY_COMMAND_TAG) != 0) {
		ceremony_detail(detail, detaillen, "field 'kyok' is not \"%s\"",
		                CEREMONY_COMMAND_TAG);
		r = KY_ERR_NOT_COMMAND;
		goto out;
	}
	if ((c = ky_command_new()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((s = ceremony_json_str(o, "op")) == NULL) {
		ceremony_detail(detail, detaillen, "field 'op' must be a string");
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	if ((r = ky_op_from_name(s, &c->op)) != 0) {
		/* s is not echoed: it is attacker-chosen and may be long. */
		ceremony_detail(detail, detaillen, "unknown operation in field 'op'");
		goto out;
	}
	json_object_foreach(o, k, v)
	{
		if (!command_key_allowed(k, c->op)) {
			ceremony_detail(detail, detaillen, "field not allowed in a %s command",
			                ky_op_name(c->op));
			r = KY_ERR_BAD_COMMAND;
			goto out;
		}
	}
	if ((r = command_get_id(o, "instance", c->instance, detail, detaillen)) != 0 ||
	    (r = command_get_id(o, "unit", c->unit, detail, detaillen)) != 0 ||
	    (r = command_get_hex(o, "incarnation", true, c->incarnation, KY_INCARNATION_LEN,
	                         &present, detail, detaillen)) != 0)
		goto out;
	v = json_object_get(o, "counter");
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		ceremony_detail(detail, detaillen,
		                "field 'counter' must be a non-negative integer");
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	c->counter = (uint64_t)json_integer_value(v);
	if ((r = command_parse_fields(o, c, detail, detaillen)) != 0)
		goto out;

	*out = c;
	c = NULL; /* transferred */
	ceremony_detail(detail, detaillen, "%s", "");
	r = 0;
out:
	ky_command_free(c);
	json_decref(o);
	return r;
}

int ky_command_parse(const uint8_t *json, size_t n, struct ky_command **out)
{
	return ceremony_command_parse(json, n, out, NULL, 0);
}

/* ---- encoder ---- */

static int command_set(json_t *o, const char *key, json_t *v)
{
	/* json_object_set_new takes v even on failure. */
	if (v == NULL || json_object_set_new(o, key, v) != 0)
		return KY_ERR_NOMEM;
	return 0;
}

static int command_set_hex(json_t *o, const char *key, const uint8_t *p, size_t n)
{
	char hex[2 * KY_VP_LEN + 1];

	if (2 * n + 1 > sizeof(hex))
		return KY_ERR_INTERNAL;
	ky_hex_encode(p, n, hex);
	return command_set(o, key, json_string(hex));
}

static json_t *command_b64_json(const struct ky_buf *b)
{
	char *s = NULL;
	json_t *v = NULL;

	if (b->len == 0 || ky_b64_encode(b->data, b->len, &s) != 0)
		return NULL;
	v = json_string(s);
	free(s);
	return v;
}

static json_t *command_cert_json(X509 *cert)
{
	char *pem = NULL;
	json_t *v = NULL;

	if (cert == NULL || ky_cert_to_pem(cert, &pem) != 0)
		return NULL;
	v = json_string(pem);
	free(pem);
	return v;
}

static int command_encode_fields(const struct ky_command *c, json_t *o)
{
	int r = KY_ERR_INTERNAL;
	json_t *a = NULL;

	switch (c->op) {
	case KY_OP_ADMIN_ADD:
		if (c->cert == NULL)
			return KY_ERR_BAD_COMMAND;
		return command_set(o, "cert", command_cert_json(c->cert));
	case KY_OP_ADMIN_RM:
		return command_set_hex(o, "ski", c->ski, KY_SKI_LEN);
	case KY_OP_THRESHOLDS_SET:
		if ((r = command_set(o, "signature", json_integer(c->sig))) != 0)
			return r;
		return command_set(o, "revocation", json_integer(c->rev));
	case KY_OP_MK_LOAD:
		if (c->nparts > KY_MAX_PARTS)
			return KY_ERR_KEY_PARTS;
		if ((a = json_array()) == NULL)
			return KY_ERR_NOMEM;
		for (size_t i = 0; i < c->nparts; i++) {
			json_t *v = command_b64_json(&c->parts[i]);
			if (v == NULL || json_array_append_new(a, v) != 0) {
				json_decref(a);
				return c->parts[i].len == 0 ? KY_ERR_BAD_COMMAND : KY_ERR_NOMEM;
			}
		}
		if ((r = command_set(o, "parts", a)) != 0)
			return r;
		if (c->has_vp)
			return command_set_hex(o, "vp", c->vp, KY_VP_LEN);
		return 0;
	case KY_OP_APIKEY_CREATE:
		if (!ky_role_valid(c->role))
			return KY_ERR_BAD_COMMAND;
		if ((r = command_set(o, "apikey_id", json_string(c->apikey_id))) != 0 ||
		    (r = command_set(o, "name", json_string(c->apikey_name))) != 0 ||
		    (r = command_set(o, "role", json_string(c->role))) != 0)
			return r;
		return command_set_hex(o, "hash", c->hash, sizeof(c->hash));
	case KY_OP_APIKEY_REVOKE:
		return command_set(o, "apikey_id", json_string(c->apikey_id));
	case KY_OP_MK_COMMIT:
	case KY_OP_MK_SETIMM:
	case KY_OP_MK_REENCIPHER:
		if (c->op != KY_OP_MK_SETIMM && !c->has_vp)
			return KY_ERR_BAD_COMMAND;
		if (c->has_vp)
			return command_set_hex(o, "vp", c->vp, KY_VP_LEN);
		return 0;
	case KY_OP_MK_EXPORT:
		if (c->nrecips == 0 || c->nrecips > KY_MAX_ADMINS)
			return KY_ERR_BAD_COMMAND;
		if ((a = json_array()) == NULL)
			return KY_ERR_NOMEM;
		for (size_t i = 0; i < c->nrecips; i++) {
			json_t *v;
			if (c->recips[i] == NULL || c->recip_ids[i] == NULL) {
				json_decref(a);
				return KY_ERR_BAD_COMMAND;
			}
			v = json_pack("{s:o, s:o}", "importer", command_cert_json(c->recips[i]),
			              "identity", command_cert_json(c->recip_ids[i]));
			if (v == NULL || json_array_append_new(a, v) != 0) {
				json_decref(a);
				return KY_ERR_NOMEM;
			}
		}
		if ((r = command_set(o, "recipients", a)) != 0)
			return r;
		if (c->export_current)
			return command_set(o, "register", json_string("current"));
		return 0;
	case KY_OP_MK_IMPORT:
		if (!c->has_vp || c->envelope.len == 0 || c->source == NULL ||
		    c->source_sig.len == 0)
			return KY_ERR_BAD_COMMAND;
		if ((r = command_set(o, "envelope", command_b64_json(&c->envelope))) != 0 ||
		    (r = command_set(o, "source", command_cert_json(c->source))) != 0 ||
		    (r = command_set(o, "signature", command_b64_json(&c->source_sig))) != 0)
			return r;
		return command_set_hex(o, "vp", c->vp, KY_VP_LEN);
	case KY_OP_EXIT_IMPRINT:
	case KY_OP_MK_CLRNEW:
	case KY_OP_MK_CLRCUR:
	case KY_OP_ZEROIZE:
	case KY_OP_STORAGE_ACCEPT:
	case KY_OP_MK_GENERATE:
		return 0;
	}
	return KY_ERR_INTERNAL;
}

int ky_command_encode(const struct ky_command *c, struct ky_buf *json)
{
	int r = KY_ERR_INTERNAL;
	json_t *o = NULL;

	if (c == NULL ||
	    !ceremony_id_valid(c->instance, strnlen(c->instance, KY_ID_MAX + 1), false) ||
	    !ceremony_id_valid(c->unit, strnlen(c->unit, KY_ID_MAX + 1), false) ||
	    c->counter > (uint64_t)INT64_MAX || strcmp(ky_op_name(c->op), "unknown") == 0) {
		r = KY_ERR_BAD_COMMAND;
		goto out;
	}
	if ((o = json_object()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = command_set(o, "kyok", json_string(CEREMONY_COMMAND_TAG))) != 0 ||
	    (r = command_set(o, "instance", json_string(c->instance))) != 0 ||
	    (r = command_set(o, "unit", json_string(c->unit))) != 0 ||
	    (r = command_set_hex(o, "incarnation", c->incarnation, KY_INCARNATION_LEN)) != 0 ||
	    (r = command_set(o, "counter", json_integer((json_int_t)c->counter))) != 0 ||
	    (r = command_set(o, "op", json_string(ky_op_name(c->op)))) != 0)
		goto out;
	if ((r = command_encode_fields(c, o)) != 0)
		goto out;
	if ((r = ceremony_json_dump(o, json)) != 0)
		goto out;
	r = 0;
out:
	json_decref(o);
	return r;
}
