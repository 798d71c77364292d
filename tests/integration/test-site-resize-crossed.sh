#!/usr/bin/env bash
# Two sites that replicate to each other resize their sources at the same
# time (review 13b, finding 1, the case it gave as analysis): sv at the
# primary ships to the DR site, dv at the DR ships to the primary.  The link
# primary -> DR is paused (site_proxy.py: connections kept, nothing
# forwarded), so `volume resize sv --size 16M` at the primary waits for its
# reopen; then `volume resize dv --size 16M` is sent at the DR, whose reopen
# needs the primary's site server; then the link passes again.  Both resizes
# must answer 0, and both volumes be 16 MiB at both sites with the data
# written before and past the old end read back at the target.
# Before the fix each control loop waited in its own grow for the other's
# site_open_volume, which needed that blocked loop: both resizes were refused
# after 30 s ("the target did not answer the reopen in time").
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"

require_tessera
SITE_PRIMARY_LISTENS=1
sites_start_linked
out=$(stsr dr site add primary --address "127.0.0.1:${SITE_LISTEN[primary]}" \
	--ca "$CERTS/ca.crt" --cert "$CERTS/dr.crt" --key "$CERTS/dr.key" \
	--peer-name primary 2>&1) || fail "site add primary at the DR: $out"
M=$((1 << 20))
site_vol_create primary sv 8M
site_vol_create dr dv 8M
site_qemu_io primary sv "write -P 0x5a 0 1M" >/dev/null || fail "write sv"
site_qemu_io dr dv "write -P 0x3c 0 1M" >/dev/null || fail "write dv"
out=$(stsr primary replication enable sv --to dr 2>&1) || fail "replication enable sv: $out"
out=$(stsr dr replication enable dv --to primary 2>&1) || fail "replication enable dv: $out"
repl_caught_up sv 60
caught='j["state"] == "streaming" and j["lag_bytes"] == 0 and j["dirty_bytes"] == 0'
rwait dr dv "$caught" "dv caught up" 60
size() { stsr "$1" --json volume show "$2" | json_get 'j["size"]'; }

EV=$SITE_ROOT/events
: >"$EV"
px pause
( stsr primary volume resize sv --size 16M >"$SITE_ROOT/sv.out" 2>&1; echo "sv $?" >>"$EV" ) &
spid=$!
track_pid "$spid"
for (( i=0; i<300; i++ )); do
	grep -q "site source sv -> .*the volume grows to $((16 * M)) bytes" \
		"$(sdir primary)/tesserad.log" && break
	sleep 0.1
done
( stsr dr volume resize dv --size 16M >"$SITE_ROOT/dv.out" 2>&1; echo "dv $?" >>"$EV" ) &
dpid=$!
track_pid "$dpid"
for (( i=0; i<300; i++ )); do
	grep -q "site source dv -> .*the volume grows to $((16 * M)) bytes" \
		"$(sdir dr)/tesserad.log" && break
	sleep 0.1
done
grep -q "site source dv -> .*the volume grows to $((16 * M)) bytes" "$(sdir dr)/tesserad.log" ||
	log "the DR's resize of dv has not reached its grow yet"
px pass
reap "$spid" || true
reap "$dpid" || true
log "events: $(tr '\n' ',' <"$EV") sv: $(head -c 300 "$SITE_ROOT/sv.out") dv: $(head -c 300 "$SITE_ROOT/dv.out")"
grep -qx "sv 0" "$EV" || fail "the resize of sv: $(cat "$SITE_ROOT/sv.out")"
grep -qx "dv 0" "$EV" || fail "the resize of dv: $(cat "$SITE_ROOT/dv.out")"
assert_eq "$(size primary sv) $(size dr sv)" "$((16 * M)) $((16 * M))" "sv's sizes (primary, DR)"
assert_eq "$(size dr dv) $(size primary dv)" "$((16 * M)) $((16 * M))" "dv's sizes (DR, primary)"

site_qemu_io primary sv "write -P 0x6b 12M 1M" >/dev/null || fail "write sv past the old end"
site_qemu_io dr dv "write -P 0x4d 12M 1M" >/dev/null || fail "write dv past the old end"
repl_caught_up sv 60
rwait dr dv "$caught" "dv caught up" 60
acked=$(rstat dr dv 'j["acked_seq"]')
rwait primary dv "j['applied_seq'] >= $acked" "dv applied at the primary" 60
site_qemu_io dr sv "read -P 0x5a 0 1M" "read -P 0x6b 12M 1M" >/dev/null ||
	fail "the DR does not hold sv's data"
site_qemu_io primary dv "read -P 0x3c 0 1M" "read -P 0x4d 12M 1M" >/dev/null ||
	fail "the primary does not hold dv's data"
stsr primary replication disable sv >/dev/null || fail "replication disable sv"
stsr dr replication disable dv >/dev/null || fail "replication disable dv"
site_stop primary
site_stop dr
