// Rounds activations the way llama.cpp's CPU matrix products see them, so GPU logits follow the
// CPU engine and llama.cpp (ggml-quants.c quantize_row_q8_0 / quantize_row_q8_K, GGML_FP32_TO_FP16):
//   mode 0 (Q8_0/Q8_1, before Q4_0/Q4_1/Q5_0/Q8_0 weights): blocks of 32, d = amax / 127 stored
//          as f16, x' = round(x / d) * f16(d)
//   mode 1 (Q8_K, before K-quant weights): blocks of 256, iscale = -127 / max (max = the value of
//          largest magnitude), x' = min(127, round(iscale * x)) / iscale
//   mode 2 (F16 weights): x' = f16(x)
// One thread per block; out[t][..] = x'[t][..].

struct Params {
    k: u32,      // values per token (multiple of the block)
    block: u32,  // 32 or 256
    mode: u32,
    rows: u32,   // tokens to process; 0 = the batch's n_tok
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn f16_round(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * WG;
    var rows = p.rows;
    if (rows == 0u) {
        rows = batch.n_tok;
    }
    if (b >= rows * (p.k / p.block)) {
        return;
    }
    let base = b * p.block;
    if (p.mode == 2u) {
        for (var i = 0u; i < p.block; i++) {
            out[base + i] = f16_round(x[base + i]);
        }
        return;
    }
    var amax = 0.0;
    var mx = 0.0;
    for (var i = 0u; i < p.block; i++) {
        let v = x[base + i];
        if (abs(v) > amax) {
            amax = abs(v);
            mx = v;
        }
    }
    if (amax == 0.0) {
        for (var i = 0u; i < p.block; i++) {
            out[base + i] = 0.0;
        }
        return;
    }
    if (p.mode == 0u) {
        let d = amax / 127.0;
        let id = 1.0 / d;
        let dh = f16_round(d);
        for (var i = 0u; i < p.block; i++) {
            out[base + i] = round(x[base + i] * id) * dh;
        }
    } else {
        let iscale = -127.0 / mx;
        let d = 1.0 / iscale;
        for (var i = 0u; i < p.block; i++) {
            out[base + i] = min(127.0, round(iscale * x[base + i])) * d;
        }
    }
}
