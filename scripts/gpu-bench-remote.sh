#!/usr/bin/env bash
# `ferro bench --device gpu` on a machine with an NVIDIA GPU (issue 7's speed table).
#
# Two halves, both run from the repository root:
#
#   scripts/gpu-bench-remote.sh prepare   # here: fills .gpu/ (git-ignored) with what travels
#   scripts/gpu-bench-remote.sh run       # there: Vulkan loader, 8b models, benches -> $OUT
#
# `prepare` builds the release binary and puts into .gpu/:
#   ferro             the binary, stripped (~15 MiB)
#   tok/models/smollm2-135m-instruct.gguf  SmolLM2's metadata without tensors: the tokenizer
#                     source of `ferro gen-model --arch llama` (FERRO_HOME=.gpu/tok), ~2 MiB
#   parts/<model>.gguf.part-NN  the two test models cut in 30 MiB pieces, with <model>.sha256
# The device machine takes 64 MiB a call (tree ~1.5 MiB, .gl 0.4, binary 15, tokenizer ~2), so
# the test models (94 and 241 MiB) can only go one 30 MiB piece per call (carry e.g.
# [".gl", ".gpu/ferro", ".gpu/tok", ".gpu/parts/smollm2-135m-instruct.gguf.part-00",
# ".gpu/parts/smollm2-135m-instruct.sha256"]); pieces carried by earlier calls stay in the
# checkout there only while the machine is still warm (30 s after a call). The 8b models need
# no transfer: one call with [".gl", ".gpu/ferro", ".gpu/tok"] benches them.
# `run` benches every test model whose pieces are all there and checks its sha256; it always
# generates and benches the two 8b synthetic models (Q4_0, Q4_K_M), which need no transfer.
#
# `run` writes $OUT/gpu-bench.md (the tables, llama-bench's columns plus the bound) and prints the
# adapter, `nvidia-smi`'s card name and the bandwidth bound used (H100 PCIe 2.0 TB/s, H100 SXM
# 3.35 TB/s, H200 4.8 TB/s; FERRO_GPU_GBS overrides). Environment: FERRO_BENCH_ARGS (default
# "-p 512 -n 128 -r 3"), FERRO_BENCH_SKIP_GEN=1 to bench only the test models,
# FERRO_BENCH_SKIP_PPL=1 to skip their GPU perplexity on GPL-3.
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    local home=${FERRO_HOME:-$HOME/.cache/ferro}
    mkdir -p .gpu/tok/models .gpu/parts
    cargo build --release -p ferro-cli --bin ferro
    strip -o .gpu/ferro target/release/ferro
    cargo build --release -q -p ferro-gguf --example metadata_only
    for m in smollm2-135m-instruct gemma3-270m; do
        local src="$home/models/$m.gguf"
        [ -f "$src" ] || target/release/ferro pull "$m"
        # gen-model's llama takes SmolLM2's tokenizer; gemma3's (8 MiB) is not needed here.
        [ "$m" = gemma3-270m ] || target/release/examples/metadata_only "$src" ".gpu/tok/models/$m.gguf"
        rm -f ".gpu/parts/$m.gguf.part-"*
        split -b 30M -d -a 2 "$src" ".gpu/parts/$m.gguf.part-"
        (cd "$(dirname "$src")" && sha256sum "$m.gguf") >".gpu/parts/$m.sha256"
    done
    [ -d .gl ] || echo "warning: .gl/ (the Vulkan loader .debs) is missing; see /work/.library/device/README.md" >&2
    du -sh .gl .gpu/ferro .gpu/tok .gpu/parts/* 2>/dev/null
}

# Memory bandwidth of the card in GB/s, from its name.
card_gbs() {
    local name=$1
    case "$name" in
        *H200*) echo 4800 ;;
        *H100*PCIe* | *H100*PCIE*) echo 2000 ;;
        *H100*) echo 3350 ;;
        *A100*) echo 2039 ;;
        *) echo 0 ;;
    esac
}

run_remote() {
    local out=${OUT:-/tmp/ferro-gpu-bench}
    mkdir -p "$out"
    local ferro=.gpu/ferro
    [ -x "$ferro" ] || ferro=target/release/ferro
    [ -x "$ferro" ] || { echo "error: no ferro binary (.gpu/ferro): run '$0 prepare' here first" >&2; exit 1; }

    # The Vulkan loader (libvulkan1 and the GL dispatch libraries) from .gl/, and NVIDIA's ICD.
    if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -f "$icd" ]; then
        export VK_DRIVER_FILES=$icd
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    fi
    export NODEVICE_SELECT=1

    local card
    card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
    local gbs=${FERRO_GPU_GBS:-$(card_gbs "$card")}
    echo "card: ${card:-unknown}; bandwidth bound at $gbs GB/s"
    "$ferro" info --devices | tee "$out/devices.txt"

    local models=()
    # Test models whose pieces all arrived.
    for m in smollm2-135m-instruct gemma3-270m; do
        local sum=".gpu/parts/$m.sha256"
        [ -f "$sum" ] && compgen -G ".gpu/parts/$m.gguf.part-*" >/dev/null || {
            echo "skipping $m: its pieces are not here"
            continue
        }
        mkdir -p .gpu/models
        cat ".gpu/parts/$m.gguf.part-"* >".gpu/models/$m.gguf"
        if (cd .gpu/models && sha256sum -c --quiet "../parts/$m.sha256"); then
            models+=(".gpu/models/$m.gguf")
        else
            echo "skipping $m: pieces missing (sha256 differs)"
            rm -f ".gpu/models/$m.gguf"
        fi
    done
    # The 8b synthetic models, generated here (tokenizers from .gpu/tok).
    if [ "${FERRO_BENCH_SKIP_GEN:-0}" != 1 ]; then
        mkdir -p .gpu/gen
        for q in q4_0 q4_k_m; do
            local f=".gpu/gen/llama-8b-$q.gguf"
            [ -f "$f" ] || FERRO_HOME=.gpu/tok "$ferro" gen-model --arch llama --shape 8b --quant "$q" --out "$f"
            models+=("$f")
        done
    fi

    local args=(${FERRO_BENCH_ARGS:--p 512 -n 128 -r 3})
    local bound=()
    [ "$gbs" != 0 ] && bound=(--membw-gbs "$gbs")
    : >"$out/gpu-bench.md"
    for f in "${models[@]}"; do
        echo "== $f" | tee -a "$out/gpu-bench.md"
        "$ferro" bench "$f" --device gpu "${args[@]}" "${bound[@]}" | tee -a "$out/gpu-bench.md"
    done
    # llama.cpp's Vulkan backend on the same files, same call, when its llama-bench travelled
    # (.gpu/llama-bench.xz with its shared libraries in .gpu/lib; built here from the
    # llama-cpp-python sdist with -DGGML_VULKAN=ON, see DEVELOPERS.md).
    if [ -f .gpu/llama-bench.xz ] && [ "${FERRO_BENCH_SKIP_LLAMA:-0}" != 1 ]; then
        xz -dkf .gpu/llama-bench.xz 2>/dev/null ||
            python3 -c 'import lzma, shutil; shutil.copyfileobj(lzma.open(".gpu/llama-bench.xz"), open(".gpu/llama-bench", "wb"))'
        chmod +x .gpu/llama-bench
        for f in "${models[@]}"; do
            echo "== llama.cpp Vulkan: $f" | tee -a "$out/gpu-bench.md"
            LD_LIBRARY_PATH=.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} .gpu/llama-bench -m "$f" -ngl 99 \
                "${args[@]}" 2>&1 | grep -E '^\||ggml_vulkan: [0-9]' | tee -a "$out/gpu-bench.md"
        done
    fi
    # Perplexity on the GPU where the test models arrived (llama-perplexity: SmolLM2 18.3914,
    # gemma3 13.9062 on GPL-3 at -c 512; golden_perplexity.rs holds the CPU to them).
    for f in "${models[@]}"; do
        case "$f" in .gpu/gen/*) continue ;; esac
        [ "${FERRO_BENCH_SKIP_PPL:-0}" != 1 ] || continue
        printf '%s gpu perplexity: ' "$(basename "$f")" | tee -a "$out/gpu-bench.md"
        "$ferro" perplexity "$f" -f tests/fixtures/GPL-3 -c 512 --device gpu 2>/dev/null | tail -1 |
            tee -a "$out/gpu-bench.md"
    done
}

case "${1:-}" in
    prepare) prepare ;;
    run) run_remote ;;
    *)
        echo "usage: $0 prepare|run (see the comment at the top)" >&2
        exit 2
        ;;
esac
