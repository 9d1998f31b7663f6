//! AVX2 products of Q4_0, Q4_1, Q5_0, Q8_0 and Q4_K weights repacked eight rows at a time (layout in
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
//! widens every `vpmaddubsw` result at once. The avx512-vnni table loads 64 bytes at a time
//! (the same bytes of all eight slots) and sums with four 512-bit `vpdpbusd`.
//! Prefill: the groups are laid out for `avx2_lanes`' tiles, as the unpacked rows are.

use super::avx2_lanes::{
    act_info_into, fifth_bits, prefill_groups, store_lanes, transpose8, unpack_nibbles, ActInfo, Activation, Format,
    Group, GroupSource, L, PREFILL_MIN_TOKENS,
};
use crate::packed::{
    block_offsets, group_bytes, group_quant_bytes, head_bytes, q5_mask_byte, quant_bytes, run_offsets,
    unpack_group_q4k, GROUP_ROWS, Q4K_BLOCK_BYTES, Q4K_HEADS, Q4K_MINS, Q4K_SCALES, Q5_MASKS, RUN, SLOT_ROW,
};
use crate::quants::{BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::GgmlType;
use bytemuck::Zeroable;
use core::arch::x86_64::*;
use std::cell::Cell;

// A group's rows are the row-lane tiles' eight f32 lanes.
const _: () = assert!(L == GROUP_ROWS);

/// The packed formats: their type and their head bytes per block.
trait Packed: Format {
    const TY: GgmlType;
    /// Q5_0: the fifth bits come as masks in the head bytes (`crate::packed::Q5_MASKS`): 32
    /// bits spread to 32 bytes of 0x10 and or-ed into a vector of nibbles (the avx512-vnni
    /// table: masked byte adds).
    const FIFTH: bool = false;
}

impl Packed for BlockQ4_0 {
    const TY: GgmlType = GgmlType::Q4_0;
}

impl Packed for BlockQ4_1 {
    const TY: GgmlType = GgmlType::Q4_1;
}

impl Packed for BlockQ5_0 {
    const TY: GgmlType = GgmlType::Q5_0;
    const FIFTH: bool = true;
}

impl Packed for BlockQ8_0 {
    const TY: GgmlType = GgmlType::Q8_0;
}

/// How far ahead of the bytes in use decode prefetches `ty` in groups of `gb` bytes: into L2
/// (the 32-element formats) 8 KB, or 6 KB where a group is 16 KB or more (rows of thousands of
/// columns); into L1 (Q4_K) 6 KB on the avx512-vnni table (`vnni`), 12 KB on the others;
/// Q8_0 not at all on the avx512-vnni table, 4 KB on the others. The hardware prefetchers alone
/// ramp up too slowly on the short runs of rows a task gets, and a whole group ahead (up to 66 KB for
/// 14336 columns) is more than L1 keeps. Into L2, 8 KB beat 4 KB on one thread (8b Q4_0 tg16
/// 4.9-5.3 vs 4.5 t/s) and on SmolLM2's decode (+5-7%); into L1 it does not. The distances
/// between were timed token by token in stop 33 (a model alternating distances every token):
/// on the 8b Q4_0 shape 6 KB beat 8 KB by 2.5-7% in six runs (3, 4, 5, 7, 10, 12 and 24 KB all
/// lost to it: the optimum is narrow), on the 8b Q4_K_M shape 6 KB beat Q4_K's former 4 KB by
/// 1-6%, while SmolLM2's short rows kept 8 KB (6 KB -3.6, -1.3, +3.2%). Q8_0, whose
/// blocks cost the least work per byte, streamed faster with the hardware prefetchers alone,
/// on every shape tried (gemma3's 178 MB head 29-41 against 22-35 GB/s, in interleaved pairs
/// of `benches/examples/stream.rs`; the 8b shapes and gemma3's layer shapes too), while Q4_1
/// lost up to a third without it. That was Zen 4, whose products run on the avx512-vnni table
/// (`vnni`). On Zen 3 (AVX2 only, so the avx2 table) the hardware prefetchers alone carried
/// the Q8_0 heads at 60-80% of the read bandwidth against ~90% with software prefetch, and
/// per token (stop 34) 6 KB ahead was 10% faster than none on SmolLM2 and 13% on gemma3, with
/// 2-6 KB alike (8 KB -2%, 12 KB -5% on gemma3): the tables without VNNI prefetch Q8_0 4 KB
/// ahead. (The other formats' distances, tried there as well, moved gemma3, SmolLM2 and the
/// 8b Q4_0 shape by under 1%.) Q4_K on Zen 3 (stop 35, the 8b Q4_K_M shape alternating
/// distances every token, 12 rounds of 16 tokens): 12 KB beat 6 KB by 2.0, 2.5 and 2.4%, 16 KB
/// by 2.1 and 0.3%, 8 and 10 KB within 0.7%; gemma3 +2.9% (its Q4_K is 4% of a token).
/// `FERRO_PREFETCH` sets every distance for measurement (0: no software prefetch).
fn prefetch_distance(ty: GgmlType, gb: usize, vnni: bool) -> usize {
    static D: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let set = *D.get_or_init(|| std::env::var("FERRO_PREFETCH").ok().and_then(|v| v.parse().ok()));
    set.unwrap_or(match ty {
        GgmlType::Q8_0 if vnni => 0,
        GgmlType::Q8_0 => 4 << 10,
        GgmlType::Q4_K if vnni => 6 << 10,
        GgmlType::Q4_K => 12 << 10,
        _ if gb >= 16 << 10 => 6 << 10,
        _ => 8 << 10,
    })
}

/// Whether decode reads a chunk of `ng` groups of `gb` bytes as two streams
/// ([`group_at`]): for long runs of small groups, as the output heads of the small models
/// (gemma3's 262144 rows of 680 bytes, SmolLM2's 49152 of 612). There two streams beat one
/// (gemma3's head as Q8_0 in `benches/examples/stream.rs`: +3-9% in interleaved pairs, gemma3
/// tg128 111 -> 118 t/s over five pairs), while on shorter chunks (the small models' layers) or
/// longer groups (the 8b shapes' Q8_0, 35 KB a group) they lost 5-15%.
fn two_streams(ng: usize, gb: usize) -> bool {
    ng >= 256 && gb <= 8192
}

/// The group read `i`-th of a chunk of `ng`: in order, or with `two` in turn from the chunk's
/// first and second halves (0, h, 1, h + 1, ... with h = ⌈ng / 2⌉). Each group's outputs are
/// computed alone, so the order changes no bits.
#[inline(always)]
fn group_at(i: usize, ng: usize, two: bool) -> usize {
    if !two {
        i
    } else if i.is_multiple_of(2) {
        i / 2
    } else {
        ng.div_ceil(2) + i / 2
    }
}

/// Prefetches the `len` bytes that lie `dist` ([`prefetch_distance`], read once per product)
/// past `p` (the stream of packed groups is contiguous, so this runs on into the next group;
/// addresses past the matrix are only hints), into L1 (`L2` false) or L2 only.
///
/// Which level streams better was measured per format (`benches/examples/stream.rs`, two
/// threads on the 8b shapes, Zen 4): the 32-element blocks reach 86% of the read bandwidth
/// into L2 against 80% into L1; Q4_K's super-blocks 93% into L1 against 85% into L2.
#[inline(always)]
unsafe fn prefetch_ahead<const L2: bool>(p: *const u8, dist: usize, len: usize) {
    if dist == 0 {
        return;
    }
    let ahead = p.wrapping_add(dist) as *const i8;
    for line in 0..len.div_ceil(64) {
        if L2 {
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
        } else {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
        }
    }
}

/// Eight bytes of an activation's quants, in every 64-bit lane.
#[inline(always)]
unsafe fn bcast8(qs: &[i8], k: usize) -> __m256i {
    _mm256_set1_epi64x(core::ptr::read_unaligned(qs.as_ptr().add(8 * k) as *const i64))
}

/// Low and high nibbles of 32 bytes.
#[inline(always)]
unsafe fn nibbles(v: __m256i) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0F);
    (_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4))
}

/// `Σ_k w[k]·a[k]` byte products (unsigned `w`, signed `a`) summed per four bytes: eight i32
/// lanes. `vpmaddubsw` pairs added in i16 (when `WIDE` is off: the 4- and 5-bit quants, whose
/// eight products stay within i16, see [`four_slots`]) or each widened before it is added
/// (Q8_0: pairs reach 32512), then `vpmaddwd` with ones: exact integers, as the avx512-vnni
/// table's `vpdpbusd` sums ([`block_sums_512`]), so both give the same bits.
#[inline(always)]
unsafe fn sum4<const WIDE: bool>(w: [__m256i; 4], a: &[__m256i; 4]) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let p: [__m256i; 4] = core::array::from_fn(|k| _mm256_maddubs_epi16(w[k], a[k]));
    if WIDE {
        let mut acc = _mm256_setzero_si256();
        for p in p {
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        return acc;
    }
    let s = _mm256_add_epi16(_mm256_add_epi16(p[0], p[1]), _mm256_add_epi16(p[2], p[3]));
    _mm256_madd_epi16(s, ones)
}

/// Four slots' sums against the activation bytes `a` (0..8, 8..16, 16..24, 24..32 broadcast):
/// `v` holds their bytes 0..8, `w` bytes 8..16. Two i32 partial sums per slot, in slot order.
/// Q5_0 (`masks`: those of `v`'s and `w`'s low nibbles; their high nibbles' lie two masks on,
/// see `crate::packed::Q5_MASKS`): each nibble vector gains 16
/// where its mask has the bit. Eight products of 5-bit and 8-bit quants
/// summed in i16 reach at most 8·31·128 = 31744.
/// (Plain functions, not closures: closures do not inherit the caller's target features.)
#[inline(always)]
unsafe fn four_slots(v: *const u8, w: *const u8, masks: Option<[*const u32; 2]>, a: &[__m256i; 4]) -> __m256i {
    let (mut v0, mut v1) = nibbles(_mm256_loadu_si256(v as *const __m256i));
    let (mut w0, mut w1) = nibbles(_mm256_loadu_si256(w as *const __m256i));
    if let Some([m, n]) = masks {
        (v0, v1, w0, w1) = (fifth(v0, m), fifth(v1, m.add(2)), fifth(w0, n), fifth(w1, n.add(2)));
    }
    sum4::<false>([v0, w0, v1, w1], a)
}

/// `x` (nibbles) plus 16 in the bytes whose bit is set in the mask at `k`: byte 8j + i takes
/// bit i of the mask's byte j, as `fifth_bits` spreads a row's `qh` (AVX2 only: the tables
/// without AVX-512 BW pack Q5_0 too).
#[inline(always)]
unsafe fn fifth(x: __m256i, k: *const u32) -> __m256i {
    _mm256_or_si256(x, fifth_bits(core::ptr::read_unaligned(k).to_le_bytes()))
}

/// Four slots' Q8_0 sums: `v` points at the vector of their bytes 0..8, the vectors of bytes
/// 8h..8h+8 follow 64 bytes apart. Signed quants: `|w|` against `q` with the sign of `w` (see
/// avx2_lanes.rs).
#[inline(always)]
unsafe fn four_slots_q8(v: *const u8, a: &[__m256i; 4]) -> __m256i {
    let w: [__m256i; 4] = core::array::from_fn(|h| _mm256_loadu_si256(v.add(64 * h) as *const __m256i));
    let signed: [__m256i; 4] = core::array::from_fn(|h| _mm256_sign_epi8(a[h], w[h]));
    sum4::<true>(w.map(|w| _mm256_abs_epi8(w)), &signed)
}

/// Eight bytes of an activation's quants, in every 64-bit lane of a 512-bit vector.
#[inline(always)]
unsafe fn bcast8_512(qs: &[i8], k: usize) -> __m512i {
    _mm512_set1_epi64(core::ptr::read_unaligned(qs.as_ptr().add(8 * k) as *const i64))
}

/// The 64-bit Q5_0 mask of the 512-bit vector of bytes 8h..8h+8 of all slots (quant vectors
/// 2h and 2h + 1), nibble `x`: masks `4h + 2x` and `4h + 2x + 1`, one load (see
/// `crate::packed::Q5_MASKS`).
#[inline(always)]
unsafe fn mask64(m: *const u32, h: usize, x: usize) -> __mmask64 {
    core::ptr::read_unaligned(m.add(4 * h + 2 * x) as *const u64)
}

/// [`block_sums`] with 512-bit vectors (the avx512-vnni table): each 64-byte load holds the
/// same eight bytes of all eight slots (quant vectors 2h and 2h + 1), so four (Q8_0: eight)
/// `vpdpbusd` sum a block, and one `vphaddd` of the two halves gives the rows. The same exact
/// integers as the 256-bit sums, in half the instructions.
#[inline(always)]
unsafe fn block_sums_512<F: Packed>(q: *const u8, h: *const u8, qs: &[i8; 32]) -> __m256i {
    let a = [
        bcast8_512(qs, 0),
        bcast8_512(qs, 1),
        bcast8_512(qs, 2),
        bcast8_512(qs, 3),
    ];
    let mut s = _mm512_setzero_si512();
    if F::SIGNED {
        // Bytes 8h..8h+8 of all slots against activation bytes 8h..8h+8: |w| against the
        // activation negated where w < 0 (AVX-512 has no `vpsignb`; where w = 0, |w| is 0).
        for (hh, a) in a.iter().enumerate() {
            let w = _mm512_loadu_si512(q.add(64 * hh) as *const _);
            let neg = _mm512_movepi8_mask(w);
            let sa = _mm512_mask_sub_epi8(*a, neg, _mm512_setzero_si512(), *a);
            s = _mm512_dpbusd_epi32(s, _mm512_abs_epi8(w), sa);
        }
    } else {
        let m4 = _mm512_set1_epi8(0x0F);
        let z0 = _mm512_loadu_si512(q as *const _);
        let z1 = _mm512_loadu_si512(q.add(64) as *const _);
        // Low nibbles of bytes 0..8 are elements 0..8, of bytes 8..16 elements 8..16; the high
        // ones 16..24 and 24..32.
        let mut n = [
            _mm512_and_si512(z0, m4),
            _mm512_and_si512(z1, m4),
            _mm512_and_si512(_mm512_srli_epi16(z0, 4), m4),
            _mm512_and_si512(_mm512_srli_epi16(z1, 4), m4),
        ];
        if F::FIFTH {
            let m = h.add(Q5_MASKS) as *const u32;
            let sixteen = _mm512_set1_epi8(16);
            // n[k]: bytes 8h..8h+8 with h = k % 2, nibble k / 2.
            for (k, v) in n.iter_mut().enumerate() {
                *v = _mm512_mask_add_epi8(*v, mask64(m, k % 2, k / 2), *v, sixteen);
            }
        }
        for k in 0..4 {
            s = _mm512_dpbusd_epi32(s, n[k], a[k]);
        }
    }
    // Slots 0..4 in the low half, 4..8 in the high one, as `block_sums`' two four-slot sums.
    _mm256_hadd_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s))
}

/// Σ u·q of the eight rows of block `q` (heads at `h`) against `qs`: lane r = row r. The
/// avx512-vnni table (`VNNI`) sums with 512-bit vectors ([`block_sums_512`]; 6% faster from
/// cache on Zen 4, which splits them in two, than four 256-bit `vpdpbusd` per slot half).
#[inline(always)]
unsafe fn block_sums<F: Packed, const VNNI: bool>(q: *const u8, h: *const u8, qs: &[i8; 32]) -> __m256i {
    if VNNI {
        return block_sums_512::<F>(q, h, qs);
    }
    let a = [bcast8(qs, 0), bcast8(qs, 1), bcast8(qs, 2), bcast8(qs, 3)];
    // [s0 s0 s1 s1 | s2 s2 s3 s3] and the same for slots 4..8 -> [s0 s1 s4 s5 | s2 s3 s6 s7],
    // rows 0..8 (SLOT_ROW).
    if F::SIGNED {
        return _mm256_hadd_epi32(four_slots_q8(q, &a), four_slots_q8(q.add(32), &a));
    }
    // Q5_0: vector V = 2h + k's low-nibble mask is 4h + k (its high one two on); vectors 0 and
    // 2 hold slots 0..4, 1 and 3 slots 4..8.
    let m = h.add(Q5_MASKS) as *const u32;
    let (lo, hi) = if F::FIFTH {
        (Some([m, m.add(4)]), Some([m.add(1), m.add(5)]))
    } else {
        (None, None)
    };
    _mm256_hadd_epi32(
        four_slots(q, q.add(64), lo, &a),
        four_slots(q.add(32), q.add(96), hi, &a),
    )
}

/// One token (`a`, info offset `off`) against the group at `g` (`nb` blocks).
#[inline(always)]
unsafe fn decode_group<F: Packed, const VNNI: bool>(
    g: *const u8,
    nb: usize,
    a: &[F::Act],
    info: &ActInfo,
    off: usize,
    dist: usize,
) -> __m256 {
    debug_assert!(
        a.len() == nb
            && [info.d.len(), info.s.len(), info.nc.len()]
                .iter()
                .all(|&n| n >= off + nb)
    );
    let (gq, hb) = (group_quant_bytes(F::TY), head_bytes(F::TY));
    let mut acc = _mm256_setzero_ps();
    let mut summ = _mm256_setzero_ps();
    for first in (0..nb).step_by(RUN) {
        let (quants, heads, len) = run_offsets(F::TY, nb, first);
        let (run, heads) = (g.add(quants), g.add(heads));
        prefetch_ahead::<true>(run, dist, RUN * (gq + hb));
        for j in 0..len {
            // b < nb = a.len(), and the infos hold `off + nb` blocks: no bounds checks in
            // the hot loop.
            let b = first + j;
            let h = heads.add(j * hb);
            let mut i = block_sums::<F, VNNI>(run.add(j * gq), h, a.get_unchecked(b).qs());
            if F::OFFSET != 0 {
                i = _mm256_add_epi32(i, _mm256_set1_epi32(*info.nc.get_unchecked(off + b)));
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(h as *const __m128i));
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(*info.d.get_unchecked(off + b)));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(i), acc);
            if F::HAS_MIN {
                let m = _mm256_cvtph_ps(_mm_loadu_si128(h.add(16) as *const __m128i));
                summ = _mm256_fmadd_ps(m, _mm256_set1_ps(*info.s.get_unchecked(off + b)), summ);
            }
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
        let qb = quant_bytes(F::TY);
        for b in 0..nb {
            let (qo, ho) = block_offsets(F::TY, nb, b);
            let (q, h) = (base.add(qo), base.add(ho));
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
                if F::FIFTH {
                    let qh: [u8; 4] = core::array::from_fn(|byte| *h.add(q5_mask_byte(s, byte)));
                    *v = _mm256_or_si256(*v, fifth_bits(qh));
                }
            }
            g.q.extend_from_slice(&transpose8(rows));
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
unsafe fn gemm<F: Packed, const VNNI: bool>(
    w: &[u8],
    rows: usize,
    nb: usize,
    a: &[F::Act],
    out: &mut [f32],
    ldo: usize,
) {
    let n = a.len() / nb;
    if n < PREFILL_MIN_TOKENS {
        thread_local! {
            static INFO: Cell<ActInfo> = Cell::new(ActInfo::default());
        }
        let gb = group_bytes(F::TY, nb);
        // The thread's vectors, taken for the call and put back (no allocation per task).
        let mut info = INFO.with(Cell::take);
        act_info_into::<F>(a, &mut info);
        let o = out.as_mut_ptr();
        let dist = prefetch_distance(F::TY, gb, VNNI);
        let ng = rows.div_ceil(GROUP_ROWS);
        let two = two_streams(ng, gb);
        for i in 0..ng {
            let r0 = group_at(i, ng, two) * GROUP_ROWS;
            let g = w.as_ptr().add(r0 / GROUP_ROWS * gb);
            for t in 0..n {
                let v = decode_group::<F, VNNI>(g, nb, &a[t * nb..(t + 1) * nb], &info, t * nb, dist);
                store_lanes(v, (rows - r0).min(L), o.add(t * ldo + r0));
            }
        }
        INFO.with(|c| c.set(info));
        return;
    }
    let src = PackedGroups {
        w: w.as_ptr(),
        gb: group_bytes(F::TY, nb),
    };
    prefill_groups::<F, _, VNNI>(&src, rows, a, nb, out, ldo);
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
        entry!($name, $w, $a, false, "avx2,fma,f16c");
    };
    (vnni $name:ident, $w:ty, $a:ty) => {
        entry!(
            $name,
            $w,
            $a,
            true,
            "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
        );
    };
    ($name:ident, $w:ty, $a:ty, $vnni:literal, $feat:literal) => {
        /// Safe entry point, reachable only through tables handed out after the features it is
        /// compiled for were detected: `out[t * ldo + r]` for every row r packed in `w`, token
        /// t of `a`.
        pub(crate) fn $name(w: &[u8], rows: usize, nb: usize, a: &[$a], out: &mut [f32], ldo: usize) {
            check(<$w as Packed>::TY, w.len(), rows, nb, a.len(), out.len(), ldo);
            #[target_feature(enable = $feat)]
            unsafe fn imp(w: &[u8], rows: usize, nb: usize, a: &[$a], out: &mut [f32], ldo: usize) {
                gemm::<$w, $vnni>(w, rows, nb, a, out, ldo)
            }
            // SAFETY: features detected before the table was handed out; shapes checked above.
            unsafe { imp(w, rows, nb, a, out, ldo) }
        }
    };
}

// ------------------------------------------------------------------------------------------
// Q4_K: per super-block of a group, per sub-block pair j, the four-slot vectors hold the
// nibbles of sub-block 2j (low) and 2j+1 (high) of four rows. Each meets its activation's
// matching eight bytes in `vpmaddubsw`; four of those summed in i16 (eight products of 4-bit and
// 8-bit quants, at most 8·15·128 = 15360) meet the slots' 6-bit scales in one `vpmaddwd`. The
// integers are `dot_q4k`'s (avx2_lanes.rs) exactly, and so are the float steps: the products
// have the bits of the unpacked rows'.

/// `vpshufb` controls that spread the scales of four slots (a 16-byte half: sub-block 2j of
/// slots 0..8, then 2j+1) over their 64-bit lanes as i16: `[half][k]` for slots 4k..4k+4.
const fn scale_spread(half: usize, k: usize) -> [u8; 32] {
    let mut m = [0x80u8; 32];
    let mut i = 0;
    while i < 32 {
        // Byte i lies in 64-bit lane i / 8 of the vector: slot 4k + i / 8.
        if i % 2 == 0 {
            m[i] = (8 * half + 4 * k + i / 8) as u8;
        }
        i += 1;
    }
    m
}

const SPREAD: [[[u8; 32]; 2]; 2] = [
    [scale_spread(0, 0), scale_spread(0, 1)],
    [scale_spread(1, 0), scale_spread(1, 1)],
];

/// One token's super-block (`y`) against the group's super-block at `q`: the eight rows'
/// `(Σ sc·Σ u·q, Σ min·bsum)` as i32 lanes in row order.
#[inline(always)]
unsafe fn q4k_block_sums(q: *const u8, y: &BlockQ8K, dist: usize) -> (__m256i, __m256i) {
    let mut isum = [_mm256_setzero_si256(); 2];
    let spread: [[__m256i; 2]; 2] =
        core::array::from_fn(|h| core::array::from_fn(|k| _mm256_loadu_si256(SPREAD[h][k].as_ptr() as *const __m256i)));
    for j in 0..4 {
        // A quarter of the super-block's bytes per pair, spread between the loads.
        prefetch_ahead::<false>(q.add(j * Q4K_BLOCK_BYTES / 4), dist, Q4K_BLOCK_BYTES / 4);
        let sc = _mm256_broadcastsi128_si256(_mm_loadu_si128(q.add(Q4K_SCALES + 16 * j) as *const __m128i));
        let lo: [__m256i; 4] = core::array::from_fn(|h| bcast8(&y.qs, 8 * j + h));
        let hi: [__m256i; 4] = core::array::from_fn(|h| bcast8(&y.qs, 8 * j + 4 + h));
        for (k, isum) in isum.iter_mut().enumerate() {
            let mut sl = _mm256_setzero_si256();
            let mut sh = _mm256_setzero_si256();
            for h in 0..4 {
                let (l, u) = nibbles(_mm256_loadu_si256(q.add(256 * j + 32 * (2 * h + k)) as *const __m256i));
                sl = _mm256_add_epi16(sl, _mm256_maddubs_epi16(l, lo[h]));
                sh = _mm256_add_epi16(sh, _mm256_maddubs_epi16(u, hi[h]));
            }
            let s0 = _mm256_madd_epi16(sl, _mm256_shuffle_epi8(sc, spread[0][k]));
            let s1 = _mm256_madd_epi16(sh, _mm256_shuffle_epi8(sc, spread[1][k]));
            *isum = _mm256_add_epi32(*isum, _mm256_add_epi32(s0, s1));
        }
    }
    // Mins: per pair j the rows' (min 2j, min 2j+1) against the pair's (bsum sums).
    let mut m = _mm256_setzero_si256();
    for j in 0..4 {
        let b = &y.bsums[4 * j..4 * j + 4];
        let pair = ((b[0] + b[1]) as u16 as u32) | (((b[2] + b[3]) as u16 as u32) << 16);
        let mins = _mm256_cvtepu8_epi16(_mm_loadu_si128(q.add(Q4K_MINS + 16 * j) as *const __m128i));
        m = _mm256_add_epi32(m, _mm256_madd_epi16(mins, _mm256_set1_epi32(pair as i32)));
    }
    (_mm256_hadd_epi32(isum[0], isum[1]), m)
}

/// One token (`a`, a row's super-blocks) against the Q4_K group at `g`.
#[inline(always)]
unsafe fn decode_group_q4k(g: *const u8, a: &[BlockQ8K], dist: usize) -> __m256 {
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for (b, y) in a.iter().enumerate() {
        let q = g.add(b * Q4K_BLOCK_BYTES);
        let (i, m) = q4k_block_sums(q, y, dist);
        let yd = _mm256_set1_ps(y.d);
        let d = _mm256_cvtph_ps(_mm_loadu_si128(q.add(Q4K_HEADS) as *const __m128i));
        let dm = _mm256_cvtph_ps(_mm_loadu_si128(q.add(Q4K_HEADS + 16) as *const __m128i));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(i), acc);
        accm = _mm256_fmadd_ps(_mm256_mul_ps(dm, yd), _mm256_cvtepi32_ps(m), accm);
    }
    _mm256_sub_ps(acc, accm)
}

/// `out[t * ldo + r]` for the `rows` Q4_K rows packed in `w` and every token of `a`. Prefill
/// rebuilds each group's rows for the row-lane tiles.
#[inline(always)]
unsafe fn gemm_q4k<const VNNI: bool>(w: &[u8], rows: usize, nb: usize, a: &[BlockQ8K], out: &mut [f32], ldo: usize) {
    let n = a.len() / nb;
    let gb = group_bytes(GgmlType::Q4_K, nb);
    let o = out.as_mut_ptr();
    if n < PREFILL_MIN_TOKENS {
        let dist = prefetch_distance(GgmlType::Q4_K, gb, VNNI);
        for r0 in (0..rows).step_by(GROUP_ROWS) {
            let g = w.as_ptr().add(r0 / GROUP_ROWS * gb);
            for t in 0..n {
                let v = decode_group_q4k(g, &a[t * nb..(t + 1) * nb], dist);
                store_lanes(v, (rows - r0).min(L), o.add(t * ldo + r0));
            }
        }
        return;
    }
    let mut blocks = vec![BlockQ4K::zeroed(); GROUP_ROWS * nb];
    for r0 in (0..rows).step_by(GROUP_ROWS) {
        let valid = (rows - r0).min(GROUP_ROWS);
        unpack_group_q4k(&w[r0 / GROUP_ROWS * gb..(r0 / GROUP_ROWS + 1) * gb], nb, &mut blocks);
        super::avx2_lanes::gemm_q4k::<VNNI>(&blocks[..valid * nb], a, nb, &mut out[r0..], ldo);
    }
}

/// Safe entry point of the packed Q4_K product, as the macro's below.
pub(crate) fn gemm_q4_k(w: &[u8], rows: usize, nb: usize, a: &[BlockQ8K], out: &mut [f32], ldo: usize) {
    check(GgmlType::Q4_K, w.len(), rows, nb, a.len(), out.len(), ldo);
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn imp(w: &[u8], rows: usize, nb: usize, a: &[BlockQ8K], out: &mut [f32], ldo: usize) {
        gemm_q4k::<false>(w, rows, nb, a, out, ldo)
    }
    // SAFETY: features detected before the table was handed out; shapes checked above.
    unsafe { imp(w, rows, nb, a, out, ldo) }
}

/// The avx512-vnni table's packed Q4_K product (its prefill tiles with `vpdpbusd`).
pub(crate) fn vnni_q4_k(w: &[u8], rows: usize, nb: usize, a: &[BlockQ8K], out: &mut [f32], ldo: usize) {
    check(GgmlType::Q4_K, w.len(), rows, nb, a.len(), out.len(), ldo);
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn imp(w: &[u8], rows: usize, nb: usize, a: &[BlockQ8K], out: &mut [f32], ldo: usize) {
        gemm_q4k::<true>(w, rows, nb, a, out, ldo)
    }
    // SAFETY: handed out only by the avx512-vnni table, after its features were detected.
    unsafe { imp(w, rows, nb, a, out, ldo) }
}

entry!(gemm_q4_0, BlockQ4_0, BlockQ8_0);
entry!(gemm_q4_1, BlockQ4_1, BlockQ8_1);
entry!(gemm_q8_0, BlockQ8_0, BlockQ8_0);
entry!(gemm_q5_0, BlockQ5_0, BlockQ8_0);
// The `vnni_*` products (AVX-512 VNNI's `vpdpbusd`) are the avx512-vnni table's only.
entry!(vnni vnni_q4_0, BlockQ4_0, BlockQ8_0);
entry!(vnni vnni_q4_1, BlockQ4_1, BlockQ8_1);
entry!(vnni vnni_q5_0, BlockQ5_0, BlockQ8_0);
entry!(vnni vnni_q8_0, BlockQ8_0, BlockQ8_0);

#[cfg(test)]
mod tests {
    use super::{group_at, two_streams};

    #[test]
    fn group_order_visits_every_group_once() {
        for ng in [1, 2, 3, 8, 255, 256, 257, 1000] {
            for two in [false, true] {
                let mut seen = vec![false; ng];
                for i in 0..ng {
                    let g = group_at(i, ng, two);
                    assert!(g < ng && !seen[g], "ng={ng} two={two}: group {g} at {i}");
                    seen[g] = true;
                }
                if two && ng > 1 {
                    assert_eq!(group_at(1, ng, two), ng.div_ceil(2), "ng={ng}: the second stream");
                }
            }
        }
        assert!(two_streams(256, 680 * 8) && !two_streams(255, 680 * 8) && !two_streams(4096, 4352 * 8));
    }
}
