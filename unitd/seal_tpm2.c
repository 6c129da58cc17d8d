/* The tpm2 sealing backend: the seal key is a TPM 2.0 sealed data object under a storage
 * key that lives only in the TPM, at a persistent handle of the owner hierarchy.
 *
 * unit.conf: tpm2_tcti, the TCTI string that reaches the TPM ("device:/dev/tpmrm0",
 * "tabrmd", "swtpm:host=127.0.0.1,port=2321"); absent: the TCTI loader's default.
 *
 * Each seal key has its own parent: an ECC P-256 restricted decryption key made with
 * CreatePrimary under the owner hierarchy from a template whose unique field is random, and
 * made persistent with EvictControl at the first free handle from 0x81000100. The seal key
 * itself is 32 random bytes sealed (TPM2_Create, keyedhash, no sign or decrypt) under that
 * parent; the data directory holds only its public and private blobs, which nothing but that
 * TPM, while it holds that parent, can load. Destroying the key evicts the parent: the blobs
 * never load again, on any TPM. A copy of the data directory next to another TPM finds no
 * such parent there and refuses to start.
 *
 * data_dir/seal.tpm2  "kyok-seal-tpm2-v1\n" "handle=0x81xxxxxx\n" "parent=<hex TPM2B_NAME>\n"
 *                     "public=<hex marshalled TPM2B_PUBLIC>\n"
 *                     "private=<hex marshalled TPM2B_PRIVATE>\n"
 * The key id the sealed state names: the first 16 bytes of
 * SHA-256("kyok-seal-key-id\0" || public blob), in hex.
 *
 * Commands that carry the key (Create, Unseal) run in a session salted to the parent, with
 * parameter encryption. The owner hierarchy's authorization must be empty.
 *
 * Crash safety: the reference file is written before EvictControl makes the parent
 * persistent, and destroying a key evicts the handle only when the object there has the
 * parent name the reference records; so no persistent parent is left that no reference
 * names, and another program's object at that handle is never touched.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/config.h"
#include "unitd/seal.h"

#define TPM_MAGIC       "kyok-seal-tpm2-v1\n"
#define TPM_HANDLE_BASE 0x81000100u
#define TPM_HANDLE_SPAN 256u
#define TPM_KEY_LEN     32
#define TPM_REF_MAX     8192
#define TPM_ID_LABEL    "kyok-seal-key-id"

struct tpm {
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT *esys;
	char *tcti_conf; /* for messages */
};

struct tpm_key {
	TPM2_HANDLE handle;
	TPM2B_NAME parent;
	TPM2B_PUBLIC pub;
	TPM2B_PRIVATE priv;
	uint8_t *key; /* TPM_KEY_LEN bytes in the secure heap once attached or made */
};

static const char *tpm_where(const struct tpm *t)
{
	return t->tcti_conf != NULL ? t->tcti_conf : "(default TCTI)";
}

static void tpm_key_free(struct unitd_seal_key *k)
{
	struct tpm_key *tk;

	if (k == NULL)
		return;
	tk = k->priv;
	if (tk != NULL) {
		ky_secret_free(tk->key, TPM_KEY_LEN);
		OPENSSL_cleanse(tk, sizeof(*tk));
		free(tk);
	}
	free(k);
}

static int tpm_key_new(struct unitd_seal *s, struct unitd_seal_key **out)
{
	struct unitd_seal_key *k = calloc(1, sizeof(*k));
	struct tpm_key *tk = calloc(1, sizeof(*tk));

	if (k == NULL || tk == NULL || (tk->key = ky_secret_alloc(TPM_KEY_LEN)) == NULL) {
		free(k);
		free(tk);
		return KY_ERR_NOMEM;
	}
	k->ops = s->ops;
	k->priv = tk;
	*out = k;
	return 0;
}

static int tpm_key_id(struct unitd_seal_key *k)
{
	struct tpm_key *tk = k->priv;
	uint8_t blob[sizeof(TPM2B_PUBLIC)], md[32];
	size_t off = 0;
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	int r = KY_ERR_CRYPTO;

	if (Tss2_MU_TPM2B_PUBLIC_Marshal(&tk->pub, blob, sizeof(blob), &off) != TSS2_RC_SUCCESS)
		return KY_ERR_INTERNAL;
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return KY_ERR_NOMEM;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, TPM_ID_LABEL, sizeof(TPM_ID_LABEL)) != 1 ||
	    EVP_DigestUpdate(ctx, blob, off) != 1 || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
		goto out;
	ky_hex_encode(md, 16, k->id);
	r = 0;
out:
	EVP_MD_CTX_free(ctx);
	return r;
}

/* Is a persistent object at handle? */
static int tpm_handle_used(struct tpm *t, TPM2_HANDLE handle, bool *used, char *err, size_t errlen)
{
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more = TPM2_NO;
	TSS2_RC rc;

	*used = false;
	rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
	                        handle, 1, &more, &cap);
	if (rc != TSS2_RC_SUCCESS) {
		snprintf(err, errlen, "TPM %s: cannot list persistent handles: %s", tpm_where(t),
		         Tss2_RC_Decode(rc));
		return KY_ERR_SEAL_DEVICE;
	}
	*used = cap->data.handles.count > 0 && cap->data.handles.handle[0] == handle;
	Esys_Free(cap);
	return 0;
}

static int tpm_free_handle(struct tpm *t, TPM2_HANDLE *out, char *err, size_t errlen)
{
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more = TPM2_NO;
	TSS2_RC rc;
	TPM2_HANDLE h = TPM_HANDLE_BASE;

	rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
	                        TPM_HANDLE_BASE, TPM_HANDLE_SPAN, &more, &cap);
	if (rc != TSS2_RC_SUCCESS) {
		snprintf(err, errlen, "TPM %s: cannot list persistent handles: %s", tpm_where(t),
		         Tss2_RC_Decode(rc));
		return KY_ERR_SEAL_DEVICE;
	}
	/* The list is sorted: the first gap is free. */
	for (UINT32 i = 0; i < cap->data.handles.count && cap->data.handles.handle[i] == h; i++)
		h++;
	Esys_Free(cap);
	if (h >= TPM_HANDLE_BASE + TPM_HANDLE_SPAN) {
		snprintf(err, errlen, "TPM %s: no free persistent handle from 0x%08x to 0x%08x",
		         tpm_where(t), TPM_HANDLE_BASE, TPM_HANDLE_BASE + TPM_HANDLE_SPAN - 1);
		return KY_ERR_SEAL_DEVICE;
	}
	*out = h;
	return 0;
}

/* A session salted to parent, with parameter encryption both ways. */
static int tpm_session(struct tpm *t, ESYS_TR parent, ESYS_TR *session, char *err, size_t errlen)
{
	TPMT_SYM_DEF sym = {
	    .algorithm = TPM2_ALG_AES, .keyBits = {.aes = 128}, .mode = {.aes = TPM2_ALG_CFB}};
	TSS2_RC rc;

	rc =
	    Esys_StartAuthSession(t->esys, parent, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
	                          ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &sym, TPM2_ALG_SHA256, session);
	if (rc == TSS2_RC_SUCCESS)
		rc = Esys_TRSess_SetAttributes(t->esys, *session,
		                               TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT |
		                                   TPMA_SESSION_CONTINUESESSION,
		                               0xff);
	if (rc != TSS2_RC_SUCCESS) {
		snprintf(err, errlen, "TPM %s: cannot start a session: %s", tpm_where(t),
		         Tss2_RC_Decode(rc));
		return KY_ERR_SEAL_DEVICE;
	}
	return 0;
}

/* Writes the reference of tk to path. */
static int tpm_ref_write(const char *path, const struct tpm_key *tk, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	uint8_t pub[sizeof(TPM2B_PUBLIC)], priv[sizeof(TPM2B_PRIVATE)];
	size_t publen = 0, privlen = 0;
	char *hpub = NULL, *hpriv = NULL, *hname = NULL, *text = NULL;

	if (Tss2_MU_TPM2B_PUBLIC_Marshal(&tk->pub, pub, sizeof(pub), &publen) != TSS2_RC_SUCCESS ||
	    Tss2_MU_TPM2B_PRIVATE_Marshal(&tk->priv, priv, sizeof(priv), &privlen) !=
	        TSS2_RC_SUCCESS) {
		r = KY_ERR_INTERNAL;
		snprintf(err, errlen, "cannot encode the TPM seal key blobs");
		goto out;
	}
	if ((hpub = malloc(2 * publen + 1)) == NULL || (hpriv = malloc(2 * privlen + 1)) == NULL ||
	    (hname = malloc(2 * (size_t)tk->parent.size + 1)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	ky_hex_encode(pub, publen, hpub);
	ky_hex_encode(priv, privlen, hpriv);
	ky_hex_encode(tk->parent.name, tk->parent.size, hname);
	if (asprintf(&text, TPM_MAGIC "handle=0x%08x\nparent=%s\npublic=%s\nprivate=%s\n",
	             (unsigned)tk->handle, hname, hpub, hpriv) < 0) {
		text = NULL;
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if ((r = unitd_seal_ref_write(path, text, strlen(text), err, errlen)) != 0)
		goto out;
	r = 0;
out:
	free(hpub);
	free(hpriv);
	free(hname);
	free(text);
	return r;
}

static int tpm_create(struct unitd_seal *s, const char *path, struct unitd_seal_key **out,
                      char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct tpm *t = s->priv;
	struct unitd_seal_key *k = NULL;
	struct tpm_key *tk;
	ESYS_TR primary = ESYS_TR_NONE, session = ESYS_TR_NONE, persistent = ESYS_TR_NONE;
	TPM2B_NAME *name = NULL;
	TPM2B_PUBLIC *outpub = NULL;
	TPM2B_PRIVATE *outpriv = NULL;
	TPM2B_SENSITIVE_CREATE none = {0}, data = {0};
	TPM2B_PUBLIC ptmpl = {0}, stmpl = {0};
	TPM2B_DATA outside = {0};
	TPML_PCR_SELECTION pcrs = {0};
	bool ref_written = false;
	TSS2_RC rc;

	if ((r = tpm_key_new(s, &k)) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	tk = k->priv;
	if ((r = tpm_free_handle(t, &tk->handle, err, errlen)) != 0)
		goto out;

	ptmpl.publicArea.type = TPM2_ALG_ECC;
	ptmpl.publicArea.nameAlg = TPM2_ALG_SHA256;
	ptmpl.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
	                                    TPMA_OBJECT_SENSITIVEDATAORIGIN |
	                                    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED |
	                                    TPMA_OBJECT_DECRYPT | TPMA_OBJECT_NODA;
	ptmpl.publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
	ptmpl.publicArea.parameters.eccDetail.symmetric.keyBits.aes = 128;
	ptmpl.publicArea.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
	ptmpl.publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
	ptmpl.publicArea.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
	ptmpl.publicArea.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	/* A random unique field: a parent of its own, which no template on disk can remake. */
	ptmpl.publicArea.unique.ecc.x.size = 32;
	if ((r = ky_random(ptmpl.publicArea.unique.ecc.x.buffer, 32)) != 0) {
		snprintf(err, errlen, "no random bytes: %s", ky_err_message(r));
		goto out;
	}
	rc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
	                        ESYS_TR_NONE, &none, &ptmpl, &outside, &pcrs, &primary, NULL, NULL,
	                        NULL, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen,
		         "TPM %s: cannot make the seal key's parent under the owner hierarchy "
		         "(its authorization must be empty): %s",
		         tpm_where(t), Tss2_RC_Decode(rc));
		goto out;
	}
	if ((rc = Esys_TR_GetName(t->esys, primary, &name)) != TSS2_RC_SUCCESS) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "TPM %s: cannot read the parent's name: %s", tpm_where(t),
		         Tss2_RC_Decode(rc));
		goto out;
	}
	tk->parent = *name;

	if ((r = ky_random(tk->key, TPM_KEY_LEN)) != 0) {
		snprintf(err, errlen, "no random bytes: %s", ky_err_message(r));
		goto out;
	}
	data.sensitive.data.size = TPM_KEY_LEN;
	memcpy(data.sensitive.data.buffer, tk->key, TPM_KEY_LEN);
	stmpl.publicArea.type = TPM2_ALG_KEYEDHASH;
	stmpl.publicArea.nameAlg = TPM2_ALG_SHA256;
	stmpl.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
	                                    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA;
	stmpl.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
	if ((r = tpm_session(t, primary, &session, err, errlen)) != 0)
		goto out;
	rc = Esys_Create(t->esys, primary, session, ESYS_TR_NONE, ESYS_TR_NONE, &data, &stmpl,
	                 &outside, &pcrs, &outpriv, &outpub, NULL, NULL, NULL);
	OPENSSL_cleanse(&data, sizeof(data));
	if (rc != TSS2_RC_SUCCESS) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "TPM %s: cannot seal the new seal key: %s", tpm_where(t),
		         Tss2_RC_Decode(rc));
		goto out;
	}
	tk->pub = *outpub;
	tk->priv = *outpriv;
	if ((r = tpm_key_id(k)) != 0) {
		snprintf(err, errlen, "cannot compute the seal key id");
		goto out;
	}
	/* The reference first: a persistent parent is never left without one. */
	if ((r = tpm_ref_write(path, tk, err, errlen)) != 0)
		goto out;
	ref_written = true;
	rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
	                       ESYS_TR_NONE, tk->handle, &persistent);
	if (rc != TSS2_RC_SUCCESS) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen,
		         "TPM %s: cannot make the seal key's parent persistent at "
		         "0x%08x: %s",
		         tpm_where(t), (unsigned)tk->handle, Tss2_RC_Decode(rc));
		goto out;
	}
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	if (r != 0 && ref_written)
		(void)unlink(path);
	if (session != ESYS_TR_NONE)
		(void)Esys_FlushContext(t->esys, session);
	if (primary != ESYS_TR_NONE)
		(void)Esys_FlushContext(t->esys, primary);
	if (persistent != ESYS_TR_NONE)
		(void)Esys_TR_Close(t->esys, &persistent);
	Esys_Free(name);
	Esys_Free(outpub);
	Esys_Free(outpriv);
	tpm_key_free(k);
	return r;
}

static int tpm_read(struct unitd_seal *s, const char *path, struct unitd_seal_key **out, char *err,
                    size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct unitd_seal_key *k = NULL;
	struct tpm_key *tk;
	struct ky_buf b = {0};
	char handle[16], *hex = NULL;
	uint8_t *bin = NULL;
	size_t off, n;
	unsigned long h;
	char *end;

	if ((r = unitd_seal_ref_read(path, TPM_REF_MAX, &b, err, errlen)) != 0)
		goto out;
	if ((r = tpm_key_new(s, &k)) != 0 || (hex = malloc(TPM_REF_MAX)) == NULL ||
	    (bin = malloc(TPM_REF_MAX / 2)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	tk = k->priv;
	r = KY_ERR_STATE_CORRUPT;
	snprintf(err, errlen, "seal key reference '%s' is damaged; refusing to start", path);
	if (b.len < strlen(TPM_MAGIC) || memcmp(b.data, TPM_MAGIC, strlen(TPM_MAGIC)) != 0 ||
	    unitd_seal_ref_field(&b, "handle", handle, sizeof(handle)) != 0)
		goto out;
	errno = 0;
	h = strtoul(handle, &end, 16);
	if (errno != 0 || *end != '\0' || strncmp(handle, "0x", 2) != 0 || h < TPM_HANDLE_BASE ||
	    h >= TPM_HANDLE_BASE + TPM_HANDLE_SPAN)
		goto out;
	tk->handle = (TPM2_HANDLE)h;
	if (unitd_seal_ref_field(&b, "parent", hex, TPM_REF_MAX) != 0 ||
	    (n = strlen(hex) / 2) > sizeof(tk->parent.name) || n == 0 ||
	    ky_hex_decode(hex, tk->parent.name, n) != 0)
		goto out;
	tk->parent.size = (UINT16)n;
	off = 0;
	if (unitd_seal_ref_field(&b, "public", hex, TPM_REF_MAX) != 0 ||
	    ky_hex_decode(hex, bin, (n = strlen(hex) / 2)) != 0 ||
	    Tss2_MU_TPM2B_PUBLIC_Unmarshal(bin, n, &off, &tk->pub) != TSS2_RC_SUCCESS || off != n)
		goto out;
	off = 0;
	if (unitd_seal_ref_field(&b, "private", hex, TPM_REF_MAX) != 0 ||
	    ky_hex_decode(hex, bin, (n = strlen(hex) / 2)) != 0 ||
	    Tss2_MU_TPM2B_PRIVATE_Unmarshal(bin, n, &off, &tk->priv) != TSS2_RC_SUCCESS || off != n)
		goto out;
	if ((r = tpm_key_id(k)) != 0) {
		snprintf(err, errlen, "cannot compute the seal key id");
		goto out;
	}
	err[0] = '\0';
	*out = k;
	k = NULL; /* transferred */
	r = 0;
out:
	free(hex);
	free(bin);
	ky_buf_free(&b);
	tpm_key_free(k);
	return r;
}

/* The parent of tk, if the TPM holds it: *tr set, else ESYS_TR_NONE. */
static int tpm_parent(struct tpm *t, const struct tpm_key *tk, ESYS_TR *tr, char *err,
                      size_t errlen)
{
	TPM2B_NAME *name = NULL;
	bool used = false;
	TSS2_RC rc;
	int r;

	*tr = ESYS_TR_NONE;
	if ((r = tpm_handle_used(t, tk->handle, &used, err, errlen)) != 0 || !used)
		return r;
	if ((rc = Esys_TR_FromTPMPublic(t->esys, tk->handle, ESYS_TR_NONE, ESYS_TR_NONE,
	                                ESYS_TR_NONE, tr)) != TSS2_RC_SUCCESS) {
		snprintf(err, errlen, "TPM %s: cannot read the object at 0x%08x: %s", tpm_where(t),
		         (unsigned)tk->handle, Tss2_RC_Decode(rc));
		return KY_ERR_SEAL_DEVICE;
	}
	if ((rc = Esys_TR_GetName(t->esys, *tr, &name)) != TSS2_RC_SUCCESS) {
		(void)Esys_TR_Close(t->esys, tr);
		*tr = ESYS_TR_NONE;
		snprintf(err, errlen, "TPM %s: cannot read the object at 0x%08x: %s", tpm_where(t),
		         (unsigned)tk->handle, Tss2_RC_Decode(rc));
		return KY_ERR_SEAL_DEVICE;
	}
	if (name->size != tk->parent.size ||
	    memcmp(name->name, tk->parent.name, tk->parent.size) != 0) {
		(void)Esys_TR_Close(t->esys, tr);
		*tr = ESYS_TR_NONE; /* another object: not ours */
	}
	Esys_Free(name);
	return 0;
}

static int tpm_attach(struct unitd_seal *s, struct unitd_seal_key *k, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct tpm *t = s->priv;
	struct tpm_key *tk = k->priv;
	ESYS_TR parent = ESYS_TR_NONE, obj = ESYS_TR_NONE, session = ESYS_TR_NONE;
	TPM2B_SENSITIVE_DATA *data = NULL;
	TSS2_RC rc;

	if ((r = tpm_parent(t, tk, &parent, err, errlen)) != 0)
		goto out;
	if (parent == ESYS_TR_NONE) {
		r = KY_ERR_SEAL_TPM_KEY_MISSING;
		snprintf(err, errlen,
		         "TPM %s holds no seal key parent at 0x%08x with the name this data "
		         "directory records: the data directory was sealed by another TPM (copied "
		         "from another host?) or its key was destroyed; refusing to start",
		         tpm_where(t), (unsigned)tk->handle);
		goto out;
	}
	rc = Esys_Load(t->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &tk->priv,
	               &tk->pub, &obj);
	if (rc != TSS2_RC_SUCCESS) {
		r = KY_ERR_SEAL_TPM_KEY_MISSING;
		snprintf(
		    err, errlen,
		    "TPM %s does not load the seal key of this data directory under its "
		    "parent at 0x%08x (%s): the blobs belong to another TPM; refusing to start",
		    tpm_where(t), (unsigned)tk->handle, Tss2_RC_Decode(rc));
		goto out;
	}
	if ((r = tpm_session(t, parent, &session, err, errlen)) != 0)
		goto out;
	rc = Esys_Unseal(t->esys, obj, session, ESYS_TR_NONE, ESYS_TR_NONE, &data);
	if (rc != TSS2_RC_SUCCESS || data->size != TPM_KEY_LEN) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "TPM %s: cannot unseal the seal key: %s", tpm_where(t),
		         rc != TSS2_RC_SUCCESS ? Tss2_RC_Decode(rc) : "wrong size");
		goto out;
	}
	memcpy(tk->key, data->buffer, TPM_KEY_LEN);
	r = 0;
out:
	if (data != NULL) {
		OPENSSL_cleanse(data, sizeof(*data));
		Esys_Free(data);
	}
	if (session != ESYS_TR_NONE)
		(void)Esys_FlushContext(t->esys, session);
	if (obj != ESYS_TR_NONE)
		(void)Esys_FlushContext(t->esys, obj);
	if (parent != ESYS_TR_NONE)
		(void)Esys_TR_Close(t->esys, &parent);
	return r;
}

static int tpm_destroy(struct unitd_seal *s, struct unitd_seal_key *k, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct tpm *t = s->priv;
	struct tpm_key *tk = k->priv;
	ESYS_TR parent = ESYS_TR_NONE, gone = ESYS_TR_NONE;
	TSS2_RC rc;

	if ((r = tpm_parent(t, tk, &parent, err, errlen)) != 0)
		return r;
	if (parent == ESYS_TR_NONE)
		return 0; /* already gone */
	rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE,
	                       ESYS_TR_NONE, tk->handle, &gone);
	if (rc != TSS2_RC_SUCCESS) {
		(void)Esys_TR_Close(t->esys, &parent);
		snprintf(err, errlen, "TPM %s: cannot evict the seal key's parent at 0x%08x: %s",
		         tpm_where(t), (unsigned)tk->handle, Tss2_RC_Decode(rc));
		return KY_ERR_SEAL_DEVICE;
	}
	ky_secret_free(tk->key, TPM_KEY_LEN);
	tk->key = NULL;
	return 0;
}

static int tpm_seal(struct unitd_seal *s, struct unitd_seal_key *k, const void *aad, size_t aadlen,
                    const uint8_t *pt, size_t n, struct ky_buf *out)
{
	struct tpm_key *tk = k->priv;

	(void)s;
	if (tk->key == NULL)
		return KY_ERR_INTERNAL;
	return ky_aead_seal(tk->key, aad, aadlen, pt, n, out);
}

static int tpm_open(struct unitd_seal *s, struct unitd_seal_key *k, const void *aad, size_t aadlen,
                    const uint8_t *in, size_t n, struct ky_buf *out)
{
	struct tpm_key *tk = k->priv;
	int r;

	(void)s;
	if (tk->key == NULL)
		return KY_ERR_INTERNAL;
	r = ky_aead_open(tk->key, aad, aadlen, in, n, out);
	if (r == KY_ERR_TAMPERED || r == KY_ERR_MALFORMED)
		return KY_ERR_STATE_CORRUPT;
	return r;
}

static void tpm_free(struct unitd_seal *s)
{
	struct tpm *t;

	if (s == NULL)
		return;
	t = s->priv;
	if (t != NULL) {
		if (t->esys != NULL)
			Esys_Finalize(&t->esys);
		if (t->tcti != NULL)
			Tss2_TctiLdr_Finalize(&t->tcti);
		free(t->tcti_conf);
		free(t);
	}
	free(s);
}

static const struct unitd_seal_ops tpm_ops = {
    .name = "tpm2",
    .ref_name = "seal.tpm2",
    .create = tpm_create,
    .read = tpm_read,
    .attach = tpm_attach,
    .destroy = tpm_destroy,
    .seal = tpm_seal,
    .open = tpm_open,
    .key_free = tpm_key_free,
    .free = tpm_free,
};

int unitd_seal_tpm2_new(const struct unitd_config *cfg, struct unitd_seal **out, char *err,
                        size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct unitd_seal *s = NULL;
	struct tpm *t = NULL;
	TSS2_RC rc;

	if ((s = calloc(1, sizeof(*s))) == NULL || (t = calloc(1, sizeof(*t))) == NULL ||
	    (cfg->tpm2_tcti != NULL && (t->tcti_conf = strdup(cfg->tpm2_tcti)) == NULL)) {
		free(s);
		free(t);
		snprintf(err, errlen, "out of memory");
		return KY_ERR_NOMEM;
	}
	s->ops = &tpm_ops;
	s->priv = t;
	if ((rc = Tss2_TctiLdr_Initialize(t->tcti_conf, &t->tcti)) != TSS2_RC_SUCCESS) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "cannot reach the TPM through TCTI %s: %s; check tpm2_tcti",
		         tpm_where(t), Tss2_RC_Decode(rc));
		goto out;
	}
	if ((rc = Esys_Initialize(&t->esys, t->tcti, NULL)) != TSS2_RC_SUCCESS) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "TPM %s: cannot start the TSS: %s", tpm_where(t),
		         Tss2_RC_Decode(rc));
		goto out;
	}
	/* A TPM that firmware did not start yet (a simulator) is started; else it answers
	 * TPM2_RC_INITIALIZE, which is fine. */
	rc = Esys_Startup(t->esys, TPM2_SU_CLEAR);
	if (rc != TSS2_RC_SUCCESS && (rc & 0xfff) != TPM2_RC_INITIALIZE) {
		r = KY_ERR_SEAL_DEVICE;
		snprintf(err, errlen, "TPM %s does not start: %s", tpm_where(t),
		         Tss2_RC_Decode(rc));
		goto out;
	}
	*out = s;
	s = NULL; /* transferred */
	r = 0;
out:
	tpm_free(s);
	return r;
}
