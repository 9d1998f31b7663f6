// Shared by rms_norm.wgsl, norm_quant.wgsl and act_fused.wgsl (each declares `p` with `eps`,
// and `x`): 1 / sqrt(mean(x[row]^2) + eps) for the row of n values at `base`, summed by the
// workgroup's WG threads (so the same WG gives the same bits), with wg_reduce_*.wgsl's tree.

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
    // The tree sum of wg_reduce_*.wgsl: the same bits with or without shuffles.
    return inverseSqrt(tree_sum(s0 + s1, li) / f32(n) + p.eps);
}
