# Sourced by the card tests, after helpers.sh: a private pcscd with one vpcd entry (two
# virtual readers), kyok-cards inserted into and removed from them, and the APDU log.
#
#   pcsc_namespace "$@"   first thing: skips the test when pcscd or vpcd are missing, else
#                         runs it again inside a mount and network namespace of its own
#   setup; pcsc_start     after helpers.sh's setup: pcscd on a free port pair, its readers up
#   card_insert N NAME    kyok-card NAME (files $T_DIR/cards/NAME.*) into reader N (1 or 2)
#   card_remove N         stops that kyok-card: the card is pulled out
#   pcsc_wait_card N present|absent    until pcscd sees reader N so (its own notification)
#   pcsc_restart          pcscd stopped and started again, the cards left in their readers
#   pcsc_apdus            the APDUs that crossed the readers (see below)
#   card_put N NAME, card_pull N, card_serve LOG PID    cards moved as a person would, and
#                         as a kyok tke command asks (see below)
#
# pcscd's socket is /run/pcscd/pcscd.comm, built into pcscd and libpcsclite: in the test's
# mount namespace a tmpfs lies over /run/pcscd (or over /run when the system has no
# /run/pcscd), so the test's pcscd and its clients meet there, and a pcscd of the system is
# neither seen nor touched. The network namespace (its own loopback) keeps the readers' TCP
# ports, which vpcd opens on every address, away from everyone else on the machine.
# Everything started here is stopped at exit.

KYOK_CARD="$KYOK_BUILD/card/kyok-card"
CARD_PROBE="$KYOK_BUILD/tests/card_probe"
PCSC_VPCD=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
# Bound on each wait for pcscd's state: generous, for a loaded machine; never a pace.
PCSC_WAIT_MS=120000

pcsc_namespace() {
	local missing="" ns
	command -v pcscd >/dev/null 2>&1 || missing="$missing pcscd"
	[ -f "$PCSC_VPCD" ] || missing="$missing vsmartcard-vpcd"
	if [ -n "$missing" ]; then
		echo "SKIP $T_NAME: not installed:$missing ('scripts/deps.sh check' installs them)" >&2
		exit 77
	fi
	[ -n "${KYOK_T_PCSCNS:-}" ] && return 0
	if [ "$(id -u)" -eq 0 ]; then ns=(unshare --mount --net --propagation private); else
		ns=(unshare --user --map-root-user --mount --net --propagation private); fi
	if "${ns[@]}" true 2>/dev/null; then
		KYOK_T_PCSCNS=1 exec "${ns[@]}" bash "$0" "$@"
	fi
	echo "SKIP $T_NAME: no private mount and network namespace here ('${ns[*]} true'" \
		"fails); run as root or allow unprivileged user namespaces" >&2
	exit 77
}

# A port p with p and p+1 free on this host (vpcd listens on all addresses).
pcsc_free_ports() {
	local p i
	for i in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if [ -z "$(ss -Hltn "( sport = :$p or sport = :$((p + 1)) )")" ]; then
			echo "$p"
			return 0
		fi
	done
	echo "no free port pair found" >&2
	return 1
}

# Starts pcscd (again) on $PCSC_PORT; 0 once it lists its two readers, 1 if it died.
pcsc_run() {
	cat >"$PCSC_DIR/reader.conf.d/vpcd" <<-EOF
		FRIENDLYNAME "Virtual PCD"
		DEVICENAME   /dev/null:$PCSC_PORT
		LIBPATH      $PCSC_VPCD
		CHANNELID    $PCSC_PORT
	EOF
	local from ready
	echo "---- pcscd started on ports $PCSC_PORT, $((PCSC_PORT + 1))" >>"$PCSC_DIR/pcscd.log"
	from=$(($(wc -l <"$PCSC_DIR/pcscd.log") + 1))
	pcscd --foreground --apdu --info --config "$PCSC_DIR/reader.conf.d" \
		>>"$PCSC_DIR/pcscd.log" 2>&1 &
	PCSC_PID=$!
	# Its socket, then its readers: polled state. pcscd adds its readers before it says
	# "daemon ready"; ready without both (a port it could not listen on) is a failure.
	while kill -0 "$PCSC_PID" 2>/dev/null; do
		ready=$(tail -n +"$from" "$PCSC_DIR/pcscd.log" | grep -c "daemon ready" || true)
		if [ -S /run/pcscd/pcscd.comm ] &&
			[ "$("$CARD_PROBE" readers 2>/dev/null | wc -l)" -ge 2 ]; then
			return 0
		fi
		[ "$ready" -gt 0 ] && [ -S /run/pcscd/pcscd.comm ] && break
		sleep 0.05
	done
	pcsc_stop
	return 1
}

pcsc_start() {
	local try
	PCSC_DIR="$T_DIR/pcsc"
	mkdir -p "$PCSC_DIR/reader.conf.d" "$T_DIR/cards"
	ip link set lo up
	if [ -d /run/pcscd ]; then
		mount -t tmpfs -o mode=0755,size=1m kyok-pcsc /run/pcscd
	else
		mount -t tmpfs -o mode=0755,size=1m kyok-pcsc /run
		mkdir -m 0755 /run/pcscd
	fi
	trap pcsc_exit EXIT
	# A test stopped from outside (meson's timeout) still stops its pcscd and cards.
	trap 'exit 143' TERM
	trap 'exit 130' INT
	# A port pair taken between the look and pcscd's bind: another pair.
	for try in 1 2 3; do
		PCSC_PORT=$(pcsc_free_ports)
		if pcsc_run; then return 0; fi
	done
	echo "pcscd did not start: $(tail -n 5 "$PCSC_DIR/pcscd.log")" >&2
	return 1
}

pcsc_stop() {
	if [ -n "${PCSC_PID:-}" ]; then
		kill -TERM "$PCSC_PID" 2>/dev/null || true
		wait "$PCSC_PID" 2>/dev/null || true
		PCSC_PID=
	fi
}

# pcscd stops and starts on the same ports; the cards stay in their readers (kyok-card
# connects again, powered off meanwhile).
pcsc_restart() {
	pcsc_stop
	pcsc_run
}

# Stops all that pcsc_start and card_insert started, then helpers.sh's cleanup.
pcsc_exit() {
	local rc=$? f
	set +e # stop everything whatever fails here; cleanup exits with the test's status
	for f in "$PCSC_DIR"/card-*.pid; do
		if [ -f "$f" ]; then card_remove "$(basename "$f" .pid | cut -d- -f2)" || true; fi
	done
	pcsc_stop
	if [ $rc -ne 0 ] && [ -f "$PCSC_DIR/pcscd.log" ]; then
		echo "---- pcscd log ($T_NAME) ----" >&2
		tail -n 30 "$PCSC_DIR/pcscd.log" >&2
		tail -n 5 "$PCSC_DIR"/card-*.log >&2 2>/dev/null || true
	fi
	(exit $rc)
	cleanup
}

# card_insert N NAME: kyok-card NAME, its EEPROM and chip key in $T_DIR/cards, into reader N.
card_insert() {
	local n=$1 f="$T_DIR/cards/$2"
	"$KYOK_CARD" --eeprom "$f.eeprom" --chip-key "$f.chip" --port $((PCSC_PORT + n - 1)) --wait 120 \
		2>>"$PCSC_DIR/card-$n.log" &
	echo $! >"$PCSC_DIR/card-$n.pid"
}

# card_remove N: the card in reader N is pulled out (its kyok-card stopped, which it sees
# as removal). Fails when kyok-card had exited on its own with an error.
card_remove() {
	local f="$PCSC_DIR/card-$1.pid" pid rc=0
	pid=$(cat "$f")
	rm -f "$f"
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || rc=$?
	return $rc
}

# pcsc_wait_card N present|absent: returns once pcscd sees reader N so; fails after
# PCSC_WAIT_MS (a bound for a wedged stack, not a pace).
pcsc_wait_card() {
	"$CARD_PROBE" wait "$1" "$2" "$PCSC_WAIT_MS"
}

# pcsc_apdus [LOG]: every APDU that crossed a reader, in order, from pcscd's --apdu log: a
# line "> HEX" for a command, "< HEX" for its response (data then status word); hex upper
# case without spaces. What later tests grep for secrets that must not cross in the clear.
pcsc_apdus() {
	awk '$2 == "APDU:" || $2 == "SW:" {
		s = ""
		for (i = 3; i <= NF; i++) s = s $i
		print ($2 == "APDU:" ? "> " : "< ") toupper(s)
	}' "${1:-$PCSC_DIR/pcscd.log}"
}

# pcsc_crossed HEX: whether HEX (any case) is in some APDU or response that crossed a reader.
pcsc_crossed() {
	local h
	h=$(tr '[:lower:]' '[:upper:]' <<<"$1")
	# grep reads to the end (-c): a grep -q stopping early would fail the pipeline (pipefail).
	pcsc_apdus | cut -c3- | grep -cF -- "$h" >/dev/null
}

# card_put N NAME: the card in reader N (if any) taken out, kyok-card NAME put in; returns
# once pcscd sees it there. card_pull N: the card in reader N taken out.
card_pull() {
	if [ -f "$PCSC_DIR/card-$1.pid" ]; then
		card_remove "$1" || echo "kyok-card in reader $1 did not end cleanly" >&2
		pcsc_wait_card "$1" absent
	fi
}
card_put() {
	card_pull "$1"
	card_insert "$1" "$2"
	pcsc_wait_card "$1" present
}

# card_serve LOG PID: does what a kyok tke command (PID) asks on its stderr (LOG) until it
# ends: puts the card it names into the reader it names, from CARD_OF_ADMIN[name] (reader 1)
# and CARD_OF_PART[description] (reader 2), associative arrays the caller fills. A card asked
# for in reader 2 while another is in it goes in once the command asks to take that one out
# (it reads the card in the reader first). Waits on the log, never on time.
card_serve() {
	local log=$1 pid=$2 seen=0 n line name pending=
	while :; do
		n=$(wc -l <"$log")
		while [ "$seen" -lt "$n" ]; do
			seen=$((seen + 1))
			line=$(sed -n "${seen}p" "$log")
			case $line in
			*"insert the EP11 card of administrator '"*)
				name=${line#*administrator \'}
				card_put 1 "${CARD_OF_ADMIN[${name%%\'*}]}" ;;
			*"insert the EP11 card holding key part '"*)
				name=${line#*key part \'}
				pending=${CARD_OF_PART[${name%%\'*}]}
				if [ ! -f "$PCSC_DIR/card-2.pid" ]; then
					card_put 2 "$pending"
					pending=
				fi ;;
			*"remove the EP11 card from reader 2"*)
				card_pull 2
				if [ -n "$pending" ]; then
					card_put 2 "$pending"
					pending=
				fi ;;
			esac
		done
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
}
