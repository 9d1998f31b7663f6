// Q4_1 block (see quant_q4_1.wgsl) against 32 int8 activations: d * Σ u·q + m * Σq.
const PARTS: u32 = 1u;

fn part_dot(rb: u32, u: u32, part: u32, a: u32, s: u32) -> f32 {
    let blk = rb + u * 20u;
    let dm = unpack2x16float(rd_u32(blk));
    var isum = 0;
    for (var j = 0u; j < 4u; j++) {
        let q = rd_u32(blk + 4u + 4u * j);
        isum += dot4I8Packed(q & 0x0F0F0F0Fu, xq[a + j]) + dot4I8Packed((q >> 4u) & 0x0F0F0F0Fu, xq[a + 4u + j]);
    }
    return dm.x * f32(isum) + dm.y * f32(xsum(s) + xsum(s + 1u));
}
