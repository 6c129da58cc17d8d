/* fuzz-seeds OUTDIR: writes a seed corpus for every fuzz target, OUTDIR/<target>/<n>, made
 * with the library itself as the tests make them: signed commands, unit state, key part and
 * signature key files, wrapped keys, records, tokens, bodies, config and instance files.
 * Keys and passwords are fresh each run (nothing secret is kept in the tree). */
#include <errno.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyok/audit.h"
#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "tests/fuzz/fuzz.h"
#include "unitd/token.h"

static const char *seeds_dir;

static void seeds_die(const char *what)
{
	fprintf(stderr, "fuzz-seeds: %s\n", what);
	exit(1);
}

static void seeds_put(const char *target, const void *p, size_t n)
{
	static unsigned counter;
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", seeds_dir, target);
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		seeds_die("cannot create a target directory");
	snprintf(path, sizeof(path), "%s/%s/seed-%03u", seeds_dir, target, counter++);
	if ((f = fopen(path, "wb")) == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0)
		seeds_die("cannot write a seed");
}

static void seeds_str(const char *target, const char *s)
{
	seeds_put(target, s, strlen(s));
}

/* One selector byte, then the text. */
static void seeds_sel(const char *target, uint8_t sel, const char *s)
{
	size_t n = strlen(s);
	uint8_t *p = malloc(n + 1);

	if (p == NULL)
		seeds_die("out of memory");
	p[0] = sel;
	memcpy(p + 1, s, n);
	seeds_put(target, p, n + 1);
	free(p);
}

static void seeds_file(const char *target, const char *path)
{
	struct ky_buf b = {0};

	if (ky_file_read(path, 1 << 20, &b) != 0)
		seeds_die("cannot read back a file");
	seeds_put(target, b.data, b.len);
	ky_buf_free(&b);
	unlink(path);
}

static void seeds_password(char out[33])
{
	uint8_t raw[16];

	if (ky_random(raw, sizeof(raw)) != 0)
		seeds_die("no randomness");
	ky_hex_encode(raw, sizeof(raw), out);
	OPENSSL_cleanse(raw, sizeof(raw));
}

/* An administrator: key and certificate. */
static void seeds_admin(const char *name, EVP_PKEY **key, X509 **cert)
{
	if (ky_ec_generate(key) != 0 ||
	    ky_cert_self_signed(*key, name, "kyok administration", 365, cert) != 0)
		seeds_die("cannot make an administrator key");
}

static void seeds_command(struct ky_command *c, struct ky_buf *json)
{
	if (ky_command_encode(c, json) != 0)
		seeds_die("cannot encode a command");
	seeds_put("command", json->data, json->len);
}

static void seeds_commands(struct ky_domain *d)
{
	EVP_PKEY *k1 = NULL, *k2 = NULL;
	X509 *c1 = NULL, *c2 = NULL;
	struct ky_buf json = {0}, der = {0}, env = {0};
	uint8_t part[KY_MK_LEN];
	json_t *res = NULL;
	char detail[256];
	struct ky_command *c;

	seeds_admin("alice", &k1, &c1);
	seeds_admin("bob", &k2, &c2);
	for (int op = 0; op <= KY_OP_LAST; op++) {
		if ((c = ky_command_new()) == NULL)
			seeds_die("out of memory");
		snprintf(c->instance, sizeof(c->instance), "%s", FUZZ_INSTANCE);
		snprintf(c->unit, sizeof(c->unit), "%s", "unit-1");
		memcpy(c->incarnation, d->incarnation, KY_INCARNATION_LEN);
		c->counter = 0;
		c->op = (enum ky_op)op;
		switch (c->op) {
		case KY_OP_ADMIN_ADD:
			c->cert = X509_dup(c1);
			break;
		case KY_OP_ADMIN_RM:
			if (ky_cert_ski(c2, c->ski) != 0)
				seeds_die("no ski");
			break;
		case KY_OP_THRESHOLDS_SET:
			c->sig = 2;
			c->rev = 1;
			break;
		case KY_OP_MK_LOAD:
			c->nparts = 2;
			for (size_t i = 0; i < 2; i++) {
				if (ky_random(part, sizeof(part)) != 0 ||
				    ky_envelope_seal(part, sizeof(part), c1, &env) != 0)
					seeds_die("cannot seal a part");
				c->parts[i] = env;
				memset(&env, 0, sizeof(env)); /* transferred */
			}
			break;
		case KY_OP_MK_EXPORT: /* the chain of a unit: importer, identity */
			c->nrecips = 1;
			c->recips[0] = X509_dup(d->importer_cert);
			c->recip_ids[0] = X509_dup(d->identity_cert);
			c->export_current = true;
			break;
		case KY_OP_MK_IMPORT:
			if (ky_random(part, sizeof(part)) != 0 ||
			    ky_envelope_seal(part, sizeof(part), c1, &c->envelope) != 0 ||
			    ky_buf_append(&c->source_sig, part, sizeof(part)) != 0)
				seeds_die("cannot seal a key");
			c->source = X509_dup(d->identity_cert);
			c->has_vp = true;
			break;
		case KY_OP_MK_COMMIT:
		case KY_OP_MK_SETIMM:
		case KY_OP_MK_REENCIPHER:
			c->has_vp = true;
			memset(c->vp, 0xa5, sizeof(c->vp));
			break;
		case KY_OP_APIKEY_CREATE:
			snprintf(c->apikey_id, sizeof(c->apikey_id), "%s", FUZZ_KEY_ID);
			snprintf(c->apikey_name, sizeof(c->apikey_name), "%s", "billing");
			snprintf(c->role, sizeof(c->role), "%s", "Writer");
			break;
		case KY_OP_APIKEY_REVOKE:
			snprintf(c->apikey_id, sizeof(c->apikey_id), "%s", FUZZ_KEY_ID);
			break;
		case KY_OP_EXIT_IMPRINT:
		case KY_OP_MK_CLRNEW:
		case KY_OP_MK_CLRCUR:
		case KY_OP_ZEROIZE:
		case KY_OP_STORAGE_ACCEPT:
		case KY_OP_MK_GENERATE:
			break;
		}
		seeds_command(c, &json);
		/* The same command as signed data: unsigned, one signer, two signers. */
		if (ky_cms_unsigned(json.data, json.len, &der) != 0)
			seeds_die("cannot make a SignedData");
		seeds_put("cms", der.data, der.len);
		if (op == KY_OP_ADMIN_ADD) /* imprint mode: the unit takes it unsigned */
			if (ky_ceremony_execute(d, der.data, der.len, &res, detail,
			                        sizeof(detail)) != 0)
				fprintf(stderr, "fuzz-seeds: note: admin-add not applied: %s\n",
				        detail);
		json_decref(res);
		res = NULL;
		if (ky_cms_add_signer(&der, c1, k1) != 0)
			seeds_die("cannot sign");
		seeds_put("cms", der.data, der.len);
		if (ky_cms_add_signer(&der, c2, k2) != 0)
			seeds_die("cannot sign");
		seeds_put("cms", der.data, der.len);
		ky_buf_free(&der);
		ky_buf_free(&json);
		ky_command_free(c);
	}
	OPENSSL_cleanse(part, sizeof(part));
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
	X509_free(c1);
	X509_free(c2);
}

static void seeds_domain(struct ky_domain *d)
{
	struct ky_buf b = {0};

	if (ky_domain_serialize(d, &b) != 0)
		seeds_die("cannot serialize a domain");
	seeds_put("domain", b.data, b.len);
	ky_buf_free(&b);
}

static void seeds_files(void)
{
	char path[4096], pw[33];
	uint8_t part[KY_MK_LEN];

	seeds_password(pw);
	snprintf(path, sizeof(path), "%s/tmp.sigkey", seeds_dir);
	if (ky_sigkey_create(path, "fuzz-admin", pw) != 0)
		seeds_die("cannot make a signature key file");
	seeds_file("sigkey", path);
	snprintf(path, sizeof(path), "%s/tmp.keypart", seeds_dir);
	if (ky_random(part, sizeof(part)) != 0 ||
	    ky_keypart_write(path, part, "fuzz part one", pw) != 0)
		seeds_die("cannot make a key part file");
	seeds_file("keypart", path);
	OPENSSL_cleanse(part, sizeof(part));
	OPENSSL_cleanse(pw, sizeof(pw));
}

/* TokenKeyPart parts (docs/formats.md, section 5): one to a fresh importer certificate, the
 * recipient left for the target to set to its own, and a version 2. */
static void seeds_tokenpart(void)
{
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	struct ky_buf der = {0};
	uint8_t part[KY_MK_LEN];

	if (ky_ec_generate(&key) != 0 ||
	    ky_cert_self_signed(key, "fuzz importer", "kyok unit", 365, &cert) != 0 ||
	    ky_random(part, sizeof(part)) != 0 || ky_token_part_seal(part, cert, &der) != 0)
		seeds_die("cannot make a token key part");
	seeds_put("tokenpart", der.data, der.len);
	if (der.len > 5 && der.data[5] == 0x01) {
		der.data[5] = 0x02;
		seeds_put("tokenpart", der.data, der.len);
	}
	OPENSSL_cleanse(part, sizeof(part));
	ky_buf_free(&der);
	EVP_PKEY_free(key);
	X509_free(cert);
}

static void seeds_kms(void)
{
	struct ky_key *k = NULL;
	uint8_t out[256 + KY_WRAP_OVERHEAD + 8], *rec = NULL;
	size_t outlen = 0, reclen = 0;
	const char aad[] = "\x02"
	                   "ab";

	if (fuzz_root_key(&k) != 0)
		seeds_die("cannot make the root key");
	/* the first byte: how many of the next bytes are associated data */
	for (int with_aad = 0; with_aad < 2; with_aad++) {
		size_t skip = with_aad ? 3 : 1;
		if (ky_kms_wrap(k, (const uint8_t *)"data key 32 bytes long, exactly!", 32,
		                (const uint8_t *)aad + 1, with_aad ? 2 : 0, out + skip,
		                sizeof(out) - skip, &outlen) != 0)
			seeds_die("cannot wrap");
		memcpy(out, with_aad ? aad : "\x00", skip);
		seeds_put("wrap", out, outlen + skip);
	}
	if (ky_kms_record_encode(k, &rec, &reclen) != 0)
		seeds_die("cannot encode a record");
	seeds_put("record", rec, reclen);
	ky_kms_buf_free(rec, reclen);
	ky_key_free(k);
}

static void seeds_token(void)
{
	struct token_claims c = {0};
	char tok[1024], bearer[1100];

	snprintf(c.sub, sizeof(c.sub), "%s", FUZZ_KEY_ID);
	snprintf(c.instance, sizeof(c.instance), "%s", FUZZ_INSTANCE);
	snprintf(c.role, sizeof(c.role), "%s", "Manager");
	snprintf(c.jti, sizeof(c.jti), "%s", "00112233445566778899aabbccddeeff");
	c.iat = 1700000000;
	c.exp = 1700003600;
	if (token_issue(fuzz_token_key, &c, tok, sizeof(tok)) != 0)
		seeds_die("cannot issue a token");
	seeds_sel("token", 2, tok);
	snprintf(bearer, sizeof(bearer), "Bearer %s", tok);
	seeds_sel("token", 1, bearer);
	seeds_sel("token", 0,
	          "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=kyok-"
	          "0123456789abcdef");
}

static void seeds_text(void)
{
	static const char *const query[] = {"200",
	                                    "",
	                                    "5000",
	                                    "true",
	                                    "false",
	                                    "1,2,3,5",
	                                    "2030-01-02T03:04:05Z",
	                                    "2030-01-02T03:04:05.123+01:00",
	                                    "return=minimal",
	                                    "return=representation",
	                                    FUZZ_KEY_ID};
	static const char *const bodies[][2] = {
	    {"\x00", "{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.key+json\","
	             "\"collectionTotal\":1},\"resources\":[{\"type\":\"application/vnd.ibm.kms."
	             "key+json\",\"name\":\"root\",\"description\":\"d\",\"extractable\":false,"
	             "\"expirationDate\":\"2031-01-01T00:00:00Z\"}]}"},
	    {"\x00",
	     "{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.key+json\","
	     "\"collectionTotal\":1},\"resources\":[{\"type\":\"application/vnd.ibm.kms."
	     "key+json\",\"name\":\"imp\",\"extractable\":true,\"payload\":\"AAECAwQ=\"}]}"},
	    {"\x01", "{\"plaintext\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\","
	             "\"aad\":[\"a\",\"b\"]}"},
	    {"\x01", "{\"ciphertext\":\"S1lXMQAAAAE=\"}"},
	    {"\x02", "{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\","
	             "\"collectionTotal\":1},\"resources\":[{\"type\":\"application/vnd.ibm.kms."
	             "policy+json\",\"rotation\":{\"interval_month\":3}}]}"},
	    {"\x03", "{\"metadata\":{\"collectionType\":\"application/vnd.ibm.kms.policy+json\","
	             "\"collectionTotal\":1},\"resources\":[{\"policy_type\":\"dualAuthDelete\","
	             "\"policy_data\":{\"enabled\":true}}]}"},
	    {"\x04", "{}"},
	};
	static const char *const configs[] = {
	    "# unit 1\ninstance = fuzz-instance\nunit = unit-1\nzone = zone-a\n"
	    "listen = 127.0.0.1:0\ndata_dir = /nonexistent/unit-1\nport_file = port\n"
	    "log_file = unit.log\nstore = sqlite:/nonexistent/keys.db\nkey_limit = 1000\n"
	    "token_ttl = 3600\nreencipher_batch = 500\nreencipher_pause_ms = 0\n"
	    "imprint_verifier = "
	    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
	    "instance=a\nunit=b\nzone=c\ndata_dir=d\napi_tls_cert = c.pem\napi_tls_key = k.pem\n",
	};
	static const char instance[] =
	    "{\"instance\": \"fuzz-instance\", \"units\": [{\"number\": 1, \"id\": \"unit-1\", "
	    "\"zone\": \"zone-a\", \"url\": \"http://127.0.0.1:40001\"}, {\"number\": 2, \"id\": "
	    "\"unit-2\", \"zone\": \"zone-b\", \"url\": \"http://127.0.0.1:40002\"}]}";

	for (size_t i = 0; i < sizeof(query) / sizeof(query[0]); i++)
		seeds_str("query", query[i]);
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
		seeds_sel("api_body", (uint8_t)bodies[i][0][0], bodies[i][1]);
	for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
		seeds_str("config", configs[i]);
	seeds_str("instance", instance);
}

/* An audit log as a unit writes it: file line with the certificate, lines, checkpoints. */
static void seeds_audit(void)
{
	EVP_PKEY *k = NULL;
	X509 *c = NULL;
	unsigned char *der = NULL;
	char *b64 = NULL;
	struct ky_audit_line l;
	struct ky_buf log = {0};
	uint8_t h[KY_AUDIT_HASH_LEN] = {0};
	static const char *const events[] = {"file", "start", "key-api",   "checkpoint",
	                                     "seal", "stop",  "checkpoint"};
	int n;

	if (ky_ec_generate(&k) != 0 ||
	    ky_cert_self_signed_issuer(k, "unit-1", FUZZ_INSTANCE, 30, &c) != 0 ||
	    (n = i2d_X509(c, &der)) <= 0 || ky_b64_encode(der, (size_t)n, &b64) != 0)
		seeds_die("cannot make an identity");
	for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
		ky_audit_begin(&l, i + 1, h, "2026-12-05T08:00:00.000Z", events[i]);
		ky_audit_add_str(&l, "instance", FUZZ_INSTANCE);
		ky_audit_add_str(&l, "unit", "unit-1");
		if (i == 0)
			ky_audit_add_str(&l, "cert", b64);
		if (ky_audit_end(&l) != 0 ||
		    (strcmp(events[i], "checkpoint") == 0 && ky_audit_sign(&l, k) != 0) ||
		    ky_audit_hash(l.s, l.len, h) != 0 || ky_buf_append(&log, l.s, l.len) != 0 ||
		    ky_buf_append(&log, "\n", 1) != 0)
			seeds_die("cannot make an audit log");
		seeds_put("audit", log.data, log.len);
	}
	OPENSSL_free(der);
	free(b64);
	X509_free(c);
	EVP_PKEY_free(k);
	ky_buf_free(&log);
}

/* ---- card: APDU sequences (fuzz_card.c: one length byte, then the APDU; 0 resets) ---- */

static void seeds_apdu(struct ky_buf *b, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
                       const void *data, size_t n)
{
	uint8_t head[6] = {(uint8_t)(4 + (n > 0 ? 1 + n : 0)), cla, ins, p1, p2, (uint8_t)n};

	if (n > 250 || ky_buf_append(b, head, n > 0 ? 6 : 5) != 0 ||
	    (n > 0 && ky_buf_append(b, data, n) != 0))
		seeds_die("cannot make a card seed");
}

/* fields: each a 2-byte big-endian length and its bytes */
static void seeds_field(struct ky_buf *b, const void *p, size_t n)
{
	uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};

	if (ky_buf_append(b, len, 2) != 0 || ky_buf_append(b, p, n) != 0)
		seeds_die("cannot make a card seed");
}

static void seeds_card(void)
{
	static const uint8_t aid[] = {0xF0, 0x6B, 0x79, 0x6F, 0x6B, 0x01};
	static const uint8_t reset = 0, get_response[] = {5, 0x00, 0xC0, 0x00, 0x00, 0x00};
	struct ky_buf s = {0}, f = {0};
	EVP_PKEY *pk = NULL;
	unsigned char *spki = NULL;
	int spkilen = 0;

	if (ky_ec_generate(&pk) != 0 || (spkilen = i2d_PUBKEY(pk, &spki)) <= 0)
		seeds_die("cannot make a card seed key");
	/* a CA card made, both PINs, a device key certified, the long answer read */
	seeds_apdu(&s, 0x00, 0xA4, 0x04, 0x00, aid, sizeof(aid));
	seeds_field(&f, "ca-pin-one", 10);
	seeds_field(&f, "ca-pin-two", 10);
	seeds_apdu(&s, 0x80, 0x10, 0, 0, f.data, f.len);
	seeds_apdu(&s, 0x00, 0x20, 0, 1, "ca-pin-one", 10);
	seeds_apdu(&s, 0x00, 0x20, 0, 2, "ca-pin-two", 10);
	seeds_apdu(&s, 0x80, 0x12, 0, 0, spki, (size_t)spkilen);
	if (ky_buf_append(&s, get_response, sizeof(get_response)) != 0 ||
	    ky_buf_append(&s, get_response, sizeof(get_response)) != 0)
		seeds_die("cannot make a card seed");
	seeds_put("card", s.data, s.len);
	ky_buf_free(&s);
	/* the same zone made by a chained command, then a wrong PIN, a reset */
	seeds_apdu(&s, 0x90, 0x10, 0, 0, f.data, 7);
	seeds_apdu(&s, 0x80, 0x10, 0, 0, f.data + 7, f.len - 7);
	seeds_apdu(&s, 0x00, 0x20, 0, 1, "wrong-pin", 9);
	if (ky_buf_append(&s, &reset, 1) != 0)
		seeds_die("cannot make a card seed");
	seeds_apdu(&s, 0x80, 0x1E, 0, 0, NULL, 0);
	seeds_put("card", s.data, s.len);
	ky_buf_free(&s);
	ky_buf_free(&f);
	/* a blank card: its device, a copy begun and fed, an enrolment, a part refused */
	seeds_apdu(&s, 0x80, 0x16, 0, 0, NULL, 0);
	seeds_apdu(&s, 0x80, 0x18, 0, 0, NULL, 0);
	seeds_field(&f, spki, 40);
	seeds_field(&f, "sealed", 6);
	seeds_field(&f, "backup-pin-1", 12);
	seeds_field(&f, "backup-pin-2", 12);
	seeds_apdu(&s, 0x80, 0x1C, 0, 0, f.data, f.len);
	seeds_apdu(&s, 0x80, 0x14, 0, 0, f.data, f.len);
	seeds_apdu(&s, 0x80, 0x40, 0, 0, "part", 4);
	seeds_apdu(&s, 0x80, 0x42, 0, 0, NULL, 0);
	seeds_put("card", s.data, s.len);
	ky_buf_free(&s);
	ky_buf_free(&f);
	OPENSSL_free(spki);
	EVP_PKEY_free(pk);
}

/* A command bundle as a workstation writes it: a header, two blocks with their comments. */
static void seeds_bundle(void)
{
	struct ky_buf der = {0}, text = {0};
	BIO *bio = NULL;
	char *pem = NULL;
	long n;

	if (ky_cms_unsigned("{\"op\":\"x\"}", 10, &der) != 0 ||
	    (bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio(bio, "CMS", "", der.data, (long)der.len) <= 0 ||
	    (n = BIO_get_mem_data(bio, &pem)) <= 0)
		seeds_die("cannot make a bundle seed");
	if (ky_buf_append_str(&text, "# kyok command bundle\n") != 0)
		seeds_die("out of memory");
	for (int i = 0; i < 2; i++)
		if (ky_buf_append_str(&text, "\n# kyok command: x unit 1\n# signers: none yet\n") !=
		        0 ||
		    ky_buf_append(&text, pem, (size_t)n) != 0)
			seeds_die("out of memory");
	seeds_put("bundle", text.data, text.len);
	seeds_str("bundle", "-----BEGIN CMS-----\nAAAA\n-----END CMS-----\n");
	BIO_free(bio);
	ky_buf_free(&text);
	ky_buf_free(&der);
}

int main(int argc, char **argv)
{
	struct ky_domain *d = NULL;

	if (argc != 2) {
		fprintf(stderr, "usage: fuzz-seeds OUTDIR\n");
		return 2;
	}
	seeds_dir = argv[1];
	if (mkdir(seeds_dir, 0700) != 0 && errno != EEXIST)
		seeds_die("cannot create OUTDIR");
	if (ky_crypto_init() != 0)
		seeds_die("cannot start the crypto library");
	if (ky_domain_new(FUZZ_INSTANCE, "unit-1", "zone-a", &d) != 0)
		seeds_die("cannot make a unit state");
	seeds_domain(d);
	seeds_commands(d);
	seeds_domain(d);
	ky_domain_free(d);
	seeds_files();
	seeds_tokenpart();
	seeds_kms();
	seeds_token();
	seeds_text();
	seeds_audit();
	seeds_card();
	seeds_bundle();
	printf("fuzz-seeds: seeds written to %s\n", seeds_dir);
	return 0;
}
