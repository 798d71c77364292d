#!/usr/bin/env bash
# An ec 2+1 volume whose coordinator is SIGKILLed while one chunk copy is
# rebuilt (replace-replica) or resynced (its node back after an absence)
# attaches again, on the dead coordinator's node and on another node, as
# long as k = 2 chunk copies are in sync (review 14c; DESIGN.md: a volume
# survives the loss of m chunks, acknowledged means stored).
#
# Until the fix, the attach elsewhere was refused ("1 copies in sync and
# reachable, 2 needed"): attach.c marks the dead coordinator's own copy
# full_resync (the mirror's rule: it may hold writes nobody acknowledged),
# and the ec layout took an IN_SYNC copy so marked for out of sync, leaving
# one in-sync copy beside the one being rebuilt.  An ec chunk copy changes in
# place only by the COMMIT of a txn in its stage journal, which the recovery
# lists, so the ec layout now ignores the flag on an IN_SYNC copy.
#
# 4 nodes; each case a fresh 32 MiB ec 2+1 volume (16 KiB unit, 1 MiB
# regions: 16 per chunk copy) attached on its coordinator C (n1 when it holds
# a chunk, else a chunk node), a seeded pattern written, sha256 recorded:
#   rebuild-same / rebuild-other: a chunk copy OLD (not C) replaced onto the
#     spare S; the rebuild held after its first region
#     (TSR_TEST_EC_RESYNC_HOLD_FILE, ec_resync.c); more writes through C
#     (acknowledged while S rebuilds); C SIGKILLed and started again;
#   resync-same / resync-other: a chunk node X (not C) stopped, the pattern
#     overwritten through C (X misses every region), X started, its resync
#     held after one region; more writes; C SIGKILLed and started again;
# then the volume attached on C (-same) or on the third chunk node (-other);
# and rebuild-x: C a chunk node other than n1, the volume attached on the
# node being rebuilt (S);
# the rebuild / resync restarts and ends; every copy in sync; the image reads
# back as written through the attached node, and again with another chunk
# node stopped (decoded from the rebuilt / resynced copy; when that node is
# not n1, the metadata node); scrub --no-repair clean (every stripe's three
# chunks consistent), every copy in sync.
# EC21_ONLY=KIND-WHERE (rebuild-other, ...) runs one case.  On the code before the fix: "cannot attach
# ... on n<other>" in the -other cases.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera "$CRASH_WRITER"

HOLD=/var/tmp/tsr-ec-rebuild-crash-hold.$$
export TSR_TEST_EC_RESYNC_HOLD_FILE=$HOLD
cl_start 4
on_exit "rm -f $HOLD"

recs() { ctsr --json volume show "$1" | json_get '" ".join("%s:%s" % (c["node"], c.get("state")) for c in j["copies"])'; }


# run_case KIND WHERE VOL [COORD]: KIND rebuild|resync; attach again on
# WHERE: same (the dead coordinator's node), other (the third chunk node y)
# or x (the node being rebuilt / resynced); COORD n1 (default: n1 when it
# holds a chunk) or notn1 (a chunk node other than n1).
run_case() {
	local kind=$1 where=$2 vol=$3 copies c= old= spare= x= y= att r n i b wrc
	log "=== $kind, attach again on the $where node ($vol${4:+, coordinator $4})"
	ctsr volume create "$vol" --size 32M --ec 2+1 --stripe-unit 16K >/dev/null || fail "$vol: create"
	: >"$CL_ROOT/$vol.acked"
	copies=$(cl_rec_nodes "$vol")
	case " $copies " in *" n1 "*) c=n1 ;; *) c=${copies%% *} ;; esac
	if [ "${4:-}" = notn1 ]; then
		for n in $copies; do [ "$n" != n1 ] && { c=$n; break; }; done
	fi
	for i in 1 2 3 4; do
		case " $copies " in
		*" n$i "*) [ "n$i" != "$c" ] && { [ -z "$old" ] && old=n$i || y=n$i; } ;;
		*) spare=n$i ;;
		esac
	done
	[ -n "$old" ] && [ -n "$y" ] && [ -n "$spare" ] || fail "$vol: copies $copies: no OLD/Y/spare"
	ctsr volume attach "$vol" --node "$c" >/dev/null || fail "$vol: attach on $c"
	log "$vol: copies $copies, coordinator $c"
	: > "$HOLD"
	if [ "$kind" = rebuild ]; then
		cl_crash_write "$vol" "$c" w1 --seq-base 1000000000 --duration 2
		reap "$BG_PID" || { cat "$CL_ROOT/$vol.w1.out" >&2; fail "$vol: first writer"; }
		ctsr_via "${c#n}" volume replace-replica "$vol" --node "$old" --to "$spare" >/dev/null ||
			fail "$vol: replace $old -> $spare"
		x=$spare
		log "$vol: $old replaced by $spare, rebuilding"
	else
		x=$old
		cl_stop "${x#n}"
		cl_crash_write "$vol" "$c" w1 --seq-base 1000000000 --duration 2
		reap "$BG_PID" || { cat "$CL_ROOT/$vol.w1.out" >&2; fail "$vol: writer with $x away"; }
		cl_start_node "${x#n}"
		log "$vol: written with $x stopped, $x started: resyncing"
	fi
	log "$vol: $(grep -o '[0-9]* acknowledged' "$CL_ROOT/$vol.w1.out")"
	wait_log "${c#n}" "ec $vol: copy [0-9]+ \\($x\\): resync held \\(test\\) after" 60
	log "$vol: status while held: $(vstatus "$vol" '" ".join("%s:%s:%s" % (c["node"], c["state"], c["dirty_bytes"]) for c in j["volume"]["copies"])')"
	# the coordinator dies under writes (transactions in every journal, its
	# own included), while x rebuilds / resyncs
	cl_crash_write "$vol" "$c" w2 --seq-base 2000000000
	# killed once the writer has 1000 more acknowledged writes, not after
	# a fixed sleep: writes in flight whatever the machine's speed
	wait_acked "$CL_ROOT/$vol.acked" 1000 "$BG_PID"
	cl_kill "${c#n}"
	reap "$BG_PID" && wrc=0 || wrc=$?
	[ "$wrc" = 3 ] || { cat "$CL_ROOT/$vol.w2.out" >&2; fail "$vol: crash_writer exited $wrc, want 3"; }
	log "$vol: coordinator $c SIGKILLed under the writer ($(grep -o '[0-9]* acknowledged' "$CL_ROOT/$vol.w2.out"))"
	rm -f "$HOLD"
	cl_start_node "${c#n}"
	cl_wait_nodes_alive 4
	r=$(recs "$vol")
	log "$vol: record after the restart: $r"
	case " $r " in *" $x:in-sync "*) fail "$vol: $x recorded in sync before its $kind ended: $r" ;; esac
	case $where in same) att=$c ;; x) att=$x ;; *) att=$y ;; esac
	ctsr volume detach "$vol" >/dev/null 2>&1 || true
	cl_attach_retry "$vol" "$att"
	# k = 2 copies counted in sync at the start-up: c's and y's
	wait_log "${att#n}" "ec $vol: ready, 2\\+1, .* 2 of 3 copies in sync" 5
	log "$vol: $(grep -E "ec $vol: ready" "$(cl_dir "${att#n}")/tesserad.log" | tail -1 | sed 's/.*: ready/ready/')"
	cl_wait_synced "$vol" 120
	wait_log "${att#n}" "ec $vol: copy [0-9]+ \\($x\\) in sync again" 5
	log "$vol: in sync: $(recs "$vol")"
	cl_crash_verify "$vol" "$att" "$vol: attached on $att after the $kind"
	# decoded with another chunk node away: x's chunks are right (not n1,
	# the metadata node; the scrub below checks every chunk anyway)
	b=
	for n in $(cl_rec_nodes "$vol"); do
		[ "$n" != "$att" ] && [ "$n" != "$x" ] && [ "$n" != n1 ] && { b=$n; break; }
	done
	if [ -n "$b" ]; then
		cl_stop "${b#n}"
		cl_wait_state "$vol" "$b" out-of-sync 30
		cl_crash_verify "$vol" "$att" "$vol: $b stopped ($x's chunks decoded)"
		cl_start_node "${b#n}"
		cl_wait_synced "$vol" 120
	fi
	cl_scrub_clean "$vol" "$vol"
	assert_eq "$(vstatus "$vol" '",".join(sorted(set(c["state"] for c in j["volume"]["copies"])))')" \
		in-sync "$vol: copy states in volume status"
	assert_eq "$(ctsr --json volume show "$vol" | json_get '",".join(sorted(set(c.get("state") for c in j["copies"])))')" \
		in-sync "$vol: copy states recorded"
	ctsr volume detach "$vol" >/dev/null || fail "$vol: detach"
	ctsr volume delete "$vol" >/dev/null || fail "$vol: delete"
}

for cs in rebuild:same:vrs rebuild:other:vro resync:same:vss resync:other:vso \
	rebuild:x:vrx:notn1; do
	IFS=: read -r k w v co <<<"$cs"
	[ -n "${EC21_ONLY:-}" ] && [ "$EC21_ONLY" != "$k-$w" ] && continue
	run_case "$k" "$w" "$v" "$co"
done
cl_stop_all
log ok
