#!/usr/bin/env python3
"""Write kernels/tests/fixtures/quant-<type>.json: random blocks of every GGUF block format with
gguf-py's dequantization of them, and (where gguf-py has a quantizer) random floats with gguf-py's
quantization of them. ferro's dequantize/quantize must agree (kernels/tests/gguf_py_fixtures.rs).

    pip install gguf numpy
    python3 scripts/gen-quant-fixtures.py

Deterministic (fixed seed). Scale fields are overwritten with finite f16 values so the expected
outputs contain no NaN/inf; every other byte is random.
"""
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kernels", "tests", "fixtures")

# type -> (number of blocks, byte offsets of f16 scale fields inside a block)
FORMATS = {
    T.Q4_0: (16, [0]),
    T.Q4_1: (16, [0, 2]),
    T.Q5_0: (16, [0]),
    T.Q5_1: (16, [0, 2]),
    T.Q8_0: (16, [0]),
    T.Q2_K: (4, [80, 82]),
    T.Q3_K: (4, [108]),
    T.Q4_K: (4, [0, 2]),
    T.Q5_K: (4, [0, 2]),
    T.Q6_K: (4, [208]),
    T.F16: (256, []),
    T.BF16: (256, []),
}
QUANTIZABLE = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16}


def f32_list(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def main():
    rng = np.random.default_rng(20260402)
    os.makedirs(OUT, exist_ok=True)
    for ty, (n_blocks, scale_offsets) in FORMATS.items():
        block_elems, block_bytes = quants.GGML_QUANT_SIZES[ty]
        raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
        for off in scale_offsets:
            scales = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
            raw[:, off : off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
        if ty == T.F16:
            raw = (rng.standard_normal(n_blocks) * 3).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
        if ty == T.BF16:
            v = (rng.standard_normal(n_blocks) * 3).astype(np.float32).view(np.uint32) >> 16
            raw = v.astype(np.uint16).view(np.uint8).reshape(n_blocks, 2)
        deq = quants.dequantize(raw.reshape(-1), ty)
        fx = {
            "type": ty.name,
            "n_elements": n_blocks * block_elems,
            "blocks_hex": raw.tobytes().hex(),
            "dequantized": f32_list(deq),
        }
        if ty in QUANTIZABLE:
            n = 8 * block_elems if block_elems > 1 else 256
            # Mixed magnitudes, one all-zero block, one constant block.
            x = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 30.0], size=n)).astype(np.float32)
            if block_elems > 1:
                x[:block_elems] = 0.0
                x[block_elems : 2 * block_elems] = 0.75
            q = quants.quantize(x.reshape(1, -1), ty)
            fx["quant_input"] = f32_list(x)
            fx["quantized_hex"] = q.tobytes().hex()
        path = os.path.join(OUT, f"quant-{ty.name.lower()}.json")
        with open(path, "w") as f:
            json.dump(fx, f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
