/* Signed commands: CMS SignedData with attached content, one SignerInfo per administrator,
 * signers identified by SKI, ECDSA with SHA-512. Adding a signer keeps the others valid. */
#include <limits.h>
#include <openssl/cms.h>
#include <openssl/pkcs7.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

#define CMS_MAX_BYTES  (16 * 1024 * 1024)
#define CMS_SIGN_FLAGS (CMS_BINARY | CMS_USE_KEYID | CMS_NOSMIMECAP)

/* ---- bounds ----
 *
 * A command is signed by at most one SignerInfo per administrator, carries at most one
 * certificate per signer and names at most one digest algorithm per signer. The counts are
 * read from the DER before OpenSSL decodes anything (decoding a thousand certificates alone
 * takes a second), and copies of a signature are refused on the decoded structure before
 * any verification: a hostile body costs a walk over its bytes and a few comparisons, never
 * a signature check or a digest per copy. A command is DER: indefinite lengths are refused. */

/* Reads one DER header at *p (definite lengths only): tag byte and content length; *p then
 * points at the content. KY_ERR_NOT_COMMAND when it does not fit before end. */
static int cms_der_header(const uint8_t **p, const uint8_t *end, uint8_t *tag, size_t *len)
{
	const uint8_t *q = *p;
	size_t n = 0, k;

	if (end - q < 2 || (q[0] & 0x1f) == 0x1f)
		return KY_ERR_NOT_COMMAND;
	*tag = *q++;
	if (*q < 0x80) {
		n = *q++;
	} else {
		k = *q++ & 0x7f;
		if (k == 0 || k > 4 || (size_t)(end - q) < k)
			return KY_ERR_NOT_COMMAND;
		while (k-- > 0)
			n = (n << 8) | *q++;
	}
	if ((size_t)(end - q) < n)
		return KY_ERR_NOT_COMMAND;
	*p = q;
	*len = n;
	return 0;
}

/* Number of elements of the constructed value [p, p + len), or -1 when one is not DER. */
static int cms_der_count(const uint8_t *p, size_t len)
{
	const uint8_t *end = p + len;
	uint8_t tag;
	size_t n;
	int count = 0;

	while (p < end) {
		if (cms_der_header(&p, end, &tag, &n) != 0)
			return -1;
		p += n;
		count++;
	}
	return count;
}

/* Counts digestAlgorithms, certificates and SignerInfos of a DER ContentInfo holding
 * SignedData, before it is decoded:
 *   ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT SignedData }
 *   SignedData ::= SEQUENCE { version INTEGER, digestAlgorithms SET, encapContentInfo
 *     SEQUENCE, certificates [0] IMPLICIT SET OPTIONAL, crls [1] IMPLICIT SET OPTIONAL,
 *     signerInfos SET } */
static int cms_der_bounds(const uint8_t *der, size_t n)
{
	const uint8_t *p = der, *end = der + n;
	uint8_t tag;
	size_t len;
	int digests = -1, certs = 0, signers = -1;

	if (cms_der_header(&p, end, &tag, &len) != 0 || tag != 0x30)
		return KY_ERR_NOT_COMMAND;
	end = p + len;
	if (cms_der_header(&p, end, &tag, &len) != 0 || tag != 0x06)
		return KY_ERR_NOT_COMMAND;
	p += len;
	if (cms_der_header(&p, end, &tag, &len) != 0 || tag != 0xa0 ||
	    cms_der_header(&p, end, &tag, &len) != 0 || tag != 0x30)
		return KY_ERR_NOT_COMMAND;
	end = p + len;
	for (int i = 0; p < end; i++) {
		if (cms_der_header(&p, end, &tag, &len) != 0)
			return KY_ERR_NOT_COMMAND;
		if (i == 1 && tag == 0x31)
			digests = cms_der_count(p, len);
		else if (tag == 0xa0)
			certs = cms_der_count(p, len);
		else if (tag == 0x31)
			signers = cms_der_count(p, len);
		p += len;
	}
	if (digests < 0 || certs < 0 || signers < 0)
		return KY_ERR_NOT_COMMAND;
	if (signers > KY_MAX_ADMINS)
		return KY_ERR_TOO_MANY_SIGNATURES;
	if (certs > KY_MAX_ADMINS)
		return KY_ERR_TOO_MANY_CERTIFICATES;
	if (digests > KY_MAX_ADMINS)
		return KY_ERR_TOO_MANY_DIGESTS;
	return 0;
}

/* 1 when two SignerInfos of sis carry the same signature value. */
static int cms_has_duplicate_signature(STACK_OF(CMS_SignerInfo) * sis)
{
	int n = sk_CMS_SignerInfo_num(sis);

	for (int i = 0; i < n; i++) {
		ASN1_OCTET_STRING *a =
		    CMS_SignerInfo_get0_signature(sk_CMS_SignerInfo_value(sis, i));
		for (int j = i + 1; j < n; j++) {
			ASN1_OCTET_STRING *b =
			    CMS_SignerInfo_get0_signature(sk_CMS_SignerInfo_value(sis, j));
			if (a != NULL && b != NULL && ASN1_STRING_length(a) > 0 &&
			    ASN1_OCTET_STRING_cmp(a, b) == 0)
				return 1;
		}
	}
	return 0;
}

static int cms_from_der(const uint8_t *der, size_t n, CMS_ContentInfo **out)
{
	const unsigned char *p = der;
	CMS_ContentInfo *cms;
	int r = KY_ERR_INTERNAL;

	if (der == NULL || n == 0 || n > CMS_MAX_BYTES)
		return KY_ERR_NOT_COMMAND;
	if ((r = cms_der_bounds(der, n)) != 0)
		return r;
	cms = d2i_CMS_ContentInfo(NULL, &p, (long)n);
	if (cms == NULL || p != der + n || OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed ||
	    OBJ_obj2nid(CMS_get0_eContentType(cms)) != NID_pkcs7_data) {
		CMS_ContentInfo_free(cms);
		ERR_clear_error();
		return KY_ERR_NOT_COMMAND;
	}
	if (cms_has_duplicate_signature(CMS_get0_SignerInfos(cms))) {
		CMS_ContentInfo_free(cms);
		return KY_ERR_DUPLICATE_SIGNATURE;
	}
	*out = cms; /* transferred */
	return 0;
}

static int cms_to_der(CMS_ContentInfo *cms, struct ky_buf *der)
{
	int r = KY_ERR_INTERNAL;
	unsigned char *p = NULL;
	int len = i2d_CMS_ContentInfo(cms, &p);

	if (len <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(der, p, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_free(p);
	return r;
}

/* The attached content, or NULL when detached. */
static const ASN1_OCTET_STRING *cms_content(CMS_ContentInfo *cms)
{
	ASN1_OCTET_STRING **pos = CMS_get0_content(cms);

	return pos != NULL ? *pos : NULL;
}

int ky_cms_unsigned(const void *content, size_t n, struct ky_buf *der)
{
	int r = KY_ERR_INTERNAL;
	CMS_ContentInfo *cms = NULL;
	ASN1_OCTET_STRING *os = NULL, **pos;

	if (n > CMS_MAX_BYTES)
		return KY_ERR_TOO_LARGE;
	/* CMS_final needs a digest algorithm, which only a signer brings: with none yet, the
	 * content goes straight into the encapsulated content slot. */
	if ((cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_BINARY | CMS_PARTIAL)) == NULL ||
	    (pos = CMS_get0_content(cms)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((os = ASN1_OCTET_STRING_new()) == NULL ||
	    ASN1_OCTET_STRING_set(os, content, (int)n) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	ASN1_OCTET_STRING_free(*pos);
	*pos = os;
	os = NULL; /* transferred */
	if ((r = cms_to_der(cms, der)) != 0)
		goto out;
	r = 0;
out:
	ASN1_OCTET_STRING_free(os);
	CMS_ContentInfo_free(cms);
	if (r != 0)
		ERR_clear_error();
	return r;
}

/* 1 when cert is already among the certificates of cms. */
static int cms_has_cert(CMS_ContentInfo *cms, X509 *cert)
{
	STACK_OF(X509) *certs = CMS_get1_certs(cms);
	int found = 0;

	for (int i = 0; i < sk_X509_num(certs) && !found; i++)
		found = X509_cmp(sk_X509_value(certs, i), cert) == 0;
	sk_X509_pop_free(certs, X509_free);
	return found;
}

/* First signature: a fresh SignedData over the content, carrying over embedded certs. */
static int cms_sign_fresh(CMS_ContentInfo *old, X509 *cert, EVP_PKEY *key, CMS_ContentInfo **out)
{
	int r = KY_ERR_INTERNAL;
	const ASN1_OCTET_STRING *content = cms_content(old);
	STACK_OF(X509) *certs = CMS_get1_certs(old);
	unsigned int flags = CMS_SIGN_FLAGS;
	CMS_ContentInfo *cms = NULL;
	BIO *in = NULL;

	if (content == NULL) {
		r = KY_ERR_NOT_COMMAND;
		goto out;
	}
	if ((in = BIO_new_mem_buf(ASN1_STRING_length(content) > 0 ? ASN1_STRING_get0_data(content)
	                                                          : (const unsigned char *)"",
	                          ASN1_STRING_length(content))) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((cms = CMS_sign(NULL, NULL, certs, NULL, CMS_BINARY | CMS_PARTIAL)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (cms_has_cert(cms, cert))
		flags |= CMS_NOCERTS;
	if (CMS_add1_signer(cms, cert, key, EVP_sha512(), flags) == NULL ||
	    CMS_final(cms, in, NULL, CMS_BINARY) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	*out = cms;
	cms = NULL; /* transferred */
	r = 0;
out:
	CMS_ContentInfo_free(cms);
	BIO_free(in);
	sk_X509_pop_free(certs, X509_free);
	return r;
}

/* Reads the whole content through the digest BIOs of cms. */
static int cms_digest_content(CMS_ContentInfo *cms, BIO **chain)
{
	uint8_t buf[4096];
	BIO *bio = CMS_dataInit(cms, NULL);
	int got;

	if (bio == NULL)
		return KY_ERR_BAD_SIGNATURE;
	while ((got = BIO_read(bio, buf, sizeof(buf))) > 0)
		;
	if (got < 0) {
		BIO_free_all(bio);
		return KY_ERR_BAD_SIGNATURE;
	}
	*chain = bio; /* transferred */
	return 0;
}

/* Every SignerInfo's message digest matches the content. Checked before a resign reuses one
 * of them: otherwise a content swapped under existing signatures would be signed blind, the
 * new signature covering the digest of content the signer never saw. */
static int cms_check_digests(CMS_ContentInfo *cms)
{
	int r = KY_ERR_INTERNAL;
	STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
	BIO *chain = NULL;

	if ((r = cms_digest_content(cms, &chain)) != 0)
		return r;
	for (int i = 0; i < sk_CMS_SignerInfo_num(sis); i++) {
		CMS_SignerInfo *si = sk_CMS_SignerInfo_value(sis, i);
		if (CMS_signed_get_attr_count(si) <= 0 ||
		    CMS_SignerInfo_verify_content(si, chain) != 1) {
			r = KY_ERR_BAD_SIGNATURE;
			goto out;
		}
	}
	r = 0;
out:
	BIO_free_all(chain);
	return r;
}

static int cms_check_new_signer(const struct ky_buf *der, X509 *cert);

int ky_cms_add_signer(struct ky_buf *der, X509 *cert, EVP_PKEY *key)
{
	int r = KY_ERR_INTERNAL;
	CMS_ContentInfo *cms = NULL, *fresh = NULL;
	struct ky_buf out = {0};
	unsigned int flags = CMS_SIGN_FLAGS | CMS_REUSE_DIGEST;
	uint8_t ski[KY_SKI_LEN];

	if ((r = cms_from_der(der->data, der->len, &cms)) != 0)
		goto out;
	if (cms_content(cms) == NULL) {
		r = KY_ERR_NOT_COMMAND;
		goto out;
	}
	/* The signer id is the certificate's SKI: it must be the one units compute. */
	if ((r = ky_cert_ski(cert, ski)) != 0)
		goto out;
	if (sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)) >= KY_MAX_ADMINS) {
		r = KY_ERR_TOO_MANY_SIGNATURES;
		goto out;
	}
	if (sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)) <= 0) {
		if ((r = cms_sign_fresh(cms, cert, key, &fresh)) != 0)
			goto out;
		CMS_ContentInfo_free(cms);
		cms = fresh;
		fresh = NULL; /* transferred */
	} else {
		/* Resign: the new SignerInfo takes the message digest of an existing SHA-512
		 * signer, so the content is not re-encoded and earlier signatures stay valid. */
		if ((r = cms_check_digests(cms)) != 0)
			goto out;
		if (cms_has_cert(cms, cert))
			flags |= CMS_NOCERTS;
		if (CMS_add1_signer(cms, cert, key, EVP_sha512(), flags) == NULL) {
			r = KY_ERR_CRYPTO;
			goto out;
		}
	}
	if ((r = cms_to_der(cms, &out)) != 0)
		goto out;
	/* OpenSSL 3.0's ECDSA can report success for a signature it failed to encode (out of
	 * memory): the new signature is checked before the command is replaced. */
	if ((r = cms_check_new_signer(&out, cert)) != 0)
		goto out;
	ky_buf_free(der);
	*der = out;
	out = (struct ky_buf){0}; /* transferred */
	r = 0;
out:
	ky_buf_free(&out);
	CMS_ContentInfo_free(fresh);
	CMS_ContentInfo_free(cms);
	if (r != 0)
		ERR_clear_error();
	return r;
}

/* The DER of si's signed attributes as a SET OF, which is what its signature covers.
 * PKCS7_ATTR_SIGN is the same sorted SET OF Attribute as CMS's own template. */
static int cms_signed_attrs_der(CMS_SignerInfo *si, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	STACK_OF(X509_ATTRIBUTE) *attrs = sk_X509_ATTRIBUTE_new_null();
	unsigned char *der = NULL;
	int len;

	if (attrs == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	for (int i = 0; i < CMS_signed_get_attr_count(si); i++)
		if (sk_X509_ATTRIBUTE_push(attrs, CMS_signed_get_attr(si, i)) <= 0) {
			r = KY_ERR_CRYPTO;
			goto out;
		}
	if ((len = ASN1_item_i2d((ASN1_VALUE *)attrs, &der, ASN1_ITEM_rptr(PKCS7_ATTR_SIGN))) <=
	    0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(out, der, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_free(der);
	sk_X509_ATTRIBUTE_free(attrs); /* the attributes stay with si */
	return r;
}

/* Checks that the signer with cert's SKI in der verifies under cert's key. */
static int cms_check_new_signer(const struct ky_buf *der, X509 *cert)
{
	int r = KY_ERR_INTERNAL;
	struct ky_cms_signed *sd = NULL;
	uint8_t ski[KY_SKI_LEN];
	size_t i, n;

	if ((r = ky_cert_ski(cert, ski)) != 0)
		return r;
	if ((r = ky_cms_signed_parse(der->data, der->len, &sd)) != 0)
		goto out;
	n = ky_cms_signed_nsigners(sd);
	for (i = 0; i < n; i++)
		if (memcmp(ky_cms_signed_signer(sd, i)->ski, ski, KY_SKI_LEN) == 0)
			break;
	if (i == n) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	if ((r = ky_cms_signed_verify(sd, i, X509_get0_pubkey(cert))) != 0)
		goto out;
	r = 0;
out:
	ky_cms_signed_free(sd);
	return r;
}

int ky_cms_add_signer_ext(struct ky_buf *der, X509 *cert, const struct ky_ext_signer *s)
{
	int r = KY_ERR_INTERNAL;
	CMS_ContentInfo *cms = NULL;
	CMS_SignerInfo *si;
	const ASN1_OCTET_STRING *content;
	ASN1_OCTET_STRING *sigval;
	ASN1_TIME *now = NULL;
	struct ky_buf attrs = {0}, sig = {0}, out = {0};
	unsigned int flags = CMS_SIGN_FLAGS | CMS_PARTIAL;
	uint8_t ski[KY_SKI_LEN], md[64], amd[64];

	if ((r = cms_from_der(der->data, der->len, &cms)) != 0)
		goto out;
	if ((content = cms_content(cms)) == NULL) {
		r = KY_ERR_NOT_COMMAND;
		goto out;
	}
	if ((r = ky_cert_ski(cert, ski)) != 0)
		goto out;
	if (sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)) >= KY_MAX_ADMINS) {
		r = KY_ERR_TOO_MANY_SIGNATURES;
		goto out;
	}
	if (sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)) > 0 &&
	    (r = cms_check_digests(cms)) != 0)
		goto out;
	if (EVP_PKEY_eq(X509_get0_pubkey(cert), s->pub) != 1) {
		r = KY_ERR_TAMPERED;
		goto out;
	}
	if (cms_has_cert(cms, cert))
		flags |= CMS_NOCERTS;
	/* CMS_PARTIAL: the SignerInfo is set up (signer id, algorithms, certificate) but not
	 * signed; the public key is enough for that. The attributes and the signature follow. */
	if ((si = CMS_add1_signer(cms, cert, s->pub, EVP_sha512(), flags)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_Digest(ASN1_STRING_get0_data(content), (size_t)ASN1_STRING_length(content), md,
	               NULL, EVP_sha512(), NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((now = X509_gmtime_adj(NULL, 0)) == NULL) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (CMS_signed_add1_attr_by_NID(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
	                                OBJ_nid2obj(NID_pkcs7_data), -1) != 1 ||
	    CMS_signed_add1_attr_by_NID(si, NID_pkcs9_signingTime, ASN1_STRING_type(now), now,
	                                -1) != 1 ||
	    CMS_signed_add1_attr_by_NID(si, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING, md,
	                                (int)sizeof(md)) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = cms_signed_attrs_der(si, &attrs)) != 0)
		goto out;
	if (EVP_Digest(attrs.data, attrs.len, amd, NULL, EVP_sha512(), NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = s->sign(s->arg, amd, sizeof(amd), &sig)) != 0)
		goto out;
	if ((sigval = CMS_SignerInfo_get0_signature(si)) == NULL || sig.len > INT_MAX ||
	    ASN1_OCTET_STRING_set(sigval, sig.data, (int)sig.len) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = cms_to_der(cms, &out)) != 0)
		goto out;
	/* What was built here by hand must verify as a unit will verify it. */
	if ((r = cms_check_new_signer(&out, cert)) != 0) {
		r = r == KY_ERR_BAD_SIGNATURE ? KY_ERR_TOKEN_SIGNATURE : r;
		goto out;
	}
	ky_buf_free(der);
	*der = out;
	out = (struct ky_buf){0}; /* transferred */
	r = 0;
out:
	ky_buf_free(&out);
	ky_buf_free(&sig);
	ky_buf_free(&attrs);
	ASN1_TIME_free(now);
	CMS_ContentInfo_free(cms);
	if (r != 0)
		ERR_clear_error();
	return r;
}

/* Signer id of si as a 32-byte SKI; KY_ERR_BAD_COMMAND otherwise. */
static int cms_signer_ski(CMS_SignerInfo *si, uint8_t ski[KY_SKI_LEN])
{
	ASN1_OCTET_STRING *keyid = NULL;
	X509_NAME *issuer = NULL;
	ASN1_INTEGER *sno = NULL;

	if (CMS_SignerInfo_get0_signer_id(si, &keyid, &issuer, &sno) != 1 || keyid == NULL ||
	    ASN1_STRING_length(keyid) != KY_SKI_LEN)
		return KY_ERR_BAD_COMMAND;
	memcpy(ski, ASN1_STRING_get0_data(keyid), KY_SKI_LEN);
	return 0;
}

/* CN of the embedded certificate whose SKI is ski; "" when none fits. */
static void cms_signer_name(STACK_OF(X509) * certs, const uint8_t ski[KY_SKI_LEN], char *name,
                            size_t len)
{
	uint8_t got[KY_SKI_LEN];

	name[0] = '\0';
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *c = sk_X509_value(certs, i);
		if (ky_cert_ski(c, got) != 0 || memcmp(got, ski, KY_SKI_LEN) != 0)
			continue;
		if (ky_cert_cn(c, name, len) != 0)
			name[0] = '\0';
		return;
	}
}

/* A SignedData decoded once: content and signer ids read, signatures checked one by one
 * against keys the caller trusts. The content digests are computed once, on first need. */
struct ky_cms_signed {
	CMS_ContentInfo *cms;
	struct ky_buf content;
	struct ky_cms_signer *signers;
	size_t nsigners;
	BIO *chain; /* digest BIOs that read the whole content, NULL until first verify */
};

void ky_cms_signed_free(struct ky_cms_signed *sd)
{
	if (sd == NULL)
		return;
	BIO_free_all(sd->chain);
	CMS_ContentInfo_free(sd->cms);
	ky_buf_free(&sd->content);
	free(sd->signers);
	free(sd);
}

int ky_cms_signed_parse(const uint8_t *der, size_t n, struct ky_cms_signed **out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_cms_signed *sd = NULL;
	STACK_OF(CMS_SignerInfo) * sis;
	STACK_OF(X509) *certs = NULL;
	const ASN1_OCTET_STRING *data;
	int count;

	*out = NULL;
	if ((sd = calloc(1, sizeof(*sd))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if ((r = cms_from_der(der, n, &sd->cms)) != 0)
		goto out;
	if ((data = cms_content(sd->cms)) == NULL) {
		r = KY_ERR_NOT_COMMAND;
		goto out;
	}
	if ((r = ky_buf_append(&sd->content, ASN1_STRING_get0_data(data),
	                       (size_t)ASN1_STRING_length(data))) != 0)
		goto out;
	sis = CMS_get0_SignerInfos(sd->cms);
	count = sis != NULL ? sk_CMS_SignerInfo_num(sis) : 0;
	if (count < 0)
		count = 0;
	if ((sd->signers = calloc((size_t)count + 1, sizeof(*sd->signers))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	certs = CMS_get1_certs(sd->cms);
	for (int i = 0; i < count; i++) {
		if ((r = cms_signer_ski(sk_CMS_SignerInfo_value(sis, i), sd->signers[i].ski)) != 0)
			goto out;
		cms_signer_name(certs, sd->signers[i].ski, sd->signers[i].name,
		                sizeof(sd->signers[i].name));
	}
	sd->nsigners = (size_t)count;
	*out = sd;
	sd = NULL; /* transferred */
	r = 0;
out:
	sk_X509_pop_free(certs, X509_free);
	ky_cms_signed_free(sd);
	ERR_clear_error();
	return r;
}

const uint8_t *ky_cms_signed_content(const struct ky_cms_signed *sd, size_t *len)
{
	*len = sd->content.len;
	return sd->content.data;
}

size_t ky_cms_signed_nsigners(const struct ky_cms_signed *sd)
{
	return sd->nsigners;
}

const struct ky_cms_signer *ky_cms_signed_signer(const struct ky_cms_signed *sd, size_t i)
{
	return i < sd->nsigners ? &sd->signers[i] : NULL;
}

int ky_cms_signed_verify(struct ky_cms_signed *sd, size_t i, EVP_PKEY *pub)
{
	int r = KY_ERR_INTERNAL;
	STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(sd->cms);
	CMS_SignerInfo *si;
	X509_ALGOR *digest = NULL;
	X509 *holder = NULL;
	uint8_t want[KY_SKI_LEN];

	if (pub == NULL || sis == NULL || i >= sd->nsigners ||
	    i >= (size_t)sk_CMS_SignerInfo_num(sis)) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	si = sk_CMS_SignerInfo_value(sis, (int)i);
	/* The signer must name this key, use SHA-512 and sign attributes (content type and
	 * message digest): a SignerInfo without them would sign the content directly. */
	if (ky_ski(pub, want) != 0 || memcmp(want, sd->signers[i].ski, KY_SKI_LEN) != 0) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	CMS_SignerInfo_get0_algs(si, NULL, NULL, &digest, NULL);
	if (digest == NULL || OBJ_obj2nid(digest->algorithm) != NID_sha512) {
		r = KY_ERR_WRONG_DIGEST;
		goto out;
	}
	if (CMS_signed_get_attr_count(si) <= 0) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	/* The SignerInfo takes its public key from a certificate: give it a bare holder of the
	 * caller's key, so that nothing embedded in the command is ever trusted. */
	if ((holder = X509_new()) == NULL || X509_set_pubkey(holder, pub) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	CMS_SignerInfo_set1_signer_cert(si, holder);
	if (CMS_SignerInfo_verify(si) != 1) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	if (sd->chain == NULL && (r = cms_digest_content(sd->cms, &sd->chain)) != 0)
		goto out;
	if (CMS_SignerInfo_verify_content(si, sd->chain) != 1) {
		r = KY_ERR_BAD_SIGNATURE;
		goto out;
	}
	r = 0;
out:
	X509_free(holder);
	ERR_clear_error();
	return r;
}

int ky_cms_parse(const uint8_t *der, size_t n, struct ky_buf *content,
                 struct ky_cms_signer **signers, size_t *nsigners)
{
	int r = KY_ERR_INTERNAL;
	struct ky_cms_signed *sd = NULL;

	if ((r = ky_cms_signed_parse(der, n, &sd)) != 0)
		goto out;
	*content = sd->content;
	sd->content = (struct ky_buf){0}; /* transferred */
	*signers = sd->signers;
	sd->signers = NULL; /* transferred */
	*nsigners = sd->nsigners;
	r = 0;
out:
	ky_cms_signed_free(sd);
	return r;
}
