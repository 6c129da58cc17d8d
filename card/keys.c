/* What an EP11 card holds and does with it: one administrator signature key (ECDSA P-521)
 * that signs SHA-512 digests, up to KC_MAX_PARTS master key parts made on the card, each
 * leaving it only inside a CMS envelope to a crypto unit's importer certificate that chains
 * to the anchor certificate registered on the card. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string.h>

#include "card/internal.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define CERT_MAX 4096

uint16_t kc_cmd_gen_sigkey(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	EVP_PKEY *key = NULL;
	uint16_t sw;

	if ((sw = kc_need_ep11_pin(c)) != SW_OK)
		goto out;
	if (c->st.sigkey != NULL) { /* one key per card: it is never replaced */
		sw = SW_CONDITIONS;
		goto out;
	}
	if (ky_ec_generate(&key) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	c->st.sigkey = key;
	key = NULL; /* transferred */
	if ((sw = kc_commit(c)) != SW_OK)
		goto out;
	sw = kc_cmd_get_sigkey(c, a, o);
out:
	EVP_PKEY_free(key);
	return sw;
}

uint16_t kc_cmd_get_sigkey(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct ky_buf der = {0};
	uint16_t sw = SW_CONDITIONS;

	(void)a;
	if (c->st.type != KC_TYPE_EP11) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (c->st.sigkey == NULL) {
		sw = SW_NO_DATA;
		goto out;
	}
	if (kc_pub_der(c->st.sigkey, &der) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	sw = kc_out_buf(o, &der);
out:
	ky_buf_free(&der);
	return sw;
}

uint16_t kc_cmd_sign(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct ky_buf sig = {0};
	uint16_t sw;

	if ((sw = kc_need_ep11_pin(c)) != SW_OK)
		goto out;
	if (a->n != KC_DIGEST_LEN) {
		sw = SW_WRONG_LENGTH;
		goto out;
	}
	if (c->st.sigkey == NULL) {
		sw = SW_NO_DATA;
		goto out;
	}
	if (kc_sign_digest(c->st.sigkey, a->data, &sig) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	sw = kc_out_buf(o, &sig);
out:
	ky_buf_free(&sig);
	return sw;
}

static bool desc_printable(const uint8_t *p, size_t n)
{
	size_t i;

	if (n == 0 || n > KC_DESC_MAX)
		return false;
	for (i = 0; i < n; i++) {
		if (p[i] < 0x20 || p[i] > 0x7E)
			return false;
	}
	return true;
}

/* data = the description. Answers the part's index and VP. */
uint16_t kc_cmd_gen_part(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct kc_part *kp;
	uint8_t head[1 + KY_VP_LEN];
	uint16_t sw;

	if ((sw = kc_need_ep11_pin(c)) != SW_OK)
		return sw;
	if (!desc_printable(a->data, a->n))
		return SW_WRONG_DATA;
	/* A part is bound to the anchor registered when it is made: SET ANCHOR first. */
	if (c->st.anchor.len == 0)
		return SW_CONDITIONS;
	if (c->st.nparts == KC_MAX_PARTS)
		return SW_NO_MEMORY;
	kp = &c->st.parts[c->st.nparts];
	if (ky_random(kp->part, KY_MK_LEN) != 0 || ky_vp(kp->part, head + 1) != 0) {
		OPENSSL_cleanse(kp, sizeof(*kp));
		return SW_CONDITIONS;
	}
	memcpy(kp->desc, a->data, a->n);
	kp->desc[a->n] = '\0';
	head[0] = (uint8_t)c->st.nparts;
	c->st.nparts++;
	if ((sw = kc_commit(c)) != SW_OK)
		return sw;
	return kc_out_put(o, head, sizeof(head));
}

static uint16_t part_at(const struct kc_card *c, uint8_t p1, const struct kc_part **kp)
{
	if (c->st.type != KC_TYPE_EP11)
		return SW_CONDITIONS;
	if (p1 >= c->st.nparts)
		return SW_NO_DATA;
	*kp = &c->st.parts[p1];
	return SW_OK;
}

/* P1 = index. Answers VP and description: neither is secret, no PIN needed. */
uint16_t kc_cmd_part_info(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	const struct kc_part *kp = NULL;
	uint8_t vp[KY_VP_LEN];
	uint16_t sw;

	if ((sw = part_at(c, a->p1, &kp)) != SW_OK)
		return sw;
	if (ky_vp(kp->part, vp) != 0)
		return SW_CONDITIONS;
	if ((sw = kc_out_put(o, vp, sizeof(vp))) != SW_OK)
		return sw;
	return kc_out_put(o, kp->desc, strlen(kp->desc));
}

static int cert_from_der(const uint8_t *p, size_t n, X509 **out)
{
	const unsigned char *q = p;
	X509 *x;

	if (n == 0 || n > CERT_MAX)
		return KY_ERR_MALFORMED;
	x = d2i_X509(NULL, &q, (long)n);
	if (x == NULL || q != p + n) {
		X509_free(x);
		return KY_ERR_MALFORMED;
	}
	*out = x; /* transferred */
	return 0;
}

/* P1 = index; data = fields(importer certificate, identity certificate), both DER. The card
 * encrypts only to an importer that chains identity -> the registered anchor. */
uint16_t kc_cmd_envelope(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	const struct kc_part *kp = NULL;
	struct kc_field f[2];
	struct ky_buf env = {0};
	X509 *importer = NULL, *identity = NULL, *anchor = NULL;
	uint16_t sw;

	if ((sw = kc_need_ep11_pin(c)) != SW_OK)
		goto out;
	if ((sw = part_at(c, a->p1, &kp)) != SW_OK)
		goto out;
	if (c->st.anchor.len == 0 ||
	    cert_from_der(c->st.anchor.data, c->st.anchor.len, &anchor) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (!kc_fields_parse(a->data, a->n, f, 2) ||
	    cert_from_der(f[0].p, f[0].n, &importer) != 0 ||
	    cert_from_der(f[1].p, f[1].n, &identity) != 0) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (ky_cert_chain_verify(importer, identity, anchor) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (ky_envelope_seal(kp->part, KY_MK_LEN, importer, &env) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	sw = kc_out_buf(o, &env);
out:
	X509_free(importer);
	X509_free(identity);
	X509_free(anchor);
	ky_buf_free(&env);
	return sw;
}

/* data = the anchor certificate (DER, self-signed, P-521). Answers SHA-256 of its DER, for
 * the holder to compare with the operator's published fingerprint. */
uint16_t kc_cmd_set_anchor(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct ky_buf der = {0};
	X509 *cert = NULL;
	EVP_PKEY *pub;
	uint8_t fp[32];
	uint16_t sw;

	if ((sw = kc_need_ep11_pin(c)) != SW_OK)
		goto out;
	if (cert_from_der(a->data, a->n, &cert) != 0 || (pub = X509_get0_pubkey(cert)) == NULL ||
	    !ky_pkey_is_p521(pub) || ky_cert_verify_by(cert, pub) != 0 ||
	    X509_check_ca(cert) == 0) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (ky_buf_append(&der, a->data, a->n) != 0 ||
	    EVP_Digest(a->data, a->n, fp, NULL, EVP_sha256(), NULL) != 1) {
		sw = SW_CONDITIONS;
		goto out;
	}
	/* The parts on the card are bound to the anchor they were made under: it cannot be
	 * replaced while the card holds one, so nobody with the PIN (or with a card left
	 * verified) can have a part enveloped to an importer of their own making. The same
	 * anchor again is answered without a write. */
	if (c->st.anchor.len > 0 &&
	    (c->st.anchor.len != a->n || memcmp(c->st.anchor.data, a->data, a->n) != 0)) {
		if (c->st.nparts > 0) {
			sw = SW_CONDITIONS;
			goto out;
		}
	} else if (c->st.anchor.len > 0) {
		sw = kc_out_put(o, fp, sizeof(fp));
		goto out;
	}
	ky_buf_free(&c->st.anchor);
	c->st.anchor = der;
	memset(&der, 0, sizeof(der)); /* transferred */
	if ((sw = kc_commit(c)) != SW_OK)
		goto out;
	sw = kc_out_put(o, fp, sizeof(fp));
out:
	X509_free(cert);
	ky_buf_free(&der);
	return sw;
}
