// Decode product with int8 activations: y[t][row0 + r] = Σ_k W[r][k] x[t][k], x packed as
// int8_product.wgsl (prepended, with the bindings) describes.
// A row is a sequence of parts of 32 weights; `part_dot(rb, u, a, s)` (from the mv_*.wgsl
// prepended to this file) returns the product of part u of the row at byte rb with the part's
// quants (from word a; their 16-sums from s), in units of the activation scale; integer sums use dot4I8Packed, as llama.cpp's CPU kernels use exact
// integer block sums. LANES threads share a row, each taking every LANES-th part (so neighbours
// read neighbouring bytes), and `row_sum` (subgroup shuffles or shared memory, prepended) adds
// them up. A workgroup computes WG / LANES * ROWS rows of TOKS tokens: dispatch (x, y) fold
// the row groups, z = groups of TOKS tokens (several tokens: batched decode). The lines marked //ROWS_* are written per row by context.rs, and where
// the row length is known when the pipeline is made, the loops between //PARTS_BEGIN and
// //PARTS_END become straight-line code (wgpu bounds every loop with a counter). //PROLOGUE
// becomes act_fused.wgsl's `prologue(li);` where the product rounds its own input.

override WG: u32 = 64u;

// Part i of the row at byte rb times its activation scale.
fn part(rb: u32, i: u32, a0: u32, d0: u32, s0: u32) -> f32 {
    return bitcast<f32>(xw(d0 + i)) * part_dot(rb, i, a0 + 8u * i, s0 + 2u * i);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
//PROLOGUE
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
