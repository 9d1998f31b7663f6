// Q5_0 block (see quant_q5_0.wgsl) against 32 int8 activations: d * (Σ u·q − 16·Σq), u the
// nibble plus its fifth bit (0..31).
const PARTS: u32 = 1u;

fn part_dot(rb: u32, u: u32, part: u32, a: u32, s: u32) -> f32 {
    let blk = rb + u * 22u;
    let d = rd_f16(blk);
    let qh = rd_u32(blk + 2u);
    var isum = 0;
    for (var j = 0u; j < 4u; j++) {
        let q = rd_u32(blk + 6u + 4u * j);
        let lo = (q & 0x0F0F0F0Fu) | (bits_to_bytes(qh >> (4u * j)) << 4u);
        let hi = ((q >> 4u) & 0x0F0F0F0Fu) | (bits_to_bytes(qh >> (16u + 4u * j)) << 4u);
        isum += dot4I8Packed(lo, xq[a + j]) + dot4I8Packed(hi, xq[a + 4u + j]);
    }
    return d * f32(isum - 16 * (xsum(s) + xsum(s + 1u)));
}
