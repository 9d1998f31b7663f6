// Q4_1 block (see quant_q4_1.wgsl) against 32 int8 activations: d * Σ u·q + m * Σq, the min
// term as llama.cpp's CPU has it: its Q8_1 activation blocks keep s = dx * Σq rounded to f16
// (dx, the block's activation scale, is at p.d_off + a / 8; the caller multiplies by dx).
const PARTS: u32 = 1u;

fn part_dot(rb: u32, u: u32, part: u32, a: u32, s: u32) -> f32 {
    let blk = rb + u * 20u;
    let dm = unpack2x16float(rd_u32(blk));
    var isum = 0;
    for (var j = 0u; j < 4u; j++) {
        let q = rd_u32(blk + 4u + 4u * j);
        isum += dot4I8Packed(q & 0x0F0F0F0Fu, xq[a + j]) + dot4I8Packed((q >> 4u) & 0x0F0F0F0Fu, xq[a + 4u + j]);
    }
    let dx = bitcast<f32>(xq[p.d_off + a / 8u]);
    var smin = 0.0;
    if (dx != 0.0) {
        smin = f16_round(dx * f32(xsum(s) + xsum(s + 1u))) / dx;
    }
    return dm.x * f32(isum) + dm.y * smin;
}
