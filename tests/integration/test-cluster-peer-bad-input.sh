#!/usr/bin/env bash
# Bad input on the peer protocol (wrong magic, bad header CRC, wrong token,
# unknown volume, stale epoch, unknown handle, oversized and misaligned
# lengths, unknown opcode, truncated frames, garbage) sent to a replica node's
# --listen port while a verified workload runs through the coordinator:
# every case is refused (error reply or closed connection), the node stays
# up, the workload verifies, and the copies stay in sync and identical.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd fio

cl_start 3
ctsr volume create pv --size 256M --replicas 3 >/dev/null || fail "volume create"
ctsr volume attach pv --node n1 >/dev/null || fail "attach"
URI=$(cl_nbd_uri 1 pv)
FIO=(--name=pv --ioengine=nbd "--uri=$URI" --bs=4k --rw=randwrite --size=64M --iodepth=8
	--verify=crc32c --verify_fatal=1 --randseed=5)
fio "${FIO[@]}" --do_verify=0 --time_based --runtime=6 --output="$CL_ROOT/fio.txt" &
fpid=$!
track_pid "$fpid"
sleep 1
"$PY" "$TSR_SRC/tests/integration/peer_abuse.py" 127.0.0.1 "${CL_PORT[2]}" \
	"$(cat "$(cl_dir 1)/admin.token")" pv || fail "peer protocol abuse not handled"
reap "$fpid" || { cat "$CL_ROOT/fio.txt" >&2; fail "workload failed during the abuse"; }
assert_alive "${CL_PID[2]}"
st=$(vstatus pv '",".join(c["state"] for c in j["volume"]["copies"])')
assert_eq "$st" "in-sync,in-sync,in-sync" "copy states after the abuse"
ctsr volume detach pv >/dev/null || fail "detach"
cl_stop_all
cl_assert_copies_identical pv 1 2 3
