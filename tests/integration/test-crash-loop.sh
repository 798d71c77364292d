#!/usr/bin/env bash
# Crash loop: SIGKILL tesserad at random moments during writes, in a loop.
#
# Each round: start tesserad (it must open the store every time), start
# crash_writer (2 connections x QD 8 random 4 KiB self-describing writes, some FUA, some
# flushes; it logs every ACKNOWLEDGED write), wait 0.2-2 s, kill -9 tesserad,
# restart it, and have crash_writer verify read back every block: each block
# it logged must hold its last acknowledged write or a later (in-flight) one,
# never older data, garbage or a read error.  Every 5th round uses --io libaio.
#
# Rounds: TSR_CRASH_ROUNDS (default 20; 300 with --long or TSR_LONG=1; the
# ASan run of scripts/test.sh 10 more).  Each round is a kill at a new random
# moment: more rounds are more moments, so the many are in --long.
. "$(dirname "$0")/functions.sh"

rounds=${TSR_CRASH_ROUNDS:-20}
if [ "${1:-}" = --long ] || [ "${TSR_LONG:-0}" = 1 ]; then
	rounds=${TSR_CRASH_ROUNDS:-300}
fi

require_tessera "$CRASH_WRITER"

make_tmpdir D
WLOG=$D/acked.log
: >"$WLOG"

start_tesserad "$D"
vol_create "$D" crash 64M
# A second volume that is never written: it must stay all zeros.
vol_create "$D" bystander 8M
stop_tesserad

uri=$(nbd_uri "$D" crash)
for (( r=1; r<=rounds; r++ )); do
	io=auto
	(( r % 5 == 0 )) && io=libaio
	start_tesserad "$D" --io "$io"
	"$CRASH_WRITER" write "$uri" "$WLOG" --qd 8 --conns 2 --seq-base $(( r * 1000000000 )) \
		--seed $(( RANDOM * 65536 + RANDOM + r )) >"$D/writer.out" 2>&1 &
	wpid=$!
	track_pid "$wpid"
	# The kill must find the writer connected: wait for its start line
	# (printed after its probe connection), not longer than 30 s.
	for (( i=0; i<300; i++ )); do
		grep -q '^crash_writer: [0-9]* blocks' "$D/writer.out" 2>/dev/null && break
		kill -0 "$wpid" 2>/dev/null || break
		sleep 0.1
	done
	# 0.2 .. 2.0 s
	sleep "$(( 2 + RANDOM % 19 ))e-1"
	kill9_tesserad
	reap "$wpid" && wrc=0 || wrc=$?
	[ "$wrc" = 3 ] || { cat "$D/writer.out" >&2; fail "round $r: crash_writer exited $wrc, want 3 (connection lost)"; }
	acked=$(grep -o '[0-9]* acknowledged' "$D/writer.out" | cut -d' ' -f1)

	start_tesserad "$D" --io "$io"
	if ! out=$("$CRASH_WRITER" verify "$uri" "$WLOG" 2>&1); then
		printf '%s\n' "$out" >&2
		fail "round $r (--io $io): acknowledged writes not read back"
	fi
	log "round $r/$rounds (--io $io): $acked acked this round; ${out##*$'\n'}"
	# The bystander volume is untouched.
	nbdcopy "$(nbd_uri "$D" bystander)" "$D/bystander.img" ||
		fail "round $r: cannot read bystander volume"
	cmp -s "$D/bystander.img" <(head -c 8M /dev/zero) || fail "round $r: bystander volume changed"
	# Alternate a clean stop and a kill with no writes in flight.
	if (( r % 2 )); then stop_tesserad; else kill9_tesserad; fi
done
log "$rounds rounds, $(wc -l <"$WLOG") acknowledged writes verified"
