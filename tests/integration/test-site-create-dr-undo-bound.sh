#!/usr/bin/env bash
# A failed DR create's undo deletes the copies it made; each delete on another
# node is bounded by the peer timeout (cluster_peer_call_ms: --peer-timeout,
# 2000 ms here), not by CLUSTER_COPY_TIMEOUT_MS (30 s), since c9393e1
# (finding 4), so a node that does not answer holds the refusal back a peer
# timeout per copy.
#
# DR: dr-n1 (listener, meta), dr-n2, dr-n3, equal capacity; the target of V
# is replicas:3, placed dr-n1 dr-n2 dr-n3 (by id).
#  1. dr-n3 frozen (SIGSTOP) before `replication enable V`: the DR's create
#     makes dr-n1's copy (its store), dr-n2's (answered), and its call to
#     dr-n3 waits (dr-n3's kernel takes the request: unread bytes on a socket
#     of dr-n3's port, the sign that dr-n2 has answered).
#  2. dr-n2 frozen, dr-n3 SIGKILLed: the call to dr-n3 fails at once, the
#     create fails and its undo sends dr-n2 the delete of its copy, which no
#     one answers.
# Asserted: within 10 s of the kill dr-n1 logs that the copy on dr-n2 may be
# left ("it may be left": the delete gave up), and the refusal then names
# dr-n2 (not deleted, left to the leftover sweep).  With the 30 s bound
# (tc_call's delete at CLUSTER_COPY_TIMEOUT_MS, as before c9393e1) it fails:
# no such line within 10 s.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/site.sh"

require_tessera
require_cmd ss
sites_setup
site_start dr
DLOG=$(sdir dr)/tesserad.log
declare -A NPID NPORT
for n in 2 3; do
	NPORT[$n]=$(free_ports 1)
	start_tesserad "$SITE_ROOT/dr$n" --listen "127.0.0.1:${NPORT[$n]}" --node-id dr-n$n \
		--zone z$n --join "127.0.0.1:${SITE_PORT[dr]}" --token-file "$(sdir dr)/admin.token" \
		--peer-timeout 2000 --site dr
	NPID[$n]=$TSRD_PID
done
dr_alive 3
site_start primary
proxy_start
site_add_dr primary dr
V=ub
site_vol_create primary $V 4M
site_qemu_io primary $V "write -P 0x3c 0 1M" >/dev/null || fail "write $V"

# unread N: bytes waiting unread on the sockets of dr-nN's admin port
unread() {
	ss -tnH state established "( sport = :${NPORT[$1]} )" 2>/dev/null |
		awk '{ n += $1 } END { print n + 0 }'
}

# ---- 1. dr-n3 frozen; the create's call to it waits
freeze_pids "${NPID[3]}" || fail "dr-n3 (pid ${NPID[3]}) not stopped"
on_exit "kill -CONT ${NPID[2]} ${NPID[3]} 2>/dev/null"
out=$(stsr primary replication enable $V --to dr --target-layout replicas:3 2>&1) ||
	fail "replication enable $V: $out"
file_wait "$DLOG" "site: creating target volume $V (replicas:3, 4.0 MiB, on dr-n1 dr-n2 dr-n3)" 300 ||
	fail "the DR did not create $V on dr-n1 dr-n2 dr-n3: $(grep "creating target volume $V" "$DLOG")"
for (( i=0; i<300; i++ )); do
	[ "$(unread 3)" -gt 0 ] && break
	sleep 0.05
done
[ "$(unread 3)" -gt 0 ] || fail "no call reached frozen dr-n3 within 15 s (dr-n2's create not answered?)"
log "dr-n1's create call waits on frozen dr-n3 ($(unread 3) bytes unread): dr-n2 has answered"

# ---- 2. dr-n2 frozen, dr-n3 killed: the undo's delete on dr-n2 waits
freeze_pids "${NPID[2]}" || fail "dr-n2 (pid ${NPID[2]}) not stopped"
kill -9 "${NPID[3]}"
reap "${NPID[3]}" 2>/dev/null
t0=$SECONDS
log "dr-n2 frozen, dr-n3 killed: the create fails, its undo deletes dr-n2's copy"
file_wait "$DLOG" "undo create of target $V: the copy on dr-n2: .*(it may be left" 100 ||
	fail "the undo's delete on frozen dr-n2 not given up within 10 s of the failure" \
		"(bound 30 s instead of the peer timeout?): $(grep "target.* $V" "$DLOG" | tail -3)"
log "the undo gave dr-n2's copy up after about $((SECONDS - t0)) s:" \
	"$(grep -m1 "undo create of target $V: the copy on dr-n2" "$DLOG" | sed 's/.*WARN //')"
grep -q "cannot reach node dr-n3 .* to create the copy of '$V'" "$DLOG" ||
	fail "the create did not fail on dr-n3: $(grep "target volume $V" "$DLOG" | tail -3)"
# the refusal kept for the source's next open names the copy left
file_wait "$(sdir primary)/tesserad.log" "left to the leftover sweep: dr-n2: no answer" 100 ||
	fail "the source was not told that dr-n2's copy of $V is left:" \
		"$(grep "cannot create target $V" "$(sdir primary)/tesserad.log" | tail -1)"

kill -CONT "${NPID[2]}"
site_stop primary
stop_tesserad "${NPID[2]}"
site_stop dr
log "ok"
