// Shared by rms_norm.wgsl and norm_quant.wgsl (each declares `p` with the row length `n` and
// `eps`, and `x`): 1 / sqrt(mean(x[row]^2) + eps) for the row at `base`, summed by the
// workgroup's WG threads.

var<workgroup> red: array<f32, WG>;

fn row_scale(base: u32, li: u32) -> f32 {
    var s = 0.0;
    for (var i = li; i < p.n; i += WG) {
        let v = x[base + i];
        s += v * v;
    }
    red[li] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k) {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
    return inverseSqrt(red[0] / f32(p.n) + p.eps);
}
