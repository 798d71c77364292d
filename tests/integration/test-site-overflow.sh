#!/usr/bin/env bash
# Async geo-replication, log overflow (issue 7): with the link down long
# enough to overflow the source's in-memory log, writes go on locally, the
# log turns into a dirty-region bitmap, and when the link is back only the
# dirty regions are shipped (region_bytes_shipped), ending equal.
#
# Two single-node clusters ("primary", "dr"; site.sh), the link through
# site_proxy.py.  A 512 MiB volume replicated with --log-size 1M.
#  1. 4 MiB written at offset 0, replicated, caught up (the initial copy
#     ships those 4 MiB, not 512).
#  2. the link is cut; 24 MiB of writes land in an 8 MiB window at 64 MiB
#     (qemu-io, 256 KiB each): the 1 MiB log overflows (overflows >= 1, state
#     behind, dirty bytes about the window); more writes into the window
#     while the link is still down; none of them fails or waits for the link.
#  3. the link returns: the source ships the dirty regions between
#     SYNC_BEGIN and SYNC_END; the region bytes shipped since the cut are
#     about the dirty bytes and far below the volume; caught up, the DR
#     volume equals the source.  A last write streams (no region copy).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

sites_start_linked

VOL=ov
SIZE=$(( 512 << 20 ))
WIN=$(( 64 << 20 ))          # the write window's offset
WLEN=$(( 8 << 20 ))          # and length
site_vol_create primary $VOL 512M
site_qemu_io primary $VOL "write -P 0x11 0 4M" >/dev/null || fail "initial write"

# ---- 1. replicate, catch up
out=$(stsr primary replication enable $VOL --to dr --log-size 1M 2>&1) || fail "enable: $out"
repl_caught_up $VOL 60
r0=$(rstat primary $VOL 'j["region_bytes_shipped"]')
log "initial copy: $r0 region bytes (4 MiB written, volume 512 MiB)"
if [ "$r0" -lt $(( 4 << 20 )) ] || [ "$r0" -gt $(( 6 << 20 )) ]; then
	fail "initial copy shipped $r0 region bytes for 4 MiB allocated"
fi

# ---- 2. cut, overflow, keep writing
px cut
rwait primary $VOL 'j["state"] in ("connecting", "behind")' "disconnected" 15
write_window() { # PATTERN ROUNDS: ROUNDS passes over the window, 256 KiB writes
	local pat=$1 rounds=$2 r o cmds=()
	for (( r=0; r<rounds; r++ )); do
		for (( o=WIN; o<WIN+WLEN; o+=262144 )); do
			cmds+=("write -P $(( (pat + r) & 0xff )) $o 256k")
		done
	done
	site_qemu_io primary $VOL "${cmds[@]}" >/dev/null || fail "writes while the link is cut"
}
t0=$(date +%s%N)
write_window 0x20 3
t1=$(date +%s%N)
log "24 MiB written with the link cut in $(( (t1 - t0) / 1000000 )) ms"
rwait primary $VOL 'j["overflows"] >= 1 and j["state"] == "behind"' "overflowed and behind" 15
write_window 0x40 2
st=$(stsr primary --json replication status $VOL)
dirty=$(printf '%s' "$st" | json_get 'j["dirty_bytes"]')
log "after the overflow: state $(printf '%s' "$st" | json_get 'j["state"]'), overflows $(printf '%s' "$st" | json_get 'j["overflows"]'), dirty $dirty bytes"
if [ "$dirty" -lt $(( WLEN * 9 / 10 )) ] || [ "$dirty" -gt $(( WLEN + (1 << 20) )) ]; then
	fail "dirty bytes $dirty, want about the $WLEN-byte window"
fi
rb=$(printf '%s' "$st" | json_get 'j["region_bytes_shipped"]')
assert_eq "$(rstat dr $VOL 'j["consistent"]')" true "DR consistent before the link returns"

# ---- 3. the link returns: the dirty regions only
px pass
repl_caught_up $VOL 90
ra=$(rstat primary $VOL 'j["region_bytes_shipped"]')
delta=$(( ra - rb ))
log "after the link returned: $delta region bytes shipped for $dirty dirty (volume $SIZE)"
[ "$delta" -ge $(( dirty * 9 / 10 )) ] || fail "shipped $delta region bytes, less than the $dirty dirty"
[ "$delta" -le $(( dirty + (1 << 20) )) ] ||
	fail "shipped $delta region bytes for $dirty dirty: more than the dirty regions"
[ "$delta" -lt $(( SIZE / 16 )) ] || fail "shipped $delta region bytes: a full copy, not a delta"
src=$(site_sha primary $VOL) || fail "read the source"
dst=$(site_sha dr $VOL) || fail "read the DR volume"
assert_eq "$dst" "$src" "sha256 of the DR volume vs the source after the delta"

# streaming again: a last write goes through the log, no region copy
site_qemu_io primary $VOL "write -P 0x77 1M 64k" >/dev/null || fail "last write"
repl_caught_up $VOL 30
assert_eq "$(rstat primary $VOL 'j["region_bytes_shipped"]')" "$ra" "region bytes after a streamed write"
assert_eq "$(site_sha dr $VOL)" "$(site_sha primary $VOL)" "sha256 after the last write"
site_stop primary
site_stop dr
