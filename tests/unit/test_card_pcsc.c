/* The pure part of lib/card: the PC/SC part 10 feature list a reader answers with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kyok/card.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_feature_found),
	    cmocka_unit_test(test_feature_absent),
	    cmocka_unit_test(test_feature_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
