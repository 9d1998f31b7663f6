#!/usr/bin/env bash
# Cross-build the ferro-kernels tests for aarch64 and check the NEON kernels under qemu.
#
# qemu-user hangs on any aarch64 binary that creates a thread (seen with qemu 7.2 and 10.0), and
# libtest, proptest and rayon all spawn threads. So every kernels test is only BUILT for aarch64
# (proving the NEON code compiles), and the one thread-free binary, tests/neon_single_thread.rs
# (`harness = false`), is RUN under qemu: once on qemu's default CPU (with dotprod: the
# `neon-dotprod` / `neon+dotprod` tables) and once on a Cortex-A72 (Armv8.0, no dotprod: the plain
# `neon` tables). Each run sits under `timeout` so a hang can never stall CI.
# Installs the toolchain pieces idempotently (Debian/Ubuntu, needs root or sudo).
# Usage: scripts/test-neon.sh [extra cargo args...]
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
export FERRO_SKIP_MODEL_TESTS="${FERRO_SKIP_MODEL_TESTS:-1}"
"$RUSTC" --version

# The workspace's rust-version may be newer than Debian's rustc; the kernels crate builds on it.
args=(-p ferro-kernels --target aarch64-unknown-linux-gnu --ignore-rust-version)

echo "== building every ferro-kernels test for aarch64 (not run: they spawn threads)"
cargo test "${args[@]}" --no-run "$@"

for cpu in max cortex-a72; do
    echo "== neon_single_thread under qemu -cpu $cpu"
    QEMU_CPU="$cpu" timeout --kill-after=10 600 cargo test "${args[@]}" --test neon_single_thread "$@"
done
