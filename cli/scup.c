/* kyok scup: the smart card utility. Makes CA cards (a smart card zone) and their backups,
 * enrols EP11 cards into a zone, unblocks them, verifies PINs and shows what a card holds.
 * Reader 1 holds the CA card (or the card worked on), reader 2 the other card. Every rule is
 * the card's own (docs/cards.md); the checks here only stop a command before it reaches a
 * card that would refuse it, so that nothing is half done. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "kyok/card.h"
#include "kyok/crypto.h"

#define SCUP_PIN_FILES 8
#define SCUP_ERR       512

/* Options every scup command takes. */
struct scup_opts {
	unsigned reader; /* --reader N, 0 when not given */
	unsigned pin;    /* --pin 1|2 (pin-verify), 0 when not given */
	const char *pin_files[SCUP_PIN_FILES];
	int npin_files, next_pin_file;
};

/* clang-format off */
/* What every command that asks PINs says about them, after its own text. */
#define SCUP_PIN_NOTE                                                                              \
	"\n"                                                                                       \
	"PINs are 6 to 16 characters. A PIN the card already has is typed on the reader's\n"       \
	"PIN pad when the reader has one, else asked without echo; a new PIN is asked\n"           \
	"twice. --pin-file FILE (repeatable, private to its owner: chmod 600) gives the\n"         \
	"PINs asked, one per file, in the order above, for scripts.\n"                             \
	"A kyok-card is a software card: it is only as safe as the machine it runs on\n"          \
	"and its two files.\n"
/* clang-format on */

/* The options of the scup commands. Each command's table lists its own and keeps the others
 * unlisted, so that they are refused with a reason (scup_parse). */
enum {
	OPT_READER = 0x2001,
	OPT_PIN,
	OPT_PIN_FILE,
};
#define SCUP_ROW_READER(help)                                     \
	{                                                         \
		"reader", OPT_READER, CLI_ARG_REQUIRED, "N", help \
	}
#define SCUP_READER_HELP "the reader, numbered as pcscd lists them (default 1)"
#define SCUP_ROW_PIN(help)                                    \
	{                                                     \
		"pin", OPT_PIN, CLI_ARG_REQUIRED, "1|2", help \
	}
#define SCUP_ROW_PIN_FILE(help)                                          \
	{                                                                \
		"pin-file", OPT_PIN_FILE, CLI_ARG_REQUIRED, "FILE", help \
	}
#define SCUP_PIN_FILE_HELP "the next PIN asked is read from FILE (repeatable)"

/* opts: the command's table (SCUP_ROW_*: every one of them, those it does not take unlisted).
 * Returns -1 after --help, 0 to go on, or KY_ERR_USAGE (printed). */
static int scup_parse(int argc, char **argv, const char *usage, const struct cli_opt *opts,
                      bool reader_opt, bool pin_opt, struct scup_opts *o)
{
	int opt;

	memset(o, 0, sizeof(*o));
	while ((opt = cli_getopt(argc, argv, opts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			cli_opts_help(stdout, usage, opts, NULL);
			return -1;
		case OPT_READER: {
			char *end;
			long v;
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (!reader_opt) {
				return cli_err(
				    KY_ERR_USAGE, cli_cmd_name(),
				    "--reader is not an option of this command: it uses reader "
				    "1 for the CA card and reader 2 for the other card");
			}
			if (errno != 0 || end == optarg || *end != '\0' || v < 1 ||
			    v > KY_CARD_READERS_MAX) {
				return cli_err(
				    KY_ERR_USAGE, cli_cmd_name(),
				    "--reader takes a reader number from 1 to %d, not '%s'",
				    KY_CARD_READERS_MAX, optarg);
			}
			o->reader = (unsigned)v;
			break;
		}
		case OPT_PIN:
			if (!pin_opt) {
				return cli_err(KY_ERR_USAGE, cli_cmd_name(),
				               "--pin is not an option of this command");
			}
			if (strcmp(optarg, "1") != 0 && strcmp(optarg, "2") != 0) {
				return cli_err(
				    KY_ERR_USAGE, cli_cmd_name(),
				    "--pin takes 1 or 2 (the PIN of a CA card), not '%s'", optarg);
			}
			o->pin = (unsigned)(optarg[0] - '0');
			break;
		case OPT_PIN_FILE:
			if (o->npin_files == SCUP_PIN_FILES) {
				return cli_err(KY_ERR_USAGE, cli_cmd_name(),
				               "at most %d --pin-file", SCUP_PIN_FILES);
			}
			o->pin_files[o->npin_files++] = optarg;
			break;
		default:
			if (cli_common_opt(opt, optarg) != 0)
				return KY_ERR_USAGE;
			return cli_err(KY_ERR_USAGE, cli_cmd_name(),
			               "unknown option: see '%s --help'", cli_cmd_name());
		}
	}
	return cli_no_operands(argc, argv);
}

/* No more --pin-file than the command asks PINs (asks): checked before any PIN is verified,
 * so that a surplus file stops the command before it touches a card. */
static int scup_pin_files_fit(const struct scup_opts *o, int asks)
{
	if (o->npin_files > asks) {
		cli_fail(
		    KY_ERR_USAGE, o->pin_files[asks],
		    "this command asks %d PIN%s, but %d --pin-file were given: nothing was done",
		    asks, asks == 1 ? "" : "s", o->npin_files);
		return KY_ERR_USAGE;
	}
	return 0;
}

/* A PIN typed at the workstation: from the next --pin-file, else without echo (twice when
 * it is a new one). Its length is checked here only to stop early: the card checks it. */
static int scup_pin_read(struct scup_opts *o, const char *prompt, bool is_new, char **out)
{
	int r = KY_ERR_INTERNAL;
	char *pin = NULL, *again = NULL;
	const char *file = NULL;
	char again_prompt[128];
	size_t n;

	if (o->next_pin_file < o->npin_files)
		file = o->pin_files[o->next_pin_file++];
	if ((r = cli_secret_read(prompt, file, -1, &pin)) != 0)
		goto out;
	n = strlen(pin);
	if (n < KY_CARD_PIN_MIN || n > KY_CARD_PIN_MAX) {
		r = KY_ERR_USAGE;
		cli_fail(r, file != NULL ? file : prompt, "a card PIN has %d to %d characters",
		         KY_CARD_PIN_MIN, KY_CARD_PIN_MAX);
		goto out;
	}
	if (is_new && file == NULL) {
		snprintf(again_prompt, sizeof(again_prompt), "repeat %s", prompt);
		if ((r = cli_secret_read(again_prompt, NULL, -1, &again)) != 0)
			goto out;
		if (strlen(again) != n || CRYPTO_memcmp(pin, again, n) != 0) {
			r = KY_ERR_CARD_PIN_MISMATCH;
			cli_fail(r, prompt, NULL);
			goto out;
		}
	}
	*out = pin;
	pin = NULL; /* transferred */
	r = 0;
out:
	cli_secret_free(again);
	cli_secret_free(pin);
	return r;
}

/* One card in one reader, its session open and SELECT read. */
struct scup_card {
	unsigned number;
	char reader[KY_CARD_READER_MAX];
	char subject[KY_CARD_READER_MAX + 40]; /* reader N 'name', for messages */
	struct ky_card *c;
	struct ky_card_info info;
};

static const char *scup_kind(enum ky_card_kind k)
{
	switch (k) {
	case KY_CARD_BLANK:
		return "blank card";
	case KY_CARD_CA:
		return "CA card";
	case KY_CARD_EP11:
		return "EP11 card";
	}
	return "unknown card";
}

static const char *scup_article(enum ky_card_kind k)
{
	return k == KY_CARD_EP11 ? "an" : "a";
}

static int scup_open(struct ky_pcsc *p, unsigned number, struct scup_card *sc)
{
	int r = KY_ERR_INTERNAL;
	char err[SCUP_ERR];

	sc->number = number;
	if ((r = ky_pcsc_reader(p, number, sc->reader, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	snprintf(sc->subject, sizeof(sc->subject), "reader %u '%s'", number, sc->reader);
	if ((r = ky_card_open(p, sc->reader, &sc->c, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = ky_card_status(sc->c, &sc->info, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	r = 0;
out:
	return r;
}

static void scup_close(struct scup_card *sc)
{
	ky_card_free(sc->c);
	sc->c = NULL;
}

/* The card in the reader must be of kind want and, unless it is blank, not blocked. */
static int scup_need(const struct scup_card *sc, enum ky_card_kind want, const char *role)
{
	int r = KY_ERR_INTERNAL;

	if (sc->info.kind != want) {
		r = KY_ERR_CARD_WRONG_KIND;
		cli_fail(r, sc->subject, "it holds %s %s, and %s must be %s %s",
		         scup_article(sc->info.kind), scup_kind(sc->info.kind), role,
		         scup_article(want), scup_kind(want));
		goto out;
	}
	r = 0;
out:
	return r;
}

static void scup_blocked_hint(const struct scup_card *sc)
{
	if (sc->info.kind == KY_CARD_CA)
		fprintf(stderr,
		        "the CA card in reader %u is blocked for ever: nothing can unblock it; "
		        "use a backup CA card of its zone ('kyok scup ca-backup' makes one)\n",
		        sc->number);
	else
		fprintf(stderr,
		        "the EP11 card in reader %u is blocked: unblock it with a CA card of its "
		        "zone ('kyok scup ep11-unblock', the CA card in reader 1, this card in "
		        "reader 2)\n",
		        sc->number);
}

/* Verifies PIN pin_ref of the card: the reader's PIN pad when it has one and no
 * --pin-file is left, else a PIN typed at the workstation. A wrong PIN shows the tries left;
 * a blocked card says how it is unblocked, or that it cannot be. */
static int scup_verify(struct scup_opts *o, struct scup_card *sc, uint8_t pin_ref,
                       const char *prompt)
{
	int r = KY_ERR_INTERNAL, tries = -1;
	char err[SCUP_ERR];
	char *pin = NULL;

	if (sc->info.blocked) {
		r = KY_ERR_CARD_BLOCKED;
		cli_fail(r, sc->subject, NULL);
		scup_blocked_hint(sc);
		goto out;
	}
	if (o->next_pin_file >= o->npin_files && ky_card_has_pinpad(sc->c)) {
		fprintf(stderr, "enter %s on the PIN pad of reader %u, then OK\n", prompt,
		        sc->number);
		r = ky_card_verify_pinpad(sc->c, pin_ref, &tries, err, sizeof(err));
	} else {
		if ((r = scup_pin_read(o, prompt, false, &pin)) != 0)
			goto out;
		r = ky_card_verify(sc->c, pin_ref, pin, strlen(pin), &tries, err, sizeof(err));
	}
	if (r == KY_ERR_CARD_PIN_WRONG) {
		cli_fail(r, sc->subject, "%s wrong: %d tr%s left before the card blocks", prompt,
		         tries, tries == 1 ? "y" : "ies");
		goto out;
	}
	if (r == KY_ERR_CARD_BLOCKED) {
		cli_fail(r, sc->subject, "%s", prompt);
		scup_blocked_hint(sc);
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

static int scup_verify_ca(struct scup_opts *o, struct scup_card *ca)
{
	int r = KY_ERR_INTERNAL;

	if ((r = scup_verify(o, ca, 1, "CA card PIN 1")) != 0)
		goto out;
	if ((r = scup_verify(o, ca, 2, "CA card PIN 2")) != 0)
		goto out;
	r = 0;
out:
	return r;
}

static void scup_software_note(const struct scup_card *sc)
{
	if (ky_card_is_software(sc->c))
		printf("note: the card in reader %u is a kyok software card (kyok-card): it is\n"
		       "      only as safe as the machine it runs on and its two files; its keys\n"
		       "      and key parts never leave it in the clear, but whoever holds both\n"
		       "      files holds them\n",
		       sc->number);
}

static void scup_hex(const uint8_t *p, size_t n, char *out)
{
	ky_hex_encode(p, n, out);
}

/* ---- show ---- */

static const char scup_show_usage[] =
    "usage: kyok scup show [--reader N]\n"
    "\n"
    "Shows the card in reader N (default 1): its kind (blank, CA or EP11), zone id,\n"
    "device id, PIN tries left, whether it is blocked, and for an EP11 card its\n"
    "contents: the signature key (its SKI) and the key parts (index, VP,\n"
    "description) with the slots left of 85. No PIN is needed.\n"
    "A kyok-card is a software card: it is only as safe as the machine it runs on\n"
    "and its two files.\n"
    "\n";
static const struct cli_opt scup_show_opts[] = {SCUP_ROW_READER(SCUP_READER_HELP), CLI_OPT_ROW_HELP,
                                                SCUP_ROW_PIN(NULL), SCUP_ROW_PIN_FILE(NULL),
                                                CLI_OPT_END};

static int scup_show_sigkey(struct scup_card *sc)
{
	int r = KY_ERR_INTERNAL;
	uint8_t spki[1024], ski[KY_SKI_LEN];
	char err[SCUP_ERR], hex[2 * KY_SKI_LEN + 1];
	size_t n = 0;
	bool present = false;
	EVP_PKEY *pk = NULL;
	const unsigned char *q = spki;

	if ((r = ky_card_sigkey(sc->c, spki, sizeof(spki), &n, &present, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if (!present) {
		printf("signature key: none\n");
		r = 0;
		goto out;
	}
	if ((pk = d2i_PUBKEY(NULL, &q, (long)n)) == NULL || q != spki + n) {
		r = KY_ERR_CARD_PROTOCOL;
		cli_fail(r, sc->subject, "GET SIGNATURE KEY answered no public key");
		goto out;
	}
	if ((r = ky_ski(pk, ski)) != 0) {
		cli_fail(r, sc->subject, "the signature key is not an EC key");
		goto out;
	}
	scup_hex(ski, sizeof(ski), hex);
	printf("signature key: SKI %s\n", hex);
	r = 0;
out:
	EVP_PKEY_free(pk);
	return r;
}

static int scup_show_parts(struct scup_card *sc)
{
	int r = KY_ERR_INTERNAL;
	uint8_t vp[32];
	char desc[KY_CARD_DESC_MAX + 1], err[SCUP_ERR], hex[65];

	printf("key parts:     %u of %d (%u free)\n", sc->info.parts, KY_CARD_PARTS_MAX,
	       KY_CARD_PARTS_MAX - sc->info.parts);
	for (unsigned i = 0; i < sc->info.parts; i++) {
		if ((r = ky_card_part_info(sc->c, i, vp, desc, err, sizeof(err))) != 0) {
			cli_fail(r, NULL, "%s", err);
			goto out;
		}
		scup_hex(vp, sizeof(vp), hex);
		printf("  %2u  VP %s  %s\n", i + 1, hex, desc);
	}
	r = 0;
out:
	return r;
}

static int scup_show_main(int argc, char **argv)
{
	int r = KY_ERR_INTERNAL;
	struct scup_opts o;
	struct ky_pcsc *p = NULL;
	struct scup_card sc = {0};
	char err[SCUP_ERR], zone[2 * KY_CARD_ID_LEN + 1], dev[2 * KY_CARD_ID_LEN + 1];

	if ((r = scup_parse(argc, argv, scup_show_usage, scup_show_opts, true, false, &o)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = scup_open(p, o.reader != 0 ? o.reader : 1, &sc)) != 0)
		goto out;
	scup_hex(sc.info.zone_id, KY_CARD_ID_LEN, zone);
	scup_hex(sc.info.device_id, KY_CARD_ID_LEN, dev);
	printf("reader:        %u '%s'\n", sc.number, sc.reader);
	printf("card:          %s%s\n", scup_kind(sc.info.kind),
	       ky_card_is_software(sc.c) ? " (kyok software card)" : "");
	printf("zone:          %s\n", sc.info.kind == KY_CARD_BLANK ? "none" : zone);
	printf("device:        %s\n", dev);
	if (sc.info.kind == KY_CARD_CA)
		printf("PIN tries:     PIN 1 %d left, PIN 2 %d left\n", sc.info.tries1,
		       sc.info.tries2);
	else if (sc.info.kind == KY_CARD_EP11)
		printf("PIN tries:     %d left\n", sc.info.tries1);
	if (sc.info.kind != KY_CARD_BLANK)
		printf("blocked:       %s\n", !sc.info.blocked ? "no"
		                              : sc.info.kind == KY_CARD_EP11
		                                  ? "yes: a CA card of its zone unblocks it "
		                                    "('kyok scup ep11-unblock')"
		                                  : "yes, for ever: a CA card is never "
		                                    "unblocked");
	if (sc.info.kind == KY_CARD_EP11) {
		if ((r = scup_show_sigkey(&sc)) != 0)
			goto out;
		if ((r = scup_show_parts(&sc)) != 0)
			goto out;
	}
	scup_software_note(&sc);
	r = 0;
out:
	scup_close(&sc);
	ky_pcsc_free(p);
	return ky_err_exit(r);
}

/* ---- pin-verify ---- */

static const char scup_verify_usage[] =
    "usage: kyok scup pin-verify [--reader N] [--pin 1|2] [--pin-file FILE]\n"
    "\n"
    "Verifies a PIN of the card in reader N (default 1) and shows the tries left: an\n"
    "EP11 card's PIN, or a CA card's PIN 1 and PIN 2 (--pin: only that one). Every\n"
    "wrong PIN counts: an EP11 card blocks at the third (a CA card of its zone\n"
    "unblocks it), a CA card at the fifth wrong PIN 1 or PIN 2, for ever. Nothing\n"
    "else changes on the card.\n" SCUP_PIN_NOTE "\n";
static const struct cli_opt scup_verify_opts[] = {
    SCUP_ROW_READER(SCUP_READER_HELP), SCUP_ROW_PIN("a CA card: verify only PIN 1 or PIN 2"),
    SCUP_ROW_PIN_FILE(SCUP_PIN_FILE_HELP), CLI_OPT_ROW_HELP, CLI_OPT_END};

static int scup_pin_verify_main(int argc, char **argv)
{
	int r = KY_ERR_INTERNAL;
	struct scup_opts o;
	struct ky_pcsc *p = NULL;
	struct scup_card sc = {0};
	char err[SCUP_ERR];

	if ((r = scup_parse(argc, argv, scup_verify_usage, scup_verify_opts, true, true, &o)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = scup_open(p, o.reader != 0 ? o.reader : 1, &sc)) != 0)
		goto out;
	if (sc.info.kind == KY_CARD_BLANK) {
		r = KY_ERR_CARD_WRONG_KIND;
		cli_fail(r, sc.subject, "it holds a blank card: it has no PIN yet");
		goto out;
	}
	if (sc.info.kind == KY_CARD_EP11 && o.pin == 2) {
		r = KY_ERR_USAGE;
		cli_fail(r, sc.subject, "an EP11 card has one PIN: leave out --pin 2");
		goto out;
	}
	if ((r = scup_pin_files_fit(&o, sc.info.kind == KY_CARD_EP11 || o.pin != 0 ? 1 : 2)) != 0)
		goto out;
	if (sc.info.kind == KY_CARD_EP11) {
		if ((r = scup_verify(&o, &sc, 1, "EP11 card PIN")) != 0)
			goto out;
	} else {
		if (o.pin != 2 && (r = scup_verify(&o, &sc, 1, "CA card PIN 1")) != 0)
			goto out;
		if (o.pin != 1 && (r = scup_verify(&o, &sc, 2, "CA card PIN 2")) != 0)
			goto out;
	}
	printf("PIN verified on the %s in reader %u\n", scup_kind(sc.info.kind), sc.number);
	scup_software_note(&sc);
	r = 0;
out:
	scup_close(&sc);
	ky_pcsc_free(p);
	return ky_err_exit(r);
}

/* ---- pin-change ---- */

static const char scup_change_usage[] =
    "usage: kyok scup pin-change [--reader N] [--pin 1|2] [--pin-file FILE]...\n"
    "\n"
    "Changes a PIN of the card in reader N (default 1): an EP11 card's PIN, or the\n"
    "PIN 1 or PIN 2 of a CA card (--pin, required there: each PIN's holder changes\n"
    "their own, without the other). The PIN is verified first; a wrong one counts\n"
    "as a wrong try. The new PIN has the card's full tries. A blocked card changes\n"
    "no PIN.\n"
    "PINs asked: the PIN, then its new value.\n" SCUP_PIN_NOTE "\n";
static const struct cli_opt scup_change_opts[] = {
    SCUP_ROW_READER(SCUP_READER_HELP), SCUP_ROW_PIN("a CA card: the PIN to change"),
    SCUP_ROW_PIN_FILE(SCUP_PIN_FILE_HELP), CLI_OPT_ROW_HELP, CLI_OPT_END};

static int scup_pin_change_main(int argc, char **argv)
{
	int r = KY_ERR_INTERNAL;
	struct scup_opts o;
	struct ky_pcsc *p = NULL;
	struct scup_card sc = {0};
	char err[SCUP_ERR], prompt[64], new_prompt[64];
	char *pin = NULL;
	uint8_t ref;

	if ((r = scup_parse(argc, argv, scup_change_usage, scup_change_opts, true, true, &o)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = scup_open(p, o.reader != 0 ? o.reader : 1, &sc)) != 0)
		goto out;
	if (sc.info.kind == KY_CARD_BLANK) {
		r = KY_ERR_CARD_WRONG_KIND;
		cli_fail(r, sc.subject, "it holds a blank card: it has no PIN yet");
		goto out;
	}
	if (sc.info.kind == KY_CARD_EP11 && o.pin == 2) {
		r = KY_ERR_USAGE;
		cli_fail(r, sc.subject, "an EP11 card has one PIN: leave out --pin 2");
		goto out;
	}
	if (sc.info.kind == KY_CARD_CA && o.pin == 0) {
		r = KY_ERR_USAGE;
		cli_fail(r, sc.subject,
		         "a CA card has two PINs: name the one to change with --pin 1 "
		         "or --pin 2");
		goto out;
	}
	ref = o.pin == 2 ? 2 : 1;
	if (sc.info.kind == KY_CARD_EP11) {
		snprintf(prompt, sizeof(prompt), "EP11 card PIN");
		snprintf(new_prompt, sizeof(new_prompt), "new EP11 card PIN");
	} else {
		snprintf(prompt, sizeof(prompt), "CA card PIN %u", ref);
		snprintf(new_prompt, sizeof(new_prompt), "new CA card PIN %u", ref);
	}
	if ((r = scup_pin_files_fit(&o, 2)) != 0)
		goto out;
	if ((r = scup_verify(&o, &sc, ref, prompt)) != 0)
		goto out;
	if ((r = scup_pin_read(&o, new_prompt, true, &pin)) != 0)
		goto out;
	if ((r = ky_card_change_pin(sc.c, ref, pin, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	printf("%s changed on the %s in reader %u\n", prompt, scup_kind(sc.info.kind), sc.number);
	scup_software_note(&sc);
	r = 0;
out:
	cli_secret_free(pin);
	scup_close(&sc);
	ky_pcsc_free(p);
	return ky_err_exit(r);
}

/* ---- ca-init ---- */

static const char scup_ca_init_usage[] =
    "usage: kyok scup ca-init [--reader N] [--pin-file FILE]...\n"
    "\n"
    "Makes the blank card in reader N (default 1) a CA card: it makes a new smart\n"
    "card zone (its zone key) and takes two PINs, which every later use of the CA\n"
    "card needs both of (two people, one PIN each). Five wrong tries of either PIN\n"
    "block the CA card for ever: make a backup at once ('kyok scup ca-backup').\n"
    "PINs asked: the new PIN 1, the new PIN 2.\n" SCUP_PIN_NOTE "\n";
static const struct cli_opt scup_ca_init_opts[] = {
    SCUP_ROW_READER(SCUP_READER_HELP), SCUP_ROW_PIN_FILE(SCUP_PIN_FILE_HELP), CLI_OPT_ROW_HELP,
    SCUP_ROW_PIN(NULL), CLI_OPT_END};

static int scup_ca_init_main(int argc, char **argv)
{
	int r = KY_ERR_INTERNAL;
	struct scup_opts o;
	struct ky_pcsc *p = NULL;
	struct scup_card sc = {0};
	char err[SCUP_ERR], zone[2 * KY_CARD_ID_LEN + 1];
	char *pin1 = NULL, *pin2 = NULL;

	if ((r = scup_parse(argc, argv, scup_ca_init_usage, scup_ca_init_opts, true, false, &o)) !=
	    0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = scup_open(p, o.reader != 0 ? o.reader : 1, &sc)) != 0)
		goto out;
	if ((r = scup_need(&sc, KY_CARD_BLANK, "the card to make a CA card")) != 0)
		goto out;
	if ((r = scup_pin_files_fit(&o, 2)) != 0)
		goto out;
	if ((r = scup_pin_read(&o, "new CA card PIN 1", true, &pin1)) != 0)
		goto out;
	if ((r = scup_pin_read(&o, "new CA card PIN 2", true, &pin2)) != 0)
		goto out;
	if ((r = ky_card_create_zone(sc.c, pin1, pin2, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = ky_card_status(sc.c, &sc.info, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	scup_hex(sc.info.zone_id, KY_CARD_ID_LEN, zone);
	printf("the card in reader %u is a CA card of the new zone %s\n", sc.number, zone);
	scup_software_note(&sc);
	r = 0;
out:
	cli_secret_free(pin1);
	cli_secret_free(pin2);
	scup_close(&sc);
	ky_pcsc_free(p);
	return ky_err_exit(r);
}

/* ---- the commands on two cards: the CA card in reader 1, the other in reader 2 ---- */

/* Opens both, checks their kinds, that the CA card is not blocked, and (want_same_zone)
 * that the other card is of the CA card's zone: before any PIN is asked. */
static int scup_open_two(struct ky_pcsc **p, struct scup_card *ca, struct scup_card *other,
                         enum ky_card_kind other_kind, const char *other_role, bool want_same_zone)
{
	int r = KY_ERR_INTERNAL;
	char err[SCUP_ERR];

	if ((r = ky_pcsc_open(p, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = scup_open(*p, 1, ca)) != 0)
		goto out;
	if ((r = scup_need(ca, KY_CARD_CA, "the card in reader 1")) != 0)
		goto out;
	if (ca->info.blocked) {
		r = KY_ERR_CARD_BLOCKED;
		cli_fail(r, ca->subject, NULL);
		scup_blocked_hint(ca);
		goto out;
	}
	if ((r = scup_open(*p, 2, other)) != 0)
		goto out;
	if ((r = scup_need(other, other_kind, other_role)) != 0)
		goto out;
	if (want_same_zone &&
	    CRYPTO_memcmp(ca->info.zone_id, other->info.zone_id, KY_CARD_ID_LEN) != 0) {
		r = KY_ERR_CARD_OTHER_ZONE;
		cli_fail(r, other->subject, NULL);
		goto out;
	}
	r = 0;
out:
	return r;
}

/* ---- ep11-init ---- */

/* ep11-init, ep11-unblock, ca-backup: the readers are fixed, no --pin. */
static const struct cli_opt scup_two_card_opts[] = {SCUP_ROW_PIN_FILE(SCUP_PIN_FILE_HELP),
                                                    CLI_OPT_ROW_HELP, SCUP_ROW_READER(NULL),
                                                    SCUP_ROW_PIN(NULL), CLI_OPT_END};

static const char scup_ep11_init_usage[] =
    "usage: kyok scup ep11-init [--pin-file FILE]...\n"
    "\n"
    "Enrols the blank card in reader 2 into the zone of the CA card in reader 1: it\n"
    "becomes an EP11 card of that zone, with a PIN of its own. An EP11 card holds an\n"
    "administrator signature key and up to 85 master key parts; three wrong PINs\n"
    "block it until a CA card of its zone unblocks it.\n"
    "PINs asked: the CA card's PIN 1 and PIN 2, the new EP11 card PIN.\n" SCUP_PIN_NOTE "\n";

static int scup_ep11_init_main(int argc, char **argv)
{
	int r = KY_ERR_INTERNAL;
	struct scup_opts o;
	struct ky_pcsc *p = NULL;
	struct scup_card ca = {0}, blank = {0};
	char err[SCUP_ERR], zone[2 * KY_CARD_ID_LEN + 1];
	char *pin = NULL;

	if ((r = scup_parse(argc, argv, scup_ep11_init_usage, scup_two_card_opts, false, false,
	                    &o)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = scup_open_two(&p, &ca, &blank, KY_CARD_BLANK, "the card to enrol", false)) != 0)
		goto out;
	if ((r = scup_pin_files_fit(&o, 3)) != 0)
		goto out;
	if ((r = scup_verify_ca(&o, &ca)) != 0)
		goto out;
	if ((r = scup_pin_read(&o, "new EP11 card PIN", true, &pin)) != 0)
		goto out;
	if ((r = ky_card_enrol(ca.c, blank.c, pin, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	scup_hex(ca.info.zone_id, KY_CARD_ID_LEN, zone);
	printf("the card in reader 2 is an EP11 card of zone %s\n", zone);
	scup_software_note(&blank);
	r = 0;
out:
	cli_secret_free(pin);
	scup_close(&blank);
	scup_close(&ca);
	ky_pcsc_free(p);
	return ky_err_exit(r);
}

/* ---- ep11-unblock ---- */

static const char scup_ep11_unblock_usage[] =
    "usage: kyok scup ep11-unblock [--pin-file FILE]...\n"
    "\n"
    "Unblocks the EP11 card in reader 2 with the CA card of its zone in reader 1 and\n"
    "gives it a new PIN (its tries are back to three). A CA card of another zone is\n"
    "refused, by this command and by the card. The EP11 card need not be blocked: a\n"
    "forgotten PIN is replaced the same way.\n"
    "PINs asked: the CA card's PIN 1 and PIN 2, the new EP11 card PIN.\n" SCUP_PIN_NOTE "\n";

static int scup_ep11_unblock_main(int argc, char **argv)
{
	int r = KY_ERR_INTERNAL;
	struct scup_opts o;
	struct ky_pcsc *p = NULL;
	struct scup_card ca = {0}, ep11 = {0};
	char err[SCUP_ERR];
	char *pin = NULL;

	if ((r = scup_parse(argc, argv, scup_ep11_unblock_usage, scup_two_card_opts, false, false,
	                    &o)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = scup_open_two(&p, &ca, &ep11, KY_CARD_EP11, "the card to unblock", true)) != 0)
		goto out;
	if ((r = scup_pin_files_fit(&o, 3)) != 0)
		goto out;
	if ((r = scup_verify_ca(&o, &ca)) != 0)
		goto out;
	if ((r = scup_pin_read(&o, "new EP11 card PIN", true, &pin)) != 0)
		goto out;
	if ((r = ky_card_unblock(ca.c, ep11.c, pin, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	printf("the EP11 card in reader 2 is unblocked, with its new PIN\n");
	scup_software_note(&ep11);
	r = 0;
out:
	cli_secret_free(pin);
	scup_close(&ep11);
	scup_close(&ca);
	ky_pcsc_free(p);
	return ky_err_exit(r);
}

/* ---- ca-backup ---- */

static const char scup_ca_backup_usage[] =
    "usage: kyok scup ca-backup [--pin-file FILE]...\n"
    "\n"
    "Backs the CA card in reader 1 up to the blank card in reader 2, which becomes a\n"
    "second CA card of the same zone, with two PINs of its own: it enrols and\n"
    "unblocks the zone's EP11 cards as the first one does. The zone key passes\n"
    "between the cards sealed to the blank card's device key, never in the clear.\n"
    "PINs asked: the CA card's PIN 1 and PIN 2, the backup's new PIN 1 and PIN 2.\n" SCUP_PIN_NOTE
    "\n";

static int scup_ca_backup_main(int argc, char **argv)
{
	int r = KY_ERR_INTERNAL;
	struct scup_opts o;
	struct ky_pcsc *p = NULL;
	struct scup_card ca = {0}, blank = {0};
	char err[SCUP_ERR], zone[2 * KY_CARD_ID_LEN + 1];
	char *pin1 = NULL, *pin2 = NULL;

	if ((r = scup_parse(argc, argv, scup_ca_backup_usage, scup_two_card_opts, false, false,
	                    &o)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = scup_open_two(&p, &ca, &blank, KY_CARD_BLANK, "the backup card", false)) != 0)
		goto out;
	if ((r = scup_pin_files_fit(&o, 4)) != 0)
		goto out;
	if ((r = scup_verify_ca(&o, &ca)) != 0)
		goto out;
	if ((r = scup_pin_read(&o, "new backup CA card PIN 1", true, &pin1)) != 0)
		goto out;
	if ((r = scup_pin_read(&o, "new backup CA card PIN 2", true, &pin2)) != 0)
		goto out;
	if ((r = ky_card_backup_ca(ca.c, blank.c, pin1, pin2, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	scup_hex(ca.info.zone_id, KY_CARD_ID_LEN, zone);
	printf("the card in reader 2 is a backup CA card of zone %s\n", zone);
	scup_software_note(&blank);
	r = 0;
out:
	cli_secret_free(pin1);
	cli_secret_free(pin2);
	scup_close(&blank);
	scup_close(&ca);
	ky_pcsc_free(p);
	return ky_err_exit(r);
}

/* ---- the table ---- */

static const struct cli_cmd scup_cmds[] = {
    {"show", scup_show_main, "show the card in a reader: kind, zone, PIN tries, contents"},
    {"ca-init", scup_ca_init_main, "make a blank card a CA card of a new zone (two PINs)"},
    {"ca-backup", scup_ca_backup_main,
     "back the CA card in reader 1 up to the blank card in reader 2"},
    {"ep11-init", scup_ep11_init_main,
     "enrol the blank card in reader 2 into the zone of the CA card in reader 1"},
    {"ep11-unblock", scup_ep11_unblock_main,
     "unblock the EP11 card in reader 2 with its zone's CA card in reader 1"},
    {"pin-verify", scup_pin_verify_main, "verify a card's PIN and show the tries left"},
    {"pin-change", scup_pin_change_main, "change an EP11 card's PIN or a CA card's PIN 1 or 2"},
    {NULL, NULL, NULL},
};

int scup_main(int argc, char **argv)
{
	return cli_dispatch("kyok scup", scup_cmds, argc, argv);
}
