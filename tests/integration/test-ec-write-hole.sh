#!/usr/bin/env bash
# No write hole (DESIGN.md invariant 4): a partial-stripe write of an
# erasure-coded volume, cut by the coordinator's death after each step of the
# stripe transaction, leaves the stripe decodable to its old or its new
# content and never damages what the write did not touch.
#
# 7 nodes (zones z1..z7); a 16 MiB 4+2 volume (64 KiB unit, 256 KiB stripes)
# on n1..n6; n7 holds no chunk and is the coordinator under test, so every
# chunk copy is reachable when the volume is recovered elsewhere.  For each
# crash point of the fault switch (include/tessera/ec.h,
# TESSERA_EC_CRASH_POINT) "staged:0" .. "staged:6", "committed:1",
# "committed:3" (with --long; otherwise one point of each case, drawn at
# random: staged:0, staged:1..5, staged:6, committed:1 or 3):
#  1. n7 restarts with the switch in its environment and attaches the volume;
#  2. one partial-stripe write through its NBD export: 192 KiB from 32 KiB
#     into a stripe, so all 4 data chunks and both parity chunks take part
#     (6 participants); n7 kills itself at the crash point;
#  3. the volume is attached on n1 (a new epoch), which recovers the stripe
#     transaction: rolled forward when every reachable participant had
#     staged or one had committed, else rolled back (staged:0 leaves nothing
#     to roll;
#     staged:N for 0 < N < 6 may find more than N staged, as the other
#     stages were on the wire: the recovery's logged finding is checked
#     against the rule, and the content and counters against the decision);
#  4. read whole through n1: every byte outside the write as before; the
#     written range wholly old (rolled back) or wholly new (rolled forward);
#     status txn_rolled_forward / txn_rolled_back as the crash point implies;
#     `volume scrub --no-repair` finds 0 mismatches (every stripe's parity
#     matches its data, so any k chunks decode to the same content).
#  5. once more at staged:2 with two chunk nodes frozen (SIGSTOP, then
#     SIGKILL): the recovery on n1 (4 chunks) decides by the rule over the
#     reachable participants (old or new, never torn); the two nodes return,
#     resync, scrub finds nothing, the content stays.
#  5b. acked:0: every participant staged, the host write acknowledged (the
#     qemu-io write succeeds), no COMMIT sent, the coordinator dies; a
#     parity node (a participant) is killed too before the recovery: the
#     acknowledged write must read back new (rolled forward although one
#     participant cannot be asked); the node returns and resyncs.
#  6. a chunk node (n4) frozen during a partial-stripe write while the
#     coordinator lives: recorded out of sync after the peer timeout, the
#     write is acknowledged on the others; n4 killed, restarted, resynced;
#     with two other chunk nodes dead its chunks decode to the content.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy qemu-io

STRIPE=$(( 4 * 65536 ))
SIZE=$(( 16 << 20 ))
# EC_POINTS: a subset, for a quick run by hand.  With --long (TSR_LONG=1)
# every point.  Outside it, one point of each case, the varying ones drawn
# at random (TSR_SEED reproduces the draw): staged:0 (nothing staged),
# staged:N for one N in 1..5 (some but not all participants staged),
# staged:6 (all staged, no commit), committed:N for N 1 or 3 (a commit out):
# the staged:N and committed:N of one case differ only in how many stages or
# commits were out, and the suite must stay within its time budget.
ALL_POINTS="staged:0 staged:1 staged:2 staged:3 staged:4 staged:5 staged:6 committed:1 committed:3"
seed=${TSR_SEED:-$(( $(date +%s) % 100000 ))}
RANDOM=$seed
if [ "${1:-}" != --long ] && [ "${TSR_LONG:-0}" != 1 ]; then
	ALL_POINTS="staged:0 staged:$(( RANDOM % 5 + 1 )) staged:6 committed:$(( RANDOM % 2 * 2 + 1 ))"
fi
read -r -a POINTS <<<"${EC_POINTS:-$ALL_POINTS}"
log "crash points: ${POINTS[*]} (random seed $seed: TSR_SEED=$seed draws them again)"
PARTICIPANTS=6

# The nodes run with cluster.sh's --peer-timeout 2000.  Until 9f91ed4 this
# test used 5000 (tesserad's default): on a loaded machine a chunk node could
# take over 2 s to answer the OPEN of a fresh attach, was recorded out of sync
# by the attach that then failed, and with 3 of 6 in sync, below the 4
# needed, no later attach could succeed.  A failed attach now records
# nothing, and cl_attach_retry tries again.
cl_start 6
ctsr volume create wh --size 16M --ec 4+2 --failure-domain zone >/dev/null || fail "create"
nodes=$(ctsr --json volume show wh | json_get '" ".join(c["node"] for c in j["copies"])')
# n7 joins after the create: it holds no chunk
CL_PORT[7]=$(free_port)
CL_N=7
log "wh: chunks on $nodes; coordinator under test: n7"

ctsr volume attach wh --node n1 >/dev/null || fail "attach on n1"
EXP=$CL_ROOT/expected.img
cl_pattern "$EXP" "$SIZE" 7
nbdcopy "$EXP" "$(cl_nbd_uri 1 wh)" || fail "write the pattern"
ctsr volume detach wh >/dev/null || fail "detach"

# wait_switch_kill PID LABEL: n7 (PID) must die by the fault switch within 30 s.
wait_switch_kill() {
	local t
	for (( t=0; t<300; t++ )); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$1" 2>/dev/null && fail "$2: the fault switch did not kill n7 within 30 s"
	reap "$1" || true
	CL_PID[7]=
}

# check_image GOT EXPECTED OFF LEN BYTE: GOT equals EXPECTED outside
# [OFF, OFF+LEN); inside, wholly EXPECTED's (prints "old") or wholly BYTE
# (prints "new").  EXPECTED is updated to GOT.
check_image() {
	"$PY" - "$@" <<'PYEOF'
import sys
got_f, exp_f, off, ln, byte = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5], 0)
got = open(got_f, "rb").read()
exp = open(exp_f, "rb").read()
if len(got) != len(exp):
    sys.exit(f"read {len(got)} bytes, want {len(exp)}")
for a, b in ((0, off), (off + ln, len(exp))):
    if got[a:b] != exp[a:b]:
        bad = next(i for i in range(a, b) if got[i] != exp[i])
        sys.exit(f"byte {bad} outside the write changed ({exp[bad]:#x} -> {got[bad]:#x})")
w = got[off:off + ln]
if w == exp[off:off + ln]:
    print("old")
elif w == bytes([byte]) * ln:
    print("new")
else:
    olds = sum(1 for i in range(ln) if w[i] == exp[off + i])
    sys.exit(f"the written range is torn: {olds} of {ln} bytes old, the rest neither old nor new")
open(exp_f, "wb").write(got)
PYEOF
}

# resynced_unchanged WHAT WHO: once WHO (the nodes just restarted) resynced,
# the copies agree and wh still reads back through n1 as $EXP (the resync
# changed no content); then wh is detached from n1.
resynced_unchanged() {
	cl_wait_synced wh 120
	cl_scrub_clean wh "$1"
	nbdcopy "$(cl_nbd_uri 1 wh)" "$CL_ROOT/got.img" || fail "$1: read back after resync"
	cmp -s "$CL_ROOT/got.img" "$EXP" || fail "$1: content changed by the resync of $2"
	ctsr volume detach wh >/dev/null || fail "$1: detach from n1"
}

# next_range: the next case's write (i counts the cases): STRIPE - 64 KiB
# bytes at 32 KiB into stripe 5i + 1 (a different stripe each time, not
# whole), of the byte 0x10 + i.
next_range() {
	i=$(( i + 1 ))
	off=$(( (i * 5 + 1) * STRIPE + 32768 ))
	len=$(( STRIPE - 65536 ))
	byte=$(( 0x10 + i ))
}

# switched_coordinator CP: n7 (re)started with the fault switch at crash
# point CP, wh attached on it; pid is n7's.
switched_coordinator() {
	TSRD_WRAP=(env "TESSERA_EC_CRASH_POINT=$1")
	cl_start_node 7
	cl_wait_nodes_alive 7
	cl_attach_retry wh n7
	pid=${CL_PID[7]}
}

i=0
for cp in "${POINTS[@]}"; do
	next_range
	n=${cp#*:}
	# What the crash point implies.  staged:N with 0 < N < 6: N stages were
	# acknowledged, the others were on the wire when the coordinator died and
	# may have landed too; the recovery's own line says which it found, and
	# the outcome must follow the rule for that (checked below).
	case $cp in
	staged:0) want=old ;;
	staged:*) if [ "$n" -ge "$PARTICIPANTS" ]; then want=new; else want=either; fi ;;
	committed:*) want=new ;;
	esac
	log "---- crash point $cp: write $len bytes at $off, expect the $want content"

	switched=$(grep -c "ec fault switch" "$(cl_dir 7)/tesserad.log" 2>/dev/null)
	switched_coordinator "$cp"
	cl_qemu_io 7 wh "write -P $byte $off $len" >"$CL_ROOT/qemu-$i.txt" 2>&1 &
	qpid=$!
	track_pid "$qpid"
	wait_switch_kill "$pid" "$cp"
	[ "$(grep -c "ec fault switch" "$(cl_dir 7)/tesserad.log")" -gt "${switched:-0}" ] ||
		fail "$cp: n7 died without the fault switch's log line"
	# acknowledged once every participant staged: from committed:1 on, the
	# reply may have gone out before the crash
	if reap "$qpid"; then
		case $cp in
		committed:*) log "$cp: the write was acknowledged before the crash" ;;
		*) fail "$cp: the write was acknowledged although not every participant staged" ;;
		esac
	fi

	cl_attach_retry wh n1
	nbdcopy "$(cl_nbd_uri 1 wh)" "$CL_ROOT/got.img" || fail "$cp: read back through n1"
	got=$(check_image "$CL_ROOT/got.img" "$EXP" "$off" "$len" "$byte" 2>&1) || fail "$cp: $got"
	log "$cp: outside the write unchanged, the written range wholly $got"
	[ "$want" = either ] || assert_eq "$got" "$want" "$cp: content of the written range"
	st=$(ctsr --json volume status wh) || fail "$cp: status"
	fwd=$(printf '%s' "$st" | json_get 'j["txn_rolled_forward"]')
	back=$(printf '%s' "$st" | json_get 'j["txn_rolled_back"]')
	log "$cp: recovery rolled $fwd forward, $back back"
	if [ "$cp" = staged:0 ]; then
		assert_eq "$fwd/$back" "0/0" "$cp: txn rolled forward/back (nothing was staged)"
	elif [ "$got" = new ]; then
		assert_eq "$fwd/$back" "1/0" "$cp: txn rolled forward/back (content new)"
	else
		assert_eq "$fwd/$back" "0/1" "$cp: txn rolled forward/back (content old)"
	fi
	# the decision follows the rule for what the recovery found on the copies
	if [ "$cp" != staged:0 ]; then
		line=$(grep -h "ec wh: txn .*participants" "$(cl_dir 1)/tesserad.log" | tail -1)
		[ -n "$line" ] || fail "$cp: n1 logged no recovery decision"
		"$PY" - "$line" "$cp" <<'PYEOF' || fail "$cp: recovery decision breaks the rule: $line"
import re, sys
line, cp = sys.argv[1], sys.argv[2]
m = re.search(r"participants (0x[0-9a-f]+|0), reachable (0x[0-9a-f]+|0), staged on (0x[0-9a-f]+|0)(, committed)?\): roll (forward|back)", line)
if not m:
    sys.exit(f"cannot parse: {line}")
parts, reach, staged, committed, way = int(m[1], 16), int(m[2], 16), int(m[3], 16), bool(m[4]), m[5]
want = "forward" if committed or parts & reach & ~staged == 0 else "back"
if way != want:
    sys.exit(f"rolled {way}, the rule says {want}")
if cp.startswith("committed") and way != "forward":
    sys.exit("a committed txn rolled back")
n = int(cp.split(":")[1])
if cp.startswith("staged") and bin(staged).count("1") < n:
    sys.exit(f"{n} stages were acknowledged but only {bin(staged).count('1')} found")
PYEOF
		log "$cp: recovery found: ${line#*participants }"
	fi
	cl_scrub_clean wh "$cp"
	ctsr volume detach wh >/dev/null || fail "$cp: detach from n1"
done

# ---- two chunk nodes frozen, so at most 4 of the 6 participants can
# stage; the coordinator dies at staged:2; the frozen nodes are killed
# (what they had not read is lost).  4 copies (k) are enough to recover on
# n1: the transaction rolls forward if all 4 reachable participants staged
# it (2 were acknowledged, 2 more were on the wire), else back; either way
# the range is wholly old or new, as the logged rule says; the killed nodes
# return and resync; every stripe checks out.
next_range
log "---- staged:2 with n5 and n6 frozen: write $len bytes at $off, expect the old content"
switched_coordinator staged:2
freeze_pids "${CL_PID[5]}" "${CL_PID[6]}" || fail "pid ${CL_PID[5]} ${CL_PID[6]} not stopped"
on_exit "kill -CONT ${CL_PID[5]} ${CL_PID[6]}"
cl_qemu_io 7 wh "write -P $byte $off $len" >"$CL_ROOT/qemu-frozen.txt" 2>&1 &
qpid=$!
track_pid "$qpid"
wait_switch_kill "$pid" "frozen"
reap "$qpid" && fail "frozen: the write was acknowledged although the coordinator died"
cl_kill 5
cl_kill 6
cl_attach_retry wh n1
nbdcopy "$(cl_nbd_uri 1 wh)" "$CL_ROOT/got.img" || fail "frozen: read back through n1 with n5, n6 dead"
got=$(check_image "$CL_ROOT/got.img" "$EXP" "$off" "$len" "$byte" 2>&1) || fail "frozen: $got"
st=$(ctsr --json volume status wh) || fail "frozen: status"
line=$(grep -h "ec wh: txn .*participants" "$(cl_dir 1)/tesserad.log" | tail -1)
want_fb=$("$PY" - "$line" <<'PYEOF'
import re, sys
m = re.search(r"participants (0x[0-9a-f]+|0), reachable (0x[0-9a-f]+|0), staged on (0x[0-9a-f]+|0)(, committed)?\): roll (forward|back)", sys.argv[1])
if not m:
    sys.exit(f"cannot parse: {sys.argv[1]}")
parts, reach, staged = int(m[1], 16), int(m[2], 16), int(m[3], 16)
if bin(reach).count("1") != 4:
    sys.exit(f"reachable {reach:#x}: want the 4 copies of n1..n4")
fwd = bool(m[4]) or parts & reach & ~staged == 0
if (m[5] == "forward") != fwd:
    sys.exit(f"rolled {m[5]}, the rule says {'forward' if fwd else 'back'}")
print("1/0 new" if fwd else "0/1 old")
PYEOF
) || fail "frozen: recovery decision: $want_fb"
assert_eq "$got" "${want_fb#* }" "frozen: content of the written range"
assert_eq "$(printf '%s' "$st" | json_get '"%d/%d" % (j["txn_rolled_forward"], j["txn_rolled_back"])')" \
	"${want_fb% *}" "frozen: txn rolled forward/back"
log "frozen: $got: $(printf '%s' "$line" | sed 's/.*participants/participants/')"
cl_start_node 5
cl_start_node 6
resynced_unchanged frozen "n5, n6"
TSRD_WRAP=()

# ---- acked:0: acknowledged after every participant staged, the coordinator
# dies before any COMMIT, and a parity participant is gone at the recovery:
# the acknowledged write must be there (rolled forward over the reachable
# participants).
next_range
log "---- acked:0 with a participant lost before the recovery: write $len bytes at $off"
switched_coordinator acked:0 # retried: n5, n6 came back just before, their copies may still be settling
cl_qemu_io 7 wh "write -P $byte $off $len" >"$CL_ROOT/qemu-acked.txt" 2>&1 ||
	fail "acked: the write was not acknowledged: $(cat "$CL_ROOT/qemu-acked.txt")"
wait_switch_kill "$pid" "acked"
grep -q "acked:0: acknowledged, commits withheld" "$(cl_dir 7)/tesserad.log" ||
	fail "acked: n7 died without the fault switch's log line"
# the stripe's parity chunks: positions k..k+m-1; kill the node of one
pnode=$(ctsr --json volume show wh | "$PY" -c '
import json, sys
j = json.load(sys.stdin); j = j.get("volume", j)
stripe, k, m = '"$(( off / STRIPE ))"', 4, 2
n = k + m
# tsr_ec_copy_of: parity rotates by stripe
print(j["copies"][(stripe + k) % n]["node"])')
[ "$pnode" != n1 ] || pnode=n2
log "acked: killing ${pnode} before the recovery"
cl_kill "${pnode#n}"
cl_attach_retry wh n1
nbdcopy "$(cl_nbd_uri 1 wh)" "$CL_ROOT/got.img" || fail "acked: read back through n1 with $pnode dead"
got=$(check_image "$CL_ROOT/got.img" "$EXP" "$off" "$len" "$byte" 2>&1) || fail "acked: $got"
assert_eq "$got" new "acked: content of the acknowledged write"
line=$(grep -h "ec wh: txn .*participants" "$(cl_dir 1)/tesserad.log" | tail -1)
case $line in *"roll forward"*) ;; *) fail "acked: recovery did not roll forward: $line" ;; esac
log "acked: $(printf '%s' "$line" | sed 's/.*participants/participants/')"
cl_start_node "${pnode#n}"
resynced_unchanged acked "$pnode"
TSRD_WRAP=()

# ---- a chunk node lost in the middle of a transaction, the coordinator
# lives: n4 is frozen before a partial-stripe write, so its stage is never
# answered; after the peer timeout the coordinator records it out of sync
# and commits on the five others (acknowledged: new content); n4 is killed
# (its unread stage is lost) and restarted; its chunks are resynced.
next_range
log "---- chunk node n4 lost during a write: $len bytes at $off, expect the new content"
ctsr volume attach wh --node n1 >/dev/null || fail "chunk loss: attach on n1"
freeze_pids "${CL_PID[4]}" || fail "pid ${CL_PID[4]} not stopped"
on_exit "kill -CONT ${CL_PID[4]}"
cl_qemu_io 1 wh "write -P $byte $off $len" >/dev/null || fail "chunk loss: the write failed with n4 frozen"
cl_kill 4
nbdcopy "$(cl_nbd_uri 1 wh)" "$CL_ROOT/got.img" || fail "chunk loss: read back with n4 dead"
got=$(check_image "$CL_ROOT/got.img" "$EXP" "$off" "$len" "$byte" 2>&1) || fail "chunk loss: $got"
assert_eq "$got" new "chunk loss: content of the written range"
cl_wait_state wh n4 out-of-sync 20
deg=$(vstatus wh 'j["stripes_degraded"]')
[ "$deg" -gt 0 ] || fail "chunk loss: stripes_degraded is $deg with n4 dead"
cl_start_node 4
cl_wait_synced wh 120
cl_scrub_clean wh "chunk loss"
cl_kill 2
cl_kill 3
nbdcopy "$(cl_nbd_uri 1 wh)" "$CL_ROOT/got.img" || fail "chunk loss: read with n2, n3 dead"
cmp -s "$CL_ROOT/got.img" "$EXP" || fail "chunk loss: n4's resynced chunks decode to other content"
log "chunk loss: n4 resynced; decoded without n2, n3: content as written"
cl_start_node 2
cl_start_node 3
cl_wait_synced wh 120
ctsr volume detach wh >/dev/null || fail "chunk loss: detach"
