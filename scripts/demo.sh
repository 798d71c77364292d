#!/usr/bin/env bash
# The main job on one machine: set up (Debian packages if missing), build,
# then `tessera demo`: start tesserad on a fresh data dir, create a volume,
# export it over NBD, benchmark it with a live progress line, print the
# figures and how to reach the volume with nbdinfo, qemu-img and fio, and shut
# down cleanly.  Arguments go to `tessera demo` (--keep keeps it serving).
#
#   sudo ./scripts/demo.sh [--keep]
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
