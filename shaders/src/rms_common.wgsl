// Shared by rms_norm.wgsl, norm_quant.wgsl and act_fused.wgsl (each declares `p` with `eps`,
// and `x`): 1 / sqrt(mean(x[row]^2) + eps) for the row of n values at `base`, summed by the
// workgroup's WG threads (so the same WG gives the same bits).

var<workgroup> red: array<f32, WG>;

fn row_scale(base: u32, n: u32, li: u32) -> f32 {
    // Four loads in flight per trip.
    var s0 = 0.0;
    var s1 = 0.0;
    var i = li;
    for (; i + 3u * WG < n; i += 4u * WG) {
        let a = x[base + i];
        let b = x[base + i + WG];
        let c = x[base + i + 2u * WG];
        let d = x[base + i + 3u * WG];
        s0 += a * a + c * c;
        s1 += b * b + d * d;
    }
    for (; i < n; i += WG) {
        let v = x[base + i];
        s0 += v * v;
    }
    red[li] = s0 + s1;
    workgroupBarrier();
    // The tree k = WG / 2, WG / 4, .. 1 written out (no loop: wgpu bounds every loop with a
    // counter, which costs NVIDIA a few microseconds per dispatch here).
    rms_tree(li, 512u);
    rms_tree(li, 256u);
    rms_tree(li, 128u);
    rms_tree(li, 64u);
    rms_tree(li, 32u);
    rms_tree(li, 16u);
    rms_tree(li, 8u);
    rms_tree(li, 4u);
    rms_tree(li, 2u);
    rms_tree(li, 1u);
    return inverseSqrt(red[0] / f32(n) + p.eps);
}

// One level of the tree: red[li] += red[li + k] for li < k (levels at or past WG skipped).
fn rms_tree(li: u32, k: u32) {
    if (k < WG) {
        if (li < k) {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
}
