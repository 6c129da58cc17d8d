/* Ceremony rules: every rule and every refusal, with real keys, real signed commands and
 * real envelopes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <openssl/cms.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/ceremony.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
/* White-box: the master key bytes are compared where they live. */
#include "lib/ceremony/internal.h"

#define INSTANCE "inst-test"
#define UNIT     "unit-a"
#define UNIT_B   "unit-b"
#define INC      "00112233445566778899aabbccddeeff" /* an incarnation, in parser tests */

enum { ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GRACE, HEIDI, IVAN, NADMINS };
static const char *const admin_names[NADMINS] = {"alice", "bob",   "carol", "dave", "erin",
                                                 "frank", "grace", "heidi", "ivan"};

struct admin {
	EVP_PKEY *key;
	X509 *cert;
	uint8_t ski[KY_SKI_LEN];
};
static struct admin admins[NADMINS];
static char detail[512];
/* The unit trust anchor of INSTANCE, and the anchor of another instance. */
#define OTHER_INSTANCE "inst-other"
static EVP_PKEY *anchor_key, *other_anchor_key;
static X509 *anchor, *other_anchor;

/* Signer lists end with -1. */
#define SIGNED_BY(...) ((const int[]){__VA_ARGS__, -1})
#define UNSIGNED       ((const int[]){-1})

/* ---- fixture ---- */

static int group_setup(void **state)
{
	(void)state;
	if (ky_crypto_init() != 0)
		return -1;
	for (int i = 0; i < NADMINS; i++) {
		if (ky_ec_generate(&admins[i].key) != 0 ||
		    ky_cert_self_signed(admins[i].key, admin_names[i], "kyok administration", 30,
		                        &admins[i].cert) != 0 ||
		    ky_cert_ski(admins[i].cert, admins[i].ski) != 0)
			return -1;
	}
	if (ky_ec_generate(&anchor_key) != 0 ||
	    ky_cert_anchor_self_signed(anchor_key, "kyok unit anchor", INSTANCE, 30, &anchor) !=
	        0 ||
	    ky_ec_generate(&other_anchor_key) != 0 ||
	    ky_cert_anchor_self_signed(other_anchor_key, "kyok unit anchor", OTHER_INSTANCE, 30,
	                               &other_anchor) != 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < NADMINS; i++) {
		EVP_PKEY_free(admins[i].key);
		X509_free(admins[i].cert);
	}
	EVP_PKEY_free(anchor_key);
	EVP_PKEY_free(other_anchor_key);
	X509_free(anchor);
	X509_free(other_anchor);
	return 0;
}

/* ---- helpers ---- */

/* A unit of instance whose identity the anchor (cert, key) certified. */
static struct ky_domain *certified(const char *instance, const char *unit, X509 *a, EVP_PKEY *ak)
{
	struct ky_domain *d = NULL;
	EVP_PKEY *k = NULL;
	X509 *id = NULL;
	assert_int_equal(ky_ec_generate(&k), 0);
	assert_int_equal(ky_cert_issue_identity(k, unit, instance, a, ak, 30, &id), 0);
	assert_int_equal(ky_domain_new_certified(instance, unit, "zone-1", k, id, a, &d), 0);
	EVP_PKEY_free(k);
	X509_free(id);
	return d;
}

/* Units of one instance share its anchor: they can pass the master key to each other. */
static struct ky_domain *domain(const char *unit)
{
	return certified(INSTANCE, unit, anchor, anchor_key);
}

static struct ky_command *cmd(const struct ky_domain *d, enum ky_op op)
{
	struct ky_command *c = ky_command_new();
	assert_non_null(c);
	strcpy(c->instance, d->instance);
	strcpy(c->unit, d->unit);
	memcpy(c->incarnation, d->incarnation, KY_INCARNATION_LEN);
	c->counter = d->next_counter;
	c->op = op;
	return c;
}

static struct ky_command *cmd_admin_add(const struct ky_domain *d, X509 *cert)
{
	struct ky_command *c = cmd(d, KY_OP_ADMIN_ADD);
	X509_up_ref(cert);
	c->cert = cert;
	return c;
}

static struct ky_command *cmd_admin_rm(const struct ky_domain *d, int who)
{
	struct ky_command *c = cmd(d, KY_OP_ADMIN_RM);
	memcpy(c->ski, admins[who].ski, KY_SKI_LEN);
	return c;
}

static struct ky_command *cmd_thresholds(const struct ky_domain *d, int sig, int rev)
{
	struct ky_command *c = cmd(d, KY_OP_THRESHOLDS_SET);
	c->sig = sig;
	c->rev = rev;
	return c;
}

static struct ky_command *cmd_vp(const struct ky_domain *d, enum ky_op op, const uint8_t *vp)
{
	struct ky_command *c = cmd(d, op);
	if (vp != NULL) {
		c->has_vp = true;
		memcpy(c->vp, vp, KY_VP_LEN);
	}
	return c;
}

static void envelope_to(X509 *recip, const uint8_t secret[KY_MK_LEN], struct ky_buf *out)
{
	assert_int_equal(ky_envelope_seal(secret, KY_MK_LEN, recip, out), 0);
}

/* mk-load of nparts parts (each its own envelope to d's importer). */
static struct ky_command *cmd_load(const struct ky_domain *d, uint8_t parts[][KY_MK_LEN],
                                   size_t nparts, const uint8_t *vp)
{
	struct ky_command *c = cmd_vp(d, KY_OP_MK_LOAD, vp);
	for (size_t i = 0; i < nparts; i++)
		envelope_to(d->importer_cert, parts[i], &c->parts[i]);
	c->nparts = nparts;
	return c;
}

/* mk-import of env, sent by unit from with its transfer signature sig. */
static struct ky_command *cmd_import(const struct ky_domain *d, const struct ky_domain *from,
                                     const struct ky_buf *env, const struct ky_buf *sig,
                                     const uint8_t *vp)
{
	struct ky_command *c = cmd_vp(d, KY_OP_MK_IMPORT, vp);
	assert_int_equal(ky_buf_append(&c->envelope, env->data, env->len), 0);
	assert_int_equal(ky_buf_append(&c->source_sig, sig->data, sig->len), 0);
	X509_up_ref(from->identity_cert);
	c->source = from->identity_cert;
	return c;
}

/* mk-export to the chain importer -> identity. */
static struct ky_command *cmd_export_chain(const struct ky_domain *d, X509 *importer,
                                           X509 *identity)
{
	struct ky_command *c = cmd(d, KY_OP_MK_EXPORT);
	X509_up_ref(importer);
	X509_up_ref(identity);
	c->recips[0] = importer;
	c->recip_ids[0] = identity;
	c->nrecips = 1;
	return c;
}

/* mk-export to unit to. */
static struct ky_command *cmd_export(const struct ky_domain *d, const struct ky_domain *to)
{
	return cmd_export_chain(d, to->importer_cert, to->identity_cert);
}

/* Envelope and signature number i of an mk-export result. */
static void export_result(json_t *res, size_t i, struct ky_buf *env, struct ky_buf *sig)
{
	json_t *envs = json_object_get(res, "envelopes"),
	       *sigs = json_object_get(res, "signatures");
	assert_int_equal(ky_b64_decode(json_string_value(json_array_get(envs, i)), env), 0);
	assert_int_equal(ky_b64_decode(json_string_value(json_array_get(sigs, i)), sig), 0);
}

/* Encodes c and signs it with the admins listed; frees c. */
static void sign(struct ky_command *c, const int *who, struct ky_buf *der)
{
	struct ky_buf json = {0};

	assert_int_equal(ky_command_encode(c, &json), 0);
	assert_int_equal(ky_cms_unsigned(json.data, json.len, der), 0);
	for (size_t i = 0; who[i] >= 0; i++)
		assert_int_equal(ky_cms_add_signer(der, admins[who[i]].cert, admins[who[i]].key),
		                 0);
	ky_buf_free(&json);
	ky_command_free(c);
}

/* Runs a signed command as the daemon does: on a copy, kept only when it succeeds. */
static int run_der(struct ky_domain **d, const struct ky_buf *der, json_t **result)
{
	struct ky_domain *copy = NULL;
	json_t *res = NULL;
	uint64_t before = (*d)->next_counter;
	int r;

	assert_int_equal(ky_domain_dup(*d, &copy), 0);
	memset(detail, 'x', sizeof(detail));
	r = ky_ceremony_execute(copy, der->data, der->len, &res, detail, sizeof(detail));
	assert_non_null(memchr(detail, '\0', sizeof(detail)));
	if (r == 0) {
		assert_non_null(res);
		assert_string_equal(detail, "");
		assert_int_equal(copy->next_counter, before + 1);
		ky_domain_free(*d);
		*d = copy;
	} else {
		assert_null(res);
		assert_true(strlen(detail) > 0);
		ky_domain_free(copy);
	}
	if (result != NULL)
		*result = res;
	else
		json_decref(res);
	return r;
}

/* Signs c (freed) with who and runs it on *d. */
static int run(struct ky_domain **d, struct ky_command *c, const int *who, json_t **result)
{
	struct ky_buf der = {0};
	int r;

	sign(c, who, &der);
	r = run_der(d, &der, result);
	ky_buf_free(&der);
	return r;
}

static void detail_has(const char *want)
{
	if (strstr(detail, want) == NULL)
		fail_msg("detail \"%s\" lacks \"%s\"", detail, want);
}

/* A unit out of imprint mode with alice, bob and carol, thresholds 2 and 2. */
static struct ky_domain *operational(const char *unit)
{
	struct ky_domain *d = domain(unit);
	for (int i = ALICE; i <= CAROL; i++)
		assert_int_equal(run(&d, cmd_admin_add(d, admins[i].cert), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd_thresholds(d, 2, 2), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(d->sig_threshold, 2);
	return d;
}

static void random_parts(uint8_t parts[][KY_MK_LEN], size_t n, uint8_t key[KY_MK_LEN],
                         uint8_t vp[KY_VP_LEN])
{
	memset(key, 0, KY_MK_LEN);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ky_random(parts[i], KY_MK_LEN), 0);
		for (size_t j = 0; j < KY_MK_LEN; j++)
			key[j] ^= parts[i][j];
	}
	assert_int_equal(ky_vp(key, vp), 0);
}

/* Loads, commits and sets a random key: current VALID, new EMPTY. */
static void make_current(struct ky_domain **d, uint8_t vp[KY_VP_LEN])
{
	uint8_t parts[2][KY_MK_LEN], key[KY_MK_LEN];

	random_parts(parts, 2, key, vp);
	assert_int_equal(run(d, cmd_load(*d, parts, 2, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(d, cmd_vp(*d, KY_OP_MK_COMMIT, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(d, cmd_vp(*d, KY_OP_MK_SETIMM, vp), SIGNED_BY(ALICE), NULL), 0);
	assert_int_equal((*d)->cur_state, KY_CUR_VALID);
}

static void vp_hex(const uint8_t vp[KY_VP_LEN], char out[2 * KY_VP_LEN + 1])
{
	ky_hex_encode(vp, KY_VP_LEN, out);
}

/* ---- names ---- */

static void t_names(void **state)
{
	(void)state;
	enum ky_op op;
	for (int i = KY_OP_ADMIN_ADD; i <= KY_OP_LAST; i++) {
		assert_int_equal(ky_op_from_name(ky_op_name((enum ky_op)i), &op), 0);
		assert_int_equal(op, i);
	}
	assert_string_equal(ky_op_name(KY_OP_THRESHOLDS_SET), "thresholds-set");
	assert_string_equal(ky_op_name(KY_OP_MK_SETIMM), "mk-setimm");
	assert_int_equal(ky_op_from_name("mk-rotate", &op), KY_ERR_NOT_COMMAND_OP);
	assert_int_equal(ky_op_from_name("", &op), KY_ERR_NOT_COMMAND_OP);
	assert_string_equal(ky_new_state_name(KY_NEW_EMPTY), "EMPTY");
	assert_string_equal(ky_new_state_name(KY_NEW_UNCOMMITTED), "FULL UNCOMMITTED");
	assert_string_equal(ky_new_state_name(KY_NEW_COMMITTED), "FULL COMMITTED");
	assert_string_equal(ky_cur_state_name(KY_CUR_EMPTY), "EMPTY");
	assert_string_equal(ky_cur_state_name(KY_CUR_VALID), "VALID");
}

/* ---- command parser and encoder ---- */

static void roundtrip(struct ky_command *c)
{
	struct ky_buf a = {0}, b = {0};
	struct ky_command *p = NULL;

	assert_int_equal(ky_command_encode(c, &a), 0);
	assert_int_equal(ky_command_parse(a.data, a.len, &p), 0);
	assert_string_equal(p->instance, c->instance);
	assert_string_equal(p->unit, c->unit);
	assert_memory_equal(p->incarnation, c->incarnation, KY_INCARNATION_LEN);
	assert_true(p->counter == c->counter);
	assert_int_equal(p->op, c->op);
	assert_int_equal(p->has_vp, c->has_vp);
	if (c->has_vp)
		assert_memory_equal(p->vp, c->vp, KY_VP_LEN);
	assert_int_equal(p->nparts, c->nparts);
	for (size_t i = 0; i < c->nparts; i++) {
		assert_int_equal(p->parts[i].len, c->parts[i].len);
		assert_memory_equal(p->parts[i].data, c->parts[i].data, c->parts[i].len);
	}
	assert_int_equal(p->nrecips, c->nrecips);
	for (size_t i = 0; i < c->nrecips; i++) {
		assert_int_equal(X509_cmp(p->recips[i], c->recips[i]), 0);
		assert_int_equal(X509_cmp(p->recip_ids[i], c->recip_ids[i]), 0);
	}
	assert_int_equal(p->export_current, c->export_current);
	assert_int_equal(p->envelope.len, c->envelope.len);
	assert_int_equal(p->source_sig.len, c->source_sig.len);
	if (c->source != NULL)
		assert_int_equal(X509_cmp(p->source, c->source), 0);
	if (c->cert != NULL)
		assert_int_equal(X509_cmp(p->cert, c->cert), 0);
	assert_memory_equal(p->ski, c->ski, KY_SKI_LEN);
	assert_int_equal(p->sig, c->sig);
	assert_int_equal(p->rev, c->rev);
	/* and the parsed command encodes to the same bytes */
	assert_int_equal(ky_command_encode(p, &b), 0);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);
	ky_buf_free(&a);
	ky_buf_free(&b);
	ky_command_free(p);
	ky_command_free(c);
}

static void t_command_roundtrip(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	uint8_t parts[3][KY_MK_LEN], key[KY_MK_LEN], vp[KY_VP_LEN];
	struct ky_command *c;

	random_parts(parts, 3, key, vp);
	d->next_counter = 123456789012ULL;
	roundtrip(cmd_admin_add(d, admins[ALICE].cert));
	roundtrip(cmd_admin_rm(d, BOB));
	roundtrip(cmd_thresholds(d, 3, 2));
	roundtrip(cmd_thresholds(d, 0, 9)); /* out of range is the rule's business */
	roundtrip(cmd(d, KY_OP_EXIT_IMPRINT));
	roundtrip(cmd_load(d, parts, 3, vp));
	roundtrip(cmd_load(d, parts, 2, NULL));
	roundtrip(cmd_vp(d, KY_OP_MK_COMMIT, vp));
	roundtrip(cmd_vp(d, KY_OP_MK_SETIMM, vp));
	roundtrip(cmd_vp(d, KY_OP_MK_SETIMM, NULL));
	roundtrip(cmd(d, KY_OP_MK_CLRNEW));
	roundtrip(cmd(d, KY_OP_MK_CLRCUR));
	roundtrip(cmd(d, KY_OP_ZEROIZE));
	roundtrip(cmd(d, KY_OP_MK_GENERATE));
	c = cmd_export(d, d);
	X509_up_ref(admins[BOB].cert);
	c->recips[1] = admins[BOB].cert;
	X509_up_ref(admins[CAROL].cert);
	c->recip_ids[1] = admins[CAROL].cert;
	c->nrecips = 2;
	roundtrip(c);
	c = cmd_export(d, d);
	c->export_current = true;
	roundtrip(c);
	c = cmd(d, KY_OP_MK_IMPORT);
	envelope_to(d->importer_cert, key, &c->envelope);
	c->has_vp = true;
	memcpy(c->vp, vp, KY_VP_LEN);
	X509_up_ref(d->identity_cert);
	c->source = d->identity_cert;
	assert_int_equal(ky_buf_append(&c->source_sig, "sig", 3), 0);
	roundtrip(c);

	/* what the encoder refuses, it would not parse either */
	struct ky_buf out = {0};
	c = cmd_vp(d, KY_OP_MK_COMMIT, NULL);
	assert_int_equal(ky_command_encode(c, &out), KY_ERR_BAD_COMMAND);
	ky_command_free(c);
	c = cmd(d, KY_OP_ZEROIZE);
	c->unit[0] = '\0';
	assert_int_equal(ky_command_encode(c, &out), KY_ERR_BAD_COMMAND);
	ky_command_free(c);
	c = cmd(d, KY_OP_ZEROIZE);
	c->counter = UINT64_MAX; /* JSON integers stop at 2^63-1 */
	assert_int_equal(ky_command_encode(c, &out), KY_ERR_BAD_COMMAND);
	ky_command_free(c);
	c = cmd(d, KY_OP_MK_EXPORT);
	assert_int_equal(ky_command_encode(c, &out), KY_ERR_BAD_COMMAND);
	ky_command_free(c);
	c = cmd_export(d, d); /* a recipient without its identity */
	X509_free(c->recip_ids[0]);
	c->recip_ids[0] = NULL;
	assert_int_equal(ky_command_encode(c, &out), KY_ERR_BAD_COMMAND);
	ky_command_free(c);
	c = cmd(d, KY_OP_MK_IMPORT); /* an import without its sender */
	envelope_to(d->importer_cert, key, &c->envelope);
	c->has_vp = true;
	assert_int_equal(ky_command_encode(c, &out), KY_ERR_BAD_COMMAND);
	ky_command_free(c);
	assert_int_equal(out.len, 0);
	ky_domain_free(d);
}

struct parse_case {
	const char *fields; /* spliced after the common fields */
	int want;
};

static int parse_json(const char *json)
{
	struct ky_command *c = NULL;
	int r = ky_command_parse((const uint8_t *)json, strlen(json), &c);
	if (r == 0)
		assert_non_null(c);
	else
		assert_null(c);
	ky_command_free(c);
	return r;
}

static void t_command_parse_refusals(void **state)
{
	(void)state;
	char buf[16384], hex64[65], hex63[64], id65[66], id64[65];
	char *pem = NULL;

	memset(hex64, 'a', 64);
	hex64[64] = '\0';
	memset(hex63, 'a', 63);
	hex63[63] = '\0';
	memset(id65, 'i', 65);
	id65[65] = '\0';
	memset(id64, 'i', 64);
	id64[64] = '\0';
	assert_int_equal(ky_cert_to_pem(admins[ALICE].cert, &pem), 0);
	json_t *pemj = json_string(pem);
	char *pem_json = json_dumps(pemj, JSON_ENCODE_ANY);
	json_decref(pemj);
	free(pem);

#define HEAD                                                                                      \
	"{\"kyok\":\"admin-command-v1\",\"instance\":\"i\",\"unit\":\"u\",\"incarnation\":\"" INC \
	"\",\"counter\":0,"
	/* accepted */
	assert_int_equal(parse_json(HEAD "\"op\":\"zeroize\"}"), 0);
	snprintf(buf, sizeof(buf),
	         "{\"kyok\":\"admin-command-v1\",\"instance\":\"%s\",\"unit\":\"u\","
	         "\"incarnation\":\"" INC "\",\"counter\":9223372036854775807,\"op\":\"zeroize\"}",
	         id64);
	assert_int_equal(parse_json(buf), 0);
	snprintf(buf, sizeof(buf), HEAD "\"op\":\"admin-add\",\"cert\":%s}", pem_json);
	assert_int_equal(parse_json(buf), 0);

	/* form */
	assert_int_equal(parse_json("not json"), KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json("[1,2]"), KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json(HEAD "\"op\":\"zeroize\"} trailing"), KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json("{\"instance\":\"i\",\"unit\":\"u\",\"incarnation\":\"" INC
	                            "\",\"counter\":0,"
	                            "\"op\":\"zeroize\"}"),
	                 KY_ERR_NOT_COMMAND);
	assert_int_equal(parse_json("{\"kyok\":\"admin-command-v2\",\"instance\":\"i\","
	                            "\"unit\":\"u\",\"incarnation\":\"" INC
	                            "\",\"counter\":0,\"op\":\"zeroize\"}"),
	                 KY_ERR_NOT_COMMAND);
	assert_int_equal(parse_json("{\"kyok\":1,\"instance\":\"i\",\"unit\":\"u\","
	                            "\"incarnation\":\"" INC
	                            "\",\"counter\":0,\"op\":\"zeroize\"}"),
	                 KY_ERR_NOT_COMMAND);
	assert_int_equal(parse_json(HEAD "\"op\":\"mk-rotate\"}"), KY_ERR_NOT_COMMAND_OP);
	assert_int_equal(parse_json(HEAD "\"op\":7}"), KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json(HEAD "\"x\":1}"), KY_ERR_BAD_COMMAND); /* no op */
	assert_int_equal(parse_json(HEAD "\"op\":\"zeroize\",\"x\":1}"), KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json(HEAD "\"op\":\"zeroize\",\"vp\":\"00\"}"), KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json(HEAD "\"op\":\"zeroize\",\"op\":\"zeroize\"}"),
	                 KY_ERR_BAD_COMMAND);

	/* ids and counter */
	assert_int_equal(parse_json("{\"kyok\":\"admin-command-v1\",\"instance\":\"\","
	                            "\"unit\":\"u\",\"incarnation\":\"" INC
	                            "\",\"counter\":0,\"op\":\"zeroize\"}"),
	                 KY_ERR_BAD_COMMAND);
	snprintf(buf, sizeof(buf),
	         "{\"kyok\":\"admin-command-v1\",\"instance\":\"%s\",\"unit\":\"u\","
	         "\"incarnation\":\"" INC "\",\"counter\":0,\"op\":\"zeroize\"}",
	         id65);
	assert_int_equal(parse_json(buf), KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json("{\"kyok\":\"admin-command-v1\",\"instance\":\"i\","
	                            "\"unit\":\"u\\u0000v\",\"incarnation\":\"" INC
	                            "\",\"counter\":0,\"op\":\"zeroize\"}"),
	                 KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json("{\"kyok\":\"admin-command-v1\",\"instance\":\"i\","
	                            "\"unit\":\"u\\nv\",\"incarnation\":\"" INC
	                            "\",\"counter\":0,\"op\":\"zeroize\"}"),
	                 KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json("{\"kyok\":\"admin-command-v1\",\"instance\":\"i\","
	                            "\"incarnation\":\"" INC
	                            "\",\"counter\":0,\"op\":\"zeroize\"}"),
	                 KY_ERR_BAD_COMMAND);
	assert_int_equal(parse_json("{\"kyok\":\"admin-command-v1\",\"instance\":\"i\","
	                            "\"unit\":5,\"incarnation\":\"" INC
	                            "\",\"counter\":0,\"op\":\"zeroize\"}"),
	                 KY_ERR_BAD_COMMAND);
	static const char *const counters[] = {"-1",   "\"1\"", "1.0",
	                                       "null", "true",  "18446744073709551616"};
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		snprintf(buf, sizeof(buf),
		         "{\"kyok\":\"admin-command-v1\",\"instance\":\"i\",\"unit\":\"u\","
		         "\"incarnation\":\"" INC "\",\"counter\":%s,\"op\":\"zeroize\"}",
		         counters[i]);
		assert_int_equal(parse_json(buf), KY_ERR_BAD_COMMAND);
	}
	assert_int_equal(parse_json("{\"kyok\":\"admin-command-v1\",\"instance\":\"i\","
	                            "\"unit\":\"u\",\"op\":\"zeroize\"}"),
	                 KY_ERR_BAD_COMMAND);

	/* incarnation: required, exactly 32 hex digits */
	static const char *const incs[] = {
	    "\"" INC "00\"", "\"0011\"", "\"\"", "\"zz112233445566778899aabbccddeeff\"", "17",
	    "null"};
	for (size_t i = 0; i < sizeof(incs) / sizeof(incs[0]); i++) {
		snprintf(buf, sizeof(buf),
		         "{\"kyok\":\"admin-command-v1\",\"instance\":\"i\",\"unit\":\"u\","
		         "\"incarnation\":%s,\"counter\":0,\"op\":\"zeroize\"}",
		         incs[i]);
		assert_int_equal(parse_json(buf), KY_ERR_BAD_COMMAND);
	}
	assert_int_equal(parse_json("{\"kyok\":\"admin-command-v1\",\"instance\":\"i\","
	                            "\"unit\":\"u\",\"counter\":0,\"op\":\"zeroize\"}"),
	                 KY_ERR_BAD_COMMAND);

	/* op fields */
	const struct parse_case cases[] = {
	    {"\"op\":\"admin-add\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"admin-add\",\"cert\":\"not a certificate\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"admin-add\",\"cert\":3}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"admin-rm\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"admin-rm\",\"ski\":\"HEX63\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"admin-rm\",\"ski\":\"HEX64z\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"admin-rm\",\"ski\":\"HEX64\"}", 0},
	    {"\"op\":\"admin-rm\",\"ski\":\"HEX64\",\"cert\":\"x\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"thresholds-set\",\"signature\":2}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"thresholds-set\",\"signature\":\"2\",\"revocation\":2}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"thresholds-set\",\"signature\":2.5,\"revocation\":2}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"thresholds-set\",\"signature\":10000000000,\"revocation\":2}",
	     KY_ERR_THRESHOLD_RANGE},
	    {"\"op\":\"thresholds-set\",\"signature\":0,\"revocation\":9}", 0},
	    {"\"op\":\"exit-imprint\",\"signature\":1}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-load\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-load\",\"parts\":\"AAAA\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-load\",\"parts\":[\"!!!!\"]}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-load\",\"parts\":[\"\"]}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-load\",\"parts\":[1]}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-load\",\"parts\":[\"AAAA\",\"AAAA\"]}", 0},
	    {"\"op\":\"mk-load\",\"parts\":[\"AAAA\",\"AAAA\"],\"vp\":\"HEX64\"}", 0},
	    {"\"op\":\"mk-load\",\"parts\":[\"AAAA\",\"AAAA\"],\"vp\":\"HEX63\"}",
	     KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-load\",\"parts\":[\"AAAA\",\"AAAA\"],\"vp\":null}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-load\",\"parts\":[\"AAAA\",\"AAAA\",\"AAAA\",\"AAAA\",\"AAAA\","
	     "\"AAAA\",\"AAAA\",\"AAAA\",\"AAAA\"]}",
	     KY_ERR_KEY_PARTS},
	    {"\"op\":\"mk-commit\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-commit\",\"vp\":\"HEX64\"}", 0},
	    {"\"op\":\"mk-setimm\"}", 0},
	    {"\"op\":\"mk-setimm\",\"vp\":\"xyz\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-export\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-export\",\"recipients\":[]}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-export\",\"recipients\":[\"nope\"]}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-export\",\"recipients\":[PEM]}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-export\",\"recipients\":[{\"importer\":PEM}]}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-export\",\"recipients\":[{\"importer\":PEM,\"identity\":\"x\"}]}",
	     KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-export\",\"recipients\":[{\"importer\":PEM,\"identity\":PEM,"
	     "\"x\":1}]}",
	     KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-export\",\"recipients\":[{\"importer\":PEM,\"identity\":PEM}]}", 0},
	    {"\"op\":\"mk-export\",\"recipients\":[{\"importer\":PEM,\"identity\":PEM}],"
	     "\"register\":\"current\"}",
	     0},
	    {"\"op\":\"mk-export\",\"recipients\":[{\"importer\":PEM,\"identity\":PEM}],"
	     "\"register\":\"old\"}",
	     KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-export\",\"recipients\":[PEM,PEM,PEM,PEM,PEM,PEM,PEM,PEM,PEM]}",
	     KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-import\",\"vp\":\"HEX64\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-import\",\"envelope\":\"AAAA\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-import\",\"envelope\":\"AA=A\",\"vp\":\"HEX64\",\"source\":PEM,"
	     "\"signature\":\"AAAA\"}",
	     KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-import\",\"envelope\":\"AAAA\",\"vp\":\"HEX64\"}", KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-import\",\"envelope\":\"AAAA\",\"vp\":\"HEX64\",\"source\":PEM}",
	     KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-import\",\"envelope\":\"AAAA\",\"vp\":\"HEX64\",\"source\":\"x\","
	     "\"signature\":\"AAAA\"}",
	     KY_ERR_BAD_COMMAND},
	    {"\"op\":\"mk-import\",\"envelope\":\"AAAA\",\"vp\":\"HEX64\",\"source\":PEM,"
	     "\"signature\":\"AAAA\"}",
	     0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* expand HEX64, HEX63, PEM */
		char fields[8192] = "";
		const char *s = cases[i].fields;
		while (*s != '\0') {
			if (strncmp(s, "HEX64", 5) == 0) {
				strcat(fields, hex64);
				s += 5;
			} else if (strncmp(s, "HEX63", 5) == 0) {
				strcat(fields, hex63);
				s += 5;
			} else if (strncmp(s, "PEM", 3) == 0) {
				strcat(fields, pem_json);
				s += 3;
			} else {
				strncat(fields, s, 1);
				s++;
			}
		}
		snprintf(buf, sizeof(buf), HEAD "%s", fields);
		if (parse_json(buf) != cases[i].want)
			fail_msg("case %zu (%s): want %d, got %d", i, cases[i].fields,
			         cases[i].want, parse_json(buf));
	}
#undef HEAD
	free(pem_json);
}

/* ---- domain ---- */

static void t_domain_new(void **state)
{
	(void)state;
	struct ky_domain *d = NULL;
	char cn[KY_ID_MAX + 1], id65[66], id64[65];

	assert_int_equal(ky_domain_new(INSTANCE, "", "z", &d), KY_ERR_USAGE);
	assert_null(d);
	assert_int_equal(ky_domain_new("", UNIT, "z", &d), KY_ERR_USAGE);
	memset(id65, 'u', 65);
	id65[65] = '\0';
	assert_int_equal(ky_domain_new(INSTANCE, id65, "z", &d), KY_ERR_USAGE);
	assert_int_equal(ky_domain_new(INSTANCE, "bad\tid", "z", &d), KY_ERR_USAGE);

	/* the longest unit id still makes an importer certificate */
	memset(id64, 'u', 64);
	id64[64] = '\0';
	assert_int_equal(ky_domain_new(INSTANCE, id64, "", &d), 0);
	assert_int_equal(ky_cert_cn(d->identity_cert, cn, sizeof(cn)), 0);
	assert_string_equal(cn, id64);
	ky_domain_free(d);

	d = domain(UNIT);
	assert_int_equal(d->sig_threshold, 0);
	assert_int_equal(d->nadmins, 0);
	assert_int_equal(ky_cert_cn(d->identity_cert, cn, sizeof(cn)), 0);
	assert_string_equal(cn, UNIT);
	assert_int_equal(ky_cert_cn(d->importer_cert, cn, sizeof(cn)), 0);
	assert_string_equal(cn, UNIT " importer");
	/* the identity is issued by the anchor, not by itself */
	assert_int_equal(ky_cert_verify_by(d->identity_cert, X509_get0_pubkey(anchor)), 0);
	assert_int_equal(ky_cert_verify_by(d->identity_cert, d->identity_key),
	                 KY_ERR_BAD_SIGNATURE);
	assert_int_equal(X509_cmp(d->anchor_cert, anchor), 0);
	assert_int_equal(ky_cert_chain_verify(d->importer_cert, d->identity_cert, anchor), 0);
	assert_int_equal(ky_cert_chain_verify(d->importer_cert, d->identity_cert, other_anchor),
	                 KY_ERR_BAD_SIGNATURE);
	assert_int_equal(ky_cert_verify_by(d->importer_cert, d->identity_key), 0);
	assert_int_equal(ky_cert_verify_by(d->importer_cert, d->importer_key),
	                 KY_ERR_BAD_SIGNATURE);
	ky_domain_free(d);
	ky_domain_free(NULL);
}

static void t_public_json(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);
	uint8_t vp[KY_VP_LEN];
	char hex[2 * KY_VP_LEN + 1];
	json_t *j;

	j = ky_domain_public_json(d);
	assert_non_null(j);
	assert_int_equal(json_object_size(j), 14);
	assert_int_equal(json_array_size(json_object_get(j, "transfers")), 0);
	assert_int_equal(strlen(json_string_value(json_object_get(j, "identity"))), 64);
	assert_int_equal(strlen(json_string_value(json_object_get(j, "anchor"))), 64);
	assert_string_equal(json_string_value(json_object_get(j, "instance")), INSTANCE);
	ky_hex_encode(d->incarnation, KY_INCARNATION_LEN, hex);
	assert_string_equal(json_string_value(json_object_get(j, "incarnation")), hex);
	assert_string_equal(json_string_value(json_object_get(j, "unit")), UNIT);
	assert_string_equal(json_string_value(json_object_get(j, "zone")), "zone-1");
	assert_true(json_is_false(json_object_get(j, "imprint")));
	assert_int_equal(json_integer_value(json_object_get(j, "next_counter")), 4);
	assert_int_equal(json_integer_value(json_object_get(j, "signature_threshold")), 2);
	assert_int_equal(json_integer_value(json_object_get(j, "revocation_threshold")), 2);
	json_t *a = json_object_get(j, "admins");
	assert_int_equal(json_array_size(a), 3);
	json_t *a0 = json_array_get(a, 0);
	assert_int_equal(json_object_size(a0), 3);
	assert_string_equal(json_string_value(json_object_get(a0, "name")), "alice");
	ky_hex_encode(admins[ALICE].ski, KY_SKI_LEN, hex);
	assert_string_equal(json_string_value(json_object_get(a0, "ski")), hex);
	assert_non_null(
	    strstr(json_string_value(json_object_get(a0, "cert")), "-----BEGIN CERTIFICATE-----"));
	json_t *n = json_object_get(j, "new_mk");
	assert_int_equal(json_object_size(n), 3);
	assert_string_equal(json_string_value(json_object_get(n, "state")), "EMPTY");
	assert_true(json_is_null(json_object_get(n, "vp")));
	assert_int_equal(json_array_size(json_object_get(n, "part_vps")), 0);
	json_t *cur = json_object_get(j, "current_mk");
	assert_string_equal(json_string_value(json_object_get(cur, "state")), "EMPTY");
	assert_true(json_is_null(json_object_get(cur, "vp")));
	assert_true(json_is_array(json_object_get(cur, "part_vps")));
	assert_int_equal(json_array_size(json_object_get(cur, "part_vps")), 0);
	json_decref(j);

	make_current(&d, vp);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, BOB), NULL), 0);
	j = ky_domain_public_json(d);
	cur = json_object_get(j, "current_mk");
	assert_string_equal(json_string_value(json_object_get(cur, "state")), "VALID");
	vp_hex(vp, hex);
	assert_string_equal(json_string_value(json_object_get(cur, "vp")), hex);
	n = json_object_get(j, "new_mk");
	assert_string_equal(json_string_value(json_object_get(n, "state")), "FULL UNCOMMITTED");
	vp_hex(d->new_vp, hex);
	assert_string_equal(json_string_value(json_object_get(n, "vp")), hex);
	/* the loaded key shows its 2 parts' VPs, the generated one none */
	assert_int_equal(json_array_size(json_object_get(cur, "part_vps")), 2);
	vp_hex(d->cur_part_vps[1], hex);
	assert_string_equal(json_string_value(json_array_get(json_object_get(cur, "part_vps"), 1)),
	                    hex);
	assert_int_equal(json_array_size(json_object_get(n, "part_vps")), 0);
	/* nothing secret in it */
	char *text = json_dumps(j, 0);
	ky_hex_encode(d->keys->new_key, KY_MK_LEN, hex);
	assert_null(strstr(text, hex));
	ky_hex_encode(d->keys->cur_key, KY_MK_LEN, hex);
	assert_null(strstr(text, hex));
	assert_null(strstr(text, "PRIVATE"));
	free(text);
	json_decref(j);

	/* imprint mode shows as such */
	ky_domain_free(d);
	d = domain(UNIT);
	j = ky_domain_public_json(d);
	assert_true(json_is_true(json_object_get(j, "imprint")));
	assert_int_equal(json_array_size(json_object_get(j, "admins")), 0);
	json_decref(j);
	ky_domain_free(d);
}

/* The workstation reads back what the unit wrote: every field, and a refusal for each kind
 * of damage to a member it relies on. */
static void state_refused(const json_t *good, const char *path, json_t *v)
{
	json_t *j = json_deep_copy(good), *o = j;
	char key[64];
	const char *dot = strchr(path, '.');
	struct ky_unit_state st;

	if (dot != NULL) {
		snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
		o = json_object_get(j, key);
		path = dot + 1;
	}
	if (v == NULL)
		json_object_del(o, path);
	else
		json_object_set_new(o, path, v);
	assert_int_equal(ky_unit_state_parse(j, &st), KY_ERR_BAD_REPLY);
	json_decref(j);
}

static void t_unit_state_parse(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);
	struct ky_unit_state st;
	uint8_t vp[KY_VP_LEN];
	char hex[2 * KY_VP_LEN + 1];
	json_t *j, *nine;

	make_current(&d, vp);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, BOB), NULL), 0);
	j = ky_domain_public_json(d);
	assert_int_equal(ky_unit_state_parse(j, &st), 0);
	assert_false(st.imprint);
	assert_int_equal(st.counter, d->next_counter);
	assert_int_equal(st.sig, 2);
	assert_int_equal(st.rev, 2);
	assert_memory_equal(st.incarnation, d->incarnation, KY_INCARNATION_LEN);
	assert_int_equal(st.nadmins, 3);
	assert_string_equal(st.admins[1].name, "bob");
	assert_memory_equal(st.admins[1].ski, admins[BOB].ski, KY_SKI_LEN);
	assert_int_equal(ky_unit_state_admin_by_ski(&st, admins[CAROL].ski), 2);
	assert_int_equal(ky_unit_state_admin_by_name(&st, "alice"), 0);
	assert_int_equal(ky_unit_state_admin_by_name(&st, "mallory"), -1);
	assert_int_equal(st.cur_state, KY_CUR_VALID);
	vp_hex(vp, hex);
	assert_string_equal(st.cur_vp, hex);
	assert_int_equal(st.new_state, KY_NEW_UNCOMMITTED);
	vp_hex(d->new_vp, hex);
	assert_string_equal(st.new_vp, hex);

	state_refused(j, "imprint", NULL);
	state_refused(j, "imprint", json_string("no"));
	state_refused(j, "incarnation", json_string("zz"));
	state_refused(j, "next_counter", json_integer(-1));
	state_refused(j, "signature_threshold", json_integer(9));
	state_refused(j, "revocation_threshold", json_string("2"));
	state_refused(j, "admins", json_object());
	nine = json_array();
	for (int i = 0; i < 9; i++)
		json_array_append(nine, json_array_get(json_object_get(j, "admins"), 0));
	state_refused(j, "admins", nine);
	state_refused(j, "new_mk.state", json_string("HALF"));
	state_refused(j, "new_mk.vp", json_null());             /* a full register has a VP */
	state_refused(j, "current_mk.vp", json_string("0011")); /* too short */
	state_refused(j, "current_mk.state", NULL);
	json_decref(j);

	/* An empty register with a VP is refused too. */
	ky_domain_free(d);
	d = domain(UNIT);
	j = ky_domain_public_json(d);
	assert_int_equal(ky_unit_state_parse(j, &st), 0);
	assert_true(st.imprint);
	assert_int_equal(st.nadmins, 0);
	assert_string_equal(st.cur_vp, "");
	state_refused(j, "current_mk.vp", json_string(hex));
	json_decref(j);
	ky_domain_free(d);
}

static void t_dup_independent(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT), *c = NULL;

	assert_int_equal(ky_domain_dup(d, &c), 0);
	assert_int_equal(run(&c, cmd_admin_add(c, admins[DAVE].cert), SIGNED_BY(ALICE, BOB), NULL),
	                 0);
	assert_int_equal(c->nadmins, 4);
	assert_int_equal(d->nadmins, 3);
	assert_int_equal(c->next_counter, d->next_counter + 1);
	ky_domain_free(c);
	/* d still works after its copy is gone */
	assert_int_equal(run(&d, cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(ALICE, BOB), NULL),
	                 0);
	ky_domain_free(d);
}

/* ---- serialize ---- */

static void t_serialize_roundtrip(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT), *p = NULL;
	struct ky_buf a = {0}, b = {0};
	uint8_t vp[KY_VP_LEN];
	json_t *ja, *jb;

	make_current(&d, vp);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(ky_domain_serialize(d, &a), 0);
	assert_int_equal(ky_domain_parse(a.data, a.len, &p), 0);

	assert_string_equal(p->instance, d->instance);
	assert_string_equal(p->unit, d->unit);
	assert_string_equal(p->zone, d->zone);
	assert_memory_equal(p->incarnation, d->incarnation, KY_INCARNATION_LEN);
	assert_true(p->next_counter == d->next_counter);
	assert_int_equal(p->sig_threshold, 2);
	assert_int_equal(p->rev_threshold, 2);
	assert_int_equal(p->nadmins, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(p->admins[i].name, d->admins[i].name);
		assert_memory_equal(p->admins[i].ski, d->admins[i].ski, KY_SKI_LEN);
	}
	assert_int_equal(p->new_state, KY_NEW_UNCOMMITTED);
	assert_memory_equal(p->keys->new_key, d->keys->new_key, KY_MK_LEN);
	assert_memory_equal(p->new_vp, d->new_vp, KY_VP_LEN);
	assert_int_equal(p->cur_state, KY_CUR_VALID);
	assert_memory_equal(p->keys->cur_key, d->keys->cur_key, KY_MK_LEN);
	assert_memory_equal(p->cur_vp, vp, KY_VP_LEN);
	assert_int_equal(p->new_nparts, 0);
	assert_int_equal(p->cur_nparts, 2);
	assert_memory_equal(p->cur_part_vps, d->cur_part_vps, 2 * KY_VP_LEN);
	assert_int_equal(EVP_PKEY_eq(p->identity_key, d->identity_key), 1);
	assert_int_equal(EVP_PKEY_eq(p->importer_key, d->importer_key), 1);
	assert_int_equal(X509_cmp(p->identity_cert, d->identity_cert), 0);
	assert_int_equal(X509_cmp(p->importer_cert, d->importer_cert), 0);

	ja = ky_domain_public_json(d);
	jb = ky_domain_public_json(p);
	assert_true(json_equal(ja, jb));
	json_decref(ja);
	json_decref(jb);
	assert_int_equal(ky_domain_serialize(p, &b), 0);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);

	/* the restored unit goes on: its importer key still opens parts sent to it */
	assert_int_equal(run(&p, cmd(p, KY_OP_MK_CLRNEW), SIGNED_BY(ALICE), NULL), 0);
	uint8_t parts[2][KY_MK_LEN], key[KY_MK_LEN], nvp[KY_VP_LEN];
	random_parts(parts, 2, key, nvp);
	assert_int_equal(run(&p, cmd_load(d, parts, 2, nvp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_WRONG_COUNTER);
	struct ky_command *c = cmd_load(p, parts, 2, nvp);
	assert_int_equal(run(&p, c, SIGNED_BY(ALICE, BOB), NULL), 0);

	/* an imprint-mode unit round-trips too */
	struct ky_domain *e = domain(UNIT_B), *q = NULL;
	ky_buf_free(&b);
	assert_int_equal(ky_domain_serialize(e, &b), 0);
	assert_int_equal(ky_domain_parse(b.data, b.len, &q), 0);
	assert_int_equal(q->sig_threshold, 0);
	assert_int_equal(q->new_state, KY_NEW_EMPTY);
	ky_domain_free(e);
	ky_domain_free(q);

	ky_buf_free(&a);
	ky_buf_free(&b);
	ky_domain_free(p);
	ky_domain_free(d);
}

/* Serializes d, lets edit change the tree, expects the parser to refuse the result. */
static void corrupt(const struct ky_domain *d, void (*edit)(json_t *o), const char *what)
{
	struct ky_buf ser = {0};
	struct ky_domain *p = NULL;
	json_error_t err;
	json_t *o;
	char *text;

	assert_int_equal(ky_domain_serialize(d, &ser), 0);
	o = json_loadb((const char *)ser.data, ser.len, 0, &err);
	assert_non_null(o);
	edit(o);
	text = json_dumps(o, JSON_COMPACT);
	assert_non_null(text);
	if (ky_domain_parse((const uint8_t *)text, strlen(text), &p) != KY_ERR_STATE_CORRUPT)
		fail_msg("corrupted state accepted: %s", what);
	assert_null(p);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	json_decref(o);
	ky_buf_free(&ser);
}

static void flip_hex(json_t *s)
{
	char *v = strdup(json_string_value(s));
	v[0] = v[0] == '0' ? '1' : '0';
	json_string_set(s, v);
	free(v);
}

static void e_extra(json_t *o)
{
	json_object_set_new(o, "extra", json_true());
}
static void e_missing(json_t *o)
{
	json_object_del(o, "zone");
}
static void e_tag(json_t *o)
{
	json_object_set_new(o, "kyok", json_string("unit-state-v0"));
}
static void e_new_vp(json_t *o)
{
	flip_hex(json_object_get(json_object_get(o, "new_mk"), "vp"));
}
static void e_cur_key(json_t *o)
{
	flip_hex(json_object_get(json_object_get(o, "current_mk"), "key"));
}
static void e_new_state_empty(json_t *o)
{
	json_object_set_new(json_object_get(o, "new_mk"), "state", json_string("EMPTY"));
}
static void e_cur_state_bogus(json_t *o)
{
	json_object_set_new(json_object_get(o, "current_mk"), "state", json_string("FULL"));
}
static void e_cur_key_short(json_t *o)
{
	json_object_set_new(json_object_get(o, "current_mk"), "key", json_string("00"));
}
static void e_nine_admins(json_t *o)
{
	json_t *a = json_array();
	for (int i = 0; i < NADMINS; i++) {
		char *pem = NULL;
		assert_int_equal(ky_cert_to_pem(admins[i].cert, &pem), 0);
		json_array_append_new(a, json_string(pem));
		free(pem);
	}
	json_object_set_new(o, "admins", a);
}
static void e_admin_twice(json_t *o)
{
	json_t *a = json_object_get(o, "admins");
	json_array_append(a, json_array_get(a, 0));
}
/* appends a certificate of key k named cn to the admin table */
static void add_admin_cert(json_t *o, EVP_PKEY *k, const char *cn)
{
	X509 *cert = NULL;
	char *pem = NULL;
	assert_int_equal(ky_cert_self_signed(k, cn, "kyok administration", 30, &cert), 0);
	assert_int_equal(ky_cert_to_pem(cert, &pem), 0);
	json_array_append_new(json_object_get(o, "admins"), json_string(pem));
	free(pem);
	X509_free(cert);
}
static void e_admin_same_name(json_t *o)
{
	EVP_PKEY *k = NULL;
	assert_int_equal(ky_ec_generate(&k), 0);
	add_admin_cert(o, k, "alice");
	EVP_PKEY_free(k);
}
static void e_admin_same_key(json_t *o)
{
	add_admin_cert(o, admins[ALICE].key, "alias");
}
static void e_admin_not_admin_cert(json_t *o)
{
	/* the importer certificate parses and has a name and SKI, but is no admin's */
	json_array_append(json_object_get(o, "admins"), json_object_get(o, "importer_cert"));
}
static void e_admin_garbage(json_t *o)
{
	json_array_set_new(json_object_get(o, "admins"), 1, json_string("garbage"));
}
static void e_sig_above_admins(json_t *o)
{
	json_object_set_new(o, "signature_threshold", json_integer(4));
}
static void e_rev_above_admins(json_t *o)
{
	json_object_set_new(o, "revocation_threshold", json_integer(4));
}
static void e_sig_zero_rev_one(json_t *o)
{
	json_object_set_new(o, "signature_threshold", json_integer(0));
}
static void e_sig_nine(json_t *o)
{
	json_object_set_new(o, "signature_threshold", json_integer(9));
}
static void e_counter_negative(json_t *o)
{
	json_object_set_new(o, "next_counter", json_integer(-1));
}
static void e_counter_string(json_t *o)
{
	json_object_set_new(o, "next_counter", json_string("4"));
}
static void e_keys_swapped(json_t *o)
{
	json_object_set(o, "identity_key", json_object_get(o, "importer_key"));
}
static void e_importer_key_swapped(json_t *o)
{
	json_object_set(o, "importer_key", json_object_get(o, "identity_key"));
}
static void e_importer_self_signed(json_t *o)
{
	/* the importer's own key, but certified by itself instead of the identity key */
	struct ky_buf der = {0};
	EVP_PKEY *k = NULL;
	X509 *cert = NULL;
	char *pem = NULL;
	assert_int_equal(ky_b64_decode(json_string_value(json_object_get(o, "importer_key")), &der),
	                 0);
	assert_int_equal(ky_pkey_from_der(der.data, der.len, &k), 0);
	assert_int_equal(ky_cert_self_signed(k, UNIT " importer", INSTANCE, 30, &cert), 0);
	assert_int_equal(ky_cert_to_pem(cert, &pem), 0);
	json_object_set_new(o, "importer_cert", json_string(pem));
	free(pem);
	X509_free(cert);
	EVP_PKEY_free(k);
	ky_buf_free(&der);
}
static void e_identity_other_key(json_t *o)
{
	/* a certificate named like the unit, signed by the identity key, for another key */
	struct ky_buf der = {0};
	EVP_PKEY *id = NULL, *other = NULL;
	X509 *idcert = NULL, *cert = NULL;
	char *pem = NULL;
	assert_int_equal(ky_b64_decode(json_string_value(json_object_get(o, "identity_key")), &der),
	                 0);
	assert_int_equal(ky_pkey_from_der(der.data, der.len, &id), 0);
	assert_int_equal(
	    ky_cert_from_pem(json_string_value(json_object_get(o, "identity_cert")), &idcert), 0);
	assert_int_equal(ky_ec_generate(&other), 0);
	assert_int_equal(ky_cert_issue(other, UNIT, INSTANCE, idcert, id, 30, &cert), 0);
	assert_int_equal(ky_cert_verify_by(cert, id), 0);
	assert_int_equal(ky_cert_to_pem(cert, &pem), 0);
	json_object_set_new(o, "identity_cert", json_string(pem));
	free(pem);
	X509_free(cert);
	X509_free(idcert);
	EVP_PKEY_free(other);
	EVP_PKEY_free(id);
	ky_buf_free(&der);
}
static void e_certs_swapped(json_t *o)
{
	json_t *id = json_object_get(o, "identity_cert");
	json_incref(id);
	json_object_set(o, "identity_cert", json_object_get(o, "importer_cert"));
	json_object_set_new(o, "importer_cert", id);
}
static void e_importer_not_by_identity(json_t *o)
{
	/* a self-signed certificate of another key in place of the importer's */
	char *pem = NULL;
	assert_int_equal(ky_cert_to_pem(admins[ALICE].cert, &pem), 0);
	json_object_set_new(o, "importer_cert", json_string(pem));
	free(pem);
}
static void e_key_b64(json_t *o)
{
	json_object_set_new(o, "importer_key", json_string("!!!!"));
}
static void e_incarnation_short(json_t *o)
{
	json_object_set_new(o, "incarnation", json_string("0011"));
}
static void e_incarnation_zero(json_t *o)
{
	json_object_set_new(o, "incarnation", json_string("00000000000000000000000000000000"));
}
static void e_incarnation_number(json_t *o)
{
	json_object_set_new(o, "incarnation", json_integer(1));
}
static void e_unit_renamed(json_t *o)
{
	json_object_set_new(o, "unit", json_string("unit-z"));
}
static void e_anchor_other(json_t *o)
{
	/* another anchor: the identity in the state is not issued by it */
	char *pem = NULL;
	assert_int_equal(ky_cert_to_pem(other_anchor, &pem), 0);
	json_object_set_new(o, "anchor_cert", json_string(pem));
	free(pem);
}
static void e_transfer_not_ours(json_t *o)
{
	char fp[65];
	memset(fp, 'a', 64);
	fp[64] = '\0';
	json_array_append_new(json_object_get(o, "transfers"),
	                      json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s}", "op", "mk-export",
	                                "counter", 1, "from", "unit-q", "from_identity", fp, "to",
	                                UNIT_B, "to_identity", fp, "vp", fp));
}
static void e_transfer_bad_fp(json_t *o)
{
	json_array_append_new(json_object_get(o, "transfers"),
	                      json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s}", "op", "mk-export",
	                                "counter", 1, "from", UNIT, "from_identity", "xyz", "to",
	                                UNIT_B, "to_identity", "xyz", "vp", "00"));
}

static void e_part_vps_one(json_t *o)
{
	json_t *a = json_object_get(json_object_get(o, "current_mk"), "part_vps");
	json_array_remove(a, 1);
}
static void e_part_vps_on_empty(json_t *o)
{
	json_t *from = json_object_get(json_object_get(o, "current_mk"), "part_vps");
	json_t *reg = json_object_get(o, "new_mk");
	json_object_set_new(reg, "state", json_string("EMPTY"));
	json_object_set_new(reg, "key", json_null());
	json_object_set_new(reg, "vp", json_null());
	json_object_set_new(reg, "part_vps", json_deep_copy(from));
}
static void e_part_vps_bad_hex(json_t *o)
{
	json_t *a = json_object_get(json_object_get(o, "current_mk"), "part_vps");
	json_array_set_new(a, 0, json_string("00ff"));
}
static void e_part_vps_not_array(json_t *o)
{
	json_object_set_new(json_object_get(o, "current_mk"), "part_vps", json_string("x"));
}
static void e_part_vps_nine(json_t *o)
{
	json_t *a = json_object_get(json_object_get(o, "current_mk"), "part_vps");
	json_t *v = json_array_get(a, 0);
	for (int i = 0; i < 7; i++)
		json_array_append(a, v);
}

/* A state sealed before incarnations existed parses with none (all zero); the daemon gives
 * it one before it serves. */
static void t_serialize_no_incarnation(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT), *p = NULL;
	struct ky_buf ser = {0};
	json_error_t err;
	json_t *o;
	char *text;

	assert_int_equal(ky_domain_serialize(d, &ser), 0);
	o = json_loadb((const char *)ser.data, ser.len, 0, &err);
	assert_non_null(o);
	assert_int_equal(json_object_del(o, "incarnation"), 0);
	text = json_dumps(o, JSON_COMPACT);
	assert_non_null(text);
	assert_int_equal(ky_domain_parse((const uint8_t *)text, strlen(text), &p), 0);
	assert_false(ky_domain_has_incarnation(p));
	assert_true(p->next_counter == d->next_counter);
	assert_int_equal(p->nadmins, 3);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	json_decref(o);
	ky_buf_free(&ser);
	ky_domain_free(p);
	ky_domain_free(d);
}

static void t_serialize_corrupt(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT), *p = NULL;
	struct ky_buf ser = {0};
	uint8_t vp[KY_VP_LEN];

	make_current(&d, vp);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, BOB), NULL), 0);

	assert_int_equal(ky_domain_serialize(d, &ser), 0);
	assert_int_equal(ky_domain_parse(ser.data, ser.len / 2, &p), KY_ERR_STATE_CORRUPT);
	assert_int_equal(ky_domain_parse((const uint8_t *)"[]", 2, &p), KY_ERR_STATE_CORRUPT);
	assert_null(p);
	ky_buf_free(&ser);

	corrupt(d, e_extra, "extra field");
	corrupt(d, e_missing, "missing field");
	corrupt(d, e_tag, "wrong tag");
	corrupt(d, e_new_vp, "new vp does not match key");
	corrupt(d, e_cur_key, "current key does not match vp");
	corrupt(d, e_new_state_empty, "EMPTY register with a key");
	corrupt(d, e_cur_state_bogus, "unknown register state");
	corrupt(d, e_cur_key_short, "short key");
	corrupt(d, e_nine_admins, "nine admins");
	corrupt(d, e_admin_twice, "same admin twice");
	corrupt(d, e_admin_same_name, "two admins with one name");
	corrupt(d, e_admin_same_key, "two admins with one key");
	corrupt(d, e_admin_not_admin_cert, "admin certificate not self-signed");
	corrupt(d, e_admin_garbage, "admin not a certificate");
	corrupt(d, e_sig_above_admins, "signature threshold above admins");
	corrupt(d, e_rev_above_admins, "revocation threshold above admins");
	corrupt(d, e_sig_zero_rev_one, "half imprint mode");
	corrupt(d, e_sig_nine, "threshold 9");
	corrupt(d, e_counter_negative, "negative counter");
	corrupt(d, e_counter_string, "counter as string");
	corrupt(d, e_keys_swapped, "identity key does not match its certificate");
	corrupt(d, e_importer_key_swapped, "importer key does not match its certificate");
	corrupt(d, e_importer_self_signed, "importer certificate not issued by the identity");
	corrupt(d, e_identity_other_key, "identity certificate for another key");
	corrupt(d, e_certs_swapped, "certificates swapped");
	corrupt(d, e_importer_not_by_identity, "importer not certified by identity");
	corrupt(d, e_key_b64, "key not base64");
	corrupt(d, e_unit_renamed, "unit id not the identity's name");
	corrupt(d, e_anchor_other, "identity not issued by the sealed anchor");
	corrupt(d, e_transfer_not_ours, "a transfer this unit took no part in");
	corrupt(d, e_transfer_bad_fp, "a transfer record with bad fields");
	corrupt(d, e_part_vps_one, "a key loaded from one part");
	corrupt(d, e_part_vps_on_empty, "part VPs in an empty register");
	corrupt(d, e_part_vps_bad_hex, "part VP not 64 hex digits");
	corrupt(d, e_part_vps_not_array, "part VPs not a list");
	corrupt(d, e_part_vps_nine, "nine part VPs");
	corrupt(d, e_incarnation_short, "incarnation too short");
	corrupt(d, e_incarnation_zero, "incarnation all zero");
	corrupt(d, e_incarnation_number, "incarnation not a string");
	ky_domain_free(d);
}

/* A state sealed before part VPs were recorded opens, with none. */
static void t_serialize_without_part_vps(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT), *p = NULL;
	struct ky_buf ser = {0};
	uint8_t vp[KY_VP_LEN];
	json_error_t err;
	json_t *o;
	char *text;

	make_current(&d, vp);
	assert_int_equal(ky_domain_serialize(d, &ser), 0);
	o = json_loadb((const char *)ser.data, ser.len, 0, &err);
	assert_non_null(o);
	assert_int_equal(json_object_del(json_object_get(o, "new_mk"), "part_vps"), 0);
	assert_int_equal(json_object_del(json_object_get(o, "current_mk"), "part_vps"), 0);
	text = json_dumps(o, JSON_COMPACT);
	assert_int_equal(ky_domain_parse((const uint8_t *)text, strlen(text), &p), 0);
	assert_int_equal(p->cur_state, KY_CUR_VALID);
	assert_int_equal(p->cur_nparts, 0);
	assert_int_equal(p->new_nparts, 0);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	json_decref(o);
	ky_buf_free(&ser);
	ky_domain_free(p);
	ky_domain_free(d);
}

/* ---- imprint mode ---- */

static void t_imprint_admins_free(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	json_t *res = NULL;
	char hex[2 * KY_SKI_LEN + 1];

	assert_int_equal(run(&d, cmd_admin_add(d, admins[ALICE].cert), UNSIGNED, &res), 0);
	assert_string_equal(json_string_value(json_object_get(res, "op")), "admin-add");
	assert_string_equal(json_string_value(json_object_get(res, "name")), "alice");
	ky_hex_encode(admins[ALICE].ski, KY_SKI_LEN, hex);
	assert_string_equal(json_string_value(json_object_get(res, "ski")), hex);
	json_decref(res);
	assert_int_equal(run(&d, cmd_admin_add(d, admins[BOB].cert), UNSIGNED, NULL), 0);
	assert_int_equal(d->nadmins, 2);
	assert_string_equal(d->admins[1].name, "bob");
	/* an installed admin may sign though nothing is needed */
	assert_int_equal(run(&d, cmd_admin_add(d, admins[CAROL].cert), SIGNED_BY(ALICE), NULL), 0);
	/* removal is free in imprint mode, even of the last admins */
	assert_int_equal(run(&d, cmd_admin_rm(d, ALICE), UNSIGNED, &res), 0);
	assert_string_equal(json_string_value(json_object_get(res, "name")), "alice");
	json_decref(res);
	assert_int_equal(d->nadmins, 2);
	assert_string_equal(d->admins[0].name, "bob");
	assert_string_equal(d->admins[1].name, "carol");
	assert_int_equal(run(&d, cmd_admin_rm(d, BOB), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd_admin_rm(d, CAROL), UNSIGNED, NULL), 0);
	assert_int_equal(d->nadmins, 0);
	assert_int_equal(run(&d, cmd_admin_rm(d, CAROL), UNSIGNED, NULL), KY_ERR_ADMIN_NOT_FOUND);
	detail_has("no administrator with key id");
	ky_domain_free(d);
}

static void t_imprint_thresholds_set(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	json_t *res = NULL;

	for (int i = ALICE; i <= CAROL; i++)
		assert_int_equal(run(&d, cmd_admin_add(d, admins[i].cert), UNSIGNED, NULL), 0);
	/* the new signature threshold is the number of signatures needed */
	assert_int_equal(run(&d, cmd_thresholds(d, 2, 3), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	detail_has("1 of 2 required signatures");
	assert_int_equal(run(&d, cmd_thresholds(d, 3, 1), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	detail_has("2 of 3 required signatures");
	assert_int_equal(d->sig_threshold, 0);
	assert_int_equal(run(&d, cmd_thresholds(d, 2, 3), SIGNED_BY(ALICE, BOB), &res), 0);
	assert_int_equal(json_integer_value(json_object_get(res, "signature")), 2);
	assert_int_equal(json_integer_value(json_object_get(res, "revocation")), 3);
	json_decref(res);
	assert_int_equal(d->sig_threshold, 2);
	assert_int_equal(d->rev_threshold, 3);
	/* out of imprint mode: exit-imprint is refused */
	assert_int_equal(run(&d, cmd(d, KY_OP_EXIT_IMPRINT), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_NOT_IMPRINT_MODE);
	detail_has("left imprint mode");
	ky_domain_free(d);
}

static void t_threshold_range(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	static const int bad[][2] = {{0, 1}, {1, 0}, {9, 1}, {1, 9}, {-1, 1}};

	for (int i = ALICE; i <= CAROL; i++)
		assert_int_equal(run(&d, cmd_admin_add(d, admins[i].cert), UNSIGNED, NULL), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(run(&d, cmd_thresholds(d, bad[i][0], bad[i][1]),
		                     SIGNED_BY(ALICE, BOB, CAROL), NULL),
		                 KY_ERR_THRESHOLD_RANGE);
		detail_has("each must be 1 to 8");
	}
	assert_int_equal(run(&d, cmd_thresholds(d, 2, 2), SIGNED_BY(ALICE, BOB), NULL), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(
		    run(&d, cmd_thresholds(d, bad[i][0], bad[i][1]), SIGNED_BY(ALICE, BOB), NULL),
		    KY_ERR_THRESHOLD_RANGE);
	ky_domain_free(d);
}

static void t_threshold_above_admins(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);

	assert_int_equal(run(&d, cmd_admin_add(d, admins[ALICE].cert), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd_admin_add(d, admins[BOB].cert), UNSIGNED, NULL), 0);
	/* imprint mode: reported before signatures are counted */
	assert_int_equal(run(&d, cmd_thresholds(d, 3, 1), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_THRESHOLD_ABOVE_ADMINS);
	assert_int_equal(run(&d, cmd_thresholds(d, 1, 3), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_THRESHOLD_ABOVE_ADMINS);
	assert_int_equal(run(&d, cmd_thresholds(d, 2, 2), SIGNED_BY(ALICE, BOB), NULL), 0);
	/* after imprint mode */
	assert_int_equal(run(&d, cmd_thresholds(d, 3, 2), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_THRESHOLD_ABOVE_ADMINS);
	detail_has("has 2 administrators");
	assert_int_equal(run(&d, cmd_thresholds(d, 2, 3), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_THRESHOLD_ABOVE_ADMINS);
	assert_int_equal(d->sig_threshold, 2);
	ky_domain_free(d);
}

static void t_exit_imprint(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	json_t *res = NULL;

	assert_int_equal(run(&d, cmd(d, KY_OP_EXIT_IMPRINT), UNSIGNED, NULL),
	                 KY_ERR_THRESHOLD_ABOVE_ADMINS);
	assert_int_equal(run(&d, cmd_admin_add(d, admins[ALICE].cert), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd(d, KY_OP_EXIT_IMPRINT), UNSIGNED, NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	detail_has("0 of 1 required signatures");
	assert_int_equal(run(&d, cmd(d, KY_OP_EXIT_IMPRINT), SIGNED_BY(ALICE), &res), 0);
	assert_string_equal(json_string_value(json_object_get(res, "op")), "exit-imprint");
	json_decref(res);
	assert_int_equal(d->sig_threshold, 1);
	assert_int_equal(d->rev_threshold, 1);
	assert_int_equal(run(&d, cmd(d, KY_OP_EXIT_IMPRINT), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_IMPRINT_MODE);
	/* after exit-imprint every command is signed: admin-add needs 1 */
	assert_int_equal(run(&d, cmd_admin_add(d, admins[BOB].cert), UNSIGNED, NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_int_equal(run(&d, cmd_admin_add(d, admins[BOB].cert), SIGNED_BY(ALICE), NULL), 0);
	ky_domain_free(d);
}

static void t_imprint_mk_refused(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	uint8_t parts[2][KY_MK_LEN], key[KY_MK_LEN], vp[KY_VP_LEN];
	struct ky_buf env = {0};
	struct ky_command *cs[8];

	for (int i = ALICE; i <= CAROL; i++)
		assert_int_equal(run(&d, cmd_admin_add(d, admins[i].cert), UNSIGNED, NULL), 0);
	random_parts(parts, 2, key, vp);
	envelope_to(d->importer_cert, key, &env);
	cs[0] = cmd_load(d, parts, 2, vp);
	cs[1] = cmd_vp(d, KY_OP_MK_COMMIT, vp);
	cs[2] = cmd_vp(d, KY_OP_MK_SETIMM, vp);
	cs[3] = cmd(d, KY_OP_MK_CLRNEW);
	cs[4] = cmd(d, KY_OP_MK_CLRCUR);
	cs[5] = cmd(d, KY_OP_MK_GENERATE);
	cs[6] = cmd_export(d, d);
	cs[7] = cmd_import(d, d, &env, &env, vp);
	for (size_t i = 0; i < 8; i++) {
		int required = -1;
		assert_int_equal(ky_ceremony_required(d, cs[i], &required), KY_ERR_IMPRINT_MODE);
		assert_int_equal(run(&d, cs[i], SIGNED_BY(ALICE, BOB, CAROL), NULL),
		                 KY_ERR_IMPRINT_MODE);
		detail_has("imprint mode");
	}
	assert_int_equal(d->next_counter, 3);
	ky_buf_free(&env);
	ky_domain_free(d);
}

/* ---- admin table ---- */

static void t_admin_duplicate(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	EVP_PKEY *k = NULL;
	X509 *other_alice = NULL;

	assert_int_equal(run(&d, cmd_admin_add(d, admins[ALICE].cert), UNSIGNED, NULL), 0);
	/* same key */
	assert_int_equal(run(&d, cmd_admin_add(d, admins[ALICE].cert), UNSIGNED, NULL),
	                 KY_ERR_DUPLICATE_ADMIN);
	/* same key under another name */
	assert_int_equal(ky_cert_self_signed(admins[ALICE].key, "alias", "kyok administration", 30,
	                                     &other_alice),
	                 0);
	assert_int_equal(run(&d, cmd_admin_add(d, other_alice), UNSIGNED, NULL),
	                 KY_ERR_DUPLICATE_ADMIN);
	detail_has("already installed as administrator 'alice'");
	X509_free(other_alice);
	other_alice = NULL;
	/* same name, other key */
	assert_int_equal(ky_ec_generate(&k), 0);
	assert_int_equal(ky_cert_self_signed(k, "alice", "kyok administration", 30, &other_alice),
	                 0);
	assert_int_equal(run(&d, cmd_admin_add(d, other_alice), UNSIGNED, NULL),
	                 KY_ERR_DUPLICATE_ADMIN);
	detail_has("named 'alice'");
	/* the same after imprint mode, with the signatures present */
	assert_int_equal(run(&d, cmd_admin_add(d, admins[BOB].cert), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd_thresholds(d, 2, 1), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(&d, cmd_admin_add(d, other_alice), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_DUPLICATE_ADMIN);
	assert_int_equal(d->nadmins, 2);
	X509_free(other_alice);
	EVP_PKEY_free(k);
	ky_domain_free(d);
}

static void t_admin_table_full(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);

	for (int i = 0; i < KY_MAX_ADMINS; i++)
		assert_int_equal(run(&d, cmd_admin_add(d, admins[i].cert), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd_admin_add(d, admins[IVAN].cert), UNSIGNED, NULL),
	                 KY_ERR_ADMIN_TABLE_FULL);
	detail_has("remove one first");
	assert_int_equal(d->nadmins, KY_MAX_ADMINS);
	/* after removing one, the ninth fits */
	assert_int_equal(run(&d, cmd_admin_rm(d, HEIDI), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd_admin_add(d, admins[IVAN].cert), UNSIGNED, NULL), 0);
	/* and with all eight, thresholds 8 work */
	assert_int_equal(run(&d, cmd_thresholds(d, 8, 8),
	                     SIGNED_BY(ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GRACE, IVAN), NULL),
	                 0);
	ky_domain_free(d);
}

static void t_admin_name(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	char name[32];
	EVP_PKEY *k = NULL;
	X509 *cert = NULL;

	assert_int_equal(ky_ec_generate(&k), 0);
	memset(name, 'n', 31);
	name[31] = '\0';
	assert_int_equal(ky_cert_self_signed(k, name, "kyok administration", 30, &cert), 0);
	assert_int_equal(run(&d, cmd_admin_add(d, cert), UNSIGNED, NULL), KY_ERR_ADMIN_NAME);
	X509_free(cert);
	cert = NULL;
	name[30] = '\0';
	assert_int_equal(ky_cert_self_signed(k, name, "kyok administration", 30, &cert), 0);
	assert_int_equal(run(&d, cmd_admin_add(d, cert), UNSIGNED, NULL), 0);
	assert_string_equal(d->admins[0].name, name);
	X509_free(cert);
	EVP_PKEY_free(k);
	ky_domain_free(d);
}

static void t_admin_bad_cert(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	EVP_PKEY *k = NULL;
	X509 *cert = NULL;

	/* certified by alice, not self-signed */
	assert_int_equal(ky_ec_generate(&k), 0);
	assert_int_equal(ky_cert_issue(k, "mallory", "kyok administration", admins[ALICE].cert,
	                               admins[ALICE].key, 30, &cert),
	                 0);
	assert_int_equal(run(&d, cmd_admin_add(d, cert), UNSIGNED, NULL), KY_ERR_BAD_CERT);
	assert_int_equal(d->nadmins, 0);
	X509_free(cert);
	EVP_PKEY_free(k);
	ky_domain_free(d);
}

static void t_admin_rm_rules(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);

	for (int i = ALICE; i <= DAVE; i++)
		assert_int_equal(run(&d, cmd_admin_add(d, admins[i].cert), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd_thresholds(d, 1, 2), SIGNED_BY(ALICE), NULL), 0);
	/* removal needs the revocation threshold, not the signature threshold */
	assert_int_equal(run(&d, cmd_admin_rm(d, DAVE), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	detail_has("1 of 2 required signatures");
	assert_int_equal(run(&d, cmd_admin_rm(d, DAVE), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(&d, cmd_admin_rm(d, DAVE), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_ADMIN_NOT_FOUND);
	/* adding needs the signature threshold (1) */
	assert_int_equal(run(&d, cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(CAROL), NULL), 0);
	assert_int_equal(run(&d, cmd_thresholds(d, 3, 2), SIGNED_BY(ALICE), NULL), 0);
	/* 4 admins, thresholds 3 and 2: one removal fits, the second would go below 3 */
	assert_int_equal(run(&d, cmd_admin_rm(d, DAVE), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(&d, cmd_admin_rm(d, CAROL), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_BELOW_THRESHOLD);
	detail_has("removing 'carol' would leave 2 administrators");
	detail_has("lower both to 2 or less first");
	/* the revocation threshold counts too */
	assert_int_equal(run(&d, cmd_thresholds(d, 1, 3), SIGNED_BY(ALICE, BOB, CAROL), NULL), 0);
	assert_int_equal(run(&d, cmd_admin_rm(d, CAROL), SIGNED_BY(ALICE, BOB, CAROL), NULL),
	                 KY_ERR_BELOW_THRESHOLD);
	assert_int_equal(d->nadmins, 3);
	ky_domain_free(d);

	/* The last administrator: no threshold can go below 1, so the way out is zeroize. */
	d = domain(UNIT);
	assert_int_equal(run(&d, cmd_admin_add(d, admins[ALICE].cert), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd_thresholds(d, 1, 1), SIGNED_BY(ALICE), NULL), 0);
	assert_int_equal(run(&d, cmd_admin_rm(d, ALICE), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_BELOW_THRESHOLD);
	detail_has("'alice' is the last administrator");
	detail_has("zeroize the unit");
	assert_int_equal(d->nadmins, 1);
	ky_domain_free(d);
}

/* ---- signatures ---- */

/* Flips the last byte of the signature by admin who inside the DER (SignerInfos are a
 * DER SET OF, so their order is not the order of signing). */
static void tamper_signature(struct ky_buf *der, int who)
{
	const unsigned char *p = der->data;
	CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)der->len);
	STACK_OF(CMS_SignerInfo) * sis;
	CMS_SignerInfo *si = NULL;

	assert_non_null(cms);
	sis = CMS_get0_SignerInfos(cms);
	for (int i = 0; i < sk_CMS_SignerInfo_num(sis); i++) {
		ASN1_OCTET_STRING *keyid = NULL;
		X509_NAME *issuer = NULL;
		ASN1_INTEGER *sno = NULL;
		CMS_SignerInfo *cand = sk_CMS_SignerInfo_value(sis, i);
		assert_int_equal(CMS_SignerInfo_get0_signer_id(cand, &keyid, &issuer, &sno), 1);
		if (keyid != NULL && ASN1_STRING_length(keyid) == KY_SKI_LEN &&
		    memcmp(ASN1_STRING_get0_data(keyid), admins[who].ski, KY_SKI_LEN) == 0)
			si = cand;
	}
	assert_non_null(si);
	ASN1_OCTET_STRING *sig = CMS_SignerInfo_get0_signature(si);
	const unsigned char *s = ASN1_STRING_get0_data(sig);
	size_t n = (size_t)ASN1_STRING_length(sig);
	uint8_t *at = memmem(der->data, der->len, s, n);
	assert_non_null(at);
	at[n - 1] ^= 0x01;
	CMS_ContentInfo_free(cms);
}

static void t_bad_signature(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);
	struct ky_buf der = {0};

	sign(cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(ALICE, BOB), &der);
	tamper_signature(&der, BOB);
	assert_int_equal(run_der(&d, &der, NULL), KY_ERR_BAD_SIGNATURE);
	detail_has("admin 'bob' does not verify");
	tamper_signature(&der, BOB);
	tamper_signature(&der, ALICE);
	assert_int_equal(run_der(&d, &der, NULL), KY_ERR_BAD_SIGNATURE);
	detail_has("admin 'alice' does not verify");
	tamper_signature(&der, ALICE); /* flipped back: the command runs */
	assert_int_equal(run_der(&d, &der, NULL), 0);
	ky_buf_free(&der);

	/* a bad signature is refused even when none is needed */
	struct ky_domain *e = domain(UNIT_B);
	assert_int_equal(run(&e, cmd_admin_add(e, admins[ALICE].cert), UNSIGNED, NULL), 0);
	sign(cmd_admin_add(e, admins[BOB].cert), SIGNED_BY(ALICE), &der);
	tamper_signature(&der, ALICE);
	assert_int_equal(run_der(&e, &der, NULL), KY_ERR_BAD_SIGNATURE);
	ky_buf_free(&der);
	ky_domain_free(e);
	ky_domain_free(d);
}

static void t_signer_not_admin(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);

	assert_int_equal(
	    run(&d, cmd_admin_add(d, admins[ERIN].cert), SIGNED_BY(ALICE, BOB, DAVE), NULL),
	    KY_ERR_SIGNER_NOT_ADMIN);
	detail_has("signer 'dave' is not an administrator of unit unit-a");
	/* an admin-to-be cannot sign its own admission */
	assert_int_equal(
	    run(&d, cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(DAVE, ALICE, BOB), NULL),
	    KY_ERR_SIGNER_NOT_ADMIN);
	/* refused in imprint mode too, where nothing needs a signature */
	struct ky_domain *e = domain(UNIT_B);
	assert_int_equal(run(&e, cmd_admin_add(e, admins[ALICE].cert), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_SIGNER_NOT_ADMIN);
	assert_int_equal(e->nadmins, 0);
	ky_domain_free(e);
	ky_domain_free(d);
}

static void t_same_admin_twice(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);

	assert_int_equal(
	    run(&d, cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(ALICE, ALICE), NULL),
	    KY_ERR_DUPLICATE_SIGNER);
	detail_has("admin 'alice' signed twice; it counts once: 1 of 2 required signatures");
	assert_int_equal(run(&d, cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_string_equal(detail, "1 of 2 required signatures");
	assert_int_equal(run(&d, cmd_admin_add(d, admins[DAVE].cert), UNSIGNED, NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_string_equal(detail, "0 of 2 required signatures");
	/* a repeated signature does no harm when enough distinct admins signed */
	assert_int_equal(
	    run(&d, cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(ALICE, ALICE, BOB), NULL), 0);
	ky_domain_free(d);
}

/* ---- addressing and replay ---- */

static void t_counter_replay(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);
	struct ky_buf der = {0};
	struct ky_command *c;

	sign(cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(ALICE, BOB), &der);
	assert_int_equal(run_der(&d, &der, NULL), 0);
	assert_int_equal(run_der(&d, &der, NULL), KY_ERR_WRONG_COUNTER);
	detail_has("command counter 4, unit unit-a expected 5");
	ky_buf_free(&der);
	/* a counter ahead is refused too */
	c = cmd_admin_rm(d, DAVE);
	c->counter += 1;
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_WRONG_COUNTER);
	/* the counter is checked before signatures: a forged replay says counter */
	c = cmd_admin_rm(d, DAVE);
	c->counter -= 1;
	assert_int_equal(run(&d, c, SIGNED_BY(ERIN), NULL), KY_ERR_WRONG_COUNTER);
	ky_domain_free(d);
}

/* A unit whose state was created again (same instance and unit ids, counter back at 0)
 * refuses what was signed for its earlier state, with its own error. */
static void t_incarnation_replay(void **state)
{
	(void)state;
	struct ky_domain *old = domain(UNIT), *d = domain(UNIT), *copy = NULL;
	struct ky_buf der = {0};
	json_t *res = NULL;
	struct ky_command *c;
	char hex[2 * KY_INCARNATION_LEN + 1], raw[256];

	assert_true(ky_domain_has_incarnation(old));
	assert_memory_not_equal(old->incarnation, d->incarnation, KY_INCARNATION_LEN);
	assert_true(old->next_counter == 0 && d->next_counter == 0);
	/* admin-add prepared for the earlier state, counter 0 */
	sign(cmd_admin_add(old, admins[ALICE].cert), UNSIGNED, &der);
	assert_int_equal(run_der(&old, &der, NULL), 0);
	assert_int_equal(run_der(&d, &der, NULL), KY_ERR_WRONG_INCARNATION);
	ky_hex_encode(d->incarnation, KY_INCARNATION_LEN, hex);
	detail_has(hex);
	detail_has("re-created");
	detail_has("prepare the command again");
	assert_int_equal(d->nadmins, 0);
	assert_true(d->next_counter == 0);
	/* checked before the counter and the signatures, after instance and unit */
	c = cmd_admin_add(d, admins[DAVE].cert);
	c->incarnation[0] ^= 1;
	c->counter = 7;
	assert_int_equal(run(&d, c, SIGNED_BY(ERIN), NULL), KY_ERR_WRONG_INCARNATION);
	c = cmd_admin_add(d, admins[DAVE].cert);
	c->incarnation[0] ^= 1;
	strcpy(c->unit, UNIT_B);
	assert_int_equal(run(&d, c, UNSIGNED, NULL), KY_ERR_WRONG_UNIT);
	/* a command without the field (as signed before incarnations existed) */
	snprintf(raw, sizeof(raw),
	         "{\"kyok\":\"admin-command-v1\",\"instance\":\"%s\",\"unit\":\"%s\","
	         "\"counter\":0,\"op\":\"zeroize\"}",
	         d->instance, d->unit);
	ky_buf_free(&der);
	assert_int_equal(ky_cms_unsigned((const uint8_t *)raw, strlen(raw), &der), 0);
	assert_int_equal(run_der(&d, &der, NULL), KY_ERR_BAD_COMMAND);
	detail_has("field 'incarnation' must be 32 hex digits");
	/* a state without an incarnation (sealed by an older version) accepts nothing */
	assert_int_equal(ky_domain_dup(d, &copy), 0);
	memset(copy->incarnation, 0, KY_INCARNATION_LEN);
	assert_false(ky_domain_has_incarnation(copy));
	c = cmd_admin_add(copy, admins[DAVE].cert);
	ky_buf_free(&der);
	sign(c, UNSIGNED, &der);
	assert_int_equal(ky_ceremony_execute(copy, der.data, der.len, &res, detail, sizeof(detail)),
	                 KY_ERR_WRONG_INCARNATION);
	assert_null(res);
	assert_int_equal(ky_domain_new_incarnation(copy), 0);
	assert_true(ky_domain_has_incarnation(copy));
	ky_buf_free(&der);
	ky_domain_free(copy);
	ky_domain_free(old);
	ky_domain_free(d);
}

static void t_wrong_unit_instance(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);
	struct ky_command *c;

	c = cmd_admin_add(d, admins[DAVE].cert);
	strcpy(c->unit, UNIT_B);
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_WRONG_UNIT);
	detail_has("command is for unit 'unit-b', this is unit 'unit-a'");
	c = cmd_admin_add(d, admins[DAVE].cert);
	strcpy(c->instance, "inst-other");
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_WRONG_INSTANCE);
	detail_has("'inst-other'");
	/* instance before unit before counter */
	c = cmd_admin_add(d, admins[DAVE].cert);
	strcpy(c->instance, "inst-other");
	strcpy(c->unit, UNIT_B);
	c->counter = 99;
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_WRONG_INSTANCE);
	c = cmd_admin_add(d, admins[DAVE].cert);
	strcpy(c->unit, UNIT_B);
	c->counter = 99;
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_WRONG_UNIT);
	ky_domain_free(d);
}

static void t_not_a_command(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);
	struct ky_buf der = {0};
	const char *text = "hello";
	const char *other = "{\"kyok\":\"something-else\"}";
	const char *bad = "{\"kyok\":\"admin-command-v1\",\"op\":\"zeroize\"}";

	assert_int_equal(ky_buf_append(&der, "garbage", 7), 0);
	assert_int_equal(run_der(&d, &der, NULL), KY_ERR_NOT_COMMAND);
	ky_buf_free(&der);
	assert_int_equal(ky_cms_unsigned(text, strlen(text), &der), 0);
	assert_int_equal(run_der(&d, &der, NULL), KY_ERR_BAD_COMMAND);
	ky_buf_free(&der);
	assert_int_equal(ky_cms_unsigned(other, strlen(other), &der), 0);
	assert_int_equal(run_der(&d, &der, NULL), KY_ERR_NOT_COMMAND);
	ky_buf_free(&der);
	assert_int_equal(ky_cms_unsigned(bad, strlen(bad), &der), 0);
	assert_int_equal(run_der(&d, &der, NULL), KY_ERR_BAD_COMMAND);
	detail_has("field 'instance'");
	ky_buf_free(&der);
	assert_int_equal(d->next_counter, 4);
	ky_domain_free(d);
}

/* ---- master key registers ---- */

static void t_mk_register_flow(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);
	uint8_t parts[2][KY_MK_LEN], key[KY_MK_LEN], vp[KY_VP_LEN], wrong[KY_VP_LEN];
	char hex[2 * KY_VP_LEN + 1];
	json_t *res = NULL;

	random_parts(parts, 2, key, vp);
	memcpy(wrong, vp, KY_VP_LEN);
	wrong[0] ^= 1;
	vp_hex(vp, hex);

	/* nothing to commit, set or clear yet */
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_COMMIT, vp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_REGISTER_STATE);
	assert_string_equal(detail, "new master key register is EMPTY, expected FULL UNCOMMITTED");
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_SETIMM), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_REGISTER_STATE);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_CLRNEW), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_REGISTER_STATE);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_CLRCUR), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_REGISTER_STATE);
	assert_string_equal(detail, "current master key register is EMPTY, expected VALID");

	/* load: one signature per part */
	assert_int_equal(run(&d, cmd_load(d, parts, 2, vp), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_int_equal(run(&d, cmd_load(d, parts, 2, wrong), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_VP_MISMATCH);
	assert_int_equal(run(&d, cmd_load(d, parts, 2, vp), SIGNED_BY(ALICE, BOB), &res), 0);
	assert_string_equal(json_string_value(json_object_get(res, "vp")), hex);
	json_decref(res);
	assert_int_equal(d->new_state, KY_NEW_UNCOMMITTED);
	assert_memory_equal(d->keys->new_key, key, KY_MK_LEN);
	assert_int_equal(run(&d, cmd_load(d, parts, 2, vp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_REGISTER_STATE);
	assert_string_equal(detail, "new master key register is FULL UNCOMMITTED, expected EMPTY");
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_SETIMM), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_REGISTER_STATE);

	/* commit: signature threshold, vp must match */
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_COMMIT, vp), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_COMMIT, wrong), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_VP_MISMATCH);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_COMMIT, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(d->new_state, KY_NEW_COMMITTED);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_COMMIT, vp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_REGISTER_STATE);

	/* set-immediate: one signature, vp checked when given */
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_SETIMM, vp), UNSIGNED, NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_SETIMM, wrong), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_VP_MISMATCH);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_SETIMM, vp), SIGNED_BY(CAROL), &res), 0);
	assert_string_equal(json_string_value(json_object_get(res, "vp")), hex);
	json_decref(res);
	assert_int_equal(d->new_state, KY_NEW_EMPTY);
	assert_int_equal(d->cur_state, KY_CUR_VALID);
	assert_memory_equal(d->keys->cur_key, key, KY_MK_LEN);
	assert_memory_equal(d->cur_vp, vp, KY_VP_LEN);

	/* the same key again is refused */
	assert_int_equal(run(&d, cmd_load(d, parts, 2, NULL), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_SAME_KEY);

	/* clear new, clear current: one signature each */
	uint8_t p2[2][KY_MK_LEN], k2[KY_MK_LEN], vp2[KY_VP_LEN];
	random_parts(p2, 2, k2, vp2);
	assert_int_equal(run(&d, cmd_load(d, p2, 2, NULL), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_CLRNEW), UNSIGNED, NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_CLRNEW), SIGNED_BY(BOB), NULL), 0);
	assert_int_equal(d->new_state, KY_NEW_EMPTY);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_CLRCUR), UNSIGNED, NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_CLRCUR), SIGNED_BY(BOB), NULL), 0);
	assert_int_equal(d->cur_state, KY_CUR_EMPTY);
	/* once current is clear, the old key loads again */
	assert_int_equal(run(&d, cmd_load(d, parts, 2, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	ky_domain_free(d);
}

static void t_mk_load_parts(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT), *other = domain(UNIT_B);
	uint8_t parts[KY_MAX_PARTS][KY_MK_LEN], key[KY_MK_LEN], vp[KY_VP_LEN];
	struct ky_command *c;
	int required = 0;

	random_parts(parts, 3, key, vp);
	/* three parts need three signatures */
	assert_int_equal(run(&d, cmd_load(d, parts, 3, vp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	detail_has("2 of 3 required signatures");
	/* one part is not a key */
	c = cmd_load(d, parts, 1, NULL);
	assert_int_equal(ky_ceremony_required(d, c, &required), KY_ERR_KEY_PARTS);
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_KEY_PARTS);
	detail_has("1 key part given; a master key has 2 to 8");
	/* a part sealed to another unit does not open here */
	c = cmd_load(d, parts, 2, NULL);
	ky_buf_free(&c->parts[1]);
	envelope_to(other->importer_cert, parts[1], &c->parts[1]);
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_BAD_COMMAND);
	detail_has("key part 2 cannot be opened");
	/* a sealed value of the wrong size is refused */
	c = cmd_load(d, parts, 2, NULL);
	ky_buf_free(&c->parts[0]);
	assert_int_equal(ky_envelope_seal(parts[0], 16, d->importer_cert, &c->parts[0]), 0);
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_BAD_COMMAND);
	assert_int_equal(run(&d, cmd_load(d, parts, 3, vp), SIGNED_BY(ALICE, BOB, CAROL), NULL), 0);
	assert_memory_equal(d->keys->new_key, key, KY_MK_LEN);
	ky_domain_free(other);
	ky_domain_free(d);
}

/* mk-load of parts in the form a PKCS#11 token makes, alone and mixed with CMS envelopes. */
static void t_mk_load_token_parts(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT), *other = operational(UNIT_B);
	uint8_t parts[2][KY_MK_LEN], key[KY_MK_LEN], vp[KY_VP_LEN], pvp[KY_VP_LEN];
	struct ky_command *c;
	json_t *res = NULL;
	char hex[2 * KY_VP_LEN + 1];

	random_parts(parts, 2, key, vp);
	/* a token part made for another unit */
	c = cmd_load(d, parts, 2, NULL);
	ky_buf_free(&c->parts[1]);
	assert_int_equal(ky_token_part_seal(parts[1], other->importer_cert, &c->parts[1]), 0);
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_TOKEN_PART_OTHER_UNIT);
	detail_has("key part 2 (token form) to unit");
	assert_int_equal(d->new_state, KY_NEW_EMPTY);
	/* an altered wrap (the last bytes of the structure) */
	c = cmd_load(d, parts, 2, NULL);
	ky_buf_free(&c->parts[0]);
	assert_int_equal(ky_token_part_seal(parts[0], d->importer_cert, &c->parts[0]), 0);
	c->parts[0].data[c->parts[0].len - 3] ^= 0x80;
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_TOKEN_PART_UNWRAP);
	detail_has("key part 1 (token form) to unit");
	assert_int_equal(d->new_state, KY_NEW_EMPTY);
	/* mixed: one CMS envelope, one token part; the VPs are the parts' */
	c = cmd_load(d, parts, 2, vp);
	ky_buf_free(&c->parts[1]);
	assert_int_equal(ky_token_part_seal(parts[1], d->importer_cert, &c->parts[1]), 0);
	assert_int_equal(run(&d, c, SIGNED_BY(ALICE, BOB), &res), 0);
	assert_memory_equal(d->keys->new_key, key, KY_MK_LEN);
	assert_int_equal(d->new_nparts, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(ky_vp(parts[i], pvp), 0);
		assert_memory_equal(d->new_part_vps[i], pvp, KY_VP_LEN);
	}
	ky_hex_encode(vp, KY_VP_LEN, hex);
	assert_string_equal(json_string_value(json_object_get(res, "vp")), hex);
	json_decref(res);
	/* two token parts, on the other unit */
	c = cmd_load(other, parts, 2, vp);
	for (size_t i = 0; i < 2; i++) {
		ky_buf_free(&c->parts[i]);
		assert_int_equal(ky_token_part_seal(parts[i], other->importer_cert, &c->parts[i]),
		                 0);
	}
	assert_int_equal(run(&other, c, SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_memory_equal(other->keys->new_key, key, KY_MK_LEN);
	/* the same part twice, once in each form, is still one part given twice */
	ky_domain_free(other);
	other = operational(UNIT_B);
	c = cmd_load(other, parts, 2, NULL);
	ky_buf_free(&c->parts[1]);
	assert_int_equal(ky_token_part_seal(parts[0], other->importer_cert, &c->parts[1]), 0);
	assert_int_equal(run(&other, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_PART_DUPLICATE);
	assert_int_equal(other->new_state, KY_NEW_EMPTY);
	ky_domain_free(other);
	ky_domain_free(d);
}

static void t_zeroize(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);
	struct ky_buf old = {0};
	uint8_t vp[KY_VP_LEN];
	X509 *identity = d->identity_cert;
	uint64_t counter;

	make_current(&d, vp);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, BOB), NULL), 0);
	/* a command prepared before the zeroize */
	sign(cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(ALICE, BOB), &old);

	assert_int_equal(run(&d, cmd(d, KY_OP_ZEROIZE), UNSIGNED, NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_string_equal(detail, "0 of 1 required signatures");
	counter = d->next_counter;
	assert_int_equal(run(&d, cmd(d, KY_OP_ZEROIZE), SIGNED_BY(CAROL), NULL), 0);
	assert_true(d->next_counter == counter + 1);
	assert_int_equal(d->sig_threshold, 0);
	assert_int_equal(d->rev_threshold, 0);
	assert_int_equal(d->nadmins, 0);
	assert_int_equal(d->new_state, KY_NEW_EMPTY);
	assert_int_equal(d->cur_state, KY_CUR_EMPTY);
	static const uint8_t zero[KY_MK_LEN];
	assert_memory_equal(d->keys->new_key, zero, KY_MK_LEN);
	assert_memory_equal(d->keys->cur_key, zero, KY_MK_LEN);
	/* the unit keeps its identity */
	assert_ptr_equal(d->identity_cert, identity);

	/* the old command is dead: its counter has passed */
	assert_int_equal(run_der(&d, &old, NULL), KY_ERR_WRONG_COUNTER);
	ky_buf_free(&old);
	/* back in imprint mode: admins are added freely, zeroize needs nothing */
	assert_int_equal(run(&d, cmd_admin_add(d, admins[DAVE].cert), UNSIGNED, NULL), 0);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_GENERATE), SIGNED_BY(DAVE), NULL),
	                 KY_ERR_IMPRINT_MODE);
	assert_int_equal(run(&d, cmd(d, KY_OP_ZEROIZE), UNSIGNED, NULL), 0);
	assert_int_equal(d->nadmins, 0);
	ky_domain_free(d);
}

static void t_generate_export_import(void **state)
{
	(void)state;
	struct ky_domain *a = operational(UNIT), *b = operational(UNIT_B),
	                 *c3 = operational("unit-c");
	json_t *res = NULL;
	struct ky_buf env = {0};
	uint8_t vp[KY_VP_LEN], wrong[KY_VP_LEN];

	/* nothing to export yet */
	assert_int_equal(run(&a, cmd_export(a, b), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_REGISTER_STATE);
	assert_string_equal(
	    detail,
	    "new master key register is EMPTY, expected FULL UNCOMMITTED or FULL COMMITTED");

	/* generate: signature threshold, new register EMPTY */
	assert_int_equal(run(&a, cmd(a, KY_OP_MK_GENERATE), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_int_equal(run(&a, cmd(a, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, BOB), &res), 0);
	assert_int_equal(a->new_state, KY_NEW_UNCOMMITTED);
	assert_int_equal(
	    ky_hex_decode(json_string_value(json_object_get(res, "vp")), vp, KY_VP_LEN), 0);
	assert_memory_equal(vp, a->new_vp, KY_VP_LEN);
	json_decref(res);
	assert_int_equal(run(&a, cmd(a, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_REGISTER_STATE);

	/* export: signature threshold, to P-521 certificates only */
	assert_int_equal(run(&a, cmd_export(a, b), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	EVP_PKEY *p256 = EVP_EC_gen("P-256");
	assert_non_null(p256);
	X509 *p256_cert = X509_new();
	assert_non_null(p256_cert);
	X509_set_version(p256_cert, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(p256_cert), 1);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(p256_cert), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"p256", -1, -1, 0);
	X509_set_issuer_name(p256_cert, X509_get_subject_name(p256_cert));
	X509_gmtime_adj(X509_getm_notBefore(p256_cert), 0);
	X509_gmtime_adj(X509_getm_notAfter(p256_cert), 86400);
	X509_set_pubkey(p256_cert, p256);
	assert_true(X509_sign(p256_cert, p256, EVP_sha256()) > 0);
	assert_int_equal(
	    run(&a, cmd_export_chain(a, p256_cert, b->identity_cert), SIGNED_BY(ALICE, BOB), NULL),
	    KY_ERR_BAD_COMMAND);
	detail_has("recipient 1 is not a P-521");
	X509_free(p256_cert);
	EVP_PKEY_free(p256);

	struct ky_command *c = cmd_export(a, b);
	X509_up_ref(c3->importer_cert);
	c->recips[1] = c3->importer_cert;
	X509_up_ref(c3->identity_cert);
	c->recip_ids[1] = c3->identity_cert;
	c->nrecips = 2;
	assert_int_equal(run(&a, c, SIGNED_BY(ALICE, BOB), &res), 0);
	json_t *envs = json_object_get(res, "envelopes");
	assert_int_equal(json_array_size(envs), 2);
	assert_int_equal(json_array_size(json_object_get(res, "signatures")), 2);
	struct ky_buf env_c = {0}, sig = {0}, sig_c = {0};
	export_result(res, 0, &env, &sig);
	export_result(res, 1, &env_c, &sig_c);
	/* recorded on the exporting unit, in the result and the state: both identities */
	json_t *tr = json_object_get(res, "transfers");
	assert_int_equal(json_array_size(tr), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(tr, 1), "to")),
	                    "unit-c");
	json_decref(res);
	assert_int_equal(a->ntransfers, 2);
	assert_int_equal(a->transfers[0].kind, KY_TRANSFER_EXPORT);
	assert_string_equal(a->transfers[0].from, UNIT);
	assert_string_equal(a->transfers[0].to, UNIT_B);
	char fp[65];
	assert_int_equal(ky_pubkey_fingerprint(b->identity_key, fp), 0);
	assert_string_equal(a->transfers[0].to_fp, fp);
	assert_int_equal(ky_pubkey_fingerprint(a->identity_key, fp), 0);
	assert_string_equal(a->transfers[0].from_fp, fp);
	assert_memory_equal(a->transfers[0].vp, vp, KY_VP_LEN);

	/* import: signature threshold, vp required and matched, new register EMPTY */
	memcpy(wrong, vp, KY_VP_LEN);
	wrong[31] ^= 0x80;
	assert_int_equal(run(&b, cmd_import(b, a, &env, &sig, vp), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	/* the transfer signature covers the vp, the envelope and the receiving unit */
	assert_int_equal(run(&b, cmd_import(b, a, &env, &sig, wrong), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_SOURCE_NOT_UNIT);
	assert_int_equal(run(&b, cmd_import(b, a, &env_c, &sig_c, vp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_SOURCE_NOT_UNIT);
	detail_has("transfer signature of unit unit-a does not verify");
	assert_int_equal(run(&b, cmd_import(b, a, &env_c, &sig, vp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_SOURCE_NOT_UNIT);
	/* another sender named than the one that signed */
	assert_int_equal(run(&b, cmd_import(b, c3, &env, &sig, vp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_SOURCE_NOT_UNIT);
	assert_int_equal(b->ntransfers, 0);
	assert_int_equal(run(&b, cmd_import(b, a, &env, &sig, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(b->ntransfers, 1);
	assert_int_equal(b->transfers[0].kind, KY_TRANSFER_IMPORT);
	assert_string_equal(b->transfers[0].from, UNIT);
	assert_string_equal(b->transfers[0].to, UNIT_B);
	assert_int_equal(ky_pubkey_fingerprint(a->identity_key, fp), 0);
	assert_string_equal(b->transfers[0].from_fp, fp);
	assert_int_equal(b->new_state, KY_NEW_UNCOMMITTED);
	assert_memory_equal(b->keys->new_key, a->keys->new_key, KY_MK_LEN);
	assert_memory_equal(b->new_vp, vp, KY_VP_LEN);
	assert_int_equal(run(&b, cmd_import(b, a, &env, &sig, vp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_REGISTER_STATE);
	assert_int_equal(
	    run(&c3, cmd_import(c3, a, &env_c, &sig_c, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_memory_equal(c3->keys->new_key, a->keys->new_key, KY_MK_LEN);

	/* b makes it current; the same key imported again is refused */
	assert_int_equal(run(&b, cmd_vp(b, KY_OP_MK_COMMIT, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(&b, cmd_vp(b, KY_OP_MK_SETIMM, vp), SIGNED_BY(ALICE), NULL), 0);
	assert_int_equal(run(&b, cmd_import(b, a, &env, &sig, vp), SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_SAME_KEY);

	/* export works from FULL COMMITTED as well */
	assert_int_equal(run(&a, cmd_vp(a, KY_OP_MK_COMMIT, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(&a, cmd_export(a, b), SIGNED_BY(ALICE, BOB), NULL), 0);

	/* and the current register leaves when the command says so (b holds it current) */
	c = cmd_export(a, b);
	c->export_current = true;
	assert_int_equal(run(&a, c, SIGNED_BY(ALICE, BOB), NULL), KY_ERR_REGISTER_STATE);
	detail_has("current master key register is EMPTY");
	c = cmd_export(b, c3);
	c->export_current = true;
	assert_int_equal(run(&b, c, SIGNED_BY(ALICE, BOB), &res), 0);
	assert_string_equal(json_string_value(json_object_get(res, "vp")),
	                    json_string_value(json_object_get(res, "vp")));
	uint8_t got[KY_VP_LEN];
	assert_int_equal(
	    ky_hex_decode(json_string_value(json_object_get(res, "vp")), got, KY_VP_LEN), 0);
	assert_memory_equal(got, b->cur_vp, KY_VP_LEN);
	json_decref(res);

	ky_buf_free(&env);
	ky_buf_free(&env_c);
	ky_buf_free(&sig);
	ky_buf_free(&sig_c);
	ky_domain_free(a);
	ky_domain_free(b);
	ky_domain_free(c3);
}

/* ---- the master key leaves only for a genuine unit of the same instance ---- */

/* A self-signed P-521 certificate (CA when ca) with this OU. */
static X509 *self_signed(EVP_PKEY **key, const char *cn, const char *ou, bool ca)
{
	X509 *x = NULL;
	assert_int_equal(ky_ec_generate(key), 0);
	if (ca)
		assert_int_equal(ky_cert_self_signed_issuer(*key, cn, ou, 30, &x), 0);
	else
		assert_int_equal(ky_cert_self_signed(*key, cn, ou, 30, &x), 0);
	return x;
}

/* The export is refused with want and changes nothing. */
static void export_refused(struct ky_domain **a, struct ky_command *c, int want, const char *why)
{
	uint64_t counter = (*a)->next_counter;
	assert_int_equal(run(a, c, SIGNED_BY(ALICE, BOB), NULL), want);
	detail_has(why);
	assert_true((*a)->next_counter == counter);
	assert_int_equal((*a)->ntransfers, 0);
}

static void t_export_chain(void **state)
{
	(void)state;
	struct ky_domain *a = operational(UNIT), *b = operational(UNIT_B);
	struct ky_domain *foreign =
	    certified(OTHER_INSTANCE, UNIT_B, other_anchor, other_anchor_key);
	/* a unit of the same instance name certified by another anchor (an impostor) */
	EVP_PKEY *ik = NULL, *fk = NULL, *mk = NULL, *lk = NULL;
	X509 *fake_anchor = self_signed(&ik, "kyok unit anchor", INSTANCE, true);
	struct ky_domain *impostor = certified(INSTANCE, "unit-x", fake_anchor, ik);
	X509 *fresh_id = self_signed(&fk, "unit-x", INSTANCE, true);
	X509 *fresh = NULL;
	X509 *self_id = NULL;
	assert_int_equal(ky_ec_generate(&mk), 0);
	assert_int_equal(ky_cert_issue(mk, "unit-x importer", INSTANCE, fresh_id, fk, 30, &fresh),
	                 0);

	assert_int_equal(run(&a, cmd(a, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, BOB), NULL), 0);

	/* the unit itself */
	export_refused(&a, cmd_export(a, a), KY_ERR_RECIPIENT_SELF, "is unit unit-a itself");
	/* an administrator's certificate, as importer, as identity, or both */
	export_refused(&a, cmd_export_chain(a, admins[ALICE].cert, admins[ALICE].cert),
	               KY_ERR_RECIPIENT_ADMIN, "signature key of an administrator");
	export_refused(&a, cmd_export_chain(a, admins[CAROL].cert, b->identity_cert),
	               KY_ERR_RECIPIENT_ADMIN, "signature key of an administrator");
	/* a genuine unit of another instance */
	export_refused(&a, cmd_export(a, foreign), KY_ERR_RECIPIENT_INSTANCE,
	               "names instance 'inst-other'");
	/* fresh self-signed certificates, a chain that is not the anchor's */
	export_refused(&a, cmd_export_chain(a, fresh, fresh_id), KY_ERR_RECIPIENT_NOT_UNIT,
	               "not issued by the unit trust anchor");
	X509 *lone = self_signed(&lk, "unit-y", INSTANCE, false);
	export_refused(&a, cmd_export_chain(a, lone, lone), KY_ERR_RECIPIENT_NOT_UNIT,
	               "not issued by the unit trust anchor");
	export_refused(&a, cmd_export(a, impostor), KY_ERR_RECIPIENT_NOT_UNIT,
	               "not issued by the unit trust anchor");
	EVP_PKEY *nk = NULL;
	X509 *no_ou = self_signed(&nk, "unit-z", NULL, true);
	export_refused(&a, cmd_export_chain(a, fresh, no_ou), KY_ERR_RECIPIENT_NOT_UNIT,
	               "not issued by the unit trust anchor");
	X509_free(no_ou);
	EVP_PKEY_free(nk);
	/* b's genuine identity with an importer it did not issue */
	export_refused(&a, cmd_export_chain(a, fresh, b->identity_cert), KY_ERR_RECIPIENT_NOT_UNIT,
	               "not issued by the unit trust anchor");
	/* the anchor itself as the identity: the importer is not issued by it */
	export_refused(&a, cmd_export_chain(a, b->importer_cert, anchor), KY_ERR_RECIPIENT_NOT_UNIT,
	               "not issued by the unit trust anchor");
	/* a unit issuing itself a second identity certificate is no unit of the anchor */
	assert_int_equal(
	    ky_cert_self_signed_issuer(b->identity_key, UNIT_B, INSTANCE, 30, &self_id), 0);
	export_refused(&a, cmd_export_chain(a, b->importer_cert, self_id),
	               KY_ERR_RECIPIENT_NOT_UNIT, "not issued by the unit trust anchor");
	/* one bad recipient among good ones refuses the whole command */
	struct ky_command *c = cmd_export(a, b);
	X509_up_ref(fresh);
	X509_up_ref(fresh_id);
	c->recips[1] = fresh;
	c->recip_ids[1] = fresh_id;
	c->nrecips = 2;
	export_refused(&a, c, KY_ERR_RECIPIENT_NOT_UNIT, "recipient 2");

	/* the genuine unit b: accepted, and the anchor cannot be swapped in the state */
	assert_int_equal(run(&a, cmd_export(a, b), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(a->ntransfers, 1);

	/* mk-import from a sender outside the anchor, or from itself */
	struct ky_buf env = {0}, sig = {0};
	json_t *res = NULL;
	c = cmd_export(impostor, b);
	assert_int_equal(
	    run(&impostor, cmd_admin_add(impostor, admins[ALICE].cert), UNSIGNED, NULL), 0);
	ky_command_free(c);
	assert_int_equal(run(&foreign, cmd_admin_add(foreign, admins[ALICE].cert), UNSIGNED, NULL),
	                 0);
	assert_int_equal(run(&foreign, cmd(foreign, KY_OP_EXIT_IMPRINT), SIGNED_BY(ALICE), NULL),
	                 0);
	assert_int_equal(run(&foreign, cmd(foreign, KY_OP_MK_GENERATE), SIGNED_BY(ALICE), NULL), 0);
	/* foreign exports to a unit of its own instance; b is not one, so it signs for "unit-b"
	 * of inst-other: b refuses the sender */
	struct ky_domain *f2 = certified(OTHER_INSTANCE, "unit-f2", other_anchor, other_anchor_key);
	assert_int_equal(run(&foreign, cmd_export(foreign, f2), SIGNED_BY(ALICE), &res), 0);
	export_result(res, 0, &env, &sig);
	json_decref(res);
	assert_int_equal(run(&b, cmd_import(b, foreign, &env, &sig, foreign->new_vp),
	                     SIGNED_BY(ALICE, BOB), NULL),
	                 KY_ERR_SOURCE_NOT_UNIT);
	detail_has("not issued by the unit trust anchor of instance 'inst-test'");
	assert_int_equal(
	    run(&b, cmd_import(b, b, &env, &sig, foreign->new_vp), SIGNED_BY(ALICE, BOB), NULL),
	    KY_ERR_SOURCE_NOT_UNIT);
	detail_has("is unit unit-b itself");
	assert_int_equal(b->ntransfers, 0);

	/* transfers survive the sealed form and show in the public view */
	struct ky_buf ser = {0};
	struct ky_domain *p = NULL;
	assert_int_equal(ky_domain_serialize(a, &ser), 0);
	assert_int_equal(ky_domain_parse(ser.data, ser.len, &p), 0);
	assert_int_equal(p->ntransfers, 1);
	assert_memory_equal(&p->transfers[0], &a->transfers[0], sizeof(p->transfers[0]));
	assert_int_equal(X509_cmp(p->anchor_cert, anchor), 0);
	json_t *j = ky_domain_public_json(p);
	json_t *t0 = json_array_get(json_object_get(j, "transfers"), 0);
	assert_string_equal(json_string_value(json_object_get(t0, "op")), "mk-export");
	assert_string_equal(json_string_value(json_object_get(t0, "to")), UNIT_B);
	assert_string_equal(json_string_value(json_object_get(t0, "to_identity")),
	                    a->transfers[0].to_fp);
	json_decref(j);

	ky_buf_free(&ser);
	ky_buf_free(&env);
	ky_buf_free(&sig);
	ky_domain_free(p);
	ky_domain_free(f2);
	X509_free(self_id);
	X509_free(lone);
	X509_free(fresh);
	X509_free(fresh_id);
	X509_free(fake_anchor);
	EVP_PKEY_free(ik);
	EVP_PKEY_free(fk);
	EVP_PKEY_free(mk);
	EVP_PKEY_free(lk);
	ky_domain_free(impostor);
	ky_domain_free(foreign);
	ky_domain_free(a);
	ky_domain_free(b);
}

/* ---- required signatures, directly ---- */

struct required_case {
	enum ky_op op;
	int r, n;
};

static void check_required(const struct ky_domain *d, struct ky_command *c,
                           const struct required_case *t, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		int n = -1;
		c->op = t[i].op;
		int r = ky_ceremony_required(d, c, &n);
		if (r != t[i].r || (r == 0 && n != t[i].n))
			fail_msg("%s: want %d/%d, got %d/%d", ky_op_name(t[i].op), t[i].r, t[i].n,
			         r, n);
	}
}

static struct ky_command *cmd_apikey(const struct ky_domain *d, const char *role)
{
	struct ky_command *c = cmd(d, KY_OP_APIKEY_CREATE);
	strcpy(c->apikey_id, "3f1c7e52-0d7a-4c1b-9b5e-2a6f0c9d8e71");
	strcpy(c->apikey_name, "app-1");
	snprintf(c->role, sizeof(c->role), "%s", role);
	memset(c->hash, 0xab, sizeof(c->hash));
	return c;
}

/* mk-reencipher is checked here and carried out by the daemon: current VALID, new FULL
 * COMMITTED with the named VP; it changes no register. */
static void t_reencipher(void **state)
{
	struct ky_domain *d = operational(UNIT);
	uint8_t cur_vp[KY_VP_LEN], parts[2][KY_MK_LEN], key[KY_MK_LEN], vp[KY_VP_LEN];
	char hex[2 * KY_VP_LEN + 1];
	json_t *res = NULL;

	(void)state;
	random_parts(parts, 2, key, vp);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_REENCIPHER, vp), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_REGISTER_STATE);
	detail_has("current");
	make_current(&d, cur_vp);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_REENCIPHER, vp), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_REGISTER_STATE);
	detail_has("FULL COMMITTED");
	assert_int_equal(run(&d, cmd_load(d, parts, 2, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_REENCIPHER, vp), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_REGISTER_STATE);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_COMMIT, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_REENCIPHER, cur_vp), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_VP_MISMATCH);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_REENCIPHER, vp), SIGNED_BY(ALICE), &res), 0);
	vp_hex(cur_vp, hex);
	assert_string_equal(json_string_value(json_object_get(res, "from_vp")), hex);
	vp_hex(vp, hex);
	assert_string_equal(json_string_value(json_object_get(res, "to_vp")), hex);
	json_decref(res);
	assert_int_equal(d->new_state, KY_NEW_COMMITTED);
	assert_int_equal(d->cur_state, KY_CUR_VALID);
	assert_memory_equal(d->cur_vp, cur_vp, KY_VP_LEN);
	ky_domain_free(d);
}

static void t_apikey_ops(void **state)
{
	struct ky_domain *d = operational(UNIT);
	struct ky_command *c;
	struct ky_buf json = {0};
	struct ky_command *back = NULL;
	json_t *res = NULL;

	(void)state;
	/* Round trip through the wire form. */
	c = cmd_apikey(d, "Manager");
	assert_int_equal(ky_command_encode(c, &json), 0);
	assert_int_equal(ky_command_parse(json.data, json.len, &back), 0);
	assert_string_equal(back->apikey_id, c->apikey_id);
	assert_string_equal(back->apikey_name, "app-1");
	assert_string_equal(back->role, "Manager");
	assert_memory_equal(back->hash, c->hash, sizeof(c->hash));
	ky_command_free(back);
	ky_buf_free(&json);
	/* An unknown role is neither encoded nor parsed. */
	strcpy(c->role, "Admin");
	assert_int_equal(ky_command_encode(c, &json), KY_ERR_BAD_COMMAND);
	ky_command_free(c);
	const char *bad =
	    "{\"kyok\":\"admin-command-v1\",\"instance\":\"" INSTANCE "\",\"unit\":\"" UNIT
	    "\",\"incarnation\":\"" INC "\",\"counter\":5,\"op\":\"apikey-create\","
	    "\"apikey_id\":\"k1\",\"name\":\"n\",\"role\":\"root\","
	    "\"hash\":\""
	    "00000000000000000000000000000000"
	    "00000000000000000000000000000000"
	    "\"}";
	assert_int_equal(ky_command_parse((const uint8_t *)bad, strlen(bad), &back),
	                 KY_ERR_APIKEY_ROLES);

	/* Creation needs the signature threshold; revocation one signature. */
	assert_int_equal(run(&d, cmd_apikey(d, "Writer"), SIGNED_BY(ALICE), NULL),
	                 KY_ERR_NOT_ENOUGH_SIGNATURES);
	assert_int_equal(run(&d, cmd_apikey(d, "Writer"), SIGNED_BY(ALICE, BOB), &res), 0);
	assert_string_equal(json_string_value(json_object_get(res, "role")), "Writer");
	json_decref(res);
	c = cmd(d, KY_OP_APIKEY_REVOKE);
	strcpy(c->apikey_id, "3f1c7e52-0d7a-4c1b-9b5e-2a6f0c9d8e71");
	assert_int_equal(run(&d, c, SIGNED_BY(CAROL), NULL), 0);
	ky_domain_free(d);
}

/* apikey-create's role field as the unit parses it: a role list, taken in any order and
 * kept in the canonical one; an unknown, empty or repeated role is refused by name. */
static int parse_role(const char *role, char *got, size_t gotlen, char *why)
{
	char json[512];
	struct ky_command *c = NULL;
	int r;

	snprintf(json, sizeof(json),
	         "{\"kyok\":\"admin-command-v1\",\"instance\":\"" INSTANCE "\",\"unit\":\"" UNIT
	         "\",\"incarnation\":\"" INC "\",\"counter\":5,\"op\":\"apikey-create\","
	         "\"apikey_id\":\"k1\",\"name\":\"n\",\"role\":\"%s\",\"hash\":\"%064d\"}",
	         role, 0);
	why[0] = '\0';
	r = ceremony_command_parse((const uint8_t *)json, strlen(json), &c, why, 256);
	if (r == 0)
		snprintf(got, gotlen, "%s", c->role);
	ky_command_free(c);
	return r;
}

static void t_apikey_roles(void **state)
{
	char got[KY_ROLE_MAX + 1], why[256], canon[KY_ROLE_MAX + 1];
	struct ky_command *c, *back = NULL;
	struct ky_domain *d = operational(UNIT);
	struct ky_buf json = {0};
	static const struct {
		const char *in, *why;
	} bad[] = {
	    {"Manager,Manager", "role 'Manager' is given twice"},
	    {"KeyPurge,Reader,KeyPurge", "role 'KeyPurge' is given twice"},
	    {"Manager,Admin", "role 'Admin' is not one of"},
	    {"manager", "role 'manager' is not one of"},
	    {"Manager,", "empty item"},
	    {",Manager", "empty item"},
	    {"Manager,,KeyPurge", "empty item"},
	    {"Manager, KeyPurge", "role ' KeyPurge' is not one of"},
	};

	(void)state;
	assert_int_equal(parse_role("Manager", got, sizeof(got), why), 0);
	assert_string_equal(got, "Manager");
	assert_int_equal(parse_role("KeyPurge,Manager", got, sizeof(got), why), 0);
	assert_string_equal(got, "Manager,KeyPurge");
	assert_int_equal(
	    parse_role("KeyPurge,Manager,Writer,ReaderPlus,Reader", got, sizeof(got), why), 0);
	assert_string_equal(got, "Reader,ReaderPlus,Writer,Manager,KeyPurge");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse_role(bad[i].in, got, sizeof(got), why), KY_ERR_APIKEY_ROLES);
		if (strstr(why, bad[i].why) == NULL)
			fail_msg("role '%s': detail '%s' lacks '%s'", bad[i].in, why, bad[i].why);
	}
	assert_int_equal(ky_roles_canonical("", canon, why, sizeof(why)), KY_ERR_APIKEY_ROLES);
	assert_int_equal(ky_roles_canonical(NULL, canon, NULL, 0), KY_ERR_APIKEY_ROLES);
	/* The rule of stored rows and files: canonical lists only. */
	assert_true(ky_role_valid("Manager,KeyPurge"));
	assert_true(ky_role_valid("Reader"));
	assert_false(ky_role_valid("KeyPurge,Manager"));
	assert_false(ky_role_valid("Manager,Manager"));
	assert_false(ky_role_valid(""));
	/* Encoded as it is, when canonical; a list out of order is not encoded. */
	c = cmd_apikey(d, "Writer,KeyPurge");
	assert_int_equal(ky_command_encode(c, &json), 0);
	assert_int_equal(ky_command_parse(json.data, json.len, &back), 0);
	assert_string_equal(back->role, "Writer,KeyPurge");
	ky_command_free(back);
	ky_buf_free(&json);
	strcpy(c->role, "KeyPurge,Writer");
	assert_int_equal(ky_command_encode(c, &json), KY_ERR_BAD_COMMAND);
	ky_command_free(c);
	ky_domain_free(d);
}

static void t_required(void **state)
{
	(void)state;
	struct ky_domain *d = domain(UNIT);
	struct ky_command *c = cmd(d, KY_OP_ADMIN_ADD);
	int n = -1;
	const struct required_case imprint[] = {
	    {KY_OP_ADMIN_ADD, 0, 0},
	    {KY_OP_ADMIN_RM, 0, 0},
	    {KY_OP_THRESHOLDS_SET, 0, 3}, /* the new signature threshold */
	    {KY_OP_EXIT_IMPRINT, 0, 1},
	    {KY_OP_ZEROIZE, 0, 0},
	    {KY_OP_MK_LOAD, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_MK_COMMIT, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_MK_SETIMM, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_MK_CLRNEW, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_MK_CLRCUR, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_MK_GENERATE, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_MK_EXPORT, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_MK_IMPORT, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_MK_REENCIPHER, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_APIKEY_CREATE, KY_ERR_IMPRINT_MODE, 0},
	    {KY_OP_APIKEY_REVOKE, KY_ERR_IMPRINT_MODE, 0},
	};
	const struct required_case after[] = {
	    {KY_OP_ADMIN_ADD, 0, 3},
	    {KY_OP_ADMIN_RM, 0, 2},
	    {KY_OP_THRESHOLDS_SET, 0, 3}, /* the present signature threshold */
	    {KY_OP_EXIT_IMPRINT, KY_ERR_NOT_IMPRINT_MODE, 0},
	    {KY_OP_ZEROIZE, 0, 1},
	    {KY_OP_MK_LOAD, 0, 4}, /* one per part */
	    {KY_OP_MK_COMMIT, 0, 3},
	    {KY_OP_MK_SETIMM, 0, 1},
	    {KY_OP_MK_CLRNEW, 0, 1},
	    {KY_OP_MK_CLRCUR, 0, 1},
	    {KY_OP_MK_GENERATE, 0, 3},
	    {KY_OP_MK_EXPORT, 0, 3},
	    {KY_OP_MK_IMPORT, 0, 3},
	    {KY_OP_MK_REENCIPHER, 0, 1},
	    {KY_OP_APIKEY_CREATE, 0, 3},
	    {KY_OP_APIKEY_REVOKE, 0, 1},
	};

	/* a table of 4 admins (the rule looks only at their number) */
	d->nadmins = 4;
	c->sig = 3;
	c->rev = 4;
	c->nparts = 4;
	check_required(d, c, imprint, sizeof(imprint) / sizeof(imprint[0]));
	c->op = KY_OP_THRESHOLDS_SET;
	c->sig = 5;
	assert_int_equal(ky_ceremony_required(d, c, &n), KY_ERR_THRESHOLD_ABOVE_ADMINS);
	c->sig = 0;
	assert_int_equal(ky_ceremony_required(d, c, &n), KY_ERR_THRESHOLD_RANGE);
	c->sig = 3;
	c->rev = 9;
	assert_int_equal(ky_ceremony_required(d, c, &n), KY_ERR_THRESHOLD_RANGE);
	c->rev = 4;

	d->sig_threshold = 3;
	d->rev_threshold = 2;
	check_required(d, c, after, sizeof(after) / sizeof(after[0]));
	c->op = KY_OP_MK_LOAD;
	for (size_t parts = 0; parts <= KY_MAX_PARTS; parts++) {
		c->nparts = parts;
		if (parts < KY_MIN_PARTS) {
			assert_int_equal(ky_ceremony_required(d, c, &n), KY_ERR_KEY_PARTS);
		} else {
			assert_int_equal(ky_ceremony_required(d, c, &n), 0);
			assert_int_equal(n, (int)parts);
		}
	}
	c->nparts = 0;

	/* exit-imprint with no admin could never be signed */
	d->sig_threshold = d->rev_threshold = 0;
	d->nadmins = 0;
	c->op = KY_OP_EXIT_IMPRINT;
	assert_int_equal(ky_ceremony_required(d, c, &n), KY_ERR_THRESHOLD_ABOVE_ADMINS);
	ky_command_free(c);
	ky_domain_free(d);
}

/* Loads parts (count n) and expects refusal want with a detail naming the parts; the state
 * must stay as it was, byte for byte. */
static void load_refused(struct ky_domain **d, uint8_t parts[][KY_MK_LEN], size_t n, int want,
                         const char *want_detail)
{
	struct ky_buf before = {0}, after = {0};
	int who[KY_MAX_PARTS + 1];

	for (size_t i = 0; i < n; i++)
		who[i] = (int)i; /* one admin per part: alice, bob, carol, dave */
	who[n] = -1;
	assert_int_equal(ky_domain_serialize(*d, &before), 0);
	assert_int_equal(run(d, cmd_load(*d, parts, n, NULL), who, NULL), want);
	detail_has(want_detail);
	assert_int_equal(ky_domain_serialize(*d, &after), 0);
	assert_int_equal(before.len, after.len);
	assert_memory_equal(before.data, after.data, before.len);
	ky_buf_free(&before);
	ky_buf_free(&after);
}

static void xor_into(uint8_t out[KY_MK_LEN], const uint8_t a[KY_MK_LEN], const uint8_t b[KY_MK_LEN])
{
	for (size_t i = 0; i < KY_MK_LEN; i++)
		out[i] = a[i] ^ b[i];
}

/* Split knowledge: what mk-load refuses, by value, after decryption. */
static void t_mk_load_custody(void **state)
{
	(void)state;
	struct ky_domain *d = operational(UNIT);
	uint8_t p[KY_MAX_PARTS][KY_MK_LEN], a[KY_MK_LEN], b[KY_MK_LEN], c[KY_MK_LEN];
	uint8_t key[KY_MK_LEN], vp[KY_VP_LEN];
	char hex[2 * KY_VP_LEN + 1];

	assert_int_equal(run(&d, cmd_admin_add(d, admins[DAVE].cert), SIGNED_BY(ALICE, BOB), NULL),
	                 0);

	assert_int_equal(ky_random(a, sizeof(a)), 0);
	assert_int_equal(ky_random(b, sizeof(b)), 0);
	assert_int_equal(ky_random(c, sizeof(c)), 0);

	/* [A, A]: the all-zero key */
	memcpy(p[0], a, KY_MK_LEN);
	memcpy(p[1], a, KY_MK_LEN);
	assert_int_equal(ky_vp(a, vp), 0);
	vp_hex(vp, hex);
	hex[16] = '\0';
	load_refused(&d, p, 2, KY_ERR_PART_DUPLICATE, "key parts 1 and 2 of 2 are the same part");
	detail_has(hex);
	/* [A, B, A]: the key would be B */
	memcpy(p[1], b, KY_MK_LEN);
	memcpy(p[2], a, KY_MK_LEN);
	load_refused(&d, p, 3, KY_ERR_PART_DUPLICATE, "key parts 1 and 3 of 3 are the same part");
	/* [B, A, C, A]: the first equal pair is named */
	memcpy(p[0], b, KY_MK_LEN);
	memcpy(p[1], a, KY_MK_LEN);
	memcpy(p[2], c, KY_MK_LEN);
	memcpy(p[3], a, KY_MK_LEN);
	load_refused(&d, p, 4, KY_ERR_PART_DUPLICATE, "key parts 2 and 4 of 4");
	/* an all-zero part, first or last */
	memset(p[0], 0, KY_MK_LEN);
	memcpy(p[1], b, KY_MK_LEN);
	load_refused(&d, p, 2, KY_ERR_PART_ZERO, "key part 1 of 2 is all zero");
	memcpy(p[0], a, KY_MK_LEN);
	memset(p[2], 0, KY_MK_LEN);
	load_refused(&d, p, 3, KY_ERR_PART_ZERO, "key part 3 of 3 is all zero");
	/* [A, B, A^B]: distinct parts that cancel out */
	xor_into(p[2], a, b);
	load_refused(&d, p, 3, KY_ERR_MK_ZERO, "the 3 key parts cancel out");
	/* [A, B, C, B^C]: the key would be A, known to A's owner alone */
	memcpy(p[2], c, KY_MK_LEN);
	xor_into(p[3], b, c);
	load_refused(&d, p, 4, KY_ERR_MK_EQUALS_PART, "the master key would equal key part 1");
	/* ... wherever that part sits */
	memcpy(p[0], b, KY_MK_LEN);
	memcpy(p[1], c, KY_MK_LEN);
	xor_into(p[2], b, c);
	memcpy(p[3], a, KY_MK_LEN);
	load_refused(&d, p, 4, KY_ERR_MK_EQUALS_PART, "key part 4");
	assert_int_equal(d->new_state, KY_NEW_EMPTY);
	assert_int_equal(d->new_nparts, 0);

	/* Good parts: the key loads and the register records each part's VP, in order. */
	random_parts(p, 3, key, vp);
	assert_int_equal(run(&d, cmd_load(d, p, 3, vp), SIGNED_BY(ALICE, BOB, CAROL), NULL), 0);
	assert_int_equal(d->new_nparts, 3);
	for (size_t i = 0; i < 3; i++) {
		uint8_t pvp[KY_VP_LEN];
		assert_int_equal(ky_vp(p[i], pvp), 0);
		assert_memory_equal(d->new_part_vps[i], pvp, KY_VP_LEN);
	}
	/* commit keeps them, set-immediate moves them to the current register */
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_COMMIT, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(d->new_nparts, 3);
	assert_int_equal(run(&d, cmd_vp(d, KY_OP_MK_SETIMM, vp), SIGNED_BY(ALICE), NULL), 0);
	assert_int_equal(d->new_nparts, 0);
	assert_int_equal(d->cur_nparts, 3);
	assert_int_equal(ky_vp(p[2], vp), 0);
	assert_memory_equal(d->cur_part_vps[2], vp, KY_VP_LEN);
	/* a generated key has none; clearing the register clears them */
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(d->new_nparts, 0);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_CLRNEW), SIGNED_BY(ALICE), NULL), 0);
	random_parts(p, 2, key, vp);
	assert_int_equal(run(&d, cmd_load(d, p, 2, vp), SIGNED_BY(ALICE, BOB), NULL), 0);
	assert_int_equal(d->new_nparts, 2);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_CLRNEW), SIGNED_BY(ALICE), NULL), 0);
	assert_int_equal(d->new_nparts, 0);
	assert_int_equal(run(&d, cmd(d, KY_OP_MK_CLRCUR), SIGNED_BY(ALICE), NULL), 0);
	assert_int_equal(d->cur_nparts, 0);
	static const uint8_t zero[KY_MAX_PARTS][KY_VP_LEN];
	assert_memory_equal(d->cur_part_vps, zero, sizeof(zero));

	/* An all-zero key is refused however it comes: imported too. */
	{
		struct ky_buf env = {0}, sig = {0};
		struct ky_domain *src = domain(UNIT_B);
		uint8_t zkey[KY_MK_LEN] = {0}, zvp[KY_VP_LEN];
		char *sig_b64 = NULL;
		assert_int_equal(ky_vp(zkey, zvp), 0);
		envelope_to(d->importer_cert, zkey, &env);
		/* sent by a genuine unit of the instance, with its transfer signature */
		assert_int_equal(ceremony_transfer_sign(src, d->unit, zvp, &env, &sig_b64), 0);
		assert_int_equal(ky_b64_decode(sig_b64, &sig), 0);
		assert_int_equal(
		    run(&d, cmd_import(d, src, &env, &sig, zvp), SIGNED_BY(ALICE, BOB), NULL),
		    KY_ERR_MK_ZERO);
		assert_int_equal(d->new_state, KY_NEW_EMPTY);
		free(sig_b64);
		ky_buf_free(&sig);
		ky_buf_free(&env);
		ky_domain_free(src);
	}
	ky_domain_free(d);
}

/* Verify once, apply later: what the verified command says, and apply's own refusals. */
static void t_verify_apply(void **state)
{
	struct ky_domain *d, *copy = NULL, *snap = NULL;
	struct ky_verified *v = NULL, *v2 = NULL;
	struct ky_command_label label;
	struct ky_buf der = {0}, der2 = {0}, state0 = {0}, state1 = {0};
	json_t *res = NULL;
	uint64_t counter;

	(void)state;
	d = operational(UNIT);
	counter = d->next_counter;

	/* Verified: op, counter, the admins who signed (each once). */
	sign(cmd(d, KY_OP_MK_GENERATE), SIGNED_BY(BOB, ALICE, BOB), &der);
	assert_int_equal(ky_domain_serialize(d, &state0), 0);
	assert_int_equal(
	    ky_ceremony_verify(d, der.data, der.len, &v, &label, detail, sizeof(detail)), 0);
	assert_string_equal(detail, "");
	assert_true(label.parsed);
	assert_int_equal(label.op, KY_OP_MK_GENERATE);
	assert_true(label.counter == counter);
	assert_int_equal(ky_verified_op(v), KY_OP_MK_GENERATE);
	assert_true(ky_verified_counter(v) == counter);
	assert_int_equal(ky_verified_command(v)->op, KY_OP_MK_GENERATE);
	assert_int_equal(ky_verified_nsigners(v), 2);
	{
		/* in the order of the SignerInfos (a DER SET: not the order of signing) */
		size_t ia = strcmp(ky_verified_signer_name(v, 0), "alice") == 0 ? 0 : 1;
		assert_string_equal(ky_verified_signer_name(v, ia), "alice");
		assert_memory_equal(ky_verified_signer_ski(v, ia), admins[ALICE].ski, KY_SKI_LEN);
		assert_string_equal(ky_verified_signer_name(v, 1 - ia), "bob");
		assert_memory_equal(ky_verified_signer_ski(v, 1 - ia), admins[BOB].ski, KY_SKI_LEN);
	}
	assert_null(ky_verified_signer_name(v, 2));
	assert_null(ky_verified_signer_ski(v, 2));
	/* verify changes nothing */
	assert_int_equal(ky_domain_serialize(d, &state1), 0);
	assert_int_equal(state0.len, state1.len);
	assert_memory_equal(state0.data, state1.data, state0.len);
	ky_buf_free(&state1);

	/* Another command ran meanwhile: the verified one is out of date. */
	assert_int_equal(ky_domain_dup(d, &snap), 0);
	sign(cmd(d, KY_OP_MK_GENERATE), SIGNED_BY(ALICE, CAROL), &der2);
	assert_int_equal(
	    ky_ceremony_verify(d, der2.data, der2.len, &v2, NULL, detail, sizeof(detail)), 0);
	assert_int_equal(run_der(&d, &der2, NULL), 0);
	assert_int_equal(ky_domain_dup(d, &copy), 0);
	assert_int_equal(ky_ceremony_apply(copy, v, &res, detail, sizeof(detail)),
	                 KY_ERR_WRONG_COUNTER);
	assert_null(res);
	detail_has("another command reached unit unit-a");
	ky_domain_free(copy);
	copy = NULL;
	/* the same verified command twice: the second apply finds the counter moved on */
	assert_int_equal(ky_domain_dup(d, &copy), 0);
	assert_int_equal(ky_ceremony_apply(copy, v2, &res, detail, sizeof(detail)),
	                 KY_ERR_WRONG_COUNTER);
	ky_domain_free(copy);
	copy = NULL;

	/* Same counter, other admins or thresholds or registers: refused as well. */
	assert_int_equal(ky_domain_dup(snap, &copy), 0);
	copy->sig_threshold = 3;
	assert_int_equal(ky_ceremony_apply(copy, v, &res, detail, sizeof(detail)),
	                 KY_ERR_STATE_CHANGED);
	detail_has("not the one the command was verified against");
	ky_domain_free(copy);
	copy = NULL;
	assert_int_equal(ky_domain_dup(snap, &copy), 0);
	memcpy(copy->admins[1].ski, admins[DAVE].ski, KY_SKI_LEN);
	assert_int_equal(ky_ceremony_apply(copy, v, &res, detail, sizeof(detail)),
	                 KY_ERR_STATE_CHANGED);
	ky_domain_free(copy);
	copy = NULL;
	assert_int_equal(ky_domain_dup(snap, &copy), 0);
	copy->cur_state = KY_CUR_VALID;
	assert_int_equal(ky_ceremony_apply(copy, v, &res, detail, sizeof(detail)),
	                 KY_ERR_STATE_CHANGED);
	ky_domain_free(copy);
	copy = NULL;

	/* On the state it was verified against, it applies. */
	assert_int_equal(ky_domain_dup(snap, &copy), 0);
	assert_int_equal(ky_ceremony_apply(copy, v, &res, detail, sizeof(detail)), 0);
	assert_non_null(res);
	assert_string_equal(json_string_value(json_object_get(res, "op")), "mk-generate");
	assert_true(copy->next_counter == counter + 1);
	assert_int_equal(copy->new_state, KY_NEW_UNCOMMITTED);
	json_decref(res);
	res = NULL;
	ky_domain_free(copy);
	copy = NULL;

	/* Refused commands: no object; the label says what the command claimed. */
	ky_verified_free(v);
	v = NULL;
	der.data[der.len - 3] ^= 0x01; /* inside the last signature */
	assert_int_equal(
	    ky_ceremony_verify(snap, der.data, der.len, &v, &label, detail, sizeof(detail)),
	    KY_ERR_BAD_SIGNATURE);
	assert_null(v);
	assert_true(label.parsed);
	assert_int_equal(label.op, KY_OP_MK_GENERATE);
	assert_int_equal(ky_ceremony_verify(snap, (const uint8_t *)"junk", 4, &v, &label, detail,
	                                    sizeof(detail)),
	                 KY_ERR_NOT_COMMAND);
	assert_null(v);
	assert_false(label.parsed);
	ky_verified_free(NULL);

	ky_verified_free(v2);
	ky_buf_free(&der);
	ky_buf_free(&der2);
	ky_buf_free(&state0);
	ky_domain_free(snap);
	ky_domain_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_names),
	    cmocka_unit_test(t_command_roundtrip),
	    cmocka_unit_test(t_command_parse_refusals),
	    cmocka_unit_test(t_domain_new),
	    cmocka_unit_test(t_public_json),
	    cmocka_unit_test(t_unit_state_parse),
	    cmocka_unit_test(t_dup_independent),
	    cmocka_unit_test(t_serialize_roundtrip),
	    cmocka_unit_test(t_serialize_corrupt),
	    cmocka_unit_test(t_serialize_no_incarnation),
	    cmocka_unit_test(t_imprint_admins_free),
	    cmocka_unit_test(t_imprint_thresholds_set),
	    cmocka_unit_test(t_threshold_range),
	    cmocka_unit_test(t_threshold_above_admins),
	    cmocka_unit_test(t_exit_imprint),
	    cmocka_unit_test(t_imprint_mk_refused),
	    cmocka_unit_test(t_admin_duplicate),
	    cmocka_unit_test(t_admin_table_full),
	    cmocka_unit_test(t_admin_name),
	    cmocka_unit_test(t_admin_bad_cert),
	    cmocka_unit_test(t_admin_rm_rules),
	    cmocka_unit_test(t_bad_signature),
	    cmocka_unit_test(t_signer_not_admin),
	    cmocka_unit_test(t_same_admin_twice),
	    cmocka_unit_test(t_counter_replay),
	    cmocka_unit_test(t_incarnation_replay),
	    cmocka_unit_test(t_wrong_unit_instance),
	    cmocka_unit_test(t_not_a_command),
	    cmocka_unit_test(t_mk_register_flow),
	    cmocka_unit_test(t_mk_load_parts),
	    cmocka_unit_test(t_mk_load_token_parts),
	    cmocka_unit_test(t_zeroize),
	    cmocka_unit_test(t_generate_export_import),
	    cmocka_unit_test(t_export_chain),
	    cmocka_unit_test(t_required),
	    cmocka_unit_test(t_reencipher),
	    cmocka_unit_test(t_apikey_ops),
	    cmocka_unit_test(t_apikey_roles),
	    cmocka_unit_test(t_verify_apply),
	    cmocka_unit_test(t_mk_load_custody),
	    cmocka_unit_test(t_serialize_without_part_vps),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
