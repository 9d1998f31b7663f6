//! Q5_K: 5-bit weights in 256-value super-blocks of 8 sub-blocks of 32, each sub-block with a
//! 6-bit scale and a 6-bit minimum: value = d * sc[j] * q - dmin * m[j], q in 0..=31.
//!
//! ```text
//! offset  size  field
//!      0     2  d       fp16 super-scale of the sub-block scales
//!      2     2  dmin    fp16 super-scale of the sub-block minimums
//!      4    12  scales  8 scales + 8 mins, 6 bits each (same packing as Q4_K)
//!     16    32  qh      5th bits: bit 2i of qh[l] belongs to element 64i + l,
//!                       bit 2i+1 to element 64i + 32 + l (i in 0..4, l in 0..32)
//!     48   128  qs      low 4 bits, laid out as Q4_K's qs
//! ```
//! 176 bytes per 256 weights = 5.5 bits/weight.

// The loops mirror ggml's index arithmetic (sub-block j, element 16j + ii), which keeps the
// ports checkable line by line against the reference.
#![allow(clippy::needless_range_loop)]

use bytemuck::{Pod, Zeroable};

use super::q4_k::{quantize_scales_mins_k, scale_min_k4, unpack_scales_mins};
use super::q8_k::{f16_to_f32, BlockQ8K, QK_K};

/// One Q5_K super-block (see the module docs for the layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ5K {
    /// fp16 super-scale for the sub-block scales (little-endian bytes).
    pub d: [u8; 2],
    /// fp16 super-scale for the sub-block minimums (little-endian bytes).
    pub dmin: [u8; 2],
    /// Packed 6-bit scales and minimums (Q4_K packing).
    pub scales: [u8; 12],
    /// High (5th) bits.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(core::mem::size_of::<BlockQ5K>() == 176);

impl BlockQ5K {
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

/// Reference quantizer (llama.cpp `quantize_row_q5_K_ref`): `x.len()` must be `out.len() * 256`.
///
/// # Panics
/// If the lengths do not match.
pub fn quantize(x: &[f32], out: &mut [BlockQ5K]) {
    assert_eq!(x.len(), out.len() * QK_K, "q5_k::quantize: length mismatch");
    let mut l = [0u8; QK_K];
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (d, dmin, scales) = quantize_scales_mins_k(xb, 31, -0.5, 0.1, 15, &mut l);
        y.d = d;
        y.dmin = dmin;
        y.scales = scales;
        y.qh = [0; QK_K / 8];
        let (mut m1, mut m2) = (1u8, 2u8);
        for i in 0..4 {
            for j in 0..32 {
                let mut l1 = l[64 * i + j];
                if l1 > 15 {
                    l1 -= 16;
                    y.qh[j] |= m1;
                }
                let mut l2 = l[64 * i + 32 + j];
                if l2 > 15 {
                    l2 -= 16;
                    y.qh[j] |= m2;
                }
                y.qs[32 * i + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

/// Dequantizes Q5_K blocks into `out` (`blocks.len() * 256` values).
///
/// # Panics
/// If `out.len() != blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ5K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "q5_k::dequantize: length mismatch");
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d();
        let min = b.dmin();
        for i in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * i, &b.scales);
            let (sc2, m2) = scale_min_k4(2 * i + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (u1, u2) = (1u8 << (2 * i), 2u8 << (2 * i));
            let q = &b.qs[32 * i..32 * i + 32];
            for l in 0..32 {
                let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                o[64 * i + l] = d1 * ((q[l] & 0xF) + h1) as f32 - m1;
                o[64 * i + 32 + l] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

/// Scalar dot product of a Q5_K row with a Q8_K row (the oracle for the SIMD paths): per
/// super-block the exact integer sums of ggml_vec_dot_q5_K_q8_K, combined in f32.
///
/// # Panics
/// If `w.len() != a.len()`.
pub fn vec_dot_scalar(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "q5_k::vec_dot: length mismatch");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sm = unpack_scales_mins(&x.scales);
        let mut summ = 0i32;
        for j in 0..16 {
            summ += y.bsums[j] as i32 * sm[8 + j / 2] as i32;
        }
        let mut sumi = 0i32;
        for i in 0..4 {
            let q = &x.qs[32 * i..32 * i + 32];
            let q8 = &y.qs[64 * i..64 * i + 64];
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let h1 = ((x.qh[l] >> (2 * i)) & 1) << 4;
                let h2 = ((x.qh[l] >> (2 * i + 1)) & 1) << 4;
                lo += ((q[l] & 0xF) | h1) as i32 * q8[l] as i32;
                hi += ((q[l] >> 4) | h2) as i32 * q8[32 + l] as i32;
            }
            sumi += sm[2 * i] as i32 * lo + sm[2 * i + 1] as i32 * hi;
        }
        sumf += x.d() * y.d * sumi as f32 - x.dmin() * y.d * summ as f32;
    }
    sumf
}
