// Q4_0 block u (see quant_q4_0.wgsl: rows split into quants, then scales) against 32 int8
// activations: d * (Σ u·q − 8·Σq), u the nibbles (0..15, non-negative as signed bytes) and Σq
// the activations' 16-sums, as mv_q5_0.wgsl: the same integer as Σ (u − 8)·q with fewer
// operations per word. One thread per block; its 16 quant bytes are one 16-byte load where the
// row is 16-byte aligned.
fn part_dot(rb: u32, u: u32, a: u32, s: u32) -> f32 {
    return part_dot_w(part_w(rb, u), a, s);
}

// Part u decoded (the low and high nibbles, the scale), once for all the tokens of a
// batched product (matvec.wgsl's split form), then dotted with each token's quants.
struct PartW {
    lo: vec4<u32>,
    hi: vec4<u32>,
    d: f32,
}

fn part_w(rb: u32, u: u32) -> PartW {
    let o = rb + 16u * u;
    var q: vec4<u32>;
    if ((p.row_bytes & 15u) == 0u) {
        q = wq4[o >> 4u];
    } else {
        q = vec4<u32>(rd_u32(o), rd_u32(o + 4u), rd_u32(o + 8u), rd_u32(o + 12u));
    }
    let lo = q & vec4<u32>(0x0F0F0F0Fu);
    let hi = (q >> vec4<u32>(4u)) & vec4<u32>(0x0F0F0F0Fu);
    return PartW(lo, hi, rd_f16(rb + 16u * (p.k / 32u) + 2u * u));
}

fn part_dot_w(w: PartW, a: u32, s: u32) -> f32 {
    let x0 = xv(a >> 2u);
    let x1 = xv((a >> 2u) + 1u);
    let isum = dot4I8Packed(w.lo.x, x0.x) + dot4I8Packed(w.lo.y, x0.y) + dot4I8Packed(w.lo.z, x0.z) + dot4I8Packed(w.lo.w, x0.w)
        + dot4I8Packed(w.hi.x, x1.x) + dot4I8Packed(w.hi.y, x1.y) + dot4I8Packed(w.hi.z, x1.z) + dot4I8Packed(w.hi.w, x1.w);
    return w.d * f32(isum - 8 * (xsum(s) + xsum(s + 1u)));
}

// part() of matvec.wgsl with the weights already decoded.
fn part_x(w: PartW, i: u32, a0: u32, d0: u32, s0: u32) -> f32 {
    return bitcast<f32>(xw(d0 + i)) * part_dot_w(w, a0 + 8u * i, s0 + 2u * i);
}

// Half h of part u for gemmq.wgsl: the low (h = 0) or high nibbles of its 16 quant bytes,
// minus 8 (signed bytes).
fn wpart(rb: u32, u: u32, h: u32) -> WPart {
    let w = part_w(rb, u);
    return WPart(bytes_signed(select(w.lo, w.hi, h == 1u), 0x08080808u), w.d, 0.0);
}
