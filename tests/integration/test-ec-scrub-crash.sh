#!/usr/bin/env bash
# An ec 2+1 volume's coordinator SIGKILLed while its scrub repairs damage on
# the coordinator's own chunk copy, with host writes going on (a gap named by
# session 15's note: no test crashed the coordinator there).  A scrub repair
# rewrites one chunk in place (ec_scrub.c repair_chunk, no stage journal): a
# crash can leave that chunk half rewritten, the other damaged blocks not yet
# reached, and host transactions in every journal.
#
# What must hold afterwards (DESIGN.md invariants 1, 3, 4, 5):
#  - every write the writer saw acknowledged reads back, through the node
#    the volume is attached on again and with another chunk node stopped
#    (so every stripe decodes from either choice of two chunks);
#  - the damage is gone: the attach after the crash converges the copies
#    (repairing scrub) and `volume scrub --no-repair` then finds 0
#    mismatching, 0 repaired, 0 unrepaired stripes;
#  - no block of the damaged copy reads as the damage (its CRC check, or the
#    repair, catches every one).
#
# 4 nodes; each round a fresh 32 MiB ec 2+1 volume (16 KiB unit) attached on
# a chunk node C other than n1 (n1 holds the metadata store); a first write
# stream acknowledged and logged (crash_writer); 96 blocks of C's chunk data
# file overwritten with 0x5a under the running tesserad (O_DIRECT, so no
# cached page hides them); a second write stream and a repairing scrub
# started; C killed SCRUB_KILL_MS (randomised per round) after the scrub
# began; C started again; the volume attached on C (round 1) or on the other
# chunk node (round 2); the checks above.
# EC_SCRUB_CRASH_ROUNDS=N runs N rounds (2); --long doubles them.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera "$CRASH_WRITER"
require_cmd nbdcopy dd

ROUNDS=${EC_SCRUB_CRASH_ROUNDS:-2}
[ "${TSR_LONG:-0}" = 1 ] && ROUNDS=$(( ROUNDS * 2 ))
DAMAGED=96

# --peer-timeout 5000 (tesserad's default; cluster.sh's 2000 otherwise), as
# test-ec-volume: the attach after the crash rolls the old epoch's txns
# forward, and a chunk node slower than 2 s to answer its OPEN (n1, the
# metadata node, at load 6-10) is recorded out of sync then (step 3b of
# ec.c), the converge scrub runs without it, and n2's damaged chunks --
# two faults of a 2+1 stripe -- are never repaired: n1 never gets back in
# sync (CI 21a; docs/ARCHITECTURE.md, the EC resync of session 21, helper
# ecflake).  No step waits for the timeout (nodes are killed or stopped,
# never frozen).
cl_start 4 --peer-timeout 5000
# the damage: one 4 KiB block of 0x5a, made once (a python start per block
# written and per block checked took 27 s of the test at load 14)
PAT=$CL_ROOT/damage.blk
"$PY" -c 'import sys; sys.stdout.buffer.write(b"\x5a" * 4096)' >"$PAT" || fail "cannot write $PAT"



# damage FILE N SEED: overwrite N distinct 4 KiB blocks of FILE's first
# 16 MiB with 0x5a, O_DIRECT (the running tesserad's page cache drops them);
# prints the block numbers
damage() {
	local f=$1 b
	for b in $("$PY" -c 'import random, sys
r = random.Random(int(sys.argv[2]))
print(" ".join(str(x) for x in sorted(r.sample(range(4096), int(sys.argv[1])))))' "$2" "$3"); do
		dd if="$PAT" of="$f" bs=4096 seek="$b" count=1 oflag=direct conv=notrunc status=none ||
			fail "cannot damage block $b of $f"
		printf '%s ' "$b"
	done
}

# no_damage_left FILE BLOCKS...: none of BLOCKS of FILE (read from the disk)
# is the 0x5a damage any more
no_damage_left() {
	local f=$1 b n=0
	shift
	for b in "$@"; do
		if dd if="$f" bs=4096 skip="$b" count=1 iflag=direct status=none |
			cmp -s - "$PAT"; then
			n=$(( n + 1 ))
		fi
	done
	(( n == 0 )) || fail "$n of the damaged blocks of $f still hold the damage after the convergence"
}

run_round() {
	local r=$1 vol=vsc$1 copies c= y= att kill_ms blocks f b= n wrc out
	log "=== round $r ($vol)"
	ctsr volume create "$vol" --size 32M --ec 2+1 --stripe-unit 16K >/dev/null || fail "$vol: create"
	: >"$CL_ROOT/$vol.acked"
	copies=$(cl_rec_nodes "$vol")
	for n in $copies; do
		[ "$n" = n1 ] && continue
		if [ -z "$c" ]; then c=$n; else y=$n; fi
	done
	[ -n "$c" ] && [ -n "$y" ] || fail "$vol: copies $copies: want two chunk nodes other than n1"
	ctsr volume attach "$vol" --node "$c" >/dev/null || fail "$vol: attach on $c"
	log "$vol: copies $copies, coordinator $c"

	cl_crash_write "$vol" "$c" w1 --seq-base $(( r * 100000000 )) --duration 2
	reap "$BG_PID" || { cat "$CL_ROOT/$vol.w1.out" >&2; fail "$vol: first writer"; }
	log "$vol: w1 $(grep -o '[0-9]* acknowledged' "$CL_ROOT/$vol.w1.out")"

	f=$(cl_copy_file "${c#n}" "$vol") || fail "$vol: no copy on $c"
	# shellcheck disable=SC2207
	blocks=($(damage "$f" "$DAMAGED" "$(( RANDOM + r ))"))
	assert_eq "${#blocks[@]}" "$DAMAGED" "$vol: blocks damaged on $c"
	log "$vol: $DAMAGED blocks of $c's chunk file overwritten with 0x5a"

	cl_crash_write "$vol" "$c" w2 --seq-base $(( r * 100000000 + 50000000 ))
	local w2=$BG_PID
	bg ctsr volume scrub "$vol"
	local scrub=$BG_PID
	kill_ms=$(( 150 + RANDOM % 600 ))
	sleep "$(printf '0.%03d' "$kill_ms")"
	log "$vol: scrub running: $(vstatus "$vol" '"%s done %s, mismatches %s, repaired %s" % (j["scrub_running"], j.get("scrub_done_bytes"), j.get("scrub_mismatches"), j.get("scrub_repaired"))' 2>&1)"
	cl_kill "${c#n}"
	log "$vol: coordinator $c SIGKILLed ${kill_ms} ms into the scrub"
	reap "$w2" && wrc=0 || wrc=$?
	[ "$wrc" = 3 ] || { cat "$CL_ROOT/$vol.w2.out" >&2; fail "$vol: crash_writer exited $wrc, want 3"; }
	log "$vol: w2 $(grep -o '[0-9]* acknowledged' "$CL_ROOT/$vol.w2.out")"
	reap "$scrub" || true # cut by the crash: its exit status is not the point

	cl_start_node "${c#n}"
	cl_wait_nodes_alive 4
	if (( r % 2 )); then att=$c; else att=$y; fi
	ctsr volume detach "$vol" >/dev/null 2>&1 || true
	cl_attach_retry "$vol" "$att"
	cl_wait_synced "$vol" 120
	cl_wait_scrub_idle "$vol"
	cl_crash_verify "$vol" "$att" "$vol: attached on $att after the crash"

	# decoded without one chunk node (not n1, the metadata node, and not
	# the attached one): every stripe must decode from the other two
	for n in $copies; do
		[ "$n" != "$att" ] && [ "$n" != n1 ] && { b=$n; break; }
	done
	[ -n "$b" ] || fail "$vol: no chunk node to stop"
	cl_stop "${b#n}"
	cl_wait_state "$vol" "$b" out-of-sync 30
	cl_crash_verify "$vol" "$att" "$vol: $b stopped (decoded without its chunks)"
	cl_start_node "${b#n}"
	cl_wait_synced "$vol" 120

	cl_scrub_clean "$vol" "$vol: after the crash"
	out=$(ctsr volume detach "$vol" 2>&1) || fail "$vol: detach: $out"
	no_damage_left "$(cl_copy_file "${c#n}" "$vol")" "${blocks[@]}"
	log "$vol: none of the $DAMAGED damaged blocks of $c holds the damage"
	ctsr volume delete "$vol" >/dev/null || fail "$vol: delete"
}

for (( i=1; i<=ROUNDS; i++ )); do
	run_round "$i"
done
cl_stop_all
log ok
