/* PKCS#11 tokens holding administrators' signature keys: see cli/token.h. */
#include <dlfcn.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "cli/cli.h"
#include "cli/token.h"
#include "kyok/err.h"

#define TOKEN_P521_BYTES  66
#define TOKEN_P384_BYTES  48
#define TOKEN_MAX_MODULES 8

/* A module is initialised once per process however many tokens of it are open (two
 * administrators' tokens on one module), and finalised when the last one closes. */
struct token_module {
	char path[KY_TOKEN_MODULE_MAX + 1];
	void *lib;
	CK_FUNCTION_LIST_PTR f;
	int refs;
};
static struct token_module token_modules[TOKEN_MAX_MODULES];

struct cli_token {
	struct token_module *m;
	CK_SESSION_HANDLE session;
	bool session_open;
	char label[KY_TOKEN_LABEL_MAX + 1];
	char serial[KY_TOKEN_SERIAL_MAX + 1];
	CK_OBJECT_HANDLE priv, pub; /* CK_INVALID_HANDLE until generated or attached */
	char why[CLI_TOKEN_WHY_MAX];
};

const char *cli_token_rv(unsigned long rv)
{
	static char buf[32];

	switch (rv) {
	case CKR_PIN_INCORRECT:
		return "CKR_PIN_INCORRECT";
	case CKR_PIN_LOCKED:
		return "CKR_PIN_LOCKED";
	case CKR_PIN_LEN_RANGE:
		return "CKR_PIN_LEN_RANGE";
	case CKR_TOKEN_NOT_PRESENT:
		return "CKR_TOKEN_NOT_PRESENT";
	case CKR_DEVICE_ERROR:
		return "CKR_DEVICE_ERROR";
	case CKR_DEVICE_REMOVED:
		return "CKR_DEVICE_REMOVED";
	case CKR_MECHANISM_INVALID:
		return "CKR_MECHANISM_INVALID";
	case CKR_ATTRIBUTE_VALUE_INVALID:
		return "CKR_ATTRIBUTE_VALUE_INVALID";
	case CKR_TEMPLATE_INCONSISTENT:
		return "CKR_TEMPLATE_INCONSISTENT";
	case CKR_FUNCTION_FAILED:
		return "CKR_FUNCTION_FAILED";
	case CKR_GENERAL_ERROR:
		return "CKR_GENERAL_ERROR";
	default:
		snprintf(buf, sizeof(buf), "CKR 0x%lx", (unsigned long)rv);
		return buf;
	}
}

static int token_fail(char *why, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int token_fail(char *why, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, CLI_TOKEN_WHY_MAX, fmt, ap);
	va_end(ap);
	return err;
}

/* A blank-padded PKCS#11 text field, trailing blanks removed. */
static void token_text(const CK_UTF8CHAR *field, size_t len, char *out, size_t cap)
{
	size_t n = len < cap - 1 ? len : cap - 1;

	memcpy(out, field, n);
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}

static void token_module_release(struct token_module *m)
{
	if (m == NULL || --m->refs > 0)
		return;
	(void)m->f->C_Finalize(NULL);
	dlclose(m->lib);
	memset(m, 0, sizeof(*m));
}

static int token_module_get(const char *path, struct token_module **out, char *why)
{
	int r = KY_ERR_INTERNAL;
	struct token_module *m = NULL;
	CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR);
	CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
	CK_RV rv;

	for (size_t i = 0; i < TOKEN_MAX_MODULES; i++)
		if (token_modules[i].refs > 0 && strcmp(token_modules[i].path, path) == 0) {
			token_modules[i].refs++;
			*out = &token_modules[i];
			return 0;
		}
	for (size_t i = 0; i < TOKEN_MAX_MODULES && m == NULL; i++)
		if (token_modules[i].refs == 0)
			m = &token_modules[i];
	if (m == NULL)
		return token_fail(why, KY_ERR_TOKEN_MODULE, "more than %d PKCS#11 modules at once",
		                  TOKEN_MAX_MODULES);
	if (path[0] != '/' || strlen(path) > KY_TOKEN_MODULE_MAX)
		return token_fail(why, KY_ERR_TOKEN_MODULE, "'%s' is not an absolute path", path);
	if ((m->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		r = token_fail(why, KY_ERR_TOKEN_MODULE, "cannot load '%s': %s", path, dlerror());
		goto out;
	}
	*(void **)&get_list = dlsym(m->lib, "C_GetFunctionList");
	if (get_list == NULL || get_list(&m->f) != CKR_OK || m->f == NULL) {
		r = token_fail(why, KY_ERR_TOKEN_MODULE, "'%s' is not a PKCS#11 module", path);
		goto out;
	}
	rv = m->f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		r = token_fail(why, KY_ERR_TOKEN_MODULE, "PKCS#11 module '%s' does not start: %s",
		               path, cli_token_rv(rv));
		goto out;
	}
	snprintf(m->path, sizeof(m->path), "%s", path);
	m->refs = 1;
	*out = m;
	m = NULL; /* transferred */
	r = 0;
out:
	if (m != NULL) {
		if (m->lib != NULL)
			dlclose(m->lib);
		memset(m, 0, sizeof(*m));
	}
	return r;
}

/* The one slot whose token is labelled label (and has serial, when not NULL). */
static int token_find_slot(struct cli_token *t, const char *label, const char *serial,
                           CK_SLOT_ID *slot, char *why)
{
	int r = KY_ERR_INTERNAL;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, found = 0, other = 0;
	CK_RV rv;

	if ((rv = t->m->f->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK) {
		r = token_fail(why, KY_ERR_TOKEN_DEVICE,
		               "PKCS#11 module '%s': cannot list slots: %s", t->m->path,
		               cli_token_rv(rv));
		goto out;
	}
	if (n > 0 && (slots = calloc(n, sizeof(*slots))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (n > 0 && (rv = t->m->f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
		r = token_fail(why, KY_ERR_TOKEN_DEVICE,
		               "PKCS#11 module '%s': cannot list slots: %s", t->m->path,
		               cli_token_rv(rv));
		goto out;
	}
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		char lab[KY_TOKEN_LABEL_MAX + 1], ser[KY_TOKEN_SERIAL_MAX + 1];

		if (t->m->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		token_text(ti.label, sizeof(ti.label), lab, sizeof(lab));
		token_text(ti.serialNumber, sizeof(ti.serialNumber), ser, sizeof(ser));
		if (strcmp(lab, label) != 0)
			continue;
		if (serial != NULL && strcmp(ser, serial) != 0) {
			other++;
			continue;
		}
		if (found++ == 0) {
			*slot = slots[i];
			snprintf(t->serial, sizeof(t->serial), "%s", ser);
		}
	}
	if (found == 0 && other > 0) {
		r = token_fail(why, KY_ERR_TOKEN_OTHER,
		               "token '%s' of module '%s' is not the one with serial number '%s'",
		               label, t->m->path, serial);
		goto out;
	}
	if (found == 0) {
		r = token_fail(why, KY_ERR_TOKEN_NOT_FOUND,
		               "module '%s' has no token labelled '%s' (tokens present: %lu)",
		               t->m->path, label, (unsigned long)n);
		goto out;
	}
	if (found > 1) {
		r = token_fail(why, KY_ERR_TOKEN_NOT_FOUND,
		               "module '%s' has %lu tokens labelled '%s': give each a label of "
		               "its own",
		               t->m->path, (unsigned long)found, label);
		goto out;
	}
	r = 0;
out:
	free(slots);
	return r;
}

int cli_token_open(const char *module, const char *label, const char *serial, const char *pin,
                   struct cli_token **out, char why[CLI_TOKEN_WHY_MAX])
{
	int r = KY_ERR_INTERNAL;
	struct cli_token *t = calloc(1, sizeof(*t));
	CK_SLOT_ID slot = 0;
	CK_RV rv;

	why[0] = '\0';
	if (t == NULL)
		return KY_ERR_NOMEM;
	t->priv = t->pub = CK_INVALID_HANDLE;
	snprintf(t->label, sizeof(t->label), "%s", label);
	if ((r = token_module_get(module, &t->m, why)) != 0)
		goto out;
	if ((r = token_find_slot(t, label, serial, &slot, why)) != 0)
		goto out;
	rv = t->m->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
	                            &t->session);
	if (rv != CKR_OK) {
		r = token_fail(why, KY_ERR_TOKEN_DEVICE, "token '%s': cannot open a session: %s",
		               label, cli_token_rv(rv));
		goto out;
	}
	t->session_open = true;
	rv = t->m->f->C_Login(t->session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE) {
		r = token_fail(why, KY_ERR_TOKEN_PIN, "token '%s': %s", label, cli_token_rv(rv));
		goto out;
	}
	if (rv == CKR_PIN_LOCKED) {
		r = token_fail(why, KY_ERR_TOKEN_PIN_LOCKED, "token '%s': %s", label,
		               cli_token_rv(rv));
		goto out;
	}
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		r = token_fail(why, KY_ERR_TOKEN_DEVICE, "token '%s': cannot log in: %s", label,
		               cli_token_rv(rv));
		goto out;
	}
	*out = t;
	t = NULL; /* transferred */
	r = 0;
out:
	cli_token_free(t);
	return r;
}

void cli_token_free(struct cli_token *t)
{
	if (t == NULL)
		return;
	if (t->session_open)
		(void)t->m->f->C_CloseSession(t->session);
	token_module_release(t->m);
	free(t);
}

const char *cli_token_why(const struct cli_token *t)
{
	return t->why;
}

const char *cli_token_serial(const struct cli_token *t)
{
	return t->serial;
}

const char *cli_token_label(const struct cli_token *t)
{
	return t->label;
}

CK_FUNCTION_LIST_PTR cli_token_p11(const struct cli_token *t, CK_SESSION_HANDLE *session)
{
	*session = t->session;
	return t->m->f;
}

/* Reads the boolean attributes that say whether the private key ever left, or can leave,
 * the token. An attribute the token does not know is not held against the key, except the
 * two that a signing key must have. */
static int token_key_check(struct cli_token *t, CK_OBJECT_HANDLE obj)
{
	CK_KEY_TYPE kt = 0;
	CK_BBOOL sens = CK_FALSE, extr = CK_TRUE, asens = CK_TRUE, nextr = CK_TRUE, local = CK_TRUE;
	CK_ATTRIBUTE a[] = {
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_SENSITIVE, &sens, sizeof(sens)},
	    {CKA_EXTRACTABLE, &extr, sizeof(extr)},
	    {CKA_ALWAYS_SENSITIVE, &asens, sizeof(asens)},
	    {CKA_NEVER_EXTRACTABLE, &nextr, sizeof(nextr)},
	    {CKA_LOCAL, &local, sizeof(local)},
	};
	CK_RV rv = t->m->f->C_GetAttributeValue(t->session, obj, a, sizeof(a) / sizeof(a[0]));

	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE)
		return token_fail(t->why, KY_ERR_TOKEN_DEVICE,
		                  "token '%s': cannot read the key's attributes: %s", t->label,
		                  cli_token_rv(rv));
	if (a[0].ulValueLen != sizeof(kt) || kt != CKK_EC)
		return token_fail(t->why, KY_ERR_TOKEN_KEY_MISSING,
		                  "token '%s': the key with that id is not an EC key", t->label);
	if (a[1].ulValueLen != sizeof(sens) || a[2].ulValueLen != sizeof(extr) || sens != CK_TRUE ||
	    extr != CK_FALSE)
		return token_fail(t->why, KY_ERR_TOKEN_KEY_EXTRACTABLE,
		                  "token '%s': the key is not sensitive or is extractable",
		                  t->label);
	for (size_t i = 3; i < sizeof(a) / sizeof(a[0]); i++)
		if (a[i].ulValueLen == sizeof(CK_BBOOL) && *(CK_BBOOL *)a[i].pValue != CK_TRUE)
			return token_fail(
			    t->why, KY_ERR_TOKEN_KEY_EXTRACTABLE,
			    "token '%s': the key was imported or was once extractable "
			    "(%s is false)",
			    t->label,
			    i == 3   ? "CKA_ALWAYS_SENSITIVE"
			    : i == 4 ? "CKA_NEVER_EXTRACTABLE"
			             : "CKA_LOCAL");
	return 0;
}

/* CKA_EC_POINT (a DER OCTET STRING, or the raw point from some tokens) as a key on the
 * curve of bits (521 or 384). */
static int token_ec_pub(struct cli_token *t, CK_OBJECT_HANDLE obj, int bits, EVP_PKEY **out)
{
	const size_t field = bits == 521 ? TOKEN_P521_BYTES : TOKEN_P384_BYTES;
	const char *group = bits == 521 ? "secp521r1" : "secp384r1";
	int r = KY_ERR_TOKEN_DEVICE;
	uint8_t buf[256];
	CK_ATTRIBUTE a = {CKA_EC_POINT, buf, sizeof(buf)};
	const unsigned char *p = buf, *pt;
	ASN1_OCTET_STRING *os = NULL;
	size_t ptlen;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	CK_RV rv;

	if ((rv = t->m->f->C_GetAttributeValue(t->session, obj, &a, 1)) != CKR_OK) {
		r = token_fail(t->why, KY_ERR_TOKEN_DEVICE,
		               "token '%s': cannot read the public key: %s", t->label,
		               cli_token_rv(rv));
		goto out;
	}
	if ((os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)a.ulValueLen)) != NULL &&
	    p == buf + a.ulValueLen) {
		pt = ASN1_STRING_get0_data(os);
		ptlen = (size_t)ASN1_STRING_length(os);
	} else {
		pt = buf;
		ptlen = a.ulValueLen;
	}
	if (ptlen != 1 + 2 * field || pt[0] != 0x04) {
		r = token_fail(t->why, KY_ERR_TOKEN_MECHANISM,
		               "token '%s': the public key is not an uncompressed P-%d point",
		               t->label, bits);
		goto out;
	}
	r = KY_ERR_CRYPTO;
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen) != 1 ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
		goto out;
	if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		r = token_fail(t->why, KY_ERR_TOKEN_MECHANISM,
		               "token '%s': the public key is not a point of P-%d", t->label, bits);
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	ASN1_OCTET_STRING_free(os);
	ERR_clear_error();
	return r;
}

static int token_mechanism(struct cli_token *t, CK_MECHANISM_TYPE mech, const char *name, int bits)
{
	CK_SESSION_INFO si;
	CK_MECHANISM_INFO mi;
	CK_RV rv;

	if ((rv = t->m->f->C_GetSessionInfo(t->session, &si)) != CKR_OK)
		return token_fail(t->why, KY_ERR_TOKEN_DEVICE, "token '%s': %s", t->label,
		                  cli_token_rv(rv));
	rv = t->m->f->C_GetMechanismInfo(si.slotID, mech, &mi);
	if (rv != CKR_OK || mi.ulMaxKeySize < (CK_ULONG)bits || mi.ulMinKeySize > (CK_ULONG)bits)
		return token_fail(t->why, KY_ERR_TOKEN_MECHANISM,
		                  "token '%s' offers no %s for P-%d keys", t->label, name, bits);
	return 0;
}

int cli_token_ec_generate(struct cli_token *t, const char *label, int bits,
                          uint8_t id[KY_TOKEN_ID_LEN], EVP_PKEY **pub)
{
	int r = KY_ERR_INTERNAL;
	/* secp521r1 and secp384r1 as the DER OBJECT IDENTIFIER CKA_EC_PARAMS takes. */
	static const uint8_t p521_oid[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23};
	static const uint8_t p384_oid[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
	const uint8_t *oid = bits == 521 ? p521_oid : p384_oid;
	const CK_ULONG oidlen = bits == 521 ? sizeof(p521_oid) : sizeof(p384_oid);
	CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE pubt[] = {
	    {CKA_TOKEN, &yes, sizeof(yes)},  {CKA_PRIVATE, &no, sizeof(no)},
	    {CKA_VERIFY, &yes, sizeof(yes)}, {CKA_EC_PARAMS, (void *)oid, oidlen},
	    {CKA_ID, id, KY_TOKEN_ID_LEN},   {CKA_LABEL, (void *)label, strlen(label)},
	};
	CK_ATTRIBUTE privt[] = {
	    {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_PRIVATE, &yes, sizeof(yes)},
	    {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &no, sizeof(no)},
	    {CKA_SIGN, &yes, sizeof(yes)},
	    {CKA_DERIVE, &no, sizeof(no)},
	    {CKA_DECRYPT, &no, sizeof(no)},
	    {CKA_ID, id, KY_TOKEN_ID_LEN},
	    {CKA_LABEL, (void *)label, strlen(label)},
	};
	CK_RV rv;

	if (bits != 521 && bits != 384)
		return token_fail(t->why, KY_ERR_USAGE, "P-%d is not a curve of kyok", bits);
	if ((r = token_mechanism(t, CKM_EC_KEY_PAIR_GEN, "EC key pair generation", bits)) != 0 ||
	    (r = token_mechanism(t, CKM_ECDSA, "ECDSA", bits)) != 0)
		goto out;
	if ((r = ky_random(id, KY_TOKEN_ID_LEN)) != 0)
		goto out;
	rv = t->m->f->C_GenerateKeyPair(t->session, &mech, pubt, sizeof(pubt) / sizeof(pubt[0]),
	                                privt, sizeof(privt) / sizeof(privt[0]), &t->pub, &t->priv);
	if (rv != CKR_OK) {
		t->pub = t->priv = CK_INVALID_HANDLE;
		r = token_fail(t->why,
		               rv == CKR_MECHANISM_INVALID || rv == CKR_ATTRIBUTE_VALUE_INVALID ||
		                       rv == CKR_TEMPLATE_INCONSISTENT
		                   ? KY_ERR_TOKEN_MECHANISM
		                   : KY_ERR_TOKEN_DEVICE,
		               "token '%s': cannot generate a P-%d key pair: %s", t->label, bits,
		               cli_token_rv(rv));
		goto out;
	}
	/* What the token made, not what was asked for, decides. */
	if ((r = token_key_check(t, t->priv)) != 0)
		goto out;
	if ((r = token_ec_pub(t, t->pub, bits, pub)) != 0)
		goto out;
	r = 0;
out:
	if (r != 0)
		cli_token_ec_destroy(t);
	return r;
}

void cli_token_ec_destroy(struct cli_token *t)
{
	if (t->priv != CK_INVALID_HANDLE)
		(void)t->m->f->C_DestroyObject(t->session, t->priv);
	if (t->pub != CK_INVALID_HANDLE)
		(void)t->m->f->C_DestroyObject(t->session, t->pub);
	t->priv = t->pub = CK_INVALID_HANDLE;
}

int cli_token_key_attach(struct cli_token *t, const uint8_t id[KY_TOKEN_ID_LEN])
{
	int r = KY_ERR_INTERNAL;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_ID, (void *)id, KY_TOKEN_ID_LEN},
	};
	CK_OBJECT_HANDLE objs[2];
	CK_ULONG n = 0;
	CK_RV rv;

	if ((rv = t->m->f->C_FindObjectsInit(t->session, tmpl, 2)) != CKR_OK)
		return token_fail(t->why, KY_ERR_TOKEN_DEVICE, "token '%s': cannot search: %s",
		                  t->label, cli_token_rv(rv));
	rv = t->m->f->C_FindObjects(t->session, objs, 2, &n);
	(void)t->m->f->C_FindObjectsFinal(t->session);
	if (rv != CKR_OK)
		return token_fail(t->why, KY_ERR_TOKEN_DEVICE, "token '%s': cannot search: %s",
		                  t->label, cli_token_rv(rv));
	if (n != 1)
		return token_fail(t->why, KY_ERR_TOKEN_KEY_MISSING,
		                  "token '%s' has %lu private keys with the id the file names",
		                  t->label, (unsigned long)n);
	if ((r = token_key_check(t, objs[0])) != 0)
		return r;
	t->priv = objs[0];
	return 0;
}

int cli_token_sign(void *arg, const uint8_t *md, size_t mdlen, struct ky_buf *sig)
{
	int r = KY_ERR_INTERNAL;
	struct cli_token *t = arg;
	CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
	uint8_t raw[2 * TOKEN_P521_BYTES];
	size_t half;
	CK_ULONG rawlen = sizeof(raw);
	ECDSA_SIG *es = NULL;
	BIGNUM *br = NULL, *bs = NULL;
	unsigned char *der = NULL;
	int derlen;
	CK_RV rv;

	if (t->priv == CK_INVALID_HANDLE)
		return KY_ERR_INTERNAL;
	if ((rv = t->m->f->C_SignInit(t->session, &mech, t->priv)) != CKR_OK ||
	    (rv = t->m->f->C_Sign(t->session, (CK_BYTE_PTR)md, mdlen, raw, &rawlen)) != CKR_OK) {
		r = token_fail(t->why, KY_ERR_TOKEN_DEVICE, "token '%s': cannot sign: %s", t->label,
		               cli_token_rv(rv));
		goto out;
	}
	/* r || s of a P-521 or a P-384 key; which key it was, the caller's check against the
	 * certificate tells. */
	if (rawlen != 2 * TOKEN_P521_BYTES && rawlen != 2 * TOKEN_P384_BYTES) {
		r = token_fail(t->why, KY_ERR_TOKEN_MECHANISM,
		               "token '%s': a %lu-byte signature is not a P-521 or P-384 one",
		               t->label, (unsigned long)rawlen);
		goto out;
	}
	half = rawlen / 2;
	r = KY_ERR_CRYPTO;
	if ((es = ECDSA_SIG_new()) == NULL || (br = BN_bin2bn(raw, (int)half, NULL)) == NULL ||
	    (bs = BN_bin2bn(raw + half, (int)half, NULL)) == NULL)
		goto out;
	if (ECDSA_SIG_set0(es, br, bs) != 1)
		goto out;
	br = bs = NULL; /* transferred */
	if ((derlen = i2d_ECDSA_SIG(es, &der)) <= 0)
		goto out;
	if ((r = ky_buf_append(sig, der, (size_t)derlen)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_free(der);
	BN_free(br);
	BN_free(bs);
	ECDSA_SIG_free(es);
	ERR_clear_error();
	return r;
}

int cli_signer_open_token(struct cli_signer *s, const struct ky_sigkey_token *tok, const char *pin,
                          char why[CLI_TOKEN_WHY_MAX])
{
	int r = KY_ERR_INTERNAL;
	static const char probe[] = "kyok token key probe";
	uint8_t md[64];
	struct ky_buf sig = {0};
	struct cli_token *t = NULL;

	why[0] = '\0';
	if ((r = cli_token_open(tok->module, tok->label, tok->serial, pin, &t, why)) != 0)
		goto out;
	if ((r = cli_token_key_attach(t, tok->id)) != 0) {
		snprintf(why, CLI_TOKEN_WHY_MAX, "%s", t->why);
		goto out;
	}
	r = KY_ERR_CRYPTO;
	if (EVP_Digest(probe, sizeof(probe) - 1, md, NULL, EVP_sha512(), NULL) != 1)
		goto out;
	if ((r = cli_token_sign(t, md, sizeof(md), &sig)) != 0) {
		snprintf(why, CLI_TOKEN_WHY_MAX, "%s", t->why);
		goto out;
	}
	if (ky_verify(X509_get0_pubkey(s->cert), probe, sizeof(probe) - 1, sig.data, sig.len) !=
	    0) {
		r = token_fail(why, KY_ERR_TOKEN_SIGNATURE, "token '%s'", tok->label);
		goto out;
	}
	s->token = t;
	t = NULL; /* transferred */
	r = 0;
out:
	cli_token_free(t);
	ky_buf_free(&sig);
	return r;
}
