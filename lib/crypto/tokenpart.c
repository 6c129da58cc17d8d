/* Key parts to units, the form a PKCS#11 token can make without the part leaving it in clear
 * (docs/formats.md, section 5):
 *
 *   TokenKeyPart ::= SEQUENCE {
 *     version     INTEGER (1),
 *     recipient   OCTET STRING (SIZE (32)),  -- SHA-256 of the importer certificate (DER)
 *     originator  SubjectPublicKeyInfo,      -- ephemeral EC public key, P-521
 *     wrappedPart OCTET STRING (SIZE (40)) } -- AES-256 key wrap (RFC 3394) of the part
 *
 *   Z    = ECDH(originator, importer): the x-coordinate, 66 bytes (CKM_ECDH1_DERIVE, CKD_NULL)
 *   K0   = the last 32 bytes of Z (a CKD_NULL derivation to a 32-byte AES key)
 *   info = SHA-256("kyok token key part 1" || recipient || uncompressed originator point)
 *   KEK  = AES-256-ECB(K0, info)                 (CKM_AES_ECB_ENCRYPT_DATA)
 *   wrappedPart = AES-256-KW(KEK, part)          (C_WrapKey, CKM_AES_KEY_WRAP)
 *
 * The signed mk-load command that carries it authenticates it. */
#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"

#define TOKEN_PART_VERSION   1
#define TOKEN_PART_Z_LEN     66 /* P-521 field size */
#define TOKEN_PART_WRAPPED   (KY_MK_LEN + 8)
#define TOKEN_PART_LABEL     "kyok token key part 1"
#define TOKEN_PART_POINT     133 /* uncompressed P-521 point */
#define TOKEN_PART_SPKI      158 /* its SubjectPublicKeyInfo, DER */
#define TOKEN_PART_MAX_BYTES 4096

typedef struct {
	ASN1_INTEGER *version;
	ASN1_OCTET_STRING *recipient;
	X509_PUBKEY *originator;
	ASN1_OCTET_STRING *wrapped;
} KY_TOKEN_PART;

DECLARE_ASN1_FUNCTIONS(KY_TOKEN_PART)

ASN1_SEQUENCE(KY_TOKEN_PART) =
    {
        ASN1_SIMPLE(KY_TOKEN_PART, version, ASN1_INTEGER),
        ASN1_SIMPLE(KY_TOKEN_PART, recipient, ASN1_OCTET_STRING),
        ASN1_SIMPLE(KY_TOKEN_PART, originator, X509_PUBKEY),
        ASN1_SIMPLE(KY_TOKEN_PART, wrapped, ASN1_OCTET_STRING),
} ASN1_SEQUENCE_END(KY_TOKEN_PART)

        IMPLEMENT_ASN1_FUNCTIONS(KY_TOKEN_PART)

            int ky_token_part_recipient(X509 * cert, uint8_t id[KY_TOKEN_PART_ID_LEN])
{
	unsigned int len = 0;

	if (cert == NULL || X509_digest(cert, EVP_sha256(), id, &len) != 1 ||
	    len != KY_TOKEN_PART_ID_LEN) {
		ERR_clear_error();
		return KY_ERR_CRYPTO;
	}
	return 0;
}

/* info = SHA-256(label || recipient || 0x04 || X || Y): the data the KEK is made from. The
 * point is rebuilt from the key's coordinates, so the hash covers the canonical uncompressed
 * encoding whatever bytes the key was read from. A key without P-521 coordinates gives
 * orig_err. */
static int token_part_info(const uint8_t id[KY_TOKEN_PART_ID_LEN], const EVP_PKEY *orig,
                           int orig_err, uint8_t info[32])
{
	int r = KY_ERR_INTERNAL;
	uint8_t point[TOKEN_PART_POINT];
	BIGNUM *x = NULL, *y = NULL;
	EVP_MD_CTX *md = NULL;

	if (EVP_PKEY_get_bn_param(orig, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
	    EVP_PKEY_get_bn_param(orig, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1) {
		r = orig_err;
		goto out;
	}
	point[0] = 0x04;
	if (BN_bn2binpad(x, point + 1, TOKEN_PART_Z_LEN) != TOKEN_PART_Z_LEN ||
	    BN_bn2binpad(y, point + 1 + TOKEN_PART_Z_LEN, TOKEN_PART_Z_LEN) != TOKEN_PART_Z_LEN) {
		r = orig_err;
		goto out;
	}
	if ((md = EVP_MD_CTX_new()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, TOKEN_PART_LABEL, strlen(TOKEN_PART_LABEL)) != 1 ||
	    EVP_DigestUpdate(md, id, KY_TOKEN_PART_ID_LEN) != 1 ||
	    EVP_DigestUpdate(md, point, sizeof(point)) != 1 ||
	    EVP_DigestFinal_ex(md, info, NULL) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(md);
	BN_free(x);
	BN_free(y);
	ERR_clear_error();
	return r;
}

/* KEK = AES-256-ECB(last 32 bytes of ECDH(priv, peer), info). A peer key that does not
 * derive with priv (not on its curve, not a valid point) gives peer_err. Caller cleanses kek. */
static int token_part_kek(EVP_PKEY *priv, EVP_PKEY *peer, int peer_err, const uint8_t info[32],
                          uint8_t kek[32])
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY_CTX *dctx = NULL;
	EVP_CIPHER_CTX *c = NULL;
	uint8_t z[TOKEN_PART_Z_LEN];
	size_t zlen = sizeof(z);
	int n = 0, fin = 0;

	if ((dctx = EVP_PKEY_CTX_new(priv, NULL)) == NULL || EVP_PKEY_derive_init(dctx) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	/* The peer is validated here (EVP_PKEY_public_check): on the curve, not at infinity. */
	if (EVP_PKEY_derive_set_peer(dctx, peer) != 1 || EVP_PKEY_derive(dctx, z, &zlen) != 1 ||
	    zlen != sizeof(z)) {
		r = peer_err;
		goto out;
	}
	if ((c = EVP_CIPHER_CTX_new()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (EVP_EncryptInit_ex(c, EVP_aes_256_ecb(), NULL, z + sizeof(z) - 32, NULL) != 1 ||
	    EVP_CIPHER_CTX_set_padding(c, 0) != 1 || EVP_EncryptUpdate(c, kek, &n, info, 32) != 1 ||
	    EVP_EncryptFinal_ex(c, kek + n, &fin) != 1 || n + fin != 32) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	r = 0;
out:
	OPENSSL_cleanse(z, sizeof(z));
	EVP_CIPHER_CTX_free(c);
	EVP_PKEY_CTX_free(dctx);
	if (r != 0)
		ERR_clear_error();
	return r;
}

/* AES-256 key wrap (RFC 3394, default IV), either way. */
static int token_part_kw(int enc, const uint8_t kek[32], const uint8_t *in, size_t n, uint8_t *out,
                         size_t outlen)
{
	int r = KY_ERR_INTERNAL;
	EVP_CIPHER_CTX *c = NULL;
	int len = 0, fin = 0;

	if ((c = EVP_CIPHER_CTX_new()) == NULL)
		return KY_ERR_NOMEM;
	EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	if (EVP_CipherInit_ex(c, EVP_aes_256_wrap(), NULL, kek, NULL, enc) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if (EVP_CipherUpdate(c, out, &len, in, (int)n) != 1 ||
	    EVP_CipherFinal_ex(c, out + len, &fin) != 1 || (size_t)(len + fin) != outlen) {
		r = enc ? KY_ERR_CRYPTO : KY_ERR_TOKEN_PART_UNWRAP;
		goto out;
	}
	r = 0;
out:
	EVP_CIPHER_CTX_free(c);
	ERR_clear_error();
	return r;
}

int ky_token_part_encode(const uint8_t id[KY_TOKEN_PART_ID_LEN], EVP_PKEY *orig,
                         const uint8_t *wrapped, size_t wlen, struct ky_buf *der)
{
	int r = KY_ERR_INTERNAL;
	KY_TOKEN_PART *tp = NULL;
	unsigned char *p = NULL;
	int len;

	if (id == NULL || orig == NULL || wrapped == NULL || wlen == 0 || der == NULL)
		return KY_ERR_USAGE;
	if ((tp = KY_TOKEN_PART_new()) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (ASN1_INTEGER_set(tp->version, TOKEN_PART_VERSION) != 1 ||
	    ASN1_OCTET_STRING_set(tp->recipient, id, KY_TOKEN_PART_ID_LEN) != 1 ||
	    X509_PUBKEY_set(&tp->originator, orig) != 1 ||
	    ASN1_OCTET_STRING_set(tp->wrapped, wrapped, (int)wlen) != 1) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((len = i2d_KY_TOKEN_PART(tp, &p)) <= 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	if ((r = ky_buf_append(der, p, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_free(p);
	KY_TOKEN_PART_free(tp);
	ERR_clear_error();
	return r;
}

int ky_token_part_seal(const uint8_t part[KY_MK_LEN], X509 *recip_cert, struct ky_buf *der)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *eph = NULL, *peer;
	uint8_t id[KY_TOKEN_PART_ID_LEN], info[32], kek[32], wrapped[TOKEN_PART_WRAPPED];

	if (part == NULL || recip_cert == NULL || der == NULL)
		return KY_ERR_USAGE;
	if ((peer = X509_get0_pubkey(recip_cert)) == NULL || !ky_pkey_is_p521(peer)) {
		r = KY_ERR_USAGE;
		goto out;
	}
	if ((r = ky_token_part_recipient(recip_cert, id)) != 0)
		goto out;
	if ((r = ky_ec_generate(&eph)) != 0)
		goto out;
	if ((r = token_part_info(id, eph, KY_ERR_CRYPTO, info)) != 0)
		goto out;
	if ((r = token_part_kek(eph, peer, KY_ERR_CRYPTO, info, kek)) != 0)
		goto out;
	if ((r = token_part_kw(1, kek, part, KY_MK_LEN, wrapped, sizeof(wrapped))) != 0)
		goto out;
	if ((r = ky_token_part_encode(id, eph, wrapped, sizeof(wrapped), der)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_cleanse(kek, sizeof(kek));
	EVP_PKEY_free(eph);
	ERR_clear_error();
	return r;
}

/* The originator as docs/formats.md writes it, byte for byte: id-ecPublicKey with the
 * namedCurve secp521r1 (no explicit parameters), a BIT STRING with no unused bits holding the
 * uncompressed point (0x04 || X || Y, 133 bytes), that decodes to a valid P-521 key. Anything
 * else (another curve, a compressed, hybrid or infinity point) is KY_ERR_TOKEN_PART_CURVE. */
static int token_part_originator(const X509_PUBKEY *spki, EVP_PKEY **orig)
{
	static const uint8_t head[] = {0x30, 0x81, 0x9b, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86,
	                               0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81,
	                               0x04, 0x00, 0x23, 0x03, 0x81, 0x86, 0x00, 0x04};
	int r = KY_ERR_INTERNAL;
	unsigned char *der = NULL;
	int len;

	*orig = NULL;
	if ((len = i2d_X509_PUBKEY(spki, &der)) != TOKEN_PART_SPKI ||
	    memcmp(der, head, sizeof(head)) != 0) {
		r = KY_ERR_TOKEN_PART_CURVE;
		goto out;
	}
	if ((*orig = X509_PUBKEY_get(spki)) == NULL || !ky_pkey_is_p521(*orig)) {
		r = KY_ERR_TOKEN_PART_CURVE;
		goto out;
	}
	r = 0;
out:
	if (r != 0) {
		EVP_PKEY_free(*orig);
		*orig = NULL;
	}
	OPENSSL_free(der);
	ERR_clear_error();
	return r;
}

/* The offset of the first element inside the outer SEQUENCE of der, whatever its length
 * encoding (checked later, by the full parse): false when der does not start a SEQUENCE. */
static bool token_part_first(const uint8_t *der, size_t derlen, size_t *off)
{
	size_t n;

	if (derlen < 3 || der[0] != 0x30)
		return false;
	if (der[1] <= 0x80) /* short form, or indefinite */
		n = 0;
	else if (der[1] <= 0x84)
		n = der[1] & 0x7f;
	else
		return false;
	if (derlen < 3 + n)
		return false;
	*off = 2 + n;
	return true;
}

bool ky_token_part_is(const uint8_t *der, size_t derlen)
{
	size_t off = 0;

	/* A TokenKeyPart starts with its version, an INTEGER; a CMS ContentInfo with an OID. */
	return der != NULL && token_part_first(der, derlen, &off) && der[off] == V_ASN1_INTEGER;
}

int ky_token_part_open(const uint8_t *der, size_t derlen, EVP_PKEY *key, X509 *cert,
                       uint8_t out[KY_MK_LEN])
{
	int r = KY_ERR_INTERNAL;
	const unsigned char *p = der;
	KY_TOKEN_PART *tp = NULL;
	ASN1_INTEGER *version = NULL;
	EVP_PKEY *orig = NULL;
	unsigned char *re = NULL;
	uint8_t id[KY_TOKEN_PART_ID_LEN], info[32], kek[32];
	size_t off = 0;
	int relen;

	if (der == NULL || derlen == 0 || derlen > TOKEN_PART_MAX_BYTES || key == NULL ||
	    cert == NULL) {
		r = KY_ERR_TOKEN_PART_MALFORMED;
		goto out;
	}
	/* The version first: another version may have another structure after it. */
	if (!token_part_first(der, derlen, &off) || der[off] != V_ASN1_INTEGER) {
		r = KY_ERR_TOKEN_PART_MALFORMED;
		goto out;
	}
	p = der + off;
	if ((version = d2i_ASN1_INTEGER(NULL, &p, (long)(derlen - off))) == NULL) {
		r = KY_ERR_TOKEN_PART_MALFORMED;
		goto out;
	}
	if (ASN1_INTEGER_get(version) != TOKEN_PART_VERSION) {
		r = KY_ERR_TOKEN_PART_VERSION;
		goto out;
	}
	p = der;
	tp = d2i_KY_TOKEN_PART(NULL, &p, (long)derlen);
	if (tp == NULL || p != der + derlen) {
		r = KY_ERR_TOKEN_PART_MALFORMED;
		goto out;
	}
	/* DER only: the parser takes BER too (indefinite or non-minimal lengths), so the
	 * structure must re-encode to exactly the bytes received. */
	if ((relen = i2d_KY_TOKEN_PART(tp, &re)) <= 0 || (size_t)relen != derlen ||
	    memcmp(re, der, derlen) != 0) {
		r = KY_ERR_TOKEN_PART_MALFORMED;
		goto out;
	}
	if (ASN1_STRING_length(tp->recipient) != KY_TOKEN_PART_ID_LEN ||
	    ASN1_STRING_length(tp->wrapped) != TOKEN_PART_WRAPPED) {
		r = KY_ERR_TOKEN_PART_MALFORMED;
		goto out;
	}
	if ((r = ky_token_part_recipient(cert, id)) != 0)
		goto out;
	if (memcmp(ASN1_STRING_get0_data(tp->recipient), id, KY_TOKEN_PART_ID_LEN) != 0) {
		r = KY_ERR_TOKEN_PART_OTHER_UNIT;
		goto out;
	}
	if ((r = token_part_originator(tp->originator, &orig)) != 0)
		goto out;
	if ((r = token_part_info(id, orig, KY_ERR_TOKEN_PART_CURVE, info)) != 0)
		goto out;
	if ((r = token_part_kek(key, orig, KY_ERR_TOKEN_PART_CURVE, info, kek)) != 0)
		goto out;
	if ((r = token_part_kw(0, kek, ASN1_STRING_get0_data(tp->wrapped), TOKEN_PART_WRAPPED, out,
	                       KY_MK_LEN)) != 0) {
		OPENSSL_cleanse(out, KY_MK_LEN);
		goto out;
	}
	r = 0;
out:
	OPENSSL_cleanse(kek, sizeof(kek));
	EVP_PKEY_free(orig);
	ASN1_INTEGER_free(version);
	OPENSSL_free(re);
	KY_TOKEN_PART_free(tp);
	ERR_clear_error();
	return r;
}
