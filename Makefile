# kyok: the two commands that matter are 'make demo' and 'make check'.
BUILD ?= build
ASAN_BUILD ?= build-asan
RELEASE_BUILD ?= build-release
FUZZ_BUILD ?= build-fuzz
MESON ?= meson
SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

.PHONY: all deps check-deps build build-asan build-release demo demo-cards check test test-asan format \
	format-check clean bench fuzz

all: build

deps:
	@scripts/deps.sh build

check-deps:
	@scripts/deps.sh check

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD)

$(ASAN_BUILD)/build.ninja:
	$(MESON) setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false \
		--buildtype=debug -Dtest_kdf=true

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-asan: check-deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

$(RELEASE_BUILD)/build.ninja:
	$(MESON) setup $(RELEASE_BUILD) --buildtype=release

# -O3 sees more (inlining): its warnings are errors too. The programs that ship and the
# libraries they link (the tests and fuzz targets are built, at -O0, by the two test builds).
RELEASE_TARGETS = cli/kyok unitd/kyok-unitd card/kyok-card unitd/libkyok-unitd-header-check.a
build-release: check-deps $(RELEASE_BUILD)/build.ninja
	ninja -C $(RELEASE_BUILD) $(RELEASE_TARGETS)

# Builds, starts a local instance, runs a whole ceremony and shows the result.
demo: build
	scripts/demo.sh $(BUILD)

# The same with smart cards only: a private pcscd with two virtual readers and nine software
# cards (installs pcscd, vsmartcard-vpcd and iproute2 when missing).
demo-cards: build
	@scripts/deps.sh cards
	scripts/demo-cards.sh $(BUILD)

test: check-deps $(BUILD)/build.ninja
	ninja -C $(BUILD)
	$(MESON) test -C $(BUILD) --print-errorlogs --num-processes 4

test-asan: build-asan
	$(MESON) test -C $(ASAN_BUILD) --print-errorlogs --num-processes 4 --timeout-multiplier 3

# Performance figures on this machine (docs/performance.md): installs wrk, builds, runs them.
bench:
	@scripts/deps.sh bench
	@[ -f $(BUILD)/build.ninja ] || $(MESON) setup $(BUILD)
	ninja -C $(BUILD)
	bench/run.sh $(BUILD)
	bench/pg.sh $(BUILD)
	@if [ "$(BENCH_1M)" = 1 ]; then bench/big.sh $(BUILD); fi

# Fuzzing (clang + libFuzzer, ASan + UBSan): each target for FUZZ_SECONDS (default 60).
# make check replays every seed and kept corpus input without libFuzzer (test fuzz_replay).
fuzz:
	@scripts/deps.sh fuzz
	scripts/fuzz.sh $(FUZZ_BUILD)

# Everything: format, a release build, tests, then the same tests under ASan + UBSan.
check: check-deps format-check build-release test test-asan
	@echo "make check: all tests passed (plain and sanitized builds)"

format:
	clang-format -i $(SOURCES)

format-check:
	@clang-format --dry-run --Werror $(SOURCES)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(RELEASE_BUILD) $(FUZZ_BUILD)
