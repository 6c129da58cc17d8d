/* kyok kp import-token key-encrypt, import-token nonce-encrypt: the client's side of secure
 * import, done here, on this host, without a request: the key material encrypted to the import
 * token's public key, the token's nonce encrypted under the key material (kp_seal.c). What
 * they print goes to 'kyok kp key create NAME -k ENCRYPTED_KEY -n ENCRYPTED_NONCE -v IV'. The
 * key material is read from a file: never from the command line, where ibmcloud kp takes it.
 */
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/kp_client.h"
#include "cli/kp_seal.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define KP_ALG_SHA256 "RSAES_OAEP_SHA_256"
#define KP_ALG_SHA1   "RSAES_OAEP_SHA_1"

enum {
	OPT_KEY_FILE = 0x2101,
	OPT_KEY,
	OPT_CBC,
};

#define KP_WHY_KEY_ARGV                                                                         \
	"key material on the command line is seen by every user of this host (ps, /proc): put " \
	"the raw bytes in a file and give --key-file FILE"

/* The key material of --key-file: raw bytes, 16, 24 or 32. */
static int kp_key_file(const char *path, struct ky_buf *key)
{
	int r = KY_ERR_INTERNAL;
	char subject[600];

	if (path == NULL)
		return cli_err(KY_ERR_USAGE, cli_cmd_name(),
		               "give the key material to import: --key-file FILE (raw bytes)");
	if ((r = kp_file_read(path, "--key-file", 64, key)) != 0)
		return r;
	if (key->len != 16 && key->len != 24 && key->len != 32) {
		snprintf(subject, sizeof(subject), "--key-file %s", path);
		cli_fail(KY_ERR_KEY_MATERIAL, subject, "it holds %zu bytes", key->len);
		ky_buf_free(key);
		return KY_ERR_KEY_MATERIAL;
	}
	return 0;
}

/* -i or $KP_INSTANCE_ID, when given, must name the instance even though nothing is sent;
 * --key-ring, which only a request can carry, is refused rather than dropped. */
static int kp_import_instance(void)
{
	if (kp_o.key_ring != NULL)
		return cli_err(
		    KY_ERR_USAGE, "--key-ring",
		    "this command sends nothing: give the key ring to 'kyok kp key create "
		    "-r RING'");
	if (kp_o.instance_id == NULL && getenv("KP_INSTANCE_ID") == NULL)
		return 0;
	return kp_instance_load();
}

int kp_import_token_key_encrypt_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp import-token-key-encrypt --key-file FILE -p PUBLIC_KEY [-a HASH]\n"
	    "       kyok kp import-token key-encrypt --key-file FILE -p PUBLIC_KEY [-a HASH]\n"
	    "\n"
	    "Encrypts the key material in FILE (raw bytes: 16, 24 or 32) to the import token's\n"
	    "public key, on this host: nothing is sent. Give what it prints to 'kyok kp key\n"
	    "create NAME -k ENCRYPTED_KEY -n ENCRYPTED_NONCE -v IV' ('import-token\n"
	    "nonce-encrypt' makes the other two). With -o json: {\"encryptedKey\": ...}.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"key-file", OPT_KEY_FILE, CLI_ARG_REQUIRED, "FILE",
	     "the key material to import (raw bytes; FILE may be /dev/fd/N); ibmcloud kp's "
	     "-k/--key is refused: key material is never taken on the command line"},
	    {"pubkey", 'p', CLI_ARG_REQUIRED, "PUBLIC_KEY",
	     "the import token's public key: the 'payload' that 'kyok kp import-token show' prints "
	     "(base64 of a PEM key)"},
	    {"hash", 'a', CLI_ARG_REQUIRED, "HASH",
	     "RSAES-OAEP with SHA256 (default) or SHA1; give 'key create' "
	     "--encryption-algorithm " KP_ALG_SHA1 " with a key encrypted with SHA1"},
	    {"key", OPT_KEY, CLI_ARG_REQUIRED, NULL, NULL},
	    {NULL, 'k', CLI_ARG_REQUIRED, NULL, NULL},
	    CLI_OPT_END};
	int opt, r, sha1 = 0, status = 0;
	const char *key_file = NULL, *pub_b64 = NULL;
	struct ky_buf key = {0}, pem = {0};
	uint8_t ct[KP_SEAL_CIPHER_MAX];
	size_t ctlen = 0;
	char *b64 = NULL;

	while ((opt = cli_getopt(argc, argv, longopts, kp_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			kp_print_help(usage, longopts);
			return 0;
		case OPT_KEY_FILE:
			key_file = optarg;
			break;
		case 'k':
		case OPT_KEY:
			return ky_err_exit(kp_refuse_opt("-k/--key", KP_WHY_KEY_ARGV));
		case 'p':
			pub_b64 = optarg;
			break;
		case 'a':
			if (strcasecmp(optarg, "SHA256") == 0 || strcasecmp(optarg, "SHA-256") == 0)
				sha1 = 0;
			else if (strcasecmp(optarg, "SHA1") == 0 ||
			         strcasecmp(optarg, "SHA-1") == 0)
				sha1 = 1;
			else
				return cli_fail(KY_ERR_USAGE, "-a/--hash",
				                "takes SHA256 or SHA1, not '%.40s'", optarg);
			break;
		default:
			if (kp_common_opt(opt, optarg) != 0)
				return KY_EXIT_USAGE;
		}
	}
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	if (pub_b64 == NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "give the import token's public key: -p PUBLIC_KEY (the 'payload' "
		                "of 'kyok kp import-token show')");
	if ((r = kp_import_instance()) != 0)
		return ky_err_exit(r);
	if (ky_b64_decode(pub_b64, &pem) != 0) {
		status = cli_fail(KY_ERR_KP_IMPORT_PUBKEY, "-p/--pubkey", "it is not base64");
		goto out;
	}
	if ((r = kp_key_file(key_file, &key)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if ((r = kp_seal_key(pem.data, pem.len, key.data, key.len, sha1, ct, sizeof(ct), &ctlen)) !=
	    0) {
		status = cli_fail(r, r == KY_ERR_KP_IMPORT_PUBKEY ? "-p/--pubkey" : cli_cmd_name(),
		                  NULL);
		goto out;
	}
	if ((r = ky_b64_encode(ct, ctlen, &b64)) != 0) {
		status = cli_fail(r, NULL, NULL);
		goto out;
	}
	if (cli_g.json)
		kp_print_json(json_pack("{s:s, s:s}", "encryptedKey", b64, "encryptionAlgorithm",
		                        sha1 ? KP_ALG_SHA1 : KP_ALG_SHA256));
	else
		printf("%-18s %s\n", "encrypted key", b64);
out:
	free(b64);
	ky_buf_free(&pem);
	ky_buf_free(&key);
	return status;
}

int kp_import_token_nonce_encrypt_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp import-token-nonce-encrypt --key-file FILE -n NONCE\n"
	    "       kyok kp import-token nonce-encrypt --key-file FILE -n NONCE\n"
	    "\n"
	    "Encrypts the import token's nonce under the key material in FILE (raw bytes: 16,\n"
	    "24 or 32) with AES-GCM and a new random IV, on this host: nothing is sent. Prints\n"
	    "the encrypted nonce and the IV, for 'kyok kp key create NAME -k ENCRYPTED_KEY -n\n"
	    "ENCRYPTED_NONCE -v IV'. With -o json: {\"encryptedNonce\": ..., \"iv\": ...}. A "
	    "nonce\n"
	    "imports one key: the token has a new one after each import.\n"
	    "\n"
	    "options:\n";
	static const struct cli_opt longopts[] = {
	    {"key-file", OPT_KEY_FILE, CLI_ARG_REQUIRED, "FILE",
	     "the key material to import (raw bytes; FILE may be /dev/fd/N); ibmcloud kp's "
	     "-k/--key is refused: key material is never taken on the command line"},
	    {"nonce", 'n', CLI_ARG_REQUIRED, "NONCE",
	     "the import token's nonce: the 'nonce' that 'kyok kp import-token show' prints "
	     "(base64 of 12 bytes)"},
	    CLI_OPT_TEXT("  (ibmcloud kp's -c/--cbc is refused: the units take the nonce in "
	                 "AES-GCM only)\n"),
	    {"key", OPT_KEY, CLI_ARG_REQUIRED, NULL, NULL},
	    {"cbc", OPT_CBC, CLI_ARG_NONE, NULL, NULL},
	    {NULL, 'k', CLI_ARG_REQUIRED, NULL, NULL},
	    {NULL, 'c', CLI_ARG_NONE, NULL, NULL},
	    CLI_OPT_END};
	int opt, r, status = 0;
	const char *key_file = NULL, *nonce_b64 = NULL;
	struct ky_buf key = {0}, nonce = {0};
	uint8_t iv[KP_SEAL_IV_LEN], enc[KP_SEAL_NONCE_LEN + KP_SEAL_TAG_LEN];
	char *enc_b64 = NULL, *iv_b64 = NULL;

	while ((opt = cli_getopt(argc, argv, longopts, kp_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			kp_print_help(usage, longopts);
			return 0;
		case OPT_KEY_FILE:
			key_file = optarg;
			break;
		case 'k':
		case OPT_KEY:
			return ky_err_exit(kp_refuse_opt("-k/--key", KP_WHY_KEY_ARGV));
		case 'n':
			nonce_b64 = optarg;
			break;
		case 'c':
		case OPT_CBC:
			return ky_err_exit(kp_refuse_opt(
			    "-c/--cbc", "the crypto units take the nonce encrypted with AES-GCM "
			                "only, as Key Protect does: leave -c out"));
		default:
			if (kp_common_opt(opt, optarg) != 0)
				return KY_EXIT_USAGE;
		}
	}
	if (cli_no_operands(argc, argv) != 0)
		return KY_EXIT_USAGE;
	if (nonce_b64 == NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "give the import token's nonce: -n NONCE (the 'nonce' of 'kyok kp "
		                "import-token show')");
	if ((r = kp_import_instance()) != 0)
		return ky_err_exit(r);
	if (ky_b64_decode(nonce_b64, &nonce) != 0 || nonce.len != KP_SEAL_NONCE_LEN) {
		status = cli_fail(KY_ERR_KP_IMPORT_NONCE, "-n/--nonce", "'%.40s'", nonce_b64);
		goto out;
	}
	if ((r = kp_key_file(key_file, &key)) != 0) {
		status = ky_err_exit(r);
		goto out;
	}
	if ((r = ky_random(iv, sizeof(iv))) != 0) {
		status = cli_fail(r, NULL, NULL);
		goto out;
	}
	if ((r = kp_seal_nonce(key.data, key.len, nonce.data, nonce.len, iv, enc)) != 0) {
		status = cli_fail(r, cli_cmd_name(), NULL);
		goto out;
	}
	if ((r = ky_b64_encode(enc, sizeof(enc), &enc_b64)) != 0 ||
	    (r = ky_b64_encode(iv, sizeof(iv), &iv_b64)) != 0) {
		status = cli_fail(r, NULL, NULL);
		goto out;
	}
	if (cli_g.json) {
		kp_print_json(json_pack("{s:s, s:s}", "encryptedNonce", enc_b64, "iv", iv_b64));
	} else {
		printf("%-18s %s\n", "encrypted nonce", enc_b64);
		printf("%-18s %s\n", "iv", iv_b64);
	}
out:
	free(enc_b64);
	free(iv_b64);
	OPENSSL_cleanse(enc, sizeof(enc));
	ky_buf_free(&nonce);
	ky_buf_free(&key);
	return status;
}
