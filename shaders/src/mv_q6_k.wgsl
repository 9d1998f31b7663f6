// Elements 32·(u % 8) .. +32 of a Q6_K block (see quant_q6_k.wgsl) against 32 int8 activations:
// d * Σ over the two halves of 16 of scale_h * (Σ u·q − 32·Σq), u the 6-bit quant (0..63).
const PARTS: u32 = 1u;

fn part_dot(rb: u32, u: u32, part: u32, a: u32, s: u32) -> f32 {
    let blk = rb + (u >> 3u) * 210u;
    let e = u & 7u;
    let n = e >> 2u;
    let q = e & 3u;
    let ol = blk + 64u * n + 32u * (q & 1u);
    let oh = blk + 128u + 32u * n;
    let nsh = (q >> 1u) * 4u;
    let hsh = 2u * q;
    var is0 = 0;
    var is1 = 0;
    for (var i = 0u; i < 4u; i++) {
        let v0 = ((rd_u32(ol + 4u * i) >> nsh) & 0x0F0F0F0Fu) | (((rd_u32(oh + 4u * i) >> hsh) & 0x03030303u) << 4u);
        let v1 = ((rd_u32(ol + 16u + 4u * i) >> nsh) & 0x0F0F0F0Fu) | (((rd_u32(oh + 16u + 4u * i) >> hsh) & 0x03030303u) << 4u);
        is0 += dot4I8Packed(v0, xq[a + i]);
        is1 += dot4I8Packed(v1, xq[a + 4u + i]);
    }
    let sc = rd_u16(blk + 192u + 8u * n + 2u * q);
    let sc0 = bitcast<i32>(sc << 24u) >> 24u;
    let sc1 = bitcast<i32>(sc << 16u) >> 24u;
    let d = rd_f16(blk + 208u);
    return d * f32(sc0 * (is0 - 32 * xsum(s)) + sc1 * (is1 - 32 * xsum(s + 1u)));
}
