// Q5_K: 256 weights in 176 bytes (5.5 bits per weight).
//   d: f16 | dmin: f16 | scales: [u8; 12] | qh: [u8; 32] | qs: [u8; 128]
//   As Q4_K, plus a fifth bit: weight 64c + 32h + l takes bit (2c + h) of qh[l] as 16.

fn load8(rb: u32, g: u32) -> W8 {
    let blk = rb + (g >> 5u) * 176u;
    let e = g & 31u;
    let c = e >> 3u;
    let hi = (e >> 2u) & 1u;
    let l0 = (e & 3u) * 8u;
    let is = 2u * c + hi;
    let dm = unpack2x16float(wq[blk >> 2u]);
    let sm = k_scale_min(blk, is);
    let scale = dm.x * sm.x;
    let mn = dm.y * sm.y;
    let oh = (blk + 16u + l0) >> 2u;
    let h0 = bit0x4(wq[oh] >> is);
    let h1 = bit0x4(wq[oh + 1u] >> is);
    let o = (blk + 48u + c * 32u + l0) >> 2u;
    let q0 = (wq[o] >> (hi * 4u)) & 0x0F0F0F0Fu;
    let q1 = (wq[o + 1u] >> (hi * 4u)) & 0x0F0F0F0Fu;
    return W8((u8x4(q0) + h0 * 16.0) * scale - mn, (u8x4(q1) + h1 * 16.0) * scale - mn);
}
