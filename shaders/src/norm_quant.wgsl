// RMS norm (rms_norm.wgsl's `main`) and llama.cpp's activation rounding (quantize_act.wgsl's
// modes 0 and 1) in one pass: out[row] = round(x[row] / rms(x[row]) * w), and with p.packed the
// quants in matvec.wgsl's layout. One workgroup per row (token) of n values (a multiple of the
// block); its threads take consecutive fours, 4·WG values per trip.

struct Params {
    n: u32,
    eps: f32,
    block: u32,  // 32 or 256
    mode: u32,   // 0: Q8_0 blocks, 1: Q8_K blocks
    packed: u32,
    d_off: u32,
    s_off: u32,
    _pad: u32,
}

// As rms_norm.wgsl: up to 1024 threads (a power of two, at least 64), so a row takes few trips.
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> outq: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= batch.n_tok) {
        return;
    }
    let base = row * p.n;
    let sc = row_scale(base, p.n, li);
    for (var c = 0u; c < p.n; c += 4u * WG) {
        let o = c + 4u * li;
        let live = o < p.n;
        var v = vec4<f32>(0.0);
        if (live) {
            v = vec4<f32>(x[base + o], x[base + o + 1u], x[base + o + 2u], x[base + o + 3u]) * sc
                * vec4<f32>(w[o], w[o + 1u], w[o + 2u], w[o + 3u]);
        }
        quantize4(li, base + o, v, live);
    }
}
