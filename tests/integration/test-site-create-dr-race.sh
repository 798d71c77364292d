#!/usr/bin/env bash
# A resumed DR create that finds vol/<vol> recorded meanwhile (another create
# of the same stream recorded first) must delete the copies it made itself
# in this run on nodes that record does not list, never the copy it met nor
# one on a node the record lists, and leave target/<vol> naming the stream
# (contract s17-drleft).  DR: dr-n1 (listener, meta) and dr-n2, target
# replicas:2.  Each case, on its own volume V:
#  a. a first create of V is crashed (as test-site-create-dr-nonblocking's
#     case 3), placed dr-n1 then dr-n2: dr-n2 frozen, dr-n1 killed while its
#     call to dr-n2 waits, dr-n2 resumed (it makes its copy for the dead
#     caller): target/V names the stream, copies of V on both, no vol/V.
#  b. dr-n1 restarted with the hook TSR_TEST_TC_RECORD_FIRST_FILE: the
#     resumed create replaces the leftover on the FIRST node of its
#     placement (its own new copy, made in this run), meets the leftover on
#     the other node, and just before its re-read the hook writes vol/V
#     listing that other node alone (the record of the create that won).
#  Case 1 (V=rv): placed dr-n1, dr-n2 (equal capacity: by id): the copy made
#  in this run is dr-n1's own (deleted through its store).  Case 2 (V=qv):
#  dr-n1 restarted with --capacity 1G, so placed dr-n2, dr-n1: the copy made
#  in this run is dr-n2's (deleted by an async VolumeDelete local_copy uuid).
# Asserted: the create fails "recorded meanwhile", naming the met copy as the
# record's and its own as deleted; within 10 s the node of its own copy holds
# no V (on the code before, it kept it: left to the leftover sweep,
# --leftover-grace 900 s); the other node still holds the met copy, uuid
# unchanged; vol/V lists that node alone; the source's next open attaches
# that record (target/V kept) and V streams, sha256 equal at both sites.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera
sites_start_dr2
DLOG=$(sdir dr)/tesserad.log
M=$((1 << 20))

# store_uuid DIR VOL [TENTHS]: the uuid of DIR's store copy of VOL, or
# "none" (after TENTHS tenths of a second, default 30, for one to appear)
store_uuid() {
	"$PY" - "$1" "$2" "${3:-30}" <<'EOF'
import sqlite3, sys, time
for _ in range(int(sys.argv[3])):
    db = sqlite3.connect(f"file:{sys.argv[1]}/store.db?mode=ro", uri=True)
    r = db.execute("select uuid from volumes where name = ?", (sys.argv[2],)).fetchone()
    db.close()
    if r:
        print(r[0])
        sys.exit(0)
    time.sleep(0.1)
print("none")
EOF
}
declare -A NDIR=([dr-n1]="$(sdir dr)" [dr-n2]="$SITE_ROOT/dr2")
HOOK=$SITE_ROOT/record-first

# race VOL FIRST OTHER [EXTRA dr-n1 ARGS]: the case on VOL, the resumed
# create placing FIRST then OTHER
race() {
	local v=$1 first=$2 other=$3 u1 u2 um line i nodes out
	shift 3
	site_vol_create primary "$v" 4M
	site_qemu_io primary "$v" "write -P 0x3c 0 1M" "write -P 0x3d $((4 * M - 4096)) 4k" \
		>/dev/null || fail "write $v"
	# a. the first create crashed mid-way
	freeze_pids "$D2PID" || fail "pid $D2PID not stopped"
	log "dr-n2 frozen (SIGSTOP)"
	out=$(stsr primary replication enable "$v" --to dr --target-layout replicas:2 2>&1) ||
		{ kill -CONT "$D2PID"; fail "replication enable $v: $out"; }
	file_wait "$DLOG" "site: creating target volume $v (replicas:2, 4.0 MiB, on dr-n1 dr-n2)" 300 ||
		{ kill -CONT "$D2PID"
		  fail "the DR did not create $v on dr-n1 then dr-n2: $(grep "creating target volume $v" "$DLOG")"; }
	sleep 0.3 # the call to dr-n2 is sent (its kernel takes it while frozen)
	site_kill dr
	kill -CONT "$D2PID"
	log "dr-n2 resumed (SIGCONT)"
	u1=$(store_uuid "${NDIR[$first]}" "$v")
	u2=$(store_uuid "${NDIR[$other]}" "$v")
	log "copies of $v left by the crash: $first $u1, $other $u2"
	[ "$u1" != none ] && [ "$u2" != none ] ||
		fail "the crash did not leave copies of $v on both nodes ($first $u1, $other $u2)"
	# b. the resumed create loses the race to a record listing OTHER alone
	touch "$HOOK"
	[ $# -eq 0 ] || SITE_ARGS[dr]+=" $*"
	TSR_TEST_TC_RECORD_FIRST_FILE=$HOOK site_start_nowait dr
	dr_alive 2
	file_wait "$DLOG" "site: creating target volume $v (replicas:2, 4.0 MiB, on $first $other) .*(again" 300 ||
		fail "the resumed create of $v did not place $first then $other: $(grep "creating target volume $v" "$DLOG")"
	file_wait "$DLOG" "vol/$v written listing $other alone: ok" 300 ||
		fail "the hook did not write vol/$v: $(grep "target volume $v" "$DLOG" | tail -3)"
	file_wait "$DLOG" "volume '$v' was recorded meanwhile" 100 ||
		fail "the create did not see the record: $(grep "target volume $v" "$DLOG" | tail -3)"
	grep -q "the copy on $first (uuid $u1) is left over .*: deleted, made again" "$DLOG" ||
		fail "$first's crash leftover of $v was not replaced in this run"
	# no node holds a copy of V that vol/V does not list ($first: 10 s)
	for (( i=0; i<100; i++ )); do
		um=$(store_uuid "${NDIR[$first]}" "$v" 1)
		[ "$um" = none ] && break
		sleep 0.1
	done
	assert_eq "$um" none "$first's copy of $v (vol/$v does not list $first)"
	line=$(grep -m1 "volume '$v' was recorded meanwhile" "$DLOG")
	log "refusal: $line"
	[[ $line == *"the copy met on $other (uuid $u2, a copy the record lists) is not deleted"* ]] ||
		fail "the refusal does not name $other's copy as the record's: $line"
	[[ $line == *"deleted: its own copy on $first (uuid "* ]] ||
		fail "the refusal does not say it deletes its own copy on $first: $line"
	assert_eq "$(store_uuid "${NDIR[$other]}" "$v" 1)" "$u2" \
		"$other's copy of $v (the record's, met: not deleted)"
	nodes=$(stsr dr --json volume show "$v" | json_get '" ".join(c["node"] for c in j["copies"])')
	assert_eq "$nodes" "$other" "vol/$v's copies"
	[ ! -e "$HOOK" ] || fail "the hook did not run"
	# the source's next open attaches the record that won (target/V kept)
	rwait primary "$v" 'j["state"] == "streaming"' "streaming" 60
	repl_caught_up "$v" 60
	assert_eq "$(site_sha dr "$v")" "$(site_sha primary "$v")" "sha256 of $v at the DR vs the source"
	assert_eq "$(store_uuid "${NDIR[$first]}" "$v" 1)" none \
		"$first holds no copy of $v after the attach"
}

race rv dr-n1 dr-n2
race qv dr-n2 dr-n1 --capacity 1G

site_stop primary
stop_tesserad "$D2PID"
site_stop dr
