#!/usr/bin/env bash
# tessera-csi, every RPC of issue 6 (tests/csi/test_rpc.py): success and
# error paths with the CSI spec's codes, each call twice, pagination,
# capacity, topology, and ControllerGetVolume's volume condition after a
# node holding a copy of an attached 3-replica volume is SIGKILLed; then
# Probe while the driver's own tesserad is stopped (not ready) and back.
# 3 tesserad nodes on loopback (zones z1..z3), tessera-csi --mode all on n1.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$TSR_SRC/tests/csi/csi.sh"

require_csi
require_cmd nbdcopy

cl_start 3
csi_cli_env 1
start_csi "$CL_ROOT/csi" --node-id n1 --mode all --tesserad "unix:$(cl_dir 1)/admin.sock" \
	--state-dir "$CL_ROOT/csi/state" --max-volumes 17 --zone z1 --site site1
mkdir -p "$CL_ROOT/scratch"

export CSI_NODE_ID=n1 CSI_ZONE=z1 CSI_SITE=site1 CSI_MAX_VOLUMES=17 CSI_ZONES=z1,z2,z3
export CSI_TMP=$CL_ROOT/scratch TSR_VICTIM_PID=${CL_PID[3]} TSR_VICTIM_NODE=n3
NBD_SOCK=$(cl_dir 1)/nbd.sock
export TSR_ATTACH_NODE=n1 NBD_SOCK
"$PY" "$TSR_SRC/tests/csi/test_rpc.py" || fail "test_rpc.py reported failures"
if ! kill -0 "$TSR_VICTIM_PID" 2>/dev/null || [ "$(ps -o stat= -p "$TSR_VICTIM_PID" 2>/dev/null | cut -c1)" = Z ]; then
	CL_PID[3]=  # killed by the test: reap it
	forget_pid "$TSR_VICTIM_PID"
	wait "$TSR_VICTIM_PID" 2>/dev/null
fi

# Probe reports whether tesserad is reachable: n1 (the driver's tesserad)
# stopped -> not ready or an error; back -> ready again without a driver restart.
cl_stop 1
st=$(csi_probe_state)
log "Probe with n1's tesserad stopped: $st"
[ "$st" != ready ] || fail "Probe says ready while the driver's tesserad is down"
cl_start_node 1
for (( i=0; i<100; i++ )); do
	st=$(csi_probe_state)
	[ "$st" = ready ] && break
	sleep 0.2
done
[ "$st" = ready ] || fail "Probe not ready 20 s after n1's tesserad came back: $st"
log "Probe ready again after n1 restarted"

csi_assert_alive
stop_csi
