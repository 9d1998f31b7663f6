#!/usr/bin/env bash
# Runs the GPU shader tests. Without a GPU they run on lavapipe (Mesa's Vulkan on the CPU),
# which this script installs on Debian/Ubuntu when no Vulkan driver is present.
# FERRO_SKIP_GPU_TESTS=1 lets the tests pass on a machine with no adapter at all.
set -euo pipefail
cd "$(dirname "$0")/.."

have_vulkan() {
    ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' &&
        ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1
}

if ! have_vulkan && [ "${FERRO_SKIP_GPU_TESTS:-0}" != 1 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "test-gpu: installing mesa-vulkan-drivers libvulkan1 (lavapipe)" >&2
        SUDO=""
        if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1
    else
        echo "test-gpu: no Vulkan driver and no apt-get; install one or set FERRO_SKIP_GPU_TESTS=1" >&2
        exit 1
    fi
fi

exec cargo test --release -p ferro-shaders "$@"
