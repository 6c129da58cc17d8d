#!/bin/sh
# Installs the Debian packages kyok needs to build, run and test, when missing.
# Usage: scripts/deps.sh [build|check|cards|bench|fuzz]
#   cards: build's and the PC/SC stack of 'make demo-cards'; bench: build's, wrk and
#   postgresql (its part of the figures) for 'make bench'; fuzz: build's and clang with libFuzzer
set -eu

mode=${1:-build}
pkgs="meson ninja-build pkg-config gcc libc6-dev make openssl libssl-dev
      libsqlite3-dev sqlite3 libpq-dev libmicrohttpd-dev libjansson-dev
      libcurl4-openssl-dev curl jq libtss2-dev libp11-kit-dev libpcsclite-dev"
if [ "$mode" = check ]; then
	# swtpm and SoftHSM2 (with opensc's pkcs11-tool): the TPM and the token the sealing
	# tests start; bsdutils' script types their PINs at a terminal.
	pkgs="$pkgs libcmocka-dev clang-format tmux xxd swtpm swtpm-tools softhsm2 opensc bsdutils"
	# The PostgreSQL server the store tests start a throw-away cluster of (tests/pg.sh).
	pkgs="$pkgs postgresql"
	# The card tests: a private pcscd with vsmartcard's virtual reader driver (vpcd), in a
	# network namespace whose loopback iproute2's ip brings up.
	pkgs="$pkgs pcscd vsmartcard-vpcd pcsc-tools iproute2"
fi
if [ "$mode" = cards ]; then
	pkgs="$pkgs pcscd vsmartcard-vpcd pcsc-tools iproute2"
fi
if [ "$mode" = fuzz ]; then
	pkgs="$pkgs clang libclang-rt-14-dev"
fi
if [ "$mode" = bench ]; then
	pkgs="$pkgs wrk postgresql"
fi

missing=""
if [ "$mode" = check ]; then
	# The Key Protect SDK test runs the official Node.js SDK: any node and npm will do
	# (Debian's, or one already installed from elsewhere).
	command -v node >/dev/null 2>&1 || missing="$missing nodejs"
	command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi
for p in $pkgs; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo apt-get update -qq && sudo env DEBIAN_FRONTEND=noninteractive $cmd
		exit 0
	fi
	echo "error: missing Debian packages:$missing" >&2
	echo "run as root:  apt-get update && $cmd" >&2
	exit 1
fi
echo "installing missing Debian packages:$missing" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive $cmd
