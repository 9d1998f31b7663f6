// Q4_1: 32 weights in 20 bytes (5 bits per weight).
//   d: f16 | m: f16 | qs: [u8; 16]
//   weight i (i < 16) = (qs[i] & 15) * d + m, weight i + 16 = (qs[i] >> 4) * d + m.
fn load8(rb: u32, g: u32) -> W8 {
    let blk = rb + (g >> 2u) * 20u;
    let j = g & 3u;
    let dm = unpack2x16float(wq[blk >> 2u]);
    let sh = (j >> 1u) * 4u;
    let o = blk + 4u + (j & 1u) * 8u;
    let q0 = (rd_u32(o) >> sh) & 0x0F0F0F0Fu;
    let q1 = (rd_u32(o + 4u) >> sh) & 0x0F0F0F0Fu;
    return W8(u8x4(q0) * dm.x + dm.y, u8x4(q1) * dm.x + dm.y);
}
