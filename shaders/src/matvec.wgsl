// Decode product with int8 activations: y[t][row0 + r] = Σ_k W[r][k] x[t][k], x as
// quantize_act.wgsl packs it (the rounding llama.cpp's CPU applies before this weight type):
//   xq[0 ..]          int8 quants, four per word, [n_tok][k / 4]
//   xq[p.d_off ..]    the scale of each 32 values as f32 bits, [n_tok][k / 32]
//   xq[p.s_off ..]    the integer sum of each 16 quants as i32 bits, [n_tok][k / 16]
// `unit_dot(rb, u, a, s)` (from the mv_*.wgsl prepended to this file) returns the product of
// the 32 weights of unit u of the row at byte rb with the 32 quants at word a, in units of
// their scale; integer sums use dot4I8Packed, as llama.cpp's CPU kernels use exact integer
// block sums. LANES threads share a row, each taking every LANES-th unit, and `row_sum`
// (subgroup shuffles or shared memory, prepended) adds them up. A workgroup computes WG / LANES
// rows of one token: dispatch (x, y) fold the row groups, z = tokens.

struct Params {
    n_rows: u32,    // rows in this chunk
    k: u32,         // row length (multiple of 32)
    row_bytes: u32, // bytes per row in wq
    y_stride: u32,  // floats per output token row (all rows of the tensor)
    row0: u32,      // first row of this chunk in the tensor
    d_off: u32,
    s_off: u32,
    _pad: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn xsum(i: u32) -> i32 {
    return bitcast<i32>(xq[p.s_off + i]);
}

// Unit u of the row at byte rb times its activation scale.
fn unit(rb: u32, u: u32, a0: u32, d0: u32, s0: u32) -> f32 {
    return bitcast<f32>(xq[d0 + u]) * unit_dot(rb, u, a0 + 8u * u, s0 + 2u * u);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let lane = li % LANES;
    let row = (wid.x + wid.y * nwg.x) * (WG / LANES) + li / LANES;
    let t = wid.z;
    let valid = row < p.n_rows;
    let rb = row * p.row_bytes;
    let nu = select(0u, p.k / 32u, valid);
    let a0 = t * (p.k / 4u);
    let d0 = p.d_off + t * (p.k / 32u);
    let s0 = t * (p.k / 16u);
    // Four units per trip: their loads are independent, so they are in flight together (a
    // trip per unit would wait a full memory latency each time).
    var acc = 0.0;
    var u = lane;
    for (; u + 3u * LANES < nu; u += 4u * LANES) {
        let r0 = unit(rb, u, a0, d0, s0);
        let r1 = unit(rb, u + LANES, a0, d0, s0);
        let r2 = unit(rb, u + 2u * LANES, a0, d0, s0);
        let r3 = unit(rb, u + 3u * LANES, a0, d0, s0);
        acc += (r0 + r1) + (r2 + r3);
    }
    for (; u < nu; u += LANES) {
        acc += unit(rb, u, a0, d0, s0);
    }
    let sum = row_sum(acc, li);
    if (valid && lane == 0u) {
        y[t * p.y_stride + p.row0 + row] = sum;
    }
}
