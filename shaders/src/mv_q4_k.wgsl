// Sub-block i = u % 8 (32 weights) of a Q4_K block (see quant_q4_k.wgsl) against 32 int8
// activations, in two parts of sixteen: part j takes quant words 4j .. 4j + 3 of the sub-block:
// d * scale_i * Σ u·q − dmin * min_i * Σq. Two threads share a sub-block, so a subgroup reads
// consecutive bytes.
const PARTS: u32 = 2u;

fn part_dot(rb: u32, u: u32, j: u32, a: u32, s: u32) -> f32 {
    let blk = rb + (u >> 3u) * 144u;
    let i = u & 7u;
    let sm = k_scale_min(blk, i);
    let w = (blk >> 2u) + 4u + (i >> 1u) * 8u + 4u * j;
    let sh = (i & 1u) * 4u;
    // Sub-blocks start 16-byte aligned (16 + 32c bytes into a 144-byte block), so are the parts.
    let q = (wq4[w >> 2u] >> vec4<u32>(sh)) & vec4<u32>(0x0F0F0F0Fu);
    let x = xq4[(a + 4u * j) >> 2u];
    let isum = dot4I8Packed(q.x, x.x) + dot4I8Packed(q.y, x.y) + dot4I8Packed(q.z, x.z) + dot4I8Packed(q.w, x.w);
    let ones = 0x01010101u;
    let asum = dot4I8Packed(x.x, ones) + dot4I8Packed(x.y, ones) + dot4I8Packed(x.z, ones) + dot4I8Packed(x.w, ones);
    let dm = unpack2x16float(wq[blk >> 2u]);
    return dm.x * sm.x * f32(isum) - dm.y * sm.y * f32(asum);
}
