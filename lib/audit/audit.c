/* Audit log lines: building, hashing, signing and checking them (include/kyok/audit.h). */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyok/audit.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

/* ---- building ---- */

static void audit_put(struct ky_audit_line *l, const char *p, size_t n)
{
	if (l->over || n > KY_AUDIT_LINE_MAX - l->len) {
		l->over = true;
		return;
	}
	memcpy(l->s + l->len, p, n);
	l->len += n;
}

static void audit_puts(struct ky_audit_line *l, const char *p)
{
	audit_put(l, p, strlen(p));
}

static bool audit_plain(unsigned char c)
{
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

static void audit_put_escaped(struct ky_audit_line *l, const char *v)
{
	static const char hex[] = "0123456789abcdef";

	for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
		if (audit_plain(*c)) {
			/* a run of characters that need no escape, in one copy */
			const unsigned char *e = c + 1;

			while (audit_plain(*e))
				e++;
			audit_put(l, (const char *)c, (size_t)(e - c));
			c = e - 1;
		} else if (*c == '"' || *c == '\\') {
			char e[2] = {'\\', (char)*c};
			audit_put(l, e, 2);
		} else if (*c < 0x20) {
			char e[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
			audit_put(l, e, 6);
		} else {
			audit_put(l, "?", 1); /* 0x7f and above: a line is ASCII */
		}
	}
}

static void audit_put_name(struct ky_audit_line *l, const char *name)
{
	audit_put(l, ",\"", 2);
	audit_puts(l, name);
	audit_put(l, "\":", 2);
}

void ky_audit_members(struct ky_audit_line *l)
{
	l->len = 0;
	l->over = false;
}

size_t ky_audit_head(char out[KY_AUDIT_HEAD_MAX], uint64_t seq,
                     const uint8_t prev[KY_AUDIT_HASH_LEN])
{
	char phex[2 * KY_AUDIT_HASH_LEN + 1];
	int n;

	ky_hex_encode(prev, KY_AUDIT_HASH_LEN, phex);
	n = snprintf(out, KY_AUDIT_HEAD_MAX, "{\"seq\":%llu,\"prev\":\"%s\"",
	             (unsigned long long)seq, phex);
	return n > 0 && n < KY_AUDIT_HEAD_MAX ? (size_t)n : 0; /* cannot be 0: the buffer fits */
}

void ky_audit_body(struct ky_audit_line *l, const char *time, const char *event)
{
	l->len = 0;
	l->over = false;
	audit_puts(l, ",\"time\":\"");
	audit_put_escaped(l, time);
	audit_puts(l, "\",\"event\":\"");
	audit_put_escaped(l, event);
	audit_put(l, "\"", 1);
}

void ky_audit_begin(struct ky_audit_line *l, uint64_t seq, const uint8_t prev[KY_AUDIT_HASH_LEN],
                    const char *time, const char *event)
{
	char head[KY_AUDIT_HEAD_MAX];
	struct ky_audit_line body;

	ky_audit_body(&body, time, event);
	ky_audit_members(l);
	audit_put(l, head, ky_audit_head(head, seq, prev));
	audit_put(l, body.s, body.len);
	l->over = l->over || body.over;
}

void ky_audit_add_str(struct ky_audit_line *l, const char *name, const char *value)
{
	audit_put_name(l, name);
	audit_put(l, "\"", 1);
	audit_put_escaped(l, value ? value : "");
	audit_put(l, "\"", 1);
}

void ky_audit_add_uint(struct ky_audit_line *l, const char *name, uint64_t value)
{
	char num[24];

	snprintf(num, sizeof(num), "%llu", (unsigned long long)value);
	audit_put_name(l, name);
	audit_puts(l, num);
}

void ky_audit_add_bool(struct ky_audit_line *l, const char *name, bool value)
{
	audit_put_name(l, name);
	audit_puts(l, value ? "true" : "false");
}

void ky_audit_add_escaped(struct ky_audit_line *l, const char *value)
{
	audit_put_escaped(l, value ? value : "");
}

void ky_audit_add_json(struct ky_audit_line *l, const char *name, const char *json)
{
	audit_put_name(l, name);
	audit_puts(l, json);
}

void ky_audit_add_members(struct ky_audit_line *l, const char *members, size_t n)
{
	audit_put(l, members, n);
}

int ky_audit_end(struct ky_audit_line *l)
{
	audit_put(l, "}", 1);
	if (l->over)
		return KY_ERR_TOO_LARGE;
	l->s[l->len] = '\0';
	return 0;
}

int ky_audit_sign(struct ky_audit_line *l, EVP_PKEY *key)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf sig = {0};
	char *b64 = NULL;

	if (l->over || l->len < 2 || l->s[l->len - 1] != '}')
		return KY_ERR_INTERNAL;
	if ((r = ky_sign(key, l->s, l->len, &sig)) != 0)
		goto out;
	if ((r = ky_b64_encode(sig.data, sig.len, &b64)) != 0)
		goto out;
	l->len--; /* the closing brace */
	audit_puts(l, KY_AUDIT_SIG_MEMBER);
	audit_puts(l, b64);
	audit_puts(l, "\"");
	if ((r = ky_audit_end(l)) != 0)
		goto out;
	r = 0;
out:
	free(b64);
	ky_buf_free(&sig);
	return r;
}

/* SHA-256 fetched once: a fetch for each line (EVP_sha256() in EVP_Digest) takes the
 * provider's locks on every request that writes a line. */
static EVP_MD *audit_sha256;
static pthread_once_t audit_sha256_once = PTHREAD_ONCE_INIT;

static void audit_sha256_fetch(void)
{
	audit_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int ky_audit_hash(const char *line, size_t n, uint8_t out[KY_AUDIT_HASH_LEN])
{
	pthread_once(&audit_sha256_once, audit_sha256_fetch);
	if (audit_sha256 == NULL)
		return KY_ERR_CRYPTO;
	return EVP_Digest(line, n, out, NULL, audit_sha256, NULL) == 1 ? 0 : KY_ERR_CRYPTO;
}

int ky_audit_hash_in(EVP_MD_CTX *ctx, const char *line, size_t n, uint8_t out[KY_AUDIT_HASH_LEN])
{
	pthread_once(&audit_sha256_once, audit_sha256_fetch);
	if (audit_sha256 == NULL)
		return KY_ERR_CRYPTO;
	return EVP_DigestInit_ex2(ctx, audit_sha256, NULL) == 1 &&
	               EVP_DigestUpdate(ctx, line, n) == 1 &&
	               EVP_DigestFinal_ex(ctx, out, NULL) == 1
	           ? 0
	           : KY_ERR_CRYPTO;
}

void ky_audit_time(int64_t sec, long nsec, char *out, size_t outlen)
{
	struct tm tm;
	time_t t = (time_t)sec;
	char base[24];

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		snprintf(base, sizeof(base), "1970-01-01T00:00:00");
	snprintf(out, outlen, "%s.%03ldZ", base, (nsec / 1000000) % 1000);
}

/* ---- checking ---- */

struct ky_audit_verifier {
	EVP_PKEY *fixed; /* given by the caller: every certificate must hold it */
	EVP_PKEY *pub;   /* the key checkpoints are checked with (NULL: none yet) */
	ky_audit_trust_fn trust;
	void *arg;
	bool from_start;
	bool any;
	uint64_t seq;                    /* of the last line */
	uint8_t hash[KY_AUDIT_HASH_LEN]; /* of the last line */
	char where[256];                 /* of the last line */
	uint64_t covered;                /* seq of the last good checkpoint */
	char first_uncovered[256];       /* where the first line after it is */
	char instance[KY_ID_MAX + 1];    /* from the file line */
	char unit[KY_ID_MAX + 1];
	struct ky_audit_summary sum;
	bool last_was_stop;
};

int ky_audit_verifier_new(EVP_PKEY *pub, ky_audit_trust_fn trust, void *arg, bool from_start,
                          struct ky_audit_verifier **out)
{
	struct ky_audit_verifier *v = calloc(1, sizeof(*v));

	*out = NULL;
	if (v == NULL)
		return KY_ERR_NOMEM;
	if (pub != NULL) {
		if (EVP_PKEY_up_ref(pub) != 1) {
			free(v);
			return KY_ERR_CRYPTO;
		}
		v->fixed = pub;
		if (EVP_PKEY_up_ref(pub) != 1) {
			EVP_PKEY_free(v->fixed);
			free(v);
			return KY_ERR_CRYPTO;
		}
		v->pub = pub;
	}
	v->trust = trust;
	v->arg = arg;
	v->from_start = from_start;
	*out = v;
	return 0;
}

void ky_audit_verifier_free(struct ky_audit_verifier *v)
{
	if (v == NULL)
		return;
	EVP_PKEY_free(v->fixed);
	EVP_PKEY_free(v->pub);
	free(v);
}

static bool audit_hex64(const char *s)
{
	if (strlen(s) != 2 * KY_AUDIT_HASH_LEN)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

/* The "file" line's certificate: checked (fixed key, or trust) and taken. */
static int audit_file_cert(struct ky_audit_verifier *v, const char *where, json_t *j, char *why,
                           size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	const char *b64 = json_string_value(json_object_get(j, "cert"));
	const char *inst = json_string_value(json_object_get(j, "instance"));
	const char *unit = json_string_value(json_object_get(j, "unit"));
	struct ky_buf der = {0};
	const unsigned char *p;
	X509 *cert = NULL;
	EVP_PKEY *pk = NULL;

	if (b64 == NULL || inst == NULL || unit == NULL || strlen(inst) > KY_ID_MAX ||
	    strlen(unit) > KY_ID_MAX) {
		r = KY_ERR_AUDIT_LINE;
		snprintf(why, whylen, "%s: file line without cert, instance or unit", where);
		goto out;
	}
	if (ky_b64_decode(b64, &der) != 0) {
		r = KY_ERR_AUDIT_LINE;
		snprintf(why, whylen, "%s: file line's cert is not base64", where);
		goto out;
	}
	p = der.data;
	if ((cert = d2i_X509(NULL, &p, (long)der.len)) == NULL || p != der.data + der.len ||
	    (pk = X509_get_pubkey(cert)) == NULL) {
		r = KY_ERR_AUDIT_LINE;
		snprintf(why, whylen, "%s: file line's cert is not a DER certificate", where);
		goto out;
	}
	if (v->fixed != NULL) {
		if (EVP_PKEY_eq(pk, v->fixed) != 1) {
			r = KY_ERR_AUDIT_SIGNATURE;
			snprintf(why, whylen,
			         "%s: the log names an identity certificate that is not the one "
			         "given: this log is not that unit's",
			         where);
			goto out;
		}
	} else if (v->trust == NULL) {
		r = KY_ERR_AUDIT_SIGNATURE;
		snprintf(why, whylen, "%s: no way to trust the log's identity certificate", where);
		goto out;
	} else if ((r = v->trust(v->arg, inst, unit, cert, why, whylen)) != 0) {
		goto out;
	}
	EVP_PKEY_free(v->pub);
	v->pub = pk;
	pk = NULL; /* transferred */
	snprintf(v->instance, sizeof(v->instance), "%s", inst);
	snprintf(v->unit, sizeof(v->unit), "%s", unit);
	r = 0;
out:
	EVP_PKEY_free(pk);
	X509_free(cert);
	ky_buf_free(&der);
	return r;
}

/* A checkpoint: its signature over the line without the sig member. */
static int audit_checkpoint(struct ky_audit_verifier *v, const char *where, json_t *j,
                            const char *line, size_t n, char *why, size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	const char *inst = json_string_value(json_object_get(j, "instance"));
	const char *unit = json_string_value(json_object_get(j, "unit"));
	const char *sigm = NULL;
	struct ky_buf sig = {0}, msg = {0};
	char *b64 = NULL;
	size_t ml = strlen(KY_AUDIT_SIG_MEMBER), blen;

	/* The last member must be "sig"; find where it begins. */
	for (size_t i = n; i-- > 0;)
		if (i + ml <= n && memcmp(line + i, KY_AUDIT_SIG_MEMBER, ml) == 0) {
			sigm = line + i;
			break;
		}
	if (sigm == NULL || n < 2 || line[n - 1] != '}' || line[n - 2] != '"') {
		r = KY_ERR_AUDIT_LINE;
		snprintf(why, whylen, "%s: checkpoint without a final sig member", where);
		goto out;
	}
	blen = (size_t)(line + n - 2 - (sigm + ml));
	/* line is not NUL-terminated: copy, do not strndup. */
	if ((b64 = malloc(blen + 1)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	memcpy(b64, sigm + ml, blen);
	b64[blen] = '\0';
	if (strchr(b64, '"') != NULL || ky_b64_decode(b64, &sig) != 0) {
		r = KY_ERR_AUDIT_LINE;
		snprintf(why, whylen, "%s: checkpoint sig is not base64", where);
		goto out;
	}
	if (inst == NULL || unit == NULL) {
		r = KY_ERR_AUDIT_LINE;
		snprintf(why, whylen, "%s: checkpoint without instance or unit", where);
		goto out;
	}
	if (v->pub == NULL) {
		r = KY_ERR_AUDIT_SIGNATURE;
		snprintf(why, whylen,
		         "%s: checkpoint before any identity certificate: give the unit's "
		         "certificate (--cert) or include the file's first line",
		         where);
		goto out;
	}
	if (v->instance[0] != '\0' &&
	    (strcmp(inst, v->instance) != 0 || strcmp(unit, v->unit) != 0)) {
		r = KY_ERR_AUDIT_CHAIN;
		snprintf(why, whylen,
		         "%s: checkpoint of unit %s of instance %s in the log of unit %s of "
		         "instance %s",
		         where, unit, inst, v->unit, v->instance);
		goto out;
	}
	if ((r = ky_buf_append(&msg, line, (size_t)(sigm - line))) != 0 ||
	    (r = ky_buf_append(&msg, "}", 1)) != 0)
		goto out;
	if (ky_verify(v->pub, msg.data, msg.len, sig.data, sig.len) != 0) {
		r = KY_ERR_AUDIT_SIGNATURE;
		snprintf(why, whylen,
		         "%s: checkpoint signature does not verify: this line or one before it "
		         "was edited, removed, inserted or moved",
		         where);
		goto out;
	}
	r = 0;
out:
	free(b64);
	ky_buf_free(&sig);
	ky_buf_free(&msg);
	return r;
}

int ky_audit_verify_line(struct ky_audit_verifier *v, const char *where, bool first_in_file,
                         const char *line, size_t n, char *why, size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	json_t *j = NULL, *jseq;
	const char *prev, *event, *tm;
	uint8_t prevb[KY_AUDIT_HASH_LEN];
	uint64_t seq;
	json_error_t e;

	why[0] = '\0';
	if (n > KY_AUDIT_LINE_MAX || memchr(line, '\0', n) != NULL ||
	    (j = json_loadb(line, n, JSON_REJECT_DUPLICATES, &e)) == NULL || !json_is_object(j)) {
		r = KY_ERR_AUDIT_LINE;
		snprintf(why, whylen, "%s: not a JSON object", where);
		goto out;
	}
	jseq = json_object_get(j, "seq");
	prev = json_string_value(json_object_get(j, "prev"));
	tm = json_string_value(json_object_get(j, "time"));
	event = json_string_value(json_object_get(j, "event"));
	if (!json_is_integer(jseq) || json_integer_value(jseq) < 1 || prev == NULL ||
	    !audit_hex64(prev) || tm == NULL || event == NULL ||
	    ky_hex_decode(prev, prevb, sizeof(prevb)) != 0) {
		r = KY_ERR_AUDIT_LINE;
		snprintf(why, whylen, "%s: lacks seq, prev (64 hex), time or event", where);
		goto out;
	}
	seq = (uint64_t)json_integer_value(jseq);
	if (v->any) {
		if (seq != v->seq + 1) {
			r = KY_ERR_AUDIT_CHAIN;
			snprintf(
			    why, whylen,
			    "%s: seq %llu follows seq %llu (%s): a line was removed, inserted or "
			    "moved here",
			    where, (unsigned long long)seq, (unsigned long long)v->seq, v->where);
			goto out;
		}
		if (CRYPTO_memcmp(prevb, v->hash, KY_AUDIT_HASH_LEN) != 0) {
			r = KY_ERR_AUDIT_CHAIN;
			snprintf(why, whylen,
			         "%s: prev is not the hash of the line before (%s, seq %llu): that "
			         "line was edited, or this one was put in its place",
			         where, v->where, (unsigned long long)v->seq);
			goto out;
		}
	} else {
		static const uint8_t zero[KY_AUDIT_HASH_LEN];
		if (seq == 1 && CRYPTO_memcmp(prevb, zero, KY_AUDIT_HASH_LEN) != 0) {
			r = KY_ERR_AUDIT_CHAIN;
			snprintf(why, whylen, "%s: seq 1 must have prev 0...0", where);
			goto out;
		}
		if (v->from_start && seq != 1) {
			r = KY_ERR_AUDIT_CHAIN;
			snprintf(why, whylen,
			         "%s: the log begins at seq %llu, not 1: its first lines or files "
			         "are missing",
			         where, (unsigned long long)seq);
			goto out;
		}
		v->sum.first_seq = seq;
		v->covered = seq - 1;
	}
	if (strcmp(event, "file") == 0) {
		if (!first_in_file) {
			r = KY_ERR_AUDIT_CHAIN;
			snprintf(why, whylen, "%s: a file line in the middle of a file", where);
			goto out;
		}
		if ((r = audit_file_cert(v, where, j, why, whylen)) != 0)
			goto out;
	} else if (strcmp(event, "checkpoint") == 0) {
		if ((r = audit_checkpoint(v, where, j, line, n, why, whylen)) != 0)
			goto out;
		v->covered = seq;
		v->sum.checkpoints++;
	}
	if (v->covered != seq && v->covered + 1 == seq)
		snprintf(v->first_uncovered, sizeof(v->first_uncovered), "%s", where);
	v->sum.clean_stop = strcmp(event, "checkpoint") == 0 && v->last_was_stop;
	v->last_was_stop = strcmp(event, "stop") == 0;
	if ((r = ky_audit_hash(line, n, v->hash)) != 0)
		goto out;
	v->seq = seq;
	v->any = true;
	snprintf(v->where, sizeof(v->where), "%s", where);
	v->sum.lines++;
	v->sum.last_seq = seq;
	r = 0;
out:
	json_decref(j);
	return r;
}

int ky_audit_verify_finish(struct ky_audit_verifier *v, char *why, size_t whylen)
{
	why[0] = '\0';
	if (!v->any) {
		snprintf(why, whylen, "no audit line");
		return KY_ERR_AUDIT_LINE;
	}
	if (v->covered != v->seq) {
		snprintf(why, whylen,
		         "%s to %s (seq %llu to %llu): no signed checkpoint follows these lines, "
		         "so they cannot be checked",
		         v->first_uncovered, v->where, (unsigned long long)(v->covered + 1),
		         (unsigned long long)v->seq);
		return KY_ERR_AUDIT_UNSIGNED;
	}
	return 0;
}

void ky_audit_verifier_summary(const struct ky_audit_verifier *v, struct ky_audit_summary *s)
{
	*s = v->sum;
}
