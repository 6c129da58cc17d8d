/* Talking to crypto units over HTTP (libcurl).
 *
 * Every request carries a fresh random nonce; every reply must carry the unit's signature
 * over method, path, nonce and body, checked with the unit's identity key. That key is
 * fetched once per process and compared with the fingerprint pinned in known_units on
 * first contact (like SSH known_hosts).
 */
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/anchor.h"
#include "cli/cli.h"
#include "cli/failover.h"
#include "cli/http.h"
#include "kyok/crypto.h"
#include "kyok/imprint.h"
#include "kyok/wire.h"

#define CLIENT_BODY_MAX (4 * 1024 * 1024)
#define CLIENT_WHY_MAX  1280

struct client_reply {
	long status;
	struct ky_buf body;
	char sig[2048]; /* Kyok-Signature header value, "" when absent */
	bool sig_too_long;
	bool too_large;
};

/* Identity keys checked in this process. */
struct client_identity {
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	EVP_PKEY *pub;
};
static struct client_identity client_ids[16];
static size_t client_nids;

/* A NUL-terminated copy of n bytes (strndup would scan past a buffer without NUL). */
static char *client_text_dup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s == NULL)
		return NULL;
	if (n > 0)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static size_t client_on_body(char *p, size_t size, size_t nmemb, void *ud)
{
	struct client_reply *rep = ud;
	size_t n = size * nmemb;

	if (rep->body.len + n > CLIENT_BODY_MAX) {
		rep->too_large = true;
		return 0; /* aborts the transfer */
	}
	if (ky_buf_append(&rep->body, p, n) != 0)
		return 0;
	return n;
}

static size_t client_on_header(char *p, size_t size, size_t nmemb, void *ud)
{
	struct client_reply *rep = ud;
	size_t n = size * nmemb, k = strlen(KY_HDR_SIGNATURE);

	if (n > k && strncasecmp(p, KY_HDR_SIGNATURE, k) == 0 && p[k] == ':') {
		const char *v = p + k + 1;
		size_t len = n - k - 1;
		while (len > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			len--;
		}
		while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
			len--;
		if (len >= sizeof(rep->sig)) {
			rep->sig_too_long = true;
			return n;
		}
		memcpy(rep->sig, v, len);
		rep->sig[len] = '\0';
	}
	return n;
}

/* One HTTP exchange. Transport failures: KY_ERR_UNREACHABLE (or KY_ERR_BAD_REPLY for an
 * oversized reply) with a reason in why. */
static int client_http(const struct cli_unit *u, const char *method, const char *path,
                       const char *nonce, const char *claim, const uint8_t *body, size_t n,
                       struct client_reply *rep, char *why, size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	CURL *h = NULL;
	struct curl_slist *hdrs = NULL, *h2;
	char url[512], nonce_hdr[64], claim_hdr[160], errbuf[CURL_ERROR_SIZE];
	size_t base = strlen(u->url);
	long connect_s = 0, total_s = 0;
	CURLcode cc;

	memset(rep, 0, sizeof(*rep));
	if ((r = cli_timeouts(&connect_s, &total_s, why, whylen)) != 0)
		return r;
	while (base > 0 && u->url[base - 1] == '/')
		base--;
	snprintf(url, sizeof(url), "%.*s%s", (int)base, u->url, path);
	if ((h = cli_http_new()) == NULL) {
		r = KY_ERR_INTERNAL;
		snprintf(why, whylen, "cannot start the HTTP client");
		goto out;
	}
	r = KY_ERR_NOMEM;
	if (nonce != NULL) {
		snprintf(nonce_hdr, sizeof(nonce_hdr), "%s: %s", KY_HDR_NONCE, nonce);
		if ((h2 = curl_slist_append(hdrs, nonce_hdr)) == NULL)
			goto nomem;
		hdrs = h2;
	}
	if (claim != NULL) {
		if (snprintf(claim_hdr, sizeof(claim_hdr), "%s: %s", KY_HDR_IMPRINT_CLAIM, claim) >=
		    (int)sizeof(claim_hdr)) {
			r = KY_ERR_INTERNAL;
			snprintf(why, whylen, "imprint claim too long");
			goto out;
		}
		if ((h2 = curl_slist_append(hdrs, claim_hdr)) == NULL)
			goto nomem;
		hdrs = h2;
	}
	if (body != NULL) {
		if ((h2 = curl_slist_append(hdrs, "Content-Type: application/octet-stream")) ==
		    NULL)
			goto nomem;
		hdrs = h2;
		if ((h2 = curl_slist_append(hdrs, "Expect:")) == NULL)
			goto nomem;
		hdrs = h2;
	}
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, connect_s) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TIMEOUT, total_s) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, client_on_body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, rep) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, client_on_header) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HEADERDATA, rep) != CURLE_OK ||
	    cli_http_tls(h, errbuf) != 0) {
		r = KY_ERR_INTERNAL;
		snprintf(why, whylen, "cannot set up the HTTP request");
		goto out;
	}
	if (body != NULL) {
		if (curl_easy_setopt(h, CURLOPT_POST, 1L) != CURLE_OK ||
		    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
		    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n) != CURLE_OK) {
			r = KY_ERR_INTERNAL;
			snprintf(why, whylen, "cannot set up the HTTP request");
			goto out;
		}
	} else if (strcmp(method, "GET") != 0) {
		r = KY_ERR_INTERNAL;
		snprintf(why, whylen, "%s without a body", method);
		goto out;
	}
	cc = curl_easy_perform(h);
	if (rep->too_large) {
		r = KY_ERR_BAD_REPLY;
		snprintf(why, whylen, "%s: reply larger than %d bytes", url, CLIENT_BODY_MAX);
		goto out;
	}
	if (cc != CURLE_OK) {
		r = cli_http_failure(cc, url, errbuf, why, whylen);
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rep->status);
	r = 0;
	goto out;
nomem:
	snprintf(why, whylen, "out of memory");
out:
	if (r != 0)
		ky_buf_free(&rep->body);
	curl_slist_free_all(hdrs);
	if (h != NULL)
		curl_easy_cleanup(h);
	return r;
}

static int client_nonce(char out[KY_NONCE_HEX + 1])
{
	uint8_t raw[KY_NONCE_HEX / 2];
	int r;

	if ((r = ky_random(raw, sizeof(raw))) != 0)
		return r;
	ky_hex_encode(raw, sizeof(raw), out);
	return 0;
}

/* Checks the reply signature with pub. */
static int client_check_sig(EVP_PKEY *pub, const char *method, const char *path, const char *nonce,
                            const struct client_reply *rep, char *why, size_t whylen)
{
	if (rep->sig[0] == '\0' || rep->sig_too_long) {
		snprintf(why, whylen, "%s %s: reply is not signed (HTTP %ld)", method, path,
		         rep->status);
		return KY_ERR_BAD_REPLY;
	}
	if (ky_reply_verify(pub, method, path, nonce, rep->body.data, rep->body.len, rep->sig) !=
	    0) {
		snprintf(why, whylen,
		         "%s %s: reply signature does not verify with the unit's "
		         "identity key",
		         method, path);
		return KY_ERR_BAD_REPLY;
	}
	return 0;
}

/* Error reply {"ok": false, "error": {"code", "message", "detail"}}: the unit's code, and
 * in why its detail (with its message when that differs from ours for the code). */
static int client_error_reply(json_t *j, long status, char *why, size_t whylen)
{
	json_t *e = json_object_get(j, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	const char *detail = json_string_value(json_object_get(e, "detail"));
	int r;

	if (code == NULL) {
		snprintf(why, whylen, "error reply without a code (HTTP %ld)", status);
		return KY_ERR_BAD_REPLY;
	}
	r = ky_err_from_slug(code);
	if (r == KY_ERR_OK) {
		snprintf(why, whylen, "error reply with code 'ok' (HTTP %ld)", status);
		return KY_ERR_BAD_REPLY;
	}
	if (detail == NULL)
		detail = "";
	if (msg == NULL || strcmp(msg, ky_err_message(r)) == 0)
		snprintf(why, whylen, "%s", detail);
	else if (detail[0] != '\0')
		snprintf(why, whylen, "%s: %s", msg, detail);
	else
		snprintf(why, whylen, "%s", msg);
	return r;
}

/* The subject's OU. */
static bool client_cert_ou_is(X509 *cert, const char *want)
{
	const X509_NAME *name = X509_get_subject_name(cert);
	int i = X509_NAME_get_index_by_NID(name, NID_organizationalUnitName, -1);
	const ASN1_STRING *s;

	if (i < 0)
		return false;
	s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
	return s != NULL && (size_t)ASN1_STRING_length(s) == strlen(want) &&
	       memcmp(ASN1_STRING_get0_data(s), want, strlen(want)) == 0;
}

/* With the instance's anchor certificate at hand (<dir>/anchor.crt, made by 'kyok up'), a
 * unit's identity must be issued by it: a unit the operator never certified is refused even
 * on first contact. Without it, the pin alone decides. */
static int client_identity_anchored(const struct cli_instance *inst, X509 *cert, char *why,
                                    size_t whylen)
{
	X509 *anchor = NULL;
	int r = cli_anchor_cert(inst->dir, &anchor);

	if (r == KY_ERR_NOT_FOUND)
		return 0;
	if (r != 0) {
		snprintf(why, whylen, "cannot read the instance's anchor.crt in %s", inst->dir);
		return KY_ERR_CONFIG;
	}
	r = ky_cert_chain_verify(cert, NULL, anchor);
	X509_free(anchor);
	if (r != 0) {
		snprintf(why, whylen,
		         "identity certificate is not issued by the instance's unit trust anchor "
		         "(%s/anchor.crt)",
		         inst->dir);
		return KY_ERR_BAD_REPLY;
	}
	return 0;
}

/* The unit's identity public key: fetched and checked against known_units once per
 * process; pinned on first contact. */
static int client_identity(const struct cli_instance *inst, const struct cli_unit *u,
                           EVP_PKEY **pub, char *why, size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	struct client_reply rep;
	char nonce[KY_NONCE_HEX + 1], fp[65], pinned[65], cn[KY_ID_MAX + 2];
	char *pem = NULL;
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	bool have_pin;

	*pub = NULL;
	for (size_t i = 0; i < client_nids; i++)
		if (strcmp(client_ids[i].instance, inst->id) == 0 &&
		    strcmp(client_ids[i].unit, u->id) == 0) {
			*pub = client_ids[i].pub;
			return 0;
		}
	memset(&rep, 0, sizeof(rep));
	if ((r = client_nonce(nonce)) != 0) {
		snprintf(why, whylen, "cannot make a nonce");
		goto out;
	}
	if ((r = client_http(u, "GET", "/v1/admin/identity", nonce, NULL, NULL, 0, &rep, why,
	                     whylen)) != 0)
		goto out;
	r = KY_ERR_BAD_REPLY;
	if (rep.status != 200) {
		snprintf(why, whylen, "%s/v1/admin/identity: HTTP %ld", u->url, rep.status);
		goto out;
	}
	if ((pem = client_text_dup(rep.body.data, rep.body.len)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	if (ky_cert_from_pem(pem, &cert) != 0) {
		snprintf(why, whylen, "identity reply is not a PEM certificate");
		goto out;
	}
	if ((key = X509_get_pubkey(cert)) == NULL) {
		snprintf(why, whylen, "identity certificate has no usable public key");
		goto out;
	}
	if (ky_cert_cn(cert, cn, sizeof(cn)) != 0 || strcmp(cn, u->id) != 0) {
		snprintf(why, whylen,
		         "identity certificate names unit '%.64s', instance.json says '%s'", cn,
		         u->id);
		goto out;
	}
	if (!client_cert_ou_is(cert, inst->id)) {
		snprintf(why, whylen, "identity certificate is not for instance '%s'", inst->id);
		goto out;
	}
	if ((r = client_identity_anchored(inst, cert, why, whylen)) != 0)
		goto out;
	r = KY_ERR_BAD_REPLY;
	/* The reply is signed with the key it presents: proves the unit holds it now. */
	if ((r = client_check_sig(key, "GET", "/v1/admin/identity", nonce, &rep, why, whylen)) != 0)
		goto out;
	if ((r = ky_pubkey_fingerprint(key, fp)) != 0) {
		snprintf(why, whylen, "cannot fingerprint the identity key");
		goto out;
	}
	r = cli_known_unit_lookup(inst->id, u->id, pinned);
	if (r != 0 && r != KY_ERR_NOT_FOUND) {
		snprintf(why, whylen, "cannot read the pinned identities");
		goto out;
	}
	have_pin = r == 0;
	if (have_pin && strcmp(pinned, fp) != 0) {
		r = KY_ERR_IDENTITY_CHANGED;
		snprintf(why, whylen,
		         "unit %s at %s now presents key sha256 %s, pinned sha256 %s: a unit "
		         "whose state was created again (its data directory lost or deleted) "
		         "has a new identity key, a new incarnation and no administrators; if "
		         "its operator confirms that it was re-created and this key, delete its "
		         "line from %s/known_units to pin it again and run the ceremony on it "
		         "anew; otherwise another party answers at that address: do not go on",
		         u->id, u->url, fp, pinned, cli_workspace());
		goto out;
	}
	if (!have_pin) {
		if ((r = cli_known_unit_pin(inst->id, u->id, fp)) != 0) {
			snprintf(why, whylen, "cannot pin the unit identity");
			goto out;
		}
		fprintf(stderr, "pinned identity of crypto unit %d (%s): sha256 %s\n", u->number,
		        u->id, fp);
	}
	if (client_nids < sizeof(client_ids) / sizeof(client_ids[0])) {
		struct client_identity *ci = &client_ids[client_nids++];
		snprintf(ci->instance, sizeof(ci->instance), "%s", inst->id);
		snprintf(ci->unit, sizeof(ci->unit), "%s", u->id);
		ci->pub = key;
		key = NULL; /* transferred */
		*pub = ci->pub;
	} else {
		r = KY_ERR_INTERNAL;
		snprintf(why, whylen, "too many crypto units");
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_free(key);
	X509_free(cert);
	free(pem);
	ky_buf_free(&rep.body);
	return r;
}

/* A signed exchange with a unit: identity, nonce, request, signature check, and for
 * replies other than 200 the unit's error code. On success rep holds the body. */
static int client_exchange(const struct cli_instance *inst, const struct cli_unit *u,
                           const char *method, const char *path, const char *claim,
                           const uint8_t *body, size_t n, struct client_reply *rep, char *why,
                           size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	EVP_PKEY *pub;
	char nonce[KY_NONCE_HEX + 1];
	json_t *j = NULL;

	memset(rep, 0, sizeof(*rep));
	if ((r = client_identity(inst, u, &pub, why, whylen)) != 0)
		return r;
	if ((r = client_nonce(nonce)) != 0) {
		snprintf(why, whylen, "cannot make a nonce");
		return r;
	}
	if ((r = client_http(u, method, path, nonce, claim, body, n, rep, why, whylen)) != 0)
		return r;
	if ((r = client_check_sig(pub, method, path, nonce, rep, why, whylen)) != 0)
		goto out;
	if (rep->status != 200) {
		j = json_loadb((const char *)rep->body.data, rep->body.len, 0, NULL);
		if (j == NULL) {
			r = KY_ERR_BAD_REPLY;
			snprintf(why, whylen, "%s %s: HTTP %ld", method, path, rep->status);
			goto out;
		}
		r = client_error_reply(j, rep->status, why, whylen);
		goto out;
	}
	r = 0;
out:
	json_decref(j);
	if (r != 0)
		ky_buf_free(&rep->body);
	return r;
}

static int client_unit_fail(int r, const struct cli_unit *u, const char *why)
{
	char subject[160];

	snprintf(subject, sizeof(subject), "crypto unit %d (%s)", u->number, u->zone);
	cli_fail(r, subject, "%s", why);
	return r;
}

int unit_state(const struct cli_instance *inst, const struct cli_unit *u, json_t **state)
{
	int r = KY_ERR_INTERNAL;
	struct client_reply rep;
	char why[CLIENT_WHY_MAX] = "";
	json_t *j = NULL;
	const char *ji, *ju;

	*state = NULL;
	if ((r = client_exchange(inst, u, "GET", "/v1/admin/state", NULL, NULL, 0, &rep, why,
	                         sizeof(why))) != 0)
		return client_unit_fail(r, u, why);
	r = KY_ERR_BAD_REPLY;
	j = json_loadb((const char *)rep.body.data, rep.body.len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j)) {
		snprintf(why, sizeof(why), "state reply is not a JSON object");
		goto fail;
	}
	ji = json_string_value(json_object_get(j, "instance"));
	ju = json_string_value(json_object_get(j, "unit"));
	if (ji == NULL || ju == NULL || strcmp(ji, inst->id) != 0 || strcmp(ju, u->id) != 0) {
		snprintf(why, sizeof(why), "state reply is about another instance or unit");
		goto fail;
	}
	*state = j;
	j = NULL; /* transferred */
	r = 0;
	goto out;
fail:
	client_unit_fail(r, u, why);
out:
	json_decref(j);
	ky_buf_free(&rep.body);
	return r;
}

int unit_get(const struct cli_instance *inst, const struct cli_unit *u, const char *path,
             json_t **out)
{
	int r = KY_ERR_INTERNAL;
	struct client_reply rep;
	char why[CLIENT_WHY_MAX] = "";
	json_t *j = NULL;

	*out = NULL;
	if ((r = client_exchange(inst, u, "GET", path, NULL, NULL, 0, &rep, why, sizeof(why))) != 0)
		return client_unit_fail(r, u, why);
	j = json_loadb((const char *)rep.body.data, rep.body.len, JSON_REJECT_DUPLICATES, NULL);
	ky_buf_free(&rep.body);
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(why, sizeof(why), "GET %s: reply is not a JSON object", path);
		return client_unit_fail(KY_ERR_BAD_REPLY, u, why);
	}
	*out = j;
	return 0;
}

/* GET path, a PEM certificate: the importer's (importer set: it must be issued by the unit's
 * pinned identity) or the identity's (it must hold the pinned identity key). Errors printed
 * (client_unit_fail). */
static int client_unit_cert(const struct cli_instance *inst, const struct cli_unit *u,
                            bool importer, X509 **cert)
{
	int r = KY_ERR_INTERNAL;
	struct client_reply rep;
	char why[CLIENT_WHY_MAX] = "";
	const char *what = importer ? "importer" : "identity";
	char *pem = NULL;
	X509 *c = NULL;
	EVP_PKEY *pub = NULL;

	*cert = NULL;
	if ((r = client_exchange(inst, u, "GET",
	                         importer ? "/v1/admin/importer" : "/v1/admin/identity", NULL, NULL,
	                         0, &rep, why, sizeof(why))) != 0)
		return client_unit_fail(r, u, why);
	if ((r = client_identity(inst, u, &pub, why, sizeof(why))) != 0)
		goto fail;
	if ((pem = client_text_dup(rep.body.data, rep.body.len)) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(why, sizeof(why), "out of memory");
		goto fail;
	}
	if (ky_cert_from_pem(pem, &c) != 0) {
		r = KY_ERR_BAD_REPLY;
		snprintf(why, sizeof(why), "%s reply is not a PEM certificate", what);
		goto fail;
	}
	if (importer && ky_cert_verify_by(c, pub) != 0) {
		r = KY_ERR_BAD_REPLY;
		snprintf(why, sizeof(why),
		         "importer certificate is not issued by the unit's pinned identity");
		goto fail;
	}
	if (!importer &&
	    (X509_get0_pubkey(c) == NULL || EVP_PKEY_eq(X509_get0_pubkey(c), pub) != 1)) {
		r = KY_ERR_IDENTITY_CHANGED;
		snprintf(why, sizeof(why),
		         "identity certificate is not the unit's pinned identity");
		goto fail;
	}
	*cert = c;
	c = NULL; /* transferred */
	r = 0;
	goto out;
fail:
	client_unit_fail(r, u, why);
out:
	X509_free(c);
	free(pem);
	ky_buf_free(&rep.body);
	return r;
}

int unit_importer(const struct cli_instance *inst, const struct cli_unit *u, X509 **cert)
{
	return client_unit_cert(inst, u, true, cert);
}

int unit_identity_cert(const struct cli_instance *inst, const struct cli_unit *u, X509 **cert)
{
	return client_unit_cert(inst, u, false, cert);
}

/* A unit wanted an imprint claim and none was sent: say where the credential was looked for. */
static void client_imprint_hint(char *why, size_t whylen)
{
	size_t len = strlen(why);

	snprintf(why + len, whylen - len,
	         "%sno imprint credential was found: give --imprint-credential FILE or set "
	         "KYOK_IMPRINT_CREDENTIAL_FILE (none at %s/%s)",
	         len > 0 ? ": " : "", cli_instance_dir(), KY_IMPRINT_CREDENTIAL_FILE);
}

int unit_command(const struct cli_instance *inst, const struct cli_unit *u, const uint8_t *cms,
                 size_t n, json_t **reply, char **detail)
{
	int r = KY_ERR_INTERNAL;
	struct client_reply rep;
	char why[CLIENT_WHY_MAX] = "";
	json_t *j = NULL;
	char *claim = NULL;

	*reply = NULL;
	*detail = NULL;
	if (n > KY_MAX_COMMAND_BYTES) {
		r = KY_ERR_TOO_LARGE;
		snprintf(why, sizeof(why), "command larger than %d bytes", KY_MAX_COMMAND_BYTES);
		goto fail;
	}
	if ((r = cli_imprint_claim(cms, n, &claim, why, sizeof(why))) != 0)
		goto fail;
	if ((r = client_exchange(inst, u, "POST", "/v1/admin/command", claim, cms, n, &rep, why,
	                         sizeof(why))) != 0) {
		if (r == KY_ERR_IMPRINT_CLAIM_REQUIRED && claim == NULL)
			client_imprint_hint(why, sizeof(why));
		goto fail;
	}
	r = KY_ERR_BAD_REPLY;
	j = json_loadb((const char *)rep.body.data, rep.body.len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j)) {
		snprintf(why, sizeof(why), "command reply is not a JSON object");
		goto fail;
	}
	if (!json_is_true(json_object_get(j, "ok"))) {
		r = client_error_reply(j, rep.status, why, sizeof(why));
		if (r == 0)
			r = KY_ERR_BAD_REPLY;
		goto fail;
	}
	if (!json_is_object(json_object_get(j, "result")) ||
	    !json_is_object(json_object_get(j, "state"))) {
		snprintf(why, sizeof(why), "command reply lacks 'result' or 'state'");
		goto fail;
	}
	*reply = j;
	j = NULL; /* transferred */
	r = 0;
	goto out;
fail:
	*detail = strdup(why);
out:
	free(claim);
	json_decref(j);
	ky_buf_free(&rep.body);
	return r;
}

int unit_health(const struct cli_unit *u, char *why, size_t whylen)
{
	int r;
	struct client_reply rep;
	json_t *j = NULL;

	if ((r = client_http(u, "GET", "/v1/health", NULL, NULL, NULL, 0, &rep, why, whylen)) != 0)
		return r;
	r = KY_ERR_BAD_REPLY;
	if (rep.status != 200) {
		snprintf(why, whylen, "%s/v1/health: HTTP %ld", u->url, rep.status);
		goto out;
	}
	j = json_loadb((const char *)rep.body.data, rep.body.len, 0, NULL);
	if (!json_is_object(j)) {
		snprintf(why, whylen, "%s/v1/health: reply is not JSON", u->url);
		goto out;
	}
	r = 0;
out:
	json_decref(j);
	ky_buf_free(&rep.body);
	return r;
}
