#!/usr/bin/env bash
# The main job on one machine: set up (Debian packages if missing), build,
# then `tessera demo`: start a 3-node cluster on loopback (three tesserad
# processes, one data dir each, zones z1-z3), create a 3-replica volume,
# attach it on node n1 and export it over NBD there, benchmark it with a live
# progress line, print the figures, the volume's and the cluster's status and
# how to reach the volume with nbdinfo, qemu-img and fio, and shut the nodes
# down cleanly.  Arguments go to `tessera demo` (--keep keeps the cluster
# serving; --standalone runs the single-node demo).
#
#   ./scripts/demo.sh [--keep] [--standalone]      (as root)
#
# BUILD_DIR (default build) is the build tree to use.
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD_DIR=${BUILD_DIR:-build}
echo "demo: setting up and building (first run takes a minute)..." >&2
if ! out=$(./scripts/setup.sh 2>&1); then
	printf '%s\n' "$out" >&2
	echo "demo: set-up or build failed (output above)" >&2
	exit 1
fi
exec "$BUILD_DIR/tools/tessera/tessera" demo "$@"
