#!/usr/bin/env bash
# A DR target's failed attach is kept for the next VOLUME_OPEN of its name
# (cluster_attach_target tells it once, within ATTACH_FAIL_KEEP_MS, 5 s); when
# another attach of that volume begins first (attach_prepare), the kept
# failure is stale and dropped, so the source's next VOLUME_OPEN attaches
# anew instead of being told it (session 16 note N3; engine/cluster/attach.c
# attach_failed_drop(c, name, true)).
# DR: dr-n1 alone, behind the proxy; sv streams to a replicas:1 target.
# dr-n1 restarted with the hook file TSR_TEST_ATTACH_TARGET_FAIL_FILE: the
# source's VOLUME_OPEN starts the target's attach, whose open waits while the
# file exists; the link is cut, the file removed: the open fails and is kept
# (no VOLUME_OPEN comes).  An operator's `volume attach sv` then `volume
# detach sv` at the DR (another attach begins), the link back at once:
# asserted, dr-n1 logs the failure forgotten "another attach of it begins",
# the source is never told the failed attach (no "site: target volume sv:
# cannot attach"), sv streams again, sha256 equal at both sites.
# Without the drop: "the source was told the failed attach ...".
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera
sites_setup
HOOK=$SITE_ROOT/attach-fail
export TSR_TEST_ATTACH_TARGET_FAIL_FILE=$HOOK
site_start dr
site_start primary
proxy_start
site_add_dr primary dr
DLOG=$(sdir dr)/tesserad.log

site_vol_create primary sv 4M
site_qemu_io primary sv "write -P 0x5a 0 1M" >/dev/null || fail "write sv"
out=$(stsr primary replication enable sv --to dr --target-layout replicas:1 2>&1) ||
	fail "replication enable sv: $out"
rwait primary sv 'j["state"] == "streaming"' "streaming" 30
repl_caught_up sv 30

site_stop dr
touch "$HOOK"
from=$(( $(wc -l <"$DLOG") + 1 ))
site_start_nowait dr
file_wait_from "$DLOG" "$from" "test hook .*: the open of DR target sv waits" \
	"dr-n1 did not start attaching sv (the hook) in 30 s"
px cut
rm -f "$HOOK"
file_wait_from "$DLOG" "$from" "cluster: cannot attach 'sv'" \
	"dr-n1's attach of sv did not fail in 30 s"
log "the target's attach failed, kept: $(tail -n +"$from" "$DLOG" |
	grep -m1 "cluster: cannot attach 'sv'" | cut -c1-140)"
# the written meanwhile part: shipped once sv is attached again
site_qemu_io primary sv "write -P 0x6b $((2 << 20)) 1M" >/dev/null || fail "write sv (2)"
out=$(stsr dr volume attach sv 2>&1) || fail "volume attach sv at the DR: $out"
out=$(stsr dr volume detach sv 2>&1) || fail "volume detach sv at the DR: $out"
px pass
rwait primary sv 'j["state"] == "streaming"' "streaming again" 30
repl_caught_up sv 30
if tail -n +"$from" "$DLOG" | grep -m1 "site: target volume sv: cannot attach"; then
	fail "the source was told the failed attach that another attach of sv made stale"
fi
tail -n +"$from" "$DLOG" | grepq "failed attach of DR target sv .* is forgotten (another attach of it begins)" ||
	fail "dr-n1 did not forget the failed attach when another attach of sv began"
assert_eq "$(site_sha dr sv)" "$(site_sha primary sv)" "sha256 of sv at the DR vs the source"
site_stop primary
site_stop dr
