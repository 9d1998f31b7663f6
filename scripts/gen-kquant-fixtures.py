#!/usr/bin/env python3
"""Generate K-quant dequantization fixtures with gguf-py (the `gguf` package's quants module).

For each of Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: N random super-blocks (random bytes, with the fp16
scale fields replaced by finite values: zero, tiny, ordinary, large, negative) and the values
gguf-py dequantizes them to. Output, in kernels/tests/fixtures/kquants/:

    <fmt>.blocks   the raw blocks (N * block size bytes)
    <fmt>.f32      N * 256 little-endian f32 values

Run:  pip install gguf numpy && python3 scripts/gen-kquant-fixtures.py
The fixtures are committed; the Rust tests (kernels/tests/kquants_fixtures.rs) read them.
"""

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

N_BLOCKS = 16
OUT = Path(__file__).resolve().parent.parent / "kernels" / "tests" / "fixtures" / "kquants"

# format: (type, block size, byte offsets of fp16 scale fields)
FORMATS = {
    "q2_k": (T.Q2_K, 84, [80, 82]),
    "q3_k": (T.Q3_K, 110, [108]),
    "q4_k": (T.Q4_K, 144, [0, 2]),
    "q5_k": (T.Q5_K, 176, [0, 2]),
    "q6_k": (T.Q6_K, 210, [208]),
}

SPECIAL_SCALES = [0.0, 6e-8, 1e-3, 0.5, 1.0, 3.25, 100.0, 65504.0, -0.75]


def main() -> None:
    rng = np.random.default_rng(20240601)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (qtype, size, scale_offsets) in FORMATS.items():
        raw = rng.integers(0, 256, size=(N_BLOCKS, size), dtype=np.uint8)
        raw[1, :] = 0  # all-zero block
        raw[2, :] = 0xFF  # every bit set (then given finite scales below)
        for b in range(N_BLOCKS):
            for k, off in enumerate(scale_offsets):
                if b < len(SPECIAL_SCALES):
                    v = SPECIAL_SCALES[(b + k) % len(SPECIAL_SCALES)]
                else:
                    v = float(rng.uniform(-2.0, 2.0))
                raw[b, off : off + 2] = np.frombuffer(np.float16(v).tobytes(), dtype=np.uint8)
        values = dequantize(raw, qtype).astype("<f4").reshape(-1)
        assert values.size == N_BLOCKS * 256
        assert np.all(np.isfinite(values)), name
        (OUT / f"{name}.blocks").write_bytes(raw.tobytes())
        (OUT / f"{name}.f32").write_bytes(values.tobytes())
        print(f"{name}: {N_BLOCKS} blocks -> {OUT / name}.{{blocks,f32}}")


if __name__ == "__main__":
    main()
