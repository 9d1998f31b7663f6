// Workgroup reductions by subgroup shuffles (the functions of wg_reduce_shared.wgsl, fewer
// barriers). SG (prepended) is at most the adapter's subgroup size and a power of two, so SG
// consecutive invocations (aligned) share a subgroup and xor-shuffles below SG stay inside it.
// Every thread of the workgroup calls them together.

var<workgroup> wg_a: array<f32, WG>;
var<workgroup> wg_b: array<f32, WG>;

// Over the n threads (a power of two) of li's aligned group: the largest m and the v that
// comes with it, the first thread's on ties.
fn group_max(m: f32, v: f32, li: u32, n: u32) -> vec2<f32> {
    // Steps s = 1, 2, .. below min(n, SG), written out (wgpu bounds loops with a counter).
    let lim = min(n, SG);
    var ab = max_step(vec2<f32>(m, v), li, 1u, lim);
    ab = max_step(ab, li, 2u, lim);
    ab = max_step(ab, li, 4u, lim);
    ab = max_step(ab, li, 8u, lim);
    ab = max_step(ab, li, 16u, lim);
    var a = ab.x;
    var b = ab.y;
    if (n > SG) {
        // Groups wider than SG: the SG-wide results in order, the first on ties.
        wg_a[li] = a;
        wg_b[li] = b;
        workgroupBarrier();
        let lead = li & ~(n - 1u);
        a = wg_a[lead];
        b = wg_b[lead];
        for (var g = lead + SG; g < lead + n; g += SG) {
            if (wg_a[g] > a) {
                a = wg_a[g];
                b = wg_b[g];
            }
        }
        workgroupBarrier();
    }
    return vec2<f32>(a, b);
}

// One butterfly step of group_max: (largest, its value) of li and its partner li ^ s; the
// partner comes first when li has bit s set.
fn max_step(ab: vec2<f32>, li: u32, s: u32, lim: u32) -> vec2<f32> {
    if (s >= lim) {
        return ab;
    }
    let ao = subgroupShuffleXor(ab.x, s);
    let bo = subgroupShuffleXor(ab.y, s);
    if (ao > ab.x || (ao == ab.x && (li & s) != 0u)) {
        return vec2<f32>(ao, bo);
    }
    return ab;
}

// Sum of s over the four threads li & ~3 .. (li & ~3) + 3.
fn quad_sum(s: i32, li: u32) -> i32 {
    let t = s + subgroupShuffleXor(s, 1u);
    return t + subgroupShuffleXor(t, 2u);
}

// tree_reduce: wg_tree.wgsl's tree, the levels below SG as shuffles of the same pairs.
fn tree_reduce(v: f32, li: u32, is_max: bool) -> f32 {
    wg_a[li] = v;
    workgroupBarrier();
    // The levels from SG up in shared memory.
    tree_levels(li, SG, is_max);
    // The levels below SG in the first subgroup's registers: lane li meets li ^ k, which for
    // li < k is the tree's li + k (the other lanes get the same bits, a + b being b + a).
    var s = wg_a[li];
    s = tree_shuffle(s, 16u, is_max);
    s = tree_shuffle(s, 8u, is_max);
    s = tree_shuffle(s, 4u, is_max);
    s = tree_shuffle(s, 2u, is_max);
    s = tree_shuffle(s, 1u, is_max);
    // Only thread 0 reads wg_a[0] above, so its write needs no barrier before it.
    if (li == 0u) {
        wg_a[0] = s;
    }
    workgroupBarrier();
    let r = wg_a[0];
    workgroupBarrier();
    return r;
}

fn tree_shuffle(s: f32, k: u32, is_max: bool) -> f32 {
    if (k < SG) {
        return tree_pair(s, subgroupShuffleXor(s, k), is_max);
    }
    return s;
}
