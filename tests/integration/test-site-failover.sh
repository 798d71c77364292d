#!/usr/bin/env bash
# Async geo-replication, failover (issue 7): the primary site dies under a
# writer; the DR volume is promoted at its newest consistent point, takes
# writes; the old primary, back, is demoted: it refuses host writes for the
# volume, also after another restart.
#
# Two single-node clusters ("primary", "dr"; site.sh), the link through
# site_proxy.py.  A 64 MiB volume fv.
#  1. replication enabled, the history writer (crash_writer) runs; once the
#     initial copy is done and it streams, a host write at the DR (a fenced
#     target) fails.
#  2. the primary's tesserad is killed (SIGKILL) mid-stream.  At the DR:
#     promote (with --force only when it says the volume is not consistent),
#     state promoted; its content is a prefix of the acknowledged history
#     (site_history.py; writes in flight at the kill may be in it).
#  3. a host write at the DR now succeeds and reads back.
#  4. the primary restarts: its source connects, is refused as stale, and
#     the volume is demoted (status demoted, state split); a host write
#     there fails; the DR's new data is not overwritten.  After a clean
#     restart the volume is still fenced.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera "$CRASH_WRITER"
sites_start_linked

VOL=fv
site_vol_create primary $VOL 64M
LOG=$SITE_ROOT/acked.log
: >"$LOG"
out=$(stsr primary replication enable $VOL --to dr 2>&1) || fail "enable: $out"
"$CRASH_WRITER" write "$(site_uri primary $VOL)" "$LOG" --qd 4 --conns 2 \
	--seq-base 1000000000 --seed 7 >"$SITE_ROOT/writer.out" 2>&1 &
WPID=$!
track_pid "$WPID"
rwait primary $VOL 'j["state"] == "streaming" and j["acked_seq"] > 0' "streaming" 60
rwait dr $VOL 'j["consistent"]' "consistent at the DR" 30

# ---- 1. the target is fenced
out=$(site_qemu_io dr $VOL "write -P 0x5a 0 64k" 2>&1)
printf '%s' "$out" | grepq -i "failed\|error\|read-only" ||
	fail "a host write to the DR target volume succeeded before promote: $out"
log "host write at the DR target before promote refused: $(printf '%s' "$out" | head -1)"
wait_acked "$LOG" 5000 "$WPID"

# ---- 2. the primary dies mid-stream; promote at the DR
kill -0 "$WPID" 2>/dev/null || { cat "$SITE_ROOT/writer.out" >&2; fail "the writer stopped early"; }
lag=$(rstat primary $VOL 'j["lag_bytes"]')
site_kill primary
reap "$WPID" && wrc=0 || wrc=$?
[ "$wrc" = 3 ] || { cat "$SITE_ROOT/writer.out" >&2; fail "writer exit $wrc after the kill, want 3 (connection lost)"; }
log "primary killed with $lag lag bytes; $(wc -l <"$LOG") writes acknowledged to the host"
applied=$(dr_settled $VOL)
consistent=$(rstat dr $VOL 'j["consistent"]')
if out=$(stsr dr replication promote $VOL 2>&1); then
	forced=no
else
	printf '%s' "$out" | grepq "not consistent" || fail "promote: $out"
	[ "$consistent" = false ] || fail "promote refused though status said consistent: $out"
	log "promote without --force refused: $out"
	stsr dr replication promote $VOL --force >/dev/null || fail "promote --force"
	forced=yes
fi
log "promoted at applied seq $applied (forced: $forced)"
rwait dr $VOL 'j["state"] == "promoted"' "promoted" 10
if [ "$forced" = no ]; then
	"$CRASH_WRITER" seqs "$(site_uri dr $VOL)" "$SITE_ROOT/seqs-dr" >"$SITE_ROOT/seqs.out" 2>&1 ||
		{ cat "$SITE_ROOT/seqs.out" >&2; fail "the promoted volume holds a block that is no whole write"; }
	out=$(site_history check "$SITE_ROOT/seqs-dr" "$LOG" --allow-unlogged) ||
		{ printf '%s\n' "$out" >&2; fail "the promoted volume is not a prefix of the history"; }
	log "promoted volume: ${out#site_history: }"
fi
expect_fail 1 "promoted already" stsr dr replication promote $VOL

# ---- 3. writes at the DR
site_qemu_io dr $VOL "write -P 0x5a 0 64k" >/dev/null || fail "host write at the DR after promote"
site_qemu_io dr $VOL "read -P 0x5a 0 64k" | grepq "read 65536" || fail "DR write read back"
dr_sha=$(site_sha dr $VOL)

# ---- 4. the old primary comes back: demoted, fenced
site_start primary
if [ -z "$(stsr primary --json volume show $VOL | json_get 'j.get("attached_node") or ""')" ]; then
	stsr primary volume attach $VOL >/dev/null || fail "attach $VOL at the old primary"
fi
rwait primary $VOL 'j["demoted"] and j["state"] == "split"' "demoted (split)" 30
log "old primary: $(stsr primary replication status $VOL | grep -m1 state)"
out=$(site_qemu_io primary $VOL "write -P 0x66 0 64k" 2>&1)
printf '%s' "$out" | grepq -i "failed\|error\|read-only" ||
	fail "the demoted primary accepted a host write: $out"
log "host write at the demoted primary refused: $(printf '%s' "$out" | head -1)"
sleep 1
assert_eq "$(site_sha dr $VOL)" "$dr_sha" "DR volume after the old primary came back"
site_qemu_io dr $VOL "read -P 0x5a 0 64k" | grepq "read 65536" || fail "DR data after the demotion"

# still fenced after a clean restart
site_stop primary
site_start primary
if [ -z "$(stsr primary --json volume show $VOL | json_get 'j.get("attached_node") or ""')" ]; then
	stsr primary volume attach $VOL >/dev/null || fail "attach $VOL after the restart"
fi
rwait primary $VOL 'j["demoted"]' "demoted after a restart" 30
out=$(site_qemu_io primary $VOL "write -P 0x67 0 4k" 2>&1)
printf '%s' "$out" | grepq -i "failed\|error\|read-only" ||
	fail "the demoted primary accepted a host write after a restart: $out"
site_stop primary
site_stop dr
