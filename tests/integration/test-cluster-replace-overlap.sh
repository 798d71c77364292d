#!/usr/bin/env bash
# Two replace-replica of one volume through the same node, overlapping while
# their creates wait for the same frozen target X (review 16a, question 1 and
# F4.3/F4.6).  Round 1: O --to X and P --to X; round 2: O --to X twice.  Each
# round: at most one of two replaces of different copies answers 0, vol/v
# lists no node twice and every node it lists holds a copy; a refused one
# says why in words (vol/v changed while it waited, or another replace onto X
# got there first), not the bare "cannot record ...: Operation canceled
# (retry)".  Then v reads back as written, scrub clean.
# On b8ab404: the loser's answer is "cannot record the new copy of 'v' on X:
# Operation canceled (retry)" (the FAIL says so).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

cl_start 5
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
rec_nodes() { ctsr --json volume show v | json_get '" ".join(c["node"] for c in j["copies"])'; }
free_nodes() {
	local n
	for n in n2 n3 n4 n5; do
		case " $(rec_nodes) " in *" $n "*) ;; *) echo "$n" ;; esac
	done
}
case " $(rec_nodes) " in
*" n1 "*) out=$(ctsr volume replace-replica v --node n1 --to "$(free_nodes | head -1)" 2>&1) || fail "move off n1: $out" ;;
esac
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((8 << 20)) 61
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
cl_wait_synced v
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "nbdcopy into v"
cl_wait_synced v
ctsr volume detach v >/dev/null || fail "volume detach v"
# every copy in sync before a round (a detached replace leaves its new copy out of sync)
sync_all() {
	ctsr volume attach v --node n1 >/dev/null || fail "volume attach v ($1)"
	cl_wait_synced v
	cl_assert_image 1 v "$IMG" "$1"
	ctsr volume detach v >/dev/null || fail "volume detach v ($1)"
}
rr() { # OUTFILE OLD TO
	timeout 40 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
		volume replace-replica v --node "$2" --to "$3" >"$1" 2>&1
	echo $? >>"$1"
}
check() {
	local what=$1 nodes n seen=" "
	nodes=$(rec_nodes)
	for n in $nodes; do
		case "$seen" in *" $n "*) fail "$what: vol/v lists $n twice ($nodes)" ;; esac
		seen="$seen$n "
		cl_copy_size "${n#n}" v >/dev/null || fail "$what: vol/v lists $n ($nodes), whose store holds no v"
	done
	log "$what: vol/v lists $nodes (every listed copy exists)"
}
for r in 1 2; do
	sync_all "before round $r"
	read -r O P <<<"$(rec_nodes)"
	X=$(free_nodes | head -1)
	XPID=${CL_PID[${X#n}]}
	on_exit "kill -CONT $XPID 2>/dev/null"
	freeze_pids "$XPID" || fail "$X did not stop"
	if (( r == 1 )); then a=$O; b=$P; else a=$O; b=$O; fi
	rr "$CL_ROOT/A" "$a" "$X" &
	PA=$!
	rr "$CL_ROOT/B" "$b" "$X" &
	PB=$!
	sleep 1
	kill -CONT "$XPID"
	wait "$PA" "$PB"
	log "round $r: A ($a -> $X): $(tr '\n' ' ' <"$CL_ROOT/A")"
	log "round $r: B ($b -> $X): $(tr '\n' ' ' <"$CL_ROOT/B")"
	[ "$(tail -1 "$CL_ROOT/A")" = 0 ] && [ "$(tail -1 "$CL_ROOT/B")" = 0 ] && [ "$a" != "$b" ] &&
		fail "round $r: both replaces onto $X answered 0"
	for f in A B; do
		[ "$(tail -1 "$CL_ROOT/$f")" = 0 ] && continue
		grepq "Operation canceled (retry)" <"$CL_ROOT/$f" &&
			fail "round $r: $f's refusal is the bare 'Operation canceled (retry)': $(cat "$CL_ROOT/$f")"
		grepq -E "changed while (this replace waited|its copy on|it was being replaced)|got there first" \
			<"$CL_ROOT/$f" || fail "round $r: $f's refusal does not say what changed: $(cat "$CL_ROOT/$f")"
	done
	sleep 1
	check "round $r"
done
sync_all "after the rounds"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
cl_wait_synced v
cl_scrub_clean v "after the rounds"
ctsr volume detach v >/dev/null || fail "volume detach v"
cl_stop_all
log PASS
