// attention.wgsl's `key_sum` with subgroups: the sum of v over the KS threads that score one
// key (aligned neighbours, KS at most the subgroup size), a butterfly of shuffles so that every
// one of them gets the same bits.
fn key_sum(v: f32) -> f32 {
    var s = v;
    if (KS > 1u) {
        s += subgroupShuffleXor(s, 1u);
    }
    if (KS > 2u) {
        s += subgroupShuffleXor(s, 2u);
    }
    if (KS > 4u) {
        s += subgroupShuffleXor(s, 4u);
    }
    if (KS > 8u) {
        s += subgroupShuffleXor(s, 8u);
    }
    if (KS > 16u) {
        s += subgroupShuffleXor(s, 16u);
    }
    return s;
}
