// Sum of `v` over the LANES threads of a row (LANES ≤ the subgroup size, so a row is inside
// one subgroup): a butterfly of subgroup shuffles, no shared memory or barriers.
fn row_sum(v: f32, li: u32) -> f32 {
    // Written out, not a loop (wgpu bounds loops with a counter).
    var s = v;
    if (LANES > 16u) {
        s += subgroupShuffleXor(s, 16u);
    }
    if (LANES > 8u) {
        s += subgroupShuffleXor(s, 8u);
    }
    if (LANES > 4u) {
        s += subgroupShuffleXor(s, 4u);
    }
    if (LANES > 2u) {
        s += subgroupShuffleXor(s, 2u);
    }
    return s + subgroupShuffleXor(s, 1u);
}
