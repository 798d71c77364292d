#!/usr/bin/env bash
# The node handling a replace-replica stopped (SIGTERM) while the replace
# waits for the old copy's uuid (the old copy's node frozen): it exits 0, the
# request answers an error naming that wait, the new copy's node and uuid and
# the leftover sweep's grace (review 16a, F4.4: it said only "a new copy made
# is listed by no record", while that copy certainly exists at that step);
# vol/v unchanged; the new copy left on X (listed by no record).
#   5 nodes, v (2 replicas, min 1) written and in sync, its copies O P moved
#   off n1; O frozen; replace O --to X through H (a fifth node, no copy).
# On b8ab404: the answer names neither X nor --leftover-grace (the FAIL says so).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera

cl_start 5
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
nodes() { ctsr --json volume show v | json_get '" ".join(c["node"] for c in j["copies"])'; }
frees() { local n; for n in n2 n3 n4 n5; do case " $(nodes) " in *" $n "*) ;; *) echo $n;; esac; done; }
case " $(nodes) " in
*" n1 "*) out=$(ctsr volume replace-replica v --node n1 --to "$(frees | head -1)" 2>&1) || fail "move off n1: $out" ;;
esac
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
cl_wait_synced v
ctsr volume detach v >/dev/null || fail "volume detach v"
read -r O P <<<"$(nodes)"
read -r X H <<<"$(frees | tr '\n' ' ')"
OPID=${CL_PID[${O#n}]}
on_exit "kill -CONT $OPID 2>/dev/null"
log "copies $O $P; replace $O --to $X through $H; $O frozen"
freeze_pids "$OPID" || fail "$O did not stop"
( timeout 25 "$TESSERA" --cluster "$(cl_addr "${H#n}")" --token-file "$(cl_dir 1)/admin.token" \
	volume replace-replica v --node "$O" --to "$X" >"$CL_ROOT/r.out" 2>&1
  echo $? >"$CL_ROOT/r.rc" ) &
RP=$!
wait_log "${H#n}" "replace of v on $O: creating the new copy on $X" 10
sleep 0.5 # the create answered, the uuid asked of frozen O
cl_stop "${H#n}" # fails the test unless it exits 0 on SIGTERM
wait "$RP"
kill -CONT "$OPID"
OUT=$(cat "$CL_ROOT/r.out")
log "replace through stopped $H: status $(cat "$CL_ROOT/r.rc"): $OUT"
[ "$(cat "$CL_ROOT/r.rc")" != 0 ] || fail "the replace through stopped $H answered 0"
printf '%s' "$OUT" | grepq "$H is stopping while the replace of its copy on $O waits for the old copy's uuid" ||
	fail "the answer does not name the uuid wait (the create answered late? rerun): $OUT"
printf '%s' "$OUT" | grepq "the new copy on $X (uuid [0-9a-f-]*) is listed by no record" ||
	fail "the answer does not name the new copy on $X: $OUT"
printf '%s' "$OUT" | grepq -- "--leftover-grace" || fail "the answer does not name the sweep's grace: $OUT"
[ "$(nodes)" = "$O $P" ] || fail "vol/v lists '$(nodes)', want '$O $P'"
cl_copy_size "${X#n}" v >/dev/null || fail "$X holds no copy of v (the answer says it does)"
cl_stop_all
log PASS
