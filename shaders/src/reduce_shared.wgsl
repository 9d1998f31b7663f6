// Sum of `v` over the LANES threads of a row through shared memory (adapters without
// subgroups); valid in the row's first thread.
var<workgroup> rowred: array<f32, WG>;

fn row_sum(v: f32, li: u32) -> f32 {
    let lane = li % LANES;
    rowred[li] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            rowred[li] += rowred[li + s];
        }
        workgroupBarrier();
    }
    return rowred[li - lane];
}
