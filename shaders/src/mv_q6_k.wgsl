// Elements 32·(u % 8) .. +32 of a Q6_K block (quant_q6_k.wgsl, split rows: ql, qh, scales and
// d of all blocks in turn) against 32 int8 activations: d * Σ over the two halves of 16 of
// scale_h * (Σ u·q − 32·Σq), u the 6-bit quant (0..63). The unit's 32 low-bit bytes and 32
// high-bit bytes are 16-byte loads where the row is 16-byte aligned.
fn part_dot(rb: u32, u: u32, a: u32, s: u32) -> f32 {
    let b = u >> 3u;
    let e = u & 7u;
    let n = e >> 2u;
    let q = e & 3u;
    let ol = q6k_ql(rb, b) + 64u * n + 32u * (q & 1u);
    let oh = q6k_qh(rb, b) + 32u * n;
    var l0: vec4<u32>;
    var l1: vec4<u32>;
    var h0: vec4<u32>;
    var h1: vec4<u32>;
    if ((p.row_bytes & 15u) == 0u) {
        l0 = wq4[ol >> 4u];
        l1 = wq4[(ol >> 4u) + 1u];
        h0 = wq4[oh >> 4u];
        h1 = wq4[(oh >> 4u) + 1u];
    } else {
        // Rows start 2-byte aligned (210-byte blocks).
        l0 = vec4<u32>(rd_u32(ol), rd_u32(ol + 4u), rd_u32(ol + 8u), rd_u32(ol + 12u));
        l1 = vec4<u32>(rd_u32(ol + 16u), rd_u32(ol + 20u), rd_u32(ol + 24u), rd_u32(ol + 28u));
        h0 = vec4<u32>(rd_u32(oh), rd_u32(oh + 4u), rd_u32(oh + 8u), rd_u32(oh + 12u));
        h1 = vec4<u32>(rd_u32(oh + 16u), rd_u32(oh + 20u), rd_u32(oh + 24u), rd_u32(oh + 28u));
    }
    let nsh = vec4<u32>((q >> 1u) * 4u);
    let hsh = vec4<u32>(2u * q);
    let v0 = ((l0 >> nsh) & vec4<u32>(0x0F0F0F0Fu)) | (((h0 >> hsh) & vec4<u32>(0x03030303u)) << vec4<u32>(4u));
    let v1 = ((l1 >> nsh) & vec4<u32>(0x0F0F0F0Fu)) | (((h1 >> hsh) & vec4<u32>(0x03030303u)) << vec4<u32>(4u));
    let x0 = xv(a >> 2u);
    let x1 = xv((a >> 2u) + 1u);
    let is0 = dot4I8Packed(v0.x, x0.x) + dot4I8Packed(v0.y, x0.y) + dot4I8Packed(v0.z, x0.z) + dot4I8Packed(v0.w, x0.w);
    let is1 = dot4I8Packed(v1.x, x1.x) + dot4I8Packed(v1.y, x1.y) + dot4I8Packed(v1.z, x1.z) + dot4I8Packed(v1.w, x1.w);
    let sc = rd_u16(q6k_sc(rb, b) + 8u * n + 2u * q);
    let sc0 = bitcast<i32>(sc << 24u) >> 24u;
    let sc1 = bitcast<i32>(sc << 16u) >> 24u;
    return q6k_d(rb, b) * f32(sc0 * (is0 - 32 * xsum(s)) + sc1 * (is1 - 32 * xsum(s + 1u)));
}

// Half h of elements 32·(u % 8).. of a Q6_K block for gemmq.wgsl: the 6-bit quants minus 32
// (signed bytes) and d·scale of these 16 (Q6_K has a scale per 16).
fn wpart(rb: u32, u: u32, h: u32) -> WPart {
    let b = u >> 3u;
    let e = u & 7u;
    let n = e >> 2u;
    let q = e & 3u;
    let ol = q6k_ql(rb, b) + 64u * n + 32u * (q & 1u) + 16u * h;
    let oh = q6k_qh(rb, b) + 32u * n + 16u * h;
    var l: vec4<u32>;
    var hb: vec4<u32>;
    if ((p.row_bytes & 15u) == 0u) {
        l = wq4[ol >> 4u];
        hb = wq4[oh >> 4u];
    } else {
        l = vec4<u32>(rd_u32(ol), rd_u32(ol + 4u), rd_u32(ol + 8u), rd_u32(ol + 12u));
        hb = vec4<u32>(rd_u32(oh), rd_u32(oh + 4u), rd_u32(oh + 8u), rd_u32(oh + 12u));
    }
    let v = ((l >> vec4<u32>((q >> 1u) * 4u)) & vec4<u32>(0x0F0F0F0Fu)) | (((hb >> vec4<u32>(2u * q)) & vec4<u32>(0x03030303u)) << vec4<u32>(4u));
    let sc = rd_u16(q6k_sc(rb, b) + 8u * n + 2u * q);
    let s = bitcast<i32>(sc << (24u - 8u * h)) >> 24u;
    return WPart(bytes_signed(v, 0x20202020u), q6k_d(rb, b) * f32(s), 0.0);
}
