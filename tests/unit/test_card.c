/* Unit tests of the kyok card applet (card/): every rule the card enforces is tripped
 * through kc_card_apdu, as a host would send it, and every good path is checked with
 * OpenSSL from outside the card. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four headers above first */
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "card/applet.h"
#include "card/internal.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

static char tmpdir[256];
static unsigned card_serial;

#define PIN_CA1  "ca-pin-one"
#define PIN_CA2  "ca-pin-two"
#define PIN_EP11 "ep11-pin"

static const uint8_t aid[] = {0xF0, 0x6B, 0x79, 0x6F, 0x6B, 0x01};

struct card {
	struct kc_card *c;
	char eeprom[300];
	char key[300];
};

static void card_paths(struct card *k)
{
	unsigned n = ++card_serial;

	snprintf(k->eeprom, sizeof(k->eeprom), "%s/card%u.eeprom", tmpdir, n);
	snprintf(k->key, sizeof(k->key), "%s/card%u.chipkey", tmpdir, n);
}

static void card_new(struct card *k)
{
	char err[512];

	card_paths(k);
	assert_int_equal(kc_card_open(k->eeprom, k->key, &k->c, err, sizeof(err)), 0);
}

static void card_reopen(struct card *k)
{
	char err[512];

	kc_card_free(k->c);
	k->c = NULL;
	assert_int_equal(kc_card_open(k->eeprom, k->key, &k->c, err, sizeof(err)), 0);
}

static void card_free(struct card *k)
{
	kc_card_free(k->c);
	k->c = NULL;
}

/* Sends one command the way a host does: data longer than 255 bytes by command chaining,
 * a long response collected by GET RESPONSE. The response data is appended to out. */
static uint16_t tx(struct kc_card *c, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
                   const void *data, size_t n, struct ky_buf *out)
{
	uint8_t cmd[261], resp[258];
	size_t off = 0, rl, chunk, len;
	uint16_t sw;
	bool last;

	do {
		chunk = n - off > 255 ? 255 : n - off;
		last = off + chunk == n;
		cmd[0] = (uint8_t)(cla | (last ? 0 : 0x10));
		cmd[1] = ins;
		cmd[2] = p1;
		cmd[3] = p2;
		len = 4;
		if (chunk > 0) {
			cmd[4] = (uint8_t)chunk;
			memcpy(cmd + 5, (const uint8_t *)data + off, chunk);
			len = 5 + chunk;
		}
		rl = kc_card_apdu(c, cmd, len, resp, sizeof(resp));
		assert_true(rl >= 2);
		sw = (uint16_t)(resp[rl - 2] << 8 | resp[rl - 1]);
		off += chunk;
		if (!last && sw != 0x9000)
			return sw;
	} while (off < n);
	for (;;) {
		if (out != NULL && rl > 2)
			assert_int_equal(ky_buf_append(out, resp, rl - 2), 0);
		if ((sw & 0xFF00) != 0x6100)
			return sw;
		cmd[0] = 0x00;
		cmd[1] = 0xC0;
		cmd[2] = cmd[3] = 0;
		cmd[4] = (uint8_t)sw;
		rl = kc_card_apdu(c, cmd, 5, resp, sizeof(resp));
		assert_true(rl >= 2);
		sw = (uint16_t)(resp[rl - 2] << 8 | resp[rl - 1]);
	}
}

static uint16_t verify(struct kc_card *c, uint8_t which, const char *pin)
{
	return tx(c, 0x00, 0x20, 0x00, which, pin, strlen(pin), NULL);
}

static void fields2(struct ky_buf *b, const void *a, size_t an, const void *c, size_t cn)
{
	assert_int_equal(kc_field_put(b, a, an), 0);
	assert_int_equal(kc_field_put(b, c, cn), 0);
}

static void select_info(struct kc_card *c, struct ky_buf *info)
{
	assert_int_equal(tx(c, 0x00, 0xA4, 0x04, 0x00, aid, sizeof(aid), info), 0x9000);
	assert_int_equal(info->len, 7 + 32 + 32);
}

static void make_ca(struct card *k)
{
	struct ky_buf d = {0};

	card_new(k);
	fields2(&d, PIN_CA1, strlen(PIN_CA1), PIN_CA2, strlen(PIN_CA2));
	assert_int_equal(tx(k->c, 0x80, 0x10, 0, 0, d.data, d.len, NULL), 0x9000);
	ky_buf_free(&d);
}

static void ca_login(struct card *ca)
{
	assert_int_equal(verify(ca->c, 1, PIN_CA1), 0x9000);
	assert_int_equal(verify(ca->c, 2, PIN_CA2), 0x9000);
}

/* GET DEVICE: fields(device SPKI, zone certificate). */
static void get_device(struct kc_card *c, struct ky_buf *dev, struct ky_buf *cert)
{
	struct ky_buf out = {0};
	struct kc_field f[2];

	assert_int_equal(tx(c, 0x80, 0x16, 0, 0, NULL, 0, &out), 0x9000);
	assert_true(kc_fields_parse(out.data, out.len, f, 2));
	if (dev != NULL)
		assert_int_equal(ky_buf_append(dev, f[0].p, f[0].n), 0);
	if (cert != NULL && f[1].n > 0)
		assert_int_equal(ky_buf_append(cert, f[1].p, f[1].n), 0);
	ky_buf_free(&out);
}

/* A blank card enrolled into ca's zone, its PIN PIN_EP11. */
static void make_ep11(struct card *ca, struct card *k)
{
	struct ky_buf dev = {0}, cert = {0}, d = {0};

	card_new(k);
	get_device(k->c, &dev, NULL);
	ca_login(ca);
	assert_int_equal(tx(ca->c, 0x80, 0x12, 0, 0, dev.data, dev.len, &cert), 0x9000);
	fields2(&d, cert.data, cert.len, PIN_EP11, strlen(PIN_EP11));
	assert_int_equal(tx(k->c, 0x80, 0x14, 0, 0, d.data, d.len, NULL), 0x9000);
	ky_buf_free(&dev);
	ky_buf_free(&cert);
	ky_buf_free(&d);
}

static void digest_of(const char *msg, uint8_t dg[64])
{
	unsigned int len = 64;

	assert_int_equal(EVP_Digest(msg, strlen(msg), dg, &len, EVP_sha512(), NULL), 1);
}

static void part_vp(struct kc_card *c, uint8_t idx, uint8_t vp[32], char *desc, size_t dlen)
{
	struct ky_buf out = {0};

	assert_int_equal(tx(c, 0x80, 0x42, idx, 0, NULL, 0, &out), 0x9000);
	assert_true(out.len > 32);
	memcpy(vp, out.data, 32);
	if (desc != NULL) {
		assert_true(out.len - 32 < dlen);
		memcpy(desc, out.data + 32, out.len - 32);
		desc[out.len - 32] = '\0';
	}
	ky_buf_free(&out);
}

/* ---- framing and blank cards ---- */

static void test_select_and_framing(void **state)
{
	struct card k;
	struct ky_buf info = {0};
	uint8_t atr[33], resp[258];
	static const uint8_t bad_aid[] = {0xF0, 0x6B, 0x79, 0x6F, 0x6B, 0x02};
	static const uint8_t short_apdu[] = {0x00, 0xA4, 0x04};
	static const uint8_t bad_lc[] = {0x00, 0xA4, 0x04, 0x00, 0x06, 0xF0};
	size_t n;

	(void)state;
	card_new(&k);
	n = kc_card_atr(k.c, atr, sizeof(atr));
	assert_true(n >= 2 && n <= 33);
	assert_int_equal(atr[0], 0x3B);
	select_info(k.c, &info);
	assert_int_equal(info.data[0], 1);             /* applet version */
	assert_int_equal(info.data[1], KC_TYPE_BLANK); /* a new card is blank */
	ky_buf_free(&info);
	assert_int_equal(tx(k.c, 0x00, 0xA4, 0x04, 0x00, bad_aid, sizeof(bad_aid), NULL), 0x6A82);
	assert_int_equal(tx(k.c, 0x80, 0x7E, 0, 0, NULL, 0, NULL), 0x6D00);
	assert_int_equal(tx(k.c, 0x40, 0x20, 0, 1, NULL, 0, NULL), 0x6E00);
	assert_int_equal(tx(k.c, 0x00, 0x10, 0, 0, NULL, 0, NULL), 0x6E00); /* proprietary INS */
	n = kc_card_apdu(k.c, short_apdu, sizeof(short_apdu), resp, sizeof(resp));
	assert_int_equal(n, 2);
	assert_int_equal(resp[0] << 8 | resp[1], 0x6700);
	n = kc_card_apdu(k.c, bad_lc, sizeof(bad_lc), resp, sizeof(resp));
	assert_int_equal(resp[0] << 8 | resp[1], 0x6700);
	/* GET RESPONSE with nothing pending */
	assert_int_equal(tx(k.c, 0x00, 0xC0, 0, 0, NULL, 0, NULL), 0x6985);
	/* what a command does not take is refused, not ignored */
	assert_int_equal(tx(k.c, 0x80, 0x16, 0, 0, "x", 1, NULL), 0x6700);
	assert_int_equal(tx(k.c, 0x80, 0x16, 1, 0, NULL, 0, NULL), 0x6B00);
	assert_int_equal(tx(k.c, 0x80, 0x16, 0, 1, NULL, 0, NULL), 0x6B00);
	assert_int_equal(tx(k.c, 0x80, 0x10, 0, 1, "x", 1, NULL), 0x6B00);
	/* Le is honoured: the rest comes by GET RESPONSE */
	{
		static const uint8_t get_device_le16[] = {0x80, 0x16, 0x00, 0x00, 0x10};
		struct ky_buf whole = {0};
		uint16_t sw;

		n = kc_card_apdu(k.c, get_device_le16, sizeof(get_device_le16), resp, sizeof(resp));
		assert_int_equal(n, 16 + 2);
		assert_int_equal(resp[16], 0x61);
		sw = tx(k.c, 0x80, 0x16, 0, 0, NULL, 0, &whole);
		assert_int_equal(sw, 0x9000);
		assert_memory_equal(whole.data, resp, 16);
		ky_buf_free(&whole);
	}
	/* a blank card has no PIN, no key, no parts */
	assert_int_equal(verify(k.c, 1, "123456"), 0x6985);
	assert_int_equal(tx(k.c, 0x80, 0x40, 0, 0, "d", 1, NULL), 0x6985);
	card_free(&k);
}

static void test_chain_mismatch(void **state)
{
	struct card k;
	uint8_t cmd[5 + 10] = {0x90, 0x10, 0, 0, 10}, resp[258];
	size_t n;

	(void)state;
	card_new(&k);
	n = kc_card_apdu(k.c, cmd, sizeof(cmd), resp, sizeof(resp));
	assert_int_equal(resp[n - 2] << 8 | resp[n - 1], 0x9000);
	/* the chain's next link names another command: the chain is dropped, refused */
	assert_int_equal(tx(k.c, 0x80, 0x14, 0, 0, "x", 1, NULL), 0x6985);
	/* the chain is gone: CREATE ZONE with only the second link's data is malformed */
	assert_int_equal(tx(k.c, 0x80, 0x10, 0, 0, "x", 1, NULL), 0x6A80);
	card_free(&k);
}

/* ---- CA cards ---- */

static void test_ca_create_and_two_pins(void **state)
{
	struct card ca, blank;
	struct ky_buf info = {0}, dev = {0}, d = {0};

	(void)state;
	card_new(&blank);
	get_device(blank.c, &dev, NULL);
	/* PINs must be 6..16 characters */
	fields2(&d, "12345", 5, PIN_CA2, strlen(PIN_CA2));
	assert_int_equal(tx(blank.c, 0x80, 0x10, 0, 0, d.data, d.len, NULL), 0x6A80);
	ky_buf_free(&d);
	make_ca(&ca);
	select_info(ca.c, &info);
	assert_int_equal(info.data[1], KC_TYPE_CA);
	assert_int_equal(info.data[3], KC_CA_TRIES);
	assert_int_equal(info.data[4], KC_CA_TRIES);
	ky_buf_free(&info);
	/* a CA card makes one zone */
	fields2(&d, PIN_CA1, strlen(PIN_CA1), PIN_CA2, strlen(PIN_CA2));
	assert_int_equal(tx(ca.c, 0x80, 0x10, 0, 0, d.data, d.len, NULL), 0x6985);
	/* nothing without a PIN, one PIN alone does nothing */
	assert_int_equal(tx(ca.c, 0x80, 0x12, 0, 0, dev.data, dev.len, NULL), 0x6982);
	assert_int_equal(verify(ca.c, 1, PIN_CA1), 0x9000);
	assert_int_equal(tx(ca.c, 0x80, 0x12, 0, 0, dev.data, dev.len, NULL), 0x6982);
	kc_card_reset(ca.c);
	assert_int_equal(verify(ca.c, 2, PIN_CA2), 0x9000);
	assert_int_equal(tx(ca.c, 0x80, 0x12, 0, 0, dev.data, dev.len, NULL), 0x6982);
	assert_int_equal(verify(ca.c, 1, PIN_CA1), 0x9000);
	assert_int_equal(tx(ca.c, 0x80, 0x12, 0, 0, dev.data, dev.len, NULL), 0x9000);
	/* a wrong PIN forgets the verified state of that PIN */
	assert_int_equal(verify(ca.c, 1, "wrong-pin"), 0x63C4);
	assert_int_equal(tx(ca.c, 0x80, 0x12, 0, 0, dev.data, dev.len, NULL), 0x6982);
	/* a CA card holds no EP11 contents */
	ca_login(&ca);
	assert_int_equal(tx(ca.c, 0x80, 0x30, 0, 0, NULL, 0, NULL), 0x6985);
	ky_buf_free(&d);
	ky_buf_free(&dev);
	card_free(&ca);
	card_free(&blank);
}

static void test_ca_five_wrong_block_for_ever(void **state)
{
	struct card ca;
	struct ky_buf info = {0};
	int i;

	(void)state;
	make_ca(&ca);
	/* a good PIN gives the tries back */
	for (i = 0; i < 4; i++)
		assert_int_equal(verify(ca.c, 2, "wrong-pin"), 0x63C0 | (4 - i));
	assert_int_equal(verify(ca.c, 2, PIN_CA2), 0x9000);
	assert_int_equal(tx(ca.c, 0x00, 0x20, 0x00, 2, NULL, 0, NULL), 0x9000);
	kc_card_reset(ca.c);
	assert_int_equal(tx(ca.c, 0x00, 0x20, 0x00, 2, NULL, 0, NULL), 0x63C5);
	/* five wrong: blocked, the tries survive a removal */
	for (i = 0; i < 3; i++)
		assert_int_equal(verify(ca.c, 1, "wrong-pin"), 0x63C0 | (4 - i));
	card_reopen(&ca);
	assert_int_equal(verify(ca.c, 1, "wrong-pin"), 0x63C1);
	assert_int_equal(verify(ca.c, 1, "wrong-pin"), 0x6983);
	/* for ever: the right PINs are refused, nothing unblocks a CA card */
	assert_int_equal(verify(ca.c, 1, PIN_CA1), 0x6983);
	assert_int_equal(verify(ca.c, 2, PIN_CA2), 0x6983);
	card_reopen(&ca);
	assert_int_equal(verify(ca.c, 1, PIN_CA1), 0x6983);
	assert_int_equal(tx(ca.c, 0x80, 0x1E, 0, 0, NULL, 0, NULL), 0x6985);
	select_info(ca.c, &info);
	assert_int_equal(info.data[2], 1); /* blocked */
	ky_buf_free(&info);
	card_free(&ca);
	/* PIN 2 alike */
	make_ca(&ca);
	for (i = 0; i < 4; i++)
		assert_int_equal(verify(ca.c, 2, "wrong-pin"), 0x63C0 | (4 - i));
	assert_int_equal(verify(ca.c, 2, "wrong-pin"), 0x6983);
	assert_int_equal(verify(ca.c, 2, "wrong-pin"), 0x6983);
	assert_int_equal(verify(ca.c, 1, PIN_CA1), 0x6983);
	assert_int_equal(verify(ca.c, 2, PIN_CA2), 0x6983);
	select_info(ca.c, &info);
	assert_int_equal(info.data[2], 1);
	assert_int_equal(info.data[4], 0);
	ky_buf_free(&info);
	card_free(&ca);
}

/* ---- EP11 cards ---- */

static void test_enrol_rules(void **state)
{
	struct card ca, a, b;
	struct ky_buf dev = {0}, cert = {0}, d = {0}, info = {0}, ca_info = {0};

	(void)state;
	make_ca(&ca);
	make_ep11(&ca, &a);
	select_info(a.c, &info);
	select_info(ca.c, &ca_info);
	assert_int_equal(info.data[1], KC_TYPE_EP11);
	assert_int_equal(info.data[3], KC_EP11_TRIES);
	assert_memory_equal(info.data + 7, ca_info.data + 7, 32); /* same zone id */
	/* an enrolled card is not enrolled again */
	card_new(&b);
	get_device(b.c, &dev, NULL);
	ca_login(&ca);
	assert_int_equal(tx(ca.c, 0x80, 0x12, 0, 0, dev.data, dev.len, &cert), 0x9000);
	fields2(&d, cert.data, cert.len, PIN_EP11, strlen(PIN_EP11));
	assert_int_equal(tx(a.c, 0x80, 0x14, 0, 0, d.data, d.len, NULL), 0x6985);
	ky_buf_free(&d);
	/* a certificate for another card's device key is refused */
	{
		struct card c2;

		card_new(&c2);
		fields2(&d, cert.data, cert.len, PIN_EP11, strlen(PIN_EP11));
		assert_int_equal(tx(c2.c, 0x80, 0x14, 0, 0, d.data, d.len, NULL), 0x6A80);
		ky_buf_free(&d);
		/* and an altered one */
		cert.data[cert.len - 5] ^= 1;
		fields2(&d, cert.data, cert.len, PIN_EP11, strlen(PIN_EP11));
		assert_int_equal(tx(b.c, 0x80, 0x14, 0, 0, d.data, d.len, NULL), 0x6A80);
		card_free(&c2);
	}
	ky_buf_free(&info);
	select_info(b.c, &info);
	assert_int_equal(info.data[1], KC_TYPE_BLANK);
	ky_buf_free(&info);
	ky_buf_free(&ca_info);
	ky_buf_free(&dev);
	ky_buf_free(&cert);
	ky_buf_free(&d);
	card_free(&ca);
	card_free(&a);
	card_free(&b);
}

static void test_sign_and_power(void **state)
{
	struct card ca, e;
	struct ky_buf pub = {0}, pub2 = {0}, sig = {0};
	uint8_t dg[64];
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *ctx;

	(void)state;
	make_ca(&ca);
	make_ep11(&ca, &e);
	digest_of("the signed attributes", dg);
	assert_int_equal(tx(e.c, 0x80, 0x30, 0, 0, NULL, 0, NULL), 0x6982);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(tx(e.c, 0x80, 0x34, 0, 0, dg, sizeof(dg), NULL), 0x6A88); /* no key yet */
	assert_int_equal(tx(e.c, 0x80, 0x30, 0, 0, NULL, 0, &pub), 0x9000);
	/* one signature key per card */
	assert_int_equal(tx(e.c, 0x80, 0x30, 0, 0, NULL, 0, NULL), 0x6985);
	assert_int_equal(tx(e.c, 0x80, 0x32, 0, 0, NULL, 0, &pub2), 0x9000);
	assert_int_equal(pub.len, pub2.len);
	assert_memory_equal(pub.data, pub2.data, pub.len);
	assert_int_equal(tx(e.c, 0x80, 0x34, 0, 0, dg, 63, NULL), 0x6700);
	assert_int_equal(tx(e.c, 0x80, 0x34, 0, 0, dg, sizeof(dg), &sig), 0x9000);
	/* the signature verifies with the returned public key */
	assert_int_equal(kc_pub_from_der(pub.data, pub.len, &pk), 0);
	assert_non_null(ctx = EVP_PKEY_CTX_new(pk, NULL));
	assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha512()), 1);
	assert_int_equal(EVP_PKEY_verify(ctx, sig.data, sig.len, dg, sizeof(dg)), 1);
	dg[0] ^= 1;
	assert_int_not_equal(EVP_PKEY_verify(ctx, sig.data, sig.len, dg, sizeof(dg)), 1);
	EVP_PKEY_CTX_free(ctx);
	/* removed and reinserted, reset: the PIN is asked again */
	kc_card_power(e.c, false);
	kc_card_power(e.c, true);
	assert_int_equal(tx(e.c, 0x80, 0x34, 0, 0, dg, sizeof(dg), NULL), 0x6982);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(tx(e.c, 0x80, 0x34, 0, 0, dg, sizeof(dg), NULL), 0x9000);
	kc_card_reset(e.c);
	assert_int_equal(tx(e.c, 0x80, 0x34, 0, 0, dg, sizeof(dg), NULL), 0x6982);
	card_reopen(&e);
	assert_int_equal(tx(e.c, 0x80, 0x34, 0, 0, dg, sizeof(dg), NULL), 0x6982);
	EVP_PKEY_free(pk);
	ky_buf_free(&pub);
	ky_buf_free(&pub2);
	ky_buf_free(&sig);
	card_free(&ca);
	card_free(&e);
}

/* The unblock dance: challenge from the EP11 card, statement from the CA card, PIN set. */
static uint16_t unblock(struct card *ca, struct card *e, const char *new_pin,
                        struct ky_buf *sig_out)
{
	struct ky_buf ch = {0}, d = {0}, sig = {0};
	struct kc_field f[2];
	uint16_t sw;

	assert_int_equal(tx(e->c, 0x80, 0x1E, 0, 0, NULL, 0, &ch), 0x9000);
	assert_true(kc_fields_parse(ch.data + 32, ch.len - 32, f, 2));
	fields2(&d, ch.data, 32, f[1].p, f[1].n);
	ca_login(ca);
	sw = tx(ca->c, 0x80, 0x22, 0, 0, d.data, d.len, &sig);
	if (sw == 0x9000) {
		ky_buf_free(&d);
		fields2(&d, sig.data, sig.len, new_pin, strlen(new_pin));
		sw = tx(e->c, 0x80, 0x24, 0, 0, d.data, d.len, NULL);
		if (sig_out != NULL)
			assert_int_equal(ky_buf_append(sig_out, sig.data, sig.len), 0);
	}
	ky_buf_free(&ch);
	ky_buf_free(&d);
	ky_buf_free(&sig);
	return sw;
}

static void test_ep11_block_and_unblock(void **state)
{
	struct card ca, ca2, e, e2;
	struct ky_buf sig = {0}, d = {0};
	uint8_t dg[64];

	(void)state;
	make_ca(&ca);
	make_ca(&ca2);
	make_ep11(&ca, &e);
	make_ep11(&ca2, &e2);
	digest_of("x", dg);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(tx(e.c, 0x80, 0x30, 0, 0, NULL, 0, NULL), 0x9000);
	/* three wrong PINs block it */
	assert_int_equal(verify(e.c, 1, "wrong-pin"), 0x63C2);
	assert_int_equal(verify(e.c, 1, "wrong-pin"), 0x63C1);
	assert_int_equal(verify(e.c, 1, "wrong-pin"), 0x6983);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x6983);
	/* a blocked card signs nothing */
	assert_int_equal(tx(e.c, 0x80, 0x34, 0, 0, dg, sizeof(dg), NULL), 0x6983);
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "part", 4, NULL), 0x6983);
	/* a CA card of another zone does not sign the statement */
	assert_int_equal(unblock(&ca2, &e, "new-pin-1", NULL), 0x6985);
	/* a statement of another zone's CA, for a card of its zone, is refused by this one */
	assert_int_equal(verify(e2.c, 1, "wrong-pin"), 0x63C2);
	assert_int_equal(unblock(&ca2, &e2, "new-pin-2", &sig), 0x9000);
	assert_int_equal(tx(e.c, 0x80, 0x1E, 0, 0, NULL, 0, NULL), 0x9000);
	fields2(&d, sig.data, sig.len, "new-pin-1", 9);
	assert_int_equal(tx(e.c, 0x80, 0x24, 0, 0, d.data, d.len, NULL), 0x6A80);
	/* no statement without a fresh challenge: the challenge was used */
	assert_int_equal(tx(e.c, 0x80, 0x24, 0, 0, d.data, d.len, NULL), 0x6985);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x6983);
	/* one CA PIN alone does not unblock */
	{
		struct ky_buf ch = {0}, d2 = {0};
		struct kc_field f[2];

		kc_card_reset(ca.c);
		assert_int_equal(tx(e.c, 0x80, 0x1E, 0, 0, NULL, 0, &ch), 0x9000);
		assert_true(kc_fields_parse(ch.data + 32, ch.len - 32, f, 2));
		fields2(&d2, ch.data, 32, f[1].p, f[1].n);
		assert_int_equal(verify(ca.c, 1, PIN_CA1), 0x9000);
		assert_int_equal(tx(ca.c, 0x80, 0x22, 0, 0, d2.data, d2.len, NULL), 0x6982);
		ky_buf_free(&ch);
		ky_buf_free(&d2);
	}
	/* a challenge made for a copy is no unblock challenge */
	{
		struct ky_buf ch = {0}, d2 = {0}, sig2 = {0};
		struct kc_field f[2];
		struct card e3;

		make_ep11(&ca, &e3);
		assert_int_equal(verify(e3.c, 1, PIN_EP11), 0x9000);
		assert_int_equal(tx(e3.c, 0x80, 0x18, 0, 0, NULL, 0, &ch), 0x9000);
		assert_true(kc_fields_parse(ch.data + 32, ch.len - 32, f, 2));
		fields2(&d2, ch.data, 32, f[1].p, f[1].n);
		assert_int_equal(tx(ca.c, 0x80, 0x22, 0, 0, d2.data, d2.len, &sig2), 0x9000);
		ky_buf_free(&d2);
		fields2(&d2, sig2.data, sig2.len, "new-pin-9", 9);
		assert_int_equal(tx(e3.c, 0x80, 0x24, 0, 0, d2.data, d2.len, NULL), 0x6985);
		ky_buf_free(&ch);
		ky_buf_free(&d2);
		ky_buf_free(&sig2);
		card_free(&e3);
	}
	/* the zone's CA with both PINs unblocks; the statement cannot be replayed */
	ky_buf_free(&sig);
	assert_int_equal(unblock(&ca, &e, "new-pin-1", &sig), 0x9000);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x63C2);
	assert_int_equal(verify(e.c, 1, "new-pin-1"), 0x9000);
	assert_int_equal(tx(e.c, 0x80, 0x34, 0, 0, dg, sizeof(dg), NULL), 0x9000);
	assert_int_equal(tx(e.c, 0x80, 0x1E, 0, 0, NULL, 0, NULL), 0x9000);
	ky_buf_free(&d);
	fields2(&d, sig.data, sig.len, "new-pin-3", 9);
	assert_int_equal(tx(e.c, 0x80, 0x24, 0, 0, d.data, d.len, NULL), 0x6A80);
	assert_int_equal(verify(e.c, 1, "new-pin-1"), 0x9000);
	ky_buf_free(&sig);
	ky_buf_free(&d);
	card_free(&ca);
	card_free(&ca2);
	card_free(&e);
	card_free(&e2);
}

static void der_of(X509 *x, struct ky_buf *b);
static void give_anchor(struct kc_card *c, struct ky_buf *der);

static void test_key_parts_limit(void **state)
{
	struct card ca, e;
	struct ky_buf out = {0}, info = {0};
	char desc[32], got[80];
	uint8_t vp[32];
	int i;

	(void)state;
	make_ca(&ca);
	make_ep11(&ca, &e);
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "part", 4, NULL), 0x6982);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	/* a part is bound to the anchor registered when it is made: none yet, no part */
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "part", 4, NULL), 0x6985);
	give_anchor(e.c, NULL);
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "bad\ndesc", 8, NULL), 0x6A80);
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, NULL, 0, NULL), 0x6A80);
	for (i = 0; i < KC_MAX_PARTS; i++) {
		snprintf(desc, sizeof(desc), "part %d", i);
		ky_buf_free(&out);
		assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, desc, strlen(desc), &out), 0x9000);
		assert_int_equal(out.len, 33);
		assert_int_equal(out.data[0], i);
	}
	/* the 86th is refused, and changes nothing */
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "one more", 8, NULL), 0x6A84);
	card_reopen(&e);
	select_info(e.c, &info);
	assert_int_equal(info.data[5], KC_MAX_PARTS);
	part_vp(e.c, 84, vp, got, sizeof(got));
	assert_string_equal(got, "part 84");
	assert_memory_equal(vp, out.data + 1, 32);
	assert_int_equal(tx(e.c, 0x80, 0x42, 85, 0, NULL, 0, NULL), 0x6A88);
	ky_buf_free(&out);
	ky_buf_free(&info);
	card_free(&ca);
	card_free(&e);
}

/* ---- card to card ---- */

/* COPY BEGIN on dst, COPY EXPORT on src, COPY IMPORT on dst. PINs as the caller left them.
 * pins: two PINs for a blank destination (CA backup), else NULL. */
static uint16_t copy(struct kc_card *src, struct kc_card *dst, bool backup, uint16_t *export_sw)
{
	struct ky_buf begin = {0}, d = {0}, sealed = {0};
	struct kc_field f[2];
	uint16_t sw;

	if ((sw = tx(dst, 0x80, 0x18, 0, 0, NULL, 0, &begin)) != 0x9000)
		return sw;
	assert_true(kc_fields_parse(begin.data + 32, begin.len - 32, f, 2));
	if (backup)
		fields2(&d, begin.data, 32, f[0].p, f[0].n); /* the blank card's device key */
	else
		fields2(&d, begin.data, 32, f[1].p, f[1].n); /* the destination's zone cert */
	sw = tx(src, 0x80, 0x1A, 0, 0, d.data, d.len, &sealed);
	if (export_sw != NULL)
		*export_sw = sw;
	if (sw == 0x9000) {
		if (backup) {
			assert_true(kc_fields_parse(sealed.data, sealed.len, f, 2));
			ky_buf_free(&d);
			assert_int_equal(kc_field_put(&d, f[0].p, f[0].n), 0);
			assert_int_equal(kc_field_put(&d, f[1].p, f[1].n), 0);
			assert_int_equal(kc_field_put(&d, "backup-pin-1", 12), 0);
			assert_int_equal(kc_field_put(&d, "backup-pin-2", 12), 0);
			sw = tx(dst, 0x80, 0x1C, 0, 0, d.data, d.len, NULL);
		} else {
			sw = tx(dst, 0x80, 0x1C, 0, 0, sealed.data, sealed.len, NULL);
		}
	}
	ky_buf_free(&begin);
	ky_buf_free(&d);
	ky_buf_free(&sealed);
	return sw;
}

static void test_copy_ep11(void **state)
{
	struct card ca, ca2, a, b, other;
	struct ky_buf pa = {0}, pb = {0}, info = {0}, begin = {0}, sealed = {0}, d = {0};
	uint8_t vpa[32], vpb[32];
	char da[80], db[80];
	uint16_t esw = 0;

	struct ky_buf anchor_a = {0};

	(void)state;
	make_ca(&ca);
	make_ca(&ca2);
	make_ep11(&ca, &a);
	make_ep11(&ca, &b);
	make_ep11(&ca2, &other);
	assert_int_equal(verify(a.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(tx(a.c, 0x80, 0x30, 0, 0, NULL, 0, &pa), 0x9000);
	give_anchor(a.c, &anchor_a);
	assert_int_equal(tx(a.c, 0x80, 0x40, 0, 0, "ops part 1", 10, NULL), 0x9000);
	assert_int_equal(tx(a.c, 0x80, 0x40, 0, 0, "ops part 2", 10, NULL), 0x9000);
	/* the destination's PIN is needed to overwrite it */
	assert_int_equal(copy(a.c, b.c, false, NULL), 0x6982);
	assert_int_equal(verify(b.c, 1, PIN_EP11), 0x9000);
	/* and the source's */
	kc_card_reset(a.c);
	assert_int_equal(copy(a.c, b.c, false, &esw), 0x6982);
	assert_int_equal(esw, 0x6982);
	assert_int_equal(verify(a.c, 1, PIN_EP11), 0x9000);
	/* to a card of another zone: refused by the source */
	assert_int_equal(verify(other.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(copy(a.c, other.c, false, &esw), 0x6985);
	assert_int_equal(esw, 0x6985);
	select_info(other.c, &info);
	assert_int_equal(info.data[5], 0);
	assert_int_equal(info.data[6], 0);
	ky_buf_free(&info);
	/* and by a destination of another zone, whatever the host sends it */
	assert_int_equal(tx(b.c, 0x80, 0x18, 0, 0, NULL, 0, &begin), 0x9000);
	{
		struct kc_field f[2];

		assert_true(kc_fields_parse(begin.data + 32, begin.len - 32, f, 2));
		fields2(&d, begin.data, 32, f[1].p, f[1].n);
		assert_int_equal(tx(a.c, 0x80, 0x1A, 0, 0, d.data, d.len, &sealed), 0x9000);
		assert_true(kc_fields_parse(sealed.data, sealed.len, f, 2));
		/* first a tampered envelope: refused, and the challenge is used */
		ky_buf_free(&d);
		sealed.data[sealed.len - 1] ^= 1;
		assert_int_equal(tx(b.c, 0x80, 0x1C, 0, 0, sealed.data, sealed.len, NULL), 0x6A80);
		sealed.data[sealed.len - 1] ^= 1;
		assert_int_equal(tx(b.c, 0x80, 0x1C, 0, 0, sealed.data, sealed.len, NULL), 0x6985);
	}
	{
		/* the other zone's card as source: B refuses its zone certificate */
		struct ky_buf ocert = {0}, forged = {0};

		get_device(other.c, NULL, &ocert);
		assert_int_equal(tx(b.c, 0x80, 0x18, 0, 0, NULL, 0, NULL), 0x9000);
		fields2(&forged, ocert.data, ocert.len, "sealed", 6);
		assert_int_equal(tx(b.c, 0x80, 0x1C, 0, 0, forged.data, forged.len, NULL), 0x6985);
		ky_buf_free(&ocert);
		ky_buf_free(&forged);
	}
	{
		/* a challenge a card gave while blank is not taken once it is enrolled */
		struct card fresh;
		struct ky_buf ch = {0}, dev = {0}, zc = {0}, d2 = {0}, sealed2 = {0};

		card_new(&fresh);
		assert_int_equal(tx(fresh.c, 0x80, 0x18, 0, 0, NULL, 0, &ch), 0x9000);
		get_device(fresh.c, &dev, NULL);
		ca_login(&ca);
		assert_int_equal(tx(ca.c, 0x80, 0x12, 0, 0, dev.data, dev.len, &zc), 0x9000);
		fields2(&d2, zc.data, zc.len, PIN_EP11, strlen(PIN_EP11));
		assert_int_equal(tx(fresh.c, 0x80, 0x14, 0, 0, d2.data, d2.len, NULL), 0x9000);
		assert_int_equal(verify(fresh.c, 1, PIN_EP11), 0x9000);
		ky_buf_free(&d2);
		fields2(&d2, ch.data, 32, zc.data, zc.len);
		assert_int_equal(tx(a.c, 0x80, 0x1A, 0, 0, d2.data, d2.len, &sealed2), 0x9000);
		assert_int_equal(tx(fresh.c, 0x80, 0x1C, 0, 0, sealed2.data, sealed2.len, NULL),
		                 0x6985);
		ky_buf_free(&ch);
		ky_buf_free(&dev);
		ky_buf_free(&zc);
		ky_buf_free(&d2);
		ky_buf_free(&sealed2);
		card_free(&fresh);
	}
	/* a copy to a card of the same zone gives the same parts and key */
	assert_int_equal(copy(a.c, b.c, false, NULL), 0x9000);
	card_reopen(&b);
	select_info(b.c, &info);
	assert_int_equal(info.data[5], 2);
	assert_int_equal(info.data[6], 1);
	part_vp(a.c, 1, vpa, da, sizeof(da));
	part_vp(b.c, 1, vpb, db, sizeof(db));
	assert_memory_equal(vpa, vpb, 32);
	assert_string_equal(da, db);
	assert_int_equal(tx(b.c, 0x80, 0x32, 0, 0, NULL, 0, &pb), 0x9000);
	assert_int_equal(pa.len, pb.len);
	assert_memory_equal(pa.data, pb.data, pa.len);
	/* the parts came with the anchor they are bound to: that one is taken again, another is
	 * not */
	assert_int_equal(verify(b.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(tx(b.c, 0x80, 0x46, 0, 0, anchor_a.data, anchor_a.len, NULL), 0x9000);
	{
		EVP_PKEY *k = NULL;
		X509 *x = NULL;
		struct ky_buf other_anchor = {0};

		assert_int_equal(ky_ec_generate(&k), 0);
		assert_int_equal(ky_cert_anchor_self_signed(k, "anchor", "inst", 30, &x), 0);
		der_of(x, &other_anchor);
		assert_int_equal(
		    tx(b.c, 0x80, 0x46, 0, 0, other_anchor.data, other_anchor.len, NULL), 0x6985);
		ky_buf_free(&other_anchor);
		X509_free(x);
		EVP_PKEY_free(k);
	}
	ky_buf_free(&anchor_a);
	/* a CA card is no copy destination, a blank card no EP11 copy destination */
	assert_int_equal(tx(ca.c, 0x80, 0x18, 0, 0, NULL, 0, NULL), 0x6985);
	ky_buf_free(&pa);
	ky_buf_free(&pb);
	ky_buf_free(&info);
	ky_buf_free(&begin);
	ky_buf_free(&sealed);
	ky_buf_free(&d);
	card_free(&ca);
	card_free(&ca2);
	card_free(&a);
	card_free(&b);
	card_free(&other);
}

/* A full card (85 parts and a key) copies whole: the largest command and response. */
static void test_copy_full_card(void **state)
{
	struct card ca, a, b;
	struct ky_buf info = {0};
	char desc[32], got[80];
	uint8_t vpa[32], vpb[32];
	int i;

	(void)state;
	make_ca(&ca);
	make_ep11(&ca, &a);
	make_ep11(&ca, &b);
	assert_int_equal(verify(a.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(tx(a.c, 0x80, 0x30, 0, 0, NULL, 0, NULL), 0x9000);
	give_anchor(a.c, NULL);
	for (i = 0; i < KC_MAX_PARTS; i++) {
		snprintf(desc, sizeof(desc), "a description of part %02u, long",
		         (unsigned)(uint8_t)i);
		assert_int_equal(tx(a.c, 0x80, 0x40, 0, 0, desc, strlen(desc), NULL), 0x9000);
	}
	assert_int_equal(verify(b.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(copy(a.c, b.c, false, NULL), 0x9000);
	card_reopen(&b);
	select_info(b.c, &info);
	assert_int_equal(info.data[5], KC_MAX_PARTS);
	for (i = 0; i < KC_MAX_PARTS; i += 21) {
		part_vp(a.c, (uint8_t)i, vpa, NULL, 0);
		part_vp(b.c, (uint8_t)i, vpb, got, sizeof(got));
		assert_memory_equal(vpa, vpb, 32);
		snprintf(desc, sizeof(desc), "a description of part %02u, long",
		         (unsigned)(uint8_t)i);
		assert_string_equal(got, desc);
	}
	ky_buf_free(&info);
	card_free(&ca);
	card_free(&a);
	card_free(&b);
}

static void test_ca_backup(void **state)
{
	struct card ca, bk, e;
	struct ky_buf i1 = {0}, i2 = {0};

	(void)state;
	make_ca(&ca);
	card_new(&bk);
	/* both CA PINs are needed */
	assert_int_equal(verify(ca.c, 1, PIN_CA1), 0x9000);
	assert_int_equal(copy(ca.c, bk.c, true, NULL), 0x6982);
	ca_login(&ca);
	assert_int_equal(copy(ca.c, bk.c, true, NULL), 0x9000);
	select_info(ca.c, &i1);
	select_info(bk.c, &i2);
	assert_int_equal(i2.data[1], KC_TYPE_CA);
	assert_memory_equal(i1.data + 7, i2.data + 7, 32);       /* same zone */
	assert_memory_not_equal(i1.data + 39, i2.data + 39, 32); /* another card */
	/* the backup, with its own PINs, enrols and unblocks cards of the zone */
	assert_int_equal(verify(bk.c, 1, "backup-pin-1"), 0x9000);
	assert_int_equal(verify(bk.c, 2, "backup-pin-2"), 0x9000);
	card_reopen(&bk);
	assert_int_equal(verify(bk.c, 1, "backup-pin-1"), 0x9000);
	assert_int_equal(verify(bk.c, 2, "backup-pin-2"), 0x9000);
	make_ep11(&ca, &e);
	assert_int_equal(verify(e.c, 1, "wrong-pin"), 0x63C2);
	{
		/* unblock() logs in with the first CA's PINs: do it by hand here */
		struct ky_buf ch = {0}, d = {0}, sig = {0};
		struct kc_field f[2];

		assert_int_equal(tx(e.c, 0x80, 0x1E, 0, 0, NULL, 0, &ch), 0x9000);
		assert_true(kc_fields_parse(ch.data + 32, ch.len - 32, f, 2));
		fields2(&d, ch.data, 32, f[1].p, f[1].n);
		assert_int_equal(tx(bk.c, 0x80, 0x22, 0, 0, d.data, d.len, &sig), 0x9000);
		ky_buf_free(&d);
		fields2(&d, sig.data, sig.len, "after-backup", 12);
		assert_int_equal(tx(e.c, 0x80, 0x24, 0, 0, d.data, d.len, NULL), 0x9000);
		assert_int_equal(verify(e.c, 1, "after-backup"), 0x9000);
		ky_buf_free(&ch);
		ky_buf_free(&d);
		ky_buf_free(&sig);
	}
	/* a card that is not blank receives no backup */
	ca_login(&ca);
	assert_int_equal(copy(ca.c, bk.c, true, NULL), 0x6985);
	ky_buf_free(&i1);
	ky_buf_free(&i2);
	card_free(&ca);
	card_free(&bk);
	card_free(&e);
}

/* ---- envelopes ---- */

static void der_of(X509 *x, struct ky_buf *b)
{
	unsigned char *p = NULL;
	int n = i2d_X509(x, &p);

	assert_true(n > 0);
	assert_int_equal(ky_buf_append(b, p, (size_t)n), 0);
	OPENSSL_free(p);
}

/* SET ANCHOR of a fresh self-signed anchor (the card's PIN verified): its DER into der when
 * not NULL. */
static void give_anchor(struct kc_card *c, struct ky_buf *der)
{
	EVP_PKEY *k = NULL;
	X509 *a = NULL;
	struct ky_buf d = {0};

	assert_int_equal(ky_ec_generate(&k), 0);
	assert_int_equal(ky_cert_anchor_self_signed(k, "anchor", "inst", 30, &a), 0);
	der_of(a, &d);
	assert_int_equal(tx(c, 0x80, 0x46, 0, 0, d.data, d.len, NULL), 0x9000);
	if (der != NULL)
		assert_int_equal(ky_buf_append(der, d.data, d.len), 0);
	ky_buf_free(&d);
	X509_free(a);
	EVP_PKEY_free(k);
}

static void test_envelope(void **state)
{
	struct card ca, e;
	EVP_PKEY *anchor_key = NULL, *id_key = NULL, *imp_key = NULL, *rogue_key = NULL;
	X509 *anchor = NULL, *identity = NULL, *importer = NULL, *rogue = NULL, *rogue_id = NULL;
	struct ky_buf adir = {0}, d = {0}, rogue_d = {0}, env = {0}, fp = {0}, idder = {0},
	              impder = {0};
	uint8_t vp[32], part[32], vp2[32];

	(void)state;
	assert_int_equal(ky_ec_generate(&anchor_key), 0);
	assert_int_equal(ky_ec_generate(&id_key), 0);
	assert_int_equal(ky_ec_generate(&imp_key), 0);
	assert_int_equal(ky_ec_generate(&rogue_key), 0);
	assert_int_equal(ky_cert_anchor_self_signed(anchor_key, "anchor", "inst", 30, &anchor), 0);
	assert_int_equal(
	    ky_cert_issue_identity(id_key, "unit-1", "inst", anchor, anchor_key, 30, &identity), 0);
	assert_int_equal(
	    ky_cert_issue(imp_key, "unit-1 importer", "inst", identity, id_key, 30, &importer), 0);
	/* the host's own importer, certified by an identity of its own that the anchor did not
	 * issue */
	assert_int_equal(ky_cert_self_signed_issuer(rogue_key, "unit-1", "inst", 30, &rogue_id), 0);
	assert_int_equal(
	    ky_cert_issue(imp_key, "unit-1 importer", "inst", rogue_id, rogue_key, 30, &rogue), 0);
	der_of(anchor, &adir);
	der_of(identity, &idder);
	der_of(importer, &impder);
	fields2(&d, impder.data, impder.len, idder.data, idder.len);
	ky_buf_free(&impder);
	der_of(rogue, &impder);
	{
		struct ky_buf rid = {0};

		der_of(rogue_id, &rid);
		fields2(&rogue_d, impder.data, impder.len, rid.data, rid.len);
		ky_buf_free(&rid);
	}

	make_ca(&ca);
	make_ep11(&ca, &e);
	assert_int_equal(tx(e.c, 0x80, 0x46, 0, 0, adir.data, adir.len, NULL), 0x6982);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	/* no anchor registered: no part is made (a part is bound to the anchor it is made
	 * under), so none is enveloped */
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "ops part", 8, NULL), 0x6985);
	assert_int_equal(tx(e.c, 0x80, 0x44, 0, 0, d.data, d.len, NULL), 0x6A88);
	/* an anchor that is not a CA certificate is refused */
	assert_int_equal(tx(e.c, 0x80, 0x46, 0, 0, idder.data, idder.len, NULL), 0x6A80);
	assert_int_equal(tx(e.c, 0x80, 0x46, 0, 0, adir.data, adir.len, &fp), 0x9000);
	assert_int_equal(fp.len, 32);
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "ops part", 8, NULL), 0x9000);
	/* with a part on the card, its anchor is not replaced: the PIN holder cannot register an
	 * anchor of their own making (and have the part enveloped to their own importer); the
	 * same anchor again is answered */
	{
		X509 *own = NULL;
		struct ky_buf ownder = {0};

		assert_int_equal(ky_cert_anchor_self_signed(rogue_key, "anchor", "inst", 30, &own),
		                 0);
		der_of(own, &ownder);
		assert_int_equal(tx(e.c, 0x80, 0x46, 0, 0, ownder.data, ownder.len, NULL), 0x6985);
		ky_buf_free(&ownder);
		X509_free(own);
	}
	ky_buf_free(&fp);
	assert_int_equal(tx(e.c, 0x80, 0x46, 0, 0, adir.data, adir.len, &fp), 0x9000);
	assert_int_equal(fp.len, 32);
	/* an importer that does not chain to the anchor is refused */
	assert_int_equal(tx(e.c, 0x80, 0x44, 0, 0, rogue_d.data, rogue_d.len, NULL), 0x6985);
	assert_int_equal(tx(e.c, 0x80, 0x44, 1, 0, d.data, d.len, NULL), 0x6A88);
	assert_int_equal(tx(e.c, 0x80, 0x44, 0, 0, d.data, 20, NULL), 0x6A80);
	kc_card_reset(e.c);
	assert_int_equal(tx(e.c, 0x80, 0x44, 0, 0, d.data, d.len, NULL), 0x6982);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	/* the anchor is kept in the EEPROM */
	card_reopen(&e);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(tx(e.c, 0x80, 0x44, 0, 0, d.data, d.len, &env), 0x9000);
	/* the unit's importer key opens it, as it opens an envelope made from a key part file */
	assert_int_equal(ky_envelope_open(env.data, env.len, imp_key, importer, part, 32), 0);
	assert_int_equal(ky_vp(part, vp), 0);
	part_vp(e.c, 0, vp2, NULL, 0);
	assert_memory_equal(vp, vp2, 32);
	OPENSSL_cleanse(part, sizeof(part));
	X509_free(anchor);
	X509_free(identity);
	X509_free(importer);
	X509_free(rogue);
	X509_free(rogue_id);
	EVP_PKEY_free(anchor_key);
	EVP_PKEY_free(id_key);
	EVP_PKEY_free(imp_key);
	EVP_PKEY_free(rogue_key);
	ky_buf_free(&adir);
	ky_buf_free(&d);
	ky_buf_free(&rogue_d);
	ky_buf_free(&env);
	ky_buf_free(&fp);
	ky_buf_free(&idder);
	ky_buf_free(&impder);
	card_free(&ca);
	card_free(&e);
}

/* ---- the EEPROM ---- */

static void file_flip(const char *path, long at)
{
	FILE *f = fopen(path, "r+b");
	int ch;

	assert_non_null(f);
	assert_int_equal(fseek(f, at, at < 0 ? SEEK_END : SEEK_SET), 0);
	ch = fgetc(f);
	assert_int_equal(fseek(f, -1, SEEK_CUR), 0);
	fputc(ch ^ 0x01, f);
	assert_int_equal(fclose(f), 0);
}

static void test_eeprom_refusals(void **state)
{
	struct card ca, other;
	struct kc_card *c = NULL;
	char err[512], saved[320];

	(void)state;
	make_ca(&ca);
	card_free(&ca);
	/* altered in the sealed part, in the header: refused, named */
	file_flip(ca.eeprom, -40);
	assert_int_equal(kc_card_open(ca.eeprom, ca.key, &c, err, sizeof(err)),
	                 KY_ERR_CARD_EEPROM_DAMAGED);
	assert_null(c);
	assert_non_null(strstr(err, ca.eeprom));
	file_flip(ca.eeprom, -40);
	file_flip(ca.eeprom, 2);
	assert_int_equal(kc_card_open(ca.eeprom, ca.key, &c, err, sizeof(err)),
	                 KY_ERR_CARD_EEPROM_DAMAGED);
	file_flip(ca.eeprom, 2);
	assert_int_equal(truncate(ca.eeprom, 100), 0);
	assert_int_equal(kc_card_open(ca.eeprom, ca.key, &c, err, sizeof(err)),
	                 KY_ERR_CARD_EEPROM_DAMAGED);
	/* an EEPROM open to others */
	assert_int_equal(chmod(ca.eeprom, 0640), 0);
	assert_int_equal(kc_card_open(ca.eeprom, ca.key, &c, err, sizeof(err)), KY_ERR_NOT_PRIVATE);
	assert_non_null(strstr(err, "chmod 600"));
	/* another card's chip key */
	card_new(&other);
	card_free(&other);
	assert_int_equal(kc_card_open(other.eeprom, ca.key, &c, err, sizeof(err)),
	                 KY_ERR_CARD_EEPROM_DAMAGED);
	/* no chip key at all: not a blank card either */
	snprintf(saved, sizeof(saved), "%s.saved", other.key);
	assert_int_equal(rename(other.key, saved), 0);
	assert_int_equal(kc_card_open(other.eeprom, other.key, &c, err, sizeof(err)),
	                 KY_ERR_CARD_CHIP_KEY_MISSING);
	assert_int_equal(access(other.key, F_OK), -1);
	/* a chip key open to others */
	assert_int_equal(rename(saved, other.key), 0);
	assert_int_equal(chmod(other.key, 0644), 0);
	assert_int_equal(kc_card_open(other.eeprom, other.key, &c, err, sizeof(err)),
	                 KY_ERR_NOT_PRIVATE);
	assert_int_equal(chmod(other.key, 0600), 0);
	assert_int_equal(kc_card_open(other.eeprom, other.key, &c, err, sizeof(err)), 0);
	kc_card_free(c);
	c = NULL;
	/* a chip key without its EEPROM: refused, the key is kept */
	assert_int_equal(unlink(other.eeprom), 0);
	assert_int_equal(kc_card_open(other.eeprom, other.key, &c, err, sizeof(err)),
	                 KY_ERR_CARD_EEPROM_MISSING);
	assert_int_equal(access(other.key, F_OK), 0);
	assert_int_equal(access(other.eeprom, F_OK), -1);
}

/* The try is spent in the EEPROM before the PIN is checked: when the EEPROM cannot be
 * written, even the right PIN is not checked, and the card stays as it was. */
static void test_try_spent_first(void **state)
{
	struct card ca, e;
	struct ky_buf info = {0};
	char blocker[400];
	uint8_t dg[64];

	(void)state;
	make_ca(&ca);
	make_ep11(&ca, &e);
	digest_of("x", dg);
	/* a directory where the EEPROM's temp file goes: every write fails, even as root */
	snprintf(blocker, sizeof(blocker), "%s.tmp.%ld", e.eeprom, (long)getpid());
	assert_int_equal(mkdir(blocker, 0700), 0);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x6581);
	assert_int_equal(verify(e.c, 1, "wrong-pin"), 0x6581);
	assert_int_equal(tx(e.c, 0x80, 0x30, 0, 0, NULL, 0, NULL), 0x6982);
	assert_int_equal(rmdir(blocker), 0);
	select_info(e.c, &info);
	assert_int_equal(info.data[3], KC_EP11_TRIES);
	/* a change that cannot be written is not made */
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	give_anchor(e.c, NULL);
	assert_int_equal(mkdir(blocker, 0700), 0);
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "part", 4, NULL), 0x6581);
	assert_int_equal(tx(e.c, 0x80, 0x30, 0, 0, NULL, 0, NULL), 0x6581);
	assert_int_equal(rmdir(blocker), 0);
	ky_buf_free(&info);
	select_info(e.c, &info);
	assert_int_equal(info.data[5], 0);
	assert_int_equal(info.data[6], 0);
	ky_buf_free(&info);
	/* neither written nor read back: the card goes mute until reset, then reads it again */
	{
		char aside[420];

		snprintf(aside, sizeof(aside), "%s.aside", e.eeprom);
		assert_int_equal(rename(e.eeprom, aside), 0);
		assert_int_equal(mkdir(blocker, 0700), 0);
		assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "part", 4, NULL), 0x6F00);
		assert_int_equal(tx(e.c, 0x00, 0xA4, 0x04, 0x00, aid, sizeof(aid), NULL), 0x6F00);
		assert_int_equal(rmdir(blocker), 0);
		kc_card_reset(e.c);
		assert_int_equal(tx(e.c, 0x00, 0xA4, 0x04, 0x00, aid, sizeof(aid), NULL), 0x6F00);
		assert_int_equal(rename(aside, e.eeprom), 0);
		kc_card_power(e.c, false);
		kc_card_power(e.c, true);
		select_info(e.c, &info);
		assert_int_equal(info.data[5], 0);
		ky_buf_free(&info);
		assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "part", 4, NULL), 0x6982);
		assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
		assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, "part", 4, NULL), 0x9000);
	}
	card_free(&ca);
	card_free(&e);
}

/* CHANGE PIN (80 26 00 0n): only a verified PIN is changed, by its holder; the old PIN is
 * gone, the new one has full tries, across a reopen; a change that cannot be written is not
 * made; a blocked card, a blank card, PIN 2 of an EP11 card and a wrong length are refused. */
static void test_change_pin(void **state)
{
	struct card ca, e, blank;
	struct ky_buf info = {0};
	char blocker[400];

	(void)state;
	make_ca(&ca);
	make_ep11(&ca, &e);
	card_new(&blank);
	assert_int_equal(tx(e.c, 0x80, 0x26, 0, 1, "new-ep11-pin", 12, NULL), 0x6982);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(tx(e.c, 0x80, 0x26, 0, 2, "new-ep11-pin", 12, NULL), 0x6985);
	assert_int_equal(tx(e.c, 0x80, 0x26, 0, 3, "new-ep11-pin", 12, NULL), 0x6B00);
	assert_int_equal(tx(e.c, 0x80, 0x26, 1, 1, "new-ep11-pin", 12, NULL), 0x6B00);
	assert_int_equal(tx(e.c, 0x80, 0x26, 0, 1, "short", 5, NULL), 0x6700);
	assert_int_equal(tx(e.c, 0x80, 0x26, 0, 1, "seventeen-chars-x", 17, NULL), 0x6700);
	/* a change that cannot be written is not made */
	snprintf(blocker, sizeof(blocker), "%s.tmp.%ld", e.eeprom, (long)getpid());
	assert_int_equal(mkdir(blocker, 0700), 0);
	assert_int_equal(tx(e.c, 0x80, 0x26, 0, 1, "new-ep11-pin", 12, NULL), 0x6581);
	assert_int_equal(rmdir(blocker), 0);
	card_reopen(&e);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	/* one wrong try, then the change: full tries, the old PIN gone, across a reopen */
	card_reopen(&e);
	assert_int_equal(verify(e.c, 1, "wrong-pin"), 0x63C2);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	assert_int_equal(tx(e.c, 0x80, 0x26, 0, 1, "new-ep11-pin", 12, NULL), 0x9000);
	card_reopen(&e);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x63C2);
	assert_int_equal(verify(e.c, 1, "new-ep11-pin"), 0x9000);
	select_info(e.c, &info);
	assert_int_equal(info.data[3], KC_EP11_TRIES);
	ky_buf_free(&info);
	/* a CA card: PIN 2 changed by its holder alone; PIN 1 is untouched */
	card_reopen(&ca); /* make_ep11 verified both its PINs */
	assert_int_equal(tx(ca.c, 0x80, 0x26, 0, 2, "new-ca-pin-2", 12, NULL), 0x6982);
	assert_int_equal(verify(ca.c, 2, PIN_CA2), 0x9000);
	assert_int_equal(tx(ca.c, 0x80, 0x26, 0, 2, "new-ca-pin-2", 12, NULL), 0x9000);
	card_reopen(&ca);
	assert_int_equal(verify(ca.c, 2, "new-ca-pin-2"), 0x9000);
	assert_int_equal(verify(ca.c, 1, PIN_CA1), 0x9000);
	/* a blank card has no PIN to change */
	assert_int_equal(tx(blank.c, 0x80, 0x26, 0, 1, "new-blank-pin", 13, NULL), 0x6985);
	/* a blocked card changes no PIN, though it was verified before it blocked */
	card_reopen(&e);
	assert_int_equal(verify(e.c, 1, "new-ep11-pin"), 0x9000);
	assert_int_equal(verify(e.c, 1, "wrong-pin"), 0x63C2);
	assert_int_equal(verify(e.c, 1, "wrong-pin"), 0x63C1);
	assert_int_equal(verify(e.c, 1, "wrong-pin"), 0x6983);
	assert_int_equal(tx(e.c, 0x80, 0x26, 0, 1, "other-new-pin", 13, NULL), 0x6983);
	card_free(&ca);
	card_free(&e);
	card_free(&blank);
}

/* Refusals of the framing and of single commands not tripped above. */
static void test_more_refusals(void **state)
{
	struct card ca, e;
	struct ky_buf dev = {0}, d = {0}, cert = {0};
	uint8_t link[5 + 255] = {0x90, 0x10, 0, 0, 255}, resp[258], get_resp[] = {0, 0xC0, 1, 0, 0};
	char longdesc[KC_DESC_MAX + 2];
	size_t n = 0;
	int i;

	(void)state;
	make_ca(&ca);
	/* a command chain longer than the card takes */
	for (i = 0; i < KC_IO_MAX / 255; i++) {
		n = kc_card_apdu(ca.c, link, sizeof(link), resp, sizeof(resp));
		assert_int_equal(resp[n - 2] << 8 | resp[n - 1], 0x9000);
	}
	n = kc_card_apdu(ca.c, link, sizeof(link), resp, sizeof(resp));
	assert_int_equal(resp[n - 2] << 8 | resp[n - 1], 0x6700);
	/* VERIFY: P1, P2 */
	assert_int_equal(tx(ca.c, 0x00, 0x20, 1, 1, "ca-pin-one", 10, NULL), 0x6B00);
	assert_int_equal(tx(ca.c, 0x00, 0x20, 0, 3, "ca-pin-one", 10, NULL), 0x6B00);
	assert_int_equal(tx(ca.c, 0x00, 0x20, 0, 1, "12345", 5, NULL), 0x6700);
	/* GET RESPONSE: P1, data */
	ca_login(&ca);
	get_device(ca.c, &dev, NULL);
	{
		static const uint8_t get_device_le16[] = {0x80, 0x16, 0x00, 0x00, 0x10};
		static const uint8_t get_resp_data[] = {0x00, 0xC0, 0x00, 0x00, 0x01, 0x00};

		n = kc_card_apdu(ca.c, get_device_le16, sizeof(get_device_le16), resp,
		                 sizeof(resp));
		assert_int_equal(resp[n - 2], 0x61);
		n = kc_card_apdu(ca.c, get_resp, sizeof(get_resp), resp, sizeof(resp));
		assert_int_equal(resp[n - 2] << 8 | resp[n - 1], 0x6B00);
		n = kc_card_apdu(ca.c, get_resp_data, sizeof(get_resp_data), resp, sizeof(resp));
		assert_int_equal(resp[n - 2] << 8 | resp[n - 1], 0x6700);
		/* the refusals kept the response; another command drops it */
		get_resp[2] = 0;
		n = kc_card_apdu(ca.c, get_resp, sizeof(get_resp), resp, sizeof(resp));
		assert_int_equal(n, 256 + 2);
		assert_int_equal(resp[n - 2], 0x61);
		assert_int_equal(tx(ca.c, 0x80, 0x16, 0, 0, NULL, 0, NULL), 0x9000);
		n = kc_card_apdu(ca.c, get_device_le16, sizeof(get_device_le16), resp,
		                 sizeof(resp));
		assert_int_equal(resp[n - 2], 0x61);
		assert_int_equal(tx(ca.c, 0x00, 0xA4, 0x04, 0x00, aid, sizeof(aid), NULL), 0x9000);
		n = kc_card_apdu(ca.c, get_resp, sizeof(get_resp), resp, sizeof(resp));
		assert_int_equal(resp[n - 2] << 8 | resp[n - 1], 0x6985);
	}
	/* a CA card does not certify itself as an EP11 card */
	assert_int_equal(tx(ca.c, 0x80, 0x12, 0, 0, dev.data, dev.len, NULL), 0x6985);
	assert_int_equal(tx(ca.c, 0x80, 0x12, 0, 0, dev.data, dev.len - 1, NULL), 0x6A80);
	/* an EP11 card: no PIN 2, no copy to itself, descriptions */
	make_ep11(&ca, &e);
	assert_int_equal(verify(e.c, 2, PIN_EP11), 0x6985);
	assert_int_equal(verify(e.c, 1, PIN_EP11), 0x9000);
	give_anchor(e.c, NULL);
	memset(longdesc, 'd', sizeof(longdesc));
	longdesc[KC_DESC_MAX + 1] = '\0';
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, longdesc, KC_DESC_MAX + 1, NULL), 0x6A80);
	assert_int_equal(tx(e.c, 0x80, 0x40, 0, 0, longdesc, KC_DESC_MAX, NULL), 0x9000);
	get_device(e.c, NULL, &cert);
	{
		uint8_t nonce[32] = {0};

		fields2(&d, nonce, sizeof(nonce), cert.data, cert.len);
		assert_int_equal(tx(e.c, 0x80, 0x1A, 0, 0, d.data, d.len, NULL), 0x6985);
		ky_buf_free(&d);
		fields2(&d, nonce, 31, cert.data, cert.len);
		assert_int_equal(tx(e.c, 0x80, 0x1A, 0, 0, d.data, d.len, NULL), 0x6A80);
	}
	ky_buf_free(&dev);
	ky_buf_free(&d);
	ky_buf_free(&cert);
	card_free(&ca);
	card_free(&e);
}

/* An EEPROM sealed under the right chip key whose contents are no state a card can be in. */
static void test_eeprom_impossible_state(void **state)
{
	struct card ca, e;
	struct kc_state st;
	struct kc_card *c = NULL;
	uint8_t key[KC_CHIP_KEY_LEN];
	char err[512];
	FILE *f;

	(void)state;
	make_ca(&ca);
	make_ep11(&ca, &e);
	card_free(&ca);
	card_free(&e);
	f = fopen(ca.key, "rb");
	assert_non_null(f);
	assert_int_equal(fread(key, 1, sizeof(key), f), sizeof(key));
	fclose(f);
	assert_int_equal(kc_eeprom_load(ca.eeprom, key, &st), 0);
	/* the state saved back as it is opens */
	assert_int_equal(kc_eeprom_save(ca.eeprom, key, &st), 0);
	assert_int_equal(kc_card_open(ca.eeprom, ca.key, &c, err, sizeof(err)), 0);
	kc_card_free(c);
	c = NULL;
	/* a CA card with one PIN */
	st.pin[1].set = false;
	assert_int_equal(kc_eeprom_save(ca.eeprom, key, &st), 0);
	assert_int_equal(kc_card_open(ca.eeprom, ca.key, &c, err, sizeof(err)),
	                 KY_ERR_CARD_EEPROM_DAMAGED);
	/* a blank card with a zone */
	st.pin[1].set = true;
	st.type = KC_TYPE_BLANK;
	assert_int_equal(kc_eeprom_save(ca.eeprom, key, &st), 0);
	assert_int_equal(kc_card_open(ca.eeprom, ca.key, &c, err, sizeof(err)),
	                 KY_ERR_CARD_EEPROM_DAMAGED);
	kc_state_clear(&st);
	OPENSSL_cleanse(key, sizeof(key));
	/* an EP11 card with the zone certificate of another card */
	f = fopen(e.key, "rb");
	assert_non_null(f);
	assert_int_equal(fread(key, 1, sizeof(key), f), sizeof(key));
	fclose(f);
	assert_int_equal(kc_eeprom_load(e.eeprom, key, &st), 0);
	EVP_PKEY_free(st.device);
	assert_int_equal(ky_ec_generate(&st.device), 0);
	assert_int_equal(kc_eeprom_save(e.eeprom, key, &st), 0);
	kc_state_clear(&st);
	assert_int_equal(kc_card_open(e.eeprom, e.key, &c, err, sizeof(err)),
	                 KY_ERR_CARD_EEPROM_DAMAGED);
	OPENSSL_cleanse(key, sizeof(key));
}

static int group_setup(void **state)
{
	(void)state;
	if (ky_crypto_init() != 0)
		return -1;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kyok-test-card-XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_select_and_framing),
	    cmocka_unit_test(test_chain_mismatch),
	    cmocka_unit_test(test_ca_create_and_two_pins),
	    cmocka_unit_test(test_ca_five_wrong_block_for_ever),
	    cmocka_unit_test(test_enrol_rules),
	    cmocka_unit_test(test_sign_and_power),
	    cmocka_unit_test(test_ep11_block_and_unblock),
	    cmocka_unit_test(test_key_parts_limit),
	    cmocka_unit_test(test_copy_ep11),
	    cmocka_unit_test(test_copy_full_card),
	    cmocka_unit_test(test_ca_backup),
	    cmocka_unit_test(test_envelope),
	    cmocka_unit_test(test_eeprom_refusals),
	    cmocka_unit_test(test_try_spent_first),
	    cmocka_unit_test(test_change_pin),
	    cmocka_unit_test(test_more_refusals),
	    cmocka_unit_test(test_eeprom_impossible_state),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
