#!/usr/bin/env bash
# Compression of the geo-replication stream (issue 7): `replication enable
# --compress zstd` on two real single-node clusters (site.sh, the link
# through site_proxy.py).  4 MiB of text written before the enable go as the
# initial copy, 1 MiB written after it through qemu-io as log entries; once
# caught up, status says zstd with fewer bytes on the wire than written
# (ratio > 2, in --json and text), and the DR volume equals the source.  An
# unknown algorithm is refused by the CLI (exit 2) before any round trip.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

sites_start_linked
site_vol_create primary cv 16M

expect_fail 2 "--compress gzip: give lz4, zstd or none" \
	stsr primary replication enable cv --to dr --compress gzip

# compressible, not uniform: numbered lines of text
TEXT=$SITE_ROOT/text.img
"$PY" -c '
import sys
with open(sys.argv[1], "w") as f:
    for i in range(4 << 20 >> 6):
        f.write(("line %08d of the primary volume, shipped to dr" % i).ljust(63) + "\n")
' "$TEXT" || fail "make the text image"
nbdcopy "$TEXT" "$(site_uri primary cv)" || fail "write the text to cv"

out=$(stsr primary replication enable cv --to dr --compress zstd 2>&1) ||
	fail "replication enable --compress zstd: $out"
log "$out"
assert_eq "$(rstat primary cv 'j["compression"]')" zstd "status compression"
site_qemu_io primary cv "write -P 0x5a 8M 1M" >/dev/null || fail "qemu-io write after enable"
repl_caught_up cv 60

in=$(rstat primary cv 'j["compress_in_bytes"]')
wire=$(rstat primary cv 'j["compress_out_bytes"]')
frames=$(rstat primary cv 'j["frames_compressed"]')
ratio=$(rstat primary cv 'j["compress_ratio"]')
log "compression: $in bytes of writes took $wire on the wire (ratio $ratio, $frames frames compressed)"
[ "$in" -ge $(( 5 << 20 )) ] || fail "only $in bytes went through the compressor, want >= 5 MiB"
[ "$frames" -gt 0 ] || fail "no frame was sent compressed"
[ "$(rstat primary cv 'j["compress_ratio"] > 2 and j["compress_out_bytes"] * 2 < j["compress_in_bytes"]')" = true ] ||
	fail "ratio $ratio: want > 2 ($in -> $wire)"
text=$(stsr primary replication status cv) || fail "replication status (text)"
printf '%s\n' "$text" | grepq -E "^compression: zstd, .* on the wire \(ratio [0-9.]+" ||
	fail "text status lacks the compression line: $text"

src=$(site_sha primary cv) || fail "read the source"
dst=$(site_sha dr cv) || fail "read the DR volume"
assert_eq "$dst" "$src" "sha256 of the DR volume vs the source"
log "DR equals the source ($src)"
