// Sum of `v` over the LANES threads of a row (LANES ≤ the subgroup size, so a row is inside
// one subgroup): a butterfly of subgroup shuffles, no shared memory or barriers.
fn row_sum(v: f32, li: u32) -> f32 {
    var s = v;
    for (var o = LANES / 2u; o > 0u; o >>= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    return s;
}
