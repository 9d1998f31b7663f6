// Q6_K: 256 weights in 210 bytes (6.5625 bits per weight).
//   ql: [u8; 128] (low 4 bits) | qh: [u8; 64] (high 2 bits) | scales: [i8; 16] | d: f16
//   Half n (0..2) of 128 weights, quarter q (0..4), lane l (0..32):
//     low  = nibble (q >> 1) of ql[64n + 32(q & 1) + l]
//     high = bits 2q..2q+2 of qh[32n + l]
//     weight 128n + 32q + l = d * scales[8n + l / 16 + 2q] * ((low | high << 4) - 32)
// On the GPU each row is laid out split (GpuContext::upload_weight), nb = k / 256 blocks: all
// ql (128 bytes a block), then all qh (64), all scales (16), all d (2); the row keeps its
// 210·nb bytes, and a block's ql and qh are 16-byte aligned where the row is.
fn q6k_ql(rb: u32, b: u32) -> u32 {
    return rb + 128u * b;
}
fn q6k_qh(rb: u32, b: u32) -> u32 {
    return rb + 128u * (p.k / 256u) + 64u * b;
}
fn q6k_sc(rb: u32, b: u32) -> u32 {
    return rb + 192u * (p.k / 256u) + 16u * b;
}
fn q6k_d(rb: u32, b: u32) -> f32 {
    return rd_f16(rb + 208u * (p.k / 256u) + 2u * b);
}

fn load8(rb: u32, g: u32) -> W8 {
    let b = g >> 5u;
    let e = g & 31u;
    let n = e >> 4u;
    let q = (e >> 2u) & 3u;
    let l0 = (e & 3u) * 8u;
    let sb = rd_u8(q6k_sc(rb, b) + 8u * n + (l0 >> 4u) + 2u * q);
    let scale = q6k_d(rb, b) * f32(bitcast<i32>(sb << 24u) >> 24u);
    let ol = q6k_ql(rb, b) + 64u * n + 32u * (q & 1u) + l0;
    let oh = q6k_qh(rb, b) + 32u * n + l0;
    let nsh = (q >> 1u) * 4u;
    let hsh = 2u * q;
    let v0 = ((rd_u32(ol) >> nsh) & 0x0F0F0F0Fu) | (((rd_u32(oh) >> hsh) & 0x03030303u) << 4u);
    let v1 = ((rd_u32(ol + 4u) >> nsh) & 0x0F0F0F0Fu) | (((rd_u32(oh + 4u) >> hsh) & 0x03030303u) << 4u);
    return W8((u8x4(v0) - 32.0) * scale, (u8x4(v1) - 32.0) * scale);
}
