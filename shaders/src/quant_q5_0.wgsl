// Q5_0: 32 weights in 22 bytes (5.5 bits per weight).
//   d: f16 | qh: u32 (fifth bits) | qs: [u8; 16]
//   weight i (i < 16)  = ((qs[i] & 15) | bit i of qh << 4) - 16) * d
//   weight i + 16      = ((qs[i] >> 4) | bit (i + 16) of qh << 4) - 16) * d
fn load8(rb: u32, g: u32) -> W8 {
    let blk = rb + (g >> 2u) * 22u;
    let j = g & 3u;
    let hh = j & 1u;
    let hi = j >> 1u;
    let d = rd_f16(blk);
    let qh = rd_u32(blk + 2u) >> (hi * 16u + hh * 8u);
    let o = blk + 6u + hh * 8u;
    let q0 = (rd_u32(o) >> (hi * 4u)) & 0x0F0F0F0Fu;
    let q1 = (rd_u32(o + 4u) >> (hi * 4u)) & 0x0F0F0F0Fu;
    return W8(
        (u8x4(q0) + bits4(qh) * 16.0 - 16.0) * d,
        (u8x4(q1) + bits4(qh >> 4u) * 16.0 - 16.0) * d,
    );
}
