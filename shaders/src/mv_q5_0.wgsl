// Q5_0 block (see quant_q5_0.wgsl) against 32 int8 activations: d * (Σ u·q − 16·Σq), u the
// nibble plus its fifth bit (0..31).
fn part_dot(rb: u32, u: u32, a: u32, s: u32) -> f32 {
    let blk = rb + u * 22u;
    let d = rd_f16(blk);
    let qh = rd_u32(blk + 2u);
    // Four quant words written out (wgpu bounds loops with a counter).
    let isum = (q5_0_word(blk, qh, 0u, a) + q5_0_word(blk, qh, 1u, a))
        + (q5_0_word(blk, qh, 2u, a) + q5_0_word(blk, qh, 3u, a));
    return d * f32(isum - 16 * (xsum(s) + xsum(s + 1u)));
}

// Quant word j of the block: weights 4j..4j + 3 (low nibbles) and 16 + 4j.. (high).
fn q5_0_word(blk: u32, qh: u32, j: u32, a: u32) -> i32 {
    let q = rd_u32(blk + 6u + 4u * j);
    let lo = (q & 0x0F0F0F0Fu) | (bits_to_bytes(qh >> (4u * j)) << 4u);
    let hi = ((q >> 4u) & 0x0F0F0F0Fu) | (bits_to_bytes(qh >> (16u + 4u * j)) << 4u);
    return dot4I8Packed(lo, xw(a + j)) + dot4I8Packed(hi, xw(a + 4u + j));
}

// Half h of block u for gemmq.wgsl: the nibbles with their fifth bits, minus 16 (signed bytes).
fn wpart(rb: u32, u: u32, h: u32) -> WPart {
    let blk = rb + u * 22u;
    let qh = rd_u32(blk + 2u) >> (16u * h);
    let q = (vec4<u32>(rd_u32(blk + 6u), rd_u32(blk + 10u), rd_u32(blk + 14u), rd_u32(blk + 18u)) >> vec4<u32>(4u * h))
        & vec4<u32>(0x0F0F0F0Fu);
    let hi = vec4<u32>(bits_to_bytes(qh), bits_to_bytes(qh >> 4u), bits_to_bytes(qh >> 8u), bits_to_bytes(qh >> 12u));
    return WPart(bytes_signed(q | (hi << vec4<u32>(4u)), 0x10101010u), rd_f16(blk), 0.0);
}
