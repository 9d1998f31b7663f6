// Q4_1 block (see quant_q4_1.wgsl) against 32 int8 activations: d * Σ u·q + m * Σq, the min
// term as llama.cpp's CPU has it: its Q8_1 activation blocks keep s = dx * Σq rounded to f16
// (dx, the block's activation scale, is at p.d_off + a / 8; the caller multiplies by dx).
fn part_dot(rb: u32, u: u32, a: u32, s: u32) -> f32 {
    let blk = rb + u * 20u;
    let dm = unpack2x16float(rd_u32(blk));
    // Four quant words written out (wgpu bounds loops with a counter).
    let isum = (q4_1_word(blk, 0u, a) + q4_1_word(blk, 1u, a)) + (q4_1_word(blk, 2u, a) + q4_1_word(blk, 3u, a));
    let dx = bitcast<f32>(xw(p.d_off + a / 8u));
    var smin = 0.0;
    if (dx != 0.0) {
        smin = f16_round(dx * f32(xsum(s) + xsum(s + 1u))) / dx;
    }
    return dm.x * f32(isum) + dm.y * smin;
}

// Quant word j of the block: weights 4j..4j + 3 (low nibbles) and 16 + 4j.. (high).
fn q4_1_word(blk: u32, j: u32, a: u32) -> i32 {
    let q = rd_u32(blk + 4u + 4u * j);
    return dot4I8Packed(q & 0x0F0F0F0Fu, xw(a + j)) + dot4I8Packed((q >> 4u) & 0x0F0F0F0Fu, xw(a + 4u + j));
}

// Half h of block u for gemmq.wgsl: the low (h = 0) or high nibbles (0..15), d, the min m.
fn wpart(rb: u32, u: u32, h: u32) -> WPart {
    let blk = rb + u * 20u;
    let dm = unpack2x16float(rd_u32(blk));
    let q = vec4<u32>(rd_u32(blk + 4u), rd_u32(blk + 8u), rd_u32(blk + 12u), rd_u32(blk + 16u));
    return WPart((q >> vec4<u32>(4u * h)) & vec4<u32>(0x0F0F0F0Fu), dm.x, dm.y);
}
