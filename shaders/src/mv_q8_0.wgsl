// Q8_0 block (see quant_q8_0.wgsl) against 32 int8 activations: d * Σ w·q.
fn part_dot(rb: u32, u: u32, a: u32, s: u32) -> f32 {
    let blk = rb + u * 34u;
    let d = rd_f16(blk);
    // Eight quant words written out (wgpu bounds loops with a counter).
    let isum = ((q8_0_word(blk, 0u, a) + q8_0_word(blk, 1u, a)) + (q8_0_word(blk, 2u, a) + q8_0_word(blk, 3u, a)))
        + ((q8_0_word(blk, 4u, a) + q8_0_word(blk, 5u, a)) + (q8_0_word(blk, 6u, a) + q8_0_word(blk, 7u, a)));
    return d * f32(isum);
}

fn q8_0_word(blk: u32, j: u32, a: u32) -> i32 {
    return dot4I8Packed(rd_u32(blk + 2u + 4u * j), xw(a + j));
}

// Half h of block u for gemmq.wgsl: quant bytes 16h.. as they are.
fn wpart(rb: u32, u: u32, h: u32) -> WPart {
    let o = rb + u * 34u + 2u + 16u * h;
    return WPart(vec4<u32>(rd_u32(o), rd_u32(o + 4u), rd_u32(o + 8u), rd_u32(o + 12u)), rd_f16(rb + u * 34u), 0.0);
}
