# Sourced by tests that drive kyok's prompts through a real terminal (tmux), after setup:
#
#   tty_start VAR=VALUE...   a shell in a tmux terminal with only these variables (and HOME,
#                            PATH, TERM); returns 1 (the caller skips) when tmux is missing
#   type_line TEXT           types TEXT and Enter
#   type_file FILE           types what FILE holds (a secret: through a tmux buffer, on no
#                            command line) and Enter
#   wait_n N PATTERN         until PATTERN (grep -E) is on N lines of the screen: a secret
#                            is typed only once its prompt (echo off) is there. Bounded
#                            (TTY_WAIT tenths of a second, 150 unless set: for a broken
#                            terminal); after one timeout the next fail at once
#   screen                   everything the terminal showed since the last fresh_screen
#   fresh_screen             clears the terminal and its history (SEEN keeps what it showed)
#   tty_pid                  the process of the terminal (the shell, or what it exec'd)
#
# The terminal server is stopped at exit, then TTY_EXIT runs (helpers.sh's cleanup unless
# set, e.g. pcsc.sh's pcsc_exit).

TM=(tmux -S "$T_DIR/tmux.sock")
TM_BROKEN=0
SEEN=

tty_start() {
	local vars="" v
	if ! command -v tmux >/dev/null; then
		echo "skip $T_NAME: tmux not installed, interactive prompts not tested" >&2
		return 1
	fi
	trap tty_cleanup EXIT
	for v in "$@"; do vars+=" ${v%%=*}='${v#*=}'"; done
	"${TM[@]}" new-session -d -s t -x 200 -y 50 \
		"env -i HOME='$HOME' PATH='$PATH' TERM=xterm PS1='$ '$vars bash --norc --noprofile"
	wait_n 1 '^\$ ?$'
}

tty_cleanup() {
	local rc=$?
	set +e
	"${TM[@]}" kill-server 2>/dev/null
	(exit $rc)
	"${TTY_EXIT:-cleanup}"
}

screen() { "${TM[@]}" capture-pane -p -J -S - -t t 2>/dev/null; }

fresh_screen() {
	local _
	SEEN+=$(screen)
	"${TM[@]}" send-keys -t t clear Enter
	for _ in $(seq 150); do # until the clear ran: one prompt line left
		[ "$("${TM[@]}" capture-pane -p -t t | grep -c .)" -le 1 ] && break
		sleep 0.1
	done
	"${TM[@]}" clear-history -t t
}

wait_n() {
	local _
	[ $TM_BROKEN -eq 0 ] || return 1
	for _ in $(seq "${TTY_WAIT:-150}"); do
		[ "$(screen | grep -cE -- "$2")" -ge "$1" ] && return 0
		sleep 0.1
	done
	TM_BROKEN=1
	fail "terminal: '$2' never appeared $1 time(s): $(screen | tail -n 5)"
	return 1
}

type_line() {
	"${TM[@]}" send-keys -t t -l "$1"
	"${TM[@]}" send-keys -t t Enter
}

type_file() {
	"${TM[@]}" load-buffer -b secret "$1"
	"${TM[@]}" paste-buffer -d -b secret -t t
	"${TM[@]}" send-keys -t t Enter
}

tty_pid() { "${TM[@]}" display -p -t t '#{pane_pid}'; }
