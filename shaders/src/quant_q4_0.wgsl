// Q4_0: 32 weights in 18 bytes (4.5 bits per weight).
//   d: f16 | qs: [u8; 16]
//   weight i (i < 16) = (qs[i] & 15 - 8) * d, weight i + 16 = (qs[i] >> 4 - 8) * d.
// Group j (0..4) of a block: bytes qs[(j & 1) * 8 ..][..8], low nibbles for j < 2, high for j >= 2.
fn load8(rb: u32, g: u32) -> W8 {
    let blk = rb + (g >> 2u) * 18u;
    let j = g & 3u;
    let d = rd_f16(blk);
    let sh = (j >> 1u) * 4u;
    let o = blk + 2u + (j & 1u) * 8u;
    let q0 = (rd_u32(o) >> sh) & 0x0F0F0F0Fu;
    let q1 = (rd_u32(o + 4u) >> sh) & 0x0F0F0F0Fu;
    return W8((u8x4(q0) - 8.0) * d, (u8x4(q1) - 8.0) * d);
}
