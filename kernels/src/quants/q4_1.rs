//! Q4_1: 32 weights per block, f16 scale and minimum, 4-bit unsigned quants.
//!
//! Layout (20 bytes, 5 bits/weight), as llama.cpp's `block_q4_1`:
//! ```text
//! d  : f16        scale
//! m  : f16        minimum
//! qs : [u8; 16]   qs[j] & 0x0F is element j, qs[j] >> 4 is element j + 16
//! x[i] = d * q[i] + m
//! ```

use super::q8_1::BlockQ8_1;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block.
pub const QK: usize = 32;

/// One Q4_1 block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Packed nibbles.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// Dequantize whole blocks; `out.len()` must be `32 * blocks.len()`.
pub fn dequantize(blocks: &[BlockQ4_1], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = (q & 0x0F) as f32 * d + m;
            y[j + QK / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

/// Reference quantizer (llama.cpp `quantize_row_q4_1_ref`): `d = (max - min) / 15`,
/// `q = min(15, trunc((x - min) / d + 0.5))`.
pub fn quantize(x: &[f32], out: &mut [BlockQ4_1]) {
    assert_eq!(x.len(), out.len() * QK);
    for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let min = x.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
        let max = x.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        for j in 0..QK / 2 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Scalar dot of a Q4_1 row with Q8_1 activations (llama.cpp `ggml_vec_dot_q4_1_q8_1`):
/// `Σ_b d_w d_a Σ q_w q_a + m_w s_a`.
pub fn vec_dot(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    assert_eq!(w.len(), a.len());
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let v0 = (x.qs[j] & 0x0F) as i32;
            let v1 = (x.qs[j] >> 4) as i32;
            sumi += v0 * y.qs[j] as i32 + v1 * y.qs[j + QK / 2] as i32;
        }
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32()) + x.m.to_f32() * y.s.to_f32();
    }
    sum
}
