/* The pkcs11 sealing backend: the seal key is a non-extractable AES-256 key in a PKCS#11
 * token (an HSM), the state is sealed with AES-GCM inside the token.
 *
 * unit.conf: pkcs11_module (the token's PKCS#11 module, loaded with dlopen), pkcs11_token
 * (its label), pkcs11_key_label (CKA_LABEL of the seal keys, kyok-seal by default) and
 * pkcs11_pin_file (the user PIN; never in unit.conf or on a command line).
 *
 * data_dir/seal.pkcs11  "kyok-seal-pkcs11-v1\n" "token=<label>\n" "label=<key label>\n"
 *                       "id=<32 hex: CKA_ID>\n"
 * The key id the sealed state names is the CKA_ID in hex. The token holds the key as
 * CKO_SECRET_KEY, CKK_AES, 32 bytes, CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, not
 * CKA_EXTRACTABLE, CKA_ENCRYPT and CKA_DECRYPT only.
 * Sealed bytes: 12-byte IV, then CKM_AES_GCM's output (ciphertext and a 16-byte tag).
 *
 * The reference file is written before the key is made, so no key is ever in the token
 * without a reference naming it (destroying a reference whose key was never made finds
 * nothing, which is fine).
 */
#include <dlfcn.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/config.h"
#include "unitd/log.h"
#include "unitd/seal.h"

#define P11_MAGIC   "kyok-seal-pkcs11-v1\n"
#define P11_ID_LEN  16
#define P11_IV_LEN  12
#define P11_TAG_LEN 16
#define P11_PIN_MAX 256
#define P11_REF_MAX 1024

struct p11 {
	void *lib;
	CK_FUNCTION_LIST_PTR f;
	CK_SESSION_HANDLE session;
	bool initialized, session_open;
	char *module;
	char token[UNITD_TOKEN_LABEL_MAX + 1];
	char label[UNITD_KEY_LABEL_MAX + 1];
};

struct p11_key {
	uint8_t id[P11_ID_LEN];
	CK_OBJECT_HANDLE obj; /* CK_INVALID_HANDLE until attached */
};

static const char *p11_rv(CK_RV rv)
{
	static __thread char buf[32];

	switch (rv) {
	case CKR_PIN_INCORRECT:
		return "CKR_PIN_INCORRECT";
	case CKR_PIN_LOCKED:
		return "CKR_PIN_LOCKED";
	case CKR_TOKEN_NOT_PRESENT:
		return "CKR_TOKEN_NOT_PRESENT";
	case CKR_DEVICE_ERROR:
		return "CKR_DEVICE_ERROR";
	case CKR_DEVICE_REMOVED:
		return "CKR_DEVICE_REMOVED";
	case CKR_MECHANISM_INVALID:
		return "CKR_MECHANISM_INVALID";
	case CKR_ENCRYPTED_DATA_INVALID:
		return "CKR_ENCRYPTED_DATA_INVALID";
	case CKR_FUNCTION_FAILED:
		return "CKR_FUNCTION_FAILED";
	case CKR_GENERAL_ERROR:
		return "CKR_GENERAL_ERROR";
	default:
		snprintf(buf, sizeof(buf), "CKR 0x%lx", (unsigned long)rv);
		return buf;
	}
}

/* The PIN file: a regular file of ours that others cannot read; one line. */
static int p11_pin_read(const char *path, struct ky_buf *pin, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct stat sb;

	if (stat(path, &sb) != 0) {
		snprintf(err, errlen, "cannot read PKCS#11 PIN file '%s': %s", path,
		         strerror(errno));
		return KY_ERR_CONFIG;
	}
	if (!S_ISREG(sb.st_mode) || (sb.st_mode & 007) != 0) {
		snprintf(err, errlen,
		         "PKCS#11 PIN file '%s' is not a regular file or others can read it "
		         "(mode %04o): chmod 600 it; refusing to start",
		         path, (unsigned)(sb.st_mode & 07777));
		return KY_ERR_CONFIG;
	}
	if ((r = ky_file_read(path, P11_PIN_MAX, pin)) != 0) {
		snprintf(err, errlen, "cannot read PKCS#11 PIN file '%s': %s", path,
		         ky_err_message(r));
		return KY_ERR_CONFIG;
	}
	while (pin->len > 0 && (pin->data[pin->len - 1] == '\n' || pin->data[pin->len - 1] == '\r'))
		pin->len--;
	if (pin->len == 0 || memchr(pin->data, '\n', pin->len) != NULL) {
		snprintf(err, errlen, "PKCS#11 PIN file '%s' must hold one non-empty line", path);
		return KY_ERR_CONFIG;
	}
	return 0;
}

/* label as a PKCS#11 token label: 32 bytes, blank padded. */
static bool p11_label_is(const CK_UTF8CHAR label[32], const char *want)
{
	size_t n = strlen(want);

	if (n > 32 || memcmp(label, want, n) != 0)
		return false;
	for (size_t i = n; i < 32; i++)
		if (label[i] != ' ')
			return false;
	return true;
}

static int p11_find_slot(struct p11 *p, CK_SLOT_ID *slot, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, found = 0, silent = 0;
	CK_RV rv;

	if ((rv = p->f->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "PKCS#11 module '%s': cannot list slots: %s", p->module,
		         p11_rv(rv));
		goto out;
	}
	if (n > 0 && (slots = calloc(n, sizeof(*slots))) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (n > 0 && (rv = p->f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "PKCS#11 module '%s': cannot list slots: %s", p->module,
		         p11_rv(rv));
		goto out;
	}
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		if (p->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK) {
			silent++;
			continue;
		}
		if (!p11_label_is(ti.label, p->token))
			continue;
		if (found++ == 0)
			*slot = slots[i];
	}
	if (found == 0) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen,
		         "PKCS#11 module '%s' has no token labelled '%s' (%lu tokens present, %lu "
		         "of them not answering): check pkcs11_token and the module",
		         p->module, p->token, (unsigned long)n, (unsigned long)silent);
		goto out;
	}
	if (found > 1) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen,
		         "PKCS#11 module '%s' has %lu tokens labelled '%s': give the token a label "
		         "of its own",
		         p->module, (unsigned long)found, p->token);
		goto out;
	}
	r = 0;
out:
	free(slots);
	return r;
}

static void p11_free(struct unitd_seal *s)
{
	struct p11 *p;

	if (s == NULL)
		return;
	p = s->priv;
	if (p != NULL) {
		if (p->session_open) {
			(void)p->f->C_Logout(p->session);
			(void)p->f->C_CloseSession(p->session);
		}
		if (p->initialized)
			(void)p->f->C_Finalize(NULL);
		if (p->lib != NULL)
			dlclose(p->lib);
		free(p->module);
		free(p);
	}
	free(s);
}

static void p11_key_free(struct unitd_seal_key *k)
{
	if (k == NULL)
		return;
	free(k->priv);
	free(k);
}

static int p11_key_new(struct unitd_seal *s, struct unitd_seal_key **out)
{
	struct unitd_seal_key *k = calloc(1, sizeof(*k));
	struct p11_key *pk = calloc(1, sizeof(*pk));

	if (k == NULL || pk == NULL) {
		free(k);
		free(pk);
		return KY_ERR_NOMEM;
	}
	pk->obj = CK_INVALID_HANDLE;
	k->ops = s->ops;
	k->priv = pk;
	*out = k;
	return 0;
}

/* Objects of our label with k's id: up to max handles in objs, their count in *n. */
static int p11_find_key(struct p11 *p, const struct p11_key *pk, CK_OBJECT_HANDLE *objs,
                        CK_ULONG max, CK_ULONG *n, char *err, size_t errlen)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_LABEL, p->label, strlen(p->label)},
	    {CKA_ID, (void *)pk->id, P11_ID_LEN},
	};
	CK_RV rv;

	*n = 0;
	if ((rv = p->f->C_FindObjectsInit(p->session, tmpl, 3)) != CKR_OK) {
		snprintf(err, errlen, "token '%s': cannot search for the seal key: %s", p->token,
		         p11_rv(rv));
		return KY_ERR_SEAL_DEVICE;
	}
	rv = p->f->C_FindObjects(p->session, objs, max, n);
	(void)p->f->C_FindObjectsFinal(p->session);
	if (rv != CKR_OK) {
		snprintf(err, errlen, "token '%s': cannot search for the seal key: %s", p->token,
		         p11_rv(rv));
		return KY_ERR_SEAL_DEVICE;
	}
	return 0;
}

static int p11_create(struct unitd_seal *s, const char *path, struct unitd_seal_key **out,
                      char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct p11 *p = s->priv;
	struct unitd_seal_key *k = NULL;
	struct p11_key *pk;
	char *ref = NULL;
	bool ref_written = false;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_ULONG len = 32;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
	CK_RV rv;

	if ((r = p11_key_new(s, &k)) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	pk = k->priv;
	if ((r = ky_random(pk->id, P11_ID_LEN)) != 0) {
		snprintf(err, errlen, "cannot make a seal key id: %s", ky_err_message(r));
		goto out;
	}
	ky_hex_encode(pk->id, P11_ID_LEN, k->id);
	if (asprintf(&ref, P11_MAGIC "token=%s\nlabel=%s\nid=%s\n", p->token, p->label, k->id) <
	    0) {
		ref = NULL;
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if ((r = unitd_seal_ref_write(path, ref, strlen(ref), err, errlen)) != 0)
		goto out;
	ref_written = true;
	{
		CK_ATTRIBUTE tmpl[] = {
		    {CKA_CLASS, &cls, sizeof(cls)},          {CKA_KEY_TYPE, &type, sizeof(type)},
		    {CKA_VALUE_LEN, &len, sizeof(len)},      {CKA_TOKEN, &yes, sizeof(yes)},
		    {CKA_PRIVATE, &yes, sizeof(yes)},        {CKA_SENSITIVE, &yes, sizeof(yes)},
		    {CKA_EXTRACTABLE, &no, sizeof(no)},      {CKA_ENCRYPT, &yes, sizeof(yes)},
		    {CKA_DECRYPT, &yes, sizeof(yes)},        {CKA_WRAP, &no, sizeof(no)},
		    {CKA_UNWRAP, &no, sizeof(no)},           {CKA_SIGN, &no, sizeof(no)},
		    {CKA_VERIFY, &no, sizeof(no)},           {CKA_DERIVE, &no, sizeof(no)},
		    {CKA_LABEL, p->label, strlen(p->label)}, {CKA_ID, pk->id, P11_ID_LEN},
		};
		if ((rv = p->f->C_GenerateKey(p->session, &mech, tmpl,
		                              sizeof(tmpl) / sizeof(tmpl[0]), &pk->obj)) !=
		    CKR_OK) {
			r = KY_ERR_SEAL_DEVICE;
			snprintf(err, errlen, "token '%s': cannot generate the seal key: %s",
			         p->token, p11_rv(rv));
			goto out;
		}
	}
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	if (r != 0 && ref_written)
		(void)unlink(path);
	free(ref);
	p11_key_free(k);
	return r;
}

static int p11_read(struct unitd_seal *s, const char *path, struct unitd_seal_key **out, char *err,
                    size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct p11 *p = s->priv;
	struct unitd_seal_key *k = NULL;
	struct ky_buf b = {0};
	char token[UNITD_TOKEN_LABEL_MAX + 1], label[UNITD_KEY_LABEL_MAX + 1],
	    id[2 * P11_ID_LEN + 1];

	if ((r = unitd_seal_ref_read(path, P11_REF_MAX, &b, err, errlen)) != 0)
		goto out;
	if ((r = p11_key_new(s, &k)) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (b.len < strlen(P11_MAGIC) || memcmp(b.data, P11_MAGIC, strlen(P11_MAGIC)) != 0 ||
	    unitd_seal_ref_field(&b, "token", token, sizeof(token)) != 0 ||
	    unitd_seal_ref_field(&b, "label", label, sizeof(label)) != 0 ||
	    unitd_seal_ref_field(&b, "id", id, sizeof(id)) != 0 ||
	    ky_hex_decode(id, ((struct p11_key *)k->priv)->id, P11_ID_LEN) != 0) {
		r = KY_ERR_STATE_CORRUPT;
		snprintf(err, errlen, "seal key reference '%s' is damaged; refusing to start",
		         path);
		goto out;
	}
	if (strcmp(token, p->token) != 0 || strcmp(label, p->label) != 0) {
		r = KY_ERR_CONFIG;
		snprintf(err, errlen,
		         "seal key reference '%s' names token '%s' and key label '%s', but "
		         "unit.conf says pkcs11_token = %s and pkcs11_key_label = %s; refusing to "
		         "start",
		         path, token, label, p->token, p->label);
		goto out;
	}
	ky_hex_encode(((struct p11_key *)k->priv)->id, P11_ID_LEN, k->id);
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	ky_buf_free(&b);
	p11_key_free(k);
	return r;
}

static int p11_attach(struct unitd_seal *s, struct unitd_seal_key *k, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct p11 *p = s->priv;
	struct p11_key *pk = k->priv;
	CK_OBJECT_HANDLE objs[2];
	CK_ULONG n = 0;
	CK_BBOOL extractable = CK_TRUE, sensitive = CK_FALSE;
	CK_ATTRIBUTE attrs[] = {
	    {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
	    {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
	};
	CK_RV rv;

	if ((r = p11_find_key(p, pk, objs, 2, &n, err, errlen)) != 0)
		return r;
	if (n == 0) {
		snprintf(err, errlen,
		         "token '%s' holds no seal key labelled '%s' with id %s: this data "
		         "directory was sealed with another token (copied from another host?) or "
		         "the key was deleted from the token; refusing to start",
		         p->token, p->label, k->id);
		return KY_ERR_SEAL_TOKEN_KEY_MISSING;
	}
	if (n > 1) {
		snprintf(err, errlen,
		         "token '%s' holds more than one key labelled '%s' with id %s; refusing to "
		         "start",
		         p->token, p->label, k->id);
		return KY_ERR_SEAL_DEVICE;
	}
	if ((rv = p->f->C_GetAttributeValue(p->session, objs[0], attrs, 2)) != CKR_OK) {
		snprintf(err, errlen, "token '%s': cannot read the seal key's attributes: %s",
		         p->token, p11_rv(rv));
		return KY_ERR_SEAL_DEVICE;
	}
	if (extractable != CK_FALSE || sensitive != CK_TRUE) {
		snprintf(err, errlen,
		         "the seal key %s in token '%s' is extractable or not sensitive: its value "
		         "could leave the token; refusing to start",
		         k->id, p->token);
		return KY_ERR_CONFIG;
	}
	pk->obj = objs[0];
	return 0;
}

static int p11_destroy(struct unitd_seal *s, struct unitd_seal_key *k, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct p11 *p = s->priv;
	CK_OBJECT_HANDLE objs[8];
	CK_ULONG n = 0;
	CK_RV rv;

	if ((r = p11_find_key(p, k->priv, objs, 8, &n, err, errlen)) != 0)
		return r;
	for (CK_ULONG i = 0; i < n; i++) {
		if ((rv = p->f->C_DestroyObject(p->session, objs[i])) != CKR_OK) {
			snprintf(err, errlen, "token '%s': cannot destroy seal key %s: %s",
			         p->token, k->id, p11_rv(rv));
			return KY_ERR_SEAL_DEVICE;
		}
	}
	((struct p11_key *)k->priv)->obj = CK_INVALID_HANDLE;
	return 0;
}

static int p11_seal(struct unitd_seal *s, struct unitd_seal_key *k, const void *aad, size_t aadlen,
                    const uint8_t *pt, size_t n, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	struct p11 *p = s->priv;
	struct p11_key *pk = k->priv;
	uint8_t iv[P11_IV_LEN];
	uint8_t *ct = NULL;
	CK_ULONG ctlen = (CK_ULONG)n + P11_TAG_LEN;
	CK_GCM_PARAMS gcm = {iv,     P11_IV_LEN,     P11_IV_LEN * 8, (CK_BYTE_PTR)aad,
	                     aadlen, P11_TAG_LEN * 8};
	CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
	CK_RV rv;

	if (pk->obj == CK_INVALID_HANDLE)
		return KY_ERR_INTERNAL;
	if ((r = ky_random(iv, sizeof(iv))) != 0)
		return r;
	if ((ct = malloc(ctlen)) == NULL)
		return KY_ERR_NOMEM;
	if ((rv = p->f->C_EncryptInit(p->session, &mech, pk->obj)) != CKR_OK ||
	    (rv = p->f->C_Encrypt(p->session, (CK_BYTE_PTR)pt, n, ct, &ctlen)) != CKR_OK) {
		unitd_log("error: token '%s': cannot seal under key %s: %s", p->token, k->id,
		          p11_rv(rv));
		r = KY_ERR_SEAL_DEVICE;
		goto out;
	}
	if ((r = ky_buf_append(out, iv, sizeof(iv))) != 0 ||
	    (r = ky_buf_append(out, ct, ctlen)) != 0)
		goto out;
	r = 0;
out:
	free(ct);
	return r;
}

static int p11_open(struct unitd_seal *s, struct unitd_seal_key *k, const void *aad, size_t aadlen,
                    const uint8_t *in, size_t n, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	struct p11 *p = s->priv;
	struct p11_key *pk = k->priv;
	uint8_t *pt = NULL;
	CK_ULONG ptlen;
	CK_GCM_PARAMS gcm;
	CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
	CK_RV rv;

	if (pk->obj == CK_INVALID_HANDLE)
		return KY_ERR_INTERNAL;
	if (n < P11_IV_LEN + P11_TAG_LEN)
		return KY_ERR_STATE_CORRUPT;
	gcm = (CK_GCM_PARAMS){(CK_BYTE_PTR)in,  P11_IV_LEN, P11_IV_LEN * 8,
	                      (CK_BYTE_PTR)aad, aadlen,     P11_TAG_LEN * 8};
	ptlen = (CK_ULONG)n;
	if ((pt = OPENSSL_secure_malloc(ptlen)) == NULL)
		return KY_ERR_NOMEM;
	if ((rv = p->f->C_DecryptInit(p->session, &mech, pk->obj)) != CKR_OK) {
		unitd_log("error: token '%s': cannot unseal under key %s: %s", p->token, k->id,
		          p11_rv(rv));
		r = KY_ERR_SEAL_DEVICE;
		goto out;
	}
	rv = p->f->C_Decrypt(p->session, (CK_BYTE_PTR)in + P11_IV_LEN, n - P11_IV_LEN, pt, &ptlen);
	if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
	    rv == CKR_FUNCTION_FAILED) {
		r = KY_ERR_STATE_CORRUPT;
		goto out;
	}
	if (rv != CKR_OK) {
		unitd_log("error: token '%s': cannot unseal under key %s: %s", p->token, k->id,
		          p11_rv(rv));
		r = KY_ERR_SEAL_DEVICE;
		goto out;
	}
	if ((r = ky_buf_append(out, pt, ptlen)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_secure_clear_free(pt, (size_t)n);
	return r;
}

static const struct unitd_seal_ops p11_ops = {
    .name = "pkcs11",
    .ref_name = "seal.pkcs11",
    .create = p11_create,
    .read = p11_read,
    .attach = p11_attach,
    .destroy = p11_destroy,
    .seal = p11_seal,
    .open = p11_open,
    .key_free = p11_key_free,
    .free = p11_free,
};

int unitd_seal_pkcs11_new(const struct unitd_config *cfg, struct unitd_seal **out, char *err,
                          size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct unitd_seal *s = NULL;
	struct p11 *p = NULL;
	struct ky_buf pin = {0};
	CK_C_GetFunctionList getlist;
	CK_C_INITIALIZE_ARGS init = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
	CK_SLOT_ID slot = 0;
	CK_MECHANISM_INFO mi;
	CK_RV rv;

	if ((s = calloc(1, sizeof(*s))) == NULL || (p = calloc(1, sizeof(*p))) == NULL ||
	    (p->module = strdup(cfg->pkcs11_module)) == NULL) {
		free(s);
		if (p != NULL)
			free(p->module);
		free(p);
		snprintf(err, errlen, "out of memory");
		return KY_ERR_NOMEM;
	}
	s->ops = &p11_ops;
	s->priv = p;
	snprintf(p->token, sizeof(p->token), "%s", cfg->pkcs11_token);
	snprintf(p->label, sizeof(p->label), "%s", cfg->pkcs11_key_label);

	if ((r = p11_pin_read(cfg->pkcs11_pin_file, &pin, err, errlen)) != 0)
		goto out;
	if ((p->lib = dlopen(p->module, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		r = KY_ERR_CONFIG;
		snprintf(err, errlen, "cannot load PKCS#11 module '%s': %s", p->module, dlerror());
		goto out;
	}
	*(void **)&getlist = dlsym(p->lib, "C_GetFunctionList");
	if (getlist == NULL || getlist(&p->f) != CKR_OK || p->f == NULL) {
		r = KY_ERR_CONFIG;
		snprintf(err, errlen, "'%s' is not a PKCS#11 module (no C_GetFunctionList)",
		         p->module);
		goto out;
	}
	rv = p->f->C_Initialize(&init);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "PKCS#11 module '%s' does not initialise: %s", p->module,
		         p11_rv(rv));
		goto out;
	}
	p->initialized = rv == CKR_OK;
	if ((r = p11_find_slot(p, &slot, err, errlen)) != 0)
		goto out;
	if ((rv = p->f->C_GetMechanismInfo(slot, CKM_AES_GCM, &mi)) != CKR_OK ||
	    (mi.flags & (CKF_ENCRYPT | CKF_DECRYPT)) != (CKF_ENCRYPT | CKF_DECRYPT)) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "token '%s' cannot encrypt with AES-GCM (CKM_AES_GCM)",
		         p->token);
		goto out;
	}
	if ((rv = p->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
	                              &p->session)) != CKR_OK) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "token '%s': cannot open a session: %s", p->token,
		         p11_rv(rv));
		goto out;
	}
	p->session_open = true;
	rv = p->f->C_Login(p->session, CKU_USER, pin.data, pin.len);
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_INVALID ||
	    rv == CKR_PIN_LEN_RANGE) {
		r = KY_ERR_SEAL_TOKEN_PIN;
		snprintf(err, errlen,
		         "token '%s' refused the PIN in '%s' (%s): put the user PIN there; "
		         "refusing to start",
		         p->token, cfg->pkcs11_pin_file, p11_rv(rv));
		goto out;
	}
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "token '%s': cannot log in: %s", p->token, p11_rv(rv));
		goto out;
	}
	*out = s;
	s = NULL; /* transferred */
	r = 0;
out:
	ky_buf_free(&pin);
	p11_free(s);
	return r;
}
