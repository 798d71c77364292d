#!/usr/bin/env bash
# The DR side of a resize of a replicating volume must not block the DR's
# control loop while its target grows (review 13b, finding 1).  The DR site
# has two nodes and its target of sv has a copy on each (replicas:2), so the
# DR cluster's resize of its target calls dr-n2.
# 1. sv is detached at the primary and resized there to 16M; dr-n2 is
#    frozen (SIGSTOP); sv is attached again: its source's VOLUME_OPEN
#    announces 16 MiB and dr-n1's site server starts the DR's resize of its
#    target, whose step (b) asks dr-n2 about its copy and waits.  Meanwhile
#    a `volume list` at dr-n1 must answer, before dr-n2 is resumed (the
#    order of events; no time is asserted, the list is given 20 s).  Then
#    SIGCONT: the stream opens, the DR says 16 MiB, the data reads back.
#    Before the fix (target_grow ran a blocking cluster_volume_resize inside
#    site_open_volume) the list answered only after dr-n2 was resumed.
# 2. online: `volume resize sv --size 24M` at the primary while it streams;
#    the DR's resize needs dr-n2's answers, so the reopen is answered
#    "growing: retry" (EINPROGRESS) and retried until the DR grew; the resize
#    answers 0, every record says 24 MiB, writes past the old end reach the
#    DR, the images are equal, a scrub of the DR target passes.
# 3. detached 24M -> 32M, dr-n2 frozen, attached: dr-n1 is stopped (SIGTERM)
#    while its target's resize waits: it exits 0; restarted, the source's
#    next VOLUME_OPEN grows the target to 32 MiB, the images are equal.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"

require_tessera
require_cmd nbdinfo
sites_setup
site_start dr
D2=$SITE_ROOT/dr2
d2port=$(free_ports 1)
start_tesserad "$D2" --listen "127.0.0.1:$d2port" --node-id dr-n2 --zone z2 \
	--join "127.0.0.1:${SITE_PORT[dr]}" --token-file "$(sdir dr)/admin.token" \
	--peer-timeout 2000 --site dr
D2PID=$TSRD_PID
for (( i=0; i<300; i++ )); do
	got=$(stsr dr --json node list 2>/dev/null |
	      json_get 'sum(1 for n in j["nodes"] if n.get("alive"))' 2>/dev/null)
	[ "$got" = 2 ] && break
	sleep 0.1
done
[ "$got" = 2 ] || fail "dr-n2 did not join"
site_start primary
proxy_start
site_add_dr primary dr

M=$((1 << 20))
site_vol_create primary sv 8M
site_qemu_io primary sv "write -P 0x5a 0 1M" "write -P 0x5b $((8 * M - 4096)) 4k" >/dev/null ||
	fail "write sv"
out=$(stsr primary replication enable sv --to dr --target-layout replicas:2 2>&1) ||
	fail "replication enable: $out"
rwait primary sv 'j["state"] == "streaming"' "streaming" 60
repl_caught_up sv 60
copies=$(stsr dr --json volume show sv | json_get '" ".join(sorted(c["node"] for c in j["copies"]))')
assert_eq "$copies" "dr-n1 dr-n2" "the DR target's copies"
psize() { stsr primary --json volume show sv | json_get 'j["size"]'; }
dsize() { stsr dr --json volume show sv | json_get 'j["size"]'; }

# ---- 1. detached resize, dr-n2 frozen while the DR grows at the attach
stsr primary volume detach sv >/dev/null || fail "detach sv at the primary"
out=$(stsr primary volume resize sv --size 16M 2>&1) || fail "detached resize: $out"
EV=$SITE_ROOT/events
: >"$EV"
freeze_pids "$D2PID" || fail "pid $D2PID not stopped"
log "dr-n2 frozen (SIGSTOP)"
stsr primary volume attach sv >/dev/null || { kill -CONT "$D2PID"; fail "attach sv again"; }
# the DR's resize waits for dr-n2 once the source is told "growing" (the
# code before the fix never says it: its loop is blocked; 3 s then)
for (( i=0; i<30; i++ )); do
	grep -q "target sv is growing to 16.0 MiB" "$(sdir primary)/tesserad.log" && break
	sleep 0.1
done
grep -q "target sv is growing to 16.0 MiB" "$(sdir primary)/tesserad.log" ||
	log "the primary was not told that the DR grows (the DR's loop is blocked?)"
( timeout 20 "$TESSERA" --data "$(sdir dr)" --json volume list >"$SITE_ROOT/list.out" 2>&1
  echo "list $?" >>"$EV" ) &
lpid=$!
track_pid "$lpid"
for (( i=0; i<200; i++ )); do
	grep -q "^list " "$EV" && break
	sleep 0.1
done
echo "sigcont" >>"$EV"
kill -CONT "$D2PID"
log "dr-n2 resumed (SIGCONT)"
reap "$lpid" || true
events=$(tr '\n' ',' <"$EV")
log "events: $events"
assert_eq "$events" "list 0,sigcont," "the DR's list answered while its target grew"
grep -q '"sv"' "$SITE_ROOT/list.out" || fail "the DR's list does not show sv: $(cat "$SITE_ROOT/list.out")"
repl_caught_up sv 60
assert_eq "$(dsize)" $((16 * M)) "sv's size at the DR after the attach"
grep -q "site: target volume sv grown from $((8 * M)) to $((16 * M)) bytes" \
	"$(sdir dr)/tesserad.log" || fail "the DR's log does not say its target grew"
site_qemu_io dr sv "read -P 0x5a 0 1M" "read -P 0x5b $((8 * M - 4096)) 4k" >/dev/null ||
	fail "the DR lost data written before the resize"

# ---- 2. online resize: the DR answers "growing: retry" until it grew
out=$(stsr primary volume resize sv --size 24M 2>&1) || fail "online resize to 24M: $out"
grep -q "target sv is growing to 24.0 MiB" "$(sdir primary)/tesserad.log" ||
	fail "the source was never told that the DR grows (the DR answered inline?)"
grep -q "site source sv -> .*the target took the new size, $((24 * M)) bytes" \
	"$(sdir primary)/tesserad.log" || fail "the primary's log does not say the target grew"
assert_eq "$(psize)" $((24 * M)) "sv's size at the primary"
assert_eq "$(dsize)" $((24 * M)) "sv's size at the DR"
site_qemu_io primary sv "write -P 0x6b 12M 1M" "write -P 0x6c $((24 * M - 4096)) 4k" >/dev/null ||
	fail "write past the old end at the primary"
repl_caught_up sv 60
assert_eq "$(nbdinfo --size "$(site_uri dr sv)")" $((24 * M)) "a new connection's size (DR)"
site_qemu_io dr sv "read -P 0x5a 0 1M" "read -P 0x5b $((8 * M - 4096)) 4k" "read -P 0x6b 12M 1M" \
	"read -P 0x6c $((24 * M - 4096)) 4k" >/dev/null ||
	fail "the DR does not hold the data written before and after the resizes"
assert_eq "$(site_sha dr sv)" "$(site_sha primary sv)" "sha256 of the DR volume vs the source"
# every DR copy was grown: a scrub compares them all to the end
out=$(stsr dr volume scrub sv 2>&1) || fail "scrub of the DR target: $out"

# ---- 3. dr-n1 stopped (SIGTERM) while its target's resize waits for the
# frozen dr-n2: it exits 0 at once; restarted, the source's next VOLUME_OPEN
# grows the target again and the stream goes on
stsr primary volume detach sv >/dev/null || fail "detach sv at the primary"
out=$(stsr primary volume resize sv --size 32M 2>&1) || fail "detached resize to 32M: $out"
freeze_pids "$D2PID" || fail "pid $D2PID not stopped"
log "dr-n2 frozen (SIGSTOP)"
stsr primary volume attach sv >/dev/null || { kill -CONT "$D2PID"; fail "attach sv again"; }
for (( i=0; i<300; i++ )); do
	grep -q "target sv is growing to 32.0 MiB" "$(sdir primary)/tesserad.log" && break
	sleep 0.1
done
grep -q "target sv is growing to 32.0 MiB" "$(sdir primary)/tesserad.log" ||
	{ kill -CONT "$D2PID"; fail "the primary was not told that the DR grows to 32M"; }
site_stop dr
kill -CONT "$D2PID"
log "dr-n1 stopped, dr-n2 resumed (SIGCONT)"
# shellcheck disable=SC2086
start_tesserad "$(sdir dr)" ${SITE_ARGS[dr]} # site_start waits for one node alive: two here
SITE_PID[dr]=$TSRD_PID
for (( i=0; i<300; i++ )); do
	got=$(stsr dr --json node list 2>/dev/null |
	      json_get 'sum(1 for n in j["nodes"] if n.get("alive"))' 2>/dev/null)
	[ "$got" = 2 ] && break
	sleep 0.1
done
[ "$got" = 2 ] || fail "dr-n1 and dr-n2 are not both alive after dr-n1's restart"
repl_caught_up sv 90
assert_eq "$(dsize)" $((32 * M)) "sv's size at the DR after dr-n1's restart"
site_qemu_io dr sv "read -P 0x5a 0 1M" "read -P 0x6b 12M 1M" "read -P 0x6c $((24 * M - 4096)) 4k" \
	>/dev/null || fail "the DR lost data across the stopped grow"
assert_eq "$(site_sha dr sv)" "$(site_sha primary sv)" "sha256 of the DR volume vs the source (32M)"
stsr primary replication disable sv >/dev/null || fail "replication disable"
stsr primary volume detach sv >/dev/null || fail "detach"
site_stop primary
stop_tesserad "$D2PID"
site_stop dr
