//! Q8_K: the activation block the K-quant weight formats are multiplied with.
//!
//! A super-block holds `QK_K` = 256 values:
//!
//! ```text
//! offset  size  field
//!      0     4  d      f32 scale: value = d * q
//!      4   256  qs     i8 quants, q in -127..=127 (element order)
//!    260    32  bsums  i16 sums of qs over each run of 16 (bsums[j] = sum qs[16j..16j+16])
//! ```
//! 292 bytes per 256 values = 9.125 bits/value. `bsums` lets the weight formats that carry a
//! per-sub-block minimum (Q2_K, Q4_K, Q5_K) fold it in without touching `qs` again.
//!
//! Also home of the helpers shared by the K-quant formats (`QK_K`, `nearest_int`, fp16 bytes).

// The loops mirror ggml's index arithmetic (sub-block j, element 16j + ii), which keeps the
// ports checkable line by line against the reference.
#![allow(clippy::needless_range_loop)]

use bytemuck::{Pod, Zeroable};

use super::{q2_k::BlockQ2K, q3_k::BlockQ3K, q4_k::BlockQ4K, q5_k::BlockQ5K, q6_k::BlockQ6K};

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// One Q8_K super-block (see the module docs for the layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8K {
    /// Scale: value = d * q.
    pub d: f32,
    /// Quants in element order.
    pub qs: [i8; QK_K],
    /// Sum of each run of 16 quants.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(core::mem::size_of::<BlockQ8K>() == 292);

impl BlockQ8K {
    /// An all-zero block (d = 0).
    pub const ZERO: BlockQ8K = BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
}

/// Round to nearest, ties to even, exactly as ggml's `nearest_int` (valid for |f| <= 2^22,
/// which every caller guarantees; outside that range it returns the same bits ggml does).
#[inline(always)]
pub(crate) fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// fp16 stored as little-endian bytes -> f32.
#[inline(always)]
pub(crate) fn f16_to_f32(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// f32 -> fp16 little-endian bytes, round to nearest even (as `GGML_FP32_TO_FP16`).
#[inline(always)]
pub(crate) fn f32_to_f16(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// Quantizes `x` (a multiple of 256 values) into `out` (`x.len() / 256` blocks), following
/// llama.cpp's `quantize_row_q8_K_ref`: d = max / -127 with `max` the value of largest
/// magnitude (first one on ties), q = nearest_int(x / d) capped at 127, bsums per 16.
///
/// # Panics
/// If `x.len() != out.len() * 256`.
pub fn quantize(x: &[f32], out: &mut [BlockQ8K]) {
    assert_eq!(x.len(), out.len() * QK_K, "q8_k::quantize: length mismatch");
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            *y = BlockQ8K::ZERO;
            continue;
        }
        let iscale = -127.0f32 / max;
        for (q, &v) in y.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (j, s) in y.bsums.iter_mut().enumerate() {
            *s = y.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
        }
        y.d = 1.0 / iscale;
    }
}

/// Dequantizes Q8_K blocks into `out` (`blocks.len() * 256` values).
///
/// # Panics
/// If `out.len() != blocks.len() * 256`.
pub fn dequantize(blocks: &[BlockQ8K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "q8_k::dequantize: length mismatch");
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (v, &q) in o.iter_mut().zip(&b.qs) {
            *v = b.d * q as f32;
        }
    }
}

/// Recomputes `bsums` from `qs` (for callers that build blocks by hand, e.g. tests).
pub fn fill_bsums(b: &mut BlockQ8K) {
    for j in 0..QK_K / 16 {
        b.bsums[j] = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
    }
}

/// The K-quant kernels of one instruction-set path: the Q8_K activation quantizer and the dot
/// product of each K-quant weight format with Q8_K activations. Tables for SIMD paths are only
/// handed out after the CPU was checked (`simd::*_kquants::kernels()`), so calling through
/// them is safe.
#[derive(Clone, Copy, Debug)]
pub struct KQuantKernels {
    /// Path name: "scalar", "avx2", "avx512", "avx512vnni", "neon", "neon+dotprod".
    pub name: &'static str,
    /// Quantizes f32 activations (a multiple of 256) to Q8_K; bit-identical on every path.
    pub quantize_q8_k: fn(&[f32], &mut [BlockQ8K]),
    /// Q2_K row . Q8_K row.
    pub dot_q2_k: fn(&[BlockQ2K], &[BlockQ8K]) -> f32,
    /// Q3_K row . Q8_K row.
    pub dot_q3_k: fn(&[BlockQ3K], &[BlockQ8K]) -> f32,
    /// Q4_K row . Q8_K row.
    pub dot_q4_k: fn(&[BlockQ4K], &[BlockQ8K]) -> f32,
    /// Q5_K row . Q8_K row.
    pub dot_q5_k: fn(&[BlockQ5K], &[BlockQ8K]) -> f32,
    /// Q6_K row . Q8_K row.
    pub dot_q6_k: fn(&[BlockQ6K], &[BlockQ8K]) -> f32,
}

impl KQuantKernels {
    /// The scalar reference kernels (always available).
    pub const SCALAR: KQuantKernels = KQuantKernels {
        name: "scalar",
        quantize_q8_k: quantize,
        dot_q2_k: super::q2_k::vec_dot_scalar,
        dot_q3_k: super::q3_k::vec_dot_scalar,
        dot_q4_k: super::q4_k::vec_dot_scalar,
        dot_q5_k: super::q5_k::vec_dot_scalar,
        dot_q6_k: super::q6_k::vec_dot_scalar,
    };

    /// Every K-quant kernel table this CPU can run, scalar first, best last (tests and
    /// benchmarks iterate over it).
    pub fn available() -> Vec<KQuantKernels> {
        let mut v = vec![Self::SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            v.extend(crate::simd::avx2_kquants::kernels());
            v.extend(crate::simd::avx512_kquants::all_kernels());
        }
        #[cfg(target_arch = "aarch64")]
        v.extend(crate::simd::neon_kquants::all_kernels());
        v
    }

    /// The fastest table this CPU can run.
    pub fn best() -> KQuantKernels {
        *Self::available().last().unwrap_or(&Self::SCALAR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(126.9), 127);
    }

    #[test]
    fn quantize_picks_signed_max() {
        let mut x = vec![0.0f32; QK_K];
        x[3] = -2.0;
        x[7] = 1.0;
        let mut b = [BlockQ8K::ZERO];
        quantize(&x, &mut b);
        // iscale = -127 / -2 = 63.5: x[3] -> -127, x[7] -> 63.5 -> 64 (ties to even).
        assert_eq!(b[0].qs[3], -127);
        assert_eq!(b[0].qs[7], 64);
        assert!((b[0].d - 2.0 / 127.0).abs() < 1e-9);
        assert_eq!(b[0].bsums[0], -127 + 64);
    }
}
