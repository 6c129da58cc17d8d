/* The TKE workspace: signature key files, key part files, pinned unit identities and the
 * selection of crypto units and signature keys (its selection.json: cli/selection.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/card_part.h"
#include "cli/card_sigkey.h"
#include "cli/cli.h"
#include "cli/token.h"
#include "cli/token_part.h"
#include "kyok/crypto.h"

#define CLI_KNOWN_UNITS_MAX (1024 * 1024)

/* A NUL-terminated copy of n bytes (strndup would scan past a buffer without NUL). */
static char *cli_text_dup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s == NULL)
		return NULL;
	if (n > 0)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

const char *cli_workspace(void)
{
	static char dir[512];
	const char *env, *home;

	env = getenv("KYOK_TKE_FILES");
	if (env != NULL && env[0] != '\0')
		return env;
	home = getenv("HOME");
	if (home == NULL || home[0] == '\0') {
		struct passwd *pw = getpwuid(getuid());
		home = pw != NULL ? pw->pw_dir : "/";
	}
	snprintf(dir, sizeof(dir), "%s/.kyok/tke", home);
	return dir;
}

/* The workspace directory holds signature keys and key parts: private to its owner, like
 * each file in it (checked once per run; a workspace not created yet passes). */
int cli_workspace_check(void)
{
	static bool checked;
	int r;

	if (checked || (access(cli_workspace(), F_OK) != 0 && errno == ENOENT))
		return 0;
	if ((r = cli_check_private("workspace directory", cli_workspace())) != 0)
		return r;
	checked = true;
	return 0;
}

int cli_workspace_ensure(void)
{
	static const char *const subdirs[] = {"", "/sigkeys", "/keyparts"};
	const char *ws = cli_workspace();
	char p[600];
	int r;

	if ((r = cli_workspace_check()) != 0)
		return r;

	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", ws, subdirs[i]);
		if ((r = ky_mkdir_p(p, 0700, NULL, 0)) != 0) {
			cli_fail(r, p, "cannot create workspace directory: %s",
			         r == KY_ERR_USAGE ? "path too long" : strerror(errno));
			return r;
		}
	}
	return 0;
}

int cli_sigkey_path_new(const char *name, char *out, size_t outlen)
{
	char base[KY_ADMIN_NAME_MAX + 1], rnd_hex[9];
	uint8_t rnd[4];
	size_t k = 0;
	int r = KY_ERR_INTERNAL;

	if (outlen > 0)
		out[0] = '\0';
	for (size_t i = 0; name[i] != '\0' && k + 1 < sizeof(base); i++) {
		char c = name[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		          (c >= '0' && c <= '9') || c == '-' || c == '_' || (c == '.' && k > 0);
		base[k++] = ok ? c : '_';
	}
	base[k] = '\0';
	if (k == 0)
		snprintf(base, sizeof(base), "admin");
	if ((r = ky_random(rnd, sizeof(rnd))) != 0) {
		r = KY_ERR_CRYPTO;
		goto out;
	}
	ky_hex_encode(rnd, sizeof(rnd), rnd_hex);
	if ((size_t)snprintf(out, outlen, "%s/sigkeys/%s-%s.sigkey", cli_workspace(), base,
	                     rnd_hex) >= outlen) {
		r = KY_ERR_USAGE;
		goto out;
	}
	r = 0;
out:
	if (r != 0 && outlen > 0)
		out[0] = '\0';
	return r;
}

/* ---- file names ---- */

bool cli_file_name_ok(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	if (n <= k || n > 255 || s[0] == '.' || strchr(s, '/') != NULL)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
			return false;
	return strcmp(s + n - k, suffix) == 0;
}

/* ---- listing workspace files ---- */

/* Numbers of signature keys and key parts: their place in the order of creation, which is
 * written down in <ws>/<sub>.order (one file name per line) the first time a file is seen,
 * never read from file times. Copying, touching or restoring a file (same name) keeps its
 * number; a deleted file keeps its line, so that restoring it gives it its place back; a
 * new file (or one copied in under a new name) goes last. A workspace without that file
 * (older kyok) gets it written in the order of file times, the order it was numbered by. */
#define CLI_ORDER_MAX (1024 * 1024)

struct cli_dir_entry {
	char *name;
	struct timespec mtime;
	size_t place; /* line in the order file; SIZE_MAX when not there yet */
};

static int cli_entry_cmp(const void *a, const void *b)
{
	const struct cli_dir_entry *x = a, *y = b;

	if (x->place != y->place)
		return x->place < y->place ? -1 : 1;
	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return strcmp(x->name, y->name);
}

static void cli_names_free(char **names, size_t n)
{
	if (names == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The place of each entry in the order file of dir (SIZE_MAX when absent). Lines that are not file names of
 * this kind are refused: the file is kyok's, and a damaged one must not renumber keys. */
static int cli_order_load(const char *dir, const char *suffix, struct cli_dir_entry *ents,
                          size_t count)
{
	int r = KY_ERR_INTERNAL;
	char path[700];
	struct ky_buf b = {0};
	size_t pos = 0, line = 0, places = 0;

	for (size_t i = 0; i < count; i++)
		ents[i].place = SIZE_MAX;
	snprintf(path, sizeof(path), "%s.order", dir);
	r = ky_file_read(path, CLI_ORDER_MAX, &b);
	if (r == KY_ERR_NOT_FOUND)
		return 0;
	if (r != 0) {
		cli_fail(r, path, "%s", r == KY_ERR_TOO_LARGE ? "file too large" : strerror(errno));
		goto out;
	}
	while (pos < b.len) {
		const uint8_t *nl = memchr(b.data + pos, '\n', b.len - pos);
		size_t n = nl != NULL ? (size_t)(nl - (b.data + pos)) : b.len - pos;
		char name[256];

		if (n > 0 && b.data[pos] != '#') {
			if (n >= sizeof(name)) {
				r = KY_ERR_MALFORMED;
				cli_fail(r, path,
				         "line %zu is too long: restore the file or delete it",
				         line + 1);
				goto out;
			}
			memcpy(name, b.data + pos, n);
			name[n] = '\0';
			if (!cli_file_name_ok(name, suffix)) {
				r = KY_ERR_MALFORMED;
				cli_fail(
				    r, path,
				    "line %zu is not a '*%s' file name: restore the file or delete "
				    "it",
				    line + 1, suffix);
				goto out;
			}
			for (size_t i = 0; i < count; i++)
				if (ents[i].place == SIZE_MAX && strcmp(ents[i].name, name) == 0)
					ents[i].place = places;
			places++;
		}
		line++;
		pos += n + 1;
	}
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

/* Appends the names of the entries without a place (sorted: last, by file time) to the
 * order file of dir. A workspace that cannot be written keeps working: the numbers are
 * then only as stable as the file times, and the user is told so. */
static void cli_order_append(const char *dir, const struct cli_dir_entry *ents, size_t count)
{
	char path[700];
	struct ky_buf b = {0};
	size_t first = count;

	for (size_t i = 0; i < count; i++)
		if (ents[i].place == SIZE_MAX) {
			first = i;
			break;
		}
	if (first == count)
		return;
	snprintf(path, sizeof(path), "%s.order", dir);
	if (ky_file_read(path, CLI_ORDER_MAX, &b) == KY_ERR_NOT_FOUND &&
	    ky_buf_append_str(&b, "# kyok: the order of the files here gives their numbers; "
	                          "kyok keeps it (do not edit)\n") != 0)
		goto fail;
	for (size_t i = first; i < count; i++)
		if (ky_buf_append_str(&b, ents[i].name) != 0 || ky_buf_append(&b, "\n", 1) != 0)
			goto fail;
	if (ky_file_write_atomic(path, b.data, b.len, 0600) != 0)
		goto fail;
	ky_buf_free(&b);
	return;
fail:
	fprintf(stderr, "warning: %s: cannot be written: numbers follow file times until it can\n",
	        path);
	ky_buf_free(&b);
}

/* Names of the regular files in <ws>/<sub> ending in suffix, in their numbering order (see
 * above). Prints errors. */
static int cli_dir_list(const char *sub, const char *suffix, char ***names, size_t *n)
{
	int r = KY_ERR_INTERNAL;
	char dir[600];
	DIR *d = NULL;
	struct dirent *e;
	struct cli_dir_entry *ents = NULL;
	char **out = NULL;
	size_t count = 0, cap = 0;

	*names = NULL;
	*n = 0;
	if ((r = cli_workspace_check()) != 0)
		return r;
	snprintf(dir, sizeof(dir), "%s/%s", cli_workspace(), sub);
	if ((d = opendir(dir)) == NULL) {
		if (errno == ENOENT)
			return 0;
		r = KY_ERR_IO;
		cli_fail(r, dir, "%s", strerror(errno));
		return r;
	}
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		if (!cli_file_name_ok(e->d_name, suffix))
			continue;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (count == cap) {
			size_t c2 = cap ? 2 * cap : 16;
			struct cli_dir_entry *e2 = realloc(ents, c2 * sizeof(*e2));
			if (e2 == NULL)
				goto nomem;
			ents = e2;
			cap = c2;
		}
		if ((ents[count].name = strdup(e->d_name)) == NULL)
			goto nomem;
		ents[count].mtime = st.st_mtim;
		count++;
	}
	if ((r = cli_order_load(dir, suffix, ents, count)) != 0)
		goto out;
	if (count > 0)
		qsort(ents, count, sizeof(*ents), cli_entry_cmp);
	cli_order_append(dir, ents, count);
	if (count > 0 && (out = calloc(count, sizeof(*out))) == NULL)
		goto nomem;
	for (size_t i = 0; i < count; i++) {
		out[i] = ents[i].name;
		ents[i].name = NULL; /* transferred */
	}
	*names = out;
	*n = count;
	r = 0;
	goto out;
nomem:
	r = KY_ERR_NOMEM;
	cli_fail(r, dir, NULL);
out:
	for (size_t i = 0; i < count; i++)
		free(ents[i].name);
	free(ents);
	closedir(d);
	return r;
}

int cli_sigkeys_list(struct cli_sigkey **keys, size_t *n)
{
	int r = KY_ERR_INTERNAL;
	char **names = NULL;
	size_t nnames = 0, count = 0;
	struct cli_sigkey *out = NULL;
	json_t *sel = NULL, *selkeys;

	*keys = NULL;
	*n = 0;
	if ((r = cli_selection_load(&sel)) != 0)
		goto out;
	selkeys = json_object_get(sel, "sigkeys");
	if ((r = cli_dir_list("sigkeys", ".sigkey", &names, &nnames)) != 0)
		goto out;
	if (nnames > 0 && (out = calloc(nnames, sizeof(*out))) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < nnames; i++) {
		struct cli_sigkey *k = &out[count];
		X509 *cert = NULL;
		size_t j;
		json_t *item;
		int e;

		if ((size_t)snprintf(k->path, sizeof(k->path), "%s/sigkeys/%s", cli_workspace(),
		                     names[i]) >= sizeof(k->path)) {
			fprintf(stderr, "warning: %s/sigkeys/%s: path too long: skipped\n",
			        cli_workspace(), names[i]);
			memset(k, 0, sizeof(*k));
			continue;
		}
		if ((e = ky_sigkey_read_cert(k->path, &cert)) != 0 ||
		    (e = ky_cert_cn(cert, k->name, sizeof(k->name))) != 0 ||
		    (e = ky_cert_ski(cert, k->ski)) != 0) {
			fprintf(stderr, "warning: %s: %s: skipped\n", k->path, ky_err_message(e));
			X509_free(cert);
			memset(k, 0, sizeof(*k));
			continue;
		}
		X509_free(cert);
		json_array_foreach(selkeys, j, item)
		{
			if (strcmp(json_string_value(item), names[i]) == 0)
				k->selected = true;
		}
		k->number = (int)++count;
	}
	*keys = out;
	out = NULL; /* transferred */
	*n = count;
	r = 0;
out:
	free(out);
	cli_names_free(names, nnames);
	json_decref(sel);
	return r;
}

/* A key part file of the token form: its description and VP, and its token. */
static int cli_keypart_token_info(struct cli_keypart *p, struct ky_keypart_info *info)
{
	struct cli_token_keypart tp;
	char why[200];
	int r = cli_token_keypart_read(p->path, &tp, why, sizeof(why));

	if (r != 0) {
		fprintf(stderr, "warning: %s: %s%s%s%s: skipped\n", p->path, ky_err_message(r),
		        why[0] != '\0' ? " (" : "", why, why[0] != '\0' ? ")" : "");
		memset(p, 0, sizeof(*p));
		return r;
	}
	snprintf(info->description, sizeof(info->description), "%s", tp.description);
	memcpy(info->vp, tp.vp, KY_VP_LEN);
	p->in_token = true;
	snprintf(p->token_label, sizeof(p->token_label), "%s", tp.where.label);
	return 0;
}

int cli_keyparts_list(struct cli_keypart **parts, size_t *n)
{
	int r = KY_ERR_INTERNAL;
	char **names = NULL;
	size_t nnames = 0, count = 0;
	struct cli_keypart *out = NULL;

	*parts = NULL;
	*n = 0;
	if ((r = cli_dir_list("keyparts", ".keypart", &names, &nnames)) != 0)
		goto out;
	if (nnames > 0 && (out = calloc(nnames, sizeof(*out))) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < nnames; i++) {
		struct cli_keypart *p = &out[count];
		struct ky_keypart_info info;
		int e;

		if ((size_t)snprintf(p->path, sizeof(p->path), "%s/keyparts/%s", cli_workspace(),
		                     names[i]) >= sizeof(p->path)) {
			fprintf(stderr, "warning: %s/keyparts/%s: path too long: skipped\n",
			        cli_workspace(), names[i]);
			memset(p, 0, sizeof(*p));
			continue;
		}
		memset(&info, 0, sizeof(info));
		/* A password-protected part file, else the record of a part on a card, else the
		 * token form. */
		if ((e = ky_keypart_read_info(p->path, &info)) == KY_ERR_NOT_KEY_PART &&
		    (e = cli_card_part_info(p->path, &info)) == 0)
			p->on_card = true;
		else if (e == KY_ERR_NOT_KEY_PART && (e = cli_keypart_token_info(p, &info)) != 0)
			continue; /* said why */
		if (e != 0) {
			fprintf(stderr, "warning: %s: %s: skipped\n", p->path, ky_err_message(e));
			memset(p, 0, sizeof(*p));
			continue;
		}
		snprintf(p->description, sizeof(p->description), "%s", info.description);
		ky_hex_encode(info.vp, KY_VP_LEN, p->vp_hex);
		p->number = (int)++count;
	}
	*parts = out;
	out = NULL; /* transferred */
	*n = count;
	r = 0;
out:
	free(out);
	cli_names_free(names, nnames);
	return r;
}

/* ---- signers ---- */

void cli_signers_free(struct cli_signer *signers, size_t n)
{
	if (signers == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		X509_free(signers[i].cert);
		EVP_PKEY_free(signers[i].key);
		cli_token_free(signers[i].token);
		free(signers[i].card);
	}
	free(signers);
	cli_card_signers_release();
}

int cli_signer_sign(const struct cli_signer *s, struct ky_buf *der)
{
	struct ky_ext_signer ext;

	if (s->card != NULL)
		return cli_card_signer_sign(s, der);
	if (s->token == NULL)
		return ky_cms_add_signer(der, s->cert, s->key);
	ext = (struct ky_ext_signer){X509_get0_pubkey(s->cert), cli_token_sign, s->token};
	return ky_cms_add_signer_ext(der, s->cert, &ext);
}

int cli_signers_open(struct cli_signer **signers, size_t *n)
{
	int r = KY_ERR_INTERNAL;
	json_t *sel = NULL, *selkeys, *item;
	struct cli_signer *out = NULL;
	size_t count = 0, i;
	char *password = NULL;

	*signers = NULL;
	*n = 0;
	if ((r = cli_selection_load(&sel)) != 0)
		goto out;
	selkeys = json_object_get(sel, "sigkeys");
	if (json_array_size(selkeys) == 0) {
		r = KY_ERR_NO_SIGNERS;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	if ((out = calloc(json_array_size(selkeys), sizeof(*out))) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	json_array_foreach(selkeys, i, item)
	{
		struct cli_signer *s = &out[count];
		char path[600], subject[128], prompt[160];
		X509 *cert = NULL;
		struct ky_sigkey_token tok;
		bool in_token = false;

		snprintf(path, sizeof(path), "%s/sigkeys/%s", cli_workspace(),
		         json_string_value(item));
		if ((r = ky_sigkey_read(path, &cert, &tok, &in_token)) == KY_ERR_SIGKEY_IN_CARD) {
			/* Nothing asked now: the card is asked for, and its PIN when it wants it,
			 * when it signs (cli_card_signer_sign). */
			if ((s->card = calloc(1, sizeof(*s->card))) == NULL) {
				r = KY_ERR_NOMEM;
				cli_fail(r, NULL, NULL);
				goto out;
			}
			count++; /* s is freed with the others from here on */
			if ((r = ky_sigkey_read_card(path, &s->cert, s->card)) != 0 ||
			    (r = ky_cert_cn(s->cert, s->name, sizeof(s->name))) != 0) {
				cli_fail(r, path, NULL);
				goto out;
			}
			if ((r = cli_check_private("signature key file", path)) != 0)
				goto out;
			continue;
		}
		if (r != 0 || (r = ky_cert_cn(cert, s->name, sizeof(s->name))) != 0) {
			X509_free(cert);
			if (r == KY_ERR_NOT_FOUND)
				cli_fail(r, path,
				         "selected signature key file is gone: run 'kyok tke "
				         "sigkey-sel'");
			else
				cli_fail(r, path, NULL);
			goto out;
		}
		if ((r = cli_check_private("signature key file", path)) != 0) {
			X509_free(cert);
			goto out;
		}
		snprintf(subject, sizeof(subject), "signature key '%s'", s->name);
		if (in_token) {
			char why[CLI_TOKEN_WHY_MAX];

			s->cert = cert;
			cert = NULL; /* transferred */
			count++;     /* s is freed with the others from here on */
			snprintf(prompt, sizeof(prompt),
			         "PIN of token '%s' (signature key of '%s')", tok.label, s->name);
			if ((r = cli_password(prompt, false, &password)) != 0)
				goto out;
			r = cli_signer_open_token(s, &tok, password, why);
			cli_secret_free(password);
			password = NULL;
			if (r != 0) {
				cli_fail(r, subject, "%s", why);
				goto out;
			}
			continue;
		}
		X509_free(cert);
		snprintf(prompt, sizeof(prompt), "password for signature key '%s'", s->name);
		if ((r = cli_password(prompt, false, &password)) != 0)
			goto out;
		r = ky_sigkey_open(path, password, &s->cert, &s->key);
		cli_secret_free(password);
		password = NULL;
		if (r != 0) {
			cli_fail(r, subject, NULL);
			goto out;
		}
		count++;
	}
	*signers = out;
	out = NULL; /* transferred */
	*n = count;
	r = 0;
out:
	cli_signers_free(out, count);
	cli_secret_free(password);
	json_decref(sel);
	return r;
}

/* ---- known_units: "<instance> <unit> <sha256 hex>" per line ---- */

static void cli_known_units_path(char *p, size_t n)
{
	snprintf(p, n, "%s/known_units", cli_workspace());
}

int cli_known_unit_lookup(const char *instance, const char *unit, char fp[65])
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	char path[600];
	char *text = NULL, *line, *save = NULL;

	cli_known_units_path(path, sizeof(path));
	r = ky_file_read(path, CLI_KNOWN_UNITS_MAX, &b);
	if (r == KY_ERR_NOT_FOUND)
		return r;
	if (r != 0) {
		cli_fail(r, path, NULL);
		return r;
	}
	if ((text = cli_text_dup(b.data, b.len)) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, path, NULL);
		goto out;
	}
	r = KY_ERR_NOT_FOUND;
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char inst[KY_ID_MAX + 1], u[KY_ID_MAX + 1], hex[65], extra;
		uint8_t raw[32];
		if (line[0] == '#')
			continue;
		if (sscanf(line, "%64s %64s %64s %c", inst, u, hex, &extra) != 3)
			continue;
		if (strcmp(inst, instance) != 0 || strcmp(u, unit) != 0)
			continue;
		if (ky_hex_decode(hex, raw, sizeof(raw)) != 0) {
			r = KY_ERR_CONFIG;
			cli_fail(r, path,
			         "line for crypto unit %s has a malformed fingerprint: "
			         "delete that line to pin the unit again",
			         unit);
			goto out;
		}
		memcpy(fp, hex, 65);
		r = 0;
		break;
	}
out:
	free(text);
	ky_buf_free(&b);
	return r;
}

int cli_known_unit_pin(const char *instance, const char *unit, const char *fp)
{
	int r = KY_ERR_INTERNAL;
	char path[600], line[256];
	int fd = -1, len;

	if ((r = cli_workspace_ensure()) != 0)
		return r;
	cli_known_units_path(path, sizeof(path));
	len = snprintf(line, sizeof(line), "%s %s %s\n", instance, unit, fp);
	r = KY_ERR_IO;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write(fd, line, (size_t)len) != len || fsync(fd) != 0) {
		cli_fail(r, path, "%s", strerror(errno));
		goto out;
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

/* ---- kyok tke card-keep's pid file ---- */

/* <workspace>/card-keep-N.pid */
void cli_card_keep_pid_path(unsigned reader, char *path, size_t n)
{
	snprintf(path, n, "%s/card-keep-%u.pid", cli_workspace(), reader);
}

bool cli_card_keep_running(unsigned reader)
{
	char path[600], buf[32];
	long pid;
	ssize_t len;
	int fd;

	cli_card_keep_pid_path(reader, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return false;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return false;
	buf[len] = '\0';
	pid = strtol(buf, NULL, 10);
	return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

int cli_pick_number(const char *what, const char *flag, const char *question, size_t n,
                    int (*print)(const void *ctx), const void *ctx, const char *arg, int *num)
{
	int r = KY_ERR_INTERNAL;
	char *answer = NULL, why[160];
	size_t nnums = 0;

	if (n == 0)
		return cli_err(KY_ERR_NOT_FOUND, what, "the workspace has none");
	if (arg == NULL) {
		bool saved_json = cli_g.json;

		cli_g.json = false;
		r = print(ctx);
		cli_g.json = saved_json;
		if (r != 0)
			goto out;
		putchar('\n');
		fflush(stdout);
		if ((r = cli_prompt_line(question, flag, &answer)) != 0)
			goto out;
		arg = answer;
	}
	if ((r = cli_parse_numbers(arg, (int)n, num, 1, &nnums, why, sizeof(why))) != 0) {
		cli_err(r, flag, "%s (the workspace has %s 1 to %zu)", why, what, n);
		goto out;
	}
	r = 0;
out:
	free(answer);
	return r;
}

int cli_unlink(const char *path)
{
	if (unlink(path) != 0)
		return cli_err(KY_ERR_IO, path, "%s", strerror(errno));
	return 0;
}

int cli_rm_numbered(const struct cli_rm *rm, const char *arg, int *num)
{
	int r = KY_ERR_INTERNAL;
	const char *path = NULL;
	char question[800];

	if ((r = cli_pick_number(rm->what, rm->flag, rm->ask, rm->n, rm->print, rm->list, arg,
	                         num)) != 0)
		return r;
	if ((r = rm->pick(rm->ctx, *num, &path, question, sizeof(question))) != 0)
		return r;
	if ((r = cli_confirm(question)) != 0)
		return r;
	if (rm->before_unlink != NULL && (r = rm->before_unlink(rm->ctx)) != 0)
		return r;
	return cli_unlink(path);
}
