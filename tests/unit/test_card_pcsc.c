/* The pure parts of lib/card: the PC/SC part 10 feature list a reader answers with, and the
 * kyok applet's answer to SELECT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "kyok/card.h"
#include "kyok/err.h"

#define VERIFY_PIN_DIRECT 0x06
#define MODIFY_PIN_DIRECT 0x07

static void test_feature_found(void **state)
{
	static const uint8_t list[] = {MODIFY_PIN_DIRECT, 4, 0x42, 0x33, 0x00, 0x07,
	                               VERIFY_PIN_DIRECT, 4, 0x42, 0x33, 0x00, 0x06};
	(void)state;
	assert_int_equal(ky_card_feature(list, sizeof(list), VERIFY_PIN_DIRECT), 0x42330006);
	assert_int_equal(ky_card_feature(list, sizeof(list), MODIFY_PIN_DIRECT), 0x42330007);
}

static void test_feature_absent(void **state)
{
	static const uint8_t list[] = {MODIFY_PIN_DIRECT, 4, 0x42, 0x33, 0x00, 0x07};
	(void)state;
	assert_int_equal(ky_card_feature(list, sizeof(list), VERIFY_PIN_DIRECT), 0);
	assert_int_equal(ky_card_feature(list, 0, VERIFY_PIN_DIRECT), 0);
}

/* An entry whose length is not 4 ends the list: nothing after it is trusted. */
static void test_feature_malformed(void **state)
{
	static const uint8_t bad_len[] = {MODIFY_PIN_DIRECT, 5, 0x42, 0x33, 0x00, 0x07,
	                                  VERIFY_PIN_DIRECT, 4, 0x42, 0x33, 0x00, 0x06};
	static const uint8_t cut[] = {VERIFY_PIN_DIRECT, 4, 0x42, 0x33, 0x00};
	(void)state;
	assert_int_equal(ky_card_feature(bad_len, sizeof(bad_len), VERIFY_PIN_DIRECT), 0);
	assert_int_equal(ky_card_feature(cut, sizeof(cut), VERIFY_PIN_DIRECT), 0);
}

/* SELECT's answer: version, type, blocked, tries 1 and 2, parts, signature key, zone id,
 * device id. */
static void info_sample(uint8_t b[71])
{
	memset(b, 0, 71);
	b[0] = 0x01; /* version */
	b[1] = 0x02; /* EP11 */
	b[2] = 0x00; /* not blocked */
	b[3] = 3;
	b[4] = 0;
	b[5] = 2;    /* two key parts */
	b[6] = 0x01; /* a signature key */
	memset(b + 7, 0xAA, 32);
	memset(b + 39, 0xBB, 32);
}

static void test_info_parse(void **state)
{
	uint8_t b[71], zone[32];
	struct ky_card_info info;
	char why[128];

	(void)state;
	info_sample(b);
	memset(zone, 0xAA, sizeof(zone));
	assert_int_equal(ky_card_info_parse(b, sizeof(b), &info, why, sizeof(why)), 0);
	assert_int_equal(info.kind, KY_CARD_EP11);
	assert_false(info.blocked);
	assert_int_equal(info.tries1, 3);
	assert_int_equal(info.parts, 2);
	assert_true(info.sigkey);
	assert_memory_equal(info.zone_id, zone, 32);
	assert_int_equal(info.device_id[31], 0xBB);
}

/* Every field the parser checks, tripped one at a time. */
static void test_info_parse_refused(void **state)
{
	uint8_t b[72];
	struct ky_card_info info;
	char why[128];
	static const struct {
		size_t at;
		uint8_t v;
	} bad[] = {{0, 0x02}, {1, 0x03}, {2, 0x02}, {5, 86}, {6, 0x02}};

	(void)state;
	info_sample(b);
	assert_int_equal(ky_card_info_parse(b, 70, &info, why, sizeof(why)), KY_ERR_CARD_PROTOCOL);
	b[71] = 0;
	assert_int_equal(ky_card_info_parse(b, 72, &info, why, sizeof(why)), KY_ERR_CARD_PROTOCOL);
	assert_int_equal(ky_card_info_parse(b, 0, &info, why, sizeof(why)), KY_ERR_CARD_PROTOCOL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		info_sample(b);
		b[bad[i].at] = bad[i].v;
		assert_int_equal(ky_card_info_parse(b, 71, &info, why, sizeof(why)),
		                 KY_ERR_CARD_PROTOCOL);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_feature_found),      cmocka_unit_test(test_feature_absent),
	    cmocka_unit_test(test_feature_malformed),  cmocka_unit_test(test_info_parse),
	    cmocka_unit_test(test_info_parse_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
