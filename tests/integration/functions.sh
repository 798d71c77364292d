# shellcheck shell=bash disable=SC2034
# Shared helpers for the integration tests (tests/integration/test-*.sh).
#
# Sourced by every test:   . "$(dirname "$0")/functions.sh"
#
# Environment (set by ctest; guessed when a test is run by hand):
#   TSR_SRC    source tree (default: two levels up from this file)
#   TSR_BUILD  build tree  (default: $TSR_SRC/build)
#
# Conventions: exit 0 = passed, 1 = failed, 77 = skipped (always with a reason).
# Everything a test starts (tesserad, clients, mounts, loop devices, temp dirs)
# is registered here and torn down by one EXIT trap, in reverse order.

set -u
set -o pipefail

TSR_SRC=${TSR_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
TSR_BUILD=${TSR_BUILD:-$TSR_SRC/build}
TESSERAD=$TSR_BUILD/tools/tesserad/tesserad
TESSERA=$TSR_BUILD/tools/tessera/tessera
TESSERA_BENCH=$TSR_BUILD/tools/tessera-bench/tessera-bench
CRASH_WRITER=$TSR_BUILD/tests/crash_writer
NBD_HOLD=$TSR_BUILD/tests/nbd_hold
PY=/usr/bin/python3
TEST_NAME=$(basename "$0" .sh)

# Loud by default when run by hand; ctest captures it anyway.
_t0=$(date +%s)
log() { printf '[%s +%ss] %s: %s\n' "$(date +%T)" "$(( $(date +%s) - _t0 ))" "$TEST_NAME" "$*" >&2; }

# ------------------------------------------------------------------ cleanup
_cleanup_cmds=()     # shell snippets, run in reverse order
_tsr_dirs=()         # data dirs whose tesserad.log is shown on failure

# on_exit CMD: run CMD (a string, eval'd) when the test exits, newest first.
on_exit() { _cleanup_cmds+=("$1"); }

_run_cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	set +e
	if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
		for d in "${_tsr_dirs[@]}"; do
			[ -f "$d/tesserad.log" ] || continue
			echo "----- last lines of $d/tesserad.log -----" >&2
			tail -n 40 "$d/tesserad.log" >&2
		done
	fi
	for (( i=${#_cleanup_cmds[@]}-1; i>=0; i-- )); do
		eval "${_cleanup_cmds[$i]}" >/dev/null 2>&1
	done
	case $rc in
	0) log "PASS" ;;
	77) log "SKIP" ;;
	*) log "FAIL (exit $rc)" ;;
	esac
	exit "$rc"
}
trap _run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# grepq [GREP-OPTION...] PATTERN: `grep -q` at the end of a pipeline that
# reads its input to the end, so the producer is never killed by SIGPIPE
# (exit 141 under pipefail although the pattern matched).  Use it for every
# `PRODUCER | grep -q ...`; see grepq.sh.
# shellcheck source=tests/integration/grepq.sh
. "$(dirname "${BASH_SOURCE[0]}")/grepq.sh"

# ------------------------------------------------------------------ verdicts
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

# require_cmd CMD...: skip unless every command is on PATH (or an executable path).
require_cmd() {
	local c
	for c in "$@"; do
		if [ -x "$c" ] || command -v "$c" >/dev/null 2>&1; then
			continue
		fi
		skip "required command not found: $c"
	done
}
require_root() { [ "$(id -u)" = 0 ] || skip "must run as root"; }

# require_tessera: the binaries under test must exist (a missing one is a
# failure of the build, not a skip).
require_tessera() {
	local b
	for b in "$TESSERAD" "$TESSERA" "$@"; do
		[ -x "$b" ] || fail "not built: $b (TSR_BUILD=$TSR_BUILD)"
	done
	[ -x "$PY" ] || skip "$PY not found"
}

# assert CMD...: run CMD, fail with its text unless it succeeds.
assert() { "$@" || fail "assertion failed: $*"; }
# assert_eq GOT WANT WHAT
assert_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }

# expect_fail EXPECTED_RC PATTERN CMD...: CMD must exit EXPECTED_RC and print
# (stdout or stderr) something matching the extended regex PATTERN.
expect_fail() {
	local want=$1 pat=$2 out rc
	shift 2
	out=$("$@" 2>&1) && rc=0 || rc=$?
	[ "$rc" = "$want" ] || fail "'$*' exited $rc, want $want; output: $out"
	printf '%s\n' "$out" | grepq -iE -- "$pat" ||
		fail "'$*' output does not match /$pat/: $out"
	log "ok (exit $rc): $* -> $(printf '%s' "$out" | head -n1)"
}

# ------------------------------------------------------------------ temp dirs
# make_tmpdir VAR: set VAR to a fresh dir on a real disk (O_DIRECT does not
# work on tmpfs); removed at exit unless TSR_KEEP=1.
make_tmpdir() {
	local d
	d=$(mktemp -d /var/tmp/tessera-"$TEST_NAME".XXXXXX) || fail "mktemp"
	[ "${TSR_KEEP:-0}" = 1 ] || on_exit "rm -rf '$d'"
	printf -v "$1" '%s' "$d"
}

# free_port: a TCP port on 127.0.0.1 that nobody listens on right now.
free_port() {
	"$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# free_ports N: N distinct free TCP ports on 127.0.0.1, one per line.  The
# sockets are held until all are chosen: N free_port calls in a row could get
# the same port twice (each socket is closed before the next bind), and two
# nodes then listened on one port (test-cluster-failed-attach, CI run 12c:
# "listen: tcp:127.0.0.1:34371: Address already in use").
free_ports() {
	"$PY" -c 'import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# ------------------------------------------------------------------ processes
# Processes we started and have not reaped yet; the exit trap kills only
# these (so a recycled pid is never hit).
declare -A _live_pids=()
track_pid() { _live_pids[$1]=1; on_exit "_kill_tracked $1"; }
forget_pid() { unset "_live_pids[$1]"; }
_kill_tracked() {
	[ -n "${_live_pids[$1]:-}" ] || return 0
	kill -9 "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	forget_pid "$1"
}

# freeze_pids PID...: SIGSTOP each PID and return once it is stopped.  kill(2)
# returns when the signal is queued: it wakes one thread of a multi-threaded
# process, which stops the others only once it runs, so on a loaded machine
# a tesserad's other threads went on answering peers after `kill -STOP`
# (test-ec-snap-probe-stall: the "frozen" node answered the probe at once).
# Waits (3 s bound, then fails) until every thread is in state T, except
# io_uring's workers (iou-*), which never stop.
freeze_pids() {
	local p t i s c all line
	kill -STOP "$@" || return 1
	for p in "$@"; do
		for (( i=0; i<300; i++ )); do
			all=1
			for t in /proc/"$p"/task/*; do
				read -r c <"$t/comm" 2>/dev/null || continue
				[[ $c == iou-* ]] && continue
				read -r line <"$t/stat" 2>/dev/null || continue
				s=${line##*) }
				case ${s:0:1} in T | t | Z | X) ;; *) all=0 ;; esac
			done
			[ "$all" = 1 ] && break
			sleep 0.01
		done
		[ "$all" = 1 ] || { log "freeze_pids: pid $p not stopped after 3 s"; return 1; }
	done
}

# bg CMD...: start CMD in the background, register it for killing; sets BG_PID.
bg() {
	"$@" &
	BG_PID=$!
	track_pid "$BG_PID"
}

# reap PID: wait for a tracked background process; returns its exit status.
reap() {
	local rc
	wait "$1" && rc=0 || rc=$?
	forget_pid "$1"
	return "$rc"
}

# wait_dead PID SECONDS WHAT: until PID (killed by a test hook or fault
# switch) is gone, then reaped; fails "WHAT: still alive after SECONDS s".
wait_dead() {
	local t
	for (( t=0; t<$2*10; t++ )); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$1" 2>/dev/null && fail "$3: still alive after $2 s"
	reap "$1" 2>/dev/null || true
}

# wait_acked LOG MORE PID [TIMEOUT_S]: until the writer PID (crash_writer,
# running) has logged MORE acknowledgments to LOG beyond those there now
# (one line each), instead of a fixed sleep before a fault: the fault then
# meets writes in flight and MORE acknowledged ones to check, however fast
# the machine.  Fails if PID exits first or after TIMEOUT_S (30).
wait_acked() {
	local log=$1 want i
	want=$(( $(wc -l <"$log") + $2 ))
	for (( i=0; i<${4:-30}*20; i++ )); do
		[ "$(wc -l <"$log")" -ge "$want" ] && return 0
		kill -0 "$3" 2>/dev/null || fail "the writer (pid $3) exited before $2 acknowledgments"
		sleep 0.05
	done
	fail "the writer (pid $3) logged fewer than $2 acknowledgments in ${4:-30} s"
}

TSRD_WRAP=()
# start_tesserad DIR [ARGS...]: start the daemon on DIR (log appended to
# DIR/tesserad.log), wait until it has written DIR/tesserad.pid with its own
# pid and its sockets exist.  Sets TSRD_PID.  Fails if it dies or is not
# ready within 30 s.
start_tesserad() {
	local dir=$1 i
	shift
	mkdir -p "$dir"
	[[ " ${_tsr_dirs[*]} " == *" $dir "* ]] || _tsr_dirs+=("$dir")
	echo "=== start $(date +%T.%N) args: $*" >>"$dir/tesserad.log"
	# TSRD_WRAP: a command prefix, e.g. (ip netns exec NS) for cluster tests
	"${TSRD_WRAP[@]}" "$TESSERAD" --data "$dir" "$@" >>"$dir/tesserad.log" 2>&1 &
	TSRD_PID=$!
	track_pid "$TSRD_PID"
	for (( i=0; i<300; i++ )); do
		if ! kill -0 "$TSRD_PID" 2>/dev/null; then
			local rc
			reap "$TSRD_PID" && rc=0 || rc=$?
			fail "tesserad exited with status $rc during start-up (args: --data $dir $*)"
		fi
		if [ -f "$dir/tesserad.pid" ] &&
		   [ "$(cat "$dir/tesserad.pid" 2>/dev/null)" = "$TSRD_PID" ] &&
		   [ -S "$dir/admin.sock" ]; then
			return 0
		fi
		sleep 0.1
	done
	fail "tesserad not ready after 30 s (args: --data $dir $*)"
}

# stop_tesserad [PID]: SIGTERM, wait up to 30 s; a clean shutdown exits 0.
stop_tesserad() {
	local pid=${1:-$TSRD_PID} i rc
	kill -TERM "$pid" 2>/dev/null || fail "stop_tesserad: $pid is not running"
	for (( i=0; i<300; i++ )); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && fail "tesserad $pid did not exit within 30 s of SIGTERM"
	reap "$pid" && rc=0 || rc=$?
	[ "$rc" = 0 ] || fail "tesserad $pid exited with status $rc on SIGTERM (want 0)"
}

# kill9_tesserad [PID]: SIGKILL and reap.
kill9_tesserad() {
	local pid=${1:-$TSRD_PID}
	kill -9 "$pid" 2>/dev/null
	reap "$pid" 2>/dev/null
	return 0
}

# assert_alive [PID]
assert_alive() {
	local pid=${1:-$TSRD_PID}
	kill -0 "$pid" 2>/dev/null || fail "tesserad ($pid) is not running any more"
}

# ------------------------------------------------------------------ tessera
# tsr DIR ARGS...: the CLI against the daemon serving DIR.
tsr() {
	local dir=$1
	shift
	"$TESSERA" --data "$dir" "$@"
}

# vol_create DIR NAME SIZE
vol_create() { tsr "$1" volume create "$2" --size "$3" >/dev/null || fail "volume create $2 --size $3"; }

# json_get EXPR: evaluate a Python expression on the JSON document `j` read from stdin.
#   tsr "$D" --json volume show v | json_get 'j["size"]'
json_get() {
	"$PY" -c 'import json,sys
j = json.load(sys.stdin)
v = eval(sys.argv[1])
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)' "$1"
}

# nbd_uri DIR NAME: the unix-socket URI of a volume.
nbd_uri() { echo "nbd+unix:///$2?socket=$1/nbd.sock"; }

# qemu_io DIR NAME CMD...: qemu-io commands (each one -c) on volume NAME
# through DIR/nbd.sock.
qemu_io() {
	local dir=$1 vol=$2 args=() c
	shift 2
	for c in "$@"; do args+=(-c "$c"); done
	qemu-io --image-opts "driver=nbd,export=$vol,server.type=unix,server.path=$dir/nbd.sock" \
		"${args[@]}"
}

# qemu_nbd_spec DIR NAME: the same as a qemu-io/qemu-img json filename.
qemu_nbd_spec() {
	echo "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"export\":\"$2\",\"server\":{\"type\":\"unix\",\"path\":\"$1/nbd.sock\"}}}"
}

# sha256 FILE
sha256() { sha256sum "$1" | cut -d' ' -f1; }
