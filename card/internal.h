/* Inside the kyok card: the chip's state, its EEPROM file, the card's own cryptography and
 * the commands. Nothing here is seen by the transport; it uses card/applet.h only. */
#ifndef KYOK_CARD_INTERNAL_H
#define KYOK_CARD_INTERNAL_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "card/applet.h"
#include "kyok/common.h"

#define KC_TYPE_BLANK 0
#define KC_TYPE_CA    1
#define KC_TYPE_EP11  2

#define KC_CA_TRIES     5 /* per PIN of a CA card; a CA card never unblocks */
#define KC_EP11_TRIES   3
#define KC_PIN_MIN      6
#define KC_PIN_MAX      16
#define KC_MAX_PARTS    85
#define KC_DESC_MAX     64
#define KC_NONCE_LEN    32
#define KC_DIGEST_LEN   64 /* SHA-512 */
#define KC_CHIP_KEY_LEN 32
#define KC_PIN_SALT_LEN 16
#define KC_PIN_HASH_LEN 32
#define KC_IO_MAX       16384 /* longest command (after chaining) and response */

/* Status words (ISO 7816-4). */
#define SW_OK             0x9000
#define SW_MORE           0x6100 /* | bytes left, at most 0xFF (00 = 256 or more) */
#define SW_WRONG_PIN      0x63C0 /* | tries left */
#define SW_MEMORY_FAILURE 0x6581 /* the EEPROM could not be written: nothing changed */
#define SW_WRONG_LENGTH   0x6700
#define SW_NOT_VERIFIED   0x6982
#define SW_BLOCKED        0x6983
#define SW_CONDITIONS     0x6985
#define SW_WRONG_DATA     0x6A80
#define SW_NO_DATA        0x6A88 /* referenced data not found: no such key part or key */
#define SW_NO_MEMORY      0x6A84
#define SW_WRONG_P1P2     0x6B00
#define SW_INS            0x6D00
#define SW_CLA            0x6E00
#define SW_MUTE           0x6F00 /* the EEPROM can no longer be read: reset the card */

struct kc_pin {
	bool set;
	uint8_t tries;
	uint8_t salt[KC_PIN_SALT_LEN];
	uint8_t hash[KC_PIN_HASH_LEN];
};

struct kc_part {
	char desc[KC_DESC_MAX + 1];
	uint8_t part[KY_MK_LEN];
};

/* What the EEPROM holds. Keys are SubjectPublicKeyInfo / PKCS#8 DER inside the file and
 * EVP_PKEYs here. */
struct kc_state {
	uint8_t type;
	EVP_PKEY *device;        /* every card: its device key pair, made with the card */
	EVP_PKEY *zone;          /* CA: the zone key pair; EP11: the zone public key */
	struct ky_buf zone_cert; /* CA and EP11: this card's zone certificate */
	struct kc_pin pin[2];    /* CA: two PINs; EP11: pin[0] */
	EVP_PKEY *sigkey;        /* EP11: the administrator signature key, or NULL */
	struct ky_buf anchor;    /* EP11: DER of the registered anchor certificate, or empty */
	size_t nparts;
	struct kc_part parts[KC_MAX_PARTS];
};

/* A response under construction. */
struct kc_out {
	uint8_t *p;
	size_t len;
	size_t cap;
};

struct kc_card {
	char *eeprom_path;
	uint8_t chip_key[KC_CHIP_KEY_LEN];
	struct kc_state st;
	bool mute; /* the EEPROM could not be read back after a failed write */
	/* RAM only: lost at power off and reset. */
	bool verified[2];
	bool nonce_set;
	uint8_t nonce[KC_NONCE_LEN]; /* the last challenge given (copy or unblock) */
	uint8_t nonce_ins;           /* the command that gave it */
	uint8_t nonce_type;          /* the card's type then */
	uint8_t chain_ins;
	uint8_t chain_p1, chain_p2;
	size_t chain_len; /* bytes of a command chain received so far */
	uint8_t *chain;   /* KC_IO_MAX, secure heap */
	uint8_t *resp;    /* KC_IO_MAX, secure heap: a response waiting for GET RESPONSE */
	size_t resp_len, resp_off;
};

/* ---- eeprom.c ---- */
void kc_state_clear(struct kc_state *st);
/* Reads the EEPROM into st. KY_ERR_CARD_EEPROM_DAMAGED when it cannot be opened. */
int kc_eeprom_load(const char *path, const uint8_t chip_key[KC_CHIP_KEY_LEN],
                   struct kc_state *st) KY_WUR;
int kc_eeprom_save(const char *path, const uint8_t chip_key[KC_CHIP_KEY_LEN],
                   const struct kc_state *st) KY_WUR;
/* Writes the state to the EEPROM; when that fails, reads the old state back (the write is
 * atomic, so the file still holds it) and answers SW_MEMORY_FAILURE, or SW_MUTE when even
 * that fails. SW_OK on success. */
uint16_t kc_commit(struct kc_card *c);
/* Contents of an EP11 card (signature key and key parts), as copied card to card. */
int kc_contents_encode(const struct kc_state *st, struct ky_buf *out) KY_WUR;
int kc_contents_decode(const uint8_t *p, size_t n, struct kc_state *st) KY_WUR;

/* ---- chipcrypto.c ---- */
int kc_pin_hash(const uint8_t *pin, size_t n, const uint8_t salt[KC_PIN_SALT_LEN],
                uint8_t hash[KC_PIN_HASH_LEN]) KY_WUR;
int kc_pin_set(struct kc_pin *pin, const uint8_t *p, size_t n, uint8_t tries) KY_WUR;
int kc_pub_der(EVP_PKEY *pk, struct ky_buf *out) KY_WUR;
int kc_pub_from_der(const uint8_t *p, size_t n, EVP_PKEY **out) KY_WUR; /* P-521 only */
/* Zone certificate: fields(role, zone SPKI, device SPKI, signature by the zone key). */
int kc_zone_cert_make(EVP_PKEY *zone, uint8_t role, EVP_PKEY *device, struct ky_buf *out) KY_WUR;
/* Checks a zone certificate: well formed, of role, signed by the zone key it names. The zone
 * public key and the device public key out (caller frees). */
int kc_zone_cert_check(const uint8_t *p, size_t n, uint8_t role, EVP_PKEY **zone,
                       EVP_PKEY **device) KY_WUR;
bool kc_pub_equal(EVP_PKEY *a, EVP_PKEY *b);
/* Card-to-card transfer key: HKDF-SHA256(ECDH(mine, peer), salt = nonce, info). */
int kc_transfer_key(EVP_PKEY *mine, EVP_PKEY *peer, const uint8_t nonce[KC_NONCE_LEN],
                    const char *info, uint8_t key[32]) KY_WUR;
/* Signature over a SHA-512 digest given by the host (DER ECDSA-Sig-Value). */
int kc_sign_digest(EVP_PKEY *key, const uint8_t digest[KC_DIGEST_LEN], struct ky_buf *sig) KY_WUR;

/* ---- fields: a sequence of (2-byte big-endian length, bytes) ---- */
struct kc_field {
	const uint8_t *p;
	size_t n;
};
/* Exactly count fields filling data; false otherwise. */
bool kc_fields_parse(const uint8_t *data, size_t n, struct kc_field *f, size_t count);
int kc_field_put(struct ky_buf *b, const void *p, size_t n) KY_WUR;

/* ---- commands (applet.c dispatches; each answers a status word and may fill out) ---- */
struct kc_apdu {
	uint8_t cla, ins, p1, p2;
	const uint8_t *data;
	size_t n;
};
uint16_t kc_out_put(struct kc_out *o, const void *p, size_t n);
uint16_t kc_out_buf(struct kc_out *o, const struct ky_buf *b);

uint16_t kc_cmd_verify(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_create_zone(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_enrol_sign(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_enrol(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_get_device(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_copy_begin(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_copy_export(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_copy_import(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_unblock_challenge(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_unblock_sign(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_unblock(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_gen_sigkey(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_get_sigkey(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_sign(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_gen_part(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_part_info(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_envelope(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);
uint16_t kc_cmd_set_anchor(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);

/* Access rules, one home (applet.c). SW_OK when the card may act. */
uint16_t kc_need_ep11_pin(const struct kc_card *c); /* EP11, not blocked, PIN verified */
uint16_t kc_need_ca_pins(const struct kc_card *c);  /* CA, not blocked, both PINs verified */
bool kc_blocked(const struct kc_card *c);

#endif
