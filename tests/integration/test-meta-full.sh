#!/usr/bin/env bash
# The meta node's metadata store (DIR/meta.db, engine/meta/meta_sqlite.c) on
# a data file system that fills up: commits go on inside the WAL's reserve
# (1 MiB of blocks from the open) while the checkpoints, which must grow
# meta.db, cannot; once that is used up a change is refused with a clear
# ENOSPC ("No space left on device"; before 57ddb88: "Input/output error")
# and nothing acknowledged is lost; once space is back it works again.
#   - n1, the meta node, on a 48 MiB ext4 (its log outside); n2 on the
#     ordinary disk; a 1-replica 16 MiB volume V whose copy is on n2 (so
#     attaching it needs blocks on n2 only); n1's file system filled (df:
#     0 KiB free);
#   - `volume attach V --node n2` / `volume detach V` (on n1 only records:
#     vol/V, its epoch) until one is refused (or a detach answers 0 and
#     logs its record write refused, n2's "cannot record the clean detach":
#     which step meets the full store depends on the writes per step): its
#     message says "No space
#     left on device", n1's log "the file system is full", n1 still serves
#     and lists V; the refusal gave the reserve's 1 MiB for a checkpoint to
#     meta.db, so the step issued again and 5 more commit;
#   - n1 restarted on the still full file system: it starts (before: its
#     registration, a commit, was refused and tesserad exited), V listed;
#   - volume creates (meta.db grows) until changes are refused for good
#     (every block the reserve gives back taken again), n2 killed: its
#     lease lapses on n1 and ending it fails; 20 volume lists later the
#     lapse and its failed end are logged once (ERROR), not at every
#     metadata call (before session 13: 81 times each); space back: "ended
#     after all" (INFO), once;
#   - the ballast removed: n2 back, attach, detach and delete of V succeed.
# Needs root and loop devices.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera
fullfs_require

make_tmpdir T
make_tmpdir CL_ROOT
CL_N=2
CL_PORT[1]=$(free_port)
CL_PORT[2]=$(free_port)
fullfs_mount N1 48M "$(cl_dir 1)"

# start_meta: tesserad for n1 with its log in $T (its data fs may be full)
start_meta() {
	local i
	CL_ARGS[1]="--listen $(cl_addr 1) --node-id n1 --zone z1 --meta --peer-timeout 2000"
	# shellcheck disable=SC2086
	"$TESSERAD" --data "$(cl_dir 1)" ${CL_ARGS[1]} >>"$T/meta.log" 2>&1 &
	CL_PID[1]=$!
	track_pid "${CL_PID[1]}"
	for (( i=0; i<300; i++ )); do
		grep -q "tesserad ready" "$T/meta.log" 2>/dev/null &&
			ctsr volume list >/dev/null 2>&1 && return 0
		kill -0 "${CL_PID[1]}" 2>/dev/null || break
		sleep 0.1
	done
	cat "$T/meta.log" >&2
	fail "the meta node did not start"
}

start_meta
cl_start_node 2
cl_wait_nodes_alive 2
# a volume whose only copy is on n2 (placement decides: create until one is)
V=
for (( i=0; i<4; i++ )); do
	ctsr volume create "v$i" --size 16M --replicas 1 >/dev/null || fail "volume create v$i"
	if [ "$(ctsr --json volume show "v$i" | json_get '",".join(c["node"] for c in j["copies"])')" = n2 ]; then
		V=v$i
		break
	fi
done
[ -n "$V" ] || fail "no 1-replica volume placed on n2 in 4 creates"
fill_fs "$N1/ballast"
log "n1's data fs full: $(fs_avail_kib) KiB free; meta.db-wal $(stat -c %s "$N1/meta.db-wal") bytes; volume $V on n2"

steps=0 refused=
for (( k=0; k<400; k++ )); do
	if (( k % 2 )); then op=detach; args=("$V"); else op=attach; args=("$V" --node n2); fi
	if out=$(ctsr volume "$op" "${args[@]}" 2>&1); then
		steps=$((steps + 1))
		last=$op
		# a detach whose record write meets the full file system answers 0
		# (the next attach converges the copies) and logs it: the refusal
		# met then (which step meets it depends on the writes per step; an
		# attach writes vol/V twice since session 18)
		if [ "$op" = detach ] && line=$(grep -m1 "cannot record the clean detach: No space \
left on device" "$(cl_dir 2)/tesserad.log"); then
			out="detach answered 0, its record write refused: $line"
			refused=attach # the next step (issued below)
			break
		fi
		continue
	fi
	refused=$op
	break
done
[ -n "$refused" ] || fail "400 attach/detach steps on a full file system, none refused"
log "$steps steps acknowledged on the full file system, then: $out"
log "meta.db-wal $(stat -c %s "$N1/meta.db-wal") bytes, meta.db $(stat -c %s "$N1/meta.db") bytes"
grep -q "No space left on device" <<<"$out" ||
	fail "the refusal does not say 'No space left on device': $out"
grep -q "the file system is full" "$T/meta.log" || fail "no 'the file system is full' in the log"
kill -0 "${CL_PID[1]}" 2>/dev/null || fail "tesserad exited"
ctsr volume list | grepq "^$V " || fail "$V not listed after the refusal"
# the refusal gave the reserve's WAL part to a checkpoint: issued again, the
# step commits, and a few more (before: every change refused from here on)
grep -q "gave 1024 KiB to a checkpoint" "$T/meta.log" ||
	fail "no 'gave 1024 KiB to a checkpoint' in the log"
for (( j=0; j<6; j++ )); do
	if [ "$refused" = detach ]; then op=detach; args=("$V"); refused=attach
	else op=attach; args=("$V" --node n2); refused=detach; fi
	out=$(ctsr volume "$op" "${args[@]}" 2>&1) ||
		fail "$op $V issued again after the refusal: $out"
	last=$op
done
log "after the refusal: 6 more steps acknowledged on the full file system"

# a restart on the still full file system: V as before
cl_stop 1
start_meta
cl_wait_nodes_alive 2
ctsr volume list | grepq "^$V " || fail "$V not listed after a restart on the full file system"
log "restarted on the full file system: $V listed (last acknowledged step: $last)"

# a lease that lapses while changes are refused: its end (deleting its keys,
# a commit) fails at every metadata call; logged once (ERROR), then once
# "ended after all" when space is back (before: INFO + 2 ERROR + WARN at
# every call, the keepalives' included).  meta.db grows with new keys, into
# the blocks a refusal gives back from the reserve: taken again each time,
# until the reserve is spent and changes are refused for good.
STUCK="are spent: changes are refused until space is freed|but the checkpoint into meta.db failed"
gave=$(grep -c "to a checkpoint into meta.db" "$T/meta.log")
fill_fs "$N1/ballast-r"
for (( k=0; k<600; k++ )); do
	grep -qE "$STUCK" "$T/meta.log" && break
	if (( $(grep -c "to a checkpoint into meta.db" "$T/meta.log") > gave )); then
		gave=$(grep -c "to a checkpoint into meta.db" "$T/meta.log")
		fill_fs "$N1/ballast-$k"
	fi
	ctsr volume create "f$k" --size 1M --replicas 1 >/dev/null 2>&1
done
grep -qE "$STUCK" "$T/meta.log" ||
	fail "600 volume creates after the restart, changes still committed"
log "changes refused for good after $k volume creates"
cl_kill 2
for (( i=0; i<100; i++ )); do grep -q "lease [0-9a-f]* lapsed" "$T/meta.log" && break; sleep 0.1; done
grep -q "lease [0-9a-f]* lapsed" "$T/meta.log" || fail "n2's lease did not lapse on n1 in 10 s"
for (( i=0; i<20; i++ )); do ctsr volume list >/dev/null || fail "volume list $i after the lapse"; done
lapsed=$(grep -c "lease [0-9a-f]* lapsed" "$T/meta.log")
errors=$(grep -c "ERROR .*end lease" "$T/meta.log")
full=$(sed -n '/lease [0-9a-f]* lapsed/,$p' "$T/meta.log" | grep -c "ERROR .*the file system is full")
log "20 volume lists after n2's lease lapsed: $lapsed 'lapsed', $errors 'end lease' ERROR, $full 'file system is full' ERROR lines since the lapse"
[ "$errors" != 0 ] || fail "the lapsed lease's end did not fail on the full file system"
[ "$lapsed" = 1 ] || fail "the lapse logged $lapsed times, want 1"
[ "$errors" = 1 ] || fail "the failed end of the lapsed lease logged $errors ERROR lines, want 1"
(( full < 5 )) ||
	fail "$full 'the file system is full' ERROR lines since the lapse (the retries of its end logged)"

# space back: everything works again
rm -f "$N1"/ballast*
for (( i=0; i<100; i++ )); do grep -q "ended after all" "$T/meta.log" && break; sleep 0.1; done
grep -q "INFO .*lease [0-9a-f]* ended after all" "$T/meta.log" ||
	fail "no 'ended after all' in the log once space is back"
errors=$(grep -c "ERROR .*end lease" "$T/meta.log")
[ "$errors" = 1 ] || fail "$errors 'end lease' ERROR lines once space is back, want 1"
log "space back: the lapsed lease ended, logged once ('ended after all')"
cl_start_node 2
cl_wait_nodes_alive 2
if [ "$last" = attach ]; then
	ctsr volume detach "$V" >/dev/null || fail "detach $V with space back"
fi
ctsr volume attach "$V" --node n2 >/dev/null || fail "attach $V with space back"
ctsr volume detach "$V" >/dev/null || fail "detach $V with space back"
ctsr volume delete "$V" >/dev/null || fail "delete $V with space back"
ctsr volume list | grepq "^$V " && fail "$V still listed after its delete"
log "space back: attach, detach and delete of $V succeeded"
cl_stop_all
