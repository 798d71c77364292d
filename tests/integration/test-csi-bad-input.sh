#!/usr/bin/env bash
# tessera-csi under bad input (tests/csi/test_bad_input.py): garbage bytes,
# broken HTTP/2 and gRPC framing, truncated / garbage protobuf, a 10 MB
# request, missing fields, unknown and malformed ids, unknown methods,
# connections dropped mid-request: gRPC errors and Probe still answered;
# 32 concurrent CreateVolume calls for one name make one volume (checked with
# `tessera volume list --json`).  The driver must still run, and stop cleanly.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$TSR_SRC/tests/csi/csi.sh"

require_csi

cl_start 3
csi_cli_env 1
start_csi "$CL_ROOT/csi" --node-id n1 --mode all --tesserad "unix:$(cl_dir 1)/admin.sock" \
	--state-dir "$CL_ROOT/csi/state" --zone z1 --site site1
"$PY" "$TSR_SRC/tests/csi/test_bad_input.py" || fail "test_bad_input.py reported failures"
csi_assert_alive
stop_csi
