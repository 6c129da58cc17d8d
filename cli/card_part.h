/* Master key parts held by EP11 smart cards: the card form of a key part file
 * (cli/card_part_file.c), mk-add --card and the envelopes cryptounit-mk-load has the card
 * make (cli/card_part.c). */
#ifndef KYOK_CLI_CARD_PART_H
#define KYOK_CLI_CARD_PART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cli/tke_signing.h"
#include "kyok/card.h"
#include "kyok/common.h"
#include "kyok/crypto.h"

#define CARD_PART_READER 2 /* the key part card's reader */

/* The card form of a key part file: which card holds the part (its zone id and device id)
 * and where (slot 1 to KY_CARD_PARTS_MAX, as 'kyok scup show' numbers them), with the
 * part's description and VP as the card reported them. No secret. */
struct cli_card_part {
	char description[KY_CARD_DESC_MAX + 1];
	uint8_t vp[KY_VP_LEN];
	uint8_t zone_id[KY_CARD_ID_LEN];
	uint8_t device_id[KY_CARD_ID_LEN];
	unsigned slot;
};

/* Whether desc is a description a card takes: 1 to KY_CARD_DESC_MAX printable ASCII. */
bool cli_card_part_desc_ok(const char *desc, size_t n);
/* Pure, strict parser of the whole file text: KY_ERR_NOT_KEY_PART for anything else. */
int cli_card_part_parse(const char *text, size_t n, struct cli_card_part *cp) KY_WUR;
/* Reads a card form key part file (prints nothing): KY_ERR_NOT_KEY_PART, KY_ERR_IO. */
int cli_card_part_read(const char *path, struct cli_card_part *cp) KY_WUR;
/* The same, as ky_keypart_read_info gives a key part file's description and VP. */
int cli_card_part_info(const char *path, struct ky_keypart_info *info) KY_WUR;

/* Writes the record (mode 0600; KY_ERR_EXISTS rather than overwrite; KY_ERR_IO). */
int cli_card_part_write(const char *path, const struct cli_card_part *cp) KY_WUR;

/* Pure: the first of the n parts whose VP a unit's "part_vps" answer (an array, in load
 * order) does not list as info[k].vp: 0 and *bad = n when every one matches; KY_ERR_VP_MISMATCH
 * with *bad = k for part k, or *bad = n when the answer is not an array of n VPs. */
int cli_part_vps_check(const json_t *vps, const struct ky_keypart_info *info, size_t n,
                       size_t *bad) KY_WUR;

/* mk-add --card: GENERATE KEY PART with desc on the EP11 card in reader 2 (its PIN on the
 * reader's PIN pad, else asked like a password), then the record written at path. On
 * success cp holds what was written. Prints its errors. */
int cli_card_part_add(const char *path, const char *desc, struct cli_card_part *cp) KY_WUR;

/* cryptounit-mk-load: asks for the card holding the part recorded at path in reader 2,
 * waits for it, checks it is that card and that it holds that part, verifies its PIN,
 * registers the instance's unit trust anchor on it, and has it envelope the part to the
 * importer key of every reachable, selected unit of run: sealed[i] for run unit i. info
 * receives the part's description and VP. Nothing is sent to a unit. Prints its errors. */
int cli_card_part_seal(const char *path, struct tke_run *run, struct ky_buf *sealed,
                       struct ky_keypart_info *info) KY_WUR;

#endif
