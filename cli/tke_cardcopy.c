/* kyok tke card-copy: an EP11 card's signature key and key parts copied to another EP11
 * card of its zone, card to card (COPY BEGIN, COPY EXPORT, COPY IMPORT, docs/cards.md):
 * the contents cross the workstation sealed under a key only the two cards can derive. */
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "kyok/card.h"
#include "kyok/err.h"

#define CARDCOPY_ERR    512
#define CARDCOPY_SRC    1 /* the source card's reader */
#define CARDCOPY_DST    2 /* the target card's reader */
#define CARDCOPY_ID_HEX 16

static const char cardcopy_usage[] =
    "usage: kyok tke card-copy [options]\n"
    "\n"
    "Copies the EP11 smart card in reader 1 (its signature key and its key parts)\n"
    "to the EP11 card in reader 2, which must be of the same smart card zone. The\n"
    "contents pass from card to card sealed under a key only the two cards can\n"
    "derive, never in the clear on this workstation. The copy replaces what the\n"
    "card in reader 2 holds: when it holds a signature key or key parts, that is\n"
    "confirmed first (--yes). Each card keeps its own PIN. Asked: the PIN of the\n"
    "card in reader 1, then of the card in reader 2 (the reader's PIN pad, else\n"
    "--card-pin-file in that order, --card-pin-fd, or the terminal). A copy of an\n"
    "administrator's card signs for that administrator like the card itself.\n";

struct cardcopy_card {
	unsigned reader_no;
	struct ky_card *c;
	struct ky_card_info info;
	char subject[KY_CARD_READER_MAX + 32];
	char device[CARDCOPY_ID_HEX + 1];
};

static void cardcopy_hex(const uint8_t *p, size_t n, char *out)
{
	ky_hex_encode(p, n, out);
}

static int cardcopy_open(struct ky_pcsc *p, unsigned number, const char *role,
                         struct cardcopy_card *cc)
{
	int r = KY_ERR_INTERNAL;
	char reader[KY_CARD_READER_MAX], err[CARDCOPY_ERR], hex[2 * KY_CARD_ID_LEN + 1];

	cc->reader_no = number;
	if ((r = ky_pcsc_reader(p, number, reader, err, sizeof(err))) != 0 ||
	    (r = ky_card_open(p, reader, &cc->c, err, sizeof(err))) != 0 ||
	    (r = ky_card_status(cc->c, &cc->info, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	snprintf(cc->subject, sizeof(cc->subject), "reader %u '%s'", number, reader);
	cardcopy_hex(cc->info.device_id, KY_CARD_ID_LEN, hex);
	memcpy(cc->device, hex, CARDCOPY_ID_HEX);
	cc->device[CARDCOPY_ID_HEX] = '\0';
	if (cc->info.kind != KY_CARD_EP11) {
		r = KY_ERR_CARD_WRONG_KIND;
		cli_fail(r, cc->subject, "the %s of a copy is an EP11 card in reader %u", role,
		         number);
		goto out;
	}
	if (cc->info.blocked) {
		r = KY_ERR_CARD_BLOCKED;
		cli_fail(r, cc->subject,
		         "unblock it with a CA card of its zone ('kyok scup ep11-unblock')");
		goto out;
	}
	r = 0;
out:
	return r;
}

/* Verifies the card's PIN: the reader's PIN pad, else cli_card_pin. */
static int cardcopy_pin(struct cardcopy_card *cc, const char *role)
{
	int r = KY_ERR_INTERNAL, tries = -1;
	char err[CARDCOPY_ERR], prompt[128];
	char *pin = NULL;

	if (ky_card_has_pinpad(cc->c)) {
		fprintf(stderr, "enter the PIN of the %s card on the PIN pad of reader %u\n", role,
		        cc->reader_no);
		r = ky_card_verify_pinpad(cc->c, 0x01, &tries, err, sizeof(err));
	} else {
		snprintf(prompt, sizeof(prompt), "PIN of the %s EP11 card (reader %u)", role,
		         cc->reader_no);
		if ((r = cli_card_pin(prompt, &pin)) != 0)
			goto out;
		r = ky_card_verify(cc->c, 0x01, pin, strlen(pin), &tries, err, sizeof(err));
	}
	if (r == KY_ERR_CARD_PIN_WRONG && tries == 0) {
		r = KY_ERR_CARD_BLOCKED;
		cli_fail(
		    r, cc->subject,
		    "EP11 card PIN wrong: the card is now blocked; unblock it with a CA card of "
		    "its zone ('kyok scup ep11-unblock'); nothing was copied");
		goto out;
	}
	if (r == KY_ERR_CARD_PIN_WRONG) {
		cli_fail(r, cc->subject,
		         "EP11 card PIN wrong: %d tr%s left before the card blocks; nothing was "
		         "copied",
		         tries, tries == 1 ? "y" : "ies");
		goto out;
	}
	if (r != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	r = 0;
out:
	cli_secret_free(pin);
	return r;
}

/* Whether the target now holds what the source holds: the same signature key (its public
 * key) and the same key parts (VP and description, in order). */
static int cardcopy_check(struct cardcopy_card *src, struct cardcopy_card *dst)
{
	int r = KY_ERR_INTERNAL;
	char err[CARDCOPY_ERR];
	uint8_t k1[512], k2[512], vp1[32], vp2[32];
	char d1[KY_CARD_DESC_MAX + 1], d2[KY_CARD_DESC_MAX + 1];
	size_t n1 = 0, n2 = 0;
	bool p1 = false, p2 = false;
	struct ky_card_info after;

	if ((r = ky_card_status(dst->c, &after, err, sizeof(err))) != 0 ||
	    (r = ky_card_sigkey(src->c, k1, sizeof(k1), &n1, &p1, err, sizeof(err))) != 0 ||
	    (r = ky_card_sigkey(dst->c, k2, sizeof(k2), &n2, &p2, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if (after.parts != src->info.parts || p1 != p2 || n1 != n2 || memcmp(k1, k2, n1) != 0) {
		r = KY_ERR_CARD_PROTOCOL;
		cli_fail(r, dst->subject,
		         "after the copy the card does not hold what the card in reader %u holds",
		         src->reader_no);
		goto out;
	}
	for (unsigned i = 0; i < src->info.parts; i++) {
		if ((r = ky_card_part_info(src->c, i, vp1, d1, err, sizeof(err))) != 0 ||
		    (r = ky_card_part_info(dst->c, i, vp2, d2, err, sizeof(err))) != 0) {
			cli_fail(r, NULL, "%s", err);
			goto out;
		}
		if (memcmp(vp1, vp2, sizeof(vp1)) != 0 || strcmp(d1, d2) != 0) {
			r = KY_ERR_CARD_PROTOCOL;
			cli_fail(r, dst->subject, "after the copy its key part %u differs", i + 1);
			goto out;
		}
	}
	r = 0;
out:
	return r;
}

int tke_card_copy_main(int argc, char **argv)
{
	static const struct cli_opt opts[] = {CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c;
	struct ky_pcsc *p = NULL;
	struct cardcopy_card src = {0}, dst = {0};
	char err[CARDCOPY_ERR], question[256], zone[2 * KY_CARD_ID_LEN + 1];

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, cardcopy_usage, opts, cli_common_opts);
			return 0;
		}
		if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = cardcopy_open(p, CARDCOPY_SRC, "source", &src)) != 0 ||
	    (r = cardcopy_open(p, CARDCOPY_DST, "target", &dst)) != 0)
		goto out;
	/* A convenience: each card refuses a card of another zone itself (COPY EXPORT and
	 * COPY IMPORT check the other's zone certificate). */
	if (memcmp(src.info.zone_id, dst.info.zone_id, KY_CARD_ID_LEN) != 0) {
		r = KY_ERR_CARD_OTHER_ZONE;
		cli_fail(r, dst.subject,
		         "the EP11 card in reader %u is of another zone than the card in reader "
		         "%u: a card is copied only within its zone",
		         CARDCOPY_DST, CARDCOPY_SRC);
		goto out;
	}
	if (!src.info.sigkey && src.info.parts == 0) {
		r = KY_ERR_CARD_NOT_ALLOWED;
		cli_fail(r, src.subject,
		         "the EP11 card holds no signature key and no key part: "
		         "nothing to copy");
		goto out;
	}
	if (dst.info.sigkey || dst.info.parts > 0) {
		snprintf(question, sizeof(question),
		         "the EP11 card in reader %u (device %s) holds %s%u key part%s: replace "
		         "them with the contents of the card in reader %u (device %s)?",
		         CARDCOPY_DST, dst.device, dst.info.sigkey ? "a signature key and " : "",
		         dst.info.parts, dst.info.parts == 1 ? "" : "s", CARDCOPY_SRC, src.device);
		if ((r = cli_confirm(question)) != 0)
			goto out;
	}
	/* Both PINs before the first command that changes a card. */
	if ((r = cardcopy_pin(&src, "source")) != 0 || (r = cardcopy_pin(&dst, "target")) != 0)
		goto out;
	if ((r = ky_card_copy_ep11(src.c, dst.c, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = cardcopy_check(&src, &dst)) != 0)
		goto out;
	cardcopy_hex(src.info.zone_id, KY_CARD_ID_LEN, zone);
	if (cli_g.json) {
		char s_dev[2 * KY_CARD_ID_LEN + 1], d_dev[2 * KY_CARD_ID_LEN + 1];

		cardcopy_hex(src.info.device_id, KY_CARD_ID_LEN, s_dev);
		cardcopy_hex(dst.info.device_id, KY_CARD_ID_LEN, d_dev);
		cli_print_json(json_pack("{s:s, s:s, s:s, s:b, s:I}", "zone", zone, "source", s_dev,
		                         "target", d_dev, "signature_key", src.info.sigkey ? 1 : 0,
		                         "key_parts", (json_int_t)src.info.parts));
	} else {
		printf("copied the EP11 card in reader %u (device %s) to the EP11 card in reader "
		       "%u (device %s): %s%u key part%s\n",
		       CARDCOPY_SRC, src.device, CARDCOPY_DST, dst.device,
		       src.info.sigkey ? "its signature key and " : "", src.info.parts,
		       src.info.parts == 1 ? "" : "s");
	}
	r = 0;
out:
	ky_card_free(dst.c);
	ky_card_free(src.c);
	ky_pcsc_free(p);
	return ky_err_exit(r);
}
