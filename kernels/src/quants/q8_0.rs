//! Q8_0: 32 weights per block, one f16 scale, 8-bit signed quants.
//!
//! Layout (34 bytes, 8.5 bits/weight), as llama.cpp's `block_q8_0`:
//! ```text
//! d  : f16        scale, x[i] = d * qs[i]
//! qs : [i8; 32]   quants in element order
//! ```
//! Q8_0 is also the activation format the 32-element weight formats with a symmetric range
//! (Q4_0, Q5_0, Q8_0) are dotted against.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block.
pub const QK: usize = 32;

/// One Q8_0 block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Signed quants.
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// `out[32 * b + i] = d_b * qs_b[i]`. `out.len()` must be `32 * blocks.len()`.
pub fn dequantize(blocks: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = q as f32 * d;
        }
    }
}

/// Reference quantizer, rounding as llama.cpp's `quantize_row_q8_0_ref`:
/// `d = amax / 127`, `q = roundf(x / d)` (ties away from zero).
pub fn quantize(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * QK);
    for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
    }
}

/// Activation quantizer used on the fly before a dot product, rounding as llama.cpp's SIMD
/// `quantize_row_q8_0` (which is what runs on x86 and ARM): `id = 127 / amax`, `q =
/// round_ties_even(x * id)`. Every SIMD path reproduces this bit for bit, so quants never lie
/// outside `[-127, 127]`.
pub fn quantize_activations(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * QK);
    for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round_ties_even() as i8;
        }
    }
}

/// Scalar `Σ w·a` of a Q8_0 row against Q8_0 activations (llama.cpp `ggml_vec_dot_q8_0_q8_0`).
pub fn vec_dot(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), a.len());
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 = x.qs.iter().zip(&y.qs).map(|(&p, &q)| p as i32 * q as i32).sum();
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}
