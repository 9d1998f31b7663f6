//! Q8_1: Q8_0 plus the block sum, the activation format for the formats with an offset
//! (Q4_1, Q5_1), whose dot needs `Σ a` per block.
//!
//! Layout (36 bytes, 9 bits/weight), as llama.cpp's `block_q8_1`:
//! ```text
//! d  : f16        scale, x[i] = d * qs[i]
//! s  : f16        d * Σ qs[i]
//! qs : [i8; 32]   quants in element order
//! ```

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block.
pub const QK: usize = 32;

/// One Q8_1 block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * Σ qs`.
    pub s: f16,
    /// Signed quants.
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// `out[32 * b + i] = d_b * qs_b[i]`.
pub fn dequantize(blocks: &[BlockQ8_1], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = q as f32 * d;
        }
    }
}

/// Reference quantizer (llama.cpp `quantize_row_q8_1_ref`): `q = roundf(x / d)`, `s = d * Σ q`.
pub fn quantize(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * QK);
    for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(sum as f32 * d);
    }
}

/// Activation quantizer, as llama.cpp's SIMD `quantize_row_q8_1`: `id = 127 / amax`,
/// `q = round_ties_even(x * id)`, `s = d * Σ q`. Bit-exact across all paths.
pub fn quantize_activations(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * QK);
    for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(sum as f32 * d);
    }
}
