#!/usr/bin/env bash
# A volume delete's late delete of a copy removes that copy only (its uuid,
# asked while vol/<name> still listed it), not the copy of a new volume of the
# same name made on that node since (session-19 revE, finding M1).
# 3 nodes (--leftover-grace 2); v (3 replicas) deleted through n1 while n2
# and n3 defer the local_copy deletes they receive (test hook
# TSR_TEST_COPY_DELETE_DEFER_FILE: answered "timed out" at once, run when
# the file is gone: a delete that stayed queued on a slow node); their old
# copies are then removed by the leftover sweep.  v is created again through
# n3, held between its copies and its record (TSR_TEST_CREATE_HOLD_FILE): no
# record lists the new copies, so only a uuid tells them from the old ones.
# The deferred deletes run then.  Before: they deleted by name, the new
# copies on n2 and n3 were gone, and the record listed copies that did not
# exist; now they name the old copies' uuids and are refused (ESTALE).
#   a create while the old copies are there fails and leaves no copy on n1;
#   the new v written and read back; n2's copy is the new one; every copy
#   identical.
# Then w (review s20-revK, B): n2's copy of w larger than its record (what a
# grow stopped after its grow step leaves; admin_local_copy volume-resize).
# The delete asks each copy's uuid at size 0 first (any size), so n2's copy
# is deleted by its uuid too.  Before: asked at the record's size, n2
# answered -EINVAL ("can only grow") and named no uuid, and its copy was
# deleted by name ("the delete of the copy of 'w' (by name) is deferred").
# Then the clone's undo (review s20-revK, C): a clone of s@k fails on n3
# (its copy lacks k: admin_local_copy snapshot-delete) and its undo deletes
# the copies made on n1 and n2 by the uuid each node answered, as the
# create's undo does.  Before: by name ("the delete of the copy of 'sc' (by
# name) is deferred" on n2).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy

ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
make_tmpdir T
DEFER=$T/defer HOLD=$T/hold
export TSR_TEST_COPY_DELETE_DEFER_FILE=$DEFER TSR_TEST_CREATE_HOLD_FILE=$HOLD
cl_start 3 --leftover-grace 2
unset TSR_TEST_COPY_DELETE_DEFER_FILE TSR_TEST_CREATE_HOLD_FILE
SIZE=$((4 << 20))
IMG=$CL_ROOT/img
cl_pattern "$IMG" "$SIZE" 61

ctsr volume create v --size 4M --replicas 3 >/dev/null || fail "volume create v"
old=$(cl_copy_file 2 v) || fail "n2 holds no copy of v"

# ---- the delete: n2's and n3's copy deletes deferred (late)
touch "$DEFER"
out=$(ctsr volume delete v 2>&1) || fail "volume delete v: $out"
wait_log 2 "test hook .*: the delete of the copy of 'v' .* is deferred" 10
wait_log 3 "test hook .*: the delete of the copy of 'v' .* is deferred" 10
log "n2's deferred delete: $(grep -o "the delete of the copy of 'v' ([^)]*)" \
	"$(cl_dir 2)/tesserad.log" | tail -1)"
# a create now meets the old copies still there ("exists"): the copies it
# made are undone (by their uuids), none is left on n1
expect_fail 1 "node n[23]: volume .v. already exists" ctsr volume create v --size 4M --replicas 3
cl_copy_size 1 v >/dev/null && fail "the failed create of v left its copy on n1"
cl_wait_no_copy 2 v "n2's old copy of v was not swept in 10 s"
cl_wait_no_copy 3 v "n3's old copy of v was not swept in 10 s"

# ---- v again, through n3, held between its copies and its record
cl_create_held 3 "$HOLD" v --size 4M --replicas 3
new=$(cl_copy_file 2 v) || fail "n2 holds no new copy of v while the create is held"
[ "$new" != "$old" ] || fail "n2's copy of v is still the old one ($old)"

# ---- the late deletes run now (n3's once its create goes on: its loop is held)
rm -f "$DEFER"
cl_deferred_ran 2 v
[ "$(cl_copy_file 2 v 2>/dev/null)" = "$new" ] ||
	fail "the late delete removed the new copy of v on n2 ($new)"
cl_create_held_end "$HOLD" v

# ---- the new v holds its data on every copy
cl_write_all v "$IMG" "the new v"

# ---- w: n2's copy larger than the record, deleted by its uuid all the same
ctsr volume create w --size 4M --replicas 3 >/dev/null || fail "volume create w"
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 2)" volume-resize w 8M) || fail "n2's copy of w to 8M: $out"
touch "$DEFER"
out=$(ctsr volume delete w 2>&1) || fail "volume delete w: $out"
wait_log 2 "test hook .*: the delete of the copy of 'w' .* is deferred" 10
grep -q "the delete of the copy of 'w' (by name)" "$(cl_dir 2)/tesserad.log" &&
	fail "n2's copy of w (8M, its record 4M) was deleted by name, not by its uuid"
rm -f "$DEFER"
cl_deferred_ran 2 w
cl_wait_no_copy 2 w "n2's copy of w was not deleted by its uuid"

# ---- sc: a clone undone (n3's copy of s lacks k), n2's copy deleted by uuid
ctsr volume create s --size 4M --replicas 3 >/dev/null || fail "volume create s"
ctsr snapshot create s k >/dev/null || fail "snapshot create s k"
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 3)" snapshot-delete s k) || fail "n3's s@k deleted: $out"
touch "$DEFER"
expect_fail 1 "node n3: .*" ctsr volume create sc --from-volume s --from-snapshot k
wait_log 2 "test hook .*: the delete of the copy of 'sc' .* is deferred" 10
grep -q "the delete of the copy of 'sc' (by name)" "$(cl_dir 2)/tesserad.log" &&
	fail "the clone's undo deleted n2's copy of sc by name, not by its uuid"
rm -f "$DEFER"
cl_deferred_ran 2 sc
cl_wait_no_copy 2 sc "n2's copy of sc was not deleted by its uuid"
cl_copy_size 1 sc >/dev/null && fail "the clone's undo left its copy of sc on n1"
cl_stop_all
