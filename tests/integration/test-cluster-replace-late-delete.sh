#!/usr/bin/env bash
# A replace-replica's delete of the old copy removes that copy only (its
# uuid, read while the record still listed it), not a copy a replace back
# onto the old node made meanwhile (session-13 review 13b, finding 3).
# Replace A (C1 -> F1, through P) has written its record and is held before
# its delete of C1's old copy (test hook TSR_TEST_REPLACE_DELETE_HOLD_FILE);
# replace B (C2 -> C1, through Q) meets A's old copy on C1 (EEXIST), writes
# the record again, deletes that copy (its uuid), makes its own, and is held
# before its record write (TSR_TEST_REPLACE_HOLD_FILE): the record does not
# list C1 yet, so C1 cannot tell A's late delete from a delete of garbage.
# A released: before, its by-name delete removed B's new copy, and B then
# recorded a copy C1 did not hold; now A's delete names the old copy's uuid
# and C1 leaves B's copy alone (ESTALE).  B released: recorded.
#   5 nodes; v (3 replicas, min 1: two copies replaced at once) written; every copy vol/v lists exists on its
#   node; v rebuilt reads back as written, scrub clean.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

# store_uuid I NAME: the uuid of node I's store copy of NAME ("" if none).
store_uuid() {
	"$PY" - "$(cl_dir "$1")" "$2" <<'EOF'
import sqlite3, sys
d, name = sys.argv[1], sys.argv[2]
db = sqlite3.connect(f"file:{d}/store.db?mode=ro", uri=True)
row = db.execute("select uuid from volumes where name = ?", (name,)).fetchone()
print(row[0] if row else "")
EOF
}

cl_start 5
SIZE=$((8 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 53
ctsr volume create v --size 8M --replicas 3 --min-replicas 1 >/dev/null || fail "volume create v"
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
nbdcopy "$IMG" "$(cl_nbd_uri 1 v)" || fail "nbdcopy into v"
ctsr volume detach v >/dev/null || fail "volume detach v"
copies=$(cl_copy_nodes v)
C=() F=()
for n in n2 n3 n4 n5 n1; do
	case ",$copies," in *",$n,"*) C+=("$n") ;; *) F+=("$n") ;; esac
done
[ ${#C[@]} = 3 ] && [ ${#F[@]} = 2 ] || fail "copies of v on $copies"
# P runs A (held: its loop blocked), Q runs B (likewise): P is neither C1
# (A's old node, B's target) nor F1 (A's target) nor C2 (B's old node, which
# B asks for its copy's uuid); Q is neither C1 nor P
C1=${C[0]} F1=${F[0]} P=${F[1]} C2= Q=
[ "$P" = n1 ] && F1=${F[1]} P=${F[0]}
for n in "${C[@]:1}"; do
	[ "$n" != "$P" ] && [ -z "$C2" ] && C2=$n
done
for n in n2 n3 n4 n5 n1; do
	[ "$n" != "$C1" ] && [ "$n" != "$P" ] && [ -z "$Q" ] && Q=$n
done
[ "$P" != n1 ] && [ "$Q" != n1 ] || fail "the meta node n1 would be held (P $P, Q $Q)"
log "copies of v on $copies; A: $C1 -> $F1 through $P; B: $C2 -> $C1 through $Q"

HOLD_A=$CL_ROOT/hold-a HOLD_B=$CL_ROOT/hold-b
on_exit "rm -f '$HOLD_A' '$HOLD_B'"
cl_stop "${P#n}"
export TSR_TEST_REPLACE_DELETE_HOLD_FILE=$HOLD_A
cl_start_node "${P#n}"
unset TSR_TEST_REPLACE_DELETE_HOLD_FILE
cl_stop "${Q#n}"
export TSR_TEST_REPLACE_HOLD_FILE=$HOLD_B
cl_start_node "${Q#n}"
unset TSR_TEST_REPLACE_HOLD_FILE
cl_wait_nodes_alive 5
touch "$HOLD_A" "$HOLD_B"
old=$(store_uuid "${C1#n}" v)
[ -n "$old" ] || fail "$C1 holds no copy of v (the test's premise)"

# ---- A: recorded, held before its delete of C1's old copy
( ctsr_via "${P#n}" volume replace-replica v --node "$C1" --to "$F1" >"$CL_ROOT/a.out" 2>&1
  echo $? >"$CL_ROOT/a.rc" ) &
AP=$!
wait_log "${P#n}" "replace of v: test hold .* the old copy's delete" 30

# ---- B: onto C1, its copy made there, held before its record write
( ctsr_via "${Q#n}" volume replace-replica v --node "$C2" --to "$C1" >"$CL_ROOT/b.out" 2>&1
  echo $? >"$CL_ROOT/b.rc" ) &
BP=$!
wait_log "${Q#n}" "replace of v: test hold .* the new copy and the record" 30
new=$(store_uuid "${C1#n}" v)
[ -n "$new" ] && [ "$new" != "$old" ] ||
	fail "$C1's copy of v is '$new' while B is held, want a new one (old $old)"

# ---- A released: its late delete
rm -f "$HOLD_A"
wait $AP
[ "$(cat "$CL_ROOT/a.rc")" = 0 ] || fail "replace A: $(cat "$CL_ROOT/a.out")"
[ "$(store_uuid "${C1#n}" v)" = "$new" ] ||
	fail "A's late delete removed B's new copy of v on $C1 (uuid $new)"
log "A's late delete left B's copy on $C1 alone"

# ---- B released: recorded
rm -f "$HOLD_B"
wait $BP
[ "$(cat "$CL_ROOT/b.rc")" = 0 ] || fail "replace B: $(cat "$CL_ROOT/b.out")"
listed=$(cl_copy_nodes v)
case ",$listed," in *",$C1,"*) ;; *) fail "vol/v lists $listed, no copy on $C1" ;; esac
for n in ${listed//,/ }; do
	cl_copy_size "${n#n}" v >/dev/null ||
		fail "vol/v lists a copy on $n (copies $listed) that $n's store does not hold"
done
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v (to rebuild)"
cl_wait_synced v
cl_assert_image 1 v "$IMG" "after the late delete"
cl_scrub_clean v "after the late delete"
ctsr volume detach v >/dev/null || fail "volume detach v"
log "every listed copy of v ($listed) exists and holds v's data"
cl_stop_all
