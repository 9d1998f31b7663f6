// Q4_K (see quant_q4_k.wgsl) against int8 activations. Byte chunk c (0..3, 32 bytes) of a
// block holds sub-block 2c in its low nibbles and 2c + 1 in its high ones; unit u takes half h of
// chunk c (r = u % 8 = 2c + h): one 16-byte load gives weights 16h..16h + 15 of both
// sub-blocks, so each byte is loaded once. Integer sums per sub-block weighted by the 6-bit
// scales and mins as llama.cpp's CPU does: d * Σ sc_i Σ u·q − dmin * Σ m_i Σq (all units of
// a block share its Q8_K activation scale, so the caller's per-unit scale is that of unit u).
fn part_dot(rb: u32, u: u32, a: u32, s: u32) -> f32 {
    let blk = rb + (u >> 3u) * 144u;
    let r = u & 7u;
    let c = r >> 1u;
    let h = r & 1u;
    // The block's d, dmin, scales and mins: one 16-byte load (blocks are 144 bytes: aligned).
    let head = wq4[blk >> 4u];
    let lo = k_scale_min_h(head, 2u * c);
    let hi = k_scale_min_h(head, 2u * c + 1u);
    // Chunks start 16 + 32c bytes into the 144-byte block: 16-byte aligned.
    let q = wq4[((blk >> 2u) + 4u + 8u * c + 4u * h) >> 2u];
    let ql = q & vec4<u32>(0x0F0F0F0Fu);
    let qh = (q >> vec4<u32>(4u)) & vec4<u32>(0x0F0F0F0Fu);
    // Activations of sub-block 2c (words a − 4h ..) and 2c + 1 (8 words on), their 16-sums
    // at s − h and s − h + 2.
    let xl = xv((a - 4u * h) >> 2u);
    let xh = xv((a - 4u * h + 8u) >> 2u);
    let il = dot4I8Packed(ql.x, xl.x) + dot4I8Packed(ql.y, xl.y) + dot4I8Packed(ql.z, xl.z) + dot4I8Packed(ql.w, xl.w);
    let ih = dot4I8Packed(qh.x, xh.x) + dot4I8Packed(qh.y, xh.y) + dot4I8Packed(qh.z, xh.z) + dot4I8Packed(qh.w, xh.w);
    let si = i32(lo.x) * il + i32(hi.x) * ih;
    let mi = i32(lo.y) * xsum(s - h) + i32(hi.y) * xsum(s - h + 2u);
    let dm = unpack2x16float(head.x);
    return dm.x * f32(si) - dm.y * f32(mi);
}

// Half h of sub-block u % 8 for gemmq.wgsl: nibbles (0..15), d·scale, −dmin·min.
fn wpart(rb: u32, u: u32, h: u32) -> WPart {
    let blk = rb + (u >> 3u) * 144u;
    let r = u & 7u;
    let sm = k_scale_min(blk, r);
    let q = wq4[((blk >> 2u) + 4u + 8u * (r >> 1u) + 4u * h) >> 2u];
    let dm = unpack2x16float(wq[blk >> 2u]);
    return WPart((q >> vec4<u32>(4u * (r & 1u))) & vec4<u32>(0x0F0F0F0Fu), dm.x * sm.x, -dm.y * sm.y);
}
