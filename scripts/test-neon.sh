#!/usr/bin/env bash
# Cross-build the ferro-kernels tests for aarch64 and run them under qemu (NEON path).
# Installs the toolchain pieces idempotently (Debian/Ubuntu, needs root or sudo).
# Usage: scripts/test-neon.sh [extra cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
dpkg -s rustc-web >/dev/null 2>&1 || need+=(rustc-web)
dpkg -s libstd-rust-web-dev:arm64 >/dev/null 2>&1 || need+=(libstd-rust-web-dev:arm64)
dpkg -s gcc-aarch64-linux-gnu >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
dpkg -s libc6-dev-arm64-cross >/dev/null 2>&1 || need+=(libc6-dev-arm64-cross)
dpkg -s qemu-user-static >/dev/null 2>&1 || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then $SUDO dpkg --add-architecture arm64; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# Debian's rustc (it ships the aarch64 std); a separate target dir keeps its artifacts apart
# from the host toolchain's.
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/neon"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
# The model tests need the models; they run on the host build. Under qemu they would be slow.
export FERRO_SKIP_MODEL_TESTS="${FERRO_SKIP_MODEL_TESTS:-1}"
"$RUSTC" --version
cargo test -p ferro-kernels --target aarch64-unknown-linux-gnu "$@"
