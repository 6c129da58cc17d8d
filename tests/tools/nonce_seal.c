/* nonce_seal: what a client of secure import computes besides the RSA-OAEP payload (which
 * openssl pkeyutl makes): the import token's nonce encrypted with AES-GCM under the key being
 * imported, with a fresh 12-byte IV. `openssl enc` does not do GCM, hence this tool.
 *
 *   nonce_seal KEY_FILE NONCE_B64
 *
 * KEY_FILE holds the raw key (16, 24 or 32 bytes; a file, as a key is no argument). Prints
 * "ENCRYPTED_NONCE_B64 IV_B64" (ciphertext || 16-byte tag, base64), exit 0; 2 on bad input.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

static int b64_out(const unsigned char *p, int n)
{
	unsigned char out[64];

	if (EVP_EncodeBlock(out, p, n) <= 0)
		return -1;
	return fputs((const char *)out, stdout) < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	unsigned char key[33], nonce[64], iv[12], ct[12 + 16];
	const EVP_CIPHER *c;
	EVP_CIPHER_CTX *ctx;
	FILE *f;
	size_t klen;
	int n, len = 0, rc = 2;

	if (argc != 3) {
		fprintf(stderr, "usage: nonce_seal KEY_FILE NONCE_B64\n");
		return 2;
	}
	if ((f = fopen(argv[1], "rb")) == NULL) {
		perror(argv[1]);
		return 2;
	}
	klen = fread(key, 1, sizeof(key), f);
	fclose(f);
	c = klen == 16 ? EVP_aes_128_gcm() : klen == 24 ? EVP_aes_192_gcm() : EVP_aes_256_gcm();
	n = strlen(argv[2]) <= 16
	        ? EVP_DecodeBlock(nonce, (const unsigned char *)argv[2], (int)strlen(argv[2]))
	        : -1;
	if ((klen != 16 && klen != 24 && klen != 32) || n != 12) {
		fprintf(stderr, "nonce_seal: a key of 16, 24 or 32 bytes and a 12-byte nonce\n");
		goto out;
	}
	if (RAND_bytes(iv, sizeof(iv)) != 1 || (ctx = EVP_CIPHER_CTX_new()) == NULL)
		goto out;
	if (EVP_EncryptInit_ex2(ctx, c, key, iv, NULL) == 1 &&
	    EVP_EncryptUpdate(ctx, ct, &len, nonce, 12) == 1 &&
	    EVP_EncryptFinal_ex(ctx, ct + len, &len) == 1 &&
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, ct + 12) == 1 &&
	    b64_out(ct, sizeof(ct)) == 0 && fputc(' ', stdout) != EOF &&
	    b64_out(iv, sizeof(iv)) == 0 && fputc('\n', stdout) != EOF)
		rc = 0;
	EVP_CIPHER_CTX_free(ctx);
out:
	OPENSSL_cleanse(key, sizeof(key));
	return rc;
}
