#!/usr/bin/env bash
# Replacing a copy back onto the node it was replaced away from while that
# node was down.  The replace's delete of the old copy did not reach it, so
# the node still holds a store copy of that name, which vol/<name> does not
# list for it: garbage.  Before, the replace back was refused ("cannot
# create the copy ... File exists": a store copy of that name is left
# over); now the replace deletes the leftover (the record proves it
# garbage) and makes a new copy, which rebuilds.
#   4 nodes, a 3-replica volume r with data, attached on n1; OLD (a copy
#   node other than n1) stopped, its copy replaced onto NEW (the 4th node),
#   rebuilt; OLD started again (its stale copy still in its store); the
#   copy on NEW replaced back onto OLD: succeeds, the copy rebuilds, r reads
#   back as written, scrub finds 0 mismatches; then onto NEW again (which
#   may hold a leftover too: see the end), the same checks, and the copies
#   are identical once the nodes are stopped.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

cl_start 4
SIZE=$((32 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 13

ctsr volume create r --size 32M --replicas 3 >/dev/null || fail "volume create r"
ctsr volume attach r --node n1 >/dev/null || fail "volume attach r"
nbdcopy "$IMG" "$(cl_nbd_uri 1 r)" || fail "nbdcopy into r"
copies=$(cl_copy_nodes r)
OLD= NEW=
for n in n2 n3 n4; do
	case ",$copies," in *",$n,"*) [ -z "$OLD" ] && OLD=$n ;; esac
done
for n in n1 n2 n3 n4; do
	case ",$copies," in *",$n,"*) ;; *) NEW=$n ;; esac
done
[ -n "$OLD" ] && [ -n "$NEW" ] || fail "copies on $copies: no OLD/NEW pair"
log "copies of r on $copies: OLD $OLD, NEW $NEW"

# ---- OLD down: its copy replaced onto NEW
cl_stop "${OLD#n}"
ctsr volume replace-replica r --node "$OLD" --to "$NEW" >/dev/null ||
	fail "replace-replica r $OLD -> $NEW"
cl_wait_synced r
log "r's copy on $OLD (down) replaced onto $NEW, rebuilt"

# ---- OLD back, with its old copy
cl_start_node "${OLD#n}"
cl_wait_nodes_alive 4
cl_copy_size "${OLD#n}" r >/dev/null ||
	fail "$OLD does not hold its old copy of r (the test's premise)"

# ---- replace back onto OLD
out=$(ctsr volume replace-replica r --node "$NEW" --to "$OLD" 2>&1) ||
	fail "replace-replica r $NEW -> $OLD (its left-over copy): $out"
[ "$(cl_copy_nodes r)" = "$(printf '%s\n' ${copies//,/ } | sort | paste -sd,)" ] ||
	fail "copies of r on $(cl_copy_nodes r) after the replace back, want $copies"
wait_log 1 "volume r: node $OLD held a copy that vol/r does not list" 10
cl_wait_synced r
log "r's copy replaced back onto $OLD, rebuilt"
cl_assert_image 1 r "$IMG" "after the replace back"
cl_scrub_clean r "after the replace back"

# ---- and onto NEW again: the delete of NEW's copy right after the replace
# back may find it still open (the coordinator's connection to it closes a
# moment later: "volume r is open"), so NEW may hold a leftover too
out=$(ctsr volume replace-replica r --node "$OLD" --to "$NEW" 2>&1) ||
	fail "replace-replica r $OLD -> $NEW again: $out"
cl_wait_synced r
cl_assert_image 1 r "$IMG" "after the replace onto $NEW again"
cl_scrub_clean r "after the replace onto $NEW again"
now=$(cl_copy_nodes r)
ctsr volume detach r >/dev/null || fail "volume detach r"
cl_stop_all
# shellcheck disable=SC2046
cl_assert_copies_identical r $(printf '%s\n' ${now//,/ } | tr -d n)
log "PASS"
