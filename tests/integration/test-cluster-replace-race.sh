#!/usr/bin/env bash
# Two replace-replica of one detached volume onto the same node X, through two
# nodes, crossing: replace A has made its new copy on X and not recorded it
# yet (test hook TSR_TEST_REPLACE_HOLD_FILE holds it there), replace B meets
# that copy (EEXIST).  B may delete it only once A can no longer record it: B
# first writes vol/<name> again at the revision both read (A's record write
# then fails), and deletes only the copy it met (uuid); A's rollback deletes
# only its own copy (uuid), so B's recorded copy stays (engine/cluster/volume.c
# replace_drop_garbage).  Before: B deleted A's copy and recorded its own, A's
# rollback then deleted B's recorded copy by name: vol/<name> listed a copy X
# did not hold (session-13 review, finding 2).
#   5 nodes; v (3 replicas) written; X, Y the two nodes holding no copy; Y
#   restarted with the hook; A = replace C1 -> X through Y (held after its
#   create), B = replace C2 -> X through C3: B succeeds; A released: refused
#   (its record write fails), its rollback leaves X's copy alone; every copy
#   vol/v lists exists on its node; v rebuilt reads back as written, scrub clean.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

cl_start 5
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 47
ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "nbdcopy into v"
ctsr volume detach v >/dev/null || fail "volume detach v"
copies=$(cl_copy_nodes v)
C=() F=()
for n in n1 n2 n3 n4 n5; do
	case ",$copies," in *",$n,"*) C+=("$n") ;; *) F+=("$n") ;; esac
done
[ ${#C[@]} = 3 ] && [ ${#F[@]} = 2 ] || fail "copies of v on $copies"
X=${F[0]} Y=${F[1]}
log "copies of v on $copies; X=$X, A through $Y, B through ${C[2]}"

# ---- Y again, with the hook
HOLD=$CL_ROOT/hold
on_exit "rm -f '$HOLD'"
cl_stop "${Y#n}"
export TSR_TEST_REPLACE_HOLD_FILE=$HOLD
cl_start_node "${Y#n}"
unset TSR_TEST_REPLACE_HOLD_FILE
cl_wait_nodes_alive 5
touch "$HOLD"

# ---- A: made its copy on X, held before its record write
( ctsr_via "${Y#n}" volume replace-replica v --node "${C[0]}" --to "$X" >"$CL_ROOT/a.out" 2>&1
  echo $? >"$CL_ROOT/a.rc" ) &
AP=$!
wait_log "${Y#n}" "replace of v: test hold" 30
cl_copy_size "${X#n}" v >/dev/null || fail "A's copy is not on $X while A is held"

# ---- B meanwhile, through another node
out=$(ctsr_via "${C[2]#n}" volume replace-replica v --node "${C[1]}" --to "$X" 2>&1) ||
	fail "replace B (${C[1]} -> $X) while A is held: $out"
log "B done: $out"

# ---- A released
rm -f "$HOLD"
wait $AP
[ "$(cat "$CL_ROOT/a.rc")" != 0 ] ||
	fail "replace A succeeded after B recorded its copy: $(cat "$CL_ROOT/a.out")"
log "A refused: $(head -1 "$CL_ROOT/a.out")"

listed=$(cl_copy_nodes v)
case ",$listed," in *",$X,"*) ;; *) fail "vol/v lists $listed, no copy on $X" ;; esac
for n in ${listed//,/ }; do
	cl_copy_size "${n#n}" v >/dev/null ||
		fail "vol/v lists a copy on $n (copies $listed) that $n's store does not hold"
done
grep -q "is another one" "$(cl_dir "${Y#n}")/tesserad.log" ||
	fail "A's rollback did not find X's copy to be another one"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v (to rebuild $X's copy)"
cl_wait_synced v
cl_assert_image 1 v "$IMG" "after the crossed replaces"
cl_scrub_clean v "after the crossed replaces"
ctsr volume detach v >/dev/null || fail "volume detach v"
log "every listed copy of v ($listed) exists and holds v's data"
cl_stop_all
