//! AVX2 products of Q4_0, Q4_1 and Q8_0 weights repacked eight rows at a time (layout in
//! `crate::packed`). The arithmetic is the row-lane kernels' (`avx2_lanes.rs`): per block the
//! exact integer `i = Σ u·q − o·Σq` (Q8_0: `Σ |w|·(q with the sign of w)`), then
//! `acc = fma(d_w·d_a, i, acc)` (and the mins' sum), so the results have the same bits as the
//! unpacked matrix gives.
//!
//! Decode, per block of a group: four 32-byte loads hold the eight rows' 128 quant bytes of the
//! 4-bit formats (vector k: bytes 8(k/2)..8(k/2)+8 of four slots' rows); the low nibbles are
//! elements 8h..8h+8 and the high ones 16+8h..; each meets the activation's matching eight
//! bytes, broadcast, in one `vpmaddubsw` (four 4-bit products summed in i16 stay below 32767,
//! see avx2_lanes.rs); one `vpmaddwd` and one `vphaddd` give the eight row sums, in row order
//! thanks to the slot order; the eight scales are one 16-byte load. Q8_0 takes eight loads and
//! widens every `vpmaddubsw` result at once.
//! Prefill: the groups are laid out for `avx2_lanes`' tiles, as the unpacked rows are.

use super::avx2_lanes::{
    act_info, prefill_groups, store_lanes, transpose8, unpack_nibbles, ActInfo, Activation, Format, Group, GroupSource,
    L, PREFILL_MIN_TOKENS,
};
use crate::packed::{group_bytes, group_quant_bytes, head_bytes, quant_bytes, GROUP_ROWS, SLOT_ROW};
use crate::quants::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use crate::GgmlType;
use core::arch::x86_64::*;

// A group's rows are the row-lane tiles' eight f32 lanes.
const _: () = assert!(L == GROUP_ROWS);

/// The packed formats: their type and their head bytes per block.
trait Packed: Format {
    const TY: GgmlType;
}

impl Packed for BlockQ4_0 {
    const TY: GgmlType = GgmlType::Q4_0;
}

impl Packed for BlockQ4_1 {
    const TY: GgmlType = GgmlType::Q4_1;
}

impl Packed for BlockQ8_0 {
    const TY: GgmlType = GgmlType::Q8_0;
}

/// Eight bytes of an activation's quants, in every 64-bit lane.
#[inline(always)]
unsafe fn bcast8(qs: &[i8; 32], k: usize) -> __m256i {
    _mm256_set1_epi64x(core::ptr::read_unaligned(qs.as_ptr().add(8 * k) as *const i64))
}

/// Low and high nibbles of 32 bytes.
#[inline(always)]
unsafe fn nibbles(v: __m256i) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0F);
    (_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4))
}

/// Four slots' sums against the activation bytes `a` (0..8, 8..16, 16..24, 24..32 broadcast):
/// `v` holds their bytes 0..8, `w` bytes 8..16. Two i32 partial sums per slot, in slot order.
/// (Plain functions, not closures: closures do not inherit the caller's target features.)
#[inline(always)]
unsafe fn four_slots(v: *const u8, w: *const u8, a: &[__m256i; 4]) -> __m256i {
    let (v0, v1) = nibbles(_mm256_loadu_si256(v as *const __m256i));
    let (w0, w1) = nibbles(_mm256_loadu_si256(w as *const __m256i));
    let s = _mm256_add_epi16(_mm256_maddubs_epi16(v0, a[0]), _mm256_maddubs_epi16(w0, a[1]));
    let t = _mm256_add_epi16(_mm256_maddubs_epi16(v1, a[2]), _mm256_maddubs_epi16(w1, a[3]));
    _mm256_madd_epi16(_mm256_add_epi16(s, t), _mm256_set1_epi16(1))
}

/// Four slots' Q8_0 sums: `v` points at the vector of their bytes 0..8, the vectors of bytes
/// 8h..8h+8 follow 64 bytes apart. Signed quants: `vpmaddubsw` of `|w|` and `q` with the sign of
/// `w` (see avx2_lanes.rs), each widened before it is added (pairs reach 32512).
#[inline(always)]
unsafe fn four_slots_q8(v: *const u8, a: &[__m256i; 4]) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    for (h, a) in a.iter().enumerate() {
        let w = _mm256_loadu_si256(v.add(64 * h) as *const __m256i);
        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(*a, w));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
    }
    acc
}

/// Σ u·q of the eight rows of block `q` against `qs`: lane r = row r.
#[inline(always)]
unsafe fn block_sums<F: Packed>(q: *const u8, qs: &[i8; 32]) -> __m256i {
    let a = [bcast8(qs, 0), bcast8(qs, 1), bcast8(qs, 2), bcast8(qs, 3)];
    // [s0 s0 s1 s1 | s2 s2 s3 s3] and the same for slots 4..8 -> [s0 s1 s4 s5 | s2 s3 s6 s7],
    // rows 0..8 (SLOT_ROW).
    if F::SIGNED {
        return _mm256_hadd_epi32(four_slots_q8(q, &a), four_slots_q8(q.add(32), &a));
    }
    _mm256_hadd_epi32(four_slots(q, q.add(64), &a), four_slots(q.add(32), q.add(96), &a))
}

/// One token (`a`, info offset `off`) against the group at `g` (`nb` blocks).
#[inline(always)]
unsafe fn decode_group<F: Packed>(g: *const u8, nb: usize, a: &[F::Act], info: &ActInfo, off: usize) -> __m256 {
    let (gq, hb) = (group_quant_bytes(F::TY), head_bytes(F::TY));
    let heads = g.add(nb * gq);
    let mut acc = _mm256_setzero_ps();
    let mut summ = _mm256_setzero_ps();
    // The next group, a proportional slice per block (as the row-lane decode does): the
    // hardware prefetchers alone ramp up too slowly on the short runs of rows a task gets.
    let next = g.wrapping_add(group_bytes(F::TY, nb));
    let step = gq + hb;
    for (b, y) in a.iter().enumerate() {
        let ahead = next.wrapping_add(b * step) as *const i8;
        for line in 0..step.div_ceil(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
        }
        let mut i = block_sums::<F>(g.add(b * gq), y.qs());
        if F::OFFSET != 0 {
            i = _mm256_sub_epi32(i, _mm256_set1_epi32(info.c[off + b]));
        }
        let h = heads.add(b * hb);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(h as *const __m128i));
        let d = _mm256_mul_ps(dw, _mm256_set1_ps(info.d[off + b]));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(i), acc);
        if F::HAS_MIN {
            let m = _mm256_cvtph_ps(_mm_loadu_si128(h.add(16) as *const __m128i));
            summ = _mm256_fmadd_ps(m, _mm256_set1_ps(info.s[off + b]), summ);
        }
    }
    if F::HAS_MIN {
        acc = _mm256_add_ps(acc, summ);
    }
    acc
}

/// The groups of a packed matrix as the prefill tiles want them.
struct PackedGroups {
    w: *const u8,
    gb: usize,
}

impl<F: Packed> GroupSource<F> for PackedGroups {
    #[inline(always)]
    unsafe fn fill(&self, r0: usize, nb: usize, g: &mut Group) {
        g.q.clear();
        g.d.clear();
        g.m.clear();
        let base = self.w.add(r0 / GROUP_ROWS * self.gb);
        let (qb, gq, hb) = (quant_bytes(F::TY), group_quant_bytes(F::TY), head_bytes(F::TY));
        let heads = base.add(nb * gq);
        for b in 0..nb {
            let q = base.add(b * gq);
            // A plain loop: a closure would not inherit the caller's target features.
            let mut rows = [_mm256_setzero_si256(); L];
            for (r, v) in rows.iter_mut().enumerate() {
                let s = SLOT_ROW[r];
                let mut qs = [0u8; 32];
                for h in 0..qb / 8 {
                    core::ptr::copy_nonoverlapping(q.add(64 * h + 8 * s), qs.as_mut_ptr().add(8 * h), 8);
                }
                *v = if F::SIGNED {
                    _mm256_loadu_si256(qs.as_ptr() as *const __m256i)
                } else {
                    unpack_nibbles(&qs[..16].try_into().unwrap())
                };
            }
            g.q.extend_from_slice(&transpose8(rows));
            let h = heads.add(b * hb);
            g.d.push(_mm256_cvtph_ps(_mm_loadu_si128(h as *const __m128i)));
            g.m.push(if F::HAS_MIN {
                _mm256_cvtph_ps(_mm_loadu_si128(h.add(16) as *const __m128i))
            } else {
                _mm256_setzero_ps()
            });
        }
    }
}

/// `out[t * ldo + r] = dot(row r, a[t])` for the `rows` rows packed in `w` (whole groups of
/// `nb` blocks) and every token of `a`.
///
/// # Safety
/// AVX2, FMA and F16C; shapes checked by the caller.
#[inline(always)]
unsafe fn gemm<F: Packed>(w: &[u8], rows: usize, nb: usize, a: &[F::Act], out: &mut [f32], ldo: usize) {
    let n = a.len() / nb;
    if n < PREFILL_MIN_TOKENS {
        let gb = group_bytes(F::TY, nb);
        let info = act_info::<F>(a);
        let o = out.as_mut_ptr();
        for r0 in (0..rows).step_by(GROUP_ROWS) {
            let g = w.as_ptr().add(r0 / GROUP_ROWS * gb);
            for t in 0..n {
                let v = decode_group::<F>(g, nb, &a[t * nb..(t + 1) * nb], &info, t * nb);
                store_lanes(v, (rows - r0).min(L), o.add(t * ldo + r0));
            }
        }
        return;
    }
    let src = PackedGroups {
        w: w.as_ptr(),
        gb: group_bytes(F::TY, nb),
    };
    prefill_groups::<F, _>(&src, rows, a, nb, out, ldo);
}

/// The checks of the safe entry points: whole groups of whole rows, room for every output.
fn check(ty: GgmlType, w: usize, rows: usize, nb: usize, a: usize, out: usize, ldo: usize) {
    assert!(nb > 0 && a.is_multiple_of(nb), "packed gemm: partial activation rows");
    assert_eq!(
        w,
        rows.div_ceil(GROUP_ROWS) * group_bytes(ty, nb),
        "packed gemm: not whole groups"
    );
    let n = a / nb;
    assert!(rows <= ldo || n <= 1, "packed gemm: ldo smaller than the row count");
    assert!(
        rows == 0 || n == 0 || (n - 1) * ldo + rows <= out,
        "packed gemm: output too small"
    );
}

macro_rules! entry {
    ($name:ident, $w:ty, $a:ty) => {
        /// Safe entry point, reachable only through tables handed out after AVX2, FMA and F16C
        /// were detected: `out[t * ldo + r]` for every row r packed in `w`, token t of `a`.
        pub(crate) fn $name(w: &[u8], rows: usize, nb: usize, a: &[$a], out: &mut [f32], ldo: usize) {
            check(<$w as Packed>::TY, w.len(), rows, nb, a.len(), out.len(), ldo);
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn imp(w: &[u8], rows: usize, nb: usize, a: &[$a], out: &mut [f32], ldo: usize) {
                gemm::<$w>(w, rows, nb, a, out, ldo)
            }
            // SAFETY: features detected before the table was handed out; shapes checked above.
            unsafe { imp(w, rows, nb, a, out, ldo) }
        }
    };
}

entry!(gemm_q4_0, BlockQ4_0, BlockQ8_0);
entry!(gemm_q4_1, BlockQ4_1, BlockQ8_1);
entry!(gemm_q8_0, BlockQ8_0, BlockQ8_0);
