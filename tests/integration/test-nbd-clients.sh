#!/usr/bin/env bash
# Interop with NBD clients nobody here wrote: nbdinfo (size, block size
# constraints, flags, --list, --map of base:allocation), nbdcopy (in and out,
# several connections), qemu-img convert/compare, qemu-io discard and
# write-zeroes (holes in the map, zeros read back), fio's nbd engine with
# verify=crc32c against tesserad --io io_uring and --io libaio, and the TCP
# listener.
. "$(dirname "$0")/functions.sh"

require_tessera
require_cmd nbdinfo nbdcopy qemu-img qemu-io fio

make_tmpdir D
port=$(free_port)
start_tesserad "$D" --nbd-listen "unix:$D/nbd.sock" --nbd-listen "tcp:127.0.0.1:$port"
vol_create "$D" v1 64M
vol_create "$D" v2 32M
U1=$(nbd_uri "$D" v1)
U2=$(nbd_uri "$D" v2)

# ---------------------------------------------------------------- nbdinfo
info=$(nbdinfo --json "$U1") || fail "nbdinfo $U1"
log "nbdinfo: $(tr -d '\n\t' <<<"$info")"
assert_eq "$(json_get 'j["exports"][0]["export-size"]' <<<"$info")" 67108864 "export size"
assert_eq "$(json_get 'j["exports"][0].get("block_size_minimum")' <<<"$info")" 4096 "block size minimum"
assert_eq "$(json_get 'j["exports"][0].get("block_size_preferred")' <<<"$info")" 4096 "block size preferred"
bmax=$(json_get 'j["exports"][0].get("block_size_maximum")' <<<"$info")
(( bmax >= 1048576 && bmax <= 33554432 )) || fail "block size maximum $bmax"
assert_eq "$(json_get 'j["structured"]' <<<"$info")" true "structured replies"
assert_eq "$(json_get '"base:allocation" in j["exports"][0]["contexts"]' <<<"$info")" true "base:allocation context"
for flag in can_flush can_fua can_trim can_zero; do
	assert_eq "$(json_get "j['exports'][0]['$flag']" <<<"$info")" true "$flag"
done
assert_eq "$(json_get 'j["exports"][0]["is_read_only"]' <<<"$info")" false "is_read_only"
multi=$(json_get 'j["exports"][0]["can_multi_conn"]' <<<"$info")
log "can_multi_conn: $multi"

list=$(nbdinfo --list --json "nbd+unix:///?socket=$D/nbd.sock") || fail "nbdinfo --list"
assert_eq "$(json_get '" ".join(sorted(e["export-name"] for e in j["exports"]))' <<<"$list")" \
	"v1 v2" "nbdinfo --list export names"
nbdinfo "$(nbd_uri "$D" nosuch)" >/dev/null 2>&1 && fail "nbdinfo of an unknown export succeeded"

# A fresh volume is one hole reading as zeros.
map=$(nbdinfo --map --json "$U1") || fail "nbdinfo --map"
assert_eq "$(json_get 'all(e["type"] & 1 for e in j)' <<<"$map")" true "fresh volume is all hole"

# ---------------------------------------------------------------- nbdcopy
head -c 64M /dev/urandom >"$D/rand.img"
want=$(sha256 "$D/rand.img")
nbdcopy --connections=4 "$D/rand.img" "$U1" || fail "nbdcopy file -> volume"
nbdcopy "$U1" "$D/out.img" || fail "nbdcopy volume -> file"
assert_eq "$(sha256 "$D/out.img")" "$want" "nbdcopy round trip checksum"
assert_eq "$(nbdcopy "$U1" - | sha256sum | cut -d' ' -f1)" "$want" "nbdcopy to stdout checksum"
map=$(nbdinfo --map --json "$U1")
assert_eq "$(json_get 'all(e["type"] == 0 for e in j)' <<<"$map")" true "fully written volume is all data"

# ---------------------------------------------------------------- qemu-img, qemu-io
head -c 32M /dev/urandom >"$D/q.img"
# Leave holes in the source so convert can skip or zero them.
dd if=/dev/zero of="$D/q.img" bs=1M seek=8 count=4 conv=notrunc status=none
qemu-img convert -n -f raw -O raw "$D/q.img" "$U2" || fail "qemu-img convert -n"
qemu-img compare -f raw -F raw "$D/q.img" "$U2" >/dev/null || fail "qemu-img compare: not identical"
# Change one block and compare must notice.
qemu-io -f raw -c 'write -P 0x77 20M 4096' "$U2" >/dev/null || fail "qemu-io write"
qemu-img compare -q -f raw -F raw "$D/q.img" "$U2" && fail "qemu-img compare did not see a changed block"
qemu-io -f raw -c 'read -P 0x77 20M 4096' "$U2" >/dev/null || fail "qemu-io read back"

# TRIM: the range becomes a hole and reads as zeros; its neighbours keep data.
qemu-io -f raw -c 'discard 16M 2M' "$U1" >/dev/null || fail "qemu-io discard"
qemu-io -f raw -c 'read -P 0 16M 2M' "$U1" >/dev/null || fail "trimmed range does not read as zeros"
map=$(nbdinfo --map --json "$U1")
log "map after trim: $(tr -d '\n' <<<"$map")"
assert_eq "$(json_get '[e for e in j if e["offset"] <= 16*2**20 < e["offset"] + e["length"]][0]["type"] & 3' <<<"$map")" \
	3 "trimmed range is a hole,zero in the map"
assert_eq "$(json_get '[e for e in j if e["offset"] <= 18*2**20 < e["offset"] + e["length"]][0]["type"]' <<<"$map")" \
	0 "block after the trimmed range is data"
# WRITE_ZEROES: reads as zeros.  With NBD_CMD_FLAG_NO_HOLE (qemu-io write -z)
# the range must stay allocated; without it (write -z -u) the server may punch
# a hole, and ours does: base:allocation must then say zero.
qemu-io -f raw -c 'write -z 40M 1M' -c 'write -z -u 44M 1M' "$U1" >/dev/null || fail "qemu-io write -z"
qemu-io -f raw -c 'read -P 0 40M 1M' -c 'read -P 0 44M 1M' "$U1" >/dev/null ||
	fail "write-zeroes range not zero"
map=$(nbdinfo --map --json "$U1")
log "map after write-zeroes: $(tr -d '\n' <<<"$map")"
assert_eq "$(json_get '[e for e in j if e["offset"] <= 44*2**20 < e["offset"] + e["length"]][0]["type"] & 2' <<<"$map")" \
	2 "write-zeroes (may trim) range reported as zero"
# Everything else is unchanged.
cp "$D/rand.img" "$D/expect.img"
dd if=/dev/zero of="$D/expect.img" bs=1M seek=16 count=2 conv=notrunc status=none
dd if=/dev/zero of="$D/expect.img" bs=1M seek=40 count=1 conv=notrunc status=none
dd if=/dev/zero of="$D/expect.img" bs=1M seek=44 count=1 conv=notrunc status=none
nbdcopy "$U1" "$D/out2.img" || fail "nbdcopy after trim"
cmp "$D/expect.img" "$D/out2.img" || fail "volume content after trim/zero differs from expectation"

# ---------------------------------------------------------------- TCP
UT="nbd://127.0.0.1:$port/v1"
assert_eq "$(nbdinfo --size "$UT")" 67108864 "size over TCP"
assert_eq "$(nbdcopy "$UT" - | sha256sum | cut -d' ' -f1)" "$(sha256 "$D/expect.img")" "read over TCP"
fio --name=tcp --ioengine=nbd --uri="$UT" --rw=randwrite --bs=4k --size=16M --iodepth=16 \
	--verify=crc32c --verify_state_save=0 --output-format=terse >"$D/fio-tcp.out" 2>&1 ||
	{ cat "$D/fio-tcp.out" >&2; fail "fio verify over TCP"; }

# ---------------------------------------------------------------- fio verify, both backends
for io in io_uring libaio; do
	stop_tesserad
	start_tesserad "$D" --io "$io"
	grep 'ready:' "$D/tesserad.log" | tail -n1 | grepq "io $io" ||
		fail "tesserad --io $io does not report using $io: $(grep 'ready:' "$D/tesserad.log" | tail -n1)"
	# v2 was changed at 20M; the rest must be intact after a restart.
	qemu-io -f raw -c 'read -P 0x77 20M 4096' "$U2" >/dev/null || fail "--io $io: v2 lost data over restart"
	for rw in randwrite write; do
		fio --name="$io-$rw" --ioengine=nbd --uri="$U1" --rw="$rw" --bs=4k --size=64M \
			--iodepth=32 --verify=crc32c --verify_state_save=0 --output-format=json --output="$D/fio-$io-$rw.json" >"$D/fio.err" 2>&1 ||
			{ cat "$D/fio.err" >&2; fail "fio --verify=crc32c --verify_state_save=0 $rw with tesserad --io $io"; }
		iops=$(json_get 'round(j["jobs"][0]["write"]["iops"])' <"$D/fio-$io-$rw.json")
		errs=$(json_get 'j["jobs"][0]["error"]' <"$D/fio-$io-$rw.json")
		assert_eq "$errs" 0 "fio job error ($io $rw)"
		log "fio $rw verify ok with --io $io ($iops write IOPS)"
	done
	fio --name="$io-mixed" --ioengine=nbd --uri="$U1" --rw=randrw --rwmixread=50 --bsrange=4k-64k \
		--size=64M --iodepth=16 --verify=crc32c --verify_state_save=0 \
		--output-format=terse >"$D/fio-mixed.out" 2>&1 ||
		{ cat "$D/fio-mixed.out" >&2; fail "fio mixed-size randrw verify with --io $io"; }
done
assert_alive
stop_tesserad
