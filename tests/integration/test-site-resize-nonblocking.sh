#!/usr/bin/env bash
# An online resize of a volume that replicates to a DR site must not block
# the coordinator's control loop while the DR grows (review 13b, finding 1).
# The grow's bound is 30 s; the sites run here with 12 s
# (TSR_TEST_REPL_GROW_TIMEOUT_MS), so that 1. waits 12 s, not 30, and each
# list below is given 8 s (20 s when the bound was 30).
# 1. The DR frozen (SIGSTOP) for longer than the grow's bound: the
#    primary's `volume list` answers while the resize waits, and the resize
#    is refused "the target did not answer the reopen in time ... nothing
#    changed" (the bound is a timer on the source's worker); sv stays 8 MiB.
# 2. The DR frozen again, so the source's reopen announcing the new size
#    waits; `volume resize sv --size 16M` is sent to the primary, and once
#    the primary logs the reopen a `volume list` is sent to it too.  The list
#    must answer before the DR is resumed, and the resize after (the order of
#    events; no time is asserted, the list is given 8 s).  Then SIGCONT:
#    the resize answers 0, both sites say 16 MiB, the data written before
#    reads back at the DR, a write past the old end reaches the DR, and the
#    images are equal.
# 3. The primary stopped (SIGTERM) while a resize to 24M waits for the
#    frozen DR: it exits 0 (the resize answered -ECANCELED or its connection
#    closed), the record stays 16 MiB.
# Before the fix (repl_grow_target waited on a condition variable in the
# loop) the list answered only when the resize did: after the bound in 1,
# after SIGCONT in 2.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"

require_tessera
require_cmd nbdinfo
export TSR_TEST_REPL_GROW_TIMEOUT_MS=12000
sites_start_linked
M=$((1 << 20))
site_vol_create primary sv 8M
site_qemu_io primary sv "write -P 0x5a 0 1M" "write -P 0x5b $((8 * M - 4096)) 4k" >/dev/null ||
	fail "write sv"
out=$(stsr primary replication enable sv --to dr 2>&1) || fail "replication enable: $out"
rwait primary sv 'j["state"] == "streaming"' "streaming" 60
repl_caught_up sv 60
psize() { stsr primary --json volume show sv | json_get 'j["size"]'; }
dsize() { stsr dr --json volume show sv | json_get 'j["size"]'; }

# ---- 1. the DR frozen for longer than the grow's bound (12 s here, a timer
# on the source's worker): the resize is refused with the reopen's sentence,
# nothing changed at the primary; the primary's list answers meanwhile
freeze_pids "${SITE_PID[dr]}" || fail "pid ${SITE_PID[dr]} not stopped"
log "DR frozen (SIGSTOP) past the grow's bound"
( stsr primary volume resize sv --size 16M >"$SITE_ROOT/resize0.out" 2>&1
  echo $? >"$SITE_ROOT/resize0.rc" ) &
rpid=$!
track_pid "$rpid"
for (( i=0; i<300; i++ )); do
	grep -q "site source sv -> .*the volume grows to $((16 * M)) bytes" \
		"$(sdir primary)/tesserad.log" && break
	sleep 0.1
done
out=$(timeout 8 "$TESSERA" --data "$(sdir primary)" volume list 2>&1) ||
	{ rc=$?; kill -CONT "${SITE_PID[dr]}"
	  fail "volume list while the resize waits: exit $rc (124: no answer in 8 s) $out"; }
[ -e "$SITE_ROOT/resize0.rc" ] &&
	{ kill -CONT "${SITE_PID[dr]}"; fail "the resize answered before the list ($(cat "$SITE_ROOT/resize0.out"))"; }
reap "$rpid" || true
kill -CONT "${SITE_PID[dr]}"
log "DR resumed (SIGCONT): resize rc $(cat "$SITE_ROOT/resize0.rc"): $(head -c 300 "$SITE_ROOT/resize0.out")"
[ "$(cat "$SITE_ROOT/resize0.rc")" != 0 ] || fail "the resize succeeded with the DR frozen"
grep -q "the target did not answer the reopen in time.*nothing changed" "$SITE_ROOT/resize0.out" ||
	fail "the refusal does not say the DR did not answer: $(cat "$SITE_ROOT/resize0.out")"
assert_eq "$(psize)" $((8 * M)) "sv's size at the primary after the refusal"
assert_eq "$(nbdinfo --size "$(site_uri primary sv)")" $((8 * M)) "a new connection's size (primary)"
rwait primary sv 'j["state"] == "streaming"' "streaming again" 60
repl_caught_up sv 60

# ---- 2. the DR frozen, then resumed while the resize waits: it succeeds
EV=$SITE_ROOT/events
: >"$EV"
freeze_pids "${SITE_PID[dr]}" || fail "pid ${SITE_PID[dr]} not stopped"
log "DR frozen (SIGSTOP)"
( stsr primary volume resize sv --size 16M >"$SITE_ROOT/resize.out" 2>&1
  echo "resize $?" >>"$EV" ) &
rpid=$!
track_pid "$rpid"
# the resize is waiting for the DR once the source reopened its session
for (( i=0; i<300; i++ )); do
	[ "$(grep -c "site source sv -> .*the volume grows to $((16 * M)) bytes" \
		"$(sdir primary)/tesserad.log")" -ge 2 ] && break
	sleep 0.1
done
[ "$(grep -c "site source sv -> .*the volume grows to $((16 * M)) bytes" \
	"$(sdir primary)/tesserad.log")" -ge 2 ] ||
	{ kill -CONT "${SITE_PID[dr]}"; fail "the primary never started the DR's grow"; }
( timeout 8 "$TESSERA" --data "$(sdir primary)" --json volume list >"$SITE_ROOT/list.out" 2>&1
  echo "list $?" >>"$EV" ) &
lpid=$!
track_pid "$lpid"
for (( i=0; i<200; i++ )); do
	grep -q "^list " "$EV" && break
	sleep 0.1
done
echo "sigcont" >>"$EV"
kill -CONT "${SITE_PID[dr]}"
log "DR resumed (SIGCONT)"
reap "$lpid" || true
reap "$rpid" || true
events=$(tr '\n' ',' <"$EV")
log "events: $events"
assert_eq "$(sed -n 1p "$EV")" "list 0" "the first answer (events: $events)"
assert_eq "$(sed -n 2p "$EV")" "sigcont" "the list answered before the DR was resumed (events: $events)"
assert_eq "$(sed -n 3p "$EV")" "resize 0" \
	"the resize answered last, with success (events: $events; $(head -c 400 "$SITE_ROOT/resize.out"))"
grep -q '"sv"' "$SITE_ROOT/list.out" || fail "the list does not show sv: $(cat "$SITE_ROOT/list.out")"

assert_eq "$(psize)" $((16 * M)) "sv's size at the primary"
assert_eq "$(dsize)" $((16 * M)) "sv's size at the DR"
assert_eq "$(nbdinfo --size "$(site_uri primary sv)")" $((16 * M)) "a new connection's size (primary)"
site_qemu_io primary sv "write -P 0x6b 12M 1M" "write -P 0x6c $((16 * M - 4096)) 4k" >/dev/null ||
	fail "write past the old end at the primary"
repl_caught_up sv 60
site_qemu_io dr sv "read -P 0x5a 0 1M" "read -P 0x5b $((8 * M - 4096)) 4k" "read -P 0x6b 12M 1M" \
	"read -P 0x6c $((16 * M - 4096)) 4k" >/dev/null ||
	fail "the DR does not hold the data written before and after the resize"
assert_eq "$(site_sha dr sv)" "$(site_sha primary sv)" "sha256 of the DR volume vs the source"

# ---- 3. the primary stopped (SIGTERM) while a resize waits for the frozen
# DR: it exits cleanly (0) at once, the resize is not a success, and the
# record keeps 16 MiB (seen after a restart)
freeze_pids "${SITE_PID[dr]}" || fail "pid ${SITE_PID[dr]} not stopped"
log "DR frozen (SIGSTOP)"
( stsr primary volume resize sv --size 24M >"$SITE_ROOT/resize3.out" 2>&1
  echo $? >"$SITE_ROOT/resize3.rc" ) &
rpid=$!
track_pid "$rpid"
for (( i=0; i<300; i++ )); do
	grep -q "site source sv -> .*the volume grows to $((24 * M)) bytes" \
		"$(sdir primary)/tesserad.log" && break
	sleep 0.1
done
grep -q "site source sv -> .*the volume grows to $((24 * M)) bytes" "$(sdir primary)/tesserad.log" ||
	{ kill -CONT "${SITE_PID[dr]}"; fail "the primary never started the DR's grow to 24M"; }
site_stop primary
reap "$rpid" || true
[ "$(cat "$SITE_ROOT/resize3.rc")" != 0 ] ||
	fail "the resize succeeded although its node stopped: $(cat "$SITE_ROOT/resize3.out")"
log "resize during the stop: rc $(cat "$SITE_ROOT/resize3.rc"): $(head -c 300 "$SITE_ROOT/resize3.out")"
# the stop answers the waiting resize with its own sentence before the admin
# server closes its connections (not a reset connection)
grep -q "is stopping while its DR site grows" "$SITE_ROOT/resize3.out" ||
	fail "the resize cut by the stop was not told why: $(head -c 300 "$SITE_ROOT/resize3.out")"
kill -CONT "${SITE_PID[dr]}"
log "DR resumed (SIGCONT)"
site_start primary
assert_eq "$(psize)" $((16 * M)) "sv's record after the stop"
stsr primary replication disable sv >/dev/null || fail "replication disable"
stsr primary volume detach sv >/dev/null 2>&1 # attached again at the restart, or not
site_stop primary
site_stop dr
