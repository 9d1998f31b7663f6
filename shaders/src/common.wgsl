// Shared by every shader that reads GGUF blocks as they are in the file.
//
// `wq` holds a tensor's raw bytes (little endian) as u32 words. Block sizes such as
// Q4_0's 18 bytes leave blocks 2-byte aligned, so reads of a u32 at an offset that is
// 2 mod 4 stitch two words together. The host pads every weight buffer by 4 bytes so
// that `wq[w + 1]` stays inside the buffer.

// Both words are read either way: neighbouring threads often read blocks of both alignments,
// and a branch would make them take turns.
fn rd_u32(off: u32) -> u32 {
    let w = off >> 2u;
    return select((wq[w] >> 16u) | (wq[w + 1u] << 16u), wq[w], (off & 2u) == 0u);
}

fn rd_u16(off: u32) -> u32 {
    return (wq[off >> 2u] >> ((off & 2u) * 8u)) & 0xFFFFu;
}

fn rd_u8(off: u32) -> u32 {
    return (wq[off >> 2u] >> ((off & 3u) * 8u)) & 0xFFu;
}

fn rd_f16(off: u32) -> f32 {
    return unpack2x16float(rd_u16(off)).x;
}

// The four bytes of `q` as floats 0..255.
fn u8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 0xFFu), f32((q >> 8u) & 0xFFu), f32((q >> 16u) & 0xFFu), f32(q >> 24u));
}

// The four bytes of `q` as signed i8 values.
fn i8x4(q: u32) -> vec4<f32> {
    let v = bitcast<vec4<i32>>(vec4<u32>(q << 24u, q << 16u, q << 8u, q)) >> vec4<u32>(24u);
    return vec4<f32>(v);
}

// Bit 0 of each byte of `q`.
fn bit0x4(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 1u), f32((q >> 8u) & 1u), f32((q >> 16u) & 1u), f32((q >> 24u) & 1u));
}

// Bits 0..3 of `h` as four floats (one bit each).
fn bits4(h: u32) -> vec4<f32> {
    return vec4<f32>(f32(h & 1u), f32((h >> 1u) & 1u), f32((h >> 2u) & 1u), f32((h >> 3u) & 1u));
}

// Eight consecutive weights of a row.
struct W8 {
    a: vec4<f32>,
    b: vec4<f32>,
}

// (scale, min) of sub-block j (0..8) of a Q4_K / Q5_K block at byte `blk` (4-byte aligned):
// six bits each in the 12 bytes after d and dmin (ggml's get_scale_min_k4), without branches.
fn k_scale_min(blk: u32, j: u32) -> vec2<f32> {
    return vec2<f32>(k_scale_min_u(blk, j));
}

// k_scale_min as integers.
fn k_scale_min_u(blk: u32, j: u32) -> vec2<u32> {
    let w = blk >> 2u;
    return k_scale_min_h(vec4<u32>(0u, wq[w + 1u], wq[w + 2u], wq[w + 3u]), j);
}

// k_scale_min_u from the block's first 16 bytes as words (d and dmin, then the 12 bytes of
// scales and mins): one 16-byte load where the block is 16-byte aligned.
fn k_scale_min_h(h: vec4<u32>, j: u32) -> vec2<u32> {
    let sh = (j & 3u) * 8u;
    let b0 = (h.y >> sh) & 0xFFu;
    let b1 = (h.z >> sh) & 0xFFu;
    let b2 = (h.w >> sh) & 0xFFu;
    let lo = j < 4u;
    let sc = select((b2 & 15u) | ((b0 >> 6u) << 4u), b0 & 63u, lo);
    let m = select((b2 >> 4u) | ((b1 >> 6u) << 4u), b1 & 63u, lo);
    return vec2<u32>(sc, m);
}

// Bits 0..3 of `h` as bit 0 of four bytes.
fn bits_to_bytes(h: u32) -> u32 {
    return (h & 1u) | ((h & 2u) << 7u) | ((h & 4u) << 14u) | ((h & 8u) << 21u);
}

// Four bytes per word minus `off`'s bytes (0x08080808, 0x10101010, 0x20202020: nibbles, 5-bit
// and 6-bit quants minus 8, 16, 32), as signed bytes: each byte goes through b + 128 - off (no
// borrow between bytes), then its top bit flips back.
fn bytes_signed(v: vec4<u32>, off: u32) -> vec4<u32> {
    return ((v | vec4<u32>(0x80808080u)) - vec4<u32>(off)) ^ vec4<u32>(0x80808080u);
}
