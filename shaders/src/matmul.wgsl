// y[t][row0 + r] = sum_k W[r][k] * x[t][k] for the rows r of one weight chunk.
//
// W is in its GGUF block format (`load8` comes from the quant_*.wgsl prepended to this file).
// A workgroup computes WG / LANES rows for TILE tokens: LANES threads share a row, each walking
// groups of 8 weights, dequantizing them once and dotting them with the TILE activation rows;
// a shared-memory tree reduction over the lanes sums them. TILE = 1 is the decode matrix-vector
// product; larger tiles reuse each dequantized weight for several tokens during prefill.
// Dispatch: (x, y) fold the chunk's row groups (x + y * num_workgroups.x), z = token tiles.
// TILE and LANES are Rust consts prepended to this file.

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;   // [n_tok][k]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [n_tok][y_stride]

var<workgroup> red: array<f32, WG * TILE>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let lane = li % LANES;
    let row = (wid.x + wid.y * nwg.x) * (WG / LANES) + li / LANES;
    let t0 = wid.z * TILE;
    if (t0 >= batch.n_tok) {
        return;
    }
    let nt = min(TILE, batch.n_tok - t0);
    let valid = row < p.n_rows;
    let rb = row * p.row_bytes;
    let ng = select(0u, p.k / 8u, valid);
    let k4 = p.k / 4u;
    var acc: array<f32, TILE>;
    for (var t = 0u; t < TILE; t++) {
        acc[t] = 0.0;
    }
    for (var g = lane; g < ng; g += LANES) {
        let w = load8(rb, g);
        for (var t = 0u; t < TILE; t++) {
            if (t < nt) {
                let xb = (t0 + t) * k4 + g * 2u;
                acc[t] += dot(w.a, x[xb]) + dot(w.b, x[xb + 1u]);
            }
        }
    }
    for (var t = 0u; t < TILE; t++) {
        red[t * WG + li] = acc[t];
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            for (var t = 0u; t < TILE; t++) {
                red[t * WG + li] += red[t * WG + li + s];
            }
        }
        workgroupBarrier();
    }
    if (valid && lane < nt) {
        let o = out_index(t0 + lane, p.row0 + row);
        let v = red[lane * WG + li - lane];
        y[o] = select(v, y[o] + v, p.accumulate == 1u);
    }
}
