#!/usr/bin/env bash
# A detached volume's snapshot create/delete: the node handling the request
# cuts its own store copy in a thread (snapshot.c snap_local_start), its
# answer counted like the other copies' nodes' calls, so that node's admin
# loop answers other calls meanwhile; a create that fails on one copy is
# deleted again on the others (snap_calls_undo, from the reply on the loop),
# whether the failure is ours or another node's.
#
# 3 nodes, started with TSR_TEST_SNAP_LOCAL_CUT_HOLD_FILE=H (our store's cut
# waits while H exists, makes H.held when it starts waiting).  v 8 MiB, 3
# replicas: written through n1 (0x11, then 0x22 over [1M, 2M)), detached.
#  1. H made; `snapshot create v s1` through n1 in the background; H.held
#     appears (n1's own cut is waiting); n1 answers `node list` (3 alive),
#     `volume list` and `volume create w` meanwhile (each bounded to 20 s);
#     the create has not answered.  H removed: it exits 0; v@s1 is in every
#     node's catalogue and has the same sha256 on n1, n2, n3, the one of the
#     bytes written.
#  2. the same for `snapshot delete v s1`: held, `node list` answers, released:
#     exits 0, v@s1 in no catalogue.
#  3. undo: n3's copy alone already has v@d3 (admin_local_copy
#     snapshot-create): `snapshot create v d3` through n1 fails naming n3,
#     and n1's and n2's catalogues have no v@d3 (deleted again; n3 keeps its
#     own); n1's copy alone has v@d1: `snapshot create v d1` fails naming
#     n1 (this node), and n2's and n3's catalogues have no v@d1.
#  4. v attached again: scrub clean; detached.
#  5. n1 stopped (SIGTERM) while its cut of `snapshot create v s9` is held,
#     the hold released once n1 logged the signal (its loop has stopped):
#     n1 exits 0 (its stop waits for the cut's thread, which uses the
#     store), the create's client ends, n1's catalogue has v@s9 (the cut
#     landed before the store closed), and vol/v's snap_gen is one more
#     than before s9: the stop ran the record step the reply could not
#     (review 17a F2, 72e6636; on 72e6636^ it stays unraised).
# With TSR_TEST_SNAP_LOCAL_CUT_INLINE=1 (the cut on n1's admin loop, as
# before) step 1 fails: n1's `node list` waits for the held cut.
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
. ./snapops.sh
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
require_tessera "$ADMIN_LOCAL_COPY"
require_cmd nbdcopy qemu-io timeout

hold_cl_start TSR_TEST_SNAP_LOCAL_CUT_HOLD_FILE 3

ctsr volume create v --size 8M --replicas 3 >/dev/null || fail "volume create v"
ctsr volume attach v --node n1 >/dev/null || fail "attach v on n1"
qemu-io -f raw -c 'write -P 0x11 0 8M' -c 'write -P 0x22 1M 1M' "$(cl_nbd_uri 1 v)" >/dev/null ||
	fail "write v"
want=$(cl_image_sha 1 v) || fail "read v"
ctsr volume detach v >/dev/null || fail "detach v"

# held_op WHAT CMD...: CMD (an admin call through n1 whose cut on n1 is held)
# in the background; n1 answers other calls while it waits; released, CMD's
# exit status is returned and its output is in $HOLD_DIR/op.out
held_op() {
	local what=$1 r
	shift
	held_start "$HOLD" "$HOLD_DIR/op.out" "$what: n1's cut" "$@"
	log "$what: n1's own cut is held"
	r=$(ctsr_within 20 1 --json node list) || fail "n1's node list while $what's cut is held: status $?"
	assert_eq "$(printf '%s' "$r" | json_get 'sum(1 for n in j["nodes"] if n.get("alive"))')" 3 \
		"alive nodes in n1's node list while $what's cut is held"
	if [ "$what" = "create s1" ]; then
		ctsr_within 20 1 volume list >/dev/null ||
			fail "n1's volume list while $what's cut is held: status $?"
		ctsr_within 20 1 volume create w --size 1M --replicas 2 >/dev/null ||
			fail "n1's volume create w while $what's cut is held: status $?"
	fi
	[ -e "$HOLD" ] || fail "the hold ended before n1 answered"
	kill -0 "$HELD_PID" 2>/dev/null || fail "$what answered while n1's cut was held: $(cat "$HOLD_DIR/op.out")"
	log "$what: n1 answered other admin calls while its cut was held"
	rm -f "$HOLD"
	reap "$HELD_PID"
}

# ---- 1. create, n1's cut held
held_op "create s1" ctsr snapshot create v s1 || fail "snapshot create v s1: $(cat "$HOLD_DIR/op.out")"
assert_eq "$(snaps_all v s1)" "n1:yes n2:yes n3:yes" "v@s1 in the catalogues after the create"
h=$(cl_assert_snap_identical v s1 1 2 3)
assert_eq "$h" "$want" "v@s1's sha256 (the bytes written)"
grep -q "cluster: snapshot v@s1 created" "$(cl_dir 1)/tesserad.log" ||
	fail "n1's log does not say v@s1 was created"
log "v@s1 cut on n1 n2 n3 (sha256 ${h:0:16})"

# ---- 2. delete, n1's part held
held_op "delete s1" ctsr snapshot delete v s1 || fail "snapshot delete v s1: $(cat "$HOLD_DIR/op.out")"
assert_eq "$(snaps_all v s1)" "n1:no n2:no n3:no" "v@s1 in the catalogues after the delete"

# ---- 3. a create failing on one copy is undone on the others
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 3)" snapshot-create v d3) || fail "local_copy v@d3 on n3: $out"
rc=0
out=$(ctsr snapshot create v d3 2>&1) || rc=$?
[ "$rc" != 0 ] || fail "snapshot create v d3 succeeded with n3's copy already holding v@d3"
case "$out" in *"node n3"*) ;; *) fail "the failed create of v@d3 does not name n3: $out" ;; esac
log "create v@d3 refused: $out"
for (( i=0; i<100; i++ )); do
	[ "$(snaps_all v d3)" = "n1:no n2:no n3:yes" ] && break
	sleep 0.1
done
assert_eq "$(snaps_all v d3)" "n1:no n2:no n3:yes" "v@d3 in the catalogues after the failed create (undone on n1, n2)"
out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 1)" snapshot-create v d1) || fail "local_copy v@d1 on n1: $out"
rc=0
out=$(ctsr snapshot create v d1 2>&1) || rc=$?
[ "$rc" != 0 ] || fail "snapshot create v d1 succeeded with n1's copy already holding v@d1"
case "$out" in *"n1 (this node)"*) ;; *) fail "the failed create of v@d1 does not name n1: $out" ;; esac
log "create v@d1 refused: $out"
for (( i=0; i<100; i++ )); do
	[ "$(snaps_all v d1)" = "n1:yes n2:no n3:no" ] && break
	sleep 0.1
done
assert_eq "$(snaps_all v d1)" "n1:yes n2:no n3:no" "v@d1 in the catalogues after the failed create (undone on n2, n3)"
for n in 1 3; do
	d=$([ $n = 1 ] && echo d1 || echo d3)
	out=$("$ADMIN_LOCAL_COPY" "$(cl_dir $n)" snapshot-delete v $d) || fail "local_copy delete of v@$d on n$n: $out"
done

# ---- 4. the copies still agree
ctsr volume attach v --node n1 >/dev/null || fail "attach v again"
cl_scrub_clean v "after the detached cuts"
assert_eq "$(cl_image_sha 1 v)" "$want" "v's sha256 after the detached cuts"
ctsr volume detach v >/dev/null || fail "detach v"

# ---- 5. n1 stopped while its cut is held
gen0=$(cl_recorded_snap_gen v) || fail "read vol/v's snap_gen before v@s9"
held_start "$HOLD" "$HOLD_DIR/s9.out" "create s9: n1's cut" ctsr snapshot create v s9
s9=$HELD_PID
# the hold released once n1's loop has stopped (its signal line logged: the
# loop breaks there), so the last copy's answer comes after the loop ran
# for the last time and only the stop can run the record step
(
	for (( i=0; i<300; i++ )); do
		grep -q "received: shutting down" "$(cl_dir 1)/tesserad.log" && break
		sleep 0.05
	done
	rm -f "$HOLD"
) &
track_pid $!
cl_stop 1
rc=0
reap "$s9" || rc=$?
log "n1 stopped (exit 0) while its cut of v@s9 was held; the create's client: exit $rc, $(tr '\n' ' ' <"$HOLD_DIR/s9.out")"
case " $(cl_snaps_of 1 v) " in
*" s9 "*) ;;
*) fail "n1's catalogue has no v@s9 after its stop waited for the held cut: $(cl_snaps_of 1 v)" ;;
esac
log "v@s9 in the catalogues: $(snaps_all v s9)"
# review 17a F2 (72e6636): the stop runs the record step of an op whose
# copies all answered 0 and whose reply had not run: snap_gen raised
gen1=$(cl_recorded_snap_gen v) || fail "read vol/v's snap_gen after n1's stop"
assert_eq "$gen1" "$((gen0 + 1))" "vol/v's snap_gen after v@s9 was cut on every copy during n1's stop (was $gen0)"
log "vol/v's snap_gen $gen0 -> $gen1: the stop ran v@s9's record step"
cl_stop_all
log "ok"
