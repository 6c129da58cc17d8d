/* Unit reply signatures: ECDSA-SHA512 by the identity key over
 *   "kyok-reply-v1\n" || method || " " || path || "\n" || nonce || "\n" || body */
#include <stdlib.h>
#include <string.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "kyok/wire.h"

#define REPLY_CONTEXT "kyok-reply-v1\n"

/* The signed bytes. Fields may not hold the separators that follow them, so that one
 * message never parses two ways. */
static int reply_message(const char *method, const char *path, const char *nonce, const void *body,
                         size_t n, struct ky_buf *msg)
{
	int r = KY_ERR_INTERNAL;

	if (nonce == NULL)
		nonce = "";
	if (method == NULL || path == NULL || method[0] == '\0' || strpbrk(method, " \n") != NULL ||
	    strchr(path, '\n') != NULL || strchr(nonce, '\n') != NULL || (body == NULL && n > 0))
		return KY_ERR_USAGE;
	if ((r = ky_buf_append_str(msg, REPLY_CONTEXT)) != 0 ||
	    (r = ky_buf_append_str(msg, method)) != 0 || (r = ky_buf_append_str(msg, " ")) != 0 ||
	    (r = ky_buf_append_str(msg, path)) != 0 || (r = ky_buf_append_str(msg, "\n")) != 0 ||
	    (r = ky_buf_append_str(msg, nonce)) != 0 || (r = ky_buf_append_str(msg, "\n")) != 0 ||
	    (r = ky_buf_append(msg, body, n)) != 0)
		return r;
	return 0;
}

int ky_reply_sign(EVP_PKEY *identity, const char *method, const char *path, const char *nonce,
                  const void *body, size_t n, char **sig_b64)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf msg = {0}, sig = {0};

	if ((r = reply_message(method, path, nonce, body, n, &msg)) != 0)
		goto out;
	if ((r = ky_sign(identity, msg.data, msg.len, &sig)) != 0)
		goto out;
	if ((r = ky_b64_encode(sig.data, sig.len, sig_b64)) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&msg);
	ky_buf_free(&sig);
	return r;
}

int ky_reply_verify(EVP_PKEY *identity_pub, const char *method, const char *path, const char *nonce,
                    const void *body, size_t n, const char *sig_b64)
{
	int r = KY_ERR_BAD_REPLY;
	struct ky_buf msg = {0}, sig = {0};

	if (identity_pub == NULL || sig_b64 == NULL)
		goto out;
	if (reply_message(method, path, nonce, body, n, &msg) != 0)
		goto out;
	if (ky_b64_decode(sig_b64, &sig) != 0 || sig.len == 0)
		goto out;
	if (ky_verify(identity_pub, msg.data, msg.len, sig.data, sig.len) != 0)
		goto out;
	r = 0;
out:
	ky_buf_free(&msg);
	ky_buf_free(&sig);
	return r;
}
