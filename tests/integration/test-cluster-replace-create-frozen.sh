#!/usr/bin/env bash
# A replace-replica whose target node is alive by its lease but hung (frozen:
# SIGSTOP) answers with an error naming that node within the create's bound,
# and the handling node's control loop serves other calls meanwhile (contract
# s16-replcreate).  The new copy's create was a blocking call on the main loop
# bounded by CLUSTER_COPY_TIMEOUT_MS (30 s); now it is made with
# admin_async_call for an admin request, bounded by CLUSTER_COPY_TIMEOUT_MS
# (30 s: a slow disk's create must fit, review 16a F1), here shortened to
# 2000 ms by the tests-only TSR_TEST_COPY_TIMEOUT_MS to keep the run short;
# the old copy's uuid read and the delete of an unlisted copy met on the
# target keep the peer timeout (engine/cluster/volume.c replace_call,
# replace_step).
# Nothing is written to vol/<name> before those calls are answered.
#   4 nodes; v (2 replicas, min 1) written, its copies moved off n1 (the meta
#   node, which handles every replace here and is never frozen), attached on
#   n1 (its coordinator, no copy there): copies O and P, the free node X.
#   (a) X frozen; replace O --to X through n1 answers non-zero under
#       `timeout 12` (before: 124), saying "node X did not answer in 2000 ms"
#       "to create the copy of 'v'" and "nothing recorded"; n1 answers
#       `volume list` under `timeout 3` and `node list` under `timeout 6`
#       while it waits (before: 124); vol/v still lists O and P, v reads back
#       as written through n1.
#   (b) X thawed (it may now make the copy it was asked for: listed by no
#       record); vol/v still lists O and P; the replace retried answers 0
#       (a copy met on X is deleted first, then made again), vol/v lists P
#       and X, `volume status --json` shows X's copy in-sync after the
#       rebuild, v reads back as written through n1, X's copy is the same
#       bytes as P's (cmp of the store files, detached), scrub clean.
#   (c) v detached, copies H Q, free F frozen: a replace of Q's copy --to F
#       through H (its list from its own store) waits for F's create; H
#       stopped (SIGTERM) meanwhile exits 0 (the call cancelled), the request
#       answers an error saying H "is stopping" while the replace "waits for
#       the new copy's create", vol/v still lists H Q.
# Control: TSR_TEST_REPLACE_CREATE_BLOCKING=1 (the create as before: blocking
# on the loop, 30 s; volume.c) in n1's environment makes (a) fail with
# "status 124".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy
# the new copy's create bound (30 s) shortened for this run (tests only)
export TSR_TEST_COPY_TIMEOUT_MS=2000

cl_start 4
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 83
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"

# the copies in record order (volume show lists them so)
rec_nodes() { cl_rec_nodes v; }
free_node() { cl_free_node v; }
cl_move_off_n1 v
cl_attach_fill v "$IMG"

# (a) the replace's target frozen
read -r O P <<<"$(rec_nodes)"
X=$(free_node) || fail "no free node"
log "(a) copies O=$O P=$P, free $X: $X frozen, replace $O --to $X through n1"
XPID=${CL_PID[${X#n}]}
on_exit "kill -CONT $XPID 2>/dev/null"
freeze_pids "$XPID" || fail "$X did not stop"
t0=$SECONDS
( OUT=$(timeout 12 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$O" --to "$X" 2>&1) && RC=0 || RC=$?
  echo "$RC" >"$CL_ROOT/a.rc"; echo "$OUT" >"$CL_ROOT/a.out" ) &
RP=$!
# the list asked (a line 7a32c7c logs too), then the create waits for X
wait_log 1 "replace of v on $O: asking .* for the new copy's snapshot list" 10
sleep 0.5
cl_timed "(a) n1's volume list while the replace waits for $X" 3 1 volume list
lrc=$CL_RC lout=$CL_OUT
cl_timed "(a) n1's node list while the replace waits for $X" 6 1 node list
nrc=$CL_RC nout=$CL_OUT
wait "$RP"
RC=$(cat "$CL_ROOT/a.rc")
OUT=$(cat "$CL_ROOT/a.out")
log "(a) replace-replica v --node $O --to $X: status $RC in $(( SECONDS - t0 )) s: $OUT"
[ "$lrc" = 0 ] || fail "(a) n1's volume list while its replace waited for frozen $X: status \
$lrc (124: no answer in 3 s): $lout"
[ "$nrc" = 0 ] || fail "(a) n1's node list while its replace waited for frozen $X: status \
$nrc (124: no answer in 6 s): $nout"
[ "$RC" != 0 ] && [ "$RC" != 124 ] || fail "(a) replace-replica v --node $O --to frozen $X: \
status $RC, want a refusal (124: no answer in 12 s): $OUT"
printf '%s' "$OUT" | grepq "node $X did not answer in 2000 ms" ||
	fail "(a) the error does not name $X and the bound: $OUT"
printf '%s' "$OUT" | grepq "to create the copy of 'v'" ||
	fail "(a) the error does not name the create: $OUT"
printf '%s' "$OUT" | grepq "nothing recorded" || fail "(a) the error does not say nothing was \
recorded: $OUT"
[ "$(rec_nodes)" = "$O $P" ] || fail "(a) vol/v lists '$(rec_nodes)' after the refusal, want '$O $P'"
cl_assert_image 1 v "$IMG" "(a) with $X frozen"

# (b) thawed: nothing recorded meanwhile; the retry succeeds
kill -CONT "$XPID"
cl_wait_nodes_alive 4 30
sleep 1 # X runs what it read meanwhile (the create: an unlisted copy)
[ "$(rec_nodes)" = "$O $P" ] || fail "(b) vol/v lists '$(rec_nodes)' after $X thawed, want '$O $P'"
late=
if cl_copy_size "${X#n}" v >/dev/null; then
	late=1
	log "(b) $X holds a copy of v vol/v does not list (the late create): the retry deletes it"
fi
OUT=$(timeout 25 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$O" --to "$X" 2>&1) && RC=0 || RC=$?
log "(b) replace-replica v --node $O --to $X retried: status $RC: $OUT"
[ "$RC" = 0 ] || fail "(b) the retried replace-replica v --node $O --to $X: status $RC: $OUT"
[ "$(rec_nodes)" = "$X $P" ] || fail "(b) vol/v lists '$(rec_nodes)', want '$X $P'"
[ -z "$late" ] || grep -q "volume v: node $X held a copy that vol/v does not list" \
	"$(cl_dir 1)/tesserad.log" || fail "(b) n1's log does not say $X's unlisted copy was deleted"
cl_wait_synced v
st=$(vstatus v '" ".join("%s:%s" % (c["node"], c["state"]) for c in j["volume"]["copies"])')
case " $st " in *" $X:in-sync "*) ;; *) fail "(b) volume status of v: '$st', want $X in-sync" ;; esac
log "(b) volume status of v: $st"
cl_assert_image 1 v "$IMG" "(b) after the replace onto $X"
cl_scrub_clean v "(b) after the replace onto $X"
ctsr volume detach v >/dev/null || fail "volume detach v"
cl_assert_copies_identical v "${X#n}" "${P#n}"
cmp -s "$IMG" "$(cl_copy_file "${X#n}" v)" || fail "(b) $X's copy of v differs from what was written"
log "(b) $X's copy of v holds what was written"

# (c) v detached: a replace through a node holding a copy (its list from its
# own store) waits for a frozen target's create; that node stopped (SIGTERM)
# meanwhile exits 0 at once (the call cancelled, volume.c replace_list_stop),
# the request answers an error, nothing recorded
read -r H Q <<<"$(rec_nodes)"
F=$(free_node) || fail "no free node"
log "(c) copies H=$H Q=$Q, free $F: $F frozen, replace $Q --to $F through $H, $H stopped meanwhile"
FPID=${CL_PID[${F#n}]}
on_exit "kill -CONT $FPID 2>/dev/null"
freeze_pids "$FPID" || fail "$F did not stop"
( timeout 25 "$TESSERA" --cluster "$(cl_addr "${H#n}")" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$Q" --to "$F" >"$CL_ROOT/c.out" 2>&1
  echo $? >"$CL_ROOT/c.rc" ) &
RP=$!
wait_log "${H#n}" "replace of v on $Q: creating the new copy on $F" 10
cl_stop "${H#n}" # fails the test unless it exits 0 on SIGTERM
wait "$RP"
log "(c) the replace through $H: status $(cat "$CL_ROOT/c.rc"): $(cat "$CL_ROOT/c.out")"
[ "$(cat "$CL_ROOT/c.rc")" != 0 ] || fail "(c) the replace through stopped $H answered 0"
grepq "$H is stopping while the replace of its copy on $Q waits for the new copy's create" \
	<"$CL_ROOT/c.out" || fail "(c) the answer does not say $H stopped during the create: \
$(cat "$CL_ROOT/c.out")"
kill -CONT "$FPID"
[ "$(rec_nodes)" = "$H $Q" ] || fail "(c) vol/v lists '$(rec_nodes)', want '$H $Q'"
cl_stop_all
