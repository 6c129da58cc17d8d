/* Key parts in the TokenKeyPart form (docs/formats.md, section 5), as a unit opens them from
 * an mk-load command: the form decision, the version, the DER structure, the originator key,
 * the derivation and the unwrap. Each input is opened as it is, then once more with its
 * recipient (when it sits where a version 1 part has it) set to this target's importer
 * certificate, so that the fuzzer reaches past the recipient check. */
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

static EVP_PKEY *tp_key;
static X509 *tp_cert;
static uint8_t tp_id[KY_TOKEN_PART_ID_LEN];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (ky_crypto_init() != 0 || ky_ec_generate(&tp_key) != 0 ||
	    ky_cert_self_signed(tp_key, "fuzz importer", "kyok unit", 365, &tp_cert) != 0 ||
	    ky_token_part_recipient(tp_cert, tp_id) != 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* 30 81 LEN, version 02 01 01, then the recipient 04 20 and its 32 bytes. */
	static const uint8_t head[] = {0x30, 0x81, 0x00, 0x02, 0x01, 0x01, 0x04, 0x20};
	uint8_t out[KY_MK_LEN], *copy;

	(void)ky_token_part_is(data, size);
	FUZZ_IGNORE(ky_token_part_open(data, size, tp_key, tp_cert, out));
	if (size < sizeof(head) + KY_TOKEN_PART_ID_LEN || data[0] != head[0] ||
	    data[1] != head[1] || memcmp(data + 3, head + 3, sizeof(head) - 3) != 0)
		return 0;
	if ((copy = malloc(size)) == NULL)
		return 0;
	memcpy(copy, data, size);
	memcpy(copy + sizeof(head), tp_id, KY_TOKEN_PART_ID_LEN);
	FUZZ_IGNORE(ky_token_part_open(copy, size, tp_key, tp_cert, out));
	free(copy);
	return 0;
}
