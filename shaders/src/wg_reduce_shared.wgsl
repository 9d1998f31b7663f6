// Workgroup reductions through shared memory (adapters without subgroups), for quant_core.wgsl;
// wg_reduce_subgroup.wgsl has the same functions. Every thread of the workgroup calls them
// together (they hold barriers) and gets the result.

var<workgroup> wg_a: array<f32, WG>;
var<workgroup> wg_b: array<f32, WG>;
var<workgroup> wg_i: array<i32, WG>;

// Over the n threads (a power of two) of li's aligned group: the largest m and the v that
// comes with it, the first thread's on ties.
fn group_max(m: f32, v: f32, li: u32, n: u32) -> vec2<f32> {
    wg_a[li] = m;
    wg_b[li] = v;
    workgroupBarrier();
    for (var s = 1u; s < n; s <<= 1u) {
        // Pairs (li, li + s) with li a multiple of 2s: the lower index wins ties.
        if ((li & (2u * s - 1u)) == 0u && wg_a[li + s] > wg_a[li]) {
            wg_a[li] = wg_a[li + s];
            wg_b[li] = wg_b[li + s];
        }
        workgroupBarrier();
    }
    let lead = li & ~(n - 1u);
    let r = vec2<f32>(wg_a[lead], wg_b[lead]);
    workgroupBarrier();
    return r;
}

// Sum of s over the four threads li & ~3 .. (li & ~3) + 3.
fn quad_sum(s: i32, li: u32) -> i32 {
    wg_i[li] = s;
    workgroupBarrier();
    let lead = li & ~3u;
    let r = (wg_i[lead] + wg_i[lead + 1u]) + (wg_i[lead + 2u] + wg_i[lead + 3u]);
    workgroupBarrier();
    return r;
}

// tree_reduce: wg_tree.wgsl's tree (every level in shared memory).
fn tree_reduce(v: f32, li: u32, is_max: bool) -> f32 {
    wg_a[li] = v;
    workgroupBarrier();
    tree_levels(li, 1u, is_max);
    let r = wg_a[0];
    workgroupBarrier();
    return r;
}
