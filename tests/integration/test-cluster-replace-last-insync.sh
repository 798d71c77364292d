#!/usr/bin/env bash
# replace-replica of a volume's last IN_SYNC copy is refused (review 16a, P1:
# it was accepted and deleted the only good copy; the next attach said "fewer
# than min-replicas in-sync copies are reachable" and the data was gone).
#   4 nodes, v (2 replicas, min 1) written and detached, copies A B in sync.
#   A replaced --to X (detached: X's copy is out of sync until an attach
#   rebuilds it); then the replace of B, v's only in-sync copy, is refused
#   non-zero with "last in-sync copy", naming X's state and the attach to run;
#   vol/v still lists X and B; the attach rebuilds X from B, and then the
#   replace of B is accepted; v reads back as written, scrub clean.
#   A 1-replica volume's only copy: refused, saying it is the only copy and a
#   replace is no move (review 16d N2).
# On b8ab404: the second replace answers 0 (the FAIL says so).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

cl_start 4
IMG=$CL_ROOT/img
cl_pattern "$IMG" $((8 << 20)) 29
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
rec() { ctsr --json volume show v | json_get '" ".join("%s:%s" % (c["node"], c.get("state","?")) for c in j["copies"])'; }
nodes() { cl_rec_nodes v; }
free1() { cl_free_node v 1; }
cl_attach_fill v "$IMG"
ctsr volume detach v >/dev/null || fail "volume detach v"
read -r A B <<<"$(nodes)"
X=$(free1)
out=$(ctsr volume replace-replica v --node "$A" --to "$X" 2>&1) || fail "replace $A --to $X: $out"
log "after the replace $A -> $X (detached): $(rec)"
Y=$(free1)
out=$(ctsr volume replace-replica v --node "$B" --to "$Y" 2>&1) && rc=0 || rc=$?
log "replace of the only in-sync copy $B -> $Y: status $rc: $out"
[ "$rc" != 0 ] || fail "replace-replica of v's only in-sync copy ($B) answered 0 while its other \
copy ($X) was never rebuilt: $(rec)"
printf '%s' "$out" | grepq "its copy on $B is its last in-sync copy" ||
	fail "the refusal does not say $B holds the last in-sync copy: $out"
printf '%s' "$out" | grepq "$X out-of-sync" || fail "the refusal does not name $X's state: $out"
printf '%s' "$out" | grepq "tessera volume attach v" || fail "the refusal does not say what to do: $out"
[ "$(nodes)" = "$X $B" ] || fail "vol/v lists '$(nodes)' after the refusal, want '$X $B'"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v after the refusal"
cl_wait_synced v
cl_assert_image 1 v "$IMG" "after the refusal, $X rebuilt"
ctsr volume detach v >/dev/null || fail "volume detach v"
out=$(ctsr volume replace-replica v --node "$B" --to "$Y" 2>&1) ||
	fail "replace $B --to $Y once $X is in sync: $out"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v after the replace of $B"
cl_wait_synced v
cl_assert_image 1 v "$IMG" "after the replace of $B"
cl_scrub_clean v "after the replace of $B"
ctsr volume detach v >/dev/null || fail "volume detach v"
# a 1-replica volume: its only copy is refused too, saying a replace is no
# move (the new copy would start empty) and what is left to do (review 16d N2)
ctsr volume create one --size 4M --replicas 1 >/dev/null || fail "volume create one"
O=$(ctsr --json volume show one | json_get 'j["copies"][0]["node"]')
Z=n1
[ "$O" = n1 ] && Z=n2
out=$(ctsr volume replace-replica one --node "$O" --to "$Z" 2>&1) &&
	fail "the replace of a 1-replica volume's only copy answered 0: $out"
printf '%s' "$out" | grepq "is its only copy" || fail "the refusal does not say it is the only copy: $out"
printf '%s' "$out" | grepq "does not move one" || fail "the refusal does not say a replace is no move: $out"
assert_eq "$(ctsr --json volume show one | json_get 'j["copies"][0]["node"]')" "$O" "one's copy after the refusal"
log "a 1-replica volume's only copy: refused: $out"
cl_stop_all
log PASS
