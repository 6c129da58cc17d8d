/* The unit trust anchor of a local instance, held by whoever runs 'kyok up' (the operator).
 *
 *   <dir>/anchor.key   P-521 private key, PEM PKCS#8, mode 0600
 *   <dir>/anchor.crt   its self-signed CA certificate (CN "kyok unit anchor", OU = instance)
 *
 * Made once, when the instance is created. It certifies each new unit's identity key from
 * the unit's own certificate request (kyok-unitd --identity-request), so the identity key never
 * leaves the unit. Administrators never sign with it and no signed command reaches it.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/anchor.h"
#include "cli/cli.h"
#include "kyok/crypto.h"

#define ANCHOR_DAYS     7300
#define ANCHOR_CN       "kyok unit anchor"
#define ANCHOR_FILE_MAX (64 * 1024)

void cli_anchor_paths(const char *dir, char *key, size_t keylen, char *crt, size_t crtlen)
{
	snprintf(key, keylen, "%s/anchor.key", dir);
	snprintf(crt, crtlen, "%s/anchor.crt", dir);
}

int cli_anchor_create(const char *dir, const char *instance)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	BIO *bio = NULL;
	char keyp[1024], crtp[1024], *pem = NULL, *data = NULL;
	long len;

	cli_anchor_paths(dir, keyp, sizeof(keyp), crtp, sizeof(crtp));
	if ((r = ky_ec_generate(&key)) != 0 ||
	    (r = ky_cert_anchor_self_signed(key, ANCHOR_CN, instance, ANCHOR_DAYS, &cert)) != 0 ||
	    (r = ky_cert_to_pem(cert, &pem)) != 0) {
		cli_fail(r, dir, "cannot make the unit trust anchor");
		goto out;
	}
	r = KY_ERR_CRYPTO;
	if ((bio = BIO_new(BIO_s_secmem())) == NULL ||
	    PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1 ||
	    (len = BIO_get_mem_data(bio, &data)) <= 0) {
		cli_fail(r, keyp, "cannot encode the anchor key");
		goto out;
	}
	if ((r = ky_file_write_atomic(keyp, data, (size_t)len, 0600)) != 0) {
		cli_fail(r, keyp, "%s", strerror(errno));
		goto out;
	}
	if ((r = ky_file_write_atomic(crtp, pem, strlen(pem), 0644)) != 0) {
		cli_fail(r, crtp, "%s", strerror(errno));
		goto out;
	}
	r = 0;
out:
	free(pem);
	BIO_free(bio); /* secure memory BIO: cleansed on free */
	EVP_PKEY_free(key);
	X509_free(cert);
	ERR_clear_error();
	return r;
}

static int anchor_read_text(const char *path, struct ky_buf *b)
{
	int r = KY_ERR_INTERNAL;

	if ((r = ky_file_read(path, ANCHOR_FILE_MAX, b)) != 0 ||
	    (r = ky_buf_append(b, "", 1)) != 0) {
		cli_fail(r, path, "cannot read");
		return r;
	}
	return 0;
}

static int anchor_load(const char *dir, EVP_PKEY **key, X509 **cert)
{
	int r = KY_ERR_INTERNAL;
	char keyp[1024], crtp[1024];
	struct ky_buf kb = {0}, cb = {0};
	BIO *bio = NULL;

	cli_anchor_paths(dir, keyp, sizeof(keyp), crtp, sizeof(crtp));
	if ((r = anchor_read_text(keyp, &kb)) != 0 || (r = anchor_read_text(crtp, &cb)) != 0)
		goto out;
	if (ky_cert_from_pem((const char *)cb.data, cert) != 0) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, crtp, "not a PEM certificate");
		goto out;
	}
	if ((bio = BIO_new_mem_buf(kb.data, (int)kb.len)) == NULL ||
	    (*key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL ||
	    X509_check_private_key(*cert, *key) != 1) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, keyp, "not the private key of %s", crtp);
		goto out;
	}
	r = 0;
out:
	BIO_free(bio);
	ky_buf_free(&kb); /* cleansed */
	ky_buf_free(&cb);
	ERR_clear_error();
	return r;
}

/* Runs kyok-unitd --config conf --identity-request csr and waits for it. */
int cli_anchor_request(const char *unitd, const char *conf, const char *csr, const char *log)
{
	pid_t pid;
	int st;

	pid = fork();
	if (pid < 0) {
		cli_fail(KY_ERR_INTERNAL, conf, "cannot fork: %s", strerror(errno));
		return KY_ERR_INTERNAL;
	}
	if (pid == 0) {
		char *const args[] = {(char *)"kyok-unitd", (char *)"--config",
		                      (char *)conf,         (char *)"--identity-request",
		                      (char *)csr,          NULL};
		int in = open("/dev/null", O_RDONLY);
		int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
			_exit(127);
		closefrom(3);
		execv(unitd, args);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			cli_fail(KY_ERR_INTERNAL, conf, "cannot wait for kyok-unitd");
			return KY_ERR_INTERNAL;
		}
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		cli_fail(KY_ERR_UNREACHABLE, conf, "kyok-unitd --identity-request failed (see %s)",
		         log);
		return KY_ERR_UNREACHABLE;
	}
	return 0;
}

int cli_anchor_issue(const char *dir, const char *csr_pem, const char *what, const char *instance,
                     const char *unit, char **cert_pem)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *anchor_key = NULL, *pub = NULL;
	X509 *anchor = NULL, *identity = NULL;
	char cn[KY_ID_MAX + 1], ou[KY_ID_MAX + 1];

	*cert_pem = NULL;
	if ((r = ky_csr_read(csr_pem, &pub, cn, ou)) != 0) {
		cli_fail(r, what, "not a valid P-521 certificate request");
		goto out;
	}
	if (strcmp(cn, unit) != 0 || strcmp(ou, instance) != 0) {
		r = KY_ERR_CERT_MISMATCH;
		cli_fail(r, what, "requests CN '%s' OU '%s', expected unit %s of instance %s", cn,
		         ou, unit, instance);
		goto out;
	}
	if ((r = anchor_load(dir, &anchor_key, &anchor)) != 0)
		goto out;
	if ((r = ky_cert_issue_identity(pub, unit, instance, anchor, anchor_key, ANCHOR_DAYS,
	                                &identity)) != 0 ||
	    (r = ky_cert_to_pem(identity, cert_pem)) != 0) {
		cli_fail(r, what, "cannot issue the identity certificate");
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_free(anchor_key);
	EVP_PKEY_free(pub);
	X509_free(anchor);
	X509_free(identity);
	return r;
}

int cli_anchor_certify(const char *dir, const char *unitd, const char *conf, const char *log,
                       const char *csr, const char *crt, const char *instance, const char *unit)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	char *pem = NULL;

	if ((r = cli_anchor_request(unitd, conf, csr, log)) != 0 ||
	    (r = anchor_read_text(csr, &b)) != 0 ||
	    (r = cli_anchor_issue(dir, (const char *)b.data, csr, instance, unit, &pem)) != 0)
		goto out;
	if ((r = ky_file_write_atomic(crt, pem, strlen(pem), 0644)) != 0) {
		cli_fail(r, crt, "%s", strerror(errno));
		goto out;
	}
	(void)unlink(csr);
	r = 0;
out:
	free(pem);
	ky_buf_free(&b);
	return r;
}

int cli_anchor_sign(const char *dir, const void *msg, size_t n, char **sig_b64)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	struct ky_buf sig = {0};

	*sig_b64 = NULL;
	if ((r = anchor_load(dir, &key, &cert)) != 0)
		goto out;
	if ((r = ky_sign(key, msg, n, &sig)) != 0 ||
	    (r = ky_b64_encode(sig.data, sig.len, sig_b64)) != 0)
		cli_fail(r, dir, "cannot sign with the unit trust anchor");
out:
	ky_buf_free(&sig);
	X509_free(cert);
	EVP_PKEY_free(key);
	return r;
}

int cli_anchor_cert(const char *dir, X509 **cert)
{
	char keyp[1024], crtp[1024];
	struct ky_buf b = {0};
	int r;

	*cert = NULL;
	cli_anchor_paths(dir, keyp, sizeof(keyp), crtp, sizeof(crtp));
	if ((r = ky_file_read(crtp, ANCHOR_FILE_MAX, &b)) != 0)
		return r;
	if ((r = ky_buf_append(&b, "", 1)) == 0)
		r = ky_cert_from_pem((const char *)b.data, cert);
	ky_buf_free(&b);
	return r;
}
