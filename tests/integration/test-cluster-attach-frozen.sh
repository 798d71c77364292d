#!/usr/bin/env bash
# `volume attach` does not hold the attaching node's control loop while the
# layout opens its copies (contract s16-attachasync).  The layout open waits
# up to the peer timeout for a copy whose node does not answer (frozen by
# SIGSTOP: the kernel accepts the connection, nobody answers the OPEN); it
# ran in cluster_attach_local on tesserad's main loop, so meanwhile the node
# answered no admin request (volume list, node list, status).  Now the open
# runs in a thread and the attach's reply comes later (engine/cluster/attach.c,
# attach_job).
#   3 nodes, --peer-timeout 8000; v (3 replicas, min-replicas 2) written
#   through n1 and detached; n3 frozen; `volume attach v --node n1` in the
#   background; once n1 logs "attaching v", through n1 under `timeout 3`:
#   `volume list` answers (before: status 124), `node list` (under `timeout
#   5`: it waits up to 2 s itself for frozen n3's figures) too, a second
#   attach and a detach of v are refused "attach of 'v' is running"; the
#   attach then answers 0 (after the list: completion order), 2 of 3 copies
#   in sync, what was written reads back, a new write reads back; n3 resumed
#   resyncs, three in sync, scrub finds nothing.
#   (2) n3 frozen again, an attach on n2, n2 stopped during it: n2 exits 0
#   after waiting for the open, the attach is refused, and is undone: with
#   n2 restarted and n3 resumed the next attach on n2 is a clean one (the
#   record's clean_detach restored), v reads back; copies identical.
# Control: TSR_TEST_ATTACH_INLINE=1 (the old blocking attach) in n1's
# environment makes it fail: "volume list ... status 124".
# Session 17 (s17-attachfix), during the attach of v in (1): `volume status v`
# through n1 says "attaching on node n1" (before: "not ready (writes wait:
# too few copies in sync)", from the record), `--json volume status v`
# through n2 (forwarded to n1) has attaching true; with the nodes' cap of
# concurrent layout opens lowered to 1 (TSR_TEST_ATTACH_THREADS_MAX=1; 16
# otherwise) an attach of w through n1 is refused at once "too many attaches
# in progress" (before: it waited for frozen n3 too, status 124 under
# `timeout 3`); w is attached after v's attach answered.  x, attached on n1
# all along, attached again through n1 then: 0 (review 17b: it was refused
# "too many attaches" too, a CSI publish retry of an attached volume).
# Session 18 (s18-statfix, review F9), during the attach of v in (1): through
# n2, `--json volume show v` has attaching true, `--json volume list` too and
# the text list says "n1 (attaching)" (before: false and "n1", only n1 knew;
# now from the record, VolumeRecord.attaching_epoch); after the attach all
# say it no more.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd nbdcopy
require_cmd qemu-io

SIZE=$(( 16 << 20 ))
export TSR_TEST_ATTACH_THREADS_MAX=1 # one layout open at a time per node
cl_start 3 --peer-timeout 8000
ctsr volume create v --size 16M --replicas 3 --min-replicas 2 >/dev/null || fail "volume create v"
ctsr volume create w --size 4M --replicas 3 --min-replicas 2 >/dev/null || fail "volume create w"
ctsr volume attach v --node n1 >/dev/null || fail "first attach of v"
# x: attached on n1 all along; attaching it again answers 0 even at the cap
ctsr volume create x --size 4M --replicas 1 >/dev/null || fail "volume create x"
ctsr volume attach x --node n1 >/dev/null || fail "attach x"
EXP=$CL_ROOT/expected.img
cl_pattern "$EXP" "$SIZE" 7
nbdcopy "$EXP" "$(cl_nbd_uri 1 v)" || fail "write the pattern"
ctsr volume detach v >/dev/null || fail "detach v"

FPID=${CL_PID[3]}
on_exit "kill -CONT $FPID 2>/dev/null"
freeze_pids "$FPID" || fail "n3 did not stop"
log "n3 frozen (pid $FPID); attach v through n1"
ORDER=$CL_ROOT/order
: >"$ORDER"
t0=$SECONDS
from=$(( $(log_lines 1) + 1 ))
( out=$(timeout 60 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
	volume attach v --node n1 2>&1) && rc=0 || rc=$?
  echo "$rc" >"$CL_ROOT/attach.rc"; echo "$out" >"$CL_ROOT/attach.out"; echo attach >>"$ORDER" ) &
AP=$!
track_pid "$AP"
wait_log_from 1 "$from" "cluster: attaching v epoch"

timed() { # NAME SECONDS ARGS...: the CLI through n1 under `timeout SECONDS`; sets RC, OUT
	local name=$1 t=$2
	shift 2
	OUT=$(timeout "$t" "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" \
		"$@" 2>&1) && RC=0 || RC=$?
	echo "$name" >>"$ORDER"
	log "$*: status $RC: $(printf '%s' "$OUT" | head -n1)"
}
timed list 3 volume list
lrc=$RC lout=$OUT
timed status 3 volume status v
src=$RC sout=$OUT
OUT=$(timeout 3 "$TESSERA" --cluster "$(cl_addr 2)" --token-file "$(cl_dir 1)/admin.token" \
	--json volume status v 2>&1) && RC=0 || RC=$?
echo status2 >>"$ORDER"
jrc=$RC jout=$OUT
# review F9: another node says it too, in volume show and volume list
showj=$(timeout 3 "$TESSERA" --cluster "$(cl_addr 2)" --token-file "$(cl_dir 1)/admin.token" \
	--json volume show v 2>&1) || true
listj=$(timeout 3 "$TESSERA" --cluster "$(cl_addr 2)" --token-file "$(cl_dir 1)/admin.token" \
	--json volume list 2>&1) || true
listt=$(timeout 3 "$TESSERA" --cluster "$(cl_addr 2)" --token-file "$(cl_dir 1)/admin.token" \
	volume list 2>&1) || true
timed attachw 3 volume attach w --node n1
wrc=$RC wout=$OUT
timed attachx 3 volume attach x --node n1
xrc=$RC xout=$OUT
timed attachnone 3 volume attach nosuch --node n1
zrc=$RC zout=$OUT
timed nodes 5 node list
nrc=$RC nout=$OUT
timed attach2 3 volume attach v --node n1
arc=$RC aout=$OUT
timed detach 3 volume detach v
drc=$RC dout=$OUT
reap "$AP" || true
log "attach through n1 with n3 frozen: status $(cat "$CL_ROOT/attach.rc") after $(( SECONDS - t0 )) s: $(cat "$CL_ROOT/attach.out")"
log "completions in order: $(tr '\n' ' ' <"$ORDER")"
[ "$lrc" = 0 ] || fail "n1's volume list while its attach waited for frozen n3: status $lrc \
(124: no answer in 3 s): $lout"
[ "$nrc" = 0 ] || fail "n1's node list while its attach waited for frozen n3: status $nrc: $nout"
printf '%s' "$lout" | grepq -w v || fail "n1's volume list lacks v: $lout"
[ "$(head -n1 "$ORDER")" = list ] || fail "the attach answered before the volume list \
(order: $(tr '\n' ' ' <"$ORDER")): it did not wait for n3"
[ "$src" = 0 ] && printf '%s' "$sout" | grepq "state: *attaching on node n1 " ||
	fail "volume status v through n1 during its attach: status $src: $sout"
log "volume status v during its attach: $(printf '%s' "$sout" | grep -E '^(attached|state):' | tr -s ' ')"
[ "$jrc" = 0 ] || fail "--json volume status v through n2 during its attach: status $jrc: $jout"
assert_eq "$(printf '%s' "$jout" | json_get '[j["attaching"], j["volume"]["attaching"], j["volume"]["attached_node"]]')" \
	'[true, true, "n1"]' "--json volume status v through n2 during its attach (attaching, volume.attaching, attached_node)"
assert_eq "$(printf '%s' "$showj" | json_get 'j["attaching"]')" true \
	"volume show v through n2 during its attach on n1: attaching"
assert_eq "$(printf '%s' "$listj" | json_get '[v["attaching"] for v in j["volumes"] if v["name"] == "v"]')" \
	'[true]' "volume list through n2 during v's attach on n1: v's attaching"
printf '%s' "$listt" | grep -E '^v ' | grepq -F 'n1 (attaching)' ||
	fail "volume list through n2 during v's attach does not say 'n1 (attaching)': $listt"
[ "$wrc" != 0 ] && printf '%s' "$wout" | grepq "too many attaches in progress on n1" ||
	fail "attach w through n1 during v's attach with the cap at 1: status $wrc: $wout"
# review 17b: before, "too many attaches" for a volume attached here already
[ "$xrc" = 0 ] ||
	fail "attach x (attached on n1 already) during v's attach with the cap at 1: status $xrc: $xout"
# review 17b F3: before, "too many attaches" for a volume that does not exist
# (CSI: UNAVAILABLE, retried for ever, instead of NOT_FOUND)
[ "$zrc" != 0 ] && printf '%s' "$zout" | grepq "volume 'nosuch' not found" ||
	fail "attach of a missing volume during v's attach with the cap at 1: status $zrc: $zout"
[ "$arc" != 0 ] && printf '%s' "$aout" | grepq "attach of 'v' is running" ||
	fail "a second attach during the first: status $arc: $aout"
[ "$drc" != 0 ] && printf '%s' "$dout" | grepq "attach of 'v' is running" ||
	fail "a detach during the attach: status $drc: $dout"
[ "$(cat "$CL_ROOT/attach.rc")" = 0 ] || fail "attach v with n3 frozen: $(cat "$CL_ROOT/attach.out")"
assert_eq "$(vstatus v 'j["in_sync"]')" 2 "copies in sync after the attach with n3 frozen"
assert_eq "$(vstatus v 'j["attaching"]')" false "attaching after the attach answered"
assert_eq "$(ctsr_via 2 --json volume show v | json_get 'j["attaching"]')" false \
	"volume show v through n2 after the attach"
assert_eq "$(ctsr_via 2 --json volume list | json_get '[v["attaching"] for v in j["volumes"] if v["name"] == "v"]')" \
	'[false]' "volume list through n2 after v's attach"
cl_assert_image 1 v "$EXP" "after the attach with n3 frozen"
cl_qemu_io 1 v "write -P 0x3c 2M 128k" >/dev/null || fail "write with n3 frozen"
cl_patch "$EXP" $(( 2 << 20 )) 131072 0x3c
cl_assert_image 1 v "$EXP" "after a write with n3 frozen"

kill -CONT "$FPID"
cl_wait_nodes_alive 3 30
cl_wait_synced v 60
assert_eq "$(vstatus v 'j["in_sync"]')" 3 "copies in sync after n3 resumed"
cl_assert_image 1 v "$EXP" "after n3's resync"
cl_scrub_clean v "after n3's resync"
ctsr volume detach v >/dev/null || fail "detach v"
# the refused attach of w left nothing behind: it attaches now
ctsr volume attach w --node n1 >/dev/null || fail "attach w after the refusal"
ctsr volume detach w >/dev/null || fail "detach w"
ctsr volume detach x >/dev/null || fail "detach x"

# 2. n2 stopped while its attach waits for frozen n3: the stop waits for the
# open, undoes the attach (the record says clean again, as before it) and
# exits 0; n2 restarted and n3 resumed, the attach on n2 is a clean one.
freeze_pids "$FPID" || fail "n3 did not stop (2)"
log "(2) n3 frozen; attach v on n2 through n2, then n2 stopped"
from=$(( $(log_lines 2) + 1 ))
( out=$(timeout 60 "$TESSERA" --cluster "$(cl_addr 2)" --token-file "$(cl_dir 1)/admin.token" \
	volume attach v --node n2 2>&1) && rc=0 || rc=$?
  echo "$rc" >"$CL_ROOT/attach2.rc"; echo "$out" >"$CL_ROOT/attach2.out" ) &
AP=$!
track_pid "$AP"
wait_log_from 2 "$from" "cluster: attaching v epoch"
cl_stop 2
reap "$AP" || true
log "(2) the attach through the stopped n2: status $(cat "$CL_ROOT/attach2.rc"): $(cat "$CL_ROOT/attach2.out")"
[ "$(cat "$CL_ROOT/attach2.rc")" != 0 ] || fail "(2) the attach answered 0 though n2 stopped during it"
grep -q "stopping: waiting for the attach of v" "$(cl_dir 2)/tesserad.log" ||
	fail "(2) n2's stop did not wait for its attach"
kill -CONT "$FPID"
cl_start_node 2
cl_wait_nodes_alive 3 30
lines=$(wc -l <"$(cl_dir 2)/tesserad.log")
cl_attach_retry v n2
tail -n +"$(( lines + 1 ))" "$(cl_dir 2)/tesserad.log" | grepq "attaching v epoch .*, clean)" ||
	fail "(2) the attach after the undone one is not clean: $(tail -n +"$(( lines + 1 ))" \
"$(cl_dir 2)/tesserad.log" | grep "attaching v")"
cl_wait_synced v 60
cl_assert_image 2 v "$EXP" "(2) after the undone attach"
ctsr volume detach v >/dev/null || fail "detach v (2)"
cl_stop_all
cl_assert_copies_identical v 1 2 3
