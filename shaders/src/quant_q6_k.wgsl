// Q6_K: 256 weights in 210 bytes (6.5625 bits per weight).
//   ql: [u8; 128] (low 4 bits) | qh: [u8; 64] (high 2 bits) | scales: [i8; 16] | d: f16
//   Half n (0..2) of 128 weights, quarter q (0..4), lane l (0..32):
//     low  = nibble (q >> 1) of ql[64n + 32(q & 1) + l]
//     high = bits 2q..2q+2 of qh[32n + l]
//     weight 128n + 32q + l = d * scales[8n + l / 16 + 2q] * ((low | high << 4) - 32)
fn load8(rb: u32, g: u32) -> W8 {
    let blk = rb + (g >> 5u) * 210u;
    let e = g & 31u;
    let n = e >> 4u;
    let q = (e >> 2u) & 3u;
    let l0 = (e & 3u) * 8u;
    let d = rd_f16(blk + 208u);
    let sb = rd_u8(blk + 192u + 8u * n + (l0 >> 4u) + 2u * q);
    let scale = d * f32(bitcast<i32>(sb << 24u) >> 24u);
    let ol = blk + 64u * n + 32u * (q & 1u) + l0;
    let oh = blk + 128u + 32u * n + l0;
    let nsh = (q >> 1u) * 4u;
    let hsh = 2u * q;
    let v0 = ((rd_u32(ol) >> nsh) & 0x0F0F0F0Fu) | (((rd_u32(oh) >> hsh) & 0x03030303u) << 4u);
    let v1 = ((rd_u32(ol + 4u) >> nsh) & 0x0F0F0F0Fu) | (((rd_u32(oh + 4u) >> hsh) & 0x03030303u) << 4u);
    return W8((u8x4(v0) - 32.0) * scale, (u8x4(v1) - 32.0) * scale);
}
