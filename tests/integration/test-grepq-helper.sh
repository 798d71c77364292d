#!/usr/bin/env bash
# grepq (tests/integration/grepq.sh), what the tests pipe output into instead
# of `grep -q`, under `set -o pipefail` as every test runs (functions.sh):
# 1. a producer writing 200 KiB in 2048 writes, the match on its first line,
#    piped into grepq: status 0 every time, and the producer ran to its end.
# 2. the same producer piped into plain `grep -q` dies of SIGPIPE (status 141)
#    at least once in 10 tries: the failure grepq is for (CI run 14c).  If it
#    never does (SIGPIPE ignored, a pipe that holds it all), that half is
#    skipped with a note, not failed: it shows the cause, not grepq.
# 3. grepq answers as `grep -q` does, with the options the tests use: -i -x
#    -F -E -w -v --, no match, a bad pattern (2), empty input, no output, and
#    the producer's own failure still fails the pipeline.
# 4. headc (the same file), `head -c` for the middle of a pipeline (after
#    nbdcopy ... -): the same producer into `headc 1000`: status 0 every
#    time, exactly its first 1000 bytes, the producer ran to its end; a
#    producer's failure still fails the pipeline.  (Plain `head -c 1000` is
#    the SIGPIPE of half 2; not tried again.)
. "$(dirname "$0")/functions.sh"

make_tmpdir T
LINES_N=2048   # 100 bytes each: 200 KiB, over a 64 KiB pipe and grep's buffer

# produce TAG: the match, then LINES_N - 1 more lines, one write(2) each
# (bash flushes printf per call); $T/done.TAG once the last one went out.
produce() {
	local i
	rm -f "$T/done.$1"
	printf '%-99s\n' "MATCH on the first line"
	for (( i = 1; i < LINES_N; i++ )); do printf '%099d\n' "$i"; done
	: >"$T/done.$1"
}
[ "$(produce size | wc -c)" = $(( LINES_N * 100 )) ] || fail "the producer does not write 200 KiB"

# ---- 1. grepq lets the producer finish
for (( r = 0; r < 10; r++ )); do
	produce new$r | grepq '^MATCH' && rc=0 || rc=$?
	[ "$rc" = 0 ] || fail "produce | grepq: status $rc on try $r, want 0"
	[ -e "$T/done.new$r" ] || fail "produce | grepq: the producer was cut off on try $r"
	produce neg$r | grepq 'NOT THERE' && rc=0 || rc=$?
	[ "$rc" = 1 ] || fail "produce | grepq (no match): status $rc on try $r, want 1"
done
log "produce | grepq: 0 in 10 of 10 tries, the producer always finished"

# ---- 2. the plain form it replaces fails
n141=0
for (( r = 0; r < 10; r++ )); do
	produce old$r 2>/dev/null | grep -q '^MATCH' && rc=0 || rc=$?
	case $rc in
	0) ;;
	141) n141=$((n141 + 1))
	     [ -e "$T/done.old$r" ] && fail "status 141 but the producer finished (try $r)" ;;
	*) fail "produce | grep -q: status $rc on try $r, want 0 or 141" ;;
	esac
done
if [ "$n141" = 0 ]; then
	ign=$(awk '/^SigIgn:/ { print $2 }' /proc/self/status)
	log "NOTE: produce | grep -q never died of SIGPIPE here (10 tries; SIGPIPE" \
		"$( (( 0x$ign & (1 << 12) )) && echo ignored || echo not ignored)); half 2 skipped"
else
	log "produce | grep -q: status 141 in $n141 of 10 tries (what grepq avoids)"
fi

# ---- 3. the same answers as grep -q
# same WANT INPUT GREP-ARGS...: grep -q and grepq both answer WANT on INPUT.
same() {
	local want=$1 input=$2 got old
	shift 2
	printf '%s' "$input" | grep -q "$@" 2>/dev/null && old=0 || old=$?
	printf '%s' "$input" | grepq "$@" 2>/dev/null && got=0 || got=$?
	[ "$old" = "$want" ] || fail "grep -q $* on '$input': $old, the check expects $want"
	[ "$got" = "$want" ] || fail "grepq $* on '$input': $got, want $want (as grep -q)"
}
same 0 $'a\nB\n' -i b
same 1 $'a\nB\n' b
same 0 $'abc\n' -x abc
same 1 $'abc\n' -x ab
same 0 $'a.c\n' -F a.c
same 1 $'abc\n' -F a.c
same 0 $'abc\n' a.c
same 0 $'xab\n' -E 'a(b|c)$'
same 0 $'s1 s2\n' -w s1
same 1 $'s12\n' -w s1
same 0 $'--ec K+M\n' -- '--ec K+M'
same 0 $'in-sync\nstale\n' -v '^in-sync$'
same 1 $'in-sync\nin-sync' -v '^in-sync$'
same 1 '' -v x
same 0 $'x\n' -iE -- 'A|X'
same 2 $'x\n' -E '('
! printf 'x\n' | grepq y || fail "! ... | grepq: a negation does not hold"
out=$(printf 'x\n' | grepq x) || fail "grepq x on x"
[ -z "$out" ] || fail "grepq printed '$out'"
{ printf 'x\n'; exit 3; } | grepq x && rc=0 || rc=$?
[ "$rc" = 3 ] || fail "a producer that fails (3) after a match: pipeline status $rc, want 3"
log "grepq answers as grep -q on 16 inputs and options"

# ---- 4. headc: head -c that lets the producer finish
produce want >"$T/all"
want=$(head -c 1000 "$T/all" | sha256sum)
for (( r = 0; r < 10; r++ )); do
	got=$(produce head$r | headc 1000 | sha256sum) && rc=0 || rc=$?
	[ "$rc" = 0 ] || fail "produce | headc 1000: status $rc on try $r, want 0"
	[ -e "$T/done.head$r" ] || fail "produce | headc 1000: the producer was cut off on try $r"
	[ "$got" = "$want" ] || fail "produce | headc 1000: not the first 1000 bytes on try $r"
done
[ "$(printf '12345' | headc 3)" = 123 ] || fail "headc 3 on '12345': '$(printf '12345' | headc 3)'"
{ printf 'x\n'; exit 3; } | headc 1 >/dev/null && rc=0 || rc=$?
[ "$rc" = 3 ] || fail "a producer that fails (3): the pipeline through headc: status $rc, want 3"
log "produce | headc 1000: 0 in 10 of 10 tries, the first 1000 bytes, the producer always finished"
