// Q4_0: 32 weights in 18 bytes (4.5 bits per weight): d: f16 | qs: [u8; 16]
//   weight i (i < 16) = (qs[i] & 15 - 8) * d, weight i + 16 = (qs[i] >> 4 - 8) * d.
// On the GPU each row is laid out split (GpuContext::upload_weight): the nb = k / 32 blocks'
// qs first (16 bytes each, so a block's quants are one aligned 16-byte load when the row is),
// then their d (2 bytes each); the row keeps its 18·nb bytes.
// Group j (0..4) of a block: bytes qs[(j & 1) * 8 ..][..8], low nibbles for j < 2, high for j >= 2.
fn load8(rb: u32, g: u32) -> W8 {
    let b = g >> 2u;
    let j = g & 3u;
    let d = rd_f16(rb + 16u * (p.k / 32u) + 2u * b);
    let sh = (j >> 1u) * 4u;
    let o = rb + 16u * b + (j & 1u) * 8u;
    let q0 = (rd_u32(o) >> sh) & 0x0F0F0F0Fu;
    let q1 = (rd_u32(o + 4u) >> sh) & 0x0F0F0F0Fu;
    return W8((u8x4(q0) - 8.0) * d, (u8x4(q1) - 8.0) * d);
}
