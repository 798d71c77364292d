#!/usr/bin/env bash
# Online resize of a volume that replicates to another site: the DR target
# grows first.  Primary and DR sites (one node each), sv 8 MiB attached and
# streaming:
#  1. the link cut (the source reconnecting): `volume resize sv --size 16M`
#     is refused ("the DR site must grow first; the link is down ...
#     nothing changed"): sv 8 MiB at both sites (record, a new connection);
#  2. the link back, a verified writer (fio --verify) on [0, 8M) of sv: the
#     resize to 16M is accepted while it runs (the source reopens its stream
#     announcing 16 MiB and the DR grows its attached target before it
#     answers); fio passes; both records and new connections at both sites
#     say 16 MiB; a write past the old end reaches the DR (read back there),
#     the two images are equal and the DR consistent;
#  2b. two members of a consistency group (4 MiB) grown while attached
#     (12M, 8M): written past their old ends, equal at the DR;
#  3. (root + loop device) the DR's data dir on a full 256 MiB ext4: a resize
#     to 64G is refused naming the DR node ("node dr-n1: no space ...
#     nothing changed"), both sites keep 16 MiB, and the stream goes on.
# On the code before: step 2 was refused ("replicates to site 'dr'"); with
# the DR not grown first the write past 8M would be refused by the target
# (ENOSPC) and the stream broken.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera
require_cmd nbdinfo fio
FULL=0
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && [ -e /dev/loop-control ] &&
	losetup -f >/dev/null 2>&1; then
	FULL=1
fi
sites_setup
if [ "$FULL" = 1 ]; then
	fullfs_mount DRFS 256M "$(sdir dr)"
else
	log "not root or no loop device: the DR's full file system refusal (step 3) is skipped"
fi
site_start dr
site_start primary
proxy_start
site_add_dr primary dr
site_vol_create primary sv 8M
site_qemu_io primary sv "write -P 0x5a 0 1M" >/dev/null || fail "write sv"
out=$(stsr primary replication enable sv --to dr 2>&1) || fail "replication enable: $out"
rwait primary sv 'j["state"] == "streaming"' "streaming" 60
repl_caught_up sv 60

M=$((1 << 20))
psize() { stsr primary --json volume show sv | json_get 'j["size"]'; }
dsize() { stsr dr --json volume show sv | json_get 'j["size"]'; }

# ---- 1. link down: refused, nothing changed on either side
px cut
rwait primary sv 'j["state"] != "streaming"' "the source sees the link down" 30
expect_fail 1 "the DR site must grow first; the link is down.*nothing changed" \
	stsr primary volume resize sv --size 16M
assert_eq "$(psize)" $((8 * M)) "sv's size at the primary after the refusal"
assert_eq "$(nbdinfo --size "$(site_uri primary sv)")" $((8 * M)) "a new connection's size (primary)"
assert_eq "$(dsize)" $((8 * M)) "sv's size at the DR after the refusal"
px pass
repl_caught_up sv 60
assert_eq "$(nbdinfo --size "$(site_uri dr sv)")" $((8 * M)) "a new connection's size (DR)"

# ---- 2. resize while streaming, a verified writer running on the old size
fio --name=w --ioengine=nbd "--uri=$(site_uri primary sv)" --bs=4k --direct=1 --rw=randwrite \
	--offset=1M --size=7M --iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 \
	--randseed=5 --loops=12 --verify_state_save=0 --output="$SITE_ROOT/fio.txt" &
fpid=$!
track_pid "$fpid"
sleep 0.5
out=$(stsr primary volume resize sv --size 16M 2>&1) || fail "resize of replicating sv: $out"
kill -0 "$fpid" 2>/dev/null && running=yes || running=no
log "resize answered (fio still running: $running): $(printf '%s' "$out" | head -n1)"
reap "$fpid" || { cat "$SITE_ROOT/fio.txt" >&2; fail "fio --verify failed across the resize"; }
grep -q "err= 0" "$SITE_ROOT/fio.txt" || { cat "$SITE_ROOT/fio.txt" >&2; fail "fio reported errors"; }
assert_eq "$(psize)" $((16 * M)) "sv's size at the primary"
assert_eq "$(dsize)" $((16 * M)) "sv's size at the DR"
assert_eq "$(nbdinfo --size "$(site_uri primary sv)")" $((16 * M)) "a new connection's size (primary)"
grep -q "site source sv -> .*the target took the new size, $((16 * M)) bytes" \
	"$(sdir primary)/tesserad.log" || fail "the primary's log does not say the target grew"
grep -q "site: target volume sv grown from $((8 * M)) to $((16 * M)) bytes" \
	"$(sdir dr)/tesserad.log" || fail "the DR's log does not say its target grew"
site_qemu_io primary sv "write -P 0x6b 12M 1M" "write -P 0x6c $((16 * M - 4096)) 4k" >/dev/null ||
	fail "write past the old end at the primary"
repl_caught_up sv 60
assert_eq "$(nbdinfo --size "$(site_uri dr sv)")" $((16 * M)) "a new connection's size (DR)"
site_qemu_io dr sv "read -P 0x6b 12M 1M" "read -P 0x6c $((16 * M - 4096)) 4k" "read -P 0x5a 0 1M" \
	>/dev/null || fail "the DR does not hold the writes past the old end"
src=$(site_sha primary sv) || fail "read the source"
dst=$(site_sha dr sv) || fail "read the DR volume"
assert_eq "$dst" "$src" "sha256 of the DR volume vs the source"
assert_eq "$(rstat dr sv 'j["consistent"]')" true "the DR is consistent"

# ---- 2b. consistency group members: each grows the same way
for v in g0 g1; do
	stsr primary volume create "$v" --size 4M --replicas 1 >/dev/null || fail "volume create $v"
	out=$(stsr primary replication enable "$v" --to dr --group app 2>&1) ||
		fail "replication enable $v: $out"
	stsr primary volume attach "$v" >/dev/null || fail "volume attach $v"
done
for v in g0 g1; do
	rwait primary "$v" 'j["state"] == "streaming" and j["group"] == "app"' "streaming" 60
	site_qemu_io primary "$v" "write -P 0x31 0 1M" >/dev/null || fail "write $v"
done
stsr primary volume resize g0 --size 12M >/dev/null || fail "resize of group member g0"
stsr primary volume resize g1 --size 8M >/dev/null || fail "resize of group member g1"
site_qemu_io primary g0 "write -P 0x32 10M 1M" >/dev/null || fail "write g0 past its old end"
site_qemu_io primary g1 "write -P 0x33 6M 1M" >/dev/null || fail "write g1 past its old end"
for v in g0 g1; do
	repl_caught_up "$v" 60
	assert_eq "$(site_sha dr "$v")" "$(site_sha primary "$v")" "sha256 of $v at the DR"
done
assert_eq "$(stsr dr --json volume show g0 | json_get 'j["size"]') $(stsr dr --json volume show g1 | json_get 'j["size"]')" \
	"$((12 * M)) $((8 * M))" "the group members' sizes at the DR"
rwait dr g0 'j["consistent"] and j["group"] == "app"' "g0 consistent in its group at the DR" 30
for v in g0 g1; do stsr primary replication disable "$v" >/dev/null || fail "disable $v"; done

# ---- 3. the DR cannot grow (its file system full): refused naming the DR
# node, nothing changed at either site, the stream goes on
if [ "$FULL" = 1 ]; then
	fill_fs "$DRFS/ballast"
	expect_fail 1 "site 'dr', whose target did not grow: .*node dr-n1.*no space.*nothing changed" \
		stsr primary volume resize sv --size 64G
	assert_eq "$(psize)" $((16 * M)) "sv's size at the primary after the DR's refusal"
	assert_eq "$(nbdinfo --size "$(site_uri primary sv)")" $((16 * M)) \
		"a new connection's size (primary) after the DR's refusal"
	assert_eq "$(dsize)" $((16 * M)) "sv's size at the DR after its refusal"
	rm -f "$DRFS/ballast"
	sync
	site_qemu_io primary sv "write -P 0x6d 2M 1M" >/dev/null || fail "write after the refusal"
	repl_caught_up sv 60
	assert_eq "$(site_sha dr sv)" "$(site_sha primary sv)" "sha256 at the DR after the refusal"
fi
stsr primary replication disable sv >/dev/null || fail "replication disable"
site_stop primary
site_stop dr
