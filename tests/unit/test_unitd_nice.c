/* unitd/nice.c: a write request's thread goes to nice KY_STORE_WRITE_NICE and back, only when
 * it can come back. The refusals run in a child process that gives up CAP_SYS_NICE and its
 * RLIMIT_NICE, as an unprivileged unit without LimitNICE=+0 would be. */
#include <errno.h>
#include <linux/capability.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "kyok/store.h"
#include "unitd/nice.h"

static int my_nice(void)
{
	errno = 0;
	int v = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
	assert_int_equal(errno, 0);
	return v;
}

/* Whether this thread may go to KY_STORE_WRITE_NICE and back (what the probe must find): below
 * it now, and CAP_SYS_NICE in effect or an RLIMIT_NICE that allows the way back. */
static bool may_raise(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2];
	struct rlimit rl;
	int base = my_nice();

	if (base >= KY_STORE_WRITE_NICE)
		return false;
	if (syscall(SYS_capget, &h, d) == 0 &&
	    (d[CAP_TO_INDEX(CAP_SYS_NICE)].effective & CAP_TO_MASK(CAP_SYS_NICE)) != 0)
		return true;
	return getrlimit(RLIMIT_NICE, &rl) == 0 && rl.rlim_cur >= (rlim_t)(20 - base);
}

/* No CAP_SYS_NICE and no RLIMIT_NICE from here on (this process only). */
static void give_up_raising(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2];
	struct rlimit rl = {0, 0};

	if (syscall(SYS_capget, &h, d) == 0) {
		d[CAP_TO_INDEX(CAP_SYS_NICE)].effective &= ~CAP_TO_MASK(CAP_SYS_NICE);
		d[CAP_TO_INDEX(CAP_SYS_NICE)].permitted &= ~CAP_TO_MASK(CAP_SYS_NICE);
		if (syscall(SYS_capset, &h, d) != 0)
			_exit(90);
	}
	if (setrlimit(RLIMIT_NICE, &rl) != 0)
		_exit(91);
}

static void test_lower_and_back(void **state)
{
	int base, prev;

	(void)state;
	if (!may_raise())
		skip(); /* unprivileged, without RLIMIT_NICE: test_refused covers it */
	base = my_nice();
	assert_true(unitd_nice_init());
	assert_true(unitd_nice_available());
	prev = unitd_nice_lower();
	assert_int_equal(prev, base);
	assert_int_equal(my_nice(), KY_STORE_WRITE_NICE);
	unitd_nice_restore(prev);
	assert_int_equal(my_nice(), base);
	/* Nothing changed: nothing to give back. */
	unitd_nice_restore(UNITD_NICE_NONE);
	assert_int_equal(my_nice(), base);
}

/* Runs body in a child process (its priority and limits changes stay there); its result, 0
 * or the number of the step that failed, must be 0. */
static void in_child(int (*body)(void))
{
	int st;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(body());
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static int already_low(void)
{
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), KY_STORE_WRITE_NICE) != 0)
		return 2;
	return unitd_nice_lower() == UNITD_NICE_NONE && my_nice() == KY_STORE_WRITE_NICE ? 0 : 1;
}

/* A thread already at the write priority (or lower) is left as it is. */
static void test_already_low(void **state)
{
	(void)state;
	if (!may_raise())
		skip();
	assert_true(unitd_nice_init());
	in_child(already_low);
}

static int probe_already_low(void)
{
	if (setpriority(PRIO_PROCESS, 0, KY_STORE_WRITE_NICE) != 0)
		return 2;
	if (unitd_nice_init() || unitd_nice_lower() != UNITD_NICE_NONE)
		return 3;
	return my_nice() == KY_STORE_WRITE_NICE ? 0 : 4;
}

/* A unit started at the write priority already: the probe says no, nothing is lowered. */
static void test_probe_already_low(void **state)
{
	(void)state;
	in_child(probe_already_low);
}

static int refused(void)
{
	int base = getpriority(PRIO_PROCESS, 0);

	give_up_raising();
	if (unitd_nice_init() || unitd_nice_available())
		return 3;
	if (unitd_nice_lower() != UNITD_NICE_NONE || my_nice() != base)
		return 4;
	return 0;
}

/* Without a way back, the probe says so and no thread is lowered. */
static void test_refused(void **state)
{
	(void)state;
	in_child(refused);
}

static int way_back_lost(void)
{
	int base = my_nice(), prev;

	if (!unitd_nice_init())
		return 5;
	if ((prev = unitd_nice_lower()) != base || my_nice() != KY_STORE_WRITE_NICE)
		return 6;
	give_up_raising();
	unitd_nice_restore(prev);
	if (my_nice() != KY_STORE_WRITE_NICE || unitd_nice_available())
		return 7;
	if (unitd_nice_lower() != UNITD_NICE_NONE)
		return 8;
	return 0;
}

/* The way back taken away after the probe: the thread stays lowered, the unit says so once
 * (stderr here), and later creations are not lowered. */
static void test_way_back_lost(void **state)
{
	(void)state;
	if (!may_raise())
		skip();
	in_child(way_back_lost);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lower_and_back),    cmocka_unit_test(test_already_low),
	    cmocka_unit_test(test_probe_already_low), cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_way_back_lost),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
