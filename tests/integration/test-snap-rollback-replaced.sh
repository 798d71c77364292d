#!/usr/bin/env bash
# A detached rollback cut short by a copy node's death, the node never back:
# replace-replica that copy, then the rollback run again finishes (review 15b
# F1).  The rollback mark (VolumeRecord.rollback_snapshot) refuses every
# attach until a rollback clears it; replace-replica of a detached volume
# records the new copy OUT_OF_SYNC with rebuild (rebuilt whole at the next
# attach).  Before, the rollback refused that copy ("out-of-sync: attach the
# volume") and the attach refused the mark ("run the rollback again"): only
# `volume delete` worked.  Now the rollback skips a replaced copy not rebuilt
# yet (snapshot.c rollback_copies_ready), rolls back the others and clears
# the mark; the attach rebuilds the replaced copy from them.
#
# 5 nodes (started with TSR_TEST_ROLLBACK_COPY_HOLD_FILE=H: another node's
# local_copy rollback waits while H exists); two cases, each on its own
# volume with its own dead node and spare: mirror v 8 MiB 3 replicas, then
# ec 2+1 e 8 MiB.  0x11 written, s1 cut, 0x22 written, detached.  H made; `volume rollback v
# s1` through n1 in the background; the first copy node L other than n1 is
# SIGKILLed while its copy's rollback is held, H removed: the rollback
# fails (L unreachable).  The attach is refused naming `tessera volume
# rollback v s1`.  L's copy replaced by the spare node F (rc 0).  Then:
#  - `volume rollback v s1` exits 0 (it failed before the fix: "its copy on
#    F is out-of-sync: attach the volume");
#  - `volume attach v --node n1` exits 0; every copy in sync (F's rebuilt);
#  - v reads s1's image (0x11) through n1, a --no-repair scrub finds the
#    copies agreeing (the ec parity too); detached, (mirror) every live copy
#    (each node's own, cut as v@chk through admin_local_copy) has s1's image;
#  - the clean record: the attach after the rollback logs "clean".
# TSR_TEST_ROLLBACK_NO_SKIP_REBUILD=1 (the nodes): the rollback refuses the
# replaced copy as before (the test fails: that is its A/B).
cd "$(dirname "$0")" || exit 2
. ./functions.sh
. ./cluster.sh
ADMIN_LOCAL_COPY=$TSR_BUILD/tests/admin_local_copy # admin_local_copy.c
# a test binary of this build: missing is a failure (not built), not a skip
require_tessera "$ADMIN_LOCAL_COPY"
require_cmd qemu-io timeout nbdcopy
make_tmpdir HOLD_DIR
HOLD=$HOLD_DIR/hold-copy
export TSR_TEST_ROLLBACK_COPY_HOLD_FILE=$HOLD
cl_start 5
on_exit "rm -f '$HOLD'"
head -c 8M /dev/zero | tr '\0' '\021' >"$HOLD_DIR/s1.img" # 0x11
DEAD= ALIVE=5

# one_case VOL MIRROR(1|0) CREATE_ARGS...
one_case() {
	local v=$1 mirror=$2 copies L= F= n i h rc out want live line
	shift 2
	ctsr volume create "$v" --size 8M "$@" >/dev/null || fail "create $v"
	copies=$(cl_copy_nodes "$v")
	for n in n2 n3 n4 n5 n1; do
		[ "$n" = "$DEAD" ] && continue
		case ",$copies," in
		*",$n,"*) [ -z "$L" ] && [ "$n" != n1 ] && L=$n ;;
		*) F=$n ;;
		esac
	done
	[ -n "$L" ] && [ -n "$F" ] || fail "$v: copies $copies: no copy node but n1, or no spare"
	log "$v: copies $copies: killing $L, replacing it by $F"
	ctsr volume attach "$v" --node n1 >/dev/null || fail "attach $v"
	qemu-io -f raw -c 'write -P 0x11 0 8M' "$(cl_nbd_uri 1 "$v")" >/dev/null || fail write
	ctsr volume detach "$v" >/dev/null || fail detach
	ctsr snapshot create "$v" s1 >/dev/null || fail snap
	ctsr volume attach "$v" --node n1 >/dev/null || fail "attach $v (2)"
	qemu-io -f raw -c 'write -P 0x22 0 8M' "$(cl_nbd_uri 1 "$v")" >/dev/null || fail write2
	ctsr volume detach "$v" >/dev/null || fail detach2

	touch "$HOLD"
	ctsr volume rollback "$v" s1 >"$HOLD_DIR/rb.out" 2>&1 &
	rb=$!; track_pid $rb
	for (( i=0; i<100; i++ )); do [ -e "$HOLD.held" ] && break; sleep 0.1; done
	[ -e "$HOLD.held" ] || fail "$v: no copy rollback held"
	sleep 1
	cl_kill "${L#n}"
	DEAD=$L
	log "$v: killed $L while its copy's rollback was held"
	rm -f "$HOLD" "$HOLD.held"
	rc=0; reap $rb || rc=$?
	log "$v: rollback cut short: exit $rc: $(tr '\n' ' ' < "$HOLD_DIR/rb.out")"
	[ $rc != 0 ] || fail "$v: the rollback answered 0 though $L died while its copy was held"
	ALIVE=$((ALIVE - 1))
	cl_wait_nodes_alive $ALIVE 60

	out=$(ctsr volume attach "$v" --node n1 2>&1) &&
		fail "$v: attach accepted with the rollback unfinished: $out"
	log "$v: attach refused: $out"
	printf '%s' "$out" | grepq "tessera volume rollback $v s1" ||
		fail "$v: the attach refusal does not name the rollback to run"
	printf '%s' "$out" | grepq "replace-replica" ||
		fail "$v: the attach refusal does not name replace-replica"
	out=$(ctsr volume rollback "$v" s1 2>&1) && fail "$v: rollback accepted with $L dead: $out"
	log "$v: rollback with $L dead refused: $out"
	printf '%s' "$out" | grepq "replace-replica" || fail "$v: the refusal does not name replace-replica"

	out=$(ctsr volume replace-replica "$v" --node "$L" --to "$F" 2>&1) ||
		fail "$v: replace $L->$F: $out"
	log "$v: replaced $L by $F"
	out=$(ctsr volume rollback "$v" s1 2>&1) ||
		fail "$v: rollback after the replace refused (stuck): $out"
	log "$v: rollback after the replace: ok"

	cl_attach_retry "$v" n1 20
	cl_wait_synced "$v" 60
	cl_assert_image 1 "$v" "$HOLD_DIR/s1.img" "$v after the rollback and the rebuild"
	cl_scrub_clean "$v" "$v after the rollback and the rebuild"
	line=$(grep -E "attaching $v epoch" "$(cl_dir 1)/tesserad.log" | tail -1)
	printf '%s' "$line" | grepq ", clean)" || fail "$v: the attach after the rollback is not clean: $line"
	ctsr volume detach "$v" >/dev/null || fail "detach $v"
	[ "$mirror" = 1 ] || return 0
	want=$(sha256 "$HOLD_DIR/s1.img")
	live=
	for n in ${copies//,/ } $F; do
		[ "$n" = "$L" ] && continue
		live+=" $n"
		i=${n#n}
		"$ADMIN_LOCAL_COPY" "$(cl_dir "$i")" snapshot-create "$v" chk >/dev/null 2>&1 ||
			fail "chk on $n"
		h=$(cl_image_sha "$i" "$v@chk") || fail "read $v@chk on $n"
		"$ADMIN_LOCAL_COPY" "$(cl_dir "$i")" snapshot-delete "$v" chk >/dev/null 2>&1
		[ "$h" = "$want" ] || fail "$v: copy on $n is not s1's image (${h:0:12}, want ${want:0:12})"
	done
	log "$v: copies on$live all have s1's image"
}

one_case v 1 --replicas 3
one_case e 0 --ec 2+1 --stripe-unit 16K
cl_stop_all
log ok
