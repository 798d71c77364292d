#!/usr/bin/env bash
# A command forwarded to another node (status, scrub, replace-replica, attach
# --node, detach to the coordinator; snapshot list/show/diff to a node with an
# in-sync copy) is answered when the coordinator answers, without
# holding the forwarding node's loop: with the coordinator frozen (SIGSTOP)
# and forwards pending, another admin call to the forwarding node answers
# first.  Before, the forward (cluster_forward) waited on the loop, so every
# call to that node waited for the frozen one (up to 120 s).
#   3 nodes, d (2 replicas) attached on n3 (not the meta node: n1's store must
#   answer); n3 SIGSTOPped; `volume status d` and `volume scrub d` sent through
#   n2 (forwarded to n3, pending), and `snapshot list` of s (one copy, on n3;
#   n2 holds none); once n2 is connected to n3, `volume list`
#   and `cluster status` through n2: answer before both forwards (the order of
#   completions is asserted, never a time); n3 SIGCONTed: the status answers
#   with d's copies, the scrub with its result (or n3's refusal when it was
#   frozen past its lease); then a replace-replica, a detach and an attach
#   --node forwarded through n2 / n1 succeed.
#   The snapshot list is bounded by the peer timeout since session 16
#   (fe3fb90: each in-sync node asked in turn): with n3, the only holder,
#   frozen longer than that it answers with an error naming n3; if n3 answers
#   first, with t1.  Either way it never held n2's loop (list answers first).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd ss

cl_start 3
ORDER=$CL_ROOT/order
P3=${CL_PORT[3]}

ctsr volume create d --size 16M --replicas 2 >/dev/null || fail "volume create d"
ctsr volume attach d --node n3 >/dev/null || fail "volume attach d on n3"
# s: one copy, on n3 (placement picks; the misses stay, so n3 comes up)
S=
for i in 1 2 3 4 5 6; do
	ctsr volume create "s$i" --size 16M --replicas 1 >/dev/null || fail "volume create s$i"
	[ "$(cl_copy_nodes "s$i")" = n3 ] && { S=s$i; break; }
done
[ -n "$S" ] || fail "no 1-replica volume placed on n3 in 6 tries"
ctsr snapshot create "$S@t1" >/dev/null || fail "snapshot create $S@t1"

# ---- n3 frozen, two forwards pending on n2
freeze_pids "${CL_PID[3]}" || fail "pid ${CL_PID[3]} not stopped"
on_exit "kill -CONT ${CL_PID[3]}"
: >"$ORDER"
( ctsr_via 2 --json volume status d >"$CL_ROOT/status.out" 2>&1; echo "status $?" >>"$ORDER" ) &
ST=$!
track_pid "$ST"
( ctsr_via 2 --json volume scrub d --no-repair >"$CL_ROOT/scrub.out" 2>&1
  echo "scrub $?" >>"$ORDER" ) &
SC=$!
track_pid "$SC"
# a snapshot list of s through n2, which holds no copy: read from n3
( ctsr_via 2 --json snapshot list "$S" >"$CL_ROOT/snaps.out" 2>&1; echo "snaps $?" >>"$ORDER" ) &
SN=$!
track_pid "$SN"
# until n2 holds the forwards' connections to n3 (accepted by n3's kernel;
# the code before took the second request only once the first had answered)
for (( i=0; i<300; i++ )); do
	n=$(ss -Htn state established "( dport = :$P3 )" | wc -l)
	(( n >= 3 )) && break
	sleep 0.1
done
(( n >= 1 )) || fail "n2 has no connection to n3's port: nothing forwarded"
log "n3 frozen; $n forwards of n2 (status and scrub of d, snapshot list of $S) pending"

# ---- other calls to n2 answer meanwhile (bounded, so that the code before
# ends too: it answers them only once n3 runs again)
( ctsr_via 2 volume list >"$CL_ROOT/list.out" 2>&1; echo "list $?" >>"$ORDER"
  ctsr_via 2 cluster status >"$CL_ROOT/nodes.out" 2>&1; echo "nodes $?" >>"$ORDER" ) &
LI=$!
track_pid "$LI"
for (( i=0; i<200; i++ )); do
	grep -q '^nodes' "$ORDER" && break
	sleep 0.1
done
kill -CONT "${CL_PID[3]}"
log "n3 running again"
reap "$LI" || true
reap "$ST" || true
reap "$SC" || true
reap "$SN" || true
order=$(cut -d' ' -f1 "$ORDER" | paste -sd' ')
log "completions in order '$order'"
# the bounded snapshot list may end anywhere after the first answer
nosnap=$(cut -d' ' -f1 "$ORDER" | grep -vx snaps)
first=$(printf '%s\n' "$nosnap" | head -2 | paste -sd' ')
rest=$(printf '%s\n' "$nosnap" | tail -n +3 | sort | paste -sd' ')
[ "$first" = "list nodes" ] && [ "$rest" = "scrub status" ] &&
	[ "$(cut -d' ' -f1 "$ORDER" | head -1)" = list ] ||
	fail "completions in order '$order', want list first, list and nodes before status and scrub ($(paste -sd' ' "$ORDER"))"
for w in list nodes status; do
	grep -q "^$w 0$" "$ORDER" || fail "$w failed: $(grep "^$w" "$ORDER"): $(cat "$CL_ROOT/$w.out")"
done
grep -q '^snaps ' "$ORDER" || fail "the snapshot list never answered"
# the scrub is n3's answer: its result, or (n3 frozen past its lease: d
# fenced) n3's refusal, never a failed forward
if ! grep -q "^scrub 0$" "$ORDER"; then
	grep -q "cannot reach node" "$CL_ROOT/scrub.out" &&
		fail "the forwarded scrub did not reach n3: $(cat "$CL_ROOT/scrub.out")"
	log "the scrub answered with n3's refusal (frozen past its lease?): $(cat "$CL_ROOT/scrub.out")"
fi
grep -q '"d"' "$CL_ROOT/list.out" || grep -qw d "$CL_ROOT/list.out" || fail "volume list has no d: $(cat "$CL_ROOT/list.out")"
got=$(json_get '",".join(sorted(c["node"] for c in j["volume"]["copies"]))' <"$CL_ROOT/status.out")
assert_eq "$got" "$(cl_copy_nodes d)" "copies in the forwarded status of d"
if grep -q '^snaps 0$' "$ORDER"; then
	snaps=$(json_get '",".join(s["name"] for s in (j if isinstance(j, list) else j["snapshots"]))' <"$CL_ROOT/snaps.out")
	assert_eq "$snaps" t1 "snapshots of $S in the forwarded list"
else
	grep -q "n3: no answer" "$CL_ROOT/snaps.out" ||
		fail "the snapshot list failed without naming frozen n3: $(cat "$CL_ROOT/snaps.out")"
	snaps="(n3 no answer within the peer timeout: $(tr -d '\n' <"$CL_ROOT/snaps.out" | cut -c1-100))"
fi
log "after n3 resumed: the forwarded status lists copies $got, the snapshot list $snaps; scrub: $(tr -d '\n' <"$CL_ROOT/scrub.out" | cut -c1-120)"

# ---- a forwarded replace-replica and attach still answer as before
# (n3 frozen past its 3 s lease: its attach/d lapsed, d is detached already)
out=$(ctsr_via 2 volume detach d 2>&1) || echo "$out" | grepq "is not attached" ||
	fail "detach d through n2: $out"
cl_attach_retry d n3
other=
for n in n1 n2 n3; do
	case ",$(cl_copy_nodes d)," in *",$n,"*) ;; *) other=$n ;; esac
done
old=$(cl_copy_nodes d | cut -d, -f1)
out=$(ctsr_via 2 volume replace-replica d --node "$old" --to "$other" 2>&1) ||
	fail "replace-replica d $old -> $other through n2: $out"
cl_wait_synced d
ctsr_via 2 volume detach d >/dev/null || fail "detach d through n2 after the replace"
out=$(ctsr_via 1 volume attach d --node n2 2>&1) || fail "attach d --node n2 through n1: $out"
ctsr volume detach d >/dev/null || fail "detach d"
cl_stop_all
