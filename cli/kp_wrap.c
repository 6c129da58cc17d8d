/* kyok kp wrap, unwrap, rewrap: envelope encryption with a root key.
 *
 * Files: a plaintext file holds the raw bytes to wrap; a ciphertext file holds the base64
 * text that 'wrap' and 'rewrap' print. Data keys and plaintexts are secrets: they go to a
 * 0600 file (--dek-out, --out), and to stdout only when --show asks for it.
 */
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/kp_client.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define KP_PLAINTEXT_MAX  7500
#define KP_CIPHERTEXT_MAX (16 * 1024)
#define KP_AAD_MAX        64
#define KP_PATH_MAX       512

enum {
	OPT_PLAINTEXT_FILE = 0x2001,
	OPT_CIPHERTEXT_FILE,
	OPT_AAD,
	OPT_DEK_OUT,
	OPT_OUT,
	OPT_SHOW,
	OPT_PLAINTEXT,
};

struct kp_wrap_args {
	const char *id;
	const char *plaintext_file;
	const char *ciphertext_file;
	const char *ciphertext; /* unwrap's second operand, as ibmcloud kp takes it */
	const char *dek_out;
	const char *out;
	bool show;
	const char *aad[KP_AAD_MAX];
	size_t naad;
};

/* The rows of the options wrap, unwrap and rewrap share: each takes all of them (those that
 * it does not list are refused or unused), ibmcloud kp's -p refused by all. */
#define KP_ROW_PLAINTEXT_FILE(help)                                                  \
	{                                                                            \
		"plaintext-file", OPT_PLAINTEXT_FILE, CLI_ARG_REQUIRED, "FILE", help \
	}
#define KP_ROW_CIPHERTEXT_FILE(help)                                                   \
	{                                                                              \
		"ciphertext-file", OPT_CIPHERTEXT_FILE, CLI_ARG_REQUIRED, "FILE", help \
	}
#define KP_ROW_DEK_OUT(help)                                           \
	{                                                              \
		"dek-out", OPT_DEK_OUT, CLI_ARG_REQUIRED, "FILE", help \
	}
#define KP_ROW_OUT(help)                                       \
	{                                                      \
		"out", OPT_OUT, CLI_ARG_REQUIRED, "FILE", help \
	}
#define KP_ROW_SHOW(help)                                  \
	{                                                  \
		"show", OPT_SHOW, CLI_ARG_NONE, NULL, help \
	}
/* --aad and ibmcloud kp's -a, which refuses a comma */
#define KP_ROWS_AAD                                                                               \
	{"aad", OPT_AAD, CLI_ARG_REQUIRED, "TEXT", "additional authenticated data (repeatable)"}, \
	{                                                                                         \
		NULL, 'a', CLI_ARG_REQUIRED, "TEXT",                                              \
		    "the same, one value each: a comma is refused, which ibmcloud kp reads as a " \
		    "separator"                                                                   \
	}
#define KP_ROWS_PLAINTEXT_REFUSED                                   \
	{"plaintext", OPT_PLAINTEXT, CLI_ARG_REQUIRED, NULL, NULL}, \
	{                                                           \
		NULL, 'p', CLI_ARG_REQUIRED, NULL, NULL             \
	}

/* Options of wrap, unwrap, rewrap (opts: one of their tables); then the key ID, and with ct_operand an optional
 * ciphertext after it. Returns -1 after --help (printed), else 0 or an error (printed). */
static int kp_wrap_opts(int argc, char **argv, const char *usage, const struct cli_opt *opts,
                        bool ct_operand, struct kp_wrap_args *a)
{
	int opt;

	memset(a, 0, sizeof(*a));
	while ((opt = cli_getopt(argc, argv, opts, kp_common_opts)) != -1) {
		switch (opt) {
		case 'h':
			kp_print_help(usage, opts);
			return -1;
		case 'p':
		case OPT_PLAINTEXT:
			return kp_refuse_opt(
			    "-p/--plaintext",
			    "a data key on the command line is seen by every user of this "
			    "host (ps, /proc): put the raw bytes in a file and give "
			    "--plaintext-file FILE");
		case 'a':
			/* ibmcloud kp's -a: one string each here; a comma would be read otherwise */
			if (strchr(optarg, ',') != NULL)
				return cli_err(
				    KY_ERR_USAGE, "-a",
				    "'%.100s' holds a comma: -a takes one AAD string each "
				    "(repeat -a for more); for a string with a comma give "
				    "--aad",
				    optarg);
			if (a->naad == KP_AAD_MAX)
				return cli_err(KY_ERR_USAGE, "-a", "at most %d", KP_AAD_MAX);
			a->aad[a->naad++] = optarg;
			break;
		case OPT_PLAINTEXT_FILE:
			a->plaintext_file = optarg;
			break;
		case OPT_CIPHERTEXT_FILE:
			a->ciphertext_file = optarg;
			break;
		case OPT_AAD:
			if (a->naad == KP_AAD_MAX)
				return cli_err(KY_ERR_USAGE, "--aad", "at most %d", KP_AAD_MAX);
			a->aad[a->naad++] = optarg;
			break;
		case OPT_DEK_OUT:
			a->dek_out = optarg;
			break;
		case OPT_OUT:
			a->out = optarg;
			break;
		case OPT_SHOW:
			a->show = true;
			break;
		default:
			if (kp_common_opt(opt, optarg) != 0)
				return KY_ERR_USAGE;
		}
	}
	if (ct_operand && argc - optind == 2)
		a->ciphertext = argv[--argc];
	return kp_key_operand(argc, argv, &a->id);
}

/* The request body: {"plaintext"?, "ciphertext"?, "aad"?: [...]} */
static json_t *kp_wrap_body(const struct kp_wrap_args *a, const char *plaintext,
                            const char *ciphertext)
{
	json_t *body = json_object(), *aad;

	if (body == NULL)
		return NULL;
	if ((plaintext != NULL &&
	     json_object_set_new(body, "plaintext", json_string(plaintext)) != 0) ||
	    (ciphertext != NULL &&
	     json_object_set_new(body, "ciphertext", json_string(ciphertext)) != 0))
		goto fail;
	if (a->naad > 0) {
		if ((aad = json_array()) == NULL || json_object_set_new(body, "aad", aad) != 0)
			goto fail;
		for (size_t i = 0; i < a->naad; i++) {
			json_t *s = json_string(a->aad[i]);
			if (s == NULL || json_array_append_new(aad, s) != 0)
				goto fail;
		}
	}
	return body;
fail:
	kp_json_cleanse(body);
	json_decref(body);
	return NULL;
}

/* A wrapped key given as text (unwrap's CIPHERTEXT): base64 that decodes to something.
 * *b64 malloc'd. */
static int kp_ciphertext_text(const char *text, const char *subject, char **b64)
{
	struct ky_buf bin = {0};
	int r = ky_b64_decode(text, &bin);
	bool empty = bin.len == 0;

	*b64 = NULL;
	ky_buf_free(&bin);
	if (r != 0 || empty)
		return cli_err(
		    KY_ERR_MALFORMED, subject,
		    "not a wrapped key: give the base64 text that 'kyok kp wrap' printed");
	if ((*b64 = strdup(text)) == NULL)
		return cli_err(KY_ERR_NOMEM, NULL, NULL);
	return 0;
}

/* A ciphertext file: the base64 text 'wrap' printed (whitespace around it ignored).
 * *b64 malloc'd. */
static int kp_ciphertext_read(const char *path, char **b64)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0}, bin = {0};
	size_t s = 0, e;
	char subject[600];

	*b64 = NULL;
	snprintf(subject, sizeof(subject), "--ciphertext-file %s", path);
	if ((r = kp_file_read(path, "--ciphertext-file", KP_CIPHERTEXT_MAX, &b)) != 0)
		return r;
	e = b.len;
	while (e > 0 && (b.data[e - 1] == '\n' || b.data[e - 1] == '\r' || b.data[e - 1] == ' '))
		e--;
	while (s < e && (b.data[s] == ' ' || b.data[s] == '\n' || b.data[s] == '\r'))
		s++;
	r = KY_ERR_MALFORMED;
	if (e == s || memchr(b.data + s, '\0', e - s) != NULL) {
		cli_fail(r, subject,
		         "not a wrapped key: the file must hold the base64 text that "
		         "'kyok kp wrap' printed");
		goto out;
	}
	if ((*b64 = malloc(e - s + 1)) == NULL) {
		r = cli_err(KY_ERR_NOMEM, NULL, NULL);
		goto out;
	}
	memcpy(*b64, b.data + s, e - s);
	(*b64)[e - s] = '\0';
	if (ky_b64_decode(*b64, &bin) != 0 || bin.len == 0) {
		cli_fail(r, subject,
		         "not a wrapped key: the file must hold the base64 text that "
		         "'kyok kp wrap' printed");
		free(*b64);
		*b64 = NULL;
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&bin);
	ky_buf_free(&b);
	return r;
}

static void kp_str_free(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

/* Decodes a base64 secret from a reply and writes it to path (0600). */
static int kp_write_b64(const char *path, const char *b64, const char *subject)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf raw = {0};

	if ((r = ky_b64_decode(b64, &raw)) != 0) {
		cli_fail(KY_ERR_BAD_REPLY, subject, "the reply's plaintext is not base64");
		return KY_ERR_BAD_REPLY;
	}
	r = kp_file_write(path, raw.data, raw.len);
	ky_buf_free(&raw);
	return r;
}

static const char *kp_version_id(const json_t *reply, const char *field)
{
	const char *s = json_string_value(json_object_get(json_object_get(reply, field), "id"));
	return s != NULL ? s : "";
}

int kp_wrap_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp wrap ID [--plaintext-file FILE] [--aad TEXT]...\n"
	    "                       [--dek-out FILE] [--show]\n"
	    "       kyok kp key wrap ID [--plaintext-file FILE] [-a TEXT]... [--dek-out FILE]\n"
	    "                           [--show]\n\n"
	    "Wraps (encrypts) a data key with the root key ID and prints the wrapped key\n"
	    "(base64) on stdout. Without --plaintext-file the service makes a new 256-bit data\n"
	    "key: it is written to --dek-out FILE (0600), and printed on a second line only\n"
	    "with --show. Every --aad given here must be given again to unwrap. Any role but\n"
	    "KeyPurge may wrap.\n\n"
	    "options:\n";
	static const struct cli_opt opts[] = {
	    KP_ROW_PLAINTEXT_FILE("the data key to wrap (raw bytes, at most 7500)"),
	    KP_ROWS_AAD,
	    KP_ROW_DEK_OUT("where to write a generated data key (raw bytes, 0600)"),
	    KP_ROW_SHOW("print a generated data key (base64) after the wrapped key"),
	    CLI_OPT_TEXT(
	        "  (ibmcloud kp's -p/--plaintext is refused: a data key on the command line is "
	        "seen\n  by other users of the host)\n"),
	    KP_ROW_CIPHERTEXT_FILE(NULL),
	    KP_ROW_OUT(NULL),
	    KP_ROWS_PLAINTEXT_REFUSED,
	    CLI_OPT_END};
	struct kp_wrap_args a;
	int r, status = 0;
	struct ky_buf pt = {0};
	char *pt64 = NULL, path[KP_PATH_MAX], subject[160];
	json_t *body = NULL;
	struct kp_reply rep = {0};
	const char *ct, *dek;

	if ((r = kp_wrap_opts(argc, argv, usage, opts, false, &a)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if (a.ciphertext_file != NULL || a.out != NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "--ciphertext-file and --out are for unwrap");
	if (a.plaintext_file == NULL && a.dek_out == NULL && !a.show)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "without --plaintext-file a new data key is made: give --dek-out "
		                "FILE to keep it (or --show to print it)");
	if (a.plaintext_file != NULL && a.dek_out != NULL)
		return cli_fail(KY_ERR_USAGE, "--dek-out",
		                "is for a generated data key: with --plaintext-file you have it");
	if (a.plaintext_file != NULL) {
		if (kp_file_read(a.plaintext_file, "--plaintext-file", KP_PLAINTEXT_MAX, &pt) != 0)
			return KY_EXIT_INPUT;
		r = ky_b64_encode(pt.data, pt.len, &pt64);
		ky_buf_free(&pt);
		if (r != 0)
			return cli_fail(r, a.plaintext_file, NULL);
	}
	if ((body = kp_wrap_body(&a, pt64, NULL)) == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, "or an --aad is not UTF-8");
		goto out;
	}
	snprintf(path, sizeof(path), "/api/v2/keys/%s/actions/wrap", a.id);
	snprintf(subject, sizeof(subject), "key %s", a.id);
	if ((status = kp_call("POST", path, "application/vnd.ibm.kms.key_action_wrap+json", body,
	                      NULL, subject, &rep)) != 0)
		goto out;
	ct = json_string_value(json_object_get(rep.json, "ciphertext"));
	dek = json_string_value(json_object_get(rep.json, "plaintext"));
	if (ct == NULL || (a.plaintext_file == NULL && dek == NULL)) {
		status = cli_fail(KY_ERR_BAD_REPLY, subject, "the wrap reply lacks %s",
		                  ct == NULL ? "the ciphertext" : "the generated data key");
		goto out;
	}
	if (a.dek_out != NULL && kp_write_b64(a.dek_out, dek, subject) != 0) {
		status = KY_EXIT_INPUT;
		goto out;
	}
	if (cli_g.json) {
		json_t *o = json_pack("{s:s, s:s}", "ciphertext", ct, "keyVersion",
		                      kp_version_id(rep.json, "keyVersion"));
		if (o != NULL && a.dek_out != NULL)
			json_object_set_new(o, "dek_file", json_string(a.dek_out));
		if (o != NULL && a.show && dek != NULL)
			json_object_set_new(o, "plaintext", json_string(dek));
		kp_print_json(o);
	} else {
		printf("%s\n", ct);
		if (a.show && dek != NULL)
			printf("%s\n", dek);
	}
	if (kp_o.verbose)
		fprintf(stderr, "wrapped with key version %s\n",
		        kp_version_id(rep.json, "keyVersion"));
out:
	kp_reply_release(&rep);
	kp_json_cleanse(body);
	json_decref(body);
	kp_str_free(pt64);
	return status;
}

int kp_unwrap_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp unwrap ID --ciphertext-file FILE [--aad TEXT]...\n"
	    "                         (--out FILE | --show)\n"
	    "       kyok kp key unwrap ID CIPHERTEXT [-a TEXT]... (--out FILE | --show)\n\n"
	    "Unwraps (decrypts) a wrapped data key with the root key ID. The wrapped key is the\n"
	    "base64 text 'wrap' printed: in a file, or as the operand CIPHERTEXT. The plaintext\n"
	    "goes to --out FILE (raw bytes, 0600), or with --show to stdout in base64. Give the\n"
	    "same AAD values as to wrap, in the same order. Any role but KeyPurge may unwrap.\n\n"
	    "options:\n";
	static const struct cli_opt opts[] = {
	    KP_ROW_CIPHERTEXT_FILE("the wrapped key: the base64 text 'wrap' printed"),
	    KP_ROWS_AAD,
	    KP_ROW_OUT("where to write the plaintext (raw bytes, 0600)"),
	    KP_ROW_SHOW("print the plaintext (base64) on stdout"),
	    KP_ROW_PLAINTEXT_FILE(NULL),
	    KP_ROW_DEK_OUT(NULL),
	    KP_ROWS_PLAINTEXT_REFUSED,
	    CLI_OPT_END};
	struct kp_wrap_args a;
	int r, status = 0;
	char *ct64 = NULL, path[KP_PATH_MAX], subject[160];
	json_t *body = NULL;
	struct kp_reply rep = {0};
	const char *pt, *rewrapped;

	if ((r = kp_wrap_opts(argc, argv, usage, opts, true, &a)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if (a.plaintext_file != NULL || a.dek_out != NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "--plaintext-file and --dek-out are for wrap");
	if (a.ciphertext_file != NULL && a.ciphertext != NULL)
		return cli_fail(
		    KY_ERR_USAGE, cli_cmd_name(),
		    "the wrapped key is given twice (CIPHERTEXT and --ciphertext-file): "
		    "give one");
	if (a.ciphertext_file == NULL && a.ciphertext == NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "give the wrapped key: --ciphertext-file FILE, or CIPHERTEXT after "
		                "the key ID");
	if (a.out == NULL && !a.show)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "give --out FILE for the plaintext (or --show to print it)");
	if (a.ciphertext != NULL ? kp_ciphertext_text(a.ciphertext, "CIPHERTEXT", &ct64) != 0
	                         : kp_ciphertext_read(a.ciphertext_file, &ct64) != 0)
		return KY_EXIT_INPUT;
	if ((body = kp_wrap_body(&a, NULL, ct64)) == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, "or an --aad is not UTF-8");
		goto out;
	}
	snprintf(path, sizeof(path), "/api/v2/keys/%s/actions/unwrap", a.id);
	snprintf(subject, sizeof(subject), "key %s", a.id);
	if ((status = kp_call("POST", path, "application/vnd.ibm.kms.key_action_unwrap+json", body,
	                      NULL, subject, &rep)) != 0)
		goto out;
	if ((pt = json_string_value(json_object_get(rep.json, "plaintext"))) == NULL) {
		status =
		    cli_fail(KY_ERR_BAD_REPLY, subject, "the unwrap reply lacks the plaintext");
		goto out;
	}
	if (a.out != NULL && kp_write_b64(a.out, pt, subject) != 0) {
		status = KY_EXIT_INPUT;
		goto out;
	}
	rewrapped = kp_version_id(rep.json, "rewrappedKeyVersion");
	if (cli_g.json) {
		json_t *o = json_pack("{s:s}", "keyVersion", kp_version_id(rep.json, "keyVersion"));
		if (o != NULL && a.out != NULL)
			json_object_set_new(o, "out", json_string(a.out));
		if (o != NULL && a.show)
			json_object_set_new(o, "plaintext", json_string(pt));
		if (o != NULL && rewrapped[0] != '\0')
			json_object_set_new(o, "rewrappedKeyVersion", json_string(rewrapped));
		kp_print_json(o);
	} else if (a.show) {
		printf("%s\n", pt);
	}
	if (rewrapped[0] != '\0' && !cli_g.json)
		fprintf(stderr,
		        "note: key %s has a newer version: 'kyok kp rewrap' moves this "
		        "wrapped key to it\n",
		        a.id);
	if (kp_o.verbose)
		fprintf(stderr, "unwrapped with key version %s\n",
		        kp_version_id(rep.json, "keyVersion"));
out:
	kp_reply_release(&rep);
	kp_json_cleanse(body);
	json_decref(body);
	free(ct64);
	return status;
}

int kp_rewrap_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok kp rewrap ID --ciphertext-file FILE [--aad TEXT]...\n"
	    "       kyok kp key rewrap ID --ciphertext-file FILE [-a TEXT]...\n\n"
	    "Re-wraps a wrapped data key with the newest version of the root key ID (after\n"
	    "'key-rotate') and prints the new wrapped key (base64) on stdout. The data key does\n"
	    "not leave the service. Any role but KeyPurge may rewrap.\n\n"
	    "options:\n";
	static const struct cli_opt opts[] = {
	    KP_ROW_CIPHERTEXT_FILE("the wrapped key: the base64 text 'wrap' printed"),
	    KP_ROWS_AAD,
	    KP_ROW_PLAINTEXT_FILE(NULL),
	    KP_ROW_DEK_OUT(NULL),
	    KP_ROW_OUT(NULL),
	    KP_ROW_SHOW(NULL),
	    KP_ROWS_PLAINTEXT_REFUSED,
	    CLI_OPT_END};
	struct kp_wrap_args a;
	int r, status = 0;
	char *ct64 = NULL, path[KP_PATH_MAX], subject[160];
	json_t *body = NULL;
	struct kp_reply rep = {0};
	const char *ct;

	if ((r = kp_wrap_opts(argc, argv, usage, opts, false, &a)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if (a.plaintext_file != NULL || a.dek_out != NULL || a.out != NULL || a.show)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(),
		                "rewrap takes --ciphertext-file and --aad only");
	if (a.ciphertext_file == NULL)
		return cli_fail(KY_ERR_USAGE, cli_cmd_name(), "--ciphertext-file FILE is required");
	if (kp_ciphertext_read(a.ciphertext_file, &ct64) != 0)
		return KY_EXIT_INPUT;
	if ((body = kp_wrap_body(&a, NULL, ct64)) == NULL) {
		status = cli_fail(KY_ERR_NOMEM, NULL, "or an --aad is not UTF-8");
		goto out;
	}
	snprintf(path, sizeof(path), "/api/v2/keys/%s/actions/rewrap", a.id);
	snprintf(subject, sizeof(subject), "key %s", a.id);
	if ((status = kp_call("POST", path, "application/vnd.ibm.kms.key_action_rewrap+json", body,
	                      NULL, subject, &rep)) != 0)
		goto out;
	if ((ct = json_string_value(json_object_get(rep.json, "ciphertext"))) == NULL) {
		status =
		    cli_fail(KY_ERR_BAD_REPLY, subject, "the rewrap reply lacks the ciphertext");
		goto out;
	}
	if (cli_g.json)
		kp_print_json(json_pack("{s:s, s:s, s:s}", "ciphertext", ct, "keyVersion",
		                        kp_version_id(rep.json, "keyVersion"),
		                        "rewrappedKeyVersion",
		                        kp_version_id(rep.json, "rewrappedKeyVersion")));
	else
		printf("%s\n", ct);
out:
	kp_reply_release(&rep);
	kp_json_cleanse(body);
	json_decref(body);
	free(ct64);
	return status;
}
