/* A new unit's identity, certified by the instance's unit trust anchor.
 *
 * The identity key is made inside the unit and never leaves it:
 *   1. kyok-unitd --config unit.conf --identity-request unit.csr
 *      makes the key, keeps it sealed in data_dir/identity.pending (same seal as the state,
 *      aad "kyok-identity-pending-v1\0" instance "\0" unit) and writes a CSR (CN = unit,
 *      OU = instance, signed by the key). Run again, it writes the same request.
 *   2. Whoever holds the anchor key (the operator; 'kyok up' for a local instance) issues the
 *      identity certificate from the CSR and puts it where unit.conf's identity_cert says.
 *   3. The first ordinary start finds no state: it takes the pending key, the certificate
 *      (its key must be the pending one, CN/OU this unit, issued by anchor_cert) and the
 *      anchor certificate, creates the state with all three sealed in, and drops the pending
 *      key. From then on the anchor is the one in the state: a unit.conf naming another
 *      anchor_cert makes the unit refuse to start.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/config.h"
#include "unitd/identity.h"
#include "unitd/log.h"
#include "unitd/seal.h"

#define IDENTITY_AAD_LABEL "kyok-identity-pending-v1"
#define IDENTITY_PENDING   "identity.pending"
#define IDENTITY_FILE_MAX  (64 * 1024)

static int identity_pending_path(const struct unitd_datadir *dd, char **out)
{
	size_t n = strlen(dd->dir) + sizeof(IDENTITY_PENDING) + 2;

	if ((*out = malloc(n)) == NULL)
		return KY_ERR_NOMEM;
	snprintf(*out, n, "%s/%s", dd->dir, IDENTITY_PENDING);
	return 0;
}

static int identity_aad(const struct unitd_config *cfg, struct ky_buf *aad)
{
	if (ky_buf_append(aad, IDENTITY_AAD_LABEL, sizeof(IDENTITY_AAD_LABEL)) != 0 ||
	    ky_buf_append(aad, cfg->instance, strlen(cfg->instance) + 1) != 0 ||
	    ky_buf_append(aad, cfg->unit, strlen(cfg->unit)) != 0)
		return KY_ERR_NOMEM;
	return 0;
}

/* The pending identity key: KY_ERR_NOT_FOUND when there is none. */
static int identity_pending_load(struct unitd_datadir *dd, const struct unitd_config *cfg,
                                 EVP_PKEY **key, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	char *path = NULL;
	struct ky_buf file = {0}, aad = {0}, der = {0};

	*key = NULL;
	if ((r = identity_pending_path(dd, &path)) != 0 || (r = identity_aad(cfg, &aad)) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if ((r = ky_file_read(path, IDENTITY_FILE_MAX, &file)) != 0) {
		if (r != KY_ERR_NOT_FOUND)
			snprintf(err, errlen, "cannot read '%s': %s", path, ky_err_message(r));
		goto out;
	}
	if (dd->key == NULL && (r = unitd_seal_key_first(dd, err, errlen)) != 0)
		goto out;
	if ((r = dd->seal->ops->open(dd->seal, dd->key, aad.data, aad.len, file.data, file.len,
	                             &der)) != 0 ||
	    (r = ky_pkey_from_der(der.data, der.len, key)) != 0) {
		snprintf(
		    err, errlen,
		    "'%s' cannot be opened: wrong seal key or damaged file; delete it and make "
		    "a new identity request",
		    path);
		r = KY_ERR_STATE_CORRUPT;
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&der);
	ky_buf_free(&aad);
	ky_buf_free(&file);
	free(path);
	return r;
}

static int identity_pending_make(struct unitd_datadir *dd, const struct unitd_config *cfg,
                                 EVP_PKEY **key, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	char *path = NULL;
	struct ky_buf aad = {0}, der = {0}, sealed = {0};
	EVP_PKEY *k = NULL;

	if ((r = identity_pending_path(dd, &path)) != 0 || (r = identity_aad(cfg, &aad)) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (dd->key == NULL && (r = unitd_seal_key_first(dd, err, errlen)) != 0)
		goto out;
	if ((r = ky_ec_generate(&k)) != 0 || (r = ky_pkey_to_der(k, &der)) != 0 ||
	    (r = dd->seal->ops->seal(dd->seal, dd->key, aad.data, aad.len, der.data, der.len,
	                             &sealed)) != 0) {
		snprintf(err, errlen, "cannot make the identity key: %s", ky_err_message(r));
		goto out;
	}
	if ((r = ky_file_write_atomic(path, sealed.data, sealed.len, 0600)) != 0) {
		snprintf(err, errlen, "cannot write '%s': %s", path, ky_err_message(r));
		goto out;
	}
	*key = k;
	k = NULL; /* transferred */
	r = 0;
out:
	EVP_PKEY_free(k);
	ky_buf_free(&sealed);
	ky_buf_free(&der);
	ky_buf_free(&aad);
	free(path);
	return r;
}

int unitd_identity_request(struct unitd_datadir *dd, const struct unitd_config *cfg,
                           const char *csr_path, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *key = NULL;
	char *pem = NULL;

	if (access(dd->state_path, F_OK) == 0) {
		snprintf(
		    err, errlen,
		    "unit %s already has its state '%s' and its certified identity: no request "
		    "made",
		    cfg->unit, dd->state_path);
		r = KY_ERR_EXISTS;
		goto out;
	}
	r = identity_pending_load(dd, cfg, &key, err, errlen);
	if (r == KY_ERR_NOT_FOUND)
		r = identity_pending_make(dd, cfg, &key, err, errlen);
	if (r != 0)
		goto out;
	if ((r = ky_csr_create(key, cfg->unit, cfg->instance, &pem)) != 0) {
		snprintf(err, errlen, "cannot make the certificate request: %s", ky_err_message(r));
		goto out;
	}
	if ((r = ky_file_write_atomic(csr_path, pem, strlen(pem), 0644)) != 0) {
		snprintf(err, errlen, "cannot write '%s': %s", csr_path, ky_err_message(r));
		goto out;
	}
	unitd_log("identity request for unit %s of instance %s written to '%s'", cfg->unit,
	          cfg->instance, csr_path);
	r = 0;
out:
	free(pem);
	EVP_PKEY_free(key);
	return r;
}

/* A PEM certificate file named by the config. */
static int identity_cert_file(const char *key, const char *path, X509 **out, char *err,
                              size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};

	*out = NULL;
	if (path == NULL) {
		snprintf(err, errlen, "unit.conf names no %s", key);
		return KY_ERR_CONFIG;
	}
	if ((r = ky_file_read(path, IDENTITY_FILE_MAX, &b)) != 0 ||
	    (r = ky_buf_append(&b, "", 1)) != 0) {
		snprintf(err, errlen, "cannot read %s '%s': %s", key, path, ky_err_message(r));
		r = KY_ERR_CONFIG;
		goto out;
	}
	if (ky_cert_from_pem((const char *)b.data, out) != 0) {
		snprintf(err, errlen, "%s '%s' is not a PEM certificate", key, path);
		r = KY_ERR_CONFIG;
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

int unitd_identity_new_state(struct unitd_datadir *dd, const struct unitd_config *cfg,
                             struct ky_domain **out, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *key = NULL;
	X509 *identity = NULL, *anchor = NULL;

	*out = NULL;
	if ((r = identity_cert_file("anchor_cert", cfg->anchor_cert, &anchor, err, errlen)) != 0)
		goto out;
	r = identity_pending_load(dd, cfg, &key, err, errlen);
	if (r == KY_ERR_NOT_FOUND) {
		snprintf(
		    err, errlen,
		    "unit %s has no state and no identity request: run 'kyok-unitd --config "
		    "unit.conf --identity-request unit.csr', have the instance's anchor holder "
		    "certify it into identity_cert, then start the unit",
		    cfg->unit);
		r = KY_ERR_CONFIG;
	}
	if (r != 0)
		goto out;
	if ((r = identity_cert_file("identity_cert", cfg->identity_cert, &identity, err, errlen)) !=
	    0)
		goto out;
	if ((r = ky_domain_new_certified(cfg->instance, cfg->unit, cfg->zone, key, identity, anchor,
	                                 out)) != 0) {
		snprintf(
		    err, errlen,
		    "identity_cert '%s' is not the certificate of this unit's pending identity "
		    "key (CN %s, OU %s) issued by anchor_cert '%s'; refusing to create the state",
		    cfg->identity_cert, cfg->unit, cfg->instance, cfg->anchor_cert);
		r = r == KY_ERR_BAD_CERT ? KY_ERR_CONFIG : r;
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_free(key);
	X509_free(identity);
	X509_free(anchor);
	return r;
}

void unitd_identity_pending_drop(struct unitd_datadir *dd)
{
	char *path = NULL;

	if (identity_pending_path(dd, &path) != 0)
		return;
	if (unlink(path) != 0 && errno != ENOENT)
		unitd_log("warning: cannot remove '%s': %s", path, strerror(errno));
	free(path);
}

int unitd_anchor_check(const struct ky_domain *d, const struct unitd_config *cfg, char *err,
                       size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	X509 *anchor = NULL;
	char want[65] = "", got[65] = "";

	if ((r = identity_cert_file("anchor_cert", cfg->anchor_cert, &anchor, err, errlen)) != 0)
		goto out;
	if (X509_cmp(anchor, d->anchor_cert) != 0) {
		if (ky_pubkey_fingerprint(X509_get0_pubkey(d->anchor_cert), want) != 0 ||
		    X509_get0_pubkey(anchor) == NULL ||
		    ky_pubkey_fingerprint(X509_get0_pubkey(anchor), got) != 0)
			snprintf(got, sizeof(got), "(unreadable key)");
		snprintf(
		    err, errlen,
		    "anchor_cert '%s' (key sha256 %s) is not the unit trust anchor sealed in the "
		    "state of unit %s (key sha256 %s); refusing to start: point anchor_cert at "
		    "the instance's own anchor certificate",
		    cfg->anchor_cert, got, d->unit, want);
		r = KY_ERR_ANCHOR_MISMATCH;
		goto out;
	}
	r = 0;
out:
	X509_free(anchor);
	return r;
}
