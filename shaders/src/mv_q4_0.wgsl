// Q4_0 block u (see quant_q4_0.wgsl: rows split into quants, then scales) against 32 int8
// activations: d * Σ (u − 8)·q, the nibbles minus 8 as signed bytes. One thread per block; its
// 16 quant bytes are one 16-byte load where the row is 16-byte aligned.
fn part_dot(rb: u32, u: u32, a: u32, s: u32) -> f32 {
    let o = rb + 16u * u;
    var q: vec4<u32>;
    if ((p.row_bytes & 15u) == 0u) {
        q = wq4[o >> 4u];
    } else {
        q = vec4<u32>(rd_u32(o), rd_u32(o + 4u), rd_u32(o + 8u), rd_u32(o + 12u));
    }
    let lo = nibbles_signed4(q & vec4<u32>(0x0F0F0F0Fu));
    let hi = nibbles_signed4((q >> vec4<u32>(4u)) & vec4<u32>(0x0F0F0F0Fu));
    let x0 = xq4[a >> 2u];
    let x1 = xq4[(a >> 2u) + 1u];
    let isum = dot4I8Packed(lo.x, x0.x) + dot4I8Packed(lo.y, x0.y) + dot4I8Packed(lo.z, x0.z) + dot4I8Packed(lo.w, x0.w)
        + dot4I8Packed(hi.x, x1.x) + dot4I8Packed(hi.y, x1.y) + dot4I8Packed(hi.z, x1.z) + dot4I8Packed(hi.w, x1.w);
    return rd_f16(rb + 16u * (p.k / 32u) + 2u * u) * f32(isum);
}
