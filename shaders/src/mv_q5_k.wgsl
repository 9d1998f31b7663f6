// Sub-block j = u % 8 (32 weights) of a Q5_K block (see quant_q5_k.wgsl) against 32 int8
// activations: d * scale_j * Σ u·q − dmin * min_j * Σq, u the nibble plus bit j of qh (0..31).
fn part_dot(rb: u32, u: u32, a: u32, s: u32) -> f32 {
    let blk = rb + (u >> 3u) * 176u;
    let j = u & 7u;
    let sm = k_scale_min(blk, j);
    let wh = (blk >> 2u) + 4u;
    let w = wh + 8u + (j >> 1u) * 8u;
    let sh = (j & 1u) * 4u;
    // Eight quant words written out (wgpu bounds loops with a counter).
    let isum = ((q5_k_word(w, wh, sh, j, 0u, a) + q5_k_word(w, wh, sh, j, 1u, a))
        + (q5_k_word(w, wh, sh, j, 2u, a) + q5_k_word(w, wh, sh, j, 3u, a)))
        + ((q5_k_word(w, wh, sh, j, 4u, a) + q5_k_word(w, wh, sh, j, 5u, a))
        + (q5_k_word(w, wh, sh, j, 6u, a) + q5_k_word(w, wh, sh, j, 7u, a)));
    let dm = unpack2x16float(wq[blk >> 2u]);
    return dm.x * sm.x * f32(isum) - dm.y * sm.y * f32(xsum(s) + xsum(s + 1u));
}

// Word i of sub-block j: nibbles (shift sh) of quant word w + i, fifth bits from high word wh + i.
fn q5_k_word(w: u32, wh: u32, sh: u32, j: u32, i: u32, a: u32) -> i32 {
    let v = ((wq[w + i] >> sh) & 0x0F0F0F0Fu) | (((wq[wh + i] >> j) & 0x01010101u) << 4u);
    return dot4I8Packed(v, xw(a + i));
}

// Half h of sub-block u % 8 for gemmq.wgsl: nibbles with their fifth bits (0..31), d·scale,
// −dmin·min.
fn wpart(rb: u32, u: u32, h: u32) -> WPart {
    let blk = rb + (u >> 3u) * 176u;
    let j = u & 7u;
    let sm = k_scale_min(blk, j);
    let wh = (blk >> 2u) + 4u + 4u * h;
    let w = (blk >> 2u) + 12u + (j >> 1u) * 8u + 4u * h;
    let lo = (vec4<u32>(wq[w], wq[w + 1u], wq[w + 2u], wq[w + 3u]) >> vec4<u32>((j & 1u) * 4u)) & vec4<u32>(0x0F0F0F0Fu);
    let hi = (vec4<u32>(wq[wh], wq[wh + 1u], wq[wh + 2u], wq[wh + 3u]) >> vec4<u32>(j)) & vec4<u32>(0x01010101u);
    let dm = unpack2x16float(wq[blk >> 2u]);
    return WPart(lo | (hi << vec4<u32>(4u)), dm.x * sm.x, -dm.y * sm.y);
}
