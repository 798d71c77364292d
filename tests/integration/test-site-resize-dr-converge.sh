#!/usr/bin/env bash
# A DR target whose own resize failed at step (e) after (d) (its record says
# the new size, its layout does not) must converge: the next VOLUME_OPEN of
# its source grows the layout (step (e) again, target_grow in
# engine/cluster/replication.c) before the stream is accepted.  Step (e)
# fails once at the DR through TSR_TEST_RESIZE_FAIL_FILE (a file starting
# with "once" is removed when it fires; engine/cluster/volume.c).
# 1. online: `volume resize sv --size 16M` at the primary; the DR's resize of
#    its target records 16 MiB and its (e) fails: the primary's resize is
#    refused with the DR's sentence, sv stays 8 MiB there.  The stream
#    reopens at 8 MiB: the DR grows its layout to the record's 16 MiB first
#    (its log says so).  The same resize again answers 0; writes past the old
#    end reach the DR, a new NBD connection there sees 16 MiB, the data reads
#    back, the images are equal.
# 2. detached: sv detached at the primary, resized to 24M, (e) set to fail
#    once again, attached: the first VOLUME_OPEN (24 MiB) is refused with the
#    failed (e), the source's retry grows the layout; writes past 16 MiB reach
#    the DR, 24 MiB there, the images are equal.
# Before the fix (site_open_volume asked target_grow only when the record was
# smaller than the announced size) both reopens were accepted with the
# layout at the old size: nothing past it could land at the DR.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/site.sh"

require_tessera
require_cmd nbdinfo
sites_setup
HOOK=$SITE_ROOT/fail-e
TSR_TEST_RESIZE_FAIL_FILE=$HOOK site_start dr
site_start primary
proxy_start
site_add_dr primary dr

M=$((1 << 20))
site_vol_create primary sv 8M
site_qemu_io primary sv "write -P 0x5a 0 1M" "write -P 0x5b $((8 * M - 4096)) 4k" >/dev/null ||
	fail "write sv"
out=$(stsr primary replication enable sv --to dr 2>&1) || fail "replication enable: $out"
rwait primary sv 'j["state"] == "streaming"' "streaming" 60
repl_caught_up sv 60
psize() { stsr primary --json volume show sv | json_get 'j["size"]'; }
dsize() { stsr dr --json volume show sv | json_get 'j["size"]'; }
DLOG=$(sdir dr)/tesserad.log

# ---- 1. online: the DR's (e) fails once
echo once >"$HOOK"
out=$(stsr primary volume resize sv --size 16M 2>&1) &&
	fail "the resize answered 0 although the DR's target did not grow: $out"
log "resize refused (expected): $out"
case $out in
*"whose target did not grow"*"test: $HOOK exists"*) ;;
*) fail "the refusal does not give the DR's failed step (e): $out" ;;
esac
# the whole sentence, its advice included (the DR's message was cut at
# TSR_SITE_ERRMSG_MAX: "... (retry the sam; nothing changed")
want="whose target did not grow: site dr: "
want+="'sv' is recorded at 16.0 MiB and its copies were grown, but its coordinator on "
want2="did not grow: test: $HOOK exists (retry the same resize; until then writes past "
want2+="8.0 MiB are refused); nothing changed"
case $out in
*"$want"*" $want2"*) ;;
*) fail "the refusal is not the DR's whole sentence: got '$out', want '...$want<node> $want2'" ;;
esac
[ -e "$HOOK" ] && fail "the DR's step (e) never ran (the hook file is still there)"
assert_eq "$(psize)" $((8 * M)) "sv's size at the primary after the refused resize"
assert_eq "$(dsize)" $((16 * M)) "sv's record at the DR (its step (d) ran)"
# the stream reopens (at 8 MiB): the DR's layout grows to its record first
rwait primary sv 'j["state"] == "streaming"' "streaming again" 60
repl_caught_up sv 60
for (( i=0; i<100; i++ )); do
	grep -q "target volume sv is recorded at $((16 * M)) bytes but its layout has $((8 * M))" \
		"$DLOG" && break
	sleep 0.1
done
grep -q "target volume sv is recorded at $((16 * M)) bytes but its layout has $((8 * M))" \
	"$DLOG" || log "the DR did not grow its layout at the reopen (checked below)"
assert_eq "$(nbdinfo --size "$(site_uri dr sv)")" $((16 * M)) \
	"a new connection's size at the DR after the reopen (its layout)"
out=$(stsr primary volume resize sv --size 16M 2>&1) || fail "the resize again: $out"
assert_eq "$(psize)" $((16 * M)) "sv's size at the primary"
site_qemu_io primary sv "write -P 0x6b 12M 1M" "write -P 0x6c $((16 * M - 4096)) 4k" >/dev/null ||
	fail "write past the old end at the primary"
repl_caught_up sv 60
site_qemu_io dr sv "read -P 0x5a 0 1M" "read -P 0x5b $((8 * M - 4096)) 4k" "read -P 0x6b 12M 1M" \
	"read -P 0x6c $((16 * M - 4096)) 4k" >/dev/null ||
	fail "the DR does not hold the data written before and past the old end"
assert_eq "$(site_sha dr sv)" "$(site_sha primary sv)" "sha256 of the DR volume vs the source"

# ---- 2. detached: the attach's VOLUME_OPEN grows the DR, (e) fails once,
# the source's retry grows the layout
stsr primary volume detach sv >/dev/null || fail "detach sv at the primary"
out=$(stsr primary volume resize sv --size 24M 2>&1) || fail "detached resize to 24M: $out"
echo once >"$HOOK"
stsr primary volume attach sv >/dev/null || fail "attach sv again"
for (( i=0; i<300; i++ )); do
	[ -e "$HOOK" ] || break
	sleep 0.1
done
[ -e "$HOOK" ] && fail "the DR's step (e) never ran for 24M (the hook file is still there)"
grep -q "target sv cannot grow from 16.0 MiB to 24.0 MiB: .*test: $HOOK exists" "$DLOG" ||
	fail "the DR's log does not give its failed grow to 24M"
rwait primary sv 'j["state"] == "streaming"' "streaming at 24M" 60
site_qemu_io primary sv "write -P 0x7d 20M 1M" "write -P 0x7e $((24 * M - 4096)) 4k" >/dev/null ||
	fail "write past 16M at the primary"
repl_caught_up sv 60
assert_eq "$(dsize)" $((24 * M)) "sv's record at the DR"
assert_eq "$(nbdinfo --size "$(site_uri dr sv)")" $((24 * M)) "a new connection's size at the DR"
site_qemu_io dr sv "read -P 0x5a 0 1M" "read -P 0x6b 12M 1M" "read -P 0x7d 20M 1M" \
	"read -P 0x7e $((24 * M - 4096)) 4k" >/dev/null ||
	fail "the DR does not hold the data written past 16M"
assert_eq "$(site_sha dr sv)" "$(site_sha primary sv)" "sha256 of the DR volume vs the source (24M)"
grep -c "is recorded at .* but its layout has" "$DLOG" | { read -r n; log "layout grown at a reopen: $n times"; }
stsr primary replication disable sv >/dev/null || fail "replication disable"
stsr primary volume detach sv >/dev/null || fail "detach"
site_stop primary
site_stop dr
