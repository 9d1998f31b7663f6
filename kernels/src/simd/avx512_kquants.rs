//! AVX-512 (F + BW + VL) kernels for the K-quant dot products against Q8_K, with `_vnni`
//! variants that fuse the scale multiply-accumulate into `vpdpwssd` (AVX512_VNNI).
//!
//! The 512-bit vectors hold 64 quants in element order: a 32-byte run of packed nibbles is
//! split into its low and high nibbles (two consecutive 32-element sub-blocks), so the
//! activations load linearly. Q2_K and Q3_K have no 512-bit version: on AVX-512 machines the
//! AVX2 kernels serve them (every AVX-512 CPU has AVX2).
//!
//! Every function requires the CPU features in its `target_feature` list (checked by the
//! caller, normally the dispatch table); the slices must have equal length (asserted).

use core::arch::x86_64::*;

use crate::quants::q4_k::{unpack_scales_mins, BlockQ4K};
use crate::quants::q5_k::BlockQ5K;
use crate::quants::q6_k::BlockQ6K;
use crate::quants::q8_k::{BlockQ8K, KQuantKernels};
use crate::simd::avx2_kquants::checked as avx2;
use crate::simd::avx2_kquants::h2f;

/// The AVX-512 table (Q2_K, Q3_K and the activation quantizer use the AVX2 kernels). Only for
/// tables handed out after checking AVX-512 F/BW/VL, AVX2, FMA and F16C.
pub(crate) const KERNELS: KQuantKernels = KQuantKernels {
    name: "avx512",
    quantize_q8_k: avx2::quantize_q8_k,
    dot_q2_k: avx2::dot_q2_k,
    dot_q3_k: avx2::dot_q3_k,
    dot_q4_k: checked::dot_q4_k,
    dot_q5_k: checked::dot_q5_k,
    dot_q6_k: checked::dot_q6_k,
};

/// [`KERNELS`] with the AVX512_VNNI dot products; only after also checking `avx512vnni`.
pub(crate) const KERNELS_VNNI: KQuantKernels = KQuantKernels {
    name: "avx512vnni",
    dot_q4_k: checked::dot_q4_k_vnni,
    dot_q5_k: checked::dot_q5_k_vnni,
    dot_q6_k: checked::dot_q6_k_vnni,
    ..KERNELS
};

/// Whether this CPU can run [`KERNELS`].
pub(crate) fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Every AVX-512 table this CPU can run: "avx512", then "avx512vnni" where AVX512_VNNI exists.
pub fn all_kernels() -> Vec<KQuantKernels> {
    let mut v = Vec::new();
    if has_avx512() {
        v.push(KERNELS);
        if is_x86_feature_detected!("avx512vnni") {
            v.push(KERNELS_VNNI);
        }
    }
    v
}

/// Safe wrappers, reachable only through tables built after the feature checks above.
mod checked {
    use super::*;

    pub(super) fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: only reachable through `all_kernels()`, which checked AVX-512 F/BW/VL + FMA.
        unsafe { vec_dot_q4_k(w, a) }
    }
    pub(super) fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: as above.
        unsafe { vec_dot_q5_k(w, a) }
    }
    pub(super) fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: as above.
        unsafe { vec_dot_q6_k(w, a) }
    }
    pub(super) fn dot_q4_k_vnni(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: only in the "avx512vnni" table, built after also checking AVX512_VNNI.
        unsafe { vec_dot_q4_k_vnni(w, a) }
    }
    pub(super) fn dot_q5_k_vnni(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: as above.
        unsafe { vec_dot_q5_k_vnni(w, a) }
    }
    pub(super) fn dot_q6_k_vnni(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: as above.
        unsafe { vec_dot_q6_k_vnni(w, a) }
    }
}

/// Horizontal sum of 8 f32 lanes.
#[inline(always)]
unsafe fn hsum_ps256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 i32 lanes -> 8 (sum of the two 256-bit halves).
#[inline(always)]
unsafe fn fold512(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

/// Index vector for `vpermw` that repeats 16-bit lane `a + l / run` in lane l (l in 0..32).
#[inline(always)]
unsafe fn rep_idx(a: i16, run: usize) -> __m512i {
    let mut idx = [0i16; 32];
    for (l, v) in idx.iter_mut().enumerate() {
        *v = a + (l / run) as i16;
    }
    // SAFETY: `idx` is 64 bytes.
    _mm512_loadu_si512(idx.as_ptr().cast())
}

/// 32 bytes of packed nibbles -> 64 quants in element order (low nibbles, then high nibbles).
#[inline(always)]
unsafe fn nibbles64(p: *const u8, m4: __m512i) -> __m512i {
    // SAFETY: the caller guarantees 32 readable bytes at p.
    let v = _mm256_loadu_si256(p.cast());
    let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v));
    _mm512_and_si512(z, m4)
}

/// The Q4_K / Q5_K body, shared by the plain and VNNI entry points; `qh` adds Q5_K's 5th bit.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_q45<const VNNI: bool>(
    d: &[u8; 2],
    dmin: &[u8; 2],
    scales12: &[u8; 12],
    qs: *const u8,
    qh: Option<&[u8; 32]>,
    y: &BlockQ8K,
    idx: &[__m512i; 4],
    acc: &mut __m256,
    acc_m: &mut __m128,
) {
    let m4 = _mm512_set1_epi8(0xF);
    let m1 = _mm512_set1_epi8(1);
    let dd = y.d * h2f(*d);
    let dm = -y.d * h2f(*dmin);
    let sm = unpack_scales_mins(scales12);
    // SAFETY: 16 bytes of `sm`, 32 bytes of `bsums`.
    let mins_and_scales = _mm256_cvtepu8_epi16(_mm_loadu_si128(sm.as_ptr().cast()));
    let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
    let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256::<1>(q8sums));
    let prod = _mm_madd_epi16(_mm256_extracti128_si256::<1>(mins_and_scales), q8s);
    *acc_m = _mm_fmadd_ps(_mm_set1_ps(dm), _mm_cvtepi32_ps(prod), *acc_m);
    let scales = _mm512_castsi256_si512(mins_and_scales);
    let hz = qh.map(|h| {
        // SAFETY: 32 bytes of qh.
        let v = _mm256_loadu_si256(h.as_ptr().cast());
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<1>(v))
    });
    let q8 = y.qs.as_ptr();
    let mut sumi = _mm512_setzero_si512();
    for (i, ix) in idx.iter().enumerate() {
        // SAFETY: i < 4: 32 bytes at qs + 32i (of 128) and 64 at q8 + 64i (of 256).
        let mut q = nibbles64(qs.add(32 * i), m4);
        if let Some(hz) = hz {
            let h = _mm512_and_si512(_mm512_srl_epi16(hz, _mm_cvtsi32_si128(2 * i as i32)), m1);
            q = _mm512_or_si512(q, _mm512_slli_epi16::<4>(h));
        }
        let a = _mm512_loadu_si512(q8.add(64 * i).cast());
        let p = _mm512_maddubs_epi16(q, a);
        let sc = _mm512_permutexvar_epi16(*ix, scales);
        sumi = if VNNI {
            _mm512_dpwssd_epi32(sumi, sc, p)
        } else {
            _mm512_add_epi32(sumi, _mm512_madd_epi16(sc, p))
        };
    }
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(fold512(sumi)), *acc);
}

#[inline(always)]
unsafe fn q4k_impl<const VNNI: bool>(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q4_k: length mismatch");
    let idx = [rep_idx(0, 16), rep_idx(2, 16), rep_idx(4, 16), rep_idx(6, 16)];
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        dot_q45::<VNNI>(
            &x.d,
            &x.dmin,
            &x.scales,
            x.qs.as_ptr(),
            None,
            y,
            &idx,
            &mut acc,
            &mut acc_m,
        );
    }
    let s = _mm_add_ps(
        acc_m,
        _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc)),
    );
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline(always)]
unsafe fn q5k_impl<const VNNI: bool>(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q5_k: length mismatch");
    let idx = [rep_idx(0, 16), rep_idx(2, 16), rep_idx(4, 16), rep_idx(6, 16)];
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        dot_q45::<VNNI>(
            &x.d,
            &x.dmin,
            &x.scales,
            x.qs.as_ptr(),
            Some(&x.qh),
            y,
            &idx,
            &mut acc,
            &mut acc_m,
        );
    }
    let s = _mm_add_ps(
        acc_m,
        _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc)),
    );
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline(always)]
unsafe fn q6k_impl<const VNNI: bool>(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q6_k: length mismatch");
    let m4 = _mm512_set1_epi8(0xF);
    let m3 = _mm512_set1_epi8(3);
    let idx = [rep_idx(0, 8), rep_idx(4, 8), rep_idx(8, 8), rep_idx(12, 8)];
    let mut acc = _mm256_setzero_ps();
    for (b, (x, y)) in w.iter().zip(a).enumerate() {
        // Decode streams rows one after another (see `prefetch_next_row`).
        crate::simd::avx2_kquants::prefetch_next_row(w, b);
        let d = y.d * h2f(x.d);
        // SAFETY: 16 scale bytes, 32 bsums bytes.
        let sc8 = _mm_loadu_si128(x.scales.as_ptr().cast());
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, q8sums));
        let scales = _mm512_castsi256_si512(sc16);
        let q8 = y.qs.as_ptr();
        let mut sumi = _mm512_setzero_si512();
        for h in 0..2 {
            // SAFETY: h < 2: 64 bytes at ql + 64h (of 128), 32 at qh + 32h (of 64),
            // 128 at q8 + 128h (of 256).
            let ql = _mm512_loadu_si512(x.ql.as_ptr().add(64 * h).cast());
            let qh = _mm256_loadu_si256(x.qh.as_ptr().add(32 * h).cast());
            let qhz = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
            let h01 = _mm512_slli_epi16::<4>(_mm512_and_si512(qhz, m3));
            let h23 = _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<4>(qhz), m3));
            let q01 = _mm512_or_si512(_mm512_and_si512(ql, m4), h01);
            let q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4), h23);
            let a01 = _mm512_loadu_si512(q8.add(128 * h).cast());
            let a23 = _mm512_loadu_si512(q8.add(128 * h + 64).cast());
            let p01 = _mm512_maddubs_epi16(q01, a01);
            let p23 = _mm512_maddubs_epi16(q23, a23);
            let s01 = _mm512_permutexvar_epi16(idx[2 * h], scales);
            let s23 = _mm512_permutexvar_epi16(idx[2 * h + 1], scales);
            sumi = if VNNI {
                _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(sumi, s01, p01), s23, p23)
            } else {
                _mm512_add_epi32(
                    sumi,
                    _mm512_add_epi32(_mm512_madd_epi16(s01, p01), _mm512_madd_epi16(s23, p23)),
                )
            };
        }
        let s = _mm256_sub_epi32(fold512(sumi), offset);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
    }
    hsum_ps256(acc)
}

/// Q4_K x Q8_K dot product.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    q4k_impl::<false>(w, a)
}

/// Q4_K x Q8_K dot product using AVX512_VNNI.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_k_vnni(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    q4k_impl::<true>(w, a)
}

/// Q5_K x Q8_K dot product.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    q5k_impl::<false>(w, a)
}

/// Q5_K x Q8_K dot product using AVX512_VNNI.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_k_vnni(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    q5k_impl::<true>(w, a)
}

/// Q6_K x Q8_K dot product.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    q6k_impl::<false>(w, a)
}

/// Q6_K x Q8_K dot product using AVX512_VNNI.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k_vnni(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    q6k_impl::<true>(w, a)
}
