#!/usr/bin/env bash
# A clean detach of a volume that ships to a DR site stops its replication
# source only once the site has acknowledged what the source's log holds,
# bounded by the peer timeout (engine/cluster/attach.c detach_drain_start,
# replication.c repl_unshipped).  The primary reaches the DR through
# site_proxy.py; the primary runs --peer-timeout 3000 (the drain's bound).
# 1. dv streams; the link is cut; 256 KiB of 0x5a are written and
#    acknowledged; `volume detach dv` runs while the link is down, and the
#    link comes back during its wait: once the detach has answered, the DR's
#    copy holds the 0x5a bytes (before: the source stopped at once, its log
#    dropped, and the DR never got them).
# 2. the bound: dv attached again (its initial copy), the link cut, 0x6b
#    written, `volume detach dv` answers after the bound and says the writes
#    are not yet at site dr and that the next attach copies them; the link
#    back and dv attached again, the DR has the 0x6b bytes.
# 3. tesserad stop with the link cut and 64 KiB not at the DR: the stop's
#    detach waits for the ACKs in place (the peer timeout at most, for all
#    its detaches), then logs what the DR lacks.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera
M=$((1024 * 1024))
sites_setup
site_start dr
site_start primary --peer-timeout 3000
proxy_start
site_add_dr primary dr
PLOG=$(sdir primary)/tesserad.log
site_vol_create primary dv 4M
site_qemu_io primary dv "write -P 0x3c 0 1M" >/dev/null || fail "write dv"
out=$(stsr primary replication enable dv --to dr --target-layout replicas:1 2>&1) || fail "$out"
rwait primary dv 'j["state"] == "streaming"' "streaming" 30
repl_caught_up dv 30

# ---- 1. the detach waits for the DR's ACKs ----------------------------------
px cut
site_qemu_io primary dv "write -P 0x5a $M 256k" >/dev/null || fail "1: write 0x5a"
from=$(( $(wc -l <"$PLOG") + 1 ))
stsr primary volume detach dv >"$SITE_ROOT/detach1.out" 2>&1 &
DET=$!
track_pid "$DET"
# the detach waits (new) or has answered already (before the fix)
for (( i=0; i<100; i++ )); do
	tail -n +"$from" "$PLOG" | grepq "detach dv: waiting up to .* for site dr" && break
	kill -0 "$DET" 2>/dev/null || break
	sleep 0.05
done
px pass
wait "$DET" || fail "1: volume detach dv: $(cat "$SITE_ROOT/detach1.out")"
forget_pid "$DET"
out=$(cat "$SITE_ROOT/detach1.out")
log "1: detach answered: $out"
log "1: $(tail -n +"$from" "$PLOG" | grep -m1 "waiting up to .* for site dr" || true)"
echo "$out" | grepq "not yet at site" && fail "1: the DR came back within the bound, yet: $out"
site_qemu_io dr dv "read -P 0x5a $M 256k" >/dev/null ||
	fail "1: the 256 KiB acknowledged before the detach are not at the DR once it answered"
grepq "detach dv epoch [0-9]* from .* (clean)$" "$PLOG" || fail "1: the detach was not logged clean"
log "1: the writes acknowledged before the detach were at the DR when it answered"

# ---- 2. the bound: the DR stays away ---------------------------------------
stsr primary volume attach dv >/dev/null || fail "2: volume attach dv"
repl_caught_up dv 30
px cut
site_qemu_io primary dv "write -P 0x6b $((2 * M)) 64k" >/dev/null || fail "2: write 0x6b"
t0=$(date +%s%N)
out=$(stsr primary volume detach dv 2>&1) || fail "2: volume detach dv: $out"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
log "2: detach answered after $ms ms: $out"
echo "$out" | grepq "write.* not yet at site 'dr' when its source stopped: the next attach copies them" ||
	fail "2: the detach did not say what the DR lacks: $out"
grepq "detach dv epoch [0-9]* from .* (clean); [0-9]* write.* not yet at site 'dr'" "$PLOG" ||
	fail "2: the detach's log line does not say what the DR lacks"
px pass
stsr primary volume attach dv >/dev/null || fail "2: volume attach dv again"
repl_caught_up dv 30
site_qemu_io dr dv "read -P 0x6b $((2 * M)) 64k" >/dev/null ||
	fail "2: the next attach did not copy the writes the DR lacked"
log "2: bounded at $ms ms (peer timeout 3000), said so; the next attach copied them"

# ---- 3. tesserad stop: the same wait, in place, one bound for the stop -----
repl_caught_up dv 30
px cut
site_qemu_io primary dv "write -P 0x7c $((3 * M)) 64k" >/dev/null || fail "3: write 0x7c"
from=$(( $(wc -l <"$PLOG") + 1 ))
t0=$(date +%s%N)
site_stop primary
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
tail -n +"$from" "$PLOG" | grepq "detach dv: waiting up to [0-9]* ms for site dr to acknowledge 1 write " ||
	fail "3: the stop did not wait for the DR's ACKs"
tail -n +"$from" "$PLOG" |
	grepq "detach dv epoch [0-9]* from .* (clean); 1 write (65536 bytes) not yet at site 'dr'" ||
	fail "3: the stop's detach does not say what the DR lacks"
log "3: tesserad stop took $ms ms with the DR away (bound: the peer timeout, 3000), said so"
log "PASS"
