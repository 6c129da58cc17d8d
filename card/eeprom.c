/* The card's EEPROM: one file holding the whole chip state, sealed under the chip key.
 *
 * File: "KYOKCARD" (8 bytes) | version 0x01 | AES-256-GCM(chip key; nonce 12 | ciphertext |
 * tag 16) with the first 9 bytes as associated data. The plaintext is a sequence of fields
 * (2-byte big-endian length, bytes): type, device key (PKCS#8), zone key (CA: PKCS#8, EP11:
 * SubjectPublicKeyInfo, blank: empty), zone certificate, PIN 1, PIN 2 (each empty or set |
 * tries | salt | scrypt hash), anchor certificate (DER or empty), contents (signature key
 * and key parts, kc_contents_encode). Every write replaces the file atomically (temp file,
 * fsync, rename, fsync of the directory). */
#include <openssl/x509.h>
#include <string.h>

#include "card/internal.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define EEPROM_MAGIC     "KYOKCARD"
#define EEPROM_MAGIC_LEN 8
#define EEPROM_VERSION   1
#define EEPROM_HEAD_LEN  (EEPROM_MAGIC_LEN + 1)
#define EEPROM_MAX       (256 * 1024)
#define PIN_REC_LEN      (2 + KC_PIN_SALT_LEN + KC_PIN_HASH_LEN)

static const uint8_t eeprom_head[EEPROM_HEAD_LEN] = {'K', 'Y', 'O', 'K',           'C',
                                                     'A', 'R', 'D', EEPROM_VERSION};

bool kc_fields_parse(const uint8_t *data, size_t n, struct kc_field *f, size_t count)
{
	size_t i, len;

	for (i = 0; i < count; i++) {
		if (n < 2)
			return false;
		len = ((size_t)data[0] << 8) | data[1];
		if (n - 2 < len)
			return false;
		f[i].p = data + 2;
		f[i].n = len;
		data += 2 + len;
		n -= 2 + len;
	}
	return n == 0;
}

int kc_field_put(struct ky_buf *b, const void *p, size_t n)
{
	int r = KY_ERR_TOO_LARGE;
	uint8_t len[2];

	if (n > 0xFFFF) {
		r = KY_ERR_TOO_LARGE;
		goto out;
	}
	len[0] = (uint8_t)(n >> 8);
	len[1] = (uint8_t)n;
	if ((r = ky_buf_append(b, len, 2)) != 0)
		goto out;
	if (n > 0 && (r = ky_buf_append(b, p, n)) != 0)
		goto out;
	r = 0;
out:
	return r;
}

void kc_state_clear(struct kc_state *st)
{
	EVP_PKEY_free(st->device);
	EVP_PKEY_free(st->zone);
	EVP_PKEY_free(st->sigkey);
	ky_buf_free(&st->zone_cert);
	ky_buf_free(&st->anchor);
	OPENSSL_cleanse(st, sizeof(*st));
}

static int put_key(struct ky_buf *b, EVP_PKEY *pk, bool private)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf der = {0};

	if (pk != NULL) {
		if ((r = private ? ky_pkey_to_der(pk, &der) : kc_pub_der(pk, &der)) != 0)
			goto out;
	}
	if ((r = kc_field_put(b, der.data, der.len)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&der);
	return r;
}

static int put_pin(struct ky_buf *b, const struct kc_pin *pin)
{
	uint8_t rec[PIN_REC_LEN];
	int r;

	if (!pin->set)
		return kc_field_put(b, NULL, 0);
	rec[0] = 1;
	rec[1] = pin->tries;
	memcpy(rec + 2, pin->salt, KC_PIN_SALT_LEN);
	memcpy(rec + 2 + KC_PIN_SALT_LEN, pin->hash, KC_PIN_HASH_LEN);
	r = kc_field_put(b, rec, sizeof(rec));
	OPENSSL_cleanse(rec, sizeof(rec));
	return r;
}

static int get_pin(const struct kc_field *f, struct kc_pin *pin)
{
	if (f->n == 0) {
		memset(pin, 0, sizeof(*pin));
		return 0;
	}
	if (f->n != PIN_REC_LEN || f->p[0] != 1)
		return KY_ERR_CARD_EEPROM_DAMAGED;
	pin->set = true;
	pin->tries = f->p[1];
	memcpy(pin->salt, f->p + 2, KC_PIN_SALT_LEN);
	memcpy(pin->hash, f->p + 2 + KC_PIN_SALT_LEN, KC_PIN_HASH_LEN);
	return 0;
}

int kc_contents_encode(const struct kc_state *st, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	uint8_t count = (uint8_t)st->nparts;
	size_t i;

	if ((r = put_key(out, st->sigkey, true)) != 0)
		goto out;
	if ((r = kc_field_put(out, &count, 1)) != 0)
		goto out;
	for (i = 0; i < st->nparts; i++) {
		const struct kc_part *kp = &st->parts[i];

		if ((r = kc_field_put(out, kp->desc, strlen(kp->desc))) != 0)
			goto out;
		if ((r = kc_field_put(out, kp->part, KY_MK_LEN)) != 0)
			goto out;
	}
	r = 0;
out:
	return r;
}

static bool desc_ok(const uint8_t *p, size_t n)
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

int kc_contents_decode(const uint8_t *p, size_t n, struct kc_state *st)
{
	int r = KY_ERR_MALFORMED;
	struct kc_field f[2 + 2 * KC_MAX_PARTS];
	size_t count, first, i;

	/* the first field (signature key) and the second (the count, one byte) give the count */
	if (n < 2) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	first = 2 + (((size_t)p[0] << 8) | p[1]);
	if (first > n || n - first < 3 || p[first] != 0 || p[first + 1] != 1) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	count = p[first + 2];
	if (count > KC_MAX_PARTS || !kc_fields_parse(p, n, f, 2 + 2 * count)) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	if (f[0].n > 0 && (r = ky_pkey_from_der(f[0].p, f[0].n, &st->sigkey)) != 0)
		goto out;
	if (st->sigkey != NULL && !ky_pkey_is_p521(st->sigkey)) {
		r = KY_ERR_MALFORMED;
		goto out;
	}
	for (i = 0; i < count; i++) {
		const struct kc_field *d = &f[2 + 2 * i], *k = &f[3 + 2 * i];

		if (!desc_ok(d->p, d->n) || k->n != KY_MK_LEN) {
			r = KY_ERR_MALFORMED;
			goto out;
		}
		memcpy(st->parts[i].desc, d->p, d->n);
		st->parts[i].desc[d->n] = '\0';
		memcpy(st->parts[i].part, k->p, KY_MK_LEN);
	}
	st->nparts = count;
	r = 0;
out:
	return r;
}

static int state_encode(const struct kc_state *st, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf contents = {0};

	if ((r = kc_field_put(out, &st->type, 1)) != 0)
		goto out;
	if ((r = put_key(out, st->device, true)) != 0)
		goto out;
	if ((r = put_key(out, st->zone, st->type == KC_TYPE_CA)) != 0)
		goto out;
	if ((r = kc_field_put(out, st->zone_cert.data, st->zone_cert.len)) != 0)
		goto out;
	if ((r = put_pin(out, &st->pin[0])) != 0 || (r = put_pin(out, &st->pin[1])) != 0)
		goto out;
	if ((r = kc_field_put(out, st->anchor.data, st->anchor.len)) != 0)
		goto out;
	if ((r = kc_contents_encode(st, &contents)) != 0)
		goto out;
	if ((r = kc_field_put(out, contents.data, contents.len)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&contents);
	return r;
}

/* Decodes and checks that the state is one a card can be in. */
static int state_decode(const uint8_t *p, size_t n, struct kc_state *st)
{
	int r = KY_ERR_CARD_EEPROM_DAMAGED;
	struct kc_field f[8];
	EVP_PKEY *zcert_zone = NULL, *zcert_device = NULL;
	uint8_t role;

	if (!kc_fields_parse(p, n, f, 8) || f[0].n != 1 || f[0].p[0] > KC_TYPE_EP11) {
		r = KY_ERR_CARD_EEPROM_DAMAGED;
		goto out;
	}
	st->type = f[0].p[0];
	if (ky_pkey_from_der(f[1].p, f[1].n, &st->device) != 0 || !ky_pkey_is_p521(st->device)) {
		r = KY_ERR_CARD_EEPROM_DAMAGED;
		goto out;
	}
	if (get_pin(&f[4], &st->pin[0]) != 0 || get_pin(&f[5], &st->pin[1]) != 0) {
		r = KY_ERR_CARD_EEPROM_DAMAGED;
		goto out;
	}
	if (kc_contents_decode(f[7].p, f[7].n, st) != 0) {
		r = KY_ERR_CARD_EEPROM_DAMAGED;
		goto out;
	}
	if (st->type == KC_TYPE_BLANK) {
		if (f[2].n != 0 || f[3].n != 0 || st->pin[0].set || st->pin[1].set || f[6].n != 0 ||
		    st->sigkey != NULL || st->nparts != 0) {
			r = KY_ERR_CARD_EEPROM_DAMAGED;
			goto out;
		}
		r = 0;
		goto out;
	}
	if (st->type == KC_TYPE_CA) {
		if (ky_pkey_from_der(f[2].p, f[2].n, &st->zone) != 0 || !st->pin[1].set ||
		    f[6].n != 0 || st->sigkey != NULL || st->nparts != 0) {
			r = KY_ERR_CARD_EEPROM_DAMAGED;
			goto out;
		}
		role = KC_TYPE_CA;
	} else {
		if (kc_pub_from_der(f[2].p, f[2].n, &st->zone) != 0 || st->pin[1].set) {
			r = KY_ERR_CARD_EEPROM_DAMAGED;
			goto out;
		}
		role = KC_TYPE_EP11;
	}
	if (!st->pin[0].set || !ky_pkey_is_p521(st->zone)) {
		r = KY_ERR_CARD_EEPROM_DAMAGED;
		goto out;
	}
	if (kc_zone_cert_check(f[3].p, f[3].n, role, &zcert_zone, &zcert_device) != 0 ||
	    !kc_pub_equal(zcert_zone, st->zone) || !kc_pub_equal(zcert_device, st->device)) {
		r = KY_ERR_CARD_EEPROM_DAMAGED;
		goto out;
	}
	if (ky_buf_append(&st->zone_cert, f[3].p, f[3].n) != 0) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	if (f[6].n > 0 && ky_buf_append(&st->anchor, f[6].p, f[6].n) != 0) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_free(zcert_zone);
	EVP_PKEY_free(zcert_device);
	return r;
}

int kc_eeprom_load(const char *path, const uint8_t chip_key[KC_CHIP_KEY_LEN], struct kc_state *st)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0}, plain = {0};

	memset(st, 0, sizeof(*st));
	if ((r = ky_file_read(path, EEPROM_MAX, &file)) != 0) {
		if (r == KY_ERR_TOO_LARGE)
			r = KY_ERR_CARD_EEPROM_DAMAGED;
		goto out;
	}
	if (file.len < EEPROM_HEAD_LEN || memcmp(file.data, eeprom_head, EEPROM_HEAD_LEN) != 0) {
		r = KY_ERR_CARD_EEPROM_DAMAGED;
		goto out;
	}
	if (ky_aead_open(chip_key, eeprom_head, EEPROM_HEAD_LEN, file.data + EEPROM_HEAD_LEN,
	                 file.len - EEPROM_HEAD_LEN, &plain) != 0) {
		r = KY_ERR_CARD_EEPROM_DAMAGED;
		goto out;
	}
	if ((r = state_decode(plain.data, plain.len, st)) != 0)
		goto out;
	r = 0;
out:
	if (r != 0)
		kc_state_clear(st);
	ky_buf_free(&plain);
	ky_buf_free(&file);
	return r;
}

int kc_eeprom_save(const char *path, const uint8_t chip_key[KC_CHIP_KEY_LEN],
                   const struct kc_state *st)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf plain = {0}, file = {0};

	if ((r = state_encode(st, &plain)) != 0)
		goto out;
	if ((r = ky_buf_append(&file, eeprom_head, EEPROM_HEAD_LEN)) != 0)
		goto out;
	if ((r = ky_aead_seal(chip_key, eeprom_head, EEPROM_HEAD_LEN, plain.data, plain.len,
	                      &file)) != 0)
		goto out;
	if ((r = ky_file_write_atomic(path, file.data, file.len, 0600)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&plain);
	ky_buf_free(&file);
	return r;
}

uint16_t kc_commit(struct kc_card *c)
{
	struct kc_state old;

	if (kc_eeprom_save(c->eeprom_path, c->chip_key, &c->st) == 0)
		return SW_OK;
	kc_state_clear(&c->st);
	if (kc_eeprom_load(c->eeprom_path, c->chip_key, &old) != 0) {
		c->mute = true;
		return SW_MUTE;
	}
	c->st = old;
	OPENSSL_cleanse(&old, sizeof(old));
	return SW_MEMORY_FAILURE;
}
