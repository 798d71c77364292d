#!/usr/bin/env bash
# A rollback right after `volume detach` waits for a copy whose peer session
# is still closing instead of failing (CI flake of test-snapshot-cli, run
# 19a: "node n3: volume 'cv' is in use by an NBD client").  The detach
# answers once the coordinator's sessions are gone from its side; each copy's
# node closes its copy when its peer server has read the end of the stream
# and its last request finished, a moment later.  A rollback reaching the
# copy in that moment found it open: -EBUSY, and a message blaming an NBD
# client.  Now the store's waiting rollback (a copy's, in a thread) waits a
# bounded time (10 s) for the copy's last open handle to go; past the bound
# the message says a peer session (a coordinator) holds it, not an NBD client.
# Since session 20 the detach itself waits for its copies' close (at most
# the peer timeout, 2 s here: cluster/closewait.c): with n3's close held past
# that bound, it answers with a note naming n3's open copy, and the rollback
# right after it still needs the store's wait.
#
# 3 nodes, n3 started with TSR_TEST_PEER_CLOSE_HOLD_FILE=H (while H exists, a
# closed session's copies stay open, H.held made); mirror v 8 MiB, 3
# replicas: 0x11, s1, 0x22, detached with H made (n3's copy held open).  The
# rollback to s1 runs in the background; once n3's log says it waits for the
# copy's close, H is removed: the rollback answers 0, and v attached on n2
# reads s1's image.  Before the fix: the rollback answered 1 at once ("in use
# by an NBD client").
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
require_cmd qemu-io nbdcopy
make_tmpdir HOLD_DIR
HOLD=$HOLD_DIR/hold
cl_start_held 3 3 TSR_TEST_PEER_CLOSE_HOLD_FILE "$HOLD"
cl_mirror_s1 v
head -c 8M /dev/zero | tr '\0' '\021' >"$HOLD_DIR/s1.img" # 0x11

touch "$HOLD"
dout=$(ctsr volume detach v 2>&1) || fail "detach: $dout"
grepq "its copy is still open on n3 (1 session(s) open there)" <<<"$dout" ||
	fail "the detach past its bound does not name n3's open copy: $dout"
for (( i=0; i<100; i++ )); do [ -e "$HOLD.held" ] && break; sleep 0.1; done
[ -e "$HOLD.held" ] || fail "n3's session close not held"
log "detached; n3's copy still open (its session's close held)"
ctsr volume rollback v s1 >"$HOLD_DIR/r.out" 2>&1 & r=$!; track_pid $r
for (( i=0; i<100; i++ )); do
	grepq "rollback: volume v: this copy is still open" <"$(cl_dir 3)/tesserad.log" && break
	kill -0 $r 2>/dev/null || break
	sleep 0.1
done
rm -f "$HOLD"
rc=0; reap $r || rc=$?
out=$(tr '\n' ' ' <"$HOLD_DIR/r.out")
[ $rc = 0 ] || fail "rollback right after the detach: rc $rc: $out"
grepq "rollback: volume v: this copy is still open" <"$(cl_dir 3)/tesserad.log" ||
	fail "n3's rollback did not meet its copy open (the hold did not hold)"
log "rollback right after the detach waited for n3's copy to close: ok"
ctsr volume attach v --node n2 >/dev/null || fail "attach on n2"
cl_assert_image 2 v "$HOLD_DIR/s1.img" "after the rollback to s1"
ctsr volume detach v >/dev/null || fail detach2
cl_stop_all
log ok
