//! Q2_K: 2-bit weights in 256-value super-blocks of 16 sub-blocks of 16, each sub-block with a
//! 4-bit scale and a 4-bit minimum: value = d * sc[j] * q - dmin * m[j], q in 0..=3.
//!
//! ```text
//! offset  size  field
//!      0    16  scales  byte j: low nibble = scale of sub-block j, high nibble = its minimum
//!     16    64  qs      bits 2k..2k+2 of qs[32h + l] belong to element 128h + 32k + l
//!                       (h in 0..2, k in 0..4, l in 0..32)
//!     80     2  d       fp16 super-scale of the scales
//!     82     2  dmin    fp16 super-scale of the minimums
//! ```
//! 84 bytes per 256 weights = 2.625 bits/weight.

// The loops mirror ggml's index arithmetic (sub-block j, element 16j + ii), which keeps the
// ports checkable line by line against the reference.
#![allow(clippy::needless_range_loop)]

use bytemuck::{Pod, Zeroable};

use super::q4_k::make_qkx2_quants;
use super::q8_k::{f16_to_f32, f32_to_f16, nearest_int, BlockQ8K, QK_K};

/// One Q2_K super-block (see the module docs for the layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Scale (low nibble) and minimum (high nibble) of each 16-value sub-block.
    pub scales: [u8; QK_K / 16],
    /// Packed 2-bit quants.
    pub qs: [u8; QK_K / 4],
    /// fp16 super-scale of the scales (little-endian bytes).
    pub d: [u8; 2],
    /// fp16 super-scale of the minimums (little-endian bytes).
    pub dmin: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<BlockQ2K>() == 84);

impl BlockQ2K {
    /// The super-scale `d` as f32.
    #[inline]
    pub fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
    /// The super-scale `dmin` as f32.
    #[inline]
    pub fn dmin(&self) -> f32 {
        f16_to_f32(self.dmin)
    }
}

/// Reference quantizer (llama.cpp `quantize_row_q2_K_ref`): `x.len()` must be `out.len() * 256`.
///
/// # Panics
/// If the lengths do not match.
pub fn quantize(x: &[f32], out: &mut [BlockQ2K]) {
    assert_eq!(x.len(), out.len() * QK_K, "q2_k::quantize: length mismatch");
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let mut l_aux = [0u8; 16];
    let mut weights = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut scales = [0.0f32; 16];
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..16 {
            let xs = &xb[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (s, m) = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                &mut l_aux,
                -0.5,
                0.1,
                15,
                true,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..16 {
                y.scales[j] = nearest_int(iscale * scales[j]) as u8;
            }
            y.d = f32_to_f16(max_scale / Q4SCALE);
        } else {
            y.scales = [0; 16];
            y.d = f32_to_f16(0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..16 {
                y.scales[j] |= (nearest_int(iscale * mins[j]) as u8) << 4;
            }
            y.dmin = f32_to_f16(max_min / Q4SCALE);
        } else {
            y.dmin = f32_to_f16(0.0);
        }
        let (df, dminf) = (y.d(), y.dmin());
        for j in 0..16 {
            let d = df * (y.scales[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dminf * (y.scales[j] >> 4) as f32;
            for ii in 0..16 {
                l[16 * j + ii] = nearest_int((xb[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
            }
        }
        for h in 0..2 {
            for k in 0..32 {
                let b = 128 * h + k;
                y.qs[32 * h + k] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
            }
        }
    }
}

/// Quant of element `e` (0..256) of a block, in 0..=3.
#[inline(always)]
fn quant(b: &BlockQ2K, e: usize) -> u8 {
    let (h, k, l) = (e / 128, (e / 32) % 4, e % 32);
    (b.qs[32 * h + l] >> (2 * k)) & 3
}

/// Dequantizes Q2_K blocks into `out` (`blocks.len() * 256` values).
///
/// # Panics
/// If `out.len() != blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ2K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "q2_k::dequantize: length mismatch");
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d();
        let min = b.dmin();
        for (j, oc) in o.chunks_exact_mut(16).enumerate() {
            let sc = b.scales[j];
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            for (ii, v) in oc.iter_mut().enumerate() {
                *v = dl * quant(b, 16 * j + ii) as f32 - ml;
            }
        }
    }
}

/// Scalar dot product of a Q2_K row with a Q8_K row (the oracle for the SIMD paths): per
/// super-block the exact integer sums of ggml_vec_dot_q2_K_q8_K, combined in f32.
///
/// # Panics
/// If `w.len() != a.len()`.
pub fn vec_dot_scalar(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "q2_k::vec_dot: length mismatch");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut summs = 0i32;
        for j in 0..16 {
            summs += y.bsums[j] as i32 * (x.scales[j] >> 4) as i32;
        }
        let mut isum = 0i32;
        for j in 0..16 {
            let mut s = 0i32;
            for e in 16 * j..16 * j + 16 {
                s += quant(x, e) as i32 * y.qs[e] as i32;
            }
            isum += (x.scales[j] & 0xF) as i32 * s;
        }
        sumf += y.d * x.d() * isum as f32 - y.d * x.dmin() * summs as f32;
    }
    sumf
}
