#!/usr/bin/env bash
# Bad input on the peer protocol (wrong magic, bad header CRC, wrong token,
# unknown volume, stale epoch, unknown handle, oversized and misaligned
# lengths, unknown opcode, truncated frames, garbage) sent to a replica node's
# --listen port while a logged workload runs through the coordinator:
# every case is refused (error reply or closed connection), the node stays
# up, the workload verifies, and the copies stay in sync and identical.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera "$CRASH_WRITER"

cl_start 3
ctsr volume create pv --size 256M --replicas 3 >/dev/null || fail "volume create"
ctsr volume attach pv --node n1 >/dev/null || fail "attach"
URI=$(cl_nbd_uri 1 pv)
WLOG=$CL_ROOT/acked.log
"$CRASH_WRITER" write "$URI" "$WLOG" --qd 8 --conns 2 --seq-base 1 --seed 5 \
	>"$CL_ROOT/writer.out" 2>&1 &
wpid=$!
track_pid "$wpid"
sleep 1
"$PY" "$TSR_SRC/tests/integration/peer_abuse.py" 127.0.0.1 "${CL_PORT[2]}" \
	"$(cat "$(cl_dir 1)/admin.token")" pv || fail "peer protocol abuse not handled"
sleep 1
kill -0 "$wpid" 2>/dev/null || { cat "$CL_ROOT/writer.out" >&2; fail "the workload failed during the abuse"; }
kill -TERM "$wpid"
reap "$wpid" || true
assert_alive "${CL_PID[2]}"
out=$("$CRASH_WRITER" verify "$URI" "$WLOG" 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "acknowledged writes not read back"; }
log "verify: ${out##*$'\n'}"
st=$(vstatus pv '",".join(c["state"] for c in j["volume"]["copies"])')
assert_eq "$st" "in-sync,in-sync,in-sync" "copy states after the abuse"
ctsr volume detach pv >/dev/null || fail "detach"
cl_stop_all
cl_assert_copies_identical pv 1 2 3
