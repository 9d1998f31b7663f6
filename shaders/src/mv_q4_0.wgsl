// Q4_0 block (see quant_q4_0.wgsl) against 32 int8 activations: d * (Σ u·q − 8·Σq), u the nibble.
fn unit_dot(rb: u32, u: u32, a: u32, s: u32) -> f32 {
    let blk = rb + u * 18u;
    let d = rd_f16(blk);
    var isum = 0;
    for (var j = 0u; j < 4u; j++) {
        let q = rd_u32(blk + 2u + 4u * j);
        isum += dot4I8Packed(q & 0x0F0F0F0Fu, xq[a + j]) + dot4I8Packed((q >> 4u) & 0x0F0F0F0Fu, xq[a + 4u + j]);
    }
    return d * f32(isum - 8 * (xsum(s) + xsum(s + 1u)));
}
