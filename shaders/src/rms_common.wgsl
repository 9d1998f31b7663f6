// Shared by rms_norm.wgsl and norm_quant.wgsl (each declares `p` with the row length `n` and
// `eps`, and `x`): 1 / sqrt(mean(x[row]^2) + eps) for the row at `base`, summed by the
// workgroup's WG threads.

var<workgroup> red: array<f32, WG>;

fn row_scale(base: u32, li: u32) -> f32 {
    // Four loads in flight per trip.
    var s0 = 0.0;
    var s1 = 0.0;
    var i = li;
    for (; i + 3u * WG < p.n; i += 4u * WG) {
        let a = x[base + i];
        let b = x[base + i + WG];
        let c = x[base + i + 2u * WG];
        let d = x[base + i + 3u * WG];
        s0 += a * a + c * c;
        s1 += b * b + d * d;
    }
    for (; i < p.n; i += WG) {
        let v = x[base + i];
        s0 += v * v;
    }
    red[li] = s0 + s1;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k) {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
    return inverseSqrt(red[0] / f32(p.n) + p.eps);
}
