// Q8_0 block (see quant_q8_0.wgsl) against 32 int8 activations: d * Σ w·q.
const PARTS: u32 = 1u;

fn part_dot(rb: u32, u: u32, part: u32, a: u32, s: u32) -> f32 {
    let blk = rb + u * 34u;
    let d = rd_f16(blk);
    var isum = 0;
    for (var j = 0u; j < 8u; j++) {
        isum += dot4I8Packed(rd_u32(blk + 2u + 4u * j), xq[a + j]);
    }
    return d * f32(isum);
}
