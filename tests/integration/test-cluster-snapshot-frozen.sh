#!/usr/bin/env bash
# snapshot list/show/create through a node holding no in-sync copy of the
# volume answer within the peer timeout when one node holding an in-sync
# copy is frozen (SIGSTOP), from another such node (contract s16-snapfwd).
# They went to the record's first alive in-sync copy's node only, bounded by
# 120 s: list/show with the reply later (the client waited 120 s), a
# create's reply (its description read back) blocking on the main loop.  Now
# the alive nodes holding an in-sync copy are asked in turn, each bounded by
# the peer timeout (2000 ms here) (engine/cluster/snapshot.c snap_read_*).
#   4 nodes; v (3 replicas, min 1), snapshot s1, detached, its copies moved
#   off n1 (so on n2 n3 n4).
#   (a) the record's first copy's node F frozen: `snapshot list v` and
#       `snapshot show v s1` through n1 answer under `timeout 10` (before:
#       124) with s1; n1 answers `volume list` under `timeout 3` while the
#       list waits for F.
#   (b) `snapshot create v s2` through n1, F frozen after the cut and before
#       the reply reads s2 back (TSR_TEST_SNAP_REPLY_HOLD_FILE): the create
#       answers 0 under `timeout 15` describing s2 (before: 124, n1's loop
#       stopped for 120 s), n1 answers `volume list` under `timeout 3` while
#       the reply waits for F; s2 is listed by the other two copies' nodes
#       and through n1; once F runs again its copy has s2 too.
#   (c) every copy's node frozen: `snapshot list v` through n1 fails under
#       `timeout 20` naming each node ("no answer in 2000 ms"; or none alive
#       when their 3 s leases lapsed before it started).
#   (d) `--json volume show v` with every copy's node frozen carries
#       "snapshots_not_listed".
#   (e) `snapshot create v s3` through n1, every copy's node frozen after the
#       cut: answers 0 (under `timeout 20`), "created snapshot 'v@s3'", saying
#       its description could not be read; listed once they run again.
#   (f) attached on n1: `snapshot create v s4` through n1 (the cut on n1's
#       home worker, the read-back from the loop) describes s4.
# Every step runs; the failures are reported together at the end.
# Control: TSR_TEST_SNAP_READ_UNBOUNDED=1 (the old call) in the nodes'
# environment makes (a), (b), (c) and (e) fail with "status 124"; 7a32c7c's
# binaries (no hold hook) fail (a), (c) and (d).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera

FAILS=
bad() { log "FAIL: $*"; FAILS="$FAILS
  $*"; }

make_tmpdir HOLD_DIR
HOLD=$HOLD_DIR/reply.hold
export TSR_TEST_SNAP_REPLY_HOLD_FILE=$HOLD
cl_start 4
ctsr volume create v --size 8M --replicas 3 --min-replicas 1 >/dev/null || fail "volume create v"
ctsr snapshot create v s1 >/dev/null || fail "snapshot create v s1"

rec_nodes() { cl_rec_nodes v; }
cl_move_off_n1 v synced
case " $(rec_nodes) " in *" n1 "*) fail "v still has a copy on n1: $(rec_nodes)" ;; esac
[ "$(ctsr --json snapshot list v | json_get '" ".join(s["name"] for s in j["snapshots"])')" = \
	"s1" ] || fail "snapshot list v does not list s1 with every node running"

# n1ctl T ARGS...: the CLI through n1 under `timeout T`; sets RC, OUT, ERR
n1ctl() {
	local t=$1 t0=$SECONDS
	shift
	OUT=$(timeout "$t" "$TESSERA" --cluster "$(cl_addr 1)" \
		--token-file "$(cl_dir 1)/admin.token" "$@" 2>"$CL_ROOT/n1ctl.err") && RC=0 || RC=$?
	ERR=$(cat "$CL_ROOT/n1ctl.err")
	log "$*: status $RC in $(( SECONDS - t0 )) s: $ERR"
}
# create_held C T ARG...: `n1ctl T ARG...` (a snapshot create) in the
# background (SP; its RC, OUT, ERR in $CL_ROOT/C.rc, .out, .err), $HOLD made
# (an old $HOLD.held removed); until its reply reaches the hold (10 s), else
# bad "(C) ..."
create_held() {
	local c=$1 held=0 _
	shift
	rm -f "$HOLD.held"
	touch "$HOLD"
	( n1ctl "$@"; echo "$RC" >"$CL_ROOT/$c.rc"; echo "$OUT" >"$CL_ROOT/$c.out"
	  echo "$ERR" >"$CL_ROOT/$c.err" ) &
	SP=$!
	for _ in $(seq 100); do
		[ -e "$HOLD.held" ] && { held=1; break; }
		sleep 0.1
	done
	[ "$held" = 1 ] || bad "($c) the create's reply did not reach its hold (cut failed?)"
}
# names J: the snapshot names of a --json list on stdin
names() { json_get '" ".join(s["name"] for s in j["snapshots"])'; }

read -r F M L <<<"$(rec_nodes)"
FPID=${CL_PID[${F#n}]}
on_exit "kill -CONT $FPID 2>/dev/null"

# (a) list and show with F frozen
log "(a) copies F=$F M=$M L=$L: $F frozen, snapshot list/show through n1"
freeze_pids "$FPID" || fail "$F did not stop"
( n1ctl 10 --json snapshot list v; echo "$RC" >"$CL_ROOT/a.rc"; echo "$OUT" >"$CL_ROOT/a.out" ) &
SP=$!
sleep 0.5
n1ctl 3 volume list
lrc=$RC
wait "$SP"
RC=$(cat "$CL_ROOT/a.rc")
if [ "$RC" = 0 ]; then
	got=$(names <"$CL_ROOT/a.out")
	[ "$got" = s1 ] || bad "(a) snapshot list v with $F frozen lists '$got', want 's1'"
else
	bad "(a) snapshot list v with $F frozen: status $RC (124: no answer in 10 s)"
fi
[ "$lrc" = 0 ] || bad "(a) n1's volume list while its snapshot list waited for frozen $F: \
status $lrc (124: no answer in 3 s)"
n1ctl 10 --json snapshot show v s1
if [ "$RC" = 0 ]; then
	got=$(printf '%s' "$OUT" | json_get 'j["name"]')
	[ "$got" = s1 ] || bad "(a) snapshot show v s1 with $F frozen names '$got'"
else
	bad "(a) snapshot show v s1 with $F frozen: status $RC (124: no answer in 10 s): $ERR"
fi
kill -CONT "$FPID"
cl_wait_nodes_alive 4 30

# (b) create through n1; F frozen after the cut, before the reply reads s2 back
log "(b) snapshot create v s2 through n1, $F frozen before its reply"
create_held b 15 --json snapshot create v s2
freeze_pids "$FPID" || fail "$F did not stop"
rm -f "$HOLD"
sleep 0.5
n1ctl 3 volume list
lrc=$RC
wait "$SP"
[ "$lrc" = 0 ] || bad "(b) n1's volume list while the create's reply waited for frozen $F: \
status $lrc (124: no answer in 3 s)"
RC=$(cat "$CL_ROOT/b.rc")
if [ "$RC" = 0 ]; then
	got=$(json_get 'j["name"]' <"$CL_ROOT/b.out")
	[ "$got" = s2 ] || bad "(b) snapshot create v s2 with $F frozen answered '$got': \
$(cat "$CL_ROOT/b.out")"
	json_get 'j["uuid"]' <"$CL_ROOT/b.out" >/dev/null 2>&1 ||
		bad "(b) the create's reply does not describe s2 although $M and $L could: \
$(cat "$CL_ROOT/b.out") $(cat "$CL_ROOT/b.err")"
else
	bad "(b) snapshot create v s2 with $F frozen: status $RC (124: no answer in 15 s): \
$(cat "$CL_ROOT/b.err")"
fi
for n in "$M" "$L"; do
	got=$(timeout 10 "$TESSERA" --json --cluster "$(cl_addr "${n#n}")" \
		--token-file "$(cl_dir 1)/admin.token" snapshot list v | names)
	[ "$got" = "s1 s2" ] || bad "(b) $n (holding an in-sync copy) lists '$got', want 's1 s2'"
done
n1ctl 10 --json snapshot list v
[ "$RC" = 0 ] && [ "$(printf '%s' "$OUT" | names)" = "s1 s2" ] ||
	bad "(b) snapshot list v through n1 with $F frozen: status $RC, '$OUT' (want s1 s2)"
kill -CONT "$FPID"
cl_wait_nodes_alive 4 30
got=$(timeout 10 "$TESSERA" --json --cluster "$(cl_addr "${F#n}")" \
	--token-file "$(cl_dir 1)/admin.token" snapshot list v | names)
[ "$got" = "s1 s2" ] || bad "(b) $F (cut before it froze) lists '$got', want 's1 s2'"

# (c) every copy's node frozen: the list fails, naming each node
log "(c) $F $M $L frozen, snapshot list v through n1"
PIDS="${CL_PID[${F#n}]} ${CL_PID[${M#n}]} ${CL_PID[${L#n}]}"
on_exit "kill -CONT $PIDS 2>/dev/null"
# shellcheck disable=SC2086
freeze_pids $PIDS || fail "$F $M $L did not stop"
n1ctl 20 snapshot list v
crc=$RC cerr=$ERR
# (d) the json show says the snapshots are not listed
n1ctl 20 --json volume show v
drc=$RC dout=$OUT
# shellcheck disable=SC2086
kill -CONT $PIDS
if [ "$crc" = 0 ] || [ "$crc" = 124 ]; then
	bad "(c) snapshot list v with every copy's node frozen: status $crc, want a failure"
elif ! printf '%s' "$cerr" | grepq "no node holding an in-sync copy is alive"; then
	# (unless their leases lapsed first: 3 s on a slow machine)
	for n in "$F" "$M" "$L"; do
		printf '%s' "$cerr" | grepq "$n: no answer in 2000 ms" ||
			bad "(c) the failure does not name $n: $cerr"
	done
fi
if [ "$drc" = 0 ]; then
	printf '%s' "$dout" | json_get 'j["snapshots_not_listed"]' | grepq "snapshots not listed" ||
		bad "(d) --json volume show v lacks snapshots_not_listed: $dout"
else
	bad "(d) --json volume show v with every copy's node frozen: status $drc"
fi
cl_wait_nodes_alive 4 30

# (e) every copy's node frozen after the cut: the create still succeeds
log "(e) snapshot create v s3 through n1, $F $M $L frozen before its reply"
create_held e 20 snapshot create v s3
# shellcheck disable=SC2086
freeze_pids $PIDS || fail "$F $M $L did not stop"
rm -f "$HOLD"
wait "$SP"
# shellcheck disable=SC2086
kill -CONT $PIDS
RC=$(cat "$CL_ROOT/e.rc")
[ "$RC" = 0 ] || bad "(e) snapshot create v s3 with every copy's node frozen after the cut: \
status $RC: $(cat "$CL_ROOT/e.err")"
grep -q "created snapshot 'v@s3'" "$CL_ROOT/e.out" || bad "(e) the create does not say it \
created v@s3: $(cat "$CL_ROOT/e.out")"
grep -q "was cut, but its description could not be read" "$CL_ROOT/e.err" ||
	bad "(e) the create does not say its description could not be read: $(cat "$CL_ROOT/e.err")"
cl_wait_nodes_alive 4 30
got=$(timeout 10 "$TESSERA" --json --cluster "$(cl_addr 1)" \
	--token-file "$(cl_dir 1)/admin.token" snapshot list v | names)
[ "$got" = "s1 s2 s3" ] || bad "(e) snapshot list v lists '$got', want 's1 s2 s3'"

# (f) attached on n1 (no copy there): the cut on n1's home worker, then the
# read-back from the loop (every node running): the create describes s4
log "(f) v attached on n1, snapshot create v s4 through n1"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v on n1"
n1ctl 15 --json snapshot create v s4
[ "$RC" = 0 ] && [ "$(printf '%s' "$OUT" | json_get 'j["name"]')" = s4 ] &&
	printf '%s' "$OUT" | json_get 'j["uuid"]' >/dev/null 2>&1 ||
	bad "(f) snapshot create v s4 attached on n1: status $RC: $OUT $ERR"
ctsr volume detach v >/dev/null || fail "volume detach v"
cl_stop_all
[ -z "$FAILS" ] || fail "failed:$FAILS"
