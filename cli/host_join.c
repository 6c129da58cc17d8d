/* kyok host join-request, join-finish: the steps of the host that joins an instance (the
 * whole exchange is described at the head of cli/host.c): the invitation read, the units
 * made and their request written, the answer checked and the units installed and started.
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
    "\n";

struct host_req_opts {
	const char *dir, *invite, *invite_sha256, *listen, *store, *zones;
	int nunits, port;
};

static int host_req_parse(int argc, char **argv, struct host_req_opts *o)
{
	enum {
		OPT_INVITE_SHA256 = 0x2001,
		OPT_LISTEN,
		OPT_PORT,
		OPT_STORE,
		OPT_DIR,
		OPT_INVITE,
		OPT_UNITS,
		OPT_ZONES
	};
	static const struct cli_opt opts[] = {
	    {"dir", OPT_DIR, CLI_ARG_REQUIRED, "DIR",
	     "directory of this host's units (new or empty; created 0700)"},
	    {"invite", OPT_INVITE, CLI_ARG_REQUIRED, "FILE", "the invitation of the instance"},
	    {"invite-sha256", OPT_INVITE_SHA256, CLI_ARG_REQUIRED, "HEX",
	     "its fingerprint, as 'kyok host invite' printed it on the anchor's host: ask its "
	     "operator (an invitation changed on the way is refused)"},
	    {"listen", OPT_LISTEN, CLI_ARG_REQUIRED, "ADDR",
	     "this host's IPv4 address the other hosts and the clients reach (not loopback)"},
	    {"store", OPT_STORE, CLI_ARG_REQUIRED, "URI",
	     "the instance's key storage as this host reaches it: a PostgreSQL URI, "
	     "postgresql://USER@HOST/DB?sslmode=verify-full&sslrootcert=FILE, its password in a "
	     "password file (PGPASSFILE), never in the URI (default: $KYOK_STORE)"},
	    {"units", OPT_UNITS, CLI_ARG_REQUIRED, "N",
	     "number of crypto units on this host, 1 to 16 (default 1)"},
	    {"zones", OPT_ZONES, CLI_ARG_REQUIRED, "LIST",
	     "zone names, one per unit (default zone-<address>-1, ...)"},
	    {"port", OPT_PORT, CLI_ARG_REQUIRED, "BASE",
	     "ports: BASE, BASE+1, ... (default: free ports of ADDR)"},
	    CLI_OPT_END};
	int c;
	long v;
	char *end;

	o->nunits = 1;
	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		switch (c) {
		case 'h':
			cli_opts_help(stdout, join_request_usage, opts, cli_common_opts);
			return -1;
		case OPT_DIR:
			o->dir = optarg;
			break;
		case OPT_INVITE:
			o->invite = optarg;
			break;
		case OPT_INVITE_SHA256:
			o->invite_sha256 = optarg;
			break;
		case OPT_LISTEN:
			o->listen = optarg;
			break;
		case OPT_STORE:
			o->store = optarg;
			break;
		case OPT_ZONES:
			o->zones = optarg;
			break;
		case OPT_UNITS:
		case OPT_PORT:
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (c == OPT_UNITS && (errno != 0 || end == optarg || *end != '\0' ||
			                       v < 1 || v > UP_MAX_UNITS)) {
				cli_fail(KY_ERR_USAGE, "--units",
				         "'%s': give a number of units from 1 to %d", optarg,
				         UP_MAX_UNITS);
				return KY_ERR_USAGE;
			}
			if (c == OPT_PORT &&
			    (errno != 0 || end == optarg || *end != '\0' || v < 1 || v > 65535)) {
				cli_fail(KY_ERR_USAGE, "--port",
				         "'%s': give a port number from 1 to 65535", optarg);
				return KY_ERR_USAGE;
			}
			if (c == OPT_UNITS)
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

int host_join_request_main(int argc, char **argv)
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
    "\n";

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

/* The number the answer gives unit uid is the one the anchor signed (number_sig). */
static int host_number_check(const char *instance, const char *req_hex, const char *uid, int number,
                             const json_t *au, X509 *anchor, const char *ans_path)
{
	const char *b64 = host_str(au, "number_sig", 1024);
	struct ky_buf sig = {0};
	char msg[512];
	int r = KY_ERR_JOIN_ANSWER_MISMATCH;

	if (b64 != NULL && host_number_msg(instance, req_hex, uid, number, msg, sizeof(msg)) == 0 &&
	    ky_b64_decode(b64, &sig) == 0 &&
	    ky_verify(X509_get0_pubkey(anchor), msg, strlen(msg), sig.data, sig.len) == 0)
		r = 0;
	else
		cli_fail(r, ans_path,
		         "unit '%s': number %d is not signed by the instance's unit trust anchor "
		         "(number_sig): use the answer exactly as 'kyok host join-accept' wrote it",
		         uid, number);
	ky_buf_free(&sig);
	return r;
}

struct host_finish_unit {
	struct up_unit u;
	char pending[PATH_MAX / 2];
	const json_t *au;
	bool moved;
};

int host_join_finish_main(int argc, char **argv)
{
	enum { OPT_ANSWER = 0x2001, OPT_DIR };
	static const struct cli_opt opts[] = {
	    {"dir", OPT_DIR, CLI_ARG_REQUIRED, "DIR", "directory of the join request"},
	    {"answer", OPT_ANSWER, CLI_ARG_REQUIRED, "FILE", "the answer of the anchor's host"},
	    CLI_OPT_END};
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

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, join_finish_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_DIR)
			dir_arg = optarg;
		else if (c == OPT_ANSWER)
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
		if ((r = host_number_check(instance, ahex, uid, u->number, fu[i].au, inv.anchor,
		                           ans_path)) != 0)
			goto out;
		r = KY_ERR_JOIN_ANSWER_MISMATCH;
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
