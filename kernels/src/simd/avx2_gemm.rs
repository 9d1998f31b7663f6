//! AVX2 register-tiled products of Q8_0 (the 4- and 5-bit formats have the row-lane kernels of
//! `avx2_lanes.rs`; the tile code stays generic over the format): R weight rows × T activation rows
//! at once, so a decoded weight block is reused for T tokens and an activation block for R rows,
//! with R·T independent accumulators instead of one dependency chain.
//!
//! Every (row, token) pair goes through exactly the same floating-point operations, in the same
//! order, as the AVX2 dot product of the format, so a product computed inside a tile is
//! bit-identical to the one computed alone: batching never changes a result (checked by the test
//! below and by tests/api.rs). The AVX-512 table uses these tiles too: they beat its dots.

use super::avx2::{hsum_ps, load_q8, mul_sum_u8_i8};
use super::avx2_lanes::Activation;
use crate::dispatch::GemmKernels;
use crate::quants::BlockQ8_0;
use core::arch::x86_64::*;

/// The AVX2 table's: decode uses the tiles too (the row-lane ones for Q4_0..Q5_1; Q8_0 and the
/// K-quants decode one row at a time, as their dots do, which streams fastest on Zen).
pub(crate) const KERNELS: GemmKernels = GemmKernels {
    q4_0: Some(super::avx2_lanes::gemm_q4_0),
    q4_1: Some(super::avx2_lanes::gemm_q4_1),
    q5_0: Some(super::avx2_lanes::gemm_q5_0),
    q5_1: Some(super::avx2_lanes::gemm_q5_1),
    q8_0: Some(gemm_q8_0_rows),
    q4_k: Some(super::avx2_lanes::gemm_q4_k),
    q6_k: Some(super::avx2_kquants::gemm_q6_k),
    decode: true,
};

/// The AVX2 tiles for the plain AVX-512 table, decode included: its dots are not the tiles'
/// bits, so matrix-vector and batched products must both use the tiles.
pub(crate) const KERNELS_ALL: GemmKernels = GemmKernels {
    q8_0: Some(gemm_q8_0),
    ..KERNELS
};

/// The tiles with `vpdpbusd`, for CPUs with AVX512-VNNI (and VL).
pub(crate) const KERNELS_VNNI: GemmKernels = GemmKernels {
    q8_0: Some(gemm_q8_0_vnni),
    ..KERNELS
};

/// Rows per tile in `gemm` and tokens per tile.
const R: usize = 2;
const T: usize = 4;
/// Rows per tile when there is a single token (matrix-vector).
const RV: usize = 4;
/// Tokens per pass of all rows (also the K-quant tiles').
pub(super) const TOKEN_TILE: usize = 8;

/// A weight block made ready for multiplication: the bytes fed to `vpmaddubsw` as the unsigned
/// operand and the bytes whose sign moves onto the activations (signed formats).
#[derive(Clone, Copy)]
struct Prepared {
    u: __m256i,
    s: __m256i,
}

/// Weight formats the tiles handle. Every block starts with its fp16 scale (and, for formats
/// with a min, the fp16 min right after it), followed by at least two more bytes.
trait Format: bytemuck::Pod {
    type Act: Activation;
    /// Whether the format has a min (`+ m·s` per block; the activation is Q8_1).
    const HAS_MIN: bool;
    unsafe fn prep(&self) -> Prepared;
}

/// The block's first two fp16 values as f32 lanes 0 and 1 (scale and min; for formats without a
/// min, lane 1 is meaningless). One conversion from memory.
#[inline(always)]
unsafe fn scales<F: Format>(x: &F) -> __m128 {
    super::avx2::fp16x2(x)
}

/// Signed weights: |q| as the unsigned operand, the sign of q moved onto the activations.
#[inline(always)]
unsafe fn signed(q: __m256i) -> Prepared {
    Prepared {
        u: _mm256_sign_epi8(q, q),
        s: q,
    }
}

impl Format for BlockQ8_0 {
    type Act = BlockQ8_0;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn prep(&self) -> Prepared {
        signed(load_q8(&self.qs))
    }
}

/// The integer products of one block pair as f32x8. `V`: one `vpdpbusd` (AVX512-VNNI on 256-bit
/// vectors) instead of `vpmaddubsw` + `vpmaddwd`. The sums are the same integers, so the results
/// are the same bits: `vpmaddubsw` cannot saturate here (u ≤ 128 and |q| ≤ 127, so a pair stays
/// within ±32512).
#[inline(always)]
unsafe fn pair<F: Format, const V: bool>(p: &Prepared, q: __m256i) -> __m256 {
    let q = if F::HAS_MIN { q } else { _mm256_sign_epi8(q, p.s) };
    if V {
        _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), p.u, q))
    } else {
        mul_sum_u8_i8(p.u, q)
    }
}

/// `out[r * ldo + t] = dot(w[r], a[t])` for the `RR × TT` tile whose rows start at `w[r]` and
/// tokens at `a[t]` (each `nb` blocks); `ad[t]` / `as_[t]` are the tokens' block scales as f32.
///
/// Per pair and block: `d = w.d · a.d` (f32), `acc = fma(d, Σ q·q, acc)`, `summs += w.m · a.s`;
/// at the end `hsum(acc) + summs`: the same operations in the same order as the path's dot.
///
/// # Safety
/// AVX2, FMA and F16C; every pointer valid for `nb` blocks (scales: `nb` f32); `out` valid for
/// the tile.
#[inline(always)]
unsafe fn tile<F: Format, const V: bool, const RR: usize, const TT: usize>(
    w: [*const F; RR],
    a: [*const F::Act; TT],
    ad: [*const f32; TT],
    as_: [*const f32; TT],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); TT]; RR];
    let mut summs = [[0f32; TT]; RR];
    for b in 0..nb {
        if TT == 1 {
            // Decode streams the weights from memory, several rows at once: ask for them ahead,
            // the hardware prefetchers lose track of interleaved row streams on some CPUs.
            // The same block of the row after the tile (rows follow each other in memory).
            for wr in &w {
                _mm_prefetch::<_MM_HINT_T0>(wr.wrapping_add(RR * nb + b) as *const i8);
            }
        }
        let mut aq = [_mm256_setzero_si256(); TT];
        for t in 0..TT {
            aq[t] = load_q8((*a[t].add(b)).qs());
        }
        for r in 0..RR {
            let x = &*w[r].add(b);
            let sc = scales(x);
            let wd = _mm256_broadcastss_ps(sc);
            let p = x.prep();
            for t in 0..TT {
                if F::HAS_MIN {
                    summs[r][t] += _mm_cvtss_f32(_mm_movehdup_ps(sc)) * *as_[t].add(b);
                }
                let d = _mm256_mul_ps(wd, _mm256_broadcast_ss(&*ad[t].add(b)));
                acc[r][t] = _mm256_fmadd_ps(d, pair::<F, V>(&p, aq[t]), acc[r][t]);
            }
        }
    }
    for r in 0..RR {
        for t in 0..TT {
            *out.add(r * ldo + t) = hsum_ps(acc[r][t]) + summs[r][t];
        }
    }
}

/// The whole product of `w` (rows × nb blocks) and `a` (n × nb blocks) into `out[r * ldo + t]`.
#[inline(always)]
unsafe fn gemm<F: Format, const V: bool, const DECODE_TILES: bool>(
    w: &[F],
    a: &[F::Act],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    if nb == 0 {
        return;
    }
    // Tokens a few at a time, so their activations stay in L1 while all rows pass over them.
    let n = a.len() / nb;
    for t0 in (0..n).step_by(TOKEN_TILE) {
        let t1 = (t0 + TOKEN_TILE).min(n);
        gemm_tokens::<F, V, DECODE_TILES>(w, &a[t0 * nb..t1 * nb], nb, &mut out[t0..], ldo);
    }
}

/// `gemm` for at most `TOKEN_TILE` tokens.
#[inline(always)]
unsafe fn gemm_tokens<F: Format, const V: bool, const DECODE_TILES: bool>(
    w: &[F],
    a: &[F::Act],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let rows = w.len() / nb;
    let n = a.len() / nb;
    assert!(
        rows == 0 || n == 0 || (rows - 1) * ldo + n <= out.len(),
        "gemm: output too small"
    );
    // Activation scales as f32, converted once instead of once per row.
    let (ad, as_): (Vec<f32>, Vec<f32>) = a.iter().map(|x| (x.d(), x.s())).unzip();
    let wp = |r: usize| w.as_ptr().add(r * nb);
    let ap = |t: usize| a.as_ptr().add(t * nb);
    let dp = |t: usize| ad.as_ptr().add(t * nb);
    let sp = |t: usize| as_.as_ptr().add(t * nb);
    let o = out.as_mut_ptr();
    if n == 1 {
        let (a1, d1, s1) = ([ap(0)], [dp(0)], [sp(0)]);
        let mut r = 0;
        while DECODE_TILES && r + RV <= rows {
            let w4 = [wp(r), wp(r + 1), wp(r + 2), wp(r + 3)];
            tile::<F, V, RV, 1>(w4, a1, d1, s1, nb, o.add(r * ldo), ldo);
            r += RV;
        }
        for r in r..rows {
            tile::<F, V, 1, 1>([wp(r)], a1, d1, s1, nb, o.add(r * ldo), ldo);
        }
        return;
    }
    let mut r = 0;
    while r < rows {
        let two = r + R <= rows;
        let mut t = 0;
        while t + T <= n {
            let at = [ap(t), ap(t + 1), ap(t + 2), ap(t + 3)];
            let dt = [dp(t), dp(t + 1), dp(t + 2), dp(t + 3)];
            let st = [sp(t), sp(t + 1), sp(t + 2), sp(t + 3)];
            if two {
                tile::<F, V, R, T>([wp(r), wp(r + 1)], at, dt, st, nb, o.add(r * ldo + t), ldo);
            } else {
                tile::<F, V, 1, T>([wp(r)], at, dt, st, nb, o.add(r * ldo + t), ldo);
            }
            t += T;
        }
        for t in t..n {
            let (a1, d1, s1) = ([ap(t)], [dp(t)], [sp(t)]);
            if two {
                tile::<F, V, R, 1>([wp(r), wp(r + 1)], a1, d1, s1, nb, o.add(r * ldo + t), ldo);
            } else {
                tile::<F, V, 1, 1>([wp(r)], a1, d1, s1, nb, o.add(r * ldo + t), ldo);
            }
        }
        r += if two { R } else { 1 };
    }
}

/// The shape checks of the safe entry points: whole rows of `nb` blocks, and output rows far
/// enough apart for the tokens (`gemm` checks the output length).
pub(super) fn check_shapes(w_blocks: usize, a_blocks: usize, nb: usize, ldo: usize) {
    assert!(
        nb > 0 && w_blocks.is_multiple_of(nb) && a_blocks.is_multiple_of(nb),
        "gemm: partial rows"
    );
    assert!(
        a_blocks / nb <= ldo || w_blocks / nb <= 1,
        "gemm: ldo smaller than the token count"
    );
}

macro_rules! entry {
    ($name:ident, $v:literal, $tiles:literal, $features:literal) => {
        /// Safe entry point, reachable only through a table handed out after its features were
        /// detected. `out[r * ldo + t]` for every row r of `w` and token t of `a`.
        fn $name(w: &[BlockQ8_0], a: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
            check_shapes(w.len(), a.len(), nb, ldo);
            #[target_feature(enable = $features)]
            unsafe fn imp(w: &[BlockQ8_0], a: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
                gemm::<_, $v, $tiles>(w, a, nb, out, ldo)
            }
            // SAFETY: the features were detected before the table holding this was handed out;
            // the shapes were checked above and the output size inside `gemm`.
            unsafe { imp(w, a, nb, out, ldo) }
        }
    };
}

// Decode one row at a time (the AVX2 table: bit-identical to its dot) or in 4-row tiles.
entry!(gemm_q8_0_rows, false, false, "avx2,fma,f16c");
entry!(gemm_q8_0, false, true, "avx2,fma,f16c");
entry!(gemm_q8_0_vnni, true, true, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni");

#[cfg(test)]
mod tests {
    use crate::dispatch::DotFn;
    use crate::quants::q8_0;
    use bytemuck::Zeroable;

    use super::super::test_values as values;

    /// Every tile shape (rows and tokens with remainders) gives the dot's exact bits.
    fn check<W: bytemuck::Pod, A: bytemuck::Pod>(
        qw: fn(&[f32], &mut [W]),
        qa: fn(&[f32], &mut [A]),
        dot: DotFn<W, A>,
        gemm: crate::dispatch::GemmFn<W, A>,
    ) {
        let (rows, n, nb) = (11, 19, 5);
        let mut w = vec![W::zeroed(); rows * nb];
        qw(&values(rows * nb * 32, 1), &mut w);
        let mut a = vec![A::zeroed(); n * nb];
        qa(&values(n * nb * 32, 2), &mut a);
        for tokens in [1, 3, n] {
            let mut out = vec![f32::NAN; rows * tokens];
            gemm(&w, &a[..tokens * nb], nb, &mut out, tokens);
            for r in 0..rows {
                for t in 0..tokens {
                    let want = dot(&w[r * nb..(r + 1) * nb], &a[t * nb..(t + 1) * nb]);
                    assert_eq!(
                        out[r * tokens + t].to_bits(),
                        want.to_bits(),
                        "row {r} token {t} of {tokens}"
                    );
                }
            }
        }
    }

    /// The VNNI tiles give the AVX2 tiles' bits (run where the CPU has AVX512-VNNI).
    #[test]
    fn vnni_tiles_equal_avx2_tiles() {
        let has = ["avx512f", "avx512vl", "avx512vnni"];
        if !super::super::avx2::detected()
            || !std::arch::is_x86_feature_detected!("avx512f")
            || !std::arch::is_x86_feature_detected!("avx512vl")
            || !std::arch::is_x86_feature_detected!("avx512vnni")
        {
            eprintln!("skipped: this CPU lacks one of {has:?}");
            return;
        }
        let (a, v) = (super::KERNELS, super::KERNELS_VNNI);
        let (rows, n, nb) = (9, 6, 4);
        let mut w = vec![crate::quants::BlockQ8_0::zeroed(); rows * nb];
        q8_0::quantize(&values(rows * nb * 32, 5), &mut w);
        let mut x = vec![crate::quants::BlockQ8_0::zeroed(); n * nb];
        q8_0::quantize_activations(&values(n * nb * 32, 6), &mut x);
        let (mut o1, mut o2) = (vec![0f32; rows * n], vec![1f32; rows * n]);
        a.q8_0.unwrap()(&w, &x, nb, &mut o1, n);
        v.q8_0.unwrap()(&w, &x, nb, &mut o2, n);
        assert_eq!(o1, o2);
    }

    #[test]
    fn tiles_equal_the_dot_bit_for_bit() {
        if !super::super::avx2::detected() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        // Q8_0 only: the other 32-element formats have the row-lane kernels (avx2_lanes.rs).
        let t = super::super::avx2::table().unwrap();
        check(
            q8_0::quantize,
            q8_0::quantize_activations,
            t.dot_q8_0,
            super::gemm_q8_0_rows,
        );
        check(q8_0::quantize, q8_0::quantize_activations, t.dot_q8_0, super::gemm_q8_0);
    }
}
