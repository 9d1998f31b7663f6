//! AVX2 + FMA kernels for the K-quant formats: dot products of each weight format against
//! Q8_K activations, and the Q8_K activation quantizer.
//!
//! The integer work follows ggml's AVX2 kernels (`ggml-cpu/arch/x86/quants.c`): unsigned weight
//! quants times signed activations with `vpmaddubsw` (no saturation is possible: every product
//! pair stays below 2 * 63 * 128), sub-block scales applied with `vpmaddwd`, one f32 FMA per
//! super-block. Results equal the scalar oracle up to f32 summation order.
//!
//! Every function here requires the CPU to support `avx2`, `fma` and `f16c` (checked by the caller,
//! normally the dispatch table); the slices must have equal length (asserted).

use core::arch::x86_64::*;

use crate::quants::q2_k::BlockQ2K;
use crate::quants::q3_k::{unpack_scales as q3_unpack_scales, BlockQ3K};
use crate::quants::q4_k::unpack_scales_mins;
use crate::quants::q5_k::BlockQ5K;
use crate::quants::q6_k::BlockQ6K;
use crate::quants::q8_k::{BlockQ8K, KQuantKernels, QK_K};

/// The AVX2 kernel table. Only for tables handed out after checking AVX2 + FMA + F16C (as
/// [`kernels`] does): its pointers assume the CPU has them.
pub(crate) const KERNELS: KQuantKernels = KQuantKernels {
    name: "avx2",
    quantize_q8_k: checked::quantize_q8_k,
    dot_q2_k: checked::dot_q2_k,
    dot_q3_k: checked::dot_q3_k,
    // Exact integer super-block sums, the same bits as the row-lane Q4_K tiles.
    dot_q4_k: super::avx2_lanes::dot_q4_k,
    dot_q5_k: checked::dot_q5_k,
    dot_q6_k: checked::dot_q6_k,
};

/// The AVX2 kernel table, if this CPU has AVX2, FMA and F16C.
pub fn kernels() -> Option<KQuantKernels> {
    (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"))
        .then_some(KERNELS)
}

/// Safe wrappers, reachable only through tables built after the AVX2 + FMA check.
pub(crate) mod checked {
    use super::*;

    pub(crate) fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
        // SAFETY: only reachable through `kernels()` tables, built after checking AVX2 + FMA + F16C.
        unsafe { super::quantize_q8_k(x, out) }
    }
    pub(crate) fn dot_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: as above.
        unsafe { vec_dot_q2_k(w, a) }
    }
    pub(crate) fn dot_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: as above.
        unsafe { vec_dot_q3_k(w, a) }
    }
    pub(crate) fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: as above.
        unsafe { vec_dot_q5_k(w, a) }
    }
    pub(crate) fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        // SAFETY: as above.
        unsafe { vec_dot_q6_k(w, a) }
    }
}

/// Horizontal sum of 8 f32 lanes.
#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sum of 4 f32 lanes.
#[inline(always)]
unsafe fn hsum_ps128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Shuffle control that broadcasts 16-bit lane `i` (0..8) of each 128-bit half.
#[inline(always)]
unsafe fn bcast16(i: i32) -> __m256i {
    _mm256_set1_epi16((((2 * i + 1) << 8) | (2 * i)) as i16)
}

/// From 16 per-sub-block i8 scales in `s` (both 128-bit halves equal), the i16 vector
/// [s[a] x 8, s[a + 1] x 8] matching the 16 pair sums `vpmaddubsw` makes of 32 quants.
#[inline(always)]
unsafe fn scale_pair(s: __m128i, a: i32) -> __m256i {
    let ctl = _mm_set_epi64x(i64::from_ne_bytes([(a + 1) as u8; 8]), i64::from_ne_bytes([a as u8; 8]));
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s, ctl))
}

/// The longest row whose decode prefetches the next row into L1 ([`prefetch_next_row`]).
const ROW_PREFETCH_L1_MAX: usize = 6 * 1024;

/// Decode (one token) streams rows from memory one after another: ask for the same block of
/// the next row while working on this one. The hardware prefetchers stop at page boundaries,
/// which a file mapping has every 4 KiB.
///
/// Into L1 for rows up to [`ROW_PREFETCH_L1_MAX`] bytes, else into L2: a row ahead of a long
/// row, beside the row itself and its activations (1.4x a Q6_K row's bytes as Q8_K), is more
/// than L1 holds. The 8b ffn_down in Q6_K (11.8 KB rows) streamed at 13-23 GB/s prefetching
/// into L1 and 27-28 into L2 (two threads); its 3.3 KB rows of the other shape did better
/// into L1 (36-37 against 22-27).
#[inline(always)]
pub(super) unsafe fn prefetch_next_row<T>(w: &[T], b: usize) {
    let p = w.as_ptr().wrapping_add(w.len() + b) as *const i8;
    let mut off = 0;
    let l2 = core::mem::size_of_val(w) > ROW_PREFETCH_L1_MAX;
    while off < core::mem::size_of::<T>() {
        if l2 {
            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(off));
        } else {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off));
        }
        off += 64;
    }
}

/// fp16 bytes -> f32 with F16C (`vcvtph2ps`); callers enable `f16c`.
#[inline(always)]
pub(crate) unsafe fn h2f(b: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes(b))))
}

/// Q5_K x Q8_K dot product.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q5_k: length mismatch");
    let m4 = _mm256_set1_epi8(0xF);
    let m1 = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let d = y.d * h2f(x.d);
        let dmin = -y.d * h2f(x.dmin);
        let sm = unpack_scales_mins(&x.scales);
        // SAFETY: in-bounds unaligned loads of 16, 32 and 32 bytes.
        let mins_and_scales = _mm256_cvtepu8_epi16(_mm_loadu_si128(sm.as_ptr().cast()));
        let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
        let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256::<1>(q8sums));
        let prod = _mm_madd_epi16(_mm256_extracti128_si256::<1>(mins_and_scales), q8s);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

        let sc128 = _mm256_castsi256_si128(mins_and_scales);
        let scales = _mm256_set_m128i(sc128, sc128);
        let mut hbits = _mm256_loadu_si256(x.qh.as_ptr().cast());
        let qs = x.qs.as_ptr();
        let q8 = y.qs.as_ptr();
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let scale_l = _mm256_shuffle_epi8(scales, bcast16(2 * j as i32));
            let scale_h = _mm256_shuffle_epi8(scales, bcast16(2 * j as i32 + 1));
            // SAFETY: j < 4: in-bounds 32-byte loads of qs (128 bytes) and q8 (256 bytes).
            let q5bits = _mm256_loadu_si256(qs.add(32 * j).cast());
            // bit 2j of qh -> low-nibble group, bit 2j+1 -> high-nibble group; `hbits` is
            // shifted right by 2 per step, so those are always bits 0 and 1 here.
            let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(hbits, m1));
            let h1 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<1>(hbits), m1));
            hbits = _mm256_srli_epi16::<2>(hbits);
            let q5l = _mm256_or_si256(_mm256_and_si256(q5bits, m4), h0);
            let q5h = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q5bits), m4), h1);
            let q8l = _mm256_loadu_si256(q8.add(64 * j).cast());
            let q8h = _mm256_loadu_si256(q8.add(64 * j + 32).cast());
            let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q5l, q8l));
            let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q5h, q8h));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

/// Q6_K x Q8_K dot product.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q6_k: length mismatch");
    q6_k_tile::<1, false>(w, [a])[0]
}

/// Q6_K rows against `TT` activation rows at once (one weight block unpacked once for all tokens; per pair the dot's operations); bit-identical to
/// [`vec_dot_q6_k`].
/// `VNNI` (AVX-512 VNNI + VL): the scales meet the pair sums in `vpdpwssd`, which adds them to
/// the i32 sums in the same exact integers.
#[inline(always)]
unsafe fn q6_k_tile<const TT: usize, const VNNI: bool>(w: &[BlockQ6K], a: [&[BlockQ8K]; TT]) -> [f32; TT] {
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(3);
    let mut acc = [_mm256_setzero_ps(); TT];
    for at in &a {
        assert_eq!(at.len(), w.len(), "q6_k tile: length mismatch");
    }
    for (b, x) in w.iter().enumerate() {
        if TT == 1 {
            prefetch_next_row(w, b);
        }
        let xd = h2f(x.d);
        // SAFETY: `scales` is 16 bytes, `bsums` 32 bytes.
        let scales = _mm_loadu_si128(x.scales.as_ptr().cast());
        let ql = x.ql.as_ptr();
        let qh = x.qh.as_ptr();
        let mut sumi = [_mm256_setzero_si256(); TT];
        for h in 0..2 {
            // SAFETY: h < 2: 64 bytes at ql + 64h (of 128), 32 at qh + 32h (of 64) and
            // 128 at q8 + 128h (of 256).
            let q4bits1 = _mm256_loadu_si256(ql.add(64 * h).cast());
            let q4bits2 = _mm256_loadu_si256(ql.add(64 * h + 32).cast());
            let q4bits_h = _mm256_loadu_si256(qh.add(32 * h).cast());
            let q4h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(q4bits_h, m2));
            let q4h1 = _mm256_slli_epi16::<2>(_mm256_and_si256(q4bits_h, _mm256_slli_epi16::<2>(m2)));
            let q4h2 = _mm256_and_si256(q4bits_h, _mm256_slli_epi16::<4>(m2));
            let q4h3 = _mm256_and_si256(_mm256_srli_epi16::<2>(q4bits_h), _mm256_slli_epi16::<4>(m2));
            let q0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q4h0);
            let q1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m4), q4h1);
            let q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits1), m4), q4h2);
            let q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits2), m4), q4h3);
            let is = 8 * h as i32;
            for t in 0..TT {
                let base = a[t].get_unchecked(b).qs.as_ptr().add(128 * h);
                // q * a here; the -32 offset is folded in once per block through bsums below.
                let p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256(base.cast()));
                let p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256(base.add(32).cast()));
                let p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256(base.add(64).cast()));
                let p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256(base.add(96).cast()));
                if VNNI {
                    let mut v = sumi[t];
                    for (k, p) in [p0, p1, p2, p3].into_iter().enumerate() {
                        v = _mm256_dpwssd_epi32(v, scale_pair(scales, is + 2 * k as i32), p);
                    }
                    sumi[t] = v;
                    continue;
                }
                let p0 = _mm256_madd_epi16(scale_pair(scales, is), p0);
                let p1 = _mm256_madd_epi16(scale_pair(scales, is + 2), p1);
                let p2 = _mm256_madd_epi16(scale_pair(scales, is + 4), p2);
                let p3 = _mm256_madd_epi16(scale_pair(scales, is + 6), p3);
                sumi[t] = _mm256_add_epi32(
                    sumi[t],
                    _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3)),
                );
            }
        }
        for t in 0..TT {
            let y = a[t].get_unchecked(b);
            let d = y.d * xd;
            // sum_j sc[j] * 32 * bsums[j]: the (q - 32) offset for the whole block.
            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), q8sums));
            let s = _mm256_sub_epi32(sumi[t], offset);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    core::array::from_fn(|t| hsum_ps(acc[t]))
}

/// As [`gemm_q4_k`] for Q6_K.
pub(crate) fn gemm_q6_k(w: &[BlockQ6K], a: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn imp(w: &[BlockQ6K], a: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
        gemm_k(
            w,
            a,
            nb,
            out,
            ldo,
            |w, a| q6_k_tile::<4, false>(w, a),
            |w, a| q6_k_tile::<1, false>(w, a),
        );
    }
    // SAFETY: as for gemm_q4_k.
    unsafe { imp(w, a, nb, out, ldo) }
}

/// The avx512-vnni table's [`gemm_q6_k`]: eight tokens per row pass (AVX-512 VL's 32 vector
/// registers hold their sums), the scales applied with `vpdpwssd`; the same bits.
pub(crate) fn gemm_q6_k_vnni(w: &[BlockQ6K], a: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn imp(w: &[BlockQ6K], a: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
        gemm_k(
            w,
            a,
            nb,
            out,
            ldo,
            |w, a| q6_k_tile::<8, true>(w, a),
            // One token: the AVX-512 row kernel, the same bits in half the instructions
            // (avx2_lanes.rs `q6_k_avx512_dot_equals_the_tiles_bit_for_bit`).
            |w, a| [super::avx512_kquants::vec_dot_q6_k_vnni(w, a[0])],
        );
    }
    // SAFETY: handed out only by the avx512-vnni table, after its features were detected;
    // shapes as for gemm_q4_k.
    unsafe { imp(w, a, nb, out, ldo) }
}

/// Rows one at a time, tokens `TT` at a time, the rest one by one.
#[inline(always)]
fn gemm_k<W, const TT: usize>(
    w: &[W],
    a: &[BlockQ8K],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
    tile: impl Fn(&[W], [&[BlockQ8K]; TT]) -> [f32; TT],
    one: impl Fn(&[W], [&[BlockQ8K]; 1]) -> [f32; 1],
) {
    assert!(
        nb > 0 && w.len().is_multiple_of(nb) && a.len().is_multiple_of(nb),
        "gemm: partial rows"
    );
    let n = a.len() / nb;
    // Tokens eight at a time, so their activations stay in L1 while all rows pass over them.
    for t0 in (0..n).step_by(super::avx2_gemm::TOKEN_TILE) {
        let t1 = (t0 + super::avx2_gemm::TOKEN_TILE).min(n);
        for (r, wr) in w.chunks_exact(nb).enumerate() {
            let mut t = t0;
            while t + TT <= t1 {
                let at: [&[BlockQ8K]; TT] = core::array::from_fn(|k| &a[(t + k) * nb..(t + k + 1) * nb]);
                for (k, v) in tile(wr, at).into_iter().enumerate() {
                    out[(t + k) * ldo + r] = v;
                }
                t += TT;
            }
            for t in t..t1 {
                out[t * ldo + r] = one(wr, [&a[t * nb..(t + 1) * nb]])[0];
            }
        }
    }
}

/// Q3_K x Q8_K dot product.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q3_k: length mismatch");
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let zero = _mm256_setzero_si256();
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let d = y.d * h2f(x.d);
        let sc = q3_unpack_scales(&x.scales);
        // SAFETY: in-bounds unaligned loads: 16 scale bytes, 32 hmask bytes.
        let scales = _mm_loadu_si128(sc.as_ptr().cast());
        let hbits = _mm256_loadu_si256(x.hmask.as_ptr().cast());
        let qs = x.qs.as_ptr();
        let q8 = y.qs.as_ptr();
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            // SAFETY: h < 2: 32 bytes at qs + 32h (of 64); k < 4: 32 bytes at
            // q8 + 128h + 32k (of 256).
            let q3bits = _mm256_loadu_si256(qs.add(32 * h).cast());
            for k in 0..4 {
                let low = _mm256_and_si256(_mm256_srl_epi16(q3bits, _mm_cvtsi32_si128(2 * k as i32)), m3);
                let bit = _mm256_set1_epi8((1u8 << (4 * h + k)) as i8);
                // 4 where the high bit is clear (q = low - 4), else 0.
                let sub = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, bit), zero), four);
                let q8v = _mm256_loadu_si256(q8.add(128 * h + 32 * k).cast());
                let p = _mm256_sub_epi16(_mm256_maddubs_epi16(low, q8v), _mm256_maddubs_epi16(sub, q8v));
                let p = _mm256_madd_epi16(scale_pair(scales, (8 * h + 2 * k) as i32), p);
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// Q2_K x Q8_K dot product.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q2_k: length mismatch");
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0xF);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let d = y.d * h2f(x.d);
        let dmin = -y.d * h2f(x.dmin);
        // SAFETY: in-bounds unaligned loads: 16 scale bytes, 32 bsums bytes.
        let mins_and_scales = _mm_loadu_si128(x.scales.as_ptr().cast());
        let scales = _mm_and_si128(mins_and_scales, m4);
        let mins = _mm_and_si128(_mm_srli_epi16::<4>(mins_and_scales), m4);
        let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
        let prod = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mins), q8sums);
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc_m);
        let qs = x.qs.as_ptr();
        let q8 = y.qs.as_ptr();
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            // SAFETY: h < 2: 32 bytes at qs + 32h (of 64), 128 at q8 + 128h (of 256).
            let q2bits = _mm256_loadu_si256(qs.add(32 * h).cast());
            let q0 = _mm256_and_si256(q2bits, m3);
            let q1 = _mm256_and_si256(_mm256_srli_epi16::<2>(q2bits), m3);
            let q2 = _mm256_and_si256(_mm256_srli_epi16::<4>(q2bits), m3);
            let q3 = _mm256_and_si256(_mm256_srli_epi16::<6>(q2bits), m3);
            let base = q8.add(128 * h);
            let p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256(base.cast()));
            let p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256(base.add(32).cast()));
            let p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256(base.add(64).cast()));
            let p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256(base.add(96).cast()));
            let is = 8 * h as i32;
            let p0 = _mm256_madd_epi16(scale_pair(scales, is), p0);
            let p1 = _mm256_madd_epi16(scale_pair(scales, is + 2), p1);
            let p2 = _mm256_madd_epi16(scale_pair(scales, is + 4), p2);
            let p3 = _mm256_madd_epi16(scale_pair(scales, is + 6), p3);
            sumi = _mm256_add_epi32(
                sumi,
                _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3)),
            );
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps(acc_m)
}

/// Q8_K activation quantizer; output is bit-identical to `quants::q8_k::quantize`
/// (`vcvtps2dq` rounds to nearest even like ggml's `nearest_int`).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    assert_eq!(x.len(), out.len() * QK_K, "quantize_q8_k: length mismatch");
    let sign = _mm256_set1_ps(-0.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        let mut vmax = _mm256_setzero_ps();
        for i in 0..32 {
            // SAFETY: i < 32: 8 floats at p + 8i lie within the 256-float chunk.
            vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * i))));
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps::<1>(vmax));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let amax = _mm_cvtss_f32(m);
        if amax == 0.0 {
            *y = BlockQ8K::ZERO;
            continue;
        }
        // The signed value of the first element of largest magnitude, as the scalar code picks.
        let vamax = _mm256_set1_ps(amax);
        let mut max = amax;
        for i in 0..32 {
            // SAFETY: as above.
            let v = _mm256_loadu_ps(p.add(8 * i));
            let eq = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign, v), vamax));
            if eq != 0 {
                max = xb[8 * i + eq.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0f32 / max;
        let vis = _mm256_set1_ps(iscale);
        let qp = y.qs.as_mut_ptr();
        let mut sums = [_mm256_setzero_si256(); 16];
        for g in 0..8 {
            // 32 values per step: four vectors of 8 -> i32 -> i16 -> i8 (saturating packs; the
            // values are within -127..=127 already so saturation only mirrors MIN(127, v)).
            // SAFETY: g < 8: 32 floats at p + 32g are in the chunk; 32 bytes at qp + 32g are in qs.
            let i0 = _mm256_cvtps_epi32(_mm256_mul_ps(vis, _mm256_loadu_ps(p.add(32 * g))));
            let i1 = _mm256_cvtps_epi32(_mm256_mul_ps(vis, _mm256_loadu_ps(p.add(32 * g + 8))));
            let i2 = _mm256_cvtps_epi32(_mm256_mul_ps(vis, _mm256_loadu_ps(p.add(32 * g + 16))));
            let i3 = _mm256_cvtps_epi32(_mm256_mul_ps(vis, _mm256_loadu_ps(p.add(32 * g + 24))));
            sums[2 * g] = _mm256_add_epi32(i0, i1);
            sums[2 * g + 1] = _mm256_add_epi32(i2, i3);
            let s01 = _mm256_packs_epi32(i0, i1);
            let s23 = _mm256_packs_epi32(i2, i3);
            let b = _mm256_packs_epi16(s01, s23);
            let b = _mm256_permutevar8x32_epi32(b, perm);
            _mm256_storeu_si256(qp.add(32 * g).cast(), b);
        }
        // bsums: horizontal sums of the 16 vectors of 8 partial sums.
        let mut bs = [0i32; 16];
        for q in 0..4 {
            let h01 = _mm256_hadd_epi32(sums[4 * q], sums[4 * q + 1]);
            let h23 = _mm256_hadd_epi32(sums[4 * q + 2], sums[4 * q + 3]);
            let h = _mm256_hadd_epi32(h01, h23);
            let r = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
            // SAFETY: 4 i32 at bs + 4q lie within the 16-element array.
            _mm_storeu_si128(bs.as_mut_ptr().add(4 * q).cast(), r);
        }
        for (o, &s) in y.bsums.iter_mut().zip(&bs) {
            *o = s as i16;
        }
        y.d = 1.0 / iscale;
    }
}
