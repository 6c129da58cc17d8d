/* Smart cards seen from the workstation, through PC/SC (pcscd and libpcsclite): readers,
 * waiting for a card, a session with one card, APDUs with command chaining and GET RESPONSE,
 * and PIN entry on the reader's PIN pad when it has one.
 *
 * A session is opened exclusively (no other program talks to the card while it is open).
 * When the card is removed or reset under a session, every call on it fails with
 * KY_ERR_CARD_REMOVED from then on: the card forgot its verified PINs, so the caller opens
 * a new session and asks for the PIN again. Nothing is retried behind the caller's back: an
 * APDU that may have reached the card is never sent twice. When pcscd itself stopped or
 * restarted, the ky_pcsc is gone too (its calls fail): open a new one.
 *
 * Every function returns 0 or a KY_ERR_* code with a sentence in err that names the reader;
 * the card's own status words come back to the caller, they are not errors here. */
#ifndef KYOK_CARD_H
#define KYOK_CARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kyok/common.h"

#define KY_CARD_READERS_MAX 16
#define KY_CARD_READER_MAX  128   /* a reader's name, with its NUL */
#define KY_CARD_DATA_MAX    16384 /* data of one command or response (the applet's limit) */
#define KY_CARD_PIN_MIN     6     /* the kyok applet's PINs: 6 to 16 characters */
#define KY_CARD_PIN_MAX     16

/* The kyok applet's AID: "kyok", version 1. */
#define KY_CARD_AID                                \
	{                                          \
		0xF0, 0x6B, 0x79, 0x6F, 0x6B, 0x01 \
	}
#define KY_CARD_AID_LEN 6

struct ky_pcsc;
struct ky_card;

/* A connection to the PC/SC service. KY_ERR_PCSC_UNAVAILABLE when pcscd does not answer. */
int ky_pcsc_open(struct ky_pcsc **out, char *err, size_t errlen) KY_WUR;
void ky_pcsc_free(struct ky_pcsc *p);

/* The readers' names, in the service's order (reader 1 is names[0]). *n may be 0. */
int ky_pcsc_readers(struct ky_pcsc *p, char names[][KY_CARD_READER_MAX], size_t max, size_t *n,
                    char *err, size_t errlen) KY_WUR;
/* The name of reader number `number` (1-based): KY_ERR_CARD_NO_READER when there is none. */
int ky_pcsc_reader(struct ky_pcsc *p, unsigned number, char name[KY_CARD_READER_MAX], char *err,
                   size_t errlen) KY_WUR;
/* Waits until a card is present in the reader (present true) or the reader is empty, at most
 * timeout_ms milliseconds (-1: no bound). The wait is pcscd's own state-change notification.
 * KY_ERR_CARD_ABSENT (or KY_ERR_CARD_REMOVED when waiting for an empty reader) on timeout. */
int ky_pcsc_wait(struct ky_pcsc *p, const char *reader, bool present, long timeout_ms, char *err,
                 size_t errlen) KY_WUR;

/* The control code of feature tag in a PC/SC part 10 feature list (the answer to
 * CM_IOCTL_GET_FEATURE_REQUEST: entries of tag, length 4, code big-endian), or 0 when the
 * list does not have it or is malformed. */
uint32_t ky_card_feature(const uint8_t *list, size_t n, uint8_t tag);

/* Opens an exclusive session with the card in the reader: KY_ERR_CARD_ABSENT when empty,
 * KY_ERR_CARD_BUSY when another program has a session. Beside a card-keep handle, the
 * session is a shared connection inside a PC/SC transaction (as exclusive while it lasts;
 * a second session then waits for the first). */
int ky_card_open(struct ky_pcsc *p, const char *reader, struct ky_card **out, char *err,
                 size_t errlen) KY_WUR;
/* Ends the session; the card is reset, so its verified PINs are forgotten. */
void ky_card_free(struct ky_card *c);
/* Ends the session and leaves the card powered: its verified PINs stay verified for the next
 * session, until the card is removed or reset (a PIN asked once per insertion). Only for a
 * card that stays in the holder's sight; NULL is a no-op. */
void ky_card_free_keep(struct ky_card *c);
/* A handle that only keeps the card in the reader powered (pcscd powers off a card nobody
 * holds, which forgets its PINs): no session, no APDU. Sessions of other programs go on
 * beside it. ky_card_free ends it resetting the card (its PINs forgotten), ky_card_free_keep
 * leaving it powered. KY_ERR_CARD_ABSENT when the reader is empty. */
int ky_card_keep(struct ky_pcsc *p, const char *reader, struct ky_card **out, char *err,
                 size_t errlen) KY_WUR;
/* The name of the reader the session's card is in. */
const char *ky_card_reader(const struct ky_card *c);
/* The card's ATR, as the reader reported it when the session was opened. */
size_t ky_card_atr(const struct ky_card *c, uint8_t *atr, size_t max);

/* Sends one command: the 4-byte header cla ins p1 p2 and n bytes of data (up to
 * KY_CARD_DATA_MAX, chained in pieces of 255 bytes with CLA bit 0x10 when longer), and
 * collects the answer (61xx: GET RESPONSE until done) into resp (up to max bytes: more is
 * KY_ERR_TOO_LARGE) with its status word in *sw. A chained command the card refuses midway
 * ends there, with that status word. */
int ky_card_command(struct ky_card *c, const uint8_t hdr[4], const uint8_t *data, size_t n,
                    uint8_t *resp, size_t max, size_t *resp_len, uint16_t *sw, char *err,
                    size_t errlen) KY_WUR;
/* Selects the kyok applet; its answer (docs/cards.md) goes to info. KY_ERR_CARD_PROTOCOL
 * when the card has no kyok applet. */
int ky_card_select(struct ky_card *c, uint8_t *info, size_t max, size_t *info_len, char *err,
                   size_t errlen) KY_WUR;

/* Whether the reader has a PIN pad the card's PIN can be entered on (PC/SC part 10
 * FEATURE_VERIFY_PIN_DIRECT). Without one, the caller prompts without echo. */
bool ky_card_has_pinpad(const struct ky_card *c);
/* VERIFY (ISO 7816-4 INS 20) of PIN number pin_ref (P2) with the PIN given
 * (KY_CARD_PIN_MIN to KY_CARD_PIN_MAX bytes, else KY_ERR_USAGE before anything is sent: a
 * convenience, the card enforces its own rule). KY_ERR_CARD_PIN_WRONG with *tries_left set, KY_ERR_CARD_BLOCKED, or KY_ERR_CARD_PROTOCOL for another status
 * word (in err). The PIN is cleansed from every buffer of this library it passed through. */
int ky_card_verify(struct ky_card *c, uint8_t pin_ref, const char *pin, size_t pin_len,
                   int *tries_left, char *err, size_t errlen) KY_WUR;
/* The same VERIFY, the PIN typed on the reader's PIN pad (it never reaches the workstation):
 * KY_ERR_USAGE when the reader has none. */
int ky_card_verify_pinpad(struct ky_card *c, uint8_t pin_ref, int *tries_left, char *err,
                          size_t errlen) KY_WUR;
/* Whether PIN pin_ref is verified in this session (VERIFY without data), in *verified;
 * KY_ERR_CARD_BLOCKED when the PIN is blocked. */
int ky_card_pin_verified(struct ky_card *c, uint8_t pin_ref, bool *verified, char *err,
                         size_t errlen) KY_WUR;

/* ---- the kyok applet's commands (lib/card/applet_client.c; APDUs in docs/cards.md) ----
 * Each returns 0 or a KY_ERR_* code with a sentence in err that names the reader. A status
 * word the card refuses with becomes: 6982 KY_ERR_CARD_PIN_NEEDED, 6983 KY_ERR_CARD_BLOCKED,
 * 6985 KY_ERR_CARD_NOT_ALLOWED, 6A80 KY_ERR_CARD_BAD_DATA, 6581 KY_ERR_CARD_WRITE, 6A84
 * KY_ERR_CARD_FULL, any other KY_ERR_CARD_PROTOCOL. */
#define KY_CARD_ID_LEN    32 /* a zone id or device id: SHA-256 of the public key's point */
#define KY_CARD_PARTS_MAX 85 /* key parts an EP11 card holds */
#define KY_CARD_DESC_MAX  64 /* a key part's description */

enum ky_card_kind { KY_CARD_BLANK = 0, KY_CARD_CA = 1, KY_CARD_EP11 = 2 };

/* What SELECT tells about the card. */
struct ky_card_info {
	enum ky_card_kind kind;
	bool blocked;
	int tries1, tries2; /* tries left of PIN 1 and PIN 2 (0 for a PIN the card has not) */
	unsigned parts;     /* key parts held */
	bool sigkey;        /* a signature key was made */
	uint8_t zone_id[KY_CARD_ID_LEN];
	uint8_t device_id[KY_CARD_ID_LEN];
};
/* Parses SELECT's answer (pure): KY_ERR_CARD_PROTOCOL when it is not one (why says how). */
int ky_card_info_parse(const uint8_t *b, size_t n, struct ky_card_info *info, char *why,
                       size_t whylen) KY_WUR;
/* SELECT, parsed. */
int ky_card_status(struct ky_card *c, struct ky_card_info *info, char *err, size_t errlen) KY_WUR;
/* Whether the card's ATR is the kyok software card's ("kyokcard"). */
bool ky_card_is_software(const struct ky_card *c);

/* CREATE ZONE: the blank card becomes a CA card of a new zone, with PIN 1 and PIN 2. */
int ky_card_create_zone(struct ky_card *c, const char *pin1, const char *pin2, char *err,
                        size_t errlen) KY_WUR;
/* Enrols the blank card `blank` into the zone of CA card `ca` (both PINs verified on it):
 * GET DEVICE on blank, ENROL SIGN on ca, ENROL on blank with its PIN. */
int ky_card_enrol(struct ky_card *ca, struct ky_card *blank, const char *pin, char *err,
                  size_t errlen) KY_WUR;
/* Unblocks EP11 card `ep11` with CA card `ca` of its zone (both PINs verified on it) and
 * gives it a new PIN: UNBLOCK CHALLENGE, UNBLOCK SIGN, UNBLOCK. */
int ky_card_unblock(struct ky_card *ca, struct ky_card *ep11, const char *pin, char *err,
                    size_t errlen) KY_WUR;
/* Backs CA card `ca` (both PINs verified) up to the blank card `blank`, which becomes a CA
 * card of the same zone with PIN 1 and PIN 2: COPY BEGIN, COPY EXPORT, COPY IMPORT. */
int ky_card_backup_ca(struct ky_card *ca, struct ky_card *blank, const char *pin1, const char *pin2,
                      char *err, size_t errlen) KY_WUR;
/* Copies EP11 card `src` (its PIN verified) to EP11 card `dst` of the same zone (its PIN
 * verified): COPY BEGIN on dst, COPY EXPORT on src, COPY IMPORT on dst. dst's signature key
 * and key parts are replaced by src's; both cards check the other's zone certificate
 * (KY_ERR_CARD_NOT_ALLOWED for another zone) and the contents cross the host sealed. */
int ky_card_copy_ep11(struct ky_card *src, struct ky_card *dst, char *err, size_t errlen) KY_WUR;
/* CHANGE PIN: PIN pin_ref (1, or 2 of a CA card), verified in this session, becomes new_pin. */
int ky_card_change_pin(struct ky_card *c, uint8_t pin_ref, const char *new_pin, char *err,
                       size_t errlen) KY_WUR;
/* The signature key's SubjectPublicKeyInfo (DER) into spki: *present false when none. */
int ky_card_sigkey(struct ky_card *c, uint8_t *spki, size_t max, size_t *len, bool *present,
                   char *err, size_t errlen) KY_WUR;
/* GENERATE SIGNATURE KEY (the EP11 card's PIN verified): the new key's SubjectPublicKeyInfo
 * (DER) into spki. KY_ERR_CARD_NOT_ALLOWED when the card has one already. */
int ky_card_sigkey_generate(struct ky_card *c, uint8_t *spki, size_t max, size_t *len, char *err,
                            size_t errlen) KY_WUR;
/* SIGN of a SHA-512 digest with the signature key (the EP11 card's PIN verified): the ECDSA
 * signature (DER) into sig. KY_ERR_CARD_PIN_NEEDED when the PIN is not verified in this
 * card's power cycle. The caller checks the signature against the key before using it. */
#define KY_CARD_DIGEST_LEN 64
int ky_card_sign(struct ky_card *c, const uint8_t digest[KY_CARD_DIGEST_LEN], uint8_t *sig,
                 size_t max, size_t *len, char *err, size_t errlen) KY_WUR;
/* KEY PART INFO of part index (0-based): its VP and its description (NUL-terminated). */
int ky_card_part_info(struct ky_card *c, unsigned index, uint8_t vp[32],
                      char desc[KY_CARD_DESC_MAX + 1], char *err, size_t errlen) KY_WUR;
/* GENERATE KEY PART (the EP11 card's PIN verified) with its description (1 to
 * KY_CARD_DESC_MAX printable ASCII characters: the card's rule): the new part's index
 * (0-based) and VP. KY_ERR_CARD_FULL when the card holds KY_CARD_PARTS_MAX parts. */
int ky_card_part_generate(struct ky_card *c, const char *desc, unsigned *index, uint8_t vp[32],
                          char *err, size_t errlen) KY_WUR;
/* SET ANCHOR (the EP11 card's PIN verified): the unit trust anchor certificate (DER) the card
 * envelopes key parts under; fp receives the SHA-256 of the DER the card registered. */
int ky_card_set_anchor(struct ky_card *c, const uint8_t *der, size_t n, uint8_t fp[32], char *err,
                       size_t errlen) KY_WUR;
/* ENVELOPE KEY PART of part index (the EP11 card's PIN verified, an anchor registered) to the
 * importer certificate issued by the identity certificate (both DER): the CMS
 * AuthEnvelopedData (DER) into env. KY_ERR_CARD_NOT_ALLOWED when the importer does not chain
 * to the card's anchor (or the card has none). */
int ky_card_part_envelope(struct ky_card *c, unsigned index, const uint8_t *importer,
                          size_t importer_len, const uint8_t *identity, size_t identity_len,
                          uint8_t *env, size_t max, size_t *len, char *err, size_t errlen) KY_WUR;

#endif
