/* Master key parts held in PKCS#11 tokens: see cli/token_part.h. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/token_part.h"
#include "kyok/err.h"

#define TP_POINT_LEN  133 /* an uncompressed P-521 point */
#define TP_INFO_LABEL "kyok token key part 1"

static CK_BBOOL tp_yes = CK_TRUE, tp_no = CK_FALSE;
static CK_OBJECT_CLASS tp_secret = CKO_SECRET_KEY;
static CK_KEY_TYPE tp_aes = CKK_AES;
static CK_ULONG tp_aes_len = KY_MK_LEN;

static int tp_fail(char *why, size_t whylen, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int tp_fail(char *why, size_t whylen, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return err;
}

/* ---- the file ---- */

static bool tp_printable(const char *s, size_t min, size_t max)
{
	size_t n = strlen(s);

	if (n < min || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

static bool tp_lower_hex(const char *s, size_t n)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int cli_token_keypart_parse(const char *text, size_t n, struct cli_token_keypart *tp, char *why,
                            size_t whylen)
{
	static const char *const members[] = {"format",      "description",  "vp",        "module",
	                                      "token_label", "token_serial", "key_label", "key_id"};
	const size_t nm = sizeof(members) / sizeof(members[0]);
	int r = KY_ERR_NOT_KEY_PART;
	json_t *root = NULL;
	json_error_t jerr;
	const char *v[8];

	memset(tp, 0, sizeof(*tp));
	if (n == 0 || text[0] != '{') {
		why[0] = '\0'; /* not meant to be one: nothing more to say */
		r = KY_ERR_NOT_KEY_PART;
		goto out;
	}
	if ((root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr)) == NULL ||
	    !json_is_object(root)) {
		r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART, "not one JSON object: %s",
		            root == NULL ? jerr.text : "another JSON value");
		goto out;
	}
	if (json_object_size(root) != nm) {
		r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART,
		            "%zu members where a token key part file has exactly %zu",
		            json_object_size(root), nm);
		goto out;
	}
	for (size_t i = 0; i < nm; i++) {
		json_t *m = json_object_get(root, members[i]);
		if (!json_is_string(m) || strlen(json_string_value(m)) != json_string_length(m)) {
			r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART,
			            "member \"%s\" is missing or not a string", members[i]);
			goto out;
		}
		v[i] = json_string_value(m);
	}
	if (strcmp(v[0], CLI_TOKEN_PART_FORMAT) != 0) {
		r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART, "format \"%.40s\" is not \"%s\"",
		            v[0], CLI_TOKEN_PART_FORMAT);
		goto out;
	}
	if (!tp_printable(v[1], 1, CLI_TOKEN_PART_DESC_MAX)) {
		r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART,
		            "description is not 1 to %d printable ASCII characters",
		            CLI_TOKEN_PART_DESC_MAX);
		goto out;
	}
	if (!tp_lower_hex(v[2], 2 * KY_VP_LEN) || ky_hex_decode(v[2], tp->vp, KY_VP_LEN) != 0) {
		r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART, "vp is not %d lowercase hex digits",
		            2 * KY_VP_LEN);
		goto out;
	}
	if (v[3][0] != '/' || !tp_printable(v[3], 2, KY_TOKEN_MODULE_MAX)) {
		r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART,
		            "module is not an absolute path of at most %d printable characters",
		            KY_TOKEN_MODULE_MAX);
		goto out;
	}
	if (!tp_printable(v[4], 1, KY_TOKEN_LABEL_MAX) ||
	    !tp_printable(v[5], 0, KY_TOKEN_SERIAL_MAX) ||
	    !tp_printable(v[6], 1, KY_TOKEN_LABEL_MAX)) {
		r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART,
		            "token_label and key_label must be 1 to %d, token_serial 0 to %d "
		            "printable ASCII characters",
		            KY_TOKEN_LABEL_MAX, KY_TOKEN_SERIAL_MAX);
		goto out;
	}
	if (!tp_lower_hex(v[7], 2 * KY_TOKEN_ID_LEN) ||
	    ky_hex_decode(v[7], tp->where.id, KY_TOKEN_ID_LEN) != 0) {
		r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART,
		            "key_id is not %d lowercase hex digits", 2 * KY_TOKEN_ID_LEN);
		goto out;
	}
	snprintf(tp->description, sizeof(tp->description), "%s", v[1]);
	snprintf(tp->where.module, sizeof(tp->where.module), "%s", v[3]);
	snprintf(tp->where.label, sizeof(tp->where.label), "%s", v[4]);
	snprintf(tp->where.serial, sizeof(tp->where.serial), "%s", v[5]);
	snprintf(tp->key_label, sizeof(tp->key_label), "%s", v[6]);
	r = 0;
out:
	json_decref(root);
	if (r != 0)
		memset(tp, 0, sizeof(*tp));
	return r;
}

int cli_token_keypart_read(const char *path, struct cli_token_keypart *tp, char *why, size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	char buf[CLI_TOKEN_PART_FILE_MAX + 1];
	size_t n;
	FILE *f = fopen(path, "rb");

	if (f == NULL)
		return tp_fail(why, whylen, KY_ERR_IO, "cannot open: %s", strerror(errno));
	n = fread(buf, 1, sizeof(buf), f);
	if (ferror(f)) {
		r = tp_fail(why, whylen, KY_ERR_IO, "cannot read");
		goto out;
	}
	if (n > CLI_TOKEN_PART_FILE_MAX) {
		r = tp_fail(why, whylen, KY_ERR_NOT_KEY_PART, "larger than %d bytes",
		            CLI_TOKEN_PART_FILE_MAX);
		goto out;
	}
	r = cli_token_keypart_parse(buf, n, tp, why, whylen);
out:
	fclose(f);
	return r;
}

int cli_token_keypart_write(const char *path, const struct cli_token_keypart *tp)
{
	int r = KY_ERR_INTERNAL, fd = -1;
	char vp[2 * KY_VP_LEN + 1], id[2 * KY_TOKEN_ID_LEN + 1], *text = NULL;
	json_t *root = NULL;
	size_t len;

	ky_hex_encode(tp->vp, KY_VP_LEN, vp);
	ky_hex_encode(tp->where.id, KY_TOKEN_ID_LEN, id);
	root = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "format",
	                 CLI_TOKEN_PART_FORMAT, "description", tp->description, "vp", vp, "module",
	                 tp->where.module, "token_label", tp->where.label, "token_serial",
	                 tp->where.serial, "key_label", tp->key_label, "key_id", id);
	if (root == NULL ||
	    (text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	len = strlen(text);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		r = errno == EEXIST ? KY_ERR_EXISTS : KY_ERR_IO;
		goto out;
	}
	if (write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
		r = KY_ERR_IO;
		(void)unlink(path);
		goto out;
	}
	r = 0;
out:
	if (fd >= 0 && close(fd) != 0 && r == 0) {
		r = KY_ERR_IO;
		(void)unlink(path);
	}
	free(text);
	json_decref(root);
	return r;
}

/* ---- the part in the token ---- */

static int tp_mechanisms(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label,
                         const CK_MECHANISM_TYPE *mechs, const char *const *names, size_t n,
                         char *why, size_t whylen)
{
	CK_SESSION_INFO si;
	CK_MECHANISM_INFO mi;
	CK_RV rv;

	if ((rv = f->C_GetSessionInfo(s, &si)) != CKR_OK)
		return tp_fail(why, whylen, KY_ERR_TOKEN_DEVICE, "token '%s': %s", label,
		               cli_token_rv(rv));
	for (size_t i = 0; i < n; i++)
		if (f->C_GetMechanismInfo(si.slotID, mechs[i], &mi) != CKR_OK)
			return tp_fail(why, whylen, KY_ERR_TOKEN_PART_MECHANISM,
			               "token '%s' offers no %s", label, names[i]);
	return 0;
}

/* What the part object is, read from the token: an AES key of 32 bytes, sensitive, and
 * (where the token says) always sensitive and generated in the token; its value refused. */
static int tp_check(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                    const char *label, char *why, size_t whylen)
{
	CK_KEY_TYPE kt = 0;
	CK_ULONG len = 0;
	CK_BBOOL sens = CK_FALSE, asens = CK_TRUE, local = CK_TRUE;
	uint8_t value[64];
	CK_ATTRIBUTE a[] = {
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},      {CKA_VALUE_LEN, &len, sizeof(len)},
	    {CKA_SENSITIVE, &sens, sizeof(sens)}, {CKA_ALWAYS_SENSITIVE, &asens, sizeof(asens)},
	    {CKA_LOCAL, &local, sizeof(local)},
	};
	CK_ATTRIBUTE va = {CKA_VALUE, value, sizeof(value)};
	CK_RV rv = f->C_GetAttributeValue(s, obj, a, sizeof(a) / sizeof(a[0]));

	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE)
		return tp_fail(why, whylen, KY_ERR_TOKEN_DEVICE,
		               "token '%s': cannot read the key part's attributes: %s", label,
		               cli_token_rv(rv));
	if (a[0].ulValueLen != sizeof(kt) || kt != CKK_AES || a[1].ulValueLen != sizeof(len) ||
	    len != KY_MK_LEN)
		return tp_fail(why, whylen, KY_ERR_TOKEN_PART_KEY_MISSING,
		               "token '%s': the key with that id is not a 32-byte AES key", label);
	if (a[2].ulValueLen != sizeof(sens) || sens != CK_TRUE)
		return tp_fail(why, whylen, KY_ERR_TOKEN_PART_EXPOSED,
		               "token '%s': the key part is not sensitive", label);
	if (a[3].ulValueLen == sizeof(asens) && asens != CK_TRUE)
		return tp_fail(why, whylen, KY_ERR_TOKEN_PART_EXPOSED,
		               "token '%s': the key part was once not sensitive "
		               "(CKA_ALWAYS_SENSITIVE is false)",
		               label);
	if (a[4].ulValueLen == sizeof(local) && local != CK_TRUE)
		return tp_fail(why, whylen, KY_ERR_TOKEN_PART_EXPOSED,
		               "token '%s': the key part was imported, not generated in the token "
		               "(CKA_LOCAL is false)",
		               label);
	rv = f->C_GetAttributeValue(s, obj, &va, 1);
	OPENSSL_cleanse(value, sizeof(value));
	if (rv != CKR_ATTRIBUTE_SENSITIVE)
		return tp_fail(why, whylen, KY_ERR_TOKEN_PART_EXPOSED,
		               "token '%s': the token does not refuse to give the key part's value "
		               "(%s)",
		               label, cli_token_rv(rv));
	return 0;
}

/* The VP as the token computes it: SHA-256 over 0x01 || part, by C_DigestKey. */
static int tp_vp(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                 const char *label, uint8_t vp[KY_VP_LEN], char *why, size_t whylen)
{
	static const uint8_t one = 0x01;
	CK_MECHANISM sha = {CKM_SHA256, NULL, 0};
	CK_ULONG n = KY_VP_LEN;
	CK_RV rv;

	if ((rv = f->C_DigestInit(s, &sha)) != CKR_OK)
		return tp_fail(why, whylen, KY_ERR_TOKEN_PART_MECHANISM,
		               "token '%s': no SHA-256 digest: %s", label, cli_token_rv(rv));
	if ((rv = f->C_DigestUpdate(s, (CK_BYTE_PTR)&one, 1)) != CKR_OK ||
	    (rv = f->C_DigestKey(s, obj)) != CKR_OK) {
		uint8_t drop[KY_VP_LEN];
		CK_ULONG dn = sizeof(drop);
		(void)f->C_DigestFinal(s, drop, &dn); /* ends the digest operation */
		return tp_fail(why, whylen,
		               rv == CKR_KEY_INDIGESTIBLE || rv == CKR_FUNCTION_NOT_SUPPORTED
		                   ? KY_ERR_TOKEN_PART_MECHANISM
		                   : KY_ERR_TOKEN_DEVICE,
		               "token '%s': cannot digest the key part (C_DigestKey): %s", label,
		               cli_token_rv(rv));
	}
	if ((rv = f->C_DigestFinal(s, vp, &n)) != CKR_OK || n != KY_VP_LEN)
		return tp_fail(why, whylen, KY_ERR_TOKEN_DEVICE,
		               "token '%s': cannot digest the key part: %s", label,
		               cli_token_rv(rv));
	return 0;
}

int cli_token_keypart_generate(struct cli_token *t, struct cli_token_keypart *tp, char *why,
                               size_t whylen)
{
	static const CK_MECHANISM_TYPE mechs[] = {CKM_AES_KEY_GEN,          CKM_SHA256,
	                                          CKM_EC_KEY_PAIR_GEN,      CKM_ECDH1_DERIVE,
	                                          CKM_AES_ECB_ENCRYPT_DATA, CKM_AES_KEY_WRAP};
	static const char *const names[] = {
	    "AES key generation",       "SHA-256",
	    "EC key generation",        "ECDH (CKM_ECDH1_DERIVE)",
	    "CKM_AES_ECB_ENCRYPT_DATA", "AES key wrap (CKM_AES_KEY_WRAP)"};
	int r = KY_ERR_INTERNAL;
	CK_SESSION_HANDLE s;
	CK_FUNCTION_LIST_PTR f = cli_token_p11(t, &s);
	const char *label = cli_token_label(t);
	CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
	/* Extractable only so that C_WrapKey can seal it for a unit; never readable. */
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &tp_secret, sizeof(tp_secret)},
	    {CKA_KEY_TYPE, &tp_aes, sizeof(tp_aes)},
	    {CKA_VALUE_LEN, &tp_aes_len, sizeof(tp_aes_len)},
	    {CKA_TOKEN, &tp_yes, sizeof(tp_yes)},
	    {CKA_PRIVATE, &tp_yes, sizeof(tp_yes)},
	    {CKA_SENSITIVE, &tp_yes, sizeof(tp_yes)},
	    {CKA_EXTRACTABLE, &tp_yes, sizeof(tp_yes)},
	    {CKA_ENCRYPT, &tp_no, sizeof(tp_no)},
	    {CKA_DECRYPT, &tp_no, sizeof(tp_no)},
	    {CKA_WRAP, &tp_no, sizeof(tp_no)},
	    {CKA_UNWRAP, &tp_no, sizeof(tp_no)},
	    {CKA_SIGN, &tp_no, sizeof(tp_no)},
	    {CKA_VERIFY, &tp_no, sizeof(tp_no)},
	    {CKA_DERIVE, &tp_no, sizeof(tp_no)},
	    {CKA_ID, tp->where.id, KY_TOKEN_ID_LEN},
	    {CKA_LABEL, tp->key_label, strlen(tp->key_label)},
	};
	CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
	CK_RV rv;

	if ((r = tp_mechanisms(f, s, label, mechs, names, sizeof(mechs) / sizeof(mechs[0]), why,
	                       whylen)) != 0)
		goto out;
	if ((r = ky_random(tp->where.id, KY_TOKEN_ID_LEN)) != 0) {
		r = tp_fail(why, whylen, r, "no random bytes for the key's id");
		goto out;
	}
	rv = f->C_GenerateKey(s, &gen, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &obj);
	if (rv != CKR_OK) {
		obj = CK_INVALID_HANDLE;
		r = tp_fail(
		    why, whylen,
		    rv == CKR_MECHANISM_INVALID || rv == CKR_ATTRIBUTE_VALUE_INVALID ||
		            rv == CKR_TEMPLATE_INCONSISTENT || rv == CKR_ATTRIBUTE_TYPE_INVALID
		        ? KY_ERR_TOKEN_PART_MECHANISM
		        : KY_ERR_TOKEN_DEVICE,
		    "token '%s': cannot generate an AES-256 key part: %s", label, cli_token_rv(rv));
		goto out;
	}
	/* What the token made, not what was asked for, decides. */
	if ((r = tp_check(f, s, obj, label, why, whylen)) != 0)
		goto out;
	if ((r = tp_vp(f, s, obj, label, tp->vp, why, whylen)) != 0)
		goto out;
	snprintf(tp->where.serial, sizeof(tp->where.serial), "%s", cli_token_serial(t));
	r = 0;
out:
	if (r != 0 && obj != CK_INVALID_HANDLE)
		(void)f->C_DestroyObject(s, obj);
	return r;
}

/* The one secret key with the part's CKA_ID. */
static int tp_find(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const uint8_t *id,
                   const char *label, CK_OBJECT_HANDLE *obj, char *why, size_t whylen)
{
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &tp_secret, sizeof(tp_secret)},
	    {CKA_ID, (void *)id, KY_TOKEN_ID_LEN},
	};
	CK_OBJECT_HANDLE objs[2];
	CK_ULONG n = 0;
	CK_RV rv;

	if ((rv = f->C_FindObjectsInit(s, tmpl, 2)) != CKR_OK)
		return tp_fail(why, whylen, KY_ERR_TOKEN_DEVICE, "token '%s': cannot search: %s",
		               label, cli_token_rv(rv));
	rv = f->C_FindObjects(s, objs, 2, &n);
	(void)f->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return tp_fail(why, whylen, KY_ERR_TOKEN_DEVICE, "token '%s': cannot search: %s",
		               label, cli_token_rv(rv));
	if (n != 1)
		return tp_fail(why, whylen, KY_ERR_TOKEN_PART_KEY_MISSING,
		               "token '%s' has %lu secret keys with the id the file names", label,
		               (unsigned long)n);
	*obj = objs[0];
	return 0;
}

void cli_token_keypart_destroy(struct cli_token *t, const struct cli_token_keypart *tp)
{
	CK_SESSION_HANDLE s;
	CK_FUNCTION_LIST_PTR f = cli_token_p11(t, &s);
	CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
	char why[CLI_TOKEN_WHY_MAX];

	if (tp_find(f, s, tp->where.id, cli_token_label(t), &obj, why, sizeof(why)) == 0)
		(void)f->C_DestroyObject(s, obj);
}

void cli_token_set_release(struct cli_token_set *s)
{
	for (size_t i = 0; i < s->n; i++)
		cli_token_free(s->tokens[i]);
	memset(s, 0, sizeof(*s));
}

/* The open token of the set with tp's module, label and serial, opened (PIN asked) when
 * not open yet. */
static int tp_set_open(struct cli_token_set *s, const struct cli_token_keypart *tp,
                       const char *subject, struct cli_token **out)
{
	int r = KY_ERR_INTERNAL;
	char prompt[128], why[CLI_TOKEN_WHY_MAX], *pin = NULL;
	const struct ky_sigkey_token *w = &tp->where;
	struct cli_token *t = NULL;

	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->module[i], w->module) == 0 &&
		    strcmp(cli_token_label(s->tokens[i]), w->label) == 0 &&
		    strcmp(cli_token_serial(s->tokens[i]), w->serial) == 0) {
			*out = s->tokens[i];
			return 0;
		}
	if (s->n == CLI_TOKEN_PART_TOKENS) {
		r = KY_ERR_USAGE;
		cli_fail(r, subject, "more than %d tokens in one load", CLI_TOKEN_PART_TOKENS);
		return r;
	}
	snprintf(prompt, sizeof(prompt), "PIN of token '%s'", w->label);
	if ((r = cli_password(prompt, false, &pin)) != 0)
		return r;
	r = cli_token_open(w->module, w->label, w->serial[0] != '\0' ? w->serial : NULL, pin, &t,
	                   why);
	cli_secret_free(pin);
	if (r != 0) {
		cli_fail(r, subject, "%s; nothing was sent to any crypto unit", why);
		return r;
	}
	snprintf(s->module[s->n], sizeof(s->module[s->n]), "%s", w->module);
	s->tokens[s->n++] = t;
	*out = t;
	t = NULL; /* transferred */
	return 0;
}

int cli_token_keypart_take(struct cli_token_set *s, const struct cli_token_keypart *tp,
                           const char *subject, struct cli_token_part_ref *ref)
{
	int r = KY_ERR_INTERNAL;
	struct cli_token *t = NULL;
	CK_SESSION_HANDLE sess;
	CK_FUNCTION_LIST_PTR f;
	CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
	uint8_t vp[KY_VP_LEN];
	char why[CLI_TOKEN_WHY_MAX];
	char have[2 * KY_VP_LEN + 1], want[2 * KY_VP_LEN + 1];

	if ((r = tp_set_open(s, tp, subject, &t)) != 0)
		return r;
	f = cli_token_p11(t, &sess);
	if ((r = tp_find(f, sess, tp->where.id, tp->where.label, &obj, why, sizeof(why))) != 0 ||
	    (r = tp_check(f, sess, obj, tp->where.label, why, sizeof(why))) != 0 ||
	    (r = tp_vp(f, sess, obj, tp->where.label, vp, why, sizeof(why))) != 0) {
		cli_fail(r, subject, "%s; nothing was sent to any crypto unit", why);
		return r;
	}
	if (memcmp(vp, tp->vp, KY_VP_LEN) != 0) {
		r = KY_ERR_TOKEN_PART_VP;
		ky_hex_encode(vp, KY_VP_LEN, have);
		ky_hex_encode(tp->vp, KY_VP_LEN, want);
		cli_fail(r, subject,
		         "the token's key has vp %.16s..., the file records %.16s...; nothing was "
		         "sent to any crypto unit",
		         have, want);
		return r;
	}
	ref->token = t;
	ref->obj = obj;
	return 0;
}

/* ---- sealing for a unit ---- */

/* The importer certificate's P-521 point. */
static int tp_importer_point(X509 *importer, uint8_t point[TP_POINT_LEN], char *why, size_t whylen)
{
	EVP_PKEY *pk = X509_get0_pubkey(importer);
	char group[32];
	size_t n = 0;

	if (pk == NULL || !EVP_PKEY_is_a(pk, "EC") ||
	    EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
	                                   NULL) != 1 ||
	    strcmp(group, "secp521r1") != 0 ||
	    EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, point, TP_POINT_LEN, &n) !=
	        1 ||
	    n != TP_POINT_LEN || point[0] != 0x04) {
		ERR_clear_error();
		return tp_fail(why, whylen, KY_ERR_BAD_REPLY,
		               "the unit's importer certificate holds no P-521 key");
	}
	return 0;
}

/* An EVP_PKEY of the P-521 point (the originator key the TokenKeyPart carries). */
static int tp_point_key(const uint8_t point[TP_POINT_LEN], EVP_PKEY **out)
{
	int r = KY_ERR_CRYPTO;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;

	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-521", 0) != 1 ||
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, TP_POINT_LEN) !=
	        1 ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	ERR_clear_error();
	return r;
}

/* SHA-256(label || recipient || point): the block the KEK is the AES-ECB encryption of. */
static int tp_info(const uint8_t recipient[KY_TOKEN_PART_ID_LEN], const uint8_t point[TP_POINT_LEN],
                   uint8_t info[32])
{
	int r = KY_ERR_CRYPTO;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, TP_INFO_LABEL, sizeof(TP_INFO_LABEL) - 1) != 1 ||
	    EVP_DigestUpdate(md, recipient, KY_TOKEN_PART_ID_LEN) != 1 ||
	    EVP_DigestUpdate(md, point, TP_POINT_LEN) != 1 ||
	    EVP_DigestFinal_ex(md, info, NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

int cli_token_keypart_seal(const struct cli_token_part_ref *ref, X509 *importer, struct ky_buf *der,
                           char *why, size_t whylen)
{
	static const uint8_t p521_oid[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23};
	int r = KY_ERR_INTERNAL;
	CK_SESSION_HANDLE s;
	CK_FUNCTION_LIST_PTR f = cli_token_p11(ref->token, &s);
	const char *label = cli_token_label(ref->token);
	uint8_t imp[TP_POINT_LEN], ecp[TP_POINT_LEN + 8], recipient[KY_TOKEN_PART_ID_LEN], info[32],
	    wrapped[64];
	const uint8_t *point;
	/* Session objects only: nothing of the seal stays in the token. */
	CK_MECHANISM kpg = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_ATTRIBUTE pub_t[] = {{CKA_EC_PARAMS, (void *)p521_oid, sizeof(p521_oid)},
	                        {CKA_TOKEN, &tp_no, sizeof(tp_no)}};
	CK_ATTRIBUTE priv_t[] = {{CKA_TOKEN, &tp_no, sizeof(tp_no)},
	                         {CKA_PRIVATE, &tp_yes, sizeof(tp_yes)},
	                         {CKA_SENSITIVE, &tp_yes, sizeof(tp_yes)},
	                         {CKA_EXTRACTABLE, &tp_no, sizeof(tp_no)},
	                         {CKA_DERIVE, &tp_yes, sizeof(tp_yes)}};
	CK_ATTRIBUTE k0_t[] = {{CKA_CLASS, &tp_secret, sizeof(tp_secret)},
	                       {CKA_KEY_TYPE, &tp_aes, sizeof(tp_aes)},
	                       {CKA_VALUE_LEN, &tp_aes_len, sizeof(tp_aes_len)},
	                       {CKA_TOKEN, &tp_no, sizeof(tp_no)},
	                       {CKA_SENSITIVE, &tp_yes, sizeof(tp_yes)},
	                       {CKA_EXTRACTABLE, &tp_no, sizeof(tp_no)},
	                       {CKA_DERIVE, &tp_yes, sizeof(tp_yes)}};
	CK_ATTRIBUTE kek_t[] = {{CKA_CLASS, &tp_secret, sizeof(tp_secret)},
	                        {CKA_KEY_TYPE, &tp_aes, sizeof(tp_aes)},
	                        {CKA_VALUE_LEN, &tp_aes_len, sizeof(tp_aes_len)},
	                        {CKA_TOKEN, &tp_no, sizeof(tp_no)},
	                        {CKA_SENSITIVE, &tp_yes, sizeof(tp_yes)},
	                        {CKA_EXTRACTABLE, &tp_no, sizeof(tp_no)},
	                        {CKA_WRAP, &tp_yes, sizeof(tp_yes)}};
	CK_ATTRIBUTE pa = {CKA_EC_POINT, ecp, sizeof(ecp)};
	CK_ECDH1_DERIVE_PARAMS ecdh = {CKD_NULL, 0, NULL, TP_POINT_LEN, imp};
	CK_MECHANISM ecdh_m = {CKM_ECDH1_DERIVE, &ecdh, sizeof(ecdh)};
	CK_KEY_DERIVATION_STRING_DATA ecb = {info, sizeof(info)};
	CK_MECHANISM ecb_m = {CKM_AES_ECB_ENCRYPT_DATA, &ecb, sizeof(ecb)};
	CK_MECHANISM kw_m = {CKM_AES_KEY_WRAP, NULL, 0};
	CK_OBJECT_HANDLE epub = CK_INVALID_HANDLE, epriv = CK_INVALID_HANDLE,
	                 k0 = CK_INVALID_HANDLE, kek = CK_INVALID_HANDLE;
	CK_ULONG wlen = sizeof(wrapped);
	EVP_PKEY *orig = NULL;
	CK_RV rv;

	if ((r = tp_importer_point(importer, imp, why, whylen)) != 0)
		goto out;
	if ((r = ky_token_part_recipient(importer, recipient)) != 0) {
		r = tp_fail(why, whylen, r, "cannot hash the unit's importer certificate");
		goto out;
	}
	rv = f->C_GenerateKeyPair(s, &kpg, pub_t, sizeof(pub_t) / sizeof(pub_t[0]), priv_t,
	                          sizeof(priv_t) / sizeof(priv_t[0]), &epub, &epriv);
	if (rv != CKR_OK) {
		epub = epriv = CK_INVALID_HANDLE;
		r = tp_fail(why, whylen, KY_ERR_TOKEN_PART_MECHANISM,
		            "token '%s': cannot generate an ephemeral P-521 key pair: %s", label,
		            cli_token_rv(rv));
		goto out;
	}
	/* CKA_EC_POINT: the point in a DER OCTET STRING (04 81 85 04 ...), or the bare point. */
	if ((rv = f->C_GetAttributeValue(s, epub, &pa, 1)) != CKR_OK ||
	    pa.ulValueLen < TP_POINT_LEN || ecp[pa.ulValueLen - TP_POINT_LEN] != 0x04) {
		r = tp_fail(why, whylen, KY_ERR_TOKEN_DEVICE,
		            "token '%s': cannot read the ephemeral public key: %s", label,
		            cli_token_rv(rv));
		goto out;
	}
	point = ecp + pa.ulValueLen - TP_POINT_LEN;
	if ((rv = f->C_DeriveKey(s, &ecdh_m, epriv, k0_t, sizeof(k0_t) / sizeof(k0_t[0]), &k0)) !=
	    CKR_OK) {
		k0 = CK_INVALID_HANDLE;
		r = tp_fail(why, whylen, KY_ERR_TOKEN_PART_MECHANISM,
		            "token '%s': ECDH with the unit's importer key failed: %s", label,
		            cli_token_rv(rv));
		goto out;
	}
	if ((r = tp_info(recipient, point, info)) != 0) {
		r = tp_fail(why, whylen, r, "cannot compute the KEK's input block");
		goto out;
	}
	if ((rv = f->C_DeriveKey(s, &ecb_m, k0, kek_t, sizeof(kek_t) / sizeof(kek_t[0]), &kek)) !=
	    CKR_OK) {
		kek = CK_INVALID_HANDLE;
		r = tp_fail(why, whylen, KY_ERR_TOKEN_PART_MECHANISM,
		            "token '%s': cannot derive the KEK (CKM_AES_ECB_ENCRYPT_DATA): %s",
		            label, cli_token_rv(rv));
		goto out;
	}
	if ((rv = f->C_WrapKey(s, &kw_m, kek, ref->obj, wrapped, &wlen)) != CKR_OK ||
	    wlen != KY_MK_LEN + 8) {
		r = tp_fail(why, whylen, KY_ERR_TOKEN_PART_MECHANISM,
		            "token '%s': cannot wrap the key part (CKM_AES_KEY_WRAP): %s", label,
		            cli_token_rv(rv));
		goto out;
	}
	if ((r = tp_point_key(point, &orig)) != 0) {
		r = tp_fail(why, whylen, r, "token '%s': the ephemeral public key is not on P-521",
		            label);
		goto out;
	}
	if ((r = ky_token_part_encode(recipient, orig, wrapped, wlen, der)) != 0) {
		r = tp_fail(why, whylen, r, "cannot encode the TokenKeyPart");
		goto out;
	}
	r = 0;
out:
	for (size_t i = 0; i < 4; i++) {
		CK_OBJECT_HANDLE h = i == 0 ? kek : i == 1 ? k0 : i == 2 ? epriv : epub;
		if (h != CK_INVALID_HANDLE)
			(void)f->C_DestroyObject(s, h);
	}
	EVP_PKEY_free(orig);
	OPENSSL_cleanse(wrapped, sizeof(wrapped));
	return r;
}

/* ---- mk-add ---- */

int cli_token_keypart_add(const char *path, const char *description, const char *module,
                          const char *label, const char *key_label)
{
	int r = KY_ERR_INTERNAL;
	char prompt[128], why[CLI_TOKEN_WHY_MAX], subject[96], *pin = NULL;
	struct cli_token *t = NULL;
	struct cli_token_keypart tp;

	memset(&tp, 0, sizeof(tp));
	snprintf(tp.description, sizeof(tp.description), "%s", description);
	snprintf(tp.where.module, sizeof(tp.where.module), "%s", module);
	snprintf(tp.where.label, sizeof(tp.where.label), "%s", label);
	snprintf(tp.key_label, sizeof(tp.key_label), "%s", key_label);
	snprintf(subject, sizeof(subject), "token '%s'", label);
	snprintf(prompt, sizeof(prompt), "PIN of token '%s'", label);
	if ((r = cli_password(prompt, false, &pin)) != 0)
		goto out;
	if ((r = cli_token_open(module, label, NULL, pin, &t, why)) != 0) {
		cli_fail(r, subject, "%s", why);
		goto out;
	}
	if ((r = cli_token_keypart_generate(t, &tp, why, sizeof(why))) != 0) {
		cli_fail(r, subject, "%s", why);
		goto out;
	}
	if ((r = cli_token_keypart_write(path, &tp)) != 0) {
		cli_token_keypart_destroy(t, &tp);
		cli_fail(r, path, "the key part was deleted from the token again");
		goto out;
	}
	r = 0;
out:
	cli_token_free(t);
	cli_secret_free(pin);
	return r;
}
