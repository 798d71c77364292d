#!/usr/bin/env bash
# Async geo-replication with the source's pump on a second worker (tesserad
# --site-pump-worker; issue 7, "the site source's pump on a second
# worker"): the volume's home worker acks the writes and hands them over,
# the pump worker logs and ships them.
#
# Two single-node clusters ("primary" with --site-pump-worker, "dr";
# site.sh), the link through site_proxy.py.  A 64 MiB volume replicated
# with --log-size 2M.
#  1. 4 MiB written, replicated, caught up.
#  2. 8 MiB of writes while streaming (qemu-io in the background, the
#     status asked meanwhile), caught up; then 16 small writes (below the
#     handover's 256 KiB batch: only the pump worker's tick pulls them from
#     home): caught up, the DR equals the source (sha256).
#  3. the link cut; 1 MiB written: lag_bytes covers it, lag_sec grows; 6 MiB
#     more: the pump side's log overflows (overflows, state behind); the DR
#     killed (SIGKILL) and started again while the link is cut; 1 MiB more.
#  4. the link back: the dirty regions ship, caught up (a reconnect), equal;
#     the status reads streaming, lag 0.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

M=$((1 << 20))
VOL=pw

sites_setup
site_start dr
site_start primary --site-pump-worker
proxy_start
site_add_dr primary dr

# writes PATTERN OFFSET COUNT [SIZE_K]: COUNT writes of SIZE_K KiB (64) of
# PATTERN from OFFSET, back to back
writes() {
	local cmds=() i k=${4:-64}
	for (( i=0; i<$3; i++ )); do cmds+=("write -P $1 $(( $2 + i * k * 1024 )) ${k}k"); done
	site_qemu_io primary $VOL "${cmds[@]}" >/dev/null
}
equal() {
	local src dst
	src=$(site_sha primary $VOL) || fail "$1: read the source"
	dst=$(site_sha dr $VOL) || fail "$1: read the DR volume"
	assert_eq "$dst" "$src" "$1: sha256 of the DR volume vs the source"
}
lag() { rstat primary $VOL 'str(j["lag_bytes"]) + " " + str(j["lag_sec"])'; }

# ---- 1. replicate, catch up
site_vol_create primary $VOL 64M
writes 0x11 0 64 || fail "initial writes"
out=$(stsr primary replication enable $VOL --to dr --log-size 2M 2>&1) || fail "enable: $out"
repl_caught_up $VOL 30
log "$(grep -o "site source $VOL .*started.*" "$(sdir primary)/tesserad.log" | tail -1)"

# ---- 2. writes while streaming
writes 0x22 $((8 * M)) 128 &
WPID=$!
track_pid $WPID
for (( i=0; i<4; i++ )); do
	read -r lb ls <<<"$(lag)"
	log "while writing: lag $lb bytes, $ls s"
	sleep 0.1
done
reap $WPID || fail "writes while streaming"
repl_caught_up $VOL 30 # (no sync running: only the tick's pull takes the next ones)
writes 0x23 $((30 * M)) 16 4 || fail "small writes"
repl_caught_up $VOL 30
equal "streamed"

# ---- 3. the link cut: lag, overflow, a DR restart
px cut
writes 0x33 $((20 * M)) 16 || fail "writes with the link cut"
sleep 0.3
read -r lb ls <<<"$(lag)"
log "link cut, 1 MiB written: lag $lb bytes, $ls s"
[ "$lb" -ge $((1 * M)) ] || fail "lag_bytes $lb with 1 MiB acked and not shipped"
"$PY" -c "import sys; sys.exit(0 if float('$ls') >= 0.3 else 1)" ||
	fail "lag_sec $ls, 0.3 s after 1 MiB acked and not shipped"
writes 0x44 $((24 * M)) 96 || fail "writes past the log with the link cut"
rwait primary $VOL 'j["overflows"] >= 1 and j["state"] == "behind"' "overflowed and behind" 15
read -r lb ls <<<"$(lag)"
log "link cut, 7 MiB written: lag $lb bytes, $ls s, $(rstat primary $VOL 'j["dirty_bytes"]') dirty"
[ "$lb" -ge $((7 * M)) ] || fail "lag_bytes $lb with 7 MiB acked and not shipped"
site_kill dr
site_start dr
writes 0x55 $((40 * M)) 16 || fail "writes after the DR restart"

# ---- 4. the link back
px pass
repl_caught_up $VOL 30
equal "after the overflow and the DR restart"
st=$(stsr primary --json replication status $VOL)
log "final: $(printf '%s' "$st" | json_get '"%s, lag %s bytes %s s, %s reconnects, %s overflows, %s region bytes" % (j["state"], j["lag_bytes"], j["lag_sec"], j["reconnects"], j["overflows"], j["region_bytes_shipped"])')"
assert_eq "$(printf '%s' "$st" | json_get 'j["lag_bytes"] == 0 and j["lag_sec"] < 1 and j["reconnects"] >= 1')" true "status after the link returned"
site_stop primary
site_stop dr
