/* kyok host: crypto units of one instance on several hosts, sharing one PostgreSQL key storage.
 *
 * The first host (made with 'kyok up --tls --store URI --listen ADDR') holds the instance's
 * secrets: anchor.key (the unit trust anchor) and ca.key (its TLS CA). Another host joins in
 * four steps, and only public data travels between the two:
 *
 *   first host    kyok host invite --out invite.json
 *                   {"format": "kyok-host-invite-1", "instance", "anchor_cert" (PEM),
 *                    "tls_ca_cert" (PEM), "imprint_verifier" (hex)}
 *   other host    kyok host join-request --dir DIR --invite invite.json --listen ADDR
 *                                        --store URI [--units N] [--zones ...] [--port BASE]
 *                   makes its units in DIR/join-<unit id>/: each makes its identity key
 *                   (kyok-unitd --identity-request, sealed in its data_dir) and its TLS key
 *                   (tls.key); writes DIR/join-request.json:
 *                   {"format": "kyok-join-request-1", "instance", "anchor_sha256" (SHA-256 of
 *                    the anchor's public key), "address", "units": [{"id", "zone", "port",
 *                    "identity_csr", "tls_csr"}]}
 *   first host    kyok host join-accept --request join-request.json --out join-answer.json
 *                   checks the request (this instance and anchor, new unit ids and URLs, an
 *                   address other hosts reach), issues each unit's identity certificate with
 *                   the anchor and its TLS certificate (subjectAltName IP ADDR) with the CA,
 *                   numbers the units after the instance's, writes the answer
 *                   {"format": "kyok-join-answer-1", "instance", "request_sha256",
 *                    "units": [{"id", "number", "number_sig", "identity_cert", "tls_cert"}]}
 *                   (number_sig: the anchor's signature of the number, host_number_msg)
 *                   and adds the units to its instance.json, "remote": true, https URLs
 *   other host    kyok host join-finish --dir DIR --answer join-answer.json
 *                   checks the answer against its own request and the anchor and CA of the
 *                   invitation (every certificate, for the key made here), installs the units
 *                   as DIR/unit-<number>/, writes DIR/instance.json (its own units) and starts
 *                   them as 'kyok up' does
 *
 * Nothing half-made stays: a refused step leaves every file as it was.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/anchor.h"
#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/host_internal.h"
#include "cli/up.h"
#include "cli/up_tls.h"
#include "kyok/crypto.h"
#include "kyok/imprint.h"

/* ---- small helpers ---- */

int host_sha256_hex(const void *data, size_t n, char out[65])
{
	uint8_t md[32];
	unsigned int len = 0;

	if (EVP_Digest(data, n, md, &len, EVP_sha256(), NULL) != 1 || len != sizeof(md))
		return KY_ERR_CRYPTO;
	ky_hex_encode(md, sizeof(md), out);
	return 0;
}

/* Reads a JSON object file; raw (may be NULL) keeps its bytes. Prints its errors. */
int host_read_json(const char *path, const char *what, json_t **out, struct ky_buf *raw)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	json_error_t jerr;

	*out = NULL;
	if ((r = ky_file_read(path, HOST_FILE_MAX, &b)) != 0) {
		cli_fail(r, path, "cannot read the %s", what);
		goto out;
	}
	if ((*out = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, path, "the %s is not JSON (line %d: %s)", what, jerr.line, jerr.text);
		goto out;
	}
	if (!json_is_object(*out)) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, path, "the %s is not a JSON object", what);
		json_decref(*out);
		*out = NULL;
		goto out;
	}
	if (raw != NULL) {
		*raw = b;
		b = (struct ky_buf){0}; /* transferred */
	}
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

int host_write_json(const char *path, json_t *j)
{
	int r = KY_ERR_NOMEM;
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

	if (text == NULL) {
		cli_fail(r, NULL, NULL);
		return r;
	}
	if ((r = ky_file_write_atomic(path, text, strlen(text), 0644)) != 0)
		cli_fail(r, path, "cannot write: %s", strerror(errno));
	free(text);
	return r;
}

/* A string member of a JSON object, at most max bytes, or NULL. */
const char *host_str(const json_t *o, const char *key, size_t max)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL && s[0] != '\0' && strlen(s) <= max ? s : NULL;
}

/* An IPv4 address of one host that other hosts can reach. */
int host_address_check(const char *subject, const char *addr)
{
	struct in_addr a;

	if (inet_pton(AF_INET, addr, &a) != 1) {
		cli_fail(KY_ERR_USAGE, subject, "'%.64s': give an IPv4 address", addr);
		return KY_ERR_USAGE;
	}
	/* loopback, 0.0.0.0/8 ("this network"), multicast 224/4, reserved 240/4 (with the
	 * broadcast address): none names one host that others reach */
	if ((ntohl(a.s_addr) >> 24) == 127 || (ntohl(a.s_addr) >> 24) == 0 ||
	    (ntohl(a.s_addr) >> 28) >= 0xe) {
		cli_fail(KY_ERR_JOIN_LOOPBACK, subject, "'%s'", addr);
		return KY_ERR_JOIN_LOOPBACK;
	}
	return 0;
}

/* The fingerprint of a join file: SHA-256 of its JSON, compact with sorted members (so the
 * same members give the same fingerprint however the file is laid out), hex. */
int host_json_sha256(const json_t *j, char out[65])
{
	int r = KY_ERR_NOMEM;
	char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

	if (text != NULL) {
		r = host_sha256_hex(text, strlen(text), out);
		free(text);
	}
	return r;
}

/* Exactly one PEM certificate, nothing else. */
bool host_one_pem_cert(const char *pem)
{
	const char *b = strstr(pem, "-----BEGIN ");

	return b != NULL && strncmp(b, "-----BEGIN CERTIFICATE-----", 27) == 0 &&
	       strstr(b + 11, "-----BEGIN ") == NULL;
}

/* SHA-256 of the anchor certificate's public key, hex. */
int host_number_msg(const char *instance, const char *req_hex, const char *uid, int number,
                    char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "kyok-join-number-1\n%s\n%s\n%s\n%d", instance, req_hex, uid,
	                 number);

	return n > 0 && (size_t)n < outlen ? 0 : KY_ERR_USAGE;
}

int host_anchor_sha256(X509 *anchor, char out[65])
{
	return ky_pubkey_fingerprint(X509_get0_pubkey(anchor), out);
}

/* ---- kyok host invite ---- */

static const char invite_usage[] =
    "usage: kyok host invite --out FILE [options]\n"
    "\n"
    "On the host holding the instance's unit trust anchor (anchor.key) and TLS CA\n"
    "(ca.key, made with 'kyok up --tls'): writes the invitation another host needs to\n"
    "make crypto units of this instance, 'kyok host join-request'. It holds only public\n"
    "data: the instance id, the anchor's and the TLS CA's certificates and the public key\n"
    "of the imprint credential. Prints its fingerprint (SHA-256): tell it to the other\n"
    "host's operator by a channel you trust, not with the file; 'kyok host join-request'\n"
    "refuses an invitation without it (its certificates decide which units and servers\n"
    "the other host trusts, its imprint key who sets up the new units).\n"
    "\n";

/* The invitation of this host's instance: the same members, in the same form, every time
 * (join-accept makes it again to compare with the one a request was made from). */
static int host_invite_json(const struct cli_instance *inst, json_t **out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf ca = {0};
	X509 *anchor = NULL;
	char *anchor_pem = NULL, path[PATH_MAX], hex[2 * KY_IMPRINT_PUB_LEN + 1] = "";
	json_t *j = NULL;

	*out = NULL;
	snprintf(path, sizeof(path), "%s/anchor.key", inst->dir);
	if (access(path, F_OK) != 0 || cli_anchor_cert(inst->dir, &anchor) != 0) {
		r = KY_ERR_NOT_FOUND;
		cli_fail(r, inst->dir,
		         "no unit trust anchor (anchor.key, anchor.crt) here: invite from the host "
		         "that made the instance");
		goto out;
	}
	snprintf(path, sizeof(path), "%s/ca.key", inst->dir);
	if (access(path, F_OK) != 0) {
		r = KY_ERR_USAGE;
		cli_fail(r, inst->dir,
		         "the instance has no TLS CA (ca.key, made with 'kyok up --tls'): units "
		         "on other hosts are reached over HTTPS only");
		goto out;
	}
	snprintf(path, sizeof(path), "%s/ca.crt", inst->dir);
	if ((r = ky_file_read(path, HOST_PEM_MAX, &ca)) != 0 ||
	    (r = ky_buf_append(&ca, "", 1)) != 0) {
		cli_fail(r, path, "cannot read the instance's TLS CA certificate");
		goto out;
	}
	for (size_t i = 0; i < inst->nunits && hex[0] == '\0'; i++) {
		char conf[PATH_MAX];
		if (inst->units[i].remote)
			continue;
		snprintf(conf, sizeof(conf), "%s/unit-%d/unit.conf", inst->dir,
		         inst->units[i].number);
		if (!up_imprint_conf_verifier(conf, hex))
			hex[0] = '\0';
	}
	if (hex[0] == '\0') {
		r = KY_ERR_CONFIG;
		cli_fail(r, inst->dir,
		         "no unit.conf of this host has the instance's imprint_verifier: 'kyok up' "
		         "adds it");
		goto out;
	}
	if ((r = ky_cert_to_pem(anchor, &anchor_pem)) != 0 ||
	    (j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "format", HOST_INVITE_FORMAT, "instance",
	                   inst->id, "anchor_cert", anchor_pem, "tls_ca_cert",
	                   (const char *)ca.data, "imprint_verifier", hex)) == NULL) {
		r = r != 0 ? r : KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	*out = j;
	j = NULL; /* transferred */
	r = 0;
out:
	json_decref(j);
	free(anchor_pem);
	X509_free(anchor);
	ky_buf_free(&ca);
	return r;
}

static int host_invite_main(int argc, char **argv)
{
	enum { OPT_OUT = 0x2001 };
	static const struct cli_opt opts[] = {
	    {"out", OPT_OUT, CLI_ARG_REQUIRED, "FILE", "where to write the invitation (JSON)"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c;
	const char *out_path = NULL;
	struct cli_instance inst;
	char fp[65];
	json_t *j = NULL;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, invite_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_OUT)
			out_path = optarg;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if (out_path == NULL)
		return cli_fail(KY_ERR_USAGE, "--out", "give the file to write the invitation to");
	if ((r = cli_instance_load(&inst)) != 0)
		return ky_err_exit(r);
	if ((r = host_invite_json(&inst, &j)) != 0 || (r = host_json_sha256(j, fp)) != 0)
		goto out;
	if ((r = host_write_json(out_path, j)) != 0)
		goto out;
	if (!cli_g.json)
		printf(
		    "invitation to instance %s written to %s\nits fingerprint (SHA-256): %s\n"
		    "tell the fingerprint to the other host's operator by a channel you trust "
		    "(in person, on the phone: not with the file); there, 'kyok host join-request "
		    "--invite FILE --invite-sha256 %s ...'\n",
		    inst.id, out_path, fp, fp);
	else
		cli_print_json(json_pack("{s:s, s:s, s:s}", "instance", inst.id, "invitation",
		                         out_path, "sha256", fp));
	r = 0;
out:
	json_decref(j);
	return ky_err_exit(r);
}

/* ---- kyok host join-accept ---- */

static const char join_accept_usage[] =
    "usage: kyok host join-accept --request FILE --out FILE [options]\n"
    "\n"
    "On the host holding the instance's unit trust anchor (anchor.key) and TLS CA\n"
    "(ca.key): accepts the crypto units of another host's join request ('kyok host\n"
    "join-request'). Checks that it is for this instance and its anchor, that its unit\n"
    "ids and URLs are new to the instance and that its address is one other hosts reach;\n"
    "issues each unit's identity certificate with the anchor (from the unit's own\n"
    "request: its key stays on its host) and its TLS certificate with the instance's CA\n"
    "(for the request's address); numbers the units after the instance's; writes the\n"
    "answer (public data only) to --out and adds the units to instance.json (\"remote\":\n"
    "true, https URLs). A refused request changes nothing. Give the new instance.json to\n"
    "the administrators' workstations; take the answer to the other host for 'kyok host\n"
    "join-finish'.\n"
    "\n";

/* The request's units, checked: new ids, URLs new to the instance. */
/* The address in a unit's URL ("https://ADDR:PORT"), into out. */
static void host_url_address(const char *url, char *out, size_t cap)
{
	const char *p = strstr(url, "://");
	size_t n;

	p = p != NULL ? p + 3 : url;
	n = strcspn(p, ":/");
	snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
}

static int host_accept_check(const char *path, const struct cli_instance *inst, json_t *req,
                             const char **address, const char *anchor_hex, const char *invite_hex,
                             bool same_host)
{
	int r = KY_ERR_MALFORMED;
	const char *fmt = host_str(req, "format", 64), *id = host_str(req, "instance", KY_ID_MAX);
	const char *ah = host_str(req, "anchor_sha256", 64),
	           *ih = host_str(req, "invite_sha256", 64);
	json_t *units = json_object_get(req, "units"), *u;
	size_t i;

	*address = host_str(req, "address", 64);
	if (fmt == NULL || strcmp(fmt, HOST_REQ_FORMAT) != 0 || id == NULL || ah == NULL ||
	    ih == NULL || *address == NULL || !json_is_array(units) ||
	    json_array_size(units) == 0) {
		cli_fail(r, path,
		         "not a join request of 'kyok host join-request' (format %s: instance, "
		         "anchor_sha256, invite_sha256, address, units)",
		         HOST_REQ_FORMAT);
		return r;
	}
	if (strcmp(id, inst->id) != 0 || strcmp(ah, anchor_hex) != 0) {
		r = KY_ERR_JOIN_OTHER_INSTANCE;
		cli_fail(r, path,
		         strcmp(id, inst->id) != 0
		             ? "the request is for instance '%s', this is instance '%s'"
		             : "the request names instance '%s' but another anchor than its own "
		               "(instance '%s')",
		         id, inst->id);
		return r;
	}
	/* The request was made from this instance's invitation as it is now: an invitation
	 * changed on the way (another CA, another imprint key) was not this host's. */
	if (strcasecmp(ih, invite_hex) != 0) {
		r = KY_ERR_JOIN_INVITE_ALTERED;
		cli_fail(r, path,
		         "the request was made from an invitation whose fingerprint is %s; this "
		         "instance's is %s",
		         ih, invite_hex);
		return r;
	}
	if ((r = host_address_check(path, *address)) != 0)
		return r;
	/* A certificate for an address names whoever holds it: never one of this host's units'
	 * addresses, and another host's only when the operator says it is that host. */
	for (size_t k = 0; k < inst->nunits; k++) {
		char a[64];
		host_url_address(inst->units[k].url, a, sizeof(a));
		if (strcmp(a, *address) != 0 || (inst->units[k].remote && same_host))
			continue;
		r = KY_ERR_JOIN_ADDRESS_IN_USE;
		cli_fail(
		    r, path,
		    inst->units[k].remote
		        ? "%s is the address of crypto unit %d, on another host: if the request "
		          "comes from that host, accept it with --same-host"
		        : "%s is the address of crypto unit %d, on this host",
		    *address, inst->units[k].number);
		return r;
	}
	if (inst->nunits + json_array_size(units) > UP_MAX_UNITS) {
		r = KY_ERR_USAGE;
		cli_fail(r, path, "the instance has %zu crypto units: %zu more go past %d",
		         inst->nunits, json_array_size(units), UP_MAX_UNITS);
		return r;
	}
	json_array_foreach(units, i, u)
	{
		const char *uid = host_str(u, "id", KY_ID_MAX),
		           *zone = host_str(u, "zone", KY_ID_MAX);
		json_t *port = json_object_get(u, "port");
		char url[256];

		r = KY_ERR_MALFORMED;
		if (uid == NULL || !ky_id_valid(uid) || zone == NULL || !ky_id_valid(zone) ||
		    !json_is_integer(port) || json_integer_value(port) < 1 ||
		    json_integer_value(port) > 65535 ||
		    host_str(u, "identity_csr", HOST_PEM_MAX) == NULL ||
		    host_str(u, "tls_csr", HOST_PEM_MAX) == NULL) {
			cli_fail(r, path,
			         "unit %zu: needs id, zone (1 to %d of A-Z a-z 0-9 . _ -), port, "
			         "identity_csr and tls_csr",
			         i + 1, KY_ID_MAX);
			return r;
		}
		snprintf(url, sizeof(url), "https://%s:%d", *address,
		         (int)json_integer_value(port));
		for (size_t k = 0; k < inst->nunits; k++) {
			r = KY_ERR_JOIN_UNIT_EXISTS;
			if (strcasecmp(inst->units[k].id, uid) == 0) {
				cli_fail(r, path, "unit '%s' is crypto unit %d of the instance",
				         uid, inst->units[k].number);
				return r;
			}
			if (strcmp(inst->units[k].url, url) == 0) {
				cli_fail(r, path,
				         "unit '%s': crypto unit %d of the instance has %s", uid,
				         inst->units[k].number, url);
				return r;
			}
		}
		for (size_t k = 0; k < i; k++) {
			json_t *o = json_array_get(units, k);
			if (strcasecmp(json_string_value(json_object_get(o, "id")), uid) == 0 ||
			    json_integer_value(json_object_get(o, "port")) ==
			        json_integer_value(port)) {
				r = KY_ERR_MALFORMED;
				cli_fail(r, path, "unit '%s': its id or port appears twice", uid);
				return r;
			}
		}
	}
	return 0;
}

static int host_join_accept_main(int argc, char **argv)
{
	enum { OPT_SAME_HOST = 0x2001, OPT_OUT, OPT_REQUEST };
	static const struct cli_opt opts[] = {
	    {"request", OPT_REQUEST, CLI_ARG_REQUIRED, "FILE",
	     "the other host's join-request.json"},
	    {"out", OPT_OUT, CLI_ARG_REQUIRED, "FILE",
	     "where to write the answer (JSON): a new file"},
	    {"same-host", OPT_SAME_HOST, CLI_ARG_NONE, NULL,
	     "the request comes from a host that has units of the instance already (its address is "
	     "theirs); never for this host's address"},
	    CLI_OPT_TEXT(
	        "\nRefused: a request made from another invitation than this instance's "
	        "(its\nfingerprint differs), an address of this host's units, or of another "
	        "host's\nwithout --same-host, or while another join-accept of the instance "
	        "runs\n(DIR/join.lock).\n"),
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c, maxnum = 0, lock = -1;
	const char *req_path = NULL, *out_path = NULL, *address = NULL;
	struct cli_instance inst;
	struct ky_buf raw = {0};
	struct up_unit *units = NULL;
	json_t *req = NULL, *answer = NULL, *arr = NULL, *u, *inv = NULL;
	X509 *anchor = NULL;
	char anchor_hex[65], req_hex[65], inv_hex[65], path[PATH_MAX];
	size_t n = 0, i;
	bool answer_written = false, same_host = false;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, join_accept_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_REQUEST)
			req_path = optarg;
		else if (c == OPT_OUT)
			out_path = optarg;
		else if (c == OPT_SAME_HOST)
			same_host = true;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if (req_path == NULL || out_path == NULL)
		return cli_fail(KY_ERR_USAGE, req_path == NULL ? "--request" : "--out",
		                "required: the join request to accept and where the answer goes");
	if (access(out_path, F_OK) == 0)
		return cli_fail(KY_ERR_EXISTS, out_path, "exists: give a new file for the answer");
	if ((r = cli_instance_load(&inst)) != 0)
		return ky_err_exit(r);
	/* One join-accept at a time: two at once would give two units one number, and a
	 * request accepted twice two identities. Another one running is refused, not waited
	 * for (its operator may be reading a fingerprint). The instance is read again once
	 * locked. */
	snprintf(path, sizeof(path), "%s/join.lock", inst.dir);
	if ((lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
		r = KY_ERR_IO;
		cli_fail(r, path, "cannot open: %s", strerror(errno));
		goto out;
	}
	if (flock(lock, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK) {
			r = KY_ERR_CONFLICT;
			cli_fail(r, path,
			         "another 'kyok host join-accept' of this instance is running: "
			         "run this one again once it has finished");
		} else {
			r = KY_ERR_IO;
			cli_fail(r, path, "cannot lock: %s", strerror(errno));
		}
		goto out;
	}
	if ((r = cli_instance_load(&inst)) != 0)
		goto out;
	if ((r = host_invite_json(&inst, &inv)) != 0 || (r = host_json_sha256(inv, inv_hex)) != 0)
		goto out;
	snprintf(path, sizeof(path), "%s/anchor.key", inst.dir);
	if (access(path, F_OK) != 0 || cli_anchor_cert(inst.dir, &anchor) != 0) {
		r = KY_ERR_NOT_FOUND;
		cli_fail(r, inst.dir,
		         "no unit trust anchor (anchor.key, anchor.crt) here: accept on the host "
		         "that made the instance");
		goto out;
	}
	snprintf(path, sizeof(path), "%s/ca.key", inst.dir);
	if (access(path, F_OK) != 0) {
		r = KY_ERR_USAGE;
		cli_fail(r, inst.dir,
		         "the instance has no TLS CA (ca.key, made with 'kyok up --tls'): units "
		         "on other hosts are reached over HTTPS only");
		goto out;
	}
	if ((r = host_anchor_sha256(anchor, anchor_hex)) != 0) {
		cli_fail(r, inst.dir, "cannot read the anchor's public key");
		goto out;
	}
	if ((r = host_read_json(req_path, "join request", &req, &raw)) != 0 ||
	    (r = host_accept_check(req_path, &inst, req, &address, anchor_hex, inv_hex,
	                           same_host)) != 0)
		goto out;
	if ((r = host_sha256_hex(raw.data, raw.len, req_hex)) != 0) {
		cli_fail(r, NULL, NULL);
		goto out;
	}
	if ((units = calloc(UP_MAX_UNITS, sizeof(*units))) == NULL ||
	    (arr = json_array()) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	/* The instance's units as they are (URLs kept), then the new ones. */
	for (i = 0; i < inst.nunits; i++, n++) {
		units[n].number = inst.units[i].number;
		units[n].remote = inst.units[i].remote;
		snprintf(units[n].id, sizeof(units[n].id), "%s", inst.units[i].id);
		snprintf(units[n].zone, sizeof(units[n].zone), "%s", inst.units[i].zone);
		snprintf(units[n].url, sizeof(units[n].url), "%s", inst.units[i].url);
		if (units[n].number > maxnum)
			maxnum = units[n].number;
	}
	json_array_foreach(json_object_get(req, "units"), i, u)
	{
		struct up_unit *nu = &units[n++];
		char *idc = NULL, *tlsc = NULL, *nsig = NULL, what[KY_ID_MAX + 32], msg[512];
		const char *uid = json_string_value(json_object_get(u, "id"));

		nu->number = ++maxnum;
		nu->remote = true;
		snprintf(nu->id, sizeof(nu->id), "%s", uid);
		snprintf(nu->zone, sizeof(nu->zone), "%s",
		         json_string_value(json_object_get(u, "zone")));
		snprintf(nu->url, sizeof(nu->url), "https://%s:%d", address,
		         (int)json_integer_value(json_object_get(u, "port")));
		snprintf(what, sizeof(what), "unit '%s'", uid);
		if ((r = cli_anchor_issue(inst.dir,
		                          json_string_value(json_object_get(u, "identity_csr")),
		                          what, inst.id, uid, &idc)) != 0 ||
		    (r = up_tls_issue(inst.dir, json_string_value(json_object_get(u, "tls_csr")),
		                      uid, address, &tlsc)) != 0 ||
		    (r = host_number_msg(inst.id, req_hex, uid, nu->number, msg, sizeof(msg))) !=
		        0 ||
		    (r = cli_anchor_sign(inst.dir, msg, strlen(msg), &nsig)) != 0) {
			free(idc);
			free(tlsc);
			goto out;
		}
		if (json_array_append_new(arr, json_pack("{s:s, s:i, s:s, s:s, s:s}", "id", uid,
		                                         "number", nu->number, "number_sig", nsig,
		                                         "identity_cert", idc, "tls_cert", tlsc)) !=
		    0)
			r = KY_ERR_NOMEM;
		free(idc);
		free(tlsc);
		free(nsig);
		if (r != 0) {
			cli_fail(r, NULL, NULL);
			goto out;
		}
	}
	if ((answer = json_pack("{s:s, s:s, s:s, s:O}", "format", HOST_ANSWER_FORMAT, "instance",
	                        inst.id, "request_sha256", req_hex, "units", arr)) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	/* The answer first: when instance.json cannot be written, the answer goes again. */
	if ((r = host_write_json(out_path, answer)) != 0)
		goto out;
	answer_written = true;
	if ((r = up_write_instance(inst.dir, inst.id, units, n)) != 0)
		goto out;
	if (!cli_g.json) {
		printf("accepted %zu crypto unit%s of %s into instance %s:\n", n - inst.nunits,
		       n - inst.nunits > 1 ? "s" : "", address, inst.id);
		for (i = inst.nunits; i < n; i++)
			printf("  %d  %s  %s  %s\n", units[i].number, units[i].id, units[i].zone,
			       units[i].url);
		printf("answer: %s: on that host, 'kyok host join-finish --answer %s'\n"
		       "instance.json (give it to the administrators' workstations with ca.crt "
		       "and anchor.crt): %s/instance.json\n",
		       out_path, out_path, inst.dir);
	} else {
		cli_print_json(json_pack("{s:s, s:s, s:i}", "instance", inst.id, "answer", out_path,
		                         "units", (int)(n - inst.nunits)));
	}
	r = 0;
out:
	if (r != 0 && answer_written)
		(void)unlink(out_path);
	if (lock >= 0)
		close(lock);
	json_decref(inv);
	json_decref(answer);
	json_decref(arr);
	json_decref(req);
	ky_buf_free(&raw);
	X509_free(anchor);
	free(units);
	return ky_err_exit(r);
}

/* ---- kyok host ---- */

static const struct cli_cmd host_cmds[] = {
    {"invite", host_invite_main,
     "on the anchor's host: write the invitation another host joins the instance with"},
    {"join-request", host_join_request_main,
     "on another host: make its crypto units and their join request"},
    {"join-accept", host_join_accept_main,
     "on the anchor's host: certify the units of a join request, add them to instance.json"},
    {"join-finish", host_join_finish_main,
     "on the other host: check and install the answer, start the units"},
    {NULL, NULL, NULL},
};

int host_main(int argc, char **argv)
{
	return cli_dispatch("kyok host", host_cmds, argc, argv);
}
