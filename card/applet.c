/* The kyok card applet: opening the chip, power, the ATR, APDU framing (command chaining,
 * GET RESPONSE), the command table, the access rules and PIN verification. The commands
 * themselves live in zone.c (zones, enrolment, copy, unblock) and keys.c (signature key, key
 * parts, envelopes). */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "card/internal.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define SW_FILE_NOT_FOUND 0x6A82

static const uint8_t kc_aid[] = {0xF0, 0x6B, 0x79, 0x6F, 0x6B, 0x01};

/* ---- opening the chip ---- */

static int chip_key_load(const char *path, bool create, uint8_t key[KC_CHIP_KEY_LEN], char *err,
                         size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf file = {0};
	char why[256];

	if (create) {
		if ((r = ky_random(key, KC_CHIP_KEY_LEN)) != 0)
			goto out;
		if ((r = ky_file_write_atomic(path, key, KC_CHIP_KEY_LEN, 0600)) != 0) {
			snprintf(err, errlen, "card chip key '%s': %s", path, ky_err_message(r));
			goto out;
		}
		r = 0;
		goto out;
	}
	if ((r = ky_path_check_private(path, why, sizeof(why))) != 0) {
		snprintf(err, errlen, "card chip key '%s': %s", path,
		         r == KY_ERR_NOT_PRIVATE ? why : ky_err_message(r));
		goto out;
	}
	if ((r = ky_file_read(path, KC_CHIP_KEY_LEN + 1, &file)) != 0 ||
	    file.len != KC_CHIP_KEY_LEN) {
		r = KY_ERR_CARD_EEPROM_DAMAGED;
		snprintf(err, errlen, "card chip key '%s': not a 32-byte chip key: %s", path,
		         ky_err_message(r));
		goto out;
	}
	memcpy(key, file.data, KC_CHIP_KEY_LEN);
	r = 0;
out:
	ky_buf_free(&file);
	return r;
}

static int blank_state(struct kc_state *st)
{
	memset(st, 0, sizeof(*st));
	st->type = KC_TYPE_BLANK;
	return ky_ec_generate(&st->device);
}

int kc_card_open(const char *eeprom_path, const char *chip_key_path, struct kc_card **out,
                 char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct kc_card *c = NULL;
	struct stat sb;
	bool eeprom_exists, key_exists;
	char why[256];

	snprintf(err, errlen, "%s", "");
	if (eeprom_path == NULL || chip_key_path == NULL || out == NULL) {
		r = KY_ERR_USAGE;
		snprintf(err, errlen, "card: %s", ky_err_message(r));
		goto out;
	}
	if ((c = ky_secret_alloc(sizeof(*c))) == NULL ||
	    (c->chain = ky_secret_alloc(KC_IO_MAX)) == NULL ||
	    (c->resp = ky_secret_alloc(KC_IO_MAX)) == NULL ||
	    (c->eeprom_path = strdup(eeprom_path)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "card: %s", ky_err_message(r));
		goto out;
	}
	eeprom_exists = stat(eeprom_path, &sb) == 0;
	key_exists = stat(chip_key_path, &sb) == 0;
	if (eeprom_exists && !key_exists) {
		r = KY_ERR_CARD_CHIP_KEY_MISSING;
		snprintf(err, errlen, "card EEPROM '%s': %s", eeprom_path, ky_err_message(r));
		goto out;
	}
	if (!eeprom_exists && key_exists) {
		r = KY_ERR_CARD_EEPROM_MISSING;
		snprintf(err, errlen, "card chip key '%s': %s", chip_key_path, ky_err_message(r));
		goto out;
	}
	if (!eeprom_exists) {
		/* a blank card: a new chip key, a new device key */
		if ((r = chip_key_load(chip_key_path, true, c->chip_key, err, errlen)) != 0)
			goto out;
		if ((r = blank_state(&c->st)) != 0) {
			snprintf(err, errlen, "card: %s", ky_err_message(r));
			unlink(chip_key_path);
			goto out;
		}
		if ((r = kc_eeprom_save(eeprom_path, c->chip_key, &c->st)) != 0) {
			snprintf(err, errlen, "card EEPROM '%s': %s", eeprom_path,
			         ky_err_message(r));
			unlink(chip_key_path);
			goto out;
		}
	} else {
		if ((r = chip_key_load(chip_key_path, false, c->chip_key, err, errlen)) != 0)
			goto out;
		if ((r = ky_path_check_private(eeprom_path, why, sizeof(why))) != 0) {
			snprintf(err, errlen, "card EEPROM '%s': %s", eeprom_path,
			         r == KY_ERR_NOT_PRIVATE ? why : ky_err_message(r));
			goto out;
		}
		if ((r = kc_eeprom_load(eeprom_path, c->chip_key, &c->st)) != 0) {
			snprintf(err, errlen, "card EEPROM '%s': %s", eeprom_path,
			         ky_err_message(r));
			goto out;
		}
	}
	*out = c;
	c = NULL; /* transferred */
	r = 0;
out:
	kc_card_free(c);
	return r;
}

void kc_card_free(struct kc_card *c)
{
	if (c == NULL)
		return;
	kc_state_clear(&c->st);
	free(c->eeprom_path);
	ky_secret_free(c->chain, KC_IO_MAX);
	ky_secret_free(c->resp, KC_IO_MAX);
	ky_secret_free(c, sizeof(*c));
}

/* ---- power ---- */

static void forget(struct kc_card *c)
{
	c->verified[0] = c->verified[1] = false;
	c->nonce_set = false;
	OPENSSL_cleanse(c->nonce, sizeof(c->nonce));
	c->chain_len = 0;
	c->chain_ins = 0;
	OPENSSL_cleanse(c->chain, KC_IO_MAX);
	c->resp_len = c->resp_off = 0;
	OPENSSL_cleanse(c->resp, KC_IO_MAX);
}

/* A card that went mute (its EEPROM could not be read back after a failed write) reads it
 * again at the next power on or reset. */
static void reload_if_mute(struct kc_card *c)
{
	struct kc_state st;

	if (!c->mute || kc_eeprom_load(c->eeprom_path, c->chip_key, &st) != 0)
		return;
	kc_state_clear(&c->st);
	c->st = st;
	OPENSSL_cleanse(&st, sizeof(st));
	c->mute = false;
}

void kc_card_power(struct kc_card *c, bool on)
{
	forget(c);
	if (on)
		reload_if_mute(c);
}

void kc_card_reset(struct kc_card *c)
{
	forget(c);
	reload_if_mute(c);
}

size_t kc_card_atr(const struct kc_card *c, uint8_t *atr, size_t max)
{
	/* TS direct, T0: TD1 and 8 historical bytes, TD1: T=0 and TD2, TD2: T=1; TCK */
	static const uint8_t a[] = {0x3B, 0x88, 0x80, 0x01, 'k', 'y', 'o', 'k', 'c', 'a', 'r', 'd'};
	uint8_t tck = 0;
	size_t i;

	(void)c;
	if (max < sizeof(a) + 1)
		return 0;
	memcpy(atr, a, sizeof(a));
	for (i = 1; i < sizeof(a); i++)
		tck ^= a[i];
	atr[sizeof(a)] = tck;
	return sizeof(a) + 1;
}

/* ---- access rules ---- */

bool kc_blocked(const struct kc_card *c)
{
	const struct kc_state *st = &c->st;

	if (st->type == KC_TYPE_CA)
		return st->pin[0].tries == 0 || st->pin[1].tries == 0;
	if (st->type == KC_TYPE_EP11)
		return st->pin[0].tries == 0;
	return false;
}

uint16_t kc_need_ep11_pin(const struct kc_card *c)
{
	if (c->st.type != KC_TYPE_EP11)
		return SW_CONDITIONS;
	if (kc_blocked(c))
		return SW_BLOCKED;
	if (!c->verified[0])
		return SW_NOT_VERIFIED;
	return SW_OK;
}

uint16_t kc_need_ca_pins(const struct kc_card *c)
{
	if (c->st.type != KC_TYPE_CA)
		return SW_CONDITIONS;
	if (kc_blocked(c))
		return SW_BLOCKED;
	if (!c->verified[0] || !c->verified[1])
		return SW_NOT_VERIFIED;
	return SW_OK;
}

/* ---- responses ---- */

uint16_t kc_out_put(struct kc_out *o, const void *p, size_t n)
{
	if (n > o->cap - o->len)
		return SW_NO_MEMORY;
	memcpy(o->p + o->len, p, n);
	o->len += n;
	return SW_OK;
}

uint16_t kc_out_buf(struct kc_out *o, const struct ky_buf *b)
{
	return kc_out_put(o, b->data, b->len);
}

/* ---- ISO commands ---- */

static uint16_t cmd_select(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	uint8_t info[7], zone_id[KY_SKI_LEN] = {0}, device_id[KY_SKI_LEN];
	const struct kc_state *st = &c->st;
	uint16_t sw;

	if (a->p1 != 0x04 || a->p2 != 0x00)
		return SW_WRONG_P1P2;
	if (a->n != sizeof(kc_aid) || memcmp(a->data, kc_aid, sizeof(kc_aid)) != 0)
		return SW_FILE_NOT_FOUND;
	if (st->zone != NULL && ky_ski(st->zone, zone_id) != 0)
		return SW_CONDITIONS;
	if (ky_ski(st->device, device_id) != 0)
		return SW_CONDITIONS;
	info[0] = 1; /* applet version */
	info[1] = st->type;
	info[2] = kc_blocked(c) ? 1 : 0;
	info[3] = st->pin[0].tries;
	info[4] = st->pin[1].tries;
	info[5] = (uint8_t)st->nparts;
	info[6] = st->sigkey != NULL ? 1 : 0;
	if ((sw = kc_out_put(o, info, sizeof(info))) != SW_OK ||
	    (sw = kc_out_put(o, zone_id, sizeof(zone_id))) != SW_OK ||
	    (sw = kc_out_put(o, device_id, sizeof(device_id))) != SW_OK)
		return sw;
	return SW_OK;
}

uint16_t kc_cmd_verify(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct kc_pin *pin;
	uint8_t hash[KC_PIN_HASH_LEN], max;
	size_t i;
	uint16_t sw;
	bool good;

	(void)o;
	if (a->p1 != 0x00 || (a->p2 != 0x01 && a->p2 != 0x02))
		return SW_WRONG_P1P2;
	if (c->st.type == KC_TYPE_BLANK || (a->p2 == 0x02 && c->st.type != KC_TYPE_CA))
		return SW_CONDITIONS;
	i = a->p2 - 1u;
	pin = &c->st.pin[i];
	max = c->st.type == KC_TYPE_CA ? KC_CA_TRIES : KC_EP11_TRIES;
	if (kc_blocked(c) || pin->tries == 0)
		return SW_BLOCKED;
	if (a->n == 0) /* the number of tries left, checking nothing */
		return c->verified[i] ? SW_OK : (uint16_t)(SW_WRONG_PIN | pin->tries);
	c->verified[i] = false;
	if (a->n < KC_PIN_MIN || a->n > KC_PIN_MAX)
		return SW_WRONG_LENGTH;
	/* One try is spent in the EEPROM before the PIN is checked: a card pulled during the
	 * check has lost it. */
	pin->tries--;
	if ((sw = kc_commit(c)) != SW_OK)
		return sw;
	if (kc_pin_hash(a->data, a->n, pin->salt, hash) != 0)
		return SW_CONDITIONS;
	good = CRYPTO_memcmp(hash, pin->hash, sizeof(hash)) == 0;
	OPENSSL_cleanse(hash, sizeof(hash));
	if (!good)
		return pin->tries == 0 ? SW_BLOCKED : (uint16_t)(SW_WRONG_PIN | pin->tries);
	pin->tries = max;
	if ((sw = kc_commit(c)) != SW_OK)
		return sw;
	c->verified[i] = true;
	return SW_OK;
}

/* CHANGE PIN: P2 = n, data = the new PIN of PIN n (CA: PIN 1 or 2), which must have been
 * verified in this session: whoever knows a PIN replaces it. Its tries are back to the
 * maximum and it stays verified. A blocked card changes no PIN. */
static uint16_t cmd_change_pin(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o)
{
	struct kc_pin pin = {0};
	size_t i;
	uint16_t sw = SW_CONDITIONS;

	(void)o;
	if (a->p2 != 0x01 && a->p2 != 0x02) {
		sw = SW_WRONG_P1P2;
		goto out;
	}
	if (c->st.type == KC_TYPE_BLANK || (a->p2 == 0x02 && c->st.type != KC_TYPE_CA)) {
		sw = SW_CONDITIONS;
		goto out;
	}
	i = a->p2 - 1u;
	if (kc_blocked(c)) {
		sw = SW_BLOCKED;
		goto out;
	}
	if (!c->verified[i]) {
		sw = SW_NOT_VERIFIED;
		goto out;
	}
	if (a->n < KC_PIN_MIN || a->n > KC_PIN_MAX) {
		sw = SW_WRONG_LENGTH;
		goto out;
	}
	if (kc_pin_set(&pin, a->data, a->n,
	               c->st.type == KC_TYPE_CA ? KC_CA_TRIES : KC_EP11_TRIES) != 0) {
		sw = SW_CONDITIONS;
		goto out;
	}
	c->st.pin[i] = pin;
	sw = kc_commit(c);
out:
	OPENSSL_cleanse(&pin, sizeof(pin));
	return sw;
}

/* ---- the command table ---- */

typedef uint16_t (*kc_handler)(struct kc_card *c, const struct kc_apdu *a, struct kc_out *o);

/* What a command takes besides CLA and INS: anything else given is refused (6700 for data,
 * 6B00 for a non-zero P1 or P2), never ignored. */
#define TAKES_DATA 0x01
#define TAKES_P1   0x02
#define TAKES_P2   0x04

static const struct {
	uint8_t cla; /* without the chaining bit */
	uint8_t ins;
	uint8_t takes;
	kc_handler fn;
} kc_commands[] = {
    {0x00, 0xA4, TAKES_DATA | TAKES_P1 | TAKES_P2, cmd_select}, /* SELECT */
    {0x00, 0x20, TAKES_DATA | TAKES_P2, kc_cmd_verify},         /* VERIFY */
    {0x80, 0x10, TAKES_DATA, kc_cmd_create_zone},               /* CREATE ZONE: blank -> CA */
    {0x80, 0x12, TAKES_DATA, kc_cmd_enrol_sign},                /* ENROL SIGN (CA) */
    {0x80, 0x14, TAKES_DATA, kc_cmd_enrol},                     /* ENROL: blank -> EP11 */
    {0x80, 0x16, 0, kc_cmd_get_device},                         /* GET DEVICE */
    {0x80, 0x18, 0, kc_cmd_copy_begin},                         /* COPY BEGIN (destination) */
    {0x80, 0x1A, TAKES_DATA, kc_cmd_copy_export},               /* COPY EXPORT (source) */
    {0x80, 0x1C, TAKES_DATA, kc_cmd_copy_import},               /* COPY IMPORT (destination) */
    {0x80, 0x1E, 0, kc_cmd_unblock_challenge},                  /* UNBLOCK CHALLENGE (EP11) */
    {0x80, 0x22, TAKES_DATA, kc_cmd_unblock_sign},              /* UNBLOCK SIGN (CA) */
    {0x80, 0x24, TAKES_DATA, kc_cmd_unblock},                   /* UNBLOCK (EP11) */
    {0x80, 0x26, TAKES_DATA | TAKES_P2, cmd_change_pin},        /* CHANGE PIN */
    {0x80, 0x30, 0, kc_cmd_gen_sigkey},                         /* GENERATE SIGNATURE KEY */
    {0x80, 0x32, 0, kc_cmd_get_sigkey},                         /* GET SIGNATURE KEY */
    {0x80, 0x34, TAKES_DATA, kc_cmd_sign},                      /* SIGN a SHA-512 digest */
    {0x80, 0x40, TAKES_DATA, kc_cmd_gen_part},                  /* GENERATE KEY PART */
    {0x80, 0x42, TAKES_P1, kc_cmd_part_info},                   /* KEY PART INFO */
    {0x80, 0x44, TAKES_DATA | TAKES_P1, kc_cmd_envelope},       /* ENVELOPE KEY PART */
    {0x80, 0x46, TAKES_DATA, kc_cmd_set_anchor},                /* SET ANCHOR */
};

#define INS_GET_RESPONSE 0xC0

static size_t sw_only(uint8_t *resp, uint16_t sw)
{
	resp[0] = (uint8_t)(sw >> 8);
	resp[1] = (uint8_t)sw;
	return 2;
}

/* Up to room bytes of the pending response, then 9000 or 61xx. */
static size_t send_pending(struct kc_card *c, size_t want, uint8_t *resp, size_t max)
{
	size_t left = c->resp_len - c->resp_off, n = left;

	if (n > want)
		n = want;
	if (n > max - 2)
		n = max - 2;
	memcpy(resp, c->resp + c->resp_off, n);
	c->resp_off += n;
	left -= n;
	if (left == 0) {
		OPENSSL_cleanse(c->resp, c->resp_len);
		c->resp_len = c->resp_off = 0;
		return n + sw_only(resp + n, SW_OK);
	}
	return n + sw_only(resp + n, (uint16_t)(SW_MORE | (left > 0xFF ? 0 : left)));
}

static void chain_drop(struct kc_card *c)
{
	OPENSSL_cleanse(c->chain, c->chain_len);
	c->chain_len = 0;
	c->chain_ins = 0;
}

size_t kc_card_apdu(struct kc_card *c, const uint8_t *cmd, size_t n, uint8_t *resp, size_t max)
{
	struct kc_apdu a = {0};
	struct kc_out o;
	size_t lc = 0, le = 0, i;
	bool chained, found = false;
	kc_handler fn = NULL;
	uint8_t takes = 0;
	uint16_t sw;

	if (max < 2)
		return 0;
	if (c->mute)
		return sw_only(resp, SW_MUTE);
	if (n < 4)
		return sw_only(resp, SW_WRONG_LENGTH);
	a.cla = cmd[0] & (uint8_t)~0x10;
	chained = (cmd[0] & 0x10) != 0;
	a.ins = cmd[1];
	a.p1 = cmd[2];
	a.p2 = cmd[3];
	if (n == 5) {
		le = cmd[4] == 0 ? 256 : cmd[4];
	} else if (n > 5) {
		lc = cmd[4];
		if (lc == 0 || (n != 5 + lc && n != 6 + lc))
			return sw_only(resp, SW_WRONG_LENGTH);
		a.data = cmd + 5;
		a.n = lc;
		if (n == 6 + lc)
			le = cmd[5 + lc] == 0 ? 256 : cmd[5 + lc];
	}
	if (a.cla != 0x00 && a.cla != 0x80)
		return sw_only(resp, SW_CLA);

	if (a.cla == 0x00 && a.ins == INS_GET_RESPONSE && !chained) {
		if (c->resp_len == 0)
			return sw_only(resp, SW_CONDITIONS);
		if (a.p1 != 0 || a.p2 != 0)
			return sw_only(resp, SW_WRONG_P1P2);
		if (a.n > 0)
			return sw_only(resp, SW_WRONG_LENGTH);
		return send_pending(c, le == 0 ? 256 : le, resp, max);
	}
	/* any other command drops a response not read to the end */
	OPENSSL_cleanse(c->resp, c->resp_len);
	c->resp_len = c->resp_off = 0;

	for (i = 0; i < sizeof(kc_commands) / sizeof(kc_commands[0]); i++) {
		if (kc_commands[i].ins == a.ins) {
			found = true;
			if (kc_commands[i].cla == a.cla) {
				fn = kc_commands[i].fn;
				takes = kc_commands[i].takes;
			}
		}
	}
	if (fn == NULL) {
		chain_drop(c);
		return sw_only(resp, found ? SW_CLA : SW_INS);
	}
	if ((a.n > 0 || chained) && !(takes & TAKES_DATA)) {
		chain_drop(c);
		return sw_only(resp, SW_WRONG_LENGTH);
	}
	if ((a.p1 != 0 && !(takes & TAKES_P1)) || (a.p2 != 0 && !(takes & TAKES_P2))) {
		chain_drop(c);
		return sw_only(resp, SW_WRONG_P1P2);
	}

	/* command chaining: every link names the same command */
	if (c->chain_len > 0 || c->chain_ins != 0) {
		if (c->chain_ins != a.ins || c->chain_p1 != a.p1 || c->chain_p2 != a.p2) {
			chain_drop(c);
			return sw_only(resp, SW_CONDITIONS);
		}
	}
	if (chained || c->chain_ins != 0) {
		if (a.n > KC_IO_MAX - c->chain_len) {
			chain_drop(c);
			return sw_only(resp, SW_WRONG_LENGTH);
		}
		memcpy(c->chain + c->chain_len, a.data, a.n);
		c->chain_len += a.n;
		if (chained) {
			c->chain_ins = a.ins;
			c->chain_p1 = a.p1;
			c->chain_p2 = a.p2;
			return sw_only(resp, SW_OK);
		}
		a.data = c->chain;
		a.n = c->chain_len;
	}

	o.p = c->resp;
	o.len = 0;
	o.cap = KC_IO_MAX;
	sw = fn(c, &a, &o);
	chain_drop(c);
	if (sw != SW_OK || o.len == 0) {
		OPENSSL_cleanse(c->resp, o.len);
		return sw_only(resp, sw);
	}
	/* up to Le bytes (256 when absent) now, the rest by GET RESPONSE */
	c->resp_len = o.len;
	c->resp_off = 0;
	return send_pending(c, le == 0 ? 256 : le, resp, max);
}
