#!/usr/bin/env bash
# Set up a Debian 12 machine for Tessera and build it.
#
#   ./scripts/setup.sh [--no-build]
#
# Installs the Debian packages the build, the tests and the demo need, but
# only when one is missing (dpkg-query), then configures and builds into
# build/ (BUILD_DIR to change it; extra cmake options in CMAKE_ARGS).
# Installing needs root; an already complete machine does not.
set -euo pipefail
cd "$(dirname "$0")/.."
# grepq: `grep -q` at the end of a pipeline without cutting the producer off.
# shellcheck source=tests/integration/grepq.sh
. tests/integration/grepq.sh

PKGS=(
	build-essential cmake pkg-config clang-14 libclang-rt-14-dev lld
	liburing-dev libaio-dev libisal-dev libprotobuf-c-dev protobuf-c-compiler libev-dev
	libssl-dev libcmocka-dev libnghttp2-dev libsqlite3-dev libjansson-dev
	liblz4-dev libzstd-dev libnbd-dev libnbd-bin nbdkit qemu-utils fio fuse3 e2fsprogs iproute2 jq python3
	python3-grpcio python3-grpc-tools xfsprogs util-linux mount strace
)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grepq 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} )); then
	echo "setup: installing ${missing[*]}" >&2
	if [ "$(id -u)" != 0 ]; then
		echo "setup: missing Debian packages: ${missing[*]}; run as root (sudo $0)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "${1:-}" = --no-build ] && exit 0

BUILD_DIR=${BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTSR_WERROR=ON ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
