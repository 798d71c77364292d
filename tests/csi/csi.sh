# shellcheck shell=bash
# Helpers for the tessera-csi tests (tests/integration/test-csi-*.sh).
# Sourced after functions.sh and cluster.sh:
#   . "$(dirname "$0")/functions.sh"; . "$(dirname "$0")/cluster.sh"; . "$TSR_SRC/tests/csi/csi.sh"
#
# tessera-csi runs on a unix socket in a temp dir, against the cluster's
# tesserad processes (cluster.sh); the Python tests under tests/csi/ drive it
# with a client generated from proto/csi.proto (Debian's python3-grpcio and
# python3-grpc-tools, always /usr/bin/python3).

TESSERA_CSI=
for _c in "$TSR_BUILD/csi/tessera-csi" "$TSR_BUILD/tools/tessera-csi/tessera-csi" "$TSR_BUILD/bin/tessera-csi"; do
	[ -x "$_c" ] && { TESSERA_CSI=$_c; break; }
done
CSI_PID=
CSI_SOCK=
CSI_LOG=
exec 9>&2  # stderr for the exit-trap snippets (on_exit runs them with 2>/dev/null)

# require_csi: the driver is built (else a failure: the build is broken) and
# the Python gRPC packages are there (else a skip: the machine lacks them).
require_csi() {
	require_tessera
	[ -n "$TESSERA_CSI" ] || fail "tessera-csi is not built under $TSR_BUILD (csi/tessera-csi)"
	"$PY" -c 'import grpc, grpc_tools.protoc, google.protobuf' 2>/dev/null ||
		skip "python3-grpcio / python3-grpc-tools are not installed for $PY"
	export PYTHONPATH=$TSR_SRC/tests/csi${PYTHONPATH:+:$PYTHONPATH}
	export TSR_SRC
	export PYTHONDONTWRITEBYTECODE=1
}

# csi_cli_env I: export TESSERA_CLI, the CLI against the cluster (for the Python side).
csi_cli_env() {
	TESSERA_CLI=$("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' \
		"$TESSERA" --cluster "$(cl_addr "${1:-1}")" --token-file "$(cl_dir 1)/admin.token")
	export TESSERA_CLI
}

# start_csi DIR ARGS...: tessera-csi on DIR/csi.sock (log DIR/csi.log) with
# ARGS; waits until the socket answers Probe.  Sets CSI_PID, CSI_SOCK, CSI_LOG
# and exports CSI_ENDPOINT.
start_csi() {
	local dir=$1 i
	shift
	mkdir -p "$dir"
	CSI_SOCK=$dir/csi.sock
	CSI_LOG=$dir/csi.log
	echo "=== start $(date +%T.%N) args: $*" >>"$CSI_LOG"
	"$TESSERA_CSI" --endpoint "unix://$CSI_SOCK" "$@" >>"$CSI_LOG" 2>&1 &
	CSI_PID=$!
	track_pid "$CSI_PID"
	on_exit "case \$rc in 0|77) ;; *) { echo '----- last lines of $CSI_LOG -----'; tail -n 40 '$CSI_LOG'; } >&9 ;; esac"
	for (( i=0; i<200; i++ )); do
		kill -0 "$CSI_PID" 2>/dev/null || { tail -n 20 "$CSI_LOG" >&2; fail "tessera-csi exited during start-up (args: $*)"; }
		if [ -S "$CSI_SOCK" ] && csi_probe; then
			export CSI_ENDPOINT=$CSI_SOCK
			log "tessera-csi up on $CSI_SOCK (pid $CSI_PID)"
			return 0
		fi
		sleep 0.1
	done
	fail "tessera-csi did not answer Probe within 20 s"
}

# csi_probe: Probe succeeds on $CSI_SOCK.
csi_probe() {
	CSI_ENDPOINT=$CSI_SOCK "$PY" - <<'PYEOF' >/dev/null 2>&1
import sys
from csilib import Client, pb
resp, code, det = Client(timeout=5).call("identity.Probe", pb.ProbeRequest())
sys.exit(0 if resp is not None else 1)
PYEOF
}

# csi_probe_state: prints what Probe says on $CSI_SOCK: "ready", "not-ready"
# (ready=false) or the gRPC status code name.
csi_probe_state() {
	CSI_ENDPOINT=$CSI_SOCK "$PY" - <<'PYEOF'
from csilib import Client, pb
resp, code, det = Client(timeout=10).call("identity.Probe", pb.ProbeRequest())
if resp is None:
    print(code.name)
else:
    print("ready" if not resp.HasField("ready") or resp.ready.value else "not-ready")
PYEOF
}

# stop_csi: SIGTERM; it must exit 0 within 15 s and remove nothing it should keep.
stop_csi() {
	local i rc
	kill -TERM "$CSI_PID" 2>/dev/null || fail "tessera-csi ($CSI_PID) is not running"
	for (( i=0; i<150; i++ )); do
		kill -0 "$CSI_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$CSI_PID" 2>/dev/null && fail "tessera-csi did not exit within 15 s of SIGTERM"
	reap "$CSI_PID" && rc=0 || rc=$?
	[ "$rc" = 0 ] || fail "tessera-csi exited with status $rc on SIGTERM (want 0)"
	CSI_PID=
}

# csi_assert_alive: the driver is still running.
csi_assert_alive() {
	kill -0 "$CSI_PID" 2>/dev/null || { tail -n 30 "$CSI_LOG" >&2; fail "tessera-csi ($CSI_PID) died"; }
}

# procs_under DIR: "pid comm" of every process (but this shell) whose command
# line mentions DIR: what a test started there and left running.
procs_under() {
	local p c
	for p in /proc/[0-9]*; do
		[ "${p#/proc/}" = "$$" ] && continue
		[ "${p#/proc/}" = "$BASHPID" ] && continue
		c=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
		case $c in *"$1"*) echo "${p#/proc/} $(cat "$p/comm" 2>/dev/null): $c" ;; esac
	done
}

# mounts_under DIR: mount points at or below DIR, deepest first.
mounts_under() {
	awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# loops_under DIR: loop devices whose backing file is below DIR.
loops_under() {
	losetup -a -n -O NAME,BACK-FILE 2>/dev/null | awk -v d="$1" 'index($2, d "/") == 1 { print $1 }'
}

# csi_node_cleanup DIR: after a failure, undo what the node plugin left below
# DIR: unmount (deepest first; FUSE with fusermount3), detach loop devices,
# kill the nbdfuse processes serving files there (by pid).
csi_node_cleanup() {
	local d=$1 m p
	for m in $(mounts_under "$d"); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	for p in $(loops_under "$d"); do losetup -d "$p"; done
	for m in $(mounts_under "$d"); do fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m"; done
	for p in $(procs_under "$d" | awk '$2 ~ /^nbdfuse/ { print $1 }'); do kill -9 "$p"; done
	return 0
}
