// Q4_K: 256 weights in 144 bytes (4.5 bits per weight).
//   d: f16 | dmin: f16 | scales: [u8; 12] (8 six-bit scales and mins) | qs: [u8; 128]
//   Chunk c (0..4) of 64 weights uses qs[32c..32c+32]: weights 64c + l take the low nibble of
//   qs[32c + l] with sub-block 2c, weights 64c + 32 + l the high nibble with sub-block 2c + 1.
//   weight = d * scale[sb] * q - dmin * min[sb]  (ggml's get_scale_min_k4 unpacks the 6-bit pairs).

fn load8(rb: u32, g: u32) -> W8 {
    let blk = rb + (g >> 5u) * 144u;
    let e = g & 31u;             // group of 8 inside the block
    let c = e >> 3u;             // chunk of 64
    let hi = (e >> 2u) & 1u;     // second half of the chunk: high nibbles
    let l0 = (e & 3u) * 8u;
    let dm = unpack2x16float(wq[blk >> 2u]);
    let sm = k_scale_min(blk, 2u * c + hi);
    let scale = dm.x * sm.x;
    let mn = dm.y * sm.y;
    let o = blk + 16u + c * 32u + l0;
    let q0 = (wq[o >> 2u] >> (hi * 4u)) & 0x0F0F0F0Fu;
    let q1 = (wq[(o >> 2u) + 1u] >> (hi * 4u)) & 0x0F0F0F0Fu;
    return W8(u8x4(q0) * scale - mn, u8x4(q1) * scale - mn);
}
