//! AVX-512 F/BW/VL kernels (Skylake-X, Ice Lake, Zen 4 and later), using VNNI `vpdpbusd` when
//! the CPU has avx512vnni. Two blocks (one per 256-bit half) are processed per iteration; an odd
//! last block and the float rows / activation quantizers reuse the AVX2 kernels (AVX-512 F
//! implies AVX2, and the table checks for FMA and F16C too).
//!
//! AVX-512 has no `vpsignb`: the sign of the weights moves onto the activations with a masked
//! subtract (`vpmovb2m` + `vpsubb`) instead.

// The AVX-512 intrinsics are stable since Rust 1.89; this module is only built for x86-64,
// where the toolchain in use is newer than the workspace's declared minimum.
#![allow(clippy::incompatible_msrv)]

use super::avx2;
use crate::dispatch::{KernelPath, KernelTable};
use crate::quants::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use core::arch::x86_64::*;

fn detected() -> bool {
    avx2::detected()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}

pub(crate) fn table() -> Option<&'static KernelTable> {
    if !detected() {
        return None;
    }
    Some(if is_x86_feature_detected!("avx512vnni") {
        &vnni::TABLE
    } else {
        &bw::TABLE
    })
}

/// Both AVX-512 tables this CPU can run: the F/BW/VL one, and the VNNI one where VNNI is
/// present (tests hold the first to the others even on CPUs that pick the second).
pub(crate) fn tables() -> Vec<&'static KernelTable> {
    let mut v = Vec::new();
    if detected() {
        v.push(&bw::TABLE);
        if is_x86_feature_detected!("avx512vnni") {
            v.push(&vnni::TABLE);
        }
    }
    v
}

macro_rules! avx512_kernels {
    ($module:ident, $name:literal, $feat:literal, $sum_u8_i8:ident, $kquants:expr, $gemm:expr) => {
        mod $module {
            use super::*;

            pub(super) static TABLE: KernelTable = KernelTable {
                path: KernelPath::Avx512,
                name: $name,
                quantize_q8_0: avx2::quantize_q8_0,
                quantize_q8_1: avx2::quantize_q8_1,
                dot_q4_0,
                dot_q4_1,
                dot_q5_0,
                dot_q5_1,
                dot_q8_0,
                dot_f32: avx2::dot_f32,
                dot_f16: avx2::dot_f16,
                dot_bf16: avx2::dot_bf16,
                dots_f32: avx2::dots_f32,
                weighted_sum_f32: avx2::weighted_sum_f32,
                dots_f16: avx2::dots_f16,
                weighted_sum_f16: avx2::weighted_sum_f16,
                softmax_f32: avx2::softmax_f32,
                swiglu_f32: avx2::swiglu_f32,
                geglu_f32: avx2::geglu_f32,
                kquants: $kquants,
                // The AVX2 row lanes and tiles (AVX-512 implies AVX2, FMA and F16C, checked by
                // `detected`); they beat these dots, so decode uses them too.
                gemm: $gemm,
            };

            macro_rules! safe_entry {
                ($fname:ident, $imp:ident, $w:ty, $a:ty) => {
                    fn $fname(w: &[$w], a: &[$a]) -> f32 {
                        assert_eq!(w.len(), a.len());
                        let n2 = w.len() & !1;
                        // SAFETY: reachable only through TABLE, handed out after the features
                        // in $feat were detected; the kernel reads the first n2 blocks of both
                        // slices, which exist.
                        let s = unsafe { $imp(&w[..n2], &a[..n2]) };
                        if n2 < w.len() {
                            s + avx2::$fname(&w[n2..], &a[n2..])
                        } else {
                            s
                        }
                    }
                };
            }
            safe_entry!(dot_q4_0, dot_q4_0_impl, BlockQ4_0, BlockQ8_0);
            safe_entry!(dot_q4_1, dot_q4_1_impl, BlockQ4_1, BlockQ8_1);
            safe_entry!(dot_q5_0, dot_q5_0_impl, BlockQ5_0, BlockQ8_0);
            safe_entry!(dot_q5_1, dot_q5_1_impl, BlockQ5_1, BlockQ8_1);
            safe_entry!(dot_q8_0, dot_q8_0_impl, BlockQ8_0, BlockQ8_0);

            /// Σ of unsigned x · signed y over groups of four bytes, as f32x16.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn sum_u8_i8(x: __m512i, y: __m512i) -> __m512 {
                _mm512_cvtepi32_ps($sum_u8_i8(x, y))
            }

            /// Σ of signed x · signed y over groups of four bytes, as f32x16.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn sum_i8_i8(x: __m512i, y: __m512i) -> __m512 {
                let neg = _mm512_movepi8_mask(x);
                let sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
                sum_u8_i8(_mm512_abs_epi8(x), sy)
            }

            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
                _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
            }

            /// The activations of two Q8 blocks.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn load2(a: &[i8; 32], b: &[i8; 32]) -> __m512i {
                // SAFETY: each load reads exactly the 32 bytes of its array.
                join(
                    _mm256_loadu_si256(a.as_ptr() as *const __m256i),
                    _mm256_loadu_si256(b.as_ptr() as *const __m256i),
                )
            }

            /// [d0; 8] ++ [d1; 8].
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn scales(d0: f32, d1: f32) -> __m512 {
                _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d0), _mm512_set1_ps(d1))
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q4_0_impl(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
                let mut acc = _mm512_setzero_ps();
                for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
                    let d = scales(
                        avx2::fp16(x[0].d) * avx2::fp16(y[0].d),
                        avx2::fp16(x[1].d) * avx2::fp16(y[1].d),
                    );
                    let q = join(avx2::unpack_nibbles(&x[0].qs), avx2::unpack_nibbles(&x[1].qs));
                    let q = _mm512_sub_epi8(q, _mm512_set1_epi8(8));
                    acc = _mm512_fmadd_ps(d, sum_i8_i8(q, load2(&y[0].qs, &y[1].qs)), acc);
                }
                _mm512_reduce_add_ps(acc)
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q4_1_impl(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
                let mut acc = _mm512_setzero_ps();
                let mut summs = 0f32;
                for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
                    summs += avx2::fp16(x[0].m) * avx2::fp16(y[0].s) + avx2::fp16(x[1].m) * avx2::fp16(y[1].s);
                    let d = scales(
                        avx2::fp16(x[0].d) * avx2::fp16(y[0].d),
                        avx2::fp16(x[1].d) * avx2::fp16(y[1].d),
                    );
                    let q = join(avx2::unpack_nibbles(&x[0].qs), avx2::unpack_nibbles(&x[1].qs));
                    acc = _mm512_fmadd_ps(d, sum_u8_i8(q, load2(&y[0].qs, &y[1].qs)), acc);
                }
                _mm512_reduce_add_ps(acc) + summs
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q5_0_impl(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
                let mut acc = _mm512_setzero_ps();
                let f0 = _mm256_set1_epi8(0xF0u8 as i8);
                for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
                    let d = scales(
                        avx2::fp16(x[0].d) * avx2::fp16(y[0].d),
                        avx2::fp16(x[1].d) * avx2::fp16(y[1].d),
                    );
                    let q: [__m256i; 2] = core::array::from_fn(|k| {
                        let hi = _mm256_andnot_si256(avx2::bytes_from_bits(u32::from_le_bytes(x[k].qh)), f0);
                        _mm256_or_si256(avx2::unpack_nibbles(&x[k].qs), hi)
                    });
                    acc = _mm512_fmadd_ps(d, sum_i8_i8(join(q[0], q[1]), load2(&y[0].qs, &y[1].qs)), acc);
                }
                _mm512_reduce_add_ps(acc)
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q5_1_impl(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
                let mut acc = _mm512_setzero_ps();
                let mut summs = 0f32;
                let b4 = _mm256_set1_epi8(0x10);
                for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
                    summs += avx2::fp16(x[0].m) * avx2::fp16(y[0].s) + avx2::fp16(x[1].m) * avx2::fp16(y[1].s);
                    let d = scales(
                        avx2::fp16(x[0].d) * avx2::fp16(y[0].d),
                        avx2::fp16(x[1].d) * avx2::fp16(y[1].d),
                    );
                    let q: [__m256i; 2] = core::array::from_fn(|k| {
                        let hi = _mm256_and_si256(avx2::bytes_from_bits(u32::from_le_bytes(x[k].qh)), b4);
                        _mm256_or_si256(avx2::unpack_nibbles(&x[k].qs), hi)
                    });
                    acc = _mm512_fmadd_ps(d, sum_u8_i8(join(q[0], q[1]), load2(&y[0].qs, &y[1].qs)), acc);
                }
                _mm512_reduce_add_ps(acc) + summs
            }

            #[target_feature(enable = $feat)]
            unsafe fn dot_q8_0_impl(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
                let mut acc = _mm512_setzero_ps();
                for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
                    let d = scales(
                        avx2::fp16(x[0].d) * avx2::fp16(y[0].d),
                        avx2::fp16(x[1].d) * avx2::fp16(y[1].d),
                    );
                    let q = load2(&x[0].qs, &x[1].qs);
                    acc = _mm512_fmadd_ps(d, sum_i8_i8(q, load2(&y[0].qs, &y[1].qs)), acc);
                }
                _mm512_reduce_add_ps(acc)
            }
        }
    };
}

/// u8 x i8 -> i32 sums of four with `vpmaddubsw` + `vpmaddwd` (no VNNI).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn sum4_bw(x: __m512i, y: __m512i) -> __m512i {
    _mm512_madd_epi16(_mm512_maddubs_epi16(x, y), _mm512_set1_epi16(1))
}

/// u8 x i8 -> i32 sums of four with one `vpdpbusd`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn sum4_vnni(x: __m512i, y: __m512i) -> __m512i {
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), x, y)
}

avx512_kernels!(
    bw,
    "avx512",
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    sum4_bw,
    crate::simd::avx512_kquants::KERNELS,
    crate::simd::avx2_gemm::KERNELS
);
avx512_kernels!(
    vnni,
    "avx512-vnni",
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    sum4_vnni,
    crate::simd::avx512_kquants::KERNELS_VNNI,
    crate::simd::avx2_gemm::KERNELS_AVX512_VNNI
);
