// Sum of `v` over the LANES threads of a row where a row spans several subgroups (LANES > SGM,
// the adapter's smallest subgroup): reduce_subgroup.wgsl's butterfly inside each SGM threads
// (prepended as `subgroup_sum`, over SGM threads), then the row's first thread adds its groups' sums in order
// from shared memory; valid in the row's first thread. Every thread of the workgroup calls it
// (two barriers: the second keeps the next call's writes after this call's reads).
var<workgroup> rowred: array<f32, WG / SGM>;

fn row_sum(v: f32, li: u32) -> f32 {
    let s = subgroup_sum(v, li);
    if (li % SGM == 0u) {
        rowred[li / SGM] = s;
    }
    workgroupBarrier();
    let first = (li - li % LANES) / SGM;
    var t = rowred[first];
    for (var j = 1u; j < LANES / SGM; j++) {
        t += rowred[first + j];
    }
    workgroupBarrier();
    return t;
}
