//! AVX2 + FMA + F16C kernels (x86-64, Haswell / Zen and later).
//!
//! The dots of the 32-element formats are the row-lane kernels' (`avx2_lanes.rs`, bit-identical
//! to their matrix products); this file has the float dots, the attention helpers, the
//! activation quantizers (which reproduce the scalar ones bit for bit) and helpers shared with
//! the other x86 modules.

use crate::dispatch::{KernelPath, KernelTable};
use crate::quants::{BlockQ8_0, BlockQ8_1};
use core::arch::x86_64::*;
use half::{bf16, f16};

pub(crate) fn detected() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

pub(crate) fn table() -> Option<&'static KernelTable> {
    detected().then_some(&TABLE)
}

static TABLE: KernelTable = KernelTable {
    path: KernelPath::Avx2,
    name: "avx2",
    quantize_q8_0,
    quantize_q8_1,
    dot_q4_0,
    dot_q4_1,
    dot_q5_0,
    dot_q5_1,
    dot_q8_0,
    dot_f32,
    dot_f16,
    dot_bf16,
    dots_f32,
    weighted_sum_f32,
    kquants: super::avx2_kquants::KERNELS,
    gemm: super::avx2_gemm::KERNELS,
};

// Safe entry points. They are reachable only through `TABLE` (also from the AVX-512 table,
// which requires these features too), which `table()` hands out only after `detected()`.

macro_rules! safe_entry {
    ($name:ident, $imp:path, $w:ty, $a:ty) => {
        pub(super) fn $name(w: &[$w], a: &[$a]) -> f32 {
            assert_eq!(w.len(), a.len());
            // SAFETY: only reachable through a table handed out after avx2+fma+f16c were detected;
            // the lengths are equal, which is all the kernel's pointer reads rely on.
            unsafe { $imp(w, a) }
        }
    };
}
// The 32-element formats' dots are the row-lane kernels' (bit-identical to their tiles).
pub(super) use super::avx2_lanes::{dot_q4_0, dot_q4_1, dot_q5_0, dot_q5_1, dot_q8_0};
safe_entry!(dot_f32, dot_f32_impl, f32, f32);
safe_entry!(dot_f16, dot_f16_impl, f16, f32);
safe_entry!(dot_bf16, dot_bf16_impl, bf16, f32);

pub(super) fn dots_f32(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
    crate::quants::float::check_rows(out.len(), q.len(), stride, k.len());
    // SAFETY: as for the dot products; every row read lies inside `k` (checked above).
    unsafe { dots_f32_impl(q, k, stride, out) }
}

pub(super) fn weighted_sum_f32(a: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    crate::quants::float::check_rows(a.len(), out.len(), stride, v.len());
    // SAFETY: as for the dot products; every row read lies inside `v` (checked above).
    unsafe { weighted_sum_f32_impl(a, v, stride, out) }
}

pub(super) fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * 32);
    // SAFETY: as for the dot products; lengths checked above.
    unsafe { quantize_q8_0_impl(x, out) }
}

pub(super) fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * 32);
    // SAFETY: as for the dot products; lengths checked above.
    unsafe { quantize_q8_1_impl(x, out) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fp16(h: f16) -> f32 {
    // A broadcast, not `_mm_cvtsi32_si128`: LLVM lowers that to `vpinsrw` into whatever register
    // is at hand, a false dependency that serialised every block behind the previous one.
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(h.to_bits() as i16)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01)))
}

/// 16 packed bytes -> 32 nibbles: bytes 0..16 the low nibbles, 16..32 the high ones, which is
/// element order for the 32-element formats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: reads exactly the 16 bytes of `qs`.
    let q = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
}

/// 32 bits -> 32 bytes, 0xFF where the bit is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let v = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
    let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load_q8(qs: &[i8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `qs`.
    _mm256_loadu_si256(qs.as_ptr() as *const __m256i)
}

/// Loads 8 f32 from `p`. Caller guarantees 8 readable elements.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8(p: &[f32]) -> __m256 {
    debug_assert!(p.len() >= 8);
    _mm256_loadu_ps(p.as_ptr())
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32_impl(w: &[f32], a: &[f32]) -> f32 {
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut wc = w.chunks_exact(16);
    let mut ac = a.chunks_exact(16);
    for (x, y) in (&mut wc).zip(&mut ac) {
        acc0 = _mm256_fmadd_ps(load8(x), load8(y), acc0);
        acc1 = _mm256_fmadd_ps(load8(&x[8..]), load8(&y[8..]), acc1);
    }
    let mut sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    for (x, y) in wc.remainder().iter().zip(ac.remainder()) {
        sum += x * y;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_impl(w: &[f16], a: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut wc = w.chunks_exact(8);
    let mut ac = a.chunks_exact(8);
    for (x, y) in (&mut wc).zip(&mut ac) {
        // SAFETY: `x` holds 8 f16 = 16 bytes.
        let xf = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr() as *const __m128i));
        acc = _mm256_fmadd_ps(xf, load8(y), acc);
    }
    let mut sum = hsum_ps(acc);
    for (x, y) in wc.remainder().iter().zip(ac.remainder()) {
        sum += fp16(*x) * y;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_bf16_impl(w: &[bf16], a: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut wc = w.chunks_exact(8);
    let mut ac = a.chunks_exact(8);
    for (x, y) in (&mut wc).zip(&mut ac) {
        // SAFETY: `x` holds 8 bf16 = 16 bytes.
        let b = _mm256_cvtepu16_epi32(_mm_loadu_si128(x.as_ptr() as *const __m128i));
        let xf = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
        acc = _mm256_fmadd_ps(xf, load8(y), acc);
    }
    let mut sum = hsum_ps(acc);
    for (x, y) in wc.remainder().iter().zip(ac.remainder()) {
        sum += x.to_f32() * y;
    }
    sum
}

/// Keys per pass in `dots_f32_impl`: independent FMA chains.
const KEYS: usize = 8;

/// `KK` dots of `q` with the rows at `k + (j0 + i)·stride`.
#[inline(always)]
unsafe fn dots_tile<const KK: usize>(q: &[f32], k: *const f32, stride: usize, out: &mut [f32]) {
    let d = q.len();
    let d8 = d & !7;
    let mut acc = [_mm256_setzero_ps(); KK];
    let mut c = 0;
    while c < d8 {
        let qv = _mm256_loadu_ps(q.as_ptr().add(c));
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k.add(i * stride + c)), *a);
        }
        c += 8;
    }
    for (i, o) in out.iter_mut().enumerate().take(KK) {
        let mut s = hsum_ps(acc[i]);
        for (c, &x) in q.iter().enumerate().skip(d8) {
            s += x * *k.add(i * stride + c);
        }
        *o = s;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_f32_impl(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
    let n = out.len();
    let mut j = 0;
    while j + KEYS <= n {
        dots_tile::<KEYS>(q, k.as_ptr().add(j * stride), stride, &mut out[j..]);
        j += KEYS;
    }
    for j in j..n {
        dots_tile::<1>(q, k.as_ptr().add(j * stride), stride, &mut out[j..]);
    }
}

/// `out[..8·CC] += Σ_j a[j] · v[j·stride..]` with the output in registers.
#[inline(always)]
unsafe fn weighted_cols<const CC: usize>(a: &[f32], v: *const f32, stride: usize, out: *mut f32) {
    let mut acc: [__m256; CC] = core::array::from_fn(|i| _mm256_loadu_ps(out.add(8 * i)));
    for (j, &aj) in a.iter().enumerate() {
        let s = _mm256_set1_ps(aj);
        let r = v.add(j * stride);
        for (i, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(s, _mm256_loadu_ps(r.add(8 * i)), *acc);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.add(8 * i), *acc);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weighted_sum_f32_impl(a: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    let d = out.len();
    let (vp, op) = (v.as_ptr(), out.as_mut_ptr());
    let mut c = 0;
    // 64 columns (eight independent accumulators) at a time, then 8, then one by one.
    while c + 64 <= d {
        weighted_cols::<8>(a, vp.add(c), stride, op.add(c));
        c += 64;
    }
    while c + 8 <= d {
        weighted_cols::<1>(a, vp.add(c), stride, op.add(c));
        c += 8;
    }
    for c in c..d {
        let mut s = out[c];
        for (j, &aj) in a.iter().enumerate() {
            s += aj * v[j * stride + c];
        }
        out[c] = s;
    }
}

/// Quantize 32 floats the way `q8_0::quantize_activations` does; returns (d, quants as 32
/// bytes, Σ quants).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block(x: &[f32], out: &mut [i8; 32]) -> (f32, i32) {
    debug_assert_eq!(x.len(), 32);
    let v = [load8(x), load8(&x[8..]), load8(&x[16..]), load8(&x[24..])];
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for vi in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mul = _mm256_set1_ps(id);
    let q: [__m256i; 4] = core::array::from_fn(|k| {
        _mm256_cvtps_epi32(_mm256_round_ps(
            _mm256_mul_ps(v[k], mul),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        ))
    });
    let sum = hsum_epi32(_mm256_add_epi32(
        _mm256_add_epi32(q[0], q[1]),
        _mm256_add_epi32(q[2], q[3]),
    ));
    // packs interleave the 128-bit lanes; the permute restores element order.
    let p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: writes exactly the 32 bytes of `out`.
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, p);
    (d, sum)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_0_impl(x: &[f32], out: &mut [BlockQ8_0]) {
    for (x, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        let (d, _) = quantize_block(x, &mut b.qs);
        b.d = f16::from_f32(d);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_1_impl(x: &[f32], out: &mut [BlockQ8_1]) {
    for (x, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        let (d, sum) = quantize_block(x, &mut b.qs);
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(sum as f32 * d);
    }
}
