#!/usr/bin/env bash
# The DR's attach of an existing target (a source's VOLUME_OPEN after the DR
# node restarted) must not block the DR node's control loop while a copy's
# node does not answer (contract s16-attachasync).  site_open_volume called
# cluster_attach_local on the DR's loop: its layout opens every copy, up to
# the peer timeout for a frozen node.  Now the open runs in a thread and the
# VOLUME_OPEN is answered "being attached: retry" meanwhile
# (cluster_attach_target, engine/cluster/attach.c).
#   DR: dr-n1 (meta, site listener, --peer-timeout 8000) and dr-n2; sv
#   (8 MiB) streams to a replicas:2 target, caught up.  dr-n1 stopped (the
#   target detached cleanly), dr-n2 frozen, dr-n1 started again: the
#   source's VOLUME_OPEN makes dr-n1 attach sv, which waits for dr-n2.  Once
#   dr-n1 logs "attaching sv", its `volume list` must answer under
#   `timeout 3` before dr-n2 is resumed (events in order; before: "list
#   124").  dr-n2 resumed: sv streams again, a write made at the primary
#   meanwhile is caught up, sha256 at the DR equals the source's, the DR's
#   copy is still write-fenced (a host write through the DR's NBD export
#   fails), and the DR answered the source "being attached: retry".
# On 7a32c7c: "events: got 'list 124,sigcont,'".
# (2) review 16c F1: the same restart with dr-n2 frozen; `replication
# promote --group app` (gv, a member) and `replication promote sv` while the
# attaches run must be refused "being attached here: retry the promote" (on
# 436f022 they answered 0 and the attach then fenced the promoted volume
# -EROFS); once applied, both promotes succeed and host writes at the DR
# read back.
# (3) review 16c N3 (runs before (2)): a failed target attach (dr-n2 frozen,
# the open gives up after the peer timeout) while the link is cut is
# forgotten after ATTACH_FAIL_KEEP_MS: the source's VOLUME_OPEN 6 s later
# attaches anew (on 436f022 it was told the stale failure: "site: target
# volume sv: cannot attach" in dr-n1's log).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"

require_tessera
require_cmd qemu-io
sites_start_dr2 --peer-timeout 8000
DLOG=$(sdir dr)/tesserad.log
M=$((1 << 20))

site_vol_create primary sv 8M
site_qemu_io primary sv "write -P 0x5a 0 1M" >/dev/null || fail "write sv"
out=$(stsr primary replication enable sv --to dr --target-layout replicas:2 2>&1) ||
	fail "replication enable sv: $out"
rwait primary sv 'j["state"] == "streaming"' "streaming" 60
repl_caught_up sv 60
copies=$(stsr dr --json volume show sv | json_get '" ".join(sorted(c["node"] for c in j["copies"]))')
assert_eq "$copies" "dr-n1 dr-n2" "sv's copies at the DR"
# gv: a consistency group's member (group app), for (2)'s promote --group
site_vol_create primary gv 4M
site_qemu_io primary gv "write -P 0x3c 0 1M" >/dev/null || fail "write gv"
out=$(stsr primary replication enable gv --to dr --target-layout replicas:2 --group app 2>&1) ||
	fail "replication enable gv: $out"
rwait primary gv 'j["state"] == "streaming" and j["group"] == "app"' "streaming" 60
repl_caught_up gv 60

site_stop dr
log "dr-n1 stopped (sv's target detached)"
freeze_pids "$D2PID" || fail "dr-n2 not stopped"
on_exit "kill -CONT $D2PID 2>/dev/null"
log "dr-n2 frozen (SIGSTOP)"
from=$(( $(wc -l <"$DLOG") + 1 ))
# not site_start: it waits for one alive node, asked through dr-n1's loop
site_start_nowait dr
# written while the DR is away: shipped once the target is attached again
site_qemu_io primary sv "write -P 0x6b $((4 * M)) 1M" >/dev/null || fail "write sv (2)"
file_wait_from "$DLOG" "$from" "cluster: attaching sv epoch" "dr-n1 did not start attaching sv in 30 s"
EV=$SITE_ROOT/events
: >"$EV"
log "dr-n1 attaches sv (waiting for dr-n2): its volume list"
( timeout 3 "$TESSERA" --data "$(sdir dr)" --json volume list >"$SITE_ROOT/list.out" 2>&1
  echo "list $?" >>"$EV" ) &
lpid=$!
track_pid "$lpid"
reap "$lpid" || true
log "the DR's volume list: $(cat "$EV")"
echo "sigcont" >>"$EV"
kill -CONT "$D2PID"
log "dr-n2 resumed (SIGCONT)"
events=$(tr '\n' ',' <"$EV")
log "events: $events"
assert_eq "$events" "list 0,sigcont," "the DR's volume list answered while its attach waited"
grep -q '"volumes"' "$SITE_ROOT/list.out" || fail "the DR's list: $(cat "$SITE_ROOT/list.out")"
rwait primary sv 'j["state"] == "streaming"' "streaming again" 90
repl_caught_up sv 60
assert_eq "$(site_sha dr sv)" "$(site_sha primary sv)" "sha256 of sv at the DR vs the source"
site_qemu_io dr sv "read -P 0x5a 0 1M" "read -P 0x6b $((4 * M)) 1M" >/dev/null ||
	fail "sv's data at the DR"
if site_qemu_io dr sv "write -P 0x11 0 4k" >/dev/null 2>&1; then
	fail "a host write to the DR's target sv succeeded (not write-fenced)"
fi
log "the DR's target refuses host writes"
tail -n +"$from" "$DLOG" | grepq "target sv is being attached" ||
	fail "the DR did not answer the source 'being attached: retry'"

# (3) review 16c N3: a DR target's failed attach was kept for the next
# VOLUME_OPEN without an age limit.  dr-n1 restarted with dr-n2 frozen, the
# link cut once the attach runs (no VOLUME_OPEN until it is back): the open
# gives up after the peer timeout (8 s; 1 of 2 copies, min 2), kept.  dr-n2
# resumed, 6 s later (past ATTACH_FAIL_KEEP_MS) the link back: the source's
# VOLUME_OPEN must attach anew, not be told that stale failure.
site_stop dr
freeze_pids "$D2PID" || fail "dr-n2 not stopped (3)"
from=$(( $(wc -l <"$DLOG") + 1 ))
site_start_nowait dr
file_wait_from "$DLOG" "$from" "cluster: attaching sv epoch" "(3) dr-n1 did not start attaching sv in 30 s"
px cut
file_wait_from "$DLOG" "$from" "cluster: cannot attach 'sv'" "(3) dr-n1's attach of sv (dr-n2 frozen) did not fail in 30 s"
log "(3) the attach failed: $(tail -n +"$from" "$DLOG" | grep -m1 "cluster: cannot attach 'sv'" |
	cut -c1-160)"
kill -CONT "$D2PID"
dr_alive 2
from3=$(( $(wc -l <"$DLOG") + 1 ))
sleep 6
px pass
rwait primary sv 'j["state"] == "streaming"' "(3) streaming again" 90
repl_caught_up sv 60
if tail -n +"$from3" "$DLOG" | grep -m1 "site: target volume sv: cannot attach"; then
	fail "(3) the source was told the DR's failed attach of 6 s before (kept without a limit)"
fi
tail -n +"$from" "$DLOG" | grepq "failed attach of DR target sv .* is forgotten" ||
	fail "(3) dr-n1 did not log that it forgot the failed attach"
log "(3) the stale failure was forgotten, the next VOLUME_OPEN attached sv"

# (2) review 16c F1: a promote while the DR's target attach runs.  It found
# no volume to unfence and answered "writable here", then the attach's
# apply fenced it -EROFS for good.  Now refused -EBUSY "being attached
# here: retry"; the promote after the attach is applied takes host writes.
site_stop dr
freeze_pids "$D2PID" || fail "dr-n2 not stopped (2)"
log "(2) dr-n1 stopped, dr-n2 frozen, dr-n1 started again"
from=$(( $(wc -l <"$DLOG") + 1 ))
site_start_nowait dr
file_wait_from "$DLOG" "$from" "cluster: attaching sv epoch" "(2) dr-n1 did not start attaching sv in 30 s"
file_wait_from "$DLOG" "$from" "cluster: attaching gv epoch" "(2) dr-n1 did not start attaching gv in 30 s"
grc=0
gout=$(timeout 20 "$TESSERA" --data "$(sdir dr)" replication promote --group app 2>&1) || grc=$?
log "(2) promote --group app while dr-n1 attaches gv: status $grc: $gout"
[ "$grc" != 0 ] || { kill -CONT "$D2PID"; fail "(2) promote --group app during gv's attach \
answered 0 ('$gout'): the attach's apply fences it -EROFS after"; }
case "$gout" in
*"gv (group app) is being attached here"*"retry the promote"*) ;;
*) kill -CONT "$D2PID"
   fail "(2) promote --group during the attach: '$gout', want 'gv (group app) is being \
attached here'" ;;
esac
prc=0
pout=$(timeout 20 "$TESSERA" --data "$(sdir dr)" replication promote sv 2>&1) || prc=$?
log "(2) promote while dr-n1 attaches sv: status $prc: $pout"
tail -n +"$from" "$DLOG" | grepq "cluster: attach sv epoch" &&
	fail "(2) the attach was applied before the promote (dr-n2 is frozen): no race tested"
kill -CONT "$D2PID"
log "(2) dr-n2 resumed"
[ "$prc" != 0 ] || fail "(2) the promote during the attach answered 0 ('$pout'): the attach's \
apply fences it -EROFS after"
case "$pout" in
*"is being attached here"*"retry the promote"*) ;;
*) fail "(2) the promote during the attach: '$pout', want 'being attached here: retry'" ;;
esac
file_wait_from "$DLOG" "$from" "cluster: attach sv epoch" "(2) dr-n1's attach of sv was not applied in 30 s"
pout=$(timeout 20 "$TESSERA" --data "$(sdir dr)" replication promote sv 2>&1) ||
	fail "(2) promote sv after the attach: $pout"
log "(2) promote after the attach: $pout"
out=$(site_qemu_io dr sv "write -P 0x11 0 4k" "read -P 0x11 0 4k" 2>&1) ||
	fail "(2) the promoted sv refuses host writes at the DR: $(printf '%s' "$out" | head -3)"
site_qemu_io dr sv "read -P 0x6b $((4 * M)) 1M" >/dev/null || fail "(2) sv's data at the DR"
log "(2) the promoted sv takes host writes"
for (( i=0; i<300; i++ )); do
	tail -n +"$from" "$DLOG" | grepq "cluster: attach gv epoch" && break
	sleep 0.1
done
rwait dr gv 'j["consistent"] and j["group"] == "app"' "(2) gv consistent at the DR" 60
gout=$(timeout 20 "$TESSERA" --data "$(sdir dr)" replication promote --group app 2>&1) ||
	fail "(2) promote --group app after the attach: $gout"
log "(2) promote --group app after the attach: $(printf '%s' "$gout" | head -1)"
out=$(site_qemu_io dr gv "write -P 0x22 0 4k" "read -P 0x22 0 4k" "read -P 0x3c 4k 4k" 2>&1) ||
	fail "(2) the promoted gv refuses host writes at the DR: $(printf '%s' "$out" | head -3)"
log "(2) the promoted gv (group app) takes host writes"
site_stop primary
stop_tesserad "$D2PID"
site_stop dr
