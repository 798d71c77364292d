#!/usr/bin/env bash
# A DR volume promoted at its site (target/<vol> "promoted") is never taken
# back as a target by its old stream when the node the stream reaches has a
# state file of it that does not say promoted: a DR node of the site that
# served the stream before the listener moved (here: the promoting node's own
# file put back as it was before the promote), or the file of a target
# deleted since, which the site server drops (session 19, drgaps).  Before
# the fix (review revE) the cluster adopted the promoted volume (its record
# says it was created for the stream), fenced its host writes and let the old
# primary, never demoted, ship over it: the write the DR acknowledged after
# the promote (0xd7) was overwritten.  Now the stream is refused as a
# promoted state file refuses it: the old primary is demoted, the DR's data
# stays.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"
require_tessera
sites_start_streaming pe
acked=$(rstat primary pe 'j["acked_seq"]')
# the primary lost; the DR's state file as an older DR node of the site has it
site_stop primary
rwait dr pe 'j["state"] == "idle"' "idle (its stream gone)" 10
state=$(sdir dr)/site/pe.state
cp "$state" "$SITE_ROOT/pe.state.before"
out=$(stsr dr replication promote pe 2>&1) || fail "promote at the DR: $out"
site_qemu_io dr pe "write -P 0xd7 0 64k" >/dev/null || fail "host write at the DR after promote"
# the stream reaches a node whose state file does not say promoted (the
# promoted volume is not attached for hosts meanwhile: a DR restart)
site_stop dr
cp "$SITE_ROOT/pe.state.before" "$state"
site_start dr
site_start primary
if [ -z "$(stsr primary --json volume show pe | json_get 'j.get("attached_node") or ""')" ]; then
	stsr primary volume attach pe >/dev/null || fail "attach pe at the old primary"
fi
site_qemu_io primary pe "write -P 0x66 0 64k" >/dev/null # may be refused once demoted
# demoted by the DR's refusal (before the fix it streamed on, never demoted,
# and its sync shipped 0x66 over the DR's 0xd7: seen in the DR's copy file)
for (( i=0; i<75; i++ )); do
	[ "$(rstat primary pe 'j["demoted"]')" = true ] && break
	sleep 0.2
done
assert_eq "$(rstat primary pe 'j["demoted"]')" "true" "the old primary demoted"
[ -n "$(stsr dr --json volume show pe | json_get 'j.get("attached_node") or ""')" ] ||
	stsr dr volume attach pe >/dev/null || fail "attach pe at the DR"
site_qemu_io dr pe "read -P 0xd7 0 64k" | grepq "read 65536" || fail "the DR's data after the demotion"
grep -q "promoted at this site" "$(sdir dr)/tesserad.log" ||
	fail "the DR did not say why it refused the stream"
site_stop primary
site_stop dr
