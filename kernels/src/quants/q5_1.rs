//! Q5_1: 32 weights per block, f16 scale and minimum, 5-bit unsigned quants.
//!
//! Layout (24 bytes, 6 bits/weight), as llama.cpp's `block_q5_1`:
//! ```text
//! d  : f16        scale
//! m  : f16        minimum
//! qh : [u8; 4]    little-endian u32, bit i is bit 4 of element i
//! qs : [u8; 16]   qs[j] & 0x0F is the low nibble of element j, qs[j] >> 4 of element j + 16
//! x[i] = d * q[i] + m
//! ```

use super::q5_0::quant_pair;
use super::q8_1::BlockQ8_1;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block.
pub const QK: usize = 32;

/// One Q5_1 block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// High bits, one per element.
    pub qh: [u8; 4],
    /// Packed low nibbles.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// Dequantize whole blocks; `out.len()` must be `32 * blocks.len()`.
pub fn dequantize(blocks: &[BlockQ5_1], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK / 2 {
            let (q0, q1) = quant_pair(&b.qs, qh, j);
            y[j] = q0 as f32 * d + m;
            y[j + QK / 2] = q1 as f32 * d + m;
        }
    }
}

/// Reference quantizer (llama.cpp `quantize_row_q5_1_ref`): `d = (max - min) / 31`,
/// `q = trunc((x - min) / d + 0.5)` (clamped to 31 against rounding overshoot).
pub fn quantize(x: &[f32], out: &mut [BlockQ5_1]) {
    assert_eq!(x.len(), out.len() * QK);
    for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let min = x.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
        let max = x.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = (((x[j] - min) * id + 0.5) as u8).min(31) as u32;
            let q1 = (((x[j + QK / 2] - min) * id + 0.5) as u8).min(31) as u32;
            b.qs[j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) as u8;
            qh |= ((q0 & 0x10) >> 4) << j;
            qh |= ((q1 & 0x10) >> 4) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// Scalar dot of a Q5_1 row with Q8_1 activations (llama.cpp `ggml_vec_dot_q5_1_q8_1`).
pub fn vec_dot(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    assert_eq!(w.len(), a.len());
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let qh = u32::from_le_bytes(x.qh);
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let (q0, q1) = quant_pair(&x.qs, qh, j);
            sumi += q0 * y.qs[j] as i32 + q1 * y.qs[j + QK / 2] as i32;
        }
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32()) + x.m.to_f32() * y.s.to_f32();
    }
    sum
}
