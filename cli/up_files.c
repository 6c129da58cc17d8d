/* kyok up: the instance directory's files, as 'kyok up', 'kyok unit-add' and 'kyok host'
 * write and read them: paths, each unit's unit.conf (its listen line, key storage, TLS
 * lines), DIR/store.uri, instance.json, the imprint credential and its verifier lines.
 * What the files are: the head of up.c. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/up_internal.h"
#include "kyok/imprint.h"

/* ---- paths ---- */

/* Absolute form of dir (not resolved: it may not exist yet). */
int up_abs_dir(const char *dir, char *out, size_t n)
{
	char cwd[PATH_MAX];
	size_t len;

	if (dir[0] == '/') {
		if (snprintf(out, n, "%s", dir) >= (int)n)
			return KY_ERR_USAGE;
	} else {
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return KY_ERR_IO;
		if (snprintf(out, n, "%s/%s", cwd, dir) >= (int)n)
			return KY_ERR_USAGE;
	}
	len = strlen(out);
	while (len > 1 && out[len - 1] == '/')
		out[--len] = '\0';
	return 0;
}

bool up_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static int up_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

int up_rm_rf(const char *path)
{
	if (nftw(path, up_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
		return KY_ERR_IO;
	return 0;
}

int up_write_text(const char *path, const char *text)
{
	return ky_file_write_atomic(path, text, strlen(text), 0600);
}

/* ---- unit.conf ---- */

/* Port of the 'listen' line of a unit.conf: 0 when it is 0 (any free port, as older kyok
 * wrote it), -1 when the file has no readable listen line. */
int up_conf_port(const char *conf)
{
	struct ky_buf b = {0};
	int port = -1;

	if (ky_file_read(conf, 64 * 1024, &b) != 0 || ky_buf_append(&b, "", 1) != 0) {
		ky_buf_free(&b);
		return -1;
	}
	for (char *line = (char *)b.data, *nl; line != NULL; line = nl != NULL ? nl + 1 : NULL) {
		char value[128], *colon, *end;
		long v;
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (sscanf(line, " listen = %127s", value) != 1 ||
		    (colon = strrchr(value, ':')) == NULL)
			continue;
		errno = 0;
		v = strtol(colon + 1, &end, 10);
		if (errno == 0 && end != colon + 1 && *end == '\0' && v >= 0 && v <= 65535)
			port = (int)v;
		break;
	}
	ky_buf_free(&b);
	return port;
}

/* Host of the 'listen' line of a unit.conf into out: "127.0.0.1" when it has none. */
void up_conf_host(const char *conf, char *out, size_t n)
{
	struct ky_buf b = {0};

	snprintf(out, n, "127.0.0.1");
	if (ky_file_read(conf, 64 * 1024, &b) != 0 || ky_buf_append(&b, "", 1) != 0) {
		ky_buf_free(&b);
		return;
	}
	for (char *line = (char *)b.data, *nl; line != NULL; line = nl != NULL ? nl + 1 : NULL) {
		char value[128], *colon;
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (sscanf(line, " listen = %127s", value) != 1 ||
		    (colon = strrchr(value, ':')) == NULL || colon == value)
			continue;
		*colon = '\0';
		if ((size_t)(colon - value) < n)
			memcpy(out, value, (size_t)(colon - value) + 1);
		break;
	}
	ky_buf_free(&b);
}

/* Rewrites the 'listen' line of a unit.conf (atomically) to HOST:port, its host kept. */
int up_conf_set_port(const char *conf, int port)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf in = {0}, out = {0};
	char listen[128], host[64];

	up_conf_host(conf, host, sizeof(host));
	snprintf(listen, sizeof(listen), "listen = %s:%d\n", host, port);
	if ((r = ky_file_read(conf, 64 * 1024, &in)) != 0 || (r = ky_buf_append(&in, "", 1)) != 0) {
		cli_fail(r, conf, "cannot read the unit configuration");
		goto out;
	}
	for (char *line = (char *)in.data, *nl; *line != '\0'; line = nl + 1) {
		char key[16];
		nl = strchr(line, '\n');
		if (nl == NULL)
			nl = line + strlen(line) - 1;
		if (sscanf(line, " %15[a-z_] =", key) == 1 && strcmp(key, "listen") == 0)
			r = ky_buf_append_str(&out, listen);
		else
			r = ky_buf_append(&out, line, (size_t)(nl - line) + 1);
		if (r != 0) {
			cli_fail(r, NULL, NULL);
			goto out;
		}
	}
	if ((r = ky_file_write_atomic(conf, out.data, out.len, 0600)) != 0) {
		cli_fail(r, conf, "cannot write the unit configuration");
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&in);
	ky_buf_free(&out);
	return r;
}

/* ---- one unit's files ---- */

void up_unit_paths(struct up_unit *u, const char *dir)
{
	snprintf(u->dir, sizeof(u->dir), "%s/unit-%d", dir, u->number);
	snprintf(u->conf, sizeof(u->conf), "%s/unit.conf", u->dir);
	snprintf(u->pidf, sizeof(u->pidf), "%s/pid", u->dir);
	snprintf(u->portf, sizeof(u->portf), "%s/port", u->dir);
	snprintf(u->log, sizeof(u->log), "%s/unit.log", u->dir);
}

/* The key storage of the instance in dir: DIR/store.uri when there is one (made with --store),
 * else DIR/keys.db. */
static int up_store(const char *dir, char *out, size_t cap)
{
	char path[PATH_MAX];
	struct ky_buf b = {0};
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, UP_STORE_FILE);
	if (access(path, F_OK) != 0) {
		if ((size_t)snprintf(out, cap, "sqlite:%s/keys.db", dir) >= cap)
			return KY_ERR_USAGE;
		return 0;
	}
	if ((r = ky_file_read(path, UP_STORE_MAX, &b)) != 0)
		return r;
	if (b.len < 2 || b.len >= cap || b.data[b.len - 1] != '\n' ||
	    memchr(b.data, '\0', b.len) != NULL || memchr(b.data, '\n', b.len - 1) != NULL) {
		ky_buf_free(&b);
		return KY_ERR_CONFIG;
	}
	memcpy(out, b.data, b.len - 1);
	out[b.len - 1] = '\0';
	ky_buf_free(&b);
	return 0;
}

/* --store: a PostgreSQL URI without a password (the units refuse one too; see
 * docs/storage.md), without spaces or control characters (one unit.conf line). */
int up_store_check(const char *uri)
{
	const char *at, *rest;

	if (strncmp(uri, "postgresql://", 13) == 0)
		rest = uri + 13;
	else if (strncmp(uri, "postgres://", 11) == 0)
		rest = uri + 11;
	else {
		(void)cli_fail(KY_ERR_USAGE, "--store",
		               "'%.40s': give a PostgreSQL URI, postgresql://USER@HOST/DB", uri);
		return KY_ERR_USAGE;
	}
	if (strlen(uri) >= UP_STORE_MAX) {
		(void)cli_fail(KY_ERR_USAGE, "--store", "URI longer than %d characters",
		               UP_STORE_MAX - 1);
		return KY_ERR_USAGE;
	}
	for (const char *c = uri; *c; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f) {
			(void)cli_fail(KY_ERR_USAGE, "--store",
			               "the URI has a space or control character");
			return KY_ERR_USAGE;
		}
	at = strchr(rest, '@');
	if ((at != NULL && memchr(rest, ':', (size_t)(at - rest)) != NULL) ||
	    strstr(uri, "password=") != NULL) {
		(void)cli_fail(KY_ERR_STORE_PASSWORD, "--store", NULL);
		return KY_ERR_STORE_PASSWORD;
	}
	/* As libpq reads it: a parameter name may be percent-encoded (%70assword). */
	{
		char *err = NULL;
		PQconninfoOption *opts = PQconninfoParse(uri, &err);
		bool pw = false;

		if (opts == NULL) {
			(void)cli_fail(KY_ERR_USAGE, "--store", "not a PostgreSQL URI: %s",
			               err != NULL ? err : "out of memory");
			PQfreemem(err);
			return KY_ERR_USAGE;
		}
		for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
			if (o->val != NULL && strcmp(o->keyword, "password") == 0)
				pw = true;
		PQconninfoFree(opts);
		if (pw) {
			(void)cli_fail(KY_ERR_STORE_PASSWORD, "--store", NULL);
			return KY_ERR_STORE_PASSWORD;
		}
	}
	return 0;
}

/* dir: the instance directory, whose key storage (up_store) all its units share.
 * seal_conf: sealing settings to add (NULL: none, the file backend). */
int up_write_conf(const char *dir, const char *instance, const struct up_unit *u,
                  const char *seal_conf)
{
	char text[4096 + UP_SEAL_CONF_MAX + UP_STORE_MAX], store[UP_STORE_MAX + PATH_MAX];
	char tls[PATH_MAX + 128] = "", ca[PATH_MAX], own[PATH_MAX];
	int n, r;

	if ((r = up_store(dir, store, sizeof(store))) != 0)
		return r;

	/* An instance with its own TLS CA (kyok up --tls): each unit serves HTTPS. So does a unit
	 * whose TLS key is in its directory already: the operator's (--tls-cert), or one made on
	 * another host than the CA's (kyok host join-request). */
	snprintf(ca, sizeof(ca), "%s/ca.key", dir);
	snprintf(own, sizeof(own), "%s/tls.key", u->dir);
	if (access(ca, F_OK) == 0)
		snprintf(tls, sizeof(tls),
		         "# HTTPS, certificate issued by the instance's TLS CA (%s/ca.crt)\n"
		         "api_tls_cert = %s/tls.crt\napi_tls_key = %s/tls.key\n",
		         dir, u->dir, u->dir);
	else if (access(own, F_OK) == 0)
		snprintf(tls, sizeof(tls),
		         "# HTTPS, with the certificate and key in the unit's directory\n"
		         "api_tls_cert = %s/tls.crt\napi_tls_key = %s/tls.key\n",
		         u->dir, u->dir);

	n = snprintf(text, sizeof(text),
	             "# crypto unit %d of a local kyok instance, written by 'kyok up'\n"
	             "instance = %s\n"
	             "unit = %s\n"
	             "zone = %s\n"
	             "listen = %s:%d\n"
	             "data_dir = %s/data\n"
	             "port_file = %s\n"
	             "log_file = %s\n"
	             "store = %s\n"
	             "anchor_cert = %s/anchor.crt\n"
	             "identity_cert = %s/identity.crt\n"
	             "%s%s",
	             u->number, instance, u->id, u->zone, u->host, u->port, u->dir, u->portf,
	             u->log, store, dir, u->dir, tls, seal_conf != NULL ? seal_conf : "");
	if (n < 0 || n >= (int)sizeof(text))
		return KY_ERR_USAGE;
	return up_write_text(u->conf, text);
}

/* True when a unit.conf sets key (a "key = value" line). */
static bool up_conf_has(const char *conf, const char *key)
{
	struct ky_buf b = {0};
	bool found = false;

	if (ky_file_read(conf, 64 * 1024, &b) != 0 || ky_buf_append(&b, "", 1) != 0) {
		ky_buf_free(&b);
		return false;
	}
	for (char *line = (char *)b.data, *nl; line != NULL; line = nl != NULL ? nl + 1 : NULL) {
		char k[32];
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (sscanf(line, " %31[a-z0-9_] =", k) == 1 && strcmp(k, key) == 0)
			found = true;
	}
	ky_buf_free(&b);
	return found;
}

/* The unit's URL: https when its unit.conf gives it a TLS certificate, on the host of its
 * listen line. A remote unit's URL is the one instance.json has. */
void up_unit_url(const struct up_unit *u, char *out, size_t n)
{
	char host[64];

	if (u->url[0] != '\0') {
		snprintf(out, n, "%s", u->url);
		return;
	}
	up_conf_host(u->conf, host, sizeof(host));
	snprintf(out, n, "%s://%s:%d", up_conf_has(u->conf, "api_tls_cert") ? "https" : "http",
	         host, u->port);
}

int up_write_instance(const char *dir, const char *instance, const struct up_unit *units, size_t n)
{
	int r = KY_ERR_NOMEM;
	json_t *arr = json_array(), *j = NULL;
	char path[PATH_MAX], *text = NULL;

	if (arr == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		char url[256];
		json_t *e;
		up_unit_url(&units[i], url, sizeof(url));
		if ((e = json_pack("{s:i, s:s, s:s, s:s}", "number", units[i].number, "id",
		                   units[i].id, "zone", units[i].zone, "url", url)) == NULL)
			goto out;
		if (units[i].remote && json_object_set_new(e, "remote", json_true()) != 0) {
			json_decref(e);
			goto out;
		}
		if (json_array_append_new(arr, e) != 0)
			goto out;
	}
	if ((j = json_pack("{s:s, s:O}", "instance", instance, "units", arr)) == NULL ||
	    (text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS)) == NULL)
		goto out;
	snprintf(path, sizeof(path), "%s/instance.json", dir);
	if ((r = up_write_text(path, text)) != 0)
		cli_fail(r, path, "%s", strerror(errno));
out:
	if (r == KY_ERR_NOMEM)
		cli_fail(r, NULL, NULL);
	free(text);
	json_decref(j);
	json_decref(arr);
	return r;
}

/* ---- the imprint credential ---- */

/* The imprint_verifier value in a unit.conf: 1 and hex filled, 0 when the file has none. */
int up_imprint_conf_verifier(const char *conf, char *hex)
{
	struct ky_buf b = {0};
	int found = 0;

	if (ky_file_read(conf, 64 * 1024, &b) != 0 || ky_buf_append(&b, "", 1) != 0) {
		ky_buf_free(&b);
		return 0;
	}
	for (char *line = (char *)b.data, *nl; line != NULL; line = nl != NULL ? nl + 1 : NULL) {
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (sscanf(line, " imprint_verifier = %64[0-9a-f]", hex) == 1 &&
		    strlen(hex) == 2 * KY_IMPRINT_PUB_LEN) {
			found = 1;
			break;
		}
	}
	ky_buf_free(&b);
	return found;
}

/* Appends "imprint_verifier = HEX" to a unit.conf (rewritten atomically). */
int up_imprint_conf_add(const char *conf, const char *hex)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	char line[256];

	snprintf(line, sizeof(line),
	         "# public key of the instance's imprint credential: in imprint mode the unit\n"
	         "# takes commands only with a claim made with it\nimprint_verifier = %s\n",
	         hex);
	if ((r = ky_file_read(conf, 64 * 1024, &b)) != 0 ||
	    (b.len > 0 && b.data[b.len - 1] != '\n' && (r = ky_buf_append(&b, "\n", 1)) != 0) ||
	    (r = ky_buf_append_str(&b, line)) != 0 ||
	    (r = ky_file_write_atomic(conf, b.data, b.len, 0600)) != 0) {
		cli_fail(r, conf, "cannot add the imprint verifier");
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

/* Creates DIR/imprint-credential.pem (0600, refused when it exists) and gives its public key
 * as hex. */
int up_imprint_create(const char *dir, char hex[2 * KY_IMPRINT_PUB_LEN + 1])
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf pem = {0};
	uint8_t pub[KY_IMPRINT_PUB_LEN];
	char path[PATH_MAX];
	int fd = -1;

	snprintf(path, sizeof(path), "%s/%s", dir, KY_IMPRINT_CREDENTIAL_FILE);
	if ((r = ky_imprint_credential_new(&pem, pub)) != 0) {
		cli_fail(r, path, "cannot make the imprint credential");
		goto out;
	}
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
		r = errno == EEXIST ? KY_ERR_EXISTS : KY_ERR_IO;
		cli_fail(r, path, "cannot create: %s", strerror(errno));
		goto out;
	}
	if (write(fd, pem.data, pem.len) != (ssize_t)pem.len || fsync(fd) != 0) {
		r = KY_ERR_IO;
		cli_fail(r, path, "cannot write: %s", strerror(errno));
		close(fd);
		fd = -1;
		unlink(path);
		goto out;
	}
	ky_hex_encode(pub, sizeof(pub), hex);
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	ky_buf_free(&pem);
	return r;
}

/* Public key of an existing DIR/imprint-credential.pem: 1 and hex filled, 0 when there is
 * no such file, or an error (printed). */
int up_imprint_existing(const char *dir, char hex[2 * KY_IMPRINT_PUB_LEN + 1])
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf pem = {0};
	EVP_PKEY *k = NULL;
	uint8_t pub[KY_IMPRINT_PUB_LEN];
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, KY_IMPRINT_CREDENTIAL_FILE);
	if ((r = ky_file_read(path, KY_IMPRINT_CREDENTIAL_MAX, &pem)) == KY_ERR_NOT_FOUND)
		return 0;
	if (r != 0 || (r = ky_imprint_credential_parse(pem.data, pem.len, &k)) != 0 ||
	    (r = ky_imprint_public(k, pub)) != 0) {
		cli_fail(r, path, "not an imprint credential");
		goto out;
	}
	ky_hex_encode(pub, sizeof(pub), hex);
	r = 1;
out:
	EVP_PKEY_free(k);
	ky_buf_free(&pem);
	return r;
}
