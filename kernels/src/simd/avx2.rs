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
    dots_f16,
    weighted_sum_f16,
    softmax_f32,
    swiglu_f32,
    geglu_f32,
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

pub(super) fn softmax_f32(x: &mut [f32]) {
    // SAFETY: as for the dot products; every access lies inside `x`.
    unsafe { softmax_f32_impl(x) }
}

pub(super) fn swiglu_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in length");
    // SAFETY: as for the dot products; every access lies inside `gate` and `up` (equal lengths).
    unsafe { swiglu_f32_impl(gate, up) }
}

pub(super) fn geglu_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu: gate and up differ in length");
    // SAFETY: as for the dot products; every access lies inside `gate`, `up` (equal lengths)
    // and the table (indices are 16-bit).
    unsafe { geglu_f32_impl(gate, up, crate::quants::float::gelu_table()) }
}

macro_rules! heads_entry {
    ($dots:ident, $dots_imp:ident, $ws:ident, $ws_imp:ident, $e:ty) => {
        pub(super) fn $dots(q: &[f32], heads: usize, k: &[$e], stride: usize, out: &mut [f32]) {
            crate::quants::float::check_heads(heads, q.len(), out.len(), stride, k.len());
            // SAFETY: as for the dot products; every row read lies inside `k` and `q`, and
            // every write inside `out` (checked above).
            unsafe { $dots_imp(q, heads, k, stride, out) }
        }

        pub(super) fn $ws(a: &[f32], heads: usize, v: &[$e], stride: usize, out: &mut [f32]) {
            crate::quants::float::check_heads(heads, out.len(), a.len(), stride, v.len());
            // SAFETY: as for the dot products; every row read lies inside `v` and `a`, and
            // every write inside `out` (checked above).
            unsafe { $ws_imp(a, heads, v, stride, out) }
        }
    };
}
heads_entry!(dots_f32, dots_f32_impl, weighted_sum_f32, weighted_sum_f32_impl, f32);
heads_entry!(dots_f16, dots_f16_impl, weighted_sum_f16, weighted_sum_f16_impl, f16);

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

/// Key and value rows' elements: f32, or f16 widened with F16C (exact).
trait Elem: Copy {
    /// Eight elements at `p` as f32 lanes.
    unsafe fn load8(p: *const Self) -> __m256;
    /// The element at `p` as f32.
    unsafe fn get(p: *const Self) -> f32;
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn get(p: *const f32) -> f32 {
        *p
    }
}

impl Elem for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn get(p: *const f16) -> f32 {
        (*p).to_f32()
    }
}

/// `KK` keys against `QQ` queries (rows `d` floats apart at `q`): `out[i·ldo + j]` for key j at
/// `k + j·stride`. Each dot is one FMA chain over 8-float columns and one `hsum_ps`, the same
/// order whatever the tile, so every tile gives a pair the same bits.
#[inline(always)]
unsafe fn dots_tile<E: Elem, const QQ: usize, const KK: usize>(
    q: *const f32,
    d: usize,
    k: *const E,
    stride: usize,
    out: *mut f32,
    ldo: usize,
) {
    let d8 = d & !7;
    let mut acc = [[_mm256_setzero_ps(); KK]; QQ];
    let mut c = 0;
    while c < d8 {
        let kv: [__m256; KK] = core::array::from_fn(|j| E::load8(k.add(j * stride + c)));
        for (i, acc) in acc.iter_mut().enumerate() {
            let qv = _mm256_loadu_ps(q.add(i * d + c));
            for (a, kv) in acc.iter_mut().zip(&kv) {
                *a = _mm256_fmadd_ps(qv, *kv, *a);
            }
        }
        c += 8;
    }
    for (i, acc) in acc.iter().enumerate() {
        for (j, a) in acc.iter().enumerate() {
            let mut s = hsum_ps(*a);
            for c in d8..d {
                s += *q.add(i * d + c) * E::get(k.add(j * stride + c));
            }
            *out.add(i * ldo + j) = s;
        }
    }
}

/// How many cache rows ahead of the one in use decode attention prefetches its keys and values.
/// A decode step's cache was last read a whole token (every weight of the model) ago, so it
/// comes from memory, in short runs (SmolLM2's key head at tg128: up to 128 rows of 256 bytes)
/// that the hardware prefetchers pick up late. Per-token A/B (DEVELOPERS.md, stop 32):
/// SmolLM2 tg128 +1.5% (three runs), tg512 +4% and +6%, gemma3 tg128 +1%; 4 and 16 rows ahead
/// did as well as 8.
const AHEAD: usize = 8;

/// Prefetches `rows` rows of `bytes` bytes, `pitch` apart, into L1 (addresses past the cache
/// are only hints).
#[inline(always)]
unsafe fn prefetch_rows(p: *const u8, rows: usize, pitch: usize, bytes: usize) {
    for r in 0..rows {
        let row = p.wrapping_add(r * pitch);
        for off in (0..bytes).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(off) as *const i8);
        }
    }
}

/// `QQ` queries against all `n` keys, `KK` keys per pass (the register budget: QQ·KK
/// accumulators and KK key vectors).
#[inline(always)]
unsafe fn dots_rows<E: Elem, const QQ: usize, const KK: usize>(
    q: *const f32,
    d: usize,
    k: *const E,
    stride: usize,
    n: usize,
    out: *mut f32,
) {
    let mut j = 0;
    while j + KK <= n {
        prefetch_rows(
            k.wrapping_add((j + AHEAD) * stride) as *const u8,
            KK,
            stride * size_of::<E>(),
            d * size_of::<E>(),
        );
        dots_tile::<E, QQ, KK>(q, d, k.add(j * stride), stride, out.add(j), n);
        j += KK;
    }
    for j in j..n {
        dots_tile::<E, QQ, 1>(q, d, k.add(j * stride), stride, out.add(j), n);
    }
}

/// Every head's dots (the checks done by the caller).
#[inline(always)]
unsafe fn dots_impl<E: Elem>(q: &[f32], heads: usize, k: *const E, stride: usize, out: &mut [f32]) {
    let (d, n) = (q.len() / heads, out.len() / heads);
    let (qp, kp, op) = (q.as_ptr(), k, out.as_mut_ptr());
    // Heads four at a time: each key vector loaded once feeds every head of the tile.
    let mut h = 0;
    while h + 4 <= heads {
        dots_rows::<E, 4, 3>(qp.add(h * d), d, kp, stride, n, op.add(h * n));
        h += 4;
    }
    match heads - h {
        3 => dots_rows::<E, 3, 4>(qp.add(h * d), d, kp, stride, n, op.add(h * n)),
        2 => dots_rows::<E, 2, 4>(qp.add(h * d), d, kp, stride, n, op.add(h * n)),
        1 => dots_rows::<E, 1, 8>(qp.add(h * d), d, kp, stride, n, op.add(h * n)),
        _ => {}
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_f32_impl(q: &[f32], heads: usize, k: &[f32], stride: usize, out: &mut [f32]) {
    dots_impl(q, heads, k.as_ptr(), stride, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_f16_impl(q: &[f32], heads: usize, k: &[f16], stride: usize, out: &mut [f32]) {
    dots_impl(q, heads, k.as_ptr(), stride, out)
}

/// `out[i·d + c..][..8·CC] += Σ_j a[i·n + j] · v[j·stride + c..]` for `QQ` heads, the outputs in
/// registers. Per output column one FMA chain over j in order, whatever the tile.
#[inline(always)]
unsafe fn weighted_tile<E: Elem, const QQ: usize, const CC: usize>(
    a: *const f32,
    n: usize,
    v: *const E,
    stride: usize,
    out: *mut f32,
    d: usize,
    pf: bool,
) {
    let mut acc: [[__m256; CC]; QQ] =
        core::array::from_fn(|i| core::array::from_fn(|cc| _mm256_loadu_ps(out.add(i * d + 8 * cc))));
    for j in 0..n {
        let r = v.add(j * stride);
        if pf {
            prefetch_rows(
                v.wrapping_add((j + AHEAD) * stride) as *const u8,
                1,
                0,
                d * size_of::<E>(),
            );
        }
        let vv: [__m256; CC] = core::array::from_fn(|cc| E::load8(r.add(8 * cc)));
        for (i, acc) in acc.iter_mut().enumerate() {
            let s = _mm256_set1_ps(*a.add(i * n + j));
            for (o, vv) in acc.iter_mut().zip(&vv) {
                *o = _mm256_fmadd_ps(s, *vv, *o);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (cc, o) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(i * d + 8 * cc), *o);
        }
    }
}

/// `QQ` heads' weighted sums over all `d` columns, `8·CC` columns per pass.
#[inline(always)]
unsafe fn weighted_rows<E: Elem, const QQ: usize, const CC: usize>(
    a: *const f32,
    n: usize,
    v: *const E,
    stride: usize,
    out: *mut f32,
    d: usize,
) {
    let mut c = 0;
    // The first pass over the rows prefetches them (the later passes find them in L1).
    prefetch_rows(
        v as *const u8,
        n.min(AHEAD),
        stride * size_of::<E>(),
        d * size_of::<E>(),
    );
    let mut pf = true;
    while c + 8 * CC <= d {
        weighted_tile::<E, QQ, CC>(a, n, v.add(c), stride, out.add(c), d, pf);
        pf = false;
        c += 8 * CC;
    }
    while c + 8 <= d {
        weighted_tile::<E, QQ, 1>(a, n, v.add(c), stride, out.add(c), d, pf);
        pf = false;
        c += 8;
    }
    for i in 0..QQ {
        for c in c..d {
            let mut s = *out.add(i * d + c);
            for j in 0..n {
                s += *a.add(i * n + j) * E::get(v.add(j * stride + c));
            }
            *out.add(i * d + c) = s;
        }
    }
}

/// Every head's weighted sums (the checks done by the caller).
#[inline(always)]
unsafe fn weighted_sum_impl<E: Elem>(a: &[f32], heads: usize, v: *const E, stride: usize, out: &mut [f32]) {
    let (n, d) = (a.len() / heads, out.len() / heads);
    let (ap, vp, op) = (a.as_ptr(), v, out.as_mut_ptr());
    // Heads four at a time: each value vector loaded once feeds every head of the tile.
    let mut h = 0;
    while h + 4 <= heads {
        weighted_rows::<E, 4, 2>(ap.add(h * n), n, vp, stride, op.add(h * d), d);
        h += 4;
    }
    match heads - h {
        3 => weighted_rows::<E, 3, 3>(ap.add(h * n), n, vp, stride, op.add(h * d), d),
        2 => weighted_rows::<E, 2, 4>(ap.add(h * n), n, vp, stride, op.add(h * d), d),
        1 => weighted_rows::<E, 1, 8>(ap.add(h * n), n, vp, stride, op.add(h * d), d),
        _ => {}
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weighted_sum_f32_impl(a: &[f32], heads: usize, v: &[f32], stride: usize, out: &mut [f32]) {
    weighted_sum_impl(a, heads, v.as_ptr(), stride, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weighted_sum_f16_impl(a: &[f32], heads: usize, v: &[f16], stride: usize, out: &mut [f32]) {
    weighted_sum_impl(a, heads, v.as_ptr(), stride, out)
}

/// `exp(x)` of eight lanes, within 2 ulp of the correctly rounded value for x ≥ −87.3 (0 below,
/// where f32 underflows; +inf above 88.7). Cody–Waite: `x = n·ln2 + r`, |r| ≤ ln2/2, `e^r` by
/// its degree-6 Taylor polynomial (error below 2e-9 there), times `2^n` built in the exponent
/// bits.
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = _mm256_min_ps(x, _mm256_set1_ps(88.7));
    let low = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.3));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(core::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    // 2^n for n in −126..=128 (n = 128 only where x rounds to 88.7: the product overflows to
    // inf as expf does): the exponent field of n + 127, split in two factors so that it fits.
    let ni = _mm256_cvtps_epi32(n);
    let half = _mm256_srai_epi32(ni, 1);
    let e = _mm256_mul_ps(_mm256_mul_ps(p, pow2(half)), pow2(_mm256_sub_epi32(ni, half)));
    _mm256_andnot_ps(low, e)
}

/// `2^k` for k in −126..=127 (the exponent field of k + 127). A plain function: closures do not
/// inherit the caller's target features.
#[inline(always)]
unsafe fn pow2(k: __m256i) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23))
}

/// `s += e` with the eight lanes widened to f64 (four in each accumulator).
#[inline(always)]
unsafe fn add_pd(s: &mut [__m256d; 2], e: __m256) {
    s[0] = _mm256_add_pd(s[0], _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s[1] = _mm256_add_pd(s[1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
}

/// `x / (1 + exp(−x)) · y` in eight lanes (a function, not a closure: a closure would not
/// inherit the target features).
#[inline(always)]
unsafe fn silu_mul(x: __m256, y: __m256) -> __m256 {
    let nx = _mm256_sub_ps(_mm256_setzero_ps(), x);
    // exp8 stops at exp(88.7); past f32's range expf is +inf, and silu a signed 0.
    let over = _mm256_cmp_ps::<_CMP_GT_OQ>(nx, _mm256_set1_ps(88.72284));
    let e = _mm256_blendv_ps(exp8(nx), _mm256_set1_ps(f32::INFINITY), over);
    _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e)), y)
}

/// An element-wise gated unit on eight lanes: `f(gate, up)`.
trait GatedLanes {
    unsafe fn lanes(&self, gate: __m256, up: __m256) -> __m256;
}

/// SwiGLU with [`exp8`]: the scalar formula's operations in the same order.
struct Silu;

impl GatedLanes for Silu {
    #[inline(always)]
    unsafe fn lanes(&self, gate: __m256, up: __m256) -> __m256 {
        silu_mul(gate, up)
    }
}

/// GeGLU by ggml's table.
struct Gelu<'a>(&'a [f32; 65536]);

impl GatedLanes for Gelu<'_> {
    #[inline(always)]
    unsafe fn lanes(&self, gate: __m256, up: __m256) -> __m256 {
        gelu_mul(gate, up, self.0)
    }
}

/// `gate[i] = unit(gate[i], up[i])` (equal lengths), eight lanes at a time; the tail through
/// the same lanes. Inlined into each `#[target_feature]` entry below (a plain function, not a
/// closure, so that the intrinsics inherit their features).
#[inline(always)]
unsafe fn gated<U: GatedLanes>(gate: &mut [f32], up: &[f32], unit: U) {
    let n = gate.len();
    let n8 = n & !7;
    let (g, u) = (gate.as_mut_ptr(), up.as_ptr());
    for i in (0..n8).step_by(8) {
        _mm256_storeu_ps(
            g.add(i),
            unit.lanes(_mm256_loadu_ps(g.add(i)), _mm256_loadu_ps(u.add(i))),
        );
    }
    if n8 < n {
        let (mut tg, mut tu) = ([0f32; 8], [0f32; 8]);
        tg[..n - n8].copy_from_slice(&gate[n8..]);
        tu[..n - n8].copy_from_slice(&up[n8..]);
        let r = unit.lanes(_mm256_loadu_ps(tg.as_ptr()), _mm256_loadu_ps(tu.as_ptr()));
        _mm256_storeu_ps(tg.as_mut_ptr(), r);
        gate[n8..].copy_from_slice(&tg[..n - n8]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn swiglu_f32_impl(gate: &mut [f32], up: &[f32]) {
    gated(gate, up, Silu)
}

/// `gelu(x) · y` for eight lanes: x rounded to fp16 (`vcvtps2ph`, to nearest even, as
/// `half`'s conversion), its bits gathered from the table, 0 at or below −10, x at or above 10.
#[inline(always)]
unsafe fn gelu_mul(x: __m256, y: __m256, table: &[f32; 65536]) -> __m256 {
    let idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
    let g = _mm256_i32gather_ps::<4>(table.as_ptr(), idx);
    let low = _mm256_cmp_ps::<_CMP_LE_OQ>(x, _mm256_set1_ps(-10.0));
    let high = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(10.0));
    let g = _mm256_blendv_ps(_mm256_andnot_ps(low, g), x, high);
    _mm256_mul_ps(g, y)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn geglu_f32_impl(gate: &mut [f32], up: &[f32], table: &[f32; 65536]) {
    gated(gate, up, Gelu(table))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn softmax_f32_impl(x: &mut [f32]) {
    let n = x.len();
    let n8 = n & !7;
    let p = x.as_mut_ptr();
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..n8).step_by(8) {
        m = _mm256_max_ps(m, _mm256_loadu_ps(p.add(i)));
    }
    let mut max = f32::NEG_INFINITY;
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), m);
    for v in lanes.iter().chain(&x[n8..]) {
        max = max.max(*v);
    }
    let mx = _mm256_set1_ps(max);
    // The sum in f64: two accumulators of four lanes.
    let mut sum = [_mm256_setzero_pd(); 2];
    for i in (0..n8).step_by(8) {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mx));
        _mm256_storeu_ps(p.add(i), e);
        add_pd(&mut sum, e);
    }
    if n8 < n {
        // The tail through the same lanes (padding with −inf, whose exp is 0).
        let mut t = [f32::NEG_INFINITY; 8];
        t[..n - n8].copy_from_slice(&x[n8..]);
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(t.as_ptr()), mx));
        _mm256_storeu_ps(t.as_mut_ptr(), e);
        x[n8..].copy_from_slice(&t[..n - n8]);
        add_pd(&mut sum, e);
    }
    let mut sums = [0f64; 4];
    _mm256_storeu_pd(sums.as_mut_ptr(), _mm256_add_pd(sum[0], sum[1]));
    let inv = _mm256_set1_ps((1.0 / sums.iter().sum::<f64>()) as f32);
    for i in (0..n8).step_by(8) {
        _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), inv));
    }
    let inv = _mm256_cvtss_f32(inv);
    for v in &mut x[n8..] {
        *v *= inv;
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

/// `x` rounded to f16 (to nearest, ties to even: `f16::from_f32`'s bits) with F16C inline,
/// one instruction where half's conversion is a call per value that checks the CPU's features
/// at run time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn to_f16(x: f32) -> f16 {
    f16::from_bits(_mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) as u16)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_0_impl(x: &[f32], out: &mut [BlockQ8_0]) {
    for (x, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        let (d, _) = quantize_block(x, &mut b.qs);
        b.d = to_f16(d);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_1_impl(x: &[f32], out: &mut [BlockQ8_1]) {
    for (x, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        let (d, sum) = quantize_block(x, &mut b.qs);
        b.d = to_f16(d);
        b.s = to_f16(sum as f32 * d);
    }
}
