// Decode product with int8 activations: y[t][row0 + r] = Σ_k W[r][k] x[t][k], x as
// quantize_act.wgsl packs it (the rounding llama.cpp's CPU applies before this weight type):
//   xq[0 ..]          int8 quants, four per word, [n_tok][k / 4]
//   xq[p.d_off ..]    the scale of each 32 values as f32 bits, [n_tok][k / 32]
//   xq[p.s_off ..]    the integer sum of each 16 quants as i32 bits, [n_tok][k / 16]
// A row is a sequence of parts of 32 weights; `part_dot(rb, u, a, s)` (from the mv_*.wgsl
// prepended to this file) returns the product of part u of the row at byte rb with the part's
// quants (from word a; their 16-sums from s), in units of the activation scale; integer sums use dot4I8Packed, as llama.cpp's CPU kernels use exact
// integer block sums. LANES threads share a row, each taking every LANES-th part (so neighbours
// read neighbouring bytes), and `row_sum` (subgroup shuffles or shared memory, prepended) adds
// them up. A workgroup computes WG / LANES * ROWS rows of TOKS tokens: dispatch (x, y) fold
// the row groups, z = groups of TOKS tokens (several tokens: batched decode). The lines marked //ROWS_* are written per row by context.rs, and where
// the row length is known when the pipeline is made, the loops between //PARTS_BEGIN and
// //PARTS_END become straight-line code (wgpu bounds every loop with a counter).

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// The same weights and activations as 16-byte vectors, for formats whose parts are aligned.
@group(0) @binding(4) var<storage, read> wq4: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> xq4: array<vec4<u32>>;

fn xsum(i: u32) -> i32 {
    return bitcast<i32>(xq[p.s_off + i]);
}

// Part i of the row at byte rb times its activation scale.
fn part(rb: u32, i: u32, a0: u32, d0: u32, s0: u32) -> f32 {
    return bitcast<f32>(xq[d0 + i]) * part_dot(rb, i, a0 + 8u * i, s0 + 2u * i);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let lane = li % LANES;
    // ROWS consecutive rows per group of LANES threads: the activation loads of a part are
    // the same for every row (the compiler loads them once).
    let row = ((wid.x + wid.y * nwg.x) * (WG / LANES) + li / LANES) * ROWS;
    let np = p.k / 32u;
    // TOKS tokens per workgroup (dispatch z = token groups): token tt's quants from word
    // a0_tt, scales from d0_tt, 16-sums from s0_tt. Past the batch, the last token again
    // (its sums are not stored). One weight load serves every token (the same loads).
//TOKS_DECL
    // Per row r: rows past the end read row 0 (their sums are dropped); four parts per trip
    // into four named sums, so their loads are in flight together. (Named variables, not an
    // array: a dynamically indexed array would live in memory.)
//ROWS_DECL
//PARTS_BEGIN
    var i = lane;
    for (; i + 3u * LANES < np; i += 4u * LANES) {
//ROWS_TRIP
    }
    for (; i < np; i += LANES) {
//ROWS_TAIL
    }
//PARTS_END
//ROWS_STORE
}

fn store(t: u32, row: u32, sum: f32, lane: u32) {
    if (lane == 0u && row < p.n_rows && t < batch.n_tok) {
        let o = out_index(t, p.row0 + row);
        y[o] = select(sum, y[o] + sum, p.accumulate == 1u);
    }
}
