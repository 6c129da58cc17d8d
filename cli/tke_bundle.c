/* Command bundles: the text files that carry prepared commands between workstations.
 *
 * A bundle holds, for each crypto unit, '#' comment lines that say what the command does,
 * then one PEM block "CMS" holding the DER CMS SignedData of the command (no signer when
 * prepared; cmd-sign adds one SignerInfo per signature key). openssl reads each block:
 * openssl cms -cmsout -print -inform PEM -in FILE (first block). A "# signers:" line before
 * a block is written from the block itself and never read back (the block is the truth).
 *
 * tke_bundle_parse is pure (text in, blocks out): tests/unit/test_cli.c and the fuzz target
 * tests/fuzz/fuzz_bundle.c run it on hostile text.
 */
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/tke_bundle.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/wire.h"

#define TKE_PEM_NAME       "CMS"
#define TKE_PEM_BEGIN      "-----BEGIN CMS-----"
#define TKE_PEM_END        "-----END CMS-----"
#define TKE_SIGNERS_PREFIX "# signers:"

void tke_bundle_release(struct tke_bundle *b)
{
	for (size_t i = 0; i < b->n; i++) {
		ky_buf_free(&b->cmds[i].comments);
		ky_buf_free(&b->cmds[i].der);
	}
	free(b->cmds);
	b->cmds = NULL;
	b->n = 0;
}

/* Decodes one PEM block text (BEGIN..END lines included). */
static int tke_pem_decode(const char *text, size_t n, struct ky_buf *der)
{
	int r = KY_ERR_NOT_COMMAND;
	BIO *bio = BIO_new_mem_buf(text, (int)n);
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long len = 0;

	if (bio == NULL)
		return KY_ERR_NOMEM;
	if (PEM_read_bio(bio, &name, &header, &data, &len) != 1 ||
	    strcmp(name, TKE_PEM_NAME) != 0 || header[0] != '\0' || len <= 0)
		goto out;
	if ((r = ky_buf_append(der, data, (size_t)len)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	return r;
}

/* Pure parser of a bundle's text. why receives "line N: ...". */
int tke_bundle_parse(const char *text, size_t n, struct tke_bundle *b, char *why, size_t whylen)
{
	int r = KY_ERR_NOT_COMMAND;
	struct ky_buf comments = {0};
	const char *p = text, *end = text + n, *block = NULL;
	size_t lineno = 0, block_line = 0;

	memset(b, 0, sizeof(*b));
	why[0] = '\0';
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl != NULL ? nl : end;
		size_t ll = (size_t)(le - p);

		lineno++;
		if (ll > 0 && p[ll - 1] == '\r')
			ll--;
		if (memchr(p, '\0', ll) != NULL) {
			snprintf(why, whylen, "line %zu: binary data", lineno);
			goto out;
		}
		if (block != NULL) {
			if (ll == strlen(TKE_PEM_END) && memcmp(p, TKE_PEM_END, ll) == 0) {
				struct tke_bundle_cmd *nc;

				nc = realloc(b->cmds, (b->n + 1) * sizeof(*b->cmds));
				if (nc == NULL) {
					r = KY_ERR_NOMEM;
					goto out;
				}
				b->cmds = nc;
				memset(&b->cmds[b->n], 0, sizeof(b->cmds[b->n]));
				b->cmds[b->n].comments = comments;
				memset(&comments, 0, sizeof(comments)); /* transferred */
				b->n++;
				if ((r = tke_pem_decode(block, (size_t)(le - block),
				                        &b->cmds[b->n - 1].der)) != 0) {
					snprintf(why, whylen,
					         "line %zu: the block is not valid PEM of a CMS "
					         "structure",
					         block_line);
					goto out;
				}
				r = KY_ERR_NOT_COMMAND;
				block = NULL;
			}
		} else if (ll == strlen(TKE_PEM_BEGIN) && memcmp(p, TKE_PEM_BEGIN, ll) == 0) {
			block = p;
			block_line = lineno;
		} else if (ll == 0) {
			/* blank line between blocks */
		} else if (p[0] == '#') {
			if (ll < strlen(TKE_SIGNERS_PREFIX) ||
			    memcmp(p, TKE_SIGNERS_PREFIX, strlen(TKE_SIGNERS_PREFIX)) != 0) {
				if ((r = ky_buf_append(&comments, p, ll)) != 0 ||
				    (r = ky_buf_append(&comments, "\n", 1)) != 0)
					goto out;
				r = KY_ERR_NOT_COMMAND;
			}
		} else {
			snprintf(why, whylen,
			         "line %zu: unexpected text outside a command block (comments "
			         "start with '#')",
			         lineno);
			goto out;
		}
		p = nl != NULL ? nl + 1 : end;
	}
	if (block != NULL) {
		snprintf(why, whylen, "line %zu: command block has no END line", block_line);
		goto out;
	}
	if (b->n == 0) {
		snprintf(why, whylen, "no '%s' block", TKE_PEM_BEGIN);
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&comments);
	if (r != 0)
		tke_bundle_release(b);
	return r;
}

int tke_bundle_read(const char *path, struct tke_bundle *b)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf text = {0};
	char why[256];

	memset(b, 0, sizeof(*b));
	if ((r = ky_file_read(path, TKE_BUNDLE_MAX, &text)) != 0) {
		cli_fail(r, path, NULL);
		return r;
	}
	if ((r = tke_bundle_parse((const char *)text.data, text.len, b, why, sizeof(why))) != 0)
		cli_fail(r, path, "%s", why);
	ky_buf_free(&text);
	return r;
}

static int tke_pem_append(struct ky_buf *out, const struct ky_buf *der)
{
	int r = KY_ERR_NOMEM;
	BIO *bio = BIO_new(BIO_s_mem());
	char *p = NULL;
	long n;

	if (bio == NULL)
		return KY_ERR_NOMEM;
	if (PEM_write_bio(bio, TKE_PEM_NAME, "", der->data, (long)der->len) <= 0)
		goto out;
	n = BIO_get_mem_data(bio, &p);
	if (n <= 0 || (r = ky_buf_append(out, p, (size_t)n)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(bio);
	return r;
}

/* "# signers: alice (ski ...), bob (ski ...)" or "# signers: none yet". */
static int tke_signers_line(const struct ky_buf *der, struct ky_buf *out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf content = {0};
	struct ky_cms_signer *s = NULL;
	size_t ns = 0;

	if ((r = ky_cms_parse(der->data, der->len, &content, &s, &ns)) != 0)
		goto out;
	if ((r = ky_buf_append_str(out, TKE_SIGNERS_PREFIX)) != 0)
		goto out;
	if (ns == 0 && (r = ky_buf_append_str(out, " none yet")) != 0)
		goto out;
	for (size_t i = 0; i < ns; i++) {
		char hex[2 * KY_SKI_LEN + 1], item[160];
		ky_hex_encode(s[i].ski, KY_SKI_LEN, hex);
		snprintf(item, sizeof(item), "%s '%s' (ski %s)", i > 0 ? "," : "",
		         s[i].name[0] != '\0' ? s[i].name : "?", hex);
		if ((r = ky_buf_append_str(out, item)) != 0)
			goto out;
	}
	r = ky_buf_append_str(out, "\n");
out:
	free(s);
	ky_buf_free(&content);
	return r;
}

int tke_bundle_write(const char *path, const struct tke_bundle *b, bool overwrite)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf text = {0};
	struct stat sb;

	if (!overwrite && lstat(path, &sb) == 0) {
		cli_fail(KY_ERR_EXISTS, path, "choose another file name or remove the old bundle");
		return KY_ERR_EXISTS;
	}
	if ((r = ky_buf_append_str(&text, "# kyok command bundle: 'kyok tke cmd-show FILE' shows "
	                                  "it, 'kyok tke cmd-sign FILE' signs it,\n# 'kyok tke "
	                                  "cmd-submit FILE' submits it. Each block is a CMS "
	                                  "SignedData (openssl cms -cmsout -print).\n")) != 0)
		goto out;
	for (size_t i = 0; i < b->n; i++) {
		if ((r = ky_buf_append_str(&text, "\n")) != 0)
			goto out;
		if (b->cmds[i].comments.len > 0 &&
		    (r = ky_buf_append(&text, b->cmds[i].comments.data, b->cmds[i].comments.len)) !=
		        0)
			goto out;
		if ((r = tke_signers_line(&b->cmds[i].der, &text)) != 0)
			goto out;
		if ((r = tke_pem_append(&text, &b->cmds[i].der)) != 0)
			goto out;
	}
	if ((r = ky_file_write_atomic(path, text.data, text.len, 0600)) != 0) {
		cli_fail(r, path, "cannot write the command bundle");
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&text);
	return r;
}

/* Drops the header line the writer adds, so rewriting a bundle does not repeat it. */
void tke_bundle_strip_header(struct tke_bundle *b)
{
	const char *tag = "# kyok command bundle:";
	struct ky_buf *c;

	if (b->n == 0)
		return;
	c = &b->cmds[0].comments;
	while (c->len >= strlen(tag) && memcmp(c->data, tag, strlen(tag)) == 0) {
		/* drop two lines: the header is two lines long; further '#' lines stay */
		for (int k = 0; k < 2 && c->len > 0; k++) {
			uint8_t *nl = memchr(c->data, '\n', c->len);
			size_t cut = nl != NULL ? (size_t)(nl - c->data) + 1 : c->len;
			memmove(c->data, c->data + cut, c->len - cut);
			c->len -= cut;
		}
	}
}
