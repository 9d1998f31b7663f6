// Rounds activations the way llama.cpp's CPU matrix products see them, so GPU logits follow the
// CPU engine and llama.cpp (ggml-quants.c quantize_row_q8_0 / quantize_row_q8_K, GGML_FP32_TO_FP16):
//   mode 0 (Q8_0/Q8_1, before Q4_0/Q4_1/Q5_0/Q8_0 weights): blocks of 32, d = amax / 127 stored
//          as f16, x' = round(x / d) * f16(d)
//   mode 1 (Q8_K, before K-quant weights): blocks of 256, iscale = -127 / max (max = the value of
//          largest magnitude, the first one on ties), x' = min(127, round(iscale * x)) / iscale
//   mode 2 (F16 weights): x' = f16(x)
// out[t][..] = x'[t][..]; x[i] is `load4`'s (prepended): the input, or for the gated variant
// (before a down projection) act(x[i]) * u[i] as glu.wgsl computes it, so the product's input is
// rounded in the same dispatch that makes it. With p.packed = 1 (modes 0 and 1), the quants also go to `outq` in
// matvec.wgsl's layout: int8 quants four per word from word 0, the scale of each 32 values (f32
// bits) from p.d_off, the sum of each 16 quants (i32 bits) from p.s_off.
//
// A workgroup of WG threads (WG ≥ 64) takes 4·WG consecutive values (blocks never straddle tokens: k is a
// multiple of the block), four per thread; a block's threads find its largest magnitude by a
// shared-memory reduction. Dispatch: (x, y) fold the groups of 4·WG values.

struct Params {
    k: u32,      // values per token (multiple of the block)
    block: u32,  // 32 or 256
    mode: u32,
    rows: u32,   // tokens to process; 0 = the batch's n_tok
    packed: u32, // 1: also write outq
    d_off: u32,
    s_off: u32,
    glu_f16: u32, // gated variant: gelu by ggml's f16 table (glu_common.wgsl)
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> outq: array<u32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    var rows = p.rows;
    if (rows == 0u) {
        rows = batch.n_tok;
    }
    let total = rows * p.k;
    let g = ((wid.x + wid.y * nwg.x) * WG + li) * 4u;
    let live = g < total;
    var v = vec4<f32>(0.0);
    if (live) {
        v = load4(g);
    }
    if (p.mode == 2u) {
        if (live) {
            out[g] = f16_round(v.x);
            out[g + 1u] = f16_round(v.y);
            out[g + 2u] = f16_round(v.z);
            out[g + 3u] = f16_round(v.w);
        }
        return;
    }
    quantize4(li, g, v, live);
}
