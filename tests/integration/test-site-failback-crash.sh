#!/usr/bin/env bash
# Async geo-replication, failback: the original primary dies between its
# promote's state write and failback_done (the failback crash table,
# ARCHITECTURE.md).  Its attach after the restart finishes the failback by
# itself: no second promote.
#
# Two single-node clusters (site.sh), the primary with a site listener.
#  1. fb (16 MiB) at the primary: 0x11 over [0, 1M), replicated, caught up;
#     the primary stops; the DR is promoted and writes 0x5a at 4M (64 KiB).
#  2. the primary back (TSR_TEST_PROMOTE_CRASH_FILE in its environment),
#     attached: demoted.  Failback: at the DR `site add primary` +
#     `replication enable fb --to primary`; at the primary `replication
#     resync fb --from dr`; caught up, equal.
#  3. the crash file made; `replication promote fb` at the primary: the
#     daemon is killed right after the server wrote the state promoted.
#  4. restarted (crash file gone) and attached, no promote: the primary
#     takes a host write (0x77 at 8M), streams to the DR under a new stream;
#     the DR is demoted (a host write there refused) and receives it; every
#     block holds the first period (0x11), the DR's write (0x5a) or the new
#     one (0x77).  Fails on the code before: after step 4 the primary stays
#     demoted ('not streaming').
#  5. the DR restarted without fb's state file (a stream reaching another
#     DR node): the failback's stream is adopted, the DR equal.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera
SITE_PRIMARY_LISTENS=1
sites_start_linked

VOL=fb
CRASH=$SITE_ROOT/promote-crash
site_vol_create primary $VOL 16M

rrole() {
	stsr "$1" --json replication status "$2" |
		json_get "(lambda L: (lambda j: $4)([r for r in L if r['role'] == '$3'][0]))(j['replications'] if 'replications' in j else [j])"
}
rrole_wait() {
	local t=${6:-60} got end
	end=$((SECONDS + t))
	while [ "$SECONDS" -lt "$end" ]; do
		got=$(rrole "$1" "$2" "$3" "bool($4)" 2>/dev/null) || got=
		[ "$got" = True ] || [ "$got" = true ] && return 0
		sleep 0.2
	done
	fail "site $1, $2 ($3): not $5 after ${t}s: $(stsr "$1" --json replication status "$2" 2>&1)"
}
refused() { # KEY OFFSET: a host write at KEY fails
	local out
	out=$(site_qemu_io "$1" $VOL "write -P 0x66 $2 4k" 2>&1)
	printf '%s' "$out" | grepq -i "failed\|error\|read-only" ||
		fail "site $1 accepted a host write: $out"
}

# ---- 1. first period at the primary, failover to the DR
site_qemu_io primary $VOL "write -P 0x11 0 1M" >/dev/null || fail "write at the primary"
out=$(stsr primary replication enable $VOL --to dr 2>&1) || fail "enable: $out"
repl_caught_up $VOL
site_stop primary
out=$(stsr dr replication promote $VOL 2>&1) || fail "promote at the DR: $out"
site_qemu_io dr $VOL "write -P 0x5a 4M 64k" >/dev/null || fail "host write at the DR"

# ---- 2. the primary back, demoted; failback resync
export TSR_TEST_PROMOTE_CRASH_FILE=$CRASH
site_start primary
stsr primary volume attach $VOL >/dev/null || fail "attach $VOL at the old primary"
rrole_wait primary $VOL source 'j["demoted"]' "demoted" 30
out=$(stsr dr site add primary --address "127.0.0.1:${SITE_LISTEN[primary]}" \
	--ca "$CERTS/ca.crt" --cert "$CERTS/dr.crt" --key "$CERTS/dr.key" \
	--peer-name primary 2>&1) || fail "site add primary at the DR: $out"
out=$(stsr dr replication enable $VOL --to primary 2>&1) || fail "enable back at the DR: $out"
out=$(stsr primary replication resync $VOL --from dr 2>&1) || fail "resync: $out"
rrole_wait dr $VOL source 'j["state"] == "streaming" and j["lag_bytes"] == 0 and j["dirty_bytes"] == 0 and j["acked_seq"] > 0 and j["acked_seq"] + 1 == j["next_seq"]' "caught up (failback)" 60
acked=$(rrole dr $VOL source 'j["acked_seq"]')
rrole_wait primary $VOL target "j['applied_seq'] >= $acked and j['consistent']" "consistent (failback)" 60
assert_eq "$(site_sha primary $VOL)" "$(site_sha dr $VOL)" "the primary after the resync"

# ---- 3. promote at the primary, killed after the state write
touch "$CRASH"
out=$(stsr primary replication promote $VOL 2>&1) && fail "the promote answered with the crash file: $out"
site_wait_dead primary "killed at its promote"
grep -q "killed after the promote's state write" "$(sdir primary)/tesserad.log" ||
	fail "the primary died, but not at the test hook"
rm -f "$CRASH"
log "primary killed after the promote's state write"

# ---- 4. restart and attach: the failback finishes by itself
site_start primary
stsr primary volume attach $VOL >/dev/null || fail "attach $VOL after the crash"
site_qemu_io primary $VOL "write -P 0x77 8M 64k" >/dev/null ||
	fail "host write at the primary after the restart (still demoted?)"
grep -q "finishing the failback" "$(sdir primary)/tesserad.log" ||
	fail "the attach did not finish the failback"
rrole_wait primary $VOL source 'not j["demoted"] and j["state"] == "streaming" and j["lag_bytes"] == 0 and j["dirty_bytes"] == 0 and j["acked_seq"] > 0 and j["acked_seq"] + 1 == j["next_seq"]' "streaming to the DR" 60
acked=$(rrole primary $VOL source 'j["acked_seq"]')
rrole_wait dr $VOL target "j['applied_seq'] >= $acked and j['consistent']" "applied through $acked" 60
refused dr 0
assert_eq "$(site_sha primary $VOL)" "$(site_sha dr $VOL)" "the DR after the finished failback"
nbdcopy "$(site_uri dr $VOL)" "$SITE_ROOT/img" || fail "read $VOL at the DR"
"$PY" - "$SITE_ROOT/img" <<'EOF' || fail "data of both periods"
import sys
b = open(sys.argv[1], "rb").read()
bad = 0
for i in range(0, len(b), 4096):
    if i < 1 << 20:
        want = b"\x11"
    elif 4 << 20 <= i < (4 << 20) + 65536:
        want = b"\x5a"
    elif 8 << 20 <= i < (8 << 20) + 65536:
        want = b"\x77"
    else:
        want = b"\0"
    if b[i:i + 4096] != want * 4096:
        bad += 1
        if bad <= 5:
            print("block at %d holds neither period" % i)
sys.exit(1 if bad else 0)
EOF
log "the DR holds the first period, the DR's write and the primary's new write"

# ---- 5. the stream reaches a DR listener without fb's state file (as
# another DR node would be): the failback's new stream is adopted there too,
# for vol/fb says it is that stream's target (VolumeRecord.target_stream,
# rewritten with target/fb by the failback).  Fails on the code before:
# "was created for stream ...: refused", never applied.
site_stop dr
rm -f "$(sdir dr)/site/$VOL.state"
site_start dr
site_qemu_io primary $VOL "write -P 0x78 12M 64k" >/dev/null || fail "host write at the primary (5)"
rrole_wait primary $VOL source 'j["state"] == "streaming" and j["lag_bytes"] == 0 and j["dirty_bytes"] == 0 and j["acked_seq"] > 0 and j["acked_seq"] + 1 == j["next_seq"]' "streaming to the DR (5)" 30
grep -q "was created for stream" "$(sdir dr)/tesserad.log" &&
	fail "the DR refused the failback's stream: $(grep "was created for stream" "$(sdir dr)/tesserad.log" | tail -1)"
assert_eq "$(site_sha primary $VOL)" "$(site_sha dr $VOL)" "the DR without its state file"
log "the failback's stream is adopted by a DR listener without the state file"

site_stop primary
site_stop dr
