#!/usr/bin/env bash
# Every bench script (bench/*.sh but lib.sh) with -h, with --help and with an
# unknown argument: the help prints the header comment (with the script's
# environment knobs, BENCH_* or PERCALL_*) and exits 0; the unknown argument
# is an error on stderr that names it and points at --help, exit 2 (also after
# a BUILD_DIR for percall.sh).  In none of these runs may the script start
# anything: each runs in a private mount namespace with an empty tmpfs over
# /var/tmp and over bench/results (so the lead's benchmarks beside it count
# neither way) and with a marker in its environment; afterwards no process
# may carry the marker and both tmpfs must be empty.  A script that does not
# exit within 10 s fails (and is killed with what it started).
. "$(dirname "$0")/functions.sh"

require_root
require_cmd unshare timeout mount awk
unshare -m --propagation private true 2>/dev/null || skip "unshare -m is not allowed here"

BENCH=$TSR_SRC/bench
TAG=benchhelp-$$-$RANDOM
export TSR_SRC
make_tmpdir T
BIND=$(mktemp -d /tmp/tessera-bench-help.XXXXXX) || fail "mktemp in /tmp"
on_exit "rmdir '$BIND'"
export BIND

# The pids whose environment holds the marker.
tagged() {
	grep -lsxz "TSR_BENCH_HELP_TAG=$TAG" /proc/[0-9]*/environ | sed 's|^/proc/||; s|/environ$||'
}

# What runs inside the namespace: "$@" is the script and its arguments.
# shellcheck disable=SC2016  # expanded by the inner bash
# The source tree is bound to $BIND first: it may itself live under /var/tmp
# (a CI clone), which the tmpfs would hide.
INNER='
mount --bind "$TSR_SRC" "$BIND" || exit 90
mount -t tmpfs bench-help /var/tmp || exit 90
res=$BIND/bench/results
[ ! -d "$res" ] || mount -t tmpfs bench-help "$res" || exit 90
s=$1
shift
timeout -k 2 10 bash "$BIND/bench/${s##*/}" "$@" >&3 2>&4
rc=$?
find /var/tmp "$res" -mindepth 1 -maxdepth 1 2>/dev/null >&5
exit $rc
'

# bench_run WANT_RC SCRIPT ARGS...: run it, check the exit code and that it
# left nothing behind; its output in $T/out and $T/err.
bench_run() {
	local want=$1 script=$2 rc left name
	shift 2
	name="bench/${script##*/} $*"
	TSR_BENCH_HELP_TAG=$TAG unshare -m --propagation private bash -c "$INNER" inner \
		"$script" "$@" 3>"$T/out" 4>"$T/err" 5>"$T/new" && rc=0 || rc=$?
	left=$(tagged)
	if [ -n "$left" ]; then
		# shellcheck disable=SC2086  # one pid a word
		kill -9 $left 2>/dev/null
		fail "$name started processes that are still running: $(for p in $left; do
			tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null; echo; done | head -n 5)"
	fi
	[ "$rc" != 90 ] || fail "$name: could not mount a tmpfs in the namespace"
	case $rc in
	124 | 137) fail "$name did not exit within 10 s (it started the benchmark?); stderr: $(tail -n 3 "$T/err")" ;;
	esac
	[ ! -s "$T/new" ] || fail "$name created $(tr '\n' ' ' <"$T/new")"
	[ "$rc" = "$want" ] || fail "$name exited $rc, want $want; stderr: $(tail -n 3 "$T/err")"
}

n=0
for s in "$BENCH"/*.sh; do
	b=${s##*/}
	[ "$b" != lib.sh ] || continue
	# the header's first line, as the help must print it
	first=$(sed -n '2s/^# \{0,1\}//p' "$s")
	for h in --help -h; do
		bench_run 0 "$s" "$h"
		[ "$(head -n 1 "$T/out")" = "$first" ] ||
			fail "$b $h: first line '$(head -n 1 "$T/out")', want '$first'"
		grep -qE '(BENCH|PERCALL)_[A-Z]' "$T/out" || fail "$b $h: no knob (BENCH_*) in the usage"
		! grep -q '^#' "$T/out" || fail "$b $h: comment marks left in the usage"
		! grep -q '^set -' "$T/out" || fail "$b $h: the usage runs past the header"
	done
	bench_run 2 "$s" --bogus-arg
	grep -q -- '--bogus-arg' "$T/err" || fail "$b --bogus-arg: the error does not name it: $(cat "$T/err")"
	grep -q -- '--help' "$T/err" || fail "$b --bogus-arg: the error does not point at --help"
	[ ! -s "$T/out" ] || fail "$b --bogus-arg: printed on stdout: $(head -n 2 "$T/out")"
	log "ok: $b (--help, -h, --bogus-arg)"
	n=$((n + 1))
done
[ "$n" -ge 7 ] || fail "only $n bench scripts found in $BENCH"

# percall.sh takes BUILD_DIR operands: an option after one is still refused,
# and --help after one still helps
bench_run 2 "$BENCH/percall.sh" "$TSR_BUILD" --bogus-arg
grep -q -- '--bogus-arg' "$T/err" || fail "percall.sh BUILD_DIR --bogus-arg: not named"
bench_run 0 "$BENCH/percall.sh" "$TSR_BUILD" --help
grep -q PERCALL_ROUNDS "$T/out" || fail "percall.sh BUILD_DIR --help: no usage"
log "ok: percall.sh BUILD_DIR --bogus-arg / --help"
