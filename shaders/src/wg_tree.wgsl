// Appended to wg_reduce_shared.wgsl and wg_reduce_subgroup.wgsl (each defines `tree_reduce`,
// from tree_levels, and the wg_a array).

// The sum (tree_sum) or the largest (tree_max) of v over the workgroup's WG threads, combined
// in one fixed order: a tree whose level k = WG / 2, .., 2, 1 gives thread li < k the pair
// (li, li + k). Every thread gets the result. wg_reduce_subgroup.wgsl's tree_reduce runs the
// levels below SG as shuffles of the same pairs, so both give the same bits (the rms sums and
// attention's softmax sums are rounded in this order).
fn tree_sum(v: f32, li: u32) -> f32 {
    return tree_reduce(v, li, false);
}

fn tree_max(v: f32, li: u32) -> f32 {
    return tree_reduce(v, li, true);
}

fn tree_pair(a: f32, b: f32, is_max: bool) -> f32 {
    if (is_max) {
        return max(a, b);
    }
    return a + b;
}

// One level k of the tree in shared memory (levels at or past WG, or below `low`, skipped).
fn tree_level(li: u32, k: u32, low: u32, is_max: bool) {
    if (k < WG && k >= low) {
        if (li < k) {
            wg_a[li] = tree_pair(wg_a[li], wg_a[li + k], is_max);
        }
        workgroupBarrier();
    }
}

// The levels k = WG / 2 .. low of the tree in shared memory, written out (wgpu bounds loops
// with a counter).
fn tree_levels(li: u32, low: u32, is_max: bool) {
    tree_level(li, 512u, low, is_max);
    tree_level(li, 256u, low, is_max);
    tree_level(li, 128u, low, is_max);
    tree_level(li, 64u, low, is_max);
    tree_level(li, 32u, low, is_max);
    tree_level(li, 16u, low, is_max);
    tree_level(li, 8u, low, is_max);
    tree_level(li, 4u, low, is_max);
    tree_level(li, 2u, low, is_max);
    tree_level(li, 1u, low, is_max);
}
