// Q8_0: 32 weights in 34 bytes (8.5 bits per weight).
//   d: f16 | qs: [i8; 32]; weight i = qs[i] * d.
fn load8(rb: u32, g: u32) -> W8 {
    let blk = rb + (g >> 2u) * 34u;
    let d = rd_f16(blk);
    let o = blk + 2u + (g & 3u) * 8u;
    return W8(i8x4(rd_u32(o)) * d, i8x4(rd_u32(o + 4u)) * d);
}
