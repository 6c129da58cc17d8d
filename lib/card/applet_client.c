/* The kyok applet's commands, from the workstation's side (docs/cards.md): what a card is,
 * and the card-to-card exchanges of the smart card utility (zone, enrolment, unblock, CA
 * backup), each a few APDUs through ky_card_command. No secret passes through here but the
 * PINs the caller gives, which are cleansed from every buffer they were copied to. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/card.h"
#include "kyok/err.h"

#define APP_CLA           0x80
#define APP_CREATE_ZONE   0x10
#define APP_ENROL_SIGN    0x12
#define APP_ENROL         0x14
#define APP_GET_DEVICE    0x16
#define APP_COPY_BEGIN    0x18
#define APP_COPY_EXPORT   0x1A
#define APP_COPY_IMPORT   0x1C
#define APP_UNBLOCK_CHAL  0x1E
#define APP_UNBLOCK_SIGN  0x22
#define APP_UNBLOCK       0x24
#define APP_CHANGE_PIN    0x26
#define APP_GEN_SIGKEY    0x30
#define APP_GET_SIGKEY    0x32
#define APP_SIGN          0x34
#define APP_GEN_PART      0x40
#define APP_PART_INFO     0x42
#define APP_ENVELOPE      0x44
#define APP_SET_ANCHOR    0x46
#define APP_CHALLENGE_LEN 32
#define APP_INFO_LEN      (7 + 2 * KY_CARD_ID_LEN)
#define APP_VP_LEN        32

static const uint8_t app_atr[] = {0x3B, 0x88, 0x80, 0x01, 'k', 'y', 'o', 'k', 'c', 'a', 'r', 'd'};

/* A field list under construction or parsed: 2-byte big-endian length, then the bytes. */
struct app_field {
	const uint8_t *p;
	size_t n;
};

static int app_put(uint8_t *b, size_t max, size_t *len, const void *p, size_t n)
{
	if (n > 0xFFFF || *len + 2 + n > max)
		return KY_ERR_TOO_LARGE;
	b[*len] = (uint8_t)(n >> 8);
	b[*len + 1] = (uint8_t)n;
	if (n > 0)
		memcpy(b + *len + 2, p, n);
	*len += 2 + n;
	return 0;
}

/* Exactly count fields, nothing after them. Pure. */
static bool app_fields(const uint8_t *b, size_t n, struct app_field *f, size_t count)
{
	size_t off = 0;

	for (size_t i = 0; i < count; i++) {
		if (n - off < 2)
			return false;
		f[i].n = (size_t)b[off] << 8 | b[off + 1];
		off += 2;
		if (n - off < f[i].n)
			return false;
		f[i].p = b + off;
		off += f[i].n;
	}
	return off == n;
}

static const char *app_what(uint8_t ins)
{
	switch (ins) {
	case APP_CREATE_ZONE:
		return "CREATE ZONE";
	case APP_ENROL_SIGN:
		return "ENROL SIGN";
	case APP_ENROL:
		return "ENROL";
	case APP_GET_DEVICE:
		return "GET DEVICE";
	case APP_COPY_BEGIN:
		return "COPY BEGIN";
	case APP_COPY_EXPORT:
		return "COPY EXPORT";
	case APP_COPY_IMPORT:
		return "COPY IMPORT";
	case APP_UNBLOCK_CHAL:
		return "UNBLOCK CHALLENGE";
	case APP_UNBLOCK_SIGN:
		return "UNBLOCK SIGN";
	case APP_UNBLOCK:
		return "UNBLOCK";
	case APP_CHANGE_PIN:
		return "CHANGE PIN";
	case APP_GEN_SIGKEY:
		return "GENERATE SIGNATURE KEY";
	case APP_GET_SIGKEY:
		return "GET SIGNATURE KEY";
	case APP_SIGN:
		return "SIGN";
	case APP_GEN_PART:
		return "GENERATE KEY PART";
	case APP_PART_INFO:
		return "KEY PART INFO";
	case APP_ENVELOPE:
		return "ENVELOPE KEY PART";
	case APP_SET_ANCHOR:
		return "SET ANCHOR";
	}
	return "command";
}

/* One applet command: 0 on 9000, else the error its status word means (one home for that
 * mapping); *sw keeps the status word for callers that take one refusal as an answer. */
static int app_cmd(struct ky_card *c, const char *reader, uint8_t ins, uint8_t p1, uint8_t p2,
                   const uint8_t *data, size_t n, uint8_t *resp, size_t max, size_t *resp_len,
                   uint16_t *sw, char *err, size_t errlen)
{
	const uint8_t hdr[4] = {APP_CLA, ins, p1, p2};
	int r = KY_ERR_INTERNAL;
	size_t none = 0;

	*sw = 0;
	if ((r = ky_card_command(c, hdr, data, n, resp, max, resp_len != NULL ? resp_len : &none,
	                         sw, err, errlen)) != 0)
		goto out;
	switch (*sw) {
	case 0x9000:
		r = 0;
		goto out;
	case 0x6982:
		r = KY_ERR_CARD_PIN_NEEDED;
		break;
	case 0x6983:
		r = KY_ERR_CARD_BLOCKED;
		break;
	case 0x6985:
		r = KY_ERR_CARD_NOT_ALLOWED;
		break;
	case 0x6A80:
		r = KY_ERR_CARD_BAD_DATA;
		break;
	case 0x6581:
		r = KY_ERR_CARD_WRITE;
		break;
	case 0x6A84:
		r = KY_ERR_CARD_FULL;
		break;
	default:
		r = KY_ERR_CARD_PROTOCOL;
		break;
	}
	snprintf(err, errlen, "card in reader '%s': %s answered %04X: %s", reader, app_what(ins),
	         *sw, ky_err_message(r));
out:
	return r;
}

int ky_card_info_parse(const uint8_t *b, size_t n, struct ky_card_info *info, char *why,
                       size_t whylen)
{
	int r = KY_ERR_CARD_PROTOCOL;

	memset(info, 0, sizeof(*info));
	if (n != APP_INFO_LEN) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(why, whylen, "SELECT answered %zu bytes, not %d", n, APP_INFO_LEN);
		goto out;
	}
	if (b[0] != 0x01) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(why, whylen, "applet version %u, not 1", b[0]);
		goto out;
	}
	if (b[1] > KY_CARD_EP11 || b[2] > 1 || b[6] > 1 || b[5] > KY_CARD_PARTS_MAX) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(why, whylen, "SELECT answered a state no card can be in");
		goto out;
	}
	info->kind = (enum ky_card_kind)b[1];
	info->blocked = b[2] == 1;
	info->tries1 = b[3];
	info->tries2 = b[4];
	info->parts = b[5];
	info->sigkey = b[6] == 1;
	memcpy(info->zone_id, b + 7, KY_CARD_ID_LEN);
	memcpy(info->device_id, b + 7 + KY_CARD_ID_LEN, KY_CARD_ID_LEN);
	r = 0;
out:
	return r;
}

int ky_card_status(struct ky_card *c, struct ky_card_info *info, char *err, size_t errlen)
{
	uint8_t b[256];
	size_t n = 0;
	char why[128];
	int r = KY_ERR_INTERNAL;

	if ((r = ky_card_select(c, b, sizeof(b), &n, err, errlen)) != 0)
		goto out;
	if ((r = ky_card_info_parse(b, n, info, why, sizeof(why))) != 0) {
		snprintf(err, errlen, "card in reader '%s': %s: %s", ky_card_reader(c), why,
		         ky_err_message(r));
		goto out;
	}
	r = 0;
out:
	return r;
}

bool ky_card_is_software(const struct ky_card *c)
{
	uint8_t atr[64];
	size_t n = ky_card_atr(c, atr, sizeof(atr));

	/* the ATR and its check byte */
	return n == sizeof(app_atr) + 1 && memcmp(atr, app_atr, sizeof(app_atr)) == 0;
}

int ky_card_create_zone(struct ky_card *c, const char *pin1, const char *pin2, char *err,
                        size_t errlen)
{
	uint8_t d[2 * (2 + KY_CARD_PIN_MAX)];
	size_t n = 0;
	uint16_t sw = 0;
	int r = KY_ERR_INTERNAL;

	if ((r = app_put(d, sizeof(d), &n, pin1, strlen(pin1))) != 0 ||
	    (r = app_put(d, sizeof(d), &n, pin2, strlen(pin2))) != 0) {
		snprintf(err, errlen, "a card PIN has %d to %d characters", KY_CARD_PIN_MIN,
		         KY_CARD_PIN_MAX);
		r = KY_ERR_USAGE;
		goto out;
	}
	if ((r = app_cmd(c, ky_card_reader(c), APP_CREATE_ZONE, 0, 0, d, n, NULL, 0, NULL, &sw, err,
	                 errlen)) != 0)
		goto out;
	r = 0;
out:
	OPENSSL_cleanse(d, sizeof(d));
	return r;
}

int ky_card_enrol(struct ky_card *ca, struct ky_card *blank, const char *pin, char *err,
                  size_t errlen)
{
	int r = KY_ERR_NOMEM;
	uint8_t *dev = NULL, *cert = NULL, *d = NULL;
	size_t dev_len = 0, cert_len = 0, n = 0;
	struct app_field f[2];
	uint16_t sw = 0;

	if ((dev = malloc(KY_CARD_DATA_MAX)) == NULL || (cert = malloc(KY_CARD_DATA_MAX)) == NULL ||
	    (d = malloc(KY_CARD_DATA_MAX)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "%s", ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(blank, ky_card_reader(blank), APP_GET_DEVICE, 0, 0, NULL, 0, dev,
	                 KY_CARD_DATA_MAX, &dev_len, &sw, err, errlen)) != 0)
		goto out;
	if (!app_fields(dev, dev_len, f, 2)) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen, "card in reader '%s': GET DEVICE answered no field list: %s",
		         ky_card_reader(blank), ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(ca, ky_card_reader(ca), APP_ENROL_SIGN, 0, 0, f[0].p, f[0].n, cert,
	                 KY_CARD_DATA_MAX, &cert_len, &sw, err, errlen)) != 0)
		goto out;
	if ((r = app_put(d, KY_CARD_DATA_MAX, &n, cert, cert_len)) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, pin, strlen(pin))) != 0) {
		snprintf(err, errlen, "card in reader '%s': ENROL: %s", ky_card_reader(blank),
		         ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(blank, ky_card_reader(blank), APP_ENROL, 0, 0, d, n, NULL, 0, NULL, &sw,
	                 err, errlen)) != 0)
		goto out;
	r = 0;
out:
	if (d != NULL)
		OPENSSL_cleanse(d, KY_CARD_DATA_MAX);
	free(d);
	free(cert);
	free(dev);
	return r;
}

int ky_card_unblock(struct ky_card *ca, struct ky_card *ep11, const char *pin, char *err,
                    size_t errlen)
{
	int r = KY_ERR_NOMEM;
	uint8_t *chal = NULL, *sig = NULL, *d = NULL;
	size_t chal_len = 0, sig_len = 0, n = 0;
	struct app_field f[2];
	uint16_t sw = 0;

	if ((chal = malloc(KY_CARD_DATA_MAX)) == NULL || (sig = malloc(KY_CARD_DATA_MAX)) == NULL ||
	    (d = malloc(KY_CARD_DATA_MAX)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "%s", ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(ep11, ky_card_reader(ep11), APP_UNBLOCK_CHAL, 0, 0, NULL, 0, chal,
	                 KY_CARD_DATA_MAX, &chal_len, &sw, err, errlen)) != 0)
		goto out;
	if (chal_len < APP_CHALLENGE_LEN ||
	    !app_fields(chal + APP_CHALLENGE_LEN, chal_len - APP_CHALLENGE_LEN, f, 2)) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen,
		         "card in reader '%s': UNBLOCK CHALLENGE answered no challenge and "
		         "field list: %s",
		         ky_card_reader(ep11), ky_err_message(r));
		goto out;
	}
	/* UNBLOCK SIGN takes fields(challenge, zone certificate) */
	if ((r = app_put(d, KY_CARD_DATA_MAX, &n, chal, APP_CHALLENGE_LEN)) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, f[1].p, f[1].n)) != 0) {
		snprintf(err, errlen, "card in reader '%s': UNBLOCK SIGN: %s", ky_card_reader(ca),
		         ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(ca, ky_card_reader(ca), APP_UNBLOCK_SIGN, 0, 0, d, n, sig,
	                 KY_CARD_DATA_MAX, &sig_len, &sw, err, errlen)) != 0)
		goto out;
	n = 0;
	if ((r = app_put(d, KY_CARD_DATA_MAX, &n, sig, sig_len)) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, pin, strlen(pin))) != 0) {
		snprintf(err, errlen, "card in reader '%s': UNBLOCK: %s", ky_card_reader(ep11),
		         ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(ep11, ky_card_reader(ep11), APP_UNBLOCK, 0, 0, d, n, NULL, 0, NULL, &sw,
	                 err, errlen)) != 0)
		goto out;
	r = 0;
out:
	if (d != NULL)
		OPENSSL_cleanse(d, KY_CARD_DATA_MAX);
	free(d);
	free(sig);
	free(chal);
	return r;
}

int ky_card_backup_ca(struct ky_card *ca, struct ky_card *blank, const char *pin1, const char *pin2,
                      char *err, size_t errlen)
{
	int r = KY_ERR_NOMEM;
	uint8_t *begin = NULL, *sealed = NULL, *d = NULL;
	size_t begin_len = 0, sealed_len = 0, n = 0;
	struct app_field f[2], s[2];
	uint16_t sw = 0;

	if ((begin = malloc(KY_CARD_DATA_MAX)) == NULL ||
	    (sealed = malloc(KY_CARD_DATA_MAX)) == NULL || (d = malloc(KY_CARD_DATA_MAX)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "%s", ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(blank, ky_card_reader(blank), APP_COPY_BEGIN, 0, 0, NULL, 0, begin,
	                 KY_CARD_DATA_MAX, &begin_len, &sw, err, errlen)) != 0)
		goto out;
	if (begin_len < APP_CHALLENGE_LEN ||
	    !app_fields(begin + APP_CHALLENGE_LEN, begin_len - APP_CHALLENGE_LEN, f, 2)) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen,
		         "card in reader '%s': COPY BEGIN answered no challenge and field list: %s",
		         ky_card_reader(blank), ky_err_message(r));
		goto out;
	}
	/* COPY EXPORT to a blank card: fields(its challenge, its device public key) */
	if ((r = app_put(d, KY_CARD_DATA_MAX, &n, begin, APP_CHALLENGE_LEN)) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, f[0].p, f[0].n)) != 0) {
		snprintf(err, errlen, "card in reader '%s': COPY EXPORT: %s", ky_card_reader(ca),
		         ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(ca, ky_card_reader(ca), APP_COPY_EXPORT, 0, 0, d, n, sealed,
	                 KY_CARD_DATA_MAX, &sealed_len, &sw, err, errlen)) != 0)
		goto out;
	if (!app_fields(sealed, sealed_len, s, 2)) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen, "card in reader '%s': COPY EXPORT answered no field list: %s",
		         ky_card_reader(ca), ky_err_message(r));
		goto out;
	}
	n = 0;
	if ((r = app_put(d, KY_CARD_DATA_MAX, &n, s[0].p, s[0].n)) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, s[1].p, s[1].n)) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, pin1, strlen(pin1))) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, pin2, strlen(pin2))) != 0) {
		snprintf(err, errlen, "card in reader '%s': COPY IMPORT: %s", ky_card_reader(blank),
		         ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(blank, ky_card_reader(blank), APP_COPY_IMPORT, 0, 0, d, n, NULL, 0, NULL,
	                 &sw, err, errlen)) != 0)
		goto out;
	r = 0;
out:
	if (d != NULL)
		OPENSSL_cleanse(d, KY_CARD_DATA_MAX);
	if (sealed != NULL)
		OPENSSL_cleanse(sealed, KY_CARD_DATA_MAX);
	free(d);
	free(sealed);
	free(begin);
	return r;
}

int ky_card_copy_ep11(struct ky_card *src, struct ky_card *dst, char *err, size_t errlen)
{
	int r = KY_ERR_NOMEM;
	uint8_t *begin = NULL, *sealed = NULL, *d = NULL;
	size_t begin_len = 0, sealed_len = 0, n = 0;
	struct app_field f[2], s[2];
	uint16_t sw = 0;

	if ((begin = malloc(KY_CARD_DATA_MAX)) == NULL ||
	    (sealed = malloc(KY_CARD_DATA_MAX)) == NULL || (d = malloc(KY_CARD_DATA_MAX)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "%s", ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(dst, ky_card_reader(dst), APP_COPY_BEGIN, 0, 0, NULL, 0, begin,
	                 KY_CARD_DATA_MAX, &begin_len, &sw, err, errlen)) != 0)
		goto out;
	if (begin_len < APP_CHALLENGE_LEN ||
	    !app_fields(begin + APP_CHALLENGE_LEN, begin_len - APP_CHALLENGE_LEN, f, 2)) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen,
		         "card in reader '%s': COPY BEGIN answered no challenge and field list: %s",
		         ky_card_reader(dst), ky_err_message(r));
		goto out;
	}
	/* COPY EXPORT to an EP11 card: fields(its challenge, its zone certificate) */
	if ((r = app_put(d, KY_CARD_DATA_MAX, &n, begin, APP_CHALLENGE_LEN)) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, f[1].p, f[1].n)) != 0) {
		snprintf(err, errlen, "card in reader '%s': COPY EXPORT: %s", ky_card_reader(src),
		         ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(src, ky_card_reader(src), APP_COPY_EXPORT, 0, 0, d, n, sealed,
	                 KY_CARD_DATA_MAX, &sealed_len, &sw, err, errlen)) != 0)
		goto out;
	if (!app_fields(sealed, sealed_len, s, 2)) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen, "card in reader '%s': COPY EXPORT answered no field list: %s",
		         ky_card_reader(src), ky_err_message(r));
		goto out;
	}
	n = 0;
	if ((r = app_put(d, KY_CARD_DATA_MAX, &n, s[0].p, s[0].n)) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, s[1].p, s[1].n)) != 0) {
		snprintf(err, errlen, "card in reader '%s': COPY IMPORT: %s", ky_card_reader(dst),
		         ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(dst, ky_card_reader(dst), APP_COPY_IMPORT, 0, 0, d, n, NULL, 0, NULL, &sw,
	                 err, errlen)) != 0)
		goto out;
	r = 0;
out:
	if (d != NULL)
		OPENSSL_cleanse(d, KY_CARD_DATA_MAX);
	if (sealed != NULL)
		OPENSSL_cleanse(sealed, KY_CARD_DATA_MAX);
	free(d);
	free(sealed);
	free(begin);
	return r;
}

int ky_card_change_pin(struct ky_card *c, uint8_t pin_ref, const char *new_pin, char *err,
                       size_t errlen)
{
	uint16_t sw = 0;
	int r = KY_ERR_INTERNAL;

	if ((r = app_cmd(c, ky_card_reader(c), APP_CHANGE_PIN, 0, pin_ref, (const uint8_t *)new_pin,
	                 strlen(new_pin), NULL, 0, NULL, &sw, err, errlen)) != 0)
		goto out;
	r = 0;
out:
	return r;
}

int ky_card_sigkey(struct ky_card *c, uint8_t *spki, size_t max, size_t *len, bool *present,
                   char *err, size_t errlen)
{
	uint16_t sw = 0;
	int r = KY_ERR_INTERNAL;

	*present = false;
	*len = 0;
	r = app_cmd(c, ky_card_reader(c), APP_GET_SIGKEY, 0, 0, NULL, 0, spki, max, len, &sw, err,
	            errlen);
	if (r != 0 && sw == 0x6A88) {
		r = 0; /* no signature key: that is the answer */
		goto out;
	}
	if (r != 0)
		goto out;
	*present = true;
	r = 0;
out:
	return r;
}

int ky_card_sigkey_generate(struct ky_card *c, uint8_t *spki, size_t max, size_t *len, char *err,
                            size_t errlen)
{
	uint16_t sw = 0;
	int r = KY_ERR_INTERNAL;

	*len = 0;
	if ((r = app_cmd(c, ky_card_reader(c), APP_GEN_SIGKEY, 0, 0, NULL, 0, spki, max, len, &sw,
	                 err, errlen)) != 0)
		goto out;
	r = 0;
out:
	return r;
}

int ky_card_sign(struct ky_card *c, const uint8_t digest[KY_CARD_DIGEST_LEN], uint8_t *sig,
                 size_t max, size_t *len, char *err, size_t errlen)
{
	uint16_t sw = 0;
	int r = KY_ERR_INTERNAL;

	*len = 0;
	if ((r = app_cmd(c, ky_card_reader(c), APP_SIGN, 0, 0, digest, KY_CARD_DIGEST_LEN, sig, max,
	                 len, &sw, err, errlen)) != 0)
		goto out;
	r = 0;
out:
	return r;
}

int ky_card_part_info(struct ky_card *c, unsigned index, uint8_t vp[32],
                      char desc[KY_CARD_DESC_MAX + 1], char *err, size_t errlen)
{
	uint8_t b[APP_VP_LEN + KY_CARD_DESC_MAX + 2];
	size_t n = 0;
	uint16_t sw = 0;
	int r = KY_ERR_INTERNAL;

	if (index >= KY_CARD_PARTS_MAX) {
		r = KY_ERR_USAGE;
		snprintf(err, errlen, "a card holds key parts 0 to %d", KY_CARD_PARTS_MAX - 1);
		goto out;
	}
	if ((r = app_cmd(c, ky_card_reader(c), APP_PART_INFO, (uint8_t)index, 0, NULL, 0, b,
	                 sizeof(b), &n, &sw, err, errlen)) != 0)
		goto out;
	if (n < APP_VP_LEN + 1 || n > APP_VP_LEN + KY_CARD_DESC_MAX) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen, "card in reader '%s': KEY PART INFO answered %zu bytes: %s",
		         ky_card_reader(c), n, ky_err_message(r));
		goto out;
	}
	memcpy(vp, b, APP_VP_LEN);
	for (size_t i = APP_VP_LEN; i < n; i++) {
		if (b[i] < 0x20 || b[i] > 0x7E) {
			r = KY_ERR_CARD_PROTOCOL;
			snprintf(err, errlen,
			         "card in reader '%s': KEY PART INFO answered a description that "
			         "is not printable: %s",
			         ky_card_reader(c), ky_err_message(r));
			goto out;
		}
	}
	memcpy(desc, b + APP_VP_LEN, n - APP_VP_LEN);
	desc[n - APP_VP_LEN] = '\0';
	r = 0;
out:
	return r;
}

int ky_card_part_generate(struct ky_card *c, const char *desc, unsigned *index, uint8_t vp[32],
                          char *err, size_t errlen)
{
	uint8_t b[1 + APP_VP_LEN];
	size_t n = 0;
	uint16_t sw = 0;
	int r = KY_ERR_INTERNAL;

	if ((r = app_cmd(c, ky_card_reader(c), APP_GEN_PART, 0, 0, (const uint8_t *)desc,
	                 strlen(desc), b, sizeof(b), &n, &sw, err, errlen)) != 0)
		goto out;
	if (n != sizeof(b) || b[0] >= KY_CARD_PARTS_MAX) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen,
		         "card in reader '%s': GENERATE KEY PART answered %zu bytes: %s",
		         ky_card_reader(c), n, ky_err_message(r));
		goto out;
	}
	*index = b[0];
	memcpy(vp, b + 1, APP_VP_LEN);
	r = 0;
out:
	return r;
}

int ky_card_set_anchor(struct ky_card *c, const uint8_t *der, size_t n, uint8_t fp[32], char *err,
                       size_t errlen)
{
	size_t len = 0;
	uint16_t sw = 0;
	int r = KY_ERR_INTERNAL;

	if ((r = app_cmd(c, ky_card_reader(c), APP_SET_ANCHOR, 0, 0, der, n, fp, 32, &len, &sw, err,
	                 errlen)) != 0)
		goto out;
	if (len != 32) {
		r = KY_ERR_CARD_PROTOCOL;
		snprintf(err, errlen, "card in reader '%s': SET ANCHOR answered %zu bytes: %s",
		         ky_card_reader(c), len, ky_err_message(r));
		goto out;
	}
	r = 0;
out:
	return r;
}

int ky_card_part_envelope(struct ky_card *c, unsigned index, const uint8_t *importer,
                          size_t importer_len, const uint8_t *identity, size_t identity_len,
                          uint8_t *env, size_t max, size_t *len, char *err, size_t errlen)
{
	uint8_t *d = NULL;
	size_t n = 0;
	uint16_t sw = 0;
	int r = KY_ERR_INTERNAL;

	*len = 0;
	if (index >= KY_CARD_PARTS_MAX) {
		r = KY_ERR_USAGE;
		snprintf(err, errlen, "a card holds key parts 0 to %d", KY_CARD_PARTS_MAX - 1);
		goto out;
	}
	if ((d = malloc(KY_CARD_DATA_MAX)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "%s", ky_err_message(r));
		goto out;
	}
	if ((r = app_put(d, KY_CARD_DATA_MAX, &n, importer, importer_len)) != 0 ||
	    (r = app_put(d, KY_CARD_DATA_MAX, &n, identity, identity_len)) != 0) {
		snprintf(err, errlen, "card in reader '%s': ENVELOPE KEY PART: %s",
		         ky_card_reader(c), ky_err_message(r));
		goto out;
	}
	if ((r = app_cmd(c, ky_card_reader(c), APP_ENVELOPE, (uint8_t)index, 0, d, n, env, max, len,
	                 &sw, err, errlen)) != 0)
		goto out;
	r = 0;
out:
	free(d);
	return r;
}
