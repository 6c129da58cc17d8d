/* Zones: a CA card makes a zone (its zone key), enrols EP11 cards by certifying their device
 * keys, backs itself up to a blank card and unblocks EP11 cards of its zone; EP11 cards copy
 * their contents to EP11 cards of the same zone. Every card-to-card secret travels under a
 * key only the two cards' device keys can derive (docs/cards.md, "Card to card"). */
#include <openssl/crypto.h>
#include <string.h>

#include "card/internal.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define INS_COPY_BEGIN        0x18
#define INS_UNBLOCK_CHALLENGE 0x1E
#define COPY_INFO_EP11        "kyok-card copy v2 ep11 contents"
#define COPY_INFO_CA          "kyok-card copy v1 ca zone key"
#define UNBLOCK_LABEL         "kyok-card unblock v1"

static bool pin_len_ok(const struct kc_field *f)
{
	return f->n >= KC_PIN_MIN && f->n <= KC_PIN_MAX;
}

/* A fresh challenge, kept in RAM until used or the card is reset. */
static uint16_t nonce_give(struct kc_card *c, uint8_t ins)
{
	if (ky_random(c->nonce, KC_NONCE_LEN) != 0)
		return SW_CONDITIONS;
	c->nonce_set = true;
	c->nonce_ins = ins;
	c->nonce_type = c->st.type;
	return SW_OK;
}

/* Takes the challenge given by ins to the card as it is now (a card enrolled since is another
 * card): once only, whatever comes of the command. */
static bool nonce_take(struct kc_card *c, uint8_t ins, uint8_t nonce[KC_NONCE_LEN])
{
	bool ok = c->nonce_set && c->nonce_ins == ins && c->nonce_type == c->st.type;

	memcpy(nonce, c->nonce, KC_NONCE_LEN);
	OPENSSL_cleanse(c->nonce, KC_NONCE_LEN);
	c->nonce_set = false;
	return ok;
}

/* Checks a zone certificate of role; SW_CONDITIONS when it is sound but of another zone
 * than zone (when zone is not NULL), SW_WRONG_DATA when it is not sound. */
static uint16_t zone_cert_of(const struct kc_field *f, uint8_t role, EVP_PKEY *zone,
                             EVP_PKEY **device)
{
	EVP_PKEY *z = NULL;
	uint16_t sw = SW_WRONG_DATA;

	if (kc_zone_cert_check(f->p, f->n, role, &z, device) != 0) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (zone != NULL && !kc_pub_equal(z, zone)) {
		EVP_PKEY_free(*device);
		*device = NULL;
		sw = SW_CONDITIONS;
		goto out;
	}
	sw = SW_OK;
out:
	EVP_PKEY_free(z);
	return sw;
}

uint16_t kc_cmd_create_zone(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct kc_field f[2];
	struct kc_pin pins[2] = {0};
	struct ky_buf cert = {0};
	EVP_PKEY *zone = NULL;
	uint16_t sw = SW_CONDITIONS;

	(void)o;
	if (c->st.type != KC_TYPE_BLANK) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (!kc_fields_parse(a->data, a->n, f, 2) || !pin_len_ok(&f[0]) || !pin_len_ok(&f[1])) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (ky_ec_generate(&zone) != 0 ||
	    kc_zone_cert_make(zone, KC_TYPE_CA, c->st.device, &cert) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (kc_pin_set(&pins[0], f[0].p, f[0].n, KC_CA_TRIES) != 0 ||
	    kc_pin_set(&pins[1], f[1].p, f[1].n, KC_CA_TRIES) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	c->st.type = KC_TYPE_CA;
	c->st.zone = zone;
	zone = NULL; /* transferred */
	c->st.zone_cert = cert;
	memset(&cert, 0, sizeof(cert)); /* transferred */
	memcpy(c->st.pin, pins, sizeof(pins));
	sw = kc_commit(c);
out:
	OPENSSL_cleanse(pins, sizeof(pins));
	EVP_PKEY_free(zone);
	ky_buf_free(&cert);
	return sw;
}

uint16_t kc_cmd_enrol_sign(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct ky_buf cert = {0};
	EVP_PKEY *device = NULL;
	uint16_t sw;

	if ((sw = kc_need_ca_pins(c)) != SW_OK)
		goto out;
	if (kc_pub_from_der(a->data, a->n, &device) != 0) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (kc_pub_equal(device, c->st.device)) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (kc_zone_cert_make(c->st.zone, KC_TYPE_EP11, device, &cert) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	sw = kc_out_buf(o, &cert);
out:
	EVP_PKEY_free(device);
	ky_buf_free(&cert);
	return sw;
}

uint16_t kc_cmd_enrol(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct kc_field f[2];
	struct kc_pin pin = {0};
	struct ky_buf cert = {0};
	EVP_PKEY *zone = NULL, *device = NULL;
	uint16_t sw = SW_CONDITIONS;

	(void)o;
	if (c->st.type != KC_TYPE_BLANK) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (!kc_fields_parse(a->data, a->n, f, 2) || !pin_len_ok(&f[1])) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (kc_zone_cert_check(f[0].p, f[0].n, KC_TYPE_EP11, &zone, &device) != 0) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (!kc_pub_equal(device, c->st.device)) { /* certifies another card */
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (ky_buf_append(&cert, f[0].p, f[0].n) != 0 ||
	    kc_pin_set(&pin, f[1].p, f[1].n, KC_EP11_TRIES) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	c->st.type = KC_TYPE_EP11;
	c->st.zone = zone;
	zone = NULL; /* transferred */
	c->st.zone_cert = cert;
	memset(&cert, 0, sizeof(cert)); /* transferred */
	c->st.pin[0] = pin;
	sw = kc_commit(c);
out:
	OPENSSL_cleanse(&pin, sizeof(pin));
	EVP_PKEY_free(zone);
	EVP_PKEY_free(device);
	ky_buf_free(&cert);
	return sw;
}

uint16_t kc_cmd_get_device(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct ky_buf out = {0}, dpub = {0};
	uint16_t sw = SW_CONDITIONS;

	(void)a;
	if (kc_pub_der(c->st.device, &dpub) != 0 || kc_field_put(&out, dpub.data, dpub.len) != 0 ||
	    kc_field_put(&out, c->st.zone_cert.data, c->st.zone_cert.len) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	sw = kc_out_buf(o, &out);
out:
	ky_buf_free(&out);
	ky_buf_free(&dpub);
	return sw;
}

uint16_t kc_cmd_copy_begin(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	uint16_t sw = SW_CONDITIONS;

	if (c->st.type == KC_TYPE_EP11 && (sw = kc_need_ep11_pin(c)) != SW_OK)
		return sw;
	if (c->st.type == KC_TYPE_CA)
		return SW_CONDITIONS;
	if ((sw = nonce_give(c, INS_COPY_BEGIN)) != SW_OK)
		return sw;
	if ((sw = kc_out_put(o, c->nonce, KC_NONCE_LEN)) != SW_OK)
		return sw;
	return kc_cmd_get_device(c, a, o);
}

/* Source side: data = fields(destination's challenge, destination's zone certificate (EP11)
 * or device key (CA backup to a blank card)). Answers fields(own zone certificate, sealed). */
uint16_t kc_cmd_copy_export(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct kc_field f[2];
	struct ky_buf payload = {0}, sealed = {0}, out = {0};
	EVP_PKEY *peer = NULL;
	uint8_t key[32];
	const char *info;
	uint16_t sw;

	if (c->st.type == KC_TYPE_CA)
		sw = kc_need_ca_pins(c);
	else
		sw = kc_need_ep11_pin(c);
	if (sw != SW_OK)
		goto out;
	if (!kc_fields_parse(a->data, a->n, f, 2) || f[0].n != KC_NONCE_LEN) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (c->st.type == KC_TYPE_CA) {
		/* the zone key goes to the blank card whose device key the holders of both
		 * PINs present (docs/cards.md: what a CA backup trusts) */
		if (kc_pub_from_der(f[1].p, f[1].n, &peer) != 0) {
			sw = SW_WRONG_DATA;
			goto out;
		}
		if (ky_pkey_to_der(c->st.zone, &payload) != 0) {
			sw = SW_CONDITIONS;
			goto out;
		}
		info = COPY_INFO_CA;
	} else {
		if ((sw = zone_cert_of(&f[1], KC_TYPE_EP11, c->st.zone, &peer)) != SW_OK)
			goto out;
		/* The contents, then the anchor their key parts are bound to. */
		struct ky_buf contents = {0};
		int e = kc_contents_encode(&c->st, &contents);

		if (e == 0)
			e = kc_field_put(&payload, contents.data, contents.len);
		ky_buf_free(&contents);
		if (e != 0 || kc_field_put(&payload, c->st.anchor.data, c->st.anchor.len) != 0) {
			sw = SW_CONDITIONS;
			goto out;
		}
		info = COPY_INFO_EP11;
	}
	if (kc_pub_equal(peer, c->st.device)) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (kc_transfer_key(c->st.device, peer, f[0].p, info, key) != 0 ||
	    ky_aead_seal(key, info, strlen(info), payload.data, payload.len, &sealed) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (kc_field_put(&out, c->st.zone_cert.data, c->st.zone_cert.len) != 0 ||
	    kc_field_put(&out, sealed.data, sealed.len) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	sw = kc_out_buf(o, &out);
out:
	OPENSSL_cleanse(key, sizeof(key));
	EVP_PKEY_free(peer);
	ky_buf_free(&payload);
	ky_buf_free(&sealed);
	ky_buf_free(&out);
	return sw;
}

/* Destination EP11: the source's contents replace this card's. */
static uint16_t import_ep11(struct kc_card *c, const struct kc_field *f,
                            const uint8_t nonce[KC_NONCE_LEN])
{
	struct ky_buf payload = {0};
	struct kc_field pf[2];
	struct kc_state *in = NULL;
	EVP_PKEY *peer = NULL;
	uint8_t key[32];
	uint16_t sw;

	if ((sw = zone_cert_of(&f[0], KC_TYPE_EP11, c->st.zone, &peer)) != SW_OK)
		goto out;
	if (kc_pub_equal(peer, c->st.device)) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if ((in = ky_secret_alloc(sizeof(*in))) == NULL ||
	    kc_transfer_key(c->st.device, peer, nonce, COPY_INFO_EP11, key) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (ky_aead_open(key, COPY_INFO_EP11, strlen(COPY_INFO_EP11), f[1].p, f[1].n, &payload) !=
	        0 ||
	    !kc_fields_parse(payload.data, payload.len, pf, 2) ||
	    kc_contents_decode(pf[0].p, pf[0].n, in) != 0 || (in->nparts > 0 && pf[1].n == 0) ||
	    ky_buf_append(&in->anchor, pf[1].p, pf[1].n) != 0) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	EVP_PKEY_free(c->st.sigkey);
	c->st.sigkey = in->sigkey;
	in->sigkey = NULL; /* transferred */
	c->st.nparts = in->nparts;
	memcpy(c->st.parts, in->parts, sizeof(in->parts));
	/* The parts keep the anchor they are bound to (ENVELOPE only to it). */
	ky_buf_free(&c->st.anchor);
	c->st.anchor = in->anchor;
	memset(&in->anchor, 0, sizeof(in->anchor)); /* transferred */
	sw = kc_commit(c);
out:
	OPENSSL_cleanse(key, sizeof(key));
	if (in != NULL) {
		EVP_PKEY_free(in->sigkey);
		ky_buf_free(&in->anchor);
		ky_secret_free(in, sizeof(*in));
	}
	EVP_PKEY_free(peer);
	ky_buf_free(&payload);
	return sw;
}

/* Destination blank: becomes a CA card of the source's zone with two new PINs. */
static uint16_t import_ca(struct kc_card *c, const struct kc_field *f,
                          const uint8_t nonce[KC_NONCE_LEN])
{
	struct ky_buf payload = {0}, cert = {0};
	struct kc_pin pins[2] = {0};
	EVP_PKEY *peer = NULL, *zone_pub = NULL, *zone = NULL;
	uint8_t key[32];
	uint16_t sw = SW_WRONG_DATA;

	if (!pin_len_ok(&f[2]) || !pin_len_ok(&f[3])) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (kc_zone_cert_check(f[0].p, f[0].n, KC_TYPE_CA, &zone_pub, &peer) != 0) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (kc_pub_equal(peer, c->st.device) ||
	    kc_transfer_key(c->st.device, peer, nonce, COPY_INFO_CA, key) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (ky_aead_open(key, COPY_INFO_CA, strlen(COPY_INFO_CA), f[1].p, f[1].n, &payload) != 0 ||
	    ky_pkey_from_der(payload.data, payload.len, &zone) != 0 ||
	    !kc_pub_equal(zone, zone_pub)) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (kc_zone_cert_make(zone, KC_TYPE_CA, c->st.device, &cert) != 0 ||
	    kc_pin_set(&pins[0], f[2].p, f[2].n, KC_CA_TRIES) != 0 ||
	    kc_pin_set(&pins[1], f[3].p, f[3].n, KC_CA_TRIES) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	c->st.type = KC_TYPE_CA;
	c->st.zone = zone;
	zone = NULL; /* transferred */
	c->st.zone_cert = cert;
	memset(&cert, 0, sizeof(cert)); /* transferred */
	memcpy(c->st.pin, pins, sizeof(pins));
	sw = kc_commit(c);
out:
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(pins, sizeof(pins));
	EVP_PKEY_free(peer);
	EVP_PKEY_free(zone_pub);
	EVP_PKEY_free(zone);
	ky_buf_free(&payload);
	ky_buf_free(&cert);
	return sw;
}

/* data = fields(source zone certificate, sealed) for an EP11 card, and two new PINs after
 * them for a blank card receiving a CA backup. */
uint16_t kc_cmd_copy_import(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct kc_field f[4];
	uint8_t nonce[KC_NONCE_LEN];
	bool fresh = nonce_take(c, INS_COPY_BEGIN, nonce);
	uint16_t sw;

	(void)o;
	if (c->st.type == KC_TYPE_EP11) {
		if ((sw = kc_need_ep11_pin(c)) != SW_OK)
			goto out;
		if (!fresh) {
			sw = SW_CONDITIONS;
			goto out;
		}
		if (!kc_fields_parse(a->data, a->n, f, 2)) {
			sw = SW_WRONG_DATA;
			goto out;
		}
		sw = import_ep11(c, f, nonce);
	} else if (c->st.type == KC_TYPE_BLANK) {
		if (!fresh) {
			sw = SW_CONDITIONS;
			goto out;
		}
		if (!kc_fields_parse(a->data, a->n, f, 4)) {
			sw = SW_WRONG_DATA;
			goto out;
		}
		sw = import_ca(c, f, nonce);
	} else {
		sw = SW_CONDITIONS;
	}
out:
	OPENSSL_cleanse(nonce, sizeof(nonce));
	return sw;
}

uint16_t kc_cmd_unblock_challenge(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	uint16_t sw;

	if (c->st.type != KC_TYPE_EP11)
		return SW_CONDITIONS;
	if ((sw = nonce_give(c, INS_UNBLOCK_CHALLENGE)) != SW_OK)
		return sw;
	if ((sw = kc_out_put(o, c->nonce, KC_NONCE_LEN)) != SW_OK)
		return sw;
	return kc_cmd_get_device(c, a, o);
}

/* What the CA signs to unblock one EP11 card: label, its device key, its challenge. */
static int unblock_tbs(EVP_PKEY *device, const uint8_t nonce[KC_NONCE_LEN], struct ky_buf *tbs)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf dpub = {0};

	if ((r = kc_pub_der(device, &dpub)) != 0)
		goto out;
	if ((r = ky_buf_append(tbs, UNBLOCK_LABEL, sizeof(UNBLOCK_LABEL))) != 0 ||
	    (r = kc_field_put(tbs, dpub.data, dpub.len)) != 0 ||
	    (r = kc_field_put(tbs, nonce, KC_NONCE_LEN)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&dpub);
	return r;
}

/* data = fields(the EP11 card's challenge, its zone certificate). */
uint16_t kc_cmd_unblock_sign(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct kc_field f[2];
	struct ky_buf tbs = {0}, sig = {0};
	EVP_PKEY *device = NULL;
	uint16_t sw;

	if ((sw = kc_need_ca_pins(c)) != SW_OK)
		goto out;
	if (!kc_fields_parse(a->data, a->n, f, 2) || f[0].n != KC_NONCE_LEN) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if ((sw = zone_cert_of(&f[1], KC_TYPE_EP11, c->st.zone, &device)) != SW_OK)
		goto out;
	if (unblock_tbs(device, f[0].p, &tbs) != 0 ||
	    ky_sign(c->st.zone, tbs.data, tbs.len, &sig) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	sw = kc_out_buf(o, &sig);
out:
	EVP_PKEY_free(device);
	ky_buf_free(&tbs);
	ky_buf_free(&sig);
	return sw;
}

/* data = fields(the CA's signature, the new PIN). */
uint16_t kc_cmd_unblock(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct kc_field f[2];
	struct ky_buf tbs = {0};
	struct kc_pin pin = {0};
	uint8_t nonce[KC_NONCE_LEN];
	bool fresh = nonce_take(c, INS_UNBLOCK_CHALLENGE, nonce);
	uint16_t sw = SW_CONDITIONS;

	(void)o;
	if (c->st.type != KC_TYPE_EP11 || !fresh) {
		sw = SW_CONDITIONS;
		goto out;
	}
	if (!kc_fields_parse(a->data, a->n, f, 2) || !pin_len_ok(&f[1])) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (unblock_tbs(c->st.device, nonce, &tbs) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	/* only the zone key this card was enrolled under unblocks it */
	if (ky_verify(c->st.zone, tbs.data, tbs.len, f[0].p, f[0].n) != 0) {
		sw = SW_WRONG_DATA;
		goto out;
	}
	if (kc_pin_set(&pin, f[1].p, f[1].n, KC_EP11_TRIES) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	c->st.pin[0] = pin;
	c->verified[0] = false;
	sw = kc_commit(c);
out:
	OPENSSL_cleanse(&pin, sizeof(pin));
	OPENSSL_cleanse(nonce, sizeof(nonce));
	ky_buf_free(&tbs);
	return sw;
}
