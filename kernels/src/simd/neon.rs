//! aarch64 NEON kernels, with `sdot` (Armv8.2 dotprod) when the CPU has it.
//!
//! Integer block sums are reduced to a scalar (`addv`) per block and scaled exactly as the scalar
//! reference does, so these dot products match it bit for bit. `sdot` is issued through inline
//! assembly because its Rust intrinsic is not stable yet; without dotprod the same sums come
//! from `smull` + `smlal2` + `sadalp`.

use crate::dispatch::{KernelPath, KernelTable};
use crate::quants::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use core::arch::aarch64::*;
use half::{bf16, f16};

pub(crate) fn table() -> Option<&'static KernelTable> {
    if !std::arch::is_aarch64_feature_detected!("neon") {
        return None;
    }
    Some(if std::arch::is_aarch64_feature_detected!("dotprod") {
        &dotprod::TABLE
    } else {
        &plain::TABLE
    })
}

/// acc += four-byte group sums of a · b with `sdot`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only instruction, available because dotprod is enabled here.
    core::arch::asm!(
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// acc += pairwise sums of a · b (NEON only). |a·b| pairs stay below 2^15 because the
/// activations never hold -128.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mull_dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let p = vmlal_high_s8(p, a, b);
    vpadalq_s16(acc, p)
}

/// Low and high nibbles of 16 packed bytes (elements 0..16 and 16..32).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: reads exactly the 16 bytes of `qs`.
    let v = vld1q_u8(qs.as_ptr());
    (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
}

/// Bit 4 of each of 32 elements from the 32-bit `qh`, as 0x10 / 0x00 bytes (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn high_bits(qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: reads exactly the 16 bytes of BITS.
    let m = vld1q_u8(BITS.as_ptr());
    let b16 = vdupq_n_u8(0x10);
    let lo = vtstq_u8(vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1])), m);
    let hi = vtstq_u8(vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3])), m);
    (vandq_u8(lo, b16), vandq_u8(hi, b16))
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_q8(qs: &[i8; 32]) -> (int8x16_t, int8x16_t) {
    // SAFETY: reads bytes 0..16 and 16..32 of `qs`.
    (vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16)))
}

macro_rules! neon_kernels {
    ($module:ident, $name:literal, $feat:literal, $dot:ident, $kquants:expr) => {
        mod $module {
            use super::*;

            pub(super) static TABLE: KernelTable = KernelTable {
                path: KernelPath::Neon,
                name: $name,
                quantize_q8_0: super::quantize_q8_0,
                quantize_q8_1: super::quantize_q8_1,
                dot_q4_0,
                dot_q4_1,
                dot_q5_0,
                dot_q5_1,
                dot_q8_0,
                dot_f32: super::dot_f32,
                dot_f16: super::dot_f16,
                dot_bf16: super::dot_bf16,
                // Plain loops: NEON is the baseline, LLVM vectorizes them.
                dots_f32: crate::quants::float::dots_f32,
                weighted_sum_f32: crate::quants::float::weighted_sum_f32,
                dots_f16: crate::quants::float::dots_f16,
                weighted_sum_f16: crate::quants::float::weighted_sum_f16,
                softmax_f32: crate::quants::float::softmax_f32,
                swiglu_f32: crate::quants::float::swiglu_f32,
                geglu_f32: crate::quants::float::geglu_f32,
                kquants: $kquants,
                gemm: crate::dispatch::GemmKernels::NONE,
            };

            macro_rules! safe_entry {
                ($fname:ident, $imp:ident, $w:ty, $a:ty) => {
                    fn $fname(w: &[$w], a: &[$a]) -> f32 {
                        assert_eq!(w.len(), a.len());
                        // SAFETY: reachable only through TABLE, handed out after the features
                        // in $feat were detected; lengths are equal.
                        unsafe { $imp(w, a) }
                    }
                };
            }
            safe_entry!(dot_q4_0, dot_q4_0_impl, BlockQ4_0, BlockQ8_0);
            safe_entry!(dot_q4_1, dot_q4_1_impl, BlockQ4_1, BlockQ8_1);
            safe_entry!(dot_q5_0, dot_q5_0_impl, BlockQ5_0, BlockQ8_0);
            safe_entry!(dot_q5_1, dot_q5_1_impl, BlockQ5_1, BlockQ8_1);
            safe_entry!(dot_q8_0, dot_q8_0_impl, BlockQ8_0, BlockQ8_0);

            /// Σ a·b of two 32-byte halves.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn block_sum(x0: int8x16_t, x1: int8x16_t, y: &[i8; 32]) -> i32 {
                let (y0, y1) = load_q8(y);
                vaddvq_s32($dot($dot(vdupq_n_s32(0), x0, y0), x1, y1))
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q4_0_impl(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
                let mut sum = 0f32;
                let eight = vdupq_n_s8(8);
                for (x, y) in w.iter().zip(a) {
                    let (lo, hi) = nibbles(&x.qs);
                    let lo = vsubq_s8(vreinterpretq_s8_u8(lo), eight);
                    let hi = vsubq_s8(vreinterpretq_s8_u8(hi), eight);
                    sum += block_sum(lo, hi, &y.qs) as f32 * (x.d.to_f32() * y.d.to_f32());
                }
                sum
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q4_1_impl(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
                let mut sum = 0f32;
                for (x, y) in w.iter().zip(a) {
                    let (lo, hi) = nibbles(&x.qs);
                    let s = block_sum(vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi), &y.qs);
                    sum += s as f32 * (x.d.to_f32() * y.d.to_f32()) + x.m.to_f32() * y.s.to_f32();
                }
                sum
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q5_0_impl(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
                let mut sum = 0f32;
                let sixteen = vdupq_n_s8(16);
                for (x, y) in w.iter().zip(a) {
                    let (lo, hi) = nibbles(&x.qs);
                    let (hlo, hhi) = high_bits(x.qh);
                    let lo = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hlo)), sixteen);
                    let hi = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(hi, hhi)), sixteen);
                    sum += block_sum(lo, hi, &y.qs) as f32 * (x.d.to_f32() * y.d.to_f32());
                }
                sum
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q5_1_impl(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
                let mut sum = 0f32;
                for (x, y) in w.iter().zip(a) {
                    let (lo, hi) = nibbles(&x.qs);
                    let (hlo, hhi) = high_bits(x.qh);
                    let lo = vreinterpretq_s8_u8(vorrq_u8(lo, hlo));
                    let hi = vreinterpretq_s8_u8(vorrq_u8(hi, hhi));
                    let s = block_sum(lo, hi, &y.qs);
                    sum += s as f32 * (x.d.to_f32() * y.d.to_f32()) + x.m.to_f32() * y.s.to_f32();
                }
                sum
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q8_0_impl(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
                let mut sum = 0f32;
                for (x, y) in w.iter().zip(a) {
                    let (x0, x1) = load_q8(&x.qs);
                    sum += block_sum(x0, x1, &y.qs) as f32 * (x.d.to_f32() * y.d.to_f32());
                }
                sum
            }
        }
    };
}

neon_kernels!(plain, "neon", "neon", mull_dot, crate::simd::neon_kquants::KERNELS);
neon_kernels!(
    dotprod,
    "neon-dotprod",
    "neon,dotprod",
    sdot,
    crate::simd::neon_kquants::KERNELS_DOTPROD
);

fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * 32);
    for (x, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        // SAFETY: NEON is detected before any table is handed out; `x` has 32 elements.
        let (d, _) = unsafe { quantize_block(x, &mut b.qs) };
        b.d = f16::from_f32(d);
    }
}

fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * 32);
    for (x, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        // SAFETY: NEON is detected before any table is handed out; `x` has 32 elements.
        let (d, sum) = unsafe { quantize_block(x, &mut b.qs) };
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(sum as f32 * d);
    }
}

/// As `q8_0::quantize_activations` for one block: returns (d, Σ quants).
#[target_feature(enable = "neon")]
unsafe fn quantize_block(x: &[f32], out: &mut [i8; 32]) -> (f32, i32) {
    assert_eq!(x.len(), 32);
    // SAFETY: `x` holds 32 floats, read as eight groups of four.
    let v: [float32x4_t; 8] = core::array::from_fn(|k| vld1q_f32(x.as_ptr().add(4 * k)));
    let mut m = vabsq_f32(v[0]);
    for vi in &v[1..] {
        m = vmaxq_f32(m, vabsq_f32(*vi));
    }
    let amax = vmaxvq_f32(m);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let q: [int32x4_t; 8] = core::array::from_fn(|k| vcvtnq_s32_f32(vmulq_n_f32(v[k], id)));
    let mut s = vaddq_s32(q[0], q[1]);
    for qi in &q[2..] {
        s = vaddq_s32(s, *qi);
    }
    for h in 0..2 {
        let a = vcombine_s16(vqmovn_s32(q[4 * h]), vqmovn_s32(q[4 * h + 1]));
        let b = vcombine_s16(vqmovn_s32(q[4 * h + 2]), vqmovn_s32(q[4 * h + 3]));
        // SAFETY: writes bytes 16h..16h+16 of `out`.
        vst1q_s8(out.as_mut_ptr().add(16 * h), vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
    }
    (d, vaddvq_s32(s))
}

fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    assert_eq!(w.len(), a.len());
    // SAFETY: NEON is detected before any table is handed out; lengths are equal.
    unsafe { dot_f32_impl(w, a) }
}

#[target_feature(enable = "neon")]
unsafe fn dot_f32_impl(w: &[f32], a: &[f32]) -> f32 {
    let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut wc = w.chunks_exact(8);
    let mut ac = a.chunks_exact(8);
    for (x, y) in (&mut wc).zip(&mut ac) {
        // SAFETY: both chunks hold 8 floats.
        acc0 = vfmaq_f32(acc0, vld1q_f32(x.as_ptr()), vld1q_f32(y.as_ptr()));
        acc1 = vfmaq_f32(acc1, vld1q_f32(x.as_ptr().add(4)), vld1q_f32(y.as_ptr().add(4)));
    }
    let mut sum = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (x, y) in wc.remainder().iter().zip(ac.remainder()) {
        sum += x * y;
    }
    sum
}

/// F16 rows are rare in the models ferro runs; the half crate's conversion (FP16 instructions
/// when present) is fast enough and keeps this module free of unstable f16 intrinsics.
fn dot_f16(w: &[f16], a: &[f32]) -> f32 {
    crate::quants::float::vec_dot_f16(w, a)
}

fn dot_bf16(w: &[bf16], a: &[f32]) -> f32 {
    assert_eq!(w.len(), a.len());
    // SAFETY: NEON is detected before any table is handed out; lengths are equal.
    unsafe { dot_bf16_impl(w, a) }
}

#[target_feature(enable = "neon")]
unsafe fn dot_bf16_impl(w: &[bf16], a: &[f32]) -> f32 {
    let mut acc = vdupq_n_f32(0.0);
    let mut wc = w.chunks_exact(4);
    let mut ac = a.chunks_exact(4);
    for (x, y) in (&mut wc).zip(&mut ac) {
        // SAFETY: both chunks hold 4 elements.
        let b = vld1_u16(x.as_ptr() as *const u16);
        let xf = vreinterpretq_f32_u32(vshll_n_u16::<16>(b));
        acc = vfmaq_f32(acc, xf, vld1q_f32(y.as_ptr()));
    }
    let mut sum = vaddvq_f32(acc);
    for (x, y) in wc.remainder().iter().zip(ac.remainder()) {
        sum += x.to_f32() * y;
    }
    sum
}
