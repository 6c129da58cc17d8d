/* token_part: makes a key part in a PKCS#11 token and delivers it to units in the TokenKeyPart
 * form (docs/formats.md, section 5) with the token's own mechanisms, the part never leaving
 * the token in clear. The token tests' stand-in for the workstation side.
 *
 *   token_part MODULE LABEL PIN_FILE OUT IMPORTER...
 *
 * In a session of the token labelled LABEL (user PIN read from PIN_FILE, never on argv): an
 * AES-256 part (session object; sensitive; extractable for the wrap only), its VP
 * SHA-256(0x01 || part) by C_DigestKey, then for each importer certificate i (PEM) an
 * ephemeral P-521 key pair (session objects; the private key sensitive, not extractable,
 * derive only), CKM_ECDH1_DERIVE (CKD_NULL) to K0, CKM_AES_ECB_ENCRYPT_DATA to the KEK,
 * C_WrapKey CKM_AES_KEY_WRAP, the ephemeral pair, K0 and the KEK destroyed right after the wrap,
 * and OUT.i.der (i from 1). Prints the VP in hex. Fails when the part's or the ephemeral
 * private key's value can be read, or when an object is still there after C_DestroyObject. */
#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

#define POINT_LEN 133 /* uncompressed P-521 point */

static CK_FUNCTION_LIST_PTR p11;
static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static CK_OBJECT_CLASS secret_class = CKO_SECRET_KEY;
static CK_KEY_TYPE aes_type = CKK_AES;
static CK_ULONG aes_len = 32;

static int tp_fail(const char *what, CK_RV rv)
{
	fprintf(stderr, "token_part: %s: 0x%lx\n", what, (unsigned long)rv);
	return 1;
}

/* The session of the token labelled label, logged in with the PIN in pin_file. */
static int tp_session(const char *label, const char *pin_file, CK_SESSION_HANDLE *s)
{
	CK_SLOT_ID slots[32];
	CK_ULONG n = 32;
	CK_TOKEN_INFO info;
	char pin[128], want[32];
	FILE *f;
	size_t len;
	CK_RV rv;

	memset(want, ' ', sizeof(want));
	memcpy(want, label, strlen(label) < sizeof(want) ? strlen(label) : sizeof(want));
	if ((rv = p11->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK)
		return tp_fail("C_GetSlotList", rv);
	for (CK_ULONG i = 0; i < n; i++) {
		if (p11->C_GetTokenInfo(slots[i], &info) != CKR_OK ||
		    memcmp(info.label, want, sizeof(want)) != 0)
			continue;
		if ((rv = p11->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
		                             NULL, s)) != CKR_OK)
			return tp_fail("C_OpenSession", rv);
		if ((f = fopen(pin_file, "r")) == NULL)
			return tp_fail("cannot read the PIN file", 0);
		len = fread(pin, 1, sizeof(pin) - 1, f);
		fclose(f);
		while (len > 0 && (pin[len - 1] == '\n' || pin[len - 1] == '\r'))
			len--;
		rv = p11->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)pin, len);
		OPENSSL_cleanse(pin, sizeof(pin));
		if (rv != CKR_OK)
			return tp_fail("C_Login", rv);
		return 0;
	}
	return tp_fail("no token with this label", 0);
}

/* Destroys the session object *h (if any) and checks that it is gone. */
static int tp_destroy(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h)
{
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};
	CK_OBJECT_HANDLE o = *h;
	CK_RV rv;

	if (o == CK_INVALID_HANDLE)
		return 0;
	*h = CK_INVALID_HANDLE;
	if ((rv = p11->C_DestroyObject(s, o)) != CKR_OK)
		return tp_fail("C_DestroyObject", rv);
	if ((rv = p11->C_GetAttributeValue(s, o, &a, 1)) != CKR_OBJECT_HANDLE_INVALID)
		return tp_fail("an object is still there after C_DestroyObject", rv);
	return 0;
}

/* One TokenKeyPart of part to the importer certificate in cert_file, written to out_file. The
 * ephemeral private key opens the part (with the importer certificate, which is public): it
 * is made in the token, never readable, and destroyed with K0 and the KEK after the wrap. */
static int tp_deliver(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE part, const char *cert_file,
                      const char *out_file)
{
	static const uint8_t p521_oid[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23};
	CK_MECHANISM kpg = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_ATTRIBUTE pub_t[] = {{CKA_EC_PARAMS, (void *)p521_oid, sizeof(p521_oid)},
	                        {CKA_TOKEN, &no, sizeof(no)}};
	CK_ATTRIBUTE priv_t[] = {{CKA_TOKEN, &no, sizeof(no)},
	                         {CKA_SENSITIVE, &yes, sizeof(yes)},
	                         {CKA_EXTRACTABLE, &no, sizeof(no)},
	                         {CKA_DERIVE, &yes, sizeof(yes)}};
	CK_ATTRIBUTE k0_t[] = {{CKA_CLASS, &secret_class, sizeof(secret_class)},
	                       {CKA_KEY_TYPE, &aes_type, sizeof(aes_type)},
	                       {CKA_VALUE_LEN, &aes_len, sizeof(aes_len)},
	                       {CKA_TOKEN, &no, sizeof(no)},
	                       {CKA_SENSITIVE, &yes, sizeof(yes)},
	                       {CKA_EXTRACTABLE, &no, sizeof(no)},
	                       {CKA_DERIVE, &yes, sizeof(yes)}};
	CK_ATTRIBUTE kek_t[] = {{CKA_CLASS, &secret_class, sizeof(secret_class)},
	                        {CKA_KEY_TYPE, &aes_type, sizeof(aes_type)},
	                        {CKA_VALUE_LEN, &aes_len, sizeof(aes_len)},
	                        {CKA_TOKEN, &no, sizeof(no)},
	                        {CKA_SENSITIVE, &yes, sizeof(yes)},
	                        {CKA_EXTRACTABLE, &no, sizeof(no)},
	                        {CKA_WRAP, &yes, sizeof(yes)}};
	CK_OBJECT_HANDLE epub = CK_INVALID_HANDLE, epriv = CK_INVALID_HANDLE,
	                 k0 = CK_INVALID_HANDLE, kek = CK_INVALID_HANDLE;
	uint8_t value[256];
	CK_ATTRIBUTE va = {CKA_VALUE, value, sizeof(value)};
	uint8_t ec_point[POINT_LEN + 3], imp[POINT_LEN], id[KY_TOKEN_PART_ID_LEN], info[32],
	    wrapped[64];
	CK_ATTRIBUTE pa = {CKA_EC_POINT, ec_point, sizeof(ec_point)};
	CK_ECDH1_DERIVE_PARAMS ecdh = {CKD_NULL, 0, NULL, POINT_LEN, imp};
	CK_MECHANISM ecdh_m = {CKM_ECDH1_DERIVE, &ecdh, sizeof(ecdh)};
	CK_KEY_DERIVATION_STRING_DATA ecb = {info, sizeof(info)};
	CK_MECHANISM ecb_m = {CKM_AES_ECB_ENCRYPT_DATA, &ecb, sizeof(ecb)};
	CK_MECHANISM kw_m = {CKM_AES_KEY_WRAP, NULL, 0};
	CK_ULONG wlen = sizeof(wrapped);
	const uint8_t *point;
	X509 *cert = NULL;
	EVP_PKEY *eph = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_MD_CTX *md = NULL;
	struct ky_buf der = {0};
	size_t implen = 0;
	FILE *f;
	CK_RV rv;
	int r = 1;

	if ((f = fopen(cert_file, "r")) == NULL)
		return tp_fail("cannot read the importer certificate", 0);
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (cert == NULL ||
	    EVP_PKEY_get_octet_string_param(X509_get0_pubkey(cert), OSSL_PKEY_PARAM_PUB_KEY, imp,
	                                    sizeof(imp), &implen) != 1 ||
	    implen != POINT_LEN) {
		r = tp_fail("importer certificate without a P-521 key", 0);
		goto out;
	}
	if ((rv = p11->C_GenerateKeyPair(s, &kpg, pub_t, 2, priv_t, 4, &epub, &epriv)) != CKR_OK) {
		r = tp_fail("C_GenerateKeyPair", rv);
		goto out;
	}
	if ((rv = p11->C_GetAttributeValue(s, epriv, &va, 1)) != CKR_ATTRIBUTE_SENSITIVE) {
		r = tp_fail("the ephemeral private key's value is not refused as sensitive", rv);
		goto out;
	}
	/* CKA_EC_POINT: the point in a DER OCTET STRING (04 81 85 04 ...). */
	if ((rv = p11->C_GetAttributeValue(s, epub, &pa, 1)) != CKR_OK ||
	    pa.ulValueLen < POINT_LEN) {
		r = tp_fail("C_GetAttributeValue(CKA_EC_POINT)", rv);
		goto out;
	}
	point = ec_point + pa.ulValueLen - POINT_LEN;
	if ((rv = p11->C_DeriveKey(s, &ecdh_m, epriv, k0_t, 7, &k0)) != CKR_OK) {
		r = tp_fail("C_DeriveKey(CKM_ECDH1_DERIVE)", rv);
		goto out;
	}
	if (ky_token_part_recipient(cert, id) != 0 || (md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, "kyok token key part 1", 21) != 1 ||
	    EVP_DigestUpdate(md, id, sizeof(id)) != 1 ||
	    EVP_DigestUpdate(md, point, POINT_LEN) != 1 ||
	    EVP_DigestFinal_ex(md, info, NULL) != 1) {
		r = tp_fail("info", 0);
		goto out;
	}
	if ((rv = p11->C_DeriveKey(s, &ecb_m, k0, kek_t, 7, &kek)) != CKR_OK) {
		r = tp_fail("C_DeriveKey(CKM_AES_ECB_ENCRYPT_DATA)", rv);
		goto out;
	}
	if ((rv = p11->C_WrapKey(s, &kw_m, kek, part, wrapped, &wlen)) != CKR_OK) {
		r = tp_fail("C_WrapKey(CKM_AES_KEY_WRAP)", rv);
		goto out;
	}
	if (tp_destroy(s, &epriv) != 0 || tp_destroy(s, &epub) != 0 || tp_destroy(s, &k0) != 0 ||
	    tp_destroy(s, &kek) != 0) {
		r = 1;
		goto out;
	}
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-521", 0) != 1 ||
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, POINT_LEN) != 1 ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(pctx) != 1 ||
	    EVP_PKEY_fromdata(pctx, &eph, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		r = tp_fail("ephemeral public key", 0);
		goto out;
	}
	if (ky_token_part_encode(id, eph, wrapped, wlen, &der) != 0) {
		r = tp_fail("TokenKeyPart", 0);
		goto out;
	}
	if ((f = fopen(out_file, "wb")) == NULL || fwrite(der.data, 1, der.len, f) != der.len) {
		if (f != NULL)
			fclose(f);
		r = tp_fail("cannot write the output", 0);
		goto out;
	}
	if (fclose(f) != 0) {
		r = tp_fail("cannot write the output", 0);
		goto out;
	}
	r = 0;
out:
	/* On a failure before the wrap's end: the objects made so far go too. */
	(void)tp_destroy(s, &epriv);
	(void)tp_destroy(s, &epub);
	(void)tp_destroy(s, &k0);
	(void)tp_destroy(s, &kek);
	ky_buf_free(&der);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(eph);
	EVP_PKEY_CTX_free(pctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	X509_free(cert);
	return r;
}

int main(int argc, char **argv)
{
	CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR);
	CK_SESSION_HANDLE s;
	CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
	CK_MECHANISM sha = {CKM_SHA256, NULL, 0};
	CK_ATTRIBUTE part_t[] = {{CKA_CLASS, &secret_class, sizeof(secret_class)},
	                         {CKA_KEY_TYPE, &aes_type, sizeof(aes_type)},
	                         {CKA_VALUE_LEN, &aes_len, sizeof(aes_len)},
	                         {CKA_TOKEN, &no, sizeof(no)},
	                         {CKA_SENSITIVE, &yes, sizeof(yes)},
	                         {CKA_EXTRACTABLE, &yes, sizeof(yes)},
	                         {CKA_ENCRYPT, &no, sizeof(no)},
	                         {CKA_WRAP, &no, sizeof(no)},
	                         {CKA_DERIVE, &no, sizeof(no)}};
	CK_OBJECT_HANDLE part;
	uint8_t one = 0x01, vp[32], value[64];
	CK_ULONG vplen = sizeof(vp);
	CK_ATTRIBUTE va = {CKA_VALUE, value, sizeof(value)};
	char hex[2 * sizeof(vp) + 1], out[4096];
	void *lib;
	CK_RV rv;

	if (argc < 6) {
		fprintf(stderr, "usage: token_part MODULE LABEL PIN_FILE OUT IMPORTER...\n");
		return 2;
	}
	if ((lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) == NULL)
		return tp_fail("cannot load the module", 0);
	*(void **)&get_list = dlsym(lib, "C_GetFunctionList");
	if (get_list == NULL || get_list(&p11) != CKR_OK)
		return tp_fail("not a PKCS#11 module", 0);
	if ((rv = p11->C_Initialize(NULL)) != CKR_OK)
		return tp_fail("C_Initialize", rv);
	if (tp_session(argv[2], argv[3], &s) != 0)
		return 1;
	if ((rv = p11->C_GenerateKey(s, &gen, part_t, 9, &part)) != CKR_OK)
		return tp_fail("C_GenerateKey", rv);
	if ((rv = p11->C_GetAttributeValue(s, part, &va, 1)) != CKR_ATTRIBUTE_SENSITIVE)
		return tp_fail("the part's value is not refused as sensitive", rv);
	if ((rv = p11->C_DigestInit(s, &sha)) != CKR_OK ||
	    (rv = p11->C_DigestUpdate(s, &one, 1)) != CKR_OK ||
	    (rv = p11->C_DigestKey(s, part)) != CKR_OK ||
	    (rv = p11->C_DigestFinal(s, vp, &vplen)) != CKR_OK || vplen != sizeof(vp))
		return tp_fail("the VP by C_DigestKey", rv);
	for (int i = 5; i < argc; i++) {
		snprintf(out, sizeof(out), "%s.%d.der", argv[4], i - 4);
		if (tp_deliver(s, part, argv[i], out) != 0)
			return 1;
	}
	ky_hex_encode(vp, sizeof(vp), hex);
	printf("%s\n", hex);
	p11->C_Finalize(NULL);
	return 0;
}
