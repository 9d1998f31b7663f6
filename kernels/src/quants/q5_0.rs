//! Q5_0: 32 weights per block, one f16 scale, 5-bit quants with an implicit offset of 16.
//!
//! Layout (22 bytes, 5.5 bits/weight), as llama.cpp's `block_q5_0`:
//! ```text
//! d  : f16        scale
//! qh : [u8; 4]    little-endian u32, bit i is bit 4 of element i
//! qs : [u8; 16]   qs[j] & 0x0F is the low nibble of element j, qs[j] >> 4 of element j + 16
//! x[i] = d * (q[i] - 16)
//! ```

use super::q8_0::BlockQ8_0;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block.
pub const QK: usize = 32;

/// One Q5_0 block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// High bits, one per element.
    pub qh: [u8; 4],
    /// Packed low nibbles.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// The 5-bit unsigned quant of element `j` (0..16) and `j + 16`.
#[inline(always)]
pub(crate) fn quant_pair(qs: &[u8; 16], qh: u32, j: usize) -> (i32, i32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (((qs[j] as u32 & 0x0F) | h0) as i32, ((qs[j] as u32 >> 4) | h1) as i32)
}

/// Dequantize whole blocks; `out.len()` must be `32 * blocks.len()`.
pub fn dequantize(blocks: &[BlockQ5_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK / 2 {
            let (q0, q1) = quant_pair(&b.qs, qh, j);
            y[j] = (q0 - 16) as f32 * d;
            y[j + QK / 2] = (q1 - 16) as f32 * d;
        }
    }
}

/// Reference quantizer (llama.cpp `quantize_row_q5_0_ref`): the value of largest magnitude
/// maps to -16, `d = max / -16`, `q = min(31, trunc(x / d + 16.5))`.
pub fn quantize(x: &[f32], out: &mut [BlockQ5_0]) {
    assert_eq!(x.len(), out.len() * QK);
    for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = ((x[j] * id + 16.5) as i8).min(31) as u32;
            let q1 = ((x[j + QK / 2] * id + 16.5) as i8).min(31) as u32;
            b.qs[j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) as u8;
            qh |= ((q0 & 0x10) >> 4) << j;
            qh |= ((q1 & 0x10) >> 4) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// Scalar dot of a Q5_0 row with Q8_0 activations (llama.cpp `ggml_vec_dot_q5_0_q8_0`).
pub fn vec_dot(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), a.len());
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let qh = u32::from_le_bytes(x.qh);
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let (q0, q1) = quant_pair(&x.qs, qh, j);
            sumi += (q0 - 16) * y.qs[j] as i32 + (q1 - 16) * y.qs[j + QK / 2] as i32;
        }
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}
