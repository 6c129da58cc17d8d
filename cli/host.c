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
 *                    "units": [{"id", "number", "identity_cert", "tls_cert"}]}
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
#include "cli/up.h"
#include "cli/up_tls.h"
#include "kyok/crypto.h"
#include "kyok/imprint.h"

#define HOST_FILE_MAX      (512 * 1024)
#define HOST_INVITE_FORMAT "kyok-host-invite-1"
#define HOST_REQ_FORMAT    "kyok-join-request-1"
#define HOST_ANSWER_FORMAT "kyok-join-answer-1"
#define HOST_REQ_FILE      "join-request.json"
#define HOST_INVITE_FILE   "join-invite.json"
#define HOST_PEM_MAX       (16 * 1024)

/* ---- small helpers ---- */

static int host_sha256_hex(const void *data, size_t n, char out[65])
{
	uint8_t md[32];
	unsigned int len = 0;

	if (EVP_Digest(data, n, md, &len, EVP_sha256(), NULL) != 1 || len != sizeof(md))
		return KY_ERR_CRYPTO;
	ky_hex_encode(md, sizeof(md), out);
	return 0;
}

/* Reads a JSON object file; raw (may be NULL) keeps its bytes. Prints its errors. */
static int host_read_json(const char *path, const char *what, json_t **out, struct ky_buf *raw)
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

static int host_write_json(const char *path, json_t *j)
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
static const char *host_str(const json_t *o, const char *key, size_t max)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL && s[0] != '\0' && strlen(s) <= max ? s : NULL;
}

/* An IPv4 address of one host that other hosts can reach. */
static int host_address_check(const char *subject, const char *addr)
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
static int host_json_sha256(const json_t *j, char out[65])
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
static bool host_one_pem_cert(const char *pem)
{
	const char *b = strstr(pem, "-----BEGIN ");

	return b != NULL && strncmp(b, "-----BEGIN CERTIFICATE-----", 27) == 0 &&
	       strstr(b + 11, "-----BEGIN ") == NULL;
}

/* SHA-256 of the anchor certificate's public key, hex. */
static int host_anchor_sha256(X509 *anchor, char out[65])
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
    "\n"
    "  --out FILE              where to write the invitation (JSON)\n"
    "\n" CLI_COMMON_HELP;

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
	static const struct option opts[] = {
	    {"out", required_argument, NULL, 'o'}, CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
	int r = KY_ERR_INTERNAL, c;
	const char *out_path = NULL;
	struct cli_instance inst;
	char fp[65];
	json_t *j = NULL;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(invite_usage, stdout);
			return 0;
		}
		if (c == 'o')
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

/* ---- the invitation, as the other host reads it ---- */

struct host_invite {
	char instance[KY_ID_MAX + 1];
	char sha256[65]; /* the invitation's fingerprint */
	char verifier[2 * KY_IMPRINT_PUB_LEN + 1];
	const char *anchor_pem, *ca_pem; /* in j */
	X509 *anchor;
	json_t *j;
};

static void host_invite_release(struct host_invite *v)
{
	X509_free(v->anchor);
	json_decref(v->j);
	memset(v, 0, sizeof(*v));
}

static int host_invite_read(const char *path, const char *want_sha256, struct host_invite *v)
{
	int r = KY_ERR_INTERNAL;
	const char *fmt, *id, *hex;
	X509 *ca = NULL;
	char ou[KY_ID_MAX + 1];
	uint8_t pub[KY_IMPRINT_PUB_LEN];

	memset(v, 0, sizeof(*v));
	if ((r = host_read_json(path, "invitation", &v->j, NULL)) != 0)
		return r;
	r = KY_ERR_MALFORMED;
	fmt = host_str(v->j, "format", 64);
	id = host_str(v->j, "instance", KY_ID_MAX);
	hex = host_str(v->j, "imprint_verifier", 2 * KY_IMPRINT_PUB_LEN);
	v->anchor_pem = host_str(v->j, "anchor_cert", HOST_PEM_MAX);
	v->ca_pem = host_str(v->j, "tls_ca_cert", HOST_PEM_MAX);
	if (fmt == NULL || strcmp(fmt, HOST_INVITE_FORMAT) != 0 || id == NULL || !ky_id_valid(id) ||
	    hex == NULL || v->anchor_pem == NULL || v->ca_pem == NULL) {
		cli_fail(r, path,
		         "not an invitation of 'kyok host invite' (format %s: instance, "
		         "anchor_cert, tls_ca_cert, imprint_verifier)",
		         HOST_INVITE_FORMAT);
		goto out;
	}
	if ((r = host_json_sha256(v->j, v->sha256)) != 0) {
		cli_fail(r, NULL, NULL);
		goto out;
	}
	if (strcasecmp(v->sha256, want_sha256) != 0) {
		r = KY_ERR_JOIN_INVITE_ALTERED;
		cli_fail(r, path, "its fingerprint is %s, not %.64s", v->sha256, want_sha256);
		goto out;
	}
	r = KY_ERR_MALFORMED;
	if (!host_one_pem_cert(v->anchor_pem) || !host_one_pem_cert(v->ca_pem)) {
		cli_fail(r, path, "anchor_cert and tls_ca_cert must each be one PEM certificate");
		goto out;
	}
	if (strlen(hex) != 2 * KY_IMPRINT_PUB_LEN || ky_hex_decode(hex, pub, sizeof(pub)) != 0 ||
	    ky_cert_from_pem(v->anchor_pem, &v->anchor) != 0 ||
	    ky_cert_from_pem(v->ca_pem, &ca) != 0) {
		cli_fail(r, path, "the invitation's certificates or imprint verifier do not parse");
		goto out;
	}
	if (ky_cert_ou(v->anchor, ou, sizeof(ou)) != 0 || strcmp(ou, id) != 0) {
		r = KY_ERR_JOIN_OTHER_INSTANCE;
		cli_fail(r, path, "its anchor certificate is not the anchor of instance '%s'", id);
		goto out;
	}
	snprintf(v->instance, sizeof(v->instance), "%s", id);
	snprintf(v->verifier, sizeof(v->verifier), "%s", hex);
	r = 0;
out:
	X509_free(ca);
	if (r != 0)
		host_invite_release(v);
	return r;
}

/* ---- kyok host join-request ---- */

static const char join_request_usage[] =
    "usage: kyok host join-request --dir DIR --invite FILE --invite-sha256 HEX\n"
    "                              --listen ADDR --store URI [--units N] [--zones Z1,...]\n"
    "                              [--port BASE] [options]\n"
    "\n"
    "On another host than the one holding the instance's anchor: makes N crypto units of\n"
    "the instance of the invitation ('kyok host invite') in DIR, a new directory. Each\n"
    "unit makes its identity key and its TLS key here; neither leaves this host. Writes\n"
    "DIR/join-request.json, public data only (unit ids, zones, address and ports, the\n"
    "identity and TLS certificate requests): take it to the anchor's host for 'kyok host\n"
    "join-accept', and bring back its answer for 'kyok host join-finish'. The units\n"
    "listen on ADDR over HTTPS and seal their state with the file backend.\n"
    "\n"
    "  --dir DIR               directory of this host's units (new or empty; created 0700)\n"
    "  --invite FILE           the invitation of the instance\n"
    "  --invite-sha256 HEX     its fingerprint, as 'kyok host invite' printed it on the\n"
    "                          anchor's host: ask its operator (an invitation changed on\n"
    "                          the way is refused)\n"
    "  --listen ADDR           this host's IPv4 address the other hosts and the clients\n"
    "                          reach (not loopback)\n"
    "  --store URI             the instance's key storage as this host reaches it: a\n"
    "                          PostgreSQL URI, postgresql://USER@HOST/DB?sslmode=verify-full\n"
    "                          &sslrootcert=FILE, its password in a password file\n"
    "                          (PGPASSFILE), never in the URI (default: $KYOK_STORE)\n"
    "  --units N               number of crypto units on this host, 1 to 16 (default 1)\n"
    "  --zones LIST            zone names, one per unit (default zone-<address>-1, ...)\n"
    "  --port BASE             ports: BASE, BASE+1, ... (default: free ports of ADDR)\n"
    "\n" CLI_COMMON_HELP;

struct host_req_opts {
	const char *dir, *invite, *invite_sha256, *listen, *store, *zones;
	int nunits, port;
};

static int host_req_parse(int argc, char **argv, struct host_req_opts *o)
{
	static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
	                                     {"invite", required_argument, NULL, 'i'},
	                                     {"invite-sha256", required_argument, NULL, 'I'},
	                                     {"listen", required_argument, NULL, 'L'},
	                                     {"store", required_argument, NULL, 'R'},
	                                     {"units", required_argument, NULL, 'n'},
	                                     {"zones", required_argument, NULL, 'z'},
	                                     {"port", required_argument, NULL, 'P'},
	                                     CLI_COMMON_LONGOPTS,
	                                     {NULL, 0, NULL, 0}};
	int c;
	long v;
	char *end;

	o->nunits = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(join_request_usage, stdout);
			return -1;
		case 'd':
			o->dir = optarg;
			break;
		case 'i':
			o->invite = optarg;
			break;
		case 'I':
			o->invite_sha256 = optarg;
			break;
		case 'L':
			o->listen = optarg;
			break;
		case 'R':
			o->store = optarg;
			break;
		case 'z':
			o->zones = optarg;
			break;
		case 'n':
		case 'P':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (c == 'n' && (errno != 0 || end == optarg || *end != '\0' || v < 1 ||
			                 v > UP_MAX_UNITS)) {
				cli_fail(KY_ERR_USAGE, "--units",
				         "'%s': give a number of units from 1 to %d", optarg,
				         UP_MAX_UNITS);
				return KY_ERR_USAGE;
			}
			if (c == 'P' &&
			    (errno != 0 || end == optarg || *end != '\0' || v < 1 || v > 65535)) {
				cli_fail(KY_ERR_USAGE, "--port",
				         "'%s': give a port number from 1 to 65535", optarg);
				return KY_ERR_USAGE;
			}
			if (c == 'n')
				o->nunits = (int)v;
			else
				o->port = (int)v;
			break;
		default:
			if (cli_common_opt(c, optarg) != 0)
				return KY_ERR_USAGE;
			break;
		}
	}
	if (cli_no_operands(argc, argv) != 0)
		return KY_ERR_USAGE;
	if (o->store == NULL && getenv("KYOK_STORE") != NULL && getenv("KYOK_STORE")[0] != '\0')
		o->store = getenv("KYOK_STORE");
	if (o->invite != NULL && o->invite_sha256 == NULL) {
		cli_fail(
		    KY_ERR_USAGE, "--invite-sha256",
		    "required: the invitation's fingerprint as 'kyok host invite' printed it on "
		    "the anchor's host, told by its operator (not read from the file)");
		return KY_ERR_USAGE;
	}
	if (o->dir == NULL || o->invite == NULL || o->listen == NULL || o->store == NULL) {
		cli_fail(KY_ERR_USAGE,
		         o->dir == NULL      ? "--dir"
		         : o->invite == NULL ? "--invite"
		         : o->listen == NULL ? "--listen"
		                             : "--store",
		         "required: the units of every host share the instance's PostgreSQL key "
		         "storage, and listen on an address the others reach");
		return KY_ERR_USAGE;
	}
	if (o->port > 0 && o->port + o->nunits - 1 > 65535) {
		cli_fail(KY_ERR_USAGE, "--port", "%d: the units' ports go past 65535", o->port);
		return KY_ERR_USAGE;
	}
	if (up_store_check(o->store) != 0)
		return KY_ERR_USAGE;
	return host_address_check("--listen", o->listen);
}

/* A pending unit of this host: DIR/join-<id>/, until join-finish numbers it. */
static void host_pending_paths(struct up_unit *u, const char *dir)
{
	snprintf(u->dir, sizeof(u->dir), "%s/join-%s", dir, u->id);
	snprintf(u->conf, sizeof(u->conf), "%s/unit.conf", u->dir);
	snprintf(u->pidf, sizeof(u->pidf), "%s/pid", u->dir);
	snprintf(u->portf, sizeof(u->portf), "%s/port", u->dir);
	snprintf(u->log, sizeof(u->log), "%s/unit.log", u->dir);
}

/* DIR must be new or empty: it is then made (0700). *created: made by this run. */
static int host_new_dir(const char *dir, bool *created)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	*created = false;
	if (d != NULL) {
		bool empty = true;
		struct stat st;
		/* Others must not change what this host keeps there (the invitation and the
		 * request join-finish relies on). */
		if (fstat(dirfd(d), &st) != 0 || st.st_uid != geteuid() ||
		    (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
			closedir(d);
			cli_fail(KY_ERR_NOT_PRIVATE, dir,
			         "the directory belongs to another user or others may write in it: "
			         "give a new --dir (it is made 0700), or chmod 0700 this one");
			return KY_ERR_NOT_PRIVATE;
		}
		while ((e = readdir(d)) != NULL)
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
				empty = false;
		closedir(d);
		if (!empty) {
			cli_fail(KY_ERR_EXISTS, dir,
			         "the directory is not empty: choose a new --dir");
			return KY_ERR_EXISTS;
		}
		return 0;
	}
	if (errno != ENOENT || ky_mkdir_p(dir, 0700, NULL, 0) != 0) {
		cli_fail(KY_ERR_IO, dir, "cannot create the directory: %s", strerror(errno));
		return KY_ERR_IO;
	}
	*created = true;
	return 0;
}

static int host_write_text(const char *dir, const char *name, const char *text, mode_t mode)
{
	char path[PATH_MAX];
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((r = ky_file_write_atomic(path, text, strlen(text), mode)) != 0)
		cli_fail(r, path, "cannot write: %s", strerror(errno));
	return r;
}

/* Makes one pending unit: its directory, TLS key and request, unit.conf, identity request. */
static int host_make_unit(const char *dir, const char *unitd, const char *instance,
                          struct up_unit *u, json_t *arr)
{
	int r = KY_ERR_INTERNAL;
	char *tls_csr = NULL, csrp[PATH_MAX];
	struct ky_buf csr = {0};

	if (mkdir(u->dir, 0700) != 0) {
		r = KY_ERR_IO;
		cli_fail(r, u->dir, "cannot create the directory: %s", strerror(errno));
		goto out;
	}
	if ((r = up_tls_request(u->dir, u->id, &tls_csr)) != 0)
		goto out;
	if ((r = up_write_conf(dir, instance, u, NULL)) != 0) {
		cli_fail(r, u->conf, "cannot write the unit configuration");
		goto out;
	}
	snprintf(csrp, sizeof(csrp), "%s/identity.csr", u->dir);
	if ((r = cli_anchor_request(unitd, u->conf, csrp, u->log)) != 0)
		goto out;
	if ((r = ky_file_read(csrp, HOST_PEM_MAX, &csr)) != 0 ||
	    (r = ky_buf_append(&csr, "", 1)) != 0) {
		cli_fail(r, csrp, "cannot read the unit's identity request");
		goto out;
	}
	(void)unlink(csrp); /* its text goes into the join request */
	if (json_array_append_new(arr, json_pack("{s:s, s:s, s:i, s:s, s:s}", "id", u->id, "zone",
	                                         u->zone, "port", u->port, "identity_csr",
	                                         (const char *)csr.data, "tls_csr", tls_csr)) !=
	    0) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	r = 0;
out:
	free(tls_csr);
	ky_buf_free(&csr);
	return r;
}

static int host_join_request_main(int argc, char **argv)
{
	int r = KY_ERR_INTERNAL, ports[UP_MAX_UNITS];
	struct host_req_opts o = {0};
	struct host_invite inv = {0};
	struct up_unit *units = NULL;
	char dir[PATH_MAX / 2 - 64], unitd[PATH_MAX], path[PATH_MAX], anchor_hex[65];
	char zones[UP_MAX_UNITS][KY_ID_MAX + 1];
	size_t nzones = 0;
	bool created = false, made = false;
	json_t *arr = NULL, *req = NULL;

	if ((r = host_req_parse(argc, argv, &o)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if (o.dir[0] != '/' ? (getcwd(path, sizeof(path)) == NULL ||
	                       snprintf(dir, sizeof(dir), "%s/%s", path, o.dir) >= (int)sizeof(dir))
	                    : snprintf(dir, sizeof(dir), "%s", o.dir) >= (int)sizeof(dir))
		return cli_fail(KY_ERR_USAGE, o.dir, "cannot use this directory path");
	if (o.zones != NULL &&
	    (up_parse_zones(o.zones, zones, UP_MAX_UNITS, &nzones) != 0 || (int)nzones != o.nunits))
		return cli_fail(KY_ERR_USAGE, "--zones",
		                "'%s': give %d comma separated zone names of A-Z a-z 0-9 . _ -",
		                o.zones, o.nunits);
	if ((r = up_find_unitd(unitd, sizeof(unitd))) != 0 ||
	    (r = host_invite_read(o.invite, o.invite_sha256, &inv)) != 0)
		return ky_err_exit(r);
	if ((units = calloc(UP_MAX_UNITS, sizeof(*units))) == NULL ||
	    (arr = json_array()) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	for (int i = 0; i < o.nunits; i++)
		ports[i] = o.port > 0 ? o.port + i : 0;
	if (o.port == 0 && (r = up_free_ports(o.listen, ports, (size_t)o.nunits)) != 0)
		goto out;
	if ((r = host_new_dir(dir, &created)) != 0)
		goto out;
	made = true;
	{
		char store[1100];
		snprintf(store, sizeof(store), "%s\n", o.store);
		if ((r = host_write_text(dir, "anchor.crt", inv.anchor_pem, 0644)) != 0 ||
		    (r = host_write_text(dir, "ca.crt", inv.ca_pem, 0644)) != 0 ||
		    (r = host_write_text(dir, "store.uri", store, 0600)) != 0)
			goto out;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, HOST_INVITE_FILE);
	if ((r = host_write_json(path, inv.j)) != 0)
		goto out;
	for (int i = 0; i < o.nunits; i++) {
		struct up_unit *u = &units[i];
		if ((r = ky_uuid_new(u->id)) != 0) {
			cli_fail(r, NULL, "no random bytes");
			goto out;
		}
		u->port = ports[i];
		snprintf(u->host, sizeof(u->host), "%s", o.listen);
		if (o.zones != NULL)
			memcpy(u->zone, zones[i], sizeof(u->zone));
		else
			snprintf(u->zone, sizeof(u->zone), "zone-%.15s-%d", o.listen, i + 1);
		host_pending_paths(u, dir);
		if ((r = host_make_unit(dir, unitd, inv.instance, u, arr)) != 0)
			goto out;
	}
	if ((r = host_anchor_sha256(inv.anchor, anchor_hex)) != 0 ||
	    (req = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "format", HOST_REQ_FORMAT,
	                     "instance", inv.instance, "anchor_sha256", anchor_hex, "invite_sha256",
	                     inv.sha256, "address", o.listen, "units", arr)) == NULL) {
		r = r != 0 ? r : KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, HOST_REQ_FILE);
	if ((r = host_write_json(path, req)) != 0)
		goto out;
	if (!cli_g.json)
		printf(
		    "%d crypto unit%s of instance %s made in %s, waiting for the anchor's "
		    "certificates.\njoin request: %s\nnext: on the anchor's host, 'kyok host "
		    "join-accept --request FILE --out ANSWER'; then here, 'kyok host join-finish "
		    "--dir %s --answer ANSWER'\n",
		    o.nunits, o.nunits > 1 ? "s" : "", inv.instance, dir, path, dir);
	else
		cli_print_json(json_pack("{s:s, s:s, s:s}", "instance", inv.instance, "dir", dir,
		                         "request", path));
	r = 0;
out:
	if (r != 0 && made) {
		(void)up_rm_rf(dir);
		if (!created && mkdir(dir, 0700) != 0)
			fprintf(stderr, "warning: %s: cannot make the directory again\n", dir);
		fprintf(stderr, "nothing was kept in %s\n", dir);
	}
	json_decref(req);
	json_decref(arr);
	host_invite_release(&inv);
	free(units);
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
    "\n"
    "  --request FILE          the other host's join-request.json\n"
    "  --out FILE              where to write the answer (JSON): a new file\n"
    "  --same-host             the request comes from a host that has units of the\n"
    "                          instance already (its address is theirs); never for this\n"
    "                          host's address\n"
    "\n"
    "Refused: a request made from another invitation than this instance's (its\n"
    "fingerprint differs), an address of this host's units, or of another host's\n"
    "without --same-host. One join-accept runs at a time (DIR/join.lock).\n"
    "\n" CLI_COMMON_HELP;

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
	static const struct option opts[] = {{"request", required_argument, NULL, 'r'},
	                                     {"out", required_argument, NULL, 'o'},
	                                     {"same-host", no_argument, NULL, 'S'},
	                                     CLI_COMMON_LONGOPTS,
	                                     {NULL, 0, NULL, 0}};
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

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(join_accept_usage, stdout);
			return 0;
		}
		if (c == 'r')
			req_path = optarg;
		else if (c == 'o')
			out_path = optarg;
		else if (c == 'S')
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
	 * request accepted twice two identities. The instance is read again once locked. */
	snprintf(path, sizeof(path), "%s/join.lock", inst.dir);
	if ((lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0 ||
	    flock(lock, LOCK_EX) != 0) {
		r = KY_ERR_IO;
		cli_fail(r, path, "cannot lock: %s", strerror(errno));
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
		char *idc = NULL, *tlsc = NULL, what[KY_ID_MAX + 32];
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
		                      uid, address, &tlsc)) != 0) {
			free(idc);
			goto out;
		}
		if (json_array_append_new(arr, json_pack("{s:s, s:i, s:s, s:s}", "id", uid,
		                                         "number", nu->number, "identity_cert", idc,
		                                         "tls_cert", tlsc)) != 0)
			r = KY_ERR_NOMEM;
		free(idc);
		free(tlsc);
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

/* ---- kyok host join-finish ---- */

static const char join_finish_usage[] =
    "usage: kyok host join-finish --dir DIR --answer FILE [options]\n"
    "\n"
    "On the host that made the join request: checks the answer of 'kyok host join-accept'\n"
    "against this host's request (DIR/join-request.json), the instance's anchor and TLS CA\n"
    "of the invitation (each unit's identity certificate must be the anchor's, for the\n"
    "key the unit made here; each TLS certificate the CA's, for the unit's key and\n"
    "address); installs the units as DIR/unit-N with the numbers of the answer, writes\n"
    "DIR/instance.json (this host's units) and starts them as 'kyok up --dir DIR' does.\n"
    "An answer that does not verify is refused and nothing changes. Then, from the\n"
    "administrators' workstation: 'kyok tke cryptounit-add', and 'kyok tke auto-recover'\n"
    "to give the new units the instance's administrators and master key.\n"
    "\n"
    "  --dir DIR               directory of the join request\n"
    "  --answer FILE           the answer of the anchor's host\n"
    "\n" CLI_COMMON_HELP;

/* The answer's certificates of unit u (request entry ru) verify: identity issued by the anchor
 * for the key of the unit's identity request, CN/OU right; TLS issued by the CA for the key
 * in the unit's directory and the address. */
static int host_finish_check_unit(const char *dir, const char *instance, X509 *anchor,
                                  const char *address, const json_t *ru, const json_t *au,
                                  const char *pending)
{
	int r = KY_ERR_JOIN_ANSWER_MISMATCH;
	const char *idc = host_str(au, "identity_cert", HOST_PEM_MAX);
	const char *tlsc = host_str(au, "tls_cert", HOST_PEM_MAX);
	const char *uid = json_string_value(json_object_get(ru, "id"));
	EVP_PKEY *pub = NULL;
	X509 *cert = NULL;
	char cn[KY_ID_MAX + 1], ou[KY_ID_MAX + 1], ca[PATH_MAX], key[PATH_MAX];

	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(key, sizeof(key), "%s/tls.key", pending);
	if (idc == NULL || tlsc == NULL || ky_cert_from_pem(idc, &cert) != 0 ||
	    ky_cert_chain_verify(cert, NULL, anchor) != 0 ||
	    ky_cert_cn(cert, cn, sizeof(cn)) != 0 || strcmp(cn, uid) != 0 ||
	    ky_cert_ou(cert, ou, sizeof(ou)) != 0 || strcmp(ou, instance) != 0 ||
	    ky_csr_read(json_string_value(json_object_get(ru, "identity_csr")), &pub, cn, ou) !=
	        0 ||
	    EVP_PKEY_eq(X509_get0_pubkey(cert), pub) != 1) {
		cli_fail(r, uid,
		         "its identity certificate is not the anchor's for this unit's key");
		goto out;
	}
	if (up_tls_check(ca, tlsc, key, address) != 0) {
		cli_fail(r, uid,
		         "its TLS certificate is not the instance CA's for this unit's key and "
		         "address %s",
		         address);
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_free(pub);
	X509_free(cert);
	return r;
}

struct host_finish_unit {
	struct up_unit u;
	char pending[PATH_MAX / 2];
	const json_t *au;
	bool moved;
};

static int host_join_finish_main(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
	                                     {"answer", required_argument, NULL, 'a'},
	                                     CLI_COMMON_LONGOPTS,
	                                     {NULL, 0, NULL, 0}};
	int r = KY_ERR_INTERNAL, c;
	const char *dir_arg = NULL, *ans_path = NULL, *fmt, *aid, *ahex, *ihex, *address = NULL,
	           *instance = NULL;
	char dir[PATH_MAX / 2 - 64], path[PATH_MAX], req_hex[65], cwd[PATH_MAX];
	struct ky_buf raw = {0};
	json_t *req = NULL, *ans = NULL, *runits, *aunits, *e;
	struct host_invite inv = {0};
	struct host_finish_unit *fu = NULL;
	size_t n = 0, i;
	bool installed = false;
	int status = 0;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(join_finish_usage, stdout);
			return 0;
		}
		if (c == 'd')
			dir_arg = optarg;
		else if (c == 'a')
			ans_path = optarg;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	if (dir_arg == NULL || ans_path == NULL)
		return cli_fail(KY_ERR_USAGE, dir_arg == NULL ? "--dir" : "--answer",
		                "required: the directory of the join request and its answer");
	if (dir_arg[0] != '/'
	        ? (getcwd(cwd, sizeof(cwd)) == NULL ||
	           snprintf(dir, sizeof(dir), "%s/%s", cwd, dir_arg) >= (int)sizeof(dir))
	        : snprintf(dir, sizeof(dir), "%s", dir_arg) >= (int)sizeof(dir))
		return cli_fail(KY_ERR_USAGE, dir_arg, "cannot use this directory path");
	snprintf(path, sizeof(path), "%s/%s", dir, HOST_REQ_FILE);
	if (access(path, F_OK) != 0)
		return cli_fail(KY_ERR_NOT_FOUND, dir,
		                "no pending join request here (%s): 'kyok host join-request' makes "
		                "one; a finished join leaves none",
		                HOST_REQ_FILE);
	if ((r = host_read_json(path, "join request", &req, &raw)) != 0 ||
	    (r = host_sha256_hex(raw.data, raw.len, req_hex)) != 0)
		goto out;
	if ((ihex = host_str(req, "invite_sha256", 64)) == NULL) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, dir, "%s is damaged: make a new request in a new directory",
		         HOST_REQ_FILE);
		goto out;
	}
	/* The invitation kept here is the one the request was made from. */
	snprintf(path, sizeof(path), "%s/%s", dir, HOST_INVITE_FILE);
	if ((r = host_invite_read(path, ihex, &inv)) != 0 ||
	    (r = host_read_json(ans_path, "join answer", &ans, NULL)) != 0)
		goto out;
	instance = json_string_value(json_object_get(req, "instance"));
	address = json_string_value(json_object_get(req, "address"));
	runits = json_object_get(req, "units");
	fmt = host_str(ans, "format", 64);
	aid = host_str(ans, "instance", KY_ID_MAX);
	ahex = host_str(ans, "request_sha256", 64);
	aunits = json_object_get(ans, "units");
	if (instance == NULL || address == NULL || !json_is_array(runits)) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, dir, "%s is damaged: make a new request in a new directory",
		         HOST_REQ_FILE);
		goto out;
	}
	if (fmt == NULL || strcmp(fmt, HOST_ANSWER_FORMAT) != 0 || aid == NULL || ahex == NULL ||
	    !json_is_array(aunits)) {
		r = KY_ERR_MALFORMED;
		cli_fail(r, ans_path,
		         "not an answer of 'kyok host join-accept' (format %s: instance, "
		         "request_sha256, units)",
		         HOST_ANSWER_FORMAT);
		goto out;
	}
	if (strcmp(aid, instance) != 0) {
		r = KY_ERR_JOIN_OTHER_INSTANCE;
		cli_fail(r, ans_path, "the answer is for instance '%s', the request for '%s'", aid,
		         instance);
		goto out;
	}
	if (strcmp(ahex, req_hex) != 0 || json_array_size(aunits) != json_array_size(runits)) {
		r = KY_ERR_JOIN_ANSWER_MISMATCH;
		cli_fail(r, ans_path, "it answers another request than %s/%s", dir, HOST_REQ_FILE);
		goto out;
	}
	n = json_array_size(runits);
	if (n == 0 || n > UP_MAX_UNITS || (fu = calloc(n, sizeof(*fu))) == NULL) {
		r = n == 0 || n > UP_MAX_UNITS ? KY_ERR_MALFORMED : KY_ERR_NOMEM;
		cli_fail(r, dir, NULL);
		goto out;
	}
	/* Every unit of the request, once, with a number of its own; every certificate. */
	json_array_foreach(runits, i, e)
	{
		struct up_unit *u = &fu[i].u;
		const char *uid = json_string_value(json_object_get(e, "id"));
		size_t k;
		json_t *a;

		fu[i].au = NULL;
		json_array_foreach(aunits, k, a)
		{
			const char *x = json_string_value(json_object_get(a, "id"));
			if (x != NULL && uid != NULL && strcmp(x, uid) == 0)
				fu[i].au = a;
		}
		r = KY_ERR_JOIN_ANSWER_MISMATCH;
		if (uid == NULL || !ky_id_valid(uid) || fu[i].au == NULL ||
		    !json_is_integer(json_object_get(fu[i].au, "number")) ||
		    json_integer_value(json_object_get(fu[i].au, "number")) < 1 ||
		    json_integer_value(json_object_get(fu[i].au, "number")) > UP_MAX_UNITS) {
			cli_fail(r, ans_path,
			         "unit '%s' of the request has no number (1 to %d) there",
			         uid != NULL ? uid : "?", UP_MAX_UNITS);
			goto out;
		}
		if (host_str(e, "zone", KY_ID_MAX) == NULL ||
		    !ky_id_valid(host_str(e, "zone", KY_ID_MAX)) ||
		    !json_is_integer(json_object_get(e, "port")) ||
		    host_str(e, "identity_csr", HOST_PEM_MAX) == NULL) {
			r = KY_ERR_MALFORMED;
			cli_fail(r, dir, "%s is damaged: make a new request in a new directory",
			         HOST_REQ_FILE);
			goto out;
		}
		u->number = (int)json_integer_value(json_object_get(fu[i].au, "number"));
		for (k = 0; k < i; k++)
			if (fu[k].u.number == u->number) {
				cli_fail(r, ans_path, "number %d is given twice", u->number);
				goto out;
			}
		snprintf(u->id, sizeof(u->id), "%s", uid);
		snprintf(u->zone, sizeof(u->zone), "%s",
		         json_string_value(json_object_get(e, "zone")));
		snprintf(u->host, sizeof(u->host), "%s", address);
		u->port = (int)json_integer_value(json_object_get(e, "port"));
		host_pending_paths(u, dir);
		snprintf(fu[i].pending, sizeof(fu[i].pending), "%s", u->dir);
		if ((r = host_finish_check_unit(dir, instance, inv.anchor, address, e, fu[i].au,
		                                fu[i].pending)) != 0)
			goto out;
		up_unit_paths(u, dir);
		if (access(u->dir, F_OK) == 0) {
			r = KY_ERR_EXISTS;
			cli_fail(r, u->dir, "exists already: this directory holds a unit %d",
			         u->number);
			goto out;
		}
	}
	/* Install: certificates, then each unit in its place with its unit.conf. */
	for (i = 0; i < n; i++) {
		struct up_unit *u = &fu[i].u;
		const char *idc = host_str(fu[i].au, "identity_cert", HOST_PEM_MAX);
		const char *tlsc = host_str(fu[i].au, "tls_cert", HOST_PEM_MAX);
		char p[PATH_MAX];

		snprintf(p, sizeof(p), "%s/identity.crt", fu[i].pending);
		if ((r = ky_file_write_atomic(p, idc, strlen(idc), 0644)) != 0) {
			cli_fail(r, p, "cannot write: %s", strerror(errno));
			goto out;
		}
		snprintf(p, sizeof(p), "%s/tls.crt", fu[i].pending);
		if ((r = ky_file_write_atomic(p, tlsc, strlen(tlsc), 0644)) != 0) {
			cli_fail(r, p, "cannot write: %s", strerror(errno));
			goto out;
		}
		if (rename(fu[i].pending, u->dir) != 0) {
			r = KY_ERR_IO;
			cli_fail(r, u->dir, "cannot move %s there: %s", fu[i].pending,
			         strerror(errno));
			goto out;
		}
		fu[i].moved = true;
		if ((r = up_write_conf(dir, instance, u, NULL)) != 0) {
			cli_fail(r, u->conf, "cannot write the unit configuration");
			goto out;
		}
		if ((r = up_imprint_conf_add(u->conf, inv.verifier)) != 0)
			goto out;
	}
	{
		struct up_unit *list = calloc(n, sizeof(*list));
		if (list == NULL) {
			r = KY_ERR_NOMEM;
			cli_fail(r, NULL, NULL);
			goto out;
		}
		for (i = 0; i < n; i++) {
			list[i] = fu[i].u;
			snprintf(list[i].url, sizeof(list[i].url), "https://%s:%d", address,
			         fu[i].u.port);
		}
		r = up_write_instance(dir, instance, list, n);
		free(list);
		if (r != 0)
			goto out;
	}
	installed = true;
	snprintf(path, sizeof(path), "%s/%s", dir, HOST_REQ_FILE);
	(void)unlink(path);
	snprintf(path, sizeof(path), "%s/%s", dir, HOST_INVITE_FILE);
	(void)unlink(path);
	{
		char *up_argv[] = {(char *)"up", (char *)"--dir", dir, NULL};
		optind = 0;
		status = up_main(3, up_argv); /* an exit status, its errors printed */
	}
	r = 0;
out:
	if (!installed && fu != NULL) {
		/* Back to the pending request, as it was. */
		for (i = 0; i < n; i++) {
			char p[PATH_MAX];
			if (fu[i].pending[0] == '\0')
				continue;
			if (fu[i].moved && rename(fu[i].u.dir, fu[i].pending) != 0)
				fprintf(stderr, "warning: cannot move %s back to %s\n", fu[i].u.dir,
				        fu[i].pending);
			if (fu[i].moved) {
				host_pending_paths(&fu[i].u, dir);
				if (up_write_conf(dir, instance, &fu[i].u, NULL) != 0)
					fprintf(stderr, "warning: cannot write %s again\n",
					        fu[i].u.conf);
			}
			snprintf(p, sizeof(p), "%s/identity.crt", fu[i].pending);
			(void)unlink(p);
			snprintf(p, sizeof(p), "%s/tls.crt", fu[i].pending);
			(void)unlink(p);
		}
		snprintf(path, sizeof(path), "%s/instance.json", dir);
		(void)unlink(path);
	}
	free(fu);
	host_invite_release(&inv);
	json_decref(ans);
	json_decref(req);
	ky_buf_free(&raw);
	return r != 0 ? ky_err_exit(r) : status;
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
