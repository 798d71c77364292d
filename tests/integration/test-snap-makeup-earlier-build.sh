#!/usr/bin/env bash
# The make-up of a missed snapshot on a copy whose node is of an earlier
# build, one that refuses the SNAP size field (-EPROTO; played by the hook
# TSR_TEST_PEER_SNAP_UNSIZED=1, which answers a sized SNAP as that build's
# parser did) (review 14, finding 1).  Mirror and ec 2+1 (LAYOUTS="mirror ec"
# by default; LAYOUTS=ec runs one), cases 1-4 below (CASES="common grown
# grown_copy grown_move" by default).
#  1. the common case: 3 nodes, n3 of the earlier build; v 8 MiB, written,
#     s0 cut with n3 in sync (the cut's own fallback), n3 stopped, s1 cut,
#     v written again, n3 back.  Asserted: v in sync within 60 s (the
#     make-up's cut sent again without the size: n3 cuts at its copy's size,
#     which is s1's); v@s1 in n3's catalogue at s1's size (mirror 8 MiB, ec
#     its 4 MiB chunks) and, mirror, read on n3 as written before s1; the
#     fallback's WARN in the coordinator's log.
#     Before the fix: n3 stayed out of sync ("replay of snapshot s1:
#     Protocol error" every 2.5 s; ec: no cause logged).
#  2. a snapshot the earlier build cannot cut at its size: 4 nodes; v 8 MiB,
#     s1 cut, v grown online to 16 MiB, a copy replaced onto n4 (earlier
#     build).  Asserted, mirror: the copy on n4 stays out of sync and no v@s1
#     of another size is on n4; the WARN naming n4 to upgrade is logged once
#     in 3 s (not a make-up at every return of the copy: about every 1 s
#     with TSR_TEST_RETURN_BACKOFF_MS=500, 2.5 s without); once n4 restarts as a current
#     build ("the upgrade") v gets in sync and n4's v@s1 is 8 MiB with s1's
#     bytes.  ec: n4's copy gets in sync without v@s1 (skipped, its chunks
#     decoded from the others), the WARN naming n4 logged once, v@s1 reads
#     back as written (through n1, where v is attached).
#  3. n3's copy grown past the record (the local_copy VolumeResize, as
#     test-snap-cut-oversize-copies does), so its unsized cut is larger than
#     s1: 3 nodes, n3 of the earlier build away while s1 is cut, then back.
#     Asserted: the size n3 cut is read back, found wrong, deleted, and one
#     WARN names n3 to upgrade; mirror: n3's copy stays out of sync without
#     v@s1 until n3 restarts as a current build, then v@s1 on n3 is 8 MiB
#     with s1's bytes; ec: n3's copy gets in sync without v@s1.
#  4. (mirror; CASES=grown_move, not run for ec, which does not park) case
#     2's parked copy moved off n4 instead, the WARN's other way out
#     (review 14b, finding 3): replace-replica v --node n4 --to OLD (a
#     current node) while n4's copy is parked.  Asserted: the WARN names that
#     command; the replace answers 0 at the first try (a refusal would leave
#     the record changed: review 14b, finding 1); v's copies include OLD, not
#     n4, and get in sync; v@s1 on OLD is 8 MiB with s1's bytes; v reads back
#     as written through n1, a scrub is clean, and OLD's copy file equals n1's
#     and what was written once v is detached.
#     Before the fix (or with TSR_TEST_MIRROR_PARK_KEEPS_REPLACE=1): the
#     replace is refused "Device or resource busy" (the parked copy kept the
#     layout's replace_running).
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
# a disconnected copy brought back 0.5 s after its last return (the next
# tick once it is disconnected again: about every 1 s), not every 2.5 s: the
# negative waits below (no make-up retried) span about 3 returns in 3 s
export TSR_TEST_RETURN_BACKOFF_MS=500
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
require_tessera "$ADMIN_LOCAL_COPY"
require_cmd nbdcopy

# snap_size I VOL SNAP: the size of VOL@SNAP in node I's catalogue ("-": none)
snap_size() {
	"$PY" - "$(cl_dir "$1")" "$2" "$3" <<'PYEOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
r = db.execute("select s.size from snapshots s join volumes v on s.vol_uuid = v.uuid"
               " where v.name = ? and s.name = ? and (s.flags & 15) = 0",
               (sys.argv[2], sys.argv[3])).fetchone()
print(r[0] if r else "-")
PYEOF
}

# create_v LAYOUT SIZE
create_v() {
	if [ "$1" = ec ]; then
		ctsr volume create v --size "$2" --ec 2+1 --stripe-unit 16K >/dev/null ||
			fail "create v (ec 2+1)"
	else
		ctsr volume create v --size "$2" --replicas 3 --min-replicas 2 >/dev/null ||
			fail "create v"
	fi
}

# assert_warned_once PATTERN NODE: n1's log has PATTERN once, or once more
# per loss of the connection to NODE's copy (a return replays it again,
# which is meant: a node's restart is how its upgrade is seen); a make-up
# retried at every return of the copy logs it twice more in the 3 s
assert_warned_once() {
	local n lost
	n=$(grep -cE -- "$1" "$(cl_dir 1)"/tesserad.log)
	lost=$(grep -cE -- "copy [0-9]+ \($2, [^)]*\): connection failed" "$(cl_dir 1)"/tesserad.log)
	(( n >= 1 && n <= 1 + lost )) ||
		fail "n1's log names $2 to upgrade $n times in 3 s ($lost connection losses): want 1"
	log "n1's log names $2 to upgrade $n time(s) ($lost connection losses)"
}

# copy_state VOL NODE
copy_state() {
	vstatus "$1" "[c['state'] for c in j['volume']['copies'] if c['node']=='$2'][0]" 2>/dev/null
}

common_case() {
	local layout=$1 want want_snap
	log "== $layout: the common case (s1 is the volume's size)"
	CL_ARGS=() # a fresh cluster: new ports, new directories
	cl_start 3
	cl_stop 3
	TSR_TEST_PEER_SNAP_UNSIZED=1 cl_start_node 3
	cl_wait_nodes_alive 3
	cl_pattern "$CL_ROOT/img" $((8 << 20)) 7
	want=$(sha256 "$CL_ROOT/img")
	create_v "$layout" 8M
	ctsr volume attach v --node n1 >/dev/null || fail "attach v"
	nbdcopy "$CL_ROOT/img" "$(cl_nbd_uri 1 v)" || fail "write v"
	ctsr snapshot create v s0 >/dev/null || fail "snapshot s0 with n3 in sync"
	cl_stop 3
	cl_wait_state v n3 out-of-sync 30
	ctsr snapshot create v s1 >/dev/null || fail "snapshot s1 with n3 away"
	cl_pattern "$CL_ROOT/img2" $((8 << 20)) 8
	nbdcopy "$CL_ROOT/img2" "$(cl_nbd_uri 1 v)" || fail "write v after s1"
	TSR_TEST_PEER_SNAP_UNSIZED=1 cl_start_node 3
	cl_wait_nodes_alive 3
	log "n3 (earlier build) back: waiting for v to sync"
	cl_wait_synced v 60
	want_snap=$((8 << 20))
	[ "$layout" = ec ] && want_snap=$((4 << 20))
	assert_eq "$(snap_size 3 v s1)" "$want_snap" "v@s1's size in n3's catalogue"
	if [ "$layout" = mirror ]; then
		assert_eq "$(cl_image_sha 3 v@s1)" "$want" "sha256 of v@s1 read on n3"
	else
		assert_eq "$(cl_image_sha 1 v@s1)" "$want" "sha256 of v@s1 read on n1"
	fi
	grep -q "node n3 refused the sized snapshot create of s1 .*cut there at its" \
		"$(cl_dir 1)"/tesserad.log || fail "no fallback WARN for s1 on n3 in n1's log"
	assert_eq "$(cl_image_sha 1 v)" "$(sha256 "$CL_ROOT/img2")" "sha256 of v"
	cl_scrub_clean v "$layout: after the make-up on n3"
	ctsr volume detach v >/dev/null || true
	cl_stop_all
	log "$layout: s1 made up on n3 (earlier build) at its size; v in sync"
}

grown_case() {
	local layout=$1 want copies OLD pat st
	log "== $layout: s1 cut before a grow (the earlier build cannot cut it at its size)"
	CL_ARGS=()
	cl_start 4
	cl_stop 4
	TSR_TEST_PEER_SNAP_UNSIZED=1 cl_start_node 4
	cl_wait_nodes_alive 4
	cl_pattern "$CL_ROOT/img" $((8 << 20)) 5
	want=$(sha256 "$CL_ROOT/img")
	create_v "$layout" 8M
	ctsr volume attach v --node n1 >/dev/null || fail "attach v"
	nbdcopy "$CL_ROOT/img" "$(cl_nbd_uri 1 v)" || fail "write v"
	ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
	ctsr volume resize v --size 16M >/dev/null || fail "online resize to 16M"
	cl_pattern "$CL_ROOT/img2" $((16 << 20)) 6
	nbdcopy "$CL_ROOT/img2" "$(cl_nbd_uri 1 v)" || fail "write v after the grow"
	copies=$(cl_copy_nodes v)
	case ",$copies," in *,n4,*) fail "v has a copy on n4 already: $copies" ;; esac
	OLD=n2
	case ",$copies," in *,n2,*) ;; *) OLD=n3 ;; esac
	ctsr volume replace-replica v --node "$OLD" --to n4 >/dev/null || fail "replace $OLD -> n4"
	if [ "$layout" = mirror ]; then
		pat="node n4 refused the sized snapshot create of s1 .*cannot cut it at its size"
	else
		pat="node n4 .*cannot cut snapshot s1 at its chunk size"
	fi
	wait_log 1 "$pat" 60
	sleep 3 # a make-up at every return (about 1 s apart here) logs it twice more
	assert_warned_once "$pat" n4
	if [ "$layout" = mirror ]; then
		assert_eq "$(copy_state v n4)" out-of-sync "n4's copy of v (earlier build)"
		st=$(snap_size 4 v s1)
		[ "$st" = - ] || [ "$st" = $((8 << 20)) ] || fail "n4 holds a v@s1 of $st bytes"
		log "mirror: n4's copy stays out of sync, one WARN; now n4 is upgraded"
		cl_stop 4
		cl_start_node 4
		cl_wait_nodes_alive 4
		cl_wait_synced v 60
	else
		cl_wait_synced v 60
		assert_eq "$(snap_size 4 v s1)" - "v@s1 on n4 (skipped)"
	fi
	if [ "$layout" = mirror ]; then
		assert_eq "$(snap_size 4 v s1)" $((8 << 20)) "v@s1's size in n4's catalogue"
		assert_eq "$(cl_image_sha 4 v@s1)" "$want" "sha256 of v@s1 read on n4"
	fi
	assert_eq "$(cl_image_sha 1 v@s1)" "$want" "sha256 of v@s1 read on n1"
	assert_eq "$(cl_image_sha 1 v)" "$(sha256 "$CL_ROOT/img2")" "sha256 of v"
	ctsr volume detach v >/dev/null || true
	cl_stop_all
	log "$layout: s1 (cut before a grow) on n4 (earlier build): handled"
}

grown_move_case() {
	local layout=$1 want copies OLD pat out oi
	if [ "$layout" != mirror ]; then
		log "== $layout: grown_move is mirror only (ec skips the snapshot, parks nothing)"
		return 0
	fi
	log "== $layout: the parked copy moved off n4 (replace-replica, not the upgrade)"
	CL_ARGS=()
	cl_start 4
	cl_stop 4
	TSR_TEST_PEER_SNAP_UNSIZED=1 cl_start_node 4
	cl_wait_nodes_alive 4
	cl_pattern "$CL_ROOT/img" $((8 << 20)) 5
	want=$(sha256 "$CL_ROOT/img")
	create_v "$layout" 8M
	ctsr volume attach v --node n1 >/dev/null || fail "attach v"
	nbdcopy "$CL_ROOT/img" "$(cl_nbd_uri 1 v)" || fail "write v"
	ctsr snapshot create v s1 >/dev/null || fail "snapshot s1"
	ctsr volume resize v --size 16M >/dev/null || fail "online resize to 16M"
	cl_pattern "$CL_ROOT/img2" $((16 << 20)) 6
	nbdcopy "$CL_ROOT/img2" "$(cl_nbd_uri 1 v)" || fail "write v after the grow"
	copies=$(cl_copy_nodes v)
	case ",$copies," in *,n4,*) fail "v has a copy on n4 already: $copies" ;; esac
	OLD=n2
	case ",$copies," in *,n2,*) ;; *) OLD=n3 ;; esac
	oi=${OLD#n}
	ctsr volume replace-replica v --node "$OLD" --to n4 >/dev/null || fail "replace $OLD -> n4"
	pat="node n4 refused the sized snapshot create of s1 .*cannot cut it at its size"
	wait_log 1 "$pat" 60
	grep -E -- "$pat" "$(cl_dir 1)"/tesserad.log |
		grepq "or move it off n4: tessera volume replace-replica v --node n4 --to NODE" ||
		fail "the WARN does not name the way out by replace-replica"
	assert_eq "$(copy_state v n4)" out-of-sync "n4's parked copy of v"
	log "mirror: n4's copy parked; moving it back: replace-replica v --node n4 --to $OLD"
	out=$(timeout 60 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
		volume replace-replica v --node n4 --to "$OLD" 2>&1) ||
		fail "replace-replica v --node n4 --to $OLD while n4's copy is parked: $out"
	copies=$(cl_copy_nodes v)
	case ",$copies," in *,n4,*) fail "v's copies after the move: $copies" ;; esac
	case ",$copies," in *,"$OLD",*) ;; *) fail "v has no copy on $OLD after the move: $copies" ;; esac
	cl_wait_synced v 60
	assert_eq "$(snap_size "$oi" v s1)" $((8 << 20)) "v@s1's size in $OLD's catalogue"
	assert_eq "$(cl_image_sha "$oi" v@s1)" "$want" "sha256 of v@s1 read on $OLD"
	assert_eq "$(cl_image_sha 1 v@s1)" "$want" "sha256 of v@s1 read on n1"
	assert_eq "$(cl_image_sha 1 v)" "$(sha256 "$CL_ROOT/img2")" "sha256 of v"
	cl_scrub_clean v "$layout: after the move off n4"
	ctsr volume detach v >/dev/null || fail "detach v"
	cl_assert_copies_identical v 1 "$oi"
	cmp -s "$(cl_copy_file "$oi" v)" "$CL_ROOT/img2" || fail "$OLD's copy of v differs from what was written"
	cl_stop_all
	log "$layout: the parked copy moved off n4 to $OLD: in sync, v@s1 there, v as written"
}

grown_copy_case() {
	local layout=$1 want pat out copy=$((8 << 20)) grown=$((16 << 20))
	log "== $layout: n3's copy grown past the record (its unsized cut is too large)"
	[ "$layout" = ec ] && copy=$((4 << 20)) grown=$((8 << 20))
	CL_ARGS=()
	cl_start 3
	cl_stop 3
	TSR_TEST_PEER_SNAP_UNSIZED=1 cl_start_node 3
	cl_wait_nodes_alive 3
	cl_pattern "$CL_ROOT/img" $((8 << 20)) 9
	want=$(sha256 "$CL_ROOT/img")
	create_v "$layout" 8M
	out=$("$ADMIN_LOCAL_COPY" "$(cl_dir 3)" volume-resize v "$grown") ||
		fail "local_copy resize of v on n3: $out"
	assert_eq "$(cl_copy_size 3 v)" "$grown" "n3's copy of v after the local_copy resize"
	ctsr volume attach v --node n1 >/dev/null || fail "attach v"
	nbdcopy "$CL_ROOT/img" "$(cl_nbd_uri 1 v)" || fail "write v"
	cl_stop 3
	cl_wait_state v n3 out-of-sync 30
	ctsr snapshot create v s1 >/dev/null || fail "snapshot s1 with n3 away"
	TSR_TEST_PEER_SNAP_UNSIZED=1 cl_start_node 3
	cl_wait_nodes_alive 3
	if [ "$layout" = mirror ]; then
		pat="node n3 .*cut snapshot s1 at $grown bytes, not its $copy: deleted there; upgrade n3"
	else
		pat="node n3 .*cannot cut snapshot s1 at its chunk size \($copy bytes; it cut $grown\)"
	fi
	wait_log 1 "$pat" 60
	if [ "$layout" = mirror ]; then
		sleep 3 # a make-up at every return (about 1 s apart here) logs it twice more
		assert_warned_once "$pat" n3
		assert_eq "$(copy_state v n3)" out-of-sync "n3's copy of v (earlier build)"
		assert_eq "$(snap_size 3 v s1)" - "v@s1 on n3 (its wrong-sized cut deleted)"
		log "mirror: n3's wrong-sized s1 deleted, the copy stays out of sync; now n3 is upgraded"
		cl_stop 3
		cl_start_node 3
		cl_wait_nodes_alive 3
		cl_wait_synced v 60
		assert_eq "$(snap_size 3 v s1)" "$copy" "v@s1's size in n3's catalogue"
		assert_eq "$(cl_image_sha 3 v@s1)" "$want" "sha256 of v@s1 read on n3"
	else
		cl_wait_synced v 60
		assert_eq "$(grep -cE -- "$pat" "$(cl_dir 1)"/tesserad.log)" 1 \
			"WARNs naming n3 to upgrade in n1's log"
		assert_eq "$(snap_size 3 v s1)" - "v@s1 on n3 (its wrong-sized cut deleted, skipped)"
	fi
	assert_eq "$(cl_image_sha 1 v@s1)" "$want" "sha256 of v@s1 read on n1"
	ctsr volume detach v >/dev/null || true
	cl_stop_all
	log "$layout: s1 on n3 (earlier build, copy grown past the record): handled"
}

for layout in ${LAYOUTS:-mirror ec}; do
	for c in ${CASES:-common grown grown_copy grown_move}; do
		"${c}_case" "$layout"
	done
done
log "PASS"
